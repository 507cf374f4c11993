//! The configuration: the command line, `-o` and the config file resolved
//! into one validated `Config`, and SIGHUP's `reload()`. The file's tables
//! are schema.rs, the shared id and mode types ids.rs, every default
//! defaults.rs; those three are leaves that fs and rules may import.

mod cli;
pub mod defaults;
pub mod ids;
mod load;
pub mod schema;
pub mod secret_spec;
#[cfg(test)]
mod tests;

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use crate::fs::FsConfig;
use crate::store::aws::AwsOptions;
use crate::store::ssm::SsmOptions;
use defaults::*;
use schema::{FileDuration, duration};

pub use crate::VERSION;
pub use cli::{Cli, ENVIRONMENT};
pub use ids::{group_id, user_id};
pub use load::{Reloaded, reload};
pub use schema::DURATION_FORMS;

#[derive(Clone, Debug)]
pub enum Backend {
    Aws(AwsOptions),
    /// `--source ssm`: Parameter Store.
    Ssm(SsmOptions),
    Local {
        dir: PathBuf,
        demo: bool,
    },
}

#[derive(Clone, Debug)]
pub struct Config {
    pub mountpoint: PathBuf,
    pub fs: FsConfig,
    pub backend: Backend,
    pub allow_other: bool,
    pub mlock: bool,
    pub threads: NonZeroUsize,
    /// Most backend calls open at once.
    pub max_calls: usize,
    /// Upper bound of the random wait before mounting.
    pub start_jitter: Duration,
    /// Mount over a mountpoint that is not empty.
    pub nonempty: bool,
    /// Log lines as JSON objects.
    pub log_json: bool,
    /// `--config FILE`, re-read on SIGHUP (templates and rules).
    pub config_file: Option<PathBuf>,
    /// SELinux mount options (context=...), checked.
    pub selinux: crate::selinux::Contexts,
}

impl Cli {
    /// Fills what the flags left unset from the config file.
    fn apply_file(&mut self) -> Result<(), String> {
        let Some(path) = &self.config else {
            return Ok(());
        };
        let loaded = load::load(path)?;
        let f = loaded.settings;
        self.templates = loaded.templates;
        self.rules = Some(loaded.rules);
        self.access = Some(loaded.access);
        self.access_log = self.access_log.take().or(f.access_log);
        self.ttl = self.ttl.take().or(f.ttl.map(FileDuration::text));
        self.prefix = self.prefix.take().or(f.prefix);
        if self.secrets.is_empty() {
            self.secrets = f.secrets.unwrap_or_default();
            for t in f.secret.unwrap_or_default() {
                self.secrets.push(t.as_option()?);
            }
        }
        if self.failover_regions.is_empty() {
            self.failover_regions = f.failover_region.unwrap_or_default();
        }
        self.region = self.region.take().or(f.region);
        self.profile = self.profile.take().or(f.profile);
        self.endpoint_url = self.endpoint_url.take().or(f.endpoint_url);
        self.ca_bundle = self.ca_bundle.take().or(f.ca_bundle);
        self.local = self.local.take().or(f.local);
        self.source = self.source.take().or(f.source);
        self.ssm_create_type = self.ssm_create_type.take().or(f.ssm_create_type);
        self.ssm_key_id = self.ssm_key_id.take().or(f.ssm_key_id);
        self.uid = self.uid.or(loaded.uid);
        self.gid = self.gid.or(loaded.gid);
        self.threads = self.threads.or(f.threads);
        self.cache_size = self.cache_size.or(f.cache_size);
        self.max_stale = self
            .max_stale
            .take()
            .or(f.max_stale.map(FileDuration::text));
        self.max_calls = self.max_calls.or(f.max_calls);
        self.start_jitter = self
            .start_jitter
            .take()
            .or(f.start_jitter.map(FileDuration::text));
        self.on_change = self.on_change.take().or(f.on_change);
        self.watch = self.watch.take().or(f.watch.map(FileDuration::text));
        self.hook_timeout = self
            .hook_timeout
            .take()
            .or(f.hook_timeout.map(FileDuration::text));
        self.file_hooks = f.hook.unwrap_or_default();
        self.demo |= f.demo.unwrap_or(false);
        self.allow_other |= f.allow_other.unwrap_or(false);
        self.read_only |= f.read_only.unwrap_or(false);
        self.mlock |= f.mlock.unwrap_or(false);
        self.allow_create |= f.allow_create.unwrap_or(false);
        self.trim_newline |= f.trim_newline.unwrap_or(false);
        self.selinux.or(crate::selinux::ContextArgs {
            context: f.context,
            fscontext: f.fscontext,
            defcontext: f.defcontext,
            rootcontext: f.rootcontext,
        });
        Ok(())
    }

