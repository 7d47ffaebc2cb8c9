//! Tool definitions for the model and the server-side execution of tenant HTTP tools:
//! arguments validated against the tool's JSON Schema, SSRF protection (no loopback,
//! private, link-local or unspecified addresses unless allowed, the checked address pinned
//! for the connection, no redirects), a timeout and a response size cap.

use crate::auth::seal::Sealer;
use crate::llm::ToolDef;
use crate::model::{HttpTool, ToolSpec};
use futures::StreamExt;
use std::net::IpAddr;
use std::time::Duration;

pub const SEARCH_KNOWLEDGE: &str = "search_knowledge";
pub const HANDOFF: &str = "handoff_to_human";
/// Largest tool response passed back to the model.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

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

/// True for addresses a tool may not reach without `allowPrivateNetwork`.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => {
            v.is_loopback()
                || v.is_private()
                || v.is_link_local()
                || v.is_unspecified()
                || v.is_broadcast()
                || v.is_documentation()
                || v.octets()[0] == 100 && (v.octets()[1] & 0xC0) == 64 // 100.64/10 CGNAT
                || v.octets()[0] == 0
        }
        IpAddr::V6(v) => {
            if let Some(v4) = v.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            v.is_loopback()
                || v.is_unspecified()
                || (v.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (v.segments()[0] & 0xffc0) == 0xfe80 // link local
        }
    }
}

/// Calls an HTTP tool. Every failure is a message for the model, not an error of the turn.
pub async fn call_http(
    tool: &HttpTool,
    raw_args: &str,
    sealer: &Sealer,
    allow_private_globally: bool,
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
    let host = url
        .host_str()
        .ok_or("the tool URL has no host")?
        .to_string();
    let port = url
        .port_or_known_default()
        .ok_or("the tool URL has no port")?;
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let allow = tool.allow_private_network || allow_private_globally;
    let addr = addrs
        .iter()
        .find(|a| allow || !is_private(a.ip()))
        .copied()
        .ok_or_else(|| format!("{host} resolves to a private or loopback address; the admin has not allowed this tool to reach private networks"))?;
    let timeout = Duration::from_millis(tool.timeout_ms.unwrap_or(10_000).clamp(100, 60_000));
    // Pin the checked address so a second DNS answer cannot point elsewhere (rebinding).
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve(&host, addr)
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
    for (k, sealed) in &tool.headers {
        let v = sealer
            .open(sealed)
            .ok_or_else(|| format!("the stored value of header {k} cannot be decrypted"))?;
        rb = rb.header(k.as_str(), v);
    }
    if method != reqwest::Method::GET && method != reqwest::Method::DELETE {
        rb = rb.json(&args);
    }
    let resp = rb.send().await.map_err(|e| {
        if e.is_timeout() {
            format!("the tool did not answer within {} ms", timeout.as_millis())
        } else {
            format!("the request failed: {}", e.without_url())
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
    use super::is_private;

    #[test]
    fn private_ranges() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "100.64.0.1",
        ] {
            assert!(is_private(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(!is_private(ip.parse().expect("ip")), "{ip}");
        }
    }
}
