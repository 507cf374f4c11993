//! JSON fields as files: `<secret>/json/<key>` is one top-level key of
//! AWSCURRENT when that is a JSON object. Reads follow `current` (same
//! cache, TTL, kernel coherence); a write, create or unlink is a put of
//! AWSCURRENT with that one key changed (`jsonkey::merged`, inside the put
//! pipeline's turn).

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use zeroize::Zeroizing;

use super::view::{Content, Listing, Parent, PutOnto, View, resize_handle, value_size};
use crate::error::{Error, Result};
use crate::fs::core::Core;
use crate::fs::handles::Handle;
use crate::fs::jsonkey::{self, Edit, is_file_name, key_path, key_text, not_an_object, text_of};
use crate::fs::names;
use crate::fs::types::{Caller, Entry, Kind, Opened};
use crate::fs::write_state::{Target, WriteState};
use crate::inode::{Ino, Node, secret_of};
use crate::process;
use crate::store::{SecretName, SecretVersion, Selector, Stage};
use crate::tree::Warned;

/// The view's own state: which keys were warned about.
#[derive(Default)]
pub(super) struct JsonFiles {
    warned: Warned,
}

impl JsonFiles {
    /// The keys `json/` lists: those that can be file names (the others
    /// are warned about once per secret and key); none when AWSCURRENT is
    /// not a JSON object.
    async fn keys(&self, core: &Core, s: &SecretName) -> Result<Vec<String>> {
        let (v, _) = source(core, s).await?;
        let all = jsonkey::keys(&v).unwrap_or_default();
        Ok(all
            .into_iter()
            .filter(|k| {
                let ok = is_file_name(k);
                if !ok && self.warned.first_time(&format!("{s}\0json\0{k}")) {
                    let shown: String = k.chars().take(64).collect();
                    tracing::warn!(secret = %s, key = %shown.escape_debug(),
                        "JSON key cannot be a file name; left out of json/");
                }
                ok
            })
            .collect())
    }
}

/// AWSCURRENT, as `current` reads it (cache, TTL).
async fn source(core: &Core, s: &SecretName) -> Result<(Arc<SecretVersion>, std::time::Duration)> {
    core.version(s, Selector::Stage(Stage::Current)).await
}

/// The key's text in AWSCURRENT, as a version of its own, or NotFound.
async fn text(core: &Core, s: &SecretName, key: &str) -> Result<Arc<SecretVersion>> {
    let (v, _) = source(core, s).await?;
    let text = key_text(&v, key).ok_or(Error::NotFound)?;
    Ok(Arc::new(SecretVersion::new(v.id.clone(), text, v.created)))
}

/// Whether `name` in `json/` is a key (a create or a rename onto it puts
/// that key): unless it is named like a temporary file and AWSCURRENT has
/// no such key now.
async fn is_key(core: &Core, s: &SecretName, name: &str) -> Result<bool> {
    if !is_file_name(name) {
        return Err(Error::Invalid("bad file name".into()));
    }
    if !names::is_temp_name(name) {
        return Ok(true);
    }
    let cur = core.current_now(s).await?.ok_or(Error::NotFound)?;
    Ok(cur.json().ok_or_else(not_an_object)?.contains(name))
}

fn json_dir(s: &SecretName) -> Arc<str> {
    Arc::from(format!("{s}/json"))
}

#[async_trait]
impl View for JsonFiles {
    fn owns(&self, node: &Node) -> bool {
        matches!(node, Node::JsonDir(_) | Node::JsonKey(..))
    }

    fn kind(&self, node: &Node) -> Kind {
        match node {
            Node::JsonDir(_) => Kind::Dir,
            _ => Kind::File,
        }
    }

    fn path(&self, node: &Node) -> String {
        match node {
            Node::JsonDir(s) => format!("{s}/json"),
            Node::JsonKey(s, k) => format!("{s}/json/{k}"),
            _ => unreachable!("not a json/ node"),
        }
    }

    fn writable(&self, node: &Node) -> bool {
        matches!(node, Node::JsonKey(..))
    }

    /// A key reads its secret; so does a listing of `json/`, whose names
    /// are the value's keys (part of the value): `[[access]]` checks an
    /// opendir of it as an open of the secret.
    async fn reads(&self, _core: &Core, node: &Node) -> Result<Vec<SecretName>> {
        Ok(secret_of(node).into_iter().collect())
    }

