//! What DescribeSecret says of each secret: version ids and staging labels,
//! no value, no KMS decrypt, and four times GetSecretValue's quota. It
//! answers "is this a secret", "is there a `previous`" and "did the version
//! behind a label move" (revalidation). Cached with the TTL. When a secret's
//! DescribeSecret is denied, callers fall back to GetSecretValue (logged
//! once), and the denial is remembered so that it is not asked every time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::cache::{Cache, Limits};
use crate::stats::Stats;
use crate::store::{Description, SecretName, SecretStore, StoreErrorKind, StoreResult};

/// How long a denied DescribeSecret is left alone for a secret.
pub const DESCRIBE_DENIED_TTL: Duration = Duration::from_secs(600);

pub struct Descriptions {
    store: Arc<dyn SecretStore>,
    cache: Arc<Cache<SecretName, Arc<Description>>>,
    ttl: Duration,
    warned: AtomicBool,
}

fn weigh(d: &Arc<Description>) -> usize {
    d.versions
        .iter()
        .map(|(id, labels)| id.as_str().len() + labels.iter().map(|l| l.len() + 24).sum::<usize>())
        .sum()
}

impl Descriptions {
    pub fn new(
        store: Arc<dyn SecretStore>,
        limits: Limits<Arc<Description>>,
        ttl: Duration,
        stats: Arc<Stats>,
    ) -> Arc<Self> {
        let limits = Limits {
            weigh,
            denied_ttl: DESCRIBE_DENIED_TTL,
            ..limits
        };
        Arc::new(Self {
            store,
            cache: Cache::new(limits, stats),
            ttl,
            warned: AtomicBool::new(false),
        })
    }

    fn fetch(
        &self,
    ) -> impl FnOnce(SecretName) -> futures::future::BoxFuture<'static, StoreResult<Arc<Description>>>
    {
        let store = self.store.clone();
        move |n: SecretName| Box::pin(async move { Ok(Arc::new(store.describe(&n).await?)) })
    }

    /// The description, from the cache while fresh. None: DescribeSecret
    /// is denied for this secret (use GetSecretValue instead).
    pub async fn get(&self, name: &SecretName) -> StoreResult<Option<Arc<Description>>> {
        let fetch = self.fetch();
        let n = name.clone();
        let got = self
            .cache
            .get(name, Some(self.ttl), move || fetch(n))
            .await
            .map(|c| c.value);
        self.unless_denied(name, got)
    }

    /// A description asked now (for revalidation: never an older copy),
    /// which then also serves `get`. None: denied, as for `get`.
    pub async fn now(&self, name: &SecretName) -> StoreResult<Option<Arc<Description>>> {
        if self
            .cache
            .failing(name)
            .is_some_and(|e| e.kind == StoreErrorKind::AccessDenied)
        {
            return Ok(None);
        }
        let fetch = self.fetch();
        let n = name.clone();
        let got = self
            .cache
            .refetch(name, Some(self.ttl), move |_| fetch(n))
            .await
            .map(|c| c.value);
        self.unless_denied(name, got)
    }

    fn unless_denied(
        &self,
        name: &SecretName,
        got: StoreResult<Arc<Description>>,
    ) -> StoreResult<Option<Arc<Description>>> {
        match got {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind == StoreErrorKind::AccessDenied => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(secret = %name,
                        "the metadata call is denied (secretsmanager:DescribeSecret; ssm:DescribeParameters and ssm:GetParameterHistory for Parameter Store); falling back to reading the value (a KMS decrypt per TTL and per listing); grant it to avoid that");
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The secret changed through this mount: the next use asks again.
    pub fn forget(&self, name: &SecretName) {
        self.cache.remove(name);
    }

    /// Forgets every secret `pred` holds for (a refresh of a prefix).
    pub fn forget_where(&self, pred: impl Fn(&SecretName) -> bool) {
        self.cache.remove_where(pred);
    }

    pub fn bytes(&self) -> usize {
        self.cache.usage().1
    }
}
