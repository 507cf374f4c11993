//! One view per kind of file, and the one place they are registered.
//!
//! A view is a type that answers, for its own names, what the kernel asks
//! of a file or directory: lookup, attributes, listing, open, and the
//! bytes of a read that no handle answers; and, where its files can be
//! edited, create, unlink, truncate and which names a rename puts. The
//! views: `secret` (`current`, `previous`, `versions/`), `json` (`json/`),
//! `stages` (`stages/`), `own` (`.secretsfs/`: stats, metrics, refresh,
//! rendered files), `temp` (editors' temporary files) and `dirs` (secrets'
//! and prefixes' directories). Adding a kind of file is a new module here
//! that implements `View`, plus one line in `Views::new` (and its node
//! variants in inode.rs).
//!
//! A trait rather than an enum of views: each view keeps its own state
//! (json's warnings, the stages being created) and its own code in its
//! module, and the dispatch below never names a kind of file.
//!
//! What every view shares is below the views, in `Core`: the cache reads
//! that give a file's version, the attributes that tell the kernel which
//! version it holds (`Core::version_entry`), and the exact-read rule: the
//! façade's `read` answers a handle from its own version and a page-cache
//! fill from the version the kernel was told, so a view only says what a
//! file holds (`content`), never how a read is cut.

mod dirs;
mod json;
mod own;
mod secret;
mod stages;
mod temp;
mod view;

use std::sync::Arc;

use super::core::Core;
use super::handles::Handle;
use super::types::{Caller, DirEntry, Entry, Kind, Opened};
use super::write_state::Ownership;
use crate::error::{Error, Result};
use crate::inode::{Ino, Node, secret_of};
use crate::process;
use crate::store::SecretName;

pub(super) use dirs::Dirs;
pub(super) use own::refresh;
pub(super) use view::Content;
use view::{Listing, Parent, View};

/// Every kind of file, in the order a lookup asks them.
pub(super) struct Views {
    all: Vec<Box<dyn View>>,
}

impl Views {
    /// The registration: one line per kind of file. Temporary files come
    /// first (a temporary file of a name hides the others'), directories
    /// last (a secret's own names are not its children's).
    pub fn new() -> Self {
        Self {
            all: vec![
                Box::new(temp::TempFiles),
                Box::new(own::OwnFiles),
                Box::new(secret::SecretFiles),
                Box::new(json::JsonFiles::default()),
                Box::new(stages::StageFiles),
                Box::new(dirs::Dirs),
            ],
        }
    }

    /// The view of `node`.
    pub fn of(&self, node: &Node) -> &dyn View {
        self.all
            .iter()
            .find(|v| v.owns(node))
            .map(|v| &**v)
            .expect("every node has a view")
    }

    pub fn path(&self, node: &Node) -> String {
        self.of(node).path(node)
    }

    pub fn kind(&self, node: &Node) -> Kind {
        self.of(node).kind(node)
    }

    /// The node `name` stands for in `dir`.
    pub async fn lookup(&self, core: &Core, dir: Node, name: &str, caller: Caller) -> Result<Node> {
        let is_dir = self.kind(&dir) == Kind::Dir;
        let mut parent = Parent::new(dir.clone(), self.temp_dir(&dir));
        for v in &self.all {
            if let Some(node) = v.lookup(core, &mut parent, name, caller).await? {
                return Ok(node);
            }
        }
        Err(if is_dir {
            Error::NotFound
        } else {
            Error::NotDir
        })
    }

    pub async fn attr(&self, core: &Core, ino: Ino, node: &Node) -> Result<Entry> {
        self.of(node).attr(core, ino, node).await
    }

    /// A directory's entries, `.` and `..` first.
    pub async fn list(
        &self,
        core: &Core,
        ino: Ino,
        dir: Node,
        caller: Caller,
    ) -> Result<Vec<DirEntry>> {
        if self.kind(&dir) != Kind::Dir {
            return Err(Error::NotDir);
        }
        let dot = |name: &str| DirEntry {
            ino,
            kind: Kind::Dir,
            name: name.into(),
        };
        let mut out = Listing {
            core,
            out: vec![dot("."), dot("..")],
        };
        let mut parent = Parent::new(dir.clone(), self.temp_dir(&dir));
        // In the order of registration, temporary files last.
        let (temps, named) = self.all.split_first().expect("views are registered");
        for v in named.iter().chain(std::iter::once(temps)) {
            v.list(core, &mut parent, caller, &mut out).await?;
        }
        Ok(out.out)
    }

    /// The directory part of temporary files' keys in `dir`, if any.
    pub fn temp_dir(&self, dir: &Node) -> Option<Arc<str>> {
        self.of(dir).temp_dir(dir)
    }

