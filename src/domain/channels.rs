//! Channels: where customers talk to an agent. This module owns the Channel record's rules
//! for every type and the website widget's (`web`) settings: its public widget key, allowed
//! origins, look, pre-chat fields and identity verification secret (sealed at rest, shown
//! once). Telegram channels keep their bot token and the webhook secret Telegram echoes back
//! (both sealed); WhatsApp, Messenger and Instagram keep their access token, app secret and
//! webhook verify token (sealed) and their account id (phone number id, page id, Instagram
//! account id) in the public settings. Talking to providers is channels/'s work. Must not
//! depend on api/.

use super::audit::{AuditAction, AuditEntry};
use super::{Checks, Error, PageReq, Result, Services};
use crate::auth::tokens::random_token;
use crate::auth::{Action, Caller};
use crate::model::*;
use crate::store::{Index, Page, WriteTx, make_ref, split_ref};
use crate::types::*;

/// The credential of a web channel: the HMAC key the site signs visitor ids with.
pub const IDENTITY_SECRET: &str = "identitySecret";
/// The credential of a Telegram channel: the bot's token from @BotFather.
pub const BOT_TOKEN: &str = "botToken";
/// The secret Telegram sends back in `X-Telegram-Bot-Api-Secret-Token` (generated, sealed).
pub const WEBHOOK_SECRET: &str = "webhookSecret";
/// WhatsApp's credential: the Cloud API access token (system user or temporary token).
pub const ACCESS_TOKEN: &str = "accessToken";
/// Messenger's and Instagram's credential: the page access token.
pub const PAGE_ACCESS_TOKEN: &str = "pageAccessToken";
/// The Meta app's secret: the key of the `X-Hub-Signature-256` HMAC of every webhook.
pub const APP_SECRET: &str = "appSecret";
/// The token Meta echoes in the webhook verification handshake (`hub.verify_token`):
/// the admin's own or generated, sealed, shown to admins to paste into Meta's console.
pub const VERIFY_TOKEN: &str = "verifyToken";
/// Most allowed origins of one widget.
pub const MAX_ORIGINS: usize = 50;
/// Shortest identity secret an admin may set themselves.
pub const MIN_SECRET_LEN: usize = 32;

/// Fields of a create or update; absent fields keep their value on update (`Some(None)`
/// clears a nullable one).
#[derive(Debug, Default, Clone)]
pub struct ChannelInput {
    /// Required on create; cannot change.
    pub kind: Option<ChannelKind>,
    pub name: Option<String>,
    pub agent_id: Option<AgentId>,
    /// `active` or `paused` (`error` is set by the server only).
    pub status: Option<ChannelStatus>,
    pub web: Option<WebInput>,
    /// `identitySecret`: a secret of the admin's own (at least 32 characters), or `None` to
    /// remove it (only while identity verification is off).
    pub identity_secret: Option<Option<String>>,
    /// Telegram: the bot token (write-only).
    pub bot_token: Option<String>,
    /// WhatsApp, Messenger, Instagram: credentials and the account id.
    pub meta: MetaInput,
}

/// The Meta (WhatsApp, Messenger, Instagram) part of a create or update; absent fields
/// keep their value.
#[derive(Debug, Default, Clone)]
pub struct MetaInput {
    /// WhatsApp `accessToken`, Messenger/Instagram `pageAccessToken` (write-only).
    pub access_token: Option<String>,
    pub app_secret: Option<String>,
    /// Generated on create when absent.
    pub verify_token: Option<String>,
    /// `phoneNumberId`, `pageId` or `instagramAccountId`.
    pub account_id: Option<String>,
}

/// True for the types that talk to Meta's Graph API.
pub fn is_meta(kind: ChannelKind) -> bool {
    matches!(
        kind,
        ChannelKind::Whatsapp | ChannelKind::Messenger | ChannelKind::Instagram
    )
}

