//! [`OnnxEmbedder`]: a sentence-embedding model folder in the Hugging Face layout, run locally
//! by ONNX Runtime through fastembed's user-defined model API. No network, ever: the model comes
//! from the folder and the runtime from an explicit library path.
//!
//! Folder layout (what `sentence-transformers` repos ship):
//! - `tokenizer.json`, `tokenizer_config.json` (required), `config.json`,
//!   `special_tokens_map.json` (optional);
//! - the graph, `onnx/model.onnx` by default (fp32), or another file chosen by
//!   [`OnnxOptions::onnx_file`], e.g. `onnx/model_quantized.onnx` (int8); an external-data
//!   file `<graph>_data` next to it is loaded too;
//! - `1_Pooling/config.json` (optional) picks mean or CLS pooling; without it, mean.

use super::cache::QueryCache;
use super::pool::Pool;
use super::{Embedder, Error, graph, runtime};
use fastembed::{
    InitOptionsUserDefined, Pooling, TextEmbedding, TokenizerFiles, UserDefinedEmbeddingModel,
};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The graph used when none is configured (fp32).
pub const DEFAULT_ONNX_FILE: &str = "onnx/model.onnx";
/// The int8 graph, used when none is configured and the folder has no [`DEFAULT_ONNX_FILE`].
pub const INT8_ONNX_FILE: &str = "onnx/model_quantized.onnx";

/// How to load an ONNX model. [`Default`] gives batches of 32, 256 tokens, the fp32 graph,
/// one intra-op thread per available core, a memory-aware number of sessions, a query cache of
/// [`DEFAULT_QUERY_CACHE`] entries and int8 weights kept int8.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnnxOptions {
    /// Texts per session run; `embed` splits larger inputs. Bounds memory per call.
    pub batch_size: usize,
    /// Tokens per text; longer texts are truncated. (MiniLM's tokenizer.json says 128 by
    /// itself, so this is always set explicitly.)
    pub max_length: usize,
    /// The graph, relative to the model folder; default [`DEFAULT_ONNX_FILE`].
    pub onnx_file: Option<PathBuf>,
    /// ONNX Runtime intra-op threads of each session; default the cores available to this
    /// process.
    pub threads: Option<usize>,
    /// Most ONNX Runtime sessions serving callers at once (EMBEDDINGS_SESSIONS). Each holds
    /// its own copy of the weights (ONNX Runtime cannot share them between sessions created
    /// from model bytes), so the default is memory-aware: see [`default_sessions`].
    pub sessions: Option<usize>,
    /// How long a session beyond the first may sit idle before it is closed, and the one
    /// kept after batch work before it is replaced by a fresh one (EMBEDDINGS_SESSION_IDLE_SECS,
    /// see `pool.rs`). One session is open until callers queue. `None`: every session opens
    /// at load and stays (the behaviour before session 10).
    pub session_idle: Option<Duration>,
    /// Query embeddings remembered per model (EMBEDDINGS_QUERY_CACHE); 0 turns the cache off.
    pub query_cache: usize,
    /// Rewrite weight-only int8 graphs (int8 weights expanded by `Cast`+`Mul`) so ONNX Runtime
    /// keeps the weights int8 instead of folding them to fp32 at load (see `graph.rs`). On by
    /// default; off only to measure the difference.
    pub keep_int8: bool,
}

/// Default size of the per-model query-embedding cache.
pub const DEFAULT_QUERY_CACHE: usize = 1024;

/// Default idle time after which a session beyond the first is closed (and a batch-grown one
/// replaced): long enough that a burst of concurrent searches keeps its second session, short
/// enough that a small machine gets the memory back soon after.
pub const DEFAULT_SESSION_IDLE: Duration = Duration::from_secs(60);

impl Default for OnnxOptions {
    fn default() -> Self {
        OnnxOptions {
            batch_size: 32,
            max_length: 256,
            onnx_file: None,
            threads: None,
            sessions: None,
            session_idle: Some(DEFAULT_SESSION_IDLE),
            query_cache: DEFAULT_QUERY_CACHE,
            keep_int8: true,
        }
    }
}

/// Graphs up to this size get a second session by default (on two or more cores): all-MiniLM-L6
/// (90 MB fp32, 23 MB int8) costs ~100 MB per session. Larger ones (all-mpnet-base-v2, 112 MB
/// of int8 weights, ~330 MB per session) get one, so a 2 GB machine is not filled by copies.
const SECOND_SESSION_MAX_GRAPH_BYTES: usize = 100 * 1024 * 1024;

/// Bound on one batch's attention work, (texts x estimated tokens^2): a batch is padded to
/// its longest text and attention holds batch x heads x length^2 scores, so memory grows with
/// the square of the length. ONNX Runtime's arena grows to the largest batch's working set
/// (rounded up to the next power of two) and never gives it back, so this bound is what a
/// model costs for good after its first large batch. Measured (BENCHMARKS.md): with 32 x 256^2,
/// a tenant's re-embedding held +870 MiB for MiniLM int8 (one arena; a second session did not
/// matter), with 8 x 256^2 +225 MiB, at the same or better speed; mpnet held 1.3 GB at
/// 32 x 384 against 0.4 GB at 4 x 384 (also faster). One bound for every model: 4 texts of
/// 384 tokens' worth (9 of 256, 2 of 512).
const ATTENTION_BUDGET: usize = 4 * 384 * 384;

/// Splits texts sorted by length (ascending) into batches of at most `batch_size` whose
/// `count x longest^2` stays within `budget`, with lengths estimated in tokens (capped at
/// `max_length`). A single text always forms a batch, however long.
fn plan_batches(
    lengths: &[usize],
    batch_size: usize,
    max_length: usize,
    budget: usize,
) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, len) in lengths.iter().enumerate() {
        let tokens = estimate_tokens(*len, max_length);
        let count = i - start + 1;
        if count > 1 && (count > batch_size || count * tokens * tokens > budget) {
            out.push(start..i);
            start = i;
        }
    }
    if start < lengths.len() {
        out.push(start..lengths.len());
    }
    out
}

