//! A property test of the filesystem layer against a model of Secrets
//! Manager: random sequences of opens, reads, writes, closes, kills of
//! writers, puts made elsewhere and time passing. After every step, a fresh
//! open reads the model's AWSCURRENT whenever the mount must know it (it
//! wrote it, or the TTL passed since it changed elsewhere), a handle keeps
//! reading the version it opened, and every close that reported success is
//! AWSCURRENT in the store.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use proptest::prelude::*;
use secretsfs::fs::{Caller, Closer, Fs, FsConfig, Invalidate};
use secretsfs::inode::{Ino, ROOT};
use secretsfs::stats::Stats;
use secretsfs::store::{
    Description, SecretBytes, SecretName, SecretStore, SecretVersion, Selector, Stage, StoreError,
    StoreErrorKind, StoreResult, VersionId,
};

const TTL: Duration = Duration::from_secs(60);
const ME: Caller = Caller { pid: 1, uid: 0 };

/// One secret, "app", with Secrets Manager's label moves and token rule.
#[derive(Default)]
struct Model {
    /// (id, token, value), oldest first.
    versions: Vec<(String, String, Vec<u8>)>,
    current: usize,
    previous: Option<usize>,
}

#[derive(Default)]
struct ModelStore(Mutex<Model>);

impl ModelStore {
    fn put(&self, value: &[u8], token: &str) -> StoreResult<VersionId> {
        let mut m = self.0.lock().unwrap();
        if let Some((id, _, v)) = m.versions.iter().find(|(_, t, _)| t == token) {
            return if v == value {
                Ok(VersionId::new(id.as_str()))
            } else {
                Err(StoreError::new(
                    StoreErrorKind::ResourceExists,
                    "token reused",
                ))
            };
        }
        let id = format!("v{}", m.versions.len());
        m.versions.push((id.clone(), token.into(), value.to_vec()));
        m.previous = Some(m.current);
        m.current = m.versions.len() - 1;
        Ok(VersionId::new(id))
    }

    fn current(&self) -> Vec<u8> {
        let m = self.0.lock().unwrap();
        m.versions[m.current].2.clone()
    }

    fn count(&self) -> usize {
        self.0.lock().unwrap().versions.len()
    }
}

fn version(id: &str, value: &[u8]) -> SecretVersion {
    SecretVersion::new(
        VersionId::new(id),
        SecretBytes::new(value.to_vec()),
        SystemTime::UNIX_EPOCH,
    )
}

#[async_trait]
impl SecretStore for ModelStore {
    async fn list_secrets(&self, _prefix: Option<&str>) -> StoreResult<Vec<SecretName>> {
        Ok(vec![SecretName::new("app")])
    }
    async fn get_value(
        &self,
        _name: &SecretName,
        sel: &Selector,
    ) -> StoreResult<Option<SecretVersion>> {
        let m = self.0.lock().unwrap();
        let i = match sel {
            Selector::Stage(Stage::Current) => Some(m.current),
            Selector::Stage(Stage::Previous) => m.previous,
            Selector::Id(id) => m.versions.iter().position(|v| v.0 == id.as_str()),
        };
        Ok(i.map(|i| version(&m.versions[i].0, &m.versions[i].2)))
    }
    async fn list_version_ids(&self, _name: &SecretName) -> StoreResult<Vec<VersionId>> {
        let m = self.0.lock().unwrap();
        Ok(m.versions
            .iter()
            .map(|v| VersionId::new(v.0.as_str()))
            .collect())
    }
    async fn describe(&self, _name: &SecretName) -> StoreResult<Description> {
        let m = self.0.lock().unwrap();
        let label = |i: usize| {
            let mut l = Vec::new();
            if i == m.current {
                l.push("AWSCURRENT".to_string());
            }
            if Some(i) == m.previous {
                l.push("AWSPREVIOUS".to_string());
            }
            l
        };
        Ok(Description {
            versions: (0..m.versions.len())
                .map(|i| (VersionId::new(m.versions[i].0.as_str()), label(i)))
                .collect(),
        })
    }
    async fn put_value(
        &self,
        _name: &SecretName,
        value: &SecretBytes,
        token: &str,
    ) -> StoreResult<VersionId> {
        self.put(value.as_bytes(), token)
    }
    async fn create_secret(
        &self,
        _name: &SecretName,
        _value: &SecretBytes,
        _token: &str,
    ) -> StoreResult<VersionId> {
        Err(StoreError::new(StoreErrorKind::ResourceExists, "exists"))
    }
}

