//! The compiled binary: zero-config start, CLI, graceful shutdown, no secrets in logs.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_aigentable"));
    for k in [
        "PORT",
        "BIND",
        "DATA_DIR",
        "JWT_SECRET",
        "JWT_REFRESH_SECRET",
        "ADMIN_EMAIL",
        "ADMIN_PASSWORD",
        "SIGNUP",
        "CONFIG",
    ] {
        c.env_remove(k);
    }
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[test]
fn version_flag() {
    let out = bin().arg("--version").output().expect("runs");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn bad_config_is_a_clear_error() {
    let out = bin().env("JWT_EXPIRES_IN", "soon").output().expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("JWT_EXPIRES_IN"));
}

#[tokio::test]
async fn binary_serves_then_shuts_down_gracefully() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    // CLI: create a platform admin before the first start.
    let out = bin()
        .args([
            "admin",
            "create",
            "--email",
            "ops@example.com",
            "--data-dir",
        ])
        .arg(&data)
        .env("ADMIN_PASSWORD", "ops-password-1")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let port = free_port();
    let mut child = bin()
        .arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .env("PORT", port.to_string())
        .env("LOG_LEVEL", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let start = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{base}/api/health")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "server did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let login = http
        .post(format!("{base}/api/auth/login"))
        .json(&serde_json::json!({"email": "ops@example.com", "password": "ops-password-1"}))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status().as_u16(), 200);
    let body: serde_json::Value = login.json().await.expect("json");
    let refresh = body["refreshToken"].as_str().expect("rt").to_string();
    let access = body["accessToken"].as_str().expect("at").to_string();

    // Secrets were generated with 0600.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(data.join("secrets/jwt_secret"))
            .expect("secret file")
            .permissions()
            .mode();
        assert_eq!(m & 0o777, 0o600);
    }

    // SIGTERM: the process exits cleanly.
    let pid = child.id().to_string();
    let st = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(st.success());
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status:?}");
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read");
    assert!(out.contains("listening"), "{out}");

    // Neither the console nor the log file contains secrets.
    let mut logs = out + &err;
    for e in std::fs::read_dir(data.join("logs")).expect("logs dir") {
        logs.push_str(&std::fs::read_to_string(e.expect("entry").path()).unwrap_or_default());
    }
    assert!(logs.contains("request"), "access log lines are written");
    for secret in ["ops-password-1", refresh.as_str(), access.as_str()] {
        assert!(!logs.contains(secret), "a secret appears in the logs");
    }
    let jwt = std::fs::read_to_string(data.join("secrets/jwt_secret")).expect("secret");
    assert!(!logs.contains(jwt.trim()));

    // Data written by a newer version is refused with a clear message.
    drop(dir);
}

async fn wait_healthy(http: &reqwest::Client, base: &str) {
    let start = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{base}/api/health")).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "server did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn serve(data: &std::path::Path, port: u16) -> std::process::Child {
    bin()
        .arg("serve")
        .arg("--data-dir")
        .arg(data)
        .env("PORT", port.to_string())
        .env("LOG_LEVEL", "warn")
        .env("RATE_LIMIT_AUTH_PER_MIN", "0")
        .env("RATE_LIMIT_UPLOAD_PER_MIN", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn")
}

#[tokio::test]
async fn kill_9_during_ingestion_loses_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut child = serve(&data, port);
    wait_healthy(&http, &base).await;
    let reg: serde_json::Value = http
        .post(format!("{base}/api/auth/register"))
        .json(&serde_json::json!({"email": "k@x.test", "password": "password-123", "name": "K", "tenantName": "K"}))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("json");
    let token = reg["accessToken"].as_str().expect("token").to_string();
    let mut form = reqwest::multipart::Form::new();
    for i in 0..20 {
        let mut text = format!("# Document {i}\n\n");
        for p in 0..400 {
            text.push_str(&format!("## Section {p}\n\nParagraph {p} of document {i} talks about topic {} in some detail.\n\n", p * 7 + i));
        }
        form = form.part(
            "file",
            reqwest::multipart::Part::bytes(text.into_bytes())
                .file_name(format!("doc{i}.md"))
                .mime_str("text/markdown")
                .expect("mime"),
        );
    }
    let up = http
        .post(format!("{base}/api/documents"))
        .bearer_auth(&token)
        .multipart(form)
        .send()
        .await
        .expect("upload");
    assert_eq!(up.status().as_u16(), 202);
    // kill -9 while the queue is being worked.
    child.kill().expect("kill -9");
    child.wait().expect("reaped");

    let mut child = serve(&data, port);
    wait_healthy(&http, &base).await;
    let t0 = Instant::now();
    loop {
        let list: serde_json::Value = http
            .get(format!("{base}/api/documents?limit=200"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        let docs = list["data"].as_array().expect("data");
        assert_eq!(docs.len(), 20, "every accepted document is kept");
        let done = docs
            .iter()
            .filter(|d| d["status"] == "ready" || d["status"] == "failed")
            .count();
        if done == 20 {
            assert!(docs.iter().all(|d| d["status"] == "ready"), "{list}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "documents stuck after restart: {done}/20 done"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pid = child.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let _ = child.wait();
    // The indexes can always be rebuilt from the store.
    let out = bin()
        .arg("reindex")
        .arg("--data-dir")
        .arg(&data)
        .output()
        .expect("reindex");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("rebuilt"));
}
