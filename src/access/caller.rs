//! Who is behind a request, from /proc: the process (thread group), its
//! executable, its systemd unit and its groups. /proc is read off the FUSE
//! threads, in a blocking job bounded by `PROC_WAIT` (reading a task's
//! /proc files can block while it exits: the killed-writer check met it),
//! and what is read is kept per (pid, start time) for `CACHE_FOR`. With
//! it a pidfd of the process: while the pidfd says the process has not
//! exited, its pid is still its own, so a hot loop of opens is answered
//! from memory with one poll(2) and no /proc read, on the FUSE thread
//! (no hand-over to another thread). The pidfd is the thread's (FUSE
//! sends a thread's id) on Linux 6.9 and later; before that a thread other
//! than its process's leader has none, and its hits read /proc/PID/stat,
//! off the FUSE thread.
//! A process that cannot be inspected (gone, /proc unreadable, too slow)
//! is `None`: callers refuse it.

use std::collections::HashMap;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long /proc may take to answer for one caller.
pub const PROC_WAIT: Duration = Duration::from_secs(1);
/// How long what /proc said of a (pid, start time) is trusted.
pub const CACHE_FOR: Duration = Duration::from_secs(2);
/// Most processes remembered at once (expired ones go first); each may
/// hold a pidfd, so this stays well below the usual 1024 descriptors.
const MAX_CACHED: usize = 256;

/// What /proc says of a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcInfo {
    /// The thread group (the process id a user knows).
    pub tgid: u32,
    /// /proc/PID/exe: the path the running executable was started from
    /// (without the kernel's " (deleted)" mark of a file replaced or
    /// removed since, as a package upgrade does), None if unreadable.
    pub exe: Option<String>,
    /// The systemd unit from /proc/PID/cgroup (first non-slice component).
    pub unit: Option<String>,
    /// The filesystem gid and the supplementary groups.
    pub gid: u32,
    pub groups: Vec<u32>,
}

struct Cached {
    start: u64,
    at: Instant,
    info: Arc<ProcInfo>,
    /// The process itself (None: not a thread-group leader, or no pidfd).
    pidfd: Option<OwnedFd>,
}

/// The per-(pid, start time) cache of `ProcInfo`.
#[derive(Default)]
pub struct Inspector {
    cache: Mutex<HashMap<u32, Cached>>,
}

impl Inspector {
    /// The process behind thread `pid`, read off this thread and bounded;
    /// None if it cannot be inspected.
    pub async fn inspect(self: &Arc<Self>, pid: u32) -> Option<Arc<ProcInfo>> {
        if let Some(info) = self.held(pid) {
            return Some(info);
        }
        let me = self.clone();
        let job = tokio::task::spawn_blocking(move || me.inspect_blocking(pid));
        match tokio::time::timeout(PROC_WAIT, job).await {
            Ok(Ok(info)) => info,
            _ => {
                tracing::warn!(pid, "/proc did not answer for the caller in time; refused");
                None
            }
        }
    }

    /// The process behind thread `pid` read again from /proc, whatever
    /// was held: the cache is per (pid, start time), which exec keeps, so
    /// what it holds may name the program the process ran before. A
    /// refusal asks this once before it is final.
    pub async fn refresh(self: &Arc<Self>, pid: u32) -> Option<Arc<ProcInfo>> {
        self.cache.lock().remove(&pid);
        self.inspect(pid).await
    }

    /// A fresh entry whose process has not exited (its pidfd says so,
    /// without blocking): no /proc read at all.
    pub fn held(&self, pid: u32) -> Option<Arc<ProcInfo>> {
        let cache = self.cache.lock();
        let c = cache.get(&pid)?;
        let fd = c.pidfd.as_ref()?;
        (c.at.elapsed() < CACHE_FOR && !exited(fd)).then(|| c.info.clone())
    }

