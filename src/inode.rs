//! The inode table: which tree node each inode number stands for, with the
//! kernel's lookup counts so that forgotten nodes are dropped.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::store::{Label, SecretName, VersionId};

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct Ino(pub u64);

pub const ROOT: Ino = Ino(1);

/// The number a directory listing shows for a node the kernel holds no
/// inode of: stable, and never one the table hands out (top bit set).
pub fn unassigned_ino(node: &Node) -> Ino {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    node.hash(&mut h);
    Ino(h.finish() | 1 << 63)
}

/// The two reports under `.secretsfs/`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Report {
    Json,
    Prometheus,
}

/// A node of the tree.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Node {
    /// A directory: a secret, a prefix of secrets, or both. "" is the root.
    Dir(Arc<str>),
    Current(SecretName),
    Previous(SecretName),
    Versions(SecretName),
    Version(SecretName, VersionId),
    StatsDir,
    /// `.secretsfs/stats` (JSON) or `.secretsfs/metrics` (Prometheus text).
    StatsFile(Report),
    /// An editor's temporary file in a secret's directory (dir path, name).
    Temp(Arc<str>, Arc<str>),
    /// A secret's `json/`: the top-level keys of AWSCURRENT's JSON object.
    JsonDir(SecretName),
    /// `json/<key>`: one key's value.
    JsonKey(SecretName, Arc<str>),
    /// `.secretsfs/rendered/`: the rendered files (templates).
    RenderedDir,
    /// `.secretsfs/rendered/<name>`.
    Rendered(Arc<str>),
    /// `.secretsfs/refresh`: write names to drop their cache entries.
    RefreshFile,
    /// `<secret>/stages/`: one file per staging label.
    StagesDir(SecretName),
    /// `<secret>/stages/<label>`: the version carrying that label.
    StageFile(SecretName, Label),
}

/// The secret whose files or directories a node is, for ownership rules
/// and refreshes. A directory maps to the secret of its path whether or
/// not it is one: the caller knows which directories are secrets.
pub fn secret_of(node: &Node) -> Option<SecretName> {
    match node {
        Node::Dir(p) if !p.is_empty() => Some(SecretName::new(p.clone())),
        Node::Current(s)
        | Node::Previous(s)
        | Node::Versions(s)
        | Node::Version(s, _)
        | Node::JsonDir(s)
        | Node::JsonKey(s, _)
        | Node::StagesDir(s)
        | Node::StageFile(s, _) => Some(s.clone()),
        _ => None,
    }
}

impl Node {
    /// A file that shows one of its secret's labels (not a version by id,
    /// which never changes): its secret, the directory it is listed in and
    /// its name there. What a change of the secret makes old.
    pub fn label_file(&self) -> Option<(&SecretName, Node, String)> {
        let dir = |s: &SecretName| Node::Dir(s.as_str().into());
        Some(match self {
            Node::Current(s) => (s, dir(s), "current".into()),
            Node::Previous(s) => (s, dir(s), "previous".into()),
            Node::JsonKey(s, k) => (s, Node::JsonDir(s.clone()), k.to_string()),
            Node::StageFile(s, l) => (s, Node::StagesDir(s.clone()), l.as_str().into()),
            _ => return None,
        })
    }
}

struct Slot {
    node: Node,
    lookups: u64,
}

struct Inner {
    by_ino: HashMap<Ino, Slot>,
    by_node: HashMap<Node, Ino>,
    next: u64,
}

pub struct InodeTable {
    inner: RwLock<Inner>,
}

impl Default for InodeTable {
    fn default() -> Self {
        let root = Node::Dir(Arc::from(""));
        let mut by_ino = HashMap::new();
        by_ino.insert(
            ROOT,
            Slot {
                node: root.clone(),
                lookups: 1,
            },
        );
        Self {
            inner: RwLock::new(Inner {
                by_ino,
                by_node: HashMap::from([(root, ROOT)]),
                next: 2,
            }),
        }
    }
}

impl InodeTable {
    pub fn node(&self, ino: Ino) -> Option<Node> {
        let inner = self.inner.read();
        inner.by_ino.get(&ino).map(|s| s.node.clone())
    }

    pub fn ino_of(&self, node: &Node) -> Option<Ino> {
        let inner = self.inner.read();
        inner.by_node.get(node).copied()
    }

