//! The pgarc binary: parses arguments, runs the command, and turns the outcome into one line
//! on stderr and an exit code. Exit codes: 0 success, 1 failure (for `list`: the archive could
//! not be read; for `verify`: the archive is damaged), 2 usage error (clap's own) and, for
//! `verify`, a check that could not run.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use pgarc::archive::frame::Codec;
use pgarc::archive::list::{write_listing, write_selected};
use pgarc::archive::select::NameFilters;
use pgarc::cli::{parse_size, Cli, Command, ConnectionArgs, DumpArgs, OutputArgs, RestoreArgs};
use pgarc::dump::scope::DumpSelection;
use pgarc::dump::DumpOptions;
use pgarc::pg::conn::{ConnArgs, ConnParams};
use pgarc::progress;
use pgarc::restore::RestoreOptions;
use pgarc::verify::VerifyOptions;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) if err.downcast_ref::<pgarc::run::Interrupted>().is_some() => {
            eprintln!("pgarc: {err:#}");
            let code = err
                .downcast_ref::<pgarc::run::Interrupted>()
                .map_or(1, |i| i.exit_code());
            ExitCode::from(code)
        }
        Err(err) => {
            eprintln!("pgarc: {err:#}");
            ExitCode::from(1)
        }
    }
}

/// Progress bars on a terminal, plain lines otherwise, nothing with --quiet.
fn set_output(output: &OutputArgs) {
    use std::io::IsTerminal;
    progress::set_mode(if output.quiet {
        progress::Mode::Quiet
    } else if std::io::stderr().is_terminal() {
        progress::Mode::Bars
    } else {
        progress::Mode::Lines
    });
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Dump(args) => {
            set_output(&args.output);
            let quiet = args.output.quiet;
            let summary = block_on(pgarc::dump::run(dump_options(*args)?))?;
            if !quiet {
                eprint!("{summary}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore(args) if args.list => {
            set_output(&args.output);
            let opts = restore_options(*args, false)?;
            let dir = pgarc::s3::open_archive(&opts.archive, opts.allow_http)?;
            let mut toc = dir.read_toc()?;
            let sel = pgarc::restore::selection(&opts, &mut toc)?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            write_selected(&toc, &sel, &mut out)?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore(args) => {
            set_output(&args.output);
            let quiet = args.output.quiet;
            let verify = args.verify;
            let mut opts = restore_options(*args, true)?;
            opts.defer_report = verify;
            let (jobs, archive, report_path) = (
                opts.jobs,
                (opts.archive.clone(), opts.allow_http),
                opts.report.clone(),
            );
            let summary = block_on(pgarc::restore::run(opts))?;
            if !quiet {
                eprint!("{summary}");
            }
            if !verify {
                return Ok(ExitCode::SUCCESS);
            }
            restore_verify(summary, jobs, archive, report_path, quiet)
        }
        Command::Verify(args) => verify(args),
        Command::Snapshot(args) => {
            let conn = ConnParams::resolve(&conn_args(&args.conn), &|k| std::env::var(k).ok())?;
            let opts = pgarc::snapshot::SnapshotOptions {
                conn,
                id_file: args.id_file,
                until_eof: args.until_eof,
                serializable: args.serializable_deferrable,
                quiet: args.quiet,
            };
            block_on(pgarc::snapshot::run(opts))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions(args) => {
            use clap::CommandFactory;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            clap_complete::generate(args.shell, &mut Cli::command(), "pgarc", &mut out);
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Manpages(args) => {
            use anyhow::Context;
            use clap::CommandFactory;
            std::fs::create_dir_all(&args.dir)
                .with_context(|| format!("could not create {}", args.dir.display()))?;
            clap_mangen::generate_to(pgarc::cli::for_man_pages(Cli::command()), &args.dir)
                .with_context(|| {
                    format!("could not write the man pages into {}", args.dir.display())
                })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::List(args) => {
            let toc =
                pgarc::s3::open_archive(&args.archive, args.storage.s3_allow_http)?.read_toc()?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            write_listing(&toc, &mut out)?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `pgarc verify`: offline, or `--against` a database. Exit 0 intact or equal, 1 damaged or
/// different, 2 could not run.
fn verify(args: pgarc::cli::VerifyArgs) -> anyhow::Result<ExitCode> {
    if !args.against {
        return verify_offline(args);
    }
    set_output(&args.output);
    let opts = against_options(&args)?;
    let comparison = match block_on(pgarc::verify::against::run(opts)) {
        Ok(c) => c,
        Err(err) => {
            eprintln!("pgarc: {err:#}");
            return Ok(ExitCode::from(2));
        }
    };
    let mut out = std::io::stdout().lock();
    write!(out, "{comparison}")?;
    out.flush()?;
    if let Some(path) = &args.output.report {
        let mut report = pgarc::report::Report::new(
            "verify",
            std::time::SystemTime::now() - comparison.elapsed,
            &args.archive.shown(),
            &comparison.database,
            args.jobs.map_or(1, |j| j as usize),
        );
        report.verify = Some(comparison.report());
        report.write(path)?;
    }
    Ok(ExitCode::from(if comparison.equal() { 0 } else { 1 }))
}

/// `pgarc verify` without a database.
fn verify_offline(args: pgarc::cli::VerifyArgs) -> anyhow::Result<ExitCode> {
    let c = &args.conn;
    if c.dbname.is_some() || c.host.is_some() || c.port.is_some() || c.username.is_some() {
        eprintln!(
            "pgarc: connection options given without --against: pgarc verify checks an \
             archive offline; add --against to compare a database with it"
        );
        return Ok(ExitCode::from(2));
    }
    let jobs = args.jobs.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |j| j as usize,
    );
    let opts = VerifyOptions {
        archive: args.archive,
        allow_http: args.storage.s3_allow_http,
        jobs,
        quick: args.quick,
    };
    // Could not run at all: exit 2 (1 means "damaged").
    let report = match pgarc::verify::run(&opts) {
        Ok(r) => r,
        Err(err) => {
            eprintln!("pgarc: {err:#}");
            return Ok(ExitCode::from(2));
        }
    };
    let mut out = std::io::stdout().lock();
    write!(out, "{report}")?;
    out.flush()?;
    Ok(ExitCode::from(if report.intact() { 0 } else { 1 }))
}

/// `restore --verify`: the restored database checked against the archive; the report (if
/// asked) written with the check in it. Exit 1 when anything differs.
fn restore_verify(
    summary: pgarc::restore::RestoreSummary,
    jobs: usize,
    (archive, allow_http): (pgarc::archive::store::Location, bool),
    report_path: Option<std::path::PathBuf>,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    let conn = summary.conn.clone().ok_or_else(|| {
        anyhow::anyhow!("internal error: the restore did not say where it restored")
    })?;
    let opts = pgarc::verify::against::AgainstOptions {
        archive,
        allow_http,
        conn,
        jobs,
        split_size: 128 << 20,
        only: Some(summary.restored_data.clone()),
    };
    let comparison = block_on(pgarc::verify::against::run(opts)).map_err(|e| {
        e.context("the restore finished, but the check of the restored database could not run")
    })?;
    if !quiet || !comparison.equal() {
        eprint!("{comparison}");
    }
    if let (Some(path), Some(mut report)) = (report_path, summary.report) {
        report.verify = Some(comparison.report());
        report.write(&path)?;
    }
    if comparison.equal() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "pgarc: the restored database differs from the archive (listed above): do not use \
             it as a copy of the archive; restore again into a new database and run pgarc verify \
             on the archive"
        );
        Ok(ExitCode::from(1))
    }
}

/// `verify --against`: the connection (libpq's rules) and sizes.
fn against_options(
    args: &pgarc::cli::VerifyArgs,
) -> anyhow::Result<pgarc::verify::against::AgainstOptions> {
    let conn = ConnParams::resolve(&conn_args(&args.conn), &|k| std::env::var(k).ok())?;
    Ok(pgarc::verify::against::AgainstOptions {
        archive: args.archive.clone(),
        allow_http: args.storage.s3_allow_http,
        conn,
        jobs: args.jobs.map_or(1, |j| j as usize),
        split_size: parse_size(&args.split_size).map_err(anyhow::Error::msg)?,
        only: None,
    })
}

/// Runs a pipeline on a multi-threaded runtime.
fn block_on<T>(fut: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(fut)
}

/// Turns the dump command line into options: connection resolution (libpq's rules), sizes,
/// compression.
fn dump_options(args: DumpArgs) -> anyhow::Result<DumpOptions> {
    let mut conn_args = conn_args(&args.conn);
    if args.dbname_arg.is_some() {
        conn_args.dbname = args.dbname_arg.clone();
    }
    let conn = ConnParams::resolve(&conn_args, &|k| std::env::var(k).ok())?;
    let codec = match &args.compress {
        Some(spec) => Some(Codec::parse(spec)?),
        None => None,
    };
    let split_size = match &args.split_size {
        Some(size) => parse_size(size).map_err(anyhow::Error::msg)?,
        None if matches!(args.file, pgarc::archive::store::Location::S3(_)) => {
            pgarc::dump::DEFAULT_SPLIT_SIZE_S3
        }
        None => pgarc::dump::DEFAULT_SPLIT_SIZE,
    };
    let frame_size = parse_size(&args.frame_size).map_err(anyhow::Error::msg)?;
    if !(4096..=pgarc::archive::reader::MAX_MULTI_ROW_FRAME_BYTES).contains(&frame_size) {
        anyhow::bail!("--frame-size must be between 4kB and 64MB");
    }
    let pg_dump = match (args.pg_dump, std::env::var_os("PGARC_PG_DUMP")) {
        (Some(p), _) => Some((p, "--pg-dump")),
        (None, Some(p)) if !p.is_empty() => Some((p.into(), "PGARC_PG_DUMP")),
        _ => None,
    };
    Ok(DumpOptions {
        conn,
        out: args.file,
        allow_http: args.storage.s3_allow_http,
        jobs: args.jobs.into(),
        codec,
        snapshot: args.snapshot,
        split_size,
        frame_size: frame_size as usize,
        digests: !args.no_digest,
        resume: args.resume,
        pg_dump,
        selection: DumpSelection {
            schemas: args.select.schema,
            exclude_schemas: args.select.exclude_schema,
            tables: args.select.table,
            exclude_tables: args.select.exclude_table,
            exclude_table_data: args.select.exclude_table_data,
            schema_only: args.select.schema_only,
            data_only: args.select.data_only,
            sections: args.select.section,
            no_unlogged_table_data: args.select.no_unlogged_table_data,
            strict_names: args.select.strict_names,
            no_owner: args.select.no_owner,
            no_privileges: args.select.no_privileges,
            no_comments: args.select.no_comments,
            large_objects: args.select.large_objects,
            no_large_objects: args.select.no_large_objects,
            serializable_deferrable: args.select.serializable_deferrable,
            verbose: args.output.verbose,
        },
        report: args.output.report,
    })
}

/// Turns the restore command line into options. Like pg_restore, pgarc restores only into a
/// database named with -d (it writes no scripts); `connect` is false for `-l`.
fn restore_options(args: RestoreArgs, connect: bool) -> anyhow::Result<RestoreOptions> {
    let conn = if !connect {
        dummy_conn()
    } else if args.conn.dbname.is_none() {
        anyhow::bail!(
            "no target database: pass -d DBNAME (with --create, the database to connect to \
             first, e.g. -d postgres); pgarc restore writes into a database, not a script"
        );
    } else {
        ConnParams::resolve(&conn_args(&args.conn), &|k| std::env::var(k).ok())?
    };
    let mut opts = RestoreOptions::new(conn, args.archive);
    opts.allow_http = args.storage.s3_allow_http;
    opts.jobs = args.jobs.into();
    opts.create = args.create;
    opts.clean = args.clean;
    opts.if_exists = args.if_exists;
    opts.no_owner = args.no_owner;
    opts.no_privileges = args.no_privileges;
    opts.role = args.role;
    opts.sections = args.section.into_iter().map(Into::into).collect();
    // As pg_restore: -1 stops at the first error (the transaction is lost anyway).
    opts.exit_on_error = args.exit_on_error || args.single_transaction;
    opts.schema_only = args.schema_only;
    opts.data_only = args.data_only;
    opts.no_statistics = args.no_statistics;
    opts.names = NameFilters {
        schemas: args.schema,
        exclude_schemas: args.exclude_schema,
        tables: args.table,
        indexes: args.index,
        functions: args.function,
        triggers: args.trigger,
    };
    opts.strict_names = args.strict_names;
    opts.use_list = args.use_list;
    opts.disable_triggers = args.disable_triggers;
    opts.single_transaction = args.single_transaction;
    opts.resume = args.resume;
    opts.analyze = args.analyze;
    opts.freeze = !args.no_freeze;
    opts.verbose = args.output.verbose;
    opts.report = args.output.report;
    opts.validate()?;
    Ok(opts)
}

/// `-l` reads no connection options: placeholders that are never used to connect.
fn dummy_conn() -> ConnParams {
    ConnParams::resolve(
        &ConnArgs {
            dbname: Some("unused".into()),
            host: Some("/nonexistent".into()),
            port: Some("5432".into()),
            user: Some("unused".into()),
            no_password: true,
            password_prompt: false,
        },
        &|_| None,
    )
    .expect("fixed placeholder parameters")
}

fn conn_args(c: &ConnectionArgs) -> ConnArgs {
    ConnArgs {
        dbname: c.dbname.clone(),
        host: c.host.clone(),
        port: c.port.clone(),
        user: c.username.clone(),
        no_password: c.no_password,
        password_prompt: c.password,
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
