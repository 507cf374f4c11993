//! Every read returns exactly a stored value (issue 18), on real mounts:
//! descriptors held open while writes land through the mount or change in
//! Secrets Manager, fresh opens beside them, JSON keys held while written,
//! and mmap of every kind of value file while older handles live.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::*;

const INITIAL: &str = "initial-value";

/// 150 distinct values whose lengths (14 to 310 bytes) both grow and shrink.
fn changing_values() -> Vec<String> {
    (0..150)
        .map(|i: usize| {
            let len = 14 + (i * 97) % 297;
            let head = format!("v{i:03}-");
            format!("{head}{}", "x".repeat(len - head.len()))
        })
        .collect()
}

fn pread_all(f: &File) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let n = f.read_at(&mut buf, 0).expect("pread");
    buf.truncate(n);
    buf
}

/// What the readers saw that no one stored.
#[derive(Debug)]
struct Bad {
    held: usize,
    fresh: usize,
    held_reads: usize,
    fresh_reads: usize,
    example: Option<String>,
}

/// Three threads hold one descriptor of `path` each and pread it again and
/// again; three more open, read and close afresh; meanwhile `change` is
/// called with each value, 10 ms apart. A held descriptor must read the
/// value it opened on, every time; a fresh open, one of the values stored.
fn interleave(path: &Path, initial: &str, values: &[String], change: impl Fn(&str)) -> Bad {
    let stop = Arc::new(AtomicBool::new(false));
    let allowed: Arc<HashSet<Vec<u8>>> = Arc::new(
        values
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .chain([initial.as_bytes().to_vec()])
            .collect(),
    );
    let counts = Arc::new([
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ]);
    let example = Arc::new(parking_lot::Mutex::new(None::<String>));
    let shown = |b: &[u8]| {
        let nul = b.iter().position(|&c| c == 0);
        format!(
            "{} bytes, first NUL at {nul:?}: {:?}",
            b.len(),
            String::from_utf8_lossy(&b[..b.len().min(40)])
        )
    };
    let mut threads = Vec::new();
    for _ in 0..3 {
        let (path, stop, counts, example) = (
            path.to_path_buf(),
            stop.clone(),
            counts.clone(),
            example.clone(),
        );
        let f = File::open(&path).unwrap();
        let mine = pread_all(&f);
        assert_eq!(mine, initial.as_bytes(), "held descriptor's first read");
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let got = pread_all(&f);
                counts[2].fetch_add(1, Ordering::Relaxed);
                if got != mine {
                    counts[0].fetch_add(1, Ordering::Relaxed);
                    example.lock().get_or_insert_with(|| shown(&got));
                }
            }
        }));
    }
    for _ in 0..3 {
        let (path, stop, counts, example, allowed) = (
            path.to_path_buf(),
            stop.clone(),
            counts.clone(),
            example.clone(),
            allowed.clone(),
        );
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let got = std::fs::read(&path).expect("fresh read");
                counts[3].fetch_add(1, Ordering::Relaxed);
                if !allowed.contains(&got) {
                    counts[1].fetch_add(1, Ordering::Relaxed);
                    example.lock().get_or_insert_with(|| shown(&got));
                }
            }
        }));
    }
    for v in values {
        change(v);
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let example = example.lock().take();
    Bad {
        held: counts[0].load(Ordering::Relaxed),
        fresh: counts[1].load(Ordering::Relaxed),
        held_reads: counts[2].load(Ordering::Relaxed),
        fresh_reads: counts[3].load(Ordering::Relaxed),
        example,
    }
}

fn assert_clean(bad: Bad, what: &str) {
    assert!(
        bad.held_reads > 300 && bad.fresh_reads > 100,
        "{what}: the readers ran ({bad:?})"
    );
    assert!(
        bad.held == 0 && bad.fresh == 0,
        "{what}: {} held and {} fresh reads of bytes no one stored (of {} and {}), e.g. {:?}",
        bad.held,
        bad.fresh,
        bad.held_reads,
        bad.fresh_reads,
        bad.example
    );
}