    fn temp_dir(&self, dir: &Node) -> Option<Arc<str>> {
        match dir {
            Node::JsonDir(s) => Some(json_dir(s)),
            _ => None,
        }
    }

    async fn lookup(
        &self,
        core: &Core,
        dir: &mut Parent,
        name: &str,
        caller: Caller,
    ) -> Result<Option<Node>> {
        if let Node::JsonDir(s) = &dir.node {
            if core.writes.is_replacing(&key_path(s, name), caller.pid) {
                return Err(Error::NotFound);
            }
            return Ok(Some(Node::JsonKey(s.clone(), Arc::from(name))));
        }
        if name != "json" {
            return Ok(None);
        }
        Ok(dir.secret(core).await?.map(Node::JsonDir))
    }

    async fn list(
        &self,
        core: &Core,
        dir: &mut Parent,
        _caller: Caller,
        out: &mut Listing<'_>,
    ) -> Result<()> {
        if let Node::JsonDir(s) = &dir.node {
            for k in self.keys(core, s).await? {
                out.push(
                    Node::JsonKey(s.clone(), Arc::from(k.as_str())),
                    Kind::File,
                    &k,
                );
            }
        } else if let Some(s) = dir.secret(core).await? {
            out.push(Node::JsonDir(s), Kind::Dir, "json");
        }
        Ok(())
    }

    /// A key file's attributes: its text's size, AWSCURRENT's date; the
    /// kernel's view follows AWSCURRENT's version, as for `current`.
    async fn attr(&self, core: &Core, ino: Ino, node: &Node) -> Result<Entry> {
        let Node::JsonKey(s, key) = node else {
            return Ok(Entry {
                attr: core.dir_attr(ino, true),
                ttl: core.cfg.ttl,
            });
        };
        if !is_file_name(key) {
            return Err(Error::NotFound);
        }
        let (v, ttl) = source(core, s).await?;
        let Some(text) = key_text(&v, key) else {
            // A key being created: it exists once its writer's close puts it.
            if core.kernel.writing(ino) {
                let attr = core.file_attr(ino, 0, SystemTime::now(), true);
                return Ok(Entry::uncached(attr));
            }
            return Err(Error::NotFound);
        };
        let shown = Arc::new(SecretVersion::new(v.id.clone(), text, v.created));
        Ok(core.version_entry(ino, &shown, ttl, true))
    }

    /// A read handle pins the key's text of one AWSCURRENT version; a
    /// write handle starts, without O_TRUNC, from the key's text in
    /// AWSCURRENT now (not a cached copy), as `current` does.
    async fn open(
        &self,
        core: &Core,
        ino: Ino,
        node: &Node,
        flags: i32,
        caller: Caller,
    ) -> Result<Opened> {
        let Node::JsonKey(s, key) = node else {
            return Err(Error::IsDir);
        };
        if flags & libc::O_ACCMODE == libc::O_RDONLY {
            return Ok(core.read_handle(text(core, s, key).await?));
        }
        if core.cfg.read_only {
            return Err(Error::ReadOnly);
        }
        let mut buf = Zeroizing::new(Vec::new());
        if flags & libc::O_TRUNC == 0 {
            let cur = core.current_now(s).await?.ok_or(Error::NotFound)?;
            let index = cur.json().ok_or_else(not_an_object)?;
            let raw = index.raw(cur.value.as_bytes(), key);
            buf = text_of(raw.ok_or(Error::NotFound)?);
        }
        let owner = process::tgid(caller.pid);
        let state = WriteState::new(ino, s.clone(), buf, flags, owner).json_key(key.clone(), true);
        Ok(core.write_handle(state))
    }

    async fn content(&self, core: &Core, node: &Node) -> Result<Content> {
        let Node::JsonKey(s, key) = node else {
            return Err(Error::IsDir);
        };
        Ok(Content::Version(text(core, s, key).await?))
    }

