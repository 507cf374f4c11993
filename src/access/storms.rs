//! Storms: the same event repeated by one process on one secret (an open
//! allowed, an open refused), let through once and then counted, so that
//! a loop cannot flood a log. The access log and the daemon log's lines
//! for refused opens both follow storms with it:
//! - the first event of a (process, secret, result) is logged in full
//!   (`first` says so), the others are counted;
//! - every window a task (`flush_every`) drains the counts, one line per
//!   storm; a storm quiet for a whole window is forgotten, so its next
//!   event is logged in full again;
//! - at most `max` storms are followed at once: events of more are one
//!   number a window, never a line each.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::record::Record;

/// A storm's key: the process (thread group when known), the secret, and
/// whether the event was allowed.
type Key = (u32, String, bool);

struct Storm {
    first: Record,
    /// Events since the last drain, not logged one by one.
    count: u64,
}

/// The storms followed now, and the events of those not followed.
pub struct Storms {
    map: Mutex<HashMap<Key, Storm>>,
    unfollowed: AtomicU64,
    max: usize,
    flusher: AtomicBool,
}

/// What a drain found: each storm's first event and the count of its
/// events since the last drain, and the count of events not followed.
pub struct Drained {
    pub storms: Vec<(Record, u64)>,
    pub unfollowed: u64,
}

impl Storms {
    pub fn new(max: usize) -> Self {
        Self {
            map: Mutex::default(),
            unfollowed: AtomicU64::new(0),
            max,
            flusher: AtomicBool::new(false),
        }
    }

    /// Whether `r` starts a storm (log it in full); otherwise it is
    /// counted, for the next drain.
    pub fn first(&self, r: &Record) -> bool {
        let key = (r.who.pid, r.secret.clone(), r.allowed);
        let mut map = self.map.lock();
        if let Some(s) = map.get_mut(&key) {
            s.count += 1;
            return false;
        }
        if map.len() >= self.max {
            self.unfollowed.fetch_add(1, Relaxed);
            return false;
        }
        let first = r.clone();
        map.insert(key, Storm { first, count: 0 });
        true
    }

    /// The counts since the last drain; quiet storms are forgotten.
    pub fn drain(&self) -> Drained {
        let mut storms = Vec::new();
        self.map.lock().retain(|_, s| {
            if s.count == 0 {
                return false;
            }
            storms.push((s.first.clone(), std::mem::take(&mut s.count)));
            true
        });
        Drained {
            storms,
            unfollowed: self.unfollowed.swap(0, Relaxed),
        }
    }

    /// Once per `Storms` (from its first event on): a task that calls
    /// `flush(owner)` every `window` while `owner` lives. Without a tokio
    /// runtime nothing is started (the next call tries again).
    pub fn flush_every<T: Send + Sync + 'static>(
        &self,
        owner: &Arc<T>,
        window: Duration,
        flush: fn(&T),
    ) {
        if self.flusher.swap(true, Relaxed) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.flusher.store(false, Relaxed);
            return;
        };
        let owner = Arc::downgrade(owner);
        rt.spawn(async move {
            let mut tick = tokio::time::interval_at(Instant::now() + window, window);
            loop {
                tick.tick().await;
                let Some(owner) = owner.upgrade() else { return };
                flush(&owner);
            }
        });
    }
}
