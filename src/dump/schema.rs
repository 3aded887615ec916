//! The schema capture: the stock pg_dump, under the dump's snapshot, writes everything except
//! the rows of the tables pgarc copies itself. Sequence values (SEQUENCE SET), materialized
//! view data (REFRESH), large objects and extension configuration tables stay pg_dump's: only
//! the plain tables are named in `--exclude-table-data` patterns that match exactly them
//! ([`exclude_data_patterns`]), because a wildcard would also drop sequence values and matview
//! data (reference notes §5.2).

use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::process::Stdio;

use anyhow::{bail, Context, Result};
use tokio::io::AsyncBufReadExt;
use tokio::process::Command;

use super::plan::exclude_data_patterns;
use super::scope::DumpSelection;
use crate::archive::frame::Codec;
use crate::pg::conn::ConnParams;
use crate::pg::session::CatalogTable;
use crate::pg::tools::ToolVersion;

/// Environment variables of libpq that must not leak from pgarc's own environment into
/// pg_dump's when pgarc sets the connection explicitly.
const CLEARED_ENV: &[&str] = &[
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGPASSFILE",
    "PGREQUIRESSL",
    "PGTARGETSESSIONATTRS",
    "PGLOADBALANCEHOSTS",
];

/// pg_dump's `-Z` value for the files it writes (large objects, extension table data).
fn pg_dump_compression(codec: Codec, pg_dump: &ToolVersion) -> String {
    match (codec, pg_dump.major >= 16) {
        (Codec::None, true) => "none".into(),
        (Codec::Gzip(l), true) => format!("gzip:{l}"),
        (Codec::Zstd(l), true) => format!("zstd:{l}"),
        (Codec::Gzip(l), false) => l.to_string(),
        // pg_dump 15 has no zstd: its few files stay uncompressed.
        (_, false) => "0".into(),
    }
}

