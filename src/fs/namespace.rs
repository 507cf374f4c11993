//! The namespace: which paths are secrets or directories. It owns the
//! listing (ListSecrets, refreshed behind the reader), names found by direct
//! lookup, directories made by mkdir that have no secret yet, and names
//! recently found missing. Every set is bounded.

use std::collections::BTreeSet;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lru::LruCache;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::cache::{Cache, Limits};
use crate::error::{Error, Result};
use crate::stats::Stats;
use crate::store::{SecretName, SecretStore, StoreError, StoreErrorKind};
use crate::tree::{Listing, Warned};

/// Names found by direct lookup that are kept (least recently used go; a
/// name that goes is found again by the next lookup, at one API call).
pub const MAX_DIRECT: usize = 10_000;
/// Names remembered as missing.
pub const MAX_NEGATIVE: usize = 10_000;
/// Directories made by mkdir and not yet written.
pub const MAX_PENDING: usize = 1_000;
/// How long a denied ListSecrets is answered from memory.
pub const LISTING_DENIED_TTL: Duration = Duration::from_secs(300);
/// The most a whole paginated listing may take.
pub const LISTING_DEADLINE: Duration = Duration::from_secs(60);
/// Bytes of listings kept (one listing: about 100 bytes a name).
const LISTING_BYTES: usize = 64 << 20;

/// What a directory path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirInfo {
    pub secret: bool,
    /// Created by mkdir, no version yet.
    pub pending: bool,
}

impl DirInfo {
    pub const PLAIN: DirInfo = DirInfo {
        secret: false,
        pending: false,
    };
    pub const SECRET: DirInfo = DirInfo {
        secret: true,
        pending: false,
    };
}

pub struct Namespace {
    store: Arc<dyn SecretStore>,
    prefix: Option<String>,
    ttl: Duration,
    negative_ttl: Duration,
    cold_wait: Duration,
    /// The last wait for a listing ran out.
    listing_slow: AtomicBool,
    listings: Arc<Cache<(), Arc<Listing>>>,
    /// `--secret`: exactly these, never listed.
    fixed: Option<Arc<Listing>>,
    direct: Mutex<RecentNames>,
    negative: Mutex<LruCache<String, Instant>>,
    pending: Mutex<BTreeSet<String>>,
    warned: Arc<Warned>,
}

fn has_under(set: &BTreeSet<String>, path: &str) -> bool {
    let lead = format!("{path}/");
    set.range(lead.clone()..)
        .next()
        .is_some_and(|n| n.starts_with(&lead))
}

fn lru<V>(n: usize) -> Mutex<LruCache<String, V>> {
    Mutex::new(LruCache::new(NonZeroUsize::new(n).expect("non-zero bound")))
}

/// A set of names bounded by recency, also kept sorted for prefix queries.
struct RecentNames {
    recent: LruCache<String, ()>,
    sorted: BTreeSet<String>,
}

impl RecentNames {
    fn new(n: usize) -> Self {
        Self {
            recent: LruCache::new(NonZeroUsize::new(n).expect("non-zero bound")),
            sorted: BTreeSet::new(),
        }
    }

    fn put(&mut self, name: &str) {
        if let Some((old, ())) = self.recent.push(name.to_string(), ())
            && old != name
        {
            self.sorted.remove(&old);
        }
        self.sorted.insert(name.to_string());
    }

    fn pop(&mut self, name: &str) {
        self.recent.pop(name);
        self.sorted.remove(name);
    }

    fn contains(&mut self, name: &str) -> bool {
        self.recent.get(name).is_some()
    }
}

