//! An operator's first hour without a false alarm (issue 20): start-up
//! refusals are one line with a documented exit status, the SDK's and
//! fuser's noise stays out of the default log, editors log no warning,
//! log lines name files, counters count failures only, every duration
//! takes the same forms, and `ls -lt versions/` orders by creation.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::common::*;
use secretsfs::refusal::{EXIT_CONFIG, EXIT_FAILURE};

/// An instance metadata service that refuses everything (HTTP 403), as a
/// proxy on the path to 169.254.169.254 does; stopped on drop.
struct Imds403 {
    port: u16,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Imds403 {
    fn start() -> Imds403 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (requests, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let thread = std::thread::spawn({
            let (requests, stop) = (requests.clone(), stop.clone());
            move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(mut conn) = conn else { continue };
                    requests.fetch_add(1, Ordering::SeqCst);
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf);
                    let body = "<Error><Code>Forbidden</Code></Error>";
                    let _ = write!(
                        conn,
                        "HTTP/1.1 403 Forbidden\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
            }
        });
        Imds403 {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Imds403 {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A daemon that is expected to refuse to start: killed (and its mount
/// detached) on drop if it does not.
struct Refused {
    status: Option<i32>,
    stderr: String,
}

/// Runs the daemon with only these variables (no AWS configuration of the
/// host, RUST_LOG unset: the default level) and waits for it to exit.
fn refusal<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(
    env: &[(&str, &str)],
    args: &[S],
) -> Refused {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_secretsfs"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("AWS_CONFIG_FILE", home.path().join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.path().join("none"))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: prctl with integer arguments, async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?}: still running after 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Refused {
        status: status.code().or(status.signal().map(|s| -s)),
        stderr,
    }
}

/// The refusal's one line, checked: the style, the status, the needles.
fn one_line(r: &Refused, code: u8, needles: &[&str]) -> String {
    let lines: Vec<&str> = r.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "not one line: {}", r.stderr);
    let line = lines[0];
    assert!(line.starts_with("secretsfs: error: "), "style: {line}");
    assert_eq!(r.status, Some(code as i32), "{line}");
    for n in needles {
        assert!(line.contains(n), "'{n}' missing from: {line}");
    }
    line.to_string()
}

#[test]
fn with_an_imds_answering_403_no_region_and_no_credentials_are_one_line_each() {
    let imds = Imds403::start();
    let url = imds.url();
    let mnt = tempfile::tempdir().unwrap();
    let mp = mnt.path().to_str().unwrap();
    let env = [("AWS_EC2_METADATA_SERVICE_ENDPOINT", url.as_str())];
    let r = refusal(&env, &[mp]);
    one_line(
        &r,
        EXIT_CONFIG,
        &[
            "no AWS region",
            "instance metadata service",
            "forbidden",
            "AWS_REGION",
        ],
    );
    assert!(imds.requests.load(Ordering::SeqCst) > 0, "IMDS never asked");
    let env = [
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", url.as_str()),
        ("AWS_REGION", "eu-west-1"),
    ];
    let r = refusal(&env, &[mp]);
    one_line(
        &r,
        EXIT_CONFIG,
        &["no AWS credentials", "forbidden", "AWS_PROFILE"],
    );
}

#[test]
fn usage_and_configuration_errors_exit_2_in_one_style_and_other_failures_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mnt = dir.path().join("mnt");
    let (s, m) = (store.to_str().unwrap(), mnt.to_str().unwrap());
    let local = |extra: &[&str]| -> Vec<String> {
        let mut a = vec!["--local".to_string(), s.to_string()];
        a.extend(extra.iter().map(|e| e.to_string()));
        a
    };
    let r = refusal(&[], &local(&["--tll", "60", m]));
    one_line(&r, EXIT_CONFIG, &["'--tll'", "did you mean '--ttl'?"]);
    let r = refusal(&[], &local(&["-o", "ttl=60,prefx=prod/", m]));
    one_line(&r, EXIT_CONFIG, &["'prefx'", "did you mean 'prefix'?"]);
    let r = refusal(&[], &local(&["--ttl", "0", m]));
    one_line(&r, EXIT_CONFIG, &["ttl", "1s"]);
    let r = refusal(&[], &local(&["--ttl", "5x", m]));
    one_line(&r, EXIT_CONFIG, &["ttl", "'5x'", "30m"]);
    let r = refusal(&[], &local(&[]));
    one_line(&r, EXIT_CONFIG, &["<MOUNTPOINT>"]);
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "ttl = 60\nprefx = \"prod/\"\n").unwrap();
    let r = refusal(&[], &local(&["--config", config.to_str().unwrap(), m]));
    one_line(&r, EXIT_CONFIG, &["line 2", "did you mean 'prefix'?"]);
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let r = refusal(&[], &local(&[file.to_str().unwrap()]));
    one_line(&r, EXIT_CONFIG, &["not a directory"]);
    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("x"), "").unwrap();
    let r = refusal(&[], &local(&[full.to_str().unwrap()]));
    one_line(&r, EXIT_CONFIG, &["not empty", "nonempty"]);

