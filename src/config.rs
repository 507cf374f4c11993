//! Command line and `-o` mount options, parsed once into a validated `Config`.
//! Every flag has a `-o` spelling, so fstab and mount(8) can start the daemon.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

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
    /// FUSE session threads (1-64).
    #[arg(long)]
    pub threads: Option<usize>,
    /// How long a value is served while its refreshes fail (e.g. 90s, 30m,
    /// 2h, 1d; 0 = never serve a stale value; default 1h).
    #[arg(long, value_name = "DURATION")]
    pub max_stale: Option<String>,
    /// Memory for cached secret values, in MiB (1-4096; default 32).
    #[arg(long, value_name = "MIB")]
    pub cache_size: Option<usize>,
    /// Most API calls open at once (1-256; default 16); more wait their turn.
    #[arg(long, value_name = "N")]
    pub max_calls: Option<usize>,
    /// Wait a random time up to DURATION before mounting (e.g. 30s), so
    /// that a fleet restarting at once spreads its first calls; default 0.
    #[arg(long, value_name = "DURATION")]
    pub start_jitter: Option<String>,
    /// Settings in a TOML file (keys as the long flags, with underscores);
    /// flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
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
    pub threads: NonZeroUsize,
    /// Most backend calls open at once.
    pub max_calls: usize,
    /// Upper bound of the random wait before mounting.
    pub start_jitter: Duration,
}

/// Options mount(8) and fstab pass along that are the kernel's business or
/// mount(8)'s own; they are accepted and have no effect here.
/// secretsfs always mounts nosuid,nodev,noexec whatever they say.
const MOUNT_ONLY: [&str; 22] = [
    "rw",
    "defaults",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "_netdev",
    "nofail",
    "nosuid",
    "nodev",
    "noexec",
    "noatime",
    "relatime",
    "atime",
    "suid",
    "dev",
    "exec",
    "async",
    "sync",
    "dirsync",
    "x-systemd",
];

/// `--config FILE`: the flags' settings in TOML, parsed strictly.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    ttl: Option<u64>,
    prefix: Option<String>,
    secrets: Option<Vec<String>>,
    region: Option<String>,
    profile: Option<String>,
    endpoint_url: Option<String>,
    local: Option<PathBuf>,
    demo: Option<bool>,
    uid: Option<u32>,
    gid: Option<u32>,
    allow_other: Option<bool>,
    read_only: Option<bool>,
    mlock: Option<bool>,
    allow_create: Option<bool>,
    threads: Option<usize>,
    cache_size: Option<usize>,
    max_stale: Option<String>,
    max_calls: Option<usize>,
    start_jitter: Option<String>,
}

