//! The start-up check's two steps against Secrets Manager, with no SDK type
//! in their answers: the credentials chain resolved once (and handed to the
//! client's first call), and one cheap authenticated call with no retry.
//! `preflight/` orders and bounds them, and judges what they found.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::ProvideCredentials;
use futures::future::BoxFuture;

use super::AwsStore;
use super::client::provider_name;
use super::errors::{CallFailure, CredentialsFailure, judge_call, judge_credentials};
use crate::store::SecretName;

impl AwsStore {
    /// Resolves the credentials chain once and primes the client with what
    /// it gives: the name of the source that gave them.
    pub async fn prime_credentials(&self) -> Result<String, CredentialsFailure> {
        let Some(primed) = &self.credentials else {
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

    /// One cheap authenticated call with no retry, each attempt bounded by
    /// `bound`: DescribeSecret of `secret`, or ListSecrets with one result.
    /// The action's name, and the call.
    pub fn probe(
        &self,
        secret: Option<&SecretName>,
        bound: Duration,
    ) -> (&'static str, BoxFuture<'_, Result<(), CallFailure>>) {
        let config = aws_sdk_secretsmanager::config::Builder::default()
            .retry_config(RetryConfig::standard().with_max_attempts(1))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(bound.min(Duration::from_secs(2)))
                    .operation_attempt_timeout(bound)
                    .operation_timeout(bound)
                    .build(),
            );
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
