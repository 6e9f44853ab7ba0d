//! The native operator API, `/api/v2`: bearer-token protected, described by OpenAPI at
//! `/api/v2/openapi.json` with a docs page at `/api/v2/docs/` (both open: they describe the
//! API and hold nothing of the publisher's).

use std::time::Duration;

use actix_web::{HttpResponse, delete, get, post, put, web};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use utoipa::{OpenApi, ToSchema};

use super::auth::Operator;
use crate::api::error::{ApiError, ErrorBody};
use crate::jobs::engine::AlgorithmReview;
use crate::jobs::model::{
    AlgorithmSource, Approval, ApprovalState, InputSource, PhaseTimings, WaitReason, Waiting,
};
use crate::jobs::{Engine, Job, JobRequest, Outcome, OutputFile, Phase};

/// Jobs created through v2 belong to the operator.
pub const OPERATOR: &str = "operator";

#[derive(OpenApi)]
#[openapi(
    info(title = "brizo operator API", description = "Run algorithms next to the data: jobs on the publisher's compute backend."),
    paths(create_job, list_jobs, get_job, job_logs, job_output, job_receipt, rerun_job, stop_job, delete_job, job_algorithm, approve_job, reject_job, held_outputs, held_output, release_outputs, withhold_outputs, put_sample, super::health::health),
    components(schemas(JobRequest, AlgorithmSource, InputSource, JobCreated, JobStatus, OutputFile, Outcome, Phase, PhaseTimings, Waiting, WaitReason, Approval, ApprovalState, AlgorithmReview, Decision, ErrorBody)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;
impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(create_job)
        .service(list_jobs)
        .service(get_job)
        .service(job_logs)
        .service(job_output)
        .service(stop_job)
        .service(job_algorithm)
        .service(approve_job)
        .service(reject_job)
        .service(held_outputs)
        .service(held_output)
        .service(release_outputs)
        .service(withhold_outputs)
        .service(put_sample)
        .service(delete_job)
        .service(job_receipt)
        .service(rerun_job)
        .service(openapi_json)
        .service(
            utoipa_swagger_ui::SwaggerUi::new("/api/v2/docs/{_:.*}")
                .url("/api/v2/docs/openapi.json", ApiDoc::openapi()),
        );
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobCreated {
    pub job_id: String,
}

/// A job as the operator sees it.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    pub job_id: String,
    /// Brizo status code: 10 started, 20 configuring volumes, 30 provisioned, 31/32
    /// provisioning failed, 40 running, 50 filtering, 60 publishing, 70 finished.
    pub status: i64,
    pub status_text: String,
    pub phase: Phase,
    /// Set once the algorithm has ended (or the job ended without running it).
    pub outcome: Option<Outcome>,
    pub exit_code: Option<i64>,
    /// Why the job failed, stopped or timed out, for people.
    pub error: Option<String>,
    pub image: String,
    /// Content digest of the image that ran.
    pub image_digest: Option<String>,
    pub timeout_seconds: u64,
    pub stop_requested: bool,
    pub date_created: f64,
    pub date_started: Option<f64>,
    pub date_finished: Option<f64>,
    /// Published outputs (present once the job finished).
    pub outputs: Vec<OutputFile>,
    pub timings: PhaseTimings,
    /// Hash of the signed receipt, once issued (`GET /api/v2/jobs/{id}/receipt`).
    pub receipt_hash: Option<String>,
    /// The results' own asset, when published as one (v1 jobs with `output.publishOutput`).
    pub results_did: Option<String>,
    /// The backend the job runs on, and why (data locality).
    pub backend: String,
    pub backend_reason: String,
    /// What the job waits for while it has not started running (a slot and its place in the
    /// queue, a backend that does not answer, a stop); absent once it runs or has ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<Waiting>,
    /// The publisher's decision, for a job whose dataset asks for approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    /// The publisher's release (`approved`) or withholding (`rejected`) of the outputs, for a
    /// job whose dataset reviews them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<Approval>,
}

/// The `hash` of a stored receipt, read without building the rest of it (a status poll
/// should not pay for a document of several kilobytes it does not show).
fn receipt_hash(receipt: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Hash {
        hash: Option<String>,
    }
    serde_json::from_str::<Hash>(receipt).ok()?.hash
}

