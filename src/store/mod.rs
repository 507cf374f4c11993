//! The only way to reach a backend: the `SecretStore` trait and the value
//! types it speaks (secret names, version ids, staging labels, values that
//! zero themselves, errors classified once into `StoreErrorKind`).
//!
//! The boundary: the cache and the filesystem above see only these types.
//! A backend is one submodule that implements `SecretStore` and classifies
//! its own failures into `StoreErrorKind`; its client, credentials, TLS and
//! SDK types stay inside it (`aws/`: Secrets Manager through
//! aws-sdk-secretsmanager; `local.rs`: a directory). Version ids and
//! staging labels are part of the trait because the tree shows them
//! (`versions/`, `stages/`); a backend without labels keeps the trait's
//! default answers. `gate.rs` wraps whichever backend runs, so a second one
//! (Parameter Store, `ssm/`) is a new module here with its tests, plus the
//! places that choose a source (the options in config/, `open_store` in
//! daemon.rs) and the names of its API operations (`Ops`, stats.rs).

pub mod aws;
mod gate;
pub mod local;
pub mod ssm;

pub use gate::{BACKOFF_MAX, BACKOFF_START, DEFAULT_MAX_CALLS, Instrumented};

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use zeroize::Zeroizing;

use crate::stats::ApiOp;

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
str_id!(
    /// A staging label (`AWSCURRENT`, `AWSPENDING`, a custom one), as
    /// `stages/<label>` shows it; built through `Label::parse`.
    Label
);

impl VersionId {
    /// The id of version `number` of a store that numbers versions and may
    /// number them again (Parameter Store starts again at 1 when a
    /// parameter is deleted and created anew): `stamp` (the version's
    /// date) tells two versions of one number apart. `versions/` shows the
    /// number alone (`file_name`); a file name never holds the `/`.
    pub fn stamped(number: i64, stamp: impl fmt::Display) -> Self {
        Self::new(format!("{number}/{stamp}"))
    }

    /// The name `versions/` shows: the whole id, or a stamped id's number.
    pub fn file_name(&self) -> &str {
        self.as_str().split('/').next().unwrap_or_default()
    }

    /// Whether `self` is a version numbered again: both ids stamped, its
    /// number no higher than `older`'s, and another version (the secret was
    /// deleted and created anew since `older`).
    pub fn renumbers(&self, older: &VersionId) -> bool {
        let number = |id: &VersionId| {
            let (n, _) = id.as_str().split_once('/')?;
            n.parse::<i64>().ok()
        };
        match (number(self), number(older)) {
            (Some(new), Some(old)) => new <= old && self != older,
            _ => false,
        }
    }
}

/// The API reference's bound on a staging label (VersionStage).
pub const MAX_LABEL_CHARS: usize = 256;

impl Label {
    /// A label Secrets Manager accepts: 1 to 256 characters.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        match s.chars().count() {
            0 => Err("a staging label cannot be empty"),
            n if n > MAX_LABEL_CHARS => Err("a staging label has at most 256 characters"),
            _ => Ok(Self::new(s)),
        }
    }

    pub fn of(stage: Stage) -> Self {
        Self::new(stage.label())
    }

    /// AWSCURRENT or AWSPREVIOUS: moved by Secrets Manager itself, never
    /// set by a staged put.
    pub fn is_reserved(&self) -> bool {
        [Stage::Current, Stage::Previous]
            .iter()
            .any(|s| s.label() == self.as_str())
    }
}

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
/// It also knows how it was (or is to be) stored: SecretBinary, or
/// SecretString when UTF-8 (see `stored_as_text`). Two values are equal
/// when their bytes are.
#[derive(Clone)]
pub struct SecretBytes {
    bytes: Zeroizing<Vec<u8>>,
    binary: bool,
}

impl PartialEq for SecretBytes {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}
impl Eq for SecretBytes {}

impl SecretBytes {
    /// Bytes stored as SecretString when they are UTF-8, else as SecretBinary.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self {
            bytes: Zeroizing::new(bytes),
            binary: false,
        }
    }
    /// Bytes stored as SecretBinary, whatever they hold.
    pub fn binary(bytes: Vec<u8>) -> Self {
        Self {
            bytes: Zeroizing::new(bytes),
            binary: true,
        }
    }
    /// The same kind of value as `self` (a binary secret stays binary).
    pub fn of_kind(&self, bytes: Vec<u8>) -> Self {
        Self {
            bytes: Zeroizing::new(bytes),
            binary: self.binary,
        }
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    /// The value as text when it is UTF-8 (whichever way it is stored).
    pub fn as_text(&self) -> Option<&str> {
        std::str::from_utf8(&self.bytes).ok()
    }
    /// The value as SecretString, or None: SecretBinary.
    pub fn stored_as_text(&self) -> Option<&str> {
        if self.binary { None } else { self.as_text() }
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes({} bytes)", self.bytes.len())
    }
}

