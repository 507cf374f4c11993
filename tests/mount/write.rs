//! The write path on real mounts against moto: closing `current` creates
//! exactly one version, with the limits and errors of PRODUCT.md, checked
//! through the API.

use std::fs::OpenOptions;
use std::os::fd::IntoRawFd;
use std::path::Path;
use std::time::Duration;

use crate::common::*;

fn is_uuid_v4(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok_and(|u| u.get_version_num() == 4)
}

fn pwrite_and_close(path: &Path, offset: i64, data: &[u8], append: bool) -> Result<(), i32> {
    let f = OpenOptions::new()
        .write(true)
        .append(append)
        .open(path)
        .map_err(|e| errno_of(&e))?;
    let fd = f.into_raw_fd();
    // SAFETY: fd is ours; the buffer outlives the calls.
    unsafe {
        let n = if append {
            libc::write(fd, data.as_ptr().cast(), data.len())
        } else {
            libc::pwrite(fd, data.as_ptr().cast(), data.len(), offset)
        };
        if n < 0 {
            let e = *libc::__errno_location();
            libc::close(fd);
            return Err(e);
        }
        if libc::close(fd) != 0 {
            return Err(*libc::__errno_location());
        }
    }
    Ok(())
}

#[test]
fn echo_creates_one_version_and_reads_are_served_from_memory() {
    let s = unique("wp-echo");
    let v1 = create(&s, "old");
    let proxy = Proxy::start();
    let m = Mount::aws()
        .endpoint(proxy.url())
        .args(["--secret", &s])
        .start();
    let out = sh("echo new > current", &m.p(&s));
    assert!(out.status.success(), "{out:?}");
    let (id, string, binary) = stage(&s, "AWSCURRENT").unwrap();
    assert_eq!(string.as_deref(), Some("new\n"));
    assert!(binary.is_none());
    assert!(is_uuid_v4(&id), "{id}");
    assert_eq!(stage(&s, "AWSPREVIOUS").unwrap().0, v1);
    assert_eq!(version_ids(&s).len(), 2);
    let puts = proxy.bodies("PutSecretValue");
    assert_eq!(puts.len(), 1);
    assert!(puts[0].get("VersionStages").is_none());
    assert!(is_uuid_v4(puts[0]["ClientRequestToken"].as_str().unwrap()));

    let gets = proxy.count("GetSecretValue");
    assert_eq!(m.read_string(&format!("{s}/current")), "new\n");
    assert_eq!(m.read_string(&format!("{s}/previous")), "old");
    assert_eq!(
        proxy.count("GetSecretValue"),
        gets,
        "read-your-writes costs no call"
    );
}

#[test]
fn successive_writes_make_successive_versions() {
    let s = unique("wp-three");
    create(&s, "v0");
    let m = Mount::aws().args(["--secret", &s]).start();
    let cur = m.p(&format!("{s}/current"));
    for i in 1..=3 {
        replace_file(&cur, format!("value {i}").as_bytes()).unwrap();
        assert_eq!(current_string(&s), format!("value {i}"));
    }
    assert_eq!(version_ids(&s).len(), 4);
    assert_eq!(
        stage(&s, "AWSPREVIOUS").unwrap().1.as_deref(),
        Some("value 2")
    );
    assert!(
        m.log_text().contains("more than once in 10 minutes"),
        "churn warning"
    );
}

/// A command that receives `fd` as its fd 3.
fn with_fd3(program: &str, args: &[&str], fd: i32) -> std::process::Command {
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    // SAFETY: dup2 is async-signal-safe; the dup has no close-on-exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

fn raw_write(fd: i32, data: &[u8]) {
    // SAFETY: fd is open; the buffer outlives the call.
    assert_eq!(
        unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) },
        data.len() as isize
    );
}

