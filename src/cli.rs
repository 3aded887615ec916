//! The command line as the user types it: clap derive types that validate syntax only.
//! Turning these into pipeline options happens in the library, one place per command.

use std::path::PathBuf;

use crate::archive::store::Location;

use clap::{Parser, Subcommand};

/// Dump and restore PostgreSQL databases in parallel, consistently and verifiably, as
/// pg_dump directory-format archives.
#[derive(Debug, Parser)]
#[command(
    name = "pgarc",
    version,
    long_version = LONG_VERSION.as_str(),
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What `pgarc --version` says: the version, the commit it was built from (build.rs), and
/// the servers and archive versions it works with.
pub static LONG_VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    use crate::archive::manifest::{FORMAT, FORMAT_1, FORMAT_2};
    format!(
        "{} (commit {})\n\
         PostgreSQL servers: 12 and newer, tested with 14 to 18 (big tables are split into \
         ctid ranges from 14 on)\n\
         pg_dump directory archives: reads versions 1.12 to 1.16; writes the version of the \
         pg_dump it runs (1.14 for pg_dump 12 to 15, 1.15 for 16, 1.16 for 17 and 18)\n\
         pgarc archive format: writes {FORMAT} ({FORMAT_2} or {FORMAT_1} with --no-digest); \
         reads 1.x to {}.x",
        env!("CARGO_PKG_VERSION"),
        env!("PGARC_GIT_COMMIT"),
        FORMAT.major
    )
});

/// The command line as the man pages describe it: `clap_mangen` does not show an option's
/// other names, so each option that has some says them at the end of its text, as `--help`
/// does (`[aliases: --blobs]`).
pub fn for_man_pages(cmd: clap::Command) -> clap::Command {
    let cmd = cmd.mut_args(|arg| {
        let mut names: Vec<String> = arg
            .get_visible_aliases()
            .into_iter()
            .flatten()
            .map(|a| format!("--{a}"))
            .collect();
        names.extend(
            arg.get_visible_short_aliases()
                .into_iter()
                .flatten()
                .map(|a| format!("-{a}")),
        );
        if names.is_empty() {
            return arg;
        }
        let text = arg
            .get_long_help()
            .or(arg.get_help())
            .map(ToString::to_string)
            .unwrap_or_default();
        let aliases = format!("[aliases: {}]", names.join(", "));
        arg.long_help(format!("{text}\n{aliases}"))
    });
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    names
        .iter()
        .fold(cmd, |cmd, name| cmd.mut_subcommand(name, for_man_pages))
}

/// A section of the archive as `--section` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SectionArg {
    PreData,
    Data,
    PostData,
}

