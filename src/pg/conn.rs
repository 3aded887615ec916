//! Connection parameters resolved the way libpq resolves them: command-line options, then
//! the keywords of a conninfo or URI given as `-d`, then `PG*` environment variables, then
//! defaults; the password from the connection string, a `-W` prompt, `PGPASSWORD` or the
//! password file. The password is kept in a [`Secret`] that never prints.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::conninfo;

/// What the user gave on the command line (`-d -h -p -U -w -W`).
#[derive(Debug, Clone, Default)]
pub struct ConnArgs {
    pub dbname: Option<String>,
    pub host: Option<String>,
    pub port: Option<String>,
    pub user: Option<String>,
    /// `-w`: never prompt.
    pub no_password: bool,
    /// `-W`: prompt before connecting.
    pub password_prompt: bool,
}

/// A password. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Why connection parameters cannot be used, each with what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConnParamError {
    #[error("{0}")]
    ConnInfo(#[from] super::conninfo::ConnInfoError),
    #[error("unsupported connection option {0:?} (pgarc understands {known})", known = KNOWN.join(", "))]
    Unsupported(String),
    #[error("several hosts in one connection string are not supported")]
    SeveralHosts,
    #[error("invalid hostaddr {0:?}: expected a numeric IP address")]
    HostAddr(String),
    #[error("invalid port {0:?}: expected a number from 1 to 65535")]
    Port(String),
    #[error(
        "invalid sslmode {0:?}: use disable, allow, prefer, require, verify-ca or verify-full"
    )]
    SslMode(String),
    #[error("invalid connect_timeout {0:?}: expected seconds")]
    ConnectTimeout(String),
    #[error("cannot tell the OS user name ({0}); pass -U or set PGUSER")]
    NoUser(String),
    #[error("cannot read the password from the terminal: {0}")]
    Prompt(std::io::Error),
    #[error("{what}: {error}")]
    Tls {
        what: String,
        error: openssl::error::ErrorStack,
    },
    #[error(
        "sslmode={mode} needs a root certificate to check the server against, and root \
         certificate file {file:?} does not exist: set sslrootcert (or PGSSLROOTCERT) to the \
         CA file, or sslrootcert=system, or use sslmode=require"
    )]
    NoRootCert { mode: &'static str, file: String },
    #[error("client certificate file {0:?} does not exist: check sslcert (or PGSSLCERT)")]
    NoClientCert(String),
    #[error("client certificate {0:?} given without its key: set sslkey")]
    CertWithoutKey(String),
    #[error("client key file {0:?} does not exist: check sslkey (or PGSSLKEY)")]
    NoClientKey(String),
}

/// `sslmode`, as libpq spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<SslMode, ConnParamError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return Err(ConnParamError::SslMode(s.to_string())),
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Fully resolved connection parameters.
#[derive(Debug, Clone)]
pub struct ConnParams {
    /// A host name, an IP address, or an absolute unix-socket directory.
    pub host: String,
    pub hostaddr: Option<IpAddr>,
    pub port: u16,
    pub user: String,
    pub dbname: String,
    pub password: Option<Secret>,
    pub sslmode: SslMode,
    /// `sslrootcert`, `sslcert`, `sslkey` as given (libpq's defaults under ~/.postgresql are
    /// looked up when connecting).
    pub sslrootcert: Option<String>,
    pub sslcert: Option<String>,
    pub sslkey: Option<String>,
    pub connect_timeout: Option<Duration>,
    pub options: Option<String>,
    /// Where the password came from, for error hints.
    pub password_source: PasswordSource,
    pub no_password: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordSource {
    None,
    ConnString,
    Prompt,
    Env,
    PassFile,
}

/// The keywords pgarc understands in a connection string.
const KNOWN: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "user",
    "password",
    "dbname",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "connect_timeout",
    "options",
    "passfile",
    "application_name",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
];

