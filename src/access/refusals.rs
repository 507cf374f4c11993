//! The daemon log's lines for opens that `[[access]]` rules refuse. A
//! process looping on a secret it may not read would otherwise write one
//! line per open to the operator's log (journald), at the rate of its
//! opens. Refusals are followed as storms, as the access log follows
//! opens (`storms`): the first refusal of a (process, secret) is one INFO
//! line `request refused` naming the file and the caller, the others are
//! one `requests refused, repeated` line a minute with their count. The
//! access log (when set) still has its own lines; `.secretsfs/stats`
//! counts every refusal (`access_denied`).

use std::sync::Arc;
use std::time::Duration;

use super::log::{MAX_FOLLOWED, Record, WINDOW};
use super::storms::Storms;

pub struct Refusals {
    storms: Storms,
    window: Duration,
}

impl Default for Refusals {
    fn default() -> Self {
        Self::with(WINDOW)
    }
}

impl Refusals {
    fn with(window: Duration) -> Self {
        Self {
            storms: Storms::new(MAX_FOLLOWED),
            window,
        }
    }

    /// A refused open: logged if it starts a storm, else counted.
    pub fn refused(self: &Arc<Self>, r: &Record) {
        self.storms.flush_every(self, self.window, Self::flush);
        if !self.storms.first(r) {
            return;
        }
        let w = &r.who;
        tracing::info!(
            path = %r.file,
            secret = %r.secret,
            pid = w.pid,
            exe = w.exe.as_deref().unwrap_or(""),
            unit = w.unit.as_deref().unwrap_or(""),
            uid = w.uid,
            error = "not allowed by an [[access]] rule",
            "request refused"
        );
    }

    /// One line per storm with refusals since its last line.
    pub fn flush(&self) {
        let drained = self.storms.drain();
        let secs = self.window.as_secs();
        for (r, count) in drained.storms {
            tracing::info!(
                secret = %r.secret,
                pid = r.who.pid,
                exe = r.who.exe.as_deref().unwrap_or(""),
                count,
                period_secs = secs,
                "requests refused, repeated (not allowed by an [[access]] rule)"
            );
        }
        if drained.unfollowed > 0 {
            tracing::info!(
                count = drained.unfollowed,
                period_secs = secs,
                "requests refused by [[access]] rules, not logged one by one: too many processes and secrets at once"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::log::Who;

    fn refusal(pid: u32, secret: &str) -> Record {
        Record {
            secret: secret.into(),
            file: format!("{secret}/current"),
            allowed: false,
            who: Who {
                pid,
                uid: 1000,
                gid: Some(1000),
                exe: Some("/usr/bin/cat".into()),
                unit: None,
            },
        }
    }

    #[test]
    fn refusals_are_one_line_per_process_and_secret_then_a_count() {
        let buf = crate::access::log::Buffer::default();
        let b = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || b.clone())
            .finish();
        let r = Arc::new(Refusals::with(WINDOW));
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..2_000 {
                r.refused(&refusal(7, "prod/db"));
            }
            r.refused(&refusal(7, "prod/tls"));
            r.refused(&refusal(8, "prod/db"));
            assert_eq!(buf.lines().len(), 3, "one line per (process, secret)");
            r.flush();
            let lines = buf.lines();
            assert_eq!(lines.len(), 4, "{lines:?}");
            let count = &lines[3]["fields"];
            assert_eq!(count["count"], 1_999);
            assert_eq!(count["pid"], 7);
            assert_eq!(lines[0]["fields"]["message"], "request refused");
            assert_eq!(lines[0]["fields"]["path"], "prod/db/current");
            // Nothing since: a quiet window forgets the storm, and the
            // next refusal is logged in full.
            r.flush();
            assert_eq!(buf.lines().len(), 4);
            r.refused(&refusal(7, "prod/db"));
            assert_eq!(buf.lines().len(), 5);
        });
    }
}
