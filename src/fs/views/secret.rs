//! A secret's own files: `current` (AWSCURRENT, written to put a new
//! version), `previous` (AWSPREVIOUS, when there is one) and `versions/<id>`
//! (every version by id, immutable, with its staging labels as an extended
//! attribute).

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use zeroize::Zeroizing;

use super::view::{Content, Listing, Parent, View, resize_handle, value_size};
use crate::error::{Error, Result};
use crate::fs::core::Core;
use crate::fs::handles::Handle;
use crate::fs::names::STAGES_XATTR;
use crate::fs::types::{Caller, Entry, Kind, Opened};
use crate::fs::write_state::grow;
use crate::inode::{Ino, Node};
use crate::store::{SecretBytes, SecretName, SecretVersion, Selector, Stage};

pub(super) struct SecretFiles;

fn stage_of(node: &Node) -> Option<(&SecretName, Stage)> {
    match node {
        Node::Current(s) => Some((s, Stage::Current)),
        Node::Previous(s) => Some((s, Stage::Previous)),
        _ => None,
    }
}

/// The version a secret file shows now.
async fn version_of(core: &Core, node: &Node) -> Result<Arc<SecretVersion>> {
    let (s, sel) = match node {
        Node::Version(s, id) => (s, Selector::Id(id.clone())),
        _ => {
            let (s, stage) = stage_of(node).ok_or(Error::IsDir)?;
            (s, Selector::Stage(stage))
        }
    };
    Ok(core.version(s, sel).await?.0)
}

#[async_trait]
impl View for SecretFiles {
    fn owns(&self, node: &Node) -> bool {
        matches!(
            node,
            Node::Current(_) | Node::Previous(_) | Node::Versions(_) | Node::Version(..)
        )
    }

    fn kind(&self, node: &Node) -> Kind {
        match node {
            Node::Versions(_) => Kind::Dir,
            _ => Kind::File,
        }
    }

    fn path(&self, node: &Node) -> String {
        match node {
            Node::Current(s) => format!("{s}/current"),
            Node::Previous(s) => format!("{s}/previous"),
            Node::Versions(s) => format!("{s}/versions"),
            Node::Version(s, id) => format!("{s}/versions/{id}"),
            _ => unreachable!("not a secret file"),
        }
    }

    fn writable(&self, node: &Node) -> bool {
        matches!(node, Node::Current(_))
    }

    async fn lookup(
        &self,
        core: &Core,
        dir: &mut Parent,
        name: &str,
        caller: Caller,
    ) -> Result<Option<Node>> {
        if let Node::Versions(s) = &dir.node {
            return Ok(Some(Node::Version(
                s.clone(),
                crate::store::VersionId::new(name),
            )));
        }
        if !matches!(name, "current" | "previous" | "versions") {
            return Ok(None);
        }
        let Some(s) = dir.secret(core).await? else {
            return Ok(None);
        };
        Ok(Some(match name {
            "current" if core.writes.is_replacing(s.as_str(), caller.pid) => {
                return Err(Error::NotFound);
            }
            "current" => Node::Current(s),
            "previous" => Node::Previous(s),
            _ => Node::Versions(s),
        }))
    }

    async fn list(
        &self,
        core: &Core,
        dir: &mut Parent,
        _caller: Caller,
        out: &mut Listing<'_>,
    ) -> Result<()> {
        if let Node::Versions(s) = &dir.node {
            // A stamped id (Parameter Store's) shows its number: the node
            // is the one a lookup of that name makes.
            for v in core.version_list(s).await?.iter() {
                let name = v.id.file_name();
                let node = Node::Version(s.clone(), crate::store::VersionId::new(name));
                out.push(node, Kind::File, name);
            }
            return Ok(());
        }
        let Some(s) = dir.secret(core).await? else {
            return Ok(());
        };
        out.push(Node::Current(s.clone()), Kind::File, "current");
        if core.has_previous(&s).await {
            out.push(Node::Previous(s.clone()), Kind::File, "previous");
        }
        out.push(Node::Versions(s), Kind::Dir, "versions");
        Ok(())
    }

    async fn attr(&self, core: &Core, ino: Ino, node: &Node) -> Result<Entry> {
        match node {
            Node::Versions(_) => Ok(Entry {
                attr: core.dir_attr(ino, false),
                ttl: core.cfg.ttl,
            }),
            Node::Version(s, id) => core.by_id_entry(ino, s, id, false).await,
            _ => {
                let (s, stage) = stage_of(node).expect("current or previous");
                if stage == Stage::Current && core.names.is_pending(s.as_str()) {
                    // Being created: the first write has not been put yet.
                    let attr = core.file_attr(ino, 0, SystemTime::now(), true);
                    return Ok(Entry::uncached(attr));
                }
                let (v, ttl) = core.version(s, Selector::Stage(stage)).await?;
                Ok(core.version_entry(ino, &v, ttl, stage == Stage::Current))
            }
        }
    }

    async fn open(
        &self,
        core: &Core,
        ino: Ino,
        node: &Node,
        flags: i32,
        caller: Caller,
    ) -> Result<Opened> {
        let writing = flags & libc::O_ACCMODE != libc::O_RDONLY;
        match node {
            Node::Versions(_) => Err(Error::IsDir),
            Node::Current(s) if writing => core.open_write(ino, s, flags, caller.pid).await,
            _ if writing => Err(Error::Refused("read-only file")),
            _ => Ok(core.read_handle(version_of(core, node).await?)),
        }
    }

    async fn content(&self, core: &Core, node: &Node) -> Result<Content> {
        Ok(Content::Version(version_of(core, node).await?))
    }

    async fn truncate(
        &self,
        core: &Core,
        ino: Ino,
        node: &Node,
        handle: Option<Handle>,
        size: u64,
    ) -> Result<Option<Entry>> {
        let Node::Current(s) = node else {
            return Err(Error::Refused("read-only file"));
        };
        if core.cfg.read_only {
            return Err(Error::ReadOnly);
        }
        let size = value_size(size)?;
        if let Some(e) = resize_handle(self, core, ino, node, handle, size).await? {
            return Ok(Some(e));
        }
        // truncate(2) on the path: no handle to hold the change, so it is
        // a put of its own, from the value current now.
        let cur = core.current_now(s).await?.ok_or(Error::NotFound)?;
        let mut buf = Zeroizing::new(cur.value.as_bytes().to_vec());
        grow(&mut buf, size);
        core.put(s, SecretBytes::new(buf.to_vec()), false).await?;
        Ok(None)
    }

    fn xattr_names(&self, node: &Node) -> &'static [&'static str] {
        match node {
            Node::Version(..) => &[STAGES_XATTR],
            _ => &[],
        }
    }

    /// `user.secretsfs.stages` of a `versions/` entry: its staging labels,
    /// comma-separated (empty when it has none), from the version listing.
    async fn xattr(&self, core: &Core, node: &Node, name: &str) -> Result<Option<Vec<u8>>> {
        let Node::Version(s, id) = node else {
            return Ok(None);
        };
        if name != STAGES_XATTR {
            return Ok(None);
        }
        let list = core.version_list(s).await?;
        let v = list
            .iter()
            .find(|v| v.id.file_name() == id.as_str())
            .ok_or(Error::NotFound)?;
        Ok(Some(v.stages.join(",").into_bytes()))
    }
}
