//! Mounting and unmounting, before and after the FUSE session: the checks on
//! the mountpoint, the mount itself (mount(2) with the type
//! `fuse.secretsfs`, or fusermount3 when that is not allowed, as libfuse
//! does), and the unmount that matches how it was mounted.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};

use crate::refusal::Refusal;
use crate::selinux::Contexts;

/// What the mount is made with.
#[derive(Clone, Debug)]
pub struct MountSpec {
    pub read_only: bool,
    pub allow_other: bool,
    /// SELinux options for mount(2)'s data, as this host can take them
    /// (`Contexts::for_this_host`).
    pub selinux: Contexts,
}

/// How the mount was made, which decides how it is unmounted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    /// mount(2) by this process (root, or CAP_SYS_ADMIN).
    Kernel,
    /// The setuid helper fusermount3 (an unprivileged user).
    Fusermount,
}

const FUSERMOUNT: &str = "fusermount3";

/// What a mount needs from its mountpoint: a directory (created if
/// missing), not already a mount point (a dead one left by a killed
/// instance is detached before this), and empty unless `nonempty`.
pub fn check_mountpoint(path: &Path, nonempty: bool) -> Result<(), Refusal> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Ok(m) if !m.is_dir() => {
            return Err(Refusal::config(format!(
                "mountpoint {shown} is not a directory; give a directory (it is created if missing)"
            )));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(path)
                .map_err(|e| Refusal::config(format!("creating mountpoint {shown}: {e}")))?;
        }
        Err(e) => return Err(Refusal::config(format!("mountpoint {shown}: {e}"))),
    }
    // Another daemon's mount: it may be on its way out (a restart).
    if let Some(fstype) = mounted_at(path) {
        return Err(Refusal::failure(format!(
            "mountpoint {shown} is already a mount point ({fstype}); unmount it first (umount {shown})"
        )));
    }
    let has_entries = std::fs::read_dir(path)
        .map_err(|e| Refusal::config(format!("mountpoint {shown}: {e}")))?
        .next()
        .is_some();
    if has_entries && !nonempty {
        return Err(Refusal::config(format!(
            "mountpoint {shown} is not empty (its files would be hidden); use -o nonempty to mount over it anyway"
        )));
    }
    Ok(())
}

