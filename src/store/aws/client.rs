//! The AWS clients' common part (`load`, shared with Parameter Store) and
//! the Secrets Manager client: the AWS configuration chain (region,
//! profile, endpoint), retries and timeouts, an HTTPS client that trusts a
//! CA bundle (`--ca-bundle`, AWS_CA_BUNDLE, the profile's `ca_bundle`), and
//! the credentials the start-up check resolves handed to the first call.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use aws_sdk_secretsmanager::config::Credentials;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};

use super::errors::one_line;
use super::options::{About, AwsOptions};

/// Attempts per call (the first and two retries).
pub const MAX_ATTEMPTS: u32 = 3;

/// The AWS configuration chain loaded once for one service's client: the
/// SDK config (region, endpoint, retries, timeouts, the HTTPS client with
/// the CA bundle), what the start-up check names, and the credentials
/// chain primed by it. Shared by every AWS source (Secrets Manager here,
/// Parameter Store in `store/ssm/`), so each builds only its own client.
pub(in crate::store) struct Loaded {
    pub config: aws_config::SdkConfig,
    pub about: About,
    pub credentials: Option<std::sync::Arc<Primed>>,
    /// The client's credentials provider: the primed chain.
    pub provider: Option<SharedCredentialsProvider>,
}

/// Loads the AWS configuration for the service whose endpoint host starts
/// with `service` (`secretsmanager`, `ssm`), named `title` in messages.
/// No call is made. Fails only on a CA bundle that cannot be used.
pub(in crate::store) async fn load(
    opts: &AwsOptions,
    ca_bundle: Option<&Path>,
    service: &str,
    title: &'static str,
) -> Result<Loaded, String> {
    let profile = opts
        .profile
        .clone()
        .or_else(|| std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty()));
    let profiles = load_profiles(opts.profile.as_deref()).await;
    let bundle = find_ca_bundle(ca_bundle, profiles.as_ref());
    let profile_missing = profile.as_deref().is_some_and(|p| {
        profiles
            .as_ref()
            .is_none_or(|set| set.get_profile(p).is_none())
    });
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        // Standard retries: 3 attempts, exponential backoff with full
        // jitter (each wait drawn from 0 to the backoff). The daemon-wide
        // slow-down after throttling is Instrumented's (store/gate.rs).
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
    if let Some((path, named_by)) = &bundle {
        let pem = read_ca_bundle(path).map_err(|e| format!("{named_by} {e}"))?;
        loader = loader.http_client(https_client(pem));
    }
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
    let region = config.region().map(|r| r.to_string());
    let endpoint = config
        .endpoint_url()
        .map(str::to_string)
        .unwrap_or_else(|| {
            format!(
                "https://{service}.{}.amazonaws.com",
                region.as_deref().unwrap_or("<region>")
            )
        });
    let no_region_cause = match region {
        None => imds_region_failure().await,
        Some(_) => None,
    };
    let about = About {
        service: title,
        region,
        endpoint,
        ca_bundle: bundle,
        profile,
        profile_missing,
        no_region_cause,
    };
    // The credentials the start-up check resolves are handed to the
    // client's first call instead of being fetched twice (an AssumeRole
    // or SSO source would otherwise make one more call per start).
    let credentials = config.credentials_provider().map(|chain| {
        std::sync::Arc::new(Primed {
            first: parking_lot::Mutex::new(None),
            chain,
        })
    });
    let provider = credentials
        .as_ref()
        .map(|p| SharedCredentialsProvider::new(PrimedRef(p.clone())));
    Ok(Loaded {
        config,
        about,
        credentials,
        provider,
    })
}

/// Each attempt's bound on a region another may stand in for.
pub const QUICK_ATTEMPT: Duration = Duration::from_secs(2);

/// Why the instance metadata service gave no region, on one line, when it
/// was asked (the region chain's last source): the SDK logs that only as a
/// multi-line warning, which the default log level leaves out. Asked again
/// here, once and bounded, on the way to refusing to start.
async fn imds_region_failure() -> Option<String> {
    let disabled =
        std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    if disabled {
        return None;
    }
    let client = aws_config::imds::Client::builder()
        .max_attempts(1)
        .connect_timeout(Duration::from_secs(1))
        .read_timeout(Duration::from_secs(1))
        .build();
    let asked = client.get("/latest/meta-data/placement/region");
    match tokio::time::timeout(Duration::from_secs(2), asked).await {
        Err(_) => Some("the instance metadata service did not answer".into()),
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(format!(
            "the instance metadata service: {}",
            one_line(&e).trim_end_matches('.')
        )),
    }
}

/// The credentials chain, and the credentials the start-up check resolved
/// with it: the client's first request takes those, later ones ask the
/// chain as usual (the SDK caches its answers until they expire).
#[derive(Debug)]
pub(in crate::store) struct Primed {
    pub(in crate::store) first: parking_lot::Mutex<Option<Credentials>>,
    pub(in crate::store) chain: SharedCredentialsProvider,
}

#[derive(Debug)]
struct PrimedRef(std::sync::Arc<Primed>);

impl ProvideCredentials for PrimedRef {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        let fresh = |c: &Credentials| {
            c.expiry()
                .is_none_or(|t| t > SystemTime::now() + Duration::from_secs(300))
        };
        match self.0.first.lock().take() {
            Some(c) if fresh(&c) => future::ProvideCredentials::ready(Ok(c)),
            _ => self.0.chain.provide_credentials(),
        }
    }
}

