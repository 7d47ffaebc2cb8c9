//! Analytics: the hourly rollups kept in the commit of every write they count, the
//! per-conversation analytics record, turn events and knowledge gaps, the reports read
//! from them, and the rebuild. The arithmetic is in `crate::analytics` (pure); this module
//! reads and writes it through the store. Also the legacy daily rollup per agent
//! (AgentAnalytics), still written by turns.

use super::{Error, Result, Services};
use crate::analytics::contrib::{self, Deltas, TurnData, dims};
use crate::analytics::figures::{Figures, Flat, object};
use crate::analytics::tz::{Bucket, Granularity, Zone, bucket_of, buckets};
use crate::analytics::{DIM_ALL, agent_dim, channel_dim, hour_key, hour_start};
use crate::auth::{Action, Caller};
use crate::model::*;
use crate::store::WriteTx;
use crate::types::*;
use serde_json::{Value, json};
use std::collections::HashMap;

/// How a turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Answered,
    Fallback,
    Handoff,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::Fallback => "fallback",
            Outcome::Handoff => "handoff",
            Outcome::Failed => "failed",
        }
    }
}

/// One turn's numbers.
#[derive(Debug, Clone)]
pub struct TurnStats {
    pub agent_id: AgentId,
    pub conversation_id: Option<ConversationId>,
    pub outcome: Outcome,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub latency_ms: u64,
    pub upstream_ms: u64,
    /// The agent's first turn in this conversation: the conversation counts towards the
    /// day's `conversations` (once, so rollups of several days add up).
    pub new_conversation: bool,
    /// Tool calls the model made in the turn.
    pub tool_calls: u32,
    /// The customer's question, kept as a knowledge gap when the turn ended in the
    /// fallback or a handoff.
    pub question: Option<String>,
}

/// Longest question text kept in a knowledge gap.
const GAP_QUESTION_CHARS: usize = 500;

/// Most series buckets a report has (e.g. hours over 83 days).
pub const MAX_BUCKETS: usize = 2_000;

/// Longest report range in days.
pub const MAX_RANGE_DAYS: i64 = 3_660;

/// Which report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    Dashboard,
    Agents,
    Conversations,
    Channels,
}

/// A report request, checked by the API.
#[derive(Debug, Clone)]
pub struct ReportQuery {
    pub from: Option<time::Date>,
    pub to: Option<time::Date>,
    pub granularity: Granularity,
    pub agent_id: Option<AgentId>,
    pub channel_id: Option<ChannelId>,
}

/// A report: its JSON body and the same figures as a table (for CSV).
#[derive(Debug, Clone)]
pub struct Report {
    pub json: Value,
    pub header: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

/// Whose figures: one tenant, or (platform admins) every tenant added up.
enum Scope {
    Tenant(TenantId),
    Platform,
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}

/// Adds stored rollups into deltas-shaped accumulators (used by reads).
fn acc_of(r: AnalyticsRollup) -> contrib::Acc {
    contrib::Acc {
        counts: r.counts,
        hists: r.hists,
    }
}

impl Services {
    // ---- writes: called inside the transaction of the write they count ----

    /// Adds `d` to the stored rollups of `tenant`: one read and one write per key. A commit
    /// that counts several writes (a turn: its event, the reply, a handoff note, the
    /// conversation) gathers their deltas with the `*_into` functions and applies them once,
    /// instead of rewriting the same hour keys once per write.
    pub(super) fn apply_deltas(tx: &WriteTx, tenant: &TenantId, d: Deltas) -> Result<()> {
        for ((dim, bucket), acc) in d.nonzero() {
            let key = format!("{dim}/{bucket}");
            let mut r =
                tx.get::<AnalyticsRollup>(tenant, &key)?
                    .unwrap_or_else(|| AnalyticsRollup {
                        tenant_id: tenant.clone(),
                        dim: dim.clone(),
                        bucket: bucket.clone(),
                        ..Default::default()
                    });
            let mut a = acc_of(std::mem::take(&mut r));
            a.merge(&acc);
            if a.is_zero() {
                tx.delete::<AnalyticsRollup>(tenant, &key)?;
            } else {
                tx.put(&AnalyticsRollup {
                    tenant_id: tenant.clone(),
                    dim,
                    bucket,
                    counts: a.counts,
                    hists: a.hists,
                })?;
            }
        }
        Ok(())
    }

    /// Brings the conversation's analytics record up to `conv` (and `new_msg`, a message
    /// being added to it) and applies the difference to the rollups. When the conversation
    /// moved to another agent, its messages' figures move with it.
    fn update_stats(
        tx: &WriteTx,
        conv: &Conversation,
        new_msg: Option<&Message>,
        d: &mut Deltas,
    ) -> Result<ConversationStats> {
        let t = &conv.tenant_id;
        let old = tx.get::<ConversationStats>(t, conv.id.as_str())?;
        let mut s = old.clone().unwrap_or_else(|| ConversationStats {
            tenant_id: t.clone(),
            conversation_id: conv.id.clone(),
            agent_id: conv.agent_id.clone(),
            channel_id: conv.channel_id.clone(),
            status: conv.status,
            created_at: conv.created_at,
            closed_at: None,
            first_customer_at: None,
            first_response_at: None,
            handed_off_at: None,
            reopens: 0,
            rating: None,
            rated_at: None,
        });
        if s.status == ConversationStatus::Closed && conv.status != ConversationStatus::Closed {
            s.reopens += 1;
        }
        follow(&mut s, conv);
        if s.handed_off_at.is_none()
            && (conv.mode == ConversationMode::Human
                || conv.status == ConversationStatus::PendingHuman)
        {
            s.handed_off_at = Some(conv.last_message_at.unwrap_or(conv.created_at));
        }
        if let Some(m) = new_msg {
            note_first(&mut s, m);
        }
        if old.as_ref() == Some(&s) {
            return Ok(s);
        }
        contrib::conversation(d, &s, 1);
        if let Some(o) = &old {
            contrib::conversation(d, o, -1);
            if o.agent_id != s.agent_id || o.channel_id != s.channel_id {
                let (from, to) = (
                    dims(Some(&o.agent_id), o.channel_id.as_ref()),
                    dims(Some(&s.agent_id), s.channel_id.as_ref()),
                );
                for m in tx.scan::<Message>(t, Some(conv.id.as_str()), |_| true)? {
                    contrib::message(d, &from, &m, -1);
                    contrib::message(d, &to, &m, 1);
                }
            }
        }
        tx.put(&s)?;
        Ok(s)
    }

