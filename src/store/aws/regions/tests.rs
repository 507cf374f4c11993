use super::*;
use crate::store::Stage;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How a test region answers.
#[derive(Clone, Copy)]
enum Then {
    Value(&'static str),
    Fail(StoreErrorKind),
    Hang,
}

struct Fake {
    then: parking_lot::Mutex<Then>,
    calls: AtomicUsize,
}

impl Fake {
    fn new(then: Then) -> Arc<Self> {
        Arc::new(Self {
            then: parking_lot::Mutex::new(then),
            calls: AtomicUsize::new(0),
        })
    }
    fn set(&self, then: Then) {
        *self.then.lock() = then;
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    async fn answer(&self) -> StoreResult<&'static str> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let then = *self.then.lock();
        match then {
            Then::Value(v) => Ok(v),
            Then::Fail(kind) => Err(StoreError::new(kind, "injected")),
            Then::Hang => std::future::pending().await,
        }
    }
}

#[async_trait]
impl RegionStore for Arc<Fake> {
    async fn read(&self, _: &SecretName, op: &Read<'_>, _: Option<&str>) -> StoreResult<Answer> {
        let v = self.answer().await?;
        Ok(match op {
            Read::Get(_) => Answer::Get(Some(SecretVersion::new(
                VersionId::new("v1"),
                SecretBytes::new(v.as_bytes().to_vec()),
                std::time::SystemTime::UNIX_EPOCH,
            ))),
            _ => Answer::Describe(Description::default()),
        })
    }
    async fn answers(&self, _: Option<&SecretName>) -> bool {
        matches!(*self.then.lock(), Then::Value(_))
    }
}

/// Writes: counted, always accepted.
#[derive(Default)]
struct Writer {
    puts: AtomicUsize,
}

#[async_trait]
impl SecretStore for Writer {
    async fn list_secrets(&self, _: Option<&str>) -> StoreResult<Vec<SecretName>> {
        Ok(Vec::new())
    }
    async fn get_value(&self, _: &SecretName, _: &Selector) -> StoreResult<Option<SecretVersion>> {
        Ok(None)
    }
    async fn list_version_ids(&self, _: &SecretName) -> StoreResult<Vec<VersionId>> {
        Ok(Vec::new())
    }
    async fn describe(&self, _: &SecretName) -> StoreResult<Description> {
        Ok(Description::default())
    }
    async fn put_value(&self, _: &SecretName, _: &SecretBytes, t: &str) -> StoreResult<VersionId> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        Ok(VersionId::new(t))
    }
    async fn create_secret(
        &self,
        n: &SecretName,
        v: &SecretBytes,
        t: &str,
    ) -> StoreResult<VersionId> {
        self.put_value(n, v, t).await
    }
}

struct Rig {
    regions: Regions,
    primary: Arc<Fake>,
    replica: Arc<Fake>,
    writer: Arc<Writer>,
    stats: Arc<Stats>,
}

