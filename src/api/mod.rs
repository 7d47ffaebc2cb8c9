//! HTTP API: parse -> call the domain -> map. Never touches the store directly.

pub mod agents;
pub mod analytics;
pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod channels;
pub mod conversations;
pub mod documents;
pub mod error;
pub mod error_codes;
pub mod extract;
pub mod health;
pub mod middleware;
pub mod models;
pub mod openai;
pub mod plans;
pub mod ratelimit;
pub mod settings;
pub mod sse;
pub mod strict_json;
pub mod tenants;
pub mod ui;
pub mod upload;
pub mod views;
pub mod widget;
pub mod widget_asset;

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
    /// Shared with the Socket.IO layer (new widget visitors draw on one budget).
    pub limits: Arc<ratelimit::Limits>,
    pub mailer: std::sync::Arc<Mailer>,
    pub started: Instant,
    pub metrics: PrometheusHandle,
    pub engine: Arc<crate::agent::Engine>,
    pub knowledge: Arc<crate::knowledge::Knowledge>,
    pub jobs: Arc<crate::jobs::Jobs>,
    /// Messaging providers: channel setup, tests (the webhooks store through the domain).
    pub channels: Arc<crate::channels::Channels>,
    /// Scheduled backups (BACKUP_DIR), when configured.
    pub backups: Option<Arc<crate::backup::schedule::Scheduler>>,
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
            "visitorToken",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("vt_ visitor token of the web widget")
                    .build(),
            ),
        );
        c.add_security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// What every route can answer besides its own responses, so the document lists them all:
/// path ids are UUIDs (400 `invalid_id` otherwise); a JSON body can be refused with 400
/// (`malformed_json`, `validation_failed`, `invalid_id`), 413 and 415; a query with 400;
/// an authenticated route with 401 and 429; and any route with 500 (the `default` answer).
/// The OpenAI-compatible /v1 routes document their own (OpenAI-shaped) errors.
struct ErrorAnswers;

impl Modify for ErrorAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        use utoipa::openapi::{Ref, RefOr, ResponseBuilder};
        let error = |what: &str| -> RefOr<utoipa::openapi::Response> {
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/json",
                    utoipa::openapi::ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
                .into()
        };
        let global_auth = openapi.security.as_ref().is_some_and(|s| !s.is_empty());
        for (path, item) in openapi.paths.paths.iter_mut() {
            if path.starts_with("/v1/") {
                continue;
            }
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                let mut codes: Vec<(&str, &str)> = Vec::new();
                let mut query = false;
                for p in op.parameters.iter_mut().flatten() {
                    let RefOr::T(p) = p else { continue };
                    match p.parameter_in {
                        // A widget key is a public token, not an id.
                        ParameterIn::Path if p.name == "widgetKey" => {}
                        ParameterIn::Path => {
                            p.schema = Some(
                                ObjectBuilder::new()
                                    .schema_type(Type::String)
                                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
                                    .into(),
                            );
                            codes.push((
                                "400",
                                "Bad request: `invalid_id` (a path id is not a UUID)",
                            ));
                        }
                        ParameterIn::Query => query = true,
                        _ => {}
                    }
                }
                if query {
                    codes.push(("400", "Bad request: `invalid_query`, `invalid_id`"));
                }
                let json_body = op.request_body.as_ref().is_some_and(
                    |b| matches!(b, RefOr::T(b) if b.content.contains_key("application/json")),
                );
                let any_body = op.request_body.is_some();
                if json_body {
                    codes.push((
                        "400",
                        "Bad request: `malformed_json`, `validation_failed` (details.fields), `invalid_id`",
                    ));
                }
                if any_body {
                    codes.push(("413", "Payload too large: `payload_too_large`"));
                    codes.push(("415", "Unsupported media type: `unsupported_media_type`"));
                }
                let open = op
                    .security
                    .as_ref()
                    .is_some_and(|s| s.iter().all(|r| r == &Default::default()));
                if global_auth && !open {
                    codes.push(("401", "Unauthorized: `unauthorized`, `invalid_token`, `session_revoked`, `invalid_api_key`"));
                }
                codes.push(("429", "Too many requests: `rate_limited` (see Retry-After)"));
                for (code, what) in codes {
                    if !op.responses.responses.contains_key(code) {
                        op.responses.responses.insert(code.to_string(), error(what));
                    }
                }
                op.responses
                    .responses
                    .entry("default".to_string())
                    .or_insert_with(|| error("Any other error, e.g. 500 `internal_error`"));
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "aigentable API", description = "Self-hosted AI agent platform. Errors everywhere: {\"error\":{\"code\",\"message\",\"details\"},\"requestId\"}. Lists take ?limit= (1-200, default 50) and ?cursor= and answer {data, nextCursor}."),
    modifiers(&SecurityAddon),
    paths(openai::chat_completions, openai::models),
    security(("bearer" = []), ("apiKey" = [])),
    tags(
        (name = "auth", description = "Sign-up, sign-in, sessions, password reset, invitations"),
        (name = "tenants", description = "Tenants and their users"),
        (name = "api-keys", description = "Keys for programs"),
        (name = "audit", description = "The audit log of security-relevant actions"),
        (name = "agents", description = "AI agents"),
        (name = "conversations", description = "The inbox: conversations and messages"),
        (name = "channels", description = "Where customers talk to agents: the website widget (type web), WhatsApp, Messenger, Instagram and Telegram; provider webhooks, dead letters"),
        (name = "widget", description = "The website widget's own calls, from pages on the channel's allowed origins; visitor routes take `Authorization: Bearer <visitorToken>`"),
        (name = "knowledge", description = "Documents, search and background jobs"),
        (name = "settings", description = "Tenant provider settings"),
        (name = "plans", description = "Plans with limits and each tenant's subscription and usage"),
        (name = "analytics", description = "Figures from the rollups: dashboard, agents, conversations, channels (JSON or CSV), knowledge gaps"),
        (name = "system", description = "Health and metrics"),
        (name = "openai", description = "OpenAI-compatible chat completions against agents (errors in OpenAI's shape)"),
    )
)]
struct ApiDoc;

