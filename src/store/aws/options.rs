//! How a Secrets Manager (or Parameter Store) client is asked to be set
//! up (`AwsOptions`, from the configuration) and how it was (`About`, for
//! the start-up check's messages): a leaf of store/aws/.

use std::path::PathBuf;

use super::arn::Arn;
use crate::store::SecretName;

/// Where to find Secrets Manager; unset fields fall back to the standard AWS
/// chain (AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL, credentials).
#[derive(Clone, Debug, Default)]
pub struct AwsOptions {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
    /// `--ca-bundle`: CA certificates trusted besides the system's.
    pub ca_bundle: Option<std::path::PathBuf>,
    /// `--failover-region`: where reads go when the primary fails, in order.
    pub failover_regions: Vec<RegionSpec>,
    /// `--secret PATH=ARN` and `[[secret]]` tables: the path each ARN is
    /// mounted at (store/aws/regions.rs routes its calls).
    pub arns: Vec<(SecretName, Arn)>,
}

/// A failover region (`--failover-region REGION[=URL]`): its name, and its
/// own endpoint when the primary's is set explicitly and not valid there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionSpec {
    pub name: String,
    pub endpoint: Option<String>,
}

impl RegionSpec {
    /// `REGION` or `REGION=URL`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (name, endpoint) = match s.split_once('=') {
            Some((n, url)) if url.starts_with("http://") || url.starts_with("https://") => {
                (n, Some(url.to_string()))
            }
            Some(_) => {
                return Err(format!(
                    "--failover-region '{s}': the endpoint must be an http:// or https:// URL"
                ));
            }
            None => (s, None),
        };
        let region_ok = name.contains('-')
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !region_ok {
            return Err(format!(
                "--failover-region '{s}': '{name}' is not a region name (such as eu-west-1)"
            ));
        }
        Ok(Self {
            name: name.to_string(),
            endpoint,
        })
    }
}

impl AwsOptions {
    /// More than one region's client may be called: the store is `Regions`.
    pub fn uses_regions(&self) -> bool {
        !self.failover_regions.is_empty() || !self.arns.is_empty()
    }
}

/// How the store was set up, for the start-up check's messages.
#[derive(Clone, Debug, Default)]
pub struct About {
    /// The service, as messages name it (`Secrets Manager`, `Parameter Store`).
    pub service: &'static str,
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
