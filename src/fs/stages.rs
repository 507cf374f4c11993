//! Staging labels as files: `<secret>/stages/<label>` reads the version that
//! carries the label (DescribeSecret says which, the value is read by
//! version id); writing or creating one puts a version with only that label
//! (AWSCURRENT stays); renaming one onto `current` promotes its version
//! (UpdateSecretVersionStage). Owns the labels being created: files made in
//! `stages/` whose first write is not stored yet.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use zeroize::Zeroizing;

use super::Fs;
use super::coherence::{Change, Files, Slot};
use super::handles::Handle;
use super::names;
use super::types::{Caller, Entry, Opened};
use super::write_state::{MAX_VALUE_LEN, WriteState, check_value, grow};
use crate::error::{Error, Result};
use crate::inode::{Ino, Node};
use crate::process;
use crate::store::{Description, Label, SecretBytes, SecretName, SecretVersion, Selector, Stage};
use crate::tree;

const ONLY_ONTO_CURRENT: &str = "a stage file can only be renamed onto its secret's current";
const DESCRIBE_NEEDED: &str = "stages/ needs secretsmanager:DescribeSecret";

/// Labels created in `stages/` and not stored yet, with the write handles
/// open on each: the file exists for them until the last one is released.
#[derive(Default)]
pub struct Stages {
    creating: Mutex<HashMap<(SecretName, Label), usize>>,
}

impl Stages {
    fn opened(&self, s: &SecretName, l: &Label) {
        *self
            .creating
            .lock()
            .entry((s.clone(), l.clone()))
            .or_default() += 1;
    }

    pub(super) fn closed(&self, s: &SecretName, l: &Label) {
        let mut c = self.creating.lock();
        let key = (s.clone(), l.clone());
        if let Some(n) = c.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                c.remove(&key);
            }
        }
    }

    fn is_creating(&self, s: &SecretName, l: &Label) -> bool {
        self.creating.lock().contains_key(&(s.clone(), l.clone()))
    }

    fn creating_in(&self, s: &SecretName) -> Vec<Label> {
        let c = self.creating.lock();
        c.keys()
            .filter(|(n, _)| n == s)
            .map(|(_, l)| l.clone())
            .collect()
    }
}

impl Fs {
    /// The secret's labels, from the cached description (the TTL).
    async fn described(&self, s: &SecretName) -> Result<Arc<Description>> {
        self.descs
            .get(s)
            .await?
            .ok_or_else(|| Error::AccessDenied(DESCRIBE_NEEDED.into()))
    }

    /// The secret's labels as they are in Secrets Manager now.
    async fn described_now(&self, s: &SecretName) -> Result<Arc<Description>> {
        self.descs
            .now(s)
            .await?
            .ok_or_else(|| Error::AccessDenied(DESCRIBE_NEEDED.into()))
    }

    /// The version id a label names (cached description).
    pub(super) async fn stage_id(
        &self,
        s: &SecretName,
        l: &Label,
    ) -> Result<crate::store::VersionId> {
        let d = self.described(s).await?;
        d.with_label(l).cloned().ok_or(Error::NotFound)
    }

    /// The version carrying `l` in Secrets Manager now, if one does; its
    /// value read by id (immutable, so a cached copy is exact).
    async fn stage_now(&self, s: &SecretName, l: &Label) -> Result<Option<Arc<SecretVersion>>> {
        match self.described_now(s).await?.with_label(l) {
            Some(id) => Ok(Some(self.version(s, Selector::Id(id.clone())).await?.0)),
            None => Ok(None),
        }
    }

    /// The attributes of `stages/<l>`, telling the kernel which version
    /// they describe (so that its caches go when the label moves).
    pub(super) async fn stage_entry(&self, ino: Ino, s: &SecretName, l: &Label) -> Result<Entry> {
        let id = match self.stage_id(s, l).await {
            Err(Error::NotFound) if self.stages.is_creating(s, l) => {
                // Created, first write not stored yet.
                let attr = self.file_attr(ino, 0, SystemTime::now(), true);
                return Ok(Entry::uncached(attr));
            }
            id => id?,
        };
        self.by_id_entry(ino, s, &id, names::writable(l)).await
    }

    /// The labels `stages/` lists: every label of every version that can
    /// be a file name, and those being created.
    pub(super) async fn stage_listing(&self, s: &SecretName) -> Result<Vec<Label>> {
        let d = self.described(s).await?;
        let mut labels: Vec<Label> = d
            .versions
            .iter()
            .flat_map(|(_, labels)| labels.iter())
            .filter(|l| tree::valid_component(l))
            .filter_map(|l| Label::parse(l).ok())
            .chain(self.stages.creating_in(s))
            .collect();
        labels.sort();
        labels.dedup();
        Ok(labels)
    }

