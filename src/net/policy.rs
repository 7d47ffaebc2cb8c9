//! [`Policy`]: where an outbound URL may lead, decided by who set it, and the HTTP clients
//! that enforce it. A tenant-set URL reaches public addresses only (plus the private hosts
//! the operator named); its DNS answers are checked and the checked addresses are the ones
//! connected to (a custom resolver, so a second answer cannot rebind the name); every
//! redirect target is checked again; proxies are bypassed so nothing resolves the name
//! behind our back.

use super::addr::{in_net, is_forbidden};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

/// Redirects followed by clients that follow them.
pub const MAX_REDIRECTS: usize = 5;

/// A URL refused by the outbound policy; the message names the host, never an answer body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(String);

impl Refused {
    /// The refusal in an error's chain, when the policy is what stopped a request (reqwest
    /// wraps what the resolver or the redirect check returned).
    pub fn find<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
        let mut cur = Some(e);
        while let Some(err) = cur {
            if let Some(r) = err.downcast_ref::<Refused>() {
                return Some(r);
            }
            cur = err.source();
        }
        None
    }
}

/// Private hosts the operator lets tenant-set URLs reach (`OUTBOUND_ALLOWED_PRIVATE_HOSTS`):
/// host names (the name and every address it resolves to are allowed), IP addresses and
/// CIDR networks.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Allowlist {
    names: Vec<String>,
    nets: Vec<(IpAddr, u8)>,
}

impl Allowlist {
    /// Parses a comma-separated list: `ollama.internal, 10.0.0.5, 192.168.10.0/24, ::1`.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut a = Allowlist::default();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if let Some((ip, len)) = item.split_once('/') {
                let ip: IpAddr = ip
                    .trim_matches(['[', ']'])
                    .parse()
                    .map_err(|_| format!("`{item}` is not an address/prefix-length network"))?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let len: u8 = len
                    .parse()
                    .ok()
                    .filter(|l| *l <= max)
                    .ok_or_else(|| format!("`{item}` has a bad prefix length"))?;
                a.nets.push((ip, len));
            } else if let Ok(ip) = item.trim_matches(['[', ']']).parse::<IpAddr>() {
                a.nets.push((ip, if ip.is_ipv4() { 32 } else { 128 }));
            } else {
                let name = normalise_name(item);
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
                {
                    return Err(format!("`{item}` is not a host name, address or network"));
                }
                a.names.push(name);
            }
        }
        Ok(a)
    }

    fn allows_name(&self, host: &str) -> bool {
        let host = normalise_name(host);
        self.names.contains(&host)
    }

    fn allows_ip(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|(n, len)| in_net(ip, *n, *len))
    }
}

fn normalise_name(s: &str) -> String {
    s.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// An IPv4-mapped IPv6 address compared as the IPv4 address, so an allowlist entry
/// `10.0.0.5` also matches `::ffff:10.0.0.5`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v) => v.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Where a URL may lead, by who set it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum Policy {
    /// Set by the operator (env/TOML, e.g. a local Ollama at 127.0.0.1): any address.
    #[default]
    Operator,
    /// Set by a tenant: public unicast addresses only, plus the operator's allowlist.
    Tenant(Arc<Allowlist>),
}

impl Policy {
    /// The policy of tenant-set URLs under the operator's allowlist.
    pub fn tenant(allow: Allowlist) -> Self {
        Policy::Tenant(Arc::new(allow))
    }

    fn allows_ip(&self, ip: IpAddr) -> bool {
        match self {
            Policy::Operator => true,
            Policy::Tenant(a) => !is_forbidden(ip) || a.allows_ip(ip),
        }
    }

