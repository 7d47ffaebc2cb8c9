//! Detaches a Socket.IO request from its connection's read buffer. hyper parses the URI and
//! header values as zero-copy slices of the connection's read buffer (8-16 KiB), and
//! engineioxide keeps each socket's handshake request (`req_parts`) for the socket's whole
//! life, so every open socket pinned one or two whole read buffers for a few hundred bytes
//! of headers (measured with heaptrack and `examples/bench_realtime.rs`, see BENCHMARKS.md
//! "Realtime"). Copying the head out costs one small allocation per request instead.
//! Depends on nothing of ours.

use axum::extract::{OriginalUri, Request};
use axum::http::{HeaderMap, HeaderValue, Uri};

/// The same request with its URI and headers in their own allocations.
pub fn detach(req: Request) -> Request {
    let (mut parts, body) = req.into_parts();
    if let Ok(uri) = parts.uri.to_string().parse::<Uri>() {
        // axum's router keeps a clone of the URI (sharing the buffer) as `OriginalUri`.
        if let Some(original) = parts.extensions.get_mut::<OriginalUri>() {
            original.0 = uri.clone();
        }
        parts.uri = uri;
    }
    let mut headers = HeaderMap::with_capacity(parts.headers.len());
    for (name, value) in &parts.headers {
        let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        // Known names are static; a custom one is rebuilt from its text (a fresh copy).
        let name = axum::http::HeaderName::from_bytes(name.as_str().as_bytes())
            .unwrap_or_else(|_| name.clone());
        headers.append(name, copy);
    }
    parts.headers = headers;
    Request::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_request_as_it_was() {
        let req = Request::builder()
            .uri("/socket.io/?EIO=4&transport=websocket")
            .header("x-custom", "a")
            .header("x-custom", "b")
            .header("authorization", "Bearer t")
            .extension(OriginalUri(Uri::from_static("/socket.io/?EIO=4")))
            .body(axum::body::Body::empty())
            .expect("BUG: test request");
        let out = detach(req);
        assert!(out.extensions().get::<OriginalUri>().is_some());
        assert_eq!(out.uri(), "/socket.io/?EIO=4&transport=websocket");
        let v: Vec<_> = out.headers().get_all("x-custom").iter().collect();
        assert_eq!(v, ["a", "b"]);
        assert_eq!(out.headers()["authorization"], "Bearer t");
    }
}
