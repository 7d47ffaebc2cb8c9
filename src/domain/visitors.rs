//! Website-widget visitors: who they are (a browser's token, or a person the site vouches
//! for with an identity HMAC), which origins may speak for a widget, the visitor's
//! conversation (created on the first message, a new one after the previous was closed),
//! and the customer's satisfaction rating. The REST widget routes and the Socket.IO
//! connect handler both come through [`Services::authenticate_visitor`]; the visitor's
//! [`Caller`] is made by auth/ from the stored record only.
//! Must not depend on api/.

use super::channels::{normalize_origin, origin_matches, origin_of_url};
use super::conversations::{MAX_MESSAGE_CHARS, Posted};
use super::{Checks, Error, Result, Services};
use crate::auth::tokens::{ct_eq, random_token};
use crate::auth::{Caller, Denied};
use crate::events::Event;
use crate::model::*;
use crate::store::{Index, ReadTx, WriteTx, make_ref, split_ref};
use crate::types::*;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Browsers (tokens) one visitor keeps at once; the oldest is forgotten beyond that.
pub const MAX_TOKENS_PER_VISITOR: usize = 10;
/// Longest verified external id.
pub const MAX_EXTERNAL_ID: usize = 200;
/// Longest rating comment.
pub const MAX_RATING_COMMENT: usize = 1000;
/// Visitors that never wrote are forgotten after this long unseen (see
/// [`Services::sweep_idle_visitors`]).
pub const IDLE_WITHOUT_CONVERSATION: time::Duration = time::Duration::days(7);
/// `lastSeenAt` is written at most this often per visitor (each write is a durable commit).
const SEEN_GRANULARITY: time::Duration = time::Duration::minutes(5);

/// What a visitor says when it arrives (REST body or Socket.IO `auth`).
#[derive(Debug, Clone, Default)]
pub struct VisitorHello {
    pub name: Option<String>,
    pub email: Option<String>,
    pub identity: Option<Identity>,
}

/// The site's signature of its user's id: `hash` = hex HMAC-SHA256(identity secret,
/// `external_id`).
#[derive(Debug, Clone)]
pub struct Identity {
    pub external_id: String,
    pub hash: String,
}

/// An authenticated visitor.
#[derive(Debug, Clone)]
pub struct VisitorSession {
    /// The visitor's caller, bound to its current conversation when it has one.
    pub caller: Caller,
    pub visitor: Visitor,
    pub channel: Channel,
    /// The token to hand to the browser when this call issued one (a new visitor, a new
    /// browser of an identified visitor); it is stored only hashed.
    pub new_token: Option<String>,
    /// The name of the channel's agent, for the widget's header.
    pub agent_name: Option<String>,
}

/// The public face of a widget: its channel and its agent's name.
#[derive(Debug, Clone)]
pub struct PublicWidget {
    pub channel: Channel,
    pub agent_name: Option<String>,
}

