//! [`OpenAiEmbedder`]: an OpenAI-compatible `POST <base>/embeddings` client (OpenAI, Ollama,
//! LM Studio, vLLM). Blocking, because embedders are called from worker threads: it uses
//! reqwest's blocking client, which runs its own small runtime on a private thread and so never
//! stalls the server's async workers.
//!
//! Batches of `batch_size` texts per request; 429, 5xx, connect errors and timeouts are retried
//! with exponential backoff and jitter, honouring `Retry-After`/`retry-after-ms`. Vectors are
//! re-normalised here because not every compatible server returns unit vectors.

use super::{Embedder, Error, l2_normalize};
use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};
use reqwest::header::HeaderMap;
use serde::Deserialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// OpenAI's API, used when no base URL is configured.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// Used when no model is configured.
pub const DEFAULT_MODEL: &str = "text-embedding-3-small";

/// When and how often a failed request is tried again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries per batch, the first included (1 = no retries).
    pub max_attempts: u32,
    /// Backoff before the second try; doubles per try, with jitter in [50%, 100%].
    pub base_delay: Duration,
    /// Cap on one backoff.
    pub max_delay: Duration,
    /// A `Retry-After` longer than this is not waited out: the error is returned at once (an
    /// exhausted daily quota should fail the job, not park a worker for hours).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(20),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Backoff before try number `next_attempt` (2 = first retry), jittered so that many
    /// workers hitting the same rate limit do not retry in lockstep.
    fn backoff(&self, next_attempt: u32) -> Duration {
        let exp = next_attempt.saturating_sub(2).min(20);
        let full = self
            .base_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        full.mul_f64(rand::random_range(0.5..=1.0))
    }
}