struct NoKernel;
impl Invalidate for NoKernel {
    fn inval_inode(&self, _ino: Ino) {}
}

#[derive(Clone, Debug)]
enum Op {
    OpenRead(usize),
    OpenWrite {
        slot: usize,
        trunc: bool,
        append: bool,
    },
    Write {
        slot: usize,
        offset: u8,
        data: Vec<u8>,
    },
    Read(usize),
    Close(usize),
    Kill(usize),
    ExternalPut(Vec<u8>),
    Advance,
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(b"ab\n".to_vec()), 0..6)
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..3usize;
    prop_oneof![
        slot.clone().prop_map(Op::OpenRead),
        (slot.clone(), any::<bool>(), any::<bool>()).prop_map(|(slot, trunc, append)| {
            Op::OpenWrite {
                slot,
                trunc,
                append,
            }
        }),
        (slot.clone(), 0..6u8, value()).prop_map(|(slot, offset, data)| Op::Write {
            slot,
            offset,
            data
        }),
        slot.clone().prop_map(Op::Read),
        slot.clone().prop_map(Op::Close),
        slot.prop_map(Op::Kill),
        value()
            .prop_filter("a value", |v| !v.is_empty())
            .prop_map(Op::ExternalPut),
        Just(Op::Advance),
    ]
}

/// What the test expects of an open slot.
enum Slot {
    Read {
        fh: u64,
        saw: Vec<u8>,
    },
    Write {
        fh: u64,
        buf: Vec<u8>,
        dirty: bool,
        append: bool,
    },
}

struct World {
    fs: Arc<Fs>,
    store: Arc<ModelStore>,
    ino: Ino,
    slots: [Option<Slot>; 3],
    /// The mount must know AWSCURRENT: it wrote it, or the TTL passed.
    knows: bool,
}

impl World {
    async fn fresh_read(&self) -> Vec<u8> {
        let o = self.fs.open(self.ino, libc::O_RDONLY, 1).await.unwrap();
        let data = self
            .fs
            .read(self.ino, o.fh, 0, 1 << 20, true)
            .await
            .unwrap();
        self.fs.release(o.fh).await;
        data
    }

    async fn release(&mut self, slot: usize) {
        if let Some(Slot::Read { fh, .. } | Slot::Write { fh, .. }) = self.slots[slot].take() {
            self.fs.release(fh).await;
        }
    }

