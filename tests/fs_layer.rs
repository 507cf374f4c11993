//! The filesystem layer with no kernel: `fs::Fs` over the local store and a
//! fault-injecting wrapper (slow, failing), on tokio's paused clock.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use secretsfs::error::Error;
use secretsfs::fs::{Caller, Closer, Fs, FsConfig, Invalidate};
use secretsfs::inode::{Ino, ROOT};
use secretsfs::stats::Stats;
use secretsfs::store::local::LocalStore;
use secretsfs::store::{
    Description, SecretBytes, SecretName, SecretStore, SecretVersion, Selector, Stage, StoreError,
    StoreErrorKind, StoreResult, VersionId,
};

/// Wraps a store: fails, delays, panics, holds or hides calls on demand.
struct Faulty {
    inner: LocalStore,
    fail: Mutex<Option<StoreErrorKind>>,
    delay_for: Mutex<Option<(String, Duration)>>,
    list_delay: Mutex<Option<Duration>>,
    gets: AtomicU64,
    /// The next get_value or list_secrets panics.
    panic_once: AtomicBool,
    /// Names ListSecrets does not show (found only by direct lookup).
    unlisted: Mutex<HashSet<String>>,
    /// Names that no longer exist.
    deleted: Mutex<HashSet<String>>,
    /// While set for an operation ("get" or "ids"), that call reads its
    /// answer, then waits for a permit before returning it (a slow
    /// response in flight).
    hold: Mutex<Option<(&'static str, Arc<tokio::sync::Semaphore>)>>,
    /// The hold applies to the next call only.
    hold_once: AtomicBool,
    /// GetSecretValue alone fails so (DescribeSecret answers).
    fail_gets: Mutex<Option<StoreErrorKind>>,
    /// PutSecretValue stores nothing and answers a transient error (a put
    /// lost on the way, or still on its way).
    lose_puts: AtomicBool,
}

impl Faulty {
    fn gone(&self, name: &SecretName) -> StoreResult<()> {
        if self.deleted.lock().unwrap().contains(name.as_str()) {
            return Err(StoreError::not_found(name));
        }
        Ok(())
    }

    async fn held(&self, op: &str) {
        let gate = self.hold.lock().unwrap().clone();
        if let Some((o, g)) = gate
            && o == op
        {
            if self.hold_once.swap(false, Ordering::SeqCst) {
                *self.hold.lock().unwrap() = None;
            }
            g.acquire().await.unwrap().forget();
        }
    }

    fn hold(&self, op: &'static str) -> Arc<tokio::sync::Semaphore> {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        *self.hold.lock().unwrap() = Some((op, gate.clone()));
        gate
    }
}

#[async_trait]
impl SecretStore for Faulty {
    async fn list_secrets(&self, prefix: Option<&str>) -> StoreResult<Vec<SecretName>> {
        if self.panic_once.swap(false, Ordering::SeqCst) {
            panic!("injected panic in ListSecrets");
        }
        let delay = *self.list_delay.lock().unwrap();
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        let names = self.inner.list_secrets(prefix).await?;
        let hidden = self.unlisted.lock().unwrap().clone();
        let deleted = self.deleted.lock().unwrap().clone();
        Ok(names
            .into_iter()
            .filter(|n| !hidden.contains(n.as_str()) && !deleted.contains(n.as_str()))
            .collect())
    }
    async fn get_value(
        &self,
        name: &SecretName,
        sel: &Selector,
    ) -> StoreResult<Option<SecretVersion>> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        if self.panic_once.swap(false, Ordering::SeqCst) {
            panic!("injected panic in GetSecretValue");
        }
        let delay = self.delay_for.lock().unwrap().clone();
        if let Some((n, d)) = delay
            && n == name.as_str()
        {
            tokio::time::sleep(d).await;
        }
        if let Some(kind) = *self.fail.lock().unwrap() {
            return Err(StoreError::new(kind, "injected"));
        }
        if let Some(kind) = *self.fail_gets.lock().unwrap() {
            return Err(StoreError::new(kind, "injected"));
        }
        self.gone(name)?;
        let answer = self.inner.get_value(name, sel).await;
        self.held("get").await;
        answer
    }
    async fn list_version_ids(&self, name: &SecretName) -> StoreResult<Vec<VersionId>> {
        self.gone(name)?;
        let answer = self.inner.list_version_ids(name).await;
        self.held("ids").await;
        answer
    }
    async fn describe(&self, name: &SecretName) -> StoreResult<Description> {
        if let Some(kind) = *self.fail.lock().unwrap() {
            return Err(StoreError::new(kind, "injected"));
        }
        self.gone(name)?;
        let answer = self.inner.describe(name).await;
        self.held("describe").await;
        answer
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
        if self.lose_puts.load(Ordering::SeqCst) {
            return Err(StoreError::new(StoreErrorKind::Transient, "no answer"));
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
    setup_with(secrets, |_| {}).await
}

async fn setup_with(secrets: &[(&str, &str)], tune: impl FnOnce(&mut FsConfig)) -> Setup {
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
        panic_once: AtomicBool::new(false),
        unlisted: Mutex::default(),
        deleted: Mutex::default(),
        hold: Mutex::new(None),
        hold_once: AtomicBool::new(false),
        fail_gets: Mutex::new(None),
        lose_puts: AtomicBool::new(false),
    });
    let stats = Arc::new(Stats::default());
    let inval = Arc::new(Invalidations::default());
    let mut cfg = FsConfig::new(Duration::from_secs(60));
    cfg.allow_create = true;
    tune(&mut cfg);
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

/// Past the TTL (60 s) whatever its jitter (+/-10%).
const PAST_TTL: Duration = Duration::from_secs(67);

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
    let data = fs.read(ino, o.fh, 0, 1 << 20, true).await;
    fs.release(o.fh).await;
    data
}

