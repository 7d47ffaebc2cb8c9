//! Embeddings: the [`Embedder`] trait and its two implementations, a local ONNX model run by
//! ONNX Runtime through fastembed ([`OnnxEmbedder`]) and an OpenAI-compatible
//! `/v1/embeddings` client ([`OpenAiEmbedder`]), plus [`resolve`], which turns [`Settings`]
//! into one of them (or none: keyword retrieval only).
//!
//! Must not depend on `api`, `domain` or `store`: callers hand us plain settings and text.
//! Everything here blocks (CPU work or HTTP): call it from worker threads or `spawn_blocking`,
//! never from an async task.

mod cache;
mod graph;
mod onnx;
mod openai;
mod pool;
mod resolve;
mod runtime;

pub use cache::QueryCache;
pub use onnx::{DEFAULT_ONNX_FILE, INT8_ONNX_FILE, variant_of};
pub use onnx::{
    DEFAULT_QUERY_CACHE, DEFAULT_SESSION_IDLE, OnnxEmbedder, OnnxOptions, default_sessions,
};
pub use openai::{OpenAiEmbedder, RetryPolicy};
pub use resolve::{
    Found, FoundModel, Location, default_graph, default_model, exe_dir, find_by_id, find_runtime,
    graphs_in, is_model_folder, model_folders, model_roots, resolve,
};
pub use runtime::{environment as ort_environment, loaded_path as ort_loaded_path};

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

/// Turns text into vectors.
///
/// Blocking: called from worker threads, never from async tasks.
pub trait Embedder: Send + Sync {
    /// Stable id recorded on every vector, e.g. `onnx:all-MiniLM-L6-v2:fp32:602550aa` or
    /// `openai:text-embedding-3-small`. Vectors with different ids are not comparable.
    fn model_id(&self) -> &str;

    /// Length of every vector. For an OpenAI-compatible model whose dimensions were not
    /// configured this is 0 until the first successful call has discovered it.
    fn dimensions(&self) -> usize;

    /// Embeds a batch; output vectors are L2-normalised, same order as input. Large inputs are
    /// split into batches of the configured size internally.
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, Error>;

    /// A query embedding (same model; a hook for models that prefix queries).
    fn embed_query(&self, text: &str) -> Result<Vec<f32>, Error> {
        self.embed(&[text.to_string()])?
            .pop()
            .ok_or_else(|| Error::Runtime(format!("{} returned no vector", self.model_id())))
    }
}

/// What can go wrong while loading or calling an embedder.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting, path or file is wrong; the message names it. Fix the configuration.
    #[error("embeddings configuration: {0}")]
    Config(String),
    /// The local model failed while running (tokenizer, ONNX Runtime).
    #[error("embedding model: {0}")]
    Runtime(String),
    /// The remote embeddings service failed or could not be reached (after retries).
    #[error("embeddings service{}: {message}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Upstream {
        status: Option<u16>,
        message: String,
    },
    /// The remote embeddings service answered 2xx with something we cannot use.
    #[error("embeddings service returned an unusable response: {0}")]
    BadResponse(String),
}

impl Error {
    /// True when trying again later may succeed (rate limits, 5xx, network), so a job should
    /// be retried rather than failed.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Upstream { status: None, .. } => true,
            Error::Upstream {
                status: Some(s), ..
            } => *s == 429 || *s >= 500,
            Error::Config(_) | Error::Runtime(_) | Error::BadResponse(_) => false,
        }
    }
}

/// Which embedder to use. Unset in [`Settings`] means auto-discovery.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// A local ONNX model folder run by ONNX Runtime.
    Onnx,
    /// An OpenAI-compatible `/v1/embeddings` endpoint (OpenAI, Ollama, LM Studio, vLLM).
    Openai,
    /// No embeddings: keyword retrieval only.
    None,
}

