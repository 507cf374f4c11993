//! Editors and tools on real mounts against moto: each replaces `current`
//! its own way (in place, temp file + rename, unlink + create) and must make
//! exactly one new version, leave no stray files, and keep its temporary
//! files to its own directory.

use crate::common::*;

const OWN: [&str; 5] = ["current", "json", "previous", "stages", "versions"];

/// Runs `cmd` in the secret's directory on a fresh secret holding `start`,
/// and checks: success, one new version holding `want`, no stray files, and
/// a neighbouring secret's directory untouched.
fn tool_makes_one_version(label: &str, start: &str, cmd: &str, want: &[u8]) {
    let s = unique(&format!("ed-{label}"));
    let other = unique(&format!("ed-{label}-other"));
    create(&s, start);
    create(&other, "neighbour");
    let m = Mount::aws()
        .args(["--secret", &s, "--secret", &other])
        .start();
    let dir = m.p(&s);
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(&dir)
        .env("OTHER", m.p(&other))
        .env("HOME", m.path.parent().unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{label}: {out:?}\n{}", m.log_text());
    assert_eq!(version_ids(&s).len(), 2, "{label}: exactly one new version");
    let (_, string, binary) = stage(&s, "AWSCURRENT").unwrap();
    let got = string.map(String::into_bytes).or(binary).unwrap();
    assert_eq!(got, want, "{label}");
    assert_eq!(m.read(&format!("{s}/current")).unwrap(), want, "{label}");
    assert_eq!(ls(&dir), OWN, "{label}: no stray files");
    assert_eq!(
        ls(&m.p(&other)),
        ["current", "json", "stages", "versions"],
        "{label}"
    );
    assert_eq!(version_ids(&other).len(), 1);
}

#[test]
fn sed_in_place() {
    tool_makes_one_version(
        "sed",
        "user=alice\n",
        "sed -i s/alice/bob/ current",
        b"user=bob\n",
    );
}

#[test]
fn vim_ex_mode_without_configuration() {
    tool_makes_one_version(
        "vimex",
        "password=aaa\n",
        "vim -Es -u NONE -i NONE -c '%s/a/b/g' -c wq current",
        b"pbssword=bbb\n",
    );
}

#[test]
fn vim_with_its_default_configuration_and_backups() {
    // defaults.vim, writebackup, and backups not skipped under /tmp: vim
    // tries rename(current, current~), is refused, and writes in place.
    tool_makes_one_version(
        "vimdef",
        "old line\n",
        "vim -Es -u DEFAULTS -i NONE -c 'set backupskip=' -c '%s/old/new/' -c wq current",
        b"new line\n",
    );
}

#[test]
fn vim_keeps_a_requested_backup_only_in_memory() {
    let s = unique("ed-vimbak");
    create(&s, "v1\n");
    let m = Mount::aws().args(["--secret", &s]).start();
    let out = sh(
        "vim -Es -u DEFAULTS -i NONE -c 'set backup backupskip=' -c '%s/v1/v2/' -c wq current",
        &m.p(&s),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(current_string(&s), "v2\n");
    assert_eq!(version_ids(&s).len(), 2);
    // The backup vim asked for is a temporary file of this mount.
    assert_eq!(m.read_string(&format!("{s}/current~")), "v1\n");
    std::fs::remove_file(m.p(&format!("{s}/current~"))).unwrap();
    assert_eq!(ls(&m.p(&s)), OWN);
}

#[test]
fn cp_over_current() {
    tool_makes_one_version(
        "cp",
        "old",
        "printf 'copied value' > \"$HOME/src\" && cp \"$HOME/src\" current",
        b"copied value",
    );
}

#[test]
fn tee_into_current() {
    tool_makes_one_version(
        "tee",
        "old",
        "printf 'teed' | tee current > /dev/null",
        b"teed",
    );
}

#[test]
fn install_with_a_mode() {
    tool_makes_one_version(
        "install",
        "old",
        "printf 'installed' > \"$HOME/src\" && install -m 600 \"$HOME/src\" current",
        b"installed",
    );
}

#[test]
fn dd_without_truncation() {
    tool_makes_one_version(
        "dd",
        "0123456789",
        "printf 'AB' | dd of=current bs=1 seek=3 conv=notrunc status=none",
        b"012AB56789",
    );
}

#[test]
fn python_write_temp_then_replace() {
    let script = r#"
import os, tempfile
d = os.getcwd()
fd, tmp = tempfile.mkstemp(dir=d, prefix=".ansible_tmp")
os.write(fd, b"from python\n")
os.fsync(fd)
os.fchmod(fd, 0o600)
os.close(fd)
name = os.path.basename(tmp)
assert name in os.listdir(d), "the temp file is listed in its own directory"
other = os.environ["OTHER"]
assert name not in os.listdir(other), "not in another secret's directory"
assert not os.path.exists(os.path.join(other, name))
os.utime(tmp)
os.replace(tmp, "current")
"#;
    tool_makes_one_version(
        "python",
        "old",
        &format!("python3 -c '{}'", script.replace('\'', "'\\''")),
        b"from python\n",
    );
}

#[test]
fn temporary_files_are_bounded_and_refused_outside_secrets() {
    let s = unique("ed-bound");
    create(&s, "v");
    let m = Mount::aws().args(["--secret", &s]).start();
    let dir = m.p(&s);
    let mut made = 0;
    let err = loop {
        match write_file(
            &dir.join(format!("tmp{made}")),
            b"x",
            libc::O_WRONLY | libc::O_CREAT,
        ) {
            Ok(()) => made += 1,
            Err(e) => break e,
        }
        assert!(made <= 1000, "no bound on temporary files");
    };
    assert_eq!(err, libc::ENOSPC);
    assert_eq!(made, 64);
    for i in 0..made {
        std::fs::remove_file(dir.join(format!("tmp{i}"))).unwrap();
    }
    // Bytes are bounded too (4 MiB per mount).
    let big = vec![b'z'; 5 << 20];
    assert_eq!(
        write_file(&dir.join("big"), &big, libc::O_WRONLY | libc::O_CREAT),
        Err(libc::ENOSPC)
    );
    std::fs::remove_file(dir.join("big")).unwrap();
    // Not in the root or in versions/.
    assert_eq!(
        write_file(&m.p("stray"), b"x", libc::O_WRONLY | libc::O_CREAT),
        Err(libc::EACCES)
    );
    assert_eq!(
        write_file(
            &dir.join("versions/x"),
            b"x",
            libc::O_WRONLY | libc::O_CREAT
        ),
        Err(libc::EACCES)
    );
    // A temporary file alone never reaches Secrets Manager.
    assert_eq!(version_ids(&s).len(), 1);
    assert_eq!(ls(&dir), ["current", "json", "stages", "versions"]);
}

#[test]
fn rm_current_is_refused_and_deletes_nothing() {
    let s = unique("ed-rm");
    create(&s, "stay");
    let m = Mount::aws().args(["--secret", &s]).start();
    let out = sh("rm -f current", &m.p(&s));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"));
    assert_eq!(m.read_string(&format!("{s}/current")), "stay");
    assert_eq!(current_string(&s), "stay");
}

// ---- Probes from the review of the JSON view: tools on a key (were tests/adversarial.rs) ----

/// install(1) unlinks the destination before creating it (the reason
/// `current` has its REPLACERS rule). In json/ the unlink is a put
/// without the key and the create a second put with the key last: two
/// versions, a window where readers get ENOENT, and the key order changed.
#[test]
fn install_onto_a_key_makes_one_version_in_place() {
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
fn vim_on_a_key_makes_one_version_and_no_stray_keys() {
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
