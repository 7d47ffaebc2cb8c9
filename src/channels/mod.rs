//! Messaging channels' provider side: setting a channel up with its provider (Telegram's
//! setWebhook), testing its credentials, the jobs that process stored webhook deliveries into
//! conversations and hand replies to the provider (the outbox), per provider. The rules
//! (what is stored, deduplicated, dead-lettered) are domain/inbound.rs's; this module only
//! talks to providers and drives those rules. Must not depend on api/.

pub mod meta;
pub mod telegram;

use crate::auth::Caller;
use crate::domain::channels::{BOT_TOKEN, WEBHOOK_SECRET, account_id, is_meta, token_credential};
use crate::domain::inbound::{
    DELIVERY_UNKNOWN, InboundPart, InboundPayload, JOB_INBOUND, JOB_SEND, SendPayload,
    delivery_unknown, inbound_pending, window_check,
};
use crate::domain::{self, Services};
use crate::jobs::{Class, Failure, JobCtx, JobError, Jobs, Policy};
use crate::model::*;
use crate::types::ChannelId;
use std::sync::Arc;

/// Where a channel's provider delivers its webhooks, absolute.
pub fn webhook_url(base: &str, channel: &Channel) -> Option<String> {
    let path = match channel.kind {
        ChannelKind::Telegram => "telegram",
        ChannelKind::Whatsapp => "whatsapp",
        ChannelKind::Messenger => "messenger",
        ChannelKind::Instagram => "instagram",
        ChannelKind::Web => return None,
    };
    Some(format!(
        "{}/webhooks/{path}/{}",
        base.trim_end_matches('/'),
        channel.id
    ))
}

/// The provider clients and the jobs built on them.
pub struct Channels {
    svc: Arc<Services>,
    telegram: telegram::Telegram,
    graph: meta::Graph,
    /// Runs the providers' calls of jobs (the job workers are blocking threads).
    rt: std::sync::OnceLock<tokio::runtime::Handle>,
}

impl Channels {
    pub fn new(svc: Arc<Services>) -> Self {
        let telegram = telegram::Telegram::new(&svc.config.telegram_api_base_url);
        let graph = meta::Graph::new(
            &svc.config.meta_graph_base_url,
            &svc.config.meta_graph_version,
        );
        Channels {
            svc,
            telegram,
            graph,
            rt: std::sync::OnceLock::new(),
        }
    }

    /// Registers the inbound and outbox jobs; `rt` runs their network calls.
    pub fn register_jobs(self: &Arc<Self>, jobs: &Jobs, rt: tokio::runtime::Handle) {
        let _ = self.rt.set(rt.clone());
        let me = self.clone();
        jobs.register_with(
            JOB_INBOUND,
            Policy {
                class: Class::Interactive,
                max_attempts: 3,
            },
            Arc::new(move |ctx| me.inbound_job(ctx)),
        );
        let (me, rt2) = (self.clone(), rt.clone());
        jobs.register_with(
            JOB_SEND,
            Policy {
                class: Class::Interactive,
                max_attempts: self.svc.config.channel_send_max_attempts,
            },
            Arc::new(move |ctx| me.send_job(ctx, &rt2)),
        );
        let me = self.clone();
        jobs.register(
            &format!("{JOB_SEND}#failed"),
            Arc::new(move |ctx| {
                me.send_gave_up(ctx);
                Ok(())
            }),
        );
        let me = self.clone();
        jobs.register(
            &format!("{JOB_INBOUND}#failed"),
            Arc::new(move |ctx| {
                if let Ok(p) = serde_json::from_value::<InboundPayload>(ctx.job.payload.clone()) {
                    let reason = ctx
                        .job
                        .error
                        .clone()
                        .unwrap_or_else(|| "processing failed".into());
                    let _ = me
                        .svc
                        .finish_inbound(&Caller::for_job(ctx.job), &p, Err(reason));
                }
                Ok(())
            }),
        );
    }

