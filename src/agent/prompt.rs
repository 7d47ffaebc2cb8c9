//! Prompt assembly: system prompt, numbered sources, history within the token budget, and
//! citations read back from the answer.

use crate::llm::{ChatMessage, count_message_tokens, count_tokens, max_message_tokens};
use crate::model::{Agent, Citation};
use crate::types::{ChunkId, DocumentId};

/// A retrieved chunk offered to the model as a numbered source.
#[derive(Clone, Debug)]
pub struct Source {
    pub chunk_id: ChunkId,
    pub document_id: DocumentId,
    pub document_name: String,
    pub text: String,
    pub page: Option<u32>,
    pub headings: Vec<String>,
    pub score: f32,
}

/// Tokens kept free besides the answer: message framing, tool definitions' slack.
const SAFETY_TOKENS: usize = 256;

pub fn source_block(sources: &[Source], first_number: usize) -> String {
    let mut out = String::new();
    for (i, s) in sources.iter().enumerate() {
        out.push_str(&format!("[{}] {}", first_number + i, s.document_name));
        if let Some(p) = s.page {
            out.push_str(&format!(", page {p}"));
        }
        if !s.headings.is_empty() {
            out.push_str(&format!(" ({})", s.headings.join(" > ")));
        }
        out.push('\n');
        out.push_str(s.text.trim());
        out.push_str("\n\n");
    }
    out
}

/// The system message: the agent's own prompt, language, sources and the citation and
/// fallback rules.
pub fn system_message(
    agent: &Agent,
    sources: &[Source],
    uses_knowledge: bool,
    can_handoff: bool,
) -> String {
    let mut s = agent.system_prompt.trim().to_string();
    if let Some(l) = agent.language.as_deref().filter(|l| !l.trim().is_empty()) {
        s.push_str(&format!("\n\nAlways answer in this language: {l}."));
    }
    let fallback = agent
        .fallback_message
        .as_deref()
        .filter(|f| !f.trim().is_empty())
        .unwrap_or(crate::domain::agents::DEFAULT_FALLBACK);
    if !sources.is_empty() {
        s.push_str(&format!(
            "\n\nAnswer from the numbered sources below. Cite every source you use with its number in square brackets, like [1]. If the sources do not contain the answer, reply exactly: {fallback}\n\nSources:\n\n{}",
            source_block(sources, 1)
        ));
    } else if uses_knowledge {
        s.push_str(&format!(
            "\n\nNo source in the knowledge base matched the customer's message. Do not answer questions of fact from your own knowledge: if the customer asks for information, reply exactly: {fallback}\nYou may greet, thank, or ask a clarifying question{}.",
            if can_handoff { ", or hand the conversation to a person with the handoff_to_human tool" } else { "" }
        ));
    }
    s
}

/// Builds the message list: system, as much recent history as fits, the new message.
/// Returns the messages and how many history messages were dropped.
pub fn assemble(
    model: &str,
    system: String,
    history: &[ChatMessage],
    user: &str,
    context_window: usize,
    max_answer_tokens: usize,
    tools_tokens: usize,
) -> (Vec<ChatMessage>, usize) {
    let sys = ChatMessage::system(system);
    let new = ChatMessage::user(user);
    let reserved = tools_tokens + max_answer_tokens + SAFETY_TOKENS;
    // The usual case, a short conversation in a large window, needs no exact counting.
    let bound = max_message_tokens(std::slice::from_ref(&sys))
        + max_message_tokens(history)
        + max_message_tokens(std::slice::from_ref(&new));
    if bound + reserved <= context_window {
        let mut out = Vec::with_capacity(history.len() + 2);
        out.push(sys);
        out.extend_from_slice(history);
        out.push(new);
        return (out, 0);
    }
    let fixed = count_message_tokens(model, &[sys.clone(), new.clone()]) + reserved;
    let mut budget = context_window.saturating_sub(fixed);
    // Newest first: keep turns while they fit; the oldest go first.
    let mut kept = Vec::new();
    for m in history.iter().rev() {
        let t = count_message_tokens(model, std::slice::from_ref(m));
        if t > budget {
            break;
        }
        budget -= t;
        kept.push(m.clone());
    }
    let dropped = history.len() - kept.len();
    kept.reverse();
    let mut out = Vec::with_capacity(kept.len() + 2);
    out.push(sys);
    out.extend(kept);
    out.push(new);
    (out, dropped)
}

