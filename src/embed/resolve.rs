//! [`resolve`]: from [`Settings`] and the data folder to an embedder (or none), applying the
//! discovery rules. Only reads the filesystem; the one network-facing embedder is built without
//! making a request. Also where installed model folders are looked for ([`model_roots`],
//! [`default_model`]), so the server, `aigentable models list` and GET /api/models agree.

use super::onnx::{DEFAULT_ONNX_FILE, INT8_ONNX_FILE};
use super::openai::{DEFAULT_BASE_URL, DEFAULT_MODEL};
use super::{
    Embedder, Error, OnnxEmbedder, OnnxOptions, OpenAiEmbedder, Provider, Resolved, Settings,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Applies the discovery rules and loads. Blocking (reading and optimising an ONNX graph takes
/// a second or two): call it from `spawn_blocking` when in async code.
///
/// - `none`: no embedder; keyword retrieval only.
/// - `openai`: [`OpenAiEmbedder`] at `base_url` (default OpenAI's) with `model` (default
///   `text-embedding-3-small`); no request is made here.
/// - `onnx`: the model folder `model_dir` (default: the one [`default_model`] finds, else
///   `<data>/models/default`) with the library `ort_dylib_path`, else one found beside the
///   executable or under `<data>/runtime/`.
/// - unset (auto): ONNX when a model folder and a runtime library are both configured or found;
///   otherwise OpenAI when `base_url` is set; otherwise none, with a description of what was
///   looked for.
///
/// Anything explicitly configured but missing or broken is an `Err` naming the path or setting
/// (never a panic). Auto mode with nothing found is `Ok` with no embedder.
pub fn resolve(settings: &Settings, data_dir: &Path) -> Result<Resolved, Error> {
    resolve_with(settings, data_dir, exe_dir().as_deref())
}

/// [`resolve`] with the executable's folder given, so tests control discovery.
fn resolve_with(
    settings: &Settings,
    data_dir: &Path,
    exe_dir: Option<&Path>,
) -> Result<Resolved, Error> {
    if settings.batch_size == 0 {
        return Err(Error::Config(
            "batch_size (EMBEDDINGS_BATCH_SIZE) must be at least 1".into(),
        ));
    }
    let runtime_dir = data_dir.join("runtime");
    // Only looked for when no folder is configured: a configured one is intent.
    let found = match &settings.model_dir {
        Some(_) => Found::default(),
        None => default_model(data_dir, exe_dir),
    };
    let default_model_dir = found
        .folder
        .as_ref()
        .map(|f| f.dir.clone())
        .unwrap_or_else(|| data_dir.join("models").join("default"));
    // The bundle's model runs its int8 graph unless a graph is configured (see default_graph).
    let settings = &Settings {
        onnx_file: settings
            .onnx_file
            .clone()
            .or_else(|| found.folder.as_ref().map(|f| f.graph.clone())),
        ..settings.clone()
    };
    match settings.provider {
        Some(Provider::None) => Ok(Resolved {
            embedder: None,
            model_dir: None,
            description: "none: keyword retrieval only (EMBEDDINGS_PROVIDER=none)".into(),
            source: None,
        }),
        Some(Provider::Openai) => openai(settings),
        Some(Provider::Onnx) => {
            let model_dir = settings.model_dir.clone().unwrap_or(default_model_dir);
            let ort = match &settings.ort_dylib_path {
                Some(p) => p.clone(),
                None => find_runtime(exe_dir, &runtime_dir).ok_or_else(|| {
                    Error::Config(format!(
                        "EMBEDDINGS_PROVIDER=onnx but no ONNX Runtime library was found: set \
                         ORT_DYLIB_PATH or put libonnxruntime.so beside the executable or under {}",
                        runtime_dir.display()
                    ))
                })?,
            };
            onnx(settings, &model_dir, &ort)
        }
        None => {
            // Paths set explicitly are intent: their problems are errors, not a quiet fallback.
            let explicit = settings.model_dir.is_some() || settings.ort_dylib_path.is_some();
            let model_dir = settings
                .model_dir
                .clone()
                .unwrap_or_else(|| default_model_dir.clone());
            let ort = settings
                .ort_dylib_path
                .clone()
                .or_else(|| find_runtime(exe_dir, &runtime_dir));
            let graph = model_dir.join(
                settings
                    .onnx_file
                    .as_deref()
                    .unwrap_or(Path::new(DEFAULT_ONNX_FILE)),
            );
            let model_found = graph.is_file();
            match ort {
                Some(ort) if explicit || model_found => onnx(settings, &model_dir, &ort),
                None if settings.model_dir.is_some() => Err(Error::Config(format!(
                    "EMBEDDINGS_MODEL_DIR is {} but no ONNX Runtime library was found: set \
                     ORT_DYLIB_PATH or put libonnxruntime.so beside the executable or under {}",
                    model_dir.display(),
                    runtime_dir.display()
                ))),
                _ if settings.base_url.is_some() => openai(settings),
                None if model_found => Ok(Resolved {
                    embedder: None,
                    model_dir: None,
                    description: format!(
                        "none: keyword retrieval only (found a model at {} but no ONNX Runtime \
                         library beside the executable{} or under {}; set ORT_DYLIB_PATH)",
                        model_dir.display(),
                        exe_dir
                            .map(|d| format!(" ({})", d.display()))
                            .unwrap_or_default(),
                        runtime_dir.display()
                    ),
                    source: None,
                }),
                _ => Ok(Resolved {
                    embedder: None,
                    model_dir: None,
                    description: format!(
                        "none: keyword retrieval only (no model found at {}{})",
                        model_dir.display(),
                        found.why_none.map(|w| format!("; {w}")).unwrap_or_default()
                    ),
                    source: None,
                }),
            }
        }
    }
}

fn onnx(settings: &Settings, model_dir: &Path, ort: &Path) -> Result<Resolved, Error> {
    let embedder = OnnxEmbedder::load_with(
        model_dir,
        ort,
        &OnnxOptions {
            batch_size: settings.batch_size,
            max_length: settings.max_length,
            onnx_file: settings.onnx_file.clone(),
            threads: settings.threads,
            sessions: settings.sessions,
            session_idle: (settings.session_idle_secs > 0)
                .then(|| std::time::Duration::from_secs(settings.session_idle_secs)),
            query_cache: settings.query_cache,
            ..OnnxOptions::default()
        },
    )?;
    let description = embedder.description();
    let graph = embedder.graph_path();
    let source = Settings {
        provider: Some(Provider::Onnx),
        model_dir: Some(model_dir.to_path_buf()),
        ort_dylib_path: Some(ort.to_path_buf()),
        // Relative to the folder when it is inside it (it always is), as configured.
        onnx_file: Some(
            graph
                .strip_prefix(std::fs::canonicalize(model_dir).unwrap_or_default())
                .unwrap_or(graph)
                .to_path_buf(),
        ),
        api_key: None,
        ..settings.clone()
    };
    Ok(Resolved {
        embedder: Some(Arc::new(embedder) as Arc<dyn Embedder>),
        model_dir: Some(model_dir.to_path_buf()),
        description,
        source: Some(source),
    })
}

fn openai(settings: &Settings) -> Result<Resolved, Error> {
    let base_url = settings.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL);
    let model = settings.model.as_deref().unwrap_or(DEFAULT_MODEL);
    let api_key = settings.api_key.as_deref().filter(|k| !k.trim().is_empty());
    if settings.base_url.is_none() && api_key.is_none() {
        return Err(Error::Config(
            "EMBEDDINGS_PROVIDER=openai with the default EMBEDDINGS_BASE_URL (api.openai.com) \
             needs EMBEDDINGS_API_KEY; for Ollama, LM Studio or vLLM set EMBEDDINGS_BASE_URL"
                .into(),
        ));
    }
    let embedder = OpenAiEmbedder::new(base_url, model, api_key, settings.dimensions)?
        .with_batch_size(settings.batch_size)
        .with_policy(settings.policy.clone())?;
    let description = embedder.description();
    Ok(Resolved {
        embedder: Some(Arc::new(embedder) as Arc<dyn Embedder>),
        model_dir: None,
        description,
        source: Some(Settings {
            provider: Some(Provider::Openai),
            api_key: None,
            ..settings.clone()
        }),
    })
}

/// Looks for the local model whose id is `model_id` (`onnx:<folder>:<variant>:...`) in the
/// model folders under `roots`: folders of that name, graphs of that variant, each loaded
/// with `base` (lengths, threads, runtime) and kept only when it is that very model. `skip`
/// is a graph not to try (the one already loaded under another id: its files changed).
/// `Err` says where it looked and what it found instead. Blocking (loads candidates).
pub fn find_by_id(
    model_id: &str,
    base: &Settings,
    data_dir: &Path,
    roots: &[PathBuf],
    skip: Option<&Path>,
) -> Result<Resolved, String> {
    let mut parts = model_id.split(':');
    let (Some("onnx"), Some(name), Some(variant)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("{model_id} is not a local model"));
    };
    let mut tried = Vec::new();
    for root in roots {
        for folder in model_folders(root) {
            let canonical = std::fs::canonicalize(&folder).unwrap_or_else(|_| folder.clone());
            if canonical.file_name().and_then(|n| n.to_str()) != Some(name) {
                continue;
            }
            for graph in graphs_in(&folder) {
                let path = canonical.join(&graph);
                if super::variant_of(&graph) != variant || Some(path.as_path()) == skip {
                    continue;
                }
                let settings = Settings {
                    provider: Some(Provider::Onnx),
                    model_dir: Some(folder.clone()),
                    onnx_file: Some(graph.clone()),
                    ..base.clone()
                };
                match resolve(&settings, data_dir) {
                    Ok(r) if r.embedder.as_ref().map(|e| e.model_id()) == Some(model_id) => {
                        return Ok(r);
                    }
                    Ok(r) => tried.push(format!(
                        "{} is {}",
                        path.display(),
                        r.embedder
                            .as_ref()
                            .map(|e| e.model_id())
                            .unwrap_or("no model")
                    )),
                    Err(e) => tried.push(format!("{}: {e}", path.display())),
                }
            }
        }
    }
    let looked: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
    Err(format!(
        "no model folder named {name} with a {variant} graph of that model in {}{}",
        looked.join(", "),
        if tried.is_empty() {
            String::new()
        } else {
            format!(" ({})", tried.join("; "))
        }
    ))
}

