//! Rendered files: templates declared in the config file, served read-only
//! at `.secretsfs/rendered/<name>`, rendered from secrets in memory only.
//! `Templates` owns the loaded templates and each one's last render; the
//! `Fs` methods below fetch what a render needs through the value cache
//! (same TTL, stale and single-flight rules as `current`) and re-render
//! when a secret it used moved to another version.

mod def;
mod engine;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::{Mutex, RwLock};

use super::Fs;
use super::handles::Handle;
use super::types::{Attr, Entry, Kind, Opened};
use crate::error::{Error, Result};
use crate::inode::{Ino, Node};
use crate::store::{SecretBytes, SecretVersion, Selector, VersionId};
use engine::{Cause, Failure, Fetched, Key, Pass};

pub use def::{TemplateDef, resolve_all};

/// The directory under `.secretsfs/` that holds the rendered files.
pub const RENDERED_DIR: &str = "rendered";
/// Rounds of fetch-then-render before a template is given up on (each
/// round fetches every secret the last one found missing).
const MAX_PASSES: usize = 65;
/// Distinct secrets (with their stage) one template may read.
const MAX_SECRETS: usize = 64;

/// What a render gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Bytes(Arc<SecretBytes>),
    Failed(Failure),
}

/// What a secret a render used was at the time.
#[derive(Clone, Debug, PartialEq, Eq)]
enum DepState {
    Version(VersionId),
    NoStage,
    NoSecret,
    OutOfScope,
}

impl From<&Fetched> for DepState {
    fn from(f: &Fetched) -> Self {
        match f {
            Fetched::Value(v) => DepState::Version(v.id.clone()),
            Fetched::NoStage => DepState::NoStage,
            Fetched::NoSecret => DepState::NoSecret,
            Fetched::OutOfScope => DepState::OutOfScope,
        }
    }
}

/// One render: its outcome, the secrets it used and their versions, and
/// when its bytes last changed (the file's mtime).
#[derive(Debug)]
pub struct Render {
    pub outcome: Outcome,
    deps: Vec<(Key, DepState)>,
    pub mtime: SystemTime,
    /// The bytes as a version the kernel view can hold (page-cache fills
    /// are answered from it), made at the first lookup.
    shown: std::sync::OnceLock<Arc<SecretVersion>>,
}

impl Render {
    /// The rendered bytes as one version (its id names this render).
    fn shown(&self, bytes: &Arc<SecretBytes>) -> Arc<SecretVersion> {
        self.shown
            .get_or_init(|| {
                let id = VersionId::new(format!("render-{:p}", Arc::as_ptr(bytes)));
                Arc::new(SecretVersion::new(id, (**bytes).clone(), self.mtime))
            })
            .clone()
    }

    /// The bytes, or the failure as the error every open and read gets.
    fn bytes(&self) -> Result<Arc<SecretBytes>> {
        match &self.outcome {
            Outcome::Bytes(b) => Ok(b.clone()),
            Outcome::Failed(f) => Err(Error::Template(f.to_string())),
        }
    }

    fn size(&self) -> u64 {
        match &self.outcome {
            Outcome::Bytes(b) => b.len() as u64,
            Outcome::Failed(_) => 0,
        }
    }
}

/// One loaded template.
pub struct Slot {
    pub def: TemplateDef,
    /// Its syntax error, found at load.
    syntax: Option<Failure>,
    last: Mutex<Option<Arc<Render>>>,
    /// One render at a time per template; others wait and share it.
    turn: tokio::sync::Mutex<()>,
}

impl Slot {
    fn load(def: TemplateDef) -> Self {
        let syntax = engine::check(&def.name, &def.text).err();
        if let Some(f) = &syntax {
            tracing::warn!(
                template = %def.name,
                source = %def.source.display(),
                line = f.line.unwrap_or(0),
                error = %f,
                "template has a syntax error; its file answers EIO until it is fixed (then SIGHUP)"
            );
        }
        Self {
            def,
            syntax,
            last: Mutex::new(None),
            turn: tokio::sync::Mutex::new(()),
        }
    }
}

/// The templates of the mount, by name.
#[derive(Default)]
pub struct Templates {
    slots: RwLock<BTreeMap<Arc<str>, Arc<Slot>>>,
}

