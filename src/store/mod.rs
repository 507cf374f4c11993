//! The only way to reach a backend: the `SecretStore` trait, the value types it
//! speaks, and an instrumenting wrapper that counts API calls per operation.

pub mod aws;
pub mod local;

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use zeroize::Zeroizing;

use crate::stats::{ApiOp, Stats};

/// A cheaply cloned string newtype: no bare `String` doing two jobs.
macro_rules! str_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn new(s: impl Into<Arc<str>>) -> Self {
                Self(s.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }
    };
}

str_id!(
    /// A secret's name as Secrets Manager knows it (`prod/db/password`).
    SecretName
);
str_id!(
    /// A version id (a UUID in AWS and in the local store).
    VersionId
);

/// The two staging labels the tree exposes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Stage {
    Current,
    Previous,
}

impl Stage {
    pub fn label(self) -> &'static str {
        match self {
            Stage::Current => "AWSCURRENT",
            Stage::Previous => "AWSPREVIOUS",
        }
    }
}

/// Which version of a secret to read.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Selector {
    Stage(Stage),
    Id(VersionId),
}

/// A secret's bytes. Zeroed when dropped; its Debug never shows the content.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The value as SecretString when it is UTF-8, else None (SecretBinary).
    pub fn as_text(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes({} bytes)", self.0.len())
    }
}

/// One version of one secret, as read from a store.
#[derive(Clone, Debug)]
pub struct SecretVersion {
    pub id: VersionId,
    pub value: SecretBytes,
    pub created: SystemTime,
}

/// What DescribeSecret says of a secret's versions: ids and their staging
/// labels, no values (no decrypt).
#[derive(Clone, Debug, Default)]
pub struct Description {
    pub versions: Vec<(VersionId, Vec<String>)>,
}

impl Description {
    /// The version carrying a staging label, if any.
    pub fn with_stage(&self, stage: Stage) -> Option<&VersionId> {
        self.versions
            .iter()
            .find(|(_, labels)| labels.iter().any(|l| l == stage.label()))
            .map(|(id, _)| id)
    }
}

/// What can go wrong talking to a store, classified once so every layer above
/// can decide (transient or not) without looking at SDK types.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StoreErrorKind {
    NotFound,
    AccessDenied,
    DecryptionFailure,
    LimitExceeded,
    InvalidParameter,
    InvalidRequest,
    ResourceExists,
    Throttled,
    /// Timeouts, connection failures, 5xx.
    Transient,
    Other,
}

#[derive(Clone, Debug, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct StoreError {
    pub kind: StoreErrorKind,
    /// Never holds a secret value: built from error codes and service messages.
    pub message: String,
}

impl StoreError {
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
    pub fn not_found(name: &SecretName) -> Self {
        Self::new(StoreErrorKind::NotFound, format!("secret {name} not found"))
    }
    /// Errors for which the last fetched value may be served (stale-if-error).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            StoreErrorKind::Throttled | StoreErrorKind::Transient
        )
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait SecretStore: Send + Sync + 'static {
    /// Every secret whose name starts with `prefix` (all pages), not those
    /// scheduled for deletion.
    async fn list_secrets(&self, prefix: Option<&str>) -> StoreResult<Vec<SecretName>>;
    /// One version. `Ok(None)`: the secret exists but no version carries the
    /// selector (no AWSPREVIOUS yet). `Err(NotFound)`: no such secret.
    async fn get_value(
        &self,
        name: &SecretName,
        selector: &Selector,
    ) -> StoreResult<Option<SecretVersion>>;
    async fn list_version_ids(&self, name: &SecretName) -> StoreResult<Vec<VersionId>>;
    /// Which version carries which label (DescribeSecret): no value, no decrypt.
    async fn describe(&self, name: &SecretName) -> StoreResult<Description>;
    /// A new version labelled AWSCURRENT; `token` makes retries idempotent.
    async fn put_value(
        &self,
        name: &SecretName,
        value: &SecretBytes,
        token: &str,
    ) -> StoreResult<VersionId>;
    /// A new secret whose first version is `value`.
    async fn create_secret(
        &self,
        name: &SecretName,
        value: &SecretBytes,
        token: &str,
    ) -> StoreResult<VersionId>;
}

/// Counts every call and failure in `Stats` before passing it on.
pub struct Instrumented<S> {
    inner: S,
    stats: Arc<Stats>,
}

impl<S> Instrumented<S> {
    pub fn new(inner: S, stats: Arc<Stats>) -> Self {
        Self { inner, stats }
    }
    fn count<T>(&self, op: ApiOp, result: StoreResult<T>) -> StoreResult<T> {
        self.stats.api_call(op);
        if result.is_err() {
            self.stats.api_error();
        }
        result
    }
}

#[async_trait]
impl<S: SecretStore> SecretStore for Instrumented<S> {
    async fn list_secrets(&self, prefix: Option<&str>) -> StoreResult<Vec<SecretName>> {
        let r = self.inner.list_secrets(prefix).await;
        self.count(ApiOp::ListSecrets, r)
    }
    async fn get_value(
        &self,
        name: &SecretName,
        selector: &Selector,
    ) -> StoreResult<Option<SecretVersion>> {
        let r = self.inner.get_value(name, selector).await;
        self.count(ApiOp::GetSecretValue, r)
    }
    async fn list_version_ids(&self, name: &SecretName) -> StoreResult<Vec<VersionId>> {
        let r = self.inner.list_version_ids(name).await;
        self.count(ApiOp::ListSecretVersionIds, r)
    }
    async fn describe(&self, name: &SecretName) -> StoreResult<Description> {
        let r = self.inner.describe(name).await;
        self.count(ApiOp::DescribeSecret, r)
    }
    async fn put_value(
        &self,
        name: &SecretName,
        value: &SecretBytes,
        token: &str,
    ) -> StoreResult<VersionId> {
        let r = self.inner.put_value(name, value, token).await;
        self.count(ApiOp::PutSecretValue, r)
    }
    async fn create_secret(
        &self,
        name: &SecretName,
        value: &SecretBytes,
        token: &str,
    ) -> StoreResult<VersionId> {
        let r = self.inner.create_secret(name, value, token).await;
        self.count(ApiOp::CreateSecret, r)
    }
}

#[async_trait]
impl SecretStore for Arc<dyn SecretStore> {
    async fn list_secrets(&self, prefix: Option<&str>) -> StoreResult<Vec<SecretName>> {
        (**self).list_secrets(prefix).await
    }
    async fn get_value(
        &self,
        name: &SecretName,
        selector: &Selector,
    ) -> StoreResult<Option<SecretVersion>> {
        (**self).get_value(name, selector).await
    }
    async fn list_version_ids(&self, name: &SecretName) -> StoreResult<Vec<VersionId>> {
        (**self).list_version_ids(name).await
    }
    async fn describe(&self, name: &SecretName) -> StoreResult<Description> {
        (**self).describe(name).await
    }
    async fn put_value(
        &self,
        name: &SecretName,
        value: &SecretBytes,
        token: &str,
    ) -> StoreResult<VersionId> {
        (**self).put_value(name, value, token).await
    }
    async fn create_secret(
        &self,
        name: &SecretName,
        value: &SecretBytes,
        token: &str,
    ) -> StoreResult<VersionId> {
        (**self).create_secret(name, value, token).await
    }
}
