use super::*;

fn rules(text: &str) -> std::result::Result<AccessRules, String> {
    #[derive(serde::Deserialize)]
    struct F {
        access: Vec<AccessSpec>,
    }
    let f: F = toml::from_str(text).map_err(|e| e.to_string())?;
    AccessRules::build(&f.access)
}

fn proc(exe: &str, unit: Option<&str>, gid: u32, groups: &[u32]) -> ProcInfo {
    ProcInfo {
        tgid: 42,
        exe: Some(exe.into()),
        unit: unit.map(str::to_string),
        gid,
        groups: groups.to_vec(),
    }
}

#[test]
fn a_caller_must_match_every_condition_of_one_rule() {
    let r = rules(
        r#"
        [[access]]
        pattern = "prod/tls/*"
        unit = "nginx.service"
        exe = ["/usr/sbin/nginx", "/opt/nginx/*"]
        [[access]]
        pattern = "prod/tls/*"
        user = 0
        group = [4242]
        "#,
    )
    .unwrap();
    let nginx = proc("/usr/sbin/nginx", Some("nginx.service"), 33, &[]);
    assert!(r.allows("prod/tls/key", 33, &nginx));
    let other_unit = proc("/usr/sbin/nginx", Some("cron.service"), 33, &[]);
    assert!(!r.allows("prod/tls/key", 33, &other_unit));
    let other_exe = proc("/bin/cat", Some("nginx.service"), 33, &[]);
    assert!(!r.allows("prod/tls/key", 33, &other_exe));
    let no_unit = proc("/opt/nginx/nginx", None, 33, &[]);
    assert!(!r.allows("prod/tls/key", 33, &no_unit));
    // Root alone is not enough for the second rule: group 4242 too.
    let root = proc("/bin/cat", None, 0, &[]);
    assert!(!r.allows("prod/tls/key", 0, &root));
    let root_in_group = proc("/bin/cat", None, 0, &[4242]);
    assert!(r.allows("prod/tls/key", 0, &root_in_group));
    // A secret no rule names is left to file modes.
    assert!(r.allows("prod/db", 33, &other_exe));
    // The glob does not cross '/'.
    assert!(r.allows("prod/tls/a/b", 33, &other_exe));
}

#[test]
fn a_rule_that_names_no_caller_or_a_bad_glob_is_refused() {
    let e = rules("[[access]]\npattern = \"a\"\n").unwrap_err();
    assert!(
        e.contains("access rule 1 (pattern 'a'): names no caller"),
        "{e}"
    );
    let e = rules("[[access]]\npattern = \"a\"\nunit = \"[\"\n").unwrap_err();
    assert!(e.contains("unit: '[' is not a glob"), "{e}");
    let e = rules("[[access]]\npattern = \"a\"\nuser = \"no-such-user-xyz\"\n").unwrap_err();
    assert!(e.contains("user:"), "{e}");
    let e = rules("[[access]]\npattern = \"a\"\nunits = \"x\"\n").unwrap_err();
    assert!(e.contains("unknown field `units`"), "{e}");
}

#[tokio::test]
async fn a_caller_that_cannot_be_inspected_is_refused() {
    let r = rules("[[access]]\npattern = \"s\"\nuser = 0\n").unwrap();
    let a = Access::new(r, None);
    let stats = Stats::default();
    let t = || Target {
        file: "s/current",
        secrets: &[],
    };
    let secrets = ["s".to_string()];
    let t2 = Target {
        file: "s/current",
        secrets: &secrets,
    };
    assert!(
        a.check_open(t(), Caller { pid: 0, uid: 0 }, &stats)
            .await
            .is_ok()
    );
    // This process, as root: allowed.
    let me = Caller {
        pid: std::process::id(),
        uid: 0,
    };
    assert!(a.check_open(Target { ..t2 }, me, &stats).await.is_ok());
    // A pid that is gone: refused, never allowed.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let gone = Caller { pid, uid: 0 };
    let t3 = Target {
        file: "s/current",
        secrets: &secrets,
    };
    assert!(matches!(
        a.check_open(t3, gone, &stats).await,
        Err(Error::RuleRefused)
    ));
    assert_eq!(stats.access_denials(), 1);
}

#[tokio::test]
async fn hidden_secrets_are_listed_only_to_allowed_callers() {
    let r = rules("[[access]]\npattern = \"s*\"\nuser = 4242\nhide = true\n").unwrap();
    let a = Access::new(r, None);
    let me = Caller {
        pid: std::process::id(),
        uid: 0,
    };
    let names = vec!["s1".to_string(), "t".to_string()];
    assert_eq!(a.listable(names.clone(), me).await, vec!["t".to_string()]);
    let them = Caller {
        pid: std::process::id(),
        uid: 4242,
    };
    assert_eq!(a.listable(names.clone(), them).await, names);
}

#[test]
fn rules_on_a_read_only_mount_started_without_them_need_a_restart() {
    let none = Access::default();
    assert!(!none.open_mode());
    let r = rules("[[access]]\npattern = \"s\"\nuser = 0\n").unwrap();
    assert!(none.set_rules(r.clone(), true).is_err());
    assert!(none.set_rules(r.clone(), false).is_ok());
    let with = Access::new(r.clone(), None);
    assert!(with.open_mode());
    assert!(with.set_rules(AccessRules::default(), true).is_ok());
    assert!(with.set_rules(r, true).is_ok());
}

/// A process inspected while it ran a wrapper (a shell), then exec'd the
/// allowed program: the cache (per pid and start time, which exec keeps)
/// still names the shell, and the open is allowed on a second look.
#[tokio::test]
async fn an_allowed_program_execd_after_its_wrapper_was_inspected_is_allowed() {
    use std::io::Write;
    let sleep = std::fs::canonicalize("/bin/sleep").unwrap();
    let text = format!(
        "[[access]]\npattern = \"s\"\nexe = \"{}\"\n",
        sleep.display()
    );
    let a = Access::new(rules(&text).unwrap(), None);
    let mut child = std::process::Command::new("/bin/sh")
        .args(["-c", "read _ && exec /bin/sleep 10"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let caller = Caller {
        pid: child.id(),
        uid: 0,
    };
    let secrets = ["s".to_string()];
    let t = || Target {
        file: "s/current",
        secrets: &secrets,
    };
    let stats = Stats::default();
    // The shell: refused, and held in the cache.
    assert!(a.check_open(t(), caller, &stats).await.is_err());
    let shell = a.inspector.inspect(caller.pid).await.unwrap();
    assert_ne!(shell.exe.as_deref(), sleep.to_str());
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let exe = format!("/proc/{}/exe", caller.pid);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::fs::read_link(&exe).ok() != Some(sleep.clone()) {
        assert!(std::time::Instant::now() < deadline, "sleep never ran");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let held = a.inspector.inspect(caller.pid).await.unwrap();
    assert!(
        Arc::ptr_eq(&held, &shell),
        "the cache still names the shell"
    );
    let opened = a.check_open(t(), caller, &stats).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(opened.is_ok(), "{opened:?}");
    assert_eq!(stats.access_denials(), 1);
}