    /// setattr: a truncation goes to the file's view (or the write handle
    /// that the same process just opened with O_TRUNC); modes and owners
    /// of a view's files are fixed: what changes nothing is accepted, any
    /// real change refused. Temporary files take any mode.
    pub async fn setattr(
        &self,
        core: &Core,
        ino: Ino,
        fh: Option<u64>,
        size: Option<u64>,
        owner: Ownership,
        caller: Caller,
    ) -> Result<Entry> {
        let pid = caller.pid;
        // open(O_TRUNC) arrives as an OPEN, then a truncation to 0 without
        // a handle, from the same process: it belongs to the write handle
        // that process just opened on this file (not a put of its own).
        if fh.is_none()
            && size == Some(0)
            && let Some(Handle::Write(w)) = core.fresh_write_handle(ino, process::tgid(pid))
        {
            w.lock().await.truncate_at_open();
            let node = core.node(ino)?;
            // The stored value's size: see `View::truncate`.
            return Ok(Entry::uncached(self.attr(core, ino, &node).await?.attr));
        }
        let handle = fh.and_then(|fh| core.handles.get(fh));
        // truncate(2) by path writes with no open before it: `[[access]]`
        // checks it as an open of the file (a handle was checked at open).
        if size.is_some() && handle.is_none() {
            self.access_open(core, &core.node(ino)?, caller).await?;
        }
        if let Some(Handle::Temp(t)) = &handle {
            return temp::setattr(core, ino, &t.file, size, owner.mode);
        }
        let node = core.node(ino)?;
        if let Node::Temp(..) = &node {
            let file = temp::file_of(core, &node)?;
            return temp::setattr(core, ino, &file, size, owner.mode);
        }
        let view = self.of(&node);
        if let Some(size) = size
            && let Some(e) = view.truncate(core, ino, &node, handle, size).await?
        {
            return Ok(e);
        }
        let e = view.attr(core, ino, &node).await?;
        // Tools copy modes and owners over (sed -i, vim, install -m 600).
        let same = owner
            .mode
            .is_none_or(|m| (m & 0o7777) as u16 == e.attr.perm)
            && owner.uid.is_none_or(|u| u == e.attr.uid)
            && owner.gid.is_none_or(|g| g == e.attr.gid);
        if !same {
            return Err(Error::NotPermitted(
                "modes and owners of secret files are fixed",
            ));
        }
        Ok(e)
    }

    /// create(2) in `parent`: its view's.
    pub async fn create(
        &self,
        core: &Core,
        parent: Ino,
        name: &str,
        flags: i32,
        mode: u32,
        caller: Caller,
    ) -> Result<(Entry, Opened)> {
        if core.cfg.read_only {
            return Err(Error::ReadOnly);
        }
        if name.len() > crate::fs::names::NAME_MAX {
            return Err(Error::NameTooLong);
        }
        let dir = core.node(parent)?;
        self.access_in(core, parent, name, caller).await?;
        self.of(&dir)
            .create(core, &dir, name, flags, mode, caller)
            .await
    }

    /// unlink(2): a temporary file goes (open descriptors keep it); any
    /// other name is its directory's view's.
    pub async fn unlink(&self, core: &Core, parent: Ino, name: &str, caller: Caller) -> Result<()> {
        let dir = core.node(parent)?;
        // Removing a JSON key is a write; an editor's file holds one.
        self.access_in(core, parent, name, caller).await?;
        if let Some(d) = self.temp_dir(&dir) {
            let key = (d, Arc::<str>::from(name));
            if core.temps.unlink(&key, caller.uid) {
                core.inodes.remove(&Node::Temp(key.0, key.1));
                return Ok(());
            }
        }
        self.of(&dir).unlink(core, &dir, name, caller).await
    }

    /// rename(2): a temporary file within its directory (onto a view's
    /// file: that file's put), or what the old directory's view allows.
    pub async fn rename(
        &self,
        core: &Core,
        parent: Ino,
        name: &str,
        newparent: Ino,
        newname: &str,
    ) -> Result<()> {
        let (from_dir, to_dir) = (core.node(parent)?, core.node(newparent)?);
        if let Some(d) = self.temp_dir(&from_dir) {
            let from = (d, Arc::<str>::from(name));
            if let Some(file) = core.temps.named(&from) {
                if self.temp_dir(&to_dir).as_ref() != Some(&from.0) {
                    return Err(Error::NotPermitted(
                        "temporary files stay in their directory",
                    ));
                }
                let onto = self
                    .of(&from_dir)
                    .put_onto(core, &from_dir, newname)
                    .await?;
                return temp::rename(core, from, file, newname, onto).await;
            }
        }
        self.of(&from_dir)
            .rename(core, &from_dir, name, newparent, newname)
            .await
    }

    pub fn path_in(&self, dir: &Node, name: &str) -> String {
        match self.path(dir) {
            d if d == "/" => name.to_string(),
            d => format!("{d}/{name}"),
        }
    }

    /// `[[access]]`: at every open, the secrets the file reads must allow
    /// the caller.
    pub async fn access_open(&self, core: &Core, node: &Node, caller: Caller) -> Result<()> {
        let access = &core.cfg.access;
        if !access.active() {
            return Ok(());
        }
        let secrets = self.of(node).reads(core, node).await?;
        self.check(core, self.path(node), &secrets, caller).await
    }

    /// `[[access]]`: a create or a rename of `name` in `dir` (`current`, a
    /// key, a label, an editor's file) is checked as an open of the file
    /// it becomes: the secret of the directory must allow the caller.
    pub async fn access_in(&self, core: &Core, dir: Ino, name: &str, caller: Caller) -> Result<()> {
        if !core.cfg.access.active() {
            return Ok(());
        }
        let Some(node) = core.inodes.node(dir) else {
            return Ok(());
        };
        let secrets: Vec<SecretName> = secret_of(&node).into_iter().collect();
        self.check(core, self.path_in(&node, name), &secrets, caller)
            .await
    }

    async fn check(
        &self,
        core: &Core,
        file: String,
        secrets: &[SecretName],
        caller: Caller,
    ) -> Result<()> {
        if secrets.is_empty() {
            return Ok(());
        }
        let secrets: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
        let t = crate::access::Target {
            file: &file,
            secrets: &secrets,
        };
        core.cfg.access.check_open(t, caller, &core.stats).await
    }
}
