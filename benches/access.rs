//! The cost of an `[[access]]` rule check per open, side by side in one
//! run: 10,000 open+read+close of a 200-byte secret by one process on
//! tmpfs, on the FUSE floor (the libfuse null filesystem of
//! /work/shared/floor in direct-I/O mode, every open and read reaching
//! its daemon, built with gcc when its source is there), and on secretsfs
//! (local store, read-write) without rules, with a rule covering the
//! secret, and with the rule and the access log (a file). Prints medians
//! over the rounds (min-max), the ratio rule / no rule and the cost per
//! check, and the log's line count for the 10,000 opens.
//!
//! Run: `cargo bench --bench access` (as root; needs /dev/fuse).
//! SECRETSFS_FLOOR=DIR names another floor directory.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;

const VALUE: &str = "0123456789abcdefghij";

/// Rounds and opens per round; without `--bench` (`cargo test
/// --all-targets`), a quick smoke run of the same code.
fn scale() -> (usize, usize) {
    if std::env::args().any(|a| a == "--bench") {
        (7, 10_000)
    } else {
        (1, 200)
    }
}

/// open + read to EOF + close, `n` times; microseconds per open.
fn per_open(path: &Path, n: usize) -> f64 {
    let mut buf = [0u8; 4096];
    let t = Instant::now();
    for _ in 0..n {
        let mut f = std::fs::File::open(path).unwrap();
        while std::io::Read::read(&mut f, &mut buf).unwrap() > 0 {}
    }
    t.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// Median, min, max of the rounds (after one warm-up).
fn measure(path: &Path) -> [f64; 3] {
    let (rounds, n) = scale();
    per_open(path, n / 10);
    let mut v: Vec<f64> = (0..rounds).map(|_| per_open(path, n)).collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    [v[v.len() / 2], v[0], v[v.len() - 1]]
}

fn show(s: [f64; 3]) -> String {
    format!("{:.2} us ({:.2}-{:.2})", s[0], s[1], s[2])
}

/// The libfuse null filesystem, mounted in direct-I/O mode; None if its
/// source or a compiler is missing.
struct Floor {
    child: Child,
    mnt: PathBuf,
}

impl Floor {
    fn start(work: &Path) -> Option<Floor> {
        let dir = std::env::var("SECRETSFS_FLOOR").unwrap_or_else(|_| "/work/shared/floor".into());
        let src = Path::new(&dir).join("nullfs.c");
        if !src.exists() {
            return None;
        }
        let bin = work.join("nullfs");
        let flags = Command::new("pkg-config")
            .args(["--cflags", "--libs", "fuse3"])
            .output()
            .ok()?;
        let flags = String::from_utf8(flags.stdout).ok()?;
        let built = Command::new("gcc")
            .args(["-O2", "-o"])
            .arg(&bin)
            .arg(&src)
            .args(flags.split_whitespace())
            .status()
            .ok()?;
        if !built.success() {
            return None;
        }
        let mnt = work.join("floor");
        std::fs::create_dir(&mnt).unwrap();
        let child = Command::new(&bin).arg(&mnt).arg("direct").spawn().ok()?;
        let file = mnt.join("perf/current");
        wait_until(Duration::from_secs(10), || file.exists()).then_some(Floor { child, mnt })
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        unmount_if_mounted(&self.mnt);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let (rounds, n) = scale();
    let smoke = rounds == 1;
    let work = tempfile::tempdir().unwrap();
    let tmpfs = tempfile::tempdir_in("/dev/shm").unwrap();
    let tmpfs_file = tmpfs.path().join("current");
    std::fs::write(&tmpfs_file, VALUE.repeat(10)).unwrap();
    let store = work.path().join("store");
    let rule = work.path().join("rule.toml");
    std::fs::write(&rule, "[[access]]\npattern = \"bench/*\"\nuser = 0\n").unwrap();
    let log = work.path().join("access.log");

    // The secret, stored once through a mount of the local store.
    {
        let m = Mount::local(&store)
            .endpoint("http://127.0.0.1:9".into())
            .start();
        std::fs::create_dir_all(m.p("bench/s")).unwrap();
        std::fs::write(m.p("bench/s/current"), VALUE.repeat(10)).unwrap();
    }
    let mount = |args: &[&str]| {
        Mount::local(&store)
            .endpoint("http://127.0.0.1:9".into())
            .args(args.iter().copied())
            .start()
    };
    let rule_arg = rule.to_str().unwrap();
    let log_arg = log.to_str().unwrap();
    let cases: [(&str, Vec<&str>); 3] = [
        ("secretsfs, no rule", vec![]),
        (
            "secretsfs, a rule covering the secret",
            vec!["--config", rule_arg],
        ),
        (
            "secretsfs, the rule and --access-log FILE",
            vec!["--config", rule_arg, "--access-log", log_arg],
        ),
    ];

    let base = measure(&tmpfs_file);
    let floor = Floor::start(work.path()).map(|f| measure(&f.mnt.join("perf/current")));
    let mut ours = Vec::new();
    for (label, args) in &cases {
        let m = mount(args);
        ours.push((label, measure(&m.p("bench/s/current")), m.stats()));
    }
    let lines = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .count();
    let opens = rounds * n + n / 10;
    assert!(
        lines <= 3,
        "{lines} log lines for {opens} opens by one process"
    );
    if smoke {
        println!("access benchmark: smoke run ok (numbers: cargo bench --bench access)");
        return;
    }
    println!(
        "access rule benchmark: {rounds} rounds of {n} open+read+close by one process, medians (min-max)\n"
    );
    println!("| case | per open | ratio to tmpfs |");
    println!("| --- | --- | --- |");
    println!("| tmpfs | {} | 1.00x |", show(base));
    match floor {
        Some(f) => println!(
            "| FUSE floor (libfuse null fs, direct I/O) | {} | {:.2}x |",
            show(f),
            f[0] / base[0]
        ),
        None => println!("| FUSE floor | not measured (no /work/shared/floor or no gcc/fuse3) | |"),
    }
    for (label, s, _) in &ours {
        println!("| {label} | {} | {:.2}x |", show(*s), s[0] / base[0]);
    }
    let (none, with, logged) = (ours[0].1[0], ours[1].1[0], ours[2].1[0]);
    println!();
    println!(
        "rule / no rule: {:.2}x (target <= 2x); cost of a check: {:.2} us per open",
        with / none,
        with - none
    );
    println!(
        "rule + log / no rule: {:.2}x; log lines for {opens} opens: {lines}",
        logged / none
    );
}