    /// The blocking part: one read of /proc/PID/stat on a hit.
    fn inspect_blocking(&self, pid: u32) -> Option<Arc<ProcInfo>> {
        if pid == 0 {
            // The caller is not in our pid namespace: nothing to inspect.
            return None;
        }
        let start = start_time(pid)?;
        if let Some(c) = self.cache.lock().get(&pid)
            && c.start == start
            && c.at.elapsed() < CACHE_FOR
        {
            return Some(c.info.clone());
        }
        let info = Arc::new(read_info(pid)?);
        let pidfd = pidfd_open(pid);
        // The pid may have been reused while we read: the same start time
        // after the reads (and the pidfd) says they were all of one process.
        if start_time(pid)? != start {
            return None;
        }
        let mut cache = self.cache.lock();
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, c| c.at.elapsed() < CACHE_FOR);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        let at = Instant::now();
        let cached = Cached {
            start,
            at,
            info: info.clone(),
            pidfd,
        };
        cache.insert(pid, cached);
        Some(info)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.cache.lock().len()
    }
}

/// pidfd_open's flag for a pidfd of one thread (Linux 6.9), whose poll
/// says when that thread exits; its value is O_EXCL's.
const PIDFD_THREAD: libc::c_uint = libc::O_EXCL as libc::c_uint;

/// A pidfd of thread `pid` (Linux 6.9), else of process `pid` (None for a
/// thread that is not its process's leader on older kernels, or a kernel
/// without pidfds).
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    let open = |flags: libc::c_uint| {
        // SAFETY: pidfd_open takes a pid and flags and returns a new
        // descriptor or -1; nix has no wrapper for it.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, flags) };
        let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
        // SAFETY: `fd` was just returned to us open, and nothing else owns it.
        Some(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    open(PIDFD_THREAD).or_else(|| open(0))
}

/// Whether the process of a pidfd has exited (poll says readable); an
/// error counts as exited.
fn exited(fd: &OwnedFd) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(0))
}

fn proc_file(pid: u32, name: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/{name}")).ok()
}

/// Field 22 (starttime) of /proc/PID/stat, counted after the command
/// name's last ')'.
fn start_time(pid: u32) -> Option<u64> {
    stat_start(&proc_file(pid, "stat")?)
}

fn stat_start(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn read_info(pid: u32) -> Option<ProcInfo> {
    let status = proc_file(pid, "status")?;
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
    };
    let tgid = field("Tgid:")?.parse().ok()?;
    // Gid: real, effective, saved, filesystem.
    let gid = field("Gid:")?.split_whitespace().nth(3)?.parse().ok()?;
    let groups = field("Groups:")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|g| g.parse().ok())
        .collect();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| exe_path(&p.to_string_lossy()));
    let unit = proc_file(pid, "cgroup").and_then(|c| unit_of(&c));
    Some(ProcInfo {
        tgid,
        exe,
        unit,
        gid,
        groups,
    })
}

/// The path a /proc/PID/exe link names: a program upgraded while it runs
/// (the new file renamed over its own) is still the program of that path.
fn exe_path(link: &str) -> String {
    link.strip_suffix(" (deleted)").unwrap_or(link).to_string()
}

