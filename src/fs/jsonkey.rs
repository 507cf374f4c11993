//! A JSON key as a file's text, and an edit of one key merged into a value:
//! what `json/<key>` reads (a string's text, any other value as compact
//! JSON) and what its write, create or unlink puts (AWSCURRENT as it is at
//! commit time with that one key changed, every other key's text and the
//! keys' order kept). A leaf: the json/ view reads with it, the put
//! pipeline merges with it.

use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::store::{SecretBytes, SecretName, SecretVersion};
use crate::tree;

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

pub(super) fn not_an_object() -> Error {
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
pub(super) fn text_of(raw: &str) -> Zeroizing<Vec<u8>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

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
