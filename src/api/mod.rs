//! HTTP API: parse -> call the domain -> map. Never touches the store directly.

pub mod agents;
pub mod api_keys;
pub mod auth;
pub mod conversations;
pub mod documents;
pub mod error;
pub mod error_codes;
pub mod extract;
pub mod health;
pub mod middleware;
pub mod openai;
pub mod ratelimit;
pub mod settings;
pub mod sse;
pub mod strict_json;
pub mod tenants;
pub mod upload;
pub mod views;

use crate::config::Config;
use crate::domain::Services;
use crate::mail::Mailer;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use error::{ApiError, ApiResult};
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::time::Instant;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub svc: Arc<Services>,
    pub config: Arc<Config>,
    pub limits: ratelimit::Limits,
    pub mailer: Mailer,
    pub started: Instant,
    pub metrics: PrometheusHandle,
    pub engine: Arc<crate::agent::Engine>,
    pub knowledge: Arc<crate::knowledge::Knowledge>,
    pub jobs: Arc<crate::jobs::Jobs>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        AppState(Arc::new(inner))
    }

    /// Runs a (blocking) domain call on the blocking pool.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Services) -> crate::domain::Result<T> + Send + 'static,
    ) -> ApiResult<T> {
        let svc = self.svc.clone();
        let span = tracing::Span::current();
        let rid = error::current_request_id().unwrap_or_default();
        tokio::task::spawn_blocking(move || {
            let _g = span.enter();
            error::REQUEST_ID.sync_scope(rid, || f(&svc))
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "blocking task failed");
            ApiError::internal()
        })?
        .map_err(ApiError::from)
    }
}

struct SecurityAddon;

impl Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let c = openapi.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT or ak_ API key")
                    .build(),
            ),
        );
        c.add_security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "aigentable API", description = "Self-hosted AI agent platform. Errors everywhere: {\"error\":{\"code\",\"message\",\"details\"},\"requestId\"}. Lists take ?limit= (1-200, default 50) and ?cursor= and answer {data, nextCursor}."),
    modifiers(&SecurityAddon),
    security(("bearer" = []), ("apiKey" = [])),
    tags(
        (name = "auth", description = "Sign-up, sign-in, sessions, password reset, invitations"),
        (name = "tenants", description = "Tenants and their users"),
        (name = "api-keys", description = "Keys for programs"),
        (name = "agents", description = "AI agents"),
        (name = "conversations", description = "The inbox: conversations and messages"),
        (name = "knowledge", description = "Documents, search and background jobs"),
        (name = "settings", description = "Tenant provider settings"),
        (name = "system", description = "Health and metrics"),
    )
)]
struct ApiDoc;

/// All API routes and their OpenAPI document.
pub fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(auth::register))
        .routes(routes!(auth::login))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::forgot))
        .routes(routes!(auth::reset))
        .routes(routes!(auth::me))
        .routes(routes!(auth::accept_invite))
        .routes(routes!(tenants::list, tenants::create))
        .routes(routes!(tenants::get, tenants::update, tenants::delete))
        .routes(routes!(tenants::list_users, tenants::invite_user))
        .routes(routes!(tenants::update_user, tenants::delete_user))
        .routes(routes!(tenants::list_invitations))
        .routes(routes!(tenants::revoke_invitation))
        .routes(routes!(api_keys::list, api_keys::create))
        .routes(routes!(api_keys::delete))
        .routes(routes!(agents::list, agents::create))
        .routes(routes!(agents::get, agents::update, agents::delete))
        .routes(routes!(conversations::list, conversations::create))
        .routes(routes!(conversations::get))
        .routes(routes!(
            conversations::messages,
            conversations::post_message
        ))
        .routes(routes!(conversations::assign))
        .routes(routes!(conversations::close))
        .routes(routes!(settings::get_ai, settings::put_ai))
        .routes(routes!(settings::get_embeddings, settings::put_embeddings))
        .routes(routes!(agents::test))
        .routes(routes!(documents::train))
        .routes(routes!(documents::list, documents::upload))
        .routes(routes!(documents::get, documents::delete))
        .routes(routes!(documents::process))
        .routes(routes!(documents::chunks))
        .routes(routes!(documents::search))
        .routes(routes!(documents::job))
        .routes(routes!(health::health))
        .split_for_parts()
}

/// The router of the separate metrics listener (METRICS=public): GET /metrics only.
pub fn metrics_router(state: AppState) -> Router {
    let hsts = state.config.hsts;
    let r = Router::new()
        .route("/metrics", axum::routing::get(health::metrics))
        .fallback(middleware::not_found)
        .with_state(state);
    middleware::outer_layers(r, hsts)
}

/// The full router with middleware, for `serve` and for tests.
pub fn router(state: AppState) -> Router {
    let (api, openapi) = routes();
    let openapi_json = openapi.clone();
    let json_limit = state.config.body_limit_bytes;
    // Uploads are the largest bodies; JSON bodies are held to their own limit by `Json`.
    let body_limit = (state.config.upload_max_bytes as usize)
        .saturating_mul(2)
        .max(json_limit);
    let cors = middleware::cors_layer(&state.config);
    let mut app = Router::new().merge(api);
    if state.config.metrics == crate::config::MetricsMode::Token {
        app = app.route("/metrics", axum::routing::get(health::metrics_with_token));
    }
    let app = app
        .route(
            "/v1/chat/completions",
            axum::routing::post(openai::chat_completions),
        )
        .route("/v1/models", axum::routing::get(openai::models))
        .route(
            "/api/openapi.json",
            axum::routing::get(move || {
                let doc = openapi_json.clone();
                async move { axum::Json(doc) }
            }),
        )
        .merge(
            utoipa_swagger_ui::SwaggerUi::new("/api/docs").url("/api/docs/openapi.json", openapi),
        )
        .fallback(middleware::not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state.clone())
        .layer(axum::Extension(extract::JsonLimit(json_limit)))
        .layer(cors);
    middleware::outer_layers(app, state.config.hsts)
}
