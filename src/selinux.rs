//! SELinux mount contexts (`context=`, `fscontext=`, `defcontext=`,
//! `rootcontext=`): checked at start and handed to mount(2), so that a
//! confined service (nginx as httpd_t) may read the mount (docs/packages.md,
//! "SELinux").

use std::path::Path;

/// The four SELinux mount options, in the order mount(8) documents them.
pub const KEYS: [&str; 4] = ["context", "fscontext", "defcontext", "rootcontext"];

/// The command line's SELinux options (also `-o` and config file keys).
#[derive(clap::Args, Debug, Default, Clone)]
#[command(next_help_heading = "SELinux (ignored where SELinux is not enabled, as mount(8) does)")]
pub struct ContextArgs {
    /// Label every file of the mount with this context, e.g.
    /// system_u:object_r:httpd_sys_content_t:s0 for nginx [default: none:
    /// the policy's label for FUSE, fusefs_t]
    #[arg(long, value_name = "CONTEXT")]
    pub context: Option<String>,
    /// Label of the filesystem itself (mount, unmount, statfs) [default:
    /// none]
    #[arg(long, value_name = "CONTEXT")]
    pub fscontext: Option<String>,
    /// Label of files that have none of their own: for filesystems that
    /// keep labels in xattrs; FUSE mounts are labelled by the policy, so
    /// use --context [default: none]
    #[arg(long, value_name = "CONTEXT")]
    pub defcontext: Option<String>,
    /// Label of the mount's root directory [default: none]
    #[arg(long, value_name = "CONTEXT")]
    pub rootcontext: Option<String>,
}

impl ContextArgs {
    /// Sets option `key` (one of `KEYS`) from `-o`, without the quotes
    /// mount(8) wants around a value with commas.
    pub fn set(&mut self, key: &str, value: &str) {
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        let slot = match key {
            "context" => &mut self.context,
            "fscontext" => &mut self.fscontext,
            "defcontext" => &mut self.defcontext,
            "rootcontext" => &mut self.rootcontext,
            _ => panic!("{key} is not an SELinux mount option"),
        };
        *slot = Some(value.to_string());
    }

    /// What the flags left unset, from `other` (the config file).
    pub fn or(&mut self, other: ContextArgs) {
        self.context = self.context.take().or(other.context);
        self.fscontext = self.fscontext.take().or(other.fscontext);
        self.defcontext = self.defcontext.take().or(other.defcontext);
        self.rootcontext = self.rootcontext.take().or(other.rootcontext);
    }

    /// The options, checked.
    pub fn into_contexts(self) -> Result<Contexts, String> {
        let given = [
            self.context,
            self.fscontext,
            self.defcontext,
            self.rootcontext,
        ];
        let mut options = Vec::new();
        for (key, value) in KEYS.iter().zip(given) {
            if let Some(v) = value {
                check(key, &v)?;
                options.push((*key, v));
            }
        }
        let has = |k: &str| options.iter().any(|(key, _)| *key == k);
        // The kernel refuses the pair with a bare EINVAL; say which.
        if has("context") && has("defcontext") {
            return Err(
                "context and defcontext cannot be combined: context labels every file".into(),
            );
        }
        Ok(Contexts { options })
    }
}

/// A value mount(2) can carry: `user:role:type[:level]`, from the
/// characters SELinux names and MLS/MCS levels use.
fn check(key: &str, v: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_.:,-".contains(c);
    let fields = v.split(':').collect::<Vec<_>>();
    if v.chars().all(allowed) && fields.len() >= 3 && fields[..3].iter().all(|f| !f.is_empty()) {
        return Ok(());
    }
    Err(format!(
        "{key}: '{}' is not an SELinux context such as \
         system_u:object_r:httpd_sys_content_t:s0 (user:role:type:level)",
        v.escape_debug()
    ))
}

/// Checked SELinux mount options, in the order given by `KEYS`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Contexts {
    options: Vec<(&'static str, String)>,
}

impl Contexts {
    pub fn is_empty(&self) -> bool {
        self.options.is_empty()
    }

    /// `,context="..."` and so on, to append to mount(2)'s data. Quoted
    /// always, so that an MCS level's commas (`s0:c1,c2`) stay in the
    /// value (the kernel's SELinux parser strips the quotes).
    pub fn mount_data(&self) -> String {
        self.options
            .iter()
            .map(|(k, v)| format!(",{k}=\"{v}\""))
            .collect()
    }

    /// `context=...` for messages (`-o` spelling, unquoted).
    pub fn shown(&self) -> String {
        let shown: Vec<_> = self
            .options
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        shown.join(",")
    }

    /// What this host's kernel can take: nothing where SELinux is not
    /// enabled. There the kernel refuses these options for FUSE (EINVAL,
    /// "fuse: Unknown parameter 'context'") and mount(8) leaves them out
    /// for every filesystem; so does the daemon, saying so once, so that
    /// one configuration serves hosts with and without SELinux.
    pub fn for_this_host(self) -> Contexts {
        if self.is_empty() || enabled() {
            return self;
        }
        tracing::info!(
            options = %self.shown(),
            "SELinux is not enabled on this host: the SELinux mount options are left out"
        );
        Contexts::default()
    }
}

/// Whether this kernel enforces or logs SELinux (selinuxfs is mounted, as
/// libselinux's is_selinux_enabled() checks): only then do the options
/// mean anything, and only then does the kernel accept them for FUSE.
pub fn enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

