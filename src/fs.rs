//! The filesystem's logic, free of fuser: async functions over inode numbers
//! that return plain structs or an `Error`. The tree comes from listings and
//! direct lookups; file contents come through the cache.

mod write;

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::cache::{Cache, Cached};
use crate::error::{Error, Result};
use crate::inode::{Ino, InodeTable, Node};
use crate::stats::Stats;
use crate::store::{SecretName, SecretStore, SecretVersion, Selector, Stage, VersionId};
use crate::tree::{self, Listing, OWN_FILES, STATS_DIR, STATS_FILE, Warned};

pub use write::{MAX_VALUE_LEN, Ownership};

/// How long the kernel may keep entries for immutable things (versions by id).
const FOREVER: Duration = Duration::from_secs(24 * 3600);

/// Validated settings the filesystem runs with.
#[derive(Clone, Debug)]
pub struct FsConfig {
    pub ttl: Duration,
    /// How long a name found missing is remembered as missing.
    pub negative_ttl: Duration,
    pub prefix: Option<String>,
    /// `--secret`: exactly these, no ListSecrets.
    pub secrets: Option<Vec<SecretName>>,
    pub uid: u32,
    pub gid: u32,
    pub read_only: bool,
    pub allow_create: bool,
    pub cache_capacity: NonZeroUsize,
    /// Bounds on editors' temporary files, per mount.
    pub temp_max_files: usize,
    pub temp_max_bytes: usize,
}

impl FsConfig {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            negative_ttl: ttl.min(Duration::from_secs(10)),
            prefix: None,
            secrets: None,
            uid: 0,
            gid: 0,
            read_only: false,
            allow_create: false,
            cache_capacity: NonZeroUsize::new(4096).expect("non-zero"),
            temp_max_files: 64,
            temp_max_bytes: 4 << 20,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Dir,
    File,
}

#[derive(Clone, Debug)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub size: u64,
    pub mtime: SystemTime,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
}

/// A lookup's answer: the attributes and how long the kernel may trust them.
#[derive(Clone, Debug)]
pub struct Entry {
    pub attr: Attr,
    pub ttl: Duration,
}

impl Entry {
    /// Attributes the kernel must ask for again every time (they change
    /// under it: files being written, the stats file).
    fn uncached(attr: Attr) -> Self {
        Self {
            attr,
            ttl: Duration::ZERO,
        }
    }
}

#[derive(Clone, Debug)]
pub struct DirEntry {
    pub ino: Ino,
    pub kind: Kind,
    pub name: String,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Opened {
    pub fh: u64,
    pub keep_cache: bool,
    pub direct_io: bool,
    /// Nothing to do at close: the kernel need not send FLUSH.
    pub no_flush: bool,
}

/// Who made a request: the thread's pid and the user.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub pid: u32,
    pub uid: u32,
}

/// Tells the kernel to drop what it caches of an inode (pages, attributes).
pub trait Invalidate: Send + Sync + 'static {
    fn inval_inode(&self, ino: Ino);
}

type ValueKey = (SecretName, Selector);
type Value = Option<Arc<SecretVersion>>;

/// What an open file handle holds.
enum Handle {
    Read(Arc<SecretVersion>),
    Plain(Arc<[u8]>),
    Write(Arc<tokio::sync::Mutex<write::WriteState>>),
    /// An editor's temporary file; its bytes live in the write book.
    Temp(Node),
    Dir(Arc<Vec<DirEntry>>),
}

/// What a directory path is.
#[derive(Clone, Copy, Debug)]
struct DirInfo {
    secret: bool,
    /// Created by mkdir, no version yet.
    pending: bool,
}

