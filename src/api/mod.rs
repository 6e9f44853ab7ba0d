//! HTTP routes, one module per area, wired with `ServiceConfig`.

pub mod auth;
pub mod health;
pub mod v1;
pub mod v2;

use actix_web::web;

use crate::error::ApiError;

/// Bad JSON, paths and queries answer 400 with `{"error": ...}` like everything else.
pub fn extractor_config(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::JsonConfig::default().limit(4 << 20).error_handler(|err, _| {
        ApiError::BadRequest(format!("request body: {err}")).into()
    }))
    .app_data(web::QueryConfig::default().error_handler(|err, _| ApiError::BadRequest(format!("query: {err}")).into()))
    .app_data(web::PathConfig::default().error_handler(|err, _| ApiError::BadRequest(format!("path: {err}")).into()));
}

/// Anything no route matches.
pub async fn not_found(req: actix_web::HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!("no route for {} {}", req.method(), req.path())))
}
