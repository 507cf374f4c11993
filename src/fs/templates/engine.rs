//! One synchronous render pass of a template (minijinja), with functions
//! that read secrets only from what was fetched before the pass. A function
//! asking for a secret not fetched yet records it as needed and the pass is
//! thrown away; the caller fetches and renders again. Failures are kept as
//! our own causes, so log lines are built from names and line numbers,
//! never from minijinja's messages (which may quote values).
//!
//! Longer than 700 lines on purpose: the environment, the functions a
//! template may call and the pass bookkeeping are one pass's parts, which
//! share its private state; the unit tests of each function sit beside it.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::sync::Arc;

use minijinja::value::{Kwargs, Object, ObjectRepr, Value};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior};
use parking_lot::Mutex;
use zeroize::Zeroizing;

use crate::store::{SecretBytes, SecretName, SecretVersion, Stage};

/// The most a rendered file may hold: memory stays bounded whatever a
/// template loops over.
pub const MAX_OUTPUT: usize = 1 << 20;

/// A secret as a template reads it: its name and staging label.
pub type Key = (SecretName, Stage);

/// What was fetched for a key before a pass.
#[derive(Clone, Debug)]
pub enum Fetched {
    Value(Arc<SecretVersion>),
    /// The secret has no version with that label (no AWSPREVIOUS yet).
    NoStage,
    NoSecret,
    /// Outside the mount's --secret/--prefix scope: not fetched.
    OutOfScope,
}

/// A name for a log line: shown only when it is written in the template's
/// source. A name computed at render time could be made of a secret value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shown(Option<String>);

impl Shown {
    /// Shown only if the source writes it as a whole string literal or an
    /// attribute name: a value that merely occurs in the source (a comment,
    /// a longer word) is not shown.
    fn of(name: &str, source: &str) -> Self {
        let quoted = ['"', '\'']
            .iter()
            .any(|q| source.contains(&format!("{q}{name}{q}")));
        let ident = |c: char| c.is_alphanumeric() || c == '_';
        let attr = name.chars().all(ident)
            && source.match_indices(&format!(".{name}")).any(|(i, m)| {
                source[i + m.len()..]
                    .chars()
                    .next()
                    .is_none_or(|c| !ident(c))
            });
        Shown((!name.is_empty() && (quoted || attr)).then(|| name.to_string()))
    }
}

#[cfg(test)]
#[test]
fn a_name_is_shown_only_as_the_source_writes_it() {
    let src =
        "# hunter2 style passwords\n{{ json(\"db\", 'password') }} {{ x.port }} {{ y.portal }}";
    assert!(Shown::of("db", src).0.is_some());
    assert!(Shown::of("password", src).0.is_some());
    assert!(Shown::of("port", src).0.is_some());
    assert!(
        Shown::of("hunter", src).0.is_none(),
        "inside a comment word"
    );
    assert!(Shown::of("porta", src).0.is_none());
    assert!(Shown::of("", src).0.is_none());
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(n) => write!(f, "{n:?}"),
            None => f.write_str("(a name computed at render time, not shown)"),
        }
    }
}

/// Why a template did not render.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The compiler's own detail: made from the source alone, no values.
    Syntax(String),
    NoSecret(Shown),
    OutOfScope(Shown),
    NoStage(Shown, &'static str),
    BadStage(Shown),
    Binary(Shown),
    /// from_json or json() on text that is not JSON (the secret, if known).
    NotJson(Option<Shown>),
    /// json() on a secret whose value is not a JSON object.
    NotObject(Shown),
    /// A key missing from a JSON object: the secret (if known) and the path.
    NoKey(Option<Shown>, Vec<Shown>),
    TooLarge,
    TooManySecrets(usize),
    TooManyPasses(usize),
    /// Any other template error: its kind only.
    Engine(ErrorKind),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub line: Option<usize>,
    pub cause: Cause,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Syntax(d) => write!(f, "syntax error: {d}"),
            Cause::NoSecret(n) => write!(f, "missing secret {n}"),
            Cause::OutOfScope(n) => write!(
                f,
                "secret {n} is outside this mount's --secret/--prefix scope (or named by ARN: use its name)"
            ),
            Cause::NoStage(n, l) => write!(f, "secret {n} has no {l} version"),
            Cause::BadStage(s) => write!(f, "stage {s} is not AWSCURRENT or AWSPREVIOUS"),
            Cause::Binary(n) => write!(f, "secret {n} is binary, not text"),
            Cause::NotJson(Some(n)) => write!(f, "secret {n} is not JSON"),
            Cause::NotJson(None) => f.write_str("from_json was given text that is not JSON"),
            Cause::NotObject(n) => write!(f, "secret {n} is not a JSON object"),
            Cause::NoKey(secret, path) => {
                let path: Vec<String> = path.iter().map(|p| p.to_string()).collect();
                match secret {
                    Some(s) => write!(f, "missing key {} in secret {s}", path.join(".")),
                    None => write!(f, "missing key {} in a JSON object", path.join(".")),
                }
            }
            Cause::TooLarge => write!(f, "output larger than {MAX_OUTPUT} bytes"),
            Cause::TooManySecrets(n) => write!(f, "uses more than {n} secrets"),
            Cause::TooManyPasses(n) => {
                write!(
                    f,
                    "still asked for new secrets after {n} rounds of fetching"
                )
            }
            // The kind's description only ("undefined value", "unknown
            // filter"): the detail may quote values.
            Cause::Engine(k) => write!(f, "{k}"),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}", self.cause),
            None => write!(f, "{}", self.cause),
        }
    }
}

