//! The embedded local store: secrets in a directory on this machine, with the
//! versioning rules of Secrets Manager (UUID version ids, AWSCURRENT and
//! AWSPREVIOUS moves, token idempotency), one JSON file per secret, written
//! atomically (temp file, fsync, rename, fsync of the directory).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use super::{
    Description, Label, ListedVersion, SecretBytes, SecretName, SecretStore, SecretVersion,
    Selector, Stage, StoreError, StoreErrorKind, StoreResult, VersionId,
};

/// Unlabelled versions kept per secret, as AWS does.
const MAX_UNLABELLED: usize = 100;

/// On-disk form of one secret (`<hex of name>.json`).
#[derive(Serialize, Deserialize)]
struct SecretFile {
    name: String,
    versions: Vec<VersionFile>,
}

#[derive(Serialize, Deserialize)]
struct VersionFile {
    id: String,
    created_ms: u64,
    stages: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    string: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    binary_base64: Option<String>,
}

#[derive(Clone)]
struct Version {
    id: VersionId,
    created: SystemTime,
    stages: Vec<String>,
    value: SecretBytes,
}

#[derive(Default, Clone)]
struct Record {
    /// Oldest first.
    versions: Vec<Version>,
}

impl Record {
    fn by_stage(&self, label: &str) -> Option<&Version> {
        self.versions
            .iter()
            .find(|v| v.stages.iter().any(|s| s == label))
    }
}

pub struct LocalStore {
    dir: PathBuf,
    /// The directory, held with an exclusive flock while the store is open.
    _lock: fs::File,
    secrets: parking_lot::Mutex<BTreeMap<String, Record>>,
    /// One change at a time, so that files are written in the order of the
    /// changes; reads never wait for it.
    writing: tokio::sync::Mutex<()>,
}

fn file_name(name: &str) -> String {
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.json")
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::new(
        StoreErrorKind::Other,
        format!("{what} {}: {e}", path.display()),
    )
}

