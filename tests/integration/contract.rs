//! The wire contract: records stay off the wire, revoked invitation tokens are gone from the
//! store, the JSON parser is strict, ids in bodies are checked as ids, the error-code table.

use crate::common::*;
use aigentable::store::{Index, Store};
use serde_json::json;

fn invite_token(url: &str) -> String {
    url.split("token=")
        .nth(1)
        .expect("token in invite url")
        .to_string()
}

#[tokio::test]
async fn a_revoked_invitation_cannot_be_accepted_and_leaves_no_token_row() {
    let s = start().await;
    let a = s.register("owner@x.test", "Acme").await;
    let t = a.tenant_id.clone();
    let r = s
        .post(
            &format!("/api/tenants/{t}/users"),
            Some(&a.token),
            json!({"email": "new@x.test", "role": "TENANT_USER"}),
        )
        .await;
    r.expect(201);
    assert!(r.body["invitation"].get("tokenHash").is_none());
    let inv = r.body["invitation"]["id"].as_str().unwrap().to_string();
    let token = invite_token(r.body["inviteUrl"].as_str().unwrap());
    // A second invitation that stays pending: its row must survive the revocation.
    let r = s
        .post(
            &format!("/api/tenants/{t}/users"),
            Some(&a.token),
            json!({"email": "other@x.test", "role": "TENANT_USER"}),
        )
        .await;
    r.expect(201);
    let kept = r.body["invitation"]["id"].as_str().unwrap().to_string();

    s.delete(&format!("/api/tenants/{t}/invitations/{inv}"), &a.token)
        .await
        .expect(204);
    s.post(
        "/api/auth/accept-invite",
        None,
        json!({"token": token, "name": "New", "password": "password-123"}),
    )
    .await
    .expect_err(400, "invalid_token");

    let dir = s.stop().await;
    let store = Store::open(dir.path(), 1 << 20).expect("open store");
    let rows = store
        .read(|tx| tx.index_entries(Index::InvitationToken, None, 100))
        .expect("index rows");
    assert_eq!(rows.len(), 1, "rows: {rows:?}");
    assert!(rows[0].1.ends_with(&kept), "rows: {rows:?}");
    assert!(!rows.iter().any(|(k, v)| k.is_empty() || v.ends_with(&inv)));
}

#[tokio::test]
async fn the_openapi_document_lists_every_error_code() {
    use aigentable::api::error::ErrorCode;
    let s = start().await;
    let r = send(s.http.get(format!("{}/api/openapi.json", s.base))).await;
    r.expect(200);
    let schemas = &r.body["components"]["schemas"];
    let listed: Vec<&str> = schemas["ErrorCode"]["enum"]
        .as_array()
        .expect("ErrorCode enum")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    let table: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(listed, table);
    assert_eq!(
        schemas["ErrorDetail"]["properties"]["code"]["$ref"],
        "#/components/schemas/ErrorCode"
    );
}

