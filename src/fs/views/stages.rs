//! Staging labels as files: `<secret>/stages/<label>` reads the version that
//! carries the label (DescribeSecret says which, the value is read by
//! version id); writing or creating one puts a version with only that label
//! (AWSCURRENT stays); renaming one onto `current` promotes its version
//! (UpdateSecretVersionStage).

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use zeroize::Zeroizing;

use super::view::{Content, Listing, Parent, PutOnto, View, resize_handle, value_size};
use crate::error::{Error, Result};
use crate::fs::core::Core;
use crate::fs::handles::Handle;
use crate::fs::names;
use crate::fs::types::{Caller, Entry, Kind, Opened};
use crate::fs::write_state::{Target, WriteState, grow};
use crate::inode::{Ino, Node};
use crate::process;
use crate::store::{Label, SecretBytes, SecretName, SecretVersion, Selector};
use crate::tree;

const ONLY_ONTO_CURRENT: &str = "a stage file can only be renamed onto its secret's current";

pub(super) struct StageFiles;

fn stages_dir(s: &SecretName) -> Arc<str> {
    Arc::from(format!("{s}/stages"))
}

/// The labels `stages/` lists: every label of every version that can be a
/// file name, and those being created.
async fn listing(core: &Core, s: &SecretName) -> Result<Vec<Label>> {
    let d = core.described(s).await?;
    let mut labels: Vec<Label> = d
        .versions
        .iter()
        .flat_map(|(_, labels)| labels.iter())
        .filter(|l| tree::valid_component(l))
        .filter_map(|l| Label::parse(l).ok())
        .chain(core.stages.creating_in(s))
        .collect();
    labels.sort();
    labels.dedup();
    Ok(labels)
}

/// Whether `name` in `stages/` is a label (a create or a rename onto it
/// puts a version with it): unless it is named like a temporary file and
/// no version carries it now.
async fn is_label(core: &Core, s: &SecretName, name: &str) -> Result<bool> {
    if !names::is_temp_name(name) {
        return Ok(true);
    }
    match Label::parse(name) {
        Ok(l) => Ok(core.stage_now(s, &l).await?.is_some()),
        Err(_) => Ok(false),
    }
}

/// The version carrying `l` (the cached description says which).
async fn labelled(core: &Core, s: &SecretName, l: &Label) -> Result<Arc<SecretVersion>> {
    let id = core.stage_id(s, l).await?;
    Ok(core.version(s, Selector::Id(id)).await?.0)
}

fn write_handle(core: &Core, state: WriteState, s: &SecretName, l: &Label) -> Opened {
    core.stages.opened(s, l);
    core.write_handle(state.staged(l.clone()))
}

#[async_trait]
impl View for StageFiles {
    fn owns(&self, node: &Node) -> bool {
        matches!(node, Node::StagesDir(_) | Node::StageFile(..))
    }

    fn kind(&self, node: &Node) -> Kind {
        match node {
            Node::StagesDir(_) => Kind::Dir,
            _ => Kind::File,
        }
    }

    fn path(&self, node: &Node) -> String {
        match node {
            Node::StagesDir(s) => format!("{s}/stages"),
            Node::StageFile(s, l) => format!("{s}/stages/{l}"),
            _ => unreachable!("not a stages/ node"),
        }
    }

    fn writable(&self, node: &Node) -> bool {
        matches!(node, Node::StageFile(_, l) if names::writable(l))
    }

    fn temp_dir(&self, dir: &Node) -> Option<Arc<str>> {
        match dir {
            Node::StagesDir(s) => Some(stages_dir(s)),
            _ => None,
        }
    }

    async fn lookup(
        &self,
        core: &Core,
        dir: &mut Parent,
        name: &str,
        _caller: Caller,
    ) -> Result<Option<Node>> {
        if let Node::StagesDir(s) = &dir.node {
            return Ok(Some(Node::StageFile(s.clone(), Label::new(name))));
        }
        if name != "stages" {
            return Ok(None);
        }
        Ok(dir.secret(core).await?.map(Node::StagesDir))
    }

    async fn list(
        &self,
        core: &Core,
        dir: &mut Parent,
        _caller: Caller,
        out: &mut Listing<'_>,
    ) -> Result<()> {
        if let Node::StagesDir(s) = &dir.node {
            for l in listing(core, s).await? {
                out.push(
                    Node::StageFile(s.clone(), l.clone()),
                    Kind::File,
                    l.as_str(),
                );
            }
        } else if let Some(s) = dir.secret(core).await? {
            out.push(Node::StagesDir(s), Kind::Dir, "stages");
        }
        Ok(())
    }

    /// The attributes of `stages/<l>`, telling the kernel which version
    /// they describe (so that its caches go when the label moves).
    async fn attr(&self, core: &Core, ino: Ino, node: &Node) -> Result<Entry> {
        let Node::StageFile(s, l) = node else {
            return Ok(Entry {
                attr: core.dir_attr(ino, true),
                ttl: core.cfg.ttl,
            });
        };
        let id = match core.stage_id(s, l).await {
            Err(Error::NotFound) if core.stages.is_creating(s, l) => {
                // Created, first write not stored yet.
                let attr = core.file_attr(ino, 0, SystemTime::now(), true);
                return Ok(Entry::uncached(attr));
            }
            id => id?,
        };
        core.by_id_entry(ino, s, &id, names::writable(l)).await
    }

