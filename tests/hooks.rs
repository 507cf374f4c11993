//! Change hooks on real mounts against moto: `--on-change` with `--watch`
//! runs once per change of a secret read through the mount (an external
//! put or one made through the mount), with the name and version in its
//! environment and never the value; nothing polls without it.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

/// A hook script that appends, per run, its whole environment and its
/// arguments to a file of its own in `dir`, and one line to `runs`.
fn recorder(dir: &Path) -> (String, PathBuf) {
    let runs = dir.join("runs");
    let script = dir.join("hook.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             n=$(date +%s%N)\n\
             env > {d}/env.$n\n\
             echo \"$0 $*\" > {d}/args.$n\n\
             echo \"$SECRETSFS_SECRET $SECRETSFS_VERSION_ID\" >> {runs}\n",
            d = dir.display(),
            runs = runs.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (script.display().to_string(), runs)
}

fn runs(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Everything the hook runs were given: environments and arguments.
fn everything_given(dir: &Path) -> String {
    let mut all = String::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("env.") || name.starts_with("args.") {
            all.push_str(&std::fs::read_to_string(&p).unwrap());
        }
    }
    all
}

#[test]
fn an_external_change_runs_the_hook_once_with_name_and_version_and_never_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let (script, runs_file) = recorder(dir.path());
    let name = unique("hook-ext");
    create(&name, "first-value-A1");
    // A long TTL: only the watcher can notice the change in time.
    let (proxy, m) = mount_via_proxy(
        &name,
        &["--ttl", "300", "--on-change", &script, "--watch", "1s"],
    );
    assert_eq!(m.read_string(&format!("{name}/current")), "first-value-A1");
    // Read, not changed: no run.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(runs(&runs_file).is_empty(), "no change, no run");

    let new_id = put(&name, "second-value-B2");
    assert!(
        wait_until(Duration::from_secs(10), || !runs(&runs_file).is_empty()),
        "the hook ran after the external change"
    );
    assert_eq!(runs(&runs_file), vec![format!("{name} {new_id}")]);
    // The cache was refreshed with it, long before the TTL.
    assert_eq!(m.read_string(&format!("{name}/current")), "second-value-B2");
    // Three more intervals: still one run for one change.
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(runs(&runs_file).len(), 1, "one run per change");

    let given = everything_given(dir.path());
    assert!(given.contains(&format!("SECRETSFS_SECRET={name}")));
    assert!(given.contains(&format!("SECRETSFS_VERSION_ID={new_id}")));
    for value in ["first-value-A1", "second-value-B2"] {
        assert!(!given.contains(value), "a hook was given a value");
        assert!(!m.log_text().contains(value), "a value reached the log");
    }
    assert!(m.log_text().contains("change hook ran"));
    // Revalidation is DescribeSecret: no value fetched per interval.
    assert!(proxy.count("DescribeSecret") >= 3);
    assert!(
        proxy.count("GetSecretValue") <= 3,
        "no decrypt per interval"
    );
    let stats = m.stats();
    assert_eq!(stats["hook_runs"]["ok"], 1);
}

#[test]
fn a_change_made_through_the_mount_runs_the_hook_once() {
    let dir = tempfile::tempdir().unwrap();
    let (script, runs_file) = recorder(dir.path());
    let name = unique("hook-own");
    create(&name, "old");
    let (_proxy, m) = mount_via_proxy(
        &name,
        &["--ttl", "300", "--on-change", &script, "--watch", "1s"],
    );
    write_file(
        &m.p(&format!("{name}/current")),
        b"new",
        libc::O_WRONLY | libc::O_TRUNC,
    )
    .unwrap();
    let (id, value, _) = stage(&name, "AWSCURRENT").unwrap();
    assert_eq!(value.as_deref(), Some("new"));
    assert!(wait_until(Duration::from_secs(10), || !runs(&runs_file).is_empty()));
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(runs(&runs_file), vec![format!("{name} {id}")]);
}

#[test]
fn hooks_per_pattern_from_the_config_file_run_only_for_their_secrets_and_failures_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    let (script, runs_file) = recorder(dir.path());
    let base = unique("hook-pat");
    let (web, db) = (format!("{base}/web/cert"), format!("{base}/db/pw"));
    create(&web, "cert-1");
    create(&db, "pw-1");
    let config = dir.path().join("secretsfs.toml");
    std::fs::write(
        &config,
        format!(
            "[[hook]]\npattern = \"{base}/web/*\"\non_change = \"{script}\"\nwatch = \"1s\"\n\n\
             [[hook]]\npattern = \"{base}/db/*\"\non_change = \"exit 7\"\nwatch = \"1s\"\n"
        ),
    )
    .unwrap();
    let m = Mount::aws()
        .args(["--prefix", &base, "--ttl", "300", "--config"])
        .arg(config.to_str().unwrap())
        .start();
    assert_eq!(m.read_string(&format!("{web}/current")), "cert-1");
    assert_eq!(m.read_string(&format!("{db}/current")), "pw-1");
    let web_id = put(&web, "cert-2");
    put(&db, "pw-2");
    assert!(wait_until(Duration::from_secs(10), || {
        !runs(&runs_file).is_empty() && m.log_text().contains("change hook failed")
    }));
    assert_eq!(runs(&runs_file), vec![format!("{web} {web_id}")]);
    let log = m.log_text();
    let failed = log
        .lines()
        .find(|l| l.contains("change hook failed"))
        .unwrap();
    assert!(failed.contains(&db) && failed.contains("status=7") && failed.contains("duration_ms"));
    assert_eq!(m.stats()["hook_runs"]["failed"], 1);
}

#[test]
fn a_hook_that_hangs_is_killed_at_its_timeout() {
    let name = unique("hook-hang");
    create(&name, "v1");
    let m = Mount::aws()
        .args(["--secret", &name, "--ttl", "300", "--watch", "1s"])
        .args(["--hook-timeout", "1s", "--on-change", "sleep 60"])
        .start();
    m.read_string(&format!("{name}/current"));
    put(&name, "v2");
    assert!(wait_until(Duration::from_secs(10), || m
        .log_text()
        .contains("change hook timed out")));
    assert_eq!(m.stats()["hook_runs"]["timeout"], 1);
}

#[test]
fn without_a_hook_nothing_is_polled() {
    let name = unique("hook-off");
    create(&name, "v1");
    let (proxy, m) = mount_via_proxy(&name, &["--ttl", "300"]);
    m.read_string(&format!("{name}/current"));
    let before = proxy.total();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(proxy.total(), before, "no call without a reader or a hook");
}

#[test]
fn watch_without_on_change_is_refused_at_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_secretsfs"))
        .args(["--watch", "10s", "/nonexistent-mountpoint"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("need --on-change"));
}
