//! Chat types in the OpenAI chat-completions wire shape: what callers build and what the
//! client returns. Serde here IS the wire format, so a message can be stored and sent as is.

use serde::{Deserialize, Deserializer, Serialize};

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// One message of a conversation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ChatMessage {
    pub role: Role,
    /// Absent for an assistant message that only calls tools.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "content_text"
    )]
    pub content: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub tool_calls: Vec<ToolCall>,
    /// For `Role::Tool`: the id of the call this message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    fn text(role: Role, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: Some(content.into()),
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::text(Role::System, content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::text(Role::User, content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::text(Role::Assistant, content)
    }
    /// The answer to tool call `id`.
    pub fn tool_result(id: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            tool_call_id: Some(id.into()),
            ..Self::text(Role::Tool, content)
        }
    }
}

/// A tool the model may call. On the wire: `{"type":"function","function":{...}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "WireToolDef", try_from = "WireToolDef")]
pub struct ToolDef {
    pub name: String,
    pub description: String,
    /// JSON schema of the arguments object.
    pub parameters: serde_json::Value,
}

/// A call the model asked for. On the wire:
/// `{"id":..,"type":"function","function":{"name":..,"arguments":"<json text>"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "WireToolCall", try_from = "WireToolCall")]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// Raw JSON text exactly as the model produced it; it may be invalid JSON, which is the
    /// tool runner's problem to report back to the model, not a protocol error.
    pub arguments: String,
}

/// A chat-completion request. Serialises to the request body minus the stream settings,
/// which the client adds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub tools: Vec<ToolDef>,
    /// `"auto"`, `"none"`, `"required"` or `{"type":"function","function":{"name":..}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<serde_json::Value>,
}

impl ChatRequest {
    pub fn new(model: impl Into<String>, messages: Vec<ChatMessage>) -> Self {
        ChatRequest {
            model: model.into(),
            messages,
            temperature: None,
            max_tokens: None,
            tools: Vec::new(),
            tool_choice: None,
        }
    }
}

/// Token counts of one completion.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default, deserialize_with = "null_as_default")]
    pub prompt_tokens: u32,
    #[serde(default, deserialize_with = "null_as_default")]
    pub completion_tokens: u32,
    /// True when the provider sent no usage and these numbers come from `count_tokens`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub estimated: bool,
}

/// A complete (non-streamed) answer.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatResponse {
    pub message: ChatMessage,
    pub finish_reason: Option<String>,
    /// As reported by the provider, or estimated (`usage.estimated`) when it sent none.
    pub usage: Usage,
    /// The model that answered, as the provider names it.
    pub model: String,
}

/// What a streamed completion yields.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    /// Text to show the user now.
    Delta(String),
    /// The last event: the whole message (all text plus complete tool calls).
    Done {
        message: ChatMessage,
        finish_reason: Option<String>,
        /// Always `Some` from this client (estimated when the provider sent none); an
        /// `Option` so that recorded events from elsewhere can say "unknown".
        usage: Option<Usage>,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Some servers send `null` where OpenAI omits a field.
pub(crate) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Message content is a string, null, or (in requests some clients build) an array of
/// `{"type":"text","text":..}` parts; parts are joined so nothing is silently dropped.
pub(crate) fn content_text<'de, D>(d: D) -> Result<Option<String>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Content {
        Text(String),
        Parts(Vec<Part>),
    }
    #[derive(Deserialize)]
    struct Part {
        #[serde(default)]
        text: Option<String>,
    }
    Ok(match Option::<Content>::deserialize(d)? {
        None => None,
        Some(Content::Text(s)) => Some(s),
        Some(Content::Parts(parts)) => Some(parts.into_iter().filter_map(|p| p.text).collect()),
    })
}

#[derive(Serialize, Deserialize)]
struct WireFunctionDef {
    name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    description: String,
    #[serde(default = "empty_object")]
    parameters: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({"type": "object", "properties": {}})
}

#[derive(Serialize, Deserialize)]
struct WireToolDef {
    #[serde(rename = "type")]
    kind: String,
    function: WireFunctionDef,
}

impl From<ToolDef> for WireToolDef {
    fn from(t: ToolDef) -> Self {
        WireToolDef {
            kind: "function".into(),
            function: WireFunctionDef {
                name: t.name,
                description: t.description,
                parameters: t.parameters,
            },
        }
    }
}

impl TryFrom<WireToolDef> for ToolDef {
    type Error = String;
    fn try_from(w: WireToolDef) -> Result<Self, String> {
        if w.kind != "function" {
            return Err(format!("unsupported tool type {:?}", w.kind));
        }
        Ok(ToolDef {
            name: w.function.name,
            description: w.function.description,
            parameters: w.function.parameters,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct WireFunctionCall {
    name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    arguments: String,
}

#[derive(Serialize, Deserialize)]
struct WireToolCall {
    #[serde(default, deserialize_with = "null_as_default")]
    id: String,
    #[serde(rename = "type", default = "function_kind")]
    kind: String,
    function: WireFunctionCall,
}

fn function_kind() -> String {
    "function".into()
}

impl From<ToolCall> for WireToolCall {
    fn from(t: ToolCall) -> Self {
        WireToolCall {
            id: t.id,
            kind: function_kind(),
            function: WireFunctionCall {
                name: t.name,
                arguments: t.arguments,
            },
        }
    }
}

impl TryFrom<WireToolCall> for ToolCall {
    type Error = String;
    fn try_from(w: WireToolCall) -> Result<Self, String> {
        if w.kind != "function" {
            return Err(format!("unsupported tool call type {:?}", w.kind));
        }
        Ok(ToolCall {
            id: w.id,
            name: w.function.name,
            arguments: w.function.arguments,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_serialise_in_openai_shape() {
        let m = ChatMessage::user("hi");
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"role": "user", "content": "hi"})
        );
        let m = ChatMessage::tool_result("call_1", "42");
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"role": "tool", "content": "42", "tool_call_id": "call_1"})
        );
        let m = ChatMessage {
            content: None,
            tool_calls: vec![ToolCall {
                id: "call_1".into(),
                name: "get_weather".into(),
                arguments: r#"{"city":"Paris"}"#.into(),
            }],
            ..ChatMessage::assistant("")
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(
            v,
            json!({"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]})
        );
        let back: ChatMessage = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn lenient_deserialisation_of_nulls_and_parts() {
        let m: ChatMessage = serde_json::from_value(json!({
            "role": "assistant", "content": null, "tool_calls": null, "refusal": null
        }))
        .unwrap();
        assert_eq!(m.content, None);
        assert!(m.tool_calls.is_empty());
        let m: ChatMessage = serde_json::from_value(json!({
            "role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
        }))
        .unwrap();
        assert_eq!(m.content.as_deref(), Some("ab"));
    }

    #[test]
    fn tools_serialise_as_functions_and_empty_fields_are_skipped() {
        let mut r = ChatRequest::new("m", vec![ChatMessage::user("x")]);
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}]})
        );
        r.tools.push(ToolDef {
            name: "search".into(),
            description: "Search docs".into(),
            parameters: json!({"type": "object"}),
        });
        r.tool_choice = Some(json!("auto"));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v["tools"],
            json!([{"type": "function", "function": {"name": "search",
                "description": "Search docs", "parameters": {"type": "object"}}}])
        );
        assert_eq!(v["tool_choice"], "auto");
        let back: ChatRequest = serde_json::from_value(v).unwrap();
        assert_eq!(back.tools, r.tools);
    }
}
