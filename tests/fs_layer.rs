//! The filesystem layer with no kernel: `fs::Fs` over the local store and a
//! fault-injecting wrapper (slow, failing), on tokio's paused clock.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use secretsfs::error::Error;
use secretsfs::fs::{Caller, Fs, FsConfig, Invalidate};
use secretsfs::inode::{Ino, ROOT};
use secretsfs::stats::Stats;
use secretsfs::store::local::LocalStore;
use secretsfs::store::{
    Description, SecretBytes, SecretName, SecretStore, SecretVersion, Selector, StoreError,
    StoreErrorKind, StoreResult, VersionId,
};

/// Wraps a store: fails or delays calls for one secret on demand.
struct Faulty {
    inner: LocalStore,
    fail: Mutex<Option<StoreErrorKind>>,
    delay_for: Mutex<Option<(String, Duration)>>,
    list_delay: Mutex<Option<Duration>>,
    gets: AtomicU64,
}

#[async_trait]
impl SecretStore for Faulty {
    async fn list_secrets(&self, prefix: Option<&str>) -> StoreResult<Vec<SecretName>> {
        let delay = *self.list_delay.lock().unwrap();
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        self.inner.list_secrets(prefix).await
    }
    async fn get_value(
        &self,
        name: &SecretName,
        sel: &Selector,
    ) -> StoreResult<Option<SecretVersion>> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        let delay = self.delay_for.lock().unwrap().clone();
        if let Some((n, d)) = delay
            && n == name.as_str()
        {
            tokio::time::sleep(d).await;
        }
        if let Some(kind) = *self.fail.lock().unwrap() {
            return Err(StoreError::new(kind, "injected"));
        }
        self.inner.get_value(name, sel).await
    }
    async fn list_version_ids(&self, name: &SecretName) -> StoreResult<Vec<VersionId>> {
        self.inner.list_version_ids(name).await
    }
    async fn describe(&self, name: &SecretName) -> StoreResult<Description> {
        if let Some(kind) = *self.fail.lock().unwrap() {
            return Err(StoreError::new(kind, "injected"));
        }
        self.inner.describe(name).await
    }
    async fn put_value(
        &self,
        name: &SecretName,
        v: &SecretBytes,
        token: &str,
    ) -> StoreResult<VersionId> {
        if let Some(kind) = *self.fail.lock().unwrap() {
            return Err(StoreError::new(kind, "injected"));
        }
        self.inner.put_value(name, v, token).await
    }
    async fn create_secret(
        &self,
        name: &SecretName,
        v: &SecretBytes,
        token: &str,
    ) -> StoreResult<VersionId> {
        self.inner.create_secret(name, v, token).await
    }
}

const ME: Caller = Caller { pid: 1, uid: 0 };

#[derive(Default)]
struct Invalidations(AtomicU32);

