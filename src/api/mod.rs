//! HTTP routes, one module per area, wired with `ServiceConfig`.

pub mod auth;
pub mod error;
pub mod health;
pub mod v1;
pub mod v2;

use actix_web::web;

use crate::api::error::ApiError;

/// Bad JSON, paths and queries answer 400 with `{"error": ...}` like everything else.
pub fn extractor_config(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(4 << 20)
            .error_handler(|err, _| ApiError::BadRequest(format!("request body: {err}")).into()),
    )
    .app_data(
        web::QueryConfig::default()
            .error_handler(|err, _| ApiError::BadRequest(format!("query: {err}")).into()),
    )
    .app_data(
        web::PathConfig::default()
            .error_handler(|err, _| ApiError::BadRequest(format!("path: {err}")).into()),
    );
}

/// Anything no route matches: 405 with the path's methods in `Allow` when it has routes for
/// other methods, else 404.
pub async fn not_found(req: actix_web::HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    if req.resource_map().has_resource(req.path()) {
        let allow = allowed_methods(req.path()).join(", ");
        let body = crate::api::error::ErrorBody {
            error: format!(
                "{} is not a method of {}; it takes {allow}",
                req.method(),
                req.path()
            ),
        };
        return Ok(actix_web::HttpResponse::MethodNotAllowed()
            .insert_header(("Allow", allow))
            .json(body));
    }
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}

/// Routes outside the OpenAPI document (Squid's v1, metrics), as `(method, path template)`.
const UNDOCUMENTED: &[(&str, &str)] = &[
    ("GET", "/metrics"),
    ("GET", "/api/v1/brizo"),
    ("POST", "/api/v1/brizo/services/compute"),
    ("GET", "/api/v1/brizo/services/compute"),
    ("PUT", "/api/v1/brizo/services/compute"),
    ("DELETE", "/api/v1/brizo/services/compute"),
    (
        "GET",
        "/api/v1/brizo/services/compute/results/{job_id}/outputs/{name}",
    ),
    (
        "GET",
        "/api/v1/brizo/services/compute/results/{job_id}/logs",
    ),
    (
        "GET",
        "/api/v1/brizo/services/compute/results/{job_id}/receipt",
    ),
    ("POST", "/api/v1/brizo/services/encrypt"),
    ("POST", "/api/v1/aquarius/assets/ddo"),
    ("GET", "/api/v1/aquarius/assets/ddo/{did}"),
];

/// The methods of the route templates `path` matches: the OpenAPI document's and the list above.
fn allowed_methods(path: &str) -> Vec<String> {
    static DOCUMENTED: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    let documented = DOCUMENTED.get_or_init(|| {
        let doc =
            serde_json::to_value(<v2::ApiDoc as utoipa::OpenApi>::openapi()).unwrap_or_default();
        let mut routes = vec![];
        for (template, item) in doc["paths"].as_object().into_iter().flatten() {
            for method in item
                .as_object()
                .into_iter()
                .flatten()
                .map(|(m, _)| m.to_uppercase())
            {
                routes.push((method, template.clone()));
            }
        }
        routes
    });
    let undocumented = UNDOCUMENTED
        .iter()
        .map(|(m, t)| (m.to_string(), t.to_string()));
    let mut methods: Vec<String> = documented
        .iter()
        .cloned()
        .chain(undocumented)
        .filter(|(_, t)| template_matches(t, path))
        .map(|(m, _)| m)
        .collect();
    methods.sort();
    methods.dedup();
    methods
}

/// `{x}` matches one segment; a last `{name}` (outputs) matches the rest of the path.
fn template_matches(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    let tail = t.last().is_some_and(|s| *s == "{name}");
    if !(t.len() == p.len() || (tail && p.len() > t.len())) {
        return false;
    }
    t.iter()
        .zip(&p)
        .all(|(t, p)| (t.starts_with('{') && !p.is_empty()) || t == p)
}

/// Streams one of a finished job's published outputs from the results store.
pub async fn stream_output(
    engine: &crate::jobs::Engine,
    job: &crate::jobs::Job,
    name: &str,
) -> Result<actix_web::HttpResponse, ApiError> {
    use futures::StreamExt;
    if !job.phase.is_terminal() || !job.outputs.iter().any(|o| o.name == name) {
        return Err(ApiError::NotFound(format!(
            "job {} has no published output {name:?}",
            job.id
        )));
    }
    let got = engine
        .results
        .get(&job.id, &format!("outputs/{name}"))
        .await
        .map_err(|e| ApiError::Unavailable(format!("{e}; try again")))?
        .ok_or_else(|| {
            ApiError::Internal(format!(
                "output {name} of job {} is recorded but missing from the results store",
                job.id
            ))
        })?;
    let stream = got
        .into_stream()
        .map(|r| r.map_err(|e| actix_web::error::ErrorInternalServerError(e.to_string())));
    Ok(actix_web::HttpResponse::Ok()
        .content_type("application/octet-stream")
        .streaming(stream))
}

#[cfg(test)]
mod tests {
    #[test]
    fn routes_are_matched_by_their_templates() {
        assert!(super::template_matches(
            "/api/v2/jobs/{id}",
            "/api/v2/jobs/abc"
        ));
        assert!(!super::template_matches(
            "/api/v2/jobs/{id}",
            "/api/v2/jobs/abc/logs"
        ));
        assert!(super::template_matches(
            "/api/v2/jobs/{id}/outputs/{name}",
            "/api/v2/jobs/a/outputs/sub/x.csv"
        ));
        assert_eq!(super::allowed_methods("/api/v2/jobs"), vec!["GET", "POST"]);
        assert_eq!(
            super::allowed_methods("/api/v1/brizo/services/compute"),
            vec!["DELETE", "GET", "POST", "PUT"]
        );
    }
}
