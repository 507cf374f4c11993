//! Regions: reads that survive a regional outage (`--failover-region`) and
//! secrets named by ARN in other regions and accounts (`--secret PATH=ARN`).
//! The filesystem above sees only paths; the path <-> ARN mapping and the
//! choice of region live here.
//!
//! - The chain: the primary region, then the failover regions in order,
//!   one client each. A read goes to the first region not known to be
//!   down; a transient failure there (refused, reset, 5xx, throttling after
//!   the SDK's retries, or no answer within `FAILOVER_AFTER`) sends the same
//!   call to the next one, whose answer is the read's. Any other answer
//!   from the primary (AccessDenied, ResourceNotFound, KMS, another 4xx)
//!   is final: fail closed, a secret deleted or revoked in the primary
//!   never comes back from a replica; the verdict is kept (`verdicts`) and
//!   given instead of asking a replica until the primary answers that
//!   secret again. A failover region's 4xx (no replica
//!   there) is not final either way: the next region is asked, else the
//!   primary's failure is the answer (a cached value is then served stale).
//! - A region that failed is skipped by later reads (no timeout paid per
//!   read) and probed in the background (DescribeSecret of a secret it
//!   answered), 1 s after, then doubling up to `PROBE_MAX`, until it
//!   answers; reads then go back to it. Each switch of the region in use
//!   is logged once, with the reason.
//! - Writes go to the primary only (replicas are read-only), and so do a
//!   write's reads (`begin_write` pins the secret): a primary marked down
//!   is asked first, and the write fails (EIO) when it does not answer.
//! - A replica that does not know the version this mount made AWSCURRENT
//!   (it lags) is not served for that secret (`behind`).
//! - An ARN whose region is not the primary's is called in its own region
//!   (a client made at first use), with no failover.
//!
//! About 850 lines on purpose (its tests are in regions/tests.rs): one
//! type, `Regions`, whose routing, per-secret verdicts, write pinning and
//! the fence against a lagging replica share its state and its locks; a
//! split would pass that state between files.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::Probe;
use super::arn::Arn;
use super::errors::CallFailure;
use super::{AwsStore, RegionSpec};
use crate::stats::Stats;
use crate::store::{
    Description, Label, ListedVersion, SecretBytes, SecretName, SecretStore, SecretVersion,
    Selector, StoreError, StoreErrorKind, StoreResult, VersionId, WriteGuard,
};

/// How long a region that another may stand in for has to answer a read
/// (its retries included) before the next region is asked. Below the
/// cache's 1 s wait for a refresh, so that a refresh during a primary hang
/// still brings a fresh value to the reader.
pub const FAILOVER_AFTER: Duration = Duration::from_millis(800);
/// The first wait before probing a region that failed, and the longest.
pub const PROBE_FIRST: Duration = Duration::from_secs(1);
pub const PROBE_MAX: Duration = Duration::from_secs(30);
/// Each probe's bound.
const PROBE_BOUND: Duration = Duration::from_secs(2);

/// One region of the chain: its client and whether it is known to be down.
struct Region {
    name: String,
    /// Tuned for failing over (`AwsStore::derived(_, true)`).
    store: Box<dyn RegionStore>,
    down: parking_lot::Mutex<Option<Down>>,
    /// A denial here was logged (once per region).
    denied_warned: std::sync::atomic::AtomicBool,
    /// A secret this region answered (its SecretId here): what the probe
    /// reads (DescribeSecret), so that it tests what failed.
    known: parking_lot::Mutex<Option<SecretName>>,
    /// The probe's last wait and when the region was last found up: a
    /// region that fails again soon after resumes the backoff where it was.
    backoff: parking_lot::Mutex<(Duration, Option<Instant>)>,
}

/// Why a region is skipped, and since when.
#[derive(Clone)]
struct Down {
    reason: String,
    since: Instant,
}