impl Invalidate for Invalidations {
    fn inval_inode(&self, _ino: Ino) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

struct Setup {
    fs: Arc<Fs>,
    store: Arc<Faulty>,
    stats: Arc<Stats>,
    inval: Arc<Invalidations>,
    _dir: tempfile::TempDir,
}

async fn setup(secrets: &[(&str, &str)]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalStore::open(dir.path()).unwrap();
    for (n, v) in secrets {
        local
            .create_secret(
                &SecretName::new(*n),
                &SecretBytes::new(v.as_bytes().to_vec()),
                &uuid::Uuid::new_v4().to_string(),
            )
            .await
            .unwrap();
    }
    let store = Arc::new(Faulty {
        inner: local,
        fail: Mutex::new(None),
        delay_for: Mutex::new(None),
        list_delay: Mutex::new(None),
        gets: AtomicU64::new(0),
    });
    let stats = Arc::new(Stats::default());
    let inval = Arc::new(Invalidations::default());
    let mut cfg = FsConfig::new(Duration::from_secs(60));
    cfg.allow_create = true;
    let fs = Fs::new(
        cfg,
        store.clone() as Arc<dyn SecretStore>,
        stats.clone(),
        inval.clone(),
    );
    Setup {
        fs,
        store,
        stats,
        inval,
        _dir: dir,
    }
}

async fn path_ino(fs: &Fs, path: &str) -> Result<Ino, Error> {
    let mut ino = ROOT;
    for c in path.split('/') {
        ino = fs.lookup(ino, c, ME).await?.attr.ino;
    }
    Ok(ino)
}

async fn read_all(fs: &Fs, path: &str) -> Result<Vec<u8>, Error> {
    let ino = path_ino(fs, path).await?;
    let o = fs.open(ino, libc::O_RDONLY, std::process::id()).await?;
    let data = fs.read(ino, o.fh, 0, 1 << 20).await;
    fs.release(o.fh).await;
    data
}

#[tokio::test(start_paused = true)]
async fn transient_failures_serve_the_last_value_and_count_it() {
    let s = setup(&[("app", "v1")]).await;
    assert_eq!(read_all(&s.fs, "app/current").await.unwrap(), b"v1");
    tokio::time::advance(Duration::from_secs(61)).await;
    *s.store.fail.lock().unwrap() = Some(StoreErrorKind::Transient);
    assert_eq!(read_all(&s.fs, "app/current").await.unwrap(), b"v1");
    assert_eq!(s.stats.stale_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn failures_with_nothing_cached_map_to_errnos() {
    for (kind, errno) in [
        (StoreErrorKind::Transient, libc::EIO),
        (StoreErrorKind::Throttled, libc::EIO),
        (StoreErrorKind::AccessDenied, libc::EACCES),
        (StoreErrorKind::DecryptionFailure, libc::EACCES),
        (StoreErrorKind::NotFound, libc::ENOENT),
    ] {
        let s = setup(&[("app", "v1")]).await;
        *s.store.fail.lock().unwrap() = Some(kind);
        let e = read_all(&s.fs, "app/current").await.unwrap_err();
        assert_eq!(e.errno(), errno, "{kind:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_secret_never_delays_a_cached_one() {
    let s = setup(&[("slow", "s"), ("fast", "f")]).await;
    assert_eq!(read_all(&s.fs, "fast/current").await.unwrap(), b"f");
    *s.store.delay_for.lock().unwrap() = Some(("slow".into(), Duration::from_secs(30)));
    let fs = s.fs.clone();
    let slow = tokio::spawn(async move { read_all(&fs, "slow/current").await });
    tokio::task::yield_now().await;
    // The cached secret answers without ever waiting: its future is ready
    // at its first poll, while the slow one is still pending.
    let fast = read_all(&s.fs, "fast/current").now_or_never();
    assert_eq!(fast.expect("ready at once").unwrap(), b"f");
    assert!(!slow.is_finished());
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(slow.await.unwrap().unwrap(), b"s");
}

#[tokio::test(start_paused = true)]
async fn one_handle_sees_one_version_while_the_secret_changes() {
    let s = setup(&[("app", "version-one")]).await;
    let ino = path_ino(&s.fs, "app/current").await.unwrap();
    let reader =
        s.fs.open(ino, libc::O_RDONLY, std::process::id())
            .await
            .unwrap();
    assert_eq!(s.fs.read(ino, reader.fh, 0, 7).await.unwrap(), b"version");
    let w =
        s.fs.open(ino, libc::O_WRONLY | libc::O_TRUNC, std::process::id())
            .await
            .unwrap();
    s.fs.write(w.fh, 0, b"version-two!").await.unwrap();
    s.fs.flush(w.fh, std::process::id()).await.unwrap();
    s.fs.release(w.fh).await;
    // The old handle still reads the version it opened.
    assert_eq!(s.fs.read(ino, reader.fh, 7, 100).await.unwrap(), b"-one");
    s.fs.release(reader.fh).await;
    assert_eq!(
        read_all(&s.fs, "app/current").await.unwrap(),
        b"version-two!"
    );
    assert_eq!(
        read_all(&s.fs, "app/previous").await.unwrap(),
        b"version-one"
    );
    assert!(
        s.inval.0.load(Ordering::SeqCst) >= 1,
        "current's kernel cache was invalidated"
    );
}

#[tokio::test(start_paused = true)]
async fn a_changed_version_invalidates_the_kernel_cache_after_the_ttl() {
    let s = setup(&[("app", "a")]).await;
    let ino = path_ino(&s.fs, "app/current").await.unwrap();
    let o = s.fs.open(ino, libc::O_RDONLY, 1).await.unwrap();
    assert!(!o.keep_cache, "first open: nothing cached to keep");
    s.fs.release(o.fh).await;
    let o = s.fs.open(ino, libc::O_RDONLY, 1).await.unwrap();
    assert!(o.keep_cache, "unchanged version: keep the page cache");
    s.fs.release(o.fh).await;
    s.store
        .inner
        .put_value(
            &SecretName::new("app"),
            &SecretBytes::new(b"b".to_vec()),
            "tok-2",
        )
        .await
        .unwrap();
    let before = s.inval.0.load(Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(61)).await;
    // The kernel revalidates after the TTL: that getattr sees the change.
    s.fs.getattr(ino, None).await.unwrap();
    assert_eq!(s.inval.0.load(Ordering::SeqCst), before + 1);
    let o = s.fs.open(ino, libc::O_RDONLY, 1).await.unwrap();
    assert!(!o.keep_cache);
    assert_eq!(s.fs.read(ino, o.fh, 0, 10).await.unwrap(), b"b");
}

#[tokio::test(start_paused = true)]
async fn a_failed_put_returns_its_error_and_keeps_the_cache() {
    let s = setup(&[("app", "old")]).await;
    let ino = path_ino(&s.fs, "app/current").await.unwrap();
    let w =
        s.fs.open(ino, libc::O_WRONLY | libc::O_TRUNC, 1)
            .await
            .unwrap();
    s.fs.write(w.fh, 0, b"new").await.unwrap();
    *s.store.fail.lock().unwrap() = Some(StoreErrorKind::LimitExceeded);
    assert_eq!(s.fs.flush(w.fh, 1).await.unwrap_err().errno(), libc::EDQUOT);
    s.fs.release(w.fh).await;
    *s.store.fail.lock().unwrap() = None;
    assert_eq!(read_all(&s.fs, "app/current").await.unwrap(), b"old");
}

#[tokio::test(start_paused = true)]
async fn temporary_files_stay_in_their_directory_and_rename_is_the_put() {
    let s = setup(&[("a", "one"), ("b", "other")]).await;
    let a = path_ino(&s.fs, "a").await.unwrap();
    let (e, o) =
        s.fs.create(a, ".tmp123", libc::O_WRONLY, 0o600, ME)
            .await
            .unwrap();
    s.fs.write(o.fh, 0, b"two").await.unwrap();
    s.fs.release(o.fh).await;
    assert_eq!(e.attr.perm, 0o600);
    assert!(
        path_ino(&s.fs, "b/.tmp123").await.is_err(),
        "not visible elsewhere"
    );
    assert!(path_ino(&s.fs, "a/.tmp123").await.is_ok());
    s.fs.rename(a, ".tmp123", a, "current").await.unwrap();
    assert_eq!(read_all(&s.fs, "a/current").await.unwrap(), b"two");
    assert!(
        path_ino(&s.fs, "a/.tmp123").await.is_err(),
        "the temp file is gone"
    );
    let names: Vec<String> = {
        let fh = s.fs.opendir(a, ME).await.unwrap();
        s.fs.readdir(fh)
            .unwrap()
            .iter()
            .map(|e| e.name.clone())
            .collect()
    };
    assert_eq!(names, [".", "..", "current", "previous", "versions"]);
}

#[tokio::test(start_paused = true)]
async fn a_slow_listing_refresh_never_holds_up_lookups() {
    let s = setup(&[("a", "x"), ("b", "y")]).await;
    assert_eq!(read_all(&s.fs, "a/current").await.unwrap(), b"x");
    *s.store.list_delay.lock().unwrap() = Some(Duration::from_secs(30));
    tokio::time::advance(Duration::from_secs(61)).await;
    // The listing has expired and its refresh takes 30 s: lookups of the
    // directories it knows answer at once from the old listing.
    for name in ["a", "b"] {
        let e = s.fs.lookup(ROOT, name, ME).now_or_never();
        assert!(e.expect("ready at the first poll").is_ok(), "{name}");
    }
    assert!(s.fs.lookup(ROOT, "nope", ME).await.is_err());
}
