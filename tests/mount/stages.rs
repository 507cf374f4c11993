//! Staging labels as files on real mounts: `<secret>/stages/<label>` against
//! moto (effects checked through the SDK, always naming the stage or version:
//! moto's GetSecretValue without one answers wrong after a label move), and
//! one promotion through the local store.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use crate::common::*;

fn string_of(name: &str, label: &str) -> Option<String> {
    stage(name, label).and_then(|(_, s, _)| s)
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_label_put_elsewhere_appears_after_the_ttl_and_reads_its_value() {
    let s = unique("st-ext");
    create(&s, "live");
    let m = Mount::aws().args(["--secret", &s, "--ttl", "1"]).start();
    let stages = m.p(&format!("{s}/stages"));
    assert_eq!(ls(&stages), ["AWSCURRENT"]);
    let id = put_staged(&s, "staged elsewhere", "AWSPENDING");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ls(&stages).contains(&"AWSPENDING".to_string()) {
        assert!(Instant::now() < deadline, "AWSPENDING never appeared");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(ls(&stages), ["AWSCURRENT", "AWSPENDING"]);
    assert_eq!(
        m.read_string(&format!("{s}/stages/AWSPENDING")),
        "staged elsewhere"
    );
    assert_eq!(m.read_string(&format!("{s}/stages/AWSCURRENT")), "live");
    assert_eq!(m.read_string(&format!("{s}/current")), "live");
    assert_eq!(
        ls(&m.p(&format!("{s}/versions"))).len(),
        2,
        "the staged version is a version too"
    );
    assert!(ls(&m.p(&format!("{s}/versions"))).contains(&id));
}

#[test]
fn writing_a_new_label_makes_a_version_with_only_it_and_leaves_current() {
    let s = unique("st-new");
    let v1 = create(&s, "old");
    let proxy = Proxy::start();
    let m = Mount::aws()
        .endpoint(proxy.url())
        .args(["--secret", &s])
        .start();
    let dir = m.p(&s);
    assert_eq!(m.read_string(&format!("{s}/current")), "old");
    sh_ok("printf new > stages/AWSPENDING", &dir);

    let (pending, value, _) = stage(&s, "AWSPENDING").expect("AWSPENDING exists");
    assert_eq!(value.as_deref(), Some("new"));
    let l = labels(&s);
    assert_eq!(l[&pending], ["AWSPENDING"], "only that label");
    assert_eq!(l[&v1], ["AWSCURRENT"], "current stays");
    assert_eq!(stage(&s, "AWSCURRENT").unwrap().0, v1);
    assert!(stage(&s, "AWSPREVIOUS").is_none());
    let puts = proxy.bodies("PutSecretValue");
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0]["VersionStages"], serde_json::json!(["AWSPENDING"]));
    let token = puts[0]["ClientRequestToken"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(token).is_ok_and(|u| u.get_version_num() == 4));

    // The mount: current unchanged, the stage file there at once.
    assert_eq!(m.read_string(&format!("{s}/current")), "old");
    assert_eq!(m.read_string(&format!("{s}/stages/AWSPENDING")), "new");
    assert_eq!(ls(&dir.join("stages")), ["AWSCURRENT", "AWSPENDING"]);
    assert_eq!(mode(&dir.join("stages/AWSPENDING")), 0o600);
    assert_eq!(mode(&dir.join("stages/AWSCURRENT")), 0o400);

    // The same value again: no version. Another: the label moves to it.
    sh_ok("printf new > stages/AWSPENDING", &dir);
    assert_eq!(version_ids(&s).len(), 2, "unchanged: no new version");
    sh_ok("printf newer > stages/AWSPENDING", &dir);
    assert_eq!(version_ids(&s).len(), 3);
    assert_eq!(string_of(&s, "AWSPENDING").as_deref(), Some("newer"));
    assert_eq!(stage(&s, "AWSCURRENT").unwrap().0, v1);
    assert_eq!(m.read_string(&format!("{s}/stages/AWSPENDING")), "newer");
    assert_eq!(m.read_string(&format!("{s}/current")), "old");
    assert_eq!(m.stats()["staged_puts"], 2);
}

