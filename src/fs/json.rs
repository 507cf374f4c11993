//! JSON fields as files: `<secret>/json/<key>` is one top-level key of
//! AWSCURRENT when that is a JSON object. Reads follow `current` (same
//! cache, TTL, kernel coherence); a write, create or unlink puts AWSCURRENT
//! as it is at commit time with that one key changed, every other key's
//! text and the keys' order kept.

use std::sync::Arc;
use std::time::SystemTime;

use zeroize::Zeroizing;

use super::Fs;
use super::names;
use super::types::{Caller, Entry, Opened, slice};
use super::write_state::WriteState;
use crate::error::{Error, Result};
use crate::inode::{Ino, Node};
use crate::process;
use crate::store::{SecretBytes, SecretName, SecretVersion, Selector, Stage};
use crate::tree::{self, Warned};

/// What a commit does to a key.
#[derive(Clone, Copy, Debug)]
pub(super) enum Edit<'a> {
    /// Set it to the bytes written (its type kept; see `encode`).
    Set(&'a [u8]),
    /// The same, for a handle opened on a key that existed: if the key was
    /// removed since, ENOENT (its type is not known any more, and the
    /// removal is not undone silently).
    Replace(&'a [u8]),
    Remove,
}

fn not_an_object() -> Error {
    Error::Invalid("AWSCURRENT is not a JSON object".into())
}

/// Whether a key can be shown as a file name.
pub(super) fn is_file_name(key: &str) -> bool {
    tree::valid_component(key) && !key.contains('/')
}

/// JSON text without the whitespace between tokens (the text is valid JSON:
/// only strings need care).
fn compact(raw: &str) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(raw.len()));
    let (mut in_string, mut escaped) = (false, false);
    for &b in raw.as_bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if b.is_ascii_whitespace() {
            continue;
        }
        out.push(b);
    }
    out
}

fn is_string(raw: &str) -> bool {
    raw.starts_with('"')
}

/// What a key's file holds: a string's text (no quotes, no newline), any
/// other value as compact JSON.
fn text_of(raw: &str) -> Zeroizing<Vec<u8>> {
    if is_string(raw)
        && let Ok(s) = serde_json::from_str::<String>(raw)
    {
        return Zeroizing::new(s.into_bytes());
    }
    compact(raw)
}

/// `key`'s file content, if the version's value is a JSON object holding it.
pub(super) fn key_text(v: &SecretVersion, key: &str) -> Option<SecretBytes> {
    let raw = v.json()?.raw(v.value.as_bytes(), key)?;
    Some(SecretBytes::new(std::mem::take(&mut *text_of(raw))))
}

/// The keys of the version's JSON object; None when it is not one.
pub(super) fn keys(v: &SecretVersion) -> Option<Vec<String>> {
    Some(v.json()?.keys().map(str::to_string).collect())
}

/// The JSON text of `written` for a key now holding `old` (None: a new
/// key). The key keeps its type, so that what is read can be written back:
/// a string (or a new key) takes the bytes as a string; any other value
/// takes them as JSON.
fn encode(written: &[u8], old: Option<&str>) -> Result<Zeroizing<Vec<u8>>> {
    let text = std::str::from_utf8(written)
        .map_err(|_| Error::Invalid("a JSON value must be UTF-8".into()))?;
    if old.is_none_or(is_string) {
        // Escaping makes a byte at most six ("\u0000"): no regrowth leaves
        // an unzeroed copy behind.
        let mut out = Zeroizing::new(Vec::with_capacity(text.len() * 6 + 2));
        serde_json::to_writer(&mut *out, text)
            .map_err(|_| Error::Invalid("cannot encode the value".into()))?;
        return Ok(out);
    }
    let trimmed = text.trim_matches(|c: char| c.is_ascii_whitespace());
    serde_json::from_str::<&serde_json::value::RawValue>(trimmed).map_err(|_| {
        Error::Invalid("this key holds a JSON value that is not a string: write JSON".into())
    })?;
    Ok(compact(trimmed))
}