/// Where an installed model folder lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// Under `<data>/models/`: installed by `aigentable models pull|import` or by hand; a
    /// tenant may choose it by name (`modelFolder` in /api/settings/embeddings).
    Data,
    /// Under `models/` beside the executable: shipped in the release bundle.
    Bundle,
}

/// The folders that hold model folders, in the order they are searched: `<data>/models/`,
/// then `models/` beside the executable (the release bundle's).
pub fn model_roots(data_dir: &Path, exe_dir: Option<&Path>) -> Vec<(Location, PathBuf)> {
    let mut roots = vec![(Location::Data, data_dir.join("models"))];
    if let Some(exe) = exe_dir {
        roots.push((Location::Bundle, exe.join("models")));
    }
    roots
}

/// The folder of the running executable, where the release bundle keeps the runtime library
/// and its `models/`.
pub fn exe_dir() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
}

/// True when `dir` looks like a model folder: a `tokenizer.json` and at least one graph under
/// `onnx/`. Names starting with a dot are never models (unfinished pulls and imports).
pub fn is_model_folder(dir: &Path) -> bool {
    let hidden = dir
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    !hidden && dir.join("tokenizer.json").is_file() && !graphs_in(dir).is_empty()
}

/// The ONNX graphs of a model folder (`onnx/*.onnx`, relative to it), sorted.
pub fn graphs_in(dir: &Path) -> Vec<PathBuf> {
    let mut graphs: Vec<PathBuf> = std::fs::read_dir(dir.join("onnx"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().is_file())
                .filter_map(|e| {
                    let name = e.file_name().to_str()?.to_string();
                    name.ends_with(".onnx")
                        .then(|| Path::new("onnx").join(name))
                })
                .collect()
        })
        .unwrap_or_default();
    graphs.sort();
    graphs
}

