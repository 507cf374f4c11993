//! How the daemon refuses to start: every refusal, whether clap's, the
//! configuration's or the start-up checks', is one line on standard error,
//! `secretsfs: error: <cause>`, and its exit status tells a supervisor
//! whether a restart can help (README, "Exit status").

use std::fmt;

/// A failure a restart may cure (the network, a store or mountpoint another
/// daemon still holds, credentials that may be renewed meanwhile).
pub const EXIT_FAILURE: u8 = 1;
/// A usage or configuration error: a restart cannot cure it, so the
/// systemd units list it in `RestartPreventExitStatus=`. clap's own status
/// for usage errors, kept.
pub const EXIT_CONFIG: u8 = 2;

/// Every exit status and what it means, for `--help` and the man page.
pub const EXIT_STATUSES: [(u8, &str); 3] = [
    (
        0,
        "unmounted cleanly (SIGTERM, SIGINT or an external umount)",
    ),
    (
        EXIT_FAILURE,
        "a failure a restart may cure: a store or mountpoint in use by another daemon, \
         credentials not ready yet or expired, a mount that could not be made",
    ),
    (
        EXIT_CONFIG,
        "a usage or configuration error: an unknown option or key, a bad value, no region, \
         no or invalid credentials, a mountpoint that is a file or not empty \
         (the systemd units do not restart it)",
    ),
];

/// Why the daemon did not start, and whether a restart can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
    /// A usage or configuration error (exit status `EXIT_CONFIG`).
    pub config: bool,
}

impl Refusal {
    /// A usage or configuration error.
    pub fn config(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            config: true,
        }
    }

    /// A failure a restart may cure.
    pub fn failure(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            config: false,
        }
    }

    pub fn code(&self) -> u8 {
        if self.config {
            EXIT_CONFIG
        } else {
            EXIT_FAILURE
        }
    }

    /// clap's error (several lines, a usage block, a tip) as one line with
    /// the same cause, and clap's suggestion as "did you mean".
    pub fn from_clap(e: &clap::Error) -> Self {
        use clap::error::{ContextKind, ContextValue};
        let text = e.render().to_string();
        // The cause: the first paragraph, without clap's "error: ".
        let cause = text
            .split("\n\n")
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let cause = cause.strip_prefix("error: ").unwrap_or(&cause);
        let mut line = cause.to_string();
        match e.get(ContextKind::SuggestedArg) {
            Some(ContextValue::String(s)) => line.push_str(&format!("; did you mean '{s}'?")),
            Some(ContextValue::Strings(s)) if !s.is_empty() => {
                line.push_str(&format!("; did you mean '{}'?", s.join("' or '")))
            }
            _ => {}
        }
        line.push_str(" (secretsfs --help lists the options)");
        Self::config(line)
    }
}

impl From<String> for Refusal {
    fn from(message: String) -> Self {
        Self::failure(message)
    }
}

impl From<&str> for Refusal {
    fn from(message: &str) -> Self {
        Self::failure(message)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The refusal as printed on standard error.
pub fn line(message: &str) -> String {
    format!("secretsfs: error: {message}")
}

/// The known name nearest to a mistyped one, if one is near enough: at
/// most about one edit in three characters (a swap counts as one edit).
pub fn suggest<'a>(typed: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (strsim::normalized_damerau_levenshtein(typed, k), k))
        .filter(|(score, _)| *score >= 0.6)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// "; did you mean 'x'?" when one is near enough, else nothing.
pub fn did_you_mean<'a>(typed: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    suggest(typed, known)
        .map(|k| format!("; did you mean '{k}'?"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn clap_refusal(args: &[&str]) -> Refusal {
        let e = crate::config::Cli::try_parse_from(
            std::iter::once("secretsfs").chain(args.iter().copied()),
        )
        .unwrap_err();
        Refusal::from_clap(&e)
    }

    #[test]
    fn clap_errors_become_one_line_with_the_suggestion() {
        let r = clap_refusal(&["--tll", "60", "/mnt"]);
        assert!(r.config && r.code() == EXIT_CONFIG);
        assert!(!r.message.contains('\n'), "{r}");
        assert!(r.message.contains("'--tll'"), "{r}");
        assert!(r.message.contains("did you mean '--ttl'?"), "{r}");
        assert!(!r.message.contains("Usage"), "{r}");
        let r = clap_refusal(&[]);
        assert!(
            r.message.contains("<MOUNTPOINT>") && !r.message.contains('\n'),
            "{r}"
        );
        assert_eq!(line("x"), "secretsfs: error: x");
    }

    #[test]
    fn suggestions_only_when_near() {
        assert_eq!(
            suggest("prefx", ["prefix", "profile", "ttl"]),
            Some("prefix")
        );
        assert_eq!(suggest("tll", ["ttl", "threads"]), Some("ttl"));
        assert_eq!(suggest("frobnicate", ["ttl", "prefix"]), None);
        assert_eq!(did_you_mean("zzz", ["ttl"]), "");
    }

    #[test]
    fn failures_and_configuration_errors_have_distinct_codes() {
        assert_eq!(Refusal::from("x".to_string()).code(), EXIT_FAILURE);
        assert_eq!(Refusal::config("x").code(), EXIT_CONFIG);
        assert_ne!(EXIT_FAILURE, EXIT_CONFIG);
    }
}
