//! Archives in S3-compatible object storage (issue 20): the object-store implementation of
//! the archive's storage seam ([`crate::archive::store::Store`]), on Apache Arrow's
//! `object_store` crate (SigV4 signing, multipart uploads, retries with backoff).
//!
//! The archive code is blocking and has no async runtime; `object_store` is async. This module
//! owns one small runtime of its own, started on first use and never dropped, and hands each
//! request to it, waiting on a channel: no pipeline's runtime is ever blocked inside, and no
//! runtime is started inside another.
//!
//! Writing: each data file is one object. Frames are appended to a buffer; whenever it holds a
//! part's worth, exactly that many bytes become a part of a multipart upload (every part but
//! the last of one size, as S3 wants at least 5 MiB and R2 wants equal parts), uploaded while
//! the next fills, at most [`PARTS_IN_FLIGHT`] at a time per file. The part size is
//! [`part_bytes`] of the file's expected size. A file that ends before its first part is full
//! goes up in one PUT. The manifest is written last with `If-None-Match: *`, after a check that
//! none exists. Every open upload is registered, and [`Store::abandon`] aborts them all.
//!
//! Reading: ranged GETs of at most [`GET_BYTES`] each, streamed through a bounded channel;
//! a stream that breaks is resumed from the byte it stopped at, up to [`READ_RETRIES`] times.
//!
//! Faults: `object_store` retries each request on 5xx, 429 and connection errors, up to
//! [`MAX_RETRIES`] times with exponential backoff from 100 ms to 5 s, within 60 s. Problems that
//! retrying cannot fix (wrong credentials, access denied, a missing bucket, an unreachable
//! endpoint) are recognised once, when the store is opened, by one probe request whose S3
//! error code is read, and reported in one line naming the bucket and the fix.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjPath;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, MultipartId, ObjectStore, ObjectStoreExt,
    PutMode, PutOptions, PutPayload, RetryConfig,
};

use crate::archive::store::s3_config::{S3Location, S3Settings, Sources};
use crate::archive::store::{Appender, Checkpoint, LocalDir, Location, Stat, Store};
use crate::archive::{safe_relative_name, ArchiveDir, Error};

/// The smallest part: S3's minimum for every part but the last.
pub const PART_BYTES: usize = 5 << 20;
/// Parts of one file uploading while its next part fills.
pub const PARTS_IN_FLIGHT: usize = 1;
/// S3's limit on the parts of one upload.
const MAX_PARTS: usize = 10_000;
/// The largest range one GET asks for: each request ends within [`REQUEST_TIMEOUT`].
pub const GET_BYTES: u64 = 64 << 20;
/// Retries of one request (object_store's, on 5xx, 429, timeouts and connection errors).
pub const MAX_RETRIES: usize = 8;
/// The most keys a listing of an archive's prefix may return (memory stays bounded whatever
/// a server sends; an archive of 100,000 tables has about 200,000 files).
const MAX_LISTED: usize = 2_000_000;
/// The largest journal record read back (a chunk's record lists its frames: 64 MiB is more
/// than a million of them).
const MAX_LOG_RECORD: u64 = 64 << 20;
/// Resumptions of one read stream that broke after it started.
pub const READ_RETRIES: usize = 8;
/// No request may take longer than this (a part is at most a few tens of MiB; a GET at most
/// [`GET_BYTES`]).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a read stream may wait for the server's next bytes before it is resumed.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The part size of a file expected to hold `expected` bytes (for a data file: the table's
/// size on disk; compressed COPY text is rarely more than twice that): [`PART_BYTES`], or for
/// files over about 16 GiB the size that lets 10,000 parts hold three times `expected`,
/// rounded up to a MiB. At most 5 GiB, S3's largest part.
pub fn part_bytes(expected: u64) -> usize {
    let needed = expected.saturating_mul(3).div_ceil(MAX_PARTS as u64);
    let mib = needed.div_ceil(1 << 20).min(5 << 10) as usize;
    (mib << 20).max(PART_BYTES)
}

/// A server's message on one line, at most 300 characters (error documents span lines).
fn one_line(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(300) {
        Some((at, _)) => format!("{}...", &flat[..at]),
        None => flat,
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pgarc-s3")
            .enable_all()
            .build()
            .expect("the object store's runtime starts (threads and timers only)")
    })
}