/// The graph a folder runs when EMBEDDINGS_ONNX_FILE is unset. Under `<data>/models/`: the
/// fp32 `onnx/model.onnx` when present (what installs have always used, so upgrading changes
/// no model id), else the int8 `onnx/model_quantized.onnx`. In the release bundle: the int8
/// graph when present (a quarter of the memory, ~1.6x faster to encode, pooled cosine to fp32
/// 0.994-0.996), else fp32.
pub fn default_graph(dir: &Path, location: Location) -> PathBuf {
    let order = match location {
        Location::Data => [DEFAULT_ONNX_FILE, INT8_ONNX_FILE],
        Location::Bundle => [INT8_ONNX_FILE, DEFAULT_ONNX_FILE],
    };
    order
        .iter()
        .map(PathBuf::from)
        .find(|g| dir.join(g).is_file())
        .unwrap_or_else(|| PathBuf::from(order[0]))
}

/// A model folder [`default_model`] chose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundModel {
    pub dir: PathBuf,
    pub location: Location,
    /// The graph to run, relative to `dir` ([`default_graph`]).
    pub graph: PathBuf,
}

/// The outcome of [`default_model`]: a folder, or why none was chosen.
#[derive(Clone, Debug, Default)]
pub struct Found {
    pub folder: Option<FoundModel>,
    /// Set when model folders exist but none could be chosen (several, none named `default`).
    pub why_none: Option<String>,
}