/// The hex HMAC-SHA256 of `external_id` under `secret`: what a site sends as the identity
/// hash of its user.
pub fn identity_hash(secret: &str, external_id: &str) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("BUG: hmac key");
    mac.update(external_id.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `hash` is the identity hash of `external_id` (constant time; case-insensitive hex).
pub fn identity_valid(secret: &str, external_id: &str, hash: &str) -> bool {
    ct_eq(
        &identity_hash(secret, external_id),
        &hash.trim().to_ascii_lowercase(),
    )
}

fn bad_token() -> Error {
    Error::Unauthorized(
        "unauthorized",
        "the visitor token is unknown or expired; start again without one".into(),
    )
}

fn web(channel: &Channel) -> Result<&WebSettings> {
    channel.web.as_ref().ok_or(Error::NotFound("widget"))
}

impl Services {
    /// Whether a request from the browser origin `origin` may use `channel`'s widget: one
    /// of its allowed origins, or this server's own (PUBLIC_URL: the preview page). `None`
    /// (no `Origin` header: not a cross-origin browser request) is allowed; callers pass
    /// `None` for same-origin requests too.
    pub fn widget_origin_allowed(&self, channel: &Channel, origin: Option<&str>) -> bool {
        let Some(o) = origin else { return true };
        if let Some(own) = origin_of_url(&self.public_url())
            && normalize_origin(o).as_deref() == Some(own.as_str())
        {
            return true;
        }
        channel
            .web
            .as_ref()
            .is_some_and(|w| origin_matches(&w.allowed_origins, o))
    }

    /// The widget of a public key as a browser at `origin` may see it: 404 `widget_not_found`
    /// for an unknown key, 403 `origin_not_allowed` for another site, 403 `channel_paused`.
    pub fn public_widget(&self, widget_key: &str, origin: Option<&str>) -> Result<PublicWidget> {
        self.store.read(|tx| {
            let channel = match self.usable_channel(tx, widget_key, origin) {
                Ok(c) => c,
                Err(e) => return Ok(Err(e)),
            };
            let agent_name = match &channel.agent_id {
                Some(a) => tx
                    .get::<Agent>(&channel.tenant_id, a.as_str())?
                    .map(|a| a.name),
                None => None,
            };
            Ok(Ok(PublicWidget {
                channel,
                agent_name,
            }))
        })?
    }

    /// Only the widget's channel decides whether the browser `origin` may call (for CORS
    /// answers): false for unknown keys and other sites. Blocking.
    pub fn widget_cors_allowed(&self, widget_key: &str, origin: &str) -> bool {
        self.store
            .read(|tx| Self::channel_by_widget_key(tx, widget_key))
            .ok()
            .flatten()
            .is_some_and(|c| self.widget_origin_allowed(&c, Some(origin)))
    }

    fn usable_channel(
        &self,
        tx: &ReadTx,
        widget_key: &str,
        origin: Option<&str>,
    ) -> Result<Channel> {
        let channel =
            Self::channel_by_widget_key(tx, widget_key)?.ok_or(Error::NotFound("widget"))?;
        web(&channel)?;
        if !self.widget_origin_allowed(&channel, origin) {
            return Err(Error::Forbidden(
                "origin_not_allowed",
                "this website is not among the widget's allowed origins".into(),
            ));
        }
        if channel.status != ChannelStatus::Active {
            return Err(Error::Forbidden(
                "channel_paused",
                "this chat is not available right now".into(),
            ));
        }
        match tx.get::<Tenant>(&channel.tenant_id, "")? {
            Some(t) if t.status == TenantStatus::Active => Ok(channel),
            Some(_) => Err(Error::Forbidden(
                "tenant_suspended",
                "this chat is not available right now".into(),
            )),
            None => Err(Error::NotFound("widget")),
        }
    }

    /// Authenticates a widget visitor: the widget key names the channel, the browser's
    /// `origin` must be allowed, `visitor_token` (when given) must be a live token of a
    /// visitor of this channel (401 `unauthorized` otherwise: the widget forgets it and
    /// comes back without one), and without one a new visitor is made. With identity
    /// verification on, `hello.identity` must carry a valid signature (401
    /// `identity_invalid`; in `required` mode its absence is 401 `identity_required`); a
    /// verified external id links the browser to the site user's visitor, so a returning
    /// person finds their conversation on any device. Blocking (a store commit).
    pub fn authenticate_visitor(
        &self,
        widget_key: &str,
        visitor_token: Option<&str>,
        origin: Option<&str>,
        hello: VisitorHello,
    ) -> Result<VisitorSession> {
        let mut c = Checks::default();
        let name = hello
            .name
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let email = hello
            .email
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        if let Some(n) = name {
            c.check(
                n.chars().count() <= 200,
                "name",
                "must be at most 200 characters",
            );
        }
        if let Some(e) = email {
            c.email("email", e);
        }
        if let Some(id) = &hello.identity {
            let n = id.external_id.chars().count();
            c.check(
                (1..=MAX_EXTERNAL_ID).contains(&n),
                "identity.externalId",
                "must be 1 to 200 characters",
            );
            c.check(
                id.hash.len() <= 128,
                "identity.hash",
                "must be a hex HMAC-SHA256",
            );
        }
        c.finish()?;
        let channel = self
            .store
            .read(|tx| Ok(self.usable_channel(tx, widget_key, origin)))??;
        let settings = web(&channel)?.clone();
        // The identity the site vouches for, if verification is on and the signature holds.
        let verified = match (&hello.identity, settings.identity) {
            (_, FieldMode::Off) | (None, _) => None,
            (Some(id), _) => {
                let secret = self.identity_secret(&channel).ok_or_else(|| {
                    Error::Internal(
                        "identity verification is on but its secret is unreadable".into(),
                    )
                })?;
                if !identity_valid(&secret, &id.external_id, &id.hash) {
                    return Err(Error::Unauthorized(
                        "identity_invalid",
                        "the identity hash does not match the external id".into(),
                    ));
                }
                Some(id.external_id.clone())
            }
        };
        if settings.identity == FieldMode::Required && verified.is_none() {
            return Err(Error::Unauthorized(
                "identity_required",
                "this widget only talks to signed-in users of the site: send identity {externalId, hash}".into(),
            ));
        }
        let token_hash = visitor_token.map(|t| self.keys.hash_token(t.trim()));
        let ttl = time::Duration::days(i64::from(self.config.visitor_token_ttl_days.max(1)));
        let now = self.clock.now();
        let t = channel.tenant_id.clone();
        let (visitor, new_token, agent_name) = self.store.write(|tx| -> Result<_> {
            let presented = match &token_hash {
                None => None,
                Some(h) => {
                    let v = Self::visitor_by_token(tx, h)?
                        .filter(|v| v.tenant_id == t && v.channel_id == channel.id)
                        .ok_or_else(bad_token)?;
                    if v.last_seen_at + ttl < now {
                        let mut v = v;
                        v.token_hashes.retain(|x| x != h);
                        tx.index_remove(Index::VisitorToken, h)?;
                        tx.put(&v)?;
                        return Ok(Err(bad_token()));
                    }
                    Some(v)
                }
            };
            let (mut visitor, fresh) = match (presented, &verified) {
                // The same person again (or an anonymous visitor signing in first time).
                (Some(v), Some(ext)) if v.external_id.as_deref() == Some(ext.as_str()) => {
                    (v, false)
                }
                (Some(mut v), Some(ext))
                    if v.external_id.is_none()
                        && tx
                            .index_get(Index::VisitorExternal, &external_key(&t, &channel.id, ext))?
                            .is_none() =>
                {
                    tx.index_insert_new(
                        Index::VisitorExternal,
                        &external_key(&t, &channel.id, ext),
                        &make_ref(&t, v.id.as_str()),
                    )?;
                    v.external_id = Some(ext.clone());
                    (v, false)
                }
                // Another signed-in person on this browser: their own visitor.
                (_, Some(ext)) => match Self::visitor_by_external(tx, &t, &channel.id, ext)? {
                    Some(v) => (v, true),
                    None => {
                        let v = new_visitor(&t, &channel.id, Some(ext.clone()), now);
                        tx.index_insert_new(
                            Index::VisitorExternal,
                            &external_key(&t, &channel.id, ext),
                            &make_ref(&t, v.id.as_str()),
                        )?;
                        (v, true)
                    }
                },
                // An anonymous browser; a signed-in person's browser that is no longer
                // signed (they left the site's account) does not get their conversation.
                (Some(v), None) if v.external_id.is_none() => (v, false),
                (_, None) => (new_visitor(&t, &channel.id, None, now), true),
            };
            let before = (
                visitor.name.clone(),
                visitor.email.clone(),
                visitor.last_seen_at,
            );
            if let Some(n) = name {
                visitor.name = Some(n.to_string());
            }
            if let Some(e) = email {
                visitor.email = Some(super::normalize_email(e));
            }
            if now - visitor.last_seen_at >= SEEN_GRANULARITY {
                visitor.last_seen_at = now;
            }
            let mut new_token = None;
            if fresh {
                let token = format!("vt_{}", random_token(32));
                let h = self.keys.hash_token(&token);
                tx.index_insert_new(Index::VisitorToken, &h, &make_ref(&t, visitor.id.as_str()))?;
                visitor.token_hashes.push(h);
                while visitor.token_hashes.len() > MAX_TOKENS_PER_VISITOR {
                    let old = visitor.token_hashes.remove(0);
                    tx.index_remove(Index::VisitorToken, &old)?;
                }
                new_token = Some(token);
            }
            let changed = fresh
                || before
                    != (
                        visitor.name.clone(),
                        visitor.email.clone(),
                        visitor.last_seen_at,
                    )
                || verified.is_some();
            if changed {
                tx.put(&visitor)?;
            }
            let agent_name = match &channel.agent_id {
                Some(a) => tx.get::<Agent>(&t, a.as_str())?.map(|a| a.name),
                None => None,
            };
            Ok(Ok((visitor, new_token, agent_name)))
        })??;
        Ok(VisitorSession {
            caller: Caller::widget_visitor(&visitor),
            visitor,
            channel,
            new_token,
            agent_name,
        })
    }

    /// The visitor of a token, for the widget's REST calls (`Authorization: Bearer
    /// <visitorToken>`): the same checks as [`authenticate_visitor`](Self::authenticate_visitor)
    /// for the widget and the origin, and a live token of this widget (401 `unauthorized`
    /// otherwise). Never makes a visitor. With identity verification `required`, only a
    /// visitor whose identity was verified passes (401 `identity_required`). Blocking.
    pub fn visitor_session(
        &self,
        widget_key: &str,
        token: &str,
        origin: Option<&str>,
    ) -> Result<VisitorSession> {
        let hash = self.keys.hash_token(token.trim());
        let ttl = time::Duration::days(i64::from(self.config.visitor_token_ttl_days.max(1)));
        let now = self.clock.now();
        let found = self.store.read(|tx| {
            let channel = match self.usable_channel(tx, widget_key, origin) {
                Ok(c) => c,
                Err(e) => return Ok(Err(e)),
            };
            let visitor = match tx.index_get(Index::VisitorToken, &hash)? {
                Some(r) => match split_ref(&r) {
                    Some((t, id)) => tx
                        .get::<Visitor>(&t, id)?
                        .filter(|v| v.token_hashes.contains(&hash)),
                    None => None,
                },
                None => None,
            };
            let Some(visitor) = visitor.filter(|v| {
                v.tenant_id == channel.tenant_id
                    && v.channel_id == channel.id
                    && v.last_seen_at + ttl >= now
            }) else {
                return Ok(Err(bad_token()));
            };
            let agent_name = match &channel.agent_id {
                Some(a) => tx
                    .get::<Agent>(&channel.tenant_id, a.as_str())?
                    .map(|a| a.name),
                None => None,
            };
            Ok(Ok((channel, visitor, agent_name)))
        })??;
        let (channel, visitor, agent_name) = found;
        if web(&channel)?.identity == FieldMode::Required && visitor.external_id.is_none() {
            return Err(Error::Unauthorized(
                "identity_required",
                "this widget only talks to signed-in users of the site: send identity {externalId, hash}".into(),
            ));
        }
        Ok(VisitorSession {
            caller: Caller::widget_visitor(&visitor),
            visitor,
            channel,
            new_token: None,
            agent_name,
        })
    }

    /// Forgets idle visitors: those unseen for `VISITOR_TOKEN_TTL_DAYS` (their tokens are
    /// dead anyway) and those that never wrote, unseen for [`IDLE_WITHOUT_CONVERSATION`]
    /// (a browser that opened the widget once; it starts afresh if it comes back). Their
    /// conversations stay. Returns how many were forgotten. Blocking; the server runs it
    /// hourly, so visitors cannot pile up without bound.
    pub fn sweep_idle_visitors(&self) -> Result<u64> {
        const BATCH: usize = 500;
        let ttl = time::Duration::days(i64::from(self.config.visitor_token_ttl_days.max(1)));
        let now = self.clock.now();
        let idle = move |v: &Visitor| {
            v.last_seen_at + ttl < now
                || (v.conversation_id.is_none() && v.last_seen_at + IDLE_WITHOUT_CONVERSATION < now)
        };
        let mut n = 0u64;
        let mut after: Option<String> = None;
        loop {
            let tenants = self.store.read(|tx| tx.tenants(after.as_deref(), 100))?;
            for t in &tenants.items {
                loop {
                    let batch = self.store.read(|tx| {
                        Ok(tx
                            .list_filtered::<Visitor>(&t.id, None, None, BATCH, false, idle)?
                            .items)
                    })?;
                    if batch.is_empty() {
                        break;
                    }
                    let full = batch.len() == BATCH;
                    n += self.store.write(|tx| -> Result<u64> {
                        let mut gone = 0;
                        for v in &batch {
                            // Seen again since the read: keep it.
                            if let Some(v) = tx.get::<Visitor>(&t.id, v.id.as_str())?
                                && idle(&v)
                            {
                                Self::forget_visitor(tx, &v)?;
                                gone += 1;
                            }
                        }
                        Ok(gone)
                    })?;
                    if !full {
                        break;
                    }
                }
            }
            match tenants.next {
                Some(next) => after = Some(next),
                None => return Ok(n),
            }
        }
    }

    /// The visitor's stored record and a caller made from it (bound to its current
    /// conversation as it is now, which may be newer than the caller's).
    pub fn current_visitor(&self, caller: &Caller) -> Result<(Visitor, Caller)> {
        let (id, _) = caller
            .visitor_of()
            .ok_or(Error::denied(Denied::Forbidden, "conversation"))?;
        let v = self
            .store
            .read(|tx| tx.get::<Visitor>(caller.tenant(), id.as_str()))?
            .ok_or_else(bad_token)?;
        let c = Caller::widget_visitor(&v);
        Ok((v, c))
    }

    /// The visitor's open conversation (not closed), if it has one.
    pub fn visitor_conversation(&self, caller: &Caller) -> Result<Option<Conversation>> {
        let (v, _) = self.current_visitor(caller)?;
        let Some(id) = &v.conversation_id else {
            return Ok(None);
        };
        Ok(self
            .store
            .read(|tx| tx.get::<Conversation>(caller.tenant(), id.as_str()))?
            .filter(|c| c.status != ConversationStatus::Closed))
    }

    /// Posts a visitor's message: in `conversation` when given (it must be the visitor's
    /// current one: any other answers 404), else in the visitor's open conversation, or a
    /// new one (with the channel's agent, the visitor as the customer and the widget's
    /// greeting) when it has none or the last one was closed. Returns what was posted and
    /// the visitor's caller bound to that conversation. `client_id` makes a resend return
    /// the stored message instead of a second one.
    pub fn post_visitor_message(
        &self,
        caller: &Caller,
        conversation: Option<&ConversationId>,
        content: &str,
        client_id: Option<&str>,
    ) -> Result<(Posted, Caller)> {
        let (vid, _) = caller
            .visitor_of()
            .ok_or(Error::denied(Denied::Forbidden, "conversation"))?;
        let mut c = Checks::default();
        c.check(!content.trim().is_empty(), "content", "must not be empty");
        c.check(
            content.chars().count() <= MAX_MESSAGE_CHARS,
            "content",
            "is too long (32000 characters max)",
        );
        if let Some(id) = client_id {
            c.check(
                !id.is_empty() && id.chars().count() <= 64,
                "clientId",
                "must be 1 to 64 characters",
            );
        }
        c.finish()?;
        let t = caller.tenant().clone();
        let now = self.clock.now();
        let (visitor, created) = self.store.write(|tx| -> Result<_> {
            let mut v = tx.get::<Visitor>(&t, vid.as_str())?.ok_or_else(bad_token)?;
            let channel = tx
                .get::<Channel>(&t, v.channel_id.as_str())?
                .ok_or(Error::NotFound("widget"))?;
            let settings = web(&channel)?;
            if channel.status != ChannelStatus::Active {
                return Err(Error::Forbidden(
                    "channel_paused",
                    "this chat is not available right now".into(),
                ));
            }
            if let Some(want) = conversation
                && v.conversation_id.as_ref() != Some(want)
            {
                return Err(Error::NotFound("conversation"));
            }
            let current = match &v.conversation_id {
                Some(id) => tx.get::<Conversation>(&t, id.as_str())?,
                None => None,
            };
            if current
                .as_ref()
                .is_some_and(|c| c.status != ConversationStatus::Closed)
            {
                return Ok((v, None));
            }
            let mut c = Checks::default();
            c.check(
                settings.pre_chat.name != FieldMode::Required || v.name.is_some(),
                "name",
                "this widget asks for your name before the first message",
            );
            c.check(
                settings.pre_chat.email != FieldMode::Required || v.email.is_some(),
                "email",
                "this widget asks for your email before the first message",
            );
            c.finish()?;
            let agent_id = channel.agent_id.clone().ok_or_else(|| {
                Error::Invalid(
                    "channel_without_agent",
                    "this widget has no agent to talk to".into(),
                )
            })?;
            let agent = tx
                .get::<Agent>(&t, agent_id.as_str())?
                .ok_or(Error::NotFound("agent"))?;
            let (conv, greeting) =
                Self::open_visitor_conversation(tx, &v, &channel, &agent, settings, now)?;
            v.conversation_id = Some(conv.id.clone());
            v.last_seen_at = now;
            tx.put(&v)?;
            Ok((v, Some((conv, greeting))))
        })?;
        if let Some((conversation, greeting)) = created {
            self.events.publish(Event::ConversationCreated {
                conversation: conversation.clone(),
            });
            if let Some(message) = greeting {
                self.events.publish(Event::MessageCreated {
                    conversation,
                    message,
                });
            }
        }
        let bound = Caller::widget_visitor(&visitor);
        let id = visitor.conversation_id.clone().ok_or_else(|| {
            Error::Internal("visitor without a conversation after posting".into())
        })?;
        let posted = self.post_message(&bound, &id, MessageRole::Customer, content, client_id)?;
        Ok((posted, bound))
    }

    /// Stores the visitor's rating (1-5, optional comment) of its conversation `id`, which
    /// must be closed (409 `conversation_not_closed` before); a later rating replaces the
    /// earlier one. Published as a conversation change (`rating`).
    pub fn rate_conversation(
        &self,
        caller: &Caller,
        id: &ConversationId,
        score: u8,
        comment: Option<&str>,
    ) -> Result<Conversation> {
        let (vid, _) = caller
            .visitor_of()
            .ok_or(Error::denied(Denied::Forbidden, "conversation"))?;
        let comment = comment.map(str::trim).filter(|s| !s.is_empty());
        let mut c = Checks::default();
        c.check((1..=5).contains(&score), "rating", "must be 1 to 5");
        if let Some(cm) = comment {
            c.check(
                cm.chars().count() <= MAX_RATING_COMMENT,
                "comment",
                "must be at most 1000 characters",
            );
        }
        c.finish()?;
        let t = caller.tenant().clone();
        let (before, after) = self.store.write(|tx| -> Result<_> {
            let v = tx.get::<Visitor>(&t, vid.as_str())?.ok_or_else(bad_token)?;
            if v.conversation_id.as_ref() != Some(id) {
                return Err(Error::NotFound("conversation"));
            }
            let mut conv = tx
                .get::<Conversation>(&t, id.as_str())?
                .ok_or(Error::NotFound("conversation"))?;
            if conv.status != ConversationStatus::Closed {
                return Err(Error::Conflict(
                    "conversation_not_closed",
                    "a conversation is rated once it is closed".into(),
                    None,
                ));
            }
            let before = conv.clone();
            conv.rating = Some(Rating {
                score,
                comment: comment.map(str::to_string),
                rated_at: self.clock.now(),
            });
            Self::put_conversation(tx, &conv)?;
            Ok((before, conv))
        })?;
        if let Some(e) = Event::conversation_changed(&before, &after) {
            self.events.publish(e);
        }
        Ok(after)
    }

    fn open_visitor_conversation(
        tx: &WriteTx,
        v: &Visitor,
        channel: &Channel,
        agent: &Agent,
        settings: &WebSettings,
        now: Timestamp,
    ) -> Result<(Conversation, Option<Message>)> {
        let mut conv = Conversation {
            id: ConversationId::new(),
            tenant_id: v.tenant_id.clone(),
            agent_id: agent.id.clone(),
            channel_id: Some(channel.id.clone()),
            customer: Customer {
                name: v.name.clone(),
                email: v.email.clone(),
                external_id: v.external_id.clone(),
            },
            status: ConversationStatus::Open,
            mode: ConversationMode::Ai,
            assignee_id: None,
            last_message_at: None,
            message_count: 0,
            created_at: now,
            closed_at: None,
            last_seq: 0,
            rating: None,
        };
        // The greeting the visitor saw before writing opens the conversation, so the team
        // reads what the visitor answered to.
        let mut greeting = settings
            .greeting
            .as_deref()
            .or(agent.greeting.as_deref())
            .filter(|g| !g.trim().is_empty())
            .map(|g| Message {
                id: MessageId::new(),
                tenant_id: v.tenant_id.clone(),
                conversation_id: conv.id.clone(),
                role: MessageRole::Ai,
                content: g.to_string(),
                citations: vec![],
                usage: None,
                status: MessageStatus::Sent,
                error: None,
                error_code: None,
                author_id: None,
                created_at: now,
                seq: 0,
                client_id: None,
                attachments: vec![],
            });
        if let Some(g) = greeting.as_mut() {
            Self::append(tx, &mut conv, g)?;
        }
        Self::put_conversation(tx, &conv)?;
        Ok((conv, greeting))
    }

    fn visitor_by_token(tx: &WriteTx, hash: &str) -> Result<Option<Visitor>> {
        let Some(r) = tx.index_get(Index::VisitorToken, hash)? else {
            return Ok(None);
        };
        let Some((t, id)) = split_ref(&r) else {
            return Ok(None);
        };
        Ok(tx
            .get::<Visitor>(&t, id)?
            .filter(|v| v.token_hashes.iter().any(|h| h == hash)))
    }

    fn visitor_by_external(
        tx: &WriteTx,
        t: &TenantId,
        channel: &ChannelId,
        ext: &str,
    ) -> Result<Option<Visitor>> {
        let Some(r) = tx.index_get(Index::VisitorExternal, &external_key(t, channel, ext))? else {
            return Ok(None);
        };
        let Some((rt, id)) = split_ref(&r) else {
            return Ok(None);
        };
        Ok(tx.get::<Visitor>(&rt, id)?.filter(|v| &v.tenant_id == t))
    }

    /// Removes a visitor and its lookups (its conversations stay).
    pub(crate) fn forget_visitor(tx: &WriteTx, v: &Visitor) -> Result<()> {
        for h in &v.token_hashes {
            tx.index_remove(Index::VisitorToken, h)?;
        }
        if let Some(ext) = &v.external_id {
            tx.index_remove(
                Index::VisitorExternal,
                &external_key(&v.tenant_id, &v.channel_id, ext),
            )?;
        }
        tx.delete::<Visitor>(&v.tenant_id, v.id.as_str())?;
        Ok(())
    }
}

fn external_key(t: &TenantId, channel: &ChannelId, ext: &str) -> String {
    format!("{t}/{channel}/{ext}")
}

fn new_visitor(t: &TenantId, channel: &ChannelId, ext: Option<String>, now: Timestamp) -> Visitor {
    Visitor {
        id: VisitorId::new(),
        tenant_id: t.clone(),
        channel_id: channel.clone(),
        token_hashes: vec![],
        name: None,
        email: None,
        external_id: ext,
        conversation_id: None,
        created_at: now,
        last_seen_at: now,
    }
}

#[cfg(test)]
mod tests;
