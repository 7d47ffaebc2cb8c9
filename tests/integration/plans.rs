//! Plans and subscriptions: each limit refused at the limit with the exact body, nothing
//! half-done (a refused upload leaves no file and no record), creates racing at limit-1,
//! the period's AI replies reset by the (injected) clock, roles and tenancy, the built-in
//! unlimited default, and the usage-threshold events.

use crate::common::*;
use aigentable::events::{Event, Recv};
use serde_json::{Value, json};
use std::time::Duration;

/// Root creates a plan with `limits` and moves `tenant` onto it; returns the plan id.
async fn put_on_plan(s: &Server, root: &Account, tenant: &str, limits: Value) -> String {
    let r = s
        .post(
            "/api/plans",
            Some(&root.token),
            json!({"name": "Small", "limits": limits, "priceText": "9 EUR / month"}),
        )
        .await;
    r.expect(201);
    let plan = id(&r.body);
    s.put(
        &format!("/api/tenants/{tenant}/subscription"),
        &root.token,
        json!({"planId": plan}),
    )
    .await
    .expect(200);
    plan
}

#[track_caller]
fn assert_refused(r: &Resp, limit: &str, used: u64, max: u64) {
    r.expect_err(402, "plan_limit_reached");
    assert_eq!(
        r.body["error"]["details"],
        json!({"limit": limit, "used": used, "max": max}),
        "body: {}",
        r.text
    );
}

/// Files stored under the tenant's upload directory.
fn stored_files(s: &Server, tenant: &str) -> usize {
    let dir = s.data_dir().join("tenants").join(tenant).join("files");
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .count(),
        Err(_) => 0,
    }
}

async fn usage(s: &Server, a: &Account) -> Value {
    let r = s.get("/api/subscription", &a.token).await;
    r.expect(200);
    r.body
}

async fn customer_says(s: &Server, a: &Account, agent: &str, text: &str) -> (String, Value) {
    let r = s
        .post(
            "/api/conversations",
            Some(&a.token),
            json!({"agentId": agent, "customer": {"name": "Carla"}}),
        )
        .await;
    r.expect(201);
    let conv = id(&r.body);
    let r = s
        .post(
            &format!("/api/conversations/{conv}/messages"),
            Some(&a.token),
            json!({"content": text, "role": "customer"}),
        )
        .await;
    r.expect(201);
    (conv, r.body)
}

#[tokio::test]
async fn the_default_plan_is_unlimited() {
    let s = start().await;
    let a = s.register("owner@shop.example", "Shop").await;
    let u = usage(&s, &a).await;
    assert_eq!(u["status"], "active");
    assert_eq!(u["plan"]["builtIn"], true);
    assert_eq!(u["plan"]["isDefault"], true);
    assert_eq!(u["plan"]["id"], "00000000-0000-0000-0000-000000000000");
    for l in [
        "agents",
        "documents",
        "storageBytes",
        "messagesPerMonth",
        "channels",
        "seats",
        "apiKeys",
    ] {
        assert_eq!(u["plan"]["limits"][l], Value::Null, "{l}");
        assert_eq!(u["usage"][l]["limit"], Value::Null, "{l}");
        assert_eq!(u["usage"][l]["percent"], Value::Null, "{l}");
    }
    assert_eq!(u["usage"]["seats"]["used"], 1);
    for n in 0..5 {
        create_agent(&s, &a, json!({"name": format!("Bot {n}")})).await;
    }
    for n in 0..3 {
        s.post(
            "/api/api-keys",
            Some(&a.token),
            json!({"name": format!("k{n}")}),
        )
        .await
        .expect(201);
    }
    let u = usage(&s, &a).await;
    assert_eq!(u["usage"]["agents"]["used"], 5);
    assert_eq!(u["usage"]["apiKeys"]["used"], 3);

    // The operator lists the built-in plan as the default.
    let root = s.root().await;
    let r = s.get("/api/plans", &root.token).await;
    r.expect(200);
    assert_eq!(r.body["data"][0]["builtIn"], true);
    assert_eq!(r.body["data"][0]["isDefault"], true);

    // A plan marked default is what new tenants get; the built-in one stops being default.
    let r = s
        .post(
            "/api/plans",
            Some(&root.token),
            json!({"name": "Starter", "limits": {"agents": 2}, "isDefault": true}),
        )
        .await;
    r.expect(201);
    let starter = id(&r.body);
    let b = s.register("owner@other.example", "Other").await;
    let u = usage(&s, &b).await;
    assert_eq!(u["plan"]["id"], starter.as_str());
    assert_eq!(u["usage"]["agents"]["limit"], 2);
    // The first tenant kept its plan.
    assert_eq!(usage(&s, &a).await["plan"]["builtIn"], true);
    let r = s.get("/api/plans", &root.token).await;
    assert_eq!(r.body["data"][0]["isDefault"], false);
}

