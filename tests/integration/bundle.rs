//! The release bundle (`.ci/bundle`): made from the debug binary and the shared model and
//! runtime, unpacked into an empty folder, started with an empty environment, it does local
//! semantic search with no settings at all.

use crate::common::{Resp, send};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DOC: &str = "# Company handbook\n\n## Holidays\n\nEvery employee gets twenty-five paid vacation days per year. Unused days carry over until March.\n\n## Parking\n\nThe garage opens at seven and closes at midnight.\n\n## Kitchen\n\nPlease clean the coffee machine after use.\n";

/// Kills the server when the test ends, also on a failed assertion.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Makes a bundle into `out` and returns the archive's path.
pub fn make_bundle(model: &Path, ort: &Path, out: &Path) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/bundle");
    let stdout = run(Command::new("bash")
        .arg(&script)
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_aigentable"))
        .arg("--model-dir")
        .arg(model)
        .arg("--runtime-dir")
        .arg(ort.parent().expect("runtime folder"))
        .arg("--out")
        .arg(out)
        .args(["--level", "1"]));
    PathBuf::from(stdout.lines().last().expect("the archive's path").trim())
}

#[tokio::test]
async fn the_bundle_unpacked_and_started_with_no_settings_does_semantic_search() {
    let Some((model, ort)) = crate::test_model::model_and_runtime(
        "bundle::the_bundle_unpacked_and_started_with_no_settings_does_semantic_search",
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let archive = make_bundle(&model, &ort, &tmp.path().join("out"));
    let file = archive.file_name().unwrap().to_string_lossy().into_owned();
    let expected_prefix = format!("aigentable-{}-", env!("CARGO_PKG_VERSION"));
    assert!(
        file.starts_with(&expected_prefix) && file.ends_with(".tar.gz"),
        "{file}"
    );

    let unpacked = tmp.path().join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&unpacked));
    let root = unpacked.join(file.trim_end_matches(".tar.gz"));
    let lib = ort.file_name().unwrap();
    for f in [
        "aigentable",
        lib.to_str().unwrap(),
        "README.md",
        "LICENSE",
        "SHA256SUMS",
        "licenses/onnxruntime/LICENSE",
        "licenses/onnxruntime/ThirdPartyNotices.txt",
        "models/all-MiniLM-L6-v2/onnx/model.onnx",
        "models/all-MiniLM-L6-v2/onnx/model_quantized.onnx",
        "models/all-MiniLM-L6-v2/tokenizer.json",
        "models/all-MiniLM-L6-v2/tokenizer_config.json",
        "models/all-MiniLM-L6-v2/config.json",
        "models/all-MiniLM-L6-v2/LICENSE",
        "models/all-MiniLM-L6-v2/NOTICE",
        "models/all-MiniLM-L6-v2/PROVENANCE.md",
    ] {
        assert!(root.join(f).is_file(), "the bundle has no {f}");
    }
    // The checksums list covers what was shipped and matches it.
    run(Command::new("sha256sum")
        .args(["--check", "--quiet", "SHA256SUMS"])
        .current_dir(&root));

    // `models list` sees the bundle's model and says it is the default, with the int8 graph.
    let list = run(Command::new(root.join("aigentable"))
        .env_clear()
        .args(["models", "list", "--data-dir"])
        .arg(tmp.path().join("data")));
    assert!(
        list.contains("all-MiniLM-L6-v2  384 dims")
            && list.contains("int8 22.3 MiB (used)")
            && list.contains("[server default]"),
        "{list}"
    );

    // Started from another folder, with nothing in the environment.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let data = tmp.path().join("data");
    let child = Command::new(root.join("aigentable"))
        .env_clear()
        .current_dir(tmp.path())
        .arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .arg("--bind")
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the bundled binary");
    let _server = Running(child);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    // Readiness: the port answers once models and indexes are loaded (bounded).
    let t0 = Instant::now();
    let health = loop {
        if let Ok(r) = http.get(format!("{base}/api/health")).send().await {
            break r.json::<Value>().await.expect("health json");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the bundled server did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(health["retrieval"], "hybrid", "{health}");
    assert!(
        health["embeddings"]
            .as_str()
            .is_some_and(|e| e.starts_with("onnx:all-MiniLM-L6-v2:int8:") && e.contains("384 dims")),
        "{health}"
    );

    let r = send(http.post(format!("{base}/api/auth/register")).json(&json!({
        "email": "owner@example.com", "password": "password-123",
        "name": "Owner", "tenantName": "Shop"
    })))
    .await;
    r.expect(201);
    let token = r.body["accessToken"].as_str().expect("token").to_string();
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(DOC.as_bytes().to_vec())
            .file_name("handbook.md")
            .mime_str("text/markdown")
            .unwrap(),
    );
    let r = send(
        http.post(format!("{base}/api/documents"))
            .bearer_auth(&token)
            .multipart(form),
    )
    .await;
    r.expect(202);
    let doc = r.body["data"][0]["id"]
        .as_str()
        .expect("doc id")
        .to_string();
    let t0 = Instant::now();
    loop {
        let r = send(
            http.get(format!("{base}/api/documents/{doc}"))
                .bearer_auth(&token),
        )
        .await;
        r.expect(200);
        match r.body["status"].as_str() {
            Some("ready") => break,
            Some("failed") => panic!("the document failed: {}", r.text),
            _ => {}
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "document stuck: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // No word of the question is in the passage: only the model can connect them.
    let question = "how much annual leave do staff receive";
    let search = |mode: &'static str| {
        send(
            http.post(format!("{base}/api/knowledge/search"))
                .bearer_auth(&token)
                .json(&json!({"query": question, "mode": mode})),
        )
    };
    let top = |r: &Resp| r.body["data"][0]["text"].as_str().unwrap_or("").to_string();
    let v = search("vector").await;
    v.expect(200);
    assert!(
        top(&v).contains("twenty-five paid vacation days"),
        "{}",
        v.text
    );
    let k = search("keyword").await;
    k.expect(200);
    assert!(
        !top(&k).contains("twenty-five"),
        "keyword search alone should miss it: {}",
        k.text
    );
}