/// Runs `f` on the object store's runtime and waits for it. Blocking.
fn block<F>(f: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime().spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv()
        .expect("the object store's runtime never drops a task")
}

/// The store for a location: a directory, or an object store reached by the AWS conventions
/// (the environment and `~/.aws`). `allow_http` allows plain HTTP to a non-loopback endpoint.
pub fn open(location: &Location, allow_http: bool) -> Result<Arc<dyn Store>, Error> {
    match location {
        Location::Local(path) => Ok(Arc::new(LocalDir::new(path))),
        Location::S3(loc) => {
            let settings = S3Settings::resolve(&Sources {
                env: &|k| std::env::var(k).ok(),
                read_file: &|p| std::fs::read_to_string(p).ok(),
                home: std::env::var_os("HOME").map(PathBuf::from),
                allow_http,
            })
            .map_err(|e| Error::Store {
                location: loc.to_string(),
                problem: e.to_string(),
            })?;
            Ok(Arc::new(S3Store::connect(loc, &settings)?))
        }
    }
}

/// Opens the archive at a location (see [`open`]).
pub fn open_archive(location: &Location, allow_http: bool) -> Result<ArchiveDir, Error> {
    match location {
        Location::Local(path) => ArchiveDir::open(path),
        Location::S3(_) => ArchiveDir::open_store(open(location, allow_http)?),
    }
}

/// An archive under an `s3://BUCKET/PREFIX`.
#[derive(Debug, Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    loc: S3Location,
    store: Arc<AmazonS3>,
    /// Where the credentials came from and where the endpoint is, for messages.
    credentials_from: String,
    endpoint: String,
    /// The custom endpoint, if any (path-style addressing).
    endpoint_url: Option<String>,
    region: String,
    /// For the probe's own signed request (redacted in `Debug`).
    credentials: crate::archive::store::s3_config::Credentials,
    /// Multipart uploads started and not yet completed: aborted by `abandon`.
    uploads: Mutex<BTreeMap<u64, (ObjPath, MultipartId)>>,
    next_upload: AtomicU64,
    /// Set by `abandon`: no upload may start, and nothing be published, afterwards.
    abandoned: std::sync::atomic::AtomicBool,
    /// Local directories handed out by `scratch_dir`, removed by `abandon`.
    scratch: Mutex<Vec<PathBuf>>,
    /// Part buffers, reused.
    buffers: Arc<BufferPool>,
}

/// Part buffers that uploads have finished with, for the next parts. Reusing them keeps the
/// process's memory at what the parts in use need: buffers of several MiB allocated and freed
/// by many threads otherwise stay resident in the allocator's arenas (measured: 123 MiB
/// instead of 79 MiB for a dump of the bench's skewed database at `-j 2`).
#[derive(Debug, Default)]
struct BufferPool(Mutex<Vec<Vec<u8>>>);

/// Buffers kept for reuse at most (never more than were in use at once).
const POOLED: usize = 32;
/// Room for the frame that fills a part beyond it, so that a buffer does not grow.
const PART_SLACK: usize = 2 << 20;

impl BufferPool {
    /// An empty buffer with room for a part of `part` bytes and a frame.
    fn take(&self, part: usize) -> Vec<u8> {
        let mut pool = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match pool.iter().position(|b| b.capacity() >= part + PART_SLACK) {
            Some(i) => pool.swap_remove(i),
            None => Vec::with_capacity(part + PART_SLACK),
        }
    }

    fn give(&self, mut buf: Vec<u8>) {
        buf.clear();
        let mut pool = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOLED {
            pool.push(buf);
        }
    }
}