impl From<SectionArg> for crate::archive::toc::Section {
    fn from(s: SectionArg) -> Self {
        match s {
            SectionArg::PreData => Self::PreData,
            SectionArg::Data => Self::Data,
            SectionArg::PostData => Self::PostData,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print an archive's table of contents, in the format of `pg_restore -l`.
    #[command(
        long_about = "Print an archive's table of contents, in the format of \
        `pg_restore -l`.\n\nThe header lines (starting with `;`) also show the archive \
        version and which pg_restore versions can read it. Entry lines are \
        `ID; TABLEOID OID DESC SCHEMA NAME OWNER`, exactly as pg_restore prints them, so the \
        output can be edited and used as a list file.\n\nExit status: 0 on success, 1 when \
        the archive cannot be read.",
        after_help = "Examples:\n  pgarc list /backups/mydb\n  \
        pgarc list /backups/mydb | grep 'TABLE DATA'\n  \
        pgarc list /backups/mydb > list   # edit, then: pgarc restore -L list ...\n  \
        pgarc list s3://backups/mydb/2026-11-24   # AWS_* variables or ~/.aws configure access"
    )]
    List(ListArgs),
    /// Dump a database into a directory archive that stock pg_restore reads.
    #[command(
        long_about = "Dump a database into a directory-format archive that stock \
        pg_restore reads, from one consistent snapshot, with N workers that split big tables \
        into ctid ranges and compress in parallel. The schema, sequence values, materialized \
        view data and large objects are captured by the stock pg_dump under the same \
        snapshot. manifest.toml, written last, records every file's SHA-256; a directory \
        without it is incomplete.\n\nExit status: 0 on success, 1 on any failure (the \
        archive then has no manifest).",
        after_help = "Examples:\n  pgarc dump -d mydb -j 8 -f /backups/mydb\n  \
        pgarc dump -d 'host=db1 user=backup dbname=sales sslmode=verify-full' -Z gzip:6 -f sales.d\n  \
        pgarc dump -d sales -n app -T 'app.audit_*' --exclude-table-data 'app.big_log' -f app.d\n  \
        pgarc dump -d sales -t 'app.orders*' --strict-names --report dump.json -f orders.d\n  \
        pgarc dump -d postgresql://backup@db1/sales --snapshot 00000003-0000001B-1 -f sales.d\n  \
        pgarc dump -d mydb -j 8 -f s3://backups/mydb/2026-11-24   # straight to object storage\n\n\
        s3://BUCKET/PREFIX: credentials, region and endpoint by the AWS conventions \
        (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL, \
        ~/.aws/credentials and config); the prefix must hold no objects.\n\n\
        Patterns (-n -N -t -T --exclude-table-data) follow pg_dump: * and ? are wildcards, \
        unquoted letters fold to lower case, \"Quoted\" names keep case, schema.table qualifies; \
        -t without a schema matches tables visible in the search path.\n\n\
        TLS: sslmode, sslrootcert, sslcert and sslkey in the conninfo string (or PGSSLMODE, \
        PGSSLROOTCERT, PGSSLCERT, PGSSLKEY), with libpq's meanings.",
        disable_help_flag = true
    )]
    Dump(Box<DumpArgs>),
    /// Restore a directory archive (pgarc's or pg_dump -Fd's) into a database, in parallel.
    #[command(
        long_about = "Restore a directory-format archive, written by pgarc dump or by stock \
        pg_dump -Fd, into a database, natively and in parallel, with pg_restore's semantics: \
        pre-data in TOC order, then table data (big pgarc tables split across workers by their \
        frame index), indexes and constraints as soon as their tables are loaded, ACLs, then \
        materialized view data. Every frame of a pgarc archive is checked against the \
        manifest before its rows are sent.\n\nA target database that already holds objects \
        is refused unless --clean is given. Errors in individual statements are reported and \
        the restore carries on, as pg_restore does (-e stops at the first).\n\nExit status: \
        0 on success, 1 on any error.",
        after_help = "Examples:\n  createdb newdb && pgarc restore -d newdb -j 8 /backups/mydb\n  \
        pgarc restore -d postgres --create -j 4 /backups/mydb\n  \
        pgarc restore -d mydb --clean --if-exists --no-owner /backups/mydb\n  \
        pgarc restore -l /backups/mydb > list; $EDITOR list; pgarc restore -d mydb -L list /backups/mydb\n  \
        pgarc restore -d mydb -n app -t orders -I orders_pkey /backups/mydb\n  \
        pgarc restore -d mydb -a --disable-triggers -1 /backups/mydb\n  \
        pgarc restore -d newdb -j 8 --verify s3://backups/mydb/2026-11-24",
        disable_help_flag = true
    )]
    Restore(Box<RestoreArgs>),
    /// Check an archive offline and name every damaged file and frame; or, with --against,
    /// prove that a database holds what the archive holds.
    #[command(
        long_about = "Check an archive offline, on any machine, without a database. For a \
        pgarc archive: the manifest's own checksum; every listed file present with its size \
        and SHA-256; no unlisted files; toc.dat parses and agrees with the manifest; then \
        every frame decompresses and matches its checksum, length, row count and (format 3) \
        its rows' content digest, and each data file ends with exactly one end-of-data marker. For an archive that stock pg_dump \
        wrote (no manifest): a structural check only (toc.dat parses, every data file it names \
        exists, decompresses fully and ends with the marker), since it holds no checksums.\n\n\
        --quick reads only small files and each data file's first and last frame: it catches \
        a damaged manifest, toc.dat or frame index, a missing, added, truncated or grown file, \
        data files swapped between tables, and damage in a first or last frame, but not damage \
        inside the other frames that leaves a file's size unchanged.\n\nOne line per problem \
        (file, frame, table, what is wrong), then the verdict.\n\nExit status: 0 intact, 1 \
        damaged, 2 could not run (not an archive, unreadable directory).",
        after_help = "Examples:\n  pgarc verify /backups/mydb\n  \
        pgarc verify -j 8 /backups/mydb\n  \
        pgarc verify --quick /backups/mydb || echo damaged\n  \
        pgarc verify /backups/mydb --against -d restored -j 4\n  \
        pgarc verify -j 8 s3://backups/mydb/2026-11-24\n\n\
        --against [connection options]: instead of the offline check, prove that a database \
        (e.g. one restored from the archive) holds what the archive holds: every table's rows \
        are copied again under the archive's COPY settings, in parallel (big tables in ctid \
        ranges), and their order-independent content digest compared with the archive's (its \
        manifest's, or computed from the data files of a stock archive); also sequences \
        (the archive's SEQUENCE SET values) and large objects (per-object SHA-256); tables the \
        archive does not know are reported as extra. Nothing is written. Exit status: 0 \
        equal, 1 different (each difference named), 2 could not run.",
        disable_help_flag = true
    )]
    Verify(VerifyArgs),
    /// Export a snapshot and hold it until stopped, for dumps to share and resume under.
    #[command(
        long_about = "Open a REPEATABLE READ, READ ONLY transaction (SERIALIZABLE, READ \
        ONLY, DEFERRABLE with --serializable-deferrable), export its snapshot, print the \
        snapshot id on stdout (and write it to --id-file), and hold it, with keepalives on and \
        every timeout off, until SIGTERM or SIGINT (or, with --until-eof, end of input). Dumps \
        import it with pgarc dump --snapshot ID; while this process lives, a dump that was \
        interrupted can be resumed under the same snapshot.\n\nExit status: 0 when stopped \
        as asked (the id file is removed), 1 when the snapshot could not be taken or was lost \
        (its session ended: the server restarted, the backend was terminated).",
        after_help = "Examples:\n  pgarc snapshot -d mydb --id-file /run/pgarc/mydb.snapshot &\n  \
        pgarc dump -d mydb --snapshot \"$(cat /run/pgarc/mydb.snapshot)\" -j 8 -f /backups/mydb\n  \
        kill %1\n\n  coproc pgarc snapshot -d mydb --until-eof; read -r ID <&\"${COPROC[0]}\"",
        disable_help_flag = true
    )]
    Snapshot(SnapshotArgs),
    /// Print the shell completion script for SHELL on stdout.
    #[command(
        long_about = "Print the completion script for SHELL (bash, zsh, fish, elvish or \
        powershell) on stdout: every subcommand and option, and the values of options that \
        take one of a list. The Debian package installs the bash, zsh and fish scripts; other \
        installs can write them where their shell looks.\n\nExit status: 0.",
        after_help = "Examples:\n  pgarc completions bash > ~/.local/share/bash-completion/completions/pgarc\n  \
        pgarc completions zsh > ~/.zfunc/_pgarc   # with fpath+=(~/.zfunc) before compinit\n  \
        pgarc completions fish > ~/.config/fish/completions/pgarc.fish"
    )]
    Completions(CompletionsArgs),
    /// Write pgarc's man pages (pgarc.1 and one per subcommand) into DIR.
    #[command(
        long_about = "Write the man pages, pgarc.1 and pgarc-SUBCOMMAND.1 for each \
        subcommand, into DIR (created if missing), generated from the same definitions the \
        command line is parsed with. The Debian package ships them; `man -l DIR/pgarc-dump.1` \
        reads one without installing.\n\nExit status: 0, or 1 when DIR cannot be written.",
        after_help = "Examples:\n  pgarc manpages /tmp/pgarc-man && man -l /tmp/pgarc-man/pgarc-restore.1"
    )]
    Manpages(ManpagesArgs),
}

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManpagesArgs {
    /// Where to write them.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub conn: ConnectionArgs,
    /// Also write the snapshot id to FILE (mode 0600; removed when the snapshot is released).
    #[arg(long = "id-file", value_name = "FILE")]
    pub id_file: Option<PathBuf>,
    /// Also release the snapshot at end of input on stdin (for a parent process or coproc).
    #[arg(long = "until-eof")]
    pub until_eof: bool,
    /// Wait for a snapshot that is safe for a SERIALIZABLE, READ ONLY transaction.
    #[arg(long = "serializable-deferrable")]
    pub serializable_deferrable: bool,
    /// Print nothing on stderr (the id still goes to stdout).
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// Print help (-h is the host, as in pg_dump).
    #[arg(short = '?', long = "help", action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The archive: a directory or s3://BUCKET/PREFIX.
    #[arg(value_name = "ARCHIVE", value_parser = parse_location)]
    pub archive: Location,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Read with N threads (default: the number of CPUs); with --against, N database
    /// sessions (default 1).
    #[arg(short = 'j', long = "jobs", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub jobs: Option<u32>,
    /// Check sizes and metadata and each data file's first and last frame only.
    #[arg(long, conflicts_with = "against")]
    pub quick: bool,
    /// Compare the database given by the connection options (-d -h -p -U, PG* variables)
    /// with the archive, by content digest, instead of checking the archive offline.
    #[arg(long)]
    pub against: bool,
    #[command(flatten)]
    pub conn: ConnectionArgs,
    /// With --against: read tables larger than this in ctid ranges by several sessions.
    #[arg(
        long,
        value_name = "SIZE",
        default_value = "128MB",
        requires = "against"
    )]
    pub split_size: String,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Print help (-h is the host, as in pg_restore).
    #[arg(short = '?', long = "help", action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub conn: ConnectionArgs,
    /// The archive: a directory or s3://BUCKET/PREFIX.
    #[arg(value_name = "ARCHIVE", value_parser = parse_location)]
    pub archive: Location,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Number of workers (database sessions).
    #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub jobs: u16,
    /// Create the database (named as in the archive) and restore into it; -d names the
    /// database to connect to first.
    #[arg(short = 'C', long = "create")]
    pub create: bool,
    /// Drop the archive's objects before recreating them.
    #[arg(short = 'c', long = "clean")]
    pub clean: bool,
    /// With --clean: use DROP ... IF EXISTS.
    #[arg(long = "if-exists", requires = "clean")]
    pub if_exists: bool,
    /// Do not restore ownership: objects belong to the restoring user.
    #[arg(short = 'O', long = "no-owner")]
    pub no_owner: bool,
    /// Do not restore access privileges (GRANT/REVOKE).
    #[arg(short = 'x', long = "no-privileges", visible_alias = "no-acl")]
    pub no_privileges: bool,
    /// SET ROLE to this role before restoring.
    #[arg(long = "role", value_name = "ROLENAME")]
    pub role: Option<String>,
    /// Restore only this section: pre-data, data or post-data (repeatable).
    #[arg(long = "section", value_name = "SECTION", value_enum)]
    pub section: Vec<SectionArg>,
    /// Stop at the first error instead of carrying on.
    #[arg(short = 'e', long = "exit-on-error")]
    pub exit_on_error: bool,
    /// Print the archive's table of contents (as `pgarc list`, with these selection options
    /// applied) instead of restoring; no database is needed.
    #[arg(short = 'l', long = "list")]
    pub list: bool,
    /// Restore only the entries listed in FILE, in its order (a `-l` listing, edited; lines
    /// starting with `;` are comments).
    #[arg(short = 'L', long = "use-list", value_name = "FILE")]
    pub use_list: Option<PathBuf>,
    /// Restore only objects in this schema (repeatable; exact name).
    #[arg(
        short = 'n',
        long = "schema",
        value_name = "NAME",
        help_heading = "Selection"
    )]
    pub schema: Vec<String>,
    /// Do not restore objects in this schema (repeatable; exact name).
    #[arg(
        short = 'N',
        long = "exclude-schema",
        value_name = "NAME",
        help_heading = "Selection"
    )]
    pub exclude_schema: Vec<String>,
    /// Restore only this table, view, sequence or materialized view (repeatable; exact name).
    #[arg(
        short = 't',
        long = "table",
        value_name = "NAME",
        help_heading = "Selection"
    )]
    pub table: Vec<String>,
    /// Restore only this index (repeatable).
    #[arg(
        short = 'I',
        long = "index",
        value_name = "NAME",
        help_heading = "Selection"
    )]
    pub index: Vec<String>,
    /// Restore only this function, e.g. 'add(integer, integer)' (repeatable).
    #[arg(
        short = 'P',
        long = "function",
        value_name = "NAME(ARGS)",
        help_heading = "Selection"
    )]
    pub function: Vec<String>,
    /// Restore only this trigger (repeatable).
    #[arg(
        short = 'T',
        long = "trigger",
        value_name = "NAME",
        help_heading = "Selection"
    )]
    pub trigger: Vec<String>,
    /// Restore only the schema, no data.
    #[arg(
        short = 's',
        long = "schema-only",
        conflicts_with = "data_only",
        help_heading = "Selection"
    )]
    pub schema_only: bool,
    /// Restore only the data.
    #[arg(
        short = 'a',
        long = "data-only",
        conflicts_with = "clean",
        help_heading = "Selection"
    )]
    pub data_only: bool,
    /// Do not restore statistics (STATISTICS DATA entries, written by pg_dump 18 --statistics).
    #[arg(long = "no-statistics", help_heading = "Selection")]
    pub no_statistics: bool,
    /// Fail when a -n, -t, -I, -P or -T name matches nothing in the archive.
    #[arg(long = "strict-names", help_heading = "Selection")]
    pub strict_names: bool,
    /// With --data-only: disable triggers while loading each table (needs a superuser).
    #[arg(long = "disable-triggers")]
    pub disable_triggers: bool,
    /// Restore in one transaction: all or nothing (one session; not with -j > 1).
    #[arg(short = '1', long = "single-transaction")]
    pub single_transaction: bool,
    /// Continue an interrupted restore into the same database (-d), with the same archive
    /// and options: what its ledger (schema pgarc_restore, dropped when a restore completes)
    /// records as committed is kept, the rest is done, each table's rows exactly once.
    #[arg(long, conflicts_with_all = ["create", "clean", "single_transaction"])]
    pub resume: bool,
    /// ANALYZE each table as soon as its data and indexes are in, beside the rest of the
    /// restore, so the database has planner statistics when the restore ends (tables whose
    /// statistics the archive restores are left alone). What `vacuumdb --analyze-only` does
    /// after pg_restore, without the wait.
    #[arg(long = "analyze")]
    pub analyze: bool,
    /// Load tables created by this restore without COPY's FREEZE option. By default a table
    /// of more than 256 KiB of rows, created by this run and loaded whole, is loaded
    /// with COPY FREEZE after TRUNCATE in the same transaction: its rows are written frozen
    /// and its pages all-visible, so no later scan writes hint bits and no anti-wraparound
    /// vacuum rewrites it. As PostgreSQL documents for FREEZE, the rows are then visible to
    /// every other session's snapshot as soon as the load commits, even one taken before:
    /// use --no-freeze when other sessions read the target database during the restore.
    #[arg(long = "no-freeze")]
    pub no_freeze: bool,
    /// After the restore, prove the database holds what the archive holds: the check of
    /// `pgarc verify --against` on the restored database (every restored table's rows digest,
    /// sequences, large objects). Exit 1, naming each table that differs, when anything does.
    #[arg(long = "verify")]
    pub verify: bool,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Print help (-h is the host, as in pg_restore).
    #[arg(short = '?', long = "help", action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

