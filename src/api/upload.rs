//! The multipart body of POST /api/documents as an extractor: `file` parts and optional
//! `agentIds`, read within the upload limits, every rejection in the one JSON error body
//! (never axum's text/plain multipart rejections).
//!
//! Extraction only checks that the body is `multipart/form-data` with a boundary; the parts
//! are read by [`UploadForm::read`], so a handler refuses a caller without the right role
//! (or over its rate limit) before the server reads megabytes of body.

use super::error::{ApiError, ApiResult};
use crate::knowledge::pipeline::Upload;
use crate::types::AgentId;
use axum::extract::multipart::MultipartError;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{StatusCode, header};

/// Most `file` parts in one upload.
pub const MAX_FILES: usize = 20;

/// A `multipart/form-data` upload, not yet read.
pub struct UploadForm(Multipart);

/// What an upload carried.
pub struct Uploaded {
    pub files: Vec<Upload>,
    pub agent_ids: Vec<AgentId>,
}

impl<S: Send + Sync> FromRequest<S> for UploadForm {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let mime = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase())
            .unwrap_or_default();
        if mime != "multipart/form-data" {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected a multipart/form-data body with `file` parts",
            ));
        }
        Multipart::from_request(req, state)
            .await
            .map(UploadForm)
            .map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_multipart",
                    format!("the multipart body cannot be read: {}", e.body_text()),
                )
            })
    }
}

fn bad_multipart(e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the upload is larger than this server accepts",
        )
    } else {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_multipart",
            format!("the multipart body cannot be read: {}", e.body_text()),
        )
    }
}

impl UploadForm {
    /// Reads every part: each file at most `max_bytes`, at most [`MAX_FILES`] files, at least
    /// one. Unknown parts are ignored.
    pub async fn read(mut self, max_bytes: u64) -> ApiResult<Uploaded> {
        let mut files: Vec<Upload> = Vec::new();
        let mut agent_ids: Vec<AgentId> = Vec::new();
        while let Some(mut field) = self.0.next_field().await.map_err(bad_multipart)? {
            match field.name() {
                Some("file" | "files" | "file[]" | "files[]") => {
                    if files.len() >= MAX_FILES {
                        return Err(ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "validation_failed",
                            format!("at most {MAX_FILES} files per upload"),
                        ));
                    }
                    let name = field
                        .file_name()
                        .unwrap_or("upload")
                        .chars()
                        .filter(|c| !c.is_control())
                        .take(255)
                        .collect::<String>();
                    let mime = field.content_type().map(str::to_string);
                    let mut bytes = Vec::new();
                    while let Some(chunk) = field.chunk().await.map_err(bad_multipart)? {
                        if (bytes.len() + chunk.len()) as u64 > max_bytes {
                            return Err(ApiError::new(
                                StatusCode::PAYLOAD_TOO_LARGE,
                                "payload_too_large",
                                format!(
                                    "`{name}` is larger than the {} MB upload limit",
                                    max_bytes / (1024 * 1024)
                                ),
                            )
                            .with_details(
                                serde_json::json!({"file": name, "maxBytes": max_bytes}),
                            ));
                        }
                        bytes.extend_from_slice(&chunk);
                    }
                    files.push(Upload { name, mime, bytes });
                }
                Some("agentIds" | "agentIds[]") => {
                    let text = field.text().await.map_err(bad_multipart)?;
                    agent_ids.extend(agent_ids_of(&text)?);
                }
                _ => {}
            }
        }
        if files.is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "validation_failed",
                "no `file` part in the upload",
            )
            .with_details(
                serde_json::json!({"fields": [{"field": "file", "message": "is required"}]}),
            ));
        }
        Ok(Uploaded { files, agent_ids })
    }
}

/// `agentIds` as comma-separated ids or a JSON array of ids.
fn agent_ids_of(text: &str) -> ApiResult<Vec<AgentId>> {
    let items: Vec<String> = if text.trim_start().starts_with('[') {
        serde_json::from_str(text).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "validation_failed",
                "agentIds must be ids, comma-separated or a JSON array",
            )
        })?
    } else {
        text.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    items
        .iter()
        .map(|i| AgentId::parse(i).ok_or_else(|| ApiError::invalid_id("agentIds")))
        .collect()
}
