//! Configuration: built-in defaults, then an optional TOML file, then environment variables,
//! then command-line flags. Validated once at startup; secrets are hidden in Debug output.

use crate::types::SignupMode;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A string that never shows itself in logs or Debug output.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How log lines on stdout look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable on a terminal, JSON otherwise.
    #[default]
    Auto,
    Pretty,
    Json,
}

/// Who may read the Prometheus metrics (`METRICS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsMode {
    /// No /metrics anywhere.
    #[default]
    Off,
    /// GET /metrics on the main address with `Authorization: Bearer <METRICS_TOKEN>`.
    Token,
    /// GET /metrics without credentials, only on its own listener at METRICS_BIND.
    Public,
}

/// `OPENAI_BASE_URL` when unset: OpenAI's API, which needs a key (without one no model
/// provider is configured, and agents in `auto` answer extractively).
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// Every setting. Names match the environment variables (upper-cased) and the TOML keys.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub data_dir: PathBuf,
    /// Address to listen on: a host (`127.0.0.1`, then PORT is used) or `host:port`.
    pub bind: String,
    pub port: u16,
    /// Base URL people reach this server at; used in invite and reset links.
    pub public_url: Option<String>,
    pub jwt_secret: Option<Secret>,
    pub jwt_refresh_secret: Option<Secret>,
    pub jwt_expires_in: String,
    pub jwt_refresh_expires_in: String,
    pub invite_expires_in: String,
    pub openai_api_key: Option<Secret>,
    /// OpenAI-compatible chat endpoint (OpenAI, Ollama, vLLM, LM Studio), up to `/v1`.
    pub openai_base_url: String,
    /// Default chat model of agents that do not name one.
    pub openai_model: String,
    /// Context window assumed for the default model, in tokens.
    pub openai_context_window: u32,
    /// Seconds a model call may take (non-streaming) / stay silent (streaming).
    pub llm_timeout_secs: u64,
    /// Let HTTP tools call loopback and private networks for every tenant.
    pub allow_private_tool_urls: bool,
    /// Private hosts tenant-set URLs (model provider, embeddings, HTTP tools) may reach:
    /// comma-separated host names, IP addresses and CIDR networks. Empty: public only.
    pub outbound_allowed_private_hosts: String,
    /// Comma-separated list of allowed browser origins; empty allows none.
    pub cors_origins: String,
    pub log_level: String,
    pub log_format: LogFormat,
    /// Days of daily log files kept under `<data>/logs`.
    pub log_retention_days: usize,
    pub signup: SignupMode,
    pub admin_email: Option<String>,
    pub admin_password: Option<Secret>,
    /// Requests per minute; 0 turns a limit off.
    pub rate_limit_auth_per_min: u32,
    pub rate_limit_api_per_min: u32,
    pub rate_limit_upload_per_min: u32,
    /// Web widget: requests and messages per minute of one visitor (REST and socket).
    pub rate_limit_visitor_per_min: u32,
    /// Web widget: new visitors per minute from one client address.
    pub rate_limit_widget_ip_per_min: u32,
    /// Days a widget visitor's token lives after the visitor was last seen.
    pub visitor_token_ttl_days: u32,
    /// Days audit log entries are kept (older ones are swept hourly); at least 1.
    pub audit_retention_days: u32,
    /// Largest accepted JSON body.
    pub body_limit_bytes: usize,
    /// Seconds to let in-flight requests finish after SIGINT/SIGTERM.
    pub shutdown_timeout_secs: u64,
    /// Send Strict-Transport-Security (set when served over TLS, e.g. behind a proxy).
    pub hsts: bool,
    /// `smtp://user:pass@host:587` (STARTTLS) or `smtps://...:465`; unset writes mails to the log.
    pub smtp_url: Option<Secret>,
    pub smtp_from: String,
    /// redb page cache (read pages and a write transaction's dirty ones), MiB. 8 by default:
    /// 32 held ~25 MiB more at steady state with no measured gain (BENCHMARKS.md, session 11).
    pub store_cache_mb: usize,
    /// Largest accepted upload (one file), bytes.
    pub upload_max_bytes: u64,
    /// Most pages of an accepted PDF.
    pub ingest_max_pages: u32,
    /// Chunk size in tokens of the embedding model's tokenizer.
    pub chunk_tokens: usize,
    /// Overlap between consecutive chunks, percent of the chunk size.
    pub chunk_overlap_percent: usize,
    /// Background job workers (parsing, embedding); 0 = number of cores.
    pub job_workers: usize,
    /// Workers answering customer messages and sending mail (they mostly wait on the
    /// network); 0 = 4 per core, at least 8.
    pub turn_workers: usize,
    /// onnx | openai | none; unset = look for <data>/models/default and a runtime.
    pub embeddings_provider: Option<String>,
    /// A Hugging Face-layout model folder (tokenizer.json, config.json, onnx/model.onnx).
    pub embeddings_model_dir: Option<PathBuf>,
    /// The graph inside the model folder (default onnx/model.onnx).
    pub embeddings_onnx_file: Option<PathBuf>,
    /// The ONNX Runtime shared library (>= 1.24).
    pub ort_dylib_path: Option<PathBuf>,
    /// ONNX Runtime sessions per local embedding model (concurrent searches); 0 = by the
    /// model's size: 2 for small models on 2+ cores, else 1.
    pub embeddings_sessions: usize,
    /// Seconds an extra embedding session may sit idle before it is closed; 0 opens every
    /// session at start and keeps them.
    pub embeddings_session_idle_secs: u64,
    /// Query embeddings remembered per local model (LRU); 0 turns the cache off.
    pub embeddings_query_cache: usize,
    pub embeddings_base_url: Option<String>,
    pub embeddings_model: Option<String>,
    pub embeddings_api_key: Option<Secret>,
    /// Who may read /metrics: off, token or public (on METRICS_BIND).
    pub metrics: MetricsMode,
    /// The bearer token of /metrics when METRICS=token (at least 16 characters).
    pub metrics_token: Option<Secret>,
    /// `host:port` of the separate metrics listener when METRICS=public.
    pub metrics_bind: Option<String>,
    /// Comma-separated addresses or CIDRs of reverse proxies whose X-Forwarded-For /
    /// Forwarded headers name the client; empty trusts none (the TCP peer is the client).
    pub trusted_proxies: String,
    /// Most messages in one /v1/chat/completions request.
    pub chat_max_messages: usize,
    /// Threads hashing passwords; 0 = number of cores. Each holds a 19 MiB work area while busy.
    pub password_hash_threads: usize,
    /// Password hashes waiting for a thread before logins answer 503 `server_busy`.
    pub password_hash_queue: usize,
    /// Largest Socket.IO packet a client may send, bytes (larger ones close the socket).
    pub socket_max_payload_bytes: u64,
    /// Events per second a socket may send (sustained); 0 turns the limit off.
    pub socket_events_per_second: u32,
    /// Events a socket may send in a burst above the sustained rate.
    pub socket_events_burst: u32,
    /// Sockets one user (or API key) may hold open at once.
    pub socket_max_per_user: usize,
    /// Sockets one website visitor may hold open at once.
    pub socket_max_per_visitor: usize,
    /// Packets queued for one socket before it counts as a slow consumer and is dropped.
    pub socket_buffer_packets: usize,
    /// Events kept per tenant for sockets that are behind (the event bus's per-tenant
    /// buffer, allocated whole while the tenant has a subscriber). A socket further behind
    /// refills its conversations' messages from the store.
    pub socket_tenant_backlog: usize,
    /// Telegram Bot API base URL (operator-trusted: tests and staging point it at a double).
    pub telegram_api_base_url: String,
    /// Meta Graph API base URL (WhatsApp, Messenger, Instagram).
    pub meta_graph_base_url: String,
    /// Meta Graph API version path segment, like `v21.0`.
    pub meta_graph_version: String,
    /// Largest WhatsApp/Messenger/Instagram webhook body accepted, bytes (larger: 413).
    pub meta_webhook_max_bytes: usize,
    /// Largest media file a channel message may bring (bigger ones become a placeholder).
    pub channel_media_max_bytes: u64,
    /// Largest Telegram webhook body accepted, bytes (larger ones: 413, nothing stored).
    pub telegram_webhook_max_bytes: usize,
    /// Attempts to hand one outgoing channel message to its provider before it is failed.
    pub channel_send_max_attempts: u32,
    /// Analytics price table, USD per million tokens: `model=input:output,...`.
    pub analytics_prices: String,
    /// Scheduled backups go here (off when unset).
    pub backup_dir: Option<PathBuf>,
    /// How often a scheduled backup is taken (`6h`, `30m`, `1d`; at least `1m`).
    pub backup_every: String,
    /// How many scheduled backups are kept (the newest).
    pub backup_keep: usize,
    /// Largest tenant export accepted by `POST /api/tenants/import`, bytes.
    pub tenant_import_max_bytes: u64,
    /// Largest stored file (an upload's original, a channel media file) a backup or tenant
    /// export may hold to be restored or imported here, bytes.
    pub backup_max_file_bytes: u64,
    /// Writes are refused (507) while less than this many MB are free on the data
    /// directory's filesystem, so the store never meets a full disk mid-commit.
    pub disk_reserve_mb: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            bind: "127.0.0.1".into(),
            port: 3001,
            public_url: None,
            jwt_secret: None,
            jwt_refresh_secret: None,
            jwt_expires_in: "15m".into(),
            jwt_refresh_expires_in: "7d".into(),
            invite_expires_in: "7d".into(),
            openai_api_key: None,
            openai_base_url: DEFAULT_OPENAI_BASE_URL.into(),
            openai_model: "gpt-4o-mini".into(),
            openai_context_window: 128_000,
            llm_timeout_secs: 120,
            allow_private_tool_urls: false,
            outbound_allowed_private_hosts: String::new(),
            cors_origins: String::new(),
            log_level: "info".into(),
            log_format: LogFormat::Auto,
            log_retention_days: 14,
            signup: SignupMode::Open,
            admin_email: None,
            admin_password: None,
            rate_limit_auth_per_min: 5,
            rate_limit_api_per_min: 100,
            rate_limit_upload_per_min: 10,
            rate_limit_visitor_per_min: 60,
            rate_limit_widget_ip_per_min: 30,
            visitor_token_ttl_days: 180,
            audit_retention_days: 365,
            body_limit_bytes: 1024 * 1024,
            shutdown_timeout_secs: 10,
            hsts: false,
            smtp_url: None,
            smtp_from: "aigentable <no-reply@localhost>".into(),
            store_cache_mb: 8,
            upload_max_bytes: 50 * 1024 * 1024,
            ingest_max_pages: 2000,
            chunk_tokens: 400,
            chunk_overlap_percent: 15,
            job_workers: 0,
            turn_workers: 0,
            embeddings_provider: None,
            embeddings_model_dir: None,
            embeddings_onnx_file: None,
            ort_dylib_path: None,
            embeddings_sessions: 0,
            embeddings_session_idle_secs: crate::embed::DEFAULT_SESSION_IDLE.as_secs(),
            embeddings_query_cache: crate::embed::DEFAULT_QUERY_CACHE,
            embeddings_base_url: None,
            embeddings_model: None,
            embeddings_api_key: None,
            metrics: MetricsMode::Off,
            metrics_token: None,
            metrics_bind: None,
            trusted_proxies: String::new(),
            chat_max_messages: 500,
            password_hash_threads: 0,
            password_hash_queue: 64,
            socket_max_payload_bytes: 64 * 1024,
            socket_events_per_second: 20,
            socket_events_burst: 40,
            socket_max_per_user: 20,
            socket_max_per_visitor: 5,
            socket_buffer_packets: 1024,
            socket_tenant_backlog: crate::events::DEFAULT_CAPACITY,
            telegram_api_base_url: "https://api.telegram.org".into(),
            meta_graph_base_url: "https://graph.facebook.com".into(),
            meta_graph_version: "v21.0".into(),
            meta_webhook_max_bytes: 512 * 1024,
            channel_media_max_bytes: 16 * 1024 * 1024,
            telegram_webhook_max_bytes: 256 * 1024,
            channel_send_max_attempts: 5,
            analytics_prices: crate::analytics::prices::DEFAULT_PRICES.into(),
            backup_dir: None,
            backup_every: "6h".into(),
            backup_keep: 7,
            tenant_import_max_bytes: 4 * 1024 * 1024 * 1024,
            backup_max_file_bytes: crate::backup::archive::DEFAULT_MAX_FILE_BYTES,
            disk_reserve_mb: 64,
        }
    }
}

