//! GCS for a Batch job: the staging prefix (a [`brizo_backend_remote::ObjectStaging`] on
//! object_store's `GoogleCloudStorage`) and V4 signed GETs of the publisher's own objects that
//! jobs fetch themselves. One credential chain for everything (object_store's: a service
//! account key, application default credentials, or the metadata server); the Batch client
//! borrows its token provider.

use std::time::Duration;

use brizo_backend_core::BackendError;
use brizo_backend_remote::ObjectStaging;
use brizo_backend_remote::staging::presign_input;
use object_store::gcp::{GcpCredentialProvider, GoogleCloudStorage, GoogleCloudStorageBuilder};

/// GCS as the backend reaches it.
pub struct Gcs {
    /// Override of the GCS endpoint (fake-gcs-server); `None` for Google.
    endpoint: Option<String>,
    /// The staging bucket: jobs never fetch from it (it holds other jobs' URLs).
    pub staging_bucket: String,
    ttl: Duration,
    credentials: GcpCredentialProvider,
}

/// `gs://bucket[/prefix]` as its two parts.
pub fn split(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("gs://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then_some((bucket, prefix))
}

impl Gcs {
    /// The staging prefix `url` scoped to `scope`, and GCS for fetches. V4 signed URLs last at
    /// most 7 days: `ttl` is held to that.
    pub fn connect(
        url: &str,
        endpoint: Option<&str>,
        scope: &str,
        ttl: Duration,
    ) -> Result<(Gcs, ObjectStaging), BackendError> {
        let (bucket, prefix) = split(url).ok_or_else(|| {
            BackendError::invalid_spec(format!("staging {url:?} is not a gs://bucket[/prefix] URL"))
        })?;
        let ttl = ttl.min(Duration::from_secs(7 * 24 * 3600));
        let store = builder(bucket, endpoint)
            .build()
            .map_err(|e| BackendError::invalid_spec(format!("staging {url}")).because(e))?;
        let gcs = Gcs {
            endpoint: endpoint.map(str::to_string),
            staging_bucket: bucket.to_string(),
            ttl,
            credentials: store.credentials().clone(),
        };
        let store = std::sync::Arc::new(store);
        let staging =
            ObjectStaging::new(store.clone(), store, url, prefix, scope, ttl, "GCS staging");
        Ok((gcs, staging))
    }

    /// The token provider of the chain, for the Batch and Logging requests.
    pub fn credentials(&self) -> GcpCredentialProvider {
        self.credentials.clone()
    }

    fn bucket_store(&self, bucket: &str) -> object_store::Result<GoogleCloudStorage> {
        builder(bucket, self.endpoint.as_deref()).build()
    }

    /// A V4 signed GET for an object the credentials reach (`gs://bucket/object`), and its
    /// size. The object is looked up first, so a missing, unreadable or oversized one is
    /// reported here, as an input error.
    pub async fn presign_object(
        &self,
        url: &str,
        max_bytes: u64,
    ) -> Result<(String, u64), BackendError> {
        let (bucket, key) = split(url).filter(|(_, k)| !k.is_empty()).ok_or_else(|| {
            BackendError::invalid_spec(format!("{url} is not gs://bucket/object"))
        })?;
        let store = self
            .bucket_store(bucket)
            .map_err(|e| BackendError::invalid_spec(url.to_string()).because(e))?;
        presign_input(&store, key, url, max_bytes, self.ttl, "GCS").await
    }
}

/// The standard chain from the environment (`GOOGLE_SERVICE_ACCOUNT`,
/// `GOOGLE_SERVICE_ACCOUNT_KEY`, `GOOGLE_APPLICATION_CREDENTIALS`, the gcloud ADC file, then
/// the metadata server), for one bucket.
fn builder(bucket: &str, endpoint: Option<&str>) -> GoogleCloudStorageBuilder {
    let mut builder = GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket);
    if let Some(endpoint) = endpoint {
        builder = builder.with_base_url(endpoint.trim_end_matches('/'));
    }
    builder
}
