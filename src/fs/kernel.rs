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
    /// The version whose attributes the kernel was last given.
    told: Option<VersionId>,
    /// The version whose bytes the page cache may hold.
    pages: Option<VersionId>,
    /// Live read handles that go through the page cache, per version.
    cached_readers: HashMap<VersionId, usize>,
    /// The kernel was given a size of 0 for a value not fetched yet: reads
    /// must bypass the page cache (which stops at that size) until it is
    /// given the real one.
    size_unknown: bool,
}

impl View {
    fn idle(&self) -> bool {
        self.cached_readers.is_empty()
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

    /// The kernel is given attributes of `id` for `ino` (lookup, getattr):
    /// if it last had another version's, its attributes and pages go, once.
    pub fn tell(&self, ino: Ino, id: &VersionId) {
        let changed = {
            let mut views = self.views.lock();
            let v = views.entry(ino).or_default();
            let changed = v.told.as_ref().is_some_and(|t| t != id);
            v.told = Some(id.clone());
            v.size_unknown = false;
            changed
        };
        if changed {
            tracing::debug!(ino = ino.0, version = %id, "version changed; invalidating kernel cache");
            self.invalidator.inval_inode(ino);
        }
    }

    /// The kernel is given attributes without a size (the value is not
    /// fetched: no decrypt only to report a size).
    pub fn tell_size_unknown(&self, ino: Ino) {
        self.views.lock().entry(ino).or_default().size_unknown = true;
    }

    /// This mount changed the file (a put): what the kernel holds is old.
    pub fn changed(&self, ino: Ino) {
        if let Some(v) = self.views.lock().get_mut(&ino) {
            v.told = None;
        }
        self.invalidator.inval_inode(ino);
    }

    /// A read handle of `id` opens. While a handle of another version can
    /// still fill the page cache, this one bypasses it; otherwise it keeps
    /// the pages only when they are of `id`.
    pub fn open_read(&self, ino: Ino, id: &VersionId) -> ReadMode {
        let mut views = self.views.lock();
        let v = views.entry(ino).or_default();
        if v.size_unknown || v.cached_readers.keys().any(|other| other != id) {
            return ReadMode {
                keep_cache: false,
                direct_io: true,
            };
        }
        let keep_cache = v.pages.as_ref() == Some(id);
        v.pages = Some(id.clone());
        *v.cached_readers.entry(id.clone()).or_default() += 1;
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
            && let Some(n) = v.cached_readers.get_mut(id)
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
        k.tell(I, &a);
        k.tell(I, &a);
        assert_eq!(c.0.load(Ordering::SeqCst), 0);
        for _ in 0..10 {
            k.tell(I, &b);
        }
        assert_eq!(c.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn an_old_reader_makes_new_readers_bypass_the_page_cache() {
        let (k, _) = view();
        let (a, b) = (VersionId::new("a"), VersionId::new("b"));
        let old = k.open_read(I, &a);
        assert_eq!(old, ReadMode::default(), "first open: nothing to keep");
        let new = k.open_read(I, &b);
        assert!(new.direct_io && !new.keep_cache);
        k.close_read(I, &b, new);
        k.close_read(I, &a, old);
        // The pages may hold a's bytes: b's next open drops them.
        let next = k.open_read(I, &b);
        assert_eq!(next, ReadMode::default());
        k.close_read(I, &b, next);
        let again = k.open_read(I, &b);
        assert!(again.keep_cache && !again.direct_io);
    }

    #[test]
    fn forget_clears_an_idle_view_only() {
        let (k, _) = view();
        let a = VersionId::new("a");
        let m = k.open_read(I, &a);
        k.forget(I);
        assert_eq!(k.len(), 1, "a live handle keeps the view");
        k.close_read(I, &a, m);
        k.forget(I);
        assert_eq!(k.len(), 0);
    }
}