impl From<Job> for JobStatus {
    fn from(job: Job) -> Self {
        let published = job.phase.is_terminal();
        JobStatus {
            status: job.phase.code(),
            status_text: job.phase.text().to_string(),
            phase: job.phase,
            outcome: job.outcome,
            exit_code: job.exit_code,
            error: job.error,
            image: job.request.image,
            image_digest: job.image_digest,
            timeout_seconds: job.timeout_secs,
            stop_requested: job.stop_requested,
            date_created: job.date_created,
            date_started: job.date_started,
            date_finished: job.date_finished,
            outputs: if published { job.outputs } else { vec![] },
            timings: job.timings,
            receipt_hash: job.receipt.as_deref().and_then(receipt_hash),
            results_did: job.results_did,
            backend: job.backend,
            backend_reason: job.backend_reason,
            waiting: None,
            approval: job.approval,
            release: job.release,
            job_id: job.id,
        }
    }
}

/// Submit a job. Everything is checked before it is recorded: a refused request leaves nothing.
#[utoipa::path(request_body = JobRequest, responses(
    (status = 201, body = JobCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody, description = "the backend does not answer; nothing was recorded")))]
#[post("/api/v2/jobs")]
async fn create_job(
    _: Operator,
    engine: web::Data<Engine>,
    body: web::Json<JobRequest>,
) -> Result<HttpResponse, ApiError> {
    if body.network && !engine.config().limits.allow_network {
        return Err(ApiError::BadRequest(
            "network access for jobs is off on this service (limits.allow_network)".into(),
        ));
    }
    let job = engine.submit(OPERATOR, body.into_inner()).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v2/jobs/{}", job.id)))
        .json(JobCreated { job_id: job.id }))
}

/// All jobs, newest first (at most 1000).
#[utoipa::path(responses((status = 200, body = Vec<JobStatus>), (status = 401, body = ErrorBody)))]
#[get("/api/v2/jobs")]
async fn list_jobs(_: Operator, engine: web::Data<Engine>) -> Result<HttpResponse, ApiError> {
    let jobs = engine.list(None).await?;
    let mut waiting = engine.waiting_all(&jobs).await?;
    let jobs: Vec<JobStatus> = jobs
        .into_iter()
        .map(|job| {
            let wait = waiting.remove(&job.id);
            JobStatus {
                waiting: wait,
                ..JobStatus::from(job)
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(jobs))
}

#[utoipa::path(params(("id" = String, Path)), responses(
    (status = 200, body = JobStatus), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[get("/api/v2/jobs/{id}")]
async fn get_job(
    _: Operator,
    engine: web::Data<Engine>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let job = engine.get(&id, None).await?;
    let waiting = engine.waiting(&job).await?;
    Ok(HttpResponse::Ok().json(JobStatus {
        waiting,
        ..JobStatus::from(job)
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
struct LogsQuery {
    /// Keep the response open and send new lines until the job ends.
    #[serde(default)]
    follow: bool,
}

/// The algorithm's stdout and stderr, readable while it runs.
#[utoipa::path(params(("id" = String, Path), LogsQuery), responses(
    (status = 200, content_type = "text/plain", description = "log text"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[get("/api/v2/jobs/{id}/logs")]
async fn job_logs(
    _: Operator,
    engine: web::Data<Engine>,
    id: web::Path<String>,
    q: web::Query<LogsQuery>,
) -> Result<HttpResponse, ApiError> {
    let job = engine.get(&id, None).await?;
    let path = engine.log_path(&job.id);
    if !q.follow {
        let text = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
            Err(e) => return Err(ApiError::Internal(format!("reading the log: {e}"))),
        };
        return Ok(HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body(text));
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .streaming(follow_log(engine.into_inner(), job.id, path)))
}

/// Tails the log file until the job has left the running phase and the file is drained.
pub(crate) fn follow_log(
    engine: std::sync::Arc<Engine>,
    id: String,
    path: std::path::PathBuf,
) -> impl futures::Stream<Item = Result<Bytes, actix_web::Error>> {
    struct Tail {
        engine: std::sync::Arc<Engine>,
        id: String,
        path: std::path::PathBuf,
        offset: u64,
        done: bool,
    }
    futures::stream::unfold(
        Tail {
            engine,
            id,
            path,
            offset: 0,
            done: false,
        },
        |mut t| async move {
            loop {
                if t.done {
                    return None;
                }
                let mut chunk = vec![];
                if let Ok(mut f) = tokio::fs::File::open(&t.path).await {
                    let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
                    if len < t.offset {
                        // Rewritten from the start after a re-attach: the beginning was sent already.
                        t.offset = len;
                    }
                    if f.seek(std::io::SeekFrom::Start(t.offset)).await.is_ok() {
                        let _ = f.take(256 * 1024).read_to_end(&mut chunk).await;
                    }
                }
                if !chunk.is_empty() {
                    t.offset += chunk.len() as u64;
                    return Some((Ok(Bytes::from(chunk)), t));
                }
                let running = match t.engine.get(&t.id, None).await {
                    Ok(job) => matches!(
                        job.phase,
                        Phase::Queued | Phase::Staging | Phase::Provisioned | Phase::Running
                    ),
                    Err(_) => false,
                };
                if !running {
                    // One last read after the run ended catches lines written meanwhile.
                    t.done = true;
                    let mut rest = vec![];
                    if let Ok(mut f) = tokio::fs::File::open(&t.path).await
                        && f.seek(std::io::SeekFrom::Start(t.offset)).await.is_ok()
                    {
                        let _ = f.read_to_end(&mut rest).await;
                    }
                    if rest.is_empty() {
                        return None;
                    }
                    return Some((Ok(Bytes::from(rest)), t));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        },
    )
}

/// One published output file, streamed from the results store.
#[utoipa::path(params(("id" = String, Path), ("name" = String, Path, description = "path relative to /data/outputs")), responses(
    (status = 200, content_type = "application/octet-stream", description = "the file"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[get("/api/v2/jobs/{id}/outputs/{name:.*}")]
async fn job_output(
    _: Operator,
    engine: web::Data<Engine>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, name) = path.into_inner();
    let job = engine.get(&id, None).await?;
    super::stream_output(&engine, &job, &name).await
}

/// The job's signed receipt (proof of computation), once the job finished.
#[utoipa::path(params(("id" = String, Path)), responses(
    (status = 200, content_type = "application/json", description = "the signed receipt (docs/receipt.md)"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[get("/api/v2/jobs/{id}/receipt")]
async fn job_receipt(
    _: Operator,
    engine: web::Data<Engine>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let job = engine.get(&id, None).await?;
    let receipt = job.receipt.ok_or_else(|| {
        ApiError::NotFound(format!(
            "job {id} has no receipt yet (it is issued once the job finished)"
        ))
    })?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(receipt))
}

/// Run a finished job again (same request, image pinned to the digest that ran), for audits.
#[utoipa::path(params(("id" = String, Path)), responses(
    (status = 201, body = JobCreated), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[post("/api/v2/jobs/{id}/rerun")]
async fn rerun_job(
    _: Operator,
    engine: web::Data<Engine>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let job = engine.rerun(&id).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v2/jobs/{}", job.id)))
        .json(JobCreated { job_id: job.id }))
}

/// Kill the job's run; the job ends as `stopped` (its logs and partial outputs are kept).
#[utoipa::path(params(("id" = String, Path)), responses(
    (status = 200, body = JobStatus), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "already finished")))]
#[post("/api/v2/jobs/{id}/stop")]
async fn stop_job(
    _: Operator,
    engine: web::Data<Engine>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(JobStatus::from(engine.stop(&id, None).await?)))
}

/// What a job would run, for the publisher to review before approving it: the algorithm's
/// code (when it is text), its sha256, the image and entrypoint, the consumer and agreement.
#[utoipa::path(params(("id" = String, Path)), responses(
    (status = 200, body = AlgorithmReview), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "the algorithm cannot be read")))]
