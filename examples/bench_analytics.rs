//! Analytics benchmarks (issue 11): the dashboard of a tenant with 1,000,000 messages over
//! 90 days (read from the hourly rollups), and the write overhead the rollups add to a chat
//! turn's commit.
//!
//! ```text
//! cargo run --release --example bench_analytics -- [--messages N] [--days N] [--reads N] [--turns N]
//! ```
//!
//! * `--messages N`  messages to seed (default 1,000,000), 10 per conversation (5 customer
//!   messages, 5 AI answers with a turn event each), spread over `--days` (default 90),
//!   over 5 agents and 3 channels (a quarter of the conversations have no channel)
//! * `--reads N`     measured dashboard requests per variant (default 200)
//! * `--turns N`     measured turn commits per variant (default 2,000)
//!
//! Seeding writes the records straight to the store in large transactions and then builds
//! the rollups with the rebuild (which a test proves equal to the incremental rollups), so
//! a million messages seed in minutes. Everything runs in this process on 127.0.0.1.

use aigentable::analytics::contrib::TurnData;
use aigentable::auth::Caller;
use aigentable::domain::Services;
use aigentable::domain::analytics::{Outcome, ReportKind, ReportQuery, TurnStats};
use aigentable::model::*;
use aigentable::types::*;
use anyhow::{Context, Result, anyhow};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone)]
struct Opts {
    messages: usize,
    days: i64,
    reads: usize,
    turns: usize,
}

fn opts() -> Result<Opts> {
    let mut o = Opts {
        messages: 1_000_000,
        days: 90,
        reads: 200,
        turns: 2_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = || -> Result<usize> {
            args.next()
                .and_then(|v| v.replace('_', "").parse().ok())
                .ok_or_else(|| anyhow!("{a} needs a number"))
        };
        match a.as_str() {
            "--messages" => o.messages = num()?,
            "--days" => o.days = num()? as i64,
            "--reads" => o.reads = num()?,
            "--turns" => o.turns = num()?,
            other => return Err(anyhow!("unknown option {other}")),
        }
    }
    Ok(o)
}

