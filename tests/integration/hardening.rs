//! Issue 8's limits and HTTP-level findings, each reproduced from outside: security headers
//! on every answer, the upload's error contract, /metrics exposure, /api/health paths, file
//! modes of the data directory, /v1 body and message limits, the password hashing queue,
//! login limits and trusted proxies.

use crate::common::*;
use serde_json::{Value, json};

fn assert_security_headers(r: &Resp, what: &str) {
    for k in [
        "x-content-type-options",
        "x-frame-options",
        "referrer-policy",
        "content-security-policy",
        "cross-origin-opener-policy",
        "cross-origin-resource-policy",
    ] {
        assert!(r.headers.contains_key(k), "{what}: no {k}: {:?}", r.headers);
    }
}

#[tokio::test]
async fn method_not_allowed_and_oversized_answers_carry_security_headers() {
    let s = start_with(|c| c.upload_max_bytes = 4 * 1024).await;
    let a = s.register("h@x.test", "H").await;
    let r = s
        .req(reqwest::Method::PATCH, "/api/auth/login", None, None)
        .await;
    r.expect_err(405, "method_not_allowed");
    assert_security_headers(&r, "405");

    // Beyond the router-wide limit (twice the upload limit): the framework's 413.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(vec![b'a'; 64 * 1024])
            .file_name("big.txt")
            .mime_str("text/plain")
            .expect("mime"),
    );
    let r = send(
        s.http
            .post(format!("{}/api/documents", s.base))
            .bearer_auth(&a.token)
            .multipart(form),
    )
    .await;
    r.expect_err(413, "payload_too_large");
    assert_security_headers(&r, "413");
}

#[tokio::test]
async fn a_non_multipart_upload_gets_the_json_error_body() {
    let s = start().await;
    let a = s.register("u@x.test", "U").await;
    let post = |ct: &'static str, body: &'static str| {
        s.http
            .post(format!("{}/api/documents", s.base))
            .bearer_auth(&a.token)
            .header("content-type", ct)
            .body(body)
    };
    let r = send(post("application/json", "{\"file\":\"x\"}")).await;
    r.expect_err(415, "unsupported_media_type");
    assert!(r.body["requestId"].is_string(), "{}", r.text);
    let r = send(post("text/plain", "hello")).await;
    r.expect_err(415, "unsupported_media_type");
    // Multipart without a boundary, and a body that is not the multipart it claims.
    let r = send(post("multipart/form-data", "hello")).await;
    r.expect_err(400, "invalid_multipart");
    let r = send(post(
        "multipart/form-data; boundary=XYZ",
        "not multipart at all",
    ))
    .await;
    r.expect_err(400, "invalid_multipart");
    // No body type at all.
    let r = send(
        s.http
            .post(format!("{}/api/documents", s.base))
            .bearer_auth(&a.token),
    )
    .await;
    r.expect_err(415, "unsupported_media_type");
    // A valid upload still works.
    upload(
        &s,
        &a.token,
        &[("a.txt", "text/plain", b"hello".to_vec())],
        None,
    )
    .await
    .expect(202);
}

#[tokio::test]
async fn metrics_are_off_by_default() {
    let s = start().await;
    let r = send(s.http.get(format!("{}/metrics", s.base))).await;
    r.expect(404);
}

#[tokio::test]
async fn metrics_with_a_token_need_it() {
    let token = "metrics-token-0123456789";
    let s = start_with(|c| {
        c.metrics = aigentable::config::MetricsMode::Token;
        c.metrics_token = Some(aigentable::config::Secret::new(token));
    })
    .await;
    s.get("/api/health", "x").await;
    let r = send(s.http.get(format!("{}/metrics", s.base))).await;
    r.expect_err(401, "unauthorized");
    let r = send(
        s.http
            .get(format!("{}/metrics", s.base))
            .bearer_auth("metrics-token-wrong-456789"),
    )
    .await;
    r.expect_err(401, "unauthorized");
    let r = send(s.http.get(format!("{}/metrics", s.base)).bearer_auth(token)).await;
    r.expect(200);
    assert!(r.text.contains("http_requests_total{"), "{}", r.text);
}

