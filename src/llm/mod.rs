//! OpenAI-compatible chat client (OpenAI, Ollama, vLLM, LM Studio): plain and streamed
//! completions, tool calls, timeouts, retries with backoff, token counting.
//!
//! Depends on nothing of ours but `config::Secret`: no api/, domain/ or store/. Callers
//! (the agent loop) own prompts, persistence and what a failure means for a conversation.

mod client;
mod error;
mod sse;
mod tokens;
mod types;
mod wire;

pub use client::{ChatStream, Client, MAX_BODY, MAX_SSE_LINE, Provider};
pub use error::Error;
pub use tokens::{count_message_tokens, count_tokens, max_message_tokens};
pub use types::{
    ChatMessage, ChatRequest, ChatResponse, Role, StreamEvent, ToolCall, ToolDef, Usage,
};
