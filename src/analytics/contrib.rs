//! What one stored record adds to the rollups. Each function adds `sign` times the record's
//! contribution, so a write applies `contribution(new) - contribution(old)` and the rebuild
//! adds `contribution(record)` for every record: both end at the same sums.

use super::{DIM_ALL, Hist, agent_dim, channel_dim, hour_key};
use crate::model::*;
use crate::types::*;
use std::collections::{BTreeMap, HashMap};
use time::OffsetDateTime;

/// Counter and histogram names in the rollups (stable: they are stored).
pub mod names {
    pub const CONV_NEW: &str = "conv.new";
    /// By status now, in the bucket the conversation started.
    pub const CONV_NOW_OPEN: &str = "conv.now.open";
    pub const CONV_NOW_PENDING: &str = "conv.now.pending";
    pub const CONV_NOW_CLOSED: &str = "conv.now.closed";
    pub const CONV_CLOSED: &str = "conv.closed";
    pub const CONV_AI_RESOLVED: &str = "conv.aiResolved";
    pub const CONV_HANDED_OFF: &str = "conv.handedOff";
    pub const CONV_REOPENED: &str = "conv.reopened";
    pub const CSAT_COUNT: &str = "csat.count";
    pub const CSAT_SUM: &str = "csat.sum";
    pub const MSG_CUSTOMER: &str = "msg.customer";
    pub const MSG_AI: &str = "msg.ai";
    pub const MSG_HUMAN: &str = "msg.human";
    pub const MSG_SYSTEM: &str = "msg.system";
    /// Replies (AI or human) by their status now.
    pub const OUT_TOTAL: &str = "out.total";
    pub const OUT_DELIVERED: &str = "out.delivered";
    pub const OUT_READ: &str = "out.read";
    pub const OUT_FAILED: &str = "out.failed";
    /// Customer messages per local hour are derived from MSG_CUSTOMER buckets.
    pub const TURNS: &str = "turn.n";
    pub const TURN_ANSWERED: &str = "turn.answered";
    pub const TURN_FALLBACK: &str = "turn.fallback";
    pub const TURN_HANDOFF: &str = "turn.handoff";
    pub const TURN_FAILED: &str = "turn.failed";
    pub const TURN_TOOLS: &str = "turn.tools";
    pub const TOK_IN: &str = "tok.in";
    pub const TOK_OUT: &str = "tok.out";
    /// Per model: `model.turns:<model>`, `model.in:<model>`, `model.out:<model>`.
    pub const MODEL_TURNS: &str = "model.turns:";
    pub const MODEL_IN: &str = "model.in:";
    pub const MODEL_OUT: &str = "model.out:";
    pub const INBOUND_DEAD: &str = "inbound.dead";
    pub const INBOUND_ERROR: &str = "inbound.error";
    pub const H_FIRST_RESPONSE: &str = "h.firstResponse";
    pub const H_RESOLUTION: &str = "h.resolution";
    pub const H_LATENCY: &str = "h.latency";
}
use names::*;

/// Why a delivery is a dead letter when its channel was paused (not a processing error).
pub const PAUSED_REASON: &str = "the channel was paused when this arrived";

/// Sums of counters and histogram counts of one rollup key.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Acc {
    pub counts: BTreeMap<String, i64>,
    pub hists: BTreeMap<String, BTreeMap<u16, i64>>,
}

impl Acc {
    pub fn is_zero(&self) -> bool {
        self.counts.values().all(|v| *v == 0)
            && self.hists.values().all(|h| h.values().all(|v| *v == 0))
    }

    /// Adds `other` into `self`, dropping entries that reach zero.
    pub fn merge(&mut self, other: &Acc) {
        for (k, v) in &other.counts {
            add_count(&mut self.counts, k, *v);
        }
        for (k, h) in &other.hists {
            if !self.hists.contains_key(k) {
                self.hists.insert(k.clone(), BTreeMap::new());
            }
            let Some(mine) = self.hists.get_mut(k) else {
                continue;
            };
            for (i, v) in h {
                let e = mine.entry(*i).or_insert(0);
                *e += v;
                if *e == 0 {
                    mine.remove(i);
                }
            }
            if mine.is_empty() {
                self.hists.remove(k);
            }
        }
    }
}

fn add_count(m: &mut BTreeMap<String, i64>, k: &str, v: i64) {
    if v == 0 {
        return;
    }
    // Reads merge thousands of records: no key allocation when the key is there.
    match m.get_mut(k) {
        Some(e) => {
            *e += v;
            if *e == 0 {
                m.remove(k);
            }
        }
        None => {
            m.insert(k.to_string(), v);
        }
    }
}

