//! Command line and `-o` mount options, parsed once into a validated `Config`.
//! Every flag has a `-o` spelling, so fstab and mount(8) can start the daemon.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueHint};
use serde::Deserialize;

use crate::fs::{FsConfig, TemplateDef, TemplateSpec};
use crate::store::SecretName;
use crate::store::aws::AwsOptions;

/// The version `--version` prints: the package's, and the git commit it was
/// built from when built from a git checkout (set by build.rs).
pub const VERSION: &str = env!("SECRETSFS_VERSION");

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

/// The command line. Options have no clap defaults: an option left unset can
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
    /// Expose only secrets whose names start with PREFIX [default: every
    /// secret]
    #[arg(long)]
    pub prefix: Option<String>,
    /// Expose exactly this secret; repeat for more. No ListSecrets call is
    /// made [default: every secret, listed]
    #[arg(long = "secret", value_name = "NAME")]
    pub secrets: Vec<String>,
    /// AWS region [default: AWS_REGION, then the profile's region]
    #[arg(long)]
    pub region: Option<String>,
    /// AWS profile for settings and credentials [default: AWS_PROFILE, then
    /// `default`]
    #[arg(long)]
    pub profile: Option<String>,
    /// Secrets Manager endpoint [default: AWS_ENDPOINT_URL, then the
    /// region's]
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
    /// On AWS: let mkdir + writing `current` create a secret (CreateSecret)
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
    file_hooks: Vec<FileHook>,
    /// --watch or --hook-timeout came from the command line or -o.
    #[arg(skip)]
    hook_flags: bool,
    /// `[[template]]` tables of the config file, checked.
    #[arg(skip)]
    pub templates: Vec<TemplateDef>,
    /// The config file's `[[rule]]`s, checked.
    #[arg(skip)]
    pub rules: Option<crate::rules::Rules>,
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
    /// Mount over a mountpoint that is not empty.
    pub nonempty: bool,
    /// Log lines as JSON objects.
    pub log_json: bool,
    /// `--config FILE`, re-read on SIGHUP (templates and rules).
    pub config_file: Option<PathBuf>,
    /// SELinux mount options (context=...), checked.
    pub selinux: crate::selinux::Contexts,
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
    ttl: Option<FileDuration>,
    prefix: Option<String>,
    secrets: Option<Vec<String>>,
    region: Option<String>,
    profile: Option<String>,
    endpoint_url: Option<String>,
    ca_bundle: Option<PathBuf>,
    local: Option<PathBuf>,
    demo: Option<bool>,
    uid: Option<Owner>,
    gid: Option<Owner>,
    allow_other: Option<bool>,
    read_only: Option<bool>,
    mlock: Option<bool>,
    allow_create: Option<bool>,
    threads: Option<usize>,
    cache_size: Option<usize>,
    max_stale: Option<FileDuration>,
    max_calls: Option<usize>,
    start_jitter: Option<FileDuration>,
    on_change: Option<String>,
    watch: Option<FileDuration>,
    hook_timeout: Option<FileDuration>,
    hook: Option<Vec<FileHook>>,
    /// `[[template]]`: rendered files.
    template: Option<Vec<TemplateSpec>>,
    trim_newline: Option<bool>,
    /// Ownership rules, in order (src/rules.rs).
    rule: Option<Vec<crate::rules::RuleSpec>>,
    context: Option<String>,
    fscontext: Option<String>,
    defcontext: Option<String>,
    rootcontext: Option<String>,
}

/// The config file, parsed strictly; errors name the file, the line and
/// the key.
fn read_file_config(path: &std::path::Path) -> Result<FileConfig, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("--config {}: {e}", path.display()))?;
    toml::from_str(&text)
        .map_err(|e| format!("--config {}{}", path.display(), file_error(&text, &e)))
}

/// A TOML error on one line: where (line number and text), and what; an
/// unknown key with the known one nearest to it.
fn file_error(text: &str, e: &toml::de::Error) -> String {
    let whole = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let place = e.span().map_or(String::new(), |span| {
        let start = span.start.min(text.len());
        let line = text[..start].matches('\n').count() + 1;
        let shown = text.lines().nth(line - 1).unwrap_or_default().trim();
        format!(", line {line} ({shown})")
    });
    let message = e.message();
    // serde: "unknown field `tll`, expected one of `ttl`, `prefix`, ..."
    let what = match message.strip_prefix("unknown field `") {
        Some(rest) => {
            let typed = rest.split('`').next().unwrap_or_default();
            let known: Vec<&str> = rest.split('`').skip(2).step_by(2).collect();
            match crate::refusal::suggest(typed, known.iter().copied()) {
                Some(k) => format!("unknown key '{typed}'; did you mean '{k}'?"),
                None => format!("unknown key '{typed}' (known here: {})", known.join(", ")),
            }
        }
        None => whole(message),
    };
    format!("{place}: {what}")
}

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

