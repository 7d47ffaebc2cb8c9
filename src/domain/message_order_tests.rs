//! Commit order (`seq`), idempotent resends (`clientId`) and replay (`messages_since`).

use super::Error;
use super::agents::AgentInput;
use super::analytics::{Outcome, TurnStats};
use super::caller_tests::{Shop, named, shop};
use crate::auth::Caller;
use crate::model::*;
use crate::types::*;

fn answer(conv: &Conversation, content: &str) -> Message {
    Message {
        id: MessageId::new(),
        tenant_id: conv.tenant_id.clone(),
        conversation_id: conv.id.clone(),
        role: MessageRole::Ai,
        content: content.into(),
        citations: vec![],
        usage: Some(Usage::default()),
        status: MessageStatus::Sent,
        error: None,
        error_code: None,
        author_id: None,
        created_at: now(),
        seq: 0,
        client_id: None,
        attachments: vec![],
    }
}

#[test]
fn seq_is_commit_order_and_replay_follows_it() {
    let Shop {
        s,
        tenant,
        admin,
        agent,
        dir: _dir,
    } = shop(AgentInput {
        name: Some("Support".into()),
        greeting: Some(Some("Hi!".into())),
        ..Default::default()
    });
    let conv = s
        .create_conversation(&admin, &agent.id, None, Customer::default())
        .expect("conversation");
    let post = |text: &str| {
        s.post_message(&admin, &conv.id, MessageRole::Customer, text, None)
            .expect("posted")
            .message
    };
    let first = post("first");
    // The answer's id is chosen while it streams, before "second" arrives; it commits after.
    let reply = answer(&conv, "answer one");
    let second = post("second");
    let stats = TurnStats {
        agent_id: agent.id.clone(),
        conversation_id: Some(conv.id.clone()),
        outcome: Outcome::Answered,
        prompt_tokens: 1,
        completion_tokens: 1,
        latency_ms: 1,
        upstream_ms: 1,
        new_conversation: false,
        tool_calls: 0,
        question: None,
    };
    s.record_ai_reply(
        &Caller::test_staff(&tenant.id, Role::TenantAdmin),
        &reply,
        None,
        &stats,
        None,
    )
    .expect("answer stored");
    assert!(
        reply.id < second.id,
        "the answer's id predates the second message"
    );

    let all = s
        .messages_since(&admin, &conv.id, None, 100)
        .expect("replay from the start");
    let contents: Vec<_> = all.messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["Hi!", "first", "second", "answer one"]);
    let seqs: Vec<_> = all.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_eq!(all.conversation.last_seq, 4);
    assert_eq!(all.conversation.message_count, 4);
    assert!(!all.more);

    // After `second`: the answer committed later, although its id is older.
    let since = s
        .messages_since(&admin, &conv.id, Some(&second.id), 100)
        .expect("replay");
    assert_eq!(since.messages.len(), 1);
    assert_eq!(since.messages[0].id, reply.id);
    // Caught up.
    let none = s
        .messages_since(&admin, &conv.id, Some(&reply.id), 100)
        .expect("replay");
    assert!(none.messages.is_empty() && !none.more);
    // Paged: two at a time, `more` until the end.
    let page = s
        .messages_since(&admin, &conv.id, Some(&first.id), 1)
        .expect("page");
    assert_eq!(page.messages[0].id, second.id);
    assert!(page.more);
    // A since id of another conversation is refused, not read from the other one.
    let other = s
        .create_conversation(&admin, &agent.id, None, Customer::default())
        .expect("other");
    assert!(matches!(
        s.messages_since(&admin, &other.id, Some(&first.id), 10),
        Err(Error::Validation(_))
    ));
    // A visitor of the other conversation cannot read this one.
    let visitor = Caller::widget_visitor(&Visitor {
        id: VisitorId::new(),
        tenant_id: other.tenant_id.clone(),
        channel_id: ChannelId::new(),
        token_hashes: vec![],
        name: None,
        email: None,
        external_id: None,
        conversation_id: Some(other.id.clone()),
        created_at: now(),
        last_seen_at: now(),
    });
    assert!(matches!(
        s.messages_since(&visitor, &conv.id, None, 10),
        Err(Error::NotFound("conversation"))
    ));
    // Another tenant's caller: the same answer as a missing conversation.
    let stranger = Caller::test_staff(&TenantId::new(), Role::TenantAdmin);
    assert!(matches!(
        s.messages_since(&stranger, &conv.id, None, 10),
        Err(Error::NotFound("conversation"))
    ));
}

#[test]
fn a_resend_with_the_same_client_id_stores_nothing_new() {
    let Shop {
        s,
        tenant: _,
        admin,
        agent,
        dir: _dir,
    } = shop(named("Support"));
    let conv = s
        .create_conversation(&admin, &agent.id, None, Customer::default())
        .expect("conversation");
    let first = s
        .post_message(
            &admin,
            &conv.id,
            MessageRole::Customer,
            "hello",
            Some("c-1"),
        )
        .expect("posted");
    assert!(!first.duplicate);
    assert!(first.turn_job.is_some(), "an AI turn is queued");
    assert_eq!(first.message.client_id.as_deref(), Some("c-1"));
    let again = s
        .post_message(
            &admin,
            &conv.id,
            MessageRole::Customer,
            "hello",
            Some("c-1"),
        )
        .expect("resent");
    assert!(again.duplicate);
    assert_eq!(again.message.id, first.message.id);
    assert!(again.turn_job.is_none(), "no second turn");
    assert_eq!(again.conversation.message_count, 1);
    // The same key in another conversation is another message.
    let other = s
        .create_conversation(&admin, &agent.id, None, Customer::default())
        .expect("other");
    let there = s
        .post_message(
            &admin,
            &other.id,
            MessageRole::Customer,
            "hello",
            Some("c-1"),
        )
        .expect("posted");
    assert!(!there.duplicate);
    assert_ne!(there.message.id, first.message.id);
    // Keys are bounded.
    assert!(matches!(
        s.post_message(
            &admin,
            &conv.id,
            MessageRole::Customer,
            "x",
            Some(&"k".repeat(65))
        ),
        Err(Error::Validation(_))
    ));
    assert!(matches!(
        s.post_message(&admin, &conv.id, MessageRole::Customer, "x", Some("")),
        Err(Error::Validation(_))
    ));
    let stored = s
        .messages_since(&admin, &conv.id, None, 10)
        .expect("messages");
    assert_eq!(stored.messages.len(), 1);
}
