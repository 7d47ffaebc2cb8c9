//! Business rules. Every tenant-scoped function takes the caller's [`Caller`]; reads and
//! writes go through the store with the tenant taken from it. Functions here block (store
//! commits, password hashing): the API calls them on the blocking pool.
//! Must not depend on api/ or on axum.

pub mod agents;
pub mod analytics;
pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod channels;
pub mod conversations;
pub mod documents;
pub mod inbound;
pub mod plans;
pub mod settings;
pub mod tenants;
pub mod users;
pub mod visitors;

use crate::auth::tokens::Keys;
use crate::auth::{Caller, Denied};
use crate::config::Config;
use crate::store::{self, Store};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use utoipa::ToSchema;

/// One invalid field of a request.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// The domain's errors: the caller's mistakes first, our faults last.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid input")]
    Validation(Vec<FieldError>),
    #[error("{1}")]
    Unauthorized(&'static str, String),
    #[error("{1}")]
    Forbidden(&'static str, String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{1}")]
    Conflict(&'static str, String, Option<serde_json::Value>),
    #[error("{1}")]
    Invalid(&'static str, String),
    /// The tenant's plan or subscription does not allow it (402): `plan_limit_reached`
    /// naming the limit, usage and maximum, or `subscription_inactive`.
    #[error("{1}")]
    PaymentRequired(&'static str, String, serde_json::Value),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Maps a permission check to an error, naming the resource for the not-found case.
    pub fn denied(d: Denied, what: &'static str) -> Self {
        match d {
            Denied::Forbidden => {
                Error::Forbidden("forbidden", "your role does not allow this action".into())
            }
            Denied::NotFound => Error::NotFound(what),
        }
    }
}

/// Collects field errors and turns them into one `Validation` error.
#[derive(Default)]
pub struct Checks(Vec<FieldError>);

impl Checks {
    pub fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }
    pub fn check(&mut self, ok: bool, field: &str, message: &str) {
        if !ok {
            self.fail(field, message);
        }
    }
    /// A non-empty string of at most `max` characters after trimming.
    pub fn text(&mut self, field: &str, v: &str, max: usize) {
        let t = v.trim();
        if t.is_empty() {
            self.fail(field, "must not be empty");
        } else if t.chars().count() > max {
            self.fail(field, format!("must be at most {max} characters"));
        }
    }
    pub fn email(&mut self, field: &str, v: &str) {
        use validator::ValidateEmail;
        if !v.trim().validate_email() || v.len() > 254 {
            self.fail(field, "must be a valid email address");
        }
    }
    pub fn password(&mut self, field: &str, v: &str) {
        use crate::auth::password::{MAX_LEN, MIN_LEN};
        let n = v.chars().count();
        if n < MIN_LEN {
            self.fail(field, format!("must be at least {MIN_LEN} characters"));
        } else if v.len() > MAX_LEN {
            self.fail(field, format!("must be at most {MAX_LEN} bytes"));
        }
    }
    pub fn finish(self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::Validation(self.0))
        }
    }
}

pub fn normalize_email(e: &str) -> String {
    e.trim().to_lowercase()
}

/// Lower-case, ASCII, dash-separated form of a name, for slugs.
pub fn slugify(name: &str) -> String {
    let mut out = String::new();
    for c in name.trim().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() { "tenant".into() } else { out }
}

/// Paging request, already clamped: limit 1..=200 (default 50).
#[derive(Debug, Clone, Default)]
pub struct PageReq {
    pub limit: usize,
    pub cursor: Option<String>,
}

impl PageReq {
    pub const DEFAULT: usize = 50;
    pub const MAX: usize = 200;
}

/// A page of results with the cursor for the next one.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Paged<T: ToSchema> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T: ToSchema> From<store::Page<T>> for Paged<T> {
    fn from(p: store::Page<T>) -> Self {
        Paged {
            data: p.items,
            next_cursor: p.next,
        }
    }
}

pub use crate::auth::ClientMeta;

/// A tenant's data kept outside the store (the search indexes), which deleting the tenant
/// must drop too. Implemented by knowledge/, which sits above the domain.
pub trait TenantIndexes: Send + Sync {
    fn forget_tenant(&self, tenant: &crate::types::TenantId) -> Result<(), String>;
}

/// Everything the rules need: the store, the token keys and the configuration.
pub struct Services {
    pub store: Arc<Store>,
    pub keys: Keys,
    pub sealer: crate::auth::seal::Sealer,
    pub config: Arc<Config>,
    /// Set once at startup (weak: the indexes hold the services).
    pub(crate) indexes: std::sync::OnceLock<std::sync::Weak<dyn TenantIndexes>>,
    /// Where every write publishes its event, after commit.
    pub events: crate::events::Bus,
    /// The durable queue writes enqueue follow-up work in (turns, mail); woken after commit.
    pub jobs: Arc<crate::jobs::Jobs>,
    /// The time expiry checks go by (tests move it instead of sleeping).
    pub clock: crate::types::Clock,
    /// Coalesces repeated sign-in failures into one audit entry each (bounded memory).
    pub audit_failures: audit::FailureCoalescer,
}

impl Services {
    /// Registers the indexes that [`delete_tenant`](Self::delete_tenant) must clear.
    pub fn set_tenant_indexes(&self, indexes: std::sync::Weak<dyn TenantIndexes>) {
        let _ = self.indexes.set(indexes);
    }

    /// The store's schema version when it can be read (the health check). Blocking.
    pub fn storage_check(&self) -> Option<u64> {
        self.store.schema_version().ok()
    }

    /// Directory of a tenant's files (uploads and the like).
    pub fn tenant_dir(&self, tenant: &crate::types::TenantId) -> PathBuf {
        self.config.data_dir.join("tenants").join(tenant.as_str())
    }

    pub fn public_url(&self) -> String {
        match &self.config.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!(
                "http://{}",
                self.config
                    .listen_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|_| "127.0.0.1:3001".into())
            ),
        }
    }
}

/// Marker so the caller type is visible where domain functions are used.
pub type Ctx<'a> = &'a Caller;

#[cfg(test)]
mod caller_tests;
#[cfg(test)]
mod message_order_tests;

#[cfg(test)]
mod tests {
    #[test]
    fn slugs() {
        assert_eq!(super::slugify("  Joe's Pizza & Co. "), "joe-s-pizza-co");
        assert_eq!(super::slugify("!!!"), "tenant");
    }
}