/// A part's bytes that return to the pool when the last reference to them goes.
struct Pooled {
    buf: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

impl S3Store {
    /// Builds the client and probes the bucket once, so that wrong credentials, a missing
    /// bucket or an unreachable endpoint are named before any work starts.
    pub fn connect(loc: &S3Location, settings: &S3Settings) -> Result<S3Store, Error> {
        let c = &settings.credentials;
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&loc.bucket)
            .with_region(&settings.region)
            .with_access_key_id(&c.access_key_id)
            .with_secret_access_key(&c.secret_access_key)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(5),
                    base: 2.0,
                },
                max_retries: MAX_RETRIES,
                retry_timeout: Duration::from_secs(60),
            })
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(REQUEST_TIMEOUT)
                    .with_connect_timeout(CONNECT_TIMEOUT)
                    .with_allow_http(settings.endpoint.as_ref().is_some_and(|e| !e.https)),
            );
        if let Some(token) = &c.session_token {
            b = b.with_token(token);
        }
        let endpoint = match &settings.endpoint {
            Some(e) => {
                b = b
                    .with_endpoint(&e.url)
                    .with_virtual_hosted_style_request(false);
                e.url.clone()
            }
            None => {
                // AWS itself: virtual-hosted style, its recommended addressing, except for
                // bucket names with dots (their TLS certificate would not match).
                b = b.with_virtual_hosted_style_request(!loc.bucket.contains('.'));
                format!("https://s3.{}.amazonaws.com", settings.region)
            }
        };
        let store = b.build().map_err(|e| Error::Store {
            location: loc.to_string(),
            problem: format!("cannot configure the S3 client: {e}"),
        })?;
        let s = S3Store {
            inner: Arc::new(Inner {
                loc: loc.clone(),
                store: Arc::new(store),
                credentials_from: c.source.clone(),
                endpoint,
                endpoint_url: settings.endpoint.as_ref().map(|e| e.url.clone()),
                region: settings.region.clone(),
                credentials: c.clone(),
                uploads: Mutex::new(BTreeMap::new()),
                next_upload: AtomicU64::new(0),
                abandoned: std::sync::atomic::AtomicBool::new(false),
                scratch: Mutex::new(Vec::new()),
                buffers: Arc::new(BufferPool::default()),
            }),
        };
        s.probe()?;
        Ok(s)
    }

    fn path(&self, name: &str) -> Result<ObjPath, Error> {
        let rel = safe_relative_name(name.as_bytes()).map_err(|e| self.refused(name, e))?;
        Ok(ObjPath::from(self.inner.loc.key(rel)))
    }

    fn refused(&self, name: &str, e: impl std::fmt::Display) -> Error {
        Error::NotArchive {
            path: self.shown(name),
            problem: e.to_string(),
        }
    }

    fn shown(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("{}/{name}", self.inner.loc))
    }

    /// One line for a failed request on `name` (empty: the prefix), naming the fix.
    fn failed(&self, name: &str, action: &str, e: &object_store::Error) -> Error {
        let location = if name.is_empty() {
            self.inner.loc.to_string()
        } else {
            format!("{}/{name}", self.inner.loc)
        };
        let problem = match e {
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => format!(
                "{action}: access denied: the credentials from {} were refused or lack \
                 permission on bucket {}; check the access key and secret \
                 (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE) and the bucket's policy",
                self.inner.credentials_from, self.inner.loc.bucket
            ),
            object_store::Error::NotFound { .. } => format!("{action}: not found"),
            other => format!(
                "{action}: {}; check that the endpoint {} is reachable and serves S3, and \
                 try again",
                one_line(&other.to_string()),
                self.inner.endpoint
            ),
        };
        Error::Store { location, problem }
    }

    /// Records an upload that `abandon` must abort; after `abandon` it is aborted at once
    /// (a worker that was still running started it) and the append fails.
    fn register(&self, path: ObjPath, id: MultipartId) -> Result<u64, Error> {
        let n = self.inner.next_upload.fetch_add(1, Ordering::SeqCst);
        {
            let mut open = self.inner.uploads.lock().unwrap_or_else(|p| p.into_inner());
            if !self.inner.abandoned.load(Ordering::SeqCst) {
                open.insert(n, (path, id));
                return Ok(n);
            }
        }
        let store = self.inner.store.clone();
        let key = path.to_string();
        let _ = block(async move {
            object_store::multipart::MultipartStore::abort_multipart(&*store, &path, &id).await
        });
        Err(Error::Store {
            location: format!("s3://{}/{key}", self.inner.loc.bucket),
            problem: "the dump was given up; this upload was aborted".into(),
        })
    }

    fn unregister(&self, n: u64) {
        self.inner
            .uploads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&n);
    }
}

