//! The filesystem's logic, free of fuser: async functions over inode numbers
//! that return plain structs or an `Error`.
//!
//! `Fs` is a façade: it lists every operation the kernel can ask and hands
//! each to its owner. What a name is, its attributes, its listing, its
//! open and what a read without a handle gets belong to the view of its
//! kind of file (views/, registered in one place); the bytes a read on a
//! handle gets, writes, flushes and releases belong to the handles and the
//! write pipeline (write.rs); the shared state and the value reads under
//! them to `Core` (core.rs). Data flows one way, and no module imports one
//! above it:
//!
//! fuse.rs -> Fs (this file) -> views/ -> write, coherence, hooks,
//! templates, rules -> Core -> leaves (types, names, write_state, handles,
//! kernel, namespace, temp, describe, stages, puts, settings, jsonkey) ->
//! cache -> store. `.ci/imports` checks that the graph has no cycle.

mod coherence;
mod core;
mod describe;
mod handles;
mod hooks;
mod jsonkey;
mod kernel;
mod names;
mod namespace;
mod puts;
mod rules;
mod settings;
mod stages;
mod temp;
mod templates;
pub(crate) mod types;
mod views;
mod write;
mod write_state;

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::inode::{Ino, Node};
use crate::stats::Stats;
use crate::store::{SecretName, SecretStore};

use self::core::Core;
use handles::Handle;
use types::slice;
use views::{Content, Views};

pub use names::STAGES_XATTR;
pub use settings::{
    COLD_WAIT, DEFAULT_CACHE_BYTES, DEFAULT_MAX_STALE, DENIED_TTL, DOWN_TTL, FsConfig,
    REFRESH_WAIT, REVERIFY, TTL_JITTER,
};
pub use templates::{RENDERED_DIR, TemplateDef, resolve_all};
pub use types::{Attr, Caller, Closer, DirEntry, Entry, Invalidate, Kind, Opened, Sizes};
pub use write_state::{MAX_VALUE_LEN, Ownership};

pub struct Fs {
    core: Core,
    views: Views,
}

impl Fs {
    pub fn new(
        cfg: FsConfig,
        store: Arc<dyn SecretStore>,
        stats: Arc<Stats>,
        invalidator: Arc<dyn Invalidate>,
    ) -> Arc<Self> {
        Arc::new(Self {
            core: Core::new(cfg, store, stats, invalidator),
            views: Views::new(),
        })
    }

    // ---- names -----------------------------------------------------------

    pub async fn lookup(&self, parent: Ino, name: &str, caller: Caller) -> Result<Entry> {
        if name.len() > names::NAME_MAX {
            return Err(Error::NameTooLong);
        }
        let dir = self.core.node(parent)?;
        let node = self.views.lookup(&self.core, dir, name, caller).await?;
        self.found(node).await
    }

    /// A lookup's node, given an inode (counted for the kernel) and
    /// attributes; or its error, with the count given back.
    async fn found(&self, node: Node) -> Result<Entry> {
        // Counted at once, so that a FORGET of an earlier reference racing
        // with this lookup cannot drop the inode under it; given back if
        // the node turns out not to exist.
        let core = &self.core;
        let ino = core.inodes.assign(node.clone(), true);
        match self.views.attr(core, ino, &node).await {
            Ok(_) if core.kernel.superseded(ino) => {
                // A read-only mount's inode keeps its version for whoever
                // holds it; the name gets a new inode for the new one.
                self.forget(ino, 1);
                core.inodes.detach(&node);
                let fresh = core.inodes.assign(node.clone(), true);
                self.views
                    .attr(core, fresh, &node)
                    .await
                    .inspect_err(|_| self.forget(fresh, 1))
            }
            Ok(entry) => Ok(entry),
            Err(e) => {
                self.forget(ino, 1);
                Err(e)
            }
        }
    }

    pub fn forget(&self, ino: Ino, n: u64) {
        self.core.forget(ino, n);
    }

