//! Before/after figures for the reliability rules, measured on real mounts
//! against moto behind the fault-injecting proxy: the same scenarios as
//! tests/mount/reliability.rs, without assertions, printing what happened. Run it
//! once with this tree's binary and once with an older build to compare:
//!
//!   cargo bench --bench figures -- --figures
//!   SECRETSFS_BIN=/path/to/old/secretsfs cargo bench --bench figures -- --figures
//!
//! Without `--figures` (as under `cargo test --all-targets`) it does nothing.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;

fn main() {
    if !std::env::args().any(|a| a == "--figures") {
        return;
    }
    let bin = std::env::var("SECRETSFS_BIN").unwrap_or_else(|_| "this tree".into());
    println!("binary: {bin}");
    refresh_ahead();
    calls_in_flight();
    denied_reads();
    hung_cold_reads();
    revalidation();
    hung_cached_reads();
}

fn counts(proxy: &Proxy, s: &str) -> (usize, usize) {
    (
        proxy.count_for("DescribeSecret", Some(s)),
        proxy.count_for("GetSecretValue", Some(s)),
    )
}

/// Item 1: --ttl 2, every call takes 300 ms, 500 reads over 10 s.
fn refresh_ahead() {
    let s = unique("fig-ahead");
    create(&s, "steady");
    let (proxy, m) = mount_via_proxy(&s, &["--ttl", "2"]);
    proxy.fault(
        "*",
        Some(&s),
        Fault::Delay(Duration::from_millis(300)),
        100_000,
    );
    let rel = format!("{s}/current");
    let _ = m.read(&rel);
    let mut lat = Vec::new();
    for _ in 0..500 {
        let t = Instant::now();
        let _ = m.read(&rel);
        lat.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    lat.sort();
    let slow = lat
        .iter()
        .filter(|d| **d > Duration::from_millis(50))
        .count();
    println!(
        "1 refresh ahead (300 ms backend, ttl 2 s, 500 reads): p50 {:?} max {:?}, reads over 50 ms: {slow}",
        lat[250], lat[499]
    );
}

/// Item 3: 200 distinct cold reads at once; the most requests open at the proxy.
fn calls_in_flight() {
    let prefix = unique("fig-bound");
    let names: Vec<String> = (0..200).map(|i| format!("{prefix}/s{i}")).collect();
    for n in &names {
        create(n, "v");
    }
    let proxy = Proxy::start();
    let m = Mount::aws()
        .endpoint(proxy.url())
        .args(["--prefix", &prefix])
        .start();
    let _ = ls(&m.p(&prefix));
    proxy.fault(
        "*",
        Some(&prefix),
        Fault::Delay(Duration::from_millis(50)),
        100_000,
    );
    proxy.reset_peak();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(200));
    let t = Instant::now();
    let readers: Vec<_> = names
        .iter()
        .map(|n| {
            let p = m.p(&format!("{n}/current"));
            let b = barrier.clone();
            std::thread::spawn(move || {
                b.wait();
                std::fs::read(p).is_ok()
            })
        })
        .collect();
    let ok = readers
        .into_iter()
        .map(|r| r.join().unwrap())
        .filter(|ok| *ok)
        .count();
    println!(
        "3 bound (200 cold reads at once, default settings): peak requests open at the proxy {}, {ok} ok, {:?}",
        proxy.peak(),
        t.elapsed()
    );
}

/// Item 5: 50 reads of a secret whose every call is denied.
fn denied_reads() {
    let s = unique("fig-denied");
    create(&s, "secret");
    let proxy = Proxy::start();
    let denied = Fault::Error {
        status: 400,
        code: "AccessDeniedException",
    };
    proxy.fault("*", Some(&s), denied, 100_000);
    let m = Mount::aws()
        .endpoint(proxy.url())
        .args(["--secret", &s])
        .start();
    for _ in 0..50 {
        let _ = m.read(&format!("{s}/current"));
    }
    let (d, g) = counts(&proxy, &s);
    println!(
        "5 denied (50 reads): {} calls ({d} DescribeSecret, {g} GetSecretValue)",
        d + g
    );
}

/// Item 5 (down with nothing cached): 10 readers of a secret whose calls hang for 30 s.
fn hung_cold_reads() {
    let s = unique("fig-hang");
    create(&s, "never");
    let proxy = Proxy::start();
    let m = Mount::aws()
        .endpoint(proxy.url())
        .args(["--secret", &s])
        .start();
    proxy.fault(
        "*",
        Some(&s),
        Fault::Delay(Duration::from_secs(30)),
        100_000,
    );
    let path = m.p(&format!("{s}/current"));
    let readers: Vec<_> = (0..10)
        .map(|_| {
            let p = path.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                let _ = std::fs::read(&p);
                t.elapsed()
            })
        })
        .collect();
    let worst = readers
        .into_iter()
        .map(|r| r.join().unwrap())
        .max()
        .unwrap();
    let t = Instant::now();
    let _ = std::fs::read(&path);
    println!(
        "5 down (10 cold readers, endpoint hung 30 s): slowest reader {worst:?}; the next read {:?}",
        t.elapsed()
    );
}

/// Item 6: calls per TTL for an unchanged and a changed secret.
fn revalidation() {
    let s = unique("fig-reval");
    create(&s, "one");
    let (proxy, m) = mount_via_proxy(&s, &["--ttl", "1"]);
    let rel = format!("{s}/current");
    let _ = m.read(&rel);
    let before = counts(&proxy, &s);
    std::thread::sleep(Duration::from_millis(1300));
    let _ = m.read(&rel);
    let after = counts(&proxy, &s);
    put(&s, "two");
    std::thread::sleep(Duration::from_millis(1300));
    let _ = m.read(&rel);
    let changed = counts(&proxy, &s);
    println!(
        "6 after the TTL: unchanged {} DescribeSecret + {} GetSecretValue; changed {} + {}",
        after.0 - before.0,
        after.1 - before.1,
        changed.0 - after.0,
        changed.1 - after.1
    );
}

/// Item 12: a value cached with --ttl 2 while every call hangs for 10 s.
fn hung_cached_reads() {
    let s = unique("fig-hung");
    create(&s, "cached");
    let (proxy, m) = mount_via_proxy(&s, &["--ttl", "2"]);
    let rel = format!("{s}/current");
    let _ = m.read(&rel);
    proxy.fault(
        "*",
        Some(&s),
        Fault::Delay(Duration::from_secs(10)),
        100_000,
    );
    let end = Instant::now() + Duration::from_secs(20);
    let mut worst = Duration::ZERO;
    while Instant::now() < end {
        let t = Instant::now();
        let _ = m.read(&rel);
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("12 hung API (ttl 2 s, calls hang 10 s, 20 s of reads): slowest read {worst:?}");
}