/// The name of the provider that gave these credentials (EnvironmentVariable,
/// ProfileFile, WebIdentityToken, EcsContainer, IMDSv2, SSO...). The type
/// shows it only through Debug, which redacts the secret key; only the name
/// is kept from it.
pub(in crate::store) fn provider_name(creds: &Credentials) -> String {
    let debug = format!("{creds:?}");
    debug
        .split_once("provider_name: \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(name, _)| name.to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The AWS config and credentials files, with `profile` (or AWS_PROFILE,
/// or `default`) selected; None when they cannot be parsed (the SDK then
/// logs why).
async fn load_profiles(profile: Option<&str>) -> Option<aws_config::profile::ProfileSet> {
    aws_config::profile::load(
        &aws_types::os_shim_internal::Fs::real(),
        &aws_types::os_shim_internal::Env::real(),
        &Default::default(),
        profile.map(|p| Cow::Owned(p.to_string())),
    )
    .await
    .ok()
}

/// Where the CA bundle comes from, as the AWS CLI looks for it: the
/// option, then AWS_CA_BUNDLE, then `ca_bundle` in the selected profile of
/// the AWS config file. The path and what named it.
fn find_ca_bundle(
    option: Option<&Path>,
    profiles: Option<&aws_config::profile::ProfileSet>,
) -> Option<(PathBuf, &'static str)> {
    if let Some(p) = option {
        return Some((p.to_path_buf(), "--ca-bundle"));
    }
    if let Some(p) = std::env::var_os("AWS_CA_BUNDLE").filter(|p| !p.is_empty()) {
        return Some((p.into(), "AWS_CA_BUNDLE"));
    }
    profiles?
        .get("ca_bundle")
        .filter(|p| !p.is_empty())
        .map(|p| (PathBuf::from(p), "ca_bundle in the AWS config file"))
}

/// The bundle's PEM, checked as the TLS stack will load it (the SDK panics
/// on a certificate it cannot parse): at least one certificate, each usable
/// as a trust anchor.
pub fn read_ca_bundle(path: &Path) -> Result<Vec<u8>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file ({e})", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no PEM certificate in it (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            format!(
                "{}: certificate {} cannot be a trust anchor ({e})",
                path.display(),
                i + 1
            )
        })?;
    }
    Ok(pem)
}

/// The SDK's default HTTPS client (rustls with aws-lc, HTTPS_PROXY and
/// NO_PROXY from the environment) trusting the bundle's certificates as
/// well as the system's.
fn https_client(pem: Vec<u8>) -> aws_sdk_secretsmanager::config::SharedHttpClient {
    use aws_smithy_http_client::proxy::ProxyConfig;
    // The SDK asserts (in debug builds) that native roots exist when they
    // are enabled: on a system without any, trust the bundle alone.
    let native = !rustls_native_certs::load_native_certs().certs.is_empty();
    let trust = TrustStore::default()
        .with_native_roots(native)
        .with_pem_certificate(pem);
    let ctx = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .expect("a TLS context with a trust store always builds");
    aws_smithy_http_client::Builder::new().build_with_connector_fn(move |settings, components| {
        let mut conn = aws_smithy_http_client::ConnectorBuilder::default()
            .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
            .tls_context(ctx.clone());
        conn.set_connector_settings(settings.cloned());
        if let Some(c) = components {
            conn.set_sleep_impl(c.sleep_impl());
        }
        conn.set_proxy_config(Some(ProxyConfig::from_env()));
        conn.build()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_bundle_is_checked_before_the_tls_stack_sees_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        assert!(read_ca_bundle(&p).unwrap_err().contains("ca.pem"));
        std::fs::write(&p, "hello\n").unwrap();
        assert!(
            read_ca_bundle(&p)
                .unwrap_err()
                .contains("no PEM certificate")
        );
        std::fs::write(
            &p,
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(read_ca_bundle(&p).is_err());
        std::fs::write(
            &p,
            "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(
            read_ca_bundle(&p).unwrap_err().contains("trust anchor"),
            "DER that is not a certificate"
        );
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_string()]).unwrap();
        std::fs::write(&p, ca.cert.pem()).unwrap();
        assert_eq!(read_ca_bundle(&p).unwrap(), ca.cert.pem().into_bytes());
        // The option wins over the environment and the profile.
        let explicit = Path::new("/etc/explicit.pem");
        assert_eq!(
            find_ca_bundle(Some(explicit), None),
            Some((explicit.to_path_buf(), "--ca-bundle"))
        );
    }

    #[test]
    fn primed_credentials_serve_the_first_call_then_the_chain_answers() {
        let chain = SharedCredentialsProvider::new(Credentials::new("A", "S", None, None, "Chain"));
        let primed = std::sync::Arc::new(Primed {
            first: parking_lot::Mutex::new(Some(Credentials::new("P", "S", None, None, "Primed"))),
            chain,
        });
        let p = PrimedRef(primed.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let name = |p: &PrimedRef| provider_name(&rt.block_on(p.provide_credentials()).unwrap());
        assert_eq!(name(&p), "Primed");
        assert_eq!(name(&p), "Chain");
        // Primed credentials about to expire are not handed out.
        *primed.first.lock() = Some(Credentials::new(
            "P",
            "S",
            None,
            Some(SystemTime::now() + Duration::from_secs(10)),
            "Primed",
        ));
        assert_eq!(name(&p), "Chain");
    }

    #[test]
    fn the_provider_name_is_read_without_the_secret_key() {
        let c = Credentials::new("AKID", "very-secret", None, None, "EnvironmentVariable");
        assert_eq!(provider_name(&c), "EnvironmentVariable");
        assert!(!provider_name(&c).contains("very-secret"));
    }
}
