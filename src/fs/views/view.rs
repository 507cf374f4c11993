//! What a view is (`View`) and the values views answer with: a leaf of
//! views/, which every view and the registry (mod.rs) import.

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::fs::core::Core;
use crate::fs::handles::Handle;
use crate::fs::namespace::DirInfo;
use crate::fs::types::{Caller, DirEntry, Entry, Kind, Opened};
use crate::fs::write_state::{MAX_VALUE_LEN, Target};
use crate::inode::{Ino, Node, secret_of};
use crate::store::{SecretName, SecretVersion};

/// What a file holds, for a read that no handle answers.
pub(in crate::fs) enum Content {
    /// A version of a secret (or a value shown as one: a JSON key's text,
    /// a render).
    Version(Arc<SecretVersion>),
    /// Bytes made for this read (the stats).
    Plain(Vec<u8>),
}

/// A directory a lookup or a listing is in, with what the namespace says
/// of it, asked at most once however many views ask.
pub(in crate::fs) struct Parent {
    pub node: Node,
    /// Where temporary files in it are kept (see `View::temp_dir`).
    pub temp_dir: Option<Arc<str>>,
    info: Option<DirInfo>,
}

impl Parent {
    pub fn new(node: Node, temp_dir: Option<Arc<str>>) -> Self {
        Self {
            temp_dir,
            node,
            info: None,
        }
    }

    /// The secret whose directory this is, if it is one (a directory being
    /// created by mkdir is not one yet).
    pub async fn secret(&mut self, core: &Core) -> Result<Option<SecretName>> {
        let Node::Dir(p) = &self.node else {
            return Ok(None);
        };
        let p = p.clone();
        let info = self.info(core).await?;
        Ok(info.secret.then(|| SecretName::new(&*p)))
    }

    /// What the namespace says of this directory (Node::Dir only).
    pub async fn info(&mut self, core: &Core) -> Result<DirInfo> {
        if let Some(i) = self.info {
            return Ok(i);
        }
        let Node::Dir(p) = &self.node else {
            return Err(Error::NotDir);
        };
        let i = core.resolve_dir(p).await?;
        self.info = Some(i);
        Ok(i)
    }
}

/// A listing being made: entries with inode numbers that allocate nothing.
pub(in crate::fs) struct Listing<'a> {
    pub core: &'a Core,
    pub out: Vec<DirEntry>,
}

impl Listing<'_> {
    pub fn push(&mut self, node: Node, kind: Kind, name: &str) {
        self.out.push(DirEntry {
            ino: self.core.listed_ino(&node),
            kind,
            name: name.to_string(),
        });
    }
}

/// Where a rename of a temporary file onto `name` puts: the secret, the
/// target of the rename's own put and of the descriptors' later writes,
/// and whether the put creates the secret.
pub(in crate::fs) type PutOnto = (SecretName, Target, Target, bool);

/// A kind of file. Methods a view's files never need keep the defaults.
#[async_trait]
pub(in crate::fs) trait View: Send + Sync {
    /// Whether `node` is this view's: its attributes, opens, reads and the
    /// edits in it go to this view.
    fn owns(&self, node: &Node) -> bool;

    /// Whether this view's `node` is a directory or a file.
    fn kind(&self, node: &Node) -> Kind;

    /// `name` in directory `dir`: this view's node, when the name is its
    /// own there; None otherwise.
    async fn lookup(
        &self,
        core: &Core,
        dir: &mut Parent,
        name: &str,
        caller: Caller,
    ) -> Result<Option<Node>>;

    /// This view's entries in directory `dir`.
    async fn list(
        &self,
        core: &Core,
        dir: &mut Parent,
        caller: Caller,
        out: &mut Listing<'_>,
    ) -> Result<()>;

    async fn attr(&self, core: &Core, ino: Ino, node: &Node) -> Result<Entry>;

    async fn open(
        &self,
        core: &Core,
        ino: Ino,
        node: &Node,
        flags: i32,
        caller: Caller,
    ) -> Result<Opened>;

    /// What a read with no handle of its own gets: the file's content now.
    async fn content(&self, core: &Core, node: &Node) -> Result<Content> {
        let _ = (core, node);
        Err(Error::BadHandle)
    }

