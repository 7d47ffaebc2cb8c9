//! /api/auth: sign-up, sign-in, token refresh, logout, password reset, invitations, me.

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Auth, Client, Json};
use super::views::TenantView;
use super::views::UserView;
use crate::domain::auth::{RegisterInput, SignedIn, TokenPair};
use crate::types::Role;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisterReq {
    #[schema(format = Email, max_length = 254)]
    email: String,
    /// 8-256 characters.
    #[schema(min_length = 8, max_length = 256)]
    password: String,
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    #[schema(min_length = 1, max_length = 200)]
    tenant_name: String,
}

#[derive(Deserialize, ToSchema)]
pub struct LoginReq {
    email: String,
    password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefreshReq {
    refresh_token: String,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct LogoutReq {
    refresh_token: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct ForgotReq {
    email: String,
}

#[derive(Deserialize, ToSchema)]
pub struct ResetReq {
    token: String,
    /// 8-256 characters.
    #[schema(min_length = 8, max_length = 256)]
    password: String,
}

#[derive(Deserialize, ToSchema)]
pub struct AcceptInviteReq {
    token: String,
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    /// 8-256 characters.
    #[schema(min_length = 8, max_length = 256)]
    password: String,
}

/// A signed-in user with tokens.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthResponse {
    user: UserView,
    tenant: Option<TenantView>,
    access_token: String,
    refresh_token: String,
    expires_in: u64,
}

impl From<SignedIn> for AuthResponse {
    fn from(s: SignedIn) -> Self {
        AuthResponse {
            user: UserView::from(&s.user),
            tenant: s.tenant.as_ref().map(TenantView::from),
            access_token: s.tokens.access_token,
            refresh_token: s.tokens.refresh_token,
            expires_in: s.tokens.expires_in,
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefreshResponse {
    user: UserView,
    access_token: String,
    refresh_token: String,
    expires_in: u64,
}

#[derive(Serialize, ToSchema)]
pub struct MeResponse {
    /// Null when calling with an API key.
    user: Option<UserView>,
    tenant: Option<TenantView>,
    role: Role,
    /// `session` or `apiKey`.
    via: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct MessageResponse {
    message: &'static str,
}

fn auth_ip_limit(state: &AppState, client: &Client) -> ApiResult<()> {
    state
        .limits
        .auth_ip
        .check(client.0.ip.as_deref().unwrap_or("unknown"))
}

/// Create a tenant and its first TENANT_ADMIN (when SIGNUP=open).
#[utoipa::path(post, path = "/api/auth/register", tag = "auth", security(()), request_body = RegisterReq,
    responses((status = 201, body = AuthResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody, description = "`server_busy`: too many passwords being checked; retry after `Retry-After`")))]
pub async fn register(
    State(state): State<AppState>,
    client: Client,
    Json(r): Json<RegisterReq>,
) -> ApiResult<impl IntoResponse> {
    auth_ip_limit(&state, &client)?;
    let _permit = state.limits.admit_hashing()?;
    let meta = client.0;
    let signed = state
        .run(move |s| {
            s.register(
                RegisterInput {
                    email: r.email,
                    password: r.password,
                    name: r.name,
                    tenant_name: r.tenant_name,
                },
                &meta,
            )
        })
        .await?;
    Ok((StatusCode::CREATED, axum::Json(AuthResponse::from(signed))))
}

/// Sign in with email and password.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", security(()), request_body = LoginReq,
    responses((status = 200, body = AuthResponse), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody, description = "`server_busy`: too many passwords being checked; retry after `Retry-After`")))]
pub async fn login(
    State(state): State<AppState>,
    client: Client,
    Json(r): Json<LoginReq>,
) -> ApiResult<axum::Json<AuthResponse>> {
    auth_ip_limit(&state, &client)?;
    // Wrong passwords are counted per (email, address): they lock that address out of
    // that account, never the right password from elsewhere. Per email there is only a much
    // higher ceiling, above which addresses that already failed are refused too.
    let email = crate::domain::normalize_email(&r.email);
    let pair = format!("{email}|{}", client.0.ip.as_deref().unwrap_or("unknown"));
    let limits = &state.limits;
    limits.login_pair.check(&pair)?;
    if limits.login_pair.count(&pair) > 0 {
        limits.login_email.check(&email)?;
    }
    let _permit = limits.admit_hashing()?;
    let meta = client.0;
    let signed = state
        .run(move |s| s.login(&r.email, &r.password, &meta))
        .await;
    match &signed {
        Err(e) if e.code == "invalid_credentials" => {
            limits.login_pair.record(&pair);
            limits.login_email.record(&email);
        }
        Ok(_) => limits.login_pair.clear(&pair),
        Err(_) => {}
    }
    Ok(axum::Json(signed?.into()))
}

/// Exchange a refresh token for a new pair. Refresh tokens rotate; reusing an old one
/// revokes the session.
#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth", security(()), request_body = RefreshReq,
    responses((status = 200, body = RefreshResponse), (status = 401, body = ErrorBody)))]
