//! The S3 prefix a backend keeps each job's files under, with the presigned URLs the runner
//! uses. One credential chain for everything: the AWS SDK's (environment, profile, instance
//! role), handed to object_store so that S3 and Batch never disagree on who we are.

use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::provider::ProvideCredentials;
use brizo_backend_core::BackendError;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsCredential};
use object_store::path::Path as StorePath;
use object_store::signer::{Method, Signer};
use object_store::{CredentialProvider, ObjectStore, ObjectStoreExt, PutPayload};

/// Bridges the SDK's credential chain into object_store.
#[derive(Debug)]
struct SdkCredentials(aws_credential_types::provider::SharedCredentialsProvider);

#[async_trait::async_trait]
impl CredentialProvider for SdkCredentials {
    type Credential = AwsCredential;
    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let c = self.0.provide_credentials().await.map_err(|e| object_store::Error::Generic { store: "S3", source: Box::new(e) })?;
        Ok(Arc::new(AwsCredential {
            key_id: c.access_key_id().to_string(),
            secret_key: c.secret_access_key().to_string(),
            token: c.session_token().map(str::to_string),
        }))
    }
}

pub struct Staging {
    store: Arc<AmazonS3>,
    bucket: String,
    region: String,
    endpoint: Option<String>,
    credentials: Arc<SdkCredentials>,
    /// `prefix/instance/backend`: everything of this backend instance lies under it.
    root: String,
    ttl: Duration,
}

impl Staging {
    /// `url` is `s3://bucket[/prefix]`.
    pub fn new(url: &str, sdk: &aws_config::SdkConfig, endpoint: Option<&str>, scope: &str, ttl: Duration) -> Result<Self, BackendError> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| BackendError::InvalidSpec(format!("staging {url:?} is not an s3:// URL")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let credentials = sdk
            .credentials_provider()
            .ok_or_else(|| BackendError::Unavailable("no AWS credentials found (environment, profile or instance role)".into()))?;
        let region = sdk.region().map(|r| r.to_string()).unwrap_or_else(|| "us-east-1".into());
        let credentials = Arc::new(SdkCredentials(credentials));
        let store = bucket_store(bucket, &region, endpoint, credentials.clone()).map_err(|e| BackendError::InvalidSpec(format!("staging {url}: {e}")))?;
        let root = [prefix.trim_matches('/'), scope].iter().filter(|s| !s.is_empty()).cloned().collect::<Vec<_>>().join("/");
        Ok(Self { store: Arc::new(store), bucket: bucket.to_string(), region, endpoint: endpoint.map(str::to_string), credentials, root, ttl })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// A presigned GET for an object anywhere the credentials reach (`s3://bucket/key`), and
    /// its size. The object is looked up first, so a missing, unreadable or oversized one is
    /// reported here.
    pub async fn presign_object(&self, url: &str, max_bytes: u64) -> Result<(String, u64), BackendError> {
        let (bucket, key) = url
            .strip_prefix("s3://")
            .and_then(|rest| rest.split_once('/'))
            .filter(|(b, k)| !b.is_empty() && !k.is_empty())
            .ok_or_else(|| BackendError::InvalidSpec(format!("{url} is not s3://bucket/key")))?;
        let store = bucket_store(bucket, &self.region, self.endpoint.as_deref(), self.credentials.clone())
            .map_err(|e| BackendError::InvalidSpec(format!("{url}: {e}")))?;
        let key = StorePath::from(key);
        let meta = match store.head(&key).await {
            Ok(meta) => meta,
            Err(object_store::Error::NotFound { .. }) => return Err(BackendError::Input(format!("input {url} does not exist"))),
            Err(e @ (object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. })) => {
                return Err(BackendError::Input(format!("input {url} cannot be read with the backend's credentials: {e}")));
            }
            Err(e) => return Err(store_error(e)),
        };
        if meta.size > max_bytes {
            return Err(BackendError::Input(format!("input {url} is {} bytes, over the cap of {max_bytes} (inputs.max_input_mb)", meta.size)));
        }
        let signed = store.signed_url(Method::GET, &key, self.ttl).await.map_err(store_error)?;
        Ok((signed.to_string(), meta.size))
    }

    pub fn key(&self, job_id: &str, rel: &str) -> StorePath {
        StorePath::from(format!("{}/{job_id}/{rel}", self.root))
    }

