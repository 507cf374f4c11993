//! Counters behind `<mountpoint>/.secretsfs/stats` (JSON) and `metrics`
//! (Prometheus text format): lock-free, always on. Each counter is declared
//! once, as a row of `counters!` below that makes its field, its key in the
//! stats file and its lines in the metrics file; adding one is that row and
//! the method that counts it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

mod regions;
pub use regions::RegionStats;

#[derive(Clone, Copy, Debug)]
pub enum ApiOp {
    ListSecrets,
    GetSecretValue,
    ListSecretVersionIds,
    PutSecretValue,
    CreateSecret,
    DescribeSecret,
    UpdateSecretVersionStage,
    // Parameter Store (`--source ssm`).
    GetParameter,
    GetParameterHistory,
    DescribeParameters,
    PutParameter,
    LabelParameterVersion,
}

const OPS: [(ApiOp, &str); 12] = [
    (ApiOp::ListSecrets, "ListSecrets"),
    (ApiOp::GetSecretValue, "GetSecretValue"),
    (ApiOp::ListSecretVersionIds, "ListSecretVersionIds"),
    (ApiOp::PutSecretValue, "PutSecretValue"),
    (ApiOp::CreateSecret, "CreateSecret"),
    (ApiOp::DescribeSecret, "DescribeSecret"),
    (ApiOp::UpdateSecretVersionStage, "UpdateSecretVersionStage"),
    (ApiOp::GetParameter, "GetParameter"),
    (ApiOp::GetParameterHistory, "GetParameterHistory"),
    (ApiOp::DescribeParameters, "DescribeParameters"),
    (ApiOp::PutParameter, "PutParameter"),
    (ApiOp::LabelParameterVersion, "LabelParameterVersion"),
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

/// How a family of figures is split: its label and the label's values, in
/// the order of the family's slots.
struct Labels {
    key: &'static str,
    values: &'static [&'static str],
}

const BY_OPERATION: Labels = Labels {
    key: "operation",
    values: &{
        let mut names = [""; OPS.len()];
        let mut i = 0;
        while i < OPS.len() {
            names[i] = OPS[i].1;
            i += 1;
        }
        names
    },
};

/// In `HookResult` order.
const BY_RESULT: Labels = Labels {
    key: "result",
    values: &["ok", "failed", "timeout"],
};