/// A read call, the same whichever region makes it.
enum Read<'a> {
    /// With each page's bound (a region that another may stand in for).
    List(Option<&'a str>, Option<Duration>),
    Get(&'a Selector),
    Versions,
    Describe,
}

enum Answer {
    List(Vec<SecretName>),
    Get(Option<SecretVersion>),
    Versions(Vec<ListedVersion>),
    Describe(Description),
}

/// Where a secret's calls go.
enum Route<'a> {
    /// The chain, with this SecretId (a name, or an ARN in the primary's
    /// region, rewritten for each replica's region).
    Chain(&'a SecretName, Option<&'a Arn>),
    /// An ARN in a region outside the chain.
    Elsewhere(&'a Arn),
}

pub struct Regions {
    /// The primary, then the failover regions in order.
    chain: Vec<Arc<Region>>,
    /// The primary's client with the default timeouts: every write.
    writer: Arc<dyn SecretStore>,
    /// What the clients of ARN regions are made from.
    base: Arc<AwsStore>,
    /// `--secret PATH=ARN`: the path the tree shows -> the ARN called.
    arns: HashMap<SecretName, Arn>,
    /// Clients of ARN regions outside the chain, made at first use.
    elsewhere: parking_lot::Mutex<HashMap<String, Arc<AwsStore>>>,
    stats: Arc<Stats>,
    /// ARNs already said not to exist (one log line each).
    missing: parking_lot::Mutex<std::collections::HashSet<SecretName>>,
    /// The primary's last 4xx for a secret, by call: answered instead of
    /// asking a replica, until the primary answers that secret again.
    verdicts: parking_lot::Mutex<HashMap<SecretName, HashMap<Call, StoreError>>>,
    /// The version this mount made AWSCURRENT of a secret, and when: a
    /// replica that does not know it yet is behind this mount's own write.
    ours: parking_lot::Mutex<HashMap<SecretName, (VersionId, Instant)>>,
    /// Secrets being written now (a count each): their reads go to the
    /// primary only, without the failover bound.
    writing: Arc<parking_lot::Mutex<HashMap<SecretName, usize>>>,
}

/// The kind of read call a 4xx verdict of the primary is kept for.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Call {
    /// Any call: the primary said the secret does not exist.
    Any,
    Get,
    Versions,
    Describe,
}

/// A write of a secret in progress: its reads stay on the primary.
struct Writing {
    name: SecretName,
    set: Arc<parking_lot::Mutex<HashMap<SecretName, usize>>>,
}

impl Drop for Writing {
    fn drop(&mut self) {
        let mut set = self.set.lock();
        if let Some(n) = set.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                set.remove(&self.name);
            }
        }
    }
}

/// How long the check before a write gives the primary (its own
/// timeouts, not the read failover's 800 ms).
const WRITE_CHECK: Duration = Duration::from_secs(5);
/// How long a replica's answer is checked against the version this mount
/// wrote (replication takes seconds; a version may lose its labels later).
const OURS_FOR: Duration = Duration::from_secs(300);

impl Regions {
    /// The chain over `primary` (whose region is the mount's) and
    /// `failover` regions, and the ARNs by path. `primary_down`: the
    /// start-up check found the primary unreachable (its cause), so reads
    /// start on the next region.
    pub fn new(
        primary: Arc<AwsStore>,
        failover: &[RegionSpec],
        arns: Vec<(SecretName, Arn)>,
        stats: Arc<Stats>,
        primary_down: Option<String>,
    ) -> Self {
        let here = primary.about().region.clone().unwrap_or_default();
        let quick = !failover.is_empty();
        let chain: Vec<(String, Box<dyn RegionStore>)> = std::iter::once((here.clone(), None))
            .chain(
                failover
                    .iter()
                    .filter(|r| r.name != here)
                    .map(|r| (r.name.clone(), r.endpoint.as_deref())),
            )
            .map(|(name, endpoint)| {
                let store: Box<dyn RegionStore> = Box::new(primary.derived(&name, quick, endpoint));
                (name, store)
            })
            .collect();
        let writer: Arc<dyn SecretStore> = primary.clone();
        let regions = Self::over(chain, writer, primary, arns, stats);
        if let (Some(cause), true) = (primary_down, regions.chain.len() > 1) {
            mark_down(&regions.chain[0], format!("unreachable at start ({cause})"));
        }
        regions
    }

