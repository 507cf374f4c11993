//! The RPM for Amazon Linux 2023 and the RHEL family (packaging/build-rpm),
//! checked with the `rpm` tool (Debian's `rpm` package): its files and
//! modes, dependencies, config files and scriptlets, installed into a
//! scratch root (never into this machine) and run from there. Built once
//! for all the tests of this file; the release binary is the one the .deb
//! test builds too (cargo builds it once).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Amazon Linux 2023 and EL9 ship glibc 2.34: a binary that needs a later
/// symbol version would not install there.
const OLDEST_GLIBC: (u32, u32) = (2, 34);

/// Every file of the package, with the mode `rpm -qlv` shows.
const FILES: [(&str, &str); 12] = [
    ("/etc/secretsfs/secretsfs.env", "-rw-------"),
    ("/etc/secretsfs/secretsfs.toml", "-rw-r--r--"),
    ("/usr/bin/secretsfs", "-rwxr-xr-x"),
    ("/usr/lib/systemd/system/secretsfs.service", "-rw-r--r--"),
    ("/usr/lib/systemd/system/secretsfs@.service", "-rw-r--r--"),
    (
        "/usr/share/bash-completion/completions/secretsfs",
        "-rw-r--r--",
    ),
    ("/usr/share/doc/secretsfs/CHANGELOG.md", "-rw-r--r--"),
    ("/usr/share/doc/secretsfs/README.md", "-rw-r--r--"),
    (
        "/usr/share/fish/vendor_completions.d/secretsfs.fish",
        "-rw-r--r--",
    ),
    ("/usr/share/licenses/secretsfs/LICENSE", "-rw-r--r--"),
    ("/usr/share/man/man1/secretsfs.1.gz", "-rw-r--r--"),
    ("/usr/share/zsh/site-functions/_secretsfs", "-rw-r--r--"),
];

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("{cmd:?} could not start: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The package, built once per test run into this test binary's scratch
/// directory under target/.
fn package() -> &'static Path {
    static RPM: OnceLock<PathBuf> = OnceLock::new();
    RPM.get_or_init(|| {
        for (tool, how) in [
            (
                "cargo-generate-rpm",
                "cargo install cargo-generate-rpm --locked",
            ),
            ("rpm", "apt-get install rpm"),
        ] {
            let found = Command::new(tool)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success());
            assert!(
                found,
                "{tool} is missing: run ./run-tests (it installs it) or `{how}`"
            );
        }
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rpm");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let rpm = dir.join("secretsfs.rpm");
        // A release build takes both cores for minutes (shared with the
        // .deb's): no other test's daemon beside it (some bound timings).
        let _alone = crate::common::alone();
        let out = run(Command::new(format!("{ROOT}/packaging/build-rpm"))
            .arg("--output")
            .arg(&rpm));
        assert!(
            out.status.success(),
            "packaging/build-rpm: {}",
            text(&out.stderr)
        );
        rpm
    })
}

/// `rpm -qp ARGS package`: its standard output. rpm opens a database even
/// to query a file: a scratch one, not this machine's.
fn query(args: &[&str]) -> String {
    let db = package().with_file_name("db");
    let out = run(Command::new("rpm")
        .arg("--dbpath")
        .arg(&db)
        .arg("-qp")
        .args(args)
        .arg(package()));
    assert!(
        out.status.success(),
        "rpm -qp {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn rpm_names_the_crate_version_release_1_and_x86_64() {
    let fields = query(&["--qf", "%{NAME} %{VERSION} %{RELEASE} %{ARCH} %{LICENSE}"]);
    assert_eq!(fields, format!("secretsfs {VERSION} 1 x86_64 MIT"));
}

#[test]
fn rpm_lists_every_file_at_its_path_with_its_mode() {
    let listing = query(&["-lv"]);
    let mut got: Vec<(String, String)> = listing
        .lines()
        .map(|l| {
            let f: Vec<_> = l.split_whitespace().collect();
            (f.last().unwrap().to_string(), f[0].to_string())
        })
        .collect();
    got.sort();
    let want: Vec<_> = FILES
        .iter()
        .map(|(p, m)| (p.to_string(), m.to_string()))
        .collect();
    assert_eq!(got, want, "{listing}");
    // Owned by root, as rpm installs them.
    assert!(
        listing.lines().all(|l| l.contains(" root     root ")),
        "{listing}"
    );
}

#[test]
fn rpm_requires_fuse3_the_ca_bundle_and_a_glibc_that_al2023_has() {
    let requires = query(&["--requires"]);
    let names: Vec<_> = requires.lines().map(str::trim).collect();
    for need in ["fuse3", "ca-certificates", "/bin/sh"] {
        assert!(names.contains(&need), "no {need} in:\n{requires}");
    }
    // The binary's own needs, found in it, so that dnf refuses a host
    // whose glibc is too old rather than installing a binary that fails.
    let glibc: Vec<(u32, u32)> = names
        .iter()
        .filter_map(|n| n.strip_prefix("libc.so.6(GLIBC_"))
        .filter_map(|v| {
            let mut parts = v.trim_end_matches(")(64bit)").split('.');
            Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
        })
        .collect();
    assert!(!glibc.is_empty(), "{requires}");
    let newest = glibc.iter().max().unwrap();
    assert!(
        *newest <= OLDEST_GLIBC,
        "the binary needs GLIBC_{}.{}, newer than Amazon Linux 2023's {}.{}",
        newest.0,
        newest.1,
        OLDEST_GLIBC.0,
        OLDEST_GLIBC.1
    );
}

#[test]
fn rpm_keeps_both_settings_files_as_noreplace_config_files() {
    let config = query(&["--configfiles"]);
    assert_eq!(
        config,
        "/etc/secretsfs/secretsfs.env\n/etc/secretsfs/secretsfs.toml\n"
    );
    // c: %config, n: noreplace (an edited file is kept on upgrade).
    let flags = query(&["--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\n]"]);
    for file in ["secretsfs.env", "secretsfs.toml"] {
        let line = format!("cn /etc/secretsfs/{file}");
        assert!(flags.lines().any(|l| l == line), "{flags}");
    }
    let docs = query(&["--docfiles"]);
    for doc in ["README.md", "CHANGELOG.md", "secretsfs.1.gz", "LICENSE"] {
        assert!(docs.contains(doc), "{docs}");
    }
}

/// Runs `script` with argument `arg` as rpm would, with a systemctl that
/// only records its arguments, in a private mount namespace whose /run
/// says whether systemd runs: what systemctl was asked, one call a line.
fn scriptlet_calls(script: &str, arg: &str, systemd_running: bool) -> String {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("bin")).unwrap();
    let fake = d.join("bin/systemctl");
    let record = format!("#!/bin/sh\necho \"$*\" >> {}/calls\n", d.display());
    std::fs::write(&fake, record).unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(d.join("script"), script).unwrap();
    let systemd = if systemd_running {
        "mkdir -p /run/systemd/system"
    } else {
        "true"
    };
    let wrapper = format!(
        "mount -t tmpfs tmpfs /run && {systemd} && PATH={d}/bin:$PATH sh -eu {d}/script {arg}",
        d = d.display()
    );
    let out = run(Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &wrapper])
        .stdin(Stdio::null()));
    assert!(out.status.success(), "{script}: {}", text(&out.stderr));
    std::fs::read_to_string(d.join("calls")).unwrap_or_default()
}

