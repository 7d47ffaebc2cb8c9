//! The Socket.IO server with python-socketio, the other stock client the realtime contract
//! names (node's socket.io-client is tests/integration/realtime.rs). The client script is
//! tests/py/socketio_client.py; without python3 and python-socketio the test says SKIPPED,
//! and with `AIGENTABLE_REQUIRE_PYTHON=1` (`.ci/run` sets it after installing the package)
//! it fails instead.

use crate::common::*;
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;

const REQUIRE_PYTHON: &str = "AIGENTABLE_REQUIRE_PYTHON";

fn python_socketio(test: &str) -> Option<PathBuf> {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import socketio, websocket"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/socketio_client.py"));
    }
    let why = "python3 with python-socketio is not available \
               (pip install \"python-socketio[client]\")";
    if std::env::var_os(REQUIRE_PYTHON).is_some_and(|v| !v.is_empty() && v != "0") {
        panic!("{test} needs python-socketio and {REQUIRE_PYTHON} is set, but {why}");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
    None
}

#[tokio::test]
async fn python_socketio_connects_joins_sends_idempotently_and_is_refused_with_the_rest_code() {
    let Some(script) = python_socketio("realtime_python") else {
        return;
    };
    let s = start().await;
    let a = s.register("py@x.test", "Py").await;
    let agent = create_agent(&s, &a, json!({"name": "Bot"})).await;
    let r = s
        .post(
            "/api/conversations",
            Some(&a.token),
            json!({"agentId": id(&agent)}),
        )
        .await;
    r.expect(201);
    let cid = id(&r.body);

    let out = bounded(
        "python-socketio client",
        tokio::process::Command::new("python3")
            .arg(&script)
            .args([&s.base, &a.token, &cid])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");

    assert_eq!(seen["connected"], true);
    assert_eq!(seen["join"]["ok"], true, "{seen}");
    assert_eq!(seen["join"]["conversation"]["id"], cid.as_str());
    let sent = &seen["send"]["message"];
    assert_eq!(seen["send"]["ok"], true, "{seen}");
    assert_eq!(sent["content"], "Hello from python-socketio");
    assert_eq!(sent["role"], "human");
    assert_eq!(
        seen["resend"]["message"]["id"], sent["id"],
        "the same clientId answers the stored message"
    );
    assert_eq!(seen["gotLive"], true, "new_message reached the client");
    let live = seen["newMessages"].as_array().expect("new messages");
    assert_eq!(live.len(), 1, "delivered once: {live:?}");
    assert_eq!(live[0]["id"], sent["id"]);
    assert!(
        seen["badRefused"].is_string(),
        "a bad token is refused: {seen}"
    );
    let why = seen["badError"].to_string();
    assert!(why.contains("invalid_token"), "the REST error code: {why}");

    // What the socket stored is what REST reads: once.
    let msgs = s
        .get(&format!("/api/conversations/{cid}/messages"), &a.token)
        .await;
    msgs.expect(200);
    let stored: Vec<&Value> = msgs.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter(|m| m["content"] == "Hello from python-socketio")
        .collect();
    assert_eq!(stored.len(), 1);
}