    /// Connects a channel to its provider after a create or a credential change
    /// (Telegram: setWebhook with the channel's secret); the outcome is recorded on the
    /// channel (status `error` with the provider's words when it fails). `base` is this
    /// server's public base URL (PUBLIC_URL, else what the admin's request reached).
    pub async fn set_up(
        &self,
        caller: &Caller,
        id: &ChannelId,
        base: &str,
    ) -> domain::Result<Channel> {
        let (svc, c, i) = (self.svc.clone(), caller.clone(), id.clone());
        let ch = run(move || svc.get_channel(&c, &i)).await?;
        if ch.kind != ChannelKind::Telegram {
            return Ok(ch);
        }
        let outcome = match (
            self.svc.channel_secret(&ch, BOT_TOKEN),
            self.svc.channel_secret(&ch, WEBHOOK_SECRET),
            webhook_url(base, &ch),
        ) {
            (Some(token), Some(secret), Some(url)) => self
                .telegram
                .set_webhook(&token, &url, &secret)
                .await
                .map(|()| serde_json::json!({}))
                .map_err(|e| e.message),
            _ => Err("the bot token is missing or unreadable; set it again".into()),
        };
        let (svc, c, i) = (self.svc.clone(), caller.clone(), id.clone());
        run(move || svc.record_channel_check(&c, &i, outcome)).await
    }

    /// Asks the provider about the channel's account with the stored credentials
    /// (Telegram: getMe). `Ok` with what it learned, or `Err` with the provider's words;
    /// either way recorded on the channel.
    pub async fn test(
        &self,
        caller: &Caller,
        id: &ChannelId,
    ) -> domain::Result<(Channel, Result<serde_json::Value, String>)> {
        let (svc, c, i) = (self.svc.clone(), caller.clone(), id.clone());
        let ch = run(move || svc.get_channel(&c, &i)).await?;
        if ch.kind == ChannelKind::Web {
            return Err(domain::Error::Invalid(
                "unsupported_channel_type",
                "a web channel has no provider to test".into(),
            ));
        }
        let outcome = if is_meta(ch.kind) {
            self.test_meta(&ch).await
        } else {
            self.test_telegram(&ch).await
        };
        let (svc, c, i, o) = (
            self.svc.clone(),
            caller.clone(),
            id.clone(),
            outcome.clone(),
        );
        let ch = run(move || svc.record_channel_check(&c, &i, o)).await?;
        Ok((ch, outcome))
    }

    /// Asks Meta about the channel's account: the phone number (WhatsApp), the page
    /// (Messenger) or the Instagram account.
    async fn test_meta(&self, ch: &Channel) -> Result<serde_json::Value, String> {
        let (Some(token), Some(account)) = (
            self.svc.channel_secret(ch, token_credential(ch.kind)),
            account_id(ch),
        ) else {
            return Err(
                "the access token or the account id is missing or unreadable; set it again".into(),
            );
        };
        let (fields, map): (&str, &[(&str, &str)]) = match ch.kind {
            ChannelKind::Whatsapp => (
                "display_phone_number,verified_name,quality_rating",
                &[
                    ("display_phone_number", "displayPhoneNumber"),
                    ("verified_name", "verifiedName"),
                    ("quality_rating", "qualityRating"),
                ],
            ),
            ChannelKind::Messenger => ("name", &[("name", "pageName")]),
            _ => (
                "username,name",
                &[("username", "username"), ("name", "name")],
            ),
        };
        let v = self
            .graph
            .node(&token, &account, fields)
            .await
            .map_err(|e| e.message)?;
        let mut out = serde_json::Map::new();
        for (from, to) in map {
            if let Some(x) = v.get(*from).filter(|x| !x.is_null()) {
                out.insert((*to).to_string(), x.clone());
            }
        }
        Ok(serde_json::Value::Object(out))
    }

    async fn test_telegram(&self, ch: &Channel) -> Result<serde_json::Value, String> {
        match self.svc.channel_secret(ch, BOT_TOKEN) {
            Some(token) => match self.telegram.get_me(&token).await {
                Ok(me) => Ok(serde_json::json!({
                    "botId": me["id"],
                    "botUsername": me["username"],
                    "botName": me["first_name"],
                })),
                Err(e) => Err(e.message),
            },
            None => Err("the bot token is missing or unreadable; set it again".into()),
        }
    }

