//! The Telegram Bot API as this server uses it: getMe, setWebhook, sendMessage, the shape
//! of an incoming update, and splitting long texts to Telegram's 4096-character limit.
//! Calls go to the operator's `TELEGRAM_API_BASE_URL` (operator-trusted: the tenant address
//! policy does not apply); the bot token is in the URL path, so it is redacted from every
//! error text.

use crate::net::policy::Policy;
use crate::net::upstream;
use serde::Deserialize;
use std::time::Duration;

/// Longest text of one Telegram message.
pub const MAX_TEXT_CHARS: usize = 4096;
/// Time allowed for one Bot API call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A Bot API call that did not succeed.
#[derive(Debug, Clone)]
pub struct CallError {
    /// The provider's own words (its `description`), or what went wrong on the way.
    pub message: String,
    /// Trying again later may succeed (429, 5xx, network trouble).
    pub retryable: bool,
    /// How long Telegram asked us to wait (429 `retry_after`, or the Retry-After header).
    pub retry_after: Option<Duration>,
    /// The request may have reached the provider, but its answer is unknown (a timeout or a
    /// broken connection after it went out): the provider may have acted on it, so a send
    /// is not repeated blindly.
    pub unknown_outcome: bool,
}

/// The Bot API client.
#[derive(Clone)]
pub struct Telegram {
    http: reqwest::Client,
    base: String,
}

impl Telegram {
    pub fn new(base: &str) -> Self {
        let http = Policy::Operator
            .client(false)
            .timeout(CALL_TIMEOUT)
            .build()
            .expect("BUG: the Telegram HTTP client cannot be built");
        Telegram {
            http,
            base: base.trim_end_matches('/').to_string(),
        }
    }

