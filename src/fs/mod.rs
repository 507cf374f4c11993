//! The filesystem's logic, free of fuser: async functions over inode numbers
//! that return plain structs or an `Error`. `Fs` composes the owners of its
//! state and is their only caller: the namespace (what paths are), open
//! handles, the kernel's view per inode, writes, and temporary files. Data
//! flows one way: fuse.rs -> fs -> those parts -> cache -> store.

mod access_hooks;
mod coherence;
mod describe;
mod edit;
mod handles;
mod hooks;
mod json;
mod kernel;
mod names;
mod namespace;
mod own;
mod stages;
mod temp;
mod templates;
mod types;
mod write;
mod write_state;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::cache::{Cache, Cached, Limits};
use crate::error::{Error, Result};
use crate::inode::{Ino, InodeTable, Node, Report};
use crate::stats::Stats;
use crate::store::{
    Label, ListedVersion, SecretName, SecretStore, SecretVersion, Selector, Stage, StoreResult,
    VersionId,
};
use crate::tree::{self, METRICS_FILE, OWN_FILES, REFRESH_FILE, STATS_DIR, STATS_FILE};
use futures::future::BoxFuture;

use describe::Descriptions;
use handles::{Handle, Handles};
use kernel::KernelView;
use namespace::{DirInfo, Namespace};
use stages::Stages;
use temp::Temps;
use write::Writes;

use types::slice;
pub use types::{Attr, Caller, Closer, DirEntry, Entry, Invalidate, Kind, Opened, Sizes};

/// The defaults of `FsConfig`, declared with the configuration's others.
pub use crate::config::defaults::{
    COLD_WAIT, DEFAULT_CACHE_BYTES, DEFAULT_MAX_STALE, DENIED_TTL, DOWN_TTL,
};
pub use templates::{RENDERED_DIR, TemplateDef, resolve_all};
pub use write_state::{MAX_VALUE_LEN, Ownership};

/// The extended attribute of a `versions/` entry that holds its staging
/// labels (`getfattr -n user.secretsfs.stages versions/*`).
pub const STAGES_XATTR: &str = "user.secretsfs.stages";

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
    /// Bytes of secret values (and version lists) cached.
    pub cache_bytes: NonZeroUsize,
    /// How long a value may be served after its refreshes began failing
    /// (None: no limit; zero: never).
    pub max_stale: Option<Duration>,
    /// What the stats say the mount is: the store's kind and the mountpoint.
    pub store_kind: String,
    pub mountpoint: String,
    /// Bounds on editors' temporary files, per mount.
    pub temp_max_files: usize,
    pub temp_max_bytes: usize,
    /// How long a read with nothing cached waits for the backend before
    /// EIO (the fetch goes on and fills the cache); None: the store's own
    /// timeouts.
    pub cold_wait: Option<Duration>,
    /// How long AccessDenied and KMS failures are answered from memory.
    pub denied_ttl: Duration,
    /// How long "nothing cached and the backend failed" is answered from
    /// memory.
    pub down_ttl: Duration,
    /// Change hooks (`--on-change`, `[[hook]]`); none: nothing is watched.
    pub hooks: Vec<crate::hooks::HookSpec>,
    /// Rendered files (`[[template]]` in the config file).
    pub templates: Vec<TemplateDef>,
    /// `--trim-newline`: one trailing newline of a single-line text value
    /// written to `current` goes (a rule's setting wins).
    pub trim_newline: bool,
    /// The ownership rules at start (SIGHUP replaces the Fs's copy).
    pub rules: Arc<crate::rules::Rules>,
    /// `[[access]]` rules and the access log (src/access).
    pub access: Arc<crate::access::Access>,
}

/// How long a reader of an expired value waits for its refresh before it
/// gets the value held (counted as stale) while the refresh goes on.
pub const REFRESH_WAIT: Duration = Duration::from_secs(1);

/// Each cached TTL is drawn from TTL x (1 - TTL_JITTER .. 1): spread
/// apart, never longer than the TTL.
pub const TTL_JITTER: f64 = 0.2;