/// The result of one pass.
pub enum Pass {
    Done {
        bytes: SecretBytes,
        used: HashSet<Key>,
    },
    /// Secrets to fetch before trying again.
    Need(HashSet<Key>),
    Failed {
        failure: Failure,
        used: HashSet<Key>,
    },
}

/// Compiles the source alone: a syntax error is reported when the template
/// is loaded (start, SIGHUP), naming its line.
pub fn check(name: &str, source: &str) -> Result<(), Failure> {
    let env = environment();
    env.template_from_named_str(name, source)
        .map(drop)
        .map_err(syntax_failure)
}

fn syntax_failure(e: Error) -> Failure {
    Failure {
        line: e.line(),
        cause: if e.kind() == ErrorKind::SyntaxError {
            Cause::Syntax(e.detail().unwrap_or("").to_string())
        } else {
            Cause::Engine(e.kind())
        },
    }
}

/// Instructions one render may run: a pgpass or nginx template takes a few
/// hundred; a loop of a million iterations fails with EIO.
pub const FUEL: u64 = 1_000_000;

/// The engine's settings: strict undefined (a missing field is an error),
/// no escaping (config files, not HTML), the source's trailing newline kept.
fn environment<'s>() -> Environment<'s> {
    let mut env = Environment::new();
    // A template that loops for ever fails instead of holding a worker.
    env.set_fuel(Some(FUEL));
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
        .expect("default delimiters");
    env.set_syntax(syntax);
    env
}

/// Renders once with what `fetched` holds.
pub fn render(name: &str, source: &str, fetched: Arc<HashMap<Key, Fetched>>) -> Pass {
    let st = Arc::new(PassState::new(source, fetched));
    let mut env = environment();
    add_functions(&mut env, &st);
    let mut out = Capped::default();
    let result = env
        .template_from_named_str(name, source)
        .and_then(|t| t.render_captured_to((), &mut out).map(drop));
    drop(env);
    let need = std::mem::take(&mut *st.need.lock());
    if !need.is_empty() {
        return Pass::Need(need);
    }
    let used = std::mem::take(&mut *st.used.lock());
    match result {
        Ok(()) => Pass::Done {
            bytes: SecretBytes::new(std::mem::take(&mut *out.buf)),
            used,
        },
        Err(e) if e.kind() == ErrorKind::SyntaxError => Pass::Failed {
            failure: syntax_failure(e),
            used,
        },
        Err(e) => Pass::Failed {
            failure: st.failure(&e, out.over),
            used,
        },
    }
}

/// What one pass learns, shared with the functions it calls.
struct PassState {
    source: Arc<str>,
    fetched: Arc<HashMap<Key, Fetched>>,
    used: Mutex<HashSet<Key>>,
    need: Mutex<HashSet<Key>>,
    /// The first failure a function of ours reported.
    cause: Mutex<Option<Cause>>,
    /// The last key found missing in a JSON object (the likely cause of an
    /// undefined-value error).
    missing_key: Mutex<Option<Cause>>,
    /// Texts handed out by secret(), to tell which secret from_json parses.
    texts: Mutex<Vec<(Arc<str>, SecretName)>>,
}

