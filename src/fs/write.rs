//! Writes: the put pipeline every writable file goes through (`put_target`:
//! fresh UUID token, limits, "unchanged" judged against Secrets Manager at
//! commit time, lost answers looked up), the close, fsync and release of
//! write handles as their state (write_state.rs) says, per-secret put
//! serialisation and churn warnings.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use tokio::sync::OwnedMutexGuard;
use zeroize::Zeroizing;

use super::Fs;
use super::coherence::{Change, Files, Slot};
use super::handles::Handle;
use super::types::{Closer, Opened};
use super::write_state::{Target, Then, WriteRef, WriteState, check_value, grow};
use crate::error::{Error, Result};
use crate::inode::Ino;
use crate::process;
use crate::store::{
    SecretBytes, SecretName, SecretVersion, Selector, Stage, StoreError, StoreErrorKind, VersionId,
};

/// How long `current` stays hidden from a process replacing it (install).
const REPLACE_WINDOW: Duration = Duration::from_secs(5);
/// The API's advice: put a secret at most about once every 10 minutes.
const CHURN_WARNING: Duration = Duration::from_secs(600);
/// Secrets whose last put time is remembered for the churn warning.
const MAX_CHURN_ENTRIES: usize = 1_000;
/// The churn warning is given at most this often per secret.
const CHURN_REPEAT: Duration = Duration::from_secs(3600);

/// A secret's puts as the churn warning sees them.
#[derive(Clone, Copy)]
struct Churn {
    last_put: Instant,
    warned: Option<Instant>,
}

/// Write-side bookkeeping shared by all handles.
#[derive(Default)]
pub struct Writes {
    put_locks: Mutex<HashMap<SecretName, Arc<tokio::sync::Mutex<()>>>>,
    /// Secrets Manager's version quota is what the churn warning is about:
    /// given on AWS only (the local store has no quota).
    warn_churn: bool,
    last_put: Mutex<HashMap<SecretName, Churn>>,
    /// (directory, process) for which `current` is being replaced.
    replacing: Mutex<HashMap<(String, u32), Instant>>,
}

/// One put at a time per secret, so that the cache's order matches the
/// API's; the lock is dropped from the table when nobody waits for it.
pub(super) struct PutTurn<'a> {
    writes: &'a Writes,
    name: SecretName,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for PutTurn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.writes.put_locks.lock();
        // Only the table's own reference left: nobody waits.
        if locks
            .get(&self.name)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            locks.remove(&self.name);
        }
    }
}

impl Writes {
    pub(super) async fn turn(&self, name: &SecretName) -> PutTurn<'_> {
        let lock = self
            .put_locks
            .lock()
            .entry(name.clone())
            .or_default()
            .clone();
        let guard = lock.lock_owned().await;
        PutTurn {
            writes: self,
            name: name.clone(),
            guard: Some(guard),
        }
    }

    pub fn len(&self) -> usize {
        self.put_locks.lock().len()
    }

    /// Writes that warn about churn (on AWS) or not (the local store).
    pub(super) fn new(warn_churn: bool) -> Self {
        Self {
            warn_churn,
            ..Self::default()
        }
    }

    /// Logs when a secret is put more often than the API advises (on AWS
    /// only, at most once an hour per secret); whether it did.
    pub(super) fn note_put(&self, name: &SecretName) -> bool {
        if !self.warn_churn {
            return false;
        }
        let now = Instant::now();
        let mut last = self.last_put.lock();
        if last.len() >= MAX_CHURN_ENTRIES {
            last.retain(|_, c| {
                now.duration_since(c.last_put) < CHURN_WARNING
                    || c.warned
                        .is_some_and(|w| now.duration_since(w) < CHURN_REPEAT)
            });
        }
        let before = last.insert(
            name.clone(),
            Churn {
                last_put: now,
                warned: None,
            },
        );
        let Some(before) = before else {
            return false;
        };
        let entry = last.get_mut(name).expect("just inserted");
        entry.warned = before.warned;
        let since = now.duration_since(before.last_put);
        let quiet = before
            .warned
            .is_some_and(|w| now.duration_since(w) < CHURN_REPEAT);
        if since >= CHURN_WARNING || quiet {
            return false;
        }
        entry.warned = Some(now);
        tracing::warn!(secret = %name, since_last_secs = since.as_secs(),
            "secret written more than once in 10 minutes: each write is a new version, and Secrets Manager \
             refuses new versions (EDQUOT) once too many were made in a day; write the final value once \
             (edit a copy, then copy it over current). Said at most once an hour per secret");
        true
    }

    /// Whether `current` in `dir` is hidden from this process because it
    /// unlinked it to create it anew.
    pub fn is_replacing(&self, dir: &str, pid: u32) -> bool {
        let mut r = self.replacing.lock();
        if r.is_empty() {
            return false;
        }
        let now = Instant::now();
        r.retain(|_, until| *until > now);
        r.contains_key(&(dir.to_string(), process::tgid(pid)))
    }

    pub(super) fn start_replacing(&self, dir: &str, tgid: u32) {
        let now = Instant::now();
        let mut r = self.replacing.lock();
        r.retain(|_, until| *until > now);
        r.insert((dir.to_string(), tgid), now + REPLACE_WINDOW);
    }

    pub(super) fn end_replacing(&self, dir: &str, tgid: u32) -> bool {
        self.replacing
            .lock()
            .remove(&(dir.to_string(), tgid))
            .is_some()
    }
}

impl Fs {
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
            Some(Handle::Refresh) => self.refresh(data).await,
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
                    super::json::Edit::Replace(buf)
                } else {
                    super::json::Edit::Set(buf)
                };
                self.put_json(name, key, edit).await
            }
            Target::Stage(l) => self.put_staged(name, l, value).await,
        }
        .map(|_| ())
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
        Ok(self
            .values
            .refetch(&(name.clone(), sel), Some(self.cfg.ttl), fetch)
            .await?
            .value)
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
        self.cfg.access.committed(name.as_str(), id.as_str()); // [[access]] hook
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
                    "the answer to the put was lost: whether it was stored is unknown; the next read asks Secrets Manager");
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_churn_warning_is_for_aws_only_and_once_an_hour_per_secret() {
        let (a, b) = (SecretName::new("a"), SecretName::new("b"));
        let local = Writes::new(false);
        assert!((0..6).all(|_| !local.note_put(&a)));
        let aws = Writes::new(true);
        assert!(!aws.note_put(&a), "a first write");
        assert!(aws.note_put(&a), "a second one within 10 minutes");
        assert!((0..4).all(|_| !aws.note_put(&a)), "said once an hour");
        assert!(!aws.note_put(&b) && aws.note_put(&b), "per secret");
    }
}