impl Templates {
    pub fn new(defs: &[TemplateDef]) -> Self {
        let t = Self::default();
        t.replace(defs.to_vec());
        t
    }

    /// Loads a new set (SIGHUP). A template whose definition did not
    /// change keeps its last render; the others render afresh.
    pub fn replace(&self, defs: Vec<TemplateDef>) {
        let old = self.slots.read().clone();
        let new = defs
            .into_iter()
            .map(|def| {
                let slot = match old.get(&def.name) {
                    Some(s) if s.def == def => s.clone(),
                    _ => Arc::new(Slot::load(def)),
                };
                (slot.def.name.clone(), slot)
            })
            .collect();
        *self.slots.write() = new;
    }

    pub fn get(&self, name: &str) -> Option<Arc<Slot>> {
        self.slots.read().get(name).cloned()
    }

    pub fn names(&self) -> Vec<Arc<str>> {
        self.slots.read().keys().cloned().collect()
    }

    pub fn any(&self) -> bool {
        !self.slots.read().is_empty()
    }

    /// Whether some rendered file is for someone other than the mount's
    /// owner (another owner or group, or group/other read bits): then the
    /// directories on the way must let others through.
    pub fn shared(&self, uid: u32, gid: u32) -> bool {
        self.slots.read().values().any(|s| {
            s.def.uid.is_some_and(|u| u != uid)
                || s.def.gid.is_some_and(|g| g != gid)
                || s.def.mode & 0o044 != 0
        })
    }
}

/// Search permission for group and others on the way to rendered files.
const SEARCH: u16 = 0o011;

impl Fs {
    /// SIGHUP: the config file's templates, re-read.
    pub fn reload_templates(&self, defs: Vec<TemplateDef>) {
        let n = defs.len();
        self.templates.replace(defs);
        tracing::info!(templates = n, "templates reloaded");
    }

    /// `.secretsfs/` and `rendered/`: traversable by the rendered files'
    /// owners when there are templates.
    pub(super) fn reserved_dir_attr(&self, ino: Ino) -> Attr {
        let mut a = self.dir_attr(ino, false);
        if self.templates.any() {
            a.perm = 0o700 | SEARCH;
        }
        a
    }

    /// The root's extra permission: search for group and others when a
    /// rendered file is theirs (listing the root stays the owner's).
    pub(super) fn root_search_bits(&self) -> u16 {
        if self.templates.shared(self.cfg.uid, self.cfg.gid) {
            SEARCH
        } else {
            0
        }
    }

    pub(super) fn has_templates(&self) -> bool {
        self.templates.any()
    }

    pub(super) fn has_template(&self, name: &str) -> bool {
        self.templates.get(name).is_some()
    }

    pub(super) fn template_names(&self) -> Vec<Arc<str>> {
        self.templates.names()
    }

    fn rendered_attr(&self, ino: Ino, def: &TemplateDef, r: &Render) -> Attr {
        Attr {
            ino,
            kind: Kind::File,
            size: r.size(),
            mtime: r.mtime,
            perm: def.mode,
            uid: def.uid.unwrap_or(self.cfg.uid),
            gid: def.gid.unwrap_or(self.cfg.gid),
        }
    }

    /// Attributes of a rendered file, rendered now if a secret it used
    /// moved: never cached by the kernel, so stat's size is always that of
    /// what an open reads now. A failed render is a file of size 0 whose
    /// opens fail with EIO.
    /// A rendered file's attributes, telling the kernel view which render
    /// they describe: page-cache fills (maps, read-only mounts) are answered
    /// from that render, whose size the kernel then holds.
    pub(super) async fn rendered_entry(&self, ino: Ino, name: &str) -> Result<Entry> {
        let (slot, r) = self.rendered(name).await?;
        let mut attr = self.rendered_attr(ino, &slot.def, &r);
        if let Ok(bytes) = r.bytes() {
            let told = self.kernel.tell(ino, &r.shown(&bytes));
            attr.size = told.value.len() as u64;
        }
        Ok(Entry::uncached(attr))
    }

