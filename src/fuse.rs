//! The fuser adapter: turns each kernel request into a call on `fs::Fs` and
//! the result into a reply. A request is polled once on the FUSE thread; if
//! it needs the backend it is moved to the tokio runtime and answered from
//! there, so no FUSE thread ever waits on the network.
//!
//! Longer than 700 lines on purpose: it is the one `impl Filesystem` of
//! fuser, an arm per kernel request with its reply conversion and log
//! line, and the kernel's flags at init; split, that one trait impl would
//! be spread over files again, which is what the fs façade undid.

use std::ffi::OsStr;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use tracing::Level;

use crate::error::Error;
use crate::fs::{Attr, Caller, Closer, Entry, Fs, Kind, Opened, Ownership};
use crate::inode::Ino;
use crate::process;

pub struct FuseAdapter {
    fs: Arc<Fs>,
    rt: tokio::runtime::Handle,
}

/// Names the file (`prod/db/password/previous`), never a value.
fn log_error(op: &'static str, path: &str, e: &Error) {
    match e.level() {
        Level::DEBUG => tracing::debug!(op, path, error = %e, "request failed"),
        Level::INFO => tracing::info!(op, path, error = %e, "request refused"),
        _ => tracing::warn!(op, path, error = %e, "request failed"),
    }
}

/// What a failed request's log line names: a file by its inode, or a name
/// in a directory (unlink, rename, create: the file's path, not the
/// directory's).
enum At {
    Ino(u64),
    Name(u64, String),
}

impl From<u64> for At {
    fn from(ino: u64) -> Self {
        At::Ino(ino)
    }
}

fn errno(fs: &Fs, op: &'static str, at: impl Into<At>, e: Error) -> Errno {
    let path = match at.into() {
        At::Ino(ino) => fs.path_of(Ino(ino)),
        At::Name(dir, name) => fs.path_in(Ino(dir), &name),
    };
    log_error(op, &path, &e);
    if !matches!(e, Error::NotFound | Error::NotImplemented) {
        fs.stats().fs_error();
    }
    Errno::from_i32(e.errno())
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino.0),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind: match a.kind {
            Kind::Dir => FileType::Directory,
            Kind::File => FileType::RegularFile,
        },
        perm: a.perm,
        nlink: if a.kind == Kind::Dir { 2 } else { 1 },
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn fopen_flags(o: &Opened) -> FopenFlags {
    let mut f = FopenFlags::empty();
    if o.keep_cache {
        f |= FopenFlags::FOPEN_KEEP_CACHE;
    }
    if o.direct_io {
        f |= FopenFlags::FOPEN_DIRECT_IO;
    }
    if o.no_flush {
        f |= FopenFlags::FOPEN_NOFLUSH;
    }
    f
}

fn caller(req: &Request) -> Caller {
    Caller {
        pid: req.pid(),
        uid: req.uid(),
    }
}

/// [[access]] hook: a commit `fut` makes is logged as the requester's.
fn writer<T, F: Future<Output = T>>(
    fs: &Fs,
    req: &Request,
    ino: u64,
    fut: F,
) -> impl Future<Output = T> + use<T, F> {
    crate::access::as_writer(caller(req), fs.path_of(Ino(ino)), fut)
}

fn name_str(name: &OsStr) -> Option<String> {
    name.to_str().map(str::to_string)
}

/// getxattr/listxattr's protocol: size 0 asks for the length; a buffer
/// too small is ERANGE.
fn reply_xattr(reply: fuser::ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if (size as usize) < value.len() {
        reply.error(Errno::from_i32(libc::ERANGE));
    } else {
        reply.data(value);
    }
}

impl FuseAdapter {
    pub fn new(fs: Arc<Fs>, rt: tokio::runtime::Handle) -> Self {
        Self { fs, rt }
    }