/// A value revalidated by DescribeSecret is still read again with
/// GetSecretValue at least this often, so that a GetSecretValue permission
/// or a KMS key revoked since takes effect.
pub const REVERIFY: Duration = Duration::from_secs(15 * 60);

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
            cache_bytes: NonZeroUsize::new(DEFAULT_CACHE_BYTES).expect("non-zero"),
            max_stale: Some(DEFAULT_MAX_STALE),
            store_kind: String::new(),
            mountpoint: String::new(),
            temp_max_files: 64,
            temp_max_bytes: 4 << 20,
            cold_wait: Some(COLD_WAIT),
            denied_ttl: DENIED_TTL,
            down_ttl: DOWN_TTL,
            hooks: Vec::new(),
            templates: Vec::new(),
            trim_newline: false,
            rules: Arc::default(),
            access: Arc::default(),
        }
    }

    /// The cache rules every cache of the mount shares.
    pub(crate) fn limits<V>(&self, max_bytes: usize, weigh: fn(&V) -> usize) -> Limits<V> {
        Limits {
            stale_retry: self.ttl.min(Duration::from_secs(5)),
            max_stale: self.max_stale,
            refresh_wait: REFRESH_WAIT,
            jitter: TTL_JITTER,
            cold_wait: self.cold_wait,
            denied_ttl: self.denied_ttl,
            down_ttl: self.down_ttl,
            ..Limits::new(max_bytes, weigh)
        }
    }
}

type ValueKey = (SecretName, Selector);
type Value = Option<Arc<SecretVersion>>;

fn weigh_value(v: &Value) -> usize {
    v.as_ref()
        .map_or(0, |v| v.value.len() + v.id.as_str().len() + 64)
}

fn weigh_ids(v: &Arc<Vec<ListedVersion>>) -> usize {
    v.iter()
        .map(|l| l.id.as_str().len() + 48 + l.stages.iter().map(|s| s.len() + 24).sum::<usize>())
        .sum()
}

pub struct Fs {
    cfg: FsConfig,
    store: Arc<dyn SecretStore>,
    stats: Arc<Stats>,
    inodes: InodeTable,
    values: Arc<Cache<ValueKey, Value>>,
    version_ids: Arc<Cache<SecretName, Arc<Vec<ListedVersion>>>>,
    descs: Arc<Descriptions>,
    names: Namespace,
    handles: Handles,
    kernel: KernelView,
    writes: Writes,
    temps: Temps,
    mounted_at: SystemTime,
    stages: Stages,
    watch: Option<Arc<crate::hooks::Watch>>,
    json: json::JsonViews,
    templates: templates::Templates,
    /// The ownership rules in force; SIGHUP replaces them.
    rules: parking_lot::RwLock<Arc<crate::rules::Rules>>,
}

impl Fs {
    pub fn new(
        cfg: FsConfig,
        store: Arc<dyn SecretStore>,
        stats: Arc<Stats>,
        invalidator: Arc<dyn Invalidate>,
    ) -> Arc<Self> {
        let bytes = cfg.cache_bytes.get();
        let watch = (!cfg.hooks.is_empty()).then(|| {
            crate::hooks::Watch::new(cfg.hooks.clone(), stats.clone(), cfg.mountpoint.clone())
        });
        Arc::new(Self {
            watch,
            values: Cache::new(cfg.limits(bytes, weigh_value), stats.clone()),
            version_ids: Cache::new(cfg.limits(bytes / 4, weigh_ids), stats.clone()),
            descs: Descriptions::new(
                store.clone(),
                cfg.limits(bytes / 4, |_| 0),
                cfg.ttl,
                stats.clone(),
            ),
            names: Namespace::new(&cfg, store.clone(), stats.clone()),
            store,
            stats,
            inodes: InodeTable::default(),
            handles: Handles::default(),
            kernel: KernelView::new(invalidator, cfg.read_only),
            writes: Writes::new(cfg.store_kind == "aws"),
            temps: Temps::new(cfg.temp_max_files, cfg.temp_max_bytes),
            mounted_at: SystemTime::now(),
            stages: Stages::default(),
            json: json::JsonViews::default(),
            templates: templates::Templates::new(&cfg.templates),
            rules: parking_lot::RwLock::new(cfg.rules.clone()),
            cfg,
        })
    }

    /// For shutdown: puts being made now (or waiting their turn), and the
    /// secrets of files open for writing whose data no close has stored
    /// (a process still writing: its value may be incomplete, so it is
    /// reported, not stored).
    pub fn pending(&self) -> (usize, Vec<SecretName>) {
        let unsaved = self
            .handles
            .all()
            .into_iter()
            .filter_map(|h| match h {
                Handle::Write(w) => w.try_lock().ok().and_then(|st| st.unsaved()),
                _ => None,
            })
            .collect();
        (self.writes.len(), unsaved)
    }

    /// A write handle `owner` opened on `ino` and has not written to yet.
    fn fresh_write_handle(&self, ino: Ino, owner: u32) -> Option<Handle> {
        self.handles.all().into_iter().find(|h| match h {
            Handle::Write(w) => w.try_lock().is_ok_and(|st| st.is_fresh(ino, owner)),
            _ => false,
        })
    }

