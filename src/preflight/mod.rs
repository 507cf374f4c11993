//! The start-up check of the AWS store, before mounting: one bounded look at
//! the credentials chain and one cheap authenticated call, so that a daemon
//! with no region or no usable credentials refuses to start with one line
//! that names the cause and the fix, instead of mounting and answering EIO.
//!
//! - no region, no credentials, credentials the API rejects, a certificate
//!   that does not verify: configuration errors; the daemon exits non-zero;
//! - AccessDenied: the credentials work; logged once, with the IAM action;
//! - no answer (DNS, connection refused, timeout): the network, maybe for a
//!   moment at boot; logged, the daemon mounts and checks again in the
//!   background (README, "Start-up checks").
//!
//! `check.rs` runs the check and says what it found (`Check`); this file
//! turns a finding into a verdict and its one line (`verdict`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::refusal::Refusal;
use crate::stats::Stats;
use crate::store::aws::{AwsOptions, AwsStore, Probe, Regions};
use crate::store::ssm::{SsmOptions, SsmStore};
use crate::store::{SecretName, SecretStore};

mod check;
mod failover;
mod verdict;

pub use check::{CHECK_CALL_BOUND, CHECK_CREDENTIALS_BOUND, Check, check};
pub use verdict::{Verdict, verdict};

/// Opens the AWS store and checks it before anything is mounted.
/// `first_secret`: the first `--secret`, which the check describes instead
/// of listing (no ListSecrets call for a mount of named secrets). With
/// failover regions or secrets by ARN the store is `Regions` (one client
/// per region), and a primary that does not answer at start is accepted
/// when a failover region does (failover.rs).
pub async fn open_aws(
    opts: &AwsOptions,
    first_secret: Option<&SecretName>,
    stats: &Arc<Stats>,
) -> Result<Arc<dyn SecretStore>, Refusal> {
    let store = Arc::new(AwsStore::connect(opts).await.map_err(Refusal::config)?);
    let first = failover::first_id(opts, first_secret, store.about());
    let first = first.as_ref();
    let check = check(&*store, first).await;
    let mut primary_down = None;
    match verdict(&check, store.about(), first) {
        Verdict::Mount(line) => tracing::info!("{line}"),
        Verdict::MountWarned(line) => tracing::warn!("{line}"),
        Verdict::MountAndRetry(line) => {
            match failover::answering(&store, &opts.failover_regions, first, &check).await {
                Some(line) => {
                    tracing::warn!("{line}");
                    primary_down = Some(line);
                }
                None => {
                    tracing::warn!("{line}");
                    let (store, first) = (store.clone(), first.cloned());
                    tokio::spawn(
                        async move { check_until_answered(&*store, first.as_ref()).await },
                    );
                }
            }
        }
        Verdict::Refuse(line) if restart_may_help(&check) => return Err(Refusal::failure(line)),
        Verdict::Refuse(line) => return Err(Refusal::config(line)),
    }
    if !opts.uses_regions() {
        return Ok(store);
    }
    Ok(Arc::new(Regions::new(
        store,
        &opts.failover_regions,
        opts.arns.clone(),
        stats.clone(),
        primary_down,
    )))
}

/// Opens the Parameter Store source and checks it as `open_aws` does
/// (no failover there).
pub async fn open_ssm(
    opts: &SsmOptions,
    first_secret: Option<&SecretName>,
) -> Result<Arc<SsmStore>, Refusal> {
    let store = Arc::new(SsmStore::connect(opts).await.map_err(Refusal::config)?);
    let check = check(&*store, first_secret).await;
    match verdict(&check, store.about(), first_secret) {
        Verdict::Mount(line) => tracing::info!("{line}"),
        Verdict::MountWarned(line) => tracing::warn!("{line}"),
        Verdict::MountAndRetry(line) => {
            tracing::warn!("{line}");
            let (store, first) = (store.clone(), first_secret.cloned());
            tokio::spawn(async move { check_until_answered(&*store, first.as_ref()).await });
        }
        Verdict::Refuse(line) if restart_may_help(&check) => return Err(Refusal::failure(line)),
        Verdict::Refuse(line) => return Err(Refusal::config(line)),
    }
    Ok(store)
}

/// A refusal a restart may cure: a credentials chain that was still trying
/// (an instance role at boot), or credentials that expired (a renewed
/// session may be there next time). Every other refusal is a configuration
/// error, which systemd does not restart.
pub fn restart_may_help(check: &Check) -> bool {
    match check {
        Check::CredentialsTimedOut(_) => true,
        Check::Rejected { code, .. } => code.starts_with("ExpiredToken"),
        _ => false,
    }
}

