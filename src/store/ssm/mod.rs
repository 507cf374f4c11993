//! The Parameter Store source (`--source ssm`): `SsmStore` implements
//! `SecretStore` with aws-sdk-ssm, so the tree, the cache and the writes
//! above it are the ones Secrets Manager uses. The mapping
//! (docs/parameter-store.md):
//! - parameter `/app/db/url` <-> secret name `app/db/url` (the tree's path);
//!   names without a leading `/` (flat names) are left out of listings;
//! - a version is its number stamped with its LastModifiedDate (VersionId
//!   `"3/<ms>"`, shown as `versions/3`): the numbers start again at 1 when
//!   a parameter is deleted and created anew; AWSCURRENT is the latest
//!   version, AWSPREVIOUS the one before; parameter labels are staging
//!   labels (`stages/<label>`), moved with LabelParameterVersion;
//! - metadata (DescribeParameters, GetParameterHistory without decryption)
//!   answers `describe`, so revalidation never decrypts.
//!
//! The client comes from the same loader as Secrets Manager's
//! (`aws::client::load`); errors go through the same classifier, with
//! Parameter Store's own codes first (`classify`). Writes are put.rs.

mod put;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_ssm::Client;
use aws_sdk_ssm::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ssm::types::{ParameterMetadata, ParameterStringFilter};
use futures::future::BoxFuture;

use super::aws::client::{Primed, load};
use super::aws::errors::classify_sdk;
use super::aws::{About, AwsOptions, CallFailure, CredentialsFailure, Probe};
use super::{
    Description, Label, ListedVersion, Ops, SecretBytes, SecretName, SecretStore, SecretVersion,
    Selector, Stage, StoreError, StoreErrorKind, StoreResult, VersionId,
};
use crate::stats::{ApiOp, Stats};

/// How Parameter Store is reached, and how `mkdir` + write creates a
/// parameter (`--allow-create`).
#[derive(Clone, Debug, Default)]
pub struct SsmOptions {
    pub aws: AwsOptions,
    /// The type of created parameters: `SecureString` (default), `String`
    /// or `StringList`.
    pub create_type: Option<String>,
    /// The KMS key of created SecureString parameters [default: the
    /// account's `alias/aws/ssm`].
    pub create_key_id: Option<String>,
}

pub struct SsmStore {
    client: Client,
    credentials: Option<Arc<Primed>>,
    about: About,
    create_type: aws_sdk_ssm::types::ParameterType,
    create_key_id: Option<String>,
    /// One warning for flat (non-hierarchical) names left out of listings.
    warned_flat: std::sync::atomic::AtomicBool,
    /// Where each API call is counted (each page is a call): set by the
    /// gate (`count_calls_in`), which then leaves the counting to this.
    stats: std::sync::OnceLock<Arc<Stats>>,
}

/// What the gate counts each store operation as.
pub const SSM_OPS: Ops = Ops {
    list: ApiOp::DescribeParameters,
    get: ApiOp::GetParameter,
    versions: ApiOp::GetParameterHistory,
    describe: ApiOp::DescribeParameters,
    put: ApiOp::PutParameter,
    create: ApiOp::PutParameter,
    label: ApiOp::LabelParameterVersion,
};

/// The parameter behind a tree path: `app/db/url` -> `/app/db/url`.
pub fn parameter(name: &SecretName) -> String {
    format!("/{name}")
}

/// The tree path of a parameter; None for a flat name (no leading `/`).
pub fn tree_name(parameter: &str) -> Option<SecretName> {
    parameter
        .strip_prefix('/')
        .filter(|rest| !rest.is_empty())
        .map(SecretName::new)
}

/// A version id as Parameter Store numbers versions; None: not a number
/// in its one written form (no such version: `02` or `+2` is no file name
/// of version 2). A stamped id (`3/<date>`) is version 3 too.
fn version_number(id: &VersionId) -> Option<i64> {
    let name = id.file_name();
    name.parse()
        .ok()
        .filter(|v: &i64| *v > 0 && v.to_string() == name)
}

