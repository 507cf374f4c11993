//! Counters behind `<mountpoint>/.secretsfs/stats`: lock-free, always on.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Clone, Copy, Debug)]
pub enum ApiOp {
    ListSecrets,
    GetSecretValue,
    ListSecretVersionIds,
    PutSecretValue,
    CreateSecret,
    DescribeSecret,
    UpdateSecretVersionStage,
}

const OPS: [(ApiOp, &str); 7] = [
    (ApiOp::ListSecrets, "ListSecrets"),
    (ApiOp::GetSecretValue, "GetSecretValue"),
    (ApiOp::ListSecretVersionIds, "ListSecretVersionIds"),
    (ApiOp::PutSecretValue, "PutSecretValue"),
    (ApiOp::CreateSecret, "CreateSecret"),
    (ApiOp::DescribeSecret, "DescribeSecret"),
    (ApiOp::UpdateSecretVersionStage, "UpdateSecretVersionStage"),
];

/// How a change hook's run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookResult {
    Ok,
    Failed,
    TimedOut,
}

/// What the reports say of the mount besides the counters.
pub struct Info<'a> {
    pub version: &'a str,
    pub uptime: std::time::Duration,
    pub store: &'a str,
    pub mountpoint: &'a str,
    pub cache_entries: u64,
    pub cache_bytes: u64,
}

#[derive(Default, Debug)]
pub struct Stats {
    api: [AtomicU64; 7],
    /// Unix time of the last successful call, per operation (0: none yet).
    api_ok: [AtomicU64; 7],
    api_errors: AtomicU64,
    /// Calls answered "no such secret or version" (ResourceNotFound): an
    /// answer (a lookup of a name that does not exist yet), not a failure.
    not_found: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    stale_served: AtomicU64,
    /// Age in seconds of the oldest stale value served.
    stale_max_age: AtomicU64,
    fs_errors: AtomicU64,
    refreshed_ahead: AtomicU64,
    negative_hits: AtomicU64,
    revalidated: AtomicU64,
    calls_in_flight: AtomicU64,
    calls_in_flight_peak: AtomicU64,
    backoff_ms: AtomicU64,
    /// Versions put with a staging label of their own (`stages/<label>`).
    staged_puts: AtomicU64,
    /// Promotions: a staged version made AWSCURRENT (rename onto `current`).
    stage_moves: AtomicU64,
    /// Change hook runs: exit 0, another status (or not started), killed
    /// at the timeout.
    hook_runs: [AtomicU64; 3],
    /// Rendered files (templates): renders made, and those that failed.
    renders: AtomicU64,
    render_failures: AtomicU64,
    /// Names, prefixes or `*` written to `.secretsfs/refresh`.
    refreshes: AtomicU64,
}