/// Changes to apply, by (dimension, hour bucket).
#[derive(Debug, Default, Clone)]
pub struct Deltas(pub HashMap<(String, String), Acc>);

impl Deltas {
    fn acc(&mut self, dim: &str, at: OffsetDateTime) -> &mut Acc {
        self.0.entry((dim.to_string(), hour_key(at))).or_default()
    }

    /// Adds `n` to counter `name` of every dimension in `dims` at `at`.
    pub fn count(&mut self, dims: &[String], at: OffsetDateTime, name: &str, n: i64) {
        if n == 0 {
            return;
        }
        for d in dims {
            add_count(&mut self.acc(d, at).counts, name, n);
        }
    }

    /// Adds `n` samples of `value_ms` to histogram `name` (and to the exact sum `sum:<name>`,
    /// for averages).
    pub fn sample(
        &mut self,
        dims: &[String],
        at: OffsetDateTime,
        name: &str,
        value_ms: u64,
        n: i64,
    ) {
        let i = Hist::index(value_ms);
        let sum = format!("sum:{name}");
        for d in dims {
            let acc = self.acc(d, at);
            add_count(&mut acc.counts, &sum, n * value_ms as i64);
            let h = acc.hists.entry(name.to_string()).or_default();
            let e = h.entry(i).or_insert(0);
            *e += n;
            if *e == 0 {
                h.remove(&i);
            }
        }
    }

    /// The keys with something to change.
    pub fn nonzero(self) -> impl Iterator<Item = ((String, String), Acc)> {
        self.0.into_iter().filter(|(_, a)| !a.is_zero())
    }
}

/// Every dimension a record of this agent and channel counts in.
pub fn dims(agent: Option<&AgentId>, channel: Option<&ChannelId>) -> Vec<String> {
    let mut d = vec![DIM_ALL.to_string()];
    if let Some(a) = agent {
        d.push(agent_dim(a));
    }
    if let Some(c) = channel {
        d.push(channel_dim(c));
    }
    d
}

fn ms_between(a: OffsetDateTime, b: OffsetDateTime) -> u64 {
    (b - a).whole_milliseconds().max(0) as u64
}

/// A conversation's figures: started, status now, closed (AI-resolved or not), handed off,
/// reopened, first response and resolution time, rating.
pub fn conversation(d: &mut Deltas, s: &ConversationStats, sign: i64) {
    let dims = dims(Some(&s.agent_id), s.channel_id.as_ref());
    d.count(&dims, s.created_at, CONV_NEW, sign);
    let now = match s.status {
        ConversationStatus::Open => CONV_NOW_OPEN,
        ConversationStatus::PendingHuman => CONV_NOW_PENDING,
        ConversationStatus::Closed => CONV_NOW_CLOSED,
    };
    d.count(&dims, s.created_at, now, sign);
    d.count(&dims, s.created_at, CONV_REOPENED, sign * s.reopens as i64);
    if s.status == ConversationStatus::Closed
        && let Some(closed) = s.closed_at
    {
        d.count(&dims, closed, CONV_CLOSED, sign);
        if s.handed_off_at.is_none() {
            d.count(&dims, closed, CONV_AI_RESOLVED, sign);
        }
        d.sample(
            &dims,
            closed,
            H_RESOLUTION,
            ms_between(s.created_at, closed),
            sign,
        );
    }
    if let Some(h) = s.handed_off_at {
        d.count(&dims, h, CONV_HANDED_OFF, sign);
    }
    if let (Some(asked), Some(answered)) = (s.first_customer_at, s.first_response_at) {
        d.sample(
            &dims,
            answered,
            H_FIRST_RESPONSE,
            ms_between(asked, answered),
            sign,
        );
    }
    if let (Some(score), Some(at)) = (s.rating, s.rated_at) {
        d.count(&dims, at, CSAT_COUNT, sign);
        d.count(&dims, at, CSAT_SUM, sign * score as i64);
    }
}

/// A message's figures: by role, and for replies their delivery status now.
pub fn message(d: &mut Deltas, dims: &[String], m: &Message, sign: i64) {
    let role = match m.role {
        MessageRole::Customer => MSG_CUSTOMER,
        MessageRole::Ai => MSG_AI,
        MessageRole::Human => MSG_HUMAN,
        MessageRole::System => MSG_SYSTEM,
    };
    d.count(dims, m.created_at, role, sign);
    if matches!(m.role, MessageRole::Ai | MessageRole::Human) {
        d.count(dims, m.created_at, OUT_TOTAL, sign);
        match m.status {
            MessageStatus::Delivered => d.count(dims, m.created_at, OUT_DELIVERED, sign),
            MessageStatus::Read => {
                d.count(dims, m.created_at, OUT_DELIVERED, sign);
                d.count(dims, m.created_at, OUT_READ, sign);
            }
            MessageStatus::Failed => d.count(dims, m.created_at, OUT_FAILED, sign),
            MessageStatus::Pending | MessageStatus::Sent => {}
        }
    }
}