    /// Stores a conversation and keeps its analytics in the same commit. Every write of a
    /// conversation goes through here. Unchecked (inside a transaction of a domain function
    /// that checked its caller; public for the benchmark).
    pub fn put_conversation(tx: &WriteTx, conv: &Conversation) -> Result<()> {
        let mut d = Deltas::default();
        Self::put_conversation_into(tx, conv, &mut d)?;
        Self::apply_deltas(tx, &conv.tenant_id, d)
    }

    /// [`put_conversation`](Self::put_conversation) adding its rollup changes to `d`, which
    /// the caller applies with [`apply_deltas`](Self::apply_deltas) before its commit.
    pub(super) fn put_conversation_into(
        tx: &WriteTx,
        conv: &Conversation,
        d: &mut Deltas,
    ) -> Result<()> {
        Self::update_stats(tx, conv, None, d)?;
        tx.put(conv)?;
        Ok(())
    }

    /// Stores a message of `conv` (new, or with a new status) and keeps its analytics in
    /// the same commit. Every write of a message goes through here. Unchecked, like
    /// [`put_conversation`](Self::put_conversation).
    pub fn put_message(tx: &WriteTx, conv: &Conversation, msg: &Message) -> Result<()> {
        let mut d = Deltas::default();
        Self::put_message_into(tx, conv, msg, &mut d)?;
        Self::apply_deltas(tx, &conv.tenant_id, d)
    }

    /// [`put_message`](Self::put_message) adding its rollup changes to `d` (see
    /// [`put_conversation_into`](Self::put_conversation_into)).
    pub(super) fn put_message_into(
        tx: &WriteTx,
        conv: &Conversation,
        msg: &Message,
        d: &mut Deltas,
    ) -> Result<()> {
        let t = &conv.tenant_id;
        let old = tx.get::<Message>(t, &format!("{}/{}", msg.conversation_id, msg.id))?;
        let s = Self::update_stats(tx, conv, old.is_none().then_some(msg), d)?;
        let dims = dims(Some(&s.agent_id), s.channel_id.as_ref());
        contrib::message(d, &dims, msg, 1);
        if let Some(o) = &old {
            contrib::message(d, &dims, o, -1);
        }
        tx.put(msg)?;
        Ok(())
    }

    /// [`put_message`](Self::put_message) for a message whose conversation is not loaded
    /// (a status change from the outbox); stored as is when the conversation is gone.
    pub(super) fn put_message_of(tx: &WriteTx, msg: &Message) -> Result<()> {
        match tx.get::<Conversation>(&msg.tenant_id, msg.conversation_id.as_str())? {
            Some(conv) => Self::put_message(tx, &conv, msg),
            None => Ok(tx.put(msg)?),
        }
    }

    /// Stores a webhook delivery and keeps the channel's dead-letter figures.
    pub(super) fn put_inbound(tx: &WriteTx, ev: &InboundEvent) -> Result<()> {
        let key = format!("{}/{}", ev.channel_id, ev.id);
        let old = tx.get::<InboundEvent>(&ev.tenant_id, &key)?;
        let mut d = Deltas::default();
        contrib::inbound(&mut d, ev, 1);
        if let Some(o) = &old {
            contrib::inbound(&mut d, o, -1);
        }
        tx.put(ev)?;
        Self::apply_deltas(tx, &ev.tenant_id, d)
    }

    /// Removes a webhook delivery (its channel is being deleted) and its figures.
    pub(super) fn delete_inbound(tx: &WriteTx, ev: &InboundEvent) -> Result<()> {
        let mut d = Deltas::default();
        contrib::inbound(&mut d, ev, -1);
        tx.delete::<InboundEvent>(&ev.tenant_id, &format!("{}/{}", ev.channel_id, ev.id))?;
        Self::apply_deltas(tx, &ev.tenant_id, d)
    }

    /// The model a turn of `agent` used: the agent's, else the tenant's or the operator's
    /// default.
    fn turn_model(&self, caller: &Caller, tx: &WriteTx, agent: &AgentId) -> Result<String> {
        if let Some(m) = tx
            .get::<Agent>(caller.tenant(), agent.as_str())?
            .and_then(|a| a.model)
        {
            return Ok(m);
        }
        Ok(self
            .effective_ai(caller)
            .map(|e| e.model)
            .unwrap_or_else(|_| self.config.openai_model.clone()))
    }

