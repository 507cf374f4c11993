//! The write path: per-handle buffers for `current`, the put on close or
//! fsync (fresh UUID token, limits, no-op on unchanged values), secrets
//! created by mkdir, and editors' in-memory temporary files renamed onto
//! `current`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use zeroize::Zeroizing;

use super::{Caller, Entry, Fs, Handle, Kind, Opened};
use crate::error::{Error, Result};
use crate::inode::{Ino, Node};
use crate::store::{SecretBytes, SecretName, SecretVersion, Selector, Stage};
use crate::tree::{self, OWN_FILES};

/// Secrets Manager's limit on a value.
pub const MAX_VALUE_LEN: usize = 65_536;
/// How long `current` stays hidden from a process replacing it (install).
const REPLACE_WINDOW: Duration = Duration::from_secs(5);
/// Programs whose unlink of `current` is the first step of a replacement
/// (unlink, then create with O_EXCL), not a removal.
const REPLACERS: [&str; 2] = ["install", "ginstall"];
/// The API's advice: put a secret at most about once every 10 minutes.
const CHURN_WARNING: Duration = Duration::from_secs(600);

/// Grows a secret buffer without leaving an unzeroed copy behind.
fn grow(buf: &mut Zeroizing<Vec<u8>>, len: usize) {
    if len > buf.capacity() {
        let mut bigger = Vec::with_capacity(len.max(buf.capacity() * 2).max(256));
        bigger.extend_from_slice(buf);
        *buf = Zeroizing::new(bigger);
    }
    buf.resize(len, 0);
}

fn write_at(buf: &mut Zeroizing<Vec<u8>>, offset: usize, data: &[u8], limit: usize) -> Result<()> {
    let end = offset.checked_add(data.len()).ok_or(Error::TooLarge)?;
    if end > limit {
        return Err(Error::TooLarge);
    }
    if end > buf.len() {
        grow(buf, end);
    }
    buf[offset..end].copy_from_slice(data);
    Ok(())
}

/// The thread-group id of a request's pid (FUSE passes the thread's id).
fn tgid(pid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(pid)
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

/// An open-for-writing `current`.
pub struct WriteState {
    name: SecretName,
    buf: Zeroizing<Vec<u8>>,
    /// Changed since open or the last put.
    dirty: bool,
    append: bool,
    /// The process that opened it: only its close commits.
    owner: u32,
    /// The secret does not exist yet (mkdir): the put is a CreateSecret.
    create: bool,
    /// A write went past the limit: this handle never puts.
    too_large: bool,
}

impl WriteState {
    pub fn buf(&self) -> &[u8] {
        &self.buf
    }
}

/// (directory path, file name) of a temporary file.
type TempKey = (Arc<str>, Arc<str>);

struct TempFile {
    data: Zeroizing<Vec<u8>>,
    mode: u16,
    mtime: SystemTime,
    /// Only its owner (and root) sees it.
    owner: u32,
}

impl TempFile {
    fn visible_to(&self, uid: u32) -> bool {
        uid == 0 || uid == self.owner
    }
}

/// Write-side bookkeeping shared by all handles.
#[derive(Default)]
pub struct WriteBook {
    /// Directories made by mkdir whose secret does not exist yet.
    pending: Mutex<BTreeSet<String>>,
    put_locks: Mutex<HashMap<SecretName, Arc<tokio::sync::Mutex<()>>>>,
    last_put: Mutex<HashMap<SecretName, std::time::Instant>>,
    temps: Mutex<HashMap<TempKey, TempFile>>,
    /// (directory, process) for which `current` is being replaced.
    replacing: Mutex<HashMap<(String, u32), std::time::Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl WriteBook {
    pub fn is_pending(&self, path: &str) -> bool {
        lock(&self.pending).contains(path)
    }

    pub fn has_pending_under(&self, path: &str) -> bool {
        let lead = format!("{path}/");
        lock(&self.pending)
            .range(lead.clone()..)
            .next()
            .is_some_and(|n| n.starts_with(&lead))
    }

    pub fn pending_children(&self, lead: &str) -> Vec<String> {
        lock(&self.pending)
            .range(lead.to_string()..)
            .take_while(|n| n.starts_with(lead))
            .filter_map(|n| n[lead.len()..].split('/').next().map(str::to_string))
            .collect()
    }

    /// Whether `current` in `dir` is hidden from this process because it
    /// unlinked it to create it anew.
    pub fn is_replacing(&self, dir: &str, pid: u32) -> bool {
        let mut r = lock(&self.replacing);
        if r.is_empty() {
            return false;
        }
        let now = std::time::Instant::now();
        r.retain(|_, until| *until > now);
        r.contains_key(&(dir.to_string(), tgid(pid)))
    }

    fn end_replacing(&self, dir: &str, tgid: u32) -> bool {
        lock(&self.replacing)
            .remove(&(dir.to_string(), tgid))
            .is_some()
    }

    fn put_lock(&self, name: &SecretName) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.put_locks)
            .entry(name.clone())
            .or_default()
            .clone()
    }

    /// Logs when a secret is put more often than the API advises.
    fn note_put(&self, name: &SecretName) {
        let now = std::time::Instant::now();
        if let Some(last) = lock(&self.last_put).insert(name.clone(), now)
            && now.duration_since(last) < CHURN_WARNING
        {
            tracing::warn!(secret = %name, since_last_secs = now.duration_since(last).as_secs(),
                "secret written more than once in 10 minutes; each write is a new version and versions are limited");
        }
    }
}

