//! Test harness: a moto server (Secrets Manager emulator) on a free loopback
//! port, a counting and fault-injecting proxy in front of it, real mounts of
//! the secretsfs binary with RAII guards, and an SDK client to check effects.
#![allow(dead_code)]

pub mod proxy;

use std::ffi::CString;
use std::io::Read;
use std::net::TcpStream;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::{Credentials, Region};
use aws_sdk_secretsmanager::primitives::Blob;

#[allow(unused_imports)]
pub use proxy::{Fault, Proxy};

pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn moto_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SECRETSFS_MOTO_SERVER") {
        return p.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/moto-venv/bin/moto_server");
    if venv.exists() {
        return venv;
    }
    panic!(
        "moto_server not found at {}: run ./run-tests (it installs moto into target/moto-venv)",
        venv.display()
    );
}

/// Kills the child when the thread that spawned it ends.
fn die_with_parent(cmd: &mut Command, sig: i32) {
    // SAFETY: prctl is async-signal-safe and takes integer arguments.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, sig);
            Ok(())
        });
    }
}

/// One moto server per test binary, shared by its tests (which use unique
/// secret names). It is spawned from a thread that lives as long as the test
/// process, with PDEATHSIG, so it dies with the process whatever happens.
pub fn moto_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let port = free_port();
            let mut cmd = Command::new(moto_binary());
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            die_with_parent(&mut cmd, libc::SIGKILL);
            let mut child = cmd.spawn().expect("start moto_server");
            tx.send((port, child.id())).unwrap();
            // This thread outlives every test; moto goes when the process does.
            let _ = child.wait();
        });
        let (port, _pid) = rx.recv().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        port
    })
}

pub fn moto_url() -> String {
    format!("http://127.0.0.1:{}", moto_port())
}

/// An SDK client straight to moto (not through a test's proxy, so the
/// checks do not count as the daemon's calls).
pub fn sdk() -> Client {
    let conf = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(moto_url())
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .build();
    Client::from_conf(conf)
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

pub fn create(name: &str, value: &str) -> String {
    rt().block_on(sdk().create_secret().name(name).secret_string(value).send())
        .expect("create secret")
        .version_id()
        .unwrap()
        .to_string()
}

pub fn create_binary(name: &str, value: &[u8]) -> String {
    rt().block_on(
        sdk()
            .create_secret()
            .name(name)
            .secret_binary(Blob::new(value))
            .send(),
    )
    .expect("create secret")
    .version_id()
    .unwrap()
    .to_string()
}

pub fn put(name: &str, value: &str) -> String {
    rt().block_on(
        sdk()
            .put_secret_value()
            .secret_id(name)
            .secret_string(value)
            .send(),
    )
    .expect("put secret value")
    .version_id()
    .unwrap()
    .to_string()
}

/// (version id, string, binary) of a stage, through the API.
pub fn stage(name: &str, label: &str) -> Option<(String, Option<String>, Option<Vec<u8>>)> {
    let out = rt()
        .block_on(
            sdk()
                .get_secret_value()
                .secret_id(name)
                .version_stage(label)
                .send(),
        )
        .ok()?;
    Some((
        out.version_id().unwrap().to_string(),
        out.secret_string().map(str::to_string),
        out.secret_binary().map(|b| b.as_ref().to_vec()),
    ))
}

pub fn current_string(name: &str) -> String {
    stage(name, "AWSCURRENT").unwrap().1.unwrap()
}

pub fn version_ids(name: &str) -> Vec<String> {
    rt().block_on(sdk().list_secret_version_ids().secret_id(name).send())
        .unwrap()
        .versions()
        .iter()
        .map(|v| v.version_id().unwrap().to_string())
        .collect()
}

/// statfs reaches the filesystem every time: a live daemon answers it.
fn answers(path: &Path) -> bool {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: statfs into a zeroed struct we own.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0
    }
}

/// Whether `path` is a mount point now (listed in /proc/mounts).
pub fn mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let want = path.to_str().unwrap();
    mounts.lines().any(|l| l.split(' ').nth(1) == Some(want))
}

