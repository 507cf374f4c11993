//! Parameter Store (`--source ssm`) on real mounts against moto's SSM,
//! behind the counting, fault-injecting proxy (which counts calls by
//! X-Amz-Target: `AmazonSSM.GetParameter` counts as `GetParameter`).
//! Effects are checked through the SSM API, straight to moto.

use std::time::Duration;

use aws_sdk_ssm::Client;
use aws_sdk_ssm::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ssm::types::{ParameterTier, ParameterType};

use crate::common::*;

pub(super) fn ssm() -> Client {
    let conf = aws_sdk_ssm::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(moto_url())
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .build();
    Client::from_conf(conf)
}

/// Puts a version of parameter `name` (created with `kind` if new); its
/// version number.
pub(super) fn put_param(name: &str, value: &str, kind: ParameterType) -> i64 {
    let req = ssm()
        .put_parameter()
        .name(name)
        .value(value)
        .r#type(kind)
        .overwrite(true);
    rt().block_on(req.send()).expect("put parameter").version
}

/// Every version of `name`: (number, decrypted value, type, key id, labels).
type Version = (
    i64,
    String,
    Option<ParameterType>,
    Option<String>,
    Vec<String>,
);
fn history(name: &str) -> Vec<Version> {
    let out = rt()
        .block_on(
            ssm()
                .get_parameter_history()
                .name(name)
                .with_decryption(true)
                .send(),
        )
        .expect("history");
    out.parameters()
        .iter()
        .map(|h| {
            (
                h.version,
                h.value().unwrap_or_default().to_string(),
                h.r#type().cloned(),
                h.key_id().map(str::to_string),
                h.labels().to_vec(),
            )
        })
        .collect()
}

pub(super) fn label(name: &str, version: i64, label: &str) {
    rt().block_on(
        ssm()
            .label_parameter_version()
            .name(name)
            .parameter_version(version)
            .labels(label)
            .send(),
    )
    .expect("label");
}

/// A fresh top-level path for one test: `/<unique>`.
pub(super) fn root(tag: &str) -> String {
    format!("/{}", unique(tag))
}

/// A mount of Parameter Store under `prefix` through a fresh proxy.
pub(super) fn mount(prefix: &str, args: &[&str]) -> (Proxy, Mount) {
    let proxy = Proxy::start();
    let m = Mount::aws()
        .endpoint(proxy.url())
        .args(["--source", "ssm", "--prefix", &format!("{prefix}/")])
        .args(args.iter().copied())
        .start();
    (proxy, m)
}

#[test]
fn string_stringlist_and_securestring_parameters_read_by_path() {
    let r = root("ps-read");
    put_param(&format!("{r}/plain"), "hello", ParameterType::String);
    put_param(&format!("{r}/list"), "a,b,c", ParameterType::StringList);
    put_param(
        &format!("{r}/db/password"),
        "s3cret",
        ParameterType::SecureString,
    );
    let (_proxy, m) = mount(&r, &[]);
    let top = &r[1..];
    assert_eq!(m.read_string(&format!("{top}/plain/current")), "hello");
    assert_eq!(m.read_string(&format!("{top}/list/current")), "a,b,c");
    assert_eq!(
        m.read_string(&format!("{top}/db/password/current")),
        "s3cret",
        "SecureString is decrypted"
    );
    assert_eq!(ls(&m.p(top)), ["db", "list", "plain"]);
    assert!(
        !m.p(&format!("{top}/plain/previous")).exists(),
        "one version: no previous"
    );
    assert!(
        !m.log_text().contains("s3cret"),
        "no value in the log: {}",
        m.log_text()
    );
    assert!(
        m.log_text()
            .contains("start-up check passed: DescribeParameters answered"),
        "{}",
        m.log_text()
    );
    let stats = m.stats();
    assert_eq!(stats["store"], "ssm");
    assert!(
        stats["api_calls"]["GetParameter"].as_u64().unwrap() >= 3,
        "{stats}"
    );
    assert!(stats["api_calls"]["DescribeParameters"].as_u64().unwrap() >= 1);
    assert_eq!(stats["api_calls"]["GetSecretValue"], 0);
}

