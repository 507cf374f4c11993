//! Rendered files (templates) on real mounts against moto: declared in the
//! config file, read at `.secretsfs/rendered/<name>`, re-rendered when a
//! secret they use changes, EIO with one log line naming the template, the
//! line and the missing name when they fail, never a value in the log.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use crate::common::*;

/// A config file with `[[template]]` tables, and their sources, in a temp dir.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    /// `templates`: (name, source text, extra TOML lines for the table).
    fn new(templates: &[(&str, &str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut toml = String::new();
        for (name, text, extra) in templates {
            std::fs::write(dir.path().join(format!("{name}.j2")), text).unwrap();
            toml.push_str(&format!(
                "[[template]]\nname = \"{name}\"\nsource = \"{name}.j2\"\n{extra}\n\n"
            ));
        }
        std::fs::write(dir.path().join("secretsfs.toml"), toml).unwrap();
        Self { dir }
    }

    fn config(&self) -> String {
        self.dir
            .path()
            .join("secretsfs.toml")
            .to_str()
            .unwrap()
            .to_string()
    }

    fn source(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.j2"))
    }

    fn mount(&self) -> MountBuilder {
        Mount::aws().args(["--config", &self.config()])
    }
}

fn rendered(name: &str) -> String {
    format!(".secretsfs/rendered/{name}")
}

fn read_errno(m: &Mount, rel: &str) -> i32 {
    errno_of(&m.read(rel).expect_err("the read should fail"))
}

fn pgpass_source(db: &str, api: &str) -> String {
    format!(
        "{{% set db = secret(\"{db}\") | from_json %}}\
         {{{{ db.host }}}}:{{{{ db.port }}}}:*:{{{{ db.username }}}}:{{{{ db.password }}}}\n\
         # api token: {{{{ secret(\"{api}\") }}}}\n"
    )
}

const DB_JSON: &str =
    r#"{"username":"app","password":"Pgp4ss-S3cr3t-a1","host":"db.internal","port":5432}"#;

#[test]
fn a_template_using_two_secrets_renders_a_pgpass_file() {
    let (db, api) = (unique("tp-db"), unique("tp-api"));
    create(&db, DB_JSON);
    create(&api, "Ap1-T0ken-b2");
    let setup = Setup::new(&[("pgpass", &pgpass_source(&db, &api), "")]);
    let m = setup.mount().start();
    let want = "db.internal:5432:*:app:Pgp4ss-S3cr3t-a1\n# api token: Ap1-T0ken-b2\n";
    assert_eq!(m.read_string(&rendered("pgpass")), want);
    let meta = std::fs::metadata(m.p(&rendered("pgpass"))).unwrap();
    assert_eq!(
        meta.len(),
        want.len() as u64,
        "stat's size is the content's"
    );
    assert_eq!(meta.permissions().mode() & 0o7777, 0o400, "default mode");
    assert_eq!(
        ls(&m.p(".secretsfs")),
        ["metrics", "refresh", "rendered", "stats"]
    );
    assert_eq!(ls(&m.p(".secretsfs/rendered")), ["pgpass"]);
    let e = write_file(&m.p(&rendered("pgpass")), b"x", libc::O_WRONLY).unwrap_err();
    assert!(e == libc::EACCES || e == libc::EPERM, "read-only: {e}");
    assert_eq!(m.stats()["renders"], 1, "one render for all those reads");
}

#[test]
fn a_template_follows_an_external_change_after_the_ttl() {
    let (db, api) = (unique("tp-chg-db"), unique("tp-chg-api"));
    create(&db, DB_JSON);
    create(&api, "tok-1");
    let setup = Setup::new(&[("pgpass", &pgpass_source(&db, &api), "")]);
    let m = setup.mount().args(["--ttl", "1"]).start();
    let rel = rendered("pgpass");
    assert!(m.read_string(&rel).ends_with("# api token: tok-1\n"));
    // Held open across the change: the handle keeps the bytes it opened.
    let held = std::fs::File::open(m.p(&rel)).unwrap();
    put(&api, "tok-2-and-longer");
    let want = "db.internal:5432:*:app:Pgp4ss-S3cr3t-a1\n# api token: tok-2-and-longer\n";
    assert!(
        wait_until(Duration::from_secs(10), || m.read_string(&rel) == want),
        "the new value shows: {}",
        m.read_string(&rel)
    );
    assert_eq!(
        std::fs::metadata(m.p(&rel)).unwrap().len(),
        want.len() as u64,
        "stat's size follows"
    );
    let old = read_all(&held);
    assert!(String::from_utf8(old).unwrap().ends_with("tok-1\n"));
}

#[test]
fn a_key_removed_externally_gives_eio_and_the_log_names_template_line_and_key() {
    let db = unique("tp-key");
    create(&db, DB_JSON);
    let src = format!(
        "# pgpass\n{{% set db = secret(\"{db}\") | from_json %}}\n{{{{ db.host }}}}:*:*:{{{{ db.username }}}}:{{{{ db.password }}}}\n"
    );
    let setup = Setup::new(&[("pgpass", &src, "")]);
    let m = setup.mount().args(["--ttl", "1"]).start();
    let rel = rendered("pgpass");
    assert!(m.read_string(&rel).contains("Pgp4ss-S3cr3t-a1"));
    put(
        &db,
        r#"{"username":"app","host":"db.internal","port":5432}"#,
    );
    assert!(
        wait_until(Duration::from_secs(10), || m.read(&rel).is_err()),
        "the render fails once the key is gone"
    );
    assert_eq!(read_errno(&m, &rel), libc::EIO);
    assert_eq!(std::fs::metadata(m.p(&rel)).unwrap().len(), 0);
    let log = m.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("template failed to render"))
        .collect();
    assert_eq!(lines.len(), 1, "one line per failing render: {log}");
    let line = lines[0];
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("pgpass"), "names the template: {line}");
    assert!(line.contains("line 3"), "names the line: {line}");
    assert!(line.contains("password"), "names the key: {line}");
    assert!(line.contains(&db), "names the secret: {line}");
    assert_eq!(m.stats()["render_failures"], 1);
    // The key comes back: so does the file.
    put(&db, DB_JSON);
    assert!(
        wait_until(Duration::from_secs(10), || m.read(&rel).is_ok()),
        "the file renders again"
    );
}

