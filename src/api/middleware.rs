//! Cross-cutting HTTP behaviour: request ids and access logs, metrics, security headers,
//! CORS, JSON bodies for framework-made errors (404/405/panics).

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
    let span = tracing::info_span!("request", request_id = %id, %method, %path, tenant = tracing::field::Empty, acting_for = tracing::field::Empty);
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

/// The layers every response passes through, outermost last: request id and access log,
/// metrics, security headers, panic catching, JSON bodies for framework errors. The security
/// headers sit outside the layers that make whole new responses (the JSON error rewrite of
/// 405/413 and the panic answer), so those answers carry them too.
pub fn outer_layers(router: axum::Router, hsts: bool) -> axum::Router {
    router
        .layer(axum::middleware::from_fn(json_errors))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .layer(axum::middleware::from_fn_with_state(hsts, security_headers))
        .layer(axum::middleware::from_fn(metrics))
        .layer(axum::middleware::from_fn(request_id))
}

/// Security headers on every response; a full CSP for HTML; HSTS when `hsts`.
pub async fn security_headers(State(hsts): State<bool>, req: Request, next: Next) -> Response {
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
    if hsts {
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
            // A platform admin's choice of tenant (see extract::Auth).
            HeaderName::from_static("x-tenant-id"),
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

#[cfg(test)]
mod tests {
    use axum::body::{Body, Bytes};
    use axum::http::{Request, StatusCode};
    use axum::routing::{get, post};
    use tower::ServiceExt;

    /// A router with a panicking route and a route whose body extractor has a small
    /// framework limit, behind the real outer layers.
    fn app() -> axum::Router {
        let r = axum::Router::new()
            .route(
                "/api/boom",
                get(|| async {
                    let v: Vec<u8> = Vec::new();
                    // A real out-of-bounds panic, not an explicit `panic!` call.
                    let i = v.len() + 3;
                    v[i].to_string()
                }),
            )
            .route(
                "/api/echo",
                post(|b: Bytes| async move { b.len().to_string() }),
            )
            .layer(axum::extract::DefaultBodyLimit::max(16));
        super::outer_layers(r, true)
    }

    async fn call(req: Request<Body>) -> axum::response::Response {
        app().oneshot(req).await.expect("infallible")
    }

    fn assert_hardened(resp: &axum::response::Response, what: &str) {
        let h = resp.headers();
        for k in [
            "x-content-type-options",
            "x-frame-options",
            "referrer-policy",
            "content-security-policy",
            "cross-origin-opener-policy",
            "strict-transport-security",
            "x-request-id",
        ] {
            assert!(h.contains_key(k), "{what}: no {k} in {h:?}");
        }
        assert!(
            h["content-type"]
                .to_str()
                .is_ok_and(|v| v.starts_with("application/json")),
            "{what}: {h:?}"
        );
    }

    #[tokio::test]
    async fn panics_405_and_framework_413_carry_the_security_headers() {
        let r = call(Request::get("/api/boom").body(Body::empty()).expect("req")).await;
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_hardened(&r, "panic");

        let r = call(
            Request::delete("/api/echo")
                .body(Body::empty())
                .expect("req"),
        )
        .await;
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(r.headers().contains_key("allow"));
        assert_hardened(&r, "405");

        let r = call(
            Request::post("/api/echo")
                .body(Body::from(vec![b'x'; 64]))
                .expect("req"),
        )
        .await;
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_hardened(&r, "413");
    }
}
