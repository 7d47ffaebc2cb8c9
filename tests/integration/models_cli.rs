//! `aigentable models pull|import|list` against a local hub (a test HTTP server serving the
//! shared model folder in the Hugging Face layout: the tree listing with sha256s, and the
//! files with Range support), and GET /api/models.

use crate::common::{start, start_in};
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::Digest as _;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

const REPO: &str = "sentence-transformers/all-MiniLM-L6-v2";
const INT8: &str = "onnx/model_quantized.onnx";

/// The hub's view of a model folder: every file with its size and checksum, as
/// `/api/models/{repo}/tree/main?recursive=true` gives it (graphs as LFS files).
fn listing(model: &Path) -> &'static Value {
    static LISTING: OnceLock<Value> = OnceLock::new();
    LISTING.get_or_init(|| {
        let mut entries = Vec::new();
        let mut dirs = vec![model.to_path_buf()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).expect("model folder").flatten() {
                let p = e.path();
                let rel = p
                    .strip_prefix(model)
                    .expect("test setup")
                    .to_string_lossy()
                    .into_owned();
                if p.is_dir() {
                    entries.push(json!({"type": "directory", "path": rel, "oid": "0"}));
                    dirs.push(p);
                    continue;
                }
                let bytes = std::fs::read(&p).expect("model file");
                let mut blob = <sha1::Sha1 as sha1::Digest>::new();
                sha1::Digest::update(&mut blob, format!("blob {}\0", bytes.len()).as_bytes());
                sha1::Digest::update(&mut blob, &bytes);
                let mut entry = json!({
                    "type": "file", "path": rel, "size": bytes.len(),
                    "oid": hex::encode(sha1::Digest::finalize(blob)),
                });
                if rel.ends_with(".onnx") {
                    entry["size"] = json!(134);
                    entry["lfs"] = json!({
                        "oid": hex::encode(sha2::Sha256::digest(&bytes)),
                        "size": bytes.len(),
                        "pointerSize": 134,
                    });
                }
                entries.push(entry);
            }
        }
        Value::Array(entries)
    })
}

/// A local hub. Edges we do not own (the hub) are the only thing faked; what it serves are
/// the real model files.
#[derive(Clone)]
struct Hub {
    model: PathBuf,
    /// The first full download of this file stops halfway (the connection drops).
    cut_once: Arc<Mutex<Option<String>>>,
    /// These files are served with one byte changed.
    corrupt: Arc<Mutex<HashSet<String>>>,
    /// (file, first byte) of every Range request.
    ranges: Arc<Mutex<Vec<(String, u64)>>>,
    /// Body bytes sent per file.
    sent: Arc<Mutex<Vec<(String, u64)>>>,
    listed: Arc<AtomicBool>,
}

