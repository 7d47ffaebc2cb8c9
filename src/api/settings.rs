//! /api/settings: the tenant's provider settings (TENANT_ADMIN).

use super::AppState;
use super::error::{ApiResult, ErrorBody};
use super::extract::{Auth, Json};
use crate::domain::settings::{AiSettingsPatch, AiSettingsView};
use axum::extract::State;
use serde::{Deserialize, Serialize};
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

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmbeddingSettingsView {
    /// What the tenant uses now.
    effective: String,
    /// The model id recorded on new vectors; null for keyword-only.
    model_id: Option<String>,
    /// The tenant's override (null: the server default applies).
    #[serde(rename = "override")]
    over: Option<serde_json::Value>,
    api_key_set: bool,
}

fn embedding_view(
    state: &AppState,
    t: &crate::types::TenantId,
) -> ApiResult<EmbeddingSettingsView> {
    let settings = state.svc.tenant_settings(t)?;
    let space = state.knowledge.space_for(t).map_err(|e| {
        super::error::ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "embeddings_unavailable",
            e.to_string(),
        )
    })?;
    let mut over = settings.embeddings.clone();
    let api_key_set = over
        .as_ref()
        .is_some_and(|o| o.get("apiKeySealed").is_some());
    if let Some(serde_json::Value::Object(m)) = over.as_mut() {
        m.remove("apiKeySealed");
    }
    Ok(EmbeddingSettingsView {
        effective: match &space {
            Some(s) => s.description.clone(),
            None => "none: keyword retrieval only".into(),
        },
        model_id: space.as_ref().map(|s| s.model_id().to_string()),
        over,
        api_key_set,
    })
}

#[utoipa::path(get, path = "/api/settings/embeddings", tag = "settings",
    responses((status = 200, body = EmbeddingSettingsView), (status = 403, body = ErrorBody)))]
pub async fn get_embeddings(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<axum::Json<EmbeddingSettingsView>> {
    caller
        .require(crate::auth::Action::ManageSettings)
        .map_err(|d| crate::domain::Error::denied(d, "settings"))?;
    let st = state.clone();
    let view = tokio::task::spawn_blocking(move || embedding_view(&st, &caller.tenant_id))
        .await
        .map_err(|_| super::error::ApiError::internal())??;
    Ok(axum::Json(view))
}

/// Override the embedding model for this tenant. A change re-embeds the tenant's chunks in
/// the background (vectors of different models never mix).
#[utoipa::path(put, path = "/api/settings/embeddings", tag = "settings", request_body = EmbeddingSettingsReq,
    responses((status = 200, body = EmbeddingSettingsView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_embeddings(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Json(r): Json<EmbeddingSettingsReq>,
) -> ApiResult<axum::Json<EmbeddingSettingsView>> {
    caller
        .require(crate::auth::Action::ManageSettings)
        .map_err(|d| crate::domain::Error::denied(d, "settings"))?;
    let mut c = crate::domain::Checks::default();
    if let Some(Some(p)) = &r.provider {
        c.check(
            matches!(p.as_str(), "onnx" | "openai" | "none"),
            "provider",
            "must be onnx, openai or none",
        );
    }
    if let Some(Some(f)) = &r.model_folder {
        c.check(
            !f.is_empty()
                && f.len() <= 100
                && f.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && !f.starts_with('.'),
            "modelFolder",
            "must be the name of a folder under <data>/models",
        );
    }
    if let Some(Some(u)) = &r.base_url {
        c.check(
            url::Url::parse(u)
                .map(|u| matches!(u.scheme(), "http" | "https"))
                .unwrap_or(false),
            "baseUrl",
            "must be an http(s) URL",
        );
    }
    c.finish().map_err(super::error::ApiError::from)?;
    let st = state.clone();
    let t = caller.tenant_id.clone();
    let view = tokio::task::spawn_blocking(move || -> ApiResult<EmbeddingSettingsView> {
        let before = st
            .knowledge
            .space_for(&t)
            .ok()
            .flatten()
            .map(|s| s.model_id().to_string());
        let data_dir = st.config.data_dir.clone();
        st.svc.store.write(|tx| {
            let mut s = tx
                .get::<crate::model::TenantSettings>(&t, "")?
                .unwrap_or_else(|| crate::model::TenantSettings {
                    tenant_id: t.clone(),
                    ..Default::default()
                });
            let mut o = match s.embeddings.take() {
                Some(serde_json::Value::Object(m)) => m,
                _ => serde_json::Map::new(),
            };
            let mut set = |k: &str, v: Option<Option<String>>| match v {
                Some(Some(x)) => {
                    o.insert(k.into(), serde_json::Value::String(x));
                }
                Some(None) => {
                    o.remove(k);
                }
                None => {}
            };
            set("provider", r.provider.clone());
            set("baseUrl", r.base_url.clone());
            set("model", r.model.clone());
            set(
                "modelDir",
                r.model_folder
                    .clone()
                    .map(|f| f.map(|f| data_dir.join("models").join(f).display().to_string())),
            );
            match &r.api_key {
                Some(Some(k)) => {
                    o.insert(
                        "apiKeySealed".into(),
                        serde_json::Value::String(st.svc.sealer.seal(k)),
                    );
                }
                Some(None) => {
                    o.remove("apiKeySealed");
                }
                None => {}
            }
            s.embeddings = (!o.is_empty()).then_some(serde_json::Value::Object(o));
            tx.put(&s)?;
            Ok::<_, crate::domain::Error>(())
        })?;
        let view = embedding_view(&st, &t)?;
        if view.model_id.is_some() && view.model_id != before {
            st.knowledge.queue_reembed(&t).map_err(|e| {
                tracing::error!(error = %e, "queueing re-embedding failed");
                super::error::ApiError::internal()
            })?;
        }
        Ok(view)
    })
    .await
    .map_err(|_| super::error::ApiError::internal())??;
    Ok(axum::Json(view))
}
