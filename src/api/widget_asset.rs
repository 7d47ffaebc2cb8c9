//! The embeddable chat widget's script (`GET /widget.js`) and its preview page
//! (`GET /widget/{widgetKey}/preview`). Owns only the bytes and headers: the script is the
//! committed build of `web/widget` (embedded, so a clean clone serves it without Node) with its
//! precompressed gzip and brotli twins; it calls the widget REST and Socket.IO routes itself.
//! Depends on nothing below api/.

use super::AppState;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

const JS: &[u8] = include_bytes!("../../web/widget/dist/widget.js");
const JS_GZ: &[u8] = include_bytes!("../../web/widget/dist/widget.js.gz");
const JS_BR: &[u8] = include_bytes!("../../web/widget/dist/widget.js.br");

/// The script's URL is stable (sites paste it once), so it is not content-hashed: browsers
/// keep it a few minutes, then revalidate with the ETag (a 304 is a few bytes).
const CACHE_CONTROL: &str = "public, max-age=300, stale-while-revalidate=3600";

/// The preview page's policy: as strict as a careful host site's. The widget needs only its
/// own server (script, fetch, WebSocket) and styles itself with constructable stylesheets,
/// which no `style-src` blocks. The avatar may be an https image elsewhere.
const PREVIEW_CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
     img-src 'self' https: data:; style-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'self'";

/// A weak validator: the three encodings are the same content, so they share it.
static ETAG: LazyLock<HeaderValue> = LazyLock::new(|| {
    let digest = Sha256::digest(JS);
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("W/\"{hex}\"")).expect("BUG: hex etag is a valid header")
});

/// The routes of this module (no state needed; merged into the app router).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/widget.js", get(script))
        .route("/widget/{widget_key}/preview", get(preview))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Brotli,
    Gzip,
    Identity,
}

/// The best encoding the client accepts (`q=0` refuses one); brotli first, it is smallest.
fn negotiate(headers: &HeaderMap) -> Encoding {
    let mut br = false;
    let mut gz = false;
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let refused = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            if refused {
                continue;
            }
            match name.as_str() {
                "br" => br = true,
                "gzip" | "x-gzip" => gz = true,
                "*" => {
                    br = true;
                    gz = true;
                }
                _ => {}
            }
        }
    }
    if br {
        Encoding::Brotli
    } else if gz {
        Encoding::Gzip
    } else {
        Encoding::Identity
    }
}

/// Whether `If-None-Match` names the current version (weak comparison, as for GET).
fn not_modified(headers: &HeaderMap) -> bool {
    let tag = ETAG.to_str().unwrap_or("");
    let bare = tag.trim_start_matches("W/");
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == bare)
}

/// `GET /widget.js`: the widget, compressed when the client accepts it, cacheable, loadable
/// from any site (CORS `*`, cross-origin resource policy).
async fn script(headers: HeaderMap) -> Response {
    let mut h = HeaderMap::new();
    h.insert(header::ETAG, ETAG.clone());
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    // Every other response is same-origin only; this one is meant for other sites' pages.
    h.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
    if not_modified(&headers) {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    let body = match negotiate(&headers) {
        Encoding::Brotli => {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
            JS_BR
        }
        Encoding::Gzip => {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            JS_GZ
        }
        Encoding::Identity => JS,
    };
    (StatusCode::OK, h, body).into_response()
}

/// A widget key as it may appear in a URL path and in HTML without escaping.
fn plausible_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 128
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `GET /widget/{widgetKey}/preview`: a bare page embedding the widget under a strict CSP,
/// so an admin can try a channel at once.
async fn preview(State(state): State<AppState>, Path(key): Path<String>) -> Response {
    if !plausible_key(&key) {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    // An unknown key or a paused widget is said on the page: the widget itself would only
    // tell the browser's console.
    let k = key.clone();
    if let Err(e) = state.run(move |s| s.public_widget(&k, None)).await {
        let mut r = (e.status, format!("{}: {}\n", e.code, e.message)).into_response();
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return r;
    }
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Chat widget preview</title><link rel=\"icon\" href=\"data:,\"></head><body>\
         <h1>Chat widget preview</h1>\
         <p>This page embeds the widget of this channel exactly as a website would, under a \
         strict Content-Security-Policy. Open the chat button in the corner to try it.</p>\
         <pre>&lt;script src=\"{{THIS SERVER}}/widget.js\" data-widget-key=\"{key}\" async&gt;&lt;/script&gt;</pre>\
         <noscript>The widget needs JavaScript.</noscript>\
         <script src=\"/widget.js\" data-widget-key=\"{key}\" async></script>\
         </body></html>\n"
    );
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PREVIEW_CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (StatusCode::OK, h, html).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn negotiation_prefers_brotli_and_honours_refusals() {
        assert_eq!(negotiate(&HeaderMap::new()), Encoding::Identity);
        assert_eq!(negotiate(&accept("gzip, deflate, br")), Encoding::Brotli);
        assert_eq!(negotiate(&accept("gzip")), Encoding::Gzip);
        assert_eq!(negotiate(&accept("br;q=0, gzip;q=0.5")), Encoding::Gzip);
        assert_eq!(negotiate(&accept("identity")), Encoding::Identity);
        assert_eq!(negotiate(&accept("*")), Encoding::Brotli);
        assert_eq!(negotiate(&accept("br;q=0.0, gzip;q=0")), Encoding::Identity);
    }

    #[test]
    fn precompressed_twins_decode_to_the_script() {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(JS_GZ)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(
            out, JS,
            "dist/widget.js.gz is not dist/widget.js (rebuild web/widget)"
        );
        // Brotli is checked over HTTP by the integration test (no brotli decoder here);
        // at least it must be smaller than gzip's output, or serving it is pointless.
        assert!(JS_BR.len() < JS_GZ.len());
    }

    #[test]
    fn etag_revalidation_matches_weak_and_strong_forms() {
        let tag = ETAG.to_str().unwrap().to_string();
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_str(&tag).unwrap());
        assert!(not_modified(&h));
        let strong = tag.trim_start_matches("W/").to_string();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"other\", {strong}")).unwrap(),
        );
        assert!(not_modified(&h));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert!(!not_modified(&h));
    }

    #[test]
    fn preview_keys_are_plain_tokens() {
        assert!(plausible_key("wk_AbC-123_x"));
        assert!(!plausible_key(""));
        assert!(!plausible_key("a\"><script>"));
        assert!(!plausible_key(&"a".repeat(129)));
    }
}
