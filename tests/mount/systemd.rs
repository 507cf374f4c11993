//! The units under a real systemd: a minimal Debian (debootstrap, built and
//! cached under target/nspawn by ./run-tests) booted with systemd as PID 1 of
//! a systemd-nspawn container, with the secretsfs binary and the unit files
//! of this checkout bound in. Inside it: secretsfs.service starts (Type=notify)
//! when consumers with ProtectSystem=strict start (one declares Requires=,
//! one Wants=), and each reads a secret at its start; the sandboxing
//! directives are in force on the daemon (/proc/PID/status) and on a probe
//! run under the unit's sandbox; after `kill -9` systemd restarts the daemon
//! and the mount answers again (the Requires= consumer is restarted with it,
//! the Wants= one runs on and sees the new mount); `systemctl stop` unmounts
//! at once; and one instance of the template unit mounts and stops.
//!
//! The container shares the host's network (no --private-network), so the
//! daemon of secretsfs.service talks to the tests' moto on 127.0.0.1; the
//! template's instance uses a local store. The container is killed when the
//! guard is dropped, also when the test panics, and by a watcher process when
//! the test process dies; the rootfs is never written (--volatile=overlay).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// Where ./run-tests leaves the debootstrapped Debian (bookworm, with
/// systemd and ca-certificates; it marks it complete last).
fn rootfs() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/nspawn/bookworm");
    assert!(
        dir.join(".secretsfs-complete").exists(),
        "no container rootfs at {}: run ./run-tests (it builds one with debootstrap)",
        dir.display()
    );
    dir
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A booted container; dropping it kills its PID 1 (and so everything in
/// it, mounts included: they live in its mount namespace) and reaps nspawn.
struct Container {
    nspawn: Child,
    /// PID 1 of the container, as the host sees it.
    leader: i32,
    /// Kills the leader when the test process dies without dropping us:
    /// it waits for EOF on this pipe.
    watcher: Option<(Child, ChildStdin)>,
    console: PathBuf,
}

impl Container {
    /// Boots `rootfs` with systemd as PID 1. `binds` are (host path, path in
    /// the container), all read-only.
    fn boot(rootfs: &Path, binds: &[(PathBuf, String)], console: PathBuf) -> Container {
        let mut cmd = Command::new("systemd-nspawn");
        cmd.arg("-D")
            .arg(rootfs)
            .args([
                "--volatile=overlay",
                "--boot",
                "--keep-unit",
                "--register=no",
                "--console=passive",
                "--bind=/dev/fuse",
                // nspawn's default bounding set lacks it; the unit keeps it.
                "--capability=CAP_IPC_LOCK",
            ])
            .arg(format!("--machine={}", unique("secretsfs-test")))
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(&console).unwrap()))
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(&console)
                    .unwrap(),
            ));
        for (host, guest) in binds {
            cmd.arg(format!("--bind-ro={}:{guest}", host.display()));
        }
        // SAFETY: prctl is async-signal-safe and takes integer arguments.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let nspawn = cmd
            .spawn()
            .expect("systemd-nspawn (run ./run-tests to install systemd-container)");
        let mut c = Container {
            nspawn,
            leader: 0,
            watcher: None,
            console,
        };
        // PID 1 is nspawn's child once it has exec'd systemd.
        let deadline = Instant::now() + Duration::from_secs(30);
        c.leader = loop {
            if let Some(pid) = child_named(c.nspawn.id(), "systemd") {
                break pid;
            }
            assert!(
                c.nspawn.try_wait().unwrap().is_none(),
                "systemd-nspawn exited: {}",
                c.console_text()
            );
            assert!(
                Instant::now() < deadline,
                "no systemd in the container after 30 s: {}",
                c.console_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut watcher = Command::new("sh")
            .args([
                "-c",
                "read _ || true; kill -9 \"$0\" 2>/dev/null",
                &c.leader.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = watcher.stdin.take().unwrap();
        c.watcher = Some((watcher, stdin));
        c
    }

    fn console_text(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    /// Runs `script` with sh inside the container (all its namespaces, a
    /// clean environment), killed after `limit`.
    fn sh_within(&self, script: &str, limit: Duration) -> Output {
        Command::new("timeout")
            .args(["-s", "KILL", &format!("{}", limit.as_secs().max(1))])
            .args(["nsenter", "-t", &self.leader.to_string(), "-a"])
            .args([
                "env",
                "-i",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG=C.UTF-8",
                "SYSTEMD_PAGER=",
                "SYSTEMD_COLORS=0",
                "sh",
                "-c",
                script,
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `script`'s standard output, trimmed; panics with its output and the
    /// journal's tail if it fails.
    fn ok(&self, script: &str) -> String {
        let out = self.sh_within(script, Duration::from_secs(60));
        if !out.status.success() {
            panic!(
                "in the container: {script}\n{}\nstdout: {}\nstderr: {}\njournal:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.journal_tail()
            );
        }
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Runs `script` until `done` holds for its output (or `limit` passes:
    /// then panics saying `what`). Returns the last output.
    fn wait_until(
        &self,
        what: &str,
        limit: Duration,
        script: &str,
        done: impl Fn(&Output) -> bool,
    ) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let out = self.sh_within(script, Duration::from_secs(30));
            if done(&out) {
                return String::from_utf8_lossy(&out.stdout).trim().to_string();
            }
            if Instant::now() > deadline {
                panic!(
                    "{what}: not within {limit:?}; last: {}\nstdout: {}\nstderr: {}\njournal:\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr),
                    self.journal_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn journal_tail(&self) -> String {
        let out = self.sh_within(
            "journalctl -b --no-pager -n 60 -o short-monotonic",
            Duration::from_secs(20),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `systemctl show -p PROP --value UNIT`.
    fn prop(&self, unit: &str, prop: &str) -> String {
        self.ok(&format!("systemctl show -p {prop} --value {unit}"))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Some((mut w, stdin)) = self.watcher.take() {
            // Stop the watcher first, so that it cannot kill a reused PID.
            let _ = w.kill();
            let _ = w.wait();
            drop(stdin);
        }
        if self.leader > 0 {
            // SAFETY: kill(2) on the container's PID 1, still ours: nspawn,
            // which has not been reaped, is its parent.
            unsafe { libc::kill(self.leader, libc::SIGKILL) };
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if !matches!(self.nspawn.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

/// A child of `parent` whose command name is `comm`.
fn child_named(parent: u32, comm: &str) -> Option<i32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ..."; comm may hold spaces or parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let ppid = stat[close + 1..].split_whitespace().nth(1);
        if &stat[open + 1..close] == comm && ppid == Some(&parent.to_string()) {
            return Some(pid);
        }
    }
    None
}

/// The lines of a unit's [Service] section.
fn service_section(unit_text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in unit_text.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            inside = l == "[Service]";
            continue;
        }
        if inside && !l.is_empty() && !l.starts_with('#') {
            out.push(l.to_string());
        }
    }
    out
}

/// The [Service] lines that confine the process, not those that say what to
/// run and when (the template and secretsfs.service differ only in those).
fn sandbox_lines(unit_text: &str) -> Vec<String> {
    const NOT_SANDBOX: &[&str] = &[
        "Type=",
        "NotifyAccess=",
        "EnvironmentFile=",
        "ExecStart",
        "Restart",
        "TimeoutStopSec=",
    ];
    service_section(unit_text)
        .into_iter()
        .filter(|l| !NOT_SANDBOX.iter().any(|p| l.starts_with(p)))
        .collect()
}

/// The capability bounding set that the unit's CapabilityBoundingSet= asks
/// for, as /proc/PID/status prints it.
fn expected_cap_bnd(unit_text: &str) -> String {
    let caps = service_section(unit_text)
        .into_iter()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet=").map(str::to_string))
        .expect("the unit restricts the capability bounding set");
    let mut mask = 0u64;
    for cap in caps.split_whitespace() {
        let bit = match cap {
            "CAP_CHOWN" => 0,
            "CAP_DAC_OVERRIDE" => 1,
            "CAP_DAC_READ_SEARCH" => 2,
            "CAP_FOWNER" => 3,
            "CAP_SETGID" => 6,
            "CAP_SETUID" => 7,
            "CAP_NET_BIND_SERVICE" => 10,
            "CAP_IPC_LOCK" => 14,
            "CAP_SYS_PTRACE" => 19,
            "CAP_SYS_ADMIN" => 21,
            other => panic!("add {other} to expected_cap_bnd's table"),
        };
        mask |= 1 << bit;
    }
    format!("{mask:016x}")
}

/// Fields of /proc/PID/status inside the container.
fn status_of(c: &Container, pid: &str) -> std::collections::HashMap<String, String> {
    c.ok(&format!("cat /proc/{pid}/status"))
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// The directives that /proc/PID/status shows are in force on a daemon.
fn assert_confined(c: &Container, unit: &str, unit_text: &str) -> String {
    let pid = c.prop(unit, "MainPID");
    assert!(pid != "0" && !pid.is_empty(), "{unit} has no main process");
    let st = status_of(c, &pid);
    assert_eq!(st["NoNewPrivs"], "1", "{unit}: NoNewPrivileges=yes");
    // 2 = SECCOMP_MODE_FILTER: SystemCallFilter, MemoryDenyWriteExecute...
    assert_eq!(st["Seccomp"], "2", "{unit}: a seccomp filter");
    let bnd = expected_cap_bnd(unit_text);
    assert_eq!(st["CapBnd"], bnd, "{unit}: CapabilityBoundingSet");
    assert_eq!(
        st["CapAmb"], "0000000000000000",
        "{unit}: AmbientCapabilities="
    );
    let eff = u64::from_str_radix(&st["CapEff"], 16).unwrap();
    let bnd = u64::from_str_radix(&bnd, 16).unwrap();
    assert_eq!(
        eff & !bnd,
        0,
        "{unit}: effective capabilities outside the set"
    );
    pid
}

/// A service that reads the secret when it starts and then runs on; DEP is
/// how it depends on secretsfs.service (Requires or Wants).
const CONSUMER: &str = r#"[Unit]
Description=A service that reads a secret through the mount (DEP=)
DEP=secretsfs.service
After=secretsfs.service

[Service]
Type=exec
ProtectSystem=strict
StandardOutput=truncate:/run/NAME.out
ExecStart=/bin/sh -c 'cat /run/secrets/SECRET/current && exec sleep infinity'
"#;

/// The two consumers: unit name and the dependency it declares.
const CONSUMERS: [(&str, &str); 2] = [("reader-requires", "Requires"), ("reader-wants", "Wants")];

/// Shell lines, run under a copy of the unit's sandbox, each printing
/// `name=result` for a directive that a container can show.
fn probe_script() -> String {
    // x86_64 and aarch64 syscall numbers, for perl's syscall().
    let (ptrace, mmap) = if cfg!(target_arch = "aarch64") {
        (117, 222)
    } else {
        (101, 9)
    };
    [
        // DevicePolicy=closed + DeviceAllow=/dev/fuse: the device it needs.
        "(exec 3<>/dev/fuse) 2>/dev/null && echo fuse=open || echo fuse=denied".to_string(),
        // RestrictNamespaces=yes
        "unshare -m true 2>/dev/null && echo unshare=allowed || echo unshare=denied".into(),
        // LockPersonality=yes
        "setarch linux32 true 2>/dev/null && echo personality=allowed || echo personality=denied"
            .into(),
        // RestrictRealtime=yes
        "chrt -f 1 true 2>/dev/null && echo realtime=allowed || echo realtime=denied".into(),
        // RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
        "perl -MSocket -e 'socket(S, AF_NETLINK, SOCK_RAW, 0) or exit 1' && echo netlink=allowed || echo netlink=denied".into(),
        "perl -MSocket -e 'socket(S, AF_INET, SOCK_STREAM, 0) or exit 1' && echo inet=allowed || echo inet=denied".into(),
        "perl -MSocket -e 'socket(S, AF_UNIX, SOCK_STREAM, 0) or exit 1' && echo unix=allowed || echo unix=denied".into(),
        // SystemCallFilter=@system-service @mount, SystemCallErrorNumber=EPERM:
        // ptrace (in @debug, not allowed) fails with EPERM (1).
        format!("perl -e 'print \"ptrace=\", (syscall({ptrace}, 0, 0, 0, 0) == -1 ? $!+0 : 0), \"\\n\"'"),
        // MemoryDenyWriteExecute=yes: an anonymous W+X mapping fails (EPERM).
        format!("perl -e 'print \"wx_mmap=\", (syscall({mmap}, 0, 4096, 7, 0x22, -1, 0) == -1 ? $!+0 : 0), \"\\n\"'"),
        // RestrictSUIDSGID=yes
        "f=$(mktemp) && { chmod u+s \"$f\" 2>/dev/null && echo setuid_bit=allowed || echo setuid_bit=denied; rm -f \"$f\"; }".into(),
        // UMask=0077
        "echo umask=$(umask)".into(),
        // NoNewPrivileges, the filter and the bounding set, as for the daemon.
        "grep -E '^(NoNewPrivs|Seccomp|CapBnd):' /proc/self/status | tr -d ' \\t' | tr : =".into(),
    ]
    .join("\n")
}

#[test]
fn the_units_under_systemd_as_pid_1_of_a_container() {
    // Booting systemd is heavy and the test bounds its steps (stop < 3 s):
    // no other test's daemon beside it, as when it was a binary of its own.
    let _alone = alone();
    let started = Instant::now();
    let rootfs = rootfs();
    let main_unit = std::fs::read_to_string(repo_file("systemd/secretsfs.service")).unwrap();
    let template = std::fs::read_to_string(repo_file("systemd/secretsfs@.service")).unwrap();
    assert_eq!(
        sandbox_lines(&main_unit),
        sandbox_lines(&template),
        "secretsfs@.service's sandbox differs from secretsfs.service's"
    );

    // The secret the consumer reads, in the host's moto.
    let secret = unique("nspawn");
    create(&secret, "read-in-the-container");

    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc-secretsfs");
    std::fs::create_dir(&etc).unwrap();
    // mlock = true: LimitMEMLOCK= and CAP_IPC_LOCK let it lock its memory.
    // ttl = 1: the kernel's cached attributes of the mount's root expire
    // before systemd restarts a killed daemon (RestartSec=2s), as they have
    // in any daemon that ran a while; a stat of the dead mount then fails.
    std::fs::write(
        etc.join("secretsfs.toml"),
        format!("secrets = [\"{secret}\"]\nttl = 1\nmlock = true\n"),
    )
    .unwrap();
    std::fs::write(
        etc.join("secretsfs.env"),
        format!(
            "AWS_ENDPOINT_URL={}\nAWS_REGION=us-east-1\nAWS_ACCESS_KEY_ID=test\n\
             AWS_SECRET_ACCESS_KEY=test\nAWS_EC2_METADATA_DISABLED=true\n",
            moto_url()
        ),
    )
    .unwrap();
    std::fs::write(
        etc.join("srv-secrets.toml"),
        "local = \"/var/lib/secretsfs/srv-secrets\"\ndemo = true\n",
    )
    .unwrap();
    let mut binds = Vec::new();
    for (name, dep) in CONSUMERS {
        let path = dir.path().join(format!("{name}.service"));
        let text = CONSUMER
            .replace("SECRET", &secret)
            .replace("DEP", dep)
            .replace("NAME", name);
        std::fs::write(&path, text).unwrap();
        binds.push((path, format!("/etc/systemd/system/{name}.service")));
    }
    // The probe: secretsfs.service's sandbox around a shell.
    let probe = dir.path().join("sandbox-probe.service");
    let mut probe_text =
        String::from("[Unit]\nDescription=secretsfs.service's sandbox, probed\n\n[Service]\n");
    for l in sandbox_lines(&main_unit) {
        probe_text.push_str(&l);
        probe_text.push('\n');
    }
    probe_text.push_str(
        "Type=oneshot\nStandardOutput=truncate:/run/sandbox-probe.out\nExecStart=/bin/sh /opt/sandbox-probe.sh\n",
    );
    std::fs::write(&probe, probe_text).unwrap();
    let probe_sh = dir.path().join("sandbox-probe.sh");
    std::fs::write(&probe_sh, probe_script()).unwrap();

    for (host, guest) in [
        (
            PathBuf::from(env!("CARGO_BIN_EXE_secretsfs")),
            "/usr/local/bin/secretsfs",
        ),
        (
            repo_file("systemd/secretsfs.service"),
            "/etc/systemd/system/secretsfs.service",
        ),
        (
            repo_file("systemd/secretsfs@.service"),
            "/etc/systemd/system/secretsfs@.service",
        ),
        (probe, "/etc/systemd/system/sandbox-probe.service"),
        (probe_sh, "/opt/sandbox-probe.sh"),
        (etc, "/etc/secretsfs"),
    ] {
        binds.push((host, guest.to_string()));
    }
    let c = Container::boot(&rootfs, &binds, dir.path().join("console.log"));

    // Booted: systemd answers and has finished starting up.
    let state = c.wait_until(
        "the container's systemd reaches running",
        Duration::from_secs(60),
        "systemctl is-system-running",
        |o| {
            let s = String::from_utf8_lossy(&o.stdout);
            s.trim() == "running" || s.trim() == "degraded"
        },
    );
    assert_eq!(
        state,
        "running",
        "failed units: {}",
        c.ok("systemctl --failed --no-legend --plain")
    );
    let booted = started.elapsed();

    // Starting the consumers starts secretsfs.service first (Requires= or
    // Wants=) and waits for its READY=1 (After=, Type=notify): the read at
    // each consumer's start finds the secret.
    c.ok("systemctl start reader-requires.service reader-wants.service");
    assert_eq!(c.prop("secretsfs.service", "ActiveState"), "active");
    let mut consumer_pids = Vec::new();
    for (name, _) in CONSUMERS {
        c.wait_until(
            &format!("{name} reads the secret"),
            Duration::from_secs(10),
            &format!("cat /run/{name}.out"),
            |o| String::from_utf8_lossy(&o.stdout) == "read-in-the-container",
        );
        let unit = format!("{name}.service");
        assert_eq!(c.prop(&unit, "ActiveState"), "active");
        assert_eq!(c.prop(&unit, "ProtectSystem"), "strict");
        let pid = c.prop(&unit, "MainPID");
        // ProtectSystem=strict is in force in the consumer's namespace.
        let out = c.sh_within(
            &format!("nsenter -t {pid} -m touch /usr/consumer-was-here"),
            Duration::from_secs(20),
        );
        assert!(
            !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Read-only"),
            "{out:?}"
        );
        consumer_pids.push(pid);
    }

    // The directives, on the daemon itself.
    let first_pid = assert_confined(&c, "secretsfs.service", &main_unit);
    let locked: u64 = status_of(&c, &first_pid)["VmLck"]
        .trim_end_matches(" kB")
        .parse()
        .unwrap();
    assert!(
        locked > 1024,
        "mlock = true under the unit: VmLck {locked} kB"
    );
    // A write through the mount: the daemon puts it under its sandbox.
    c.ok(&format!(
        "printf written-in-the-container | tee /run/secrets/{secret}/current >/dev/null"
    ));
    assert_eq!(current_string(&secret), "written-in-the-container");

    // kill -9: systemd restarts the daemon (RestartSec=2s), which detaches
    // the dead mount and mounts again.
    c.ok(&format!("kill -9 {first_pid}"));
    let killed = Instant::now();
    let pid = c.wait_until(
        "systemd restarts the killed daemon",
        Duration::from_secs(30),
        "systemctl show -p MainPID,ActiveState secretsfs.service",
        |o| {
            let s = String::from_utf8_lossy(&o.stdout);
            s.contains("ActiveState=active")
                && !s.contains(&format!("MainPID={first_pid}\n"))
                && !s.contains("MainPID=0\n")
        },
    );
    assert_eq!(c.prop("secretsfs.service", "NRestarts"), "1", "{pid}");
    assert_eq!(
        c.ok(&format!("cat /run/secrets/{secret}/current")),
        "written-in-the-container"
    );
    let recovered = killed.elapsed();
    assert_confined(&c, "secretsfs.service", &main_unit);
    // Requires=: systemd restarted the consumer with the daemon, and it
    // read the secret again at its start.
    assert_ne!(
        c.prop("reader-requires.service", "MainPID"),
        consumer_pids[0]
    );
    c.wait_until(
        "the restarted reader-requires reads the secret",
        Duration::from_secs(10),
        "cat /run/reader-requires.out",
        |o| String::from_utf8_lossy(&o.stdout) == "written-in-the-container",
    );
    // Wants=: the consumer ran on, and its namespace has the new mount.
    assert_eq!(c.prop("reader-wants.service", "MainPID"), consumer_pids[1]);
    c.wait_until(
        "the new mount in reader-wants's namespace",
        Duration::from_secs(10),
        &format!(
            "nsenter -t {} -m cat /run/secrets/{secret}/current",
            consumer_pids[1]
        ),
        |o| String::from_utf8_lossy(&o.stdout) == "written-in-the-container",
    );

    // The sandbox, probed.
    c.ok("systemctl start sandbox-probe.service");
    let probed: std::collections::HashMap<String, String> = c
        .ok("cat /run/sandbox-probe.out")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let want = [
        ("fuse", "open".to_string()),
        ("unshare", "denied".into()),
        ("personality", "denied".into()),
        ("realtime", "denied".into()),
        ("netlink", "denied".into()),
        ("inet", "allowed".into()),
        ("unix", "allowed".into()),
        ("ptrace", libc::EPERM.to_string()),
        ("wx_mmap", libc::EPERM.to_string()),
        ("setuid_bit", "denied".into()),
        ("umask", "0077".into()),
        ("NoNewPrivs", "1".into()),
        ("Seccomp", "2".into()),
        ("CapBnd", expected_cap_bnd(&main_unit)),
    ];
    for (k, v) in want {
        assert_eq!(
            probed.get(k),
            Some(&v),
            "{k} under the unit's sandbox: {probed:?}"
        );
    }

    // systemctl stop: the mount goes at once (and reader-requires with it).
    let stop_ms: u64 = c
        .ok("s=$(date +%s%N); systemctl stop secretsfs.service; e=$(date +%s%N); echo $(((e - s) / 1000000))")
        .parse()
        .unwrap();
    assert!(stop_ms < 3000, "systemctl stop took {stop_ms} ms");
    assert_eq!(c.prop("secretsfs.service", "ActiveState"), "inactive");
    assert_eq!(c.prop("secretsfs.service", "Result"), "success");
    assert_eq!(c.prop("reader-requires.service", "ActiveState"), "inactive");
    assert_eq!(c.prop("reader-wants.service", "ActiveState"), "active");
    assert_eq!(c.ok("grep -c ' /run/secrets ' /proc/mounts || true"), "0");

    // One instance of the template, on a local store.
    c.ok("systemctl start secretsfs@srv-secrets.service");
    assert_eq!(
        c.ok("cat /srv/secrets/demo/api-key/current"),
        "ak_live_0123456789abcdef"
    );
    assert_confined(&c, "secretsfs@srv-secrets.service", &template);
    c.ok("systemctl stop secretsfs@srv-secrets.service");
    assert_eq!(c.prop("secretsfs@srv-secrets.service", "Result"), "success");
    assert_eq!(c.ok("grep -c ' /srv/secrets ' /proc/mounts || true"), "0");

    // systemd took every line of both units (no unknown or ignored ones).
    let complaints =
        c.ok("journalctl -b --no-pager -o cat | grep -E 'secretsfs@?\\.service:[0-9]+:' || true");
    assert!(complaints.is_empty(), "{complaints}");

    eprintln!(
        "container: booted in {booted:?}; kill -9 to answering again {recovered:?}; \
         systemctl stop {stop_ms} ms; whole test {:?}",
        started.elapsed()
    );
}