    /// Calls `method` with a JSON body; the `result` on success.
    pub async fn call(
        &self,
        token: &str,
        method: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, CallError> {
        let url = format!("{}/bot{token}/{method}", self.base);
        let resp = match self.http.post(&url).json(&body).send().await {
            Ok(r) => r,
            Err(e) => {
                return Err(CallError {
                    message: upstream::redact(
                        format!(
                            "Telegram could not be reached: {}",
                            upstream::root_cause(&e)
                        ),
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
        let header_wait = upstream::retry_after(resp.headers());
        let bytes = upstream::read_error_body(resp).await;
        let v: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
        if status.is_success()
            && let Some(v) = &v
            && v["ok"] == true
        {
            return Ok(v["result"].clone());
        }
        let description = v
            .as_ref()
            .and_then(|v| v["description"].as_str())
            .map(|d| upstream::sanitise(d, 300))
            .unwrap_or_else(|| upstream::error_message(status.as_u16(), &bytes));
        let code = v
            .as_ref()
            .and_then(|v| v["error_code"].as_u64())
            .unwrap_or(u64::from(status.as_u16()));
        let wait = v
            .as_ref()
            .and_then(|v| v["parameters"]["retry_after"].as_u64())
            .map(Duration::from_secs)
            .or(header_wait);
        Err(CallError {
            message: upstream::redact(format!("Telegram said: {description}"), Some(token)),
            retryable: code == 429 || code >= 500,
            retry_after: wait,
            // A success status whose answer cannot be read: accepted, most likely.
            unknown_outcome: status.is_success() && v.is_none(),
        })
    }

    /// `getMe`: the bot's id, username and name.
    pub async fn get_me(&self, token: &str) -> Result<serde_json::Value, CallError> {
        self.call(token, "getMe", serde_json::json!({})).await
    }

    /// `setWebhook` to `url`, with `secret` to be echoed in every delivery.
    pub async fn set_webhook(&self, token: &str, url: &str, secret: &str) -> Result<(), CallError> {
        self.call(
            token,
            "setWebhook",
            serde_json::json!({
                "url": url,
                "secret_token": secret,
                "allowed_updates": ["message", "edited_message"],
            }),
        )
        .await
        .map(|_| ())
    }

    /// `getFile` then the download of the file, at most `max` bytes.
    pub async fn download(
        &self,
        token: &str,
        file_id: &str,
        max: u64,
    ) -> Result<Vec<u8>, CallError> {
        let f = self
            .call(token, "getFile", serde_json::json!({"file_id": file_id}))
            .await?;
        if f["file_size"].as_u64().is_some_and(|n| n > max) {
            return Err(CallError {
                message: format!("the file is larger than the limit of {max} bytes"),
                retryable: false,
                retry_after: None,
                unknown_outcome: false,
            });
        }
        let Some(path) = f["file_path"].as_str().filter(|p| !p.contains("..")) else {
            return Err(CallError {
                message: "Telegram answered no file path".into(),
                retryable: false,
                retry_after: None,
                unknown_outcome: false,
            });
        };
        let url = format!("{}/file/bot{token}/{path}", self.base);
        let resp = self.http.get(&url).send().await.map_err(|e| CallError {
            message: upstream::redact(
                format!(
                    "the file could not be fetched: {}",
                    upstream::root_cause(&e)
                ),
                Some(token),
            ),
            retryable: true,
            retry_after: None,
            unknown_outcome: false,
        })?;
        super::meta::read_capped(resp, max).await.map_err(|mut e| {
            e.message = upstream::redact(e.message, Some(token));
            e
        })
    }

    /// `sendMessage` of one text (at most [`MAX_TEXT_CHARS`]) to a chat.
    pub async fn send_message(
        &self,
        token: &str,
        chat_id: &str,
        text: &str,
    ) -> Result<serde_json::Value, CallError> {
        let chat: serde_json::Value = match chat_id.parse::<i64>() {
            Ok(n) => n.into(),
            Err(_) => chat_id.into(),
        };
        self.call(
            token,
            "sendMessage",
            serde_json::json!({"chat_id": chat, "text": text}),
        )
        .await
    }
}

/// What a Telegram update carries that we store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The chat to answer in (a private chat's id is the user's id).
    pub chat_id: String,
    /// The sender's name as Telegram shows it.
    pub name: Option<String>,
    /// The text, or a placeholder saying what arrived.
    pub text: String,
    /// A photo, voice message, audio file, video or document to fetch with getFile.
    pub media: Option<TgMedia>,
    /// The media's caption, if any.
    pub caption: Option<String>,
}

/// A file of a Telegram message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TgMedia {
    /// `image`, `audio`, `video`, `document`.
    pub kind: String,
    pub file_id: String,
    pub file_name: Option<String>,
    pub mime_type: Option<String>,
    /// What Telegram says the size is.
    pub size: Option<u64>,
}

/// The largest file of a message that is at most `max` bytes (photos come in several
/// sizes), with its kind.
fn media_of(rest: &serde_json::Map<String, serde_json::Value>, max: u64) -> Option<TgMedia> {
    let file = |v: &serde_json::Value, kind: &str| -> Option<TgMedia> {
        Some(TgMedia {
            kind: kind.to_string(),
            file_id: v["file_id"].as_str()?.to_string(),
            file_name: v["file_name"].as_str().map(str::to_string),
            mime_type: v["mime_type"].as_str().map(str::to_string),
            size: v["file_size"].as_u64(),
        })
    };
    if let Some(sizes) = rest.get("photo").and_then(|p| p.as_array()) {
        let fits: Vec<&serde_json::Value> = sizes
            .iter()
            .filter(|s| s["file_size"].as_u64().is_none_or(|n| n <= max))
            .collect();
        let best = fits
            .iter()
            .max_by_key(|s| s["file_size"].as_u64().unwrap_or(0))
            .copied()
            .or(sizes.last())?;
        let mut m = file(best, "image")?;
        m.mime_type.get_or_insert_with(|| "image/jpeg".into());
        return Some(m);
    }
    for (key, kind) in [
        ("voice", "audio"),
        ("audio", "audio"),
        ("video", "video"),
        ("document", "document"),
    ] {
        if let Some(v) = rest.get(key) {
            return file(v, kind);
        }
    }
    None
}

#[derive(Deserialize)]
struct Update {
    message: Option<TgMessage>,
    edited_message: Option<TgMessage>,
}

#[derive(Deserialize)]
struct TgMessage {
    chat: Chat,
    from: Option<User>,
    text: Option<String>,
    caption: Option<String>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct Chat {
    id: i64,
}

#[derive(Deserialize)]
struct User {
    first_name: Option<String>,
    last_name: Option<String>,
    username: Option<String>,
}

/// The `update_id` of a delivery; `None` when the body is not an update.
pub fn update_id(v: &serde_json::Value) -> Option<i64> {
    v.get("update_id")?.as_i64()
}

/// What to store of an update; `Ok(None)` for updates that carry no customer message
/// (those we do not subscribe to); `Err` when it is not an update at all. Media up to
/// `max_media` bytes is named for fetching.
pub fn incoming(v: &serde_json::Value, max_media: u64) -> Result<Option<Incoming>, String> {
    let u: Update =
        serde_json::from_value(v.clone()).map_err(|e| format!("not a Telegram update: {e}"))?;
    let (m, edited) = match (u.message, u.edited_message) {
        (Some(m), _) => (m, false),
        (None, Some(m)) => (m, true),
        (None, None) => return Ok(None),
    };
    let name = m.from.as_ref().and_then(|f| {
        let full = [f.first_name.as_deref(), f.last_name.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        Some(full)
            .filter(|s| !s.trim().is_empty())
            .or_else(|| f.username.clone())
    });
    let media = media_of(&m.rest, max_media);
    let caption = m.caption.clone().filter(|c| !c.trim().is_empty());
    let body = match (m.text, m.caption) {
        (Some(t), _) if !t.trim().is_empty() => t,
        (_, caption) => {
            let kind = [
                ("photo", "a photo"),
                ("video", "a video"),
                ("voice", "a voice message"),
                ("audio", "an audio file"),
                ("document", "a document"),
                ("sticker", "a sticker"),
                ("location", "a location"),
                ("contact", "a contact"),
                ("animation", "an animation"),
                ("video_note", "a video message"),
            ]
            .iter()
            .find(|(k, _)| m.rest.contains_key(*k))
            .map_or("a message of a kind this inbox cannot show", |(_, what)| {
                *what
            });
            match caption.filter(|c| !c.trim().is_empty()) {
                Some(c) => format!("[The customer sent {kind}, not shown here] {c}"),
                None => format!("[The customer sent {kind}, not shown here]"),
            }
        }
    };
    let text = if edited {
        format!("[edited] {body}")
    } else {
        body
    };
    Ok(Some(Incoming {
        chat_id: m.chat.id.to_string(),
        name,
        text,
        media,
        caption,
    }))
}

/// Splits `text` into parts of at most `max` characters, preferring to cut after a line
/// break, else after a space; never inside a character.
pub fn split_text(text: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest: &str = text;
    while rest.chars().count() > max {
        // Byte offset just after the first `max` characters.
        let hard = rest.char_indices().nth(max).map_or(rest.len(), |(i, _)| i);
        let window = &rest[..hard];
        let cut = window
            .rfind('\n')
            .or_else(|| window.rfind(' '))
            .filter(|&i| i > 0)
            .map_or(hard, |i| i + 1);
        let (head, tail) = rest.split_at(cut);
        out.push(head.trim_end().to_string());
        rest = tail;
    }
    if !rest.trim().is_empty() || out.is_empty() {
        out.push(rest.to_string());
    }
    out.retain(|p| !p.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_split_at_the_limit_on_word_boundaries() {
        let word = "abcd ";
        let text = word.repeat(2000); // 10,000 characters
        let parts = split_text(text.trim_end(), MAX_TEXT_CHARS);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.chars().count() <= MAX_TEXT_CHARS));
        assert!(
            parts
                .iter()
                .all(|p| p.starts_with("abcd") && p.ends_with("abcd"))
        );
        assert_eq!(parts.join(" "), text.trim_end());
        let emoji = "é".repeat(5000);
        let parts = split_text(&emoji, MAX_TEXT_CHARS);
        assert_eq!(parts[0].chars().count(), MAX_TEXT_CHARS);
        assert_eq!(parts.concat(), emoji);
        assert_eq!(split_text("hi", MAX_TEXT_CHARS), vec!["hi".to_string()]);
    }

    #[test]
    fn updates_become_text_or_a_placeholder() {
        let v = serde_json::json!({"update_id": 5, "message": {"message_id": 1, "date": 0,
            "chat": {"id": 42, "type": "private"}, "from": {"id": 42, "first_name": "Ana", "last_name": "Lima"},
            "text": "hello"}});
        assert_eq!(update_id(&v), Some(5));
        let i = incoming(&v, 1 << 20).unwrap().unwrap();
        assert_eq!(
            (i.chat_id.as_str(), i.name.as_deref(), i.text.as_str()),
            ("42", Some("Ana Lima"), "hello")
        );
        let v = serde_json::json!({"update_id": 6, "message": {"chat": {"id": 42}, "photo": [{}], "caption": "this one"}});
        let i = incoming(&v, 1 << 20).unwrap().unwrap();
        assert_eq!(
            i.text,
            "[The customer sent a photo, not shown here] this one"
        );
        assert_eq!(i.caption.as_deref(), Some("this one"));
        let v = serde_json::json!({"update_id": 6, "message": {"chat": {"id": 42}, "photo": [
            {"file_id": "small", "file_size": 100}, {"file_id": "big", "file_size": 5000}, {"file_id": "huge", "file_size": 50000}]}});
        let m = incoming(&v, 10_000).unwrap().unwrap().media.unwrap();
        assert_eq!((m.kind.as_str(), m.file_id.as_str()), ("image", "big"));
        let v = serde_json::json!({"update_id": 7, "my_chat_member": {}});
        assert_eq!(incoming(&v, 1).unwrap(), None);
        assert!(
            incoming(
                &serde_json::json!({"update_id": 8, "message": {"text": "x"}}),
                1
            )
            .is_err()
        );
    }
}
