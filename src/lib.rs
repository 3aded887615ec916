//! pgarc: parallel, consistent and verifiable dump and restore of PostgreSQL databases into
//! archives that stock `pg_restore` reads (the pg_dump directory format).
//!
//! The crate is a library with a thin binary. Its seams:
//! - [`archive`]: the archive format, pure code (toc.dat, frames, manifest, writing), and
//!   the storage seam every archive byte goes through ([`archive::store`]);
//! - [`s3`]: the S3-compatible object store behind that seam (`s3://BUCKET/PREFIX`);
//! - [`pg`]: connections, the snapshot holder, catalog queries, PostgreSQL programs;
//! - [`dump`], [`restore`], [`verify`]: the three pipelines, each a planner plus workers;
//! - [`snapshot`]: `pgarc snapshot`, a process that holds an exported snapshot;
//! - [`cli`]: the command line as the user types it (clap), validated but not interpreted.
//!
//! The normative description of the archive is `format-spec/` in the repository.

pub mod archive;
pub mod cli;
pub mod dump;
pub mod pg;
pub mod progress;
pub mod report;
pub mod restore;
pub mod run;
pub mod s3;
pub mod snapshot;
pub mod verify;
