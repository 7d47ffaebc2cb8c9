//! Errors of the chat client, and the one-line reasons shown to admins for failed messages.

pub(crate) use crate::net::upstream::redact;
use crate::net::upstream::sanitise;
use std::time::Duration;

/// Why a chat call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No answer within `Provider::timeout` (whole request) or, for streams, no bytes within
    /// `Provider::idle_timeout`. Not retried: the provider did receive the prompt.
    #[error("the model provider did not answer in time")]
    Timeout,
    /// The provider could not be reached (DNS, refused, TLS, connect timeout).
    #[error("could not reach the model provider: {0}")]
    Connect(String),
    /// The provider answered with an error status.
    #[error("the model provider answered {status}: {message}")]
    Upstream { status: u16, message: String },
    /// 429 after the retries ran out, or with a Retry-After too long to wait for.
    #[error("the model provider is rate limiting requests")]
    RateLimited { retry_after: Option<Duration> },
    /// The answer did not follow the protocol: bad JSON, a broken or oversized stream.
    #[error("unexpected answer from the model provider: {0}")]
    Protocol(String),
    /// The outbound policy refused the address (a tenant-set URL leading to a private,
    /// loopback or reserved address). Not retried.
    #[error("the model provider address is not allowed: {0}")]
    Refused(String),
    /// The caller gave up. Never produced by the client itself (dropping a stream aborts the
    /// request silently); for the layers above to record a user-cancelled answer.
    #[error("cancelled")]
    Cancelled,
}

impl Error {
    /// Worth another attempt (before anything reached the user).
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            Error::Connect(_) | Error::RateLimited { .. } => true,
            // 408 and 409 are the provider's own timeouts and lock conflicts; the official
            // OpenAI SDKs retry them too.
            Error::Upstream { status, .. } => *status >= 500 || matches!(status, 408 | 409),
            Error::Timeout | Error::Protocol(_) | Error::Refused(_) | Error::Cancelled => false,
        }
    }

    /// A clear one-line reason for admins. Never contains the API key: keys are removed
    /// from upstream text when the error is built, and anything shaped like a key is masked
    /// here as a second line of defence.
    pub fn user_message(&self) -> String {
        let s = match self {
            Error::Timeout => {
                "The model provider did not answer in time (timeout). It may be overloaded; \
                 try again or raise the timeout."
                    .to_string()
            }
            Error::Connect(m) => format!(
                "Could not reach the model provider: {} Check the base URL and that the \
                 server is running.",
                sentence(m)
            ),
            Error::Upstream { status, message } => {
                let hint = match status {
                    401 | 403 => " Check the API key.",
                    404 => " Check the model name and the base URL (it usually ends in /v1).",
                    413 => " The conversation is too long for this model.",
                    _ => "",
                };
                let message = if message.is_empty() {
                    "no details"
                } else {
                    message
                };
                format!(
                    "The model provider returned HTTP {status}: {}{hint}",
                    sentence(message)
                )
            }
            Error::RateLimited { retry_after } => match retry_after {
                Some(d) => format!(
                    "The model provider is rate limiting requests (retry after {}s).",
                    d.as_secs().max(1)
                ),
                None => "The model provider is rate limiting requests.".to_string(),
            },
            Error::Protocol(m) => {
                format!("Unexpected answer from the model provider: {}", sentence(m))
            }
            Error::Refused(m) => format!(
                "The model provider address is not allowed: {} Check the base URL.",
                sentence(m)
            ),
            Error::Cancelled => "The answer was cancelled.".to_string(),
        };
        mask_key_like(&sanitise(&s, 600))
    }
}

/// `m` ending in a full stop (unless it already ends in punctuation).
fn sentence(m: &str) -> String {
    let m = m.trim();
    if m.ends_with(['.', '!', '?', '…']) {
        m.to_string()
    } else {
        format!("{m}.")
    }
}

/// Masks words that look like provider keys (`sk-...`, `sk_...`, long bearer-ish tokens
/// after "key"), keeping a short prefix so admins can tell which key was meant.
fn mask_key_like(text: &str) -> String {
    text.split(' ')
        .map(|w| {
            let bare = w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_');
            let looks_like_key = (bare.starts_with("sk-") || bare.starts_with("sk_"))
                && bare.len() >= 12
                && !bare.contains("<redacted>");
            if looks_like_key {
                let prefix: String = bare.chars().take(5).collect();
                w.replace(bare, &format!("{prefix}…"))
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_classes() {
        assert!(Error::Connect("x".into()).is_retryable());
        assert!(Error::RateLimited { retry_after: None }.is_retryable());
        assert!(
            Error::Upstream {
                status: 503,
                message: String::new()
            }
            .is_retryable()
        );
        assert!(
            !Error::Upstream {
                status: 400,
                message: String::new()
            }
            .is_retryable()
        );
        assert!(!Error::Timeout.is_retryable());
        assert!(!Error::Protocol("x".into()).is_retryable());
    }

    #[test]
    fn user_messages_are_one_line_with_hints() {
        let e = Error::Upstream {
            status: 401,
            message: "Invalid\nkey".into(),
        };
        assert_eq!(
            e.user_message(),
            "The model provider returned HTTP 401: Invalid key. Check the API key."
        );
        let e = Error::RateLimited {
            retry_after: Some(Duration::from_millis(200)),
        };
        assert!(e.user_message().contains("retry after 1s"));
        assert!(!Error::Timeout.user_message().contains('\n'));
    }

    #[test]
    fn keys_never_reach_user_messages() {
        let key = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789";
        let msg = redact(format!("Incorrect API key provided: {key}."), Some(key));
        assert!(!msg.contains(key));
        // Even when a different key-shaped string slipped through unredacted.
        let e = Error::Upstream {
            status: 401,
            message: format!("Incorrect API key provided: {key}."),
        };
        let m = e.user_message();
        assert!(!m.contains("abcdefghijklmnop"), "{m}");
        assert!(m.contains("sk-pr…"), "{m}");
        // Short local "keys" are left alone.
        assert_eq!(redact("ollama x".into(), Some("x")), "ollama x");
    }
}
