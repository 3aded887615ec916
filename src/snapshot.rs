//! `pgarc snapshot` (issue 21, first step): a long-running process that exports a snapshot
//! and holds it, so that dumps can import it (`pgarc dump --snapshot ID`) and a dump that
//! crashed can be resumed under the same snapshot, as long as this process lives. It is the
//! process that survives a crashed dump, as `pgcopydb snapshot` is.
//!
//! It opens a REPEATABLE READ, READ ONLY transaction (SERIALIZABLE, READ ONLY, DEFERRABLE with
//! `--serializable-deferrable`) with every timeout off and TCP keepalives on, exports its
//! snapshot, prints the id on stdout (and writes it to `--id-file`), and waits: for SIGTERM or
//! SIGINT, or with `--until-eof` for end of file on stdin. Then it ends the transaction,
//! removes the id file and exits 0. If its session ends first (the server restarted, the
//! backend was terminated), the snapshot is gone: it removes the id file, says so in one
//! line and exits 1.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};

use crate::pg::conn::ConnParams;
use crate::pg::session::{ConnectFailed, SnapshotHolder};

/// What `pgarc snapshot` was asked to do.
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    pub conn: ConnParams,
    /// `--id-file FILE`: where the id is written (mode 0600), removed when the snapshot ends.
    pub id_file: Option<PathBuf>,
    /// `--until-eof`: also stop at end of file on stdin.
    pub until_eof: bool,
    /// `--serializable-deferrable`.
    pub serializable: bool,
    /// `-q`: no message on stderr (the id still goes to stdout).
    pub quiet: bool,
}

/// Why the holding ended, when it ended as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    Signal(&'static str),
    EndOfInput,
}

/// Holds a snapshot until told to stop. `Err` when it could not be taken, or was lost.
pub async fn run(mut opts: SnapshotOptions) -> Result<Stopped> {
    let holder = match SnapshotHolder::open(&opts.conn, None, opts.serializable).await {
        Err(e) if opts.conn.may_prompt() && ConnectFailed::needs_password(&e) => {
            opts.conn.prompt_password()?;
            SnapshotHolder::open(&opts.conn, None, opts.serializable).await
        }
        r => r,
    }?;
    let id = holder.snapshot_id.clone();
    let mut signals = crate::run::Signals::new()?;
    // The file first: whoever reads the id on stdout may rely on the file being there.
    if let Some(path) = &opts.id_file {
        write_id_file(path, &id)?;
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{id}")
            .and_then(|()| out.flush())
            .context("cannot write the id to stdout")?;
    }
    if !opts.quiet {
        eprintln!(
            "pgarc: holding snapshot {id} of database {:?} ({}); use it with pgarc dump \
             --snapshot {id}; stop with SIGTERM or SIGINT{}",
            holder.info.database,
            holder.info.version,
            if opts.until_eof {
                ", or end of input"
            } else {
                ""
            }
        );
    }
    let until_eof = opts.until_eof;
    let eof = async move {
        if !until_eof {
            return std::future::pending().await;
        }
        // A plain thread, not the runtime's blocking pool: a read that never returns must
        // not keep the runtime from shutting down when a signal stops the holding.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            let _ = tx.send(());
        });
        let _ = rx.await;
    };
    let mut closed = holder.session.closed.clone();
    let stopped = tokio::select! {
        signal = signals.recv() => Stopped::Signal(signal),
        () = eof => Stopped::EndOfInput,
        _ = closed.wait_for(|c| c.is_some()) => {
            remove_id_file(opts.id_file.as_deref());
            let reason = holder.lost().unwrap_or_default();
            return Err(anyhow!(
                "snapshot lost: the session holding snapshot {id} ended ({reason}); dumps \
                 using it cannot be resumed: start them again under a new snapshot"
            ));
        }
    };
    remove_id_file(opts.id_file.as_deref());
    holder.finish().await?;
    if !opts.quiet {
        eprintln!("pgarc: released snapshot {id}");
    }
    Ok(stopped)
}

/// Writes the id to `path` (mode 0600) through a temporary file and a rename, so that a
/// reader never sees half an id.
fn write_id_file(path: &Path, id: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("pgarc-tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    writeln!(f, "{id}").with_context(|| format!("cannot write {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

fn remove_id_file(path: Option<&Path>) {
    if let Some(path) = path {
        let _ = std::fs::remove_file(path);
    }
}
