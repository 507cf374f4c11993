//! The one loader of the config file, used at start and by SIGHUP's
//! `reload()`: the file parsed strictly (schema.rs), then what it alone
//! decides checked and resolved once (owners, `[[rule]]`s, `[[template]]`s).

use std::path::Path;

use super::ids::NameOrNumber;
use super::schema::{self, FileConfig};
use crate::access::AccessRules;
use crate::fs::TemplateDef;
use crate::rules::Rules;

/// The config file, loaded: its settings as written, and what is resolved
/// from the file alone.
#[derive(Debug)]
pub struct Loaded {
    /// The mount options and `[[hook]]`s (the tables below are taken out).
    pub settings: FileConfig,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub rules: Rules,
    pub access: AccessRules,
    pub templates: Vec<TemplateDef>,
}

/// What SIGHUP hands to the running filesystem.
#[derive(Debug)]
pub struct Reloaded {
    pub rules: Rules,
    pub access: AccessRules,
    pub templates: Vec<TemplateDef>,
}

/// Reads and checks the file; an error names the file and what is wrong
/// (the line and key, the rule or the template). Owners and groups are
/// resolved even when a flag overrides them: a name that cannot work is
/// an error in the file, as a wrong type is.
pub fn load(path: &Path) -> Result<Loaded, String> {
    let mut settings = schema::parse(path)?;
    let fail = |e: String| format!("--config {}: {e}", path.display());
    // Template sources are read relative to the file's directory.
    let base = path.parent().unwrap_or(Path::new("."));
    let templates =
        crate::fs::resolve_all(settings.template.take().unwrap_or_default(), base).map_err(fail)?;
    let uid = settings.uid.as_ref().map(NameOrNumber::uid).transpose();
    let uid = uid.map_err(|e| fail(format!("uid: {e}")))?;
    let gid = settings.gid.as_ref().map(NameOrNumber::gid).transpose();
    let gid = gid.map_err(|e| fail(format!("gid: {e}")))?;
    let rules = Rules::build(&settings.rule.take().unwrap_or_default()).map_err(fail)?;
    let access = AccessRules::build(&settings.access.take().unwrap_or_default()).map_err(fail)?;
    Ok(Loaded {
        settings,
        uid,
        gid,
        rules,
        access,
        templates,
    })
}

/// SIGHUP: the file loaded again, with the same strictness as at start;
/// its rules and templates replace the running ones (the other settings
/// need a restart).
pub fn reload(path: &Path) -> Result<Reloaded, String> {
    let Loaded {
        rules,
        access,
        templates,
        ..
    } = load(path)?;
    Ok(Reloaded {
        rules,
        access,
        templates,
    })
}
