//! Integration tests: one binary, the real router on 127.0.0.1:0 with a temp data dir.

mod common;

mod api_keys;
mod auth;
mod errors;
mod smoke;
mod system;
mod tenants;