#[tokio::test(start_paused = true)]
async fn transient_failures_serve_the_last_value_and_count_it() {
    let s = setup(&[("app", "v1")]).await;
    assert_eq!(read_all(&s.fs, "app/current").await.unwrap(), b"v1");
    tokio::time::advance(PAST_TTL).await;
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
    // Slow, but within the wait of a read with nothing cached (5 s).
    *s.store.delay_for.lock().unwrap() = Some(("slow".into(), Duration::from_secs(3)));
    let fs = s.fs.clone();
    let slow = tokio::spawn(async move { read_all(&fs, "slow/current").await });
    tokio::task::yield_now().await;
    // The cached secret answers without ever waiting: its future is ready
    // at its first poll, while the slow one is still pending.
    let fast = read_all(&s.fs, "fast/current").now_or_never();
    assert_eq!(fast.expect("ready at once").unwrap(), b"f");
    assert!(!slow.is_finished());
    tokio::time::advance(Duration::from_secs(4)).await;
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
    assert_eq!(
        s.fs.read(ino, reader.fh, 0, 7, true).await.unwrap(),
        b"version"
    );
    let w =
        s.fs.open(ino, libc::O_WRONLY | libc::O_TRUNC, std::process::id())
            .await
            .unwrap();
    s.fs.write(w.fh, 0, b"version-two!", PID()).await.unwrap();
    s.fs.flush(w.fh, Closer::by(std::process::id()))
        .await
        .unwrap();
    s.fs.release(w.fh).await;
    // The old handle still reads the version it opened.
    assert_eq!(
        s.fs.read(ino, reader.fh, 7, 100, true).await.unwrap(),
        b"-one"
    );
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
    for _ in 0..2 {
        let o = s.fs.open(ino, libc::O_RDONLY, 1).await.unwrap();
        assert!(
            o.direct_io && !o.keep_cache,
            "every read is answered from the handle's version"
        );
        s.fs.release(o.fh).await;
    }
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
    tokio::time::advance(PAST_TTL).await;
    // The kernel revalidates after the TTL: that getattr sees the change.
    s.fs.getattr(ino, None).await.unwrap();
    assert_eq!(s.inval.0.load(Ordering::SeqCst), before + 1);
    let o = s.fs.open(ino, libc::O_RDONLY, 1).await.unwrap();
    assert!(o.direct_io && !o.keep_cache);
    assert_eq!(s.fs.read(ino, o.fh, 0, 10, true).await.unwrap(), b"b");
}

