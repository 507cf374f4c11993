//! Change hooks on real mounts against moto: `--on-change` with `--watch`
//! runs once per change of a secret read through the mount (an external
//! put or one made through the mount), with the name and version in its
//! environment and never the value; nothing polls without it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

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
    assert!(lines(&runs_file).is_empty(), "no change, no run");

    let new_id = put(&name, "second-value-B2");
    assert!(
        wait_until(Duration::from_secs(10), || !lines(&runs_file).is_empty()),
        "the hook ran after the external change"
    );
    assert_eq!(lines(&runs_file), vec![format!("{name} {new_id}")]);
    // The cache was refreshed with it, long before the TTL.
    assert_eq!(m.read_string(&format!("{name}/current")), "second-value-B2");
    // Three more intervals: still one run for one change.
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(lines(&runs_file).len(), 1, "one run per change");

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
    assert!(wait_until(Duration::from_secs(10), || !lines(&runs_file).is_empty()));
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(lines(&runs_file), vec![format!("{name} {id}")]);
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
        !lines(&runs_file).is_empty() && m.log_text().contains("change hook failed")
    }));
    assert_eq!(lines(&runs_file), vec![format!("{web} {web_id}")]);
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

// ---- Probes from the review of the change hooks (were tests/adversarial.rs) ----

fn force_delete(name: &str) {
    rt().block_on(async {
        sdk()
            .delete_secret()
            .secret_id(name)
            .force_delete_without_recovery(true)
            .send()
            .await
            .unwrap();
    });
}

/// "runs once per external change": a secret deleted and created again
/// (a Terraform replace) has a new AWSCURRENT; a program that read it once
/// (nginx) does not read it again until reloaded, so the hook must fire.
#[test]
fn a_secret_deleted_and_created_again_fires_the_hook() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let name = unique("rp-recreate");
    create(&name, "one");
    let m = Mount::aws()
        .args(["--secret", &name, "--ttl", "300", "--watch", "1s"])
        .args([
            "--on-change",
            &format!(
                "echo \"$SECRETSFS_SECRET $SECRETSFS_VERSION_ID\" >> {}",
                runs.display()
            ),
        ])
        .start();
    assert_eq!(m.read_string(&format!("{name}/current")), "one");
    force_delete(&name);
    // Some intervals with the secret gone.
    std::thread::sleep(Duration::from_millis(2500));
    let id = create(&name, "two");
    assert!(
        wait_until(Duration::from_secs(8), || !lines(&runs).is_empty()),
        "no hook run after the secret was created again (id {id}); log:\n{}",
        m.log_text()
    );
}

/// A run of a hook is killed "with its whole process group" at the
/// timeout, and README says "A run in progress when the daemon stops is
/// killed": its children too.
#[test]
fn a_running_hooks_children_die_when_the_daemon_stops() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let name = unique("rp-stop");
    create(&name, "v1");
    let mut m = Mount::aws()
        .args(["--secret", &name, "--ttl", "300", "--watch", "1s"])
        .args(["--hook-timeout", "600s"])
        .args([
            "--on-change",
            &format!("sleep 300 & echo $! > {}; wait", pidfile.display()),
        ])
        .start();
    m.read_string(&format!("{name}/current"));
    put(&name, "v2");
    assert!(wait_until(Duration::from_secs(10), || pidfile.exists()
        && !std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .is_empty()));
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    m.terminate();
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: signal 0 only probes.
    // A zombie (reaped by nobody in some sandboxes) is dead.
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
        st.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    });
    let alive = unsafe { libc::kill(pid, 0) } == 0 && !zombie;
    if alive {
        // SAFETY: clean up the probe's own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    assert!(!alive, "the hook's child {pid} outlived the daemon");
}

