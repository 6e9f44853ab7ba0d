//! The v1 API, wire-compatible with Squid clients (`/api/v1/brizo`), and the embedded
//! metadata store on Aquarius' paths (`/api/v1/aquarius/assets/ddo`). Jobs started here run
//! in the same engine as v2 jobs, owned by the consumer's address.

use actix_web::{HttpResponse, delete, get, post, put, web};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::error::ApiError;
use crate::authorize::{self, ChainContext, StartRequest, required};
use crate::jobs::model::Holds;
use crate::jobs::{Engine, Job, Outcome};

pub const BASE: &str = "/api/v1/brizo";
pub const COMPUTE: &str = "/api/v1/brizo/services/compute";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(info)
        .service(start_compute)
        .service(compute_status)
        .service(stop_compute)
        .service(delete_compute)
        .service(result_output)
        .service(result_log)
        .service(result_key)
        .service(sample_file)
        .service(result_receipt)
        .service(encrypt)
        .service(publish_ddo)
        .service(get_ddo);
}

#[get("/api/v1/brizo")]
async fn info(ctx: web::Data<ChainContext>) -> HttpResponse {
    let mut body = json!({"software": "brizo-rs", "version": env!("CARGO_PKG_VERSION"), "keeper-version": "0.13.2"});
    if let Some(keeper) = &ctx.keeper {
        // Scheme, host and port only: node URLs often carry an API key in the path or userinfo.
        let shown = url::Url::parse(&keeper.url)
            .map(|u| {
                format!("{}://{}", u.scheme(), u.host_str().unwrap_or(""))
                    + &u.port().map(|p| format!(":{p}")).unwrap_or_default()
            })
            .unwrap_or_default();
        body["keeper-url"] = json!(shown);
        body["network"] = json!(keeper.network);
        // Checksummed, as Ocean tooling prints them.
        let contracts: serde_json::Map<String, Value> = keeper
            .addresses
            .0
            .iter()
            .map(|(k, v)| (k.clone(), json!(v.to_string())))
            .collect();
        body["contracts"] = Value::Object(contracts);
        body["provider-address"] = json!(keeper.address.to_string());
    }
    HttpResponse::Ok().json(body)
}

#[post("/api/v1/brizo/services/compute")]
async fn start_compute(
    ctx: web::Data<ChainContext>,
    engine: web::Data<Engine>,
    body: web::Json<StartRequest>,
) -> Result<HttpResponse, ApiError> {
    // One job per agreement: a repeated start (a client's retry, a replayed request) from the
    // agreement's signed consumer gets the job it already started; another run needs another
    // agreement. Looked up before the chain checks, which refuse a settled agreement.
    let consumer_text = required(&body.consumer_address, "consumerAddress")?;
    let agreement_text = required(&body.service_agreement_id, "serviceAgreementId")?;
    let consumer = authorize::parse_address(consumer_text)?;
    let agreement_id = authorize::parse_agreement_id(agreement_text)?;
    authorize::check_signature(
        consumer,
        &format!("{consumer_text}{agreement_text}"),
        required(&body.signature, "signature")?,
    )?;
    let owner = consumer.to_string().to_lowercase();
    let existing = engine
        .under_agreement(&owner, &agreement_id.to_string())
        .await?;
    if let Some(job) = existing.iter().find(|j| !j.removed) {
        return Ok(HttpResponse::Ok().json(json!({"jobId": job.id})));
    }
    let authorize::Authorized {
        mut request,
        record,
        requires_approval,
        review_outputs,
        ..
    } = authorize::authorize_start(&ctx, &body).await?;
    engine.check(&mut request).await.map_err(|e| match e {
        // A decrypted dataset location must not reach the consumer in an error.
        crate::jobs::EngineError::Invalid(detail) => {
            tracing::warn!(agreement = %record.agreement_id, "dataset not usable: {detail}");
            ApiError::BadRequest("the dataset's files or the algorithm cannot be used by this provider; the provider's log has the details".into())
        }
        other => other.into(),
    })?;
    // The compute condition is fulfilled only once the algorithm ran (at settlement): until
    // then the consumer can still get the price back if the job never runs.
    let job = engine
        .submit_under(
            &owner,
            request,
            Some(record),
            Holds {
                approval: requires_approval,
                release: review_outputs,
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(json!({"jobId": job.id})))
}

/// The query of GET/PUT/DELETE, as Squid sends it (jobId may be absent or empty).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobQuery {
    signature: Option<String>,
    service_agreement_id: Option<String>,
    consumer_address: Option<String>,
    job_id: Option<String>,
}

