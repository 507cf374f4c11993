//! Every SDK error judged in one place: for reads and writes, the error
//! table of PRODUCT.md (service codes, HTTP 5xx, network and TLS failures)
//! into `StoreErrorKind`, with one test per row; for the start-up check, a
//! failed call or credentials chain into `CallFailure` or
//! `CredentialsFailure`. Messages keep the real cause, on one line.

use std::error::Error as StdError;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};

use crate::store::{StoreError, StoreErrorKind};

/// What an error's chain of causes says went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The credentials provider (the chain found nothing, or failed).
    Credentials,
    /// TLS: the server's certificate did not verify.
    Certificate,
    /// TLS: another handshake failure.
    Tls,
    Timeout,
    /// DNS, connection refused or reset, no route.
    Network,
    Other,
}

/// An error and its causes, outermost first. An io::Error shows its inner
/// error but gives that error's source, not the error itself, as its
/// source: the walk steps into the inner error instead.
fn chain<'a>(err: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut all = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        all.push(e);
        cur = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => e.source(),
        };
    }
    all
}

/// The first telling cause in the chain.
pub fn cause(err: &(dyn StdError + 'static)) -> Cause {
    let mut found = Cause::Other;
    for e in chain(err) {
        if e.downcast_ref::<CredentialsError>().is_some() {
            return Cause::Credentials;
        }
        match e.downcast_ref::<rustls::Error>() {
            Some(rustls::Error::InvalidCertificate(_)) => return Cause::Certificate,
            Some(_) => return Cause::Tls,
            None => {}
        }
        if let Some(c) = e.downcast_ref::<aws_sdk_secretsmanager::error::ConnectorError>() {
            if c.is_timeout() {
                found = Cause::Timeout;
            } else if c.is_io() && found == Cause::Other {
                found = Cause::Network;
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                found = Cause::Timeout;
            } else if found == Cause::Other {
                found = Cause::Network;
            }
        }
        let text = e.to_string();
        if text.contains("dns error") || text.contains("lookup address") {
            found = Cause::Network;
        }
    }
    if found == Cause::Other && err.to_string().contains("timeout") {
        return Cause::Timeout;
    }
    found
}

/// An error and its causes on one line, outermost first ("a: b: c"); a
/// cause whose text an outer one already shows is left out, and so are the
/// SDK's generic layers.
pub fn one_line(err: &(dyn StdError + 'static)) -> String {
    const GENERIC: [&str; 5] = ["dispatch failure", "io error", "other", "timeout", ""];
    let mut parts: Vec<String> = Vec::new();
    for e in chain(err) {
        let text = e
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if !GENERIC.contains(&text.as_str()) && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    if parts.is_empty() {
        return err.to_string();
    }
    parts.join(": ")
}

/// The hint a TLS failure's log line carries.
pub const TLS_HINT: &str = "if a gateway inspects TLS, give its CA certificate in PEM with --ca-bundle, AWS_CA_BUNDLE or ca_bundle in the AWS profile";

/// SDK error -> store error kind. Service codes decide; HTTP 5xx and network
/// failures are transient. Messages keep the real cause, on one line.
pub(in crate::store) fn classify_sdk<E, R>(err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + StdError + 'static,
    R: HasStatus + std::fmt::Debug + 'static,
{
    match &err {
        SdkError::ServiceError(se) => classify(
            se.err().code(),
            se.err().message(),
            Some(se.raw().status_code()),
        ),
        SdkError::TimeoutError(_) => StoreError::new(
            StoreErrorKind::Transient,
            format!("timeout: {}", one_line(&err)),
        ),
        SdkError::DispatchFailure(_) => {
            let text = one_line(&err);
            let message = match cause(&err) {
                Cause::Credentials => format!("no credentials: {text}"),
                Cause::Certificate => format!("TLS certificate not trusted: {text} ({TLS_HINT})"),
                Cause::Tls => format!("TLS failure: {text}"),
                Cause::Timeout => format!("timeout: {text}"),
                _ => format!("could not reach the endpoint: {text}"),
            };
            StoreError::new(StoreErrorKind::Transient, message)
        }
        // The body is not quoted: it could hold a value.
        SdkError::ResponseError(_) => {
            StoreError::new(StoreErrorKind::Transient, "unreadable response")
        }
        _ => StoreError::new(
            StoreErrorKind::Other,
            format!("request could not be built: {}", one_line(&err)),
        ),
    }
}

pub trait HasStatus {
    fn status_code(&self) -> u16;
}

impl HasStatus for aws_sdk_secretsmanager::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// The error table of PRODUCT.md, from the service's error code.
pub fn classify(code: Option<&str>, message: Option<&str>, status: Option<u16>) -> StoreError {
    let msg = message.unwrap_or("");
    let kind = match code.unwrap_or("") {
        "ResourceNotFoundException" => StoreErrorKind::NotFound,
        "AccessDeniedException" | "AccessDenied" => StoreErrorKind::AccessDenied,
        "DecryptionFailure" => StoreErrorKind::DecryptionFailure,
        "LimitExceededException" => StoreErrorKind::LimitExceeded,
        "InvalidParameterException" => StoreErrorKind::InvalidParameter,
        // A secret scheduled for deletion answers InvalidRequest: it is gone.
        "InvalidRequestException" if msg.contains("deleted") || msg.contains("deletion") => {
            StoreErrorKind::NotFound
        }
        "InvalidRequestException" => StoreErrorKind::InvalidRequest,
        "ResourceExistsException" => StoreErrorKind::ResourceExists,
        "ThrottlingException" | "TooManyRequestsException" | "RequestLimitExceeded" => {
            StoreErrorKind::Throttled
        }
        "InternalServiceError" | "InternalFailure" | "ServiceUnavailable" => {
            StoreErrorKind::Transient
        }
        _ if status.is_some_and(|s| s >= 500) => StoreErrorKind::Transient,
        _ => StoreErrorKind::Other,
    };
    let text = match code {
        Some(c) => format!("{c}: {msg}"),
        None => format!("HTTP {}: {msg}", status.unwrap_or(0)),
    };
    StoreError::new(kind, text)
}

/// A failed call, as the start-up check sees it.
#[derive(Debug, PartialEq)]
pub enum CallFailure {
    /// The API refused the credentials themselves (`REJECTED_CREDENTIALS`).
    Rejected { code: String, message: String },
    /// The credentials work; this principal may not make the call.
    Denied(String),
    /// The call named a missing secret: authenticated and authorised.
    NotFound,
    /// Another answer from the service (throttled, 5xx...): it is there.
    Answered(String),
    /// The client's credentials chain gave nothing.
    Credentials(String),
    /// The endpoint's certificate did not verify.
    Certificate(String),
    /// Another TLS failure (not TLS at all, a protocol mismatch).
    Tls(String),
    /// No answer: DNS, connection refused, timeout.
    Unreachable(String),
}

/// Error codes with which the API refuses the credentials (not the action).
pub const REJECTED_CREDENTIALS: [&str; 10] = [
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "ExpiredTokenException",
    "ExpiredToken",
    "IncompleteSignature",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "MissingAuthenticationToken",
    "InvalidAccessKeyId",
    "AuthFailure",
];

pub(in crate::store) fn judge_call<E, R>(err: &SdkError<E, R>) -> CallFailure
where
    E: ProvideErrorMetadata + StdError + 'static,
    R: HasStatus + std::fmt::Debug + 'static,
{
    match err {
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("").to_string();
            let message = se.err().message().unwrap_or("").to_string();
            let text = format!("{code}: {message}");
            if REJECTED_CREDENTIALS.contains(&code.as_str()) {
                CallFailure::Rejected { code, message }
            } else {
                match classify(Some(&code), Some(&message), Some(se.raw().status_code())).kind {
                    StoreErrorKind::AccessDenied => CallFailure::Denied(text),
                    StoreErrorKind::NotFound => CallFailure::NotFound,
                    _ if code.is_empty() => {
                        CallFailure::Answered(format!("HTTP {}", se.raw().status_code()))
                    }
                    _ => CallFailure::Answered(text),
                }
            }
        }
        SdkError::ResponseError(_) => CallFailure::Answered("unreadable response".into()),
        _ => match cause(err) {
            Cause::Credentials => CallFailure::Credentials(one_line(err)),
            Cause::Certificate => CallFailure::Certificate(one_line(err)),
            Cause::Tls => CallFailure::Tls(one_line(err)),
            _ => CallFailure::Unreachable(one_line(err)),
        },
    }
}

/// Why the credentials chain gave nothing, as the start-up check sees it.
#[derive(Debug, PartialEq)]
pub enum CredentialsFailure {
    /// No source had credentials, or one is misconfigured: its cause.
    Missing(String),
    /// A source timed out on its own.
    TimedOut,
    /// A source that calls a service (AssumeRole, SSO, web identity) could
    /// not reach it: the network, not the configuration.
    Unreachable(String),
    /// That service's certificate did not verify.
    Certificate(String),
}

pub(in crate::store) fn judge_credentials(e: &CredentialsError) -> CredentialsFailure {
    match e {
        CredentialsError::ProviderTimedOut(_) => CredentialsFailure::TimedOut,
        CredentialsError::ProviderError(_) | CredentialsError::Unhandled(_)
            if matches!(cause(e), Cause::Network | Cause::Timeout) =>
        {
            CredentialsFailure::Unreachable(format!("loading credentials: {}", one_line(e)))
        }
        CredentialsError::ProviderError(_) | CredentialsError::Unhandled(_)
            if cause(e) == Cause::Certificate =>
        {
            CredentialsFailure::Certificate(one_line(e))
        }
        _ => CredentialsFailure::Missing(one_line(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(code: &str, msg: &str, status: u16) -> StoreErrorKind {
        classify(Some(code), Some(msg), Some(status)).kind
    }

    #[test]
    fn error_table_rows_map_to_their_kinds() {
        use crate::error::Error;
        let errno = |code: &str, msg: &str, status: u16| {
            Error::from(classify(Some(code), Some(msg), Some(status))).errno()
        };
        // secret or version does not exist, or is scheduled for deletion -> ENOENT
        assert_eq!(errno("ResourceNotFoundException", "x", 400), libc::ENOENT);
        assert_eq!(
            errno(
                "InvalidRequestException",
                "You can't perform this operation on the secret because it was marked for deletion.",
                400
            ),
            libc::ENOENT
        );
        assert_eq!(
            errno(
                "InvalidRequestException",
                "secret is currently marked deleted",
                400
            ),
            libc::ENOENT
        );
        // AccessDenied, KMS DecryptionFailure -> EACCES
        assert_eq!(errno("AccessDeniedException", "no", 400), libc::EACCES);
        assert_eq!(errno("DecryptionFailure", "kms", 400), libc::EACCES);
        // version quota -> EDQUOT
        assert_eq!(errno("LimitExceededException", "quota", 400), libc::EDQUOT);
        // invalid value -> EINVAL
        assert_eq!(errno("InvalidParameterException", "bad", 400), libc::EINVAL);
        // network failure or 5xx with no cached value -> EIO
        assert_eq!(errno("InternalServiceError", "", 500), libc::EIO);
        assert_eq!(errno("Whatever", "", 503), libc::EIO);
        assert_eq!(errno("ThrottlingException", "slow down", 400), libc::EIO);
    }

    #[test]
    fn transient_kinds_are_the_ones_stale_if_error_covers() {
        assert!(classify(Some("ThrottlingException"), None, Some(400)).is_transient());
        assert!(classify(None, None, Some(502)).is_transient());
        assert!(!classify(Some("AccessDeniedException"), None, Some(400)).is_transient());
        assert!(!classify(Some("ResourceNotFoundException"), None, Some(404)).is_transient());
        assert_eq!(
            kind("ResourceExistsException", "", 400),
            StoreErrorKind::ResourceExists
        );
    }

    /// "outer: inner" errors, as hyper and the SDK nest them.
    #[derive(Debug)]
    struct Layer(&'static str, Box<dyn StdError + Send + Sync>);
    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl StdError for Layer {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&*self.1)
        }
    }

    #[test]
    fn error_chains_become_one_line_with_their_real_cause() {
        use std::io::{Error as IoError, ErrorKind};
        let refused = Layer(
            "client error (Connect)",
            Box::new(Layer(
                "tcp connect error",
                Box::new(IoError::new(
                    ErrorKind::ConnectionRefused,
                    "Connection refused (os error 111)",
                )),
            )),
        );
        assert_eq!(
            one_line(&refused),
            "client error (Connect): tcp connect error: Connection refused (os error 111)"
        );
        assert_eq!(cause(&refused), Cause::Network);

        // tokio-rustls hands a rustls error inside an io::Error, which
        // does not give it as its source; the SDK may wrap it once more.
        let cert = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped = Layer(
            "client error (Connect)",
            Box::new(IoError::other(IoError::new(ErrorKind::InvalidData, cert))),
        );
        assert_eq!(cause(&wrapped), Cause::Certificate);
        let line = one_line(&wrapped);
        assert!(
            line.contains("UnknownIssuer") && !line.contains('\n'),
            "{line}"
        );
        let proto = Layer(
            "client error (Connect)",
            Box::new(IoError::new(
                ErrorKind::InvalidData,
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
            )),
        );
        assert_eq!(cause(&proto), Cause::Tls);

        let creds = Layer(
            "dispatch failure",
            Box::new(CredentialsError::not_loaded("no providers in chain")),
        );
        assert_eq!(cause(&creds), Cause::Credentials);
        assert_eq!(
            one_line(&creds),
            "the credential provider was not enabled: no providers in chain"
        );
        let multi = IoError::other("first line\n  second line");
        assert_eq!(one_line(&multi), "first line second line");
    }
}
