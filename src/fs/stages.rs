//! The labels being created: files made in `stages/` whose first write is
//! not stored yet, with the write handles open on each. A leaf owner: the
//! stages/ view opens them, the write handles' release closes them.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::store::{Label, SecretName};

/// Labels created in `stages/` and not stored yet, with the write handles
/// open on each: the file exists for them until the last one is released.
#[derive(Default)]
pub struct Stages {
    creating: Mutex<HashMap<(SecretName, Label), usize>>,
}

impl Stages {
    pub(super) fn opened(&self, s: &SecretName, l: &Label) {
        *self
            .creating
            .lock()
            .entry((s.clone(), l.clone()))
            .or_default() += 1;
    }

    pub(super) fn closed(&self, s: &SecretName, l: &Label) {
        let mut c = self.creating.lock();
        let key = (s.clone(), l.clone());
        if let Some(n) = c.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                c.remove(&key);
            }
        }
    }

    pub(super) fn is_creating(&self, s: &SecretName, l: &Label) -> bool {
        self.creating.lock().contains_key(&(s.clone(), l.clone()))
    }

    pub(super) fn creating_in(&self, s: &SecretName) -> Vec<Label> {
        let c = self.creating.lock();
        c.keys()
            .filter(|(n, _)| n == s)
            .map(|(_, l)| l.clone())
            .collect()
    }
}
