//! The read path on real mounts against moto: tree, contents, caching,
//! freshness, errors, permissions and process life, checked through the
//! mount and through the API.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, UNIX_EPOCH};

use crate::common::*;

#[test]
fn current_previous_and_versions_hold_exact_values() {
    let s = unique("rp-str");
    let b = unique("rp-bin");
    let v1 = create(&s, "first value");
    let v2 = put(&s, "second value\n");
    let bin: Vec<u8> = vec![0, 1, 2, 0xff, 0xfe, b'\n', 0x80];
    let vb = create_binary(&b, &bin);
    let m = Mount::aws().args(["--secret", &s, "--secret", &b]).start();

    assert_eq!(m.read_string(&format!("{s}/current")), "second value\n");
    assert_eq!(m.read_string(&format!("{s}/previous")), "first value");
    assert_eq!(m.read_string(&format!("{s}/versions/{v1}")), "first value");
    assert_eq!(
        m.read_string(&format!("{s}/versions/{v2}")),
        "second value\n"
    );
    let listed = ls(&m.p(&format!("{s}/versions")));
    let mut api = version_ids(&s);
    api.sort();
    assert_eq!(listed, api);

    assert_eq!(m.read(&format!("{b}/current")).unwrap(), bin);
    assert_eq!(m.read(&format!("{b}/versions/{vb}")).unwrap(), bin);
    // No AWSPREVIOUS: no file, ENOENT.
    let e = m.read(&format!("{b}/previous")).unwrap_err();
    assert_eq!(errno_of(&e), libc::ENOENT);
    let names = ls(&m.p(&b));
    assert!(!names.contains(&"previous".to_string()), "{names:?}");
    let e = m
        .read(&format!(
            "{b}/versions/00000000-0000-4000-8000-000000000000"
        ))
        .unwrap_err();
    assert_eq!(errno_of(&e), libc::ENOENT);
}

#[test]
fn nested_names_and_a_secret_that_is_also_a_prefix() {
    let top = unique("rp-nest");
    let db = format!("{top}/prod/db");
    let pw = format!("{top}/prod/db/password");
    create(&db, "db-config");
    create(&pw, "db-password");
    let m = Mount::aws().args(["--prefix", &top]).start();
    let entries = ls(&m.p(&db));
    assert_eq!(
        entries,
        ["current", "json", "password", "stages", "versions"]
    );
    assert_eq!(m.read_string(&format!("{db}/current")), "db-config");
    assert_eq!(m.read_string(&format!("{pw}/current")), "db-password");
    let prod = ls(&m.p(&format!("{top}/prod")));
    assert_eq!(prod, ["db"]);
    // A pure prefix has no files of its own.
    let e = m.read(&format!("{top}/prod/current")).unwrap_err();
    assert_eq!(errno_of(&e), libc::ENOENT);
}

