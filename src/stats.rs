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
}

const OPS: [(ApiOp, &str); 6] = [
    (ApiOp::ListSecrets, "ListSecrets"),
    (ApiOp::GetSecretValue, "GetSecretValue"),
    (ApiOp::ListSecretVersionIds, "ListSecretVersionIds"),
    (ApiOp::PutSecretValue, "PutSecretValue"),
    (ApiOp::CreateSecret, "CreateSecret"),
    (ApiOp::DescribeSecret, "DescribeSecret"),
];

#[derive(Default, Debug)]
pub struct Stats {
    api: [AtomicU64; 6],
    api_errors: AtomicU64,
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
}

impl Stats {
    pub fn api_call(&self, op: ApiOp) {
        self.api[op as usize].fetch_add(1, Relaxed);
    }
    pub fn api_calls(&self, op: ApiOp) -> u64 {
        self.api[op as usize].load(Relaxed)
    }
    pub fn api_error(&self) {
        self.api_errors.fetch_add(1, Relaxed);
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
    pub fn fs_error(&self) {
        self.fs_errors.fetch_add(1, Relaxed);
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

    /// The stats file's content: one JSON object, newline-terminated.
    pub fn render(&self) -> Vec<u8> {
        let api: serde_json::Map<String, serde_json::Value> = OPS
            .iter()
            .map(|(op, name)| (name.to_string(), self.api_calls(*op).into()))
            .collect();
        let doc = serde_json::json!({
            "api_calls": api,
            "api_errors": self.api_errors.load(Relaxed),
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
            "pid": std::process::id(),
            // The kernel's word on the hardening, for operators and tests.
            // SAFETY: PR_GET_DUMPABLE only reads a flag of this process.
            "dumpable": unsafe { libc::prctl(libc::PR_GET_DUMPABLE) } == 1,
        });
        let mut out = serde_json::to_vec_pretty(&doc).expect("stats serialise");
        out.push(b'\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
