//! Access rules by caller (`[[access]]`) and the access log on real mounts
//! against moto: a rule allowing one systemd unit (a cgroup the test makes
//! in the unified hierarchy, the reader moved into it before it execs) or
//! one executable (a copy of `cat` at an allowed path) lets that caller
//! read every file of the secret and a rendered file that reads it, and
//! everyone else, root included, gets EACCES; a hidden secret is left out
//! of others' listings; a read-only mount with rules still checks them.
//! The access log is JSON lines naming the caller, never a value, and a
//! storm of opens is a bounded number of lines. (A vanished pid cannot be
//! raced on a mount: the kernel holds the caller while it waits for the
//! open; src/access's unit tests refuse one.)

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::*;

/// A config file, a mountpoint, and a directory of allowed executables.
pub(super) struct Setup {
    pub(super) dir: tempfile::TempDir,
}

impl Setup {
    pub(super) fn new(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(dir.path().join("mnt")).unwrap();
        std::fs::create_dir(dir.path().join("allowed")).unwrap();
        for tool in ["cat", "ls"] {
            let from = std::fs::canonicalize(format!("/bin/{tool}")).unwrap();
            std::fs::copy(from, dir.path().join("allowed").join(tool)).unwrap();
        }
        let s = Self { dir };
        s.write(
            "c.toml",
            &config.replace("ALLOWED", &s.allowed().display().to_string()),
        );
        // The template every config names; a test may write its own.
        s.write("t.j2", "static\n");
        s
    }
    pub(super) fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text).unwrap();
    }
    /// The allowed executables' directory, as /proc/PID/exe names it.
    pub(super) fn allowed(&self) -> PathBuf {
        std::fs::canonicalize(self.dir.path().join("allowed")).unwrap()
    }
    pub(super) fn tool(&self, name: &str) -> String {
        self.allowed().join(name).display().to_string()
    }
    pub(super) fn log(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }
    pub(super) fn mount(&self, args: &[&str]) -> Mount {
        let config = self.dir.path().join("c.toml").display().to_string();
        Mount::aws()
            .at(&self.dir.path().join("mnt"))
            .args(["--config", &config])
            .args(args.iter().copied())
            .start()
    }
    /// A mount of the secrets under `u/` with the access log in `log()`.
    pub(super) fn mount_logged(&self, u: &str) -> Mount {
        let log = self.log().display().to_string();
        self.mount(&["--prefix", &format!("{u}/"), "--access-log", &log])
    }
}

/// A cgroup that looks like a systemd service's (`system.slice/NAME`) in
/// the unified (v2) hierarchy; removed on drop.
struct Unit {
    name: String,
    dir: PathBuf,
}

impl Unit {
    fn new(name: &str) -> Self {
        let root = cgroup2_root();
        let dir = root.join("system.slice").join(name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Self {
            name: name.into(),
            dir,
        }
    }

    /// Runs `cmd` moved into this unit before it execs.
    fn run(&self, cmd: &[&str]) -> Output {
        let procs = self.dir.join("cgroup.procs");
        let script = format!("echo $$ > '{}' && exec \"$@\"", procs.display());
        Command::new("/bin/sh")
            .args(["-c", &script, "sh"])
            .args(cmd)
            .output()
            .unwrap()
    }
}

impl Drop for Unit {
    fn drop(&mut self) {
        // Empty once its processes are reaped; rmdir may lag them a little.
        wait_until(Duration::from_secs(5), || {
            std::fs::remove_dir(&self.dir).is_ok()
        });
    }
}

/// Where the unified cgroup hierarchy is mounted.
fn cgroup2_root() -> PathBuf {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    table
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split_whitespace().next() == Some("cgroup2"))
                .then(|| PathBuf::from(left.split_whitespace().nth(4).unwrap()))
        })
        .expect("a cgroup2 hierarchy is mounted")
}

pub(super) fn denied(out: &Output) -> bool {
    !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Permission denied")
}

pub(super) fn cat(m: &Mount, rel: &str) -> Output {
    Command::new("/bin/cat").arg(m.p(rel)).output().unwrap()
}

