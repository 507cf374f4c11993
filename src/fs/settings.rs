//! The settings the filesystem runs with (`FsConfig`) and its tuning
//! constants: a leaf, read by every part of fs/.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use super::templates::TemplateDef;
use crate::cache::Limits;
use crate::store::SecretName;

/// The defaults of `FsConfig`, declared with the configuration's others.
pub use crate::config::defaults::{
    COLD_WAIT, DEFAULT_CACHE_BYTES, DEFAULT_MAX_STALE, DENIED_TTL, DOWN_TTL,
};
/// How long the kernel may keep entries for immutable things (versions by id).
pub(super) const FOREVER: Duration = Duration::from_secs(24 * 3600);

/// Validated settings the filesystem runs with.
#[derive(Clone, Debug)]
pub struct FsConfig {
    pub ttl: Duration,
    /// How long a name found missing is remembered as missing.
    pub negative_ttl: Duration,
    pub prefix: Option<String>,
    /// `--secret`: exactly these, no ListSecrets.
    pub secrets: Option<Vec<SecretName>>,
    pub uid: u32,
    pub gid: u32,
    pub read_only: bool,
    pub allow_create: bool,
    /// Bytes of secret values (and version lists) cached.
    pub cache_bytes: NonZeroUsize,
    /// How long a value may be served after its refreshes began failing
    /// (None: no limit; zero: never).
    pub max_stale: Option<Duration>,
    /// What the stats say the mount is: the store's kind and the mountpoint.
    pub store_kind: String,
    pub mountpoint: String,
    /// Bounds on editors' temporary files, per mount.
    pub temp_max_files: usize,
    pub temp_max_bytes: usize,
    /// How long a read with nothing cached waits for the backend before
    /// EIO (the fetch goes on and fills the cache); None: the store's own
    /// timeouts.
    pub cold_wait: Option<Duration>,
    /// How long AccessDenied and KMS failures are answered from memory.
    pub denied_ttl: Duration,
    /// How long "nothing cached and the backend failed" is answered from
    /// memory.
    pub down_ttl: Duration,
    /// Change hooks (`--on-change`, `[[hook]]`); none: nothing is watched.
    pub hooks: Vec<crate::hooks::HookSpec>,
    /// Rendered files (`[[template]]` in the config file).
    pub templates: Vec<TemplateDef>,
    /// `--trim-newline`: one trailing newline of a single-line text value
    /// written to `current` goes (a rule's setting wins).
    pub trim_newline: bool,
    /// The ownership rules at start (SIGHUP replaces the Fs's copy).
    pub rules: Arc<crate::rules::Rules>,
    /// `[[access]]` rules and the access log (src/access).
    pub access: Arc<crate::access::Access>,
}

/// How long a reader of an expired value waits for its refresh before it
/// gets the value held (counted as stale) while the refresh goes on.
pub const REFRESH_WAIT: Duration = Duration::from_secs(1);

/// Each cached TTL is drawn from TTL x (1 - TTL_JITTER .. 1): spread
/// apart, never longer than the TTL.
pub const TTL_JITTER: f64 = 0.2;

/// A value revalidated by DescribeSecret is still read again with
/// GetSecretValue at least this often, so that a GetSecretValue permission
/// or a KMS key revoked since takes effect.
pub const REVERIFY: Duration = Duration::from_secs(15 * 60);

impl FsConfig {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            negative_ttl: ttl.min(Duration::from_secs(10)),
            prefix: None,
            secrets: None,
            uid: 0,
            gid: 0,
            read_only: false,
            allow_create: false,
            cache_bytes: NonZeroUsize::new(DEFAULT_CACHE_BYTES).expect("non-zero"),
            max_stale: Some(DEFAULT_MAX_STALE),
            store_kind: String::new(),
            mountpoint: String::new(),
            temp_max_files: 64,
            temp_max_bytes: 4 << 20,
            cold_wait: Some(COLD_WAIT),
            denied_ttl: DENIED_TTL,
            down_ttl: DOWN_TTL,
            hooks: Vec::new(),
            templates: Vec::new(),
            trim_newline: false,
            rules: Arc::default(),
            access: Arc::default(),
        }
    }

    /// The cache rules every cache of the mount shares.
    pub(crate) fn limits<V>(&self, max_bytes: usize, weigh: fn(&V) -> usize) -> Limits<V> {
        Limits {
            stale_retry: self.ttl.min(Duration::from_secs(5)),
            max_stale: self.max_stale,
            refresh_wait: REFRESH_WAIT,
            jitter: TTL_JITTER,
            cold_wait: self.cold_wait,
            denied_ttl: self.denied_ttl,
            down_ttl: self.down_ttl,
            ..Limits::new(max_bytes, weigh)
        }
    }
}