    /// Whether `--source ssm` is chosen (checked); its paths then name
    /// parameters: `--prefix /app/` and `--secret /app/db/url` are the tree's
    /// `app/` and `app/db/url` (the leading `/` is the tree's root).
    fn ssm_source(&mut self) -> Result<bool, String> {
        let ssm = match self.source.as_deref() {
            None | Some("secretsmanager") => false,
            Some("ssm") => true,
            Some(other) => {
                return Err(format!("source '{other}': use secretsmanager or ssm"));
            }
        };
        if ssm && self.local.is_some() {
            return Err("--source ssm and --local cannot be combined".into());
        }
        if !ssm && (self.ssm_create_type.is_some() || self.ssm_key_id.is_some()) {
            return Err("--ssm-create-type and --ssm-key-id need --source ssm".into());
        }
        if ssm && let Some(flat) = self.secrets.iter().find(|s| !s.starts_with('/')) {
            // `db-url` and `/db-url` are two parameters, and the tree shows
            // only the hierarchy: serving `/db-url` for it would be another
            // parameter's value.
            return Err(format!(
                "--secret '{flat}': with --source ssm, name a parameter by its path ('/{flat}'); parameters with flat names (no leading '/') cannot be mounted"
            ));
        }
        if ssm {
            let root = |s: &mut String| {
                if let Some(rest) = s.strip_prefix('/') {
                    *s = rest.to_string();
                }
            };
            self.prefix.iter_mut().for_each(root);
            self.secrets.iter_mut().for_each(root);
        }
        Ok(ssm)
    }

    /// The change hooks: `--on-change` for every secret, then each
    /// `[[hook]]`; the intervals and timeouts they leave unset default to
    /// `--watch` and `--hook-timeout`.
    fn hooks(&self) -> Result<Vec<crate::hooks::HookSpec>, String> {
        use crate::hooks::HookSpec;
        let or = |key: &str, v: Option<&str>, d: Duration| v.map_or(Ok(d), |v| duration(key, v));
        let interval = or("watch", self.watch.as_deref(), DEFAULT_WATCH)?;
        let timeout = or(
            "hook_timeout",
            self.hook_timeout.as_deref(),
            DEFAULT_HOOK_TIMEOUT,
        )?;
        // On the command line they can only be a mistake without a hook;
        // in the file they are the defaults of the hooks it may declare.
        if self.on_change.is_none() && self.file_hooks.is_empty() && self.hook_flags {
            return Err("--watch and --hook-timeout need --on-change (or [[hook]] tables)".into());
        }
        let mut hooks = Vec::new();
        if let Some(cmd) = &self.on_change {
            hooks.push(HookSpec::new("**", cmd, interval, timeout)?);
        }
        for h in &self.file_hooks {
            let name = |e: String| format!("[[hook]] '{}': {e}", h.pattern);
            let text = |d: &Option<FileDuration>| d.clone().map(FileDuration::text);
            let interval = or("watch", text(&h.watch).as_deref(), interval).map_err(name)?;
            let timeout = or("timeout", text(&h.timeout).as_deref(), timeout).map_err(name)?;
            hooks.push(HookSpec::new(&h.pattern, &h.on_change, interval, timeout).map_err(name)?);
        }
        Ok(hooks)
    }

