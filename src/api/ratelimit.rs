//! Keyed rate limits (GCRA, via governor): auth routes per IP, password reset requests per
//! email, the API per user or key, uploads per tenant, web widget visitors per visitor and
//! new visitors per address. A limit of 0 per minute turns it off.
//! Failed logins are counted per (email, address) and per email ([`Failures`]), so wrong
//! passwords from one address never lock the right one out from another. Also the
//! admission gate of password hashing and the trusted reverse proxies.

use super::error::ApiError;
use crate::config::IpNet;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Limiter {
    inner: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

impl Limiter {
    pub fn per_minute(n: u32) -> Self {
        Limiter {
            inner: NonZeroU32::new(n).map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            clock: DefaultClock::default(),
        }
    }

    /// `Err(429 with Retry-After)` when `key` is over its quota.
    pub fn check(&self, key: &str) -> Result<(), ApiError> {
        let Some(l) = &self.inner else { return Ok(()) };
        l.check_key(&key.to_string()).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            ApiError::rate_limited(wait.as_secs_f64().ceil().max(1.0) as u64)
        })
    }

    /// Forgets keys whose quota has fully recovered; bounds memory.
    pub fn prune(&self) {
        if let Some(l) = &self.inner {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// Failures per key within the last minute, e.g. wrong passwords. Unlike [`Limiter`],
/// only failures count: successful attempts never use up anyone's quota. Memory: at most
/// `limit` instants per key, and new keys come only as fast as passwords can be checked
/// (the hashing gate), with [`Failures::prune`] every minute.
pub struct Failures {
    limit: usize,
    window: Duration,
    keys: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Failures {
    /// At most `limit` failures a minute per key; 0 turns it off.
    pub fn per_minute(limit: usize) -> Self {
        Failures {
            limit,
            window: Duration::from_secs(60),
            keys: Mutex::new(HashMap::new()),
        }
    }

    fn with_key<T>(&self, key: &str, f: impl FnOnce(&mut VecDeque<Instant>) -> T) -> T {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let q = keys.entry(key.to_string()).or_default();
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            q.pop_front();
        }
        let out = f(q);
        if q.is_empty() {
            keys.remove(key);
        }
        out
    }

    /// Failures of `key` in the last minute.
    pub fn count(&self, key: &str) -> usize {
        if self.limit == 0 {
            return 0;
        }
        self.with_key(key, |q| q.len())
    }

    /// `Err(429 with Retry-After)` when `key` has used up its failures.
    pub fn check(&self, key: &str) -> Result<(), ApiError> {
        if self.limit == 0 {
            return Ok(());
        }
        let window = self.window;
        self.with_key(key, |q| match q.front() {
            Some(oldest) if q.len() >= self.limit => {
                let wait = window.saturating_sub(oldest.elapsed());
                Err(ApiError::rate_limited(
                    wait.as_secs_f64().ceil().max(1.0) as u64
                ))
            }
            _ => Ok(()),
        })
    }

    /// True when `key` has used up its failures.
    pub fn exhausted(&self, key: &str) -> bool {
        self.check(key).is_err()
    }

    /// Counts one failure of `key` (only the last `limit` are kept).
    pub fn record(&self, key: &str) {
        if self.limit == 0 {
            return;
        }
        let limit = self.limit;
        self.with_key(key, |q| {
            q.push_back(Instant::now());
            while q.len() > limit {
                q.pop_front();
            }
        });
    }

    /// Forgets `key`'s failures (after a success).
    pub fn clear(&self, key: &str) {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// Forgets failures older than the window; bounds memory.
    pub fn prune(&self) {
        let now = Instant::now();
        let window = self.window;
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
    }
}

/// How many times more failures an email may collect from all addresses together than
/// from one address before addresses that already failed for it are refused too.
pub const EMAIL_FAILURE_FACTOR: usize = 10;

pub struct Limits {
    pub auth_ip: Limiter,
    /// Password reset requests per email.
    pub auth_email: Limiter,
    /// Wrong logins per (email, client address).
    pub login_pair: Failures,
    /// Wrong logins per email from every address: a much higher ceiling, and addresses
    /// without failures for the email are still let in above it.
    pub login_email: Failures,
    pub api: Limiter,
    pub upload: Limiter,
    /// Web widget requests and messages per visitor (`v:<visitorId>`), REST and socket.
    pub visitor: Limiter,
    /// New web widget visitors per client address.
    pub widget_ip: Limiter,
    /// Admission to password hashing (PASSWORD_HASH_THREADS + PASSWORD_HASH_QUEUE).
    pub hashing: crate::auth::password::Gate,
    /// Reverse proxies whose forwarding headers name the client (TRUSTED_PROXIES).
    pub trusted_proxies: Vec<IpNet>,
}

impl Limits {
    pub fn from_config(c: &crate::config::Config) -> Self {
        let per_min = c.rate_limit_auth_per_min as usize;
        Limits {
            auth_ip: Limiter::per_minute(c.rate_limit_auth_per_min),
            auth_email: Limiter::per_minute(c.rate_limit_auth_per_min),
            login_pair: Failures::per_minute(per_min),
            login_email: Failures::per_minute(per_min.saturating_mul(EMAIL_FAILURE_FACTOR)),
            api: Limiter::per_minute(c.rate_limit_api_per_min),
            upload: Limiter::per_minute(c.rate_limit_upload_per_min),
            visitor: Limiter::per_minute(c.rate_limit_visitor_per_min),
            widget_ip: Limiter::per_minute(c.rate_limit_widget_ip_per_min),
            hashing: crate::auth::password::Gate::new(
                c.password_hash_thread_count(),
                c.password_hash_queue,
            ),
            // Validated at startup.
            trusted_proxies: c.trusted_proxy_list().unwrap_or_default(),
        }
    }
    pub fn prune(&self) {
        self.auth_ip.prune();
        self.auth_email.prune();
        self.login_pair.prune();
        self.login_email.prune();
        self.api.prune();
        self.upload.prune();
        self.visitor.prune();
        self.widget_ip.prune();
    }

    /// A permit to hash a password, or 503 `server_busy` with Retry-After when the hashing
    /// pool is full.
    pub fn admit_hashing(&self) -> Result<crate::auth::password::Permit, ApiError> {
        self.hashing.admit().ok_or_else(|| {
            let mut e = ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "server_busy",
                "too many sign-ins are being checked right now; retry in a moment",
            );
            e.retry_after = Some(1);
            e
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn over_quota_answers_with_retry_after() {
        let l = super::Limiter::per_minute(2);
        assert!(l.check("a").is_ok());
        assert!(l.check("a").is_ok());
        let e = l.check("a").unwrap_err();
        assert_eq!(e.status.as_u16(), 429);
        assert!(e.retry_after.unwrap() >= 1);
        assert!(l.check("b").is_ok(), "keys are independent");
        assert!(super::Limiter::per_minute(0).check("a").is_ok());
    }

    #[test]
    fn only_failures_count_and_a_success_clears_them() {
        let f = super::Failures::per_minute(2);
        assert!(f.check("a").is_ok());
        f.record("a");
        assert_eq!(f.count("a"), 1);
        assert!(f.check("a").is_ok());
        f.record("a");
        let e = f.check("a").unwrap_err();
        assert_eq!(e.status.as_u16(), 429);
        assert!(e.retry_after.unwrap() >= 1);
        assert!(f.check("b").is_ok(), "keys are independent");
        f.clear("a");
        assert!(f.check("a").is_ok());
        let off = super::Failures::per_minute(0);
        off.record("a");
        assert!(off.check("a").is_ok());
    }
}
