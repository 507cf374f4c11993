//! `Core`: the owners of the filesystem's state, composed (the caches, the
//! namespace, open handles, the kernel's view per inode, writes, temporary
//! files, labels being created, templates, hooks, rules), and what every
//! view shares: reading a file's version through the cache (revalidated
//! with DescribeSecret), the attributes that tell the kernel which version
//! they describe, inode numbers for lookups and listings. It imports no
//! view and not the façade: they call down into it. Its other services
//! live beside the state they serve, as `impl Core` blocks: the put
//! pipeline and write handles (write.rs), "a secret changed" (coherence.rs),
//! change hooks (hooks.rs), rendering (templates/), ownership rules
//! (rules.rs).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::cache::{Cache, Cached};
use crate::error::{Error, Result};
use crate::inode::{Ino, InodeTable, Node, Report};
use crate::stats::Stats;
use crate::store::{
    Description, Label, ListedVersion, SecretName, SecretStore, SecretVersion, Selector, Stage,
    StoreResult, VersionId,
};
use crate::tree;
use futures::future::BoxFuture;

use super::describe::Descriptions;
use super::handles::{Handle, Handles};
use super::kernel::KernelView;
use super::namespace::{DirInfo, Namespace};
use super::puts::Writes;
use super::settings::{FOREVER, FsConfig, REVERIFY};
use super::stages::Stages;
use super::temp::Temps;

use super::types::{Attr, Entry, Invalidate, Kind, Opened, Sizes};

const DESCRIBE_NEEDED: &str = "stages/ needs secretsmanager:DescribeSecret";

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

pub struct Core {
    pub(super) cfg: FsConfig,
    pub(super) store: Arc<dyn SecretStore>,
    pub(super) stats: Arc<Stats>,
    pub(super) inodes: InodeTable,
    pub(super) values: Arc<Cache<ValueKey, Value>>,
    pub(super) version_ids: Arc<Cache<SecretName, Arc<Vec<ListedVersion>>>>,
    pub(super) descs: Arc<Descriptions>,
    pub(super) names: Namespace,
    pub(super) handles: Handles,
    pub(super) kernel: KernelView,
    pub(super) writes: Writes,
    pub(super) temps: Temps,
    pub(super) mounted_at: SystemTime,
    pub(super) stages: Stages,
    pub(super) watch: Option<Arc<crate::hooks::Watch>>,
    pub(super) templates: super::templates::Templates,
    /// The ownership rules in force; SIGHUP replaces them.
    pub(super) rules: parking_lot::RwLock<Arc<crate::rules::Rules>>,
}