    /// Attributes; with a handle (fstat), those of the file it holds, which
    /// may have been renamed or unlinked since.
    pub async fn getattr(&self, ino: Ino, fh: Option<u64>) -> Result<Entry> {
        let core = &self.core;
        let handle = fh.and_then(|fh| core.handles.get(fh));
        if let Some(Handle::Temp(t)) = &handle {
            let f = t.file.lock();
            if f.target.is_none() {
                return Ok(Entry::uncached(core.temp_attr(ino, &f)));
            }
        }
        // With a handle too (lseek(SEEK_END) sends one, fstat does not),
        // the file's attributes as they are now: the kernel keeps one size
        // per inode, and it must stay the size of what page-cache fills
        // are answered with. A handle's own size answers only for a file
        // that is gone (a JSON key removed since it was opened).
        let node = core.node(ino)?;
        match (self.views.attr(core, ino, &node).await, handle) {
            (Err(Error::NotFound), Some(Handle::Read(v))) => {
                let writable = self.views.of(&node).writable(&node);
                let attr = core.file_attr(ino, v.value.len() as u64, v.created, writable);
                Ok(Entry::uncached(attr))
            }
            (Err(Error::NotFound), Some(Handle::Rendered { attr, .. })) => {
                Ok(Entry::uncached(attr))
            }
            (got, _) => got,
        }
    }

    pub async fn setattr(
        &self,
        ino: Ino,
        fh: Option<u64>,
        size: Option<u64>,
        owner: Ownership,
        pid: u32,
    ) -> Result<Entry> {
        let caller = Caller { pid, uid: 0 };
        self.setattr_as(ino, fh, size, owner, caller).await
    }

    /// setattr with the caller known (`[[access]]` checks a truncation by
    /// path as an open).
    pub async fn setattr_as(
        &self,
        ino: Ino,
        fh: Option<u64>,
        size: Option<u64>,
        owner: Ownership,
        caller: Caller,
    ) -> Result<Entry> {
        self.views
            .setattr(&self.core, ino, fh, size, owner, caller)
            .await
    }

    /// mkdir: a directory whose `current`, once written, creates the secret.
    pub async fn mkdir(&self, parent: Ino, name: &str) -> Result<Entry> {
        views::Dirs.mkdir(&self.core, parent, name).await
    }

    pub async fn rmdir(&self, parent: Ino, name: &str) -> Result<()> {
        views::Dirs.rmdir(&self.core, parent, name).await
    }

    /// create(2): a file of the directory's view (`current` of a secret
    /// made by mkdir, a JSON key, a label), or a temporary file.
    pub async fn create(
        &self,
        parent: Ino,
        name: &str,
        flags: i32,
        mode: u32,
        caller: Caller,
    ) -> Result<(Entry, Opened)> {
        self.views
            .create(&self.core, parent, name, flags, mode, caller)
            .await
    }

    /// unlink(2): temporary files go (open descriptors keep them); what it
    /// does to a view's file is the view's (a JSON key is removed, secret
    /// files stay).
    pub async fn unlink(&self, parent: Ino, name: &str, caller: Caller) -> Result<()> {
        self.views.unlink(&self.core, parent, name, caller).await
    }

    /// rename(2): a temporary file onto `current`, a key or a label is the
    /// put; a stage file onto `current` promotes; nothing else.
    pub async fn rename(
        &self,
        parent: Ino,
        name: &str,
        newparent: Ino,
        newname: &str,
    ) -> Result<()> {
        self.views
            .rename(&self.core, parent, name, newparent, newname)
            .await
    }

    // ---- directories -----------------------------------------------------

    /// Reads a directory whole, for a consistent listing across readdir
    /// calls. A listing made of a value (`json/`'s keys) is checked by
    /// `[[access]]` as an open of its secret.
    pub async fn opendir(&self, ino: Ino, caller: Caller) -> Result<u64> {
        let node = self.core.node(ino)?;
        self.views.access_open(&self.core, &node, caller).await?;
        let entries = self.views.list(&self.core, ino, node, caller).await?;
        Ok(self.core.handles.add(Handle::Dir(Arc::new(entries))))
    }

