//! The dashboard's data: what each view shows, as JSON for its page (behind a session), and
//! its actions (behind a session and its CSRF token).

use std::time::Duration;

use actix_web::{HttpResponse, get, post, web};
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Action, Session};
use crate::api::error::ApiError;
use crate::api::v2::JobStatus;
use crate::jobs::Engine;
use crate::jobs::store::JobFilter;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(job_list)
        .service(job_detail)
        .service(job_log)
        .service(job_algorithm)
        .service(output_file)
        .service(held_output)
        .service(act)
        .service(live_events)
        .service(backend_list)
        .service(asset_list)
        .service(chart_stats);
}

#[derive(Deserialize)]
struct JobsQuery {
    phase: Option<String>,
    outcome: Option<String>,
    backend: Option<String>,
    consumer: Option<String>,
    before: Option<f64>,
    limit: Option<i64>,
}

fn nonempty(s: &Option<String>) -> Option<String> {
    s.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// A page of jobs, newest first, filtered; `next` is the cursor of the page after it.
#[get("/ui/api/jobs")]
async fn job_list(
    _: Session,
    engine: web::Data<Engine>,
    q: web::Query<JobsQuery>,
) -> Result<HttpResponse, ApiError> {
    let status = match nonempty(&q.phase) {
        Some(p) => Some(
            crate::jobs::Phase::from_name(&p)
                .ok_or_else(|| ApiError::BadRequest(format!("no phase {p:?}")))?
                .code(),
        ),
        None => None,
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 200);
    let filter = JobFilter {
        status,
        outcome: nonempty(&q.outcome),
        backend: nonempty(&q.backend),
        owner: nonempty(&q.consumer).map(|c| c.to_lowercase()),
        before: q.before,
        limit,
    };
    let page = engine.page(&filter).await?;
    let mut waiting = engine.waiting_all(&page).await?;
    let next = (page.len() as i64 == limit)
        .then(|| page.last().map(|j| j.date_created))
        .flatten();
    let rows: Vec<Value> = page
        .into_iter()
        .map(|job| {
            let wait = waiting.remove(&job.id);
            let consumer = job
                .agreement
                .as_ref()
                .map(|a| a.consumer.clone())
                .unwrap_or_else(|| job.owner.clone());
            let mut row = serde_json::to_value(JobStatus {
                waiting: wait,
                ..JobStatus::from(job)
            })
            .expect("serializes");
            row["consumer"] = json!(consumer);
            row
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"jobs": rows, "next": next})))
}

/// Everything about one job: its status, timeline, routing, agreement and settlement, and its
/// receipt with the verification done here.
#[get("/ui/api/jobs/{id}")]
async fn job_detail(
    _: Session,
    engine: web::Data<Engine>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let job = engine.get(&id, None).await?;
    let waiting = engine.waiting(&job).await?;
    let verification = match &job.receipt {
        Some(text) => Some(verify(&engine, &job, text).await),
        None => None,
    };
    let receipt: Option<Value> = job
        .receipt
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok());
    let body = json!({
        "job": JobStatus { waiting, ..JobStatus::from(job.clone()) },
        "consumer": job.agreement.as_ref().map(|a| a.consumer.clone()).unwrap_or_else(|| job.owner.clone()),
        "agreement": job.agreement,
        "settlement": job.settlement,
        "entrypoint": job.request.entrypoint,
        "algorithmDid": job.request.algorithm.did,
        "receipt": receipt,
        "verification": verification,
    });
    Ok(HttpResponse::Ok().json(body))
}

/// The receipt's checks, each passed or failed with why: the signature and hash, each
/// published output and the log against what the results store holds, the anchor on chain.
async fn verify(engine: &Engine, job: &crate::jobs::Job, text: &str) -> Vec<Value> {
    use crate::proof::verify;
    let mut checks = vec![];
    let signed: crate::proof::receipt::SignedReceipt = match serde_json::from_str(text) {
        Ok(s) => s,
        Err(e) => return vec![json!({"check": "receipt", "ok": false, "detail": e.to_string()})],
    };
    let provider = engine.keeper.as_ref().map(|k| k.signer().address());
    checks.push(match verify::check_signature(&signed, provider) {
        Ok(()) => json!({"check": "signature", "ok": true, "detail": format!("hash {} signed by {}", signed.hash, signed.receipt.provider)}),
        Err(e) => json!({"check": "signature", "ok": false, "detail": e.to_string()}),
    });
    for output in &signed.receipt.outputs {
        let stored = digest_stored(engine, &job.id, &format!("outputs/{}", output.name)).await;
        checks.push(match stored {
            Ok(sha) if sha == output.sha256 => json!({"check": format!("output {}", output.name), "ok": true, "detail": format!("sha256 {sha}")}),
            Ok(sha) => json!({"check": format!("output {}", output.name), "ok": false, "detail": format!("stored sha256 {sha}, receipt says {}", output.sha256)}),
            Err(e) => json!({"check": format!("output {}", output.name), "ok": false, "detail": e}),
        });
    }
    if let Some(logs) = &signed.receipt.logs {
        checks.push(match digest_stored(engine, &job.id, "logs/algorithm.log").await {
            Ok(sha) if sha == logs.sha256 => json!({"check": "log", "ok": true, "detail": format!("sha256 {sha}")}),
            Ok(sha) => json!({"check": "log", "ok": false, "detail": format!("stored sha256 {sha}, receipt says {}", logs.sha256)}),
            Err(e) => json!({"check": "log", "ok": false, "detail": e}),
        });
    }
    if let (Some(keeper), Some(_)) = (&engine.keeper, &signed.anchor) {
        let registry = keeper.addresses.get("DIDRegistry");
        checks.push(match registry {
            Ok(registry) => match verify::check_anchor(&signed, &keeper.provider, registry).await {
                Ok(()) => json!({"check": "chain anchor", "ok": true, "detail": "DIDRegistry holds the receipt's hash"}),
                Err(e) => json!({"check": "chain anchor", "ok": false, "detail": e.to_string()}),
            },
            Err(e) => json!({"check": "chain anchor", "ok": false, "detail": e.to_string()}),
        });
    }
    checks
}

