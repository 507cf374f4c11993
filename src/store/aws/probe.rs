//! The start-up check's two steps against an AWS source (the `Probe`
//! trait; Secrets Manager's here), with no SDK type
//! in their answers: the credentials chain resolved once (and handed to the
//! client's first call), and one cheap authenticated call with no retry.
//! `preflight/` orders and bounds them, and judges what they found.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::ProvideCredentials;
use futures::future::BoxFuture;

use super::client::{Primed, provider_name};
use super::errors::{CallFailure, CredentialsFailure, judge_call, judge_credentials};
use super::{About, AwsStore};
use crate::store::SecretName;

/// What the start-up check (`preflight/`) needs of an AWS source: how it
/// was set up, its credentials chain resolved once, and one cheap
/// authenticated call with no retry, each attempt bounded by `bound`.
pub trait Probe: Send + Sync + 'static {
    fn about(&self) -> &About;
    /// Resolves the credentials chain once and primes the client with what
    /// it gives: the name of the source that gave them.
    fn prime_credentials(&self) -> BoxFuture<'_, Result<String, CredentialsFailure>>;
    /// The action's name, and the call: of `secret` when one is named,
    /// else a listing of one result.
    fn probe(
        &self,
        secret: Option<&SecretName>,
        bound: Duration,
    ) -> (&'static str, BoxFuture<'_, Result<(), CallFailure>>);
}

/// `Probe::prime_credentials` for any client primed by `client::load`.
pub(in crate::store) async fn prime(
    credentials: Option<&std::sync::Arc<Primed>>,
) -> Result<String, CredentialsFailure> {
    let Some(primed) = credentials else {
        return Err(CredentialsFailure::Missing(
            "no credentials provider is configured".into(),
        ));
    };
    let creds = primed
        .chain
        .provide_credentials()
        .await
        .map_err(|e| judge_credentials(&e))?;
    let name = provider_name(&creds);
    *primed.first.lock() = Some(creds);
    Ok(name)
}

/// Retries and timeouts of a start-up check call: one attempt within `bound`.
pub(in crate::store) fn bounded(bound: Duration) -> (RetryConfig, TimeoutConfig) {
    (
        RetryConfig::standard().with_max_attempts(1),
        TimeoutConfig::builder()
            .connect_timeout(bound.min(Duration::from_secs(2)))
            .operation_attempt_timeout(bound)
            .operation_timeout(bound)
            .build(),
    )
}

impl Probe for AwsStore {
    fn about(&self) -> &About {
        &self.about
    }

    fn prime_credentials(&self) -> BoxFuture<'_, Result<String, CredentialsFailure>> {
        Box::pin(prime(self.credentials.as_ref()))
    }

    /// One cheap authenticated call with no retry, each attempt bounded by
    /// `bound`: DescribeSecret of `secret`, or ListSecrets with one result.
    /// The action's name, and the call.
    fn probe(
        &self,
        secret: Option<&SecretName>,
        bound: Duration,
    ) -> (&'static str, BoxFuture<'_, Result<(), CallFailure>>) {
        let (retry, timeout) = bounded(bound);
        let config = aws_sdk_secretsmanager::config::Builder::default()
            .retry_config(retry)
            .timeout_config(timeout);
        match secret {
            Some(name) => {
                let call = self
                    .client
                    .describe_secret()
                    .secret_id(name.as_str())
                    .customize()
                    .config_override(config)
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
                    .config_override(config)
                    .send();
                let call = async move { call.await.map(|_| ()).map_err(|e| judge_call(&e)) };
                ("ListSecrets", Box::pin(call))
            }
        }
    }
}
