//! The configuration's tests: the command line, `-o` and the file resolved
//! together into a `Config`.

use clap::Parser;

use super::*;
use crate::fs::TemplateDef;

/// SIGHUP's templates: what `reload` hands to the filesystem.
fn templates_from_file(path: &std::path::Path) -> Result<Vec<TemplateDef>, String> {
    reload(path).map(|r| r.templates)
}

fn parse(args: &[&str]) -> Result<Config, String> {
    let cli = Cli::try_parse_from(std::iter::once("secretsfs").chain(args.iter().copied()))
        .map_err(|e| e.to_string())?;
    cli.into_config()
}

#[test]
fn help_states_the_defaults_that_apply() {
    let cmd = <Cli as clap::CommandFactory>::command();
    let default = |long: &str| {
        let arg = cmd.get_arguments().find(|a| a.get_long() == Some(long));
        let help = arg.and_then(|a| a.get_help()).map(|h| h.to_string());
        let help = help.unwrap_or_else(|| panic!("--{long} has no help"));
        let start = help.find("[default: ").expect(&help) + "[default: ".len();
        help[start..help.len() - 1].to_string()
    };
    let c = parse(&["/mnt"]).unwrap();
    assert_eq!(duration("", &default("ttl")).unwrap(), c.fs.ttl);
    assert_eq!(default("threads"), c.threads.to_string());
    assert_eq!(
        default("cache-size"),
        (c.fs.cache_bytes.get() >> 20).to_string()
    );
    assert_eq!(default("max-calls"), c.max_calls.to_string());
    assert_eq!(
        Some(duration("", &default("max-stale")).unwrap()),
        c.fs.max_stale
    );
    assert_eq!(
        duration("", &default("start-jitter")).unwrap(),
        c.start_jitter
    );
}

#[test]
fn users_and_groups_are_names_or_numbers() {
    let c = parse(&["--uid", "root", "--gid", "root", "/mnt"]).unwrap();
    assert_eq!((c.fs.uid, c.fs.gid), (0, 0));
    let c = parse(&["/mnt", "-o", "uid=root,gid=7"]).unwrap();
    assert_eq!((c.fs.uid, c.fs.gid), (0, 7));
    let e = parse(&["--uid", "no-such-user-7q", "/mnt"]).unwrap_err();
    assert!(e.contains("no user named 'no-such-user-7q'"), "{e}");
    let e = parse(&["/mnt", "-o", "gid=no-such-group-7q"]).unwrap_err();
    assert!(e.contains("gid") && e.contains("no group named"), "{e}");
    let e = parse(&["/mnt", "-o", "uid="]).unwrap_err();
    assert!(e.contains("uid"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let p = path.to_str().unwrap();
    std::fs::write(&path, "uid = \"root\"\ngid = 5\n").unwrap();
    let c = parse(&["--config", p, "/mnt"]).unwrap();
    assert_eq!((c.fs.uid, c.fs.gid), (0, 5));
    for (text, key) in [
        ("uid = \"no-such-user-7q\"", "no-such-user-7q"),
        ("gid = -1", "gid"),
        ("uid = 4294967296", "uid"),
        ("gid = true", "gid"),
    ] {
        std::fs::write(&path, text).unwrap();
        let e = parse(&["--config", p, "/mnt"]).unwrap_err();
        assert!(e.contains(key), "{text}: {e}");
    }
}

#[test]
fn one_mountpoint_or_mount8s_source_and_mountpoint() {
    assert_eq!(parse(&["/mnt"]).unwrap().mountpoint, PathBuf::from("/mnt"));
    let c = parse(&["secretsfs", "/mnt"]).unwrap();
    assert_eq!(c.mountpoint, PathBuf::from("/mnt"));
    assert!(parse(&["a", "b", "/mnt"]).is_err());
    assert!(parse(&[]).is_err());
}

#[test]
fn defaults_and_flags() {
    let c = parse(&["/mnt"]).unwrap();
    assert_eq!(c.fs.ttl, Duration::from_secs(300));
    assert!(matches!(c.backend, Backend::Aws(_)));
    let c = parse(&["--ttl", "5", "--prefix", "prod/", "--read-only", "/mnt"]).unwrap();
    assert_eq!(c.fs.ttl, Duration::from_secs(5));
    assert_eq!(c.fs.prefix.as_deref(), Some("prod/"));
    assert!(c.fs.read_only);
}

#[test]
fn mount_options_spell_every_flag_and_source_is_ignored() {
    let c = parse(&[
        "secretsfs",
        "/mnt",
        "-o",
        "rw,_netdev,ttl=7,local=/tmp/x,allow_other,uid=5,read-only",
    ])
    .unwrap();
    assert_eq!(c.mountpoint, PathBuf::from("/mnt"));
    assert_eq!(c.fs.ttl, Duration::from_secs(7));
    assert!(matches!(c.backend, Backend::Local { .. }));
    assert!(c.allow_other && c.fs.read_only && c.fs.allow_create);
    assert_eq!(c.fs.uid, 5);
}

#[test]
fn config_file_is_strict_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "ttl = 60\nprefix = \"prod/\"\nread_only = true\n").unwrap();
    let p = path.to_str().unwrap();
    let c = parse(&["--config", p, "--ttl", "5", "/mnt"]).unwrap();
    assert_eq!(c.fs.ttl, Duration::from_secs(5));
    assert_eq!(c.fs.prefix.as_deref(), Some("prod/"));
    assert!(c.fs.read_only);
    let c = parse(&["/mnt", "-o", &format!("config={p}")]).unwrap();
    assert_eq!(c.fs.ttl, Duration::from_secs(60));
    std::fs::write(&path, "ttl = 60\ntll = 5\n").unwrap();
    let e = parse(&["--config", p, "/mnt"]).unwrap_err();
    assert!(e.contains("tll"), "{e}");
    std::fs::write(&path, "ttl = \"soon\"\n").unwrap();
    let e = parse(&["--config", p, "/mnt"]).unwrap_err();
    assert!(e.contains("ttl"), "{e}");
    std::fs::write(&path, "ttl = 9999999\n").unwrap();
    let e = parse(&["--config", p, "/mnt"]).unwrap_err();
    assert!(e.contains("ttl"), "{e}");
}

