//! The AWS Secrets Manager store (aws-sdk-secretsmanager), and the one place
//! where SDK errors are classified into `StoreErrorKind`.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::primitives::Blob;
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};

use super::{
    Description, SecretBytes, SecretName, SecretStore, SecretVersion, Selector, StoreError,
    StoreErrorKind, StoreResult, VersionId,
};

/// Where to find Secrets Manager; unset fields fall back to the standard AWS
/// chain (AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL, credentials).
#[derive(Clone, Debug, Default)]
pub struct AwsOptions {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
}

/// Attempts per call (the first and two retries).
pub const MAX_ATTEMPTS: u32 = 3;

pub struct AwsStore {
    client: Client,
}

impl AwsStore {
    pub async fn connect(opts: &AwsOptions) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            // Standard retries: 3 attempts, exponential backoff with full
            // jitter (each wait drawn from 0 to the backoff). The daemon-wide
            // slow-down after throttling is Instrumented's (store/mod.rs).
            .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
            .timeout_config(
                // Bounded so that an unreachable endpoint turns into a transient
                // error (and stale-if-error) instead of a hung read.
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(5))
                    .operation_timeout(Duration::from_secs(15))
                    .build(),
            );
        if let Some(r) = &opts.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        if let Some(p) = &opts.profile {
            loader = loader.profile_name(p);
        }
        if let Some(e) = &opts.endpoint_url {
            loader = loader.endpoint_url(e);
        }
        let config = loader.load().await;
        Self {
            client: Client::new(&config),
        }
    }

    async fn secret_exists(&self, name: &SecretName) -> StoreResult<bool> {
        match self
            .client
            .describe_secret()
            .secret_id(name.as_str())
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => match classify_sdk(e) {
                err if err.kind == StoreErrorKind::NotFound => Ok(false),
                err => Err(err),
            },
        }
    }
}

/// SDK error -> store error kind. Service codes decide; HTTP 5xx and network
/// failures are transient.
fn classify_sdk<E, R>(err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata,
    R: HasStatus,
{
    match &err {
        SdkError::ServiceError(se) => classify(
            se.err().code(),
            se.err().message(),
            Some(se.raw().status_code()),
        ),
        SdkError::TimeoutError(_) => StoreError::new(StoreErrorKind::Transient, "timeout"),
        SdkError::DispatchFailure(_) => {
            StoreError::new(StoreErrorKind::Transient, "could not reach the endpoint")
        }
        SdkError::ResponseError(_) => {
            StoreError::new(StoreErrorKind::Transient, "unreadable response")
        }
        _ => StoreError::new(StoreErrorKind::Other, "request could not be built"),
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

fn to_system_time(t: Option<&aws_sdk_secretsmanager::primitives::DateTime>) -> SystemTime {
    t.and_then(|d| SystemTime::try_from(*d).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

#[async_trait]
impl SecretStore for AwsStore {
    async fn list_secrets(&self, prefix: Option<&str>) -> StoreResult<Vec<SecretName>> {
        let mut req = self.client.list_secrets().max_results(100);
        if let Some(p) = prefix.filter(|p| !p.is_empty()) {
            req = req.filters(
                Filter::builder()
                    .key(FilterNameStringType::Name)
                    .values(p)
                    .build(),
            );
        }
        let mut pages = req.into_paginator().send();
        let mut names = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(classify_sdk)?;
            for s in page.secret_list() {
                if s.deleted_date().is_some() {
                    continue;
                }
                if let Some(n) = s.name() {
                    // The service's name filter is looser than a prefix match.
                    if prefix.is_none_or(|p| n.starts_with(p)) {
                        names.push(SecretName::new(n));
                    }
                }
            }
        }
        Ok(names)
    }

    async fn get_value(
        &self,
        name: &SecretName,
        selector: &Selector,
    ) -> StoreResult<Option<SecretVersion>> {
        // Always name the stage or id: without one, a rolled-back secret can
        // answer with the wrong version.
        let req = self.client.get_secret_value().secret_id(name.as_str());
        let req = match selector {
            Selector::Stage(s) => req.version_stage(s.label()),
            Selector::Id(id) => req.version_id(id.as_str()),
        };
        let out = match req.send().await {
            Ok(out) => out,
            Err(e) => {
                let err = classify_sdk(e);
                // "No version has this label" and "no such secret" share an
                // error code; tell them apart.
                if err.kind == StoreErrorKind::NotFound
                    && matches!(selector, Selector::Stage(_))
                    && self.secret_exists(name).await?
                {
                    return Ok(None);
                }
                return Err(err);
            }
        };
        let id = out
            .version_id()
            .map(VersionId::new)
            .ok_or_else(|| StoreError::new(StoreErrorKind::Other, "response without VersionId"))?;
        let created = to_system_time(out.created_date());
        let value = match (out.secret_string, out.secret_binary) {
            (Some(s), _) => SecretBytes::new(s.into_bytes()),
            (None, Some(b)) => SecretBytes::new(b.into_inner()),
            (None, None) => SecretBytes::new(Vec::new()),
        };
        Ok(Some(SecretVersion {
            id,
            value,
            created,
            fetched: tokio::time::Instant::now(),
        }))
    }

    async fn list_version_ids(&self, name: &SecretName) -> StoreResult<Vec<VersionId>> {
        let mut pages = self
            .client
            .list_secret_version_ids()
            .secret_id(name.as_str())
            .include_deprecated(false)
            .into_paginator()
            .send();
        let mut ids = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(classify_sdk)?;
            ids.extend(
                page.versions()
                    .iter()
                    .filter_map(|v| v.version_id())
                    .map(VersionId::new),
            );
        }
        Ok(ids)
    }

    async fn describe(&self, name: &SecretName) -> StoreResult<Description> {
        let out = self
            .client
            .describe_secret()
            .secret_id(name.as_str())
            .send()
            .await
            .map_err(classify_sdk)?;
        if out.deleted_date().is_some() {
            return Err(StoreError::not_found(name));
        }
        let versions = out
            .version_ids_to_stages()
            .map(|m| {
                m.iter()
                    .map(|(id, labels)| (VersionId::new(id.as_str()), labels.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Description { versions })
    }

    async fn put_value(
        &self,
        name: &SecretName,
        value: &SecretBytes,
        token: &str,
    ) -> StoreResult<VersionId> {
        // The token is set explicitly so the SDK's own retries reuse it: a
        // lost response cannot create a second version.
        let req = self
            .client
            .put_secret_value()
            .secret_id(name.as_str())
            .client_request_token(token);
        let req = match value.as_text() {
            Some(text) => req.secret_string(text),
            None => req.secret_binary(Blob::new(value.as_bytes())),
        };
        let out = req.send().await.map_err(classify_sdk)?;
        Ok(VersionId::new(out.version_id().unwrap_or(token)))
    }

    async fn create_secret(
        &self,
        name: &SecretName,
        value: &SecretBytes,
        token: &str,
    ) -> StoreResult<VersionId> {
        let req = self
            .client
            .create_secret()
            .name(name.as_str())
            .client_request_token(token);
        let req = match value.as_text() {
            Some(text) => req.secret_string(text),
            None => req.secret_binary(Blob::new(value.as_bytes())),
        };
        let out = req.send().await.map_err(classify_sdk)?;
        Ok(VersionId::new(out.version_id().unwrap_or(token)))
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
}
