//! The admin UI, built from `web/` into `web/dist` and embedded in the binary (rust-embed):
//! static files, the single-page-app fallback to `index.html`, cache and CSP headers, and
//! the precompressed (brotli, gzip) variants chosen by `Accept-Encoding`.
//!
//! Owns only serving bytes; knows nothing of the API beyond the path prefixes it must leave
//! alone (those keep their own 404s). Depends on `api::middleware` for the 404 answer.

use super::middleware;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::Embed;

/// The built UI (`npm run build` in `web/`). In debug builds rust-embed reads the folder at
/// run time; release builds carry the bytes.
#[derive(Embed)]
#[folder = "web/dist"]
struct Assets;

/// Paths that belong to the server, never to the UI: an unknown path under them is a 404 of
/// their own kind (JSON under /api and /v1), not the app's page.
const RESERVED: &[&str] = &[
    "/api",
    "/v1",
    "/socket.io",
    "/metrics",
    "/widget.js",
    "/widget",
    "/docs",
];

/// The page's policy: scripts, styles, fonts and connections (XHR, fetch, websockets: CSP 3
/// lets 'self' match ws:/wss: of the same host) only from this origin; no inline script or
/// style, no plugins, no framing.
pub const UI_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Hashed build outputs (`assets/name-HASH.ext`) never change under their name.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Everything else (index.html, favicon) is revalidated on each use (ETag).
const REVALIDATE: &str = "no-cache";

