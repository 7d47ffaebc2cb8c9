//! [`OpenAiEmbedder`]: an OpenAI-compatible `POST <base>/embeddings` client (OpenAI, Ollama,
//! LM Studio, vLLM). Blocking, because embedders are called from worker threads: it uses
//! reqwest's blocking client, which runs its own small runtime on a private thread and so never
//! stalls the server's async workers.
//!
//! Batches of `batch_size` texts per request; 429, 5xx, connect errors and timeouts are retried
//! with exponential backoff and jitter, honouring a capped `Retry-After`/`retry-after-ms` (the
//! shared rules of [`crate::net::upstream`]). A tenant-set URL goes through the outbound
//! policy ([`crate::net::Policy`]). Vectors are re-normalised here because not every
//! compatible server returns unit vectors.

use super::{Embedder, Error, l2_normalize};
use crate::net::Policy;
use crate::net::upstream::{
    Next, error_message, read_error_body_blocking, redact, retry_after, root_cause,
};
use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};
use serde::Deserialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// OpenAI's API, used when no base URL is configured.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// Used when no model is configured.
pub const DEFAULT_MODEL: &str = "text-embedding-3-small";

pub use crate::net::RetryPolicy;

/// The embeddings client's default: 5 tries, 0.5 s doubling to at most 20 s; a worker can
/// afford to wait longer than a customer.
fn default_retry() -> RetryPolicy {
    RetryPolicy {
        max_retries: 4,
        base_delay: Duration::from_millis(500),
        max_delay: Duration::from_secs(20),
        max_retry_after: Duration::from_secs(60),
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
pub struct OpenAiEmbedder {
    client: Client,
    endpoint: String,
    /// `endpoint` as logs and views may show it (no password).
    shown: String,
    model: String,
    id: String,
    api_key: Option<ApiKey>,
    /// 0 until known: configured, or discovered from the first response.
    dims: AtomicUsize,
    batch_size: usize,
    timeout: Duration,
    retry: RetryPolicy,
    policy: Policy,
}

impl std::fmt::Debug for OpenAiEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the key nor a password in the URL is shown.
        f.debug_struct("OpenAiEmbedder")
            .field("endpoint", &self.shown)
            .field("model", &self.model)
            .field("api_key", &self.api_key)
            .field("dims", &self.dims)
            .field("batch_size", &self.batch_size)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
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
            client: build_client(&Policy::Operator)?,
            shown: crate::net::upstream::display_url(&endpoint),
            endpoint,
            model: model.to_string(),
            id: format!("openai:{model}"),
            api_key,
            dims: AtomicUsize::new(dims.unwrap_or(0)),
            batch_size: 32,
            timeout: Duration::from_secs(60),
            retry: default_retry(),
            policy: Policy::Operator,
        })
    }

    /// Holds the endpoint to an outbound policy (the tenant policy for a tenant-set URL).
    /// The URL is checked now and again on every request.
    pub fn with_policy(mut self, policy: Policy) -> Result<Self, Error> {
        if policy != self.policy {
            self.check_endpoint(&policy)?;
            self.client = build_client(&policy)?;
            self.policy = policy;
        }
        Ok(self)
    }

    fn check_endpoint(&self, policy: &Policy) -> Result<(), Error> {
        let url = reqwest::Url::parse(&self.endpoint)
            .map_err(|e| Error::Config(format!("the embeddings URL is not a URL: {e}")))?;
        policy
            .check_url(&url)
            .map_err(|e| Error::Config(format!("the embeddings URL is not allowed: {e}")))
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

    /// Retry behaviour (default: 4 retries, 0.5 s doubling to at most 20 s).
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
            self.model, self.shown
        )
    }

    /// One batch, with retries.
    fn embed_batch(&self, batch: &[String]) -> Result<Vec<Vec<f32>>, Error> {
        // The allowlist may have changed since the embedder was built.
        self.check_endpoint(&self.policy)?;
        let body = serde_json::json!({ "model": self.model, "input": batch });
        let key = self.api_key.as_ref().map(|k| k.0.as_str());
        let mut retries = 0u32;
        loop {
            let mut request = self
                .client
                .post(&self.endpoint)
                .timeout(self.timeout)
                .json(&body);
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            let (error, retryable, retry_after) = match request.send() {
                Ok(response) if response.status().is_success() => {
                    return self.parse(response, batch.len());
                }
                Ok(response) => {
                    let status = response.status();
                    let retry_after = retry_after(response.headers());
                    let body = read_error_body_blocking(response);
                    let message = redact(error_message(status.as_u16(), &body), key);
                    let retryable =
                        status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
                    let error = Error::Upstream {
                        status: Some(status.as_u16()),
                        message,
                    };
                    (error, retryable, retry_after)
                }
                Err(e) => {
                    if let Some(r) = crate::net::Refused::find(&e) {
                        return Err(Error::Config(format!(
                            "the embeddings URL is not allowed: {r}"
                        )));
                    }
                    let retryable = e.is_connect() || e.is_timeout() || e.is_request();
                    let error = Error::Upstream {
                        status: None,
                        message: redact(root_cause(&e), key),
                    };
                    (error, retryable, None)
                }
            };
            let delay = match self.retry.next(retries, retryable, retry_after) {
                Next::RetryAfter(d) => d,
                Next::GiveUp => return Err(error),
                Next::TooLong(d) => {
                    return Err(match error {
                        Error::Upstream { status, message } => Error::Upstream {
                            status,
                            message: format!("{message} (asked to retry after {}s)", d.as_secs()),
                        },
                        other => other,
                    });
                }
            };
            retries += 1;
            tracing::warn!(
                model = %self.model,
                endpoint = %self.shown,
                attempt = retries + 1,
                max_attempts = self.retry.max_retries + 1,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                error = %error,
                "embedding request failed, retrying"
            );
            std::thread::sleep(delay);
        }
    }

    fn parse(&self, response: Response, expected: usize) -> Result<Vec<Vec<f32>>, Error> {
        let body: EmbeddingsResponse = response
            .json()
            .map_err(|e| Error::BadResponse(format!("{}: {}", self.shown, root_cause(&e))))?;
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
fn build_client(policy: &Policy) -> Result<Client, Error> {
    let build = || {
        policy
            .blocking_client(true)
            .connect_timeout(Duration::from_secs(10))
            .build()
    };
    std::thread::scope(|s| s.spawn(build).join())
        .map_err(|_| Error::Runtime("HTTP client construction panicked".into()))?
        .map_err(|e| Error::Runtime(format!("cannot build the HTTP client: {}", root_cause(&e))))
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
            max_retries: max_attempts - 1,
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
            err.contains("Too Many Requests") && err.contains("3600"),
            "{err}"
        );
        assert!(
            !err.contains("quota exhausted"),
            "a raw body is not echoed: {err}"
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
        let e3 = OpenAiEmbedder::new("http://u:hunter2@h:1/v1", "m", None, None).unwrap();
        assert!(
            !e3.description().contains("hunter2"),
            "{}",
            e3.description()
        );
        assert!(!format!("{e3:?}").contains("hunter2"));
        assert!(dbg.contains("<redacted>"), "{dbg}");
    }

    #[tokio::test]
    async fn construction_is_safe_inside_an_async_runtime() {
        // resolve() may run during async startup; building must not panic there.
        OpenAiEmbedder::new(DEFAULT_BASE_URL, DEFAULT_MODEL, Some("k"), None).unwrap();
    }

    #[test]
    fn a_huge_retry_after_does_not_panic() {
        // `Retry-After: 1e300` used to panic in Duration::from_secs_f64.
        let server = FakeServer::start(|_, _| {
            let mut h = AxumHeaders::new();
            h.insert("retry-after", "1e300".parse().unwrap());
            h.insert("content-type", "application/json".parse().unwrap());
            (AxumStatus::TOO_MANY_REQUESTS, h, r#"{"error":"slow down"}"#).into_response()
        });
        let e = OpenAiEmbedder::new(&server.base_url, "test-model", None, None)
            .unwrap()
            .with_retry(fast_retry(5));
        let err = e.embed(&strings(1)).unwrap_err();
        assert!(
            matches!(&err, Error::Upstream { status: Some(429), message } if message.contains("slow down")),
            "{err:?}"
        );
        assert_eq!(server.seen().len(), 1, "too long a wait is not waited out");
    }

    #[test]
    fn a_tenant_url_to_a_private_address_is_refused_without_a_request() {
        let server = FakeServer::start(|_, inputs| vectors(inputs, 3));
        let tenant = Policy::tenant(crate::net::Allowlist::default());
        let err = OpenAiEmbedder::new(&server.base_url, "test-model", Some("sk-x"), None)
            .unwrap()
            .with_policy(tenant)
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        assert!(!err.is_transient());
        let allow = crate::net::Allowlist::parse("127.0.0.1").unwrap();
        let e = OpenAiEmbedder::new(&server.base_url, "test-model", None, None)
            .unwrap()
            .with_policy(Policy::tenant(allow))
            .unwrap();
        assert!(e.embed_query("y").is_ok(), "the operator allowed 127.0.0.1");
        assert_eq!(server.seen().len(), 1);
    }
}