/// Connection options with libpq's names and meanings.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionArgs {
    /// Database name, or a conninfo string (`host=... dbname=...`), or a `postgresql://` URI.
    #[arg(short = 'd', long = "dbname", value_name = "DBNAME")]
    pub dbname: Option<String>,
    /// Server host name, IP address, or unix-socket directory.
    #[arg(short = 'h', long = "host", value_name = "HOSTNAME")]
    pub host: Option<String>,
    /// Server port.
    #[arg(short = 'p', long = "port", value_name = "PORT")]
    pub port: Option<String>,
    /// Connect as this user.
    #[arg(short = 'U', long = "username", value_name = "NAME")]
    pub username: Option<String>,
    /// Never prompt for a password.
    #[arg(short = 'w', long = "no-password")]
    pub no_password: bool,
    /// Prompt for a password before connecting.
    #[arg(short = 'W', long = "password")]
    pub password: bool,
}

#[derive(Debug, clap::Args)]
pub struct DumpArgs {
    #[command(flatten)]
    pub conn: ConnectionArgs,
    /// The database to dump (same as -d).
    #[arg(value_name = "DBNAME", conflicts_with = "dbname")]
    pub dbname_arg: Option<String>,
    /// Output directory (it must not exist or be empty), or s3://BUCKET/PREFIX (it must
    /// hold no objects).
    #[arg(short = 'f', long = "file", value_name = "DIR", value_parser = parse_location)]
    pub file: Location,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Number of data workers (database sessions copying rows).
    #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub jobs: u16,
    /// Compression of data files: none, gzip[:1-9] or zstd[:1-22]. Without a level, gzip is
    /// level 6 and zstd level 3, as in pg_dump. Without -Z: zstd:1 when the schema's pg_dump
    /// is 16 or newer, else gzip:3, so that the pg_restore of the same release reads the
    /// archive (zstd needs pg_restore 16).
    #[arg(short = 'Z', long = "compress", value_name = "METHOD[:LEVEL]")]
    pub compress: Option<String>,
    /// Use this exported snapshot (from pg_export_snapshot() in a transaction that stays open).
    #[arg(long, value_name = "ID")]
    pub snapshot: Option<String>,
    /// Split tables larger than this into ctid ranges copied in parallel (e.g. 512MB, 1GB);
    /// a killed dump redoes at most one such chunk per worker on --resume. Default: 32MB into
    /// a directory, 128MB into s3:// (where each chunk's end uploads a partial part).
    #[arg(long, value_name = "SIZE")]
    pub split_size: Option<String>,
    /// Upper bound on the uncompressed bytes of one frame.
    #[arg(long, value_name = "SIZE", default_value = "4MB")]
    pub frame_size: String,
    /// Continue the unfinished dump in DIR (or s3://BUCKET/PREFIX) from its journal: under
    /// the same snapshot, with the options it was started with (so none of those may be
    /// given), keeping every chunk it finished and copying the rest. The snapshot must still
    /// be held (by `pgarc snapshot`, given to the first run with --snapshot); if it is gone,
    /// nothing is changed and the dump must start again.
    #[arg(long, conflicts_with_all = [
        "compress", "snapshot", "no_digest", "split_size", "frame_size", "schema",
        "exclude_schema", "table", "exclude_table", "exclude_table_data", "schema_only",
        "data_only", "section", "no_unlogged_table_data", "strict_names", "no_owner",
        "no_privileges", "no_comments", "large_objects", "no_large_objects",
        "serializable_deferrable",
    ])]
    pub resume: bool,
    /// Do not record the rows' content digests: slightly faster, but `pgarc verify
    /// --against` must then decompress the archive to know what to expect, and the archive is
    /// written in format 2 (readable by older pgarc).
    #[arg(long = "no-digest")]
    pub no_digest: bool,
    /// The pg_dump program to capture the schema with (default: PGARC_PG_DUMP, PATH,
    /// pg_config --bindir, /usr/lib/postgresql/N/bin; at least the server's major version).
    #[arg(long = "pg-dump", value_name = "PATH")]
    pub pg_dump: Option<PathBuf>,
    #[command(flatten)]
    pub select: DumpSelectArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Print help (-h is the host, as in pg_dump).
    #[arg(short = '?', long = "help", action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