struct Caller {
    owner: String,
    agreement_id: String,
    job_id: Option<String>,
}

/// Signature over `consumerAddress + jobId + serviceAgreementId` (jobId empty when absent).
fn authenticate(q: &JobQuery) -> Result<Caller, ApiError> {
    let signature = required(&q.signature, "signature")?;
    let agreement_text = required(&q.service_agreement_id, "serviceAgreementId")?;
    let consumer_text = required(&q.consumer_address, "consumerAddress")?;
    let consumer = authorize::parse_address(consumer_text)?;
    let agreement_id = authorize::parse_agreement_id(agreement_text)?;
    let job_id = q.job_id.as_deref().map(str::trim).filter(|j| !j.is_empty());
    authorize::check_signature(
        consumer,
        &format!("{consumer_text}{}{agreement_text}", job_id.unwrap_or("")),
        signature,
    )?;
    Ok(Caller {
        owner: consumer.to_string().to_lowercase(),
        agreement_id: agreement_id.to_string(),
        job_id: job_id.map(str::to_string),
    })
}

/// The caller's jobs under the agreement (one, when a job id is given). Another consumer's
/// job, or one under another agreement, is "not found".
async fn jobs_of(engine: &Engine, caller: &Caller) -> Result<Vec<Job>, ApiError> {
    match &caller.job_id {
        None => Ok(engine
            .under_agreement(&caller.owner, &caller.agreement_id)
            .await?),
        // By id (the polled path: one read, usually from memory), then checked.
        Some(id) => match engine
            .under_agreement_by_id(&caller.owner, &caller.agreement_id, id)
            .await?
        {
            Some(job) => Ok(vec![job]),
            None => Err(ApiError::NotFound(format!(
                "no job {id} of this consumer under this agreement"
            ))),
        },
    }
}

async fn status_objects(engine: &Engine, jobs: &[Job]) -> Result<Value, ApiError> {
    let base = engine
        .config()
        .chain
        .public_url
        .trim_end_matches('/')
        .to_string();
    let waiting = engine.waiting_all(jobs).await?;
    Ok(Value::Array(
        jobs.iter()
            .map(|j| {
                let mut status = status_object(&base, j);
                let wait = waiting.get(&j.id);
                // Squid shows statusText: a job held for approval says so there too.
                match wait.map(|w| w.reason) {
                    Some(crate::jobs::model::WaitReason::Approval) => {
                        status["statusText"] = json!("Job waiting for the publisher's approval")
                    }
                    Some(crate::jobs::model::WaitReason::Review) => {
                        status["statusText"] = json!("Outputs waiting for the publisher's review")
                    }
                    _ => {}
                }
                status["waiting"] = consumer_waiting(wait);
                status
            })
            .collect(),
    ))
}

/// What the consumer's job waits for. A failed step's own words name the provider's
/// infrastructure (hosts, buckets), which are not the consumer's to see: they get that a step
/// failed on the provider's side and when it is tried again.
fn consumer_waiting(waiting: Option<&crate::jobs::model::Waiting>) -> Value {
    use crate::jobs::model::WaitReason;
    match waiting {
        None => Value::Null,
        Some(w) if w.reason == WaitReason::Retrying => json!({
            "reason": w.reason,
            "text": "a step failed on the provider's side (its engine or a store did not answer); it is tried again shortly",
        }),
        Some(w) => serde_json::to_value(w).expect("serializes"),
    }
}

/// The status object Squid clients read.
pub fn status_object(base: &str, job: &Job) -> Value {
    let agreement = job.agreement.as_ref();
    let results: Vec<String> = if job.phase.is_terminal() && !job.removed {
        job.outputs
            .iter()
            .map(|o| format!("{base}{COMPUTE}/results/{}/outputs/{}", job.id, o.name))
            .collect()
    } else {
        vec![]
    };
    let log_url = if job.date_started.is_some() && !job.removed && job.publishes_log() {
        format!("{base}{COMPUTE}/results/{}/logs", job.id)
    } else {
        String::new()
    };
    let stopreq = match (job.stop_requested, job.outcome) {
        (_, Some(Outcome::TimedOut)) => 2,
        (true, _) => 1,
        _ => 0,
    };
    json!({
        "agreementId": agreement.map(|a| a.agreement_id.trim_start_matches("0x").to_string()).unwrap_or_default(),
        "jobId": job.id,
        "owner": agreement.map(|a| a.consumer.clone()).unwrap_or_else(|| job.owner.clone()),
        "status": job.phase.code(),
        "statusText": job.phase.text(),
        "dateCreated": job.date_created,
        "dateFinished": job.date_finished,
        "algorithmLogUrl": log_url,
        "resultsUrl": results.first().cloned().unwrap_or_default(),
        "resultsUrls": results,
        "resultsDid": job.results_did.clone().unwrap_or_default(),
        "receiptUrl": if job.receipt.is_some() && !job.removed { format!("{base}{COMPUTE}/results/{}/receipt", job.id) } else { String::new() },
        // Results encrypted to the consumer: their sealed content key (docs/encryption.md).
        "resultsKeyUrl": if job.sealed.is_some() && !job.removed { format!("{base}{COMPUTE}/results/{}/key", job.id) } else { String::new() },
        "stopreq": stopreq,
        "removed": if job.removed { 1 } else { 0 },
        "outcome": job.outcome.map(|o| o.as_str()),
        "error": consumer_error(job),
        "settlement": job.settlement,
        "backend": job.backend,
    })
}

