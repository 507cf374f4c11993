//! The start-up check with failover regions and secrets by ARN: which
//! secret the check describes, and a primary that does not answer at start
//! accepted when a failover region does (the mount then starts on it).

use super::check::{Check, check};
use super::verdict::{Verdict, verdict};
use crate::store::SecretName;
use crate::store::aws::{About, AwsOptions, AwsStore, Probe, RegionSpec};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::aws::Arn;

    #[test]
    fn the_check_describes_a_name_or_an_arn_of_the_mounts_region_else_lists() {
        let arn = |r: &str| {
            Arn::parse(&format!(
                "arn:aws:secretsmanager:{r}:111122223333:secret:db-AbCdEf"
            ))
            .unwrap()
        };
        let opts = AwsOptions {
            arns: vec![
                (SecretName::new("here"), arn("us-east-1")),
                (SecretName::new("there"), arn("eu-west-1")),
            ],
            ..Default::default()
        };
        let about = About {
            region: Some("us-east-1".into()),
            ..Default::default()
        };
        let id = |p: &str| first_id(&opts, Some(&SecretName::new(p)), &about);
        assert_eq!(id("plain"), Some(SecretName::new("plain")));
        assert_eq!(
            id("here"),
            Some(SecretName::new(arn("us-east-1").to_string()))
        );
        assert_eq!(id("there"), None);
        assert_eq!(first_id(&opts, None, &about), None);
    }
}
