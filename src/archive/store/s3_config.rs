//! Where an archive in S3-compatible object storage is, and how to reach it, by the AWS
//! ecosystem's conventions (issue 20): `s3://BUCKET/PREFIX` locations; credentials from
//! `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, else the shared credentials
//! file, else the config file, for the profile `AWS_PROFILE` (default `default`); the region
//! from `AWS_REGION`, `AWS_DEFAULT_REGION` or the profile; a custom endpoint from
//! `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL` or the profile's `endpoint_url` (then addressed
//! path-style, as Garage, Ceph and most other S3-compatible servers want). Plain HTTP only
//! for a loopback endpoint, or when the caller allows it explicitly.
//!
//! Pure code: the environment and the files are read through the closures the caller gives,
//! so that tests need neither. A secret never appears in `Debug` output or in an error.

use std::fmt;
use std::path::{Path, PathBuf};

/// An `s3://BUCKET/PREFIX` location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// The key prefix, without leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
}

/// Why a location or a configuration is refused: one line naming the problem and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum S3ConfigError {
    #[error("{location}: {problem}")]
    Location { location: String, problem: String },
    #[error("{0}")]
    Config(String),
}

impl S3Location {
    /// `Ok(None)` for anything that is not an `s3://` location (a local path).
    pub fn parse(s: &str) -> Result<Option<S3Location>, S3ConfigError> {
        let Some(rest) = s.strip_prefix("s3://") else {
            return Ok(None);
        };
        let bad = |problem: &str| S3ConfigError::Location {
            location: s.to_string(),
            problem: problem.to_string(),
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
            && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !valid_bucket {
            return Err(bad(
                "not a bucket name (3 to 63 lower-case letters, digits, dots and hyphens, \
                 starting and ending with a letter or digit): write s3://BUCKET/PREFIX",
            ));
        }
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty() {
            for part in prefix.split('/') {
                if part.is_empty() || part == "." || part == ".." {
                    return Err(bad(
                        "the prefix has an empty, '.' or '..' part: name the archive's prefix \
                         as plain parts separated by single slashes",
                    ));
                }
                if part.chars().any(char::is_control) {
                    return Err(bad("the prefix holds a control character"));
                }
            }
        }
        Ok(Some(S3Location {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        }))
    }

    /// The object key of archive file `rel` (a `/`-separated name such as `toc.dat`).
    pub fn key(&self, rel: &str) -> String {
        if self.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// Credentials: the secret and the session token never appear in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// Where they came from, for messages ("AWS_ACCESS_KEY_ID", "~/.aws/credentials [prod]").
    pub source: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("source", &self.source)
            .finish()
    }
}

/// A custom endpoint (`http(s)://host[:port]`), addressed path-style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    pub https: bool,
    pub host: String,
}

/// Everything needed to reach a location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    pub region: String,
    pub endpoint: Option<Endpoint>,
    pub credentials: Credentials,
    pub profile: String,
}

/// How the configuration is read: the environment, and files by path (None when absent).
pub struct Sources<'a> {
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub read_file: &'a dyn Fn(&Path) -> Option<String>,
    /// The home directory, for `~/.aws/credentials` and `~/.aws/config`.
    pub home: Option<PathBuf>,
    /// Plain HTTP to a non-loopback endpoint (an explicit option).
    pub allow_http: bool,
}

/// The region when nothing names one (the AWS CLI's default for S3).
pub const DEFAULT_REGION: &str = "us-east-1";

impl S3Settings {
    pub fn resolve(src: &Sources<'_>) -> Result<S3Settings, S3ConfigError> {
        let env = |k: &str| (src.env)(k).filter(|v| !v.is_empty());
        let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".to_string());
        let file = |var: &str, default: &str| -> Option<(PathBuf, String)> {
            let path = env(var)
                .map(PathBuf::from)
                .or_else(|| src.home.as_ref().map(|h| h.join(default)))?;
            let text = (src.read_file)(&path)?;
            Some((path, text))
        };
        let credentials_file = file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials");
        let config_file = file("AWS_CONFIG_FILE", ".aws/config");
        // The credentials file names sections by profile; the config file as
        // `[profile NAME]`, except `[default]`.
        let in_credentials = |key: &str| {
            credentials_file
                .as_ref()
                .and_then(|(_, t)| ini_value(t, &profile, key))
        };
        let config_section = if profile == "default" {
            "default".to_string()
        } else {
            format!("profile {profile}")
        };
        let in_config = |key: &str| {
            config_file
                .as_ref()
                .and_then(|(_, t)| ini_value(t, &config_section, key))
        };
        let credentials = credentials(&env, &profile, &in_credentials, &in_config, src)?;
        let region = env("AWS_REGION")
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .or_else(|| in_config("region"))
            .unwrap_or_else(|| DEFAULT_REGION.to_string());
        let endpoint = match env("AWS_ENDPOINT_URL_S3")
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .or_else(|| in_config("endpoint_url"))
        {
            Some(url) => Some(endpoint(&url, src.allow_http)?),
            None => None,
        };
        Ok(S3Settings {
            region,
            endpoint,
            credentials,
            profile,
        })
    }
}

