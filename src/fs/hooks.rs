//! The filesystem's side of the change hooks: each interval, the watched
//! secrets are revalidated with DescribeSecret (no value, no decrypt); a
//! secret whose AWSCURRENT moved is dropped from the caches, the kernel's
//! included, so the next read fetches it, and its hook runs.

use futures::StreamExt;

use super::Fs;
use crate::inode::Node;
use crate::store::{SecretName, Selector, Stage, StoreErrorKind};

/// DescribeSecret calls one tick has open at once (the store's gate
/// bounds the whole daemon's too).
const TICK_CALLS: usize = 8;

impl Fs {
    /// One interval of hook `hook`: revalidate, then run the hook once per
    /// changed secret. Returns the runs started (tests wait for them).
    pub async fn watch_tick(&self, hook: usize) -> Vec<tokio::task::JoinHandle<()>> {
        let Some(w) = self.watch.clone() else {
            return Vec::new();
        };
        let watched = w.watched(hook);
        futures::stream::iter(watched)
            .for_each_concurrent(TICK_CALLS, |(name, before)| {
                let w = w.clone();
                async move {
                    match self.store.describe(&name).await {
                        Ok(d) => match d.with_stage(Stage::Current) {
                            Some(now) if w.observed(&name, &before, now) => {
                                tracing::info!(secret = %name, version = %now, "AWSCURRENT moved");
                                self.forget_secret(&name);
                            }
                            _ => {}
                        },
                        Err(e) if e.kind == StoreErrorKind::NotFound => w.gone(&name),
                        Err(e) => {
                            tracing::debug!(secret = %name, error = %e, "watch: revalidation failed; next interval");
                        }
                    }
                }
            })
            .await;
        w.run_pending(hook)
    }

    /// The watch task's intervals, one per hook.
    pub fn hook_intervals(&self) -> Vec<std::time::Duration> {
        self.cfg.hooks.iter().map(|h| h.interval).collect()
    }

    /// Drops what is cached of a secret's labels (values, description,
    /// version list) and the kernel's copies, so the next read asks.
    pub(super) fn forget_secret(&self, name: &SecretName) {
        for stage in [Stage::Current, Stage::Previous] {
            self.values.remove(&(name.clone(), Selector::Stage(stage)));
        }
        self.descs.forget(name);
        self.version_ids.remove(name);
        self.label_files_changed(name);
    }

    /// The kernel's copies of every file that shows a version of `name`
    /// chosen by label (`current`, `previous`, `json/*`) are old.
    pub(super) fn label_files_changed(&self, name: &SecretName) {
        let of_labels = |n: &Node| match n {
            Node::Current(s) | Node::Previous(s) | Node::JsonKey(s, _) | Node::StageFile(s, _) => {
                s == name
            }
            _ => false,
        };
        for ino in self.inodes.matching(of_labels) {
            self.kernel.changed(ino);
        }
    }

    /// A put of this mount made `id` AWSCURRENT: the hooks hear of it.
    pub(super) fn hooks_put(&self, name: &SecretName, id: &crate::store::VersionId) {
        if let Some(w) = &self.watch {
            w.put(name, id);
        }
    }
}