async fn rig(primary: Then, replica: Then) -> Rig {
    let base = AwsStore::connect(&super::super::AwsOptions {
        region: Some("us-east-1".into()),
        endpoint_url: Some("http://127.0.0.1:9".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let (p, r) = (Fake::new(primary), Fake::new(replica));
    let writer = Arc::new(Writer::default());
    let stats = Arc::new(Stats::default());
    let chain: Vec<(String, Box<dyn RegionStore>)> = vec![
        ("us-east-1".into(), Box::new(p.clone())),
        ("eu-west-1".into(), Box::new(r.clone())),
    ];
    let regions = Regions::over(
        chain,
        writer.clone(),
        Arc::new(base),
        Vec::new(),
        stats.clone(),
    );
    Rig {
        regions,
        primary: p,
        replica: r,
        writer,
        stats,
    }
}

async fn get(r: &Rig) -> StoreResult<String> {
    let v = r
        .regions
        .get_value(&SecretName::new("s"), &Selector::Stage(Stage::Current))
        .await?;
    Ok(v.unwrap().value.as_text().unwrap().to_string())
}

#[tokio::test(start_paused = true)]
async fn a_transient_failure_is_answered_by_the_replica_and_later_reads_skip_the_primary() {
    let r = rig(Then::Value("p"), Then::Value("r")).await;
    assert_eq!(get(&r).await.unwrap(), "p");
    r.primary.set(Then::Fail(StoreErrorKind::Transient));
    assert_eq!(get(&r).await.unwrap(), "r");
    assert_eq!(get(&r).await.unwrap(), "r");
    assert_eq!(r.primary.calls(), 2, "the primary is skipped once down");
    let shown = r.stats.regions.json().unwrap();
    assert_eq!(shown["in_use"], "eu-west-1");
    assert_eq!(shown["switches"], 1);
    assert_eq!(shown["errors"]["us-east-1"], 1);
}

#[tokio::test(start_paused = true)]
async fn a_4xx_from_the_primary_is_final() {
    for kind in [
        StoreErrorKind::AccessDenied,
        StoreErrorKind::NotFound,
        StoreErrorKind::DecryptionFailure,
        StoreErrorKind::InvalidRequest,
    ] {
        let r = rig(Then::Fail(kind), Then::Value("r")).await;
        assert_eq!(get(&r).await.unwrap_err().kind, kind);
        assert_eq!(r.replica.calls(), 0, "{kind:?} never fails over");
    }
}

#[tokio::test(start_paused = true)]
async fn a_hung_primary_costs_the_failover_bound_once() {
    let r = rig(Then::Hang, Then::Value("r")).await;
    let t = tokio::time::Instant::now();
    assert_eq!(get(&r).await.unwrap(), "r");
    assert_eq!(t.elapsed(), FAILOVER_AFTER);
    let t = tokio::time::Instant::now();
    assert_eq!(get(&r).await.unwrap(), "r");
    assert_eq!(t.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn the_primary_is_probed_with_backoff_and_used_again_when_it_answers() {
    let r = rig(Then::Fail(StoreErrorKind::Throttled), Then::Value("r")).await;
    assert_eq!(get(&r).await.unwrap(), "r");
    // Probes at 1, 3 and 7 s find it failing; healed at 8 s, the probe
    // at 15 s finds it.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(get(&r).await.unwrap(), "r");
    r.primary.set(Then::Value("p"));
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(get(&r).await.unwrap(), "r", "not probed again yet");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(get(&r).await.unwrap(), "p");
    let shown = r.stats.regions.json().unwrap();
    assert_eq!(shown["in_use"], "us-east-1");
    assert_eq!(shown["switches"], 1, "the first region set is no switch");
}

#[tokio::test(start_paused = true)]
async fn a_replicas_4xx_gives_the_primarys_transient_error() {
    let r = rig(
        Then::Fail(StoreErrorKind::Transient),
        Then::Fail(StoreErrorKind::NotFound),
    )
    .await;
    let e = get(&r).await.unwrap_err();
    assert_eq!(e.kind, StoreErrorKind::Transient, "{e}");
    assert!(e.message.contains("eu-west-1"), "{e}");
    // Primary known down: the error still says it, not NotFound.
    let e = get(&r).await.unwrap_err();
    assert_eq!(e.kind, StoreErrorKind::Transient, "{e}");
    assert!(
        e.message.contains("primary region us-east-1 is down"),
        "{e}"
    );
}

#[tokio::test(start_paused = true)]
async fn writes_go_to_the_primary_and_are_refused_while_it_is_down() {
    let r = rig(Then::Value("p"), Then::Value("r")).await;
    let (name, value) = (SecretName::new("s"), SecretBytes::new(b"x".to_vec()));
    // Its version id is the one the replica answers with (caught up):
    // a replica behind this mount's write is not served.
    r.regions.put_value(&name, &value, "v1").await.unwrap();
    r.primary.set(Then::Fail(StoreErrorKind::Transient));
    assert_eq!(get(&r).await.unwrap(), "r");
    let e = r.regions.put_value(&name, &value, "t2").await.unwrap_err();
    assert_eq!(
        e.kind,
        StoreErrorKind::Other,
        "never sent: not a lost answer"
    );
    assert!(e.message.contains("replicas cannot be written"), "{e}");
    assert_eq!(r.writer.puts.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_4xx_of_the_primary_stands_while_it_is_down_until_it_answers_again() {
    let r = rig(Then::Fail(StoreErrorKind::AccessDenied), Then::Value("r")).await;
    assert_eq!(
        get(&r).await.unwrap_err().kind,
        StoreErrorKind::AccessDenied
    );
    // The primary fails now: marked down, yet its verdict is the answer.
    r.primary.set(Then::Fail(StoreErrorKind::Transient));
    for _ in 0..2 {
        let e = get(&r).await.unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::AccessDenied, "{e}");
    }
    assert_eq!(r.replica.calls(), 0, "never asked while the verdict stands");
    assert_eq!(r.primary.calls(), 2, "skipped once known down");
    r.primary.set(Then::Value("p"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(get(&r).await.unwrap(), "p");
    // The primary answered the secret: a later outage fails over.
    r.primary.set(Then::Fail(StoreErrorKind::Transient));
    assert_eq!(get(&r).await.unwrap(), "r");
}

#[tokio::test(start_paused = true)]
async fn a_write_asks_a_primary_marked_down_and_pins_the_secrets_reads_to_it() {
    let r = rig(Then::Value("p"), Then::Value("r")).await;
    r.primary.set(Then::Fail(StoreErrorKind::Transient));
    assert_eq!(get(&r).await.unwrap(), "r");
    // Healed before its probe: the write asks it (the writer answers)
    // instead of refusing on the mark.
    r.primary.set(Then::Hang);
    let name = SecretName::new("s");
    let guard = r.regions.begin_write(&name).await.unwrap();
    assert!(guard.is_some());
    // The write's reads wait for the primary, past the failover bound.
    let read = tokio::time::timeout(Duration::from_secs(3), get(&r)).await;
    assert!(read.is_err(), "a write's read went to the replica");
    drop(guard);
    assert_eq!(get(&r).await.unwrap(), "r", "others fail over again");
}
