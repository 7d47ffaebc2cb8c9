//! Meta's Graph API as WhatsApp Cloud API, Messenger and Instagram channels use it: the
//! webhook signature (`X-Hub-Signature-256`), the shapes of a (batched) webhook payload
//! turned into a flat list of messages and statuses, sending texts and WhatsApp templates,
//! asking about the account, fetching media, and phone numbers in E.164. Calls go to the
//! operator's `META_GRAPH_BASE_URL` + `META_GRAPH_VERSION` (operator-trusted: the tenant
//! address policy does not apply); tokens travel in the Authorization header and are
//! redacted from every error text.

use super::telegram::CallError;
use crate::domain::inbound::InboundPart;
use crate::model::{ChannelKind, MessageStatus};
use crate::net::policy::Policy;
use crate::net::upstream;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::time::Duration;

/// Longest text of one message per provider (characters).
pub fn max_text_chars(kind: ChannelKind) -> usize {
    match kind {
        ChannelKind::Whatsapp => 4096,
        ChannelKind::Messenger => 2000,
        ChannelKind::Instagram => 1000,
        _ => 4096,
    }
}

/// Time allowed for one Graph API call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// True when `header` (`sha256=<hex>`) is the HMAC-SHA256 of `body` keyed with `secret`,
/// compared in constant time.
pub fn signature_ok(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(given) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    crate::auth::tokens::ct_eq_bytes(&expected, &given)
}

/// `sha256=<hex>` of `body` with `secret`, as Meta signs (for tests and tools).
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("BUG: HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A phone number in E.164 (`+` and 8 to 15 digits) from the forms providers and people
/// write: WhatsApp's `wa_id` digits without `+`, `+1 (555) 123-4567`, `0044 20 ...`.
/// `None` when it is not a plausible international number.
pub fn e164(raw: &str) -> Option<String> {
    let s = raw.trim();
    let mut digits = String::with_capacity(16);
    for (i, c) in s.chars().enumerate() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 => {}
            ' ' | '-' | '(' | ')' | '.' => {}
            _ => return None,
        }
    }
    // The international call prefix `00` stands for `+`.
    let digits = match digits.strip_prefix("00") {
        Some(rest) if !s.starts_with('+') => rest.to_string(),
        _ => digits,
    };
    if !(8..=15).contains(&digits.len()) || digits.starts_with('0') {
        return None;
    }
    Some(format!("+{digits}"))
}

/// One thing a webhook payload carries, in payload order.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A customer's message.
    Message(Incoming),
    /// What happened to a message we sent (WhatsApp statuses, Messenger deliveries).
    Status {
        /// The provider's id of our message (wamid, mid).
        id: String,
        status: MessageStatus,
        /// The provider's error, for `failed`.
        error: Option<String>,
    },
    /// The customer read everything we sent up to `watermark_ms` (Messenger, Instagram).
    Read { contact: String, watermark_ms: i64 },
}

/// A customer's message.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    /// The provider's message id (wamid, mid): the deduplication key.
    pub id: String,
    /// Who wrote: E.164 phone number (WhatsApp) or page-scoped id (Messenger, Instagram).
    pub contact: String,
    pub name: Option<String>,
    /// The text (or the media's caption; empty when there is none).
    pub text: String,
    /// Media the message carries, to fetch with the channel's token.
    pub media: Vec<Media>,
    /// A kind of message that cannot be shown (a location, a sticker ...), named.
    pub unsupported: Option<String>,
}

/// A media item of a customer's message.
#[derive(Debug, Clone, PartialEq)]
pub struct Media {
    /// `image`, `audio`, `video`, `document`, `file` ...
    pub kind: String,
    /// WhatsApp's media id (GET /{id} answers the download URL).
    pub media_id: Option<String>,
    /// Messenger/Instagram: the URL to download from.
    pub url: Option<String>,
    pub mime_type: Option<String>,
    pub file_name: Option<String>,
}