/// One row of `counters!`: how a field shows in the two reports.
struct Row {
    /// The field's place among the stats file's keys, and its key; None:
    /// the metrics file only. The places keep the file's historical order.
    json: Option<(u8, &'static str)>,
    /// The metric's name after `secretsfs_`, its TYPE and its HELP.
    metric: &'static str,
    kind: &'static str,
    help: &'static str,
    labels: Option<&'static Labels>,
    /// What the metrics file divides the stored number by (milliseconds
    /// shown in seconds); the stats file shows it as stored.
    per: f64,
}

/// A field's numbers: one, or one per label value.
trait Figure {
    fn read(&self) -> Vec<u64>;
}

impl Figure for AtomicU64 {
    fn read(&self) -> Vec<u64> {
        vec![self.load(Relaxed)]
    }
}

impl<const N: usize> Figure for [AtomicU64; N] {
    fn read(&self) -> Vec<u64> {
        self.iter().map(|a| a.load(Relaxed)).collect()
    }
}

/// Declares every counter once: its field in `Stats`, its key in the stats
/// file and its lines in the metrics file. A row reads
/// `field: storage [, by LABELS] => <kind> "<metric>" [/ <divisor>], "<help>" [, json <place> "<key>"];`
/// Rows are in the metrics file's order, in two groups: the mount's own
/// gauges (cache, uptime) are shown between them.
macro_rules! counters {
    ({ $($before:tt)* } { $($after:tt)* }) => {
        counters!(@table $($before)* $($after)*);

        /// Where the metrics file shows the mount's own gauges among `ROWS`:
        /// after the rows of the first group (one `;` ends each).
        const MOUNT_GAUGES_AT: usize = 0 $(+ counters!(@ends $before))*;
    };
    (@table $(
        $(#[$doc:meta])*
        $field:ident: $ty:ty $(, by $labels:ident)?
            => $kind:ident $metric:literal $(/ $per:literal)?, $help:literal
            $(, json $at:literal $key:literal)?;
    )*) => {
        #[derive(Default, Debug)]
        pub struct Stats {
            $($(#[$doc])* $field: $ty,)*
            /// Calls per region, the region in use, switches (stats/regions.rs).
            pub regions: RegionStats,
        }

        const ROWS: &[Row] = &[$(
            Row {
                json: counters!(@opt $(($at, $key))?),
                metric: $metric,
                kind: stringify!($kind),
                help: $help,
                labels: counters!(@opt $(&$labels)?),
                per: match counters!(@opt $($per)?) {
                    Some(per) => per,
                    None => 1.0,
                },
            },
        )*];

        impl Stats {
            /// Each row's numbers, in `ROWS` order.
            fn figures(&self) -> Vec<Vec<u64>> {
                vec![$(self.$field.read(),)*]
            }
        }
    };
    (@opt) => { None };
    (@opt $x:expr) => { Some($x) };
    (@ends ;) => { 1 };
    (@ends $other:tt) => { 0 };
}

counters! {
    {
        api: [AtomicU64; 12], by BY_OPERATION
            => counter "api_calls_total", "Backend API calls, by operation.",
            json 0 "api_calls";
        api_ok: [AtomicU64; 12], by BY_OPERATION
            => gauge "api_last_success_timestamp_seconds",
            "Unix time of the last successful call, by operation (0: none yet).";
        api_errors: AtomicU64
            => counter "api_errors_total",
            "Calls that failed (not counting not-found answers).",
            json 1 "api_errors";
        /// Calls answered "no such secret or version" (ResourceNotFound): an
        /// answer (a lookup of a name that does not exist yet), not a failure.
        not_found: AtomicU64
            => counter "api_not_found_total",
            "Calls answered that the secret or version does not exist (lookups of new names).",
            json 2 "not_found";
        cache_hits: AtomicU64
            => counter "cache_hits_total", "Reads answered from memory.",
            json 3 "cache_hits";
        cache_misses: AtomicU64
            => counter "cache_misses_total", "Reads that asked the backend.",
            json 4 "cache_misses";
        stale_served: AtomicU64
            => counter "stale_served_total",
            "Values served while their refresh failed.",
            json 5 "stale_served";
        /// Age in seconds of the oldest stale value served.
        stale_max_age: AtomicU64
            => gauge "stale_max_age_seconds",
            "Oldest stale value served, seconds since its refreshes began failing.",
            json 6 "stale_max_age_secs";
        refreshed_ahead: AtomicU64
            => counter "refreshed_ahead_total",
            "Refreshes started behind a reader in the last third of a TTL.",
            json 8 "refreshed_ahead";
        revalidated: AtomicU64
            => counter "revalidated_unchanged_total",
            "Expired values DescribeSecret showed unchanged (no GetSecretValue).",
            json 10 "revalidated_unchanged";
        negative_hits: AtomicU64
            => counter "negative_hits_total",
            "Reads answered from a remembered failure.",
            json 9 "negative_hits";
        calls_in_flight: AtomicU64
            => gauge "calls_in_flight", "API calls open now.",
            json 11 "calls_in_flight";
        calls_in_flight_peak: AtomicU64
            => gauge "calls_in_flight_peak",
            "Most API calls open at once.",
            json 12 "calls_in_flight_peak";
        backoff_ms: AtomicU64
            => gauge "throttle_backoff_seconds" / 1000.0,
            "Daemon-wide wait before each call after throttling.",
            json 13 "throttle_backoff_ms";
        refreshes: AtomicU64
            => counter "refreshes_total",
            "Names, prefixes or * written to .secretsfs/refresh.",
            json 19 "refreshes";
        fs_errors: AtomicU64
            => counter "errors_total",
            "Requests answered with an error other than ENOENT.",
            json 7 "errors";
        /// Rendered files (templates): renders made, and those that failed.
        renders: AtomicU64
            => counter "renders_total", "Templates rendered (rendered files).",
            json 17 "renders";
        render_failures: AtomicU64
            => counter "render_failures_total",
            "Template renders that failed (the file answers EIO).",
            json 18 "render_failures";
        /// Versions put with a staging label of their own (`stages/<label>`).
        staged_puts: AtomicU64
            => counter "staged_puts_total",
            "Versions put with a staging label of their own (stages/<label>).",
            json 14 "staged_puts";
        /// Promotions: a staged version made AWSCURRENT (rename onto `current`).
        stage_moves: AtomicU64
            => counter "stage_moves_total",
            "Staged versions promoted to AWSCURRENT (rename onto current).",
            json 15 "stage_moves";
        /// Opens refused by `[[access]]` rules (src/access).
        access_denied: AtomicU64
            => counter "access_denied_total",
            "Opens refused by [[access]] rules (the caller matched none).",
            json 20 "access_denied";
    }
    // The metrics file shows the mount's own gauges here.
    {
        /// Change hook runs: exit 0, another status (or not started), killed
        /// at the timeout.
        hook_runs: [AtomicU64; 3], by BY_RESULT
            => counter "hook_runs_total", "Change hook runs, by result.",
            json 16 "hook_runs";
    }
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
    pub fn access_denied(&self) {
        self.access_denied.fetch_add(1, Relaxed);
    }
    pub fn access_denials(&self) -> u64 {
        self.access_denied.load(Relaxed)
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
        let mut out = String::new();
        let mut rows = ROWS.iter().zip(self.figures());
        for (row, values) in rows.by_ref().take(MOUNT_GAUGES_AT) {
            show(&mut out, row, values);
        }
        let one = |v: u64| vec![(String::new(), v as f64)];
        let gauges = [
            ("cache_entries", "Values cached.", info.cache_entries),
            ("cache_bytes", "Bytes of cached values.", info.cache_bytes),
            (
                "uptime_seconds",
                "Seconds since the mount.",
                info.uptime.as_secs(),
            ),
        ];
        for (name, help, v) in gauges {
            metric(&mut out, name, "gauge", help, &one(v));
        }
        for (row, values) in rows {
            show(&mut out, row, values);
        }
        self.regions.prometheus(&mut out);
        let build = format!(
            "{{version=\"{}\",store=\"{}\",mountpoint=\"{}\"}}",
            escape(info.version),
            escape(info.store),
            escape(info.mountpoint)
        );
        metric(
            &mut out,
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
        use serde_json::{Map, Value};
        let mut keyed: Vec<_> = ROWS
            .iter()
            .zip(self.figures())
            .filter_map(|(row, values)| Some((row.json?, row, values)))
            .collect();
        keyed.sort_by_key(|((at, _), _, _)| *at);
        let mut doc = Map::new();
        for ((_, key), row, values) in keyed {
            let shown: Value = match row.labels {
                None => values[0].into(),
                Some(l) => Value::Object(
                    l.values
                        .iter()
                        .zip(values)
                        .map(|(n, v)| (n.to_string(), v.into()))
                        .collect(),
                ),
            };
            doc.insert(key.into(), shown);
        }
        if let Some(regions) = self.regions.json() {
            doc.insert("regions".into(), regions);
        }
        doc.insert("pid".into(), std::process::id().into());
        // The kernel's word on the hardening, for operators and tests.
        // SAFETY: PR_GET_DUMPABLE takes no pointer and only reads a flag of
        // this process.
        let dumpable = unsafe { libc::prctl(libc::PR_GET_DUMPABLE) } == 1;
        doc.insert("dumpable".into(), dumpable.into());
        Value::Object(doc)
    }
}

/// One row in the text format; a sample per label value.
fn show(out: &mut String, row: &Row, values: Vec<u64>) {
    let samples: Vec<(String, f64)> = match row.labels {
        None => vec![(String::new(), values[0] as f64 / row.per)],
        Some(l) => l
            .values
            .iter()
            .zip(values)
            .map(|(n, v)| (format!("{{{}=\"{n}\"}}", l.key), v as f64 / row.per))
            .collect(),
    };
    metric(out, row.metric, row.kind, row.help, &samples);
}

/// One metric in the text format: its HELP, its TYPE and its samples.
fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    use std::fmt::Write;
    let _ = writeln!(out, "# HELP secretsfs_{name} {help}");
    let _ = writeln!(out, "# TYPE secretsfs_{name} {kind}");
    for (labels, v) in samples {
        let _ = writeln!(out, "secretsfs_{name}{labels} {v}");
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
        times(19, &|| s.access_denied());
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
        // The same object without what `Info` adds.
        let (bare, _) = STATS_FILE.split_once(",\n  \"version\"").unwrap();
        assert_eq!(steady(s.render()), format!("{bare}\n}}\n"));
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
    "UpdateSecretVersionStage": 7,
    "GetParameter": 8,
    "GetParameterHistory": 9,
    "DescribeParameters": 10,
    "PutParameter": 11,
    "LabelParameterVersion": 12
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
  "access_denied": 19,
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
    const METRICS_FILE: &str = r#"# HELP secretsfs_api_calls_total Backend API calls, by operation.
# TYPE secretsfs_api_calls_total counter
secretsfs_api_calls_total{operation="ListSecrets"} 1
secretsfs_api_calls_total{operation="GetSecretValue"} 2
secretsfs_api_calls_total{operation="ListSecretVersionIds"} 3
secretsfs_api_calls_total{operation="PutSecretValue"} 4
secretsfs_api_calls_total{operation="CreateSecret"} 5
secretsfs_api_calls_total{operation="DescribeSecret"} 6
secretsfs_api_calls_total{operation="UpdateSecretVersionStage"} 7
secretsfs_api_calls_total{operation="GetParameter"} 8
secretsfs_api_calls_total{operation="GetParameterHistory"} 9
secretsfs_api_calls_total{operation="DescribeParameters"} 10
secretsfs_api_calls_total{operation="PutParameter"} 11
secretsfs_api_calls_total{operation="LabelParameterVersion"} 12
# HELP secretsfs_api_last_success_timestamp_seconds Unix time of the last successful call, by operation (0: none yet).
# TYPE secretsfs_api_last_success_timestamp_seconds gauge
secretsfs_api_last_success_timestamp_seconds{operation="ListSecrets"} 1700000000
secretsfs_api_last_success_timestamp_seconds{operation="GetSecretValue"} 1700000001
secretsfs_api_last_success_timestamp_seconds{operation="ListSecretVersionIds"} 1700000002
secretsfs_api_last_success_timestamp_seconds{operation="PutSecretValue"} 1700000003
secretsfs_api_last_success_timestamp_seconds{operation="CreateSecret"} 1700000004
secretsfs_api_last_success_timestamp_seconds{operation="DescribeSecret"} 1700000005
secretsfs_api_last_success_timestamp_seconds{operation="UpdateSecretVersionStage"} 1700000006
secretsfs_api_last_success_timestamp_seconds{operation="GetParameter"} 1700000007
secretsfs_api_last_success_timestamp_seconds{operation="GetParameterHistory"} 1700000008
secretsfs_api_last_success_timestamp_seconds{operation="DescribeParameters"} 1700000009
secretsfs_api_last_success_timestamp_seconds{operation="PutParameter"} 1700000010
secretsfs_api_last_success_timestamp_seconds{operation="LabelParameterVersion"} 1700000011
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
# HELP secretsfs_access_denied_total Opens refused by [[access]] rules (the caller matched none).
# TYPE secretsfs_access_denied_total counter
secretsfs_access_denied_total 19
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
    fn each_stats_file_key_has_a_place_of_its_own() {
        let mut places: Vec<u8> = ROWS.iter().filter_map(|r| Some(r.json?.0)).collect();
        places.sort_unstable();
        let expected: Vec<u8> = (0..places.len() as u8).collect();
        assert_eq!(places, expected, "places 0, 1, 2... each once");
    }

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