    /// The node's inode, allocating one if needed; `lookup` adds one to the
    /// count the kernel will later forget.
    pub fn assign(&self, node: Node, lookup: bool) -> Ino {
        if !lookup && let Some(ino) = self.ino_of(&node) {
            return ino;
        }
        let mut inner = self.inner.write();
        let ino = match inner.by_node.get(&node) {
            Some(ino) => *ino,
            None => {
                let ino = Ino(inner.next);
                inner.next += 1;
                inner.by_node.insert(node.clone(), ino);
                inner.by_ino.insert(ino, Slot { node, lookups: 0 });
                ino
            }
        };
        if lookup && let Some(slot) = inner.by_ino.get_mut(&ino) {
            slot.lookups += 1;
        }
        ino
    }

    /// Drops `n` of the kernel's references; whether the inode is gone.
    pub fn forget(&self, ino: Ino, n: u64) -> bool {
        if ino == ROOT {
            return false;
        }
        let mut inner = self.inner.write();
        let gone = match inner.by_ino.get_mut(&ino) {
            Some(slot) => {
                slot.lookups = slot.lookups.saturating_sub(n);
                slot.lookups == 0
            }
            None => false,
        };
        if gone && let Some(slot) = inner.by_ino.remove(&ino) {
            // The node may have moved to another inode since (rename).
            if inner.by_node.get(&slot.node) == Some(&ino) {
                inner.by_node.remove(&slot.node);
            }
        }
        gone
    }

    /// rename(2) as the kernel sees it: the inode `from` had now stands for
    /// `to`, with its lookup count; `to`'s old inode lingers until forgotten.
    pub fn rebind(&self, from: &Node, to: Node) {
        let mut inner = self.inner.write();
        let Some(ino) = inner.by_node.remove(from) else {
            return;
        };
        if let Some(slot) = inner.by_ino.get_mut(&ino) {
            slot.node = to.clone();
        }
        inner.by_node.insert(to, ino);
    }

    /// Drops a node whatever its count (a temporary file that was renamed).
    /// The node is to get a new inode at its next `assign`; the old one
    /// keeps standing for it until the kernel forgets it.
    pub fn detach(&self, node: &Node) {
        self.inner.write().by_node.remove(node);
    }

    pub fn remove(&self, node: &Node) {
        let mut inner = self.inner.write();
        if let Some(ino) = inner.by_node.remove(node) {
            inner.by_ino.remove(&ino);
        }
    }

    /// The inodes whose nodes `f` picks.
    pub fn matching(&self, f: impl Fn(&Node) -> bool) -> Vec<Ino> {
        let inner = self.inner.read();
        inner
            .by_ino
            .iter()
            .filter(|(_, slot)| f(&slot.node))
            .map(|(ino, _)| *ino)
            .collect()
    }

    pub fn len(&self) -> usize {
        self.inner.read().by_ino.len()
    }

    /// Every inode the kernel holds, with its node.
    pub fn all(&self) -> Vec<(Ino, Node)> {
        let inner = self.inner.read();
        inner
            .by_ino
            .iter()
            .map(|(ino, s)| (*ino, s.node.clone()))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_keep_their_inode_until_forgotten() {
        let t = InodeTable::default();
        let n = Node::Current(SecretName::new("a"));
        let i1 = t.assign(n.clone(), true);
        let i2 = t.assign(n.clone(), true);
        assert_eq!(i1, i2);
        assert_eq!(t.node(i1), Some(n.clone()));
        t.forget(i1, 1);
        assert_eq!(t.node(i1), Some(n.clone()));
        t.forget(i1, 1);
        assert_eq!(t.node(i1), None);
        assert_ne!(t.assign(n, false), i1);
    }

    #[test]
    fn a_renamed_inode_keeps_its_count_and_the_old_one_lingers() {
        let t = InodeTable::default();
        let cur = Node::Current(SecretName::new("a"));
        let tmp = Node::Temp(Arc::from("a"), Arc::from(".tmp"));
        let old = t.assign(cur.clone(), true);
        let moved = t.assign(tmp.clone(), true);
        t.rebind(&tmp, cur.clone());
        assert_eq!(t.ino_of(&cur), Some(moved));
        assert_eq!(t.node(moved), Some(cur.clone()));
        assert_eq!(t.ino_of(&tmp), None);
        // Forgetting the old inode leaves the node on the new one.
        t.forget(old, 1);
        assert_eq!(t.node(old), None);
        assert_eq!(t.ino_of(&cur), Some(moved));
    }

    #[test]
    fn root_is_never_forgotten() {
        let t = InodeTable::default();
        t.forget(ROOT, 100);
        assert_eq!(t.node(ROOT), Some(Node::Dir(Arc::from(""))));
    }
}
