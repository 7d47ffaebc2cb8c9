//! Durable turns: an acknowledged customer message is answered exactly once, even when the
//! server stops during its turn or after storing the answer, and the turns of one
//! conversation run one at a time, in order.

use crate::common::*;
use crate::engine::{ai_tenant, new_conversation, say};
use crate::fake_openai::{FakeOpenAi, Reply};
use aigentable::events::{Event, Recv};
use aigentable::model::{Job, JobStatus, Message, MessageRole};
use aigentable::store::{Index, Store, make_ref};
use aigentable::types::{JobId, TenantId};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn post_async(s: &Server, a: &Account, cid: &str, text: &str) {
    let r = s
        .post(
            &format!("/api/conversations/{cid}/messages"),
            Some(&a.token),
            json!({"content": text, "role": "customer", "async": true}),
        )
        .await;
    r.expect(201);
    assert!(r.body["reply"].is_null(), "{}", r.text);
}

/// The conversation's AI messages, oldest first.
async fn ai_messages(s: &Server, a: &Account, cid: &str) -> Vec<Value> {
    let r = s
        .get(&format!("/api/conversations/{cid}/messages"), &a.token)
        .await;
    r.expect(200);
    let mut v: Vec<Value> = r.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter(|m| m["role"] == "ai")
        .cloned()
        .collect();
    v.reverse();
    v
}