    pub fn into_config(mut self) -> Result<Config, String> {
        self.apply_options()?;
        self.hook_flags = self.watch.is_some() || self.hook_timeout.is_some();
        self.apply_file()?;
        let ssm = self.ssm_source()?;
        let mountpoint = self
            .helper_mountpoint
            .take()
            .unwrap_or_else(|| std::mem::take(&mut self.mountpoint));
        if mountpoint.as_os_str().is_empty() {
            return Err("a MOUNTPOINT is required".into());
        }
        // ttl=0 would make every read an API call and turn caching off for
        // the kernel too: refused, as a typo more often than a wish.
        let ttl = match &self.ttl {
            Some(v) => duration("ttl", v)?,
            None => DEFAULT_TTL,
        };
        if !(Duration::from_secs(1)..=Duration::from_secs(604_800)).contains(&ttl) {
            return Err(format!(
                "ttl must be from 1s to 7d (604800 seconds), not '{}'",
                self.ttl.as_deref().unwrap_or_default()
            ));
        }
        let hooks = self.hooks()?;
        let named = secret_spec::parse(&self.secrets)?;
        let secrets = (!named.paths.is_empty()).then_some(named.paths);
        if secrets.is_some() && self.prefix.is_some() {
            return Err("--secret and --prefix cannot be combined".into());
        }
        if self.demo && self.local.is_none() {
            return Err("--demo needs --local DIR".into());
        }
        if self.local.is_some() && !(named.arns.is_empty() && self.failover_regions.is_empty()) {
            return Err(
                "--local cannot be combined with --failover-region or secrets by ARN".into(),
            );
        }
        if ssm && !(named.arns.is_empty() && self.failover_regions.is_empty()) {
            return Err(
                "--failover-region and secrets by ARN are Secrets Manager's: not with --source ssm"
                    .into(),
            );
        }
        let failover_regions = self
            .failover_regions
            .iter()
            .map(|r| crate::store::aws::RegionSpec::parse(r))
            .collect::<Result<Vec<_>, _>>()?;
        let aws = AwsOptions {
            region: self.region,
            profile: self.profile,
            endpoint_url: self.endpoint_url,
            ca_bundle: self.ca_bundle,
            failover_regions,
            arns: named.arns,
        };
        let backend = match self.local {
            Some(dir) => Backend::Local {
                dir,
                demo: self.demo,
            },
            None if ssm => Backend::Ssm(SsmOptions {
                aws,
                create_type: self.ssm_create_type.take(),
                create_key_id: self.ssm_key_id.take(),
            }),
            None => Backend::Aws(aws),
        };
        let mut fs = FsConfig::new(ttl);
        fs.hooks = hooks;
        fs.templates = std::mem::take(&mut self.templates);
        fs.prefix = self.prefix.filter(|p| !p.is_empty());
        fs.secrets = secrets;
        fs.uid = self.uid.unwrap_or_else(|| nix::unistd::geteuid().as_raw());
        fs.gid = self.gid.unwrap_or_else(|| nix::unistd::getegid().as_raw());
        fs.read_only = self.read_only;
        fs.trim_newline = self.trim_newline;
        fs.rules = std::sync::Arc::new(self.rules.take().unwrap_or_default());
        fs.access = crate::access::from_config(self.access.take(), self.access_log.as_deref())?;
        fs.allow_create = self.allow_create || matches!(backend, Backend::Local { .. });
        fs.max_stale = match &self.max_stale {
            Some(v) => Some(duration("max_stale", v)?),
            None => Some(DEFAULT_MAX_STALE),
        };
        fs.cache_bytes = match self.cache_size.unwrap_or(DEFAULT_CACHE_BYTES >> 20) {
            n @ 1..=4096 => NonZeroUsize::new(n << 20).expect("non-zero"),
            _ => return Err("cache_size must be between 1 and 4096 MiB".into()),
        };
        let threads = NonZeroUsize::new(self.threads.unwrap_or(DEFAULT_THREADS))
            .filter(|n| n.get() <= 64)
            .ok_or("threads must be between 1 and 64")?;
        let max_calls = match self.max_calls.unwrap_or(DEFAULT_MAX_CALLS) {
            n @ 1..=256 => n,
            _ => return Err("max_calls must be between 1 and 256".into()),
        };
        let start_jitter = match &self.start_jitter {
            Some(v) => duration("start_jitter", v)?,
            None => DEFAULT_START_JITTER,
        };
        if start_jitter > Duration::from_secs(600) {
            return Err("start_jitter must be at most 10m".into());
        }
        let selinux = std::mem::take(&mut self.selinux).into_contexts()?;
        Ok(Config {
            selinux,
            threads,
            max_calls,
            start_jitter,
            nonempty: self.nonempty,
            log_json: self.log_format.as_deref() == Some("json"),
            config_file: self.config.clone(),
            mountpoint,
            fs,
            backend,
            allow_other: self.allow_other,
            mlock: self.mlock,
        })
    }
}