    /// The chain of these regions' stores (the primary first), writes to
    /// `writer`, clients of ARN regions made from `base`.
    fn over(
        chain: Vec<(String, Box<dyn RegionStore>)>,
        writer: Arc<dyn SecretStore>,
        base: Arc<AwsStore>,
        arns: Vec<(SecretName, Arn)>,
        stats: Arc<Stats>,
    ) -> Self {
        let chain = chain
            .into_iter()
            .map(|(name, store)| {
                Arc::new(Region {
                    name,
                    store,
                    down: parking_lot::Mutex::new(None),
                    denied_warned: Default::default(),
                    known: Default::default(),
                    backoff: parking_lot::Mutex::new((PROBE_FIRST, None)),
                })
            })
            .collect();
        Self {
            chain,
            writer,
            base,
            arns: arns.into_iter().collect(),
            elsewhere: Default::default(),
            stats,
            missing: Default::default(),
            verdicts: Default::default(),
            ours: Default::default(),
            writing: Default::default(),
        }
    }

    fn route<'a>(&'a self, name: &'a SecretName) -> Route<'a> {
        match self.arns.get(name) {
            None => Route::Chain(name, None),
            Some(arn) if arn.region() == self.chain[0].name => Route::Chain(name, Some(arn)),
            Some(arn) => Route::Elsewhere(arn),
        }
    }

    /// The client of an ARN's region outside the chain.
    fn client_in(&self, region: &str) -> Arc<AwsStore> {
        self.elsewhere
            .lock()
            .entry(region.to_string())
            .or_insert_with(|| Arc::new(self.base.derived(region, false, None)))
            .clone()
    }

    /// A read: in an ARN's own region, or along the chain.
    async fn read(&self, name: Option<&SecretName>, op: Read<'_>) -> StoreResult<Answer> {
        let result = self.read_routed(name, op).await;
        if let (Some(name), Err(e)) = (name, &result)
            && e.kind == StoreErrorKind::NotFound
            && let Some(arn) = self.arns.get(name)
            && self.missing.lock().insert(name.clone())
        {
            tracing::warn!(
                secret = %name,
                "secret {arn} (mounted at {name}) does not exist in region {}: check the ARN (its account, region and six-character suffix)",
                arn.region()
            );
        }
        result
    }

    async fn read_routed(&self, name: Option<&SecretName>, op: Read<'_>) -> StoreResult<Answer> {
        match name.map(|n| self.route(n)) {
            Some(Route::Elsewhere(arn)) => {
                let store = self.client_in(arn.region());
                let id = SecretName::new(arn.to_string());
                let result = store.read(&id, &op, None).await;
                self.count(arn.region(), &result);
                result
            }
            Some(Route::Chain(name, arn)) => self.along_chain(Some((name, arn)), op).await,
            None => self.along_chain(None, op).await,
        }
    }

    /// The chain's regions not known to be down, in order (all of them
    /// when every one is: one may be back before its probe says so).
    fn candidates(&self) -> Vec<usize> {
        let up: Vec<usize> = (0..self.chain.len())
            .filter(|&i| self.chain[i].down.lock().is_none())
            .collect();
        if up.is_empty() {
            (0..self.chain.len()).collect()
        } else {
            up
        }
    }

