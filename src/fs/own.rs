//! The filesystem's side of ownership rules, `.secretsfs/refresh` and
//! trim_newline: the rules applied to attributes (and replaced on SIGHUP),
//! the refresh file's open and writes, and the trim at commit time. The
//! rules themselves are src/rules.rs.

use std::sync::Arc;

use super::Fs;
use super::coherence::{Change, Files};
use super::handles::Handle;
use super::types::{Attr, Caller, Kind, Opened};
use crate::error::{Error, Result};
use crate::inode::{Ino, Node, secret_of};
use crate::rules::{self, Rules};
use crate::store::{SecretBytes, SecretName};
use crate::tree;

/// What one line written to `refresh` names.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Secret(SecretName),
    /// A prefix ending in `/`, or "" for `*`.
    Prefix(String),
}

/// The lines of one write(2) to `refresh`, all checked before any is done.
fn parse_targets(data: &[u8]) -> Result<Vec<Target>> {
    let bad = |why: &str| Error::Invalid(format!("refresh: {why}"));
    let text = std::str::from_utf8(data).map_err(|_| bad("not UTF-8"))?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    text.split('\n')
        .map(|line| match line {
            "" => Err(bad("an empty line")),
            "*" => Ok(Target::Prefix(String::new())),
            p if p.ends_with('/') && tree::valid_path(&p[..p.len() - 1]) => {
                Ok(Target::Prefix(p.to_string()))
            }
            n if !n.ends_with('/') && tree::valid_path(n) => Ok(Target::Secret(SecretName::new(n))),
            _ => Err(bad(
                "a line is not a secret name, a prefix ending in '/' or '*'",
            )),
        })
        .collect()
}

impl Fs {
    /// The rules now in force.
    pub(super) fn rules(&self) -> Arc<Rules> {
        self.rules.read().clone()
    }

    /// SIGHUP: new rules, and the kernel asks again for the attributes of
    /// every inode it holds, so new owners and modes apply at once.
    pub fn set_rules(&self, rules: Rules) {
        *self.rules.write() = Arc::new(rules);
        for (ino, _) in self.inodes.all() {
            self.kernel.changed(ino);
        }
    }

