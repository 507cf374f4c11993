//! Correctness on real mounts against moto: page-cache coherence for old
//! readers, temporary files that behave as files, writes judged against the
//! value in Secrets Manager, killed writers, and range-checked options.
//! Effects are checked through the API as well as through the mount.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;

fn read_string_of(f: &mut File) -> String {
    String::from_utf8(read_all(f)).unwrap()
}

/// pread from offset 0: the kernel sends a READ on this handle when the
/// page cache holds nothing, so an old handle may refill it.
fn pread_string(f: &File) -> String {
    let mut buf = vec![0u8; 4096];
    let n = f.read_at(&mut buf, 0).unwrap();
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

/// Drops the inode's clean pages, as memory pressure may at any time, so
/// that the next read on any handle reaches the daemon.
fn evict_pages(f: &File) {
    // SAFETY: fadvise on a descriptor we hold.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0);
}

/// Closes a File with close(2), so that close's error is seen.
fn close_checked(f: File) -> Result<(), i32> {
    // SAFETY: the descriptor is ours and closed once.
    match unsafe { libc::close(f.into_raw_fd()) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)),
    }
}

const OLD: &str = "old-value-1";

/// After a handle A, opened on `OLD`, saw the value change to `new`: a
/// handle B opened later reads `new` even after A reads again, and so do
/// fresh opens, before and after A is closed.
fn old_handle_cannot_pin(m: &Mount, rel: &str, mut a: File, new: &str) {
    let mut b = File::open(m.p(rel)).unwrap();
    evict_pages(&a);
    let from_a = pread_string(&a);
    assert!(
        from_a == OLD || from_a == new,
        "A sees one version, not a mix: {from_a:?}"
    );
    assert_eq!(read_string_of(&mut b), new, "B opened after the change");
    assert_eq!(m.read_string(rel), new, "a fresh open after A's read");
    // A again, now that B filled the cache: still no old bytes for later opens.
    a.seek(SeekFrom::Start(0)).unwrap();
    let _ = read_string_of(&mut a);
    assert_eq!(m.read_string(rel), new, "a fresh open after A read again");
    drop(a);
    drop(b);
    assert_eq!(m.read_string(rel), new, "a fresh open after A closed");
}

#[test]
fn an_old_reader_never_pins_the_old_value_for_later_opens() {
    // The change made through this mount.
    let s = unique("co-pin");
    create(&s, OLD);
    let m = Mount::aws().args(["--secret", &s]).start();
    let rel = format!("{s}/current");
    let mut a = File::open(m.p(&rel)).unwrap();
    assert_eq!(read_string_of(&mut a), OLD);
    replace_file(&m.p(&rel), b"new-value-2").unwrap();
    assert_eq!(current_string(&s), "new-value-2");
    old_handle_cannot_pin(&m, &rel, a, "new-value-2");

    // The change made elsewhere, learned after the TTL.
    let s = unique("co-pin-ext");
    create(&s, OLD);
    let m = Mount::aws().args(["--secret", &s, "--ttl", "1"]).start();
    let rel = format!("{s}/current");
    let mut a = File::open(m.p(&rel)).unwrap();
    assert_eq!(read_string_of(&mut a), OLD);
    put(&s, "new-value-3");
    let seen = wait_until(Duration::from_secs(10), || {
        m.read_string(&rel) == "new-value-3"
    });
    assert!(seen, "the mount sees the external change after the TTL");
    old_handle_cannot_pin(&m, &rel, a, "new-value-3");
    assert_eq!(version_ids(&s).len(), 2, "reads put nothing");
}