/// The API key, kept out of Debug output.
#[derive(Clone)]
struct ApiKey(String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A remote embedding model behind an OpenAI-compatible API.
#[derive(Debug)]
pub struct OpenAiEmbedder {
    client: Client,
    endpoint: String,
    model: String,
    id: String,
    api_key: Option<ApiKey>,
    /// 0 until known: configured, or discovered from the first response.
    dims: AtomicUsize,
    batch_size: usize,
    timeout: Duration,
    retry: RetryPolicy,
}

impl OpenAiEmbedder {
    /// `base_url` like `https://api.openai.com/v1` or `http://localhost:11434/v1` (a URL that
    /// already ends in `/embeddings` is used as is). `dims` is checked against every response;
    /// when None it is discovered from the first one. Safe to call from async code: no request
    /// is made here.
    pub fn new(
        base_url: &str,
        model: &str,
        api_key: Option<&str>,
        dims: Option<usize>,
    ) -> Result<Self, Error> {
        let base = base_url.trim().trim_end_matches('/');
        let url = reqwest::Url::parse(base).map_err(|e| {
            Error::Config(format!(
                "EMBEDDINGS_BASE_URL `{base_url}` is not a URL: {e}"
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::Config(format!(
                "EMBEDDINGS_BASE_URL `{base_url}` must start with http:// or https://"
            )));
        }
        let model = model.trim();
        if model.is_empty() {
            return Err(Error::Config("EMBEDDINGS_MODEL must not be empty".into()));
        }
        if dims == Some(0) {
            return Err(Error::Config(
                "embedding dimensions (EMBEDDINGS_DIMENSIONS) must be at least 1".into(),
            ));
        }
        let endpoint = if base.ends_with("/embeddings") {
            base.to_string()
        } else {
            format!("{base}/embeddings")
        };
        let api_key = api_key
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| ApiKey(k.to_string()));
        Ok(OpenAiEmbedder {
            client: build_client()?,
            endpoint,
            model: model.to_string(),
            id: format!("openai:{model}"),
            api_key,
            dims: AtomicUsize::new(dims.unwrap_or(0)),
            batch_size: 32,
            timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
        })
    }

    /// Texts per request (default 32). 0 is treated as 1.
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Whole-request timeout per try (default 60 s; connecting has its own 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Retry behaviour (default: 5 tries, 0.5 s doubling to at most 20 s).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The full URL requests go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// One line for logs and the health endpoint.
    pub fn description(&self) -> String {
        let dims = match self.dimensions() {
            0 => "dims discovered on first use".to_string(),
            d => format!("{d} dims"),
        };
        format!(
            "openai-compatible {} at {} ({dims})",
            self.model, self.endpoint
        )
    }

    /// One batch, with retries.
    fn embed_batch(&self, batch: &[String]) -> Result<Vec<Vec<f32>>, Error> {
        let body = serde_json::json!({ "model": self.model, "input": batch });
        let mut attempt = 1u32;
        loop {
            let mut request = self
                .client
                .post(&self.endpoint)
                .timeout(self.timeout)
                .json(&body);
            if let Some(key) = &self.api_key {
                request = request.bearer_auth(&key.0);
            }
            let (error, retryable, retry_after) = match request.send() {
                Ok(response) if response.status().is_success() => {
                    return self.parse(response, batch.len());
                }
                Ok(response) => {
                    let status = response.status();
                    let retry_after = retry_after(response.headers());
                    let message = error_message(response);
                    let retryable =
                        status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
                    let error = Error::Upstream {
                        status: Some(status.as_u16()),
                        message,
                    };
                    (error, retryable, retry_after)
                }
                Err(e) => {
                    let retryable = e.is_connect() || e.is_timeout() || e.is_request();
                    let error = Error::Upstream {
                        status: None,
                        message: error_chain(&e),
                    };
                    (error, retryable, None)
                }
            };
            if !retryable || attempt >= self.retry.max_attempts {
                return Err(error);
            }
            let delay = match retry_after {
                Some(d) if d > self.retry.max_retry_after => {
                    return Err(match error {
                        Error::Upstream { status, message } => Error::Upstream {
                            status,
                            message: format!("{message} (asked to retry after {d:?})"),
                        },
                        other => other,
                    });
                }
                Some(d) => d,
                None => self.retry.backoff(attempt + 1),
            };
            attempt += 1;
            tracing::warn!(
                model = %self.model,
                endpoint = %self.endpoint,
                attempt,
                max_attempts = self.retry.max_attempts,
                delay_ms = delay.as_millis() as u64,
                error = %error,
                "embedding request failed, retrying"
            );
            std::thread::sleep(delay);
        }
    }

    fn parse(&self, response: Response, expected: usize) -> Result<Vec<Vec<f32>>, Error> {
        let body: EmbeddingsResponse = response
            .json()
            .map_err(|e| Error::BadResponse(format!("{}: {}", self.endpoint, error_chain(&e))))?;
        if body.data.len() != expected {
            return Err(Error::BadResponse(format!(
                "sent {expected} texts, got {} vectors",
                body.data.len()
            )));
        }
        // The API documents `index`; order by it when every item has one, else trust the order.
        let mut slots: Vec<Option<Vec<f32>>> = vec![None; expected];
        let indexed = body.data.iter().all(|d| d.index.is_some());
        for (pos, item) in body.data.into_iter().enumerate() {
            let i = if indexed {
                item.index.unwrap_or(pos)
            } else {
                pos
            };
            match slots.get_mut(i) {
                Some(slot @ None) => *slot = Some(item.embedding),
                _ => {
                    return Err(Error::BadResponse(format!(
                        "vector index {i} is out of range or repeated"
                    )));
                }
            }
        }
        let mut vectors: Vec<Vec<f32>> = slots.into_iter().flatten().collect();
        for v in &mut vectors {
            self.check_dims(v.len())?;
            if v.iter().any(|x| !x.is_finite()) {
                return Err(Error::BadResponse(
                    "a vector contains NaN or infinity".into(),
                ));
            }
            l2_normalize(v);
        }
        Ok(vectors)
    }

    /// The first vector fixes the width if it was not configured; every later one must match.
    fn check_dims(&self, got: usize) -> Result<(), Error> {
        if got == 0 {
            return Err(Error::BadResponse("an empty vector".into()));
        }
        match self
            .dims
            .compare_exchange(0, got, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                tracing::info!(model = %self.model, dims = got, "discovered embedding dimensions");
                Ok(())
            }
            Err(known) if known == got => Ok(()),
            Err(known) => Err(Error::BadResponse(format!(
                "{} returned {got}-dimensional vectors, expected {known}",
                self.model
            ))),
        }
    }
}

impl Embedder for OpenAiEmbedder {
    fn model_id(&self) -> &str {
        &self.id
    }

    fn dimensions(&self) -> usize {
        self.dims.load(Ordering::Acquire)
    }

    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, Error> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(self.batch_size) {
            out.extend(self.embed_batch(batch)?);
        }
        Ok(out)
    }
}

#[derive(Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    embedding: Vec<f32>,
    #[serde(default)]
    index: Option<usize>,
}

