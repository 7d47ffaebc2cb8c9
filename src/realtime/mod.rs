//! Socket.IO at `/socket.io` (socketioxide, protocol v5: stock socket.io clients work
//! unchanged): authentication at connect, the client events (join/leave a conversation with
//! replay, send a message, typing, read marks, presence) and a per-socket forwarder from the
//! event bus. Depends on domain/ (every read and write, with the socket's [`Caller`]),
//! events/ and the API's views (the wire shapes); never on the store.
//!
//! Delivery: each socket has its own bus subscription and forwarder task instead of
//! socket.io rooms, because a message must reach every socket exactly once and in commit
//! order: the forwarder keeps, per joined conversation, the `seq` of the last message it
//! delivered (the watermark), skips what is at or below it, and refills a gap (a lagged
//! subscription, a reconnect) from the store. `join_conversation` reads the replay and sets
//! the watermark under the same lock the forwarder delivers under, so the replay in the
//! ack comes before any live message after it, and nothing falls between the two.

mod detach;
mod presence;

use crate::api::error::{ApiError, ErrorCode};
use crate::api::views::{CitationView, ConversationView, MessageView, UsageView};
use crate::auth::Caller;
use crate::domain::Services;
use crate::events::PresenceStatus;
use crate::events::{ConversationField, Event, Recv, Subscription};
use crate::model::{Message, MessageRole, MessageStatus};
use crate::types::{ConversationId, MessageId, TenantId, UserId};
use axum::http::StatusCode;
use presence::Presence;
use serde::Serialize;
use serde_json::{Value, json};
use socketioxide::extract::{AckSender, Extension, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use socketioxide::socket::DisconnectReason;
use socketioxide::{SendError, SocketError, SocketIo};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most messages one `join_conversation` ack replays; `more: true` says there are others.
pub const REPLAY_PAGE: usize = 200;
/// Most conversations one socket may have joined at once (bounds its watermark map).
pub const MAX_JOINED: usize = 100;
/// Initial read buffer of each WebSocket, in bytes.
const WS_READ_BUFFER: usize = 1024;
/// A typing indicator stops by itself after this long without a refresh.
pub const TYPING_TIMEOUT: Duration = Duration::from_secs(6);

/// State shared by every socket: the services, the limits, socket counts and presence.
pub struct Hub {
    svc: Arc<Services>,
    per_second: u32,
    burst: u32,
    max_per_user: usize,
    max_per_visitor: usize,
    max_payload: u64,
    /// Open sockets per user, API key or visitor (the key of [`Conn::count_key`]).
    counts: Mutex<HashMap<String, usize>>,
    presence: Presence,
    /// The API's rate limits: a connect without a visitor token makes a stored record, so it
    /// draws on the same per-address budget of new visitors as the REST route (and is
    /// pruned with it), behind the same trusted proxies.
    limits: Arc<crate::api::ratelimit::Limits>,
}

/// The Socket.IO layer for the app router, and its handle.
pub fn layer(
    svc: Arc<Services>,
    limits: Arc<crate::api::ratelimit::Limits>,
) -> (SocketIoLayer, SocketIo) {
    let c = svc.config.clone();
    let hub = Arc::new(Hub {
        svc: svc.clone(),
        per_second: c.socket_events_per_second,
        burst: c.socket_events_burst.max(1),
        max_per_user: c.socket_max_per_user,
        max_per_visitor: c.socket_max_per_visitor,
        max_payload: c.socket_max_payload_bytes,
        counts: Mutex::new(HashMap::new()),
        presence: Presence::default(),
        limits,
    });
    let (layer, io) = SocketIo::builder()
        .max_payload(c.socket_max_payload_bytes)
        .max_buffer_size(c.socket_buffer_packets)
        // Every WebSocket keeps this much read buffer while idle (engineioxide's default is
        // 4 KiB); tungstenite grows it to fit a larger frame. Saves ~3 kB per idle socket
        // (BENCHMARKS.md, Realtime).
        .ws_read_buffer_size(WS_READ_BUFFER)
        .with_state(hub)
        .build_layer();
    io.ns("/", on_connect.with(authenticate));
    (layer, io)
}

/// Who is behind a socket.
#[derive(Clone, Debug)]
enum Who {
    /// A person (access token) or a program (API key) of the tenant.
    Staff {
        user: Option<UserId>,
        name: String,
        /// Signed in with an access token (not a key): shown in presence.
        person: bool,
    },
    /// A website visitor of a web widget channel.
    Visitor {
        name: Option<String>,
        /// What the `session` event tells the widget right after connecting.
        session: Value,
    },
}

/// One connected socket's state (a socket extension).
struct Conn {
    /// A visitor's caller is re-bound when its first message opens a conversation.
    caller: Mutex<Caller>,
    who: Who,
    count_key: String,
    /// When the access token expires (Unix seconds); the socket ends then.
    expires: Option<u64>,
    /// Joined conversations and the `seq` of the last message delivered in each.
    joined: tokio::sync::Mutex<HashMap<ConversationId, u64>>,
    bucket: Mutex<Bucket>,
    /// Typing indicators this socket has on, and when each stops by itself.
    typing: Mutex<HashMap<ConversationId, Instant>>,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Conn {
    fn is_staff(&self) -> bool {
        matches!(self.who, Who::Staff { .. })
    }

    fn caller(&self) -> Caller {
        self.caller.lock().expect("BUG: poisoned caller").clone()
    }

    fn tenant(&self) -> TenantId {
        self.caller
            .lock()
            .expect("BUG: poisoned caller")
            .tenant()
            .clone()
    }
}

/// A token bucket: `per_second` sustained, `burst` at once.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, per_second: u32, burst: u32) -> bool {
        if per_second == 0 {
            return true;
        }
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * per_second as f64;
        self.tokens = (self.tokens + refill).min(burst as f64);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A refused connect: its `message` is the REST error code (socketioxide sends a
/// CONNECT_ERROR packet as `{"message"}` only, so clients read the code there).
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<ApiError> for Refused {
    fn from(e: ApiError) -> Self {
        Refused(e.code.into_owned())
    }
}

/// `{code, message, details?}` of an error, as acks carry it.
fn error_body(e: ApiError) -> Value {
    let mut v = json!({"code": e.code, "message": e.message});
    if let Some(d) = e.details {
        v["details"] = d;
    }
    v
}

fn refusal(e: ApiError) -> Value {
    json!({"ok": false, "error": error_body(e)})
}

fn invalid(field: &str, message: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "validation_failed",
        "some fields are invalid",
    )
    .with_details(json!({"fields": [{"field": field, "message": message}]}))
}

/// Runs a blocking domain call on the blocking pool.
async fn blocking<T: Send + 'static>(
    svc: &Arc<Services>,
    f: impl FnOnce(&Services) -> crate::domain::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let svc = svc.clone();
    tokio::task::spawn_blocking(move || f(&svc))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "blocking task failed");
            ApiError::internal()
        })?
        .map_err(ApiError::from)
}

