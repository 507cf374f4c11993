//! Review of issue 22 (Parameter Store): adversarial probes on real mounts
//! against moto's SSM behind the fault-injecting proxy. Each test states the
//! promise it checks; see the review report for what each one found.

use std::time::Duration;

use aws_sdk_ssm::types::ParameterType;

use super::ssm::{label, mount, put_param, root, ssm};
use crate::common::*;

/// Every version of `name` as (number, decrypted value).
fn history(name: &str) -> Vec<(i64, String)> {
    let mut pages = ssm()
        .get_parameter_history()
        .name(name)
        .with_decryption(true)
        .into_paginator()
        .send();
    let mut all = Vec::new();
    while let Some(page) = rt().block_on(pages.next()) {
        for h in page.expect("history").parameters() {
            all.push((h.version, h.value().unwrap_or_default().to_string()));
        }
    }
    all
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
/// was silently read as the hierarchical one: a different parameter. The
/// fix refuses it at start with one clear line (the tree shows only the
/// hierarchy), so nothing of `/{flat}` is served for it.
#[test]
fn a_flat_secret_name_is_not_served_from_another_parameter() {
    let flat = unique("r22flat");
    put_param(&flat, "flat-value", ParameterType::String);
    put_param(&format!("/{flat}"), "slashed-value", ParameterType::String);
    let mnt = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_secretsfs"))
        .args(["--source", "ssm", "--secret", &flat])
        .arg(mnt.path())
        .env("AWS_ENDPOINT_URL", moto_url())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "--secret {flat} names the flat parameter {flat}, yet the mount started: {err}"
    );
    assert!(!mounted(mnt.path()), "nothing mounted");
    assert!(
        err.contains(&format!("'/{flat}'")) && err.contains("flat names"),
        "one clear line: {err}"
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

fn delete_param(name: &str) {
    rt().block_on(ssm().delete_parameter().name(name).send())
        .expect("delete parameter");
}

/// Opens `path` and reads its first `n` bytes: the handle, and them.
fn open_and_read(path: &std::path::Path, n: usize) -> (std::fs::File, Vec<u8>) {
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap();
    let mut head = vec![0u8; n];
    f.read_exact(&mut head).unwrap();
    (f, head)
}

/// The rest of an open handle after `head`, as text.
fn finish(mut f: std::fs::File, mut head: Vec<u8>) -> String {
    use std::io::Read;
    f.read_to_end(&mut head).unwrap();
    String::from_utf8_lossy(&head).into_owned()
}

/// A `--secret` mount without ssm:DescribeParameters: the docs promise
/// `current` still reads and refreshes (by a decrypting GetParameter).
#[test]
fn without_describe_parameters_current_still_reads_and_refreshes() {
    let r = root("r22-nodesc");
    let p = format!("{r}/cfg");
    put_param(&p, "v1", ParameterType::SecureString);
    let proxy = Proxy::start();
    let denied = Fault::Error {
        status: 400,
        code: "AccessDeniedException",
    };
    proxy.fault("DescribeParameters", None, denied, 10_000);
    let m = Mount::aws()
        .endpoint(proxy.url())
        .args(["--source", "ssm", "--secret", &p, "--ttl", "1"])
        .start();
    let cur = format!("{}/current", &p[1..]);
    assert_eq!(m.read(&cur).map_err(|e| e.to_string()), Ok(b"v1".to_vec()));
    put_param(&p, "v2", ParameterType::SecureString);
    assert!(
        wait_until(Duration::from_secs(6), || m.read(&cur).ok().as_deref()
            == Some(&b"v2"[..])),
        "{:?}\n{}",
        m.read(&cur),
        m.log_text()
    );
}

/// A label moved externally while `stages/<label>` is open: the handle
/// finishes on its version; opens after the TTL see the new one.
#[test]
fn a_label_moved_while_its_stage_file_is_open() {
    let r = root("r22-label");
    let p = format!("{r}/cfg");
    put_param(&p, "first-value", ParameterType::SecureString);
    put_param(&p, "second-value", ParameterType::SecureString);
    label(&p, 1, "blue");
    let (_proxy, m) = mount(&r, &["--ttl", "1"]);
    let blue = m.p(&format!("{}/stages/blue", &p[1..]));
    let (handle, head) = open_and_read(&blue, 5);
    label(&p, 2, "blue");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read(&blue)
            .ok()
            .as_deref()
            == Some(&b"second-value"[..])),
        "new opens see the moved label: {:?}",
        std::fs::read(&blue)
    );
    assert_eq!(finish(handle, head), "first-value");
}

