//! Adversarial probes of the JSON view and the change hooks (review1).
//! Each test states the contract it checks; a failing test is a finding.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
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

fn lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

// ---- JSON view ------------------------------------------------------------

/// A key holding a number (or null, or a boolean) may be given any JSON
/// (README: "the bytes must be JSON"). Writing the JSON string "5432" to a
/// key holding the number 5432 changes the value; the write must not be
/// judged "unchanged" and dropped.
#[test]
fn probe_writing_a_json_string_to_a_number_key_is_not_dropped_as_unchanged() {
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

/// A key removed by another process while a reader holds the key file
/// open: the open descriptor still reads its version, and fstat(2) on it
/// must not fail (it cannot for `current`).
#[test]
fn probe_fstat_of_an_open_key_file_after_the_key_is_removed() {
    use std::os::unix::fs::MetadataExt;
    let s = unique("rp-fstat");
    create(&s, r#"{"a":"1","b":"2"}"#);
    let m = Mount::aws().args(["--secret", &s, "--ttl", "1"]).start();
    let f = std::fs::File::open(m.p(&format!("{s}/json/a"))).unwrap();
    std::fs::remove_file(m.p(&format!("{s}/json/a"))).unwrap();
    assert_eq!(current_string(&s), r#"{"b":"2"}"#);
    let md = f.metadata();
    assert!(md.is_ok(), "fstat on an open key file: {md:?}");
    let _ = md.unwrap().size();
}

/// A writer that opened `json/port` (a number) without O_TRUNC, while
/// another process removes the key before its close: the commit re-adds
/// the key, and must not silently turn the number into a string.
#[test]
fn probe_a_key_removed_before_a_commit_keeps_the_type_written() {
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
        assert_eq!(libc::close(fd), 0);
    }
    assert_eq!(current_string(&s), r#"{"u":"x","port":5433}"#);
}

/// A JSON key that cannot be a file name is warned about: the key itself
/// must not be logged in full when keys are secret material (a map of
/// base64 tokens, which contain '/').
#[test]
fn probe_a_key_with_a_slash_is_not_written_to_the_log() {
    let s = unique("rp-keylog");
    let token = "c2VjcmV0LXRva2VuLXZhbHVl/QUJDREVGRw==";
    create(&s, &format!(r#"{{"{token}":"service-a","ok":"1"}}"#));
    let m = Mount::aws().args(["--secret", &s]).start();
    let _ = ls(&m.p(&format!("{s}/json")));
    assert!(!m.log_text().contains(token), "{}", m.log_text());
}

// ---- change hooks -----------------------------------------------------------

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
fn probe_a_secret_deleted_and_created_again_fires_the_hook() {
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
fn probe_a_running_hooks_children_die_when_the_daemon_stops() {
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
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    if alive {
        // SAFETY: clean up the probe's own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    eprintln!("STAT {st}");
    eprintln!("LOG {}", m.log_text());
    assert!(!alive, "the hook child {pid} outlived the daemon");
}

/// A hook must not inherit the daemon's /dev/fuse descriptor: a hook that
/// leaves a process behind would otherwise keep the FUSE connection alive
/// after the daemon dies (readers hang instead of ENOTCONN), and could
/// read and answer the mount's requests. The fusermount3 path (non-root
/// users) receives the descriptor with SCM_RIGHTS without close-on-exec.
#[test]
fn probe_a_hook_does_not_inherit_the_fuse_descriptor_under_fusermount3() {
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
fn probe_a_reader_does_not_hang_after_the_daemon_dies_when_a_hook_left_a_child() {
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
fn probe_a_hook_of_a_root_mount_holds_no_fuse_descriptor() {
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

/// After a put through `current` that changes a key's length, stat of the
/// key file gives the new content's size (the kernel's copy was dropped).
#[test]
fn probe_key_sizes_follow_a_put_through_current() {
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

/// A role allowed GetSecretValue but not DescribeSecret: reads work (the
/// read path falls back to GetSecretValue), but the watcher's
/// revalidation fails every interval. The hook must still fire, or at
/// least the failure must be visible above debug level.
#[test]
fn probe_a_watcher_denied_describe_secret_is_not_silent() {
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
fn probe_a_hook_is_not_given_the_daemons_aws_credentials() {
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

/// Secrets Manager has no conditional put: an external put of another key
/// landing between the commit's read of AWSCURRENT and its PutSecretValue
/// is overwritten. after_put sees it (AWSPREVIOUS is not the version the
/// merge was made from); the lost change should at least be logged.
#[test]
fn probe_an_external_put_inside_the_commit_window_is_not_lost_silently() {
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

/// A 61 KiB JSON object of 4,500 keys: `ls -l json/` parses the whole
/// value once per key (lookup and getattr each): bounded here at 20 s.
#[test]
fn probe_listing_a_large_json_object_is_not_quadratic() {
    let s = unique("rp-big");
    let body: Vec<String> = (0..4500).map(|i| format!("\"k{i:05}\":{i}")).collect();
    let doc = format!("{{{}}}", body.join(","));
    assert!(doc.len() < 65_536, "{}", doc.len());
    create(&s, &doc);
    let m = Mount::aws().args(["--secret", &s, "--ttl", "300"]).start();
    let t = Instant::now();
    let out = sh("ls -l json | wc -l", &m.p(&s));
    let took = t.elapsed();
    eprintln!(
        "ls -l of 4500 keys took {took:?}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
}

/// A key added elsewhere within the TTL is unknown to the mount's cached
/// AWSCURRENT, so `>>` reaches create(2); create then sees the key in
/// AWSCURRENT now, but starts the handle empty even without O_TRUNC: the
/// append replaces the value.
#[test]
fn probe_appending_to_a_key_added_elsewhere_within_the_ttl_appends() {
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
fn probe_a_deeply_nested_value_does_not_hide_the_other_keys() {
    let s = unique("rp-deep");
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    create(&s, &format!(r#"{{"deep":{deep},"password":"p"}}"#));
    let m = Mount::aws().args(["--secret", &s]).start();
    assert_eq!(ls(&m.p(&format!("{s}/json"))), ["deep", "password"]);
    assert_eq!(m.read_string(&format!("{s}/json/password")), "p");
}

/// The same, with the secret read again through the mount after it was
/// created again: the new AWSCURRENT is then taken as the first one seen.
#[test]
fn probe_a_secret_created_again_and_read_fires_the_hook() {
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
fn probe_a_mount_put_then_an_external_put_end_with_a_run_for_the_latest() {
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

/// A JSON key's put whose answer is lost: one version, the close succeeds
/// (the token is found), the value reads back, and the hook runs once.
#[test]
fn probe_a_lost_put_answer_of_a_key_makes_one_version_and_one_run() {
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

/// install(1) unlinks the destination before creating it (the reason
/// `current` has its REPLACERS rule). In json/ the unlink is a put
/// without the key and the create a second put with the key last: two
/// versions, a window where readers get ENOENT, and the key order changed.
#[test]
fn probe_install_onto_a_key_makes_one_version_in_place() {
    let s = unique("rp-install");
    create(&s, r#"{"password":"p","user":"u"}"#);
    let m = Mount::aws().args(["--secret", &s]).start();
    let src = m.p("..").join("newpw");
    std::fs::write(&src, "q").unwrap();
    let before = version_ids(&s).len();
    let out = sh(
        &format!("install -m 600 {} json/password", src.display()),
        &m.p(&s),
    );
    eprintln!("{out:?}");
    let after = version_ids(&s).len();
    assert_eq!(
        (current_string(&s).as_str(), after - before),
        (r#"{"password":"q","user":"u"}"#, 1)
    );
}

/// vim on a key file, with its defaults (writebackup, swap file in the
/// file's directory): one version, the key in place, no stray keys.
#[test]
fn probe_vim_on_a_key_makes_one_version_and_no_stray_keys() {
    let s = unique("rp-vim");
    create(&s, r#"{"password":"old","user":"u"}"#);
    let m = Mount::aws().args(["--secret", &s]).start();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("vim -Es -u DEFAULTS -i NONE -c 'set backupskip=' -c 'set swapfile' -c '%s/old/new/' -c wq json/password")
        .current_dir(m.p(&s))
        .env("HOME", m.path.parent().unwrap())
        .output()
        .unwrap();
    let versions = version_ids(&s).len();
    // The keys of each version (not the values: a swap file is 4 KiB).
    for id in version_ids(&s) {
        let v = rt().block_on(
            sdk()
                .get_secret_value()
                .secret_id(&s)
                .version_id(&id)
                .send(),
        );
        let text = v.ok().and_then(|o| o.secret_string().map(str::to_string));
        let keys: Vec<String> = text
            .and_then(|t| {
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&t).ok()
            })
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        eprintln!("version {id}: keys {keys:?}");
    }
    assert_eq!(
        (current_string(&s), versions),
        (r#"{"password":"new\n","user":"u"}"#.to_string(), 2),
        "{out:?}\n{}",
        m.log_text()
    );
}