/// Waits (bounded) until the conversation has `n` AI messages.
async fn wait_ai_messages(s: &Server, a: &Account, cid: &str, n: usize) -> Vec<Value> {
    let t0 = Instant::now();
    loop {
        let v = ai_messages(s, a, cid).await;
        if v.len() >= n {
            return v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no answer came: {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The stopped server's turn jobs and AI messages, read from its store.
fn stored(dir: &std::path::Path, tenant: &str) -> (Vec<Job>, Vec<Message>) {
    let t = TenantId::parse(tenant).expect("tenant id");
    let store = Store::open(dir, 1 << 20).expect("open store");
    store
        .read(|tx| {
            let jobs = tx.scan::<Job>(&t, None, |j| j.kind == "turn")?;
            let msgs = tx.scan::<Message>(&t, None, |m| m.role == MessageRole::Ai)?;
            Ok((jobs, msgs))
        })
        .expect("read")
}

/// Puts a turn job back in the state a crash leaves it in: running, in the queue.
fn crash_during(dir: &std::path::Path, tenant: &str, job: &Job, attempts: u32) {
    let t = TenantId::parse(tenant).expect("tenant id");
    let store = Store::open(dir, 1 << 20).expect("open store");
    store
        .write(|tx| {
            let mut j = job.clone();
            j.status = JobStatus::Running;
            j.attempts = attempts;
            tx.put(&j)?;
            tx.index_insert_new(Index::JobQueue, j.id.as_str(), &make_ref(&t, j.id.as_str()))?;
            Ok::<_, aigentable::store::Error>(())
        })
        .expect("write");
}

fn queue_is_empty(dir: &std::path::Path) -> bool {
    let store = Store::open(dir, 1 << 20).expect("open store");
    store
        .read(|tx| tx.index_entries(Index::JobQueue, None, 10))
        .expect("read")
        .is_empty()
}

#[tokio::test]
async fn a_message_acknowledged_before_a_stop_is_answered_once_after_the_restart() {
    let fake = FakeOpenAi::start().await;
    let s = start().await;
    let a = ai_tenant(&s, "durable-stop@x.test", &fake).await;
    let agent = id(&create_agent(&s, &a, json!({"name": "Bot"})).await);
    let cid = new_conversation(&s, &a.token, &agent).await;
    // The model provider blocks: the server stops while the turn waits for it.
    fake.push(Reply::Hang);
    post_async(&s, &a, &cid, "Where is my order?").await;
    assert_eq!(
        fake.wait_for_requests(1, Duration::from_secs(60))
            .await
            .len(),
        1
    );
    let dir = s.stop().await;
    let (jobs, answers) = stored(dir.path(), &a.tenant_id);
    assert!(answers.is_empty(), "no answer yet: {answers:?}");
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        jobs[0].status,
        JobStatus::Queued,
        "the turn waits for the restart"
    );

    // Restart with a working provider: the turn resumes and answers.
    fake.push(Reply::text("It ships today."));
    let s = start_in(dir, |_| {}).await;
    let answers = wait_ai_messages(&s, &a, &cid, 1).await;
    assert_eq!(answers[0]["content"], "It ships today.");
    assert_eq!(answers[0]["status"], "sent");
    // The answer is committed before its job is marked done: a stop in between leaves the
    // job queued (the next start would skip it as answered), so wait for the job itself.
    let t = TenantId::parse(&a.tenant_id).expect("tenant");
    let job = bounded("the resumed turn", s.svc.jobs.finished(&t, &jobs[0].id))
        .await
        .expect("the resumed turn ends");
    assert_eq!(job.status, JobStatus::Done);
    let dir = s.stop().await;
    let (jobs, answers) = stored(dir.path(), &a.tenant_id);
    assert_eq!(answers.len(), 1, "exactly one answer: {answers:?}");
    assert_eq!(jobs[0].status, JobStatus::Done);
    assert!(queue_is_empty(dir.path()), "nothing left to resume");
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2);
    assert!(
        reqs[1]["messages"]
            .to_string()
            .contains("Where is my order?"),
        "the resumed turn answers the acknowledged message"
    );
}

#[tokio::test]
async fn a_turn_retried_after_its_answer_was_stored_does_not_answer_again() {
    let fake = FakeOpenAi::start().await;
    let s = start().await;
    let a = ai_tenant(&s, "durable-once@x.test", &fake).await;
    let agent = id(&create_agent(&s, &a, json!({"name": "Bot"})).await);
    let cid = new_conversation(&s, &a.token, &agent).await;
    fake.push(Reply::text("Only once."));
    let r = say(&s, &a.token, &cid, "Hello?").await;
    assert_eq!(r.body["reply"]["content"], "Only once.", "{}", r.text);
    let dir = s.stop().await;
    // The process died after the answer's commit, before the job was marked done.
    let (jobs, _) = stored(dir.path(), &a.tenant_id);
    assert_eq!(jobs.len(), 1);
    crash_during(dir.path(), &a.tenant_id, &jobs[0], 1);

    fake.push(Reply::text("A second answer!"));
    let s = start_in(dir, |_| {}).await;
    let t = TenantId::parse(&a.tenant_id).expect("tenant");
    let job = bounded("the resumed turn", s.svc.jobs.finished(&t, &jobs[0].id))
        .await
        .expect("the resumed turn ends");
    assert_eq!(job.status, JobStatus::Done);
    let answers = ai_messages(&s, &a, &cid).await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0]["content"], "Only once.");
    assert_eq!(fake.requests().len(), 1, "the model was not asked again");
    s.stop().await;
}

#[tokio::test]
async fn a_turn_that_keeps_crashing_the_server_ends_in_a_failed_answer() {
    let fake = FakeOpenAi::start().await;
    let s = start().await;
    let a = ai_tenant(&s, "durable-crash@x.test", &fake).await;
    let agent = id(&create_agent(&s, &a, json!({"name": "Bot"})).await);
    let cid = new_conversation(&s, &a.token, &agent).await;
    fake.push(Reply::Hang);
    post_async(&s, &a, &cid, "Are you there?").await;
    fake.wait_for_requests(1, Duration::from_secs(60)).await;
    let dir = s.stop().await;
    let (jobs, _) = stored(dir.path(), &a.tenant_id);
    crash_during(
        dir.path(),
        &a.tenant_id,
        &jobs[0],
        aigentable::jobs::MAX_ATTEMPTS,
    );

    let s = start_in(dir, |_| {}).await;
    let answers = wait_ai_messages(&s, &a, &cid, 1).await;
    assert_eq!(answers[0]["status"], "failed", "{answers:?}");
    assert!(
        answers[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("gave up")),
        "the reason is shown: {answers:?}"
    );
    assert_eq!(fake.requests().len(), 1, "not retried again");
    s.stop().await;
}

