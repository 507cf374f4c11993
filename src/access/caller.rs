//! Who is behind a request, from /proc: the process (thread group), its
//! executable, its systemd unit and its groups. /proc is read off the FUSE
//! threads, in a blocking job bounded by `PROC_WAIT` (reading a task's
//! /proc files can block while it exits: the killed-writer check met it),
//! and what is read is kept for `CACHE_FOR`, per process: FUSE sends the
//! id of the calling thread, and all the threads of a process share one
//! entry (a server's 300 worker threads are one process, not 300).
//! - `procs`: per thread group, what /proc said, the process's start time
//!   and a pidfd of the process. While the pidfd says the process has not
//!   exited its pid is still its own. At most `MAX_CACHED` processes,
//!   the least recently used evicted first (each holds a descriptor).
//! - `threads`: per thread id, its thread group and its start time (no
//!   descriptor), at most `MAX_THREADS`, least recently used first.
//!
//! A hot loop of opens is answered from memory on the FUSE thread (no
//! hand-over to another thread) with two system calls and no /proc read:
//! `tgkill(tgid, tid, 0)` says the thread is still one of the process's
//! (its id cannot have been reused while it is), then one poll(2) on the
//! process's pidfd says the process still runs (so its pid, and the
//! answer of tgkill, were its own). A thread first seen reads only
//! /proc/TID/stat and status when its process is held.
//!
//! A process that cannot be inspected (gone, /proc unreadable, too slow)
//! is `None`: callers refuse it.

use std::num::NonZeroUsize;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;

/// How long /proc may take to answer for one caller.
pub const PROC_WAIT: Duration = Duration::from_secs(1);
/// How long what /proc said of a process is trusted.
pub const CACHE_FOR: Duration = Duration::from_secs(2);
/// Most processes remembered at once (the least recently used go first);
/// each holds a pidfd, so this stays well below the usual 1024
/// descriptors.
const MAX_CACHED: usize = 256;
/// Most threads remembered at once (no descriptor each: a few bytes).
const MAX_THREADS: usize = 16_384;

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
    /// The filesystem gid and the supplementary groups (those of the
    /// first thread of the process inspected: threads of one process
    /// share them in practice, glibc sets them for all).
    pub gid: u32,
    pub groups: Vec<u32>,
}

struct Process {
    /// The process's start time (its leader's), which a reused pid lacks.
    start: u64,
    at: Instant,
    info: Arc<ProcInfo>,
    /// The process itself (None: the kernel gave no pidfd).
    pidfd: Option<OwnedFd>,
}

/// A thread seen: its process, and its own start time.
#[derive(Clone, Copy)]
struct Thread {
    tgid: u32,
    start: u64,
}

struct Cache {
    procs: LruCache<u32, Process>,
    threads: LruCache<u32, Thread>,
}

impl Default for Cache {
    fn default() -> Self {
        let n = |n| NonZeroUsize::new(n).expect("not zero");
        Self {
            procs: LruCache::new(n(MAX_CACHED)),
            threads: LruCache::new(n(MAX_THREADS)),
        }
    }
}

impl Cache {
    /// The fresh entry of the process of thread `tid` seen with start
    /// time `start` (any start time: None).
    fn fresh(&mut self, tid: u32, start: Option<u64>) -> Option<&Process> {
        let t = *self.threads.get(&tid)?;
        if start.is_some_and(|s| s != t.start) {
            return None;
        }
        self.procs
            .get(&t.tgid)
            .filter(|p| p.at.elapsed() < CACHE_FOR)
    }
}

/// The per-process cache of `ProcInfo`.
#[derive(Default)]
pub struct Inspector {
    cache: Mutex<Cache>,
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
        {
            let mut c = self.cache.lock();
            if let Some(t) = c.threads.pop(&pid) {
                c.procs.pop(&t.tgid);
            }
        }
        self.inspect(pid).await
    }

    /// A fresh entry whose thread is still its process's and whose
    /// process has not exited (without blocking): no /proc read at all.
    pub fn held(&self, pid: u32) -> Option<Arc<ProcInfo>> {
        let mut cache = self.cache.lock();
        let p = cache.fresh(pid, None)?;
        let fd = p.pidfd.as_ref()?;
        // The thread first, then the process: if the process still runs
        // after the thread was found in it, its pid was its own then.
        let ours = p.info.tgid == pid || in_group(p.info.tgid, pid);
        (ours && !exited(fd)).then(|| p.info.clone())
    }

    /// The blocking part: one read of /proc/PID/stat on a hit.
    fn inspect_blocking(&self, pid: u32) -> Option<Arc<ProcInfo>> {
        if pid == 0 {
            // The caller is not in our pid namespace: nothing to inspect.
            return None;
        }
        let start = start_time(pid)?;
        if let Some(p) = self.cache.lock().fresh(pid, Some(start)) {
            return Some(p.info.clone());
        }
        let status = read_status(pid)?;
        let tgid = status.tgid;
        let pstart = if tgid == pid {
            start
        } else {
            start_time(tgid)?
        };
        // Another thread of a process held: the process's entry is this
        // thread's too, with no more /proc reads.
        let known = {
            let mut c = self.cache.lock();
            c.procs
                .get(&tgid)
                .filter(|p| p.start == pstart && p.at.elapsed() < CACHE_FOR)
                .map(|p| p.info.clone())
        };
        let shared = known.is_some();
        let (info, pidfd) = match known {
            Some(info) => (info, None),
            None => (Arc::new(read_info(pid, status)), pidfd_open(tgid)),
        };
        // The pids may have been reused while we read: the same start
        // times after the reads (and the pidfd) say they were all of one
        // thread and one process.
        if start_time(pid)? != start || start_time(tgid)? != pstart {
            return None;
        }
        let mut cache = self.cache.lock();
        cache.threads.put(pid, Thread { tgid, start });
        if !shared || !cache.procs.contains(&tgid) {
            let process = Process {
                start: pstart,
                at: Instant::now(),
                info: info.clone(),
                pidfd: pidfd.or_else(|| pidfd_open(tgid)),
            };
            cache.procs.put(tgid, process);
        }
        Some(info)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.cache.lock().procs.len()
    }

    /// An inspector that remembers at most `procs` processes.
    #[cfg(test)]
    fn holding(procs: usize) -> Self {
        let mut cache = Cache::default();
        cache.procs.resize(NonZeroUsize::new(procs).unwrap());
        Self {
            cache: Mutex::new(cache),
        }
    }
}

