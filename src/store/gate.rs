//! The gate every backend call passes: it bounds the calls in flight (a
//! cold `ls -R` of 10,000 secrets queues instead of opening 10,000
//! requests), counts each call per operation in `Stats`, and slows the whole
//! daemon down after throttling. It wraps any `SecretStore`, so a second
//! backend is gated and counted the same way with no change here.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{
    Description, Label, ListedVersion, SecretBytes, SecretName, SecretStore, SecretVersion,
    Selector, StoreErrorKind, StoreResult, VersionId,
};
use crate::stats::{ApiOp, Stats};

/// Every call to the backend passes here: at most `max_calls` are open at
/// once (a cold `ls -R` of 10,000 secrets queues instead of opening 10,000
/// requests), and each is counted in `Stats` (calls, failures, in flight).
///
/// Throttling slows the whole daemon down (adaptive backoff): each
/// throttled answer doubles a shared delay (from 200 ms up to 10 s), every
/// call waits a random part of it before starting (full jitter), and each
/// answer that is not throttled halves it.
pub struct Instrumented<S> {
    inner: S,
    stats: Arc<Stats>,
    gate: tokio::sync::Semaphore,
    backoff: parking_lot::Mutex<Duration>,
    /// The store counts each API call itself (one store operation may make
    /// several: Parameter Store's pages, revalidation's two calls).
    counted_inside: bool,
}

/// The shared delay after the first throttled answer, and its ceiling.
pub const BACKOFF_START: Duration = Duration::from_millis(200);
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Default bound on backend calls in flight.
pub const DEFAULT_MAX_CALLS: usize = 16;

/// One call in flight, for the stats; ended however the call ends
/// (answered, failed, or its caller gone).
struct InFlight<'a>(&'a Stats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.call_ended();
    }
}

impl<S: SecretStore> Instrumented<S> {
    pub fn new(inner: S, stats: Arc<Stats>, max_calls: usize) -> Self {
        let counted_inside = inner.count_calls_in(&stats);
        Self {
            inner,
            stats,
            gate: tokio::sync::Semaphore::new(max_calls.max(1)),
            backoff: parking_lot::Mutex::new(Duration::ZERO),
            counted_inside,
        }
    }

    /// The daemon-wide backoff after an answer: doubled by throttling,
    /// halved otherwise (gone below 50 ms).
    fn adapt(&self, throttled: bool) {
        let mut b = self.backoff.lock();
        let before = *b;
        *b = if throttled {
            (before * 2).clamp(BACKOFF_START, BACKOFF_MAX)
        } else if before < Duration::from_millis(100) {
            Duration::ZERO
        } else {
            before / 2
        };
        if throttled && before.is_zero() {
            tracing::warn!(
                "throttled by the backend; every call now waits up to 200 ms or more before it starts"
            );
        }
        self.stats.set_backoff(*b);
    }

    async fn call<T>(
        &self,
        op: ApiOp,
        call: impl std::future::Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        let backoff = *self.backoff.lock();
        if !backoff.is_zero() {
            tokio::time::sleep(backoff.mul_f64(fastrand::f64())).await;
        }
        let _permit = self.gate.acquire().await.expect("the gate is never closed");
        self.stats.call_started();
        let _in_flight = InFlight(&self.stats);
        let result = call.await;
        self.adapt(matches!(&result, Err(e) if e.kind == StoreErrorKind::Throttled));
        if !self.counted_inside {
            count(&self.stats, op, &result);
        }
        result
    }
}

/// One API call of `op` and its outcome, in `Stats`. NotFound answers a
/// question (a lookup of a name that does not exist yet: every editor's
/// temporary file): an answer, counted apart, so that an alert on
/// api_errors means something.
pub fn count<T>(stats: &Stats, op: ApiOp, result: &StoreResult<T>) {
    stats.api_call(op);
    match result {
        Ok(_) => stats.api_ok(op),
        Err(e) if e.kind == StoreErrorKind::NotFound => {
            stats.api_ok(op);
            stats.not_found();
        }
        Err(_) => stats.api_error(),
    }
}

