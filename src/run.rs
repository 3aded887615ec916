//! Run infrastructure shared by the pipelines: the signals that stop a run, the error that
//! says a run was stopped by one, and how sizes are written for people.

use anyhow::{Context, Result};

/// A run was stopped by SIGINT or SIGTERM; `what` says what is complete and what is not.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by {signal}: {what}")]
pub struct Interrupted {
    pub signal: &'static str,
    pub what: String,
}

impl Interrupted {
    /// The shell's convention: 128 + the signal's number.
    pub fn exit_code(&self) -> u8 {
        if self.signal == "SIGTERM" {
            143
        } else {
            130
        }
    }
}

/// SIGINT and SIGTERM, as they arrive. Creating one replaces the default action (ending
/// the process) with delivery here, for the lifetime of the process.
pub struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn new() -> Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("could not handle SIGINT")?,
            term: signal(SignalKind::terminate()).context("could not handle SIGTERM")?,
        })
    }

    /// The next signal's name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

/// Bytes in binary units, one decimal: `512 B`, `1.5 MiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// The environment variable that names a kill point ([`kill_point`]).
pub const KILL_AT_VAR: &str = "PGARC_TEST_KILL_AT";

/// A named instant at which the test suite kills a run to test `--resume`
/// (format-spec/tool.md §10): when `PGARC_TEST_KILL_AT` names it, the process sends itself
/// SIGKILL here, as the OOM killer or a host restart would, without a chance to clean up.
/// Otherwise nothing happens.
pub fn kill_point(name: &str) {
    if std::env::var_os(KILL_AT_VAR).is_some_and(|v| v == name) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}