/// A secret with two versions (a JSON object), so that it has every kind
/// of file: current, previous, versions/<id>, json/<key>, stages/<label>.
fn secret_with_history(name: &str) -> (String, String) {
    let old = create(name, r#"{"pw":"0ld-Acc3ss-Val"}"#);
    let new = put(name, r#"{"pw":"N3w-Acc3ss-Val"}"#);
    (old, new)
}

fn files_of(s: &str, old: &str) -> Vec<String> {
    vec![
        format!("{s}/current"),
        format!("{s}/previous"),
        format!("{s}/versions/{old}"),
        format!("{s}/json/pw"),
        format!("{s}/stages/AWSCURRENT"),
        ".secretsfs/rendered/t".to_string(),
    ]
}

pub(super) fn config(pattern: &str, cond: &str, extra: &str) -> String {
    format!(
        "[[template]]\nname = \"t\"\nsource = \"t.j2\"\n\n\
         [[access]]\npattern = \"{pattern}\"\n{cond}\n{extra}\n"
    )
}

#[test]
fn only_the_allowed_unit_opens_every_file_of_the_secret_and_its_rendered_file() {
    let u = unique("acu");
    let s = format!("{u}/prod/tls/key");
    let (old, _) = secret_with_history(&s);
    let unit = Unit::new(&format!("{u}.service"));
    let setup = Setup::new(&config(&s, &format!("unit = \"{}\"", unit.name), ""));
    setup.write("t.j2", &format!("key={{{{ secret(\"{s}\") }}}}\n"));
    let m = setup.mount(&["--prefix", &format!("{u}/")]);

    for f in files_of(&s, &old) {
        let path = m.p(&f).display().to_string();
        let inside = unit.run(&["/bin/cat", &path]);
        assert!(inside.status.success(), "{f} inside the unit: {inside:?}");
        assert!(!inside.stdout.is_empty(), "{f}");
        let outside = cat(&m, &f);
        assert!(denied(&outside), "{f} outside the unit (root): {outside:?}");
    }
    // A stat is not an open: the names stay visible (no hide).
    assert!(m.p(&format!("{s}/current")).exists());
    assert_eq!(m.stats()["access_denied"], 6);
    let log = m.log_text();
    assert!(!log.contains("Acc3ss-Val"), "{log}");
}

#[test]
fn a_copy_of_cat_at_the_allowed_path_reads_and_the_system_cat_does_not() {
    let u = unique("ace");
    let s = format!("{u}/prod/db/password");
    create(&s, "Exe-Rul3d-Value");
    let other = format!("{u}/prod/db/other");
    create(&other, "free");
    let setup = Setup::new(&config(&s, "exe = \"ALLOWED/*\"", "hide = true"));
    let m = setup.mount(&["--prefix", &format!("{u}/")]);
    let current = m.p(&format!("{s}/current")).display().to_string();

    let ok = Command::new(setup.tool("cat"))
        .arg(&current)
        .output()
        .unwrap();
    assert_eq!(ok.stdout, b"Exe-Rul3d-Value", "{ok:?}");
    assert!(denied(&cat(&m, &format!("{s}/current"))));
    // A secret no rule names is left to file modes.
    assert_eq!(cat(&m, &format!("{other}/current")).stdout, b"free");
    // hide: the name is listed to the allowed ls only.
    let dir = m.p(&format!("{u}/prod/db")).display().to_string();
    let listed = |ls: &str| {
        let out = Command::new(ls).arg(&dir).output().unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(listed("/bin/ls"), "other\n");
    assert_eq!(listed(&setup.tool("ls")), "other\npassword\n");
    // A write needs an allowed caller too.
    let write = format!("printf x > {current}");
    let out = Command::new("/bin/sh")
        .args(["-c", &write])
        .output()
        .unwrap();
    assert!(denied(&out), "{out:?}");
    // So does a promotion, which is a rename, not an open.
    put_staged(&s, "Staged-V4lue", "AWSPENDING");
    let secret_dir = m.p(&s);
    let out = Command::new("/bin/mv")
        .args(["stages/AWSPENDING", "current"])
        .current_dir(&secret_dir)
        .output()
        .unwrap();
    assert!(denied(&out), "{out:?}");
    assert_eq!(current_string(&s), "Exe-Rul3d-Value");
}

#[test]
fn a_read_only_mount_with_rules_still_checks_every_open() {
    let u = unique("acr");
    let s = format!("{u}/ro/secret");
    create(&s, "R0-Rul3d");
    let setup = Setup::new(&config(&s, "exe = \"ALLOWED/*\"", ""));
    let m = setup.mount(&["--prefix", &format!("{u}/"), "--read-only"]);
    let current = m.p(&format!("{s}/current")).display().to_string();
    for _ in 0..3 {
        let ok = Command::new(setup.tool("cat"))
            .arg(&current)
            .output()
            .unwrap();
        assert_eq!(ok.stdout, b"R0-Rul3d", "{ok:?}");
        // After an allowed read the pages are cached: still refused.
        assert!(denied(&cat(&m, &format!("{s}/current"))));
    }
}

/// The access log's lines, parsed (each must be a JSON object).
pub(super) fn log_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn the_access_log_names_who_opened_and_wrote_and_never_a_value() {
    let u = unique("acl");
    let s = format!("{u}/prod/db/password");
    create(&s, "L0gged-N0t-Val");
    let w = format!("{u}/prod/db/written");
    create(&w, "Wr1tten-Old-Val");
    let unit = Unit::new(&format!("{u}.service"));
    let setup = Setup::new(&config(&s, "exe = \"ALLOWED/*\"", ""));
    let log = setup.log();
    let m = setup.mount_logged(&u);
    let current = m.p(&format!("{s}/current")).display().to_string();
    let ok = unit.run(&[&setup.tool("cat"), &current]);
    assert!(ok.status.success(), "{ok:?}");
    assert!(denied(&cat(&m, &format!("{s}/current"))));
    let dir = m.p(&w).display().to_string();
    sh_ok("printf Wr1tten-New-Val > current", Path::new(&dir));
    assert_eq!(current_string(&w), "Wr1tten-New-Val");

    let mut lines = Vec::new();
    let complete = wait_until(Duration::from_secs(10), || {
        lines = log_lines(&log);
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "write committed")
    });
    assert!(complete, "{lines:#?}");
    let find = |result: &str, secret: &str| {
        lines
            .iter()
            .map(|l| &l["fields"])
            .find(|f| f["result"] == result && f["secret"] == secret)
            .unwrap_or_else(|| panic!("no {result} line for {secret}: {lines:#?}"))
            .clone()
    };
    let allowed = find("allowed", &s);
    assert_eq!(allowed["exe"], setup.tool("cat"));
    assert_eq!(allowed["unit"], unit.name);
    assert_eq!(allowed["uid"], 0);
    assert_eq!(allowed["file"], format!("{s}/current"));
    assert!(allowed["pid"].as_u64().unwrap() > 1);
    let refused = find("denied", &s);
    assert_eq!(refused["exe"], "/usr/bin/cat");
    let committed = find("committed", &w);
    let version = committed["version"].as_str().unwrap();
    assert_eq!(version_ids(&w).iter().filter(|v| *v == version).count(), 1);
    assert_eq!(committed["file"], format!("{w}/current"));
    // The opens of the unruled secret to write it are logged too.
    assert!(lines.iter().all(|l| l["fields"]["pid"].is_u64()));
    let text = std::fs::read_to_string(&log).unwrap() + &m.log_text();
    for v in ["L0gged-N0t-Val", "Wr1tten-Old-Val", "Wr1tten-New-Val"] {
        assert!(!text.contains(v), "{v} in the logs: {text}");
    }
}

#[test]
fn a_storm_of_opens_by_one_process_is_a_bounded_number_of_lines() {
    let u = unique("acs");
    let s = format!("{u}/hot");
    create(&s, "St0rm-Val");
    let setup = Setup::new(&config(&s, "user = 0", ""));
    let log = setup.log();
    let m = setup.mount_logged(&u);
    let path = m.p(&format!("{s}/current"));
    for _ in 0..10_000 {
        drop(std::fs::File::open(&path).unwrap());
    }
    // The first open's line; a count line only after a minute.
    assert!(wait_until(Duration::from_secs(5), || !log_lines(&log).is_empty()));
    std::thread::sleep(Duration::from_millis(200));
    let lines = log_lines(&log);
    assert!(lines.len() <= 2, "{lines:#?}");
    assert_eq!(lines[0]["fields"]["pid"], std::process::id());
}

fn sighup(m: &Mount) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(m.pid() as i32, libc::SIGHUP) };
}

