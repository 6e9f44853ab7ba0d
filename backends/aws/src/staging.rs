//! S3 for a Batch job: the staging prefix (a [`brizo_backend_remote::ObjectStaging`] on
//! `AmazonS3`) and presigned GETs of the publisher's own objects that jobs fetch themselves.
//! One credential chain for everything: the AWS SDK's (environment, profile, instance role),
//! handed to object_store so that S3 and Batch never disagree on who we are.

use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::provider::ProvideCredentials;
use brizo_backend_core::BackendError;
use brizo_backend_remote::ObjectStaging;
use brizo_backend_remote::staging::presign_input;
use object_store::CredentialProvider;
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsCredential};

/// Bridges the SDK's credential chain into object_store.
#[derive(Debug)]
struct SdkCredentials(aws_credential_types::provider::SharedCredentialsProvider);

#[async_trait::async_trait]
impl CredentialProvider for SdkCredentials {
    type Credential = AwsCredential;
    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let c = self
            .0
            .provide_credentials()
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            })?;
        Ok(Arc::new(AwsCredential {
            key_id: c.access_key_id().to_string(),
            secret_key: c.secret_access_key().to_string(),
            token: c.session_token().map(str::to_string),
        }))
    }
}

/// S3 as the backend reaches it.
pub struct S3 {
    region: String,
    endpoint: Option<String>,
    credentials: Arc<SdkCredentials>,
    /// The staging bucket: jobs never fetch from it (it holds other jobs' URLs).
    pub staging_bucket: String,
    ttl: Duration,
}

impl S3 {
    /// The staging prefix `url` (`s3://bucket[/prefix]`) scoped to `scope`, and S3 for fetches.
    pub fn connect(
        url: &str,
        sdk: &aws_config::SdkConfig,
        endpoint: Option<&str>,
        scope: &str,
        ttl: Duration,
    ) -> Result<(S3, ObjectStaging), BackendError> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            BackendError::invalid_spec(format!("staging {url:?} is not an s3:// URL"))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let credentials = sdk.credentials_provider().ok_or_else(|| {
            BackendError::unavailable(
                "no AWS credentials found (environment, profile or instance role)",
            )
        })?;
        let region = sdk
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".into());
        let s3 = S3 {
            region,
            endpoint: endpoint.map(str::to_string),
            credentials: Arc::new(SdkCredentials(credentials)),
            staging_bucket: bucket.to_string(),
            ttl,
        };
        let store = Arc::new(
            s3.bucket_store(bucket)
                .map_err(|e| BackendError::invalid_spec(format!("staging {url}")).because(e))?,
        );
        let staging =
            ObjectStaging::new(store.clone(), store, url, prefix, scope, ttl, "S3 staging");
        Ok((s3, staging))
    }

    fn bucket_store(&self, bucket: &str) -> object_store::Result<AmazonS3> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(&self.region)
            .with_credentials(self.credentials.clone());
        if let Some(endpoint) = &self.endpoint {
            // Emulators (moto) answer on one host: path-style addressing, maybe plain http.
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        builder.build()
    }

    /// A presigned GET for an object anywhere the credentials reach (`s3://bucket/key`), and
    /// its size. The object is looked up first, so a missing, unreadable or oversized one is
    /// reported here, as an input error.
    pub async fn presign_object(
        &self,
        url: &str,
        max_bytes: u64,
    ) -> Result<(String, u64), BackendError> {
        let (bucket, key) = url
            .strip_prefix("s3://")
            .and_then(|rest| rest.split_once('/'))
            .filter(|(b, k)| !b.is_empty() && !k.is_empty())
            .ok_or_else(|| BackendError::invalid_spec(format!("{url} is not s3://bucket/key")))?;
        let store = self
            .bucket_store(bucket)
            .map_err(|e| BackendError::invalid_spec(url.to_string()).because(e))?;
        presign_input(&store, key, url, max_bytes, self.ttl, "S3").await
    }
}