    /// Processes one stored delivery: its message joins (or opens) the sender's
    /// conversation, exactly once (the update id is the message's idempotency key, so a
    /// retry after a crash finds the message already stored). Deliveries of a paused or
    /// deleted channel, and bodies that are not updates, become dead letters.
    fn inbound_job(&self, ctx: &JobCtx) -> Result<(), JobError> {
        let caller = Caller::for_job(ctx.job);
        let p: InboundPayload = serde_json::from_value(ctx.job.payload.clone())
            .map_err(|_| JobError::Final("the inbound job names no delivery".into()))?;
        let fail = |e: domain::Error| JobError::Failed(e.to_string().into());
        let Some((ev, channel)) = self.svc.inbound_event(&caller, &p).map_err(fail)? else {
            return Ok(());
        };
        if !inbound_pending(&ev, &p) {
            return Ok(());
        }
        let outcome = match channel {
            None => Err("the channel was deleted".to_string()),
            Some(ch) if ch.status == ChannelStatus::Paused => {
                Err(crate::domain::inbound::CHANNEL_PAUSED.to_string())
            }
            Some(ch) => match self.deliver(&caller, &ch, &ev, p.part.as_ref()) {
                Ok(()) => Ok(()),
                Err(Fail::Dead(e)) => Err(e),
                // Left queued: the job is tried again (a dead letter once it gives up).
                Err(Fail::Retry(e)) => return Err(JobError::Failed(e.into())),
            },
        };
        self.svc.finish_inbound(&caller, &p, outcome).map_err(fail)
    }

    /// Fetches one media item with the channel's token (in the job, never in the webhook
    /// handler) and stores it in the data directory under `att_id` (derived from the
    /// provider's ids, so a retry overwrites the same file). `Dead` when it cannot be had
    /// (too large, refused): the message then says what arrived instead.
    fn fetch_media(
        &self,
        ch: &Channel,
        att_id: &str,
        kind: &str,
        file_name: Option<String>,
        download: impl std::future::Future<
            Output = Result<(Vec<u8>, Option<String>), telegram::CallError>,
        >,
    ) -> Result<Attachment, Fail> {
        let Some(rt) = self.rt.get() else {
            return Err(Fail::Retry("the job runtime is not ready".into()));
        };
        match rt.block_on(download) {
            Ok((bytes, mime)) => {
                self.svc
                    .save_attachment(&ch.tenant_id, att_id, &bytes)
                    .map_err(|e| Fail::Retry(e.to_string()))?;
                Ok(Attachment {
                    id: att_id.to_string(),
                    kind: kind.to_string(),
                    mime_type: mime,
                    file_name: file_name.map(|n| n.chars().take(200).collect()),
                    size: bytes.len() as u64,
                })
            }
            Err(e) if e.retryable => Err(Fail::Retry(e.message)),
            Err(e) => Err(Fail::Dead(e.message)),
        }
    }