/// Detaches the mount at `path`, if there is one (a daemon that was killed
/// or refused to stop leaves it behind).
pub fn unmount_if_mounted(path: &Path) {
    if mounted(path) {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Held by every running `Mount` (shared) and by a test that needs the
/// machine without other tests' daemons (exclusive). The real-mount tests
/// share one binary, so its tests run side by side on libtest's threads;
/// when they were separate binaries, cargo ran the binaries one after the
/// other, and the heaviest ones (a container booting systemd, a release
/// build for the package) ran with no daemon beside them.
static DAEMONS: parking_lot::RwLock<()> = parking_lot::const_rwlock(());

/// For a test that must not run beside other tests' mounts: waits until no
/// `Mount` runs, and holds new ones back until the guard is dropped.
pub fn alone() -> parking_lot::RwLockWriteGuard<'static, ()> {
    DAEMONS.write()
}

/// A running daemon and its mount; dropping it unmounts and stops it, also
/// when the test panics.
pub struct Mount {
    child: Option<Child>,
    // Recursive: a test that holds a mount may start another while an
    // `alone()` test waits, without a deadlock. Dropped after `drop` has
    // stopped the daemon (fields drop after it).
    _beside_others: parking_lot::RwLockReadGuard<'static, ()>,
    dir: tempfile::TempDir,
    pub path: PathBuf,
    pub log: PathBuf,
}

pub struct MountBuilder {
    args: Vec<String>,
    env: Vec<(String, String)>,
    endpoint: Option<String>,
    wait: bool,
    at: Option<PathBuf>,
    wrapper: Vec<String>,
}

impl MountBuilder {
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, a: I) -> Self {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    /// Talk to this endpoint (a proxy) instead of moto directly.
    pub fn endpoint(mut self, url: String) -> Self {
        self.endpoint = Some(url);
        self
    }
    /// Mount at this existing path instead of a fresh one.
    pub fn at(mut self, path: &Path) -> Self {
        self.at = Some(path.to_path_buf());
        self
    }

    /// Run the daemon under this command (`strace -f -o FILE`, say).
    pub fn wrap<I: IntoIterator<Item = S>, S: Into<String>>(mut self, cmd: I) -> Self {
        self.wrapper = cmd.into_iter().map(Into::into).collect();
        self
    }

    pub fn start(self) -> Mount {
        let dir = tempfile::tempdir().unwrap();
        let path = match self.at {
            Some(p) => p,
            None => {
                let p = dir.path().join("mnt");
                std::fs::create_dir(&p).unwrap();
                p
            }
        };
        let log = dir.path().join("daemon.log");
        // SECRETSFS_BIN: another build, for before/after figures
        // (benches/figures.rs); the tests use this tree's.
        let daemon = std::env::var("SECRETSFS_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_secretsfs").to_string());
        let mut cmd = match self.wrapper.split_first() {
            Some((w, rest)) => {
                let mut c = Command::new(w);
                c.args(rest).arg(daemon);
                c
            }
            None => Command::new(daemon),
        };
        cmd.args(&self.args)
            .arg(&path)
            .env("AWS_ENDPOINT_URL", self.endpoint.unwrap_or_else(moto_url))
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "info")
            .envs(self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        die_with_parent(&mut cmd, libc::SIGTERM);
        let beside_others = DAEMONS.read_recursive();
        let child = cmd.spawn().expect("start secretsfs");
        let mut m = Mount {
            child: Some(child),
            _beside_others: beside_others,
            dir,
            path,
            log,
        };
        if self.wait {
            m.wait_mounted();
        }
        m
    }
}

impl MountBuilder {
    /// Starts without waiting for the mount (a test that waits its own way).
    pub fn start_unwaited(mut self) -> Mount {
        self.wait = false;
        self.start()
    }
}

/// A mount of exactly `secret` (plus `args`) through a fresh counting,
/// fault-injecting proxy.
pub fn mount_via_proxy(secret: &str, args: &[&str]) -> (Proxy, Mount) {
    let proxy = Proxy::start();
    let m = Mount::aws()
        .endpoint(proxy.url())
        .args(["--secret", secret])
        .args(args.iter().copied())
        .start();
    (proxy, m)
}

impl Mount {
    /// Against moto (the default endpoint).
    pub fn aws() -> MountBuilder {
        MountBuilder {
            args: vec![],
            env: vec![],
            endpoint: None,
            wait: true,
            at: None,
            wrapper: vec![],
        }
    }

    pub fn local(store: &Path) -> MountBuilder {
        // A store only its owner can read, as the daemon wants it (it warns
        // about others).
        if let Ok(m) = std::fs::metadata(store) {
            use std::os::unix::fs::PermissionsExt;
            let private = m.permissions().mode() & 0o077 == 0;
            if m.is_dir() && !private {
                let _ = std::fs::set_permissions(store, std::fs::Permissions::from_mode(0o700));
            }
        }
        Mount::aws().arg("--local").arg(store.to_str().unwrap())
    }

