//! The plain values the filesystem answers with and is asked with: a file's
//! attributes, a lookup's entry, a listing's entry, an opened handle's
//! flags, who asks and who closes. A leaf: every owner and view may use
//! these without depending on the `Fs` that composes them.

use std::time::{Duration, SystemTime};

use crate::inode::Ino;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Dir,
    File,
}

#[derive(Clone, Debug)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub size: u64,
    pub mtime: SystemTime,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
}

/// A lookup's answer: the attributes and how long the kernel may trust them.
#[derive(Clone, Debug)]
pub struct Entry {
    pub attr: Attr,
    pub ttl: Duration,
}

impl Entry {
    /// Attributes the kernel must ask for again every time (they change
    /// under it: files being written, the stats file).
    pub(crate) fn uncached(attr: Attr) -> Self {
        Self {
            attr,
            ttl: Duration::ZERO,
        }
    }
}

#[derive(Clone, Debug)]
pub struct DirEntry {
    pub ino: Ino,
    pub kind: Kind,
    pub name: String,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Opened {
    pub fh: u64,
    pub keep_cache: bool,
    pub direct_io: bool,
    /// Nothing to do at close: the kernel need not send FLUSH.
    pub no_flush: bool,
}

/// Who made a request: the thread's pid and the user.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub pid: u32,
    pub uid: u32,
}

/// Who closes a file: the process (thread group) and whether it is dying
/// of a signal, in which case its close is not one it asked for.
#[derive(Clone, Copy, Debug)]
pub struct Closer {
    pub tgid: u32,
    pub killed: bool,
}

impl Closer {
    /// A close made by the process itself.
    pub fn by(tgid: u32) -> Self {
        Self {
            tgid,
            killed: false,
        }
    }
}

/// Tells the kernel to drop what it caches of an inode (pages, attributes).
pub trait Invalidate: Send + Sync + 'static {
    fn inval_inode(&self, ino: Ino);
    /// The kernel drops its entry for `name` in `parent`: the next path
    /// walk looks it up again.
    fn inval_entry(&self, _parent: Ino, _name: &str) {}
    /// A receiver that completes once everything asked before it was
    /// delivered to the kernel; None: delivery is immediate.
    fn delivered(&self) -> Option<tokio::sync::oneshot::Receiver<()>> {
        None
    }
}

/// How much state the filesystem holds, for the memory bound and its tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sizes {
    pub inodes: usize,
    pub kernel_views: usize,
    pub handles: usize,
    pub direct_names: usize,
    pub missing_names: usize,
    pub pending_dirs: usize,
    pub cached_values: usize,
    pub value_bytes: usize,
    pub version_list_bytes: usize,
    pub listing_bytes: usize,
    pub temp_files: usize,
    pub temp_bytes: usize,
    pub put_locks: usize,
}

/// Bytes `[offset, offset + size)` of `data`, clipped to its end.
pub fn slice(data: &[u8], offset: u64, size: u32) -> Vec<u8> {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(data.len());
    let end = start.saturating_add(size as usize).min(data.len());
    data[start..end].to_vec()
}