/// All API routes and their OpenAPI document.
pub fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
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
        .routes(routes!(audit::list))
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
        .routes(routes!(channels::list, channels::create))
        .routes(routes!(channels::get, channels::update, channels::delete))
        .routes(routes!(channels::rotate_identity_secret))
        .routes(routes!(channels::test))
        .routes(routes!(channels::dead_letters))
        .routes(routes!(channels::replay_dead_letter))
        .routes(routes!(channels::telegram_webhook))
        .routes(routes!(
            channels::whatsapp_verify,
            channels::whatsapp_webhook
        ))
        .routes(routes!(
            channels::messenger_verify,
            channels::messenger_webhook
        ))
        .routes(routes!(
            channels::instagram_verify,
            channels::instagram_webhook
        ))
        .routes(routes!(channels::whatsapp_template))
        .routes(routes!(channels::resend_message))
        .routes(routes!(channels::attachment))
        .routes(routes!(channels::platform_dead_letters))
        .routes(routes!(widget::config))
        .routes(routes!(widget::start))
        .routes(routes!(widget::conversation))
        .routes(routes!(widget::post_message))
        .routes(routes!(widget::rate))
        .routes(routes!(settings::get_ai, settings::put_ai))
        .routes(routes!(settings::test_provider))
        .routes(routes!(settings::get_embeddings, settings::put_embeddings))
        .routes(routes!(models::list))
        .routes(routes!(agents::test))
        .routes(routes!(documents::train))
        .routes(routes!(documents::list, documents::upload))
        .routes(routes!(documents::get, documents::delete))
        .routes(routes!(documents::process))
        .routes(routes!(documents::chunks))
        .routes(routes!(documents::search))
        .routes(routes!(documents::job))
        .routes(routes!(plans::mine))
        .routes(routes!(plans::list, plans::create))
        .routes(routes!(plans::get, plans::update, plans::delete))
        .routes(routes!(plans::set_subscription))
        .routes(routes!(analytics::dashboard))
        .routes(routes!(analytics::agents))
        .routes(routes!(analytics::conversations))
        .routes(routes!(analytics::channels))
        .routes(routes!(analytics::knowledge_gaps))
        .routes(routes!(health::health))
        .routes(routes!(backup::export_tenant))
        .routes(routes!(backup::import_tenant))
        .split_for_parts();
    // After every route is in: the modifier completes each operation's error answers.
    ErrorAnswers.modify(&mut openapi);
    (router, openapi)
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
    // Widget routes answer their channel's origins; the rest CORS_ORIGINS.
    let cors = middleware::cors_layer(&state.config).allow_origin(widget::allow_origin(&state));
    let mut app = Router::new().merge(api).merge(widget_asset::routes());
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
        // The admin UI: its files and app pages; unknown server paths keep their 404s.
        .fallback(ui::fallback)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state.clone())
        .layer(axum::Extension(extract::JsonLimit(json_limit)))
        .layer(cors);
    // Socket.IO answers /socket.io/ itself (outside the API's CORS: its clients
    // authenticate in the handshake payload, never with cookies; see realtime/).
    let (socket_io, _io) = crate::realtime::layer(state.svc.clone(), state.limits.clone());
    let app = app
        .layer(socket_io)
        .layer(axum::middleware::from_fn(crate::realtime::cors));
    middleware::outer_layers(app, state.config.hsts)
}