#[tokio::test]
async fn each_limit_is_refused_at_the_limit_with_the_exact_body() {
    let s = start().await;
    let root = s.root().await;
    let a = s.register("owner@shop.example", "Shop").await;
    put_on_plan(
        &s,
        &root,
        &a.tenant_id,
        json!({"agents": 1, "documents": 1, "channels": 1, "seats": 2, "apiKeys": 1}),
    )
    .await;

    let agent = id(&create_agent(&s, &a, json!({"name": "Bot"})).await);
    let r = s
        .post("/api/agents", Some(&a.token), json!({"name": "Second"}))
        .await;
    assert_refused(&r, "agents", 1, 1);
    assert_eq!(r.body["error"]["message"], "the plan allows 1 agents");

    s.post(
        "/api/channels",
        Some(&a.token),
        json!({"type": "web", "name": "Website", "agentId": agent}),
    )
    .await
    .expect(201);
    let r = s
        .post(
            "/api/channels",
            Some(&a.token),
            json!({"type": "web", "name": "Second", "agentId": agent}),
        )
        .await;
    assert_refused(&r, "channels", 1, 1);

    s.post("/api/api-keys", Some(&a.token), json!({"name": "one"}))
        .await
        .expect(201);
    let r = s
        .post("/api/api-keys", Some(&a.token), json!({"name": "two"}))
        .await;
    assert_refused(&r, "apiKeys", 1, 1);

    // Seats: the owner and a pending invitation fill two.
    s.post(
        &format!("/api/tenants/{}/users", a.tenant_id),
        Some(&a.token),
        json!({"email": "first@shop.example", "role": "TENANT_USER"}),
    )
    .await
    .expect(201);
    let r = s
        .post(
            &format!("/api/tenants/{}/users", a.tenant_id),
            Some(&a.token),
            json!({"email": "second@shop.example", "role": "TENANT_USER"}),
        )
        .await;
    assert_refused(&r, "seats", 2, 2);

    // Documents: the second upload is refused and leaves nothing behind.
    let r = upload(
        &s,
        &a.token,
        &[(
            "a.txt",
            "text/plain",
            b"Opening hours are nine to five.".to_vec(),
        )],
        None,
    )
    .await;
    r.expect(202);
    assert_eq!(stored_files(&s, &a.tenant_id), 1);
    let r = upload(
        &s,
        &a.token,
        &[(
            "b.txt",
            "text/plain",
            b"Returns are free within 30 days.".to_vec(),
        )],
        None,
    )
    .await;
    assert_refused(&r, "documents", 1, 1);
    assert_eq!(
        stored_files(&s, &a.tenant_id),
        1,
        "a refused upload left a file"
    );
    let docs = s.get("/api/documents", &a.token).await;
    assert_eq!(docs.body["data"].as_array().map(Vec::len), Some(1));

    let u = usage(&s, &a).await;
    assert_eq!(
        u["usage"]["agents"],
        json!({"used": 1, "limit": 1, "percent": 100})
    );
    assert_eq!(u["usage"]["channels"]["used"], 1);
    assert_eq!(u["usage"]["apiKeys"]["used"], 1);
    assert_eq!(
        u["usage"]["seats"],
        json!({"used": 2, "limit": 2, "percent": 100})
    );
    assert_eq!(u["usage"]["documents"]["used"], 1);
    assert_eq!(u["usage"]["storageBytes"]["used"], 31);

    // Deleting frees the room again.
    s.delete(&format!("/api/agents/{agent}"), &a.token)
        .await
        .expect(204);
    create_agent(&s, &a, json!({"name": "Again"})).await;
}