#[test]
fn renaming_a_stage_onto_current_promotes_it_and_previous_follows() {
    let s = unique("st-promote");
    let v1 = create(&s, "old");
    let proxy = Proxy::start();
    let m = Mount::aws()
        .endpoint(proxy.url())
        .args(["--secret", &s])
        .start();
    let dir = m.p(&s);
    // Cached before the promotion, so that stale copies would show.
    assert_eq!(m.read_string(&format!("{s}/current")), "old");
    assert_eq!(m.read_string(&format!("{s}/stages/AWSCURRENT")), "old");
    sh_ok("printf new > stages/AWSPENDING", &dir);
    let (pending, _, _) = stage(&s, "AWSPENDING").unwrap();
    assert_eq!(m.read_string(&format!("{s}/stages/AWSPENDING")), "new");

    std::fs::rename(dir.join("stages/AWSPENDING"), dir.join("current")).unwrap();

    assert_eq!(stage(&s, "AWSCURRENT").unwrap().0, pending);
    assert_eq!(stage(&s, "AWSPREVIOUS").unwrap().0, v1);
    assert!(stage(&s, "AWSPENDING").is_none(), "the label is gone");
    let l = labels(&s);
    assert_eq!(l[&pending], ["AWSCURRENT"]);
    assert_eq!(l[&v1], ["AWSPREVIOUS"]);
    let moves = proxy.bodies("UpdateSecretVersionStage");
    assert_eq!(moves.len(), 2, "{moves:?}");
    assert_eq!(moves[0]["VersionStage"], "AWSCURRENT");
    assert_eq!(moves[0]["MoveToVersionId"], pending.as_str());
    assert_eq!(moves[0]["RemoveFromVersionId"], v1.as_str());
    assert_eq!(moves[1]["VersionStage"], "AWSPENDING");
    assert_eq!(moves[1]["RemoveFromVersionId"], pending.as_str());

    // The mount knows at once (TTL 300 s): no stale current or previous.
    assert_eq!(m.read_string(&format!("{s}/current")), "new");
    assert_eq!(m.read_string(&format!("{s}/previous")), "old");
    assert_eq!(m.read_string(&format!("{s}/stages/AWSCURRENT")), "new");
    assert_eq!(m.read_string(&format!("{s}/stages/AWSPREVIOUS")), "old");
    assert_eq!(ls(&dir.join("stages")), ["AWSCURRENT", "AWSPREVIOUS"]);
    assert_eq!(
        ls(&dir),
        ["current", "json", "previous", "stages", "versions"]
    );
    assert_eq!(m.stats()["stage_moves"], 1);
    assert_eq!(m.stats()["api_calls"]["UpdateSecretVersionStage"], 2);
    let metrics = String::from_utf8(m.read(".secretsfs/metrics").unwrap()).unwrap();
    assert!(
        metrics.contains("secretsfs_stage_moves_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("secretsfs_staged_puts_total 1"),
        "{metrics}"
    );

    // Renaming the label already current: nothing to do.
    std::fs::rename(dir.join("stages/AWSCURRENT"), dir.join("current")).unwrap();
    assert_eq!(proxy.bodies("UpdateSecretVersionStage").len(), 2);
    assert_eq!(m.read_string(&format!("{s}/current")), "new");
}

#[test]
fn awscurrent_and_awsprevious_are_read_only_and_other_renames_are_refused() {
    let s = unique("st-ro");
    create(&s, "one");
    let m = Mount::aws().args(["--secret", &s]).start();
    let dir = m.p(&s);
    let cur = dir.join("stages/AWSCURRENT");
    assert_eq!(write_file(&cur, b"x", libc::O_WRONLY), Err(libc::EACCES));
    assert_eq!(
        write_file(&cur, b"x", libc::O_WRONLY | libc::O_TRUNC),
        Err(libc::EACCES)
    );
    // No AWSPREVIOUS yet, and it cannot be made here either.
    assert_eq!(
        write_file(
            &dir.join("stages/AWSPREVIOUS"),
            b"x",
            libc::O_WRONLY | libc::O_CREAT
        ),
        Err(libc::EACCES)
    );
    sh_ok("printf two > stages/BLUE", &dir);
    let refused = |from: &str, to: &str| {
        let e = std::fs::rename(dir.join(from), dir.join(to)).unwrap_err();
        let n = errno_of(&e);
        assert!(n == libc::EPERM || n == libc::EACCES, "{from} -> {to}: {e}");
    };
    refused("stages/BLUE", "stages/GREEN");
    refused("stages/BLUE", "previous");
    refused("stages/BLUE", "versions/x");
    refused("current", "stages/BLUE");
    let e = std::fs::remove_file(dir.join("stages/BLUE")).unwrap_err();
    assert_eq!(errno_of(&e), libc::EPERM);
    assert_eq!(current_string(&s), "one");
    assert_eq!(string_of(&s, "BLUE").as_deref(), Some("two"));
    assert_eq!(version_ids(&s).len(), 2);
}

#[test]
fn an_invalid_label_is_einval_and_an_empty_or_huge_value_stores_nothing() {
    let s = unique("st-bad");
    create(&s, "one");
    let m = Mount::aws().args(["--secret", &s]).start();
    let stages = m.p(&format!("{s}/stages"));
    let create_flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
    assert_eq!(
        write_file(&stages.join("bad\nlabel"), b"x", create_flags),
        Err(libc::EINVAL)
    );
    let not_utf8 = std::ffi::OsStr::from_bytes(b"bad\xff");
    assert_eq!(
        write_file(&stages.join(not_utf8), b"x", create_flags),
        Err(libc::EINVAL)
    );
    // The write rules of current: an untouched close stores nothing, an
    // emptied value is EINVAL, over 64 KiB is EFBIG.
    assert_eq!(
        write_file(&stages.join("EMPTY"), b"", create_flags),
        Ok(()),
        "an untouched close commits nothing"
    );
    let huge = vec![b'x'; 65_537];
    assert_eq!(
        write_file(&stages.join("HUGE"), &huge, create_flags),
        Err(libc::EFBIG)
    );
    assert_eq!(version_ids(&s).len(), 1, "nothing stored");
    assert_eq!(ls(&stages), ["AWSCURRENT"], "no label was made");
    let dir = m.p(&s);
    sh_ok("printf kept > stages/KEPT", &dir);
    let out = sh("truncate -s 0 stages/KEPT", &dir);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Invalid argument"),
        "{out:?}"
    );
    assert_eq!(string_of(&s, "KEPT").as_deref(), Some("kept"));
    assert_eq!(version_ids(&s).len(), 2);
}

