//! Keyed rate limits (GCRA, via governor): auth routes per IP and per email, the API per
//! user or key, uploads per tenant. A limit of 0 per minute turns it off.

use super::error::ApiError;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;

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

pub struct Limits {
    pub auth_ip: Limiter,
    pub auth_email: Limiter,
    pub api: Limiter,
    pub upload: Limiter,
}

impl Limits {
    pub fn from_config(c: &crate::config::Config) -> Self {
        Limits {
            auth_ip: Limiter::per_minute(c.rate_limit_auth_per_min),
            auth_email: Limiter::per_minute(c.rate_limit_auth_per_min),
            api: Limiter::per_minute(c.rate_limit_api_per_min),
            upload: Limiter::per_minute(c.rate_limit_upload_per_min),
        }
    }
    pub fn prune(&self) {
        self.auth_ip.prune();
        self.auth_email.prune();
        self.api.prune();
        self.upload.prune();
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
}
