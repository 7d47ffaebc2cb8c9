use super::*;
use crate::model::{ConversationMode, ConversationStatus, Customer};
use crate::types::{AgentId, Role, now};

fn caller(t: &TenantId) -> Caller {
    Caller::test_staff(t, Role::TenantUser)
}

fn conversation(t: &TenantId) -> Conversation {
    Conversation {
        id: ConversationId::new(),
        tenant_id: t.clone(),
        agent_id: AgentId::new(),
        channel_id: None,
        customer: Customer::default(),
        status: ConversationStatus::Open,
        mode: ConversationMode::Ai,
        assignee_id: None,
        last_message_at: None,
        message_count: 0,
        created_at: now(),
        closed_at: None,
        last_seq: 0,
        rating: None,
    }
}

fn job_event(t: &TenantId, progress: u8) -> Event {
    Event::JobProgress {
        tenant_id: t.clone(),
        job_id: JobId::new(),
        kind: "test".into(),
        status: JobStatus::Running,
        progress,
    }
}

fn next(s: &mut Subscription) -> Option<Arc<Event>> {
    match s.try_recv() {
        Some(Recv::Event(e)) => Some(e),
        None => None,
        Some(other) => panic!("unexpected {other:?}"),
    }
}

#[test]
fn subscribers_receive_only_their_own_tenants_events() {
    let bus = Bus::new(16);
    let (a, b) = (TenantId::new(), TenantId::new());
    let mut sa = bus.subscribe(&caller(&a));
    let mut sb = bus.subscribe(&caller(&b));
    bus.publish(Event::ConversationCreated {
        conversation: conversation(&a),
    });
    bus.publish(job_event(&b, 7));
    let e = next(&mut sa).expect("A sees its event");
    assert_eq!(e.tenant(), &a);
    assert_eq!(e.name(), "conversation:created");
    assert!(next(&mut sa).is_none(), "A sees nothing of B");
    let e = next(&mut sb).expect("B sees its event");
    assert!(matches!(*e, Event::JobProgress { progress: 7, .. }));
    assert!(next(&mut sb).is_none(), "B sees nothing of A");
}

#[test]
fn a_slow_subscriber_is_told_how_many_events_it_missed() {
    let bus = Bus::new(2);
    let t = TenantId::new();
    let mut s = bus.subscribe(&caller(&t));
    for p in 0..5 {
        bus.publish(job_event(&t, p));
    }
    assert!(matches!(s.try_recv(), Some(Recv::Lagged(3))));
    assert!(matches!(
        next(&mut s).as_deref(),
        Some(Event::JobProgress { progress: 3, .. })
    ));
}

#[test]
fn channels_without_subscribers_are_dropped() {
    let bus = Bus::new(4);
    let t = TenantId::new();
    bus.publish(job_event(&t, 1));
    assert_eq!(bus.channel_count(), 0, "publishing alone creates nothing");
    drop(bus.subscribe(&caller(&t)));
    assert_eq!(bus.channel_count(), 1);
    bus.publish(job_event(&t, 2));
    assert_eq!(bus.channel_count(), 0, "the next publish forgets it");
}

#[test]
fn conversation_changes_name_the_fields_that_changed() {
    let t = TenantId::new();
    let before = conversation(&t);
    assert!(Event::conversation_changed(&before, &before).is_none());
    let mut after = before.clone();
    after.status = ConversationStatus::Closed;
    after.mode = ConversationMode::Human;
    after.message_count += 1;
    match Event::conversation_changed(&before, &after) {
        Some(Event::ConversationChanged { changed, .. }) => assert_eq!(
            changed,
            vec![ConversationField::Status, ConversationField::Mode]
        ),
        other => panic!("unexpected {other:?}"),
    }
}
