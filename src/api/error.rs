//! The one error type of the HTTP boundary: every failure becomes a status and
//! `{"error": "..."}`, with a message that says what to do. Domain errors (the engine's, the
//! authorizer's, the chain's, the assets') become statuses here and nowhere else.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::assets::AssetError;
use crate::authorize::AuthorizeError;
use crate::chain::ChainError;
use crate::jobs::EngineError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The path exists, the method does not.
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let ApiError::Unauthorized(_) = self {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        if let ApiError::Unavailable(_) = self {
            response.insert_header(("Retry-After", "5"));
        }
        if let ApiError::Internal(message) = self {
            tracing::error!("internal error: {message}");
        }
        response.json(ErrorBody {
            error: self.to_string(),
        })
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Invalid(m) => ApiError::BadRequest(m),
            EngineError::NotFound(id) => ApiError::NotFound(format!("no job {id}")),
            EngineError::Conflict(m) => ApiError::Conflict(m),
            EngineError::Unavailable(m) => ApiError::Unavailable(m),
            EngineError::Store(e) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<AuthorizeError> for ApiError {
    fn from(e: AuthorizeError) -> Self {
        match e {
            AuthorizeError::Invalid(m) => ApiError::BadRequest(m),
            AuthorizeError::BadSignature(m) => ApiError::Unauthorized(m),
            AuthorizeError::Refused(m) => ApiError::Forbidden(m),
            AuthorizeError::NotFound(m) => ApiError::NotFound(m),
            AuthorizeError::Unavailable(m) => ApiError::Unavailable(m),
            AuthorizeError::Internal(m) => ApiError::Internal(m),
            AuthorizeError::Chain(e) => e.into(),
            AuthorizeError::Asset(e) => e.into(),
        }
    }
}

impl From<ChainError> for ApiError {
    fn from(e: ChainError) -> Self {
        match e {
            ChainError::Unreachable(m) => {
                ApiError::Unavailable(format!("chain node unreachable ({m}); try again"))
            }
            ChainError::Transaction { what, message } => {
                ApiError::Unavailable(format!("{what} failed on chain: {message}; try again"))
            }
            ChainError::Config(m) => ApiError::Internal(m),
        }
    }
}

impl From<AssetError> for ApiError {
    fn from(e: AssetError) -> Self {
        match e {
            AssetError::Invalid(m) => ApiError::BadRequest(m),
            AssetError::Refused(m) => ApiError::Forbidden(m),
            AssetError::NotFound(did) => ApiError::NotFound(format!("{did} is not registered")),
            AssetError::Chain(c) => c.into(),
            e @ AssetError::Fetch { .. } => ApiError::Unavailable(e.to_string()),
            AssetError::Store(e) => ApiError::Internal(e.to_string()),
        }
    }
}
