//! Real S3-compatible servers on loopback for the object storage tests (issue 20), with
//! authentication on: Garage (a production object store) and s3s-fs (quick to start), both
//! installed by `scripts/install-deps.sh` into `$PGARC_S3_CACHE` (default
//! `/var/cache/pgarc/s3` for root, else `~/.cache/pgarc/s3`). Also a proxy that injects
//! transient faults, and `tests/s3tool.py`, an independent S3 client (boto3) for what the tests
//! check behind pgarc's back: copying a prefix down, listing open multipart uploads,
//! replacing an object.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{free_port, repo_root, run_ok};

pub const BUCKET: &str = "pgarc-test";

/// Where install-deps put the S3 servers.
pub fn s3_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PGARC_S3_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let root = is_root();
    if root {
        PathBuf::from("/var/cache/pgarc/s3")
    } else {
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/pgarc/s3")
    }
}

fn is_root() -> bool {
    // The owner of /proc/self is the effective user.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn server_binary(name: &str) -> PathBuf {
    let path = s3_cache_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/install-deps.sh (it installs the S3 servers the tests use)",
        path.display()
    );
    path
}

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Garage,
    S3sFs,
}

/// A throwaway S3-compatible server with one bucket and one access key; stopped on drop.
pub struct S3Server {
    pub kind: Kind,
    pub endpoint: String,
    pub key_id: String,
    pub secret: String,
    child: Option<Child>,
    // Removed after the server is stopped.
    _dir: tempfile::TempDir,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("random bytes");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Starts a server with its output in `dir/server.log` and waits until it listens on `port`.
fn spawn_server(mut cmd: Command, dir: &Path, port: u16, what: &str) -> Child {
    let log = dir.join("server.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    wait_for_port(port, what, &log);
    child
}

fn wait_for_port(port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{what} did not start: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

impl S3Server {
    pub fn start(kind: Kind) -> S3Server {
        match kind {
            Kind::Garage => S3Server::garage(),
            Kind::S3sFs => S3Server::s3s_fs(),
        }
    }

    /// s3s-fs: one process serving a directory, with one access key (signature V4 checked).
    pub fn s3s_fs() -> S3Server {
        let bin = server_binary("s3s-fs-0.14.1/bin/s3s-fs");
        let dir = tempfile::Builder::new()
            .prefix("pgarc-s3s-")
            .tempdir()
            .unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join(BUCKET)).unwrap();
        let (key_id, secret) = (format!("AK{}", random_hex(9)), random_hex(20));
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", &key_id, "--secret-key", &secret])
            .arg(&root);
        let child = spawn_server(cmd, dir.path(), port, "s3s-fs");
        S3Server {
            kind: Kind::S3sFs,
            endpoint: format!("http://127.0.0.1:{port}"),
            key_id,
            secret,
            child: Some(child),
            _dir: dir,
        }
    }

    /// Garage: a one-node cluster with a layout, a bucket and a key allowed on it.
    pub fn garage() -> S3Server {
        let bin = server_binary("garage-2.5.0/bin/garage");
        let dir = tempfile::Builder::new()
            .prefix("pgarc-garage-")
            .tempdir()
            .unwrap();
        let (s3, rpc, admin) = (free_port(), free_port(), free_port());
        let config = dir.path().join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\
                 [s3_api]\ns3_region = \"us-east-1\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
                 root_domain = \".s3.garage.localhost\"\n[admin]\n\
                 api_bind_addr = \"127.0.0.1:{admin}\"\n",
                d = dir.path().display(),
                secret = random_hex(32),
            ),
        )
        .unwrap();
        let mut cmd = Command::new(&bin);
        cmd.arg("-c")
            .arg(&config)
            .arg("server")
            .env("RUST_LOG", "warn");
        let child = spawn_server(cmd, dir.path(), s3, "garage");
        let garage = |args: &[&str]| -> String {
            let mut last = String::new();
            // The node takes a moment to answer RPCs.
            for _ in 0..50 {
                let out = Command::new(&bin)
                    .arg("-c")
                    .arg(&config)
                    .args(args)
                    .output()
                    .unwrap();
                if out.status.success() {
                    return String::from_utf8_lossy(&out.stdout).into_owned();
                }
                last = String::from_utf8_lossy(&out.stderr).into_owned();
                std::thread::sleep(Duration::from_millis(200));
            }
            panic!("garage {args:?}: {last}");
        };
        let node = garage(&["node", "id", "-q"]);
        let node = node.trim().split('@').next().unwrap().to_string();
        garage(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        garage(&["layout", "apply", "--version", "1"]);
        garage(&["bucket", "create", BUCKET]);
        let (key_id, secret) = (format!("GK{}", random_hex(12)), random_hex(32));
        garage(&["key", "import", "--yes", "-n", "pgarc", &key_id, &secret]);
        garage(&[
            "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", "pgarc",
        ]);
        S3Server {
            kind: Kind::Garage,
            endpoint: format!("http://127.0.0.1:{s3}"),
            key_id,
            secret,
            child: Some(child),
            _dir: dir,
        }
    }

    /// Where s3s-fs keeps the object `key` of the test bucket (it stores objects as files).
    pub fn object_file(&self, key: &str) -> PathBuf {
        assert!(
            matches!(self.kind, Kind::S3sFs),
            "only s3s-fs keeps objects as files"
        );
        self._dir.path().join("root").join(BUCKET).join(key)
    }

    /// Sets the AWS variables that reach this server (and clears any others).
    pub fn env(&self, cmd: &mut Command) {
        self.env_to(cmd, &self.endpoint);
    }

    /// [`S3Server::env`] through another endpoint (a proxy).
    pub fn env_to(&self, cmd: &mut Command, endpoint: &str) {
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("AWS_ACCESS_KEY_ID", &self.key_id)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent");
    }

    /// `tests/s3tool.py` (boto3) against this server.
    pub fn tool(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("python3");
        cmd.arg(repo_root().join("tests/s3tool.py")).args(args);
        self.env(&mut cmd);
        String::from_utf8(run_ok(&mut cmd).stdout).unwrap()
    }

    /// Copies every object under `prefix` into the local directory `to`.
    pub fn copy_down(&self, prefix: &str, to: &Path) {
        self.tool(&["copy-down", BUCKET, prefix, &to.display().to_string()]);
    }

    /// Copies every file under the local directory `from` to `prefix`.
    pub fn copy_up(&self, from: &Path, prefix: &str) {
        self.tool(&["copy-up", &from.display().to_string(), BUCKET, prefix]);
    }

    /// The keys of the multipart uploads open in the bucket.
    pub fn open_uploads(&self) -> Vec<String> {
        self.tool(&["uploads", BUCKET])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The object keys under `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.tool(&["keys", BUCKET, prefix])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Stops the server (as a crash would: SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A proxy in front of an S3 server that injects transient faults, by request number: some
/// requests get `503 SlowDown`, some connections are dropped before any answer, and some
/// GET answers are cut off in the middle of their body. Everything else is passed through
/// (one request per connection).
pub struct FlakyProxy {
    pub endpoint: String,
    pub faults: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
    /// Parts of multipart uploads passed through.
    pub parts: Arc<AtomicUsize>,
}

/// What a [`FlakyProxy`] does.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// Inject the transient faults.
    pub flaky: bool,
    /// Hold each part upload this long before passing it on (a slow link).
    pub part_delay: Duration,
}

impl FlakyProxy {
    pub fn start(upstream: &str, how: Faults) -> FlakyProxy {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let faults = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let parts = Arc::new(AtomicUsize::new(0));
        let (f, r, p) = (faults.clone(), requests.clone(), parts.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let n = r.fetch_add(1, Ordering::SeqCst);
                let (upstream, f, p) = (upstream.clone(), f.clone(), p.clone());
                std::thread::spawn(move || {
                    let _ = proxy_one(conn, &upstream, n, how, &f, &p);
                });
            }
        });
        FlakyProxy {
            endpoint,
            faults,
            requests,
            parts,
        }
    }
}

fn read_request(conn: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body)?;
    Ok((head, body))
}

fn proxy_one(
    mut conn: TcpStream,
    upstream: &str,
    n: usize,
    how: Faults,
    faults: &AtomicUsize,
    parts: &AtomicUsize,
) -> std::io::Result<()> {
    let (head, body) = read_request(&mut conn)?;
    let is_get = head.starts_with("GET ");
    if head.starts_with("PUT ")
        && head
            .lines()
            .next()
            .is_some_and(|l| l.contains("partNumber="))
    {
        parts.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(how.part_delay);
    }
    if !how.flaky {
        return pass(conn, upstream, &head, &body, None, faults);
    }
    // Every 7th request: 503 SlowDown; every 11th: the connection dropped unanswered;
    // every 5th GET: the answer cut off after 32 KiB of its body.
    if n % 7 == 3 {
        faults.fetch_add(1, Ordering::SeqCst);
        let doc = "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code>\
                   <Message>Please reduce your request rate.</Message></Error>";
        write!(
            conn,
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{doc}",
            doc.len()
        )?;
        return Ok(());
    }
    if n % 11 == 5 {
        faults.fetch_add(1, Ordering::SeqCst);
        return Ok(());
    }
    let cut = (is_get && n % 5 == 1).then_some(32 << 10);
    pass(conn, upstream, &head, &body, cut, faults)
}

/// Passes one request on and its answer back, cut off after `cut` bytes if asked.
fn pass(
    mut conn: TcpStream,
    upstream: &str,
    head: &str,
    body: &[u8],
    cut: Option<usize>,
    faults: &AtomicUsize,
) -> std::io::Result<()> {
    let mut up = TcpStream::connect(upstream)?;
    let head = head.trim_end_matches("\r\n\r\n");
    let head: Vec<&str> = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    up.write_all(format!("{}\r\nConnection: close\r\n\r\n", head.join("\r\n")).as_bytes())?;
    up.write_all(body)?;
    let mut sent = 0usize;
    let mut buf = [0u8; 16 << 10];
    loop {
        let k = up.read(&mut buf)?;
        if k == 0 {
            break;
        }
        conn.write_all(&buf[..k])?;
        sent += k;
        if cut.is_some_and(|c| sent > c) {
            faults.fetch_add(1, Ordering::SeqCst);
            break;
        }
    }
    Ok(())
}