#[async_trait]
impl<S: SecretStore> SecretStore for Instrumented<S> {
    async fn begin_write(
        &self,
        name: &SecretName,
    ) -> StoreResult<Option<crate::store::WriteGuard>> {
        self.inner.begin_write(name).await
    }
    async fn list_secrets(&self, prefix: Option<&str>) -> StoreResult<Vec<SecretName>> {
        self.call(self.inner.ops().list, self.inner.list_secrets(prefix))
            .await
    }
    async fn get_value(
        &self,
        name: &SecretName,
        selector: &Selector,
    ) -> StoreResult<Option<SecretVersion>> {
        self.call(self.inner.ops().get, self.inner.get_value(name, selector))
            .await
    }
    async fn list_version_ids(&self, name: &SecretName) -> StoreResult<Vec<VersionId>> {
        self.call(self.inner.ops().versions, self.inner.list_version_ids(name))
            .await
    }
    async fn list_versions(&self, name: &SecretName) -> StoreResult<Vec<ListedVersion>> {
        self.call(self.inner.ops().versions, self.inner.list_versions(name))
            .await
    }
    async fn describe(&self, name: &SecretName) -> StoreResult<Description> {
        self.call(self.inner.ops().describe, self.inner.describe(name))
            .await
    }
    async fn put_value(
        &self,
        name: &SecretName,
        value: &SecretBytes,
        token: &str,
    ) -> StoreResult<VersionId> {
        self.call(
            self.inner.ops().put,
            self.inner.put_value(name, value, token),
        )
        .await
    }
    async fn create_secret(
        &self,
        name: &SecretName,
        value: &SecretBytes,
        token: &str,
    ) -> StoreResult<VersionId> {
        self.call(
            self.inner.ops().create,
            self.inner.create_secret(name, value, token),
        )
        .await
    }
    async fn put_value_staged(
        &self,
        name: &SecretName,
        value: &SecretBytes,
        token: &str,
        stages: &[Label],
    ) -> StoreResult<VersionId> {
        self.call(
            self.inner.ops().put,
            self.inner.put_value_staged(name, value, token, stages),
        )
        .await
    }
    async fn update_stage(
        &self,
        name: &SecretName,
        label: &Label,
        move_to: Option<&VersionId>,
        remove_from: Option<&VersionId>,
    ) -> StoreResult<()> {
        self.call(
            self.inner.ops().label,
            self.inner.update_stage(name, label, move_to, remove_from),
        )
        .await
    }
    fn ops(&self) -> &'static super::Ops {
        self.inner.ops()
    }
    fn count_calls_in(&self, stats: &Arc<Stats>) -> bool {
        self.inner.count_calls_in(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// Answers every call after 100 ms, throttled while `throttle` is set;
    /// counts the calls open at once.
    #[derive(Default)]
    struct Slow {
        throttle: AtomicBool,
        open: AtomicUsize,
        peak: AtomicUsize,
    }

    impl Slow {
        async fn answer<T>(&self, v: T) -> StoreResult<T> {
            let now = self.open.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.open.fetch_sub(1, Ordering::SeqCst);
            if self.throttle.load(Ordering::SeqCst) {
                return Err(StoreError::new(StoreErrorKind::Throttled, "slow down"));
            }
            Ok(v)
        }
    }

    #[async_trait]
    impl SecretStore for Arc<Slow> {
        async fn list_secrets(&self, _: Option<&str>) -> StoreResult<Vec<SecretName>> {
            self.answer(Vec::new()).await
        }
        async fn get_value(
            &self,
            _: &SecretName,
            _: &Selector,
        ) -> StoreResult<Option<SecretVersion>> {
            self.answer(None).await
        }
        async fn list_version_ids(&self, _: &SecretName) -> StoreResult<Vec<VersionId>> {
            self.answer(Vec::new()).await
        }
        async fn describe(&self, _: &SecretName) -> StoreResult<Description> {
            self.answer(Description::default()).await
        }
        async fn put_value(
            &self,
            _: &SecretName,
            _: &SecretBytes,
            t: &str,
        ) -> StoreResult<VersionId> {
            self.answer(VersionId::new(t)).await
        }
        async fn create_secret(
            &self,
            _: &SecretName,
            _: &SecretBytes,
            t: &str,
        ) -> StoreResult<VersionId> {
            self.answer(VersionId::new(t)).await
        }
    }

    fn gated(max_calls: usize) -> (Arc<Instrumented<Arc<Slow>>>, Arc<Slow>, Arc<Stats>) {
        let slow = Arc::new(Slow::default());
        let stats = Arc::new(Stats::default());
        let store = Arc::new(Instrumented::new(slow.clone(), stats.clone(), max_calls));
        (store, slow, stats)
    }
    #[tokio::test(start_paused = true)]
    async fn calls_in_flight_never_exceed_the_bound() {
        let (store, slow, _) = gated(8);
        let calls: Vec<_> = (0..200)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let name = SecretName::new(format!("s{i}"));
                    store.describe(&name).await
                })
            })
            .collect();
        for c in calls {
            c.await.unwrap().unwrap();
        }
        assert_eq!(slow.peak.load(Ordering::SeqCst), 8);
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_slows_every_later_call_and_recovers() {
        let (store, slow, stats) = gated(16);
        let name = SecretName::new("s");
        let timed = |store: Arc<Instrumented<Arc<Slow>>>| {
            let name = name.clone();
            async move {
                let t = tokio::time::Instant::now();
                let _ = store.describe(&name).await;
                t.elapsed()
            }
        };
        assert_eq!(timed(store.clone()).await, Duration::from_millis(100));
        slow.throttle.store(true, Ordering::SeqCst);
        for _ in 0..8 {
            timed(store.clone()).await;
        }
        let shown: serde_json::Value = serde_json::from_slice(&stats.render()).unwrap();
        assert_eq!(shown["throttle_backoff_ms"], 10_000, "at its ceiling");
        // Other calls (another secret, say) now wait before they start.
        slow.throttle.store(false, Ordering::SeqCst);
        let waits: Vec<Duration> = {
            let mut v = Vec::new();
            for _ in 0..16 {
                v.push(timed(store.clone()).await);
            }
            v
        };
        assert!(
            waits[..3].iter().any(|w| *w > Duration::from_millis(200)),
            "{waits:?}"
        );
        // Answers that are not throttled bring it back to no wait.
        assert_eq!(
            *waits.last().unwrap(),
            Duration::from_millis(100),
            "{waits:?}"
        );
    }
}