#[test]
fn templates_come_from_the_config_file_and_sighup_rereads_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let p = path.to_str().unwrap();
    std::fs::write(dir.path().join("a.j2"), "{{ secret('x') }}").unwrap();
    let table = "[[template]]\nname = \"a\"\nsource = \"a.j2\"\nmode = \"0440\"\n";
    std::fs::write(&path, format!("ttl = 5\n{table}")).unwrap();
    let c = parse(&["--config", p, "/mnt"]).unwrap();
    assert_eq!(c.fs.templates.len(), 1);
    assert_eq!(c.fs.templates[0].mode, 0o440);
    assert_eq!(c.config_file.as_deref(), Some(path.as_path()));
    std::fs::write(&path, format!("{table}{table}")).unwrap();
    let e = parse(&["--config", p, "/mnt"]).unwrap_err();
    assert!(e.contains(p) && e.contains("twice"), "{e}");
    let e = templates_from_file(&path).unwrap_err();
    assert!(e.contains("twice"), "{e}");
    std::fs::write(&path, "[[template]]\nname = \"a\"\n").unwrap();
    let e = templates_from_file(&path).unwrap_err();
    assert!(e.contains("source"), "{e}");
    std::fs::write(&path, table.replace("a.j2", "b.j2")).unwrap();
    std::fs::write(dir.path().join("b.j2"), "b").unwrap();
    assert_eq!(&*templates_from_file(&path).unwrap()[0].text, "b");
    assert!(parse(&["/mnt"]).unwrap().fs.templates.is_empty());
}

#[test]
fn secrets_under_the_reserved_directory_are_refused() {
    let e = parse(&["--secret", ".secretsfs/x", "/mnt"]).unwrap_err();
    assert!(e.contains("reserved"), "{e}");
    assert!(parse(&["--secret", "a/.secretsfs", "/mnt"]).is_ok());
}

