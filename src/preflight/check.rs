//! The start-up check itself: the order and bounds of its steps (the
//! region, the credentials chain within 3 s, then one call with no retry
//! within 3 s) and what it found (`Check`), from which `verdict` decides
//! whether the daemon mounts. The calls are the store's (`Probe::probe`).

use std::time::{Duration, Instant};

use crate::store::SecretName;
use crate::store::aws::{CallFailure, CredentialsFailure, Probe};

/// The start-up check's bounds: the credentials chain, then one call with
/// no retry.
pub const CHECK_CREDENTIALS_BOUND: Duration = Duration::from_secs(3);
pub const CHECK_CALL_BOUND: Duration = Duration::from_secs(3);

/// What the start-up check found (`verdict` decides what follows).
#[derive(Debug, PartialEq)]
pub enum Check {
    /// The call succeeded (or named a missing secret: it was authenticated
    /// and authorised all the same).
    Ok {
        action: &'static str,
        source: String,
        elapsed: Duration,
    },
    NoRegion,
    /// The credentials chain gave nothing, or is misconfigured: its cause.
    NoCredentials(String),
    /// The credentials chain did not answer within this bound.
    CredentialsTimedOut(Duration),
    /// The API refused the credentials themselves.
    Rejected {
        code: String,
        message: String,
        source: String,
    },
    /// The credentials work; this principal may not make the call.
    Denied {
        action: &'static str,
        message: String,
    },
    /// Another answer from the service (throttled, 5xx...): it is there.
    Answered {
        action: &'static str,
        text: String,
    },
    /// The endpoint's certificate did not verify.
    Certificate(String),
    /// Another TLS failure (not TLS at all, a protocol mismatch).
    Tls(String),
    /// No answer: DNS, connection refused, timeout.
    Unreachable(String),
}

/// The start-up check: the credentials chain (bounded), then one cheap
/// authenticated call with no retry (bounded): DescribeSecret of `secret`,
/// or ListSecrets with one result.
pub async fn check(store: &dyn Probe, secret: Option<&SecretName>) -> Check {
    let started = Instant::now();
    if store.about().region.is_none() {
        return Check::NoRegion;
    }
    let credentials = tokio::time::timeout(CHECK_CREDENTIALS_BOUND, store.prime_credentials());
    let source = match credentials.await {
        Err(_) => return Check::CredentialsTimedOut(CHECK_CREDENTIALS_BOUND),
        Ok(Err(failure)) => return credentials_failed(failure),
        Ok(Ok(source)) => source,
    };
    // One call, whichever it is, under one bound.
    let (action, call) = store.probe(secret, CHECK_CALL_BOUND);
    let result = tokio::time::timeout(CHECK_CALL_BOUND + Duration::from_millis(500), call).await;
    let elapsed = started.elapsed();
    match result {
        Err(_) => Check::Unreachable(format!("no answer within {} s", CHECK_CALL_BOUND.as_secs())),
        Ok(Ok(())) => Check::Ok {
            action,
            source,
            elapsed,
        },
        Ok(Err(CallFailure::Rejected { code, message })) => Check::Rejected {
            code,
            message,
            source,
        },
        Ok(Err(CallFailure::Denied(message))) => Check::Denied { action, message },
        Ok(Err(CallFailure::NotFound)) => Check::Ok {
            action,
            source,
            elapsed,
        },
        Ok(Err(CallFailure::Answered(text))) => Check::Answered { action, text },
        Ok(Err(CallFailure::Credentials(text))) => Check::NoCredentials(text),
        Ok(Err(CallFailure::Tls(text))) => Check::Tls(text),
        Ok(Err(CallFailure::Certificate(text))) => Check::Certificate(text),
        Ok(Err(CallFailure::Unreachable(text))) => Check::Unreachable(text),
    }
}

/// A credentials chain that gave nothing, as the check reports it.
fn credentials_failed(failure: CredentialsFailure) -> Check {
    match failure {
        CredentialsFailure::Missing(cause) => Check::NoCredentials(cause),
        CredentialsFailure::TimedOut => Check::CredentialsTimedOut(CHECK_CREDENTIALS_BOUND),
        CredentialsFailure::Unreachable(cause) => Check::Unreachable(cause),
        CredentialsFailure::Certificate(cause) => Check::Certificate(cause),
    }
}
