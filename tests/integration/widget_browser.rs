//! The web widget as a website gets it: `GET /widget.js` (encodings, caching, cross-origin
//! loading) and the preview page; and the widget itself in headless Chromium (see below).

use crate::common::{self, create_agent, id, upload_doc};
use crate::engine::{GUIDE, ai_tenant};
use crate::fake_openai::{FakeOpenAi, Reply};
use reqwest::header;
use serde_json::{Value, json};
use std::time::Duration;

const JS: &[u8] = include_bytes!("../../web/widget/dist/widget.js");
const JS_GZ: &[u8] = include_bytes!("../../web/widget/dist/widget.js.gz");
const JS_BR: &[u8] = include_bytes!("../../web/widget/dist/widget.js.br");

async fn get(
    s: &common::Server,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut rb = s.http.get(format!("{}{}", s.base, path));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.expect("request");
    let status = r.status().as_u16();
    let h = r.headers().clone();
    (status, h, r.bytes().await.expect("body").to_vec())
}

fn hv<'a>(h: &'a reqwest::header::HeaderMap, k: &str) -> &'a str {
    h.get(k).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test]
async fn widget_script_is_served_compressed_cacheable_and_loadable_from_any_site() {
    let s = common::start().await;
    assert!(
        JS.len() < 200 * 1024 && JS_GZ.len() < 30 * 1024,
        "widget.js over its size budget: {} raw, {} gzipped",
        JS.len(),
        JS_GZ.len()
    );

    // No Accept-Encoding: the plain script.
    let (status, h, body) = get(&s, "/widget.js", &[("Origin", "https://shop.example")]).await;
    assert_eq!(status, 200);
    assert_eq!(body, JS, "GET /widget.js is not the committed build");
    assert!(hv(&h, "content-type").starts_with("text/javascript"));
    assert_eq!(hv(&h, "content-encoding"), "");
    assert_eq!(hv(&h, "access-control-allow-origin"), "*");
    assert_eq!(hv(&h, "cross-origin-resource-policy"), "cross-origin");
    assert!(hv(&h, "cache-control").contains("max-age=300"));
    assert!(
        hv(&h, "vary")
            .to_ascii_lowercase()
            .contains("accept-encoding")
    );
    let etag = hv(&h, "etag").to_string();
    assert!(etag.starts_with("W/\""), "etag: {etag}");

    // Compressed twins when accepted, brotli first.
    let (_, h, body) = get(&s, "/widget.js", &[("Accept-Encoding", "gzip")]).await;
    assert_eq!(hv(&h, "content-encoding"), "gzip");
    assert_eq!(body, JS_GZ);
    let (_, h, body) = get(
        &s,
        "/widget.js",
        &[("Accept-Encoding", "gzip, deflate, br, zstd")],
    )
    .await;
    assert_eq!(hv(&h, "content-encoding"), "br");
    assert_eq!(body, JS_BR);
    assert_eq!(hv(&h, "etag"), etag, "one validator for every encoding");
    let (_, h, body) = get(&s, "/widget.js", &[("Accept-Encoding", "br;q=0, gzip;q=0")]).await;
    assert_eq!(hv(&h, "content-encoding"), "");
    assert_eq!(body, JS);

    // Revalidation: 304 without a body; a stale tag gets the script.
    let (status, h, body) = get(&s, "/widget.js", &[("If-None-Match", &etag)]).await;
    assert_eq!(status, 304);
    assert!(body.is_empty());
    assert_eq!(hv(&h, "etag"), etag);
    let (status, _, body) = get(&s, "/widget.js", &[("If-None-Match", "W/\"stale\"")]).await;
    assert_eq!(status, 200);
    assert_eq!(body, JS);
    s.stop().await;
}