    pub fn readdir(&self, fh: u64) -> Result<Arc<Vec<DirEntry>>> {
        match self.core.handles.get(fh) {
            Some(Handle::Dir(d)) => Ok(d),
            _ => Err(Error::BadHandle),
        }
    }

    pub fn releasedir(&self, fh: u64) {
        self.core.handles.remove(fh);
    }

    // ---- files -----------------------------------------------------------

    /// open(2) by process `pid` as root (tests and tools).
    pub async fn open(&self, ino: Ino, flags: i32, pid: u32) -> Result<Opened> {
        self.open_as(ino, flags, Caller { pid, uid: 0 }).await
    }

    /// open(2) with the caller known. A read handle pins one version from
    /// open to close.
    pub async fn open_as(&self, ino: Ino, flags: i32, caller: Caller) -> Result<Opened> {
        let core = &self.core;
        let node = core.inodes.node(ino);
        if let Some(n) = &node {
            self.views.access_open(core, n, caller).await?;
        }
        // ENOSYS puts the kernel in no-open mode on a read-only mount:
        // cached pages are then served with no round trip to the daemon
        // (unless `[[access]]` rules must see every open). A view may keep
        // a file's open (the refresh file says why it cannot be written).
        if core.cfg.read_only
            && !core.cfg.access.open_mode()
            && node
                .as_ref()
                .is_none_or(|n| self.views.of(n).served_without_open(n))
        {
            return Err(Error::NotImplemented);
        }
        let node = node.ok_or(Error::NotFound)?;
        self.views
            .of(&node)
            .open(&self.core, ino, &node, flags, caller)
            .await
    }

    /// A READ: every read returns exactly a stored value, here and only
    /// here. `direct`: from read(2)/pread(2) on a handle (the kernel sends
    /// a lock owner with those), answered from the handle's own version;
    /// otherwise a fill of the page cache (a map's fault, or any read on a
    /// read-only mount, which has no handles), answered from the version
    /// whose size the kernel holds, whichever handle it came through, so
    /// that the pages and the size agree and every map shows one value.
    pub async fn read(
        &self,
        ino: Ino,
        fh: u64,
        offset: u64,
        size: u32,
        direct: bool,
    ) -> Result<Vec<u8>> {
        let core = &self.core;
        match core.handles.get(fh) {
            // read(2) on a handle: its own bytes, to their end.
            Some(Handle::Read(v)) if direct => return Ok(slice(v.value.as_bytes(), offset, size)),
            Some(Handle::Rendered { bytes, .. }) if direct => {
                return Ok(slice(bytes.as_bytes(), offset, size));
            }
            Some(Handle::Write(w)) if direct => {
                return Ok(slice(w.lock().await.buf(), offset, size));
            }
            // A temporary file has an inode of its own, until it is renamed
            // onto a secret's file.
            Some(Handle::Temp(t)) if direct || t.file.lock().target.is_none() => {
                return Ok(t.file.lock().read(offset, size));
            }
            Some(Handle::Plain(b)) => return Ok(slice(&b, offset, size)),
            Some(Handle::Dir(_)) => return Err(Error::IsDir),
            Some(Handle::Refresh) => return Err(Error::BadHandle),
            // A page-cache fill, whichever handle it came through (a write
            // handle's uncommitted bytes never reach the shared pages): the
            // version whose size the kernel holds.
            _ => {
                if let Some(v) = core.kernel.told(ino) {
                    return Ok(slice(v.value.as_bytes(), offset, size));
                }
            }
        }
        // Nothing told yet: what the file holds now.
        let node = core.node(ino)?;
        match self.views.of(&node).content(core, &node).await? {
            Content::Version(v) => Ok(slice(v.value.as_bytes(), offset, size)),
            Content::Plain(b) => Ok(slice(&b, offset, size)),
        }
    }

    /// A write by the process (thread) `pid`.
    pub async fn write(&self, fh: u64, offset: u64, data: &[u8], pid: u32) -> Result<u32> {
        if let Some(Handle::Refresh) = self.core.handles.get(fh) {
            return views::refresh(&self.core, data).await;
        }
        self.core.write(fh, offset, data, pid).await
    }

