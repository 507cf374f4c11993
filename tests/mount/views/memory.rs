//! The views keep `current`'s promises (issue 18), on real mounts: editors'
//! and tools' temporary files in json/ live in the mount's memory (nothing
//! reaches a disk), a rename onto a key is that key's put, a key write keeps
//! every other byte of the secret and its kind, stage files' attributes
//! decrypt nothing, and long names get ENAMETOOLONG.

use std::path::Path;

use crate::common::*;

/// A secret holding `doc` and a mount of it; the json/ directory's path.
fn json_mount(s: &str, doc: &str) -> Mount {
    create(s, doc);
    Mount::aws().args(["--secret", s]).start()
}

/// Runs `cmd` (sh -c) in `dir` with HOME set to `home`, under strace, and
/// returns every path the command created, renamed or linked outside
/// `inside` (relative paths are taken from `dir`).
fn files_made_outside(cmd: &str, dir: &Path, home: &Path, inside: &Path) -> Vec<String> {
    let trace = home.parent().unwrap().join("trace");
    let out = std::process::Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=openat,open,creat,rename,renameat,renameat2,link,linkat,mkdir,symlink",
            "-o",
        ])
        .arg(&trace)
        .args(["sh", "-c", cmd])
        .current_dir(dir)
        .env("HOME", home)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("strace");
    assert!(out.status.success(), "{cmd}: {out:?}");
    let text = std::fs::read_to_string(&trace).unwrap();
    let mut outside = Vec::new();
    for line in text.lines() {
        let creates = line.contains("O_CREAT")
            || ["creat(", "rename", "link", "mkdir(", "symlink"]
                .iter()
                .any(|c| line.contains(c));
        if !creates || line.ends_with("ENOENT (No such file or directory)") {
            continue;
        }
        // Every quoted path of the call.
        for path in line.split('"').skip(1).step_by(2) {
            let p = if path.starts_with('/') {
                std::path::PathBuf::from(path)
            } else {
                dir.join(path)
            };
            if !p.starts_with(inside) && !path.starts_with("/dev/") {
                outside.push(line.to_string());
            }
        }
    }
    outside
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn vim_editing_a_json_key_writes_nothing_outside_the_mount() {
    for (tag, set) in [
        ("defaults", "set backupskip="),
        ("backup", "set backup backupskip="),
    ] {
        let s = unique(&format!("vw-vim-{tag}"));
        let doc = r#"{"user":"app","password":"old-pass","port":5432}"#;
        let m = json_mount(&s, doc);
        let home = tempfile::tempdir().unwrap();
        let home_dir = home.path().join("home");
        std::fs::create_dir(&home_dir).unwrap();
        let tmp_before = (listing(Path::new("/tmp")), listing(Path::new("/var/tmp")));
        let json = m.p(&format!("{s}/json"));
        let cmd = format!("vim -Es -u DEFAULTS -i NONE -c '{set}' -c '%s/old/new/' -c wq password");
        let outside = files_made_outside(&cmd, &json, &home_dir, &m.path);
        assert!(
            outside.is_empty(),
            "{tag}: files made outside the mount: {outside:#?}"
        );
        assert!(listing(&home_dir).is_empty(), "{tag}: HOME holds nothing");
        let tmp_after = (listing(Path::new("/tmp")), listing(Path::new("/var/tmp")));
        let leaked: Vec<_> = tmp_after
            .0
            .iter()
            .chain(&tmp_after.1)
            .filter(|n| {
                n.contains("password") && !tmp_before.0.contains(n) && !tmp_before.1.contains(n)
            })
            .collect();
        assert!(leaked.is_empty(), "{tag}: {leaked:?}");
        assert_eq!(version_ids(&s).len(), 2, "{tag}: one version");
        // vim ends the line it wrote ('fixeol').
        assert_eq!(
            current_string(&s),
            r#"{"user":"app","password":"new-pass\n","port":5432}"#,
            "{tag}"
        );
        if tag == "backup" {
            // The backup vim asked for is a temporary file of this mount.
            assert_eq!(m.read_string(&format!("{s}/json/password~")), "old-pass");
        }
    }
}

