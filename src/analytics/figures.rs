//! The figures a report shows, computed from merged rollups (counts add; percentiles come
//! from the merged histograms). Each report's flat figures are an ordered list of
//! `(name, value)`: the JSON object and the CSV columns are the same list.

use super::Hist;
use super::contrib::{Acc, names::*};
use super::prices::Prices;
use serde_json::{Value, json};

/// Merged rollups of some keys.
#[derive(Debug, Default, Clone)]
pub struct Figures(pub Acc);

/// Ordered figure names and values.
pub type Flat = Vec<(&'static str, Value)>;

fn ratio(a: i64, b: i64) -> Value {
    if b <= 0 {
        Value::Null
    } else {
        json!(a as f64 / b as f64)
    }
}

/// One model's tokens and cost.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelFigures {
    pub model: String,
    pub turns: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_usd: f64,
    /// False when the price table has no price for the model (cost counted as 0).
    pub priced: bool,
}

impl Figures {
    pub fn add(&mut self, a: &Acc) {
        self.0.merge(a);
    }

    pub fn count(&self, name: &str) -> i64 {
        self.0.counts.get(name).copied().unwrap_or(0)
    }

    /// `<prefix>Count`, `<prefix>AvgMs`, `<prefix>P50Ms`, `<prefix>P90Ms` of a histogram.
    fn hist(&self, out: &mut Flat, names: [&'static str; 4], hist: &str) {
        let empty = Default::default();
        let h = self.0.hists.get(hist).unwrap_or(&empty);
        let n: i64 = h.values().sum();
        let sum = self.count(&format!("sum:{hist}"));
        out.push((names[0], json!(n)));
        out.push((
            names[1],
            if n > 0 {
                json!((sum as f64 / n as f64).round() as i64)
            } else {
                Value::Null
            },
        ));
        out.push((names[2], json!(Hist::quantile(h, 0.5))));
        out.push((names[3], json!(Hist::quantile(h, 0.9))));
    }

    /// Tokens and cost per model, most expensive (then most used) first.
    pub fn by_model(&self, prices: &Prices) -> Vec<ModelFigures> {
        let mut out: Vec<ModelFigures> = self
            .0
            .counts
            .iter()
            .filter_map(|(k, turns)| k.strip_prefix(MODEL_TURNS).map(|m| (m, *turns)))
            .map(|(model, turns)| {
                let pin = self.count(&format!("{MODEL_IN}{model}"));
                let pout = self.count(&format!("{MODEL_OUT}{model}"));
                let cost = prices.cost(model, pin, pout);
                ModelFigures {
                    model: model.to_string(),
                    turns,
                    prompt_tokens: pin,
                    completion_tokens: pout,
                    cost_usd: cost.unwrap_or(0.0),
                    priced: cost.is_some(),
                }
            })
            .filter(|m| m.turns != 0 || m.prompt_tokens != 0 || m.completion_tokens != 0)
            .collect();
        out.sort_by(|a, b| {
            b.cost_usd
                .total_cmp(&a.cost_usd)
                .then(b.turns.cmp(&a.turns))
                .then(a.model.cmp(&b.model))
        });
        out
    }

    /// The estimated cost of every model's tokens.
    pub fn cost(&self, prices: &Prices) -> f64 {
        self.by_model(prices).iter().map(|m| m.cost_usd).sum()
    }

    /// The dashboard's figures (see the README, Analytics).
    pub fn dashboard(&self, prices: &Prices) -> Flat {
        let mut o: Flat = vec![
            ("conversationsNew", json!(self.count(CONV_NEW))),
            (
                "conversationsOpen",
                json!(self.count(CONV_NOW_OPEN) + self.count(CONV_NOW_PENDING)),
            ),
            ("conversationsClosed", json!(self.count(CONV_CLOSED))),
            ("aiResolved", json!(self.count(CONV_AI_RESOLVED))),
            ("handedOff", json!(self.count(CONV_HANDED_OFF))),
            ("messagesCustomer", json!(self.count(MSG_CUSTOMER))),
            ("messagesAi", json!(self.count(MSG_AI))),
            ("messagesHuman", json!(self.count(MSG_HUMAN))),
            ("messagesSystem", json!(self.count(MSG_SYSTEM))),
        ];
        self.hist(
            &mut o,
            [
                "firstResponseCount",
                "firstResponseAvgMs",
                "firstResponseP50Ms",
                "firstResponseP90Ms",
            ],
            H_FIRST_RESPONSE,
        );
        self.hist(
            &mut o,
            [
                "resolutionCount",
                "resolutionAvgMs",
                "resolutionP50Ms",
                "resolutionP90Ms",
            ],
            H_RESOLUTION,
        );
        let csat = self.count(CSAT_COUNT);
        o.push(("csatCount", json!(csat)));
        o.push(("csatAverage", ratio(self.count(CSAT_SUM), csat)));
        o.push(("promptTokens", json!(self.count(TOK_IN))));
        o.push(("completionTokens", json!(self.count(TOK_OUT))));
        o.push(("costUsd", json!(self.cost(prices))));
        o
    }

    /// An agent's figures: the dashboard's plus its turns.
    pub fn agent(&self, prices: &Prices) -> Flat {
        let mut o = self.dashboard(prices);
        let turns = self.count(TURNS);
        o.push(("turns", json!(turns)));
        o.push(("answered", json!(self.count(TURN_ANSWERED))));
        o.push(("fallbacks", json!(self.count(TURN_FALLBACK))));
        o.push(("fallbackRate", ratio(self.count(TURN_FALLBACK), turns)));
        o.push(("handoffs", json!(self.count(TURN_HANDOFF))));
        o.push(("upstreamErrors", json!(self.count(TURN_FAILED))));
        o.push(("toolCalls", json!(self.count(TURN_TOOLS))));
        self.hist(
            &mut o,
            [
                "answerLatencyCount",
                "answerLatencyAvgMs",
                "answerLatencyP50Ms",
                "answerLatencyP90Ms",
            ],
            H_LATENCY,
        );
        o
    }

    /// Conversation volume, outcomes and durations.
    pub fn conversations(&self) -> Flat {
        let new = self.count(CONV_NEW);
        let mut o: Flat = vec![
            ("conversationsNew", json!(new)),
            ("conversationsClosed", json!(self.count(CONV_CLOSED))),
            ("reopened", json!(self.count(CONV_REOPENED))),
            ("reopenRate", ratio(self.count(CONV_REOPENED), new)),
            ("aiResolved", json!(self.count(CONV_AI_RESOLVED))),
            ("handedOff", json!(self.count(CONV_HANDED_OFF))),
        ];
        self.hist(
            &mut o,
            [
                "durationCount",
                "durationAvgMs",
                "durationP50Ms",
                "durationP90Ms",
            ],
            H_RESOLUTION,
        );
        o
    }

    /// Status now of the conversations counted.
    pub fn by_status(&self) -> Value {
        json!({
            "open": self.count(CONV_NOW_OPEN),
            "pendingHuman": self.count(CONV_NOW_PENDING),
            "closed": self.count(CONV_NOW_CLOSED),
        })
    }

    /// A channel's volume and delivery.
    pub fn channel(&self) -> Flat {
        let out = self.count(OUT_TOTAL);
        vec![
            ("conversationsNew", json!(self.count(CONV_NEW))),
            ("messagesCustomer", json!(self.count(MSG_CUSTOMER))),
            ("messagesOutbound", json!(out)),
            ("delivered", json!(self.count(OUT_DELIVERED))),
            ("read", json!(self.count(OUT_READ))),
            ("failed", json!(self.count(OUT_FAILED))),
            ("deliveredRate", ratio(self.count(OUT_DELIVERED), out)),
            ("readRate", ratio(self.count(OUT_READ), out)),
            ("failedRate", ratio(self.count(OUT_FAILED), out)),
            ("deadLetters", json!(self.count(INBOUND_DEAD))),
            ("webhookErrors", json!(self.count(INBOUND_ERROR))),
        ]
    }
}

/// A flat list as a JSON object, after `lead` (e.g. `start`, `label`).
pub fn object(lead: Vec<(&str, Value)>, flat: &Flat) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in lead {
        m.insert(k.to_string(), v);
    }
    for (k, v) in flat {
        m.insert(k.to_string(), v.clone());
    }
    Value::Object(m)
}