const ENV_KEYS: &[&str] = &[
    "DATA_DIR",
    "BIND",
    "PORT",
    "PUBLIC_URL",
    "JWT_SECRET",
    "JWT_REFRESH_SECRET",
    "JWT_EXPIRES_IN",
    "JWT_REFRESH_EXPIRES_IN",
    "INVITE_EXPIRES_IN",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_MODEL",
    "OPENAI_CONTEXT_WINDOW",
    "LLM_TIMEOUT_SECS",
    "ALLOW_PRIVATE_TOOL_URLS",
    "OUTBOUND_ALLOWED_PRIVATE_HOSTS",
    "CORS_ORIGINS",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "LOG_RETENTION_DAYS",
    "SIGNUP",
    "ADMIN_EMAIL",
    "ADMIN_PASSWORD",
    "RATE_LIMIT_AUTH_PER_MIN",
    "RATE_LIMIT_API_PER_MIN",
    "RATE_LIMIT_UPLOAD_PER_MIN",
    "RATE_LIMIT_VISITOR_PER_MIN",
    "RATE_LIMIT_WIDGET_IP_PER_MIN",
    "VISITOR_TOKEN_TTL_DAYS",
    "AUDIT_RETENTION_DAYS",
    "BODY_LIMIT_BYTES",
    "SHUTDOWN_TIMEOUT_SECS",
    "HSTS",
    "SMTP_URL",
    "SMTP_FROM",
    "STORE_CACHE_MB",
    "UPLOAD_MAX_BYTES",
    "INGEST_MAX_PAGES",
    "CHUNK_TOKENS",
    "CHUNK_OVERLAP_PERCENT",
    "JOB_WORKERS",
    "TURN_WORKERS",
    "EMBEDDINGS_PROVIDER",
    "EMBEDDINGS_MODEL_DIR",
    "EMBEDDINGS_ONNX_FILE",
    "ORT_DYLIB_PATH",
    "EMBEDDINGS_SESSIONS",
    "EMBEDDINGS_SESSION_IDLE_SECS",
    "EMBEDDINGS_QUERY_CACHE",
    "EMBEDDINGS_BASE_URL",
    "EMBEDDINGS_MODEL",
    "EMBEDDINGS_API_KEY",
    "METRICS",
    "METRICS_TOKEN",
    "METRICS_BIND",
    "TRUSTED_PROXIES",
    "CHAT_MAX_MESSAGES",
    "PASSWORD_HASH_THREADS",
    "PASSWORD_HASH_QUEUE",
    "SOCKET_MAX_PAYLOAD_BYTES",
    "SOCKET_EVENTS_PER_SECOND",
    "SOCKET_EVENTS_BURST",
    "SOCKET_MAX_PER_USER",
    "SOCKET_MAX_PER_VISITOR",
    "SOCKET_BUFFER_PACKETS",
    "SOCKET_TENANT_BACKLOG",
    "TELEGRAM_API_BASE_URL",
    "META_GRAPH_BASE_URL",
    "META_GRAPH_VERSION",
    "META_WEBHOOK_MAX_BYTES",
    "CHANNEL_MEDIA_MAX_BYTES",
    "TELEGRAM_WEBHOOK_MAX_BYTES",
    "CHANNEL_SEND_MAX_ATTEMPTS",
    "ANALYTICS_PRICES",
    "BACKUP_DIR",
    "BACKUP_EVERY",
    "BACKUP_KEEP",
    "TENANT_IMPORT_MAX_BYTES",
    "BACKUP_MAX_FILE_BYTES",
    "DISK_RESERVE_MB",
];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Invalid(String),
    #[error("configuration file {path}: {source}")]
    File {
        path: PathBuf,
        source: Box<figment::Error>,
    },
    #[error("configuration: {0}")]
    Figment(#[from] Box<figment::Error>),
}