/// Makes the child die with pgarc and write private files: in the child, between fork and
/// exec, it sets the umask to 077 (pg_dump creates its files with mode 0666 minus the umask;
/// the archive must be 0600 as pg_dump's directory is 0700) and asks the kernel for SIGKILL
/// when the parent goes away (`PR_SET_PDEATHSIG`), so that a `kill -9` of pgarc cannot leave
/// a pg_dump holding sessions and writing into an abandoned directory. If pgarc died before
/// the request took effect, the parent pid has changed and the child refuses to start.
///
/// The death signal is tied to the *thread* that forks. tokio spawns the child from the
/// runtime's worker thread that polls the capture; worker threads live as long as the
/// runtime, which is the whole run.
///
/// With `arg_bytes` of arguments, it also raises the child's soft stack limit (up to the
/// hard limit) to four times that plus 8 MiB, since Linux accepts at most a quarter of
/// RLIMIT_STACK of argv and environment at exec.
fn bind_to_parent(cmd: &mut Command, arg_bytes: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let parent = nix::unistd::getpid();
    let (soft, hard) = getrlimit(Resource::RLIMIT_STACK).unwrap_or((8 << 20, 8 << 20));
    let wanted = (arg_bytes as u64).saturating_mul(4).saturating_add(8 << 20);
    let stack = (soft < wanted).then_some((wanted.min(hard), hard));
    // SAFETY: `pre_exec` runs the closure in the forked child, where only async-signal-safe
    // operations are allowed. The closure calls umask(2), setrlimit(2), prctl(2) and
    // getppid(2), which are
    // plain system calls (async-signal-safe per POSIX and Linux), compares two integers, and
    // builds an `io::Error` from a raw errno, which does not allocate. It takes no lock,
    // allocates nothing and touches no state shared with other threads.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
            if let Some((soft, hard)) = stack {
                setrlimit(Resource::RLIMIT_STACK, soft, hard)
                    .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
            }
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// pg_dump while it runs: when the capture is abandoned (a failure elsewhere, SIGINT), it is
/// killed and waited for, so that no pg_dump outlives pgarc (at most 2 s; SIGKILL is not
/// refused). Blocking, but only on that path: a child already waited for is left alone.
struct Reaper(tokio::process::Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        if !matches!(self.0.try_wait(), Ok(None)) {
            return;
        }
        let _ = self.0.start_kill();
        for _ in 0..200 {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// What the schema capture needs.
pub struct Capture<'a> {
    pub pg_dump: &'a Path,
    pub version: &'a ToolVersion,
    pub conn: &'a ConnParams,
    pub snapshot_id: &'a str,
    /// The directory pg_dump writes (it must not exist).
    pub out: &'a Path,
    pub codec: Codec,
    /// The tables whose rows pgarc copies (their data is excluded from pg_dump's).
    pub tables: &'a [CatalogTable],
    pub selection: &'a DumpSelection,
    /// The database's encoding (the data's).
    pub encoding: &'a str,
    /// The other relations whose data pg_dump writes (schema, name).
    pub keep: &'a [(String, String)],
}

/// How the exclusion patterns (carriers) reach pg_dump: a `--filter` file's bytes and the
/// command-line arguments (bytes).
fn exclusion_delivery(patterns: &[String], has_filter: bool) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut filter = Vec::new();
    let mut args = Vec::new();
    for p in patterns {
        let bytes = crate::pg::carrier::to_bytes(p);
        if has_filter && !bytes.contains(&b'\n') && !bytes.contains(&b'\r') {
            filter.extend_from_slice(b"exclude table_data ");
            filter.extend_from_slice(&bytes);
            filter.push(b'\n');
        } else {
            let mut arg = b"--exclude-table-data=".to_vec();
            arg.extend_from_slice(&bytes);
            args.push(arg);
        }
    }
    (filter, args)
}

/// Runs pg_dump. Returns when it has finished.
pub async fn capture(c: Capture<'_>) -> Result<()> {
    let Capture {
        pg_dump,
        version,
        conn,
        snapshot_id,
        out,
        codec,
        tables,
        selection,
        encoding,
        keep,
    } = c;
    let mut cmd = Command::new(pg_dump);
    cmd.arg("--format=directory")
        .arg(format!("--file={}", out.display()))
        .arg(format!("--snapshot={snapshot_id}"))
        .arg("--no-sync")
        .arg(format!(
            "--compress={}",
            pg_dump_compression(codec, version)
        ));
    cmd.args(selection.pg_dump_args());
    // The tables whose rows pgarc copies, as patterns in the database's encoding (bytes):
    // through `--filter` on stdin where pg_dump has it (17+), else on the command line, with
    // the child's stack limit raised so that the kernel accepts an argument list of any
    // length (Linux allows argv a quarter of RLIMIT_STACK). Names with a line break cannot
    // go in a filter file and go on the command line.
    let (filter, args) =
        exclusion_delivery(&exclude_data_patterns(tables, keep), version.major >= 17);
    let arg_bytes: usize = args.iter().map(|a| a.len() + 1).sum();
    for a in args {
        cmd.arg(std::ffi::OsString::from_vec(a));
    }
    if !filter.is_empty() {
        cmd.arg("--filter=-");
    }
    for var in CLEARED_ENV {
        cmd.env_remove(var);
    }
    // The connection, password included, goes through the environment, never argv.
    for (k, v) in conn.libpq_env("pgarc schema capture") {
        cmd.env(k, v);
    }
    // pg_dump writes the archive in the database's encoding, the encoding of the rows the
    // workers copy; an inherited PGCLIENTENCODING must not change that.
    cmd.env("PGCLIENTENCODING", encoding);
    cmd.stdin(if filter.is_empty() {
        Stdio::null()
    } else {
        Stdio::piped()
    })
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    bind_to_parent(&mut cmd, arg_bytes);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not run {}", pg_dump.display()))?;
    let stderr_pipe = child.stderr.take();
    let stdin_pipe = child.stdin.take();
    let mut reaper = Reaper(child);
    // pg_dump's messages: kept for the error, and with --verbose shown as they come.
    let verbose = selection.verbose;
    let read_stderr = async {
        let mut buf = Vec::new();
        if let Some(pipe) = stderr_pipe {
            let mut reader = tokio::io::BufReader::new(pipe);
            let mut line = Vec::new();
            while matches!(reader.read_until(b'\n', &mut line).await, Ok(n) if n > 0) {
                if verbose {
                    crate::progress::say(String::from_utf8_lossy(&line).trim_end());
                }
                buf.append(&mut line);
            }
        }
        buf
    };
    let write_filter = async {
        if let Some(mut pipe) = stdin_pipe {
            use tokio::io::AsyncWriteExt;
            // pg_dump reads the whole filter before it starts; a failure shows in its exit.
            let _ = pipe.write_all(&filter).await;
            let _ = pipe.shutdown().await;
        }
    };
    let (status, stderr, ()) = tokio::join!(reaper.0.wait(), read_stderr, write_filter);
    let status = status.with_context(|| format!("could not wait for {}", pg_dump.display()))?;
    if !status.success() {
        let stderr = String::from_utf8_lossy(&stderr);
        let msg: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = msg[msg.len().saturating_sub(3)..].join(" / ");
        let status = status
            .code()
            .map_or("a signal".to_string(), |c| format!("exit status {c}"));
        bail!(
            "the schema capture failed: {} ended with {status}: {}",
            pg_dump.display(),
            if tail.is_empty() { "no message" } else { &tail }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_options_follow_pg_dump_syntax() {
        let v = |major| ToolVersion {
            major,
            full: format!("{major}.1"),
        };
        assert_eq!(pg_dump_compression(Codec::Zstd(3), &v(17)), "zstd:3");
        assert_eq!(pg_dump_compression(Codec::Zstd(3), &v(15)), "0");
        assert_eq!(pg_dump_compression(Codec::Gzip(6), &v(15)), "6");
        assert_eq!(pg_dump_compression(Codec::None, &v(16)), "none");
    }
}
