//! Token counting for context budgets and for usage estimates when a provider reports none.
//!
//! OpenAI models get their own encoding (o200k_base for the gpt-4o/4.1/5 and o-series,
//! cl100k_base for gpt-4/3.5); every other model (Llama, Qwen, Mistral behind Ollama/vLLM)
//! is counted with cl100k_base, which is close enough for budgeting. Each encoding is
//! loaded once on first use (tiktoken-rs keeps them in process-wide lazy statics); the first
//! call therefore takes a moment, so count large texts off the async workers.

use super::types::ChatMessage;
use tiktoken_rs::CoreBPE;
use tiktoken_rs::tokenizer::{Tokenizer, get_tokenizer};

/// Framing tokens per message and for priming the reply, as in OpenAI's cookbook for
/// current chat models.
const TOKENS_PER_MESSAGE: usize = 3;
const TOKENS_PER_NAME: usize = 1;
const REPLY_PRIMING: usize = 3;

fn bpe_for(model: &str) -> &'static CoreBPE {
    // "openai/gpt-4o" (routers) and "ft:gpt-4o:org" (fine-tunes) name the base model last
    // or first; get_tokenizer handles "ft:", the router prefix is stripped here.
    let base = model.rsplit('/').next().unwrap_or(model);
    match get_tokenizer(base) {
        Some(Tokenizer::O200kBase | Tokenizer::O200kHarmony) => tiktoken_rs::o200k_base_singleton(),
        _ => tiktoken_rs::cl100k_base_singleton(),
    }
}

/// Tokens in `text` for `model`. Special-token markers in the text count as plain text,
/// which is how the provider treats user content.
pub fn count_tokens(model: &str, text: &str) -> usize {
    if text.is_empty() {
        return 0;
    }
    bpe_for(model).encode_ordinary(text).len()
}

/// Tokens a chat request's messages take, including per-message framing, tool calls and
/// the priming of the reply (OpenAI cookbook method; exact for OpenAI models, an estimate
/// elsewhere).
pub fn count_message_tokens(model: &str, msgs: &[ChatMessage]) -> usize {
    let bpe = bpe_for(model);
    message_tokens_with(msgs, |s| {
        if s.is_empty() {
            0
        } else {
            bpe.encode_ordinary(s).len()
        }
    })
}

/// An upper bound of [`count_message_tokens`] for any model, without encoding: a BPE token
/// covers at least one byte, so a text has at most as many tokens as bytes. When the bound
/// already fits a budget, the exact count (a few ms for a full prompt) is not needed.
pub fn max_message_tokens(msgs: &[ChatMessage]) -> usize {
    message_tokens_with(msgs, str::len)
}

fn message_tokens_with(msgs: &[ChatMessage], count: impl Fn(&str) -> usize) -> usize {
    let mut total = REPLY_PRIMING;
    for m in msgs {
        total += TOKENS_PER_MESSAGE;
        total += 1; // the role
        total += m.content.as_deref().map_or(0, &count);
        if let Some(name) = &m.name {
            total += TOKENS_PER_NAME + count(name);
        }
        if let Some(id) = &m.tool_call_id {
            total += count(id);
        }
        for c in &m.tool_calls {
            // One token of overhead per call, then its visible parts.
            total += 1 + count(&c.id) + count(&c.name) + count(&c.arguments);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::ToolCall;

    #[test]
    fn the_byte_bound_is_never_below_the_count() {
        let msgs = vec![
            ChatMessage::system("You are helpful. Sources: [1] ..."),
            ChatMessage::user("¿Dónde está la tienda? 東京 🙂 tiktoken is great!"),
            ChatMessage::assistant("a"),
        ];
        for model in ["gpt-4o", "gpt-4", "llama3.1:8b"] {
            assert!(max_message_tokens(&msgs) >= count_message_tokens(model, &msgs));
        }
    }

    #[test]
    fn known_counts() {
        // Reference values from OpenAI's tokenizer for both encodings.
        assert_eq!(count_tokens("gpt-4", "hello world"), 2);
        assert_eq!(count_tokens("gpt-4o", "hello world"), 2);
        assert_eq!(count_tokens("llama3.1:8b", ""), 0);
        assert_eq!(count_tokens("gpt-3.5-turbo", "tiktoken is great!"), 6);
    }

    #[test]
    fn encodings_are_chosen_by_model() {
        assert!(std::ptr::eq(
            bpe_for("gpt-4o-mini"),
            tiktoken_rs::o200k_base_singleton()
        ));
        assert!(std::ptr::eq(
            bpe_for("openai/gpt-4.1"),
            tiktoken_rs::o200k_base_singleton()
        ));
        assert!(std::ptr::eq(
            bpe_for("gpt-4-turbo"),
            tiktoken_rs::cl100k_base_singleton()
        ));
        assert!(std::ptr::eq(
            bpe_for("qwen2.5:7b"),
            tiktoken_rs::cl100k_base_singleton()
        ));
    }

    #[test]
    fn special_tokens_count_as_text() {
        assert!(count_tokens("gpt-4", "<|endoftext|>") > 1);
    }

    #[test]
    fn message_counts_include_overhead_and_grow_with_content() {
        let msgs = vec![
            ChatMessage::system("You are helpful."),
            ChatMessage::user("Hi"),
        ];
        let n = count_message_tokens("gpt-4", &msgs);
        let text_only = count_tokens("gpt-4", "You are helpful.") + count_tokens("gpt-4", "Hi");
        assert_eq!(n, text_only + 2 * (TOKENS_PER_MESSAGE + 1) + REPLY_PRIMING);
        let mut more = msgs.clone();
        more.push(ChatMessage {
            content: None,
            tool_calls: vec![ToolCall {
                id: "call_1".into(),
                name: "search".into(),
                arguments: r#"{"q":"opening hours"}"#.into(),
            }],
            ..ChatMessage::assistant("")
        });
        assert!(count_message_tokens("gpt-4", &more) > n + 5);
        assert_eq!(count_message_tokens("gpt-4", &[]), REPLY_PRIMING);
    }
}