#[tokio::test]
async fn storage_bytes_are_limited_and_a_refused_upload_stores_nothing() {
    let s = start().await;
    let root = s.root().await;
    let a = s.register("owner@shop.example", "Shop").await;
    put_on_plan(&s, &root, &a.tenant_id, json!({"storageBytes": 40})).await;
    upload(
        &s,
        &a.token,
        &[("a.txt", "text/plain", vec![b'a'; 30])],
        None,
    )
    .await
    .expect(202);
    let r = upload(
        &s,
        &a.token,
        &[("b.txt", "text/plain", vec![b'b'; 11])],
        None,
    )
    .await;
    assert_refused(&r, "storageBytes", 30, 40);
    assert_eq!(stored_files(&s, &a.tenant_id), 1);
    // A batch is all or nothing: two files that fit one by one but not together.
    let r = upload(
        &s,
        &a.token,
        &[
            ("c.txt", "text/plain", vec![b'c'; 5]),
            ("d.txt", "text/plain", vec![b'd'; 6]),
        ],
        None,
    )
    .await;
    assert_refused(&r, "storageBytes", 30, 40);
    assert_eq!(stored_files(&s, &a.tenant_id), 1);
    let docs = s.get("/api/documents", &a.token).await;
    assert_eq!(docs.body["data"].as_array().map(Vec::len), Some(1));
    upload(
        &s,
        &a.token,
        &[("e.txt", "text/plain", vec![b'e'; 10])],
        None,
    )
    .await
    .expect(202);
    assert_eq!(usage(&s, &a).await["usage"]["storageBytes"]["used"], 40);
}

#[tokio::test]
async fn two_creates_at_limit_minus_one_let_exactly_one_through() {
    let s = start().await;
    let root = s.root().await;
    let a = s.register("owner@shop.example", "Shop").await;
    // Another tenant's records never count against this one.
    let b = s.register("owner@other.example", "Other").await;
    create_agent(&s, &b, json!({"name": "Theirs"})).await;
    put_on_plan(
        &s,
        &root,
        &a.tenant_id,
        json!({"agents": 2, "apiKeys": 2, "documents": 2}),
    )
    .await;
    create_agent(&s, &a, json!({"name": "First"})).await;
    s.post("/api/api-keys", Some(&a.token), json!({"name": "k1"}))
        .await
        .expect(201);
    upload(
        &s,
        &a.token,
        &[("a.txt", "text/plain", b"first document".to_vec())],
        None,
    )
    .await
    .expect(202);

    let (x, y) = tokio::join!(
        s.post("/api/agents", Some(&a.token), json!({"name": "X"})),
        s.post("/api/agents", Some(&a.token), json!({"name": "Y"})),
    );
    let mut st = [x.status.as_u16(), y.status.as_u16()];
    st.sort();
    assert_eq!(st, [201, 402], "x: {} y: {}", x.text, y.text);

    let (x, y) = tokio::join!(
        s.post("/api/api-keys", Some(&a.token), json!({"name": "X"})),
        s.post("/api/api-keys", Some(&a.token), json!({"name": "Y"})),
    );
    let mut st = [x.status.as_u16(), y.status.as_u16()];
    st.sort();
    assert_eq!(st, [201, 402], "x: {} y: {}", x.text, y.text);

    let fx = [("x.txt", "text/plain", b"document x".to_vec())];
    let fy = [("y.txt", "text/plain", b"document y".to_vec())];
    let (x, y) = tokio::join!(
        upload(&s, &a.token, &fx, None),
        upload(&s, &a.token, &fy, None),
    );
    let mut st = [x.status.as_u16(), y.status.as_u16()];
    st.sort();
    assert_eq!(st, [202, 402], "x: {} y: {}", x.text, y.text);
    assert_eq!(
        stored_files(&s, &a.tenant_id),
        2,
        "the refused upload left its file"
    );

    let u = usage(&s, &a).await;
    assert_eq!(u["usage"]["agents"]["used"], 2);
    assert_eq!(u["usage"]["apiKeys"]["used"], 2);
    assert_eq!(u["usage"]["documents"]["used"], 2);
    assert_eq!(usage(&s, &b).await["usage"]["agents"]["used"], 1);
}

