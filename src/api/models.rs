//! /api/models: the embedding models installed on this server, so a tenant admin can choose
//! one in /api/settings/embeddings (`modelFolder`). Views only: no file paths on the wire.

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::Auth;
use crate::embed::Location;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

/// One ONNX graph of a model folder.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GraphView {
    /// Relative to the model folder, e.g. `onnx/model_quantized.onnx`.
    file: String,
    /// `fp32`, `int8`, or the graph's own suffix (`O4`).
    variant: String,
    bytes: u64,
}

/// An installed model folder.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelView {
    /// The folder's name.
    name: String,
    /// `data`: under `<data>/models/`; `bundle`: shipped beside the executable.
    #[schema(example = "data")]
    location: &'static str,
    /// True when a tenant may send `name` as `modelFolder` in /api/settings/embeddings.
    selectable: bool,
    /// Vector length its config declares; null when it declares none.
    dimensions: Option<usize>,
    graphs: Vec<GraphView>,
    /// The graph loaded when EMBEDDINGS_ONNX_FILE is unset.
    default_graph: String,
    /// Size of the folder.
    bytes: u64,
    /// This folder is the server's default model.
    server_default: bool,
}

/// The embedder tenants without an override use.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerDefaultView {
    /// `onnx`, `openai` or `none`.
    provider: &'static str,
    model_id: Option<String>,
    dimensions: Option<usize>,
    /// The listed folder it was loaded from, when it is a local model.
    folder: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelsView {
    models: Vec<ModelView>,
    server_default: ServerDefaultView,
}

/// The embedding models installed on this server and which one is the default (tenant admins
/// and platform admins). Choose one for a tenant with PUT /api/settings/embeddings
/// `{"provider":"onnx","modelFolder":"<name>"}` (entries with `selectable`).
#[utoipa::path(get, path = "/api/models", tag = "settings",
    responses((status = 200, body = ModelsView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<axum::Json<ModelsView>> {
    let data_dir = state.config.data_dir.clone();
    let k = state.knowledge.clone();
    // Listing and comparing folders (symlinks resolved) both read the filesystem.
    let models = tokio::task::spawn_blocking(move || {
        let models =
            crate::models::installed(&caller, &data_dir, crate::embed::exe_dir().as_deref())?;
        let default_dir = k.global_model_dir();
        Ok::<_, crate::domain::Error>(
            models
                .into_iter()
                .map(|m| {
                    let is_default =
                        default_dir.is_some_and(|d| crate::models::same_folder(d, &m.dir));
                    (m, is_default)
                })
                .collect::<Vec<_>>(),
        )
    })
    .await
    .map_err(|_| ApiError::internal())??;
    let k = &state.knowledge;
    let folder = models
        .iter()
        .find(|(_, is_default)| *is_default)
        .map(|(m, _)| m.name.clone());
    let server_default = match k.global_model() {
        Some((id, dims)) => ServerDefaultView {
            provider: if id.starts_with("onnx:") {
                "onnx"
            } else {
                "openai"
            },
            model_id: Some(id.to_string()),
            dimensions: (dims > 0).then_some(dims),
            folder,
        },
        None => ServerDefaultView {
            provider: "none",
            model_id: None,
            dimensions: None,
            folder: None,
        },
    };
    let models = models
        .into_iter()
        .map(|(m, is_default)| ModelView {
            server_default: is_default,
            selectable: m.location == Location::Data,
            location: match m.location {
                Location::Data => "data",
                Location::Bundle => "bundle",
            },
            dimensions: m.dimensions,
            default_graph: m.default_graph.display().to_string(),
            graphs: m
                .graphs
                .into_iter()
                .map(|g| GraphView {
                    file: g.file.display().to_string(),
                    variant: g.variant,
                    bytes: g.bytes,
                })
                .collect(),
            bytes: m.bytes,
            name: m.name,
        })
        .collect();
    Ok(axum::Json(ModelsView {
        models,
        server_default,
    }))
}