impl S3Store {
    /// Every object under the prefix, by archive name, with its size.
    fn list_sizes(&self) -> Result<std::collections::HashMap<String, u64>, Error> {
        let prefix = (!self.inner.loc.prefix.is_empty())
            .then(|| ObjPath::from(self.inner.loc.prefix.as_str()));
        let store = self.inner.store.clone();
        let keys = block(async move {
            let mut out = Vec::new();
            let mut s = store.list(prefix.as_ref());
            while let Some(item) = s.next().await {
                if out.len() >= MAX_LISTED {
                    return Ok(None);
                }
                let meta = item?;
                out.push((meta.location.to_string(), meta.size));
            }
            Ok::<_, object_store::Error>(Some(out))
        })
        .map_err(|e| self.failed("", "could not list", &e))?
        .ok_or_else(|| Error::Store {
            location: self.inner.loc.to_string(),
            problem: format!(
                "more than {MAX_LISTED} objects under this prefix: no archive pgarc reads has \
                 that many files; name the archive's own prefix"
            ),
        })?;
        let strip = if self.inner.loc.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.inner.loc.prefix)
        };
        Ok(keys
            .into_iter()
            .filter_map(|(k, size)| k.strip_prefix(&strip).map(|n| (n.to_string(), size)))
            .collect())
    }

    /// The error of a listing that failed, again, for each name that needed it.
    fn failed_again(&self, e: &Error) -> Error {
        match e {
            Error::Store { location, problem } => Error::Store {
                location: location.clone(),
                problem: problem.clone(),
            },
            other => Error::Store {
                location: self.inner.loc.to_string(),
                problem: other.to_string(),
            },
        }
    }
}

mod probe;

impl Store for S3Store {
    fn location(&self) -> PathBuf {
        PathBuf::from(self.inner.loc.to_string())
    }

    fn resolve(&self, name: &str) -> Result<PathBuf, Error> {
        self.path(name)?;
        Ok(self.shown(name))
    }

