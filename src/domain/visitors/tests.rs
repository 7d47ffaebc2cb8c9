//! Visitors of a web widget: tokens, origins, identity verification, their conversations
//! and ratings, against a real store.

use super::*;
use crate::domain::caller_tests::{Shop, named, shop};
use crate::domain::channels::{ChannelInput, WebInput};

struct World {
    s: Services,
    admin: Caller,
    channel: Channel,
    _dir: tempfile::TempDir,
}

fn world(web: WebInput) -> World {
    let Shop {
        s,
        tenant: _,
        admin,
        agent,
        dir,
    } = shop(named("Ava"));
    let channel = s
        .create_channel(
            &admin,
            ChannelInput {
                kind: Some(ChannelKind::Web),
                name: Some("Site".into()),
                agent_id: Some(agent.id.clone()),
                web: Some(web),
                ..Default::default()
            },
        )
        .expect("channel")
        .channel;
    World {
        s,
        admin,
        channel,
        _dir: dir,
    }
}

fn origins(list: &[&str]) -> WebInput {
    WebInput {
        allowed_origins: Some(list.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    }
}

impl World {
    fn key(&self) -> String {
        self.channel.web.as_ref().expect("web").widget_key.clone()
    }
    fn hello(&self, token: Option<&str>, hello: VisitorHello) -> Result<VisitorSession> {
        self.s
            .authenticate_visitor(&self.key(), token, Some("https://shop.example.com"), hello)
    }
    fn new_visitor(&self) -> VisitorSession {
        self.hello(None, VisitorHello::default()).expect("visitor")
    }
}

fn code(r: Result<impl std::fmt::Debug>) -> String {
    match r {
        Err(Error::Unauthorized(c, _))
        | Err(Error::Forbidden(c, _))
        | Err(Error::Invalid(c, _)) => c.to_string(),
        Err(Error::Conflict(c, _, _)) => c.to_string(),
        Err(Error::NotFound(w)) => format!("{w}_not_found"),
        Err(Error::Validation(f)) => format!("validation:{}", f[0].field),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn a_token_brings_back_the_same_visitor_and_nothing_else_does() {
    let w = world(origins(&["https://shop.example.com"]));
    let first = w.new_visitor();
    let token = first.new_token.clone().expect("a new visitor gets a token");
    assert!(first.caller.is_visitor() && first.caller.visitor().is_none());
    assert_eq!(first.agent_name.as_deref(), Some("Ava"));
    // Stored hashed only.
    assert!(!first.visitor.token_hashes.is_empty());
    assert!(
        first
            .visitor
            .token_hashes
            .iter()
            .all(|h| !h.contains(&token))
    );

    let again = w
        .hello(Some(&token), VisitorHello::default())
        .expect("again");
    assert_eq!(again.visitor.id, first.visitor.id);
    assert!(again.new_token.is_none(), "a known browser keeps its token");

    assert_eq!(
        code(w.hello(Some("vt_forged"), VisitorHello::default())),
        "unauthorized"
    );
    // Another widget's visitor token is not a token of this one.
    let other =
        w.s.create_channel(
            &w.admin,
            ChannelInput {
                kind: Some(ChannelKind::Web),
                name: Some("Other".into()),
                agent_id: w.channel.agent_id.clone(),
                web: Some(origins(&["https://shop.example.com"])),
                ..Default::default()
            },
        )
        .expect("other channel")
        .channel;
    let other_key = other.web.expect("web").widget_key;
    assert_eq!(
        code(w.s.authenticate_visitor(
            &other_key,
            Some(&token),
            Some("https://shop.example.com"),
            VisitorHello::default()
        )),
        "unauthorized"
    );
    // Tokens expire once the visitor has not been seen for the configured time.
    w.s.clock.advance(std::time::Duration::from_secs(
        u64::from(w.s.config.visitor_token_ttl_days + 1) * 86_400,
    ));
    assert_eq!(
        code(w.hello(Some(&token), VisitorHello::default())),
        "unauthorized"
    );
}

#[test]
fn origins_keys_and_paused_widgets() {
    let w = world(origins(&["https://shop.example.com"]));
    let key = w.key();
    let hello = VisitorHello::default;
    assert_eq!(
        code(w.s.authenticate_visitor(&key, None, Some("https://evil.example.net"), hello())),
        "origin_not_allowed"
    );
    assert_eq!(
        code(w.s.authenticate_visitor("wk_nope", None, None, hello())),
        "widget_not_found"
    );
    // No Origin (not a cross-site browser request) and the server's own origin pass.
    w.s.authenticate_visitor(&key, None, None, hello())
        .expect("no origin");
    let own = origin_of_url(&w.s.public_url()).expect("own origin");
    w.s.authenticate_visitor(&key, None, Some(&own), hello())
        .expect("own origin");
    w.s.update_channel(
        &w.admin,
        &w.channel.id,
        ChannelInput {
            status: Some(ChannelStatus::Paused),
            ..Default::default()
        },
    )
    .expect("pause");
    assert_eq!(code(w.hello(None, hello())), "channel_paused");
}

#[test]
fn identity_required_refuses_unsigned_and_forged_and_links_signed_visitors() {
    let w = world(WebInput {
        identity: Some(FieldMode::Required),
        ..origins(&["https://shop.example.com"])
    });
    let secret =
        w.s.identity_secret(&w.channel)
            .expect("a secret was generated");
    let signed = |ext: &str| VisitorHello {
        identity: Some(Identity {
            external_id: ext.into(),
            hash: identity_hash(&secret, ext),
        }),
        ..Default::default()
    };
    assert_eq!(
        code(w.hello(None, VisitorHello::default())),
        "identity_required"
    );
    let forged = VisitorHello {
        identity: Some(Identity {
            external_id: "user-1".into(),
            hash: identity_hash("not the secret", "user-1"),
        }),
        ..Default::default()
    };
    assert_eq!(code(w.hello(None, forged)), "identity_invalid");
    // Someone else's hash for this id does not verify either.
    let swapped = VisitorHello {
        identity: Some(Identity {
            external_id: "user-1".into(),
            hash: identity_hash(&secret, "user-2"),
        }),
        ..Default::default()
    };
    assert_eq!(code(w.hello(None, swapped)), "identity_invalid");

    let laptop = w.hello(None, signed("user-1")).expect("signed");
    assert_eq!(laptop.visitor.external_id.as_deref(), Some("user-1"));
    let laptop_token = laptop.new_token.clone().expect("token");
    // A second device of the same person reaches the same visitor, with its own token.
    let phone = w.hello(None, signed("user-1")).expect("second device");
    assert_eq!(phone.visitor.id, laptop.visitor.id);
    let phone_token = phone.new_token.expect("token of the phone");
    assert_ne!(phone_token, laptop_token);
    w.hello(Some(&laptop_token), signed("user-1"))
        .expect("the first device still works");
    // The token alone is not enough in required mode.
    assert_eq!(
        code(w.hello(Some(&laptop_token), VisitorHello::default())),
        "identity_required"
    );
    // Another person signing in on the laptop gets their own visitor.
    let other = w
        .hello(Some(&laptop_token), signed("user-2"))
        .expect("user 2");
    assert_ne!(other.visitor.id, laptop.visitor.id);
    assert!(other.new_token.is_some());
    // Rotating the secret invalidates old signatures.
    let rotated =
        w.s.rotate_identity_secret(&w.admin, &w.channel.id)
            .expect("rotate");
    assert!(rotated.new_identity_secret.is_some());
    assert_eq!(code(w.hello(None, signed("user-1"))), "identity_invalid");
}

#[test]
fn optional_identity_links_an_anonymous_visitor_and_unsigned_browsers_lose_it() {
    let w = world(WebInput {
        identity: Some(FieldMode::Optional),
        ..origins(&["https://shop.example.com"])
    });
    let secret = w.s.identity_secret(&w.channel).expect("secret");
    let anon = w.new_visitor();
    let token = anon.new_token.expect("token");
    let signed = VisitorHello {
        identity: Some(Identity {
            external_id: "u-9".into(),
            hash: identity_hash(&secret, "u-9").to_uppercase(),
        }),
        ..Default::default()
    };
    let linked = w.hello(Some(&token), signed).expect("signed in");
    assert_eq!(
        linked.visitor.id, anon.visitor.id,
        "the anonymous visitor is adopted"
    );
    assert_eq!(linked.visitor.external_id.as_deref(), Some("u-9"));
    // Unsigned again (signed out of the site): a fresh anonymous visitor.
    let after = w
        .hello(Some(&token), VisitorHello::default())
        .expect("unsigned");
    assert_ne!(after.visitor.id, anon.visitor.id);
    assert!(after.visitor.external_id.is_none());
}

#[test]
fn visitors_talk_only_in_their_own_conversation() {
    let w = world(WebInput {
        greeting: Some(Some("Hi! How can we help?".into())),
        ..origins(&["https://shop.example.com"])
    });
    let a = w
        .hello(
            None,
            VisitorHello {
                name: Some("Ann".into()),
                email: Some("Ann@Example.com".into()),
                ..Default::default()
            },
        )
        .expect("a");
    let b = w.new_visitor();
    assert!(
        w.s.visitor_conversation(&a.caller)
            .expect("none yet")
            .is_none()
    );

    let (posted, bound) =
        w.s.post_visitor_message(&a.caller, None, "where is my order?", None)
            .expect("first message opens a conversation");
    let conv = posted.conversation.clone();
    assert_eq!(conv.channel_id.as_ref(), Some(&w.channel.id));
    assert_eq!(Some(&conv.agent_id), w.channel.agent_id.as_ref());
    assert_eq!(conv.customer.name.as_deref(), Some("Ann"));
    assert_eq!(conv.customer.email.as_deref(), Some("ann@example.com"));
    assert_eq!(conv.message_count, 2, "the greeting and the message");
    assert_eq!(bound.visitor().map(|(_, c)| c), Some(&conv.id));
    let page = crate::domain::PageReq {
        limit: 10,
        cursor: None,
    };
    let msgs =
        w.s.list_messages(&bound, &conv.id, &page)
            .expect("read own");
    assert_eq!(
        msgs.items.last().map(|m| m.content.as_str()),
        Some("Hi! How can we help?")
    );

    // The same conversation for the next message, named or not; the old unbound caller
    // still works (the record is read again).
    let (p2, _) =
        w.s.post_visitor_message(&a.caller, Some(&conv.id), "hello?", None)
            .expect("second");
    assert_eq!(p2.conversation.id, conv.id);
    assert_eq!(
        w.s.visitor_conversation(&a.caller)
            .expect("open")
            .map(|c| c.id),
        Some(conv.id.clone())
    );

    // Visitor b: a's conversation does not exist for it, whatever it tries.
    assert_eq!(
        code(w.s.post_visitor_message(&b.caller, Some(&conv.id), "let me in", None)),
        "conversation_not_found"
    );
    assert_eq!(
        code(w.s.list_messages(&b.caller, &conv.id, &page)),
        "conversation_not_found"
    );
    assert_eq!(
        code(w.s.rate_conversation(&b.caller, &conv.id, 5, None)),
        "conversation_not_found"
    );
    let (pb, _) =
        w.s.post_visitor_message(&b.caller, None, "hi", None)
            .expect("b's own");
    assert_ne!(pb.conversation.id, conv.id);

    // Closed: the next message starts a new conversation.
    w.s.close_conversation(&w.admin, &conv.id).expect("close");
    assert!(
        w.s.visitor_conversation(&a.caller)
            .expect("closed")
            .is_none()
    );
    let (p3, bound3) =
        w.s.post_visitor_message(&a.caller, None, "one more thing", None)
            .expect("after close");
    assert_ne!(p3.conversation.id, conv.id);
    assert_eq!(bound3.visitor().map(|(_, c)| c), Some(&p3.conversation.id));
    // The closed one is no longer the visitor's.
    assert_eq!(
        code(w.s.list_messages(&bound3, &conv.id, &page)),
        "conversation_not_found"
    );

    // Empty messages do not open conversations.
    let c = w.new_visitor();
    assert_eq!(
        code(w.s.post_visitor_message(&c.caller, None, "  ", None)),
        "validation:content"
    );
    assert!(w.s.visitor_conversation(&c.caller).expect("none").is_none());
}

#[test]
fn required_pre_chat_fields_come_before_the_first_message() {
    let w = world(WebInput {
        pre_chat_email: Some(FieldMode::Required),
        ..origins(&["https://shop.example.com"])
    });
    let v = w.new_visitor();
    assert_eq!(
        code(w.s.post_visitor_message(&v.caller, None, "hi", None)),
        "validation:email"
    );
    let token = v.new_token.expect("token");
    let v = w
        .hello(
            Some(&token),
            VisitorHello {
                email: Some("a@example.com".into()),
                ..Default::default()
            },
        )
        .expect("pre-chat answered");
    w.s.post_visitor_message(&v.caller, None, "hi", None)
        .expect("now it may write");
    assert_eq!(
        code(w.hello(
            Some(&token),
            VisitorHello {
                email: Some("not an email".into()),
                ..Default::default()
            }
        )),
        "validation:email"
    );
}

#[test]
fn a_closed_conversation_is_rated_once_and_the_change_is_published() {
    let w = world(origins(&["https://shop.example.com"]));
    let v = w.new_visitor();
    let (posted, _) =
        w.s.post_visitor_message(&v.caller, None, "thanks", None)
            .expect("post");
    let id = posted.conversation.id.clone();
    assert_eq!(
        code(w.s.rate_conversation(&v.caller, &id, 5, None)),
        "conversation_not_closed"
    );
    w.s.close_conversation(&w.admin, &id).expect("close");
    assert_eq!(
        code(w.s.rate_conversation(&v.caller, &id, 0, None)),
        "validation:rating"
    );
    assert_eq!(
        code(w.s.rate_conversation(&v.caller, &id, 6, None)),
        "validation:rating"
    );
    let long = "x".repeat(MAX_RATING_COMMENT + 1);
    assert_eq!(
        code(w.s.rate_conversation(&v.caller, &id, 4, Some(&long))),
        "validation:comment"
    );
    let mut sub = w.s.events.subscribe(&w.admin);
    let rated =
        w.s.rate_conversation(&v.caller, &id, 4, Some(" quick answer "))
            .expect("rated");
    let r = rated.rating.expect("stored");
    assert_eq!((r.score, r.comment.as_deref()), (4, Some("quick answer")));
    let got = w.s.get_conversation(&w.admin, &id).expect("staff reads it");
    assert_eq!(got.rating.map(|r| r.score), Some(4));
    match sub.try_recv() {
        Some(crate::events::Recv::Event(e)) => match &*e {
            Event::ConversationChanged { changed, .. } => {
                assert_eq!(changed, &vec![crate::events::ConversationField::Rating])
            }
            other => panic!("unexpected event {other:?}"),
        },
        other => panic!("no event: {other:?}"),
    }
    // Staff do not rate on the customer's behalf.
    assert!(matches!(
        w.s.rate_conversation(&w.admin, &id, 5, None),
        Err(Error::Forbidden(..))
    ));
}

#[test]
fn deleting_the_channel_forgets_its_visitors_and_key() {
    let w = world(origins(&["https://shop.example.com"]));
    let v = w.new_visitor();
    let token = v.new_token.expect("token");
    w.s.post_visitor_message(&v.caller, None, "hi", None)
        .expect("post");
    w.s.delete_channel(&w.admin, &w.channel.id).expect("delete");
    assert_eq!(
        code(w.hello(Some(&token), VisitorHello::default())),
        "widget_not_found"
    );
    let left =
        w.s.store
            .read(|tx| tx.scan::<Visitor>(w.admin.tenant(), None, |_| true))
            .expect("scan");
    assert!(left.is_empty());
    assert_eq!(
        w.s.store
            .read(|tx| tx.index_get(Index::WidgetKey, &w.key()))
            .expect("read"),
        None
    );
    assert_eq!(
        code(w.s.post_visitor_message(&v.caller, None, "still?", None)),
        "unauthorized"
    );
}

#[test]
fn identity_hashes_are_hmac_sha256_hex() {
    // RFC 4231 test case 2.
    assert_eq!(
        identity_hash("Jefe", "what do ya want for nothing?"),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    assert!(identity_valid(
        "Jefe",
        "what do ya want for nothing?",
        "5BDCC146BF60754E6A042426089575C75A003F089D2739839DEC58B964EC3843"
    ));
    assert!(!identity_valid(
        "Jefe",
        "what do ya want for nothing?",
        "5bdc"
    ));
}

#[test]
fn idle_visitors_are_forgotten_and_talking_ones_kept_until_their_tokens_expire() {
    let w = world(origins(&["https://shop.example.com"]));
    let quiet = w.new_visitor();
    let talker = w.new_visitor();
    w.s.post_visitor_message(&talker.caller, None, "hi", None)
        .expect("post");
    assert_eq!(
        w.s.sweep_idle_visitors().expect("sweep"),
        0,
        "nobody is idle yet"
    );
    w.s.clock
        .advance(std::time::Duration::from_secs(8 * 86_400));
    assert_eq!(w.s.sweep_idle_visitors().expect("sweep"), 1);
    let token = quiet.new_token.expect("token");
    assert_eq!(
        code(w.hello(Some(&token), VisitorHello::default())),
        "unauthorized"
    );
    let talker_token = talker.new_token.expect("token");
    w.hello(Some(&talker_token), VisitorHello::default())
        .expect("a visitor with a conversation stays");
    w.s.clock.advance(std::time::Duration::from_secs(
        u64::from(w.s.config.visitor_token_ttl_days + 1) * 86_400,
    ));
    assert_eq!(w.s.sweep_idle_visitors().expect("sweep"), 1);
    assert!(
        w.s.store
            .read(|tx| tx.scan::<Visitor>(w.admin.tenant(), None, |_| true))
            .expect("scan")
            .is_empty()
    );
    assert_eq!(
        w.s.store
            .read(|tx| tx.index_get(Index::VisitorToken, &w.s.keys.hash_token(&talker_token)))
            .expect("read"),
        None,
        "its token rows go too"
    );
}