    /// create(2) in `json/`: a temporary file (see `is_temp_name`), or a
    /// handle that starts empty whose commit adds the key (last) or
    /// replaces it.
    async fn create(
        &self,
        core: &Core,
        dir: &Node,
        name: &str,
        flags: i32,
        mode: u32,
        caller: Caller,
    ) -> Result<(Entry, Opened)> {
        let Node::JsonDir(s) = dir else {
            return Err(Error::NotDir);
        };
        if !is_file_name(name) {
            return Err(Error::Invalid("bad file name".into()));
        }
        let owner = process::tgid(caller.pid);
        // install(1) unlinked the key to create it anew: the key is there.
        let replacing = core.writes.end_replacing(&key_path(s, name), owner);
        let cur = core.current_now(s).await?.ok_or(Error::NotFound)?;
        let index = cur.json().ok_or_else(not_an_object)?;
        let existing = index.raw(cur.value.as_bytes(), name);
        if existing.is_none() && !replacing && names::is_temp_name(name) {
            return super::temp::create(core, (json_dir(s), Arc::from(name)), flags, mode, caller);
        }
        if flags & libc::O_EXCL != 0 && existing.is_some() && !replacing {
            return Err(Error::Exists);
        }
        // The key may exist although the lookup (from the cache) did not
        // see it: without O_TRUNC, build on what it holds.
        let buf = match existing {
            Some(raw) if flags & libc::O_TRUNC == 0 && !replacing => text_of(raw),
            _ => Zeroizing::new(Vec::new()),
        };
        let key: Arc<str> = Arc::from(name);
        let ino = core
            .inodes
            .assign(Node::JsonKey(s.clone(), key.clone()), true);
        let state =
            WriteState::new(ino, s.clone(), buf, flags, owner).json_key(key, existing.is_some());
        let opened = core.write_handle(state);
        let attr = core.file_attr(ino, 0, SystemTime::now(), true);
        Ok((Entry::uncached(attr), opened))
    }

    /// unlink(2) in `json/`: a version without the key (ENOENT if it is not
    /// there at commit time).
    async fn unlink(&self, core: &Core, dir: &Node, name: &str, caller: Caller) -> Result<()> {
        let Node::JsonDir(s) = dir else {
            return Err(Error::NotDir);
        };
        if core.cfg.read_only {
            return Err(Error::ReadOnly);
        }
        let owner = process::tgid(caller.pid);
        let comm = process::comm(owner);
        let backup = (json_dir(s), Arc::from(format!("{name}~")));
        let saving =
            names::KEY_REPLACERS.contains(&comm.as_str()) && core.temps.named(&backup).is_some();
        if names::REPLACERS.contains(&comm.as_str()) || saving {
            // install(1) unlinks, then creates: one put, the key in place.
            tracing::info!(secret = %s, pid = caller.pid, program = %comm, "a program replaces a JSON key: hidden from that process until it creates it");
            core.writes.start_replacing(&key_path(s, name), owner);
            return Ok(());
        }
        core.put_json(s, name, Edit::Remove).await.map(|_| ())
    }

    async fn truncate(
        &self,
        core: &Core,
        ino: Ino,
        node: &Node,
        handle: Option<Handle>,
        size: u64,
    ) -> Result<Option<Entry>> {
        if !matches!(node, Node::JsonKey(..)) {
            return Err(Error::Refused("read-only file"));
        }
        if core.cfg.read_only {
            return Err(Error::ReadOnly);
        }
        let size = value_size(size)?;
        match resize_handle(self, core, ino, node, handle, size).await? {
            Some(e) => Ok(Some(e)),
            None => Err(Error::NotPermitted(
                "a JSON key is truncated through an open file, not by path",
            )),
        }
    }

    async fn put_onto(&self, core: &Core, dir: &Node, name: &str) -> Result<Option<PutOnto>> {
        let Node::JsonDir(s) = dir else {
            return Ok(None);
        };
        if !is_key(core, s, name).await? {
            return Ok(None);
        }
        let key: Arc<str> = Arc::from(name);
        let (first, then) = (
            Target::JsonKey(key.clone(), false),
            Target::JsonKey(key, true),
        );
        Ok(Some((s.clone(), first, then, false)))
    }

    async fn rename(
        &self,
        _core: &Core,
        _dir: &Node,
        _name: &str,
        _newparent: Ino,
        _newname: &str,
    ) -> Result<()> {
        Err(Error::NotPermitted(
            "files in json/ cannot be renamed: write the key in place",
        ))
    }
}