/// Tokens of a text of `bytes` UTF-8 bytes, erring high (English WordPiece averages over four
/// bytes per token), plus the two special tokens; capped at the model's input limit.
fn estimate_tokens(bytes: usize, max_length: usize) -> usize {
    (bytes / 3 + 2).min(max_length)
}

/// The number of sessions used when none is configured: two on a machine with two or more
/// cores when the graph is small (a query need not wait behind an ingestion batch), else one.
pub fn default_sessions(graph_bytes: usize, cores: usize) -> usize {
    if cores >= 2 && graph_bytes <= SECOND_SESSION_MAX_GRAPH_BYTES {
        2
    } else {
        1
    }
}

/// A local embedding model: a small pool of ONNX Runtime sessions (fastembed's `embed` takes
/// `&mut self`, so each caller checks one out per batch), opened as callers queue and closed
/// when idle (`pool.rs`), and a cache of query embeddings. Concurrent searches run on
/// different sessions instead of queueing behind one lock, and a repeated query costs a map
/// lookup.
pub struct OnnxEmbedder {
    pool: Arc<Pool<TextEmbedding>>,
    cache: QueryCache,
    id: String,
    name: String,
    variant: String,
    dims: usize,
    batch_size: usize,
    max_length: usize,
    threads: usize,
    sessions: usize,
    session_idle: Option<Duration>,
    /// Weight tensors kept int8 by the load-time rewrite (0: the graph was used as it is).
    int8_weights: usize,
    pooling: Pooling,
    model_dir: PathBuf,
    graph: PathBuf,
}

impl std::fmt::Debug for OnnxEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxEmbedder")
            .field("id", &self.id)
            .field("dims", &self.dims)
            .field("batch_size", &self.batch_size)
            .field("max_length", &self.max_length)
            .field("threads", &self.threads)
            .field("sessions", &self.sessions)
            .field("session_idle", &self.session_idle)
            .field("int8_weights", &self.int8_weights)
            .field("pooling", &self.pooling)
            .field("graph", &self.graph)
            .finish_non_exhaustive()
    }
}

impl OnnxEmbedder {
    /// Loads the default (fp32) graph of `model_dir` with ONNX Runtime from `ort_dylib`.
    pub fn load(
        model_dir: &Path,
        ort_dylib: &Path,
        batch_size: usize,
        max_length: usize,
    ) -> Result<Self, Error> {
        Self::load_with(
            model_dir,
            ort_dylib,
            &OnnxOptions {
                batch_size,
                max_length,
                ..OnnxOptions::default()
            },
        )
    }

    /// Loads a model folder with explicit options. Errors name the path or setting at fault.
    /// Takes a second or two (reads and optimises the graph, then runs one probe text).
    pub fn load_with(
        model_dir: &Path,
        ort_dylib: &Path,
        options: &OnnxOptions,
    ) -> Result<Self, Error> {
        if options.batch_size == 0 {
            return Err(Error::Config(
                "batch_size (EMBEDDINGS_BATCH_SIZE) must be at least 1".into(),
            ));
        }
        if options.max_length < 2 {
            return Err(Error::Config(
                "max_length (EMBEDDINGS_MAX_LENGTH) must be at least 2".into(),
            ));
        }
        if options.threads == Some(0) {
            return Err(Error::Config(
                "threads (EMBEDDINGS_THREADS) must be at least 1".into(),
            ));
        }
        // The folder first: it needs no runtime, so its mistakes are reported even on a
        // machine without ONNX Runtime.
        let folder = ModelFolder::open(model_dir, options.onnx_file.as_deref())?;
        let (max_length, length_suffix) =
            effective_length(options.max_length, folder.max_seq_length, &folder.name);
        let environment = runtime::environment(ort_dylib)?;

        if options.sessions == Some(0) {
            return Err(Error::Config(
                "sessions (EMBEDDINGS_SESSIONS) must be at least 1".into(),
            ));
        }
        let (mut graph_bytes, int8_weights) = graph_bytes(&folder, options.keep_int8)?;
        // Over the bytes ONNX Runtime runs: the rewritten graph computes slightly different
        // vectors (cosine >= 0.9998), so it is a different model id than the file as it is.
        let fingerprint = fingerprint(&graph_bytes);
        let tokenizer_files = folder.tokenizer_files()?;
        let external = folder.external_data()?;
        let threads = options.threads.unwrap_or_else(available_cores);
        let sessions = options
            .sessions
            .unwrap_or_else(|| default_sessions(graph_bytes.len(), available_cores()));

        // Elastic: one session now, more when callers queue. Fixed: all of them now.
        let at_start = if options.session_idle.is_some() {
            1
        } else {
            sessions
        };
        let mut pool = Vec::with_capacity(at_start);
        for i in 0..at_start {
            // The last session takes the bytes; the others a copy (freed once loaded).
            let bytes = if i + 1 == at_start {
                std::mem::take(&mut graph_bytes)
            } else {
                graph_bytes.clone()
            };
            pool.push(new_session(
                &folder,
                bytes,
                tokenizer_files.clone(),
                external.clone(),
                environment.clone(),
                max_length,
                threads,
            )?);
        }
        drop((tokenizer_files, external));

        // One probe both proves the graph runs end to end and tells us its width, which is
        // then checked on every batch.
        let probe = pool
            .first_mut()
            .expect("BUG: at least one session")
            .embed(["dimension probe"], Some(1))
            .map_err(|e| {
                Error::Config(format!(
                    "ONNX model {} loaded but fails to run: {e}",
                    folder.graph.display()
                ))
            })?;
        let dims = probe.first().map(Vec::len).unwrap_or(0);
        if dims == 0 {
            return Err(Error::Config(format!(
                "ONNX model {} produced no embedding (is it a sentence-embedding model?)",
                folder.graph.display()
            )));
        }

        let variant = variant_of(&folder.graph);
        let id = format!(
            "onnx:{}:{variant}:{fingerprint}{length_suffix}",
            folder.name
        );
        tracing::info!(model_id = %id, dims, threads, sessions, session_idle = ?options.session_idle, int8_weights, graph = %folder.graph.display(), "loaded embedding model");
        let pool = match options.session_idle {
            None => Pool::fixed(pool),
            Some(idle) => {
                let first = pool.pop().expect("BUG: one session opened at start");
                let more = MoreSessions {
                    folder: folder.clone(),
                    keep_int8: options.keep_int8,
                    fingerprint,
                    environment,
                    max_length,
                    threads,
                };
                Pool::elastic(first, sessions, idle, Box::new(move || more.open()))
            }
        };
        Ok(OnnxEmbedder {
            pool,
            cache: QueryCache::new(options.query_cache),
            id,
            name: folder.name,
            variant,
            dims,
            batch_size: options.batch_size,
            max_length,
            threads,
            sessions,
            session_idle: options.session_idle,
            int8_weights,
            pooling: folder.pooling,
            model_dir: folder.dir,
            graph: folder.graph,
        })
    }

