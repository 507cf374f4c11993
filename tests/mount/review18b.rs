//! Second adversarial review of issue 18 (after the first review's fixes:
//! page-cache fills answered from `KernelView::told`, read-only inodes
//! pinned to one version). Each test reproduces a finding on a real mount
//! and fails on the state reviewed (branch review-18b, cfc4005).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use crate::common::*;
use crate::review18::{Map, count, pread_all};

/// A config file with one template `t` whose source is `source`.
fn template_config(dir: &std::path::Path, source: &str) -> String {
    std::fs::write(dir.join("t.j2"), source).unwrap();
    let cfg = dir.join("secretsfs.toml");
    std::fs::write(&cfg, "[[template]]\nname = \"t\"\nsource = \"t.j2\"\n").unwrap();
    cfg.to_str().unwrap().to_string()
}

/// Finding 1 (bytes no one stored, through a map). A page-cache fill that
/// faults through a read-write descriptor is answered from that handle's
/// uncommitted buffer (`Fs::read`: `Handle::Write(w) => w.buf()`, whatever
/// `direct` says), and the page cache is the inode's one: a service that
/// maps `current` then shows another process's half-written, never-stored
/// bytes (the writer may still be killed and commit nothing).
#[test]
fn a_map_of_current_never_shows_a_writers_uncommitted_bytes() {
    let store = tempfile::tempdir().unwrap();
    let m = Mount::local(store.path()).arg("--demo").start();
    let cur = m.p("demo/api-key/current");
    let n = 8192;
    std::fs::write(&cur, vec![b'a'; n]).unwrap();
    let reader = File::open(&cur).unwrap();
    let service_map = Map::new(&reader, n, true);
    assert_eq!(service_map.bytes(), vec![b'a'; n], "the stored value");
    // Another process edits the file in place, and maps its descriptor.
    let w = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&cur)
        .unwrap();
    w.write_all_at(&vec![b'J'; n], 0).unwrap();
    let writer_map = Map::new(&w, n, true);
    let _ = (writer_map.at(0), writer_map.at(4096));
    // Nothing was committed: 'J' was never stored.
    let seen = service_map.bytes();
    let fresh = std::fs::read(&cur).unwrap();
    assert_eq!(fresh, vec![b'a'; n], "read(2): the stored value");
    assert_eq!(
        (count(&seen, b'a'), count(&seen, b'J')),
        (n, 0),
        "a reader's map of current shows a writer's uncommitted bytes"
    );
    drop(writer_map);
}

/// Finding 2 (stale after the mount learned of a change). On a --read-only
/// mount with --on-change, the watch sees AWSCURRENT move and runs the hook
/// (e.g. `systemctl reload nginx`), but the hook, and every reader after
/// it, still read the old value until the kernel's entry for the name
/// expires (the cached value's TTL, 300 s here and by default): the hook
/// reloads the service with the old value, and nothing fires again.
/// Cause: `forget_secret` -> `refresh_secret` -> `forget_in_kernel` ->
/// `KernelView::changed` is an inval_inode only; on a pinned mount the
/// inode keeps `told` for good, and the name gets a new inode only at a
/// LOOKUP (`Fs::found`), which the kernel sends only when the dentry's TTL
/// is over (no notify_inval_entry). On a read-write mount the same test
/// reads the new value.
#[test]
fn read_only_mount_reads_the_new_value_once_the_change_hook_ran() {
    let s = unique("r18b-hook");
    create(&s, "old-value");
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen");
    let hook = format!(
        "cat \"$SECRETSFS_MOUNTPOINT/$SECRETSFS_SECRET/current\" > {}.tmp && mv {0}.tmp {0}",
        seen.display()
    );
    let m = Mount::aws()
        .args(["--secret", &s, "--ttl", "300", "--read-only"])
        .args(["--on-change", &hook, "--watch", "1s"])
        .start();
    let rel = format!("{s}/current");
    assert_eq!(m.read_string(&rel), "old-value");
    put(&s, "new-value-after-rotation");
    assert!(
        wait_until(Duration::from_secs(15), || seen.exists()),
        "the hook ran: {}",
        m.log_text()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        (std::fs::read_to_string(&seen).unwrap(), m.read_string(&rel)),
        (
            "new-value-after-rotation".to_string(),
            "new-value-after-rotation".to_string()
        ),
        "(what the hook read, what a reader after it reads)"
    );
}

/// Finding 3 (bytes no one stored, read(2) on a read-only mount). Rendered
/// files are not pinned like the other files of a --read-only mount: the
/// kernel's size comes from one GETATTR (`rendered_entry`, uncached), the
/// page-cache fill from a render made at the READ (`read_rendered`); when
/// a secret the template uses changes between the two (a TTL expiry), a
/// reader gets a prefix of the new render cut at the old one's size.
/// Seen: 7 of 147,000 reads, e.g. 227 of the 258 bytes of "v076-xxx...".
#[test]
fn read_only_rendered_file_reads_only_whole_renders_while_its_secret_changes() {
    let s = unique("r18b-ro-tpl");
    let initial = "initial-value".to_string();
    create(&s, &initial);
    let dir = tempfile::tempdir().unwrap();
    let cfg = template_config(dir.path(), &format!("{{{{ secret(\"{s}\") }}}}"));
    let m = Mount::aws()
        .args([
            "--secret",
            &s,
            "--ttl",
            "1",
            "--read-only",
            "--config",
            &cfg,
        ])
        .start();
    let path = m.p(".secretsfs/rendered/t");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), initial);
    let (bad, reads, example) = crate::review18::readers_while_it_changes(&path, &initial, |v| {
        put(&s, v);
    });
    assert!(reads > 1000, "the readers ran ({reads})");
    assert_eq!(
        bad, 0,
        "{bad} of {reads} reads of a rendered file on a read-only mount were no render, e.g. {example:?}"
    );
}