    /// A read handle pins the labelled version; a write handle starts, as
    /// `current`'s does, from the labelled value as it is now unless
    /// O_TRUNC.
    async fn open(
        &self,
        core: &Core,
        ino: Ino,
        node: &Node,
        flags: i32,
        caller: Caller,
    ) -> Result<Opened> {
        let Node::StageFile(s, l) = node else {
            return Err(Error::IsDir);
        };
        if flags & libc::O_ACCMODE == libc::O_RDONLY {
            return Ok(core.read_handle(labelled(core, s, l).await?));
        }
        if !names::writable(l) {
            return Err(Error::Refused(names::RESERVED));
        }
        if core.cfg.read_only {
            return Err(Error::ReadOnly);
        }
        let mut buf = Zeroizing::new(Vec::new());
        if flags & libc::O_TRUNC == 0
            && let Some(v) = core.stage_now(s, l).await?
        {
            grow(&mut buf, v.value.len());
            buf.copy_from_slice(v.value.as_bytes());
        }
        let state = WriteState::new(ino, s.clone(), buf, flags, process::tgid(caller.pid));
        Ok(write_handle(core, state, s, l))
    }

    async fn content(&self, core: &Core, node: &Node) -> Result<Content> {
        let Node::StageFile(s, l) = node else {
            return Err(Error::IsDir);
        };
        Ok(Content::Version(labelled(core, s, l).await?))
    }

    /// create(2) in `stages/`: a temporary file (see `is_temp_name`), or a
    /// label no version carries yet, whose first stored write is the put.
    async fn create(
        &self,
        core: &Core,
        dir: &Node,
        name: &str,
        flags: i32,
        mode: u32,
        caller: Caller,
    ) -> Result<(Entry, Opened)> {
        let Node::StagesDir(s) = dir else {
            return Err(Error::NotDir);
        };
        if !is_label(core, s, name).await? {
            return super::temp::create(
                core,
                (stages_dir(s), Arc::from(name)),
                flags,
                mode,
                caller,
            );
        }
        let l = names::label_for_file(name)?;
        if core.stage_now(s, &l).await?.is_some() {
            return Err(Error::Exists);
        }
        let ino = core
            .inodes
            .assign(Node::StageFile(s.clone(), l.clone()), true);
        let owner = process::tgid(caller.pid);
        let state = WriteState::new(ino, s.clone(), Zeroizing::new(Vec::new()), flags, owner);
        let opened = write_handle(core, state, s, &l);
        let attr = core.file_attr(ino, 0, SystemTime::now(), true);
        Ok((Entry::uncached(attr), opened))
    }

    /// A truncation of `stages/<l>`: the write handle's, or (truncate(2)
    /// on the path) a staged put of its own.
    async fn truncate(
        &self,
        core: &Core,
        ino: Ino,
        node: &Node,
        handle: Option<Handle>,
        size: u64,
    ) -> Result<Option<Entry>> {
        let Node::StageFile(s, l) = node else {
            return Err(Error::Refused("read-only file"));
        };
        if !names::writable(l) {
            return Err(Error::Refused(names::RESERVED));
        }
        if core.cfg.read_only {
            return Err(Error::ReadOnly);
        }
        let size = value_size(size)?;
        if let Some(e) = resize_handle(self, core, ino, node, handle, size).await? {
            return Ok(Some(e));
        }
        let cur = core.stage_now(s, l).await?.ok_or(Error::NotFound)?;
        let mut buf = Zeroizing::new(cur.value.as_bytes().to_vec());
        grow(&mut buf, size);
        core.put_staged(s, l, SecretBytes::new(buf.to_vec()))
            .await?;
        Ok(None)
    }

    async fn put_onto(&self, core: &Core, dir: &Node, name: &str) -> Result<Option<PutOnto>> {
        let Node::StagesDir(s) = dir else {
            return Ok(None);
        };
        if !is_label(core, s, name).await? {
            return Ok(None);
        }
        let l = names::label_for_file(name)?;
        Ok(Some((
            s.clone(),
            Target::Stage(l.clone()),
            Target::Stage(l),
            false,
        )))
    }

    /// rename(2) from `stages/`: only `stages/<l>` onto the same secret's
    /// `current`, which promotes that version. The kernel then shows the
    /// stage file's inode as `current`.
    async fn rename(
        &self,
        core: &Core,
        dir: &Node,
        name: &str,
        newparent: Ino,
        newname: &str,
    ) -> Result<()> {
        let Node::StagesDir(s) = dir else {
            return Err(Error::NotPermitted(ONLY_ONTO_CURRENT));
        };
        let onto_current = matches!(core.node(newparent)?, Node::Dir(q) if *q == *s.as_str())
            && newname == "current";
        if !onto_current {
            return Err(Error::NotPermitted(ONLY_ONTO_CURRENT));
        }
        if core.cfg.read_only {
            return Err(Error::ReadOnly);
        }
        let l = Label::parse(name).map_err(|_| Error::NotFound)?;
        core.promote(s, &l).await?;
        core.inodes
            .rebind(&Node::StageFile(s.clone(), l), Node::Current(s.clone()));
        Ok(())
    }
}
