//! The service's health, as probes, the dashboard and the request path read it: the job store
//! and every backend, checked in the background every `health_interval_ms` and answered from
//! memory. Asking the engine on every `/health` made the probe the slowest path of the service
//! and a flood of probes a load on the engine; a check that hangs is cut at its own deadline,
//! so the answer is never older than the interval plus that deadline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::Engine;

/// How long one check may take before its component counts as not answering.
const CHECK_DEADLINE: Duration = Duration::from_secs(10);

/// One round of checks: `Ok` or what went wrong, per component.
#[derive(Debug, Clone)]
pub struct Health {
    pub store: Result<(), String>,
    /// By backend name.
    pub backends: BTreeMap<String, Result<(), String>>,
    pub checked: Instant,
}

impl Health {
    pub fn all_ok(&self) -> bool {
        self.store.is_ok() && self.backends.values().all(Result::is_ok)
    }

    pub fn backend(&self, name: &str) -> Result<(), String> {
        self.backends
            .get(name)
            .cloned()
            .unwrap_or_else(|| Err(format!("backend {name} is not configured")))
    }
}

async fn within<E: std::fmt::Display>(
    what: &str,
    check: impl std::future::Future<Output = Result<(), E>>,
) -> Result<(), String> {
    match tokio::time::timeout(CHECK_DEADLINE, check).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "{what} did not answer within {} s",
            CHECK_DEADLINE.as_secs()
        )),
    }
}

impl Engine {
    /// The latest health; waits for the first round when the service has just started, and
    /// checks on the spot when nothing checks in the background (an engine that is not
    /// running its loop: the CLI's, or one that shut down).
    pub async fn health(&self) -> Arc<Health> {
        let mut seen = self.health.subscribe();
        if self.health_watched.load(Ordering::Acquire)
            && let Ok(h) = seen.wait_for(Option::is_some).await
            && let Some(h) = h.as_ref()
        {
            return h.clone();
        }
        Arc::new(self.check_health().await)
    }

    /// Checks the store and every backend at once.
    async fn check_health(&self) -> Health {
        let store = within("the job store", self.store.ping());
        let backends =
            futures::future::join_all(self.backends.iter().map(|(name, backend)| async move {
                (
                    name.clone(),
                    within(&format!("backend {name}"), backend.ping()).await,
                )
            }));
        let (store, backends) = tokio::join!(store, backends);
        Health {
            store,
            backends: backends.into_iter().collect(),
            checked: Instant::now(),
        }
    }

    /// Keeps [`Engine::health`] current until `shutdown`.
    pub(super) async fn watch_health(self: Arc<Self>, shutdown: CancellationToken) {
        let every = Duration::from_millis(self.config.health_interval_ms.max(10));
        self.health_watched.store(true, Ordering::Release);
        loop {
            let health = self.check_health().await;
            self.health.send_replace(Some(Arc::new(health)));
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
        self.health_watched.store(false, Ordering::Release);
    }
}
