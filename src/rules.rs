//! Ownership rules (`[[rule]]` in the config file): an ordered list of
//! globs over secret names, each with an owner, group, mode and
//! trim_newline for the files of the secrets it matches. The first matching
//! rule wins; what a rule leaves unset falls back to the mount's settings.
//! Also the trailing-newline trim that `trim_newline` asks for.

use globset::GlobMatcher;

use crate::config::ids::NameOrNumber;
use crate::config::schema::RuleSpec;
use crate::store::SecretBytes;

/// One rule, checked: its glob compiled, its owner and group resolved.
#[derive(Debug, Clone)]
pub struct Rule {
    pub pattern: String,
    matcher: GlobMatcher,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Permission bits of the secret's files (at most 0777).
    pub mode: Option<u16>,
    pub trim_newline: Option<bool>,
}

impl Rule {
    pub fn matches(&self, name: &str) -> bool {
        self.matcher.is_match(name)
    }

    /// The mode of the secret's directories: the files' mode with x added
    /// wherever r is set (0400 -> 0500, 0440 -> 0550), so whoever may read
    /// the files may reach them.
    pub fn dir_mode(&self) -> Option<u16> {
        self.mode.map(dir_mode)
    }
}

/// A file mode with x added wherever r is set.
pub fn dir_mode(mode: u16) -> u16 {
    mode | ((mode & 0o444) >> 2)
}

/// The rules of a mount, in order.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// Checks every rule; an error names the rule (its number and pattern).
    pub fn build(specs: &[RuleSpec]) -> Result<Self, String> {
        let rules = specs
            .iter()
            .enumerate()
            .map(|(i, s)| {
                build_rule(s).map_err(|e| format!("rule {} (pattern '{}'): {e}", i + 1, s.pattern))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { rules })
    }

    /// The first rule matching the secret name.
    pub fn for_secret(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matches(name))
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// The patterns that match none of `names` (each once, in order).
    pub fn unmatched<'a>(&'a self, names: &[&str]) -> Vec<&'a str> {
        let mut out: Vec<&str> = Vec::new();
        for r in &self.rules {
            if !names.iter().any(|n| r.matches(n)) && !out.contains(&r.pattern.as_str()) {
                out.push(&r.pattern);
            }
        }
        out
    }
}

fn build_rule(s: &RuleSpec) -> Result<Rule, String> {
    fn named(what: &'static str) -> impl Fn(String) -> String {
        move |e| format!("{what}: {e}")
    }
    Ok(Rule {
        pattern: s.pattern.clone(),
        matcher: crate::tree::glob(&s.pattern).map_err(|e| format!("not a glob: {e}"))?,
        uid: s
            .owner
            .as_ref()
            .map(NameOrNumber::uid)
            .transpose()
            .map_err(named("owner"))?,
        gid: s
            .group
            .as_ref()
            .map(NameOrNumber::gid)
            .transpose()
            .map_err(named("group"))?,
        mode: s
            .mode
            .as_ref()
            .map(|m| m.permissions())
            .transpose()
            .map_err(named("mode"))?,
        trim_newline: s.trim_newline,
    })
}

