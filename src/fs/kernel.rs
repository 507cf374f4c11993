//! The kernel's view of each file inode: which version its attributes
//! describe, which version its page cache may hold, and which read handles
//! can still fill that page cache. Decides keep-cache and direct I/O at open
//! and sends one invalidation per change; cleared when the inode is forgotten.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::Invalidate;
use crate::inode::Ino;
use crate::store::VersionId;

/// How a read handle is opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadMode {
    /// The page cache holds this version: keep it.
    pub keep_cache: bool,
    /// Bypass the page cache: an older version's handle may still fill it.
    pub direct_io: bool,
}

#[derive(Default)]
struct View {
    /// The version whose attributes the kernel was last given, and the
    /// size it was told; None when the kernel's size may be another (a
    /// writer changed it, or an invalidation is on its way).
    told: Option<(VersionId, u64)>,
    /// The version whose bytes the page cache may hold.
    pages: Option<VersionId>,
    /// Live read handles that go through the page cache, per version, and
    /// that version's size.
    cached_readers: HashMap<VersionId, (usize, u64)>,
    /// The kernel was given a size of 0 for a value not fetched yet: reads
    /// must bypass the page cache (which stops at that size) until it is
    /// given the real one.
    size_unknown: bool,
    /// Write handles open on the inode: the kernel changes its size as
    /// they truncate and write.
    writers: usize,
}

impl View {
    /// Whether the kernel was last told `id`'s attributes (`size` bytes).
    fn holds(&self, id: &VersionId, size: u64) -> bool {
        self.told
            .as_ref()
            .is_some_and(|(t, n)| t == id && *n == size)
    }

    fn idle(&self) -> bool {
        self.cached_readers.is_empty() && self.writers == 0
    }
}

pub struct KernelView {
    views: Mutex<HashMap<Ino, View>>,
    invalidator: Arc<dyn Invalidate>,
}

impl KernelView {
    pub fn new(invalidator: Arc<dyn Invalidate>) -> Self {
        Self {
            views: Mutex::new(HashMap::new()),
            invalidator,
        }
    }

    /// The kernel is to be given attributes of `id` (`size` bytes) for
    /// `ino` (lookup, getattr): if it last had another version's, its
    /// attributes and pages go, once. Returns the size to report: while
    /// page-cache readers of another version live, the kernel keeps their
    /// size (it is the inode's, and their reads stop at it), and the answer
    /// is not to be cached; new opens bypass the page cache meanwhile.
    pub fn tell(&self, ino: Ino, id: &VersionId, size: u64) -> Option<u64> {
        let mut views = self.views.lock();
        let v = views.entry(ino).or_default();
        if let Some((_, (_, held))) = v.cached_readers.iter().find(|(other, _)| *other != id) {
            v.told = None;
            return Some(*held);
        }
        let changed = v.told.as_ref().is_some_and(|(t, _)| t != id);
        v.told = Some((id.clone(), size));
        v.size_unknown = false;
        drop(views);
        if changed {
            tracing::debug!(ino = ino.0, version = %id, "version changed; invalidating kernel cache");
            self.invalidator.inval_inode(ino);
        }
        None
    }

    /// The kernel is given attributes without a size (the value is not
    /// fetched: no decrypt only to report a size).
    pub fn tell_size_unknown(&self, ino: Ino) {
        self.views.lock().entry(ino).or_default().size_unknown = true;
    }

    /// This mount changed the file (a put): what the kernel holds is old.
    pub fn changed(&self, ino: Ino) {
        self.forget_size(ino);
        self.invalidator.inval_inode(ino);
    }

    /// Whether the kernel was last told `id`'s attributes (`size` bytes).
    pub fn holds(&self, ino: Ino, id: &VersionId, size: u64) -> bool {
        self.views
            .lock()
            .get(&ino)
            .is_some_and(|v| v.holds(id, size))
    }

