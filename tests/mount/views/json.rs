//! JSON fields as files on real mounts against moto: `<secret>/json/<key>`
//! reads one top-level key of AWSCURRENT, and writes, creates and unlinks
//! put AWSCURRENT as it is at commit time with that one key changed,
//! checked through the API.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use crate::common::*;

const DB: &str = r#"{"username":"u","password":"p","port":5432}"#;

fn mounted(s: &str, args: &[&str]) -> Mount {
    Mount::aws()
        .args(["--secret", s])
        .args(args.iter().copied())
        .start()
}

/// write(2) then close(2): the errno of the first that fails.
fn write_and_close(fd: i32, data: &[u8]) -> Result<(), i32> {
    // SAFETY: fd is open and ours; the buffer outlives the call.
    unsafe {
        if libc::write(fd, data.as_ptr().cast(), data.len()) != data.len() as isize {
            let e = *libc::__errno_location();
            libc::close(fd);
            return Err(e);
        }
        if libc::close(fd) != 0 {
            return Err(*libc::__errno_location());
        }
    }
    Ok(())
}

const CREATE: i32 = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;

#[test]
fn keys_read_as_files_strings_raw_and_other_values_as_json() {
    let s = unique("jv-read");
    create(&s, DB);
    let m = mounted(&s, &[]);
    assert!(ls(&m.p(&s)).contains(&"json".to_string()));
    assert_eq!(
        ls(&m.p(&format!("{s}/json"))),
        ["password", "port", "username"]
    );
    assert_eq!(m.read_string(&format!("{s}/json/password")), "p");
    assert_eq!(m.read_string(&format!("{s}/json/port")), "5432");
    assert_eq!(m.read_string(&format!("{s}/json/username")), "u");
    let md = std::fs::metadata(m.p(&format!("{s}/json/port"))).unwrap();
    assert_eq!((md.len(), md.permissions().mode() & 0o777), (4, 0o600));
    let dir = std::fs::metadata(m.p(&format!("{s}/json"))).unwrap();
    assert!(dir.is_dir());
    assert_eq!(dir.permissions().mode() & 0o777, 0o700);
    let e = std::fs::read(m.p(&format!("{s}/json/host"))).unwrap_err();
    assert_eq!(errno_of(&e), libc::ENOENT);
}

#[test]
fn a_write_to_a_json_key_keeps_other_keys_in_order() {
    let s = unique("jv-write");
    let v1 = create(&s, DB);
    let m = mounted(&s, &[]);
    sh_ok("printf q > json/password", &m.p(&s));
    assert_eq!(
        current_string(&s),
        r#"{"username":"u","password":"q","port":5432}"#
    );
    let (prev_id, prev, _) = stage(&s, "AWSPREVIOUS").unwrap();
    assert_eq!((prev_id, prev.as_deref()), (v1, Some(DB)));
    assert_eq!(version_ids(&s).len(), 2);
    assert_eq!(m.read_string(&format!("{s}/json/password")), "q");
    assert_eq!(m.read_string(&format!("{s}/current")), current_string(&s));
}

#[test]
fn a_key_that_holds_a_number_takes_json_and_refuses_anything_else() {
    let s = unique("jv-type");
    create(&s, DB);
    let m = mounted(&s, &[]);
    sh_ok("echo 5433 > json/port", &m.p(&s));
    assert_eq!(
        current_string(&s),
        r#"{"username":"u","password":"p","port":5433}"#
    );
    let before = version_ids(&s);
    let port = m.p(&format!("{s}/json/port"));
    assert_eq!(replace_file(&port, b"not json"), Err(libc::EINVAL));
    assert_eq!(version_ids(&s), before, "nothing put");
    assert_eq!(m.read_string(&format!("{s}/json/port")), "5433");
}

#[test]
fn a_new_file_adds_a_key_and_rm_removes_one() {
    let s = unique("jv-addrm");
    create(&s, DB);
    let m = mounted(&s, &[]);
    let dir = m.p(&s);
    sh_ok("printf db.example > json/host", &dir);
    assert_eq!(
        current_string(&s),
        r#"{"username":"u","password":"p","port":5432,"host":"db.example"}"#
    );
    assert_eq!(m.read_string(&format!("{s}/json/host")), "db.example");
    std::fs::remove_file(dir.join("json/username")).unwrap();
    assert_eq!(
        current_string(&s),
        r#"{"password":"p","port":5432,"host":"db.example"}"#
    );
    assert_eq!(ls(&dir.join("json")), ["host", "password", "port"]);
    assert_eq!(version_ids(&s).len(), 3);
    let e = std::fs::remove_file(dir.join("json/username")).unwrap_err();
    assert_eq!(errno_of(&e), libc::ENOENT);
    assert_eq!(version_ids(&s).len(), 3);
}