    /// The secrets an open of this file (or an opendir of this
    /// directory) reads, which the `[[access]]` rules must allow: a
    /// file's own secret, none for a directory whose listing holds no
    /// part of a value.
    async fn reads(&self, core: &Core, node: &Node) -> Result<Vec<SecretName>> {
        let _ = core;
        Ok(match self.kind(node) {
            Kind::Dir => Vec::new(),
            Kind::File => secret_of(node).into_iter().collect(),
        })
    }

    /// Whether a read-only mount may answer an open of this file with
    /// ENOSYS (no-open mode: the kernel serves reads from its page cache).
    /// A file whose open must say why it cannot be used answers it itself.
    fn served_without_open(&self, node: &Node) -> bool {
        let _ = node;
        true
    }

    /// Whether the file's mode shows it writable.
    fn writable(&self, node: &Node) -> bool {
        let _ = node;
        false
    }

    /// The path of the node in the mount, for log lines.
    fn path(&self, node: &Node) -> String;

    /// The directory part of the keys of temporary files in `dir`, when
    /// editors' temporary files may live there.
    fn temp_dir(&self, dir: &Node) -> Option<Arc<str>> {
        let _ = dir;
        None
    }

    /// create(2) of `name` in this view's directory `dir`.
    async fn create(
        &self,
        core: &Core,
        dir: &Node,
        name: &str,
        flags: i32,
        mode: u32,
        caller: Caller,
    ) -> Result<(Entry, Opened)> {
        let _ = (core, dir, name, flags, mode, caller);
        Err(Error::Refused(
            "files can only be created in a secret's directory",
        ))
    }

    /// unlink(2) of `name` in this view's directory `dir`.
    async fn unlink(&self, core: &Core, dir: &Node, name: &str, caller: Caller) -> Result<()> {
        let _ = (core, dir, name, caller);
        Err(Error::NotPermitted("secret files cannot be removed"))
    }

    /// A truncation of this view's file to `size`, through `handle` or by
    /// path. Some: the reply; None: reply with the attributes now.
    async fn truncate(
        &self,
        core: &Core,
        ino: Ino,
        node: &Node,
        handle: Option<Handle>,
        size: u64,
    ) -> Result<Option<Entry>> {
        let _ = (core, ino, node, handle, size);
        Err(Error::Refused("read-only file"))
    }

    /// What a rename of a temporary file onto `name` in this view's
    /// directory `dir` puts; None: a move between temporary names.
    async fn put_onto(&self, core: &Core, dir: &Node, name: &str) -> Result<Option<PutOnto>> {
        let _ = (core, dir, name);
        Ok(None)
    }

    /// rename(2) of `name` from this view's directory `dir` (not a
    /// temporary file).
    async fn rename(
        &self,
        core: &Core,
        dir: &Node,
        name: &str,
        newparent: Ino,
        newname: &str,
    ) -> Result<()> {
        let _ = (core, dir, name, newparent, newname);
        Err(Error::NotPermitted("only temporary files can be renamed"))
    }

    /// The extended attributes this view's file has.
    fn xattr_names(&self, node: &Node) -> &'static [&'static str] {
        let _ = node;
        &[]
    }

    /// An extended attribute's value; None: no such attribute.
    async fn xattr(&self, core: &Core, node: &Node, name: &str) -> Result<Option<Vec<u8>>> {
        let _ = (core, node, name);
        Ok(None)
    }
}

/// A truncation's size, within what a value may be.
pub(in crate::fs) fn value_size(size: u64) -> Result<usize> {
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    if size > MAX_VALUE_LEN {
        return Err(Error::TooLarge);
    }
    Ok(size)
}

/// A truncation through a write handle: the handle's bytes change, and the
/// reply keeps the stored value's size (the kernel's size is the inode's,
/// shared with readers of that value, and the writer's bytes stay its own
/// until they are stored). None: no write handle.
pub(in crate::fs) async fn resize_handle<V: View + ?Sized>(
    view: &V,
    core: &Core,
    ino: Ino,
    node: &Node,
    handle: Option<Handle>,
    size: usize,
) -> Result<Option<Entry>> {
    let Some(Handle::Write(w)) = handle else {
        return Ok(None);
    };
    w.lock().await.resize(size);
    let e = view.attr(core, ino, node).await?;
    Ok(Some(Entry::uncached(e.attr)))
}