#[tokio::test(start_paused = true)]
async fn a_failed_put_returns_its_error_and_keeps_the_cache() {
    let s = setup(&[("app", "old")]).await;
    let ino = path_ino(&s.fs, "app/current").await.unwrap();
    let w =
        s.fs.open(ino, libc::O_WRONLY | libc::O_TRUNC, 1)
            .await
            .unwrap();
    s.fs.write(w.fh, 0, b"new", PID()).await.unwrap();
    *s.store.fail.lock().unwrap() = Some(StoreErrorKind::LimitExceeded);
    assert_eq!(
        s.fs.flush(w.fh, Closer::by(1)).await.unwrap_err().errno(),
        libc::EDQUOT
    );
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
    s.fs.write(o.fh, 0, b"two", PID()).await.unwrap();
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
    let names: std::collections::BTreeSet<String> = {
        let fh = s.fs.opendir(a, ME).await.unwrap();
        s.fs.readdir(fh)
            .unwrap()
            .iter()
            .map(|e| e.name.clone())
            .collect()
    };
    assert_eq!(
        names,
        [
            ".", "..", "current", "previous", "stages", "versions", "json"
        ]
        .map(String::from)
        .into()
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_listing_refresh_never_holds_up_lookups() {
    let s = setup(&[("a", "x"), ("b", "y")]).await;
    assert_eq!(read_all(&s.fs, "a/current").await.unwrap(), b"x");
    *s.store.list_delay.lock().unwrap() = Some(Duration::from_secs(30));
    tokio::time::advance(PAST_TTL).await;
    // The listing has expired and its refresh takes 30 s: lookups of the
    // directories it knows answer at once from the old listing.
    for name in ["a", "b"] {
        let e = s.fs.lookup(ROOT, name, ME).now_or_never();
        assert!(e.expect("ready at the first poll").is_ok(), "{name}");
    }
    assert!(s.fs.lookup(ROOT, "nope", ME).await.is_err());
}

const PID: fn() -> u32 = std::process::id;

/// open + write + the opener's close + release; the close's result.
async fn write_all(fs: &Fs, path: &str, data: &[u8], flags: i32) -> Result<(), Error> {
    let ino = path_ino(fs, path).await?;
    let o = fs.open(ino, libc::O_WRONLY | flags, PID()).await?;
    let r = match fs.write(o.fh, 0, data, PID()).await {
        Ok(_) => fs.flush(o.fh, Closer::by(PID())).await,
        Err(e) => Err(e),
    };
    fs.release(o.fh).await;
    r
}

async fn names(fs: &Fs, path: &str) -> Vec<String> {
    let ino = if path.is_empty() {
        ROOT
    } else {
        path_ino(fs, path).await.unwrap()
    };
    let fh = fs.opendir(ino, ME).await.unwrap();
    let out = fs
        .readdir(fh)
        .unwrap()
        .iter()
        .map(|e| e.name.clone())
        .filter(|n| n != "." && n != "..")
        .collect();
    fs.releasedir(fh);
    out
}

async fn external_put(s: &Setup, name: &str, value: &str) {
    s.store
        .inner
        .put_value(
            &SecretName::new(name),
            &SecretBytes::new(value.as_bytes().to_vec()),
            &uuid::Uuid::new_v4().to_string(),
        )
        .await
        .unwrap();
}

async fn api_current(s: &Setup, name: &str) -> Vec<u8> {
    s.store
        .inner
        .get_value(&SecretName::new(name), &Selector::Stage(Stage::Current))
        .await
        .unwrap()
        .unwrap()
        .value
        .as_bytes()
        .to_vec()
}

// An old reader must not pin the old value for later opens, and a held
// handle reads its own version: every read handle uses direct I/O (the page
// cache and the inode's one size are shared by all handles).
#[tokio::test(start_paused = true)]
async fn every_read_handle_bypasses_the_page_cache_and_reads_its_own_version() {
    let s = setup(&[("app", "one")]).await;
    let ino = path_ino(&s.fs, "app/current").await.unwrap();
    let a = s.fs.open(ino, libc::O_RDONLY, PID()).await.unwrap();
    assert!(a.direct_io && !a.keep_cache);
    write_all(&s.fs, "app/current", b"two-longer", libc::O_TRUNC)
        .await
        .unwrap();
    let b = s.fs.open(ino, libc::O_RDONLY, PID()).await.unwrap();
    assert!(b.direct_io && !b.keep_cache);
    assert_eq!(s.fs.read(ino, a.fh, 0, 4096, true).await.unwrap(), b"one");
    assert_eq!(
        s.fs.read(ino, b.fh, 0, 4096, true).await.unwrap(),
        b"two-longer"
    );
    // Attributes asked with a handle: the file's as it is now (the kernel
    // keeps one size per inode, and page-cache fills must agree with it).
    assert_eq!(s.fs.getattr(ino, Some(a.fh)).await.unwrap().attr.size, 10);
    assert_eq!(s.fs.getattr(ino, Some(b.fh)).await.unwrap().attr.size, 10);
    s.fs.release(a.fh).await;
    s.fs.release(b.fh).await;
    s.fs.getattr(ino, None).await.unwrap();
    let c = s.fs.open(ino, libc::O_RDONLY, PID()).await.unwrap();
    assert!(c.direct_io && !c.keep_cache, "and after they close");
    s.fs.release(c.fh).await;
}

// Issue item 2: O_TRUNC and O_APPEND on every open of a temporary file.
#[tokio::test(start_paused = true)]
async fn temporary_files_honour_o_trunc_and_o_append() {
    let s = setup(&[("app", "v")]).await;
    let dir = path_ino(&s.fs, "app").await.unwrap();
    let (_, o) =
        s.fs.create(dir, "t", libc::O_WRONLY, 0o600, ME)
            .await
            .unwrap();
    s.fs.write(o.fh, 0, b"abcdefgh", PID()).await.unwrap();
    s.fs.release(o.fh).await;
    write_all(&s.fs, "app/t", b"XY", libc::O_TRUNC)
        .await
        .unwrap();
    assert_eq!(read_all(&s.fs, "app/t").await.unwrap(), b"XY");
    write_all(&s.fs, "app/t", b"12", libc::O_APPEND)
        .await
        .unwrap();
    assert_eq!(read_all(&s.fs, "app/t").await.unwrap(), b"XY12");
}

// Issue item 3: handles hold the temporary file, not its name.
#[tokio::test(start_paused = true)]
async fn a_temporary_file_handle_outlives_its_name_and_writes_through_to_current() {
    let s = setup(&[("app", "v")]).await;
    let dir = path_ino(&s.fs, "app").await.unwrap();
    let (_, o) =
        s.fs.create(dir, "a", libc::O_RDWR, 0o600, ME)
            .await
            .unwrap();
    s.fs.write(o.fh, 0, b"abc", PID()).await.unwrap();
    s.fs.rename(dir, "a", dir, "b").await.unwrap();
    s.fs.write(o.fh, 3, b"def", PID()).await.unwrap();
    s.fs.fsync(o.fh).await.unwrap();
    assert_eq!(read_all(&s.fs, "app/b").await.unwrap(), b"abcdef");
    s.fs.unlink(dir, "b", ME).await.unwrap();
    s.fs.write(o.fh, 6, b"ghi", PID()).await.unwrap();
    assert_eq!(
        s.fs.read(ROOT, o.fh, 0, 100, true).await.unwrap(),
        b"abcdefghi"
    );
    s.fs.flush(o.fh, Closer::by(PID())).await.unwrap();
    s.fs.release(o.fh).await;
    assert_eq!(
        s.fs.sizes().temp_files,
        0,
        "the orphan went with its last handle"
    );

    // Renamed onto current, then written: the writer's close puts again.
    let (_, o) =
        s.fs.create(dir, "c", libc::O_RDWR, 0o600, ME)
            .await
            .unwrap();
    s.fs.write(o.fh, 0, b"v1", PID()).await.unwrap();
    s.fs.rename(dir, "c", dir, "current").await.unwrap();
    assert_eq!(api_current(&s, "app").await, b"v1");
    s.fs.write(o.fh, 2, b"-more", PID()).await.unwrap();
    s.fs.flush(o.fh, Closer::by(PID())).await.unwrap();
    s.fs.release(o.fh).await;
    assert_eq!(api_current(&s, "app").await, b"v1-more");
    assert_eq!(read_all(&s.fs, "app/current").await.unwrap(), b"v1-more");
}

// Issue item 4: "unchanged" is judged against Secrets Manager at commit.
#[tokio::test(start_paused = true)]
async fn writing_back_a_value_replaced_elsewhere_puts_it_and_appends_start_from_the_real_value() {
    let s = setup(&[("app", "X")]).await;
    assert_eq!(read_all(&s.fs, "app/current").await.unwrap(), b"X");
    external_put(&s, "app", "Y").await;
    write_all(&s.fs, "app/current", b"X", libc::O_TRUNC)
        .await
        .unwrap();
    assert_eq!(
        api_current(&s, "app").await,
        b"X",
        "the write was not dropped"
    );
    assert_eq!(read_all(&s.fs, "app/previous").await.unwrap(), b"Y");
    external_put(&s, "app", "fresh").await;
    write_all(&s.fs, "app/current", b"+x", libc::O_APPEND)
        .await
        .unwrap();
    assert_eq!(api_current(&s, "app").await, b"fresh+x");
    assert_eq!(read_all(&s.fs, "app/previous").await.unwrap(), b"fresh");
}

// Issue item 5: the exit of a writer killed by a signal commits nothing,
// whether it opened the file or inherited it (pid 1 stands for the child);
// the opener's later close then says EIO.
#[tokio::test(start_paused = true)]
async fn a_killed_writer_commits_nothing_even_at_release() {
    let s = setup(&[("app", "whole")]).await;
    let ino = path_ino(&s.fs, "app/current").await.unwrap();
    for writer in [PID(), 1] {
        let o =
            s.fs.open(ino, libc::O_WRONLY | libc::O_TRUNC, PID())
                .await
                .unwrap();
        s.fs.write(o.fh, 0, b"ha", writer).await.unwrap();
        let killed = Closer {
            tgid: writer,
            killed: true,
        };
        s.fs.flush(o.fh, killed).await.unwrap();
        if writer != PID() {
            let e = s.fs.flush(o.fh, Closer::by(PID())).await.unwrap_err();
            assert_eq!(e.errno(), libc::EIO);
        }
        s.fs.release(o.fh).await;
        assert_eq!(api_current(&s, "app").await, b"whole");
    }
    let app = SecretName::new("app");
    let ids = s.store.inner.list_version_ids(&app).await.unwrap();
    assert_eq!(ids.len(), 1);
}

// Issue item 6: a panic in a fetch leaves the key (and the listing) fetchable.
#[tokio::test(start_paused = true)]
async fn a_panicking_fetch_leaves_the_key_and_the_listing_fetchable() {
    let s = setup(&[("app", "v")]).await;
    s.store.panic_once.store(true, Ordering::SeqCst);
    let fh = s.fs.opendir(ROOT, ME).await;
    assert!(fh.is_err(), "the listing's fetch panicked");
    assert_eq!(names(&s.fs, "").await, ["app"]);
    s.store.panic_once.store(true, Ordering::SeqCst);
    assert!(read_all(&s.fs, "app/current").await.is_err());
    assert_eq!(read_all(&s.fs, "app/current").await.unwrap(), b"v");
}

// Issue item 7: fetches in flight across a put do not bring old answers back.
#[tokio::test(start_paused = true)]
async fn a_version_listing_in_flight_during_a_put_is_not_cached() {
    let s = setup(&[("app", "v1")]).await;
    assert_eq!(read_all(&s.fs, "app/current").await.unwrap(), b"v1");
    let gate = s.store.hold("ids");
    let fs = s.fs.clone();
    let old = tokio::spawn(async move { names(&fs, "app/versions").await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    write_all(&s.fs, "app/current", b"v2", libc::O_TRUNC)
        .await
        .unwrap();
    gate.add_permits(10);
    assert_eq!(old.await.unwrap().len(), 1, "it answered before the put");
    assert_eq!(names(&s.fs, "app/versions").await.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_value_fetch_in_flight_during_a_put_is_not_cached() {
    let s = setup(&[("app", "v1")]).await;
    assert_eq!(read_all(&s.fs, "app/current").await.unwrap(), b"v1");
    let ino = path_ino(&s.fs, "app/current").await.unwrap();
    let w =
        s.fs.open(ino, libc::O_WRONLY | libc::O_TRUNC, PID())
            .await
            .unwrap();
    tokio::time::advance(PAST_TTL).await;
    // A refresh of current starts, reads "v1", and is slow to answer.
    let gate = s.store.hold("get");
    let fs = s.fs.clone();
    let old = tokio::spawn(async move { fs.getattr(ino, None).await.unwrap().attr.size });
    tokio::time::sleep(Duration::from_millis(10)).await;
    // Meanwhile this mount puts "v2-longer".
    s.fs.write(w.fh, 0, b"v2-longer", PID()).await.unwrap();
    s.fs.flush(w.fh, Closer::by(PID())).await.unwrap();
    s.fs.release(w.fh).await;
    gate.add_permits(10);
    old.await.unwrap();
    *s.store.hold.lock().unwrap() = None;
    assert_eq!(read_all(&s.fs, "app/current").await.unwrap(), b"v2-longer");
    assert_eq!(s.fs.getattr(ino, None).await.unwrap().attr.size, 9);
}

// Issue item 8: state stays bounded over a long life with churning secrets.
#[tokio::test(start_paused = true)]
async fn state_stays_bounded_through_lookups_forgets_and_deletions() {
    let many: Vec<(String, String)> = (0..60)
        .map(|i| (format!("s{i}"), "x".repeat(60_000)))
        .collect();
    let refs: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let s = setup_with(&refs, |c| {
        c.cache_bytes = std::num::NonZeroUsize::new(1 << 20).unwrap();
    })
    .await;
    // Half the secrets cannot be listed: they are found by direct lookup.
    for i in 0..30 {
        s.store.unlisted.lock().unwrap().insert(format!("s{i}"));
    }
    for round in 0..3 {
        names(&s.fs, "").await;
        // Every successful lookup is one reference the kernel forgets later.
        let mut looked_up = Vec::new();
        for i in 0..60 {
            let Ok(dir) = s.fs.lookup(ROOT, &format!("s{i}"), ME).await else {
                continue;
            };
            looked_up.push(dir.attr.ino);
            let fh = s.fs.opendir(dir.attr.ino, ME).await.unwrap();
            s.fs.releasedir(fh);
            let Ok(cur) = s.fs.lookup(dir.attr.ino, "current", ME).await else {
                continue;
            };
            let ino = cur.attr.ino;
            looked_up.push(ino);
            let o = s.fs.open(ino, libc::O_RDONLY, PID()).await.unwrap();
            assert_eq!(
                s.fs.read(ino, o.fh, 0, 1 << 20, true).await.unwrap().len(),
                60_000
            );
            s.fs.release(o.fh).await;
        }
        for ino in looked_up {
            s.fs.forget(ino, 1);
        }
        for i in 0..2_000 {
            assert!(
                s.fs.lookup(ROOT, &format!("missing-{round}-{i}"), ME)
                    .await
                    .is_err()
            );
        }
        // Some secrets are deleted; the next reads find them gone.
        for i in (round * 10)..(round * 10 + 10) {
            s.store.deleted.lock().unwrap().insert(format!("s{i}"));
        }
        tokio::time::advance(PAST_TTL).await;
    }
    let z = s.fs.sizes();
    assert_eq!(z.inodes, 1, "only the root is left: {z:?}");
    assert_eq!(z.kernel_views, 0, "{z:?}");
    assert_eq!(z.handles, 0, "{z:?}");
    assert_eq!(z.put_locks, 0, "{z:?}");
    assert!(z.value_bytes <= 1 << 20, "{z:?}");
    assert!(
        z.direct_names <= 30 - 20,
        "deleted direct names are dropped: {z:?}"
    );
    assert!(z.missing_names <= 10_000, "{z:?}");
}

// Issue item 9: one invalidation per change, however many getattrs.
#[tokio::test(start_paused = true)]
async fn a_change_is_invalidated_once_not_at_every_getattr() {
    let s = setup(&[("app", "a")]).await;
    let ino = path_ino(&s.fs, "app/current").await.unwrap();
    external_put(&s, "app", "b").await;
    tokio::time::advance(PAST_TTL).await;
    let before = s.inval.0.load(Ordering::SeqCst);
    for _ in 0..10 {
        s.fs.getattr(ino, None).await.unwrap();
    }
    assert_eq!(s.inval.0.load(Ordering::SeqCst), before + 1);
}

// A DescribeSecret answer that lands after a put of this mount must not put
// the value it describes back into the cache (found by review).
#[tokio::test(start_paused = true)]
async fn a_slow_open_for_append_does_not_undo_a_put_made_meanwhile() {
    let s = setup(&[("app", "AAAA-old")]).await;
    assert_eq!(read_all(&s.fs, "app/current").await.unwrap(), b"AAAA-old");
    let ino = path_ino(&s.fs, "app/current").await.unwrap();
    s.store.hold_once.store(true, Ordering::SeqCst);
    let gate = s.store.hold("describe");
    let fs = s.fs.clone();
    let slow = tokio::spawn(async move { fs.open(ino, libc::O_WRONLY, PID()).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(10)).await;
    write_all(&s.fs, "app/current", b"BBBB-new", libc::O_TRUNC)
        .await
        .unwrap();
    gate.add_permits(1);
    let o = slow.await.unwrap();
    s.fs.release(o.fh).await;
    assert_eq!(api_current(&s, "app").await, b"BBBB-new");
    assert_eq!(read_all(&s.fs, "app/current").await.unwrap(), b"BBBB-new");
}

// A temporary file renamed onto current, then written by a process that is
// killed: the half write never reaches the secret (found by review).
#[tokio::test(start_paused = true)]
async fn a_killed_writer_of_a_renamed_temporary_file_commits_nothing() {
    let s = setup(&[("app", "v")]).await;
    let dir = path_ino(&s.fs, "app").await.unwrap();
    let (_, o) =
        s.fs.create(dir, ".t", libc::O_RDWR, 0o600, ME)
            .await
            .unwrap();
    s.fs.write(o.fh, 0, b"complete", PID()).await.unwrap();
    s.fs.rename(dir, ".t", dir, "current").await.unwrap();
    s.fs.setattr(ROOT, Some(o.fh), Some(0), Default::default(), PID())
        .await
        .unwrap();
    s.fs.write(o.fh, 0, b"HALF", PID()).await.unwrap();
    let killed = Closer {
        tgid: PID(),
        killed: true,
    };
    s.fs.flush(o.fh, killed).await.unwrap();
    s.fs.release(o.fh).await;
    assert_eq!(api_current(&s, "app").await, b"complete");
}

#[tokio::test(start_paused = true)]
async fn a_revoked_get_secret_value_is_noticed_behind_revalidation_within_fifteen_minutes() {
    let s = setup(&[("app", "v1")]).await;
    assert_eq!(read_all(&s.fs, "app/current").await.unwrap(), b"v1");
    *s.store.fail_gets.lock().unwrap() = Some(StoreErrorKind::AccessDenied);
    let start = tokio::time::Instant::now();
    let denied_at = loop {
        tokio::time::advance(PAST_TTL).await;
        match read_all(&s.fs, "app/current").await {
            Ok(v) => assert_eq!(v, b"v1"),
            Err(e) => {
                assert_eq!(e.errno(), libc::EACCES);
                break start.elapsed();
            }
        }
        assert!(start.elapsed() < Duration::from_secs(3600), "never noticed");
    };
    assert!(
        denied_at <= Duration::from_secs(15 * 60) + PAST_TTL,
        "{denied_at:?}"
    );
    let shown: serde_json::Value = serde_json::from_slice(&s.stats.render()).unwrap();
    assert!(
        shown["revalidated_unchanged"].as_u64().unwrap() >= 10,
        "{shown}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_put_whose_answer_is_lost_and_not_found_fails_and_the_next_read_asks_again() {
    let s = setup(&[("app", "old")]).await;
    assert_eq!(read_all(&s.fs, "app/current").await.unwrap(), b"old");
    s.store.lose_puts.store(true, Ordering::SeqCst);
    let e = write_all(&s.fs, "app/current", b"new", libc::O_TRUNC)
        .await
        .unwrap_err();
    assert_eq!(e.errno(), libc::EIO);
    // Unknown outcome: the cached value is not trusted any more.
    let gets = s.store.gets.load(Ordering::SeqCst);
    assert_eq!(read_all(&s.fs, "app/current").await.unwrap(), b"old");
    assert!(s.store.gets.load(Ordering::SeqCst) > gets, "asked again");
}

#[tokio::test(start_paused = true)]
async fn a_hung_listing_holds_up_neither_direct_lookups_nor_says_not_found() {
    let s = setup_with(&[("top", "t"), ("dir/nested", "n")], |c| {
        c.prefix = None;
    })
    .await;
    *s.store.list_delay.lock().unwrap() = Some(Duration::from_secs(50));
    let fs = s.fs.clone();
    let top = tokio::spawn(async move { read_all(&fs, "top/current").await });
    let fs = s.fs.clone();
    let dir = tokio::spawn(async move { path_ino(&fs, "dir").await });
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        top.is_finished() && dir.is_finished(),
        "waited past the cold wait"
    );
    assert_eq!(top.await.unwrap().unwrap(), b"t");
    // Only the listing knows that "dir" holds secrets: not an ENOENT.
    assert_eq!(dir.await.unwrap().unwrap_err().errno(), libc::EIO);
    tokio::time::sleep(Duration::from_secs(50)).await;
    assert_eq!(read_all(&s.fs, "dir/nested/current").await.unwrap(), b"n");
}