/// A hook must not inherit the daemon's /dev/fuse descriptor: a hook that
/// leaves a process behind would otherwise keep the FUSE connection alive
/// after the daemon dies (readers hang instead of ENOTCONN), and could
/// read and answer the mount's requests. The fusermount3 path (non-root
/// users) receives the descriptor with SCM_RIGHTS without close-on-exec.
#[test]
fn a_hook_does_not_inherit_the_fuse_descriptor_under_fusermount3() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let d = dir.path().display();
    let bin = env!("CARGO_BIN_EXE_secretsfs");
    let script = format!(
        r#"
set -u
mkdir -p {d}/mnt {d}/store
chown 65534:65534 {d}/mnt {d}/store && chmod 700 {d}/store
mknod {d}/fuse c 10 229 && chmod 666 {d}/fuse && mount --bind {d}/fuse /dev/fuse
setpriv --reuid=65534 --regid=65534 --clear-groups {bin} --local {d}/store --demo \
  --watch 1s --on-change 'ls -l /proc/$$/fd > {d}/fds' {d}/mnt > /dev/null 2> {d}/log &
pid=$!
i=0
until grep -q " {d}/mnt fuse.secretsfs " /proc/mounts; do
  i=$((i+1)); [ $i -lt 200 ] || {{ kill $pid; exit 3; }}
  sleep 0.05
done
setpriv --reuid=65534 --regid=65534 --clear-groups cat {d}/mnt/demo/api-key/current > /dev/null
setpriv --reuid=65534 --regid=65534 --clear-groups sh -c 'printf new-value > {d}/mnt/demo/api-key/current'
i=0
until [ -s {d}/fds ]; do
  i=$((i+1)); [ $i -lt 100 ] || {{ kill $pid; exit 4; }}
  sleep 0.1
done
kill -TERM $pid
wait $pid
"#
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
    assert!(out.status.success(), "{out:?}\nlog: {}", read("log"));
    let fds = read("fds");
    assert!(
        !fds.contains("/dev/fuse"),
        "the hook holds /dev/fuse:\n{fds}"
    );
}

/// The consequence of the inherited descriptor: a hook that starts a
/// process in the background (a service it restarts by hand) keeps the
/// FUSE connection open after the daemon is killed, so a reader hangs
/// instead of getting ENOTCONN.
#[test]
fn a_reader_does_not_hang_after_the_daemon_dies_when_a_hook_left_a_child() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let d = dir.path().display();
    let bin = env!("CARGO_BIN_EXE_secretsfs");
    let script = format!(
        r#"
set -u
mkdir -p {d}/mnt {d}/store
chown 65534:65534 {d}/mnt {d}/store && chmod 700 {d}/store
mknod {d}/fuse c 10 229 && chmod 666 {d}/fuse && mount --bind {d}/fuse /dev/fuse
setpriv --reuid=65534 --regid=65534 --clear-groups {bin} --local {d}/store --demo \
  --watch 1s --on-change 'sleep 30 > /dev/null 2>&1 & echo $! > {d}/child' {d}/mnt > /dev/null 2> {d}/log &
pid=$!
i=0
until grep -q " {d}/mnt fuse.secretsfs " /proc/mounts; do
  i=$((i+1)); [ $i -lt 200 ] || {{ kill $pid; exit 3; }}
  sleep 0.05
done
setpriv --reuid=65534 --regid=65534 --clear-groups cat {d}/mnt/demo/api-key/current > /dev/null
setpriv --reuid=65534 --regid=65534 --clear-groups sh -c 'printf new-value > {d}/mnt/demo/api-key/current'
i=0
until [ -s {d}/child ]; do
  i=$((i+1)); [ $i -lt 100 ] || {{ kill $pid; exit 4; }}
  sleep 0.1
done
kill -KILL $pid
wait $pid
timeout 5 setpriv --reuid=65534 --regid=65534 --clear-groups cat {d}/mnt/demo/db/password/current > /dev/null 2> {d}/readerr
echo $? > {d}/rc
ls -l /proc/$(cat {d}/child)/fd > {d}/childfds 2>&1
kill -KILL $(cat {d}/child) 2>/dev/null
umount -l {d}/mnt 2>/dev/null
exit 0
"#
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
    assert!(out.status.success(), "{out:?}\nlog: {}", read("log"));
    eprintln!(
        "rc={} err={} child={} fds={}",
        read("rc"),
        read("readerr"),
        read("child"),
        read("childfds")
    );
    assert_ne!(
        read("rc").trim(),
        "124",
        "the reader hung for 5 s on a dead daemon's mount: {}",
        read("readerr")
    );
}

/// The same, for root's own mount(2) path: the descriptor is close-on-exec.
#[test]
fn a_hook_of_a_root_mount_holds_no_fuse_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    let fds = dir.path().join("fds");
    let name = unique("rp-rootfd");
    create(&name, "v1");
    let m = Mount::aws()
        .args(["--secret", &name, "--ttl", "300", "--watch", "1s"])
        .args([
            "--on-change",
            &format!("ls -l /proc/$$/fd > {}", fds.display()),
        ])
        .start();
    m.read_string(&format!("{name}/current"));
    put(&name, "v2");
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&fds).is_ok_and(|s| !s.is_empty())
    }));
    let got = std::fs::read_to_string(&fds).unwrap();
    assert!(!got.contains("/dev/fuse"), "{got}");
}

