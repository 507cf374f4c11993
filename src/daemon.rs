//! Process life: harden the process, open the store, mount, tell systemd,
//! serve until SIGTERM/SIGINT or an external unmount, then unmount and exit.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::SessionACL;

use crate::config::{Backend, Config};
use crate::fs::Fs;
use crate::fuse::{FuseAdapter, NotifyInvalidator};
use crate::mount::{self, How, MountSpec};
use crate::refusal::Refusal;
use crate::stats::Stats;
use crate::store::local::LocalStore;
use crate::store::ssm::SsmStore;
use crate::store::{Instrumented, SecretName, SecretStore};

/// No core dumps, no ptrace by same-uid processes.
fn harden() -> Result<(), String> {
    nix::sys::prctl::set_dumpable(false)
        .map_err(|e| format!("prctl(PR_SET_DUMPABLE): {}", std::io::Error::from(e)))
}

fn lock_memory() -> Result<(), String> {
    use nix::sys::mman::{MlockAllFlags, mlockall};
    mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE).map_err(|e| {
        let e = std::io::Error::from(e);
        format!(
            "--mlock: mlockall failed ({e}); raise RLIMIT_MEMLOCK (LimitMEMLOCK=infinity in the unit, or ulimit -l)"
        )
    })
}

/// A mountpoint left by a crashed instance answers ENOTCONN: detach it.
/// statfs always reaches the filesystem (stat may be answered from the
/// kernel's attribute cache), so it is the probe.
fn clean_stale_mount(mountpoint: &Path) {
    let dead = matches!(
        nix::sys::statfs::statfs(mountpoint),
        Err(nix::errno::Errno::ENOTCONN)
    );
    if dead {
        tracing::warn!(mountpoint = %mountpoint.display(), "stale FUSE mount left by a previous instance; detaching it");
        // Made by mount(2) or by fusermount3: whichever detaches it.
        if mount::unmount(mountpoint, How::Kernel, true).is_err()
            && let Err(e) = mount::unmount(mountpoint, How::Fusermount, true)
        {
            tracing::warn!(error = %e, "could not detach the stale mount");
        }
    }
}

/// sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET.
pub fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(_) => return,
    };
    let bytes = path.as_bytes();
    let sent = if let Some(abs) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abs)
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), Path::new(&path))
    };
    if let Err(e) = sent {
        tracing::debug!(error = %e, "could not notify systemd");
    }
}

async fn open_store(
    backend: &Backend,
    first_secret: Option<&SecretName>,
    stats: &Arc<Stats>,
) -> Result<Arc<dyn SecretStore>, Refusal> {
    Ok(match backend {
        // Checked before anything is mounted (preflight/): a configuration
        // error ends the start here, with its one line.
        Backend::Aws(opts) => crate::preflight::open_aws(opts, first_secret, stats).await?,
        Backend::Ssm(opts) => {
            let store: Arc<SsmStore> = crate::preflight::open_ssm(opts, first_secret).await?;
            store
        }
        Backend::Local { dir, demo } => {
            // In use by another daemon: that may pass (a restart); any
            // other refusal is the directory's.
            let store = LocalStore::open(dir).map_err(|e| {
                let line = format!("--local: {}", e.message);
                match e.is_transient() {
                    true => Refusal::failure(line),
                    false => Refusal::config(line),
                }
            })?;
            if *demo && store.is_empty() {
                store
                    .seed_demo()
                    .await
                    .map_err(|e| format!("seeding demo secrets: {e}"))?;
            }
            Arc::new(store)
        }
    })
}

/// The session's settings; the mount itself is made by `mount::mount`
/// (type `fuse.secretsfs`, nosuid, nodev, noexec, noatime,
/// default_permissions).
fn mount_config(cfg: &Config) -> fuser::Config {
    let mut mc = fuser::Config::default();
    mc.acl = if cfg.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    // Measured (benches/perf.rs): two session threads cut a lone reader's
    // open+close from ~52 to ~38 us on two cores (the kernel can wake the
    // one nearer the caller); more add nothing.
    mc.n_threads = Some(cfg.threads.get());
    mc
}

