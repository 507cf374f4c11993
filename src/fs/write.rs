//! Writes: the one put pipeline every writable file goes through
//! (`put_target`: `current`, a JSON key merged into AWSCURRENT, a version
//! with one label; fresh UUID token, limits, "unchanged" judged against
//! Secrets Manager at commit time, lost answers looked up), the promotion
//! of a label to AWSCURRENT, the close, fsync and release of
//! write handles as their state (write_state.rs) says, per-secret put
//! serialisation and churn warnings.

use std::sync::Arc;
use std::time::SystemTime;

use zeroize::Zeroizing;

use super::coherence::{Change, Files, Slot};
use super::core::Core;
use super::handles::{Handle, TempHandle};
use super::jsonkey::{Edit, merged};
use super::names;
use super::temp::TempRef;
use super::types::{Closer, Opened};
use super::write_state::{Target, Then, WriteRef, WriteState, check_value, grow};
use crate::error::{Error, Result};
use crate::inode::Ino;
use crate::process;
use crate::store::{
    Label, SecretBytes, SecretName, SecretVersion, Selector, Stage, StoreError, StoreErrorKind,
    VersionId,
};

impl Core {
    pub(super) async fn open_write(
        &self,
        ino: Ino,
        s: &SecretName,
        flags: i32,
        pid: u32,
    ) -> Result<Opened> {
        if self.cfg.read_only {
            return Err(Error::ReadOnly);
        }
        let mut buf = Zeroizing::new(Vec::new());
        if flags & libc::O_TRUNC == 0 {
            // Partial overwrites and appends build on the real value, not
            // on a cached copy that may be minutes old.
            if let Some(v) = self.current_now(s).await? {
                grow(&mut buf, v.value.len());
                buf.copy_from_slice(v.value.as_bytes());
            }
        }
        let state = WriteState::new(ino, s.clone(), buf, flags, process::tgid(pid));
        Ok(self.write_handle(state))
    }

    pub(super) fn write_handle(&self, state: WriteState) -> Opened {
        self.kernel.open_write(state.ino);
        let fh = self
            .handles
            .add(Handle::Write(Arc::new(tokio::sync::Mutex::new(state))));
        // Direct I/O: uncommitted bytes never reach the page cache readers share.
        Opened {
            fh,
            keep_cache: false,
            direct_io: true,
            no_flush: false,
        }
    }

    /// A write by the process (thread) `pid`.
    pub async fn write(&self, fh: u64, offset: u64, data: &[u8], pid: u32) -> Result<u32> {
        if self.cfg.read_only {
            return Err(Error::ReadOnly);
        }
        match self.handles.get(fh) {
            Some(Handle::Write(w)) => w.lock().await.write(offset, data, process::tgid(pid)),
            Some(Handle::Temp(t)) => {
                let off = usize::try_from(offset).map_err(|_| Error::NoSpace)?;
                t.file.lock().write(off, data, t.append)
            }
            _ => Err(Error::BadHandle),
        }
    }

    /// close(2): the opener's close commits; a close of a descriptor that
    /// another process inherited does not commit a half-written value, and
    /// neither does the close made by the exit of a writer killed by a signal.
    pub async fn flush(&self, fh: u64, closer: Closer) -> Result<()> {
        if self.cfg.read_only {
            // ENOSYS once and the kernel stops sending FLUSH: a close on a
            // read-only mount then never reaches the daemon.
            return Err(Error::NotImplemented);
        }
        match self.handles.get(fh) {
            Some(Handle::Write(w)) => {
                let mut st = w.lock().await;
                let then = st.on_close(closer);
                self.carry_out(&mut st, then).await
            }
            Some(Handle::Temp(t)) => {
                if closer.killed {
                    t.file.lock().abandon();
                    return Ok(());
                }
                if closer.tgid != t.owner {
                    return Ok(());
                }
                self.commit_temp(&t.file).await
            }
            _ => Ok(()),
        }
    }

    /// Whether a close of this handle can commit (so who closes matters).
    pub fn may_commit(&self, fh: u64) -> bool {
        matches!(
            self.handles.get(fh),
            Some(Handle::Write(_) | Handle::Temp(_))
        )
    }

    pub async fn fsync(&self, fh: u64) -> Result<()> {
        match self.handles.get(fh) {
            Some(Handle::Write(w)) => {
                let mut st = w.lock().await;
                let then = st.on_sync();
                self.carry_out(&mut st, then).await
            }
            Some(Handle::Temp(t)) => self.commit_temp(&t.file).await,
            _ => Ok(()),
        }
    }

    /// The last close: commits what no close of the opener did (a child
    /// wrote after it); its error cannot reach the program, so it is logged.
    pub(super) async fn release_write(&self, w: WriteRef) {
        let mut st = w.lock().await;
        if st.dirty()
            && let Err(e) = self.commit(&mut st).await
        {
            tracing::error!(secret = %st.name, error = %e, "write at last close failed; value not stored");
        }
        self.kernel.close_write(st.ino);
        if let Some(l) = st.stage() {
            self.stages.closed(&st.name, l);
        }
    }

