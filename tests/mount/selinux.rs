//! SELinux mount options on a real mount: what this host's kernel answers
//! to `context=` on FUSE, and what the daemon then does (docs/packages.md,
//! "SELinux"). The parsing and the exact mount data are unit tests
//! (src/selinux.rs, src/mount.rs).

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

use crate::common::Mount;

const HTTPD: &str = "system_u:object_r:httpd_sys_content_t:s0";

/// The mount options of the filesystem mounted at `path`, as mountinfo
/// lists them (per mount and per superblock).
fn mount_options(path: &Path) -> String {
    let want = path.to_str().unwrap();
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = table
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(want))
        .unwrap_or_else(|| panic!("{want} is not mounted:\n{table}"));
    line.to_string()
}

/// Unmounts on drop what a bare mount(2) in a test may have mounted.
struct Unmount<'a>(&'a Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        let c = CString::new(self.0.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path; failing when nothing is mounted
        // is fine.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// mount(2) of a FUSE filesystem with `extra` appended to its data, the
/// way the daemon builds it; the errno when the kernel refuses.
fn bare_fuse_mount(at: &Path, extra: &str) -> Result<(), i32> {
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .expect("/dev/fuse");
    let data = format!(
        "fd={},rootmode=40000,user_id=0,group_id=0,default_permissions{extra}",
        dev.as_raw_fd()
    );
    let data = CString::new(data).unwrap();
    let target = CString::new(at.as_os_str().as_bytes()).unwrap();
    // SAFETY: NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::mount(
            c"secretsfs".as_ptr(),
            target.as_ptr(),
            c"fuse.secretsfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap())
    }
}

#[test]
fn context_is_carried_where_selinux_is_enabled_and_left_out_where_it_is_not() {
    let store = tempfile::tempdir().unwrap();
    // The local store: no API, so no emulator is needed (the endpoint is
    // never called).
    let m = Mount::local(store.path())
        .endpoint("http://127.0.0.1:9".into())
        .arg("--demo")
        .args(["-o", &format!("ttl=60,context={HTTPD}")])
        .start();
    let options = mount_options(&m.path);
    let log = m.log_text();
    if secretsfs::selinux::enabled() {
        // The kernel shows it quoted only when it holds a comma.
        assert!(options.contains(&format!("context={HTTPD}")), "{options}");
        assert!(!log.contains("SELinux is not enabled"), "{log}");
    } else {
        // What this machine showed (no SELinux): mount(2) refuses the option
        // for FUSE (EINVAL, "fuse: Unknown parameter 'context'" in the
        // kernel log), so the daemon leaves it out, as mount(8) does, and
        // says so in one line.
        let scratch = tempfile::tempdir().unwrap();
        let _guard = Unmount(scratch.path());
        let quoted = format!(",context=\"{HTTPD}\"");
        assert_eq!(bare_fuse_mount(scratch.path(), &quoted), Err(libc::EINVAL));
        drop(_guard);
        assert!(!options.contains("context="), "{options}");
        let said: Vec<_> = log
            .lines()
            .filter(|l| l.contains("SELinux is not enabled"))
            .collect();
        assert_eq!(said.len(), 1, "{log}");
        assert!(
            said[0].contains(" INFO ") && said[0].contains(&format!("context={HTTPD}")),
            "{log}"
        );
    }
    assert_eq!(
        m.read_string("demo/api-key/current"),
        "ak_live_0123456789abcdef"
    );
    assert!(!log.contains("ERROR") && !log.contains("WARN"), "{log}");
}

#[test]
fn a_value_that_is_not_a_context_fails_at_start_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let out = Command::new(env!("CARGO_BIN_EXE_secretsfs"))
        .args(["--local"])
        .arg(dir.path().join("store"))
        .args(["-o", "context=httpd_sys_content_t"])
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("context: 'httpd_sys_content_t' is not an SELinux context"),
        "{err}"
    );
    assert!(!mnt.exists(), "nothing was created for a refused start");
}
