//! Process life: harden the process, open the store, mount, tell systemd,
//! serve until SIGTERM/SIGINT or an external unmount, then unmount and exit.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use fuser::{MountOption, SessionACL};

use crate::config::{Backend, Config};
use crate::fs::Fs;
use crate::fuse::{FuseAdapter, NotifyInvalidator};
use crate::stats::Stats;
use crate::store::aws::AwsStore;
use crate::store::local::LocalStore;
use crate::store::{Instrumented, SecretStore};

/// No core dumps, no ptrace by same-uid processes.
fn harden() -> Result<(), String> {
    // SAFETY: plain prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(format!(
            "prctl(PR_SET_DUMPABLE): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn lock_memory() -> Result<(), String> {
    // SAFETY: mlockall takes flags only.
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!(
            "--mlock: mlockall failed ({e}); raise RLIMIT_MEMLOCK (LimitMEMLOCK=infinity in the unit, or ulimit -l)"
        ));
    }
    Ok(())
}

/// A mountpoint left by a crashed instance answers ENOTCONN: detach it.
fn clean_stale_mount(mountpoint: &Path) {
    if let Err(e) = std::fs::metadata(mountpoint)
        && e.raw_os_error() == Some(libc::ENOTCONN)
    {
        tracing::warn!(mountpoint = %mountpoint.display(), "stale FUSE mount left by a previous instance; detaching it");
        if let Ok(c) = CString::new(mountpoint.as_os_str().as_bytes()) {
            // SAFETY: valid NUL-terminated path.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                let _ = std::process::Command::new("fusermount3")
                    .arg("-uz")
                    .arg(mountpoint)
                    .status();
            }
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
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

async fn open_store(backend: &Backend) -> Result<Arc<dyn SecretStore>, String> {
    Ok(match backend {
        Backend::Aws(opts) => Arc::new(AwsStore::connect(opts).await),
        Backend::Local { dir, demo } => {
            let store =
                LocalStore::open(dir).map_err(|e| format!("--local {}: {e}", dir.display()))?;
            if *demo && store.is_empty() {
                store
                    .seed_demo()
                    .map_err(|e| format!("seeding demo secrets: {e}"))?;
            }
            Arc::new(store)
        }
    })
}

fn mount_config(cfg: &Config) -> fuser::Config {
    let mut mc = fuser::Config::default();
    mc.mount_options = vec![
        MountOption::FSName("secretsfs".into()),
        MountOption::Subtype("secretsfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::NoExec,
        MountOption::NoAtime,
        if cfg.fs.read_only {
            MountOption::RO
        } else {
            MountOption::RW
        },
    ];
    mc.acl = if cfg.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    // One session thread: on two cores more threads only add wake-ups, and
    // nothing waits on the network in a session thread.
    mc.n_threads = Some(1);
    mc
}

pub fn run(cfg: Config) -> Result<(), String> {
    harden()?;
    if cfg.mlock {
        lock_memory()?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("secretsfs-rt")
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let stats = Arc::new(Stats::default());
    let store = rt.block_on(open_store(&cfg.backend))?;
    let store: Arc<dyn SecretStore> = Arc::new(Instrumented::new(store, stats.clone()));
    let (invalidator, inval_rx) = NotifyInvalidator::channel();
    let fs = Fs::new(cfg.fs.clone(), store, stats, invalidator);

    clean_stale_mount(&cfg.mountpoint);
    if !cfg.mountpoint.exists() {
        std::fs::create_dir_all(&cfg.mountpoint)
            .map_err(|e| format!("creating mountpoint {}: {e}", cfg.mountpoint.display()))?;
    }
    let adapter = FuseAdapter::new(fs, rt.handle().clone());
    let mut session = fuser::Session::new(adapter, &cfg.mountpoint, &mount_config(&cfg))
        .map_err(|e| format!("mounting {}: {e}", cfg.mountpoint.display()))?;
    NotifyInvalidator::serve(inval_rx, session.notifier());
    let mut unmounter = session.unmount_callable();
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
    sd_notify("READY=1");

    let signalled = rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => true,
            _ = int.recv() => true,
            _ = done_rx => false,
        }
    });
    if signalled {
        sd_notify("STOPPING=1");
        tracing::info!("signal received; unmounting");
        if let Err(e) = unmounter.unmount() {
            tracing::warn!(error = %e, "unmount failed; detaching lazily");
            if let Ok(c) = CString::new(cfg.mountpoint.as_os_str().as_bytes()) {
                // SAFETY: valid NUL-terminated path.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
    match worker.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "session ended with an error"),
        Err(_) => return Err("session thread panicked".into()),
    }
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    tracing::info!("unmounted; exiting");
    Ok(())
}