#[test]
fn a_missing_secret_gives_eio_naming_the_secret() {
    let ghost = unique("tp-ghost");
    let setup = Setup::new(&[("cfg", &format!("x\ny={{{{ secret(\"{ghost}\") }}}}\n"), "")]);
    let m = setup.mount().start();
    let rel = rendered("cfg");
    assert_eq!(read_errno(&m, &rel), libc::EIO);
    assert_eq!(read_errno(&m, &rel), libc::EIO);
    let log = m.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("template failed to render"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains(&ghost) && lines[0].contains("line 2") && lines[0].contains("cfg"),
        "{}",
        lines[0]
    );
}

#[test]
fn a_syntax_error_gives_eio_and_is_reported_at_start_with_its_line() {
    let s = unique("tp-syn");
    create(&s, "v");
    let src = format!("ok\nok\n{{{{ secret(\"{s}\") \n");
    let setup = Setup::new(&[("broken", &src, ""), ("fine", "static\n", "")]);
    let m = setup.mount().start();
    assert_eq!(read_errno(&m, &rendered("broken")), libc::EIO);
    assert_eq!(m.read_string(&rendered("fine")), "static\n");
    let log = m.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("syntax error"))
        .unwrap_or_else(|| panic!("no syntax error logged: {log}"));
    assert!(line.contains("broken") && line.contains("line 3"), "{line}");
}

#[test]
fn stage_awsprevious_reads_the_previous_version() {
    let s = unique("tp-prev");
    create(&s, "old-pass");
    put(&s, "new-pass");
    let src = format!(
        "current={{{{ secret(\"{s}\") }}}} previous={{{{ secret(\"{s}\", stage=\"AWSPREVIOUS\") }}}}"
    );
    let setup = Setup::new(&[("rot", &src, "")]);
    let m = setup.mount().start();
    assert_eq!(
        m.read_string(&rendered("rot")),
        "current=new-pass previous=old-pass"
    );
}

#[test]
fn an_nginx_key_and_certificate_pair_render_from_one_json_secret() {
    let s = unique("tp-tls");
    let doc = serde_json::json!({
        "key": "-----BEGIN PRIVATE KEY-----\nK3y\n-----END PRIVATE KEY-----\n",
        "cert": "-----BEGIN CERTIFICATE-----\nC3rt\n-----END CERTIFICATE-----\n",
    });
    create(&s, &doc.to_string());
    let setup = Setup::new(&[
        ("tls.key", &format!("{{{{ json(\"{s}\", \"key\") }}}}"), ""),
        (
            "tls.crt",
            &format!("{{{{ (secret(\"{s}\") | from_json).cert }}}}"),
            "mode = \"0444\"",
        ),
    ]);
    let m = setup.mount().start();
    assert_eq!(
        m.read_string(&rendered("tls.key")),
        doc["key"].as_str().unwrap()
    );
    assert_eq!(
        m.read_string(&rendered("tls.crt")),
        doc["cert"].as_str().unwrap()
    );
}