    async fn along_chain(
        &self,
        secret: Option<(&SecretName, Option<&Arn>)>,
        op: Read<'_>,
    ) -> StoreResult<Answer> {
        let name = secret.map(|(n, _)| n);
        // A secret being written: its reads are the primary's, whatever
        // they cost (the write's "unchanged" check and lookups).
        let pinned = name.is_some_and(|n| self.writing.lock().contains_key(n));
        let candidates = if pinned { vec![0] } else { self.candidates() };
        let last = candidates.len() - 1;
        // The first transient failure, and the failover regions' 4xx.
        let mut failed = None;
        let mut refusals = Vec::new();
        for (n, &i) in candidates.iter().enumerate() {
            let region = &self.chain[i];
            if i > 0
                && let Some(verdict) = name.and_then(|n| self.verdict(n, &op))
            {
                return Err(verdict);
            }
            let id = match secret {
                Some((_, Some(arn))) => SecretName::new(arn.in_region(&region.name).to_string()),
                Some((name, None)) => name.clone(),
                None => SecretName::new(""),
            };
            // A failover region lists the replicas of the primary's secrets.
            let replicas_of = (i > 0).then_some(self.chain[0].name.as_str());
            // ListSecrets is bounded page by page (a long listing is not a
            // failure); the other calls as a whole.
            let paged;
            let op_here = match op {
                Read::List(prefix, _) if n < last => {
                    paged = Read::List(prefix, Some(FAILOVER_AFTER));
                    &paged
                }
                _ => &op,
            };
            let attempt = region.store.read(&id, op_here, replicas_of);
            let result = if n < last && !matches!(op, Read::List(..)) {
                match tokio::time::timeout(FAILOVER_AFTER, attempt).await {
                    Ok(r) => r,
                    Err(_) => Err(StoreError::new(
                        StoreErrorKind::Transient,
                        format!("no answer within {} ms", FAILOVER_AFTER.as_millis()),
                    )),
                }
            } else {
                attempt.await
            };
            self.count(&region.name, &result);
            if i == 0
                && let Some(n) = name
            {
                self.judged(n, &op, &result);
            }
            if result.is_ok() && name.is_some() {
                *region.known.lock() = Some(id.clone());
            }
            match result {
                Err(e) if e.is_transient() => {
                    // With no other region, nothing is skipped: no probe.
                    if self.chain.len() > 1 {
                        mark_down(region, e.message.clone());
                    }
                    failed.get_or_insert(e);
                }
                // A failover region's 4xx (no replica there, access or key
                // not granted there) does not outrank the primary's
                // failure: the next region, else the primary's transient
                // error (so a cached value is served stale, as without
                // failover).
                Err(e) if i > 0 => {
                    self.replica_refused(region, secret.map(|(n, _)| n), &e);
                    refusals.push(format!("{}: {}", region.name, e.message));
                }
                Ok(answer)
                    if i > 0
                        && let Some(n) = name
                        && self.behind(region, &id, n, &op, &answer).await =>
                {
                    let e = StoreError::new(
                        StoreErrorKind::Transient,
                        format!(
                            "region {} has not caught up with the version this mount wrote",
                            region.name
                        ),
                    );
                    tracing::debug!(region = %region.name, secret = %n, "a replica behind this mount's write: not served");
                    refusals.push(e.message.clone());
                    failed.get_or_insert(e);
                }
                answered => {
                    mark_up(region);
                    self.served_by(i, failed.as_ref());
                    return answered;
                }
            }
        }
        let primary = &self.chain[0];
        let mut err = failed.unwrap_or_else(|| {
            let why = primary
                .down
                .lock()
                .clone()
                .map(|d| d.reason)
                .unwrap_or_default();
            StoreError::new(
                StoreErrorKind::Transient,
                format!("the primary region {} is down ({why})", primary.name),
            )
        });
        if !refusals.is_empty() {
            err.message = format!("{}; failover: {}", err.message, refusals.join("; "));
        }
        Err(err)
    }

