//! Change hooks: which secrets are watched, what AWSCURRENT was last seen to
//! be for each, which changes wait for their hook's next run, and running
//! the command (bounded in time and in concurrency, never given a value).
//!
//! The filesystem tells `Watch` what it serves and what it puts; a task per
//! hook (src/daemon.rs) revalidates the watched secrets every interval with
//! DescribeSecret and then runs the hook once per changed secret.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use globset::GlobMatcher;
use lru::LruCache;
use parking_lot::Mutex;

use crate::stats::{HookResult, Stats};
use crate::store::{SecretName, VersionId};
use crate::tree::glob;

/// Secrets whose AWSCURRENT is remembered for the hooks (the least
/// recently served are dropped past it, and are then no longer watched).
pub const MAX_WATCHED: usize = 10_000;
/// Hook commands running at once, over all hooks.
pub const MAX_RUNNING: usize = 4;

/// One hook: a command run when a secret matching `pattern` changes.
#[derive(Clone, Debug)]
pub struct HookSpec {
    pub pattern: String,
    pub matcher: GlobMatcher,
    /// Run by `/bin/sh -c`.
    pub command: String,
    /// How often the watched secrets are revalidated and changes run.
    pub interval: Duration,
    /// How long a run may take before it is killed (its process group).
    pub timeout: Duration,
}

impl HookSpec {
    pub fn new(
        pattern: &str,
        command: &str,
        interval: Duration,
        timeout: Duration,
    ) -> Result<Self, String> {
        if command.trim().is_empty() {
            return Err("on_change: the command is empty".into());
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&interval) {
            return Err("watch: the interval must be between 1s and 1d".into());
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&timeout) {
            return Err("hook_timeout: must be between 1s and 1h".into());
        }
        Ok(Self {
            pattern: pattern.to_string(),
            matcher: glob(pattern).map_err(|e| format!("pattern '{pattern}': {e}"))?,
            command: command.to_string(),
            interval,
            timeout,
        })
    }

    fn matches(&self, name: &SecretName) -> bool {
        self.matcher.is_match(name.as_str())
    }
}

/// What the hooks know: the AWSCURRENT last seen per watched secret, and
/// per hook the changes waiting for its next run.
pub struct Watch {
    hooks: Vec<HookSpec>,
    seen: Mutex<LruCache<SecretName, VersionId>>,
    /// Per hook: secret -> the version it changed to (the latest wins, so
    /// a hook runs at most once per secret per interval).
    pending: Vec<Mutex<HashMap<SecretName, VersionId>>>,
    /// Per hook: secrets whose run has not finished (a run is never
    /// started twice at once for one secret).
    running: Vec<Mutex<HashSet<SecretName>>>,
    gate: Arc<tokio::sync::Semaphore>,
    stats: Arc<Stats>,
    mountpoint: String,
    /// Process groups of the runs going on, killed when the daemon stops.
    groups: Arc<Mutex<HashSet<i32>>>,
    /// Secrets whose revalidation fails (warned about once until it works).
    failing: Mutex<HashSet<SecretName>>,
}

/// What `seen` holds for a watched secret that was deleted: its next
/// version, when it is created again, is a change.
fn gone_marker() -> VersionId {
    VersionId::new("")
}

impl Watch {
    pub fn new(hooks: Vec<HookSpec>, stats: Arc<Stats>, mountpoint: String) -> Arc<Self> {
        let n = hooks.len();
        Arc::new(Self {
            hooks,
            seen: Mutex::new(LruCache::new(
                NonZeroUsize::new(MAX_WATCHED).expect("non-zero"),
            )),
            pending: (0..n).map(|_| Mutex::default()).collect(),
            running: (0..n).map(|_| Mutex::default()).collect(),
            gate: Arc::new(tokio::sync::Semaphore::new(MAX_RUNNING)),
            stats,
            mountpoint,
            groups: Arc::default(),
            failing: Mutex::default(),
        })
    }

    pub fn hooks(&self) -> &[HookSpec] {
        &self.hooks
    }

