//! "Secret X changed": the one place that drops what the caches and the
//! kernel hold of a secret, once. The caller says what it knows of the
//! secret's labels now (a put knows its new AWSCURRENT and, when Secrets
//! Manager confirms it, AWSPREVIOUS; a promotion the versions it moved; a
//! refresh, a hook or a lost answer nothing), and this sets or drops the
//! cached labels, drops the description (and the version list when it
//! moved), and tells the kernel that the files showing the secret's labels
//! (current, previous, json keys, stage files) are old. Versions by id are
//! immutable and stay, except when a store numbers them again (a Parameter
//! Store parameter deleted and created anew: `renumbered`).

use std::sync::Arc;

use super::core::Core;
use crate::inode::{Node, secret_of};
use crate::store::{SecretName, SecretVersion, Selector, Stage};

/// What is known of one label's value after the change.
pub(super) enum Slot {
    /// Unchanged: keep what is cached.
    Keep,
    /// Not known: the next read asks.
    Drop,
    /// This version carries it now (None: no version does).
    Set(Option<Arc<SecretVersion>>),
}

/// Which of the kernel's files of the secret are old.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Files {
    /// Those showing one of its labels: current, previous, json keys,
    /// stage files.
    Labels,
    /// Every file and directory of the secret (a refresh).
    All,
}

/// What a change is known to have done.
pub(super) struct Change {
    pub current: Slot,
    pub previous: Slot,
    /// Versions were added, or their labels moved (the listing and its
    /// labels are old).
    pub versions: bool,
    pub files: Files,
}

impl Change {
    /// Nothing is known: everything of the secret goes.
    pub(super) fn unknown(files: Files) -> Self {
        Self {
            current: Slot::Drop,
            previous: Slot::Drop,
            versions: true,
            files,
        }
    }
}

impl Core {
    /// The secret `s` changed as `change` says: the caches and the kernel
    /// are told, once.
    pub(super) fn secret_changed(&self, s: &SecretName, change: Change) {
        let ttl = Some(self.cfg.ttl);
        // The new AWSCURRENT is known (a put or a promotion through this
        // mount): `current`'s pages are refilled from it at once, so that a
        // map of it follows the write, as a file rewritten in place.
        let new_current = match &change.current {
            Slot::Set(Some(v)) => Some(v.clone()),
            _ => None,
        };
        for (stage, slot) in [
            (Stage::Current, change.current),
            (Stage::Previous, change.previous),
        ] {
            let key = (s.clone(), Selector::Stage(stage));
            match slot {
                Slot::Keep => {}
                Slot::Drop => self.values.remove(&key),
                Slot::Set(v) => self.values.insert(key, v, ttl),
            }
        }
        if change.versions {
            self.version_ids.remove(s);
        }
        self.descs.forget(s);
        let old = |n: &Node| match change.files {
            Files::All => secret_of(n).is_some_and(|of| of == *s),
            Files::Labels => n.label_file().is_some_and(|(of, ..)| of == s),
        };
        for ino in self.inodes.matching(old) {
            self.kernel.changed(ino);
        }
        if let Some(v) = new_current
            && let Some(ino) = self.inodes.ino_of(&Node::Current(s.clone()))
        {
            self.kernel.tell(ino, &v);
        }
        self.names_changed(|of| of == s);
    }

    /// On a read-only mount (inodes pinned to a version), the kernel's
    /// entries of the files that show the labels of the secrets `pick`
    /// chooses go, so that the next path walk gets their new inodes.
    fn names_changed(&self, pick: impl Fn(&SecretName) -> bool) {
        if !self.cfg.read_only {
            return;
        }
        for (_, node) in self.inodes.all() {
            let Some((s, parent, name)) = node.label_file() else {
                continue;
            };
            if !pick(s) {
                continue;
            }
            if let Some(p) = self.inodes.ino_of(&parent) {
                self.kernel.name_changed(p, &name);
            }
        }
    }

    /// Every secret `pick` chooses changed in ways not known (a refresh of
    /// a prefix): their labels, listings and descriptions go, and the
    /// kernel drops every file and directory of them. Versions by id stay.
    pub(super) fn secrets_changed_where(&self, pick: impl Fn(&SecretName) -> bool) {
        self.values
            .remove_where(|(n, sel)| matches!(sel, Selector::Stage(_)) && pick(n));
        self.descs.forget_where(&pick);
        self.version_ids.remove_where(&pick);
        for (ino, node) in self.inodes.all() {
            if secret_of(&node).is_some_and(|s| pick(&s)) {
                self.kernel.changed(ino);
            }
        }
        self.names_changed(pick);
    }

    /// `now` replaced `before` under one selector, and is a version
    /// numbered again (Parameter Store numbers from 1 again when a
    /// parameter is deleted and created anew): the versions cached by
    /// number are the old parameter's, so they go, with the version
    /// listing, and the kernel drops the files showing them.
    pub(super) fn renumbered(
        &self,
        s: &SecretName,
        before: Option<&Arc<SecretVersion>>,
        now: &SecretVersion,
    ) {
        if !before.is_some_and(|b| now.id.renumbers(&b.id)) {
            return;
        }
        tracing::info!(secret = %s, version = %now.id.file_name(),
            "created anew since it was read: its versions by number are read again");
        self.values
            .remove_where(|(n, sel)| n == s && matches!(sel, Selector::Id(_)));
        self.version_ids.remove(s);
        self.descs.forget(s);
        for ino in self
            .inodes
            .matching(|n| matches!(n, Node::Version(of, _) if of == s))
        {
            self.kernel.changed(ino);
        }
    }

    /// A refresh of one secret: everything cached of it goes, and the
    /// namespace asks for the name again.
    pub(super) fn refresh_secret(&self, s: &SecretName) {
        self.secret_changed(s, Change::unknown(Files::All));
        self.names.refresh_name(s.as_str());
    }

    /// A refresh of a prefix: every secret under it, and the listing.
    pub(super) fn refresh_prefix(&self, p: &str) {
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
