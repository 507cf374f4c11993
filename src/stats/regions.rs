//! The regions' figures (`--failover-region`, secrets by ARN): calls and
//! errors per region, the region reads go to, and how often that changed.
//! Regions are known only at start-up (and ARN regions on first use), so
//! they are kept apart from the fixed `counters!` table; the reports show
//! them only when a mount uses more than its own region's default setup.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use parking_lot::RwLock;

#[derive(Default, Debug)]
pub struct RegionStats {
    regions: RwLock<Vec<(String, Counts)>>,
    /// The region the last read of the failover chain was served by.
    in_use: RwLock<Option<String>>,
    switches: AtomicU64,
}

#[derive(Default, Debug)]
struct Counts {
    calls: AtomicU64,
    errors: AtomicU64,
}

impl RegionStats {
    /// A call answered by `region` (`failed`: an error other than
    /// not-found).
    pub fn call(&self, region: &str, failed: bool) {
        let count = |c: &Counts| {
            c.calls.fetch_add(1, Relaxed);
            if failed {
                c.errors.fetch_add(1, Relaxed);
            }
        };
        if let Some((_, c)) = self.regions.read().iter().find(|(r, _)| r == region) {
            return count(c);
        }
        let mut all = self.regions.write();
        if !all.iter().any(|(r, _)| r == region) {
            all.push((region.to_string(), Counts::default()));
        }
        let (_, c) = all.iter().find(|(r, _)| r == region).expect("just added");
        count(c);
    }

    /// Reads now go to `region`; true when that is a switch (the first
    /// region set is not one).
    pub fn use_region(&self, region: &str) -> bool {
        let mut now = self.in_use.write();
        let switched = now.as_deref().is_some_and(|r| r != region);
        if now.as_deref() != Some(region) {
            *now = Some(region.to_string());
        }
        if switched {
            self.switches.fetch_add(1, Relaxed);
        }
        switched
    }

    pub fn in_use(&self) -> Option<String> {
        self.in_use.read().clone()
    }

    fn is_empty(&self) -> bool {
        self.regions.read().is_empty() && self.in_use.read().is_none()
    }

    /// The stats file's `regions` object; None when no region was set up.
    pub fn json(&self) -> Option<serde_json::Value> {
        if self.is_empty() {
            return None;
        }
        let per = |f: fn(&Counts) -> u64| -> serde_json::Map<String, serde_json::Value> {
            self.regions
                .read()
                .iter()
                .map(|(r, c)| (r.clone(), f(c).into()))
                .collect()
        };
        Some(serde_json::json!({
            "in_use": self.in_use(),
            "switches": self.switches.load(Relaxed),
            "calls": per(|c| c.calls.load(Relaxed)),
            "errors": per(|c| c.errors.load(Relaxed)),
        }))
    }

    /// The metrics file's lines for the regions (none when no region was
    /// set up).
    pub fn prometheus(&self, out: &mut String) {
        if self.is_empty() {
            return;
        }
        let regions = self.regions.read();
        let labelled = |f: fn(&Counts) -> u64| -> Vec<(String, f64)> {
            regions
                .iter()
                .map(|(r, c)| (format!("{{region=\"{}\"}}", super::escape(r)), f(c) as f64))
                .collect()
        };
        let calls = labelled(|c| c.calls.load(Relaxed));
        let errors = labelled(|c| c.errors.load(Relaxed));
        super::metric(
            out,
            "region_calls_total",
            "counter",
            "Secrets Manager calls, by region.",
            &calls,
        );
        super::metric(
            out,
            "region_errors_total",
            "counter",
            "Calls that failed (not counting not-found answers), by region.",
            &errors,
        );
        let in_use = self.in_use();
        let used: Vec<(String, f64)> = regions
            .iter()
            .map(|(r, _)| {
                let on = in_use.as_deref() == Some(r.as_str());
                (
                    format!("{{region=\"{}\"}}", super::escape(r)),
                    f64::from(u8::from(on)),
                )
            })
            .collect();
        super::metric(
            out,
            "region_in_use",
            "gauge",
            "1 for the region reads of the failover chain go to now.",
            &used,
        );
        let switches = [(String::new(), self.switches.load(Relaxed) as f64)];
        super::metric(
            out,
            "region_switches_total",
            "counter",
            "Times reads moved to another region (failover or back).",
            &switches,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_errors_and_switches_show_per_region_only_once_used() {
        let s = RegionStats::default();
        assert!(s.json().is_none());
        let mut out = String::new();
        s.prometheus(&mut out);
        assert!(out.is_empty());
        assert!(!s.use_region("us-east-1"), "the first region is no switch");
        s.call("us-east-1", false);
        s.call("us-east-1", true);
        assert!(s.use_region("eu-west-1"));
        s.call("eu-west-1", false);
        let j = s.json().unwrap();
        assert_eq!(j["in_use"], "eu-west-1");
        assert_eq!(j["switches"], 1);
        assert_eq!(j["calls"]["us-east-1"], 2);
        assert_eq!(j["errors"]["us-east-1"], 1);
        assert_eq!(j["errors"]["eu-west-1"], 0);
        s.prometheus(&mut out);
        assert!(
            out.contains("secretsfs_region_calls_total{region=\"us-east-1\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("secretsfs_region_in_use{region=\"eu-west-1\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("secretsfs_region_in_use{region=\"us-east-1\"} 0\n"),
            "{out}"
        );
        assert!(out.contains("secretsfs_region_switches_total 1\n"), "{out}");
    }
}