    /// One warning per pattern that matches no secret of the listing (or
    /// of `--secret`): a typo in a rule would otherwise go unnoticed.
    pub async fn warn_unmatched_rules(&self) {
        let rules = self.rules();
        if rules.is_empty() {
            return;
        }
        let names = match self.names.names().await {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "no listing to check the rules' patterns against");
                return;
            }
        };
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        for pattern in rules.unmatched(&names) {
            tracing::warn!(pattern, "ownership rule matches no secret of the listing");
        }
    }

    /// An attribute with the ownership rules applied: a secret's files and
    /// its directories (its own, `versions/`, `json/`, `stages/`) take the first matching
    /// rule's owner, group and mode (x added wherever r is, for
    /// directories); the root and plain prefix directories become
    /// traversable by all (x for group and others) once any rule exists.
    pub(super) fn ruled(&self, mut attr: Attr, writable: bool) -> Attr {
        let rules = self.rules();
        if rules.is_empty() {
            return attr;
        }
        let Some(node) = self.inodes.node(attr.ino) else {
            return attr;
        };
        let secret_dir = match &node {
            // attr_of calls a directory writable when it is the root, a
            // secret or a pending secret: of these, all but the root.
            Node::Dir(p) => !p.is_empty() && writable,
            Node::Versions(_) | Node::JsonDir(_) | Node::StagesDir(_) => true,
            Node::Current(_)
            | Node::Previous(_)
            | Node::Version(..)
            | Node::JsonKey(..)
            | Node::StageFile(..) => false,
            _ => return attr,
        };
        if matches!(node, Node::Dir(_)) && !secret_dir {
            attr.perm |= 0o011;
            return attr;
        }
        let Some(rule) = secret_of(&node).and_then(|s| rules.for_secret(s.as_str()).cloned())
        else {
            // A secret no rule names may hold secrets that rules give to
            // others (prod/db and prod/db/pw): they must get through it.
            if matches!(node, Node::Dir(_)) {
                attr.perm |= 0o011;
            }
            return attr;
        };
        attr.uid = rule.uid.unwrap_or(attr.uid);
        attr.gid = rule.gid.unwrap_or(attr.gid);
        let mode = match attr.kind {
            Kind::Dir => rule.dir_mode(),
            Kind::File => rule.mode,
        };
        if let Some(mode) = mode {
            attr.perm = if self.cfg.read_only {
                mode & !0o222
            } else {
                mode
            };
        }
        attr
    }

    /// The value a commit stores: with trim_newline (the secret's rule's
    /// setting, else the mount's), one trailing newline of a single-line
    /// text goes.
    pub(super) fn trimmed(&self, name: &SecretName, value: SecretBytes) -> SecretBytes {
        let rules = self.rules();
        let trim = rules
            .for_secret(name.as_str())
            .and_then(|r| r.trim_newline)
            .unwrap_or(self.cfg.trim_newline);
        if trim {
            rules::trim_newline(value)
        } else {
            value
        }
    }

    /// `.secretsfs/refresh`: write-only, the mount's owner's.
    pub(super) fn refresh_attr(&self, ino: Ino) -> Attr {
        Attr {
            ino,
            kind: Kind::File,
            size: 0,
            mtime: self.mounted_at,
            perm: 0o200,
            uid: self.cfg.uid,
            gid: self.cfg.gid,
        }
    }

    /// open(2) with the caller known: the refresh file is checked here
    /// (the mount's owner or root, writing), the rest is `open`.
    pub async fn open_as(&self, ino: Ino, flags: i32, caller: Caller) -> Result<Opened> {
        self.access_open(ino, caller).await?; // [[access]] hook
        if !matches!(self.inodes.node(ino), Some(Node::RefreshFile)) {
            return self.open(ino, flags, caller.pid).await;
        }
        if caller.uid != 0 && caller.uid != self.cfg.uid {
            return Err(Error::Refused("only the mount's owner may refresh"));
        }
        if flags & libc::O_ACCMODE == libc::O_RDONLY {
            return Err(Error::Refused("write-only file"));
        }
        if self.cfg.read_only {
            return Err(Error::ReadOnly);
        }
        Ok(Opened {
            fh: self.handles.add(Handle::Refresh),
            keep_cache: false,
            direct_io: true,
            no_flush: true,
        })
    }

    /// A write(2) to `refresh`: every line is checked, then each one's
    /// cache entries and the kernel's caches go; the write returns when
    /// that is done.
    pub(super) async fn refresh(&self, data: &[u8]) -> Result<u32> {
        // One write(2) is one request; a larger one may reach us in pieces
        // cut mid-line, which would be taken as other names.
        if data.len() > MAX_REFRESH_WRITE {
            return Err(Error::Invalid(format!(
                "write at most {MAX_REFRESH_WRITE} bytes at once to refresh"
            )));
        }
        for target in parse_targets(data)? {
            match &target {
                Target::Secret(s) => self.refresh_secret(s),
                Target::Prefix(p) => self.refresh_prefix(p),
            }
            tracing::info!(target = ?target, "refresh: cache entries dropped");
            self.stats.refreshed();
        }
        Ok(data.len() as u32)
    }

    pub(super) fn refresh_secret(&self, s: &SecretName) {
        self.secret_changed(s, Change::unknown(Files::All));
        self.names.refresh_name(s.as_str());
    }

    fn refresh_prefix(&self, p: &str) {
        self.secrets_changed_where(|n| n.as_str().starts_with(p));
        self.names.refresh(p);
        // The directories above may list other children now.
        for (ino, node) in self.inodes.all() {
            if matches!(&node, Node::Dir(d) if p.starts_with(&format!("{d}/")) || d.is_empty()) {
                self.kernel.changed(ino);
            }
        }
    }
}

/// The largest write(2) to `refresh` (one page: the kernel hands it over
/// whole).
const MAX_REFRESH_WRITE: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_lines_are_names_prefixes_or_a_star() {
        assert_eq!(
            parse_targets(b"prod/db\nprod/web/\n*\n").unwrap(),
            vec![
                Target::Secret(SecretName::new("prod/db")),
                Target::Prefix("prod/web/".into()),
                Target::Prefix(String::new()),
            ]
        );
        assert_eq!(
            parse_targets(b"a").unwrap(),
            vec![Target::Secret(SecretName::new("a"))]
        );
    }

    #[test]
    fn empty_or_invalid_refresh_lines_are_refused() {
        for bad in [
            &b""[..],
            b"\n",
            b"a\n\nb\n",
            b"/",
            b"a//b",
            b"../x",
            b"\xff",
            b"a\n\n",
        ] {
            assert!(
                matches!(parse_targets(bad), Err(Error::Invalid(_))),
                "{bad:?}"
            );
        }
    }
}