    pub async fn put(&self, key: &StorePath, bytes: Vec<u8>) -> Result<(), BackendError> {
        self.store.put(key, PutPayload::from(bytes)).await.map(|_| ()).map_err(store_error)
    }

    /// Streams a file up (multipart when large), never whole in memory.
    pub async fn put_file(&self, key: &StorePath, file: &std::path::Path) -> Result<u64, BackendError> {
        let io = |e: std::io::Error| BackendError::InvalidSpec(format!("{}: {e}", file.display()));
        let mut source = tokio::fs::File::open(file).await.map_err(io)?;
        let store: Arc<dyn ObjectStore> = self.store.clone();
        let mut sink = object_store::buffered::BufWriter::new(store, key.clone());
        let size = tokio::io::copy(&mut source, &mut sink).await.map_err(|e| BackendError::Unavailable(format!("S3 staging: {e}")))?;
        tokio::io::AsyncWriteExt::shutdown(&mut sink).await.map_err(|e| BackendError::Unavailable(format!("S3 staging: {e}")))?;
        Ok(size)
    }

    /// The object, or `None` when it does not exist.
    pub async fn get(&self, key: &StorePath) -> Result<Option<Bytes>, BackendError> {
        match self.store.get(key).await {
            Ok(result) => result.bytes().await.map(Some).map_err(store_error),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_error(e)),
        }
    }

    /// A job's JSON record (`meta.json`, `result.json`), or `None` when it does not exist.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, job_id: &str, name: &str) -> Result<Option<T>, BackendError> {
        match self.get(&self.key(job_id, name)).await? {
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| BackendError::Other(format!("{name} of job {job_id}: {e}"))),
            None => Ok(None),
        }
    }

    /// Streams the object into `file` (no copy in memory). `Ok(None)`: no such object;
    /// `Ok(Some(size))` without writing when it is larger than `max`.
    pub async fn download(&self, key: &StorePath, file: &std::path::Path, max: u64) -> Result<Option<u64>, BackendError> {
        let result = match self.store.get(key).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(store_error(e)),
        };
        let size = result.meta.size;
        if size > max {
            return Ok(Some(size));
        }
        let io = |e: std::io::Error| BackendError::Other(format!("{}: {e}", file.display()));
        let mut out = tokio::fs::File::create(file).await.map_err(io)?;
        let mut stream = result.into_stream();
        while let Some(chunk) = stream.next().await {
            tokio::io::AsyncWriteExt::write_all(&mut out, &chunk.map_err(store_error)?).await.map_err(io)?;
        }
        tokio::io::AsyncWriteExt::flush(&mut out).await.map_err(io)?;
        Ok(Some(size))
    }

    pub async fn presign(&self, method: Method, key: &StorePath) -> Result<String, BackendError> {
        self.store.signed_url(method, key, self.ttl).await.map(|u| u.to_string()).map_err(store_error)
    }

    pub async fn delete_job(&self, job_id: &str) -> Result<(), BackendError> {
        let prefix = StorePath::from(format!("{}/{job_id}", self.root));
        let keys = self.store.list(Some(&prefix)).map_ok(|m| m.location).boxed();
        self.store.delete_stream(keys).try_collect::<Vec<_>>().await.map(|_| ()).map_err(store_error)
    }

    /// Job ids with anything staged.
    pub async fn jobs(&self) -> Result<Vec<String>, BackendError> {
        let listing = self.store.list_with_delimiter(Some(&StorePath::from(self.root.as_str()))).await.map_err(store_error)?;
        Ok(listing.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect())
    }
}

fn bucket_store(bucket: &str, region: &str, endpoint: Option<&str>, credentials: Arc<SdkCredentials>) -> object_store::Result<AmazonS3> {
    let mut builder = AmazonS3Builder::new().with_bucket_name(bucket).with_region(region).with_credentials(credentials);
    if let Some(endpoint) = endpoint {
        // Emulators (moto) answer on one host: path-style addressing, maybe plain http.
        builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://")).with_virtual_hosted_style_request(false);
    }
    builder.build()
}

fn store_error(e: object_store::Error) -> BackendError {
    BackendError::Unavailable(format!("S3 staging: {e}"))
}