/// pg_dump's options about what is dumped, with pg_dump's names and meanings. Patterns follow
/// psql's rules: `*` and `?` are wildcards, unquoted letters fold to lower case, double quotes
/// keep case and make every character literal, `schema.table` qualifies.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DumpSelectArgs {
    /// Dump only schemas matching PATTERN (repeatable).
    #[arg(
        short = 'n',
        long = "schema",
        value_name = "PATTERN",
        help_heading = "Selection"
    )]
    pub schema: Vec<String>,
    /// Do not dump schemas matching PATTERN (repeatable).
    #[arg(
        short = 'N',
        long = "exclude-schema",
        value_name = "PATTERN",
        help_heading = "Selection"
    )]
    pub exclude_schema: Vec<String>,
    /// Dump only tables (views, sequences, ...) matching PATTERN (repeatable); -n/-N then do
    /// not apply.
    #[arg(
        short = 't',
        long = "table",
        value_name = "PATTERN",
        help_heading = "Selection"
    )]
    pub table: Vec<String>,
    /// Do not dump tables matching PATTERN (repeatable).
    #[arg(
        short = 'T',
        long = "exclude-table",
        value_name = "PATTERN",
        help_heading = "Selection"
    )]
    pub exclude_table: Vec<String>,
    /// Dump the definition but not the rows of tables matching PATTERN (repeatable).
    #[arg(
        long = "exclude-table-data",
        value_name = "PATTERN",
        help_heading = "Selection"
    )]
    pub exclude_table_data: Vec<String>,
    /// Dump only the schema, no data.
    #[arg(
        short = 's',
        long = "schema-only",
        conflicts_with = "data_only",
        help_heading = "Selection"
    )]
    pub schema_only: bool,
    /// Dump only the data, not the schema.
    #[arg(short = 'a', long = "data-only", help_heading = "Selection")]
    pub data_only: bool,
    /// Dump only this section: pre-data, data or post-data (repeatable).
    #[arg(long = "section", value_name = "SECTION", value_parser = ["pre-data", "data", "post-data"],
          help_heading = "Selection")]
    pub section: Vec<String>,
    /// Do not dump the rows of unlogged tables.
    #[arg(long = "no-unlogged-table-data", help_heading = "Selection")]
    pub no_unlogged_table_data: bool,
    /// Fail when a -n or -t pattern matches nothing.
    #[arg(long = "strict-names", help_heading = "Selection")]
    pub strict_names: bool,
    /// Include large objects even with -n/-t.
    #[arg(
        short = 'b',
        long = "large-objects",
        visible_alias = "blobs",
        conflicts_with = "no_large_objects",
        help_heading = "Selection"
    )]
    pub large_objects: bool,
    /// Exclude large objects.
    #[arg(
        short = 'B',
        long = "no-large-objects",
        visible_alias = "no-blobs",
        help_heading = "Selection"
    )]
    pub no_large_objects: bool,
    /// Record no ownership (pg_dump's -O; for archives it changes nothing pg_restore reads,
    /// use restore -O).
    #[arg(short = 'O', long = "no-owner", help_heading = "Selection")]
    pub no_owner: bool,
    /// Do not dump privileges (GRANT/REVOKE).
    #[arg(
        short = 'x',
        long = "no-privileges",
        visible_alias = "no-acl",
        help_heading = "Selection"
    )]
    pub no_privileges: bool,
    /// Do not dump comments.
    #[arg(long = "no-comments", help_heading = "Selection")]
    pub no_comments: bool,
    /// Take the snapshot in a SERIALIZABLE, READ ONLY, DEFERRABLE transaction: wait until
    /// the dump cannot see a serialization anomaly.
    #[arg(
        long = "serializable-deferrable",
        conflicts_with = "snapshot",
        help_heading = "Selection"
    )]
    pub serializable_deferrable: bool,
}