impl Stats {
    pub fn api_call(&self, op: ApiOp) {
        self.api[op as usize].fetch_add(1, Relaxed);
    }
    pub fn api_calls(&self, op: ApiOp) -> u64 {
        self.api[op as usize].load(Relaxed)
    }
    /// A call of `op` answered without an error.
    pub fn api_ok(&self, op: ApiOp) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.api_ok[op as usize].store(now, Relaxed);
    }
    pub fn api_error(&self) {
        self.api_errors.fetch_add(1, Relaxed);
    }
    pub fn not_found(&self) {
        self.not_found.fetch_add(1, Relaxed);
    }
    pub fn hit(&self) {
        self.cache_hits.fetch_add(1, Relaxed);
    }
    pub fn miss(&self) {
        self.cache_misses.fetch_add(1, Relaxed);
    }
    /// A stale value served, `age` after its refreshes began failing.
    pub fn stale(&self, age: std::time::Duration) {
        self.stale_served.fetch_add(1, Relaxed);
        self.stale_max_age.fetch_max(age.as_secs(), Relaxed);
    }
    /// A read in the last part of a TTL started a refresh behind itself.
    pub fn refresh_ahead(&self) {
        self.refreshed_ahead.fetch_add(1, Relaxed);
    }
    /// A read answered from a remembered failure, with no call.
    pub fn negative_hit(&self) {
        self.negative_hits.fetch_add(1, Relaxed);
    }
    /// DescribeSecret said the cached version is still current: no
    /// GetSecretValue.
    pub fn revalidated(&self) {
        self.revalidated.fetch_add(1, Relaxed);
    }
    pub fn call_started(&self) {
        let now = self.calls_in_flight.fetch_add(1, Relaxed) + 1;
        self.calls_in_flight_peak.fetch_max(now, Relaxed);
    }
    pub fn call_ended(&self) {
        self.calls_in_flight.fetch_sub(1, Relaxed);
    }
    /// The daemon-wide wait before each call, after throttling.
    pub fn set_backoff(&self, d: std::time::Duration) {
        self.backoff_ms.store(d.as_millis() as u64, Relaxed);
    }
    /// A template rendered.
    pub fn rendered(&self) {
        self.renders.fetch_add(1, Relaxed);
    }
    /// A template failed to render (its file answers EIO).
    pub fn render_failed(&self) {
        self.render_failures.fetch_add(1, Relaxed);
    }
    pub fn renders(&self) -> u64 {
        self.renders.load(Relaxed)
    }
    /// One line written to `.secretsfs/refresh` was done.
    pub fn refreshed(&self) {
        self.refreshes.fetch_add(1, Relaxed);
    }
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Relaxed)
    }
    pub fn staged_put(&self) {
        self.staged_puts.fetch_add(1, Relaxed);
    }
    pub fn stage_moved(&self) {
        self.stage_moves.fetch_add(1, Relaxed);
    }
    pub fn fs_error(&self) {
        self.fs_errors.fetch_add(1, Relaxed);
    }
    pub fn hook_run(&self, r: HookResult) {
        self.hook_runs[r as usize].fetch_add(1, Relaxed);
    }
    pub fn hits(&self) -> u64 {
        self.cache_hits.load(Relaxed)
    }
    pub fn misses(&self) -> u64 {
        self.cache_misses.load(Relaxed)
    }
    pub fn refreshed_ahead(&self) -> u64 {
        self.refreshed_ahead.load(Relaxed)
    }
    pub fn stale_count(&self) -> u64 {
        self.stale_served.load(Relaxed)
    }

    /// The stats file: the counters and what `info` says, one JSON object.
    pub fn render_with(&self, info: &Info) -> Vec<u8> {
        let mut doc = self.json();
        let extra = serde_json::json!({
            "version": info.version,
            "uptime_secs": info.uptime.as_secs(),
            "store": info.store,
            "mountpoint": info.mountpoint,
            "cache_entries": info.cache_entries,
            "cache_bytes": info.cache_bytes,
        });
        if let (Some(d), serde_json::Value::Object(e)) = (doc.as_object_mut(), extra) {
            d.extend(e);
        }
        let mut out = serde_json::to_vec_pretty(&doc).expect("stats serialise");
        out.push(b'\n');
        out
    }

    /// The metrics file: the same figures in the Prometheus text format
    /// (version 0.0.4), for node_exporter's textfile collector or a scrape.
    pub fn prometheus(&self, info: &Info) -> Vec<u8> {
        use std::fmt::Write;
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
            let _ = writeln!(out, "# HELP secretsfs_{name} {help}");
            let _ = writeln!(out, "# TYPE secretsfs_{name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "secretsfs_{name}{labels} {v}");
            }
        };
        let per_op = |values: &[AtomicU64; 7]| -> Vec<(String, f64)> {
            OPS.iter()
                .map(|(op, n)| {
                    let v = values[*op as usize].load(Relaxed) as f64;
                    (format!("{{operation=\"{n}\"}}"), v)
                })
                .collect()
        };
        let one = |v: u64| vec![(String::new(), v as f64)];
        metric(
            "api_calls_total",
            "counter",
            "Secrets Manager calls, by operation.",
            &per_op(&self.api),
        );
        metric(
            "api_last_success_timestamp_seconds",
            "gauge",
            "Unix time of the last successful call, by operation (0: none yet).",
            &per_op(&self.api_ok),
        );
        metric(
            "api_errors_total",
            "counter",
            "Calls that failed (not counting not-found answers).",
            &one(self.api_errors.load(Relaxed)),
        );
        metric(
            "api_not_found_total",
            "counter",
            "Calls answered that the secret or version does not exist (lookups of new names).",
            &one(self.not_found.load(Relaxed)),
        );
        metric(
            "cache_hits_total",
            "counter",
            "Reads answered from memory.",
            &one(self.hits()),
        );
        metric(
            "cache_misses_total",
            "counter",
            "Reads that asked the backend.",
            &one(self.misses()),
        );
        metric(
            "stale_served_total",
            "counter",
            "Values served while their refresh failed.",
            &one(self.stale_count()),
        );
        metric(
            "stale_max_age_seconds",
            "gauge",
            "Oldest stale value served, seconds since its refreshes began failing.",
            &one(self.stale_max_age.load(Relaxed)),
        );
        metric(
            "refreshed_ahead_total",
            "counter",
            "Refreshes started behind a reader in the last third of a TTL.",
            &one(self.refreshed_ahead()),
        );
        metric(
            "revalidated_unchanged_total",
            "counter",
            "Expired values DescribeSecret showed unchanged (no GetSecretValue).",
            &one(self.revalidated.load(Relaxed)),
        );
        metric(
            "negative_hits_total",
            "counter",
            "Reads answered from a remembered failure.",
            &one(self.negative_hits.load(Relaxed)),
        );
        metric(
            "calls_in_flight",
            "gauge",
            "API calls open now.",
            &one(self.calls_in_flight.load(Relaxed)),
        );
        metric(
            "calls_in_flight_peak",
            "gauge",
            "Most API calls open at once.",
            &one(self.calls_in_flight_peak.load(Relaxed)),
        );
        metric(
            "throttle_backoff_seconds",
            "gauge",
            "Daemon-wide wait before each call after throttling.",
            &[(String::new(), self.backoff_ms.load(Relaxed) as f64 / 1000.0)],
        );
        metric(
            "refreshes_total",
            "counter",
            "Names, prefixes or * written to .secretsfs/refresh.",
            &one(self.refreshes()),
        );
        metric(
            "errors_total",
            "counter",
            "Requests answered with an error other than ENOENT.",
            &one(self.fs_errors.load(Relaxed)),
        );
        metric(
            "renders_total",
            "counter",
            "Templates rendered (rendered files).",
            &one(self.renders.load(Relaxed)),
        );
        metric(
            "render_failures_total",
            "counter",
            "Template renders that failed (the file answers EIO).",
            &one(self.render_failures.load(Relaxed)),
        );
        metric(
            "staged_puts_total",
            "counter",
            "Versions put with a staging label of their own (stages/<label>).",
            &one(self.staged_puts.load(Relaxed)),
        );
        metric(
            "stage_moves_total",
            "counter",
            "Staged versions promoted to AWSCURRENT (rename onto current).",
            &one(self.stage_moves.load(Relaxed)),
        );
        metric(
            "cache_entries",
            "gauge",
            "Values cached.",
            &one(info.cache_entries),
        );
        metric(
            "cache_bytes",
            "gauge",
            "Bytes of cached values.",
            &one(info.cache_bytes),
        );
        metric(
            "uptime_seconds",
            "gauge",
            "Seconds since the mount.",
            &one(info.uptime.as_secs()),
        );
        let hook = |r: HookResult| self.hook_runs[r as usize].load(Relaxed) as f64;
        metric(
            "hook_runs_total",
            "counter",
            "Change hook runs, by result.",
            &[
                ("{result=\"ok\"}".into(), hook(HookResult::Ok)),
                ("{result=\"failed\"}".into(), hook(HookResult::Failed)),
                ("{result=\"timeout\"}".into(), hook(HookResult::TimedOut)),
            ],
        );
        let build = format!(
            "{{version=\"{}\",store=\"{}\",mountpoint=\"{}\"}}",
            escape(info.version),
            escape(info.store),
            escape(info.mountpoint)
        );
        metric(
            "build_info",
            "gauge",
            "Version, store kind and mountpoint; always 1.",
            &[(build, 1.0)],
        );
        out.into_bytes()
    }

    /// The stats file's content: one JSON object, newline-terminated.
    pub fn render(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(&self.json()).expect("stats serialise");
        out.push(b'\n');
        out
    }

    fn json(&self) -> serde_json::Value {
        let api: serde_json::Map<String, serde_json::Value> = OPS
            .iter()
            .map(|(op, name)| (name.to_string(), self.api_calls(*op).into()))
            .collect();
        let doc = serde_json::json!({
            "api_calls": api,
            "api_errors": self.api_errors.load(Relaxed),
            "not_found": self.not_found.load(Relaxed),
            "cache_hits": self.hits(),
            "cache_misses": self.misses(),
            "stale_served": self.stale_count(),
            "stale_max_age_secs": self.stale_max_age.load(Relaxed),
            "errors": self.fs_errors.load(Relaxed),
            "refreshed_ahead": self.refreshed_ahead.load(Relaxed),
            "negative_hits": self.negative_hits.load(Relaxed),
            "revalidated_unchanged": self.revalidated.load(Relaxed),
            "calls_in_flight": self.calls_in_flight.load(Relaxed),
            "calls_in_flight_peak": self.calls_in_flight_peak.load(Relaxed),
            "throttle_backoff_ms": self.backoff_ms.load(Relaxed),
            "staged_puts": self.staged_puts.load(Relaxed),
            "stage_moves": self.stage_moves.load(Relaxed),
            "hook_runs": {
                "ok": self.hook_runs[HookResult::Ok as usize].load(Relaxed),
                "failed": self.hook_runs[HookResult::Failed as usize].load(Relaxed),
                "timeout": self.hook_runs[HookResult::TimedOut as usize].load(Relaxed),
            },
            "renders": self.renders.load(Relaxed),
            "render_failures": self.render_failures.load(Relaxed),
            "refreshes": self.refreshes(),
            "pid": std::process::id(),
            // The kernel's word on the hardening, for operators and tests.
            // SAFETY: PR_GET_DUMPABLE only reads a flag of this process.
            "dumpable": unsafe { libc::prctl(libc::PR_GET_DUMPABLE) } == 1,
        });
        doc
    }
}