/// The reason a consumer may read. Staging errors of an agreement job name the dataset's
/// decrypted file locations, which a consumer must never see: they get a generic reason (the
/// provider's log has the details).
fn consumer_error(job: &Job) -> Option<String> {
    match job.phase {
        crate::jobs::Phase::DataProvisioningFailed if job.agreement.is_some() => Some(
            "a file of the dataset could not be provisioned; the provider's log has the details"
                .into(),
        ),
        _ => job.error.clone(),
    }
}

/// The caller of a v1 job request, authenticated. v1 jobs live under agreements: without a
/// chain there are none to show, and saying so beats an empty list.
fn v1_caller(ctx: &ChainContext, q: &JobQuery) -> Result<Caller, ApiError> {
    let caller = authenticate(q)?;
    ctx.chain()?;
    Ok(caller)
}

/// The answer of the v1 status, stop and delete requests: the caller's jobs (those of its agreement, or the one
/// it named) as they are now.
async fn caller_jobs(engine: &Engine, caller: &Caller) -> Result<HttpResponse, ApiError> {
    let jobs = jobs_of(engine, caller).await?;
    Ok(HttpResponse::Ok().json(status_objects(engine, &jobs).await?))
}

#[get("/api/v1/brizo/services/compute")]
async fn compute_status(
    ctx: web::Data<ChainContext>,
    engine: web::Data<Engine>,
    q: web::Query<JobQuery>,
) -> Result<HttpResponse, ApiError> {
    let caller = v1_caller(&ctx, &q)?;
    caller_jobs(&engine, &caller).await
}

#[put("/api/v1/brizo/services/compute")]
async fn stop_compute(
    ctx: web::Data<ChainContext>,
    engine: web::Data<Engine>,
    q: web::Query<JobQuery>,
) -> Result<HttpResponse, ApiError> {
    let caller = v1_caller(&ctx, &q)?;
    for job in jobs_of(&engine, &caller).await? {
        if !job.is_finished() && !job.removed {
            engine.stop(&job.id, Some(&caller.owner)).await?;
        }
    }
    caller_jobs(&engine, &caller).await
}

#[delete("/api/v1/brizo/services/compute")]
async fn delete_compute(
    ctx: web::Data<ChainContext>,
    engine: web::Data<Engine>,
    q: web::Query<JobQuery>,
) -> Result<HttpResponse, ApiError> {
    let caller = v1_caller(&ctx, &q)?;
    for job in jobs_of(&engine, &caller).await? {
        if !job.removed {
            engine.remove(&job.id, Some(&caller.owner)).await?;
        }
    }
    caller_jobs(&engine, &caller).await
}

/// Downloads for the job's consumer only: `consumerAddress` and a signature of
/// `consumerAddress + jobId` (either signature form).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DownloadQuery {
    signature: Option<String>,
    consumer_address: Option<String>,
}

async fn consumer_job(engine: &Engine, job_id: &str, q: &DownloadQuery) -> Result<Job, ApiError> {
    let signature = required(&q.signature, "signature")?;
    let consumer_text = required(&q.consumer_address, "consumerAddress")?;
    let consumer = authorize::parse_address(consumer_text)?;
    authorize::check_signature(consumer, &format!("{consumer_text}{job_id}"), signature)?;
    // The consumer, or an address the consumer whitelisted (`output.whitelist`).
    let caller = consumer.to_string().to_lowercase();
    let job = engine.get(job_id, None).await?;
    if job.owner != caller && !job.whitelist().contains(&caller) {
        return Err(ApiError::NotFound(format!("no job {job_id}")));
    }
    Ok(job)
}