    /// One line for logs and the health endpoint.
    pub fn description(&self) -> String {
        format!(
            "onnx {} ({} dims, {}{}, {} pooling, {} tokens, batches of up to {}, {} threads, {}{} session{}) from {}",
            self.name,
            self.dims,
            self.variant,
            if self.int8_weights > 0 {
                " weights kept int8"
            } else {
                ""
            },
            match self.pooling {
                Pooling::Cls => "cls",
                Pooling::Mean => "mean",
            },
            self.max_length,
            self.batch_size,
            self.threads,
            if self.session_idle.is_some() && self.sessions > 1 {
                "up to "
            } else {
                ""
            },
            self.sessions,
            if self.sessions == 1 { "" } else { "s" },
            self.model_dir.display()
        )
    }

    /// The graph file in use.
    pub fn graph_path(&self) -> &Path {
        &self.graph
    }

    /// ONNX Runtime intra-op threads of each session.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Most ONNX Runtime sessions the pool opens (EMBEDDINGS_SESSIONS).
    pub fn sessions(&self) -> usize {
        self.sessions
    }

    /// ONNX Runtime sessions open now: one while callers do not queue, up to
    /// [`sessions`](Self::sessions) while they do.
    pub fn open_sessions(&self) -> usize {
        self.pool.open()
    }

    /// Weight tensors the load-time rewrite kept int8 (0: the graph runs as it is).
    pub fn int8_weights(&self) -> usize {
        self.int8_weights
    }

    /// The query cache: (entries, hits, misses).
    pub fn query_cache_stats(&self) -> (usize, u64, u64) {
        self.cache.stats()
    }

    fn run(&self, texts: &[String], query: bool) -> Result<Vec<Vec<f32>>, Error> {
        let vectors = self
            .pool
            .take(query)
            .session()
            .embed(texts, Some(texts.len()))
            .map_err(|e| Error::Runtime(format!("{}: {e}", self.id)))?;
        if vectors.len() != texts.len() || vectors.iter().any(|v| v.len() != self.dims) {
            return Err(Error::Runtime(format!(
                "{}: expected {} vectors of {} dims, got {}",
                self.id,
                texts.len(),
                self.dims,
                vectors.len()
            )));
        }
        Ok(vectors)
    }
}

impl Embedder for OnnxEmbedder {
    fn model_id(&self) -> &str {
        &self.id
    }

