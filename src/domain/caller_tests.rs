//! The domain's checks for callers that are not people or keys: a channel's webhook, a
//! widget visitor and a background job each do only their narrow thing.

use super::agents::AgentInput;
use super::{Error, PageReq, Services};
use crate::auth::Caller;
use crate::model::*;
use crate::types::*;
use std::sync::Arc;

pub(super) fn services(dir: &std::path::Path) -> Services {
    let config = crate::config::Config {
        data_dir: dir.to_path_buf(),
        ..Default::default()
    };
    let store = Arc::new(crate::store::Store::open(dir, 1 << 20).expect("store"));
    let events = crate::events::Bus::new(16);
    Services {
        store: store.clone(),
        keys: crate::auth::tokens::Keys::new(
            &[7; 32],
            &[8; 32],
            std::time::Duration::from_secs(600),
        ),
        sealer: crate::auth::seal::Sealer::from_secret("a test data key of enough length"),
        config: Arc::new(config),
        indexes: Default::default(),
        jobs: crate::jobs::Jobs::new(store, events.clone()),
        events,
        clock: crate::types::Clock::system(),
        audit_failures: Default::default(),
    }
}

/// The usual world of a domain test: services on a fresh data directory, one tenant
/// ("Shop"), its admin and one agent made from `agent`.
pub(super) struct Shop {
    pub s: Services,
    pub tenant: Tenant,
    pub admin: Caller,
    pub agent: Agent,
    /// Kept so the data directory lives as long as the services.
    pub dir: tempfile::TempDir,
}

pub(super) fn shop(agent: AgentInput) -> Shop {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = services(dir.path());
    let root = Caller::test_staff(&TenantId::platform(), Role::PlatformAdmin);
    let tenant = s.create_tenant(&root, "Shop", None).expect("tenant");
    let admin = Caller::test_staff(&tenant.id, Role::TenantAdmin);
    let agent = s.create_agent(&admin, agent).expect("agent");
    Shop {
        s,
        tenant,
        admin,
        agent,
        dir,
    }
}

/// An agent input with only a name.
pub(super) fn named(name: &str) -> AgentInput {
    AgentInput {
        name: Some(name.into()),
        ..Default::default()
    }
}

fn job(tenant: &TenantId) -> Job {
    Job {
        id: JobId::new(),
        tenant_id: tenant.clone(),
        kind: "conversation.turn".into(),
        payload: serde_json::Value::Null,
        status: JobStatus::Running,
        progress: 0,
        attempts: 1,
        error: None,
        error_code: None,
        serial: None,
        created_at: now(),
        updated_at: now(),
    }
}

fn forbidden(r: Result<impl std::fmt::Debug, Error>) {
    match r {
        Err(Error::Forbidden("forbidden", _)) => {}
        other => panic!("expected forbidden, got {other:?}"),
    }
}

fn not_found(r: Result<impl std::fmt::Debug, Error>) {
    match r {
        Err(Error::NotFound("conversation")) => {}
        other => panic!("expected conversation not found, got {other:?}"),
    }
}