pub async fn refresh(
    State(state): State<AppState>,
    client: Client,
    Json(r): Json<RefreshReq>,
) -> ApiResult<axum::Json<RefreshResponse>> {
    auth_ip_limit(&state, &client)?;
    let meta = client.0;
    let (
        user,
        TokenPair {
            access_token,
            refresh_token,
            expires_in,
        },
    ) = state
        .run(move |s| s.refresh(&r.refresh_token, &meta))
        .await?;
    Ok(axum::Json(RefreshResponse {
        user: UserView::from(&user),
        access_token,
        refresh_token,
        expires_in,
    }))
}

/// End the current session (its refresh token stops working at once).
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth", request_body(content = Option<LogoutReq>, description = "Optional (may be empty)"),
    responses((status = 204), (status = 401, body = ErrorBody)))]
pub async fn logout(
    State(state): State<AppState>,
    Auth(caller): Auth,
    super::extract::OptionalJson(req): super::extract::OptionalJson<LogoutReq>,
) -> ApiResult<StatusCode> {
    state
        .run(move |s| s.logout(&caller, req.refresh_token.as_deref()))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

const FORGOT_MESSAGE: &str =
    "If an account exists for that email, a password reset link has been sent.";

/// Ask for a password reset link. Always 202 with the same body.
#[utoipa::path(post, path = "/api/auth/forgot", tag = "auth", security(()), request_body = ForgotReq,
    responses((status = 202, body = MessageResponse), (status = 429, body = ErrorBody)))]
pub async fn forgot(
    State(state): State<AppState>,
    client: Client,
    Json(r): Json<ForgotReq>,
) -> ApiResult<impl IntoResponse> {
    auth_ip_limit(&state, &client)?;
    state.limits.auth_email.check(&format!(
        "forgot:{}",
        crate::domain::normalize_email(&r.email)
    ))?;
    // The work happens after the answer, so known and unknown emails take the same time.
    let st = state.clone();
    let rid = super::error::current_request_id().unwrap_or_default();
    let meta = client.0.clone();
    tokio::spawn(async move {
        // The domain queues the mail (a durable job) with the token.
        if let Err(e) = st.run(move |s| s.forgot(&r.email, &meta)).await {
            tracing::warn!(request_id = %rid, code = %e.code, "password reset request failed")
        }
    });
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(MessageResponse {
            message: FORGOT_MESSAGE,
        }),
    ))
}

/// Set a new password with a reset token; signs the user out everywhere.
#[utoipa::path(post, path = "/api/auth/reset", tag = "auth", security(()), request_body = ResetReq,
    responses((status = 200, body = MessageResponse), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody, description = "`server_busy`: too many passwords being checked; retry after `Retry-After`")))]
pub async fn reset(
    State(state): State<AppState>,
    client: Client,
    Json(r): Json<ResetReq>,
) -> ApiResult<axum::Json<MessageResponse>> {
    auth_ip_limit(&state, &client)?;
    let _permit = state.limits.admit_hashing()?;
    let meta = client.0.clone();
    state
        .run(move |s| s.reset(&r.token, &r.password, &meta))
        .await?;
    Ok(axum::Json(MessageResponse {
        message: "Your password has been changed. Sign in with the new password.",
    }))
}

/// Accept an invitation: create the account and sign in.
#[utoipa::path(post, path = "/api/auth/accept-invite", tag = "auth", security(()), request_body = AcceptInviteReq,
    responses((status = 201, body = AuthResponse), (status = 400, body = ErrorBody), (status = 402, body = ErrorBody, description = "`plan_limit_reached`: the plan has no seat left for the invited user (e.g. after a downgrade)"), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody, description = "`server_busy`: too many passwords being checked; retry after `Retry-After`")))]
pub async fn accept_invite(
    State(state): State<AppState>,
    client: Client,
    Json(r): Json<AcceptInviteReq>,
) -> ApiResult<impl IntoResponse> {
    auth_ip_limit(&state, &client)?;
    let _permit = state.limits.admit_hashing()?;
    let meta = client.0;
    let signed = state
        .run(move |s| s.accept_invite(&r.token, &r.name, &r.password, &meta))
        .await?;
    Ok((StatusCode::CREATED, axum::Json(AuthResponse::from(signed))))
}

/// The caller: user, tenant and role.
#[utoipa::path(get, path = "/api/auth/me", tag = "auth",
    responses((status = 200, body = MeResponse), (status = 401, body = ErrorBody)))]
pub async fn me(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<axum::Json<MeResponse>> {
    // Auth only makes people and keys, which always have a role.
    let role = caller.role().ok_or_else(ApiError::unauthorized)?;
    let via = if caller.api_key_id().is_some() {
        "apiKey"
    } else {
        "session"
    };
    let (user, tenant) = state.run(move |s| s.me(&caller)).await?;
    Ok(axum::Json(MeResponse {
        user: user.as_ref().map(UserView::from),
        tenant: tenant.as_ref().map(TenantView::from),
        role,
        via,
    }))
}
