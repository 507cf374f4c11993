//! A write handle's life as a state machine: untouched -> dirty ->
//! committed | failed(errno) | abandoned (a writer killed by a signal),
//! as mountpoint-s3's `UploadState`; each close, fsync and release asks
//! the state what to do. What a commit puts (`Target`), the value limits and
//! the zeroing buffer growth. A leaf: it knows nothing of the filesystem
//! that drives it.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::types::Closer;
use crate::error::{Error, Result};
use crate::inode::{Ino, Node};
use crate::store::{Label, SecretBytes, SecretName};

/// Secrets Manager's limit on a value.
pub const MAX_VALUE_LEN: usize = 65_536;

/// Resizes a secret buffer to `len` (either way) without leaving an
/// unzeroed copy behind when it grows.
pub fn grow(buf: &mut Zeroizing<Vec<u8>>, len: usize) {
    if len > buf.capacity() {
        let mut bigger = Vec::with_capacity(len.max(buf.capacity() * 2).max(256));
        bigger.extend_from_slice(buf);
        *buf = Zeroizing::new(bigger);
    }
    buf.resize(len, 0);
}

fn write_at(buf: &mut Zeroizing<Vec<u8>>, offset: usize, data: &[u8], limit: usize) -> Result<()> {
    let end = offset.checked_add(data.len()).ok_or(Error::TooLarge)?;
    if end > limit {
        return Err(Error::TooLarge);
    }
    if end > buf.len() {
        grow(buf, end);
    }
    buf[offset..end].copy_from_slice(data);
    Ok(())
}

/// Where a write handle is in its life.
#[derive(Clone, Debug)]
enum Phase {
    /// Opened (truncating or not), nothing written: a close commits nothing.
    Untouched,
    /// Written since open or the last commit.
    Dirty,
    Committed,
    /// The last commit failed; the owner's later closes report it again.
    Failed(Error),
    /// The writer was killed by a signal: nothing is ever committed.
    Abandoned,
}

/// What a commit puts (a write handle's, or a temporary file's once it was
/// renamed onto a file).
#[derive(Clone, Debug)]
pub enum Target {
    /// The bytes, as the secret's new value.
    Current,
    /// AWSCURRENT's JSON with this key set to the bytes.
    /// (The key existed when the handle was opened.)
    JsonKey(Arc<str>, bool),
    /// A new version carrying only this label (`stages/<label>`).
    Stage(Label),
}

impl Target {
    /// The file of `secret` this target writes.
    pub fn node(&self, secret: SecretName) -> Node {
        match self {
            Target::Current => Node::Current(secret),
            Target::JsonKey(k, _) => Node::JsonKey(secret, k.clone()),
            Target::Stage(l) => Node::StageFile(secret, l.clone()),
        }
    }
}

/// An open-for-writing `current` (or `json/<key>`, `stages/<label>`).
pub struct WriteState {
    /// The inode of the `current` (or `json/<key>`) it writes.
    pub(super) ino: Ino,
    pub(super) name: SecretName,
    buf: Zeroizing<Vec<u8>>,
    phase: Phase,
    append: bool,
    /// The process that opened it: only its close commits.
    owner: u32,
    /// The secret does not exist yet (mkdir): the put is a CreateSecret.
    pub(super) create: bool,
    /// A write went past the limit: this handle never puts.
    too_large: bool,
    /// Processes that wrote since the last commit: if one of them is killed
    /// by a signal, the buffer may hold half of what it meant to write.
    writers: Vec<u32>,
    pub(super) target: Target,
}

/// What a close or an fsync is to do, as the state says.
pub enum Then {
    /// Put what the handle holds.
    Commit,
    /// Answer with this error (the last commit's, or the killed writer's).
    Fail(Error),
    /// Nothing to put and nothing to report.
    Nothing,
}

pub type WriteRef = Arc<tokio::sync::Mutex<WriteState>>;

impl WriteState {
    /// Opened on `ino` by `owner`, and nothing written or closed since.
    pub fn is_fresh(&self, ino: Ino, owner: u32) -> bool {
        self.ino == ino && self.owner == owner && matches!(self.phase, Phase::Untouched)
    }

    /// The secret, when this handle holds data no close has stored.
    pub fn unsaved(&self) -> Option<SecretName> {
        matches!(self.phase, Phase::Dirty).then(|| self.name.clone())
    }

