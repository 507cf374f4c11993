//! Command line and `-o` mount options, parsed once into a validated `Config`.
//! Every flag has a `-o` spelling, so fstab and mount(8) can start the daemon.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::fs::FsConfig;
use crate::store::SecretName;
use crate::store::aws::AwsOptions;

#[derive(Parser, Debug, Default)]
#[command(
    name = "secretsfs",
    version,
    about = "Mount AWS Secrets Manager as a filesystem"
)]
pub struct Cli {
    /// `[SOURCE] MOUNTPOINT`: mount(8) passes a source first; it is ignored.
    #[arg(num_args = 1..=2, required = true, value_name = "MOUNTPOINT")]
    pub paths: Vec<PathBuf>,
    /// Cache TTL for staging labels and listings, in seconds.
    #[arg(long)]
    pub ttl: Option<u64>,
    /// Expose only secrets whose names start with PREFIX.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Expose exactly these secrets (repeatable); no ListSecrets call.
    #[arg(long = "secret", value_name = "NAME")]
    pub secrets: Vec<String>,
    #[arg(long)]
    pub region: Option<String>,
    #[arg(long)]
    pub profile: Option<String>,
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// Serve the embedded local store in DIR instead of AWS.
    #[arg(long, value_name = "DIR")]
    pub local: Option<PathBuf>,
    /// With --local: seed a few demo secrets into an empty store.
    #[arg(long)]
    pub demo: bool,
    #[arg(long)]
    pub uid: Option<u32>,
    #[arg(long)]
    pub gid: Option<u32>,
    /// Let other users in (the kernel then enforces the file modes).
    #[arg(long)]
    pub allow_other: bool,
    /// Refuse every write; reads are served from the kernel's page cache.
    #[arg(long)]
    pub read_only: bool,
    /// Lock the daemon's memory (mlockall).
    #[arg(long)]
    pub mlock: bool,
    /// On AWS: let mkdir + writing `current` create a secret (CreateSecret).
    #[arg(long)]
    pub allow_create: bool,
    /// Mount options, comma-separated: the flags above in key[=value] form.
    #[arg(short = 'o', value_name = "OPT,...")]
    pub options: Vec<String>,
}

#[derive(Clone, Debug)]
pub enum Backend {
    Aws(AwsOptions),
    Local { dir: PathBuf, demo: bool },
}

#[derive(Clone, Debug)]
pub struct Config {
    pub mountpoint: PathBuf,
    pub fs: FsConfig,
    pub backend: Backend,
    pub allow_other: bool,
    pub mlock: bool,
}

/// Options mount(8) and fstab pass along that are the kernel's business or
/// mount(8)'s own; they are accepted and have no effect here.
const MOUNT_ONLY: [&str; 14] = [
    "rw", "defaults", "auto", "noauto", "user", "nouser", "users", "_netdev", "nofail", "nosuid",
    "nodev", "noexec", "noatime", "relatime",
];