    /// Whether a replica's answer about AWSCURRENT of `name` is behind the
    /// version this mount made current (its DescribeSecret does not know
    /// that version yet): then it is not served, so that the mount never
    /// goes back to the version its own write replaced (a cached value is
    /// served stale instead).
    async fn behind(
        &self,
        region: &Region,
        id: &SecretName,
        name: &SecretName,
        op: &Read<'_>,
        answer: &Answer,
    ) -> bool {
        let ours = {
            let mut ours = self.ours.lock();
            match ours.get(name) {
                Some((v, at)) if at.elapsed() < OURS_FOR => v.clone(),
                Some(_) => {
                    ours.remove(name);
                    return false;
                }
                None => return false,
            }
        };
        let current = Selector::Stage(crate::store::Stage::Current);
        let described = match (op, answer) {
            (Read::Describe, Answer::Describe(d)) => d.clone(),
            (Read::Get(s), Answer::Get(Some(v))) if **s == current && v.id != ours => {
                let asked = tokio::time::timeout(
                    FAILOVER_AFTER,
                    region.store.read(id, &Read::Describe, None),
                )
                .await;
                let asked = asked.unwrap_or_else(|_| {
                    Err(StoreError::new(StoreErrorKind::Transient, "no answer"))
                });
                self.count(&region.name, &asked);
                match asked {
                    Ok(Answer::Describe(d)) => d,
                    _ => return true,
                }
            }
            (Read::Get(s), Answer::Get(Some(_))) if **s == current => {
                self.ours.lock().remove(name);
                return false;
            }
            _ => return false,
        };
        let knows = described.versions.iter().any(|(v, _)| *v == ours);
        if knows {
            self.ours.lock().remove(name);
        }
        !knows
    }

    /// This mount made `version` AWSCURRENT of `name` (with replicas).
    fn made_current(&self, name: &SecretName, version: &VersionId) {
        if self.chain.len() > 1 && matches!(self.route(name), Route::Chain(..)) {
            self.ours
                .lock()
                .insert(name.clone(), (version.clone(), Instant::now()));
        }
    }

    /// The primary's answer to a read of `name`: a 4xx is kept as its
    /// verdict (by call; a secret that does not exist, for every call),
    /// any other answer clears them.
    fn judged<T>(&self, name: &SecretName, op: &Read<'_>, result: &StoreResult<T>) {
        let mut verdicts = self.verdicts.lock();
        match result {
            Ok(_) => {
                verdicts.remove(name);
            }
            Err(e) if e.is_transient() => {}
            Err(e) => {
                let call = match (op, e.kind) {
                    // A version id or label that is not there is no
                    // verdict on the secret.
                    (
                        Read::Get(Selector::Stage(crate::store::Stage::Current)),
                        StoreErrorKind::NotFound,
                    ) => Call::Any,
                    (Read::Get(_), StoreErrorKind::NotFound) => return,
                    (Read::Get(_), _) => Call::Get,
                    (_, StoreErrorKind::NotFound) => Call::Any,
                    (Read::Versions, _) => Call::Versions,
                    (Read::Describe, _) => Call::Describe,
                    (Read::List(..), _) => return,
                };
                verdicts
                    .entry(name.clone())
                    .or_default()
                    .insert(call, e.clone());
            }
        }
    }

    /// The primary's 4xx verdict on this read of `name`, if it gave one.
    fn verdict(&self, name: &SecretName, op: &Read<'_>) -> Option<StoreError> {
        let verdicts = self.verdicts.lock();
        let kept = verdicts.get(name)?;
        let call = match op {
            Read::Get(_) => Call::Get,
            Read::Versions => Call::Versions,
            Read::Describe => Call::Describe,
            Read::List(..) => return None,
        };
        let e = kept.get(&Call::Any).or_else(|| kept.get(&call))?.clone();
        tracing::debug!(secret = %name, error = %e, "the primary's answer stands: not asked of a replica");
        Some(e)
    }