    /// The stats (JSON) or metrics (Prometheus text) file's content.
    fn report(&self, r: Report) -> Vec<u8> {
        let sizes = self.sizes();
        let info = crate::stats::Info {
            version: crate::VERSION,
            uptime: self.mounted_at.elapsed().unwrap_or_default(),
            store: &self.cfg.store_kind,
            mountpoint: &self.cfg.mountpoint,
            cache_entries: sizes.cached_values as u64,
            cache_bytes: sizes.value_bytes as u64,
        };
        match r {
            Report::Json => self.stats.render_with(&info),
            Report::Prometheus => self.stats.prometheus(&info),
        }
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    pub fn sizes(&self) -> Sizes {
        let (direct_names, missing_names, pending_dirs, listing_bytes) = self.names.sizes();
        let (cached_values, value_bytes) = self.values.usage();
        let (_, temp_files, temp_bytes) = self.temps.sizes();
        Sizes {
            inodes: self.inodes.len(),
            kernel_views: self.kernel.len(),
            handles: self.handles.len(),
            direct_names,
            missing_names,
            pending_dirs,
            cached_values,
            value_bytes,
            version_list_bytes: self.version_ids.usage().1 + self.descs.bytes(),
            listing_bytes,
            temp_files,
            temp_bytes,
            put_locks: self.writes.len(),
        }
    }

    /// The path of `name` in directory `dir`, for log lines of requests
    /// that name a file in a directory (unlink, rename, create).
    pub fn path_in(&self, dir: Ino, name: &str) -> String {
        match self.path_of(dir) {
            d if d == "/" => name.to_string(),
            d => format!("{d}/{name}"),
        }
    }

    /// The path of an inode inside the mount, for log lines
    /// (`prod/db/current`); never a value.
    pub fn path_of(&self, ino: Ino) -> String {
        let join = |dir: &str, name: &str| {
            if dir.is_empty() {
                name.to_string()
            } else {
                format!("{dir}/{name}")
            }
        };
        match self.inodes.node(ino) {
            Some(Node::Dir(p)) if p.is_empty() => "/".into(),
            Some(Node::Dir(p)) => p.to_string(),
            Some(Node::Current(s)) => join(s.as_str(), "current"),
            Some(Node::Previous(s)) => join(s.as_str(), "previous"),
            Some(Node::Versions(s)) => join(s.as_str(), "versions"),
            Some(Node::Version(s, id)) => format!("{s}/versions/{id}"),
            Some(Node::StatsDir) => STATS_DIR.into(),
            Some(Node::StatsFile(Report::Json)) => format!("{STATS_DIR}/{STATS_FILE}"),
            Some(Node::StatsFile(Report::Prometheus)) => format!("{STATS_DIR}/{METRICS_FILE}"),
            Some(Node::Temp(d, n)) => join(&d, &n),
            Some(Node::JsonDir(s)) => format!("{s}/json"),
            Some(Node::JsonKey(s, k)) => format!("{s}/json/{k}"),
            Some(Node::RenderedDir) => format!("{STATS_DIR}/{RENDERED_DIR}"),
            Some(Node::Rendered(n)) => format!("{STATS_DIR}/{RENDERED_DIR}/{n}"),
            Some(Node::RefreshFile) => format!("{STATS_DIR}/{REFRESH_FILE}"),
            Some(Node::StagesDir(s)) => join(s.as_str(), "stages"),
            Some(Node::StageFile(s, l)) => format!("{s}/stages/{l}"),
            // No inode number: log lines name files, not inodes.
            None => "(a file the kernel has forgotten)".into(),
        }
    }

    fn node(&self, ino: Ino) -> Result<Node> {
        self.inodes.node(ino).ok_or(Error::NotFound)
    }

    // ---- data sources -------------------------------------------------

    fn value_ttl(&self, sel: &Selector) -> Option<Duration> {
        match sel {
            Selector::Stage(_) => Some(self.cfg.ttl),
            Selector::Id(_) => None,
        }
    }

    async fn value(&self, name: &SecretName, sel: Selector) -> Result<Cached<Value>> {
        let ttl = self.value_ttl(&sel);
        let fetch = self.value_fetch(name, &sel);
        let got = self
            .values
            .get_with(&(name.clone(), sel.clone()), ttl, fetch)
            .await;
        if let Err(e) = &got
            && e.kind == crate::store::StoreErrorKind::NotFound
        {
            self.names.lost(name.as_str());
        }
        if let (Some(w), Ok(Cached { value: Some(v), .. })) = (&self.watch, &got)
            && sel == Selector::Stage(Stage::Current)
        {
            w.served(name, &v.id);
        }
        Ok(got?)
    }

    /// How a value is fetched: GetSecretValue; but when a label's value is
    /// held (expired, or refreshed ahead), DescribeSecret first, and
    /// GetSecretValue only if the label moved to another version (or
    /// DescribeSecret is denied).
    fn value_fetch(
        &self,
        name: &SecretName,
        sel: &Selector,
    ) -> impl FnOnce(Option<Value>) -> BoxFuture<'static, StoreResult<Value>> + use<> {
        let (store, descs, stats) = (self.store.clone(), self.descs.clone(), self.stats.clone());
        let (n, s) = (name.clone(), sel.clone());
        move |held: Option<Value>| {
            Box::pin(async move {
                if let (Selector::Stage(stage), Some(held)) = (&s, held)
                    && let Some(d) = descs.now(&n).await?
                {
                    let id = d.with_stage(*stage);
                    // The same version, and its value read not too long
                    // ago: a permission or KMS key revoked since must not
                    // go unnoticed behind DescribeSecret for ever.
                    let recent = held.as_ref().is_none_or(|v| v.fetched.elapsed() < REVERIFY);
                    if id == held.as_ref().map(|v| &v.id) && recent {
                        stats.revalidated();
                        return Ok(held);
                    }
                    if id.is_none() {
                        return Ok(None);
                    }
                }
                Ok(store.get_value(&n, &s).await?.map(Arc::new))
            })
        }
    }

