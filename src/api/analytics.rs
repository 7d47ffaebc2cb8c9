//! /api/analytics: the dashboard, agents, conversations and channels reports and the
//! knowledge gaps, as JSON or CSV (`format=csv`). Any signed-in tenant user reads their
//! tenant; a platform admin reads one tenant (`tenantId` or `X-Tenant-Id`) or, with
//! neither, the platform totals. The figures come from the rollups (domain/analytics.rs).

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Auth, Query};
use crate::analytics::tz::Granularity;
use crate::auth::Caller;
use crate::domain::analytics::{Report, ReportKind, ReportQuery};
use crate::types::{AgentId, ChannelId, TenantId};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

/// The query of every analytics report.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct AnalyticsParams {
    /// First day, `YYYY-MM-DD` in the tenant's time zone (default: 29 days before `to`).
    pub from: Option<String>,
    /// Last day (inclusive), `YYYY-MM-DD` (default: today).
    pub to: Option<String>,
    /// `hour`, `day` (default), `week` or `month`.
    pub granularity: Option<String>,
    /// Only this agent's figures.
    pub agent_id: Option<String>,
    /// Only this channel's figures.
    pub channel_id: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
    /// Platform admins: this tenant's figures (without it: the platform totals).
    pub tenant_id: Option<String>,
}

/// The query of the knowledge-gaps report.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct GapParams {
    /// First day, `YYYY-MM-DD` in the tenant's time zone (default: 29 days before `to`).
    pub from: Option<String>,
    /// Last day (inclusive), `YYYY-MM-DD` (default: today).
    pub to: Option<String>,
    /// Only this agent's questions.
    pub agent_id: Option<String>,
    /// Most groups, 1-200 (default 50).
    pub limit: Option<String>,
    /// Platform admins: the tenant.
    pub tenant_id: Option<String>,
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", msg.into())
}

fn date(name: &str, v: Option<&str>) -> Result<Option<time::Date>, ApiError> {
    let Some(v) = v.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let f = time::macros::format_description!("[year]-[month]-[day]");
    // Years far from now only reach date arithmetic's edges: refused, not computed.
    time::Date::parse(v, &f)
        .ok()
        .filter(|d| (1970..=9000).contains(&d.year()))
        .map(Some)
        .ok_or_else(|| {
            bad(format!(
                "{name} must be a date YYYY-MM-DD (years 1970-9000)"
            ))
        })
}

fn id<T>(name: &str, v: Option<&str>, parse: fn(&str) -> Option<T>) -> Result<Option<T>, ApiError> {
    match v.filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => parse(v).map(Some).ok_or_else(|| ApiError::invalid_id(name)),
    }
}

/// The caller acting in `tenantId` when given (platform admins; anyone naming their own).
async fn scoped(state: &AppState, caller: Caller, tenant: Option<&str>) -> ApiResult<Caller> {
    match id("tenantId", tenant, TenantId::parse)? {
        None => Ok(caller),
        Some(t) => state.run(move |s| s.act_in(caller, &t)).await,
    }
}

impl AnalyticsParams {
    fn query(&self) -> Result<ReportQuery, ApiError> {
        let granularity = match self.granularity.as_deref().filter(|g| !g.is_empty()) {
            None => Granularity::Day,
            Some(g) => Granularity::parse(g)
                .ok_or_else(|| bad("granularity must be hour, day, week or month"))?,
        };
        Ok(ReportQuery {
            from: date("from", self.from.as_deref())?,
            to: date("to", self.to.as_deref())?,
            granularity,
            agent_id: id("agentId", self.agent_id.as_deref(), AgentId::parse)?,
            channel_id: id("channelId", self.channel_id.as_deref(), ChannelId::parse)?,
        })
    }

    fn csv(&self) -> Result<bool, ApiError> {
        match self.format.as_deref() {
            None | Some("") | Some("json") => Ok(false),
            Some("csv") => Ok(true),
            Some(_) => Err(bad("format must be json or csv")),
        }
    }
}

/// One CSV cell: numbers and strings as in the JSON, null empty; quoted when needed.
fn cell(v: &serde_json::Value) -> String {
    let s = match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// A report as CSV text (header, then rows).
pub fn to_csv(r: &Report) -> String {
    let mut out = r.header.join(",");
    out.push_str("\r\n");
    for row in &r.rows {
        out.push_str(&row.iter().map(cell).collect::<Vec<_>>().join(","));
        out.push_str("\r\n");
    }
    out
}

async fn report(
    state: AppState,
    caller: Caller,
    p: AnalyticsParams,
    kind: ReportKind,
    name: &'static str,
) -> ApiResult<Response> {
    let q = p.query()?;
    let csv = p.csv()?;
    let caller = scoped(&state, caller, p.tenant_id.as_deref()).await?;
    let r = state
        .run(move |s| s.analytics_report(&caller, kind, &q))
        .await?;
    if csv {
        let range = &r.json["range"];
        let file = format!(
            "analytics-{name}-{}-{}.csv",
            range["from"].as_str().unwrap_or_default(),
            range["to"].as_str().unwrap_or_default()
        );
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{file}\""),
                ),
            ],
            to_csv(&r),
        )
            .into_response());
    }
    Ok(axum::Json(r.json).into_response())
}

