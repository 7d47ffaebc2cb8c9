//! /api/health and /metrics.

use super::AppState;
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
    schema_version: Option<u64>,
    /// The embedding model, or why retrieval is keyword-only.
    embeddings: String,
    /// `hybrid` with an embedding model, `keyword` without one.
    retrieval: &'static str,
    /// Background jobs waiting for a worker.
    jobs_pending: usize,
}

/// Liveness and storage check: 200 when the store can be read, 503 otherwise.
#[utoipa::path(get, path = "/api/health", tag = "system", security(()),
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let store = state.svc.store.clone();
    let schema = tokio::task::spawn_blocking(move || store.schema_version())
        .await
        .ok()
        .and_then(Result::ok);
    let ok = schema.is_some();
    let body = Health {
        status: if ok { "ok" } else { "degraded" },
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started.elapsed().as_secs(),
        storage: if ok { "ok" } else { "error" },
        schema_version: schema,
        embeddings: state.knowledge.embeddings_description().to_string(),
        retrieval: if state.knowledge.has_global_embedder() {
            "hybrid"
        } else {
            "keyword"
        },
        jobs_pending: state.jobs.pending(),
    };
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body))
}

/// Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