#[test]
fn rpm_scriptlets_reload_units_and_never_enable_start_or_restart() {
    let scripts = query(&["--scripts"]);
    let code: Vec<_> = scripts
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    for word in code
        .iter()
        .flat_map(|l| l.split(|c: char| c.is_whitespace() || c == '\''))
    {
        assert!(
            ![
                "enable",
                "start",
                "restart",
                "try-restart",
                "reload-or-restart",
                "preset"
            ]
            .contains(&word),
            "the scriptlets say `{word}`:\n{scripts}"
        );
    }
    let post = query(&["--qf", "%{POSTIN}"]);
    let preun = query(&["--qf", "%{PREUN}"]);
    let postun = query(&["--qf", "%{POSTUN}"]);
    // rpm passes the number of versions left installed: 1 on install, 2
    // during an upgrade, 0 on removal.
    let calls = |script: &str, arg: &str| scriptlet_calls(script, arg, true);
    assert_eq!(calls(&post, "1"), "daemon-reload\n");
    assert_eq!(calls(&post, "2"), "daemon-reload\n");
    assert_eq!(calls(&preun, "1"), "", "an upgrade stops nothing");
    assert_eq!(
        calls(&preun, "0"),
        "--no-reload disable --now secretsfs.service secretsfs@.service\n\
         stop secretsfs@*.service\n"
    );
    assert_eq!(calls(&postun, "1"), "daemon-reload\n");
    assert_eq!(calls(&postun, "0"), "daemon-reload\n");
    // Without systemd running (a container, a chroot), nothing is called.
    for (script, arg) in [(&post, "1"), (&preun, "0"), (&postun, "0")] {
        assert_eq!(scriptlet_calls(script, arg, false), "", "{script}");
    }
}

#[test]
fn rpm_installs_into_a_scratch_root_and_its_binary_runs() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_str().unwrap();
    let out = run(Command::new("rpm").args(["--root", r, "--initdb"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(Command::new("rpm")
        .args(["-i", "--root", r, "--nodeps", "--noscripts"])
        .arg(package()));
    assert!(out.status.success(), "rpm -i: {}", text(&out.stderr));
    // Every file as the package describes it (digest, size, mode, owner).
    let out = run(Command::new("rpm").args(["--root", r, "-V", "--nodeps", "secretsfs"]));
    assert!(
        out.status.success(),
        "rpm -V: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let binary = root.path().join("usr/bin/secretsfs");
    let out = run(Command::new(&binary).arg("--version"));
    assert!(
        text(&out.stdout).starts_with(&format!("secretsfs {VERSION}")),
        "{out:?}"
    );
    // Stripped, as the .deb's binary (and rpmbuild's) is.
    let readelf = run(Command::new("readelf").args(["-S", "--wide"]).arg(&binary));
    let sections = text(&readelf.stdout);
    assert!(sections.contains(".text"), "{readelf:?}");
    for section in [".debug_info", ".symtab"] {
        assert!(!sections.contains(section), "the binary has {section}");
    }
    for unit in ["secretsfs.service", "secretsfs@.service"] {
        let shipped =
            std::fs::read_to_string(root.path().join("usr/lib/systemd/system").join(unit)).unwrap();
        let source = std::fs::read_to_string(format!("{ROOT}/systemd/{unit}")).unwrap();
        assert_eq!(
            shipped,
            source.replace("/usr/local/bin/secretsfs", "/usr/bin/secretsfs"),
            "{unit}"
        );
    }
    let man = run(Command::new("gzip")
        .arg("-dc")
        .arg(root.path().join("usr/share/man/man1/secretsfs.1.gz")));
    assert!(text(&man.stdout).contains(".TH secretsfs 1 "), "{man:?}");
    for (file, source) in [
        ("etc/secretsfs/secretsfs.toml", "packaging/secretsfs.toml"),
        ("etc/secretsfs/secretsfs.env", "packaging/secretsfs.env"),
    ] {
        assert_eq!(
            std::fs::read(root.path().join(file)).unwrap(),
            std::fs::read(format!("{ROOT}/{source}")).unwrap(),
            "{file}"
        );
    }
}
