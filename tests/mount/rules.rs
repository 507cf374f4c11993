//! Ownership rules, `.secretsfs/refresh` and trim_newline on real mounts
//! against moto: the kernel enforces the rules' owners and modes on an
//! allow-other mount, a refresh makes an external change visible before the
//! TTL, and trim_newline's effect is checked through the API.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::common::*;

/// A config file and a mountpoint that other users can reach (the test
/// harness's own temporary directories are 0700).
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(dir.path().join("mnt")).unwrap();
        std::fs::write(dir.path().join("c.toml"), config).unwrap();
        Self { dir }
    }
    fn config(&self) -> String {
        self.dir.path().join("c.toml").display().to_string()
    }
    fn rewrite(&self, config: &str) {
        std::fs::write(self.dir.path().join("c.toml"), config).unwrap();
    }
    fn mount(&self, args: &[&str]) -> Mount {
        Mount::aws()
            .at(&self.dir.path().join("mnt"))
            .args(["--config", &self.config()])
            .args(args.iter().copied())
            .start()
    }
}

fn p(path: PathBuf) -> String {
    path.display().to_string()
}

fn two_services(u: &str) -> String {
    format!(
        "[[rule]]\npattern = \"{u}/prod/db/*\"\nowner = 1001\nmode = \"0400\"\n\n\
         [[rule]]\npattern = \"{u}/prod/web/*\"\nowner = 1002\n"
    )
}

/// Waits (bounded) until `done` holds.
fn eventually(what: &str, done: impl FnMut() -> bool) {
    assert!(
        wait_until(Duration::from_secs(10), done),
        "timed out waiting for {what}"
    );
}

#[test]
fn a_service_user_reads_its_own_secret_and_not_the_others() {
    let u = unique("own");
    let (db, web) = (format!("{u}/prod/db/pw"), format!("{u}/prod/web/cert"));
    create(&db, "db-secret");
    create(&web, "web-secret");
    let s = Setup::new(&two_services(&u));
    let m = s.mount(&["--prefix", &format!("{u}/"), "--allow-other"]);

    let ok = as_user(1001, &["cat", &p(m.p(&format!("{db}/current")))]);
    assert!(ok.status.success(), "{ok:?}");
    assert_eq!(ok.stdout, b"db-secret");
    let denied = as_user(1001, &["cat", &p(m.p(&format!("{web}/current")))]);
    assert!(!denied.status.success());
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(err.contains("Permission denied"), "{err}");
    // uid 1002 the other way round.
    let ok = as_user(1002, &["cat", &p(m.p(&format!("{web}/current")))]);
    assert_eq!(ok.stdout, b"web-secret", "{ok:?}");
    let denied = as_user(1002, &["cat", &p(m.p(&format!("{db}/current")))]);
    assert!(String::from_utf8_lossy(&denied.stderr).contains("Permission denied"));

    let st = std::fs::metadata(m.p(&format!("{db}/current"))).unwrap();
    assert_eq!((st.uid(), st.mode() & 0o7777), (1001, 0o400));
    let st = std::fs::metadata(m.p(&db)).unwrap();
    assert_eq!((st.uid(), st.mode() & 0o7777), (1001, 0o500));
    let st = std::fs::metadata(m.p(&format!("{db}/versions"))).unwrap();
    assert_eq!((st.uid(), st.mode() & 0o7777), (1001, 0o500));
    // No mode in the rule: the default modes, the rule's owner.
    let st = std::fs::metadata(m.p(&format!("{web}/current"))).unwrap();
    assert_eq!((st.uid(), st.mode() & 0o7777), (1002, 0o600));
    // Prefix directories: traversable, not listable by others.
    let st = std::fs::metadata(m.p(&format!("{u}/prod"))).unwrap();
    assert_eq!(st.mode() & 0o7777, 0o511);
    assert_eq!(std::fs::metadata(&m.path).unwrap().mode() & 0o7777, 0o711);
    let ls = as_user(1001, &["ls", &p(m.p(&format!("{u}/prod")))]);
    assert!(!ls.status.success(), "{ls:?}");
    // chmod and chown stay refused.
    let out = sh("chmod 644 current", &m.p(&db));
    assert!(!out.status.success(), "{out:?}");
}

