//! Analytics end to end: a scripted set of conversations on a pinned clock (no sleeps),
//! the expected figures computed here from the script, and every route compared with
//! them: dashboard, agents, conversations, channels, knowledge gaps; CSV equals JSON; the
//! tenant's time zone moves days; a foreign tenant's figures are never visible; the
//! rebuilt rollups equal the incremental ones.

use crate::common::*;
use crate::engine::{ai_tenant, new_conversation, say};
use crate::fake_openai::{FakeOpenAi, Reply};
use aigentable::analytics::Hist;
use reqwest::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::datetime;

const SITE: &str = "https://shop.example.com";
const FALLBACK: &str = "Sorry, I can't help with that.";

/// What the script did to one conversation, as its figures see it.
#[derive(Clone, Debug)]
struct ExpConv {
    agent: String,
    channel: Option<String>,
    created: OffsetDateTime,
    open_now: bool,
    closed: Option<OffsetDateTime>,
    handed: Option<OffsetDateTime>,
    /// (first customer message, first reply)
    frt: Option<(OffsetDateTime, OffsetDateTime)>,
    reopens: i64,
    rating: Option<(i64, OffsetDateTime)>,
}

#[derive(Clone, Debug)]
struct ExpMsg {
    agent: String,
    channel: Option<String>,
    role: &'static str,
    at: OffsetDateTime,
}

#[derive(Clone, Debug)]
struct ExpTurn {
    agent: String,
    at: OffsetDateTime,
    outcome: &'static str,
    prompt: i64,
    completion: i64,
}

#[derive(Default)]
struct Script {
    convs: Vec<ExpConv>,
    msgs: Vec<ExpMsg>,
    turns: Vec<ExpTurn>,
}

/// Which records a report counts: an agent's, a channel's or all.
#[derive(Clone, Copy)]
enum Filter<'a> {
    All,
    Agent(&'a str),
    Channel(&'a str),
}

impl Filter<'_> {
    fn keeps(&self, agent: &str, channel: Option<&str>) -> bool {
        match self {
            Filter::All => true,
            Filter::Agent(a) => agent == *a,
            Filter::Channel(c) => channel == Some(*c),
        }
    }
}

fn within(t: OffsetDateTime, r: (OffsetDateTime, OffsetDateTime)) -> bool {
    t >= r.0 && t < r.1
}

fn ms(a: OffsetDateTime, b: OffsetDateTime) -> u64 {
    (b - a).whole_milliseconds() as u64
}

/// (count, avg, p50, p90) of samples as the histogram reports them.
fn dist(mut v: Vec<u64>) -> (i64, Value, Value, Value) {
    v.sort();
    let n = v.len();
    if n == 0 {
        return (0, Value::Null, Value::Null, Value::Null);
    }
    let avg = (v.iter().sum::<u64>() as f64 / n as f64).round() as i64;
    let rank = |q: f64| ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
    (
        n as i64,
        json!(avg),
        json!(Hist::quantize(v[rank(0.5)])),
        json!(Hist::quantize(v[rank(0.9)])),
    )
}

fn ratio(a: i64, b: i64) -> Value {
    if b == 0 {
        Value::Null
    } else {
        json!(a as f64 / b as f64)
    }
}

