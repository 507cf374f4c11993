//! The shared value types of the configuration: a user or group given by
//! name or number, resolved once to an id, and a file mode with one parser.
//! A leaf: it imports nothing of the crate, so every module may use it.

use serde::Deserialize;

/// A user or group as the config file gives it (`uid`, `gid`, a rule's or
/// a template's `owner` and `group`): a number, or a name looked up once,
/// when the file is loaded.
#[derive(Deserialize, Debug, Clone)]
#[serde(
    untagged,
    expecting = "a user or group name, or a number from 0 to 4294967295"
)]
pub enum NameOrNumber {
    Number(i64),
    Name(String),
}

impl NameOrNumber {
    /// As a uid (a name through the user database).
    pub fn uid(&self) -> Result<u32, String> {
        self.resolve(user_id)
    }

    /// As a gid (a name through the group database).
    pub fn gid(&self) -> Result<u32, String> {
        self.resolve(group_id)
    }

    fn resolve(&self, by_name: fn(&str) -> Result<u32, String>) -> Result<u32, String> {
        match self {
            NameOrNumber::Number(n) => {
                u32::try_from(*n).map_err(|_| format!("{n} is out of range (0 to 4294967295)"))
            }
            NameOrNumber::Name(name) => by_name(name),
        }
    }
}

/// A user name or number as a uid. All digits is a number (as chown(1) reads
/// it); anything else is looked up in the user database (getpwnam_r).
pub fn user_id(v: &str) -> Result<u32, String> {
    if let Some(id) = id_number(v)? {
        return Ok(id);
    }
    match nix::unistd::User::from_name(v) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        Ok(None) => Err(format!("no user named '{v}' (give a user name or a uid)")),
        Err(e) => Err(format!("cannot look up user '{v}': {e}")),
    }
}

/// A group name or number as a gid, like `user_id` (getgrnam_r).
pub fn group_id(v: &str) -> Result<u32, String> {
    if let Some(id) = id_number(v)? {
        return Ok(id);
    }
    match nix::unistd::Group::from_name(v) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(format!("no group named '{v}' (give a group name or a gid)")),
        Err(e) => Err(format!("cannot look up group '{v}': {e}")),
    }
}

/// `Some(id)` when `v` is all digits, checked against u32's range.
fn id_number(v: &str) -> Result<Option<u32>, String> {
    if v.is_empty() {
        return Err("an empty name is not a user or group".into());
    }
    if !v.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|_| format!("'{v}' is out of range (0 to 4294967295)"))
}

/// A file mode as the config file gives it: `mode = "0440"` (octal text,
/// `0o` allowed) or a TOML number (`0o440`; a bare `440` is decimal).
#[derive(Deserialize, Debug, Clone)]
#[serde(
    untagged,
    expecting = "an octal mode such as \"0440\" (a string) or 0o440 (a TOML octal number)"
)]
pub enum Mode {
    Number(i64),
    Text(String),
}

impl Mode {
    /// The bits given: the one parser of modes. Text is octal digits only.
    fn bits(&self) -> Result<i64, String> {
        match self {
            Mode::Number(n) if *n < 0 => Err(format!("{n} is not an octal mode such as \"0440\"")),
            Mode::Number(n) => Ok(*n),
            Mode::Text(t) => {
                let digits = t.strip_prefix("0o").unwrap_or(t);
                if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                    return Err(format!("'{t}' is not an octal mode such as \"0440\""));
                }
                i64::from_str_radix(digits, 8).map_err(|_| format!("'{t}' is out of range"))
            }
        }
    }

    /// Permission bits only (no setuid, setgid or sticky bit), at most 0777.
    pub fn permissions(&self) -> Result<u16, String> {
        match self.bits()? {
            n @ 0..=0o777 => Ok(n as u16),
            n => Err(format!(
                "{n:o} (octal) has bits other than permissions; at most 0777"
            )),
        }
    }

    /// Read bits only, for read-only files; this also catches `mode = 440`
    /// (decimal, that is 0o670) written for 0o440.
    pub fn read_bits(&self) -> Result<u16, String> {
        match self.bits()? {
            n @ 0..=0o444 if n & !0o444 == 0 => Ok(n as u16),
            n => Err(format!(
                "{n:#o} gives more than read permission (rendered files are read-only: use read bits only, such as \"0440\"; a TOML number is decimal unless written 0o440)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_parser_reads_octal_text_and_numbers() {
        let p = |m: Mode| m.permissions();
        assert_eq!(p(Mode::Text("0440".into())), Ok(0o440));
        assert_eq!(p(Mode::Text("0o440".into())), Ok(0o440));
        assert_eq!(p(Mode::Text("400".into())), Ok(0o400));
        assert_eq!(p(Mode::Number(0o640)), Ok(0o640));
        for bad in ["", "rw", "0999", "+7", "-1", "0o0o7"] {
            assert!(p(Mode::Text(bad.into())).is_err(), "{bad}");
        }
        assert!(p(Mode::Number(0o1000)).is_err());
        assert!(p(Mode::Number(-1)).is_err());
        assert_eq!(Mode::Number(0o444).read_bits(), Ok(0o444));
        assert!(Mode::Number(440).read_bits().is_err());
        assert!(Mode::Text("0640".into()).read_bits().is_err());
    }

    #[test]
    fn names_and_numbers_resolve_once_to_ids() {
        assert_eq!(NameOrNumber::Name("root".into()).uid(), Ok(0));
        assert_eq!(NameOrNumber::Name("root".into()).gid(), Ok(0));
        assert_eq!(NameOrNumber::Number(7).gid(), Ok(7));
        assert_eq!(NameOrNumber::Name("7".into()).uid(), Ok(7));
        assert!(NameOrNumber::Number(-1).uid().is_err());
        assert!(NameOrNumber::Number(1 << 32).gid().is_err());
        let e = NameOrNumber::Name("no-such-user-7q".into()).uid();
        assert!(e.unwrap_err().contains("no user named"));
    }
}