fn write_through(path: &Path, v: &str) {
    std::fs::write(path, v.as_bytes()).unwrap_or_else(|e| panic!("write {path:?}: {e}"));
}

#[test]
fn held_descriptors_read_their_own_value_while_writes_land_through_the_mount() {
    let store = tempfile::tempdir().unwrap();
    let m = Mount::local(store.path()).arg("--demo").start();
    let path = m.p("demo/api-key/current");
    write_through(&path, INITIAL);
    let values = changing_values();
    let bad = interleave(&path, INITIAL, &values, |v| write_through(&path, v));
    assert_clean(bad, "writes through the mount");
    assert_eq!(m.read_string("demo/api-key/current"), values[149]);
}

#[test]
fn held_descriptors_read_their_own_value_while_the_secret_changes_elsewhere() {
    let s = unique("rx-ext");
    create(&s, INITIAL);
    let m = Mount::aws().args(["--secret", &s, "--ttl", "1"]).start();
    let path = m.p(&format!("{s}/current"));
    let values = changing_values();
    let bad = interleave(&path, INITIAL, &values, |v| {
        put(&s, v);
    });
    assert_clean(bad, "external changes with --ttl 1");
    let last = values[149].clone();
    let seen = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        m.read_string(&format!("{s}/current")) == last
    });
    assert!(seen, "the mount sees the last external change");
}

#[test]
fn a_held_json_key_reads_its_own_value_while_the_key_is_written() {
    let s = unique("rx-json");
    create(
        &s,
        &format!(r#"{{"user":"u","password":"{INITIAL}","port":5432}}"#),
    );
    let m = Mount::aws().args(["--secret", &s]).start();
    let path = m.p(&format!("{s}/json/password"));
    let values = changing_values();
    let bad = interleave(&path, INITIAL, &values, |v| write_through(&path, v));
    assert_clean(bad, "a JSON key written through the mount");
    let doc: serde_json::Value = serde_json::from_str(&current_string(&s)).unwrap();
    assert_eq!(doc["password"], values[149].as_str());
    assert_eq!(doc["port"], 5432);
}

/// Python maps the file (length 0: its size) and prints what it holds.
fn python_mmap(path: &Path) -> Result<Vec<u8>, String> {
    let script = "import mmap,sys\n\
        f=open(sys.argv[1],'rb')\n\
        m=mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ)\n\
        sys.stdout.buffer.write(m[:])\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .expect("python3");
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn every_value_file_can_be_mapped_while_an_older_handle_lives() {
    let s = unique("rx-mmap");
    create(&s, "first-value");
    put(&s, "second-value-longer");
    let m = Mount::aws().args(["--secret", &s]).start();
    let cur = m.p(&format!("{s}/current"));
    // An old reader alive while the value changes through the mount.
    let old = File::open(&cur).unwrap();
    assert_eq!(pread_all(&old), b"second-value-longer");
    write_through(&cur, "third");
    assert_eq!(python_mmap(&cur).as_deref(), Ok(&b"third"[..]), "current");
    assert_eq!(pread_all(&old), b"second-value-longer", "the old handle");
    let prev = m.p(&format!("{s}/previous"));
    assert_eq!(
        python_mmap(&prev).as_deref(),
        Ok(&b"second-value-longer"[..]),
        "previous"
    );
    let first = version_ids(&s)
        .into_iter()
        .find(|id| stage_value(&s, id) == "first-value")
        .unwrap();
    let ver = m.p(&format!("{s}/versions/{first}"));
    assert_eq!(
        python_mmap(&ver).as_deref(),
        Ok(&b"first-value"[..]),
        "a version"
    );
    drop(old);
}

/// A version's value, by id, through the API.
fn stage_value(s: &str, id: &str) -> String {
    rt().block_on(async {
        sdk()
            .get_secret_value()
            .secret_id(s)
            .version_id(id)
            .send()
            .await
            .unwrap()
            .secret_string()
            .unwrap()
            .to_string()
    })
}
