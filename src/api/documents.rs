//! /api/documents, /api/knowledge/search and /api/jobs: the knowledge base.

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Auth, Json, PageParams, Query, opt_id, page_req};
use super::views::{ChunkView, DocumentView, JobView, Paged, paged};
use crate::auth::Action;
use crate::domain::Error as DomainError;
use crate::domain::documents::DocumentFilter;
use crate::knowledge::pipeline::UploadError;
use crate::knowledge::{SearchMode, SearchQuery, SearchResult};
use crate::model::DocumentStatus;
use crate::types::{AgentId, DocumentId, JobId};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

fn doc_id(s: &str) -> ApiResult<DocumentId> {
    DocumentId::parse(s).ok_or_else(|| ApiError::invalid_id("id"))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "knowledge operation failed");
    ApiError::internal()
}

/// A knowledge error: the domain's (permission, not found) as such, anything else ours.
fn knowledge_err(e: crate::knowledge::Error) -> ApiError {
    match e {
        crate::knowledge::Error::Domain(d) => d.into(),
        crate::knowledge::Error::Store(s) => crate::domain::Error::Store(s).into(),
        other => internal(other),
    }
}

#[derive(Serialize, ToSchema)]
pub struct DocumentList {
    data: Vec<DocumentView>,
}

/// Upload one or more files (`file` parts) and optionally `agentIds` (comma-separated or a
/// JSON array, or repeated). Each document starts `queued`; poll it for progress.
#[utoipa::path(post, path = "/api/documents", tag = "knowledge",
    request_body(content_type = "multipart/form-data", description = "`file` parts (PDF, DOCX, TXT, Markdown, HTML, CSV) and optional `agentIds`"),
    responses((status = 402, body = ErrorBody, description = "`plan_limit_reached` (details: limit, used, max) or `subscription_inactive`"), (status = 202, body = DocumentList), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn upload(
    State(state): State<AppState>,
    Auth(caller): Auth,
    form: super::upload::UploadForm,
) -> ApiResult<impl IntoResponse> {
    // Fail before reading a large body; `Knowledge::upload` checks again (the real gate).
    caller
        .require(Action::ManageDocuments)
        .map_err(|d| ApiError::from(DomainError::denied(d, "document")))?;
    state
        .limits
        .upload
        .check(&format!("t:{}", caller.tenant()))?;
    let super::upload::Uploaded { files, agent_ids } =
        form.read(state.config.upload_max_bytes).await?;
    let k = state.knowledge.clone();
    let created = tokio::task::spawn_blocking(move || k.upload(&caller, files, &agent_ids))
        .await
        .map_err(internal)?
        .map_err(|e| match e {
            UploadError::AgentNotFound => ApiError::from(DomainError::NotFound("agent")),
            UploadError::Empty { file } => ApiError::new(
                StatusCode::BAD_REQUEST,
                "empty_file",
                format!("`{file}` is empty"),
            )
            .with_details(serde_json::json!({"file": file})),
            UploadError::Unsupported { file, reason } => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "`{file}`: {reason}. Supported: PDF, DOCX, plain text, Markdown, HTML, CSV"
                ),
            )
            .with_details(serde_json::json!({"file": file})),
            UploadError::Duplicate { file, existing } => ApiError::new(
                StatusCode::CONFLICT,
                "duplicate_document",
                format!("`{file}` was already uploaded"),
            )
            .with_details(serde_json::json!({"documentId": existing, "file": file})),
            UploadError::Failed(e) => knowledge_err(e),
        })?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(DocumentList {
            data: created.iter().map(|(d, _)| DocumentView::from(d)).collect(),
        }),
    ))
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct DocumentListParams {
    status: Option<DocumentStatus>,
    agent_id: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/documents", tag = "knowledge", params(DocumentListParams),
    responses((status = 200, body = Paged<DocumentView>)))]
pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Query(q): Query<DocumentListParams>,
) -> ApiResult<axum::Json<Paged<DocumentView>>> {
    let page = page_req(q.limit.as_deref(), q.cursor.as_deref())?;
    let agent = opt_id(q.agent_id, "agentId", AgentId::parse)?;
    let f = DocumentFilter {
        status: q.status,
        agent_id: agent,
    };
    let r = state
        .run(move |s| s.list_documents(&caller, &f, &page))
        .await?;
    Ok(axum::Json(paged(r)))
}

#[utoipa::path(get, path = "/api/documents/{id}", tag = "knowledge", params(("id" = String, Path)),
    responses((status = 200, body = DocumentView), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<DocumentView>> {
    let id = doc_id(&id)?;
    let d = state.run(move |s| s.get_document(&caller, &id)).await?;
    Ok(axum::Json(DocumentView::from(&d)))
}

/// Delete a document with its file, chunks, vectors and index entries (safe while processing).
#[utoipa::path(delete, path = "/api/documents/{id}", tag = "knowledge", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = doc_id(&id)?;
    let k = state.knowledge.clone();
    let removed = tokio::task::spawn_blocking(move || k.delete_document(&caller, &id))
        .await
        .map_err(internal)?
        .map_err(knowledge_err)?;
    if !removed {
        return Err(DomainError::NotFound("document").into());
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct Reprocessing {
    document: DocumentView,
    job: JobView,
}

/// Run the pipeline again (e.g. after a model change).
#[utoipa::path(post, path = "/api/documents/{id}/process", tag = "knowledge", params(("id" = String, Path)),
    responses((status = 202, body = Reprocessing), (status = 404, body = ErrorBody)))]
