//! What an operator gets besides the filesystem: `--help` and `--version`,
//! user and group names, the man page and completions (secretsfs-gen), the
//! example settings, and the Debian package (packaging/build-deb, checked
//! with dpkg-deb and extracted to a temporary directory, never installed).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clap::{CommandFactory, Parser};
use secretsfs::config::Cli;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Options that take a value and truly have no default.
const NO_DEFAULT: [&str; 3] = ["local", "config", "o"];

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("{cmd:?} could not start: {e}"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn secretsfs(args: &[&str]) -> Output {
    run(Command::new(env!("CARGO_BIN_EXE_secretsfs")).args(args))
}

/// The long options of the CLI definition, with whether they take a value.
fn long_options() -> Vec<(String, bool)> {
    Cli::command()
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| {
            let name = a.get_long().or(a.get_short().map(|_| "o"))?;
            Some((name.to_string(), a.get_action().takes_values()))
        })
        .filter(|(name, _)| name != "help" && name != "version")
        .collect()
}

#[test]
fn help_describes_every_option_with_its_default_and_the_environment() {
    let out = secretsfs(&["--help"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let help = stdout(&out);
    // Whitespace-insensitive, so that wrapping cannot hide a default.
    let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for arg in Cli::command().get_arguments().filter(|a| !a.is_hide_set()) {
        let what = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        assert!(
            !what.trim().is_empty(),
            "{:?} has no description",
            arg.get_id()
        );
    }
    for (name, takes_value) in long_options() {
        let spelled = if name == "o" {
            "-o <".to_string()
        } else {
            format!("--{name}")
        };
        assert!(flat.contains(&spelled), "--help does not show {spelled}");
        if takes_value && !NO_DEFAULT.contains(&name.as_str()) {
            let arg = Cli::command()
                .get_arguments()
                .find(|a| a.get_long() == Some(name.as_str()))
                .map(|a| a.get_help().unwrap().to_string())
                .unwrap();
            assert!(
                arg.contains("[default: "),
                "--{name} takes a value but its help states no [default: ...]; \
                 add it (or list --{name} in NO_DEFAULT if it has none): {arg}"
            );
        }
    }
    for default in [
        "[default: 5m]",
        "[default: 2]",
        "[default: 1h]",
        "[default: 32]",
        "[default: 16]",
        "[default: the mounting user]",
    ] {
        assert!(flat.contains(default), "no {default} in --help");
    }
    for var in [
        "RUST_LOG",
        "AWS_REGION",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_CA_BUNDLE",
        "HTTPS_PROXY",
        "NO_PROXY",
    ] {
        assert!(help.contains(var), "--help does not list {var}");
    }
}

#[test]
fn usage_shows_one_mountpoint_and_mount8s_source_is_still_accepted() {
    let help = stdout(&secretsfs(&["--help"]));
    let usage: Vec<_> = help.lines().filter(|l| l.starts_with("Usage:")).collect();
    assert_eq!(usage, ["Usage: secretsfs [OPTIONS] <MOUNTPOINT>"], "{help}");
    // What mount.fuse3 runs: `secretsfs SOURCE MOUNTPOINT -o ...`.
    let cli = Cli::try_parse_from(["secretsfs", "secretsfs", "/run/x", "-o", "ttl=5"]).unwrap();
    assert_eq!(cli.into_config().unwrap().mountpoint, Path::new("/run/x"));
    let out = secretsfs(&["a", "b", "c"]);
    assert_eq!(out.status.code(), Some(2), "three paths are refused");
}

/// A user and a group of this machine other than root, with their ids.
fn some_user_and_group() -> ((String, u32), (String, u32)) {
    let pick = |file: &str, id_field: usize| {
        std::fs::read_to_string(file)
            .unwrap()
            .lines()
            .filter_map(|l| {
                let f: Vec<_> = l.split(':').collect();
                Some((f.first()?.to_string(), f.get(id_field)?.parse().ok()?))
            })
            .find(|(name, id): &(String, u32)| *id != 0 && !name.is_empty())
            .unwrap_or(("root".into(), 0))
    };
    (pick("/etc/passwd", 2), pick("/etc/group", 2))
}

#[test]
fn uid_and_gid_take_user_and_group_names() {
    let ((user, uid), (group, gid)) = some_user_and_group();
    let config = |args: &[&str]| {
        let argv = ["secretsfs"].iter().chain(args).copied();
        Cli::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .into_config()
    };
    let c = config(&["--uid", &user, "--gid", &group, "/mnt"]).unwrap();
    assert_eq!((c.fs.uid, c.fs.gid), (uid, gid));
    let c = config(&["/mnt", "-o", &format!("uid={user},gid={group}")]).unwrap();
    assert_eq!((c.fs.uid, c.fs.gid), (uid, gid));
    let c = config(&["--uid", "root", "--gid", "0", "/mnt"]).unwrap();
    assert_eq!((c.fs.uid, c.fs.gid), (0, 0));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.toml");
    std::fs::write(&file, format!("uid = \"{user}\"\ngid = \"{group}\"\n")).unwrap();
    let c = config(&["--config", file.to_str().unwrap(), "/mnt"]).unwrap();
    assert_eq!((c.fs.uid, c.fs.gid), (uid, gid));

    // Unknown names fail before anything is mounted, naming the name.
    let out = secretsfs(&["--uid", "no-such-user-q7", "/nonexistent/mnt"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no user named 'no-such-user-q7'"),
        "{}",
        stderr(&out)
    );
    let out = secretsfs(&["-o", "gid=no-such-group-q7", "/nonexistent/mnt"]);
    assert_eq!(out.status.code(), Some(2), "a configuration error");
    let e = stderr(&out);
    assert!(
        e.contains("'gid'") && e.contains("no group named 'no-such-group-q7'"),
        "{e}"
    );
    std::fs::write(&file, "gid = \"no-such-group-q7\"\n").unwrap();
    let out = secretsfs(&["--config", file.to_str().unwrap(), "/nonexistent/mnt"]);
    assert_eq!(out.status.code(), Some(2), "a configuration error");
    assert!(
        stderr(&out).contains("no group named 'no-such-group-q7'"),
        "{}",
        stderr(&out)
    );
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(ROOT)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn version_names_the_git_commit_it_was_built_from() {
    let version = stdout(&secretsfs(&["--version"])).trim().to_string();
    let in_checkout = git(&["rev-parse", "--show-toplevel"]).is_some_and(|top| {
        Path::new(&top).canonicalize().ok() == Path::new(ROOT).canonicalize().ok()
    });
    if !in_checkout {
        assert_eq!(version, format!("secretsfs {VERSION}"));
        return;
    }
    let prefix = format!("secretsfs {VERSION} (git ");
    let commit = version
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{version:?} does not name a commit"));
    assert!(
        commit.len() >= 7 && commit.bytes().all(|b| b.is_ascii_hexdigit()),
        "{version}"
    );
    // HEAD, or an ancestor if someone committed since this binary was built.
    assert!(
        git(&["merge-base", "--is-ancestor", commit, "HEAD"]).is_some(),
        "{commit} is not HEAD or one of its ancestors"
    );
}

#[test]
fn man_page_and_completions_are_generated_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(Command::new(env!("CARGO_BIN_EXE_secretsfs-gen")).arg(dir.path()));
    assert!(out.status.success(), "{}", stderr(&out));
    let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
    let man = read("man/secretsfs.1");
    assert!(man.contains("\n.TH secretsfs 1 "), "{man}");
    // groff, when there is one, finds nothing to warn about.
    if let Ok(out) = Command::new("groff")
        .args(["-man", "-ww", "-z"])
        .arg(dir.path().join("man/secretsfs.1"))
        .output()
    {
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "groff: {}",
            stderr(&out)
        );
    }
    for section in [
        "NAME",
        "SYNOPSIS",
        "OPTIONS",
        "ENVIRONMENT",
        "FILES",
        "EXIT STATUS",
    ] {
        assert!(
            man.contains(&format!(".SH {section}\n"))
                || man.contains(&format!(".SH \"{section}\"\n")),
            "no {section} in the man page"
        );
    }
    for var in ["RUST_LOG", "AWS_REGION", "AWS_CA_BUNDLE", "HTTPS_PROXY"] {
        assert!(man.contains(var), "the man page does not list {var}");
    }
    let bash = read("completions/secretsfs.bash");
    let zsh = read("completions/_secretsfs");
    let fish = read("completions/secretsfs.fish");
    for (name, _) in long_options().into_iter().filter(|(n, _)| n != "o") {
        // roff escapes dashes.
        let roff_name = format!("\\-\\-{}", name.replace('-', "\\-"));
        assert!(man.contains(&roff_name), "the man page lacks --{name}");
        assert!(bash.contains(&format!("--{name}")), "bash lacks --{name}");
        assert!(zsh.contains(&format!("--{name}")), "zsh lacks --{name}");
        assert!(fish.contains(&format!("-l {name}")), "fish lacks --{name}");
    }
    let syntax = run(Command::new("bash")
        .arg("-n")
        .arg(dir.path().join("completions/secretsfs.bash")));
    assert!(syntax.status.success(), "{}", stderr(&syntax));
    let usage = run(&mut Command::new(env!("CARGO_BIN_EXE_secretsfs-gen")));
    assert_eq!(usage.status.code(), Some(2));
    assert!(stderr(&usage).contains("usage: secretsfs-gen DIR"));
}

/// `# key = value` lines of the example settings, uncommented.
fn example_settings() -> Vec<String> {
    std::fs::read_to_string(format!("{ROOT}/packaging/secretsfs.toml"))
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| {
            l.split_once(" = ")
                .is_some_and(|(k, _)| k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        })
        .map(|l| l.split(" #").next().unwrap().trim().to_string())
        .collect()
}

#[test]
fn every_example_setting_is_valid_and_every_file_setting_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.toml");
    let config = |text: &str| {
        std::fs::write(&file, text).unwrap();
        Cli::try_parse_from(["secretsfs", "--config", file.to_str().unwrap(), "/mnt"])
            .unwrap()
            .into_config()
    };
    let lines = example_settings();
    assert!(lines.len() >= 10, "{lines:?}");
    assert!(
        config("").is_ok(),
        "the example as shipped (all comments) is valid"
    );
    for line in &lines {
        // Parameter Store's settings need that source.
        let text = match line.starts_with("ssm_") {
            true => format!("source = \"ssm\"\n{line}"),
            false => line.clone(),
        };
        if let Err(e) = config(&text) {
            panic!("packaging/secretsfs.toml: `{line}`: {e}");
        }
    }
    // Each long option the file accepts as a key appears in the example.
    for (name, _) in long_options() {
        let key = if name == "secret" {
            "secrets".into()
        } else {
            name.replace('-', "_")
        };
        let accepted = match config(&format!("{key} = 0")) {
            Ok(_) => true,
            Err(e) => !e.contains("unknown field") && !e.contains("unknown key"),
        };
        if accepted && !["local", "demo", "config"].contains(&key.as_str()) {
            assert!(
                lines.iter().any(|l| l.starts_with(&format!("{key} = "))),
                "packaging/secretsfs.toml does not show `{key}`"
            );
        }
    }
}

/// cargo-deb, or a panic that says how to get it.
fn require_cargo_deb() {
    let found = Command::new("cargo-deb")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "cargo-deb is missing: run ./run-tests (it installs it) or `cargo install cargo-deb --locked`"
    );
}

