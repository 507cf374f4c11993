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
