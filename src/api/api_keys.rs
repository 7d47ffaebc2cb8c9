//! /api/api-keys: keys for programs, shown once.

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Auth, Json, PageParams, Query};
use super::views::{ApiKeyView, Paged, paged};
use crate::types::{ApiKeyId, Role};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateKeyReq {
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    /// Defaults to the caller's role; never higher.
    role: Option<Role>,
    /// RFC 3339; omit for a key that does not expire.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    expires_at: Option<time::OffsetDateTime>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    key: ApiKeyView,
    /// The secret; shown only in this answer.
    secret: String,
}

#[utoipa::path(get, path = "/api/api-keys", tag = "api-keys", params(PageParams),
    responses((status = 200, body = Paged<ApiKeyView>), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Query(p): Query<PageParams>,
) -> ApiResult<axum::Json<Paged<ApiKeyView>>> {
    let page = p.to_req()?;
    let r = state.run(move |s| s.list_api_keys(&caller, &page)).await?;
    Ok(axum::Json(paged(r)))
}

/// Create a key. The `secret` (`ak_...`) is in this answer only.
#[utoipa::path(post, path = "/api/api-keys", tag = "api-keys", request_body = CreateKeyReq,
    responses((status = 402, body = ErrorBody, description = "`plan_limit_reached` (details: limit, used, max) or `subscription_inactive`"), (status = 201, body = CreatedKey), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Json(r): Json<CreateKeyReq>,
) -> ApiResult<impl IntoResponse> {
    let (key, secret) = state
        .run(move |s| s.create_api_key(&caller, &r.name, r.role, r.expires_at))
        .await?;
    let key = ApiKeyView::from(&key);
    Ok((StatusCode::CREATED, axum::Json(CreatedKey { key, secret })))
}

/// Revoke a key; it stops working at once.
#[utoipa::path(delete, path = "/api/api-keys/{id}", tag = "api-keys", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = ApiKeyId::parse(&id).ok_or_else(|| ApiError::invalid_id("id"))?;
    state.run(move |s| s.delete_api_key(&caller, &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