#[tokio::test]
async fn turns_of_one_conversation_run_one_at_a_time_in_order() {
    let fake = FakeOpenAi::start().await;
    // Slow answers: a second turn running alongside the first would start before it ends.
    fake.set_chunk_delay(Duration::from_millis(100));
    let s = start().await;
    let a = ai_tenant(&s, "durable-order@x.test", &fake).await;
    let agent = id(&create_agent(&s, &a, json!({"name": "Bot"})).await);
    let cid = new_conversation(&s, &a.token, &agent).await;
    let caller = s.svc.authenticate_access(&a.token).expect("caller");
    let mut sub = s.svc.events.subscribe(&caller);
    fake.push(Reply::text("answer one"));
    fake.push(Reply::text("answer two"));
    post_async(&s, &a, &cid, "first").await;
    post_async(&s, &a, &cid, "second").await;

    // Follow the events until both answers are stored.
    let mut turns: Vec<(JobId, JobStatus)> = Vec::new();
    let mut answers = Vec::new();
    while answers.len() < 2 {
        match bounded("the next event", sub.recv()).await {
            Recv::Event(e) => match &*e {
                Event::JobProgress {
                    job_id,
                    kind,
                    status,
                    ..
                } if kind == "turn" => turns.push((job_id.clone(), *status)),
                Event::MessageCreated { message, .. } if message.role == MessageRole::Ai => {
                    answers.push(message.content.clone())
                }
                _ => {}
            },
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(answers, ["answer one", "answer two"]);
    let reqs = fake.requests();
    let last_user = |r: &Value| {
        r["messages"]
            .as_array()
            .and_then(|m| m.last())
            .map(|m| m["content"].clone())
    };
    assert_eq!(last_user(&reqs[0]), Some(json!("first")));
    assert_eq!(last_user(&reqs[1]), Some(json!("second")));
    // The second turn started only after the first one ended.
    let first = turns[0].0.clone();
    let first_done = turns
        .iter()
        .position(|(j, st)| j == &first && *st == JobStatus::Done);
    let second_started = turns
        .iter()
        .position(|(j, st)| j != &first && *st == JobStatus::Running);
    match (first_done, second_started) {
        (Some(d), Some(r)) => assert!(d < r, "{turns:?}"),
        // The second turn's end may not be seen yet; its start must be.
        _ => panic!("missing turn events: {turns:?}"),
    }
    s.stop().await;
}

/// Two customer messages queued back to back: the answer to the first is stored after the
/// second arrived, and the turn answering the second still sees it in its history.
#[tokio::test]
async fn the_second_of_two_queued_messages_sees_the_answer_to_the_first() {
    let fake = FakeOpenAi::start().await;
    let s = start().await;
    let a = ai_tenant(&s, "durable-history@x.test", &fake).await;
    let agent = id(&create_agent(&s, &a, json!({"name": "Bot"})).await);
    let cid = new_conversation(&s, &a.token, &agent).await;
    fake.push(Reply::text("answer one"));
    fake.push(Reply::text("answer two"));
    // The first turn is upstream (held there) when the second message is acknowledged.
    fake.hold();
    post_async(&s, &a, &cid, "first").await;
    let reqs = fake.wait_for_requests(1, Duration::from_secs(60)).await;
    assert_eq!(reqs.len(), 1, "the first turn never called the model");
    post_async(&s, &a, &cid, "second").await;
    fake.release();
    let answers = wait_ai_messages(&s, &a, &cid, 2).await;
    assert_eq!(answers[0]["content"], "answer one");
    assert_eq!(answers[1]["content"], "answer two");

    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    let chat = |r: &Value| -> Vec<(String, String)> {
        r["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter(|m| m["role"] != "system")
            .map(|m| {
                (
                    m["role"].as_str().unwrap_or("").to_string(),
                    m["content"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    let pair = |r: &str, c: &str| (r.to_string(), c.to_string());
    assert_eq!(chat(&reqs[0]), [pair("user", "first")]);
    assert_eq!(
        chat(&reqs[1]),
        [
            pair("user", "first"),
            pair("assistant", "answer one"),
            pair("user", "second"),
        ],
        "the second turn's history misses the first answer"
    );
    s.stop().await;
}
