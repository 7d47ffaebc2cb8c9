//! The OpenAI-compatible HTTP core shared by the chat client (llm/) and the embeddings
//! client (embed/openai.rs): the retry policy (exponential backoff with jitter, a capped
//! `Retry-After`), how much of an error body is read and what of it is passed on (a short,
//! sanitised message, never the raw body), and the redaction of API keys from any text that
//! came back from upstream.

use reqwest::header::HeaderMap;
use std::time::Duration;

/// Error bodies are only read this far: enough for any message, not for a hostile dump.
pub const MAX_ERROR_BODY: usize = 64 * 1024;
/// Longest upstream message passed on to our clients and logs.
pub const MAX_MESSAGE_CHARS: usize = 200;
/// No `Retry-After` is taken at more than this (a day): beyond it every value means the same
/// ("not now"), and huge values must not overflow a `Duration`.
pub const RETRY_AFTER_CEILING: Duration = Duration::from_secs(24 * 3600);

/// When and how often a failed upstream call is tried again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Further attempts after the first (0 = no retries).
    pub max_retries: u32,
    /// Backoff before the first retry; doubles per retry, with jitter in [50%, 100%].
    pub base_delay: Duration,
    /// Cap on one backoff.
    pub max_delay: Duration,
    /// A `Retry-After` longer than this is not waited out: the error is returned at once
    /// (an exhausted daily quota should fail now, not park a worker or a customer for hours).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Wait this long, then try again.
    RetryAfter(Duration),
    /// Give up: not retryable, attempts used up.
    GiveUp,
    /// Give up because the server asked for a longer wait than we accept.
    TooLong(Duration),
}

impl RetryPolicy {
    /// The decision after failed attempt number `retries_done + 1`. `retryable` is the
    /// caller's verdict on the failure (429, 5xx, connection errors, and only while nothing
    /// reached the user); `retry_after` the server's wish, if any.
    pub fn next(&self, retries_done: u32, retryable: bool, retry_after: Option<Duration>) -> Next {
        if !retryable || retries_done >= self.max_retries {
            return Next::GiveUp;
        }
        match retry_after {
            Some(ra) if ra > self.max_retry_after => Next::TooLong(ra),
            // Honour the server's delay; a little jitter on top keeps clients that were told
            // the same instant from arriving together.
            Some(ra) => Next::RetryAfter(ra + jitter((ra / 10).min(Duration::from_secs(1)))),
            None => Next::RetryAfter(self.backoff(retries_done)),
        }
    }

    /// Exponential backoff before retry number `retries_done + 1`, with "equal jitter": half
    /// of the delay is fixed so a retry is never immediate, half random so clients that
    /// failed together do not retry together.
    pub fn backoff(&self, retries_done: u32) -> Duration {
        let full = self
            .base_delay
            .saturating_mul(1u32 << retries_done.min(20))
            .min(self.max_delay);
        let half = full / 2;
        half + jitter(full - half)
    }
}

fn jitter(max: Duration) -> Duration {
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::random_range(0..=ms))
}

/// `retry-after-ms` (OpenAI's, more precise) or `Retry-After` in seconds or as an HTTP date;
/// capped at [`RETRY_AFTER_CEILING`]. Negative, non-finite and unparsable values are ignored.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && let Some(d) = seconds(ms / 1000.0)
    {
        return Some(d);
    }
    parse_retry_after(text("retry-after")?)
}

/// One `Retry-After` value: seconds (fractions accepted) or an HTTP date, capped.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return seconds(secs);
    }
    let at = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822).ok()?;
    let wait = at - time::OffsetDateTime::now_utc();
    Some(
        Duration::try_from(wait)
            .unwrap_or(Duration::ZERO)
            .min(RETRY_AFTER_CEILING),
    )
}

/// Seconds as a capped duration; `Duration::from_secs_f64` panics on huge values.
fn seconds(secs: f64) -> Option<Duration> {
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some(
        Duration::try_from_secs_f64(secs)
            .map_or(RETRY_AFTER_CEILING, |d| d.min(RETRY_AFTER_CEILING)),
    )
}

/// The message worth passing on from an error body: OpenAI's `{"error":{"message":..}}`,
/// Ollama's `{"error":".."}` and the other usual JSON shapes, made one short clean line.
/// A body that is not such JSON (an HTML page, a dump of whatever answered) is never echoed:
/// the status reason stands in for it.
pub fn error_message(status: u16, body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| message_in(&v))
        .unwrap_or_else(|| {
            reqwest::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("error")
                .to_string()
        })
}

/// The message inside an error JSON value, if it has one, sanitised.
pub fn message_in(v: &serde_json::Value) -> Option<String> {
    let candidates = [
        &v["error"]["message"],
        &v["error"],
        &v["message"],
        &v["detail"],
        &v["detail"][0]["msg"],
    ];
    candidates
        .iter()
        .find_map(|c| c.as_str().filter(|s| !s.trim().is_empty()))
        .map(|s| sanitise(s, MAX_MESSAGE_CHARS))
        .filter(|s| !s.is_empty())
}

/// One line of printable text: control characters dropped, whitespace runs collapsed, cut at
/// `max` characters (with an ellipsis).
pub fn sanitise(s: &str, max: usize) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut out = String::new();
    for (n, word) in cleaned.split_whitespace().enumerate() {
        if n > 0 {
            out.push(' ');
        }
        out.push_str(word);
    }
    if out.chars().count() > max {
        let cut: String = out.chars().take(max).collect();
        return format!("{cut}…");
    }
    out
}