    fn dimensions(&self) -> usize {
        self.dims
    }

    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, Error> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        // Batches of similar lengths: a batch is padded to its longest text, so mixing short
        // and long texts wastes work; and long texts go in smaller batches (memory). Padding
        // does not change a text's vector: the pooling ignores padded positions.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let lengths: Vec<usize> = order.iter().map(|&i| texts[i].len()).collect();
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        // A session per batch, so concurrent callers interleave (or run side by side on
        // another session) instead of one long input starving the rest.
        for range in plan_batches(&lengths, self.batch_size, self.max_length, ATTENTION_BUDGET) {
            let idx = &order[range];
            let batch: Vec<String> = idx.iter().map(|&i| texts[i].clone()).collect();
            for (&i, v) in idx.iter().zip(self.run(&batch, false)?) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// Served from the model's query cache when the same text was embedded recently.
    fn embed_query(&self, text: &str) -> Result<Vec<f32>, Error> {
        if let Some(v) = self.cache.get(text) {
            return Ok(v.as_ref().clone());
        }
        let v = self
            .run(&[text.to_string()], true)?
            .pop()
            .ok_or_else(|| Error::Runtime(format!("{} returned no vector", self.id)))?;
        self.cache.put(text, Arc::new(v.clone()));
        Ok(v)
    }
}

/// The graph's bytes as ONNX Runtime will run them (weight-only int8 graphs rewritten to keep
/// their weights int8 when `keep_int8`), and how many weights the rewrite kept int8.
fn graph_bytes(folder: &ModelFolder, keep_int8: bool) -> Result<(Vec<u8>, usize), Error> {
    let bytes = read(&folder.graph, "ONNX graph")?;
    if keep_int8 {
        match graph::weight_only_int8_to_dequantize(&bytes) {
            Ok(Some(r)) => return Ok((r.bytes, r.weights)),
            Ok(None) => {}
            // Not a protobuf we can walk: ONNX Runtime gives the better message.
            Err(e) => {
                tracing::debug!(graph = %folder.graph.display(), "graph not rewritten: {e}")
            }
        }
    }
    Ok((bytes, 0))
}

/// What the pool needs to open one more session of the loaded model: the folder is read
/// again (holding the graph's bytes between sessions would cost as much as a session), and
/// a graph that changed on disk since the load is refused (its vectors would not match the
/// model id).
struct MoreSessions {
    folder: ModelFolder,
    keep_int8: bool,
    fingerprint: String,
    environment: ort::environment::Environment,
    max_length: usize,
    threads: usize,
}

impl MoreSessions {
    fn open(&self) -> Result<TextEmbedding, Error> {
        let (bytes, _) = graph_bytes(&self.folder, self.keep_int8)?;
        if fingerprint(&bytes) != self.fingerprint {
            return Err(Error::Config(format!(
                "ONNX graph {} changed on disk since the model was loaded (restart the server to load it)",
                self.folder.graph.display()
            )));
        }
        new_session(
            &self.folder,
            bytes,
            self.folder.tokenizer_files()?,
            self.folder.external_data()?,
            self.environment.clone(),
            self.max_length,
            self.threads,
        )
    }
}

/// One ONNX Runtime session over `bytes` with the model folder's tokenizer and pooling.
fn new_session(
    folder: &ModelFolder,
    bytes: Vec<u8>,
    tokenizer_files: TokenizerFiles,
    external: Option<(String, Vec<u8>)>,
    environment: ort::environment::Environment,
    max_length: usize,
    threads: usize,
) -> Result<TextEmbedding, Error> {
    let mut model =
        UserDefinedEmbeddingModel::new(bytes, tokenizer_files).with_pooling(folder.pooling.clone());
    if let Some((file_name, buffer)) = external {
        model = model.with_external_initializer(file_name, buffer);
    }
    let init = InitOptionsUserDefined::new()
        .with_environment(environment)
        .with_max_length(max_length)
        .with_intra_threads(threads)
        // Spinning intra-op threads keep every core busy for a while after each run
        // (measured: ~96 ms of process CPU per 114 ms chat turn); queries arrive one at
        // a time between other work on the same cores, so they block instead.
        // The CPU memory arena stays on: it grows to the largest batch seen and never
        // shrinks, but turning it off was measured worse (RSS +590 MiB instead of
        // +280 MiB after 2,000 texts in batches of 64: glibc keeps the freed tensors).
        // Bounding it needs an OrtArenaCfg or run options, which fastembed does not expose.
        .with_session_config("session.intra_op.allow_spinning", "0");
    TextEmbedding::try_new_from_user_defined(model, init).map_err(|e| {
        // fastembed reads the tokenizer files here too, so name the folder as well.
        Error::Config(format!(
            "cannot load model folder {} (graph {}): {e}",
            folder.dir.display(),
            folder.graph.display()
        ))
    })
}

/// What was found in a model folder, before anything heavy is read.
#[derive(Clone)]
struct ModelFolder {
    dir: PathBuf,
    /// The folder's own name (after resolving symlinks), used in the model id.
    name: String,
    graph: PathBuf,
    pooling: Pooling,
    /// `max_seq_length` of `sentence_bert_config.json`: the input length the model was
    /// trained and is evaluated with (all-mpnet-base-v2: 384).
    max_seq_length: Option<usize>,
}

/// Models whose vectors were made at the configured length (512) before a folder's own
/// `max_seq_length` was applied, and keep it: all-MiniLM-L6-v2 says 256, but its quality
/// figures (BENCHMARKS.md, issue 3) were measured at 512 over our ~400-token chunks, and
/// applying 256 would drop the last third of every chunk from its vector and re-embed every
/// existing installation.
const KEEPS_CONFIGURED_LENGTH: &[&str] = &["all-MiniLM-L6-v2"];

/// The input length a folder's model runs at, and the suffix its model id gets: the folder's
/// own `max_seq_length` when it is shorter than the configured length (then the id says so,
/// `:len384`, since vectors made at the configured length differ and must be re-embedded),
/// else the configured length and no suffix (the model id as it always was).
fn effective_length(configured: usize, folder: Option<usize>, name: &str) -> (usize, String) {
    match folder {
        Some(n) if n >= 2 && n < configured && !KEEPS_CONFIGURED_LENGTH.contains(&name) => {
            (n, format!(":len{n}"))
        }
        _ => (configured, String::new()),
    }
}

/// `max_seq_length` of a folder's `sentence_bert_config.json`; `None` without the file or
/// the key (a file that does not parse is reported: the length changes the vectors).
fn read_max_seq_length(path: &Path) -> Result<Option<usize>, Error> {
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = read(path, "sentence-transformers config")?;
    let cfg: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        Error::Config(format!(
            "sentence-transformers config {}: {e}",
            path.display()
        ))
    })?;
    Ok(cfg
        .get("max_seq_length")
        .and_then(|v| v.as_u64())
        .map(|n| n as usize))
}

impl ModelFolder {
    fn open(dir: &Path, onnx_file: Option<&Path>) -> Result<Self, Error> {
        let shown = dir.display();
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::Config(format!(
                    "model folder {shown} (EMBEDDINGS_MODEL_DIR) is not a folder"
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Config(format!(
                    "model folder {shown} (EMBEDDINGS_MODEL_DIR) does not exist"
                )));
            }
            Err(e) => {
                return Err(Error::Config(format!(
                    "model folder {shown} (EMBEDDINGS_MODEL_DIR): {e}"
                )));
            }
        }
        let dir = std::fs::canonicalize(dir).map_err(|e| {
            Error::Config(format!("model folder {shown} (EMBEDDINGS_MODEL_DIR): {e}"))
        })?;
        for required in ["tokenizer.json", "tokenizer_config.json"] {
            if !dir.join(required).is_file() {
                return Err(Error::Config(format!(
                    "model folder {} has no {required} (expected the Hugging Face layout)",
                    dir.display()
                )));
            }
        }
        // A folder that ships only the int8 graph (many Hugging Face repos do) needs no setting.
        let rel = onnx_file.unwrap_or(
            if !dir.join(DEFAULT_ONNX_FILE).is_file() && dir.join(INT8_ONNX_FILE).is_file() {
                Path::new(INT8_ONNX_FILE)
            } else {
                Path::new(DEFAULT_ONNX_FILE)
            },
        );
        let graph = dir.join(rel);
        if !graph.is_file() {
            return Err(Error::Config(format!(
                "ONNX graph {} does not exist (EMBEDDINGS_ONNX_FILE is {}, relative to the model folder)",
                graph.display(),
                rel.display()
            )));
        }
        let pooling = read_pooling(&dir.join("1_Pooling").join("config.json"))?;
        let max_seq_length = read_max_seq_length(&dir.join("sentence_bert_config.json"))?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        Ok(ModelFolder {
            dir,
            name,
            graph,
            pooling,
            max_seq_length,
        })
    }

    fn tokenizer_files(&self) -> Result<TokenizerFiles, Error> {
        let optional = |name: &str| -> Result<Vec<u8>, Error> {
            let p = self.dir.join(name);
            if p.is_file() {
                read(&p, "tokenizer file")
            } else {
                Ok(b"{}".to_vec())
            }
        };
        Ok(TokenizerFiles {
            tokenizer_file: read(&self.dir.join("tokenizer.json"), "tokenizer file")?,
            config_file: optional("config.json")?,
            special_tokens_map_file: optional("special_tokens_map.json")?,
            tokenizer_config_file: read(&self.dir.join("tokenizer_config.json"), "tokenizer file")?,
        })
    }

    /// Graphs over 2 GB keep their weights in `<graph>_data`, referenced by file name.
    fn external_data(&self) -> Result<Option<(String, Vec<u8>)>, Error> {
        let mut name = self.graph.file_name().unwrap_or_default().to_os_string();
        name.push("_data");
        let path = self.graph.with_file_name(&name);
        if !path.is_file() {
            return Ok(None);
        }
        Ok(Some((
            name.to_string_lossy().into_owned(),
            read(&path, "ONNX external data")?,
        )))
    }
}

