//! Puts' bookkeeping, a leaf owner: one put at a time per secret (its
//! turn), the churn warning (Secrets Manager's advice: a put at most about
//! every 10 minutes), and the processes replacing a file (install(1)
//! unlinks, then creates: hidden from that process alone, briefly).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::OwnedMutexGuard;

use crate::process;
use crate::store::SecretName;

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
