//! What the access log records of one open or commit, and who made it: a
//! leaf of access/, which the log and its storm counting share.

/// Who made an open or a commit, as the log names them.
#[derive(Clone, Debug, Default)]
pub struct Who {
    pub pid: u32,
    pub uid: u32,
    pub gid: Option<u32>,
    pub exe: Option<String>,
    pub unit: Option<String>,
}

/// One open (or commit) to log.
#[derive(Clone, Debug)]
pub struct Record {
    pub secret: String,
    pub file: String,
    pub allowed: bool,
    pub who: Who,
}

impl Record {
    pub(super) fn result(&self) -> &'static str {
        if self.allowed { "allowed" } else { "denied" }
    }
}
