//! `pgarc restore`.
pub mod plan;
pub mod sql;