impl PassState {
    fn new(source: &str, fetched: Arc<HashMap<Key, Fetched>>) -> Self {
        Self {
            source: Arc::from(source),
            fetched,
            used: Mutex::default(),
            need: Mutex::default(),
            cause: Mutex::default(),
            missing_key: Mutex::default(),
            texts: Mutex::default(),
        }
    }

    fn shown(&self, name: &str) -> Shown {
        Shown::of(name, &self.source)
    }

    /// Records our cause (the first wins) and gives the engine an error
    /// with no detail of its own.
    fn fail(&self, cause: Cause) -> Error {
        self.cause.lock().get_or_insert(cause);
        Error::new(ErrorKind::InvalidOperation, "see the secretsfs log")
    }

    fn failure(&self, e: &Error, over: bool) -> Failure {
        let ours = self.cause.lock().take();
        let cause = match ours {
            Some(c) => c,
            None if over => Cause::TooLarge,
            None if e.kind() == ErrorKind::UndefinedError => self
                .missing_key
                .lock()
                .take()
                .unwrap_or(Cause::Engine(ErrorKind::UndefinedError)),
            None => Cause::Engine(e.kind()),
        };
        Failure {
            line: e.line(),
            cause,
        }
    }

    /// The text of a secret, or None when it must be fetched first.
    fn text(&self, name: &str, stage: Stage) -> Result<Option<Arc<str>>, Error> {
        let key = (SecretName::new(name), stage);
        let Some(f) = self.fetched.get(&key) else {
            self.need.lock().insert(key);
            return Ok(None);
        };
        if !matches!(f, Fetched::OutOfScope) {
            self.used.lock().insert(key.clone());
        }
        let shown = self.shown(name);
        match f {
            Fetched::Value(v) => match v.value.as_text() {
                Some(t) => {
                    let t: Arc<str> = Arc::from(t);
                    self.texts.lock().push((t.clone(), key.0));
                    Ok(Some(t))
                }
                None => Err(self.fail(Cause::Binary(shown))),
            },
            Fetched::NoStage => Err(self.fail(Cause::NoStage(shown, stage.label()))),
            Fetched::NoSecret => Err(self.fail(Cause::NoSecret(shown))),
            Fetched::OutOfScope => Err(self.fail(Cause::OutOfScope(shown))),
        }
    }

    /// Which secret a text came from, if it is one secret() handed out.
    fn origin(&self, text: &str) -> Option<SecretName> {
        self.texts
            .lock()
            .iter()
            .find(|(t, _)| std::ptr::eq(t.as_ptr(), text.as_ptr()) && t.len() == text.len())
            .map(|(_, n)| n.clone())
    }

    fn stage(&self, kwargs: &Kwargs) -> Result<Stage, Error> {
        let stage: Option<String> = kwargs.get("stage")?;
        kwargs.assert_all_used()?;
        match stage.as_deref() {
            None | Some("AWSCURRENT") => Ok(Stage::Current),
            Some("AWSPREVIOUS") => Ok(Stage::Previous),
            Some(other) => Err(self.fail(Cause::BadStage(self.shown(other)))),
        }
    }
}

fn add_functions(env: &mut Environment<'_>, st: &Arc<PassState>) {
    let s = st.clone();
    env.add_function("secret", move |name: String, kwargs: Kwargs| {
        let stage = s.stage(&kwargs)?;
        Ok(match s.text(&name, stage)? {
            Some(t) => Value::from(t),
            None => Value::from_object(Pending),
        })
    });
    let s = st.clone();
    env.add_function(
        "json",
        move |name: String, key: String, kwargs: Kwargs| -> Result<Value, Error> {
            let stage = s.stage(&kwargs)?;
            let Some(text) = s.text(&name, stage)? else {
                return Ok(Value::from_object(Pending));
            };
            let shown = || s.shown(&name);
            let doc: serde_json::Value =
                serde_json::from_str(&text).map_err(|_| s.fail(Cause::NotJson(Some(shown()))))?;
            let serde_json::Value::Object(map) = doc else {
                return Err(s.fail(Cause::NotObject(shown())));
            };
            match map.get(&key) {
                Some(serde_json::Value::String(v)) => Ok(Value::from(v.as_str())),
                Some(v) => Ok(Value::from(v.to_string())),
                None => Err(s.fail(Cause::NoKey(Some(shown()), vec![s.shown(&key)]))),
            }
        },
    );
    let s = st.clone();
    env.add_filter("from_json", move |v: Value| -> Result<Value, Error> {
        if v.downcast_object_ref::<Pending>().is_some() {
            return Ok(v);
        }
        let Some(text) = v.as_str() else {
            return Err(s.fail(Cause::NotJson(None)));
        };
        let origin = s.origin(text);
        let doc: serde_json::Value = serde_json::from_str(text)
            .map_err(|_| s.fail(Cause::NotJson(origin.as_ref().map(|n| s.shown(n.as_str())))))?;
        Ok(to_value(doc, &s, &origin, Vec::new()))
    });
}

