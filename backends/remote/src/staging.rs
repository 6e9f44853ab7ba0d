//! Where a remote backend keeps each job's files: the staged inputs, the runner's plan, what
//! the run sends back. Two kinds: an object store that signs URLs (S3, Azure Blob, GCS), whose
//! presigned URLs let a job's container read and write exactly its own objects; and a folder
//! on a filesystem the job's host shares with the service (an on-premise cluster), whose
//! `file://` URLs the runner opens directly, so the job needs no network at all.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use brizo_backend_core::BackendError;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as StorePath;
use object_store::signer::{Method, Signer};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// How a job's container will use a staged object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// A job's files, keyed by job id and a relative name (`plan.json`, `in/0/data.csv`).
#[async_trait]
pub trait Staging: Send + Sync + 'static {
    /// Where it is, for messages (`s3://bucket/prefix`, `file:///shared/brizo`).
    fn location(&self) -> String;
    async fn put(&self, job_id: &str, rel: &str, bytes: Vec<u8>) -> Result<(), BackendError>;
    /// Streams a host file in (never whole in memory); its size.
    async fn put_file(&self, job_id: &str, rel: &str, file: &Path) -> Result<u64, BackendError>;
    /// The object, or `None` when it does not exist.
    async fn get(&self, job_id: &str, rel: &str) -> Result<Option<Bytes>, BackendError>;
    /// Streams the object into `file`. `Ok(None)`: no such object; `Ok(Some(size))` without
    /// writing when it is larger than `max`.
    async fn download(
        &self,
        job_id: &str,
        rel: &str,
        file: &Path,
        max: u64,
    ) -> Result<Option<u64>, BackendError>;
    /// The URL the job's container reads or writes the object through.
    async fn url(&self, job_id: &str, rel: &str, access: Access) -> Result<String, BackendError>;
    async fn delete_job(&self, job_id: &str) -> Result<(), BackendError>;
    /// Job ids with anything staged.
    async fn jobs(&self) -> Result<Vec<String>, BackendError>;
}

/// A job's JSON record (`meta.json`, `result.json`), or `None` when it does not exist.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    staging: &dyn Staging,
    job_id: &str,
    name: &str,
) -> Result<Option<T>, BackendError> {
    match staging.get(job_id, name).await? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| BackendError::other(format!("{name} of job {job_id}: {e}"))),
        None => Ok(None),
    }
}

/// A signed GET for an input object (`key` in `store`, `url` as the job names it) the
/// backend's credentials reach, and its size. The object is looked up first, so a missing,
/// unreadable or oversized one is an input error here, said with its URL, rather than a failed
/// download in the job's container. `service` names the store when it cannot be reached.
pub async fn presign_input<S: ObjectStore + Signer>(
    store: &S,
    key: &str,
    url: &str,
    max_bytes: u64,
    ttl: Duration,
    service: &'static str,
) -> Result<(String, u64), BackendError> {
    let key = StorePath::from(key);
    let meta = match store.head(&key).await {
        Ok(meta) => meta,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(BackendError::input(format!("input {url} does not exist")));
        }
        Err(
            e @ (object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }),
        ) => {
            return Err(BackendError::input(format!(
                "input {url} cannot be read with the backend's credentials"
            ))
            .because(e));
        }
        Err(e) => return Err(BackendError::unavailable(service).because(e)),
    };
    if meta.size > max_bytes {
        return Err(BackendError::input(format!(
            "input {url} is {} bytes, over the cap of {max_bytes} (inputs.max_input_mb)",
            meta.size
        )));
    }
    let signed = store
        .signed_url(Method::GET, &key, ttl)
        .await
        .map_err(|e| BackendError::unavailable(service).because(e))?;
    Ok((signed.to_string(), meta.size))
}

/// Staging in an object store that signs URLs.
pub struct ObjectStaging {
    store: Arc<dyn ObjectStore>,
    signer: Arc<dyn Signer>,
    /// `prefix/instance/backend`: everything of this backend instance lies under it.
    root: String,
    location: String,
    ttl: Duration,
    /// Names the store in errors (`S3 staging`).
    label: &'static str,
}

impl ObjectStaging {
    /// `store` and `signer` are usually the same client (`AmazonS3`, `MicrosoftAzure`,
    /// `GoogleCloudStorage` are both). `prefix` is the configured one, `scope` the
    /// `instance/backend` pair.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        signer: Arc<dyn Signer>,
        location: &str,
        prefix: &str,
        scope: &str,
        ttl: Duration,
        label: &'static str,
    ) -> Self {
        let root = [prefix.trim_matches('/'), scope]
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join("/");
        Self {
            store,
            signer,
            root,
            location: location.to_string(),
            ttl,
            label,
        }
    }

    fn key(&self, job_id: &str, rel: &str) -> StorePath {
        StorePath::from(format!("{}/{job_id}/{rel}", self.root))
    }

    fn error(&self, e: object_store::Error) -> BackendError {
        BackendError::unavailable(self.label).because(e)
    }
}

