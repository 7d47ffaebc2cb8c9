//! The web widget as a website gets it: `GET /widget.js` (encodings, caching, cross-origin
//! loading) and the preview page; and the widget itself in headless Chromium (see below).

use crate::common;
use reqwest::header;

const JS: &[u8] = include_bytes!("../../web/widget/dist/widget.js");
const JS_GZ: &[u8] = include_bytes!("../../web/widget/dist/widget.js.gz");
const JS_BR: &[u8] = include_bytes!("../../web/widget/dist/widget.js.br");

async fn get(
    s: &common::Server,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut rb = s.http.get(format!("{}{}", s.base, path));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.expect("request");
    let status = r.status().as_u16();
    let h = r.headers().clone();
    (status, h, r.bytes().await.expect("body").to_vec())
}

fn hv<'a>(h: &'a reqwest::header::HeaderMap, k: &str) -> &'a str {
    h.get(k).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test]
async fn widget_script_is_served_compressed_cacheable_and_loadable_from_any_site() {
    let s = common::start().await;
    assert!(
        JS.len() < 200 * 1024 && JS_GZ.len() < 30 * 1024,
        "widget.js over its size budget: {} raw, {} gzipped",
        JS.len(),
        JS_GZ.len()
    );

    // No Accept-Encoding: the plain script.
    let (status, h, body) = get(&s, "/widget.js", &[("Origin", "https://shop.example")]).await;
    assert_eq!(status, 200);
    assert_eq!(body, JS, "GET /widget.js is not the committed build");
    assert!(hv(&h, "content-type").starts_with("text/javascript"));
    assert_eq!(hv(&h, "content-encoding"), "");
    assert_eq!(hv(&h, "access-control-allow-origin"), "*");
    assert_eq!(hv(&h, "cross-origin-resource-policy"), "cross-origin");
    assert!(hv(&h, "cache-control").contains("max-age=300"));
    assert!(
        hv(&h, "vary")
            .to_ascii_lowercase()
            .contains("accept-encoding")
    );
    let etag = hv(&h, "etag").to_string();
    assert!(etag.starts_with("W/\""), "etag: {etag}");

    // Compressed twins when accepted, brotli first.
    let (_, h, body) = get(&s, "/widget.js", &[("Accept-Encoding", "gzip")]).await;
    assert_eq!(hv(&h, "content-encoding"), "gzip");
    assert_eq!(body, JS_GZ);
    let (_, h, body) = get(
        &s,
        "/widget.js",
        &[("Accept-Encoding", "gzip, deflate, br, zstd")],
    )
    .await;
    assert_eq!(hv(&h, "content-encoding"), "br");
    assert_eq!(body, JS_BR);
    assert_eq!(hv(&h, "etag"), etag, "one validator for every encoding");
    let (_, h, body) = get(&s, "/widget.js", &[("Accept-Encoding", "br;q=0, gzip;q=0")]).await;
    assert_eq!(hv(&h, "content-encoding"), "");
    assert_eq!(body, JS);

    // Revalidation: 304 without a body; a stale tag gets the script.
    let (status, h, body) = get(&s, "/widget.js", &[("If-None-Match", &etag)]).await;
    assert_eq!(status, 304);
    assert!(body.is_empty());
    assert_eq!(hv(&h, "etag"), etag);
    let (status, _, body) = get(&s, "/widget.js", &[("If-None-Match", "W/\"stale\"")]).await;
    assert_eq!(status, 200);
    assert_eq!(body, JS);
    s.stop().await;
}

#[tokio::test]
async fn preview_page_embeds_the_widget_under_a_strict_csp() {
    let s = common::start().await;
    let (status, h, body) = get(&s, "/widget/wk_preview-123/preview", &[]).await;
    assert_eq!(status, 200);
    assert!(hv(&h, "content-type").starts_with("text/html"));
    let html = String::from_utf8(body).expect("utf-8");
    assert!(
        html.contains(
            r#"<script src="/widget.js" data-widget-key="wk_preview-123" async></script>"#
        ),
        "{html}"
    );
    let csp = hv(&h, header::CONTENT_SECURITY_POLICY.as_str());
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );

    // Anything that is not a plain key token is not a page (and never reaches the HTML).
    let (status, _, body) = get(&s, "/widget/a%22%3E%3Cscript%3E/preview", &[]).await;
    assert_eq!(status, 404);
    assert!(!String::from_utf8_lossy(&body).contains("<script"));
    s.stop().await;
}