    /// What can be decided without DNS: the scheme, a host, and an address written in the
    /// URL (IP literals are connected to without a lookup, so the resolver never sees them).
    pub fn check_url(&self, url: &url::Url) -> Result<(), Refused> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused("only http and https URLs are supported".into()));
        }
        let allow = match self {
            Policy::Operator => return Ok(()),
            Policy::Tenant(a) => a,
        };
        match url.host() {
            None => Err(Refused("the URL has no host".into())),
            Some(url::Host::Ipv4(v4)) => self.literal(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => self.literal(IpAddr::V6(v6)),
            Some(url::Host::Domain(d)) => {
                let name = normalise_name(d);
                if (name == "localhost" || name.ends_with(".localhost")) && !allow.allows_name(d) {
                    return Err(refused_name(d));
                }
                Ok(())
            }
        }
    }

    fn literal(&self, ip: IpAddr) -> Result<(), Refused> {
        if self.allows_ip(ip) {
            Ok(())
        } else {
            Err(Refused(format!(
                "{ip} is a private, loopback or reserved address; only the server operator can \
                 allow it (OUTBOUND_ALLOWED_PRIVATE_HOSTS)"
            )))
        }
    }

    /// The addresses of `host` this policy lets us connect to; an error when there are none.
    /// Answers that are not allowed are dropped, so only checked addresses are used.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Refused> {
        let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| Refused(format!("cannot resolve {host}: {e}")))?
            .collect();
        self.filter(host, found)
    }

    fn filter(&self, host: &str, found: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, Refused> {
        if let Policy::Tenant(a) = self
            && a.allows_name(host)
        {
            return Ok(found);
        }
        let ok: Vec<SocketAddr> = found
            .into_iter()
            .filter(|a| self.allows_ip(a.ip()))
            .collect();
        if ok.is_empty() {
            return Err(refused_name(host));
        }
        Ok(ok)
    }

    /// Parses and checks a URL now, resolving its host (blocking: for validating a setting
    /// when it is saved). A name that does not resolve at all passes: it may exist later, and
    /// every call checks again.
    pub fn check_now(&self, raw: &str) -> Result<url::Url, Refused> {
        let url =
            url::Url::parse(raw.trim()).map_err(|e| Refused(format!("not a valid URL: {e}")))?;
        self.check_url(&url)?;
        if let (Policy::Tenant(_), Some(url::Host::Domain(d))) = (self, url.host()) {
            let port = url.port_or_known_default().unwrap_or(443);
            if let Ok(found) = (d, port).to_socket_addrs() {
                let found: Vec<SocketAddr> = found.collect();
                if !found.is_empty() {
                    self.filter(d, found)?;
                }
            }
        }
        Ok(url)
    }

    /// An async client builder that enforces this policy; `follow` says whether redirects
    /// are followed (each target re-checked) or returned as they are.
    pub fn client(&self, follow: bool) -> reqwest::ClientBuilder {
        let b = reqwest::Client::builder()
            .user_agent(concat!("aigentable/", env!("CARGO_PKG_VERSION")))
            .redirect(self.redirects(follow));
        match self {
            Policy::Operator => b,
            Policy::Tenant(_) => b.dns_resolver(Guard(self.clone())).no_proxy(),
        }
    }

    /// The blocking counterpart of [`Policy::client`].
    pub fn blocking_client(&self, follow: bool) -> reqwest::blocking::ClientBuilder {
        let b = reqwest::blocking::Client::builder()
            .user_agent(concat!("aigentable/", env!("CARGO_PKG_VERSION")))
            .redirect(self.redirects(follow));
        match self {
            Policy::Operator => b,
            Policy::Tenant(_) => b.dns_resolver(Arc::new(Guard(self.clone()))).no_proxy(),
        }
    }

    fn redirects(&self, follow: bool) -> reqwest::redirect::Policy {
        if !follow {
            return reqwest::redirect::Policy::none();
        }
        let policy = self.clone();
        reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error(Refused(format!("more than {MAX_REDIRECTS} redirects")));
            }
            // A host name is checked by the resolver when the redirect is followed.
            match policy.check_url(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(e) => attempt.error(Refused(format!("a redirect was refused: {e}"))),
            }
        })
    }
}

fn refused_name(host: &str) -> Refused {
    Refused(format!(
        "{host} resolves to a private, loopback or reserved address; only the server operator \
         can allow it (OUTBOUND_ALLOWED_PRIVATE_HOSTS)"
    ))
}

/// The resolver of tenant clients: resolves, drops what the policy refuses, and hands the
/// connector exactly the checked addresses.
struct Guard(Policy);

impl reqwest::dns::Resolve for Guard {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            // Port 0: the connector puts in the URL's port.
            let addrs = policy.resolve(&host, 0).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> url::Url {
        url::Url::parse(s).expect("url")
    }

    fn tenant(list: &str) -> Policy {
        Policy::tenant(Allowlist::parse(list).expect("allowlist"))
    }

