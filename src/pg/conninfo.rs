//! libpq connection strings: `key=value` conninfo and `postgresql://` URIs, parsed into
//! keyword/value pairs the way libpq's `conninfo_parse` and `conninfo_uri_parse` do. Which
//! keywords pgarc accepts, and what they mean, is decided in [`super::conn`].

/// Whether `-d`'s value is a connection string rather than a plain database name (libpq's
/// `recognized_connection_string`).
pub fn is_connection_string(s: &str) -> bool {
    s.starts_with("postgresql://") || s.starts_with("postgres://") || s.contains('=')
}

/// Why a connection string is refused, in libpq's words where it has them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnInfoError {
    #[error("missing \"=\" after {0:?} in the connection string")]
    MissingEquals(String),
    #[error("unterminated quoted string in the connection string")]
    UnterminatedQuote,
    #[error("several hosts in one URI are not supported")]
    SeveralHosts,
    #[error("missing \"]\" in an IPv6 host address of the URI")]
    UnclosedIpv6,
    #[error("missing \"=\" in URI query parameter {0:?}")]
    QueryWithoutEquals(String),
    #[error("invalid percent-encoded token in URI: {0:?}")]
    BadPercent(String),
    #[error("forbidden value %00 in URI")]
    PercentZero,
    #[error("URI component {0:?} is not valid UTF-8")]
    NotUtf8(String),
}

/// Parses a `key=value` conninfo or a URI into keyword/value pairs in the order given.
pub fn parse(s: &str) -> Result<Vec<(String, String)>, ConnInfoError> {
    if let Some(rest) = s
        .strip_prefix("postgresql://")
        .or_else(|| s.strip_prefix("postgres://"))
    {
        parse_uri(rest)
    } else {
        parse_keyword_value(s)
    }
}

fn parse_keyword_value(s: &str) -> Result<Vec<(String, String)>, ConnInfoError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(ConnInfoError::MissingEquals(key));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(ConnInfoError::UnterminatedQuote),
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(ConnInfoError::UnterminatedQuote),
                    },
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        value.push(n);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

fn parse_uri(rest: &str) -> Result<Vec<(String, String)>, ConnInfoError> {
    let mut out = Vec::new();
    let (before_query, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.find('/') {
        Some(i) => (&before_query[..i], Some(&before_query[i + 1..])),
        None => (before_query, None),
    };
    let hostport = match authority.rsplit_once('@') {
        Some((userinfo, hp)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                out.push(("user".to_string(), percent_decode(user)?));
            }
            if let Some(p) = password {
                out.push(("password".to_string(), percent_decode(p)?));
            }
            hp
        }
        None => authority,
    };
    if !hostport.is_empty() {
        if hostport.contains(',') {
            return Err(ConnInfoError::SeveralHosts);
        }
        let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
            let (h, after) = inner.split_once(']').ok_or(ConnInfoError::UnclosedIpv6)?;
            (h, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if !host.is_empty() {
            out.push(("host".to_string(), percent_decode(host)?));
        }
        if let Some(p) = port.filter(|p| !p.is_empty()) {
            out.push(("port".to_string(), percent_decode(p)?));
        }
    }
    if let Some(db) = path.filter(|p| !p.is_empty()) {
        out.push(("dbname".to_string(), percent_decode(db)?));
    }
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| ConnInfoError::QueryWithoutEquals(pair.to_string()))?;
        out.push((percent_decode(k)?, percent_decode(v)?));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, ConnInfoError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| ConnInfoError::BadPercent(s.to_string()))?;
            if hex == 0 {
                return Err(ConnInfoError::PercentZero);
            }
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ConnInfoError::NotUtf8(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn keyword_value_strings_follow_libpq_quoting() {
        assert_eq!(
            parse("host=/tmp port = 5433 dbname='my db' password='it\\'s'").unwrap(),
            kv(&[
                ("host", "/tmp"),
                ("port", "5433"),
                ("dbname", "my db"),
                ("password", "it's")
            ])
        );
        assert_eq!(
            parse("host"),
            Err(ConnInfoError::MissingEquals("host".into()))
        );
        assert_eq!(parse("dbname='open"), Err(ConnInfoError::UnterminatedQuote));
        assert!(is_connection_string("dbname=x"));
        assert!(!is_connection_string("mydb"));
    }

    #[test]
    fn uris_decode_every_part() {
        assert_eq!(
            parse(
                "postgresql://u%40x:p%3Aw@[::1]:5444/db%20one?sslmode=disable&application_name=a"
            )
            .unwrap(),
            kv(&[
                ("user", "u@x"),
                ("password", "p:w"),
                ("host", "::1"),
                ("port", "5444"),
                ("dbname", "db one"),
                ("sslmode", "disable"),
                ("application_name", "a"),
            ])
        );
        assert_eq!(
            parse("postgres://%2Fvar%2Frun%2Fpostgresql/db").unwrap(),
            kv(&[("host", "/var/run/postgresql"), ("dbname", "db")])
        );
        assert_eq!(
            parse("postgresql:///db?host=/tmp").unwrap(),
            kv(&[("dbname", "db"), ("host", "/tmp")])
        );
        assert_eq!(
            parse("postgresql://h/db?x"),
            Err(ConnInfoError::QueryWithoutEquals("x".into()))
        );
        assert_eq!(
            parse("postgresql://h/%zz"),
            Err(ConnInfoError::BadPercent("%zz".into()))
        );
    }
}
