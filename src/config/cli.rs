//! The command line and the `-o` mount options (every flag has a `-o`
//! spelling, so fstab and mount(8) can start the daemon), folded into one
//! `Cli` before mod.rs resolves it with the config file into a `Config`.

use std::path::PathBuf;

use clap::{Parser, ValueHint};

use super::ids::{group_id, user_id};
use super::schema::FileHook;
use crate::VERSION;
use crate::fs::TemplateDef;

/// The environment variables secretsfs reads, for `--help` and the man page.
pub const ENVIRONMENT: [(&str, &str); 9] = [
    (
        "RUST_LOG",
        "Log filter (default error,secretsfs=info: the AWS SDK's own lines only from error; RUST_LOG=secretsfs=debug shows each refresh, RUST_LOG=info,aws_config=debug the SDK's credential and region lookups). Logs go to standard error.",
    ),
    ("AWS_REGION", "Region, when --region is not given."),
    (
        "AWS_PROFILE",
        "Profile of ~/.aws/config and ~/.aws/credentials, when --profile is not given (AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE move those files).",
    ),
    (
        "AWS_ENDPOINT_URL",
        "Endpoint, when --endpoint-url is not given (a VPC endpoint, an emulator).",
    ),
    (
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN",
        "Static credentials. Without them the standard chain is tried: the profile, web identity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN), the ECS container and EC2 instance roles.",
    ),
    (
        "AWS_CA_BUNDLE",
        "A PEM file of extra certificate authorities to trust (a TLS-inspecting gateway).",
    ),
    (
        "HTTPS_PROXY, NO_PROXY",
        "An HTTP proxy for the API, and the hosts that bypass it.",
    ),
    (
        "NOTIFY_SOCKET",
        "Set by systemd (Type=notify): READY=1 is sent once the mount answers.",
    ),
    (
        "SSL_CERT_FILE",
        "Replaces the system's trusted certificate authorities.",
    ),
];

/// `--help`'s closing text: the environment, then where to read more.
fn after_help() -> String {
    let mut s = String::from("Environment:\n");
    for (name, what) in ENVIRONMENT {
        s.push_str(&format!("  {name}\n          {what}\n"));
    }
    s.push_str(
        "\nUnder systemd, set them in /etc/secretsfs/secretsfs.env. \
         See secretsfs(1) and the README's \"Operating\" section.\n",
    );
    s.push_str("\nExit status:");
    for (code, what) in crate::refusal::EXIT_STATUSES {
        s.push_str(&format!("\n  {code}  {what}"));
    }
    s
}