fn to_value(
    v: serde_json::Value,
    st: &Arc<PassState>,
    origin: &Option<SecretName>,
    path: Vec<String>,
) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::from(()),
        J::Bool(b) => Value::from(b),
        J::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Value::from(i),
            (None, Some(u), _) => Value::from(u),
            (_, _, Some(f)) => Value::from(f),
            _ => Value::from(n.to_string()),
        },
        J::String(s) => Value::from(s),
        J::Array(items) => Value::from(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    let mut p = path.clone();
                    p.push(i.to_string());
                    to_value(item, st, origin, p)
                })
                .collect::<Vec<_>>(),
        ),
        J::Object(map) => Value::from_object(JsonObject {
            map,
            st: st.clone(),
            origin: origin.clone(),
            path,
        }),
    }
}

/// A JSON object from from_json: fields as attributes, in the secret's
/// order; a missing field is undefined (an error under strict undefined),
/// and is noted so that the log can name it.
struct JsonObject {
    map: serde_json::Map<String, serde_json::Value>,
    st: Arc<PassState>,
    origin: Option<SecretName>,
    path: Vec<String>,
}

impl fmt::Debug for JsonObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JsonObject({} keys)", self.map.len())
    }
}

impl Object for JsonObject {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let k = key.as_str()?;
        let mut path = self.path.clone();
        path.push(k.to_string());
        match self.map.get(k) {
            Some(v) => Some(to_value(v.clone(), &self.st, &self.origin, path)),
            None => {
                let secret = self.origin.as_ref().map(|n| self.st.shown(n.as_str()));
                let path = path.iter().map(|p| self.st.shown(p)).collect();
                *self.st.missing_key.lock() = Some(Cause::NoKey(secret, path));
                None
            }
        }
    }

    fn enumerate(self: &Arc<Self>) -> minijinja::value::Enumerator {
        minijinja::value::Enumerator::Values(
            self.map.keys().map(|k| Value::from(k.as_str())).collect(),
        )
    }
}

/// Stands for a secret not fetched yet, so that the pass goes on and finds
/// more of the secrets it needs; its output is thrown away.
#[derive(Debug)]
struct Pending;

impl Object for Pending {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }
    fn get_value(self: &Arc<Self>, _key: &Value) -> Option<Value> {
        Some(Value::from_object(Pending))
    }
    fn render(self: &Arc<Self>, _f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Ok(())
    }
}

/// The output buffer: bounded, and its old allocation zeroed when it grows
/// (a plain Vec leaves copies of the bytes behind in freed memory).
#[derive(Default)]
struct Capped {
    buf: Zeroizing<Vec<u8>>,
    over: bool,
}

