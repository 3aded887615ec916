//! The probe an [`S3Store`] makes when it is opened: one signed listing of at most one key
//! under the archive's prefix, whose status and S3 error code (the `<Code>` of the error document, the
//! protocol's typed error) say precisely what is wrong before any work starts: an unknown
//! access key, a secret that does not match it, access denied, a missing bucket, a wrong
//! region, an endpoint that cannot be reached. The answer's body is read only up to a bound,
//! and neither the request's signature nor any secret is ever shown.

use std::time::Duration;

use object_store::aws::AwsAuthorizer;

use super::{block, S3Store};
use crate::archive::Error;

/// What the probe learned, when it is a problem.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    UnknownKey,
    WrongSecret,
    Denied,
    NoBucket,
    WrongRegion,
    Other { status: u16, code: String },
}

/// Why the probe's request got no answer.
#[derive(Debug, thiserror::Error)]
enum Unanswered {
    #[error("cannot start an HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("cannot build a request: {0}")]
    Request(http::Error),
    #[error("cannot sign a request: {0}")]
    Sign(object_store::Error),
    /// The request failed (without its URL, which holds nothing secret but is long).
    #[error("{0}")]
    Send(reqwest::Error),
}

/// The `<Code>` of an S3 error document (ASCII by the protocol; empty when there is none or
/// it is not UTF-8).
fn error_code(body: &[u8]) -> String {
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let Some(start) = find(body, b"<Code>").map(|i| i + b"<Code>".len()) else {
        return String::new();
    };
    let rest = &body[start..];
    find(rest, b"</Code>")
        .and_then(|end| std::str::from_utf8(&rest[..end]).ok())
        .map(|code| code.trim().to_string())
        .unwrap_or_default()
}

fn classify(status: u16, code: &str) -> Option<Refusal> {
    Some(match (status, code) {
        (200..=299, _) => return None,
        (_, "InvalidAccessKeyId") => Refusal::UnknownKey,
        (_, "SignatureDoesNotMatch") => Refusal::WrongSecret,
        (_, "NoSuchBucket") => Refusal::NoBucket,
        (
            _,
            "AuthorizationHeaderMalformed"
            | "PermanentRedirect"
            | "IllegalLocationConstraintException",
        )
        | (301, _) => Refusal::WrongRegion,
        (_, "AccessDenied" | "AllAccessDisabled") | (403, _) => Refusal::Denied,
        _ => Refusal::Other {
            status,
            code: code.to_string(),
        },
    })
}