#[test]
fn only_the_openers_close_commits_and_release_commits_the_rest() {
    let s = unique("wp-dup");
    create(&s, "base");
    let m = Mount::aws().args(["--secret", &s]).start();
    let cur = m.p(&format!("{s}/current"));
    // A child inherits the descriptor and closes it mid-write: its close
    // is not the opener's, so no half-written value is put.
    let fd = raw_open(&cur, libc::O_WRONLY | libc::O_TRUNC);
    raw_write(fd, b"part1");
    assert!(with_fd3("/bin/true", &[], fd).status().unwrap().success());
    assert_eq!(version_ids(&s).len(), 1, "the child's close put nothing");
    raw_write(fd, b"part2");
    assert_eq!(unsafe { libc::close(fd) }, 0);
    assert_eq!(version_ids(&s).len(), 2);
    assert_eq!(current_string(&s), "part1part2");

    // The opener closes without writing; a child appends later and exits:
    // the last close (release) commits.
    let fd = raw_open(&cur, libc::O_WRONLY | libc::O_APPEND);
    let child = with_fd3("sh", &["-c", "sleep 0.3; printf +child >&3"], fd)
        .spawn()
        .unwrap();
    assert_eq!(unsafe { libc::close(fd) }, 0);
    assert_eq!(version_ids(&s).len(), 2, "nothing written yet, nothing put");
    assert!(child.wait_with_output().unwrap().status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while current_string(&s) != "part1part2+child" && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(current_string(&s), "part1part2+child");
    assert_eq!(version_ids(&s).len(), 3);
}

#[test]
fn binary_content_is_stored_as_secret_binary() {
    let s = unique("wp-bin");
    create(&s, "text");
    let m = Mount::aws().args(["--secret", &s]).start();
    let bytes = [0u8, 0xff, 0xfe, 0x80, b'x'];
    replace_file(&m.p(&format!("{s}/current")), &bytes).unwrap();
    let (_, string, binary) = stage(&s, "AWSCURRENT").unwrap();
    assert!(string.is_none());
    assert_eq!(binary.unwrap(), bytes);
    assert_eq!(m.read(&format!("{s}/current")).unwrap(), bytes);
}

#[test]
fn partial_overwrite_and_append_start_from_the_current_value() {
    let s = unique("wp-partial");
    create(&s, "abcdef");
    let m = Mount::aws().args(["--secret", &s]).start();
    let cur = m.p(&format!("{s}/current"));
    pwrite_and_close(&cur, 2, b"XY", false).unwrap();
    assert_eq!(current_string(&s), "abXYef");
    pwrite_and_close(&cur, 0, b"-tail", true).unwrap();
    assert_eq!(current_string(&s), "abXYef-tail");
    let out = sh("printf '%s' '+sh' >> current", &m.p(&s));
    assert!(out.status.success());
    assert_eq!(current_string(&s), "abXYef-tail+sh");
    // truncate(2) on the path is a put of its own.
    let c = std::ffi::CString::new(cur.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::truncate(c.as_ptr(), 4) }, 0);
    assert_eq!(current_string(&s), "abXY");
    assert_eq!(m.read_string(&format!("{s}/current")), "abXY");
}

#[test]
fn limits_are_enforced_by_the_daemon() {
    let s = unique("wp-limits");
    create(&s, "keep me");
    let m = Mount::aws().args(["--secret", &s]).start();
    let cur = m.p(&format!("{s}/current"));
    let big = vec![b'a'; 70_000];
    assert_eq!(replace_file(&cur, &big), Err(libc::EFBIG));
    // Exactly the limit is fine.
    let max = vec![b'b'; 65_536];
    replace_file(&cur, &max).unwrap();
    assert_eq!(current_string(&s).len(), 65_536);
    let versions = version_ids(&s).len();
    // Opened with O_TRUNC and closed without a write (what a shell does
    // before it writes): nothing put, and no error.
    assert_eq!(replace_file(&cur, b""), Ok(()));
    assert_eq!(version_ids(&s).len(), versions);
    // Emptied (ftruncate): EINVAL at close, nothing put.
    let fd = raw_open(&cur, libc::O_WRONLY);
    // SAFETY: fd is open.
    assert_eq!(unsafe { libc::ftruncate(fd, 0) }, 0);
    assert_eq!(unsafe { libc::close(fd) }, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EINVAL)
    );
    // Unchanged: no new version.
    replace_file(&cur, &max).unwrap();
    assert_eq!(version_ids(&s).len(), versions);
    assert_eq!(current_string(&s).len(), 65_536);
}

#[test]
fn a_failing_put_fails_the_close_and_keeps_the_old_value() {
    let s = unique("wp-fail");
    create(&s, "old");
    let proxy = Proxy::start();
    let m = Mount::aws()
        .endpoint(proxy.url())
        .args(["--secret", &s])
        .start();
    let cur = m.p(&format!("{s}/current"));
    let cases = [
        (500, "InternalServiceError", libc::EIO),
        (400, "AccessDeniedException", libc::EACCES),
        (400, "LimitExceededException", libc::EDQUOT),
        (400, "InvalidParameterException", libc::EINVAL),
    ];
    for (status, code, want) in cases {
        proxy.fault(
            "PutSecretValue",
            Some(&s),
            Fault::Error { status, code },
            10,
        );
        assert_eq!(replace_file(&cur, b"new"), Err(want), "{code}");
        proxy.clear_faults();
        assert_eq!(current_string(&s), "old", "{code}");
        assert_eq!(m.read_string(&format!("{s}/current")), "old", "{code}");
    }
    assert_eq!(version_ids(&s).len(), 1);
}