    /// Whether the secret has an AWSPREVIOUS version, from DescribeSecret
    /// (no decrypt); from the value itself if DescribeSecret is denied.
    async fn has_previous(&self, s: &SecretName) -> bool {
        match self.descs.get(s).await {
            Ok(Some(d)) => d.with_stage(Stage::Previous).is_some(),
            Ok(None) => self
                .value(s, Selector::Stage(Stage::Previous))
                .await
                .is_ok_and(|c| c.value.is_some()),
            // Unknown for now (the backend fails): what the cache says.
            Err(_) => self
                .values
                .peek_any(&(s.clone(), Selector::Stage(Stage::Previous)))
                .flatten()
                .is_some(),
        }
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

    /// Whether `path` is a directory, and what kind: from the namespace,
    /// otherwise by asking the backend for the secret directly.
    async fn resolve_dir(&self, path: &str) -> Result<DirInfo> {
        if path.is_empty() {
            return Ok(DirInfo::PLAIN);
        }
        // The mount's own namespace: never a secret, never asked for.
        if tree::reserved(path) {
            return Err(Error::NotFound);
        }
        let (listing, complete) = self.names.listing_or_empty().await;
        if let Some(info) = self.names.known(path, &listing) {
            return Ok(info);
        }
        if self.names.is_fixed()
            || !self.names.in_scope(path, self.cfg.secrets.as_deref())
            || self.names.negative_hit(path)
        {
            return Err(Error::NotFound);
        }
        // Not in the last listing: ask directly (DescribeSecret: no
        // decrypt), so that a principal without ListSecrets can still reach
        // the secrets it may read.
        let name = SecretName::new(path);
        let found = match self.descs.get(&name).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => self
                .value(&name, Selector::Stage(Stage::Current))
                .await
                .map(|_| ()),
            Err(e) => Err(Error::from(e)),
        };
        match found {
            Ok(()) => {
                self.names.found_direct(path);
                Ok(DirInfo::SECRET)
            }
            // Not a secret, but maybe a directory of secrets that only the
            // listing still on its way can tell: not an answer yet.
            Err(Error::NotFound) if !complete => Err(Error::Unavailable(
                "the listing is slow and the name is not a secret".into(),
            )),
            Err(Error::NotFound) => {
                self.names.remember_missing(path);
                Err(Error::NotFound)
            }
            Err(e) => Err(e),
        }
    }

    // ---- attributes ---------------------------------------------------

    fn dir_attr(&self, ino: Ino, writable: bool) -> Attr {
        let attr = Attr {
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
        };
        self.ruled(attr, writable)
    }

    fn file_attr(&self, ino: Ino, size: u64, mtime: SystemTime, writable: bool) -> Attr {
        let attr = Attr {
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
        };
        self.ruled(attr, writable)
    }