/// `s` with every byte but RFC 3986's unreserved characters (and `/` if `slash`)
/// percent-encoded.
fn encode(s: &str, slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl S3Store {
    pub(super) fn probe(&self) -> Result<(), Error> {
        let inner = self.inner.clone();
        // A listing of at most one key under the prefix: an answer about the bucket itself
        // (a GET of a key in a missing bucket may say only "no such key").
        let prefix = encode(&inner.loc.key(""), false);
        let query = format!("?list-type=2&max-keys=1&prefix={prefix}");
        let url = match &inner.endpoint_url {
            Some(base) => format!("{}/{}{query}", base.trim_end_matches('/'), inner.loc.bucket),
            None if !inner.loc.bucket.contains('.') => format!(
                "https://{}.s3.{}.amazonaws.com/{query}",
                inner.loc.bucket, inner.region
            ),
            None => format!(
                "https://s3.{}.amazonaws.com/{}{query}",
                inner.region, inner.loc.bucket
            ),
        };
        let c = &inner.credentials;
        let credential = object_store::aws::AwsCredential {
            key_id: c.access_key_id.clone(),
            secret_key: c.secret_access_key.clone(),
            token: c.session_token.clone(),
        };
        let region = inner.region.clone();
        let answer = block(async move {
            let client = reqwest::Client::builder()
                .connect_timeout(super::CONNECT_TIMEOUT)
                .timeout(Duration::from_secs(30))
                .build()
                .map_err(Unanswered::Client)?;
            // Transient answers (5xx, 429) are retried as every request is; a connection
            // refused only a few times, so that a wrong endpoint is named within a second.
            let mut attempt = 0u32;
            loop {
                let last = attempt as usize >= super::MAX_RETRIES;
                let wait = Duration::from_millis(100 << attempt.min(5)).min(Duration::from_secs(5));
                attempt += 1;
                let mut request = http::Request::builder()
                    .method(http::Method::GET)
                    .uri(&url)
                    .body(object_store::client::HttpRequestBody::empty())
                    .map_err(Unanswered::Request)?;
                AwsAuthorizer::new(&credential, "s3", &region)
                    .try_authorize(&mut request, None)
                    .map_err(Unanswered::Sign)?;
                let response = match client
                    .get(&url)
                    .headers(request.headers().clone())
                    .send()
                    .await
                {
                    Ok(r) => r,
                    Err(e) if !last && (attempt < 4 || !e.is_connect()) => {
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    Err(e) => return Err(Unanswered::Send(e.without_url())),
                };
                let status = response.status().as_u16();
                if !last && (status >= 500 || status == 429) {
                    tokio::time::sleep(wait).await;
                    continue;
                }
                let mut body = Vec::new();
                let mut stream = response.bytes_stream();
                use futures_util::StreamExt;
                while let Some(Ok(piece)) = stream.next().await {
                    body.extend_from_slice(&piece);
                    if body.len() > 64 << 10 {
                        break;
                    }
                }
                return Ok::<_, Unanswered>((status, body));
            }
        });
        let loc = &self.inner.loc;
        let fail = |problem: String| Error::Store {
            location: loc.to_string(),
            problem,
        };
        let (status, body) = answer.map_err(|e| {
            fail(format!(
                "cannot reach the endpoint {}: {e}; check AWS_ENDPOINT_URL (or the profile's \
                 endpoint_url) and that the server is running",
                self.inner.endpoint
            ))
        })?;
        let code = error_code(&body);
        let from = &self.inner.credentials_from;
        let problem = match classify(status, &code) {
            None => return Ok(()),
            Some(Refusal::UnknownKey) => format!(
                "the server does not know the access key id from {from}: check \
                 AWS_ACCESS_KEY_ID or the profile's aws_access_key_id"
            ),
            Some(Refusal::WrongSecret) => format!(
                "the secret key from {from} does not match its access key id (the server \
                 refused the signature): check AWS_SECRET_ACCESS_KEY or the profile's \
                 aws_secret_access_key"
            ),
            Some(Refusal::Denied) => format!(
                "access denied to bucket {} for the credentials from {from}: check the access \
                 key id and the secret key (some servers, Garage among them, answer a wrong \
                 one so), and that they may use the bucket (s3:ListBucket, s3:GetObject, \
                 s3:PutObject, s3:DeleteObject, s3:AbortMultipartUpload)",
                loc.bucket
            ),
            Some(Refusal::NoBucket) => format!(
                "bucket {} does not exist at {}: create it, or fix the bucket name or \
                 AWS_ENDPOINT_URL",
                loc.bucket, self.inner.endpoint
            ),
            Some(Refusal::WrongRegion) => format!(
                "bucket {} is not in region {} (HTTP {status} {code}): set AWS_REGION to the \
                 bucket's region",
                loc.bucket, self.inner.region
            ),
            Some(Refusal::Other { status, code }) => format!(
                "the server at {} answered HTTP {status} {code}: check the endpoint and the \
                 bucket",
                self.inner.endpoint
            ),
        };
        Err(fail(problem))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_error_documents_are_classified_by_code() {
        let doc = |code: &str| {
            format!("<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>x</Message></Error>")
        };
        assert_eq!(error_code(doc("NoSuchBucket").as_bytes()), "NoSuchBucket");
        assert_eq!(error_code(b"<Error></Error>"), "");
        assert_eq!(error_code(b"<Code>\xff</Code>"), "");
        assert_eq!(classify(200, ""), None);
        assert_eq!(classify(404, "NoSuchBucket"), Some(Refusal::NoBucket));
        assert_eq!(
            classify(403, "SignatureDoesNotMatch"),
            Some(Refusal::WrongSecret)
        );
        assert_eq!(
            classify(403, "InvalidAccessKeyId"),
            Some(Refusal::UnknownKey)
        );
        assert_eq!(classify(403, "AccessDenied"), Some(Refusal::Denied));
        assert_eq!(classify(403, ""), Some(Refusal::Denied));
        assert_eq!(
            classify(400, "AuthorizationHeaderMalformed"),
            Some(Refusal::WrongRegion)
        );
        assert_eq!(
            classify(500, "InternalError"),
            Some(Refusal::Other {
                status: 500,
                code: "InternalError".into()
            })
        );
    }
}
