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

/// Median, min, max of each path's rounds (after one warm-up each),
/// the paths taken in turn within each round, so that whatever else the
/// machine does weighs on all of them alike.
fn measure(paths: &[PathBuf]) -> Vec<[f64; 3]> {
    let (rounds, n) = scale();
    for p in paths {
        per_open(p, n / 10);
    }
    let mut per: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    for _ in 0..rounds {
        for (p, v) in paths.iter().zip(&mut per) {
            v.push(per_open(p, n));
        }
    }
    per.into_iter()
        .map(|mut v| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            [v[v.len() / 2], v[0], v[v.len() - 1]]
        })
        .collect()
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

/// The check alone, in this process: `Access::check_open` for this
/// process under a rule that covers the secret, after a first (cold)
/// check; microseconds per check, cold and warm.
fn check_cost(n: usize) -> (f64, f64) {
    use secretsfs::access::{Access, AccessRules, Target};
    #[derive(serde::Deserialize)]
    struct F {
        access: Vec<secretsfs::config::schema::AccessSpec>,
    }
    let f: F = toml::from_str("[[access]]\npattern = \"bench/*\"\nuser = 0\n").unwrap();
    let access = Access::new(AccessRules::build(&f.access).unwrap(), None);
    let stats = secretsfs::stats::Stats::default();
    let secrets = ["bench/s".to_string()];
    let me = secretsfs::fs::Caller {
        pid: std::process::id(),
        uid: 0,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let check = || async {
            let t = Target {
                file: "bench/s/current",
                secrets: &secrets,
            };
            access.check_open(t, me, &stats).await.unwrap();
        };
        let t = Instant::now();
        check().await;
        let cold = t.elapsed().as_secs_f64() * 1e6;
        let t = Instant::now();
        for _ in 0..n {
            check().await;
        }
        (cold, t.elapsed().as_secs_f64() * 1e6 / n as f64)
    })
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
    // One daemon per local store: each case mounts its own copy.
    let mount = |(i, args): (usize, &Vec<&str>)| {
        let copy = work.path().join(format!("store{i}"));
        let cp = Command::new("cp").arg("-a").arg(&store).arg(&copy).status();
        assert!(cp.unwrap().success());
        Mount::local(&copy)
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

    let floor = Floor::start(work.path());
    let mounts: Vec<Mount> = cases
        .iter()
        .map(|(_, args)| args)
        .enumerate()
        .map(mount)
        .collect();
    let mut paths = vec![tmpfs_file.clone()];
    paths.extend(floor.as_ref().map(|f| f.mnt.join("perf/current")));
    paths.extend(mounts.iter().map(|m| m.p("bench/s/current")));
    let mut figures = measure(&paths).into_iter();
    let base = figures.next().unwrap();
    let floor = floor.map(|_| figures.next().unwrap());
    let ours: Vec<_> = cases.iter().map(|(label, _)| label).zip(figures).collect();
    // From a thread that is not the process's leader: held by its
    // process's entry (tgkill(tgid, tid, 0) and the process's pidfd).
    let pair = [
        paths[paths.len() - 3].clone(),
        paths[paths.len() - 2].clone(),
    ];
    let threaded = std::thread::spawn(move || measure(&pair)).join().unwrap();
    let lines = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .count();
    let opens = rounds * n + n / 10;
    assert!(
        lines <= 3,
        "{lines} log lines for {opens} opens by one process"
    );
    let (cold, warm) = check_cost(n * 10);
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
    for (label, s) in &ours {
        println!("| {label} | {} | {:.2}x |", show(*s), s[0] / base[0]);
    }
    let (none, with, logged) = (ours[0].1, ours[1].1, ours[2].1);
    println!();
    println!(
        "rule / no rule: {:.2}x by medians, {:.2}x by minimums (target <= 2x); \
         cost of a check: {:.2} us per open by medians, {:.2} us by minimums",
        with[0] / none[0],
        with[1] / none[1],
        with[0] - none[0],
        with[1] - none[1]
    );
    println!(
        "rule + log / no rule: {:.2}x by medians, {:.2}x by minimums; \
         log lines for {opens} opens: {lines}",
        logged[0] / none[0],
        logged[1] / none[1]
    );
    println!(
        "from a second thread of the process (held by tgkill and the process's pidfd): \
         no rule {}, rule {}: {:.2}x by medians, {:.2}x by minimums",
        show(threaded[0]),
        show(threaded[1]),
        threaded[1][0] / threaded[0][0],
        threaded[1][1] / threaded[0][1]
    );
    println!(
        "the check alone, in process ({} checks): {warm:.3} us each while the caller is held \
         (pidfd), {cold:.1} us for the first (/proc read off-thread)",
        n * 10
    );
}
