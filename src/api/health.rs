//! Liveness (open, for load balancers and probes) and Prometheus metrics (behind the operator
//! token: job counts and latencies are the publisher's business; Prometheus sends it with
//! `authorization: {credentials: ...}`).

use actix_web::{HttpResponse, get, web};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use super::auth::Operator;
use crate::jobs::Engine;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(health).service(metrics);
}

/// 200 when the store and the compute backends answer, 503 (with which one) otherwise. From
/// the background checks (`health_interval_ms`): a probe never waits for the engine.
#[utoipa::path(security(()), responses((status = 200, description = "store and backend answer"), (status = 503, description = "something is down")))]
#[get("/health")]
async fn health(engine: web::Data<Engine>) -> HttpResponse {
    let health = engine.health().await;
    let said = |r: &Result<(), String>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => e.clone(),
    };
    let mut backends = serde_json::Map::new();
    for (name, backend) in &engine.backends {
        let c = backend.capabilities();
        backends.insert(
            name.clone(),
            json!({"kind": backend.name(), "status": said(&health.backend(name)), "capabilities": {
            "isolatesNetwork": c.isolates_network, "fetches": c.fetches, "backstop": c.backstop}}),
        );
    }
    let default = &engine.config().backend;
    let all_ok = health.all_ok();
    let body = json!({"status": if all_ok { "ok" } else { "degraded" }, "store": said(&health.store),
                      "backend": backends.get(default).cloned().map(|mut b| { b["name"] = json!(b["kind"]); b }),
                      "backends": backends, "version": env!("CARGO_PKG_VERSION"),
                      // Which service answers: its containers carry the same `brizo.instance` label.
                      "instance": engine.config().instance,
                      "checkedSecondsAgo": health.checked.elapsed().as_secs()});
    if all_ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

#[get("/metrics")]
async fn metrics(_operator: Operator, handle: web::Data<PrometheusHandle>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(handle.render())
}
