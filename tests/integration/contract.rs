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
