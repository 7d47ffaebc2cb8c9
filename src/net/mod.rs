//! One way out to the network: the outbound policy every HTTP call to a URL someone
//! configured goes through (model provider, embeddings, HTTP tools; later channels and model
//! downloads), and the OpenAI-compatible HTTP core the model and embeddings clients share.
//!
//! - [`addr`]: which addresses a tenant-set URL may never reach.
//! - [`policy`]: [`Policy`] (operator-set URLs are trusted, tenant-set ones are held to
//!   public addresses plus the operator's `OUTBOUND_ALLOWED_PRIVATE_HOSTS`), with DNS answers
//!   checked and pinned, redirects re-checked, proxies bypassed.
//! - [`upstream`]: retry policy, capped `Retry-After`, error-body handling, key redaction.
//!
//! Depends on nothing of ours: no api/, domain/ or store/.

pub mod addr;
pub mod policy;
pub mod upstream;

pub use addr::is_forbidden;
pub use policy::{Allowlist, Policy, Refused};
pub use upstream::RetryPolicy;
