//! aigentable: a self-hosted AI agent platform in one binary.
//!
//! Layers point down: `api` -> `domain` -> `store`; `auth`, `config`, `types` and `model`
//! are shared below them.

pub mod agent;
pub mod analytics;
pub mod api;
pub mod app;
pub mod auth;
pub mod backup;
pub mod channels;
pub mod cli;
pub mod config;
pub mod domain;
pub mod embed;
pub mod events;
pub mod index;
pub mod ingest;
pub mod jobs;
pub mod knowledge;
pub mod llm;
pub mod mail;
pub mod malloc;
pub mod model;
pub mod models;
pub mod net;
pub mod realtime;
pub mod store;
pub mod telemetry;
pub mod types;

#[cfg(test)]
mod test_model;

pub use app::{App, build, serve_with_listener};
