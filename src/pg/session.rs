//! Sessions: connecting with helpful one-line errors, the snapshot holder, the data workers'
//! session state (pg_dump's `setup_connection`), and the catalog query that plans a dump.

use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use tokio::sync::watch;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use super::conn::{ConnParams, PasswordSource, SslMode};
use super::wire::{Raw, Wire};

/// A connected session. `closed` turns to `Some(reason)` when the connection ends.
pub struct Session {
    pub client: Client,
    pub closed: watch::Receiver<Option<String>>,
    raw: Arc<Raw>,
}

impl Session {
    /// Runs statements given as bytes, exactly as they are (see [`super::wire`]).
    pub async fn execute_bytes(&self, sql: &[u8]) -> Result<(), tokio_postgres::Error> {
        match std::str::from_utf8(sql) {
            Ok(text) => self.client.batch_execute(text).await,
            Err(_) => {
                let placeholder = self.raw.register(sql, false);
                self.client.batch_execute(placeholder.text()).await
            }
        }
    }

    /// Prepares a statement given as bytes; `copy_in` for `COPY ... FROM STDIN`, which the
    /// wire then sends so that a refusal leaves the session usable.
    pub async fn prepare_bytes(
        &self,
        sql: &[u8],
        copy_in: bool,
    ) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
        match std::str::from_utf8(sql) {
            Ok(text) if !copy_in => self.client.prepare(text).await,
            _ => {
                let placeholder = self.raw.register(sql, copy_in);
                self.client.prepare(placeholder.text()).await
            }
        }
    }

    /// Like [`describe`], but for an error that closed the connection also says why the
    /// connection ended (the server's FATAL message, e.g. `pg_terminate_backend` or a
    /// shutdown), as the connection task saw it.
    pub async fn explain(&self, err: &tokio_postgres::Error) -> String {
        if !err.is_closed() && err.as_db_error().is_none_or(|db| db.severity() != "FATAL") {
            return describe(err);
        }
        let mut closed = self.closed.clone();
        let reason = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            closed.wait_for(|c| c.is_some()),
        )
        .await
        .ok()
        .and_then(|r| r.ok().and_then(|c| c.clone()));
        match reason {
            Some(reason) if reason.contains("FATAL") => {
                format!("lost its connection to the server: {reason}")
            }
            reason => format!(
                "lost its connection to the server ({}): the session was terminated \
                 (pg_terminate_backend), or the server stopped or crashed",
                reason.unwrap_or_else(|| describe(err))
            ),
        }
    }
}

/// Describes a tokio-postgres error in one line: the server's message (with its hint) or the
/// client-side cause chain.
pub fn describe(err: &tokio_postgres::Error) -> String {
    if let Some(db) = err.as_db_error() {
        let mut s = format!("{}: {}", db.severity(), db.message());
        if let Some(d) = db.detail() {
            s.push_str(&format!(" ({d})"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!("; hint: {h}"));
        }
        return s.replace('\n', " ");
    }
    cause_chain(err).replace('\n', " ")
}

/// An error and its sources, each once, joined by `: `.
fn cause_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = e.source();
    }
    s
}

/// Opens one session. Errors name the server and say what to do.
///
/// pgarc opens the socket and negotiates TLS itself, as libpq does for each `sslmode`, and
/// hands tokio-postgres a [`Wire`] over the (possibly encrypted) stream, so that every
/// session can send statements as bytes (see [`super::wire`]).
pub async fn connect(params: &ConnParams, application_name: &str) -> Result<Session> {
    let config = params.config(application_name);
    let failed = |err: ConnectError| {
        anyhow::Error::new(ConnectFailed {
            needs_password: params.password.is_none() && err.password_missing(),
            message: connect_error(params, &err),
        })
    };
    let plain_first = params.sslmode == SslMode::Allow;
    let first = if params.sslmode == SslMode::Disable || params.is_unix_socket() || plain_first {
        Tls::Never
    } else if params.sslmode == SslMode::Prefer {
        Tls::IfOffered
    } else {
        Tls::Required
    };
    match open(params, &config, first).await {
        Ok(s) => Ok(s),
        // prefer: as libpq, a failed TLS handshake (a certificate that does not verify
        // against an existing root.crt, say) is retried without TLS.
        Err(ConnectError::Handshake(_)) if first == Tls::IfOffered => {
            open(params, &config, Tls::Never).await.map_err(failed)
        }
        // allow: without TLS first, with TLS only if the server refuses that.
        Err(ConnectError::Postgres(err)) if plain_first && err.as_db_error().is_some() => {
            open(params, &config, Tls::Required).await.map_err(failed)
        }
        Err(err) => Err(failed(err)),
    }
}