fn credentials(
    env: &dyn Fn(&str) -> Option<String>,
    profile: &str,
    in_credentials: &dyn Fn(&str) -> Option<String>,
    in_config: &dyn Fn(&str) -> Option<String>,
    src: &Sources<'_>,
) -> Result<Credentials, S3ConfigError> {
    let from = |id: Option<String>,
                secret: Option<String>,
                token: Option<String>,
                source: String| match (id, secret) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(Some(Credentials {
            access_key_id,
            secret_access_key,
            session_token: token,
            source,
        })),
        (None, None) => Ok(None),
        _ => Err(S3ConfigError::Config(format!(
            "{source} gives only one of the access key id and the secret access key: \
                 give both"
        ))),
    };
    if let Some(c) = from(
        env("AWS_ACCESS_KEY_ID"),
        env("AWS_SECRET_ACCESS_KEY"),
        env("AWS_SESSION_TOKEN"),
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".to_string(),
    )? {
        return Ok(c);
    }
    for (lookup, what) in [
        (in_credentials, "the shared credentials file"),
        (in_config, "the config file"),
    ] {
        if let Some(c) = from(
            lookup("aws_access_key_id"),
            lookup("aws_secret_access_key"),
            lookup("aws_session_token"),
            format!("{what}, profile {profile}"),
        )? {
            return Ok(c);
        }
    }
    let home = src
        .home
        .as_ref()
        .map_or_else(|| "~".to_string(), |h| h.display().to_string());
    Err(S3ConfigError::Config(format!(
        "no S3 credentials for profile {profile:?}: set AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY, or put aws_access_key_id and aws_secret_access_key in \
         {home}/.aws/credentials (AWS_SHARED_CREDENTIALS_FILE, AWS_PROFILE)"
    )))
}