/// reqwest's blocking builder starts a runtime and panics when called on an async worker (in
/// debug builds), and `resolve` may well run during async startup. Building it on a short-lived
/// plain thread makes construction safe from anywhere.
fn build_client() -> Result<Client, Error> {
    let build = || {
        Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("aigentable/", env!("CARGO_PKG_VERSION")))
            .build()
    };
    std::thread::scope(|s| s.spawn(build).join())
        .map_err(|_| Error::Runtime("HTTP client construction panicked".into()))?
        .map_err(|e| Error::Runtime(format!("cannot build the HTTP client: {}", error_chain(&e))))
}

/// `retry-after-ms` (OpenAI) or `Retry-After` in seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let v = text("retry-after")?;
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822).ok()?;
    let wait = at - time::OffsetDateTime::now_utc();
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

/// The useful part of an error body: OpenAI's `{"error":{"message":..}}`, Ollama's
/// `{"error":".."}`, or the start of whatever else came back.
fn error_message(response: Response) -> String {
    let status = response.status();
    let text = response.text().unwrap_or_default();
    let from_json = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            let e = v.get("error")?;
            e.get("message")
                .and_then(|m| m.as_str())
                .or_else(|| e.as_str())
                .map(str::to_string)
        });
    let message = from_json.unwrap_or(text);
    let message = message.trim();
    if message.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        truncate(message, 500)
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// reqwest's top-level message is often just "error sending request"; the cause is below.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap as AxumHeaders, StatusCode as AxumStatus};
    use axum::response::IntoResponse;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    /// One request as the fake server saw it.
    #[derive(Clone, Debug)]
    struct Seen {
        inputs: Vec<String>,
        auth: Option<String>,
    }

    type Script = dyn Fn(usize, &[String]) -> axum::response::Response + Send + Sync;

    /// A fake embeddings server on 127.0.0.1:0, answering by `script(call_number, inputs)`.
    /// It runs on its own runtime, which stops when the returned guard drops.
    struct FakeServer {
        base_url: String,
        seen: Arc<Mutex<Vec<Seen>>>,
        _runtime: tokio::runtime::Runtime,
    }

    impl FakeServer {
        fn start(
            script: impl Fn(usize, &[String]) -> axum::response::Response + Send + Sync + 'static,
        ) -> Self {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let script: Arc<Script> = Arc::new(script);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let listener = runtime
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .unwrap();
            let addr = listener.local_addr().unwrap();
            let state = (seen.clone(), script);
            let app = axum::Router::new().route(
                "/v1/embeddings",
                axum::routing::post(
                    move |headers: AxumHeaders, axum::Json(body): axum::Json<serde_json::Value>| {
                        let (seen, script) = state.clone();
                        async move {
                            let inputs: Vec<String> =
                                serde_json::from_value(body["input"].clone()).unwrap();
                            assert_eq!(body["model"], "test-model");
                            let n = {
                                let mut seen = seen.lock().unwrap();
                                seen.push(Seen {
                                    inputs: inputs.clone(),
                                    auth: headers
                                        .get("authorization")
                                        .map(|v| v.to_str().unwrap().to_string()),
                                });
                                seen.len()
                            };
                            script(n, &inputs)
                        }
                    },
                ),
            );
            runtime.spawn(async move { axum::serve(listener, app).await });
            FakeServer {
                base_url: format!("http://{addr}/v1"),
                seen,
                _runtime: runtime,
            }
        }

        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
    }

    /// A vector per input that encodes the input's length, deliberately not unit length, and
    /// the items listed in reverse so the client must order them by `index`.
    fn vectors(inputs: &[String], dims: usize) -> axum::response::Response {
        let data: Vec<_> = inputs
            .iter()
            .enumerate()
            .rev()
            .map(|(i, t)| {
                let mut v = vec![0.0f32; dims];
                v[0] = t.len() as f32 + 1.0;
                v[1] = 2.0;
                serde_json::json!({"object": "embedding", "index": i, "embedding": v})
            })
            .collect();
        axum::Json(serde_json::json!({"object": "list", "data": data, "model": "test-model"}))
            .into_response()
    }

    fn fast_retry(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            max_retry_after: Duration::from_secs(5),
        }
    }

    fn strings(n: usize) -> Vec<String> {
        (0..n).map(|i| "x".repeat(i + 1)).collect()
    }

    #[test]
    fn batches_keep_order_and_normalise() {
        let server = FakeServer::start(|_, inputs| vectors(inputs, 4));
        let e = OpenAiEmbedder::new(&server.base_url, "test-model", Some("sk-test-key"), Some(4))
            .unwrap()
            .with_batch_size(2);
        let texts = strings(5);
        let out = e.embed(&texts).unwrap();
        assert_eq!(out.len(), 5);
        for (t, v) in texts.iter().zip(&out) {
            let mut expected = vec![t.len() as f32 + 1.0, 2.0, 0.0, 0.0];
            l2_normalize(&mut expected);
            assert_eq!(v, &expected);
        }
        let seen = server.seen();
        let sizes: Vec<usize> = seen.iter().map(|s| s.inputs.len()).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
        assert_eq!(seen[2].inputs, vec!["xxxxx".to_string()]);
        assert_eq!(seen[0].auth.as_deref(), Some("Bearer sk-test-key"));
        assert_eq!(e.model_id(), "openai:test-model");
        assert!(e.embed(&[]).unwrap().is_empty());
        assert_eq!(server.seen().len(), 3, "empty input sends nothing");
    }

    #[test]
    fn retries_429_then_succeeds_honouring_retry_after() {
        let server = FakeServer::start(|n, inputs| {
            if n == 1 {
                let mut h = AxumHeaders::new();
                h.insert("retry-after", "1".parse().unwrap());
                (
                    AxumStatus::TOO_MANY_REQUESTS,
                    h,
                    r#"{"error":{"message":"slow down"}}"#,
                )
                    .into_response()
            } else {
                vectors(inputs, 3)
            }
        });
        let e = OpenAiEmbedder::new(&server.base_url, "test-model", None, None)
            .unwrap()
            .with_retry(fast_retry(3));
        let start = Instant::now();
        let v = e.embed_query("hello").unwrap();
        assert!(
            start.elapsed() >= Duration::from_millis(950),
            "Retry-After: 1 was waited out"
        );
        assert_eq!(v.len(), 3);
        assert_eq!(server.seen().len(), 2);
        assert_eq!(server.seen()[0].auth, None, "no key, no header");
    }

    #[test]
    fn server_errors_exhaust_retries_with_a_clear_error() {
        let server = FakeServer::start(|_, _| {
            (
                AxumStatus::INTERNAL_SERVER_ERROR,
                r#"{"error":"model crashed"}"#,
            )
                .into_response()
        });
        let e = OpenAiEmbedder::new(&server.base_url, "test-model", None, None)
            .unwrap()
            .with_retry(fast_retry(3));
        let err = e.embed(&strings(1)).unwrap_err();
        assert!(
            matches!(&err, Error::Upstream { status: Some(500), message } if message == "model crashed"),
            "{err:?}"
        );
        assert!(err.is_transient());
        assert_eq!(server.seen().len(), 3, "max_attempts tries");
    }

    #[test]
    fn client_errors_are_not_retried() {
        let server = FakeServer::start(|_, _| {
            (
                AxumStatus::UNAUTHORIZED,
                r#"{"error":{"message":"Incorrect API key"}}"#,
            )
                .into_response()
        });
        let e = OpenAiEmbedder::new(&server.base_url, "test-model", Some("bad"), None)
            .unwrap()
            .with_retry(fast_retry(5));
        let err = e.embed(&strings(1)).unwrap_err();
        assert!(
            matches!(&err, Error::Upstream { status: Some(401), message } if message == "Incorrect API key"),
            "{err:?}"
        );
        assert!(!err.is_transient());
        assert_eq!(server.seen().len(), 1);
    }

    #[test]
    fn a_long_retry_after_fails_fast() {
        let server = FakeServer::start(|_, _| {
            let mut h = AxumHeaders::new();
            h.insert("retry-after", "3600".parse().unwrap());
            (AxumStatus::TOO_MANY_REQUESTS, h, "quota exhausted").into_response()
        });
        let e = OpenAiEmbedder::new(&server.base_url, "test-model", None, None)
            .unwrap()
            .with_retry(fast_retry(5));
        let err = e.embed(&strings(1)).unwrap_err().to_string();
        assert!(
            err.contains("quota exhausted") && err.contains("3600"),
            "{err}"
        );
        assert_eq!(server.seen().len(), 1);
    }

    #[test]
    fn dims_are_discovered_then_enforced() {
        let server = FakeServer::start(|n, inputs| vectors(inputs, if n < 3 { 5 } else { 6 }));
        let e = OpenAiEmbedder::new(&server.base_url, "test-model", None, None).unwrap();
        assert_eq!(e.dimensions(), 0);
        assert!(e.description().contains("discovered on first use"));
        assert_eq!(e.embed_query("a").unwrap().len(), 5);
        assert_eq!(e.dimensions(), 5);
        assert!(e.description().contains("5 dims"));
        e.embed_query("b").unwrap();
        let err = e.embed_query("c").unwrap_err();
        assert!(matches!(err, Error::BadResponse(_)), "{err}");
        assert!(err.to_string().contains("expected 5"), "{err}");

        // Configured dims are checked from the first response on.
        let e = OpenAiEmbedder::new(&server.base_url, "test-model", None, Some(384)).unwrap();
        assert_eq!(e.dimensions(), 384);
        assert!(
            e.embed_query("d")
                .unwrap_err()
                .to_string()
                .contains("expected 384")
        );
    }

    #[test]
    fn malformed_responses_are_bad_responses() {
        let server = FakeServer::start(|n, inputs| match n {
            1 => axum::Json(serde_json::json!({"data": []})).into_response(),
            2 => "not json".into_response(),
            _ => vectors(&inputs[..1], 3),
        });
        let e = OpenAiEmbedder::new(&server.base_url, "test-model", None, None)
            .unwrap()
            .with_retry(fast_retry(3));
        for _ in 0..3 {
            let err = e.embed(&strings(2)).unwrap_err();
            assert!(matches!(err, Error::BadResponse(_)), "{err}");
        }
        assert_eq!(server.seen().len(), 3, "a bad 2xx answer is not retried");
    }

    #[test]
    fn connection_refused_is_retried_then_reported() {
        // A port that was just free: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = OpenAiEmbedder::new(&format!("http://127.0.0.1:{port}/v1"), "m", None, None)
            .unwrap()
            .with_retry(fast_retry(2));
        let err = e.embed(&strings(1)).unwrap_err();
        assert!(
            matches!(err, Error::Upstream { status: None, .. }),
            "{err:?}"
        );
        assert!(err.is_transient());
    }

    #[test]
    fn config_errors_and_no_secret_in_debug() {
        for bad in ["", "localhost:11434", "ftp://x/v1"] {
            let err = OpenAiEmbedder::new(bad, "m", None, None).unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{bad}: {err}");
            assert!(err.to_string().contains("EMBEDDINGS_BASE_URL"), "{err}");
        }
        assert!(OpenAiEmbedder::new(DEFAULT_BASE_URL, " ", None, None).is_err());
        let e = OpenAiEmbedder::new("http://h:1/v1/", "m", Some("sk-secret-123"), None).unwrap();
        assert_eq!(e.endpoint(), "http://h:1/v1/embeddings");
        let e2 = OpenAiEmbedder::new("http://h:1/api/embeddings", "m", None, None).unwrap();
        assert_eq!(e2.endpoint(), "http://h:1/api/embeddings");
        let dbg = format!("{e:?}");
        assert!(!dbg.contains("sk-secret-123"), "{dbg}");
        assert!(dbg.contains("<redacted>"), "{dbg}");
    }

    #[tokio::test]
    async fn construction_is_safe_inside_an_async_runtime() {
        // resolve() may run during async startup; building must not panic there.
        OpenAiEmbedder::new(DEFAULT_BASE_URL, DEFAULT_MODEL, Some("k"), None).unwrap();
    }

    #[test]
    fn retry_after_forms_and_backoff_bounds() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", "150".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO), "a date in the past");

        let p = RetryPolicy::default();
        for attempt in 2..12 {
            let d = p.backoff(attempt);
            let full = p
                .base_delay
                .saturating_mul(1 << (attempt - 2))
                .min(p.max_delay);
            assert!(d >= full / 2 && d <= full, "{attempt}: {d:?}");
        }
    }
}