/// The settings key naming a Meta channel's account (`phoneNumberId`, `pageId`,
/// `instagramAccountId`); `None` for other types.
pub fn account_setting(kind: ChannelKind) -> Option<&'static str> {
    match kind {
        ChannelKind::Whatsapp => Some("phoneNumberId"),
        ChannelKind::Messenger => Some("pageId"),
        ChannelKind::Instagram => Some("instagramAccountId"),
        _ => None,
    }
}

/// The name of a Meta channel's access-token credential.
pub fn token_credential(kind: ChannelKind) -> &'static str {
    if kind == ChannelKind::Whatsapp {
        ACCESS_TOKEN
    } else {
        PAGE_ACCESS_TOKEN
    }
}

/// The account id (`phoneNumberId`, `pageId`, `instagramAccountId`) of a Meta channel.
pub fn account_id(channel: &Channel) -> Option<String> {
    let key = account_setting(channel.kind)?;
    channel.config[key].as_str().map(str::to_string)
}

/// The web widget's settings of a create or update.
#[derive(Debug, Default, Clone)]
pub struct WebInput {
    pub allowed_origins: Option<Vec<String>>,
    pub greeting: Option<Option<String>>,
    pub color: Option<String>,
    pub title: Option<Option<String>>,
    pub avatar_url: Option<Option<String>>,
    pub position: Option<WidgetPosition>,
    pub language: Option<Option<String>>,
    pub pre_chat_name: Option<FieldMode>,
    pub pre_chat_email: Option<FieldMode>,
    pub identity: Option<FieldMode>,
}

/// A channel as written, with the identity secret when this write generated one (shown
/// once: only its sealed form is kept).
#[derive(Debug)]
pub struct Saved {
    pub channel: Channel,
    pub new_identity_secret: Option<String>,
}

/// The canonical form of a browser origin, `scheme://host[:port]` in lower case without a
/// default port; `*.` may start the host (any subdomain). `None` for anything else (paths,
/// queries, other schemes, user info).
pub fn normalize_origin(s: &str) -> Option<String> {
    let s = s.trim().trim_end_matches('/');
    let (scheme, rest) = s.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let (wild, host_port) = match rest.strip_prefix("*.") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if host_port.is_empty() || host_port.contains(['/', '?', '#', '@', '*', ' ']) {
        return None;
    }
    let u = url::Url::parse(&format!("{scheme}://{host_port}")).ok()?;
    let host = u.host_str()?;
    let mut out = format!("{scheme}://{}{host}", if wild { "*." } else { "" });
    if let Some(p) = u.port() {
        out.push_str(&format!(":{p}"));
    }
    Some(out)
}

/// The origin (`scheme://host[:port]`) of a URL such as PUBLIC_URL.
pub fn origin_of_url(u: &str) -> Option<String> {
    let u = url::Url::parse(u).ok()?;
    normalize_origin(&u.origin().ascii_serialization())
}

/// Whether the browser origin `origin` matches one of `allowed` (normalised entries, which
/// may be `scheme://*.domain` for any subdomain of the domain).
pub fn origin_matches(allowed: &[String], origin: &str) -> bool {
    let Some(o) = normalize_origin(origin) else {
        return false;
    };
    if o.contains("://*.") {
        return false;
    }
    allowed.iter().any(|a| {
        if a == &o {
            return true;
        }
        let Some((scheme, rest)) = a.split_once("://*.") else {
            return false;
        };
        // `https://*.example.com` matches `https://a.example.com`, not `https://example.com`
        // nor `https://badexample.com`.
        o.strip_prefix(scheme)
            .and_then(|r| r.strip_prefix("://"))
            .and_then(|host| host.strip_suffix(rest))
            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'))
    })
}

fn is_color(c: &str) -> bool {
    let Some(hex) = c.strip_prefix('#') else {
        return false;
    };
    (hex.len() == 6 || hex.len() == 3) && hex.chars().all(|c| c.is_ascii_hexdigit())
}

fn is_language(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 35
        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !l.starts_with('-')
}

