//! Extractors. [`Auth`] is the only way a handler learns who is calling; [`Json`] and
//! [`Query`] turn every framework rejection into the one error body.

use super::AppState;
use super::error::{ApiError, ApiResult};
use crate::auth::Caller;
use crate::domain::{ClientMeta, PageReq};
use crate::types::TenantId;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::net::{IpAddr, SocketAddr};

/// JSON body: requires `Content-Type: application/json`, honours the body limit, and reports
/// the exact field of a type error.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mime = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !(mime == "application/json"
            || (mime.starts_with("application/") && mime.ends_with("+json")))
        {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected a JSON body with Content-Type: application/json",
            ));
        }
        let _ = state;
        let limit = json_limit(&req);
        parse_json(&read_limited(req.into_body(), limit).await?).map(Json)
    }
}

/// An optional JSON body (any Content-Type): empty or blank means `T::default()`; anything
/// else is parsed as [`Json`] is, within the JSON limit (not the router-wide upload limit).
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let limit = json_limit(&req);
        optional_json(req.into_body(), limit)
            .await
            .map(OptionalJson)
    }
}

/// [`OptionalJson`] for a handler that reads its body after other checks (so a refused
/// caller hears 403 before any complaint about the body).
pub async fn optional_json<T: DeserializeOwned + Default>(
    body: axum::body::Body,
    limit: JsonLimit,
) -> Result<T, ApiError> {
    let bytes = read_limited(body, limit).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(&bytes)
}

fn json_limit(req: &Request) -> JsonLimit {
    req.extensions()
        .get::<JsonLimit>()
        .copied()
        .unwrap_or(JsonLimit(1024 * 1024))
}

async fn read_limited(
    body: axum::body::Body,
    JsonLimit(limit): JsonLimit,
) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the JSON body is larger than {limit} bytes"),
        )
    })
}

/// The JSON body limit, set on every request by the router (BODY_LIMIT_BYTES). The
/// router-wide limit is the (larger) upload limit.
#[derive(Clone, Copy)]
pub struct JsonLimit(pub usize);

/// Parses JSON bytes into `T` with the one error shape. The body must be exactly one JSON
/// value (trailing bytes are `malformed_json`), and structs are read only from objects, at
/// any depth ([`super::strict_json`]): a top-level value of the wrong JSON type is
/// `malformed_json`, a wrong field is `validation_failed` naming it, and a field that must be
/// an id and is not one is `invalid_id` naming it.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    serde_path_to_error::deserialize(super::strict_json::Strict(&value)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let field = if path == "." { String::new() } else { path };
        let msg = inner.to_string();
        if field.is_empty() && msg.starts_with("invalid type") {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body has the wrong JSON type: {msg}"),
            );
        }
        if msg == crate::types::INVALID_ID {
            return ApiError::invalid_id(&field);
        }
        // serde puts "missing field `x`" at the parent's path.
        let field = match (field.is_empty(), msg.strip_prefix("missing field `")) {
            (_, Some(rest)) => {
                let name = rest.split('`').next().unwrap_or("");
                if field.is_empty() {
                    name.to_string()
                } else {
                    format!("{field}.{name}")
                }
            }
            _ => field,
        };
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "some fields are invalid",
        )
        .with_details(serde_json::json!({ "fields": [{ "field": field, "message": msg }] }))
    })
}

/// Query string with the one error shape.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|e| bad_query(&e.body_text()))
    }
}

fn bad_query(msg: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", msg.to_string())
}

/// `?limit=&cursor=` of list endpoints.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// 1-200, default 50.
    pub limit: Option<String>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageParams {
    pub fn to_req(&self) -> Result<PageReq, ApiError> {
        page_req(self.limit.as_deref(), self.cursor.as_deref())
    }
}

/// `limit` and `cursor` of a list endpoint whose query also has filters, checked and
/// clamped like [`PageParams`].
pub fn page_req(limit: Option<&str>, cursor: Option<&str>) -> Result<PageReq, ApiError> {
    let limit = match limit {
        None | Some("") => PageReq::DEFAULT,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=PageReq::MAX).contains(&n) => n,
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    format!("limit must be a number from 1 to {}", PageReq::MAX),
                ));
            }
        },
    };
    let cursor = cursor.filter(|c| !c.is_empty()).map(str::to_string);
    if cursor.as_ref().is_some_and(|c| c.len() > 200) {
        return Err(bad_query("cursor is not valid"));
    }
    Ok(PageReq { limit, cursor })
}

/// The authenticated caller (access token or API key), already rate limited.
pub struct Auth(pub Caller);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let api_key = parts
            .headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        let caller = match (bearer, api_key) {
            (Some(k), _) if k.starts_with("ak_") => {
                let k = k.to_string();
                state.run(move |s| s.authenticate_api_key(&k)).await?
            }
            (_, Some(k)) => {
                let k = k.to_string();
                state.run(move |s| s.authenticate_api_key(&k)).await?
            }
            // The token is checked against its session in the store: a blocking read.
            (Some(t), None) => {
                let t = t.to_string();
                state.run(move |s| s.authenticate_access(&t)).await?
            }
            (None, None) => return Err(ApiError::unauthorized()),
        };
        // A platform admin picks the tenant to act in with `X-Tenant-Id` (see README, Roles).
        let caller = match parts.headers.get("x-tenant-id") {
            None => caller,
            Some(v) => {
                let t = v
                    .to_str()
                    .ok()
                    .and_then(|v| TenantId::parse(v.trim()))
                    .ok_or_else(|| ApiError::invalid_id("X-Tenant-Id"))?;
                let caller = state.run(move |s| s.act_in(caller, &t)).await?;
                if let Some(t) = caller.acting_for() {
                    tracing::Span::current().record("acting_for", t.as_str());
                }
                caller
            }
        };
        let key = match (caller.api_key_id(), caller.user()) {
            (Some(k), _) => format!("k:{k}"),
            (None, Some(u)) => format!("u:{u}"),
            (None, None) => format!("t:{}", caller.tenant()),
        };
        state.limits.api.check(&key)?;
        tracing::Span::current().record("tenant", caller.tenant().as_str());
        // Where the call came from, for the audit log.
        Ok(Auth(caller.with_client(client_meta(parts, state))))
    }
}

