//! What names mean in the tree's editable directories: which are editors'
//! and tools' temporary files, which programs' unlink is half of a
//! replacement, which labels a file in `stages/` may name, and the name
//! length limit. A leaf: plain functions over names.

use crate::error::{Error, Result};
use crate::store::Label;
use crate::tree;

/// Names longer than this are refused with ENAMETOOLONG, as everywhere.
pub const NAME_MAX: usize = 255;

/// Programs whose unlink of `current` is the first step of a replacement
/// (unlink, then create with O_EXCL), not a removal.
pub const REPLACERS: [&str; 2] = ["install", "ginstall"];

/// Editors whose unlink of a key is the middle of a save, not a removal,
/// when the key's backup (`key~`, a temporary file) is there: once it made
/// the backup, vim unlinks the file and creates it anew (in a secret's
/// directory the unlink of `current` is refused and vim writes in place; a
/// key's unlink is a removal, so vim's is then taken as install's: the key
/// stays, hidden from vim until it creates it, and that write is one put).
/// Without the backup (vim's `delete()`), the unlink is a removal.
pub const KEY_REPLACERS: [&str; 8] = [
    "vim",
    "vi",
    "vim.basic",
    "vim.tiny",
    "vim.nox",
    "vim.gtk3",
    "nvim",
    "gvim",
];

/// Names editors and tools give their backup, swap, lock and temporary
/// files: vim's `key~`, `.key.swp` (`.swo`, `.swx`...) and `4913`, emacs's
/// `#key#` and `.#key`, sed -i's `sedXXXXXX`, Python's mkstemp
/// `tmpXXXXXXXX`, Ansible's `.ansible_tmp...`, rsync's `.key.XXXXXX`. Made
/// in `json/` or `stages/` where no key (label) of that name exists, such a
/// file is an in-memory temporary file, never a key: a rename onto a key is
/// its put. Any other name, dotfiles included, is a key.
pub fn is_temp_name(name: &str) -> bool {
    let swap = name.starts_with('.')
        && name.len() > 4
        && name.is_char_boundary(name.len() - 4)
        && name[name.len() - 4..].starts_with(".sw");
    let random = |prefix: &str, len: usize| {
        name.len() == prefix.len() + len
            && name.starts_with(prefix)
            && name[prefix.len()..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    // rsync: `.` + the name + `.` + six random characters.
    let rsync = name.starts_with('.')
        && name.len() > 8
        && name.is_char_boundary(name.len() - 7)
        && name.as_bytes()[name.len() - 7] == b'.'
        && name[name.len() - 6..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric());
    let vim_probe = name.len() >= 4 && name.bytes().all(|b| b.is_ascii_digit()) && {
        // vim probes with 4913, then adds 123 while the name is taken.
        name.parse::<u64>()
            .is_ok_and(|n| n >= 4913 && (n - 4913) % 123 == 0)
    };
    name.ends_with('~')
        || swap
        || rsync
        || random("sed", 6)
        || random("tmp", 8)
        || vim_probe
        || name.starts_with(".ansible_tmp")
        || name.starts_with(".#")
        || (name.starts_with('#') && name.ends_with('#'))
}

pub const RESERVED: &str = "stages/AWSCURRENT and stages/AWSPREVIOUS are read-only: write current";

/// The label a file made in `stages/` names: one the API takes, a valid
/// file name without control characters, not AWSCURRENT or AWSPREVIOUS.
pub fn label_for_file(name: &str) -> Result<Label> {
    let l = Label::parse(name).map_err(|e| Error::Invalid(e.into()))?;
    if !tree::valid_component(name) {
        return Err(Error::Invalid("not a valid file name".into()));
    }
    // The API takes them, but a label must fit on one log line.
    if name.chars().any(char::is_control) {
        return Err(Error::Invalid(
            "a staging label made here cannot hold control characters".into(),
        ));
    }
    if !writable(&l) {
        return Err(Error::Refused(RESERVED));
    }
    Ok(l)
}

/// Whether `stages/<label>` may be written (not AWSCURRENT or AWSPREVIOUS).
pub fn writable(label: &Label) -> bool {
    !label.is_reserved()
}

/// The extended attribute of a `versions/` entry that holds its staging
/// labels (`getfattr -n user.secretsfs.stages versions/*`).
pub const STAGES_XATTR: &str = "user.secretsfs.stages";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editors_and_tools_temporary_files_are_told_from_keys() {
        for name in [
            "password~",
            ".password.swp",
            ".password.swx",
            "4913",
            "5036",
            "sedAb12Cd",
            ".#password",
            "#password#",
            "tmpa1b2_c3d",
            ".ansible_tmpx1y2z3password",
            ".password.Ab12Cd",
        ] {
            assert!(is_temp_name(name), "{name}");
        }
        for name in [
            "password",
            "port",
            "4914",
            "sed",
            "sedimentary",
            "swp",
            "1234",
            "tmp",
            "tmpdir",
            "tmpa1b2_c3d4",
            ".newkey",
            ".hidden",
            ".a.b",
        ] {
            assert!(!is_temp_name(name), "{name}");
        }
    }
}