#[test]
fn webhooks_visitors_and_jobs_do_only_their_narrow_thing() {
    let Shop {
        s,
        tenant,
        admin,
        agent,
        dir: _dir,
    } = shop(named("Support"));
    let channel = Channel {
        id: ChannelId::new(),
        tenant_id: tenant.id.clone(),
        agent_id: Some(agent.id.clone()),
        kind: ChannelKind::Web,
        name: "site".into(),
        status: ChannelStatus::Active,
        last_error: None,
        web: None,
        config: serde_json::Value::Null,
        credentials: Default::default(),
        created_at: now(),
        updated_at: now(),
    };
    s.store
        .write(|tx| tx.put(&channel))
        .expect("channel stored");
    let page = PageReq {
        limit: 10,
        cursor: None,
    };

    // A channel's webhook opens conversations and posts the customer's messages, nothing else.
    let hook = Caller::channel_webhook(&channel);
    let conv = s
        .create_conversation(&hook, &agent.id, Some(&channel.id), Customer::default())
        .expect("webhook opens a conversation");
    s.post_message(&hook, &conv.id, MessageRole::Customer, "hello", None)
        .expect("webhook posts a customer message");
    forbidden(s.post_message(&hook, &conv.id, MessageRole::Human, "I am staff", None));
    forbidden(s.list_conversations(&hook, &Default::default(), &page));
    forbidden(s.list_messages(&hook, &conv.id, &page));
    forbidden(s.get_agent(&hook, &agent.id));
    forbidden(s.effective_ai(&hook).map(|_| ()));

    // A visitor reads and posts in its one conversation; others do not exist for it.
    let other = s
        .create_conversation(&admin, &agent.id, None, Customer::default())
        .expect("another conversation");
    let visitor = Caller::widget_visitor(&Visitor {
        id: VisitorId::new(),
        tenant_id: tenant.id.clone(),
        channel_id: channel.id.clone(),
        token_hashes: vec![],
        name: None,
        email: None,
        external_id: None,
        conversation_id: Some(conv.id.clone()),
        created_at: now(),
        last_seen_at: now(),
    });
    let msgs = s
        .list_messages(&visitor, &conv.id, &page)
        .expect("visitor reads its conversation");
    assert_eq!(msgs.items.len(), 1);
    s.post_message(
        &visitor,
        &conv.id,
        MessageRole::Customer,
        "still there?",
        None,
    )
    .expect("visitor posts in its conversation");
    not_found(s.list_messages(&visitor, &other.id, &page));
    not_found(s.post_message(&visitor, &other.id, MessageRole::Customer, "hi", None));
    forbidden(s.post_message(&visitor, &conv.id, MessageRole::Human, "x", None));
    forbidden(s.create_conversation(&visitor, &agent.id, None, Customer::default()));
    forbidden(s.list_conversations(&visitor, &Default::default(), &page));
    forbidden(s.get_conversation(&visitor, &conv.id));
    forbidden(s.effective_ai(&visitor).map(|_| ()));

    // A job answers for its tenant: the agent, the model settings, the turn's context;
    // never management.
    let worker = Caller::for_job(&job(&tenant.id));
    s.get_agent(&worker, &agent.id)
        .expect("job reads the agent");
    s.effective_ai(&worker)
        .expect("job reads the model settings");
    let last = s
        .list_messages(&admin, &conv.id, &page)
        .expect("messages")
        .items[0]
        .id
        .clone();
    let (a, earlier) = s
        .turn_context(&worker, &conv.id, &agent.id, &last, 10)
        .expect("job loads a turn");
    assert_eq!(a.id, agent.id);
    assert_eq!(earlier.len(), 1, "the message before the last one");
    forbidden(s.create_agent(
        &worker,
        AgentInput {
            name: Some("x".into()),
            ..Default::default()
        },
    ));
    forbidden(s.list_api_keys(&worker, &page));
    forbidden(s.get_ai_settings(&worker));

    // A job of another tenant sees nothing of this one.
    let stranger = Caller::for_job(&job(&TenantId::new()));
    assert!(matches!(
        s.get_agent(&stranger, &agent.id),
        Err(Error::NotFound("agent"))
    ));
}

/// A turn's history is what the conversation holds when the turn starts, except its own
/// message and the customer messages after it (their own turns answer them): the answer to
/// an earlier message counts even when it was stored after this turn's message.
#[test]
fn a_turns_history_skips_later_customer_messages_but_not_later_answers() {
    let Shop {
        s,
        tenant,
        admin,
        agent,
        dir: _dir,
    } = shop(named("Support"));
    let conv = s
        .create_conversation(&admin, &agent.id, None, Customer::default())
        .expect("conversation");
    let post = |text: &str| {
        s.post_message(&admin, &conv.id, MessageRole::Customer, text, None)
            .expect("posted")
            .message
    };
    let first = post("first");
    let second = post("second");
    let worker = Caller::for_job(&job(&tenant.id));
    let contents = |m: &MessageId| -> Vec<String> {
        let (_, earlier) = s
            .turn_context(&worker, &conv.id, &agent.id, m, 10)
            .expect("turn context");
        earlier.into_iter().map(|m| m.content).collect()
    };
    // The first turn does not see the second message, queued behind it.
    assert_eq!(contents(&first.id), Vec::<String>::new());
    // The first answer is stored after the second message arrived.
    let answer = Message {
        id: MessageId::new(),
        tenant_id: tenant.id.clone(),
        conversation_id: conv.id.clone(),
        role: MessageRole::Ai,
        content: "answer one".into(),
        citations: vec![],
        usage: None,
        status: MessageStatus::Sent,
        error: None,
        error_code: None,
        author_id: None,
        created_at: now(),
        seq: 0,
        client_id: None,
        attachments: vec![],
    };
    s.store.write(|tx| tx.put(&answer)).expect("answer stored");
    let third = post("third");
    // The second turn sees both earlier exchanges' messages (newest first), not the third.
    assert_eq!(contents(&second.id), ["answer one", "first"]);
    // The third sees everything before it.
    assert_eq!(contents(&third.id), ["answer one", "second", "first"]);
}