    /// Adds a turn to the agent's rollup of today (UTC) and stores the raw event.
    pub fn record_turn(&self, caller: &Caller, s: &TurnStats) -> Result<()> {
        caller
            .require(Action::RunAgent)
            .map_err(|d| Error::denied(d, "agent"))?;
        self.store.write(|tx| self.put_turn(tx, caller, s))
    }

    /// [`record_turn`](Self::record_turn) inside a caller's transaction, so a turn's reply
    /// and its analytics are one commit. Unchecked: for domain functions that checked.
    pub fn put_turn(&self, tx: &WriteTx, caller: &Caller, s: &TurnStats) -> Result<()> {
        let mut d = Deltas::default();
        self.put_turn_into(tx, caller, s, &mut d)?;
        Self::apply_deltas(tx, caller.tenant(), d)
    }

    /// [`put_turn`](Self::put_turn) adding its rollup changes to `d` (see
    /// [`put_conversation_into`](Self::put_conversation_into)).
    pub(super) fn put_turn_into(
        &self,
        tx: &WriteTx,
        caller: &Caller,
        s: &TurnStats,
        d: &mut Deltas,
    ) -> Result<()> {
        let tenant = caller.tenant();
        let now = self.clock.now();
        let day = format!(
            "{:04}-{:02}-{:02}",
            now.year(),
            u8::from(now.month()),
            now.day()
        );
        let id = format!("{}:{day}", s.agent_id);
        let mut a = tx
            .get::<AgentAnalytics>(tenant, &id)?
            .unwrap_or_else(|| AgentAnalytics {
                id: id.clone(),
                tenant_id: tenant.clone(),
                agent_id: s.agent_id.clone(),
                day: day.clone(),
                turns: 0,
                failed_turns: 0,
                handoffs: 0,
                prompt_tokens: 0,
                completion_tokens: 0,
                total_latency_ms: 0,
                conversations: 0,
            });
        a.turns += 1;
        a.failed_turns += (s.outcome == Outcome::Failed) as u64;
        a.handoffs += (s.outcome == Outcome::Handoff) as u64;
        a.conversations += s.new_conversation as u64;
        a.prompt_tokens += s.prompt_tokens as u64;
        a.completion_tokens += s.completion_tokens as u64;
        a.total_latency_ms += s.latency_ms;
        tx.put(&a)?;
        let channel_id = match &s.conversation_id {
            Some(c) => tx
                .get::<Conversation>(tenant, c.as_str())?
                .and_then(|c| c.channel_id),
            None => None,
        };
        let data = TurnData {
            outcome: s.outcome.as_str().into(),
            prompt_tokens: s.prompt_tokens as u64,
            completion_tokens: s.completion_tokens as u64,
            latency_ms: s.latency_ms,
            upstream_ms: s.upstream_ms,
            model: Some(self.turn_model(caller, tx, &s.agent_id)?),
            tool_calls: s.tool_calls as u64,
            channel_id,
        };
        let ev = AnalyticsEvent {
            id: AnalyticsEventId::new(),
            tenant_id: tenant.clone(),
            kind: "turn".into(),
            agent_id: Some(s.agent_id.clone()),
            conversation_id: s.conversation_id.clone(),
            data: serde_json::to_value(&data).map_err(internal)?,
            created_at: now,
        };
        tx.put(&ev)?;
        contrib::turn(d, &ev, 1);
        if matches!(s.outcome, Outcome::Fallback | Outcome::Handoff)
            && let Some(q) = s
                .question
                .as_deref()
                .map(str::trim)
                .filter(|q| !q.is_empty())
        {
            tx.put(&KnowledgeGap {
                id: AnalyticsEventId::new(),
                tenant_id: tenant.clone(),
                agent_id: s.agent_id.clone(),
                conversation_id: s.conversation_id.clone(),
                question: q.chars().take(GAP_QUESTION_CHARS).collect(),
                outcome: s.outcome.as_str().into(),
                created_at: now,
            })?;
        }
        Ok(())
    }

    /// The daily rollups of an agent (oldest first).
    pub fn agent_analytics(&self, caller: &Caller, agent: &AgentId) -> Result<Vec<AgentAnalytics>> {
        caller
            .require(Action::ReadAnalytics)
            .map_err(|d| Error::denied(d, "agent"))?;
        Ok(self.store.read(|tx| {
            tx.scan::<AgentAnalytics>(caller.tenant(), None, |a| &a.agent_id == agent)
        })?)
    }

    // ---- rebuild ----