#[test]
fn a_parameter_and_its_children_share_a_directory() {
    let r = root("ps-tree");
    put_param(&format!("{r}/app/db"), "db-host", ParameterType::String);
    put_param(
        &format!("{r}/app/db/url"),
        "postgres://x",
        ParameterType::String,
    );
    let (_proxy, m) = mount(&r, &[]);
    let db = format!("{}/app/db", &r[1..]);
    assert_eq!(m.read_string(&format!("{db}/current")), "db-host");
    assert_eq!(m.read_string(&format!("{db}/url/current")), "postgres://x");
    let names = ls(&m.p(&db));
    assert!(
        names.contains(&"current".to_string()) && names.contains(&"url".to_string()),
        "{names:?}"
    );
}

#[test]
fn named_parameters_mount_with_their_leading_slash() {
    let r = root("ps-named");
    let p = format!("{r}/only");
    put_param(&p, "v1", ParameterType::SecureString);
    let proxy = Proxy::start();
    let m = Mount::aws()
        .endpoint(proxy.url())
        .args(["--source", "ssm", "--secret", &p])
        .start();
    assert_eq!(m.read_string(&format!("{}/current", &p[1..])), "v1");
    assert_eq!(proxy.count("ListSecrets"), 0, "Parameter Store calls only");
    let decrypting = proxy
        .bodies("GetParameter")
        .iter()
        .filter(|b| b["WithDecryption"] == true)
        .count();
    assert_eq!(
        decrypting, 1,
        "one decrypting read (the start-up check does not decrypt)"
    );
}

#[test]
fn versions_and_labels_are_files() {
    let r = root("ps-versions");
    let p = format!("{r}/cfg");
    for v in ["one", "two", "three"] {
        put_param(&p, v, ParameterType::SecureString);
    }
    label(&p, 2, "blue");
    let (_proxy, m) = mount(&r, &[]);
    let dir = m.p(&p[1..]);
    assert_eq!(ls(&dir.join("versions")), ["1", "2", "3"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("versions/1")).unwrap(),
        "one"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("current")).unwrap(),
        "three"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("previous")).unwrap(),
        "two"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("stages/blue")).unwrap(),
        "two"
    );
    let stages = ls(&dir.join("stages"));
    assert!(stages.contains(&"blue".to_string()), "{stages:?}");
}

#[test]
fn a_promotion_is_refused_with_eperm_and_a_log_line() {
    let r = root("ps-promote");
    let p = format!("{r}/cfg");
    put_param(&p, "one", ParameterType::String);
    put_param(&p, "two", ParameterType::String);
    label(&p, 1, "old");
    let (_proxy, m) = mount(&r, &[]);
    let dir = m.p(&p[1..]);
    let e = std::fs::rename(dir.join("stages/old"), dir.join("current")).unwrap_err();
    assert_eq!(errno_of(&e), libc::EPERM, "{e}");
    assert_eq!(history(&p).len(), 2, "nothing changed");
    assert_eq!(std::fs::read_to_string(dir.join("current")).unwrap(), "two");
    assert!(
        m.log_text().contains("Parameter Store cannot do this"),
        "{}",
        m.log_text()
    );
    // A staged write (a version that would not be the latest) neither.
    let err = write_file(
        &dir.join("stages/green"),
        b"x",
        libc::O_WRONLY | libc::O_CREAT,
    );
    assert_eq!(
        err,
        Err(libc::EPERM),
        "staged write refused: {}",
        m.log_text()
    );
    assert_eq!(history(&p).len(), 2);
}