impl Namespace {
    pub fn new(
        cfg: &super::settings::FsConfig,
        store: Arc<dyn SecretStore>,
        stats: Arc<Stats>,
    ) -> Self {
        let warned = Arc::new(Warned::default());
        let fixed = cfg
            .secrets
            .as_ref()
            .map(|names| Arc::new(Listing::build(names.iter().cloned(), &warned)));
        Self {
            store,
            prefix: cfg.prefix.clone(),
            ttl: cfg.ttl,
            negative_ttl: cfg.negative_ttl,
            cold_wait: cfg.cold_wait.unwrap_or(LISTING_DEADLINE),
            listing_slow: AtomicBool::new(false),
            listings: Cache::new(
                Limits {
                    // Listings are refreshed behind the reader anyway.
                    max_stale: None,
                    // A principal without ListSecrets is a supported setup:
                    // its denial is not asked again at every lookup.
                    denied_ttl: LISTING_DENIED_TTL,
                    ..cfg.limits(LISTING_BYTES, |l: &Arc<Listing>| l.weight())
                },
                stats,
            ),
            fixed,
            direct: Mutex::new(RecentNames::new(MAX_DIRECT)),
            negative: lru(MAX_NEGATIVE),
            pending: Mutex::new(BTreeSet::new()),
            warned,
        }
    }

    /// Whether the set of secrets is fixed (`--secret`): nothing is found
    /// by direct lookup.
    pub fn is_fixed(&self) -> bool {
        self.fixed.is_some()
    }

    pub async fn listing(&self) -> Result<Arc<Listing>> {
        if let Some(l) = &self.fixed {
            return Ok(l.clone());
        }
        let store = self.store.clone();
        let prefix = self.prefix.clone();
        let warned = self.warned.clone();
        // A listing past its TTL is answered at once while it refreshes: a
        // slow ListSecrets (100 pages for 10,000 secrets) must not hold up
        // lookups of secrets that are cached.
        let got =
            self.listings
                .get_or_refresh(&(), Some(self.ttl), move || async move {
                    let names = tokio::time::timeout(
                        LISTING_DEADLINE,
                        store.list_secrets(prefix.as_deref()),
                    )
                    .await
                    .map_err(|_| {
                        StoreError::new(StoreErrorKind::Transient, "listing took longer than 60 s")
                    })??;
                    Ok(Arc::new(Listing::build(names, &warned)))
                })
                .await;
        Ok(got?.value)
    }

