//! Response-side wire types (completion, stream chunk, error body, model list) and the
//! assembly of streamed chunks into one message. Pure functions over parsed JSON: no I/O.

use super::types::{ChatMessage, Role, ToolCall, Usage, content_text, null_as_default};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Upper bound on distinct tool calls in one streamed answer; indexes come from the
/// upstream and must not size our allocations.
const MAX_TOOL_CALLS: usize = 128;

#[derive(Deserialize)]
pub(crate) struct Completion {
    #[serde(default, deserialize_with = "null_as_default")]
    pub model: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub choices: Vec<CompletionChoice>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

#[derive(Deserialize)]
pub(crate) struct CompletionChoice {
    pub message: ResponseMessage,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// The assistant message of a completion. Role is not trusted (some servers omit it): a
/// completion is always the assistant speaking.
#[derive(Deserialize)]
pub(crate) struct ResponseMessage {
    #[serde(default, deserialize_with = "content_text")]
    pub content: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub tool_calls: Vec<ToolCall>,
}

impl ResponseMessage {
    pub fn into_message(self) -> ChatMessage {
        ChatMessage {
            role: Role::Assistant,
            content: self.content,
            tool_calls: number_missing_ids(self.tool_calls),
            tool_call_id: None,
            name: None,
        }
    }
}

/// Tool results must name the call they answer; servers that omit ids get stable ones.
fn number_missing_ids(mut calls: Vec<ToolCall>) -> Vec<ToolCall> {
    for (i, c) in calls.iter_mut().enumerate() {
        if c.id.is_empty() {
            c.id = format!("call_{i}");
        }
    }
    calls
}

/// One `chat.completion.chunk`.
#[derive(Deserialize)]
pub(crate) struct Chunk {
    #[serde(default, deserialize_with = "null_as_default")]
    pub model: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub choices: Vec<ChunkChoice>,
    #[serde(default)]
    pub usage: Option<Usage>,
    /// Some servers report a failure mid-stream as a data frame with an `error` object.
    #[serde(default)]
    pub error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
pub(crate) struct ChunkChoice {
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub delta: Option<Delta>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
pub(crate) struct Delta {
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub tool_calls: Vec<ToolCallFragment>,
}

#[derive(Deserialize)]
pub(crate) struct ToolCallFragment {
    /// OpenAI always sends it; early Ollama versions did not.
    #[serde(default)]
    pub index: Option<u32>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub function: Option<FunctionFragment>,
}

#[derive(Deserialize)]
pub(crate) struct FunctionFragment {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub arguments: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct ModelList {
    #[serde(default, deserialize_with = "null_as_default")]
    pub data: Vec<ModelEntry>,
}

#[derive(Deserialize)]
pub(crate) struct ModelEntry {
    pub id: String,
}

#[derive(Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// Builds the final message out of stream chunks.
#[derive(Default)]
pub(crate) struct Assembler {
    pub text: String,
    calls: BTreeMap<u32, PartialCall>,
    /// Index of the last call touched, for fragments without an index.
    last_index: Option<u32>,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
    pub model: String,
    /// Bytes held in text and calls, checked against the caller's cap.
    size: usize,
}

impl Assembler {
    /// Folds one chunk in; returns the text to show now (empty when none).
    pub fn push(&mut self, chunk: Chunk, max_size: usize) -> Result<String, String> {
        if !chunk.model.is_empty() && self.model.is_empty() {
            self.model = chunk.model;
        }
        if let Some(u) = chunk.usage {
            self.usage = Some(u);
        }
        let mut shown = String::new();
        // n > 1 is never requested, so only the first choice matters.
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            if let Some(r) = choice.finish_reason {
                self.finish_reason = Some(r);
            }
            let Some(delta) = choice.delta else { continue };
            if let Some(c) = delta.content.filter(|c| !c.is_empty()) {
                self.grow(c.len(), max_size)?;
                self.text.push_str(&c);
                shown.push_str(&c);
            }
            for frag in delta.tool_calls {
                self.push_fragment(frag, max_size)?;
            }
        }
        Ok(shown)
    }

    fn grow(&mut self, n: usize, max_size: usize) -> Result<(), String> {
        self.size += n;
        if self.size > max_size {
            return Err(format!("the streamed answer exceeds {max_size} bytes"));
        }
        Ok(())
    }

    fn push_fragment(&mut self, frag: ToolCallFragment, max_size: usize) -> Result<(), String> {
        let id = frag.id.filter(|s| !s.is_empty());
        let index = match (frag.index, self.last_index) {
            (Some(i), _) => i,
            // No index: a new id starts a new call, anything else continues the last one.
            (None, Some(last)) => match (&id, self.calls.get(&last)) {
                (Some(id), Some(c)) if !c.id.is_empty() && c.id != *id => last + 1,
                _ => last,
            },
            (None, None) => 0,
        };
        if !self.calls.contains_key(&index) && self.calls.len() >= MAX_TOOL_CALLS {
            return Err(format!(
                "more than {MAX_TOOL_CALLS} tool calls in one answer"
            ));
        }
        let (name, args) = match frag.function {
            Some(f) => (f.name.filter(|s| !s.is_empty()), f.arguments),
            None => (None, None),
        };
        let added = id.as_ref().map_or(0, String::len)
            + name.as_ref().map_or(0, String::len)
            + args.as_ref().map_or(0, String::len);
        self.grow(added, max_size)?;
        let call = self.calls.entry(index).or_default();
        if let Some(id) = id
            && call.id.is_empty()
        {
            call.id = id;
        }
        if let Some(name) = name {
            // The name comes whole in the first fragment; some servers repeat it later.
            if call.name.is_empty() {
                call.name = name;
            } else if call.name != name {
                call.name.push_str(&name);
            }
        }
        if let Some(a) = args {
            call.arguments.push_str(&a);
        }
        self.last_index = Some(index);
        Ok(())
    }