/// Drops the lowest-ranked sources until the system prompt leaves room for the answer and
/// a little history.
pub fn fit_sources(
    model: &str,
    sources: &mut Vec<Source>,
    context_window: usize,
    max_answer: usize,
) {
    let cap = context_window.saturating_sub(max_answer + SAFETY_TOKENS) * 3 / 4;
    // Bytes bound tokens from above: when they fit, the exact count is not needed.
    if sources.iter().map(|s| s.text.len() + 16).sum::<usize>() <= cap {
        return;
    }
    let mut total: usize = 0;
    let counts: Vec<usize> = sources
        .iter()
        .map(|s| count_tokens(model, &s.text) + 16)
        .inspect(|n| total += n)
        .collect();
    while total > cap
        && let Some(n) = counts.get(sources.len().wrapping_sub(1))
    {
        total -= n;
        sources.pop();
    }
}

/// Tokens a next request with `messages` leaves for more input, keeping room for the
/// answer and the tool definitions.
pub fn room_left(
    model: &str,
    messages: &[ChatMessage],
    tools_tokens: usize,
    context_window: usize,
    max_answer: usize,
) -> usize {
    context_window.saturating_sub(
        count_message_tokens(model, messages) + tools_tokens + max_answer + SAFETY_TOKENS,
    )
}

/// Marks a tool result that was cut to fit the context window.
pub const TRUNCATED: &str = "\n[truncated: the rest does not fit in the model's context window]";

/// A tool result of at most `room` tokens: a long HTTP response or many sources must not
/// push the next request past the context window (the provider would refuse it).
pub fn fit_tool_result(model: &str, text: String, room: usize) -> String {
    let mut n = count_tokens(model, &text);
    if n <= room {
        return text;
    }
    let target = room.saturating_sub(count_tokens(model, TRUNCATED));
    if target < 16 {
        return "error: the tool's result does not fit in the model's context window".into();
    }
    let chars: Vec<char> = text.chars().collect();
    let mut keep = chars.len();
    // Shrink in proportion with a margin; converges in a few rounds.
    while n > target && keep > 0 {
        keep = (keep * target / n.max(1)) * 9 / 10;
        n = count_tokens(model, &chars[..keep].iter().collect::<String>());
    }
    let mut out: String = chars[..keep].iter().collect();
    out.push_str(TRUNCATED);
    out
}

