//! Access rules by caller (`[[access]]` in the config file) and the access
//! log. A rule names a glob over secret names and the callers it allows:
//! by systemd unit, executable, user, group (every condition it gives must
//! hold; a list is any of its items). A secret some rules match may be
//! opened only by a caller one of them allows; a secret no rule matches
//! is left to file modes. `hide` drops the secret's name from the
//! listings others make. The filesystem asks `Access` at every open of a
//! secret's file (with the kernel's pid), at listings, and logs commits.
//! See docs/access.md.

pub mod caller;
pub mod log;
mod record;
mod refusals;
mod storms;

use std::sync::Arc;

use globset::GlobMatcher;
use parking_lot::RwLock;

use crate::config::ids::NameOrNumber;
use crate::config::schema::{AccessSpec, OneOrMany};
use crate::error::{Error, Result};
use crate::fs::types::Caller;
use crate::stats::Stats;
use caller::{Inspector, ProcInfo};
use log::{AccessLog, Record, Who};
use refusals::Refusals;

/// One `[[access]]` rule, checked.
#[derive(Debug, Clone)]
struct Rule {
    matcher: GlobMatcher,
    units: Vec<GlobMatcher>,
    exes: Vec<GlobMatcher>,
    uids: Vec<u32>,
    gids: Vec<u32>,
    hide: bool,
}

impl Rule {
    fn allows(&self, uid: u32, p: &ProcInfo) -> bool {
        let any = |ms: &[GlobMatcher], v: Option<&str>| {
            ms.is_empty() || v.is_some_and(|v| ms.iter().any(|m| m.is_match(v)))
        };
        any(&self.units, p.unit.as_deref())
            && any(&self.exes, p.exe.as_deref())
            && (self.uids.is_empty() || self.uids.contains(&uid))
            && (self.gids.is_empty()
                || self
                    .gids
                    .iter()
                    .any(|g| *g == p.gid || p.groups.contains(g)))
    }
}

/// The `[[access]]` rules of a mount.
#[derive(Debug, Clone, Default)]
pub struct AccessRules {
    rules: Vec<Rule>,
}