#[test]
fn trim_newline_and_rules_come_from_flags_options_and_the_file() {
    assert!(!parse(&["/mnt"]).unwrap().fs.trim_newline);
    assert!(parse(&["--trim-newline", "/mnt"]).unwrap().fs.trim_newline);
    assert!(
        parse(&["/mnt", "-o", "trim_newline"])
            .unwrap()
            .fs
            .trim_newline
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let p = path.to_str().unwrap();
    std::fs::write(
        &path,
        "trim_newline = true\n[[rule]]\npattern = \"a/*\"\nowner = 0\nmode = \"0440\"\n",
    )
    .unwrap();
    let c = parse(&["--config", p, "/mnt"]).unwrap();
    assert!(c.fs.trim_newline);
    assert_eq!(c.fs.rules.for_secret("a/b").unwrap().mode, Some(0o440));
    assert_eq!(c.config_file.as_deref(), Some(path.as_path()));
    std::fs::write(&path, "[[rule]]\npattern = \"a/*\"\nmode = \"4755\"\n").unwrap();
    let e = parse(&["--config", p, "/mnt"]).unwrap_err();
    assert!(
        e.contains("rule 1") && e.contains("a/*") && e.contains("mode"),
        "{e}"
    );
}

#[test]
fn unknown_or_bad_options_name_the_option() {
    let e = parse(&["/mnt", "-o", "ttl=5,frobnicate"]).unwrap_err();
    assert!(e.contains("frobnicate"), "{e}");
    let e = parse(&["/mnt", "-o", "ttl=soon"]).unwrap_err();
    assert!(e.contains("ttl"), "{e}");
    for (opt, name) in [
        ("uid=4294967297", "uid"),
        ("gid=4294967296", "gid"),
        ("threads=18446744073709551617", "threads"),
        ("ttl=99999999999999999999", "ttl"),
        ("ttl=0", "ttl"),
        ("ttl=604801", "ttl"),
        ("threads=0", "threads"),
        ("threads=65", "threads"),
        ("cache_size=0", "cache_size"),
        ("uid=-1", "uid"),
        ("max_calls=0", "max_calls"),
        ("max_calls=257", "max_calls"),
        ("start_jitter=11m", "start_jitter"),
        ("start_jitter=soon", "start_jitter"),
    ] {
        let e = parse(&["/mnt", "-o", opt]).unwrap_err();
        assert!(e.contains(name), "{opt}: {e}");
    }
    let e = parse(&["--uid", "4294967296", "/mnt"]).unwrap_err();
    assert!(e.contains("uid"), "{e}");
    let e = parse(&["--ttl", "0", "/mnt"]).unwrap_err();
    assert!(e.contains("ttl"), "{e}");
    assert_eq!(
        parse(&["/mnt", "-o", "uid=4294967295"]).unwrap().fs.uid,
        u32::MAX
    );
    for (v, secs) in [
        ("0", 0),
        ("90", 90),
        ("90s", 90),
        ("30m", 1800),
        ("2h", 7200),
        ("1d", 86_400),
    ] {
        let c = parse(&["--max-stale", v, "/mnt"]).unwrap();
        assert_eq!(c.fs.max_stale, Some(Duration::from_secs(secs)), "{v}");
    }
    for v in ["soon", "5x", "-1", "400d"] {
        let e = parse(&["/mnt", "-o", &format!("max_stale={v}")]).unwrap_err();
        assert!(e.contains("max_stale"), "{v}: {e}");
    }
    assert_eq!(
        parse(&["/mnt"]).unwrap().fs.max_stale,
        Some(Duration::from_secs(3600))
    );
    let c = parse(&["/mnt", "-o", "max_calls=8,start_jitter=90s"]).unwrap();
    assert_eq!((c.max_calls, c.start_jitter), (8, Duration::from_secs(90)));
    let c = parse(&["/mnt"]).unwrap();
    assert_eq!((c.max_calls, c.start_jitter), (16, Duration::ZERO));
    let e = parse(&["--secret", "a/../b", "/mnt"]).unwrap_err();
    assert!(e.contains("--secret"), "{e}");
}

#[test]
fn every_duration_option_takes_the_same_forms_on_the_command_line_in_o_and_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let p = path.to_str().unwrap();
    // (flag, key, what it sets); on_change makes the hook ones legal.
    type Get = fn(&Config) -> Duration;
    let options: [(&str, Get); 5] = [
        ("ttl", |c| c.fs.ttl),
        ("max_stale", |c| c.fs.max_stale.unwrap()),
        ("start_jitter", |c| c.start_jitter),
        ("watch", |c| c.fs.hooks[0].interval),
        ("hook_timeout", |c| c.fs.hooks[0].timeout),
    ];
    for (key, get) in options {
        let flag = format!("--{}", key.replace('_', "-"));
        for (v, toml_v, secs) in [
            ("5m", "\"5m\"", 300),
            ("90", "90", 90),
            ("2m30s", "\"2m30s\"", 150),
        ] {
            let hook = ["--on-change", "true"];
            let c = parse(&[&flag, v, hook[0], hook[1], "/mnt"]).unwrap();
            assert_eq!(get(&c), Duration::from_secs(secs), "{flag} {v}");
            let c = parse(&["/mnt", "-o", &format!("{key}={v},on_change=true")]).unwrap();
            assert_eq!(get(&c), Duration::from_secs(secs), "-o {key}={v}");
            std::fs::write(&path, format!("{key} = {toml_v}\non_change = \"true\"\n")).unwrap();
            let c = parse(&["--config", p, "/mnt"]).unwrap();
            assert_eq!(get(&c), Duration::from_secs(secs), "file {key} = {toml_v}");
        }
        let e = parse(&["/mnt", "-o", &format!("{key}=5x,on_change=true")]).unwrap_err();
        assert!(e.contains(key) && e.contains("90s"), "{e}");
    }
    std::fs::write(&path, "on_change = \"true\"\n[[hook]]\npattern = \"a/*\"\non_change = \"true\"\nwatch = 30\ntimeout = \"1m\"\n").unwrap();
    let c = parse(&["--config", p, "/mnt"]).unwrap();
    assert_eq!(c.fs.hooks[1].interval, Duration::from_secs(30));
    assert_eq!(c.fs.hooks[1].timeout, Duration::from_secs(60));
}

