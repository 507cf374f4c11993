//! The filesystem's side of the change hooks: each interval, the watched
//! secrets are revalidated with DescribeSecret (no value, no decrypt); a
//! secret whose AWSCURRENT moved is dropped from the caches, the kernel's
//! included, so the next read fetches it, and its hook runs.

use futures::StreamExt;

use super::core::Core;
use crate::store::{SecretName, Selector, Stage, StoreErrorKind};

/// DescribeSecret calls one tick has open at once (the store's gate
/// bounds the whole daemon's too).
const TICK_CALLS: usize = 8;

/// How long a tick waits for the kernel to drop what changed before its
/// hooks run.
const DELIVERY_BOUND: std::time::Duration = std::time::Duration::from_secs(1);

impl Core {
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
                    match self.current_id(&name).await {
                        Ok(now) => {
                            w.answered(&name);
                            if let Some(now) = now
                                && w.observed(&name, &before, &now)
                            {
                                tracing::info!(secret = %name, version = %now, "AWSCURRENT moved");
                                self.forget_secret(&name);
                            }
                        }
                        Err(e) if e.kind == StoreErrorKind::NotFound => {
                            w.answered(&name);
                            w.gone(&name);
                        }
                        Err(e) => w.failed(&name, &e),
                    }
                }
            })
            .await;
        // The kernel drops the changed secrets' files before any hook
        // reads them (invalidations are delivered by their own thread).
        self.kernel.delivered(DELIVERY_BOUND).await;
        w.run_pending(hook)
    }

    /// AWSCURRENT's version id, from DescribeSecret (no decrypt); where
    /// that is denied, from GetSecretValue, as reads do.
    async fn current_id(
        &self,
        name: &SecretName,
    ) -> crate::store::StoreResult<Option<crate::store::VersionId>> {
        match self.store.describe(name).await {
            Ok(d) => Ok(d.with_stage(Stage::Current).cloned()),
            Err(e) if e.kind == StoreErrorKind::AccessDenied => Ok(self
                .store
                .get_value(name, &Selector::Stage(Stage::Current))
                .await?
                .map(|v| v.id.clone())),
            Err(e) => Err(e),
        }
    }

    /// The daemon stops: hook runs going on are killed.
    pub fn stop_hooks(&self) {
        if let Some(w) = &self.watch {
            w.kill_runs();
        }
    }

    /// The watch task's intervals, one per hook.
    pub fn hook_intervals(&self) -> Vec<std::time::Duration> {
        self.cfg.hooks.iter().map(|h| h.interval).collect()
    }

    /// Drops what is cached of a secret's labels (values, description,
    /// version list) and the kernel's copies, so the next read asks: what
    /// a refresh of it does.
    pub(super) fn forget_secret(&self, name: &SecretName) {
        self.refresh_secret(name);
    }

    /// A put of this mount made `id` AWSCURRENT: the hooks hear of it.
    pub(super) fn hooks_put(&self, name: &SecretName, id: &crate::store::VersionId) {
        if let Some(w) = &self.watch {
            w.put(name, id);
        }
    }
}