    async fn step(&mut self, op: Op) {
        match op {
            Op::OpenRead(s) => {
                self.release(s).await;
                let o = self.fs.open(self.ino, libc::O_RDONLY, 1).await.unwrap();
                let saw = self
                    .fs
                    .read(self.ino, o.fh, 0, 1 << 20, true)
                    .await
                    .unwrap();
                self.slots[s] = Some(Slot::Read { fh: o.fh, saw });
            }
            Op::OpenWrite {
                slot,
                trunc,
                append,
            } => {
                self.release(slot).await;
                let mut flags = libc::O_WRONLY;
                if trunc {
                    flags |= libc::O_TRUNC;
                }
                if append {
                    flags |= libc::O_APPEND;
                }
                let o = self.fs.open(self.ino, flags, 1).await.unwrap();
                // Without O_TRUNC: AWSCURRENT at open time, never a cached copy.
                let buf = if trunc { vec![] } else { self.store.current() };
                self.slots[slot] = Some(Slot::Write {
                    fh: o.fh,
                    buf,
                    dirty: false,
                    append,
                });
            }
            Op::Write { slot, offset, data } => {
                if let Some(Slot::Write {
                    fh,
                    buf,
                    dirty,
                    append,
                }) = &mut self.slots[slot]
                {
                    self.fs.write(*fh, offset.into(), &data, 1).await.unwrap();
                    let at = if *append { buf.len() } else { offset as usize };
                    if buf.len() < at + data.len() {
                        buf.resize(at + data.len(), 0);
                    }
                    buf[at..at + data.len()].copy_from_slice(&data);
                    *dirty = true;
                }
            }
            Op::Read(s) => match &self.slots[s] {
                Some(Slot::Read { fh, saw }) => {
                    let again = self.fs.read(self.ino, *fh, 0, 1 << 20, true).await.unwrap();
                    assert_eq!(&again, saw, "a handle keeps its version");
                }
                Some(Slot::Write { fh, buf, .. }) => {
                    let got = self.fs.read(self.ino, *fh, 0, 1 << 20, true).await.unwrap();
                    assert_eq!(&got, buf, "a write handle reads its own buffer");
                }
                None => {}
            },
            Op::Close(s) => {
                if let Some(Slot::Write { fh, buf, dirty, .. }) = &self.slots[s] {
                    let before = (self.store.current(), self.store.count());
                    let r = self.fs.flush(*fh, Closer::by(1)).await;
                    match (dirty, buf.is_empty()) {
                        (false, _) => {
                            assert!(r.is_ok(), "an untouched close is no error");
                            assert_eq!((self.store.current(), self.store.count()), before);
                        }
                        (true, true) => {
                            assert_eq!(r.unwrap_err().errno(), libc::EINVAL);
                            assert_eq!((self.store.current(), self.store.count()), before);
                        }
                        (true, false) => {
                            r.unwrap();
                            assert_eq!(&self.store.current(), buf, "a successful close is stored");
                            let made = usize::from(*buf != before.0);
                            assert_eq!(
                                self.store.count(),
                                before.1 + made,
                                "unchanged: no version"
                            );
                            self.knows = true;
                        }
                    }
                }
                self.release(s).await;
            }
            Op::Kill(s) => {
                if let Some(Slot::Write { fh, .. }) = &self.slots[s] {
                    let before = self.store.count();
                    let killed = Closer {
                        tgid: 1,
                        killed: true,
                    };
                    self.fs.flush(*fh, killed).await.unwrap();
                    self.release(s).await;
                    assert_eq!(
                        self.store.count(),
                        before,
                        "a killed writer commits nothing"
                    );
                } else {
                    self.release(s).await;
                }
            }
            Op::ExternalPut(v) => {
                self.store
                    .put(&v, &uuid::Uuid::new_v4().to_string())
                    .unwrap();
                self.knows = false;
            }
            Op::Advance => {
                // Past the TTL whatever its jitter (+/-10%).
                tokio::time::advance(TTL.mul_f64(1.1) + Duration::from_secs(1)).await;
                self.knows = true;
            }
        }
        if self.knows {
            assert_eq!(
                self.fresh_read().await,
                self.store.current(),
                "a fresh open reads AWSCURRENT"
            );
        }
    }
}

async fn run(ops: Vec<Op>) {
    let store = Arc::new(ModelStore::default());
    store.put(b"first", "t0").unwrap();
    let fs = Fs::new(
        FsConfig::new(TTL),
        store.clone() as Arc<dyn SecretStore>,
        Arc::new(Stats::default()),
        Arc::new(NoKernel),
    );
    let dir = fs.lookup(ROOT, "app", ME).await.unwrap().attr.ino;
    let ino = fs.lookup(dir, "current", ME).await.unwrap().attr.ino;
    let mut w = World {
        fs,
        store,
        ino,
        slots: [None, None, None],
        knows: true,
    };
    for op in ops {
        w.step(op).await;
    }
    for s in 0..3 {
        w.release(s).await;
    }
    assert_eq!(w.fs.sizes().handles, 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn fresh_opens_read_awscurrent_and_no_successful_write_is_lost(
        ops in prop::collection::vec(op(), 1..40)
    ) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(run(ops));
    }
}