impl Cli {
    /// Folds `-o key=value,...` into the flags; unknown keys are errors.
    fn apply_options(&mut self) -> Result<(), String> {
        let opts: Vec<String> = self
            .options
            .iter()
            .flat_map(|o| o.split(','))
            .filter(|o| !o.is_empty())
            .map(str::to_string)
            .collect();
        for opt in opts {
            let (key, value) = match opt.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (opt.clone(), None),
            };
            let key = key.replace('-', "_");
            let need =
                |v: Option<String>| v.ok_or_else(|| format!("mount option '{key}' needs a value"));
            let num = |v: Option<String>| -> Result<u64, String> {
                need(v)?
                    .parse()
                    .map_err(|_| format!("mount option '{key}' needs a number"))
            };
            match key.as_str() {
                "ttl" => self.ttl = Some(num(value)?),
                "prefix" => self.prefix = Some(need(value)?),
                "secret" => self.secrets.push(need(value)?),
                "region" => self.region = Some(need(value)?),
                "profile" => self.profile = Some(need(value)?),
                "endpoint_url" => self.endpoint_url = Some(need(value)?),
                "local" => self.local = Some(need(value)?.into()),
                "uid" => self.uid = Some(num(value)? as u32),
                "gid" => self.gid = Some(num(value)? as u32),
                "demo" => self.demo = true,
                "allow_other" => self.allow_other = true,
                "read_only" | "ro" => self.read_only = true,
                "mlock" => self.mlock = true,
                "allow_create" => self.allow_create = true,
                k if MOUNT_ONLY.contains(&k) => {}
                _ => return Err(format!("unknown mount option '{key}'")),
            }
        }
        Ok(())
    }

    pub fn into_config(mut self) -> Result<Config, String> {
        self.apply_options()?;
        let mountpoint = self
            .paths
            .last()
            .cloned()
            .ok_or("a MOUNTPOINT is required")?;
        let ttl = Duration::from_secs(self.ttl.unwrap_or(300));
        if ttl > Duration::from_secs(7 * 24 * 3600) {
            return Err("--ttl must be at most 604800 seconds (a week)".into());
        }
        let secrets = if self.secrets.is_empty() {
            None
        } else {
            if let Some(bad) = self.secrets.iter().find(|s| !crate::tree::valid_path(s)) {
                return Err(format!(
                    "--secret '{bad}' cannot be a path (empty, '.' or '..' component)"
                ));
            }
            Some(
                self.secrets
                    .iter()
                    .map(|s| SecretName::new(s.as_str()))
                    .collect(),
            )
        };
        if secrets.is_some() && self.prefix.is_some() {
            return Err("--secret and --prefix cannot be combined".into());
        }
        if self.demo && self.local.is_none() {
            return Err("--demo needs --local DIR".into());
        }
        let backend = match self.local {
            Some(dir) => Backend::Local {
                dir,
                demo: self.demo,
            },
            None => Backend::Aws(AwsOptions {
                region: self.region,
                profile: self.profile,
                endpoint_url: self.endpoint_url,
            }),
        };
        let mut fs = FsConfig::new(ttl);
        fs.prefix = self.prefix.filter(|p| !p.is_empty());
        fs.secrets = secrets;
        // SAFETY: geteuid/getegid cannot fail.
        fs.uid = self.uid.unwrap_or_else(|| unsafe { libc::geteuid() });
        fs.gid = self.gid.unwrap_or_else(|| unsafe { libc::getegid() });
        fs.read_only = self.read_only;
        fs.allow_create = self.allow_create || matches!(backend, Backend::Local { .. });
        fs.cache_capacity = NonZeroUsize::new(4096).expect("non-zero");
        Ok(Config {
            mountpoint,
            fs,
            backend,
            allow_other: self.allow_other,
            mlock: self.mlock,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(std::iter::once("secretsfs").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.into_config()
    }

    #[test]
    fn defaults_and_flags() {
        let c = parse(&["/mnt"]).unwrap();
        assert_eq!(c.fs.ttl, Duration::from_secs(300));
        assert!(matches!(c.backend, Backend::Aws(_)));
        let c = parse(&["--ttl", "5", "--prefix", "prod/", "--read-only", "/mnt"]).unwrap();
        assert_eq!(c.fs.ttl, Duration::from_secs(5));
        assert_eq!(c.fs.prefix.as_deref(), Some("prod/"));
        assert!(c.fs.read_only);
    }

    #[test]
    fn mount_options_spell_every_flag_and_source_is_ignored() {
        let c = parse(&[
            "secretsfs",
            "/mnt",
            "-o",
            "rw,_netdev,ttl=7,local=/tmp/x,allow_other,uid=5,read-only",
        ])
        .unwrap();
        assert_eq!(c.mountpoint, PathBuf::from("/mnt"));
        assert_eq!(c.fs.ttl, Duration::from_secs(7));
        assert!(matches!(c.backend, Backend::Local { .. }));
        assert!(c.allow_other && c.fs.read_only && c.fs.allow_create);
        assert_eq!(c.fs.uid, 5);
    }

    #[test]
    fn unknown_or_bad_options_name_the_option() {
        let e = parse(&["/mnt", "-o", "ttl=5,frobnicate"]).unwrap_err();
        assert!(e.contains("frobnicate"), "{e}");
        let e = parse(&["/mnt", "-o", "ttl=soon"]).unwrap_err();
        assert!(e.contains("ttl"), "{e}");
        let e = parse(&["--secret", "a/../b", "/mnt"]).unwrap_err();
        assert!(e.contains("--secret"), "{e}");
    }
}