#[test]
fn o_trunc_and_o_append_are_honoured_on_temporary_files() {
    let s = unique("co-tmp");
    create(&s, "start");
    let m = Mount::aws().args(["--secret", &s]).start();
    let dir = m.p(&s);
    let t = format!("{s}/t");
    sh_ok("printf abcdefgh > t; printf XY > t", &dir);
    assert_eq!(m.read_string(&t), "XY", "O_TRUNC on an existing temp file");
    sh_ok("printf 12 >> t", &dir);
    assert_eq!(m.read_string(&t), "XY12", "O_APPEND on a temp file");
    std::fs::remove_file(m.p(&t)).unwrap();
    assert_eq!(version_ids(&s).len(), 1, "temporary files put nothing");

    // An editor's retry: the temp file left by a first attempt is rewritten.
    sh_ok("printf longoldvalue > current.new", &dir);
    sh_ok("printf new > current.new && mv current.new current", &dir);
    assert_eq!(current_string(&s), "new");
    assert_eq!(version_ids(&s).len(), 2);
    assert_eq!(m.read_string(&format!("{s}/current")), "new");
    assert_eq!(
        ls(&dir),
        ["current", "json", "previous", "stages", "versions"]
    );
}

#[test]
fn a_temporary_file_handle_keeps_working_after_rename_and_unlink() {
    let s = unique("co-fd");
    create(&s, "start");
    let m = Mount::aws().args(["--secret", &s]).start();
    let dir = m.p(&s);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join("tmp1"))
        .unwrap();
    f.write_all(b"abc").unwrap();
    std::fs::rename(dir.join("tmp1"), dir.join("tmp2")).unwrap();
    f.write_all(b"def").unwrap();
    f.sync_all().unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    assert_eq!(read_string_of(&mut f), "abcdef", "the handle after rename");
    assert_eq!(
        m.read_string(&format!("{s}/tmp2")),
        "abcdef",
        "by its new name"
    );
    std::fs::remove_file(dir.join("tmp2")).unwrap();
    f.write_all(b"ghi").unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    assert_eq!(
        read_string_of(&mut f),
        "abcdefghi",
        "the handle after unlink"
    );
    assert_eq!(close_checked(f), Ok(()));
    assert_eq!(ls(&dir), ["current", "json", "stages", "versions"]);
    assert_eq!(version_ids(&s).len(), 1);

    // Renamed onto current: the rename is the put, and later writes through
    // the same descriptor go to current, as on any filesystem.
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join("tmp3"))
        .unwrap();
    f.write_all(b"v1").unwrap();
    std::fs::rename(dir.join("tmp3"), dir.join("current")).unwrap();
    assert_eq!(current_string(&s), "v1", "the rename is the put");
    f.write_all(b"-more").unwrap();
    f.sync_all().unwrap();
    assert_eq!(close_checked(f), Ok(()));
    assert_eq!(current_string(&s), "v1-more");
    assert_eq!(version_ids(&s).len(), 3);
    assert_eq!(m.read_string(&format!("{s}/current")), "v1-more");
    assert_eq!(
        ls(&dir),
        ["current", "json", "previous", "stages", "versions"]
    );
}

#[test]
fn a_write_back_to_a_value_changed_elsewhere_is_stored() {
    let s = unique("co-back");
    create(&s, "X");
    let (proxy, m) = mount_via_proxy(&s, &["--ttl", "300"]);
    let cur = format!("{s}/current");
    assert_eq!(m.read_string(&cur), "X");
    put(&s, "Y");
    // The mount's cache still says X; Secrets Manager says Y.
    let (describes, gets) = (proxy.count("DescribeSecret"), proxy.count("GetSecretValue"));
    assert_eq!(replace_file(&m.p(&cur), b"X"), Ok(()));
    assert_eq!(proxy.count("PutSecretValue"), 1);
    assert!(
        proxy.count("DescribeSecret") > describes,
        "judged at commit"
    );
    assert_eq!(
        proxy.count("GetSecretValue"),
        gets + 1,
        "AWSCURRENT moved: fetched once to compare"
    );
    assert_eq!(current_string(&s), "X", "the write-back is stored");
    assert_eq!(version_ids(&s).len(), 3);
    assert_eq!(stage(&s, "AWSPREVIOUS").unwrap().1.as_deref(), Some("Y"));
    assert_eq!(m.read_string(&cur), "X");
    assert_eq!(m.read_string(&format!("{s}/previous")), "Y");
}