/// One version of one secret, as read from a store.
#[derive(Clone, Debug)]
pub struct SecretVersion {
    pub id: VersionId,
    pub value: SecretBytes,
    pub created: SystemTime,
    /// When this copy was read from the store (or written to it).
    pub fetched: tokio::time::Instant,
    /// Where the members of the value's JSON object are, built at first
    /// use (json/) and gone with the version.
    json: std::sync::OnceLock<Option<Arc<crate::jsonobj::Index>>>,
}

impl SecretVersion {
    /// A version read (or written) now.
    pub fn new(id: VersionId, value: SecretBytes, created: SystemTime) -> Self {
        Self {
            id,
            value,
            created,
            fetched: tokio::time::Instant::now(),
            json: std::sync::OnceLock::new(),
        }
    }

    /// The value's JSON object members, when it is a JSON object.
    pub fn json(&self) -> Option<&crate::jsonobj::Index> {
        self.json
            .get_or_init(|| crate::jsonobj::Index::build(self.value.as_bytes()).map(Arc::new))
            .as_deref()
    }
}

/// One version as ListSecretVersionIds lists it: no value, no decrypt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedVersion {
    pub id: VersionId,
    /// CreatedDate; None from a store that does not say (test doubles).
    pub created: Option<SystemTime>,
    /// Its staging labels.
    pub stages: Vec<String>,
}

impl ListedVersion {
    /// A version known by its id alone.
    pub fn id_only(id: VersionId) -> Self {
        Self {
            id,
            created: None,
            stages: Vec::new(),
        }
    }
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

    /// The version carrying any staging label, if any.
    pub fn with_label(&self, label: &Label) -> Option<&VersionId> {
        self.versions
            .iter()
            .find(|(_, labels)| labels.iter().any(|l| l == label.as_str()))
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
    /// Over the backend's own size limit (Parameter Store's tiers).
    TooLarge,
    /// The backend has no equivalent of the operation (Parameter Store:
    /// promotion, a labelled version that is not the latest).
    Unsupported,
    Other,
}

/// The API operation each store operation is counted as (stats, metrics).
#[derive(Clone, Copy, Debug)]
pub struct Ops {
    pub list: ApiOp,
    pub get: ApiOp,
    pub versions: ApiOp,
    pub describe: ApiOp,
    pub put: ApiOp,
    pub create: ApiOp,
    pub label: ApiOp,
}

/// Secrets Manager's operations (and the local store's, which mimics it).
pub const SECRETS_MANAGER_OPS: Ops = Ops {
    list: ApiOp::ListSecrets,
    get: ApiOp::GetSecretValue,
    versions: ApiOp::ListSecretVersionIds,
    describe: ApiOp::DescribeSecret,
    put: ApiOp::PutSecretValue,
    create: ApiOp::CreateSecret,
    label: ApiOp::UpdateSecretVersionStage,
};

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
    /// The same listing with each version's CreatedDate and staging labels
    /// (`versions/` entries' mtime and `user.secretsfs.stages`). A store
    /// that lists ids only gives no dates and no labels.
    async fn list_versions(&self, name: &SecretName) -> StoreResult<Vec<ListedVersion>> {
        let ids = self.list_version_ids(name).await?;
        Ok(ids.into_iter().map(ListedVersion::id_only).collect())
    }
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
    /// A new version carrying exactly `stages` (PutSecretValue with
    /// VersionStages): the labels move to it from other versions, and
    /// AWSCURRENT stays where it is unless it is one of them.
    async fn put_value_staged(
        &self,
        name: &SecretName,
        value: &SecretBytes,
        token: &str,
        stages: &[Label],
    ) -> StoreResult<VersionId> {
        let _ = (value, token, stages);
        Err(unsupported(name, "PutSecretValue with VersionStages"))
    }
    /// UpdateSecretVersionStage: `label` moves to `move_to` (None: only
    /// removed) from `remove_from` (which must be the version carrying it,
    /// if any does). Moving AWSCURRENT moves AWSPREVIOUS to the version it
    /// left.
    async fn update_stage(
        &self,
        name: &SecretName,
        label: &Label,
        move_to: Option<&VersionId>,
        remove_from: Option<&VersionId>,
    ) -> StoreResult<()> {
        let _ = (label, move_to, remove_from);
        Err(unsupported(name, "UpdateSecretVersionStage"))
    }
    /// A write of `name` begins (before it reads what it compares
    /// against): a store whose reads may be answered by a read-only
    /// replica checks that the region writes go to answers (else the
    /// write fails now), and keeps `name`'s reads there until the returned
    /// guard is dropped. Other stores: nothing to do.
    async fn begin_write(&self, name: &SecretName) -> StoreResult<Option<WriteGuard>> {
        let _ = name;
        Ok(None)
    }
    /// The API operation each method is counted as.
    fn ops(&self) -> &'static Ops {
        &SECRETS_MANAGER_OPS
    }
    /// A store whose operations may make several API calls counts each
    /// call in `stats` itself (true); otherwise (false) the gate counts
    /// each operation once, under `ops()`.
    fn count_calls_in(&self, stats: &Arc<crate::stats::Stats>) -> bool {
        let _ = stats;
        false
    }
}