    /// A failover region answered a read with a 4xx: logged at debug for
    /// a missing replica, once per region as a warning for a denial.
    fn replica_refused(&self, region: &Region, name: Option<&SecretName>, e: &StoreError) {
        let name = name.map(SecretName::as_str).unwrap_or("(listing)");
        let denied = matches!(
            e.kind,
            StoreErrorKind::AccessDenied | StoreErrorKind::DecryptionFailure
        );
        if denied
            && !region
                .denied_warned
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                region = %region.name,
                secret = %name,
                "failover region {} refused a read of {name} ({}): grant the IAM actions and the KMS key there too (docs/regions.md)",
                region.name,
                e.message
            );
        } else {
            tracing::debug!(region = %region.name, secret = %name, error = %e, "failover region has no answer for this read");
        }
    }

    fn count<T>(&self, region: &str, result: &StoreResult<T>) {
        let failed = matches!(result, Err(e) if e.kind != StoreErrorKind::NotFound);
        self.stats.regions.call(region, failed);
    }

    /// Region `i` answered a read of the chain: a switch is logged once.
    fn served_by(&self, i: usize, failed: Option<&StoreError>) {
        let region = &self.chain[i].name;
        let before = self.stats.regions.in_use();
        if !self.stats.regions.use_region(region) {
            return;
        }
        let before = before.unwrap_or_default();
        let from = self.chain.iter().position(|r| r.name == before);
        if from.is_some_and(|f| f < i) {
            let reason = failed.map(|e| e.message.clone()).unwrap_or_else(|| {
                let down = from.and_then(|f| self.chain[f].down.lock().clone());
                down.map_or_else(|| "it failed".into(), |d| d.reason)
            });
            tracing::warn!(
                region = %region,
                from = %before,
                "reads failed over from region {before} to {region}: {before} failed ({reason}); it is probed in the background"
            );
        } else {
            tracing::info!(
                region = %region,
                from = %before,
                "reads are back on region {region}: it answers again"
            );
        }
    }

    /// Where a write goes: the primary (or an ARN's own region), with its
    /// SecretId; refused while the primary is known to be down.
    fn writer_for(&self, name: &SecretName) -> StoreResult<(Arc<dyn SecretStore>, SecretName)> {
        match self.route(name) {
            Route::Elsewhere(arn) => Ok((
                self.client_in(arn.region()) as Arc<dyn SecretStore>,
                SecretName::new(arn.to_string()),
            )),
            Route::Chain(name, arn) => {
                let primary = &self.chain[0];
                if self.chain.len() > 1
                    && let Some(down) = primary.down.lock().clone()
                {
                    let message = format!(
                        "the primary region {} is down ({}, for {} s) and replicas cannot be written; {name} was not changed",
                        primary.name,
                        down.reason,
                        down.since.elapsed().as_secs()
                    );
                    // Logged by the request that failed (its error is this
                    // message). Not transient: the put was never sent, so there is
                    // no "did it land?" to ask (EIO all the same).
                    return Err(StoreError::new(StoreErrorKind::Other, message));
                }
                let id = arn.map_or_else(|| name.clone(), |a| SecretName::new(a.to_string()));
                Ok((self.writer.clone(), id))
            }
        }
    }

    /// A write's result, counted under its region. A primary that fails
    /// a write transiently is taken as down (with replicas, reads move on
    /// and the log says writes cannot).
    fn wrote<T>(&self, name: &SecretName, result: StoreResult<T>) -> StoreResult<T> {
        let (region, chain) = match self.route(name) {
            Route::Elsewhere(arn) => (arn.region().to_string(), false),
            Route::Chain(..) => (self.chain[0].name.clone(), true),
        };
        self.count(&region, &result);
        if let Err(e) = &result
            && e.is_transient()
            && chain
            && self.chain.len() > 1
        {
            tracing::warn!(
                secret = %name,
                region = %region,
                "the primary region {region} failed the write ({}) and replicas cannot be written; whether {name} was changed is looked up by the put's version id",
                e.message
            );
            mark_down(&self.chain[0], e.message.clone());
        }
        result
    }
}

/// One region's client, as the chain uses it: a read call, and the probe
/// of a region that failed. `AwsStore` in the daemon; test doubles below.
#[async_trait]
trait RegionStore: Send + Sync + 'static {
    /// One read call; a listing keeps only the replicas of `replicas_of`'s
    /// secrets, when given.
    async fn read(
        &self,
        id: &SecretName,
        op: &Read<'_>,
        replicas_of: Option<&str>,
    ) -> StoreResult<Answer>;
    /// Whether the region answers now (DescribeSecret of `secret`, a
    /// secret it answered before, else ListSecrets with one result; no
    /// retry): any answer that is not a 5xx, throttling or silence counts
    /// (AccessDenied too: the region is there).
    async fn answers(&self, secret: Option<&SecretName>) -> bool;
}

