//! Tenant moves: `POST /api/tenants/{id}/export` (the tenant's admin or a platform admin)
//! streams one tenant's archive; `POST /api/tenants/import` (platform admin) creates the
//! tenant from one. The archive format and the rules are in `crate::backup`.

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody, ErrorCode};
use super::extract::{Auth, Query, parse_json};
use crate::auth::Action;
use crate::backup;
use crate::domain::audit::{AuditAction, AuditEntry};
use crate::types::TenantId;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use utoipa::{IntoParams, ToSchema};

/// The passphrase header of an import.
pub const PASSPHRASE_HEADER: &str = "x-export-passphrase";

impl From<backup::Error> for ApiError {
    fn from(e: backup::Error) -> Self {
        use backup::Error as E;
        if let Some(d) = e.io_kind().and_then(ApiError::disk) {
            return d;
        }
        match e {
            E::TenantNotFound => ApiError::of(ErrorCode::TenantNotFound, "tenant not found"),
            E::Conflict(m) => ApiError::of(ErrorCode::ImportConflict, m),
            E::Passphrase(m) => ApiError::of(ErrorCode::PassphraseRequired, m),
            E::Damaged(_) | E::TooNew(_) | E::WrongKind(_) | E::NotEmpty(_) => {
                ApiError::of(ErrorCode::InvalidArchive, e.to_string())
            }
            E::FileTooLarge(m, max) => ApiError::of(ErrorCode::PayloadTooLarge, m)
                .with_details(serde_json::json!({ "maxBytes": max })),
            E::Store(s) => crate::domain::Error::Store(s).into(),
            E::Io(_) | E::Busy => {
                tracing::error!(error = %e, "tenant export or import failed");
                ApiError::internal()
            }
        }
    }
}

/// Options of an export.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportReq {
    /// Re-seal the tenant's secrets (provider API keys, channel credentials, tool headers)
    /// under this passphrase (at least 12 characters), to be given at import. Without it
    /// they are left out of the export and must be entered again after the import.
    pub passphrase: Option<String>,
}

/// Export one tenant: every record and stored file of it, nothing of any other tenant, as a
/// `.tar.gz` archive (see README "Backups"). The tenant's admin or a platform admin. The body
/// may be empty.
#[utoipa::path(post, path = "/api/tenants/{id}/export", tag = "tenants",
    params(("id" = String, Path)),
    request_body(content = Option<ExportReq>, content_type = "application/json"),
    responses(
        (status = 200, description = "The archive", content_type = "application/gzip", body = Vec<u8>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 507, body = ErrorBody)))]
pub async fn export_tenant(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let id = TenantId::parse(&id).ok_or_else(|| ApiError::invalid_id("id"))?;
    caller
        .require_in(&id, Action::DeleteTenant)
        .map_err(|d| crate::domain::Error::denied(d, "tenant"))?;
    let req: ExportReq = if body.iter().all(u8::is_ascii_whitespace) {
        ExportReq::default()
    } else {
        parse_json(&body)?
    };
    let st = state.clone();
    let t = id.clone();
    let with_passphrase = req.passphrase.is_some();
    let file = tokio::task::spawn_blocking(
        move || -> Result<(std::fs::File, backup::Summary), backup::Error> {
            let f = unlinked_temp(&st.config.data_dir, "export")?;
            let secrets = match req.passphrase.as_deref() {
                Some(p) => backup::ExportSecrets::Passphrase(p),
                None => backup::ExportSecrets::Remove,
            };
            let mut w = std::io::BufWriter::new(&f);
            let summary = backup::export_tenant(
                &st.svc.store,
                &st.config.data_dir,
                &t,
                &st.svc.sealer,
                secrets,
                &mut w,
            )?;
            w.flush()?;
            drop(w);
            Ok((f, summary))
        },
    )
    .await
    .map_err(|_| ApiError::internal())??;
    let (file, summary) = file;
    // Exports are security-relevant: who took the tenant's data, and how much of it.
    let (c, t) = (caller.clone(), id.clone());
    state
        .run(move |s| {
            s.store.write(|tx| {
                s.audit(
                    tx,
                    &c,
                    AuditEntry::new(AuditAction::TenantExported)
                        .target("tenant", &t, None)
                        .details(serde_json::json!({
                            "rows": summary.tables.values().sum::<u64>(),
                            "files": summary.files,
                            "media": summary.media,
                            "secrets": if with_passphrase { "passphrase" } else { "removed" },
                        }))
                        .in_tenant(&t),
                )
            })
        })
        .await?;
    tracing::info!(tenant = %id, caller = %caller.label(), "tenant exported");
    let mut file = tokio::fs::File::from_std(file);
    use tokio::io::AsyncSeekExt;
    let len = file
        .seek(std::io::SeekFrom::End(0))
        .await
        .map_err(|_| ApiError::internal())?;
    file.seek(std::io::SeekFrom::Start(0))
        .await
        .map_err(|_| ApiError::internal())?;
    let body = Body::from_stream(tokio_util_stream(file));
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/gzip"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"aigentable-tenant-{id}.tar.gz\""
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send {
    futures_util::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    })
}