    fn wait_mounted(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        // A stale mount of a crashed daemon is listed too but answers
        // ENOTCONN: wait for one that answers.
        while !(mounted(&self.path) && answers(&self.path)) {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("secretsfs exited early ({status}): {}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "mount did not appear: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    pub fn read(&self, rel: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.p(rel))
    }

    pub fn read_string(&self, rel: &str) -> String {
        String::from_utf8(self.read(rel).unwrap_or_else(|e| panic!("read {rel}: {e}"))).unwrap()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stats(&self) -> serde_json::Value {
        serde_json::from_slice(&self.read(".secretsfs/stats").unwrap()).unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM, then wait for the daemon: its exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.force_unmount();
                panic!("secretsfs did not exit on SIGTERM: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn is_mounted(&self) -> bool {
        mounted(&self.path)
    }

    /// SIGKILL: the daemon dies without unmounting, as in a crash.
    pub fn crash(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }

    fn force_unmount(&self) {
        unmount_if_mounted(&self.path);
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.force_unmount();
        let _ = &self.dir;
    }
}

/// open + write + close with raw syscalls, so that close's error is seen
/// (std's File ignores it). Returns the errno of the first failing call.
pub fn write_file(path: &Path, data: &[u8], flags: i32) -> Result<(), i32> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: plain syscalls on a path and a buffer we own.
    unsafe {
        let fd = libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o600);
        if fd < 0 {
            return Err(*libc::__errno_location());
        }
        let mut off = 0;
        while off < data.len() {
            let n = libc::write(fd, data[off..].as_ptr().cast(), data.len() - off);
            if n < 0 {
                let e = *libc::__errno_location();
                libc::close(fd);
                return Err(e);
            }
            off += n as usize;
        }
        if libc::close(fd) != 0 {
            return Err(*libc::__errno_location());
        }
    }
    Ok(())
}

pub fn replace_file(path: &Path, data: &[u8]) -> Result<(), i32> {
    write_file(path, data, libc::O_WRONLY | libc::O_TRUNC)
}

pub fn sh(cmd: &str, dir: &Path) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .output()
        .expect("run sh")
}

/// A directory's entry names, sorted.
pub fn ls(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

pub fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

pub fn read_all(mut r: impl Read) -> Vec<u8> {
    let mut v = Vec::new();
    r.read_to_end(&mut v).unwrap();
    v
}

/// Polls `f` every 20 ms until it holds or `limit` passes; whether it held
/// (checked once more at the end).
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// A file's lines; none when it does not exist (yet).
pub fn lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Asserts that `cmd`, run with sh in `dir`, succeeds.
pub fn sh_ok(cmd: &str, dir: &Path) {
    let out = sh(cmd, dir);
    assert!(out.status.success(), "{cmd}: {out:?}");
}

/// Runs `cmd` as uid/gid `uid`, no supplementary groups.
pub fn as_user(uid: u32, cmd: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid",
            &uid.to_string(),
            "--regid",
            &uid.to_string(),
            "--clear-groups",
        ])
        .args(cmd)
        .output()
        .expect("run setpriv")
}

/// open(2) of `path` (mode 0600 if it creates), close-on-exec so that
/// processes other tests spawn meanwhile do not hold it (children that
/// should get it get a dup); panics if it fails.
pub fn raw_open(path: &Path, flags: i32) -> i32 {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: plain open of a NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o600) };
    assert!(fd >= 0, "open {}", path.display());
    fd
}

/// Each version id with its staging labels (those with any), through the API.
pub fn labels(name: &str) -> std::collections::BTreeMap<String, Vec<String>> {
    let out = rt()
        .block_on(sdk().describe_secret().secret_id(name).send())
        .expect("describe");
    out.version_ids_to_stages()
        .unwrap()
        .iter()
        .filter(|(_, l)| !l.is_empty())
        .map(|(id, l)| (id.clone(), l.clone()))
        .collect()
}

/// A put made elsewhere that carries only `label`: its version id.
pub fn put_staged(name: &str, value: &str, label: &str) -> String {
    rt().block_on(
        sdk()
            .put_secret_value()
            .secret_id(name)
            .secret_string(value)
            .version_stages(label)
            .send(),
    )
    .expect("put with a stage")
    .version_id()
    .unwrap()
    .to_string()
}
