//! Cross-cutting HTTP behaviour: request ids and access logs, metrics, security headers,
//! CORS, JSON bodies for framework-made errors (404/405/panics).

use super::AppState;
use super::error::{ApiError, REQUEST_ID};
use crate::config::Config;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Instant;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::Instrument;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Gives every request an id (kept from the client when sane), a span carrying it, an
/// access-log line, and the `X-Request-Id` response header.
pub async fn request_id(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let span = tracing::info_span!("request", request_id = %id, %method, %path, tenant = tracing::field::Empty);
    let start = Instant::now();
    let mut resp = REQUEST_ID
        .scope(id.clone(), next.run(req))
        .instrument(span.clone())
        .await;
    let status = resp.status().as_u16();
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if status >= 500 {
            tracing::error!(status, ms, "request");
        } else {
            tracing::info!(status, ms, "request");
        }
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }
    resp
}

/// Requests by route and status, and a latency histogram by route.
pub async fn metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    resp
}

const CSP_HTML: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'";
const CSP_API: &str = "default-src 'none'; frame-ancestors 'none'";

/// Security headers on every response; a full CSP for HTML; HSTS when configured.
pub async fn security_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let is_api =
        req.uri().path().starts_with("/api/") && !req.uri().path().starts_with("/api/docs");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, k: HeaderName, v: &'static str| {
        h.entry(k).or_insert(HeaderValue::from_static(v));
    };
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(
        h,
        header::REFERRER_POLICY,
        "strict-origin-when-cross-origin",
    );
    set(
        h,
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    set(
        h,
        HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    );
    let html = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        if html { CSP_HTML } else { CSP_API },
    );
    if is_api {
        set(h, header::CACHE_CONTROL, "no-store");
    }
    if state.config.hsts {
        set(
            h,
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        );
    }
    resp
}

/// CORS for the configured origins only; none by default.
pub fn cors_layer(cfg: &Config) -> CorsLayer {
    let origins: Vec<HeaderValue> = cfg
        .cors_origin_list()
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-api-key"),
            X_REQUEST_ID.clone(),
        ])
        .expose_headers([X_REQUEST_ID.clone(), header::RETRY_AFTER])
        .max_age(std::time::Duration::from_secs(600))
}

/// Turns empty framework error responses (405, 413 from other extractors) into the one
/// JSON error body.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let s = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json || !(s.is_client_error() || s.is_server_error()) {
        return resp;
    }
    let err = match s {
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            s,
            "method_not_allowed",
            "this route does not accept that method",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            s,
            "payload_too_large",
            "the request body is larger than this server accepts",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::new(s, "unsupported_media_type", "unsupported content type")
        }
        StatusCode::NOT_FOUND => return resp,
        _ => return resp,
    };
    let allow = resp.headers().get(header::ALLOW).cloned();
    let mut out = err.into_response();
    if let Some(a) = allow {
        out.headers_mut().insert(header::ALLOW, a);
    }
    out
}

/// Unknown routes: JSON 404 under /api, plain 404 elsewhere.
pub async fn not_found(req: Request) -> Response {
    let path = req.uri().path();
    if path.starts_with("/api") || path.starts_with("/v1") {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "route_not_found",
            format!("no route {} {}", req.method(), path),
        )
        .into_response()
    } else {
        (StatusCode::NOT_FOUND, "not found").into_response()
    }
}

/// A panicking handler answers 500 with the one error body; the server keeps serving.
pub fn panic_response(_err: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    tracing::error!("handler panicked");
    ApiError::internal().into_response()
}