/// The systemd unit of a /proc/PID/cgroup: the first component of the
/// cgroup path that is not a slice (systemd's own rule), from the unified
/// hierarchy (`0::`), else from the legacy `name=systemd` one. A user's
/// service is under `user@UID.service`, which is its unit here: only
/// root can place a process in a system unit's cgroup.
pub fn unit_of(cgroup: &str) -> Option<String> {
    let unified = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .filter(|p| *p != "/");
    let legacy = || {
        cgroup
            .lines()
            .find_map(|l| l.split_once(":name=systemd:").map(|(_, p)| p))
    };
    unified
        .or_else(legacy)?
        .split('/')
        .find(|c| !c.is_empty() && !c.ends_with(".slice"))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_is_the_first_component_that_is_not_a_slice() {
        let v2 = "0::/system.slice/nginx.service\n";
        assert_eq!(unit_of(v2).as_deref(), Some("nginx.service"));
        let user = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/x.service\n";
        assert_eq!(unit_of(user).as_deref(), Some("user@1000.service"));
        let hybrid = "9:name=systemd:/system.slice/cron.service\n0::/\n";
        assert_eq!(unit_of(hybrid).as_deref(), Some("cron.service"));
        assert_eq!(unit_of("0::/\n"), None);
        assert_eq!(unit_of("0::/system.slice\n"), None);
        assert_eq!(unit_of("0::/init.scope\n").as_deref(), Some("init.scope"));
    }

    #[test]
    fn an_executable_replaced_since_it_started_keeps_its_path() {
        assert_eq!(exe_path("/usr/sbin/nginx (deleted)"), "/usr/sbin/nginx");
        assert_eq!(exe_path("/usr/sbin/nginx"), "/usr/sbin/nginx");
    }

    #[test]
    fn the_start_time_is_read_after_the_command_name() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 777 0";
        assert_eq!(stat_start(stat), Some(777));
    }

    #[tokio::test]
    async fn this_process_is_inspected_and_cached() {
        let i = Arc::new(Inspector::default());
        let me = i.inspect(std::process::id()).await.unwrap();
        assert_eq!(me.tgid, std::process::id());
        let exe = std::env::current_exe().unwrap();
        assert_eq!(me.exe.as_deref(), exe.to_str());
        assert_eq!(i.len(), 1);
        let again = i.inspect(std::process::id()).await.unwrap();
        assert!(Arc::ptr_eq(&me, &again), "a hit in the cache");
        assert!(i.held(std::process::id()).is_some(), "held by its pidfd");
    }

    #[tokio::test]
    async fn a_thread_is_its_process_and_not_held_once_it_exits() {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            tid_tx.send(nix::unistd::gettid().as_raw() as u32).unwrap();
            go_rx.recv().unwrap();
        });
        let tid = tid_rx.recv().unwrap();
        let i = Arc::new(Inspector::default());
        let info = i.inspect(tid).await.unwrap();
        assert_eq!(info.tgid, std::process::id());
        go_tx.send(()).unwrap();
        t.join().unwrap();
        assert!(
            i.held(tid).is_none(),
            "the thread exited: its id may be another's"
        );
    }

    #[tokio::test]
    async fn an_exited_process_is_not_held_by_its_pidfd() {
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        let pid = child.id();
        let i = Arc::new(Inspector::default());
        assert!(i.inspect(pid).await.is_some());
        assert!(i.held(pid).is_some());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(i.held(pid).is_none(), "exited: its pid may be another's");
        assert_eq!(i.inspect(pid).await, None);
    }

    /// Review 23, finding 11 (performance): more live callers than
    /// MAX_CACHED (a server with 300 worker threads; FUSE names threads)
    /// empty the whole cache each time it fills, so callers taking turns
    /// are never held: every open reads /proc on the blocking pool. On a
    /// mount, 300 threads reading in turns cost 2.2x per open with a rule
    /// (218 us against 99 us without), 200 threads 1.1x.
    #[tokio::test]
    async fn more_live_callers_than_the_cache_holds_are_still_held() {
        let n = MAX_CACHED + 44;
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let go_rx = Arc::new(std::sync::Mutex::new(go_rx));
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let (tid_tx, go_rx) = (tid_tx.clone(), go_rx.clone());
                std::thread::spawn(move || {
                    tid_tx.send(nix::unistd::gettid().as_raw() as u32).unwrap();
                    let _ = go_rx.lock().unwrap().recv();
                })
            })
            .collect();
        let tids: Vec<u32> = (0..n).map(|_| tid_rx.recv().unwrap()).collect();
        let i = Arc::new(Inspector::default());
        for t in &tids {
            assert!(i.inspect(*t).await.is_some());
        }
        let held = tids.iter().filter(|t| i.held(**t).is_some()).count();
        drop(go_tx);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(held, n, "live callers inspected within CACHE_FOR");
    }

    #[tokio::test]
    async fn a_vanished_process_cannot_be_inspected() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let i = Arc::new(Inspector::default());
        assert_eq!(i.inspect(pid).await, None);
        assert_eq!(i.inspect(0).await, None);
    }
}