#[test]
fn sighup_applies_new_rules_and_a_read_only_mount_without_them_refuses_them() {
    let u = unique("ach");
    let s = format!("{u}/reload/secret");
    create(&s, "Rel0ad-Val");
    let rule = config(&s, "exe = \"ALLOWED/*\"", "");
    // Read-write: the new rule applies at once.
    let rw = Setup::new("");
    let m = rw.mount(&["--prefix", &format!("{u}/")]);
    assert!(cat(&m, &format!("{s}/current")).status.success());
    rw.write(
        "c.toml",
        &rule.replace("ALLOWED", &rw.allowed().display().to_string()),
    );
    sighup(&m);
    let refused = || denied(&cat(&m, &format!("{s}/current")));
    assert!(
        wait_until(Duration::from_secs(10), refused),
        "{}",
        m.log_text()
    );
    // Read-only, started without rules (no-open mode): refused, one line.
    let ro = Setup::new("");
    let m = ro.mount(&["--prefix", &format!("{u}/"), "--read-only"]);
    ro.write(
        "c.toml",
        &rule.replace("ALLOWED", &ro.allowed().display().to_string()),
    );
    sighup(&m);
    let said = || m.log_text().contains("access rules not reloaded");
    assert!(
        wait_until(Duration::from_secs(10), said),
        "{}",
        m.log_text()
    );
    assert!(m.log_text().contains("need a restart"));
    assert!(cat(&m, &format!("{s}/current")).status.success());
}