    /// open(2) of `stages/<l>` for writing: as `current`, the handle starts
    /// from the labelled value as it is now unless O_TRUNC.
    pub(super) async fn open_stage_write(
        &self,
        ino: Ino,
        s: &SecretName,
        l: &Label,
        flags: i32,
        pid: u32,
    ) -> Result<Opened> {
        if !names::writable(l) {
            return Err(Error::Refused(names::RESERVED));
        }
        if self.cfg.read_only {
            return Err(Error::ReadOnly);
        }
        let mut buf = Zeroizing::new(Vec::new());
        if flags & libc::O_TRUNC == 0
            && let Some(v) = self.stage_now(s, l).await?
        {
            grow(&mut buf, v.value.len());
            buf.copy_from_slice(v.value.as_bytes());
        }
        let state = WriteState::new(ino, s.clone(), buf, flags, process::tgid(pid));
        Ok(self.stage_write_handle(state, s, l))
    }

    fn stage_write_handle(&self, state: WriteState, s: &SecretName, l: &Label) -> Opened {
        self.stages.opened(s, l);
        self.write_handle(state.staged(l.clone()))
    }

    /// Whether `name` in `stages/` is a label (a create or a rename onto it
    /// puts a version with it): unless it is named like a temporary file
    /// and no version carries it now.
    pub(super) async fn stages_is_label(&self, s: &SecretName, name: &str) -> Result<bool> {
        if !names::is_temp_name(name) {
            return Ok(true);
        }
        match Label::parse(name) {
            Ok(l) => Ok(self.stage_now(s, &l).await?.is_some()),
            Err(_) => Ok(false),
        }
    }

    /// create(2) in `stages/`: a temporary file (see `is_temp_name`), or a
    /// label no version carries yet, whose first stored write is the put.
    pub(super) async fn create_stage(
        &self,
        s: &SecretName,
        name: &str,
        flags: i32,
        mode: u32,
        caller: Caller,
    ) -> Result<(Entry, Opened)> {
        if !self.stages_is_label(s, name).await? {
            let dir = Arc::from(format!("{s}/stages"));
            return self.create_temp((dir, Arc::from(name)), flags, mode, caller);
        }
        let l = names::label_for_file(name)?;
        if self.stage_now(s, &l).await?.is_some() {
            return Err(Error::Exists);
        }
        let ino = self
            .inodes
            .assign(Node::StageFile(s.clone(), l.clone()), true);
        let owner = process::tgid(caller.pid);
        let state = WriteState::new(ino, s.clone(), Zeroizing::new(Vec::new()), flags, owner);
        let opened = self.stage_write_handle(state, s, &l);
        let attr = self.file_attr(ino, 0, SystemTime::now(), true);
        Ok((Entry::uncached(attr), opened))
    }

    /// A truncation of `stages/<l>`: the write handle's, or (truncate(2)
    /// on the path) a staged put of its own. Some: the reply.
    pub(super) async fn resize_stage(
        &self,
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
        if self.cfg.read_only {
            return Err(Error::ReadOnly);
        }
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if size > MAX_VALUE_LEN {
            return Err(Error::TooLarge);
        }
        if let Some(Handle::Write(w)) = handle {
            w.lock().await.resize(size);
            // The stored value's size, as for `current`.
            let e = self.attr_of(ino, node).await?;
            return Ok(Some(Entry::uncached(e.attr)));
        }
        let cur = self.stage_now(s, l).await?.ok_or(Error::NotFound)?;
        let mut buf = Zeroizing::new(cur.value.as_bytes().to_vec());
        grow(&mut buf, size);
        self.put_staged(s, l, SecretBytes::new(buf.to_vec()))
            .await?;
        Ok(None)
    }

    /// PutSecretValue with VersionStages=[l] and a fresh token; AWSCURRENT
    /// and AWSPREVIOUS stay, so their cached values stay valid. "Unchanged"
    /// is judged against the version carrying `l` now. Returns whether a
    /// version was created.
    pub(super) async fn put_staged(
        &self,
        name: &SecretName,
        l: &Label,
        value: SecretBytes,
    ) -> Result<bool> {
        check_value(&value)?;
        let _turn = self.writes.turn(name).await;
        let old = self.stage_now(name, l).await?;
        if old.is_some_and(|o| o.value == value) {
            tracing::info!(secret = %name, label = ?l, "value unchanged; no new version");
            return Ok(false);
        }
        self.writes.note_put(name);
        let token = uuid::Uuid::new_v4().to_string();
        let sent = self
            .store
            .put_value_staged(name, &value, &token, std::slice::from_ref(l))
            .await;
        let id = match sent {
            Ok(id) => id,
            Err(e) if e.is_transient() => self.landed(name, &token, e).await?,
            Err(e) => return Err(e.into()),
        };
        tracing::info!(secret = %name, label = ?l, version = %id,
            "new version stored with this label");
        self.cfg.access.committed(name.as_str(), id.as_str()); // [[access]] hook
        self.stats.staged_put();
        let new = Arc::new(SecretVersion::new(id.clone(), value, SystemTime::now()));
        self.values
            .insert((name.clone(), Selector::Id(id)), Some(new), None);
        // A secret's first version takes AWSCURRENT whatever it is given
        // (a secret created without a value): what is known of its labels
        // (a remembered "no current") goes.
        self.secret_changed(name, Change::unknown(Files::Labels));
        Ok(true)
    }