/// sentence-transformers' pooling config. Only the modes fastembed implements are accepted;
/// anything else would silently give wrong vectors.
fn read_pooling(path: &Path) -> Result<Pooling, Error> {
    if !path.is_file() {
        return Ok(Pooling::Mean);
    }
    let bytes = read(path, "pooling config")?;
    let cfg: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Config(format!("pooling config {}: {e}", path.display())))?;
    let on = |key: &str| cfg.get(key).and_then(|v| v.as_bool()).unwrap_or(false);
    if on("pooling_mode_mean_tokens") {
        Ok(Pooling::Mean)
    } else if on("pooling_mode_cls_token") {
        Ok(Pooling::Cls)
    } else {
        let enabled: Vec<&str> = cfg
            .as_object()
            .map(|o| {
                o.iter()
                    .filter(|(k, v)| k.starts_with("pooling_mode") && v.as_bool() == Some(true))
                    .map(|(k, _)| k.as_str())
                    .collect()
            })
            .unwrap_or_default();
        Err(Error::Config(format!(
            "pooling config {} asks for {}; only mean and cls pooling are supported",
            path.display(),
            if enabled.is_empty() {
                "no pooling mode".to_string()
            } else {
                enabled.join(", ")
            }
        )))
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::Config(format!("{what} {}: {e}", path.display())))
}

/// `model.onnx` is the fp32 export and `model_quantized.onnx` the int8 one by Hugging Face
/// convention; other names (`model_fp16.onnx`, `model_O4.onnx`) keep their suffix.
pub fn variant_of(graph: &Path) -> String {
    let stem = graph
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match stem.as_str() {
        "model" => "fp32".into(),
        "model_quantized" => "int8".into(),
        s => s.strip_prefix("model_").unwrap_or(s).to_string(),
    }
}

/// 8 hex digits identifying the graph bytes, so replacing the file in a folder of the same
/// name changes the model id (and so marks old vectors as incomparable). Hashes the length and
/// 16 evenly spaced 64 KiB samples rather than every byte: enough to tell models apart, and
/// cheap even in debug builds.
fn fingerprint(bytes: &[u8]) -> String {
    const SAMPLES: usize = 16;
    const SAMPLE: usize = 64 * 1024;
    let mut h = Sha256::new();
    h.update((bytes.len() as u64).to_le_bytes());
    if bytes.len() <= SAMPLES * SAMPLE {
        h.update(bytes);
    } else {
        let step = (bytes.len() - SAMPLE) / (SAMPLES - 1);
        for i in 0..SAMPLES {
            let start = i * step;
            h.update(&bytes[start..start + SAMPLE]);
        }
    }
    hex::encode(&h.finalize()[..4])
}

