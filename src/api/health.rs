//! Liveness and Prometheus metrics.

use actix_web::{get, web, HttpResponse};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::jobs::Engine;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(health).service(metrics);
}

/// 200 when the store and the compute backend answer, 503 (with which one) otherwise.
#[utoipa::path(responses((status = 200, description = "store and backend answer"), (status = 503, description = "something is down")))]
#[get("/health")]
async fn health(engine: web::Data<Engine>) -> HttpResponse {
    let store = engine.store.ping().await.map(|_| "ok".to_string()).unwrap_or_else(|e| e.to_string());
    let backend = engine.backend.ping().await.map(|_| "ok".to_string()).unwrap_or_else(|e| e.to_string());
    let body = json!({"status": if store == "ok" && backend == "ok" { "ok" } else { "degraded" },
                      "store": store, "backend": {"name": engine.backend.name(), "status": backend},
                      "version": env!("CARGO_PKG_VERSION")});
    if store == "ok" && backend == "ok" { HttpResponse::Ok().json(body) } else { HttpResponse::ServiceUnavailable().json(body) }
}

#[get("/metrics")]
async fn metrics(handle: web::Data<PrometheusHandle>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(handle.render())
}
