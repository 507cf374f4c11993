//! Real mounts against moto behind the fault-injecting proxy: a hung API
//! never holds up reads of a cached value for long, and a value is served
//! stale for at most --max-stale.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Reads `rel` until `until` passes; the longest single read.
fn slowest_read(m: &Mount, rel: &str, want: &str, until: Instant) -> Duration {
    let mut worst = Duration::ZERO;
    while Instant::now() < until {
        let t = Instant::now();
        assert_eq!(m.read_string(rel), want);
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    worst
}

#[test]
fn a_hung_api_holds_up_reads_of_a_cached_value_for_a_second_at_most() {
    let s = unique("re-hung");
    create(&s, "cached");
    let (proxy, m) = mount_via_proxy(&s, &["--ttl", "2"]);
    let rel = format!("{s}/current");
    assert_eq!(m.read_string(&rel), "cached");
    proxy.fault("*", Some(&s), Fault::Delay(Duration::from_secs(10)), 1000);
    // Past the TTL for 8 s: every refresh hangs.
    let worst = slowest_read(&m, &rel, "cached", Instant::now() + Duration::from_secs(8));
    assert!(worst <= Duration::from_secs(2), "a read took {worst:?}");
    assert!(m.stats()["stale_served"].as_u64().unwrap() >= 1);
}

#[test]
fn past_max_stale_an_outage_is_an_error_and_the_log_says_since_when() {
    let s = unique("re-stale");
    create(&s, "before");
    let (proxy, m) = mount_via_proxy(&s, &["--ttl", "1", "--max-stale", "3s"]);
    let rel = format!("{s}/current");
    assert_eq!(m.read_string(&rel), "before");
    let outage = Fault::Error {
        status: 503,
        code: "ServiceUnavailable",
    };
    proxy.fault("*", Some(&s), outage, 100_000);
    let start = Instant::now();
    // Stale while within --max-stale, then EIO.
    let mut served_stale = false;
    let failed_at = loop {
        match m.read(&rel) {
            Ok(v) => {
                assert_eq!(v, b"before");
                served_stale |= start.elapsed() > Duration::from_secs(1);
            }
            Err(e) => {
                assert_eq!(errno_of(&e), libc::EIO, "{e}");
                break start.elapsed();
            }
        }
        assert!(start.elapsed() < Duration::from_secs(20), "never failed");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(served_stale, "the value was served during the outage");
    assert!(
        failed_at >= Duration::from_secs(3),
        "failed after {failed_at:?}"
    );
    assert!(
        m.log_text().contains("longer than --max-stale"),
        "{}",
        m.log_text()
    );
}