/// Splits `-o` options at commas outside double quotes, as mount(8) does:
/// `context="system_u:object_r:t:s0:c1,c2",ttl=60` is two options. The
/// quotes stay: each option decides what they mean.
pub fn split_options(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => {
                quoted ^= c == '"';
                cur.push(c);
            }
        }
    }
    out.push(cur);
    out.retain(|o| !o.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HTTPD: &str = "system_u:object_r:httpd_sys_content_t:s0";

    fn contexts(pairs: &[(&str, &str)]) -> Result<Contexts, String> {
        let mut a = ContextArgs::default();
        for (k, v) in pairs {
            a.set(k, v);
        }
        a.into_contexts()
    }

    #[test]
    fn contexts_are_quoted_in_the_mount_data_in_a_fixed_order() {
        let c = contexts(&[("rootcontext", HTTPD), ("context", HTTPD)]).unwrap();
        assert_eq!(
            c.mount_data(),
            format!(",context=\"{HTTPD}\",rootcontext=\"{HTTPD}\"")
        );
        assert_eq!(c.shown(), format!("context={HTTPD},rootcontext={HTTPD}"));
        let mcs = "system_u:object_r:container_file_t:s0:c1,c2";
        let c = contexts(&[("fscontext", mcs)]).unwrap();
        assert_eq!(c.mount_data(), format!(",fscontext=\"{mcs}\""));
        assert!(contexts(&[]).unwrap().is_empty());
        assert_eq!(contexts(&[]).unwrap().mount_data(), "");
    }

    #[test]
    fn a_value_that_is_not_a_context_is_refused_naming_the_option() {
        for bad in [
            "",
            "httpd_sys_content_t",
            "system_u:object_r",
            "system_u::httpd_sys_content_t:s0",
            "system_u:object_r:httpd_sys_content_t:s0\"",
            "system_u:object_r:x_t:s0,ttl=1",
            "a b:c:d",
            "a:b:c\n",
        ] {
            let e = contexts(&[("defcontext", bad)]).unwrap_err();
            assert!(e.starts_with("defcontext: '"), "{bad:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        // A comma is only refused where what follows is not a level.
        contexts(&[("context", "u:r:t:s0:c0,c5")]).unwrap();
        contexts(&[("context", "u:r:t")]).unwrap();
        contexts(&[("context", "u:r:t:s0-s0:c0.c1023")]).unwrap();
    }

    #[test]
    fn context_with_defcontext_is_refused_before_the_kernel_does() {
        let e = contexts(&[("context", HTTPD), ("defcontext", HTTPD)]).unwrap_err();
        assert!(e.contains("context and defcontext"), "{e}");
        contexts(&[("context", HTTPD), ("fscontext", HTTPD)]).unwrap();
    }

    fn parse(args: &[&str]) -> Result<Contexts, String> {
        let argv = std::iter::once("secretsfs").chain(args.iter().copied());
        let cli = <crate::config::Cli as clap::Parser>::try_parse_from(argv)
            .map_err(|e| e.to_string())?;
        cli.into_config().map(|c| c.selinux)
    }

    #[test]
    fn contexts_come_from_flags_mount_options_and_the_config_file() {
        let want = format!(",context=\"{HTTPD}\"");
        let c = parse(&["--context", HTTPD, "/mnt"]).unwrap();
        assert_eq!(c.mount_data(), want);
        let c = parse(&["/mnt", "-o", &format!("ttl=60,context={HTTPD}")]).unwrap();
        assert_eq!(c.mount_data(), want);
        // mount(8)'s quoting keeps an MCS level's comma in the value.
        let mcs = "system_u:object_r:httpd_sys_content_t:s0:c1,c2";
        let c = parse(&["/mnt", "-o", &format!("context=\"{mcs}\",ro")]).unwrap();
        assert_eq!(c.shown(), format!("context={mcs}"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        let f = file.to_str().unwrap();
        std::fs::write(
            &file,
            format!("context = \"{HTTPD}\"\nrootcontext = \"u:r:t:s0\"\n"),
        )
        .unwrap();
        let c = parse(&["--config", f, "/mnt"]).unwrap();
        assert_eq!(c.mount_data(), format!("{want},rootcontext=\"u:r:t:s0\""));
        // The command line wins over the file, key by key.
        let c = parse(&["--config", f, "-o", "context=u:r:x_t:s0", "/mnt"]).unwrap();
        assert_eq!(c.shown(), "context=u:r:x_t:s0,rootcontext=u:r:t:s0");
        assert!(parse(&["/mnt"]).unwrap().is_empty());

        for (args, key) in [
            (
                vec!["/mnt", "-o", "context=httpd_sys_content_t"],
                "context: ",
            ),
            (vec!["/mnt", "-o", "fscontext"], "'fscontext' needs a value"),
            (vec!["--rootcontext", "a:b", "/mnt"], "rootcontext: "),
        ] {
            let e = parse(&args).unwrap_err();
            assert!(e.contains(key), "{args:?}: {e}");
        }
        std::fs::write(&file, "defcontext = \"x\"\n").unwrap();
        let e = parse(&["--config", f, "/mnt"]).unwrap_err();
        assert!(e.starts_with("defcontext: 'x'"), "{e}");
        std::fs::write(&file, "context = 5\n").unwrap();
        let e = parse(&["--config", f, "/mnt"]).unwrap_err();
        assert!(e.contains("context"), "{e}");
    }

    #[test]
    fn options_split_at_commas_outside_quotes() {
        assert_eq!(
            split_options("ttl=60,context=\"u:r:t:s0:c1,c2\",,ro"),
            ["ttl=60", "context=\"u:r:t:s0:c1,c2\"", "ro"]
        );
        // Other options keep their quotes, as before.
        assert_eq!(
            split_options("on_change=echo \"a b\""),
            ["on_change=echo \"a b\""]
        );
        assert_eq!(split_options("a"), ["a"]);
        assert!(split_options("").is_empty());
    }
}