#[get("/api/v2/jobs/{id}/algorithm")]
async fn job_algorithm(
    _: Operator,
    engine: web::Data<Engine>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(engine.review(&id).await?))
}

/// Who decides and, for a rejection, why (the consumer reads it).
#[derive(Deserialize, Serialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Decision {
    /// Who decides, for the record and the receipt (default "operator").
    #[serde(default)]
    pub by: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

fn decider(d: &Option<web::Json<Decision>>) -> String {
    d.as_ref()
        .and_then(|d| d.by.clone())
        .map(|b| b.trim().to_string())
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "operator".into())
}

/// Why, for a rejection or a withholding (empty: the engine records "no reason given").
fn reason(d: &Option<web::Json<Decision>>) -> String {
    d.as_ref()
        .and_then(|d| d.reason.clone())
        .unwrap_or_default()
}

/// Approve a job waiting for approval: it runs, with exactly the algorithm reviewed (its
/// sha256 is recorded, and a different one fails the job). 409 when it is not waiting for
/// approval or its agreement expired meanwhile (it then ends without running).
#[utoipa::path(params(("id" = String, Path)), request_body(content = Decision, description = "optional"), responses(
    (status = 200, body = JobStatus), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[post("/api/v2/jobs/{id}/approve")]
async fn approve_job(
    _: Operator,
    engine: web::Data<Engine>,
    id: web::Path<String>,
    body: Option<web::Json<Decision>>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(JobStatus::from(engine.approve(&id, &decider(&body)).await?)))
}

