//! The one error body of the API, `{"error":{"code","message","details"},"requestId"}`, and
//! the mapping from domain errors and framework rejections to it.
//!
//! Error codes are a public contract: never rename one. They are listed, with status and
//! meaning, in the one table of [`super::error_codes`] (which also says how to add one).

use crate::domain;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::borrow::Cow;
use utoipa::ToSchema;

pub use super::error_codes::ErrorCode;

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
    /// Stable snake_case code (one of the table in `ErrorCode`).
    #[schema(value_type = ErrorCode)]
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
    /// An error with a code of the table, answered with the table's status for it.
    pub fn of(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(code.status(), code, message)
    }
    pub fn with_details(mut self, d: serde_json::Value) -> Self {
        self.details = Some(d);
        self
    }
    pub fn unauthorized() -> Self {
        Self::of(ErrorCode::Unauthorized, "authentication required")
    }
    pub fn internal() -> Self {
        Self::of(
            ErrorCode::InternalError,
            "something went wrong on our side; the request id identifies it in the server log",
        )
    }
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        let mut e = Self::of(
            ErrorCode::RateLimited,
            format!("too many requests; retry in {retry_after_secs} s"),
        );
        e.retry_after = Some(retry_after_secs);
        e
    }
    /// The answer for a write that failed because the disk is full or read-only (nothing
    /// was written; the client may retry later); `None` for other I/O errors.
    pub fn disk(kind: std::io::ErrorKind) -> Option<Self> {
        use std::io::ErrorKind as K;
        match kind {
            K::StorageFull | K::QuotaExceeded => Some(Self::of(
                ErrorCode::InsufficientStorage,
                "the server's disk is full: nothing was written; retry once space is freed",
            )),
            K::ReadOnlyFilesystem => Some(Self::of(
                ErrorCode::StorageReadOnly,
                "the server's data directory is read-only: nothing was written",
            )),
            _ => None,
        }
    }
    pub fn invalid_id(param: &str) -> Self {
        Self::of(ErrorCode::InvalidId, format!("`{param}` is not a valid id"))
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
            E::PaymentRequired(code, msg, details) => {
                ApiError::new(StatusCode::PAYMENT_REQUIRED, code, msg).with_details(details)
            }
            E::Store(crate::store::Error::Unavailable(msg)) => {
                tracing::error!(error = %msg, "store unavailable");
                ApiError::of(
                    ErrorCode::StorageUnavailable,
                    "the store is being reopened after a disk error; retry shortly",
                )
            }
            E::Store(err) => {
                tracing::error!(error = %err, "store error");
                err.io_kind()
                    .and_then(ApiError::disk)
                    .unwrap_or_else(ApiError::internal)
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
