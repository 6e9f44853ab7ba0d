//! A small typed client of the Google Batch v1 REST API (the `projects.locations.jobs`
//! methods brizo uses: create, get, delete, list, and `taskGroups.tasks.get`) and of Cloud
//! Logging v2's `entries.list`, the only Google APIs brizo calls besides GCS. There is no
//! maintained Batch crate; the request bodies follow the v1 discovery document (the tests
//! check them against a copy of it). Requests carry the bearer token of object_store's Google
//! credential chain (the same one the GCS store uses).

use std::collections::BTreeMap;
use std::sync::Arc;

use brizo_backend_core::BackendError;
use object_store::gcp::GcpCredentialProvider;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The Batch API version every request names: the one place it is written.
pub const API_VERSION: &str = "v1";
/// The Cloud Logging API version of `entries:list`.
pub const LOGGING_VERSION: &str = "v2";
pub const BATCH_ENDPOINT: &str = "https://batch.googleapis.com";
pub const LOGGING_ENDPOINT: &str = "https://logging.googleapis.com";
/// The log Batch writes the tasks' stdout and stderr to.
pub const TASK_LOG: &str = "batch_task_logs";

// ---- Request and response bodies (the discovery document's schemas, camelCase) ----

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default)]
    pub task_groups: Vec<TaskGroup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_policy: Option<AllocationPolicy>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs_policy: Option<LogsPolicy>,
    /// Output only.
    #[serde(default, skip_serializing)]
    pub status: Option<JobStatus>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskGroup {
    /// Output only.
    #[serde(default, skip_serializing)]
    pub name: Option<String>,
    pub task_spec: TaskSpec,
    /// int64, as a string in JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_count: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskSpec {
    pub runnables: Vec<Runnable>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_resource: Option<ComputeResource>,
    /// google-duration: `"3600s"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_run_duration: Option<String>,
    #[serde(default)]
    pub max_retry_count: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Runnable {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub image_uri: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// Extra `docker run` options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_external_network: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Environment {
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComputeResource {
    /// int64 as a string.
    pub cpu_milli: String,
    /// int64 as a string.
    pub memory_mib: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_disk_mib: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AllocationPolicy {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<InstancePolicyOrTemplate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<ServiceAccount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<LocationPolicy>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InstancePolicyOrTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<InstancePolicy>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InstancePolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_type: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicy {
    pub network_interfaces: Vec<NetworkInterface>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInterface {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnetwork: Option<String>,
    pub no_external_ip_address: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccount {
    pub email: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LocationPolicy {
    pub allowed_locations: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LogsPolicy {
    /// `CLOUD_LOGGING` or `PATH`.
    pub destination: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub status_events: Vec<StatusEvent>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatusEvent {
    #[serde(default)]
    pub description: String,
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub event_time: Option<String>,
    #[serde(default)]
    pub task_state: Option<String>,
    #[serde(default)]
    pub task_execution: Option<TaskExecution>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskExecution {
    #[serde(default)]
    pub exit_code: i32,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub status: TaskStatus,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub status_events: Vec<StatusEvent>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListJobs {
    #[serde(default)]
    jobs: Vec<Job>,
}

/// One Cloud Logging entry, as `entries:list` returns it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    #[serde(default)]
    pub insert_id: String,
    #[serde(default)]
    pub timestamp: String,
    #[serde(default)]
    pub text_payload: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEntries {
    #[serde(default)]
    pub entries: Vec<LogEntry>,
    #[serde(default)]
    pub next_page_token: Option<String>,
}

/// Google's error body: `{"error": {"code", "message", "status"}}`.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: ErrorDetail,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
}

/// The class of a refusal, from its HTTP status and its canonical status name: load shedding
/// and outages are waited out; a refused spec is the job's fault; a missing resource is
/// missing; anything else is retried a few times.
pub fn classify(what: &str, http: u16, status: &str, message: &str) -> BackendError {
    let words = format!("{what}: {http} {status}: {message}");
    match (http, status) {
        (_, "RESOURCE_EXHAUSTED" | "UNAVAILABLE" | "DEADLINE_EXCEEDED" | "ABORTED") => {
            BackendError::unavailable(words)
        }
        (429, _) | (500..=599, _) => BackendError::unavailable(words),
        (_, "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE") | (400, _) => {
            BackendError::invalid_spec(words)
        }
        (_, "NOT_FOUND") | (404, _) => BackendError::NotFound { job_id: words },
        _ => BackendError::other(words),
    }
}

/// The Batch and Logging endpoints of one project and region.
pub struct Batch {
    http: reqwest::Client,
    credentials: GcpCredentialProvider,
    batch_endpoint: String,
    logging_endpoint: String,
    pub project: String,
    pub location: String,
}

impl Batch {
    pub fn new(
        credentials: GcpCredentialProvider,
        project: &str,
        location: &str,
        batch_endpoint: Option<&str>,
        logging_endpoint: Option<&str>,
    ) -> Result<Batch, BackendError> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| BackendError::other("an HTTP client for Google Batch").because(e))?;
        Ok(Batch {
            http,
            credentials,
            batch_endpoint: batch_endpoint
                .unwrap_or(BATCH_ENDPOINT)
                .trim_end_matches('/')
                .to_string(),
            logging_endpoint: logging_endpoint
                .unwrap_or(LOGGING_ENDPOINT)
                .trim_end_matches('/')
                .to_string(),
            project: project.to_string(),
            location: location.to_string(),
        })
    }

    /// `projects/{project}/locations/{location}`.
    pub fn parent(&self) -> String {
        format!("projects/{}/locations/{}", self.project, self.location)
    }

    /// The resource name of job `id`.
    pub fn job_name(&self, id: &str) -> String {
        format!("{}/jobs/{id}", self.parent())
    }

    async fn send(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Option<Value>, BackendError> {
        let token = self
            .credentials
            .get_credential()
            .await
            .map_err(|e| BackendError::unavailable("Google credentials").because(e))?;
        let request = if token.bearer.is_empty() {
            request
        } else {
            request.bearer_auth(&token.bearer)
        };
        let response = request
            .send()
            .await
            .map_err(|e| BackendError::unavailable(what.to_string()).because(e))?;
        let http = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| BackendError::unavailable(what.to_string()).because(e))?;
        if (200..300).contains(&http) {
            if text.trim().is_empty() {
                return Ok(Some(Value::Null));
            }
            return serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| BackendError::other(format!("{what}: unreadable answer: {e}")));
        }
        let body: ErrorBody = serde_json::from_str(&text).unwrap_or_default();
        let message = if body.error.message.is_empty() {
            text.chars().take(300).collect()
        } else {
            body.error.message
        };
        if http == 404 || body.error.status == "NOT_FOUND" {
            return Ok(None);
        }
        Err(classify(what, http, &body.error.status, &message))
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{API_VERSION}/{path}", self.batch_endpoint)
    }

    /// jobs.create with a job id of ours (`?jobId=`), so the job is found again by name.
    pub async fn create_job(&self, id: &str, job: &Job) -> Result<Job, BackendError> {
        let request = self
            .http
            .post(self.url(&format!("{}/jobs", self.parent())))
            .query(&[("jobId", id)])
            .json(job);
        let created = self
            .send("Google Batch jobs.create", request)
            .await?
            .ok_or_else(|| {
                BackendError::unavailable(format!(
                    "Google Batch: location {} of project {} not found",
                    self.location, self.project
                ))
            })?;
        serde_json::from_value(created)
            .map_err(|e| BackendError::other(format!("Google Batch jobs.create answer: {e}")))
    }

    /// jobs.get; `None` when Batch does not know it (any more).
    pub async fn get_job(&self, id: &str) -> Result<Option<Job>, BackendError> {
        let request = self.http.get(self.url(&self.job_name(id)));
        match self.send("Google Batch jobs.get", request).await? {
            Some(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|e| BackendError::other(format!("Google Batch jobs.get answer: {e}"))),
            None => Ok(None),
        }
    }

    /// jobs.delete: Batch ends its tasks and removes it. Not an error when it is gone.
    pub async fn delete_job(&self, id: &str, reason: &str) -> Result<(), BackendError> {
        let request = self
            .http
            .delete(self.url(&self.job_name(id)))
            .query(&[("reason", reason)]);
        self.send("Google Batch jobs.delete", request)
            .await
            .map(|_| ())
    }

    /// The first task of the job's first group (brizo jobs have exactly one).
    pub async fn first_task(&self, id: &str) -> Result<Option<Task>, BackendError> {
        let request = self
            .http
            .get(self.url(&format!("{}/taskGroups/group0/tasks/0", self.job_name(id))));
        match self.send("Google Batch tasks.get", request).await? {
            Some(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|e| BackendError::other(format!("Google Batch tasks.get answer: {e}"))),
            None => Ok(None),
        }
    }

    /// jobs.list filtered by a label; names of the jobs.
    pub async fn jobs_labelled(&self, key: &str, value: &str) -> Result<Vec<Job>, BackendError> {
        let filter = format!("labels.{key}=\"{value}\"");
        let request = self
            .http
            .get(self.url(&format!("{}/jobs", self.parent())))
            .query(&[("filter", filter.as_str()), ("pageSize", "100")]);
        let Some(v) = self.send("Google Batch jobs.list", request).await? else {
            return Err(BackendError::unavailable(format!(
                "Google Batch: location {} of project {} not found",
                self.location, self.project
            )));
        };
        let list: ListJobs = serde_json::from_value(v)
            .map_err(|e| BackendError::other(format!("Google Batch jobs.list answer: {e}")))?;
        Ok(list.jobs)
    }

    /// Whether Batch answers for this project and region (a jobs.list of one).
    pub async fn ping(&self) -> Result<(), BackendError> {
        let request = self
            .http
            .get(self.url(&format!("{}/jobs", self.parent())))
            .query(&[("pageSize", "1")]);
        match self.send("Google Batch jobs.list", request).await? {
            Some(_) => Ok(()),
            None => Err(BackendError::unavailable(format!(
                "Google Batch: location {} of project {} not found",
                self.location, self.project
            ))),
        }
    }

    /// Cloud Logging entries:list of the project, with `filter`, oldest first.
    pub async fn log_entries(
        &self,
        filter: &str,
        page_token: Option<&str>,
    ) -> Result<LogEntries, BackendError> {
        let mut body = serde_json::json!({
            "resourceNames": [format!("projects/{}", self.project)],
            "filter": filter,
            "orderBy": "timestamp asc",
            "pageSize": 1000,
        });
        if let Some(token) = page_token {
            body["pageToken"] = Value::String(token.to_string());
        }
        let request = self
            .http
            .post(format!(
                "{}/{LOGGING_VERSION}/entries:list",
                self.logging_endpoint
            ))
            .json(&body);
        match self.send("Cloud Logging entries.list", request).await? {
            Some(v) => serde_json::from_value(v)
                .map_err(|e| BackendError::other(format!("Cloud Logging answer: {e}"))),
            None => Ok(LogEntries::default()),
        }
    }
}

/// Seconds as a google-duration (`"90s"`).
pub fn duration(secs: u64) -> String {
    format!("{secs}s")
}

/// A credential provider that sends no token (an emulator that checks none).
pub fn anonymous() -> GcpCredentialProvider {
    Arc::new(object_store::StaticCredentialProvider::new(
        object_store::gcp::GcpCredential {
            bearer: String::new(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use brizo_backend_core::ErrorClass;

    use super::classify;

    #[test]
    fn refusals_are_classed_by_status() {
        let class = |http, status| classify("x", http, status, "m").class();
        assert_eq!(class(429, "RESOURCE_EXHAUSTED"), ErrorClass::Transient);
        assert_eq!(class(503, "UNAVAILABLE"), ErrorClass::Transient);
        assert_eq!(class(500, "INTERNAL"), ErrorClass::Transient);
        assert_eq!(class(400, "RESOURCE_EXHAUSTED"), ErrorClass::Transient);
        assert_eq!(class(400, "INVALID_ARGUMENT"), ErrorClass::BadJob);
        assert_eq!(class(404, "NOT_FOUND"), ErrorClass::Missing);
        assert_eq!(class(403, "PERMISSION_DENIED"), ErrorClass::Unknown);
    }
}
