//! The access log (`--access-log`): one JSON line (or one journal entry)
//! per open of a secret's file and per committed write, naming the file,
//! the result and the caller (pid, executable, unit, uid, gid), never a
//! value. A storm of opens by one process on one secret is one line for
//! the first open, then one line a minute with the count of the others,
//! so a hot loop cannot flood the log; the number of (process, secret)
//! pairs followed at once is bounded too.
//!
//! It is a `tracing` dispatcher of its own, apart from the daemon's log:
//! journald (identifier `secretsfs-access`, fields `SECRETSFS_*`), a file,
//! or standard error, in the JSON format of `--log-format json`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[cfg(test)]
use parking_lot::Mutex;
use tracing_subscriber::prelude::*;

pub use super::record::{Record, Who};
use super::storms::Storms;

/// How long one storm's opens are counted before their count is logged.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Most (process, secret, result) storms followed at once; opens of more
/// are counted as one number a minute.
pub const MAX_FOLLOWED: usize = 10_000;

/// Where the access log goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dest {
    Journald,
    Stderr,
    File(PathBuf),
}

impl Dest {
    /// `journald`, `stderr`, or an absolute file path (appended to).
    pub fn parse(v: &str) -> Result<Self, String> {
        match v {
            "journald" => Ok(Dest::Journald),
            "stderr" => Ok(Dest::Stderr),
            p if p.starts_with('/') => Ok(Dest::File(PathBuf::from(p))),
            _ => Err(format!(
                "access_log: '{v}' is not journald, stderr or an absolute file path"
            )),
        }
    }
}

/// One line of the access log, in its own dispatcher: the record's secret
/// and caller, then `extra` fields, then the message.
macro_rules! line {
    ($log:expr, $level:ident, $r:expr, $msg:literal, $($extra:tt)*) => {{
        let (r, w) = (&$r, &$r.who);
        tracing::dispatcher::with_default(&$log.dispatch, || {
            tracing::$level!(
                secret = %r.secret,
                pid = w.pid,
                exe = w.exe.as_deref().unwrap_or(""),
                unit = w.unit.as_deref().unwrap_or(""),
                uid = w.uid,
                gid = w.gid,
                $($extra)*,
                $msg
            )
        })
    }};
}

pub struct AccessLog {
    dispatch: tracing::Dispatch,
    storms: Storms,
    window: Duration,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessLog")
    }
}

impl AccessLog {
    /// Opens the destination (a file is created 0600 and appended to).
    pub fn open(dest: &Dest) -> Result<Arc<Self>, String> {
        let registry = tracing_subscriber::registry();
        let json = || tracing_subscriber::fmt::layer().json().with_target(false);
        let dispatch = match dest {
            Dest::Journald => {
                let layer = tracing_journald::layer()
                    .map_err(|e| format!("access_log: journald: {e}"))?
                    .with_syslog_identifier("secretsfs-access".into())
                    .with_field_prefix(Some("SECRETSFS".into()));
                tracing::Dispatch::new(registry.with(layer))
            }
            Dest::Stderr => {
                tracing::Dispatch::new(registry.with(json().with_writer(std::io::stderr)))
            }
            Dest::File(p) => {
                use std::os::unix::fs::OpenOptionsExt;
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(p)
                    .map_err(|e| format!("access_log: {}: {e}", p.display()))?;
                tracing::Dispatch::new(
                    registry.with(json().with_writer(std::sync::Mutex::new(file))),
                )
            }
        };
        Ok(Self::with(dispatch, WINDOW))
    }

    fn with(dispatch: tracing::Dispatch, window: Duration) -> Arc<Self> {
        Arc::new(Self {
            dispatch,
            storms: Storms::new(MAX_FOLLOWED),
            window,
        })
    }

    /// An open: logged if it starts a storm, else counted.
    pub fn open_of(self: &Arc<Self>, r: Record) {
        self.storms.flush_every(self, self.window, Self::flush);
        if !self.storms.first(&r) {
            return;
        }
        if r.allowed {
            line!(self, info, r, "open", file = %r.file, result = "allowed");
        } else {
            line!(self, warn, r, "open", file = %r.file, result = "denied");
        }
    }

    /// A write committed as version `version`: always logged.
    pub fn commit(&self, r: &Record, version: &str) {
        line!(self, info, r, "write committed", file = %r.file, result = "committed", version);
    }