pub async fn process(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let id = doc_id(&id)?;
    let k = state.knowledge.clone();
    let r = tokio::task::spawn_blocking(move || k.reprocess(&caller, &id))
        .await
        .map_err(internal)?
        .map_err(knowledge_err)?;
    let (document, job) = r.ok_or(DomainError::NotFound("document"))?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(Reprocessing {
            document: DocumentView::from(&document),
            job: JobView::from(&job),
        }),
    ))
}

/// The chunks of a document, in order.
#[utoipa::path(get, path = "/api/documents/{id}/chunks", tag = "knowledge", params(("id" = String, Path), PageParams),
    responses((status = 200, body = Paged<ChunkView>), (status = 404, body = ErrorBody)))]
pub async fn chunks(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Query(p): Query<PageParams>,
) -> ApiResult<axum::Json<Paged<ChunkView>>> {
    let id = doc_id(&id)?;
    let page = p.to_req()?;
    let r = state
        .run(move |s| s.list_chunks(&caller, &id, &page))
        .await?;
    Ok(axum::Json(paged(r)))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchReq {
    #[schema(min_length = 1, max_length = 2000)]
    query: String,
    agent_id: Option<AgentId>,
    document_ids: Option<Vec<DocumentId>>,
    /// 1-50, default 8.
    #[schema(minimum = 1, maximum = 50)]
    top_k: Option<usize>,
    #[serde(default)]
    mode: SearchMode,
}

/// Search the tenant's knowledge: keyword (BM25), vector, or hybrid (fused; see README).
#[utoipa::path(post, path = "/api/knowledge/search", tag = "knowledge", request_body = SearchReq,
    responses((status = 200, body = SearchResult), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn search(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Json(r): Json<SearchReq>,
) -> ApiResult<axum::Json<SearchResult>> {
    let mut c = crate::domain::Checks::default();
    c.check(!r.query.trim().is_empty(), "query", "must not be empty");
    c.check(
        r.query.chars().count() <= 2000,
        "query",
        "must be at most 2000 characters",
    );
    c.check(
        r.top_k.is_none_or(|k| (1..=50).contains(&k)),
        "topK",
        "must be between 1 and 50",
    );
    c.finish().map_err(ApiError::from)?;
    let k = state.knowledge.clone();
    let res = tokio::task::spawn_blocking(move || -> ApiResult<SearchResult> {
        let documents = match &r.agent_id {
            Some(a) => Some(
                k.agent_scope(&caller, a, r.document_ids)
                    .map_err(knowledge_err)?
                    .ok_or(DomainError::NotFound("agent"))?,
            ),
            None => r.document_ids,
        };
        let q = SearchQuery {
            query: r.query,
            documents,
            top_k: r.top_k.unwrap_or(8),
            mode: r.mode,
        };
        k.search(&caller, &q).map_err(|e| match e {
            // No model configured, or the tenant's model unusable now: one code, one status.
            crate::knowledge::search::SearchError::NoEmbeddings
            | crate::knowledge::search::SearchError::Unavailable(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "embeddings_unavailable",
                e.to_string(),
            ),
            crate::knowledge::search::SearchError::Other(e) => knowledge_err(e),
        })
    })
    .await
    .map_err(internal)??;
    Ok(axum::Json(res))
}

/// A background job (processing, training), for polling.
#[utoipa::path(get, path = "/api/jobs/{id}", tag = "knowledge", params(("id" = String, Path)),
    responses((status = 200, body = JobView), (status = 404, body = ErrorBody)))]
pub async fn job(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<JobView>> {
    let id = JobId::parse(&id).ok_or_else(|| ApiError::invalid_id("id"))?;
    let j = state.run(move |s| s.get_job(&caller, &id)).await?;
    Ok(axum::Json(JobView::from(&j)))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct TrainReq {
    /// Documents to attach to the agent before training.
    #[serde(default)]
    document_ids: Vec<DocumentId>,
}

/// Attach documents to an agent and (re)index those not ready yet. Answers the job.
#[utoipa::path(post, path = "/api/agents/{id}/train", tag = "agents", params(("id" = String, Path)), request_body(content = Option<TrainReq>, description = "Optional: an empty body trains on the documents already attached"),
    responses((status = 202, body = JobView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn train(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    axum::Extension(limit): axum::Extension<super::extract::JsonLimit>,
    body: axum::body::Body,
) -> ApiResult<impl IntoResponse> {
    let id = super::agents::agent_id(&id)?;
    let req: TrainReq = super::extract::optional_json(body, limit).await?;
    let k = state.knowledge.clone();
    let job = state
        .run(move |_| k.train_agent(&caller, &id, req.document_ids))
        .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(JobView::from(&job))))
}
