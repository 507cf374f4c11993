//! What an operator sees: quiet and truthful logs, the mount type, the
//! metrics file, scripts that learn a failed write, and a mount by a user
//! who cannot use /dev/fuse itself.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use crate::common::*;

fn demo() -> (tempfile::TempDir, Mount) {
    let store = tempfile::tempdir().unwrap();
    let m = Mount::local(store.path()).arg("--demo").start();
    (store, m)
}

#[test]
fn a_shell_redirection_and_a_python_read_log_nothing_and_count_no_error() {
    let (_store, m) = demo();
    let dir = m.p("demo/api-key");
    let out = sh("printf new-key > current", &dir);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(m.read_string("demo/api-key/current"), "new-key");
    let py = Command::new("python3")
        .args(["-c", "print(len(open('current').read()))"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(py.status.success(), "{py:?}");
    let log = m.log_text();
    assert!(!log.contains("WARN") && !log.contains("ERROR"), "{log}");
    assert_eq!(m.stats()["errors"], 0, "{}", m.stats());
}

#[test]
fn logs_to_a_pipe_are_plain() {
    let (_store, m) = demo();
    let _ = m.read("demo/missing/current");
    let log = m.log_text();
    assert!(log.contains("mounted"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a log that is not a terminal"
    );
}

#[test]
fn json_logs_are_one_object_a_line() {
    let store = tempfile::tempdir().unwrap();
    let m = Mount::local(store.path())
        .args(["--demo", "--log-format", "json"])
        .start();
    // A refusal, logged with the file it concerns.
    let e = std::fs::write(m.p("demo/db/password/previous"), b"x").unwrap_err();
    assert_eq!(errno_of(&e), libc::EACCES);
    let log = m.log_text();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["fields"]["message"] == "mounted"),
        "{log}"
    );
}

#[test]
fn refusals_name_the_secret_and_file_not_an_inode() {
    let (_store, m) = demo();
    let e = std::fs::write(m.p("demo/db/password/previous"), b"x").unwrap_err();
    assert_eq!(errno_of(&e), libc::EACCES);
    let log = m.log_text();
    assert!(log.contains("path=\"demo/db/password/previous\""), "{log}");
    assert!(!log.contains("ino="), "{log}");
}

#[test]
fn a_root_mount_has_the_type_fuse_secretsfs() {
    let (_store, m) = demo();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == m.path.to_str())
        .expect("mounted");
    assert_eq!(line.split(' ').nth(2), Some("fuse.secretsfs"), "{line}");
    let found = Command::new("findmnt")
        .args(["-n", "-t", "fuse.secretsfs", "-o", "TARGET"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&found.stdout).contains(m.path.to_str().unwrap()),
        "{found:?}"
    );
}

/// Each non-comment line of the Prometheus text format: a metric name,
/// optional labels, a number.
fn is_sample(line: &str) -> bool {
    let (head, value) = match line.rsplit_once(' ') {
        Some(p) => p,
        None => return false,
    };
    let name_end = head.find('{').unwrap_or(head.len());
    let name = &head[..name_end];
    let labels_ok =
        name_end == head.len() || (head.ends_with('}') && head[name_end..].contains('='));
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        && labels_ok
        && value.parse::<f64>().is_ok()
}