fn trimmed(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn new_widget_key() -> String {
    format!("wk_{}", random_token(18))
}

impl Services {
    pub fn list_channels(
        &self,
        caller: &Caller,
        kind: Option<ChannelKind>,
        page: &PageReq,
    ) -> Result<Page<Channel>> {
        caller
            .require(Action::ReadChannels)
            .map_err(|d| Error::denied(d, "channel"))?;
        Ok(self.store.read(|tx| {
            tx.list_filtered::<Channel>(
                caller.tenant(),
                None,
                page.cursor.as_deref(),
                page.limit,
                false,
                |c| kind.is_none_or(|k| c.kind == k),
            )
        })?)
    }

    pub fn get_channel(&self, caller: &Caller, id: &ChannelId) -> Result<Channel> {
        caller
            .require(Action::ReadChannels)
            .map_err(|d| Error::denied(d, "channel"))?;
        self.store
            .read(|tx| tx.get::<Channel>(caller.tenant(), id.as_str()))?
            .ok_or(Error::NotFound("channel"))
    }

    /// Creates a channel. Only `web` for now: the other types answer
    /// `unsupported_channel_type` until the messaging channels exist.
    pub fn create_channel(&self, caller: &Caller, input: ChannelInput) -> Result<Saved> {
        caller
            .require(Action::ManageChannels)
            .map_err(|d| Error::denied(d, "channel"))?;
        let kind = input.kind.ok_or_else(|| {
            Error::Validation(vec![super::FieldError {
                field: "type".into(),
                message: "is required".into(),
            }])
        })?;
        let mut c = Checks::default();
        c.check(input.name.is_some(), "name", "is required");
        c.check(input.agent_id.is_some(), "agentId", "is required");
        if kind == ChannelKind::Telegram {
            c.check(
                input.bot_token.is_some(),
                "credentials.botToken",
                "is required",
            );
        }
        if is_meta(kind) {
            let tok = token_credential(kind);
            c.check(
                input.meta.access_token.is_some(),
                &format!("credentials.{tok}"),
                "is required",
            );
            c.check(
                input.meta.app_secret.is_some(),
                "credentials.appSecret",
                "is required",
            );
            if let Some(k) = account_setting(kind) {
                c.check(
                    input.meta.account_id.is_some(),
                    &format!("settings.{k}"),
                    "is required",
                );
            }
        }
        c.finish()?;
        let now = now();
        let blank = Channel {
            id: ChannelId::new(),
            tenant_id: caller.tenant().clone(),
            agent_id: None,
            kind,
            name: String::new(),
            status: ChannelStatus::Active,
            last_error: None,
            web: (kind == ChannelKind::Web).then(|| WebSettings {
                widget_key: String::new(),
                allowed_origins: vec![],
                greeting: None,
                theme: WidgetTheme::default(),
                language: None,
                pre_chat: PreChat::default(),
                identity: FieldMode::Off,
            }),
            config: if kind == ChannelKind::Web {
                serde_json::Value::Null
            } else {
                serde_json::json!({})
            },
            credentials: Default::default(),
            created_at: now,
            updated_at: now,
        };
        let (mut channel, new_secret) = self.apply(blank, input)?;
        let crossed = self.store.write(|tx| -> Result<_> {
            let crossed =
                self.use_quota(tx, &channel.tenant_id, super::plans::Limit::Channels, 1)?;
            self.check_agent(tx, caller.tenant(), channel.agent_id.as_ref())?;
            if let Some(web) = channel.web.as_mut() {
                web.widget_key = Self::claim_widget_key(tx, &channel.tenant_id, &channel.id)?;
            }
            if channel.kind != ChannelKind::Web {
                tx.index_insert_new(
                    Index::ChannelWebhook,
                    channel.id.as_str(),
                    &make_ref(&channel.tenant_id, channel.id.as_str()),
                )?;
            }
            tx.put(&channel)?;
            self.audit_credentials(tx, caller, &Default::default(), &channel)?;
            Ok(crossed)
        })?;
        self.announce(crossed);
        Ok(Saved {
            channel,
            new_identity_secret: new_secret,
        })
    }

    /// Records which credentials of a channel were set, replaced or removed (never their
    /// values), when any were.
    fn audit_credentials(
        &self,
        tx: &WriteTx,
        caller: &Caller,
        before: &std::collections::BTreeMap<String, String>,
        after: &Channel,
    ) -> Result<()> {
        let keys: std::collections::BTreeSet<&String> = before
            .keys()
            .chain(after.credentials.keys())
            .filter(|k| before.get(*k) != after.credentials.get(*k))
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        self.audit(
            tx,
            caller,
            AuditEntry::new(AuditAction::ChannelCredentialsChanged)
                .target("channel", &after.id, Some(&after.name))
                .details(serde_json::json!({ "type": after.kind, "keys": keys })),
        )
    }

    pub fn update_channel(
        &self,
        caller: &Caller,
        id: &ChannelId,
        input: ChannelInput,
    ) -> Result<Saved> {
        caller
            .require(Action::ManageChannels)
            .map_err(|d| Error::denied(d, "channel"))?;
        let t = caller.tenant().clone();
        let current = self
            .store
            .read(|tx| tx.get::<Channel>(&t, id.as_str()))?
            .ok_or(Error::NotFound("channel"))?;
        if let Some(k) = input.kind
            && k != current.kind
        {
            return Err(Error::Validation(vec![super::FieldError {
                field: "type".into(),
                message: "cannot change; create a new channel instead".into(),
            }]));
        }
        let seen = current.updated_at;
        let (mut channel, new_secret) = self.apply(current, input)?;
        channel.updated_at = now();
        self.store.write(|tx| -> Result<()> {
            // The settings were checked against the record read above: refuse to write
            // over a change made meanwhile rather than lose it.
            let stored = tx
                .get::<Channel>(&t, id.as_str())?
                .ok_or(Error::NotFound("channel"))?;
            if stored.updated_at != seen {
                return Err(Error::Conflict(
                    "channel_changed",
                    "the channel was changed by someone else meanwhile; reload and retry".into(),
                    None,
                ));
            }
            self.check_agent(tx, &t, channel.agent_id.as_ref())?;
            tx.put(&channel)?;
            self.audit_credentials(tx, caller, &stored.credentials, &channel)?;
            Ok(())
        })?;
        Ok(Saved {
            channel,
            new_identity_secret: new_secret,
        })
    }

    /// Deletes a channel, its widget key and its visitors, or its webhook, stored deliveries,
    /// contacts and the media fetched for its messages (their conversations stay in the
    /// inbox, the messages without their attachments).
    pub fn delete_channel(&self, caller: &Caller, id: &ChannelId) -> Result<()> {
        caller
            .require(Action::ManageChannels)
            .map_err(|d| Error::denied(d, "channel"))?;
        let t = caller.tenant().clone();
        let media = self.store.write(|tx| -> Result<Vec<String>> {
            let ch = tx
                .get::<Channel>(&t, id.as_str())?
                .ok_or(Error::NotFound("channel"))?;
            let mut media = Vec::new();
            if let Some(web) = &ch.web {
                tx.index_remove(Index::WidgetKey, &web.widget_key)?;
            }
            tx.index_remove(Index::ChannelWebhook, id.as_str())?;
            // The channel's stored deliveries and its contacts' lookups go with it (the
            // conversations stay in the inbox).
            for ev in tx.scan::<InboundEvent>(&t, Some(id.as_str()), |_| true)? {
                tx.index_remove(
                    Index::InboundExternal,
                    &format!("{t}/{id}/{}", ev.external_id),
                )?;
                Self::delete_inbound(tx, &ev)?;
            }
            for conv in tx.scan::<Conversation>(&t, None, |c| c.channel_id.as_ref() == Some(id))? {
                if let Some(contact) = &conv.customer.external_id {
                    tx.index_remove(Index::ChannelContact, &format!("{t}/{id}/{contact}"))?;
                }
                // The media fetched from the provider go with the channel.
                media.extend(Self::take_conversation_media(tx, &t, &conv.id)?);
            }
            for v in tx.scan::<Visitor>(&t, None, |v| &v.channel_id == id)? {
                Self::forget_visitor(tx, &v)?;
            }
            tx.delete::<Channel>(&t, id.as_str())?;
            Ok(media)
        })?;
        self.remove_media(&t, &media);
        Ok(())
    }

    /// Replaces the identity secret of a web channel with a new random one, returned once.
    /// Signatures made with the old secret stop verifying at once.
    pub fn rotate_identity_secret(&self, caller: &Caller, id: &ChannelId) -> Result<Saved> {
        caller
            .require(Action::ManageChannels)
            .map_err(|d| Error::denied(d, "channel"))?;
        let t = caller.tenant().clone();
        let secret = random_token(32);
        let sealed = self.sealer.seal(&secret);
        let channel = self.store.write(|tx| -> Result<Channel> {
            let mut ch = tx
                .get::<Channel>(&t, id.as_str())?
                .ok_or(Error::NotFound("channel"))?;
            if ch.kind != ChannelKind::Web {
                return Err(unsupported(ch.kind));
            }
            let before = ch.credentials.clone();
            ch.credentials.insert(IDENTITY_SECRET.into(), sealed);
            ch.updated_at = now();
            tx.put(&ch)?;
            self.audit_credentials(tx, caller, &before, &ch)?;
            Ok(ch)
        })?;
        Ok(Saved {
            channel,
            new_identity_secret: Some(secret),
        })
    }

    /// The plaintext of a sealed credential of a channel (`botToken`, `webhookSecret` ...),
    /// if it is set and readable. Never log it.
    pub fn channel_secret(&self, channel: &Channel, name: &str) -> Option<String> {
        channel
            .credentials
            .get(name)
            .and_then(|s| self.sealer.open(s))
    }

    /// Records what the provider said when the channel was set up or tested: `Err` puts the
    /// channel in status `error` with the provider's message; `Ok` clears an earlier error
    /// (a paused channel stays paused). `info` (what the provider told about the account,
    /// like the bot's username) is merged into the channel's public settings.
    pub fn record_channel_check(
        &self,
        caller: &Caller,
        id: &ChannelId,
        outcome: std::result::Result<serde_json::Value, String>,
    ) -> Result<Channel> {
        caller
            .require(Action::ManageChannels)
            .map_err(|d| Error::denied(d, "channel"))?;
        let t = caller.tenant().clone();
        self.store.write(|tx| -> Result<Channel> {
            let mut ch = tx
                .get::<Channel>(&t, id.as_str())?
                .ok_or(Error::NotFound("channel"))?;
            match outcome {
                Ok(info) => {
                    if ch.status == ChannelStatus::Error {
                        ch.status = ChannelStatus::Active;
                    }
                    ch.last_error = None;
                    if let (Some(cfg), Some(info)) = (ch.config.as_object_mut(), info.as_object()) {
                        for (k, v) in info {
                            cfg.insert(k.clone(), v.clone());
                        }
                    }
                }
                Err(e) => {
                    if ch.status != ChannelStatus::Paused {
                        ch.status = ChannelStatus::Error;
                    }
                    ch.last_error = Some(e);
                }
            }
            ch.updated_at = now();
            tx.put(&ch)?;
            Ok(ch)
        })
    }

    /// The channel a provider webhook URL names (any tenant); `None` when there is none or
    /// it is of another type.
    pub fn channel_for_webhook(&self, id: &str, kind: ChannelKind) -> Result<Option<Channel>> {
        let Some(id) = ChannelId::parse(id) else {
            return Ok(None);
        };
        Ok(self.store.read(|tx| {
            let Some(r) = tx.index_get(Index::ChannelWebhook, id.as_str())? else {
                return Ok(None);
            };
            let Some((t, cid)) = split_ref(&r) else {
                return Ok(None);
            };
            Ok(tx.get::<Channel>(&t, cid)?.filter(|c| c.kind == kind))
        })?)
    }

    /// The plaintext identity secret of a web channel, if one is set and readable.
    pub(crate) fn identity_secret(&self, channel: &Channel) -> Option<String> {
        channel
            .credentials
            .get(IDENTITY_SECRET)
            .and_then(|s| self.sealer.open(s))
    }

    fn check_agent(&self, tx: &WriteTx, t: &TenantId, agent: Option<&AgentId>) -> Result<()> {
        if let Some(a) = agent
            && tx.get::<Agent>(t, a.as_str())?.is_none()
        {
            return Err(Error::NotFound("agent"));
        }
        Ok(())
    }

    /// A fresh widget key entered in the install-wide index for `channel`.
    fn claim_widget_key(tx: &WriteTx, t: &TenantId, channel: &ChannelId) -> Result<String> {
        for _ in 0..8 {
            let key = new_widget_key();
            if tx.index_insert_new(Index::WidgetKey, &key, &make_ref(t, channel.as_str()))? {
                return Ok(key);
            }
        }
        Err(Error::Internal("could not draw a unique widget key".into()))
    }

    /// The web channel of a public widget key (any tenant); `None` when no channel has it.
    pub(crate) fn channel_by_widget_key(
        tx: &crate::store::ReadTx,
        key: &str,
    ) -> crate::store::Result<Option<Channel>> {
        if key.is_empty() || key.len() > 64 {
            return Ok(None);
        }
        let Some(r) = tx.index_get(Index::WidgetKey, key)? else {
            return Ok(None);
        };
        let Some((t, id)) = split_ref(&r) else {
            return Ok(None);
        };
        Ok(tx
            .get::<Channel>(&t, id)?
            .filter(|c| c.web.as_ref().is_some_and(|w| w.widget_key == key)))
    }

    /// Applies `input` to `ch` after checking every field; returns the new record and the
    /// identity secret when one was generated.
    fn apply(&self, mut ch: Channel, input: ChannelInput) -> Result<(Channel, Option<String>)> {
        let mut c = Checks::default();
        if let Some(n) = &input.name {
            c.text("name", n, 100);
            ch.name = n.trim().to_string();
        }
        if let Some(a) = input.agent_id {
            ch.agent_id = Some(a);
        }
        match input.status {
            Some(ChannelStatus::Error) => c.fail("status", "must be active or paused"),
            Some(s) => {
                ch.status = s;
                if s == ChannelStatus::Active {
                    ch.last_error = None;
                }
            }
            None => {}
        }
        if ch.kind == ChannelKind::Telegram {
            if let Some(tok) = &input.bot_token {
                let tok = tok.trim();
                c.check(
                    is_bot_token(tok),
                    "credentials.botToken",
                    "must be a bot token like 123456:ABC-DEF... from @BotFather",
                );
                ch.credentials
                    .insert(BOT_TOKEN.into(), self.sealer.seal(tok));
                // A new bot gets a new webhook secret (set with the webhook).
                ch.credentials
                    .insert(WEBHOOK_SECRET.into(), self.sealer.seal(&random_token(32)));
            }
            c.finish()?;
            return Ok((ch, None));
        }
        if is_meta(ch.kind) {
            self.apply_meta(&mut ch, input.meta, &mut c);
            c.finish()?;
            return Ok((ch, None));
        }
        let mut web = ch.web.clone().unwrap_or_else(|| WebSettings {
            widget_key: String::new(),
            allowed_origins: vec![],
            greeting: None,
            theme: WidgetTheme::default(),
            language: None,
            pre_chat: PreChat::default(),
            identity: FieldMode::Off,
        });
        if let Some(w) = input.web {
            if let Some(origins) = w.allowed_origins {
                c.check(
                    origins.len() <= MAX_ORIGINS,
                    "settings.allowedOrigins",
                    "at most 50 origins",
                );
                let mut out: Vec<String> = Vec::new();
                for (i, o) in origins.iter().enumerate() {
                    match normalize_origin(o) {
                        Some(n) if !out.contains(&n) => out.push(n),
                        Some(_) => {}
                        None => c.fail(
                            &format!("settings.allowedOrigins[{i}]"),
                            "must be an origin like https://shop.example.com (or https://*.example.com), without a path",
                        ),
                    }
                }
                web.allowed_origins = out;
            }
            if let Some(g) = w.greeting {
                if let Some(g) = &g {
                    c.check(
                        g.chars().count() <= 2000,
                        "settings.greeting",
                        "must be at most 2000 characters",
                    );
                }
                web.greeting = trimmed(g);
            }
            if let Some(color) = w.color {
                c.check(
                    is_color(color.trim()),
                    "settings.theme.color",
                    "must be a colour like #2563eb",
                );
                web.theme.color = color.trim().to_ascii_lowercase();
            }
            if let Some(t) = w.title {
                if let Some(t) = &t {
                    c.check(
                        t.chars().count() <= 100,
                        "settings.theme.title",
                        "must be at most 100 characters",
                    );
                }
                web.theme.title = trimmed(t);
            }
            if let Some(a) = w.avatar_url {
                let a = trimmed(a);
                if let Some(a) = &a {
                    let ok = a.len() <= 2000
                        && url::Url::parse(a)
                            .is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.has_host());
                    c.check(
                        ok,
                        "settings.theme.avatarUrl",
                        "must be an http(s) URL of at most 2000 characters",
                    );
                }
                web.theme.avatar_url = a;
            }
            if let Some(p) = w.position {
                web.theme.position = p;
            }
            if let Some(l) = w.language {
                let l = trimmed(l);
                if let Some(l) = &l {
                    c.check(
                        is_language(l),
                        "settings.language",
                        "must be a language tag like en or pt-BR",
                    );
                }
                web.language = l;
            }
            if let Some(m) = w.pre_chat_name {
                web.pre_chat.name = m;
            }
            if let Some(m) = w.pre_chat_email {
                web.pre_chat.email = m;
            }
            if let Some(m) = w.identity {
                web.identity = m;
            }
        }
        let mut generated = None;
        match input.identity_secret {
            Some(Some(s)) => {
                let s = s.trim().to_string();
                c.check(
                    s.chars().count() >= MIN_SECRET_LEN && s.len() <= 256,
                    "credentials.identitySecret",
                    "must be 32 to 256 characters",
                );
                ch.credentials
                    .insert(IDENTITY_SECRET.into(), self.sealer.seal(&s));
            }
            Some(None) => {
                c.check(
                    web.identity == FieldMode::Off,
                    "credentials.identitySecret",
                    "cannot be removed while identity verification is on",
                );
                ch.credentials.remove(IDENTITY_SECRET);
            }
            None => {}
        }
        // Verification needs a secret: make one the first time it is turned on.
        if web.identity != FieldMode::Off && !ch.credentials.contains_key(IDENTITY_SECRET) {
            let s = random_token(32);
            ch.credentials
                .insert(IDENTITY_SECRET.into(), self.sealer.seal(&s));
            generated = Some(s);
        }
        c.finish()?;
        ch.web = Some(web);
        Ok((ch, generated))
    }
}