#[test]
fn mkstemp_and_replace_onto_a_key_puts_only_that_key() {
    let s = unique("vw-mkstemp");
    let doc =
        "{\n  \"na\\u00efve\": 1.50,\n  \"big\": 12345678901234567890,\n  \"password\": \"old\"\n}";
    let m = json_mount(&s, doc);
    let json = m.p(&format!("{s}/json"));
    let script = "import os,sys,tempfile\n\
        d=sys.argv[1]\n\
        fd,p=tempfile.mkstemp(dir=d)\n\
        os.write(fd,b'fresh-pass')\n\
        os.close(fd)\n\
        assert os.path.basename(p) in os.listdir(d)\n\
        os.replace(p,os.path.join(d,'password'))\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&json)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(version_ids(&s).len(), 2, "one version");
    assert_eq!(
        current_string(&s),
        doc.replace("\"old\"", "\"fresh-pass\""),
        "only that key changed, every other byte kept"
    );
    let mut keys = listing(&json);
    keys.retain(|k| k.starts_with("tmp"));
    assert!(keys.is_empty(), "no temporary file left as a key: {keys:?}");
}

#[test]
fn a_key_write_keeps_other_keys_text_and_the_values_kind() {
    let s = unique("vw-text");
    let doc = r#"{"caf\u00e9":"x","n":1.0e2,"big":12345678901234567890,"o":{"a": [1, 2]},"password":"p"}"#;
    let m = json_mount(&s, doc);
    std::fs::write(m.p(&format!("{s}/json/password")), "q").unwrap();
    assert_eq!(current_string(&s), doc.replace(r#""p""#, r#""q""#));

    // A binary secret holding JSON stays binary.
    let b = unique("vw-binary");
    create_binary(&b, br#"{"k":"v","password":"p"}"#);
    let m2 = Mount::aws().args(["--secret", &b]).start();
    std::fs::write(m2.p(&format!("{b}/json/password")), "q").unwrap();
    let out = rt()
        .block_on(sdk().get_secret_value().secret_id(&b).send())
        .unwrap();
    assert!(out.secret_string().is_none(), "still SecretBinary");
    assert_eq!(
        out.secret_binary().unwrap().as_ref(),
        br#"{"k":"v","password":"q"}"#
    );
    drop(m);
}

#[test]
fn listing_stage_files_decrypts_nothing() {
    let s = unique("vw-stages");
    create(&s, "v0");
    for i in 0..20 {
        rt().block_on(
            sdk()
                .put_secret_value()
                .secret_id(&s)
                .secret_string(format!("value-{i}"))
                .version_stages(format!("label-{i:02}"))
                .send(),
        )
        .unwrap();
    }
    let (proxy, m) = mount_via_proxy(&s, &[]);
    let gets = proxy.count("GetSecretValue");
    let out = sh("ls -l stages/", &m.p(&s));
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(text.matches("label-").count(), 20, "{text}");
    assert_eq!(
        proxy.count("GetSecretValue"),
        gets,
        "ls -l stages/ made no GetSecretValue"
    );
    // Reading one reads it (by version id).
    assert_eq!(m.read_string(&format!("{s}/stages/label-07")), "value-7");
}

#[test]
fn a_name_over_255_bytes_is_enametoolong() {
    let s = unique("vw-long");
    let m = json_mount(&s, r#"{"a":"b"}"#);
    let long = "k".repeat(300);
    for dir in ["json", "stages", ""] {
        let p = m.p(&format!("{s}/{dir}/{long}"));
        let e = std::fs::write(&p, "x").unwrap_err();
        assert_eq!(errno_of(&e), libc::ENAMETOOLONG, "{dir}: {e}");
    }
    assert_eq!(version_ids(&s).len(), 1);
}