#[test]
fn a_value_that_is_not_json_has_an_empty_json_dir_and_refuses_writes() {
    let s = unique("jv-plain");
    create(&s, "just text");
    let arr = unique("jv-array");
    create(&arr, "[1,2,3]");
    let m = Mount::aws()
        .args(["--secret", &s, "--secret", &arr])
        .start();
    assert!(ls(&m.p(&format!("{s}/json"))).is_empty());
    assert!(ls(&m.p(&format!("{arr}/json"))).is_empty());
    for name in [&s, &arr] {
        let before = version_ids(name);
        let x = m.p(&format!("{name}/json/x"));
        assert_eq!(write_file(&x, b"v", CREATE), Err(libc::EINVAL), "{name}");
        assert_eq!(version_ids(name), before, "{name}: nothing put");
    }
    assert_eq!(current_string(&s), "just text");
}

#[test]
fn a_value_that_stops_being_json_before_close_fails_the_close_and_puts_nothing() {
    let s = unique("jv-gone");
    create(&s, DB);
    let m = mounted(&s, &[]);
    let fd = raw_open(
        &m.p(&format!("{s}/json/password")),
        libc::O_WRONLY | libc::O_TRUNC,
    );
    put(&s, "no longer json");
    let before = version_ids(&s);
    assert_eq!(write_and_close(fd, b"q"), Err(libc::EINVAL));
    assert_eq!(version_ids(&s), before);
    assert_eq!(current_string(&s), "no longer json");
}

#[test]
fn writing_the_value_a_key_holds_makes_no_version() {
    let s = unique("jv-same");
    create(&s, DB);
    let m = mounted(&s, &[]);
    sh_ok(
        "printf p > json/password && echo 5432 > json/port",
        &m.p(&s),
    );
    assert_eq!(version_ids(&s).len(), 1);
    assert!(m.log_text().contains("value unchanged; no new version"));
}