    async fn attr_of(&self, ino: Ino, node: &Node) -> Result<Entry> {
        let dir_ttl = self.cfg.ttl;
        Ok(match node {
            Node::Dir(p) => {
                let info = self.resolve_dir(p).await?;
                let writable = p.is_empty() || info.secret || info.pending;
                let mut attr = self.dir_attr(ino, writable);
                if p.is_empty() {
                    attr.perm |= self.root_search_bits();
                }
                Entry { attr, ttl: dir_ttl }
            }
            Node::Current(s) | Node::Previous(s) => {
                let stage = if matches!(node, Node::Current(_)) {
                    Stage::Current
                } else {
                    Stage::Previous
                };
                if stage == Stage::Current && self.names.is_pending(s.as_str()) {
                    // Being created: the first write has not been put yet.
                    return Ok(Entry::uncached(self.file_attr(
                        ino,
                        0,
                        SystemTime::now(),
                        true,
                    )));
                }
                let (v, ttl) = self.version(s, Selector::Stage(stage)).await?;
                self.version_entry(ino, &v, ttl, stage == Stage::Current)
            }
            Node::Version(s, id) => self.by_id_entry(ino, s, id, false).await?,
            Node::Versions(_) => Entry {
                attr: self.dir_attr(ino, false),
                ttl: dir_ttl,
            },
            Node::StatsDir | Node::RenderedDir => Entry {
                attr: self.reserved_dir_attr(ino),
                ttl: dir_ttl,
            },
            Node::Rendered(n) => self.rendered_entry(ino, n).await?,
            Node::StatsFile(r) => Entry::uncached(self.file_attr(
                ino,
                self.report(*r).len() as u64,
                SystemTime::now(),
                false,
            )),
            Node::Temp(d, n) => {
                let file = self
                    .temps
                    .named(&(d.clone(), n.clone()))
                    .ok_or(Error::NotFound)?;
                Entry::uncached(self.temp_attr(ino, &file.lock()))
            }
            Node::JsonDir(_) => Entry {
                attr: self.dir_attr(ino, true),
                ttl: dir_ttl,
            },
            Node::JsonKey(s, k) => self.json_attr(ino, s, k).await?,
            Node::RefreshFile => Entry::uncached(self.refresh_attr(ino)),
            Node::StagesDir(_) => Entry {
                attr: self.dir_attr(ino, true),
                ttl: dir_ttl,
            },
            Node::StageFile(s, l) => self.stage_entry(ino, s, l).await?,
        })
    }

    /// The attributes of a file showing version `v`, telling the kernel
    /// which version they describe (its caches go when that changes).
    fn version_entry(
        &self,
        ino: Ino,
        v: &Arc<SecretVersion>,
        ttl: Duration,
        writable: bool,
    ) -> Entry {
        let v = self.kernel.tell(ino, v);
        Entry {
            attr: self.file_attr(ino, v.value.len() as u64, v.created, writable),
            ttl,
        }
    }

    /// The attributes of a file showing version `id` (`versions/<id>`,
    /// `stages/<label>`). When its value is not cached and the version is
    /// listed (ListSecretVersionIds, cached for the TTL), no decrypt only to
    /// report a size: size 0 for now, the version's CreatedDate as mtime
    /// (`ls -lt`), and the kernel asks again next time. Reads are not bound
    /// by the size (direct I/O). Not on a read-only mount: the kernel then
    /// reads through the page cache (no open), which stops at the size.
    async fn by_id_entry(
        &self,
        ino: Ino,
        s: &SecretName,
        id: &VersionId,
        writable: bool,
    ) -> Result<Entry> {
        let key = (s.clone(), Selector::Id(id.clone()));
        if !self.cfg.read_only && self.values.peek_any(&key).flatten().is_none() {
            let listed = self.version_list(s).await.ok().and_then(|list| {
                let v = list.iter().find(|v| &v.id == id)?;
                Some(v.created.unwrap_or(self.mounted_at))
            });
            if let Some(created) = listed {
                return Ok(Entry::uncached(self.file_attr(ino, 0, created, writable)));
            }
        }
        let (v, ttl) = self.version(s, Selector::Id(id.clone())).await?;
        Ok(self.version_entry(ino, &v, ttl, writable))
    }

    fn temp_attr(&self, ino: Ino, t: &temp::TempFile) -> Attr {
        Attr {
            ino,
            kind: Kind::File,
            size: t.bytes().len() as u64,
            mtime: t.mtime,
            perm: t.mode,
            uid: self.cfg.uid,
            gid: self.cfg.gid,
        }
    }

    // ---- operations ---------------------------------------------------