/// Replaces every occurrence of `key` in `text`, so upstream text that echoes the key
/// ("Incorrect API key provided: sk-...") cannot leak it.
pub fn redact(text: String, key: Option<&str>) -> String {
    match key {
        // Very short "keys" (e.g. "x" for local servers) would mangle ordinary text and
        // are not secrets worth hiding.
        Some(k) if k.len() >= 8 && text.contains(k) => text.replace(k, "<redacted>"),
        _ => text,
    }
}

/// A URL as it may be shown (logs, Debug, health, settings views): a password in it
/// (`http://user:pass@host`) is as secret as an API key and is replaced.
pub fn display_url(url: &str) -> String {
    match reqwest::Url::parse(url.trim()) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("redacted"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// The root cause of an error chain, which is the informative part of a reqwest error
/// ("Connection refused", our own policy refusal); the outer layers only say "error sending
/// request". Made one short line.
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    sanitise(&cur.to_string(), 300)
}

/// Reads at most [`MAX_ERROR_BODY`] of an error response; a broken body just ends it.
pub async fn read_error_body(mut resp: reqwest::Response) -> Vec<u8> {
    let mut buf = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = MAX_ERROR_BODY - buf.len();
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if buf.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    buf
}

/// The blocking counterpart of [`read_error_body`].
pub fn read_error_body_blocking(resp: reqwest::blocking::Response) -> Vec<u8> {
    use std::io::Read;
    let mut buf = Vec::new();
    let _ = resp.take(MAX_ERROR_BODY as u64).read_to_end(&mut buf);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn retry_after_forms_are_parsed_and_capped() {
        assert_eq!(retry_after(&HeaderMap::new()), None);
        assert_eq!(
            retry_after(&headers(&[("retry-after", "2")])),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", " 0.5 ")])),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "2"), ("retry-after-ms", "150")])),
            Some(Duration::from_millis(150))
        );
        // Huge values used to panic in Duration::from_secs_f64.
        for huge in ["1e300", "1e20", "99999999999999999999"] {
            assert_eq!(
                retry_after(&headers(&[("retry-after", huge)])),
                Some(RETRY_AFTER_CEILING),
                "{huge}"
            );
            assert_eq!(
                retry_after(&headers(&[("retry-after-ms", huge)])),
                Some(RETRY_AFTER_CEILING),
                "{huge} ms"
            );
        }
        for bad in ["-1", "NaN", "inf", "soon", ""] {
            assert_eq!(
                retry_after(&headers(&[("retry-after", bad)])),
                None,
                "{bad}"
            );
        }
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT"),
            Some(RETRY_AFTER_CEILING)
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            ..RetryPolicy::default()
        };
        for retry in 0..8 {
            let full = (p.base_delay * 2u32.pow(retry)).min(p.max_delay);
            for _ in 0..50 {
                let d = p.backoff(retry);
                assert!(d >= full / 2 && d <= full, "retry {retry}: {d:?}");
            }
        }
        assert!(p.backoff(u32::MAX) <= p.max_delay);
    }

    #[test]
    fn the_decision_after_a_failure() {
        let p = RetryPolicy {
            max_retries: 2,
            ..RetryPolicy::default()
        };
        assert_eq!(p.next(0, false, None), Next::GiveUp);
        assert_eq!(p.next(2, true, None), Next::GiveUp);
        assert!(matches!(p.next(1, true, None), Next::RetryAfter(_)));
        let Next::RetryAfter(d) = p.next(0, true, Some(Duration::from_secs(2))) else {
            panic!("a short Retry-After is waited out");
        };
        assert!(d >= Duration::from_secs(2) && d <= Duration::from_millis(2200));
        assert_eq!(
            p.next(0, true, Some(RETRY_AFTER_CEILING)),
            Next::TooLong(RETRY_AFTER_CEILING)
        );
    }

    #[test]
    fn error_bodies_become_short_clean_messages() {
        assert_eq!(
            error_message(401, br#"{"error":{"message":"Incorrect API key"}}"#),
            "Incorrect API key"
        );
        assert_eq!(
            error_message(500, br#"{"error":"model crashed"}"#),
            "model crashed"
        );
        assert_eq!(
            error_message(422, br#"{"detail":[{"msg":"bad field"}]}"#),
            "bad field"
        );
        // Raw bodies (an internal page, a dump) are never echoed.
        let page = b"<html><body>internal admin console: secret=42</body></html>";
        assert_eq!(error_message(502, page), "Bad Gateway");
        assert_eq!(
            error_message(500, b"plain text secret"),
            "Internal Server Error"
        );
        // Long or multi-line messages are cut to one short line.
        let long =
            serde_json::json!({"error": {"message": format!("a\nb\u{7}c {}", "x".repeat(1000))}});
        let m = error_message(400, long.to_string().as_bytes());
        assert!(m.starts_with("a b c "), "{m}");
        assert!(m.chars().count() <= MAX_MESSAGE_CHARS + 1, "{}", m.len());
    }

    #[test]
    fn passwords_in_urls_are_not_shown() {
        let shown = display_url("https://user:hunter2@proxy.example/v1");
        assert!(
            !shown.contains("hunter2") && shown.contains("proxy.example"),
            "{shown}"
        );
        assert_eq!(display_url("http://h:1/v1"), "http://h:1/v1");
    }

    #[test]
    fn keys_are_redacted() {
        let key = "sk-proj-abcdefghijklmnopqrstuvwxyz";
        let msg = redact(format!("Incorrect API key provided: {key}."), Some(key));
        assert!(!msg.contains(key) && msg.contains("<redacted>"));
        assert_eq!(redact("ollama x".into(), Some("x")), "ollama x");
    }
}
