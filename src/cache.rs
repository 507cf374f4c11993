//! A TTL cache over time and keys: single flight per key, stale-if-error on
//! transient failures, a bound in bytes (LRU), and values dropped (so zeroed)
//! on eviction. Sharded so that readers of different keys never wait on one
//! lock. A fetch writes its answer only while it is still the key's flight:
//! an insert or a removal fences every fetch that started before it.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::num::NonZeroUsize;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use lru::LruCache;
use parking_lot::{Mutex, MutexGuard};
use tokio::time::Instant;

use crate::stats::Stats;
use crate::store::{StoreError, StoreErrorKind, StoreResult};

const SHARDS: usize = 16;
/// What an entry costs beyond its value's weight (key, node, bookkeeping).
const ENTRY_OVERHEAD: usize = 128;

/// A value with the instant it stops being fresh (None: never, for immutable data).
#[derive(Clone, Debug)]
pub struct Cached<V> {
    pub value: V,
    pub expires: Option<Instant>,
    /// From when a read refreshes it behind the reader.
    pub refresh_at: Option<Instant>,
}

impl<V> Cached<V> {
    /// How long the kernel may keep what it learned from this value: until
    /// the refresh-ahead point, so that the kernel asks again (and a
    /// refresh starts) before the value expires, even where it serves reads
    /// on its own (a read-only mount); then until expiry.
    pub fn remaining(&self, forever: Duration) -> Duration {
        let now = Instant::now();
        match (self.refresh_at.filter(|t| *t > now), self.expires) {
            (Some(t), _) | (None, Some(t)) => t.saturating_duration_since(now),
            (None, None) => forever,
        }
    }
}

struct Entry<V> {
    value: V,
    expires: Option<Instant>,
    /// From when a read starts a refresh behind the reader (the last part
    /// of the TTL); None for values that never expire or are being served
    /// stale.
    refresh_at: Option<Instant>,
    weight: usize,
    /// When a refresh of this value first failed (or hung); None while the
    /// backend answers.
    stale_since: Option<Instant>,
}

type Flight<V> = Shared<BoxFuture<'static, StoreResult<Cached<V>>>>;

/// What a fetch is for, which decides what its failure does to the cache.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// A reader waits for it.
    Get,
    /// Started by a read in the last part of the TTL; nobody waits. A
    /// transient failure leaves the (still fresh) value as it is.
    Ahead,
    /// A refresh behind an expired value that was answered at once; a
    /// transient failure is retried after `stale_retry`, not at every call.
    Behind,
    /// Must reach the backend: never answered from memory.
    Strict,
}

/// Entries remembered as failing, per shard.
const FAILURES_PER_SHARD: usize = 1024;

struct Shard<K: Hash + Eq, V> {
    entries: LruCache<K, Entry<V>>,
    /// The fetch in flight per key, with its number: only that fetch may
    /// write the key.
    inflight: HashMap<K, (u64, Flight<V>)>,
    next_flight: u64,
    bytes: usize,
    /// Keys whose last fetch failed in a way worth remembering (denied,
    /// KMS, or the backend down with nothing cached), until when.
    failures: LruCache<K, (StoreError, Instant)>,
}

impl<K: Hash + Eq, V> Shard<K, V> {
    fn put(&mut self, key: K, entry: Entry<V>, budget: usize) {
        self.bytes += entry.weight;
        if let Some(old) = self.entries.put(key, entry) {
            self.bytes -= old.weight;
        }
        // Least recently used first, never the entry just written.
        while self.bytes > budget && self.entries.len() > 1 {
            match self.entries.pop_lru() {
                Some((_, e)) => self.bytes -= e.weight,
                None => break,
            }
        }
    }

    fn pop(&mut self, key: &K) {
        if let Some(e) = self.entries.pop(key) {
            self.bytes -= e.weight;
        }
    }

    /// The failure remembered for `key`, while it lasts.
    fn remembered(&mut self, key: &K, now: Instant) -> Option<StoreError> {
        match self.failures.get(key) {
            Some((e, until)) if *until > now => Some(e.clone()),
            Some(_) => {
                self.failures.pop(key);
                None
            }
            None => None,
        }
    }
}