    pub async fn lookup(&self, parent: Ino, name: &str, caller: Caller) -> Result<Entry> {
        if name.len() > names::NAME_MAX {
            return Err(Error::NameTooLong);
        }
        let parent_node = self.node(parent)?;
        if let Some(dir) = edit::temp_dir(&parent_node) {
            let key = (dir, Arc::<str>::from(name));
            if self.temps.get(&key, caller.uid).is_some() {
                return self.found(Node::Temp(key.0, key.1)).await;
            }
        }
        let node = match parent_node {
            Node::Dir(p) => {
                if p.is_empty() && name == STATS_DIR {
                    Node::StatsDir
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
                        "json" if info.secret => Node::JsonDir(s),
                        "stages" if info.secret => Node::StagesDir(s),
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
            Node::JsonDir(s) => {
                if self
                    .writes
                    .is_replacing(&json::key_path(&s, name), caller.pid)
                {
                    return Err(Error::NotFound);
                }
                Node::JsonKey(s, Arc::from(name))
            }
            Node::StagesDir(s) => Node::StageFile(s, Label::new(name)),
            Node::StatsDir if name == STATS_FILE => Node::StatsFile(Report::Json),
            Node::StatsDir if name == METRICS_FILE => Node::StatsFile(Report::Prometheus),
            Node::StatsDir if name == RENDERED_DIR && self.has_templates() => Node::RenderedDir,
            Node::StatsDir if name == REFRESH_FILE => Node::RefreshFile,
            Node::StatsDir => return Err(Error::NotFound),
            Node::RenderedDir if self.has_template(name) => Node::Rendered(Arc::from(name)),
            Node::RenderedDir => return Err(Error::NotFound),
            _ => return Err(Error::NotDir),
        };
        self.found(node).await
    }

    /// A lookup's node, given an inode (counted for the kernel) and
    /// attributes; or its error, with the count given back.
    async fn found(&self, node: Node) -> Result<Entry> {
        // Counted at once, so that a FORGET of an earlier reference racing
        // with this lookup cannot drop the inode under it; given back if
        // the node turns out not to exist.
        let ino = self.inodes.assign(node.clone(), true);
        match self.attr_of(ino, &node).await {
            Ok(_) if self.kernel.superseded(ino) => {
                // A read-only mount's inode keeps its version for whoever
                // holds it; the name gets a new inode for the new one.
                self.forget(ino, 1);
                self.inodes.detach(&node);
                let fresh = self.inodes.assign(node.clone(), true);
                self.attr_of(fresh, &node).await.inspect_err(|_| {
                    self.forget(fresh, 1);
                })
            }
            Ok(entry) => Ok(entry),
            Err(e) => {
                self.forget(ino, 1);
                Err(e)
            }
        }
    }

    pub fn forget(&self, ino: Ino, n: u64) {
        if self.inodes.forget(ino, n) {
            self.kernel.forget(ino);
        }
    }

    /// Attributes; with a handle (fstat), those of the file it holds, which
    /// may have been renamed or unlinked since.
    pub async fn getattr(&self, ino: Ino, fh: Option<u64>) -> Result<Entry> {
        let handle = fh.and_then(|fh| self.handles.get(fh));
        if let Some(Handle::Temp(t)) = &handle {
            let f = t.file.lock();
            if f.target.is_none() {
                return Ok(Entry::uncached(self.temp_attr(ino, &f)));
            }
        }
        // With a handle too (lseek(SEEK_END) sends one, fstat does not),
        // the file's attributes as they are now: the kernel keeps one size
        // per inode, and it must stay the size of what page-cache fills
        // are answered with. A handle's own size answers only for a file
        // that is gone (a JSON key removed since it was opened).
        let node = self.node(ino)?;
        match (self.attr_of(ino, &node).await, handle) {
            (Err(Error::NotFound), Some(Handle::Read(v))) => {
                let size = v.value.len() as u64;
                let attr = self.file_attr(ino, size, v.created, self.writable_node(&node));
                Ok(Entry::uncached(attr))
            }
            (Err(Error::NotFound), Some(Handle::Rendered { attr, .. })) => {
                Ok(Entry::uncached(attr))
            }
            (got, _) => got,
        }
    }

    /// Whether a file node can be written (its mode shows it).
    fn writable_node(&self, node: &Node) -> bool {
        match node {
            Node::Current(_) | Node::JsonKey(..) => true,
            Node::StageFile(_, l) => names::writable(l),
            _ => false,
        }
    }

    /// Reads a directory whole, for a consistent listing across readdir calls.
    pub async fn opendir(&self, ino: Ino, caller: Caller) -> Result<u64> {
        let entries = self.dir_entries(ino, caller).await?;
        Ok(self.handles.add(Handle::Dir(Arc::new(entries))))
    }

    pub fn readdir(&self, fh: u64) -> Result<Arc<Vec<DirEntry>>> {
        match self.handles.get(fh) {
            Some(Handle::Dir(d)) => Ok(d),
            _ => Err(Error::BadHandle),
        }
    }

    /// The inode number a listing shows: the node's own if the kernel knows
    /// it, otherwise a stable number derived from the node, so that listing
    /// allocates nothing (readdir gives the kernel no reference to forget).
    fn listed_ino(&self, node: &Node) -> Ino {
        self.inodes
            .ino_of(node)
            .unwrap_or_else(|| crate::inode::unassigned_ino(node))
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
            out.push(DirEntry {
                ino: self.listed_ino(&node),
                kind,
                name: name.to_string(),
            });
        };
        let node = self.node(ino)?;
        let temp_dir = edit::temp_dir(&node);
        match node {
            Node::Dir(p) => {
                let info = self.resolve_dir(&p).await?;
                let s = SecretName::new(&*p);
                if info.secret {
                    push(Node::Current(s.clone()), Kind::File, "current");
                    if self.has_previous(&s).await {
                        push(Node::Previous(s.clone()), Kind::File, "previous");
                    }
                    push(Node::StagesDir(s.clone()), Kind::Dir, "stages");
                    push(Node::Versions(s.clone()), Kind::Dir, "versions");
                    push(Node::JsonDir(s), Kind::Dir, "json");
                }
                let mut children = if p.is_empty() {
                    // The root lists what ListSecrets says; a failure is the caller's.
                    self.names.listing().await?.children(&p)
                } else {
                    self.names.listing_or_empty().await.0.children(&p)
                };
                children.extend(self.names.extra_children(&p));
                let children = self.access_listable(&p, children, caller).await; // [[access]] hook
                for c in children {
                    if info.secret && OWN_FILES.contains(&c.as_str()) {
                        continue;
                    }
                    let child = tree::join(&p, &c);
                    push(Node::Dir(Arc::from(child)), Kind::Dir, &c);
                }
            }
            Node::Versions(s) => {
                for v in self.version_list(&s).await?.iter() {
                    push(
                        Node::Version(s.clone(), v.id.clone()),
                        Kind::File,
                        v.id.as_str(),
                    );
                }
            }
            Node::StagesDir(s) => {
                for l in self.stage_listing(&s).await? {
                    let node = Node::StageFile(s.clone(), l.clone());
                    push(node, Kind::File, l.as_str());
                }
            }
            Node::JsonDir(s) => {
                for k in self.json_keys(&s).await? {
                    push(
                        Node::JsonKey(s.clone(), Arc::from(k.as_str())),
                        Kind::File,
                        &k,
                    );
                }
            }
            Node::StatsDir => {
                push(Node::StatsFile(Report::Json), Kind::File, STATS_FILE);
                push(
                    Node::StatsFile(Report::Prometheus),
                    Kind::File,
                    METRICS_FILE,
                );
                push(Node::RefreshFile, Kind::File, REFRESH_FILE);
                if self.has_templates() {
                    push(Node::RenderedDir, Kind::Dir, RENDERED_DIR);
                }
            }
            Node::RenderedDir => {
                for n in self.template_names() {
                    push(Node::Rendered(n.clone()), Kind::File, &n);
                }
            }
            _ => return Err(Error::NotDir),
        }
        // Editors' temporary files, where they may live.
        if let Some(dir) = temp_dir {
            for name in self.temps.names_in(&dir, caller.uid) {
                push(Node::Temp(dir.clone(), name.clone()), Kind::File, &name);
            }
        }
        Ok(out)
    }

    async fn version_list(&self, s: &SecretName) -> Result<Arc<Vec<ListedVersion>>> {
        let store = self.store.clone();
        let n = s.clone();
        Ok(self
            .version_ids
            .get(s, Some(self.cfg.ttl), move || async move {
                Ok(Arc::new(store.list_versions(&n).await?))
            })
            .await?
            .value)
    }

    /// The extended attributes a file has: `versions/` entries carry their
    /// staging labels (from the version listing, as fresh as the TTL).
    pub fn xattr_names(&self, ino: Ino) -> &'static [&'static str] {
        match self.inodes.node(ino) {
            Some(Node::Version(..)) => &[STAGES_XATTR],
            _ => &[],
        }
    }