async fn digest_stored(engine: &Engine, job_id: &str, rel: &str) -> Result<String, String> {
    use sha2::Digest as _;
    let got = engine
        .results
        .get(job_id, rel)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{rel} is not in the results store"))?;
    let mut stream = got.into_stream();
    let mut hash = sha2::Sha256::new();
    while let Some(chunk) = stream.next().await {
        hash.update(chunk.map_err(|e| e.to_string())?);
    }
    Ok(hex::encode(hash.finalize()))
}

/// The job's log as server-sent events, one event per line, following it while it runs.
#[get("/ui/api/jobs/{id}/log")]
async fn job_log(
    _: Session,
    engine: web::Data<Engine>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let job = engine.get(&id, None).await?;
    let path = engine.log_path(&job.id);
    let mut pending = String::new();
    let lines = crate::api::v2::follow_log(engine.into_inner(), job.id, path)
        .map(move |chunk| {
            let chunk = chunk?;
            pending.push_str(&String::from_utf8_lossy(&chunk));
            let mut out = String::new();
            while let Some(i) = pending.find('\n') {
                let line: String = pending.drain(..=i).collect();
                out.push_str(&sse("line", &json!(line.trim_end_matches('\n'))));
            }
            Ok::<_, actix_web::Error>(Bytes::from(out))
        })
        .chain(futures::stream::once(async {
            Ok(Bytes::from(sse("end", &json!("the job's log ended"))))
        }));
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(lines))
}

fn sse(event: &str, data: &Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

/// A published output, for downloading it from the page.
#[get("/ui/api/jobs/{id}/outputs/{name:.*}")]
async fn output_file(
    _: Session,
    engine: web::Data<Engine>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, name) = path.into_inner();
    let job = engine.get(&id, None).await?;
    crate::api::stream_output(&engine, &job, &name).await
}

/// What a job would run, for approving it (code, sha256, image, consumer).
#[get("/ui/api/jobs/{id}/algorithm")]
async fn job_algorithm(
    _: Session,
    engine: web::Data<Engine>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(engine.review(&id).await?))
}

/// A held output's content, for reviewing it (shown as text by the page).
#[get("/ui/api/jobs/{id}/held/{name:.*}")]
async fn held_output(
    _: Session,
    engine: web::Data<Engine>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, name) = path.into_inner();
    let file = engine.held_output(&id, &name).await?;
    let bytes = tokio::fs::read(&file)
        .await
        .map_err(|e| ApiError::NotFound(format!("{name}: {e}")))?;
    let shown = &bytes[..bytes.len().min(64 * 1024)];
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(String::from_utf8_lossy(shown).into_owned()))
}

#[derive(Deserialize, Default)]
struct ActionBody {
    reason: Option<String>,
}

/// The buttons: stop, delete, rerun, approve, reject, release, withhold.
#[post("/ui/api/jobs/{id}/{action}")]
async fn act(
    _: Action,
    engine: web::Data<Engine>,
    path: web::Path<(String, String)>,
    body: Option<web::Json<ActionBody>>,
) -> Result<HttpResponse, ApiError> {
    let (id, action) = path.into_inner();
    let reason = body.and_then(|b| b.reason.clone()).unwrap_or_default();
    let by = "dashboard";
    let result = match action.as_str() {
        "stop" => engine.stop(&id, None).await.map(|j| json!({"jobId": j.id})),
        "delete" => engine.remove(&id, None).await.map(|_| json!({"jobId": id})),
        "rerun" => engine.rerun(&id).await.map(|j| json!({"jobId": j.id})),
        "approve" => engine
            .approve(&id, by)
            .await
            .map(|j| json!({"jobId": j.id})),
        "reject" => engine
            .reject(&id, by, &reason)
            .await
            .map(|j| json!({"jobId": j.id})),
        "release" => engine
            .release_outputs(&id, by)
            .await
            .map(|j| json!({"jobId": j.id})),
        "withhold" => engine
            .withhold_outputs(&id, by, &reason)
            .await
            .map(|j| json!({"jobId": j.id})),
        other => return Err(ApiError::NotFound(format!("no action {other:?}"))),
    };
    Ok(HttpResponse::Ok().json(result?))
}