/// How a dump or restore reports while and after it runs.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OutputArgs {
    /// Say more: each table as it is copied or loaded, and pg_dump's own messages.
    #[arg(
        short = 'v',
        long = "verbose",
        conflicts_with = "quiet",
        help_heading = "Output"
    )]
    pub verbose: bool,
    /// Print nothing but errors: no progress, no summary.
    #[arg(short = 'q', long = "quiet", help_heading = "Output")]
    pub quiet: bool,
    /// Write a JSON report of the run to FILE (schema: format-spec/report.schema.json).
    #[arg(long = "report", value_name = "FILE", help_heading = "Output")]
    pub report: Option<PathBuf>,
}

/// Parses a size such as `128MB`, `1GB`, `512kB` or `4096` (bytes). Units are powers of 1024,
/// as in PostgreSQL's settings.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("invalid size {s:?}: expected a number with an optional unit (kB, MB, GB, TB)")
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "invalid size {s:?}: unknown unit {unit:?} (use kB, MB, GB or TB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The archive (as written by `pgarc dump` or `pg_dump -Fd`): a directory or
    /// s3://BUCKET/PREFIX.
    #[arg(value_name = "ARCHIVE", value_parser = parse_location)]
    pub archive: Location,
    #[command(flatten)]
    pub storage: StorageArgs,
}

