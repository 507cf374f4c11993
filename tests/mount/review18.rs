//! Adversarial review of issue 18 (exact reads, mmap, the views' editors):
//! each test is a reproduction of a finding on a real mount.

use std::collections::HashSet;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::*;

/// A read-only shared map of `len` bytes of `f`; with `random`, each page
/// fault reads that page only (MADV_RANDOM: no read-around).
pub(crate) struct Map {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Map {
    pub(crate) fn new(f: &File, len: usize, random: bool) -> Map {
        // SAFETY: a fresh mapping of a descriptor we own; checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(
            ptr,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        if random {
            // SAFETY: advice on the mapping just made.
            assert_eq!(unsafe { libc::madvise(ptr, len, libc::MADV_RANDOM) }, 0);
        }
        Map { ptr, len }
    }

    /// Touches one byte (faults its page in).
    pub(crate) fn at(&self, i: usize) -> u8 {
        assert!(i < self.len);
        // SAFETY: within the mapping.
        unsafe { std::ptr::read_volatile((self.ptr as *const u8).add(i)) }
    }

    pub(crate) fn bytes(&self) -> Vec<u8> {
        (0..self.len).map(|i| self.at(i)).collect()
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

pub(crate) fn pread_all(f: &File) -> Vec<u8> {
    let mut buf = vec![0u8; 70_000];
    let n = f.read_at(&mut buf, 0).expect("pread");
    buf.truncate(n);
    buf
}

pub(crate) fn count(b: &[u8], c: u8) -> usize {
    b.iter().filter(|&&x| x == c).count()
}

/// A handle opened after a write through the mount maps the new value; an
/// older handle mapping the same inode afterwards fills the one shared page
/// cache with its (old) version, and the new handle's map then shows the
/// old value, whole: stale after the mount wrote the change, while read(2)
/// on the same descriptor gives the new value.
#[test]
fn a_map_of_a_handle_opened_after_a_write_never_shows_the_old_value() {
    let store = tempfile::tempdir().unwrap();
    let m = Mount::local(store.path()).arg("--demo").start();
    let cur = m.p("demo/api-key/current");
    let n = 8192;
    std::fs::write(&cur, vec![b'a'; n]).unwrap();
    let old = File::open(&cur).unwrap();
    std::fs::write(&cur, vec![b'b'; n]).unwrap();
    let new = File::open(&cur).unwrap();
    assert_eq!(pread_all(&new), vec![b'b'; n], "read(2) of the new handle");
    let new_map = Map::new(&new, n, false);
    let old_map = Map::new(&old, n, false);
    let _ = old_map.at(0); // the old handle's process touches its map
    let seen = new_map.bytes();
    assert_eq!(
        (count(&seen, b'a'), count(&seen, b'b')),
        (0, n),
        "the new handle's map shows old bytes while read(2) of it gives the new value"
    );
}

/// Two handles of two versions, each map faulting one page: before the fix
/// each map showed half of one version and half of the other (a value no
/// one stored). Maps go through the one page cache of the inode, filled
/// with the version whose size the kernel holds: both maps show the newest
/// value whole (read(2) of the old handle still gives its own).
#[test]
fn a_map_never_mixes_two_versions() {
    let store = tempfile::tempdir().unwrap();
    let m = Mount::local(store.path()).arg("--demo").start();
    let cur = m.p("demo/api-key/current");
    let n = 8192;
    std::fs::write(&cur, vec![b'a'; n]).unwrap();
    let old = File::open(&cur).unwrap();
    std::fs::write(&cur, vec![b'b'; n]).unwrap();
    let new = File::open(&cur).unwrap();
    let old_map = Map::new(&old, n, true);
    let new_map = Map::new(&new, n, true);
    let _ = new_map.at(0);
    let _ = old_map.at(4096);
    let seen = new_map.bytes();
    assert_eq!(
        (count(&seen, b'a'), count(&seen, b'b')),
        (0, n),
        "the new handle's map is a mix of two versions"
    );
    let held = old_map.bytes();
    assert_eq!(
        (count(&held, b'a'), count(&held, b'b')),
        (0, n),
        "the old handle's map is a mix of two versions"
    );
    assert_eq!(pread_all(&old), vec![b'a'; n], "read(2) of the old handle");
}

/// A descriptor held across a write that makes the value longer: fstat
/// gives the new size (one size per inode), mapping that size shows the
/// held value followed by NUL bytes: the zero padding of issue 18, item 1,
/// through mmap.
#[test]
fn a_held_handles_map_shows_no_zero_padding() {
    let store = tempfile::tempdir().unwrap();
    let m = Mount::local(store.path()).arg("--demo").start();
    let cur = m.p("demo/api-key/current");
    std::fs::write(&cur, "old-short-value").unwrap();
    let old = File::open(&cur).unwrap();
    std::fs::write(&cur, format!("new-longer-value-{}", "x".repeat(40))).unwrap();
    assert_eq!(
        pread_all(&old),
        b"old-short-value",
        "read(2) of the held handle"
    );
    let size = old.metadata().unwrap().len() as usize;
    let map = Map::new(&old, size, false);
    let seen = map.bytes();
    assert!(
        !seen.contains(&0),
        "the held handle's map holds bytes no one stored: {:?}",
        String::from_utf8_lossy(&seen)
    );
}

/// `echo v > json/.env`: a key named like a dotfile is a key (before the
/// fix every dotfile became an in-memory temporary file and the write was
/// lost). Only the documented temporary names of named tools (vim's
/// `4913`, mkstemp's `tmpXXXXXXXX`, ...) made where no such key exists are
/// temporary files: they stay in memory and never change the secret.
#[test]
fn a_new_json_key_named_like_a_dotfile_is_not_lost_silently() {
    let store = tempfile::tempdir().unwrap();
    let m = Mount::local(store.path()).arg("--demo").start();
    let dir = m.p("demo/app/config.json/json");
    let doc = || -> serde_json::Value {
        serde_json::from_str(&m.read_string("demo/app/config.json/current")).unwrap()
    };
    for name in [".env", ".newkey"] {
        std::fs::write(dir.join(name), "v1").unwrap();
        assert_eq!(doc()[name], "v1", "json/{name} is stored as a key");
    }
    let before = doc();
    for name in ["4913", "tmpabcdefgh"] {
        std::fs::write(dir.join(name), "v1").unwrap();
        assert_eq!(doc(), before, "json/{name} is a temporary file, not a key");
        assert_eq!(std::fs::read_to_string(dir.join(name)).unwrap(), "v1");
    }
}

/// vim's delete() of a JSON key returns success and the key stays: taken
/// for the unlink in the middle of a save (KEY_REPLACERS), the removal is
/// lost without an error.
#[test]
fn vims_delete_of_a_json_key_removes_it_or_fails() {
    assert!(which("vim").is_some(), "vim is installed by ./run-tests");
    let store = tempfile::tempdir().unwrap();
    let m = Mount::local(store.path()).arg("--demo").start();
    let key = m.p("demo/app/config.json/json/port");
    let out_file = tempfile::NamedTempFile::new().unwrap();
    let cmd = format!(
        "call writefile([string(delete('{}'))], '{}')",
        key.display(),
        out_file.path().display()
    );
    let st = std::process::Command::new("vim")
        .args([
            "-N", "-u", "NONE", "-i", "NONE", "-n", "-es", "-c", &cmd, "-c", "qa!",
        ])
        .stdin(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let said = std::fs::read_to_string(out_file.path()).unwrap();
    let doc: serde_json::Value =
        serde_json::from_str(&m.read_string("demo/app/config.json/current")).unwrap();
    assert!(
        said.trim() != "0" || doc.get("port").is_none(),
        "vim's delete() returned {} and the key is still there: {doc}",
        said.trim()
    );
}

fn which(prog: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(prog))
            .find(|p| p.exists())
    })
}

/// The rule holds on `--read-only` mounts too (the newest value, no
/// handles): readers looping over `current` while the secret changes in
/// Secrets Manager (--ttl 1) must only ever read a stored value. Each read
/// is one pread(2) of 70,000 bytes at offset 0 (more than any value), so
/// it must return one whole stored value. Seen: a prefix of the newest
/// value cut at the size the kernel still holds for the inode (a READ
/// without a handle answers the newest value while the kernel's size is
/// the one it was last told; the invalidation is sent asynchronously).
#[test]
fn read_only_mount_reads_only_stored_values_while_the_secret_changes_elsewhere() {
    let s = unique("r18-ro");
    let initial = "initial-value".to_string();
    create(&s, &initial);
    let m = Mount::aws()
        .args(["--secret", &s, "--ttl", "1", "--read-only"])
        .start();
    let path = m.p(&format!("{s}/current"));
    let (bad, reads, example) = readers_while_it_changes(&path, &initial, |v| {
        put(&s, v);
    });
    assert!(reads > 1000, "the readers ran ({reads})");
    assert_eq!(
        bad, 0,
        "{bad} of {reads} reads on a read-only mount were no stored value, e.g. {example:?}"
    );
}

/// Four readers of `path`, two through a descriptor each holds and two
/// opening afresh, each read one pread(2) of 70,000 bytes at offset 0 (more
/// than any value), while `change` stores 400 values of 14 to 310 bytes,
/// 10 ms apart. Every read must be one whole value: `initial` or one of
/// them. Returns the reads that were not, all reads, and one example.
pub(crate) fn readers_while_it_changes(
    path: &std::path::Path,
    initial: &str,
    change: impl Fn(&str),
) -> (usize, usize, Option<String>) {
    let values: Vec<String> = (0..400)
        .map(|i: usize| {
            let len = 14 + (i * 97) % 297;
            let head = format!("v{i:03}-");
            format!("{head}{}", "x".repeat(len - head.len()))
        })
        .collect();
    let allowed: Arc<HashSet<Vec<u8>>> = Arc::new(
        values
            .iter()
            .map(String::as_str)
            .chain([initial])
            .map(|v| v.as_bytes().to_vec())
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let bad = Arc::new(AtomicUsize::new(0));
    let reads = Arc::new(AtomicUsize::new(0));
    let example = Arc::new(parking_lot::Mutex::new(None::<String>));
    let mut threads = Vec::new();
    for t in 0..4 {
        let (path, stop, bad, reads, example, allowed) = (
            path.to_path_buf(),
            stop.clone(),
            bad.clone(),
            reads.clone(),
            example.clone(),
            allowed.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let held = File::open(&path).unwrap();
            while !stop.load(Ordering::Relaxed) {
                let got = if t % 2 == 0 {
                    pread_all(&held)
                } else {
                    pread_all(&File::open(&path).unwrap())
                };
                reads.fetch_add(1, Ordering::Relaxed);
                if !allowed.contains(&got) {
                    bad.fetch_add(1, Ordering::Relaxed);
                    example.lock().get_or_insert_with(|| {
                        format!(
                            "{} {} bytes, NUL at {:?}: {:?}",
                            if t % 2 == 0 { "held" } else { "fresh" },
                            got.len(),
                            got.iter().position(|&c| c == 0),
                            String::from_utf8_lossy(&got[..got.len().min(60)])
                        )
                    });
                }
            }
        }));
    }
    for v in &values {
        change(v);
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let example = example.lock().take();
    (
        bad.load(Ordering::Relaxed),
        reads.load(Ordering::Relaxed),
        example,
    )
}
