//! Secret names as paths: which names can be paths, and the directory
//! structure a set of names makes (a directory can be a secret and a prefix).

use std::collections::BTreeSet;

use globset::{GlobBuilder, GlobMatcher};

use crate::store::SecretName;

/// The names a secret's own directory holds; a child secret with one of these
/// names is shadowed.
pub const OWN_FILES: [&str; 5] = ["current", "previous", "versions", "json", "stages"];
pub const STATS_DIR: &str = ".secretsfs";
pub const STATS_FILE: &str = "stats";
pub const METRICS_FILE: &str = "metrics";
/// `.secretsfs/refresh`: write names to drop their cache entries.
pub const REFRESH_FILE: &str = "refresh";

/// A path component we can show: not empty, not `.`/`..`, at most 255 bytes.
pub fn valid_component(c: &str) -> bool {
    !c.is_empty() && c != "." && c != ".." && c.len() <= 255 && !c.contains('\0')
}

/// A name under the mount's own `.secretsfs/` directory: never shown as a
/// secret, so that nothing there can collide with one.
pub fn reserved(name: &str) -> bool {
    name.split('/').next() == Some(STATS_DIR)
}

pub fn valid_path(name: &str) -> bool {
    name.split('/').all(valid_component)
}

/// A glob over secret names, the one of `[[rule]]` and of the hooks: `*`
/// stays within one `/` component, `**` crosses them (secret names are
/// paths here, as they are in the mount).
pub fn glob(pattern: &str) -> Result<GlobMatcher, globset::Error> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
}

pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Names already warned about, so that each warning is logged once.
/// Bounded: past `MAX_WARNED` names the set starts over (a name may then be
/// warned about once more).
#[derive(Default)]
pub struct Warned(parking_lot::Mutex<std::collections::HashSet<String>>);

const MAX_WARNED: usize = 10_000;

impl Warned {
    pub(crate) fn first_time(&self, name: &str) -> bool {
        let mut set = self.0.lock();
        if set.len() >= MAX_WARNED {
            set.clear();
        }
        set.insert(name.to_string())
    }
}

/// The secrets of one listing, as paths.
#[derive(Default, Debug)]
pub struct Listing {
    names: BTreeSet<String>,
}

impl Listing {
    /// Leaves out names that cannot be paths, and notes children shadowed by
    /// a secret's own files; each is logged once per name over the life of
    /// `warned`, not at every refresh.
    pub fn build(names: impl IntoIterator<Item = SecretName>, warned: &Warned) -> Self {
        let mut set = BTreeSet::new();
        for n in names {
            if reserved(n.as_str()) {
                if warned.first_time(n.as_str()) {
                    tracing::warn!(secret = %n.as_str().escape_debug(), "secret name is under the mount's reserved .secretsfs directory; left out of listings");
                }
            } else if valid_path(n.as_str()) {
                set.insert(n.as_str().to_string());
            } else if warned.first_time(n.as_str()) {
                tracing::warn!(secret = %n.as_str().escape_debug(), "secret name cannot be a path; left out of listings");
            }
        }
        for n in &set {
            if let Some((parent, last)) = n.rsplit_once('/')
                && OWN_FILES.contains(&last)
                && set.contains(parent)
                && warned.first_time(n)
            {
                tracing::warn!(secret = %n, "secret is shadowed by its parent's own file of the same name");
            }
        }
        Self { names: set }
    }

    /// Every secret name listed.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    pub fn is_secret(&self, path: &str) -> bool {
        self.names.contains(path)
    }

    /// Whether some secret lives below `path` ("" is everything's prefix).
    pub fn is_prefix(&self, path: &str) -> bool {
        if path.is_empty() {
            return true;
        }
        let lead = format!("{path}/");
        self.names
            .range(lead.clone()..)
            .next()
            .is_some_and(|n| n.starts_with(&lead))
    }

    /// The child components directly below `path`.
    pub fn children(&self, path: &str) -> BTreeSet<String> {
        let lead = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        self.names
            .range(lead.clone()..)
            .take_while(|n| n.starts_with(&lead))
            .filter_map(|n| n[lead.len()..].split('/').next())
            .map(str::to_string)
            .collect()
    }

    /// Bytes held, roughly: the names and a tree node each.
    pub fn weight(&self) -> usize {
        self.names.iter().map(|n| n.len() + 48).sum()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.names.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(names: &[&str]) -> Listing {
        Listing::build(
            names.iter().map(|n| SecretName::new(*n)),
            &Warned::default(),
        )
    }

    #[test]
    fn nested_names_make_directories_and_a_secret_can_be_a_prefix() {
        let l = listing(&["prod/db", "prod/db/password", "prod/api", "top"]);
        assert_eq!(
            l.children(""),
            BTreeSet::from(["prod".into(), "top".into()])
        );
        assert_eq!(
            l.children("prod"),
            BTreeSet::from(["api".into(), "db".into()])
        );
        assert_eq!(l.children("prod/db"), BTreeSet::from(["password".into()]));
        assert!(l.is_secret("prod/db") && l.is_prefix("prod/db"));
        assert!(!l.is_secret("prod") && l.is_prefix("prod"));
        assert!(!l.is_prefix("pro"));
        assert!(!l.is_prefix("top"));
    }

    #[test]
    fn each_bad_name_is_warned_about_once() {
        let warned = Warned::default();
        Listing::build([SecretName::new("a//b")], &warned);
        assert!(warned.first_time("ok"), "a name never seen is new");
        assert!(!warned.first_time("a//b"), "already warned");
    }

    #[test]
    fn names_under_the_reserved_directory_are_left_out() {
        let l = listing(&[".secretsfs/rendered/x", ".secretsfs", "a/.secretsfs", "ok"]);
        assert_eq!(l.children(""), BTreeSet::from(["a".into(), "ok".into()]));
        assert!(
            l.is_secret("a/.secretsfs"),
            "only the first component is reserved"
        );
    }

    #[test]
    fn names_that_cannot_be_paths_are_left_out() {
        let long = "x".repeat(256);
        let l = listing(&["a//b", "./x", "a/..", "/lead", "ok", long.as_str()]);
        assert_eq!(l.len(), 1);
        assert!(l.is_secret("ok"));
    }
}