/// A session could not be opened: the one-line message, and whether the server asked for a
/// password that was not given (the caller may prompt for one, as libpq programs do).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConnectFailed {
    pub message: String,
    pub needs_password: bool,
}

/// A snapshot to import that the server no longer has (its exporting transaction ended).
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot import snapshot {id:?} ({detail}); the exporting transaction must still be open, \
     in the same database"
)]
pub struct SnapshotGone {
    pub id: String,
    pub detail: String,
}

impl ConnectFailed {
    /// Whether `err` (anywhere in its chain) is a connection refused for want of a password.
    pub fn needs_password(err: &anyhow::Error) -> bool {
        err.chain().any(|e| {
            e.downcast_ref::<ConnectFailed>()
                .is_some_and(|c| c.needs_password)
        })
    }
}

/// Whether a connection attempt uses TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tls {
    Never,
    /// When the server offers it (`prefer`).
    IfOffered,
    Required,
}

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("{text}")]
    Socket {
        text: String,
        kind: std::io::ErrorKind,
    },
    /// The TLS set-up itself (certificate files) could not be made.
    #[error("{0}")]
    TlsSetup(#[from] super::conn::ConnParamError),
    #[error("the server does not support TLS")]
    NoTls,
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    #[error("{}", describe(.0))]
    Postgres(tokio_postgres::Error),
}

impl ConnectError {
    /// The server asked for a password and none was configured. tokio-postgres reports this
    /// as a configuration error whose kind is not public, so its text is read here, once, at
    /// the boundary; pgarc's code matches on [`ConnectFailed::needs_password`].
    fn password_missing(&self) -> bool {
        matches!(self, ConnectError::Postgres(e)
            if e.as_db_error().is_none() && describe(e).contains("password missing"))
    }
}

/// A byte stream to the server: a socket, or TLS over one.
trait ServerStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> ServerStream for T {}

/// A connected socket.
enum Socket {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// The TCP or unix socket, with libpq's keepalive settings on TCP.
async fn socket(params: &ConnParams) -> std::result::Result<Socket, ConnectError> {
    let attempt = async {
        if params.is_unix_socket() {
            let path = format!("{}/.s.PGSQL.{}", params.host, params.port);
            let s = tokio::net::UnixStream::connect(&path).await?;
            return Ok::<Socket, std::io::Error>(Socket::Unix(s));
        }
        let addrs: Vec<std::net::SocketAddr> = match params.hostaddr {
            Some(a) => vec![(a, params.port).into()],
            None => tokio::net::lookup_host((params.host.as_str(), params.port))
                .await?
                .collect(),
        };
        let mut last = std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("host name {:?} has no address", params.host),
        );
        for addr in addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => {
                    s.set_nodelay(true)?;
                    let keepalive = socket2::TcpKeepalive::new()
                        .with_time(std::time::Duration::from_secs(60))
                        .with_interval(std::time::Duration::from_secs(10))
                        .with_retries(6);
                    socket2::SockRef::from(&s).set_tcp_keepalive(&keepalive)?;
                    return Ok(Socket::Tcp(s));
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    };
    let result = match params.connect_timeout {
        Some(t) => tokio::time::timeout(t, attempt)
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())),
        None => attempt.await,
    };
    result.map_err(|e| {
        if e.kind() == std::io::ErrorKind::TimedOut {
            ConnectError::Socket {
                text: "connection timed out".into(),
                kind: e.kind(),
            }
        } else {
            ConnectError::Socket {
                text: format!("error connecting to server: {e}"),
                kind: e.kind(),
            }
        }
    })
}