    /// Processes the items of `part` of a delivery (all of them without one).
    fn deliver(
        &self,
        caller: &Caller,
        ch: &Channel,
        ev: &InboundEvent,
        part: Option<&InboundPart>,
    ) -> Result<(), Fail> {
        let v: serde_json::Value =
            serde_json::from_str(&ev.payload).map_err(|e| Fail::Dead(format!("not JSON: {e}")))?;
        if is_meta(ch.kind) {
            return self.deliver_meta(caller, ch, &v, part);
        }
        let max = self.svc.config.channel_media_max_bytes;
        let Some(msg) = (match ch.kind {
            ChannelKind::Telegram => telegram::incoming(&v, max).map_err(Fail::Dead)?,
            _ => {
                return Err(Fail::Dead(
                    "this channel type takes no webhook deliveries".into(),
                ));
            }
        }) else {
            return Ok(());
        };
        let mut text = msg.text.clone();
        let mut attachments = vec![];
        if let Some(media) = &msg.media {
            let token = self.svc.channel_secret(ch, BOT_TOKEN).unwrap_or_default();
            let att_id = short_hash(&format!("tg/{}/{}", ev.external_id, media.file_id));
            let mime = media.mime_type.clone();
            let download = async {
                self.telegram
                    .download(&token, &media.file_id, max)
                    .await
                    .map(|b| (b, mime))
            };
            match self.fetch_media(ch, &att_id, &media.kind, media.file_name.clone(), download) {
                Ok(a) => {
                    text = msg
                        .caption
                        .clone()
                        .unwrap_or_else(|| format!("[The customer sent {}]", media_word(&a.kind)));
                    attachments.push(a);
                }
                Err(Fail::Dead(reason)) => text = format!("{text} ({reason})"),
                Err(retry) => return Err(retry),
            }
        }
        let customer = Customer {
            name: msg.name.map(|n| n.chars().take(200).collect()),
            email: None,
            external_id: Some(msg.chat_id.clone()),
        };
        let conv = self
            .svc
            .contact_conversation(caller, ch, &msg.chat_id, customer)
            .map_err(|e| Fail::Dead(e.to_string()))?;
        let text: String = text
            .chars()
            .take(crate::domain::conversations::MAX_MESSAGE_CHARS)
            .collect();
        let key = format!("tg:{}", ev.external_id);
        self.svc
            .post_message_with(
                caller,
                &conv.id,
                MessageRole::Customer,
                &text,
                Some(&key),
                &attachments,
            )
            .map(|_| ())
            .map_err(|e| Fail::Dead(e.to_string()))
    }

    /// Every message, status and read receipt of a Meta payload, in order. Each message's
    /// provider id is its idempotency key in the conversation, so a retry of the job (or a
    /// provider's replay in another payload) stores nothing twice.
    fn deliver_meta(
        &self,
        caller: &Caller,
        ch: &Channel,
        v: &serde_json::Value,
        part: Option<&InboundPart>,
    ) -> Result<(), Fail> {
        let account = account_id(ch).unwrap_or_default();
        let (items, foreign) = meta::items(ch.kind, v, &account).map_err(Fail::Dead)?;
        if items.is_empty() && foreign > 0 {
            return Err(Fail::Dead(format!(
                "the payload is for another account than this channel's ({account})"
            )));
        }
        let token = self
            .svc
            .channel_secret(ch, token_credential(ch.kind))
            .unwrap_or_default();
        let max = self.svc.config.channel_media_max_bytes;
        let prefix = match ch.kind {
            ChannelKind::Whatsapp => "wa",
            ChannelKind::Messenger => "fb",
            _ => "ig",
        };
        let e = |e: domain::Error| Fail::Dead(e.to_string());
        for item in items.into_iter().filter(|i| meta::in_part(i, part)) {
            match item {
                meta::Item::Message(m) => {
                    let mut attachments = vec![];
                    let mut notes = vec![];
                    for (i, media) in m.media.iter().enumerate() {
                        let att_id = short_hash(&format!("{prefix}/{}/{i}", m.id));
                        let download = self.graph.download(&token, media, max);
                        match self.fetch_media(
                            ch,
                            &att_id,
                            &media.kind,
                            media.file_name.clone(),
                            download,
                        ) {
                            Ok(a) => attachments.push(a),
                            Err(Fail::Dead(reason)) => notes.push(format!(
                                "[The customer sent {}, not shown here: {reason}]",
                                media_word(&media.kind)
                            )),
                            Err(retry) => return Err(retry),
                        }
                    }
                    let text = incoming_text(&m, &attachments, &notes);
                    if text.trim().is_empty() {
                        continue;
                    }
                    let customer = Customer {
                        name: m.name.clone(),
                        email: None,
                        external_id: Some(m.contact.clone()),
                    };
                    let conv = self
                        .svc
                        .contact_conversation(caller, ch, &m.contact, customer)
                        .map_err(e)?;
                    let key = format!("{prefix}:{}", short_hash(&m.id));
                    self.svc
                        .post_message_with(
                            caller,
                            &conv.id,
                            MessageRole::Customer,
                            &text,
                            Some(&key),
                            &attachments,
                        )
                        .map_err(e)?;
                }
                meta::Item::Status { id, status, error } => self
                    .svc
                    .provider_status(caller, ch, &id, status, error)
                    .map_err(e)?,
                meta::Item::Read {
                    contact,
                    watermark_ms,
                } => {
                    let Ok(at) = time::OffsetDateTime::from_unix_timestamp_nanos(
                        i128::from(watermark_ms) * 1_000_000,
                    ) else {
                        continue;
                    };
                    self.svc
                        .provider_read(caller, ch, &contact, at)
                        .map_err(e)?
                }
            }
        }
        Ok(())
    }