/// What an import brought in.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportView {
    pub tenant_id: String,
    /// Rows per table.
    pub tables: BTreeMap<String, u64>,
    pub files: u64,
    /// Channel media files (customers' attachments).
    pub media: u64,
}

/// Options of an import.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImportParams {
    /// `true`: import under a new tenant id (every id of the tenant is remapped; widget keys
    /// are new, widget visitors start new sessions), so an install that already has the
    /// tenant keeps both. Its users' emails must still be free here.
    #[param(value_type = Option<bool>)]
    pub as_new: Option<bool>,
}

/// Import a tenant export (platform admin): the tenant is created with its id (or, with
/// `asNew=true`, under a new one), users (passwords carry over), agents, documents and files,
/// channels, conversations. Refused (409 `import_conflict`, nothing written) when the tenant
/// exists here (without `asNew`) or one of its emails belongs to a user of this install. Sessions, API keys, invitations and reset links are
/// not carried over (they are bound to the old install's keys). The body is the archive
/// (`application/gzip`, at most `TENANT_IMPORT_MAX_BYTES`, each stored file in it at most
/// `BACKUP_MAX_FILE_BYTES`: 413 otherwise); `X-Export-Passphrase` when the
/// export was made with one.
#[utoipa::path(post, path = "/api/tenants/import", tag = "tenants",
    params(("X-Export-Passphrase" = Option<String>, Header, description = "The export's passphrase"), ImportParams),
    request_body(content = Vec<u8>, content_type = "application/gzip"),
    responses(
        (status = 201, body = ImportView),
        (status = 400, body = ErrorBody, description = "A query parameter is not valid (`asNew` must be true or false)"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 507, body = ErrorBody)))]