impl Hub {
    async fn start(model: &Path) -> (String, Hub) {
        listing(model);
        let hub = Hub {
            model: model.to_path_buf(),
            cut_once: Arc::default(),
            corrupt: Arc::default(),
            ranges: Arc::default(),
            sent: Arc::default(),
            listed: Arc::default(),
        };
        let app = axum::Router::new()
            .route(
                "/api/models/{org}/{name}/tree/{rev}",
                axum::routing::get(tree),
            )
            .route(
                "/{org}/{name}/resolve/{rev}/{*path}",
                axum::routing::get(file),
            )
            .with_state(hub.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("test setup");
        let url = format!("http://{}", listener.local_addr().expect("test setup"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (url, hub)
    }

    fn sent_for(&self, path: &str) -> u64 {
        let sent = self.sent.lock().expect("lock");
        sent.iter().filter(|(p, _)| p == path).map(|(_, n)| n).sum()
    }
}

async fn tree(
    State(hub): State<Hub>,
    UrlPath((org, name, rev)): UrlPath<(String, String, String)>,
) -> Response {
    if format!("{org}/{name}") != REPO || rev != "main" {
        return (StatusCode::NOT_FOUND, "Repository not found").into_response();
    }
    hub.listed.store(true, Ordering::SeqCst);
    axum::Json(listing(&hub.model).clone()).into_response()
}

async fn file(
    State(hub): State<Hub>,
    UrlPath((org, name, _rev, path)): UrlPath<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if format!("{org}/{name}") != REPO || path.contains("..") {
        return StatusCode::NOT_FOUND.into_response();
    }
    let Ok(mut bytes) = std::fs::read(hub.model.join(&path)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if hub.corrupt.lock().expect("lock").contains(&path) {
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
    }
    let total = bytes.len() as u64;
    let start = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse::<u64>().ok());
    let (status, from) = match start {
        Some(s) if s < total => {
            hub.ranges.lock().expect("lock").push((path.clone(), s));
            (StatusCode::PARTIAL_CONTENT, s)
        }
        Some(_) => return StatusCode::RANGE_NOT_SATISFIABLE.into_response(),
        None => (StatusCode::OK, 0),
    };
    let body: Vec<u8> = bytes[from as usize..].to_vec();
    let cut = {
        let mut c = hub.cut_once.lock().expect("lock");
        if start.is_none() && c.as_deref() == Some(path.as_str()) {
            *c = None;
            true
        } else {
            false
        }
    };
    let len = body.len();
    let mut resp_headers = HeaderMap::new();
    resp_headers.insert(header::CONTENT_LENGTH, len.into());
    resp_headers.insert(header::ACCEPT_RANGES, "bytes".parse().expect("test setup"));
    if status == StatusCode::PARTIAL_CONTENT {
        resp_headers.insert(
            header::CONTENT_RANGE,
            format!("bytes {from}-{}/{total}", total - 1)
                .parse()
                .expect("test setup"),
        );
    }
    let send_len = if cut { len / 2 } else { len };
    hub.sent
        .lock()
        .expect("test setup")
        .push((path.clone(), send_len as u64));
    let first = bytes::Bytes::from(body).slice(..send_len);
    // A cut transfer promises the whole length, sends half, then fails: the connection drops.
    let tail: Vec<Result<bytes::Bytes, std::io::Error>> = if cut {
        vec![Err(std::io::Error::other("connection dropped"))]
    } else {
        vec![]
    };
    let stream = futures_util::stream::iter(std::iter::once(Ok(first)).chain(tail));
    (status, resp_headers, axum::body::Body::from_stream(stream)).into_response()
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn cli(args: &[&str], data: &Path, hub: &str, ort: &Path) -> Out {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_aigentable"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env_remove("EMBEDDINGS_MODEL_DIR")
        .env_remove("EMBEDDINGS_PROVIDER")
        .env_remove("HF_TOKEN")
        .env("MODELS_HUB_URL", hub)
        .env("ORT_DYLIB_PATH", ort)
        .output()
        .await
        .expect("runs");
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Nothing but finished model folders under `<data>/models/` (no staging, no `.part`).
fn installed_names(data: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data.join("models"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn same_file(a: &Path, b: &Path) -> bool {
    std::fs::read(a).expect("a") == std::fs::read(b).expect("b")
}

#[tokio::test]
async fn pull_installs_a_verified_model_that_list_shows_as_the_default() {
    let Some((model, ort)) = crate::test_model::model_and_runtime(
        "models_cli::pull_installs_a_verified_model_that_list_shows_as_the_default",
    ) else {
        return;
    };
    let (url, hub) = Hub::start(&model).await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");

    let out = cli(&["models", "pull", REPO], &data, &url, &ort).await;
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    assert!(hub.listed.load(Ordering::SeqCst));
    assert!(
        out.stdout.contains("installed") && out.stdout.contains("384 dims"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("onnx/model.onnx: verified"),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout.contains("server uses it as its default"),
        "{}",
        out.stdout
    );
    let dest = data.join("models/all-MiniLM-L6-v2");
    for f in [
        "onnx/model.onnx",
        INT8,
        "tokenizer.json",
        "tokenizer_config.json",
        "config.json",
        "special_tokens_map.json",
        "1_Pooling/config.json",
        "LICENSE",
        "NOTICE",
        "PROVENANCE.md",
    ] {
        assert!(
            same_file(&dest.join(f), &model.join(f)),
            "{f} differs or is missing"
        );
    }
    assert_eq!(installed_names(&data), vec!["all-MiniLM-L6-v2"]);

    let out = cli(&["models", "list"], &data, &url, &ort).await;
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout.contains("all-MiniLM-L6-v2  384 dims")
            && out.stdout.contains("fp32 86.1 MiB (used)")
            && out.stdout.contains("int8 22.3 MiB")
            && out.stdout.contains("[server default]"),
        "{}",
        out.stdout
    );

    // A second pull of the same name refuses to overwrite; a repository the hub lacks is named.
    let out = cli(
        &["models", "pull", REPO, "--graph", "int8"],
        &data,
        &url,
        &ort,
    )
    .await;
    assert!(
        !out.ok && out.stderr.contains("already installed"),
        "{}",
        out.stderr
    );
    let out = cli(&["models", "pull", "nobody/nothing"], &data, &url, &ort).await;
    assert!(!out.ok && out.stderr.contains("HTTP 404"), "{}", out.stderr);
}

#[tokio::test]
async fn an_interrupted_pull_resumes_where_it_stopped() {
    let Some((model, ort)) = crate::test_model::model_and_runtime(
        "models_cli::an_interrupted_pull_resumes_where_it_stopped",
    ) else {
        return;
    };
    let (url, hub) = Hub::start(&model).await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let size = std::fs::metadata(model.join(INT8)).unwrap().len();

    // The connection drops halfway through the graph: the same run continues with a Range
    // request from where it stopped instead of starting over.
    *hub.cut_once.lock().unwrap() = Some(INT8.into());
    let out = cli(
        &["models", "pull", REPO, "--graph", "int8"],
        &data,
        &url,
        &ort,
    )
    .await;
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("interrupted at"), "{}", out.stderr);
    // The hub cut the connection after writing half the file; what the client had read by
    // then (bytes still in flight die with the connection) is where it resumes: after the
    // start, at most half-way, and only that gap is sent twice.
    let ranges = hub.ranges.lock().unwrap().clone();
    let resumed = ranges
        .iter()
        .find(|(p, _)| p == INT8)
        .map(|(_, from)| *from)
        .unwrap_or_else(|| panic!("no Range request for the graph: {ranges:?}"));
    assert!(resumed > 0 && resumed <= size / 2, "{ranges:?}");
    assert_eq!(
        hub.sent_for(INT8),
        size + (size / 2 - resumed),
        "only the bytes lost with the connection are sent again"
    );
    assert!(same_file(
        &data.join("models/all-MiniLM-L6-v2").join(INT8),
        &model.join(INT8)
    ));

    // A run that died (its .part left behind) is continued by the next run.
    let staging = data.join("models/.pull-second");
    std::fs::create_dir_all(staging.join("onnx")).unwrap();
    let bytes = std::fs::read(model.join(INT8)).unwrap();
    let had = bytes.len() / 3;
    std::fs::write(
        staging.join("onnx/model_quantized.onnx.part"),
        &bytes[..had],
    )
    .unwrap();
    let out = cli(
        &[
            "models", "pull", REPO, "--graph", "int8", "--name", "second",
        ],
        &data,
        &url,
        &ort,
    )
    .await;
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("resuming at"), "{}", out.stderr);
    assert!(
        hub.ranges
            .lock()
            .unwrap()
            .iter()
            .any(|(p, from)| p == INT8 && *from == had as u64)
    );
    assert!(same_file(
        &data.join("models/second").join(INT8),
        &model.join(INT8)
    ));
    assert_eq!(installed_names(&data), vec!["all-MiniLM-L6-v2", "second"]);
}

#[tokio::test]
async fn a_corrupted_download_fails_its_checksum_and_installs_nothing() {
    let Some((model, ort)) = crate::test_model::model_and_runtime(
        "models_cli::a_corrupted_download_fails_its_checksum_and_installs_nothing",
    ) else {
        return;
    };
    let (url, hub) = Hub::start(&model).await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    hub.corrupt.lock().unwrap().insert(INT8.into());
    let out = cli(
        &["models", "pull", REPO, "--graph", "int8"],
        &data,
        &url,
        &ort,
    )
    .await;
    assert!(!out.ok);
    assert!(
        out.stderr.contains(INT8) && out.stderr.contains("sha256 mismatch"),
        "{}",
        out.stderr
    );
    assert!(!data.join("models/all-MiniLM-L6-v2").exists());
    assert!(
        !data
            .join("models/.pull-all-MiniLM-L6-v2")
            .join(format!("{INT8}.part"))
            .exists()
    );

    // The hub serves the right bytes again: the next run gets a good copy.
    hub.corrupt.lock().unwrap().clear();
    let out = cli(
        &["models", "pull", REPO, "--graph", "int8"],
        &data,
        &url,
        &ort,
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    // Downloaded afresh (the bad copy was deleted), not resumed onto bad bytes.
    let size = std::fs::metadata(model.join(INT8)).unwrap().len();
    assert_eq!(hub.sent_for(INT8), 2 * size);
    assert!(hub.ranges.lock().unwrap().is_empty());
    assert!(same_file(
        &data.join("models/all-MiniLM-L6-v2").join(INT8),
        &model.join(INT8)
    ));
    assert_eq!(installed_names(&data), vec!["all-MiniLM-L6-v2"]);

    // A small file is checked too (against its git blob id).
    hub.corrupt
        .lock()
        .unwrap()
        .insert("tokenizer_config.json".into());
    let out = cli(
        &["models", "pull", REPO, "--graph", "int8", "--name", "other"],
        &data,
        &url,
        &ort,
    )
    .await;
    assert!(
        !out.ok
            && out
                .stderr
                .contains("tokenizer_config.json: git sha1 mismatch"),
        "{}",
        out.stderr
    );
    assert_eq!(
        installed_names(&data)
            .iter()
            .filter(|n| !n.starts_with('.'))
            .count(),
        1
    );
}

/// A minimal ONNX graph (protobuf written by hand): Identity over a float input named
/// `pixel_values`, i.e. a valid graph that is not a text-embedding model.
fn image_graph() -> Vec<u8> {
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn bytes(field: u64, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        varint(field << 3 | 2, &mut out);
        varint(data.len() as u64, &mut out);
        out.extend_from_slice(data);
        out
    }
    fn int(field: u64, v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        varint(field << 3, &mut out);
        varint(v, &mut out);
        out
    }
    let dim = |n| bytes(1, &int(1, n));
    let shape = [dim(1), dim(4)].concat();
    let tensor_type = [int(1, 1), bytes(2, &shape)].concat(); // float, [1, 4]
    let type_proto = bytes(1, &tensor_type);
    let value = |name: &str| [bytes(1, name.as_bytes()), bytes(2, &type_proto)].concat();
    let node = [
        bytes(1, b"pixel_values"),
        bytes(2, b"out"),
        bytes(4, b"Identity"),
    ]
    .concat();
    let graph = [
        bytes(1, &node),
        bytes(2, b"g"),
        bytes(11, &value("pixel_values")),
        bytes(12, &value("out")),
    ]
    .concat();
    [int(1, 8), bytes(7, &graph), bytes(8, &int(2, 17))].concat()
}

fn model_copy(model: &Path, dir: &Path, graph: Option<&[u8]>) {
    std::fs::create_dir_all(dir.join("onnx")).expect("test setup");
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "config.json",
        "special_tokens_map.json",
        "LICENSE",
    ] {
        std::fs::copy(model.join(f), dir.join(f)).expect("test setup");
    }
    match graph {
        Some(g) => std::fs::write(dir.join("onnx/model.onnx"), g).expect("test setup"),
        None => {
            std::fs::copy(model.join(INT8), dir.join(INT8)).expect("test setup");
        }
    }
}

#[tokio::test]
async fn import_validates_a_folder_before_it_is_used() {
    let Some((model, ort)) = crate::test_model::model_and_runtime(
        "models_cli::import_validates_a_folder_before_it_is_used",
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let usb = tmp.path().join("usb");
    let none = "http://127.0.0.1:9";

    // A good folder: copied, validated, installed under its own name.
    model_copy(&model, &usb.join("minilm-int8"), None);
    let out = cli(&["models", "import"], &data, none, &ort).await;
    assert!(!out.ok, "import needs a folder");
    let good = usb.join("minilm-int8");
    let out = cli(
        &["models", "import", good.to_str().unwrap()],
        &data,
        none,
        &ort,
    )
    .await;
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("384 dims"), "{}", out.stdout);
    assert!(same_file(
        &data.join("models/minilm-int8").join(INT8),
        &model.join(INT8)
    ));

    // No tokenizer.
    let broken = usb.join("no-tokenizer");
    model_copy(&model, &broken, None);
    std::fs::remove_file(broken.join("tokenizer.json")).unwrap();
    // A graph that is a valid ONNX graph, but not a text model.
    let image = usb.join("image-model");
    model_copy(&model, &image, Some(&image_graph()));
    // A file that is not ONNX at all.
    let junk = usb.join("junk-graph");
    model_copy(&model, &junk, Some(b"this is not a graph"));
    // The right graph from a model of another width than config.json declares.
    let wide = usb.join("wrong-width");
    model_copy(&model, &wide, None);
    std::fs::write(wide.join("config.json"), r#"{"hidden_size": 768}"#).unwrap();

    for (dir, expected) in [
        (&broken, "has no tokenizer.json".to_string()),
        (&image, "takes the inputs [pixel_values]".to_string()),
        (&junk, "not a loadable ONNX graph".to_string()),
        (
            &wide,
            "gives 384-dimensional vectors but config.json declares hidden_size 768".to_string(),
        ),
    ] {
        let out = cli(
            &["models", "import", dir.to_str().unwrap()],
            &data,
            none,
            &ort,
        )
        .await;
        assert!(!out.ok, "{} was accepted", dir.display());
        assert!(
            out.stderr.contains(&expected),
            "{}: {}",
            dir.display(),
            out.stderr
        );
    }
    // Nothing half-copied: only the good model, no staging folders.
    assert_eq!(installed_names(&data), vec!["minilm-int8"]);
}

#[tokio::test]
async fn the_api_lists_installed_models_for_admins() {
    // Without a model: nothing installed, keyword-only default.
    let s = start().await;
    let a = s.register("a@x.test", "A").await;
    let r = s.get("/api/models", &a.token).await;
    r.expect(200);
    assert_eq!(r.body["models"], json!([]), "{}", r.text);
    assert_eq!(r.body["serverDefault"]["provider"], "none");
    let user = s
        .invite_and_accept(&a, &a.tenant_id, "u@x.test", "TENANT_USER")
        .await;
    s.get("/api/models", &user.token)
        .await
        .expect_err(403, "forbidden");
    s.get("/api/models", "not-a-token").await.expect(401);
    let dir = s.stop().await;

    let Some((model, ort)) = crate::test_model::model_and_runtime(
        "models_cli::the_api_lists_installed_models_for_admins",
    ) else {
        return;
    };
    // A model under <data>/models/ (the only one) becomes the server default by itself.
    std::fs::create_dir_all(dir.path().join("models")).unwrap();
    std::os::unix::fs::symlink(&model, dir.path().join("models/all-MiniLM-L6-v2")).unwrap();
    let s = start_in(dir, move |c| c.ort_dylib_path = Some(ort)).await;
    let a = s.login("a@x.test", "password-123").await;
    let r = s.get("/api/models", &a.token).await;
    r.expect(200);
    let m = &r.body["models"][0];
    assert_eq!(m["name"], "all-MiniLM-L6-v2", "{}", r.text);
    assert_eq!(m["location"], "data");
    assert_eq!(m["selectable"], true);
    assert_eq!(m["dimensions"], 384);
    assert_eq!(m["defaultGraph"], "onnx/model.onnx");
    assert_eq!(m["serverDefault"], true);
    assert_eq!(m["graphs"].as_array().map(Vec::len), Some(2), "{}", r.text);
    assert!(
        !r.text.contains(model.to_str().unwrap()),
        "no paths on the wire"
    );
    let d = &r.body["serverDefault"];
    assert_eq!(d["provider"], "onnx");
    assert_eq!(d["folder"], "all-MiniLM-L6-v2");
    assert_eq!(d["dimensions"], 384);
    assert!(
        d["modelId"]
            .as_str()
            .is_some_and(|id| id.starts_with("onnx:all-MiniLM-L6-v2:fp32:")),
        "{}",
        r.text
    );
    // What the list offers is what the settings accept.
    s.put(
        "/api/settings/embeddings",
        &a.token,
        json!({"provider": "onnx", "modelFolder": "all-MiniLM-L6-v2"}),
    )
    .await
    .expect(200);
}