impl ConnParams {
    /// Resolves parameters from the command line and `env` (normally `std::env::var`).
    /// Prompting for a password (`-W`) happens here, on the terminal.
    pub fn resolve(
        args: &ConnArgs,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ConnParams, ConnParamError> {
        let mut vals: Vec<(String, String)> = Vec::new();
        let mut set = |k: &str, v: &str| {
            vals.retain(|(key, _)| key != k);
            vals.push((k.to_string(), v.to_string()));
        };
        // libpq: the command-line keywords come first and the expanded dbname overrides
        // them; environment variables only fill what is still unset.
        if let Some(h) = &args.host {
            set("host", h);
        }
        if let Some(p) = &args.port {
            set("port", p);
        }
        if let Some(u) = &args.user {
            set("user", u);
        }
        if let Some(d) = &args.dbname {
            if conninfo::is_connection_string(d) {
                for (k, v) in conninfo::parse(d)? {
                    if !KNOWN.contains(&k.as_str()) {
                        return Err(ConnParamError::Unsupported(k));
                    }
                    set(&k, &v);
                }
            } else {
                set("dbname", d);
            }
        }
        let get = |k: &str, envname: &str| -> Option<String> {
            vals.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .or_else(|| env(envname).filter(|v| !v.is_empty()))
        };
        let host = match get("host", "PGHOST") {
            Some(h) if h.contains(',') => return Err(ConnParamError::SeveralHosts),
            Some(h) => h,
            None => default_host(),
        };
        let hostaddr = get("hostaddr", "PGHOSTADDR")
            .map(|a| {
                a.parse::<IpAddr>()
                    .map_err(|_| ConnParamError::HostAddr(a.clone()))
            })
            .transpose()?;
        let port = match get("port", "PGPORT") {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| ConnParamError::Port(p.clone()))?,
            None => 5432,
        };
        let user = match get("user", "PGUSER") {
            Some(u) => u,
            None => whoami::username().map_err(|e| ConnParamError::NoUser(e.to_string()))?,
        };
        let dbname = get("dbname", "PGDATABASE").unwrap_or_else(|| user.clone());
        let sslmode = SslMode::parse(&get("sslmode", "PGSSLMODE").unwrap_or("prefer".into()))?;
        let sslrootcert = get("sslrootcert", "PGSSLROOTCERT");
        let sslcert = get("sslcert", "PGSSLCERT");
        let sslkey = get("sslkey", "PGSSLKEY");
        let connect_timeout = get("connect_timeout", "PGCONNECT_TIMEOUT")
            .map(|t| {
                t.trim()
                    .parse::<u64>()
                    .map_err(|_| ConnParamError::ConnectTimeout(t.clone()))
            })
            .transpose()?
            .filter(|t| *t > 0)
            // libpq treats values below 2 seconds as 2.
            .map(|t| Duration::from_secs(t.max(2)));
        let options = get("options", "PGOPTIONS");
        let passfile = get("passfile", "PGPASSFILE");

        let explicit = vals
            .iter()
            .find(|(k, _)| k == "password")
            .map(|(_, v)| v.clone());
        let (password, password_source) = if let Some(p) = explicit {
            (Some(Secret(p)), PasswordSource::ConnString)
        } else if args.password_prompt && !args.no_password {
            let p = rpassword::prompt_password("Password: ").map_err(ConnParamError::Prompt)?;
            (Some(Secret(p)), PasswordSource::Prompt)
        } else if let Some(p) = env("PGPASSWORD") {
            (Some(Secret(p)), PasswordSource::Env)
        } else {
            let file = passfile
                .map(PathBuf::from)
                .or_else(|| env("HOME").map(|h| Path::new(&h).join(".pgpass")));
            match file.and_then(|f| pgpass_lookup(&f, &host, port, &dbname, &user)) {
                Some(p) => (Some(Secret(p)), PasswordSource::PassFile),
                None => (None, PasswordSource::None),
            }
        };
        Ok(ConnParams {
            host,
            hostaddr,
            port,
            user,
            dbname,
            password,
            sslmode,
            sslrootcert,
            sslcert,
            sslkey,
            connect_timeout,
            options,
            password_source,
            no_password: args.no_password,
        })
    }

    /// Whether a password may still be asked for: none given, prompting allowed, and a
    /// terminal to ask on.
    pub fn may_prompt(&self) -> bool {
        use std::io::IsTerminal;
        self.password.is_none() && !self.no_password && std::io::stdin().is_terminal()
    }

    /// Asks for the password on the terminal, without echo.
    pub fn prompt_password(&mut self) -> Result<(), ConnParamError> {
        let p = rpassword::prompt_password(format!("Password for user {}: ", self.user))
            .map_err(ConnParamError::Prompt)?;
        self.password = Some(Secret(p));
        self.password_source = PasswordSource::Prompt;
        Ok(())
    }

    pub fn is_unix_socket(&self) -> bool {
        self.host.starts_with('/')
    }