/// Asks the server for TLS (SSLRequest) and, if it agrees, does the handshake.
async fn negotiate_tls(
    params: &ConnParams,
    socket: Socket,
    tls: Tls,
) -> std::result::Result<Box<dyn ServerStream>, ConnectError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
    let mut stream = match socket {
        Socket::Unix(s) => return Ok(Box::new(s)),
        Socket::Tcp(s) if tls == Tls::Never => return Ok(Box::new(s)),
        Socket::Tcp(s) => s,
    };
    let io = |e: std::io::Error| ConnectError::Socket {
        text: format!("error talking to server: {e}"),
        kind: e.kind(),
    };
    // SSLRequest: length 8, code 1234 5679.
    stream
        .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .map_err(io)?;
    stream.flush().await.map_err(io)?;
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).await.map_err(io)?;
    if answer[0] != b'S' {
        return match tls {
            Tls::Required => Err(ConnectError::NoTls),
            _ => Ok(Box::new(stream)),
        };
    }
    let mut make = params.tls()?;
    let host = params.host.clone();
    let connector = MakeTlsConnect::<tokio::net::TcpStream>::make_tls_connect(&mut make, &host)
        .map_err(|e| ConnectError::Handshake(e.to_string()))?;
    let tls_stream = connector
        .connect(stream)
        .await
        .map_err(|e| ConnectError::Handshake(cause_chain(e.as_ref())))?;
    Ok(Box::new(tls_stream))
}

/// One connection attempt; the connection is driven on its own task, and `closed` says why
/// it ended.
async fn open(
    params: &ConnParams,
    config: &tokio_postgres::Config,
    tls: Tls,
) -> std::result::Result<Session, ConnectError> {
    let stream = socket(params).await?;
    let stream = negotiate_tls(params, stream, tls).await?;
    let raw = Arc::new(Raw::default());
    let mut config = config.clone();
    config.ssl_mode(tokio_postgres::config::SslMode::Disable);
    let (client, connection) = config
        .connect_raw(Wire::new(stream, raw.clone()), NoTls)
        .await
        .map_err(ConnectError::Postgres)?;
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let reason = match connection.await {
            Ok(()) => "the connection was closed".to_string(),
            Err(e) => describe(&e),
        };
        let _ = tx.send(Some(reason));
    });
    Ok(Session {
        client,
        closed: rx,
        raw,
    })
}

