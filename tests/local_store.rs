//! The embedded local store on real mounts: the demo, writes, creation by
//! mkdir, and durability across remounts.

mod common;

use common::*;

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
