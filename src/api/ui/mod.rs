//! The publisher's dashboard at `/ui`: one page, served by the service itself with every asset
//! embedded (it works offline), to watch and steer jobs, approvals and reviews, backends and
//! assets. Sign-in takes the operator token once and keeps a session in an `HttpOnly`,
//! `SameSite=Strict` cookie; every state-changing call must also carry the session's CSRF
//! token in a header (which a cross-site form cannot send) and, when the browser says where
//! it comes from, come from this origin. Nothing under `/ui` but the sign-in page answers
//! without a session. The page shows data with `textContent` only: markup in an image name, a
//! log line or an output name stays text.

mod views;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use serde::Deserialize;

use crate::api::error::ApiError;
use crate::jobs::Engine;

const COOKIE: &str = "brizo_ui";
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

const APP_HTML: &str = include_str!("static/app.html");
const LOGIN_HTML: &str = include_str!("static/login.html");
const APP_JS: &str = include_str!("static/app.js");
const APP_CSS: &str = include_str!("static/app.css");

/// Signed-in sessions: id → (CSRF token, since when). In memory: a restart signs everyone out.
fn sessions() -> &'static Mutex<HashMap<String, (String, Instant)>> {
    static SESSIONS: std::sync::OnceLock<Mutex<HashMap<String, (String, Instant)>>> =
        std::sync::OnceLock::new();
    SESSIONS.get_or_init(Mutex::default)
}

fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// A request from a signed-in browser; its CSRF token, for the page.
pub struct Session {
    csrf: String,
}

fn session_of(req: &HttpRequest) -> Option<Session> {
    let id = req.cookie(COOKIE)?.value().to_string();
    let mut all = sessions().lock().unwrap();
    all.retain(|_, (_, since)| since.elapsed() < SESSION_LIFETIME);
    all.get(&id).map(|(csrf, _)| Session { csrf: csrf.clone() })
}

impl actix_web::FromRequest for Session {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(
            session_of(req).ok_or_else(|| {
                ApiError::Unauthorized("sign in to the dashboard first (/ui)".into())
            }),
        )
    }
}

/// A state-changing request from a signed-in browser on this origin, with the session's CSRF
/// token in `X-CSRF-Token`.
pub struct Action;

impl actix_web::FromRequest for Action {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(check_action(req).map(|_| Action))
    }
}

fn check_action(req: &HttpRequest) -> Result<(), ApiError> {
    let session = session_of(req)
        .ok_or_else(|| ApiError::Unauthorized("sign in to the dashboard first (/ui)".into()))?;
    same_origin(req)?;
    let given = req
        .headers()
        .get("X-CSRF-Token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !crate::api::auth::constant_time_eq(given.as_bytes(), session.csrf.as_bytes()) {
        return Err(ApiError::Forbidden(
            "missing or wrong CSRF token: actions come from the dashboard's own page".into(),
        ));
    }
    Ok(())
}

/// When the browser names the origin of a request (it does for every POST), it must be ours.
fn same_origin(req: &HttpRequest) -> Result<(), ApiError> {
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    let host = req.connection_info().host().to_string();
    let ours = origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.trim_end_matches('/') == host);
    if ours {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "a request from {origin} is not the dashboard's own"
        )))
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(page)
        .service(login)
        .service(logout)
        .service(asset);
    views::configure(cfg);
}

fn html(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        // The page runs only its own script and style, and cannot be framed.
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
        ))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header(("Referrer-Policy", "same-origin"))
        .body(body)
}

/// The dashboard, or the sign-in page.
#[get("/ui")]
async fn page(req: HttpRequest) -> HttpResponse {
    match session_of(&req) {
        Some(s) => html(APP_HTML.replace("{{csrf}}", &s.csrf)),
        None => html(LOGIN_HTML.replace("{{error}}", "")),
    }
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

#[post("/ui/login")]
async fn login(
    req: HttpRequest,
    engine: web::Data<Engine>,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, ApiError> {
    same_origin(&req)?;
    let expected = engine.config().admin_token.as_bytes();
    if !crate::api::auth::constant_time_eq(form.token.trim().as_bytes(), expected) {
        return Ok(HttpResponse::Unauthorized()
            .content_type("text/html; charset=utf-8")
            .body(LOGIN_HTML.replace("{{error}}", "That is not the operator token.")));
    }
    let id = random_token();
    sessions()
        .lock()
        .unwrap()
        .insert(id.clone(), (random_token(), Instant::now()));
    let cookie = actix_web::cookie::Cookie::build(COOKIE, id)
        .path("/ui")
        .http_only(true)
        .same_site(actix_web::cookie::SameSite::Strict)
        .max_age(actix_web::cookie::time::Duration::seconds(
            SESSION_LIFETIME.as_secs() as i64,
        ))
        .finish();
    Ok(HttpResponse::SeeOther()
        .cookie(cookie)
        .insert_header((header::LOCATION, "/ui"))
        .finish())
}

#[post("/ui/logout")]
async fn logout(req: HttpRequest, _: Action) -> HttpResponse {
    if let Some(c) = req.cookie(COOKIE) {
        sessions().lock().unwrap().remove(c.value());
    }
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/ui"))
        .finish()
}

/// The page's script and style (only for a signed-in browser).
#[get("/ui/static/{name}")]
async fn asset(_: Session, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let (body, kind) = match name.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        other => return Err(ApiError::NotFound(format!("no {other}"))),
    };
    Ok(HttpResponse::Ok().content_type(kind).body(body))
}