impl Config {
    /// Defaults, then `file` (when given, or `./aigentable.toml` when it exists), then the
    /// environment. Flags are applied by the caller afterwards, then [`Config::validate`].
    pub fn load(file: Option<&Path>) -> Result<Self, Error> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        let file = match file {
            Some(p) => {
                if !p.exists() {
                    return Err(Error::Invalid(format!(
                        "config file {} does not exist",
                        p.display()
                    )));
                }
                Some(p.to_path_buf())
            }
            None => Some(PathBuf::from("aigentable.toml")).filter(|p| p.exists()),
        };
        if let Some(p) = &file {
            fig = fig.merge(Toml::file_exact(p));
        }
        fig = fig.merge(
            Env::raw()
                .only(ENV_KEYS)
                .map(|k| k.as_str().to_lowercase().into()),
        );
        let cfg: Config = fig.extract().map_err(|e| match &file {
            Some(p) => Error::File {
                path: p.clone(),
                source: Box::new(e),
            },
            None => Error::Figment(Box::new(e)),
        })?;
        Ok(cfg)
    }

    /// Checks every value that can be wrong, with a message naming the setting.
    pub fn validate(&self) -> Result<(), Error> {
        for (name, v) in [
            ("JWT_EXPIRES_IN", &self.jwt_expires_in),
            ("JWT_REFRESH_EXPIRES_IN", &self.jwt_refresh_expires_in),
            ("INVITE_EXPIRES_IN", &self.invite_expires_in),
        ] {
            parse_duration(name, v)?;
        }
        self.listen_addr()?;
        crate::backup::schedule::parse_every(&self.backup_every)
            .map_err(|e| Error::Invalid(format!("BACKUP_EVERY `{}`: {e}", self.backup_every)))?;
        if self.backup_keep == 0 {
            return Err(Error::Invalid("BACKUP_KEEP must be at least 1".into()));
        }
        // This install's own backups must restore here: every file it accepts fits.
        let largest = self.upload_max_bytes.max(self.channel_media_max_bytes);
        if self.backup_max_file_bytes < largest {
            return Err(Error::Invalid(format!(
                "BACKUP_MAX_FILE_BYTES ({}) must be at least UPLOAD_MAX_BYTES and CHANNEL_MEDIA_MAX_BYTES ({largest}), or this install's own backups could not be restored",
                self.backup_max_file_bytes
            )));
        }
        crate::net::Allowlist::parse(&self.outbound_allowed_private_hosts)
            .map_err(|e| Error::Invalid(format!("OUTBOUND_ALLOWED_PRIVATE_HOSTS: {e}")))?;
        if let Some(p) = &self.embeddings_provider
            && !matches!(p.as_str(), "onnx" | "openai" | "none")
        {
            return Err(Error::Invalid(format!(
                "EMBEDDINGS_PROVIDER `{p}` must be onnx, openai or none"
            )));
        }
        if !(50..=8192).contains(&self.chunk_tokens) {
            return Err(Error::Invalid(
                "CHUNK_TOKENS must be between 50 and 8192".into(),
            ));
        }
        if self.chunk_overlap_percent > 50 {
            return Err(Error::Invalid(
                "CHUNK_OVERLAP_PERCENT must be at most 50".into(),
            ));
        }
        if self.upload_max_bytes < 1024 {
            return Err(Error::Invalid(
                "UPLOAD_MAX_BYTES must be at least 1024".into(),
            ));
        }
        if self.body_limit_bytes < 1024 {
            return Err(Error::Invalid(
                "BODY_LIMIT_BYTES must be at least 1024".into(),
            ));
        }
        if self.audit_retention_days == 0 {
            return Err(Error::Invalid(
                "AUDIT_RETENTION_DAYS must be at least 1".into(),
            ));
        }
        if self.socket_max_payload_bytes < 1024 {
            return Err(Error::Invalid(
                "SOCKET_MAX_PAYLOAD_BYTES must be at least 1024".into(),
            ));
        }
        for (name, v) in [
            ("SOCKET_MAX_PER_USER", self.socket_max_per_user),
            ("SOCKET_MAX_PER_VISITOR", self.socket_max_per_visitor),
            ("SOCKET_BUFFER_PACKETS", self.socket_buffer_packets),
            ("SOCKET_TENANT_BACKLOG", self.socket_tenant_backlog),
        ] {
            if v == 0 {
                return Err(Error::Invalid(format!("{name} must be at least 1")));
            }
        }
        for (name, s) in [
            ("JWT_SECRET", &self.jwt_secret),
            ("JWT_REFRESH_SECRET", &self.jwt_refresh_secret),
        ] {
            if let Some(s) = s
                && s.expose().len() < 32
            {
                return Err(Error::Invalid(format!(
                    "{name} must be at least 32 characters (or unset, to generate one)"
                )));
            }
        }
        if self.admin_email.is_some() && self.admin_password.is_none() {
            return Err(Error::Invalid(
                "ADMIN_EMAIL is set but ADMIN_PASSWORD is not".into(),
            ));
        }
        if let Some(u) = &self.public_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(Error::Invalid(
                "PUBLIC_URL must start with http:// or https://".into(),
            ));
        }
        for (name, u) in [
            ("TELEGRAM_API_BASE_URL", &self.telegram_api_base_url),
            ("META_GRAPH_BASE_URL", &self.meta_graph_base_url),
        ] {
            if url::Url::parse(u)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
                .is_none()
            {
                return Err(Error::Invalid(format!(
                    "{name} must be an http:// or https:// URL"
                )));
            }
        }
        if self.meta_graph_version.is_empty()
            || !self
                .meta_graph_version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.')
        {
            return Err(Error::Invalid(
                "META_GRAPH_VERSION must look like v21.0".into(),
            ));
        }
        if self.meta_webhook_max_bytes < 1024 {
            return Err(Error::Invalid(
                "META_WEBHOOK_MAX_BYTES must be at least 1024".into(),
            ));
        }
        if self.channel_media_max_bytes < 1024 {
            return Err(Error::Invalid(
                "CHANNEL_MEDIA_MAX_BYTES must be at least 1024".into(),
            ));
        }
        if self.telegram_webhook_max_bytes < 1024 {
            return Err(Error::Invalid(
                "TELEGRAM_WEBHOOK_MAX_BYTES must be at least 1024".into(),
            ));
        }
        crate::analytics::prices::Prices::parse(&self.analytics_prices)
            .map_err(|e| Error::Invalid(format!("ANALYTICS_PRICES: {e}")))?;
        if !(1..=50).contains(&self.channel_send_max_attempts) {
            return Err(Error::Invalid(
                "CHANNEL_SEND_MAX_ATTEMPTS must be 1 to 50".into(),
            ));
        }
        self.validate_hardening()
    }

    /// METRICS*, TRUSTED_PROXIES and the request/hashing bounds.
    fn validate_hardening(&self) -> Result<(), Error> {
        match self.metrics {
            MetricsMode::Off => {}
            MetricsMode::Token => {
                if self
                    .metrics_token
                    .as_ref()
                    .is_none_or(|t| t.expose().len() < 16)
                {
                    return Err(Error::Invalid(
                        "METRICS=token needs METRICS_TOKEN of at least 16 characters".into(),
                    ));
                }
            }
            MetricsMode::Public => {
                self.metrics_addr()?;
            }
        }
        self.trusted_proxy_list()?;
        if self.chat_max_messages == 0 {
            return Err(Error::Invalid(
                "CHAT_MAX_MESSAGES must be at least 1".into(),
            ));
        }
        if self.password_hash_queue == 0 {
            return Err(Error::Invalid(
                "PASSWORD_HASH_QUEUE must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The address of the public metrics listener (METRICS=public).
    pub fn metrics_addr(&self) -> Result<std::net::SocketAddr, Error> {
        let b = self.metrics_bind.as_deref().unwrap_or("");
        b.parse().map_err(|_| {
            Error::Invalid(format!(
                "METRICS=public needs METRICS_BIND as address:port (e.g. 127.0.0.1:9464), got `{b}`"
            ))
        })
    }

    /// TRUSTED_PROXIES parsed: each entry an IP address or a CIDR.
    pub fn trusted_proxy_list(&self) -> Result<Vec<IpNet>, Error> {
        self.trusted_proxies
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                IpNet::parse(s).ok_or_else(|| {
                    Error::Invalid(format!(
                        "TRUSTED_PROXIES entry `{s}` is not an IP address or CIDR"
                    ))
                })
            })
            .collect()
    }

    /// Password hashing threads (PASSWORD_HASH_THREADS, 0 = cores).
    pub fn password_hash_thread_count(&self) -> usize {
        if self.password_hash_threads > 0 {
            self.password_hash_threads
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        }
    }

    /// The socket address to listen on, from BIND and PORT.
    pub fn listen_addr(&self) -> Result<std::net::SocketAddr, Error> {
        let s = if self.bind.parse::<std::net::SocketAddr>().is_ok() {
            self.bind.clone()
        } else if self.bind.contains(':') && !self.bind.starts_with('[') {
            format!("[{}]:{}", self.bind, self.port)
        } else {
            format!("{}:{}", self.bind, self.port)
        };
        s.parse().map_err(|_| {
            Error::Invalid(format!(
                "BIND `{}` is not an IP address or address:port",
                self.bind
            ))
        })
    }

    pub fn access_ttl(&self) -> Duration {
        parse_duration("JWT_EXPIRES_IN", &self.jwt_expires_in).unwrap_or(Duration::from_secs(900))
    }
    pub fn refresh_ttl(&self) -> Duration {
        parse_duration("JWT_REFRESH_EXPIRES_IN", &self.jwt_refresh_expires_in)
            .unwrap_or(Duration::from_secs(7 * 86400))
    }
    pub fn invite_ttl(&self) -> Duration {
        parse_duration("INVITE_EXPIRES_IN", &self.invite_expires_in)
            .unwrap_or(Duration::from_secs(7 * 86400))
    }

    /// The global embedding settings.
    pub fn embed_settings(&self) -> crate::embed::Settings {
        crate::embed::Settings {
            provider: self.embeddings_provider.as_deref().map(|p| match p {
                "onnx" => crate::embed::Provider::Onnx,
                "openai" => crate::embed::Provider::Openai,
                _ => crate::embed::Provider::None,
            }),
            model_dir: self.embeddings_model_dir.clone(),
            ort_dylib_path: self.ort_dylib_path.clone(),
            base_url: self.embeddings_base_url.clone(),
            model: self.embeddings_model.clone(),
            api_key: self
                .embeddings_api_key
                .as_ref()
                .map(|k| k.expose().to_string()),
            onnx_file: self.embeddings_onnx_file.clone(),
            sessions: (self.embeddings_sessions > 0).then_some(self.embeddings_sessions),
            session_idle_secs: self.embeddings_session_idle_secs,
            query_cache: self.embeddings_query_cache,
            // 400-token chunks (+ special tokens) must not be cut by the model's input limit.
            max_length: 512,
            ..crate::embed::Settings::default()
        }
    }

    /// The outbound policy of URLs a tenant sets (model provider, embeddings, tools):
    /// public addresses plus OUTBOUND_ALLOWED_PRIVATE_HOSTS.
    pub fn tenant_outbound(&self) -> crate::net::Policy {
        // Validated at startup; a list that does not parse allows nothing extra.
        crate::net::Policy::tenant(
            crate::net::Allowlist::parse(&self.outbound_allowed_private_hosts).unwrap_or_default(),
        )
    }

    /// The outbound policy of tenant HTTP tools: the tenant policy, unless the operator let
    /// every tool reach private networks (ALLOW_PRIVATE_TOOL_URLS).
    pub fn tool_outbound(&self) -> crate::net::Policy {
        if self.allow_private_tool_urls {
            crate::net::Policy::Operator
        } else {
            self.tenant_outbound()
        }
    }

    pub fn job_worker_count(&self) -> usize {
        if self.job_workers > 0 {
            self.job_workers
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        }
    }

    /// Workers of the interactive pool (AI turns, mail).
    pub fn turn_worker_count(&self) -> usize {
        if self.turn_workers > 0 {
            self.turn_workers
        } else {
            // A worker holds one turn while the model answers (seconds with a real model):
            // the pool bounds how many conversations wait on the model at once, not CPU.
            std::thread::available_parallelism()
                .map(|n| n.get() * 16)
                .unwrap_or(64)
                .max(64)
        }
    }

    pub fn cors_origin_list(&self) -> Vec<String> {
        self.cors_origins
            .split(',')
            .map(|s| s.trim().trim_end_matches('/').to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }
}

/// An IP network: an address and a prefix length (a bare address is a /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl IpNet {
    /// `10.0.0.0/8`, `::1`, `fd00::/8`, `192.168.1.10`.
    pub fn parse(s: &str) -> Option<IpNet> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(IpNet { addr, prefix })
    }

    /// True when `ip` is inside the network (IPv4-mapped IPv6 peers match IPv4 networks).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let bits = |v: u128, width: u32| {
            let p = u32::from(self.prefix);
            if p == 0 { 0 } else { v >> (width - p) }
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                bits(u32::from(n).into(), 32) == bits(u32::from(i).into(), 32)
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => bits(u128::from(n), 128) == bits(u128::from(i), 128),
            _ => false,
        }
    }
}

