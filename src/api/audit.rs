//! /api/audit: the audit log, newest first, paged and filtered (see domain/audit.rs).

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Auth, Query, opt_id, page_req};
use super::views::{Paged, paged};
use crate::domain::audit::{AuditAction, AuditQuery};
use crate::model::AuditRecord;
use crate::types::{ApiKeyId, AuditId, Role, TenantId, Timestamp, UserId};
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Platform admins: only this tenant (the nil UUID is the platform scope). Others may
    /// only name their own tenant.
    #[param(format = Uuid)]
    tenant_id: Option<String>,
    /// Only this action, e.g. `auth.login_failed`.
    #[param(schema_with = action_schema)]
    action: Option<String>,
    /// Only entries of this actor: a user id, an API key id or an email.
    actor: Option<String>,
    /// RFC 3339: entries at or after this time.
    #[param(format = DateTime)]
    from: Option<String>,
    /// RFC 3339: entries at or before this time.
    #[param(format = DateTime)]
    to: Option<String>,
    /// 1-200, default 50.
    limit: Option<String>,
    /// `nextCursor` of the previous page.
    cursor: Option<String>,
}

/// The action names (a contract, never renamed), from the one list in domain/audit.rs.
fn action_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(AuditAction::ALL.iter().map(|a| a.as_str())))
        .build()
}

/// Who acted.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditActorView {
    /// `user`, `api_key`, `anonymous` (a sign-in attempt, a reset request) or `system`.
    pub kind: String,
    pub user_id: Option<UserId>,
    /// The actor's email when the entry was written (for a failed sign-in: the email tried).
    pub email: Option<String>,
    pub api_key_id: Option<ApiKeyId>,
    pub role: Option<Role>,
}

/// What the action was done to.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditTargetView {
    /// `user`, `invitation`, `api_key`, `tenant`, `channel` or `settings`.
    pub kind: String,
    pub id: Option<String>,
    pub label: Option<String>,
}

/// One audit log entry.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntryView {
    pub id: AuditId,
    /// The tenant the entry belongs to (the nil UUID: the platform scope).
    pub tenant_id: TenantId,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// e.g. `auth.login`, `api_key.created` (README, Audit log).
    pub action: String,
    /// `success` or `failure`.
    pub outcome: String,
    pub actor: AuditActorView,
    pub target: Option<AuditTargetView>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// Facts of the action (changed setting keys, old and new role, a failure's reason).
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// How many identical events the entry stands for (coalesced sign-in failures).
    pub count: u32,
    /// The time of the last of them, when more than one.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_at: Option<Timestamp>,
}

impl From<&AuditRecord> for AuditEntryView {
    fn from(r: &AuditRecord) -> Self {
        AuditEntryView {
            id: r.id.clone(),
            tenant_id: r.tenant_id.clone(),
            at: r.at,
            action: r.action.clone(),
            outcome: r.outcome.clone(),
            actor: AuditActorView {
                kind: r.actor.kind.clone(),
                user_id: r.actor.user_id.clone(),
                email: r.actor.email.clone(),
                api_key_id: r.actor.api_key_id.clone(),
                role: r.actor.role,
            },
            target: r.target.as_ref().map(|t| AuditTargetView {
                kind: t.kind.clone(),
                id: t.id.clone(),
                label: t.label.clone(),
            }),
            ip: r.ip.clone(),
            user_agent: r.user_agent.clone(),
            details: match &r.details {
                serde_json::Value::Null => serde_json::json!({}),
                d => d.clone(),
            },
            count: r.count,
            last_at: r.last_at,
        }
    }
}

fn bad_query(msg: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", msg)
}

fn time_param(v: Option<String>, name: &str) -> ApiResult<Option<Timestamp>> {
    match v.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339)
            .map(Some)
            .map_err(|_| bad_query(format!("{name} must be an RFC 3339 time"))),
    }
}

/// The audit log, newest first: sign-ins and failures, password resets, invitations, role
/// changes, removals, API keys, settings and channel credential changes, tenant status
/// changes, deletions and exports. TENANT_ADMIN: their tenant; PLATFORM_ADMIN: every
/// tenant (or `tenantId`); TENANT_USER: 403.
#[utoipa::path(get, path = "/api/audit", tag = "audit", params(AuditParams),
    responses((status = 200, body = Paged<AuditEntryView>), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Query(q): Query<AuditParams>,
) -> ApiResult<axum::Json<Paged<AuditEntryView>>> {
    let page = page_req(q.limit.as_deref(), q.cursor.as_deref())?;
    let action = match q.action.filter(|a| !a.is_empty()) {
        None => None,
        Some(a) => Some(AuditAction::parse(&a).ok_or_else(|| {
            bad_query(format!(
                "action must be one of: {}",
                AuditAction::ALL
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?),
    };
    let query = AuditQuery {
        tenant: opt_id(q.tenant_id, "tenantId", TenantId::parse)?,
        action,
        actor: q.actor.filter(|a| !a.trim().is_empty()),
        from: time_param(q.from, "from")?,
        to: time_param(q.to, "to")?,
        page,
    };
    let r = state.run(move |s| s.list_audit(&caller, &query)).await?;
    Ok(axum::Json(paged(r)))
}