#[tokio::test]
async fn public_metrics_are_served_only_on_their_own_listener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = test_config(dir.path());
    cfg.metrics = aigentable::config::MetricsMode::Public;
    cfg.metrics_bind = Some("127.0.0.1:9".into());
    let mut app = aigentable::build(cfg).await.expect("app builds");
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let maddr = metrics.local_addr().expect("addr");
    app.metrics_listener = Some(metrics);
    let main = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = main.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(aigentable::serve_with_listener(app, main, async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let r = send(http.get(format!("http://{addr}/api/health"))).await;
    r.expect(200);
    let r = send(http.get(format!("http://{addr}/metrics"))).await;
    r.expect(404);
    let r = send(http.get(format!("http://{maddr}/metrics"))).await;
    r.expect(200);
    assert!(r.text.contains("http_requests_total{"), "{}", r.text);
    assert_security_headers(&r, "metrics listener");
    // The metrics listener serves nothing else.
    send(http.get(format!("http://{maddr}/api/health")))
        .await
        .expect(404);
    let _ = stop.send(());
    bounded("server stop", server)
        .await
        .expect("joined")
        .expect("server ran");
}

#[tokio::test]
async fn health_does_not_show_file_paths() {
    let s = start().await;
    let r = send(s.http.get(format!("{}/api/health", s.base))).await;
    r.expect(200);
    let dir = s.data_dir();
    let dir = dir.to_str().expect("utf-8 path");
    assert!(!r.text.contains(dir), "{}", r.text);
    assert!(!r.text.contains("/models/"), "{}", r.text);
    // What monitoring needs is still there.
    for k in ["status", "storage", "version", "embeddings", "retrieval"] {
        assert!(!r.body[k].is_null(), "{k}: {}", r.text);
    }
}

/// Every file under `dir` is 0600 and every directory 0700.
#[cfg(unix)]
fn assert_private_tree(dir: &std::path::Path) -> usize {
    use std::os::unix::fs::PermissionsExt;
    let mut seen = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let mode = std::fs::metadata(&d).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "directory {}", d.display());
        for e in std::fs::read_dir(&d).expect("read dir") {
            let p = e.expect("entry").path();
            let m = std::fs::symlink_metadata(&p).expect("meta");
            if m.is_dir() {
                todo.push(p);
            } else {
                let mode = m.permissions().mode() & 0o777;
                assert_eq!(mode & 0o077, 0, "file {} is {mode:o}", p.display());
                seen += 1;
            }
        }
    }
    seen
}

#[cfg(unix)]
#[tokio::test]
async fn data_files_are_private() {
    let s = start().await;
    let a = s.register("p@x.test", "P").await;
    let doc = upload_doc(
        &s,
        &a.token,
        "notes.txt",
        "text/plain",
        b"The warranty lasts two years.",
        None,
    )
    .await;
    assert!(!doc.is_empty());
    let dir = s.stop().await;
    let files = assert_private_tree(dir.path());
    // The store, the secrets, the original and the index files were all checked.
    assert!(files >= 4, "only {files} files checked");
    assert!(dir.path().join("aigentable.redb").exists());
}

#[tokio::test]
async fn chat_completions_are_held_to_the_json_limit_and_a_message_cap() {
    let s = start_with(|c| {
        c.body_limit_bytes = 64 * 1024;
        c.chat_max_messages = 3;
    })
    .await;
    let a = s.register("v@x.test", "V").await;
    let r = s
        .post("/api/api-keys", Some(&a.token), json!({"name": "sdk"}))
        .await;
    r.expect(201);
    let key = r.body["secret"].as_str().expect("secret").to_string();
    let chat = |body: Value| {
        send(
            s.http
                .post(format!("{}/v1/chat/completions", s.base))
                .bearer_auth(&key)
                .json(&body),
        )
    };
    let msg = |text: String| json!({"role": "user", "content": text});
    // Over the JSON limit (not the ~100 MB upload limit): 413 in OpenAI's shape.
    let r = chat(json!({"model": "nope", "messages": [msg("x".repeat(200 * 1024))]})).await;
    assert_eq!(r.status.as_u16(), 413, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "payload_too_large", "{}", r.text);
    assert_eq!(
        r.body["error"]["type"], "invalid_request_error",
        "{}",
        r.text
    );
    assert_security_headers(&r, "/v1 413");
    // More messages than the cap.
    let many: Vec<Value> = (0..4).map(|i| msg(format!("m{i}"))).collect();
    let r = chat(json!({"model": "nope", "messages": many})).await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "too_many_messages", "{}", r.text);
    assert_eq!(r.body["error"]["param"], "messages", "{}", r.text);
    // At the cap the request goes on (to the unknown model).
    let three: Vec<Value> = (0..3).map(|i| msg(format!("m{i}"))).collect();
    let r = chat(json!({"model": "nope", "messages": three})).await;
    assert_eq!(r.status.as_u16(), 404, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "model_not_found", "{}", r.text);
}