/// Whether mount(8) started us (fstab, `mount -t fuse.secretsfs`, systemd's
/// mount units): it waits for its helper to return, so we daemonise.
pub fn started_by_mount_helper() -> bool {
    // mount(8) -> mount.fuse3 (which becomes `sh -c`) -> secretsfs: look at
    // the parent and the grandparent.
    let mut pid = std::process::id();
    for _ in 0..2 {
        let Some(ppid) = parent_of(pid) else {
            return false;
        };
        let comm = std::fs::read_to_string(format!("/proc/{ppid}/comm")).unwrap_or_default();
        if matches!(comm.trim_end(), "mount" | "mount.fuse3" | "mount.fuse") {
            return true;
        }
        pid = ppid;
    }
    false
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok().filter(|p| *p > 1)
}

/// SIGHUP: the config file is loaded again (`config::reload`, as strictly
/// as at start) and its rules and templates replace the running ones. A
/// file that does not load is logged and the old rules and templates stay.
/// The one SIGHUP handler, installed before the mount, so that a SIGHUP sent
/// at once is not fatal.
fn reload_on_sighup(rt: &tokio::runtime::Runtime, fs: Arc<Fs>, config: Option<PathBuf>) {
    use tokio::signal::unix::{SignalKind, signal};
    let _entered = rt.enter();
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "no SIGHUP handler; the config file cannot be reloaded");
            return;
        }
    };
    rt.spawn(async move {
        while hup.recv().await.is_some() {
            let Some(path) = &config else {
                tracing::info!("SIGHUP without --config: no rules or templates to reload");
                continue;
            };
            match crate::config::reload(path) {
                Ok(r) => {
                    tracing::info!(rules = r.rules.len(), "SIGHUP: ownership rules reloaded");
                    fs.set_rules(r.rules);
                    match fs.set_access_rules(r.access) {
                        Ok(()) => tracing::info!("SIGHUP: access rules reloaded"),
                        Err(e) => tracing::error!(error = %e, "SIGHUP: access rules not reloaded"),
                    }
                    fs.reload_templates(r.templates);
                    fs.warn_unmatched_rules().await;
                }
                Err(e) => tracing::error!(
                    error = %e,
                    "SIGHUP: config file not reloaded (rules not reloaded, templates unchanged)"
                ),
            }
        }
    });
}

/// The end of a fork: the parent waits on the pipe, the child serves.
pub enum Forked {
    Parent(std::fs::File),
    Child(std::fs::File),
}

/// Forks before any thread exists. The child starts a new session and
/// tells the parent through the pipe when it is mounted (or why not).
pub fn fork_daemon() -> Result<Forked, String> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("pipe: {}", std::io::Error::from(e)))?;
    let (r, w) = (std::fs::File::from(r), std::fs::File::from(w));
    // SAFETY: fork is sound while this process has one thread (the child
    // then holds no lock another thread took): main calls this before
    // logging, the runtime or any other thread starts.
    match unsafe { libc::fork() } {
        -1 => Err(format!("fork: {}", std::io::Error::last_os_error())),
        0 => {
            drop(r);
            let _ = nix::unistd::setsid();
            let null = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null");
            if let Ok(null) = null {
                let _ = nix::unistd::dup2_stdin(&null);
                let _ = nix::unistd::dup2_stdout(&null);
            }
            Ok(Forked::Child(w))
        }
        _ => {
            drop(w);
            Ok(Forked::Parent(r))
        }
    }
}

/// How long SIGTERM waits for the unmount, then again for puts in flight,
/// before the daemon exits (well under systemd's 90 s stop timeout).
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Polls `done` until it holds or `limit` passes; whether it held.
fn wait_for(limit: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while !done() {
        if std::time::Instant::now() >= end {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    true
}

fn join(worker: std::thread::JoinHandle<std::io::Result<()>>) -> Result<(), Refusal> {
    match worker.join() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "session ended with an error");
            Ok(())
        }
        Err(_) => Err("session thread panicked".into()),
    }
}

/// One task per change hook: every interval, revalidate what it watches
/// and run it for what changed. Nothing polls when no hook is set.
fn start_watching(fs: &Arc<Fs>, rt: &tokio::runtime::Handle) {
    for (hook, every) in fs.hook_intervals().into_iter().enumerate() {
        let fs = fs.clone();
        rt.spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                fs.watch_tick(hook).await;
            }
        });
    }
}