/// The part of a TTL at whose start a read refreshes the value behind
/// itself: the last third, so that a refresh of two round trips
/// (DescribeSecret, then GetSecretValue) fits before the value expires.
pub const REFRESH_AHEAD: f64 = 1.0 / 3.0;

/// Bounds, weights and failure rules of one cache.
pub struct Limits<V> {
    /// Total bytes of entries (values and overhead), spread over the shards.
    pub max_bytes: usize,
    /// How many bytes a value holds.
    pub weigh: fn(&V) -> usize,
    /// How long a stale value is served before the next retry of the backend.
    pub stale_retry: Duration,
    /// How long a value may be served after its refreshes started failing
    /// (None: no limit; zero: never).
    pub max_stale: Option<Duration>,
    /// How long a reader of an expired value waits for its refresh before
    /// it is given the value it had (the refresh goes on).
    pub refresh_wait: Duration,
    /// Each TTL is drawn from ttl x (1 - jitter .. 1), per entry, so that
    /// keys read together do not expire together, and none outlives the TTL.
    pub jitter: f64,
    /// How long a reader with nothing cached waits for a fetch before it
    /// gets an error (the fetch goes on); None: as long as the fetch takes.
    pub cold_wait: Option<Duration>,
    /// How long an AccessDenied or KMS failure is answered from memory.
    pub denied_ttl: Duration,
    /// How long "nothing cached and the backend failed" is answered from
    /// memory.
    pub down_ttl: Duration,
}

impl<V> Limits<V> {
    /// A bound in bytes with no jitter, no failure memory, a 5 s stale
    /// retry, stale values served without limit, a 1 s refresh wait.
    pub fn new(max_bytes: usize, weigh: fn(&V) -> usize) -> Self {
        Self {
            max_bytes,
            weigh,
            stale_retry: Duration::from_secs(5),
            max_stale: None,
            refresh_wait: Duration::from_secs(1),
            jitter: 0.0,
            cold_wait: None,
            denied_ttl: Duration::ZERO,
            down_ttl: Duration::ZERO,
        }
    }
}

pub struct Cache<K: Hash + Eq, V> {
    shards: Box<[Mutex<Shard<K, V>>]>,
    hasher: RandomState,
    shard_budget: usize,
    limits: Limits<V>,
    stats: Arc<Stats>,
}

