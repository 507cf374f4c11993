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
mod tests;