/// While the endpoint does not answer: the check again, 2 s after the
/// start, then doubling up to once a minute; one line when it answers (or
/// when what answers is a configuration error, which is then logged as an
/// error: the daemon keeps serving what it can).
async fn check_until_answered(store: &dyn Probe, first: Option<&SecretName>) {
    let started = Instant::now();
    let mut wait = Duration::from_secs(2);
    loop {
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(60));
        let check = check(store, first).await;
        let after = started.elapsed().as_secs();
        match verdict(&check, store.about(), first) {
            Verdict::MountAndRetry(_) => continue,
            Verdict::Mount(line) => {
                tracing::info!(
                    "{} answered {after} s after the start: {line}",
                    store.about().service
                )
            }
            Verdict::MountWarned(line) => {
                tracing::warn!(
                    "{} answered {after} s after the start: {line}",
                    store.about().service
                )
            }
            Verdict::Refuse(line) => tracing::error!(
                "{} answered {after} s after the start, with a configuration error: {line}",
                store.about().service
            ),
        }
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::aws::About;
    use std::path::PathBuf;

    fn about() -> About {
        About {
            service: "Secrets Manager",
            region: Some("eu-west-1".into()),
            endpoint: "https://secretsmanager.eu-west-1.amazonaws.com".into(),
            ca_bundle: None,
            profile: None,
            profile_missing: false,
            no_region_cause: None,
        }
    }

    fn refused(c: Check) -> String {
        match verdict(&c, &about(), None) {
            Verdict::Refuse(line) => line,
            v => panic!("{c:?} did not refuse: {v:?}"),
        }
    }

    #[test]
    fn configuration_errors_refuse_with_one_line_naming_the_fix() {
        let line = refused(Check::NoRegion);
        assert!(
            line.contains("AWS_REGION") && line.contains("--region"),
            "{line}"
        );
        let line = refused(Check::NoCredentials("no providers in chain".into()));
        assert!(
            line.contains("AWS_PROFILE") && line.contains("--profile"),
            "{line}"
        );
        assert!(line.contains("no providers in chain"), "{line}");
        let line = refused(Check::CredentialsTimedOut(Duration::from_secs(3)));
        assert!(line.contains("AWS_EC2_METADATA_DISABLED"), "{line}");
        let line = refused(Check::Rejected {
            code: "UnrecognizedClientException".into(),
            message: "The security token included in the request is invalid.".into(),
            source: "EnvironmentVariable".into(),
        });
        assert!(line.contains("AWS_ACCESS_KEY_ID"), "{line}");
        assert!(line.contains("UnrecognizedClientException"), "{line}");
        let line = refused(Check::Rejected {
            code: "ExpiredTokenException".into(),
            message: "expired".into(),
            source: "ProfileFile".into(),
        });
        assert!(
            line.contains("expired") && line.contains("profile 'default'"),
            "{line}"
        );
        let line = refused(Check::Certificate(
            "invalid peer certificate: UnknownIssuer".into(),
        ));
        assert!(
            line.contains("AWS_CA_BUNDLE") && line.contains("UnknownIssuer"),
            "{line}"
        );
        let line = refused(Check::Tls("received corrupt message".into()));
        assert!(
            line.contains("HTTPS endpoint") && !line.contains("AWS_CA_BUNDLE"),
            "{line}"
        );
        for c in [
            Check::NoRegion,
            Check::NoCredentials("x".into()),
            Check::Tls("y".into()),
        ] {
            assert!(!refused(c).contains('\n'));
        }
    }

    #[test]
    fn a_tls_failure_with_a_bundle_names_the_bundle() {
        let mut a = about();
        a.ca_bundle = Some((PathBuf::from("/etc/ca.pem"), "AWS_CA_BUNDLE"));
        match verdict(&Check::Certificate("UnknownIssuer".into()), &a, None) {
            Verdict::Refuse(line) => {
                assert!(
                    line.contains("/etc/ca.pem") && line.contains("AWS_CA_BUNDLE"),
                    "{line}"
                )
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn access_denied_mounts_and_names_the_action() {
        let c = Check::Denied {
            action: "ListSecrets",
            message: "AccessDeniedException: no".into(),
        };
        match verdict(&c, &about(), None) {
            Verdict::MountWarned(line) => {
                assert!(line.contains("secretsmanager:ListSecrets"), "{line}")
            }
            v => panic!("{v:?}"),
        }
        let s = SecretName::new("prod/db");
        let c = Check::Denied {
            action: "DescribeSecret",
            message: "AccessDeniedException: no".into(),
        };
        match verdict(&c, &about(), Some(&s)) {
            Verdict::MountWarned(line) => {
                assert!(
                    line.contains("secretsmanager:DescribeSecret on prod/db"),
                    "{line}"
                )
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn parameter_store_checks_name_its_service_and_ssm_actions() {
        let a = About {
            service: "Parameter Store",
            endpoint: "https://ssm.eu-west-1.amazonaws.com".into(),
            ..about()
        };
        let c = Check::Denied {
            action: "DescribeParameters",
            message: "AccessDeniedException: no".into(),
        };
        match verdict(&c, &a, None) {
            Verdict::MountWarned(line) => {
                assert!(line.contains("ssm:DescribeParameters"), "{line}")
            }
            v => panic!("{v:?}"),
        }
        let s = SecretName::new("app/db/url");
        let c = Check::Denied {
            action: "GetParameter",
            message: "AccessDeniedException: no".into(),
        };
        match verdict(&c, &a, Some(&s)) {
            Verdict::MountWarned(line) => {
                assert!(line.contains("ssm:GetParameter on /app/db/url"), "{line}")
            }
            v => panic!("{v:?}"),
        }
        let c = Check::Unreachable("connection refused".into());
        assert!(matches!(
            verdict(&c, &a, None),
            Verdict::MountAndRetry(l) if l.starts_with("Parameter Store at https://ssm.")
        ));
    }

    #[test]
    fn an_unreachable_endpoint_mounts_and_retries() {
        let c = Check::Unreachable("connection refused".into());
        assert!(matches!(
            verdict(&c, &about(), None),
            Verdict::MountAndRetry(l) if l.contains("connection refused")
        ));
    }
}