/// Embedding settings, filled by `config` from EMBEDDINGS_* variables. Debug hides the key.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Settings {
    /// EMBEDDINGS_PROVIDER: onnx | openai | none; unset = auto-discovery (see [`resolve`]).
    pub provider: Option<Provider>,
    /// EMBEDDINGS_MODEL_DIR: a model folder in the Hugging Face layout.
    pub model_dir: Option<PathBuf>,
    /// ORT_DYLIB_PATH: the ONNX Runtime shared library (>= 1.24).
    pub ort_dylib_path: Option<PathBuf>,
    /// EMBEDDINGS_BASE_URL: e.g. `http://localhost:11434/v1`; default OpenAI's.
    pub base_url: Option<String>,
    /// EMBEDDINGS_MODEL: the remote model name; default `text-embedding-3-small`.
    pub model: Option<String>,
    /// EMBEDDINGS_API_KEY: sent as a bearer token. Never serialised, never in Debug.
    #[serde(skip_serializing)]
    pub api_key: Option<String>,
    /// Texts per model call / HTTP request.
    pub batch_size: usize,
    /// Tokens per text for local models; longer texts are truncated.
    pub max_length: usize,
    /// The ONNX graph inside the model folder, relative to it. Default `onnx/model.onnx`
    /// (fp32); `onnx/model_quantized.onnx` selects the int8 graph (~1.8x faster, vectors
    /// shift slightly with batch composition).
    pub onnx_file: Option<PathBuf>,
    /// ONNX Runtime intra-op threads; default the number of cores available to the process.
    pub threads: Option<usize>,
    /// Expected vector length of a remote model; discovered from the first response if unset.
    pub dimensions: Option<usize>,
    /// EMBEDDINGS_SESSIONS: most ONNX Runtime sessions per local model (concurrent
    /// embeddings); default memory-aware (see [`default_sessions`]).
    pub sessions: Option<usize>,
    /// EMBEDDINGS_SESSION_IDLE_SECS: seconds a session beyond the first may sit idle before it
    /// is closed (and the kept one, after batch work, before it is replaced by a fresh one);
    /// 0 opens every session at load and keeps them.
    pub session_idle_secs: u64,
    /// EMBEDDINGS_QUERY_CACHE: query embeddings remembered per local model; 0 turns it off.
    pub query_cache: usize,
    /// Where `base_url` may lead: the operator's own setting is trusted, a tenant's is held
    /// to the tenant policy. Never serialised: it follows from who set the URL.
    #[serde(skip)]
    pub policy: crate::net::Policy,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            provider: None,
            model_dir: None,
            ort_dylib_path: None,
            base_url: None,
            model: None,
            api_key: None,
            batch_size: 32,
            max_length: 256,
            onnx_file: None,
            threads: None,
            dimensions: None,
            sessions: None,
            session_idle_secs: DEFAULT_SESSION_IDLE.as_secs(),
            query_cache: DEFAULT_QUERY_CACHE,
            policy: crate::net::Policy::Operator,
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("provider", &self.provider)
            .field("model_dir", &self.model_dir)
            .field("ort_dylib_path", &self.ort_dylib_path)
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("batch_size", &self.batch_size)
            .field("max_length", &self.max_length)
            .field("onnx_file", &self.onnx_file)
            .field("threads", &self.threads)
            .field("dimensions", &self.dimensions)
            .field("sessions", &self.sessions)
            .field("session_idle_secs", &self.session_idle_secs)
            .field("query_cache", &self.query_cache)
            .field("policy", &self.policy)
            .finish()
    }
}

/// The outcome of [`resolve`].
#[derive(Clone)]
pub struct Resolved {
    /// None: keyword retrieval only.
    pub embedder: Option<Arc<dyn Embedder>>,
    /// The local model folder in use (its tokenizer is the chunker's); None for remote models.
    pub model_dir: Option<PathBuf>,
    /// One line for logs and GET /api/health, e.g.
    /// `onnx all-MiniLM-L6-v2 (384 dims, fp32, 2 threads) from /path` or
    /// `none: keyword retrieval only (no model found at <data>/models/default)`.
    pub description: String,
    /// Settings that load this same model again, with nothing left to discovery (a local
    /// model's folder and graph explicit; never the API key): what the knowledge base records
    /// of the server's model, so that after the operator changes it the previous one can
    /// still answer while tenants are re-embedded. None when keyword-only.
    pub source: Option<Settings>,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("model_id", &self.embedder.as_ref().map(|e| e.model_id()))
            .field("description", &self.description)
            .finish()
    }
}

/// The load-time rewrite [`OnnxEmbedder`] applies to weight-only int8 graphs (int8 weights
/// expanded by `Cast`+`Mul`, which ONNX Runtime would fold to fp32): the same graph with
/// `DequantizeLinear` instead, so the weights stay int8 in memory. `Ok(None)` when the graph
/// has no such weights. Public for the benchmarks, which compare it with the graph as shipped.
pub fn keep_int8_weights(model: &[u8]) -> Result<Option<Vec<u8>>, Error> {
    graph::weight_only_int8_to_dequantize(model)
        .map(|r| r.map(|r| r.bytes))
        .map_err(|e| Error::Config(format!("ONNX graph: {e}")))
}

/// Scales `v` to unit length in place. A zero vector stays zero (nothing to scale).
pub(crate) fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in v.iter_mut() {
            *x /= norm;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_debug_and_json_hide_the_api_key() {
        let s = Settings {
            provider: Some(Provider::Openai),
            api_key: Some("sk-very-secret".into()),
            ..Settings::default()
        };
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("sk-very-secret"), "{dbg}");
        assert!(dbg.contains("<redacted>"));
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains("sk-very-secret"), "{json}");
        assert!(json.contains("\"provider\":\"openai\""), "{json}");
        assert!(json.contains("\"batchSize\":32"), "{json}");
    }

    #[test]
    fn settings_deserialise_with_defaults() {
        let s: Settings =
            serde_json::from_str(r#"{"provider":"none","modelDir":"/m","apiKey":"k"}"#).unwrap();
        assert_eq!(s.provider, Some(Provider::None));
        assert_eq!(s.model_dir, Some(PathBuf::from("/m")));
        assert_eq!(s.api_key.as_deref(), Some("k"));
        assert_eq!((s.batch_size, s.max_length), (32, 256));
        let auto: Settings = serde_json::from_str("{}").unwrap();
        assert_eq!(auto, Settings::default());
    }

    #[test]
    fn transient_errors_are_the_retryable_ones() {
        let up = |status| Error::Upstream {
            status,
            message: String::new(),
        };
        assert!(up(None).is_transient());
        assert!(up(Some(429)).is_transient());
        assert!(up(Some(503)).is_transient());
        assert!(!up(Some(401)).is_transient());
        assert!(!Error::Config("x".into()).is_transient());
        assert_eq!(up(Some(500)).to_string(), "embeddings service (HTTP 500): ");
    }

    #[test]
    fn normalise_makes_unit_length_and_keeps_zero() {
        let mut v = vec![3.0, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut z = vec![0.0, 0.0];
        l2_normalize(&mut z);
        assert_eq!(z, vec![0.0, 0.0]);
    }
}