#[test]
fn neither_a_rendered_byte_nor_a_secret_value_reaches_a_trace_log() {
    let (db, api) = (unique("tp-trace-db"), unique("tp-trace-api"));
    let secret_pw = "Tr4ce-Pw-VALUE-31c9";
    let token = "Tr4ce-Tok-VALUE-d07e";
    create(
        &db,
        &serde_json::json!({"username": "Tr4ce-User-5b", "password": secret_pw}).to_string(),
    );
    create(&api, token);
    let ok = format!(
        "{{% set db = secret(\"{db}\") | from_json %}}LITERAL-{{{{ db.username }}}}-{{{{ db.password }}}}-{{{{ secret(\"{api}\") }}}}"
    );
    // Failing ones too: their errors must not carry the values either.
    let bad_key = format!("{{{{ (secret(\"{db}\") | from_json).nope }}}}");
    let bad_op = format!("{{{{ secret(\"{api}\") + 1 }}}}");
    let bad_json = format!("{{{{ secret(\"{api}\") | from_json }}}}");
    let computed = format!("{{{{ secret(secret(\"{api}\")) }}}}");
    let setup = Setup::new(&[
        ("ok", &ok, ""),
        ("bad_key", &bad_key, ""),
        ("bad_op", &bad_op, ""),
        ("bad_json", &bad_json, ""),
        ("computed", &computed, ""),
    ]);
    let mut m = setup.mount().env("RUST_LOG", "trace").start();
    let out = m.read_string(&rendered("ok"));
    assert!(out.contains(secret_pw) && out.contains(token), "{out}");
    for bad in ["bad_key", "bad_op", "bad_json", "computed"] {
        assert_eq!(read_errno(&m, &rendered(bad)), libc::EIO, "{bad}");
    }
    m.terminate();
    let log = m.log_text();
    assert!(
        log.len() > 10_000,
        "trace logging was on: {} bytes",
        log.len()
    );
    assert!(log.contains(&db), "the log names the secret");
    for v in [secret_pw, token, "Tr4ce-User-5b", "LITERAL-Tr4ce", &out] {
        assert!(!log.contains(v), "{v:?} leaked into the log");
    }
    let failures = log
        .lines()
        .filter(|l| l.contains("template failed to render"))
        .count();
    assert_eq!(failures, 4, "{log}");
}

#[test]
fn sighup_rereads_a_changed_template_source() {
    let s = unique("tp-hup");
    create(&s, "v1");
    let setup = Setup::new(&[("conf", &format!("a={{{{ secret(\"{s}\") }}}}\n"), "")]);
    let m = setup.mount().start();
    let rel = rendered("conf");
    assert_eq!(m.read_string(&rel), "a=v1\n");
    std::fs::write(
        setup.source("conf"),
        format!("b={{{{ secret(\"{s}\") }}}} and more\n"),
    )
    .unwrap();
    assert_eq!(m.read_string(&rel), "a=v1\n", "sources are read at start");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(m.pid() as i32, libc::SIGHUP) };
    assert!(
        wait_until(Duration::from_secs(10), || m.read_string(&rel)
            == "b=v1 and more\n"),
        "the new source renders: {}",
        m.log_text()
    );
    // A config that no longer parses keeps the templates there are.
    std::fs::write(setup.config(), "[[template]]\nname = \"conf\"\n").unwrap();
    unsafe { libc::kill(m.pid() as i32, libc::SIGHUP) };
    assert!(
        wait_until(Duration::from_secs(10), || m
            .log_text()
            .contains("templates unchanged")),
        "{}",
        m.log_text()
    );
    assert_eq!(m.read_string(&rel), "b=v1 and more\n");
    assert!(m.is_mounted(), "SIGHUP does not stop the daemon");
}