#[tokio::test]
async fn ai_replies_stop_at_the_limit_hand_off_and_reset_with_the_period() {
    let s = start().await;
    let root = s.root().await;
    let a = s.register("owner@shop.example", "Shop").await;
    put_on_plan(&s, &root, &a.tenant_id, json!({"messagesPerMonth": 1})).await;
    let agent = id(&create_agent(
        &s,
        &a,
        json!({"name": "Bot", "fallbackMessage": "A person will answer you shortly."}),
    )
    .await);

    // The first reply is the agent's (no model configured: extractive, which with no
    // documents is the fallback too, but it is an AI reply that counts).
    let (c1, r) = customer_says(&s, &a, &agent, "hello").await;
    assert_eq!(r["reply"]["role"], "ai");
    assert_eq!(r["reply"]["status"], "sent");
    let conv = s.get(&format!("/api/conversations/{c1}"), &a.token).await;
    assert_eq!(conv.body["status"], "open");
    let u = usage(&s, &a).await;
    assert_eq!(
        u["usage"]["messagesPerMonth"],
        json!({"used": 1, "limit": 1, "percent": 100})
    );
    let start = u["periodStart"].as_str().unwrap().to_string();

    // The second: the customer sees the fallback and the conversation goes to a person.
    let (c2, r) = customer_says(&s, &a, &agent, "are you there?").await;
    assert_eq!(r["reply"]["role"], "ai");
    assert_eq!(r["reply"]["content"], "A person will answer you shortly.");
    let conv = s.get(&format!("/api/conversations/{c2}"), &a.token).await;
    assert_eq!(conv.body["status"], "pending_human", "{}", conv.text);
    assert_eq!(conv.body["mode"], "human");
    let msgs = s
        .get(&format!("/api/conversations/{c2}/messages"), &a.token)
        .await;
    let texts: Vec<String> = msgs.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        texts.iter().any(|t| t.contains("Handed off to a person")
            && t.contains("plan allows no more AI replies")),
        "{texts:?}"
    );
    // Refused replies are not counted.
    assert_eq!(usage(&s, &a).await["usage"]["messagesPerMonth"]["used"], 1);

    // A month later (the injected clock, no sleeping) the period has rolled over.
    s.clock.advance(Duration::from_secs(32 * 24 * 3600));
    let u = usage(&s, &a).await;
    assert_eq!(u["usage"]["messagesPerMonth"]["used"], 0);
    assert_ne!(u["periodStart"].as_str().unwrap(), start);
    let (c3, _) = customer_says(&s, &a, &agent, "hello again").await;
    let conv = s.get(&format!("/api/conversations/{c3}"), &a.token).await;
    assert_eq!(conv.body["status"], "open");
    assert_eq!(usage(&s, &a).await["usage"]["messagesPerMonth"]["used"], 1);
}

