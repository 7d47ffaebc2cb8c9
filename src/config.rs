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
    /// Largest accepted JSON body.
    pub body_limit_bytes: usize,
    /// Seconds to let in-flight requests finish after SIGINT/SIGTERM.
    pub shutdown_timeout_secs: u64,
    /// Send Strict-Transport-Security (set when served over TLS, e.g. behind a proxy).
    pub hsts: bool,
    /// `smtp://user:pass@host:587` (STARTTLS) or `smtps://...:465`; unset writes mails to the log.
    pub smtp_url: Option<Secret>,
    pub smtp_from: String,
    /// redb page cache.
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
    /// onnx | openai | none; unset = look for <data>/models/default and a runtime.
    pub embeddings_provider: Option<String>,
    /// A Hugging Face-layout model folder (tokenizer.json, config.json, onnx/model.onnx).
    pub embeddings_model_dir: Option<PathBuf>,
    /// The graph inside the model folder (default onnx/model.onnx).
    pub embeddings_onnx_file: Option<PathBuf>,
    /// The ONNX Runtime shared library (>= 1.24).
    pub ort_dylib_path: Option<PathBuf>,
    pub embeddings_base_url: Option<String>,
    pub embeddings_model: Option<String>,
    pub embeddings_api_key: Option<Secret>,
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
            openai_base_url: "https://api.openai.com/v1".into(),
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
            body_limit_bytes: 1024 * 1024,
            shutdown_timeout_secs: 10,
            hsts: false,
            smtp_url: None,
            smtp_from: "aigentable <no-reply@localhost>".into(),
            store_cache_mb: 32,
            upload_max_bytes: 50 * 1024 * 1024,
            ingest_max_pages: 2000,
            chunk_tokens: 400,
            chunk_overlap_percent: 15,
            job_workers: 0,
            embeddings_provider: None,
            embeddings_model_dir: None,
            embeddings_onnx_file: None,
            ort_dylib_path: None,
            embeddings_base_url: None,
            embeddings_model: None,
            embeddings_api_key: None,
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
    "EMBEDDINGS_PROVIDER",
    "EMBEDDINGS_MODEL_DIR",
    "EMBEDDINGS_ONNX_FILE",
    "ORT_DYLIB_PATH",
    "EMBEDDINGS_BASE_URL",
    "EMBEDDINGS_MODEL",
    "EMBEDDINGS_API_KEY",
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
        Ok(())
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

    pub fn cors_origin_list(&self) -> Vec<String> {
        self.cors_origins
            .split(',')
            .map(|s| s.trim().trim_end_matches('/').to_string())
            .filter(|s| !s.is_empty())
            .collect()
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
