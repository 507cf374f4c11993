//! Rendering, a service of `Core`: a template's render as it stands now
//! (the last one while every secret it used is at the same version,
//! otherwise a new one, one at a time per template), its passes over the
//! secrets it reads (through the same cache as the files), and the
//! permissions its files ask of the directories above them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use super::engine::{self, Cause, Failure, Fetched, Key, Pass};
use super::{DepState, MAX_PASSES, MAX_SECRETS, Outcome, Render, Slot, TemplateDef};
use crate::error::{Error, Result};
use crate::fs::core::Core;
use crate::fs::types::Attr;
use crate::inode::{Ino, Node};
use crate::store::{SecretName, Selector};

/// Search permission for group and others on the way to rendered files.
const SEARCH: u16 = 0o011;

impl Core {
    /// SIGHUP: the config file's templates, re-read.
    pub fn reload_templates(&self, defs: Vec<TemplateDef>) {
        let n = defs.len();
        self.templates.replace(defs);
        tracing::info!(templates = n, "templates reloaded");
    }

    /// `.secretsfs/` and `rendered/`: traversable by the rendered files'
    /// owners when there are templates.
    pub(in crate::fs) fn reserved_dir_attr(&self, ino: Ino) -> Attr {
        let mut a = self.dir_attr(ino, false);
        if self.templates.any() {
            a.perm = 0o700 | SEARCH;
        }
        a
    }

    /// The root's extra permission: search for group and others when a
    /// rendered file is theirs (listing the root stays the owner's).
    pub(in crate::fs) fn root_search_bits(&self) -> u16 {
        if self.templates.shared(self.cfg.uid, self.cfg.gid) {
            SEARCH
        } else {
            0
        }
    }

    pub(in crate::fs) fn has_templates(&self) -> bool {
        self.templates.any()
    }

    pub(in crate::fs) fn has_template(&self, name: &str) -> bool {
        self.templates.get(name).is_some()
    }

    pub(in crate::fs) fn template_names(&self) -> Vec<Arc<str>> {
        self.templates.names()
    }

    /// The template's render as it stands now: the last one while every
    /// secret it used is at the same version, otherwise a new one.
    /// The secrets the render an open would serve now reads, for the
    /// `[[access]]` rules.
    pub(in crate::fs) async fn rendered_secrets(&self, name: &str) -> Result<Vec<SecretName>> {
        let (_, r) = self.rendered(name).await?;
        let mut secrets: Vec<SecretName> = r.deps.iter().map(|((s, _), _)| s.clone()).collect();
        secrets.sort();
        secrets.dedup();
        Ok(secrets)
    }

    pub(in crate::fs) async fn rendered(&self, name: &str) -> Result<(Arc<Slot>, Arc<Render>)> {
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
    use crate::fs::{Caller, Fs, FsConfig, Invalidate, RENDERED_DIR};
    use crate::inode::ROOT;
    use crate::stats::{ApiOp, Stats};
    use crate::store::SecretBytes;
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
        let mut def = s.fs.core.templates.get("t").unwrap().def.clone();
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
