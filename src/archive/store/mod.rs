//! Where an archive's files live (issue 20, in progress). Today every archive is a local
//! directory, read and written directly by `dir`, `reader`, `data` and `writer`; the storage
//! seam that will put a local directory and an S3-compatible object store behind one small
//! interface comes next. This step holds what any object store needs first and can be tested
//! alone: `s3://` locations and the AWS configuration conventions ([`s3_config`]).

pub mod s3_config;
