//! Everything that talks to PostgreSQL or runs its programs. So far: locating the PostgreSQL
//! binaries (pg_dump, pg_restore, initdb, ...) and reading their versions. Connections, the
//! snapshot holder, catalog queries and COPY streams join this module with the dump pipeline.

pub mod tools;