    /// The listing, or an empty one when listing is not possible (then only
    /// direct lookups find secrets).
    /// The listing, or an empty one when listing is not possible (then only
    /// direct lookups find secrets). A listing that takes longer than the
    /// cold wait is not waited for here (it goes on and serves later
    /// lookups): a path walk must not hang on a hung ListSecrets. The flag
    /// says whether the answer is the real listing or a stand-in for one
    /// that is still coming (then "not found" cannot be trusted).
    pub async fn listing_or_empty(&self) -> (Arc<Listing>, bool) {
        // Once a wait ran out, later lookups (the next path component, say)
        // do not wait again for the same slow listing.
        let wait = if self.listing_slow.load(Ordering::Relaxed) {
            Duration::ZERO
        } else {
            self.cold_wait
        };
        let got = tokio::time::timeout(wait, self.listing()).await;
        self.listing_slow.store(got.is_err(), Ordering::Relaxed);
        match got {
            Ok(Ok(l)) => (l, true),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "listing failed; falling back to direct lookups");
                (Arc::new(Listing::default()), true)
            }
            Err(_) => {
                tracing::debug!("listing is slow; falling back to direct lookups meanwhile");
                (Arc::new(Listing::default()), false)
            }
        }
    }

    /// What `path` is, from what is known without asking the backend.
    pub fn known(&self, path: &str, listing: &Listing) -> Option<DirInfo> {
        let listed = listing.is_secret(path);
        let (direct, direct_under) = {
            let mut d = self.direct.lock();
            if listed {
                // The listing knows it now: no need to keep it twice.
                d.pop(path);
            }
            (d.contains(path), has_under(&d.sorted, path))
        };
        let (pending, pending_under) = {
            let p = self.pending.lock();
            (p.contains(path), has_under(&p, path))
        };
        let secret = listed || direct;
        (secret || pending || listing.is_prefix(path) || direct_under || pending_under).then_some(
            DirInfo {
                secret,
                pending: pending && !secret,
            },
        )
    }

    pub fn in_scope(&self, path: &str, secrets: Option<&[SecretName]>) -> bool {
        if let Some(names) = secrets {
            return names.iter().any(|n| n.as_str() == path);
        }
        self.prefix.as_deref().is_none_or(|p| path.starts_with(p))
    }

    // ---- names found directly ------------------------------------------

    pub fn found_direct(&self, path: &str) {
        self.direct.lock().put(path);
    }

    /// The secret is gone (a read answered NotFound).
    pub fn lost(&self, path: &str) {
        self.direct.lock().pop(path);
    }

    // ---- missing names --------------------------------------------------

    pub fn negative_hit(&self, path: &str) -> bool {
        let mut neg = self.negative.lock();
        match neg.get(path) {
            Some(t) if *t > Instant::now() => true,
            Some(_) => {
                neg.pop(path);
                false
            }
            None => false,
        }
    }

    pub fn remember_missing(&self, path: &str) {
        self.negative
            .lock()
            .put(path.to_string(), Instant::now() + self.negative_ttl);
    }

    fn forget_missing(&self, path: &str) {
        self.negative.lock().pop(path);
    }

    // ---- directories made by mkdir --------------------------------------

    pub fn add_pending(&self, path: &str) -> Result<()> {
        let mut p = self.pending.lock();
        if p.len() >= MAX_PENDING {
            return Err(Error::NoSpace);
        }
        p.insert(path.to_string());
        drop(p);
        self.forget_missing(path);
        Ok(())
    }

    pub fn is_pending(&self, path: &str) -> bool {
        self.pending.lock().contains(path)
    }

    /// rmdir of a directory made by mkdir with nothing below it.
    pub fn remove_pending(&self, path: &str) -> bool {
        let mut p = self.pending.lock();
        if p.contains(path) && !has_under(&p, path) {
            p.remove(path);
            return true;
        }
        false
    }

    /// The secret a pending directory stood for now exists.
    pub fn created(&self, path: &str) {
        self.pending.lock().remove(path);
        self.found_direct(path);
        self.forget_missing(path);
    }

    /// Children below `p` that the listing does not know: direct finds,
    /// mkdir'd names.
    pub fn extra_children(&self, p: &str) -> BTreeSet<String> {
        let lead = if p.is_empty() {
            String::new()
        } else {
            format!("{p}/")
        };
        let first = |n: &str| n[lead.len()..].split('/').next().map(str::to_string);
        let mut out: BTreeSet<String> = self
            .direct
            .lock()
            .sorted
            .range(lead.clone()..)
            .take_while(|n| n.starts_with(&lead))
            .filter_map(|n| first(n))
            .collect();
        out.extend(
            self.pending
                .lock()
                .range(lead.clone()..)
                .take_while(|n| n.starts_with(&lead))
                .filter_map(|n| first(n)),
        );
        out
    }

    /// A refresh of `prefix` (`""` for everything): the listing is fetched
    /// again, and names under it remembered as missing are asked again.
    pub fn refresh(&self, prefix: &str) {
        if self.fixed.is_none() {
            self.listings.remove(&());
        }
        let mut neg = self.negative.lock();
        let gone: Vec<String> = neg
            .iter()
            .map(|(k, _)| k)
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        for k in gone {
            neg.pop(&k);
        }
    }

    /// A refresh of one name: if it was remembered as missing, no more.
    pub fn refresh_name(&self, name: &str) {
        self.forget_missing(name);
    }

    /// The secret names of the listing (or of `--secret`), for the check
    /// that every rule's pattern matches something.
    pub async fn names(&self) -> Result<Vec<String>> {
        Ok(self.listing().await?.names().map(str::to_string).collect())
    }

    /// (direct names, missing names, pending directories, listing bytes).
    pub fn sizes(&self) -> (usize, usize, usize, usize) {
        (
            self.direct.lock().sorted.len(),
            self.negative.lock().len(),
            self.pending.lock().len(),
            self.listings.usage().1,
        )
    }
}