impl<K, V> Cache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + std::fmt::Debug + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub fn new(limits: Limits<V>, stats: Arc<Stats>) -> Arc<Self> {
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    entries: LruCache::unbounded(),
                    inflight: HashMap::new(),
                    next_flight: 0,
                    bytes: 0,
                    failures: LruCache::new(
                        NonZeroUsize::new(FAILURES_PER_SHARD).expect("non-zero"),
                    ),
                })
            })
            .collect();
        Arc::new(Self {
            shards,
            hasher: RandomState::new(),
            shard_budget: (limits.max_bytes / SHARDS).max(1),
            limits,
            stats,
        })
    }

    fn shard(&self, key: &K) -> MutexGuard<'_, Shard<K, V>> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        self.shards[i].lock()
    }

    /// A new entry of `value`, fresh for a jittered `ttl` from now.
    fn entry(&self, value: V, ttl: Option<Duration>) -> Entry<V> {
        let weight = (self.limits.weigh)(&value) + ENTRY_OVERHEAD;
        let now = Instant::now();
        let ttl = ttl.map(|t| {
            if self.limits.jitter > 0.0 {
                t.mul_f64(1.0 - self.limits.jitter * fastrand::f64())
            } else {
                t
            }
        });
        Entry {
            value,
            expires: ttl.map(|t| now + t),
            refresh_at: ttl.map(|t| now + t.mul_f64(1.0 - REFRESH_AHEAD)),
            weight,
            stale_since: None,
        }
    }

    /// A fresh value if there is one, counted as a hit; never calls the backend.
    pub fn peek_fresh(&self, key: &K) -> Option<Cached<V>> {
        let mut shard = self.shard(key);
        let now = Instant::now();
        let e = shard.entries.get(key)?;
        if e.expires.is_some_and(|t| t <= now) {
            return None;
        }
        self.stats.hit();
        Some(Cached {
            value: e.value.clone(),
            expires: e.expires,
            refresh_at: e.refresh_at,
        })
    }

    /// Whatever is held for `key`, fresh or not; no hit is counted.
    pub fn peek_any(&self, key: &K) -> Option<V> {
        self.shard(key).entries.peek(key).map(|e| e.value.clone())
    }

    /// The value for `key`: from memory while fresh (refreshed behind the
    /// reader in the last part of its TTL), otherwise from `fetch`, with
    /// one fetch in flight per key however many callers wait for it.
    pub async fn get<F, Fut>(
        self: &Arc<Self>,
        key: &K,
        ttl: Option<Duration>,
        fetch: F,
    ) -> StoreResult<Cached<V>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = StoreResult<V>> + Send + 'static,
    {
        self.get_with(key, ttl, move |_| fetch()).await
    }

    /// `get` whose fetch is given the value held (expired or about to), so
    /// that it can revalidate it instead of fetching it again.
    pub async fn get_with<F, Fut>(
        self: &Arc<Self>,
        key: &K,
        ttl: Option<Duration>,
        fetch: F,
    ) -> StoreResult<Cached<V>>
    where
        F: FnOnce(Option<V>) -> Fut,
        Fut: Future<Output = StoreResult<V>> + Send + 'static,
    {
        let (flight, has_old) = {
            let mut shard = self.shard(key);
            let now = Instant::now();
            if let Some(e) = shard.entries.get(key)
                && e.expires.is_none_or(|t| t > now)
            {
                let hit = Cached {
                    value: e.value.clone(),
                    expires: e.expires,
                    refresh_at: e.refresh_at,
                };
                let ahead = e.refresh_at.is_some_and(|t| t <= now);
                self.stats.hit();
                if ahead && !shard.inflight.contains_key(key) {
                    self.stats.refresh_ahead();
                    drop(self.flight(&mut shard, key, ttl, fetch, Mode::Ahead));
                }
                return Ok(hit);
            }
            let has_old = shard.entries.peek(key).is_some();
            if !has_old && let Some(e) = shard.remembered(key, now) {
                self.stats.negative_hit();
                return Err(e);
            }
            self.stats.miss();
            (self.flight(&mut shard, key, ttl, fetch, Mode::Get), has_old)
        };
        if !has_old {
            let Some(wait) = self.limits.cold_wait else {
                return flight.await;
            };
            return match tokio::time::timeout(wait, flight).await {
                Ok(r) => r,
                Err(_) => {
                    let e = StoreError::new(
                        StoreErrorKind::Transient,
                        "the backend did not answer in time",
                    );
                    self.remember(key, &e, self.limits.down_ttl);
                    Err(e)
                }
            };
        }
        // A value is held: a refresh that does not answer soon does not
        // hold its reader hostage (it goes on behind).
        let waited = if self.limits.max_stale == Some(Duration::ZERO) {
            Ok(flight.await)
        } else {
            tokio::time::timeout(self.limits.refresh_wait, flight).await
        };
        match waited {
            Ok(Err(e)) if e.is_transient() => {
                tracing::warn!(key = ?key, error = %e, "backend failed transiently");
                self.serve_stale(key, "backend failed", ttl).ok_or(e)
            }
            Ok(r) => r,
            Err(_) => self
                .serve_stale(key, "refresh is slow", ttl)
                .ok_or_else(|| StoreError::new(StoreErrorKind::Transient, "refresh timed out")),
        }
    }

    /// The failure remembered for `key`, if one is; calls nothing.
    pub fn failing(&self, key: &K) -> Option<StoreError> {
        self.shard(key).remembered(key, Instant::now())
    }

    fn remember(&self, key: &K, e: &StoreError, for_how_long: Duration) {
        if !for_how_long.is_zero() {
            let until = Instant::now() + for_how_long;
            self.shard(key)
                .failures
                .put(key.clone(), (e.clone(), until));
        }
    }

    /// How long a value that failed to refresh is answered before the
    /// backend is asked again.
    fn retry_in(&self, ttl: Option<Duration>) -> Duration {
        ttl.map_or(self.limits.stale_retry, |t| t.min(self.limits.stale_retry))
    }

    /// The held value of `key` as a stale answer, unless it has been stale
    /// for longer than `max_stale`; it is then served without asking again
    /// for a short interval (min(TTL, stale_retry)), not refetched at every read.
    fn serve_stale(&self, key: &K, why: &str, ttl: Option<Duration>) -> Option<Cached<V>> {
        let mut shard = self.shard(key);
        let now = Instant::now();
        let old = shard.entries.get_mut(key)?;
        let since = *old.stale_since.get_or_insert(now);
        let age = now.duration_since(since);
        if self
            .limits
            .max_stale
            .is_some_and(|m| m.is_zero() || age > m)
        {
            tracing::error!(key = ?key, failing_for_secs = age.as_secs(), reason = why,
                "backend failing for longer than --max-stale; the last value is no longer served");
            return None;
        }
        self.stats.stale(age);
        tracing::warn!(key = ?key, failing_for_secs = age.as_secs(), reason = why, "serving the last value fetched");
        old.expires = Some(now + self.retry_in(ttl));
        old.refresh_at = None;
        Some(Cached {
            value: old.value.clone(),
            expires: old.expires,
            refresh_at: None,
        })
    }

    /// Always asks the backend with a fetch that starts now (fencing any
    /// older one, and fenced itself by later inserts), never answered with
    /// a stale value or a remembered failure; the answer replaces what is
    /// cached: for callers that must see the value as it is now, not a
    /// cached copy.
    pub async fn refetch<F, Fut>(
        self: &Arc<Self>,
        key: &K,
        ttl: Option<Duration>,
        fetch: F,
    ) -> StoreResult<Cached<V>>
    where
        F: FnOnce(Option<V>) -> Fut,
        Fut: Future<Output = StoreResult<V>> + Send + 'static,
    {
        let flight = {
            let mut shard = self.shard(key);
            self.stats.miss();
            // A fetch that started earlier may predate what the caller must see.
            shard.inflight.remove(key);
            self.flight(&mut shard, key, ttl, fetch, Mode::Strict)
        };
        flight.await
    }

    /// Like `get`, but once a value exists an expired one is answered at once
    /// while a single refresh runs behind it (stale-while-revalidate), so a
    /// slow refresh delays nobody. For data whose freshness is not promised
    /// to the request, such as listings; never for secret values.
    pub async fn get_or_refresh<F, Fut>(
        self: &Arc<Self>,
        key: &K,
        ttl: Option<Duration>,
        fetch: F,
    ) -> StoreResult<Cached<V>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = StoreResult<V>> + Send + 'static,
    {
        let flight = {
            let mut shard = self.shard(key);
            let now = Instant::now();
            let old = shard
                .entries
                .get(key)
                .map(|e| (e.value.clone(), e.expires, e.refresh_at));
            match old {
                Some((value, expires, refresh_at)) => {
                    self.stats.hit();
                    if expires.is_some_and(|t| t <= now) {
                        let fetch = move |_| fetch();
                        drop(self.flight(&mut shard, key, ttl, fetch, Mode::Behind));
                    }
                    return Ok(Cached {
                        value,
                        expires,
                        refresh_at,
                    });
                }
                None => {
                    if let Some(e) = shard.remembered(key, now) {
                        self.stats.negative_hit();
                        return Err(e);
                    }
                    self.stats.miss();
                    self.flight(&mut shard, key, ttl, move |_| fetch(), Mode::Get)
                }
            }
        };
        flight.await
    }

    /// The fetch in flight for `key`, starting one if none runs. It is
    /// spawned, so it completes (and fills the cache) even if every caller
    /// gives up waiting; a panic inside it ends it like an error, so the
    /// key stays fetchable.
    fn flight<F, Fut>(
        self: &Arc<Self>,
        shard: &mut Shard<K, V>,
        key: &K,
        ttl: Option<Duration>,
        fetch: F,
        mode: Mode,
    ) -> Flight<V>
    where
        F: FnOnce(Option<V>) -> Fut,
        Fut: Future<Output = StoreResult<V>> + Send + 'static,
    {
        if let Some((_, f)) = shard.inflight.get(key) {
            return f.clone();
        }
        shard.next_flight += 1;
        let id = shard.next_flight;
        let fut = fetch(shard.entries.peek(key).map(|e| e.value.clone()));
        let cache = Arc::clone(self);
        let k = key.clone();
        let task = tokio::spawn(async move {
            let result = AssertUnwindSafe(fut)
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    tracing::error!(key = ?k, "a backend fetch panicked");
                    Err(StoreError::new(StoreErrorKind::Other, "fetch panicked"))
                });
            cache.complete(&k, result, ttl, id, mode)
        });
        let flight = async move {
            task.await.unwrap_or_else(|_| {
                Err(StoreError::new(StoreErrorKind::Other, "fetch task failed"))
            })
        }
        .boxed()
        .shared();
        shard.inflight.insert(key.clone(), (id, flight.clone()));
        flight
    }

    fn complete(
        &self,
        key: &K,
        result: StoreResult<V>,
        ttl: Option<Duration>,
        id: u64,
        mode: Mode,
    ) -> StoreResult<Cached<V>> {
        let mut shard = self.shard(key);
        let now = Instant::now();
        if shard.inflight.get(key).map(|(i, _)| *i) != Some(id) {
            // Fenced: an insert, a removal or a newer fetch came after this
            // fetch started, so its answer may be older than what the cache
            // knows or will know. Its callers get it (it was true when they
            // asked); the cache does not.
            return result.map(|value| Cached {
                value,
                expires: Some(now),
                refresh_at: None,
            });
        }
        shard.inflight.remove(key);
        match result {
            Ok(value) => {
                shard.failures.pop(key);
                let entry = self.entry(value.clone(), ttl);
                let (expires, refresh_at) = (entry.expires, entry.refresh_at);
                shard.put(key.clone(), entry, self.shard_budget);
                Ok(Cached {
                    value,
                    expires,
                    refresh_at,
                })
            }
            Err(e) if e.is_transient() => {
                // A held value stays as it is: its readers decide whether
                // it may be served stale.
                match (mode, shard.entries.peek_mut(key)) {
                    (Mode::Behind, Some(old)) => old.expires = Some(now + self.retry_in(ttl)),
                    // Not again at every read: after the retry interval.
                    (Mode::Ahead, Some(old)) => old.refresh_at = Some(now + self.retry_in(ttl)),
                    (Mode::Get, None) if !self.limits.down_ttl.is_zero() => {
                        let until = now + self.limits.down_ttl;
                        shard.failures.put(key.clone(), (e.clone(), until));
                    }
                    _ => {}
                }
                Err(e)
            }
            Err(e) => {
                // Deletion and denial are not papered over: forget the value.
                shard.pop(key);
                if matches!(
                    e.kind,
                    StoreErrorKind::AccessDenied | StoreErrorKind::DecryptionFailure
                ) && !self.limits.denied_ttl.is_zero()
                {
                    let until = now + self.limits.denied_ttl;
                    shard.failures.put(key.clone(), (e.clone(), until));
                }
                Err(e)
            }
        }
    }

    /// Puts a value known to be current (read-your-writes after a put);
    /// fetches already in flight for the key will not overwrite it.
    pub fn insert(&self, key: K, value: V, ttl: Option<Duration>) {
        let mut shard = self.shard(&key);
        shard.inflight.remove(&key);
        shard.failures.pop(&key);
        let entry = self.entry(value, ttl);
        shard.put(key, entry, self.shard_budget);
    }

    /// Drops a key so that the next read fetches; a fetch already in
    /// flight will not bring the old answer back.
    pub fn remove(&self, key: &K) {
        let mut shard = self.shard(key);
        shard.inflight.remove(key);
        shard.failures.pop(key);
        shard.pop(key);
    }

    /// Drops every key `pred` holds for, as `remove` does one (a refresh
    /// of a prefix).
    pub fn remove_where(&self, pred: impl Fn(&K) -> bool) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            let keys: Vec<K> = shard
                .entries
                .iter()
                .map(|(k, _)| k)
                .chain(shard.inflight.keys())
                .chain(shard.failures.iter().map(|(k, _)| k))
                .filter(|k| pred(k))
                .cloned()
                .collect();
            for key in keys {
                shard.inflight.remove(&key);
                shard.failures.pop(&key);
                shard.pop(&key);
            }
        }
    }

    /// Entries and bytes held, for bounds checks and the stats.
    pub fn usage(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(n, b), s| {
            let s = s.lock();
            (n + s.entries.len(), b + s.bytes)
        })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.usage().0
    }
}

#[cfg(test)]
mod tests;
