//! The kernel's view of each file inode: which version its attributes (and
//! so its one size) describe, so that one invalidation goes out per change,
//! the page cache is filled with that same version, and which inodes have
//! write handles open. Cleared when the inode is forgotten.
//!
//! Why reads cannot go wrong: on a read-write mount every read handle is
//! opened with direct I/O (see `Fs::read_handle`), so each read(2) is
//! answered by the daemon from the handle's own version and is never bounded
//! by the inode's size, which the kernel keeps once per inode and which a
//! writer's direct writes grow. The page cache is filled only by maps (the
//! mount asks for FUSE_DIRECT_IO_ALLOW_MMAP) and, on read-only mounts, by
//! no-open mode: those READs carry no lock owner, and are answered from the
//! version told here (`told`), whose size the kernel holds, whichever handle
//! the fault came through; the pages go when that version changes.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::types::Invalidate;
use crate::inode::Ino;
use crate::store::SecretVersion;

#[derive(Default)]
struct View {
    /// The version whose attributes the kernel was last given (for a JSON
    /// key, that key's text in it).
    told: Option<Arc<SecretVersion>>,
    /// Write handles open on the inode: the kernel changes its size as
    /// they truncate and write.
    writers: usize,
    /// Pinned (read-only mounts): a newer version than `told` was seen; the
    /// name is to get a new inode, this one keeps `told`.
    superseded: bool,
}

pub struct KernelView {
    views: Mutex<HashMap<Ino, View>>,
    invalidator: Arc<dyn Invalidate>,
    /// Read-only mounts (no-open mode, every read through the page cache):
    /// an inode keeps the version first told for good, so that its one size
    /// and its pages never change under a reader (the kernel sets a new
    /// size before it drops the old pages, and a reader in between reads
    /// old bytes to the new size); a newer version gets a new inode at the
    /// next lookup of the name.
    pinned: bool,
}

impl KernelView {
    pub fn new(invalidator: Arc<dyn Invalidate>, pinned: bool) -> Self {
        Self {
            views: Mutex::new(HashMap::new()),
            invalidator,
            pinned,
        }
    }

    /// The kernel is to be given attributes of `version` for `ino` (lookup,
    /// getattr): if it last had another version's, its attributes and pages
    /// go, once. Returns the version whose attributes to give: `version`,
    /// or on a pinned mount the one the inode keeps (see `superseded`).
    pub fn tell(&self, ino: Ino, version: &Arc<SecretVersion>) -> Arc<SecretVersion> {
        let mut views = self.views.lock();
        let v = views.entry(ino).or_default();
        if let Some(told) = &v.told {
            if told.id == version.id && told.value == version.value {
                return told.clone();
            }
            if self.pinned {
                v.superseded = true;
                return told.clone();
            }
        }
        let changed = v.told.replace(version.clone()).is_some();
        drop(views);
        if changed {
            tracing::debug!(ino = ino.0, version = %version.id, "version changed; invalidating kernel cache");
            self.invalidator.inval_inode(ino);
        }
        version.clone()
    }

    /// The name `name` in `parent` shows another version now: on a pinned
    /// mount its inode keeps the old one, so the kernel's entry goes and the
    /// next path walk looks the name up (a new inode). Elsewhere the inode
    /// follows the change and this is not needed.
    pub fn name_changed(&self, parent: Ino, name: &str) {
        if self.pinned {
            self.invalidator.inval_entry(parent, name);
        }
    }

    /// Waits (at most `bound`) until what the kernel was told to drop so
    /// far has reached it: a hook run after a change must not read through
    /// an entry the kernel has not dropped yet.
    pub async fn delivered(&self, bound: std::time::Duration) {
        if let Some(rx) = self.invalidator.delivered() {
            let _ = tokio::time::timeout(bound, rx).await;
        }
    }

    /// Whether a pinned inode was told of a newer version than its own: its
    /// name is to get a new inode.
    pub fn superseded(&self, ino: Ino) -> bool {
        self.views.lock().get(&ino).is_some_and(|v| v.superseded)
    }

    /// The version the kernel holds the size of: what a page-cache fill of
    /// `ino` is answered with.
    pub fn told(&self, ino: Ino) -> Option<Arc<SecretVersion>> {
        self.views.lock().get(&ino).and_then(|v| v.told.clone())
    }