pub struct Fs {
    cfg: FsConfig,
    store: Arc<dyn SecretStore>,
    stats: Arc<Stats>,
    inodes: InodeTable,
    values: Arc<Cache<ValueKey, Value>>,
    listings: Arc<Cache<(), Arc<Listing>>>,
    version_ids: Arc<Cache<SecretName, Arc<Vec<VersionId>>>>,
    fixed_listing: Option<Arc<Listing>>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    /// Names not in the listing that direct lookups found.
    direct: Mutex<BTreeSet<String>>,
    /// Names recently found missing.
    negative: Mutex<HashMap<String, Instant>>,
    /// Version whose pages the kernel holds, per file inode.
    kernel_view: Mutex<HashMap<Ino, VersionId>>,
    invalidator: Arc<dyn Invalidate>,
    mounted_at: SystemTime,
    writes: write::WriteBook,
    warned: Arc<Warned>,
}

impl Fs {
    pub fn new(
        cfg: FsConfig,
        store: Arc<dyn SecretStore>,
        stats: Arc<Stats>,
        invalidator: Arc<dyn Invalidate>,
    ) -> Arc<Self> {
        let stale_retry = cfg.ttl.min(Duration::from_secs(5));
        let fixed_listing = cfg
            .secrets
            .as_ref()
            .map(|names| Arc::new(Listing::build(names.iter().cloned(), &Warned::default())));
        Arc::new(Self {
            values: Cache::new(cfg.cache_capacity, stale_retry, stats.clone()),
            listings: Cache::new(NonZeroUsize::MIN, stale_retry, stats.clone()),
            version_ids: Cache::new(cfg.cache_capacity, stale_retry, stats.clone()),
            fixed_listing,
            store,
            stats,
            inodes: InodeTable::default(),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            direct: Mutex::new(BTreeSet::new()),
            negative: Mutex::new(HashMap::new()),
            kernel_view: Mutex::new(HashMap::new()),
            invalidator,
            mounted_at: SystemTime::now(),
            writes: write::WriteBook::default(),
            warned: Arc::default(),
            cfg,
        })
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    fn node(&self, ino: Ino) -> Result<Node> {
        self.inodes.node(ino).ok_or(Error::NotFound)
    }

    // ---- data sources -------------------------------------------------

    async fn listing(&self) -> Result<Arc<Listing>> {
        if let Some(l) = &self.fixed_listing {
            return Ok(l.clone());
        }
        let store = self.store.clone();
        let prefix = self.cfg.prefix.clone();
        let warned = self.warned.clone();
        // A listing past its TTL is answered at once while it refreshes: a
        // slow ListSecrets (100 pages for 10,000 secrets) must not hold up
        // lookups of secrets that are cached.
        let got = self
            .listings
            .get_or_refresh(&(), Some(self.cfg.ttl), move || async move {
                let names = store.list_secrets(prefix.as_deref()).await?;
                Ok(Arc::new(Listing::build(names, &warned)))
            })
            .await;
        Ok(got?.value)
    }

    /// The listing, or an empty one when listing is not possible (then only
    /// direct lookups find secrets).
    async fn listing_or_empty(&self) -> Arc<Listing> {
        match self.listing().await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "listing failed; falling back to direct lookups");
                Arc::new(Listing::default())
            }
        }
    }

    async fn value(&self, name: &SecretName, sel: Selector) -> Result<Cached<Value>> {
        let ttl = match sel {
            Selector::Stage(_) => Some(self.cfg.ttl),
            Selector::Id(_) => None,
        };
        let key = (name.clone(), sel);
        let fetch = || {
            let store = self.store.clone();
            let (n, s) = key.clone();
            async move { Ok(store.get_value(&n, &s).await?.map(Arc::new)) }
        };
        Ok(self.values.get(&key, ttl, fetch).await?)
    }

    /// A version that must exist (the file's content).
    async fn version(
        &self,
        name: &SecretName,
        sel: Selector,
    ) -> Result<(Arc<SecretVersion>, Duration)> {
        let c = self.value(name, sel).await?;
        let ttl = c.remaining(FOREVER);
        c.value.map(|v| (v, ttl)).ok_or(Error::NotFound)
    }

    fn in_scope(&self, path: &str) -> bool {
        if let Some(names) = &self.cfg.secrets {
            return names.iter().any(|n| n.as_str() == path);
        }
        self.cfg
            .prefix
            .as_deref()
            .is_none_or(|p| path.starts_with(p))
    }

    fn negative_hit(&self, path: &str) -> bool {
        let mut neg = self.negative.lock().unwrap_or_else(|p| p.into_inner());
        match neg.get(path) {
            Some(t) if *t > Instant::now() => true,
            Some(_) => {
                neg.remove(path);
                false
            }
            None => false,
        }
    }

    fn remember_missing(&self, path: &str) {
        let mut neg = self.negative.lock().unwrap_or_else(|p| p.into_inner());
        if neg.len() > 10_000 {
            let now = Instant::now();
            neg.retain(|_, t| *t > now);
        }
        neg.insert(path.to_string(), Instant::now() + self.cfg.negative_ttl);
    }

    fn forget_missing(&self, path: &str) {
        self.negative
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(path);
    }

    fn set_has_under(set: &BTreeSet<String>, path: &str) -> bool {
        let lead = format!("{path}/");
        set.range(lead.clone()..)
            .next()
            .is_some_and(|n| n.starts_with(&lead))
    }

    /// Whether `path` is a directory, and what kind: from the listing, from
    /// names found directly, from mkdir; otherwise by asking the backend.
    async fn resolve_dir(&self, path: &str) -> Result<DirInfo> {
        if path.is_empty() {
            return Ok(DirInfo {
                secret: false,
                pending: false,
            });
        }
        let listing = self.listing_or_empty().await;
        let pending = self.writes.is_pending(path);
        let (direct, direct_under) = {
            let d = self.direct.lock().unwrap_or_else(|p| p.into_inner());
            (d.contains(path), Self::set_has_under(&d, path))
        };
        let secret = listing.is_secret(path) || direct;
        if secret
            || pending
            || listing.is_prefix(path)
            || direct_under
            || self.writes.has_pending_under(path)
        {
            return Ok(DirInfo {
                secret,
                pending: pending && !secret,
            });
        }
        if self.fixed_listing.is_some() || !self.in_scope(path) || self.negative_hit(path) {
            return Err(Error::NotFound);
        }
        // Not in the last listing: ask directly, so that a principal without
        // ListSecrets can still reach the secrets it may read.
        match self
            .value(&SecretName::new(path), Selector::Stage(Stage::Current))
            .await
        {
            Ok(_) => {
                self.direct
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(path.to_string());
                Ok(DirInfo {
                    secret: true,
                    pending: false,
                })
            }
            Err(Error::NotFound) => {
                self.remember_missing(path);
                Err(Error::NotFound)
            }
            Err(e) => Err(e),
        }
    }

    // ---- attributes ---------------------------------------------------

    fn dir_attr(&self, ino: Ino, writable: bool) -> Attr {
        Attr {
            ino,
            kind: Kind::Dir,
            size: 0,
            mtime: self.mounted_at,
            perm: if writable && !self.cfg.read_only {
                0o700
            } else {
                0o500
            },
            uid: self.cfg.uid,
            gid: self.cfg.gid,
        }
    }

    fn file_attr(&self, ino: Ino, size: u64, mtime: SystemTime, writable: bool) -> Attr {
        Attr {
            ino,
            kind: Kind::File,
            size,
            mtime,
            perm: if writable && !self.cfg.read_only {
                0o600
            } else {
                0o400
            },
            uid: self.cfg.uid,
            gid: self.cfg.gid,
        }
    }

    /// Records that the kernel was told about `id` for `ino`; if it held
    /// another version, its cached pages go.
    fn observe(&self, ino: Ino, id: &VersionId) {
        let changed = {
            let mut view = self.kernel_view.lock().unwrap_or_else(|p| p.into_inner());
            match view.get(&ino) {
                Some(old) if old == id => false,
                Some(_) => {
                    // In no-open mode there is no open to refresh the view.
                    if self.cfg.read_only {
                        view.insert(ino, id.clone());
                    }
                    true
                }
                None => {
                    if self.cfg.read_only {
                        view.insert(ino, id.clone());
                    }
                    false
                }
            }
        };
        if changed {
            tracing::debug!(ino = ino.0, version = %id, "version changed; invalidating kernel cache");
            self.invalidator.inval_inode(ino);
        }
    }

    /// At open: whether the kernel's pages for `ino` hold `id` (keep them).
    fn observe_open(&self, ino: Ino, id: &VersionId) -> bool {
        let mut view = self.kernel_view.lock().unwrap_or_else(|p| p.into_inner());
        let same = view.get(&ino) == Some(id);
        if !same {
            view.insert(ino, id.clone());
        }
        same
    }

    fn invalidate_node(&self, node: &Node) {
        if let Some(ino) = self.inodes.ino_of(node) {
            self.kernel_view
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&ino);
            self.invalidator.inval_inode(ino);
        }
    }

    async fn attr_of(&self, ino: Ino, node: &Node) -> Result<Entry> {
        let dir_ttl = self.cfg.ttl;
        Ok(match node {
            Node::Dir(p) => {
                let info = self.resolve_dir(p).await?;
                let writable = p.is_empty() || info.secret || info.pending;
                Entry {
                    attr: self.dir_attr(ino, writable),
                    ttl: dir_ttl,
                }
            }
            Node::Current(s) | Node::Previous(s) => {
                let stage = if matches!(node, Node::Current(_)) {
                    Stage::Current
                } else {
                    Stage::Previous
                };
                if stage == Stage::Current && self.writes.is_pending(s.as_str()) {
                    // Being created: the first write has not been put yet.
                    return Ok(Entry::uncached(self.file_attr(
                        ino,
                        0,
                        SystemTime::now(),
                        true,
                    )));
                }
                let (v, ttl) = self.version(s, Selector::Stage(stage)).await?;
                self.observe(ino, &v.id);
                Entry {
                    attr: self.file_attr(
                        ino,
                        v.value.len() as u64,
                        v.created,
                        stage == Stage::Current,
                    ),
                    ttl,
                }
            }
            Node::Version(s, id) => {
                let (v, ttl) = self.version(s, Selector::Id(id.clone())).await?;
                Entry {
                    attr: self.file_attr(ino, v.value.len() as u64, v.created, false),
                    ttl,
                }
            }
            Node::Versions(_) | Node::StatsDir => Entry {
                attr: self.dir_attr(ino, false),
                ttl: dir_ttl,
            },
            Node::StatsFile => Entry::uncached(self.file_attr(
                ino,
                self.stats.render().len() as u64,
                SystemTime::now(),
                false,
            )),
            Node::Temp(..) => Entry::uncached(self.temp_attr(ino, node)?),
        })
    }

    // ---- operations ---------------------------------------------------

    pub async fn lookup(&self, parent: Ino, name: &str, caller: Caller) -> Result<Entry> {
        let node = match self.node(parent)? {
            Node::Dir(p) => {
                if p.is_empty() && name == STATS_DIR {
                    Node::StatsDir
                } else if let Some(t) = self.temp_node(&p, name, caller.uid) {
                    t
                } else {
                    let info = self.resolve_dir(&p).await?;
                    let s = SecretName::new(&*p);
                    match name {
                        "current" if info.secret && self.writes.is_replacing(&p, caller.pid) => {
                            return Err(Error::NotFound);
                        }
                        "current" if info.secret => Node::Current(s),
                        "previous" if info.secret => Node::Previous(s),
                        "versions" if info.secret => Node::Versions(s),
                        _ if !tree::valid_component(name) => return Err(Error::NotFound),
                        _ => {
                            let child = tree::join(&p, name);
                            self.resolve_dir(&child).await?;
                            Node::Dir(Arc::from(child))
                        }
                    }
                }
            }
            Node::Versions(s) => Node::Version(s, VersionId::new(name)),
            Node::StatsDir if name == STATS_FILE => Node::StatsFile,
            Node::StatsDir => return Err(Error::NotFound),
            _ => return Err(Error::NotDir),
        };
        // Counted at once, so that a FORGET of an earlier reference racing
        // with this lookup cannot drop the inode under it; given back if
        // the node turns out not to exist.
        let ino = self.inodes.assign(node.clone(), true);
        match self.attr_of(ino, &node).await {
            Ok(entry) => Ok(entry),
            Err(e) => {
                self.inodes.forget(ino, 1);
                Err(e)
            }
        }
    }

    pub fn forget(&self, ino: Ino, n: u64) {
        self.inodes.forget(ino, n);
    }

    pub async fn getattr(&self, ino: Ino) -> Result<Entry> {
        let node = self.node(ino)?;
        self.attr_of(ino, &node).await
    }

    /// Reads a directory whole, for a consistent listing across readdir calls.
    pub async fn opendir(&self, ino: Ino, caller: Caller) -> Result<u64> {
        let entries = self.dir_entries(ino, caller).await?;
        Ok(self.add_handle(Handle::Dir(Arc::new(entries))))
    }

    pub fn readdir(&self, fh: u64) -> Result<Arc<Vec<DirEntry>>> {
        match self
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh)
        {
            Some(Handle::Dir(d)) => Ok(d.clone()),
            _ => Err(Error::BadHandle),
        }
    }

    async fn dir_entries(&self, ino: Ino, caller: Caller) -> Result<Vec<DirEntry>> {
        let mut out = vec![
            DirEntry {
                ino,
                kind: Kind::Dir,
                name: ".".into(),
            },
            DirEntry {
                ino,
                kind: Kind::Dir,
                name: "..".into(),
            },
        ];
        let mut push = |node: Node, kind: Kind, name: &str| {
            let ino = self.inodes.assign(node, false);
            out.push(DirEntry {
                ino,
                kind,
                name: name.to_string(),
            });
        };
        match self.node(ino)? {
            Node::Dir(p) => {
                let info = self.resolve_dir(&p).await?;
                let s = SecretName::new(&*p);
                if info.secret {
                    push(Node::Current(s.clone()), Kind::File, "current");
                    if let Ok(c) = self.value(&s, Selector::Stage(Stage::Previous)).await
                        && c.value.is_some()
                    {
                        push(Node::Previous(s.clone()), Kind::File, "previous");
                    }
                    push(Node::Versions(s), Kind::Dir, "versions");
                }
                let mut children = if p.is_empty() {
                    // The root lists what ListSecrets says; a failure is the caller's.
                    self.listing().await?.children(&p)
                } else {
                    self.listing_or_empty().await.children(&p)
                };
                children.extend(self.extra_children(&p));
                for c in children {
                    if info.secret && OWN_FILES.contains(&c.as_str()) {
                        continue;
                    }
                    let child = tree::join(&p, &c);
                    push(Node::Dir(Arc::from(child)), Kind::Dir, &c);
                }
                for (name, node) in self.temp_entries(&p, caller.uid) {
                    push(node, Kind::File, &name);
                }
            }
            Node::Versions(s) => {
                let store = self.store.clone();
                let n = s.clone();
                let ids = self
                    .version_ids
                    .get(&s, Some(self.cfg.ttl), move || async move {
                        Ok(Arc::new(store.list_version_ids(&n).await?))
                    })
                    .await?
                    .value;
                for id in ids.iter() {
                    push(
                        Node::Version(s.clone(), id.clone()),
                        Kind::File,
                        id.as_str(),
                    );
                }
            }
            Node::StatsDir => push(Node::StatsFile, Kind::File, STATS_FILE),
            _ => return Err(Error::NotDir),
        }
        Ok(out)
    }

    /// Children that the listing does not know: direct finds, mkdir'd names.
    fn extra_children(&self, p: &str) -> BTreeSet<String> {
        let lead = if p.is_empty() {
            String::new()
        } else {
            format!("{p}/")
        };
        let mut out = BTreeSet::new();
        let direct = self.direct.lock().unwrap_or_else(|p| p.into_inner());
        for n in direct
            .range(lead.clone()..)
            .take_while(|n| n.starts_with(&lead))
        {
            if let Some(c) = n[lead.len()..].split('/').next() {
                out.insert(c.to_string());
            }
        }
        out.extend(self.writes.pending_children(&lead));
        out
    }

    pub fn releasedir(&self, fh: u64) {
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh);
    }

    fn add_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, h);
        fh
    }

    /// Opens a file. A read handle pins one version from open to close.
    pub async fn open(&self, ino: Ino, flags: i32, pid: u32) -> Result<Opened> {
        if self.cfg.read_only {
            // ENOSYS puts the kernel in no-open mode: cached pages are then
            // served with no round trip to the daemon.
            return Err(Error::NotImplemented);
        }
        let node = self.node(ino)?;
        let writing = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let sel = match &node {
            Node::Current(s) if writing => return self.open_write(s, flags, pid).await,
            Node::Current(_) => Selector::Stage(Stage::Current),
            Node::Previous(_) | Node::Version(..) | Node::StatsFile if writing => {
                return Err(Error::Refused("read-only file"));
            }
            Node::Previous(_) => Selector::Stage(Stage::Previous),
            Node::Version(_, id) => Selector::Id(id.clone()),
            Node::StatsFile => {
                let fh = self.add_handle(Handle::Plain(Arc::from(self.stats.render())));
                return Ok(Opened {
                    fh,
                    keep_cache: false,
                    direct_io: true,
                    no_flush: true,
                });
            }
            Node::Temp(..) => return self.open_temp(node),
            _ => return Err(Error::IsDir),
        };
        let name = match &node {
            Node::Current(s) | Node::Previous(s) | Node::Version(s, _) => s.clone(),
            _ => unreachable!("selector chosen for a secret file"),
        };
        let (v, _) = self.version(&name, sel).await?;
        let keep_cache = self.observe_open(ino, &v.id);
        let fh = self.add_handle(Handle::Read(v));
        // A read handle has nothing to commit: no FLUSH at close.
        Ok(Opened {
            fh,
            keep_cache,
            direct_io: false,
            no_flush: true,
        })
    }

    pub async fn read(&self, ino: Ino, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let handle = {
            let handles = self.handles.lock().unwrap_or_else(|p| p.into_inner());
            match handles.get(&fh) {
                Some(Handle::Read(v)) => return Ok(slice(v.value.as_bytes(), offset, size)),
                Some(Handle::Plain(b)) => return Ok(slice(b, offset, size)),
                Some(Handle::Write(w)) => Some(w.clone()),
                Some(Handle::Temp(n)) => return self.read_temp(n, offset, size),
                Some(Handle::Dir(_)) => return Err(Error::IsDir),
                None => None,
            }
        };
        if let Some(w) = handle {
            let w = w.lock().await;
            return Ok(slice(w.buf(), offset, size));
        }
        // No handle: no-open mode reads the inode's current version.
        let (name, sel) = match self.node(ino)? {
            Node::Current(s) => (s, Selector::Stage(Stage::Current)),
            Node::Previous(s) => (s, Selector::Stage(Stage::Previous)),
            Node::Version(s, id) => (s, Selector::Id(id)),
            Node::StatsFile => return Ok(slice(&self.stats.render(), offset, size)),
            node @ Node::Temp(..) => return self.read_temp(&node, offset, size),
            _ => return Err(Error::IsDir),
        };
        let (v, _) = self.version(&name, sel).await?;
        Ok(slice(v.value.as_bytes(), offset, size))
    }

    pub async fn release(&self, fh: u64) {
        let h = self
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh);
        if let Some(Handle::Write(w)) = h {
            self.release_write(w).await;
        }
    }
}

fn slice(data: &[u8], offset: u64, size: u32) -> Vec<u8> {
    let start = (offset as usize).min(data.len());
    let end = start.saturating_add(size as usize).min(data.len());
    data[start..end].to_vec()
}
