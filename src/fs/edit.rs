//! Changes to the tree and to file sizes: truncate and chmod, mkdir of a
//! new secret, and the editors' temporary files (create, open, unlink,
//! rename onto `current`, which is the put).

use std::sync::Arc;
use std::time::SystemTime;

use zeroize::Zeroizing;

use super::Fs;
use super::handles::{Handle, TempHandle};
use super::names;
use super::temp::{TempKey, TempRef};
use super::types::{Caller, Entry, Opened};
use super::write_state::{MAX_VALUE_LEN, Ownership, Target, WriteState};
use crate::error::{Error, Result};
use crate::inode::{Ino, Node};
use crate::process;
use crate::store::{SecretBytes, SecretName};
use crate::tree::{self, OWN_FILES};

/// Where editors' temporary files live, as the directory part of their
/// keys: a secret's directory (or one being created), its `json/` and its
/// `stages/`, the three places a value is edited. None elsewhere.
pub(super) fn temp_dir(node: &Node) -> Option<Arc<str>> {
    match node {
        Node::Dir(p) => Some(p.clone()),
        Node::JsonDir(s) => Some(Arc::from(format!("{s}/json"))),
        Node::StagesDir(s) => Some(Arc::from(format!("{s}/stages"))),
        _ => None,
    }
}

const TEMP_OPENED: Opened = Opened {
    fh: 0,
    keep_cache: false,
    direct_io: true,
    no_flush: false,
};