async fn raw(s: &Server, method: reqwest::Method, path: &str, token: &str, body: &str) -> Resp {
    send(
        s.http
            .request(method, format!("{}{path}", s.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string()),
    )
    .await
}

#[tokio::test]
async fn the_json_parser_refuses_trailing_garbage_and_arrays_for_objects() {
    let s = start().await;
    let a = s.register("owner@x.test", "Acme").await;
    use reqwest::Method;

    let r = raw(
        &s,
        Method::POST,
        "/api/agents",
        &a.token,
        r#"{"name":"x"}garbage"#,
    )
    .await;
    r.expect_err(400, "malformed_json");
    let r = raw(
        &s,
        Method::POST,
        "/api/agents",
        &a.token,
        r#"{"name":"x"} {"name":"y"}"#,
    )
    .await;
    r.expect_err(400, "malformed_json");
    let agents = s.get("/api/agents", &a.token).await;
    assert_eq!(
        agents.body["data"].as_array().unwrap().len(),
        0,
        "nothing was created"
    );
    // Trailing whitespace is still one value.
    raw(
        &s,
        Method::POST,
        "/api/agents",
        &a.token,
        "{\"name\":\"x\"}\n \t",
    )
    .await
    .expect(201);

    // An array where the body's object belongs changes nothing.
    s.put(
        "/api/settings/ai",
        &a.token,
        json!({"model": "tenant-model"}),
    )
    .await
    .expect(200);
    let r = raw(
        &s,
        Method::PUT,
        "/api/settings/ai",
        &a.token,
        "[null,null,null,null]",
    )
    .await;
    r.expect_err(400, "malformed_json");
    let r = s.get("/api/settings/ai", &a.token).await;
    assert_eq!(r.body["model"], "tenant-model", "{}", r.text);

    // Deeper down an array is not an object either, and the field is named.
    let agent = create_agent(&s, &a, json!({"name": "Bot"})).await;
    let r = s
        .post(
            "/api/conversations",
            Some(&a.token),
            json!({"agentId": id(&agent), "customer": ["Ann", "ann@x.test", "ext-1"]}),
        )
        .await;
    r.expect_err(400, "validation_failed");
    assert_eq!(r.body["error"]["details"]["fields"][0]["field"], "customer");
}

#[tokio::test]
async fn ids_in_bodies_are_checked_like_ids_in_paths() {
    let s = start().await;
    let a = s.register("owner@x.test", "Acme").await;

    let r = s
        .post(
            "/api/conversations",
            Some(&a.token),
            json!({"agentId": "../etc"}),
        )
        .await;
    r.expect_err(400, "invalid_id");
    assert_eq!(r.body["error"]["details"]["param"], "agentId");

    let r = s
        .post(
            "/api/agents",
            Some(&a.token),
            json!({"name": "Bot", "documentIds": ["not-an-id"]}),
        )
        .await;
    r.expect_err(400, "invalid_id");
    assert_eq!(r.body["error"]["details"]["param"], "documentIds[0]");

    let r = s
        .search(&a.token, json!({"query": "x", "agentId": 42}))
        .await;
    r.expect_err(400, "validation_failed");
    let r = s
        .search(&a.token, json!({"query": "x", "documentIds": ["0193"]}))
        .await;
    r.expect_err(400, "invalid_id");
    assert_eq!(r.body["error"]["details"]["param"], "documentIds[0]");

    let agent = create_agent(&s, &a, json!({"name": "Bot"})).await;
    let c = s
        .post(
            "/api/conversations",
            Some(&a.token),
            json!({"agentId": id(&agent)}),
        )
        .await;
    c.expect(201);
    let r = s
        .put(
            &format!("/api/conversations/{}/assign", id(&c.body)),
            &a.token,
            json!({"userId": "nobody"}),
        )
        .await;
    r.expect_err(400, "invalid_id");
    assert_eq!(r.body["error"]["details"]["param"], "userId");

    let r = s
        .post(
            &format!("/api/agents/{}/train", id(&agent)),
            Some(&a.token),
            json!({"documentIds": [""]}),
        )
        .await;
    r.expect_err(400, "invalid_id");
}

#[tokio::test]
async fn the_openapi_document_covers_v1_ids_limits_and_error_answers() {
    let s = start().await;
    let r = send(s.http.get(format!("{}/api/openapi.json", s.base))).await;
    r.expect(200);
    let d = &r.body;
    assert!(d["paths"]["/v1/chat/completions"]["post"].is_object());
    assert!(d["paths"]["/v1/models"]["get"].is_object());

    let put = &d["paths"]["/api/agents/{id}"]["put"];
    assert_eq!(put["parameters"][0]["schema"]["format"], "uuid");
    for code in ["400", "401", "404", "413", "415", "429", "default"] {
        assert!(
            put["responses"][code].is_object(),
            "PUT /api/agents/{{id}} lacks {code}"
        );
    }
    assert_eq!(
        put["responses"]["415"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ErrorBody"
    );
    let search = &d["paths"]["/api/knowledge/search"]["post"]["responses"];
    assert!(search["422"].is_object());
    // Open routes do not claim a 401 they cannot give for a missing token.
    let forgot = &d["paths"]["/api/auth/forgot"]["post"]["responses"];
    assert!(forgot["415"].is_object() && forgot["401"].is_null());

    let schemas = &d["components"]["schemas"];
    assert_eq!(schemas["AgentId"]["format"], "uuid");
    let agent = &schemas["AgentReq"]["properties"];
    assert_eq!(agent["name"]["maxLength"], 200);
    assert_eq!(agent["topK"]["maximum"], 50);
    assert_eq!(
        schemas["RegisterReq"]["properties"]["password"]["minLength"],
        8
    );
    assert_eq!(
        schemas["SearchReq"]["properties"]["query"]["maxLength"],
        2000
    );
    // Records are not response bodies: only their views are in the document.
    assert!(schemas["AgentView"].is_object() && schemas["Agent"].is_null());
    assert!(schemas["JobView"]["properties"]["payload"].is_null());
}

/// utoipa names each OpenAPI schema after its Rust type, and two `ToSchema` types with the
/// same name silently replace each other in the document (schemathesis once caught a route
/// documented with the wrong `UsageView`). Every `ToSchema` type name must be unique, unless
/// renamed with `#[schema(as = ...)]`.
#[test]
fn openapi_schema_names_are_unique() {
    fn rs_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).expect("read src") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                rs_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    rs_files(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut seen: std::collections::HashMap<String, String> = Default::default();
    let mut dups = Vec::new();
    let mut found = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read source");
        let mut pending = false;
        let mut renamed: Option<String> = None;
        for line in text.lines().map(str::trim) {
            if line.starts_with("#[derive(") && line.contains("ToSchema") {
                pending = true;
            } else if pending && line.starts_with("#[schema(") && line.contains("as = ") {
                let after = line.split("as = ").nth(1).unwrap_or("");
                renamed = Some(
                    after
                        .split([',', ')'])
                        .next()
                        .unwrap_or("")
                        .trim()
                        .rsplit("::")
                        .next()
                        .unwrap_or("")
                        .to_string(),
                );
            } else if pending
                && let Some(rest) = [
                    "pub struct ",
                    "pub enum ",
                    "struct ",
                    "enum ",
                    "pub(crate) struct ",
                    "pub(crate) enum ",
                ]
                .iter()
                .find_map(|k| line.strip_prefix(k))
            {
                let name = renamed.take().unwrap_or_else(|| {
                    rest.split(|c: char| !c.is_alphanumeric() && c != '_')
                        .next()
                        .unwrap_or("")
                        .to_string()
                });
                found += 1;
                let here = f.display().to_string();
                if let Some(prev) = seen.insert(name.clone(), here.clone()) {
                    dups.push(format!("{name}: {prev} and {here}"));
                }
                pending = false;
            }
        }
    }
    assert!(
        found > 50,
        "only {found} ToSchema types found: is the scan broken?"
    );
    assert!(dups.is_empty(), "ToSchema types sharing a name: {dups:#?}");
}
