//! /api/tenants and /api/tenants/{id}/users: tenants, their users and invitations.

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Auth, Json, PageParams, Query};
use super::views::{InvitationView, Paged, TenantView, UserView, paged};
use crate::domain::tenants::TenantPatch;
use crate::domain::users::UserPatch;
use crate::model::TenantStatus;
use crate::types::{InvitationId, Role, TenantId, UserId};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

fn tenant_id(s: &str) -> ApiResult<TenantId> {
    TenantId::parse(s).ok_or_else(|| ApiError::invalid_id("id"))
}

#[derive(Deserialize, ToSchema)]
pub struct CreateTenantReq {
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    slug: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct UpdateTenantReq {
    #[schema(min_length = 1, max_length = 200)]
    name: Option<String>,
    /// PLATFORM_ADMIN only.
    status: Option<TenantStatus>,
    settings: Option<serde_json::Value>,
}

#[derive(Deserialize, ToSchema)]
pub struct InviteReq {
    #[schema(format = Email, max_length = 254)]
    email: String,
    role: Role,
    #[schema(min_length = 1, max_length = 200)]
    name: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InviteResponse {
    invitation: InvitationView,
    /// Link to hand to the invited person; contains the single-use token.
    invite_url: String,
    /// Whether the link was also emailed (SMTP configured).
    emailed: bool,
}

#[derive(Deserialize, ToSchema)]
pub struct UpdateUserReq {
    role: Option<Role>,
    #[schema(min_length = 1, max_length = 200)]
    name: Option<String>,
}

/// Tenants: all for a PLATFORM_ADMIN, one's own otherwise.
#[utoipa::path(get, path = "/api/tenants", tag = "tenants", params(PageParams),
    responses((status = 200, body = Paged<TenantView>), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Query(p): Query<PageParams>,
) -> ApiResult<axum::Json<Paged<TenantView>>> {
    let page = p.to_req()?;
    let r = state.run(move |s| s.list_tenants(&caller, &page)).await?;
    Ok(axum::Json(paged(r)))
}

/// Create a tenant (PLATFORM_ADMIN).
#[utoipa::path(post, path = "/api/tenants", tag = "tenants", request_body = CreateTenantReq,
    responses((status = 201, body = TenantView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Json(r): Json<CreateTenantReq>,
) -> ApiResult<impl IntoResponse> {
    let t = state
        .run(move |s| s.create_tenant(&caller, &r.name, r.slug.as_deref()))
        .await?;
    Ok((StatusCode::CREATED, axum::Json(TenantView::from(&t))))
}

#[utoipa::path(get, path = "/api/tenants/{id}", tag = "tenants", params(("id" = String, Path)),
    responses((status = 200, body = TenantView), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<TenantView>> {
    let id = tenant_id(&id)?;
    let t = state.run(move |s| s.get_tenant(&caller, &id)).await?;
    Ok(axum::Json(TenantView::from(&t)))
}

#[utoipa::path(put, path = "/api/tenants/{id}", tag = "tenants", params(("id" = String, Path)), request_body = UpdateTenantReq,
    responses((status = 200, body = TenantView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Json(r): Json<UpdateTenantReq>,
) -> ApiResult<axum::Json<TenantView>> {
    let id = tenant_id(&id)?;
    let patch = TenantPatch {
        name: r.name,
        status: r.status,
        settings: r.settings,
    };
    let t = state
        .run(move |s| s.update_tenant(&caller, &id, patch))
        .await?;
    Ok(axum::Json(TenantView::from(&t)))
}

/// Delete a tenant and every record and file of it.
#[utoipa::path(delete, path = "/api/tenants/{id}", tag = "tenants", params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = tenant_id(&id)?;
    state.run(move |s| s.delete_tenant(&caller, &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/tenants/{id}/users", tag = "tenants", params(("id" = String, Path), PageParams),
    responses((status = 200, body = Paged<UserView>), (status = 404, body = ErrorBody)))]
pub async fn list_users(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Query(p): Query<PageParams>,
) -> ApiResult<axum::Json<Paged<UserView>>> {
    let id = tenant_id(&id)?;
    let page = p.to_req()?;
    let r = state
        .run(move |s| s.list_users(&caller, &id, &page))
        .await?;
    Ok(axum::Json(paged(r)))
}

/// Invite a person; answers the invitation and a link to copy (also emailed when SMTP is set).
#[utoipa::path(post, path = "/api/tenants/{id}/users", tag = "tenants", params(("id" = String, Path)), request_body = InviteReq,
    responses((status = 402, body = ErrorBody, description = "`plan_limit_reached` (details: limit, used, max) or `subscription_inactive`"), (status = 201, body = InviteResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn invite_user(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Json(r): Json<InviteReq>,
) -> ApiResult<impl IntoResponse> {
    let id = tenant_id(&id)?;
    let invited = state
        .run(move |s| s.invite_user(&caller, &id, &r.email, r.role, r.name.as_deref()))
        .await?;
    // With SMTP, the domain queued the invitation's mail (a durable job) with it.
    let emailed = state.mailer.is_smtp();
    Ok((
        StatusCode::CREATED,
        axum::Json(InviteResponse {
            invitation: InvitationView::from(&invited.invitation),
            invite_url: invited.invite_url,
            emailed,
        }),
    ))
}

/// Pending and accepted invitations of a tenant.
#[utoipa::path(get, path = "/api/tenants/{id}/invitations", tag = "tenants", params(("id" = String, Path), PageParams),
    responses((status = 200, body = Paged<InvitationView>), (status = 404, body = ErrorBody)))]
pub async fn list_invitations(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Query(p): Query<PageParams>,
) -> ApiResult<axum::Json<Paged<InvitationView>>> {
    let id = tenant_id(&id)?;
    let page = p.to_req()?;
    let r = state
        .run(move |s| s.list_invitations(&caller, &id, &page))
        .await?;
    Ok(axum::Json(paged(r)))
}

/// Withdraw an invitation; its link stops working.
#[utoipa::path(delete, path = "/api/tenants/{id}/invitations/{invitationId}", tag = "tenants",
    params(("id" = String, Path), ("invitationId" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn revoke_invitation(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, inv)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let id = tenant_id(&id)?;
    let inv = InvitationId::parse(&inv).ok_or_else(|| ApiError::invalid_id("invitationId"))?;
    state
        .run(move |s| s.revoke_invitation(&caller, &id, &inv))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Change a user's role or name (TENANT_ADMIN). The last admin cannot be demoted.
#[utoipa::path(put, path = "/api/tenants/{id}/users/{userId}", tag = "tenants",
    params(("id" = String, Path), ("userId" = String, Path)), request_body = UpdateUserReq,
    responses((status = 200, body = UserView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn update_user(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, uid)): Path<(String, String)>,
    Json(r): Json<UpdateUserReq>,
) -> ApiResult<axum::Json<UserView>> {
    let id = tenant_id(&id)?;
    let uid = UserId::parse(&uid).ok_or_else(|| ApiError::invalid_id("userId"))?;
    let patch = UserPatch {
        role: r.role,
        name: r.name,
    };
    let user = state
        .run(move |s| s.update_user(&caller, &id, &uid, patch))
        .await?;
    Ok(axum::Json(UserView::from(&user)))
}

/// Remove a user (TENANT_ADMIN). The last admin cannot be removed.
#[utoipa::path(delete, path = "/api/tenants/{id}/users/{userId}", tag = "tenants",
    params(("id" = String, Path), ("userId" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_user(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, uid)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let id = tenant_id(&id)?;
    let uid = UserId::parse(&uid).ok_or_else(|| ApiError::invalid_id("userId"))?;
    state
        .run(move |s| s.delete_user(&caller, &id, &uid))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