/// AWSCURRENT (`current`) with `key` changed: its value replaced in place,
/// a new key added last, or the key removed. Every other byte of the text
/// stays as it was, and the value keeps its kind (a binary secret stays
/// binary). Setting a key to what it holds returns `current`'s value
/// itself, so that no version is made.
pub(super) fn merged(current: &SecretVersion, key: &str, edit: Edit<'_>) -> Result<SecretBytes> {
    let index = current.json().ok_or_else(not_an_object)?;
    let text = current.value.as_bytes();
    let old = index.raw(text, key);
    let mut out = match edit {
        Edit::Replace(_) if old.is_none() => return Err(Error::NotFound),
        Edit::Set(written) | Edit::Replace(written) => {
            let new = encode(written, old)?;
            let as_str = std::str::from_utf8(&new).expect("JSON text is UTF-8");
            // Unchanged: the same string (however escaped), or the same
            // JSON text; a string and a number of the same text differ.
            let same = old.is_some_and(|o| {
                if is_string(o) {
                    is_string(as_str) && text_of(o) == text_of(as_str)
                } else {
                    compact(o)[..] == new[..]
                }
            });
            if same {
                return Ok(current.value.clone());
            }
            index.set(text, key, &new)
        }
        Edit::Remove => index.remove(text, key).ok_or(Error::NotFound)?,
    };
    Ok(current.value.of_kind(std::mem::take(&mut *out)))
}

/// The path install(1)'s replacement of a key is remembered under.
pub(super) fn key_path(s: &SecretName, key: &str) -> String {
    format!("{s}/json/{key}")
}

/// The JSON views' own state: which keys were warned about.
#[derive(Default)]
pub struct JsonViews {
    warned: Warned,
}

impl Fs {
    /// AWSCURRENT, as `current` reads it (cache, TTL).
    async fn json_source(
        &self,
        s: &SecretName,
    ) -> Result<(Arc<SecretVersion>, std::time::Duration)> {
        self.version(s, Selector::Stage(Stage::Current)).await
    }

    /// The keys `json/` lists: those that can be file names (the others
    /// are warned about once per secret and key); none when AWSCURRENT is
    /// not a JSON object.
    pub(super) async fn json_keys(&self, s: &SecretName) -> Result<Vec<String>> {
        let (v, _) = self.json_source(s).await?;
        let all = keys(&v).unwrap_or_default();
        Ok(all
            .into_iter()
            .filter(|k| {
                let ok = is_file_name(k);
                if !ok && self.json.warned.first_time(&format!("{s}\0json\0{k}")) {
                    let shown: String = k.chars().take(64).collect();
                    tracing::warn!(secret = %s, key = %shown.escape_debug(),
                        "JSON key cannot be a file name; left out of json/");
                }
                ok
            })
            .collect())
    }

    /// The key's text in AWSCURRENT, or NotFound.
    async fn json_text(&self, s: &SecretName, key: &str) -> Result<Arc<SecretVersion>> {
        let (v, _) = self.json_source(s).await?;
        let text = key_text(&v, key).ok_or(Error::NotFound)?;
        Ok(Arc::new(SecretVersion::new(v.id.clone(), text, v.created)))
    }

    /// A key file's attributes: its text's size, AWSCURRENT's date; the
    /// kernel's view follows AWSCURRENT's version, as for `current`.
    pub(super) async fn json_attr(&self, ino: Ino, s: &SecretName, key: &str) -> Result<Entry> {
        if !is_file_name(key) {
            return Err(Error::NotFound);
        }
        let (v, ttl) = self.json_source(s).await?;
        let Some(text) = key_text(&v, key) else {
            // A key being created: it exists once its writer's close puts it.
            if self.kernel.writing(ino) {
                return Ok(Entry::uncached(self.file_attr(
                    ino,
                    0,
                    SystemTime::now(),
                    true,
                )));
            }
            return Err(Error::NotFound);
        };
        let shown = Arc::new(SecretVersion::new(v.id.clone(), text, v.created));
        let shown = self.kernel.tell(ino, &shown);
        Ok(Entry {
            attr: self.file_attr(ino, shown.value.len() as u64, shown.created, true),
            ttl,
        })
    }

    /// A read handle pins the key's text of one AWSCURRENT version.
    pub(super) async fn open_json_read(&self, s: &SecretName, key: &str) -> Result<Opened> {
        let version = self.json_text(s, key).await?;
        Ok(self.read_handle(version))
    }