    /// What size the kernel holds is no longer known (it was given one
    /// handle's version's, or this mount changed the file): opens bypass
    /// the page cache until it is told again.
    pub fn forget_size(&self, ino: Ino) {
        if let Some(v) = self.views.lock().get_mut(&ino) {
            v.told = None;
        }
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
    /// be the writer's, so it goes, and the kernel asks again.
    pub fn close_write(&self, ino: Ino) {
        if let Some(v) = self.views.lock().get_mut(&ino) {
            v.writers = v.writers.saturating_sub(1);
            v.told = None;
        }
        self.invalidator.inval_inode(ino);
    }

    /// A read handle of `id` (`size` bytes) opens. The page cache stops at
    /// the size the kernel holds, so this handle bypasses it unless the
    /// kernel was told this version's size and nothing changed it since (no
    /// writer open, no change waiting for the kernel to ask again); and
    /// while a handle of another version can still fill the page cache.
    /// Otherwise it keeps the pages only when they are of `id`.
    pub fn open_read(&self, ino: Ino, id: &VersionId, size: u64) -> ReadMode {
        let mut views = self.views.lock();
        let v = views.entry(ino).or_default();
        if v.size_unknown
            || v.writers > 0
            || !v.holds(id, size)
            || v.cached_readers.keys().any(|other| other != id)
        {
            return ReadMode {
                keep_cache: false,
                direct_io: true,
            };
        }
        let keep_cache = v.pages.as_ref() == Some(id);
        v.pages = Some(id.clone());
        v.cached_readers.entry(id.clone()).or_insert((0, size)).0 += 1;
        ReadMode {
            keep_cache,
            direct_io: false,
        }
    }

    /// The read handle opened with `mode` is released.
    pub fn close_read(&self, ino: Ino, id: &VersionId, mode: ReadMode) {
        if mode.direct_io {
            return;
        }
        let mut views = self.views.lock();
        if let Some(v) = views.get_mut(&ino)
            && let Some((n, _)) = v.cached_readers.get_mut(id)
        {
            *n -= 1;
            if *n == 0 {
                v.cached_readers.remove(id);
            }
        }
    }

    /// The kernel forgot the inode: nothing of it is cached any more.
    pub fn forget(&self, ino: Ino) {
        let mut views = self.views.lock();
        if views.get(&ino).is_some_and(View::idle) {
            // The kernel forgot the size it was given too.
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
        (KernelView::new(c.clone()), c)
    }

    const I: Ino = Ino(7);

    #[test]
    fn a_change_invalidates_once_however_many_getattrs() {
        let (k, c) = view();
        let (a, b) = (VersionId::new("a"), VersionId::new("b"));
        k.tell(I, &a, 1);
        k.tell(I, &a, 1);
        assert_eq!(c.0.load(Ordering::SeqCst), 0);
        for _ in 0..10 {
            k.tell(I, &b, 1);
        }
        assert_eq!(c.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn an_old_reader_makes_new_readers_bypass_the_page_cache() {
        let (k, _) = view();
        let (a, b) = (VersionId::new("a"), VersionId::new("b"));
        k.tell(I, &a, 1);
        let old = k.open_read(I, &a, 1);
        assert_eq!(old, ReadMode::default(), "first open: nothing to keep");
        // a's reader lives: the kernel keeps a's size (2), not b's.
        assert_eq!(k.tell(I, &b, 2), Some(1));
        let new = k.open_read(I, &b, 2);
        assert!(new.direct_io && !new.keep_cache);
        k.close_read(I, &b, new);
        k.close_read(I, &a, old);
        // While a was open the kernel kept a's size; it is told b's now.
        assert_eq!(k.tell(I, &b, 2), None);
        // The pages may hold a's bytes: b's next open drops them.
        let next = k.open_read(I, &b, 2);
        assert_eq!(next, ReadMode::default());
        k.close_read(I, &b, next);
        let again = k.open_read(I, &b, 2);
        assert!(again.keep_cache && !again.direct_io);
    }

    #[test]
    fn the_page_cache_is_used_only_when_the_kernel_holds_this_versions_size() {
        let (k, c) = view();
        let a = VersionId::new("a");
        // Never told: the kernel's size is unknown.
        assert!(k.open_read(I, &a, 5).direct_io);
        k.tell(I, &a, 5);
        let cached = k.open_read(I, &a, 5);
        assert!(!cached.direct_io);
        k.close_read(I, &a, cached);
        // A writer changes the kernel's size as it goes.
        k.open_write(I);
        assert!(k.open_read(I, &a, 5).direct_io);
        k.close_write(I);
        assert_eq!(
            c.0.load(Ordering::SeqCst),
            1,
            "its size is dropped at close"
        );
        assert!(
            k.open_read(I, &a, 5).direct_io,
            "until the kernel asks again"
        );
        k.tell(I, &a, 5);
        assert!(!k.open_read(I, &a, 5).direct_io);
    }

    #[test]
    fn forget_clears_an_idle_view_only() {
        let (k, _) = view();
        let a = VersionId::new("a");
        k.tell(I, &a, 1);
        let m = k.open_read(I, &a, 1);
        k.forget(I);
        assert_eq!(k.len(), 1, "a live handle keeps the view");
        k.close_read(I, &a, m);
        k.forget(I);
        assert_eq!(k.len(), 0);
    }
}