#[test]
fn the_metrics_file_is_prometheus_text_and_the_stats_say_what_the_mount_is() {
    let (_store, m) = demo();
    assert_eq!(
        m.read_string("demo/api-key/current"),
        "ak_live_0123456789abcdef"
    );
    let text = m.read_string(".secretsfs/metrics");
    for line in text.lines() {
        if line.starts_with('#') {
            assert!(
                line.starts_with("# HELP secretsfs_") || line.starts_with("# TYPE secretsfs_"),
                "{line}"
            );
        } else {
            assert!(is_sample(line), "not a sample: {line}");
        }
    }
    for name in [
        "secretsfs_api_calls_total{operation=\"GetSecretValue\"}",
        "secretsfs_api_last_success_timestamp_seconds{operation=\"GetSecretValue\"}",
        "secretsfs_cache_entries",
        "secretsfs_cache_bytes",
        "secretsfs_stale_max_age_seconds",
        "secretsfs_build_info{",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    assert!(!text.contains("ak_live"), "a value in the metrics");
    let stats = m.stats();
    assert_eq!(stats["store"], "local");
    assert_eq!(stats["mountpoint"], m.path.to_str().unwrap());
    assert!(
        stats["version"]
            .as_str()
            .unwrap()
            .starts_with(env!("CARGO_PKG_VERSION"))
    );
    assert!(stats["uptime_secs"].is_u64());
    assert!(stats["api_calls"]["DescribeSecret"].is_u64());
    assert!(ls(&m.p(".secretsfs")).contains(&"metrics".to_string()));
}

#[test]
fn scripts_that_check_the_close_learn_a_failed_put() {
    let s = unique("op-script");
    create(&s, "old");
    let (proxy, m) = mount_via_proxy(&s, &[]);
    let dir = m.p(&s);
    // The ways the README shows, each tested both ways.
    let commands = [
        "printf v1 | tee current >/dev/null",
        "printf v2 | dd of=current conv=fsync status=none",
    ];
    for cmd in commands {
        assert!(sh(cmd, &dir).status.success(), "{cmd}");
    }
    assert_eq!(current_string(&s), "v2");
    let fail = Fault::Error {
        status: 500,
        code: "InternalFailure",
    };
    proxy.fault("PutSecretValue", Some(&s), fail, 100_000);
    for cmd in commands {
        let out = sh(&cmd.replace("v1", "x1").replace("v2", "x2"), &dir);
        assert!(
            !out.status.success(),
            "{cmd} exited 0 although nothing was stored"
        );
    }
    // A plain redirection does not tell: the shell ignores close's result.
    assert!(sh("printf x3 > current", &dir).status.success());
    assert_eq!(current_string(&s), "v2");
}

#[test]
fn a_user_who_cannot_mount_goes_through_fusermount3_or_is_told_what_to_do() {
    // In a private mount namespace, so that /dev/fuse can be opened up for
    // the user there without touching the machine's.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = dir.path().display();
    let bin = env!("CARGO_BIN_EXE_secretsfs");
    let script = format!(
        r#"
set -u
as_nobody() {{ setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }}
mkdir -p {d}/mnt {d}/store
chown 65534:65534 {d}/mnt {d}/store && chmod 700 {d}/store
# /dev/fuse is root's alone here: no way to mount, and the daemon says why.
if as_nobody timeout 10 {bin} --local {d}/store --demo {d}/mnt > /dev/null 2> {d}/refused; then exit 2; fi
# Opened up for everyone (as many distributions ship it): mount(2) is still
# not the user's, so fusermount3 mounts.
mknod {d}/fuse c 10 229 && chmod 666 {d}/fuse && mount --bind {d}/fuse /dev/fuse
setpriv --reuid=65534 --regid=65534 --clear-groups {bin} --local {d}/store --demo {d}/mnt > /dev/null 2> {d}/log &
pid=$!
i=0
until grep -q " {d}/mnt fuse.secretsfs " /proc/mounts; do
  i=$((i+1)); [ $i -lt 200 ] || {{ kill $pid; exit 3; }}
  sleep 0.05
done
grep " {d}/mnt " /proc/mounts > {d}/mountline
as_nobody cat {d}/mnt/demo/api-key/current > {d}/value
kill -TERM $pid
wait $pid || {{ echo "exit status $?" >&2; exit 4; }}
if grep -q " {d}/mnt " /proc/mounts; then umount -l {d}/mnt; exit 5; fi
"#
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
    assert!(
        out.status.success(),
        "{out:?}\nrefused: {}\nlog: {}",
        read("refused"),
        read("log")
    );
    let refused = read("refused");
    assert!(
        refused.contains("fusermount3")
            && refused.contains("/dev/fuse")
            && refused.contains("user_allow_other"),
        "{refused}"
    );
    assert!(
        read("mountline").contains("user_id=65534"),
        "{}",
        read("mountline")
    );
    assert_eq!(read("value"), "ak_live_0123456789abcdef");
    assert!(!read("log").contains("ERROR"), "{}", read("log"));
}