/// A parameter deleted while `current` is open: the handle finishes on its
/// version, then opens answer ENOENT after the TTL.
#[test]
fn a_parameter_deleted_while_open() {
    let r = root("r22-del");
    let p = format!("{r}/cfg");
    put_param(&p, "doomed-value", ParameterType::SecureString);
    let (_proxy, m) = mount(&r, &["--ttl", "1"]);
    let cur = m.p(&format!("{}/current", &p[1..]));
    let (handle, head) = open_and_read(&cur, 3);
    delete_param(&p);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read(&cur)
            .is_err_and(|e| errno_of(&e) == libc::ENOENT)),
        "deleted: {:?}",
        std::fs::read(&cur)
    );
    assert_eq!(finish(handle, head), "doomed-value");
}

/// "Unchanged" is judged against Parameter Store at commit: writing back
/// the value someone else replaced (within the TTL) makes a version.
#[test]
fn writing_back_a_value_replaced_elsewhere_puts_it() {
    let r = root("r22-back");
    let p = format!("{r}/cfg");
    put_param(&p, "mine", ParameterType::SecureString);
    let (_proxy, m) = mount(&r, &[]);
    let cur = m.p(&format!("{}/current", &p[1..]));
    assert_eq!(std::fs::read_to_string(&cur).unwrap(), "mine");
    put_param(&p, "theirs", ParameterType::SecureString);
    replace_file(&cur, b"mine").unwrap();
    let h = history(&p);
    assert_eq!(h.last().map(|(_, v)| v.as_str()), Some("mine"), "{h:?}");
    assert_eq!(std::fs::read_to_string(&cur).unwrap(), "mine");
}

/// Two writers close at once: both closes succeed, two versions, and the
/// mount's `current` is the latest one in Parameter Store.
#[test]
fn two_writers_make_two_versions_and_current_is_the_latest() {
    let r = root("r22-two");
    let p = format!("{r}/cfg");
    put_param(&p, "base", ParameterType::SecureString);
    let (_proxy, m) = mount(&r, &[]);
    let cur = m.p(&format!("{}/current", &p[1..]));
    let handles: Vec<_> = ["alpha", "bravo"]
        .into_iter()
        .map(|v| {
            let cur = cur.clone();
            std::thread::spawn(move || replace_file(&cur, v.as_bytes()))
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), Ok(()));
    }
    let h = history(&p);
    assert_eq!(h.len(), 3, "{h:?}");
    let latest = h.last().unwrap().1.clone();
    assert_eq!(std::fs::read_to_string(&cur).unwrap(), latest);
    let prev = h[1].1.clone();
    assert_eq!(
        std::fs::read_to_string(m.p(&format!("{}/previous", &p[1..]))).unwrap(),
        prev
    );
}

/// Non-UTF-8 bytes are EINVAL at close, nothing stored, nothing logged.
#[test]
fn a_binary_write_is_einval_and_leaks_nothing() {
    let r = root("r22-bin");
    let p = format!("{r}/cfg");
    put_param(&p, "text", ParameterType::SecureString);
    let (proxy, m) = mount(&r, &[]);
    let cur = m.p(&format!("{}/current", &p[1..]));
    let mut bytes = b"LEAKCANARY".to_vec();
    bytes.extend([0xff, 0xfe, 0x00]);
    assert_eq!(replace_file(&cur, &bytes), Err(libc::EINVAL));
    assert_eq!(history(&p).len(), 1);
    assert_eq!(proxy.count("PutParameter"), 0);
    assert!(!m.log_text().contains("LEAKCANARY"), "{}", m.log_text());
    assert_eq!(std::fs::read_to_string(&cur).unwrap(), "text");
}