#[tokio::test]
async fn past_due_and_canceled_subscriptions() {
    let s = start().await;
    let root = s.root().await;
    let a = s.register("owner@shop.example", "Shop").await;
    let agent = id(&create_agent(&s, &a, json!({"name": "Bot"})).await);
    let builtin = "00000000-0000-0000-0000-000000000000";
    let set = |status: &'static str| {
        let (s, root, t) = (&s, &root, a.tenant_id.clone());
        async move {
            s.put(
                &format!("/api/tenants/{t}/subscription"),
                &root.token,
                json!({"planId": builtin, "status": status}),
            )
            .await
        }
    };
    let r = set("past_due").await;
    r.expect(200);
    assert_eq!(r.body["status"], "past_due");
    let r = s
        .post("/api/agents", Some(&a.token), json!({"name": "More"}))
        .await;
    r.expect_err(402, "subscription_inactive");
    assert_eq!(r.body["error"]["details"]["status"], "past_due");
    // Past due: customers are still answered by the AI.
    let (c, _) = customer_says(&s, &a, &agent, "hello").await;
    let conv = s.get(&format!("/api/conversations/{c}"), &a.token).await;
    assert_eq!(conv.body["status"], "open");
    // Deleting still works (to get under a limit).
    s.delete(&format!("/api/agents/{agent}"), &a.token)
        .await
        .expect(204);

    set("canceled").await.expect(200);
    let r = s
        .post("/api/api-keys", Some(&a.token), json!({"name": "k"}))
        .await;
    r.expect_err(402, "subscription_inactive");
    set("active").await.expect(200);
    let agent = id(&create_agent(&s, &a, json!({"name": "Bot 2"})).await);
    set("canceled").await.expect(200);
    // Canceled: the AI no longer replies; a person takes over.
    let (c, _) = customer_says(&s, &a, &agent, "hello").await;
    let conv = s.get(&format!("/api/conversations/{c}"), &a.token).await;
    assert_eq!(conv.body["status"], "pending_human");
}

#[tokio::test]
async fn only_platform_admins_manage_plans_and_subscriptions() {
    let s = start().await;
    let root = s.root().await;
    let a = s.register("owner@shop.example", "Shop").await;
    let user = s
        .invite_and_accept(&a, &a.tenant_id, "user@shop.example", "TENANT_USER")
        .await;
    for who in [&a, &user] {
        s.get("/api/plans", &who.token)
            .await
            .expect_err(403, "forbidden");
        s.post("/api/plans", Some(&who.token), json!({"name": "Free"}))
            .await
            .expect_err(403, "forbidden");
        s.put(
            &format!("/api/tenants/{}/subscription", a.tenant_id),
            &who.token,
            json!({"planId": "00000000-0000-0000-0000-000000000000", "status": "active"}),
        )
        .await
        .expect_err(403, "forbidden");
        // Everyone in the tenant sees its usage.
        s.get("/api/subscription", &who.token).await.expect(200);
    }
    let r = s
        .post("/api/plans", Some(&root.token), json!({"name": "Pro"}))
        .await;
    r.expect(201);
    let pro = id(&r.body);
    for who in [&a, &user] {
        s.put(
            &format!("/api/plans/{pro}"),
            &who.token,
            json!({"name": "Mine"}),
        )
        .await
        .expect_err(403, "forbidden");
        s.delete(&format!("/api/plans/{pro}"), &who.token)
            .await
            .expect_err(403, "forbidden");
    }
    // A missing limit is unlimited; validation names the field.
    assert_eq!(r.body["limits"]["agents"], Value::Null);
    s.post(
        "/api/plans",
        Some(&root.token),
        json!({"limits": {"agents": 1}}),
    )
    .await
    .expect_err(400, "validation_failed");
}