#[async_trait]
impl Staging for ObjectStaging {
    fn location(&self) -> String {
        self.location.clone()
    }

    async fn put(&self, job_id: &str, rel: &str, bytes: Vec<u8>) -> Result<(), BackendError> {
        self.store
            .put(&self.key(job_id, rel), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| self.error(e))
    }

    async fn put_file(&self, job_id: &str, rel: &str, file: &Path) -> Result<u64, BackendError> {
        let io = |e: std::io::Error| BackendError::invalid_spec(format!("{}: {e}", file.display()));
        let mut source = tokio::fs::File::open(file).await.map_err(io)?;
        let mut sink =
            object_store::buffered::BufWriter::new(self.store.clone(), self.key(job_id, rel));
        let size = tokio::io::copy(&mut source, &mut sink)
            .await
            .map_err(|e| BackendError::unavailable(self.label).because(e))?;
        tokio::io::AsyncWriteExt::shutdown(&mut sink)
            .await
            .map_err(|e| BackendError::unavailable(self.label).because(e))?;
        Ok(size)
    }

    async fn get(&self, job_id: &str, rel: &str) -> Result<Option<Bytes>, BackendError> {
        match self.store.get(&self.key(job_id, rel)).await {
            Ok(result) => result.bytes().await.map(Some).map_err(|e| self.error(e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }

    async fn download(
        &self,
        job_id: &str,
        rel: &str,
        file: &Path,
        max: u64,
    ) -> Result<Option<u64>, BackendError> {
        let result = match self.store.get(&self.key(job_id, rel)).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.error(e)),
        };
        let size = result.meta.size;
        if size > max {
            return Ok(Some(size));
        }
        let io = |e: std::io::Error| BackendError::other(format!("{}: {e}", file.display()));
        let mut out = tokio::fs::File::create(file).await.map_err(io)?;
        let mut stream = result.into_stream();
        while let Some(chunk) = stream.next().await {
            tokio::io::AsyncWriteExt::write_all(&mut out, &chunk.map_err(|e| self.error(e))?)
                .await
                .map_err(io)?;
        }
        tokio::io::AsyncWriteExt::flush(&mut out)
            .await
            .map_err(io)?;
        Ok(Some(size))
    }

    async fn url(&self, job_id: &str, rel: &str, access: Access) -> Result<String, BackendError> {
        let method = match access {
            Access::Read => Method::GET,
            Access::Write => Method::PUT,
        };
        self.signer
            .signed_url(method, &self.key(job_id, rel), self.ttl)
            .await
            .map(|u| u.to_string())
            .map_err(|e| self.error(e))
    }

    async fn delete_job(&self, job_id: &str) -> Result<(), BackendError> {
        let prefix = StorePath::from(format!("{}/{job_id}", self.root));
        let keys = self
            .store
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .boxed();
        self.store
            .delete_stream(keys)
            .try_collect::<Vec<_>>()
            .await
            .map(|_| ())
            .map_err(|e| self.error(e))
    }

    async fn jobs(&self) -> Result<Vec<String>, BackendError> {
        let listing = self
            .store
            .list_with_delimiter(Some(&StorePath::from(self.root.as_str())))
            .await
            .map_err(|e| self.error(e))?;
        Ok(listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect())
    }
}

/// Staging in a folder that the hosts jobs run on see at the same path (NFS, Lustre, or this
/// host). Each job's folder is root's and closed to others (0700); the job's container binds
/// only its own.
pub struct FolderStaging {
    root: PathBuf,
}

impl FolderStaging {
    /// `dir` is the configured folder, `scope` the `instance/backend` pair.
    pub fn new(dir: &Path, scope: &str) -> Result<Self, BackendError> {
        if !dir.is_absolute() {
            return Err(BackendError::invalid_spec(format!(
                "staging folder {} is not an absolute path",
                dir.display()
            )));
        }
        Ok(Self {
            root: dir.join(scope),
        })
    }

    /// The job's folder: what the job's container binds.
    pub fn job_dir(&self, job_id: &str) -> PathBuf {
        self.root.join(job_id)
    }

    fn path(&self, job_id: &str, rel: &str) -> Result<PathBuf, BackendError> {
        if Path::new(rel)
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
            || job_id.contains('/')
            || job_id.starts_with('.')
        {
            return Err(BackendError::invalid_spec(format!(
                "staging name {job_id}/{rel} leaves the job's folder"
            )));
        }
        Ok(self.job_dir(job_id).join(rel))
    }