/// `dpkg-deb` with these arguments; its standard output.
fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let out = run(Command::new("dpkg-deb").args(args).arg(deb));
    assert!(out.status.success(), "dpkg-deb {args:?}: {}", stderr(&out));
    stdout(&out)
}

fn has_debug_info(binary: &Path) -> bool {
    let out = run(Command::new("readelf").args(["-S", "--wide"]).arg(binary));
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).contains(".debug_info")
}

#[test]
fn debian_package_holds_the_binary_units_settings_docs_and_needs_fuse3() {
    require_cargo_deb();
    // A release build takes both cores for minutes: no other test's daemon
    // (some bound their timings) beside it, as when it was a binary of its own.
    let _alone = crate::common::alone();
    let dir = tempfile::tempdir().unwrap();
    let deb = dir.path().join("secretsfs.deb");
    let out = run(Command::new(format!("{ROOT}/packaging/build-deb"))
        .arg("--output")
        .arg(&deb)
        .arg("--quiet"));
    assert!(
        out.status.success(),
        "packaging/build-deb: {}",
        stderr(&out)
    );
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| format!("{ROOT}/target"));
    assert!(!has_debug_info(
        &PathBuf::from(target).join("release/secretsfs")
    ));

    let depends = dpkg_deb(&["-f"], &deb)
        .lines()
        .find_map(|l| l.strip_prefix("Depends: ").map(str::to_string));
    let depends = depends.expect("a Depends field");
    // fusermount3 and mount.fuse3; the system's roots for the HTTPS client.
    for need in ["fuse3", "ca-certificates"] {
        assert!(depends.split(", ").any(|d| d == need), "{depends}");
    }
    // Debian policy: the maintainer's name and e-mail address.
    let maintainer = dpkg_deb(&["-f"], &deb)
        .lines()
        .find_map(|l| l.strip_prefix("Maintainer: ").map(str::to_string))
        .expect("a Maintainer field");
    let address = maintainer
        .split_once(" <")
        .and_then(|(_, a)| a.strip_suffix('>'));
    assert!(address.is_some_and(|a| a.contains('@')), "{maintainer}");
    let fields = run(Command::new("dpkg-deb")
        .arg("-f")
        .arg(&deb)
        .args(["Package", "Version"]));
    assert_eq!(
        stdout(&fields),
        format!("Package: secretsfs\nVersion: {VERSION}-1\n")
    );

    let listing = dpkg_deb(&["-c"], &deb);
    let mode_of = |path: &str| {
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!(" .{path}")))
            .unwrap_or_else(|| panic!("{path} is not in the package:\n{listing}"));
        line.split_whitespace().next().unwrap().to_string()
    };
    for (path, mode) in [
        ("/usr/bin/secretsfs", "-rwxr-xr-x"),
        ("/usr/lib/systemd/system/secretsfs.service", "-rw-r--r--"),
        ("/usr/lib/systemd/system/secretsfs@.service", "-rw-r--r--"),
        ("/etc/secretsfs/secretsfs.toml", "-rw-r--r--"),
        ("/etc/secretsfs/secretsfs.env", "-rw-------"),
        ("/usr/share/man/man1/secretsfs.1.gz", "-rw-r--r--"),
        (
            "/usr/share/bash-completion/completions/secretsfs",
            "-rw-r--r--",
        ),
        ("/usr/share/zsh/vendor-completions/_secretsfs", "-rw-r--r--"),
        (
            "/usr/share/fish/vendor_completions.d/secretsfs.fish",
            "-rw-r--r--",
        ),
        ("/usr/share/doc/secretsfs/copyright", "-rw-r--r--"),
        ("/usr/share/doc/secretsfs/README.md", "-rw-r--r--"),
        ("/usr/share/doc/secretsfs/CHANGELOG.md", "-rw-r--r--"),
    ] {
        assert_eq!(mode_of(path), mode, "{path}");
    }
    assert!(!listing.contains("/usr/local"), "{listing}");

    let tree = dir.path().join("tree");
    let out = run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree));
    assert!(out.status.success(), "{}", stderr(&out));
    let binary = tree.join("usr/bin/secretsfs");
    let version = stdout(&run(Command::new(&binary).arg("--version")));
    assert!(
        version.starts_with(&format!("secretsfs {VERSION}")),
        "{version}"
    );
    assert!(!has_debug_info(&binary));
    for unit in ["secretsfs.service", "secretsfs@.service"] {
        let shipped =
            std::fs::read_to_string(tree.join("usr/lib/systemd/system").join(unit)).unwrap();
        let source = std::fs::read_to_string(format!("{ROOT}/systemd/{unit}")).unwrap();
        assert_eq!(
            shipped,
            source.replace("/usr/local/bin/secretsfs", "/usr/bin/secretsfs"),
            "{unit}"
        );
        assert!(shipped.contains("ExecStart=/usr/bin/secretsfs "), "{unit}");
    }
    let copyright =
        std::fs::read_to_string(tree.join("usr/share/doc/secretsfs/copyright")).unwrap();
    assert!(
        copyright.contains("The secretsfs authors") && copyright.contains("MIT"),
        "{copyright}"
    );

    // Settings are conffiles (kept on upgrade); removing the package stops
    // the service; nothing enables or starts it on install.
    let control = dir.path().join("control");
    let out = run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    assert!(out.status.success(), "{}", stderr(&out));
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert!(
        conffiles.contains("/etc/secretsfs/secretsfs.toml"),
        "{conffiles}"
    );
    assert!(
        conffiles.contains("/etc/secretsfs/secretsfs.env"),
        "{conffiles}"
    );
    let prerm = std::fs::read_to_string(control.join("prerm")).unwrap();
    assert!(prerm.contains("stop secretsfs.service"), "{prerm}");
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(!postinst.contains("deb-systemd-invoke start"), "{postinst}");
}
