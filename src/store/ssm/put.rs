//! Parameter Store writes: PutParameter with Overwrite keeping the type,
//! the KMS key and the tier; the tier's size limit (4 KB standard, 8 KB
//! advanced) checked before any call; a create as the configured type; and
//! labels moved with LabelParameterVersion.
//!
//! PutParameter has no client request token: a retry after a lost answer
//! could make a second version. So the SDK does not retry it. An attempt
//! that got no answer (timeout, connection failure) is never sent again:
//! GetParameterHistory, asked a few times over a few seconds, says whether
//! a version holding this value landed after the one the write started
//! from (then that version is the answer); otherwise the close fails,
//! "outcome unknown", as for Secrets Manager. Only an answered refusal
//! (throttling, TooManyUpdates, 5xx) is followed by the same question and
//! then, if the version is not there, by another attempt.

use std::time::Duration;

use aws_sdk_ssm::error::SdkError;
use aws_sdk_ssm::types::{ParameterTier, ParameterType};

use super::{SsmStore, classify, parameter, version_id, version_number};
use crate::stats::ApiOp;
use crate::store::aws::MAX_ATTEMPTS;
use crate::store::{Label, SecretBytes, SecretName, StoreError, StoreErrorKind, StoreResult};
use crate::store::{VersionId, aws::bounded};

/// A standard parameter's largest value, and an advanced one's (bytes).
pub const STANDARD_MAX: usize = 4096;
pub const ADVANCED_MAX: usize = 8192;

/// After a put attempt that got no answer, the waits before each look at
/// the history (about 3.5 s in all): a request slowed on its way lands
/// within them, or the close fails as "outcome unknown".
const LATE_CHECKS: [Duration; 4] = [
    Duration::ZERO,
    Duration::from_millis(500),
    Duration::from_millis(1000),
    Duration::from_millis(2000),
];

/// What a put keeps of the parameter it overwrites, and where it started.
struct Kept {
    kind: ParameterType,
    key_id: Option<String>,
    tier: ParameterTier,
    /// The latest version when the write started (0: a create).
    from: i64,
}

/// The value as Parameter Store takes it: text, within the tier's limit.
fn checked<'v>(
    name: &SecretName,
    value: &'v SecretBytes,
    tier: &ParameterTier,
) -> StoreResult<&'v str> {
    let text = value.as_text().ok_or_else(|| {
        StoreError::new(
            StoreErrorKind::InvalidParameter,
            format!(
                "parameter {}: values are text, and this one is not UTF-8",
                parameter(name)
            ),
        )
    })?;
    let max = match tier {
        ParameterTier::Standard => STANDARD_MAX,
        _ => ADVANCED_MAX,
    };
    if text.len() > max {
        return Err(StoreError::new(
            StoreErrorKind::TooLarge,
            format!(
                "parameter {}: {} bytes is over the {} tier's {max}",
                parameter(name),
                text.len(),
                tier.as_str()
            ),
        ));
    }
    Ok(text)
}

impl SsmStore {
    /// PutParameter with Overwrite, keeping type, key and tier.
    pub(super) async fn overwrite(
        &self,
        name: &SecretName,
        value: &SecretBytes,
    ) -> StoreResult<VersionId> {
        let meta = self.metadata(name).await?;
        let kept = Kept {
            kind: meta.r#type.unwrap_or(ParameterType::String),
            key_id: meta.key_id,
            tier: meta.tier.unwrap_or(ParameterTier::Standard),
            from: meta.version,
        };
        self.put(name, value, kept, true).await
    }

    /// A new parameter of the configured type and key (standard tier).
    pub(super) async fn create(
        &self,
        name: &SecretName,
        value: &SecretBytes,
    ) -> StoreResult<VersionId> {
        let kept = Kept {
            kind: self.create_type.clone(),
            key_id: self.create_key_id.clone(),
            tier: ParameterTier::Standard,
            from: 0,
        };
        self.put(name, value, kept, false).await
    }