    pub fn into_message(self) -> ChatMessage {
        let calls = self
            .calls
            .into_values()
            .map(|c| ToolCall {
                id: c.id,
                name: c.name,
                arguments: c.arguments,
            })
            .collect();
        ChatMessage {
            role: Role::Assistant,
            content: (!self.text.is_empty()).then_some(self.text),
            tool_calls: number_missing_ids(calls),
            tool_call_id: None,
            name: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::upstream::error_message;
    use serde_json::json;

    fn chunk(v: serde_json::Value) -> Chunk {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn text_deltas_accumulate() {
        let mut a = Assembler::default();
        let c = json!({"id": "x", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]});
        assert_eq!(a.push(chunk(c), 1000).unwrap(), "");
        let c = json!({"choices": [{"index": 0, "delta": {"content": "Hel"}}]});
        assert_eq!(a.push(chunk(c), 1000).unwrap(), "Hel");
        let c =
            json!({"choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]});
        assert_eq!(a.push(chunk(c), 1000).unwrap(), "lo");
        let c = json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}});
        a.push(chunk(c), 1000).unwrap();
        assert_eq!(a.finish_reason.as_deref(), Some("stop"));
        assert_eq!(a.usage.unwrap().completion_tokens, 2);
        assert_eq!(a.model, "m");
        assert_eq!(a.into_message(), ChatMessage::assistant("Hello"));
    }

    #[test]
    fn tool_call_fragments_by_index() {
        let mut a = Assembler::default();
        for c in [
            json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": null, "tool_calls": [
                {"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"ci"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 1, "id": "call_b", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "ty\":\"Paris\"}"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
        ] {
            assert_eq!(a.push(chunk(c), 10_000).unwrap(), "");
        }
        let m = a.into_message();
        assert_eq!(m.content, None);
        assert_eq!(
            m.tool_calls,
            vec![
                ToolCall {
                    id: "call_a".into(),
                    name: "get_weather".into(),
                    arguments: r#"{"city":"Paris"}"#.into()
                },
                ToolCall {
                    id: "call_b".into(),
                    name: "lookup".into(),
                    arguments: "{}".into()
                },
            ]
        );
    }

    #[test]
    fn fragments_without_index_or_id() {
        let mut a = Assembler::default();
        for c in [
            json!({"choices": [{"delta": {"tool_calls": [{"function": {"name": "f", "arguments": "{\"a\":"}}]}}]}),
            json!({"choices": [{"delta": {"tool_calls": [{"function": {"name": "f", "arguments": "1}"}}]}}]}),
        ] {
            a.push(chunk(c), 10_000).unwrap();
        }
        let m = a.into_message();
        assert_eq!(m.tool_calls.len(), 1);
        assert_eq!(m.tool_calls[0].id, "call_0");
        assert_eq!(m.tool_calls[0].name, "f");
        assert_eq!(m.tool_calls[0].arguments, "{\"a\":1}");
    }

    #[test]
    fn huge_index_does_not_allocate_and_count_is_capped() {
        let mut a = Assembler::default();
        let c = json!({"choices": [{"delta": {"tool_calls": [{"index": 4_000_000_000u32, "id": "x", "function": {"name": "f"}}]}}]});
        a.push(chunk(c), 10_000).unwrap();
        let mut err = None;
        for i in 0..200 {
            let c = json!({"choices": [{"delta": {"tool_calls": [{"index": i, "function": {"name": "f"}}]}}]});
            if let Err(e) = a.push(chunk(c), 1_000_000) {
                err = Some(e);
                break;
            }
        }
        assert!(err.is_some());
    }

    #[test]
    fn size_cap() {
        let mut a = Assembler::default();
        let c = json!({"choices": [{"delta": {"content": "x".repeat(60)}}]});
        a.push(chunk(c), 100).unwrap();
        let c = json!({"choices": [{"delta": {"content": "x".repeat(60)}}]});
        assert!(a.push(chunk(c), 100).is_err());
    }

    #[test]
    fn error_messages_from_many_server_shapes() {
        assert_eq!(
            error_message(
                400,
                br#"{"error":{"message":"Invalid model","type":"invalid_request_error"}}"#
            ),
            "Invalid model"
        );
        assert_eq!(
            error_message(404, br#"{"error":"model 'x' not found"}"#),
            "model 'x' not found"
        );
        assert_eq!(
            error_message(400, br#"{"object":"error","message":"bad","code":400}"#),
            "bad"
        );
        assert_eq!(
            error_message(404, br#"{"detail":"Not Found"}"#),
            "Not Found"
        );
        // Bodies that are not an error document are not echoed: the status says it.
        assert_eq!(
            error_message(502, b"<html>\n  internal page\n</html>"),
            "Bad Gateway"
        );
        assert_eq!(error_message(500, b"\xff\xfe"), "Internal Server Error");
        let long = json!({"error": {"message": "x".repeat(1000)}}).to_string();
        assert_eq!(
            error_message(400, long.as_bytes()).chars().count(),
            crate::net::upstream::MAX_MESSAGE_CHARS + 1
        );
    }
}
