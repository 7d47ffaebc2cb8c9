//! /api/plans, /api/subscription and /api/tenants/{id}/subscription: the operator's plans
//! and each tenant's subscription with its usage against the plan's limits.

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Auth, Json, PageParams, Query, double};
use super::views::Paged;
use crate::domain::plans::{PlanInput, SubscriptionChange, SubscriptionInfo, UsageLine};
use crate::model::{Plan, PlanLimits, SubscriptionStatus};
use crate::types::{PlanId, TenantId};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

fn plan_id(s: &str) -> ApiResult<PlanId> {
    PlanId::parse(s).ok_or_else(|| ApiError::invalid_id("id"))
}

/// A plan. Limits are numbers or `null` (unlimited).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanView {
    id: PlanId,
    name: String,
    limits: PlanLimits,
    price_text: Option<String>,
    /// The plan new tenants get.
    is_default: bool,
    /// The built-in unlimited plan (the nil UUID): cannot be changed or deleted.
    built_in: bool,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "time::serde::rfc3339")]
    created_at: time::OffsetDateTime,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "time::serde::rfc3339")]
    updated_at: time::OffsetDateTime,
}

impl From<&Plan> for PlanView {
    fn from(p: &Plan) -> Self {
        PlanView {
            id: p.id.clone(),
            name: p.name.clone(),
            limits: p.limits.clone(),
            price_text: p.price_text.clone(),
            is_default: p.is_default,
            built_in: p.id == crate::domain::plans::builtin_plan_id(),
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// One limit against its usage.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LimitUsageView {
    used: u64,
    /// `null`: unlimited.
    limit: Option<u64>,
    /// `floor(100 * used / limit)` (above 100 after a downgrade); `null` when unlimited.
    percent: Option<u64>,
}

impl From<&UsageLine> for LimitUsageView {
    fn from(u: &UsageLine) -> Self {
        LimitUsageView {
            used: u.used,
            limit: u.max,
            percent: u.percent(),
        }
    }
}

/// Usage per limit.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageByLimit {
    agents: LimitUsageView,
    documents: LimitUsageView,
    storage_bytes: LimitUsageView,
    /// AI replies in the current period.
    messages_per_month: LimitUsageView,
    channels: LimitUsageView,
    /// Users plus pending invitations.
    seats: LimitUsageView,
    api_keys: LimitUsageView,
}

/// A tenant's subscription: plan, status, period and usage against the plan's limits.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionView {
    tenant_id: TenantId,
    plan: PlanView,
    status: SubscriptionStatus,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "time::serde::rfc3339")]
    period_start: time::OffsetDateTime,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "time::serde::rfc3339")]
    period_end: time::OffsetDateTime,
    usage: UsageByLimit,
}

