//! Azure Blob for a Batch task: the staging container (a [`brizo_backend_remote::ObjectStaging`]
//! on object_store's `MicrosoftAzure`) and SAS URLs of the publisher's own blobs that tasks
//! fetch themselves. Credentials are the standard Azure chain as object_store reads it
//! (`MicrosoftAzureBuilder::from_env`: an account key, a service principal, workload or managed
//! identity, the Azure CLI). Every SAS object_store makes names one blob, one permission (read
//! or write) and an expiry: a task can reach exactly its own objects, for a while.

use std::sync::Arc;
use std::time::Duration;

use brizo_backend_core::BackendError;
use brizo_backend_remote::ObjectStaging;
use brizo_backend_remote::staging::presign_input;
use object_store::azure::{MicrosoftAzure, MicrosoftAzureBuilder};

/// Blob storage of one account, as the backend reaches it.
pub struct Blob {
    pub account: String,
    /// The account's blob endpoint when it is not `https://<account>.blob.core.windows.net`
    /// (Azurite: `http://127.0.0.1:10000/devstoreaccount1`).
    endpoint: Option<String>,
    /// The staging container: tasks never fetch from it (it holds other jobs' URLs).
    pub staging_container: String,
    ttl: Duration,
}

impl Blob {
    /// The staging container's `prefix` scoped to `scope`, and Blob for fetches.
    pub fn connect(
        account: &str,
        endpoint: Option<&str>,
        container: &str,
        prefix: &str,
        scope: &str,
        ttl: Duration,
    ) -> Result<(Blob, ObjectStaging), BackendError> {
        let blob = Blob {
            account: account.to_string(),
            endpoint: endpoint.map(|e| e.trim_end_matches('/').to_string()),
            staging_container: container.to_string(),
            ttl,
        };
        let store = Arc::new(blob.container_store(container).map_err(|e| {
            BackendError::invalid_spec(format!("staging container {container}")).because(e)
        })?);
        let location = format!("az://{account}/{container}/{}", prefix.trim_matches('/'));
        let staging = ObjectStaging::new(
            store.clone(),
            store,
            &location,
            prefix,
            scope,
            ttl,
            "Azure Blob staging",
        );
        Ok((blob, staging))
    }

    fn container_store(&self, container: &str) -> object_store::Result<MicrosoftAzure> {
        let mut builder = MicrosoftAzureBuilder::from_env()
            .with_account(&self.account)
            .with_container_name(container);
        if let Some(endpoint) = &self.endpoint {
            builder = builder
                .with_endpoint(endpoint.clone())
                .with_allow_http(endpoint.starts_with("http://"));
        }
        builder.build()
    }

    /// A read SAS for a blob of this account (`az://<account>/<container>/<blob>`), and its
    /// size. The blob is looked up first, so a missing, unreadable or oversized one is
    /// reported here, as an input error.
    pub async fn presign_blob(
        &self,
        url: &str,
        max_bytes: u64,
    ) -> Result<(String, u64), BackendError> {
        let (container, blob) = url
            .strip_prefix(&format!("az://{}/", self.account))
            .and_then(|rest| rest.split_once('/'))
            .filter(|(c, b)| !c.is_empty() && !b.is_empty())
            .ok_or_else(|| {
                BackendError::invalid_spec(format!(
                    "{url} is not az://{}/<container>/<blob>",
                    self.account
                ))
            })?;
        let store = self
            .container_store(container)
            .map_err(|e| BackendError::invalid_spec(url.to_string()).because(e))?;
        presign_input(&store, blob, url, max_bytes, self.ttl, "Azure Blob").await
    }
}
