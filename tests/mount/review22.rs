//! Review of issue 22 (Parameter Store): adversarial probes on real mounts
//! against moto's SSM behind the fault-injecting proxy. Each test states the
//! promise it checks; see the review report for what each one found.

use std::time::Duration;

use aws_sdk_ssm::Client;
use aws_sdk_ssm::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ssm::types::ParameterType;

use crate::common::*;

fn ssm() -> Client {
    let conf = aws_sdk_ssm::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(moto_url())
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .build();
    Client::from_conf(conf)
}

fn put_param(name: &str, value: &str, kind: ParameterType) -> i64 {
    let req = ssm()
        .put_parameter()
        .name(name)
        .value(value)
        .r#type(kind)
        .overwrite(true);
    rt().block_on(req.send()).expect("put parameter").version
}

/// Every version of `name` as (number, decrypted value).
fn history(name: &str) -> Vec<(i64, String)> {
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
        .map(|h| (h.version, h.value().unwrap_or_default().to_string()))
        .collect()
}

fn root(tag: &str) -> String {
    format!("/{}", unique(tag))
}

fn mount(prefix: &str, args: &[&str]) -> (Proxy, Mount) {
    let proxy = Proxy::start();
    let m = Mount::aws()
        .endpoint(proxy.url())
        .args(["--source", "ssm", "--prefix", &format!("{prefix}/")])
        .args(args.iter().copied())
        .start();
    (proxy, m)
}

/// Decrypting GetParameter calls the proxy saw.
fn decrypting_reads(proxy: &Proxy) -> usize {
    proxy
        .bodies("GetParameter")
        .iter()
        .filter(|b| b["WithDecryption"] == true)
        .count()
}

/// A put attempt that times out (the request is slow on its way, and lands
/// after the daemon gave up on it) is retried blindly: PutParameter has no
/// token, so one close makes two versions. The docs promise "two versions
/// from one close" cannot happen while the history answers (it does here).
#[test]
fn a_put_that_times_out_and_lands_late_makes_one_version() {
    let r = root("r22-slowput");
    let p = format!("{r}/cfg");
    put_param(&p, "before", ParameterType::SecureString);
    let (proxy, m) = mount(&r, &[]);
    let cur = m.p(&format!("{}/current", &p[1..]));
    assert_eq!(std::fs::read_to_string(&cur).unwrap(), "before");
    // Longer than the put's 5 s attempt timeout: moto gets it afterwards.
    proxy.fault(
        "PutParameter",
        None,
        Fault::Delay(Duration::from_millis(5800)),
        1,
    );
    let closed = replace_file(&cur, b"after");
    // Let the slow request reach moto.
    std::thread::sleep(Duration::from_secs(2));
    let h = history(&p);
    let ours = h.iter().filter(|(_, v)| v == "after").count();
    assert_eq!(
        ours,
        1,
        "one close ({closed:?}) made {ours} versions: {h:?}; PutParameter sent {} times",
        proxy.count("PutParameter")
    );
}

/// GetParameter reads `name:N` and `name:label` as selectors. A lookup of
/// a path that is no parameter (`db:1`) asks the store directly with that
/// name, so a phantom directory shows version 1 of `/…/db`.
#[test]
fn a_name_with_a_selector_is_not_another_parameters_version() {
    let r = root("r22-selector");
    let p = format!("{r}/db");
    put_param(&p, "old-password", ParameterType::SecureString);
    put_param(&p, "new-password", ParameterType::SecureString);
    let (_proxy, m) = mount(&r, &[]);
    let top = &r[1..];
    assert_eq!(m.read_string(&format!("{top}/db/current")), "new-password");
    let phantom = m.read(&format!("{top}/db:1/current"));
    assert!(
        phantom.is_err(),
        "no parameter {r}/db:1 exists, yet {top}/db:1/current reads {:?}",
        phantom.map(String::from_utf8)
    );
}

/// `--secret` names parameters. A flat parameter name (no leading '/')
/// is silently read as the hierarchical one: a different parameter.
#[test]
fn a_flat_secret_name_is_not_served_from_another_parameter() {
    let flat = unique("r22flat");
    put_param(&flat, "flat-value", ParameterType::String);
    put_param(&format!("/{flat}"), "slashed-value", ParameterType::String);
    let proxy = Proxy::start();
    let m = Mount::aws()
        .endpoint(proxy.url())
        .args(["--source", "ssm", "--secret", &flat])
        .start();
    let got = m.read(&format!("{flat}/current"));
    assert_ne!(
        got.as_deref().ok(),
        Some(&b"slashed-value"[..]),
        "--secret {flat} names the flat parameter {flat}, but the mount serves /{flat}"
    );
}

/// Version files are the history's numbers; `versions/02` or `versions/+2`
/// are not in `ls versions/`, yet resolve (as aliases of 2).
#[test]
fn version_files_are_only_the_listed_numbers() {
    let r = root("r22-vers");
    let p = format!("{r}/cfg");
    put_param(&p, "one", ParameterType::String);
    put_param(&p, "two", ParameterType::String);
    let (_proxy, m) = mount(&r, &[]);
    let dir = m.p(&p[1..]);
    assert_eq!(ls(&dir.join("versions")), ["1", "2"]);
    for alias in ["02", "+2", "2.0", " 2"] {
        let got = std::fs::read(dir.join("versions").join(alias));
        assert!(
            got.is_err(),
            "versions/{alias:?} is not a listed version, yet reads {:?}",
            got.map(String::from_utf8)
        );
    }
}

/// Listing the tree never decrypts: readdir of a prefix with parameters,
/// and of a parameter's directory, make no decrypting GetParameter.
#[test]
fn listing_the_tree_makes_no_decrypting_read() {
    let r = root("r22-ls");
    for n in ["a", "b", "c"] {
        put_param(&format!("{r}/{n}"), "v", ParameterType::SecureString);
    }
    let (proxy, m) = mount(&r, &[]);
    let top = m.p(&r[1..]);
    assert_eq!(ls(&top), ["a", "b", "c"]);
    assert_eq!(decrypting_reads(&proxy), 0, "ls of the prefix decrypted");
    let names = ls(&top.join("a"));
    assert!(names.contains(&"current".to_string()), "{names:?}");
    assert_eq!(
        decrypting_reads(&proxy),
        0,
        "ls of a parameter's directory decrypted: {:?}",
        proxy.bodies("GetParameter")
    );
}