/// Where archives in object storage may be reached.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StorageArgs {
    /// Allow plain HTTP to an S3 endpoint that is not on loopback (credentials and data
    /// then cross the network unencrypted).
    #[arg(long = "s3-allow-http", help_heading = "Object storage")]
    pub s3_allow_http: bool,
}

/// An archive location: `s3://BUCKET/PREFIX`, or a local directory.
pub fn parse_location(s: &str) -> Result<Location, String> {
    if s.is_empty() {
        return Err("empty archive location".into());
    }
    Location::parse(s).map_err(|e| e.to_string())
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
        let Command::List(args) = cli.command else {
            panic!("not list")
        };
        assert_eq!(args.archive, Location::Local(PathBuf::from("/backups/db")));
        assert!(Cli::try_parse_from(["pgarc", "list"]).is_err());
    }

    #[test]
    fn dump_takes_pg_dump_options() {
        let cli = Cli::try_parse_from([
            "pgarc", "dump", "-h", "/tmp", "-p", "5433", "-U", "u", "-w", "-j", "4", "-Z",
            "gzip:6", "-f", "out", "db",
        ])
        .unwrap();
        let Command::Dump(args) = cli.command else {
            panic!("not dump")
        };
        assert_eq!(args.conn.host.as_deref(), Some("/tmp"));
        assert_eq!(args.dbname_arg.as_deref(), Some("db"));
        assert!(args.conn.no_password);
        assert_eq!((args.jobs, args.compress.as_deref()), (4, Some("gzip:6")));
        assert!(Cli::try_parse_from(["pgarc", "dump", "-f", "o", "-j", "0"]).is_err());
        assert!(Cli::try_parse_from(["pgarc", "dump", "-d", "a", "b", "-f", "o"]).is_err());
    }

    #[test]
    fn restore_takes_pg_restore_options() {
        let cli = Cli::try_parse_from([
            "pgarc",
            "restore",
            "-d",
            "db",
            "-j",
            "4",
            "-C",
            "-c",
            "--if-exists",
            "-O",
            "-x",
            "--role",
            "r",
            "--section",
            "pre-data",
            "--section",
            "data",
            "-e",
            "/a",
        ])
        .unwrap();
        let Command::Restore(args) = cli.command else {
            panic!("not restore")
        };
        assert!(args.create && args.clean && args.if_exists && args.no_owner);
        assert!(args.no_privileges && args.exit_on_error);
        assert_eq!(args.section, [SectionArg::PreData, SectionArg::Data]);
        assert_eq!(args.role.as_deref(), Some("r"));
        assert!(Cli::try_parse_from(["pgarc", "restore", "-d", "x", "--if-exists", "/a"]).is_err());
        assert!(
            Cli::try_parse_from(["pgarc", "restore", "-d", "x", "--section", "all", "/a"]).is_err()
        );
    }

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(parse_size("128MB"), Ok(128 << 20));
        assert_eq!(parse_size("1 GB"), Ok(1 << 30));
        assert_eq!(parse_size("512kB"), Ok(512 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("MB").is_err());
        assert!(parse_size("99999999999TB").is_err());
    }
}