    /// A read with no handle (no-open mode, read-only mounts).
    pub(super) async fn json_read(
        &self,
        s: &SecretName,
        key: &str,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>> {
        let v = self.json_text(s, key).await?;
        Ok(slice(v.value.as_bytes(), offset, size))
    }

    /// Open for writing: without O_TRUNC the handle starts from the key's
    /// text in AWSCURRENT now (not a cached copy), as `current` does.
    pub(super) async fn open_json_write(
        &self,
        ino: Ino,
        s: &SecretName,
        key: &Arc<str>,
        flags: i32,
        pid: u32,
    ) -> Result<Opened> {
        if self.cfg.read_only {
            return Err(Error::ReadOnly);
        }
        let mut buf = Zeroizing::new(Vec::new());
        if flags & libc::O_TRUNC == 0 {
            let cur = self.current_now(s).await?.ok_or(Error::NotFound)?;
            let index = cur.json().ok_or_else(not_an_object)?;
            let raw = index.raw(cur.value.as_bytes(), key);
            buf = text_of(raw.ok_or(Error::NotFound)?);
        }
        let state = WriteState::new(ino, s.clone(), buf, flags, process::tgid(pid))
            .json_key(key.clone(), true);
        Ok(self.write_handle(state))
    }

    /// Whether `name` in `json/` is a key (a create or a rename onto it
    /// puts that key): unless it is named like a temporary file and
    /// AWSCURRENT has no such key now.
    pub(super) async fn json_is_key(&self, s: &SecretName, name: &str) -> Result<bool> {
        if !is_file_name(name) {
            return Err(Error::Invalid("bad file name".into()));
        }
        if !names::is_temp_name(name) {
            return Ok(true);
        }
        let cur = self.current_now(s).await?.ok_or(Error::NotFound)?;
        Ok(cur.json().ok_or_else(not_an_object)?.contains(name))
    }

    /// create(2) in `json/`: a temporary file (see `is_temp_name`), or a
    /// handle that starts empty whose commit adds the key (last) or
    /// replaces it.
    pub(super) async fn json_create(
        &self,
        s: SecretName,
        name: &str,
        flags: i32,
        mode: u32,
        caller: Caller,
    ) -> Result<(Entry, Opened)> {
        if !is_file_name(name) {
            return Err(Error::Invalid("bad file name".into()));
        }
        let owner = process::tgid(caller.pid);
        // install(1) unlinked the key to create it anew: the key is there.
        let replacing = self.writes.end_replacing(&key_path(&s, name), owner);
        let cur = self.current_now(&s).await?.ok_or(Error::NotFound)?;
        let index = cur.json().ok_or_else(not_an_object)?;
        let existing = index.raw(cur.value.as_bytes(), name);
        if existing.is_none() && !replacing && names::is_temp_name(name) {
            let dir = Arc::from(format!("{s}/json"));
            return self.create_temp((dir, Arc::from(name)), flags, mode, caller);
        }
        if flags & libc::O_EXCL != 0 && existing.is_some() && !replacing {
            return Err(Error::Exists);
        }
        // The key may exist although the lookup (from the cache) did not
        // see it: without O_TRUNC, build on what it holds.
        let buf = match existing {
            Some(raw) if flags & libc::O_TRUNC == 0 && !replacing => text_of(raw),
            _ => Zeroizing::new(Vec::new()),
        };
        let key: Arc<str> = Arc::from(name);
        let ino = self
            .inodes
            .assign(Node::JsonKey(s.clone(), key.clone()), true);
        let state = WriteState::new(ino, s, buf, flags, owner).json_key(key, existing.is_some());
        let opened = self.write_handle(state);
        let attr = self.file_attr(ino, 0, SystemTime::now(), true);
        Ok((Entry::uncached(attr), opened))
    }

    /// unlink(2) in `json/`: a version without the key (ENOENT if it is not
    /// there at commit time).
    pub(super) async fn json_unlink(
        &self,
        s: &SecretName,
        name: &str,
        caller: Caller,
    ) -> Result<()> {
        if self.cfg.read_only {
            return Err(Error::ReadOnly);
        }
        let owner = process::tgid(caller.pid);
        let comm = process::comm(owner);
        let backup: super::temp::TempKey = (
            Arc::from(format!("{s}/json")),
            Arc::from(format!("{name}~")),
        );
        let saving =
            names::KEY_REPLACERS.contains(&comm.as_str()) && self.temps.named(&backup).is_some();
        if names::REPLACERS.contains(&comm.as_str()) || saving {
            // install(1) unlinks, then creates: one put, the key in place.
            tracing::info!(secret = %s, pid = caller.pid, program = %comm, "a program replaces a JSON key: hidden from that process until it creates it");
            self.writes.start_replacing(&key_path(s, name), owner);
            return Ok(());
        }
        self.put_json(s, name, Edit::Remove).await.map(|_| ())
    }

    /// The put of a key's change, merged inside the secret's put turn with
    /// the AWSCURRENT the "unchanged" check uses, so that a change another
    /// writer made to another key since open is kept.
    pub(super) async fn put_json(&self, s: &SecretName, key: &str, edit: Edit<'_>) -> Result<bool> {
        if let Edit::Set(w) | Edit::Replace(w) = edit
            && w.is_empty()
        {
            return Err(Error::Invalid("an empty value cannot be stored".into()));
        }
        // The put's coherence step covers this key's file too.
        self.put_with(s, false, |cur| {
            merged(cur.ok_or(Error::NotFound)?, key, edit)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DB: &str = r#"{"username":"u","password":"p","port":5432}"#;

    fn ver(doc: &[u8]) -> SecretVersion {
        SecretVersion::new(
            crate::store::VersionId::new("v"),
            SecretBytes::new(doc.to_vec()),
            SystemTime::UNIX_EPOCH,
        )
    }

    fn set(doc: &str, key: &str, written: &str) -> Result<String> {
        merged(&ver(doc.as_bytes()), key, Edit::Set(written.as_bytes()))
            .map(|b| String::from_utf8(b.as_bytes().to_vec()).unwrap())
    }

    fn text(doc: &str, key: &str) -> Option<String> {
        key_text(&ver(doc.as_bytes()), key)
            .map(|b| String::from_utf8(b.as_bytes().to_vec()).unwrap())
    }

    #[test]
    fn a_change_of_type_is_a_change_and_a_removed_key_is_not_brought_back() {
        let doc = r#"{"port":5432,"flag":null}"#;
        let made = merged(&ver(doc.as_bytes()), "port", Edit::Set(b"\"5432\"")).unwrap();
        assert_eq!(made.as_text(), Some(r#"{"port":"5432","flag":null}"#));
        let same = merged(&ver(doc.as_bytes()), "port", Edit::Set(b"5432\n")).unwrap();
        assert_eq!(same.as_bytes(), doc.as_bytes(), "same number: unchanged");
        assert!(matches!(
            merged(&ver(doc.as_bytes()), "gone", Edit::Replace(b"1")),
            Err(Error::NotFound)
        ));
    }

    #[test]
    fn strings_read_as_raw_text_and_other_values_as_compact_json() {
        let doc =
            r#"{"s": "a \"q\"\n", "n": 5432, "o": { "k" : [1, 2, "x y"] }, "b": true, "z": null}"#;
        assert_eq!(text(doc, "s").unwrap(), "a \"q\"\n");
        assert_eq!(text(doc, "n").unwrap(), "5432");
        assert_eq!(text(doc, "o").unwrap(), r#"{"k":[1,2,"x y"]}"#);
        assert_eq!(text(doc, "b").unwrap(), "true");
        assert_eq!(text(doc, "z").unwrap(), "null");
        assert_eq!(text(doc, "missing"), None);
    }

    #[test]
    fn a_value_that_is_not_a_json_object_has_no_keys() {
        for v in [
            &b"plain"[..],
            b"[1,2]",
            b"\"s\"",
            b"5",
            b"{\"a\":",
            b"\xff\xfe",
        ] {
            assert!(keys(&ver(v)).is_none(), "{v:?}");
            assert!(matches!(
                merged(&ver(v), "a", Edit::Set(b"x")),
                Err(Error::Invalid(_))
            ));
            assert!(matches!(
                merged(&ver(v), "a", Edit::Remove),
                Err(Error::Invalid(_))
            ));
        }
    }

    #[test]
    fn a_write_to_a_key_keeps_other_keys_in_order() {
        assert_eq!(
            set(DB, "password", "q").unwrap(),
            r#"{"username":"u","password":"q","port":5432}"#
        );
    }

    #[test]
    fn other_keys_keep_their_text_exactly() {
        let doc = r#"{ "big": 123456789012345678901234567890, "f": 1.0e2, "o": {"a": 1}, "\u00e9": "v", "k": "v" }"#;
        assert_eq!(
            set(doc, "k", "w").unwrap(),
            r#"{ "big": 123456789012345678901234567890, "f": 1.0e2, "o": {"a": 1}, "\u00e9": "v", "k": "w" }"#
        );
        assert_eq!(
            set(doc, "new", "x").unwrap(),
            r#"{ "big": 123456789012345678901234567890, "f": 1.0e2, "o": {"a": 1}, "\u00e9": "v", "k": "v", "new": "x" }"#
        );
    }

    #[test]
    fn a_binary_value_stays_binary() {
        let v = SecretVersion::new(
            crate::store::VersionId::new("v"),
            SecretBytes::binary(DB.as_bytes().to_vec()),
            SystemTime::UNIX_EPOCH,
        );
        let made = merged(&v, "password", Edit::Set(b"q")).unwrap();
        assert_eq!(
            made.as_text(),
            Some(r#"{"username":"u","password":"q","port":5432}"#)
        );
        assert_eq!(made.stored_as_text(), None, "sent as SecretBinary");
        let text = merged(&ver(DB.as_bytes()), "password", Edit::Set(b"q")).unwrap();
        assert!(text.stored_as_text().is_some());
    }

    #[test]
    fn a_key_keeps_its_type() {
        // A number stays JSON: surrounding whitespace (echo's newline) is fine.
        assert_eq!(
            set(DB, "port", "5433\n").unwrap(),
            r#"{"username":"u","password":"p","port":5433}"#
        );
        assert!(matches!(set(DB, "port", "abc"), Err(Error::Invalid(_))));
        // A string stays a string, whatever it looks like.
        assert_eq!(
            set(DB, "password", "5\n\"x\"").unwrap(),
            r#"{"username":"u","password":"5\n\"x\"","port":5432}"#
        );
        assert!(matches!(
            merged(&ver(DB.as_bytes()), "password", Edit::Set(b"\xff")),
            Err(Error::Invalid(_))
        ));
        // Objects are written as JSON, and read back compact.
        let doc = r#"{"o":{"a":1}}"#;
        assert_eq!(
            set(doc, "o", r#" { "a" : 2 } "#).unwrap(),
            r#"{"o":{"a":2}}"#
        );
    }

    #[test]
    fn what_is_read_can_be_written_back_unchanged() {
        let doc = "{\n  \"s\": \"t\\u0065xt\",\n  \"o\": {\"a\": [1, 2]}\n}";
        for key in ["s", "o"] {
            let read = text(doc, key).unwrap();
            assert_eq!(set(doc, key, &read).unwrap(), doc, "{key}");
        }
    }

    #[test]
    fn a_new_key_goes_last_and_a_removed_one_goes() {
        assert_eq!(
            set(DB, "host", "db.example").unwrap(),
            r#"{"username":"u","password":"p","port":5432,"host":"db.example"}"#
        );
        let removed = merged(&ver(DB.as_bytes()), "username", Edit::Remove).unwrap();
        assert_eq!(removed.as_bytes(), br#"{"password":"p","port":5432}"#);
        assert!(matches!(
            merged(&ver(DB.as_bytes()), "nope", Edit::Remove),
            Err(Error::NotFound)
        ));
        let last = merged(&ver(br#"{"a":1}"#), "a", Edit::Remove).unwrap();
        assert_eq!(last.as_bytes(), b"{}");
    }

    #[test]
    fn keys_keep_their_order_and_bad_file_names_are_told_apart() {
        let doc = r#"{"b":1,"a":2,"":3,".":4,"..":5,"x/y":6,"n\u0000ul":7}"#;
        let all = keys(&ver(doc.as_bytes())).unwrap();
        assert_eq!(all, ["b", "a", "", ".", "..", "x/y", "n\0ul"]);
        let shown: Vec<_> = all.into_iter().filter(|k| is_file_name(k)).collect();
        assert_eq!(shown, ["b", "a"]);
        assert!(!is_file_name(&"k".repeat(256)));
        assert!(is_file_name(&"k".repeat(255)));
    }

    #[test]
    fn compact_leaves_strings_alone() {
        let c = compact(r#"[ "a b\" c" , { "k\\" : " " } ]"#);
        assert_eq!(&c[..], br#"["a b\" c",{"k\\":" "}]"#);
    }
}