impl Services {
    /// Checks and applies the Meta part of a create or update; a verify token is generated
    /// the first time none is given.
    fn apply_meta(&self, ch: &mut Channel, m: MetaInput, c: &mut Checks) {
        let tok = token_credential(ch.kind);
        if let Some(t) = m.access_token {
            let t = t.trim();
            c.check(
                is_opaque_secret(t, 20, 2000),
                &format!("credentials.{tok}"),
                "must be the access token from Meta (20 to 2000 characters, no spaces)",
            );
            ch.credentials.insert(tok.into(), self.sealer.seal(t));
        }
        if let Some(s) = m.app_secret {
            let s = s.trim();
            c.check(
                is_opaque_secret(s, 8, 256),
                "credentials.appSecret",
                "must be the app secret from the Meta app's basic settings (8 to 256 characters, no spaces)",
            );
            ch.credentials
                .insert(APP_SECRET.into(), self.sealer.seal(s));
        }
        match m.verify_token {
            Some(v) => {
                let v = v.trim();
                c.check(
                    is_opaque_secret(v, 8, 256),
                    "credentials.verifyToken",
                    "must be 8 to 256 characters without spaces",
                );
                ch.credentials
                    .insert(VERIFY_TOKEN.into(), self.sealer.seal(v));
            }
            None if !ch.credentials.contains_key(VERIFY_TOKEN) => {
                ch.credentials
                    .insert(VERIFY_TOKEN.into(), self.sealer.seal(&random_token(24)));
            }
            None => {}
        }
        if let (Some(id), Some(key)) = (m.account_id, account_setting(ch.kind)) {
            let id = id.trim().to_string();
            c.check(
                !id.is_empty() && id.len() <= 32 && id.chars().all(|c| c.is_ascii_digit()),
                &format!("settings.{key}"),
                "must be the numeric id Meta shows for it",
            );
            if !ch.config.is_object() {
                ch.config = serde_json::json!({});
            }
            if let Some(cfg) = ch.config.as_object_mut() {
                // A different account: what a test learned about the old one no longer holds.
                if cfg.get(key).and_then(|v| v.as_str()) != Some(id.as_str()) {
                    cfg.clear();
                }
                cfg.insert(key.into(), id.into());
            }
        }
    }
}