    fn stat(&self, name: &str) -> Result<Stat, Error> {
        let path = self.path(name)?;
        let store = self.inner.store.clone();
        match block(async move { store.head(&path).await }) {
            Ok(meta) => Ok(Stat::File(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(Stat::Absent),
            Err(e) => Err(self.failed(name, "could not look up", &e)),
        }
    }

    fn open(&self, name: &str, from: u64, to: Option<u64>) -> Result<Box<dyn Read + Send>, Error> {
        let path = self.path(name)?;
        let end = match to {
            Some(to) => to,
            None => match self.stat(name)? {
                Stat::File(size) => size,
                _ => {
                    return Err(Error::Io {
                        path: self.shown(name),
                        action: "could not open",
                        error: io::ErrorKind::NotFound.into(),
                    })
                }
            },
        };
        Ok(Box::new(RangeReader::start(
            self.clone(),
            name.to_string(),
            path,
            from..end,
        )))
    }

    fn stat_all(&self, names: &[&str]) -> Vec<Result<Stat, Error>> {
        let sizes = match self.list_sizes() {
            Ok(s) => s,
            Err(e) => {
                let failed = |_: &&str| Err(self.failed_again(&e));
                return names.iter().map(failed).collect();
            }
        };
        names
            .iter()
            .map(|n| {
                self.path(n)?;
                Ok(sizes.get(*n).map_or(Stat::Absent, |&s| Stat::File(s)))
            })
            .collect()
    }

    fn list(&self) -> Result<Vec<String>, Error> {
        let mut names: Vec<String> = self.list_sizes()?.into_keys().collect();
        names.sort();
        Ok(names)
    }

    fn has_under(&self, dir: &str) -> Result<bool, Error> {
        let prefix = self.path(dir)?;
        let store = self.inner.store.clone();
        block(async move {
            let mut s = store.list(Some(&prefix));
            s.next().await.transpose().map(|o| o.is_some())
        })
        .map_err(|e| self.failed(dir, "could not list", &e))
    }

    fn check_empty(&self) -> Result<(), Error> {
        let names = self.list()?;
        if names.is_empty() {
            return Ok(());
        }
        let manifest = crate::archive::manifest::MANIFEST_FILE;
        let problem = if names.iter().any(|n| n == manifest) {
            format!(
                "already holds an archive ({manifest} is there); choose a new prefix, or \
                 remove the old archive's objects first"
            )
        } else {
            format!(
                "already holds {} object(s) (e.g. {}): an unfinished dump or other data; \
                 choose a new prefix, or remove those objects first",
                names.len(),
                names[0]
            )
        };
        Err(Error::Store {
            location: self.inner.loc.to_string(),
            problem,
        })
    }

    fn prepare(&self) -> Result<(), Error> {
        self.check_empty()
    }

    fn put(&self, name: &str, bytes: Vec<u8>) -> Result<(), Error> {
        let path = self.path(name)?;
        let store = self.inner.store.clone();
        block(async move { store.put(&path, PutPayload::from(bytes)).await })
            .map(|_| ())
            .map_err(|e| self.failed(name, "could not write", &e))
    }

    fn put_file(&self, name: &str, from: &Path) -> Result<(), Error> {
        let io = |error| Error::Io {
            path: from.to_owned(),
            action: "could not read",
            error,
        };
        let mut f = std::fs::File::open(from).map_err(io)?;
        let size = std::fs::metadata(from).map_or(0, |m| m.len());
        let mut w = self.append(name, size)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            w.write(&buf[..n])?;
        }
        w.finish()?;
        std::fs::remove_file(from).map_err(|error| Error::Io {
            path: from.to_owned(),
            action: "could not remove",
            error,
        })
    }

    fn append(&self, name: &str, expected: u64) -> Result<Box<dyn Appender>, Error> {
        Ok(Box::new(S3Appender {
            part: part_bytes(expected),
            store: self.clone(),
            name: name.to_string(),
            path: self.path(name)?,
            buf: Vec::new(),
            upload: None,
            parts: Vec::new(),
            in_flight: VecDeque::new(),
        }))
    }

    fn delete(&self, name: &str) -> Result<(), Error> {
        let path = self.path(name)?;
        let store = self.inner.store.clone();
        block(async move { store.delete(&path).await })
            .map_err(|e| self.failed(name, "could not remove", &e))
    }

    fn publish(&self, name: &str, bytes: Vec<u8>) -> Result<(), Error> {
        if self.inner.abandoned.load(Ordering::SeqCst) {
            return Err(Error::Store {
                location: self.inner.loc.to_string(),
                problem: "the dump was given up; nothing is published".into(),
            });
        }
        // Servers that ignore If-None-Match would overwrite: look first.
        if self.stat(name)? != Stat::Absent {
            return Err(self.exists(name));
        }
        let path = self.path(name)?;
        let store = self.inner.store.clone();
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match block(async move { store.put_opts(&path, PutPayload::from(bytes), opts).await }) {
            Ok(_) => Ok(()),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Err(self.exists(name)),
            Err(e) => Err(self.failed(name, "could not write", &e)),
        }
    }

    fn abandon(&self) {
        // Under the lock, so that no upload registers between the flag and the list.
        let mut uploads = self.inner.uploads.lock().unwrap_or_else(|p| p.into_inner());
        self.inner.abandoned.store(true, Ordering::SeqCst);
        let open: Vec<(ObjPath, MultipartId)> =
            std::mem::take(&mut *uploads).into_values().collect();
        drop(uploads);
        for (path, id) in open {
            let store = self.inner.store.clone();
            let key = path.to_string();
            let r = block(async move {
                object_store::multipart::MultipartStore::abort_multipart(&*store, &path, &id).await
            });
            if let Err(e) = r {
                crate::progress::say(&format!(
                    "pgarc: warning: could not abort the upload of s3://{}/{key} ({e}); \
                     abort it with your S3 tool or a lifecycle rule",
                    self.inner.loc.bucket
                ));
            }
        }
        for dir in
            std::mem::take(&mut *self.inner.scratch.lock().unwrap_or_else(|p| p.into_inner()))
        {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    fn scratch_dir(&self) -> Result<PathBuf, Error> {
        let base = std::env::temp_dir();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = base.join(format!("pgarc-schema-{}-{nanos}", std::process::id()));
        self.inner
            .scratch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(dir.clone());
        Ok(dir)
    }

    fn log_append(&self, name: &str, seq: u64, record: &[u8], _durable: bool) -> Result<(), Error> {
        // A PUT is durable once answered.
        self.put(&format!("{name}.d/{seq:010}.rec"), record.to_vec())
    }

    fn log_read(&self, name: &str) -> Result<Vec<Vec<u8>>, Error> {
        let under = format!("{name}.d/");
        let mut names: Vec<String> = self
            .list_sizes()?
            .into_keys()
            .filter(|n| n.starts_with(&under) && n.ends_with(".rec"))
            .collect();
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            out.push(self.read_small(&n)?);
        }
        Ok(out)
    }

    fn log_remove(&self, name: &str) -> Result<(), Error> {
        let under = format!("{name}.d/");
        for n in self.list()? {
            if n.starts_with(&under) || n == name {
                self.delete(&n)?;
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), Error> {
        Ok(())
    }

    fn recover(&self, name: &str, checkpoint: &Checkpoint) -> Result<(), Error> {
        if checkpoint.durable == 0 {
            // Nothing was uploaded yet: every byte is in the journal's tails.
            return Ok(());
        }
        if let Some((id, tags)) = &checkpoint.upload {
            let path = self.path(name)?;
            let store = self.inner.store.clone();
            let id: MultipartId = id.clone();
            let parts: Vec<object_store::multipart::PartId> = tags
                .iter()
                .map(|t| object_store::multipart::PartId {
                    content_id: t.clone(),
                })
                .collect();
            let done = block(async move {
                object_store::multipart::MultipartStore::complete_multipart(
                    &*store, &path, &id, parts,
                )
                .await
            });
            // An upload completed before (by an earlier resume) is gone: the object is there.
            if let Err(e) = done {
                if self.stat(name)? == Stat::Absent {
                    return Err(self.failed(name, "could not complete the interrupted upload", &e));
                }
            }
        }
        match self.stat(name)? {
            Stat::File(size) if size >= checkpoint.durable => Ok(()),
            _ => Err(Error::Store {
                location: self.shown(name).display().to_string(),
                problem: format!(
                    "the journal says its first {} bytes were uploaded, but they are not there \
                     (the upload was aborted, e.g. by a lifecycle rule)",
                    checkpoint.durable
                ),
            }),
        }
    }
}

impl S3Store {
    /// A whole small object (a journal record), at most [`MAX_LOG_RECORD`] bytes.
    fn read_small(&self, name: &str) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        self.open(name, 0, None)?
            .take(MAX_LOG_RECORD + 1)
            .read_to_end(&mut out)
            .map_err(|error| Error::Io {
                path: self.shown(name),
                action: "could not read",
                error,
            })?;
        if out.len() as u64 > MAX_LOG_RECORD {
            return Err(Error::Store {
                location: self.shown(name).display().to_string(),
                problem: format!("a journal record larger than {MAX_LOG_RECORD} bytes"),
            });
        }
        Ok(out)
    }

    fn exists(&self, name: &str) -> Error {
        Error::Store {
            location: format!("{}/{name}", self.inner.loc),
            problem: "already exists: another archive was written at this prefix; choose a \
                      new prefix"
                .into(),
        }
    }
}

/// A file being uploaded: see the module's documentation.
#[derive(Debug)]
struct S3Appender {
    /// The size of every part but the last.
    part: usize,
    store: S3Store,
    name: String,
    path: ObjPath,
    buf: Vec<u8>,
    /// The multipart upload, once the first part is full: (registration, id).
    upload: Option<(u64, MultipartId)>,
    /// The parts uploaded, in order.
    parts: Vec<object_store::multipart::PartId>,
    in_flight:
        VecDeque<tokio::task::JoinHandle<object_store::Result<object_store::multipart::PartId>>>,
}

impl S3Appender {
    fn part_index(&self) -> usize {
        self.parts.len() + self.in_flight.len()
    }

    /// Waits for the oldest part in flight.
    fn settle_one(&mut self) -> Result<(), Error> {
        if let Some(h) = self.in_flight.pop_front() {
            let part = block(h)
                .map_err(|e| Error::Store {
                    location: self.store.shown(&self.name).display().to_string(),
                    problem: format!("an upload task failed: {e}"),
                })?
                .map_err(|e| self.store.failed(&self.name, "could not upload a part", &e))?;
            self.parts.push(part);
        }
        Ok(())
    }

    fn send_part(&mut self) -> Result<(), Error> {
        let index = self.part_index();
        if index >= MAX_PARTS {
            return Err(Error::Store {
                location: self.store.shown(&self.name).display().to_string(),
                problem: format!(
                    "larger than {MAX_PARTS} parts of {} MiB (three times the table's size on \
                     disk): dump this table to a local directory",
                    self.part >> 20
                ),
            });
        }
        let id = match &self.upload {
            Some((_, id)) => id.clone(),
            None => {
                let (store, path) = (self.store.inner.store.clone(), self.path.clone());
                let id = block(async move {
                    object_store::multipart::MultipartStore::create_multipart(&*store, &path).await
                })
                .map_err(|e| {
                    self.store
                        .failed(&self.name, "could not start an upload", &e)
                })?;
                let n = self.store.register(self.path.clone(), id.clone())?;
                self.upload = Some((n, id.clone()));
                id
            }
        };
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            self.settle_one()?;
        }
        // Exactly one part's bytes (the last part: whatever is left); the rest stays.
        let mut rest = Vec::new();
        if self.buf.len() > self.part {
            rest = self.store.inner.buffers.take(self.part);
            rest.extend_from_slice(&self.buf[self.part..]);
            self.buf.truncate(self.part);
        }
        let data = std::mem::replace(&mut self.buf, rest);
        // The buffer goes back to the pool when the upload (and any retry) is done with it.
        let data = Bytes::from_owner(Pooled {
            buf: data,
            pool: self.store.inner.buffers.clone(),
        });
        let (store, path) = (self.store.inner.store.clone(), self.path.clone());
        self.in_flight.push_back(runtime().spawn(async move {
            object_store::multipart::MultipartStore::put_part(
                &*store,
                &path,
                &id,
                index,
                PutPayload::from(data),
            )
            .await
        }));
        Ok(())
    }
}

impl Appender for S3Appender {
    fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if self.buf.capacity() == 0 {
            self.buf = self.store.inner.buffers.take(self.part);
        }
        self.buf.extend_from_slice(bytes);
        // A frame larger than a part fills several.
        while self.buf.len() >= self.part {
            self.send_part()?;
        }
        Ok(())
    }

    /// The parts in flight are waited for: the bytes in uploaded parts are durable, and the
    /// ones in the part being filled are handed back as the tail.
    fn checkpoint(&mut self) -> Result<Checkpoint, Error> {
        while !self.in_flight.is_empty() {
            self.settle_one()?;
        }
        Ok(Checkpoint {
            durable: (self.parts.len() * self.part) as u64,
            upload: self.upload.as_ref().map(|(_, id)| {
                (
                    id.clone(),
                    self.parts.iter().map(|p| p.content_id.clone()).collect(),
                )
            }),
            tail: self.buf.clone(),
        })
    }

    fn finish(mut self: Box<Self>) -> Result<(), Error> {
        let Some((n, id)) = self.upload.clone() else {
            // Smaller than a part: one PUT.
            let data = std::mem::take(&mut self.buf);
            return self.store.put(&self.name, data);
        };
        if !self.buf.is_empty() {
            self.send_part()?;
        }
        debug_assert!(self.buf.is_empty());
        while !self.in_flight.is_empty() {
            self.settle_one()?;
        }
        let (store, path) = (self.store.inner.store.clone(), self.path.clone());
        let parts = std::mem::take(&mut self.parts);
        block(async move {
            object_store::multipart::MultipartStore::complete_multipart(&*store, &path, &id, parts)
                .await
        })
        .map_err(|e| {
            self.store
                .failed(&self.name, "could not complete the upload", &e)
        })?;
        self.store.unregister(n);
        Ok(())
    }
}

/// Bytes of a range of an object, streamed from a task on the store's runtime through a
/// bounded channel (so memory stays bounded whatever the consumer's pace). The task sends
/// `Ok(None)` after the last byte: a channel that closes without it is an error, never a
/// short read.
struct RangeReader {
    rx: std::sync::mpsc::Receiver<Piece>,
    room: Arc<tokio::sync::Notify>,
    current: Bytes,
    done: bool,
}

type Piece = io::Result<Option<Bytes>>;

/// Pieces of a stream waiting in the channel.
const READ_AHEAD: usize = 16;

impl RangeReader {
    fn start(
        store: S3Store,
        name: String,
        path: ObjPath,
        range: std::ops::Range<u64>,
    ) -> RangeReader {
        let (tx, rx) = std::sync::mpsc::sync_channel(READ_AHEAD);
        let room = Arc::new(tokio::sync::Notify::new());
        let notify = room.clone();
        runtime().spawn(async move {
            let last = match stream_range(&store, &path, range, &tx, &notify).await {
                Ok(()) => Ok(None),
                Err(e) => {
                    let shown = store.shown(&name).display().to_string();
                    Err(io::Error::new(e.kind(), format!("{shown}: {e}")))
                }
            };
            send(&tx, &notify, last).await;
        });
        RangeReader {
            rx,
            room,
            current: Bytes::new(),
            done: false,
        }
    }
}

/// Sends one piece, waiting for room; false when the reader went away.
async fn send(
    tx: &std::sync::mpsc::SyncSender<Piece>,
    room: &tokio::sync::Notify,
    mut piece: Piece,
) -> bool {
    loop {
        match tx.try_send(piece) {
            Ok(()) => return true,
            Err(std::sync::mpsc::TrySendError::Full(p)) => {
                piece = p;
                room.notified().await;
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return false,
        }
    }
}

/// Sends `range` of `path` piece by piece, GET by GET, resuming a broken stream where it
/// stopped. `Ok` when every byte was sent or the reader went away.
async fn stream_range(
    store: &S3Store,
    path: &ObjPath,
    range: std::ops::Range<u64>,
    tx: &std::sync::mpsc::SyncSender<Piece>,
    room: &tokio::sync::Notify,
) -> io::Result<()> {
    let mut pos = range.start;
    let mut failures = 0;
    while pos < range.end {
        let end = range.end.min(pos + GET_BYTES);
        let opts = GetOptions {
            range: Some(GetRange::Bounded(pos..end)),
            ..GetOptions::default()
        };
        let mut stream = match store.inner.store.get_opts(path, opts).await {
            Ok(r) => r.into_stream(),
            Err(e) => return Err(io::Error::other(e)),
        };
        loop {
            match tokio::time::timeout(STALL_TIMEOUT, stream.next()).await {
                Ok(Some(Ok(piece))) => {
                    let piece = piece.slice(..piece.len().min((end - pos) as usize));
                    pos += piece.len() as u64;
                    failures = 0;
                    if !send(tx, room, Ok(Some(piece))).await {
                        return Ok(());
                    }
                }
                Ok(None) if pos >= end => break,
                // Ended early, broke, or stalled: ask again from where it stopped.
                other => {
                    failures += 1;
                    if failures > READ_RETRIES {
                        return Err(match other {
                            Ok(Some(Err(e))) => io::Error::other(e),
                            Ok(None) => io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the server ended the response early",
                            ),
                            _ => io::Error::new(
                                io::ErrorKind::TimedOut,
                                "the server stopped sending",
                            ),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(100 << failures.min(6))).await;
                    break;
                }
            }
        }
    }
    Ok(())
}

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.done {
                return Ok(0);
            }
            let next = self.rx.recv();
            self.room.notify_one();
            match next {
                Ok(Ok(Some(b))) => self.current = b,
                Ok(Ok(None)) => self.done = true,
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Err(io::Error::other(
                        "the object store's read stream ended without finishing",
                    ));
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

impl Drop for RangeReader {
    fn drop(&mut self) {
        // Close the channel, then wake the sender so that it sees it closed.
        let (_, closed) = std::sync::mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.rx, closed));
        self.room.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_5_mib_until_10000_of_them_would_not_hold_three_times_the_table() {
        assert_eq!(part_bytes(0), 5 << 20);
        assert_eq!(part_bytes(1 << 30), 5 << 20);
        // 10,000 parts of 5 MiB hold 48.8 GiB: enough for tables up to 16.3 GiB on disk.
        assert_eq!(part_bytes(16 << 30), 5 << 20);
        let big: u64 = 1 << 40;
        let p = part_bytes(big) as u64;
        assert!(p * MAX_PARTS as u64 >= 3 * big && p % (1 << 20) == 0, "{p}");
        assert_eq!(part_bytes(u64::MAX), 5 << 30, "S3's largest part");
    }

    #[test]
    fn server_messages_become_one_bounded_line() {
        let doc = "<?xml?>\n<Error>\n  <Code>SlowDown</Code>\n</Error>";
        assert_eq!(
            one_line(doc),
            "<?xml?> <Error> <Code>SlowDown</Code> </Error>"
        );
        assert_eq!(one_line(&"x ".repeat(1000)).chars().count(), 303);
    }
}
