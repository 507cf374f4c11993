//! Running as a service: readiness on NOTIFY_SOCKET, the systemd units,
//! mounting through mount(8) and fuse3's helper, strict configuration, and
//! process hardening.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

fn secretsfs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_secretsfs"))
}

fn status_field(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap()
}

#[test]
fn ready_is_sent_only_once_the_mount_answers() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let store = dir.path().join("store");
    let mut m = Mount::local(&store)
        .arg("--demo")
        .env("NOTIFY_SOCKET", sock_path.to_str().unwrap())
        .start_unwaited();
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("READY=1 within 20 s");
    assert_eq!(&buf[..n], b"READY=1");
    // At READY the filesystem is mounted and answering.
    assert!(m.is_mounted());
    assert_eq!(
        m.read_string("demo/api-key/current"),
        "ak_live_0123456789abcdef"
    );
    assert!(m.terminate().success());
    let n = sock.recv(&mut buf).expect("STOPPING=1 at shutdown");
    assert_eq!(&buf[..n], b"STOPPING=1");
}

#[test]
fn systemd_units_pass_verification() {
    let dir = tempfile::tempdir().unwrap();
    for unit in ["secretsfs.service", "secretsfs@.service"] {
        let text =
            std::fs::read_to_string(format!("{}/systemd/{unit}", env!("CARGO_MANIFEST_DIR")))
                .unwrap();
        assert!(text.contains("Type=notify"), "{unit}");
        // Point ExecStart at the binary under test: verify checks it exists.
        let text = text.replace("/usr/local/bin/secretsfs", env!("CARGO_BIN_EXE_secretsfs"));
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    for unit in ["secretsfs.service", "secretsfs@run-secrets.service"] {
        let out = Command::new("systemd-analyze")
            .args(["verify", &format!("./{unit}")])
            .current_dir(dir.path())
            .output()
            .expect("systemd-analyze (run ./run-tests to install systemd)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "{unit}: {stderr}"
        );
    }
}

/// Runs `script` in a private mount namespace in which /usr/local/bin holds
/// the binary under test, so that mount(8) -> mount.fuse3 -> sh finds
/// `secretsfs` as it would once installed, without touching the host.
fn in_private_namespace(script: &str, dir: &std::path::Path) -> std::process::Output {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_secretsfs"), bin.join("secretsfs")).unwrap();
    let full = format!(
        "set -eu\nmount --bind {} /usr/local/bin\n{script}",
        bin.display()
    );
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &full])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn mount_helper_mounts_from_fstab_style_options_and_umount_ends_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let script = format!(
        r#"
mkdir -p {d}/mnt
trap 'umount -l {d}/mnt 2>/dev/null || true' EXIT
timeout 30 mount -t fuse.secretsfs secretsfs {d}/mnt -o _netdev,local={d}/store,demo,ttl=5
grep -q "^secretsfs {d}/mnt fuse.secretsfs " /proc/mounts
cat {d}/mnt/demo/api-key/current > {d}/value
pid=$(sed -n 's/.*"pid": \([0-9]*\).*/\1/p' {d}/mnt/.secretsfs/stats)
[ -n "$pid" ]
umount {d}/mnt
i=0
while kill -0 "$pid" 2>/dev/null; do
  i=$((i+1)); [ $i -lt 100 ] || {{ echo "daemon still running after umount" >&2; exit 1; }}
  sleep 0.05
done
if timeout 30 mount -t fuse.secretsfs secretsfs {d}/mnt -o local={d}/store,frobnicate 2> {d}/err; then exit 1; fi
"#
    );
    let out = in_private_namespace(&script, dir.path());
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("value")).unwrap(),
        "ak_live_0123456789abcdef"
    );
    let err = std::fs::read_to_string(dir.path().join("err")).unwrap();
    assert!(err.contains("frobnicate"), "{err}");
}

#[test]
fn bad_options_and_config_keys_fail_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = secretsfs()
        .arg(dir.path())
        .args(["-o", "ttl=5,frobnicate"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("'frobnicate'"));
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "ttl = 5\nprefixx = \"prod/\"\n").unwrap();
    let out = secretsfs()
        .arg("--config")
        .arg(&cfg)
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("prefixx"),
        "{out:?}"
    );
    assert!(
        !std::fs::read_to_string("/proc/mounts")
            .unwrap()
            .contains(dir.path().to_str().unwrap())
    );
}

#[test]
fn the_daemon_is_not_dumpable_and_mlock_locks_its_memory() {
    let store = tempfile::tempdir().unwrap();
    let m = Mount::local(store.path())
        .arg("--demo")
        .arg("--mlock")
        .start();
    assert_eq!(m.stats()["dumpable"], false);
    let locked: u64 = status_field(m.pid(), "VmLck")
        .trim_end_matches(" kB")
        .parse()
        .unwrap();
    assert!(locked > 1024, "VmLck {locked} kB");
    // Without --mlock, nothing is locked (a store of its own: one daemon
    // per store).
    let store2 = tempfile::tempdir().unwrap();
    let m2 = Mount::local(store2.path()).start();
    assert_eq!(status_field(m2.pid(), "VmLck"), "0 kB");
}

#[test]
fn mlock_with_too_low_a_limit_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    // Without CAP_IPC_LOCK the limit applies: drop it from the bounding set.
    let out = Command::new("setpriv")
        .args(["--bounding-set", "-ipc_lock", "--inh-caps", "-ipc_lock"])
        .args(["prlimit", "--memlock=65536:65536"])
        .arg(env!("CARGO_BIN_EXE_secretsfs"))
        .arg("--mlock")
        .arg("--local")
        .arg(dir.path().join("store"))
        .arg(dir.path().join("mnt"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--mlock") && err.contains("RLIMIT_MEMLOCK"),
        "{err}"
    );
}

