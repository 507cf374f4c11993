//! Directories: the root, a prefix of secrets, a secret's own directory,
//! or both at once (`prod/db` and `prod/db/url`); what the namespace says
//! (ListSecrets, or the secret asked for directly). mkdir makes one whose
//! `current`, once written, creates the secret (`--allow-create`).

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use zeroize::Zeroizing;

use super::temp;
use super::view::{Listing, Parent, PutOnto, View};
use crate::error::{Error, Result};
use crate::fs::core::Core;
use crate::fs::names;
use crate::fs::types::{Caller, Entry, Kind, Opened};
use crate::fs::write_state::{Target, WriteState};
use crate::inode::{Ino, Node};
use crate::process;
use crate::store::SecretName;
use crate::tree::{self, OWN_FILES};

const ONLY_IN_SECRETS: &str = "files can only be created in a secret's directory";

pub(in crate::fs) struct Dirs;

impl Dirs {
    /// mkdir: a directory whose `current`, once written, creates the secret.
    pub async fn mkdir(&self, core: &Core, parent: Ino, name: &str) -> Result<Entry> {
        if core.cfg.read_only {
            return Err(Error::ReadOnly);
        }
        let Node::Dir(p) = core.node(parent)? else {
            return Err(Error::Refused("cannot create a directory here"));
        };
        if name.len() > names::NAME_MAX {
            return Err(Error::NameTooLong);
        }
        if !tree::valid_component(name) {
            return Err(Error::Invalid("not a valid secret name component".into()));
        }
        let child = tree::join(&p, name);
        let parent_info = core.resolve_dir(&p).await?;
        if (parent_info.secret && OWN_FILES.contains(&name))
            || core.resolve_dir(&child).await.is_ok()
        {
            return Err(Error::Exists);
        }
        if !core.cfg.allow_create {
            return Err(Error::Refused("creating secrets needs --allow-create"));
        }
        // Inside the mounted scope, or a directory on the way to the prefix.
        let toward_prefix = core
            .cfg
            .prefix
            .as_deref()
            .is_some_and(|pre| pre.starts_with(&format!("{child}/")));
        if !core.names.in_scope(&child, core.cfg.secrets.as_deref()) && !toward_prefix {
            return Err(Error::Refused("name outside the mounted prefix"));
        }
        core.names.add_pending(&child)?;
        let node = Node::Dir(Arc::from(child));
        let ino = core.inodes.assign(node.clone(), true);
        self.attr(core, ino, &node).await
    }

    /// rmdir: only a directory made by mkdir whose secret was never written.
    pub async fn rmdir(&self, core: &Core, parent: Ino, name: &str) -> Result<()> {
        let Node::Dir(p) = core.node(parent)? else {
            return Err(Error::NotDir);
        };
        let child = tree::join(&p, name);
        if core.names.remove_pending(&child) {
            core.inodes.remove(&Node::Dir(Arc::from(child)));
            return Ok(());
        }
        Err(Error::NotPermitted(
            "secrets cannot be removed through the mount",
        ))
    }
}

#[async_trait]
impl View for Dirs {
    fn owns(&self, node: &Node) -> bool {
        matches!(node, Node::Dir(_))
    }

    fn kind(&self, _node: &Node) -> Kind {
        Kind::Dir
    }

    fn path(&self, node: &Node) -> String {
        match node {
            Node::Dir(p) if p.is_empty() => "/".into(),
            Node::Dir(p) => p.to_string(),
            _ => unreachable!("not a directory"),
        }
    }

    fn temp_dir(&self, dir: &Node) -> Option<Arc<str>> {
        match dir {
            Node::Dir(p) => Some(p.clone()),
            _ => None,
        }
    }

    /// A child directory: asked last, after every view's own names.
    async fn lookup(
        &self,
        core: &Core,
        dir: &mut Parent,
        name: &str,
        _caller: Caller,
    ) -> Result<Option<Node>> {
        let Node::Dir(p) = &dir.node else {
            return Ok(None);
        };
        let p = p.clone();
        dir.info(core).await?;
        if !tree::valid_component(name) {
            return Err(Error::NotFound);
        }
        let child = tree::join(&p, name);
        core.resolve_dir(&child).await?;
        Ok(Some(Node::Dir(Arc::from(child))))
    }