/// The connect middleware: checks the handshake's `auth`, counts the socket against its
/// owner's cap, and stores the socket's state. A refusal is a `connect_error`.
async fn authenticate(
    s: SocketRef,
    State(hub): State<Arc<Hub>>,
    TryData(auth): TryData<Value>,
) -> Result<(), Refused> {
    let auth = auth.unwrap_or(Value::Null);
    if let Some(key) = auth.get("widgetKey").and_then(Value::as_str) {
        let conn = authenticate_visitor(&s, &hub, key, &auth).await?;
        ready(&s, &hub, conn);
        return Ok(());
    }
    let Some(token) = auth.get("token").and_then(Value::as_str) else {
        return Err(Refused(ErrorCode::Unauthorized.as_str().into()));
    };
    let tenant = match auth.get("tenantId") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_str()
                .and_then(TenantId::parse)
                .ok_or_else(|| Refused(ErrorCode::InvalidId.as_str().into()))?,
        ),
    };
    let token = token.trim().to_string();
    let is_key = token.starts_with("ak_");
    let t2 = token.clone();
    let (caller, user) = blocking(&hub.svc, move |svc| {
        let caller = if is_key {
            svc.authenticate_api_key(&t2)?
        } else {
            svc.authenticate_access(&t2)?
        };
        let caller = match tenant {
            Some(t) => svc.act_in(caller, &t)?,
            None => caller,
        };
        let (user, _) = svc.me(&caller)?;
        Ok((caller, user))
    })
    .await?;
    let expires = if is_key {
        None
    } else {
        hub.svc.access_token_expiry(&token)
    };
    // Token checks allow a few seconds of clock skew; a socket ends at expiry, so one
    // connecting after it would only be ended at once.
    if expires.is_some_and(|e| e <= crate::auth::tokens::unix_now()) {
        return Err(Refused(ErrorCode::InvalidToken.as_str().into()));
    }
    let count_key = match (caller.api_key_id(), caller.user()) {
        (Some(k), _) => format!("k:{k}"),
        (None, Some(u)) => format!("u:{u}"),
        (None, None) => format!("t:{}", caller.tenant()),
    };
    if !count_in(&hub, &count_key, hub.max_per_user) {
        return Err(Refused(ErrorCode::TooManySockets.as_str().into()));
    }
    let who = Who::Staff {
        user: caller.user().cloned(),
        name: user.map(|u| u.name).unwrap_or_else(|| "API key".into()),
        person: caller.session().is_some(),
    };
    let conn = new_conn(caller, who, count_key, expires, hub.burst);
    ready(&s, &hub, conn);
    Ok(())
}

/// The bus subscription a socket made before its CONNECT packet went out, until
/// [`on_connect`] hands it to the forwarder.
#[derive(Clone)]
struct EarlySubscription(Arc<Mutex<Option<Subscription>>>);

/// An accepted socket, before its CONNECT packet is sent: its state, its bus subscription
/// and its event handlers. socketioxide spawns the connect handler after sending CONNECT,
/// so a client emitting at once (a widget joining, a reconnect replaying) could reach a
/// socket without handlers (the event was dropped, the ack never came), and one closing
/// at once would skip the disconnect handler (its socket count never given back).
fn ready(s: &SocketRef, hub: &Hub, conn: Arc<Conn>) {
    // Subscribed before any read a join makes: nothing committed after it is missed.
    let sub = hub.svc.events.subscribe(&conn.caller());
    s.extensions
        .insert(EarlySubscription(Arc::new(Mutex::new(Some(sub)))));
    s.extensions.insert(conn);
    s.on("join_conversation", join_conversation);
    s.on("leave_conversation", leave_conversation);
    s.on("send_message", send_message);
    s.on("typing_start", typing_start);
    s.on("typing_stop", typing_stop);
    s.on("mark_read", mark_read);
    s.on("set_presence", set_presence);
    s.on("get_presence", get_presence);
    s.on_fallback(unknown_event);
    s.on_disconnect(on_disconnect);
}

