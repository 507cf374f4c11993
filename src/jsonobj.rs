//! A JSON object's top-level members located in its text: where each key
//! and each value is. Built once per version (it lives in the version and
//! goes with it), so that listing, looking up and reading a key cost that
//! key, not a parse of the whole object; and an edit splices one member,
//! leaving every other byte of the text exactly as it was (escaped key
//! names, number formats, whitespace). Holds offsets and key names only,
//! never a copy of a value.

use std::fmt;
use std::ops::Range;

use indexmap::IndexMap;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use zeroize::Zeroizing;

#[derive(Clone, Debug)]
struct Member {
    /// The key's text, quotes included.
    key: Range<usize>,
    /// The value's text.
    value: Range<usize>,
    /// Which key it is (its place in `Index::keys`).
    name: usize,
}

/// The members of one JSON object text.
#[derive(Clone, Debug)]
pub struct Index {
    members: Vec<Member>,
    /// Each key once, in the order of its first appearance, with the member
    /// that holds its value: a key given twice keeps its first place and its
    /// last value (as most parsers read it).
    keys: IndexMap<String, usize>,
    /// Where the object's `{` is.
    open: usize,
}

/// The members as serde reads them: keys decoded, values borrowed text.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    out.push((k, map.next_value::<&'de RawValue>()?));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn skip(text: &[u8], mut at: usize, also: u8) -> usize {
    while at < text.len() && (text[at].is_ascii_whitespace() || text[at] == also) {
        at += 1;
    }
    at
}

impl Index {
    /// The index of `text` when it is a UTF-8 JSON object, else None.
    pub fn build(text: &[u8]) -> Option<Self> {
        let s = std::str::from_utf8(text).ok()?;
        let Members(found) = serde_json::from_str(s).ok()?;
        let base = s.as_ptr() as usize;
        let open = skip(text, 0, b' ');
        let mut at = open + 1;
        let mut members = Vec::with_capacity(found.len());
        let mut keys = IndexMap::with_capacity(found.len());
        for (k, raw) in found {
            let start = raw.get().as_ptr() as usize - base;
            let value = start..start + raw.get().len();
            // Between the previous value and this key: whitespace and a
            // comma; between the key and its value: whitespace and a colon.
            let key_start = skip(text, at, b',');
            let mut key_end = value.start;
            while key_end > key_start && text[key_end - 1] != b'"' {
                key_end -= 1;
            }
            let entry = keys.entry(k);
            let name = entry.index();
            *entry.or_insert(0) = members.len();
            at = value.end;
            members.push(Member {
                key: key_start..key_end,
                value,
                name,
            });
        }
        Some(Self {
            members,
            keys,
            open,
        })
    }

