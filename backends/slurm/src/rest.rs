//! slurmrestd's REST API, OpenAPI plugin v0.0.38 (Slurm 22.05): submit, job state, list,
//! cancel, ping. Authenticated per request by a JWT (`X-SLURM-USER-NAME`, `X-SLURM-USER-TOKEN`).

use std::path::PathBuf;
use std::time::Duration;

use brizo_backend_core::BackendError;
use serde::Deserialize;
use serde_json::{Value, json};

const API: &str = "slurm/v0.0.38";
/// slurmrestd's error number for a job id it does not know (finished longer ago than
/// `MinJobAge`, or never there).
const INVALID_JOB_ID: i64 = 2017;

pub struct Rest {
    http: reqwest::Client,
    base: String,
    user: String,
    token: Token,
}

/// The JWT, given in the settings or read from a file at each request (so that a rotated
/// token is picked up without a restart). Never logged.
pub enum Token {
    Value(String),
    File(PathBuf),
}

#[derive(Debug, Clone, Deserialize)]
pub struct Job {
    pub job_id: u64,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub comment: String,
    #[serde(default)]
    pub job_state: String,
    /// A wait status: the exit code is `>> 8`, a signal the low 7 bits.
    #[serde(default)]
    pub exit_code: i64,
    #[serde(default)]
    pub state_reason: String,
    /// How often Slurm requeued the job (after a node failure).
    #[serde(default)]
    pub restart_cnt: u64,
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    errors: Vec<ApiError>,
    #[serde(default)]
    jobs: Vec<Job>,
    #[serde(default)]
    job_id: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct ApiError {
    #[serde(default)]
    error_number: i64,
    #[serde(default)]
    error: String,
    #[serde(default)]
    description: String,
}

impl Rest {
    pub fn new(url: &str, user: &str, token: Token) -> Result<Self, BackendError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .no_proxy()
            .build()
            .map_err(|e| BackendError::invalid_spec("HTTP client for slurmrestd").because(e))?;
        Ok(Self {
            http,
            base: url.trim_end_matches('/').to_string(),
            user: user.to_string(),
            token,
        })
    }

    fn token(&self) -> Result<String, BackendError> {
        match &self.token {
            Token::Value(t) => Ok(t.clone()),
            Token::File(path) => std::fs::read_to_string(path)
                .map(|t| t.trim().to_string())
                .map_err(|e| {
                    BackendError::unavailable(format!(
                        "the slurmrestd token file {}",
                        path.display()
                    ))
                    .because(e)
                }),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Answer, BackendError> {
        let url = format!("{}/{API}/{path}", self.base);
        let mut request = self
            .http
            .request(method, &url)
            .header("X-SLURM-USER-NAME", &self.user)
            .header("X-SLURM-USER-TOKEN", self.token()?);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| {
            BackendError::unavailable(format!("slurmrestd at {}", self.base)).because(e)
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| {
            BackendError::unavailable(format!("slurmrestd at {}", self.base)).because(e)
        })?;
        let answer: Answer = serde_json::from_str(&text).map_err(|e| {
            BackendError::other(format!(
                "slurmrestd answered {status} with something that is not its JSON: {}",
                text.chars().take(200).collect::<String>()
            ))
            .because(e)
        })?;
        if !status.is_success() || !answer.errors.is_empty() {
            return Err(api_error(status, &answer.errors));
        }
        Ok(answer)
    }

    pub async fn ping(&self) -> Result<(), BackendError> {
        self.call(reqwest::Method::GET, "ping", None)
            .await
            .map(|_| ())
    }

    /// Submits a batch script; the Slurm job id.
    pub async fn submit(&self, script: &str, job: Value) -> Result<u64, BackendError> {
        let answer = self
            .call(
                reqwest::Method::POST,
                "job/submit",
                Some(json!({ "script": script, "job": job })),
            )
            .await?;
        answer
            .job_id
            .ok_or_else(|| BackendError::other("slurmrestd accepted the job but named no job id"))
    }

    /// The job, or `None` when Slurm does not know it (any more).
    pub async fn job(&self, id: &str) -> Result<Option<Job>, BackendError> {
        match self
            .call(reqwest::Method::GET, &format!("job/{id}"), None)
            .await
        {
            Ok(answer) => Ok(answer.jobs.into_iter().next()),
            Err(BackendError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn jobs(&self) -> Result<Vec<Job>, BackendError> {
        Ok(self.call(reqwest::Method::GET, "jobs", None).await?.jobs)
    }

    /// Cancels the job (SIGTERM to its processes, SIGKILL after `KillWait`); not an error for
    /// a job that already ended or that Slurm forgot.
    pub async fn cancel(&self, id: &str) -> Result<(), BackendError> {
        match self
            .call(reqwest::Method::DELETE, &format!("job/{id}"), None)
            .await
        {
            Ok(_) | Err(BackendError::NotFound { .. }) => Ok(()),
            // "Job/step already completing or completed".
            Err(e) if e.to_string().contains("already complet") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn api_error(status: reqwest::StatusCode, errors: &[ApiError]) -> BackendError {
    if errors.iter().any(|e| e.error_number == INVALID_JOB_ID) {
        return BackendError::not_found("(a Slurm job id)");
    }
    let words: Vec<String> = errors
        .iter()
        .map(|e| {
            if e.description.is_empty() {
                e.error.clone()
            } else {
                format!("{}: {}", e.error, e.description)
            }
        })
        .collect();
    let words = if words.is_empty() {
        "no reason given".to_string()
    } else {
        words.join("; ")
    };
    if status.is_server_error() && errors.iter().all(|e| e.description.is_empty()) {
        // slurmrestd answers a bad or expired token with a bare 500, not 401.
        return BackendError::unavailable(format!(
            "slurmrestd answered {status} ({words}); if this persists, check the backend's user and token (`scontrol token`)"
        ));
    }
    BackendError::other(format!("slurmrestd answered {status}: {words}"))
}