impl io::Write for Capped {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let need = self.buf.len() + b.len();
        if need > MAX_OUTPUT {
            self.over = true;
            return Err(io::Error::other("rendered output too large"));
        }
        if need > self.buf.capacity() {
            let cap = need.max(self.buf.capacity() * 2).clamp(256, MAX_OUTPUT);
            let mut grown = Zeroizing::new(Vec::with_capacity(cap));
            grown.extend_from_slice(&self.buf);
            // The old buffer is zeroed as it drops.
            self.buf = grown;
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::VersionId;

    fn version(value: &str) -> Fetched {
        Fetched::Value(Arc::new(SecretVersion::new(
            VersionId::new("v1"),
            SecretBytes::new(value.as_bytes().to_vec()),
            std::time::SystemTime::UNIX_EPOCH,
        )))
    }

    fn key(name: &str, stage: Stage) -> Key {
        (SecretName::new(name), stage)
    }

    /// Renders with passes, fetching from `store` as asked: (passes, result).
    fn render_all(source: &str, store: &HashMap<Key, Fetched>) -> (usize, Result<String, Failure>) {
        let mut fetched = HashMap::new();
        for pass in 1..=8 {
            match render("t", source, Arc::new(fetched.clone())) {
                Pass::Need(keys) => {
                    for k in keys {
                        let f = store.get(&k).cloned().unwrap_or(Fetched::NoSecret);
                        fetched.insert(k, f);
                    }
                }
                Pass::Done { bytes, .. } => {
                    return (
                        pass,
                        Ok(String::from_utf8(bytes.as_bytes().to_vec()).unwrap()),
                    );
                }
                Pass::Failed { failure, .. } => return (pass, Err(failure)),
            }
        }
        panic!("too many passes");
    }

    fn db_store() -> HashMap<Key, Fetched> {
        HashMap::from([
            (
                key("prod/db", Stage::Current),
                version(
                    r#"{"username":"u","password":"p","port":5432,"host":"h","tls":{"ca":"C"}}"#,
                ),
            ),
            (
                key("prod/db", Stage::Previous),
                version(r#"{"password":"old"}"#),
            ),
            (key("prod/api", Stage::Current), version("tok")),
            (
                key("bin", Stage::Current),
                Fetched::Value(Arc::new(SecretVersion::new(
                    VersionId::new("b"),
                    SecretBytes::new(vec![0xff, 0xfe]),
                    std::time::SystemTime::UNIX_EPOCH,
                ))),
            ),
        ])
    }

    #[test]
    fn a_template_using_two_secrets_renders_in_two_passes() {
        let src = "{% set db = secret(\"prod/db\") | from_json %}\
                   {{ db.host }}:{{ db.port }}:*:{{ db.username }}:{{ db.password }}\n\
                   token={{ secret(\"prod/api\") }}\n";
        let (passes, out) = render_all(src, &db_store());
        assert_eq!(out.unwrap(), "h:5432:*:u:p\ntoken=tok\n");
        // Both secrets are found in the first pass (placeholders let it go on).
        assert_eq!(passes, 2);
    }

    #[test]
    fn json_gives_raw_strings_and_compact_json_and_stage_reads_previous() {
        let src = "{{ json('prod/db', 'password') }} {{ json('prod/db', 'port') }} \
                   {{ json('prod/db', 'tls') }} {{ json('prod/db', 'password', stage='AWSPREVIOUS') }} \
                   {{ (secret('prod/db', stage='AWSPREVIOUS') | from_json).password }}";
        let (_, out) = render_all(src, &db_store());
        assert_eq!(out.unwrap(), r#"p 5432 {"ca":"C"} old old"#);
    }

    #[test]
    fn a_missing_key_names_the_key_the_secret_and_the_line() {
        let src = "a\n{% set db = secret('prod/db') | from_json %}\n{{ db.passwd }}\n";
        let (_, out) = render_all(src, &db_store());
        let f = out.unwrap_err();
        assert_eq!(f.line, Some(3));
        assert_eq!(
            f.cause,
            Cause::NoKey(
                Some(Shown(Some("prod/db".into()))),
                vec![Shown(Some("passwd".into()))]
            )
        );
        assert_eq!(
            f.to_string(),
            "line 3: missing key \"passwd\" in secret \"prod/db\""
        );
        let (_, out) = render_all("\n{{ json('prod/db', 'nokey') }}", &db_store());
        let f = out.unwrap_err();
        assert_eq!(
            f.to_string(),
            "line 2: missing key \"nokey\" in secret \"prod/db\""
        );
        let (_, out) = render_all("{{ (secret('prod/db') | from_json).tls.crt }}", &db_store());
        assert_eq!(
            out.unwrap_err().to_string(),
            "line 1: missing key \"tls\".\"crt\" in secret \"prod/db\""
        );
    }

    #[test]
    fn missing_secrets_stages_binary_values_and_bad_stages_fail_naming_them() {
        let store = db_store();
        for (src, want) in [
            ("{{ secret('nope') }}", "line 1: missing secret \"nope\""),
            (
                "x\n{{ secret('prod/api', stage='AWSPREVIOUS') }}",
                "line 2: secret \"prod/api\" has no AWSPREVIOUS version",
            ),
            (
                "{{ secret('bin') }}",
                "line 1: secret \"bin\" is binary, not text",
            ),
            (
                "{{ secret('prod/api', stage='AWSPENDING') }}",
                "line 1: stage \"AWSPENDING\" is not AWSCURRENT or AWSPREVIOUS",
            ),
            (
                "{{ secret('prod/api') | from_json }}",
                "line 1: secret \"prod/api\" is not JSON",
            ),
            (
                "{{ json('prod/api', 'k') }}",
                "line 1: secret \"prod/api\" is not JSON",
            ),
        ] {
            let mut store = store.clone();
            store.insert(key("prod/api", Stage::Previous), Fetched::NoStage);
            let (_, out) = render_all(src, &store);
            assert_eq!(out.unwrap_err().to_string(), want, "{src}");
        }
    }

    #[test]
    fn a_name_computed_from_a_value_is_not_shown() {
        // The missing secret's name is prod/api's value ("tok"): not logged.
        let (_, out) = render_all("{{ secret(secret('prod/api')) }}", &db_store());
        let msg = out.unwrap_err().to_string();
        assert!(!msg.contains("tok"), "{msg}");
        assert!(msg.contains("not shown"), "{msg}");
        let (_, out) = render_all(
            "{{ (secret('prod/db') | from_json)[secret('prod/api')] }}",
            &db_store(),
        );
        let msg = out.unwrap_err().to_string();
        assert!(!msg.contains("tok"), "{msg}");
    }

    #[test]
    fn engine_errors_give_their_kind_and_line_never_their_detail() {
        // minijinja's detail here would quote the value ("p").
        let (_, out) = render_all("\n\n{{ json('prod/db', 'password') + 1 }}", &db_store());
        let f = out.unwrap_err();
        assert_eq!(f.line, Some(3));
        assert_eq!(f.cause, Cause::Engine(ErrorKind::InvalidOperation));
        assert_eq!(f.to_string(), "line 3: invalid operation");
    }

    #[test]
    fn syntax_errors_are_found_at_load_with_their_line() {
        let f = check("t", "ok\n{{ secret('a') \n").unwrap_err();
        assert_eq!(f.line, Some(2));
        assert!(matches!(f.cause, Cause::Syntax(_)), "{f:?}");
        assert!(check("t", "{% for x in [1] %}{{ x }}{% endfor %}\n").is_ok());
    }

    #[test]
    fn output_keeps_the_trailing_newline_and_is_not_escaped() {
        let (_, out) = render_all("<{{ '&' }}>\n", &HashMap::new());
        assert_eq!(out.unwrap(), "<&>\n");
    }

    #[test]
    fn parsed_json_reads_as_usual_in_the_secrets_order() {
        let src = "{% set db = secret('prod/db') | from_json %}\
                   {{ db['port'] }} {{ db.port is defined }} {{ db.nope | default('d') }} \
                   {% for k, v in db | items %}{{ k }}{% if not loop.last %},{% endif %}{% endfor %} \
                   {{ db.tls.ca }} {{ db | length }}";
        let (_, out) = render_all(src, &db_store());
        assert_eq!(
            out.unwrap(),
            "5432 True d username,password,port,host,tls C 5"
        );
    }

    #[test]
    fn output_is_bounded() {
        let (_, out) = render_all(
            "{% for i in range(2000) %}{% for j in range(100) %}xxxxxxxxxx{% endfor %}{% endfor %}",
            &HashMap::new(),
        );
        assert_eq!(out.unwrap_err().cause, Cause::TooLarge);
    }

    #[test]
    fn used_keys_are_those_of_the_final_pass() {
        let store = db_store();
        let mut fetched = HashMap::new();
        fetched.insert(
            key("prod/api", Stage::Current),
            store[&key("prod/api", Stage::Current)].clone(),
        );
        match render("t", "{{ secret('prod/api') }}", Arc::new(fetched)) {
            Pass::Done { used, .. } => {
                assert_eq!(used, HashSet::from([key("prod/api", Stage::Current)]))
            }
            _ => panic!("renders"),
        }
    }
}

#[cfg(test)]
#[test]
fn twice_the_longest_chain_a_source_may_hold_renders_on_a_worker_sized_stack() {
    let n = super::def::MAX_OPERATORS * 2;
    let source = format!("{{{{ 1{} }}}}", "|string".repeat(n));
    let t = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            check("deep", &source).map_err(|e| e.to_string())?;
            let out = render("deep", &source, Arc::new(HashMap::new()));
            match out {
                Pass::Done { bytes, .. } => Ok(bytes.as_bytes().to_vec()),
                _ => Err("did not render".to_string()),
            }
        })
        .unwrap();
    assert_eq!(t.join().expect("no stack overflow").unwrap(), b"1");
}