/// Strips exactly one trailing `\n` from a UTF-8 value with no other
/// `\n` (`echo v > current` stores `v`). A multi-line value (a PEM), a
/// binary value, and a value that is only `\n` are kept as written; a
/// `\r` before the `\n` stays.
pub fn trim_newline(value: SecretBytes) -> SecretBytes {
    let b = value.as_bytes();
    let Some(body) = b.strip_suffix(b"\n") else {
        return value;
    };
    if body.is_empty() || body.contains(&b'\n') || std::str::from_utf8(body).is_err() {
        return value;
    }
    SecretBytes::new(body.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(pattern: &str) -> RuleSpec {
        RuleSpec {
            pattern: pattern.into(),
            owner: None,
            group: None,
            mode: None,
            trim_newline: None,
        }
    }

    fn parse(text: &str) -> Result<Rules, String> {
        #[derive(serde::Deserialize)]
        struct F {
            rule: Vec<RuleSpec>,
        }
        let f: F = toml::from_str(text).map_err(|e| e.to_string())?;
        Rules::build(&f.rule)
    }

    #[test]
    fn a_single_star_stays_in_one_component_and_a_double_star_crosses() {
        let r = Rules::build(&[spec("prod/db/*")]).unwrap();
        assert!(r.for_secret("prod/db/password").is_some());
        assert!(r.for_secret("prod/db/a/b").is_none());
        assert!(r.for_secret("prod/db").is_none());
        let r = Rules::build(&[spec("prod/**")]).unwrap();
        assert!(r.for_secret("prod/db/a/b").is_some());
        assert!(r.for_secret("staging/db").is_none());
    }

    #[test]
    fn the_first_matching_rule_wins() {
        let r = parse(
            "[[rule]]\npattern = \"prod/db/*\"\nowner = 1001\n\
             [[rule]]\npattern = \"prod/**\"\nowner = 1002\nmode = \"0440\"\n",
        )
        .unwrap();
        assert_eq!(r.for_secret("prod/db/pw").unwrap().uid, Some(1001));
        let web = r.for_secret("prod/web/cert").unwrap();
        assert_eq!((web.uid, web.mode), (Some(1002), Some(0o440)));
    }

    #[test]
    fn owners_and_groups_are_names_or_numbers_and_unknown_ones_name_the_rule() {
        let r = parse("[[rule]]\npattern = \"a\"\nowner = \"root\"\ngroup = \"root\"\n").unwrap();
        let a = r.for_secret("a").unwrap();
        assert_eq!((a.uid, a.gid), (Some(0), Some(0)));
        let e = parse("[[rule]]\npattern = \"x/*\"\nowner = \"no-such-user-7q\"\n").unwrap_err();
        assert!(
            e.contains("rule 1") && e.contains("x/*") && e.contains("no-such-user-7q"),
            "{e}"
        );
        let e = parse(
            "[[rule]]\npattern = \"a\"\n[[rule]]\npattern = \"b\"\ngroup = \"no-such-group-7q\"\n",
        )
        .unwrap_err();
        assert!(e.contains("rule 2") && e.contains("'b'"), "{e}");
        let e = parse("[[rule]]\npattern = \"a\"\nowner = -1\n").unwrap_err();
        assert!(e.contains("owner"), "{e}");
    }

    #[test]
    fn modes_are_octal_permission_bits_only() {
        let m = |v: &str| parse(&format!("[[rule]]\npattern = \"a\"\nmode = {v}\n"));
        assert_eq!(
            m("\"0400\"").unwrap().for_secret("a").unwrap().mode,
            Some(0o400)
        );
        assert_eq!(
            m("0o440").unwrap().for_secret("a").unwrap().mode,
            Some(0o440)
        );
        assert_eq!(m("256").unwrap().for_secret("a").unwrap().mode, Some(0o400));
        for bad in ["\"4755\"", "\"0999\"", "\"rw\"", "-1", "0o1000"] {
            let e = m(bad).unwrap_err();
            assert!(e.contains("mode") && e.contains("rule 1"), "{bad}: {e}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_globs_are_errors() {
        assert!(parse("[[rule]]\npattern = \"a\"\nmodee = \"0400\"\n").is_err());
        let e = parse("[[rule]]\npattern = \"a[\"\n").unwrap_err();
        assert!(e.contains("rule 1"), "{e}");
    }

    #[test]
    fn directories_get_x_wherever_files_get_r() {
        assert_eq!(dir_mode(0o400), 0o500);
        assert_eq!(dir_mode(0o440), 0o550);
        assert_eq!(dir_mode(0o640), 0o750);
        assert_eq!(dir_mode(0o200), 0o200);
    }

    #[test]
    fn unmatched_patterns_are_reported_once_each() {
        let r = Rules::build(&[spec("a/*"), spec("b/*"), spec("b/*")]).unwrap();
        assert_eq!(r.unmatched(&["a/x", "c"]), vec!["b/*"]);
    }

    #[test]
    fn one_trailing_newline_goes_from_a_single_line_text() {
        let t = |v: &[u8]| {
            trim_newline(SecretBytes::new(v.to_vec()))
                .as_bytes()
                .to_vec()
        };
        assert_eq!(t(b"v\n"), b"v");
        assert_eq!(t(b"v"), b"v");
        assert_eq!(t(b"v\n\n"), b"v\n\n");
        assert_eq!(t(b"v\r\n"), b"v\r");
        assert_eq!(t(b"\n"), b"\n");
        let pem = b"-----BEGIN KEY-----\nabc\n-----END KEY-----\n";
        assert_eq!(t(pem), pem);
        assert_eq!(t(b"\xff\xfe\n"), b"\xff\xfe\n");
    }
}
