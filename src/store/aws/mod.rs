//! The AWS Secrets Manager store: `AwsStore` implements `SecretStore` with
//! aws-sdk-secretsmanager, always naming the stage or version it reads and
//! making every put idempotent with its client request token.
//!
//! Nothing of the SDK leaves this module: `client.rs` sets up the client
//! (configuration chain, retries, TLS with a CA bundle, primed credentials),
//! `errors.rs` judges every SDK error (into `StoreErrorKind` for reads and
//! writes, into `CallFailure` for the start-up check), `probe.rs` makes the
//! start-up check's calls, which `preflight/` orders and judges;
//! `regions.rs` puts one client per region behind the trait (failover
//! regions, secrets by ARN, `arn.rs`).

mod arn;
pub(super) mod client;
mod connect;
pub(super) mod errors;
mod options;
mod probe;
mod regions;

pub use arn::Arn;
pub use client::{MAX_ATTEMPTS, QUICK_ATTEMPT, read_ca_bundle};
pub(in crate::store) use errors::judge_call;
pub use errors::{CallFailure, Cause, CredentialsFailure, REJECTED_CREDENTIALS, TLS_HINT};
pub use errors::{HasStatus, cause, classify, one_line};
pub use options::{About, AwsOptions, RegionSpec};
pub use probe::Probe;
pub(in crate::store) use probe::{bounded, prime};
pub use regions::{FAILOVER_AFTER, PROBE_FIRST, PROBE_MAX, Regions};

use std::time::SystemTime;

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::primitives::Blob;
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType, SecretVersionsListEntry};

use super::{
    Description, Label, ListedVersion, SecretBytes, SecretName, SecretStore, SecretVersion,
    Selector, StoreError, StoreErrorKind, StoreResult, VersionId,
};
use client::Primed;
use errors::classify_sdk;

pub struct AwsStore {
    client: Client,
    /// The configured credentials chain, primed by the start-up check.
    credentials: Option<std::sync::Arc<Primed>>,
    /// What the start-up check needs to name things; nothing secret.
    about: About,
}

impl AwsStore {
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

    /// PutSecretValue; with `stages`, the new version carries exactly
    /// those labels (and AWSCURRENT stays where it is unless named).
    async fn put(
        &self,
        name: &SecretName,
        value: &SecretBytes,
        token: &str,
        stages: Option<&[Label]>,
    ) -> StoreResult<VersionId> {
        // The token is set explicitly so the SDK's own retries reuse it: a
        // lost response cannot create a second version.
        let req = self
            .client
            .put_secret_value()
            .secret_id(name.as_str())
            .client_request_token(token)
            .set_version_stages(stages.map(|s| s.iter().map(Label::to_string).collect()));
        let req = match value.stored_as_text() {
            Some(text) => req.secret_string(text),
            None => req.secret_binary(Blob::new(value.as_bytes())),
        };
        let out = req.send().await.map_err(classify_sdk)?;
        Ok(VersionId::new(out.version_id().unwrap_or(token)))
    }
}

impl AwsStore {
    /// ListSecrets (every page) of the names starting with `prefix`;
    /// with `primary`, only replicas of that region's secrets (a failover
    /// region lists what the primary would).
    pub(super) async fn list_names(
        &self,
        prefix: Option<&str>,
        primary: Option<&str>,
        page_within: Option<std::time::Duration>,
    ) -> StoreResult<Vec<SecretName>> {
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
        // Each page (its retries included) within `page_within`, when
        // given: a long listing is no failure, a page that does not come is.
        loop {
            let next = match page_within {
                Some(bound) => tokio::time::timeout(bound, pages.next())
                    .await
                    .map_err(|_| {
                        StoreError::new(
                            StoreErrorKind::Transient,
                            format!("no ListSecrets page within {} ms", bound.as_millis()),
                        )
                    })?,
                None => pages.next().await,
            };
            let Some(page) = next else { break };
            let page = page.map_err(classify_sdk)?;
            for s in page.secret_list() {
                if s.deleted_date().is_some() {
                    continue;
                }
                if primary.is_some_and(|p| s.primary_region() != Some(p)) {
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
}

/// One entry of ListSecretVersionIds: its id, CreatedDate and labels.
fn listed_version(v: &SecretVersionsListEntry) -> Option<ListedVersion> {
    Some(ListedVersion {
        id: VersionId::new(v.version_id()?),
        created: v.created_date().map(|d| to_system_time(Some(d))),
        stages: v.version_stages().to_vec(),
    })
}
fn to_system_time(t: Option<&aws_sdk_secretsmanager::primitives::DateTime>) -> SystemTime {
    t.and_then(|d| SystemTime::try_from(*d).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

#[async_trait]
impl SecretStore for AwsStore {
    async fn list_secrets(&self, prefix: Option<&str>) -> StoreResult<Vec<SecretName>> {
        self.list_names(prefix, None, None).await
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
            (None, Some(b)) => SecretBytes::binary(b.into_inner()),
            (None, None) => SecretBytes::new(Vec::new()),
        };
        Ok(Some(SecretVersion::new(id, value, created)))
    }

    async fn list_version_ids(&self, name: &SecretName) -> StoreResult<Vec<VersionId>> {
        let listed = self.list_versions(name).await?;
        Ok(listed.into_iter().map(|v| v.id).collect())
    }

    async fn list_versions(&self, name: &SecretName) -> StoreResult<Vec<ListedVersion>> {
        let mut pages = self
            .client
            .list_secret_version_ids()
            .secret_id(name.as_str())
            .include_deprecated(false)
            .into_paginator()
            .send();
        let mut listed = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(classify_sdk)?;
            listed.extend(page.versions().iter().filter_map(listed_version));
        }
        Ok(listed)
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
        self.put(name, value, token, None).await
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
        let req = match value.stored_as_text() {
            Some(text) => req.secret_string(text),
            None => req.secret_binary(Blob::new(value.as_bytes())),
        };
        let out = req.send().await.map_err(classify_sdk)?;
        Ok(VersionId::new(out.version_id().unwrap_or(token)))
    }

    async fn put_value_staged(
        &self,
        name: &SecretName,
        value: &SecretBytes,
        token: &str,
        stages: &[Label],
    ) -> StoreResult<VersionId> {
        self.put(name, value, token, Some(stages)).await
    }

    async fn update_stage(
        &self,
        name: &SecretName,
        label: &Label,
        move_to: Option<&VersionId>,
        remove_from: Option<&VersionId>,
    ) -> StoreResult<()> {
        self.client
            .update_secret_version_stage()
            .secret_id(name.as_str())
            .version_stage(label.as_str())
            .set_move_to_version_id(move_to.map(|v| v.to_string()))
            .set_remove_from_version_id(remove_from.map(|v| v.to_string()))
            .send()
            .await
            .map_err(classify_sdk)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_listed_version_has_its_created_date_and_labels() {
        use aws_sdk_secretsmanager::primitives::DateTime;
        let entry = SecretVersionsListEntry::builder()
            .version_id("v1")
            .created_date(DateTime::from_secs(1_700_000_000))
            .version_stages("AWSCURRENT")
            .version_stages("blue")
            .build();
        let v = listed_version(&entry).unwrap();
        assert_eq!(v.id, VersionId::new("v1"));
        assert_eq!(
            v.created,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(v.stages, ["AWSCURRENT", "blue"]);
        let bare = SecretVersionsListEntry::builder().version_id("v2").build();
        assert_eq!(listed_version(&bare).unwrap().created, None);
    }
}