/// still come from `-o` or the config file, so the defaults are applied in
/// `into_config` and stated in the help texts (a test keeps the two equal).
#[derive(Parser, Debug, Default)]
#[command(
    name = "secretsfs",
    version = VERSION,
    about = "Mount AWS Secrets Manager as a filesystem",
    long_about = "Mount AWS Secrets Manager as a filesystem: one directory per secret, \
                  with `current`, `previous` and `versions/<id>` files. Reads come from a \
                  cache with a TTL; writing `current` stores a new version.",
    after_help = after_help(),
)]
pub struct Cli {
    /// Where to mount (created if missing). mount(8) runs `secretsfs SOURCE
    /// MOUNTPOINT`: SOURCE is accepted and ignored
    #[arg(value_name = "MOUNTPOINT", value_hint = ValueHint::DirPath)]
    pub mountpoint: PathBuf,
    /// mount(8) runs `secretsfs SOURCE MOUNTPOINT`: with two paths, the first
    /// is the source (ignored) and this is the mountpoint.
    #[arg(hide = true, value_name = "MOUNTPOINT")]
    pub helper_mountpoint: Option<PathBuf>,
    /// Cache TTL of values, staging labels and listings: 90s, 5m, 1h, or
    /// a number of seconds; 1s to 7d [default: 5m]
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,
    /// Expose only secrets whose names start with PREFIX (with --source
    /// ssm, a parameter path: /app/) [default: every secret]
    #[arg(long)]
    pub prefix: Option<String>,
    /// Expose exactly this secret; repeat for more: a name, or a full ARN
    /// (another account or region) shown at its name or at PATH with
    /// PATH=ARN; with --source ssm, a parameter name (/app/db/url). No
    /// ListSecrets call is made [default: every secret, listed]
    #[arg(long = "secret", value_name = "SECRET")]
    pub secrets: Vec<String>,
    /// AWS region [default: AWS_REGION, then the profile's region]
    #[arg(long)]
    pub region: Option<String>,
    /// Where reads go when the region fails (refused, no answer, 5xx,
    /// throttling): a region holding replicas of the secrets; repeat for
    /// more, tried in order. REGION=URL gives it its own endpoint (else
    /// the region's, or --endpoint-url when set). Writes still go to the
    /// primary region (--region) only [default: none]
    #[arg(long = "failover-region", value_name = "REGION[=URL]")]
    pub failover_regions: Vec<String>,
    /// AWS profile for settings and credentials [default: AWS_PROFILE, then
    /// `default`]
    #[arg(long)]
    pub profile: Option<String>,
    /// Secrets Manager endpoint (with --source ssm, Parameter Store's)
    /// [default: AWS_ENDPOINT_URL, then the region's]
    #[arg(long, value_name = "URL", value_hint = ValueHint::Url)]
    pub endpoint_url: Option<String>,
    /// PEM file of CA certificates trusted as well as the system's (a
    /// TLS-inspecting gateway) [default: AWS_CA_BUNDLE, then ca_bundle in
    /// the AWS profile]
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub ca_bundle: Option<PathBuf>,
    /// Serve the embedded local store in DIR instead of AWS
    #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub local: Option<PathBuf>,
    /// What to mount: secretsmanager, or ssm (Systems Manager Parameter
    /// Store: parameter /app/db/url is app/db/url/; see
    /// docs/parameter-store.md) [default: secretsmanager]
    #[arg(long, value_name = "SOURCE", value_parser = ["secretsmanager", "ssm"])]
    pub source: Option<String>,
    /// With --source ssm and --allow-create: the type of created parameters,
    /// SecureString, String or StringList [default: SecureString]
    #[arg(long, value_name = "TYPE", value_parser = ["SecureString", "String", "StringList"])]
    pub ssm_create_type: Option<String>,
    /// With --source ssm and --allow-create: the KMS key of created
    /// SecureString parameters [default: the account's alias/aws/ssm]
    #[arg(long, value_name = "KEY")]
    pub ssm_key_id: Option<String>,
    /// With --local: seed a few demo secrets into an empty store
    #[arg(long)]
    pub demo: bool,
    /// Owner of every file, a user name or number [default: the mounting
    /// user]
    #[arg(long, value_name = "USER", value_parser = user_id, value_hint = ValueHint::Username)]
    pub uid: Option<u32>,
    /// Group of every file, a group name or number [default: the mounting
    /// user's group]
    #[arg(long, value_name = "GROUP", value_parser = group_id)]
    pub gid: Option<u32>,
    /// Let other users in (the kernel then enforces the file modes)
    #[arg(long)]
    pub allow_other: bool,
    /// Refuse every write; reads are served from the kernel's page cache
    #[arg(long)]
    pub read_only: bool,
    /// Lock the daemon's memory (mlockall)
    #[arg(long)]
    pub mlock: bool,
    /// On AWS: let mkdir + writing `current` create a secret (CreateSecret;
    /// with --source ssm, PutParameter)
    #[arg(long)]
    pub allow_create: bool,
    /// FUSE session threads (1-64) [default: 2]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// How long a value is served while its refreshes fail: 90s, 30m, 2h,
    /// 1d; 0 = never serve a stale value [default: 1h]
    #[arg(long, value_name = "DURATION")]
    pub max_stale: Option<String>,
    /// Memory for cached secret values, in MiB (1-4096) [default: 32]
    #[arg(long, value_name = "MIB")]
    pub cache_size: Option<usize>,
    /// Most API calls open at once (1-256); more wait their turn [default:
    /// 16]
    #[arg(long, value_name = "N")]
    pub max_calls: Option<usize>,
    /// Wait a random time up to DURATION (at most 10m) before mounting, so
    /// that a fleet restarting at once spreads its first calls [default: 0]
    #[arg(long, value_name = "DURATION")]
    pub start_jitter: Option<String>,
    /// Log format on standard error: text, or json (one object a line,
    /// for log shippers) [default: text]
    #[arg(long, value_name = "FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    /// Log each open of a secret's file and each committed write (who,
    /// which file, allowed or denied; never a value) to journald, stderr
    /// or a file (absolute path), one JSON line each [default: none]
    #[arg(long, value_name = "DEST")]
    pub access_log: Option<String>,
    /// Mount over a mountpoint that is not empty (its files are hidden
    /// while mounted); refused otherwise
    #[arg(long)]
    pub nonempty: bool,
    /// Run this command (`/bin/sh -c`) when AWSCURRENT of a secret read
    /// through the mount moves, with SECRETSFS_SECRET and
    /// SECRETSFS_VERSION_ID set (never the value) [default: none]
    #[arg(long, value_name = "COMMAND")]
    pub on_change: Option<String>,
    /// With --on-change: how often the secrets read through the mount are
    /// revalidated (DescribeSecret) and hooks run [default: 60s]
    #[arg(long, value_name = "DURATION")]
    pub watch: Option<String>,
    /// With --on-change: how long a hook may run before it is killed
    /// [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub hook_timeout: Option<String>,
    /// Settings in a TOML file (keys as the long options, with underscores);
    /// options given here override it
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub config: Option<PathBuf>,
    /// Strip one trailing newline from a single-line text value written to
    /// `current` (`echo v > current` stores `v`)
    #[arg(long)]
    pub trim_newline: bool,
    /// Mount options, comma-separated: the long options in key[=value] form
    /// (ttl=60,prefix=prod/,uid=www-data,read_only)
    #[arg(short = 'o', value_name = "OPT,...")]
    pub options: Vec<String>,
    /// --context, --fscontext, --defcontext, --rootcontext.
    #[command(flatten)]
    pub selinux: crate::selinux::ContextArgs,
    /// `[[hook]]` tables of the config file.
    #[arg(skip)]
    pub(super) file_hooks: Vec<FileHook>,
    /// --watch or --hook-timeout came from the command line or -o.
    #[arg(skip)]
    pub(super) hook_flags: bool,
    /// `[[template]]` tables of the config file, checked.
    #[arg(skip)]
    pub templates: Vec<TemplateDef>,
    /// The config file's `[[rule]]`s, checked.
    #[arg(skip)]
    pub rules: Option<crate::rules::Rules>,
    /// The config file's `[[access]]` rules, checked.
    #[arg(skip)]
    pub access: Option<crate::access::AccessRules>,
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

/// An unknown `-o` option, with the known one nearest to it: the long
/// options (with underscores), `ro`, and what mount(8) passes along.
fn unknown_option(key: &str) -> String {
    let cmd = <Cli as clap::CommandFactory>::command();
    let longs: Vec<String> = cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| a.get_long())
        .map(|l| l.replace('-', "_"))
        .collect();
    let known = longs
        .iter()
        .map(String::as_str)
        .chain(["ro"])
        .chain(MOUNT_ONLY);
    format!(
        "unknown mount option '{key}'{}",
        crate::refusal::did_you_mean(key, known)
    )
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
    pub(super) fn apply_options(&mut self) -> Result<(), String> {
        let opts: Vec<String> = self
            .options
            .iter()
            .flat_map(|o| crate::selinux::split_options(o))
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
                "ttl" => self.ttl = Some(need(value)?),
                "prefix" => self.prefix = Some(need(value)?),
                "secret" => self.secrets.push(need(value)?),
                "region" => self.region = Some(need(value)?),
                "failover_region" => self.failover_regions.push(need(value)?),
                "profile" => self.profile = Some(need(value)?),
                "endpoint_url" => self.endpoint_url = Some(need(value)?),
                "ca_bundle" => self.ca_bundle = Some(need(value)?.into()),
                "local" => self.local = Some(need(value)?.into()),
                "source" => self.source = Some(need(value)?),
                "ssm_create_type" => self.ssm_create_type = Some(need(value)?),
                "ssm_key_id" => self.ssm_key_id = Some(need(value)?),
                "uid" => {
                    self.uid = Some(
                        user_id(&need(value)?).map_err(|e| format!("mount option 'uid': {e}"))?,
                    )
                }
                "gid" => {
                    self.gid = Some(
                        group_id(&need(value)?).map_err(|e| format!("mount option 'gid': {e}"))?,
                    )
                }
                "threads" => self.threads = Some(number(&key, value)?),
                "cache_size" => self.cache_size = Some(number(&key, value)?),
                "max_stale" => self.max_stale = Some(need(value)?),
                "max_calls" => self.max_calls = Some(number(&key, value)?),
                "start_jitter" => self.start_jitter = Some(need(value)?),
                "on_change" => self.on_change = Some(need(value)?),
                "watch" => self.watch = Some(need(value)?),
                "hook_timeout" => self.hook_timeout = Some(need(value)?),
                "demo" => self.demo = true,
                "nonempty" => self.nonempty = true,
                "log_format" => self.log_format = Some(need(value)?),
                "access_log" => self.access_log = Some(need(value)?),
                "allow_other" => self.allow_other = true,
                "read_only" | "ro" => self.read_only = true,
                "mlock" => self.mlock = true,
                "allow_create" => self.allow_create = true,
                "config" => self.config = Some(need(value)?.into()),
                "trim_newline" => self.trim_newline = true,
                k if crate::selinux::KEYS.contains(&k) => self.selinux.set(k, &need(value)?),
                // What mount(8) and mount.fuse3 add on their own.
                "fsname" | "subtype" => {}
                k if MOUNT_ONLY.contains(&k) || k.starts_with("x-systemd.") => {}
                _ => return Err(unknown_option(&key)),
            }
        }
        Ok(())
    }
}