fn s(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn status_of(s: &str) -> Option<MessageStatus> {
    Some(match s {
        "sent" => MessageStatus::Sent,
        "delivered" => MessageStatus::Delivered,
        "read" => MessageStatus::Read,
        "failed" => MessageStatus::Failed,
        _ => return None,
    })
}

/// The provider's words for an error object (`{code, title, message, error_data}`).
fn error_text(e: &Value) -> String {
    let title = e["title"]
        .as_str()
        .or(e["message"].as_str())
        .unwrap_or("unknown error");
    let detail = e["error_data"]["details"].as_str().filter(|d| *d != title);
    let code = e["code"].as_i64();
    let mut out = match code {
        Some(c) => format!("({c}) {title}"),
        None => title.to_string(),
    };
    if let Some(d) = detail {
        out.push_str(": ");
        out.push_str(d);
    }
    upstream::sanitise(&out, 500)
}

/// Every message and status of a webhook payload of `kind` for the account `account`
/// (phone number id, page id or Instagram account id), in payload order: every entry, every
/// change, every message. Entries of other accounts are left out (counted in the second
/// value). `Err` when the body is not a payload of this provider at all.
pub fn items(kind: ChannelKind, v: &Value, account: &str) -> Result<(Vec<Item>, usize), String> {
    let object = v["object"].as_str().unwrap_or("");
    let expected = match kind {
        ChannelKind::Whatsapp => "whatsapp_business_account",
        ChannelKind::Messenger => "page",
        ChannelKind::Instagram => "instagram",
        _ => return Err("not a Meta channel".into()),
    };
    if object != expected {
        return Err(format!(
            "not a {expected} webhook payload (object is {object:?})"
        ));
    }
    let entries = v["entry"]
        .as_array()
        .ok_or("the payload has no entry list")?;
    let mut out = Vec::new();
    let mut foreign = 0;
    for entry in entries {
        if kind == ChannelKind::Whatsapp {
            for change in entry["changes"].as_array().into_iter().flatten() {
                if change["field"].as_str() != Some("messages") {
                    continue;
                }
                let value = &change["value"];
                let phone_id = s(&value["metadata"]["phone_number_id"]).unwrap_or_default();
                if !account.is_empty() && !phone_id.is_empty() && phone_id != account {
                    foreign += 1;
                    continue;
                }
                whatsapp_value(value, &mut out);
            }
        } else {
            let id = s(&entry["id"]).unwrap_or_default();
            if !account.is_empty() && !id.is_empty() && id != account {
                foreign += 1;
                continue;
            }
            for m in entry["messaging"].as_array().into_iter().flatten() {
                messaging(m, &mut out);
            }
        }
    }
    Ok((out, foreign))
}

/// How a delivery's items are split among its processing jobs: one part per contact with
/// messages or read receipts (in the order they first appear), and one for statuses.
pub fn parts(items: &[Item]) -> Vec<InboundPart> {
    let mut out: Vec<InboundPart> = Vec::new();
    for item in items {
        let part = match item {
            Item::Message(m) => InboundPart::Contact(m.contact.clone()),
            Item::Read { contact, .. } => InboundPart::Contact(contact.clone()),
            Item::Status { .. } => InboundPart::Statuses,
        };
        if !out.contains(&part) {
            out.push(part);
        }
    }
    out
}

/// Whether `item` belongs to the job of `part` (every item when there is no part).
pub fn in_part(item: &Item, part: Option<&InboundPart>) -> bool {
    match (part, item) {
        (None, _) => true,
        (Some(InboundPart::Contact(c)), Item::Message(m)) => m.contact == *c,
        (Some(InboundPart::Contact(c)), Item::Read { contact, .. }) => contact == c,
        (Some(InboundPart::Statuses), Item::Status { .. }) => true,
        _ => false,
    }
}

fn whatsapp_value(value: &Value, out: &mut Vec<Item>) {
    let contacts = value["contacts"].as_array();
    let name_of = |wa_id: &str| {
        contacts
            .into_iter()
            .flatten()
            .find(|c| s(&c["wa_id"]).as_deref() == Some(wa_id))
            .and_then(|c| c["profile"]["name"].as_str())
            .map(|n| n.chars().take(200).collect::<String>())
    };
    for m in value["messages"].as_array().into_iter().flatten() {
        let (Some(id), Some(from)) = (s(&m["id"]), s(&m["from"])) else {
            continue;
        };
        let contact = e164(&from).unwrap_or_else(|| from.clone());
        let kind = m["type"].as_str().unwrap_or("unknown").to_string();
        let mut msg = Incoming {
            id,
            contact,
            name: name_of(&from),
            text: String::new(),
            media: vec![],
            unsupported: None,
        };
        match kind.as_str() {
            "text" => msg.text = m["text"]["body"].as_str().unwrap_or("").to_string(),
            "image" | "audio" | "video" | "document" | "sticker" => {
                let o = &m[kind.as_str()];
                msg.text = o["caption"].as_str().unwrap_or("").to_string();
                msg.media.push(Media {
                    kind: kind.clone(),
                    media_id: s(&o["id"]),
                    url: None,
                    mime_type: o["mime_type"].as_str().map(str::to_string),
                    file_name: o["filename"].as_str().map(str::to_string),
                });
            }
            "button" => msg.text = m["button"]["text"].as_str().unwrap_or("").to_string(),
            "interactive" => {
                let i = &m["interactive"];
                msg.text = i["button_reply"]["title"]
                    .as_str()
                    .or(i["list_reply"]["title"].as_str())
                    .unwrap_or("")
                    .to_string();
            }
            "location" => msg.unsupported = Some("a location".into()),
            "contacts" => msg.unsupported = Some("a contact card".into()),
            "reaction" => {
                let emoji = m["reaction"]["emoji"].as_str().unwrap_or("");
                msg.unsupported = Some(format!("a reaction {emoji}").trim_end().to_string());
            }
            other => msg.unsupported = Some(format!("a message of type {other}")),
        }
        out.push(Item::Message(msg));
    }
    for st in value["statuses"].as_array().into_iter().flatten() {
        let (Some(id), Some(status)) = (s(&st["id"]), st["status"].as_str().and_then(status_of))
        else {
            continue;
        };
        let error = (status == MessageStatus::Failed).then(|| {
            st["errors"]
                .as_array()
                .and_then(|e| e.first())
                .map(error_text)
                .unwrap_or_else(|| "WhatsApp could not deliver the message".into())
        });
        out.push(Item::Status { id, status, error });
    }
}

fn messaging(m: &Value, out: &mut Vec<Item>) {
    let Some(sender) = s(&m["sender"]["id"]) else {
        return;
    };
    if let Some(msg) = m.get("message") {
        // Echoes are the page's own messages (ours among them).
        if msg["is_echo"].as_bool() == Some(true) || msg["is_deleted"].as_bool() == Some(true) {
            return;
        }
        let Some(id) = s(&msg["mid"]) else {
            return;
        };
        let mut inc = Incoming {
            id,
            contact: sender,
            name: None,
            text: msg["text"].as_str().unwrap_or("").to_string(),
            media: vec![],
            unsupported: None,
        };
        for a in msg["attachments"].as_array().into_iter().flatten() {
            let kind = a["type"].as_str().unwrap_or("file").to_string();
            match kind.as_str() {
                "image" | "audio" | "video" | "file" => {
                    if let Some(url) = a["payload"]["url"].as_str() {
                        inc.media.push(Media {
                            kind,
                            media_id: None,
                            url: Some(url.to_string()),
                            mime_type: None,
                            file_name: None,
                        });
                    }
                }
                other => inc.unsupported = Some(format!("an attachment of type {other}")),
            }
        }
        out.push(Item::Message(inc));
    } else if let Some(d) = m.get("delivery") {
        for mid in d["mids"].as_array().into_iter().flatten() {
            if let Some(id) = s(mid) {
                out.push(Item::Status {
                    id,
                    status: MessageStatus::Delivered,
                    error: None,
                });
            }
        }
    } else if let Some(r) = m.get("read") {
        if let Some(mid) = s(&r["mid"]) {
            // Instagram names the message read.
            out.push(Item::Status {
                id: mid,
                status: MessageStatus::Read,
                error: None,
            });
        } else if let Some(w) = r["watermark"].as_i64() {
            out.push(Item::Read {
                contact: sender,
                watermark_ms: w,
            });
        }
    }
}

/// What to send.
#[derive(Debug, Clone)]
pub enum Outgoing<'a> {
    Text(&'a str),
    /// A WhatsApp template: name, language code, body parameters.
    Template {
        name: &'a str,
        language: &'a str,
        parameters: &'a [String],
    },
}

/// The Graph API client.
#[derive(Clone)]
pub struct Graph {
    http: reqwest::Client,
    base: String,
}

impl Graph {
    pub fn new(base: &str, version: &str) -> Self {
        let http = Policy::Operator
            .client(false)
            .timeout(CALL_TIMEOUT)
            .build()
            .expect("BUG: the Graph API HTTP client cannot be built");
        Graph {
            http,
            base: format!("{}/{}", base.trim_end_matches('/'), version),
        }
    }

    async fn answer(&self, token: &str, req: reqwest::RequestBuilder) -> Result<Value, CallError> {
        let resp = match req.bearer_auth(token).send().await {
            Ok(r) => r,
            Err(e) => {
                return Err(CallError {
                    message: upstream::redact(
                        format!("Meta could not be reached: {}", upstream::root_cause(&e)),
                        Some(token),
                    ),
                    retryable: true,
                    retry_after: None,
                    // Refused before the request went out (no connection, no address):
                    // the provider cannot have it. Anything else (a timeout, a reset) may
                    // have reached it.
                    unknown_outcome: !e.is_connect(),
                });
            }
        };
        let status = resp.status();
        let wait = upstream::retry_after(resp.headers());
        let bytes = upstream::read_error_body(resp).await;
        let v: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status.is_success()
            && let Some(v) = v.as_ref().filter(|v| v.get("error").is_none())
        {
            return Ok(v.clone());
        }
        let err = v.as_ref().map(|v| &v["error"]).filter(|e| e.is_object());
        let description = match err {
            Some(e) => error_text(e),
            None => upstream::error_message(status.as_u16(), &bytes),
        };
        // Meta's throttling codes (4, 17, 32, 613, 80007, 130429) and transient ones (1, 2).
        let code = err.and_then(|e| e["code"].as_i64()).unwrap_or(0);
        let transient = err.and_then(|e| e["is_transient"].as_bool()) == Some(true)
            || matches!(
                code,
                1 | 2 | 4 | 17 | 32 | 613 | 80007 | 130429 | 131048 | 131056
            );
        Err(CallError {
            message: upstream::redact(format!("Meta said: {description}"), Some(token)),
            retryable: status.as_u16() == 429 || status.is_server_error() || transient,
            retry_after: wait,
            // A success status with no error in an answer that cannot be read: accepted,
            // most likely.
            unknown_outcome: status.is_success() && err.is_none(),
        })
    }

    /// GET /{node}?fields=...
    pub async fn node(&self, token: &str, node: &str, fields: &str) -> Result<Value, CallError> {
        let url = format!("{}/{node}?fields={fields}", self.base);
        let req = self.http.get(&url);
        self.answer(token, req).await
    }

    /// Sends one message of a channel of `kind` from `account` to `to`; the provider's
    /// message id. `human_agent` tags a Messenger/Instagram human reply sent after the
    /// 24-hour window (allowed up to 7 days).
    pub async fn send(
        &self,
        kind: ChannelKind,
        token: &str,
        account: &str,
        to: &str,
        what: Outgoing<'_>,
        human_agent: bool,
    ) -> Result<String, CallError> {
        let body = match (kind, what) {
            (ChannelKind::Whatsapp, Outgoing::Text(t)) => json!({
                "messaging_product": "whatsapp", "recipient_type": "individual",
                "to": to.trim_start_matches('+'), "type": "text",
                "text": {"body": t, "preview_url": false},
            }),
            (
                ChannelKind::Whatsapp,
                Outgoing::Template {
                    name,
                    language,
                    parameters,
                },
            ) => {
                let mut template = json!({"name": name, "language": {"code": language}});
                if !parameters.is_empty() {
                    let params: Vec<Value> = parameters
                        .iter()
                        .map(|p| json!({"type": "text", "text": p}))
                        .collect();
                    template["components"] = json!([{"type": "body", "parameters": params}]);
                }
                json!({
                    "messaging_product": "whatsapp", "recipient_type": "individual",
                    "to": to.trim_start_matches('+'), "type": "template", "template": template,
                })
            }
            (_, Outgoing::Text(t)) => {
                let mut b = json!({
                    "recipient": {"id": to},
                    "message": {"text": t},
                    "messaging_type": "RESPONSE",
                });
                if human_agent {
                    b["messaging_type"] = json!("MESSAGE_TAG");
                    b["tag"] = json!("HUMAN_AGENT");
                }
                b
            }
            (_, Outgoing::Template { .. }) => {
                return Err(CallError {
                    message: "only WhatsApp channels send templates".into(),
                    retryable: false,
                    retry_after: None,
                    unknown_outcome: false,
                });
            }
        };
        let url = format!("{}/{account}/messages", self.base);
        let v = self.answer(token, self.http.post(&url).json(&body)).await?;
        let id = v["messages"][0]["id"]
            .as_str()
            .or(v["message_id"].as_str())
            .unwrap_or("")
            .to_string();
        Ok(id)
    }

    /// Downloads a media item with the channel's token, at most `max` bytes: WhatsApp's
    /// media id is looked up first (GET /{id} -> url). Returns the bytes and the type.
    pub async fn download(
        &self,
        token: &str,
        media: &Media,
        max: u64,
    ) -> Result<(Vec<u8>, Option<String>), CallError> {
        let (url, mut mime) = match (&media.media_id, &media.url) {
            (Some(id), _) => {
                if id.is_empty()
                    || !id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(CallError {
                        message: "the media id is not one Meta hands out".into(),
                        retryable: false,
                        retry_after: None,
                        unknown_outcome: false,
                    });
                }
                let v = self.node(token, id, "url,mime_type,file_size").await?;
                if let Some(size) = v["file_size"].as_u64()
                    && size > max
                {
                    return Err(too_big(max));
                }
                let url = v["url"].as_str().unwrap_or("").to_string();
                (url, v["mime_type"].as_str().map(str::to_string))
            }
            (None, Some(u)) => (u.clone(), None),
            (None, None) => {
                return Err(CallError {
                    message: "the media item names nothing to download".into(),
                    retryable: false,
                    retry_after: None,
                    unknown_outcome: false,
                });
            }
        };
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(CallError {
                message: "Meta answered no download URL for the media".into(),
                retryable: false,
                retry_after: None,
                unknown_outcome: false,
            });
        }
        let resp = match self.http.get(&url).bearer_auth(token).send().await {
            Ok(r) => r,
            Err(e) => {
                return Err(CallError {
                    message: upstream::redact(
                        format!(
                            "the media could not be fetched: {}",
                            upstream::root_cause(&e)
                        ),
                        Some(token),
                    ),
                    retryable: true,
                    retry_after: None,
                    unknown_outcome: false,
                });
            }
        };
        if mime.is_none() {
            mime = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
        }
        let out = read_capped(resp, max).await?;
        Ok((out, mime))
    }
}