#[async_trait]
impl RegionStore for AwsStore {
    async fn read(
        &self,
        id: &SecretName,
        op: &Read<'_>,
        replicas_of: Option<&str>,
    ) -> StoreResult<Answer> {
        Ok(match op {
            Read::List(prefix, page_within) => {
                Answer::List(self.list_names(*prefix, replicas_of, *page_within).await?)
            }
            Read::Get(selector) => Answer::Get(self.get_value(id, selector).await?),
            Read::Versions => Answer::Versions(self.list_versions(id).await?),
            Read::Describe => Answer::Describe(self.describe(id).await?),
        })
    }

    async fn answers(&self, secret: Option<&SecretName>) -> bool {
        let (_, probe) = self.probe(secret, PROBE_BOUND);
        match tokio::time::timeout(PROBE_BOUND + Duration::from_millis(500), probe).await {
            Ok(Ok(())) => true,
            Ok(Err(f)) => matches!(
                f,
                CallFailure::Denied(_) | CallFailure::NotFound | CallFailure::Rejected { .. }
            ),
            Err(_) => false,
        }
    }
}

/// `region` failed transiently: later reads skip it, and a probe watches
/// for its return (started once per outage).
fn mark_down(region: &Arc<Region>, reason: String) {
    {
        let mut down = region.down.lock();
        if down.is_some() {
            return;
        }
        *down = Some(Down {
            reason,
            since: Instant::now(),
        });
    }
    let region = region.clone();
    tokio::spawn(async move { probe_until_up(&region).await });
}

fn mark_up(region: &Region) {
    if let Some(d) = region.down.lock().take() {
        tracing::info!(
            region = %region.name,
            "region {} answers again after {} s",
            region.name,
            d.since.elapsed().as_secs()
        );
    }
}

/// Probes a region that failed (`RegionStore::answers`, a read of a
/// secret it answered before), 1 s after, then doubling up to `PROBE_MAX`,
/// until it answers. A region that fails again within `PROBE_MAX` of being
/// found up resumes the backoff where it was (a region whose probe answers
/// while its reads fail is not retried every second).
async fn probe_until_up(region: &Region) {
    let mut wait = {
        let (last, up_at) = *region.backoff.lock();
        match up_at {
            Some(t) if t.elapsed() < PROBE_MAX => (last * 2).min(PROBE_MAX),
            _ => PROBE_FIRST,
        }
    };
    loop {
        tokio::time::sleep(wait).await;
        if region.down.lock().is_none() {
            *region.backoff.lock() = (wait, Some(Instant::now()));
            return;
        }
        let known = region.known.lock().clone();
        let up = region.store.answers(known.as_ref()).await;
        tracing::debug!(region = %region.name, up, "probed a region that failed");
        if up {
            *region.backoff.lock() = (wait, Some(Instant::now()));
            mark_up(region);
            return;
        }
        wait = (wait * 2).min(PROBE_MAX);
    }
}

fn unexpected() -> StoreError {
    StoreError::new(StoreErrorKind::Other, "a region answered another call")
}

