//! The admin UI end to end: the compiled binary (temp data dir, the fake model upstream and
//! a Telegram Bot API double) driven by headless Chromium through `tests/js/ui_e2e.mjs`:
//! sign up, upload a document and wait for ready, create an agent, ask in the playground and
//! see a cited answer, the live inbox, the web widget and Telegram channels (test, pause,
//! dead letters, replay), invite a user, create an API key, settings (provider test), the
//! confirm dialog, phone width. Screenshots of each page go to `target/ui-screenshots/` (the
//! path is printed); the script's measurements (initial load, time to interactive) are
//! printed as a `METRICS` line.

use crate::fake_openai::{FakeOpenAi, Reply};
use crate::js;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The playground's question and the scripted model answer citing source 1.
const QUESTION: &str = "How long do I have to return shoes?";
const ANSWER: &str = "You can return unworn shoes within 30 days of delivery [1].";
/// The platform admin the binary creates at start (ADMIN_EMAIL / ADMIN_PASSWORD).
const OPS_EMAIL: &str = "ops@example.com";
const OPS_PASSWORD: &str = "ops-password-123";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The bot token the browser types (the double accepts only this one).
const BOT_TOKEN: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";

/// A Telegram Bot API double: getMe names the bot, setWebhook's secret is written to
/// `secret_file` (the browser script signs its deliveries with it), sendMessage is recorded.
async fn fake_telegram(
    secret_file: std::path::PathBuf,
) -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
) {
    use axum::extract::{Path, State};
    use serde_json::{Value, json};
    type Sent = std::sync::Arc<std::sync::Mutex<Vec<Value>>>;
    let sent: Sent = Default::default();
    let app = axum::Router::new()
        .route(
            "/{token}/{method}",
            axum::routing::post(
                move |State(sent): State<Sent>,
                      Path((token, method)): Path<(String, String)>,
                      body: axum::body::Bytes| {
                    let secret_file = secret_file.clone();
                    async move {
                        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        if token != format!("bot{BOT_TOKEN}") {
                            return axum::Json(
                                json!({"ok": false, "error_code": 401, "description": "Unauthorized"}),
                            );
                        }
                        let result = match method.as_str() {
                            "getMe" => json!({"id": 123456789, "is_bot": true, "first_name": "Shoe Shop", "username": "shoe_shop_bot"}),
                            "setWebhook" => {
                                let secret = body["secret_token"].as_str().unwrap_or("");
                                let tmp = secret_file.with_extension("tmp");
                                std::fs::write(&tmp, secret).expect("write the secret");
                                std::fs::rename(&tmp, &secret_file).expect("rename");
                                json!(true)
                            }
                            "sendMessage" => {
                                sent.lock().expect("lock").push(body);
                                json!({"message_id": 1})
                            }
                            _ => json!(true),
                        };
                        axum::Json(json!({"ok": true, "result": result}))
                    }
                },
            ),
        )
        .with_state(sent.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the Telegram double");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, sent)
}

/// A Meta Graph API double: the provider test's node read (the WhatsApp number), a media id
/// looked up and downloaded (`media-*`), and sends (`POST /{version}/{number}/messages`),
/// each send's body recorded.
async fn fake_meta() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
) {
    use axum::extract::{Path, State};
    use serde_json::{Value, json};
    type Sent = std::sync::Arc<std::sync::Mutex<Vec<Value>>>;
    let sent: Sent = Default::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the Meta double");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let media_base = base.clone();
    let app = axum::Router::new()
        .route(
            "/{version}/{node}",
            axum::routing::get(move |Path((_, node)): Path<(String, String)>| {
                let media_base = media_base.clone();
                async move {
                    axum::Json(if node.starts_with("media") {
                        json!({"id": node, "url": format!("{media_base}/download/{node}"), "mime_type": "image/png", "file_size": 13})
                    } else {
                        json!({"id": node, "display_phone_number": "+1 555 0100", "verified_name": "Shoe Shop", "quality_rating": "GREEN"})
                    })
                }
            }),
        )
        .route(
            "/download/{media}",
            axum::routing::get(|| async { b"receipt-bytes".to_vec() }),
        )
        .route(
            "/{version}/{node}/messages",
            axum::routing::post(|State(sent): State<Sent>, body: axum::body::Bytes| async move {
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let mut sent = sent.lock().expect("lock");
                sent.push(body);
                axum::Json(json!({"messages": [{"id": format!("wamid.out{}", sent.len())}]}))
            }),
        )
        .with_state(sent.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, sent)
}