fn pct(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn message(
    t: &TenantId,
    c: &ConversationId,
    role: MessageRole,
    at: Timestamp,
    seq: u64,
) -> Message {
    Message {
        id: MessageId::new(),
        tenant_id: t.clone(),
        conversation_id: c.clone(),
        role,
        content: "When does the Lisbon shop open on Saturdays?".into(),
        citations: vec![],
        usage: (role == MessageRole::Ai).then_some(Usage {
            prompt_tokens: 900,
            completion_tokens: 60,
        }),
        status: MessageStatus::Sent,
        error: None,
        error_code: None,
        author_id: None,
        created_at: at,
        seq,
        client_id: None,
        attachments: vec![],
    }
}

/// Seeds `n` messages as conversations of 10 and builds the rollups.
fn seed(
    svc: &Services,
    tenant: &TenantId,
    agents: &[AgentId],
    channels: &[ChannelId],
    o: &Opts,
) -> Result<()> {
    let now = time::OffsetDateTime::now_utc();
    let start = now - time::Duration::days(o.days);
    let convs = o.messages / 10;
    let span = (now - start).whole_seconds() - 3_600;
    let started = Instant::now();
    const BATCH: usize = 2_000;
    let mut i = 0;
    while i < convs {
        let end = (i + BATCH).min(convs);
        svc.store.write(|tx| -> aigentable::store::Result<()> {
            for k in i..end {
                // Spread evenly over the days, skewed towards business hours.
                let base = start + time::Duration::seconds(span * k as i64 / convs as i64);
                let created = base.replace_hour(8 + (k % 10) as u8).unwrap_or(base);
                let agent = &agents[k % agents.len()];
                let channel = (k % 4 != 0).then(|| channels[k % channels.len()].clone());
                let closed = k % 3 != 0;
                let mut conv = Conversation {
                    id: ConversationId::new(),
                    tenant_id: tenant.clone(),
                    agent_id: agent.clone(),
                    channel_id: channel.clone(),
                    customer: Customer::default(),
                    status: if closed {
                        ConversationStatus::Closed
                    } else if k % 7 == 0 {
                        ConversationStatus::PendingHuman
                    } else {
                        ConversationStatus::Open
                    },
                    mode: if k % 7 == 0 {
                        ConversationMode::Human
                    } else {
                        ConversationMode::Ai
                    },
                    assignee_id: None,
                    last_message_at: None,
                    message_count: 0,
                    created_at: created,
                    closed_at: closed.then(|| created + time::Duration::minutes(30)),
                    last_seq: 0,
                    rating: (k % 5 == 0 && closed).then(|| Rating {
                        score: (k % 5) as u8 + 1,
                        comment: None,
                        rated_at: created + time::Duration::minutes(31),
                    }),
                };
                for m in 0..10u64 {
                    let at = created + time::Duration::seconds(m as i64 * 60 + (m % 2) as i64 * 3);
                    let role = if m % 2 == 0 {
                        MessageRole::Customer
                    } else {
                        MessageRole::Ai
                    };
                    let msg = message(tenant, &conv.id, role, at, m + 1);
                    tx.put(&msg)?;
                    if role == MessageRole::Ai {
                        let data = TurnData {
                            outcome: if m == 9 && k % 11 == 0 {
                                "fallback".into()
                            } else {
                                "answered".into()
                            },
                            prompt_tokens: 900,
                            completion_tokens: 60,
                            latency_ms: 800 + (k % 900) as u64,
                            upstream_ms: 700,
                            model: Some("gpt-4o-mini".into()),
                            tool_calls: (k % 13 == 0) as u64,
                            channel_id: channel.clone(),
                        };
                        tx.put(&AnalyticsEvent {
                            id: AnalyticsEventId::new(),
                            tenant_id: tenant.clone(),
                            kind: "turn".into(),
                            agent_id: Some(agent.clone()),
                            conversation_id: Some(conv.id.clone()),
                            data: serde_json::to_value(&data).map_err(|e| {
                                aigentable::store::Error::Corrupt {
                                    table: "analytics_events",
                                    source: e,
                                }
                            })?,
                            created_at: at,
                        })?;
                    }
                    conv.last_seq = m + 1;
                    conv.message_count += 1;
                    conv.last_message_at = Some(at);
                }
                tx.put(&conv)?;
            }
            Ok(())
        })?;
        i = end;
        if i % 20_000 == 0 || i == convs {
            eprintln!(
                "  seeded {} messages ({:.0} s)",
                i * 10,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let t0 = Instant::now();
    svc.rebuild_tenant_analytics(tenant)
        .map_err(|e| anyhow!("rebuild: {e}"))?;
    eprintln!("  rollups built in {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let o = opts()?;
    let dir = tempfile::tempdir()?;
    let config = aigentable::config::Config {
        data_dir: dir.path().to_path_buf(),
        rate_limit_api_per_min: 0,
        rate_limit_auth_per_min: 0,
        ..Default::default()
    };
    let app = aigentable::build(config).await?;
    let svc: Arc<Services> = app.state.svc.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(aigentable::serve_with_listener(app, listener, async {
        let _ = stop_rx.await;
    }));
    let http = reqwest::Client::new();

    let signed = {
        let svc = svc.clone();
        tokio::task::spawn_blocking(move || {
            svc.register(
                aigentable::domain::auth::RegisterInput {
                    email: "bench@analytics.test".into(),
                    password: "bench-password-123".into(),
                    name: "Bench".into(),
                    tenant_name: "Bench Shop".into(),
                },
                &Default::default(),
            )
        })
        .await?
        .map_err(|e| anyhow!("register: {e}"))?
    };
    let token = signed.tokens.access_token.clone();
    let tenant = signed.user.tenant_id.clone();
    let caller = Caller::staff_session(&signed.user, SessionId::new());
    let mut agents = Vec::new();
    for i in 0..5 {
        let r: serde_json::Value = http
            .post(format!("{base}/api/agents"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"name": format!("Agent {i}")}))
            .send()
            .await?
            .json()
            .await?;
        agents.push(AgentId::parse(r["id"].as_str().context("agent id")?).context("agent id")?);
    }
    let mut channels = Vec::new();
    for (i, agent) in agents.iter().enumerate().take(3) {
        let r: serde_json::Value = http
            .post(format!("{base}/api/channels"))
            .bearer_auth(&token)
            .json(
                &serde_json::json!({"type": "web", "name": format!("Site {i}"),
                "agentId": agent, "settings": {"allowedOrigins": ["https://shop.example.com"]}}),
            )
            .send()
            .await?
            .json()
            .await?;
        channels
            .push(ChannelId::parse(r["id"].as_str().context("channel id")?).context("channel id")?);
    }

    eprintln!("seeding {} messages over {} days", o.messages, o.days);
    {
        let (svc, tenant, agents, channels) = (
            svc.clone(),
            tenant.clone(),
            agents.clone(),
            channels.clone(),
        );
        let o2 = o.clone();
        tokio::task::spawn_blocking(move || seed(&svc, &tenant, &agents, &channels, &o2)).await??;
    }
    let rollups = svc
        .analytics_rollups(&tenant)
        .map_err(|e| anyhow!("{e}"))?
        .len();
    eprintln!("  {rollups} rollup keys");

    // Dashboard reads: the domain call, and the HTTP route (JSON), 90 days by day.
    let today = time::OffsetDateTime::now_utc().date();
    let from = today - time::Duration::days(o.days - 1);
    let q = ReportQuery {
        from: Some(from),
        to: Some(today),
        granularity: aigentable::analytics::tz::Granularity::Day,
        agent_id: None,
        channel_id: None,
    };
    let mut dom = Vec::new();
    for _ in 0..o.reads {
        let t = Instant::now();
        let r = svc
            .analytics_report(&caller, ReportKind::Dashboard, &q)
            .map_err(|e| anyhow!("{e}"))?;
        dom.push(t.elapsed());
        std::hint::black_box(r);
    }
    let url = format!("{base}/api/analytics/dashboard?from={from}&to={today}&granularity=day");
    let mut web = Vec::new();
    let mut messages_seen = 0;
    for _ in 0..o.reads {
        let t = Instant::now();
        let r: serde_json::Value = http
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await?
            .json()
            .await?;
        web.push(t.elapsed());
        messages_seen = ["messagesCustomer", "messagesAi"]
            .iter()
            .map(|k| r["totals"][k].as_i64().unwrap_or(0))
            .sum::<i64>();
    }
    let agent_q = ReportQuery {
        agent_id: Some(agents[0].clone()),
        ..q.clone()
    };
    let mut one_agent = Vec::new();
    for _ in 0..o.reads {
        let t = Instant::now();
        let r = svc
            .analytics_report(&caller, ReportKind::Dashboard, &agent_q)
            .map_err(|e| anyhow!("{e}"))?;
        one_agent.push(t.elapsed());
        std::hint::black_box(r);
    }

    // A turn's commit body (the AI answer, the conversation, the turn event), without and
    // with the analytics hooks; the commit itself (the disk sync) is the same for both and
    // timed separately.
    let conv = svc
        .store
        .read(|tx| tx.list::<Conversation>(&tenant, None, None, 1, true))
        .map_err(|e| anyhow!("{e}"))?
        .items
        .into_iter()
        .next()
        .context("a conversation")?;
    let (mut plain, mut hooked, mut commits) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..o.turns * 2 {
        let with = i % 2 == 1;
        let mut conv = conv.clone();
        let msg = message(
            &tenant,
            &conv.id,
            MessageRole::Ai,
            time::OffsetDateTime::now_utc(),
            0,
        );
        let stats = TurnStats {
            agent_id: conv.agent_id.clone(),
            conversation_id: Some(conv.id.clone()),
            outcome: Outcome::Answered,
            prompt_tokens: 900,
            completion_tokens: 60,
            latency_ms: 850,
            upstream_ms: 700,
            new_conversation: false,
            tool_calls: 0,
            question: None,
        };
        conv.message_count += 1;
        let mut body = Duration::ZERO;
        let t = Instant::now();
        svc.store
            .write(|tx| -> aigentable::domain::Result<()> {
                let b = Instant::now();
                if with {
                    Services::put_message(tx, &conv, &msg)?;
                    Services::put_conversation(tx, &conv)?;
                    svc.put_turn(tx, &caller, &stats)?;
                } else {
                    tx.put(&msg)?;
                    tx.put(&conv)?;
                    tx.put(&AnalyticsEvent {
                        id: AnalyticsEventId::new(),
                        tenant_id: tenant.clone(),
                        kind: "turn".into(),
                        agent_id: Some(conv.agent_id.clone()),
                        conversation_id: Some(conv.id.clone()),
                        data: serde_json::json!({"outcome": "answered", "promptTokens": 900}),
                        created_at: msg.created_at,
                    })?;
                }
                body = b.elapsed();
                Ok(())
            })
            .map_err(|e| anyhow!("{e}"))?;
        let total = t.elapsed();
        if with {
            hooked.push(body);
            commits.push(total.saturating_sub(body));
        } else {
            plain.push(body);
        }
    }

    let (p50p, p50h) = (pct(&mut plain, 0.5), pct(&mut hooked, 0.5));
    println!(
        "analytics benchmark: {} messages over {} days, {rollups} rollup keys",
        o.messages, o.days
    );
    println!("  dashboard totals read back: {messages_seen} customer + AI messages");
    println!(
        "  dashboard, 90 days by day (domain): p50 {:.2} ms, p90 {:.2} ms ({} reads)",
        ms(pct(&mut dom, 0.5)),
        ms(pct(&mut dom, 0.9)),
        o.reads
    );
    println!(
        "  dashboard, 90 days by day (HTTP, JSON): p50 {:.2} ms, p90 {:.2} ms",
        ms(pct(&mut web, 0.5)),
        ms(pct(&mut web, 0.9))
    );
    println!(
        "  dashboard, one agent (domain): p50 {:.2} ms, p90 {:.2} ms",
        ms(pct(&mut one_agent, 0.5)),
        ms(pct(&mut one_agent, 0.9))
    );
    println!(
        "  turn commit body: plain p50 {:.3} ms, with analytics p50 {:.3} ms, overhead p50 {:.3} ms (p90 {:.3} ms with); the commit's disk sync p50 {:.2} ms",
        ms(p50p),
        ms(p50h),
        ms(p50h.saturating_sub(p50p)),
        ms(pct(&mut hooked, 0.9)),
        ms(pct(&mut commits, 0.5))
    );
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    Ok(())
}