/// The filesystem type mounted exactly at `path`, if any.
pub fn mounted_at(path: &Path) -> Option<String> {
    let want = std::fs::canonicalize(path).ok()?;
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    table.lines().find_map(|line| {
        // id parent major:minor root mountpoint options ... - fstype source ...
        let mut fields = line.split(' ');
        let point = fields.nth(4)?;
        let fstype = line.split(" - ").nth(1)?.split(' ').next()?;
        (Path::new(&unescape(point)) == want).then(|| fstype.to_string())
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mounts and returns the /dev/fuse descriptor to serve. mount(2) first
/// (the type is `fuse.secretsfs`, as `findmnt -t fuse.secretsfs` expects);
/// when /dev/fuse cannot be opened or mount(2) is not allowed, fusermount3.
pub fn mount(path: &Path, spec: &MountSpec) -> Result<(OwnedFd, How), String> {
    match kernel_mount(path, spec) {
        Ok(fd) => Ok((fd, How::Kernel)),
        Err(KernelMount::NotAllowed(why)) if !spec.selinux.is_empty() => Err(format!(
            "mounting {} with {}: {why}; only mount(2) carries SELinux options \
             (fusermount3 refuses them): mount as root, as the packaged units do",
            path.display(),
            spec.selinux.shown()
        )),
        Err(KernelMount::NotAllowed(why)) => {
            tracing::debug!(reason = %why, "mounting with fusermount3");
            fusermount(path, spec).map(|fd| (fd, How::Fusermount))
        }
        Err(KernelMount::Failed(e)) => Err(e),
    }
}

enum KernelMount {
    /// Not permitted for this user: fusermount3 may do it.
    NotAllowed(String),
    Failed(String),
}

fn kernel_mount(path: &Path, spec: &MountSpec) -> Result<OwnedFd, KernelMount> {
    let dev = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(f) => OwnedFd::from(f),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(KernelMount::NotAllowed(format!("/dev/fuse: {e}")));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(KernelMount::Failed(
                "/dev/fuse does not exist: load the fuse module (modprobe fuse)".into(),
            ));
        }
        Err(e) => return Err(KernelMount::Failed(format!("/dev/fuse: {e}"))),
    };
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & libc::S_IFMT)
        .unwrap_or(libc::S_IFDIR);
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    let data = mount_data(dev.as_raw_fd(), mode, (uid.as_raw(), gid.as_raw()), spec);
    let mut flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_NOATIME;
    if spec.read_only {
        flags |= libc::MS_RDONLY;
    }
    let cpath = cstring(path.as_os_str());
    let data = CString::new(data).expect("no NUL");
    // SAFETY: every pointer is to a NUL-terminated string (literals, or
    // CStrings alive until after the call) that mount(2) only reads.
    let r = unsafe {
        libc::mount(
            c"secretsfs".as_ptr(),
            cpath.as_ptr(),
            c"fuse.secretsfs".as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if r == 0 {
        return Ok(dev);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EPERM) => Err(KernelMount::NotAllowed(format!("mount(2): {e}"))),
        _ => Err(KernelMount::Failed(mount_failed(path, &e, &spec.selinux))),
    }
}

/// mount(2)'s data: the FUSE options, then the SELinux ones.
fn mount_data(fd: i32, mode: u32, (uid, gid): (u32, u32), spec: &MountSpec) -> String {
    let mut data =
        format!("fd={fd},rootmode={mode:o},user_id={uid},group_id={gid},default_permissions");
    if spec.allow_other {
        data.push_str(",allow_other");
    }
    data.push_str(&spec.selinux.mount_data());
    data
}

/// Why mount(2) failed, in one line. EINVAL with SELinux options is
/// almost always one of them (a context the loaded policy does not know,
/// or defcontext, which FUSE cannot take), so the line names them.
fn mount_failed(path: &Path, e: &std::io::Error, selinux: &Contexts) -> String {
    let shown = path.display();
    if e.raw_os_error() == Some(libc::EINVAL) && !selinux.is_empty() {
        return format!(
            "mounting {shown}: {e}: the kernel refused the SELinux options {}: check that each \
             context exists in the loaded policy (the kernel log says which: dmesg | grep SELinux); \
             defcontext does not apply to FUSE",
            selinux.shown()
        );
    }
    format!("mounting {shown}: {e}")
}

fn cstring(s: &OsStr) -> CString {
    CString::new(s.as_bytes()).unwrap_or_else(|_| c"/".to_owned())
}

/// The setuid helper mounts and hands back the /dev/fuse descriptor over a
/// socket (`_FUSE_COMMFD`), as libfuse does.
fn fusermount(path: &Path, spec: &MountSpec) -> Result<OwnedFd, String> {
    let advice = "to mount as a user who cannot use /dev/fuse directly: install fusermount3 \
                  (package fuse3), make /dev/fuse usable by that user (usually membership of \
                  the 'fuse' group or mode 0666), and for --allow-other put user_allow_other \
                  in /etc/fuse.conf";
    let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let mut opts = String::from(if spec.read_only { "ro" } else { "rw" });
    opts.push_str(
        ",nosuid,nodev,noexec,noatime,default_permissions,fsname=secretsfs,subtype=secretsfs",
    );
    if spec.allow_other {
        opts.push_str(",allow_other");
    }
    let theirs_fd = theirs.as_raw_fd();
    let mut cmd = Command::new(FUSERMOUNT);
    cmd.arg("-o")
        .arg(&opts)
        .arg("--")
        .arg(path)
        .env("_FUSE_COMMFD", theirs_fd.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: only fcntl (async-signal-safe) between fork and exec: the
    // helper must inherit its end of the socket.
    unsafe {
        cmd.pre_exec(move || {
            let flags = libc::fcntl(theirs_fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(theirs_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Err(format!("could not run {FUSERMOUNT} ({e}); {advice}")),
    };
    drop(theirs);
    let received = receive_fd(&ours);
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{FUSERMOUNT}: {e}"))?;
    match received {
        Some(fd) if out.status.success() => Ok(fd),
        _ => {
            let said = String::from_utf8_lossy(&out.stderr);
            let said = said.trim();
            Err(format!(
                "{FUSERMOUNT} could not mount {}: {}; {advice}",
                path.display(),
                if said.is_empty() {
                    "no reason given"
                } else {
                    said
                }
            ))
        }
    }
}

/// One descriptor passed with SCM_RIGHTS, if the helper sent one.
fn receive_fd(sock: &UnixStream) -> Option<OwnedFd> {
    let mut buf = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!(std::os::fd::RawFd);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        // Not inherited by what the daemon runs (change hooks): a child
        // holding /dev/fuse could answer the mount, and keeps it alive
        // after the daemon dies.
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ok()?;
    for cmsg in msg.cmsgs().ok()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg
            && let Some(fd) = fds.first()
        {
            // SAFETY: the descriptor came in this message's SCM_RIGHTS: the
            // kernel installed it in this process for this call alone, so
            // nothing else owns it or will close it.
            return Some(unsafe { OwnedFd::from_raw_fd(*fd) });
        }
    }
    None
}

/// Unmounts; `lazy` detaches a busy mount from the tree at once.
pub fn unmount(path: &Path, how: How, lazy: bool) -> Result<(), String> {
    match how {
        How::Kernel => {
            use nix::mount::{MntFlags, umount2};
            let flags = match lazy {
                true => MntFlags::MNT_DETACH,
                false => MntFlags::empty(),
            };
            umount2(path, flags)
                .map_err(|e| format!("umount {}: {}", path.display(), std::io::Error::from(e)))
        }
        How::Fusermount => {
            let mut cmd = Command::new(FUSERMOUNT);
            cmd.arg(if lazy { "-uz" } else { "-u" })
                .arg("--")
                .arg(path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let out = cmd.output().map_err(|e| format!("{FUSERMOUNT} -u: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{FUSERMOUNT} -u {}: {}",
                    path.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(allow_other: bool, selinux: &[(&str, &str)]) -> MountSpec {
        let mut args = crate::selinux::ContextArgs::default();
        for (k, v) in selinux {
            args.set(k, v);
        }
        MountSpec {
            read_only: false,
            allow_other,
            selinux: args.into_contexts().unwrap(),
        }
    }

    #[test]
    fn mount_data_carries_the_fuse_options_then_the_selinux_ones() {
        let plain = spec(false, &[]);
        assert_eq!(
            mount_data(7, 0o40000, (0, 0), &plain),
            "fd=7,rootmode=40000,user_id=0,group_id=0,default_permissions"
        );
        let httpd = "system_u:object_r:httpd_sys_content_t:s0";
        let labelled = spec(true, &[("context", httpd), ("fscontext", httpd)]);
        assert_eq!(
            mount_data(3, 0o40000, (1000, 1001), &labelled),
            format!(
                "fd=3,rootmode=40000,user_id=1000,group_id=1001,default_permissions,allow_other,\
                 context=\"{httpd}\",fscontext=\"{httpd}\""
            )
        );
    }

    #[test]
    fn a_refused_mount_names_the_selinux_options_in_one_line() {
        let einval = std::io::Error::from_raw_os_error(libc::EINVAL);
        let labelled = spec(false, &[("context", "u:r:t_t:s0")]);
        let e = mount_failed(Path::new("/run/x"), &einval, &labelled.selinux);
        assert!(
            e.starts_with("mounting /run/x: Invalid argument")
                && e.contains("SELinux options context=u:r:t_t:s0")
                && !e.contains('\n'),
            "{e}"
        );
        let e = mount_failed(Path::new("/run/x"), &einval, &Contexts::default());
        assert_eq!(e, "mounting /run/x: Invalid argument (os error 22)");
        let busy = std::io::Error::from_raw_os_error(libc::EBUSY);
        let e = mount_failed(Path::new("/run/x"), &busy, &labelled.selinux);
        assert!(!e.contains("SELinux"), "{e}");
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape(r"/plain"), "/plain");
    }

    #[test]
    fn a_file_is_not_a_mountpoint_and_a_full_directory_needs_nonempty() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let e = check_mountpoint(&file, false).unwrap_err();
        assert!(e.message.contains("not a directory") && e.config, "{e}");
        let e = check_mountpoint(dir.path(), false).unwrap_err();
        assert!(e.message.contains("not empty") && e.config, "{e}");
        check_mountpoint(dir.path(), true).unwrap();
        let fresh = dir.path().join("new/mnt");
        check_mountpoint(&fresh, false).unwrap();
        assert!(fresh.is_dir());
        let e = check_mountpoint(Path::new("/proc"), true).unwrap_err();
        assert!(
            e.message.contains("already a mount point (proc)") && !e.config,
            "{e}"
        );
    }
}