#[test]
fn owner_group_and_mode_from_the_config_show_in_stat_and_let_that_user_read() {
    let s = unique("tp-own");
    create(&s, "for-nobody");
    let setup = Setup::new(&[(
        "app.conf",
        &format!("{{{{ secret(\"{s}\") }}}}"),
        "owner = \"nobody\"\ngroup = 65534\nmode = \"0440\"",
    )]);
    let m = setup.mount().arg("--allow-other").start();
    let rel = rendered("app.conf");
    let meta = std::fs::metadata(m.p(&rel)).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    assert_eq!(meta.permissions().mode() & 0o7777, 0o440);
    for dir in [".secretsfs", ".secretsfs/rendered"] {
        let d = std::fs::metadata(m.p(dir)).unwrap();
        assert_eq!(d.permissions().mode() & 0o7777, 0o711, "{dir}");
    }
    let as_nobody = |args: &[&str]| {
        std::process::Command::new(args[0])
            .args(&args[1..])
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    let path = m.p(&rel);
    let out = as_nobody(&["cat", path.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"for-nobody");
    // Others may pass through the root, not list it nor read the stats.
    let root = as_nobody(&["ls", m.path.to_str().unwrap()]);
    assert!(!root.status.success(), "{root:?}");
    let stats = m.p(".secretsfs/stats");
    assert!(
        !as_nobody(&["cat", stats.to_str().unwrap()])
            .status
            .success()
    );
}

#[test]
fn a_secret_named_under_dot_secretsfs_is_not_listed_nor_looked_up() {
    let tag = unique("tp-res");
    let hidden = format!(".secretsfs/{tag}");
    create(&hidden, "shadow");
    let proxy = Proxy::start();
    let setup = Setup::new(&[("t", "static", "")]);
    let m = setup.mount().endpoint(proxy.url()).start();
    let root = ls(&m.path);
    assert!(!root.iter().any(|n| n == ".secretsfs"), "{root:?}");
    assert_eq!(
        ls(&m.p(".secretsfs")),
        ["metrics", "refresh", "rendered", "stats"]
    );
    let before = proxy.total();
    let e = std::fs::metadata(m.p(&hidden)).unwrap_err();
    assert_eq!(errno_of(&e), libc::ENOENT);
    assert_eq!(proxy.total(), before, "no backend call for a reserved name");
    let log = m.log_text();
    let warned = log
        .lines()
        .filter(|l| l.contains("reserved .secretsfs") && l.contains(&tag))
        .count();
    assert_eq!(warned, 1, "{log}");
}

#[test]
fn a_read_only_mount_follows_a_change_too() {
    let s = unique("tp-ro");
    create(&s, "first");
    let setup = Setup::new(&[("ro", &format!("<{{{{ secret(\"{s}\") }}}}>"), "")]);
    let m = setup.mount().args(["--ttl", "1", "--read-only"]).start();
    let rel = rendered("ro");
    for _ in 0..20 {
        assert_eq!(m.read_string(&rel), "<first>");
    }
    put(&s, "second, longer");
    assert!(
        wait_until(Duration::from_secs(10), || m.read_string(&rel)
            == "<second, longer>"),
        "{}",
        m.read_string(&rel)
    );
    put(&s, "3rd");
    assert!(wait_until(Duration::from_secs(10), || m.read_string(&rel) == "<3rd>"));
}

/// The figures the README gives: what a template costs in API calls.
#[test]
fn a_template_costs_one_get_per_secret_cold_then_one_describe_per_secret_per_ttl() {
    let (db, api) = (unique("tp-cost-db"), unique("tp-cost-api"));
    create(&db, DB_JSON);
    create(&api, "tok-1");
    let setup = Setup::new(&[("pgpass", &pgpass_source(&db, &api), "")]);
    let proxy = Proxy::start();
    let m = setup
        .mount()
        .endpoint(proxy.url())
        .args(["--secret", &db, "--secret", &api, "--ttl", "2"])
        .start();
    let rel = rendered("pgpass");
    let calls = |op: &str| proxy.count_for(op, Some(&db)) + proxy.count_for(op, Some(&api));
    let (g0, d0) = (calls("GetSecretValue"), calls("DescribeSecret"));
    assert!(m.read_string(&rel).contains("tok-1"));
    assert_eq!(
        calls("GetSecretValue") - g0,
        2,
        "cold: one GetSecretValue per secret"
    );
    for _ in 0..20 {
        m.read_string(&rel);
        std::fs::metadata(m.p(&rel)).unwrap();
    }
    assert_eq!(calls("GetSecretValue") - g0, 2, "within the TTL: no call");
    assert_eq!(calls("DescribeSecret"), d0, "within the TTL: no call");
    std::thread::sleep(Duration::from_millis(2600));
    m.read_string(&rel);
    assert_eq!(
        calls("DescribeSecret") - d0,
        2,
        "unchanged: one DescribeSecret per secret"
    );
    assert_eq!(
        calls("GetSecretValue") - g0,
        2,
        "unchanged: no GetSecretValue"
    );
    put(&api, "tok-2");
    std::thread::sleep(Duration::from_millis(2600));
    assert!(m.read_string(&rel).contains("tok-2"));
    assert_eq!(
        calls("DescribeSecret") - d0,
        4,
        "one DescribeSecret per secret"
    );
    assert_eq!(
        calls("GetSecretValue") - g0,
        3,
        "and GetSecretValue for the one that moved"
    );
}

// ---- Probes from the review of rendered files (were tests/adversarial_templates.rs) ----

/// Reads `path` in a thread; None if it did not return within `limit`.
fn read_bounded(path: PathBuf, limit: Duration) -> Option<std::io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::read(path));
    });
    rx.recv_timeout(limit).ok()
}

