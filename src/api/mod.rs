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

/// Streams one of a finished job's published outputs from the results store.
pub async fn stream_output(engine: &crate::jobs::Engine, job: &crate::jobs::Job, name: &str) -> Result<actix_web::HttpResponse, ApiError> {
    use futures::StreamExt;
    if !job.phase.is_terminal() || !job.outputs.iter().any(|o| o.name == name) {
        return Err(ApiError::NotFound(format!("job {} has no published output {name:?}", job.id)));
    }
    let got = engine
        .results
        .get(&job.id, &format!("outputs/{name}"))
        .await
        .map_err(|e| ApiError::Unavailable(format!("{e}; try again")))?
        .ok_or_else(|| ApiError::Internal(format!("output {name} of job {} is recorded but missing from the results store", job.id)))?;
    let stream = got.into_stream().map(|r| r.map_err(|e| actix_web::error::ErrorInternalServerError(e.to_string())));
    Ok(actix_web::HttpResponse::Ok().content_type("application/octet-stream").streaming(stream))
}
