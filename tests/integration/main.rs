//! Integration tests: one binary, the real router on 127.0.0.1:0 with a temp data dir.

mod common;

mod agents;
mod api_keys;
mod auth;
mod conversations;
mod errors;
mod smoke;
mod system;
mod tenants;