#[test]
fn runs_with_no_new_privileges_and_only_the_units_capabilities() {
    // What NoNewPrivileges=yes and CapabilityBoundingSet=CAP_SYS_ADMIN
    // CAP_IPC_LOCK CAP_SYS_PTRACE leave the daemon, emulated with setpriv.
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let mut child = Command::new("setpriv")
        .args([
            "--no-new-privs",
            "--bounding-set",
            "-all,+sys_admin,+ipc_lock,+sys_ptrace",
        ])
        .arg(env!("CARGO_BIN_EXE_secretsfs"))
        .args(["--mlock", "--demo", "--local"])
        .arg(dir.path().join("store"))
        .arg(&mnt)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .contains(mnt.to_str().unwrap())
    {
        assert!(std::time::Instant::now() < deadline, "did not mount");
        assert!(child.try_wait().unwrap().is_none(), "exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    let value = std::fs::read_to_string(mnt.join("demo/api-key/current"));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(value.unwrap(), "ak_live_0123456789abcdef");
    assert!(status.success());
}

#[test]
fn a_private_mount_namespace_would_hide_the_mount_from_the_host() {
    // Why ProtectSystem=, PrivateTmp= and the like are not in the units:
    // each gives the daemon its own mount namespace, and a FUSE mount made
    // there never reaches the host.
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "slave"])
        .arg(env!("CARGO_BIN_EXE_secretsfs"))
        .args(["--demo", "--local"])
        .arg(dir.path().join("store"))
        .arg(&mnt)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the daemon's own namespace has the mount.
    let pid_mounts =
        || std::fs::read_to_string(format!("/proc/{}/mounts", child.id())).unwrap_or_default();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !pid_mounts().contains(mnt.to_str().unwrap()) {
        assert!(
            std::time::Instant::now() < deadline,
            "did not mount in its namespace"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let host_sees = std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .contains(mnt.to_str().unwrap());
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    assert!(!host_sees);
}

/// Every syscall in systemd's named groups, expanded recursively.
fn syscall_groups(groups: &[&str]) -> std::collections::HashSet<String> {
    let mut out = std::collections::HashSet::new();
    let mut todo: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    let mut seen = std::collections::HashSet::new();
    while let Some(g) = todo.pop() {
        if !seen.insert(g.clone()) {
            continue;
        }
        let text = Command::new("systemd-analyze")
            .args(["syscall-filter", &g])
            .output()
            .unwrap();
        for line in String::from_utf8_lossy(&text.stdout).lines().skip(1) {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            if l.starts_with('@') {
                todo.push(l.to_string());
            } else {
                out.insert(l.to_string());
            }
        }
    }
    out
}

#[test]
fn a_session_stays_inside_the_units_seccomp_and_memory_sandbox() {
    // What SystemCallFilter=@system-service @mount, RestrictAddressFamilies,
    // MemoryDenyWriteExecute, LockPersonality and RestrictNamespaces allow,
    // checked against every syscall of a real session (strace), reads and
    // writes against moto, mount to unmount.
    let s = unique("svc-sandbox");
    create(&s, "sandboxed");
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let mut m = Mount::aws()
        .args(["--secret", &s, "--mlock"])
        .wrap(["strace", "-f", "-qq", "-o", trace.to_str().unwrap()])
        .start();
    assert_eq!(m.read_string(&format!("{s}/current")), "sandboxed");
    replace_file(&m.p(&format!("{s}/current")), b"sandboxed too").unwrap();
    assert_eq!(current_string(&s), "sandboxed too");
    let pid: i32 = m.stats()["pid"].as_i64().unwrap() as i32;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    for l in maps.lines() {
        let perms = l.split_whitespace().nth(1).unwrap();
        assert!(
            !(perms.contains('w') && perms.contains('x')),
            "W+X mapping: {l}"
        );
    }
    // SIGTERM the daemon itself (not strace) and let strace finish.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(m.terminate().success());

    let allowed = syscall_groups(&["@system-service", "@mount"]);
    let text = std::fs::read_to_string(&trace).unwrap();
    let mut used = std::collections::BTreeSet::new();
    for line in text.lines() {
        // "<pid> name(args) = ret", possibly "<... name resumed>".
        let rest = line.split_once(' ').map_or(line, |(_, r)| r).trim_start();
        if rest.starts_with("<...") || rest.starts_with("+++") || rest.starts_with("---") {
            continue;
        }
        let Some(name) = rest.split('(').next() else {
            continue;
        };
        if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !name.is_empty() {
            used.insert(name.to_string());
        }
        if name == "socket" {
            assert!(
                ["AF_UNIX", "AF_INET,", "AF_INET6"]
                    .iter()
                    .any(|f| rest.contains(f)),
                "socket family outside RestrictAddressFamilies: {rest}"
            );
        }
        assert!(
            name != "personality" && name != "unshare" && name != "setns",
            "{rest}"
        );
        if name.starts_with("clone") {
            assert!(!rest.contains("CLONE_NEW"), "namespace created: {rest}");
        }
        if name == "mmap" || name == "mprotect" {
            assert!(
                !(rest.contains("PROT_WRITE") && rest.contains("PROT_EXEC")),
                "W+X: {rest}"
            );
        }
    }
    // execve is the wrapper starting the daemon, before any filter applies.
    used.remove("execve");
    let outside: Vec<&String> = used.iter().filter(|n| !allowed.contains(*n)).collect();
    assert!(
        outside.is_empty(),
        "syscalls outside @system-service @mount: {outside:?}"
    );
    assert!(
        used.contains("mount") && used.contains("umount2"),
        "{used:?}"
    );
    eprintln!("syscalls of the session: {used:?}");
}