/// The templates of a config file, checked (sources read, relative to the
/// file's directory): at start, and again on SIGHUP.
fn file_templates(
    path: &std::path::Path,
    specs: Option<Vec<TemplateSpec>>,
) -> Result<Vec<TemplateDef>, String> {
    let base = path.parent().unwrap_or(std::path::Path::new("."));
    crate::fs::resolve_all(specs.unwrap_or_default(), base)
        .map_err(|e| format!("--config {}: {e}", path.display()))
}

/// SIGHUP: the config file's templates as they are now. The whole file
/// must still parse, as at start.
pub fn templates_from_file(path: &std::path::Path) -> Result<Vec<TemplateDef>, String> {
    let f = read_file_config(path)?;
    file_templates(path, f.template)
}

/// `[[hook]]` in the config file: a change hook for the secrets whose
/// names match `pattern`.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct FileHook {
    pattern: String,
    on_change: String,
    watch: Option<FileDuration>,
    timeout: Option<FileDuration>,
}

/// A duration in the config file: `ttl = 60` (seconds) or `ttl = "5m"`,
/// read as the same text the command line would take.
#[derive(Deserialize, Debug, Clone)]
#[serde(
    untagged,
    expecting = "a duration: a number of seconds, or a string such as \"90s\", \"5m\", \"2h\" or \"1d\""
)]
enum FileDuration {
    Secs(u64),
    Text(String),
}

impl FileDuration {
    fn text(self) -> String {
        match self {
            FileDuration::Secs(n) => n.to_string(),
            FileDuration::Text(t) => t,
        }
    }
}

/// `--ttl` when none is given.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// The forms every duration option takes, for error messages.
pub const DURATION_FORMS: &str = "a number of seconds, or 90s, 30m, 2h, 1d, 1h30m";

/// A duration option's value, the same on the command line, in `-o` and in
/// the config file: a bare number is seconds (as `--ttl` always took), else
/// humantime's forms (`90s`, `30m`, `2h`, `1d`, `1h30m`); at most a year.
/// `key` names the option in errors.
pub fn duration(key: &str, v: &str) -> Result<Duration, String> {
    let parsed = if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        v.parse::<u64>().ok().map(Duration::from_secs)
    } else {
        humantime::parse_duration(v).ok()
    };
    let d = parsed.ok_or_else(|| format!("{key}: '{v}' is not a duration ({DURATION_FORMS})"))?;
    if d > Duration::from_secs(365 * 86_400) {
        return Err(format!("{key}: '{v}' is longer than a year"));
    }
    Ok(d)
}

/// A user or group in the config file: `uid = 1000` or `uid = "www-data"`.
#[derive(Deserialize, Debug)]
#[serde(
    untagged,
    expecting = "a user or group name, or a number from 0 to 4294967295"
)]
enum Owner {
    Id(u32),
    Name(String),
}

/// A user name or number as a uid. All digits is a number (as chown(1) reads
/// it); anything else is looked up in the user database (getpwnam_r).
pub fn user_id(v: &str) -> Result<u32, String> {
    if let Some(id) = id_number(v)? {
        return Ok(id);
    }
    match nix::unistd::User::from_name(v) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        Ok(None) => Err(format!("no user named '{v}' (give a user name or a uid)")),
        Err(e) => Err(format!("cannot look up user '{v}': {e}")),
    }
}

/// A group name or number as a gid, like `user_id` (getgrnam_r).
pub fn group_id(v: &str) -> Result<u32, String> {
    if let Some(id) = id_number(v)? {
        return Ok(id);
    }
    match nix::unistd::Group::from_name(v) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(format!("no group named '{v}' (give a group name or a gid)")),
        Err(e) => Err(format!("cannot look up group '{v}': {e}")),
    }
}