impl Fs {
    pub async fn setattr(
        &self,
        ino: Ino,
        fh: Option<u64>,
        size: Option<u64>,
        owner: Ownership,
        pid: u32,
    ) -> Result<Entry> {
        // open(O_TRUNC) arrives as an OPEN, then a truncation to 0 without
        // a handle, from the same process: it belongs to the write handle
        // that process just opened on this file (not a put of its own).
        if fh.is_none()
            && size == Some(0)
            && let Some(Handle::Write(w)) = self.fresh_write_handle(ino, process::tgid(pid))
        {
            w.lock().await.truncate_at_open();
            let node = self.node(ino)?;
            // The stored value's size: see below.
            return Ok(Entry::uncached(self.attr_of(ino, &node).await?.attr));
        }
        let handle = fh.and_then(|fh| self.handles.get(fh));
        if let Some(Handle::Temp(t)) = &handle {
            return self.setattr_temp(ino, &t.file, size, owner.mode);
        }
        let node = self.node(ino)?;
        if matches!(node, Node::RefreshFile) {
            // `echo name > refresh` truncates first: nothing to truncate.
            return match owner.mode.or(owner.uid).or(owner.gid) {
                Some(_) => Err(Error::NotPermitted("the refresh file's mode is fixed")),
                None => Ok(Entry::uncached(self.refresh_attr(ino))),
            };
        }
        if let Node::Temp(d, n) = &node {
            let file = self
                .temps
                .named(&(d.clone(), n.clone()))
                .ok_or(Error::NotFound)?;
            return self.setattr_temp(ino, &file, size, owner.mode);
        }
        if let Some(size) = size
            && let Node::StageFile(..) = &node
        {
            if let Some(e) = self.resize_stage(ino, &node, handle, size).await? {
                return Ok(e);
            }
        } else if let Some(size) = size {
            if !matches!(node, Node::Current(_) | Node::JsonKey(..)) {
                return Err(Error::Refused("read-only file"));
            }
            if self.cfg.read_only {
                return Err(Error::ReadOnly);
            }
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            if size > MAX_VALUE_LEN {
                return Err(Error::TooLarge);
            }
            if let Some(Handle::Write(w)) = handle {
                w.lock().await.resize(size);
                // The reply keeps the stored value's size: the kernel's size
                // is the inode's, shared with readers of that value, and the
                // writer's bytes stay its own until they are stored.
                let e = self.attr_of(ino, &node).await?;
                return Ok(Entry::uncached(e.attr));
            }
            let Node::Current(s) = &node else {
                return Err(Error::NotPermitted(
                    "a JSON key is truncated through an open file, not by path",
                ));
            };
            // truncate(2) on the path: no handle to hold the change, so it is
            // a put of its own, from the value current now.
            let cur = self.current_now(s).await?.ok_or(Error::NotFound)?;
            let mut buf = Zeroizing::new(cur.value.as_bytes().to_vec());
            super::write_state::grow(&mut buf, size);
            self.put(s, SecretBytes::new(buf.to_vec()), false).await?;
        }
        let e = self.attr_of(ino, &node).await?;
        // Tools copy modes and owners over (sed -i, vim, install -m 600):
        // what changes nothing is accepted, any real change is refused.
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

    /// mkdir: a directory whose `current`, once written, creates the secret.
    pub async fn mkdir(&self, parent: Ino, name: &str) -> Result<Entry> {
        if self.cfg.read_only {
            return Err(Error::ReadOnly);
        }
        let Node::Dir(p) = self.node(parent)? else {
            return Err(Error::Refused("cannot create a directory here"));
        };
        if name.len() > names::NAME_MAX {
            return Err(Error::NameTooLong);
        }
        if !tree::valid_component(name) {
            return Err(Error::Invalid("not a valid secret name component".into()));
        }
        let child = tree::join(&p, name);
        let parent_info = self.resolve_dir(&p).await?;
        if (parent_info.secret && OWN_FILES.contains(&name))
            || self.resolve_dir(&child).await.is_ok()
        {
            return Err(Error::Exists);
        }
        if !self.cfg.allow_create {
            return Err(Error::Refused("creating secrets needs --allow-create"));
        }
        // Inside the mounted scope, or a directory on the way to the prefix.
        let toward_prefix = self
            .cfg
            .prefix
            .as_deref()
            .is_some_and(|pre| pre.starts_with(&format!("{child}/")));
        if !self.names.in_scope(&child, self.cfg.secrets.as_deref()) && !toward_prefix {
            return Err(Error::Refused("name outside the mounted prefix"));
        }
        self.names.add_pending(&child)?;
        let node = Node::Dir(Arc::from(child));
        let ino = self.inodes.assign(node.clone(), true);
        self.attr_of(ino, &node).await
    }

    pub async fn rmdir(&self, parent: Ino, name: &str) -> Result<()> {
        let Node::Dir(p) = self.node(parent)? else {
            return Err(Error::NotDir);
        };
        let child = tree::join(&p, name);
        if self.names.remove_pending(&child) {
            self.inodes.remove(&Node::Dir(Arc::from(child)));
            return Ok(());
        }
        Err(Error::NotPermitted(
            "secrets cannot be removed through the mount",
        ))
    }

    /// create(2): `current` of a secret made by mkdir, or a temporary file.
    pub async fn create(
        &self,
        parent: Ino,
        name: &str,
        flags: i32,
        mode: u32,
        caller: Caller,
    ) -> Result<(Entry, Opened)> {
        const ONLY_IN_SECRETS: &str = "files can only be created in a secret's directory";
        if self.cfg.read_only {
            return Err(Error::ReadOnly);
        }
        if name.len() > names::NAME_MAX {
            return Err(Error::NameTooLong);
        }
        self.access_create(parent, name, caller).await?; // [[access]] hook
        let node = self.node(parent)?;
        if let Node::StagesDir(s) = &node {
            return self.create_stage(s, name, flags, mode, caller).await;
        }
        if let Node::JsonDir(s) = node {
            return self.json_create(s, name, flags, mode, caller).await;
        }
        let Node::Dir(p) = node else {
            return Err(Error::Refused(ONLY_IN_SECRETS));
        };
        let info = self.resolve_dir(&p).await?;
        if !info.secret && !info.pending {
            return Err(Error::Refused(ONLY_IN_SECRETS));
        }
        let owner = process::tgid(caller.pid);
        if name == "current" {
            // A new secret (mkdir), or an existing one whose `current` this
            // process unlinked to create anew: either way, a write handle
            // that starts empty.
            let create = info.pending && !info.secret;
            if !create && !self.writes.end_replacing(&p, owner) {
                return Err(Error::Exists);
            }
            let s = SecretName::new(&*p);
            let ino = self.inodes.assign(Node::Current(s.clone()), true);
            let mut state = WriteState::new(ino, s, Zeroizing::new(Vec::new()), flags, owner);
            if create {
                state = state.creating();
            }
            let opened = self.write_handle(state);
            let attr = self.file_attr(ino, 0, SystemTime::now(), true);
            return Ok((Entry::uncached(attr), opened));
        }
        if OWN_FILES.contains(&name) {
            return Err(Error::Exists);
        }
        if !tree::valid_component(name) {
            return Err(Error::Invalid("bad file name".into()));
        }
        // A name that is a child secret's directory stays that directory.
        let (listing, _) = self.names.listing_or_empty().await;
        if self.names.known(&tree::join(&p, name), &listing).is_some() {
            return Err(Error::Exists);
        }
        self.create_temp((p, Arc::from(name)), flags, mode, caller)
    }

    /// A new temporary file (or the one of that name), opened.
    pub(super) fn create_temp(
        &self,
        key: TempKey,
        flags: i32,
        mode: u32,
        caller: Caller,
    ) -> Result<(Entry, Opened)> {
        let file = self.temps.create(&key, mode, caller.uid)?;
        let ino = self.inodes.assign(Node::Temp(key.0, key.1), true);
        let attr = self.temp_attr(ino, &file.lock());
        let fh = self.handles.add(Handle::Temp(TempHandle {
            file,
            append: flags & libc::O_APPEND != 0,
            owner: process::tgid(caller.pid),
        }));
        Ok((Entry::uncached(attr), Opened { fh, ..TEMP_OPENED }))
    }

    /// open(2) of a temporary file: O_TRUNC and O_APPEND as on any file.
    pub(super) fn open_temp(&self, key: &TempKey, flags: i32, pid: u32) -> Result<Opened> {
        let file = self.temps.named(key).ok_or(Error::NotFound)?;
        if flags & libc::O_TRUNC != 0 && flags & libc::O_ACCMODE != libc::O_RDONLY {
            file.lock().resize(0)?;
        }
        let fh = self.handles.add(Handle::Temp(TempHandle {
            file,
            append: flags & libc::O_APPEND != 0,
            owner: process::tgid(pid),
        }));
        Ok(Opened { fh, ..TEMP_OPENED })
    }

    /// A temporary file that became `current` and was written since: put
    /// it (the owner's close, an fsync, or the last close).
    pub(super) async fn commit_temp(&self, file: &TempRef) -> Result<()> {
        let (target, value) = {
            let mut f = file.lock();
            if f.abandoned {
                return Err(Error::Abandoned);
            }
            let Some((name, target)) = f.target.clone().filter(|_| f.dirty) else {
                return Ok(());
            };
            f.dirty = false;
            ((name, target), SecretBytes::new(f.bytes().to_vec()))
        };
        self.put_target(&target.0, &target.1, value, false).await
    }

    pub(super) async fn release_temp(&self, t: TempHandle) {
        if let Err(e) = self.commit_temp(&t.file).await
            && !matches!(e, Error::Abandoned)
        {
            tracing::error!(error = %e, "write at last close failed; value not stored");
        }
    }

    fn setattr_temp(
        &self,
        ino: Ino,
        file: &TempRef,
        size: Option<u64>,
        mode: Option<u32>,
    ) -> Result<Entry> {
        let mut f = file.lock();
        if let Some(mode) = mode {
            f.mode = (mode & 0o777) as u16;
        }
        if let Some(size) = size {
            f.resize(usize::try_from(size).map_err(|_| Error::NoSpace)?)?;
        }
        // chown and utimes on a temporary file are accepted and ignored: it
        // lives in memory, and the secret's own modes are fixed.
        Ok(Entry::uncached(self.temp_attr(ino, &f)))
    }

    /// unlink(2): temporary files go (open descriptors keep them); secret
    /// files stay (EPERM), except that install(1)'s unlink of `current`
    /// before creating it anew hides `current` from that process alone,
    /// briefly, and deletes nothing.
    pub async fn unlink(&self, parent: Ino, name: &str, caller: Caller) -> Result<()> {
        let node = self.node(parent)?;
        if let Some(dir) = temp_dir(&node) {
            let key: TempKey = (dir, Arc::from(name));
            if self.temps.unlink(&key, caller.uid) {
                self.inodes.remove(&Node::Temp(key.0, key.1));
                return Ok(());
            }
        }
        if let Node::JsonDir(s) = &node {
            return self.json_unlink(s, name, caller).await;
        }
        let Node::Dir(p) = node else {
            return Err(Error::NotPermitted("secret files cannot be removed"));
        };
        if name == "current" && !self.cfg.read_only && self.resolve_dir(&p).await?.secret {
            let owner = process::tgid(caller.pid);
            if names::REPLACERS.contains(&process::comm(owner).as_str()) {
                tracing::info!(secret = %p, pid = caller.pid, "install replaces current: hidden from that process until it creates it");
                self.writes.start_replacing(&p, owner);
                return Ok(());
            }
        }
        Err(Error::NotPermitted("secret files cannot be removed"))
    }

    /// rename(2): a temporary file onto `current` is the put; between
    /// temporary files of one directory it is a move; nothing else.
    pub async fn rename(
        &self,
        parent: Ino,
        name: &str,
        newparent: Ino,
        newname: &str,
    ) -> Result<()> {
        let (from_dir, to_dir) = (self.node(parent)?, self.node(newparent)?);
        if let Some(dir) = temp_dir(&from_dir) {
            let from: TempKey = (dir, Arc::from(name));
            if let Some(file) = self.temps.named(&from) {
                if temp_dir(&to_dir).as_ref() != Some(&from.0) {
                    return Err(Error::NotPermitted(
                        "temporary files stay in their directory",
                    ));
                }
                return self.rename_temp(&from_dir, from, file, newname).await;
            }
        }
        if let Node::StagesDir(s) = &from_dir {
            return self.rename_stage(s, name, newparent, newname).await;
        }
        if matches!(from_dir, Node::JsonDir(_)) || matches!(to_dir, Node::JsonDir(_)) {
            return Err(Error::NotPermitted(
                "files in json/ cannot be renamed: write the key in place",
            ));
        }
        Err(Error::NotPermitted("only temporary files can be renamed"))
    }

    /// A temporary file renamed in its directory `dir`: onto `current`, a
    /// JSON key or a label, it is the put of that file, and its open
    /// descriptors write that file from then on; onto another temporary
    /// name, a move.
    async fn rename_temp(
        &self,
        dir: &Node,
        from: TempKey,
        file: TempRef,
        newname: &str,
    ) -> Result<()> {
        let onto = match dir {
            Node::Dir(p) if newname == "current" => {
                let info = self.resolve_dir(p).await?;
                let create = info.pending && !info.secret;
                Some((
                    SecretName::new(&**p),
                    Target::Current,
                    Target::Current,
                    create,
                ))
            }
            Node::Dir(_) if OWN_FILES.contains(&newname) => {
                return Err(Error::NotPermitted("previous and versions are read-only"));
            }
            Node::JsonDir(s) if self.json_is_key(s, newname).await? => {
                let key: Arc<str> = Arc::from(newname);
                let (first, then) = (
                    Target::JsonKey(key.clone(), false),
                    Target::JsonKey(key, true),
                );
                Some((s.clone(), first, then, false))
            }
            Node::StagesDir(s) if self.stages_is_label(s, newname).await? => {
                let l = names::label_for_file(newname)?;
                Some((s.clone(), Target::Stage(l.clone()), Target::Stage(l), false))
            }
            _ => None,
        };
        let Some((secret, first, then, create)) = onto else {
            self.temps
                .rename(&from, (from.0.clone(), Arc::from(newname)))?;
            self.inodes.rebind(
                &Node::Temp(from.0.clone(), from.1),
                Node::Temp(from.0, Arc::from(newname)),
            );
            return Ok(());
        };
        let value = SecretBytes::new(file.lock().bytes().to_vec());
        self.put_target(&secret, &first, value, create).await?;
        let node = match &then {
            Target::Current => Node::Current(secret.clone()),
            Target::JsonKey(k, _) => Node::JsonKey(secret.clone(), k.clone()),
            Target::Stage(l) => Node::StageFile(secret.clone(), l.clone()),
        };
        {
            let mut f = file.lock();
            f.target = Some((secret, then));
            f.dirty = false;
        }
        self.temps.unlink(&from, 0);
        // The kernel now shows the temporary file's inode as that file.
        self.inodes.rebind(&Node::Temp(from.0, from.1), node);
        Ok(())
    }
}