#[tokio::test]
async fn foreign_and_unknown_tenants_and_plans() {
    let s = start().await;
    let root = s.root().await;
    let a = s.register("owner@shop.example", "Shop").await;
    let b = s.register("owner@other.example", "Other").await;
    let plan = put_on_plan(&s, &root, &b.tenant_id, json!({"agents": 3})).await;

    // A tenant cannot read another tenant's subscription (X-Tenant-Id is refused).
    let r = send(
        s.http
            .get(format!("{}/api/subscription", s.base))
            .bearer_auth(&a.token)
            .header("x-tenant-id", &b.tenant_id),
    )
    .await;
    r.expect_err(403, "forbidden");
    assert_eq!(usage(&s, &a).await["plan"]["builtIn"], true);
    // The operator reads one through X-Tenant-Id.
    let r = send(
        s.http
            .get(format!("{}/api/subscription", s.base))
            .bearer_auth(&root.token)
            .header("x-tenant-id", &b.tenant_id),
    )
    .await;
    r.expect(200);
    assert_eq!(r.body["plan"]["id"], plan.as_str());
    assert_eq!(r.body["tenantId"], b.tenant_id.as_str());

    let nobody = "0193a3f0-0000-7000-8000-000000000000";
    s.put(
        &format!("/api/tenants/{nobody}/subscription"),
        &root.token,
        json!({"planId": plan}),
    )
    .await
    .expect_err(404, "tenant_not_found");
    s.put(
        &format!("/api/tenants/{}/subscription", a.tenant_id),
        &root.token,
        json!({"planId": nobody}),
    )
    .await
    .expect_err(404, "plan_not_found");
    s.get(&format!("/api/plans/{nobody}"), &root.token)
        .await
        .expect_err(404, "plan_not_found");
    s.get("/api/plans/not-an-id", &root.token)
        .await
        .expect_err(400, "invalid_id");

    // A plan in use cannot be deleted; the built-in one never.
    let r = s.delete(&format!("/api/plans/{plan}"), &root.token).await;
    r.expect_err(409, "plan_in_use");
    assert_eq!(r.body["error"]["details"]["tenants"], 1);
    let builtin = "00000000-0000-0000-0000-000000000000";
    s.delete(&format!("/api/plans/{builtin}"), &root.token)
        .await
        .expect_err(409, "plan_built_in");
    s.put(
        &format!("/api/plans/{builtin}"),
        &root.token,
        json!({"limits": {"agents": 1}}),
    )
    .await
    .expect_err(409, "plan_built_in");
    s.put(
        &format!("/api/tenants/{}/subscription", b.tenant_id),
        &root.token,
        json!({"planId": builtin}),
    )
    .await
    .expect(200);
    s.delete(&format!("/api/plans/{plan}"), &root.token)
        .await
        .expect(204);
    // A platform admin outside any tenant has no subscription of its own.
    s.get("/api/subscription", &root.token)
        .await
        .expect_err(404, "tenant_not_found");
}

