//! A small typed client of the Azure Batch data-plane REST API: pools (get), jobs (add, get),
//! tasks (add, get, terminate, delete) and task files (stdout.txt, stderr.txt) for logs. There is no official Rust
//! crate for Batch; the shapes here follow the official specification
//! (Azure/azure-rest-api-specs, `specification/batch/data-plane/Microsoft.Batch/stable/`
//! [`API_VERSION`]`/BatchService.json`), and the tests check every request body against it.
//!
//! Authentication is either of the two the specification defines (`securityDefinitions`): a
//! Microsoft Entra ID bearer token ([`crate::entra`], the default) or Batch Shared Key
//! ([`crate::shared_key`], the account's access key).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use brizo_backend_core::BackendError;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::entra::Tokens;
use crate::shared_key::SharedKey;

/// The one Batch REST API version this client speaks.
pub const API_VERSION: &str = "2024-07-01.20.0";
/// What Batch expects request bodies to be.
const JSON_BODY: &str = "application/json; odata=minimalmetadata";

/// How requests prove who sends them.
pub enum Auth {
    /// A Microsoft Entra ID token of the identity brizo runs as (Batch checks its roles).
    Entra(Arc<Tokens>),
    /// The account's access key (full control of the account).
    SharedKey(SharedKey),
}

impl Auth {
    /// What to check when Batch refuses the credential.
    fn refusal_hint(&self) -> String {
        match self {
            Auth::Entra(tokens) => format!(
                "Batch refused the Microsoft Entra token from {}: the identity brizo runs as needs a Batch role on the account \
                 (terraform/modules/azure gives the service's identity Azure Batch Job Submitter) and the token must be for {}",
                tokens
                    .chain()
                    .chosen()
                    .unwrap_or("the Azure credential chain"),
                tokens.scope()
            ),
            Auth::SharedKey(_) => "check the Batch account name and access key".into(),
        }
    }
}

/// A Batch account's data plane, as one credential reaches it.
pub struct Batch {
    http: reqwest::Client,
    /// `https://<account>.<region>.batch.azure.com`, no trailing slash.
    base: String,
    auth: Auth,
}