/// `[n]` markers in the answer (also `[1, 2]` and `[1][3]`), first appearance order, mapped
/// to citations. Numbers outside the sources are ignored.
pub fn citations(answer: &str, sources: &[Source]) -> Vec<Citation> {
    let mut seen = Vec::new();
    let b = answer.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'[' {
            let mut j = i + 1;
            let mut nums = Vec::new();
            let mut cur = String::new();
            while j < b.len() && j - i < 40 {
                let c = b[j] as char;
                if c.is_ascii_digit() {
                    cur.push(c);
                } else if c == ',' || c == ' ' {
                    if !cur.is_empty() {
                        nums.push(std::mem::take(&mut cur));
                    }
                } else if c == ']' {
                    if !cur.is_empty() {
                        nums.push(std::mem::take(&mut cur));
                    }
                    for n in nums.drain(..) {
                        if let Ok(n) = n.parse::<usize>()
                            && (1..=sources.len()).contains(&n)
                            && !seen.contains(&n)
                        {
                            seen.push(n);
                        }
                    }
                    break;
                } else {
                    break;
                }
                j += 1;
            }
        }
        i += 1;
    }
    seen.into_iter()
        .map(|n| {
            let s = &sources[n - 1];
            Citation {
                document_id: s.document_id.clone(),
                document_name: s.document_name.clone(),
                chunk_id: s.chunk_id.clone(),
                page: s.page,
                headings: s.headings.clone(),
                snippet: s.text.chars().take(240).collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(n: u32) -> Source {
        Source {
            chunk_id: ChunkId::new(),
            document_id: DocumentId::new(),
            document_name: format!("doc{n}.pdf"),
            text: format!("text {n}"),
            page: Some(n),
            headings: vec![format!("Guide {n}"), "Setup".into()],
            score: 1.0,
        }
    }

    #[test]
    fn citation_markers_map_to_sources() {
        let s = vec![src(1), src(2), src(3)];
        let c = citations("Yes [2]. Also [1, 3] and [2][9] and [x].", &s);
        let pages: Vec<_> = c.iter().map(|c| c.page).collect();
        assert_eq!(pages, [Some(2), Some(1), Some(3)]);
        assert_eq!(c[0].headings, ["Guide 2", "Setup"]);
        let json = serde_json::to_value(&c[0]).unwrap();
        assert_eq!(json["headings"], serde_json::json!(["Guide 2", "Setup"]));
        // Citations stored before `headings` existed still read back.
        let mut old = json;
        old.as_object_mut().unwrap().remove("headings");
        let back: Citation = serde_json::from_value(old).unwrap();
        assert!(back.headings.is_empty());
        assert!(citations("no markers", &s).is_empty());
    }

    #[test]
    fn tool_results_are_cut_to_the_room_left() {
        let long = "the quick brown fox jumps over the lazy dog ".repeat(500);
        let cut = fit_tool_result("gpt-4o-mini", long.clone(), 300);
        assert!(cut.ends_with(TRUNCATED));
        assert!(count_tokens("gpt-4o-mini", &cut) <= 300);
        assert!(
            count_tokens("gpt-4o-mini", &cut) > 200,
            "not cut more than needed"
        );
        assert!(long.starts_with(cut.trim_end_matches(TRUNCATED)));
        assert_eq!(fit_tool_result("gpt-4o-mini", "short".into(), 300), "short");
        assert!(fit_tool_result("gpt-4o-mini", long, 5).starts_with("error:"));
    }

    #[test]
    fn history_is_trimmed_oldest_first() {
        let history: Vec<ChatMessage> = (0..50)
            .map(|i| ChatMessage::user(format!("message number {i} {}", "word ".repeat(50))))
            .collect();
        let (msgs, dropped) = assemble("gpt-4o-mini", "sys".into(), &history, "new", 2000, 500, 0);
        assert!(dropped > 0 && dropped < 50, "{dropped}");
        assert_eq!(msgs.first().and_then(|m| m.content.as_deref()), Some("sys"));
        assert_eq!(msgs.last().and_then(|m| m.content.as_deref()), Some("new"));
        // The newest history message is kept, the oldest is not.
        assert!(
            msgs[msgs.len() - 2]
                .content
                .as_deref()
                .is_some_and(|c| c.contains("number 49"))
        );
        assert!(!msgs.iter().any(|m| {
            m.content
                .as_deref()
                .is_some_and(|c| c.contains("number 0 "))
        }));
        assert!(count_message_tokens("gpt-4o-mini", &msgs) <= 2000 - 500);
        // A window that holds everything keeps everything (without counting).
        let (msgs, dropped) = assemble(
            "gpt-4o-mini",
            "sys".into(),
            &history,
            "new",
            128_000,
            500,
            0,
        );
        assert_eq!((msgs.len(), dropped), (52, 0));
    }

    #[test]
    fn sources_are_dropped_lowest_ranked_first_until_they_fit() {
        let mut s: Vec<Source> = (1..=8).map(src).collect();
        for x in &mut s {
            x.text = "word ".repeat(200);
        }
        fit_sources("gpt-4o-mini", &mut s, 128_000, 500);
        assert_eq!(s.len(), 8);
        // 200 tokens + 16 each; cap = (2000 - 500 - safety) * 3/4.
        fit_sources("gpt-4o-mini", &mut s, 2000, 500);
        let cap = (2000 - 500 - SAFETY_TOKENS) * 3 / 4;
        assert!(!s.is_empty() && s.len() < 8, "{}", s.len());
        assert!(
            s.len() * 216 <= cap && (s.len() + 1) * 216 > cap,
            "{}",
            s.len()
        );
        assert_eq!(s[0].page, Some(1));
    }
}
