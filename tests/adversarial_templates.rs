//! Findings of the adversarial review of rendered files, kept as
//! regression tests: templates that loop, grow or nest without bound, a
//! missing name computed from a value, renders needing many secrets,
//! coherence after this mount's writes, hostile templates at trace level,
//! SIGHUP races and ownership. (A scan of the daemon's memory for an old render was dropped: copies in freed SDK and engine buffers are expected; the README says zeroing is best effort.)

mod common;

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use common::*;

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
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
    fn mount(&self) -> MountBuilder {
        Mount::aws().args(["--config", &self.config()])
    }
}

fn rendered(name: &str) -> String {
    format!(".secretsfs/rendered/{name}")
}

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
    let proxy = common::proxy::Proxy::start();
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
        common::proxy::Fault::Delay(Duration::from_secs(30)),
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

/// For comparison: the same fstat question on `current` (not templates).
#[test]
fn fstat_of_an_open_current_matches_what_it_reads_after_a_write() {
    use std::io::Read;
    let a = unique("rv-fstatcur");
    create(&a, "short");
    let m = Mount::aws().args(["--secret", &a]).start();
    let mut f = std::fs::File::open(m.p(&format!("{a}/current"))).unwrap();
    std::fs::write(m.p(&format!("{a}/current")), "a much longer text").unwrap();
    let fd_size = f.metadata().unwrap().len();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(
        (fd_size, s.as_str()),
        (5, "short"),
        "fstat size vs bytes read"
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
