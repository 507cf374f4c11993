//! The AWS Secrets Manager store (aws-sdk-secretsmanager), the one place
//! where SDK errors are classified into `StoreErrorKind`, the HTTPS client
//! with a CA bundle, and the start-up check's call (judged in preflight.rs).

use std::borrow::Cow;
use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::Credentials;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::primitives::Blob;
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType, SecretVersionsListEntry};
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};

use super::{
    Description, Label, ListedVersion, SecretBytes, SecretName, SecretStore, SecretVersion,
    Selector, StoreError, StoreErrorKind, StoreResult, VersionId,
};

/// Where to find Secrets Manager; unset fields fall back to the standard AWS
/// chain (AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL, credentials).
#[derive(Clone, Debug, Default)]
pub struct AwsOptions {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
    /// `--ca-bundle`: CA certificates trusted besides the system's.
    pub ca_bundle: Option<std::path::PathBuf>,
}

/// Attempts per call (the first and two retries).
pub const MAX_ATTEMPTS: u32 = 3;

/// The start-up check's bounds: the credentials chain, then one call with
/// no retry.
pub const CHECK_CREDENTIALS_BOUND: Duration = Duration::from_secs(3);
pub const CHECK_CALL_BOUND: Duration = Duration::from_secs(3);

pub struct AwsStore {
    client: Client,
    /// The configured credentials chain, primed by the start-up check.
    credentials: Option<std::sync::Arc<Primed>>,
    /// What the start-up check needs to name things; nothing secret.
    about: About,
}

/// How the store was set up, for the start-up check's messages.
#[derive(Clone, Debug, Default)]
pub struct About {
    pub region: Option<String>,
    /// The endpoint called (the service's default when none is set).
    pub endpoint: String,
    /// The CA bundle in use and where it was named, if any.
    pub ca_bundle: Option<(PathBuf, &'static str)>,
    pub profile: Option<String>,
    /// The named profile is in neither AWS config file.
    pub profile_missing: bool,
    /// With no region: what the instance metadata service said when asked
    /// for one (the SDK's own warnings are below the default log level).
    pub no_region_cause: Option<String>,
}

impl AwsStore {
    /// Loads the AWS configuration and builds the client; no call is made.
    /// Fails only on a CA bundle that cannot be used.
    pub async fn connect(opts: &AwsOptions) -> Result<Self, String> {
        Self::connect_with(opts, opts.ca_bundle.as_deref()).await
    }