    // A store another daemon holds: that may pass, so systemd may retry.
    std::fs::create_dir_all(&store).unwrap();
    let _first = Mount::local(&store).start();
    let r = refusal(&[], &local(&[m]));
    one_line(&r, EXIT_FAILURE, &["in use"]);
}

#[test]
fn the_units_do_not_restart_a_configuration_error() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for unit in ["systemd/secretsfs.service", "systemd/secretsfs@.service"] {
        let text = std::fs::read_to_string(root.join(unit)).unwrap();
        assert!(
            text.lines()
                .any(|l| l.trim() == format!("RestartPreventExitStatus={EXIT_CONFIG}")),
            "{unit}"
        );
        assert!(text.contains("Restart=on-failure"), "{unit}");
    }
}

#[test]
fn five_minutes_is_a_duration_in_flags_options_and_the_config_file() {
    let store = tempfile::tempdir().unwrap();
    let config = store.path().join("c.toml");
    std::fs::write(&config, "ttl = \"5m\"\nstart_jitter = \"0s\"\n").unwrap();
    let data = store.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let m = Mount::local(&data)
        .args(["--config", config.to_str().unwrap(), "-o", "max_stale=5m"])
        .args(["--on-change", "true", "--watch", "5m"])
        .arg("--demo")
        .start();
    assert!(m.is_mounted());
    drop(m);
    let m = Mount::local(&data).args(["--ttl", "5m"]).start();
    assert!(m.is_mounted());
}

/// A local mount logging at the default level (RUST_LOG unset is the
/// default filter; the harness sets RUST_LOG, so it is given explicitly).
fn quiet_demo(store: &Path) -> Mount {
    Mount::local(store)
        .arg("--demo")
        .env("RUST_LOG", secretsfs::logging::DEFAULT_FILTER)
        .start()
}

/// The log's lines after "mounted" that are not a version stored.
fn unexpected_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| !l.contains(" mounted ") && !l.contains("new version stored"))
        .map(str::to_string)
        .collect()
}

