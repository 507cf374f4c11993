//! Editors' and tools' temporary files (vim's swap and backup files, sed's
//! and mkstemp's, rsync's): in memory, per user, in a secret's directory,
//! its `json/` and its `stages/`. Renamed onto `current`, a JSON key or a
//! label, a temporary file is the put of that file (the put pipeline in
//! write.rs), and its open descriptors write that file from then on.

use std::sync::Arc;

use async_trait::async_trait;

use super::view::{Listing, Parent, PutOnto, View};
use crate::error::{Error, Result};
use crate::fs::core::Core;
use crate::fs::handles::{Handle, TempHandle};
use crate::fs::temp::{TempKey, TempRef};
use crate::fs::types::{Caller, Entry, Kind, Opened};
use crate::inode::{Ino, Node};
use crate::process;
use crate::store::{SecretBytes, SecretName};

const TEMP_OPENED: Opened = Opened {
    fh: 0,
    keep_cache: false,
    direct_io: true,
    no_flush: false,
};

pub(super) struct TempFiles;

/// The temporary file a node names, if it is still there.
pub(super) fn file_of(core: &Core, node: &Node) -> Result<TempRef> {
    let Node::Temp(d, n) = node else {
        return Err(Error::NotFound);
    };
    core.temps
        .named(&(d.clone(), n.clone()))
        .ok_or(Error::NotFound)
}

/// A new temporary file (or the one of that name), opened.
pub(super) fn create(
    core: &Core,
    key: TempKey,
    flags: i32,
    mode: u32,
    caller: Caller,
) -> Result<(Entry, Opened)> {
    let file = core.temps.create(&key, mode, caller.uid)?;
    let ino = core.inodes.assign(Node::Temp(key.0, key.1), true);
    let attr = core.temp_attr(ino, &file.lock());
    let fh = core.handles.add(Handle::Temp(TempHandle {
        file,
        append: flags & libc::O_APPEND != 0,
        owner: process::tgid(caller.pid),
    }));
    Ok((Entry::uncached(attr), Opened { fh, ..TEMP_OPENED }))
}

/// setattr of a temporary file: its mode and size change; chown and
/// utimes are accepted and ignored (it lives in memory, and the secret's
/// own modes are fixed).
pub(super) fn setattr(
    core: &Core,
    ino: Ino,
    file: &TempRef,
    size: Option<u64>,
    mode: Option<u32>,
) -> Result<Entry> {
    let mut f = file.lock();
    if let Some(mode) = mode {
        f.mode = (mode & 0o777) as u16;
    }
    if let Some(size) = size {
        f.resize(usize::try_from(size).map_err(|_| Error::NoSpace)?)?;
    }
    Ok(Entry::uncached(core.temp_attr(ino, &f)))
}

/// A temporary file renamed in its directory: onto `current`, a JSON
/// key or a label, it is the put of that file, and its open descriptors
/// write that file from then on; onto another temporary name, a move.
pub(super) async fn rename(
    core: &Core,
    from: TempKey,
    file: TempRef,
    newname: &str,
    onto: Option<PutOnto>,
) -> Result<()> {
    let Some((secret, first, then, create)) = onto else {
        core.temps
            .rename(&from, (from.0.clone(), Arc::from(newname)))?;
        core.inodes.rebind(
            &Node::Temp(from.0.clone(), from.1),
            Node::Temp(from.0, Arc::from(newname)),
        );
        return Ok(());
    };
    let value = SecretBytes::new(file.lock().bytes().to_vec());
    core.put_target(&secret, &first, value, create).await?;
    let node = then.node(secret.clone());
    {
        let mut f = file.lock();
        f.target = Some((secret, then));
        f.dirty = false;
    }
    core.temps.unlink(&from, 0);
    // The kernel now shows the temporary file's inode as that file.
    core.inodes.rebind(&Node::Temp(from.0, from.1), node);
    Ok(())
}

#[async_trait]
impl View for TempFiles {
    fn owns(&self, node: &Node) -> bool {
        matches!(node, Node::Temp(..))
    }

    fn kind(&self, _node: &Node) -> Kind {
        Kind::File
    }

    fn path(&self, node: &Node) -> String {
        match node {
            Node::Temp(d, n) if d.is_empty() => n.to_string(),
            Node::Temp(d, n) => format!("{d}/{n}"),
            _ => unreachable!("not a temporary file"),
        }
    }

    /// An editor's file holds what is being written to the secret of its
    /// directory (a secret's, its `json/` or its `stages/`): that secret's
    /// rules apply. Both readings of an ambiguous directory are checked.
    async fn reads(&self, _core: &Core, node: &Node) -> Result<Vec<SecretName>> {
        let Node::Temp(d, _) = node else {
            return Ok(Vec::new());
        };
        let own = ["/json", "/stages"].iter().find_map(|x| d.strip_suffix(x));
        Ok([Some(&**d), own]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .map(SecretName::new)
            .collect())
    }

    async fn lookup(
        &self,
        core: &Core,
        dir: &mut Parent,
        name: &str,
        caller: Caller,
    ) -> Result<Option<Node>> {
        let Some(d) = dir.temp_dir.clone() else {
            return Ok(None);
        };
        let key = (d, Arc::<str>::from(name));
        Ok(core
            .temps
            .get(&key, caller.uid)
            .map(|_| Node::Temp(key.0, key.1)))
    }

    async fn list(
        &self,
        core: &Core,
        dir: &mut Parent,
        caller: Caller,
        out: &mut Listing<'_>,
    ) -> Result<()> {
        if let Some(d) = &dir.temp_dir {
            for name in core.temps.names_in(d, caller.uid) {
                out.push(Node::Temp(d.clone(), name.clone()), Kind::File, &name);
            }
        }
        Ok(())
    }

    async fn attr(&self, core: &Core, ino: Ino, node: &Node) -> Result<Entry> {
        let file = file_of(core, node)?;
        Ok(Entry::uncached(core.temp_attr(ino, &file.lock())))
    }

    /// open(2) of a temporary file: O_TRUNC and O_APPEND as on any file.
    async fn open(
        &self,
        core: &Core,
        _ino: Ino,
        node: &Node,
        flags: i32,
        caller: Caller,
    ) -> Result<Opened> {
        let file = file_of(core, node)?;
        if flags & libc::O_TRUNC != 0 && flags & libc::O_ACCMODE != libc::O_RDONLY {
            file.lock().resize(0)?;
        }
        let fh = core.handles.add(Handle::Temp(TempHandle {
            file,
            append: flags & libc::O_APPEND != 0,
            owner: process::tgid(caller.pid),
        }));
        Ok(Opened { fh, ..TEMP_OPENED })
    }
}