    /// rename(2) with `stages/` as the old parent: only `stages/<l>` onto
    /// the same secret's `current`, which promotes that version. The
    /// kernel then shows the stage file's inode as `current`.
    pub(super) async fn rename_stage(
        &self,
        s: &SecretName,
        name: &str,
        newparent: Ino,
        newname: &str,
    ) -> Result<()> {
        let onto_current = matches!(self.node(newparent)?, Node::Dir(q) if *q == *s.as_str())
            && newname == "current";
        if !onto_current {
            return Err(Error::NotPermitted(ONLY_ONTO_CURRENT));
        }
        if self.cfg.read_only {
            return Err(Error::ReadOnly);
        }
        let l = Label::parse(name).map_err(|_| Error::NotFound)?;
        self.promote(s, &l).await?;
        self.inodes
            .rebind(&Node::StageFile(s.clone(), l), Node::Current(s.clone()));
        Ok(())
    }

    /// AWSCURRENT moves to the version carrying `l` (AWSPREVIOUS follows to
    /// the old current), then `l` leaves that version, since the rename
    /// took its name away (AWSCURRENT and AWSPREVIOUS excepted: the first
    /// is where it belongs, the second moved by itself).
    async fn promote(&self, s: &SecretName, l: &Label) -> Result<()> {
        let _turn = self.writes.turn(s).await;
        let d = self.described_now(s).await?;
        let to = d.with_label(l).cloned().ok_or(Error::NotFound)?;
        let from = d.with_stage(Stage::Current).cloned();
        if from.as_ref() == Some(&to) {
            // Already current (a label left there by an earlier promotion
            // whose removal failed): the rename still takes the name away.
            if names::writable(l) {
                self.store.update_stage(s, l, None, Some(&to)).await?;
                let change = Change {
                    current: Slot::Keep,
                    previous: Slot::Keep,
                    versions: true,
                    files: Files::Labels,
                };
                self.secret_changed(s, change);
            }
            tracing::info!(secret = %s, label = ?l, "already AWSCURRENT");
            return Ok(());
        }
        let current = Label::of(Stage::Current);
        if let Err(e) = self
            .store
            .update_stage(s, &current, Some(&to), from.as_ref())
            .await
        {
            // A lost answer may have moved it (the SDK's retry is then
            // refused, AWSCURRENT having left `from`): ask where it is.
            self.secret_changed(s, Change::unknown(Files::Labels));
            let moved = self
                .described_now(s)
                .await
                .is_ok_and(|d| d.with_stage(Stage::Current) == Some(&to));
            if !moved {
                return Err(e.into());
            }
            tracing::warn!(secret = %s, label = ?l, error = %e,
                "the answer to the promotion was lost or refused on retry; AWSCURRENT is on the version, so it succeeded");
        }
        self.stats.stage_moved();
        tracing::info!(secret = %s, label = ?l, version = %to,
            previous = %from.as_ref().map_or("none", |v| v.as_str()), "promoted: AWSCURRENT moved");
        if names::writable(l)
            && let Err(e) = self.store.update_stage(s, l, None, Some(&to)).await
        {
            tracing::warn!(secret = %s, label = ?l, version = %to, error = %e,
                "promoted, but the label could not be removed from the version; it stays on the new current");
        }
        self.after_promotion(s, &to, from.as_ref());
        Ok(())
    }

    /// Read-your-writes after a promotion: `current` is the promoted
    /// version and `previous` the old current, when their values are held;
    /// otherwise their entries go and the next read asks (by label).
    fn after_promotion(
        &self,
        s: &SecretName,
        to: &crate::store::VersionId,
        from: Option<&crate::store::VersionId>,
    ) {
        let cur_key = (s.clone(), Selector::Stage(Stage::Current));
        let held = |key: &(SecretName, Selector), id: Option<&crate::store::VersionId>| {
            self.values
                .peek_any(key)
                .flatten()
                .filter(|v| Some(&v.id) == id)
        };
        let old = held(&cur_key, from);
        let new = held(&(s.clone(), Selector::Id(to.clone())), Some(to));
        let known = |v: Option<Arc<SecretVersion>>| v.map_or(Slot::Drop, |v| Slot::Set(Some(v)));
        // current, previous, the JSON keys and every stage file of it.
        let change = Change {
            current: known(new),
            previous: known(old),
            versions: true,
            files: Files::Labels,
        };
        self.secret_changed(s, change);
        self.hooks_put(s, to);
    }
}