pub fn run(cfg: Config, on_ready: impl FnOnce()) -> Result<(), Refusal> {
    harden()?;
    if cfg.mlock {
        lock_memory().map_err(Refusal::config)?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("secretsfs-rt")
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    if !cfg.start_jitter.is_zero() {
        // A fleet restarting at once spreads its first calls over the window.
        let wait = cfg.start_jitter.mul_f64(fastrand::f64());
        tracing::info!(wait_ms = wait.as_millis() as u64, "start-up jitter");
        std::thread::sleep(wait);
    }
    let stats = Arc::new(Stats::default());
    let first_secret = cfg.fs.secrets.as_deref().and_then(|s| s.first());
    let store = rt.block_on(open_store(&cfg.backend, first_secret, &stats))?;
    let store: Arc<dyn SecretStore> =
        Arc::new(Instrumented::new(store, stats.clone(), cfg.max_calls));
    let (invalidator, inval_rx) = NotifyInvalidator::channel();
    let mut fs_cfg = cfg.fs.clone();
    fs_cfg.store_kind = match cfg.backend {
        Backend::Aws(_) => "aws".into(),
        Backend::Ssm(_) => "ssm".into(),
        Backend::Local { .. } => "local".into(),
    };
    fs_cfg.mountpoint = cfg.mountpoint.display().to_string();
    let fs = Fs::new(fs_cfg, store, stats, invalidator);

    // The signal handlers come before the mount: once the mount is up, a
    // SIGHUP or a SIGTERM must reach them, not the default action (which
    // ends the process and leaves the mount dead).
    reload_on_sighup(&rt, fs.clone(), cfg.config_file.clone());
    let (mut term, mut int) = {
        use tokio::signal::unix::{SignalKind, signal};
        let _entered = rt.enter();
        (
            signal(SignalKind::terminate()).expect("SIGTERM handler"),
            signal(SignalKind::interrupt()).expect("SIGINT handler"),
        )
    };

    clean_stale_mount(&cfg.mountpoint);
    mount::check_mountpoint(&cfg.mountpoint, cfg.nonempty)?;
    let spec = MountSpec {
        read_only: cfg.fs.read_only,
        allow_other: cfg.allow_other,
        selinux: cfg.selinux.clone().for_this_host(),
    };
    let (dev, how) = mount::mount(&cfg.mountpoint, &spec)?;
    let adapter = FuseAdapter::new(fs.clone(), rt.handle().clone());
    let mc = mount_config(&cfg);
    let session = match fuser::Session::from_fd(adapter, dev, mc.acl, mc) {
        Ok(s) => s,
        Err(e) => {
            let _ = mount::unmount(&cfg.mountpoint, how, true);
            return Err(Refusal::failure(format!(
                "starting the session on {}: {e}",
                cfg.mountpoint.display()
            )));
        }
    };
    NotifyInvalidator::serve(inval_rx, session.notifier());
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let worker = std::thread::Builder::new()
        .name("secretsfs-fuse".into())
        .spawn(move || {
            let r = session.run();
            let _ = done_tx.send(());
            r
        })
        .map_err(|e| format!("starting the session: {e}"))?;
    tracing::info!(mountpoint = %cfg.mountpoint.display(), "mounted");
    start_watching(&fs, rt.handle());
    rt.spawn({
        let fs = fs.clone();
        async move { fs.warn_unmatched_rules().await }
    });
    sd_notify("READY=1");
    on_ready();

    let signalled = rt.block_on(async {
        tokio::select! {
            _ = term.recv() => true,
            _ = int.recv() => true,
            _ = done_rx => false,
        }
    });
    fs.stop_hooks();
    if signalled {
        sd_notify("STOPPING=1");
        tracing::info!("signal received; unmounting");
        if mount::unmount(&cfg.mountpoint, how, false).is_ok()
            && wait_for(SHUTDOWN_GRACE, || worker.is_finished())
        {
            join(worker)?;
        } else {
            // Busy: files open or a working directory in the mount. Detach
            // it (new opens fail, open files keep working), give puts in
            // flight the rest of the grace, then exit: the kernel ends the
            // connection, and what is still open gets ENOTCONN.
            if let Err(e) = mount::unmount(&cfg.mountpoint, how, true) {
                tracing::warn!(error = %e, "could not detach the mount");
            }
            let drained = wait_for(SHUTDOWN_GRACE, || fs.pending().0 == 0);
            let (puts, unsaved) = fs.pending();
            if !drained {
                tracing::error!(
                    puts,
                    "exiting with puts still in flight; their outcome is unknown until the next read"
                );
            }
            for name in unsaved {
                tracing::warn!(secret = %name, "a file open for writing had data no close stored; not stored");
            }
            tracing::info!("mount detached; exiting with files still open in it");
            rt.shutdown_timeout(std::time::Duration::from_millis(200));
            return Ok(());
        }
    } else {
        join(worker)?;
    }
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    tracing::info!("unmounted; exiting");
    Ok(())
}
