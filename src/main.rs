//! The pgarc binary: parses arguments, runs the command, and turns the outcome into one line
//! on stderr and an exit code. Exit codes: 0 success, 1 failure (for `list`: the archive could
//! not be read), 2 usage error (clap's own).

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use pgarc::archive::{list::write_listing, ArchiveDir};
use pgarc::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pgarc: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::List(args) => {
            let toc = ArchiveDir::open(&args.archive)?.read_toc()?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            write_listing(&toc, &mut out)?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `pgarc list | head` must not report an error when head exits.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