    pub fn new(
        ino: Ino,
        name: SecretName,
        buf: Zeroizing<Vec<u8>>,
        flags: i32,
        owner: u32,
    ) -> Self {
        Self {
            ino,
            name,
            buf,
            phase: Phase::Untouched,
            append: flags & libc::O_APPEND != 0,
            owner,
            create: false,
            too_large: false,
            writers: Vec::new(),
            target: Target::Current,
        }
    }

    /// Writes `json/<key>`: the commit sets that key.
    pub(super) fn json_key(mut self, key: Arc<str>, existed: bool) -> Self {
        self.target = Target::JsonKey(key, existed);
        self
    }

    pub fn creating(mut self) -> Self {
        self.create = true;
        self
    }

    /// Commits put a version carrying only `label` (AWSCURRENT stays).
    pub fn staged(mut self, label: Label) -> Self {
        self.target = Target::Stage(label);
        self
    }

    /// The label this handle writes, when it writes `stages/<label>`.
    pub fn stage(&self) -> Option<&Label> {
        match &self.target {
            Target::Stage(l) => Some(l),
            Target::Current | Target::JsonKey(..) => None,
        }
    }

    pub fn buf(&self) -> &[u8] {
        &self.buf
    }

    pub fn write(&mut self, offset: u64, data: &[u8], writer: u32) -> Result<u32> {
        if matches!(self.phase, Phase::Abandoned) {
            return Err(Error::Abandoned);
        }
        if !self.writers.contains(&writer) {
            self.writers.push(writer);
        }
        let off = if self.append {
            self.buf.len()
        } else {
            usize::try_from(offset).map_err(|_| Error::TooLarge)?
        };
        self.phase = Phase::Dirty;
        if let Err(e) = write_at(&mut self.buf, off, data, MAX_VALUE_LEN) {
            self.too_large = true;
            return Err(e);
        }
        Ok(data.len() as u32)
    }

    /// ftruncate(2) on the handle: the value becomes what it holds.
    pub(super) fn resize(&mut self, size: usize) {
        grow(&mut self.buf, size);
        self.phase = Phase::Dirty;
        self.too_large = false;
    }

    /// open(O_TRUNC), which arrives as a truncation after the open: the
    /// handle starts empty, and stores nothing until something is written
    /// (a shell's `> current` closes a duplicate descriptor before it
    /// writes; that close must not put an empty value, or fail trying).
    pub(super) fn truncate_at_open(&mut self) {
        self.buf.clear();
    }

    /// A close(2) by `closer`: only the opener's close commits; the close
    /// made by the exit of a writer killed by a signal never does, and if
    /// it wrote, what the buffer holds may be half a value, for every
    /// holder.
    pub fn on_close(&mut self, closer: Closer) -> Then {
        if closer.killed {
            if matches!(self.phase, Phase::Dirty) && self.writers.contains(&closer.tgid) {
                tracing::info!(secret = %self.name, pid = closer.tgid, "writer killed by a signal; nothing stored");
                self.phase = Phase::Abandoned;
            }
            return Then::Nothing;
        }
        if closer.tgid != self.owner {
            return Then::Nothing;
        }
        self.on_sync()
    }

    /// An fsync(2), or the opener's close.
    pub fn on_sync(&self) -> Then {
        match &self.phase {
            Phase::Dirty => Then::Commit,
            Phase::Failed(e) => Then::Fail(e.clone()),
            Phase::Abandoned => Then::Fail(Error::Abandoned),
            Phase::Untouched | Phase::Committed => Then::Nothing,
        }
    }

    /// The last close: written since the last commit, and not committed.
    pub fn dirty(&self) -> bool {
        matches!(self.phase, Phase::Dirty)
    }

    /// A commit begins: the value to put, or why there is none.
    pub fn begin_commit(&mut self) -> Result<SecretBytes> {
        self.writers.clear();
        if self.too_large {
            return Err(Error::TooLarge);
        }
        Ok(SecretBytes::new(self.buf.to_vec()))
    }

    /// A commit ended with `result`: later closes answer the same way.
    pub fn end_commit(&mut self, result: &Result<()>) {
        self.phase = match result {
            Ok(()) => {
                self.create = false;
                Phase::Committed
            }
            Err(e) => Phase::Failed(e.clone()),
        };
    }
}

/// Secrets Manager's limits on a value, checked before any call.
pub fn check_value(value: &SecretBytes) -> Result<()> {
    if value.is_empty() {
        return Err(Error::Invalid("an empty value cannot be stored".into()));
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(Error::TooLarge);
    }
    Ok(())
}

/// A setattr's mode and owner changes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ownership {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}