#[test]
fn sed_i_and_vim_on_a_mount_log_nothing_but_the_versions_stored() {
    let store = tempfile::tempdir().unwrap();
    let m = quiet_demo(store.path());
    let dir = m.p("demo/db/password");
    for cmd in [
        "sed -i s/$/x/ current",
        "vim -Es -u DEFAULTS -i NONE -c '%s/$/y/' -c wq current",
        "vim -Es -u NONE -i NONE -c 'set backup backupskip=' -c '%s/$/z/' -c wq current",
    ] {
        let out = sh(cmd, &dir);
        assert!(out.status.success(), "{cmd}: {out:?}");
    }
    // Also with every line at info (fuser's own warnings included).
    let log = m.log_text();
    assert_eq!(log.matches("new version stored").count(), 3, "{log}");
    assert!(unexpected_lines(&log).is_empty(), "{log}");
    let store2 = tempfile::tempdir().unwrap();
    let m2 = Mount::local(store2.path())
        .arg("--demo")
        .env("RUST_LOG", "info")
        .start();
    let out = sh("sed -i s/$/x/ current", &m2.p("demo/db/password"));
    assert!(out.status.success(), "{out:?}");
    let log = m2.log_text();
    for noise in ["Not Implemented", "INodeNo", "ino:", "WARN", "ERROR"] {
        assert!(!log.contains(noise), "{noise}: {log}");
    }
}

#[test]
fn the_local_store_never_gives_the_write_rate_warning() {
    let store = tempfile::tempdir().unwrap();
    let m = quiet_demo(store.path());
    for i in 0..6 {
        write_file(
            &m.p("demo/db/password/current"),
            format!("v{i}").as_bytes(),
            libc::O_WRONLY | libc::O_TRUNC,
        )
        .unwrap();
    }
    let log = m.log_text();
    assert_eq!(log.matches("new version stored").count(), 6, "{log}");
    assert!(!log.contains("more than once in 10 minutes"), "{log}");
    assert!(unexpected_lines(&log).is_empty(), "{log}");
}

#[test]
fn on_aws_a_second_write_within_10_minutes_warns_once_saying_what_to_do() {
    let s = unique("polish-rate");
    create(&s, "v0");
    let m = Mount::aws().args(["--secret", &s]).start();
    for i in 1..=4 {
        write_file(
            &m.p(&format!("{s}/current")),
            format!("v{i}").as_bytes(),
            libc::O_WRONLY | libc::O_TRUNC,
        )
        .unwrap();
    }
    let log = m.log_text();
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("more than once in 10 minutes"))
        .collect();
    assert_eq!(warned.len(), 1, "{log}");
    assert!(
        warned[0].contains(&s) && warned[0].contains("write the final value once"),
        "{log}"
    );
}

#[test]
fn removing_current_logs_the_files_path() {
    let store = tempfile::tempdir().unwrap();
    let m = quiet_demo(store.path());
    let err = std::fs::remove_file(m.p("demo/db/password/current")).unwrap_err();
    assert!(
        matches!(errno_of(&err), libc::EPERM | libc::EACCES),
        "{err}"
    );
    let log = m.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("op=\"unlink\""))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("path=\"demo/db/password/current\""), "{line}");
}

#[test]
fn not_found_lookups_of_sed_mkdir_and_create_leave_api_errors_at_zero() {
    let store = tempfile::tempdir().unwrap();
    let m = quiet_demo(store.path());
    let out = sh("sed -i s/$/x/ current", &m.p("demo/db/password"));
    assert!(out.status.success(), "{out:?}");
    std::fs::create_dir(m.p("polish-new")).unwrap();
    write_file(
        &m.p("polish-new/current"),
        b"x",
        libc::O_WRONLY | libc::O_CREAT,
    )
    .unwrap();
    assert!(std::fs::metadata(m.p("no-such-secret/current")).is_err());
    let stats = m.stats();
    assert_eq!(stats["api_errors"], 0, "{stats}");
    assert!(stats["not_found"].as_u64().unwrap() >= 3, "{stats}");
    let metrics = String::from_utf8(m.read(".secretsfs/metrics").unwrap()).unwrap();
    assert!(
        metrics.contains("\nsecretsfs_api_errors_total 0\n"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("\nsecretsfs_api_not_found_total 0\n"),
        "{metrics}"
    );
}

/// `versions/` as `ls -t` orders it (newest first), with each entry's
/// `user.secretsfs.stages`.
fn versions_by_mtime(dir: &Path) -> Vec<(String, String)> {
    let mut entries: Vec<(SystemTime, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let mtime = e.metadata().unwrap().modified().unwrap();
            (mtime, e.file_name().into_string().unwrap())
        })
        .collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    let out = Command::new("ls").arg("-t").arg(dir).output().unwrap();
    let ls_t: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let ours: Vec<String> = entries.iter().map(|(_, n)| n.clone()).collect();
    assert_eq!(ls_t, ours, "ls -t and the mtimes agree");
    ours.into_iter()
        .map(|n| {
            let stages = xattr(&dir.join(&n), "user.secretsfs.stages");
            (n, stages)
        })
        .collect()
}