/// Reject a job waiting for approval: it ends without running, with the reason; the consumer
/// is not charged (refunded after the agreement's time-out).
#[utoipa::path(params(("id" = String, Path)), request_body(content = Decision, description = "optional"), responses(
    (status = 200, body = JobStatus), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[post("/api/v2/jobs/{id}/reject")]
async fn reject_job(
    _: Operator,
    engine: web::Data<Engine>,
    id: web::Path<String>,
    body: Option<web::Json<Decision>>,
) -> Result<HttpResponse, ApiError> {
    let reason = reason(&body);
    let job = engine.reject(&id, &decider(&body), &reason).await?;
    Ok(HttpResponse::Ok().json(JobStatus::from(job)))
}

/// The outputs of a job held for review (its dataset reviews outputs): names, sizes, sha256.
#[utoipa::path(params(("id" = String, Path)), responses(
    (status = 200, body = Vec<OutputFile>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "nothing held")))]
#[get("/api/v2/jobs/{id}/held")]
async fn held_outputs(
    _: Operator,
    engine: web::Data<Engine>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(engine.held_outputs(&id).await?))
}

/// One held output's content, for the publisher's review (never the consumer's).
#[utoipa::path(params(("id" = String, Path), ("name" = String, Path, description = "path relative to /data/outputs")), responses(
    (status = 200, content_type = "application/octet-stream", description = "the file"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[get("/api/v2/jobs/{id}/held/{name:.*}")]
async fn held_output(
    _: Operator,
    engine: web::Data<Engine>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    use std::os::unix::fs::OpenOptionsExt;
    let (id, name) = path.into_inner();
    let file = engine.held_output(&id, &name).await?;
    // Never through a link, whatever the folder holds.
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&file)
        .map_err(|e| ApiError::NotFound(format!("held output {name:?}: {e}")))?;
    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(opened));
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .streaming(stream))
}

/// Release the held outputs: they are published and the job goes on (and is paid).
#[utoipa::path(params(("id" = String, Path)), request_body(content = Decision, description = "optional"), responses(
    (status = 200, body = JobStatus), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[post("/api/v2/jobs/{id}/release")]
async fn release_outputs(
    _: Operator,
    engine: web::Data<Engine>,
    id: web::Path<String>,
    body: Option<web::Json<Decision>>,
) -> Result<HttpResponse, ApiError> {
    let job = engine.release_outputs(&id, &decider(&body)).await?;
    Ok(HttpResponse::Ok().json(JobStatus::from(job)))
}

/// Withhold the held outputs: nothing is published (not the log either), the job fails with
/// the reason, and the consumer is not charged.
#[utoipa::path(params(("id" = String, Path)), request_body(content = Decision, description = "optional"), responses(
    (status = 200, body = JobStatus), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[post("/api/v2/jobs/{id}/withhold")]
async fn withhold_outputs(
    _: Operator,
    engine: web::Data<Engine>,
    id: web::Path<String>,
    body: Option<web::Json<Decision>>,
) -> Result<HttpResponse, ApiError> {
    let reason = reason(&body);
    let job = engine
        .withhold_outputs(&id, &decider(&body), &reason)
        .await?;
    Ok(HttpResponse::Ok().json(JobStatus::from(job)))
}

/// Upload a file of a dataset's public sample (declared in its DDO with its sha256): anyone
/// may then download it (`GET /api/v1/brizo/samples/{did}/{name}`) to try an algorithm before
/// buying. It is what is uploaded, never derived from the dataset's files.
#[utoipa::path(params(("did" = String, Path), ("name" = String, Path)), request_body(content = Vec<u8>, content_type = "application/octet-stream"), responses(
    (status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 413, description = "over inputs.max_sample_kb")))]
#[put("/api/v2/samples/{did}/{name}")]
async fn put_sample(
    _: Operator,
    engine: web::Data<Engine>,
    path: web::Path<(String, String)>,
    mut body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    use futures::StreamExt;
    let (did, name) = path.into_inner();
    let limit = (engine.config().inputs.max_sample_kb * 1024) as usize;
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("reading the body: {e}")))?;
        if bytes.len() + chunk.len() > limit {
            return Err(ApiError::BadRequest(format!(
                "the sample file is larger than {} KiB (inputs.max_sample_kb)",
                limit / 1024
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    crate::assets::samples::SampleStore::new(&engine.config().data_dir)
        .put(&did, &name, &bytes)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Stop the job if it runs and remove its container, folder, logs and results.
#[utoipa::path(params(("id" = String, Path)), responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[delete("/api/v2/jobs/{id}")]
async fn delete_job(
    _: Operator,
    engine: web::Data<Engine>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    engine.remove(&id, None).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[get("/api/v2/openapi.json")]
async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