/// The server's model folder when EMBEDDINGS_MODEL_DIR is unset. In `<data>/models/`, then in
/// `models/` beside the executable: the folder named `default`, else the only model folder
/// there. Several folders and no `default` choose nothing (adding a model must never switch
/// the model silently); the answer says so.
pub fn default_model(data_dir: &Path, exe_dir: Option<&Path>) -> Found {
    let mut why_none = None;
    for (location, root) in model_roots(data_dir, exe_dir) {
        let named = root.join("default");
        let dir = if named.join("tokenizer.json").is_file() {
            named
        } else {
            let folders = model_folders(&root);
            match folders.as_slice() {
                [] => continue,
                [only] => only.clone(),
                several => {
                    why_none.get_or_insert_with(|| {
                        format!(
                            "{} holds {} models ({}) and none is named `default`: set \
                             EMBEDDINGS_MODEL_DIR",
                            root.display(),
                            several.len(),
                            several
                                .iter()
                                .filter_map(|d| d.file_name())
                                .map(|n| n.to_string_lossy())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    });
                    continue;
                }
            }
        };
        let graph = default_graph(&dir, location);
        return Found {
            folder: Some(FoundModel {
                dir,
                location,
                graph,
            }),
            why_none: None,
        };
    }
    Found {
        folder: None,
        why_none,
    }
}

/// The model folders directly under `root`, sorted by name.
pub fn model_folders(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| is_model_folder(p))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// An ONNX Runtime library beside the executable, else under `<data>/runtime/` or one folder
/// below it (an unpacked release keeps the version in its folder name). The highest version
/// wins, so dropping in a newer release needs no config change.
pub fn find_runtime(exe_dir: Option<&Path>, runtime_dir: &Path) -> Option<PathBuf> {
    if let Some(found) = exe_dir.and_then(|d| best_library_in(&[d.to_path_buf()])) {
        return Some(found);
    }
    let mut dirs = vec![runtime_dir.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(runtime_dir) {
        dirs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    best_library_in(&dirs)
}

fn best_library_in(dirs: &[PathBuf]) -> Option<PathBuf> {
    dirs.iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|entries| entries.flatten())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let version = library_version(&name)?;
            e.path().is_file().then(|| (version, e.path()))
        })
        .max()
        .map(|(_, path)| path)
}

