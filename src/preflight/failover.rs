//! The start-up check with failover regions and secrets by ARN: which
//! secret the check describes, and a primary that does not answer at start
//! accepted when a failover region does (the mount then starts on it).

use super::{Check, Verdict, check, verdict};
use crate::store::SecretName;
use crate::store::aws::{About, AwsOptions, AwsStore, RegionSpec};

/// What the check describes for the first `--secret`: its name, or its ARN
/// when that is in the mount's region (an ARN elsewhere is not the
/// primary's to answer: the check then lists instead).
pub(super) fn first_id(
    opts: &AwsOptions,
    first: Option<&SecretName>,
    about: &About,
) -> Option<SecretName> {
    let first = first?;
    match opts.arns.iter().find(|(path, _)| path == first) {
        None => Some(first.clone()),
        Some((_, arn)) if Some(arn.region()) == about.region.as_deref() => {
            Some(SecretName::new(arn.to_string()))
        }
        Some(_) => None,
    }
}

/// The primary did not answer the check: the line to log when a failover
/// region does (None: none does, or there is none).
pub(super) async fn answering(
    primary: &AwsStore,
    regions: &[RegionSpec],
    first: Option<&SecretName>,
    primary_check: &Check,
) -> Option<String> {
    let cause = match primary_check {
        Check::Unreachable(c) => c.clone(),
        _ => return None,
    };
    let here = primary.about().region.clone().unwrap_or_default();
    for r in regions {
        let store = primary.in_region(&r.name, r.endpoint.as_deref());
        let r = &r.name;
        // A name is the same in every region; an ARN is not: list instead.
        let id = first.filter(|n| !n.as_str().starts_with("arn:"));
        let found = check(&store, id).await;
        if let Verdict::MountAndRetry(_) | Verdict::Refuse(_) = verdict(&found, store.about(), id) {
            continue;
        }
        return Some(format!(
            "start-up check: the primary region {here} is unreachable ({cause}); failover region {r} answers: \
             mounting, reads go to {r} until {here} answers (probed in the background), writes fail until then"
        ));
    }
    None
}
