//! Everything that talks to PostgreSQL or runs its programs: connection parameters with
//! libpq's conventions ([`conn`], [`conninfo`]), sessions, the snapshot holder and catalog
//! queries ([`session`]), and locating PostgreSQL programs ([`tools`]).

pub mod carrier;
pub mod chunks;
pub mod conn;
pub mod conninfo;
pub mod session;
pub mod tools;
pub mod wire;