#[test]
fn an_append_starts_from_the_value_current_at_open_time() {
    let s = unique("co-append");
    create(&s, "base");
    let (proxy, m) = mount_via_proxy(&s, &["--ttl", "300"]);
    let cur = format!("{s}/current");
    assert_eq!(m.read_string(&cur), "base");
    put(&s, "fresh");
    sh_ok("printf +x >> current", &m.p(&s));
    assert_eq!(current_string(&s), "fresh+x");
    assert_eq!(m.read_string(&cur), "fresh+x");

    put(&s, "0123456789");
    sh_ok(
        "printf AB | dd of=current bs=1 seek=2 conv=notrunc status=none",
        &m.p(&s),
    );
    assert_eq!(current_string(&s), "01AB456789");
    assert_eq!(m.read_string(&cur), "01AB456789");
    assert_eq!(version_ids(&s).len(), 5);
    assert_eq!(proxy.count("PutSecretValue"), 2);
}

/// Runs `program args` in `dir` to its end (it is expected to die).
fn run_writer(program: &str, args: &[&str], dir: &Path) -> std::process::ExitStatus {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    out.status
}

/// For a second after a writer died: no new version, old value everywhere.
fn nothing_committed(m: &Mount, s: &str, versions: usize, old: &str, what: &str) {
    let changed = wait_until(Duration::from_secs(1), || version_ids(s).len() != versions);
    assert!(!changed, "{what}: a killed writer made a version");
    assert_eq!(current_string(s), old, "{what}");
    assert_eq!(m.read_string(&format!("{s}/current")), old, "{what}");
}

#[test]
fn a_writer_killed_by_a_signal_commits_nothing() {
    use std::os::unix::process::ExitStatusExt;
    let s = unique("co-kill");
    create(&s, "old");
    let m = Mount::aws().args(["--secret", &s]).start();
    let dir = m.p(&s);
    // The shell opens current itself as its stdout (append: no truncation),
    // writes, and dies of the signal with the descriptor open. (`>&3` on a
    // builtin would close a duplicate after the write: a real close.)
    for (sig, name) in [(libc::SIGKILL, "KILL"), (libc::SIGSEGV, "SEGV")] {
        let script = format!("ulimit -c 0; exec >>current; printf partial; kill -{name} $$");
        let status = run_writer("sh", &["-c", &script], &dir);
        assert_eq!(status.signal(), Some(sig), "{status:?}");
        nothing_committed(&m, &s, 1, "old", name);
    }

    // A writer with a second thread, killed.
    let py = "import os, threading, time\n\
              threading.Thread(target=time.sleep, args=(100,), daemon=True).start()\n\
              fd = os.open('current', os.O_WRONLY | os.O_APPEND)\n\
              os.write(fd, b'threaded')\n\
              os.kill(os.getpid(), 9)\n";
    let status = run_writer("python3", &["-c", py], &dir);
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    nothing_committed(&m, &s, 1, "old", "two threads");

    // A child that inherited the descriptor writes and is killed; the
    // opener (timeout) then exits normally: its close stores nothing.
    let status = run_writer(
        "sh",
        &[
            "-c",
            "exec >>current; timeout -s KILL 1 sh -c 'printf PARTIAL; sleep 5'",
        ],
        &dir,
    );
    assert!(!status.success(), "{status:?}");
    nothing_committed(&m, &s, 1, "old", "killed child");

    // A temporary file renamed onto current, then written by a process
    // that is killed: the half write never reaches the secret.
    let py = "import os\n\
              fd = os.open('.tmp1', os.O_RDWR | os.O_CREAT, 0o600)\n\
              os.write(fd, b'old')\n\
              os.rename('.tmp1', 'current')\n\
              os.ftruncate(fd, 0)\n\
              os.pwrite(fd, b'HALF', 0)\n\
              os.kill(os.getpid(), 9)\n";
    let status = run_writer("python3", &["-c", py], &dir);
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    nothing_committed(&m, &s, 1, "old", "renamed temporary file");

    // Control: the same writer exiting normally commits at its exit.
    let status = run_writer(
        "sh",
        &["-c", "exec >>current; printf partial; exit 0"],
        &dir,
    );
    assert!(status.success(), "{status:?}");
    assert!(wait_until(Duration::from_secs(5), || version_ids(&s).len() == 2));
    assert_eq!(current_string(&s), "oldpartial");
    assert_eq!(m.read_string(&format!("{s}/current")), "oldpartial");
}