/// A version's id: its number, stamped with its LastModifiedDate (in ms),
/// since the numbers start again at 1 when a parameter is deleted and
/// created anew: the number alone would take the new version 1 for the
/// deleted one. Unstamped only when Parameter Store gives no date.
fn version_id(number: i64, date: Option<&aws_sdk_ssm::primitives::DateTime>) -> VersionId {
    match date.and_then(|d| d.to_millis().ok()) {
        Some(ms) => VersionId::stamped(number, ms),
        None => VersionId::new(number.to_string()),
    }
}

fn to_system_time(t: Option<&aws_sdk_ssm::primitives::DateTime>) -> SystemTime {
    t.and_then(|d| SystemTime::try_from(*d).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Parameter Store's own error codes, then the shared table (throttling,
/// AccessDenied, 5xx, network).
pub(super) fn classify<E, R>(err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: super::aws::HasStatus + std::fmt::Debug + 'static,
{
    let code = err.code().map(str::to_string);
    let mut e = classify_sdk(err);
    if let Some(kind) = code.as_deref().and_then(ssm_kind) {
        e.kind = kind;
    }
    e
}

fn ssm_kind(code: &str) -> Option<StoreErrorKind> {
    Some(match code {
        "ParameterNotFound" | "ParameterVersionNotFound" => StoreErrorKind::NotFound,
        "ParameterAlreadyExists" => StoreErrorKind::ResourceExists,
        "ParameterLimitExceeded"
        | "ParameterMaxVersionLimitExceeded"
        | "ParameterVersionLabelLimitExceeded" => StoreErrorKind::LimitExceeded,
        "ValidationException"
        | "InvalidAllowedPatternException"
        | "ParameterPatternMismatchException"
        | "UnsupportedParameterType"
        | "HierarchyTypeMismatchException"
        | "HierarchyLevelLimitExceededException" => StoreErrorKind::InvalidParameter,
        "InvalidKeyId" => StoreErrorKind::DecryptionFailure,
        "TooManyUpdates" => StoreErrorKind::Throttled,
        "InternalServerError" => StoreErrorKind::Transient,
        _ => return None,
    })
}

impl SsmStore {
    /// Loads the AWS configuration and builds the client; no call is made.
    pub async fn connect(opts: &SsmOptions) -> Result<Self, String> {
        use aws_sdk_ssm::types::ParameterType;
        let create_type = match opts.create_type.as_deref() {
            None | Some("SecureString") => ParameterType::SecureString,
            Some("String") => ParameterType::String,
            Some("StringList") => ParameterType::StringList,
            Some(other) => {
                return Err(format!(
                    "ssm_create_type '{other}': use SecureString, String or StringList"
                ));
            }
        };
        let loaded = load(
            &opts.aws,
            opts.aws.ca_bundle.as_deref(),
            "ssm",
            "Parameter Store",
        )
        .await?;
        let mut builder = aws_sdk_ssm::config::Builder::from(&loaded.config);
        builder.set_credentials_provider(loaded.provider);
        Ok(Self {
            client: Client::from_conf(builder.build()),
            credentials: loaded.credentials,
            about: loaded.about,
            create_type,
            create_key_id: opts.create_key_id.clone(),
            warned_flat: Default::default(),
            stats: Default::default(),
        })
    }

    /// `result` is the answer of one call of `op`: counted (calls per API,
    /// as CloudTrail and the quotas see them), then passed on.
    fn counted<T>(&self, op: ApiOp, result: StoreResult<T>) -> StoreResult<T> {
        if let Some(stats) = self.stats.get() {
            super::gate::count(stats, op, &result);
        }
        result
    }

    /// DescribeParameters of one parameter: its type, key, tier and latest
    /// version, no value. `Err(NotFound)`: no such parameter.
    async fn metadata(&self, name: &SecretName) -> StoreResult<ParameterMetadata> {
        let filter = ParameterStringFilter::builder()
            .key("Name")
            .option("Equals")
            .values(parameter(name))
            .build()
            .map_err(|e| StoreError::new(StoreErrorKind::Other, e.to_string()))?;
        // Best effort: a page may hold fewer results than asked, even none
        // with a NextToken, so every page is read until the name is found.
        let mut pages = self
            .client
            .describe_parameters()
            .parameter_filters(filter)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let found = self
                .counted(ApiOp::DescribeParameters, page.map_err(classify))?
                .parameters
                .unwrap_or_default()
                .into_iter()
                .find(|p| p.name() == Some(parameter(name).as_str()));
            if let Some(p) = found {
                return Ok(p);
            }
        }
        Err(StoreError::not_found(name))
    }

    /// GetParameterHistory's pages (50 versions each, oldest first).
    fn history(
        &self,
        name: &SecretName,
        decrypt: bool,
    ) -> aws_sdk_ssm::operation::get_parameter_history::paginator::GetParameterHistoryPaginator
    {
        self.client
            .get_parameter_history()
            .name(parameter(name))
            .with_decryption(decrypt)
            .max_results(50)
            .into_paginator()
    }

    /// GetParameter, decrypted: the latest version, or `version`.
    async fn read(&self, name: &SecretName, version: Option<i64>) -> StoreResult<SecretVersion> {
        let selected = match version {
            Some(v) => format!("{}:{v}", parameter(name)),
            None => parameter(name),
        };
        let sent = self
            .client
            .get_parameter()
            .name(selected)
            .with_decryption(true)
            .send()
            .await;
        let out = self.counted(ApiOp::GetParameter, sent.map_err(classify))?;
        let p = out
            .parameter
            .ok_or_else(|| StoreError::new(StoreErrorKind::Other, "response without Parameter"))?;
        let id = version_id(p.version, p.last_modified_date());
        let created = to_system_time(p.last_modified_date());
        let value = SecretBytes::new(p.value.unwrap_or_default().into_bytes());
        Ok(SecretVersion::new(id, value, created))
    }
}

/// The staging labels a version shows: its parameter labels, plus
/// AWSCURRENT for the latest version and AWSPREVIOUS for the one before.
fn stages_of(version: i64, latest: i64, labels: &[String]) -> Vec<String> {
    let mut stages = labels.to_vec();
    if version == latest {
        stages.push(Stage::Current.label().into());
    }
    if version + 1 == latest {
        stages.push(Stage::Previous.label().into());
    }
    stages
}

#[async_trait]
impl SecretStore for SsmStore {
    async fn list_secrets(&self, prefix: Option<&str>) -> StoreResult<Vec<SecretName>> {
        let mut req = self.client.describe_parameters().max_results(50);
        if let Some(p) = prefix.filter(|p| !p.is_empty()) {
            // A whole path: the Path filter; part of a name: BeginsWith.
            let filter = match p.strip_suffix('/') {
                Some(path) => ParameterStringFilter::builder()
                    .key("Path")
                    .option("Recursive")
                    .values(format!("/{path}")),
                None => ParameterStringFilter::builder()
                    .key("Name")
                    .option("BeginsWith")
                    .values(format!("/{p}")),
            };
            let filter = filter
                .build()
                .map_err(|e| StoreError::new(StoreErrorKind::Other, e.to_string()))?;
            req = req.parameter_filters(filter);
        }
        let mut pages = req.into_paginator().send();
        let (mut names, mut flat) = (Vec::new(), 0usize);
        while let Some(page) = pages.next().await {
            let page = self.counted(ApiOp::DescribeParameters, page.map_err(classify))?;
            for p in page.parameters() {
                match p.name().and_then(tree_name) {
                    Some(n) if prefix.is_none_or(|pre| n.as_str().starts_with(pre)) => {
                        names.push(n)
                    }
                    Some(_) => {}
                    None => flat += 1,
                }
            }
        }
        if flat > 0
            && !self
                .warned_flat
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                parameters = flat,
                "parameters with flat names (no leading '/') are not shown: the tree shows the hierarchy"
            );
        }
        Ok(names)
    }

    async fn get_value(
        &self,
        name: &SecretName,
        selector: &Selector,
    ) -> StoreResult<Option<SecretVersion>> {
        let version = match selector {
            Selector::Stage(Stage::Current) => None,
            Selector::Stage(Stage::Previous) => {
                let latest = self.metadata(name).await?.version;
                if latest <= 1 {
                    return Ok(None);
                }
                Some(latest - 1)
            }
            Selector::Id(id) => match version_number(id) {
                Some(v) => Some(v),
                None => {
                    return Err(StoreError::new(
                        StoreErrorKind::NotFound,
                        format!("parameter {} has no version {id}", parameter(name)),
                    ));
                }
            },
        };
        let got = self.read(name, version).await?;
        // A stamped id names one version of one parameter: version 1 of a
        // parameter created anew is another version.
        if let Selector::Id(id) = selector
            && id.as_str() != id.file_name()
            && got.id != *id
        {
            return Err(StoreError::new(
                StoreErrorKind::NotFound,
                format!(
                    "parameter {} was created anew: its version {} is another version",
                    parameter(name),
                    id.file_name()
                ),
            ));
        }
        Ok(Some(got))
    }

    async fn list_version_ids(&self, name: &SecretName) -> StoreResult<Vec<VersionId>> {
        let listed = self.list_versions(name).await?;
        Ok(listed.into_iter().map(|v| v.id).collect())
    }

    /// GetParameterHistory without decryption: numbers, dates and labels.
    async fn list_versions(&self, name: &SecretName) -> StoreResult<Vec<ListedVersion>> {
        let mut pages = self.history(name, false).send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = self.counted(ApiOp::GetParameterHistory, page.map_err(classify))?;
            for h in page.parameters() {
                found.push((h.version, h.last_modified_date, h.labels().to_vec()));
            }
        }
        let latest = found.iter().map(|(v, ..)| *v).max().unwrap_or(0);
        Ok(found
            .into_iter()
            .map(|(v, date, labels)| ListedVersion {
                id: version_id(v, date.as_ref()),
                created: date.and_then(|d| SystemTime::try_from(d).ok()),
                stages: stages_of(v, latest, &labels),
            })
            .collect())
    }

    /// DescribeParameters (the latest version: revalidation, no decrypt),
    /// then GetParameterHistory without decryption for the labels: two
    /// metadata calls, no GetParameter.
    async fn describe(&self, name: &SecretName) -> StoreResult<Description> {
        let meta = self.metadata(name).await?;
        let latest = meta.version;
        let listed = self.list_versions(name).await?;
        let mut versions: Vec<(VersionId, Vec<String>)> = listed
            .into_iter()
            .filter_map(|v| {
                let n = version_number(&v.id)?;
                // A version put between the two calls is not current yet
                // for this description: the latest is DescribeParameters'.
                (n <= latest).then(|| {
                    let labels = v
                        .stages
                        .into_iter()
                        .filter(|s| !is_derived(s))
                        .collect::<Vec<_>>();
                    (v.id, stages_of(n, latest, &labels))
                })
            })
            .collect();
        if versions.is_empty() {
            versions.push((
                version_id(latest, meta.last_modified_date()),
                stages_of(latest, latest, &[]),
            ));
        }
        Ok(Description { versions })
    }

    async fn put_value(
        &self,
        name: &SecretName,
        value: &SecretBytes,
        _token: &str,
    ) -> StoreResult<VersionId> {
        self.overwrite(name, value).await
    }

    async fn create_secret(
        &self,
        name: &SecretName,
        value: &SecretBytes,
        _token: &str,
    ) -> StoreResult<VersionId> {
        self.create(name, value).await
    }

    async fn put_value_staged(
        &self,
        name: &SecretName,
        _value: &SecretBytes,
        _token: &str,
        stages: &[Label],
    ) -> StoreResult<VersionId> {
        let labels: Vec<_> = stages.iter().map(Label::as_str).collect();
        Err(unsupported(
            name,
            &format!(
                "a version labelled {} without becoming the latest (every new parameter version is the latest): write current, then label it",
                labels.join(",")
            ),
        ))
    }

    async fn update_stage(
        &self,
        name: &SecretName,
        label: &Label,
        move_to: Option<&VersionId>,
        remove_from: Option<&VersionId>,
    ) -> StoreResult<()> {
        if label.is_reserved() {
            return Err(unsupported(
                name,
                &format!(
                    "moving {label}: the latest version is current and cannot be chosen (write the value to current to make a new latest version)"
                ),
            ));
        }
        self.label(name, label, move_to, remove_from).await
    }

    fn ops(&self) -> &'static Ops {
        &SSM_OPS
    }

    /// One operation makes several calls (pages; revalidation's
    /// DescribeParameters and GetParameterHistory): each is counted here.
    fn count_calls_in(&self, stats: &Arc<Stats>) -> bool {
        let _ = self.stats.set(stats.clone());
        true
    }
}

