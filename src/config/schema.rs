//! The config file's tables, once: the mount options (keys as the long
//! options), `[[hook]]`, `[[rule]]`, `[[access]]` and `[[template]]`, parsed strictly with
//! serde (an unknown key is an error, with the known key nearest to it).
//! A leaf below fs and rules: it imports only ids.rs and refusal.rs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::ids::{Mode, NameOrNumber};

/// `--config FILE`: the flags' settings in TOML, and the tables.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub ttl: Option<FileDuration>,
    pub prefix: Option<String>,
    pub secrets: Option<Vec<String>>,
    /// `[[secret]]`: a secret by name, or by ARN at a path.
    pub secret: Option<Vec<super::secret_spec::SecretTable>>,
    pub failover_region: Option<Vec<String>>,
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
    pub ca_bundle: Option<PathBuf>,
    pub local: Option<PathBuf>,
    pub source: Option<String>,
    pub ssm_create_type: Option<String>,
    pub ssm_key_id: Option<String>,
    pub demo: Option<bool>,
    pub uid: Option<NameOrNumber>,
    pub gid: Option<NameOrNumber>,
    pub allow_other: Option<bool>,
    pub read_only: Option<bool>,
    pub mlock: Option<bool>,
    pub allow_create: Option<bool>,
    pub threads: Option<usize>,
    pub cache_size: Option<usize>,
    pub max_stale: Option<FileDuration>,
    pub max_calls: Option<usize>,
    pub start_jitter: Option<FileDuration>,
    pub on_change: Option<String>,
    pub watch: Option<FileDuration>,
    pub hook_timeout: Option<FileDuration>,
    pub hook: Option<Vec<FileHook>>,
    /// `[[template]]`: rendered files.
    pub template: Option<Vec<TemplateSpec>>,
    pub trim_newline: Option<bool>,
    /// Ownership rules, in order (src/rules.rs).
    pub rule: Option<Vec<RuleSpec>>,
    /// Access rules by caller, and the access log (src/access).
    pub access: Option<Vec<AccessSpec>>,
    pub access_log: Option<String>,
    pub context: Option<String>,
    pub fscontext: Option<String>,
    pub defcontext: Option<String>,
    pub rootcontext: Option<String>,
}

/// `[[hook]]`: a change hook for the secrets whose names match `pattern`.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct FileHook {
    pub pattern: String,
    pub on_change: String,
    pub watch: Option<FileDuration>,
    pub timeout: Option<FileDuration>,
}

/// `[[rule]]`: owner, group, mode and trim_newline for the secrets whose
/// names match `pattern` (checked by src/rules.rs).
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub pattern: String,
    pub owner: Option<NameOrNumber>,
    pub group: Option<NameOrNumber>,
    pub mode: Option<Mode>,
    pub trim_newline: Option<bool>,
}

/// `[[access]]`: the callers that may open the files of the secrets whose
/// names match `pattern` (checked by src/access): each condition given
/// must hold; each takes one value or a list (any of them).
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct AccessSpec {
    pub pattern: String,
    /// systemd units (globs), e.g. "nginx.service".
    pub unit: Option<OneOrMany<String>>,
    /// Executables' paths (globs), e.g. "/usr/sbin/nginx".
    pub exe: Option<OneOrMany<String>>,
    pub user: Option<OneOrMany<NameOrNumber>>,
    pub group: Option<OneOrMany<NameOrNumber>>,
    /// The secret's name is left out of others' listings.
    pub hide: Option<bool>,
}

/// One value, or a list of them.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Clone> OneOrMany<T> {
    /// The values given (none when the key is absent).
    pub fn list(v: &Option<Self>) -> Vec<T> {
        match v {
            None => Vec::new(),
            Some(OneOrMany::One(t)) => vec![t.clone()],
            Some(OneOrMany::Many(ts)) => ts.clone(),
        }
    }
}

/// `[[template]]`: a rendered file (checked by src/fs/templates/def.rs).
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    pub name: String,
    pub source: PathBuf,
    pub owner: Option<NameOrNumber>,
    pub group: Option<NameOrNumber>,
    pub mode: Option<Mode>,
}

/// A duration in the config file: `ttl = 60` (seconds) or `ttl = "5m"`,
/// read as the same text the command line would take.
#[derive(Deserialize, Debug, Clone)]
#[serde(
    untagged,
    expecting = "a duration: a number of seconds, or a string such as \"90s\", \"5m\", \"2h\" or \"1d\""
)]
pub enum FileDuration {
    Secs(u64),
    Text(String),
}

impl FileDuration {
    pub fn text(self) -> String {
        match self {
            FileDuration::Secs(n) => n.to_string(),
            FileDuration::Text(t) => t,
        }
    }
}

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

/// The config file, read and parsed strictly; errors name the file, the
/// line and the key.
pub fn parse(path: &Path) -> Result<FileConfig, String> {
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