/// Held while a write is in progress (`SecretStore::begin_write`).
pub type WriteGuard = Box<dyn std::any::Any + Send + Sync>;

/// The answer of a store (a test double) that does not implement staging
/// labels; the real stores and the wrappers all do.
fn unsupported(name: &SecretName, op: &str) -> StoreError {
    StoreError::new(
        StoreErrorKind::Other,
        format!("{op} is not supported by this store (secret {name})"),
    )
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
    async fn list_versions(&self, name: &SecretName) -> StoreResult<Vec<ListedVersion>> {
        (**self).list_versions(name).await
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
    async fn put_value_staged(
        &self,
        name: &SecretName,
        value: &SecretBytes,
        token: &str,
        stages: &[Label],
    ) -> StoreResult<VersionId> {
        (**self).put_value_staged(name, value, token, stages).await
    }
    async fn update_stage(
        &self,
        name: &SecretName,
        label: &Label,
        move_to: Option<&VersionId>,
        remove_from: Option<&VersionId>,
    ) -> StoreResult<()> {
        (**self)
            .update_stage(name, label, move_to, remove_from)
            .await
    }
    async fn begin_write(&self, name: &SecretName) -> StoreResult<Option<WriteGuard>> {
        (**self).begin_write(name).await
    }
    fn ops(&self) -> &'static Ops {
        (**self).ops()
    }
    fn count_calls_in(&self, stats: &Arc<crate::stats::Stats>) -> bool {
        (**self).count_calls_in(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_one_to_256_characters() {
        assert!(Label::parse("").is_err());
        assert!(Label::parse("AWSPENDING").is_ok());
        assert!(
            Label::parse(&"é".repeat(256)).is_ok(),
            "characters, not bytes"
        );
        assert!(Label::parse(&"x".repeat(257)).is_err());
        assert!(Label::of(Stage::Current).is_reserved());
        assert!(Label::of(Stage::Previous).is_reserved());
        assert!(!Label::parse("AWSPENDING").unwrap().is_reserved());
    }

    #[test]
    fn a_stamped_id_shows_its_number_and_knows_a_renumbering() {
        let (a1, b1) = (VersionId::stamped(1, 100), VersionId::stamped(1, 200));
        assert_eq!(a1.file_name(), "1");
        assert_eq!(VersionId::new("a-uuid").file_name(), "a-uuid");
        assert!(b1.renumbers(&a1), "1 again, another date");
        assert!(!a1.renumbers(&a1));
        assert!(
            !VersionId::stamped(2, 300).renumbers(&a1),
            "the next version"
        );
        assert!(VersionId::stamped(2, 300).renumbers(&VersionId::stamped(3, 50)));
        assert!(!VersionId::new("b").renumbers(&VersionId::new("a")));
    }

    #[test]
    fn a_description_finds_any_label() {
        let d = Description {
            versions: vec![
                (VersionId::new("a"), vec!["AWSCURRENT".into()]),
                (
                    VersionId::new("b"),
                    vec!["AWSPENDING".into(), "blue".into()],
                ),
            ],
        };
        let blue = Label::parse("blue").unwrap();
        assert_eq!(d.with_label(&blue), Some(&VersionId::new("b")));
        assert_eq!(
            d.with_label(&Label::of(Stage::Current)),
            Some(&VersionId::new("a"))
        );
        assert_eq!(d.with_label(&Label::parse("green").unwrap()), None);
    }
}