#[test]
fn a_custom_label_is_written_read_and_promoted() {
    let s = unique("st-custom");
    let v1 = create(&s, "blue");
    let m = Mount::aws().args(["--secret", &s]).start();
    let dir = m.p(&s);
    sh_ok("printf green > stages/green-2026", &dir);
    let (green, value, _) = stage(&s, "green-2026").unwrap();
    assert_eq!(value.as_deref(), Some("green"));
    assert_eq!(labels(&s)[&green], ["green-2026"]);
    assert_eq!(m.read_string(&format!("{s}/stages/green-2026")), "green");
    // Appending builds on the labelled value, as on current.
    sh_ok("printf ' and more' >> stages/green-2026", &dir);
    assert_eq!(
        string_of(&s, "green-2026").as_deref(),
        Some("green and more")
    );
    assert_eq!(stage(&s, "AWSCURRENT").unwrap().0, v1);
    sh_ok("mv stages/green-2026 current", &dir);
    assert_eq!(current_string(&s), "green and more");
    assert_eq!(stage(&s, "AWSPREVIOUS").unwrap().0, v1);
    assert!(stage(&s, "green-2026").is_none());
    assert_eq!(m.read_string(&format!("{s}/current")), "green and more");
    assert_eq!(m.read_string(&format!("{s}/previous")), "blue");
}