fn new_conn(
    caller: Caller,
    who: Who,
    count_key: String,
    expires: Option<u64>,
    burst: u32,
) -> Arc<Conn> {
    Arc::new(Conn {
        caller: Mutex::new(caller),
        who,
        count_key,
        expires,
        joined: tokio::sync::Mutex::new(HashMap::new()),
        bucket: Mutex::new(Bucket {
            tokens: burst as f64,
            at: Instant::now(),
        }),
        typing: Mutex::new(HashMap::new()),
        tasks: Mutex::new(Vec::new()),
    })
}

/// Counts a socket against its owner's cap; false when the owner is at it.
fn count_in(hub: &Hub, key: &str, max: usize) -> bool {
    let mut counts = hub.counts.lock().expect("BUG: poisoned socket counts");
    let n = counts.entry(key.to_string()).or_insert(0);
    if *n >= max {
        return false;
    }
    *n += 1;
    true
}

/// A website visitor: `auth = {widgetKey, visitorToken?, name?, email?, identity?:
/// {externalId, hash}}`, from a page whose `Origin` the channel allows. Without a token
/// (or with one the server does not know any more) a visitor is made and its token sent
/// once in the `session` event.
async fn authenticate_visitor(
    s: &SocketRef,
    hub: &Hub,
    key: &str,
    auth: &Value,
) -> Result<Arc<Conn>, Refused> {
    use crate::domain::visitors::{Identity, VisitorHello};
    let text = |k: &str| auth.get(k).and_then(Value::as_str).map(str::to_string);
    let identity = auth.get("identity").and_then(|i| {
        Some(Identity {
            external_id: i.get("externalId")?.as_str()?.to_string(),
            hash: i.get("hash")?.as_str()?.to_string(),
        })
    });
    let hello = VisitorHello {
        name: text("name"),
        email: text("email"),
        identity,
    };
    let origin = crate::api::widget::cross_origin(&s.req_parts().headers);
    let (key, token) = (key.to_string(), text("visitorToken"));
    if token.is_none()
        && let Some(ip) = crate::api::extract::client_ip(s.req_parts(), &hub.limits.trusted_proxies)
        && hub.limits.widget_ip.check(&format!("new:{ip}")).is_err()
    {
        return Err(Refused(ErrorCode::RateLimited.as_str().into()));
    }
    let (session, open) = blocking(&hub.svc, move |svc| {
        let session = svc.authenticate_visitor(&key, token.as_deref(), origin.as_deref(), hello)?;
        let open = svc.visitor_conversation(&session.caller)?;
        Ok((session, open))
    })
    .await?;
    let count_key = format!("v:{}", session.visitor.id);
    if !count_in(hub, &count_key, hub.max_per_visitor) {
        return Err(Refused(ErrorCode::TooManySockets.as_str().into()));
    }
    let mut info = json!({
        "visitorId": session.visitor.id,
        "conversationId": open.as_ref().map(|c| c.id.clone()),
        "channel": crate::api::views::WidgetConfigView::new(
            &session.channel,
            session.agent_name.as_deref()
        ),
    });
    if let Some(t) = &session.new_token {
        info["visitorToken"] = json!(t);
    }
    let who = Who::Visitor {
        name: session.visitor.name.clone(),
        session: info,
    };
    let conn = new_conn(session.caller, who, count_key, None, hub.burst);
    if let Some(c) = open {
        // A visitor's socket follows its open conversation from the start; the widget
        // joins with `sinceMessageId` to replay what it has not shown yet.
        conn.joined.lock().await.insert(c.id.clone(), c.last_seq);
    }
    Ok(conn)
}

/// A connected socket: start its forwarder on the subscription [`ready`] made, announce
/// it, end it when its access token expires.
async fn on_connect(s: SocketRef, State(hub): State<Arc<Hub>>) {
    let Some(conn) = s.extensions.get::<Arc<Conn>>() else {
        let _ = s.disconnect();
        return;
    };
    let sub = s
        .extensions
        .get::<EarlySubscription>()
        .and_then(|e| e.0.lock().expect("BUG: poisoned subscription").take());
    // Gone already (the disconnect handler ran): nothing to start.
    let Some(sub) = sub.filter(|_| s.connected()) else {
        return;
    };
    if let Who::Visitor { session, .. } = &conn.who {
        emit(&s, "session", session);
    }
    // One task per socket: the forwarder also ends the socket when its access token expires.
    let task = tokio::spawn(forward(s.clone(), hub.clone(), conn.clone(), sub)).abort_handle();
    conn.tasks
        .lock()
        .expect("BUG: poisoned socket tasks")
        .push(task);
    if let Who::Staff {
        user: Some(u),
        name,
        person: true,
    } = &conn.who
        && let Some(e) = hub.presence.connected(&conn.tenant(), u, name)
    {
        hub.svc.events.publish(e);
    }
}