    fn watched_by_any(&self, name: &SecretName) -> bool {
        self.hooks.iter().any(|h| h.matches(name))
    }

    /// AWSCURRENT of `name` was served: from now on the secret is watched,
    /// from the version served first. (Later reads only keep it watched:
    /// a read may serve a copy older than what the watcher saw last.)
    pub fn served(&self, name: &SecretName, id: &VersionId) {
        if !self.watched_by_any(name) {
            return;
        }
        let mut seen = self.seen.lock();
        match seen.get(name) {
            None => {
                seen.put(name.clone(), id.clone());
            }
            // Deleted, and created again since (a replace by Terraform).
            Some(v) if *v == gone_marker() => {
                seen.put(name.clone(), id.clone());
                drop(seen);
                self.queue(name, id);
            }
            Some(_) => {}
        }
    }

    /// This mount put `id` as AWSCURRENT: a change like any other.
    pub fn put(&self, name: &SecretName, id: &VersionId) {
        if !self.watched_by_any(name) {
            return;
        }
        let before = self.seen.lock().put(name.clone(), id.clone());
        if before.as_ref() != Some(id) {
            self.queue(name, id);
        }
    }

    /// The secrets hook `hook` revalidates, with the version each was last
    /// seen at.
    pub fn watched(&self, hook: usize) -> Vec<(SecretName, VersionId)> {
        let h = &self.hooks[hook];
        self.seen
            .lock()
            .iter()
            .filter(|(n, _)| h.matches(n))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect()
    }

    /// DescribeSecret says AWSCURRENT of `name` is `now`, where it was
    /// `before` when the question was asked. Returns whether it moved. A
    /// put of this mount that landed meanwhile wins (the answer may predate
    /// it).
    pub fn observed(&self, name: &SecretName, before: &VersionId, now: &VersionId) -> bool {
        let mut seen = self.seen.lock();
        match seen.peek_mut(name) {
            Some(v) if v == before && v != now => *v = now.clone(),
            _ => return false,
        }
        drop(seen);
        self.queue(name, now);
        true
    }

    /// The secret is gone (deleted): still watched, so that its creation
    /// anew is a change.
    pub fn gone(&self, name: &SecretName) {
        if let Some(v) = self.seen.lock().peek_mut(name) {
            *v = gone_marker();
        }
        self.pending_clear(name);
    }

    fn pending_clear(&self, name: &SecretName) {
        for p in &self.pending {
            p.lock().remove(name);
        }
    }

    /// A revalidation failed: warned about once until one works again.
    pub fn failed(&self, name: &SecretName, error: &dyn std::fmt::Display) {
        if self.failing.lock().insert(name.clone()) {
            tracing::warn!(secret = %name, error = %error, "change hooks: cannot tell whether the secret changed; trying again each interval");
        }
    }

    pub fn answered(&self, name: &SecretName) {
        if self.failing.lock().remove(name) {
            tracing::info!(secret = %name, "change hooks: the secret can be revalidated again");
        }
    }