    /// This mount changed the file (a put): what the kernel holds is old.
    /// Its pages and attributes go; until it asks for attributes again, its
    /// size is still the told version's, so page-cache fills keep serving
    /// that version.
    pub fn changed(&self, ino: Ino) {
        self.invalidator.inval_inode(ino);
    }

    /// A write handle opens on `ino`.
    pub fn open_write(&self, ino: Ino) {
        self.views.lock().entry(ino).or_default().writers += 1;
    }

    /// Whether a write handle is open on `ino` (a JSON key being created
    /// exists for its writer before its commit).
    pub fn writing(&self, ino: Ino) -> bool {
        self.views.lock().get(&ino).is_some_and(|v| v.writers > 0)
    }

    /// A write handle of `ino` is released: the size the kernel holds may
    /// be the writer's, so its attributes go, and the kernel asks again.
    pub fn close_write(&self, ino: Ino) {
        if let Some(v) = self.views.lock().get_mut(&ino) {
            v.writers = v.writers.saturating_sub(1);
        }
        self.invalidator.inval_inode(ino);
    }

    /// The kernel forgot the inode: nothing of it is cached any more.
    pub fn forget(&self, ino: Ino) {
        let mut views = self.views.lock();
        if views.get(&ino).is_some_and(|v| v.writers == 0) {
            views.remove(&ino);
        }
    }

    pub fn len(&self) -> usize {
        self.views.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::VersionId;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Count(AtomicUsize);
    impl Invalidate for Count {
        fn inval_inode(&self, _ino: Ino) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn view() -> (KernelView, Arc<Count>) {
        let c = Arc::new(Count::default());
        (KernelView::new(c.clone(), false), c)
    }

    #[test]
    fn a_pinned_inode_keeps_its_version_and_says_it_was_superseded() {
        let c = Arc::new(Count::default());
        let k = KernelView::new(c.clone(), true);
        let (a, b) = (ver("a"), ver("b"));
        assert_eq!(k.tell(I, &a).id, a.id);
        assert!(!k.superseded(I));
        assert_eq!(k.tell(I, &b).id, a.id, "the inode keeps a");
        assert!(k.superseded(I));
        assert_eq!(k.told(I).unwrap().id, a.id);
        assert_eq!(c.0.load(Ordering::SeqCst), 0, "nothing to invalidate");
        assert_eq!(k.tell(Ino(8), &b).id, b.id, "a new inode gets b");
    }

    const I: Ino = Ino(7);

    fn ver(id: &str) -> Arc<SecretVersion> {
        Arc::new(SecretVersion::new(
            VersionId::new(id),
            crate::store::SecretBytes::new(id.as_bytes().to_vec()),
            std::time::SystemTime::UNIX_EPOCH,
        ))
    }

    #[test]
    fn a_change_invalidates_once_however_many_getattrs() {
        let (k, c) = view();
        let (a, b) = (ver("a"), ver("b"));
        k.tell(I, &a);
        k.tell(I, &a);
        assert_eq!(c.0.load(Ordering::SeqCst), 0);
        for _ in 0..10 {
            k.tell(I, &b);
        }
        assert_eq!(c.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_put_and_a_writers_close_invalidate() {
        let (k, c) = view();
        let a = ver("a");
        k.tell(I, &a);
        assert_eq!(k.told(I).unwrap().id, a.id, "page-cache fills read a");
        k.open_write(I);
        assert!(k.writing(I));
        k.close_write(I);
        assert!(!k.writing(I));
        assert_eq!(c.0.load(Ordering::SeqCst), 1);
        // Until the kernel asks again, its size is still a's.
        assert_eq!(k.told(I).unwrap().id, a.id);
        k.tell(I, &a);
        k.changed(I);
        assert_eq!(c.0.load(Ordering::SeqCst), 2);
        k.tell(I, &ver("b"));
        assert_eq!(
            c.0.load(Ordering::SeqCst),
            3,
            "b's attributes: a's pages go"
        );
    }

    #[test]
    fn forget_clears_a_view_without_writers_only() {
        let (k, _) = view();
        let a = ver("a");
        k.tell(I, &a);
        k.open_write(I);
        k.forget(I);
        assert_eq!(k.len(), 1, "a live writer keeps the view");
        k.close_write(I);
        k.forget(I);
        assert_eq!(k.len(), 0);
    }
}