    /// A temporary file that became `current` and was written since: put
    /// it (the owner's close, an fsync, or the last close).
    pub(super) async fn commit_temp(&self, file: &TempRef) -> Result<()> {
        let (target, value) = {
            let mut f = file.lock();
            if f.abandoned {
                return Err(Error::Abandoned);
            }
            let Some((name, target)) = f.target.clone().filter(|_| f.dirty) else {
                return Ok(());
            };
            f.dirty = false;
            ((name, target), SecretBytes::new(f.bytes().to_vec()))
        };
        self.put_target(&target.0, &target.1, value, false).await
    }

    pub(super) async fn release_temp(&self, t: TempHandle) {
        if let Err(e) = self.commit_temp(&t.file).await
            && !matches!(e, Error::Abandoned)
        {
            tracing::error!(error = %e, "write at last close failed; value not stored");
        }
    }

    /// What the state said a close or an fsync is to do.
    async fn carry_out(&self, st: &mut WriteState, then: Then) -> Result<()> {
        match then {
            Then::Commit => self.commit(st).await,
            Then::Fail(e) => Err(e),
            Then::Nothing => Ok(()),
        }
    }

    async fn commit(&self, st: &mut WriteState) -> Result<()> {
        let result = match st.begin_commit() {
            Ok(value) => {
                self.put_target(&st.name, &st.target, value, st.create)
                    .await
            }
            Err(e) => Err(e),
        };
        st.end_commit(&result);
        result
    }

    /// The one put every writable file goes through: `value` (trimmed by
    /// the rules) as the secret's new value, as one JSON key of it, or as
    /// a version carrying one label.
    pub(super) async fn put_target(
        &self,
        name: &SecretName,
        target: &Target,
        value: SecretBytes,
        create: bool,
    ) -> Result<()> {
        let value = self.trimmed(name, value);
        match target {
            Target::Current => self.put(name, value, create).await,
            Target::JsonKey(key, existed) => {
                let buf = value.as_bytes();
                let edit = if *existed {
                    Edit::Replace(buf)
                } else {
                    Edit::Set(buf)
                };
                self.put_json(name, key, edit).await
            }
            Target::Stage(l) => self.put_staged(name, l, value).await,
        }
        .map(|_| ())
    }

