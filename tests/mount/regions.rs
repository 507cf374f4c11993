//! Real mounts against moto (which serves every region from one server):
//! reads fail over to a replica region while the primary fails (503s,
//! refused connections, a hang), never on a 4xx; writes fail while the
//! primary is down; secrets named by ARN in another region are read and
//! written at their path. The proxy tells regions apart by the SigV4
//! credential scope of each request (`Proxy::fault_in`, `count_in`).
//!
//! moto's replica follows a value changed in the primary (checked here), so
//! the tests change a value in the primary only, as AWS replication would.

use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::{Credentials, Region};
use aws_sdk_secretsmanager::types::ReplicaRegionType;

use crate::common::*;

pub(super) const PRIMARY: &str = "us-east-1";
pub(super) const REPLICA: &str = "eu-west-1";

/// An SDK client straight to moto in `region`.
pub(super) fn sdk_in(region: &str) -> Client {
    let conf = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .endpoint_url(moto_url())
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .build();
    Client::from_conf(conf)
}

/// A secret in the primary, replicated to the replica region.
pub(super) fn replicated(prefix: &str, value: &str) -> String {
    let name = unique(prefix);
    create(&name, value);
    rt().block_on(
        sdk()
            .replicate_secret_to_regions()
            .secret_id(&name)
            .add_replica_regions(ReplicaRegionType::builder().region(REPLICA).build())
            .send(),
    )
    .expect("replicate");
    assert_eq!(value_in(REPLICA, &name), value, "moto replicates");
    name
}

pub(super) fn value_in(region: &str, id: &str) -> String {
    let out = rt()
        .block_on(
            sdk_in(region)
                .get_secret_value()
                .secret_id(id)
                .version_stage("AWSCURRENT")
                .send(),
        )
        .expect("get secret value");
    out.secret_string().unwrap().to_string()
}

fn versions_in(region: &str, id: &str) -> usize {
    rt().block_on(
        sdk_in(region)
            .list_secret_version_ids()
            .secret_id(id)
            .send(),
    )
    .expect("list versions")
    .versions()
    .len()
}

fn timed_read(m: &Mount, rel: &str) -> (std::io::Result<String>, Duration) {
    let t = Instant::now();
    let r = m.read(rel).map(|v| String::from_utf8(v).unwrap());
    (r, t.elapsed())
}

fn regions(m: &Mount) -> serde_json::Value {
    m.stats()["regions"].clone()
}

/// How the primary fails, and how it heals, for one scenario.
struct Outage<'a> {
    kind: &'a str,
    start: Box<dyn Fn() + 'a>,
    heal: Box<dyn Fn() + 'a>,
    /// Calls the primary received so far.
    primary_calls: Box<dyn Fn() -> usize + 'a>,
}

