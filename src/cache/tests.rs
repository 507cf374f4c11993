use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Room for `cap` entries of 8 bytes, spread evenly over the shards.
fn limits<V>(cap: usize) -> Limits<V> {
    Limits::new(cap * (ENTRY_OVERHEAD + 8), |_| 8)
}

fn cache(cap: usize) -> (Arc<Cache<String, Arc<String>>>, Arc<Stats>) {
    let stats = Arc::new(Stats::default());
    (Cache::new(limits(cap), stats.clone()), stats)
}

fn counting(
    calls: &Arc<AtomicUsize>,
    value: &str,
) -> impl FnOnce() -> BoxFuture<'static, StoreResult<Arc<String>>> {
    let calls = calls.clone();
    let value = value.to_string();
    move || {
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(Arc::new(value))
        }
        .boxed()
    }
}

fn failing(kind: StoreErrorKind) -> impl FnOnce() -> BoxFuture<'static, StoreResult<Arc<String>>> {
    move || async move { Err(StoreError::new(kind, "injected")) }.boxed()
}

const TTL: Option<Duration> = Some(Duration::from_secs(60));

#[tokio::test(start_paused = true)]
async fn reads_within_ttl_make_no_backend_call() {
    let (c, stats) = cache(10);
    let calls = Arc::new(AtomicUsize::new(0));
    let k = "a".to_string();
    for _ in 0..100 {
        let v = c.get(&k, TTL, counting(&calls, "v1")).await.unwrap();
        assert_eq!(*v.value, "v1");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(stats.misses(), 1);
    assert_eq!(stats.hits(), 99);
}

#[tokio::test(start_paused = true)]
async fn after_ttl_the_next_read_fetches_again() {
    let (c, _) = cache(10);
    let calls = Arc::new(AtomicUsize::new(0));
    let k = "a".to_string();
    c.get(&k, TTL, counting(&calls, "v1")).await.unwrap();
    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(
        *c.get(&k, TTL, counting(&calls, "v2")).await.unwrap().value,
        "v1"
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(
        *c.get(&k, TTL, counting(&calls, "v2")).await.unwrap().value,
        "v2"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn entries_without_ttl_never_expire() {
    let (c, _) = cache(10);
    let calls = Arc::new(AtomicUsize::new(0));
    let k = "v".to_string();
    c.get(&k, None, counting(&calls, "x")).await.unwrap();
    tokio::time::advance(Duration::from_secs(86_400 * 365)).await;
    c.get(&k, None, counting(&calls, "y")).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn concurrent_cold_reads_make_one_call() {
    let (c, _) = cache(10);
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let c = c.clone();
        let calls = calls.clone();
        tasks.push(tokio::spawn(async move {
            c.get(&"k".to_string(), TTL, move || {
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(Arc::new("v".to_string()))
                }
                .boxed()
            })
            .await
            .unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(*t.await.unwrap().value, "v");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn transient_failure_serves_the_last_value() {
    let (c, stats) = cache(10);
    let calls = Arc::new(AtomicUsize::new(0));
    let k = "a".to_string();
    c.get(&k, TTL, counting(&calls, "v1")).await.unwrap();
    tokio::time::advance(Duration::from_secs(61)).await;
    for kind in [StoreErrorKind::Transient, StoreErrorKind::Throttled] {
        let v = c.get(&k, TTL, failing(kind)).await.unwrap();
        assert_eq!(*v.value, "v1");
        tokio::time::advance(Duration::from_secs(6)).await;
    }
    assert_eq!(stats.stale_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn stale_value_is_retried_after_a_short_interval_not_every_read() {
    let (c, _) = cache(10);
    let calls = Arc::new(AtomicUsize::new(0));
    let k = "a".to_string();
    c.get(&k, TTL, counting(&calls, "v1")).await.unwrap();
    tokio::time::advance(Duration::from_secs(61)).await;
    c.get(&k, TTL, failing(StoreErrorKind::Transient))
        .await
        .unwrap();
    // Within the retry interval the stale value is fresh enough.
    c.get(&k, TTL, counting(&calls, "v2")).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(
        *c.get(&k, TTL, counting(&calls, "v2")).await.unwrap().value,
        "v2"
    );
}

#[tokio::test(start_paused = true)]
async fn denial_and_deletion_are_not_papered_over() {
    for kind in [StoreErrorKind::AccessDenied, StoreErrorKind::NotFound] {
        let (c, _) = cache(10);
        let calls = Arc::new(AtomicUsize::new(0));
        let k = "a".to_string();
        c.get(&k, TTL, counting(&calls, "v1")).await.unwrap();
        tokio::time::advance(Duration::from_secs(61)).await;
        let e = c.get(&k, TTL, failing(kind)).await.unwrap_err();
        assert_eq!(e.kind, kind);
        assert!(c.peek_fresh(&k).is_none());
        assert_eq!(c.len(), 0);
    }
}

#[tokio::test(start_paused = true)]
async fn refresh_mode_answers_an_expired_value_at_once_and_refreshes_behind() {
    let (c, _) = cache(10);
    let calls = Arc::new(AtomicUsize::new(0));
    let k = "list".to_string();
    c.get_or_refresh(&k, TTL, counting(&calls, "v1"))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(61)).await;
    let slow = || {
        async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(Arc::new("v2".to_string()))
        }
        .boxed()
    };
    // Ready at the first poll: nobody waits for the slow refresh.
    let got = c
        .get_or_refresh(&k, TTL, slow)
        .now_or_never()
        .unwrap()
        .unwrap();
    assert_eq!(*got.value, "v1");
    // One refresh runs; later callers get the old value and no new fetch.
    let again = c
        .get_or_refresh(&k, TTL, counting(&calls, "v3"))
        .await
        .unwrap();
    assert_eq!(*again.value, "v1");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Sleeping lets the refresh task run (the clock is paused: no wait).
    tokio::time::sleep(Duration::from_secs(31)).await;
    let fresh = c
        .get_or_refresh(&k, TTL, counting(&calls, "v4"))
        .await
        .unwrap();
    assert_eq!(*fresh.value, "v2");
}

#[tokio::test(start_paused = true)]
async fn transient_failure_without_a_value_is_an_error() {
    let (c, _) = cache(10);
    let e = c
        .get(&"a".to_string(), TTL, failing(StoreErrorKind::Transient))
        .await
        .unwrap_err();
    assert_eq!(e.kind, StoreErrorKind::Transient);
}

#[tokio::test(start_paused = true)]
async fn cache_is_bounded_by_lru() {
    let (c, _) = cache(32);
    let calls = Arc::new(AtomicUsize::new(0));
    for i in 0..1000 {
        c.get(&format!("k{i}"), TTL, counting(&calls, "v"))
            .await
            .unwrap();
    }
    assert!(c.len() <= 32, "len {}", c.len());
}

/// A fetch of `k` that answers `value` after 100 ms, spawned.
fn slow_get(
    c: &Arc<Cache<String, Arc<String>>>,
    k: &str,
    value: &'static str,
) -> tokio::task::JoinHandle<Cached<Arc<String>>> {
    let (c, k) = (c.clone(), k.to_string());
    tokio::spawn(async move {
        c.get(&k, TTL, || {
            async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(Arc::new(value.to_string()))
            }
            .boxed()
        })
        .await
        .unwrap()
    })
}

#[tokio::test(start_paused = true)]
async fn an_insert_during_a_fetch_wins_over_the_fetch() {
    let (c, _) = cache(10);
    let k = "a".to_string();
    let slow = slow_get(&c, &k, "old");
    tokio::time::sleep(Duration::from_millis(10)).await;
    c.insert(k.clone(), Arc::new("written".to_string()), TTL);
    slow.await.unwrap();
    assert_eq!(*c.peek_fresh(&k).unwrap().value, "written");
}

/// Eviction must drop the value: the value type (SecretBytes, a
/// `Zeroizing<Vec<u8>>`) wipes its buffer in Drop.
#[tokio::test(start_paused = true)]
async fn evicted_and_removed_values_are_dropped() {
    struct Probe(Arc<AtomicUsize>);
    impl Drop for Probe {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let stats = Arc::new(Stats::default());
    let c: Arc<Cache<u32, Arc<Probe>>> = Cache::new(limits(16), stats);
    let dropped = Arc::new(AtomicUsize::new(0));
    for i in 0..100u32 {
        let d = dropped.clone();
        c.get(&i, TTL, move || {
            async move { Ok(Arc::new(Probe(d))) }.boxed()
        })
        .await
        .unwrap();
    }
    let live = c.len();
    assert_eq!(dropped.load(Ordering::SeqCst), 100 - live);
    for i in 0..100u32 {
        c.remove(&i);
    }
    assert_eq!(dropped.load(Ordering::SeqCst), 100);
}

fn stale_cache(max_stale: Option<Duration>) -> Arc<Cache<String, Arc<String>>> {
    let limits = Limits {
        max_stale,
        ..limits(32)
    };
    Cache::new(limits, Arc::new(Stats::default()))
}

fn hung() -> BoxFuture<'static, StoreResult<Arc<String>>> {
    async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok(Arc::new("late".to_string()))
    }
    .boxed()
}

#[tokio::test(start_paused = true)]
async fn a_hung_refresh_holds_a_reader_of_a_cached_value_for_a_second_at_most() {
    let c = stale_cache(None);
    let k = "a".to_string();
    let calls = Arc::new(AtomicUsize::new(0));
    c.get(&k, TTL, counting(&calls, "v1")).await.unwrap();
    tokio::time::advance(Duration::from_secs(61)).await;
    let start = Instant::now();
    let v = c.get(&k, TTL, hung).await.unwrap();
    assert_eq!(*v.value, "v1");
    assert!(start.elapsed() <= Duration::from_secs(1));
    // The refresh went on and lands.
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(*c.peek_fresh(&k).unwrap().value, "late");
}

#[tokio::test(start_paused = true)]
async fn past_max_stale_a_failing_backend_is_an_error() {
    let c = stale_cache(Some(Duration::from_secs(10)));
    let k = "a".to_string();
    let calls = Arc::new(AtomicUsize::new(0));
    c.get(&k, TTL, counting(&calls, "v1")).await.unwrap();
    tokio::time::advance(Duration::from_secs(61)).await;
    let down = || failing(StoreErrorKind::Transient);
    assert_eq!(*c.get(&k, TTL, down()).await.unwrap().value, "v1");
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(*c.get(&k, TTL, down()).await.unwrap().value, "v1");
    tokio::time::advance(Duration::from_secs(6)).await;
    let e = c.get(&k, TTL, down()).await.unwrap_err();
    assert_eq!(e.kind, StoreErrorKind::Transient);
    // Zero: never stale, and a hung refresh is waited for.
    let never = stale_cache(Some(Duration::ZERO));
    never.get(&k, TTL, counting(&calls, "v1")).await.unwrap();
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(never.get(&k, TTL, down()).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_panicking_fetch_leaves_the_key_fetchable() {
    let (c, _) = cache(32);
    let k = "a".to_string();
    let e = c
        .get(&k, TTL, || async { panic!("injected") }.boxed())
        .await
        .unwrap_err();
    assert_eq!(e.kind, StoreErrorKind::Other);
    let calls = Arc::new(AtomicUsize::new(0));
    let v = c.get(&k, TTL, counting(&calls, "v")).await.unwrap();
    assert_eq!(*v.value, "v");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_removal_fences_a_fetch_that_started_before_it() {
    let (c, _) = cache(32);
    let k = "a".to_string();
    let slow = slow_get(&c, &k, "before the put");
    tokio::time::sleep(Duration::from_millis(10)).await;
    c.remove(&k);
    slow.await.unwrap();
    assert!(c.peek_any(&k).is_none(), "the fenced answer was not cached");
    let calls = Arc::new(AtomicUsize::new(0));
    let v = c.get(&k, TTL, counting(&calls, "after")).await.unwrap();
    assert_eq!(*v.value, "after");
}

#[tokio::test(start_paused = true)]
async fn the_bound_is_in_bytes_not_entries() {
    let stats = Arc::new(Stats::default());
    let c: Arc<Cache<u32, Arc<Vec<u8>>>> =
        Cache::new(Limits::new(4 << 20, |v: &Arc<Vec<u8>>| v.len()), stats);
    for i in 0..200u32 {
        c.insert(i, Arc::new(vec![0; 64 << 10]), TTL);
    }
    let (n, bytes) = c.usage();
    assert!(bytes <= 4 << 20, "{bytes} bytes");
    assert!((32..=64).contains(&n), "{n} entries of 64 KiB in 4 MiB");
}

/// A fetch that takes `d` and answers `value`, counted.
fn slow_counting(
    calls: &Arc<AtomicUsize>,
    d: Duration,
    value: &str,
) -> impl FnOnce() -> BoxFuture<'static, StoreResult<Arc<String>>> {
    let (calls, value) = (calls.clone(), value.to_string());
    move || {
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(d).await;
            Ok(Arc::new(value))
        }
        .boxed()
    }
}

#[tokio::test(start_paused = true)]
async fn a_read_in_the_last_third_of_the_ttl_refreshes_behind_the_reader() {
    let (c, stats) = cache(10);
    let calls = Arc::new(AtomicUsize::new(0));
    let k = "a".to_string();
    c.get(&k, TTL, counting(&calls, "v1")).await.unwrap();
    // Two thirds in: answered at once (ready at the first poll) with
    // the value held, while a refresh starts.
    tokio::time::advance(Duration::from_secs(41)).await;
    let slow = slow_counting(&calls, Duration::from_secs(2), "v2");
    let got = c.get(&k, TTL, slow).now_or_never().unwrap().unwrap();
    assert_eq!(*got.value, "v1");
    assert_eq!(stats.refreshed_ahead(), 1);
    // One refresh however many reads meanwhile.
    c.get(&k, TTL, counting(&calls, "v3")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // The refresh landed with a new TTL: at the old expiry nobody waits.
    tokio::time::advance(Duration::from_secs(20)).await;
    let got = c
        .get(&k, TTL, slow_counting(&calls, Duration::from_secs(30), "x"))
        .now_or_never()
        .unwrap()
        .unwrap();
    assert_eq!(*got.value, "v2");
}

#[tokio::test(start_paused = true)]
async fn a_key_nobody_reads_is_never_refreshed_and_a_failed_refresh_leaves_the_stale_rules() {
    let (c, stats) = cache(10);
    let calls = Arc::new(AtomicUsize::new(0));
    let k = "a".to_string();
    c.get(&k, TTL, counting(&calls, "v1")).await.unwrap();
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "no read, no refresh");
    let k2 = "b".to_string();
    c.get(&k2, TTL, counting(&calls, "v1")).await.unwrap();
    tokio::time::advance(Duration::from_secs(45)).await;
    // A failed refresh ahead keeps the value fresh until its TTL...
    c.get(&k2, TTL, failing(StoreErrorKind::Transient))
        .await
        .unwrap();
    tokio::task::yield_now().await;
    assert_eq!(*c.peek_fresh(&k2).unwrap().value, "v1");
    assert_eq!(stats.stale_count(), 0);
    // ...and past it the value is served only as stale.
    tokio::time::advance(Duration::from_secs(20)).await;
    let v = c
        .get(&k2, TTL, failing(StoreErrorKind::Transient))
        .await
        .unwrap();
    assert_eq!(*v.value, "v1");
    assert_eq!(stats.stale_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn ttls_are_jittered_per_entry() {
    let stats = Arc::new(Stats::default());
    let c: Arc<Cache<u32, Arc<String>>> = Cache::new(
        Limits {
            jitter: 0.2,
            ..limits(1000)
        },
        stats,
    );
    let expiries: Vec<_> = (0..100u32)
        .map(|i| {
            c.insert(i, Arc::new("v".into()), TTL);
            c.peek_fresh(&i).unwrap().expires.unwrap()
        })
        .collect();
    let now = Instant::now();
    let secs: Vec<f64> = expiries
        .iter()
        .map(|t| t.duration_since(now).as_secs_f64())
        .collect();
    assert!(secs.iter().all(|s| (48.0..=60.0).contains(s)), "{secs:?}");
    let spread = secs.iter().cloned().fold(f64::MIN, f64::max)
        - secs.iter().cloned().fold(f64::MAX, f64::min);
    assert!(
        spread > 5.0,
        "keys written together expire together: {spread}"
    );
}

fn remembering() -> Arc<Cache<String, Arc<String>>> {
    let limits = Limits {
        denied_ttl: Duration::from_secs(30),
        down_ttl: Duration::from_secs(5),
        cold_wait: Some(Duration::from_secs(5)),
        ..limits(32)
    };
    Cache::new(limits, Arc::new(Stats::default()))
}

/// A fetch that fails with `kind`, counted.
fn failing_counted(
    calls: &Arc<AtomicUsize>,
    kind: StoreErrorKind,
) -> impl FnOnce() -> BoxFuture<'static, StoreResult<Arc<String>>> {
    let calls = calls.clone();
    move || {
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(StoreError::new(kind, "injected"))
        }
        .boxed()
    }
}

#[tokio::test(start_paused = true)]
async fn denials_are_remembered_for_their_ttl() {
    for kind in [
        StoreErrorKind::AccessDenied,
        StoreErrorKind::DecryptionFailure,
    ] {
        let c = remembering();
        let calls = Arc::new(AtomicUsize::new(0));
        let k = "a".to_string();
        for _ in 0..100 {
            let e = c.get(&k, TTL, failing_counted(&calls, kind)).await;
            assert_eq!(e.unwrap_err().kind, kind);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(31)).await;
        let v = c.get(&k, TTL, counting(&calls, "granted")).await.unwrap();
        assert_eq!(*v.value, "granted");
    }
}

#[tokio::test(start_paused = true)]
async fn a_down_backend_with_nothing_cached_is_remembered_for_seconds() {
    let c = remembering();
    let calls = Arc::new(AtomicUsize::new(0));
    let k = "a".to_string();
    for _ in 0..50 {
        let e = c
            .get(&k, TTL, failing_counted(&calls, StoreErrorKind::Transient))
            .await;
        assert_eq!(e.unwrap_err().kind, StoreErrorKind::Transient);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    tokio::time::advance(Duration::from_secs(6)).await;
    assert!(c.get(&k, TTL, counting(&calls, "up")).await.is_ok());
    // Not for a key that has a value: that one is served stale.
    assert!(c.failing(&k).is_none());
}

#[tokio::test(start_paused = true)]
async fn a_cold_read_waits_for_a_hung_backend_no_longer_than_the_cold_wait() {
    let c = remembering();
    let calls = Arc::new(AtomicUsize::new(0));
    let k = "a".to_string();
    let start = Instant::now();
    let e = c.get(&k, TTL, hung).await.unwrap_err();
    assert_eq!(e.kind, StoreErrorKind::Transient);
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    // Meanwhile reads fail at once, with no new call.
    let e = c.get(&k, TTL, counting(&calls, "x")).await.unwrap_err();
    assert_eq!(e.kind, StoreErrorKind::Transient);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // The fetch went on; its answer is served once it lands.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(*c.peek_fresh(&k).unwrap().value, "late");
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_ahead_is_retried_after_an_interval_not_at_every_read() {
    let (c, _) = cache(10);
    let calls = Arc::new(AtomicUsize::new(0));
    let k = "a".to_string();
    c.get(&k, TTL, counting(&calls, "v1")).await.unwrap();
    tokio::time::advance(Duration::from_secs(41)).await;
    for _ in 0..20 {
        c.get(&k, TTL, failing_counted(&calls, StoreErrorKind::Transient))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one failed refresh in 1 s");
    tokio::time::advance(Duration::from_secs(6)).await;
    c.get(&k, TTL, counting(&calls, "v2")).await.unwrap();
    tokio::task::yield_now().await;
    assert_eq!(calls.load(Ordering::SeqCst), 3, "retried after 5 s");
}

#[tokio::test(start_paused = true)]
async fn a_cold_reader_giving_up_does_not_mark_down_a_key_a_put_filled() {
    let c = remembering();
    let k = "a".to_string();
    let reader = {
        let (c, k) = (c.clone(), k.clone());
        tokio::spawn(async move { c.get(&k, TTL, hung).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.insert(
        k.clone(),
        Arc::new("written".into()),
        Some(Duration::from_secs(1)),
    );
    assert!(reader.await.unwrap().is_err(), "gave up at 5 s");
    let calls = Arc::new(AtomicUsize::new(0));
    let v = c.get(&k, TTL, counting(&calls, "fresh")).await.unwrap();
    assert_eq!(
        *v.value, "fresh",
        "asked, not answered from a remembered failure"
    );
}

#[test]
fn the_kernel_is_told_to_ask_again_at_the_refresh_point() {
    let now = Instant::now();
    let c = Cached {
        value: (),
        expires: Some(now + Duration::from_secs(60)),
        refresh_at: Some(now + Duration::from_secs(40)),
    };
    assert!(c.remaining(Duration::MAX) <= Duration::from_secs(40));
    let past = Cached {
        refresh_at: Some(now),
        ..c
    };
    assert!(past.remaining(Duration::MAX) > Duration::from_secs(50));
}

#[test]
fn secret_bytes_debug_never_shows_the_value() {
    let v = crate::store::SecretBytes::new(b"hunter2".to_vec());
    let shown = format!("{v:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
}