/// The numbers of one turn as its analytics event stores them.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TurnData {
    pub outcome: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub latency_ms: u64,
    pub upstream_ms: u64,
    pub model: Option<String>,
    pub tool_calls: u64,
    pub channel_id: Option<ChannelId>,
}

/// A turn's figures (from its `turn` analytics event): outcome, tokens per model, latency,
/// tool calls. Other event kinds add nothing.
pub fn turn(d: &mut Deltas, ev: &AnalyticsEvent, sign: i64) {
    if ev.kind != "turn" {
        return;
    }
    let Ok(t) = serde_json::from_value::<TurnData>(ev.data.clone()) else {
        return;
    };
    let dims = dims(ev.agent_id.as_ref(), t.channel_id.as_ref());
    let at = ev.created_at;
    d.count(&dims, at, TURNS, sign);
    let outcome = match t.outcome.as_str() {
        "fallback" => TURN_FALLBACK,
        "handoff" => TURN_HANDOFF,
        "failed" => TURN_FAILED,
        _ => TURN_ANSWERED,
    };
    d.count(&dims, at, outcome, sign);
    d.count(&dims, at, TURN_TOOLS, sign * t.tool_calls as i64);
    d.count(&dims, at, TOK_IN, sign * t.prompt_tokens as i64);
    d.count(&dims, at, TOK_OUT, sign * t.completion_tokens as i64);
    let model = t.model.as_deref().unwrap_or("unknown");
    d.count(&dims, at, &format!("{MODEL_TURNS}{model}"), sign);
    d.count(
        &dims,
        at,
        &format!("{MODEL_IN}{model}"),
        sign * t.prompt_tokens as i64,
    );
    d.count(
        &dims,
        at,
        &format!("{MODEL_OUT}{model}"),
        sign * t.completion_tokens as i64,
    );
    if t.outcome != "failed" {
        d.sample(&dims, at, H_LATENCY, t.latency_ms, sign);
    }
}

/// A webhook delivery's figures: dead letters, and those from a processing error.
pub fn inbound(d: &mut Deltas, ev: &InboundEvent, sign: i64) {
    if ev.status != InboundStatus::DeadLetter {
        return;
    }
    let dims = dims(None, Some(&ev.channel_id));
    d.count(&dims, ev.received_at, INBOUND_DEAD, sign);
    if ev.error.as_deref() != Some(PAUSED_REASON) {
        d.count(&dims, ev.received_at, INBOUND_ERROR, sign);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> ConversationStats {
        let t0 = time::macros::datetime!(2026-03-02 09:00 UTC);
        ConversationStats {
            tenant_id: TenantId::new(),
            conversation_id: ConversationId::new(),
            agent_id: AgentId::new(),
            channel_id: None,
            status: ConversationStatus::Open,
            created_at: t0,
            closed_at: None,
            first_customer_at: Some(t0),
            first_response_at: Some(t0 + time::Duration::seconds(3)),
            handed_off_at: None,
            reopens: 0,
            rating: None,
            rated_at: None,
        }
    }

    #[test]
    fn a_change_applies_new_minus_old() {
        let old = stats();
        let mut new = old.clone();
        new.status = ConversationStatus::Closed;
        new.closed_at = Some(old.created_at + time::Duration::hours(2));
        let mut d = Deltas::default();
        conversation(&mut d, &new, 1);
        conversation(&mut d, &old, -1);
        let changed: HashMap<_, _> = d.nonzero().collect();
        let start = &changed[&("all".to_string(), "2026030209".to_string())];
        assert_eq!(start.counts.get(CONV_NOW_OPEN), Some(&-1));
        assert_eq!(start.counts.get(CONV_NOW_CLOSED), Some(&1));
        assert_eq!(
            start.counts.get(CONV_NEW),
            None,
            "unchanged figures cancel out"
        );
        let close = &changed[&("all".to_string(), "2026030211".to_string())];
        assert_eq!(close.counts.get(CONV_AI_RESOLVED), Some(&1));
        assert_eq!(close.hists[H_RESOLUTION].values().sum::<i64>(), 1);
    }
}