#[test]
fn an_unknown_user_in_a_rule_refuses_to_start_naming_the_rule() {
    let s = Setup::new("[[rule]]\npattern = \"x/*\"\nowner = \"no-such-user-7q\"\n");
    let out = Command::new(env!("CARGO_BIN_EXE_secretsfs"))
        .args(["--config", &s.config()])
        .arg(s.dir.path().join("mnt"))
        .env("AWS_ENDPOINT_URL", moto_url())
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rule 1") && err.contains("x/*") && err.contains("no-such-user-7q"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn a_pattern_that_matches_nothing_is_one_warning() {
    let u = unique("own-warn");
    create(&format!("{u}/a"), "v");
    let config = format!(
        "[[rule]]\npattern = \"{u}/a\"\nowner = 1001\n\
         [[rule]]\npattern = \"{u}/typo/*\"\nowner = 1001\n"
    );
    let s = Setup::new(&config);
    let m = s.mount(&["--prefix", &format!("{u}/")]);
    let warned = |m: &Mount| {
        m.log_text()
            .lines()
            .filter(|l| l.contains("matches no secret") && l.contains(&format!("{u}/typo/*")))
            .count()
    };
    eventually("the warning", || warned(&m) > 0);
    // Reads do not warn again.
    let _ = m.read(&format!("{u}/a/current")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(warned(&m), 1, "{}", m.log_text());
    let all = m.log_text().matches("matches no secret").count();
    assert_eq!(all, 1, "{}", m.log_text());
}

#[test]
fn sighup_with_a_changed_rule_changes_the_mode_seen() {
    let u = unique("own-hup");
    let db = format!("{u}/prod/db/pw");
    create(&db, "v");
    let s = Setup::new(&two_services(&u));
    let m = s.mount(&["--prefix", &format!("{u}/"), "--ttl", "300"]);
    let cur = m.p(&format!("{db}/current"));
    assert_eq!(std::fs::metadata(&cur).unwrap().mode() & 0o777, 0o400);
    s.rewrite(&format!(
        "[[rule]]\npattern = \"{u}/prod/db/*\"\nowner = 1003\nmode = \"0440\"\ngroup = 7\n"
    ));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(m.pid() as i32, libc::SIGHUP) };
    eventually("the new mode", || {
        std::fs::metadata(&cur).is_ok_and(|st| st.mode() & 0o777 == 0o440 && st.uid() == 1003)
    });
    assert_eq!(std::fs::metadata(&cur).unwrap().gid(), 7);
    assert_eq!(std::fs::metadata(m.p(&db)).unwrap().mode() & 0o777, 0o550);
    // A broken file keeps the old rules, and the daemon.
    s.rewrite("[[rule]]\npattern = \"x\"\nmode = \"9999\"\n");
    unsafe { libc::kill(m.pid() as i32, libc::SIGHUP) };
    eventually("the error", || m.log_text().contains("rules not reloaded"));
    assert_eq!(std::fs::metadata(&cur).unwrap().mode() & 0o777, 0o440);
    assert!(m.is_mounted());
}

fn refresh(m: &Mount, lines: &[u8]) -> Result<(), i32> {
    write_file(&m.p(".secretsfs/refresh"), lines, libc::O_WRONLY)
}

#[test]
fn refresh_makes_an_external_change_visible_before_the_ttl() {
    let u = unique("own-ref");
    let (a, b, c) = (format!("{u}/x/a"), format!("{u}/x/b"), format!("{u}/y/c"));
    for n in [&a, &b, &c] {
        create(n, "one");
    }
    let s = Setup::new("");
    let m = s.mount(&["--prefix", &format!("{u}/"), "--ttl", "300"]);
    for n in [&a, &b, &c] {
        assert_eq!(m.read_string(&format!("{n}/current")), "one");
        put(n, "two");
    }
    // Cached for the TTL: the old value.
    assert_eq!(m.read_string(&format!("{a}/current")), "one");
    refresh(&m, format!("{a}\n").as_bytes()).unwrap();
    assert_eq!(m.read_string(&format!("{a}/current")), "two");
    assert_eq!(m.read_string(&format!("{a}/previous")), "one");
    assert_eq!(m.read_string(&format!("{b}/current")), "one");
    // A prefix: b, not c.
    refresh(&m, format!("{u}/x/\n").as_bytes()).unwrap();
    assert_eq!(m.read_string(&format!("{b}/current")), "two");
    assert_eq!(m.read_string(&format!("{c}/current")), "one");
    // A new secret under the prefix shows once the listing is refreshed.
    create(&format!("{u}/y/new"), "n");
    refresh(&m, b"*").unwrap();
    assert_eq!(m.read_string(&format!("{c}/current")), "two");
    assert!(ls(&m.p(&format!("{u}/y"))).contains(&"new".to_string()));
    assert_eq!(m.stats()["refreshes"], 3);
    // Bad lines: EINVAL, and nothing counted.
    assert_eq!(refresh(&m, b"\n"), Err(libc::EINVAL));
    assert_eq!(refresh(&m, b"a\n\nb\n"), Err(libc::EINVAL));
    assert_eq!(refresh(&m, b"../x"), Err(libc::EINVAL));
    assert_eq!(m.stats()["refreshes"], 3);
    let metrics = m.read_string(".secretsfs/metrics");
    assert!(metrics.contains("secretsfs_refreshes_total 3"), "{metrics}");
    // `echo name > refresh` (O_TRUNC) works too.
    let out = sh(&format!("echo {a} > .secretsfs/refresh"), &m.path);
    assert!(out.status.success(), "{out:?}");
    let st = std::fs::metadata(m.p(".secretsfs/refresh")).unwrap();
    assert_eq!(st.mode() & 0o7777, 0o200);
}

#[test]
fn only_the_mounts_owner_may_refresh() {
    let u = unique("own-refperm");
    create(&format!("{u}/a"), "v");
    let s = Setup::new(&format!(
        "[[rule]]\npattern = \"{u}/*\"\nowner = 1001\nmode = \"0400\"\n"
    ));
    let m = s.mount(&["--prefix", &format!("{u}/"), "--allow-other"]);
    let target = p(m.p(".secretsfs/refresh"));
    let out = as_user(1001, &["sh", "-c", &format!("echo {u}/a > {target}")]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{out:?}"
    );
    assert_eq!(m.stats()["refreshes"], 0);
    // The owner (root here) may.
    refresh(&m, format!("{u}/a").as_bytes()).unwrap();
    assert_eq!(m.stats()["refreshes"], 1);
}

fn sdk_string(name: &str) -> String {
    current_string(name)
}

#[test]
fn trim_newline_stores_echo_without_its_newline_and_keeps_multiline_values() {
    let u = unique("own-trim");
    let (a, pem) = (format!("{u}/a"), format!("{u}/pem"));
    create(&a, "old");
    create(&pem, "old");
    let s = Setup::new("trim_newline = true\n");
    let m = s.mount(&["--prefix", &format!("{u}/")]);
    let out = sh("echo v > current", &m.p(&a));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(sdk_string(&a), "v");
    // Unchanged is judged on the trimmed value: no new version.
    let versions = version_ids(&a).len();
    let out = sh("echo v > current", &m.p(&a));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(version_ids(&a).len(), versions);
    let text = "-----BEGIN KEY-----\nabc\n-----END KEY-----\n";
    replace_file(&m.p(&format!("{pem}/current")), text.as_bytes()).unwrap();
    assert_eq!(sdk_string(&pem), text);
}

#[test]
fn without_trim_newline_echo_stores_its_newline_and_a_rule_can_ask_for_it() {
    let u = unique("own-trimrule");
    let (a, b) = (format!("{u}/plain/a"), format!("{u}/trim/b"));
    create(&a, "old");
    create(&b, "old");
    let s = Setup::new(&format!(
        "[[rule]]\npattern = \"{u}/trim/*\"\ntrim_newline = true\nmode = \"0600\"\n"
    ));
    let m = s.mount(&["--prefix", &format!("{u}/")]);
    assert!(sh("echo v > current", &m.p(&a)).status.success());
    assert_eq!(sdk_string(&a), "v\n");
    assert!(sh("echo v > current", &m.p(&b)).status.success());
    assert_eq!(sdk_string(&b), "v");
    // A rule's false wins over the mount's option.
    drop(m);
    let c = format!("{u}/keep/c");
    create(&c, "old");
    s.rewrite(&format!(
        "trim_newline = true\n[[rule]]\npattern = \"{u}/keep/*\"\ntrim_newline = false\n"
    ));
    let m = s.mount(&["--prefix", &format!("{u}/")]);
    assert!(sh("echo v > current", &m.p(&c)).status.success());
    assert_eq!(sdk_string(&c), "v\n");
    assert!(sh("echo w > current", &m.p(&a)).status.success());
    assert_eq!(sdk_string(&a), "w");
}

// ---- Probes from the review of issue 12 (were tests/adversarial_services.rs) ----

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