#[get("/api/v1/brizo/services/compute/results/{job_id}/outputs/{name:.*}")]
async fn result_output(
    engine: web::Data<Engine>,
    path: web::Path<(String, String)>,
    q: web::Query<DownloadQuery>,
) -> Result<HttpResponse, ApiError> {
    let (job_id, name) = path.into_inner();
    let job = consumer_job(&engine, &job_id, &q).await?;
    super::stream_output(&engine, &job, &name).await
}

#[get("/api/v1/brizo/services/compute/results/{job_id}/logs")]
async fn result_log(
    engine: web::Data<Engine>,
    path: web::Path<String>,
    q: web::Query<DownloadQuery>,
) -> Result<HttpResponse, ApiError> {
    let job = consumer_job(&engine, &path, &q).await?;
    if !job.publishes_log() {
        return Err(ApiError::NotFound(format!(
            "job {} does not publish its log (output.publishAlgorithmLog)",
            job.id
        )));
    }
    // Encrypted to the consumer: the published ciphertext (the plaintext is not kept).
    if job.request.encrypt_to.is_some() {
        if !job.phase.is_terminal() {
            return Err(ApiError::Conflict(format!(
                "job {}'s log is encrypted to its consumer and published when the job ends",
                job.id
            )));
        }
        return super::stream_result(&engine, &job, "logs/algorithm.log").await;
    }
    let text = tokio::fs::read(engine.log_path(&job.id))
        .await
        .unwrap_or_default();
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(text))
}

/// A file of a dataset's public sample, for anyone to try an algorithm on before buying.
#[get("/api/v1/brizo/samples/{did}/{name}")]
async fn sample_file(
    engine: web::Data<Engine>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (did, name) = path.into_inner();
    let file =
        crate::assets::samples::SampleStore::new(&engine.config().data_dir).path(&did, &name)?;
    match tokio::fs::read(&file).await {
        Ok(bytes) => Ok(HttpResponse::Ok()
            .content_type("application/octet-stream")
            .body(bytes)),
        Err(_) => Err(ApiError::NotFound(format!(
            "{did} has no sample file {name:?}"
        ))),
    }
}

/// The content key of a job whose results are encrypted, sealed to the consumer (ECIES, as
/// PyPI eciespy opens it; docs/encryption.md).
#[get("/api/v1/brizo/services/compute/results/{job_id}/key")]
async fn result_key(
    engine: web::Data<Engine>,
    path: web::Path<String>,
    q: web::Query<DownloadQuery>,
) -> Result<HttpResponse, ApiError> {
    let job = consumer_job(&engine, &path, &q).await?;
    if job.sealed.is_none() {
        return Err(ApiError::NotFound(format!(
            "job {} has no encrypted results (yet)",
            job.id
        )));
    }
    super::stream_result(&engine, &job, "key.ecies").await
}

#[get("/api/v1/brizo/services/compute/results/{job_id}/receipt")]
async fn result_receipt(
    engine: web::Data<Engine>,
    path: web::Path<String>,
    q: web::Query<DownloadQuery>,
) -> Result<HttpResponse, ApiError> {
    let job = consumer_job(&engine, &path, &q).await?;
    let receipt = job
        .receipt
        .ok_or_else(|| ApiError::NotFound(format!("job {} has no receipt yet", job.id)))?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(receipt))
}

/// Encrypts a document (a dataset's files list) to the provider's key, for `encryptedFiles`.
#[post("/api/v1/brizo/services/encrypt")]
async fn encrypt(
    ctx: web::Data<ChainContext>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let (keeper, _) = ctx.chain()?;
    let document = match body.get("document") {
        Some(Value::String(s)) => s.clone(),
        Some(other) if !other.is_null() => other.to_string(),
        _ => {
            return Err(ApiError::BadRequest(
                "document is required (the files list to encrypt)".into(),
            ));
        }
    };
    let cipher = keeper.encrypt(document.as_bytes())?;
    Ok(HttpResponse::Ok().json(json!({"encryptedDocument": format!("0x{}", hex::encode(cipher)), "providerAddress": keeper.address.to_string()})))
}

#[post("/api/v1/aquarius/assets/ddo")]
async fn publish_ddo(
    ctx: web::Data<ChainContext>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let did = ctx.publish_ddo(&body).await?;
    Ok(HttpResponse::Created().json(json!({"id": did})))
}

#[get("/api/v1/aquarius/assets/ddo/{did}")]
async fn get_ddo(
    ctx: web::Data<ChainContext>,
    did: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    match ctx.ddo(&did).await? {
        Some(ddo) => Ok(HttpResponse::Ok().json(ddo)),
        None => Err(ApiError::NotFound(format!("no DDO for {did}"))),
    }
}