impl AccessRules {
    /// Checks every rule; an error names the rule (its number and pattern).
    pub fn build(specs: &[AccessSpec]) -> std::result::Result<Self, String> {
        let rules = specs
            .iter()
            .enumerate()
            .map(|(i, s)| {
                build_rule(s)
                    .map_err(|e| format!("access rule {} (pattern '{}'): {e}", i + 1, s.pattern))
            })
            .collect::<std::result::Result<_, _>>()?;
        Ok(Self { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    fn covers(&self, secret: &str) -> bool {
        self.rules.iter().any(|r| r.matcher.is_match(secret))
    }

    /// Whether the caller may open the secret's files (a secret no rule
    /// matches: yes).
    fn allows(&self, secret: &str, uid: u32, p: &ProcInfo) -> bool {
        let mut matching = self.rules.iter().filter(|r| r.matcher.is_match(secret));
        let mut any_rule = false;
        let allowed = matching.any(|r| {
            any_rule = true;
            r.allows(uid, p)
        });
        allowed || !any_rule
    }

    fn hides(&self, secret: &str) -> bool {
        self.rules
            .iter()
            .any(|r| r.hide && r.matcher.is_match(secret))
    }
}

fn build_rule(s: &AccessSpec) -> std::result::Result<Rule, String> {
    let globs = |v: &Option<OneOrMany<String>>, what: &str| {
        OneOrMany::list(v)
            .iter()
            .map(|g| {
                globset::GlobBuilder::new(g)
                    .literal_separator(true)
                    .build()
                    .map(|g| g.compile_matcher())
                    .map_err(|e| format!("{what}: '{g}' is not a glob: {e}"))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
    };
    let ids = |v: &Option<OneOrMany<NameOrNumber>>, uid: bool| {
        OneOrMany::list(v)
            .iter()
            .map(|n| {
                if uid {
                    n.uid().map_err(|e| format!("user: {e}"))
                } else {
                    n.gid().map_err(|e| format!("group: {e}"))
                }
            })
            .collect::<std::result::Result<Vec<_>, _>>()
    };
    let rule = Rule {
        matcher: crate::tree::glob(&s.pattern).map_err(|e| format!("not a glob: {e}"))?,
        units: globs(&s.unit, "unit")?,
        exes: globs(&s.exe, "exe")?,
        uids: ids(&s.user, true)?,
        gids: ids(&s.group, false)?,
        hide: s.hide.unwrap_or(false),
    };
    if rule.units.is_empty() && rule.exes.is_empty() && rule.uids.is_empty() && rule.gids.is_empty()
    {
        return Err("names no caller: give unit, exe, user or group".into());
    }
    Ok(rule)
}

/// The access rules in force, who callers are, and the access log.
pub struct Access {
    rules: RwLock<Arc<AccessRules>>,
    inspector: Arc<Inspector>,
    log: Option<Arc<AccessLog>>,
    /// The daemon log's lines for refused opens, a storm at a time.
    refusals: Arc<Refusals>,
    /// Read-only mounts answer open with ENOSYS (the kernel's no-open
    /// mode) unless they start with access rules or an access log (which
    /// must see every open): decided at start.
    open_mode: bool,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("rules", &self.rules.read().len())
            .field("log", &self.log.is_some())
            .field("open_mode", &self.open_mode)
            .finish()
    }
}

impl Default for Access {
    fn default() -> Self {
        Self::new(AccessRules::default(), None)
    }
}

/// The file an open names, and the secrets it reads.
pub struct Target<'a> {
    pub file: &'a str,
    pub secrets: &'a [String],
}

tokio::task_local! {
    /// Who is closing (or syncing, renaming) a file now: a commit made in
    /// this task is theirs.
    static WRITER: (Caller, String);
}

/// Runs `fut` (a close, fsync or rename) as `caller`'s, on `file`, so the
/// commit it makes is logged with them.
pub async fn as_writer<T>(caller: Caller, file: String, fut: impl Future<Output = T>) -> T {
    WRITER.scope((caller, file), fut).await
}

impl Access {
    pub fn new(rules: AccessRules, log: Option<Arc<AccessLog>>) -> Self {
        Self {
            open_mode: !rules.is_empty() || log.is_some(),
            rules: RwLock::new(Arc::new(rules)),
            inspector: Arc::default(),
            log,
            refusals: Arc::default(),
        }
    }

    /// Whether opens must reach the daemon even on a read-only mount.
    pub fn open_mode(&self) -> bool {
        self.open_mode
    }

    /// SIGHUP: new rules. A read-only mount that started without rules is
    /// in the kernel's no-open mode, where rules cannot be checked: new
    /// rules there need a restart, and the old (none) stay.
    pub fn set_rules(
        &self,
        rules: AccessRules,
        read_only: bool,
    ) -> std::result::Result<(), String> {
        if read_only && !self.open_mode && !rules.is_empty() {
            return Err("[[access]] rules on a read-only mount need a restart (it started without them, in no-open mode)".into());
        }
        *self.rules.write() = Arc::new(rules);
        Ok(())
    }

    fn rules(&self) -> Arc<AccessRules> {
        self.rules.read().clone()
    }

    /// Whether anything is to be done at opens (rules or a log).
    pub fn active(&self) -> bool {
        self.log.is_some() || !self.rules.read().is_empty()
    }

    /// The check at open: EACCES unless every secret the file reads
    /// allows the caller. Logged (allowed or denied) when a log is set.
    pub async fn check_open(&self, t: Target<'_>, caller: Caller, stats: &Stats) -> Result<()> {
        let rules = self.rules();
        let ruled = t.secrets.iter().any(|s| rules.covers(s));
        if !ruled && self.log.is_none() {
            return Ok(());
        }
        if !ruled {
            // Nothing to decide: the open goes on, the log line follows
            // (at once when the caller is held in memory).
            if let (Some(log), Some(info)) = (&self.log, self.inspector.held(caller.pid)) {
                for s in t.secrets {
                    log.open_of(record(s, t.file, true, caller, Some(&info)));
                }
                return Ok(());
            }
            let (log, inspector) = (self.log.clone(), self.inspector.clone());
            let (file, secrets) = (t.file.to_string(), t.secrets.to_vec());
            tokio::spawn(async move {
                let info = inspector.inspect(caller.pid).await;
                if let Some(log) = log {
                    for s in secrets {
                        log.open_of(record(&s, &file, true, caller, info.as_deref()));
                    }
                }
            });
            return Ok(());
        }
        let mut info = self.inspector.inspect(caller.pid).await;
        let allows_all = |p: &ProcInfo| t.secrets.iter().all(|s| rules.allows(s, caller.uid, p));
        if !info.as_deref().is_some_and(allows_all) {
            // What was held may be the program the process ran before an
            // exec (a wrapper that touched the mount, then exec'd the
            // allowed program): refusals are rare, so look again once.
            info = self.inspector.refresh(caller.pid).await;
        }
        for s in t.secrets {
            let allowed = info
                .as_deref()
                .is_some_and(|p| rules.allows(s, caller.uid, p));
            let r = record(s, t.file, allowed, caller, info.as_deref());
            if !allowed {
                // The daemon log's line, a storm at a time (the error is
                // not logged again where it is answered).
                self.refusals.refused(&r);
            }
            if let Some(log) = &self.log {
                log.open_of(r);
            }
            if !allowed {
                stats.access_denied();
                return Err(Error::RuleRefused);
            }
        }
        Ok(())
    }

    /// The names of `secrets` the caller may see listed: a hidden secret
    /// shows only to callers its rules allow.
    pub async fn listable(&self, secrets: Vec<String>, caller: Caller) -> Vec<String> {
        let rules = self.rules();
        if !secrets.iter().any(|s| rules.hides(s)) {
            return secrets;
        }
        let shown = |s: &String, info: Option<&ProcInfo>| {
            !rules.hides(s) || info.is_some_and(|p| rules.allows(s, caller.uid, p))
        };
        let mut info = self.inspector.inspect(caller.pid).await;
        if !secrets.iter().all(|s| shown(s, info.as_deref())) {
            // As at open: what was held may predate an exec.
            info = self.inspector.refresh(caller.pid).await;
        }
        secrets
            .into_iter()
            .filter(|s| shown(s, info.as_deref()))
            .collect()
    }

    /// A write stored as `version`: logged with the closer the task runs
    /// for (`as_writer`).
    pub fn committed(&self, secret: &str, version: &str) {
        let Some(log) = self.log.clone() else {
            return;
        };
        let Ok((caller, file)) = WRITER.try_with(Clone::clone) else {
            let r = record(secret, "", true, Caller { pid: 0, uid: 0 }, None);
            log.commit(&r, version);
            return;
        };
        if let Some(info) = self.inspector.held(caller.pid) {
            // Seen at its open, and still there: logged at once.
            log.commit(&record(secret, &file, true, caller, Some(&info)), version);
            return;
        }
        let (secret, version) = (secret.to_string(), version.to_string());
        let inspector = self.inspector.clone();
        tokio::spawn(async move {
            let info = inspector.inspect(caller.pid).await;
            log.commit(
                &record(&secret, &file, true, caller, info.as_deref()),
                &version,
            );
        });
    }
}

/// The mount's `Access` from the config file's rules and `--access-log`.
pub fn from_config(
    rules: Option<AccessRules>,
    log: Option<&str>,
) -> std::result::Result<Arc<Access>, String> {
    let log = log
        .map(|d| log::Dest::parse(d).and_then(|d| AccessLog::open(&d)))
        .transpose()?;
    Ok(Arc::new(Access::new(rules.unwrap_or_default(), log)))
}

fn record(secret: &str, file: &str, allowed: bool, c: Caller, p: Option<&ProcInfo>) -> Record {
    Record {
        secret: secret.into(),
        file: file.into(),
        allowed,
        who: Who {
            pid: p.map_or(c.pid, |p| p.tgid),
            uid: c.uid,
            gid: p.map(|p| p.gid),
            exe: p.and_then(|p| p.exe.clone()),
            unit: p.and_then(|p| p.unit.clone()),
        },
    }
}

#[cfg(test)]
mod tests;