/// A pidfd of process `pid` (None on a kernel without pidfds, or when its
/// leader is gone).
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new
    // descriptor or -1; nix has no wrapper for it.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: `fd` was just returned to us open, and nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether thread `tid` is one of process `tgid`'s now: tgkill with
/// signal 0 sends nothing and fails with ESRCH unless it is (EPERM: it
/// is, and may not be signalled).
fn in_group(tgid: u32, tid: u32) -> bool {
    // SAFETY: tgkill with signal 0 only checks the thread; nix has no
    // wrapper for tgkill.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, tgid as libc::pid_t, tid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
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

/// What /proc/PID/status says of a thread.
struct Status {
    tgid: u32,
    gid: u32,
    groups: Vec<u32>,
}

fn read_status(pid: u32) -> Option<Status> {
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
    Some(Status { tgid, gid, groups })
}

/// The process of thread `pid`, its status read.
fn read_info(pid: u32, status: Status) -> ProcInfo {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| exe_path(&p.to_string_lossy()));
    let unit = proc_file(pid, "cgroup").and_then(|c| unit_of(&c));
    ProcInfo {
        tgid: status.tgid,
        exe,
        unit,
        gid: status.gid,
        groups: status.groups,
    }
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

    /// A thread of this process that waits for a word on the sender:
    /// its id, the sender, its handle.
    fn parked_thread() -> (
        u32,
        std::sync::mpsc::Sender<()>,
        std::thread::JoinHandle<()>,
    ) {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            tid_tx.send(nix::unistd::gettid().as_raw() as u32).unwrap();
            go_rx.recv().unwrap();
        });
        (tid_rx.recv().unwrap(), go_tx, t)
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
        let (tid, go_tx, t) = parked_thread();
        let i = Arc::new(Inspector::default());
        let info = i.inspect(tid).await.unwrap();
        assert_eq!(info.tgid, std::process::id());
        assert!(i.held(tid).is_some());
        go_tx.send(()).unwrap();
        t.join().unwrap();
        // join returns when the kernel clears the thread's id, before it
        // has finished the thread's exit; until then the id cannot be
        // reused (and the thread is still found). Wait for the end.
        let task = format!("/proc/self/task/{tid}");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::path::Path::new(&task).exists() {
            assert!(std::time::Instant::now() < deadline, "{task} stays");
            std::thread::sleep(Duration::from_millis(1));
        }
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
    async fn the_threads_of_a_process_share_one_entry() {
        let (tid, go_tx, t) = parked_thread();
        let i = Arc::new(Inspector::default());
        let me = i.inspect(std::process::id()).await.unwrap();
        let thread = i.inspect(tid).await.unwrap();
        assert!(Arc::ptr_eq(&me, &thread), "the process's entry");
        assert_eq!(i.len(), 1);
        assert!(i.held(tid).is_some());
        go_tx.send(()).unwrap();
        t.join().unwrap();
    }

    /// More processes than the cache holds: the least recently used one
    /// goes, the others stay held (the cache is not emptied).
    #[tokio::test]
    async fn the_least_recently_used_process_is_evicted_first() {
        let mut children: Vec<_> = (0..4)
            .map(|_| {
                std::process::Command::new("sleep")
                    .arg("10")
                    .spawn()
                    .unwrap()
            })
            .collect();
        let pids: Vec<u32> = children.iter().map(|c| c.id()).collect();
        let i = Arc::new(Inspector::holding(3));
        for p in &pids[..3] {
            assert!(i.inspect(*p).await.is_some());
        }
        assert!(i.held(pids[0]).is_some(), "used again: now the most recent");
        assert!(i.inspect(pids[3]).await.is_some());
        let held: Vec<bool> = pids.iter().map(|p| i.held(*p).is_some()).collect();
        for c in &mut children {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        assert_eq!(held, [true, false, true, true], "the second was evicted");
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