async fn on_disconnect(
    s: SocketRef,
    State(hub): State<Arc<Hub>>,
    Extension(conn): Extension<Arc<Conn>>,
    reason: DisconnectReason,
) {
    tracing::debug!(socket = %s.id, ?reason, "socket disconnected");
    for t in conn
        .tasks
        .lock()
        .expect("BUG: poisoned socket tasks")
        .drain(..)
    {
        t.abort();
    }
    {
        let mut counts = hub.counts.lock().expect("BUG: poisoned socket counts");
        if let Some(n) = counts.get_mut(&conn.count_key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&conn.count_key);
            }
        }
    }
    // Typing indicators this socket left on stop now.
    let typing: Vec<ConversationId> = conn
        .typing
        .lock()
        .expect("BUG: poisoned typing")
        .drain()
        .map(|(c, _)| c)
        .collect();
    for c in typing {
        hub.svc.events.publish(typing_event(&conn, &c, false));
    }
    if let Who::Staff {
        user: Some(u),
        person: true,
        ..
    } = &conn.who
        && let Some(e) = hub.presence.disconnected(&conn.tenant(), u)
    {
        hub.svc.events.publish(e);
    }
}

/// Lets an event in: one of the socket's rate (else `rate_limited` in the ack), within the
/// payload limit. Long polling enforces the limit on the HTTP body; a WebSocket frame is
/// only bounded by the library, so an event over the limit is checked here and closes the
/// socket the same way.
fn admit<E>(
    hub: &Hub,
    conn: &Conn,
    s: &SocketRef,
    d: &Result<Value, E>,
    ack: AckSender,
) -> Option<AckSender> {
    if let Ok(v) = d
        && json_len(v) > hub.max_payload
    {
        tracing::info!(socket = %s.id, "event larger than SOCKET_MAX_PAYLOAD_BYTES; closing the socket");
        let _ = s.clone().disconnect();
        return None;
    }
    let ok = conn
        .bucket
        .lock()
        .expect("BUG: poisoned bucket")
        .take(hub.per_second, hub.burst);
    if ok {
        Some(ack)
    } else {
        let _ = ack.send(&refusal(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "more than {} events per second from this socket",
                hub.per_second
            ),
        )));
        None
    }
}

/// The size of a value as JSON, without building the text.
fn json_len(v: &Value) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len() as u64;
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

async fn unknown_event(
    s: SocketRef,
    State(hub): State<Arc<Hub>>,
    Extension(conn): Extension<Arc<Conn>>,
    TryData(d): TryData<Value>,
    ack: AckSender,
) {
    // Counted and size-checked like any other, so a flood of unknown names is limited too.
    let _ = admit(&hub, &conn, &s, &d, ack);
}

/// The `conversationId` of an event's payload.
fn conversation_of(d: &Value) -> Result<ConversationId, ApiError> {
    match d.get("conversationId").and_then(Value::as_str) {
        None => Err(invalid("conversationId", "is required")),
        Some(s) => ConversationId::parse(s).ok_or_else(|| ApiError::invalid_id("conversationId")),
    }
}

/// `sinceMessageId` of `join_conversation`: absent or null, or a message id.
fn since_of(d: &Value) -> Result<Option<MessageId>, ApiError> {
    match d.get("sinceMessageId") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_str()
            .and_then(MessageId::parse)
            .map(Some)
            .ok_or_else(|| ApiError::invalid_id("sinceMessageId")),
    }
}

/// `messageId` of `mark_read`: required.
fn message_of(d: &Value) -> Result<MessageId, ApiError> {
    match d.get("messageId").and_then(Value::as_str) {
        None => Err(invalid("messageId", "is required")),
        Some(m) => MessageId::parse(m).ok_or_else(|| ApiError::invalid_id("messageId")),
    }
}

/// `send_message`'s conversation, content and idempotency key. A visitor may leave the
/// conversation out: its open conversation, or a new one.
fn send_fields(
    d: &Value,
    visitor: bool,
) -> Result<(Option<ConversationId>, String, Option<String>), ApiError> {
    let id = match d.get("conversationId") {
        None | Some(Value::Null) if visitor => None,
        _ => Some(conversation_of(d)?),
    };
    let content = match d.get("content") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(invalid("content", "is required (a string)")),
    };
    let client_id = match d.get("clientId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(invalid("clientId", "must be a string")),
    };
    Ok((id, content, client_id))
}

/// `status` of `set_presence`.
fn presence_of(d: &Value) -> Result<PresenceStatus, ApiError> {
    match d.get("status").and_then(Value::as_str) {
        Some("online") => Ok(PresenceStatus::Online),
        Some("away") => Ok(PresenceStatus::Away),
        _ => Err(invalid("status", "must be online or away")),
    }
}