#[test]
fn listing_spans_pages_and_prefix_limits_it() {
    let top = unique("rp-many");
    let client = sdk();
    // Eight at a time: moto answers 500 when hundreds arrive at once on a
    // busy machine.
    rt().block_on(async {
        for batch in (0..235).collect::<Vec<_>>().chunks(8) {
            let mut tasks = Vec::new();
            for i in batch {
                let c = client.clone();
                let name = format!("{top}/s{i:03}");
                tasks.push(tokio::spawn(async move {
                    c.create_secret()
                        .name(name)
                        .secret_string("v")
                        .send()
                        .await
                        .unwrap();
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        }
    });
    let other = unique("rp-outside");
    create(&other, "not under the prefix");
    let proxy = Proxy::start();
    let m = Mount::aws()
        .endpoint(proxy.url())
        .args(["--prefix", &format!("{top}/")])
        .start();
    let root = ls(&m.path);
    assert_eq!(
        root,
        std::slice::from_ref(&top),
        "only the prefix is visible (and .secretsfs is hidden)"
    );
    let n = std::fs::read_dir(m.p(&top)).unwrap().count();
    assert_eq!(n, 235);
    assert!(
        proxy.count("ListSecrets") >= 3,
        "pages: {}",
        proxy.count("ListSecrets")
    );
    let e = m.read(&format!("{other}/current")).unwrap_err();
    assert_eq!(errno_of(&e), libc::ENOENT);
    assert_eq!(
        proxy.count_for("GetSecretValue", Some(&other)),
        0,
        "outside the prefix: no call"
    );
}

#[test]
fn secret_flag_exposes_exactly_those_with_no_list_call() {
    let a = unique("rp-only-a");
    let b = unique("rp-only-b");
    let c = unique("rp-only-c");
    create(&a, "A");
    create(&b, "B");
    create(&c, "C");
    let proxy = Proxy::start();
    let m = Mount::aws()
        .endpoint(proxy.url())
        .args(["--secret", &a, "--secret", &b])
        .start();
    let root = ls(&m.path);
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(root, want);
    assert_eq!(m.read_string(&format!("{a}/current")), "A");
    assert_eq!(
        errno_of(&m.read(&format!("{c}/current")).unwrap_err()),
        libc::ENOENT
    );
    assert_eq!(proxy.count("ListSecrets"), 0);
}

#[test]
fn direct_lookup_works_when_list_secrets_is_denied() {
    let s = unique("rp-direct");
    create(&s, "reachable");
    let proxy = Proxy::start();
    proxy.fault(
        "ListSecrets",
        None,
        Fault::Error {
            status: 400,
            code: "AccessDeniedException",
        },
        usize::MAX,
    );
    let m = Mount::aws().endpoint(proxy.url()).start();
    assert_eq!(m.read_string(&format!("{s}/current")), "reachable");
    let e = std::fs::read_dir(&m.path)
        .and_then(|mut d| d.next().transpose())
        .unwrap_err();
    assert_eq!(errno_of(&e), libc::EACCES);
    // Unknown names: ENOENT, and probing again soon asks nothing more.
    let ghost = unique("rp-ghost");
    for _ in 0..5 {
        assert_eq!(
            errno_of(&m.read(&format!("{ghost}/current")).unwrap_err()),
            libc::ENOENT
        );
    }
    let asked = proxy.count_for("DescribeSecret", Some(&ghost))
        + proxy.count_for("GetSecretValue", Some(&ghost));
    assert!(asked <= 1, "{asked} calls for a missing name");
    // The denied listing is remembered too: not asked at every lookup.
    assert!(
        proxy.count("ListSecrets") <= 2,
        "{}",
        proxy.count("ListSecrets")
    );
}

#[test]
fn reads_within_ttl_make_one_get_secret_value() {
    let s = unique("rp-ttl");
    create(&s, "cached");
    let proxy = Proxy::start();
    let m = Mount::aws()
        .endpoint(proxy.url())
        .args(["--secret", &s, "--ttl", "300"])
        .start();
    for _ in 0..200 {
        assert_eq!(m.read_string(&format!("{s}/current")), "cached");
    }
    assert_eq!(proxy.count_for("GetSecretValue", Some(&s)), 1);
    let st = m.stats();
    assert_eq!(st["api_calls"]["GetSecretValue"], 1);
}

#[test]
fn concurrent_cold_readers_make_one_call() {
    let s = unique("rp-herd");
    create(&s, "herd value");
    let proxy = Proxy::start();
    // Slow answers make the 32 readers overlap for sure.
    proxy.fault(
        "GetSecretValue",
        Some(&s),
        Fault::Delay(Duration::from_millis(300)),
        100,
    );
    let m = Mount::aws()
        .endpoint(proxy.url())
        .args(["--secret", &s])
        .start();
    let path = m.p(&format!("{s}/current"));
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(32));
    let readers: Vec<_> = (0..32)
        .map(|_| {
            let p = path.clone();
            let b = barrier.clone();
            std::thread::spawn(move || {
                b.wait();
                std::fs::read(p).unwrap()
            })
        })
        .collect();
    for r in readers {
        assert_eq!(r.join().unwrap(), b"herd value");
    }
    assert_eq!(proxy.count_for("GetSecretValue", Some(&s)), 1);
}

#[test]
fn a_change_is_seen_after_the_ttl_and_deletion_becomes_enoent() {
    let s = unique("rp-fresh");
    create(&s, "old");
    let m = Mount::aws().args(["--secret", &s, "--ttl", "2"]).start();
    let rel = format!("{s}/current");
    assert_eq!(m.read_string(&rel), "old");
    put(&s, "new and longer");
    assert_eq!(
        m.read_string(&rel),
        "old",
        "within the TTL the cache answers"
    );
    std::thread::sleep(Duration::from_millis(2600));
    assert_eq!(m.read_string(&rel), "new and longer");
    assert_eq!(m.read_string(&format!("{s}/previous")), "old");
    assert_eq!(std::fs::metadata(m.p(&rel)).unwrap().len(), 14);

    rt().block_on(sdk().delete_secret().secret_id(&s).send())
        .unwrap();
    std::thread::sleep(Duration::from_millis(2600));
    assert_eq!(errno_of(&m.read(&rel).unwrap_err()), libc::ENOENT);
}

#[test]
fn sizes_mtimes_modes_and_owner() {
    let s = unique("rp-attr");
    create(&s, "twelve bytes");
    let v2 = put(&s, "0123456789abcdef");
    let created = rt()
        .block_on(
            sdk()
                .get_secret_value()
                .secret_id(&s)
                .version_stage("AWSCURRENT")
                .send(),
        )
        .unwrap()
        .created_date()
        .unwrap()
        .secs();
    let m = Mount::aws().args(["--secret", &s]).start();
    let cur = std::fs::metadata(m.p(&format!("{s}/current"))).unwrap();
    assert_eq!(cur.len(), 16);
    assert_eq!(cur.mtime(), created);
    assert_eq!(cur.permissions().mode() & 0o7777, 0o600);
    assert_eq!(cur.uid(), unsafe { libc::geteuid() });
    let prev = std::fs::metadata(m.p(&format!("{s}/previous"))).unwrap();
    assert_eq!(prev.len(), 12);
    assert_eq!(prev.permissions().mode() & 0o7777, 0o400);
    let ver = std::fs::metadata(m.p(&format!("{s}/versions/{v2}"))).unwrap();
    assert_eq!(ver.permissions().mode() & 0o7777, 0o400);
    assert!(ver.modified().unwrap() > UNIX_EPOCH);
    for dir in [s.clone(), format!("{s}/versions"), String::new()] {
        let md = std::fs::metadata(m.p(&dir)).unwrap();
        assert!(md.is_dir());
        assert_eq!(
            md.permissions().mode() & 0o077,
            0,
            "{dir}: no group/other bits"
        );
    }
}

#[test]
fn other_users_are_locked_out_by_default() {
    let s = unique("rp-nobody");
    create(&s, "private");
    let m = Mount::aws().args(["--secret", &s]).start();
    let path = m.p(&format!("{s}/current"));
    let out = std::process::Command::new("runuser")
        .args(["-u", "nobody", "--", "cat"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Permission denied"), "{err}");
}

#[test]
fn allow_other_lets_the_kernel_enforce_modes_and_uid_sets_the_owner() {
    let s = unique("rp-other");
    create(&s, "shared");
    // Owned by root, mode 0600/0400: nobody is let in but refused by mode.
    let m = Mount::aws().args(["--secret", &s, "--allow-other"]).start();
    let cat = |path: &std::path::Path| {
        std::process::Command::new("runuser")
            .args(["-u", "nobody", "--", "cat"])
            .arg(path)
            .output()
            .unwrap()
    };
    let out = cat(&m.p(&format!("{s}/current")));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
    drop(m);
    // Owned by nobody: nobody reads it.
    let m = Mount::aws()
        .args([
            "--secret",
            &s,
            "--allow-other",
            "--uid",
            "65534",
            "--gid",
            "65534",
        ])
        .start();
    let out = cat(&m.p(&format!("{s}/current")));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"shared");
    let md = std::fs::metadata(m.p(&format!("{s}/current"))).unwrap();
    assert_eq!((md.uid(), md.gid()), (65534, 65534));
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.contains(m.path.to_str().unwrap()))
        .unwrap();
    for opt in [
        "nosuid",
        "nodev",
        "noexec",
        "default_permissions",
        "allow_other",
    ] {
        assert!(line.contains(opt), "{opt} missing: {line}");
    }
}

#[test]
fn sigterm_unmounts_and_exits_zero() {
    let s = unique("rp-term");
    create(&s, "v");
    let mut m = Mount::aws().args(["--secret", &s]).start();
    assert_eq!(m.read_string(&format!("{s}/current")), "v");
    let status = m.terminate();
    assert!(status.success(), "{status}");
    assert!(!m.is_mounted());
}

#[test]
fn external_unmount_ends_the_daemon_with_zero() {
    let s = unique("rp-umount");
    create(&s, "v");
    let mut m = Mount::aws().args(["--secret", &s]).start();
    let st = std::process::Command::new("umount")
        .arg(&m.path)
        .status()
        .unwrap();
    assert!(st.success());
    // terminate() finds the daemon already gone or going: exit status 0.
    let status = m.terminate();
    assert!(status.success(), "{status}");
}

#[test]
fn stale_value_is_served_when_the_backend_fails_transiently() {
    let s = unique("rp-stale");
    create(&s, "last known");
    let proxy = Proxy::start();
    let m = Mount::aws()
        .endpoint(proxy.url())
        .args(["--secret", &s, "--ttl", "1"])
        .start();
    let rel = format!("{s}/current");
    assert_eq!(m.read_string(&rel), "last known");
    proxy.fault(
        "*",
        Some(&s),
        Fault::Error {
            status: 500,
            code: "InternalServiceError",
        },
        usize::MAX,
    );
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(m.read_string(&rel), "last known");
    assert!(m.stats()["stale_served"].as_u64().unwrap() >= 1);
    assert!(m.log_text().contains("serving the last value fetched"));
    // Access denied is not papered over.
    proxy.clear_faults();
    proxy.fault(
        "*",
        Some(&s),
        Fault::Error {
            status: 400,
            code: "AccessDeniedException",
        },
        usize::MAX,
    );
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(errno_of(&m.read(&rel).unwrap_err()), libc::EACCES);
}

#[test]
fn failure_with_nothing_cached_is_eio() {
    let s = unique("rp-eio");
    create(&s, "v");
    let proxy = Proxy::start();
    proxy.fault(
        "GetSecretValue",
        Some(&s),
        Fault::Error {
            status: 503,
            code: "ServiceUnavailable",
        },
        usize::MAX,
    );
    let m = Mount::aws()
        .endpoint(proxy.url())
        .args(["--secret", &s])
        .start();
    assert_eq!(
        errno_of(&m.read(&format!("{s}/current")).unwrap_err()),
        libc::EIO
    );
}

#[test]
fn a_slow_secret_does_not_delay_reads_of_cached_ones() {
    let slow = unique("rp-slow");
    let fast = unique("rp-fast");
    create(&slow, "slow");
    create(&fast, "fast");
    let proxy = Proxy::start();
    let m = Mount::aws()
        .endpoint(proxy.url())
        .args(["--secret", &slow, "--secret", &fast])
        .start();
    assert_eq!(m.read_string(&format!("{fast}/current")), "fast");
    proxy.fault(
        "GetSecretValue",
        Some(&slow),
        Fault::Delay(Duration::from_secs(3)),
        10,
    );
    let p = m.p(&format!("{slow}/current"));
    let slow_reader = std::thread::spawn(move || std::fs::read(p).unwrap());
    std::thread::sleep(Duration::from_millis(200));
    // While the slow call is in flight, the cached secret still answers,
    // many times over, before the slow reader is done.
    for _ in 0..50 {
        assert_eq!(m.read_string(&format!("{fast}/current")), "fast");
    }
    assert!(
        !slow_reader.is_finished(),
        "the slow read should still be waiting"
    );
    assert_eq!(slow_reader.join().unwrap(), b"slow");
}

#[test]
fn stats_file_is_hidden_and_counts() {
    let s = unique("rp-stats");
    create(&s, "v");
    let m = Mount::aws().args(["--secret", &s]).start();
    m.read_string(&format!("{s}/current"));
    m.read_string(&format!("{s}/current"));
    let names = ls(&m.path);
    assert!(!names.iter().any(|n| n == ".secretsfs"));
    let st = m.stats();
    assert_eq!(st["api_calls"]["GetSecretValue"], 1);
    assert!(st["cache_hits"].as_u64().unwrap() >= 1);
    assert!(st["cache_misses"].as_u64().unwrap() >= 1);
    assert_eq!(
        errno_of(
            &write_file(&m.p(".secretsfs/stats"), b"x", libc::O_WRONLY)
                .map_err(std::io::Error::from_raw_os_error)
                .unwrap_err()
        ),
        libc::EACCES
    );
}

#[test]
fn a_trace_log_holds_no_secret_value() {
    let s = unique("rp-trace");
    let old = "Tr4ce-0ld-VALUE-9f81";
    let new = "Tr4ce-N3w-VALUE-77ab";
    create(&s, old);
    let mut m = Mount::aws()
        .args(["--secret", &s])
        .env("RUST_LOG", "trace")
        .start();
    assert_eq!(m.read_string(&format!("{s}/current")), old);
    replace_file(&m.p(&format!("{s}/current")), new.as_bytes()).unwrap();
    assert_eq!(m.read_string(&format!("{s}/previous")), old);
    assert_eq!(current_string(&s), new);
    m.terminate();
    let log = m.log_text();
    assert!(
        log.len() > 10_000,
        "trace logging was on: {} bytes",
        log.len()
    );
    assert!(log.contains(&s), "the log names the secret");
    for v in [old, new] {
        assert!(!log.contains(v), "value {v} leaked into the log");
    }
}

#[test]
fn read_only_mount_serves_from_the_page_cache_and_still_sees_changes() {
    let s = unique("rp-ro");
    create(&s, "first");
    let proxy = Proxy::start();
    let m = Mount::aws()
        .endpoint(proxy.url())
        .args(["--secret", &s, "--ttl", "1", "--read-only"])
        .start();
    let rel = format!("{s}/current");
    for _ in 0..100 {
        assert_eq!(m.read_string(&rel), "first");
    }
    assert_eq!(proxy.count_for("GetSecretValue", Some(&s)), 1);
    put(&s, "second, longer");
    std::thread::sleep(Duration::from_millis(1300));
    // The kernel revalidates after the TTL; the daemon refetches and the
    // cached pages of the old version are dropped.
    assert_eq!(m.read_string(&rel), "second, longer");
    put(&s, "3rd");
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(m.read_string(&rel), "3rd");
}

#[test]
fn a_mountpoint_left_by_a_crash_is_cleaned_up_at_start() {
    let store = tempfile::tempdir().unwrap();
    let mut first = Mount::local(store.path()).arg("--demo").start();
    let path = first.path.clone();
    first.crash();
    let e = std::fs::read_dir(&path).unwrap_err();
    assert_eq!(errno_of(&e), libc::ENOTCONN);
    let second = Mount::local(store.path()).at(&path).start();
    assert_eq!(
        second.read_string("demo/api-key/current"),
        "ak_live_0123456789abcdef"
    );
    assert!(second.log_text().contains("stale FUSE mount"));
    drop(second);
    drop(first);
}
