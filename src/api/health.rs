//! /api/health and /metrics.

use super::AppState;
use super::error::ApiError;
use super::extract::Auth;
use crate::knowledge::{VectorOutage, VectorStatus};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// `ok` or `degraded`.
    status: &'static str,
    version: &'static str,
    uptime_seconds: u64,
    /// `ok` or `error`.
    storage: &'static str,
    /// Whether the data directory takes writes: `ok`, `full` (less free than
    /// `DISK_RESERVE_MB`: writes answer 507 `insufficient_storage`) or `readOnly` (writes
    /// answer 503 `storage_read_only`). Reads go on in both; `status` is then `degraded`.
    disk: &'static str,
    schema_version: Option<u64>,
    /// The embedding model and its dimensions, or `none` (the server log says why retrieval
    /// is keyword-only). No file paths: this endpoint is public.
    embeddings: String,
    /// `hybrid` with an embedding model, `keyword` without one.
    retrieval: &'static str,
    /// Background jobs waiting for a worker.
    jobs_pending: usize,
    /// The caller's tenant's vector search (`ok`, `off` or `unavailable` with the reason);
    /// only on authenticated requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    vector_search: Option<VectorStatus>,
    /// Tenants whose vector search is unavailable, and why; only for platform admins.
    #[serde(skip_serializing_if = "Option::is_none")]
    vector_outages: Option<Vec<VectorOutage>>,
    /// The latest scheduled backup (BACKUP_DIR); only for platform admins.
    #[serde(skip_serializing_if = "Option::is_none")]
    backups: Option<crate::backup::schedule::BackupStatus>,
}

/// Liveness and storage check: 200 when the store can be read, 503 otherwise.
#[utoipa::path(get, path = "/api/health", tag = "system", security(()),
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn health(
    State(state): State<AppState>,
    auth: Result<Auth, ApiError>,
) -> impl IntoResponse {
    // Health stays public; a caller who authenticates also learns about their tenant.
    let backups = match &auth {
        Ok(Auth(caller)) if caller.is_platform_admin() => {
            state.backups.as_ref().map(|b| b.status())
        }
        _ => None,
    };
    let (vector_search, vector_outages) = match auth {
        Ok(Auth(caller)) => {
            let k = state.knowledge.clone();
            let outages = k.vector_outages(&caller);
            let status = if caller.is_platform_admin() {
                None
            } else {
                tokio::task::spawn_blocking(move || k.vector_search_status(&caller))
                    .await
                    .ok()
                    .and_then(Result::ok)
            };
            (status, outages)
        }
        Err(_) => (None, None),
    };
    let svc = state.svc.clone();
    let (schema, disk) =
        tokio::task::spawn_blocking(move || (svc.storage_check(), svc.store.disk_state()))
            .await
            .unwrap_or((None, crate::store::DiskState::Ok));
    let ok = schema.is_some();
    let writable = disk == crate::store::DiskState::Ok;
    let body = Health {
        status: if ok && writable { "ok" } else { "degraded" },
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started.elapsed().as_secs(),
        storage: if ok { "ok" } else { "error" },
        disk: disk.as_str(),
        schema_version: schema,
        embeddings: match state.knowledge.global_model() {
            Some((id, dims)) => format!("{id} ({dims} dims)"),
            None => "none".into(),
        },
        retrieval: if state.knowledge.has_global_embedder() {
            "hybrid"
        } else {
            "keyword"
        },
        jobs_pending: state.jobs.pending(),
        vector_search,
        vector_outages,
        backups,
    };
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body))
}

/// Prometheus text format, for `Authorization: Bearer <METRICS_TOKEN>` (METRICS=token).
pub async fn metrics_with_token(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let ok =
        state.config.metrics_token.as_ref().is_some_and(|t| {
            crate::auth::tokens::ct_eq_bytes(given.as_bytes(), t.expose().as_bytes())
        });
    if !ok {
        let mut r = super::error::ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "/metrics needs `Authorization: Bearer <METRICS_TOKEN>`",
        )
        .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    metrics(State(state)).await.into_response()
}

/// Prometheus text format (METRICS=public serves this on its own listener).
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
