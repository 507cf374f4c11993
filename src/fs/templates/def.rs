//! `[[template]]` tables of the config file, checked into `TemplateDef`s:
//! a file name, the template's source (read now, so that a bad setup fails
//! at start or keeps the old templates on SIGHUP), owner, group and mode.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::defaults::DEFAULT_TEMPLATE_MODE;
use crate::config::ids::NameOrNumber;
use crate::config::schema::TemplateSpec;

/// A template source larger than this is refused (it is a config file).
/// Config files are small; a bound on the source also bounds how deeply
/// the compiler recurses (a chain of 20,000 filters overflowed the stack).
pub const MAX_SOURCE_LEN: usize = 64 << 10;

/// One template, validated, with its source text.
#[derive(Clone, PartialEq, Eq)]
pub struct TemplateDef {
    /// The file name under `.secretsfs/rendered/`.
    pub name: Arc<str>,
    /// Where the source was read from (for log lines).
    pub source: PathBuf,
    pub text: Arc<str>,
    /// None: the mount's --uid / --gid.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: u16,
}

impl fmt::Debug for TemplateDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TemplateDef")
            .field("name", &self.name)
            .field("source", &self.source)
            .field("text_len", &self.text.len())
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("mode", &format_args!("{:04o}", self.mode))
            .finish()
    }
}

/// Checks every table; `base` is the config file's directory, against
/// which relative sources are read. Errors name the template and the key.
pub fn resolve_all(specs: Vec<TemplateSpec>, base: &Path) -> Result<Vec<TemplateDef>, String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        let def = resolve(spec, base)?;
        if !seen.insert(def.name.clone()) {
            return Err(format!("template '{}': the name is used twice", def.name));
        }
        out.push(def);
    }
    Ok(out)
}

/// One table checked into a `TemplateDef`.
fn resolve(spec: TemplateSpec, base: &Path) -> Result<TemplateDef, String> {
    let name = spec.name;
    let fail = |key: &str, e: String| format!("template '{name}': {key}: {e}");
    if !crate::tree::valid_component(&name) || name.contains('/') {
        return Err(format!(
            "template '{name}': name: not a file name (empty, '.', '..', a '/' or over 255 bytes)"
        ));
    }
    let mode = match &spec.mode {
        None => DEFAULT_TEMPLATE_MODE,
        Some(m) => m.read_bits().map_err(|e| fail("mode", e))?,
    };
    let uid = spec.owner.as_ref().map(NameOrNumber::uid).transpose();
    let uid = uid.map_err(|e| fail("owner", e))?;
    let gid = spec.group.as_ref().map(NameOrNumber::gid).transpose();
    let gid = gid.map_err(|e| fail("group", e))?;
    let source = base.join(&spec.source);
    let text = read_source(&source).map_err(|e| fail("source", e))?;
    Ok(TemplateDef {
        name: Arc::from(name),
        source,
        text: Arc::from(text),
        uid,
        gid,
        mode,
    })
}

fn read_source(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() > MAX_SOURCE_LEN {
        return Err(format!(
            "{}: larger than {} bytes",
            path.display(),
            MAX_SOURCE_LEN
        ));
    }
    let text =
        String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8 text", path.display()))?;
    if operators(&text) > MAX_OPERATORS {
        return Err(format!(
            "{}: more than {MAX_OPERATORS} operators, filters and calls in its expressions",
            path.display()
        ));
    }
    Ok(text)
}

/// How many operators, filters, calls, subscripts and attribute accesses
/// a source's expressions hold: minijinja compiles a chain of them by
/// recursion, and a chain of some thousands overflows the stack (the
/// daemon dies, at start or on SIGHUP).
/// 500 keeps that recursion well inside a 2 MiB worker stack (no bigger
/// stacks: with --mlock every thread's stack would be locked whole).
pub const MAX_OPERATORS: usize = 500;

