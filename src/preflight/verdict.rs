//! The start-up check's finding as a decision and its one line (a leaf of
//! preflight/: the check's order and bounds are check.rs, what follows
//! from the decision is mod.rs).

use super::check::Check;
use crate::store::SecretName;
use crate::store::aws::{About, TLS_HINT};

/// What the daemon does after the check.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Mount; log this line at info.
    Mount(String),
    /// Mount; log this line once, as a warning.
    MountWarned(String),
    /// Mount, log this warning, and check again in the background.
    MountAndRetry(String),
    /// Refuse to start: this one line is the error.
    Refuse(String),
}

/// The check's finding as a decision and its one line.
pub fn verdict(check: &Check, about: &About, secret: Option<&SecretName>) -> Verdict {
    match check {
        Check::Ok {
            action,
            source,
            elapsed,
        } => Verdict::Mount(format!(
            "start-up check passed: {action} answered in {} ms (region {}, endpoint {}, credentials from {source})",
            elapsed.as_millis(),
            about.region.as_deref().unwrap_or("?"),
            about.endpoint,
        )),
        Check::NoRegion => Verdict::Refuse(format!(
            "no AWS region configured{}: set AWS_REGION (under systemd in /etc/secretsfs/secretsfs.env) \
             or region in the AWS profile, or pass --region",
            about
                .no_region_cause
                .as_ref()
                .map_or(String::new(), |c| format!(" ({c})"))
        )),
        Check::NoCredentials(cause) => {
            Verdict::Refuse(match (&about.profile, about.profile_missing) {
                (Some(p), true) => format!(
                    "no AWS credentials: profile '{p}' is in neither ~/.aws/config nor ~/.aws/credentials \
                 (AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE move them): correct AWS_PROFILE or --profile"
                ),
                _ => format!(
                    "no AWS credentials{} ({cause}): set AWS_PROFILE or --profile to a profile that has them, \
                 or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run with an instance or container role",
                    profile_note(about)
                ),
            })
        }
        Check::CredentialsTimedOut(bound) => Verdict::Refuse(format!(
            "no AWS credentials within {} s{}: the credentials chain was still trying its sources \
             (outside EC2 the instance metadata service never answers: set AWS_EC2_METADATA_DISABLED=true); \
             set AWS_PROFILE or --profile, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            bound.as_secs(),
            profile_note(about)
        )),
        Check::Rejected {
            code,
            message,
            source,
        } => {
            let fix = if code.starts_with("ExpiredToken") {
                "they have expired: renew them (a new session token, `aws sso login`, a fresh role session)"
            } else {
                "they are not valid keys for this account and region: correct them, or choose others with AWS_PROFILE or --profile"
            };
            Verdict::Refuse(format!(
                "{} rejected the credentials from {} ({code}: {message}); {fix}",
                about.service,
                describe_source(source, about)
            ))
        }
        Check::Denied { action, message } => {
            let what = match (action, secret) {
                (&"DescribeSecret", Some(s)) => format!(
                    "secretsmanager:DescribeSecret on {s}: reads of it may be refused too \
                     (grant secretsmanager:DescribeSecret and secretsmanager:GetSecretValue)"
                ),
                (&"GetParameter", Some(s)) => format!(
                    "ssm:GetParameter on /{s}: reads of it will be refused \
                     (grant ssm:GetParameter, ssm:DescribeParameters and ssm:GetParameterHistory)"
                ),
                (&"DescribeParameters", _) => {
                    "ssm:DescribeParameters: listing the mount will answer EACCES \
                      (grant it, or name the parameters with --secret)"
                        .to_string()
                }
                _ => "secretsmanager:ListSecrets: listing the mount will answer EACCES \
                      (grant it, or name the secrets with --secret)"
                    .to_string(),
            };
            Verdict::MountWarned(format!(
                "start-up check: {action} was denied ({message}); the credentials work, \
                 but this principal may not call {what}"
            ))
        }
        Check::Answered { action, text } => Verdict::MountWarned(format!(
            "start-up check: {} answered {action} with {text}; mounting",
            about.service
        )),
        Check::Certificate(cause) => Verdict::Refuse(match &about.ca_bundle {
            Some((path, named_by)) => format!(
                "the TLS certificate of {} is not trusted ({cause}); the CA bundle {} (from {named_by}) \
                 does not verify it: it needs the certificate of the CA that signed the endpoint's (or the gateway's)",
                about.endpoint,
                path.display()
            ),
            None => format!(
                "the TLS certificate of {} is not trusted ({cause}); {TLS_HINT}",
                about.endpoint
            ),
        }),
        Check::Tls(cause) => Verdict::Refuse(format!(
            "TLS with {} failed ({cause}): is it an HTTPS endpoint? (AWS_ENDPOINT_URL, --endpoint-url, HTTPS_PROXY)",
            about.endpoint
        )),
        Check::Unreachable(cause) => Verdict::MountAndRetry(format!(
            "{} at {} is unreachable at start ({cause}); mounting anyway: \
             reads answer EIO until it answers, and the check is repeated in the background",
            about.service, about.endpoint
        )),
    }
}

fn profile_note(about: &About) -> String {
    match &about.profile {
        Some(p) => format!(" for profile '{p}'"),
        None => String::new(),
    }
}

/// Where credentials from this provider were configured, for the fix.
fn describe_source(provider: &str, about: &About) -> String {
    let profile = about.profile.as_deref().unwrap_or("default");
    match provider {
        "EnvironmentVariable" | "Environment" => {
            "the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN)".into()
        }
        "ProfileFile" => format!("profile '{profile}' (~/.aws/credentials, ~/.aws/config)"),
        "AssumeRoleProvider" => format!("the role that profile '{profile}' assumes"),
        "SSO" => format!("the SSO session of profile '{profile}'"),
        "CredentialProcess" => format!("the credential_process of profile '{profile}'"),
        "WebIdentityToken" => "web identity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN)".into(),
        "EcsContainer" => "the container's role".into(),
        "IMDSv2" | "IMDS" => "the EC2 instance's role".into(),
        other => format!("the credentials provider {other}"),
    }
}