    /// Hands one reply to the provider, part by part (long texts are split to the
    /// provider's limit); each accepted part is recorded on the job so a retry, or the
    /// restart after a crash, resumes after it instead of sending it again.
    fn send_job(&self, ctx: &JobCtx, rt: &tokio::runtime::Handle) -> Result<(), JobError> {
        let caller = Caller::for_job(ctx.job);
        let p: SendPayload = serde_json::from_value(ctx.job.payload.clone())
            .map_err(|_| JobError::Final("the outbox job names no message".into()))?;
        let fail = |e: domain::Error| JobError::Failed(e.to_string().into());
        let Some(out) = self.svc.outgoing(&caller, &p).map_err(fail)? else {
            return Ok(());
        };
        // A part was being handed to the provider when the server stopped (or this job was
        // cut off): the provider may have taken it, and sending it again could show the
        // customer the reply twice. A person decides (the message is failed, resendable).
        if p.attempt.is_some_and(|a| a >= p.sent_parts) {
            return Err(JobError::Final(Failure::coded(
                MessageErrorCode::DeliveryUnknown,
                DELIVERY_UNKNOWN,
            )));
        }
        let kind = out.channel.kind;
        if kind == ChannelKind::Web {
            return Err(JobError::Final("a web channel has no outbox".into()));
        }
        let Some(to) = out.conversation.customer.external_id.clone() else {
            return Err(JobError::Final(
                "the conversation has no contact on the channel to answer".into(),
            ));
        };
        let token_name = if is_meta(kind) {
            token_credential(kind)
        } else {
            BOT_TOKEN
        };
        let Some(token) = self.svc.channel_secret(&out.channel, token_name) else {
            return Err(JobError::Final(
                format!("the channel's {token_name} is missing or unreadable").into(),
            ));
        };
        let account = account_id(&out.channel).unwrap_or_default();
        // The window is checked again when sending: a reply may have waited in the outbox.
        let human_agent = if p.template.is_some() {
            false
        } else {
            window_check(
                kind,
                out.message.role,
                out.last_customer_at,
                crate::types::now(),
            )
            .map_err(|reason| {
                JobError::Final(Failure::coded(
                    MessageErrorCode::OutsideMessagingWindow,
                    reason,
                ))
            })?
        };
        let parts = match &p.template {
            Some(_) => vec![String::new()],
            None if is_meta(kind) => {
                telegram::split_text(&out.message.content, meta::max_text_chars(kind))
            }
            None => telegram::split_text(&out.message.content, telegram::MAX_TEXT_CHARS),
        };
        for (i, part) in parts.iter().enumerate().skip(p.sent_parts as usize) {
            // Durable before the call: a crash during it is recognised after the restart.
            self.svc
                .record_send_attempt(&caller, &ctx.job.id, Some(i as u32))
                .map_err(fail)?;
            let sent = rt.block_on(async {
                let call = async {
                    if !is_meta(kind) {
                        return self
                            .telegram
                            .send_message(&token, &to, part)
                            .await
                            .map(|_| String::new());
                    }
                    let what = match &p.template {
                        Some(t) => meta::Outgoing::Template {
                            name: &t.name,
                            language: &t.language,
                            parameters: &t.parameters,
                        },
                        None => meta::Outgoing::Text(part),
                    };
                    self.graph
                        .send(kind, &token, &account, &to, what, human_agent)
                        .await
                };
                tokio::select! {
                    r = call => Some(r),
                    _ = ctx.cancelled() => None,
                }
            });
            match sent {
                // Cut off during the call: the attempt stays recorded (outcome unknown).
                None => return Err(JobError::Interrupted),
                Some(Err(e)) if e.unknown_outcome => {
                    return Err(JobError::Final(Failure::coded(
                        MessageErrorCode::DeliveryUnknown,
                        delivery_unknown(&e.message),
                    )));
                }
                Some(Ok(provider_id)) => self
                    .svc
                    .record_send_progress(
                        &caller,
                        &ctx.job.id,
                        (i + 1) as u32,
                        Some((&out.channel.id, provider_id.as_str())),
                    )
                    .map_err(fail)?,
                Some(Err(e)) => {
                    // The provider refused it, or it never left: a retry may send it.
                    self.svc
                        .record_send_attempt(&caller, &ctx.job.id, None)
                        .map_err(fail)?;
                    return Err(send_error(e));
                }
            }
        }
        self.svc.mark_outgoing_sent(&caller, &p).map_err(fail)
    }