/// A token or secret pasted from a provider's console: printable ASCII without spaces.
fn is_opaque_secret(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len()) && s.chars().all(|c| c.is_ascii_graphic())
}

/// `<digits>:<token>` as @BotFather hands them out (kept loose on the token part).
fn is_bot_token(t: &str) -> bool {
    let Some((id, rest)) = t.split_once(':') else {
        return false;
    };
    !id.is_empty()
        && id.len() <= 20
        && id.chars().all(|c| c.is_ascii_digit())
        && (20..=200).contains(&rest.len())
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn unsupported(kind: ChannelKind) -> Error {
    Error::Invalid(
        "unsupported_channel_type",
        format!(
            "channels of type {} do not have this (it is for web channels)",
            serde_json::to_value(kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalised_and_anything_else_refused() {
        assert_eq!(
            normalize_origin("HTTPS://Shop.Example.com/").as_deref(),
            Some("https://shop.example.com")
        );
        assert_eq!(
            normalize_origin("https://shop.example.com:443").as_deref(),
            Some("https://shop.example.com")
        );
        assert_eq!(
            normalize_origin("http://localhost:8080").as_deref(),
            Some("http://localhost:8080")
        );
        assert_eq!(
            normalize_origin("https://*.example.com").as_deref(),
            Some("https://*.example.com")
        );
        for bad in [
            "shop.example.com",
            "ftp://x.example.com",
            "https://x.example.com/path",
            "https://x.example.com?q",
            "https://user@x.example.com",
            "https://",
            "https://a*.example.com",
            "javascript://x",
        ] {
            assert_eq!(normalize_origin(bad), None, "{bad}");
        }
    }

    #[test]
    fn origins_match_exactly_or_by_subdomain_wildcard() {
        let allowed = vec![
            "https://shop.example.com".to_string(),
            "https://*.brand.test".to_string(),
        ];
        assert!(origin_matches(&allowed, "https://shop.example.com"));
        assert!(origin_matches(&allowed, "https://SHOP.example.com:443"));
        assert!(!origin_matches(&allowed, "http://shop.example.com"));
        assert!(!origin_matches(&allowed, "https://shop.example.com:8443"));
        assert!(!origin_matches(&allowed, "https://evil.example.com"));
        assert!(origin_matches(&allowed, "https://a.brand.test"));
        assert!(origin_matches(&allowed, "https://a.b.brand.test"));
        assert!(!origin_matches(&allowed, "https://brand.test"));
        assert!(!origin_matches(&allowed, "https://evilbrand.test"));
        assert!(!origin_matches(&allowed, "https://*.brand.test"));
        assert!(!origin_matches(&allowed, "null"));
        assert!(!origin_matches(&[], "https://shop.example.com"));
    }

    #[test]
    fn colours_and_languages() {
        assert!(is_color("#2563eb") && is_color("#FFF"));
        assert!(!is_color("2563eb") && !is_color("#12345g") && !is_color("red"));
        assert!(is_language("en") && is_language("pt-BR"));
        assert!(!is_language("") && !is_language("-x") && !is_language("en_US!"));
    }
}
