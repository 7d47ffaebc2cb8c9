//! The one error body of the API, `{"error":{"code","message","details"},"requestId"}`, and
//! the mapping from domain errors and framework rejections to it.
//!
//! Error codes are a public contract: never rename one. The table:
//!
//! | status | code |
//! |---|---|
//! | 400 | `validation_failed` (details.fields: [{field, message}]), `malformed_json`, `invalid_id`, `invalid_query`, `invalid_token` |
//! | 401 | `unauthorized`, `invalid_credentials`, `invalid_token`, `session_revoked`, `invalid_refresh_token`, `refresh_token_reused`, `invalid_api_key` |
//! | 403 | `forbidden`, `signup_disabled`, `tenant_suspended` |
//! | 404 | `route_not_found`, `<resource>_not_found` (`tenant_not_found`, `user_not_found`, `api_key_not_found`, `invitation_not_found`, ...) |
//! | 405 | `method_not_allowed` |
//! | 409 | `email_taken`, `last_admin`, `conflict` |
//! | 413 | `payload_too_large` |
//! | 415 | `unsupported_media_type` |
//! | 422 | `unprocessable` |
//! | 429 | `rate_limited` (with `Retry-After`) |
//! | 500 | `internal_error` (no internals; the request id is in the log) |
//! | 503 | `unavailable` |

use crate::domain;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::borrow::Cow;
use utoipa::ToSchema;

tokio::task_local! {
    /// The current request's id, set by the request-id middleware for the whole handler.
    pub static REQUEST_ID: String;
}

pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(|r| r.clone()).ok()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
    #[serde(rename = "requestId", skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code.
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Cow<'static, str>,
    pub message: String,
    pub details: Option<serde_json::Value>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }
    pub fn with_details(mut self, d: serde_json::Value) -> Self {
        self.details = Some(d);
        self
    }
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "authentication required",
        )
    }
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "something went wrong on our side; the request id identifies it in the server log",
        )
    }
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests; retry in {retry_after_secs} s"),
        );
        e.retry_after = Some(retry_after_secs);
        e
    }
    pub fn invalid_id(param: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_id",
            format!("`{param}` is not a valid id"),
        )
        .with_details(serde_json::json!({ "param": param }))
    }
}

impl From<domain::Error> for ApiError {
    fn from(e: domain::Error) -> Self {
        use domain::Error as E;
        match e {
            E::Validation(fields) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "validation_failed",
                "some fields are invalid",
            )
            .with_details(serde_json::json!({ "fields": fields })),
            E::Unauthorized(code, msg) => ApiError::new(StatusCode::UNAUTHORIZED, code, msg),
            E::Forbidden(code, msg) => ApiError::new(StatusCode::FORBIDDEN, code, msg),
            E::NotFound(what) => ApiError::new(
                StatusCode::NOT_FOUND,
                format!("{what}_not_found"),
                format!("{} not found", what.replace('_', " ")),
            ),
            E::Conflict(code, msg, details) => {
                let e = ApiError::new(StatusCode::CONFLICT, code, msg);
                match details {
                    Some(d) => e.with_details(d),
                    None => e,
                }
            }
            E::Invalid(code, msg) => ApiError::new(StatusCode::BAD_REQUEST, code, msg),
            E::Store(err) => {
                tracing::error!(error = %err, "store error");
                ApiError::internal()
            }
            E::Internal(msg) => {
                tracing::error!(error = %msg, "internal error");
                ApiError::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = %self.code, status = self.status.as_u16(), "request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.into_owned(),
                message: self.message,
                details: self.details,
            },
            request_id: current_request_id(),
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