#[tokio::test]
async fn crossing_80_and_100_percent_is_announced_once_each() {
    let s = start().await;
    let root = s.root().await;
    let a = s.register("owner@shop.example", "Shop").await;
    put_on_plan(&s, &root, &a.tenant_id, json!({"agents": 5})).await;
    let caller = s
        .svc
        .authenticate_access(&a.token)
        .expect("a valid access token");
    let mut sub = s.svc.events.subscribe(&caller);
    for n in 0..5 {
        create_agent(&s, &a, json!({"name": format!("Bot {n}")})).await;
    }
    s.post("/api/agents", Some(&a.token), json!({"name": "Over"}))
        .await
        .expect(402);
    // A conversation's event marks the end: what was published before it has arrived.
    let mut seen = Vec::new();
    let agent = s.get("/api/agents", &a.token).await.body["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.post(
        "/api/conversations",
        Some(&a.token),
        json!({"agentId": agent}),
    )
    .await
    .expect(201);
    loop {
        match bounded("the next event", sub.recv()).await {
            Recv::Event(e) => match &*e {
                Event::UsageThreshold {
                    limit,
                    used,
                    max,
                    percent,
                    threshold,
                    ..
                } => seen.push((*limit, *used, *max, *percent, *threshold)),
                Event::ConversationCreated { .. } => break,
                _ => {}
            },
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        seen,
        vec![("agents", 4, 5, 80, 80), ("agents", 5, 5, 100, 100)]
    );
}

#[tokio::test]
async fn playground_and_openai_api_answers_count_against_the_plan() {
    let s = start().await;
    let root = s.root().await;
    let a = s.register("owner@shop.example", "Shop").await;
    put_on_plan(&s, &root, &a.tenant_id, json!({"messagesPerMonth": 2})).await;
    let agent = create_agent(&s, &a, json!({"name": "Bot"})).await;
    let playground = format!("/api/agents/{}/test", id(&agent));
    let completion = |s: &Server| {
        s.http
            .post(format!("{}/v1/chat/completions", s.base))
            .bearer_auth(&a.token)
            .json(&json!({"model": agent["slug"], "messages": [{"role": "user", "content": "hi"}]}))
    };

    // No model configured: both answer extractively, and each answer is an AI reply.
    s.post(&playground, Some(&a.token), json!({"message": "hello"}))
        .await
        .expect(200);
    assert_eq!(usage(&s, &a).await["usage"]["messagesPerMonth"]["used"], 1);
    send(completion(&s)).await.expect(200);
    assert_eq!(
        usage(&s, &a).await["usage"]["messagesPerMonth"],
        json!({"used": 2, "limit": 2, "percent": 100})
    );

    // Used up: the playground answers our 402, /v1 OpenAI's error shape; neither counts.
    let r = s
        .post(&playground, Some(&a.token), json!({"message": "again"}))
        .await;
    r.expect_err(402, "plan_limit_reached");
    let r = send(completion(&s)).await;
    r.expect(402);
    assert_eq!(r.body["error"]["code"], "insufficient_quota", "{}", r.text);
    assert_eq!(r.body["error"]["type"], "insufficient_quota", "{}", r.text);
    assert_eq!(usage(&s, &a).await["usage"]["messagesPerMonth"]["used"], 2);
}

#[tokio::test]
async fn an_invitation_made_before_a_downgrade_cannot_take_a_seat_the_plan_no_longer_has() {
    let s = start().await;
    let root = s.root().await;
    let a = s.register("owner@shop.example", "Shop").await;
    put_on_plan(&s, &root, &a.tenant_id, json!({"seats": 3})).await;
    let r = s
        .post(
            &format!("/api/tenants/{}/users", a.tenant_id),
            Some(&a.token),
            json!({"email": "late@shop.example", "role": "TENANT_USER"}),
        )
        .await;
    r.expect(201);
    let url = r.body["inviteUrl"].as_str().expect("inviteUrl").to_string();
    let token = url.split("token=").nth(1).expect("token").to_string();

    // The operator moves the shop to a one-seat plan: the owner fills it.
    put_on_plan(&s, &root, &a.tenant_id, json!({"seats": 1})).await;
    let accept = json!({"token": token, "name": "Late", "password": "password-123"});
    let r = s
        .post("/api/auth/accept-invite", None, accept.clone())
        .await;
    r.expect_err(402, "plan_limit_reached");
    let r = s
        .post(
            "/api/auth/login",
            None,
            json!({"email": "late@shop.example", "password": "password-123"}),
        )
        .await;
    r.expect(401);

    // Back on a plan with room, the same invitation works.
    put_on_plan(&s, &root, &a.tenant_id, json!({"seats": 2})).await;
    s.post("/api/auth/accept-invite", None, accept)
        .await
        .expect(201);
    assert_eq!(usage(&s, &a).await["usage"]["seats"]["used"], 2);
}