impl Fs {
    pub(super) async fn open_write(&self, s: &SecretName, flags: i32, pid: u32) -> Result<Opened> {
        if self.cfg.read_only {
            return Err(Error::ReadOnly);
        }
        let trunc = flags & libc::O_TRUNC != 0;
        let mut buf = Zeroizing::new(Vec::new());
        if !trunc && let Some(v) = self.value(s, Selector::Stage(Stage::Current)).await?.value {
            grow(&mut buf, v.value.len());
            buf.copy_from_slice(v.value.as_bytes());
        }
        let state = WriteState {
            name: s.clone(),
            buf,
            dirty: trunc,
            append: flags & libc::O_APPEND != 0,
            owner: tgid(pid),
            create: false,
            too_large: false,
        };
        Ok(self.write_handle(state))
    }

    fn write_handle(&self, state: WriteState) -> Opened {
        let fh = self.add_handle(Handle::Write(Arc::new(tokio::sync::Mutex::new(state))));
        // Direct I/O: uncommitted bytes never reach the page cache readers share.
        Opened {
            fh,
            keep_cache: false,
            direct_io: true,
            no_flush: false,
        }
    }

    fn handle(&self, fh: u64) -> Option<HandleRef> {
        match lock(&self.handles).get(&fh) {
            Some(Handle::Write(w)) => Some(HandleRef::Write(w.clone())),
            Some(Handle::Temp(n)) => Some(HandleRef::Temp(n.clone())),
            Some(_) => Some(HandleRef::Other),
            None => None,
        }
    }

