//! Editors' temporary files: in-memory files in a secret's directory
//! (`sed -i`, vim, Ansible write one and rename it over `current`). Names map
//! to files; handles hold the files themselves, so a descriptor keeps
//! working after its file is renamed or unlinked. Bounded in count and bytes
//! across every file still named or open.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use zeroize::Zeroizing;

use super::write_state::{Target, grow};
use crate::error::{Error, Result};
use crate::store::SecretName;

/// (directory path, file name) of a temporary file.
pub type TempKey = (Arc<str>, Arc<str>);
pub type TempRef = Arc<Mutex<TempFile>>;

#[derive(Default)]
struct Usage {
    files: usize,
    bytes: usize,
}

pub struct TempFile {
    data: Zeroizing<Vec<u8>>,
    pub mode: u16,
    pub mtime: SystemTime,
    /// Only its owner (and root) sees it.
    uid: u32,
    /// Renamed onto a file of this secret (`current`, a JSON key, a
    /// label): later writes through open descriptors change it, put at the
    /// writer's close or fsync.
    pub target: Option<(SecretName, Target)>,
    /// Written since it became `current` (or since the last put of it).
    pub dirty: bool,
    /// A process holding it was killed by a signal while it had unput
    /// writes as `current`: it is never put again.
    pub abandoned: bool,
    usage: Arc<Mutex<Usage>>,
    max_bytes: usize,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let mut u = self.usage.lock();
        u.files -= 1;
        u.bytes -= self.data.len();
    }
}

impl TempFile {
    pub fn visible_to(&self, uid: u32) -> bool {
        uid == 0 || uid == self.uid
    }

    /// A holder was killed by a signal: unput writes as `current` may be
    /// half a value, so they never reach the secret.
    pub fn abandon(&mut self) {
        if self.target.is_some() && self.dirty {
            tracing::info!(secret = %self.target.as_ref().map_or("", |t| t.0.as_str()), "writer killed by a signal; nothing stored");
            self.abandoned = true;
            self.dirty = false;
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    pub fn read(&self, offset: u64, size: u32) -> Vec<u8> {
        super::types::slice(&self.data, offset, size)
    }

    /// Resizes to `len`, within the bytes left to all temporary files.
    pub fn resize(&mut self, len: usize) -> Result<()> {
        let old = self.data.len();
        {
            let mut u = self.usage.lock();
            if len > old && u.bytes + (len - old) > self.max_bytes {
                return Err(Error::NoSpace);
            }
            u.bytes = u.bytes + len - old;
        }
        grow(&mut self.data, len);
        self.mtime = SystemTime::now();
        self.dirty = true;
        Ok(())
    }

    /// Writes at `offset` (at the end with `append`); the file's length.
    pub fn write(&mut self, offset: usize, data: &[u8], append: bool) -> Result<u32> {
        let off = if append { self.data.len() } else { offset };
        let end = off.checked_add(data.len()).ok_or(Error::NoSpace)?;
        if end > self.data.len() {
            self.resize(end)?;
        }
        self.data[off..end].copy_from_slice(data);
        self.mtime = SystemTime::now();
        self.dirty = true;
        Ok(data.len() as u32)
    }
}

pub struct Temps {
    names: Mutex<HashMap<TempKey, TempRef>>,
    usage: Arc<Mutex<Usage>>,
    max_files: usize,
    max_bytes: usize,
}

impl Temps {
    pub fn new(max_files: usize, max_bytes: usize) -> Self {
        Self {
            names: Mutex::new(HashMap::new()),
            usage: Arc::default(),
            max_files,
            max_bytes,
        }
    }

    /// The file named `key`, created empty if there is none.
    pub fn create(&self, key: &TempKey, mode: u32, uid: u32) -> Result<TempRef> {
        let mut names = self.names.lock();
        if let Some(f) = names.get(key) {
            return Ok(f.clone());
        }
        {
            let mut u = self.usage.lock();
            if u.files >= self.max_files {
                return Err(Error::NoSpace);
            }
            u.files += 1;
        }
        let f = Arc::new(Mutex::new(TempFile {
            data: Zeroizing::new(Vec::new()),
            mode: (mode & 0o777) as u16,
            mtime: SystemTime::now(),
            uid,
            target: None,
            dirty: false,
            abandoned: false,
            usage: self.usage.clone(),
            max_bytes: self.max_bytes,
        }));
        names.insert(key.clone(), f.clone());
        Ok(f)
    }

    /// The file named `key` if `uid` may see it.
    pub fn get(&self, key: &TempKey, uid: u32) -> Option<TempRef> {
        self.names
            .lock()
            .get(key)
            .filter(|f| f.lock().visible_to(uid))
            .cloned()
    }

    /// Names in `dir` that `uid` may see.
    pub fn names_in(&self, dir: &str, uid: u32) -> Vec<Arc<str>> {
        self.names
            .lock()
            .iter()
            .filter(|((d, _), f)| &**d == dir && f.lock().visible_to(uid))
            .map(|((_, n), _)| n.clone())
            .collect()
    }

    /// Takes the name away; open handles keep the file.
    pub fn unlink(&self, key: &TempKey, uid: u32) -> bool {
        let mut names = self.names.lock();
        if names.get(key).is_some_and(|f| f.lock().visible_to(uid)) {
            names.remove(key);
            return true;
        }
        false
    }

    /// Moves a file to another name, replacing a file of that name.
    pub fn rename(&self, from: &TempKey, to: TempKey) -> Result<()> {
        let mut names = self.names.lock();
        let f = names.remove(from).ok_or(Error::NotFound)?;
        names.insert(to, f);
        Ok(())
    }

    pub fn named(&self, key: &TempKey) -> Option<TempRef> {
        self.names.lock().get(key).cloned()
    }

    /// (named files, live files named or open, bytes of them all).
    pub fn sizes(&self) -> (usize, usize, usize) {
        let named = self.names.lock().len();
        let u = self.usage.lock();
        (named, u.files, u.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: &str) -> TempKey {
        (Arc::from("dir"), Arc::from(n))
    }

    #[test]
    fn files_and_bytes_are_bounded_until_the_last_holder_goes() {
        let t = Temps::new(2, 10);
        let a = t.create(&key("a"), 0o600, 0).unwrap();
        assert_eq!(a.lock().write(0, b"12345678", false).unwrap(), 8);
        let _b = t.create(&key("b"), 0o600, 0).unwrap();
        assert!(matches!(t.create(&key("c"), 0o600, 0), Err(Error::NoSpace)));
        assert!(t.unlink(&key("a"), 0));
        // The name is gone but a handle holds the file: still counted.
        assert_eq!(t.sizes(), (1, 2, 8));
        assert!(a.lock().write(8, b"xyz", false).is_err(), "over 10 bytes");
        a.lock().write(0, b"ab", true).unwrap();
        assert_eq!(a.lock().bytes(), b"12345678ab");
        drop(a);
        assert_eq!(t.sizes(), (1, 1, 0));
    }

    #[test]
    fn others_cannot_see_a_users_file() {
        let t = Temps::new(4, 100);
        t.create(&key("a"), 0o600, 1000).unwrap();
        assert!(t.get(&key("a"), 1001).is_none());
        assert!(t.get(&key("a"), 0).is_some());
        assert!(!t.unlink(&key("a"), 1001));
        assert_eq!(t.names_in("dir", 1000).len(), 1);
    }
}