/// The pure decoding every client event's payload goes through before any domain call,
/// exactly as the handlers run it (payload shape, ids, fields), with the payload size the
/// `SOCKET_MAX_PAYLOAD_BYTES` check measures. For the fuzz targets in tests/fuzz only.
#[doc(hidden)]
pub fn decode_event(event: &str, d: Result<Value, String>, visitor: bool) -> Result<u64, ApiError> {
    let size = d.as_ref().map_or(0, json_len);
    let d = payload(d)?;
    match event {
        "join_conversation" => {
            conversation_of(&d)?;
            since_of(&d)?;
        }
        "leave_conversation" | "typing_start" | "typing_stop" => {
            conversation_of(&d)?;
        }
        "send_message" => {
            send_fields(&d, visitor)?;
        }
        "mark_read" => {
            conversation_of(&d)?;
            message_of(&d)?;
        }
        "set_presence" => {
            presence_of(&d)?;
        }
        _ => {}
    }
    Ok(size)
}

fn payload(d: Result<Value, impl std::fmt::Display>) -> Result<Value, ApiError> {
    match d {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) | Err(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "the event's payload must be a JSON object",
        )),
    }
}

async fn join_conversation(
    s: SocketRef,
    State(hub): State<Arc<Hub>>,
    Extension(conn): Extension<Arc<Conn>>,
    TryData(d): TryData<Value>,
    ack: AckSender,
) {
    let Some(ack) = admit(&hub, &conn, &s, &d, ack) else {
        return;
    };
    // Held across the read and the ack: the forwarder delivers under this lock too, so no
    // live event of the conversation (a message, a status) reaches the client before the
    // replay does (the client takes the conversation's events once the ack has named it),
    // and none falls between the two.
    let mut joined = conn.joined.lock().await;
    let answer = join(&hub, &conn, &mut joined, d)
        .await
        .unwrap_or_else(refusal);
    let _ = ack.send(&answer);
    drop(joined);
}

async fn join(
    hub: &Hub,
    conn: &Conn,
    joined: &mut HashMap<ConversationId, u64>,
    d: Result<Value, impl std::fmt::Display>,
) -> Result<Value, ApiError> {
    let d = payload(d)?;
    let id = conversation_of(&d)?;
    let since = since_of(&d)?;
    if !joined.contains_key(&id) && joined.len() >= MAX_JOINED {
        return Err(invalid(
            "conversationId",
            "this socket has joined as many conversations as allowed; leave one first",
        ));
    }
    let (caller, id2) = (conn.caller(), id.clone());
    let r = blocking(&hub.svc, move |svc| {
        svc.messages_since(&caller, &id2, since.as_ref(), REPLAY_PAGE)
    })
    .await?;
    let watermark = r.messages.last().map_or(r.conversation.last_seq, |m| m.seq);
    // Already following it (a visitor's socket follows its conversation from the start):
    // what was delivered live stays delivered; the replay is a read the client merges by id.
    let w = joined.get(&id).map_or(watermark, |&w| w.max(watermark));
    joined.insert(id, w);
    let messages: Vec<MessageView> = r.messages.iter().map(MessageView::from).collect();
    Ok(json!({
        "ok": true,
        "conversation": ConversationView::from(&r.conversation),
        "messages": messages,
        "more": r.more,
    }))
}

async fn leave_conversation(
    s: SocketRef,
    State(hub): State<Arc<Hub>>,
    Extension(conn): Extension<Arc<Conn>>,
    TryData(d): TryData<Value>,
    ack: AckSender,
) {
    let Some(ack) = admit(&hub, &conn, &s, &d, ack) else {
        return;
    };
    let answer = match payload(d).and_then(|d| conversation_of(&d)) {
        Ok(id) => {
            conn.joined.lock().await.remove(&id);
            json!({"ok": true})
        }
        Err(e) => refusal(e),
    };
    let _ = ack.send(&answer);
}

async fn send_message(
    s: SocketRef,
    State(hub): State<Arc<Hub>>,
    Extension(conn): Extension<Arc<Conn>>,
    TryData(d): TryData<Value>,
    ack: AckSender,
) {
    let Some(ack) = admit(&hub, &conn, &s, &d, ack) else {
        return;
    };
    let answer = send(&s, &hub, &conn, d).await.unwrap_or_else(refusal);
    let _ = ack.send(&answer);
}

async fn send(
    s: &SocketRef,
    hub: &Hub,
    conn: &Conn,
    d: Result<Value, impl std::fmt::Display>,
) -> Result<Value, ApiError> {
    let d = payload(d)?;
    let visitor = !conn.is_staff();
    let (id, content, client_id) = send_fields(&d, visitor)?;
    let caller = conn.caller();
    if !visitor {
        let id = id.ok_or_else(|| invalid("conversationId", "is required"))?;
        let posted = blocking(&hub.svc, move |svc| {
            svc.post_message(
                &caller,
                &id,
                MessageRole::Human,
                &content,
                client_id.as_deref(),
            )
        })
        .await?;
        return Ok(json!({"ok": true, "message": MessageView::from(&posted.message)}));
    }
    // Under the joined lock: a conversation this message opens is followed from its first
    // message (the greeting) on, before any live event of it is delivered.
    let mut joined = conn.joined.lock().await;
    let (posted, bound) = blocking(&hub.svc, move |svc| {
        svc.post_visitor_message(&caller, id.as_ref(), &content, client_id.as_deref())
    })
    .await?;
    *conn.caller.lock().expect("BUG: poisoned caller") = bound;
    let cid = posted.conversation.id.clone();
    if !joined.contains_key(&cid) {
        joined.insert(cid.clone(), 0);
        refill(s, hub, conn, &mut joined, &cid).await;
    }
    Ok(json!({"ok": true, "message": MessageView::from(&posted.message)}))
}

