//! Findings of the adversarial review of issue 12, kept as regression
//! tests: ownership rules on json/ and stages/ and through a secret that is
//! also a prefix, a staged put on a secret without versions, a lost answer
//! to a promotion, a label left on current, labels that would forge log
//! lines, stage files after writes and promotions.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Output};

use common::proxy::Fault;
use common::*;

fn as_user(uid: u32, cmd: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid",
            &uid.to_string(),
            "--regid",
            &uid.to_string(),
            "--clear-groups",
        ])
        .args(cmd)
        .output()
        .expect("run setpriv")
}

fn labels(name: &str) -> BTreeMap<String, Vec<String>> {
    let out = rt()
        .block_on(sdk().describe_secret().secret_id(name).send())
        .expect("describe");
    out.version_ids_to_stages()
        .unwrap()
        .iter()
        .filter(|(_, l)| !l.is_empty())
        .map(|(id, l)| (id.clone(), l.clone()))
        .collect()
}

fn put_staged(name: &str, value: &str, label: &str) -> String {
    rt().block_on(
        sdk()
            .put_secret_value()
            .secret_id(name)
            .secret_string(value)
            .version_stages(label)
            .send(),
    )
    .expect("put with a stage")
    .version_id()
    .unwrap()
    .to_string()
}

/// The rule's owner may read json/<key> and stages/<label> of its secret,
/// as it reads current (the issue: rules cover "the JSON ... views").
#[test]
fn rules_cover_json_keys_and_stage_files() {
    let u = unique("rv3own");
    let db = format!("{u}/prod/db/pw");
    create(&db, r#"{"password":"hunter2"}"#);
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(dir.path().join("mnt")).unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!("[[rule]]\npattern = \"{u}/prod/db/*\"\nowner = 1001\nmode = \"0400\"\n"),
    )
    .unwrap();
    let m = Mount::aws()
        .at(&dir.path().join("mnt"))
        .args(["--config", &cfg.display().to_string()])
        .args(["--prefix", &format!("{u}/"), "--allow-other"])
        .start();
    let cur = as_user(
        1001,
        &["cat", &m.p(&format!("{db}/current")).display().to_string()],
    );
    assert!(cur.status.success(), "{cur:?}");
    let mut bad = vec![];
    for f in ["json", "json/password", "stages", "stages/AWSCURRENT"] {
        let path = m.p(&format!("{db}/{f}"));
        let st = std::fs::metadata(&path).unwrap();
        if st.uid() != 1001 {
            bad.push(format!(
                "{f}: uid {} mode {:o}",
                st.uid(),
                st.mode() & 0o7777
            ));
        }
    }
    let key = as_user(
        1001,
        &[
            "cat",
            &m.p(&format!("{db}/json/password")).display().to_string(),
        ],
    );
    let stg = as_user(
        1001,
        &[
            "cat",
            &m.p(&format!("{db}/stages/AWSCURRENT"))
                .display()
                .to_string(),
        ],
    );
    assert!(
        bad.is_empty() && key.status.success() && stg.status.success(),
        "not ruled: {bad:?}\njson/password as 1001: {key:?}\nstages/AWSCURRENT as 1001: {stg:?}"
    );
}

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

/// A secret that is also a prefix of another: the inner secret's owner
/// (by rule) must be able to reach it through the outer secret's directory.
#[test]
fn a_nested_secrets_owner_reaches_it_through_the_outer_secret() {
    let u = unique("rv3nest");
    let outer = format!("{u}/prod/db");
    let inner = format!("{u}/prod/db/pw");
    create(&outer, "outer");
    create(&inner, "inner");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(dir.path().join("mnt")).unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!("[[rule]]\npattern = \"{u}/prod/db/*\"\nowner = 1001\nmode = \"0400\"\n"),
    )
    .unwrap();
    let m = Mount::aws()
        .at(&dir.path().join("mnt"))
        .args(["--config", &cfg.display().to_string()])
        .args(["--prefix", &format!("{u}/"), "--allow-other"])
        .start();
    let st = std::fs::metadata(m.p(&outer)).unwrap();
    eprintln!("outer dir: uid {} mode {:o}", st.uid(), st.mode() & 0o7777);
    let out = as_user(
        1001,
        &[
            "cat",
            &m.p(&format!("{inner}/current")).display().to_string(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    // And the outer secret stays closed to 1001.
    let out = as_user(
        1001,
        &[
            "cat",
            &m.p(&format!("{outer}/current")).display().to_string(),
        ],
    );
    assert!(!out.status.success(), "{out:?}");
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

/// A refresh larger than one page may reach the daemon in pieces cut
/// mid-line, each taken as other names: refused whole instead.
#[test]
fn a_refresh_write_over_a_page_is_refused() {
    let s = unique("rv-big-refresh");
    create(&s, "v");
    let m = Mount::aws().args(["--secret", &s]).start();
    let mut lines = String::new();
    while lines.len() <= 4096 {
        lines.push_str(&s);
        lines.push('\n');
    }
    let r = write_file(&m.p(".secretsfs/refresh"), lines.as_bytes(), libc::O_WRONLY);
    assert_eq!(r, Err(libc::EINVAL));
    let one = format!("{s}\n");
    assert_eq!(
        write_file(&m.p(".secretsfs/refresh"), one.as_bytes(), libc::O_WRONLY),
        Ok(())
    );
}