#[test]
fn a_lost_response_is_retried_with_the_same_token_and_makes_one_version() {
    let s = unique("wp-lost");
    create(&s, "old");
    let proxy = Proxy::start();
    proxy.fault("PutSecretValue", Some(&s), Fault::DropResponse, 1);
    let m = Mount::aws()
        .endpoint(proxy.url())
        .args(["--secret", &s])
        .start();
    replace_file(&m.p(&format!("{s}/current")), b"once").unwrap();
    let puts = proxy.bodies("PutSecretValue");
    assert_eq!(
        puts.len(),
        2,
        "the first response was dropped, the SDK retried"
    );
    assert_eq!(puts[0]["ClientRequestToken"], puts[1]["ClientRequestToken"]);
    assert_eq!(version_ids(&s).len(), 2, "exactly one new version");
    assert_eq!(current_string(&s), "once");
}

#[test]
fn concurrent_writers_each_make_a_version_and_current_matches_the_api() {
    let s = unique("wp-eight");
    create(&s, "start");
    let m = Mount::aws().args(["--secret", &s]).start();
    let cur = m.p(&format!("{s}/current"));
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
    let writers: Vec<_> = (0..8)
        .map(|i| {
            let p = cur.clone();
            let b = barrier.clone();
            std::thread::spawn(move || {
                b.wait();
                replace_file(&p, format!("writer {i}").as_bytes())
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap().unwrap();
    }
    assert_eq!(version_ids(&s).len(), 9);
    assert_eq!(m.read_string(&format!("{s}/current")), current_string(&s));
}

#[test]
fn read_only_files_and_structure_are_refused() {
    let s = unique("wp-refuse");
    let v1 = create(&s, "one");
    put(&s, "two");
    let m = Mount::aws().args(["--secret", &s]).start();
    let d = m.p(&s);
    assert_eq!(replace_file(&d.join("previous"), b"x"), Err(libc::EACCES));
    assert_eq!(
        replace_file(&d.join(format!("versions/{v1}")), b"x"),
        Err(libc::EACCES)
    );
    let rm = std::fs::remove_file(d.join("current")).unwrap_err();
    assert_eq!(errno_of(&rm), libc::EPERM);
    let mv = std::fs::rename(d.join("current"), d.join("current~")).unwrap_err();
    assert_eq!(errno_of(&mv), libc::EPERM);
    let ln = std::fs::hard_link(d.join("current"), d.join("alias")).unwrap_err();
    assert_eq!(errno_of(&ln), libc::EPERM);
    let sl = std::os::unix::fs::symlink("current", d.join("link")).unwrap_err();
    assert_eq!(errno_of(&sl), libc::EPERM);
    let rd = std::fs::remove_dir(d.join("versions")).unwrap_err();
    assert_eq!(errno_of(&rd), libc::EPERM);
    assert_eq!(version_ids(&s).len(), 2);
    assert_eq!(current_string(&s), "two");
}

#[test]
fn read_only_mount_refuses_every_write() {
    let s = unique("wp-ro");
    create(&s, "fixed");
    let m = Mount::aws().args(["--secret", &s, "--read-only"]).start();
    let d = m.p(&s);
    assert_eq!(m.read_string(&format!("{s}/current")), "fixed");
    assert_eq!(replace_file(&d.join("current"), b"x"), Err(libc::EROFS));
    assert_eq!(
        write_file(&d.join("tmpfile"), b"x", libc::O_WRONLY | libc::O_CREAT),
        Err(libc::EROFS)
    );
    let md = std::fs::create_dir(m.p("newsecret")).unwrap_err();
    assert_eq!(errno_of(&md), libc::EROFS);
    assert_eq!(version_ids(&s).len(), 1);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(d.join("current")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o400);
}

#[test]
fn mkdir_creates_a_secret_only_with_allow_create() {
    let top = unique("wp-create");
    create(&format!("{top}/existing"), "x");
    let m = Mount::aws().args(["--prefix", &top]).start();
    let e = std::fs::create_dir(m.p(&format!("{top}/fresh"))).unwrap_err();
    assert_eq!(errno_of(&e), libc::EACCES);
    drop(m);

    let m = Mount::aws()
        .args(["--prefix", &top, "--allow-create"])
        .start();
    let name = format!("{top}/fresh");
    std::fs::create_dir(m.p(&name)).unwrap();
    let out = sh("printf '%s' brand-new > current", &m.p(&name));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(current_string(&name), "brand-new");
    assert!(is_uuid_v4(&stage(&name, "AWSCURRENT").unwrap().0));
    assert_eq!(m.read_string(&format!("{name}/current")), "brand-new");
    let entries = ls(&m.p(&name));
    assert!(entries.contains(&"current".to_string()), "{entries:?}");
}