    async fn put(
        &self,
        name: &SecretName,
        value: &SecretBytes,
        kept: Kept,
        overwrite: bool,
    ) -> StoreResult<VersionId> {
        let text = checked(name, value, &kept.tier)?;
        let secure = kept.kind == ParameterType::SecureString;
        let mut wait = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            let (retry, timeout) = bounded(Duration::from_secs(5));
            let config = aws_sdk_ssm::config::Builder::default()
                .retry_config(retry)
                .timeout_config(timeout);
            let mut req = self
                .client
                .put_parameter()
                .name(parameter(name))
                .value(text)
                .r#type(kept.kind.clone())
                .overwrite(overwrite);
            if secure {
                req = req.set_key_id(kept.key_id.clone());
            }
            // The tier is named only when advanced: naming Standard on a
            // create is the default, and keeping Advanced needs it named.
            if kept.tier != ParameterTier::Standard {
                req = req.tier(kept.tier.clone());
            }
            let sent = req.customize().config_override(config).send().await;
            // Only an answer says the put was not applied (or may be sent
            // again): a timeout, a connection failure or an unreadable
            // answer may be a put still on its way, or applied already.
            let answered = matches!(sent, Err(SdkError::ServiceError(_)));
            let err = match self.counted(ApiOp::PutParameter, sent.map_err(classify)) {
                Ok(out) => return Ok(self.put_id(name, out.version).await),
                Err(e) => e,
            };
            if !err.is_transient() {
                return Err(err);
            }
            if !answered {
                return self.unknown(name, text, kept.from, err).await;
            }
            // Refused for now (throttled, 5xx): did it land all the same?
            match self.landed(name, text, kept.from).await {
                Ok(Some(v)) => {
                    tracing::warn!(secret = %name, version = %v,
                        "the answer to PutParameter was lost; GetParameterHistory shows the version, so it succeeded");
                    return Ok(v);
                }
                Ok(None) if attempt < MAX_ATTEMPTS => {}
                // Not there after the last attempt, or cannot tell.
                _ => return Err(err),
            }
            attempt += 1;
            tokio::time::sleep(wait.mul_f64(fastrand::f64())).await;
            wait *= 2;
        }
    }

    /// A put attempt got no answer (`lost`): it is never sent again (with
    /// no token, a second put could make a second version). The history is
    /// asked a few times over a short bounded wait (a slow request may land
    /// late); the version found is the answer. Not found, or the history
    /// cannot be asked: the outcome is unknown, and the close says so.
    async fn unknown(
        &self,
        name: &SecretName,
        text: &str,
        from: i64,
        lost: StoreError,
    ) -> StoreResult<VersionId> {
        let mut last = Ok(None);
        for wait in LATE_CHECKS {
            tokio::time::sleep(wait).await;
            last = self.landed(name, text, from).await;
            if let Ok(Some(v)) = &last {
                tracing::warn!(secret = %name, version = %v,
                    "the answer to PutParameter was lost; GetParameterHistory shows the version, so it succeeded");
                return Ok(v.clone());
            }
        }
        let lookup = match last {
            Err(e) => format!("GetParameterHistory failed: {e}"),
            Ok(_) => "GetParameterHistory shows no such version yet".into(),
        };
        Err(StoreError::new(
            lost.kind,
            format!(
                "outcome unknown: PutParameter got no answer ({}), and it is not sent again; {lookup}; the value may still become the latest version",
                lost.message
            ),
        ))
    }

    /// The id of the version a put made: PutParameter answers its number
    /// alone, so its date comes from DescribeParameters (no decrypt), when
    /// it is still the latest. Otherwise (another put since, or no answer)
    /// the number alone: the cache then asks again at the next read.
    async fn put_id(&self, name: &SecretName, number: i64) -> VersionId {
        match self.metadata(name).await {
            Ok(meta) if meta.version == number => version_id(number, meta.last_modified_date()),
            _ => VersionId::new(number.to_string()),
        }
    }

    /// GetParameterHistory (decrypted, compared here, never kept): the
    /// first version after `from` that holds `text`.
    async fn landed(
        &self,
        name: &SecretName,
        text: &str,
        from: i64,
    ) -> StoreResult<Option<VersionId>> {
        let mut pages = self.history(name, true).send();
        while let Some(page) = pages.next().await {
            let page = match self.counted(ApiOp::GetParameterHistory, page.map_err(classify)) {
                // No parameter yet: a create that did not land.
                Err(e) if e.kind == StoreErrorKind::NotFound => return Ok(None),
                other => other?,
            };
            if let Some(h) = page
                .parameters()
                .iter()
                .find(|h| h.version > from && h.value() == Some(text))
            {
                return Ok(Some(version_id(h.version, h.last_modified_date())));
            }
        }
        Ok(None)
    }

    /// LabelParameterVersion (the label moves from any other version) or,
    /// with no target, UnlabelParameterVersion.
    pub(super) async fn label(
        &self,
        name: &SecretName,
        label: &Label,
        move_to: Option<&VersionId>,
        remove_from: Option<&VersionId>,
    ) -> StoreResult<()> {
        let number = |id: &VersionId| {
            version_number(id).ok_or_else(|| {
                StoreError::new(StoreErrorKind::NotFound, format!("no version {id}"))
            })
        };
        match (move_to, remove_from) {
            (Some(to), _) => {
                let sent = self
                    .client
                    .label_parameter_version()
                    .name(parameter(name))
                    .parameter_version(number(to)?)
                    .labels(label.as_str())
                    .send()
                    .await;
                let out = self.counted(ApiOp::LabelParameterVersion, sent.map_err(classify))?;
                if !out.invalid_labels().is_empty() {
                    return Err(StoreError::new(
                        StoreErrorKind::InvalidParameter,
                        format!(
                            "label {label} refused by Parameter Store (letters, digits, '.', '-', '_'; up to 100; not starting with aws, ssm or a digit)"
                        ),
                    ));
                }
            }
            (None, Some(from)) => {
                // Counted with LabelParameterVersion (the stats name the
                // APIs that move labels under one).
                let sent = self
                    .client
                    .unlabel_parameter_version()
                    .name(parameter(name))
                    .parameter_version(number(from)?)
                    .labels(label.as_str())
                    .send()
                    .await;
                self.counted(ApiOp::LabelParameterVersion, sent.map_err(classify))?;
            }
            (None, None) => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_over_the_tier_limit_are_too_large() {
        let n = SecretName::new("a/b");
        let v = |len: usize| SecretBytes::new(vec![b'x'; len]);
        assert!(checked(&n, &v(STANDARD_MAX), &ParameterTier::Standard).is_ok());
        let e = checked(&n, &v(STANDARD_MAX + 1), &ParameterTier::Standard).unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::TooLarge);
        assert!(checked(&n, &v(ADVANCED_MAX), &ParameterTier::Advanced).is_ok());
        let e = checked(&n, &v(ADVANCED_MAX + 1), &ParameterTier::Advanced).unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::TooLarge);
        let bin = SecretBytes::new(vec![0xff, 0xfe]);
        let e = checked(&n, &bin, &ParameterTier::Standard).unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::InvalidParameter);
    }
}