#[test]
fn a_write_makes_exactly_one_version_keeping_type_and_key() {
    let r = root("ps-write");
    let secure = format!("{r}/secure");
    let list = format!("{r}/list");
    rt().block_on(
        ssm()
            .put_parameter()
            .name(&secure)
            .value("old")
            .r#type(ParameterType::SecureString)
            .key_id("alias/custom-key")
            .send(),
    )
    .unwrap();
    put_param(&list, "a,b", ParameterType::StringList);
    let (proxy, m) = mount(&r, &[]);
    replace_file(&m.p(&format!("{}/current", &secure[1..])), b"new").unwrap();
    replace_file(&m.p(&format!("{}/current", &list[1..])), b"a,b,c").unwrap();
    let h = history(&secure);
    assert_eq!(h.len(), 2, "exactly one new version");
    assert_eq!(h[1].1, "new");
    assert_eq!(h[1].2, Some(ParameterType::SecureString), "type kept");
    assert_eq!(h[1].3.as_deref(), Some("alias/custom-key"), "key kept");
    let h = history(&list);
    assert_eq!((h.len(), h[1].1.as_str()), (2, "a,b,c"));
    assert_eq!(h[1].2, Some(ParameterType::StringList));
    assert_eq!(proxy.count("PutParameter"), 2);
    // Read-your-writes, and previous follows.
    let dir = m.p(&secure[1..]);
    assert_eq!(std::fs::read_to_string(dir.join("current")).unwrap(), "new");
    assert_eq!(
        std::fs::read_to_string(dir.join("previous")).unwrap(),
        "old"
    );
    assert_eq!(ls(&dir.join("versions")), ["1", "2"]);
    assert_eq!(m.stats()["api_calls"]["PutParameter"], 2);
}

#[test]
fn an_unchanged_write_makes_no_version() {
    let r = root("ps-same");
    let p = format!("{r}/cfg");
    put_param(&p, "same", ParameterType::SecureString);
    let (proxy, m) = mount(&r, &[]);
    replace_file(&m.p(&format!("{}/current", &p[1..])), b"same").unwrap();
    assert_eq!(history(&p).len(), 1);
    assert_eq!(proxy.count("PutParameter"), 0);
}

#[test]
fn writes_over_the_tier_limit_are_efbig_and_store_nothing() {
    let r = root("ps-big");
    let standard = format!("{r}/standard");
    let advanced = format!("{r}/advanced");
    put_param(&standard, "small", ParameterType::String);
    rt().block_on(
        ssm()
            .put_parameter()
            .name(&advanced)
            .value("small")
            .r#type(ParameterType::String)
            .tier(ParameterTier::Advanced)
            .send(),
    )
    .unwrap();
    let (proxy, m) = mount(&r, &[]);
    let cur = |p: &str| m.p(&format!("{}/current", &p[1..]));
    let over = vec![b'x'; 4097];
    assert_eq!(replace_file(&cur(&standard), &over), Err(libc::EFBIG));
    assert_eq!(history(&standard).len(), 1);
    // The advanced tier takes 8 KB, and not a byte more.
    replace_file(&cur(&advanced), &vec![b'y'; 8192]).unwrap();
    assert_eq!(
        replace_file(&cur(&advanced), &vec![b'z'; 8193]),
        Err(libc::EFBIG)
    );
    let h = history(&advanced);
    assert_eq!(h.len(), 2);
    assert_eq!(
        proxy.count("PutParameter"),
        1,
        "nothing sent over the limit"
    );
}

#[test]
fn a_lost_put_answer_is_resolved_by_the_history() {
    let r = root("ps-lost");
    let p = format!("{r}/cfg");
    put_param(&p, "before", ParameterType::SecureString);
    let (proxy, m) = mount(&r, &[]);
    let cur = m.p(&format!("{}/current", &p[1..]));
    assert_eq!(std::fs::read_to_string(&cur).unwrap(), "before");
    // moto stores the version, the answer never comes back.
    proxy.fault("PutParameter", None, Fault::DropResponse, 1);
    replace_file(&cur, b"after").expect("the close succeeds: the version landed");
    let h = history(&p);
    assert_eq!(h.len(), 2, "exactly one version, no second put: {h:?}");
    assert_eq!(h[1].1, "after");
    assert_eq!(proxy.count("PutParameter"), 1, "not sent again");
    assert!(proxy.count("GetParameterHistory") >= 1);
    assert!(
        m.log_text()
            .contains("GetParameterHistory shows the version"),
        "{}",
        m.log_text()
    );
    assert_eq!(std::fs::read_to_string(&cur).unwrap(), "after");
}