fn typing_event(conn: &Conn, conversation: &ConversationId, typing: bool) -> Event {
    let (kind, user, name) = match &conn.who {
        Who::Staff { user, name, .. } => ("human", user.clone(), Some(name.clone())),
        Who::Visitor { name, .. } => ("customer", None, name.clone()),
    };
    Event::Typing {
        tenant_id: conn.tenant(),
        conversation_id: conversation.clone(),
        who: crate::events::Typist {
            kind,
            user_id: user,
            name,
        },
        typing,
    }
}

async fn typing_start(
    s: SocketRef,
    State(hub): State<Arc<Hub>>,
    Extension(conn): Extension<Arc<Conn>>,
    TryData(d): TryData<Value>,
    ack: AckSender,
) {
    typing(s, hub, conn, d, ack, true).await
}

async fn typing_stop(
    s: SocketRef,
    State(hub): State<Arc<Hub>>,
    Extension(conn): Extension<Arc<Conn>>,
    TryData(d): TryData<Value>,
    ack: AckSender,
) {
    typing(s, hub, conn, d, ack, false).await
}

/// Typing in a joined conversation (joining checked the caller may read it). A start
/// stops by itself after [`TYPING_TIMEOUT`] unless refreshed.
async fn typing(
    s: SocketRef,
    hub: Arc<Hub>,
    conn: Arc<Conn>,
    d: Result<Value, impl std::fmt::Display>,
    ack: AckSender,
    on: bool,
) {
    let Some(ack) = admit(&hub, &conn, &s, &d, ack) else {
        return;
    };
    let id = match payload(d).and_then(|d| conversation_of(&d)) {
        Ok(id) => id,
        Err(e) => {
            let _ = ack.send(&refusal(e));
            return;
        }
    };
    if !conn.joined.lock().await.contains_key(&id) {
        let _ = ack.send(&refusal(ApiError::from(crate::domain::Error::NotFound(
            "conversation",
        ))));
        return;
    }
    let was_on = {
        let mut t = conn.typing.lock().expect("BUG: poisoned typing");
        if on {
            t.insert(id.clone(), Instant::now() + TYPING_TIMEOUT)
                .is_some()
        } else {
            t.remove(&id).is_some()
        }
    };
    if on != was_on {
        hub.svc.events.publish(typing_event(&conn, &id, on));
    }
    if on {
        // Auto-stop: only if no refresh moved the deadline meanwhile.
        let (hub2, conn2, id2) = (hub.clone(), conn.clone(), id.clone());
        let h = tokio::spawn(async move {
            tokio::time::sleep(TYPING_TIMEOUT).await;
            let expired = {
                let mut t = conn2.typing.lock().expect("BUG: poisoned typing");
                match t.get(&id2) {
                    Some(deadline) if *deadline <= Instant::now() => {
                        t.remove(&id2);
                        true
                    }
                    _ => false,
                }
            };
            if expired {
                hub2.svc.events.publish(typing_event(&conn2, &id2, false));
            }
        });
        let mut tasks = conn.tasks.lock().expect("BUG: poisoned socket tasks");
        tasks.retain(|t| !t.is_finished());
        tasks.push(h.abort_handle());
    }
    let _ = ack.send(&json!({"ok": true}));
}

async fn mark_read(
    s: SocketRef,
    State(hub): State<Arc<Hub>>,
    Extension(conn): Extension<Arc<Conn>>,
    TryData(d): TryData<Value>,
    ack: AckSender,
) {
    let Some(ack) = admit(&hub, &conn, &s, &d, ack) else {
        return;
    };
    let answer = read(&hub, &conn, d).await.unwrap_or_else(refusal);
    let _ = ack.send(&answer);
}

/// `mark_read {conversationId, messageId}`: a team member's read mark (the ack says how
/// many messages are after it), or a visitor's read receipt (the team's messages up to it
/// become `read`, announced as `message_status`).
async fn read(
    hub: &Hub,
    conn: &Conn,
    d: Result<Value, impl std::fmt::Display>,
) -> Result<Value, ApiError> {
    use crate::domain::conversations::ReadOutcome;
    let d = payload(d)?;
    let id = conversation_of(&d)?;
    let message = message_of(&d)?;
    let caller = conn.caller();
    let r = blocking(&hub.svc, move |svc| svc.mark_read(&caller, &id, &message)).await?;
    Ok(match r {
        ReadOutcome::Staff { unread_count } => json!({"ok": true, "unreadCount": unread_count}),
        ReadOutcome::Customer { now_read } => json!({"ok": true, "read": now_read}),
    })
}

async fn set_presence(
    s: SocketRef,
    State(hub): State<Arc<Hub>>,
    Extension(conn): Extension<Arc<Conn>>,
    TryData(d): TryData<Value>,
    ack: AckSender,
) {
    let Some(ack) = admit(&hub, &conn, &s, &d, ack) else {
        return;
    };
    let status = payload(d).and_then(|d| presence_of(&d));
    let answer = match (status, &conn.who) {
        (Err(e), _) => refusal(e),
        (
            Ok(status),
            Who::Staff {
                user: Some(u),
                person: true,
                ..
            },
        ) => {
            if let Some(e) = hub.presence.set(&conn.tenant(), u, status) {
                hub.svc.events.publish(e);
            }
            json!({"ok": true})
        }
        (Ok(_), _) => refusal(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only people signed in with an access token have a presence",
        )),
    };
    let _ = ack.send(&answer);
}

