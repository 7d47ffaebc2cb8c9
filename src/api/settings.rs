//! /api/settings: the tenant's provider settings (TENANT_ADMIN).

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Auth, Json};
use crate::agent::ProviderTest;
use crate::domain::settings::{AiSettingsPatch, AiSettingsView, EmbeddingSettingsPatch};
use crate::knowledge::settings::{EmbeddingSettingsView, SettingsError};
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use super::extract::double;

/// Absent keeps a value; `null` returns to the server default. `apiKey` is write-only.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AiSettingsReq {
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<String>)]
    base_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 500)]
    api_key: Option<Option<String>>,
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 200)]
    model: Option<Option<String>>,
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<u32>)]
    context_window: Option<Option<u32>>,
}

#[utoipa::path(get, path = "/api/settings/ai", tag = "settings",
    responses((status = 200, body = AiSettingsView), (status = 403, body = ErrorBody)))]
pub async fn get_ai(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<axum::Json<AiSettingsView>> {
    Ok(axum::Json(
        state.run(move |s| s.get_ai_settings(&caller)).await?,
    ))
}

#[utoipa::path(put, path = "/api/settings/ai", tag = "settings", request_body = AiSettingsReq,
    responses((status = 200, body = AiSettingsView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn put_ai(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Json(r): Json<AiSettingsReq>,
) -> ApiResult<axum::Json<AiSettingsView>> {
    let p = AiSettingsPatch {
        base_url: r.base_url,
        api_key: r.api_key,
        model: r.model,
        context_window: r.context_window,
    };
    Ok(axum::Json(
        state.run(move |s| s.put_ai_settings(&caller, p)).await?,
    ))
}

/// A tenant's embedding override. Absent keeps; `null` clears. `apiKey` is write-only.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmbeddingSettingsReq {
    /// `onnx`, `openai` or `none`; `null` returns to the server default.
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<String>)]
    provider: Option<Option<String>>,
    /// For `onnx`: the name of a model folder under `<data>/models/`.
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<String>)]
    model_folder: Option<Option<String>>,
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<String>)]
    base_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<String>)]
    model: Option<Option<String>>,
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<String>)]
    api_key: Option<Option<String>>,
}

fn settings_error(e: SettingsError) -> ApiError {
    match e {
        SettingsError::Domain(e) => e.into(),
        SettingsError::Unavailable(e) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "embeddings_unavailable",
            e.to_string(),
        ),
        SettingsError::Reembed(e) => {
            tracing::error!(error = %e, "queueing re-embedding failed");
            ApiError::internal()
        }
        SettingsError::Internal(e) => {
            tracing::error!(error = %e, "embedding settings");
            ApiError::internal()
        }
    }
}

#[utoipa::path(get, path = "/api/settings/embeddings", tag = "settings",
    responses((status = 200, body = EmbeddingSettingsView), (status = 403, body = ErrorBody)))]
pub async fn get_embeddings(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<axum::Json<EmbeddingSettingsView>> {
    let k = state.knowledge.clone();
    let view = tokio::task::spawn_blocking(move || k.embedding_settings(&caller))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(settings_error)?;
    Ok(axum::Json(view))
}

/// Override the embedding model for this tenant. The new settings are tried first (model
/// loaded, endpoint called once): settings that do not work answer 422
/// `embeddings_unavailable` and are not saved. A change re-embeds the tenant's chunks in the
/// background (vectors of different models never mix).
#[utoipa::path(put, path = "/api/settings/embeddings", tag = "settings", request_body = EmbeddingSettingsReq,
    responses((status = 200, body = EmbeddingSettingsView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_embeddings(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Json(r): Json<EmbeddingSettingsReq>,
) -> ApiResult<axum::Json<EmbeddingSettingsView>> {
    let p = EmbeddingSettingsPatch {
        provider: r.provider,
        model_folder: r.model_folder,
        base_url: r.base_url,
        model: r.model,
        api_key: r.api_key,
    };
    let k = state.knowledge.clone();
    let view = tokio::task::spawn_blocking(move || k.put_embedding_settings(&caller, p))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(settings_error)?;
    Ok(axum::Json(view))
}

/// Try the saved AI provider: one tiny completion with the default model, then the
/// endpoint's model list. 200 either way: `ok` says whether the model answered, `error`
/// says why not in plain words (the provider's own message included, never the key).
#[utoipa::path(post, path = "/api/settings/provider/test", tag = "settings",
    responses((status = 200, body = ProviderTest), (status = 403, body = ErrorBody)))]
pub async fn test_provider(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<axum::Json<ProviderTest>> {
    let c = caller.clone();
    state.run(move |s| s.may_test_provider(&c)).await?;
    let out = state.engine.test_provider(&caller).await.map_err(|e| {
        tracing::error!(error = %e, "provider test");
        ApiError::internal()
    })?;
    Ok(axum::Json(out))
}