impl Script {
    fn convs<'a>(&'a self, f: Filter<'a>) -> impl Iterator<Item = &'a ExpConv> + 'a {
        self.convs
            .iter()
            .filter(move |c| f.keeps(&c.agent, c.channel.as_deref()))
    }

    /// The dashboard's figures over `r`, computed from the script.
    fn dashboard(
        &self,
        f: Filter,
        r: (OffsetDateTime, OffsetDateTime),
        price: (f64, f64),
    ) -> Value {
        let started = self.convs(f).filter(|c| within(c.created, r));
        let closed: Vec<&ExpConv> = self
            .convs(f)
            .filter(|c| c.closed.is_some_and(|t| within(t, r)))
            .collect();
        let msgs = |role: &str| {
            self.msgs
                .iter()
                .filter(|m| f.keeps(&m.agent, m.channel.as_deref()) && m.role == role)
                .filter(|m| within(m.at, r))
                .count()
        };
        let frt = dist(
            self.convs(f)
                .filter_map(|c| c.frt)
                .filter(|(_, b)| within(*b, r))
                .map(|(a, b)| ms(a, b))
                .collect(),
        );
        let res = dist(
            closed
                .iter()
                .map(|c| ms(c.created, c.closed.expect("closed")))
                .collect(),
        );
        let ratings: Vec<i64> = self
            .convs(f)
            .filter_map(|c| c.rating)
            .filter(|(_, t)| within(*t, r))
            .map(|(s, _)| s)
            .collect();
        let turns: Vec<&ExpTurn> = self
            .turns
            .iter()
            .filter(|t| f.keeps(&t.agent, None) && within(t.at, r))
            .collect();
        let (pin, pout): (i64, i64) = (
            turns.iter().map(|t| t.prompt).sum(),
            turns.iter().map(|t| t.completion).sum(),
        );
        let started: Vec<&ExpConv> = started.collect();
        json!({
            "conversationsNew": started.len(),
            "conversationsOpen": started.iter().filter(|c| c.open_now).count(),
            "conversationsClosed": closed.len(),
            "aiResolved": closed.iter().filter(|c| c.handed.is_none()).count(),
            "handedOff": self.convs(f).filter(|c| c.handed.is_some_and(|t| within(t, r))).count(),
            "messagesCustomer": msgs("customer"),
            "messagesAi": msgs("ai"),
            "messagesHuman": msgs("human"),
            "messagesSystem": msgs("system"),
            "firstResponseCount": frt.0, "firstResponseAvgMs": frt.1,
            "firstResponseP50Ms": frt.2, "firstResponseP90Ms": frt.3,
            "resolutionCount": res.0, "resolutionAvgMs": res.1,
            "resolutionP50Ms": res.2, "resolutionP90Ms": res.3,
            "csatCount": ratings.len(),
            "csatAverage": ratio(ratings.iter().sum(), ratings.len() as i64),
            "promptTokens": pin,
            "completionTokens": pout,
            "costUsd": (pin as f64 * price.0 + pout as f64 * price.1) / 1e6,
        })
    }

    /// An agent's turn figures over `r`.
    fn agent_turns(&self, agent: &str, r: (OffsetDateTime, OffsetDateTime)) -> Value {
        let turns: Vec<&ExpTurn> = self
            .turns
            .iter()
            .filter(|t| t.agent == agent && within(t.at, r))
            .collect();
        let n = |o: &str| turns.iter().filter(|t| t.outcome == o).count() as i64;
        json!({
            "turns": turns.len(),
            "answered": n("answered"),
            "fallbacks": n("fallback"),
            "fallbackRate": ratio(n("fallback"), turns.len() as i64),
            "handoffs": n("handoff"),
            "upstreamErrors": n("failed"),
            "toolCalls": 0,
            "answerLatencyCount": turns.len() as i64 - n("failed"),
        })
    }

    fn conversations(&self, f: Filter, r: (OffsetDateTime, OffsetDateTime)) -> Value {
        let started: Vec<&ExpConv> = self.convs(f).filter(|c| within(c.created, r)).collect();
        let closed: Vec<&ExpConv> = self
            .convs(f)
            .filter(|c| c.closed.is_some_and(|t| within(t, r)))
            .collect();
        let reopened: i64 = started.iter().map(|c| c.reopens).sum();
        let d = dist(
            closed
                .iter()
                .map(|c| ms(c.created, c.closed.expect("closed")))
                .collect(),
        );
        json!({
            "conversationsNew": started.len(),
            "conversationsClosed": closed.len(),
            "reopened": reopened,
            "reopenRate": ratio(reopened, started.len() as i64),
            "aiResolved": closed.iter().filter(|c| c.handed.is_none()).count(),
            "handedOff": self.convs(f).filter(|c| c.handed.is_some_and(|t| within(t, r))).count(),
            "durationCount": d.0, "durationAvgMs": d.1, "durationP50Ms": d.2, "durationP90Ms": d.3,
        })
    }
}