fn operators(source: &str) -> usize {
    let mut n = 0;
    let mut rest = source;
    while let Some(open) = rest.find(['{']) {
        let after = &rest[open + 1..];
        let close = match after.chars().next() {
            Some('{') => "}}",
            Some('%') => "%}",
            _ => {
                rest = after;
                continue;
            }
        };
        let end = after.find(close).unwrap_or(after.len()).max(1);
        n += after[1..end]
            .chars()
            .filter(|c| "|~+-*/%[(.".contains(*c))
            .count();
        rest = &after[end..];
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_are_counted_in_expressions_only() {
        assert_eq!(
            operators("a.b-c {{ x.y | f(1) }} {% if a+b %}.{% endif %}"),
            4
        );
        assert_eq!(operators(&"{{ 1|string }}".repeat(3)), 3);
    }

    #[derive(serde::Deserialize)]
    struct File {
        template: Vec<TemplateSpec>,
    }

    fn parse(toml_text: &str, dir: &Path) -> Result<Vec<TemplateDef>, String> {
        let f: File = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        resolve_all(f.template, dir)
    }

    fn dir_with_source() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("t.j2"), "x={{ secret('a') }}\n").unwrap();
        d
    }

    #[test]
    fn a_template_gets_defaults_and_its_source_relative_to_the_config() {
        let d = dir_with_source();
        let defs = parse(
            "[[template]]\nname = \"pgpass\"\nsource = \"t.j2\"\n",
            d.path(),
        )
        .unwrap();
        assert_eq!(defs.len(), 1);
        let t = &defs[0];
        assert_eq!(&*t.name, "pgpass");
        assert_eq!(&*t.text, "x={{ secret('a') }}\n");
        assert_eq!((t.uid, t.gid, t.mode), (None, None, 0o400));
        assert_eq!(t.source, d.path().join("t.j2"));
    }

    #[test]
    fn owner_group_and_mode_are_names_numbers_or_octal() {
        let d = dir_with_source();
        for (extra, want) in [
            (
                "owner = \"root\"\ngroup = 7\nmode = \"0440\"",
                (Some(0), Some(7), 0o440),
            ),
            (
                "owner = 1000\ngroup = \"root\"\nmode = 0o444",
                (Some(1000), Some(0), 0o444),
            ),
            ("mode = \"400\"", (None, None, 0o400)),
            ("mode = \"0o040\"", (None, None, 0o040)),
        ] {
            let text = format!("[[template]]\nname = \"t\"\nsource = \"t.j2\"\n{extra}\n");
            let t = &parse(&text, d.path()).unwrap()[0];
            assert_eq!((t.uid, t.gid, t.mode), want, "{extra}");
        }
    }

    #[test]
    fn bad_values_are_refused_naming_the_template_and_key() {
        let d = dir_with_source();
        for (extra, key) in [
            ("mode = \"0640\"", "mode"),
            ("mode = 440", "mode"),
            ("mode = \"rw\"", "mode"),
            ("mode = \"\"", "mode"),
            ("mode = \"0999\"", "mode"),
            ("owner = \"no-such-user-7q\"", "owner"),
            ("group = \"no-such-group-7q\"", "group"),
        ] {
            let text = format!("[[template]]\nname = \"t\"\nsource = \"t.j2\"\n{extra}\n");
            let e = parse(&text, d.path()).unwrap_err();
            assert!(
                e.contains("template 't'") && e.contains(key),
                "{extra}: {e}"
            );
        }
        let e = parse(
            "[[template]]\nname = \"t\"\nsource = \"nope.j2\"\n",
            d.path(),
        )
        .unwrap_err();
        assert!(e.contains("source") && e.contains("nope.j2"), "{e}");
        for name in ["a/b", "..", ""] {
            let text = format!("[[template]]\nname = \"{name}\"\nsource = \"t.j2\"\n");
            let e = parse(&text, d.path()).unwrap_err();
            assert!(e.contains("name"), "{name}: {e}");
        }
        let e = parse(
            "[[template]]\nname = \"t\"\nsource = \"t.j2\"\nsorce = 1\n",
            d.path(),
        )
        .unwrap_err();
        assert!(e.contains("sorce"), "{e}");
    }

    #[test]
    fn a_name_used_twice_is_refused() {
        let d = dir_with_source();
        let one = "[[template]]\nname = \"t\"\nsource = \"t.j2\"\n";
        let e = parse(&format!("{one}{one}"), d.path()).unwrap_err();
        assert!(e.contains("'t'") && e.contains("twice"), "{e}");
    }
}