    /// The outbox gave up on a message: it is marked failed with the provider's error and
    /// the code the send failed with (`send_failed` when it gave none: it crashed the
    /// server each time, or a domain error ended it).
    fn send_gave_up(&self, ctx: &JobCtx) {
        let Ok(p) = serde_json::from_value::<SendPayload>(ctx.job.payload.clone()) else {
            return;
        };
        let reason = ctx
            .job
            .error
            .clone()
            .unwrap_or_else(|| "the message could not be sent".into());
        let code = ctx.job.error_code.unwrap_or(MessageErrorCode::SendFailed);
        if let Err(e) = self
            .svc
            .fail_outgoing(&Caller::for_job(ctx.job), &p, code, &reason)
        {
            tracing::error!(error = %e, "marking an unsent message failed did not work");
        }
    }
}

/// The job's outcome for a send the provider refused or that never left: retried on
/// 429, 5xx and network trouble, failed for good otherwise.
fn send_error(e: telegram::CallError) -> JobError {
    let failure = Failure::coded(MessageErrorCode::SendFailed, e.message);
    if !e.retryable {
        return JobError::Final(failure);
    }
    match e.retry_after {
        Some(w) => JobError::RetryAfter(failure, w),
        None => JobError::Failed(failure),
    }
}

async fn run<T: Send + 'static>(
    f: impl FnOnce() -> domain::Result<T> + Send + 'static,
) -> domain::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| domain::Error::Internal(e.to_string()))?
}

/// Why a delivery was not processed: for good (a dead letter) or for now (retried).
enum Fail {
    Dead(String),
    Retry(String),
}

fn media_word(kind: &str) -> &'static str {
    match kind {
        "image" => "an image",
        "audio" => "an audio message",
        "video" => "a video",
        "document" | "file" => "a document",
        "sticker" => "a sticker",
        _ => "a file",
    }
}

/// The text stored for a customer's message: its text (a media's caption), what arrived
/// when it cannot be shown, or what the attachments are when there is no text.
fn incoming_text(m: &meta::Incoming, attachments: &[Attachment], notes: &[String]) -> String {
    let mut parts: Vec<String> = vec![];
    if let Some(u) = &m.unsupported {
        parts.push(format!("[The customer sent {u}, not shown here]"));
    }
    parts.extend(notes.iter().cloned());
    if !m.text.trim().is_empty() {
        parts.push(m.text.clone());
    } else if parts.is_empty()
        && let Some(a) = attachments.first()
    {
        parts.push(format!("[The customer sent {}]", media_word(&a.kind)));
    }
    parts
        .join(" ")
        .chars()
        .take(crate::domain::conversations::MAX_MESSAGE_CHARS)
        .collect()
}

/// A short stable digest of a provider id (wamids are longer than idempotency keys).
fn short_hash(id: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(id.as_bytes())[..16])
}
