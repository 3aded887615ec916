//! Run infrastructure shared by the pipelines: the signals that stop a run, and the error
//! that says a run was stopped by one.

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