impl LocalStore {
    /// Opens (creating if needed) the store in `dir` and loads every secret.
    /// Opens (or creates, mode 0700) the store in `dir`, and takes it for
    /// this process alone: a second daemon on the same store would write
    /// over the first one's files and lose versions.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let other = |m: String| StoreError::new(StoreErrorKind::Other, m);
        match fs::metadata(dir) {
            Ok(m) if !m.is_dir() => {
                return Err(other(format!("{}: not a directory", dir.display())));
            }
            Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                tracing::warn!(store = %dir.display(), mode = format!("{:o}", m.permissions().mode() & 0o777),
                    "the local store can be read by other users; chmod 700 it");
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| io_err("creating", dir, e))?;
            }
            Err(e) => return Err(io_err("opening", dir, e)),
        }
        let lock = fs::File::open(dir).map_err(|e| io_err("opening", dir, e))?;
        // SAFETY: flock takes no pointer; the descriptor is `lock`'s, open
        // for as long as the store keeps the lock.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            // In use: transient, as it ends when the other daemon does
            // (the daemon's exit status then lets systemd retry).
            return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                StoreError::new(
                    StoreErrorKind::Transient,
                    format!(
                        "{} is in use by another secretsfs (one daemon per local store)",
                        dir.display()
                    ),
                )
            } else {
                other(format!("locking {}: {e}", dir.display()))
            });
        }
        let mut secrets = BTreeMap::new();
        let entries = fs::read_dir(dir).map_err(|e| io_err("reading", dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| io_err("reading", dir, e))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let bytes =
                zeroize::Zeroizing::new(fs::read(&path).map_err(|e| io_err("reading", &path, e))?);
            let file: SecretFile = serde_json::from_slice(&bytes).map_err(|e| {
                StoreError::new(
                    StoreErrorKind::Other,
                    format!("{} is not a secret file: line {}", path.display(), e.line()),
                )
            })?;
            secrets.insert(file.name.clone(), Self::decode(file, &path)?);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            _lock: lock,
            secrets: parking_lot::Mutex::new(secrets),
            writing: tokio::sync::Mutex::new(()),
        })
    }

    fn decode(file: SecretFile, path: &Path) -> StoreResult<Record> {
        let mut versions = Vec::new();
        for v in file.versions {
            let value = match (v.string, v.binary_base64) {
                (Some(s), _) => SecretBytes::new(s.into_bytes()),
                (None, Some(b)) => {
                    let b = zeroize::Zeroizing::new(b);
                    SecretBytes::binary(B64.decode(b.as_bytes()).map_err(|_| {
                        StoreError::new(
                            StoreErrorKind::Other,
                            format!("{}: bad base64 in version {}", path.display(), v.id),
                        )
                    })?)
                }
                (None, None) => SecretBytes::new(Vec::new()),
            };
            versions.push(Version {
                id: VersionId::new(v.id),
                created: UNIX_EPOCH + Duration::from_millis(v.created_ms),
                stages: v.stages,
                value,
            });
        }
        Ok(Record { versions })
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, BTreeMap<String, Record>> {
        self.secrets.lock()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn encode(name: &str, record: &Record) -> StoreResult<zeroize::Zeroizing<Vec<u8>>> {
        let file = SecretFile {
            name: name.to_string(),
            versions: record
                .versions
                .iter()
                .map(|v| {
                    let (string, binary_base64) = match v.value.stored_as_text() {
                        Some(s) => (Some(s.to_string()), None),
                        None => (None, Some(B64.encode(v.value.as_bytes()))),
                    };
                    VersionFile {
                        id: v.id.to_string(),
                        created_ms: v
                            .created
                            .duration_since(UNIX_EPOCH)
                            .unwrap_or_default()
                            .as_millis() as u64,
                        stages: v.stages.clone(),
                        string,
                        binary_base64,
                    }
                })
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file)
            .map(zeroize::Zeroizing::new)
            .map_err(|e| {
                StoreError::new(StoreErrorKind::Other, format!("serialising {name}: {e}"))
            });
        // The copies of the values made for serialising are wiped too.
        let mut file = file;
        for v in &mut file.versions {
            zeroize::Zeroize::zeroize(&mut v.string);
            zeroize::Zeroize::zeroize(&mut v.binary_base64);
        }
        bytes
    }

    /// Temp file, fsync, rename, fsync of the directory: a crash leaves the
    /// old file or the new one, never a mix. Blocking: runs off the runtime.
    fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> StoreResult<()> {
        let target = dir.join(file_name(name));
        let tmp = dir.join(format!(".{}.tmp", file_name(name)));
        let write = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &target)?;
            fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| io_err("writing", &target, e))
    }

    /// A new AWSCURRENT version whose id is the token (as in AWS); the same
    /// token with the same value is the same version.
    async fn add_version(
        &self,
        name: &SecretName,
        value: &SecretBytes,
        token: &str,
        create: bool,
    ) -> StoreResult<VersionId> {
        self.add(name, value, token, create, None).await
    }

    /// `add_version` with the labels the new version carries (None:
    /// AWSCURRENT); the labels move to it from the versions that had them.
    async fn add(
        &self,
        name: &SecretName,
        value: &SecretBytes,
        token: &str,
        create: bool,
        stages: Option<&[Label]>,
    ) -> StoreResult<VersionId> {
        let _serial = self.writing.lock().await;
        // Changed on a copy: memory follows only once the file is written.
        let mut record = {
            let secrets = self.lock();
            let existing = secrets.get(name.as_str());
            // A retry with the same token (and value) is the same version,
            // for CreateSecret too.
            if let Some(v) =
                existing.and_then(|r| r.versions.iter().find(|v| v.id.as_str() == token))
            {
                return if v.value == *value {
                    Ok(v.id.clone())
                } else {
                    Err(StoreError::new(
                        StoreErrorKind::ResourceExists,
                        format!("token already used for another value of {name}"),
                    ))
                };
            }
            match (existing, create) {
                (Some(_), true) => {
                    return Err(StoreError::new(
                        StoreErrorKind::ResourceExists,
                        format!("secret {name} already exists"),
                    ));
                }
                (None, false) => return Err(StoreError::not_found(name)),
                (existing, _) => existing.cloned().unwrap_or_default(),
            }
        };
        let mut labels: Vec<String> = match stages {
            None => vec![Stage::Current.label().to_string()],
            Some(l) => l.iter().map(Label::to_string).collect(),
        };
        labels.dedup();
        if labels.iter().any(|l| l == Stage::Current.label()) {
            for v in &mut record.versions {
                v.stages.retain(|s| s != Stage::Previous.label());
                if let Some(s) = v.stages.iter_mut().find(|s| *s == Stage::Current.label()) {
                    *s = Stage::Previous.label().to_string();
                }
            }
        }
        // A label is on one version at a time: it moves to the new one.
        for v in &mut record.versions {
            v.stages.retain(|s| !labels.contains(s));
        }
        record.versions.push(Version {
            id: VersionId::new(token),
            created: SystemTime::now(),
            stages: labels,
            value: value.clone(),
        });
        let unlabelled = record
            .versions
            .iter()
            .filter(|v| v.stages.is_empty())
            .count();
        let mut excess = unlabelled.saturating_sub(MAX_UNLABELLED);
        record.versions.retain(|v| {
            if excess > 0 && v.stages.is_empty() {
                excess -= 1;
                false
            } else {
                true
            }
        });
        self.save(name, record).await?;
        Ok(VersionId::new(token))
    }

    /// Writes a changed record to disk, then to memory (the caller holds
    /// `writing`).
    async fn save(&self, name: &SecretName, record: Record) -> StoreResult<()> {
        let bytes = Self::encode(name.as_str(), &record)?;
        let (dir, file) = (self.dir.clone(), name.as_str().to_string());
        tokio::task::spawn_blocking(move || Self::write_atomically(&dir, &file, &bytes))
            .await
            .map_err(|_| StoreError::new(StoreErrorKind::Other, "store write task failed"))??;
        self.lock().insert(name.as_str().to_string(), record);
        Ok(())
    }

    /// Seeds a few secrets to try the tree with (only into an empty store).
    pub async fn seed_demo(&self) -> StoreResult<()> {
        let demo: [(&str, &[&[u8]]); 4] = [
            (
                "demo/db/password",
                &[b"first-password", b"correct-horse-battery-staple"],
            ),
            ("demo/api-key", &[b"ak_live_0123456789abcdef"]),
            ("demo/app/config.json", &[br#"{"user":"app","port":5432}"#]),
            ("demo/tls/key.der", &[&[0x30, 0x82, 0x00, 0xff, 0x00, 0x01]]),
        ];
        for (name, values) in demo {
            let name = SecretName::new(name);
            for (i, v) in values.iter().enumerate() {
                let token = uuid::Uuid::new_v4().to_string();
                self.add_version(&name, &SecretBytes::new(v.to_vec()), &token, i == 0)
                    .await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl SecretStore for LocalStore {
    async fn list_secrets(&self, prefix: Option<&str>) -> StoreResult<Vec<SecretName>> {
        Ok(self
            .lock()
            .keys()
            .filter(|n| prefix.is_none_or(|p| n.starts_with(p)))
            .map(|n| SecretName::new(n.as_str()))
            .collect())
    }

    async fn get_value(
        &self,
        name: &SecretName,
        selector: &Selector,
    ) -> StoreResult<Option<SecretVersion>> {
        let secrets = self.lock();
        let record = secrets
            .get(name.as_str())
            .ok_or_else(|| StoreError::not_found(name))?;
        let found = match selector {
            Selector::Stage(s) => record.by_stage(s.label()),
            Selector::Id(id) => Some(
                record
                    .versions
                    .iter()
                    .find(|v| v.id == *id)
                    .ok_or_else(|| StoreError::not_found(name))?,
            ),
        };
        Ok(found.map(|v| SecretVersion::new(v.id.clone(), v.value.clone(), v.created)))
    }

    async fn list_version_ids(&self, name: &SecretName) -> StoreResult<Vec<VersionId>> {
        let listed = self.list_versions(name).await?;
        Ok(listed.into_iter().map(|v| v.id).collect())
    }

    async fn list_versions(&self, name: &SecretName) -> StoreResult<Vec<ListedVersion>> {
        let secrets = self.lock();
        let record = secrets
            .get(name.as_str())
            .ok_or_else(|| StoreError::not_found(name))?;
        Ok(record
            .versions
            .iter()
            .map(|v| ListedVersion {
                id: v.id.clone(),
                created: Some(v.created),
                stages: v.stages.clone(),
            })
            .collect())
    }

    async fn describe(&self, name: &SecretName) -> StoreResult<Description> {
        let secrets = self.lock();
        let record = secrets
            .get(name.as_str())
            .ok_or_else(|| StoreError::not_found(name))?;
        Ok(Description {
            versions: record
                .versions
                .iter()
                .map(|v| (v.id.clone(), v.stages.clone()))
                .collect(),
        })
    }

    async fn put_value(
        &self,
        name: &SecretName,
        value: &SecretBytes,
        token: &str,
    ) -> StoreResult<VersionId> {
        self.add_version(name, value, token, false).await
    }

    async fn create_secret(
        &self,
        name: &SecretName,
        value: &SecretBytes,
        token: &str,
    ) -> StoreResult<VersionId> {
        self.add_version(name, value, token, true).await
    }

    async fn put_value_staged(
        &self,
        name: &SecretName,
        value: &SecretBytes,
        token: &str,
        stages: &[Label],
    ) -> StoreResult<VersionId> {
        if stages.is_empty() {
            return Err(StoreError::new(
                StoreErrorKind::InvalidParameter,
                "VersionStages needs at least one label",
            ));
        }
        self.add(name, value, token, false, Some(stages)).await
    }

    async fn update_stage(
        &self,
        name: &SecretName,
        label: &Label,
        move_to: Option<&VersionId>,
        remove_from: Option<&VersionId>,
    ) -> StoreResult<()> {
        let _serial = self.writing.lock().await;
        let mut record = self
            .lock()
            .get(name.as_str())
            .cloned()
            .ok_or_else(|| StoreError::not_found(name))?;
        move_label(&mut record, label, move_to, remove_from)?;
        self.save(name, record).await
    }
}

/// UpdateSecretVersionStage's rules: the label leaves `remove_from`, which
/// must be the version carrying it when one does (unless that is
/// `move_to`), and goes to `move_to`; AWSCURRENT cannot just be removed,
/// and moving it puts AWSPREVIOUS on the version it left.
fn move_label(
    record: &mut Record,
    label: &Label,
    move_to: Option<&VersionId>,
    remove_from: Option<&VersionId>,
) -> StoreResult<()> {
    let invalid = |m: String| StoreError::new(StoreErrorKind::InvalidParameter, m);
    let index = |id: &VersionId| {
        record
            .versions
            .iter()
            .position(|v| v.id == *id)
            .ok_or_else(|| invalid(format!("no version {id}")))
    };
    let to = move_to.map(index).transpose()?;
    let from = remove_from.map(index).transpose()?;
    let holder = record
        .versions
        .iter()
        .position(|v| v.stages.iter().any(|s| s == label.as_str()));
    if to.is_none() && from.is_none() {
        return Err(invalid(
            "MoveToVersionId or RemoveFromVersionId is needed".into(),
        ));
    }
    if let Some(f) = from
        && holder != Some(f)
    {
        return Err(invalid(format!(
            "version {} does not carry {label}",
            record.versions[f].id
        )));
    }
    if let Some(h) = holder
        && to != Some(h)
        && from != Some(h)
    {
        return Err(invalid(format!(
            "{label} is attached to version {}: RemoveFromVersionId must name it",
            record.versions[h].id
        )));
    }
    let current = label.as_str() == Stage::Current.label();
    if current && to.is_none() {
        return Err(invalid("AWSCURRENT can only be moved, not removed".into()));
    }
    if holder == to {
        return Ok(());
    }
    if let Some(h) = holder {
        record.versions[h].stages.retain(|s| s != label.as_str());
    }
    if let Some(t) = to {
        record.versions[t].stages.push(label.to_string());
    }
    if current && let (Some(h), Some(_)) = (holder, to) {
        for v in &mut record.versions {
            v.stages.retain(|s| s != Stage::Previous.label());
        }
        record.versions[h]
            .stages
            .push(Stage::Previous.label().to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
