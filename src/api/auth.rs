//! The operator's bearer token.

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpRequest, web};

use crate::api::error::ApiError;
use crate::jobs::Engine;

/// Present in a handler's arguments, it admits only requests carrying the operator token.
pub struct Operator;

impl FromRequest for Operator {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let engine = req
            .app_data::<web::Data<Engine>>()
            .expect("engine is registered");
        let expected = engine.config().admin_token.as_bytes();
        let given = req
            .headers()
            .get("Authorization")
            .and_then(|h| h.to_str().ok())
            // The scheme is case-insensitive (RFC 9110, 11.1).
            .and_then(|h| h.trim_start().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        ready(match given {
            None => Err(ApiError::Unauthorized(
                "missing operator token: send Authorization: Bearer <BRIZO_ADMIN_TOKEN>".into(),
            )),
            Some(token) if constant_time_eq(token.as_bytes(), expected) => Ok(Operator),
            Some(_) => Err(ApiError::Unauthorized("wrong operator token".into())),
        })
    }
}

/// Compares without an early exit, so response times do not leak the token's prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_compare_exactly() {
        assert!(super::constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!super::constant_time_eq(b"secret-token", b"secret-tokeN"));
        assert!(!super::constant_time_eq(b"secret", b"secret-token"));
    }
}