/// The scenario every kind of failure runs: a cached secret and cold ones
/// read during the outage get the replica's values (a change made in the
/// primary before it failed, and replicated, is seen), within the bounds;
/// the stats and the log name the failover region; once healed, calls go
/// back to the primary. The latencies are printed for the report.
fn survives(m: &Mount, outage: Outage, cached: &str, cold: [&str; 2]) {
    let (cached_rel, cold_rel) = (
        format!("{cached}/current"),
        cold.map(|c| format!("{c}/current")),
    );
    assert_eq!(m.read_string(&cached_rel), "v1");
    assert_eq!(regions(m)["in_use"], PRIMARY);
    put(cached, "v2");
    assert_eq!(value_in(REPLICA, cached), "v2", "the change is replicated");
    (outage.start)();
    // Past the TTL: the cached value's next read refreshes it.
    std::thread::sleep(Duration::from_millis(1100));
    let (first, cold_first) = timed_read(m, &cold_rel[0]);
    assert_eq!(first.unwrap(), "c0", "{}", m.log_text());
    let (refreshed, cached_after) = timed_read(m, &cached_rel);
    let refreshed = refreshed.unwrap();
    let (second, cold_after) = timed_read(m, &cold_rel[1]);
    assert_eq!(second.unwrap(), "c1");
    eprintln!(
        "failover latency, primary {}: first cold read {cold_first:?}, cached read (refresh) {cached_after:?}, later cold read {cold_after:?}",
        outage.kind
    );
    assert!(cold_first < Duration::from_secs(2), "{cold_first:?}");
    assert!(cold_after < Duration::from_secs(1), "{cold_after:?}");
    assert!(
        cached_after < Duration::from_millis(1500),
        "{cached_after:?}"
    );
    // The change made in the primary is seen through the replica (at once,
    // or after one stale answer if the refresh lost the cache's 1 s race).
    assert!(["v1", "v2"].contains(&refreshed.as_str()));
    assert!(
        wait_until(Duration::from_secs(5), || m.read_string(&cached_rel)
            == "v2"),
        "{}",
        m.log_text()
    );
    let r = regions(m);
    assert_eq!(r["in_use"], REPLICA, "{r}");
    assert!(r["switches"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["calls"][REPLICA].as_u64().unwrap() >= 2, "{r}");
    let log = m.log_text();
    assert_eq!(
        log.matches("reads failed over from region us-east-1 to eu-west-1")
            .count(),
        1,
        "one line per switch: {log}"
    );
    // Healed: the probe finds the primary, reads go back to it.
    (outage.heal)();
    let before = (outage.primary_calls)();
    assert!(
        wait_until(Duration::from_secs(40), || {
            let _ = m.read(&cached_rel);
            std::thread::sleep(Duration::from_millis(300));
            regions(m)["in_use"] == PRIMARY
        }),
        "{}",
        m.log_text()
    );
    assert!((outage.primary_calls)() > before);
    assert!(m.log_text().contains("reads are back on region us-east-1"));
    assert_eq!(m.read_string(&cached_rel), "v2");
}

/// Three secrets replicated; a mount of them through `proxy` with the
/// replica region as failover.
fn setup(tag: &str) -> (String, [String; 2]) {
    let cached = replicated(&format!("rg-{tag}"), "v1");
    let cold = [0, 1].map(|i| replicated(&format!("rg-{tag}-cold"), &format!("c{i}")));
    (cached, cold)
}

fn mount_args(cached: &str, cold: &[String; 2]) -> Vec<String> {
    let mut a = vec!["--ttl".to_string(), "1".into()];
    for s in std::iter::once(cached).chain(cold.iter().map(String::as_str)) {
        a.extend(["--secret".into(), s.to_string()]);
    }
    a
}

/// The scenario with one proxy for both regions, which gives the
/// primary's requests (told apart by their signing region) `fault`.
fn survives_fault(kind: &str, fault: Fault) {
    let (cached, cold) = setup(kind);
    let proxy = Proxy::start();
    let m = Mount::aws()
        .endpoint(proxy.url())
        .args(mount_args(&cached, &cold))
        .args(["--failover-region", REPLICA])
        .start();
    let outage = Outage {
        kind,
        start: Box::new(|| proxy.fault_in(PRIMARY, "*", None, fault.clone(), usize::MAX)),
        heal: Box::new(|| proxy.clear_faults()),
        primary_calls: Box::new(|| proxy.count_in(PRIMARY, "*")),
    };
    survives(&m, outage, &cached, [&cold[0], &cold[1]]);
}

pub(super) fn unavailable() -> Fault {
    Fault::Error {
        status: 503,
        code: "ServiceUnavailable",
    }
}

pub(super) fn hang() -> Fault {
    Fault::Delay(Duration::from_secs(120))
}

#[test]
fn reads_fail_over_to_the_replica_while_the_primary_answers_503() {
    survives_fault("503", unavailable());
}

#[test]
fn reads_fail_over_to_the_replica_while_the_primary_hangs() {
    survives_fault("hang", hang());
}

/// The primary behind its own endpoint (a proxy that stops listening), the
/// replica region behind another (`--failover-region REGION=URL`).
#[test]
fn reads_fail_over_to_the_replica_while_the_primary_refuses_connections() {
    let (cached, cold) = setup("refused");
    let primary = Proxy::start();
    let replica = Proxy::start();
    let m = Mount::aws()
        .endpoint(primary.url())
        .args(mount_args(&cached, &cold))
        .args(["--failover-region", &format!("{REPLICA}={}", replica.url())])
        .start();
    let outage = Outage {
        kind: "refusing connections",
        start: Box::new(|| primary.refuse(true)),
        heal: Box::new(|| primary.refuse(false)),
        primary_calls: Box::new(|| primary.count_in(PRIMARY, "*")),
    };
    survives(&m, outage, &cached, [&cold[0], &cold[1]]);
    assert_eq!(
        replica.count_in(PRIMARY, "*"),
        0,
        "each region its endpoint"
    );
}

/// The other order: the first read after the primary fails is a cached
/// value's refresh, which pays the failover itself. For each kind of
/// failure it gets the replica's value within the cache's 1 s refresh
/// wait (or the cached value, stale, if the machine is slow), and then the
/// replica's (fresh) value.
#[test]
fn a_cached_value_refreshed_first_in_an_outage_comes_from_the_replica() {
    for kind in ["503", "hang", "refused"] {
        let s = replicated(&format!("rg-first-{kind}"), "v1");
        let primary = Proxy::start();
        let replica = Proxy::start();
        let m = Mount::aws()
            .endpoint(primary.url())
            .args(["--secret", &s, "--ttl", "1"])
            .args(["--failover-region", &format!("{REPLICA}={}", replica.url())])
            .start();
        let rel = format!("{s}/current");
        assert_eq!(m.read_string(&rel), "v1");
        put(&s, "v2");
        match kind {
            "503" => primary.fault_in(PRIMARY, "*", None, unavailable(), usize::MAX),
            "hang" => primary.fault_in(PRIMARY, "*", None, hang(), usize::MAX),
            _ => primary.refuse(true),
        }
        std::thread::sleep(Duration::from_millis(1100));
        let (v, took) = timed_read(&m, &rel);
        let v = v.unwrap();
        eprintln!(
            "failover latency, primary {kind}: cached read paying the failover {took:?} ({v})"
        );
        assert!(took < Duration::from_millis(1500), "{kind}: {took:?}");
        assert!(["v1", "v2"].contains(&v.as_str()));
        assert!(
            wait_until(Duration::from_secs(5), || m.read_string(&rel) == "v2"),
            "{kind}: {}",
            m.log_text()
        );
        assert_eq!(regions(&m)["in_use"], REPLICA, "{kind}");
    }
}

#[test]
fn a_primary_down_at_start_mounts_on_the_failover_region() {
    let s = replicated("rg-start", "v1");
    let primary = Proxy::start();
    let replica = Proxy::start();
    primary.refuse(true);
    let m = Mount::aws()
        .endpoint(primary.url())
        .args(["--secret", &s])
        .args(["--failover-region", &format!("{REPLICA}={}", replica.url())])
        .start();
    let (v, took) = timed_read(&m, &format!("{s}/current"));
    assert_eq!(v.unwrap(), "v1");
    eprintln!("cold read with the primary refused since the start: {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "straight to the replica: {took:?}"
    );
    let log = m.log_text();
    assert!(
        log.contains("the primary region us-east-1 is unreachable")
            && log.contains("failover region eu-west-1 answers"),
        "{log}"
    );
    assert_eq!(regions(&m)["in_use"], REPLICA);
}

#[test]
fn access_denied_and_not_found_from_the_primary_do_not_fail_over() {
    let denied = replicated("rg-denied", "v1");
    let gone = replicated("rg-gone", "v1");
    let proxy = Proxy::start();
    let m = Mount::aws()
        .endpoint(proxy.url())
        .args(["--secret", &denied, "--secret", &gone])
        .args(["--failover-region", REPLICA])
        .start();
    let e = Fault::Error {
        status: 400,
        code: "AccessDeniedException",
    };
    proxy.fault_in(PRIMARY, "*", Some(&denied), e, usize::MAX);
    let e = Fault::Error {
        status: 400,
        code: "ResourceNotFoundException",
    };
    proxy.fault_in(PRIMARY, "*", Some(&gone), e, usize::MAX);
    let err = m.read(&format!("{denied}/current")).unwrap_err();
    assert_eq!(errno_of(&err), libc::EACCES, "{err}");
    let err = m.read(&format!("{gone}/current")).unwrap_err();
    assert_eq!(errno_of(&err), libc::ENOENT, "{err}");
    assert_eq!(proxy.count_in(REPLICA, "*"), 0, "fail closed");
    assert!(!m.log_text().contains("failed over"));
}

/// Throttling fails over once the SDK's retries are spent (3 attempts on
/// the primary), and does not slow the whole daemon down: the replica
/// answered.
#[test]
fn throttling_fails_over_after_the_sdks_retries() {
    let s = replicated("rg-throttle", "v1");
    let proxy = Proxy::start();
    let m = Mount::aws()
        .endpoint(proxy.url())
        .args(["--secret", &s, "--failover-region", REPLICA])
        .start();
    let throttled = Fault::Error {
        status: 400,
        code: "ThrottlingException",
    };
    proxy.fault_in(PRIMARY, "GetSecretValue", Some(&s), throttled, usize::MAX);
    let (v, took) = timed_read(&m, &format!("{s}/current"));
    assert_eq!(v.unwrap(), "v1");
    eprintln!("failover latency, primary throttling: first cold read {took:?}");
    assert_eq!(
        proxy.count_in(PRIMARY, "GetSecretValue"),
        3,
        "the SDK's attempts"
    );
    assert!(proxy.count_in(REPLICA, "GetSecretValue") >= 1);
    assert_eq!(m.stats()["throttle_backoff_ms"], 0);
}

/// A secret with no replica: the failover region's "not found" does not
/// make it vanish during the outage. Its cached value is served stale (as
/// without failover); a cold read is EIO, not ENOENT.
#[test]
fn a_secret_not_replicated_is_served_stale_not_lost_during_the_outage() {
    let (kept, cold) = (unique("rg-norep"), unique("rg-norep-cold"));
    create(&kept, "v1");
    create(&cold, "c1");
    let proxy = Proxy::start();
    let m = Mount::aws()
        .endpoint(proxy.url())
        .args(["--secret", &kept, "--secret", &cold, "--ttl", "1"])
        .args(["--failover-region", REPLICA])
        .start();
    let rel = format!("{kept}/current");
    assert_eq!(m.read_string(&rel), "v1");
    proxy.fault_in(PRIMARY, "*", None, unavailable(), usize::MAX);
    std::thread::sleep(Duration::from_millis(1100));
    for _ in 0..3 {
        assert_eq!(m.read_string(&rel), "v1");
    }
    assert!(m.stats()["stale_served"].as_u64().unwrap() >= 1);
    let err = m.read(&format!("{cold}/current")).unwrap_err();
    assert_eq!(errno_of(&err), libc::EIO, "{err}");
    assert!(
        proxy.count_in(REPLICA, "*") >= 1,
        "the replica region was asked"
    );
}

#[test]
fn a_write_while_the_primary_is_down_fails_with_eio_and_stores_nothing() {
    let s = replicated("rg-write", "v1");
    let proxy = Proxy::start();
    let m = Mount::aws()
        .endpoint(proxy.url())
        .args(["--secret", &s, "--failover-region", REPLICA])
        .start();
    let rel = format!("{s}/current");
    assert_eq!(m.read_string(&rel), "v1");
    proxy.fault_in(PRIMARY, "*", None, unavailable(), usize::MAX);
    let before = (versions_in(PRIMARY, &s), versions_in(REPLICA, &s));
    let r = write_file(&m.p(&rel), b"new", libc::O_WRONLY | libc::O_TRUNC);
    assert_eq!(r, Err(libc::EIO), "{}", m.log_text());
    assert_eq!((versions_in(PRIMARY, &s), versions_in(REPLICA, &s)), before);
    assert_eq!(value_in(PRIMARY, &s), "v1");
    assert_eq!(value_in(REPLICA, &s), "v1");
    assert_eq!(proxy.count_in(REPLICA, "PutSecretValue"), 0);
    let log = m.log_text();
    assert!(
        log.contains("primary region us-east-1") && log.contains("replicas cannot be written"),
        "{log}"
    );
    assert!(
        !log.contains("whether it was stored is unknown"),
        "never sent: {log}"
    );
    // Reads still work, from the replica.
    assert_eq!(m.read_string(&rel), "v1");
}

/// A secret of another region named by ARN, at a path and at its name.
#[test]
fn secrets_by_arn_in_another_region_are_read_and_written_at_their_paths() {
    let there = sdk_in(REPLICA);
    let (a, b) = (unique("rg-arn-a"), unique("rg-arn-b"));
    let arn = |name: &str, value: &str| {
        rt().block_on(there.create_secret().name(name).secret_string(value).send())
            .expect("create")
            .arn()
            .unwrap()
            .to_string()
    };
    let (arn_a, arn_b) = (arn(&a, "a1"), arn(&b, "b1"));
    let proxy = Proxy::start();
    let m = Mount::aws()
        .endpoint(proxy.url())
        .args([
            "--secret",
            &format!("shared/db={arn_a}"),
            "--secret",
            &arn_b,
        ])
        .start();
    let mut top = ls(&m.path);
    top.sort();
    let mut want = vec!["shared".to_string(), b.clone()];
    want.sort();
    assert_eq!(top, want);
    assert_eq!(m.read_string("shared/db/current"), "a1");
    assert_eq!(m.read_string(&format!("{b}/current")), "b1");
    // Written through its path: a new version in its own region.
    write_file(
        &m.p("shared/db/current"),
        b"a2",
        libc::O_WRONLY | libc::O_TRUNC,
    )
    .unwrap();
    assert_eq!(value_in(REPLICA, &arn_a), "a2");
    assert_eq!(m.read_string("shared/db/current"), "a2");
    assert_eq!(m.read_string("shared/db/previous"), "a1");
    assert_eq!(ls(&m.p("shared/db/versions")).len(), 2);
    // Every call went to the ARN's region, with the ARN as SecretId.
    for op in ["GetSecretValue", "PutSecretValue", "DescribeSecret"] {
        assert_eq!(proxy.count_in(PRIMARY, op), 0, "{op}");
    }
    assert!(proxy.count_for("GetSecretValue", Some(&arn_a)) >= 1);
    assert_eq!(proxy.count_for("PutSecretValue", Some(&arn_a)), 1);
    assert!(regions(&m)["calls"][REPLICA].as_u64().unwrap() >= 3);
}

#[test]
fn an_arn_that_does_not_exist_is_enoent_with_a_clear_log_line() {
    let there = sdk_in(REPLICA);
    let real = rt()
        .block_on(
            there
                .create_secret()
                .name(unique("rg-arn-x"))
                .secret_string("x")
                .send(),
        )
        .unwrap()
        .arn()
        .unwrap()
        .to_string();
    // The same ARN with another suffix: no such secret.
    let missing = format!("{}Zz9999", &real[..real.len() - 6]);
    let m = Mount::aws()
        .args(["--secret", &format!("gone={missing}")])
        .start();
    let err = m.read("gone/current").unwrap_err();
    assert_eq!(errno_of(&err), libc::ENOENT, "{err}");
    let log = m.log_text();
    assert!(
        log.contains(&format!(
            "secret {missing} (mounted at gone) does not exist in region eu-west-1"
        )),
        "{log}"
    );
}

/// A secret by ARN, declared in a `[[secret]]` table, works in every view:
/// json/, stages/, a template naming its path, and writes through json/.
#[test]
fn a_secret_by_arn_works_in_json_stages_and_templates_from_the_config_file() {
    let name = unique("rg-arn-json");
    let arn = rt()
        .block_on(
            sdk_in(REPLICA)
                .create_secret()
                .name(&name)
                .secret_string(r#"{"user":"u1","pw":"p1"}"#)
                .send(),
        )
        .unwrap()
        .arn()
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.j2"),
        r#"{% set d = secret("shared/j") | from_json -%}{{ d.user }}"#,
    )
    .unwrap();
    let conf = dir.path().join("secretsfs.toml");
    std::fs::write(
        &conf,
        format!(
            "[[secret]]\narn = \"{arn}\"\npath = \"shared/j\"\n\n[[template]]\nname = \"t\"\nsource = \"{}\"\n",
            dir.path().join("t.j2").display()
        ),
    )
    .unwrap();
    let m = Mount::aws()
        .args(["--config", conf.to_str().unwrap()])
        .start();
    assert_eq!(m.read_string("shared/j/json/user"), "u1");
    assert_eq!(
        m.read_string("shared/j/stages/AWSCURRENT"),
        r#"{"user":"u1","pw":"p1"}"#
    );
    assert_eq!(m.read_string(".secretsfs/rendered/t"), "u1");
    write_file(
        &m.p("shared/j/json/user"),
        b"u2",
        libc::O_WRONLY | libc::O_TRUNC,
    )
    .unwrap();
    let stored: serde_json::Value = serde_json::from_str(&value_in(REPLICA, &arn)).unwrap();
    assert_eq!(stored["user"], "u2");
    assert_eq!(stored["pw"], "p1");
    assert!(wait_until(Duration::from_secs(5), || m
        .read_string(".secretsfs/rendered/t")
        == "u2"));
}

/// During the outage a listing comes from the failover region, and shows
/// the replicas of the primary's secrets only, not the secrets that live
/// in that region alone.
#[test]
fn a_listing_during_the_outage_shows_the_primarys_secrets_from_the_replica() {
    let dir = unique("rg-ls");
    let kept = replicated(&format!("{dir}/a"), "v1");
    let local_only = format!("{dir}/only-there");
    rt().block_on(
        sdk_in(REPLICA)
            .create_secret()
            .name(&local_only)
            .secret_string("x")
            .send(),
    )
    .unwrap();
    let proxy = Proxy::start();
    let m = Mount::aws()
        .endpoint(proxy.url())
        .args(["--prefix", &format!("{dir}/"), "--ttl", "1"])
        .args(["--failover-region", REPLICA])
        .start();
    let shown = |m: &Mount| {
        let mut l = ls(&m.p(&dir));
        l.sort();
        l
    };
    let leaf = vec![kept.rsplit('/').next().unwrap().to_string()];
    assert_eq!(shown(&m), leaf);
    proxy.fault_in(PRIMARY, "*", None, unavailable(), usize::MAX);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let _ = shown(&m);
            proxy.count_in(REPLICA, "ListSecrets") >= 1
        }),
        "{}",
        m.log_text()
    );
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(shown(&m), leaf);
    assert_eq!(shown(&m), leaf);
    assert_eq!(m.read_string(&format!("{kept}/current")), "v1");
}