/// Server-sent events: `jobs` whenever any job changed (the page then refreshes what it
/// shows), checked every second.
#[get("/ui/api/events")]
async fn live_events(_: Session, engine: web::Data<Engine>) -> HttpResponse {
    let engine = engine.into_inner();
    let stream = futures::stream::unfold((engine, String::new()), |(engine, last)| async move {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let now = engine.fingerprint().await.unwrap_or_default();
        if now != last {
            let event = sse("jobs", &json!(now));
            return Some((Ok::<_, actix_web::Error>(Bytes::from(event)), (engine, now)));
        }
        // A comment now and then keeps proxies from closing the stream.
        Some((Ok(Bytes::from_static(b": still here\n\n")), (engine, last)))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(stream)
}

/// Each backend: whether it answers, what it can do, its running and queued jobs.
#[get("/ui/api/backends")]
async fn backend_list(_: Session, engine: web::Data<Engine>) -> Result<HttpResponse, ApiError> {
    let unfinished = engine.unfinished().await?;
    let checked = engine.health().await;
    let mut out = vec![];
    for (name, backend) in &engine.backends {
        let health = match checked.backend(name) {
            Ok(()) => "ok".to_string(),
            Err(e) => e,
        };
        let of = |phases: &[crate::jobs::Phase]| {
            unfinished
                .iter()
                .filter(|j| &j.backend == name && phases.contains(&j.phase))
                .count()
        };
        use crate::jobs::Phase::*;
        let c = backend.capabilities();
        out.push(json!({
            "name": name, "kind": backend.name(), "health": health,
            "running": of(&[Running]), "queued": of(&[Queued, Staging, Provisioned]),
            "finishing": of(&[Filtering, Publishing]),
            "capacity": engine.config().max_running_jobs,
            "isolatesNetwork": c.isolates_network, "fetches": c.fetches, "backstop": c.backstop,
            "default": &engine.config().backend == name,
        }));
    }
    Ok(HttpResponse::Ok().json(out))
}

/// The datasets and algorithms in the metadata store, with their policies.
#[get("/ui/api/assets")]
async fn asset_list(_: Session, engine: web::Data<Engine>) -> Result<HttpResponse, ApiError> {
    use crate::assets::ddo;
    let docs = engine
        .metadata
        .list(500)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let rows: Vec<Value> = docs
        .iter()
        .map(|d| {
            let main = ddo::service(d, "metadata").and_then(|s| s.pointer("/attributes/main"));
            let kind = main.and_then(|m| m["type"].as_str()).unwrap_or("?");
            let policy = ddo::compute_policy(d).ok().map(|p| {
                json!({"price": p.price.to_string(), "timeoutSeconds": p.timeout_secs,
                       "allowRawAlgorithm": p.allow_raw_algorithm, "trustedAlgorithms": p.trusted_algorithms,
                       "allowNetworkAccess": p.allow_network_access, "requiresApproval": p.requires_approval,
                       "reviewOutputs": p.review_outputs, "encryptResults": p.encrypt_results,
                       "supportedContainers": p.supported_containers, "sample": ddo::sample_files(d)})
            });
            json!({"did": d["id"], "type": kind, "name": main.and_then(|m| m["name"].as_str()),
                   "author": main.and_then(|m| m["author"].as_str()), "policy": policy})
        })
        .collect();
    Ok(HttpResponse::Ok().json(rows))
}

/// For the charts: jobs finished per hour and outcome over the last day, and the mean time
/// of each phase over the last 200 finished jobs.
#[get("/ui/api/stats")]
async fn chart_stats(_: Session, engine: web::Data<Engine>) -> Result<HttpResponse, ApiError> {
    let since = crate::jobs::model::now_epoch() - 24.0 * 3600.0;
    let (per_hour, timings) = engine.stats(since).await?;
    let mean = |f: fn(&crate::jobs::model::PhaseTimings) -> Option<u64>| {
        let v: Vec<u64> = timings.iter().filter_map(f).collect();
        if v.is_empty() {
            0
        } else {
            v.iter().sum::<u64>() / v.len() as u64
        }
    };
    let phases = json!([
        {"phase": "queued", "ms": mean(|t| t.queued_ms)},
        {"phase": "staging", "ms": mean(|t| t.staging_ms)},
        {"phase": "starting", "ms": mean(|t| t.starting_ms)},
        {"phase": "running", "ms": mean(|t| t.running_ms)},
        {"phase": "filtering", "ms": mean(|t| t.filtering_ms)},
        {"phase": "publishing", "ms": mean(|t| t.publishing_ms)},
        {"phase": "cleanup", "ms": mean(|t| t.cleanup_ms)},
    ]);
    let hours: Vec<Value> = per_hour
        .into_iter()
        .map(|(hour, outcome, n)| json!({"hour": hour, "outcome": outcome, "count": n}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"perHour": hours, "phases": phases})))
}