/// A label value in the text format: backslash, quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Stats with a distinct value in every counter, and an Info.
    fn populated() -> (Stats, Info<'static>) {
        let s = Stats::default();
        for (i, (op, _)) in OPS.iter().enumerate() {
            for _ in 0..=i {
                s.api_call(*op);
            }
            s.api_ok[*op as usize].store(1_700_000_000 + i as u64, Relaxed);
        }
        let times = |n: usize, f: &dyn Fn()| (0..n).for_each(|_| f());
        times(2, &|| s.api_error());
        times(3, &|| s.not_found());
        times(4, &|| s.hit());
        times(5, &|| s.miss());
        s.stale(std::time::Duration::from_secs(42));
        s.stale(std::time::Duration::from_secs(7));
        times(6, &|| s.refresh_ahead());
        times(7, &|| s.negative_hit());
        times(8, &|| s.revalidated());
        times(9, &|| s.call_started());
        times(3, &|| s.call_ended());
        s.set_backoff(std::time::Duration::from_millis(1_250));
        times(10, &|| s.rendered());
        times(11, &|| s.render_failed());
        times(12, &|| s.refreshed());
        times(13, &|| s.staged_put());
        times(14, &|| s.stage_moved());
        times(15, &|| s.fs_error());
        times(16, &|| s.hook_run(HookResult::Ok));
        times(17, &|| s.hook_run(HookResult::Failed));
        times(18, &|| s.hook_run(HookResult::TimedOut));
        let info = Info {
            version: "1.2.3",
            uptime: std::time::Duration::from_secs(3_661),
            store: "aws",
            mountpoint: "/mnt/se\\c\"r\nets",
            cache_entries: 19,
            cache_bytes: 20_480,
        };
        (s, info)
    }

    /// The stats file with its process-specific lines (pid, dumpable)
    /// replaced by placeholders.
    fn steady(json: Vec<u8>) -> String {
        let text = String::from_utf8(json).unwrap();
        let pid = format!("\"pid\": {},", std::process::id());
        assert!(text.contains(&pid), "{text}");
        let text = text.replace(&pid, "\"pid\": PID,");
        text.replace("\"dumpable\": true", "\"dumpable\": DUMPABLE")
            .replace("\"dumpable\": false", "\"dumpable\": DUMPABLE")
    }

    #[test]
    fn the_stats_and_metrics_files_keep_their_exact_text() {
        let (s, info) = populated();
        assert_eq!(steady(s.render_with(&info)), STATS_FILE);
        assert_eq!(steady(s.render()), STATS_FILE_BARE);
        assert_eq!(
            String::from_utf8(s.prometheus(&info)).unwrap(),
            METRICS_FILE
        );
    }

    /// Captured from the hand-written renderers before the counter table.
    const STATS_FILE: &str = r#"{
  "api_calls": {
    "ListSecrets": 1,
    "GetSecretValue": 2,
    "ListSecretVersionIds": 3,
    "PutSecretValue": 4,
    "CreateSecret": 5,
    "DescribeSecret": 6,
    "UpdateSecretVersionStage": 7
  },
  "api_errors": 2,
  "not_found": 3,
  "cache_hits": 4,
  "cache_misses": 5,
  "stale_served": 2,
  "stale_max_age_secs": 42,
  "errors": 15,
  "refreshed_ahead": 6,
  "negative_hits": 7,
  "revalidated_unchanged": 8,
  "calls_in_flight": 6,
  "calls_in_flight_peak": 9,
  "throttle_backoff_ms": 1250,
  "staged_puts": 13,
  "stage_moves": 14,
  "hook_runs": {
    "ok": 16,
    "failed": 17,
    "timeout": 18
  },
  "renders": 10,
  "render_failures": 11,
  "refreshes": 12,
  "pid": PID,
  "dumpable": DUMPABLE,
  "version": "1.2.3",
  "uptime_secs": 3661,
  "store": "aws",
  "mountpoint": "/mnt/se\\c\"r\nets",
  "cache_entries": 19,
  "cache_bytes": 20480
}
"#;
    const STATS_FILE_BARE: &str = r#"{
  "api_calls": {
    "ListSecrets": 1,
    "GetSecretValue": 2,
    "ListSecretVersionIds": 3,
    "PutSecretValue": 4,
    "CreateSecret": 5,
    "DescribeSecret": 6,
    "UpdateSecretVersionStage": 7
  },
  "api_errors": 2,
  "not_found": 3,
  "cache_hits": 4,
  "cache_misses": 5,
  "stale_served": 2,
  "stale_max_age_secs": 42,
  "errors": 15,
  "refreshed_ahead": 6,
  "negative_hits": 7,
  "revalidated_unchanged": 8,
  "calls_in_flight": 6,
  "calls_in_flight_peak": 9,
  "throttle_backoff_ms": 1250,
  "staged_puts": 13,
  "stage_moves": 14,
  "hook_runs": {
    "ok": 16,
    "failed": 17,
    "timeout": 18
  },
  "renders": 10,
  "render_failures": 11,
  "refreshes": 12,
  "pid": PID,
  "dumpable": DUMPABLE
}
"#;
    const METRICS_FILE: &str = r#"# HELP secretsfs_api_calls_total Secrets Manager calls, by operation.