    async fn list(
        &self,
        core: &Core,
        dir: &mut Parent,
        caller: Caller,
        out: &mut Listing<'_>,
    ) -> Result<()> {
        let Node::Dir(p) = &dir.node else {
            return Ok(());
        };
        let p = p.clone();
        let info = dir.info(core).await?;
        let mut children = if p.is_empty() {
            // The root lists what ListSecrets says; a failure is the caller's.
            core.names.listing().await?.children(&p)
        } else {
            core.names.listing_or_empty().await.0.children(&p)
        };
        children.extend(core.names.extra_children(&p));
        // `[[access]]` rules may hide secrets from callers they do not allow.
        let children = if core.cfg.access.active() {
            let full = children.iter().map(|c| tree::join(&p, c)).collect();
            let shown = core.cfg.access.listable(full, caller).await;
            children
                .into_iter()
                .filter(|c| shown.contains(&tree::join(&p, c)))
                .collect()
        } else {
            children
        };
        for c in children {
            // A secret's own names are its files, not children of that name.
            if info.secret && OWN_FILES.contains(&c.as_str()) {
                continue;
            }
            out.push(Node::Dir(Arc::from(tree::join(&p, &c))), Kind::Dir, &c);
        }
        Ok(())
    }

    async fn attr(&self, core: &Core, ino: Ino, node: &Node) -> Result<Entry> {
        let Node::Dir(p) = node else {
            return Err(Error::NotFound);
        };
        let info = core.resolve_dir(p).await?;
        let writable = p.is_empty() || info.secret || info.pending;
        let mut attr = core.dir_attr(ino, writable);
        if p.is_empty() {
            attr.perm |= core.root_search_bits();
        }
        Ok(Entry {
            attr,
            ttl: core.cfg.ttl,
        })
    }

    async fn open(
        &self,
        _core: &Core,
        _ino: Ino,
        _node: &Node,
        _flags: i32,
        _caller: Caller,
    ) -> Result<Opened> {
        Err(Error::IsDir)
    }

    /// create(2) in a secret's directory: `current` of a secret made by
    /// mkdir (or one this process unlinked to create anew), or a
    /// temporary file.
    async fn create(
        &self,
        core: &Core,
        dir: &Node,
        name: &str,
        flags: i32,
        mode: u32,
        caller: Caller,
    ) -> Result<(Entry, Opened)> {
        let Node::Dir(p) = dir else {
            return Err(Error::Refused(ONLY_IN_SECRETS));
        };
        let info = core.resolve_dir(p).await?;
        if !info.secret && !info.pending {
            return Err(Error::Refused(ONLY_IN_SECRETS));
        }
        let owner = process::tgid(caller.pid);
        if name == "current" {
            // A new secret (mkdir), or an existing one whose `current` this
            // process unlinked to create anew: either way, a write handle
            // that starts empty.
            let create = info.pending && !info.secret;
            if !create && !core.writes.end_replacing(p, owner) {
                return Err(Error::Exists);
            }
            let s = SecretName::new(&**p);
            let ino = core.inodes.assign(Node::Current(s.clone()), true);
            let mut state = WriteState::new(ino, s, Zeroizing::new(Vec::new()), flags, owner);
            if create {
                state = state.creating();
            }
            let opened = core.write_handle(state);
            let attr = core.file_attr(ino, 0, SystemTime::now(), true);
            return Ok((Entry::uncached(attr), opened));
        }
        if OWN_FILES.contains(&name) {
            return Err(Error::Exists);
        }
        if !tree::valid_component(name) {
            return Err(Error::Invalid("bad file name".into()));
        }
        // A name that is a child secret's directory stays that directory.
        let (listing, _) = core.names.listing_or_empty().await;
        if core.names.known(&tree::join(p, name), &listing).is_some() {
            return Err(Error::Exists);
        }
        temp::create(core, (p.clone(), Arc::from(name)), flags, mode, caller)
    }

    /// unlink(2) in a directory: secret files stay (EPERM), except that
    /// install(1)'s unlink of `current` before creating it anew hides
    /// `current` from that process alone, briefly, and deletes nothing.
    async fn unlink(&self, core: &Core, dir: &Node, name: &str, caller: Caller) -> Result<()> {
        let Node::Dir(p) = dir else {
            return Err(Error::NotPermitted("secret files cannot be removed"));
        };
        if name == "current" && !core.cfg.read_only && core.resolve_dir(p).await?.secret {
            let owner = process::tgid(caller.pid);
            if names::REPLACERS.contains(&process::comm(owner).as_str()) {
                tracing::info!(secret = %p, pid = caller.pid, "install replaces current: hidden from that process until it creates it");
                core.writes.start_replacing(p, owner);
                return Ok(());
            }
        }
        Err(Error::NotPermitted("secret files cannot be removed"))
    }

    async fn put_onto(&self, core: &Core, dir: &Node, name: &str) -> Result<Option<PutOnto>> {
        let Node::Dir(p) = dir else {
            return Ok(None);
        };
        if name == "current" {
            let info = core.resolve_dir(p).await?;
            let create = info.pending && !info.secret;
            let s = SecretName::new(&**p);
            return Ok(Some((s, Target::Current, Target::Current, create)));
        }
        if OWN_FILES.contains(&name) {
            return Err(Error::NotPermitted("previous and versions are read-only"));
        }
        Ok(None)
    }
}