#[tokio::test]
async fn preview_page_embeds_the_widget_under_a_strict_csp() {
    let s = common::start().await;
    let a = s.register("widget-preview@x.test", "Shop").await;
    let agent = id(&create_agent(&s, &a, json!({"name": "Bot"})).await);
    let ch = s
        .post(
            "/api/channels",
            Some(&a.token),
            json!({"type": "web", "name": "Site", "agentId": agent}),
        )
        .await;
    ch.expect(201);
    let key = ch.body["settings"]["widgetKey"]
        .as_str()
        .expect("widgetKey");
    let (status, h, body) = get(&s, &format!("/widget/{key}/preview"), &[]).await;
    assert_eq!(status, 200);
    assert!(hv(&h, "content-type").starts_with("text/html"));
    let html = String::from_utf8(body).expect("utf-8");
    assert!(
        html.contains(&format!(
            r#"<script src="/widget.js" data-widget-key="{key}" async></script>"#
        )),
        "{html}"
    );
    let csp = hv(&h, header::CONTENT_SECURITY_POLICY.as_str());
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );

    // The admin is told when the key is wrong or the widget paused.
    let (status, _, body) = get(&s, "/widget/wk_no-such-widget/preview", &[]).await;
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).starts_with("widget_not_found"));
    let cid = id(&ch.body);
    s.put(
        &format!("/api/channels/{cid}"),
        &a.token,
        json!({"status": "paused"}),
    )
    .await
    .expect(200);
    let (status, _, body) = get(&s, &format!("/widget/{key}/preview"), &[]).await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).starts_with("channel_paused"));

    // Anything that is not a plain key token is not a page (and never reaches the HTML).
    let (status, _, body) = get(&s, "/widget/a%22%3E%3Cscript%3E/preview", &[]).await;
    assert_eq!(status, 404);
    assert!(!String::from_utf8_lossy(&body).contains("<script"));
    s.stop().await;
}

const QUESTION: &str = "When does the Lisbon shop open?";
const ANSWER: &str = "The Lisbon shop opens at nine o'clock on weekdays [1].";
const HUMAN_REPLY: &str = "Hi, this is Sam from the shop: we open at nine.";