    /// The daemon stops: every run going on is killed with its group.
    pub fn kill_runs(&self) {
        for pgid in self.groups.lock().drain() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    fn queue(&self, name: &SecretName, id: &VersionId) {
        for (i, h) in self.hooks.iter().enumerate() {
            if h.matches(name) {
                self.pending[i].lock().insert(name.clone(), id.clone());
            }
        }
    }

    /// Starts hook `hook`'s runs for the changes waiting, at most one per
    /// secret; a secret whose previous run is still going waits for the
    /// next interval.
    pub fn run_pending(self: &Arc<Self>, hook: usize) -> Vec<tokio::task::JoinHandle<()>> {
        let ready: Vec<(SecretName, VersionId)> = {
            let mut pending = self.pending[hook].lock();
            let mut running = self.running[hook].lock();
            let names: Vec<SecretName> = pending
                .keys()
                .filter(|n| !running.contains(*n))
                .cloned()
                .collect();
            names
                .into_iter()
                .filter_map(|n| {
                    let id = pending.remove(&n)?;
                    running.insert(n.clone());
                    Some((n, id))
                })
                .collect()
        };
        ready
            .into_iter()
            .map(|(name, id)| {
                let me = self.clone();
                tokio::spawn(async move {
                    let permit = me.gate.clone().acquire_owned().await;
                    let result = run(&me.hooks[hook], &name, &id, &me.mountpoint, &me.groups).await;
                    drop(permit);
                    me.stats.hook_run(result);
                    me.running[hook].lock().remove(&name);
                })
            })
            .collect()
    }
}

/// Runs the hook for one change: `/bin/sh -c COMMAND` with the secret's
/// name and new version id in its environment (never the value), in a
/// process group of its own, killed whole at the timeout. Its output goes
/// where the daemon's goes.
pub async fn run(
    h: &HookSpec,
    name: &SecretName,
    id: &VersionId,
    mountpoint: &str,
    groups: &Mutex<HashSet<i32>>,
) -> HookResult {
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(&h.command)
        .env("SECRETSFS_SECRET", name.as_str())
        .env("SECRETSFS_VERSION_ID", id.as_str())
        .env("SECRETSFS_MOUNTPOINT", mountpoint)
        // The daemon's credentials are not the hook's to use.
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(secret = %name, pattern = %h.pattern, error = %e, "change hook could not start");
            return HookResult::Failed;
        }
    };
    let pid = child.id().and_then(|p| i32::try_from(p).ok());
    if let Some(pid) = pid {
        groups.lock().insert(pid);
    }
    let ms = |t: Instant| t.elapsed().as_millis() as u64;
    let waited = tokio::time::timeout(h.timeout, child.wait()).await;
    if let Some(pid) = pid {
        groups.lock().remove(&pid);
    }
    match waited {
        Ok(Ok(status)) if status.success() => {
            tracing::info!(secret = %name, version = %id, pattern = %h.pattern, status = 0, duration_ms = ms(started), "change hook ran");
            HookResult::Ok
        }
        Ok(Ok(status)) => {
            let status = status
                .code()
                .map_or_else(|| format!("{status}"), |c| c.to_string());
            tracing::warn!(secret = %name, version = %id, pattern = %h.pattern, status = %status, duration_ms = ms(started), "change hook failed");
            HookResult::Failed
        }
        Ok(Err(e)) => {
            tracing::warn!(secret = %name, pattern = %h.pattern, error = %e, "change hook: waiting for it failed");
            HookResult::Failed
        }
        Err(_) => {
            if let Some(pid) = pid {
                // The whole group: `sh -c` leaves its children behind.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.wait().await;
            tracing::warn!(secret = %name, version = %id, pattern = %h.pattern, timeout_secs = h.timeout.as_secs(), "change hook timed out; killed");
            HookResult::TimedOut
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(pattern: &str) -> HookSpec {
        HookSpec::new(
            pattern,
            "true",
            Duration::from_secs(1),
            Duration::from_secs(5),
        )
        .unwrap()
    }

    fn n(s: &str) -> SecretName {
        SecretName::new(s)
    }

    fn v(s: &str) -> VersionId {
        VersionId::new(s)
    }

    fn watch(patterns: &[&str]) -> Arc<Watch> {
        Watch::new(
            patterns.iter().map(|p| spec(p)).collect(),
            Arc::new(Stats::default()),
            "/m".into(),
        )
    }

    #[test]
    fn star_stays_in_one_component_and_double_star_crosses() {
        let g = glob("prod/db/*").unwrap();
        assert!(g.is_match("prod/db/password"));
        assert!(!g.is_match("prod/db/a/b"));
        assert!(!g.is_match("prod/web/x"));
        assert!(glob("prod/**").unwrap().is_match("prod/db/a/b"));
        assert!(glob("[").is_err());
    }

    #[test]
    fn only_matching_secrets_that_were_served_are_watched() {
        let w = watch(&["web/*"]);
        w.served(&n("db/x"), &v("1"));
        assert!(w.watched(0).is_empty());
        w.served(&n("web/cert"), &v("1"));
        assert_eq!(w.watched(0), vec![(n("web/cert"), v("1"))]);
    }

    #[test]
    fn a_later_read_of_an_older_copy_does_not_move_what_was_seen() {
        let w = watch(&["**"]);
        w.served(&n("a"), &v("1"));
        assert!(w.observed(&n("a"), &v("1"), &v("2")));
        w.served(&n("a"), &v("1"));
        assert_eq!(w.watched(0), vec![(n("a"), v("2"))]);
    }

    #[test]
    fn a_change_is_queued_once_and_a_put_meanwhile_wins_over_an_older_answer() {
        let w = watch(&["**"]);
        w.served(&n("a"), &v("1"));
        assert!(!w.observed(&n("a"), &v("1"), &v("1")), "unchanged");
        w.put(&n("a"), &v("2"));
        // A DescribeSecret asked before the put answers the old version.
        assert!(!w.observed(&n("a"), &v("1"), &v("1")));
        assert!(!w.observed(&n("a"), &v("2"), &v("2")));
        let pending = w.pending[0].lock().clone();
        assert_eq!(pending, HashMap::from([(n("a"), v("2"))]));
    }

    #[test]
    fn many_changes_in_one_interval_make_one_run_with_the_latest_version() {
        let w = watch(&["**", "x/*"]);
        w.served(&n("a"), &v("1"));
        assert!(w.observed(&n("a"), &v("1"), &v("2")));
        assert!(w.observed(&n("a"), &v("2"), &v("3")));
        assert_eq!(w.pending[0].lock().get(&n("a")), Some(&v("3")));
        assert!(w.pending[1].lock().is_empty(), "x/* does not match a");
    }

    #[test]
    fn a_secret_deleted_and_created_again_is_a_change() {
        let w = watch(&["**"]);
        w.served(&n("a"), &v("1"));
        w.gone(&n("a"));
        assert!(w.observed(&n("a"), &gone_marker(), &v("2")));
        assert_eq!(w.pending[0].lock().get(&n("a")), Some(&v("2")));
        w.pending[0].lock().clear();
        w.gone(&n("a"));
        w.served(&n("a"), &v("3"));
        assert_eq!(w.pending[0].lock().get(&n("a")), Some(&v("3")));
    }

    #[test]
    fn bad_settings_are_refused_naming_them() {
        let e = HookSpec::new("*", " ", Duration::from_secs(1), Duration::from_secs(1));
        assert!(e.unwrap_err().contains("on_change"));
        let e = HookSpec::new("*", "true", Duration::ZERO, Duration::from_secs(1));
        assert!(e.unwrap_err().contains("watch"));
        let e = HookSpec::new("*", "true", Duration::from_secs(1), Duration::ZERO);
        assert!(e.unwrap_err().contains("hook_timeout"));
    }

    #[tokio::test]
    async fn a_run_gets_the_name_and_version_and_a_hung_one_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let cmd = format!(
            "echo \"$SECRETSFS_SECRET $SECRETSFS_VERSION_ID $SECRETSFS_MOUNTPOINT\" > {}",
            out.display()
        );
        let g = Mutex::default();
        let h = HookSpec::new("*", &cmd, Duration::from_secs(1), Duration::from_secs(5)).unwrap();
        assert_eq!(run(&h, &n("a"), &v("v1"), "/m", &g).await, HookResult::Ok);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "a v1 /m\n");
        let h = HookSpec::new(
            "*",
            "exit 3",
            Duration::from_secs(1),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(
            run(&h, &n("a"), &v("v1"), "/m", &g).await,
            HookResult::Failed
        );
        let h = HookSpec::new(
            "*",
            "sleep 30 & wait",
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .unwrap();
        let t = Instant::now();
        assert_eq!(
            run(&h, &n("a"), &v("v1"), "/m", &g).await,
            HookResult::TimedOut
        );
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