/// `90`, `90s`, `30m`, `2h`, `1d`: a duration; the option's name in errors.
fn duration(key: &str, v: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{key}: '{v}' is not a duration such as 90s, 30m, 2h or 1d");
    let (num, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(mult)
        .filter(|s| *s <= 365 * 86_400)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{key}: '{v}' is longer than a year"))
}

/// A number for option `key`, in range for its type (no silent wrapping:
/// uid=4294967297 is an error, not uid 1).
fn number<T: std::str::FromStr>(key: &str, v: Option<String>) -> Result<T, String> {
    let v = v.ok_or_else(|| format!("mount option '{key}' needs a value"))?;
    v.parse().map_err(|_| {
        format!("mount option '{key}': '{v}' is not a whole number in the allowed range")
    })
}

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
            match key.as_str() {
                "ttl" => self.ttl = Some(number(&key, value)?),
                "prefix" => self.prefix = Some(need(value)?),
                "secret" => self.secrets.push(need(value)?),
                "region" => self.region = Some(need(value)?),
                "profile" => self.profile = Some(need(value)?),
                "endpoint_url" => self.endpoint_url = Some(need(value)?),
                "local" => self.local = Some(need(value)?.into()),
                "uid" => self.uid = Some(number(&key, value)?),
                "gid" => self.gid = Some(number(&key, value)?),
                "threads" => self.threads = Some(number(&key, value)?),
                "cache_size" => self.cache_size = Some(number(&key, value)?),
                "max_stale" => self.max_stale = Some(need(value)?),
                "max_calls" => self.max_calls = Some(number(&key, value)?),
                "start_jitter" => self.start_jitter = Some(need(value)?),
                "demo" => self.demo = true,
                "allow_other" => self.allow_other = true,
                "read_only" | "ro" => self.read_only = true,
                "mlock" => self.mlock = true,
                "allow_create" => self.allow_create = true,
                "config" => self.config = Some(need(value)?.into()),
                // What mount(8) and mount.fuse3 add on their own.
                "fsname" | "subtype" => {}
                k if MOUNT_ONLY.contains(&k) || k.starts_with("x-systemd.") => {}
                _ => return Err(format!("unknown mount option '{key}'")),
            }
        }
        Ok(())
    }

    /// Fills what the flags left unset from the config file.
    fn apply_file(&mut self) -> Result<(), String> {
        let Some(path) = &self.config else {
            return Ok(());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--config {}: {e}", path.display()))?;
        let f: FileConfig = toml::from_str(&text).map_err(|e| {
            // The full report quotes the offending line, so it names the key.
            let report = e
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            format!("--config {}: {report}", path.display())
        })?;
        self.ttl = self.ttl.or(f.ttl);
        self.prefix = self.prefix.take().or(f.prefix);
        if self.secrets.is_empty() {
            self.secrets = f.secrets.unwrap_or_default();
        }
        self.region = self.region.take().or(f.region);
        self.profile = self.profile.take().or(f.profile);
        self.endpoint_url = self.endpoint_url.take().or(f.endpoint_url);
        self.local = self.local.take().or(f.local);
        self.uid = self.uid.or(f.uid);
        self.gid = self.gid.or(f.gid);
        self.threads = self.threads.or(f.threads);
        self.cache_size = self.cache_size.or(f.cache_size);
        self.max_stale = self.max_stale.take().or(f.max_stale);
        self.max_calls = self.max_calls.or(f.max_calls);
        self.start_jitter = self.start_jitter.take().or(f.start_jitter);
        self.demo |= f.demo.unwrap_or(false);
        self.allow_other |= f.allow_other.unwrap_or(false);
        self.read_only |= f.read_only.unwrap_or(false);
        self.mlock |= f.mlock.unwrap_or(false);
        self.allow_create |= f.allow_create.unwrap_or(false);
        Ok(())
    }

    pub fn into_config(mut self) -> Result<Config, String> {
        self.apply_options()?;
        self.apply_file()?;
        let mountpoint = self
            .paths
            .last()
            .cloned()
            .ok_or("a MOUNTPOINT is required")?;
        // ttl=0 would make every read an API call and turn caching off for
        // the kernel too: refused, as a typo more often than a wish.
        let ttl = match self.ttl.unwrap_or(300) {
            t @ 1..=604_800 => Duration::from_secs(t),
            _ => return Err("ttl must be between 1 and 604800 seconds (a week)".into()),
        };
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
        fs.max_stale = match &self.max_stale {
            Some(v) => Some(duration("max_stale", v)?),
            None => Some(crate::fs::DEFAULT_MAX_STALE),
        };
        fs.cache_bytes = match self
            .cache_size
            .unwrap_or(crate::fs::DEFAULT_CACHE_BYTES >> 20)
        {
            n @ 1..=4096 => NonZeroUsize::new(n << 20).expect("non-zero"),
            _ => return Err("cache_size must be between 1 and 4096 MiB".into()),
        };
        let threads = NonZeroUsize::new(self.threads.unwrap_or(2))
            .filter(|n| n.get() <= 64)
            .ok_or("threads must be between 1 and 64")?;
        let max_calls = match self.max_calls.unwrap_or(crate::store::DEFAULT_MAX_CALLS) {
            n @ 1..=256 => n,
            _ => return Err("max_calls must be between 1 and 256".into()),
        };
        let start_jitter = match &self.start_jitter {
            Some(v) => duration("start_jitter", v)?,
            None => Duration::ZERO,
        };
        if start_jitter > Duration::from_secs(600) {
            return Err("start_jitter must be at most 10m".into());
        }
        Ok(Config {
            threads,
            max_calls,
            start_jitter,
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
    fn config_file_is_strict_and_flags_override_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "ttl = 60\nprefix = \"prod/\"\nread_only = true\n").unwrap();
        let p = path.to_str().unwrap();
        let c = parse(&["--config", p, "--ttl", "5", "/mnt"]).unwrap();
        assert_eq!(c.fs.ttl, Duration::from_secs(5));
        assert_eq!(c.fs.prefix.as_deref(), Some("prod/"));
        assert!(c.fs.read_only);
        let c = parse(&["/mnt", "-o", &format!("config={p}")]).unwrap();
        assert_eq!(c.fs.ttl, Duration::from_secs(60));
        std::fs::write(&path, "ttl = 60\ntll = 5\n").unwrap();
        let e = parse(&["--config", p, "/mnt"]).unwrap_err();
        assert!(e.contains("tll"), "{e}");
        std::fs::write(&path, "ttl = \"soon\"\n").unwrap();
        let e = parse(&["--config", p, "/mnt"]).unwrap_err();
        assert!(e.contains("ttl"), "{e}");
        std::fs::write(&path, "ttl = 9999999\n").unwrap();
        let e = parse(&["--config", p, "/mnt"]).unwrap_err();
        assert!(e.contains("ttl"), "{e}");
    }

    #[test]
    fn unknown_or_bad_options_name_the_option() {
        let e = parse(&["/mnt", "-o", "ttl=5,frobnicate"]).unwrap_err();
        assert!(e.contains("frobnicate"), "{e}");
        let e = parse(&["/mnt", "-o", "ttl=soon"]).unwrap_err();
        assert!(e.contains("ttl"), "{e}");
        for (opt, name) in [
            ("uid=4294967297", "uid"),
            ("gid=4294967296", "gid"),
            ("threads=18446744073709551617", "threads"),
            ("ttl=99999999999999999999", "ttl"),
            ("ttl=0", "ttl"),
            ("ttl=604801", "ttl"),
            ("threads=0", "threads"),
            ("threads=65", "threads"),
            ("cache_size=0", "cache_size"),
            ("uid=-1", "uid"),
            ("max_calls=0", "max_calls"),
            ("max_calls=257", "max_calls"),
            ("start_jitter=11m", "start_jitter"),
            ("start_jitter=soon", "start_jitter"),
        ] {
            let e = parse(&["/mnt", "-o", opt]).unwrap_err();
            assert!(e.contains(name), "{opt}: {e}");
        }
        let e = parse(&["--uid", "4294967296", "/mnt"]).unwrap_err();
        assert!(e.contains("uid"), "{e}");
        let e = parse(&["--ttl", "0", "/mnt"]).unwrap_err();
        assert!(e.contains("ttl"), "{e}");
        assert_eq!(
            parse(&["/mnt", "-o", "uid=4294967295"]).unwrap().fs.uid,
            u32::MAX
        );
        for (v, secs) in [
            ("0", 0),
            ("90", 90),
            ("90s", 90),
            ("30m", 1800),
            ("2h", 7200),
            ("1d", 86_400),
        ] {
            let c = parse(&["--max-stale", v, "/mnt"]).unwrap();
            assert_eq!(c.fs.max_stale, Some(Duration::from_secs(secs)), "{v}");
        }
        for v in ["soon", "5x", "-1", "400d"] {
            let e = parse(&["/mnt", "-o", &format!("max_stale={v}")]).unwrap_err();
            assert!(e.contains("max_stale"), "{v}: {e}");
        }
        assert_eq!(
            parse(&["/mnt"]).unwrap().fs.max_stale,
            Some(Duration::from_secs(3600))
        );
        let c = parse(&["/mnt", "-o", "max_calls=8,start_jitter=90s"]).unwrap();
        assert_eq!((c.max_calls, c.start_jitter), (8, Duration::from_secs(90)));
        let c = parse(&["/mnt"]).unwrap();
        assert_eq!((c.max_calls, c.start_jitter), (16, Duration::ZERO));
        let e = parse(&["--secret", "a/../b", "/mnt"]).unwrap_err();
        assert!(e.contains("--secret"), "{e}");
    }
}