/// A role allowed GetSecretValue but not DescribeSecret: reads work (the
/// read path falls back to GetSecretValue), but the watcher's
/// revalidation fails every interval. The hook must still fire, or at
/// least the failure must be visible above debug level.
#[test]
fn a_watcher_denied_describe_secret_is_not_silent() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let name = unique("rp-denied");
    create(&name, "v1");
    let (proxy, m) = mount_via_proxy(
        &name,
        &[
            "--ttl",
            "300",
            "--watch",
            "1s",
            "--on-change",
            &format!("echo run >> {}", runs.display()),
        ],
    );
    proxy.fault(
        "DescribeSecret",
        None,
        Fault::Error {
            status: 400,
            code: "AccessDeniedException",
        },
        10_000,
    );
    assert_eq!(m.read_string(&format!("{name}/current")), "v1");
    put(&name, "v2");
    std::thread::sleep(Duration::from_secs(4));
    let log = m.log_text();
    assert!(
        !lines(&runs).is_empty() || log.contains("WARN") || log.contains("ERROR"),
        "no run and nothing above debug: {log}"
    );
}

/// The hook's environment: the issue says never a value; the daemon's AWS
/// credentials are secret material too.
#[test]
fn a_hook_is_not_given_the_daemons_aws_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join("env");
    let name = unique("rp-env");
    create(&name, "v1");
    let m = Mount::aws()
        .args(["--secret", &name, "--ttl", "300", "--watch", "1s"])
        .env("AWS_SESSION_TOKEN", "session-token-SHOULD-NOT-LEAK")
        .args(["--on-change", &format!("env > {}", env.display())])
        .start();
    m.read_string(&format!("{name}/current"));
    put(&name, "v2");
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&env).is_ok_and(|s| !s.is_empty())
    }));
    let got = std::fs::read_to_string(&env).unwrap();
    let aws: Vec<&str> = got.lines().filter(|l| l.starts_with("AWS_")).collect();
    assert!(
        !got.contains("AWS_SECRET_ACCESS_KEY") && !got.contains("SHOULD-NOT-LEAK"),
        "{aws:?}"
    );
}

/// The same, with the secret read again through the mount after it was
/// created again: the new AWSCURRENT is then taken as the first one seen.
#[test]
fn a_secret_created_again_and_read_fires_the_hook() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let name = unique("rp-recreate2");
    create(&name, "one");
    let m = Mount::aws()
        .args(["--secret", &name, "--ttl", "1", "--watch", "1s"])
        .args([
            "--on-change",
            &format!(
                "echo \"$SECRETSFS_SECRET $SECRETSFS_VERSION_ID\" >> {}",
                runs.display()
            ),
        ])
        .start();
    assert_eq!(m.read_string(&format!("{name}/current")), "one");
    force_delete(&name);
    std::thread::sleep(Duration::from_millis(2500));
    create(&name, "two");
    assert!(wait_until(Duration::from_secs(5), || m
        .read(&format!("{name}/current"))
        .is_ok_and(|v| v == b"two")));
    assert!(
        wait_until(Duration::from_secs(5), || !lines(&runs).is_empty()),
        "no hook run for the new AWSCURRENT"
    );
}

/// A put through the mount then an external put in the same interval: the
/// hook's last run names the external version; a change while a run is
/// going gets a run of its own after it.
#[test]
fn a_mount_put_then_an_external_put_end_with_a_run_for_the_latest() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let name = unique("rp-both");
    create(&name, "v1");
    let m = Mount::aws()
        .args(["--secret", &name, "--ttl", "300", "--watch", "2s"])
        .args([
            "--on-change",
            &format!(
                "echo \"$SECRETSFS_VERSION_ID\" >> {}; sleep 3",
                runs.display()
            ),
        ])
        .start();
    m.read_string(&format!("{name}/current"));
    replace_file(&m.p(&format!("{name}/current")), b"v2").unwrap();
    let ext = put(&name, "v3");
    assert!(wait_until(Duration::from_secs(10), || !lines(&runs).is_empty()));
    // A change while that run sleeps.
    let ext2 = put(&name, "v4");
    assert!(
        wait_until(Duration::from_secs(15), || lines(&runs)
            .last()
            .is_some_and(|l| *l == ext2)),
        "runs: {:?} (v3 {ext}, v4 {ext2})",
        lines(&runs)
    );
    assert_eq!(m.read_string(&format!("{name}/current")), "v4");
}