impl From<&SubscriptionInfo> for SubscriptionView {
    fn from(s: &SubscriptionInfo) -> Self {
        use crate::domain::plans::Limit;
        let of = |l: Limit| {
            s.usage
                .iter()
                .find(|u| u.limit == l)
                .map(LimitUsageView::from)
                .unwrap_or(LimitUsageView {
                    used: 0,
                    limit: None,
                    percent: None,
                })
        };
        SubscriptionView {
            tenant_id: s.tenant_id.clone(),
            plan: PlanView::from(&s.plan),
            status: s.status,
            period_start: s.period_start,
            period_end: s.period_end,
            usage: UsageByLimit {
                agents: of(Limit::Agents),
                documents: of(Limit::Documents),
                storage_bytes: of(Limit::StorageBytes),
                messages_per_month: of(Limit::MessagesPerMonth),
                channels: of(Limit::Channels),
                seats: of(Limit::Seats),
                api_keys: of(Limit::ApiKeys),
            },
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanReq {
    #[schema(min_length = 1, max_length = 100)]
    name: Option<String>,
    /// Every limit; an absent (or `null`) limit is unlimited. On update, replaces all limits.
    limits: Option<PlanLimits>,
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<String>, max_length = 200)]
    price_text: Option<Option<String>>,
    /// Make this the plan new tenants get (the previous default stops being one).
    is_default: Option<bool>,
}

impl From<PlanReq> for PlanInput {
    fn from(r: PlanReq) -> Self {
        PlanInput {
            name: r.name,
            limits: r.limits,
            price_text: r.price_text,
            is_default: r.is_default,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionReq {
    plan_id: PlanId,
    status: Option<SubscriptionStatus>,
    /// RFC 3339, in the future: the current period ends then (the next ones are monthly).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    period_end: Option<time::OffsetDateTime>,
}

/// The caller's tenant's plan, status, period and usage against the limits.
#[utoipa::path(get, path = "/api/subscription", tag = "plans",
    responses((status = 200, body = SubscriptionView), (status = 404, body = ErrorBody, description = "`tenant_not_found`: a platform admin not acting in a tenant (X-Tenant-Id)")))]
pub async fn mine(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<axum::Json<SubscriptionView>> {
    let s = state.run(move |s| s.my_subscription(&caller)).await?;
    Ok(axum::Json(SubscriptionView::from(&s)))
}

/// Move a tenant to a plan, set its status or period end (PLATFORM_ADMIN).
#[utoipa::path(put, path = "/api/tenants/{id}/subscription", tag = "plans", params(("id" = String, Path)), request_body = SubscriptionReq,
    responses((status = 200, body = SubscriptionView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody, description = "`tenant_not_found`, `plan_not_found`")))]
pub async fn set_subscription(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Json(r): Json<SubscriptionReq>,
) -> ApiResult<axum::Json<SubscriptionView>> {
    let id = TenantId::parse(&id).ok_or_else(|| ApiError::invalid_id("id"))?;
    let change = SubscriptionChange {
        plan_id: r.plan_id,
        status: r.status,
        period_end: r.period_end,
    };
    let s = state
        .run(move |s| s.set_subscription(&caller, &id, change))
        .await?;
    Ok(axum::Json(SubscriptionView::from(&s)))
}

/// Every plan, the built-in unlimited one first (PLATFORM_ADMIN).
#[utoipa::path(get, path = "/api/plans", tag = "plans", params(PageParams),
    responses((status = 200, body = Paged<PlanView>), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Query(p): Query<PageParams>,
) -> ApiResult<axum::Json<Paged<PlanView>>> {
    let page = p.to_req()?;
    let r = state.run(move |s| s.list_plans(&caller, &page)).await?;
    Ok(axum::Json(super::views::paged(r)))
}

/// Create a plan (PLATFORM_ADMIN). A missing limit is unlimited.
#[utoipa::path(post, path = "/api/plans", tag = "plans", request_body = PlanReq,
    responses((status = 201, body = PlanView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Json(r): Json<PlanReq>,
) -> ApiResult<impl IntoResponse> {
    let p = state.run(move |s| s.create_plan(&caller, r.into())).await?;
    Ok((StatusCode::CREATED, axum::Json(PlanView::from(&p))))
}

#[utoipa::path(get, path = "/api/plans/{id}", tag = "plans", params(("id" = String, Path)),
    responses((status = 200, body = PlanView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<PlanView>> {
    let id = plan_id(&id)?;
    let p = state.run(move |s| s.get_plan(&caller, &id)).await?;
    Ok(axum::Json(PlanView::from(&p)))
}

/// Change a plan (PLATFORM_ADMIN); absent fields are kept. Tenants on it get the new
/// limits at once.
#[utoipa::path(put, path = "/api/plans/{id}", tag = "plans", params(("id" = String, Path)), request_body = PlanReq,
    responses((status = 200, body = PlanView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "`plan_built_in`")))]
pub async fn update(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Json(r): Json<PlanReq>,
) -> ApiResult<axum::Json<PlanView>> {
    let id = plan_id(&id)?;
    let p = state
        .run(move |s| s.update_plan(&caller, &id, r.into()))
        .await?;
    Ok(axum::Json(PlanView::from(&p)))
}

/// Delete a plan no tenant is on (PLATFORM_ADMIN).
#[utoipa::path(delete, path = "/api/plans/{id}", tag = "plans", params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "`plan_in_use` (details.tenants), `plan_built_in`")))]
pub async fn delete(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = plan_id(&id)?;
    state.run(move |s| s.delete_plan(&caller, &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