#[test]
fn a_template_that_loops_forever_does_not_hang_its_readers() {
    let spin = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x";
    let setup = Setup::new(&[("spin", spin, "")]);
    let mut m = setup.mount().start();
    let r = read_bounded(m.p(&rendered("spin")), Duration::from_secs(20));
    m.crash();
    assert!(
        r.is_some(),
        "a read of a template with a 10^10-iteration loop did not return in 20 s"
    );
}

#[test]
fn two_looping_templates_do_not_stall_reads_of_other_secrets() {
    let spin = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x";
    let name = unique("rv-other");
    create(&name, "v1");
    let setup = Setup::new(&[("s1", spin, ""), ("s2", spin, "")]);
    let mut m = setup.mount().args(["--secret", &name]).start();
    let _a = read_bounded(m.p(&rendered("s1")), Duration::from_millis(500));
    let _b = read_bounded(m.p(&rendered("s2")), Duration::from_millis(500));
    let r = read_bounded(m.p(&format!("{name}/current")), Duration::from_secs(10));
    m.crash();
    assert!(
        r.is_some(),
        "reading another secret's current hung while two templates spun"
    );
}

#[test]
fn a_template_that_doubles_a_string_does_not_kill_the_daemon() {
    let mut src = String::from("{% set s = \"0123456789abcdef\" %}");
    for _ in 0..36 {
        src.push_str("{% set s = s ~ s %}");
    }
    src.push_str("{{ s | length }}");
    let setup = Setup::new(&[("big", &src, "")]);
    // An address-space limit so that the probe cannot OOM the machine.
    let mut m = setup
        .mount()
        .wrap(["prlimit", "--as=2000000000", "--"])
        .start();
    let r = read_bounded(m.p(&rendered("big")), Duration::from_secs(60));
    let alive = m.is_mounted() && std::fs::read_dir(&m.path).is_ok();
    let log = m.log_text();
    m.crash();
    assert!(r.is_some(), "the read did not return");
    assert!(
        alive,
        "the daemon died: {}",
        &log[log.len().saturating_sub(600)..]
    );
}

/// Nine secrets each passed through a common string filter: a valid
/// template that must render.
#[test]
fn a_template_with_nine_filtered_secrets_renders() {
    let names: Vec<String> = (0..9).map(|i| unique(&format!("rv-nine{i}"))).collect();
    for (i, n) in names.iter().enumerate() {
        create(n, &format!(" v{i} "));
    }
    for filter in ["trim", "upper", "int"] {
        let src: String = names
            .iter()
            .map(|n| {
                if filter == "int" {
                    format!("{{{{ (secret(\"{n}\") | trim | int) + 1 }}}};")
                } else {
                    format!("{{{{ secret(\"{n}\") | {filter} }}}};")
                }
            })
            .collect();
        let setup = Setup::new(&[("nine", &src, "")]);
        let m = setup.mount().start();
        let r = m.read(&rendered("nine"));
        let log = m.log_text();
        assert!(r.is_ok() || filter == "int", "filter {filter}: {r:?} {log}");
        if filter == "int" {
            // Values are not numbers: EIO expected; but the cause must not be "rounds".
            assert!(!log.contains("rounds of fetching"), "filter int: {log}");
        }
        assert!(
            !log.contains("rounds of fetching"),
            "filter {filter}: {log}"
        );
    }
}