    /// close(2): see `Core::flush` (who closes decides whether it commits).
    pub async fn flush(&self, fh: u64, closer: Closer) -> Result<()> {
        self.core.flush(fh, closer).await
    }

    /// Whether a close of this handle can commit (so who closes matters).
    pub fn may_commit(&self, fh: u64) -> bool {
        self.core.may_commit(fh)
    }

    pub async fn fsync(&self, fh: u64) -> Result<()> {
        self.core.fsync(fh).await
    }

    pub async fn release(&self, fh: u64) {
        self.core.release(fh).await
    }

    /// The extended attributes a file has.
    pub fn xattr_names(&self, ino: Ino) -> &'static [&'static str] {
        match self.core.inodes.node(ino) {
            Some(node) => self.views.of(&node).xattr_names(&node),
            None => &[],
        }
    }

    /// An extended attribute's value. `Ok(None)`: no such attribute.
    pub async fn xattr(&self, ino: Ino, name: &str) -> Result<Option<Vec<u8>>> {
        let Some(node) = self.core.inodes.node(ino) else {
            return Ok(None);
        };
        self.views.of(&node).xattr(&self.core, &node, name).await
    }

    // ---- the daemon's -----------------------------------------------------

    /// For shutdown: puts being made now, and the secrets of files open for
    /// writing whose data no close has stored.
    pub fn pending(&self) -> (usize, Vec<SecretName>) {
        self.core.pending()
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.core.stats
    }

    pub fn sizes(&self) -> Sizes {
        self.core.sizes()
    }

    /// The path of an inode inside the mount, for log lines
    /// (`prod/db/current`); never a value.
    pub fn path_of(&self, ino: Ino) -> String {
        match self.core.inodes.node(ino) {
            Some(node) => self.views.path(&node),
            // No inode number: log lines name files, not inodes.
            None => "(a file the kernel has forgotten)".into(),
        }
    }

    /// The path of `name` in directory `dir`, for log lines of requests
    /// that name a file in a directory (unlink, rename, create).
    pub fn path_in(&self, dir: Ino, name: &str) -> String {
        match self.core.inodes.node(dir) {
            Some(node) => self.views.path_in(&node, name),
            None => format!("{}/{name}", self.path_of(dir)),
        }
    }

    /// SIGHUP: new ownership rules, applied at once.
    pub fn set_rules(&self, rules: crate::rules::Rules) {
        self.core.set_rules(rules);
    }

    pub async fn warn_unmatched_rules(&self) {
        self.core.warn_unmatched_rules().await;
    }

    /// SIGHUP: new `[[access]]` rules (refused on a read-only mount in
    /// no-open mode; the old ones stay).
    pub fn set_access_rules(
        &self,
        rules: crate::access::AccessRules,
    ) -> std::result::Result<(), String> {
        self.core
            .cfg
            .access
            .set_rules(rules, self.core.cfg.read_only)
    }

    /// At rename (an editor's save, a promotion of `stages/<label>` onto
    /// `current`): the secrets of both directories must allow the caller.
    pub async fn access_rename(
        &self,
        from: (Ino, &str),
        to: (Ino, &str),
        caller: Caller,
    ) -> Result<()> {
        let (core, views) = (&self.core, &self.views);
        views.access_in(core, from.0, from.1, caller).await?;
        views.access_in(core, to.0, to.1, caller).await
    }

    /// SIGHUP: the config file's templates, re-read.
    pub fn reload_templates(&self, defs: Vec<TemplateDef>) {
        self.core.reload_templates(defs);
    }

    /// One interval of change hook `hook`; the runs it started.
    pub async fn watch_tick(&self, hook: usize) -> Vec<tokio::task::JoinHandle<()>> {
        self.core.watch_tick(hook).await
    }

    pub fn stop_hooks(&self) {
        self.core.stop_hooks();
    }

    pub fn hook_intervals(&self) -> Vec<std::time::Duration> {
        self.core.hook_intervals()
    }
}
