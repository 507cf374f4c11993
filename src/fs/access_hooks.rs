//! Where the filesystem asks the `[[access]]` rules and the access log
//! (src/access): what an open, a create or a listing is about, in the
//! terms of the rules (the file's path and the secrets it reads). The
//! hook lines that call these are marked `[[access]] hook`.

use super::Fs;
use super::types::Caller;
use crate::access::Target;
use crate::error::Result;
use crate::inode::{Ino, Node, secret_of};
use crate::tree;

impl Fs {
    /// SIGHUP: new `[[access]]` rules (refused on a read-only mount in
    /// no-open mode; the old ones stay).
    pub fn set_access_rules(
        &self,
        rules: crate::access::AccessRules,
    ) -> std::result::Result<(), String> {
        self.cfg.access.set_rules(rules, self.cfg.read_only)
    }

    /// At every open: the secrets the file reads (its own secret's, or
    /// those the render a rendered file serves used) must allow the caller.
    pub(super) async fn access_open(&self, ino: Ino, caller: Caller) -> Result<()> {
        if !self.cfg.access.active() {
            return Ok(());
        }
        let secrets = match self.inodes.node(ino) {
            Some(Node::Rendered(n)) => self.rendered_secrets(&n).await?,
            Some(Node::Temp(d, _)) if !d.is_empty() => vec![d.to_string()],
            Some(
                n @ (Node::Current(_)
                | Node::Previous(_)
                | Node::Version(..)
                | Node::JsonKey(..)
                | Node::StageFile(..)),
            ) => secret_of(&n).into_iter().map(|s| s.to_string()).collect(),
            _ => return Ok(()),
        };
        let file = self.path_of(ino);
        let t = Target {
            file: &file,
            secrets: &secrets,
        };
        self.cfg.access.check_open(t, caller, &self.stats).await
    }

    /// At create in a secret's directory (`current`, an editor's
    /// temporary file, `json/<key>`, `stages/<label>`): the secret's rules
    /// apply, as they would to an open of the file it becomes.
    pub(super) async fn access_create(
        &self,
        parent: Ino,
        name: &str,
        caller: Caller,
    ) -> Result<()> {
        if !self.cfg.access.active() {
            return Ok(());
        }
        let Some(secret) = self.inodes.node(parent).as_ref().and_then(secret_of) else {
            return Ok(());
        };
        let file = self.path_in(parent, name);
        let secrets = [secret.to_string()];
        let t = Target {
            file: &file,
            secrets: &secrets,
        };
        self.cfg.access.check_open(t, caller, &self.stats).await
    }

    /// At rename (an editor's save, a promotion of `stages/<label>` onto
    /// `current`): the secrets of both directories must allow the caller.
    pub async fn access_rename(
        &self,
        from: (Ino, &str),
        to: (Ino, &str),
        caller: Caller,
    ) -> Result<()> {
        self.access_create(from.0, from.1, caller).await?;
        self.access_create(to.0, to.1, caller).await
    }

    /// A directory's children less the secrets whose rules hide them
    /// from this caller.
    pub(super) async fn access_listable(
        &self,
        dir: &str,
        children: impl IntoIterator<Item = String>,
        caller: Caller,
    ) -> Vec<String> {
        let children: Vec<String> = children.into_iter().collect();
        if !self.cfg.access.active() {
            return children;
        }
        let full = children.iter().map(|c| tree::join(dir, c)).collect();
        let shown = self.cfg.access.listable(full, caller).await;
        children
            .into_iter()
            .filter(|c| shown.contains(&tree::join(dir, c)))
            .collect()
    }
}