/// AWSCURRENT and AWSPREVIOUS: derived from the version numbers, never
/// parameter labels (Parameter Store refuses labels starting with `aws`).
fn is_derived(stage: &str) -> bool {
    stage == Stage::Current.label() || stage == Stage::Previous.label()
}

/// What Parameter Store has no equivalent for: refused with EPERM, and
/// logged (the fs layer logs the errno; this line says why).
fn unsupported(name: &SecretName, what: &str) -> StoreError {
    tracing::warn!(secret = %name, "Parameter Store cannot do this: {what}");
    StoreError::new(
        StoreErrorKind::Unsupported,
        format!("Parameter Store has no equivalent: {what}"),
    )
}

impl Probe for SsmStore {
    fn about(&self) -> &About {
        &self.about
    }

    fn prime_credentials(&self) -> BoxFuture<'_, Result<String, CredentialsFailure>> {
        Box::pin(super::aws::prime(self.credentials.as_ref()))
    }

    /// GetParameter of `secret` (no decryption), or DescribeParameters with
    /// one result.
    fn probe(
        &self,
        secret: Option<&SecretName>,
        bound: Duration,
    ) -> (&'static str, BoxFuture<'_, Result<(), CallFailure>>) {
        let (retry, timeout) = super::aws::bounded(bound);
        let config = aws_sdk_ssm::config::Builder::default()
            .retry_config(retry)
            .timeout_config(timeout);
        match secret {
            Some(name) => {
                let call = self
                    .client
                    .get_parameter()
                    .name(parameter(name))
                    .with_decryption(false)
                    .customize()
                    .config_override(config)
                    .send();
                let call = async move {
                    match call.await {
                        Ok(_) => Ok(()),
                        Err(e) if e.code() == Some("ParameterNotFound") => {
                            Err(CallFailure::NotFound)
                        }
                        Err(e) => Err(super::aws::judge_call(&e)),
                    }
                };
                ("GetParameter", Box::pin(call))
            }
            None => {
                let call = self
                    .client
                    .describe_parameters()
                    .max_results(1)
                    .customize()
                    .config_override(config)
                    .send();
                let call = async move {
                    call.await
                        .map(|_| ())
                        .map_err(|e| super::aws::judge_call(&e))
                };
                ("DescribeParameters", Box::pin(call))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_names_map_to_tree_paths_and_back() {
        let n = SecretName::new("app/db/url");
        assert_eq!(parameter(&n), "/app/db/url");
        assert_eq!(tree_name("/app/db/url"), Some(n));
        assert_eq!(tree_name("flat"), None, "flat names are left out");
        assert_eq!(tree_name("/"), None);
    }

    #[test]
    fn the_latest_version_is_current_and_the_one_before_previous() {
        assert_eq!(stages_of(3, 3, &["blue".into()]), ["blue", "AWSCURRENT"]);
        assert_eq!(stages_of(2, 3, &[]), ["AWSPREVIOUS"]);
        assert!(stages_of(1, 3, &[]).is_empty());
        assert_eq!(version_number(&VersionId::new("7")), Some(7));
        assert_eq!(version_number(&VersionId::new("a-uuid")), None);
        assert_eq!(version_number(&VersionId::new("0")), None);
        assert_eq!(version_number(&VersionId::new("02")), None);
        assert_eq!(version_number(&VersionId::new("+2")), None);
        assert_eq!(version_number(&VersionId::stamped(3, 1_700_000)), Some(3));
    }

    #[test]
    fn parameter_store_codes_map_to_the_error_table() {
        use crate::error::Error;
        let errno = |code: &str| Error::from(StoreError::new(ssm_kind(code).unwrap(), "x")).errno();
        assert_eq!(errno("ParameterNotFound"), libc::ENOENT);
        assert_eq!(errno("ParameterVersionNotFound"), libc::ENOENT);
        assert_eq!(errno("ParameterMaxVersionLimitExceeded"), libc::EDQUOT);
        assert_eq!(errno("ValidationException"), libc::EINVAL);
        assert_eq!(errno("InvalidKeyId"), libc::EACCES);
        assert_eq!(errno("ParameterAlreadyExists"), libc::EINVAL);
        assert!(StoreError::new(ssm_kind("TooManyUpdates").unwrap(), "").is_transient());
        assert!(StoreError::new(ssm_kind("InternalServerError").unwrap(), "").is_transient());
        assert_eq!(ssm_kind("ThrottlingException"), None, "the shared table's");
    }
}