/// Every key of `expected` has that value in `actual` (floats within a rounding error).
#[track_caller]
fn assert_figures(actual: &Value, expected: &Value, what: &str) {
    for (k, e) in expected.as_object().expect("object") {
        let a = &actual[k];
        match (a.as_f64(), e.as_f64()) {
            (Some(x), Some(y)) if e.is_f64() || a.is_f64() => {
                assert!((x - y).abs() < 1e-9, "{what}: {k} = {a}, expected {e}")
            }
            _ => assert_eq!(a, e, "{what}: {k}"),
        }
    }
}

/// The CSV of a report, as rows of cells (header first).
async fn csv(s: &Server, token: &str, path: &str) -> Vec<Vec<String>> {
    let r = send(
        s.http
            .get(format!("{}{path}&format=csv", s.base))
            .bearer_auth(token),
    )
    .await;
    r.expect(200);
    assert!(
        r.headers[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap_or("")
            .starts_with("text/csv"),
        "{:?}",
        r.headers
    );
    r.text
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The CSV's data rows are the JSON's series entries, column by column.
#[track_caller]
fn assert_csv_matches(rows: &[Vec<String>], series: &[Value], what: &str) {
    let header = &rows[0];
    assert!(rows.len() > series.len(), "{what}: {rows:?}");
    for (row, entry) in rows[1..].iter().zip(series) {
        for (col, name) in header.iter().enumerate() {
            assert_eq!(row[col], cell(&entry[name]), "{what}: column {name}");
        }
    }
}

async fn widget_post(s: &Server, path: &str, token: Option<&str>, body: Value) -> Resp {
    let mut rb = s
        .http
        .request(Method::POST, format!("{}{path}", s.base))
        .header("Origin", SITE)
        .json(&body);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    send(rb).await
}

/// A widget visitor's first message; returns (visitor token, conversation id).
async fn visitor_says(s: &Server, key: &str, text: &str) -> (String, String) {
    let r = widget_post(s, &format!("/api/widget/{key}/visitors"), None, json!({})).await;
    r.expect(201);
    let tok = r.body["visitorToken"].as_str().expect("token").to_string();
    let r = widget_post(
        s,
        &format!("/api/widget/{key}/messages"),
        Some(&tok),
        json!({"content": text}),
    )
    .await;
    r.expect(201);
    let conv = r.body["conversation"]["id"]
        .as_str()
        .expect("conv")
        .to_string();
    (tok, conv)
}

async fn human_says(s: &Server, token: &str, cid: &str, text: &str) {
    s.post(
        &format!("/api/conversations/{cid}/messages"),
        Some(token),
        json!({"content": text, "role": "human"}),
    )
    .await
    .expect(201);
}

async fn close(s: &Server, token: &str, cid: &str) {
    s.put(&format!("/api/conversations/{cid}/close"), token, json!({}))
        .await
        .expect(200);
}

fn usage(r: &Resp) -> (i64, i64) {
    let u = &r.body["reply"]["usage"];
    (
        u["promptTokens"].as_i64().unwrap_or(0),
        u["completionTokens"].as_i64().unwrap_or(0),
    )
}

#[tokio::test]
async fn every_report_matches_the_scripted_conversations() {
    let fake = FakeOpenAi::start().await;
    let s = start_with(|c| c.analytics_prices = "fake-model=1.5:6".into()).await;
    let price = (1.5, 6.0);
    let a = ai_tenant(&s, "owner@analytics.test", &fake).await;
    let agent = |name: &str, extra: Value| {
        let mut body = json!({"name": name});
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        crate::common::create_agent(&s, &a, body)
    };
    let x = id(&agent("Xavier", json!({"fallbackMessage": FALLBACK})).await);
    let y = id(&agent("Yara", json!({})).await);
    let z = id(&agent("Zed", json!({"status": "inactive"})).await);
    let ch = s
        .post(
            "/api/channels",
            Some(&a.token),
            json!({"type": "web", "name": "Website", "agentId": z,
                   "settings": {"allowedOrigins": [SITE]}}),
        )
        .await;
    ch.expect(201);
    let w = id(&ch.body);
    let key = ch.body["settings"]["widgetKey"]
        .as_str()
        .expect("key")
        .to_string();

    let mut sc = Script::default();
    let at = |t: OffsetDateTime| {
        s.clock.pin(t);
        t
    };
    let conv = |agent: &str, channel: Option<&str>, created| ExpConv {
        agent: agent.into(),
        channel: channel.map(str::to_string),
        created,
        open_now: false,
        closed: None,
        handed: None,
        frt: None,
        reopens: 0,
        rating: None,
    };
    let msg = |agent: &str, channel: Option<&str>, role, at| ExpMsg {
        agent: agent.into(),
        channel: channel.map(str::to_string),
        role,
        at,
    };

    // Day 1 (2026-03-02). C1: answered by the AI, closed half an hour later.
    let t = at(datetime!(2026-03-02 09:00 UTC));
    let c1 = new_conversation(&s, &a.token, &x).await;
    fake.push(Reply::text("We open at nine."));
    let r = say(&s, &a.token, &c1, "When do you open?").await;
    assert_eq!(r.body["reply"]["status"], "sent", "{}", r.text);
    let u = usage(&r);
    sc.turns.push(ExpTurn {
        agent: x.clone(),
        at: t,
        outcome: "answered",
        prompt: u.0,
        completion: u.1,
    });
    sc.msgs.push(msg(&x, None, "customer", t));
    sc.msgs.push(msg(&x, None, "ai", t));
    let mut e1 = conv(&x, None, t);
    e1.frt = Some((t, t));
    at(datetime!(2026-03-02 09:30 UTC));
    close(&s, &a.token, &c1).await;

    // C2: the AI falls back; a person answers two minutes later and it is closed at 11.
    let t = at(datetime!(2026-03-02 10:00 UTC));
    let c2 = new_conversation(&s, &a.token, &x).await;
    fake.push(Reply::text(FALLBACK));
    let r = say(&s, &a.token, &c2, "Do you ship to Spain?").await;
    let u = usage(&r);
    sc.turns.push(ExpTurn {
        agent: x.clone(),
        at: t,
        outcome: "fallback",
        prompt: u.0,
        completion: u.1,
    });
    sc.msgs.push(msg(&x, None, "customer", t));
    sc.msgs.push(msg(&x, None, "ai", t));
    let mut e2 = conv(&x, None, t);
    e2.frt = Some((t, t));
    let t = at(datetime!(2026-03-02 10:02 UTC));
    human_says(&s, &a.token, &c2, "We do, in three days.").await;
    sc.msgs.push(msg(&x, None, "human", t));
    e2.handed = Some(t);
    let t = at(datetime!(2026-03-02 11:00 UTC));
    close(&s, &a.token, &c2).await;
    e2.closed = Some(t);
    sc.convs.push(e2);

    // Day 2 (2026-03-03). C3: taken by a person before the customer writes; answered in 90 s.
    let t = at(datetime!(2026-03-03 14:00 UTC));
    let c3 = new_conversation(&s, &a.token, &y).await;
    s.put(
        &format!("/api/conversations/{c3}/assign"),
        &a.token,
        json!({"userId": a.user_id}),
    )
    .await
    .expect(200);
    sc.msgs.push(msg(&y, None, "system", t));
    let r = say(&s, &a.token, &c3, "Can you ship to Spain?").await;
    assert!(r.body["reply"].is_null(), "{}", r.text);
    sc.msgs.push(msg(&y, None, "customer", t));
    let t2 = at(datetime!(2026-03-03 14:01:30 UTC));
    human_says(&s, &a.token, &c3, "Yes we can.").await;
    sc.msgs.push(msg(&y, None, "human", t2));
    let mut e3 = conv(&y, None, t);
    e3.handed = Some(t);
    e3.frt = Some((t, t2));
    e3.open_now = true;
    sc.convs.push(e3);

    // C4: the model provider fails.
    let t = at(datetime!(2026-03-03 15:00 UTC));
    let c4 = new_conversation(&s, &a.token, &y).await;
    fake.push(Reply::error(400, "bad request"));
    let r = say(&s, &a.token, &c4, "Hello?").await;
    assert_eq!(r.body["reply"]["status"], "failed", "{}", r.text);
    let u = usage(&r);
    sc.turns.push(ExpTurn {
        agent: y.clone(),
        at: t,
        outcome: "failed",
        prompt: u.0,
        completion: u.1,
    });
    sc.msgs.push(msg(&y, None, "customer", t));
    sc.msgs.push(msg(&y, None, "ai", t));
    let mut e4 = conv(&y, None, t);
    e4.open_now = true;
    sc.convs.push(e4);

    // C1 again: the customer reopens it, the AI answers, it is closed again.
    let t = at(datetime!(2026-03-03 16:00 UTC));
    fake.push(Reply::text("No, we are closed on Sundays."));
    let r = say(&s, &a.token, &c1, "Are you open on Sunday?").await;
    let u = usage(&r);
    sc.turns.push(ExpTurn {
        agent: x.clone(),
        at: t,
        outcome: "answered",
        prompt: u.0,
        completion: u.1,
    });
    sc.msgs.push(msg(&x, None, "customer", t));
    sc.msgs.push(msg(&x, None, "ai", t));
    e1.reopens = 1;
    let t = at(datetime!(2026-03-03 16:10 UTC));
    close(&s, &a.token, &c1).await;
    e1.closed = Some(t);
    sc.convs.push(e1);

    // Website widget (agent Zed answers nothing by itself). C5: a person answers in five
    // minutes, closed, rated 4. C6: closed unanswered, rated 2.
    let t = at(datetime!(2026-03-03 17:00 UTC));
    let (tok5, c5) = visitor_says(&s, &key, "Hello").await;
    sc.msgs.push(msg(&z, Some(&w), "customer", t));
    let t2 = at(datetime!(2026-03-03 17:05 UTC));
    human_says(&s, &a.token, &c5, "Hi, how can I help?").await;
    sc.msgs.push(msg(&z, Some(&w), "human", t2));
    let t3 = at(datetime!(2026-03-03 17:20 UTC));
    close(&s, &a.token, &c5).await;
    let t4 = at(datetime!(2026-03-03 17:21 UTC));
    widget_post(
        &s,
        &format!("/api/widget/{key}/conversations/{c5}/rating"),
        Some(&tok5),
        json!({"rating": 4}),
    )
    .await
    .expect(200);
    let mut e5 = conv(&z, Some(&w), t);
    e5.handed = Some(t2);
    e5.frt = Some((t, t2));
    e5.closed = Some(t3);
    e5.rating = Some((4, t4));
    sc.convs.push(e5);
    let t = at(datetime!(2026-03-03 18:00 UTC));
    let (tok6, c6) = visitor_says(&s, &key, "Hi there").await;
    sc.msgs.push(msg(&z, Some(&w), "customer", t));
    let t3 = at(datetime!(2026-03-03 18:30 UTC));
    close(&s, &a.token, &c6).await;
    let t4 = at(datetime!(2026-03-03 18:31 UTC));
    widget_post(
        &s,
        &format!("/api/widget/{key}/conversations/{c6}/rating"),
        Some(&tok6),
        json!({"rating": 2}),
    )
    .await
    .expect(200);
    let mut e6 = conv(&z, Some(&w), t);
    e6.closed = Some(t3);
    e6.rating = Some((2, t4));
    sc.convs.push(e6);

    // Another tenant's conversation the same day: never in this tenant's figures.
    let b = s.register("other@analytics.test", "Other").await;
    let bz = id(
        &crate::common::create_agent(&s, &b, json!({"name": "Bee", "status": "inactive"})).await,
    );
    let bc = new_conversation(&s, &b.token, &bz).await;
    say(&s, &b.token, &bc, "Foreign question").await;

    at(datetime!(2026-03-04 12:00 UTC));
    let day1 = (
        datetime!(2026-03-02 00:00 UTC),
        datetime!(2026-03-03 00:00 UTC),
    );
    let day2 = (
        datetime!(2026-03-03 00:00 UTC),
        datetime!(2026-03-04 00:00 UTC),
    );
    let both = (day1.0, day2.1);
    let q = "from=2026-03-02&to=2026-03-03&granularity=day";

    // Dashboard: totals and each day, all and per filter.
    for (f, param) in [
        (Filter::All, String::new()),
        (Filter::Agent(&x), format!("&agentId={x}")),
        (Filter::Agent(&y), format!("&agentId={y}")),
        (Filter::Channel(&w), format!("&channelId={w}")),
    ] {
        let path = format!("/api/analytics/dashboard?{q}{param}");
        let r = s.get(&path, &a.token).await;
        r.expect(200);
        assert_figures(&r.body["totals"], &sc.dashboard(f, both, price), &path);
        let series = r.body["series"].as_array().expect("series");
        assert_eq!(series.len(), 2, "{}", r.text);
        assert_eq!(series[0]["label"], "2026-03-02");
        assert_figures(
            &series[0],
            &sc.dashboard(f, day1, price),
            &format!("{path} day 1"),
        );
        assert_figures(
            &series[1],
            &sc.dashboard(f, day2, price),
            &format!("{path} day 2"),
        );
        let rows = csv(&s, &a.token, &path).await;
        assert_csv_matches(&rows, series, &path);
        let total = rows.last().expect("total row");
        assert_eq!(total[0], "total");
    }
    let r = s
        .get(&format!("/api/analytics/dashboard?{q}"), &a.token)
        .await;
    let by_model = &r.body["byModel"][0];
    assert_eq!(by_model["model"], "fake-model", "{}", r.text);
    assert_eq!(by_model["turns"], 4);
    assert_eq!(by_model["priced"], true);
    let hours = r.body["busiestHours"].as_array().expect("hours");
    assert_eq!(hours.len(), 24);
    for h in hours {
        let hour = h["hour"].as_u64().expect("hour") as u8;
        let expected = sc
            .msgs
            .iter()
            .filter(|m| m.role == "customer" && m.at.hour() == hour)
            .count();
        assert_eq!(h["customerMessages"], expected, "hour {hour}");
    }

    // Agents: every agent, the dashboard figures of each plus its turns.
    let path = format!("/api/analytics/agents?{q}");
    let r = s.get(&path, &a.token).await;
    r.expect(200);
    let agents = r.body["agents"].as_array().expect("agents");
    assert_eq!(
        agents
            .iter()
            .map(|a| a["name"].as_str().unwrap_or(""))
            .collect::<Vec<_>>(),
        ["Xavier", "Yara", "Zed"]
    );
    for (ag, entry) in [(&x, &agents[0]), (&y, &agents[1]), (&z, &agents[2])] {
        assert_eq!(entry["agentId"], json!(ag));
        assert_figures(
            entry,
            &sc.dashboard(Filter::Agent(ag), both, price),
            "agents",
        );
        assert_figures(entry, &sc.agent_turns(ag, both), "agent turns");
    }
    let series = r.body["series"].as_array().expect("series");
    assert_eq!(series.len(), 6);
    assert_figures(&series[1], &sc.agent_turns(&x, day2), "Xavier day 2");
    assert_csv_matches(&csv(&s, &a.token, &path).await, series, &path);

    // Conversations: volume, status now, channels, reopen rate, durations.
    let path = format!("/api/analytics/conversations?{q}");
    let r = s.get(&path, &a.token).await;
    r.expect(200);
    assert_figures(
        &r.body["totals"],
        &sc.conversations(Filter::All, both),
        &path,
    );
    let series = r.body["series"].as_array().expect("series");
    assert_figures(
        &series[0],
        &sc.conversations(Filter::All, day1),
        "conversations day 1",
    );
    assert_figures(
        &series[1],
        &sc.conversations(Filter::All, day2),
        "conversations day 2",
    );
    assert_eq!(
        r.body["byStatus"],
        json!({"open": 2, "pendingHuman": 0, "closed": 4}),
        "{}",
        r.text
    );
    let by_channel = r.body["byChannel"].as_array().expect("byChannel");
    assert_eq!(by_channel[0]["channelId"], json!(w));
    assert_eq!(by_channel[0]["conversations"], 2);
    assert_eq!(by_channel[1]["channelId"], Value::Null);
    assert_eq!(by_channel[1]["conversations"], 4);
    assert_csv_matches(&csv(&s, &a.token, &path).await, series, &path);

    // Channels: the website's volume and replies.
    let path = format!("/api/analytics/channels?{q}");
    let r = s.get(&path, &a.token).await;
    r.expect(200);
    let web = &r.body["channels"][0];
    assert_eq!(web["channelId"], json!(w));
    assert_eq!(web["kind"], "web");
    assert_figures(
        web,
        &json!({"conversationsNew": 2, "messagesCustomer": 2, "messagesOutbound": 1,
                "failed": 0, "failedRate": 0.0, "deadLetters": 0, "webhookErrors": 0}),
        &path,
    );
    assert_csv_matches(
        &csv(&s, &a.token, &path).await,
        r.body["series"].as_array().expect("series"),
        &path,
    );

    // Knowledge gaps: the fallback question.
    let r = s
        .get(
            "/api/analytics/knowledge-gaps?from=2026-03-02&to=2026-03-03",
            &a.token,
        )
        .await;
    r.expect(200);
    let groups = r.body["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 1, "{}", r.text);
    assert_eq!(groups[0]["question"], "do you ship to spain");
    assert_eq!(groups[0]["fallbacks"], 1);
    assert_eq!(groups[0]["examples"][0]["conversationId"], json!(c2));

    // Hours: day 2 at 14:00 UTC is one bucket with C3's start.
    let r = s
        .get(
            "/api/analytics/dashboard?from=2026-03-03&to=2026-03-03&granularity=hour",
            &a.token,
        )
        .await;
    r.expect(200);
    let series = r.body["series"].as_array().expect("series");
    assert_eq!(series.len(), 24);
    assert_eq!(series[14]["label"], "2026-03-03T14");
    assert_eq!(series[14]["conversationsNew"], 1);

    // The tenant's time zone moves days: at +10:00, 14:00 UTC on day 2 is day 3 locally.
    s.put(
        &format!("/api/tenants/{}", a.tenant_id),
        &a.token,
        json!({"settings": {"timeZone": "+10:00"}}),
    )
    .await
    .expect(200);
    let r = s
        .get(
            "/api/analytics/conversations?from=2026-03-02&to=2026-03-04",
            &a.token,
        )
        .await;
    r.expect(200);
    assert_eq!(r.body["range"]["timeZone"], "+10:00");
    let news: Vec<i64> = r.body["series"]
        .as_array()
        .expect("series")
        .iter()
        .map(|e| e["conversationsNew"].as_i64().unwrap_or(-1))
        .collect();
    // Local days: C1 19:00 and C2 20:00 on day 1; C3 (00:00), C4, C5, C6 on 2026-03-04.
    assert_eq!(news, [2, 0, 4], "{}", r.text);
    s.put(
        &format!("/api/tenants/{}", a.tenant_id),
        &a.token,
        json!({"settings": {}}),
    )
    .await
    .expect(200);

    // Another tenant: its own figures only, and ours are not found.
    let r = s
        .get(&format!("/api/analytics/dashboard?{q}"), &b.token)
        .await;
    r.expect(200);
    assert_eq!(r.body["totals"]["conversationsNew"], 1, "{}", r.text);
    assert_eq!(r.body["totals"]["messagesCustomer"], 1);
    s.get(&format!("/api/analytics/agents?{q}&agentId={x}"), &b.token)
        .await
        .expect_err(404, "agent_not_found");
    s.get(
        &format!("/api/analytics/channels?{q}&channelId={w}"),
        &b.token,
    )
    .await
    .expect_err(404, "channel_not_found");
    s.get(
        &format!("/api/analytics/dashboard?{q}&tenantId={}", a.tenant_id),
        &b.token,
    )
    .await
    .expect_err(403, "forbidden");

    // The platform admin: one tenant with tenantId, every tenant added up without.
    let root = s.root().await;
    let r = s
        .get(
            &format!("/api/analytics/dashboard?{q}&tenantId={}", a.tenant_id),
            &root.token,
        )
        .await;
    r.expect(200);
    assert_figures(
        &r.body["totals"],
        &sc.dashboard(Filter::All, both, price),
        "admin",
    );
    let r = s
        .get(&format!("/api/analytics/dashboard?{q}"), &root.token)
        .await;
    r.expect(200);
    assert_eq!(r.body["totals"]["conversationsNew"], 7, "{}", r.text);
    assert!(r.body["tenants"].as_array().is_some_and(|t| t.len() >= 2));

    // Bad queries.
    for bad in [
        "from=2026-13-01",
        "granularity=minute",
        "from=2026-03-05&to=2026-03-01",
        "from=2020-01-01&to=2026-01-01&granularity=hour",
        "format=xml",
    ] {
        s.get(&format!("/api/analytics/dashboard?{bad}"), &a.token)
            .await
            .expect_err(400, "invalid_query");
    }
    s.get("/api/analytics/dashboard?agentId=nope", &a.token)
        .await
        .expect_err(400, "invalid_id");

    // Rebuilt from the stored records, the rollups are what the writes kept.
    let tenant = aigentable::types::TenantId::parse(&a.tenant_id).expect("tenant id");
    let incremental = s.svc.analytics_rollups(&tenant).expect("rollups");
    assert!(!incremental.is_empty());
    s.svc.rebuild_tenant_analytics(&tenant).expect("rebuild");
    let rebuilt = s.svc.analytics_rollups(&tenant).expect("rollups");
    assert_eq!(rebuilt, incremental);
}

/// With the tenant's embedding model, knowledge gaps asked in different words but meaning
/// the same are one group; an unrelated question stays apart. Without a model the same
/// questions are three groups (grouped by wording).
#[tokio::test]
async fn knowledge_gaps_are_grouped_by_meaning_with_the_embedding_model() {
    let Some((model, ort)) = crate::test_model::model_and_runtime(
        "analytics::knowledge_gaps_are_grouped_by_meaning_with_the_embedding_model",
    ) else {
        return;
    };
    let questions = [
        "How long does delivery to Spain take?",
        "What is the delivery time for orders to Spain?",
        "Can I pay with bitcoin?",
    ];
    for with_model in [true, false] {
        let (model, ort) = (model.clone(), ort.clone());
        let s = start_with(move |c| {
            if with_model {
                c.embeddings_provider = Some("onnx".into());
                c.embeddings_model_dir = Some(model);
                c.ort_dylib_path = Some(ort);
            } else {
                c.embeddings_provider = Some("none".into());
            }
        })
        .await;
        let a = s.register("gaps@x.test", "Shop").await;
        // No documents and no model provider: every question gets the fallback.
        let agent = create_agent(&s, &a, json!({"name": "Bot", "fallbackMessage": FALLBACK})).await;
        for q in questions {
            let c = s
                .post(
                    "/api/conversations",
                    Some(&a.token),
                    json!({"agentId": id(&agent)}),
                )
                .await;
            c.expect(201);
            let r = s
                .post(
                    &format!("/api/conversations/{}/messages", id(&c.body)),
                    Some(&a.token),
                    json!({"content": q, "role": "customer"}),
                )
                .await;
            r.expect(201);
            assert_eq!(r.body["reply"]["content"], FALLBACK, "{}", r.text);
        }
        let r = s.get("/api/analytics/knowledge-gaps", &a.token).await;
        r.expect(200);
        let groups = r.body["groups"].as_array().expect("groups");
        let counts: Vec<u64> = groups
            .iter()
            .map(|g| g["count"].as_u64().unwrap())
            .collect();
        if with_model {
            assert_eq!(r.body["grouping"], "embeddings", "{}", r.text);
            assert_eq!(counts, [2, 1], "{}", r.text);
            let examples: Vec<&str> = groups[0]["examples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["question"].as_str().unwrap())
                .collect();
            assert!(
                examples.contains(&questions[0]) && examples.contains(&questions[1]),
                "{examples:?}"
            );
            assert_eq!(groups[1]["examples"][0]["question"], questions[2]);
        } else {
            assert_eq!(r.body["grouping"], "terms", "{}", r.text);
            assert_eq!(counts, [1, 1, 1], "{}", r.text);
        }
        s.stop().await;
    }
}
