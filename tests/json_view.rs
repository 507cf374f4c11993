//! JSON fields as files on real mounts against moto: `<secret>/json/<key>`
//! reads one top-level key of AWSCURRENT, and writes, creates and unlinks
//! put AWSCURRENT as it is at commit time with that one key changed,
//! checked through the API.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

const DB: &str = r#"{"username":"u","password":"p","port":5432}"#;

fn mounted(s: &str, args: &[&str]) -> Mount {
    Mount::aws()
        .args(["--secret", s])
        .args(args.iter().copied())
        .start()
}

fn sh_ok(cmd: &str, dir: &Path) {
    let out = sh(cmd, dir);
    assert!(out.status.success(), "{cmd}: {out:?}");
}

fn raw_open(path: &Path, flags: i32) -> i32 {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: plain open of a path we own; close-on-exec so that other
    // tests' children do not inherit it.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o600) };
    assert!(fd >= 0, "open {}", path.display());
    fd
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