#[test]
fn the_local_store_promotes_a_staged_version_durably() {
    let store = tempfile::tempdir().unwrap();
    let s = "demo/api-key";
    {
        let m = Mount::local(store.path()).arg("--demo").start();
        let dir = m.p(s);
        sh_ok("printf rotated > stages/AWSPENDING", &dir);
        assert_eq!(
            m.read_string(&format!("{s}/current")),
            "ak_live_0123456789abcdef"
        );
        assert_eq!(m.read_string(&format!("{s}/stages/AWSPENDING")), "rotated");
        sh_ok("mv stages/AWSPENDING current", &dir);
        assert_eq!(m.read_string(&format!("{s}/current")), "rotated");
        assert_eq!(
            m.read_string(&format!("{s}/previous")),
            "ak_live_0123456789abcdef"
        );
        assert_eq!(m.stats()["stage_moves"], 1);
    }
    let m = Mount::local(store.path()).start();
    assert_eq!(m.read_string(&format!("{s}/current")), "rotated");
    assert_eq!(
        m.read_string(&format!("{s}/previous")),
        "ak_live_0123456789abcdef"
    );
    assert_eq!(
        ls(&m.p(&format!("{s}/stages"))),
        ["AWSCURRENT", "AWSPREVIOUS"]
    );
}

#[test]
fn no_staged_value_reaches_the_log_even_at_trace() {
    let s = unique("st-log");
    create(&s, "first-Q7zr-value");
    let m = Mount::aws()
        .args(["--secret", &s])
        .env("RUST_LOG", "trace")
        .start();
    let dir = m.p(&s);
    sh_ok("printf staged-K3vw-value > stages/AWSPENDING", &dir);
    assert_eq!(
        m.read_string(&format!("{s}/stages/AWSPENDING")),
        "staged-K3vw-value"
    );
    sh_ok("mv stages/AWSPENDING current", &dir);
    assert_eq!(m.read_string(&format!("{s}/current")), "staged-K3vw-value");
    let log = m.log_text();
    assert!(log.contains("promoted"), "the promotion is logged");
    assert!(log.contains("AWSPENDING"), "with its label");
    for value in ["first-Q7zr-value", "staged-K3vw-value", "Q7zr", "K3vw"] {
        assert!(!log.contains(value), "{value} in the log");
    }
}