fn parse_duration(name: &str, v: &str) -> Result<Duration, Error> {
    let d = humantime::parse_duration(v.trim()).map_err(|e| {
        Error::Invalid(format!(
            "{name} `{v}` is not a duration like 15m or 7d: {e}"
        ))
    })?;
    if d.is_zero() {
        return Err(Error::Invalid(format!("{name} must be longer than zero")));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_hidden_in_debug() {
        let c = Config {
            jwt_secret: Some(Secret::new("super-secret-value-that-is-long-enough")),
            ..Config::default()
        };
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("super-secret"), "{dbg}");
        assert!(dbg.contains("<redacted>"));
    }

    #[test]
    fn defaults_are_valid_and_listen_on_3001() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.listen_addr().unwrap().to_string(), "127.0.0.1:3001");
        assert_eq!(c.access_ttl(), Duration::from_secs(900));
        assert_eq!(c.refresh_ttl(), Duration::from_secs(7 * 86400));
    }

    #[test]
    fn trusted_proxies_parse_addresses_and_cidrs() {
        let c = Config {
            trusted_proxies: "10.0.0.0/8, ::1,192.168.1.7".into(),
            ..Config::default()
        };
        let nets = c.trusted_proxy_list().unwrap();
        let has = |ip: &str| nets.iter().any(|n| n.contains(ip.parse().unwrap()));
        assert!(has("10.1.2.3") && has("::1") && has("192.168.1.7"));
        assert!(
            has("::ffff:10.9.9.9"),
            "IPv4-mapped peers match IPv4 networks"
        );
        assert!(!has("192.168.1.8") && !has("11.0.0.1") && !has("::2"));
        for bad in ["10.0.0.0/33", "proxy.local", "1.2.3.4/x"] {
            let c = Config {
                trusted_proxies: bad.into(),
                ..Config::default()
            };
            assert!(
                c.validate()
                    .unwrap_err()
                    .to_string()
                    .contains("TRUSTED_PROXIES")
            );
        }
        assert!(
            IpNet::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
    }

    #[test]
    fn metrics_settings_are_checked() {
        let c = Config {
            metrics: MetricsMode::Token,
            ..Config::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("METRICS_TOKEN")
        );
        let c = Config {
            metrics: MetricsMode::Public,
            ..Config::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("METRICS_BIND")
        );
        let c = Config {
            metrics: MetricsMode::Public,
            metrics_bind: Some("127.0.0.1:9464".into()),
            ..Config::default()
        };
        c.validate().unwrap();
    }

    #[test]
    fn bad_values_name_the_setting() {
        let c = Config {
            jwt_expires_in: "soon".into(),
            ..Config::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("JWT_EXPIRES_IN")
        );
        let c = Config {
            bind: "not an address".into(),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("BIND"));
        // A backup of this install must restore here.
        let c = Config {
            backup_max_file_bytes: 1024,
            ..Config::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("BACKUP_MAX_FILE_BYTES"), "{e}");
        let c = Config {
            outbound_allowed_private_hosts: "ollama.internal, 10.0.0.0/33".into(),
            ..Config::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("OUTBOUND_ALLOWED_PRIVATE_HOSTS") && e.contains("10.0.0.0/33"),
            "{e}"
        );
        let c = Config {
            bind: "0.0.0.0:8080".into(),
            ..Config::default()
        };
        assert_eq!(c.listen_addr().unwrap().port(), 8080);
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn file_then_env_layering() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "a.toml",
                "port = 4000\nlog_level = \"debug\"\nsignup = \"invite\"",
            )?;
            jail.set_env("PORT", "5000");
            let c = Config::load(Some(Path::new("a.toml"))).expect("loads");
            assert_eq!(c.port, 5000, "env beats file");
            assert_eq!(c.log_level, "debug", "file beats defaults");
            assert_eq!(c.signup, SignupMode::Invite);
            Ok(())
        });
    }
}