# TYPE secretsfs_api_calls_total counter
secretsfs_api_calls_total{operation="ListSecrets"} 1
secretsfs_api_calls_total{operation="GetSecretValue"} 2
secretsfs_api_calls_total{operation="ListSecretVersionIds"} 3
secretsfs_api_calls_total{operation="PutSecretValue"} 4
secretsfs_api_calls_total{operation="CreateSecret"} 5
secretsfs_api_calls_total{operation="DescribeSecret"} 6
secretsfs_api_calls_total{operation="UpdateSecretVersionStage"} 7
# HELP secretsfs_api_last_success_timestamp_seconds Unix time of the last successful call, by operation (0: none yet).
# TYPE secretsfs_api_last_success_timestamp_seconds gauge
secretsfs_api_last_success_timestamp_seconds{operation="ListSecrets"} 1700000000
secretsfs_api_last_success_timestamp_seconds{operation="GetSecretValue"} 1700000001
secretsfs_api_last_success_timestamp_seconds{operation="ListSecretVersionIds"} 1700000002
secretsfs_api_last_success_timestamp_seconds{operation="PutSecretValue"} 1700000003
secretsfs_api_last_success_timestamp_seconds{operation="CreateSecret"} 1700000004
secretsfs_api_last_success_timestamp_seconds{operation="DescribeSecret"} 1700000005
secretsfs_api_last_success_timestamp_seconds{operation="UpdateSecretVersionStage"} 1700000006
# HELP secretsfs_api_errors_total Calls that failed (not counting not-found answers).
# TYPE secretsfs_api_errors_total counter
secretsfs_api_errors_total 2
# HELP secretsfs_api_not_found_total Calls answered that the secret or version does not exist (lookups of new names).
# TYPE secretsfs_api_not_found_total counter
secretsfs_api_not_found_total 3
# HELP secretsfs_cache_hits_total Reads answered from memory.
# TYPE secretsfs_cache_hits_total counter
secretsfs_cache_hits_total 4
# HELP secretsfs_cache_misses_total Reads that asked the backend.
# TYPE secretsfs_cache_misses_total counter
secretsfs_cache_misses_total 5
# HELP secretsfs_stale_served_total Values served while their refresh failed.
# TYPE secretsfs_stale_served_total counter
secretsfs_stale_served_total 2
# HELP secretsfs_stale_max_age_seconds Oldest stale value served, seconds since its refreshes began failing.
# TYPE secretsfs_stale_max_age_seconds gauge
secretsfs_stale_max_age_seconds 42
# HELP secretsfs_refreshed_ahead_total Refreshes started behind a reader in the last third of a TTL.
# TYPE secretsfs_refreshed_ahead_total counter
secretsfs_refreshed_ahead_total 6
# HELP secretsfs_revalidated_unchanged_total Expired values DescribeSecret showed unchanged (no GetSecretValue).
# TYPE secretsfs_revalidated_unchanged_total counter
secretsfs_revalidated_unchanged_total 8
# HELP secretsfs_negative_hits_total Reads answered from a remembered failure.
# TYPE secretsfs_negative_hits_total counter
secretsfs_negative_hits_total 7
# HELP secretsfs_calls_in_flight API calls open now.
# TYPE secretsfs_calls_in_flight gauge
secretsfs_calls_in_flight 6
# HELP secretsfs_calls_in_flight_peak Most API calls open at once.
# TYPE secretsfs_calls_in_flight_peak gauge
secretsfs_calls_in_flight_peak 9
# HELP secretsfs_throttle_backoff_seconds Daemon-wide wait before each call after throttling.
# TYPE secretsfs_throttle_backoff_seconds gauge
secretsfs_throttle_backoff_seconds 1.25
# HELP secretsfs_refreshes_total Names, prefixes or * written to .secretsfs/refresh.
# TYPE secretsfs_refreshes_total counter
secretsfs_refreshes_total 12
# HELP secretsfs_errors_total Requests answered with an error other than ENOENT.
# TYPE secretsfs_errors_total counter
secretsfs_errors_total 15
# HELP secretsfs_renders_total Templates rendered (rendered files).
# TYPE secretsfs_renders_total counter
secretsfs_renders_total 10
# HELP secretsfs_render_failures_total Template renders that failed (the file answers EIO).
# TYPE secretsfs_render_failures_total counter
secretsfs_render_failures_total 11
# HELP secretsfs_staged_puts_total Versions put with a staging label of their own (stages/<label>).
# TYPE secretsfs_staged_puts_total counter
secretsfs_staged_puts_total 13
# HELP secretsfs_stage_moves_total Staged versions promoted to AWSCURRENT (rename onto current).
# TYPE secretsfs_stage_moves_total counter
secretsfs_stage_moves_total 14
# HELP secretsfs_cache_entries Values cached.
# TYPE secretsfs_cache_entries gauge
secretsfs_cache_entries 19
# HELP secretsfs_cache_bytes Bytes of cached values.
# TYPE secretsfs_cache_bytes gauge
secretsfs_cache_bytes 20480
# HELP secretsfs_uptime_seconds Seconds since the mount.
# TYPE secretsfs_uptime_seconds gauge
secretsfs_uptime_seconds 3661
# HELP secretsfs_hook_runs_total Change hook runs, by result.
# TYPE secretsfs_hook_runs_total counter
secretsfs_hook_runs_total{result="ok"} 16
secretsfs_hook_runs_total{result="failed"} 17
secretsfs_hook_runs_total{result="timeout"} 18
# HELP secretsfs_build_info Version, store kind and mountpoint; always 1.
# TYPE secretsfs_build_info gauge
secretsfs_build_info{version="1.2.3",store="aws",mountpoint="/mnt/se\\c\"r\nets"} 1
"#;

    #[test]
    fn render_is_json_with_every_counter() {
        let s = Stats::default();
        s.api_call(ApiOp::GetSecretValue);
        s.hit();
        s.hit();
        let v: serde_json::Value = serde_json::from_slice(&s.render()).unwrap();
        assert_eq!(v["api_calls"]["GetSecretValue"], 1);
        assert_eq!(v["api_calls"]["ListSecrets"], 0);
        assert_eq!(v["cache_hits"], 2);
        assert_eq!(v["stale_served"], 0);
    }
}