    /// Recomputes one tenant's rollups from its conversations (their analytics records),
    /// messages, turn events and webhook deliveries, in one transaction. A conversation
    /// without an analytics record (stored before analytics existed) gets one derived from
    /// its messages. Returns how many rollup keys were written.
    pub fn rebuild_tenant_analytics(&self, tenant: &TenantId) -> Result<u64> {
        self.store.write(|tx| -> Result<u64> {
            let mut d = Deltas::default();
            let old: Vec<AnalyticsRollup> = tx.scan(tenant, None, |_| true)?;
            for r in &old {
                tx.delete::<AnalyticsRollup>(tenant, &format!("{}/{}", r.dim, r.bucket))?;
            }
            let mut after: Option<String> = None;
            loop {
                let page = tx.list::<Conversation>(tenant, None, after.as_deref(), 500, false)?;
                for conv in &page.items {
                    let msgs: Vec<Message> = {
                        let mut m = tx.scan::<Message>(tenant, Some(conv.id.as_str()), |_| true)?;
                        m.sort_by_key(|m| m.seq);
                        m
                    };
                    let s = match tx.get::<ConversationStats>(tenant, conv.id.as_str())? {
                        Some(mut s) => {
                            follow(&mut s, conv);
                            s
                        }
                        None => derive_stats(conv, &msgs),
                    };
                    tx.put(&s)?;
                    contrib::conversation(&mut d, &s, 1);
                    let dims = dims(Some(&s.agent_id), s.channel_id.as_ref());
                    for m in &msgs {
                        contrib::message(&mut d, &dims, m, 1);
                    }
                }
                match page.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            for ev in tx.scan::<AnalyticsEvent>(tenant, None, |e| e.kind == "turn")? {
                contrib::turn(&mut d, &ev, 1);
            }
            for ev in
                tx.scan::<InboundEvent>(tenant, None, |e| e.status == InboundStatus::DeadLetter)?
            {
                contrib::inbound(&mut d, &ev, 1);
            }
            let n = d.0.len() as u64;
            Self::apply_deltas(tx, tenant, d)?;
            Ok(n)
        })
    }

    /// Rebuilds every tenant's rollups (`aigentable analytics rebuild`). Returns (tenants,
    /// rollup keys).
    pub fn rebuild_all_analytics(&self) -> Result<(u64, u64)> {
        let mut after: Option<String> = None;
        let (mut tenants, mut keys) = (0, 0);
        loop {
            let page = self.store.read(|tx| tx.tenants(after.as_deref(), 200))?;
            for t in &page.items {
                keys += self.rebuild_tenant_analytics(&t.id)?;
                tenants += 1;
            }
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok((tenants, keys)),
            }
        }
    }

    /// At startup: a store upgraded from before rollups existed (none yet, but
    /// conversations) gets them built once.
    pub fn rebuild_analytics_if_empty(&self) -> Result<bool> {
        let (rollups, convs) = self.store.read(|tx| {
            Ok((
                tx.count_all::<AnalyticsRollup>()?,
                tx.count_all::<Conversation>()?,
            ))
        })?;
        if rollups > 0 || convs == 0 {
            return Ok(false);
        }
        let (tenants, keys) = self.rebuild_all_analytics()?;
        tracing::info!(
            tenants,
            keys,
            "analytics rollups built from the stored conversations"
        );
        Ok(true)
    }

    /// Every rollup of a tenant, for tests and the rebuild check.
    pub fn analytics_rollups(&self, tenant: &TenantId) -> Result<Vec<AnalyticsRollup>> {
        Ok(self.store.read(|tx| tx.scan(tenant, None, |_| true))?)
    }

    // ---- reads ----

    fn scope(&self, caller: &Caller) -> Result<Scope> {
        caller
            .require(Action::ReadAnalytics)
            .map_err(|d| Error::denied(d, "analytics"))?;
        if caller.is_platform_admin() && caller.acting_for().is_none() {
            return Ok(Scope::Platform);
        }
        Ok(Scope::Tenant(caller.tenant().clone()))
    }

    /// The time zone reports of `tenant` use: its `settings.timeZone`, UTC when unset or
    /// unknown.
    pub fn tenant_zone(&self, tenant: &TenantId) -> Result<Zone> {
        let t = self.store.read(|tx| tx.get::<Tenant>(tenant, ""))?;
        let name = t
            .as_ref()
            .and_then(|t| t.settings.get("timeZone"))
            .and_then(Value::as_str)
            .unwrap_or("UTC");
        Ok(Zone::parse(name).unwrap_or_else(|e| {
            tracing::warn!(tenant = %tenant, reason = %e, "unknown time zone: analytics use UTC");
            Zone::utc()
        }))
    }

