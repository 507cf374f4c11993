//! Open handles: what each file handle number holds. A read handle holds
//! its version, a write handle its buffer and state, a temporary file's
//! handle the file itself (not its name), a directory handle a snapshot.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::temp::TempRef;
use super::types::{Attr, DirEntry};
use super::write_state::WriteRef;
use crate::store::{SecretBytes, SecretVersion};

#[derive(Clone)]
pub enum Handle {
    /// A read handle: one version from open to close (every read is
    /// answered from it, with direct I/O).
    Read(Arc<SecretVersion>),
    /// Bytes fixed at open (the stats file).
    Plain(Arc<[u8]>),
    Write(WriteRef),
    Temp(TempHandle),
    Dir(Arc<Vec<DirEntry>>),
    /// A rendered file: the bytes rendered at open, and their attributes.
    Rendered {
        bytes: Arc<SecretBytes>,
        attr: Attr,
    },
    /// `.secretsfs/refresh` open for writing.
    Refresh,
}

/// A temporary file opened: the file and how it was opened.
#[derive(Clone)]
pub struct TempHandle {
    pub file: TempRef,
    pub append: bool,
    /// The process that opened it: its close commits a file renamed onto
    /// `current` since.
    pub owner: u32,
}

#[derive(Default)]
pub struct Handles {
    map: Mutex<HashMap<u64, Handle>>,
    next: AtomicU64,
}

impl Handles {
    pub fn add(&self, h: Handle) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.map.lock().insert(fh, h);
        fh
    }

    pub fn get(&self, fh: u64) -> Option<Handle> {
        self.map.lock().get(&fh).cloned()
    }

    pub fn remove(&self, fh: u64) -> Option<Handle> {
        self.map.lock().remove(&fh)
    }

    pub fn all(&self) -> Vec<Handle> {
        self.map.lock().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }
}
