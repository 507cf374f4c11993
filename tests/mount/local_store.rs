//! The embedded local store on real mounts: the demo, writes, creation by
//! mkdir, and durability across remounts.

use crate::common::*;

#[test]
fn demo_store_mounts_with_its_secrets() {
    let store = tempfile::tempdir().unwrap();
    let m = Mount::local(store.path()).arg("--demo").start();
    assert_eq!(
        m.read_string("demo/db/password/current"),
        "correct-horse-battery-staple"
    );
    assert_eq!(m.read_string("demo/db/password/previous"), "first-password");
    assert_eq!(
        m.read("demo/tls/key.der/current").unwrap(),
        [0x30, 0x82, 0x00, 0xff, 0x00, 0x01]
    );
    assert_eq!(
        std::fs::read_dir(m.p("demo/db/password/versions"))
            .unwrap()
            .count(),
        2
    );
}

#[test]
fn writes_and_created_secrets_survive_a_remount() {
    let store = tempfile::tempdir().unwrap();
    {
        let m = Mount::local(store.path()).start();
        std::fs::create_dir(m.p("app")).unwrap();
        std::fs::create_dir(m.p("app/token")).unwrap();
        write_file(
            &m.p("app/token/current"),
            b"one",
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        )
        .unwrap();
        replace_file(&m.p("app/token/current"), b"two").unwrap();
        let out = sh("echo three > current", &m.p("app/token"));
        assert!(out.status.success(), "{out:?}");
        assert_eq!(m.read_string("app/token/current"), "three\n");
    }
    let m = Mount::local(store.path()).start();
    assert_eq!(m.read_string("app/token/current"), "three\n");
    assert_eq!(m.read_string("app/token/previous"), "two");
    let ids = ls(&m.p("app/token/versions"));
    assert_eq!(ids.len(), 3);
    for id in &ids {
        assert!(
            uuid::Uuid::parse_str(id).is_ok_and(|u| u.get_version_num() == 4),
            "{id}"
        );
    }
    // Nothing but the store's JSON files is left in the directory.
    for e in std::fs::read_dir(store.path()).unwrap() {
        let n = e.unwrap().file_name().into_string().unwrap();
        assert!(n.ends_with(".json") && !n.starts_with('.'), "{n}");
    }
}

#[test]
fn an_empty_new_secret_is_not_created() {
    let store = tempfile::tempdir().unwrap();
    let m = Mount::local(store.path()).start();
    std::fs::create_dir(m.p("blank")).unwrap();
    // Created and closed without a write: nothing to store, and no error
    // (shells open and close before writing).
    assert_eq!(
        write_file(
            &m.p("blank/current"),
            b"",
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC
        ),
        Ok(())
    );
    assert_eq!(std::fs::read_dir(store.path()).unwrap().count(), 0);
    // An empty pending directory can be removed again.
    std::fs::remove_dir(m.p("blank")).unwrap();
    assert!(!m.p("blank").exists());
}

/// Runs the daemon with `args`, expecting it to refuse to start: its
/// standard error, once it has exited (within 5 s) with a failure.
fn refused(args: &[&std::ffi::OsStr]) -> String {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let mut child = Command::new(env!("CARGO_BIN_EXE_secretsfs"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?}: still running after 5 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{args:?} started: {err}");
    err
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

#[test]
fn a_second_daemon_on_the_same_store_or_mountpoint_is_refused_and_nothing_is_lost() {
    let store = tempfile::tempdir().unwrap();
    let m = Mount::local(store.path()).arg("--demo").start();
    write_file(
        &m.p("demo/api-key/current"),
        b"first daemon",
        libc::O_WRONLY | libc::O_TRUNC,
    )
    .unwrap();
    let other = tempfile::tempdir().unwrap();
    let err = refused(&[
        os("--local"),
        store.path().as_os_str(),
        other.path().as_os_str(),
    ]);
    assert!(err.contains("in use by another secretsfs"), "{err}");
    let err = refused(&[
        os("--local"),
        other.path().join("store").as_os_str(),
        m.path.as_os_str(),
    ]);
    assert!(err.contains("already a mount point"), "{err}");
    assert_eq!(
        err.matches("already a mount point").count(),
        1,
        "said once: {err}"
    );
    // The first one goes on, and its write is in its store.
    assert_eq!(m.read_string("demo/api-key/current"), "first daemon");
    drop(m);
    let again = Mount::local(store.path()).start();
    assert_eq!(again.read_string("demo/api-key/current"), "first daemon");
}

#[test]
fn mountpoints_and_stores_that_are_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let err = refused(&[
        os("--local"),
        dir.path().join("store").as_os_str(),
        file.as_os_str(),
    ]);
    assert!(err.contains("not a directory"), "{err}");
    let mnt = dir.path().join("mnt");
    let err = refused(&[os("--local"), file.as_os_str(), mnt.as_os_str()]);
    assert!(err.contains("not a directory"), "{err}");
    assert!(
        !err.contains("File exists") && !err.contains("Other"),
        "{err}"
    );
    // A mountpoint with files in it is refused unless asked.
    std::fs::create_dir(&mnt).unwrap();
    std::fs::write(mnt.join("keep"), b"x").unwrap();
    let err = refused(&[
        os("--local"),
        dir.path().join("store").as_os_str(),
        mnt.as_os_str(),
    ]);
    assert!(
        err.contains("not empty") && err.contains("nonempty"),
        "{err}"
    );
    let m = Mount::local(&dir.path().join("store"))
        .at(&mnt)
        .arg("--nonempty")
        .start();
    assert!(m.is_mounted());
}

#[test]
fn the_store_is_created_private_and_an_open_one_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("new/store");
    let m = Mount::local(&store).start();
    let mode = std::fs::metadata(&store).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert!(!m.log_text().contains("can be read by other users"));
    drop(m);
    let builder = Mount::local(&store);
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o755)).unwrap();
    let m = builder.start();
    assert!(
        m.log_text().contains("can be read by other users"),
        "{}",
        m.log_text()
    );
}