/// The whole widget in headless Chromium (tests/js/widget_browser.mjs drives it): the
/// launcher on the preview page, then a shop's page on another origin under a strict CSP
/// embeds the widget; a visitor asks, the answer streams in from the fake
/// model, a staff socket sees the conversation, types and takes over, the visitor sees the
/// notice and the human reply, the unread badge, the history after a reload, and rates the
/// closed conversation. The screenshot is kept under target/tmp; the launcher's first paint
/// is printed (BENCHMARKS.md).
#[tokio::test]
async fn widget_in_chromium_streams_the_answer_and_shows_the_human_takeover() {
    let test = "widget_in_chromium_streams_the_answer_and_shows_the_human_takeover";
    let Some((js_dir, chromium)) = crate::js::browser(test) else {
        return;
    };
    let fake = FakeOpenAi::start().await;
    // The answer comes in word-sized pieces a little apart, so the page can be seen
    // showing it half-written (each piece is its own socket frame).
    fake.set_chunk_delay(Duration::from_millis(40));
    fake.push(Reply::text(ANSWER));
    let s = common::start().await;
    let a = ai_tenant(&s, "widget-browser@x.test", &fake).await;
    let agent = id(&create_agent(&s, &a, json!({"name": "Acme bot"})).await);
    // The answer cites the shop's guide: the widget shows it as a source.
    upload_doc(
        &s,
        &a.token,
        "guide.md",
        "text/markdown",
        GUIDE.as_bytes(),
        Some(&agent),
    )
    .await;
    // The shop's site: another origin (another port) that the channel allows.
    let shop = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let shop_origin = format!("http://{}", shop.local_addr().expect("addr"));
    let ch = s
        .post(
            "/api/channels",
            Some(&a.token),
            json!({"type": "web", "name": "Shop site", "agentId": agent,
                   "settings": {"allowedOrigins": [shop_origin],
                                "theme": {"title": "Acme support", "color": "#7c3aed"}}}),
        )
        .await;
    ch.expect(201);
    let key = ch.body["settings"]["widgetKey"]
        .as_str()
        .expect("widgetKey")
        .to_string();
    let shop_task = tokio::spawn(serve_shop(shop, s.base.clone(), key.clone(), vec![]));

    let shot = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("widget_browser.png");
    let _ = std::fs::remove_file(&shot);
    // The script bounds itself (120 s); this bounds the script.
    let out = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new("node")
            .arg("widget_browser.mjs")
            .current_dir(&js_dir)
            .env("BASE", &s.base)
            .env("HOST_ORIGIN", &shop_origin)
            .env("WIDGET_KEY", &key)
            .env("STAFF_TOKEN", &a.token)
            .env("STAFF_USER_ID", &a.user_id)
            .env("CHROMIUM", &chromium)
            .env("SCREENSHOT", &shot)
            .env("QUESTION", QUESTION)
            .env("ANSWER", ANSWER)
            .env("HUMAN_REPLY", HUMAN_REPLY)
            .env("CITATION", "guide.md")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser scenario finishes within 180 s")
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser scenario failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let result: Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_else(|| panic!("no RESULT line\nstdout:\n{stdout}\nstderr:\n{stderr}"));
    assert!(shot.is_file(), "no screenshot at {}", shot.display());
    eprintln!(
        "widget browser test: screenshot {}; launcher first paint {} ms after navigation start (first contentful paint {} ms)",
        shot.display(),
        result["launcherPaintMs"],
        result["firstContentfulPaintMs"]
    );

    // What the page showed is what the server stored.
    let cid = result["conversationId"].as_str().expect("conversationId");
    let msgs = s
        .get(&format!("/api/conversations/{cid}/messages"), &a.token)
        .await;
    msgs.expect(200);
    let stored: Vec<(String, String)> = msgs.body["data"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap_or("").to_string(),
                m["content"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    for (role, content) in [
        ("customer", QUESTION),
        ("ai", ANSWER),
        ("human", HUMAN_REPLY),
    ] {
        assert_eq!(
            stored
                .iter()
                .filter(|(r, c)| r == role && c == content)
                .count(),
            1,
            "{role} {content:?} stored once: {stored:?}"
        );
    }
    let conv = s.get(&format!("/api/conversations/{cid}"), &a.token).await;
    conv.expect(200);
    assert_eq!(conv.body["status"], "closed");
    assert_eq!(conv.body["mode"], "human");
    assert_eq!(conv.body["rating"]["comment"], "Quick and friendly.");
    assert_eq!(
        conv.body["rating"]["rating"], 5,
        "the visitor's rating: {}",
        conv.text
    );
    shop_task.abort();
    s.stop().await;
}

/// A shop's site as a careful site serves it: pages with the script tag under a CSP that
/// allows scripts and connections only from itself and the chat server (no inline anything).
/// `/` is a plain page; each `(name, js)` of `scripts` adds `/{name}`, a page that first loads
/// the site's own `/{name}.js`.
async fn serve_shop(
    listener: tokio::net::TcpListener,
    base: String,
    key: String,
    scripts: Vec<(String, String)>,
) {
    let ws = base.replacen("http", "ws", 1);
    let csp = format!(
        "default-src 'none'; script-src 'self' {base}; connect-src 'self' {base} {ws}; \
         img-src 'self' data:; style-src 'self'; base-uri 'none'; form-action 'none'"
    );
    let page = |own: Option<&str>| {
        let own = own
            .map(|n| format!("<script src=\"/{n}.js\"></script>"))
            .unwrap_or_default();
        format!(
            "<!doctype html><html><head><title>Acme shoes</title><link rel=\"icon\" href=\"data:,\"></head>\
             <body><h1>Acme shoes</h1><p>Hand-made in Lisbon.</p>{own}\
             <script src=\"{base}/widget.js\" data-widget-key=\"{key}\" async></script></body></html>"
        )
    };
    let html = |csp: String, body: String| {
        move || {
            let (csp, body) = (csp.clone(), body.clone());
            async move {
                (
                    [
                        (header::CONTENT_TYPE, "text/html; charset=utf-8".to_string()),
                        (header::CONTENT_SECURITY_POLICY, csp),
                    ],
                    body,
                )
            }
        }
    };
    let mut app = axum::Router::new().route("/", axum::routing::get(html(csp.clone(), page(None))));
    for (name, js) in scripts {
        let body = page(Some(&name));
        app = app
            .route(
                &format!("/{name}"),
                axum::routing::get(html(csp.clone(), body)),
            )
            .route(
                &format!("/{name}.js"),
                axum::routing::get(move || {
                    let js = js.clone();
                    async move { ([(header::CONTENT_TYPE, "text/javascript")], js) }
                }),
            );
    }
    let _ = axum::serve(listener, app).await;
}

/// Who the visitor is (tests/js/widget_identity.mjs drives Chromium): a channel that asks
/// for a name before the chat and verifies identities optionally. An anonymous visitor fills
/// the pre-chat form; a signed-in visitor, identified by the site's script with the HMAC its
/// server computed, is not asked; a forged signature is refused and opens nothing.
#[tokio::test]
async fn widget_in_chromium_asks_anonymous_visitors_and_trusts_signed_identities() {
    let test = "widget_in_chromium_asks_anonymous_visitors_and_trusts_signed_identities";
    let Some((js_dir, chromium)) = crate::js::browser(test) else {
        return;
    };
    let fake = FakeOpenAi::start().await; // answers "Echo: <message>"
    let s = common::start().await;
    let a = ai_tenant(&s, "widget-identity@x.test", &fake).await;
    let agent = id(&create_agent(&s, &a, json!({"name": "Acme bot"})).await);
    let shop = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let shop_origin = format!("http://{}", shop.local_addr().expect("addr"));
    let ch = s
        .post(
            "/api/channels",
            Some(&a.token),
            json!({"type": "web", "name": "Shop site", "agentId": agent,
                   "settings": {"allowedOrigins": [shop_origin],
                                "preChat": {"name": "required", "email": "optional"},
                                "identity": {"mode": "optional"}}}),
        )
        .await;
    ch.expect(201);
    let key = ch.body["settings"]["widgetKey"]
        .as_str()
        .expect("widgetKey")
        .to_string();
    let secret = ch.body["identitySecret"]
        .as_str()
        .expect("identitySecret, answered once")
        .to_string();

    // What the shop's server puts in its pages for a signed-in user.
    let sign = |external_id: &str| {
        use hmac::{KeyInit, Mac};
        let mut mac =
            <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(external_id.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    };
    let identify = |hash: &str| {
        format!(
            "window.aigentable = window.aigentable || function () {{ (window.aigentable.q = window.aigentable.q || []).push(arguments); }};\n\
             aigentable('identify', {{externalId: 'u-42', hash: '{hash}', name: 'Bea Signed', email: 'bea@example.com'}});\n"
        )
    };
    let scripts = vec![
        ("signed-in".to_string(), identify(&sign("u-42"))),
        ("forged".to_string(), identify(&sign("u-43"))),
    ];
    let shop_task = tokio::spawn(serve_shop(shop, s.base.clone(), key.clone(), scripts));

    let shot = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("widget_prechat.png");
    let out = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new("node")
            .arg("widget_identity.mjs")
            .current_dir(&js_dir)
            .env("BASE", &s.base)
            .env("HOST_ORIGIN", &shop_origin)
            .env("CHROMIUM", &chromium)
            .env("SCREENSHOT_PRECHAT", &shot)
            .env("WIDGET_KEY", &key)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser scenario finishes within 180 s")
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser scenario failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    eprintln!(
        "widget identity test: pre-chat screenshot {}",
        shot.display()
    );

    // The server has exactly the two conversations, with who each visitor is.
    let list = s.get("/api/conversations", &a.token).await;
    list.expect(200);
    let customers: Vec<Value> = list.body["data"]
        .as_array()
        .expect("conversations")
        .iter()
        .map(|c| c["customer"].clone())
        .collect();
    assert_eq!(customers.len(), 2, "{customers:?}");
    assert!(
        customers.iter().any(|c| c["name"] == "Ada Lovelace"
            && c["email"] == "ada@example.com"
            && c["externalId"].is_null()),
        "the anonymous visitor's pre-chat answers: {customers:?}"
    );
    assert!(
        customers
            .iter()
            .any(|c| c["externalId"] == "u-42" && c["name"] == "Bea Signed"),
        "the verified visitor: {customers:?}"
    );
    shop_task.abort();
    s.stop().await;
}