pub async fn import_tenant(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Query(params): Query<ImportParams>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let as_new = params.as_new.unwrap_or(false);
    caller
        .require(Action::CreateTenant)
        .map_err(|d| crate::domain::Error::denied(d, "tenant"))?;
    let passphrase = headers
        .get(PASSPHRASE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let max = state.config.tenant_import_max_bytes;
    // The archive goes to a file (unlinked at once), never to memory.
    let data_dir = state.config.data_dir.clone();
    let file = tokio::task::spawn_blocking(move || unlinked_temp(&data_dir, "import"))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(disk_or_internal)?;
    let mut out = tokio::fs::File::from_std(file);
    let mut stream = body.into_data_stream();
    let mut n: u64 = 0;
    use tokio::io::AsyncWriteExt;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|_| ApiError::of(ErrorCode::InvalidArchive, "the upload broke off"))?;
        n += chunk.len() as u64;
        if n > max {
            return Err(ApiError::of(
                ErrorCode::PayloadTooLarge,
                format!("the archive is larger than TENANT_IMPORT_MAX_BYTES ({max} bytes)"),
            )
            .with_details(serde_json::json!({ "maxBytes": max })));
        }
        out.write_all(&chunk).await.map_err(disk_or_internal)?;
    }
    out.flush().await.map_err(disk_or_internal)?;
    let file = out.into_std().await;
    let st = state.clone();
    let summary = tokio::task::spawn_blocking(move || {
        use std::io::Seek;
        let mut f = file;
        f.seek(std::io::SeekFrom::Start(0))?;
        st.import_tenant(std::io::BufReader::new(f), passphrase.as_deref(), as_new)
    })
    .await
    .map_err(|_| ApiError::internal())??;
    tracing::info!(tenant = ?summary.tenant_id, caller = %caller.label(), "tenant imported");
    if let Some(t) = summary.tenant_id.as_deref().and_then(TenantId::parse) {
        let (c, rows, files) = (
            caller.clone(),
            summary.tables.values().sum::<u64>(),
            summary.files,
        );
        state
            .run(move |s| {
                s.store.write(|tx| {
                    s.audit(
                        tx,
                        &c,
                        AuditEntry::new(AuditAction::TenantImported)
                            .target("tenant", &t, None)
                            .details(
                                serde_json::json!({"rows": rows, "files": files, "asNew": as_new}),
                            )
                            .in_tenant(&t),
                    )
                })
            })
            .await?;
    }
    let view = ImportView {
        tenant_id: summary.tenant_id.unwrap_or_default(),
        tables: summary.tables,
        files: summary.files,
        media: summary.media,
    };
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

/// A new read-write file under `<data>/tmp/`, unlinked at once: only the open handle reaches
/// it, and its disk space goes with the handle. Blocking.
fn unlinked_temp(data_dir: &std::path::Path, what: &str) -> std::io::Result<std::fs::File> {
    let tmp = data_dir.join("tmp");
    std::fs::create_dir_all(&tmp)?;
    let path = tmp.join(format!("{what}-{}.tar.gz", uuid::Uuid::now_v7()));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    let _ = std::fs::remove_file(&path);
    Ok(f)
}

fn disk_or_internal(e: std::io::Error) -> ApiError {
    ApiError::disk(e.kind()).unwrap_or_else(|| {
        tracing::error!(error = %e, "writing an import to disk failed");
        ApiError::internal()
    })
}

impl AppState {
    /// Imports a tenant export and builds its search indexes. Blocking.
    pub fn import_tenant(
        &self,
        input: impl std::io::Read,
        passphrase: Option<&str>,
        as_new: bool,
    ) -> Result<backup::Summary, backup::Error> {
        let s = backup::import_tenant(
            &self.svc.store,
            &self.config.data_dir,
            input,
            &self.svc.sealer,
            &backup::ImportOptions {
                passphrase,
                as_new,
                limits: backup::Limits::from_config(&self.config),
            },
        )?;
        if let Some(t) = s.tenant_id.as_deref().and_then(TenantId::parse)
            && let Err(e) = self.knowledge.index_tenant(&t)
        {
            tracing::error!(tenant = %t, error = %e, "indexing an imported tenant failed; run `aigentable reindex`");
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_errors_have_their_own_codes() {
        use std::io::{Error, ErrorKind};
        let full: ApiError = crate::domain::Error::Store(crate::store::Error::Disk(Error::from(
            ErrorKind::StorageFull,
        )))
        .into();
        assert_eq!(
            (full.status.as_u16(), &*full.code),
            (507, "insufficient_storage")
        );
        let quota = ApiError::disk(ErrorKind::QuotaExceeded).expect("mapped");
        assert_eq!(quota.status.as_u16(), 507);
        // A read-only data directory (remounted after a filesystem error): 503.
        let ro: ApiError = backup::Error::Io(Error::from(ErrorKind::ReadOnlyFilesystem)).into();
        assert_eq!((ro.status.as_u16(), &*ro.code), (503, "storage_read_only"));
        assert!(ApiError::disk(ErrorKind::PermissionDenied).is_none());
    }
}