    /// One line per storm with opens since its last line; quiet storms
    /// are forgotten (their next open is logged in full).
    pub fn flush(&self) {
        let drained = self.storms.drain();
        let secs = self.window.as_secs();
        for (r, count) in drained.storms {
            line!(
                self,
                info,
                r,
                "opens repeated",
                result = r.result(),
                count,
                period_secs = secs
            );
        }
        let unfollowed = drained.unfollowed;
        if unfollowed > 0 {
            tracing::dispatcher::with_default(&self.dispatch, || {
                tracing::warn!(
                    count = unfollowed,
                    period_secs = secs,
                    "opens not logged one by one: too many processes and secrets at once"
                );
            });
        }
    }

    #[cfg(test)]
    pub(crate) fn to_buffer(window: Duration) -> (Arc<Self>, Buffer) {
        let buf = Buffer::default();
        let b = buf.clone();
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .with_target(false)
            .with_writer(move || b.clone());
        let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
        (Self::with(dispatch, window), buf)
    }
}

/// A log in memory, for tests.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Buffer(Arc<Mutex<Vec<u8>>>);

#[cfg(test)]
impl Buffer {
    pub fn lines(&self) -> Vec<serde_json::Value> {
        String::from_utf8(self.0.lock().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

#[cfg(test)]
impl std::io::Write for Buffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(pid: u32, secret: &str, allowed: bool) -> Record {
        Record {
            secret: secret.into(),
            file: format!("{secret}/current"),
            allowed,
            who: Who {
                pid,
                uid: 0,
                gid: Some(0),
                exe: Some("/usr/bin/cat".into()),
                unit: Some("nginx.service".into()),
            },
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_storm_is_its_first_open_then_a_count_a_minute() {
        let (log, buf) = AccessLog::to_buffer(WINDOW);
        for _ in 0..10_000 {
            log.open_of(rec(7, "prod/db", true));
        }
        log.open_of(rec(7, "prod/db", false));
        log.open_of(rec(8, "prod/db", true));
        assert_eq!(
            buf.lines().len(),
            3,
            "one line per (process, secret, result)"
        );
        tokio::time::sleep(WINDOW + Duration::from_secs(1)).await;
        let lines = buf.lines();
        assert_eq!(lines.len(), 4, "{lines:?}");
        let count = &lines[3]["fields"];
        assert_eq!(count["message"], "opens repeated");
        assert_eq!(count["count"], 9_999);
        assert_eq!(count["pid"], 7);
        // A quiet minute: the storms are forgotten, the next open is
        // logged in full again.
        tokio::time::sleep(WINDOW * 2).await;
        log.open_of(rec(7, "prod/db", true));
        assert_eq!(buf.lines().len(), 5);
        assert_eq!(buf.lines()[4]["fields"]["message"], "open");
    }

    #[tokio::test]
    async fn lines_name_the_caller_and_the_result() {
        let (log, buf) = AccessLog::to_buffer(WINDOW);
        log.open_of(rec(7, "prod/db", false));
        log.commit(&rec(9, "prod/db", true), "v-1");
        let lines = buf.lines();
        let open = &lines[0]["fields"];
        assert_eq!(lines[0]["level"], "WARN");
        assert_eq!(open["result"], "denied");
        assert_eq!(open["exe"], "/usr/bin/cat");
        assert_eq!(open["unit"], "nginx.service");
        assert_eq!(open["file"], "prod/db/current");
        let commit = &lines[1]["fields"];
        assert_eq!(commit["version"], "v-1");
        assert_eq!(commit["pid"], 9);
    }

    #[tokio::test]
    async fn storms_followed_at_once_are_bounded() {
        let (log, buf) = AccessLog::to_buffer(WINDOW);
        for pid in 0..(MAX_FOLLOWED as u32 + 5) {
            log.open_of(rec(pid, "s", true));
        }
        assert_eq!(buf.lines().len(), MAX_FOLLOWED);
        log.flush();
        let last = buf.lines().pop().unwrap();
        assert_eq!(last["fields"]["count"], 5);
    }

    #[test]
    fn destinations_parse() {
        assert_eq!(Dest::parse("journald"), Ok(Dest::Journald));
        assert_eq!(Dest::parse("stderr"), Ok(Dest::Stderr));
        assert_eq!(
            Dest::parse("/var/log/a.log"),
            Ok(Dest::File("/var/log/a.log".into()))
        );
        assert!(Dest::parse("a.log").is_err());
    }
}