    /// Makes the folders above `path` (the job's own closed to everyone but root).
    async fn parent_of(&self, job_id: &str, path: &Path) -> Result<(), BackendError> {
        let job_dir = self.job_dir(job_id);
        let io = |e: std::io::Error| {
            BackendError::unavailable(format!("staging folder {}", job_dir.display())).because(e)
        };
        if !job_dir.exists() {
            tokio::fs::create_dir_all(&job_dir).await.map_err(io)?;
            tokio::fs::set_permissions(
                &job_dir,
                std::os::unix::fs::PermissionsExt::from_mode(0o700),
            )
            .await
            .map_err(io)?;
        }
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io)?;
        }
        Ok(())
    }
}

fn folder_error(path: &Path, e: std::io::Error) -> BackendError {
    BackendError::unavailable(format!("staging folder: {}", path.display())).because(e)
}

#[async_trait]
impl Staging for FolderStaging {
    fn location(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn put(&self, job_id: &str, rel: &str, bytes: Vec<u8>) -> Result<(), BackendError> {
        let path = self.path(job_id, rel)?;
        self.parent_of(job_id, &path).await?;
        // Written aside and renamed, so a reader never sees half a record.
        let partial = path.with_extension("partial");
        tokio::fs::write(&partial, bytes)
            .await
            .map_err(|e| folder_error(&partial, e))?;
        tokio::fs::rename(&partial, &path)
            .await
            .map_err(|e| folder_error(&path, e))
    }

    async fn put_file(&self, job_id: &str, rel: &str, file: &Path) -> Result<u64, BackendError> {
        let path = self.path(job_id, rel)?;
        self.parent_of(job_id, &path).await?;
        tokio::fs::copy(file, &path)
            .await
            .map_err(|e| BackendError::invalid_spec(format!("{}: {e}", file.display())))
    }

    async fn get(&self, job_id: &str, rel: &str) -> Result<Option<Bytes>, BackendError> {
        let path = self.path(job_id, rel)?;
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Some(Bytes::from(bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(folder_error(&path, e)),
        }
    }

    async fn download(
        &self,
        job_id: &str,
        rel: &str,
        file: &Path,
        max: u64,
    ) -> Result<Option<u64>, BackendError> {
        let path = self.path(job_id, rel)?;
        let size = match tokio::fs::symlink_metadata(&path).await {
            Ok(meta) if meta.is_file() => meta.len(),
            Ok(_) => {
                return Err(BackendError::run_failed(format!(
                    "{} is not a regular file",
                    path.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(folder_error(&path, e)),
        };
        if size > max {
            return Ok(Some(size));
        }
        tokio::fs::copy(&path, file)
            .await
            .map_err(|e| folder_error(&path, e))?;
        Ok(Some(size))
    }

    async fn url(&self, job_id: &str, rel: &str, access: Access) -> Result<String, BackendError> {
        let path = self.path(job_id, rel)?;
        if access == Access::Write {
            self.parent_of(job_id, &path).await?;
        }
        Ok(format!("file://{}", path.display()))
    }

    async fn delete_job(&self, job_id: &str) -> Result<(), BackendError> {
        let dir = self
            .path(job_id, "x")?
            .parent()
            .expect("a job's file has a folder")
            .to_path_buf();
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(folder_error(&dir, e)),
        }
    }

    async fn jobs(&self) -> Result<Vec<String>, BackendError> {
        let mut out = vec![];
        let mut entries = match tokio::fs::read_dir(&self.root).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(folder_error(&self.root, e)),
        };
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| folder_error(&self.root, e))?
        {
            if entry.file_type().await.is_ok_and(|t| t.is_dir()) {
                out.extend(entry.file_name().to_str().map(str::to_string));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_folder_keeps_each_job_apart() {
        let dir = tempfile::tempdir().unwrap();
        let s = FolderStaging::new(dir.path(), "inst/slurm").unwrap();
        s.put("job1", "meta.json", b"{}".to_vec()).await.unwrap();
        assert_eq!(
            s.get("job1", "meta.json").await.unwrap().unwrap(),
            Bytes::from_static(b"{}")
        );
        assert!(s.get("job1", "result.json").await.unwrap().is_none());
        assert!(
            s.get("job1", "../job2/meta.json").await.is_err(),
            "names cannot leave the job's folder"
        );
        let url = s.url("job1", "out/0.tar", Access::Write).await.unwrap();
        assert_eq!(
            url,
            format!("file://{}/inst/slurm/job1/out/0.tar", dir.path().display())
        );
        assert!(dir.path().join("inst/slurm/job1/out").is_dir());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(s.job_dir("job1")).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(s.jobs().await.unwrap(), vec!["job1".to_string()]);
        s.delete_job("job1").await.unwrap();
        s.delete_job("job1").await.unwrap();
        assert!(s.jobs().await.unwrap().is_empty());
    }
}
