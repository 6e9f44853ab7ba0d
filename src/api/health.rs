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

/// 200 when the store and the compute backend answer, 503 (with which one) otherwise.
#[utoipa::path(security(()), responses((status = 200, description = "store and backend answer"), (status = 503, description = "something is down")))]
#[get("/health")]
async fn health(engine: web::Data<Engine>) -> HttpResponse {
    let store = engine
        .ping_store()
        .await
        .map(|_| "ok".to_string())
        .unwrap_or_else(|e| e.to_string());
    let mut backends = serde_json::Map::new();
    let mut all_ok = store == "ok";
    for (name, backend) in &engine.backends {
        let status = backend
            .ping()
            .await
            .map(|_| "ok".to_string())
            .unwrap_or_else(|e| e.to_string());
        all_ok &= status == "ok";
        let c = backend.capabilities();
        backends.insert(
            name.clone(),
            json!({"kind": backend.name(), "status": status, "capabilities": {
            "isolatesNetwork": c.isolates_network, "fetches": c.fetches, "backstop": c.backstop}}),
        );
    }
    let default = &engine.config().backend;
    let body = json!({"status": if all_ok { "ok" } else { "degraded" }, "store": store,
                      "backend": backends.get(default).cloned().map(|mut b| { b["name"] = json!(b["kind"]); b }),
                      "backends": backends, "version": env!("CARGO_PKG_VERSION"),
                      // Which service answers: its containers carry the same `brizo.instance` label.
                      "instance": engine.config().instance});
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