/// A custom endpoint; plain HTTP only to loopback unless allowed.
fn endpoint(url: &str, allow_http: bool) -> Result<Endpoint, S3ConfigError> {
    let bad = |problem: &str| S3ConfigError::Config(format!("endpoint {url:?}: {problem}"));
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(bad("not an http:// or https:// URL"));
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        return Err(bad(
            "no host, or credentials in the URL (give them in AWS_* instead)",
        ));
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or("").to_string(),
        None => authority.split(':').next().unwrap_or("").to_string(),
    };
    if !https && !allow_http && !is_loopback(&host) {
        return Err(bad(
            "plain HTTP to a host that is not loopback would send requests unencrypted: use \
             https://, or pass --s3-allow-http",
        ));
    }
    Ok(Endpoint {
        url: url.trim_end_matches('/').to_string(),
        https,
        host,
    })
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The value of `key` in section `[section]` of an INI text as the AWS files write them
/// (`key = value`; `#` and `;` start comments; keys are case-insensitive).
fn ini_value(text: &str, section: &str, key: &str) -> Option<String> {
    let mut current: Option<String> = None;
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.split_whitespace().collect::<Vec<_>>().join(" "));
            continue;
        }
        if current.as_deref() != Some(section) {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            if k.trim().eq_ignore_ascii_case(key) {
                found = Some(v.trim().to_string());
            }
        }
    }
    found.filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(
        env: &[(&str, &str)],
        files: &[(&str, &str)],
        allow_http: bool,
    ) -> Result<S3Settings, S3ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let files: HashMap<PathBuf, String> = files
            .iter()
            .map(|(k, v)| (PathBuf::from(k), v.to_string()))
            .collect();
        S3Settings::resolve(&Sources {
            env: &|k| env.get(k).cloned(),
            read_file: &|p| files.get(p).cloned(),
            home: Some(PathBuf::from("/home/u")),
            allow_http,
        })
    }

    #[test]
    fn locations_are_bucket_and_clean_prefix() {
        let l = S3Location::parse("s3://backups/db/2026-11-24/")
            .unwrap()
            .unwrap();
        assert_eq!(
            (l.bucket.as_str(), l.prefix.as_str()),
            ("backups", "db/2026-11-24")
        );
        assert_eq!(l.key("toc.dat"), "db/2026-11-24/toc.dat");
        assert_eq!(l.to_string(), "s3://backups/db/2026-11-24");
        let root = S3Location::parse("s3://my.bucket-1").unwrap().unwrap();
        assert_eq!(root.key("manifest.toml"), "manifest.toml");
        assert_eq!(S3Location::parse("/var/backups/db").unwrap(), None);
        for bad in [
            "s3://",
            "s3://ab",
            "s3://Upper/x",
            "s3://-bucket/x",
            "s3://bucket/a//b",
            "s3://bucket/a/../b",
            "s3://bucket/./b",
            "s3://bucket/a\u{7}b",
        ] {
            assert!(S3Location::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_come_from_the_environment_then_the_files_by_profile() {
        let creds = "[default]\naws_access_key_id = FILEKEY\naws_secret_access_key = filesecret\n\
                     [prod]\naws_access_key_id=PRODKEY\naws_secret_access_key=prodsecret\n\
                     aws_session_token = tok\n";
        let config = "[default]\nregion = eu-west-3\n[profile prod]\nregion=ap-south-1\n\
                      endpoint_url = https://s3.example.net\n";
        let files = [
            ("/home/u/.aws/credentials", creds),
            ("/home/u/.aws/config", config),
        ];
        let s = resolve(
            &[
                ("AWS_ACCESS_KEY_ID", "ENVKEY"),
                ("AWS_SECRET_ACCESS_KEY", "envsecret"),
            ],
            &files,
            false,
        )
        .unwrap();
        assert_eq!(s.credentials.access_key_id, "ENVKEY");
        assert_eq!(
            (s.region.as_str(), s.endpoint.as_ref()),
            ("eu-west-3", None)
        );
        let s = resolve(&[], &files, false).unwrap();
        assert_eq!(s.credentials.access_key_id, "FILEKEY");
        let s = resolve(&[("AWS_PROFILE", "prod")], &files, false).unwrap();
        assert_eq!(s.credentials.access_key_id, "PRODKEY");
        assert_eq!(s.credentials.session_token.as_deref(), Some("tok"));
        assert_eq!(s.region, "ap-south-1");
        assert_eq!(s.endpoint.unwrap().host, "s3.example.net");
        // The environment's region and endpoint win over the profile's.
        let s = resolve(
            &[
                ("AWS_PROFILE", "prod"),
                ("AWS_REGION", "garage"),
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:3900"),
            ],
            &files,
            false,
        )
        .unwrap();
        assert_eq!(s.region, "garage");
        let e = s.endpoint.unwrap();
        assert_eq!((e.https, e.host.as_str()), (false, "127.0.0.1"));
        // Other files, named by the environment.
        let s = resolve(
            &[("AWS_SHARED_CREDENTIALS_FILE", "/etc/pgarc/creds")],
            &[(
                "/etc/pgarc/creds",
                "[default]\naws_access_key_id=K\naws_secret_access_key=S\n",
            )],
            false,
        )
        .unwrap();
        assert_eq!(
            (s.credentials.access_key_id.as_str(), s.region.as_str()),
            ("K", DEFAULT_REGION)
        );
    }

    #[test]
    fn refusals_are_one_line_and_never_show_a_secret() {
        let err = resolve(&[], &[], false).unwrap_err().to_string();
        assert!(
            err.contains("no S3 credentials") && err.contains("AWS_ACCESS_KEY_ID"),
            "{err}"
        );
        let err = resolve(&[("AWS_ACCESS_KEY_ID", "K")], &[], false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("only one of"), "{err}");
        let env = [
            ("AWS_ACCESS_KEY_ID", "K"),
            ("AWS_SECRET_ACCESS_KEY", "very-secret-value"),
            ("AWS_SESSION_TOKEN", "secret-token"),
        ];
        for (url, ok) in [
            ("http://10.0.0.5:3900", false),
            ("http://localhost:3900", true),
            ("http://[::1]:3900", true),
            ("https://s3.example.net", true),
            ("ftp://x", false),
            ("https://user:pw@host", false),
        ] {
            let mut e = env.to_vec();
            e.push(("AWS_ENDPOINT_URL", url));
            assert_eq!(resolve(&e, &[], false).is_ok(), ok, "{url}");
        }
        let mut e = env.to_vec();
        e.push(("AWS_ENDPOINT_URL", "http://10.0.0.5:3900"));
        assert!(resolve(&e, &[], true).is_ok(), "HTTP allowed explicitly");
        let shown = format!("{:?}", resolve(&env, &[], false).unwrap());
        assert!(
            !shown.contains("very-secret-value") && !shown.contains("secret-token"),
            "{shown}"
        );
        assert!(shown.contains("<redacted>"));
    }
}