/// Client IP and user agent. The IP is the TCP peer's, or, when the peer is one of
/// TRUSTED_PROXIES, the address its forwarding headers name (see [`client_ip`]).
pub struct Client(pub ClientMeta);

impl FromRequestParts<AppState> for Client {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(Client(client_meta(parts, state)))
    }
}

fn client_meta(parts: &Parts, state: &AppState) -> ClientMeta {
    ClientMeta {
        ip: client_ip(parts, &state.limits.trusted_proxies).map(|ip| ip.to_string()),
        user_agent: parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(300).collect()),
    }
}

pub fn peer_ip(parts: &Parts) -> Option<String> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
}

/// The client's address for limits and logs. Forwarding headers are believed only when the
/// TCP peer is a trusted proxy (anyone else could write them): then the hops of
/// `X-Forwarded-For` (else `Forwarded: for=`) are walked from the right, past trusted
/// proxies, and the first other address is the client. A hop that does not parse ends the
/// walk at the last trusted address.
pub fn client_ip(parts: &Parts, trusted: &[crate::config::IpNet]) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())?;
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let hops = forwarded_hops(&parts.headers);
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop {
            Some(ip) if is_trusted(*ip) => client = *ip,
            Some(ip) => return Some(*ip),
            None => break,
        }
    }
    Some(client)
}

/// The addresses of `X-Forwarded-For` (all its headers, in order), or else of the `for=`
/// parameters of `Forwarded`; `None` for a hop that is not an address.
fn forwarded_hops(h: &axum::http::HeaderMap) -> Vec<Option<IpAddr>> {
    let xff: Vec<&str> = h
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if !xff.is_empty() {
        return xff.into_iter().map(parse_node).collect();
    }
    h.get_all(header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| parse_node(v.trim()))
            })
        })
        .collect()
}

/// `192.0.2.1`, `192.0.2.1:4711`, `"[2001:db8::1]:4711"`, `2001:db8::1`.
fn parse_node(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"');
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    s.parse::<SocketAddr>().ok().map(|a| a.ip())
}

/// For nullable PATCH-like fields, `null` and absent differ: absent keeps, null clears.
/// Use with `#[serde(default, deserialize_with = "double")]` on an `Option<Option<T>>`.
pub fn double<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

/// An optional id filter from a query string: absent or empty is `None`, anything else must
/// parse (400 `invalid_id` naming `name` otherwise).
pub fn opt_id<T>(
    v: Option<String>,
    name: &str,
    parse: fn(&str) -> Option<T>,
) -> ApiResult<Option<T>> {
    match v.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => parse(&s)
            .map(Some)
            .ok_or_else(|| ApiError::invalid_id(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::client_ip;
    use crate::config::IpNet;
    use axum::extract::ConnectInfo;
    use std::net::SocketAddr;

    fn parts(peer: &str, headers: &[(&str, &str)]) -> axum::http::request::Parts {
        let mut b = axum::http::Request::get("/");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let (mut p, _) = b.body(()).expect("request").into_parts();
        let addr: SocketAddr = peer.parse().expect("peer");
        p.extensions.insert(ConnectInfo(addr));
        p
    }

    fn ip(peer: &str, headers: &[(&str, &str)], trusted: &[&str]) -> String {
        let t: Vec<IpNet> = trusted
            .iter()
            .map(|s| IpNet::parse(s).expect("net"))
            .collect();
        client_ip(&parts(peer, headers), &t)
            .expect("an address")
            .to_string()
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let xff = [("x-forwarded-for", "198.51.100.7, 10.0.0.5")];
        // An untrusted peer cannot choose its address.
        assert_eq!(ip("203.0.113.9:5000", &xff, &[]), "203.0.113.9");
        assert_eq!(ip("203.0.113.9:5000", &xff, &["10.0.0.0/8"]), "203.0.113.9");
        // Behind a trusted proxy (and a trusted inner hop), the first untrusted hop.
        assert_eq!(ip("10.0.0.1:5000", &xff, &["10.0.0.0/8"]), "198.51.100.7");
        // A spoofed left part does not win over what the proxy appended.
        let spoof = [("x-forwarded-for", "1.1.1.1, 198.51.100.7")];
        assert_eq!(ip("10.0.0.1:5000", &spoof, &["10.0.0.1"]), "198.51.100.7");
        // Forwarded (RFC 7239), with quotes, brackets and ports.
        let fwd = [(
            "forwarded",
            r#"for="[2001:db8::17]:4711";proto=https, for=10.0.0.3"#,
        )];
        assert_eq!(ip("10.0.0.1:5000", &fwd, &["10.0.0.0/8"]), "2001:db8::17");
        // Garbage stops the walk at the last trusted hop.
        let junk = [("x-forwarded-for", "unknown, 10.0.0.4")];
        assert_eq!(ip("10.0.0.1:5000", &junk, &["10.0.0.0/8"]), "10.0.0.4");
        // A trusted peer without headers is the client.
        assert_eq!(ip("10.0.0.1:5000", &[], &["10.0.0.0/8"]), "10.0.0.1");
    }
}