#[test]
fn a_put_lost_on_every_attempt_fails_the_close_and_stores_one_version_at_most() {
    let r = root("ps-lost-all");
    let p = format!("{r}/cfg");
    put_param(&p, "before", ParameterType::String);
    let (proxy, m) = mount(&r, &[]);
    let cur = m.p(&format!("{}/current", &p[1..]));
    std::fs::read(&cur).unwrap();
    // Refused before moto sees it, and the history cannot be asked either:
    // the outcome is unknown, and the close says so.
    proxy.fault(
        "PutParameter",
        None,
        Fault::Error {
            status: 503,
            code: "ServiceUnavailable",
        },
        10,
    );
    // (Only the decrypting history asked after a put; the listing's stays.)
    proxy.fault(
        "GetParameterHistory",
        Some(r#""WithDecryption":true"#),
        Fault::Error {
            status: 503,
            code: "ServiceUnavailable",
        },
        10,
    );
    assert_eq!(
        replace_file(&cur, b"after"),
        Err(libc::EIO),
        "{}",
        m.log_text()
    );
    assert_eq!(history(&p).len(), 1);
    assert_eq!(
        proxy.count("PutParameter"),
        1,
        "no blind retry without the history: {}",
        m.log_text()
    );
}

#[test]
fn revalidation_is_by_metadata_with_no_getparameter_for_an_unchanged_value() {
    let r = root("ps-ttl");
    let p = format!("{r}/cfg");
    put_param(&p, "v1", ParameterType::SecureString);
    let (proxy, m) = mount(&r, &["--ttl", "1"]);
    let cur = m.p(&format!("{}/current", &p[1..]));
    assert_eq!(std::fs::read_to_string(&cur).unwrap(), "v1");
    assert_eq!(
        proxy.count("GetParameter"),
        1,
        "a cold read: one GetParameter"
    );
    for _ in 0..20 {
        assert_eq!(std::fs::read_to_string(&cur).unwrap(), "v1");
    }
    assert_eq!(proxy.count("GetParameter"), 1, "within the TTL: no call");
    let describes = proxy.count("DescribeParameters");
    std::thread::sleep(Duration::from_millis(1600));
    assert_eq!(std::fs::read_to_string(&cur).unwrap(), "v1");
    assert!(
        wait_until(Duration::from_secs(3), || proxy.count("DescribeParameters")
            > describes),
        "revalidated by DescribeParameters"
    );
    assert_eq!(std::fs::read_to_string(&cur).unwrap(), "v1");
    assert_eq!(proxy.count("GetParameter"), 1, "unchanged: 0 GetParameter");
    // A new version elsewhere: the next revalidation reads it.
    put_param(&p, "v2", ParameterType::SecureString);
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&cur).unwrap() == "v2"
    }));
    assert_eq!(proxy.count("GetParameter"), 2);
    for body in proxy.bodies("GetParameterHistory") {
        assert_eq!(
            body["WithDecryption"], false,
            "listing never decrypts: {body}"
        );
    }
}

#[test]
fn throttling_serves_the_cached_value_and_slows_down() {
    let r = root("ps-throttle");
    let p = format!("{r}/cfg");
    put_param(&p, "cached", ParameterType::SecureString);
    let (proxy, m) = mount(&r, &["--ttl", "1"]);
    let cur = m.p(&format!("{}/current", &p[1..]));
    assert_eq!(std::fs::read_to_string(&cur).unwrap(), "cached");
    let throttled = Fault::Error {
        status: 400,
        code: "ThrottlingException",
    };
    proxy.fault("*", None, throttled, 1000);
    std::thread::sleep(Duration::from_millis(1500));
    for _ in 0..3 {
        assert_eq!(std::fs::read_to_string(&cur).unwrap(), "cached");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        wait_until(Duration::from_secs(5), || m
            .log_text()
            .contains("throttled by the backend")),
        "{}",
        m.log_text()
    );
    assert!(
        m.stats()["stale_served"].as_u64().unwrap() >= 1,
        "{}",
        m.stats()
    );
}