// Request bodies (TaskAddParameter and what it holds) and the parts of responses read here
// (CloudTask, CloudJob, BatchError), named as in the specification.

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskAdd {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub command_line: String,
    pub container_settings: ContainerSettings,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub environment_settings: Vec<EnvironmentSetting>,
    pub constraints: TaskConstraints,
    pub user_identity: UserIdentity,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSettings {
    pub image_name: String,
    /// Extra `docker create` options (limits, mounts, isolation).
    pub container_run_options: String,
    /// `containerImageDefault`: the image's own working directory, not Batch's task folder.
    pub working_directory: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EnvironmentSetting {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskConstraints {
    /// An ISO 8601 duration (`PT1H30M`): Batch ends the task then, whatever the service does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_wall_clock_time: Option<String>,
    /// How long Batch keeps the task's folder (and its stdout/stderr) once it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_time: Option<String>,
    /// Never run again behind the service's back: a failed run is the service's to judge.
    pub max_task_retry_count: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UserIdentity {
    pub auto_user: AutoUser,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AutoUser {
    pub scope: String,
    pub elevation_level: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobAdd {
    pub id: String,
    pub pool_info: PoolInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PoolInfo {
    pub pool_id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudJob {
    pub id: String,
    #[serde(default)]
    pub state: String,
    pub pool_info: Option<PoolInfo>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudPool {
    pub id: String,
    /// `active` or `deleting`.
    #[serde(default)]
    pub state: String,
    /// `steady`, `resizing` or `stopping`.
    #[serde(default)]
    pub allocation_state: String,
    #[serde(default)]
    pub current_dedicated_nodes: i64,
    #[serde(default)]
    pub current_low_priority_nodes: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudTask {
    pub id: String,
    #[serde(default)]
    pub display_name: Option<String>,
    /// `active`, `preparing`, `running` or `completed`.
    pub state: String,
    #[serde(default)]
    pub execution_info: Option<ExecutionInfo>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionInfo {
    #[serde(default)]
    pub start_time: Option<String>,
    #[serde(default)]
    pub end_time: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i64>,
    #[serde(default)]
    pub failure_info: Option<FailureInfo>,
    /// `success` or `failure`.
    #[serde(default)]
    pub result: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureInfo {
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct BatchError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: Option<ErrorMessage>,
    /// BatchErrorDetail: `AuthenticationErrorDetail` says why a credential was refused.
    #[serde(default)]
    values: Vec<ErrorDetail>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorMessage {
    #[serde(default)]
    value: String,
}

/// What Batch answered a request that did not succeed.
#[derive(Debug)]
struct Refusal {
    status: reqwest::StatusCode,
    code: String,
    message: String,
    /// What the operator checks when the credential is refused.
    hint: String,
}

impl Refusal {
    /// The error class a refusal falls in: throttling and server faults pass, a refused
    /// credential needs the operator, the rest is a request Batch will never take.
    fn into_error(self, what: &str) -> BackendError {
        let words = format!(
            "Azure Batch answered {} to {what}: {} {}",
            self.status, self.code, self.message
        );
        let s = self.status.as_u16();
        if s == 429 || s == 408 || self.status.is_server_error() {
            BackendError::unavailable(words)
        } else if s == 401 || s == 403 {
            BackendError::unavailable(format!("{words} ({})", self.hint))
        } else if self.status.is_client_error() {
            BackendError::invalid_spec(words)
        } else {
            BackendError::other(words)
        }
    }
}

/// Whether a task was added, or was there already (a restart resubmitting the same job).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    New,
    Existed,
}

impl Batch {
    /// A client of the account at `url` (`https://<account>.<region>.batch.azure.com`).
    pub fn new(url: &str, auth: Auth) -> Result<Self, BackendError> {
        Ok(Self {
            http: http_client()?,
            base: url.trim_end_matches('/').to_string(),
            auth,
        })
    }

    /// A client signing with the account's access key (base64, as the portal shows it).
    pub fn with_shared_key(url: &str, account: &str, key: &str) -> Result<Self, BackendError> {
        Self::new(url, Auth::SharedKey(SharedKey::new(account, key)?))
    }

    /// How this client authenticates.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// The `Authorization` value for a request.
    async fn authorization(
        &self,
        method: &reqwest::Method,
        url: &reqwest::Url,
        content_length: &str,
        content_type: &str,
        ocp_headers: &[(&str, &str)],
    ) -> Result<String, BackendError> {
        match &self.auth {
            Auth::Entra(tokens) => tokens.authorization().await,
            Auth::SharedKey(key) => Ok(key.authorization(
                method.as_str(),
                url,
                content_length,
                content_type,
                ocp_headers,
            )),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
        range: Option<(u64, u64)>,
        what: &str,
    ) -> Result<Result<reqwest::Response, Refusal>, BackendError> {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.base)).map_err(|e| {
            BackendError::invalid_spec(format!("Batch URL {}{path}", self.base)).because(e)
        })?;
        url.query_pairs_mut()
            .append_pair("api-version", API_VERSION);
        let date = httpdate::fmt_http_date(SystemTime::now());
        let (length, kind) = match &body {
            Some(b) => (b.len().to_string(), JSON_BODY),
            None if method == reqwest::Method::POST => ("0".to_string(), ""),
            None => (String::new(), ""),
        };
        // Every `ocp-*` header is signed.
        let range = range.map(|(start, end)| format!("bytes={start}-{end}"));
        let mut ocp = vec![("ocp-date", date.as_str())];
        if let Some(range) = &range {
            ocp.push(("ocp-range", range.as_str()));
        }
        let authorization = self
            .authorization(&method, &url, &length, kind, &ocp)
            .await?;
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .header("Authorization", authorization);
        for (name, value) in &ocp {
            request = request.header(*name, *value);
        }
        if !kind.is_empty() {
            request = request.header("Content-Type", kind);
        }
        if !length.is_empty() {
            request = request.header("Content-Length", &length);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.map_err(|e| {
            BackendError::unavailable(format!("Azure Batch at {} ({what})", self.base))
                .because(e.without_url())
        })?;
        if response.status().is_success() {
            return Ok(Ok(response));
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let error: BatchError = serde_json::from_str(&text).unwrap_or_default();
        let mut message = error
            .message
            .map(|m| m.value)
            .unwrap_or_else(|| text.chars().take(200).collect());
        for detail in &error.values {
            message.push_str(&format!(" ({}: {})", detail.key, detail.value));
        }
        Ok(Err(Refusal {
            status,
            code: error.code,
            message,
            hint: self.auth.refusal_hint(),
        }))
    }

    async fn json<T: serde::de::DeserializeOwned>(
        response: reqwest::Response,
        what: &str,
    ) -> Result<T, BackendError> {
        let text = response.text().await.map_err(|e| {
            BackendError::unavailable(format!("Azure Batch ({what})")).because(e.without_url())
        })?;
        serde_json::from_str(&text).map_err(|e| {
            BackendError::other(format!(
                "Azure Batch answered {what} with something that is not its JSON: {}",
                text.chars().take(200).collect::<String>()
            ))
            .because(e)
        })
    }

    /// The pool, or `None` when the account has no pool of that id.
    pub async fn pool(&self, pool_id: &str) -> Result<Option<CloudPool>, BackendError> {
        let what = format!("getting pool {pool_id}");
        match self
            .send(
                reqwest::Method::GET,
                &format!("/pools/{}", segment(pool_id)),
                None,
                None,
                &what,
            )
            .await?
        {
            Ok(r) => Self::json(r, &what).await.map(Some),
            Err(r) if r.status == 404 => Ok(None),
            Err(r) => Err(r.into_error(&what)),
        }
    }

    /// The Batch job, or `None` when the account has no job of that id.
    pub async fn job(&self, job_id: &str) -> Result<Option<CloudJob>, BackendError> {
        let what = format!("getting job {job_id}");
        match self
            .send(
                reqwest::Method::GET,
                &format!("/jobs/{}", segment(job_id)),
                None,
                None,
                &what,
            )
            .await?
        {
            Ok(r) => Self::json(r, &what).await.map(Some),
            Err(r) if r.status == 404 => Ok(None),
            Err(r) => Err(r.into_error(&what)),
        }
    }

    /// Adds a Batch job on `pool_id` (Terraform makes the one brizo uses; tests and
    /// `make try-azure` make theirs with this).
    pub async fn add_job(&self, job: &JobAdd) -> Result<(), BackendError> {
        let what = format!("adding job {}", job.id);
        let body = serde_json::to_vec(job).expect("a job serializes");
        match self
            .send(reqwest::Method::POST, "/jobs", Some(body), None, &what)
            .await?
        {
            Ok(_) => Ok(()),
            Err(r) if r.status == 409 && r.code == "JobExists" => Ok(()),
            Err(r) => Err(r.into_error(&what)),
        }
    }

    pub async fn add_task(&self, job_id: &str, task: &TaskAdd) -> Result<Added, BackendError> {
        let what = format!("adding task {} to job {job_id}", task.id);
        let body = serde_json::to_vec(task).expect("a task serializes");
        match self
            .send(
                reqwest::Method::POST,
                &format!("/jobs/{}/tasks", segment(job_id)),
                Some(body),
                None,
                &what,
            )
            .await?
        {
            Ok(_) => Ok(Added::New),
            Err(r) if r.status == 409 && r.code == "TaskExists" => Ok(Added::Existed),
            // The Batch job is missing, disabled or terminated: the infrastructure's to fix,
            // not the job's fault; retried until it takes tasks again.
            Err(r) if r.status == 404 || r.status == 409 => {
                Err(BackendError::unavailable(format!(
                    "Azure Batch job {job_id} does not take tasks ({} {}); apply terraform/modules/azure or enable the job",
                    r.code, r.message
                )))
            }
            Err(r) => Err(r.into_error(&what)),
        }
    }

    /// The task, or `None` when the job has no task of that id (never added, or deleted).
    pub async fn task(
        &self,
        job_id: &str,
        task_id: &str,
    ) -> Result<Option<CloudTask>, BackendError> {
        let what = format!("getting task {task_id} of job {job_id}");
        match self
            .send(
                reqwest::Method::GET,
                &format!("/jobs/{}/tasks/{}", segment(job_id), segment(task_id)),
                None,
                None,
                &what,
            )
            .await?
        {
            Ok(r) => Self::json(r, &what).await.map(Some),
            Err(r) if r.status == 404 => Ok(None),
            Err(r) => Err(r.into_error(&what)),
        }
    }

    /// Ends the task whatever it does; not an error when it already ended or is gone.
    pub async fn terminate_task(&self, job_id: &str, task_id: &str) -> Result<(), BackendError> {
        let what = format!("terminating task {task_id} of job {job_id}");
        match self
            .send(
                reqwest::Method::POST,
                &format!(
                    "/jobs/{}/tasks/{}/terminate",
                    segment(job_id),
                    segment(task_id)
                ),
                None,
                None,
                &what,
            )
            .await?
        {
            Ok(_) => Ok(()),
            // TaskCompleted (already ended), TaskNotFound.
            Err(r) if r.status == 409 || r.status == 404 => Ok(()),
            Err(r) => Err(r.into_error(&what)),
        }
    }

    /// Deletes the task (and its files on the node); not an error when it is gone.
    pub async fn delete_task(&self, job_id: &str, task_id: &str) -> Result<(), BackendError> {
        let what = format!("deleting task {task_id} of job {job_id}");
        match self
            .send(
                reqwest::Method::DELETE,
                &format!("/jobs/{}/tasks/{}", segment(job_id), segment(task_id)),
                None,
                None,
                &what,
            )
            .await?
        {
            Ok(_) => Ok(()),
            Err(r) if r.status == 404 => Ok(()),
            Err(r) => Err(r.into_error(&what)),
        }
    }

    /// The size of one of the task's files (`stdout.txt`), `None` while it has none.
    pub async fn task_file_size(
        &self,
        job_id: &str,
        task_id: &str,
        name: &str,
    ) -> Result<Option<u64>, BackendError> {
        let what = format!("reading the size of {name} of task {task_id}");
        match self
            .send(
                reqwest::Method::HEAD,
                &file_path(job_id, task_id, name),
                None,
                None,
                &what,
            )
            .await?
        {
            Ok(r) => Ok(r
                .headers()
                .get(reqwest::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())),
            // No node yet, no file yet, or the task's folder is gone.
            Err(r) if r.status == 404 || r.status == 409 => Ok(None),
            Err(r) => Err(r.into_error(&what)),
        }
    }

    /// Bytes `start..=end` of one of the task's files.
    pub async fn task_file_range(
        &self,
        job_id: &str,
        task_id: &str,
        name: &str,
        start: u64,
        end: u64,
    ) -> Result<Bytes, BackendError> {
        let what = format!("reading {name} of task {task_id}");
        match self
            .send(
                reqwest::Method::GET,
                &file_path(job_id, task_id, name),
                None,
                Some((start, end)),
                &what,
            )
            .await?
        {
            Ok(r) => r.bytes().await.map_err(|e| {
                BackendError::unavailable(format!("Azure Batch ({what})")).because(e.without_url())
            }),
            Err(r) if r.status == 404 || r.status == 409 => Ok(Bytes::new()),
            Err(r) => Err(r.into_error(&what)),
        }
    }
}

/// The HTTP client of Batch requests, and of the Entra credentials' token requests.
pub fn http_client() -> Result<reqwest::Client, BackendError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| BackendError::invalid_spec("HTTP client for Azure Batch").because(e))
}

fn file_path(job_id: &str, task_id: &str, name: &str) -> String {
    format!(
        "/jobs/{}/tasks/{}/files/{}",
        segment(job_id),
        segment(task_id),
        segment(name)
    )
}

/// A path segment, percent-encoded (Batch ids are `[A-Za-z0-9_-]`, file names may hold more).
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Seconds as an ISO 8601 duration (`PT3600S`), as Batch's `duration` fields take them.
pub fn iso_duration(secs: u64) -> String {
    format!("PT{secs}S")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_are_encoded_as_path_segments() {
        assert_eq!(segment("brizo-jobs_1"), "brizo-jobs_1");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn refusals_are_classed() {
        let r = |status: u16, code: &str| Refusal {
            status: reqwest::StatusCode::from_u16(status).unwrap(),
            code: code.into(),
            message: "m".into(),
            hint: "h".into(),
        };
        use brizo_backend_core::ErrorClass;
        assert_eq!(
            r(429, "TooManyRequests").into_error("x").class(),
            ErrorClass::Transient
        );
        assert_eq!(
            r(503, "ServerBusy").into_error("x").class(),
            ErrorClass::Transient
        );
        assert_eq!(
            r(403, "AuthenticationFailed").into_error("x").class(),
            ErrorClass::Transient
        );
        assert_eq!(
            r(400, "InvalidPropertyValue").into_error("x").class(),
            ErrorClass::BadJob
        );
    }
}