impl Core {
    pub fn new(
        cfg: FsConfig,
        store: Arc<dyn SecretStore>,
        stats: Arc<Stats>,
        invalidator: Arc<dyn Invalidate>,
    ) -> Self {
        let bytes = cfg.cache_bytes.get();
        let watch = (!cfg.hooks.is_empty()).then(|| {
            crate::hooks::Watch::new(cfg.hooks.clone(), stats.clone(), cfg.mountpoint.clone())
        });
        Self {
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
            templates: super::templates::Templates::new(&cfg.templates),
            rules: parking_lot::RwLock::new(cfg.rules.clone()),
            cfg,
        }
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
    pub(super) fn fresh_write_handle(&self, ino: Ino, owner: u32) -> Option<Handle> {
        self.handles.all().into_iter().find(|h| match h {
            Handle::Write(w) => w.try_lock().is_ok_and(|st| st.is_fresh(ino, owner)),
            _ => false,
        })
    }

    /// The stats (JSON) or metrics (Prometheus text) file's content.
    pub(super) fn report(&self, r: Report) -> Vec<u8> {
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

    pub(super) fn node(&self, ino: Ino) -> Result<Node> {
        self.inodes.node(ino).ok_or(Error::NotFound)
    }

    // ---- data sources -------------------------------------------------

    pub(super) fn value_ttl(&self, sel: &Selector) -> Option<Duration> {
        match sel {
            Selector::Stage(_) => Some(self.cfg.ttl),
            Selector::Id(_) => None,
        }
    }

    pub(super) async fn value(&self, name: &SecretName, sel: Selector) -> Result<Cached<Value>> {
        let ttl = self.value_ttl(&sel);
        let fetch = self.value_fetch(name, &sel);
        let key = (name.clone(), sel.clone());
        let before = self.values.peek_any(&key).flatten();
        let got = self.values.get_with(&key, ttl, fetch).await;
        if let Ok(Cached { value: Some(v), .. }) = &got {
            self.renumbered(name, before.as_ref(), v);
        }
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
    pub(super) fn value_fetch(
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
    pub(super) async fn has_previous(&self, s: &SecretName) -> bool {
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
    pub(super) async fn version(
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
    pub(super) async fn resolve_dir(&self, path: &str) -> Result<DirInfo> {
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

    /// The secret's labels, from the cached description (the TTL).
    pub(super) async fn described(&self, s: &SecretName) -> Result<Arc<Description>> {
        self.descs
            .get(s)
            .await?
            .ok_or_else(|| Error::AccessDenied(DESCRIBE_NEEDED.into()))
    }

    /// The secret's labels as they are in Secrets Manager now.
    pub(super) async fn described_now(&self, s: &SecretName) -> Result<Arc<Description>> {
        self.descs
            .now(s)
            .await?
            .ok_or_else(|| Error::AccessDenied(DESCRIBE_NEEDED.into()))
    }

    /// The version id a label names (cached description).
    pub(super) async fn stage_id(
        &self,
        s: &SecretName,
        l: &Label,
    ) -> Result<crate::store::VersionId> {
        let d = self.described(s).await?;
        d.with_label(l).cloned().ok_or(Error::NotFound)
    }

    /// The version carrying `l` in Secrets Manager now, if one does; its
    /// value read by id (immutable, so a cached copy is exact).
    pub(super) async fn stage_now(
        &self,
        s: &SecretName,
        l: &Label,
    ) -> Result<Option<Arc<SecretVersion>>> {
        match self.described_now(s).await?.with_label(l) {
            Some(id) => Ok(Some(self.version(s, Selector::Id(id.clone())).await?.0)),
            None => Ok(None),
        }
    }

    // ---- attributes ---------------------------------------------------

    pub(super) fn dir_attr(&self, ino: Ino, writable: bool) -> Attr {
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

    pub(super) fn file_attr(&self, ino: Ino, size: u64, mtime: SystemTime, writable: bool) -> Attr {
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

    /// The attributes of a file showing version `v`, telling the kernel
    /// which version they describe (its caches go when that changes).
    pub(super) fn version_entry(
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
    pub(super) async fn by_id_entry(
        &self,
        ino: Ino,
        s: &SecretName,
        id: &VersionId,
        writable: bool,
    ) -> Result<Entry> {
        let key = (s.clone(), Selector::Id(id.clone()));
        if !self.cfg.read_only && self.values.peek_any(&key).flatten().is_none() {
            let listed = self.version_list(s).await.ok().and_then(|list| {
                let v = list
                    .iter()
                    .find(|v| &v.id == id || v.id.file_name() == id.as_str())?;
                Some(v.created.unwrap_or(self.mounted_at))
            });
            if let Some(created) = listed {
                return Ok(Entry::uncached(self.file_attr(ino, 0, created, writable)));
            }
        }
        let (v, ttl) = self.version(s, Selector::Id(id.clone())).await?;
        Ok(self.version_entry(ino, &v, ttl, writable))
    }

    pub(super) fn temp_attr(&self, ino: Ino, t: &super::temp::TempFile) -> Attr {
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

    pub fn forget(&self, ino: Ino, n: u64) {
        if self.inodes.forget(ino, n) {
            self.kernel.forget(ino);
        }
    }

    /// The inode number a listing shows: the node's own if the kernel knows
    /// it, otherwise a stable number derived from the node, so that listing
    /// allocates nothing (readdir gives the kernel no reference to forget).
    pub(super) fn listed_ino(&self, node: &Node) -> Ino {
        self.inodes
            .ino_of(node)
            .unwrap_or_else(|| crate::inode::unassigned_ino(node))
    }

    pub(super) async fn version_list(&self, s: &SecretName) -> Result<Arc<Vec<ListedVersion>>> {
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

    /// A read handle pinning `version`. Direct I/O, so that every read is
    /// answered from this version by construction: the page cache is one
    /// per inode and bounded by one size per inode, which another handle's
    /// write or a newer version changes (see kernel.rs).
    pub(super) fn read_handle(&self, version: Arc<SecretVersion>) -> Opened {
        let fh = self.handles.add(Handle::Read(version));
        // A read handle has nothing to commit: no FLUSH at close.
        Opened {
            fh,
            keep_cache: false,
            direct_io: true,
            no_flush: true,
        }
    }

    pub async fn release(&self, fh: u64) {
        match self.handles.remove(fh) {
            Some(Handle::Write(w)) => self.release_write(w).await,
            Some(Handle::Temp(t)) => self.release_temp(t).await,
            _ => {}
        }
    }
}