    pub async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        if self.cfg.read_only {
            return Err(Error::ReadOnly);
        }
        match self.handle(fh) {
            Some(HandleRef::Write(w)) => {
                let mut st = w.lock().await;
                let off = if st.append {
                    st.buf.len()
                } else {
                    offset as usize
                };
                if let Err(e) = write_at(&mut st.buf, off, data, MAX_VALUE_LEN) {
                    st.too_large = true;
                    return Err(e);
                }
                st.dirty = true;
                Ok(data.len() as u32)
            }
            Some(HandleRef::Temp(node)) => self.write_temp(&node, offset as usize, data),
            Some(HandleRef::Other) => Err(Error::BadHandle),
            None => Err(Error::BadHandle),
        }
    }

    /// close(2): the opener's close commits; a close of a descriptor that
    /// another process inherited does not commit a half-written value.
    pub async fn flush(&self, fh: u64, pid: u32) -> Result<()> {
        if self.cfg.read_only {
            // ENOSYS once and the kernel stops sending FLUSH: a close on a
            // read-only mount then never reaches the daemon.
            return Err(Error::NotImplemented);
        }
        if let Some(HandleRef::Write(w)) = self.handle(fh) {
            let mut st = w.lock().await;
            if st.dirty && tgid(pid) == st.owner {
                return self.commit(&mut st).await;
            }
        }
        Ok(())
    }

    pub async fn fsync(&self, fh: u64) -> Result<()> {
        if let Some(HandleRef::Write(w)) = self.handle(fh) {
            let mut st = w.lock().await;
            if st.dirty {
                return self.commit(&mut st).await;
            }
        }
        Ok(())
    }

    /// The last close: commits what no flush did; its error cannot reach
    /// the program, so it is logged.
    pub(super) async fn release_write(&self, w: Arc<tokio::sync::Mutex<WriteState>>) {
        let mut st = w.lock().await;
        if st.dirty
            && let Err(e) = self.commit(&mut st).await
        {
            tracing::error!(secret = %st.name, error = %e, "write at last close failed; value not stored");
        }
    }

    async fn commit(&self, st: &mut WriteState) -> Result<()> {
        // One attempt per batch of writes: a failed close is not retried
        // behind the program's back at release.
        st.dirty = false;
        if st.too_large {
            return Err(Error::TooLarge);
        }
        let value = SecretBytes::new(st.buf.to_vec());
        self.put(&st.name, value, st.create).await?;
        st.create = false;
        Ok(())
    }

    /// PutSecretValue (or CreateSecret) with a fresh token, then the cache
    /// holds the new value at once. Returns whether a version was created.
    async fn put(&self, name: &SecretName, value: SecretBytes, create: bool) -> Result<bool> {
        if value.is_empty() {
            return Err(Error::Invalid("an empty value cannot be stored".into()));
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(Error::TooLarge);
        }
        let serial = self.writes.put_lock(name);
        let _serial = serial.lock().await;
        let old = if create {
            None
        } else {
            self.value(name, Selector::Stage(Stage::Current))
                .await?
                .value
        };
        if old.as_ref().is_some_and(|o| o.value == value) {
            tracing::info!(secret = %name, "value unchanged; no new version");
            return Ok(false);
        }
        self.writes.note_put(name);
        let token = uuid::Uuid::new_v4().to_string();
        let id = if create {
            self.store.create_secret(name, &value, &token).await?
        } else {
            self.store.put_value(name, &value, &token).await?
        };
        tracing::info!(secret = %name, version = %id, "new version stored");
        let ttl = Some(self.cfg.ttl);
        let new = Arc::new(SecretVersion {
            id,
            value,
            created: SystemTime::now(),
        });
        self.values.insert(
            (name.clone(), Selector::Stage(Stage::Current)),
            Some(new),
            ttl,
        );
        self.values
            .insert((name.clone(), Selector::Stage(Stage::Previous)), old, ttl);
        self.version_ids.remove(name);
        if create {
            lock(&self.writes.pending).remove(name.as_str());
            lock(&self.direct).insert(name.as_str().to_string());
            self.forget_missing(name.as_str());
        }
        self.invalidate_node(&Node::Current(name.clone()));
        self.invalidate_node(&Node::Previous(name.clone()));
        Ok(true)
    }

    pub async fn setattr(
        &self,
        ino: Ino,
        fh: Option<u64>,
        size: Option<u64>,
        owner: Ownership,
    ) -> Result<Entry> {
        let node = self.node(ino)?;
        if let Node::Temp(..) = node {
            return self.setattr_temp(ino, &node, size, owner.mode);
        }
        if let Some(size) = size {
            let Node::Current(s) = &node else {
                return Err(Error::Refused("read-only file"));
            };
            if self.cfg.read_only {
                return Err(Error::ReadOnly);
            }
            let size = size as usize;
            if size > MAX_VALUE_LEN {
                return Err(Error::TooLarge);
            }
            if let Some(HandleRef::Write(w)) = fh.and_then(|fh| self.handle(fh)) {
                let mut st = w.lock().await;
                grow(&mut st.buf, size);
                st.buf.truncate(size);
                st.dirty = true;
                st.too_large = false;
                let mut e = self.attr_of(ino, &node).await?;
                e.attr.size = size as u64;
                return Ok(e);
            }
            // truncate(2) on the path: no handle to hold the change, so it is
            // a put of its own.
            let (v, _) = self.version(s, Selector::Stage(Stage::Current)).await?;
            let mut buf = Zeroizing::new(v.value.as_bytes().to_vec());
            grow(&mut buf, size);
            buf.truncate(size);
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
        if !self.in_scope(&child) && !toward_prefix {
            return Err(Error::Refused("name outside the mounted prefix"));
        }
        lock(&self.writes.pending).insert(child.clone());
        self.forget_missing(&child);
        let node = Node::Dir(Arc::from(child));
        let ino = self.inodes.assign(node.clone(), true);
        self.attr_of(ino, &node).await
    }

    pub async fn rmdir(&self, parent: Ino, name: &str) -> Result<()> {
        let Node::Dir(p) = self.node(parent)? else {
            return Err(Error::NotDir);
        };
        let child = tree::join(&p, name);
        if self.writes.is_pending(&child) && !self.writes.has_pending_under(&child) {
            lock(&self.writes.pending).remove(&child);
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
        let Node::Dir(p) = self.node(parent)? else {
            return Err(Error::Refused(ONLY_IN_SECRETS));
        };
        let info = self.resolve_dir(&p).await?;
        if !info.secret && !info.pending {
            return Err(Error::Refused(ONLY_IN_SECRETS));
        }
        if name == "current" {
            // A new secret (mkdir), or an existing one whose `current` this
            // process unlinked to create anew: either way, a write handle
            // that starts empty.
            let create = info.pending && !info.secret;
            let owner = tgid(caller.pid);
            if !create && !self.writes.end_replacing(&p, owner) {
                return Err(Error::Exists);
            }
            let s = SecretName::new(&*p);
            let ino = self.inodes.assign(Node::Current(s.clone()), true);
            let opened = self.write_handle(WriteState {
                name: s,
                buf: Zeroizing::new(Vec::new()),
                dirty: true,
                append: flags & libc::O_APPEND != 0,
                owner,
                create,
                too_large: false,
            });
            let attr = self.file_attr(ino, 0, SystemTime::now(), true);
            return Ok((Entry::uncached(attr), opened));
        }
        if OWN_FILES.contains(&name) {
            return Err(Error::Exists);
        }
        if !tree::valid_component(name) {
            return Err(Error::Invalid("bad file name".into()));
        }
        let node = self.create_temp(&p, name, mode, caller.uid)?;
        let ino = self.inodes.assign(node.clone(), true);
        let attr = self.temp_attr(ino, &node)?;
        let fh = self.add_handle(Handle::Temp(node));
        let opened = Opened {
            fh,
            keep_cache: false,
            direct_io: true,
            no_flush: false,
        };
        Ok((Entry::uncached(attr), opened))
    }

    /// unlink(2): temporary files go; secret files stay (EPERM), except
    /// that install(1)'s unlink of `current` before creating it anew hides
    /// `current` from that process alone, briefly, and deletes nothing.
    pub async fn unlink(&self, parent: Ino, name: &str, caller: Caller) -> Result<()> {
        let Node::Dir(p) = self.node(parent)? else {
            return Err(Error::NotPermitted("secret files cannot be removed"));
        };
        let key = (p.clone(), Arc::<str>::from(name));
        {
            let mut temps = lock(&self.writes.temps);
            if temps.get(&key).is_some_and(|t| t.visible_to(caller.uid)) {
                temps.remove(&key);
                drop(temps);
                self.inodes.remove(&Node::Temp(key.0, key.1));
                return Ok(());
            }
        }
        if name == "current" && !self.cfg.read_only && self.resolve_dir(&p).await?.secret {
            let owner = tgid(caller.pid);
            if REPLACERS.contains(&comm(owner).as_str()) {
                tracing::info!(secret = %p, pid = caller.pid, "install replaces current: hidden from that process until it creates it");
                lock(&self.writes.replacing).insert(
                    (p.to_string(), owner),
                    std::time::Instant::now() + REPLACE_WINDOW,
                );
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
        let (Node::Dir(p), Node::Dir(q)) = (self.node(parent)?, self.node(newparent)?) else {
            return Err(Error::NotPermitted("only temporary files can be renamed"));
        };
        let from = (p.clone(), Arc::<str>::from(name));
        if !lock(&self.writes.temps).contains_key(&from) {
            return Err(Error::NotPermitted("only temporary files can be renamed"));
        }
        if p != q {
            return Err(Error::NotPermitted(
                "temporary files stay in their directory",
            ));
        }
        if newname == "current" {
            let info = self.resolve_dir(&p).await?;
            let value = {
                let temps = lock(&self.writes.temps);
                let t = temps.get(&from).ok_or(Error::NotFound)?;
                SecretBytes::new(t.data.to_vec())
            };
            let name = SecretName::new(&*p);
            self.put(&name, value, info.pending && !info.secret).await?;
            lock(&self.writes.temps).remove(&from);
            // The kernel now shows the temporary file's inode as `current`.
            self.inodes
                .rebind(&Node::Temp(from.0, from.1), Node::Current(name));
            return Ok(());
        }
        if OWN_FILES.contains(&newname) {
            return Err(Error::NotPermitted("previous and versions are read-only"));
        }
        let mut temps = lock(&self.writes.temps);
        let t = temps.remove(&from).ok_or(Error::NotFound)?;
        temps.insert((q.clone(), Arc::from(newname)), t);
        drop(temps);
        self.inodes.rebind(
            &Node::Temp(from.0, from.1),
            Node::Temp(q, Arc::from(newname)),
        );
        Ok(())
    }

    // ---- temporary files ----------------------------------------------

    fn create_temp(&self, dir: &Arc<str>, name: &str, mode: u32, owner: u32) -> Result<Node> {
        let mut temps = lock(&self.writes.temps);
        let key = (dir.clone(), Arc::<str>::from(name));
        if !temps.contains_key(&key) {
            if temps.len() >= self.cfg.temp_max_files {
                return Err(Error::NoSpace);
            }
            temps.insert(
                key.clone(),
                TempFile {
                    data: Zeroizing::new(Vec::new()),
                    mode: (mode & 0o777) as u16,
                    mtime: SystemTime::now(),
                    owner,
                },
            );
        }
        Ok(Node::Temp(key.0, key.1))
    }

    pub(super) fn temp_node(&self, dir: &Arc<str>, name: &str, uid: u32) -> Option<Node> {
        let key = (dir.clone(), Arc::<str>::from(name));
        lock(&self.writes.temps)
            .get(&key)
            .is_some_and(|t| t.visible_to(uid))
            .then_some(Node::Temp(key.0, key.1))
    }

    pub(super) fn temp_entries(&self, dir: &Arc<str>, uid: u32) -> Vec<(String, Node)> {
        lock(&self.writes.temps)
            .iter()
            .filter(|((d, _), t)| d == dir && t.visible_to(uid))
            .map(|((d, n), _)| (n.to_string(), Node::Temp(d.clone(), n.clone())))
            .collect()
    }

    fn with_temp<T>(
        &self,
        node: &Node,
        f: impl FnOnce(&mut TempFile, usize) -> Result<T>,
    ) -> Result<T> {
        let Node::Temp(d, n) = node else {
            return Err(Error::BadHandle);
        };
        let mut temps = lock(&self.writes.temps);
        let others: usize = temps
            .iter()
            .filter(|(k, _)| !(k.0 == *d && k.1 == *n))
            .map(|(_, t)| t.data.len())
            .sum();
        let t = temps
            .get_mut(&(d.clone(), n.clone()))
            .ok_or(Error::NotFound)?;
        f(t, self.cfg.temp_max_bytes.saturating_sub(others))
    }

    pub(super) fn temp_attr(&self, ino: Ino, node: &Node) -> Result<super::Attr> {
        self.with_temp(node, |t, _| {
            Ok(super::Attr {
                ino,
                kind: Kind::File,
                size: t.data.len() as u64,
                mtime: t.mtime,
                perm: t.mode,
                uid: self.cfg.uid,
                gid: self.cfg.gid,
            })
        })
    }

    pub(super) fn open_temp(&self, node: Node) -> Result<Opened> {
        self.with_temp(&node, |_, _| Ok(()))?;
        let fh = self.add_handle(Handle::Temp(node));
        Ok(Opened {
            fh,
            keep_cache: false,
            direct_io: true,
            no_flush: false,
        })
    }

    pub(super) fn read_temp(&self, node: &Node, offset: u64, size: u32) -> Result<Vec<u8>> {
        self.with_temp(node, |t, _| Ok(super::slice(&t.data, offset, size)))
    }

    fn write_temp(&self, node: &Node, offset: usize, data: &[u8]) -> Result<u32> {
        self.with_temp(node, |t, room| {
            write_at(&mut t.data, offset, data, room).map_err(|_| Error::NoSpace)?;
            t.mtime = SystemTime::now();
            Ok(data.len() as u32)
        })
    }

    fn setattr_temp(
        &self,
        ino: Ino,
        node: &Node,
        size: Option<u64>,
        mode: Option<u32>,
    ) -> Result<Entry> {
        if let Some(mode) = mode {
            self.with_temp(node, |t, _| {
                t.mode = (mode & 0o777) as u16;
                Ok(())
            })?;
        }
        if let Some(size) = size {
            self.with_temp(node, |t, room| {
                if size as usize > room {
                    return Err(Error::NoSpace);
                }
                grow(&mut t.data, size as usize);
                t.data.truncate(size as usize);
                Ok(())
            })?;
        }
        // chown and utimes on a temporary file are accepted and ignored: it
        // lives in memory, and the secret's own modes are fixed.
        Ok(Entry::uncached(self.temp_attr(ino, node)?))
    }
}

/// A setattr's mode and owner changes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ownership {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

enum HandleRef {
    Write(Arc<tokio::sync::Mutex<WriteState>>),
    Temp(Node),
    Other,
}