/// A put answered with ThrottlingException (not applied) is tried again:
/// the close succeeds with exactly one version.
#[test]
fn a_throttled_put_is_retried_into_one_version() {
    let r = root("r22-thr");
    let p = format!("{r}/cfg");
    put_param(&p, "before", ParameterType::String);
    let (proxy, m) = mount(&r, &[]);
    let cur = m.p(&format!("{}/current", &p[1..]));
    std::fs::read(&cur).unwrap();
    for code in ["ThrottlingException", "TooManyUpdates"] {
        proxy.fault("PutParameter", None, Fault::Error { status: 400, code }, 1);
        replace_file(&cur, code.as_bytes())
            .unwrap_or_else(|e| panic!("{code}: {e}\n{}", m.log_text()));
    }
    let h = history(&p);
    assert_eq!(h.len(), 3, "{h:?}");
}

/// A parameter named like an own file: `/r/app` and `/r/app/current`.
#[test]
fn a_child_parameter_named_current_does_not_shadow_the_own_file() {
    let r = root("r22-cur");
    put_param(&format!("{r}/app"), "own-value", ParameterType::String);
    put_param(
        &format!("{r}/app/current"),
        "child-value",
        ParameterType::String,
    );
    put_param(
        &format!("{r}/app/versions"),
        "child2",
        ParameterType::String,
    );
    let (_proxy, m) = mount(&r, &[]);
    let app = format!("{}/app", &r[1..]);
    assert!(!ls(&m.p(&r[1..])).is_empty());
    assert_eq!(m.read_string(&format!("{app}/current")), "own-value");
    assert_eq!(ls(&m.p(&format!("{app}/versions"))), ["1"]);
}

/// `ls -a` of a directory: every entry, `.` and `..` included.
fn ls_all(dir: &std::path::Path) -> Vec<String> {
    let out = sh("ls -a1", dir);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Parameter labels may be `.` or `..` (letters, digits, `.`, `-`, `_`):
/// such a label cannot be a file name, so `stages/` must leave it out
/// rather than list a second `.` or `..`.
#[test]
fn a_label_that_cannot_be_a_file_name_is_left_out() {
    let r = root("r22-dotlabel");
    let p = format!("{r}/cfg");
    put_param(&p, "one", ParameterType::String);
    put_param(&p, "two", ParameterType::String);
    label(&p, 1, "..");
    label(&p, 2, ".");
    label(&p, 2, "fine");
    let (_proxy, m) = mount(&r, &[]);
    let stages = m.p(&format!("{}/stages", &p[1..]));
    let all = ls_all(&stages);
    assert_eq!(all.iter().filter(|n| *n == ".").count(), 1, "{all:?}");
    assert_eq!(all.iter().filter(|n| *n == "..").count(), 1, "{all:?}");
    assert!(all.contains(&"fine".to_string()), "{all:?}");
}

/// Parameter names whose components cannot be paths (`.`, `..`) are left
/// out of listings, never shown as a second `.`/`..` entry.
#[test]
fn a_parameter_named_with_dot_components_is_left_out() {
    let r = root("r22-dotname");
    put_param(&format!("{r}/d/x"), "ok", ParameterType::String);
    let dots = ["..", "."].into_iter().filter(|d| {
        rt().block_on(
            ssm()
                .put_parameter()
                .name(format!("{r}/d/{d}"))
                .value("dot")
                .r#type(ParameterType::String)
                .send(),
        )
        .is_ok()
    });
    let accepted: Vec<_> = dots.collect();
    assert!(!accepted.is_empty(), "moto refused both names");
    let (_proxy, m) = mount(&r, &[]);
    let all = ls_all(&m.p(&format!("{}/d", &r[1..])));
    assert_eq!(
        all.iter().filter(|n| *n == ".").count(),
        1,
        "{accepted:?} {all:?}"
    );
    assert_eq!(
        all.iter().filter(|n| *n == "..").count(),
        1,
        "{accepted:?} {all:?}"
    );
    assert!(all.contains(&"x".to_string()), "{all:?}");
}

/// Parameter Store numbers versions from 1 again when a parameter is
/// deleted and created anew: the version number alone is no identity.
/// After the TTL, revalidation sees "latest is 1, cached is 1" and keeps
/// serving the deleted parameter's value (and `versions/1` with it).
#[test]
fn a_parameter_deleted_and_created_again_shows_its_new_value() {
    let r = root("r22-recreate");
    let p = format!("{r}/cfg");
    put_param(&p, "deleted-value", ParameterType::SecureString);
    let (_proxy, m) = mount(&r, &["--ttl", "1"]);
    let dir = m.p(&p[1..]);
    assert_eq!(
        std::fs::read_to_string(dir.join("current")).unwrap(),
        "deleted-value"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("versions/1")).unwrap(),
        "deleted-value"
    );
    delete_param(&p);
    put_param(&p, "created-value", ParameterType::SecureString);
    std::thread::sleep(Duration::from_millis(1500));
    let fresh = wait_until(Duration::from_secs(6), || {
        std::fs::read_to_string(dir.join("current")).ok().as_deref() == Some("created-value")
    });
    assert!(
        fresh,
        "current still reads {:?} long after the TTL (Parameter Store: {:?})",
        std::fs::read_to_string(dir.join("current")),
        history(&p)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("versions/1")).unwrap(),
        "created-value",
        "versions/1 is another version now"
    );
}