    /// The put of a key's change, merged inside the secret's put turn with
    /// the AWSCURRENT the "unchanged" check uses, so that a change another
    /// writer made to another key since open is kept.
    pub(super) async fn put_json(&self, s: &SecretName, key: &str, edit: Edit<'_>) -> Result<bool> {
        if let Edit::Set(w) | Edit::Replace(w) = edit
            && w.is_empty()
        {
            return Err(Error::Invalid("an empty value cannot be stored".into()));
        }
        // The put's coherence step covers this key's file too.
        self.put_with(s, false, |cur| {
            merged(cur.ok_or(Error::NotFound)?, key, edit)
        })
        .await
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
        // Its reads (the "unchanged" check included) are the primary's.
        let _writing = self.store.begin_write(name).await?;
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
        self.cfg.access.committed(name.as_str(), id.as_str());
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

    /// AWSCURRENT as it is in Secrets Manager now: the cached copy when
    /// DescribeSecret says it is still the current version, otherwise
    /// fetched. Never a stale copy. It goes through the cache's fenced
    /// fetch, so an answer that lands after a put of this mount cannot
    /// replace what the put cached.
    pub(super) async fn current_now(
        &self,
        name: &SecretName,
    ) -> Result<Option<Arc<SecretVersion>>> {
        let sel = Selector::Stage(Stage::Current);
        let fetch = self.value_fetch(name, &sel);
        let key = (name.clone(), sel);
        let before = self.values.peek_any(&key).flatten();
        let now = self
            .values
            .refetch(&key, Some(self.cfg.ttl), fetch)
            .await?
            .value;
        if let Some(v) = &now {
            self.renumbered(name, before.as_ref(), v);
        }
        Ok(now)
    }

    /// PutSecretValue (or CreateSecret) with a fresh token, then the cache
    /// holds the new value at once. Returns whether a version was created.
    pub(super) async fn put(
        &self,
        name: &SecretName,
        value: SecretBytes,
        create: bool,
    ) -> Result<bool> {
        // Refused before any call.
        check_value(&value)?;
        self.put_with(name, create, move |_| Ok(value)).await
    }

    /// `put` of the value `make` computes, inside the secret's put turn,
    /// from AWSCURRENT as it is at commit time (None: creating, or no
    /// AWSCURRENT): the same AWSCURRENT that "unchanged" is judged against.
    pub(super) async fn put_with(
        &self,
        name: &SecretName,
        create: bool,
        make: impl FnOnce(Option<&SecretVersion>) -> Result<SecretBytes> + Send,
    ) -> Result<bool> {
        let _turn = self.writes.turn(name).await;
        // Its reads (the "unchanged" check included) are the primary's.
        let _writing = self.store.begin_write(name).await?;
        let old = if create {
            None
        } else {
            self.current_now(name).await?
        };
        let value = make(old.as_deref())?;
        check_value(&value)?;
        if old.as_ref().is_some_and(|o| o.value == value) {
            tracing::info!(secret = %name, "value unchanged; no new version");
            return Ok(false);
        }
        self.writes.note_put(name);
        let token = uuid::Uuid::new_v4().to_string();
        let sent = if create {
            self.store.create_secret(name, &value, &token).await
        } else {
            self.store.put_value(name, &value, &token).await
        };
        let id = match sent {
            Ok(id) => id,
            Err(e) if e.is_transient() => self.landed(name, &token, e).await?,
            Err(e) => return Err(e.into()),
        };
        tracing::info!(secret = %name, version = %id, "new version stored");
        self.cfg.access.committed(name.as_str(), id.as_str());
        let new = Arc::new(SecretVersion::new(id, value, SystemTime::now()));
        self.after_put(name, new, old).await;
        if create {
            self.names.created(name.as_str());
        }
        Ok(true)
    }

    /// Every attempt of a put ended without an answer (`lost`): the version
    /// may exist. The token is its id, so ask for it. Found: the put
    /// succeeded. Not found (a put may still be on its way) or cannot
    /// tell: `lost` is the answer, and AWSCURRENT is dropped from the cache
    /// so that the next read asks again.
    pub(super) async fn landed(
        &self,
        name: &SecretName,
        token: &str,
        lost: StoreError,
    ) -> Result<VersionId> {
        let id = VersionId::new(token);
        match self.store.get_value(name, &Selector::Id(id.clone())).await {
            Ok(Some(_)) => {
                tracing::warn!(secret = %name, version = %id,
                    "the answer to the put was lost; the version is there, so it succeeded");
                Ok(id)
            }
            // Not there now, but a put still on its way may land later;
            // or the lookup failed: either way the outcome is unknown.
            found => {
                let change = Change {
                    current: Slot::Drop,
                    previous: Slot::Keep,
                    versions: false,
                    files: Files::Labels,
                };
                self.secret_changed(name, change);
                let lookup = match found {
                    Ok(_) => "not found yet".to_string(),
                    Err(e) if e.kind == StoreErrorKind::NotFound => "not found yet".to_string(),
                    Err(e) => e.to_string(),
                };
                tracing::error!(secret = %name, version = %id, lookup = %lookup,
                    "the answer to the put was lost: whether it was stored is unknown; the next read asks the backend");
                Err(lost.into())
            }
        }
    }

    /// Read-your-writes: the cache holds the new version and, as AWSPREVIOUS,
    /// the version that really became it (checked with DescribeSecret, since
    /// another writer may have put between our comparison and our put).
    async fn after_put(
        &self,
        name: &SecretName,
        new: Arc<SecretVersion>,
        old: Option<Arc<SecretVersion>>,
    ) {
        let (cur_ok, prev_ok) = match self.store.describe(name).await {
            Ok(d) => (
                d.with_stage(Stage::Current) == Some(&new.id),
                d.with_stage(Stage::Previous) == old.as_ref().map(|o| &o.id),
            ),
            // Unknown: trust what we did.
            Err(_) => (true, true),
        };
        if !prev_ok && old.is_some() {
            // Secrets Manager has no conditional put: another writer's
            // version landed between our read of AWSCURRENT and our put,
            // and ours replaced it (it is AWSPREVIOUS now, or older).
            tracing::warn!(secret = %name,
                "another writer put a version while this one was being stored; theirs is no longer AWSCURRENT");
        }
        if cur_ok {
            self.hooks_put(name, &new.id);
        }
        let known = |ok: bool, v: Option<Arc<SecretVersion>>| {
            if ok { Slot::Set(v) } else { Slot::Drop }
        };
        let change = Change {
            current: known(cur_ok, Some(new)),
            previous: known(prev_ok, old),
            versions: true,
            files: Files::Labels,
        };
        self.secret_changed(name, change);
    }

    /// AWSCURRENT moves to the version carrying `l` (AWSPREVIOUS follows to
    /// the old current), then `l` leaves that version, since the rename
    /// took its name away (AWSCURRENT and AWSPREVIOUS excepted: the first
    /// is where it belongs, the second moved by itself).
    pub(super) async fn promote(&self, s: &SecretName, l: &Label) -> Result<()> {
        let _turn = self.writes.turn(s).await;
        let _writing = self.store.begin_write(s).await?;
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
        // AWSCURRENT moved: a write, in the access log as the renamer's.
        self.cfg.access.committed(s.as_str(), to.as_str());
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