    /// The keys, each once, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.keys.contains_key(key)
    }

    /// `key`'s value as written in `text` (the text this index was built on).
    pub fn raw<'t>(&self, text: &'t [u8], key: &str) -> Option<&'t str> {
        let m = &self.members[*self.keys.get(key)?];
        std::str::from_utf8(&text[m.value.clone()]).ok()
    }

    /// `text` with `key` set to the JSON text `new`: its value replaced in
    /// place, or, for a new key, a member added last in the style of the
    /// others. Every other byte stays.
    pub fn set(&self, text: &[u8], key: &str, new: &[u8]) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(
            text.len() + key.len() * 6 + new.len() + 8,
        ));
        if let Some(&i) = self.keys.get(key) {
            let v = &self.members[i].value;
            out.extend_from_slice(&text[..v.start]);
            out.extend_from_slice(new);
            out.extend_from_slice(&text[v.end..]);
            return out;
        }
        let name = serde_json::to_string(key).expect("a string encodes");
        let (at, sep, colon): (usize, &[u8], &[u8]) = match self.members.as_slice() {
            [] => (self.open + 1, b"", b":"),
            [.., last] => {
                let sep = match self.members.len() {
                    1 => &b","[..],
                    n => &text[self.members[n - 2].value.end..last.key.start],
                };
                (last.value.end, sep, &text[last.key.end..last.value.start])
            }
        };
        out.extend_from_slice(&text[..at]);
        out.extend_from_slice(sep);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(colon);
        out.extend_from_slice(new);
        out.extend_from_slice(&text[at..]);
        out
    }

    /// `text` without `key` (every member of that name), or None when it
    /// has no such key. Each member goes with one separator next to it.
    pub fn remove(&self, text: &[u8], key: &str) -> Option<Zeroizing<Vec<u8>>> {
        let name = self.keys.get_index_of(key)?;
        let mut keep = vec![true; self.members.len()];
        let mut cuts: Vec<Range<usize>> = Vec::new();
        // From the last member to the first, so that the members a cut is
        // measured from are still there.
        for i in (0..self.members.len()).rev() {
            if self.members[i].name != name {
                continue;
            }
            keep[i] = false;
            let m = &self.members[i];
            let next = (i + 1..self.members.len()).find(|&j| keep[j]);
            let prev = (0..i).rev().find(|&j| keep[j]);
            cuts.push(match (next, prev) {
                (Some(j), _) => m.key.start..self.members[j].key.start,
                (None, Some(p)) => self.members[p].value.end..m.value.end,
                (None, None) => m.key.start..m.value.end,
            });
        }
        let mut out = Zeroizing::new(Vec::with_capacity(text.len()));
        let mut at = 0;
        cuts.sort_by_key(|c| c.start);
        for c in cuts {
            out.extend_from_slice(&text[at..c.start.max(at)]);
            at = at.max(c.end);
        }
        out.extend_from_slice(&text[at..]);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(t: &str) -> Index {
        Index::build(t.as_bytes()).unwrap()
    }

    fn set(t: &str, k: &str, v: &str) -> String {
        String::from_utf8(idx(t).set(t.as_bytes(), k, v.as_bytes()).to_vec()).unwrap()
    }

    fn remove(t: &str, k: &str) -> String {
        String::from_utf8(idx(t).remove(t.as_bytes(), k).unwrap().to_vec()).unwrap()
    }

    #[test]
    fn members_are_found_with_their_text() {
        let t = "  {\n  \"a\\u00e9\" : 1.0e2 ,\"b\":{\"x\": [1, 2]},\n\"c\":\"s\"}\n";
        let i = idx(t);
        assert_eq!(i.keys().collect::<Vec<_>>(), ["aé", "b", "c"]);
        assert_eq!(i.raw(t.as_bytes(), "aé"), Some("1.0e2"));
        assert_eq!(i.raw(t.as_bytes(), "b"), Some("{\"x\": [1, 2]}"));
        assert_eq!(i.raw(t.as_bytes(), "c"), Some("\"s\""));
        assert_eq!(i.raw(t.as_bytes(), "d"), None);
    }

    #[test]
    fn a_set_replaces_one_value_and_keeps_every_other_byte() {
        let t = "{\n  \"a\\u00e9\": 1.0e2,\n  \"p\": \"old\",\n  \"n\": 12345678901234567890\n}";
        assert_eq!(
            set(t, "p", "\"new\""),
            "{\n  \"a\\u00e9\": 1.0e2,\n  \"p\": \"new\",\n  \"n\": 12345678901234567890\n}"
        );
    }

    #[test]
    fn a_new_key_goes_last_in_the_style_of_the_others() {
        let t = "{\n  \"a\": 1,\n  \"b\": 2\n}";
        assert_eq!(
            set(t, "c", "3"),
            "{\n  \"a\": 1,\n  \"b\": 2,\n  \"c\": 3\n}"
        );
        assert_eq!(set("{\"a\":1}", "b", "2"), "{\"a\":1,\"b\":2}");
        assert_eq!(set("{}", "b", "2"), "{\"b\":2}");
        assert_eq!(set(" { } ", "b\"q", "2"), " {\"b\\\"q\":2 } ");
    }

    #[test]
    fn a_removal_takes_the_member_and_one_separator() {
        let t = "{\n  \"a\": 1,\n  \"b\": 2,\n  \"c\": 3\n}";
        assert_eq!(remove(t, "a"), "{\n  \"b\": 2,\n  \"c\": 3\n}");
        assert_eq!(remove(t, "b"), "{\n  \"a\": 1,\n  \"c\": 3\n}");
        assert_eq!(remove(t, "c"), "{\n  \"a\": 1,\n  \"b\": 2\n}");
        assert_eq!(remove("{\"a\":1}", "a"), "{}");
        assert!(idx(t).remove(t.as_bytes(), "z").is_none());
        for (t, k) in [(t, "a"), (t, "b"), (t, "c")] {
            let out = remove(t, k);
            assert!(
                serde_json::from_str::<serde_json::Value>(&out).is_ok(),
                "{out}"
            );
        }
    }

    #[test]
    fn a_key_given_twice_keeps_its_first_place_and_last_value() {
        let t = r#"{"a":1,"b":2,"a":3}"#;
        let i = idx(t);
        assert_eq!(i.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(i.raw(t.as_bytes(), "a"), Some("3"));
        assert_eq!(set(t, "a", "4"), r#"{"a":1,"b":2,"a":4}"#);
        assert_eq!(remove(t, "a"), r#"{"b":2}"#);
    }

    #[test]
    fn only_objects_are_indexed() {
        for t in ["plain", "[1,2]", "\"s\"", "5", "{\"a\":", "{\"a\":1} x"] {
            assert!(Index::build(t.as_bytes()).is_none(), "{t}");
        }
        assert!(Index::build(b"\xff{}").is_none());
    }
}
