//! The command line as the user types it: clap derive types that validate syntax only.
//! Turning these into pipeline options happens in the library, one place per command.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Dump and restore PostgreSQL databases in parallel, consistently and verifiably, as
/// pg_dump directory-format archives.
#[derive(Debug, Parser)]
#[command(name = "pgarc", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print an archive's table of contents, in the format of `pg_restore -l`.
    #[command(long_about = "Print an archive's table of contents, in the format of \
        `pg_restore -l`.\n\nThe header lines (starting with `;`) also show the archive \
        version and which pg_restore versions can read it. Entry lines are \
        `ID; TABLEOID OID DESC SCHEMA NAME OWNER`, exactly as pg_restore prints them, so the \
        output can be edited and used as a list file.\n\nExit status: 0 on success, 1 when \
        the archive cannot be read.")]
    List(ListArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The archive directory (as written by `pgarc dump` or `pg_dump -Fd`).
    #[arg(value_name = "ARCHIVE_DIR")]
    pub archive: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn list_takes_one_directory() {
        let cli = Cli::try_parse_from(["pgarc", "list", "/backups/db"]).unwrap();
        let Command::List(args) = cli.command;
        assert_eq!(args.archive, PathBuf::from("/backups/db"));
        assert!(Cli::try_parse_from(["pgarc", "list"]).is_err());
    }
}