/// The one-line message for a failed connection: what failed, and what to do about it,
/// chosen by the error's kind (the io error kind, the server's SQLSTATE, pgarc's own TLS
/// steps). Only OpenSSL's certificate verdicts and pg_hba.conf's "no encryption" are told
/// apart by their text: neither library gives them a kind.
fn connect_error(params: &ConnParams, err: &ConnectError) -> String {
    use std::io::ErrorKind;
    use tokio_postgres::error::SqlState;
    let what = err.to_string();
    let place = format!(
        "database {:?} as user {:?} at {}",
        params.dbname,
        params.user,
        params.location()
    );
    let state = match err {
        ConnectError::Postgres(e) => e.code().cloned(),
        _ => None,
    };
    let hint = match err {
        _ if err.password_missing() => if params.no_password {
            "the server asks for a password and -w forbids prompting: set PGPASSWORD or add it \
             to ~/.pgpass"
        } else {
            "the server asks for a password: set PGPASSWORD, add it to ~/.pgpass, or pass -W"
        }
        .to_string(),
        _ if state == Some(SqlState::INVALID_PASSWORD) => match params.password_source {
            PasswordSource::PassFile => "check the password in the password file".to_string(),
            PasswordSource::Env => "check PGPASSWORD".to_string(),
            _ => "check the password".to_string(),
        },
        _ if state == Some(SqlState::INVALID_CATALOG_NAME)
            || (state == Some(SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
                && what.contains("does not exist")) =>
        {
            "check the database and user names (-d, -U)".to_string()
        }
        ConnectError::Socket {
            kind: ErrorKind::TimedOut,
            ..
        } => "the server did not answer in time; check the host and PGCONNECT_TIMEOUT".to_string(),
        ConnectError::Socket { .. } => format!(
            "is the server running and accepting connections at {}? (-h, -p)",
            params.location()
        ),
        ConnectError::Handshake(text) if text.contains("certificate verify failed") => {
            if text.contains("hostname mismatch") || text.contains("IP address mismatch") {
                format!(
                    "the server's certificate does not name host {:?} (sslmode=verify-full): \
                     connect with a host name the certificate holds, or use sslmode=verify-ca",
                    params.host
                )
            } else {
                "the server's certificate is not signed by the root certificate (sslrootcert): \
                 check that sslrootcert names the CA that issued the server's certificate"
                    .to_string()
            }
        }
        _ if state == Some(SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
            && what.contains("no encryption") =>
        {
            "the server accepts this connection only over TLS (hostssl in pg_hba.conf): use \
             sslmode=require or stronger"
                .to_string()
        }
        ConnectError::NoTls => "the server does not offer TLS: use sslmode=prefer or disable, \
             or enable ssl on the server"
            .to_string(),
        ConnectError::TlsSetup(_) => {
            "check the TLS files (sslrootcert, sslcert, sslkey)".to_string()
        }
        _ => "check the connection options".to_string(),
    };
    if let ConnectError::TlsSetup(text) = err {
        // The set-up's own message already says which file and what to do.
        return format!("could not connect to {place}: {text}");
    }
    format!("could not connect to {place}: {what}; {hint}")
}

/// Runs a statement and returns every row's columns as text (NULL as None).
pub async fn query_text(client: &Client, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
    let msgs = client
        .simple_query(sql)
        .await
        .map_err(|e| anyhow!("{}", describe(&e)))?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| match m {
            // Text that is not UTF-8 (a session whose client_encoding is not UTF8) is shown
            // with \xNN escapes; queries that need exact bytes ask the server for hex.
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| match r.try_get(i) {
                        Ok(v) => v.map(str::to_string),
                        Err(_) => Some("(text that is not valid UTF-8)".to_string()),
                    })
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

pub async fn execute(client: &Client, sql: &str) -> Result<()> {
    client
        .batch_execute(sql)
        .await
        .map_err(|e| anyhow!("{}", describe(&e)))
}

/// Quotes a string literal for SQL (standard_conforming_strings on, the default since 9.1).
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Facts about the server and database, read once by the snapshot holder.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// `server_version`, e.g. "18.1" or "15.18 (Debian 15.18-0+deb12u1)".
    pub version: String,
    pub version_num: i32,
    pub database: String,
    pub encoding: String,
    pub in_recovery: bool,
    /// `block_size`: the page size ctid ranges are counted in.
    pub block_size: u64,
}

impl ServerInfo {
    pub fn major(&self) -> i32 {
        self.version_num / 10000
    }
}

/// The session settings of pg_dump's `setup_connection` that shape COPY text, plus the
/// timeouts that must never end a long dump.
pub fn session_settings(info: &ServerInfo) -> String {
    let mut s = String::from(
        "SELECT pg_catalog.set_config('search_path', '', false);
         SET DateStyle = ISO; SET IntervalStyle = postgres; SET extra_float_digits TO 3;
         SET synchronize_seqscans TO off; SET statement_timeout = 0; SET lock_timeout = 0;
         SET idle_in_transaction_session_timeout = 0; SET row_security = off;",
    );
    if info.version_num >= 170000 {
        s.push_str(" SET transaction_timeout = 0;");
    }
    s.push_str(&format!(
        " SET client_encoding = {};",
        literal(&info.encoding)
    ));
    s
}

/// The settings that shape COPY text (format-spec archive.md §5.3), in the manifest's order:
/// a dump records them, a check sets them to copy the same text again.
pub const COPY_SETTINGS: [&str; 7] = [
    "client_encoding",
    "DateStyle",
    "IntervalStyle",
    "extra_float_digits",
    "TimeZone",
    "bytea_output",
    "lc_monetary",
];

/// The session's values of [`COPY_SETTINGS`], in that order.
pub async fn copy_settings(client: &Client) -> Result<Vec<String>> {
    let sql = format!(
        "SELECT {}",
        COPY_SETTINGS
            .iter()
            .map(|n| format!("pg_catalog.current_setting({})", literal(n)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let rows = query_text(client, &sql)
        .await
        .context("cannot read the session's settings")?;
    let row = rows
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("the server returned no settings"))?;
    Ok(row.into_iter().map(Option::unwrap_or_default).collect())
}

/// The transaction that holds the snapshot and the locks for the whole dump.
pub struct SnapshotHolder {
    pub session: Session,
    pub info: ServerInfo,
    /// The id workers and pg_dump import.
    pub snapshot_id: String,
    /// `pg_current_snapshot()` (`txid_current_snapshot()` before 13) inside the transaction.
    pub current_snapshot: String,
    /// Whether the caller supplied the snapshot (`--snapshot`).
    pub imported: bool,
}

/// Checks the form of a snapshot id (hex groups separated by `-`) before it goes into SQL.
pub fn valid_snapshot_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

impl SnapshotHolder {
    /// Opens the holder: REPEATABLE READ, READ ONLY; exports a snapshot or imports `import`.
    /// With `serializable` (`--serializable-deferrable`), an exported snapshot is taken in a
    /// SERIALIZABLE, READ ONLY, DEFERRABLE transaction, which waits for a safe snapshot; the
    /// sessions importing it stay REPEATABLE READ, as pg_dump's parallel workers do.
    pub async fn open(
        params: &ConnParams,
        import: Option<&str>,
        serializable: bool,
    ) -> Result<SnapshotHolder> {
        let session = connect(params, "pgarc snapshot holder").await?;
        let c = &session.client;
        let row = query_text(
            c,
            "SELECT current_setting('server_version'), current_setting('server_version_num'),
                    pg_catalog.encode(pg_catalog.convert_to(current_database()::text, pg_catalog.getdatabaseencoding()), 'hex'),
                    pg_encoding_to_char(d.encoding), pg_is_in_recovery()::text,
                    current_setting('block_size')
             FROM pg_database d WHERE d.datname = current_database()",
        )
        .await?
        .pop()
        .context("cannot read the database's properties")?;
        let col = |i: usize| row[i].clone().unwrap_or_default();
        let info = ServerInfo {
            version: col(0),
            version_num: col(1).parse().unwrap_or(0),
            database: super::carrier::display(&carrier_from_hex(&col(2))?),
            encoding: col(3),
            in_recovery: col(4) == "true",
            block_size: col(5)
                .parse()
                .context("cannot read the server's block_size")?,
        };
        if info.version_num < 120000 {
            bail!(
                "server version {} is not supported: pgarc dumps PostgreSQL 12 and newer; use pg_dump",
                info.version
            );
        }
        // Names, patterns and DDL in the database's encoding, as pg_dump's sessions.
        let mut setup = format!(
            "SET statement_timeout = 0; SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0; SET client_encoding = {};",
            literal(&info.encoding)
        );
        if info.version_num >= 170000 {
            setup.push_str(" SET transaction_timeout = 0;");
        }
        execute(c, &setup).await?;
        let begin = if serializable && import.is_none() {
            "BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE"
        } else {
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
        };
        execute(c, begin).await?;
        let snapshot_id = match import {
            Some(id) => {
                if !valid_snapshot_id(id) {
                    bail!("invalid snapshot id {id:?}: expected the value of pg_export_snapshot(), e.g. 00000003-00000D02-1");
                }
                if let Err(e) = c
                    .batch_execute(&format!("SET TRANSACTION SNAPSHOT {}", literal(id)))
                    .await
                {
                    // 42704: "snapshot ... does not exist" (its exporter ended); 22023: not
                    // a snapshot's identifier.
                    use tokio_postgres::error::SqlState;
                    let gone = [
                        SqlState::UNDEFINED_OBJECT,
                        SqlState::INVALID_PARAMETER_VALUE,
                    ];
                    if e.code().is_some_and(|c| gone.contains(c)) {
                        return Err(SnapshotGone {
                            id: id.to_string(),
                            detail: describe(&e),
                        }
                        .into());
                    }
                    bail!("cannot import snapshot {id:?}: {}", describe(&e));
                }
                id.to_string()
            }
            None => query_text(c, "SELECT pg_catalog.pg_export_snapshot()")
                .await
                .context("cannot export a snapshot")?
                .pop()
                .and_then(|r| r.into_iter().next().flatten())
                .context("pg_export_snapshot() returned nothing")?,
        };
        let func = if info.version_num >= 130000 {
            "pg_current_snapshot()"
        } else {
            "txid_current_snapshot()"
        };
        let current_snapshot = query_text(c, &format!("SELECT {func}::text"))
            .await?
            .pop()
            .and_then(|r| r.into_iter().next().flatten())
            .unwrap_or_default();
        Ok(SnapshotHolder {
            session,
            info,
            snapshot_id,
            current_snapshot,
            imported: import.is_some(),
        })
    }

    /// Why the holder's connection ended, if it did.
    pub fn lost(&self) -> Option<String> {
        self.session.closed.borrow().clone()
    }

    /// Takes ACCESS SHARE locks on `tables` (qualified, quoted names as carriers), in
    /// batches.
    pub async fn lock(&self, tables: &[&str]) -> Result<()> {
        for batch in tables.chunks(500) {
            let sql = format!("LOCK TABLE ONLY {} IN ACCESS SHARE MODE", batch.join(", "));
            self.session
                .execute_bytes(&super::carrier::to_bytes(&sql))
                .await
                .map_err(|e| anyhow!("cannot lock the tables to dump: {}", describe(&e)))?;
        }
        Ok(())
    }

    /// The tables among `tables` (OIDs of plain tables) whose storage was replaced after
    /// the snapshot was taken and before the holder locked them: TRUNCATE, VACUUM FULL,
    /// CLUSTER, a rewriting ALTER TABLE. Under the snapshot such a table looks empty (those
    /// commands are not MVCC-safe), so its rows cannot be dumped consistently. The catalog
    /// row the snapshot sees names the old file node; the relation cache, refreshed when the
    /// lock was granted, names the current one. Call after [`SnapshotHolder::lock`]: from
    /// then on no rewrite can happen until the dump ends.
    pub async fn rewritten_since_snapshot(&self, tables: &[u32]) -> Result<Vec<u32>> {
        let mut found = Vec::new();
        for batch in tables.chunks(10_000) {
            let list: Vec<String> = batch.iter().map(u32::to_string).collect();
            let rows = query_text(
                &self.session.client,
                &format!(
                    "SELECT c.oid FROM pg_catalog.pg_class c
                     WHERE c.oid = ANY ('{{{}}}'::pg_catalog.oid[]) AND c.relkind = 'r'
                       AND c.relfilenode IS DISTINCT FROM pg_catalog.pg_relation_filenode(c.oid)",
                    list.join(",")
                ),
            )
            .await
            .context("cannot check the tables' storage against the snapshot")?;
            found.extend(
                rows.into_iter()
                    .filter_map(|r| r.into_iter().next().flatten()?.parse::<u32>().ok()),
            );
        }
        Ok(found)
    }

    /// Proves the transaction is still alive, then ends it.
    pub async fn finish(self) -> Result<()> {
        if let Some(reason) = self.lost() {
            bail!("snapshot lost: the snapshot holder's session ended ({reason})");
        }
        execute(&self.session.client, "COMMIT")
            .await
            .map_err(|e| anyhow!("snapshot lost: the snapshot holder's session failed ({e:#})"))
    }
}

/// A relation the catalog says may hold rows.
#[derive(Debug, Clone)]
///
/// `schema`, `name`, `qualified`, `columns` and `owner` are carriers (`pg::carrier`) of the
/// database's bytes: they go into SQL and the archive exactly, and through
/// [`CatalogTable::display_name`] into messages.
pub struct CatalogTable {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// 'r' or 'p'.
    pub relkind: char,
    /// `relpersistence`: 'p' permanent, 'u' unlogged.
    pub persistence: char,
    /// The owner's role name.
    pub owner: String,
    /// `quote_ident(schema).quote_ident(name)`.
    pub qualified: String,
    /// Quoted column names, comma-separated, without dropped or generated columns.
    pub columns: String,
    /// Main fork size in bytes (pg_relation_size).
    pub heap_bytes: u64,
    /// Main fork + TOAST (pg_table_size), for scheduling.
    pub table_bytes: u64,
    /// Member of an extension: pg_dump decides about its data.
    pub extension_member: bool,
}

impl CatalogTable {
    /// `schema.name`, unquoted, for messages and reports (readable text, not a carrier).
    pub fn display_name(&self) -> String {
        super::carrier::display(&format!("{}.{}", self.schema, self.name))
    }
}

/// `expr` (text in the server encoding) as hex of its bytes: names travel as bytes, whatever
/// the encoding, and become carriers (`pg::carrier`) on this side.
fn raw_hex(expr: &str) -> String {
    format!(
        "pg_catalog.encode(pg_catalog.convert_to({expr}, pg_catalog.getdatabaseencoding()), 'hex')"
    )
}

/// The carrier of a `raw_hex` column.
pub fn carrier_from_hex(hex: &str) -> Result<String> {
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<std::result::Result<Vec<u8>, _>>()
        .map_err(|_| anyhow!("the server sent a name in an unexpected form"))?;
    Ok(super::carrier::from_bytes(&bytes))
}

/// Reads every user table and partitioned table, under the holder's snapshot. Names are
/// carriers of the database's bytes.
pub async fn catalog_tables(client: &Client) -> Result<Vec<CatalogTable>> {
    let sql = format!(
        "SELECT c.oid, {}, {}, c.relkind,
                {},
                {},
                pg_catalog.pg_relation_size(c.oid), pg_catalog.pg_table_size(c.oid),
                EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                        WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                          AND d.objid = c.oid AND d.deptype = 'e'),
                c.relpersistence, {}
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p')
           AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname !~ '^pg_toast' AND n.nspname !~ '^pg_temp_'
         ORDER BY c.oid",
        raw_hex("n.nspname::text"),
        raw_hex("c.relname::text"),
        raw_hex("pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname)"),
        raw_hex(
            "coalesce((SELECT string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum)
                          FROM pg_catalog.pg_attribute a
                          WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                            AND a.attgenerated = ''), '')"
        ),
        raw_hex("pg_catalog.pg_get_userbyid(c.relowner)::text"),
    );
    let rows = query_text(client, &sql)
        .await
        .context("cannot read the catalog")?;
    rows.into_iter()
        .map(|r| {
            let s = |i: usize| r[i].clone().unwrap_or_default();
            Ok(CatalogTable {
                oid: s(0).parse().context("bad oid from the catalog")?,
                schema: carrier_from_hex(&s(1))?,
                name: carrier_from_hex(&s(2))?,
                relkind: s(3).chars().next().unwrap_or('r'),
                qualified: carrier_from_hex(&s(4))?,
                columns: carrier_from_hex(&s(5))?,
                heap_bytes: s(6).parse().unwrap_or(0),
                table_bytes: s(7).parse().unwrap_or(0),
                extension_member: s(8) == "t",
                persistence: s(9).chars().next().unwrap_or('p'),
                owner: carrier_from_hex(&s(10))?,
            })
        })
        .collect()
}

/// Every relation that can have data pg_dump writes (tables, sequences, materialized views):
/// OID, schema and name (carriers), under the holder's snapshot.
pub async fn relations_with_data(client: &Client) -> Result<Vec<(u32, String, String)>> {
    Ok(relations(client, "'r', 'S', 'm'")
        .await?
        .into_iter()
        .map(|(oid, schema, name, _)| (oid, schema, name))
        .collect())
}

/// Every sequence: schema, name and `quote_ident(schema).quote_ident(name)` (carriers).
pub async fn catalog_sequences(client: &Client) -> Result<Vec<(String, String, String)>> {
    Ok(relations(client, "'S'")
        .await?
        .into_iter()
        .map(|(_, schema, name, qualified)| (schema, name, qualified))
        .collect())
}

/// The relations of the kinds `relkinds` (an SQL list of `relkind` literals) outside the
/// system schemas: OID, schema, name and `quote_ident(schema).quote_ident(name)` (carriers).
async fn relations(client: &Client, relkinds: &str) -> Result<Vec<(u32, String, String, String)>> {
    let sql = format!(
        "SELECT c.oid, {}, {}, {} FROM pg_catalog.pg_class c
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ({relkinds})
           AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname !~ '^pg_toast' AND n.nspname !~ '^pg_temp_'",
        raw_hex("n.nspname::text"),
        raw_hex("c.relname::text"),
        raw_hex("pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname)"),
    );
    query_text(client, &sql)
        .await
        .context("cannot read the catalog")?
        .into_iter()
        .map(|r| {
            let s = |i: usize| r[i].clone().unwrap_or_default();
            Ok((
                s(0).parse().context("bad oid from the catalog")?,
                carrier_from_hex(&s(1))?,
                carrier_from_hex(&s(2))?,
                carrier_from_hex(&s(3))?,
            ))
        })
        .collect()
}

/// `last_value` and `is_called` of each sequence (qualified names, carriers), in order.
pub async fn sequence_states(session: &Session, qualified: &[String]) -> Result<Vec<(i128, bool)>> {
    let mut out = Vec::with_capacity(qualified.len());
    for group in qualified.chunks(200) {
        let sql = group
            .iter()
            .enumerate()
            .map(|(i, q)| format!("SELECT {i}, last_value::text, is_called::text FROM {q}"))
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let sql = format!("SELECT * FROM ({sql}) s ORDER BY 1");
        let read = async {
            let statement = session
                .prepare_bytes(&super::carrier::to_bytes(&sql), false)
                .await?;
            session.client.query(&statement, &[]).await
        };
        let rows = match read.await {
            Ok(rows) => rows,
            Err(e) => bail!("cannot read the sequences: {}", session.explain(&e).await),
        };
        for r in rows {
            let value = r.try_get::<_, String>(1).ok().and_then(|v| v.parse().ok());
            let called = r.try_get::<_, String>(2).ok().map(|v| v == "true");
            match (value, called) {
                (Some(v), Some(c)) => out.push((v, c)),
                _ => bail!("the server returned a sequence state pgarc cannot read"),
            }
        }
    }
    Ok(out)
}

/// Every large object's OID and the SHA-256 of its bytes (hex), computed by the server.
pub async fn large_object_digests(client: &Client) -> Result<Vec<(u32, String)>> {
    query_text(
        client,
        "SELECT oid, pg_catalog.encode(pg_catalog.sha256(pg_catalog.lo_get(oid)), 'hex')
         FROM pg_catalog.pg_largeobject_metadata ORDER BY oid",
    )
    .await
    .context("cannot read the large objects")?
    .into_iter()
    .map(|r| {
        let s = |i: usize| r[i].clone().unwrap_or_default();
        Ok((s(0).parse().context("bad oid from the server")?, s(1)))
    })
    .collect()
}

/// A data worker's session: pg_dump's settings, then `settings` (name and value; a check sets
/// the ones an archive recorded), then the imported snapshot. A setting in `optional` that
/// the server refuses (a locale it does not have) is reported with a warning and left as is.
pub async fn open_worker(
    params: &ConnParams,
    info: &ServerInfo,
    snapshot_id: &str,
    n: usize,
    settings: &[(&str, &str)],
    optional: &[&str],
) -> Result<Arc<Session>> {
    let session = connect(params, &format!("pgarc worker {n}")).await?;
    execute(&session.client, &session_settings(info)).await?;
    for (name, value) in settings {
        let sql = format!(
            "SELECT pg_catalog.set_config({}, {}, false)",
            literal(name),
            literal(value)
        );
        if let Err(e) = execute(&session.client, &sql).await {
            if !optional.contains(name) {
                bail!("cannot set {name} to {value:?} as the archive's rows were copied: {e:#}");
            }
            if n == 1 {
                crate::progress::say(&format!(
                    "pgarc: warning: this server cannot set {name} to {value:?} as the dump's \
                     did ({e:#}); values whose text depends on it (money) may differ"
                ));
            }
        }
    }
    // pg_dump's CVE-2024-7348 hardening, where the server has the setting.
    execute(
        &session.client,
        "SELECT pg_catalog.set_config(name, 'view, foreign-table', false) FROM pg_catalog.pg_settings WHERE name = 'restrict_nonsystem_relation_kind'",
    )
    .await?;
    execute(
        &session.client,
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
    )
    .await?;
    execute(
        &session.client,
        &format!("SET TRANSACTION SNAPSHOT {}", literal(snapshot_id)),
    )
    .await
    .with_context(|| format!("worker {n} cannot import snapshot {snapshot_id}"))?;
    Ok(Arc::new(session))
}