/// The same confusion loses a write: "unchanged" is judged against the
/// cached copy of the deleted parameter's version 1, so writing that value
/// back makes no version, and the close says it succeeded.
#[test]
fn writing_the_deleted_parameters_value_over_its_successor_puts_it() {
    let r = root("r22-recreate-w");
    let p = format!("{r}/cfg");
    put_param(&p, "wanted", ParameterType::SecureString);
    let (_proxy, m) = mount(&r, &[]);
    let cur = m.p(&format!("{}/current", &p[1..]));
    assert_eq!(std::fs::read_to_string(&cur).unwrap(), "wanted");
    delete_param(&p);
    put_param(&p, "someone-else", ParameterType::SecureString);
    assert_eq!(replace_file(&cur, b"wanted"), Ok(()));
    let h = history(&p);
    assert_eq!(
        h.last().map(|(_, v)| v.as_str()),
        Some("wanted"),
        "the close succeeded but Parameter Store holds {h:?}"
    );
}

/// DescribeParameters is best effort: AWS may answer a filtered request
/// with fewer results than asked, even none, and a NextToken ("the number
/// of items returned can be between zero and MaxResults"). The one-page
/// lookup of a parameter's metadata then takes an existing parameter for a
/// deleted one: its cached value is dropped (ENOENT) and writes fail.
/// The proxy answers one such empty page; the next page (token "0", moto's
/// first) holds the parameter.
#[test]
fn an_empty_describe_page_with_a_next_token_is_not_a_deleted_parameter() {
    let r = root("r22-page");
    let p = format!("{r}/cfg");
    put_param(&p, "still-here", ParameterType::SecureString);
    let (proxy, m) = mount(&r, &["--ttl", "1"]);
    let cur = m.p(&format!("{}/current", &p[1..]));
    assert_eq!(std::fs::read_to_string(&cur).unwrap(), "still-here");
    let empty = Fault::Answer(r#"{"Parameters":[],"NextToken":"0"}"#);
    proxy.fault("DescribeParameters", Some("Equals"), empty.clone(), 1);
    let asked = proxy.count_for("DescribeParameters", Some("Equals"));
    std::thread::sleep(Duration::from_millis(1500));
    // Revalidation may run in the background: read until it has asked.
    assert!(wait_until(Duration::from_secs(5), || {
        let _ = std::fs::read(&cur);
        proxy.count_for("DescribeParameters", Some("Equals")) > asked
    }));
    std::thread::sleep(Duration::from_millis(300));
    let read = std::fs::read_to_string(&cur);
    assert_eq!(
        read.as_ref().map_err(errno_of),
        Ok(&"still-here".to_string()),
        "revalidation: {}",
        m.log_text()
    );
    proxy.fault("DescribeParameters", Some("Equals"), empty, 1);
    assert_eq!(
        replace_file(&cur, b"next"),
        Ok(()),
        "write: {}",
        m.log_text()
    );
}

/// Past 50 versions (one history page): `versions/` lists them all, and a
/// lost put answer is still resolved to one version.
#[test]
fn a_long_history_is_paged_for_listing_and_for_a_lost_answer() {
    let r = root("r22-long");
    let p = format!("{r}/cfg");
    for i in 1..=55 {
        put_param(&p, &format!("value-{i}"), ParameterType::SecureString);
    }
    let (proxy, m) = mount(&r, &[]);
    let dir = m.p(&p[1..]);
    assert_eq!(ls(&dir.join("versions")).len(), 55);
    assert_eq!(
        std::fs::read_to_string(dir.join("versions/53")).unwrap(),
        "value-53"
    );
    proxy.fault("PutParameter", None, Fault::DropResponse, 1);
    replace_file(&dir.join("current"), b"value-56").unwrap();
    let h = history(&p);
    assert_eq!(h.len(), 56, "one version");
    assert_eq!(proxy.count("PutParameter"), 1);
}

/// 100 versions with the oldest labelled: PutParameter answers
/// ParameterMaxVersionLimitExceeded, which is EDQUOT, and nothing changes.
#[test]
fn the_version_limit_with_a_labelled_oldest_is_edquot() {
    let r = root("r22-limit");
    let p = format!("{r}/cfg");
    for i in 1..=100 {
        put_param(&p, &format!("v{i}"), ParameterType::String);
    }
    label(&p, 1, "pinned");
    let (_proxy, m) = mount(&r, &[]);
    let cur = m.p(&format!("{}/current", &p[1..]));
    assert_eq!(
        replace_file(&cur, b"v101"),
        Err(libc::EDQUOT),
        "{}",
        m.log_text()
    );
    assert_eq!(std::fs::read_to_string(&cur).unwrap(), "v100");
}

/// A create (`--allow-create`) whose answer is lost: one parameter, one
/// version, and the close succeeds.
#[test]
fn a_create_whose_answer_is_lost_makes_one_version() {
    let r = root("r22-mk");
    put_param(&format!("{r}/anchor"), "x", ParameterType::String);
    let (proxy, m) = mount(&r, &["--allow-create"]);
    let dir = m.p(&format!("{}/fresh", &r[1..]));
    std::fs::create_dir(&dir).unwrap();
    proxy.fault("PutParameter", None, Fault::DropResponse, 1);
    let made = write_file(
        &dir.join("current"),
        b"made",
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
    );
    assert_eq!(made, Ok(()), "{}", m.log_text());
    assert_eq!(history(&format!("{r}/fresh")), [(1, "made".to_string())]);
    assert_eq!(
        std::fs::read_to_string(dir.join("current")).unwrap(),
        "made"
    );
}

/// A steady reader of unchanged values (refresh ahead near the TTL's end,
/// revalidation after it) of `current`, `previous`, a stage file and the
/// JSON view: metadata calls only, never a second decrypting GetParameter.
#[test]
fn steady_readers_of_unchanged_values_never_decrypt_again() {
    let r = root("r22-steady");
    let p = format!("{r}/cfg");
    put_param(&p, r#"{"k":"one"}"#, ParameterType::SecureString);
    put_param(&p, r#"{"k":"two"}"#, ParameterType::SecureString);
    label(&p, 1, "blue");
    let (proxy, m) = mount(&r, &["--ttl", "2"]);
    let dir = m.p(&p[1..]);
    let files = ["current", "previous", "stages/blue", "json/k", "versions/1"];
    for f in files {
        std::fs::read(dir.join(f)).unwrap();
    }
    let cold = decrypting_reads(&proxy);
    let describes = proxy.count("DescribeParameters");
    let until = std::time::Instant::now() + Duration::from_secs(7);
    while std::time::Instant::now() < until {
        for f in files {
            std::fs::read(dir.join(f)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(proxy.count("DescribeParameters") > describes, "revalidated");
    assert_eq!(
        decrypting_reads(&proxy),
        cold,
        "unchanged values decrypted again: {:?}",
        proxy
            .bodies("GetParameter")
            .iter()
            .map(|b| b["Name"].clone())
            .collect::<Vec<_>>()
    );
}

/// No value in the log at any level: a trace-level mount reads a
/// SecureString, lists its versions, writes it (a lost answer resolved by
/// the decrypting history) and writes a JSON key.
#[test]
fn trace_logging_leaks_no_parameter_value() {
    let r = root("r22-trace");
    let p = format!("{r}/cfg");
    put_param(&p, "CANARYold4711", ParameterType::SecureString);
    let proxy = Proxy::start();
    let m = Mount::aws()
        .endpoint(proxy.url())
        .args([
            "--source",
            "ssm",
            "--prefix",
            &format!("{r}/"),
            "--ttl",
            "1",
        ])
        .env("RUST_LOG", "trace")
        .start();
    let dir = m.p(&p[1..]);
    assert_eq!(
        std::fs::read_to_string(dir.join("current")).unwrap(),
        "CANARYold4711"
    );
    ls(&dir.join("versions"));
    proxy.fault("PutParameter", None, Fault::DropResponse, 1);
    replace_file(&dir.join("current"), br#"{"k":"CANARYnew0815"}"#).unwrap();
    replace_file(&dir.join("json/k"), b"CANARYkey2342").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::read(dir.join("current")).unwrap();
    let log = m.log_text();
    for canary in ["CANARYold4711", "CANARYnew0815", "CANARYkey2342"] {
        let at = log.find(canary);
        assert!(
            at.is_none(),
            "{canary} logged: {}",
            at.map(|i| &log[i.saturating_sub(400)..(i + 100).min(log.len())])
                .unwrap_or_default()
        );
    }
}

/// Stats and metrics count "API calls per operation" (PRODUCT.md, issue:
/// "metrics (per API)"). A revalidation makes a DescribeParameters and a
/// GetParameterHistory, a cold `previous` a DescribeParameters and a
/// GetParameter: the counters should be the calls made, as CloudTrail and
/// the quotas see them.
#[test]
fn stats_count_the_parameter_store_calls_made() {
    let r = root("r22-stats");
    let p = format!("{r}/cfg");
    put_param(&p, "one", ParameterType::SecureString);
    put_param(&p, "two", ParameterType::SecureString);
    let (proxy, m) = mount(&r, &["--ttl", "1"]);
    let dir = m.p(&p[1..]);
    std::fs::read(dir.join("current")).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::read(dir.join("current")).unwrap();
    std::fs::read(dir.join("previous")).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let stats = m.stats();
    let counted = |op: &str| stats["api_calls"][op].as_u64().unwrap_or(0) as usize;
    let made = ["GetParameter", "GetParameterHistory", "DescribeParameters"]
        .map(|op| (op, proxy.count(op), counted(op)));
    assert!(made[1].1 >= 1, "revalidation asked the history: {made:?}");
    // The start-up check's one DescribeParameters may be left out.
    assert!(
        made.iter().all(|(op, sent, seen)| sent == seen
            || (*op == "DescribeParameters" && sent.saturating_sub(1) == *seen)),
        "(API, calls made, calls counted): {made:?}"
    );
}

/// "Unchanged" is judged against Parameter Store at commit, never against
/// a cached copy: when the metadata calls are throttled at commit, writing
/// back the value someone else replaced must not succeed without a
/// version (put it, or fail the close).
#[test]
fn a_write_back_while_metadata_is_throttled_is_not_judged_on_the_cache() {
    let r = root("r22-thrback");
    let p = format!("{r}/cfg");
    put_param(&p, "mine", ParameterType::SecureString);
    let (proxy, m) = mount(&r, &[]);
    let cur = m.p(&format!("{}/current", &p[1..]));
    assert_eq!(std::fs::read_to_string(&cur).unwrap(), "mine");
    put_param(&p, "theirs", ParameterType::SecureString);
    let throttled = Fault::Error {
        status: 400,
        code: "ThrottlingException",
    };
    for op in ["DescribeParameters", "GetParameterHistory", "GetParameter"] {
        proxy.fault(op, None, throttled.clone(), 1000);
    }
    let closed = replace_file(&cur, b"mine");
    let h = history(&p);
    let latest = h.last().map(|(_, v)| v.clone());
    assert!(
        closed.is_err() || latest.as_deref() == Some("mine"),
        "the close said {closed:?}, Parameter Store holds {h:?}"
    );
}

/// `--prefix` exposes only parameters under it: a lookup by path of a
/// parameter outside the prefix is ENOENT, not a direct read.
#[test]
fn a_lookup_outside_the_prefix_is_enoent() {
    let inside = root("r22-in");
    let outside = root("r22-out");
    put_param(&format!("{inside}/a"), "in", ParameterType::String);
    put_param(
        &format!("{outside}/b"),
        "OUTSIDE",
        ParameterType::SecureString,
    );
    let (proxy, m) = mount(&inside, &[]);
    let got = m.read(&format!("{}/b/current", &outside[1..]));
    assert!(got.is_err(), "read outside the prefix: {got:?}");
    assert_eq!(decrypting_reads(&proxy), 0);
}

/// A child parameter named like a view directory (`/app/stages`,
/// `/app/json`) beside the parameter `/app`: the parameter's own views win,
/// and the child's files do not appear inside them.
#[test]
fn child_parameters_named_like_views_do_not_mix_into_them() {
    let r = root("r22-views");
    put_param(&format!("{r}/app"), r#"{"k":"v"}"#, ParameterType::String);
    put_param(
        &format!("{r}/app/stages"),
        "child-stages",
        ParameterType::String,
    );
    put_param(
        &format!("{r}/app/json"),
        "child-json",
        ParameterType::String,
    );
    let (_proxy, m) = mount(&r, &[]);
    let app = m.p(&format!("{}/app", &r[1..]));
    assert_eq!(std::fs::read_to_string(app.join("json/k")).unwrap(), "v");
    let stages = ls(&app.join("stages"));
    let json = ls(&app.join("json"));
    assert!(!stages.contains(&"current".to_string()), "{stages:?}");
    assert_eq!(json, ["k"]);
}

/// A hung metadata call (either of revalidation's two) never holds a
/// cached value hostage: after the TTL, reads answer within about a second.
#[test]
fn a_hung_revalidation_call_serves_the_cached_value_promptly() {
    let r = root("r22-hung");
    let p = format!("{r}/cfg");
    put_param(&p, "cached", ParameterType::SecureString);
    let (proxy, m) = mount(&r, &["--ttl", "1"]);
    let cur = m.p(&format!("{}/current", &p[1..]));
    assert_eq!(std::fs::read_to_string(&cur).unwrap(), "cached");
    for op in ["GetParameterHistory", "DescribeParameters"] {
        proxy.fault(op, None, Fault::Delay(Duration::from_secs(8)), 100);
        std::thread::sleep(Duration::from_millis(1500));
        let t = std::time::Instant::now();
        let got = std::fs::read_to_string(&cur);
        let took = t.elapsed();
        assert_eq!(
            got.map_err(|e| errno_of(&e)),
            Ok("cached".to_string()),
            "{op}"
        );
        assert!(
            took < Duration::from_millis(2500),
            "{op} hung: read took {took:?}"
        );
        proxy.clear_faults();
    }
}

/// An append starts from the latest version at open time, not from the
/// cached copy (within the TTL, after an external PutParameter).
#[test]
fn an_append_builds_on_the_latest_version_not_the_cache() {
    let r = root("r22-append");
    let p = format!("{r}/cfg");
    put_param(&p, "abc", ParameterType::StringList);
    let (_proxy, m) = mount(&r, &[]);
    let cur = m.p(&format!("{}/current", &p[1..]));
    assert_eq!(std::fs::read_to_string(&cur).unwrap(), "abc");
    put_param(&p, "xyz", ParameterType::StringList);
    write_file(&cur, b",1", libc::O_WRONLY | libc::O_APPEND).unwrap();
    let h = history(&p);
    assert_eq!(h.last().map(|(_, v)| v.as_str()), Some("xyz,1"), "{h:?}");
}

/// The version a write made is cached with its identity (number and date,
/// since numbers start again when a parameter is created anew): reading
/// it back, and revalidating it after the TTL, decrypts nothing.
#[test]
fn a_written_version_is_revalidated_without_decrypting() {
    let r = root("r22-wrote");
    let p = format!("{r}/cfg");
    put_param(&p, "before", ParameterType::SecureString);
    let (proxy, m) = mount(&r, &["--ttl", "1"]);
    let cur = m.p(&format!("{}/current", &p[1..]));
    assert_eq!(std::fs::read_to_string(&cur).unwrap(), "before");
    replace_file(&cur, b"after").unwrap();
    let reads = decrypting_reads(&proxy);
    let describes = proxy.count("DescribeParameters");
    assert_eq!(std::fs::read_to_string(&cur).unwrap(), "after");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(wait_until(Duration::from_secs(5), || {
        assert_eq!(std::fs::read_to_string(&cur).unwrap(), "after");
        proxy.count("DescribeParameters") > describes
    }));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(std::fs::read_to_string(&cur).unwrap(), "after");
    assert_eq!(decrypting_reads(&proxy), reads, "{}", m.log_text());
}