fn available_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    fn norm(a: &[f32]) -> f32 {
        a.iter().map(|x| x * x).sum::<f32>().sqrt()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// A folder that passes the layout checks without being a real model.
    fn fake_model_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), "{}").unwrap();
        std::fs::write(
            dir.path().join("tokenizer_config.json"),
            r#"{"model_max_length":512,"pad_token":"[PAD]"}"#,
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("onnx")).unwrap();
        std::fs::write(dir.path().join("onnx/model.onnx"), "not a graph").unwrap();
        dir
    }

    #[test]
    fn real_model_embeds_meaningfully() {
        let Some((model_dir, ort)) =
            crate::test_model::model_and_runtime("embed::onnx::real_model_embeds_meaningfully")
        else {
            return;
        };
        let e = OnnxEmbedder::load(&model_dir, &ort, 4, 256).unwrap();
        assert_eq!(e.dimensions(), 384);
        assert!(
            e.model_id().starts_with("onnx:all-MiniLM-L6-v2:fp32:"),
            "{}",
            e.model_id()
        );
        assert_eq!(e.model_id().len(), "onnx:all-MiniLM-L6-v2:fp32:".len() + 8);
        assert!(e.description().contains("384 dims"), "{}", e.description());

        let texts = strings(&[
            "A man is playing a guitar on stage.",
            "Someone performs music with a guitar in front of an audience.",
            "The quarterly tax return is due at the end of April.",
            "How do I reset my password?",
            "I forgot my login credentials and need to change them.",
            "",
        ]);
        let vs = e.embed(&texts).unwrap();
        assert_eq!(vs.len(), texts.len());
        for v in &vs {
            assert_eq!(v.len(), 384);
            assert!((norm(v) - 1.0).abs() < 1e-4, "norm {}", norm(v));
        }
        assert!(cosine(&vs[0], &vs[1]) > cosine(&vs[0], &vs[2]) + 0.3);
        assert!(cosine(&vs[3], &vs[4]) > cosine(&vs[3], &vs[2]) + 0.2);

        // Batch results equal single results: padding must not leak into the pooling.
        for (t, batched) in texts.iter().zip(&vs) {
            let single = e.embed_query(t).unwrap();
            assert!(cosine(&single, batched) > 0.9999, "{t:?}");
            let max_diff = single
                .iter()
                .zip(batched)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(max_diff < 1e-4, "{t:?}: {max_diff}");
        }

        // Longer than max_length: truncated, not an error; empty input is no work.
        let long = "word ".repeat(2000);
        assert_eq!(e.embed(&[long]).unwrap()[0].len(), 384);
        assert!(e.embed(&[]).unwrap().is_empty());

        // Shared between threads: same answers as sequentially.
        let e = std::sync::Arc::new(e);
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let e = e.clone();
                let texts = texts.clone();
                std::thread::spawn(move || e.embed(&texts).unwrap())
            })
            .collect();
        for h in handles {
            for (a, b) in h.join().unwrap().iter().zip(&vs) {
                assert!(cosine(a, b) > 0.9999);
            }
        }
    }

    /// all-mpnet-base-v2 (no token_type_ids, pad id 1, 768 dims) against vectors computed
    /// independently: Python onnxruntime over the graph as shipped (weights folded to fp32),
    /// Hugging Face tokenizers, numpy pooling (tests/fixtures/mpnet_reference.json says how).
    /// Ours run the rewritten graph (weights kept int8), batched with padding.
    #[test]
    fn real_mpnet_matches_an_independent_reference() {
        let Some((model_dir, ort)) = crate::test_model::mpnet_and_runtime(
            "embed::onnx::real_mpnet_matches_an_independent_reference",
        ) else {
            return;
        };
        let fixture: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mpnet_reference.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let texts: Vec<String> = serde_json::from_value(fixture["texts"].clone()).unwrap();
        let reference: Vec<Vec<f32>> = serde_json::from_value(fixture["vectors"].clone()).unwrap();
        let e = OnnxEmbedder::load_with(
            &model_dir,
            &ort,
            &OnnxOptions {
                max_length: 384,
                sessions: Some(1),
                ..OnnxOptions::default()
            },
        )
        .unwrap();
        assert_eq!(e.dimensions(), 768);
        assert!(
            e.model_id().starts_with("onnx:all-mpnet-base-v2:int8:"),
            "{}",
            e.model_id()
        );
        // Every MatMul weight of the 12 layers (q, k, v, out, up, down) stays int8.
        assert_eq!(e.int8_weights(), 72, "{}", e.description());
        assert!(e.description().contains("weights kept int8"));

        // One batch: the short texts are padded (with id 1) to the long one's 384 tokens.
        let ours = e.embed(&texts).unwrap();
        for ((t, a), b) in texts.iter().zip(&ours).zip(&reference) {
            assert_eq!(a.len(), 768);
            assert!((norm(a) - 1.0).abs() < 1e-4);
            let c = cosine(a, b);
            assert!(c > 0.999, "{t:.40}: cosine to the reference {c}");
        }
        // Paraphrases are close, unrelated texts are not, as in the reference.
        assert!(cosine(&ours[0], &ours[1]) > cosine(&ours[0], &ours[2]) + 0.4);
        assert!(cosine(&ours[3], &ours[4]) > cosine(&ours[3], &ours[2]) + 0.4);

        // The query path (and its cache) gives the same vector as the batch.
        let q = e.embed_query(&texts[3]).unwrap();
        assert!(cosine(&q, &ours[3]) > 0.9999);
        let again = e.embed_query(&texts[3]).unwrap();
        assert_eq!(q, again);
        let (entries, hits, _) = e.query_cache_stats();
        assert_eq!((entries, hits), (1, 1));

        // Loaded with the server's 512: it runs at its own 384, and its id says so (vectors
        // made at 512 are re-embedded).
        drop(e);
        let e = OnnxEmbedder::load_with(
            &model_dir,
            &ort,
            &OnnxOptions {
                max_length: 512,
                sessions: Some(1),
                ..OnnxOptions::default()
            },
        )
        .unwrap();
        assert!(e.model_id().ends_with(":len384"), "{}", e.model_id());
        assert!(
            e.description().contains("384 tokens"),
            "{}",
            e.description()
        );
    }

    /// The pool opens its second session only when a caller would wait, and that session
    /// (opened again from the folder by the keeper) gives the same vectors as the first.
    #[test]
    fn real_model_opens_a_second_session_only_under_contention() {
        let Some((model_dir, ort)) = crate::test_model::model_and_runtime(
            "embed::onnx::real_model_opens_a_second_session_only_under_contention",
        ) else {
            return;
        };
        let e = OnnxEmbedder::load_with(
            &model_dir,
            &ort,
            &OnnxOptions {
                sessions: Some(2),
                threads: Some(1),
                query_cache: 0,
                ..OnnxOptions::default()
            },
        )
        .unwrap();
        assert_eq!((e.sessions(), e.open_sessions()), (2, 1));
        assert!(
            e.description().contains("up to 2 sessions"),
            "{}",
            e.description()
        );
        let t = "How do I reset my password?";
        let alone = e.embed_query(t).unwrap();
        assert_eq!(
            e.open_sessions(),
            1,
            "one caller at a time needs one session"
        );

        // The only session is busy: a query gets a second one instead of waiting.
        let busy = e.pool.take(false);
        let second = std::thread::scope(|s| s.spawn(|| e.embed_query(t).unwrap()).join());
        let second = second.unwrap();
        drop(busy);
        assert_eq!(e.open_sessions(), 2);
        assert!(cosine(&alone, &second) > 0.9999);
    }

    /// A graph replaced on disk after the load is not opened as a second session (its vectors
    /// would not match the model id): callers keep being served by the session open.
    #[cfg(unix)]
    #[test]
    fn real_model_refuses_a_second_session_from_a_changed_graph() {
        let Some((model_dir, ort)) = crate::test_model::model_and_runtime(
            "embed::onnx::real_model_refuses_a_second_session_from_a_changed_graph",
        ) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("model");
        std::fs::create_dir_all(copy.join("onnx")).unwrap();
        for name in [
            "tokenizer.json",
            "tokenizer_config.json",
            "config.json",
            "1_Pooling",
        ] {
            std::os::unix::fs::symlink(model_dir.join(name), copy.join(name)).unwrap();
        }
        let graph = copy.join(INT8_ONNX_FILE);
        std::os::unix::fs::symlink(model_dir.join(INT8_ONNX_FILE), &graph).unwrap();
        let e = OnnxEmbedder::load_with(
            &copy,
            &ort,
            &OnnxOptions {
                onnx_file: Some(INT8_ONNX_FILE.into()),
                sessions: Some(2),
                threads: Some(1),
                query_cache: 0,
                ..OnnxOptions::default()
            },
        )
        .unwrap();
        let t = "Where is my parcel?";
        let before = e.embed_query(t).unwrap();
        // Another model's graph now sits where the loaded one was.
        std::fs::remove_file(&graph).unwrap();
        std::os::unix::fs::symlink(model_dir.join(DEFAULT_ONNX_FILE), &graph).unwrap();

        // The only session is busy: the pool tries to open a second one, refuses the changed
        // graph, and the waiting query gets the first session once it is back.
        let busy = e.pool.take(false);
        let after = std::thread::scope(|s| {
            let q = s.spawn(|| e.embed_query(t).unwrap());
            // Until the keeper has done either (a second session would be the bug).
            while !e.pool.open_failed() && e.open_sessions() < 2 {
                std::thread::yield_now();
            }
            drop(busy);
            q.join().unwrap()
        });
        assert_eq!(e.open_sessions(), 1);
        assert!(e.pool.open_failed());
        assert!(cosine(&before, &after) > 0.9999);
    }

    #[test]
    fn real_int8_graph_is_selectable_and_close_to_fp32() {
        let Some((model_dir, ort)) = crate::test_model::model_and_runtime(
            "embed::onnx::real_int8_graph_is_selectable_and_close_to_fp32",
        ) else {
            return;
        };
        let fp32 = OnnxEmbedder::load(&model_dir, &ort, 32, 256).unwrap();
        let int8 = OnnxEmbedder::load_with(
            &model_dir,
            &ort,
            &OnnxOptions {
                onnx_file: Some("onnx/model_quantized.onnx".into()),
                threads: Some(1),
                ..OnnxOptions::default()
            },
        )
        .unwrap();
        assert!(int8.model_id().starts_with("onnx:all-MiniLM-L6-v2:int8:"));
        assert_ne!(int8.model_id(), fp32.model_id());
        assert_eq!(int8.threads(), 1);
        let t = "Ethanol fuel needs energy to grow, ferment and distil.";
        let c = cosine(&fp32.embed_query(t).unwrap(), &int8.embed_query(t).unwrap());
        assert!(c > 0.98, "{c}");
    }

    #[cfg(unix)]
    #[test]
    fn real_runtime_loads_once_and_refuses_a_second_library() {
        let Some((model_dir, ort)) = crate::test_model::model_and_runtime(
            "embed::onnx::real_runtime_loads_once_and_refuses_a_second_library",
        ) else {
            return;
        };
        runtime::environment(&ort).unwrap();
        // The same library again, also through a symlink: fine.
        runtime::environment(&ort).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("libonnxruntime.so");
        std::os::unix::fs::symlink(std::fs::canonicalize(&ort).unwrap(), &link).unwrap();
        runtime::environment(&link).unwrap();
        // A different file: a clear error naming both, not a panic or a silent reuse.
        let copy = dir.path().join("libonnxruntime.so.copy");
        std::fs::copy(&ort, &copy).unwrap();
        let err = OnnxEmbedder::load(&model_dir, &copy, 32, 256)
            .unwrap_err()
            .to_string();
        assert!(err.contains("already loaded"), "{err}");
        assert!(err.contains("libonnxruntime.so.copy"), "{err}");
        assert_eq!(
            runtime::loaded_path().unwrap(),
            std::fs::canonicalize(&ort).unwrap()
        );
    }

    #[test]
    fn real_runtime_with_a_broken_graph_names_the_graph() {
        let Some((_, ort)) = crate::test_model::model_and_runtime(
            "embed::onnx::real_runtime_with_a_broken_graph_names_the_graph",
        ) else {
            return;
        };
        let dir = fake_model_dir();
        let err = OnnxEmbedder::load(dir.path(), &ort, 32, 256).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Config(_)), "{msg}");
        assert!(msg.contains("onnx/model.onnx"), "{msg}");
    }

    #[test]
    fn missing_model_dir_names_the_path() {
        let err = OnnxEmbedder::load(
            Path::new("/nonexistent/models/default"),
            Path::new("/nonexistent/libonnxruntime.so"),
            32,
            256,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Config(_)), "{msg}");
        assert!(msg.contains("/nonexistent/models/default"), "{msg}");
        assert!(msg.contains("does not exist"), "{msg}");
    }

    #[test]
    fn incomplete_model_dir_names_the_missing_file() {
        let dir = fake_model_dir();
        std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
        let err = OnnxEmbedder::load(dir.path(), Path::new("/x.so"), 32, 256)
            .unwrap_err()
            .to_string();
        assert!(err.contains("tokenizer.json"), "{err}");

        let dir = fake_model_dir();
        let err = OnnxEmbedder::load_with(
            dir.path(),
            Path::new("/x.so"),
            &OnnxOptions {
                onnx_file: Some("onnx/model_quantized.onnx".into()),
                ..OnnxOptions::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("onnx/model_quantized.onnx"), "{err}");
    }

    #[test]
    fn missing_runtime_and_non_library_name_the_path() {
        let dir = fake_model_dir();
        let err = OnnxEmbedder::load(dir.path(), Path::new("/nonexistent/libort.so"), 32, 256)
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Config(_)), "{msg}");
        assert!(msg.contains("/nonexistent/libort.so"), "{msg}");
        assert!(msg.contains("ORT_DYLIB_PATH"), "{msg}");

        let not_lib = dir.path().join("libonnxruntime.so");
        std::fs::write(&not_lib, "#!/bin/sh\necho hi\n").unwrap();
        let err = OnnxEmbedder::load(dir.path(), &not_lib, 32, 256)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a shared library"), "{err}");
        assert!(err.contains(&not_lib.display().to_string()), "{err}");
    }

    #[test]
    fn bad_options_name_the_setting() {
        let dir = fake_model_dir();
        let opts = |f: fn(&mut OnnxOptions)| {
            let mut o = OnnxOptions::default();
            f(&mut o);
            OnnxEmbedder::load_with(dir.path(), Path::new("/x.so"), &o)
                .unwrap_err()
                .to_string()
        };
        assert!(opts(|o| o.batch_size = 0).contains("batch_size"));
        assert!(opts(|o| o.max_length = 0).contains("max_length"));
        assert!(opts(|o| o.threads = Some(0)).contains("threads"));
    }

    #[test]
    fn a_model_runs_at_its_own_length_unless_its_vectors_predate_that() {
        // mpnet's config says 384: applied under a configured 512, and the id says so.
        assert_eq!(
            effective_length(512, Some(384), "all-mpnet-base-v2"),
            (384, ":len384".to_string())
        );
        // Nothing to apply: a longer or equal config, none at all, or a configured length
        // that is already shorter (the id as it always was).
        assert_eq!(effective_length(512, Some(512), "m"), (512, String::new()));
        assert_eq!(effective_length(256, Some(384), "m"), (256, String::new()));
        assert_eq!(effective_length(512, None, "m"), (512, String::new()));
        // MiniLM keeps the 512 its stored vectors were made with, under the same id.
        assert_eq!(
            effective_length(512, Some(256), "all-MiniLM-L6-v2"),
            (512, String::new())
        );

        let dir = fake_model_dir();
        let cfg = dir.path().join("sentence_bert_config.json");
        assert_eq!(read_max_seq_length(&cfg).unwrap(), None);
        std::fs::write(&cfg, r#"{"max_seq_length": 384, "do_lower_case": false}"#).unwrap();
        assert_eq!(read_max_seq_length(&cfg).unwrap(), Some(384));
        assert_eq!(
            ModelFolder::open(dir.path(), None).unwrap().max_seq_length,
            Some(384)
        );
        std::fs::write(&cfg, "{not json").unwrap();
        let e = read_max_seq_length(&cfg).unwrap_err().to_string();
        assert!(e.contains("sentence_bert_config.json"), "{e}");
    }

    #[test]
    fn pooling_config_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        assert_eq!(read_pooling(&p).unwrap(), Pooling::Mean, "absent: mean");
        std::fs::write(
            &p,
            r#"{"pooling_mode_cls_token":true,"pooling_mode_mean_tokens":false}"#,
        )
        .unwrap();
        assert_eq!(read_pooling(&p).unwrap(), Pooling::Cls);
        std::fs::write(&p, r#"{"pooling_mode_mean_tokens":true}"#).unwrap();
        assert_eq!(read_pooling(&p).unwrap(), Pooling::Mean);
        std::fs::write(&p, r#"{"pooling_mode_max_tokens":true}"#).unwrap();
        let err = read_pooling(&p).unwrap_err().to_string();
        assert!(err.contains("pooling_mode_max_tokens"), "{err}");
        std::fs::write(&p, "not json").unwrap();
        assert!(
            read_pooling(&p)
                .unwrap_err()
                .to_string()
                .contains("config.json")
        );
    }

    #[test]
    fn batches_respect_count_and_attention_budget() {
        // 40 short texts: by count only.
        let short = vec![30; 40];
        let b = plan_batches(&short, 32, 512, ATTENTION_BUDGET);
        assert_eq!(b, vec![0..32, 32..40]);
        // Long texts (capped at 512 tokens) in smaller batches: 2 x 512^2 fit the budget.
        let long = vec![5000; 5];
        let b = plan_batches(&long, 32, 512, ATTENTION_BUDGET);
        assert_eq!(b, vec![0..2, 2..4, 4..5]);
        // At 256 tokens, 9.
        let b = plan_batches(&[800; 20], 32, 256, ATTENTION_BUDGET);
        assert_eq!(b, vec![0..9, 9..18, 18..20]);
        // Sorted mixed lengths: the short ones share a batch, the long ones split off.
        let mut mixed = vec![30; 10];
        mixed.extend([3000, 3000]);
        let b = plan_batches(&mixed, 32, 384, ATTENTION_BUDGET);
        assert_eq!(b, vec![0..10, 10..12]);
        // A text over the budget on its own still gets a batch; nothing is empty.
        assert_eq!(plan_batches(&[10_000], 32, 512, 1), vec![0..1]);
        assert!(plan_batches(&[], 32, 512, 1).is_empty());
        // Every text lands in exactly one batch.
        let lens: Vec<usize> = (0..500).map(|i| i * 7).collect();
        let b = plan_batches(&lens, 32, 512, ATTENTION_BUDGET);
        assert_eq!(b.iter().map(|r| r.len()).sum::<usize>(), 500);
        assert!(b.windows(2).all(|w| w[0].end == w[1].start));
    }

    #[test]
    fn variant_and_fingerprint() {
        assert_eq!(variant_of(Path::new("onnx/model.onnx")), "fp32");
        assert_eq!(variant_of(Path::new("onnx/model_quantized.onnx")), "int8");
        assert_eq!(variant_of(Path::new("onnx/model_fp16.onnx")), "fp16");
        assert_eq!(variant_of(Path::new("custom.onnx")), "custom");

        let a = vec![1u8; 3 * 1024 * 1024];
        let mut b = a.clone();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        b[0] = 2;
        assert_ne!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&a[1..]));
        assert_eq!(fingerprint(b"small").len(), 8);
    }
}