fn xattr(path: &Path, name: &str) -> String {
    let p = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 1024];
    // SAFETY: NUL-terminated strings and a buffer of the length given.
    let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(
        len >= 0,
        "getxattr {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    buf.truncate(len as usize);
    String::from_utf8(buf).unwrap()
}

/// Three writes, then `versions/` newest first is the order of creation,
/// and the labels are where `getfattr` finds them.
fn check_versions_order(m: &Mount, secret: &str, first: &str) {
    let dir = m.p(&format!("{secret}/versions"));
    let mut made = vec![first.to_string()];
    for i in 0..3 {
        // Creation times a clear step apart (moto keeps whole seconds).
        std::thread::sleep(Duration::from_millis(1100));
        write_file(
            &m.p(&format!("{secret}/current")),
            format!("value {i}").as_bytes(),
            libc::O_WRONLY | libc::O_TRUNC,
        )
        .unwrap();
        let listed = ls(&dir);
        let new: Vec<&String> = listed.iter().filter(|n| !made.contains(n)).collect();
        assert_eq!(new.len(), 1, "{listed:?}");
        made.push(new[0].clone());
    }
    let by_mtime = versions_by_mtime(&dir);
    let newest_first: Vec<String> = made.iter().rev().cloned().collect();
    let names: Vec<String> = by_mtime.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, newest_first, "ls -t orders by creation");
    assert_eq!(by_mtime[0].1, "AWSCURRENT");
    assert_eq!(by_mtime[1].1, "AWSPREVIOUS");
    assert_eq!(by_mtime[3].1, "", "no label");
}

#[test]
fn ls_lt_versions_orders_by_creation_on_the_local_store() {
    let store = tempfile::tempdir().unwrap();
    let m = quiet_demo(store.path());
    let dir = m.p("demo/api-key/versions");
    let first = ls(&dir);
    assert_eq!(first.len(), 1, "{first:?}");
    check_versions_order(&m, "demo/api-key", &first[0]);
}

/// moto answers ListSecretVersionIds with the time of the call as every
/// version's CreatedDate, so the order is checked on the local store (and
/// the date's mapping by a unit test of the AWS store); the labels are
/// checked here.
#[test]
fn versions_carry_their_labels_as_an_xattr_on_aws() {
    let s = unique("polish-versions");
    let first = create(&s, "v0");
    let second = put(&s, "v1");
    let m = Mount::aws().args(["--secret", &s]).start();
    let dir = m.p(&format!("{s}/versions"));
    assert_eq!(
        xattr(&dir.join(&second), "user.secretsfs.stages"),
        "AWSCURRENT"
    );
    assert_eq!(
        xattr(&dir.join(&first), "user.secretsfs.stages"),
        "AWSPREVIOUS"
    );
    let names = list_xattrs(&dir.join(&first));
    assert_eq!(names, ["user.secretsfs.stages"]);
    assert!(list_xattrs(&m.p(&format!("{s}/current"))).is_empty());
}

fn list_xattrs(path: &Path) -> Vec<String> {
    let p = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let mut buf = vec![0u8; 1024];
    // SAFETY: a NUL-terminated path and a buffer of the length given.
    let len = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(len >= 0, "{}", std::io::Error::last_os_error());
    buf.truncate(len as usize);
    buf.split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8(n.to_vec()).unwrap())
        .collect()
}