fn reserved(path: &str) -> bool {
    RESERVED.iter().any(|p| {
        path == *p
            || path
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// The router's fallback: UI files and the app's page for GET/HEAD outside the reserved
/// prefixes; the usual 404 for everything else.
pub async fn fallback(req: Request) -> Response {
    let path = req.uri().path();
    if !(req.method() == Method::GET || req.method() == Method::HEAD) || reserved(path) {
        return middleware::not_found(req).await;
    }
    let rel = path.trim_start_matches('/');
    // The precompressed copies are served in place of their originals, never by name.
    let is_variant = rel.ends_with(".gz") || rel.ends_with(".br");
    if !rel.is_empty()
        && !is_variant
        && let Some(resp) = asset(rel, req.headers())
    {
        return resp;
    }
    // A path with a file extension is a missing file; any other is a page of the app.
    let last = rel.rsplit('/').next().unwrap_or_default();
    if last.contains('.') {
        return middleware::not_found(req).await;
    }
    asset("index.html", req.headers()).unwrap_or_else(|| {
        // Only when web/dist was not built: say so instead of a blank page.
        (
            StatusCode::NOT_FOUND,
            "the admin UI is not built (run `npm ci && npm run build` in web/)",
        )
            .into_response()
    })
}

/// Which encodings the client takes, by `Accept-Encoding` (`q=0` refuses one).
fn accepts(headers: &HeaderMap) -> (bool, bool) {
    let mut br = false;
    let mut gzip = false;
    for v in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(v) = v.to_str() else { continue };
        for item in v.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            match name.as_str() {
                "br" => br = !refused,
                "gzip" | "x-gzip" => gzip = !refused,
                "*" if !refused => {
                    br = true;
                    gzip = true;
                }
                _ => {}
            }
        }
    }
    (br, gzip)
}

/// The file at `rel` (brotli or gzip variant when there is one the client takes), with its
/// type, cache policy, ETag, and the CSP when it is the page; `None` when there is no file.
fn asset(rel: &str, headers: &HeaderMap) -> Option<Response> {
    let original = Assets::get(rel)?;
    let mime = original.metadata.mimetype().to_string();
    let (br, gzip) = accepts(headers);
    let mut chosen = None;
    if br && let Some(f) = Assets::get(&format!("{rel}.br")) {
        chosen = Some((f, Some("br")));
    } else if gzip && let Some(f) = Assets::get(&format!("{rel}.gz")) {
        chosen = Some((f, Some("gzip")));
    }
    let has_variants = Assets::get(&format!("{rel}.gz")).is_some();
    let (file, encoding) = chosen.unwrap_or((original, None));

    let etag = format!(
        "\"{}{}\"",
        hex::encode(&file.metadata.sha256_hash()[..16]),
        encoding.map(|e| format!("-{e}")).unwrap_or_default()
    );
    let is_html = mime.starts_with("text/html");
    // Text files say their charset (the build writes UTF-8).
    let content_type = if mime.starts_with("text/") || mime.ends_with("javascript") {
        format!("{mime}; charset=utf-8")
    } else {
        mime
    };

    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        Response::new(Body::from(file.data.into_owned()))
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if rel.starts_with("assets/") {
            IMMUTABLE
        } else {
            REVALIDATE
        }),
    );
    if let Some(e) = encoding {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(e));
    }
    if has_variants {
        h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    if is_html {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(UI_CSP),
        );
    }
    Some(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;
    use tower::ServiceExt;

    fn app() -> axum::Router {
        let r = axum::Router::new()
            .route(
                "/api/health",
                axum::routing::get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
            )
            .fallback(fallback);
        middleware::outer_layers(r, false)
    }

    async fn get(path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut b = Request::get(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = app()
            .oneshot(b.body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body")
            .to_vec();
        (status, headers, body)
    }

    fn header<'a>(h: &'a HeaderMap, k: &str) -> &'a str {
        h.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    /// The built entry script (`assets/index-HASH.js`).
    fn entry_script() -> String {
        Assets::iter()
            .find(|p| p.starts_with("assets/") && p.ends_with(".js"))
            .expect("web/dist has a built script")
            .into_owned()
    }

    #[tokio::test]
    async fn the_app_page_is_served_at_the_root_and_for_app_paths() {
        for path in [
            "/",
            "/agents",
            "/agents/0193-abc/playground",
            "/accept-invite?token=x",
        ] {
            let (s, h, body) = get(path, &[]).await;
            assert_eq!(s, StatusCode::OK, "{path}");
            assert!(
                header(&h, "content-type").starts_with("text/html"),
                "{path}"
            );
            assert_eq!(header(&h, "cache-control"), "no-cache", "{path}");
            let csp = header(&h, "content-security-policy");
            assert_eq!(csp, UI_CSP, "{path}");
            assert!(
                !csp.contains("unsafe-inline") && !csp.contains("http"),
                "{csp}"
            );
            let html = String::from_utf8(body).expect("utf-8");
            assert!(html.contains("<div id=\"app\">"), "{path}: {html}");
            // No inline script: the CSP would block it.
            assert!(
                !html.contains("<script>") && !html.contains("<style"),
                "{html}"
            );
        }
    }

    #[tokio::test]
    async fn server_paths_keep_their_own_404s() {
        for path in [
            "/api/nope",
            "/api",
            "/v1/nope",
            "/socket.io/x",
            "/metrics",
            "/widget.js",
            "/docs/x",
        ] {
            let (s, h, body) = get(path, &[]).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
            assert!(
                !header(&h, "content-type").starts_with("text/html"),
                "{path}"
            );
            if path.starts_with("/api") || path.starts_with("/v1") {
                let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
                assert_eq!(v["error"]["code"], "route_not_found", "{path}");
            }
        }
        // Routes that exist are untouched.
        let (s, _, _) = get("/api/health", &[]).await;
        assert_eq!(s, StatusCode::OK);
        // Prefixes match whole segments: /apix is an app path.
        let (s, h, _) = get("/apix", &[]).await;
        assert_eq!(s, StatusCode::OK);
        assert!(header(&h, "content-type").starts_with("text/html"));
    }

    #[tokio::test]
    async fn missing_files_and_other_methods_are_404() {
        let (s, _, _) = get("/assets/missing-123.js", &[]).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let gz = format!("/{}.gz", entry_script());
        let (s, _, _) = get(&gz, &[]).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "variants are not served by name");
        let resp = app()
            .oneshot(
                Request::post("/agents")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn hashed_assets_are_immutable_and_precompressed_by_accept_encoding() {
        let js = entry_script();
        let path = format!("/{js}");
        let plain = Assets::get(&js).expect("file").data.into_owned();
        let brotli = Assets::get(&format!("{js}.br"))
            .expect("br")
            .data
            .into_owned();
        let gzip = Assets::get(&format!("{js}.gz"))
            .expect("gz")
            .data
            .into_owned();
        assert!(brotli.len() < plain.len() && gzip.len() < plain.len());

        let (s, h, body) = get(&path, &[("accept-encoding", "gzip, deflate, br")]).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(header(&h, "content-encoding"), "br");
        assert_eq!(body, brotli);
        assert_eq!(header(&h, "cache-control"), IMMUTABLE);
        assert_eq!(header(&h, "vary"), "accept-encoding");
        assert!(header(&h, "content-type").contains("javascript"));

        let (_, h, body) = get(&path, &[("accept-encoding", "br;q=0, gzip")]).await;
        assert_eq!(header(&h, "content-encoding"), "gzip");
        assert_eq!(body, gzip);

        let (_, h, body) = get(&path, &[]).await;
        assert!(h.get("content-encoding").is_none());
        assert_eq!(body, plain);
    }

    #[tokio::test]
    async fn a_known_etag_answers_304() {
        let (_, h, _) = get("/", &[("accept-encoding", "gzip")]).await;
        let etag = header(&h, "etag").to_string();
        assert!(etag.ends_with("-gzip\""), "{etag}");
        let (s, _, body) = get(
            "/",
            &[("accept-encoding", "gzip"), ("if-none-match", &etag)],
        )
        .await;
        assert_eq!(s, StatusCode::NOT_MODIFIED);
        assert!(body.is_empty());
        // Another encoding is another representation: no 304 for it.
        let (s, _, _) = get("/", &[("if-none-match", &etag)]).await;
        assert_eq!(s, StatusCode::OK);
    }

    #[test]
    fn accept_encoding_parsing() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_str(v).expect("v"),
            );
            accepts(&m)
        };
        assert_eq!(h("gzip, br"), (true, true));
        assert_eq!(h("gzip;q=0.5"), (false, true));
        assert_eq!(h("br;q=0"), (false, false));
        assert_eq!(h("*"), (true, true));
        assert_eq!(h("identity"), (false, false));
        assert_eq!(accepts(&HeaderMap::new()), (false, false));
    }
}
