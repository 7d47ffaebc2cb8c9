//! Tool definitions for the model and the server-side execution of tenant HTTP tools:
//! arguments validated against the tool's JSON Schema, the outbound policy of tenant-set
//! URLs ([`crate::net::Policy`]: no private, loopback or reserved addresses unless the
//! operator allowed them, DNS answers checked and pinned), no redirects (a tool's secret
//! headers must not follow one elsewhere), a timeout and a response size cap.

use crate::auth::seal::Sealer;
use crate::llm::ToolDef;
use crate::model::{HttpTool, ToolSpec};
use crate::net::Policy;
use futures::StreamExt;
use std::time::Duration;

pub const SEARCH_KNOWLEDGE: &str = "search_knowledge";
pub const HANDOFF: &str = "handoff_to_human";
/// Largest tool response passed back to the model.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Headers a tool may not set: they decide where and how the request is framed and routed,
/// which is ours to decide.
pub const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// True for a header name tools may not set (any case).
pub fn is_reserved_header(name: &str) -> bool {
    RESERVED_HEADERS
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name.trim()))
}

pub fn definitions(tools: &[ToolSpec], knowledge: bool) -> Vec<ToolDef> {
    tools
        .iter()
        .filter_map(|t| match t {
            ToolSpec::SearchKnowledge if knowledge => Some(ToolDef {
                name: SEARCH_KNOWLEDGE.into(),
                description: "Search the business's knowledge base again with your own query, when the sources you have do not answer the question.".into(),
                parameters: serde_json::json!({"type": "object", "properties": {"query": {"type": "string", "description": "What to look for"}}, "required": ["query"]}),
            }),
            ToolSpec::SearchKnowledge => None,
            ToolSpec::HandoffToHuman => Some(ToolDef {
                name: HANDOFF.into(),
                description: "Hand the conversation to a person of the team, when the customer asks for one or you cannot help.".into(),
                parameters: serde_json::json!({"type": "object", "properties": {"reason": {"type": "string", "description": "Why a person is needed"}}, "required": ["reason"]}),
            }),
            ToolSpec::Http(h) => Some(ToolDef {
                name: h.name.clone(),
                description: h.description.clone(),
                parameters: if h.parameters.is_null() {
                    serde_json::json!({"type": "object", "properties": {}})
                } else {
                    h.parameters.clone()
                },
            }),
        })
        .collect()
}

/// Calls an HTTP tool under `policy` (the operator's tool policy: tenants cannot widen it).
/// Every failure is a message for the model, not an error of the turn.
pub async fn call_http(
    tool: &HttpTool,
    raw_args: &str,
    sealer: &Sealer,
    policy: &Policy,
) -> Result<String, String> {
    let args: serde_json::Value = serde_json::from_str(if raw_args.trim().is_empty() {
        "{}"
    } else {
        raw_args
    })
    .map_err(|e| format!("the arguments are not valid JSON: {e}"))?;
    if !tool.parameters.is_null() {
        let v = jsonschema::validator_for(&tool.parameters)
            .map_err(|e| format!("the tool's schema is invalid: {e}"))?;
        let errors: Vec<String> = v
            .iter_errors(&args)
            .take(5)
            .map(|e| e.to_string())
            .collect();
        if !errors.is_empty() {
            return Err(format!("invalid arguments: {}", errors.join("; ")));
        }
    }
    let mut url = url::Url::parse(&tool.url).map_err(|e| format!("bad tool URL: {e}"))?;
    policy
        .check_url(&url)
        .map_err(|e| format!("the tool URL is not allowed: {e}"))?;
    let timeout = Duration::from_millis(tool.timeout_ms.unwrap_or(10_000).clamp(100, 60_000));
    // The policy's resolver checks every DNS answer and connects only to checked addresses,
    // so a second answer cannot point elsewhere (rebinding).
    let client = policy
        .client(false)
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let method = reqwest::Method::from_bytes(tool.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| "bad method".to_string())?;
    if (method == reqwest::Method::GET || method == reqwest::Method::DELETE)
        && let Some(obj) = args.as_object()
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in obj {
            let s = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            q.append_pair(k, &s);
        }
    }
    let mut rb = client.request(method.clone(), url).header(
        "user-agent",
        concat!("aigentable/", env!("CARGO_PKG_VERSION")),
    );
    // Stored before reserved headers were refused: skipped, never sent.
    for (k, sealed) in tool.headers.iter().filter(|(k, _)| !is_reserved_header(k)) {
        let v = sealer
            .open(sealed)
            .ok_or_else(|| format!("the stored value of header {k} cannot be decrypted"))?;
        rb = rb.header(k.as_str(), v);
    }
    if method != reqwest::Method::GET && method != reqwest::Method::DELETE {
        rb = rb.json(&args);
    }
    let resp = rb.send().await.map_err(|e| {
        if let Some(r) = crate::net::Refused::find(&e) {
            format!("the tool URL is not allowed: {r}")
        } else if e.is_timeout() {
            format!("the tool did not answer within {} ms", timeout.as_millis())
        } else {
            format!(
                "the request failed: {}",
                crate::net::upstream::root_cause(&e)
            )
        }
    })?;
    let status = resp.status();
    let mut body = Vec::new();
    let mut truncated = false;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| format!("reading the response failed: {}", e.without_url()))?;
        let room = MAX_RESPONSE_BYTES - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            truncated = true;
            break;
        }
        body.extend_from_slice(&chunk);
    }
    let mut text = String::from_utf8_lossy(&body).into_owned();
    if truncated {
        text.push_str("\n[response truncated]");
    }
    if status.is_success() {
        Ok(text)
    } else {
        Err(format!(
            "HTTP {}: {}",
            status.as_u16(),
            text.chars().take(2000).collect::<String>()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::is_reserved_header;

    #[test]
    fn framing_and_routing_headers_are_reserved() {
        for h in [
            "Host",
            "host",
            "Content-Length",
            "TRANSFER-ENCODING",
            "Connection",
        ] {
            assert!(is_reserved_header(h), "{h}");
        }
        for h in ["Authorization", "X-Api-Key", "Accept"] {
            assert!(!is_reserved_header(h), "{h}");
        }
    }
}
