//! The filesystem's side of the ownership rules and trim_newline: the
//! rules applied to attributes (and replaced on SIGHUP) and the trim at
//! commit time. The rules themselves are src/rules.rs.

use std::sync::Arc;

use super::core::Core;
use super::types::{Attr, Kind};
use crate::inode::{Node, secret_of};
use crate::rules::{self, Rules};
use crate::store::{SecretBytes, SecretName};

impl Core {
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
            // A directory is called writable when it is the root, a secret
            // or a pending secret: of these, all but the root.
            Node::Dir(p) => !p.is_empty() && writable,
            // A secret's own files and directories (versions/, json/,
            // stages/); not the mount's own, nor editors' files.
            n if secret_of(n).is_some() => attr.kind == Kind::Dir,
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
}
