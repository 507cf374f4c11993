//! Rendered files: templates declared in the config file, served read-only
//! at `.secretsfs/rendered/<name>`, rendered from secrets in memory only.
//! `Templates` owns the loaded templates and each one's last render; the
//! `Fs` methods below fetch what a render needs through the value cache
//! (same TTL, stale and single-flight rules as `current`) and re-render
//! when a secret it used moved to another version.

mod def;
mod engine;
mod render;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};
use crate::store::{SecretBytes, SecretVersion, VersionId};
use engine::{Failure, Fetched, Key};

pub use def::{TemplateDef, resolve_all};

/// The directory under `.secretsfs/` that holds the rendered files.
pub const RENDERED_DIR: &str = "rendered";
/// Rounds of fetch-then-render before a template is given up on (each
/// round fetches every secret the last one found missing).
const MAX_PASSES: usize = 65;
/// Distinct secrets (with their stage) one template may read.
const MAX_SECRETS: usize = 64;

/// What a render gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Bytes(Arc<SecretBytes>),
    Failed(Failure),
}

/// What a secret a render used was at the time.
#[derive(Clone, Debug, PartialEq, Eq)]
enum DepState {
    Version(VersionId),
    NoStage,
    NoSecret,
    OutOfScope,
}

impl From<&Fetched> for DepState {
    fn from(f: &Fetched) -> Self {
        match f {
            Fetched::Value(v) => DepState::Version(v.id.clone()),
            Fetched::NoStage => DepState::NoStage,
            Fetched::NoSecret => DepState::NoSecret,
            Fetched::OutOfScope => DepState::OutOfScope,
        }
    }
}

/// One render: its outcome, the secrets it used and their versions, and
/// when its bytes last changed (the file's mtime).
#[derive(Debug)]
pub struct Render {
    pub outcome: Outcome,
    deps: Vec<(Key, DepState)>,
    pub mtime: SystemTime,
    /// The bytes as a version the kernel view can hold (page-cache fills
    /// are answered from it), made at the first lookup.
    shown: std::sync::OnceLock<Arc<SecretVersion>>,
}

impl Render {
    /// The rendered bytes as one version (its id names this render).
    pub(in crate::fs) fn shown(&self, bytes: &Arc<SecretBytes>) -> Arc<SecretVersion> {
        self.shown
            .get_or_init(|| {
                let id = VersionId::new(format!("render-{:p}", Arc::as_ptr(bytes)));
                Arc::new(SecretVersion::new(id, (**bytes).clone(), self.mtime))
            })
            .clone()
    }

    /// The bytes, or the failure as the error every open and read gets.
    pub(in crate::fs) fn bytes(&self) -> Result<Arc<SecretBytes>> {
        match &self.outcome {
            Outcome::Bytes(b) => Ok(b.clone()),
            Outcome::Failed(f) => Err(Error::Template(f.to_string())),
        }
    }

    pub(in crate::fs) fn size(&self) -> u64 {
        match &self.outcome {
            Outcome::Bytes(b) => b.len() as u64,
            Outcome::Failed(_) => 0,
        }
    }
}

/// One loaded template.
pub struct Slot {
    pub def: TemplateDef,
    /// Its syntax error, found at load.
    syntax: Option<Failure>,
    last: Mutex<Option<Arc<Render>>>,
    /// One render at a time per template; others wait and share it.
    turn: tokio::sync::Mutex<()>,
}

impl Slot {
    fn load(def: TemplateDef) -> Self {
        let syntax = engine::check(&def.name, &def.text).err();
        if let Some(f) = &syntax {
            tracing::warn!(
                template = %def.name,
                source = %def.source.display(),
                line = f.line.unwrap_or(0),
                error = %f,
                "template has a syntax error; its file answers EIO until it is fixed (then SIGHUP)"
            );
        }
        Self {
            def,
            syntax,
            last: Mutex::new(None),
            turn: tokio::sync::Mutex::new(()),
        }
    }
}

/// The templates of the mount, by name.
#[derive(Default)]
pub struct Templates {
    slots: RwLock<BTreeMap<Arc<str>, Arc<Slot>>>,
}

impl Templates {
    pub fn new(defs: &[TemplateDef]) -> Self {
        let t = Self::default();
        t.replace(defs.to_vec());
        t
    }

    /// Loads a new set (SIGHUP). A template whose definition did not
    /// change keeps its last render; the others render afresh.
    pub fn replace(&self, defs: Vec<TemplateDef>) {
        let old = self.slots.read().clone();
        let new = defs
            .into_iter()
            .map(|def| {
                let slot = match old.get(&def.name) {
                    Some(s) if s.def == def => s.clone(),
                    _ => Arc::new(Slot::load(def)),
                };
                (slot.def.name.clone(), slot)
            })
            .collect();
        *self.slots.write() = new;
    }

    pub fn get(&self, name: &str) -> Option<Arc<Slot>> {
        self.slots.read().get(name).cloned()
    }

    pub fn names(&self) -> Vec<Arc<str>> {
        self.slots.read().keys().cloned().collect()
    }

    pub fn any(&self) -> bool {
        !self.slots.read().is_empty()
    }

    /// Whether some rendered file is for someone other than the mount's
    /// owner (another owner or group, or group/other read bits): then the
    /// directories on the way must let others through.
    pub fn shared(&self, uid: u32, gid: u32) -> bool {
        self.slots.read().values().any(|s| {
            s.def.uid.is_some_and(|u| u != uid)
                || s.def.gid.is_some_and(|g| g != gid)
                || s.def.mode & 0o044 != 0
        })
    }
}