#[test]
fn sed_in_place_makes_one_version() {
    let r = root("ps-sed");
    let p = format!("{r}/cfg");
    put_param(&p, "user=alice\n", ParameterType::SecureString);
    let (_proxy, m) = mount(&r, &[]);
    let dir = m.p(&p[1..]);
    sh_ok("sed -i s/alice/bob/ current", &dir);
    let h = history(&p);
    assert_eq!(h.len(), 2);
    assert_eq!(h[1].1, "user=bob\n");
    assert_eq!(h[1].2, Some(ParameterType::SecureString));
    assert!(
        !ls(&dir).iter().any(|n| n.starts_with("sed")),
        "no stray files"
    );
}

#[test]
fn vim_makes_one_version() {
    let r = root("ps-vim");
    let p = format!("{r}/cfg");
    put_param(&p, "old\n", ParameterType::String);
    let (_proxy, m) = mount(&r, &[]);
    let dir = m.p(&p[1..]);
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("vim -Es -u DEFAULTS -i NONE -c 'set backupskip=' -c '%s/old/new/' -c wq current")
        .current_dir(&dir)
        .env("HOME", m.path.parent().unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}\n{}", m.log_text());
    let h = history(&p);
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(h[1].1, "new\n");
}

#[test]
fn mkdir_and_write_creates_a_securestring_only_with_allow_create() {
    let r = root("ps-create");
    put_param(&format!("{r}/anchor"), "x", ParameterType::String);
    let (_proxy, m) = mount(&r, &["--allow-create"]);
    let dir = m.p(&format!("{}/fresh", &r[1..]));
    std::fs::create_dir(&dir).unwrap();
    write_file(
        &dir.join("current"),
        b"made",
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
    )
    .unwrap();
    let h = history(&format!("{r}/fresh"));
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].1, "made");
    assert_eq!(h[0].2, Some(ParameterType::SecureString));
    drop(m);
    let (_proxy, m) = mount(&r, &[]);
    let e = std::fs::create_dir(m.p(&format!("{}/other", &r[1..]))).unwrap_err();
    assert!(
        [libc::EACCES, libc::EPERM, libc::EROFS].contains(&errno_of(&e)),
        "{e}"
    );
}

#[test]
fn an_unreachable_parameter_store_mounts_and_says_so() {
    let port = free_port();
    let m = Mount::aws()
        .endpoint(format!("http://127.0.0.1:{port}"))
        .args(["--source", "ssm", "--secret", "/nowhere/x"])
        .start();
    assert!(
        wait_until(Duration::from_secs(10), || m
            .log_text()
            .contains("Parameter Store at http://127.0.0.1")),
        "{}",
        m.log_text()
    );
    let e = std::fs::read(m.p("nowhere/x/current")).unwrap_err();
    assert_eq!(errno_of(&e), libc::EIO, "{e}");
}

#[test]
fn a_json_parameter_shows_its_keys_and_a_key_write_keeps_the_type() {
    let r = root("ps-json");
    let p = format!("{r}/db");
    put_param(
        &p,
        r#"{"host":"h","port":5432}"#,
        ParameterType::SecureString,
    );
    let (_proxy, m) = mount(&r, &[]);
    let dir = m.p(&p[1..]);
    assert_eq!(std::fs::read_to_string(dir.join("json/host")).unwrap(), "h");
    assert_eq!(
        std::fs::read_to_string(dir.join("json/port")).unwrap(),
        "5432"
    );
    replace_file(&dir.join("json/host"), b"h2").unwrap();
    let h = history(&p);
    assert_eq!(h.len(), 2, "{h:?}");
    assert!(h[1].1.contains(r#""host":"h2""#), "{}", h[1].1);
    assert_eq!(h[1].2, Some(ParameterType::SecureString));
}