    /// Polls `fut` once here; answers inline if it is done (memory only),
    /// otherwise hands it to the runtime, which answers when it completes.
    fn run<T, F, D>(&self, fut: F, done: D)
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
        D: FnOnce(T) + Send + 'static,
    {
        let _rt = self.rt.enter();
        let mut fut = Box::pin(fut);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => done(v),
            Poll::Pending => {
                self.rt.spawn(async move { done(fut.await) });
            }
        }
    }

    fn reply_entry(
        &self,
        op: &'static str,
        at: impl Into<At> + Send + 'static,
        fut: impl Future<Output = Result<Entry, Error>> + Send + 'static,
        reply: ReplyEntry,
    ) {
        let fs = self.fs.clone();
        self.run(fut, move |r| match r {
            Ok(e) => reply.entry(&e.ttl, &file_attr(&e.attr), Generation(0)),
            Err(e) => reply.error(errno(&fs, op, at, e)),
        });
    }

    fn reply_attr(
        &self,
        op: &'static str,
        at: impl Into<At> + Send + 'static,
        fut: impl Future<Output = Result<Entry, Error>> + Send + 'static,
        reply: ReplyAttr,
    ) {
        let fs = self.fs.clone();
        self.run(fut, move |r| match r {
            Ok(e) => reply.attr(&e.ttl, &file_attr(&e.attr)),
            Err(e) => reply.error(errno(&fs, op, at, e)),
        });
    }

    fn reply_empty(
        &self,
        op: &'static str,
        at: impl Into<At> + Send + 'static,
        fut: impl Future<Output = Result<(), Error>> + Send + 'static,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        self.run(fut, move |r| match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&fs, op, at, e)),
        });
    }
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // FUSE_DIRECT_IO_ALLOW_MMAP: read handles use direct I/O (every
        // read is the handle's version) and must still be mappable.
        // The kernel drops cached pages itself when a refreshed mtime
        // differs. FUSE_ATOMIC_O_TRUNC is not asked for: with it the kernel
        // sets the inode's size to 0 at open(O_TRUNC), and readers of the
        // stored value, which share that size, read nothing until the write
        // is stored. Without it, O_TRUNC arrives as a setattr on the new
        // handle, answered with the stored value's size.
        for cap in [
            InitFlags::FUSE_AUTO_INVAL_DATA,
            InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP,
        ] {
            if let Err(missing) = config.add_capabilities(cap) {
                tracing::warn!(?missing, "kernel lacks a FUSE capability");
            }
        }
        Ok(())
    }

    /// No ioctl means anything here: ENOTTY, as for any file that is not a
    /// terminal (Python's open() asks TCGETS of every file), quietly.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(fuser::Errno::from_i32(libc::ENOTTY));
    }

    /// `user.secretsfs.stages` on `versions/` entries; every other name
    /// has no value (ENODATA).
    fn getxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        size: u32,
        reply: fuser::ReplyXattr,
    ) {
        let fs = self.fs.clone();
        let fs2 = self.fs.clone();
        let name = name.to_str().unwrap_or_default().to_string();
        self.run(
            async move { fs.xattr(Ino(ino.0), &name).await },
            move |r| match r {
                Ok(Some(v)) => reply_xattr(reply, size, &v),
                Ok(None) => reply.error(Errno::ENODATA),
                Err(e) => reply.error(errno(&fs2, "getxattr", ino.0, e)),
            },
        );
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: fuser::ReplyXattr) {
        let mut names = Vec::new();
        for n in self.fs.xattr_names(Ino(ino.0)) {
            names.extend_from_slice(n.as_bytes());
            names.push(0);
        }
        reply_xattr(reply, size, &names);
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name_str(name) else {
            return reply.error(Errno::ENOENT);
        };
        let fs = self.fs.clone();
        self.reply_entry(
            "lookup",
            At::Name(parent.0, name.clone()),
            {
                let who = caller(req);
                async move { fs.lookup(Ino(parent.0), &name, who).await }
            },
            reply,
        );
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(Ino(ino.0), nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let fs = self.fs.clone();
        self.reply_attr(
            "getattr",
            ino.0,
            async move { fs.getattr(Ino(ino.0), fh.map(|f| f.0)).await },
            reply,
        );
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let fs = self.fs.clone();
        let owner = Ownership { mode, uid, gid };
        let who = caller(req);
        // A truncation by path commits: logged as the requester's.
        let fut = writer(&self.fs, req, ino.0, async move {
            fs.setattr_as(Ino(ino.0), fh.map(|f| f.0), size, owner, who)
                .await
        });
        self.reply_attr("setattr", ino.0, fut, reply);
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let Some(name) = name_str(name) else {
            return reply.error(Errno::EINVAL);
        };
        let fs = self.fs.clone();
        self.reply_entry(
            "mkdir",
            At::Name(parent.0, name.clone()),
            async move { fs.mkdir(Ino(parent.0), &name).await },
            reply,
        );
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(name) = name_str(name) else {
            return reply.error(Errno::ENOENT);
        };
        let fs = self.fs.clone();
        let who = caller(req);
        let at = At::Name(parent.0, name.clone());
        // Removing a JSON key commits: logged as the requester's.
        let path = self.fs.path_in(Ino(parent.0), &name);
        let fut = crate::access::as_writer(who, path, async move {
            fs.unlink(Ino(parent.0), &name, who).await
        });
        self.reply_empty("unlink", at, fut, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(name) = name_str(name) else {
            return reply.error(Errno::ENOENT);
        };
        let fs = self.fs.clone();
        self.reply_empty(
            "rmdir",
            At::Name(parent.0, name.clone()),
            async move { fs.rmdir(Ino(parent.0), &name).await },
            reply,
        );
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (Some(name), Some(newname)) = (name_str(name), name_str(newname)) else {
            return reply.error(Errno::EPERM);
        };
        if !flags.is_empty() {
            return reply.error(Errno::EINVAL);
        }
        let fs = self.fs.clone();
        let who = caller(req);
        let target = self.fs.path_in(Ino(newparent.0), &newname);
        let at = At::Name(parent.0, name.clone());
        let fut = async move {
            let (from, to) = ((Ino(parent.0), &*name), (Ino(newparent.0), &*newname));
            fs.access_rename(from, to, who).await?; // [[access]] hook
            fs.rename(from.0, from.1, to.0, to.1).await
        };
        let fut = crate::access::as_writer(who, target, fut);
        self.reply_empty("rename", at, fut, reply);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let fs = self.fs.clone();
        let who = caller(req);
        let fs2 = self.fs.clone();
        self.run(
            async move { fs.open_as(Ino(ino.0), flags.0, who).await },
            move |r| match r {
                Ok(o) => reply.opened(FileHandle(o.fh), fopen_flags(&o)),
                Err(e) => reply.error(errno(&fs2, "open", ino.0, e)),
            },
        );
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let fs = self.fs.clone();
        let fs2 = self.fs.clone();
        // read(2) on a handle carries a lock owner; a page-cache fill (a
        // map's fault, no-open mode) does not.
        let direct = lock_owner.is_some();
        self.run(
            async move { fs.read(Ino(ino.0), fh.0, offset, size, direct).await },
            move |r| match r {
                Ok(mut data) => {
                    reply.data(&data);
                    zeroize::Zeroize::zeroize(&mut data);
                }
                Err(e) => reply.error(errno(&fs2, "read", ino.0, e)),
            },
        );
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let fs = self.fs.clone();
        let fs2 = self.fs.clone();
        let data = zeroize::Zeroizing::new(data.to_vec());
        self.run(
            {
                let pid = req.pid();
                async move { fs.write(fh.0, offset, &data, pid).await }
            },
            move |r| match r {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(errno(&fs2, "write", ino.0, e)),
            },
        );
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        let pid = req.pid();
        let commits = self.fs.may_commit(fh.0);
        let fut = async move {
            let closer = if commits {
                inspect_closer(pid).await
            } else {
                Closer::by(pid)
            };
            fs.flush(fh.0, closer).await
        };
        self.reply_empty("flush", ino.0, writer(&self.fs, req, ino.0, fut), reply);
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        let fut = writer(&self.fs, req, ino.0, async move { fs.release(fh.0).await });
        self.run(fut, move |()| reply.ok());
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        let fut = writer(&self.fs, req, ino.0, async move { fs.fsync(fh.0).await });
        self.reply_empty("fsync", ino.0, fut, reply);
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let fs = self.fs.clone();
        let fs2 = self.fs.clone();
        self.run(
            {
                let who = caller(req);
                async move { fs.opendir(Ino(ino.0), who).await }
            },
            move |r| match r {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(errno(&fs2, "opendir", ino.0, e)),
            },
        );
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.fs.readdir(fh.0) {
            Ok(entries) => {
                for (i, e) in entries.iter().enumerate().skip(offset as usize) {
                    let kind = match e.kind {
                        Kind::Dir => FileType::Directory,
                        Kind::File => FileType::RegularFile,
                    };
                    if reply.add(INodeNo(e.ino.0), (i + 1) as u64, kind, &e.name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(&self.fs, "readdir", ino.0, e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let Some(name) = name_str(name) else {
            return reply.error(Errno::EINVAL);
        };
        let fs = self.fs.clone();
        let fs2 = self.fs.clone();
        let who = caller(req);
        let at_name = name.clone();
        self.run(
            async move { fs.create(Ino(parent.0), &name, flags, mode, who).await },
            move |r| match r {
                Ok((e, o)) => reply.created(
                    &e.ttl,
                    &file_attr(&e.attr),
                    Generation(0),
                    FileHandle(o.fh),
                    fopen_flags(&o),
                ),
                Err(e) => reply.error(errno(&fs2, "create", At::Name(parent.0, at_name), e)),
            },
        );
    }

    // What fuser would otherwise answer ENOSYS with a "[Not Implemented]"
    // warning naming the inode: each gets its correct answer, quietly.

    /// Extended attributes cannot be set or removed: ENOTSUP, which cp -a,
    /// sed -i and vim (copying an ACL or an SELinux label) take in stride.
    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::from_i32(libc::ENOTSUP));
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::from_i32(libc::ENOTSUP));
    }

    /// Nothing here is a symbolic link.
    fn readlink(&self, _req: &Request, _ino: INodeNo, reply: ReplyData) {
        reply.error(Errno::EINVAL);
    }

    /// Directories hold nothing to write back.
    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    /// The kernel checks permissions itself (default_permissions), so it
    /// does not ask; if it did, what it allows is allowed.
    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    /// ENOSYS is the protocol's "use your own": the kernel then answers
    /// these itself (generic lseek, a read/write copy, the default poll
    /// mask, EOPNOTSUPP for fallocate) and does not ask again.
    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: i64,
        _whence: i32,
        reply: fuser::ReplyLseek,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ph: fuser::PollNotifier,
        _events: fuser::PollEvents,
        _flags: fuser::PollFlags,
        reply: fuser::ReplyPoll,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    /// Not asked for (no FUSE_POSIX_LOCKS, no block device, no
    /// READDIRPLUS): the kernel never sends these; quiet if it does.
    fn getlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        _start: u64,
        _end: u64,
        _typ: i32,
        _pid: u32,
        reply: fuser::ReplyLock,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn setlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        _start: u64,
        _end: u64,
        _typ: i32,
        _pid: u32,
        _sleep: bool,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn bmap(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _blocksize: u32,
        _idx: u64,
        reply: fuser::ReplyBmap,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        reply: fuser::ReplyDirectoryPlus,
    ) {
        reply.error(Errno::ENOSYS);
    }
}

/// How long /proc may take to say who is closing. Reading a task's
/// /proc/PID/stat can block while that task exits (seen: the last thread
/// of a process whose leader already exited, flushing at exit), and that
/// task waits for our answer: so it is read off the FUSE threads, bounded.
const PROC_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Who closes: the thread group of the FLUSH's thread, and whether it is
/// dying of a signal (checked while it waits for us, so /proc has it). Both
/// are read in one blocking job, off the session threads. When /proc does
/// not answer in time, the close is taken as a killed process's: storing
/// nothing (the writer sees EIO) is safe, storing half a value is not.
async fn inspect_closer(pid: u32) -> Closer {
    let job =
        tokio::task::spawn_blocking(move || (process::tgid(pid), process::killed_by_signal(pid)));
    match tokio::time::timeout(PROC_WAIT, job).await {
        Ok(Ok((tgid, killed))) => Closer { tgid, killed },
        _ => {
            tracing::warn!(
                pid,
                "/proc did not answer for the closing task in time; nothing is stored for it"
            );
            Closer {
                tgid: pid,
                killed: true,
            }
        }
    }
}

/// Sends invalidations to the kernel from a thread of its own: never from
/// inside a request handler, where it could deadlock on the same inode.
pub struct NotifyInvalidator {
    tx: std::sync::mpsc::Sender<Inval>,
}

/// What the kernel is told to drop: an inode's pages and attributes, or
/// one name's entry in a directory.
pub enum Inval {
    Inode(Ino),
    Entry(Ino, String),
    /// Answered once every earlier one was sent.
    Delivered(tokio::sync::oneshot::Sender<()>),
}

impl NotifyInvalidator {
    /// The invalidator and the receiving end, to be served once the session
    /// (and so its notifier) exists.
    pub fn channel() -> (Arc<Self>, std::sync::mpsc::Receiver<Inval>) {
        let (tx, rx) = std::sync::mpsc::channel();
        (Arc::new(Self { tx }), rx)
    }

    pub fn serve(rx: std::sync::mpsc::Receiver<Inval>, notifier: fuser::Notifier) {
        std::thread::Builder::new()
            .name("secretsfs-inval".into())
            .spawn(move || {
                while let Ok(what) = rx.recv() {
                    let (ino, sent) = match &what {
                        Inval::Inode(ino) => (ino.0, notifier.inval_inode(INodeNo(ino.0), 0, 0)),
                        Inval::Entry(parent, name) => (
                            parent.0,
                            notifier.inval_entry(INodeNo(parent.0), OsStr::new(name)),
                        ),
                        Inval::Delivered(_) => (0, Ok(())),
                    };
                    if let Inval::Delivered(done) = what {
                        let _ = done.send(());
                        continue;
                    }
                    if let Err(e) = sent
                        && e.raw_os_error() != Some(libc::ENOENT)
                    {
                        tracing::debug!(ino, error = %e, "invalidation not delivered");
                    }
                }
            })
            .expect("spawn invalidation thread");
    }
}

impl crate::fs::Invalidate for NotifyInvalidator {
    fn inval_inode(&self, ino: Ino) {
        let _ = self.tx.send(Inval::Inode(ino));
    }

    fn inval_entry(&self, parent: Ino, name: &str) {
        let _ = self.tx.send(Inval::Entry(parent, name.to_string()));
    }

    fn delivered(&self) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx.send(Inval::Delivered(tx)).ok().map(|_| rx)
    }
}