    /// `connect` with a CA bundle named on the command line (`--ca-bundle`),
    /// which overrides AWS_CA_BUNDLE and the profile's `ca_bundle`.
    pub async fn connect_with(opts: &AwsOptions, ca_bundle: Option<&Path>) -> Result<Self, String> {
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
            // slow-down after throttling is Instrumented's (store/mod.rs).
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
                    "https://secretsmanager.{}.amazonaws.com",
                    region.as_deref().unwrap_or("<region>")
                )
            });
        let no_region_cause = match region {
            None => imds_region_failure().await,
            Some(_) => None,
        };
        let about = About {
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
        let mut builder = aws_sdk_secretsmanager::config::Builder::from(&config);
        let credentials = config.credentials_provider().map(|chain| {
            let primed = std::sync::Arc::new(Primed {
                first: parking_lot::Mutex::new(None),
                chain,
            });
            builder.set_credentials_provider(Some(SharedCredentialsProvider::new(PrimedRef(
                primed.clone(),
            ))));
            primed
        });
        Ok(Self {
            client: Client::from_conf(builder.build()),
            credentials,
            about,
        })
    }

    pub fn about(&self) -> &About {
        &self.about
    }

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

    /// The start-up check: the credentials chain (bounded), then one cheap
    /// authenticated call with no retry (bounded): DescribeSecret of
    /// `secret`, or ListSecrets with one result.
    pub async fn check(&self, secret: Option<&SecretName>) -> Check {
        let started = Instant::now();
        if self.about.region.is_none() {
            return Check::NoRegion;
        }
        let source = match self.check_credentials().await {
            Ok(source) => source,
            Err(c) => return c,
        };
        let bound = aws_sdk_secretsmanager::config::Builder::default()
            .retry_config(RetryConfig::standard().with_max_attempts(1))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CHECK_CALL_BOUND.min(Duration::from_secs(2)))
                    .operation_attempt_timeout(CHECK_CALL_BOUND)
                    .operation_timeout(CHECK_CALL_BOUND)
                    .build(),
            );
        // One call, whichever it is, under one bound.
        let (action, call): (_, futures::future::BoxFuture<'_, Result<(), CallFailure>>) =
            match secret {
                Some(name) => {
                    let call = self
                        .client
                        .describe_secret()
                        .secret_id(name.as_str())
                        .customize()
                        .config_override(bound)
                        .send();
                    let call = async move { call.await.map(|_| ()).map_err(|e| judge_call(&e)) };
                    ("DescribeSecret", Box::pin(call))
                }
                None => {
                    let call = self
                        .client
                        .list_secrets()
                        .max_results(1)
                        .customize()
                        .config_override(bound)
                        .send();
                    let call = async move { call.await.map(|_| ()).map_err(|e| judge_call(&e)) };
                    ("ListSecrets", Box::pin(call))
                }
            };
        let result =
            tokio::time::timeout(CHECK_CALL_BOUND + Duration::from_millis(500), call).await;
        let elapsed = started.elapsed();
        match result {
            Err(_) => {
                Check::Unreachable(format!("no answer within {} s", CHECK_CALL_BOUND.as_secs()))
            }
            Ok(Ok(())) => Check::Ok {
                action,
                source,
                elapsed,
            },
            Ok(Err(CallFailure::Rejected { code, message })) => Check::Rejected {
                code,
                message,
                source,
            },
            Ok(Err(CallFailure::Denied(message))) => Check::Denied { action, message },
            Ok(Err(CallFailure::NotFound)) => Check::Ok {
                action,
                source,
                elapsed,
            },
            Ok(Err(CallFailure::Answered(text))) => Check::Answered { action, text },
            Ok(Err(CallFailure::Credentials(text))) => Check::NoCredentials(text),
            Ok(Err(CallFailure::Tls(text))) => Check::Tls(text),
            Ok(Err(CallFailure::Certificate(text))) => Check::Certificate(text),
            Ok(Err(CallFailure::Unreachable(text))) => Check::Unreachable(text),
        }
    }

    /// Resolves the credentials once, within its bound, and primes the
    /// client with them: the name of the source that gave them.
    async fn check_credentials(&self) -> Result<String, Check> {
        let Some(primed) = &self.credentials else {
            return Err(Check::NoCredentials(
                "no credentials provider is configured".into(),
            ));
        };
        let chain = primed.chain.provide_credentials();
        match tokio::time::timeout(CHECK_CREDENTIALS_BOUND, chain).await {
            Err(_) => Err(Check::CredentialsTimedOut(CHECK_CREDENTIALS_BOUND)),
            Ok(Ok(creds)) => {
                let name = provider_name(&creds);
                *primed.first.lock() = Some(creds);
                Ok(name)
            }
            Ok(Err(e)) => Err(match &e {
                CredentialsError::ProviderTimedOut(_) => {
                    Check::CredentialsTimedOut(CHECK_CREDENTIALS_BOUND)
                }
                // A source that calls a service (AssumeRole, SSO, web
                // identity) and could not reach it: the network, not the
                // configuration.
                CredentialsError::ProviderError(_) | CredentialsError::Unhandled(_)
                    if matches!(cause(&e), Cause::Network | Cause::Timeout) =>
                {
                    Check::Unreachable(format!("loading credentials: {}", one_line(&e)))
                }
                CredentialsError::ProviderError(_) | CredentialsError::Unhandled(_)
                    if cause(&e) == Cause::Certificate =>
                {
                    Check::Certificate(one_line(&e))
                }
                _ => Check::NoCredentials(one_line(&e)),
            }),
        }
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

/// What the start-up check found (preflight.rs decides what follows).
#[derive(Debug, PartialEq)]
pub enum Check {
    /// The call succeeded (or named a missing secret: it was authenticated
    /// and authorised all the same).
    Ok {
        action: &'static str,
        source: String,
        elapsed: Duration,
    },
    NoRegion,
    /// The credentials chain gave nothing, or is misconfigured: its cause.
    NoCredentials(String),
    /// The credentials chain did not answer within this bound.
    CredentialsTimedOut(Duration),
    /// The API refused the credentials themselves.
    Rejected {
        code: String,
        message: String,
        source: String,
    },
    /// The credentials work; this principal may not make the call.
    Denied {
        action: &'static str,
        message: String,
    },
    /// Another answer from the service (throttled, 5xx...): it is there.
    Answered {
        action: &'static str,
        text: String,
    },
    /// The endpoint's certificate did not verify.
    Certificate(String),
    /// Another TLS failure (not TLS at all, a protocol mismatch).
    Tls(String),
    /// No answer: DNS, connection refused, timeout.
    Unreachable(String),
}

/// A failed call, as the start-up check sees it.
#[derive(Debug, PartialEq)]
enum CallFailure {
    Rejected { code: String, message: String },
    Denied(String),
    NotFound,
    Answered(String),
    Credentials(String),
    Certificate(String),
    Tls(String),
    Unreachable(String),
}

/// Error codes with which the API refuses the credentials (not the action).
pub const REJECTED_CREDENTIALS: [&str; 10] = [
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "ExpiredTokenException",
    "ExpiredToken",
    "IncompleteSignature",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "MissingAuthenticationToken",
    "InvalidAccessKeyId",
    "AuthFailure",
];

fn judge_call<E, R>(err: &SdkError<E, R>) -> CallFailure
where
    E: ProvideErrorMetadata + StdError + 'static,
    R: HasStatus + std::fmt::Debug + 'static,
{
    match err {
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("").to_string();
            let message = se.err().message().unwrap_or("").to_string();
            let text = format!("{code}: {message}");
            if REJECTED_CREDENTIALS.contains(&code.as_str()) {
                CallFailure::Rejected { code, message }
            } else {
                match classify(Some(&code), Some(&message), Some(se.raw().status_code())).kind {
                    StoreErrorKind::AccessDenied => CallFailure::Denied(text),
                    StoreErrorKind::NotFound => CallFailure::NotFound,
                    _ if code.is_empty() => {
                        CallFailure::Answered(format!("HTTP {}", se.raw().status_code()))
                    }
                    _ => CallFailure::Answered(text),
                }
            }
        }
        SdkError::ResponseError(_) => CallFailure::Answered("unreadable response".into()),
        _ => match cause(err) {
            Cause::Credentials => CallFailure::Credentials(one_line(err)),
            Cause::Certificate => CallFailure::Certificate(one_line(err)),
            Cause::Tls => CallFailure::Tls(one_line(err)),
            _ => CallFailure::Unreachable(one_line(err)),
        },
    }
}