/// The version in an ONNX Runtime library file name (`libonnxruntime.so.1.32.0` -> [1, 32, 0],
/// `libonnxruntime.so` -> []), or None for other files such as
/// `libonnxruntime_providers_shared.so`.
fn library_version(name: &str) -> Option<Vec<u32>> {
    let rest = name.strip_prefix(&format!("{}onnxruntime", std::env::consts::DLL_PREFIX))?;
    let suffix = std::env::consts::DLL_SUFFIX;
    // Linux puts the version after the suffix, macOS before it.
    let version = rest
        .strip_prefix(suffix)
        .or_else(|| rest.strip_suffix(suffix))?;
    if version.is_empty() {
        return Some(Vec::new());
    }
    version
        .strip_prefix('.')?
        .split('.')
        .map(|p| p.parse::<u32>().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(provider: Option<Provider>) -> Settings {
        Settings {
            provider,
            ..Settings::default()
        }
    }

    fn model_layout(dir: &Path) {
        std::fs::create_dir_all(dir.join("onnx")).unwrap();
        std::fs::write(dir.join("tokenizer.json"), "{}").unwrap();
        std::fs::write(dir.join("tokenizer_config.json"), "{}").unwrap();
        std::fs::write(dir.join("onnx/model.onnx"), "graph").unwrap();
    }

    #[test]
    fn none_means_keyword_only() {
        let data = tempfile::tempdir().unwrap();
        let r = resolve_with(&settings(Some(Provider::None)), data.path(), None).unwrap();
        assert!(r.embedder.is_none());
        assert!(r.description.starts_with("none: keyword retrieval only"));
    }

    #[test]
    fn auto_with_nothing_found_is_keyword_only_and_says_where_it_looked() {
        let data = tempfile::tempdir().unwrap();
        let r = resolve_with(&Settings::default(), data.path(), None).unwrap();
        assert!(r.embedder.is_none());
        let expected = data.path().join("models").join("default");
        assert!(
            r.description.contains(&expected.display().to_string()),
            "{}",
            r.description
        );
    }

    #[test]
    fn auto_with_a_model_but_no_runtime_says_so() {
        let data = tempfile::tempdir().unwrap();
        model_layout(&data.path().join("models/default"));
        let exe = tempfile::tempdir().unwrap();
        let r = resolve_with(&Settings::default(), data.path(), Some(exe.path())).unwrap();
        assert!(r.embedder.is_none());
        assert!(
            r.description.contains("no ONNX Runtime library"),
            "{}",
            r.description
        );
        assert!(r.description.contains("runtime"), "{}", r.description);
    }

    #[test]
    fn auto_with_both_found_loads_onnx_and_reports_its_errors() {
        // A runtime "found" under <data>/runtime/<release>/ is used; this one is fake, so the
        // load fails, and because files were found that is an error, not a silent fallback.
        let data = tempfile::tempdir().unwrap();
        model_layout(&data.path().join("models/default"));
        let rt = data.path().join("runtime/onnxruntime-1.32.0");
        std::fs::create_dir_all(&rt).unwrap();
        std::fs::write(rt.join("libonnxruntime.so.1.32.0"), "fake").unwrap();
        let err = resolve_with(&Settings::default(), data.path(), None).unwrap_err();
        assert!(
            err.to_string().contains("libonnxruntime.so.1.32.0"),
            "{err}"
        );
    }

    #[test]
    fn explicit_onnx_without_runtime_or_model_is_an_error() {
        let data = tempfile::tempdir().unwrap();
        let err = resolve_with(&settings(Some(Provider::Onnx)), data.path(), None).unwrap_err();
        assert!(err.to_string().contains("ORT_DYLIB_PATH"), "{err}");

        let s = Settings {
            provider: Some(Provider::Onnx),
            ort_dylib_path: Some("/nonexistent/libonnxruntime.so".into()),
            ..Settings::default()
        };
        let err = resolve_with(&s, data.path(), None).unwrap_err().to_string();
        assert!(
            err.contains("models/default") && err.contains("does not exist"),
            "{err}"
        );

        // In auto mode too: a configured model folder is intent.
        let s = Settings {
            model_dir: Some(data.path().join("elsewhere")),
            ..Settings::default()
        };
        let err = resolve_with(&s, data.path(), None).unwrap_err().to_string();
        assert!(err.contains("elsewhere"), "{err}");
    }

    #[test]
    fn openai_is_built_without_a_request() {
        let data = tempfile::tempdir().unwrap();
        let s = Settings {
            provider: Some(Provider::Openai),
            base_url: Some("http://127.0.0.1:9/v1".into()),
            model: Some("nomic-embed-text".into()),
            ..Settings::default()
        };
        let r = resolve_with(&s, data.path(), None).unwrap();
        let e = r.embedder.unwrap();
        assert_eq!(e.model_id(), "openai:nomic-embed-text");
        assert_eq!(e.dimensions(), 0);
        assert!(
            r.description.contains("http://127.0.0.1:9/v1/embeddings"),
            "{}",
            r.description
        );

        // Auto mode with only a base URL picks it too.
        let s = Settings {
            provider: None,
            ..s
        };
        assert!(
            resolve_with(&s, data.path(), None)
                .unwrap()
                .embedder
                .is_some()
        );

        // OpenAI itself without a key is a configuration error, not a 401 at the first job.
        let err = resolve_with(&settings(Some(Provider::Openai)), data.path(), None).unwrap_err();
        assert!(err.to_string().contains("EMBEDDINGS_API_KEY"), "{err}");
        let s = Settings {
            provider: Some(Provider::Openai),
            api_key: Some("sk-x".into()),
            dimensions: Some(1536),
            ..Settings::default()
        };
        let r = resolve_with(&s, data.path(), None).unwrap();
        assert_eq!(
            r.embedder.unwrap().model_id(),
            "openai:text-embedding-3-small"
        );
        assert!(r.description.contains("1536 dims"), "{}", r.description);
    }

    #[test]
    fn runtime_discovery_prefers_the_executable_folder_then_the_highest_version() {
        let exe = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let rt = data.path().join("runtime");
        std::fs::create_dir_all(rt.join("onnxruntime-1.32.0")).unwrap();
        std::fs::write(rt.join("libonnxruntime.so.1.24.1"), "x").unwrap();
        std::fs::write(rt.join("onnxruntime-1.32.0/libonnxruntime.so.1.32.0"), "x").unwrap();
        std::fs::write(rt.join("libonnxruntime_providers_shared.so"), "x").unwrap();
        assert_eq!(
            find_runtime(Some(exe.path()), &rt),
            Some(rt.join("onnxruntime-1.32.0/libonnxruntime.so.1.32.0"))
        );
        std::fs::write(exe.path().join("libonnxruntime.so"), "x").unwrap();
        assert_eq!(
            find_runtime(Some(exe.path()), &rt),
            Some(exe.path().join("libonnxruntime.so"))
        );
        assert_eq!(find_runtime(None, &data.path().join("nothing")), None);
    }

    #[test]
    fn discovery_finds_the_only_model_then_the_bundle_and_never_guesses_among_several() {
        let data = tempfile::tempdir().unwrap();
        let exe = tempfile::tempdir().unwrap();
        let both = |dir: &Path| {
            model_layout(dir);
            std::fs::write(dir.join("onnx/model_quantized.onnx"), "int8").unwrap();
        };
        // Nothing anywhere.
        let f = default_model(data.path(), Some(exe.path()));
        assert!(f.folder.is_none() && f.why_none.is_none());

        // The bundle's model beside the executable runs its int8 graph.
        both(&exe.path().join("models/all-MiniLM-L6-v2"));
        let f = default_model(data.path(), Some(exe.path())).folder.unwrap();
        assert_eq!(f.location, Location::Bundle);
        assert_eq!(f.dir, exe.path().join("models/all-MiniLM-L6-v2"));
        assert_eq!(f.graph, PathBuf::from("onnx/model_quantized.onnx"));

        // A model installed under <data>/models/ wins, with its fp32 graph.
        both(&data.path().join("models/pulled"));
        let f = default_model(data.path(), Some(exe.path())).folder.unwrap();
        assert_eq!(f.location, Location::Data);
        assert_eq!(f.graph, PathBuf::from("onnx/model.onnx"));

        // Unfinished pulls (hidden) do not count; a second real one makes the choice ambiguous,
        // so the bundle's model is used, and with no bundle nothing is, saying why.
        both(&data.path().join("models/.pull-other"));
        assert_eq!(
            default_model(data.path(), Some(exe.path()))
                .folder
                .unwrap()
                .location,
            Location::Data
        );
        both(&data.path().join("models/second"));
        let f = default_model(data.path(), Some(exe.path()));
        assert_eq!(f.folder.unwrap().location, Location::Bundle);
        let f = default_model(data.path(), None);
        assert!(f.folder.is_none());
        let why = f.why_none.unwrap();
        assert!(
            why.contains("pulled, second") && why.contains("default"),
            "{why}"
        );
        // ...and resolve says so instead of picking one.
        let r = resolve_with(&Settings::default(), data.path(), None).unwrap();
        assert!(r.embedder.is_none());
        assert!(
            r.description.contains("pulled, second"),
            "{}",
            r.description
        );

        // `default` settles it.
        both(&data.path().join("models/default"));
        let f = default_model(data.path(), None).folder.unwrap();
        assert_eq!(f.dir, data.path().join("models/default"));
    }

    #[cfg(unix)]
    #[test]
    fn the_bundle_layout_loads_with_no_settings() {
        let Some((model, ort)) =
            crate::test_model::model_and_runtime("the_bundle_layout_loads_with_no_settings")
        else {
            return;
        };
        // exe/libonnxruntime.so.* and exe/models/<model>/ (int8 graph only, to stay quick).
        let exe = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let m = exe.path().join("models/all-MiniLM-L6-v2");
        std::fs::create_dir_all(m.join("onnx")).unwrap();
        for f in ["tokenizer.json", "tokenizer_config.json", "config.json"] {
            std::fs::copy(model.join(f), m.join(f)).unwrap();
        }
        std::fs::copy(
            model.join("onnx/model_quantized.onnx"),
            m.join("onnx/model_quantized.onnx"),
        )
        .unwrap();
        std::os::unix::fs::symlink(&ort, exe.path().join(ort.file_name().unwrap())).unwrap();
        let r = resolve_with(&Settings::default(), data.path(), Some(exe.path())).unwrap();
        let e = r.embedder.expect("the bundle's model is found");
        assert!(
            e.model_id().starts_with("onnx:all-MiniLM-L6-v2:int8:"),
            "{}",
            e.model_id()
        );
        assert_eq!(e.dimensions(), 384);
        assert_eq!(r.model_dir.as_deref(), Some(m.as_path()));
    }

    #[cfg(unix)]
    #[test]
    fn a_model_is_found_again_by_its_id_and_only_by_it() {
        let Some((model, ort)) =
            crate::test_model::model_and_runtime("a_model_is_found_again_by_its_id_and_only_by_it")
        else {
            return;
        };
        let data = tempfile::tempdir().unwrap();
        let roots = [data.path().join("models")];
        let m = roots[0].join("mini");
        std::fs::create_dir_all(m.join("onnx")).unwrap();
        for f in ["tokenizer.json", "tokenizer_config.json", "config.json"] {
            std::os::unix::fs::symlink(model.join(f), m.join(f)).unwrap();
        }
        std::os::unix::fs::symlink(
            model.join("onnx/model_quantized.onnx"),
            m.join("onnx/model_quantized.onnx"),
        )
        .unwrap();
        let base = Settings {
            ort_dylib_path: Some(ort),
            ..Settings::default()
        };
        let loaded = resolve(
            &Settings {
                model_dir: Some(m.clone()),
                ..base.clone()
            },
            data.path(),
        )
        .unwrap();
        let id = loaded.embedder.unwrap().model_id().to_string();
        assert!(id.starts_with("onnx:mini:int8:"), "{id}");
        // Its settings load it again without discovery.
        let source = loaded.source.unwrap();
        assert_eq!(
            source.onnx_file.as_deref(),
            Some(Path::new("onnx/model_quantized.onnx"))
        );
        assert_eq!(
            resolve(&source, data.path())
                .unwrap()
                .embedder
                .unwrap()
                .model_id(),
            id
        );

        let found = find_by_id(&id, &base, data.path(), &roots, None).unwrap();
        assert_eq!(found.embedder.unwrap().model_id(), id);
        // The graph to skip (the one loaded under another id) is not tried.
        let graph = std::fs::canonicalize(&m)
            .unwrap()
            .join("onnx/model_quantized.onnx");
        let err = find_by_id(&id, &base, data.path(), &roots, Some(&graph))
            .err()
            .unwrap();
        assert!(err.contains("no model folder named mini"), "{err}");
        // Same name and variant, other bytes: tried, named, refused.
        let other = id.replace(":int8:", ":int8:0").to_string();
        let err = find_by_id(&other, &base, data.path(), &roots, None)
            .err()
            .unwrap();
        assert!(err.contains(&id), "{err}");
        assert!(
            find_by_id(
                "openai:text-embedding-3-small",
                &base,
                data.path(),
                &roots,
                None
            )
            .is_err()
        );
    }

    #[test]
    fn library_names() {
        assert_eq!(library_version("libonnxruntime.so"), Some(vec![]));
        assert_eq!(
            library_version("libonnxruntime.so.1.32.0"),
            Some(vec![1, 32, 0])
        );
        assert_eq!(library_version("libonnxruntime_providers_shared.so"), None);
        assert_eq!(library_version("libonnxruntime.so.bak"), None);
        assert_eq!(library_version("libfoo.so"), None);
    }

    #[test]
    fn zero_batch_size_is_a_config_error() {
        let data = tempfile::tempdir().unwrap();
        let s = Settings {
            batch_size: 0,
            ..Settings::default()
        };
        assert!(
            resolve_with(&s, data.path(), None)
                .unwrap_err()
                .to_string()
                .contains("batch_size")
        );
    }
}