    /// A read handle pins the bytes rendered at open; direct I/O, so that
    /// no page cache of older bytes is ever served.
    pub(super) async fn open_rendered(
        &self,
        ino: Ino,
        name: &str,
        writing: bool,
    ) -> Result<Opened> {
        if writing {
            return Err(Error::Refused("read-only file"));
        }
        let (slot, r) = self.rendered(name).await?;
        let bytes = r.bytes()?;
        let attr = self.rendered_attr(ino, &slot.def, &r);
        let fh = self.handles.add(Handle::Rendered { bytes, attr });
        Ok(Opened {
            fh,
            keep_cache: false,
            direct_io: true,
            no_flush: true,
        })
    }

    /// The secrets the render an open would serve now reads, for the
    /// `[[access]]` check.
    pub(super) async fn rendered_secrets(&self, name: &str) -> Result<Vec<String>> {
        let (_, r) = self.rendered(name).await?;
        let mut secrets: Vec<String> = r.deps.iter().map(|((s, _), _)| s.to_string()).collect();
        secrets.sort();
        secrets.dedup();
        Ok(secrets)
    }

    /// A read with no handle (a read-only mount, in no-open mode).
    pub(super) async fn read_rendered(
        &self,
        name: &str,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>> {
        let (_, r) = self.rendered(name).await?;
        Ok(super::types::slice(r.bytes()?.as_bytes(), offset, size))
    }

    /// The template's render as it stands now: the last one while every
    /// secret it used is at the same version, otherwise a new one.
    async fn rendered(&self, name: &str) -> Result<(Arc<Slot>, Arc<Render>)> {
        let slot = self.templates.get(name).ok_or(Error::NotFound)?;
        let r = {
            let _turn = slot.turn.lock().await;
            let last = slot.last.lock().clone();
            match last {
                Some(last) if !self.deps_moved(&last.deps).await? => last,
                last => self.render_now(&slot, last).await?,
            }
        };
        Ok((slot, r))
    }

    async fn render_now(&self, slot: &Slot, last: Option<Arc<Render>>) -> Result<Arc<Render>> {
        let (outcome, deps) = self.render_passes(slot, last.as_deref()).await?;
        let changed = last.as_ref().is_none_or(|l| l.outcome != outcome);
        let mtime = match &last {
            Some(l) if !changed => l.mtime,
            _ => SystemTime::now(),
        };
        self.note_render(slot, &outcome);
        let r = Arc::new(Render {
            outcome,
            deps,
            mtime,
            shown: std::sync::OnceLock::new(),
        });
        *slot.last.lock() = Some(r.clone());
        // A read-only mount reads through the page cache: drop what it holds.
        if changed && let Some(ino) = self.inodes.ino_of(&Node::Rendered(slot.def.name.clone())) {
            self.kernel.changed(ino);
        }
        Ok(r)
    }

    /// One log line per failing render, naming the template and the line;
    /// never a value (the failure is built from names the source holds).
    fn note_render(&self, slot: &Slot, outcome: &Outcome) {
        match outcome {
            Outcome::Bytes(b) => {
                self.stats.rendered();
                tracing::debug!(template = %slot.def.name, bytes = b.len(), "template rendered");
            }
            Outcome::Failed(f) => {
                self.stats.render_failed();
                // A syntax error was logged when the template was loaded.
                if slot.syntax.is_none() {
                    tracing::warn!(
                        template = %slot.def.name,
                        line = f.line.unwrap_or(0),
                        error = %f,
                        "template failed to render; its file answers EIO"
                    );
                }
            }
        }
    }

    /// Fetch, render, and again with what the pass found missing: the
    /// secrets the last render used are fetched before the first pass, so
    /// an unchanged template renders in one.
    async fn render_passes(
        &self,
        slot: &Slot,
        last: Option<&Render>,
    ) -> Result<(Outcome, Vec<(Key, DepState)>)> {
        if let Some(f) = &slot.syntax {
            return Ok((Outcome::Failed(f.clone()), Vec::new()));
        }
        let mut fetched: HashMap<Key, Fetched> = HashMap::new();
        let mut want: HashSet<Key> = last
            .map(|l| l.deps.iter().map(|(k, _)| k.clone()).collect())
            .unwrap_or_default();
        for _ in 0..MAX_PASSES {
            let keys: Vec<Key> = want
                .into_iter()
                .filter(|k| !fetched.contains_key(k))
                .collect();
            if fetched.len() + keys.len() > MAX_SECRETS {
                let f = Failure {
                    line: None,
                    cause: Cause::TooManySecrets(MAX_SECRETS),
                };
                return Ok((Outcome::Failed(f), deps_of(fetched.keys(), &fetched)));
            }
            let got = futures::future::try_join_all(keys.iter().map(|k| self.fetch_dep(k))).await?;
            fetched.extend(keys.into_iter().zip(got));
            match engine::render(&slot.def.name, &slot.def.text, Arc::new(fetched.clone())) {
                Pass::Need(n) => want = n,
                Pass::Done { bytes, used } => {
                    return Ok((Outcome::Bytes(Arc::new(bytes)), deps_of(&used, &fetched)));
                }
                Pass::Failed { failure, used } => {
                    return Ok((Outcome::Failed(failure), deps_of(&used, &fetched)));
                }
            }
        }
        let f = Failure {
            line: None,
            cause: Cause::TooManyPasses(MAX_PASSES),
        };
        Ok((Outcome::Failed(f), deps_of(fetched.keys(), &fetched)))
    }

    /// Whether a secret a render used is no longer what it was. Within the
    /// TTL this is answered from the cache, with no API call.
    async fn deps_moved(&self, deps: &[(Key, DepState)]) -> Result<bool> {
        let now =
            futures::future::try_join_all(deps.iter().map(|(k, _)| self.fetch_dep(k))).await?;
        Ok(deps
            .iter()
            .zip(&now)
            .any(|((_, was), now)| *was != DepState::from(now)))
    }

    /// A secret for a template, through the value cache. A missing secret
    /// is remembered as missing (the namespace's negative cache), so that
    /// a template naming one does not call the API at every open; a
    /// secret outside the mount's scope is not fetched at all. Backend
    /// trouble is the caller's error, as for `current`.
    async fn fetch_dep(&self, (name, stage): &Key) -> Result<Fetched> {
        // By name only: an ARN would be cached under another key than the
        // name this mount's writes refresh, and go stale after them.
        if name.as_str().starts_with("arn:")
            || !self
                .names
                .in_scope(name.as_str(), self.cfg.secrets.as_deref())
        {
            return Ok(Fetched::OutOfScope);
        }
        if self.names.negative_hit(name.as_str()) {
            return Ok(Fetched::NoSecret);
        }
        match self.value(name, Selector::Stage(*stage)).await {
            Ok(c) => Ok(c.value.map_or(Fetched::NoStage, Fetched::Value)),
            Err(Error::NotFound) => {
                self.names.remember_missing(name.as_str());
                Ok(Fetched::NoSecret)
            }
            Err(e) => Err(e),
        }
    }
}

fn deps_of<'a>(
    keys: impl IntoIterator<Item = &'a Key>,
    fetched: &HashMap<Key, Fetched>,
) -> Vec<(Key, DepState)> {
    keys.into_iter()
        .filter_map(|k| fetched.get(k).map(|f| (k.clone(), DepState::from(f))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{Caller, FsConfig, Invalidate};
    use crate::inode::ROOT;
    use crate::stats::{ApiOp, Stats};
    use crate::store::local::LocalStore;
    use crate::store::{Instrumented, SecretName, SecretStore};
    use std::time::Duration;

    struct NoInval;
    impl Invalidate for NoInval {
        fn inval_inode(&self, _ino: Ino) {}
    }

    const ME: Caller = Caller { pid: 1, uid: 0 };
    const TTL: Duration = Duration::from_secs(60);

    struct Setup {
        fs: Arc<Fs>,
        stats: Arc<Stats>,
        store: Arc<dyn SecretStore>,
        _dir: tempfile::TempDir,
    }

    async fn setup(template: &str, secrets: &[(&str, &str)]) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(Stats::default());
        let store: Arc<dyn SecretStore> = Arc::new(Instrumented::new(
            LocalStore::open(dir.path()).unwrap(),
            stats.clone(),
            4,
        ));
        for (n, v) in secrets {
            put(&store, n, v, true).await;
        }
        let mut cfg = FsConfig::new(TTL);
        cfg.templates = vec![TemplateDef {
            name: Arc::from("t"),
            source: "t.j2".into(),
            text: Arc::from(template),
            uid: None,
            gid: None,
            mode: 0o400,
        }];
        let fs = Fs::new(cfg, store.clone(), stats.clone(), Arc::new(NoInval));
        Setup {
            fs,
            stats,
            store,
            _dir: dir,
        }
    }

    async fn put(store: &Arc<dyn SecretStore>, name: &str, value: &str, create: bool) {
        let (n, v) = (
            SecretName::new(name),
            SecretBytes::new(value.as_bytes().to_vec()),
        );
        let token = uuid::Uuid::new_v4().to_string();
        if create {
            store.create_secret(&n, &v, &token).await.unwrap();
        } else {
            store.put_value(&n, &v, &token).await.unwrap();
        }
    }

    async fn read(fs: &Fs) -> Result<String> {
        let mut ino = ROOT;
        for c in [".secretsfs", RENDERED_DIR, "t"] {
            ino = fs.lookup(ino, c, ME).await?.attr.ino;
        }
        let size = fs.getattr(ino, None).await?.attr.size;
        let o = fs.open(ino, libc::O_RDONLY, 1).await?;
        assert!(o.direct_io && !o.keep_cache);
        let bytes = fs.read(ino, o.fh, 0, 1 << 20, true).await?;
        fs.release(o.fh).await;
        assert_eq!(
            bytes.len() as u64,
            size,
            "stat's size is what an open reads"
        );
        Ok(String::from_utf8(bytes).unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn an_unchanged_template_renders_once_and_a_moved_secret_renders_again() {
        let s = setup(
            "{{ secret('a') }}-{{ (secret('b') | from_json).k }}",
            &[("a", "1"), ("b", r#"{"k":"x"}"#)],
        )
        .await;
        let gets = || s.stats.api_calls(ApiOp::GetSecretValue);
        let g0 = gets();
        assert_eq!(read(&s.fs).await.unwrap(), "1-x");
        assert_eq!(gets() - g0, 2, "one GetSecretValue per secret");
        for _ in 0..5 {
            assert_eq!(read(&s.fs).await.unwrap(), "1-x");
        }
        assert_eq!(gets() - g0, 2, "within the TTL: from the cache");
        put(&s.store, "a", "2", false).await;
        assert_eq!(read(&s.fs).await.unwrap(), "1-x", "within the TTL");
        let renders = s.stats.renders();
        tokio::time::advance(TTL + Duration::from_secs(1)).await;
        assert_eq!(read(&s.fs).await.unwrap(), "2-x");
        assert_eq!(gets() - g0, 3, "only the secret that moved is read again");
        assert_eq!(s.stats.renders(), renders + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_render_answers_eio_until_its_secret_is_fixed() {
        let s = setup("{{ (secret('a') | from_json).k }}", &[("a", r#"{"j":1}"#)]).await;
        let e = read(&s.fs).await.unwrap_err();
        assert_eq!(e.errno(), libc::EIO);
        assert!(e.to_string().contains("missing key \"k\""), "{e}");
        put(&s.store, "a", r#"{"k":"ok"}"#, false).await;
        tokio::time::advance(TTL + Duration::from_secs(1)).await;
        assert_eq!(read(&s.fs).await.unwrap(), "ok");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_renders_a_changed_source_and_keeps_an_unchanged_one() {
        let s = setup("v={{ secret('a') }}", &[("a", "1")]).await;
        assert_eq!(read(&s.fs).await.unwrap(), "v=1");
        let renders = s.stats.renders();
        let mut def = s.fs.templates.get("t").unwrap().def.clone();
        s.fs.reload_templates(vec![def.clone()]);
        assert_eq!(read(&s.fs).await.unwrap(), "v=1");
        assert_eq!(s.stats.renders(), renders, "unchanged: kept");
        def.text = Arc::from("w={{ secret('a') }}");
        s.fs.reload_templates(vec![def]);
        assert_eq!(read(&s.fs).await.unwrap(), "w=1");
        s.fs.reload_templates(vec![]);
        assert!(read(&s.fs).await.is_err(), "removed");
    }
}