/// The credentials chain, and the credentials the start-up check resolved
/// with it: the client's first request takes those, later ones ask the
/// chain as usual (the SDK caches its answers until they expire).
#[derive(Debug)]
struct Primed {
    first: parking_lot::Mutex<Option<Credentials>>,
    chain: SharedCredentialsProvider,
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
fn provider_name(creds: &Credentials) -> String {
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

/// What an error's chain of causes says went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The credentials provider (the chain found nothing, or failed).
    Credentials,
    /// TLS: the server's certificate did not verify.
    Certificate,
    /// TLS: another handshake failure.
    Tls,
    Timeout,
    /// DNS, connection refused or reset, no route.
    Network,
    Other,
}

/// An error and its causes, outermost first. An io::Error shows its inner
/// error but gives that error's source, not the error itself, as its
/// source: the walk steps into the inner error instead.
fn chain<'a>(err: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut all = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        all.push(e);
        cur = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => e.source(),
        };
    }
    all
}

/// The first telling cause in the chain.
pub fn cause(err: &(dyn StdError + 'static)) -> Cause {
    let mut found = Cause::Other;
    for e in chain(err) {
        if e.downcast_ref::<CredentialsError>().is_some() {
            return Cause::Credentials;
        }
        match e.downcast_ref::<rustls::Error>() {
            Some(rustls::Error::InvalidCertificate(_)) => return Cause::Certificate,
            Some(_) => return Cause::Tls,
            None => {}
        }
        if let Some(c) = e.downcast_ref::<aws_sdk_secretsmanager::error::ConnectorError>() {
            if c.is_timeout() {
                found = Cause::Timeout;
            } else if c.is_io() && found == Cause::Other {
                found = Cause::Network;
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                found = Cause::Timeout;
            } else if found == Cause::Other {
                found = Cause::Network;
            }
        }
        let text = e.to_string();
        if text.contains("dns error") || text.contains("lookup address") {
            found = Cause::Network;
        }
    }
    if found == Cause::Other && err.to_string().contains("timeout") {
        return Cause::Timeout;
    }
    found
}

/// An error and its causes on one line, outermost first ("a: b: c"); a
/// cause whose text an outer one already shows is left out, and so are the
/// SDK's generic layers.
pub fn one_line(err: &(dyn StdError + 'static)) -> String {
    const GENERIC: [&str; 5] = ["dispatch failure", "io error", "other", "timeout", ""];
    let mut parts: Vec<String> = Vec::new();
    for e in chain(err) {
        let text = e
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if !GENERIC.contains(&text.as_str()) && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    if parts.is_empty() {
        return err.to_string();
    }
    parts.join(": ")
}

/// The hint a TLS failure's log line carries.
pub const TLS_HINT: &str = "if a gateway inspects TLS, give its CA certificate in PEM with --ca-bundle, AWS_CA_BUNDLE or ca_bundle in the AWS profile";

/// SDK error -> store error kind. Service codes decide; HTTP 5xx and network
/// failures are transient. Messages keep the real cause, on one line.
fn classify_sdk<E, R>(err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + StdError + 'static,
    R: HasStatus + std::fmt::Debug + 'static,
{
    match &err {
        SdkError::ServiceError(se) => classify(
            se.err().code(),
            se.err().message(),
            Some(se.raw().status_code()),
        ),
        SdkError::TimeoutError(_) => StoreError::new(
            StoreErrorKind::Transient,
            format!("timeout: {}", one_line(&err)),
        ),
        SdkError::DispatchFailure(_) => {
            let text = one_line(&err);
            let message = match cause(&err) {
                Cause::Credentials => format!("no credentials: {text}"),
                Cause::Certificate => format!("TLS certificate not trusted: {text} ({TLS_HINT})"),
                Cause::Tls => format!("TLS failure: {text}"),
                Cause::Timeout => format!("timeout: {text}"),
                _ => format!("could not reach the endpoint: {text}"),
            };
            StoreError::new(StoreErrorKind::Transient, message)
        }
        // The body is not quoted: it could hold a value.
        SdkError::ResponseError(_) => {
            StoreError::new(StoreErrorKind::Transient, "unreadable response")
        }
        _ => StoreError::new(
            StoreErrorKind::Other,
            format!("request could not be built: {}", one_line(&err)),
        ),
    }
}

pub trait HasStatus {
    fn status_code(&self) -> u16;
}

impl HasStatus for aws_sdk_secretsmanager::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// The error table of PRODUCT.md, from the service's error code.
pub fn classify(code: Option<&str>, message: Option<&str>, status: Option<u16>) -> StoreError {
    let msg = message.unwrap_or("");
    let kind = match code.unwrap_or("") {
        "ResourceNotFoundException" => StoreErrorKind::NotFound,
        "AccessDeniedException" | "AccessDenied" => StoreErrorKind::AccessDenied,
        "DecryptionFailure" => StoreErrorKind::DecryptionFailure,
        "LimitExceededException" => StoreErrorKind::LimitExceeded,
        "InvalidParameterException" => StoreErrorKind::InvalidParameter,
        // A secret scheduled for deletion answers InvalidRequest: it is gone.
        "InvalidRequestException" if msg.contains("deleted") || msg.contains("deletion") => {
            StoreErrorKind::NotFound
        }
        "InvalidRequestException" => StoreErrorKind::InvalidRequest,
        "ResourceExistsException" => StoreErrorKind::ResourceExists,
        "ThrottlingException" | "TooManyRequestsException" | "RequestLimitExceeded" => {
            StoreErrorKind::Throttled
        }
        "InternalServiceError" | "InternalFailure" | "ServiceUnavailable" => {
            StoreErrorKind::Transient
        }
        _ if status.is_some_and(|s| s >= 500) => StoreErrorKind::Transient,
        _ => StoreErrorKind::Other,
    };
    let text = match code {
        Some(c) => format!("{c}: {msg}"),
        None => format!("HTTP {}: {msg}", status.unwrap_or(0)),
    };
    StoreError::new(kind, text)
}

fn to_system_time(t: Option<&aws_sdk_secretsmanager::primitives::DateTime>) -> SystemTime {
    t.and_then(|d| SystemTime::try_from(*d).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

#[async_trait]
impl SecretStore for AwsStore {
    async fn list_secrets(&self, prefix: Option<&str>) -> StoreResult<Vec<SecretName>> {
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
        while let Some(page) = pages.next().await {
            let page = page.map_err(classify_sdk)?;
            for s in page.secret_list() {
                if s.deleted_date().is_some() {
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

impl AwsStore {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(code: &str, msg: &str, status: u16) -> StoreErrorKind {
        classify(Some(code), Some(msg), Some(status)).kind
    }

    #[test]
    fn error_table_rows_map_to_their_kinds() {
        use crate::error::Error;
        let errno = |code: &str, msg: &str, status: u16| {
            Error::from(classify(Some(code), Some(msg), Some(status))).errno()
        };
        // secret or version does not exist, or is scheduled for deletion -> ENOENT
        assert_eq!(errno("ResourceNotFoundException", "x", 400), libc::ENOENT);
        assert_eq!(
            errno(
                "InvalidRequestException",
                "You can't perform this operation on the secret because it was marked for deletion.",
                400
            ),
            libc::ENOENT
        );
        assert_eq!(
            errno(
                "InvalidRequestException",
                "secret is currently marked deleted",
                400
            ),
            libc::ENOENT
        );
        // AccessDenied, KMS DecryptionFailure -> EACCES
        assert_eq!(errno("AccessDeniedException", "no", 400), libc::EACCES);
        assert_eq!(errno("DecryptionFailure", "kms", 400), libc::EACCES);
        // version quota -> EDQUOT
        assert_eq!(errno("LimitExceededException", "quota", 400), libc::EDQUOT);
        // invalid value -> EINVAL
        assert_eq!(errno("InvalidParameterException", "bad", 400), libc::EINVAL);
        // network failure or 5xx with no cached value -> EIO
        assert_eq!(errno("InternalServiceError", "", 500), libc::EIO);
        assert_eq!(errno("Whatever", "", 503), libc::EIO);
        assert_eq!(errno("ThrottlingException", "slow down", 400), libc::EIO);
    }

    #[test]
    fn transient_kinds_are_the_ones_stale_if_error_covers() {
        assert!(classify(Some("ThrottlingException"), None, Some(400)).is_transient());
        assert!(classify(None, None, Some(502)).is_transient());
        assert!(!classify(Some("AccessDeniedException"), None, Some(400)).is_transient());
        assert!(!classify(Some("ResourceNotFoundException"), None, Some(404)).is_transient());
        assert_eq!(
            kind("ResourceExistsException", "", 400),
            StoreErrorKind::ResourceExists
        );
    }

    /// "outer: inner" errors, as hyper and the SDK nest them.
    #[derive(Debug)]
    struct Layer(&'static str, Box<dyn StdError + Send + Sync>);
    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl StdError for Layer {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&*self.1)
        }
    }

    #[test]
    fn error_chains_become_one_line_with_their_real_cause() {
        use std::io::{Error as IoError, ErrorKind};
        let refused = Layer(
            "client error (Connect)",
            Box::new(Layer(
                "tcp connect error",
                Box::new(IoError::new(
                    ErrorKind::ConnectionRefused,
                    "Connection refused (os error 111)",
                )),
            )),
        );
        assert_eq!(
            one_line(&refused),
            "client error (Connect): tcp connect error: Connection refused (os error 111)"
        );
        assert_eq!(cause(&refused), Cause::Network);

        // tokio-rustls hands a rustls error inside an io::Error, which
        // does not give it as its source; the SDK may wrap it once more.
        let cert = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped = Layer(
            "client error (Connect)",
            Box::new(IoError::other(IoError::new(ErrorKind::InvalidData, cert))),
        );
        assert_eq!(cause(&wrapped), Cause::Certificate);
        let line = one_line(&wrapped);
        assert!(
            line.contains("UnknownIssuer") && !line.contains('\n'),
            "{line}"
        );
        let proto = Layer(
            "client error (Connect)",
            Box::new(IoError::new(
                ErrorKind::InvalidData,
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
            )),
        );
        assert_eq!(cause(&proto), Cause::Tls);

        let creds = Layer(
            "dispatch failure",
            Box::new(CredentialsError::not_loaded("no providers in chain")),
        );
        assert_eq!(cause(&creds), Cause::Credentials);
        assert_eq!(
            one_line(&creds),
            "the credential provider was not enabled: no providers in chain"
        );
        let multi = IoError::other("first line\n  second line");
        assert_eq!(one_line(&multi), "first line second line");
    }

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