#[async_trait]
impl SecretStore for Regions {
    /// A write's reads go to the primary only; a primary marked down is
    /// asked first (DescribeSecret of the secret, within `WRITE_CHECK`),
    /// so that a mark the probe has not cleared yet refuses nothing.
    async fn begin_write(&self, name: &SecretName) -> StoreResult<Option<WriteGuard>> {
        let Route::Chain(_, arn) = self.route(name) else {
            return Ok(None);
        };
        if self.chain.len() < 2 {
            return Ok(None);
        }
        let primary = &self.chain[0];
        let down = primary.down.lock().clone();
        if let Some(down) = down {
            let id = arn.map_or_else(|| name.clone(), |a| SecretName::new(a.to_string()));
            let asked = tokio::time::timeout(WRITE_CHECK, self.writer.describe(&id)).await;
            let failed = match asked {
                Err(_) => Some(format!("no answer within {} s", WRITE_CHECK.as_secs())),
                Ok(Err(e)) if e.is_transient() => Some(e.message),
                Ok(_) => None,
            };
            if let Some(why) = failed {
                self.count(
                    &primary.name,
                    &Err::<(), _>(StoreError::new(StoreErrorKind::Transient, "")),
                );
                return Err(StoreError::new(
                    StoreErrorKind::Other,
                    format!(
                        "the primary region {} is down ({}, for {} s; asked again: {why}) and replicas cannot be written; {name} was not changed",
                        primary.name,
                        down.reason,
                        down.since.elapsed().as_secs()
                    ),
                ));
            }
            self.count(&primary.name, &Ok::<(), StoreError>(()));
            mark_up(primary);
        }
        *self.writing.lock().entry(name.clone()).or_default() += 1;
        Ok(Some(Box::new(Writing {
            name: name.clone(),
            set: self.writing.clone(),
        })))
    }
    async fn list_secrets(&self, prefix: Option<&str>) -> StoreResult<Vec<SecretName>> {
        match self.read(None, Read::List(prefix, None)).await? {
            Answer::List(names) => Ok(names),
            _ => Err(unexpected()),
        }
    }
    async fn get_value(
        &self,
        name: &SecretName,
        selector: &Selector,
    ) -> StoreResult<Option<SecretVersion>> {
        match self.read(Some(name), Read::Get(selector)).await? {
            Answer::Get(v) => Ok(v),
            _ => Err(unexpected()),
        }
    }
    async fn list_version_ids(&self, name: &SecretName) -> StoreResult<Vec<VersionId>> {
        let listed = self.list_versions(name).await?;
        Ok(listed.into_iter().map(|v| v.id).collect())
    }
    async fn list_versions(&self, name: &SecretName) -> StoreResult<Vec<ListedVersion>> {
        match self.read(Some(name), Read::Versions).await? {
            Answer::Versions(v) => Ok(v),
            _ => Err(unexpected()),
        }
    }
    async fn describe(&self, name: &SecretName) -> StoreResult<Description> {
        match self.read(Some(name), Read::Describe).await? {
            Answer::Describe(d) => Ok(d),
            _ => Err(unexpected()),
        }
    }
    async fn put_value(
        &self,
        name: &SecretName,
        value: &SecretBytes,
        token: &str,
    ) -> StoreResult<VersionId> {
        let (store, id) = self.writer_for(name)?;
        let id = self.wrote(name, store.put_value(&id, value, token).await)?;
        self.made_current(name, &id);
        Ok(id)
    }
    async fn create_secret(
        &self,
        name: &SecretName,
        value: &SecretBytes,
        token: &str,
    ) -> StoreResult<VersionId> {
        let (store, id) = self.writer_for(name)?;
        let id = self.wrote(name, store.create_secret(&id, value, token).await)?;
        self.made_current(name, &id);
        Ok(id)
    }
    async fn put_value_staged(
        &self,
        name: &SecretName,
        value: &SecretBytes,
        token: &str,
        stages: &[Label],
    ) -> StoreResult<VersionId> {
        let (store, id) = self.writer_for(name)?;
        self.wrote(
            name,
            store.put_value_staged(&id, value, token, stages).await,
        )
    }
    async fn update_stage(
        &self,
        name: &SecretName,
        label: &Label,
        move_to: Option<&VersionId>,
        remove_from: Option<&VersionId>,
    ) -> StoreResult<()> {
        let (store, id) = self.writer_for(name)?;
        self.wrote(
            name,
            store.update_stage(&id, label, move_to, remove_from).await,
        )?;
        if let Some(v) = move_to
            && *label == Label::of(crate::store::Stage::Current)
        {
            self.made_current(name, v);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