/// Finding 4 (a mix, through a map, read-write mount). The first review's
/// fix (fills answered from the version the kernel was told) was not made
/// for rendered files: a fill is answered from the faulting handle's own
/// render (`Fs::read`: `Handle::Rendered { bytes, .. }`, whatever `direct`
/// says). Two handles opened on either side of a change, each map faulting
/// one page: both maps show half of one render and half of the other.
#[test]
fn a_map_of_a_rendered_file_never_mixes_two_renders() {
    let store = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = template_config(dir.path(), "{{ secret(\"demo/api-key\") }}");
    let m = Mount::local(store.path())
        .args(["--demo", "--config", &cfg])
        .start();
    let cur = m.p("demo/api-key/current");
    let rendered = m.p(".secretsfs/rendered/t");
    let n = 8192;
    std::fs::write(&cur, vec![b'a'; n]).unwrap();
    let old = File::open(&rendered).unwrap();
    std::fs::write(&cur, vec![b'b'; n]).unwrap();
    let new = File::open(&rendered).unwrap();
    assert_eq!(pread_all(&new), vec![b'b'; n], "read(2) of the new handle");
    let old_map = Map::new(&old, n, true);
    let new_map = Map::new(&new, n, true);
    let _ = new_map.at(0);
    let _ = old_map.at(4096);
    let seen = new_map.bytes();
    assert!(
        count(&seen, b'a') == 0 || count(&seen, b'b') == 0,
        "a map of a rendered file is a mix of two renders: {} bytes of one, {} of the other",
        count(&seen, b'a'),
        count(&seen, b'b')
    );
}

/// Finding 5 (stale after this mount wrote a change, through a map). After
/// a write through the mount, `KernelView::changed` drops the inode's pages
/// but keeps `told` on the old version until some process asks for the
/// file's attributes: a map that exists (a service that maps its key once)
/// refaults the old value for as long as no process reaches the file by
/// path or stats it (any open by path refreshes the attributes through
/// default_permissions' permission check and so `told`; seen: still old
/// 3 s later, new at once after an unrelated `stat`). The doc says "when
/// the value changes, its pages are dropped and refilled with the new
/// one". Lower severity: one access to the path by anyone ends it.
#[test]
fn an_existing_map_follows_a_write_through_the_mount() {
    let store = tempfile::tempdir().unwrap();
    let m = Mount::local(store.path()).arg("--demo").start();
    let cur = m.p("demo/api-key/current");
    let n = 8192;
    std::fs::write(&cur, vec![b'a'; n]).unwrap();
    let f = File::open(&cur).unwrap();
    let map = Map::new(&f, n, true);
    assert_eq!(map.bytes(), vec![b'a'; n]);
    sh_ok(
        &format!("printf '%{n}s' '' | tr ' ' b > {}", cur.display()),
        store.path(),
    );
    std::thread::sleep(Duration::from_secs(2));
    let seen = map.bytes();
    assert_eq!(
        (count(&seen, b'a'), count(&seen, b'b')),
        (0, n),
        "2 s after this mount stored the new value, the map still shows the old one"
    );
}

/// Finding 6 (a crash of another process). A GETATTR that carries a read
/// handle (the kernel sends one for lseek(SEEK_END), not for fstat) is
/// answered with that handle's version (`Fs::getattr`: `Handle::Read`,
/// `Entry::uncached`), and the kernel applies it to the inode's one size:
/// a descriptor held on an older, shorter value that seeks to its end
/// shrinks the file under every map of the newest value, and a process
/// that mapped `current` after the change (its size from fstat) dies of
/// SIGBUS at its next touch past the old length. The pages are refilled
/// from `told` (the newest version) meanwhile, so the kernel's size and
/// the version fills answer disagree: what kernel.rs says cannot happen.
#[test]
fn a_held_descriptors_seek_to_end_never_shrinks_another_processs_map() {
    let store = tempfile::tempdir().unwrap();
    let m = Mount::local(store.path())
        .args(["--demo", "--ttl", "1"])
        .start();
    let cur = m.p("demo/api-key/current");
    std::fs::write(&cur, vec![b'a'; 5000]).unwrap();
    let held = File::open(&cur).unwrap();
    std::fs::write(&cur, vec![b'b'; 9000]).unwrap();
    // A service maps the new value (fstat: 9000 bytes).
    let fresh = File::open(&cur).unwrap();
    let len = fresh.metadata().unwrap().len() as usize;
    assert_eq!(len, 9000);
    let map = Map::new(&fresh, len, true);
    assert_eq!(map.bytes(), vec![b'b'; 9000]);
    // The attributes expire (--ttl 1); the old reader asks for its end.
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: lseek on a descriptor we own.
    let end = unsafe { libc::lseek(held.as_raw_fd(), 0, libc::SEEK_END) };
    // One size per inode: the end is the file's (the newest version's), as
    // fstat's is (docs/semantics.md); read(2) of the held descriptor still
    // gives its own version to its end.
    assert_eq!(end, 9000, "the file's end");
    // In a child, so that the SIGBUS kills the child, not the test.
    // SAFETY: the child only touches the mapping and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let ok = (0..9000).all(|i| map.at(i) == b'b');
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for the child forked above.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the process reading its map of current {}",
        if libc::WIFSIGNALED(status) {
            format!("died of signal {}", libc::WTERMSIG(status))
        } else {
            format!("read other bytes (exit {})", libc::WEXITSTATUS(status))
        }
    );
}