async fn get_presence(
    s: SocketRef,
    State(hub): State<Arc<Hub>>,
    Extension(conn): Extension<Arc<Conn>>,
    TryData(d): TryData<Value>,
    ack: AckSender,
) {
    let Some(ack) = admit(&hub, &conn, &s, &d, ack) else {
        return;
    };
    let answer = if conn.is_staff() {
        json!({"ok": true, "users": hub.presence.list(&conn.tenant())})
    } else {
        refusal(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "presence is for the team",
        ))
    };
    let _ = ack.send(&answer);
}

/// Emits to one socket. A full send buffer means a slow consumer: it is disconnected (it
/// reconnects and replays) rather than allowed to hold memory or slow anyone else.
/// False when the socket is gone.
fn emit<T: Serialize + ?Sized>(s: &SocketRef, event: &str, data: &T) -> bool {
    match s.emit(event, data) {
        Ok(()) => true,
        Err(SendError::Socket(SocketError::InternalChannelFull)) => {
            tracing::warn!(socket = %s.id, "slow consumer: send buffer full; disconnecting");
            let _ = s.clone().disconnect();
            false
        }
        Err(SendError::Socket(SocketError::Closed)) => false,
        Err(e) => {
            tracing::error!(error = %e, event, "cannot encode a socket event");
            true
        }
    }
}

fn field_name(f: &ConversationField) -> &'static str {
    match f {
        ConversationField::Status => "status",
        ConversationField::Mode => "mode",
        ConversationField::Assignee => "assignee",
        ConversationField::Agent => "agent",
        ConversationField::Rating => "rating",
    }
}

/// True for a stored AI answer of a turn (not a greeting): the end of a streamed answer.
fn is_turn_answer(m: &Message) -> bool {
    m.role == MessageRole::Ai && (m.usage.is_some() || m.status == MessageStatus::Failed)
}

/// Emits a message to a socket that joined its conversation: `new_message`, and for an AI
/// turn's answer also the `agent_response` that ends its stream.
fn emit_message(s: &SocketRef, m: &Message) -> bool {
    let view = MessageView::from(m);
    if !emit(s, "new_message", &view) {
        return false;
    }
    if is_turn_answer(m) {
        let citations: Vec<CitationView> = m.citations.iter().map(CitationView::from).collect();
        return emit(
            s,
            "agent_response",
            &json!({
                "conversationId": m.conversation_id,
                "messageId": m.id,
                "done": true,
                "content": m.content,
                "citations": citations,
                "usage": m.usage.as_ref().map(UsageView::from),
                "message": view,
            }),
        );
    }
    true
}

/// The socket's forwarder: its tenant's events, filtered to what it may see, in order.
async fn forward(s: SocketRef, hub: Arc<Hub>, conn: Arc<Conn>, mut sub: Subscription) {
    let expired = async {
        match conn.expires {
            Some(exp) => {
                let now = crate::auth::tokens::unix_now();
                tokio::time::sleep(Duration::from_secs(exp.saturating_sub(now))).await
            }
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expired);
    loop {
        let next = tokio::select! {
            r = sub.recv() => r,
            () = &mut expired => {
                let _ = s.emit("session_expired", &json!({}));
                let _ = s.disconnect();
                return;
            }
        };
        // Delivering and refilling are boxed: this future lives as long as its socket, and
        // an idle socket should hold only the small state of waiting, not the largest one.
        let alive = match next {
            Recv::Event(e) => Box::pin(deliver(&s, &hub, &conn, &e)).await,
            Recv::Lagged(n) => {
                tracing::debug!(socket = %s.id, missed = n, "socket lagged; refilling from the store");
                metrics::counter!("socket_lagged_total").increment(1);
                Box::pin(refill_all(&s, &hub, &conn)).await
            }
            Recv::Closed => false,
        };
        if !alive || !s.connected() {
            return;
        }
    }
}

/// Delivers the messages of a joined conversation after the watermark from the store.
async fn refill(
    s: &SocketRef,
    hub: &Hub,
    conn: &Conn,
    joined: &mut HashMap<ConversationId, u64>,
    id: &ConversationId,
) -> bool {
    loop {
        let Some(&after) = joined.get(id) else {
            return true;
        };
        let (caller, id2) = (conn.caller(), id.clone());
        let r = blocking(&hub.svc, move |svc| {
            svc.messages_after_seq(&caller, &id2, after, REPLAY_PAGE)
        })
        .await;
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                // Gone (deleted) or no longer readable: stop following it.
                tracing::debug!(code = %e.code, "a joined conversation cannot be read; leaving it");
                joined.remove(id);
                return true;
            }
        };
        for m in &r.messages {
            if !emit_message(s, m) {
                return false;
            }
            joined.insert(id.clone(), m.seq);
        }
        if !r.more {
            return true;
        }
    }
}