/// `Some(id)` when `v` is all digits, checked against u32's range.
fn id_number(v: &str) -> Result<Option<u32>, String> {
    if v.is_empty() {
        return Err("an empty name is not a user or group".into());
    }
    if !v.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|_| format!("'{v}' is out of range (0 to 4294967295)"))
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
                "profile" => self.profile = Some(need(value)?),
                "endpoint_url" => self.endpoint_url = Some(need(value)?),
                "ca_bundle" => self.ca_bundle = Some(need(value)?.into()),
                "local" => self.local = Some(need(value)?.into()),
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

    /// Fills what the flags left unset from the config file.
    fn apply_file(&mut self) -> Result<(), String> {
        let Some(path) = &self.config else {
            return Ok(());
        };
        let f = read_file_config(path)?;
        self.templates = file_templates(path, f.template)?;
        self.ttl = self.ttl.take().or(f.ttl.map(FileDuration::text));
        self.prefix = self.prefix.take().or(f.prefix);
        if self.secrets.is_empty() {
            self.secrets = f.secrets.unwrap_or_default();
        }
        self.region = self.region.take().or(f.region);
        self.profile = self.profile.take().or(f.profile);
        self.endpoint_url = self.endpoint_url.take().or(f.endpoint_url);
        self.ca_bundle = self.ca_bundle.take().or(f.ca_bundle);
        self.local = self.local.take().or(f.local);
        let owner = |key: &str, v: Option<Owner>, resolve: fn(&str) -> Result<u32, String>| {
            v.map(|o| match o {
                Owner::Id(id) => Ok(id),
                Owner::Name(name) => resolve(&name),
            })
            .transpose()
            .map_err(|e| format!("--config {}: {key}: {e}", path.display()))
        };
        // Resolved even when a flag overrides them: a name that cannot
        // work is an error in the file, as a wrong type is.
        let (uid, gid) = (
            owner("uid", f.uid, user_id)?,
            owner("gid", f.gid, group_id)?,
        );
        self.uid = self.uid.or(uid);
        self.gid = self.gid.or(gid);
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
        let rules = crate::rules::Rules::build(&f.rule.unwrap_or_default())
            .map_err(|e| format!("--config {}: {e}", path.display()))?;
        self.rules = Some(rules);
        Ok(())
    }

    /// The change hooks: `--on-change` for every secret, then each
    /// `[[hook]]`; the intervals and timeouts they leave unset default to
    /// `--watch` and `--hook-timeout`.
    fn hooks(&self) -> Result<Vec<crate::hooks::HookSpec>, String> {
        use crate::hooks::{DEFAULT_INTERVAL, DEFAULT_TIMEOUT, HookSpec};
        let or = |key: &str, v: Option<&str>, d: Duration| v.map_or(Ok(d), |v| duration(key, v));
        let interval = or("watch", self.watch.as_deref(), DEFAULT_INTERVAL)?;
        let timeout = or(
            "hook_timeout",
            self.hook_timeout.as_deref(),
            DEFAULT_TIMEOUT,
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
        let secrets = if self.secrets.is_empty() {
            None
        } else {
            if let Some(bad) = self.secrets.iter().find(|s| !crate::tree::valid_path(s)) {
                return Err(format!(
                    "--secret '{bad}' cannot be a path (empty, '.' or '..' component)"
                ));
            }
            if let Some(bad) = self.secrets.iter().find(|s| crate::tree::reserved(s)) {
                return Err(format!(
                    "--secret '{bad}': names under .secretsfs/ are reserved for the mount's own files"
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
                ca_bundle: self.ca_bundle,
            }),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(std::iter::once("secretsfs").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.into_config()
    }

    #[test]
    fn help_states_the_defaults_that_apply() {
        let cmd = <Cli as clap::CommandFactory>::command();
        let default = |long: &str| {
            let arg = cmd.get_arguments().find(|a| a.get_long() == Some(long));
            let help = arg.and_then(|a| a.get_help()).map(|h| h.to_string());
            let help = help.unwrap_or_else(|| panic!("--{long} has no help"));
            let start = help.find("[default: ").expect(&help) + "[default: ".len();
            help[start..help.len() - 1].to_string()
        };
        let c = parse(&["/mnt"]).unwrap();
        assert_eq!(duration("", &default("ttl")).unwrap(), c.fs.ttl);
        assert_eq!(default("threads"), c.threads.to_string());
        assert_eq!(
            default("cache-size"),
            (c.fs.cache_bytes.get() >> 20).to_string()
        );
        assert_eq!(default("max-calls"), c.max_calls.to_string());
        assert_eq!(
            Some(duration("", &default("max-stale")).unwrap()),
            c.fs.max_stale
        );
        assert_eq!(
            duration("", &default("start-jitter")).unwrap(),
            c.start_jitter
        );
    }

    #[test]
    fn users_and_groups_are_names_or_numbers() {
        let c = parse(&["--uid", "root", "--gid", "root", "/mnt"]).unwrap();
        assert_eq!((c.fs.uid, c.fs.gid), (0, 0));
        let c = parse(&["/mnt", "-o", "uid=root,gid=7"]).unwrap();
        assert_eq!((c.fs.uid, c.fs.gid), (0, 7));
        let e = parse(&["--uid", "no-such-user-7q", "/mnt"]).unwrap_err();
        assert!(e.contains("no user named 'no-such-user-7q'"), "{e}");
        let e = parse(&["/mnt", "-o", "gid=no-such-group-7q"]).unwrap_err();
        assert!(e.contains("gid") && e.contains("no group named"), "{e}");
        let e = parse(&["/mnt", "-o", "uid="]).unwrap_err();
        assert!(e.contains("uid"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let p = path.to_str().unwrap();
        std::fs::write(&path, "uid = \"root\"\ngid = 5\n").unwrap();
        let c = parse(&["--config", p, "/mnt"]).unwrap();
        assert_eq!((c.fs.uid, c.fs.gid), (0, 5));
        for (text, key) in [
            ("uid = \"no-such-user-7q\"", "no-such-user-7q"),
            ("gid = -1", "gid"),
            ("uid = 4294967296", "uid"),
            ("gid = true", "gid"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = parse(&["--config", p, "/mnt"]).unwrap_err();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn one_mountpoint_or_mount8s_source_and_mountpoint() {
        assert_eq!(parse(&["/mnt"]).unwrap().mountpoint, PathBuf::from("/mnt"));
        let c = parse(&["secretsfs", "/mnt"]).unwrap();
        assert_eq!(c.mountpoint, PathBuf::from("/mnt"));
        assert!(parse(&["a", "b", "/mnt"]).is_err());
        assert!(parse(&[]).is_err());
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
    fn templates_come_from_the_config_file_and_sighup_rereads_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let p = path.to_str().unwrap();
        std::fs::write(dir.path().join("a.j2"), "{{ secret('x') }}").unwrap();
        let table = "[[template]]\nname = \"a\"\nsource = \"a.j2\"\nmode = \"0440\"\n";
        std::fs::write(&path, format!("ttl = 5\n{table}")).unwrap();
        let c = parse(&["--config", p, "/mnt"]).unwrap();
        assert_eq!(c.fs.templates.len(), 1);
        assert_eq!(c.fs.templates[0].mode, 0o440);
        assert_eq!(c.config_file.as_deref(), Some(path.as_path()));
        std::fs::write(&path, format!("{table}{table}")).unwrap();
        let e = parse(&["--config", p, "/mnt"]).unwrap_err();
        assert!(e.contains(p) && e.contains("twice"), "{e}");
        let e = templates_from_file(&path).unwrap_err();
        assert!(e.contains("twice"), "{e}");
        std::fs::write(&path, "[[template]]\nname = \"a\"\n").unwrap();
        let e = templates_from_file(&path).unwrap_err();
        assert!(e.contains("source"), "{e}");
        std::fs::write(&path, table.replace("a.j2", "b.j2")).unwrap();
        std::fs::write(dir.path().join("b.j2"), "b").unwrap();
        assert_eq!(&*templates_from_file(&path).unwrap()[0].text, "b");
        assert!(parse(&["/mnt"]).unwrap().fs.templates.is_empty());
    }

    #[test]
    fn secrets_under_the_reserved_directory_are_refused() {
        let e = parse(&["--secret", ".secretsfs/x", "/mnt"]).unwrap_err();
        assert!(e.contains("reserved"), "{e}");
        assert!(parse(&["--secret", "a/.secretsfs", "/mnt"]).is_ok());
    }

    #[test]
    fn trim_newline_and_rules_come_from_flags_options_and_the_file() {
        assert!(!parse(&["/mnt"]).unwrap().fs.trim_newline);
        assert!(parse(&["--trim-newline", "/mnt"]).unwrap().fs.trim_newline);
        assert!(
            parse(&["/mnt", "-o", "trim_newline"])
                .unwrap()
                .fs
                .trim_newline
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let p = path.to_str().unwrap();
        std::fs::write(
            &path,
            "trim_newline = true\n[[rule]]\npattern = \"a/*\"\nowner = 0\nmode = \"0440\"\n",
        )
        .unwrap();
        let c = parse(&["--config", p, "/mnt"]).unwrap();
        assert!(c.fs.trim_newline);
        assert_eq!(c.fs.rules.for_secret("a/b").unwrap().mode, Some(0o440));
        assert_eq!(c.config_file.as_deref(), Some(path.as_path()));
        std::fs::write(&path, "[[rule]]\npattern = \"a/*\"\nmode = \"4755\"\n").unwrap();
        let e = parse(&["--config", p, "/mnt"]).unwrap_err();
        assert!(
            e.contains("rule 1") && e.contains("a/*") && e.contains("mode"),
            "{e}"
        );
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

    #[test]
    fn every_duration_option_takes_the_same_forms_on_the_command_line_in_o_and_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let p = path.to_str().unwrap();
        // (flag, key, what it sets); on_change makes the hook ones legal.
        type Get = fn(&Config) -> Duration;
        let options: [(&str, Get); 5] = [
            ("ttl", |c| c.fs.ttl),
            ("max_stale", |c| c.fs.max_stale.unwrap()),
            ("start_jitter", |c| c.start_jitter),
            ("watch", |c| c.fs.hooks[0].interval),
            ("hook_timeout", |c| c.fs.hooks[0].timeout),
        ];
        for (key, get) in options {
            let flag = format!("--{}", key.replace('_', "-"));
            for (v, toml_v, secs) in [
                ("5m", "\"5m\"", 300),
                ("90", "90", 90),
                ("2m30s", "\"2m30s\"", 150),
            ] {
                let hook = ["--on-change", "true"];
                let c = parse(&[&flag, v, hook[0], hook[1], "/mnt"]).unwrap();
                assert_eq!(get(&c), Duration::from_secs(secs), "{flag} {v}");
                let c = parse(&["/mnt", "-o", &format!("{key}={v},on_change=true")]).unwrap();
                assert_eq!(get(&c), Duration::from_secs(secs), "-o {key}={v}");
                std::fs::write(&path, format!("{key} = {toml_v}\non_change = \"true\"\n")).unwrap();
                let c = parse(&["--config", p, "/mnt"]).unwrap();
                assert_eq!(get(&c), Duration::from_secs(secs), "file {key} = {toml_v}");
            }
            let e = parse(&["/mnt", "-o", &format!("{key}=5x,on_change=true")]).unwrap_err();
            assert!(e.contains(key) && e.contains("90s"), "{e}");
        }
        std::fs::write(&path, "on_change = \"true\"\n[[hook]]\npattern = \"a/*\"\non_change = \"true\"\nwatch = 30\ntimeout = \"1m\"\n").unwrap();
        let c = parse(&["--config", p, "/mnt"]).unwrap();
        assert_eq!(c.fs.hooks[1].interval, Duration::from_secs(30));
        assert_eq!(c.fs.hooks[1].timeout, Duration::from_secs(60));
    }

    #[test]
    fn a_mistyped_option_or_key_gets_a_suggestion() {
        let e = parse(&["/mnt", "-o", "ttl=60,prefx=prod/"]).unwrap_err();
        assert!(e.contains("'prefx'; did you mean 'prefix'?"), "{e}");
        let e = parse(&["/mnt", "-o", "frobnicate"]).unwrap_err();
        assert!(
            e.contains("'frobnicate'") && !e.contains("did you mean"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let p = path.to_str().unwrap();
        std::fs::write(&path, "ttl = 60\nprefx = \"prod/\"\n").unwrap();
        let e = parse(&["--config", p, "/mnt"]).unwrap_err();
        assert!(
            e.contains("line 2") && e.contains("did you mean 'prefix'?"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        std::fs::write(
            &path,
            "[[hook]]\npattern = \"a\"\non_change = \"x\"\ntimout = \"1m\"\n",
        )
        .unwrap();
        let e = parse(&["--config", p, "/mnt"]).unwrap_err();
        assert!(e.contains("did you mean 'timeout'?"), "{e}");
    }
}