/// The body of a download, at most `max` bytes (refused as soon as it is known to be
/// larger, never held whole beyond the cap).
pub async fn read_capped(mut resp: reqwest::Response, max: u64) -> Result<Vec<u8>, CallError> {
    let status = resp.status();
    if !status.is_success() {
        return Err(CallError {
            message: format!("the media could not be fetched: HTTP {}", status.as_u16()),
            retryable: status.as_u16() == 429 || status.is_server_error(),
            retry_after: upstream::retry_after(resp.headers()),
            unknown_outcome: false,
        });
    }
    if resp.content_length().is_some_and(|n| n > max) {
        return Err(too_big(max));
    }
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if (out.len() + c.len()) as u64 > max {
                    return Err(too_big(max));
                }
                out.extend_from_slice(&c);
            }
            Ok(None) => return Ok(out),
            Err(e) => {
                return Err(CallError {
                    message: format!("the media download broke off: {}", upstream::root_cause(&e)),
                    retryable: true,
                    retry_after: None,
                    unknown_outcome: false,
                });
            }
        }
    }
}

fn too_big(max: u64) -> CallError {
    CallError {
        message: format!(
            "the media is larger than the limit of {max} bytes (CHANNEL_MEDIA_MAX_BYTES)"
        ),
        retryable: false,
        retry_after: None,
        unknown_outcome: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_become_e164_in_every_form_whatsapp_and_people_use() {
        for raw in [
            "15551234567",
            "+15551234567",
            "+1 (555) 123-4567",
            "001 555 123 4567",
            " 1.555.123.4567 ",
        ] {
            assert_eq!(e164(raw).as_deref(), Some("+15551234567"), "{raw}");
        }
        for bad in [
            "",
            "12345",
            "0555123456",
            "+1555abc4567",
            "1234567890123456",
            "++15551234567",
        ] {
            assert_eq!(e164(bad), None, "{bad}");
        }
    }

    #[test]
    fn signatures_are_checked_on_the_raw_body() {
        let body = br#"{"object":"page","entry":[]}"#;
        let sig = sign("app-secret", body);
        assert!(signature_ok("app-secret", body, &sig));
        assert!(!signature_ok("other-secret", body, &sig));
        assert!(!signature_ok(
            "app-secret",
            b"{\"object\": \"page\",\"entry\":[]}",
            &sig
        ));
        assert!(!signature_ok(
            "app-secret",
            body,
            sig.trim_start_matches("sha256=")
        ));
        assert!(!signature_ok("app-secret", body, "sha256=zz"));
        assert!(!signature_ok("app-secret", body, ""));
    }

    #[test]
    fn every_entry_change_message_and_status_of_a_batch_is_read() {
        let v = json!({"object": "whatsapp_business_account", "entry": [
            {"id": "waba", "changes": [
                {"field": "messages", "value": {"metadata": {"phone_number_id": "111"},
                    "contacts": [{"wa_id": "15551234567", "profile": {"name": "Ana"}}],
                    "messages": [
                        {"from": "15551234567", "id": "wamid.1", "type": "text", "text": {"body": "one"}},
                        {"from": "15551234567", "id": "wamid.2", "type": "image", "image": {"id": "m1", "mime_type": "image/jpeg", "caption": "look"}}
                    ],
                    "statuses": [{"id": "wamid.out", "status": "failed", "errors": [{"code": 131047, "title": "Re-engagement message"}]}]}},
                {"field": "messages", "value": {"metadata": {"phone_number_id": "222"},
                    "messages": [{"from": "15550000000", "id": "wamid.x", "type": "text", "text": {"body": "other number"}}]}}
            ]},
            {"id": "waba", "changes": [{"field": "messages", "value": {"metadata": {"phone_number_id": "111"},
                "messages": [{"from": "4915112345678", "id": "wamid.3", "type": "location", "location": {}}]}}]}
        ]});
        let (items, foreign) = items(ChannelKind::Whatsapp, &v, "111").unwrap();
        assert_eq!(foreign, 1);
        assert_eq!(items.len(), 4);
        let Item::Message(m) = &items[0] else {
            panic!()
        };
        assert_eq!(
            (m.contact.as_str(), m.name.as_deref(), m.text.as_str()),
            ("+15551234567", Some("Ana"), "one")
        );
        let Item::Message(m) = &items[1] else {
            panic!()
        };
        assert_eq!(m.media[0].media_id.as_deref(), Some("m1"));
        assert_eq!(m.text, "look");
        let Item::Status { status, error, .. } = &items[2] else {
            panic!()
        };
        assert_eq!(*status, MessageStatus::Failed);
        assert_eq!(error.as_deref(), Some("(131047) Re-engagement message"));
        let Item::Message(m) = &items[3] else {
            panic!()
        };
        assert_eq!(m.unsupported.as_deref(), Some("a location"));
        assert_eq!(m.contact, "+4915112345678");
        assert!(items_err(ChannelKind::Messenger, &v));
    }

    #[test]
    fn a_batch_is_split_by_contact_and_every_item_falls_in_exactly_one_part() {
        let v = json!({"object": "page", "entry": [{"id": "900", "messaging": [
            {"sender": {"id": "psid1"}, "recipient": {"id": "900"}, "message": {"mid": "m_1", "text": "hi"}},
            {"sender": {"id": "psid2"}, "recipient": {"id": "900"}, "message": {"mid": "m_2", "text": "hello"}},
            {"sender": {"id": "psid1"}, "delivery": {"mids": ["m_out1"], "watermark": 1}},
            {"sender": {"id": "psid1"}, "recipient": {"id": "900"}, "message": {"mid": "m_3", "text": "again"}},
            {"sender": {"id": "psid2"}, "read": {"watermark": 1700000000000_i64}}
        ]}]});
        let (items, _) = items(ChannelKind::Messenger, &v, "").unwrap();
        let ps = parts(&items);
        assert_eq!(
            ps,
            [
                InboundPart::Contact("psid1".into()),
                InboundPart::Contact("psid2".into()),
                InboundPart::Statuses
            ]
        );
        for item in &items {
            let n = ps.iter().filter(|p| in_part(item, Some(p))).count();
            assert_eq!(n, 1, "{item:?}");
            assert!(in_part(item, None));
        }
        // One contact's items keep their order inside its part.
        let mine: Vec<_> = items
            .iter()
            .filter(|i| in_part(i, Some(&ps[0])))
            .filter_map(|i| match i {
                Item::Message(m) => Some(m.id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(mine, ["m_1", "m_3"]);
    }

    fn items_err(kind: ChannelKind, v: &Value) -> bool {
        items(kind, v, "1").is_err()
    }

    #[test]
    fn messenger_messages_deliveries_and_reads() {
        let v = json!({"object": "page", "entry": [{"id": "900", "messaging": [
            {"sender": {"id": "psid1"}, "recipient": {"id": "900"}, "message": {"mid": "m_1", "text": "hi"}},
            {"sender": {"id": "900"}, "recipient": {"id": "psid1"}, "message": {"mid": "m_echo", "text": "ours", "is_echo": true}},
            {"sender": {"id": "psid1"}, "delivery": {"mids": ["m_out1", "m_out2"], "watermark": 1}},
            {"sender": {"id": "psid1"}, "read": {"watermark": 1700000000000_i64}}
        ]}]});
        let (items, _) = items(ChannelKind::Messenger, &v, "900").unwrap();
        assert_eq!(items.len(), 4);
        assert!(matches!(&items[0], Item::Message(m) if m.text == "hi" && m.contact == "psid1"));
        assert!(
            matches!(&items[2], Item::Status { id, status: MessageStatus::Delivered, .. } if id == "m_out2")
        );
        assert!(matches!(
            &items[3],
            Item::Read {
                watermark_ms: 1700000000000,
                ..
            }
        ));
    }
}