    #[test]
    fn literal_addresses_in_urls() {
        let p = tenant("");
        for u in [
            "http://127.0.0.1:8080/x",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:a9fe:a9fe]/latest/meta-data", // 169.254.169.254, mapped
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[fd00:ec2::254]/",
            "http://169.254.169.254/latest/meta-data",
            "http://2130706433/", // 127.0.0.1 written as a number
            "http://0x7f.1/",
            "http://localhost:11434/v1",
            "http://api.localhost/",
        ] {
            assert!(p.check_url(&url(u)).is_err(), "{u} must be refused");
        }
        for u in [
            "https://api.openai.com/v1",
            "http://8.8.8.8/",
            "http://[2606:4700:4700::1111]:8080/v1",
        ] {
            assert!(p.check_url(&url(u)).is_ok(), "{u} is public");
        }
        assert!(p.check_url(&url("ftp://8.8.8.8/")).is_err());
        assert!(p.check_url(&url("file:///etc/passwd")).is_err());
    }

    #[test]
    fn the_operator_is_trusted() {
        let p = Policy::Operator;
        assert!(p.check_url(&url("http://127.0.0.1:11434/v1")).is_ok());
        assert!(p.check_url(&url("http://[::1]/")).is_ok());
        assert!(p.check_url(&url("ftp://x/")).is_err(), "still http(s) only");
    }

    #[test]
    fn the_allowlist_names_hosts_addresses_and_networks() {
        let p = tenant("Ollama.Internal., 10.0.0.5, 192.168.10.0/24, ::1, localhost");
        assert!(p.check_url(&url("http://10.0.0.5/")).is_ok());
        assert!(p.check_url(&url("http://[::ffff:10.0.0.5]/")).is_ok());
        assert!(p.check_url(&url("http://10.0.0.6/")).is_err());
        assert!(p.check_url(&url("http://192.168.10.77/")).is_ok());
        assert!(p.check_url(&url("http://192.168.11.1/")).is_err());
        assert!(p.check_url(&url("http://[::1]:8080/")).is_ok());
        assert!(p.check_url(&url("http://localhost/")).is_ok());
        let private = |ip: &str| SocketAddr::new(ip.parse().expect("ip"), 80);
        // A named host may resolve to private addresses; another name may not.
        assert_eq!(
            p.filter("ollama.internal", vec![private("10.9.9.9")])
                .map(|v| v.len()),
            Ok(1)
        );
        assert!(p.filter("evil.test", vec![private("10.9.9.9")]).is_err());
        // Mixed answers: only the allowed ones are connected to.
        let got = p
            .filter("mixed.test", vec![private("127.0.0.2"), private("8.8.4.4")])
            .expect("one public answer");
        assert_eq!(got, vec![private("8.8.4.4")]);
        for bad in ["10.0.0.0/33", "not a host!", "::1/200", "1.2.3.4/x"] {
            assert!(Allowlist::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Allowlist::parse(" , ").expect("empty"),
            Allowlist::default()
        );
    }

    #[test]
    fn checking_now_resolves_names() {
        let p = tenant("");
        assert!(p.check_now("http://127.0.0.1/").is_err());
        assert!(p.check_now("not a url").is_err());
        // `localhost` is refused without a lookup; with one it would be too.
        assert!(p.check_now("http://localhost:3001/").is_err());
        assert!(Policy::Operator.check_now("http://localhost:3001/").is_ok());
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_of_private_addresses() {
        let p = tenant("");
        let e = p.resolve("localhost", 80).await.expect_err("loopback");
        assert!(e.to_string().contains("private"), "{e}");
        let p = tenant("localhost");
        assert!(
            !p.resolve("localhost", 80)
                .await
                .expect("allowed")
                .is_empty()
        );
        assert!(
            !Policy::Operator
                .resolve("localhost", 80)
                .await
                .expect("trusted")
                .is_empty()
        );
    }

    /// Through reqwest: the resolver is what the client uses, and its refusal is what the
    /// request fails with (found in the error chain); IP literals bypass it, so they are
    /// checked by `check_url` and by the redirect policy.
    #[tokio::test]
    async fn clients_connect_only_to_checked_addresses() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let app = axum::Router::new().fallback(|| async { "reached" });
            let _ = axum::serve(listener, app).await;
        });
        let named = format!("http://localhost:{port}/");
        let strict = tenant("");
        let client = strict.client(true).build().expect("client");
        let e = client
            .get(&named)
            .send()
            .await
            .expect_err("refused by the resolver");
        let r = Refused::find(&e).expect("the refusal is in the chain");
        assert!(r.to_string().contains("localhost"), "{r}");

        let allowed = tenant("localhost").client(true).build().expect("client");
        let body = allowed
            .get(&named)
            .send()
            .await
            .expect("allowed")
            .text()
            .await;
        assert_eq!(body.expect("body"), "reached");
        let op = Policy::Operator.client(false).build().expect("client");
        assert!(op.get(&named).send().await.is_ok());
    }
}