#[test]
fn a_promotion_runs_the_change_hook_once_and_a_staged_put_does_not() {
    let hooks = tempfile::tempdir().unwrap();
    let runs = hooks.path().join("runs");
    let script = format!(
        "echo \"$SECRETSFS_SECRET $SECRETSFS_VERSION_ID\" >> {}",
        runs.display()
    );
    let read_runs = || std::fs::read_to_string(&runs).unwrap_or_default();
    let s = unique("st-hook");
    create(&s, "old");
    let m = Mount::aws()
        .args(["--secret", &s, "--ttl", "300"])
        .args(["--on-change", &script, "--watch", "1s"])
        .start();
    let dir = m.p(&s);
    assert_eq!(m.read_string(&format!("{s}/current")), "old");
    sh_ok("printf new > stages/AWSPENDING", &dir);
    let (pending, _, _) = stage(&s, "AWSPENDING").unwrap();
    sh_ok("mv stages/AWSPENDING current", &dir);
    let deadline = Instant::now() + Duration::from_secs(10);
    while read_runs().is_empty() {
        assert!(Instant::now() < deadline, "the hook never ran");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Two more intervals: no second run.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(read_runs(), format!("{s} {pending}\n"));
}

// ---- Probes from the review of issue 12 (were tests/adversarial_services.rs) ----

/// PutSecretValue on a secret with no version attaches AWSCURRENT too
/// (AWS does, moto does): the mount's `current` must show it.
#[test]
fn a_staged_create_on_a_secret_without_versions_shows_in_current() {
    let s = unique("rv3empty");
    rt().block_on(sdk().create_secret().name(&s).send())
        .expect("create empty");
    let m = Mount::aws().args(["--secret", &s]).start();
    let dir = m.p(&s);
    eprintln!("listing before: {:?}", ls(&dir));
    eprintln!(
        "current before: {:?}",
        std::fs::read(dir.join("current")).map_err(|e| e.to_string())
    );
    let out = sh("printf staged > stages/AWSPENDING", &dir);
    assert!(out.status.success(), "{out:?}");
    eprintln!("labels through the API: {:?}", labels(&s));
    let api_current = stage(&s, "AWSCURRENT").and_then(|(_, v, _)| v);
    let mount_current = std::fs::read(dir.join("current")).map_err(|e| e.to_string());
    eprintln!("API AWSCURRENT={api_current:?}, mount current={mount_current:?}");
    assert_eq!(api_current.as_deref(), Some("staged"));
    assert_eq!(
        mount_current,
        Ok(b"staged".to_vec()),
        "mount's current is stale"
    );
    assert!(
        !m.log_text().contains("AWSCURRENT unchanged"),
        "the log says AWSCURRENT stayed, but it moved"
    );
}

/// A lost answer to the promotion's UpdateSecretVersionStage: the rename
/// fails although AWSCURRENT moved; a retry of the rename must still take
/// the label away from the new current (as a successful one does).
#[test]
fn a_retried_promotion_after_a_lost_answer_removes_the_label() {
    let s = unique("rv3lost");
    create(&s, "old");
    let pending = put_staged(&s, "new", "AWSPENDING");
    let (proxy, m) = mount_via_proxy(&s, &[]);
    let dir = m.p(&s);
    assert_eq!(
        std::fs::read(dir.join("stages/AWSPENDING")).unwrap(),
        b"new"
    );
    proxy.fault("UpdateSecretVersionStage", None, Fault::DropResponse, 1);
    let first = sh("mv stages/AWSPENDING current", &dir);
    eprintln!("first rename: {first:?}");
    eprintln!("labels after first: {:?}", labels(&s));
    eprintln!("listing stages: {:?}", ls(&dir.join("stages")));
    eprintln!("current: {:?}", std::fs::read(dir.join("current")));
    if !first.status.success() {
        let again = sh("mv stages/AWSPENDING current", &dir);
        eprintln!("second rename: {again:?}");
    }
    let l = labels(&s);
    eprintln!("labels at end: {l:?}");
    assert_eq!(
        l.get(&pending).cloned(),
        Some(vec!["AWSCURRENT".to_string()])
    );
    assert_eq!(std::fs::read(dir.join("current")).unwrap(), b"new");
}

/// stages/AWSCURRENT and stages/AWSPREVIOUS follow a write of current.
#[test]
fn stage_files_follow_a_write_of_current() {
    let s = unique("rv3follow");
    create(&s, "one");
    let m = Mount::aws().args(["--secret", &s]).start();
    let dir = m.p(&s);
    assert_eq!(
        std::fs::read(dir.join("stages/AWSCURRENT")).unwrap(),
        b"one"
    );
    let out = sh("printf two > current", &dir);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read(dir.join("stages/AWSCURRENT")).unwrap(),
        b"two"
    );
    assert_eq!(
        std::fs::read(dir.join("stages/AWSPREVIOUS")).unwrap(),
        b"one"
    );
    assert_eq!(std::fs::read(dir.join("previous")).unwrap(), b"one");
}