    /// Where the server is, for messages: `host:port` or the socket path. Never a password.
    pub fn location(&self) -> String {
        if self.is_unix_socket() {
            format!("{}/.s.PGSQL.{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The tokio-postgres configuration for one session.
    pub fn config(&self, application_name: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host);
        if let Some(a) = self.hostaddr {
            c.hostaddr(a);
        }
        c.port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name(application_name)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(60))
            .keepalives_interval(Duration::from_secs(10))
            .keepalives_retries(6);
        if let Some(p) = &self.password {
            c.password(p.expose());
        }
        if let Some(t) = self.connect_timeout {
            c.connect_timeout(t);
        }
        if let Some(o) = &self.options {
            c.options(o);
        }
        // libpq never uses TLS on a unix socket, whatever sslmode says.
        c.ssl_mode(match self.sslmode {
            _ if self.is_unix_socket() => tokio_postgres::config::SslMode::Disable,
            SslMode::Disable | SslMode::Allow => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
        c
    }

    /// The TLS set-up, as libpq's: the root certificate (`sslrootcert`, else
    /// ~/.postgresql/root.crt) verifies the server's chain whenever it exists, and must exist
    /// for verify-ca and verify-full (`system` means the system's trusted roots); verify-full
    /// also checks the host name; a client certificate and key are sent when given (or present
    /// as ~/.postgresql/postgresql.crt and .key).
    pub fn tls(&self) -> Result<postgres_openssl::MakeTlsConnector, ConnParamError> {
        use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let default = |name: &str| {
            home.as_ref()
                .map(|h| h.join(".postgresql").join(name))
                .filter(|p| p.exists())
                .map(|p| p.to_string_lossy().into_owned())
        };
        let tls_err = |what: String| {
            move |error: openssl::error::ErrorStack| ConnParamError::Tls { what, error }
        };
        let mut b = SslConnector::builder(SslMethod::tls_client())
            .map_err(tls_err("cannot set up TLS".into()))?;
        let verify = matches!(self.sslmode, SslMode::VerifyCa | SslMode::VerifyFull);
        let root = self.sslrootcert.clone().or_else(|| default("root.crt"));
        match root.as_deref() {
            Some("system") => {
                b.set_default_verify_paths()
                    .map_err(tls_err("cannot load the system's trusted roots".into()))?;
                b.set_verify(SslVerifyMode::PEER);
            }
            Some(file) if Path::new(file).exists() => {
                b.set_ca_file(file).map_err(tls_err(format!(
                    "cannot read root certificate file {file:?}"
                )))?;
                b.set_verify(SslVerifyMode::PEER);
            }
            _ if verify => {
                return Err(ConnParamError::NoRootCert {
                    mode: self.sslmode.as_str(),
                    file: root.unwrap_or_else(|| "~/.postgresql/root.crt".into()),
                })
            }
            _ => b.set_verify(SslVerifyMode::NONE),
        }
        if let Some(cert) = self.sslcert.clone().or_else(|| default("postgresql.crt")) {
            if !Path::new(&cert).exists() {
                return Err(ConnParamError::NoClientCert(cert));
            }
            b.set_certificate_chain_file(&cert)
                .map_err(tls_err(format!(
                    "cannot read client certificate file {cert:?}"
                )))?;
            let key = self
                .sslkey
                .clone()
                .or_else(|| default("postgresql.key"))
                .ok_or_else(|| ConnParamError::CertWithoutKey(cert.clone()))?;
            if !Path::new(&key).exists() {
                return Err(ConnParamError::NoClientKey(key));
            }
            b.set_private_key_file(&key, SslFiletype::PEM)
                .map_err(tls_err(format!("cannot read client key file {key:?}")))?;
        }
        let mut make = postgres_openssl::MakeTlsConnector::new(b.build());
        let check_host = self.sslmode == SslMode::VerifyFull;
        make.set_callback(move |config, _| {
            config.set_verify_hostname(check_host);
            Ok(())
        });
        Ok(make)
    }

    /// Environment variables that make a libpq program (pg_dump) connect to the same place as
    /// the same user. The password travels here, never in argv.
    pub fn libpq_env(&self, application_name: &str) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("PGHOST", self.host.clone()),
            ("PGPORT", self.port.to_string()),
            ("PGUSER", self.user.clone()),
            ("PGDATABASE", self.dbname.clone()),
            ("PGSSLMODE", self.sslmode.as_str().to_string()),
            ("PGAPPNAME", application_name.to_string()),
        ];
        if let Some(a) = self.hostaddr {
            env.push(("PGHOSTADDR", a.to_string()));
        }
        if let Some(p) = &self.password {
            env.push(("PGPASSWORD", p.expose().to_string()));
        }
        if let Some(t) = self.connect_timeout {
            env.push(("PGCONNECT_TIMEOUT", t.as_secs().to_string()));
        }
        if let Some(o) = &self.options {
            env.push(("PGOPTIONS", o.clone()));
        }
        for (k, v) in [
            ("PGSSLROOTCERT", &self.sslrootcert),
            ("PGSSLCERT", &self.sslcert),
            ("PGSSLKEY", &self.sslkey),
        ] {
            if let Some(v) = v {
                env.push((k, v.clone()));
            }
        }
        env
    }
}

/// libpq's default: the unix socket directory if there is one, else localhost.
fn default_host() -> String {
    for dir in ["/var/run/postgresql", "/tmp"] {
        if Path::new(dir).is_dir() {
            return dir.to_string();
        }
    }
    "localhost".to_string()
}

/// Looks the password up in a password file (`hostname:port:database:username:password`,
/// `*` matches anything, `\` escapes `:` and `\`). Like libpq, a file that group or others
/// can read is ignored.
pub fn pgpass_lookup(file: &Path, host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(file).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.permissions().mode() & 0o077 != 0 {
        eprintln!(
            "pgarc: warning: password file {} has group or world access; permissions should be u=rw (0600) or less",
            file.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    let host = if host.starts_with('/') {
        "localhost"
    } else {
        host
    };
    let port = port.to_string();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let fields = split_pgpass(line);
            if fields.len() < 5 {
                return None;
            }
            let ok = |f: &str, v: &str| f == "*" || f == v;
            (ok(&fields[0], host)
                && ok(&fields[1], &port)
                && ok(&fields[2], db)
                && ok(&fields[3], user))
            .then(|| fields[4].clone())
        })
}

fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    fields.last_mut().unwrap().push(n);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(args: ConnArgs, env: &[(&str, &str)]) -> Result<ConnParams, ConnParamError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ConnParams::resolve(&args, &|k| env.get(k).cloned())
    }

    #[test]
    fn command_line_then_conninfo_then_environment() {
        let p = resolve(
            ConnArgs {
                dbname: Some("host=/sock dbname=app".into()),
                host: Some("ignored".into()),
                port: Some("6000".into()),
                ..Default::default()
            },
            &[
                ("PGUSER", "envuser"),
                ("PGPORT", "7000"),
                ("PGPASSWORD", "pw"),
            ],
        )
        .unwrap();
        assert_eq!(p.host, "/sock");
        assert_eq!(p.port, 6000);
        assert_eq!(p.user, "envuser");
        assert_eq!(p.dbname, "app");
        assert_eq!(p.password.as_ref().unwrap().expose(), "pw");
        assert_eq!(p.password_source, PasswordSource::Env);
        assert!(!format!("{p:?}").contains("pw\""));
        assert_eq!(p.location(), "/sock/.s.PGSQL.6000");
    }

    #[test]
    fn dbname_defaults_to_user_and_bad_values_are_named() {
        let p = resolve(
            ConnArgs::default(),
            &[("PGUSER", "u"), ("PGHOST", "db.example")],
        )
        .unwrap();
        assert_eq!((p.dbname.as_str(), p.port), ("u", 5432));
        let e = resolve(
            ConnArgs {
                port: Some("x".into()),
                ..Default::default()
            },
            &[],
        )
        .unwrap_err();
        assert!(matches!(&e, ConnParamError::Port(p) if p == "x"), "{e}");
        let e = resolve(
            ConnArgs {
                dbname: Some("bogus=1".into()),
                ..Default::default()
            },
            &[],
        )
        .unwrap_err();
        assert!(
            matches!(&e, ConnParamError::Unsupported(k) if k == "bogus"),
            "{e}"
        );
        let e = resolve(ConnArgs::default(), &[("PGSSLMODE", "sometimes")]).unwrap_err();
        assert!(
            matches!(&e, ConnParamError::SslMode(m) if m == "sometimes"),
            "{e}"
        );
    }

    #[test]
    fn password_file_matches_like_libpq() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pgpass");
        std::fs::write(
            &f,
            "# comment\nother:*:*:*:no\nlocalhost:5432:db:u:sock\\:pw\n*:*:*:u:any\n",
        )
        .unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            pgpass_lookup(&f, "/run/x", 5432, "db", "u").as_deref(),
            Some("sock:pw")
        );
        assert_eq!(pgpass_lookup(&f, "h", 1, "x", "u").as_deref(), Some("any"));
        assert_eq!(pgpass_lookup(&f, "h", 1, "x", "v"), None);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(pgpass_lookup(&f, "h", 1, "x", "u"), None);
    }
}