    /// Rollups of `dim` of the given tenants between two UTC hour keys, summed per series
    /// bucket, and customer messages and new conversations per local hour of the day.
    fn read_series(
        &self,
        tenants: &[TenantId],
        dim: &str,
        bks: &[Bucket],
        (lo, hi): (&str, &str),
        zone: &Zone,
    ) -> Result<Series> {
        let mut out = Series {
            figures: vec![Figures::default(); bks.len()],
            by_hour: [[0; 24]; 2],
        };
        let (from, to) = (format!("{dim}/{lo}"), format!("{dim}/{hi}"));
        self.store.read(|tx| {
            for t in tenants {
                for r in tx.range::<AnalyticsRollup>(t, &from, &to)? {
                    let Some(at) = hour_start(&r.bucket) else {
                        continue;
                    };
                    let Some(i) = bucket_of(bks, at) else {
                        continue;
                    };
                    let h = zone.local(at).hour() as usize;
                    let count = |n: &str| r.counts.get(n).copied().unwrap_or(0);
                    out.by_hour[0][h] += count(contrib::names::MSG_CUSTOMER);
                    out.by_hour[1][h] += count(contrib::names::CONV_NEW);
                    out.figures[i].add(&acc_of(r));
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// One analytics report (see the README, Analytics, and the route docs).
    pub fn analytics_report(
        &self,
        caller: &Caller,
        kind: ReportKind,
        q: &ReportQuery,
    ) -> Result<Report> {
        let scope = self.scope(caller)?;
        let (tenants, zone, tenant_id) = match &scope {
            Scope::Tenant(t) => (vec![t.clone()], self.tenant_zone(t)?, Some(t.clone())),
            Scope::Platform => {
                let mut all = Vec::new();
                let mut after: Option<String> = None;
                loop {
                    let p = self.store.read(|tx| tx.tenants(after.as_deref(), 500))?;
                    all.extend(p.items.into_iter().map(|t| t.id));
                    match p.next {
                        Some(n) => after = Some(n),
                        None => break,
                    }
                }
                (all, Zone::utc(), None)
            }
        };
        if q.agent_id.is_some() && q.channel_id.is_some() {
            return Err(Error::Invalid(
                "invalid_query",
                "filter by agentId or by channelId, not both".into(),
            ));
        }
        // A filter names one of the caller's own agents or channels.
        let (agents, channels) = self.store.read(|tx| {
            let mut agents = Vec::new();
            let mut channels = Vec::new();
            if let Scope::Tenant(t) = &scope {
                agents = tx.scan::<Agent>(t, None, |_| true)?;
                channels = tx.scan::<Channel>(t, None, |_| true)?;
            }
            Ok((agents, channels))
        })?;
        if let Some(a) = &q.agent_id
            && !agents.iter().any(|x| &x.id == a)
        {
            return Err(Error::NotFound("agent"));
        }
        if let Some(c) = &q.channel_id
            && !channels.iter().any(|x| &x.id == c)
        {
            return Err(Error::NotFound("channel"));
        }
        let today = zone.today(self.clock.now());
        let to = q.to.unwrap_or(today);
        let from = q
            .from
            .unwrap_or(to.checked_sub(time::Duration::days(29)).unwrap_or(to));
        if from > to {
            return Err(Error::Invalid(
                "invalid_query",
                "from must not be after to".into(),
            ));
        }
        if (to - from).whole_days() > MAX_RANGE_DAYS {
            return Err(Error::Invalid(
                "invalid_query",
                format!("the range is limited to {MAX_RANGE_DAYS} days"),
            ));
        }
        let bks = buckets(&zone, from, to, q.granularity, MAX_BUCKETS).ok_or_else(|| {
            Error::Invalid(
                "invalid_query",
                format!(
                    "the range has more than {MAX_BUCKETS} {} buckets: pick a coarser granularity or a shorter range",
                    q.granularity.as_str()
                ),
            )
        })?;
        let (Some(first), Some(last)) = (bks.first(), bks.last()) else {
            return Err(Error::Invalid("invalid_query", "the range is empty".into()));
        };
        let lo = hour_key(first.start);
        // The hour keys up to the range's end: the last hour starting before it.
        let hi = hour_key(last.end + time::Duration::minutes(59));
        let filter_dim = match (&q.agent_id, &q.channel_id) {
            (Some(a), _) => agent_dim(a),
            (_, Some(c)) => channel_dim(c),
            _ => DIM_ALL.to_string(),
        };
        let prices = crate::analytics::prices::Prices::parse(&self.config.analytics_prices)
            .unwrap_or_default();
        let range = json!({
            "from": fmt_date(from),
            "to": fmt_date(to),
            "granularity": q.granularity.as_str(),
            "timeZone": zone.name(),
            "tenantId": tenant_id,
            "agentId": q.agent_id,
            "channelId": q.channel_id,
        });
        let lead = |b: &Bucket| -> Vec<(&'static str, Value)> {
            vec![
                ("start", json!(rfc3339(b.start))),
                ("label", json!(b.label)),
            ]
        };
        let mut header: Vec<String> = vec!["start".into(), "label".into()];
        let mut rows: Vec<Vec<Value>> = Vec::new();
        let json = match kind {
            ReportKind::Dashboard | ReportKind::Conversations => {
                let read = self.read_series(&tenants, &filter_dim, &bks, (&lo, &hi), &zone)?;
                let series = &read.figures;
                let tot = total(series);
                let flat_of = |f: &Figures| match kind {
                    ReportKind::Dashboard => f.dashboard(&prices),
                    _ => f.conversations(),
                };
                let mut s_json = Vec::new();
                for (b, f) in bks.iter().zip(series) {
                    let flat = flat_of(f);
                    push_row(&mut header, &mut rows, lead(b), &flat);
                    s_json.push(object(lead(b), &flat));
                }
                let tot_flat = flat_of(&tot);
                push_row(
                    &mut header,
                    &mut rows,
                    vec![("start", json!("total")), ("label", json!("total"))],
                    &tot_flat,
                );
                let mut body = json!({
                    "range": range,
                    "totals": object(vec![], &tot_flat),
                    "series": s_json,
                });
                if kind == ReportKind::Dashboard {
                    body["byModel"] = json!(tot.by_model(&prices));
                    body["busiestHours"] = json!(
                        (0..24)
                            .map(
                                |h| json!({"hour": h, "customerMessages": read.by_hour[0][h],
                                "conversations": read.by_hour[1][h]})
                            )
                            .collect::<Vec<_>>()
                    );
                    if let Scope::Platform = scope {
                        body["tenants"] =
                            self.platform_tenants(&tenants, &bks, &lo, &hi, &prices)?;
                    }
                } else {
                    body["byStatus"] = tot.by_status();
                    body["byChannel"] =
                        self.by_channel(&tenants, &filter_dim, &channels, &bks, &lo, &hi, &tot)?;
                }
                body
            }
            ReportKind::Agents | ReportKind::Channels => {
                // One dimension per entity: an agent's or channel's keys only.
                let entities: Vec<(String, String, Value, Option<&'static str>)> = match kind {
                    ReportKind::Agents => agents
                        .iter()
                        .filter(|a| q.agent_id.as_ref().is_none_or(|x| x == &a.id))
                        .map(|a| (agent_dim(&a.id), a.name.clone(), json!(a.id), None))
                        .collect(),
                    _ => channels
                        .iter()
                        .filter(|c| q.channel_id.as_ref().is_none_or(|x| x == &c.id))
                        .map(|c| {
                            (
                                channel_dim(&c.id),
                                c.name.clone(),
                                json!(c.id),
                                Some(kind_str(c.kind)),
                            )
                        })
                        .collect(),
                };
                let id_key = if kind == ReportKind::Agents {
                    "agentId"
                } else {
                    "channelId"
                };
                let mut list = Vec::new();
                let mut s_json = Vec::new();
                let mut totals_rows = Vec::new();
                let mut sorted = entities;
                sorted.sort_by_key(|e| e.1.to_lowercase());
                for (dim, name, id, ckind) in &sorted {
                    let series = self
                        .read_series(&tenants, dim, &bks, (&lo, &hi), &zone)?
                        .figures;
                    let flat_of = |f: &Figures| match kind {
                        ReportKind::Agents => f.agent(&prices),
                        _ => f.channel(),
                    };
                    for (b, f) in bks.iter().zip(&series) {
                        let flat = flat_of(f);
                        let mut l = lead(b);
                        l.push((id_key, id.clone()));
                        push_row(&mut header, &mut rows, l.clone(), &flat);
                        s_json.push(object(l, &flat));
                    }
                    let tot = total(&series);
                    let flat = flat_of(&tot);
                    totals_rows.push((id.clone(), flat.clone()));
                    let mut l: Vec<(&str, Value)> =
                        vec![(id_key, id.clone()), ("name", json!(name))];
                    if kind == ReportKind::Channels {
                        l.push(("kind", json!(ckind)));
                    }
                    list.push(object(l, &flat));
                }
                for (id, flat) in totals_rows {
                    push_row(
                        &mut header,
                        &mut rows,
                        vec![
                            ("start", json!("total")),
                            ("label", json!("total")),
                            (id_key, id),
                        ],
                        &flat,
                    );
                }
                if header.len() <= 2 {
                    // No entity: the header still names the columns.
                    header.push(id_key.into());
                    let flat = match kind {
                        ReportKind::Agents => Figures::default().agent(&prices),
                        _ => Figures::default().channel(),
                    };
                    header.extend(flat.iter().map(|(k, _)| k.to_string()));
                }
                let list_key = if kind == ReportKind::Agents {
                    "agents"
                } else {
                    "channels"
                };
                json!({ "range": range, list_key: list, "series": s_json })
            }
        };
        Ok(Report { json, header, rows })
    }

    /// New conversations per channel (and those without one) over the range.
    #[allow(clippy::too_many_arguments)]
    fn by_channel(
        &self,
        tenants: &[TenantId],
        filter_dim: &str,
        channels: &[Channel],
        bks: &[Bucket],
        lo: &str,
        hi: &str,
        tot: &Figures,
    ) -> Result<Value> {
        let mut out = Vec::new();
        let mut counted = 0;
        for c in channels {
            let dim = channel_dim(&c.id);
            if filter_dim != DIM_ALL && filter_dim != dim {
                continue;
            }
            let n = total_count(
                &self
                    .read_series(tenants, &dim, bks, (lo, hi), &Zone::utc())?
                    .figures,
                contrib::names::CONV_NEW,
            );
            counted += n;
            out.push(json!({"channelId": c.id, "name": c.name, "kind": kind_str(c.kind), "conversations": n}));
        }
        if filter_dim == DIM_ALL {
            out.push(
                json!({"channelId": null, "name": "No channel", "kind": null,
                "conversations": tot.count(contrib::names::CONV_NEW) - counted}),
            );
        }
        Ok(json!(out))
    }

    /// Platform totals: each tenant's headline figures.
    fn platform_tenants(
        &self,
        tenants: &[TenantId],
        bks: &[Bucket],
        lo: &str,
        hi: &str,
        prices: &crate::analytics::prices::Prices,
    ) -> Result<Value> {
        let mut out = Vec::new();
        for t in tenants {
            let series = self
                .read_series(
                    std::slice::from_ref(t),
                    DIM_ALL,
                    bks,
                    (lo, hi),
                    &Zone::utc(),
                )?
                .figures;
            let f = total(&series);
            let name = self
                .store
                .read(|tx| tx.get::<Tenant>(t, ""))?
                .map(|t| t.name)
                .unwrap_or_default();
            out.push(json!({
                "tenantId": t,
                "name": name,
                "conversationsNew": f.count(contrib::names::CONV_NEW),
                "messagesCustomer": f.count(contrib::names::MSG_CUSTOMER),
                "messagesAi": f.count(contrib::names::MSG_AI),
                "costUsd": f.cost(prices),
            }));
        }
        Ok(json!(out))
    }

    /// Questions that ended in the fallback or a handoff, grouped by similar wording, then
    /// by meaning when `embed` gives vectors for the tenant's questions (its embedding
    /// model; `None` when it has none or the model cannot be used now).
    pub fn knowledge_gaps(
        &self,
        caller: &Caller,
        q: &ReportQuery,
        limit: usize,
        embed: &GapEmbed,
    ) -> Result<Value> {
        let Scope::Tenant(t) = self.scope(caller)? else {
            return Err(Error::Invalid(
                "invalid_query",
                "knowledge gaps are per tenant: pass tenantId".into(),
            ));
        };
        let zone = self.tenant_zone(&t)?;
        let to = q.to.unwrap_or(zone.today(self.clock.now()));
        let from = q
            .from
            .unwrap_or(to.checked_sub(time::Duration::days(29)).unwrap_or(to));
        if from > to {
            return Err(Error::Invalid(
                "invalid_query",
                "from must not be after to".into(),
            ));
        }
        let (start, end) = (
            zone.midnight(from),
            zone.midnight(to.next_day().unwrap_or(to)),
        );
        let (lo, hi) = (gap_bound(start), gap_bound(end));
        if let Some(a) = &q.agent_id
            && self
                .store
                .read(|tx| tx.get::<Agent>(&t, a.as_str()))?
                .is_none()
        {
            return Err(Error::NotFound("agent"));
        }
        let gaps: Vec<KnowledgeGap> = self.store.read(|tx| tx.range(&t, &lo, &hi))?;
        let gaps: Vec<KnowledgeGap> = gaps
            .into_iter()
            .filter(|g| q.agent_id.as_ref().is_none_or(|a| &g.agent_id == a))
            .rev()
            .take(MAX_GAPS)
            .collect();
        let mut groups = group_gaps(&gaps);
        let mut grouping = "terms";
        if groups.len() > 1 {
            // The heads of the largest word groups, embedded once each (bounded work).
            let heads: Vec<String> = groups
                .iter()
                .take(MAX_EMBEDDED_GROUPS)
                .map(|g| normalise(&gaps[g[0]].question))
                .collect();
            if let Some(vectors) = embed(&t, &heads).filter(|v| v.len() == heads.len()) {
                groups = merge_by_meaning(groups, &vectors);
                grouping = "embeddings";
            }
        }
        let out: Vec<Value> = groups
            .into_iter()
            .take(limit)
            .map(|g| {
                let first = &gaps[g[0]];
                json!({
                    "question": normalise(&first.question),
                    "count": g.len(),
                    "fallbacks": g.iter().filter(|i| gaps[**i].outcome == "fallback").count(),
                    "handoffs": g.iter().filter(|i| gaps[**i].outcome == "handoff").count(),
                    "examples": g.iter().take(5).map(|i| {
                        let x = &gaps[*i];
                        json!({"conversationId": x.conversation_id, "question": x.question,
                               "at": rfc3339(x.created_at), "agentId": x.agent_id})
                    }).collect::<Vec<_>>(),
                    "lastAt": rfc3339(first.created_at),
                })
            })
            .collect();
        Ok(json!({
            "range": {
                "from": fmt_date(from), "to": fmt_date(to), "granularity": null,
                "timeZone": zone.name(), "tenantId": t, "agentId": q.agent_id, "channelId": null,
            },
            "groups": out,
            "grouping": grouping,
        }))
    }
}

/// A report's rollups summed per series bucket, and per local hour of the day
/// (`[customer messages, new conversations]`).
struct Series {
    figures: Vec<Figures>,
    by_hour: [[i64; 24]; 2],
}

/// Most knowledge gaps grouped per request (the newest).
const MAX_GAPS: usize = 5_000;
/// Word groups whose questions are embedded per request, largest first (the rest keep
/// their word grouping): bounds the embedding work of one report.
const MAX_EMBEDDED_GROUPS: usize = 200;
/// Cosine from which two questions ask the same thing. With all-MiniLM-L6-v2, rewordings
/// of one question ("how long does delivery to Spain take" / "what is the delivery time for
/// orders to Spain") score 0.86-0.92, related but different questions ("do you ship to
/// Portugal") 0.4-0.66, unrelated ones under 0.25.
const SAME_MEANING: f32 = 0.75;

/// Embeds a tenant's questions with its embedding model (L2-normalised vectors in input
/// order), or `None` when it has none or it cannot be used now. Blocking.
pub type GapEmbed = dyn Fn(&TenantId, &[String]) -> Option<Vec<Vec<f32>>> + Send + Sync;

/// A question's normalised terms: lower case, letters and digits, short stop words out.
fn terms(q: &str) -> Vec<String> {
    const STOP: &[&str] = &[
        "a", "an", "the", "is", "are", "do", "does", "you", "your", "i", "me", "my", "we", "to",
        "of", "in", "on", "for", "and", "or", "it", "can", "what", "how", "please", "there", "any",
        "be", "with", "at",
    ];
    let mut t: Vec<String> = q
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && !STOP.contains(w))
        .map(str::to_string)
        .collect();
    t.sort();
    t.dedup();
    t
}

/// The question as shown for its group: lower case, words only.
fn normalise(q: &str) -> String {
    q.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Groups questions whose terms overlap (Jaccard >= 0.5 with the group's first question),
/// largest group first; each group lists indexes into `gaps`, newest first.
fn group_gaps(gaps: &[KnowledgeGap]) -> Vec<Vec<usize>> {
    let mut groups: Vec<(Vec<String>, Vec<usize>)> = Vec::new();
    let mut exact: HashMap<Vec<String>, usize> = HashMap::new();
    for (i, g) in gaps.iter().enumerate() {
        let t = terms(&g.question);
        if let Some(&gi) = exact.get(&t) {
            groups[gi].1.push(i);
            continue;
        }
        let found = groups.iter().position(|(head, _)| jaccard(head, &t) >= 0.5);
        match found {
            Some(gi) => {
                groups[gi].1.push(i);
                exact.insert(t, gi);
            }
            None => {
                exact.insert(t.clone(), groups.len());
                groups.push((t, vec![i]));
            }
        }
    }
    let mut out: Vec<Vec<usize>> = groups.into_iter().map(|(_, v)| v).collect();
    out.sort_by(|a, b| b.len().cmp(&a.len()).then(a[0].cmp(&b[0])));
    out
}

/// Joins word groups whose first questions mean the same (`vectors[i]` is group i's head,
/// for the first `vectors.len()` groups): each group joins the largest earlier group it is
/// close to. Sizes and order as in [`group_gaps`]; members stay newest first.
fn merge_by_meaning(groups: Vec<Vec<usize>>, vectors: &[Vec<f32>]) -> Vec<Vec<usize>> {
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let mut kept: Vec<(usize, Vec<usize>)> = Vec::new(); // (head's vector, members)
    for (i, g) in groups.into_iter().enumerate() {
        let close = (i < vectors.len())
            .then(|| {
                kept.iter().position(|(h, _)| {
                    *h < vectors.len() && dot(&vectors[*h], &vectors[i]) >= SAME_MEANING
                })
            })
            .flatten();
        match close {
            Some(k) => kept[k].1.extend(g),
            None => kept.push((i, g)),
        }
    }
    let mut out: Vec<Vec<usize>> = kept
        .into_iter()
        .map(|(_, mut v)| {
            v.sort_unstable();
            v
        })
        .collect();
    out.sort_by(|a, b| b.len().cmp(&a.len()).then(a[0].cmp(&b[0])));
    out
}

fn jaccard(a: &[String], b: &[String]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let inter = a.iter().filter(|x| b.contains(x)).count();
    let union = a.len() + b.len() - inter;
    inter as f64 / union.max(1) as f64
}

/// A knowledge-gap key bound: gaps at or after `at` sort after it (see `store::gap_key`).
fn gap_bound(at: time::OffsetDateTime) -> String {
    format!("{:013}", (at.unix_timestamp_nanos() / 1_000_000).max(0))
}

/// Appends one CSV row (and, first, the header from its names).
fn push_row(
    header: &mut Vec<String>,
    rows: &mut Vec<Vec<Value>>,
    lead: Vec<(&str, Value)>,
    flat: &Flat,
) {
    if rows.is_empty() {
        header.clear();
        header.extend(lead.iter().map(|(k, _)| k.to_string()));
        header.extend(flat.iter().map(|(k, _)| k.to_string()));
    }
    let mut row: Vec<Value> = lead.into_iter().map(|(_, v)| v).collect();
    row.extend(flat.iter().map(|(_, v)| v.clone()));
    rows.push(row);
}

/// A series' buckets added up.
fn total(series: &[Figures]) -> Figures {
    let mut f = Figures::default();
    for s in series {
        f.add(&s.0);
    }
    f
}

fn total_count(series: &[Figures], name: &str) -> i64 {
    series.iter().map(|f| f.count(name)).sum()
}

fn kind_str(k: ChannelKind) -> &'static str {
    match k {
        ChannelKind::Web => "web",
        ChannelKind::Whatsapp => "whatsapp",
        ChannelKind::Messenger => "messenger",
        ChannelKind::Instagram => "instagram",
        ChannelKind::Telegram => "telegram",
    }
}

fn fmt_date(d: time::Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Copies what the analytics record mirrors of its conversation (agent, channel, status,
/// times, rating).
fn follow(s: &mut ConversationStats, conv: &Conversation) {
    s.agent_id = conv.agent_id.clone();
    s.channel_id = conv.channel_id.clone();
    s.status = conv.status;
    s.created_at = conv.created_at;
    s.closed_at = conv.closed_at;
    s.rating = conv.rating.as_ref().map(|r| r.score);
    s.rated_at = conv.rating.as_ref().map(|r| r.rated_at);
}

/// First customer message and first reply after it, from a newly added message.
fn note_first(s: &mut ConversationStats, m: &Message) {
    match m.role {
        MessageRole::Customer => {
            if s.first_customer_at.is_none() {
                s.first_customer_at = Some(m.created_at);
            }
        }
        MessageRole::Ai | MessageRole::Human => {
            if s.first_customer_at.is_some()
                && s.first_response_at.is_none()
                && m.status != MessageStatus::Failed
            {
                s.first_response_at = Some(m.created_at);
            }
        }
        MessageRole::System => {}
    }
}

/// The analytics record of a conversation stored before analytics existed, from its
/// messages (in commit order).
fn derive_stats(conv: &Conversation, msgs: &[Message]) -> ConversationStats {
    let mut s = ConversationStats {
        tenant_id: conv.tenant_id.clone(),
        conversation_id: conv.id.clone(),
        agent_id: conv.agent_id.clone(),
        channel_id: conv.channel_id.clone(),
        status: conv.status,
        created_at: conv.created_at,
        closed_at: conv.closed_at,
        first_customer_at: None,
        first_response_at: None,
        handed_off_at: None,
        reopens: 0,
        rating: conv.rating.as_ref().map(|r| r.score),
        rated_at: conv.rating.as_ref().map(|r| r.rated_at),
    };
    for m in msgs {
        note_first(&mut s, m);
        if s.handed_off_at.is_none()
            && (m.role == MessageRole::Human
                || (m.role == MessageRole::System && m.content.starts_with("Handed off")))
        {
            s.handed_off_at = Some(m.created_at);
        }
    }
    if s.handed_off_at.is_none()
        && (conv.mode == ConversationMode::Human || conv.status == ConversationStatus::PendingHuman)
    {
        s.handed_off_at = Some(conv.last_message_at.unwrap_or(conv.created_at));
    }
    s
}