/// POST /api/auth/login as if from `ip` (through a proxy at 127.0.0.1).
async fn login_from(s: &Server, ip: &str, email: &str, password: &str) -> Resp {
    send(
        s.http
            .post(format!("{}/api/auth/login", s.base))
            .header("x-forwarded-for", ip)
            .json(&json!({"email": email, "password": password})),
    )
    .await
}

#[tokio::test]
async fn wrong_logins_from_one_address_do_not_lock_out_another() {
    let s = start_with(|c| {
        c.rate_limit_auth_per_min = 5;
        c.trusted_proxies = "127.0.0.1".into();
    })
    .await;
    let r = send(
        s.http
            .post(format!("{}/api/auth/register", s.base))
            .header("x-forwarded-for", "192.0.2.1")
            .json(&json!({"email": "victim@x.test", "password": "password-123", "name": "V", "tenantName": "V"})),
    )
    .await;
    r.expect(201);
    for _ in 0..5 {
        login_from(&s, "203.0.113.66", "victim@x.test", "wrong-password")
            .await
            .expect_err(401, "invalid_credentials");
    }
    // The attacker's address is locked out of the account, even with the right password.
    let r = login_from(&s, "203.0.113.66", "victim@x.test", "password-123").await;
    r.expect_err(429, "rate_limited");
    assert!(r.headers.contains_key("retry-after"));
    // The owner, from another address, signs in.
    login_from(&s, "198.51.100.20", "victim@x.test", "password-123")
        .await
        .expect(200);
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    let s = start_with(|c| c.rate_limit_auth_per_min = 5).await;
    s.register("v2@x.test", "V").await;
    for i in 0..4 {
        // A different claimed address each time: all are the TCP peer to the limits.
        login_from(&s, &format!("203.0.113.{i}"), "v2@x.test", "wrong-password")
            .await
            .expect_err(401, "invalid_credentials");
    }
    login_from(&s, "198.51.100.20", "v2@x.test", "password-123")
        .await
        .expect_err(429, "rate_limited");
}

#[tokio::test]
async fn a_full_password_hashing_queue_answers_503_server_busy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = test_config(dir.path());
    cfg.password_hash_threads = 1;
    cfg.password_hash_queue = 1;
    let app = aigentable::build(cfg).await.expect("app builds");
    let state = app.state.clone();
    let main = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = main.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(aigentable::serve_with_listener(app, main, async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let login = || {
        send(
            http.post(format!("http://{addr}/api/auth/login"))
                .json(&json!({"email": ROOT_EMAIL, "password": ROOT_PASSWORD})),
        )
    };
    login().await.expect(200);
    // Logins already hashing and waiting fill the pool (one thread + a queue of one).
    let busy: Vec<_> = std::iter::from_fn(|| state.limits.hashing.admit()).collect();
    assert_eq!(busy.len(), 2);
    let r = login().await;
    r.expect_err(503, "server_busy");
    assert_eq!(r.headers["retry-after"], "1");
    assert_security_headers(&r, "503");
    // Registration hashes too.
    let r = send(http.post(format!("http://{addr}/api/auth/register")).json(
        &json!({"email": "n@x.test", "password": "password-123", "name": "N", "tenantName": "N"}),
    ))
    .await;
    r.expect_err(503, "server_busy");
    drop(busy);
    login().await.expect(200);
    let _ = stop.send(());
    bounded("server stop", server)
        .await
        .expect("joined")
        .expect("server ran");
}