#[test]
fn an_external_change_is_seen_in_json_keys_after_the_ttl() {
    let s = unique("jv-ttl");
    create(&s, DB);
    let m = mounted(&s, &["--ttl", "1"]);
    let rel = format!("{s}/json/password");
    assert_eq!(m.read_string(&rel), "p");
    put(&s, r#"{"username":"u","password":"rotated","port":5432}"#);
    let deadline = Instant::now() + Duration::from_secs(15);
    while m.read_string(&rel) != "rotated" {
        assert!(Instant::now() < deadline, "the change was never seen");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(std::fs::metadata(m.p(&rel)).unwrap().len(), 7);
}

#[test]
fn a_key_that_cannot_be_a_file_name_is_left_out_and_warned_about_once() {
    let s = unique("jv-badkey");
    create(&s, r#"{"ok":"1","a/b":"2","":"3","..":"4"}"#);
    let m = mounted(&s, &[]);
    let dir = m.p(&format!("{s}/json"));
    for _ in 0..3 {
        assert_eq!(ls(&dir), ["ok"]);
    }
    let log = m.log_text();
    let warned = log.matches("JSON key cannot be a file name").count();
    assert_eq!(warned, 3, "once per bad key: {log}");
    // The other keys are still written around them, untouched.
    sh_ok("printf one > json/ok", &m.p(&s));
    assert_eq!(
        current_string(&s),
        r#"{"ok":"one","a/b":"2","":"3","..":"4"}"#
    );
}

#[test]
fn a_change_to_another_key_between_open_and_close_is_kept() {
    let s = unique("jv-race");
    create(&s, DB);
    let m = mounted(&s, &[]);
    let fd = raw_open(
        &m.p(&format!("{s}/json/password")),
        libc::O_WRONLY | libc::O_TRUNC,
    );
    put(&s, r#"{"username":"admin","password":"p","port":5432}"#);
    write_and_close(fd, b"q").unwrap();
    assert_eq!(
        current_string(&s),
        r#"{"username":"admin","password":"q","port":5432}"#
    );
    assert_eq!(version_ids(&s).len(), 3);
}

#[test]
fn renames_and_directories_inside_json_are_refused() {
    let s = unique("jv-refuse");
    create(&s, DB);
    let m = mounted(&s, &[]);
    let dir = m.p(&format!("{s}/json"));
    let mv = std::fs::rename(dir.join("password"), dir.join("secret")).unwrap_err();
    assert_eq!(errno_of(&mv), libc::EPERM);
    let md = std::fs::create_dir(dir.join("sub")).unwrap_err();
    assert_eq!(errno_of(&md), libc::EACCES);
    let md = std::fs::create_dir(m.p(&format!("{s}/json"))).unwrap_err();
    assert_eq!(errno_of(&md), libc::EEXIST);
    assert_eq!(version_ids(&s).len(), 1);
}

#[test]
fn a_read_only_mount_reads_keys_and_refuses_writes() {
    let s = unique("jv-ro");
    create(&s, DB);
    let m = mounted(&s, &["--read-only"]);
    assert_eq!(m.read_string(&format!("{s}/json/password")), "p");
    let key = m.p(&format!("{s}/json/password"));
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o400
    );
    assert_eq!(
        std::fs::metadata(m.p(&format!("{s}/json")))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o500
    );
    assert_eq!(replace_file(&key, b"q"), Err(libc::EROFS));
    let rm = std::fs::remove_file(&key).unwrap_err();
    assert_eq!(errno_of(&rm), libc::EROFS);
    assert_eq!(version_ids(&s).len(), 1);
}

#[test]
fn a_trace_log_holds_no_json_value() {
    let s = unique("jv-trace");
    let (old, new, added) = (
        "Js0n-Tr4ce-OLD-5e1f",
        "Js0n-Tr4ce-NEW-a9c2",
        "Js0n-Tr4ce-ADD-77d0",
    );
    create(&s, &format!(r#"{{"user":"u","password":"{old}"}}"#));
    let mut m = Mount::aws()
        .args(["--secret", &s])
        .env("RUST_LOG", "trace")
        .start();
    let dir = m.p(&s);
    assert_eq!(m.read_string(&format!("{s}/json/password")), old);
    sh_ok(&format!("printf {new} > json/password"), &dir);
    sh_ok(&format!("printf {added} > json/extra"), &dir);
    std::fs::remove_file(dir.join("json/user")).unwrap();
    assert_eq!(
        current_string(&s),
        format!(r#"{{"password":"{new}","extra":"{added}"}}"#)
    );
    m.terminate();
    let log = m.log_text();
    assert!(
        log.len() > 10_000,
        "trace logging was on: {} bytes",
        log.len()
    );
    assert!(log.contains(&s), "the log names the secret");
    for v in [old, new, added] {
        assert!(!log.contains(v), "value {v} leaked into the log");
    }
}

#[test]
fn a_json_key_writer_killed_by_a_signal_commits_nothing() {
    use std::os::unix::process::ExitStatusExt;
    let s = unique("jv-kill");
    create(&s, DB);
    let m = mounted(&s, &[]);
    // The shell opens the key as its stdout, writes and dies of the signal
    // with the descriptor open.
    let script = "ulimit -c 0; exec >json/password; printf partial; kill -KILL $$";
    let status = std::process::Command::new("sh")
        .args(["-c", script])
        .current_dir(m.p(&s))
        .status()
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    assert_eq!(version_ids(&s).len(), 1);
    assert_eq!(current_string(&s), DB);
    // Control: the same writer exiting normally commits, appending to the
    // key's text as of open.
    sh_ok("exec >>json/password; printf X; exit 0", &m.p(&s));
    let deadline = Instant::now() + Duration::from_secs(5);
    while version_ids(&s).len() != 2 {
        assert!(Instant::now() < deadline, "the normal exit never committed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        current_string(&s),
        r#"{"username":"u","password":"pX","port":5432}"#
    );
}

#[test]
fn fsync_of_a_json_key_is_the_put() {
    use std::io::Write;
    let s = unique("jv-fsync");
    create(&s, DB);
    let m = mounted(&s, &[]);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.p(&format!("{s}/json/username")))
        .unwrap();
    f.write_all(b"admin").unwrap();
    f.sync_all().unwrap();
    assert_eq!(
        current_string(&s),
        r#"{"username":"admin","password":"p","port":5432}"#,
        "stored before close"
    );
    drop(f);
    assert_eq!(
        version_ids(&s).len(),
        2,
        "the close found nothing left to put"
    );
}

#[test]
fn a_child_secret_named_json_is_shadowed_and_logged() {
    let top = unique("jv-shadow");
    let db = format!("{top}/db");
    create(&db, DB);
    create(&format!("{db}/json"), "the child");
    let m = Mount::aws().args(["--prefix", &top]).start();
    assert_eq!(ls(&m.p(&db)), ["current", "json", "stages", "versions"]);
    assert_eq!(
        ls(&m.p(&format!("{db}/json"))),
        ["password", "port", "username"]
    );
    assert!(
        m.log_text().contains("shadowed by its parent's own file"),
        "{}",
        m.log_text()
    );
}

// ---- Probes from the review of the JSON view (were tests/adversarial.rs) ----

/// A key holding a number (or null, or a boolean) may be given any JSON
/// (README: "the bytes must be JSON"). Writing the JSON string "5432" to a
/// key holding the number 5432 changes the value; the write must not be
/// judged "unchanged" and dropped.
#[test]
fn writing_a_json_string_to_a_number_key_is_not_dropped_as_unchanged() {
    let s = unique("rp-type");
    create(&s, r#"{"port":5432,"flag":null}"#);
    let m = Mount::aws().args(["--secret", &s]).start();
    let before = version_ids(&s).len();
    replace_file(&m.p(&format!("{s}/json/port")), br#""5432""#).unwrap();
    replace_file(&m.p(&format!("{s}/json/flag")), br#""null""#).unwrap();
    let now = current_string(&s);
    assert_eq!(
        now,
        r#"{"port":"5432","flag":"null"}"#,
        "versions before {before}, after {}",
        version_ids(&s).len()
    );
}

/// A writer that opened `json/port` (a number) without O_TRUNC, while
/// another process removes the key before its close: the commit re-adds
/// the key, and must not silently turn the number into a string.
#[test]
fn a_key_removed_before_a_commit_is_not_brought_back() {
    let s = unique("rp-retype");
    create(&s, r#"{"port":5432,"u":"x"}"#);
    let m = Mount::aws().args(["--secret", &s]).start();
    let path = m.p(&format!("{s}/json/port"));
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: plain syscalls on a descriptor we own.
    unsafe {
        let fd = libc::open(c.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        assert!(fd >= 0);
        // External removal of the key (another host).
        put(&s, r#"{"u":"x"}"#);
        assert_eq!(libc::write(fd, b"5433".as_ptr().cast(), 4), 4);
        // Its type is not known any more, and the removal is not undone.
        assert_eq!(libc::close(fd), -1);
        assert_eq!(*libc::__errno_location(), libc::ENOENT);
    }
    assert_eq!(current_string(&s), r#"{"u":"x"}"#);
}

/// After a put through `current` that changes a key's length, stat of the
/// key file gives the new content's size (the kernel's copy was dropped).
#[test]
fn key_sizes_follow_a_put_through_current() {
    use std::os::unix::fs::MetadataExt;
    let s = unique("rp-size");
    create(&s, r#"{"a":"short","b":"x"}"#);
    let m = Mount::aws().args(["--secret", &s, "--ttl", "300"]).start();
    let a = m.p(&format!("{s}/json/a"));
    assert_eq!(std::fs::metadata(&a).unwrap().size(), 5);
    assert_eq!(std::fs::read(&a).unwrap(), b"short");
    replace_file(
        &m.p(&format!("{s}/current")),
        br#"{"a":"a-much-longer-value","b":"x"}"#,
    )
    .unwrap();
    assert_eq!(std::fs::metadata(&a).unwrap().size(), 19);
    assert_eq!(std::fs::read(&a).unwrap(), b"a-much-longer-value");
    // And after a put through another key.
    replace_file(&m.p(&format!("{s}/json/b")), b"yy").unwrap();
    assert_eq!(std::fs::metadata(&a).unwrap().size(), 19);
    // Two handles on two keys of one secret, both committing.
    let p1 = m.p(&format!("{s}/json/a"));
    let p2 = m.p(&format!("{s}/json/b"));
    let t1 = std::thread::spawn(move || replace_file(&p1, b"A1"));
    let t2 = std::thread::spawn(move || replace_file(&p2, b"B2"));
    t1.join().unwrap().unwrap();
    t2.join().unwrap().unwrap();
    assert_eq!(current_string(&s), r#"{"a":"A1","b":"B2"}"#);
    assert_eq!(std::fs::read(&a).unwrap(), b"A1");
    assert_eq!(std::fs::metadata(&a).unwrap().size(), 2);
}

/// Secrets Manager has no conditional put: an external put of another key
/// landing between the commit's read of AWSCURRENT and its PutSecretValue
/// is overwritten. after_put sees it (AWSPREVIOUS is not the version the
/// merge was made from); the lost change should at least be logged.
#[test]
fn an_external_put_inside_the_commit_window_is_not_lost_silently() {
    let s = unique("rp-window");
    create(&s, r#"{"a":"1","b":"1"}"#);
    let (proxy, m) = mount_via_proxy(&s, &["--ttl", "300"]);
    assert_eq!(m.read_string(&format!("{s}/json/a")), "1");
    proxy.fault(
        "PutSecretValue",
        None,
        Fault::Delay(Duration::from_millis(1500)),
        1,
    );
    let path = m.p(&format!("{s}/json/a"));
    let w = std::thread::spawn(move || replace_file(&path, b"2"));
    std::thread::sleep(Duration::from_millis(700));
    // Another host changes b meanwhile.
    put(&s, r#"{"a":"1","b":"EXTERNAL"}"#);
    w.join().unwrap().unwrap();
    let now = current_string(&s);
    let log = m.log_text();
    assert!(
        now.contains("EXTERNAL") || log.contains("WARN"),
        "b's external change was overwritten with nothing logged: {now}\n{log}"
    );
}

/// A key added elsewhere within the TTL is unknown to the mount's cached
/// AWSCURRENT, so `>>` reaches create(2); create then sees the key in
/// AWSCURRENT now, but starts the handle empty even without O_TRUNC: the
/// append replaces the value.
#[test]
fn appending_to_a_key_added_elsewhere_within_the_ttl_appends() {
    let s = unique("rp-append");
    create(&s, r#"{"a":"1"}"#);
    let m = Mount::aws().args(["--secret", &s, "--ttl", "300"]).start();
    assert_eq!(m.read_string(&format!("{s}/json/a")), "1");
    put(&s, r#"{"a":"1","k":"base"}"#);
    write_file(
        &m.p(&format!("{s}/json/k")),
        b"-more",
        libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND,
    )
    .unwrap();
    assert_eq!(current_string(&s), r#"{"a":"1","k":"base-more"}"#);
}

/// A valid JSON object with one deeply nested value (200 levels; Python,
/// jq and Secrets Manager take it): the other keys are still files.
#[test]
fn a_deeply_nested_value_does_not_hide_the_other_keys() {
    let s = unique("rp-deep");
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    create(&s, &format!(r#"{{"deep":{deep},"password":"p"}}"#));
    let m = Mount::aws().args(["--secret", &s]).start();
    assert_eq!(ls(&m.p(&format!("{s}/json"))), ["deep", "password"]);
    assert_eq!(m.read_string(&format!("{s}/json/password")), "p");
}

/// A JSON key's put whose answer is lost: one version, the close succeeds
/// (the token is found), the value reads back, and the hook runs once.
#[test]
fn a_lost_put_answer_of_a_key_makes_one_version_and_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let s = unique("rp-lost");
    create(&s, r#"{"a":"1","b":"2"}"#);
    let (proxy, m) = mount_via_proxy(
        &s,
        &[
            "--ttl",
            "300",
            "--watch",
            "1s",
            "--on-change",
            &format!("echo \"$SECRETSFS_VERSION_ID\" >> {}", runs.display()),
        ],
    );
    assert_eq!(m.read_string(&format!("{s}/json/a")), "1");
    proxy.fault("PutSecretValue", None, Fault::DropResponse, 10);
    let r = replace_file(&m.p(&format!("{s}/json/a")), b"9");
    assert_eq!(current_string(&s), r#"{"a":"9","b":"2"}"#);
    assert_eq!(version_ids(&s).len(), 2, "close: {r:?}");
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(m.read_string(&format!("{s}/json/a")), "9");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lines(&runs).len(), 1, "{:?}", lines(&runs));
}