async fn refill_all(s: &SocketRef, hub: &Hub, conn: &Conn) -> bool {
    let mut joined = conn.joined.lock().await;
    let ids: Vec<ConversationId> = joined.keys().cloned().collect();
    for id in ids {
        if !refill(s, hub, conn, &mut joined, &id).await {
            return false;
        }
    }
    true
}

async fn deliver(s: &SocketRef, hub: &Hub, conn: &Conn, e: &Event) -> bool {
    let staff = conn.is_staff();
    match e {
        Event::MessageCreated {
            conversation,
            message,
        } => {
            if staff
                && !emit(
                    s,
                    "conversation_update",
                    &json!({
                        "conversation": ConversationView::from(conversation),
                        "changed": ["lastMessage"],
                    }),
                )
            {
                return false;
            }
            let mut joined = conn.joined.lock().await;
            let Some(&w) = joined.get(&conversation.id) else {
                return true;
            };
            if message.seq <= w {
                return true; // already delivered (replayed, or refilled)
            }
            if message.seq == w + 1 {
                joined.insert(conversation.id.clone(), message.seq);
                return emit_message(s, message);
            }
            // A gap: something was missed (lag); the store has it, in order.
            refill(s, hub, conn, &mut joined, &conversation.id).await
        }
        Event::ConversationCreated { conversation } => {
            !staff
                || emit(
                    s,
                    "new_conversation",
                    &json!({"conversation": ConversationView::from(conversation)}),
                )
        }
        Event::ConversationChanged {
            conversation,
            changed,
        } => {
            let joined = conn.joined.lock().await.contains_key(&conversation.id);
            if !(staff || joined) {
                return true;
            }
            let changed: Vec<&str> = changed.iter().map(field_name).collect();
            emit(
                s,
                "conversation_update",
                &json!({"conversation": ConversationView::from(conversation), "changed": changed}),
            )
        }
        Event::MessageStatus {
            conversation_id,
            message_id,
            status,
            error,
            error_code,
            ..
        } => {
            if !conn.joined.lock().await.contains_key(conversation_id) {
                return true;
            }
            let mut v = json!({
                "conversationId": conversation_id,
                "messageId": message_id,
                "status": status,
            });
            if let Some(err) = error {
                v["error"] = json!(err);
            }
            if let Some(code) = error_code {
                v["errorCode"] = json!(code);
            }
            emit(s, "message_status", &v)
        }
        Event::DocumentStatus {
            document_id,
            status,
            progress,
            error,
            ..
        } => {
            if !staff {
                return true;
            }
            let mut v = json!({"documentId": document_id, "status": status, "progress": progress});
            if let Some(err) = error {
                v["error"] = json!(err);
            }
            emit(s, "document_status", &v)
        }
        Event::JobProgress {
            job_id,
            kind,
            status,
            progress,
            ..
        } => {
            !staff
                || emit(
                    s,
                    "job_progress",
                    &json!({"jobId": job_id, "kind": kind, "status": status, "progress": progress}),
                )
        }
        Event::Typing {
            conversation_id,
            who,
            typing,
            ..
        } => {
            if !conn.joined.lock().await.contains_key(conversation_id) {
                return true;
            }
            // Not echoed to the socket's own person (a visitor is the conversation's
            // only customer).
            let own = match &conn.who {
                Who::Staff { user: Some(me), .. } => {
                    who.kind == "human" && who.user_id.as_ref() == Some(me)
                }
                Who::Staff { .. } => false,
                Who::Visitor { .. } => who.kind == "customer",
            };
            if own {
                return true;
            }
            emit(
                s,
                "user_typing",
                &json!({"conversationId": conversation_id, "who": who, "typing": typing}),
            )
        }
        Event::AgentDelta {
            conversation_id,
            message_id,
            delta,
            ..
        } => {
            if !conn.joined.lock().await.contains_key(conversation_id) {
                return true;
            }
            emit(
                s,
                "agent_response",
                &json!({"conversationId": conversation_id, "messageId": message_id, "delta": delta}),
            )
        }
        Event::Presence {
            user_id,
            name,
            status,
            ..
        } => {
            !staff
                || emit(
                    s,
                    "presence",
                    &json!({"userId": user_id, "name": name, "status": status}),
                )
        }
        Event::UsageThreshold {
            limit,
            used,
            max,
            percent,
            threshold,
            ..
        } => {
            !staff
                || emit(
                    s,
                    "usage_threshold",
                    &json!({"limit": limit, "used": used, "max": max, "percent": percent, "threshold": threshold}),
                )
        }
    }
}

/// CORS for `/socket.io/` (the long-polling transport from a website): any origin may
/// reach it without credentials, since sockets authenticate with the handshake's `auth`
/// payload and never with cookies; website visitors' origins are checked at connect
/// against their channel. Other paths pass through untouched.
pub async fn cors(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{HeaderValue, Method, header};
    if !req.uri().path().starts_with("/socket.io/") {
        return next.run(req).await;
    }
    // engineioxide keeps the handshake request for the socket's life: not the read buffer.
    let req = detach::detach(req);
    let preflight = req.method() == Method::OPTIONS;
    let mut resp = if preflight {
        axum::response::IntoResponse::into_response(StatusCode::NO_CONTENT)
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    if preflight {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    resp
}
