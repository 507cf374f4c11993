//! Opening a Secrets Manager store: with the client `client::load` makes,
//! or (failover, ARNs) a copy of it for another region.

use std::path::Path;
use std::time::Duration;

use super::AwsStore;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_secretsmanager::Client;

use super::client::{MAX_ATTEMPTS, QUICK_ATTEMPT, load};
use super::options::AwsOptions;

impl AwsStore {
    /// Loads the AWS configuration and builds the client; no call is made.
    /// Fails only on a CA bundle that cannot be used.
    pub async fn connect(opts: &AwsOptions) -> Result<Self, String> {
        Self::connect_with(opts, opts.ca_bundle.as_deref()).await
    }

    /// `connect` with a CA bundle named on the command line (`--ca-bundle`),
    /// which overrides AWS_CA_BUNDLE and the profile's `ca_bundle`.
    pub async fn connect_with(opts: &AwsOptions, ca_bundle: Option<&Path>) -> Result<Self, String> {
        let loaded = load(opts, ca_bundle, "secretsmanager", "Secrets Manager").await?;
        let mut builder = aws_sdk_secretsmanager::config::Builder::from(&loaded.config);
        builder.set_credentials_provider(loaded.provider);
        Ok(Self {
            client: Client::from_conf(builder.build()),
            credentials: loaded.credentials,
            about: loaded.about,
        })
    }
}

impl AwsStore {
    /// The same client (credentials, endpoint, TLS, timeouts) calling `region`.
    pub fn in_region(&self, region: &str, endpoint: Option<&str>) -> AwsStore {
        self.derived(region, false, endpoint)
    }

    /// The same client (credentials, endpoint, TLS) calling `region`; with
    /// `quick`, tuned for a region that another may stand in for: each
    /// attempt bounded by `QUICK_ATTEMPT` and retries 100 ms apart, so
    /// that a failing region is left for the next one soon after its
    /// retries, not after the default 15 s.
    /// `endpoint` replaces the one in use (`--failover-region REGION=URL`).
    pub(super) fn derived(&self, region: &str, quick: bool, endpoint: Option<&str>) -> AwsStore {
        let mut builder = self
            .client
            .config()
            .to_builder()
            .region(aws_config::Region::new(region.to_string()));
        if let Some(url) = endpoint {
            builder = builder.endpoint_url(url);
        }
        if quick {
            builder = builder
                .retry_config(
                    RetryConfig::standard()
                        .with_max_attempts(MAX_ATTEMPTS)
                        .with_initial_backoff(Duration::from_millis(100)),
                )
                .timeout_config(
                    TimeoutConfig::builder()
                        .connect_timeout(Duration::from_secs(1))
                        .operation_attempt_timeout(QUICK_ATTEMPT)
                        .operation_timeout(Duration::from_secs(15))
                        .build(),
                );
        }
        let mut about = self.about.clone();
        about.region = Some(region.to_string());
        if let Some(url) = endpoint {
            about.endpoint = url.to_string();
        } else if self.about.endpoint.contains(".amazonaws.com")
            && let Some(here) = self.about.region.as_deref()
        {
            about.endpoint = self.about.endpoint.replace(here, region);
        }
        AwsStore {
            client: Client::from_conf(builder.build()),
            credentials: self.credentials.clone(),
            about,
        }
    }
}
