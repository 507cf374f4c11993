//! Every default of the configuration, next to the schema: what an option
//! left unset on the command line, in `-o` and in the config file is, and
//! the filesystem's own settings. `--help` states the command line's (a
//! test keeps the two equal). A leaf: src/fs re-exports its defaults from here.

use std::time::Duration;

/// `--ttl`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// `--threads`: FUSE session threads.
pub const DEFAULT_THREADS: usize = 2;
/// `--max-calls`: the store's gate, declared with it.
pub use crate::store::DEFAULT_MAX_CALLS;
/// `--start-jitter`.
pub const DEFAULT_START_JITTER: Duration = Duration::ZERO;
/// `--max-stale`: how long a value is served while its refreshes fail.
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(3600);
/// `--cache-size`: the bound on cached values, 32 MiB (about 500 values of
/// the maximum size, or tens of thousands of typical ones).
pub const DEFAULT_CACHE_BYTES: usize = 32 << 20;
/// `--watch`: how often a hook's secrets are revalidated.
pub const DEFAULT_WATCH: Duration = Duration::from_secs(60);
/// `--hook-timeout`: how long a hook may run before it is killed.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(30);
/// A `[[template]]`'s mode: its owner reads it, no one else.
pub const DEFAULT_TEMPLATE_MODE: u16 = 0o400;

/// The AWS store's attempt timeout: a read with nothing cached waits no
/// longer for an answer.
pub const COLD_WAIT: Duration = Duration::from_secs(5);
/// How long AccessDenied and KMS failures are answered from memory.
pub const DENIED_TTL: Duration = Duration::from_secs(30);
/// How long "nothing cached and the backend failed" is answered from memory.
pub const DOWN_TTL: Duration = Duration::from_secs(5);
