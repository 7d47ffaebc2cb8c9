//! Integration tests: one binary, the real router on 127.0.0.1:0 with a temp data dir.

mod common;
mod fake_openai;
mod js;
#[path = "../../src/test_model.rs"]
mod test_model;

mod agents;
mod analytics;
mod api_fuzz_findings;
mod api_keys;
mod audit;
mod auth;
mod backup;
mod bundle;
mod channels_telegram;
mod containment;
mod contract;
mod conversations;
mod crash;
mod disk;
mod durable;
mod engine;
mod errors;
mod events;
mod extractive;
mod hardening;
mod knowledge;
mod llm_client;
mod mail;
mod models_cli;
mod openai_api;
mod outbound;
mod plans;
mod provider_test;
mod realtime;
mod realtime_python;
mod smoke;
mod system;
mod tenancy;
mod tenants;
mod turns;
mod ui_browser;
mod widget_api;
mod widget_browser;
// Kept apart from the sorted list above so parallel branches adding modules merge cleanly.
mod channels_meta;