    /// An extended attribute's value: `user.secretsfs.stages` of a
    /// `versions/` entry is its staging labels, comma-separated (empty
    /// when it has none). `Ok(None)`: no such attribute.
    pub async fn xattr(&self, ino: Ino, name: &str) -> Result<Option<Vec<u8>>> {
        let Some(Node::Version(s, id)) = self.inodes.node(ino) else {
            return Ok(None);
        };
        if name != STAGES_XATTR {
            return Ok(None);
        }
        let list = self.version_list(&s).await?;
        let v = list.iter().find(|v| v.id == id).ok_or(Error::NotFound)?;
        Ok(Some(v.stages.join(",").into_bytes()))
    }

    pub fn releasedir(&self, fh: u64) {
        self.handles.remove(fh);
    }

    /// Opens a file. A read handle pins one version from open to close.
    pub async fn open(&self, ino: Ino, flags: i32, pid: u32) -> Result<Opened> {
        // [[access]] hook: read-only mounts with access rules keep open mode.
        if self.cfg.read_only && !self.cfg.access.open_mode() {
            // ENOSYS puts the kernel in no-open mode: cached pages are then
            // served with no round trip to the daemon.
            return Err(Error::NotImplemented);
        }
        let node = self.node(ino)?;
        let writing = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let (name, sel) = match node {
            Node::Current(s) if writing => return self.open_write(ino, &s, flags, pid).await,
            Node::StageFile(s, l) if writing => {
                return self.open_stage_write(ino, &s, &l, flags, pid).await;
            }
            Node::JsonKey(s, k) if writing => {
                return self.open_json_write(ino, &s, &k, flags, pid).await;
            }
            Node::JsonKey(s, k) => return self.open_json_read(&s, &k).await,
            Node::Previous(_) | Node::Version(..) | Node::StatsFile(_) if writing => {
                return Err(Error::Refused("read-only file"));
            }
            Node::Current(s) => (s, Selector::Stage(Stage::Current)),
            Node::Previous(s) => (s, Selector::Stage(Stage::Previous)),
            Node::Version(s, id) => (s, Selector::Id(id)),
            Node::StageFile(s, l) => {
                let id = self.stage_id(&s, &l).await?;
                (s, Selector::Id(id))
            }
            Node::StatsFile(r) => {
                let fh = self.handles.add(Handle::Plain(Arc::from(self.report(r))));
                return Ok(Opened {
                    fh,
                    keep_cache: false,
                    direct_io: true,
                    no_flush: true,
                });
            }
            Node::Temp(d, n) => return self.open_temp(&(d, n), flags, pid),
            Node::Rendered(n) => return self.open_rendered(ino, &n, writing).await,
            _ => return Err(Error::IsDir),
        };
        let (version, _) = self.version(&name, sel).await?;
        Ok(self.read_handle(version))
    }

