//! /api/settings: the tenant's provider settings (TENANT_ADMIN).

use super::AppState;
use super::error::{ApiResult, ErrorBody};
use super::extract::{Auth, Json};
use crate::domain::settings::{AiSettingsPatch, AiSettingsView};
use axum::extract::State;
use serde::{Deserialize, Deserializer};
use utoipa::ToSchema;

fn double<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

/// Absent keeps a value; `null` returns to the server default. `apiKey` is write-only.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AiSettingsReq {
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<String>)]
    base_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<String>)]
    api_key: Option<Option<String>>,
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<String>)]
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