/// The dashboard: conversations, messages by role, AI-resolved vs handed off, first
/// response and resolution times, CSAT, tokens and cost per model, busiest hours; as a
/// total and a series. Shapes: README, Analytics.
#[utoipa::path(get, path = "/api/analytics/dashboard", tag = "analytics", params(AnalyticsParams),
    responses(
        (status = 200, description = "`{range, totals, series, byModel, busiestHours, tenants?}`, or CSV with `format=csv`",
            content((Object = "application/json"), (String = "text/csv"))),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn dashboard(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Query(p): Query<AnalyticsParams>,
) -> ApiResult<Response> {
    report(state, caller, p, ReportKind::Dashboard, "dashboard").await
}

/// Per agent: the dashboard's figures plus turns, answer latency, fallback rate, tool
/// calls, handoffs and upstream errors.
#[utoipa::path(get, path = "/api/analytics/agents", tag = "analytics", params(AnalyticsParams),
    responses(
        (status = 200, description = "`{range, agents, series}`, or CSV with `format=csv`",
            content((Object = "application/json"), (String = "text/csv"))),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn agents(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Query(p): Query<AnalyticsParams>,
) -> ApiResult<Response> {
    report(state, caller, p, ReportKind::Agents, "agents").await
}

/// Conversations: volume over time, by status and channel, durations, reopen rate.
#[utoipa::path(get, path = "/api/analytics/conversations", tag = "analytics", params(AnalyticsParams),
    responses(
        (status = 200, description = "`{range, totals, byStatus, byChannel, series}`, or CSV with `format=csv`",
            content((Object = "application/json"), (String = "text/csv"))),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn conversations(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Query(p): Query<AnalyticsParams>,
) -> ApiResult<Response> {
    report(state, caller, p, ReportKind::Conversations, "conversations").await
}

/// Channels: volume, delivered/read/failed rates, webhook errors, dead letters.
#[utoipa::path(get, path = "/api/analytics/channels", tag = "analytics", params(AnalyticsParams),
    responses(
        (status = 200, description = "`{range, channels, series}`, or CSV with `format=csv`",
            content((Object = "application/json"), (String = "text/csv"))),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn channels(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Query(p): Query<AnalyticsParams>,
) -> ApiResult<Response> {
    report(state, caller, p, ReportKind::Channels, "channels").await
}

/// Knowledge gaps: customers' questions that ended in the fallback message or a handoff,
/// grouped by meaning (the tenant's embedding model) or else by wording, with counts and
/// example conversations.
#[utoipa::path(get, path = "/api/analytics/knowledge-gaps", tag = "analytics", params(GapParams),
    responses(
        (status = 200, description = "`{range, groups: [{question, count, fallbacks, handoffs, examples, lastAt}], grouping}`; `grouping` is `embeddings` when similar questions were grouped by meaning with the tenant's embedding model, `terms` when by wording", body = Object),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn knowledge_gaps(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Query(p): Query<GapParams>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    let q = ReportQuery {
        from: date("from", p.from.as_deref())?,
        to: date("to", p.to.as_deref())?,
        granularity: Granularity::Day,
        agent_id: id("agentId", p.agent_id.as_deref(), AgentId::parse)?,
        channel_id: None,
    };
    let limit = match p.limit.as_deref().filter(|l| !l.is_empty()) {
        None => 50,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=200).contains(&n) => n,
            _ => return Err(bad("limit must be a number from 1 to 200")),
        },
    };
    let caller = scoped(&state, caller, p.tenant_id.as_deref()).await?;
    // Similar questions are grouped by meaning with the tenant's embedding model, when it
    // has one that works now; by wording otherwise.
    let knowledge = state.knowledge.clone();
    let embed = move |t: &crate::types::TenantId, questions: &[String]| {
        let space = knowledge.space_for(t).ok().flatten()?;
        space
            .embedder
            .embed(questions)
            .map_err(|e| tracing::warn!(error = %e, "knowledge gaps: grouped by wording only"))
            .ok()
    };
    let v = state
        .run(move |s| s.knowledge_gaps(&caller, &q, limit, &embed))
        .await?;
    Ok(axum::Json(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_when_needed() {
        let r = Report {
            json: serde_json::json!({}),
            header: vec!["a".into(), "b".into(), "c".into()],
            rows: vec![vec![
                serde_json::json!("x,y"),
                serde_json::Value::Null,
                serde_json::json!(1.5),
            ]],
        };
        assert_eq!(to_csv(&r), "a,b,c\r\n\"x,y\",,1.5\r\n");
    }
}