/// A key computed from a value that happens to be a substring of the
/// source text is logged, in quotes, as the missing key.
#[test]
fn a_missing_key_computed_from_a_value_is_not_logged() {
    let keyname = unique("rv-keyname");
    let cfg = unique("rv-cfg");
    // The value is a word that also occurs in the template text.
    create(&keyname, "hunter");
    create(&cfg, r#"{"a":1}"#);
    let src = format!(
        "# hunter2 style passwords are banned\n{{{{ (secret(\"{cfg}\") | from_json)[secret(\"{keyname}\")] }}}}\n"
    );
    let setup = Setup::new(&[("leak", &src, "")]);
    let m = setup.mount().env("RUST_LOG", "trace").start();
    assert!(m.read(&rendered("leak")).is_err());
    let log = m.log_text();
    let hits: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\\\"hunter\\\"") || l.contains("\"hunter\""))
        .collect();
    assert!(
        hits.is_empty(),
        "the value 'hunter' is in the log: {hits:?}"
    );
}

/// AWSPREVIOUS through a template after this mount wrote `current`: the
/// old AWSCURRENT is now AWSPREVIOUS (coherence), as `previous` shows.
#[test]
fn a_template_reading_awsprevious_follows_a_write_through_this_mount() {
    let name = unique("rv-prev");
    create(&name, "v1");
    put(&name, "v2");
    let src = format!("{{{{ secret(\"{name}\", stage=\"AWSPREVIOUS\") }}}}");
    let setup = Setup::new(&[("prev", &src, "")]);
    let m = setup.mount().args(["--ttl", "300"]).start();
    assert_eq!(m.read_string(&rendered("prev")), "v1");
    assert_eq!(m.read_string(&format!("{name}/previous")), "v1");
    std::fs::write(m.p(&format!("{name}/current")), "v3").unwrap();
    assert_eq!(
        stage(&name, "AWSPREVIOUS").unwrap().1.as_deref(),
        Some("v2")
    );
    assert_eq!(
        m.read_string(&format!("{name}/previous")),
        "v2",
        "previous file"
    );
    assert_eq!(m.read_string(&rendered("prev")), "v2", "rendered");
}