/// The daemon started directly; killed and unmounted on drop if it is
/// still running (it was expected to refuse to start).
struct Daemon {
    child: Child,
    mnt: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(args: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        let store = dir.path().join("store");
        std::fs::create_dir(&mnt).unwrap();
        std::fs::create_dir(&store).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_secretsfs"))
            .args(args)
            .arg("--local")
            .arg(&store)
            .arg(&mnt)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .unwrap();
        Daemon {
            child,
            mnt,
            _dir: dir,
        }
    }

    /// Waits up to 5 s for it to exit: (success, stderr).
    fn exit(&mut self) -> Option<(bool, String)> {
        let mut status = None;
        wait_until(Duration::from_secs(5), || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        let err = std::fs::read_to_string(self._dir.path().join("stderr")).unwrap();
        status.map(|s| (s.success(), err))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        unmount_if_mounted(&self.mnt);
    }
}

#[test]
fn numeric_options_are_range_checked() {
    for (args, name) in [
        (["-o", "uid=4294967297"], "uid"),
        (["-o", "gid=4294967296"], "gid"),
        (["-o", "threads=18446744073709551617"], "threads"),
        (["-o", "ttl=99999999999999999999"], "ttl"),
        (["--ttl", "0"], "ttl"),
        (["-o", "ttl=0"], "ttl"),
    ] {
        let mut d = Daemon::start(&args);
        let (ok, err) = d
            .exit()
            .unwrap_or_else(|| panic!("{args:?}: the daemon did not exit within 5 s"));
        assert!(!ok, "{args:?}: exit status 0");
        assert!(
            err.contains(name),
            "{args:?}: stderr does not name {name}: {err}"
        );
    }
    // Control: an in-range value mounts.
    let store = tempfile::tempdir().unwrap();
    let m = Mount::local(store.path())
        .args(["-o", "uid=0,gid=0,threads=4,ttl=1"])
        .start();
    assert!(m.is_mounted());
}

// ---- Probes from the review of rendered files (were tests/adversarial_templates.rs) ----

/// For comparison: the same fstat question on `current` (not templates).
/// The kernel keeps one size per inode and fstat(2) does not say which
/// descriptor asks: the size is the newest version's (what an open now
/// reads), and a descriptor held across the change reads its own version
/// to its end.
#[test]
fn fstat_of_an_open_current_gives_the_newest_size_and_reads_stay_its_own() {
    use std::io::Read;
    let a = unique("rv-fstatcur");
    create(&a, "short");
    let m = Mount::aws().args(["--secret", &a]).start();
    let mut f = std::fs::File::open(m.p(&format!("{a}/current"))).unwrap();
    std::fs::write(m.p(&format!("{a}/current")), "a much longer text").unwrap();
    let fd_size = f.metadata().unwrap().len();
    let fresh = m.read_string(&format!("{a}/current"));
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(
        (fd_size, s.as_str(), fresh.as_str()),
        (18, "short", "a much longer text"),
        "fstat size, bytes read by the held descriptor, bytes read afresh"
    );
}