/// Kills the server when the test ends, however it ends.
struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn admin_ui_end_to_end_in_chromium() {
    let Some((js_dir, chromium)) = js::browser("ui_browser::admin_ui_end_to_end_in_chromium")
    else {
        return;
    };
    let fake = FakeOpenAi::start().await;
    fake.push(Reply::text(ANSWER));

    let dir = tempfile::tempdir().expect("tmp");
    let doc = dir.path().join("returns-policy.md");
    std::fs::write(
        &doc,
        "# Returns policy\n\nUnworn shoes can be returned within 30 days of delivery for a full \
         refund. Sale items are final.\n\n# Shipping\n\nOrders ship within two business days.\n",
    )
    .expect("write doc");

    // Mail goes to a fake SMTP server; the password-reset link is handed to the browser
    // script through a file as soon as the mail arrives.
    let smtp = crate::common::fake_smtp().await;
    let reset_file = dir.path().join("reset-link.txt");
    let mails = smtp.mails.clone();
    let reset_out = reset_file.clone();
    let watcher = tokio::spawn(async move {
        loop {
            let found = mails
                .lock()
                .expect("lock")
                .iter()
                .find(|m| m.contains("reset-password"))
                .cloned();
            if let Some(m) = found {
                let token = crate::common::token_from(&m);
                let tmp = reset_out.with_extension("tmp");
                std::fs::write(&tmp, format!("/reset-password?token={token}")).expect("write");
                std::fs::rename(&tmp, &reset_out).expect("rename");
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });

    let tg_secret = dir.path().join("telegram-secret.txt");
    let (telegram, tg_sent) = fake_telegram(tg_secret.clone()).await;
    let (meta, meta_sent) = fake_meta().await;

    // A model folder under <data>/models/ for the settings' model picker (GET /api/models
    // reads folders without loading them; this graph is not a real one, so choosing it must
    // be refused with the server's reason).
    let model = dir.path().join("data/models/tiny-embedder");
    std::fs::create_dir_all(model.join("onnx")).expect("model folder");
    std::fs::write(model.join("tokenizer.json"), "{}").expect("tokenizer");
    std::fs::write(model.join("config.json"), r#"{"hidden_size": 8}"#).expect("config");
    std::fs::write(model.join("onnx/model.onnx"), b"not a graph").expect("graph");

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_aigentable"));
    for k in [
        "BIND",
        "JWT_SECRET",
        "JWT_REFRESH_SECRET",
        "ADMIN_EMAIL",
        "ADMIN_PASSWORD",
        "SIGNUP",
        "CONFIG",
        "PUBLIC_URL",
    ] {
        cmd.env_remove(k);
    }
    let server = Child(
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("PORT", port.to_string())
            .env("OPENAI_BASE_URL", fake.base_url())
            .env("OPENAI_API_KEY", "sk-test")
            .env("OPENAI_MODEL", "fake-large")
            .env("EMBEDDINGS_PROVIDER", "none")
            .env("SMTP_URL", &smtp.url)
            .env("TELEGRAM_API_BASE_URL", &telegram)
            .env("META_GRAPH_BASE_URL", &meta)
            .env("ADMIN_EMAIL", OPS_EMAIL)
            .env("ADMIN_PASSWORD", OPS_PASSWORD)
            .env("RATE_LIMIT_AUTH_PER_MIN", "0")
            .env("RATE_LIMIT_UPLOAD_PER_MIN", "0")
            // One person clicks through every page here, in three browsers at once, faster
            // than anyone would: the per-user API quota is not what this test is about.
            .env("RATE_LIMIT_API_PER_MIN", "0")
            .env("LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the binary"),
    );
    let http = reqwest::Client::new();
    let start = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{base}/api/health")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "server did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let shots = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
    let run = tokio::process::Command::new("node")
        .arg("ui_e2e.mjs")
        .current_dir(&js_dir)
        .env("BASE", &base)
        .env("CHROMIUM", &chromium)
        .env("SHOTS", &shots)
        .env("DOC", &doc)
        .env("QUESTION", QUESTION)
        .env("EXPECT", "within 30 days")
        .env("RESET_LINK_FILE", &reset_file)
        .env("BOT_TOKEN", BOT_TOKEN)
        .env("TG_SECRET_FILE", &tg_secret)
        .env("OPS_EMAIL", OPS_EMAIL)
        .env("OPS_PASSWORD", OPS_PASSWORD)
        .kill_on_drop(true)
        .output();
    // A guard against a hung browser, not a timing assertion.
    let out = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the browser run finished within 5 minutes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("admin UI screenshots: {}", shots.display());
    assert!(
        out.status.success(),
        "browser run failed:\n{stdout}\n{stderr}"
    );
    let metrics = stdout
        .lines()
        .find_map(|l| l.strip_prefix("METRICS "))
        .expect("the script printed its measurements");
    eprintln!("admin UI metrics: {metrics}");
    let m: serde_json::Value = serde_json::from_str(metrics).expect("metrics json");
    let gz = m["initialLoad"]["gzipBytes"].as_u64().expect("gzip bytes");
    assert!(gz > 0 && gz < 150 * 1024, "initial load {gz} bytes gzipped");

    // The playground really went through the model with the document's text as a source.
    let asked = fake
        .requests()
        .iter()
        .find(|r| r["messages"].to_string().contains(QUESTION))
        .cloned()
        .expect("the playground question reached the model");
    assert!(
        asked["messages"]
            .to_string()
            .contains("within 30 days of delivery"),
        "the uploaded document was retrieved into the prompt: {asked}"
    );
    // The WhatsApp customer got the AI's answer and the template, on their number.
    let sent = meta_sent.lock().expect("lock").clone();
    assert!(
        sent.iter()
            .any(|m| m["to"] == "351911111111" && m["type"] == "text"),
        "the AI answered on WhatsApp: {sent:?}"
    );
    assert!(
        sent.iter().any(|m| m["type"] == "template"
            && m["template"]["name"] == "order_update"
            && m["to"] == "351911111111"),
        "the template went out: {sent:?}"
    );
    // The replayed Telegram message was answered on Telegram, in the customer's chat.
    let sent = tg_sent.lock().expect("lock").clone();
    assert!(
        sent.iter().any(|m| m["chat_id"] == 4242),
        "the replayed dead letter was answered on Telegram: {sent:?}"
    );
    for name in [
        "01-sign-in",
        "08c-telegram-new",
        "08d-telegram",
        "08e-whatsapp",
        "08f-whatsapp-inbox",
        "16-dashboard",
        "03-knowledge",
        "07-playground",
        "08-team",
        "09-api-keys",
        "17-audit",
        "10b-model-picker",
        "12-phone-menu",
        "14b-platform-plans",
        "15b-tenant-usage",
        "15c-usage-banner",
        "14c-platform-dead-letters",
        "17b-platform-audit",
        "14d-platform-import",
    ] {
        assert!(
            shots.join(format!("{name}.png")).is_file(),
            "screenshot {name}"
        );
    }
    watcher.abort();
    drop(server);
}

/// The UI beside the real router: app paths answer the page with its CSP, while the API,
/// its docs, the widget script and the socket endpoint keep their own answers.
#[tokio::test]
async fn the_ui_lives_beside_the_api_routes() {
    let s = crate::common::start().await;
    let get = |path: &str| {
        let url = format!("{}{path}", s.base);
        let http = s.http.clone();
        async move { http.get(url).send().await.expect("request") }
    };
    for path in [
        "/",
        "/inbox",
        "/agents/0193f1d2-0000-7000-8000-000000000000",
    ] {
        let r = get(path).await;
        assert_eq!(r.status().as_u16(), 200, "{path}");
        let csp = r.headers()["content-security-policy"]
            .to_str()
            .expect("csp")
            .to_string();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{path}: {csp}"
        );
        assert_eq!(r.headers()["cache-control"], "no-cache", "{path}");
        assert!(
            r.text().await.expect("body").contains("<div id=\"app\">"),
            "{path}"
        );
    }
    let r = get("/api/nope").await;
    assert_eq!(r.status().as_u16(), 404);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "route_not_found");
    let r = get("/api/openapi.json").await;
    assert_eq!(r.status().as_u16(), 200);
    let r = get("/widget.js").await;
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .expect("type")
            .contains("javascript")
    );
    // The Socket.IO endpoint answers its own protocol (here: a handshake without credentials
    // is refused by it), never the app's page.
    let r = get("/socket.io/?EIO=4&transport=polling").await;
    let ty = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(!ty.starts_with("text/html"), "socket.io answered {ty}");
    let r = get("/metrics").await;
    assert_eq!(
        r.status().as_u16(),
        404,
        "metrics are off by default and stay a 404"
    );
    assert!(
        !r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .starts_with("text/html")
    );
    s.stop().await;
}