/// Nine secrets each used in arithmetic: a valid template must render.
#[test]
fn a_template_doing_arithmetic_on_nine_secrets_renders() {
    let names: Vec<String> = (0..9).map(|i| unique(&format!("rv-arith{i}"))).collect();
    for n in &names {
        create(n, r#"{"port":5}"#);
    }
    let src: String = names
        .iter()
        .map(|n| format!("{{{{ (secret(\"{n}\") | from_json).port + 1 }}}};"))
        .collect();
    let setup = Setup::new(&[("arith", &src, "")]);
    let m = setup.mount().start();
    let r = m.read(&rendered("arith"));
    assert!(r.is_ok(), "{r:?}: {}", m.log_text());
    assert_eq!(String::from_utf8(r.unwrap()).unwrap(), "6;".repeat(9));
}

/// Hostile templates at trace level: no value marker in the log.
#[test]
fn hostile_templates_never_log_a_value_at_trace() {
    let a = unique("rv-hostile");
    let j = unique("rv-hostilej");
    create(&a, "MARKERqzx7");
    create(&j, r#"{"k":"JMARKqzx8","n":[1,2]}"#);
    let cases = [
        format!("{{{{ secret(\"{a}\") | int }}}}"),
        format!("{{{{ secret(\"{a}\")[9999] }}}}"),
        format!("{{{{ secret(\"{a}\").foo }}}}"),
        format!("{{{{ secret(\"{a}\") + 1 }}}}"),
        format!("{{{{ secret(secret(\"{a}\")) }}}}"),
        format!("{{{{ secret(\"{a}\") | from_json }}}}"),
        format!("{{% include secret(\"{a}\") %}}"),
        format!("{{% import secret(\"{a}\") as x %}}"),
        format!("{{{{ range(secret(\"{a}\")) }}}}"),
        format!("{{{{ secret(\"{a}\") | batch(0) }}}}"),
        format!("{{{{ secret(\"{a}\") | slice(0) }}}}"),
        format!("{{{{ (secret(\"{j}\") | from_json).k | int }}}}"),
        format!("{{{{ (secret(\"{j}\") | from_json)[(secret(\"{j}\") | from_json).k] }}}}"),
        format!("{{{{ secret(\"{a}\", stage=secret(\"{a}\")) }}}}"),
        format!("{{{{ json(\"{j}\", secret(\"{a}\")) }}}}"),
        format!("{{{{ (secret(\"{j}\") | from_json).n[99] }}}}"),
        format!("{{{{ secret(\"{a}\") | attr(\"x\") }}}}"),
        format!("{{{{ secret(\"{a}\") is divisibleby(secret(\"{a}\")) }}}}"),
        format!("{{{{ secret(\"{a}\") | round }}}}"),
        format!("{{{{ secret(\"{a}\") | map(attribute=secret(\"{a}\")) | list }}}}"),
        format!("{{{{ {{secret(\"{a}\"): 1}}[secret(\"{a}\") ~ \"x\"] }}}}"),
        format!("{{{{ secret(\"{a}\") | dictsort }}}}"),
        format!("{{{{ secret(\"{a}\")(1) }}}}"),
        format!("{{{{ secret(\"{a}\") | select(secret(\"{a}\")) | list }}}}"),
        format!("{{{{ (secret(\"{j}\") | from_json) | selectattr(\"k\", \"eq\", 1) | list }}}}"),
        format!("{{{{ secret(\"{a}\") | join(1) | int }}}}"),
        format!("{{{{ 1 if secret(\"{a}\") else 2 }}}}{{{{ undefined_thing }}}}"),
        format!("{{% for x in secret(\"{a}\") %}}{{{{ x.y }}}}{{% endfor %}}"),
    ];
    let names: Vec<String> = (0..cases.len()).map(|i| format!("h{i}")).collect();
    let tables: Vec<(&str, &str, &str)> = names
        .iter()
        .zip(&cases)
        .map(|(n, c)| (n.as_str(), c.as_str(), ""))
        .collect();
    let setup = Setup::new(&tables);
    let m = setup.mount().env("RUST_LOG", "trace").start();
    let mut outcomes = Vec::new();
    for (n, c) in names.iter().zip(&cases) {
        let r = read_bounded(m.p(&rendered(n)), Duration::from_secs(10));
        outcomes.push(format!("{c} => {:?}", r.map(|r| r.map(|b| b.len()))));
    }
    let log = m.log_text();
    for marker in ["MARKERqzx7", "JMARKqzx8", "ARKERqz", "qzx"] {
        let hits: Vec<&str> = log.lines().filter(|l| l.contains(marker)).collect();
        assert!(hits.is_empty(), "{marker} in log: {hits:#?}\n{outcomes:#?}");
    }
    assert!(!log.contains("panicked"), "a panic: {log}");
    eprintln!("{outcomes:#?}");
}

/// SIGTERM while a template spins: the daemon must still exit.
#[test]
fn sigterm_while_a_template_spins_exits() {
    let spin = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x";
    let setup = Setup::new(&[("spin", spin, "")]);
    let mut m = setup.mount().start();
    let _r = read_bounded(m.p(&rendered("spin")), Duration::from_secs(1));
    let status = m.terminate();
    assert!(status.success(), "{status}");
}

/// A hung API for one secret a template uses, after the TTL: the read is
/// served stale within about a second, as `current` is.
#[test]
fn a_hung_api_after_the_ttl_does_not_hold_a_render_hostage() {
    let a = unique("rv-hunga");
    let b = unique("rv-hungb");
    create(&a, "A1");
    create(&b, "B1");
    let proxy = crate::common::proxy::Proxy::start();
    let src = format!("{{{{ secret(\"{a}\") }}}}-{{{{ secret(\"{b}\") }}}}");
    let setup = Setup::new(&[("hung", &src, "")]);
    let m = setup
        .mount()
        .endpoint(proxy.url())
        .args(["--secret", &a, "--secret", &b, "--ttl", "1"])
        .start();
    assert_eq!(m.read_string(&rendered("hung")), "A1-B1");
    std::thread::sleep(Duration::from_millis(1500));
    proxy.fault(
        "*",
        Some(&b),
        crate::common::proxy::Fault::Delay(Duration::from_secs(30)),
        1000,
    );
    let t0 = std::time::Instant::now();
    let r = read_bounded(m.p(&rendered("hung")), Duration::from_secs(8));
    let took = t0.elapsed();
    let cur = read_bounded(m.p(&format!("{b}/current")), Duration::from_secs(8));
    proxy.clear_faults();
    assert!(
        matches!(&r, Some(Ok(v)) if v == b"A1-B1"),
        "{r:?} after {took:?}; current: {cur:?}"
    );
}

/// A template naming a secret that does not exist yet; this mount then
/// creates it (mkdir + write current): the next read renders it.
#[test]
fn a_template_follows_a_secret_this_mount_creates() {
    let name = unique("rv-create");
    let src = format!("x={{{{ secret(\"{name}\") }}}}");
    let setup = Setup::new(&[("cr", &src, "")]);
    let m = setup
        .mount()
        .args(["--allow-create", "--ttl", "300"])
        .start();
    assert!(m.read(&rendered("cr")).is_err());
    std::fs::create_dir(m.p(&name)).unwrap();
    std::fs::write(m.p(&format!("{name}/current")), "born").unwrap();
    assert_eq!(current_string(&name), "born");
    assert_eq!(m.read_string(&format!("{name}/current")), "born");
    let r = m.read(&rendered("cr"));
    assert_eq!(
        r.as_deref().ok(),
        Some(&b"x=born"[..]),
        "{r:?}: {}",
        m.log_text()
    );
}

/// One deep-nesting source per mount: which of them crash the daemon at
/// load, and whether a SIGHUP bringing one in kills a running mount.
#[test]
fn a_deeply_nested_source_loaded_on_sighup_does_not_kill_the_mount() {
    let filters = format!("{{{{ 1{} }}}}", "|string".repeat(9300));
    let nested_if = format!(
        "{}x{}",
        "{% if true %}".repeat(3000),
        "{% endif %}".repeat(3000)
    );
    let macro_rec = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}".to_string();
    let mut report = Vec::new();
    for (n, src) in [("fl", &filters), ("i", &nested_if), ("m", &macro_rec)] {
        let setup = Setup::new(&[(n, "ok", "")]);
        let mut m = setup.mount().start();
        assert_eq!(m.read_string(&rendered(n)), "ok");
        std::fs::write(setup.dir.path().join(format!("{n}.j2")), src).unwrap();
        unsafe { libc::kill(m.pid() as i32, libc::SIGHUP) };
        std::thread::sleep(Duration::from_millis(800));
        let r = read_bounded(m.p(&rendered(n)), Duration::from_secs(20));
        let alive = std::fs::read_dir(&m.path).is_ok();
        report.push(format!(
            "{n}: alive={alive} read={:?}",
            r.map(|r| r.map(|b| b.len()))
        ));
        m.crash();
    }
    assert!(
        report.iter().all(|r| r.contains("alive=true")),
        "{report:#?}"
    );
}

/// With --allow-other: a stranger cannot read a rendered file; and after a
/// SIGHUP takes the file away from its owner, the old owner cannot read it.
#[test]
fn ownership_follows_a_sighup_and_strangers_are_locked_out() {
    use std::os::unix::process::CommandExt;
    let s = unique("rv-own");
    create(&s, "for-nobody");
    let src = format!("{{{{ secret(\"{s}\") }}}}");
    let setup = Setup::new(&[(
        "app",
        &src,
        "owner = \"nobody\"\ngroup = 65534\nmode = \"0440\"",
    )]);
    let m = setup
        .mount()
        .args(["--allow-other", "--secret", &s])
        .start();
    let path = m.p(&rendered("app"));
    let cat_as = |uid: u32, gid: u32| {
        std::process::Command::new("cat")
            .arg(&path)
            .uid(uid)
            .gid(gid)
            .output()
            .unwrap()
    };
    assert!(cat_as(65534, 65534).status.success());
    let stranger = cat_as(1234, 1234);
    assert!(!stranger.status.success(), "{stranger:?}");
    let toml = "[[template]]\nname = \"app\"\nsource = \"app.j2\"\n";
    std::fs::write(setup.dir.path().join("secretsfs.toml"), toml).unwrap();
    unsafe { libc::kill(m.pid() as i32, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(800));
    let old_owner = cat_as(65534, 65534);
    assert!(
        !old_owner.status.success(),
        "old owner still reads after SIGHUP: {:?}",
        String::from_utf8_lossy(&old_owner.stdout)
    );
}

/// A write through `json/<key>` of this mount shows in a template at once.
#[test]
fn a_template_follows_a_json_key_write_through_this_mount() {
    let s = unique("rv-jw");
    create(&s, r#"{"user":"u","password":"p1"}"#);
    let src = format!(
        "{{{{ json(\"{s}\", \"password\") }}}}/{{{{ (secret(\"{s}\") | from_json).password }}}}"
    );
    let setup = Setup::new(&[("jw", &src, "")]);
    let m = setup.mount().args(["--secret", &s, "--ttl", "300"]).start();
    assert_eq!(m.read_string(&rendered("jw")), "p1/p1");
    std::fs::write(m.p(&format!("{s}/json/password")), "p2").unwrap();
    assert_eq!(current_string(&s), r#"{"user":"u","password":"p2"}"#);
    assert_eq!(m.read_string(&rendered("jw")), "p2/p2");
}
