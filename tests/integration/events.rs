//! The event bus seen from outside the domain: writes over REST publish after commit, and a
//! subscriber only ever receives its own tenant's events.

use crate::common::*;
use aigentable::events::{ConversationField, Event, Recv, Subscription};
use aigentable::model::MessageRole;
use serde_json::json;
use std::sync::Arc;

async fn subscribe(s: &Server, a: &Account) -> Subscription {
    let caller = s
        .svc
        .authenticate_access(&a.token)
        .expect("a valid access token");
    s.svc.events.subscribe(&caller)
}

async fn next(sub: &mut Subscription) -> Arc<Event> {
    match bounded("the next event", sub.recv()).await {
        Recv::Event(e) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

async fn conversation(s: &Server, a: &Account) -> String {
    let agent = id(&create_agent(s, a, json!({"name": "Bot"})).await);
    let r = s
        .post(
            "/api/conversations",
            Some(&a.token),
            json!({"agentId": agent, "customer": {"name": "Carla"}}),
        )
        .await;
    r.expect(201);
    id(&r.body)
}

#[tokio::test]
async fn subscribers_see_their_tenants_writes_and_nothing_else() {
    let s = start().await;
    let a = s.register("events-a@x.test", "Shop A").await;
    let b = s.register("events-b@x.test", "Shop B").await;
    let mut sub_a = subscribe(&s, &a).await;
    let mut sub_b = subscribe(&s, &b).await;

    // A: a conversation and a message from a person of the team, over REST.
    let cid = conversation(&s, &a).await;
    let r = s
        .post(
            &format!("/api/conversations/{cid}/messages"),
            Some(&a.token),
            json!({"content": "We are on it.", "role": "human"}),
        )
        .await;
    r.expect(201);
    let e = next(&mut sub_a).await;
    assert!(
        matches!(&*e, Event::ConversationCreated { conversation } if conversation.id.as_str() == cid),
        "{e:?}"
    );
    let e = next(&mut sub_a).await;
    match &*e {
        Event::MessageCreated {
            conversation,
            message,
        } => {
            assert_eq!(e.name(), "message:created");
            assert_eq!(message.content, "We are on it.");
            assert_eq!(message.role, MessageRole::Human);
            assert_eq!(conversation.id.as_str(), cid);
            assert_eq!(
                conversation.message_count, 1,
                "the summary is the stored one"
            );
            assert_eq!(message.tenant_id.as_str(), a.tenant_id);
        }
        other => panic!("expected message:created, got {other:?}"),
    }
    // The person's reply took the conversation from the AI: mode and assignee changed.
    let e = next(&mut sub_a).await;
    match &*e {
        Event::ConversationChanged {
            conversation,
            changed,
        } => {
            assert_eq!(conversation.id.as_str(), cid);
            assert!(
                changed.contains(&ConversationField::Mode)
                    && changed.contains(&ConversationField::Assignee),
                "{changed:?}"
            );
        }
        other => panic!("expected conversation:changed, got {other:?}"),
    }

    // B writes after A: B's first event is its own, so none of A's came before it.
    let cid_b = conversation(&s, &b).await;
    let e = next(&mut sub_b).await;
    assert!(
        matches!(&*e, Event::ConversationCreated { conversation } if conversation.id.as_str() == cid_b),
        "B's subscriber received {e:?}"
    );
    assert!(sub_b.try_recv().is_none(), "nothing else for B");

    // A closes after B's write: A's next event is the close, so B's write never reached A.
    s.put(
        &format!("/api/conversations/{cid}/close"),
        &a.token,
        json!({}),
    )
    .await
    .expect(200);
    let e = next(&mut sub_a).await;
    assert_eq!(e.name(), "conversation:changed", "{e:?}");
    assert!(
        matches!(&*e, Event::ConversationChanged { conversation, .. } if conversation.id.as_str() == cid),
        "{e:?}"
    );
    assert!(sub_a.try_recv().is_none(), "nothing else for A");
}

#[tokio::test]
async fn assigning_publishes_the_note_and_the_change() {
    let s = start().await;
    let a = s.register("events-assign@x.test", "Shop").await;
    let cid = conversation(&s, &a).await;
    let mut sub = subscribe(&s, &a).await;
    s.put(
        &format!("/api/conversations/{cid}/assign"),
        &a.token,
        json!({"userId": a.user_id}),
    )
    .await
    .expect(200);
    let e = next(&mut sub).await;
    assert!(
        matches!(&*e, Event::MessageCreated { message, .. } if message.role == MessageRole::System),
        "{e:?}"
    );
    match &*next(&mut sub).await {
        Event::ConversationChanged {
            conversation,
            changed,
        } => {
            assert_eq!(
                conversation.assignee_id.as_ref().map(|u| u.as_str()),
                Some(a.user_id.as_str())
            );
            use aigentable::events::ConversationField as F;
            assert!(
                changed.contains(&F::Mode) && changed.contains(&F::Assignee),
                "{changed:?}"
            );
        }
        other => panic!("expected conversation:changed, got {other:?}"),
    }
}