/// A stage file open for writing while it is renamed onto current: the
/// writer's close stores a staged version, and `current` must still show
/// the promoted value (not the writer's bytes, which went to the inode the
/// kernel now calls `current`).
#[test]
fn a_stage_writer_open_across_its_promotion_does_not_show_in_current() {
    use std::io::Write;
    let s = unique("rv3stw");
    create(&s, "old");
    put_staged(&s, "new", "AWSPENDING");
    let m = Mount::aws().args(["--secret", &s]).start();
    let dir = m.p(&s);
    assert_eq!(
        std::fs::read(dir.join("stages/AWSPENDING")).unwrap(),
        b"new"
    );
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(dir.join("stages/AWSPENDING"))
        .unwrap();
    f.write_all(b"staged2").unwrap();
    let out = sh("mv stages/AWSPENDING current", &dir);
    assert!(out.status.success(), "{out:?}");
    let mid = std::fs::read(dir.join("current")).map(|v| String::from_utf8_lossy(&v).into_owned());
    eprintln!("current while the writer is open: {mid:?}");
    let closed = f.sync_all();
    drop(f);
    eprintln!("close: {closed:?}; labels {:?}", labels(&s));
    let api_cur = stage(&s, "AWSCURRENT").and_then(|(_, v, _)| v);
    let api_pending = stage(&s, "AWSPENDING").and_then(|(_, v, _)| v);
    let cur = std::fs::read(dir.join("current")).map(|v| String::from_utf8_lossy(&v).into_owned());
    let pend = std::fs::read(dir.join("stages/AWSPENDING"))
        .map(|v| String::from_utf8_lossy(&v).into_owned());
    eprintln!(
        "API current={api_cur:?} pending={api_pending:?}; mount current={cur:?} pending={pend:?}"
    );
    assert_eq!(
        mid.ok().as_deref(),
        Some("new"),
        "current showed the writer's bytes"
    );
    assert_eq!(cur.ok(), api_cur);
    assert_eq!(pend.ok(), api_pending);
}

/// A label set elsewhere with a newline in it: a promotion through the
/// mount must not write a forged line into the log.
#[test]
fn a_label_with_a_newline_does_not_forge_log_lines() {
    let s = unique("rv3nl");
    create(&s, "old");
    let label = "x\nFORGED promoted secret=evil";
    put_staged(&s, "new", label);
    let m = Mount::aws().args(["--secret", &s]).start();
    let dir = m.p(&s);
    let names = ls(&dir.join("stages"));
    eprintln!("stages: {names:?}");
    assert!(names.iter().any(|n| n == label), "{names:?}");
    std::fs::rename(dir.join("stages").join(label), dir.join("current")).unwrap();
    assert_eq!(std::fs::read(dir.join("current")).unwrap(), b"new");
    let log = m.log_text();
    let forged: Vec<&str> = log.lines().filter(|l| l.starts_with("FORGED")).collect();
    assert!(forged.is_empty(), "forged log lines: {forged:?}");
}

/// The label's removal after a promotion failed (a warning): a second
/// rename of the stage file, which still lists, must take it away rather
/// than answer success with nothing done.
#[test]
fn a_second_promotion_removes_a_label_left_on_current() {
    let s = unique("rv3left");
    create(&s, "old");
    let pending = put_staged(&s, "new", "AWSPENDING");
    let (proxy, m) = mount_via_proxy(&s, &[]);
    let dir = m.p(&s);
    assert_eq!(
        std::fs::read(dir.join("stages/AWSPENDING")).unwrap(),
        b"new"
    );
    proxy.fault(
        "UpdateSecretVersionStage",
        Some("\"AWSPENDING\""),
        Fault::Error {
            status: 400,
            code: "InvalidRequestException",
        },
        1,
    );
    let first = sh("mv stages/AWSPENDING current", &dir);
    assert!(first.status.success(), "{first:?}");
    eprintln!("labels after first: {:?}", labels(&s));
    let listed = ls(&dir.join("stages"));
    eprintln!("stages after first: {listed:?}");
    assert!(listed.contains(&"AWSPENDING".to_string()));
    let again = sh("mv stages/AWSPENDING current", &dir);
    eprintln!("second rename: {again:?}");
    let l = labels(&s);
    eprintln!("labels at end: {l:?}; stages {:?}", ls(&dir.join("stages")));
    assert_eq!(
        l.get(&pending).cloned(),
        Some(vec!["AWSCURRENT".to_string()])
    );
}