#[test]
fn a_mistyped_option_or_key_gets_a_suggestion() {
    let e = parse(&["/mnt", "-o", "ttl=60,prefx=prod/"]).unwrap_err();
    assert!(e.contains("'prefx'; did you mean 'prefix'?"), "{e}");
    let e = parse(&["/mnt", "-o", "frobnicate"]).unwrap_err();
    assert!(
        e.contains("'frobnicate'") && !e.contains("did you mean"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let p = path.to_str().unwrap();
    std::fs::write(&path, "ttl = 60\nprefx = \"prod/\"\n").unwrap();
    let e = parse(&["--config", p, "/mnt"]).unwrap_err();
    assert!(
        e.contains("line 2") && e.contains("did you mean 'prefix'?"),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");
    std::fs::write(
        &path,
        "[[hook]]\npattern = \"a\"\non_change = \"x\"\ntimout = \"1m\"\n",
    )
    .unwrap();
    let e = parse(&["--config", p, "/mnt"]).unwrap_err();
    assert!(e.contains("did you mean 'timeout'?"), "{e}");
}

#[test]
fn source_ssm_names_parameters_by_path_and_keeps_the_create_settings() {
    let c = parse(&["--source", "ssm", "--prefix", "/app/", "/mnt"]).unwrap();
    assert!(matches!(c.backend, Backend::Ssm(_)));
    assert_eq!(c.fs.prefix.as_deref(), Some("app/"), "the tree's root is /");
    let c = parse(&[
        "-o",
        "source=ssm,secret=/app/db/url,ssm_create_type=String,ssm_key_id=alias/k",
        "/mnt",
    ])
    .unwrap();
    let Backend::Ssm(o) = &c.backend else {
        panic!("{:?}", c.backend)
    };
    assert_eq!(o.create_type.as_deref(), Some("String"));
    assert_eq!(o.create_key_id.as_deref(), Some("alias/k"));
    assert_eq!(
        c.fs.secrets.as_deref().unwrap()[0],
        crate::store::SecretName::new("app/db/url")
    );
    assert!(matches!(parse(&["/mnt"]).unwrap().backend, Backend::Aws(_)));
    let e = parse(&["--source", "ssm", "--secret", "db-url", "/mnt"]).unwrap_err();
    assert!(e.contains("'/db-url'") && e.contains("flat names"), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");
    let e = parse(&["--source", "ssm", "--local", "/tmp/x", "/mnt"]).unwrap_err();
    assert!(e.contains("--local"), "{e}");
    let e = parse(&["--ssm-key-id", "k", "/mnt"]).unwrap_err();
    assert!(e.contains("--source ssm"), "{e}");
    let e = parse(&["-o", "source=sms", "/mnt"]).unwrap_err();
    assert!(e.contains("secretsmanager or ssm"), "{e}");
}

#[test]
fn failover_and_arns_are_not_for_parameter_store() {
    let e = parse(&["--source", "ssm", "--failover-region", "eu-west-1", "/m"]).unwrap_err();
    assert!(e.contains("not with --source ssm"), "{e}");
}

#[test]
fn failover_regions_and_arns_come_from_flags_options_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        format!(
            "failover_region = [\"eu-central-1\"]\n[[secret]]\narn = \"{ARN}\"\npath = \"shared/db\"\n[[secret]]\nname = \"plain\"\n"
        ),
    )
    .unwrap();
    let c = parse(&["--config", file.to_str().unwrap(), "/m"]).unwrap();
    let Backend::Aws(aws) = &c.backend else {
        panic!("aws")
    };
    assert_eq!(aws.failover_regions[0].name, "eu-central-1");
    assert_eq!(aws.arns[0].0.as_str(), "shared/db");
    let paths: Vec<&str> =
        c.fs.secrets
            .as_ref()
            .unwrap()
            .iter()
            .map(|s| s.as_str())
            .collect();
    assert_eq!(paths, ["shared/db", "plain"]);
    let c = parse(&["-o", "failover_region=us-west-2=http://127.0.0.1:9", "/m"]).unwrap();
    let Backend::Aws(aws) = &c.backend else {
        panic!("aws")
    };
    assert_eq!(
        aws.failover_regions[0].endpoint.as_deref(),
        Some("http://127.0.0.1:9")
    );
    let e = parse(&["--failover-region", "Europe", "/m"]).unwrap_err();
    assert!(e.contains("not a region name"), "{e}");
    let e = parse(&["--local", "/tmp/x", "--failover-region", "eu-west-1", "/m"]).unwrap_err();
    assert!(e.contains("--local cannot"), "{e}");
}

const ARN: &str = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:team/db-AbCdEf";