    /// A read handle pinning `version`. Direct I/O, so that every read is
    /// answered from this version by construction: the page cache is one
    /// per inode and bounded by one size per inode, which another handle's
    /// write or a newer version changes (see kernel.rs).
    fn read_handle(&self, version: Arc<SecretVersion>) -> Opened {
        let fh = self.handles.add(Handle::Read(version));
        // A read handle has nothing to commit: no FLUSH at close.
        Opened {
            fh,
            keep_cache: false,
            direct_io: true,
            no_flush: true,
        }
    }

    /// A READ. `direct`: from read(2)/pread(2) on a handle (the kernel
    /// sends a lock owner with those); otherwise a fill of the page cache
    /// (a map's fault, or any read on a read-only mount, which has no
    /// handles), answered from the version whose size the kernel holds,
    /// whichever handle it came through, so that the pages and the size
    /// agree and every map shows one value.
    pub async fn read(
        &self,
        ino: Ino,
        fh: u64,
        offset: u64,
        size: u32,
        direct: bool,
    ) -> Result<Vec<u8>> {
        match self.handles.get(fh) {
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
                if let Some(v) = self.kernel.told(ino) {
                    return Ok(slice(v.value.as_bytes(), offset, size));
                }
            }
        }
        // Nothing told yet: the inode's current version.
        let (name, sel) = match self.node(ino)? {
            Node::Current(s) => (s, Selector::Stage(Stage::Current)),
            Node::Previous(s) => (s, Selector::Stage(Stage::Previous)),
            Node::Version(s, id) => (s, Selector::Id(id)),
            Node::StageFile(s, l) => {
                let id = self.stage_id(&s, &l).await?;
                (s, Selector::Id(id))
            }
            Node::StatsFile(r) => return Ok(slice(&self.report(r), offset, size)),
            Node::JsonKey(s, k) => return self.json_read(&s, &k, offset, size).await,
            Node::Rendered(n) => return self.read_rendered(&n, offset, size).await,
            _ => return Err(Error::BadHandle),
        };
        let (v, _) = self.version(&name, sel).await?;
        Ok(slice(v.value.as_bytes(), offset, size))
    }

    pub async fn release(&self, fh: u64) {
        match self.handles.remove(fh) {
            Some(Handle::Write(w)) => self.release_write(w).await,
            Some(Handle::Temp(t)) => self.release_temp(t).await,
            _ => {}
        }
    }
}
