//! Plans and subscriptions: operator-defined plans with limits, each tenant's subscription
//! (plan, status, period, AI replies counted per period), and the limit checks the create
//! paths run inside their own write transaction, so two creates racing at limit-1 cannot
//! both pass (redb runs one write transaction at a time).
//!
//! Counts of agents, documents (and their bytes), channels, users and API keys come from
//! the store's per-tenant row counts, kept in the transaction of every insert and removal
//! (O(1), never a scan). Seats add the tenant's pending invitations (a small range).
//! The AI-reply counter lives on the subscription and is reset lazily when a read or a
//! check finds the period over: no timer has to run for it.
//!
//! The platform pseudo-tenant (platform admins and their keys) is never limited.
//! Must not depend on api/.

use super::{Checks, Error, PageReq, Result, Services};
use crate::auth::Caller;
use crate::events::Event;
use crate::model::*;
use crate::store::{Page, ReadTx, Result as SResult, WriteTx};
use crate::types::*;
use time::OffsetDateTime;

/// The built-in unlimited plan's id (the nil UUID). It is never stored: it always exists,
/// cannot be edited or deleted, and is the default unless a stored plan is.
pub fn builtin_plan_id() -> PlanId {
    PlanId::parse("00000000-0000-0000-0000-000000000000").expect("BUG: nil UUID parses")
}

/// Usage fractions (percent) announced once per period when a usage reaches them.
pub const THRESHOLDS: [u8; 2] = [80, 100];

/// One limit of a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Agents,
    Documents,
    StorageBytes,
    MessagesPerMonth,
    Channels,
    Seats,
    ApiKeys,
}

impl Limit {
    pub const ALL: [Limit; 7] = [
        Limit::Agents,
        Limit::Documents,
        Limit::StorageBytes,
        Limit::MessagesPerMonth,
        Limit::Channels,
        Limit::Seats,
        Limit::ApiKeys,
    ];

    /// The limit's name in the API (`limits` keys, `details.limit`): a public contract.
    pub fn name(self) -> &'static str {
        match self {
            Limit::Agents => "agents",
            Limit::Documents => "documents",
            Limit::StorageBytes => "storageBytes",
            Limit::MessagesPerMonth => "messagesPerMonth",
            Limit::Channels => "channels",
            Limit::Seats => "seats",
            Limit::ApiKeys => "apiKeys",
        }
    }

    /// What this limit allows in `l` (`None`: unlimited).
    pub fn of(self, l: &PlanLimits) -> Option<u64> {
        match self {
            Limit::Agents => l.agents,
            Limit::Documents => l.documents,
            Limit::StorageBytes => l.storage_bytes,
            Limit::MessagesPerMonth => l.messages_per_month,
            Limit::Channels => l.channels,
            Limit::Seats => l.seats,
            Limit::ApiKeys => l.api_keys,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Limit::Agents => "agents",
            Limit::Documents => "documents",
            Limit::StorageBytes => "bytes of document storage",
            Limit::MessagesPerMonth => "AI replies per period",
            Limit::Channels => "channels",
            Limit::Seats => "seats (users and pending invitations)",
            Limit::ApiKeys => "API keys",
        }
    }
}

/// One limit against its usage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageLine {
    pub limit: Limit,
    pub used: u64,
    pub max: Option<u64>,
}

impl UsageLine {
    /// `floor(100 * used / max)`; `None` when unlimited (a zero limit used 0 is 100%).
    pub fn percent(&self) -> Option<u64> {
        self.max.map(|m| {
            if m == 0 {
                100
            } else {
                ((self.used as u128 * 100) / m as u128) as u64
            }
        })
    }
}

/// A tenant's subscription as a client sees it: plan, status, period and usage.
#[derive(Clone, Debug)]
pub struct SubscriptionInfo {
    pub tenant_id: TenantId,
    pub plan: Plan,
    pub status: SubscriptionStatus,
    pub period_start: OffsetDateTime,
    pub period_end: OffsetDateTime,
    pub usage: Vec<UsageLine>,
}

/// Fields of a plan create or update; `None` keeps a field (or leaves it at its default).
#[derive(Debug, Default, Clone)]
pub struct PlanInput {
    pub name: Option<String>,
    pub limits: Option<PlanLimits>,
    pub price_text: Option<Option<String>>,
    pub is_default: Option<bool>,
}

/// A platform admin's change of a tenant's subscription.
#[derive(Debug, Clone)]
pub struct SubscriptionChange {
    pub plan_id: PlanId,
    pub status: Option<SubscriptionStatus>,
    pub period_end: Option<OffsetDateTime>,
}

/// Threshold announcements found inside a write, published once it has committed.
#[must_use = "publish with Services::announce after the commit"]
#[derive(Debug, Default)]
pub struct Crossings(Vec<Event>);

impl Crossings {
    pub fn none() -> Self {
        Crossings(Vec::new())
    }
    /// Adds the crossings of another check of the same write.
    pub fn extend(&mut self, other: Crossings) {
        self.0.extend(other.0);
    }
}

/// The same instant one calendar month later (the day clamped to the month's length).
pub fn add_month(t: OffsetDateTime) -> OffsetDateTime {
    let d = t.date();
    let (y, m) = match d.month() {
        time::Month::December => (d.year() + 1, time::Month::January),
        m => (d.year(), m.next()),
    };
    let last = m.length(y);
    let day = d.day().min(last);
    match time::Date::from_calendar_date(y, m, day) {
        Ok(nd) => t.replace_date(nd),
        // Only out of time's year range: a far future that never comes.
        Err(_) => t + time::Duration::days(30),
    }
}

fn builtin_plan(is_default: bool) -> Plan {
    let epoch = OffsetDateTime::UNIX_EPOCH;
    Plan {
        id: builtin_plan_id(),
        tenant_id: TenantId::platform(),
        name: "Unlimited".into(),
        limits: PlanLimits::default(),
        price_text: None,
        is_default,
        created_at: epoch,
        updated_at: epoch,
    }
}

/// Stored plans, oldest first (there are few: an operator's price list).
fn stored_plans(tx: &ReadTxLike<'_>) -> SResult<Vec<Plan>> {
    Ok(match tx {
        ReadTxLike::R(r) => r.scan::<Plan>(&TenantId::platform(), None, |_| true)?,
        ReadTxLike::W(w) => w.scan::<Plan>(&TenantId::platform(), None, |_| true)?,
    })
}

/// Either kind of transaction, for the lookups both reads and writes need.
enum ReadTxLike<'a> {
    R(&'a ReadTx),
    W(&'a WriteTx),
}

macro_rules! with_tx {
    ($tx:expr, |$t:ident| $body:expr) => {
        match $tx {
            ReadTxLike::R($t) => $body,
            ReadTxLike::W($t) => $body,
        }
    };
}

fn plan_by_id(tx: &ReadTxLike<'_>, id: &PlanId) -> SResult<Option<Plan>> {
    if *id == builtin_plan_id() {
        return Ok(Some(builtin_plan(default_plan(tx)?.id == *id)));
    }
    Ok(with_tx!(tx, |t| t.get::<Plan>(&TenantId::platform(), id.as_str())?))
}

/// The plan new tenants get: the stored plan marked default, else the built-in one.
fn default_plan(tx: &ReadTxLike<'_>) -> SResult<Plan> {
    Ok(stored_plans(tx)?
        .into_iter()
        .find(|p| p.is_default)
        .unwrap_or_else(|| builtin_plan(true)))
}

/// A fresh subscription on `plan`, its period starting now.
fn fresh(tenant: &TenantId, plan: PlanId, now: OffsetDateTime) -> TenantPlan {
    TenantPlan {
        tenant_id: tenant.clone(),
        plan_id: plan,
        status: SubscriptionStatus::Active,
        period_start: now,
        period_end: add_month(now),
        messages: 0,
        announced: Default::default(),
        updated_at: now,
    }
}

/// Moves a subscription whose period is over into the period containing `now`, resetting
/// the period's counters. True when it changed.
fn roll(s: &mut TenantPlan, now: OffsetDateTime) -> bool {
    if now < s.period_end {
        return false;
    }
    let mut n = 0;
    while now >= s.period_end {
        s.period_start = s.period_end;
        s.period_end = add_month(s.period_end);
        n += 1;
        if n > 1200 {
            // A century behind (a wrong clock): start over from now.
            s.period_start = now;
            s.period_end = add_month(now);
            break;
        }
    }
    s.messages = 0;
    s.announced.clear();
    s.updated_at = now;
    true
}

/// The tenant's subscription as of `now` (made on the default plan if it has none, rolled
/// into the current period) and whether it differs from what is stored.
fn effective(
    tx: &ReadTxLike<'_>,
    tenant: &TenantId,
    now: OffsetDateTime,
) -> SResult<(TenantPlan, bool)> {
    let stored = with_tx!(tx, |t| t.get::<TenantPlan>(tenant, "")?);
    let (mut s, mut changed) = match stored {
        Some(s) => (s, false),
        None => (fresh(tenant, default_plan(tx)?.id, now), true),
    };
    changed |= roll(&mut s, now);
    Ok((s, changed))
}

/// What the tenant uses of `limit` now (for messages: in the subscription's period).
fn used(
    tx: &ReadTxLike<'_>,
    tenant: &TenantId,
    sub: &TenantPlan,
    limit: Limit,
    now: OffsetDateTime,
) -> SResult<u64> {
    Ok(with_tx!(tx, |t| match limit {
        Limit::Agents => t.count::<Agent>(tenant)?,
        Limit::Documents => t.count::<Document>(tenant)?,
        Limit::StorageBytes => t.weight_sum::<Document>(tenant)?,
        Limit::MessagesPerMonth => sub.messages,
        Limit::Channels => t.count::<Channel>(tenant)?,
        Limit::ApiKeys => t.count::<ApiKey>(tenant)?,
        Limit::Seats => {
            let pending = t
                .scan::<Invitation>(tenant, None, |i| {
                    i.accepted_at.is_none() && i.expires_at > now
                })?
                .len() as u64;
            t.count::<User>(tenant)? + pending
        }
    }))
}

fn limit_refusal(limit: Limit, used: u64, max: u64) -> Error {
    Error::PaymentRequired(
        "plan_limit_reached",
        format!("the plan allows {max} {}", limit.noun()),
        serde_json::json!({"limit": limit.name(), "used": used, "max": max}),
    )
}

fn inactive(status: SubscriptionStatus) -> Error {
    let s = match status {
        SubscriptionStatus::PastDue => "past_due",
        SubscriptionStatus::Canceled => "canceled",
        SubscriptionStatus::Active => "active",
        SubscriptionStatus::Trialing => "trialing",
    };
    Error::PaymentRequired(
        "subscription_inactive",
        format!("the subscription is {s}: nothing new can be created until it is active again"),
        serde_json::json!({"status": s}),
    )
}

/// The announcements due when usage of `limit` goes to `after` of `max`; records them on
/// the subscription (the caller stores it).
fn crossings(sub: &mut TenantPlan, limit: Limit, after: u64, max: u64) -> Vec<Event> {
    let line = UsageLine {
        limit,
        used: after,
        max: Some(max),
    };
    let pct = line.percent().unwrap_or(0);
    let done = sub.announced.get(limit.name()).copied().unwrap_or(0);
    let Some(&t) = THRESHOLDS
        .iter()
        .rev()
        .find(|&&t| pct >= t as u64 && t > done)
    else {
        return Vec::new();
    };
    sub.announced.insert(limit.name().to_string(), t);
    vec![Event::UsageThreshold {
        tenant_id: sub.tenant_id.clone(),
        limit: limit.name(),
        used: after,
        max,
        percent: pct,
        threshold: t,
    }]
}

impl Services {
    /// Starts a new tenant's subscription on the default plan (in the tenant's creation).
    pub(crate) fn start_subscription(&self, tx: &WriteTx, tenant: &TenantId) -> Result<()> {
        let now = self.clock.now();
        let plan = default_plan(&ReadTxLike::W(tx))?;
        tx.put(&fresh(tenant, plan.id, now))?;
        Ok(())
    }

    /// Checks, inside the write that creates them, that the tenant may add `adding` of
    /// `limit` (0 still checks the subscription's status): refused with 402
    /// `plan_limit_reached` (or `subscription_inactive`) before anything is written.
    /// Returns the threshold crossings to [`announce`](Self::announce) after the commit.
    pub fn use_quota(
        &self,
        tx: &WriteTx,
        tenant: &TenantId,
        limit: Limit,
        adding: u64,
    ) -> Result<Crossings> {
        if tenant.is_platform() {
            return Ok(Crossings::none());
        }
        let now = self.clock.now();
        let r = ReadTxLike::W(tx);
        let (mut sub, mut changed) = effective(&r, tenant, now)?;
        if limit == Limit::MessagesPerMonth {
            if sub.status == SubscriptionStatus::Canceled {
                return Err(inactive(sub.status));
            }
        } else if matches!(
            sub.status,
            SubscriptionStatus::PastDue | SubscriptionStatus::Canceled
        ) {
            return Err(inactive(sub.status));
        }
        let plan = plan_by_id(&r, &sub.plan_id)?.unwrap_or_else(|| builtin_plan(false));
        let mut events = Vec::new();
        if let Some(max) = limit.of(&plan.limits) {
            let now_used = used(&r, tenant, &sub, limit, now)?;
            let after = now_used.saturating_add(adding);
            if adding > 0 && after > max {
                return Err(limit_refusal(limit, now_used, max));
            }
            events = crossings(&mut sub, limit, after, max);
            changed |= !events.is_empty();
        }
        if limit == Limit::MessagesPerMonth && adding > 0 {
            sub.messages = sub.messages.saturating_add(adding);
            changed = true;
        }
        if changed {
            sub.updated_at = now;
            tx.put(&sub)?;
        }
        Ok(Crossings(events))
    }

    /// Refuses (402 `plan_limit_reached`) when the tenant already uses more of `limit` than
    /// its plan allows, counting what the write is about to turn into a real one (an
    /// invitation made before a downgrade cannot become a seat the plan no longer has).
    pub fn within_quota(&self, tx: &WriteTx, tenant: &TenantId, limit: Limit) -> Result<()> {
        if tenant.is_platform() {
            return Ok(());
        }
        let now = self.clock.now();
        let r = ReadTxLike::W(tx);
        let (sub, _) = effective(&r, tenant, now)?;
        let plan = plan_by_id(&r, &sub.plan_id)?.unwrap_or_else(|| builtin_plan(false));
        if let Some(max) = limit.of(&plan.limits) {
            let used = used(&r, tenant, &sub, limit, now)?;
            if used > max {
                return Err(limit_refusal(limit, used, max));
            }
        }
        Ok(())
    }

    /// Publishes (and logs) threshold crossings once their write has committed.
    pub fn announce(&self, c: Crossings) {
        for e in c.0 {
            if let Event::UsageThreshold {
                tenant_id,
                limit,
                used,
                max,
                threshold,
                ..
            } = &e
            {
                tracing::warn!(tenant = %tenant_id, limit, used, max, threshold, "plan usage crossed {threshold}% of a limit");
            }
            self.events.publish(e);
        }
    }

    /// Counts one AI reply against the tenant's plan before the model is asked (its own
    /// short write, so parallel turns at limit-1 cannot both pass). Refused (402) when the
    /// period's replies are used up or the subscription is canceled.
    pub fn reserve_ai_reply(&self, caller: &Caller) -> Result<()> {
        let tenant = caller.tenant().clone();
        let c = self
            .store
            .write(|tx| self.use_quota(tx, &tenant, Limit::MessagesPerMonth, 1))?;
        self.announce(c);
        Ok(())
    }

    /// The caller's tenant's subscription with its usage (any role of the tenant).
    pub fn my_subscription(&self, caller: &Caller) -> Result<SubscriptionInfo> {
        if caller.tenant().is_platform() || caller.role().is_none() {
            return Err(Error::NotFound("tenant"));
        }
        self.subscription_info(caller.tenant())
    }

    fn subscription_info(&self, tenant: &TenantId) -> Result<SubscriptionInfo> {
        let now = self.clock.now();
        let info = self.store.read(|tx| {
            if tx.get::<Tenant>(tenant, "")?.is_none() {
                return Ok(None);
            }
            let r = ReadTxLike::R(tx);
            let (sub, _) = effective(&r, tenant, now)?;
            let plan = plan_by_id(&r, &sub.plan_id)?.unwrap_or_else(|| builtin_plan(false));
            let mut usage = Vec::with_capacity(Limit::ALL.len());
            for limit in Limit::ALL {
                usage.push(UsageLine {
                    limit,
                    used: used(&r, tenant, &sub, limit, now)?,
                    max: limit.of(&plan.limits),
                });
            }
            Ok(Some(SubscriptionInfo {
                tenant_id: tenant.clone(),
                plan,
                status: sub.status,
                period_start: sub.period_start,
                period_end: sub.period_end,
                usage,
            }))
        })?;
        info.ok_or(Error::NotFound("tenant"))
    }

    fn require_platform(caller: &Caller) -> Result<()> {
        if caller.is_platform_admin() {
            Ok(())
        } else {
            Err(Error::Forbidden(
                "forbidden",
                "only a platform admin can manage plans and subscriptions".into(),
            ))
        }
    }

    /// Every plan, the built-in one first (PLATFORM_ADMIN).
    pub fn list_plans(&self, caller: &Caller, page: &PageReq) -> Result<Page<Plan>> {
        Self::require_platform(caller)?;
        Ok(self.store.read(|tx| {
            let r = ReadTxLike::R(tx);
            let mut items = Vec::new();
            if page.cursor.is_none() {
                let d = default_plan(&r)?;
                items.push(builtin_plan(d.id == builtin_plan_id()));
            }
            let stored = tx.list::<Plan>(
                &TenantId::platform(),
                None,
                page.cursor.as_deref(),
                page.limit.saturating_sub(items.len()).max(1),
                false,
            )?;
            items.extend(stored.items);
            Ok(Page {
                items,
                next: stored.next,
            })
        })?)
    }

    pub fn get_plan(&self, caller: &Caller, id: &PlanId) -> Result<Plan> {
        Self::require_platform(caller)?;
        self.store
            .read(|tx| plan_by_id(&ReadTxLike::R(tx), id))?
            .ok_or(Error::NotFound("plan"))
    }

    fn check_plan_input(input: &PlanInput, creating: bool) -> Result<()> {
        let mut c = Checks::default();
        match &input.name {
            Some(n) => c.text("name", n, 100),
            None if creating => c.fail("name", "is required"),
            None => {}
        }
        if let Some(Some(p)) = &input.price_text {
            c.check(
                p.chars().count() <= 200,
                "priceText",
                "must be at most 200 characters",
            );
        }
        c.finish()
    }

    /// Makes `keep` the only stored default plan.
    fn clear_other_defaults(tx: &WriteTx, keep: &PlanId) -> Result<()> {
        for mut p in tx.scan::<Plan>(&TenantId::platform(), None, |p| p.is_default)? {
            if p.id != *keep {
                p.is_default = false;
                tx.put(&p)?;
            }
        }
        Ok(())
    }

    pub fn create_plan(&self, caller: &Caller, input: PlanInput) -> Result<Plan> {
        Self::require_platform(caller)?;
        Self::check_plan_input(&input, true)?;
        let now = self.clock.now();
        let plan = Plan {
            id: PlanId::new(),
            tenant_id: TenantId::platform(),
            name: input.name.unwrap_or_default().trim().to_string(),
            limits: input.limits.unwrap_or_default(),
            price_text: input.price_text.flatten().map(|s| s.trim().to_string()),
            is_default: input.is_default.unwrap_or(false),
            created_at: now,
            updated_at: now,
        };
        self.store.write(|tx| {
            if plan.is_default {
                Self::clear_other_defaults(tx, &plan.id)?;
            }
            tx.put(&plan)?;
            Ok::<_, Error>(())
        })?;
        tracing::info!(plan = %plan.id, name = %plan.name, "plan created");
        Ok(plan)
    }

    pub fn update_plan(&self, caller: &Caller, id: &PlanId, input: PlanInput) -> Result<Plan> {
        Self::require_platform(caller)?;
        Self::check_plan_input(&input, false)?;
        if *id == builtin_plan_id() {
            return Err(built_in());
        }
        let now = self.clock.now();
        self.store.write(|tx| {
            let mut p = tx
                .get::<Plan>(&TenantId::platform(), id.as_str())?
                .ok_or(Error::NotFound("plan"))?;
            if let Some(n) = input.name {
                p.name = n.trim().to_string();
            }
            if let Some(l) = input.limits {
                p.limits = l;
            }
            if let Some(pt) = input.price_text {
                p.price_text = pt.map(|s| s.trim().to_string());
            }
            if let Some(d) = input.is_default {
                p.is_default = d;
                if d {
                    Self::clear_other_defaults(tx, &p.id)?;
                }
            }
            p.updated_at = now;
            tx.put(&p)?;
            Ok(p)
        })
    }

    /// Deletes a plan no tenant is on (409 `plan_in_use` otherwise).
    pub fn delete_plan(&self, caller: &Caller, id: &PlanId) -> Result<()> {
        Self::require_platform(caller)?;
        if *id == builtin_plan_id() {
            return Err(built_in());
        }
        self.store.write(|tx| {
            if tx
                .get::<Plan>(&TenantId::platform(), id.as_str())?
                .is_none()
            {
                return Err(Error::NotFound("plan"));
            }
            let on = tx.count_where::<TenantPlan>(|s| s.plan_id == *id)?;
            if on > 0 {
                return Err(Error::Conflict(
                    "plan_in_use",
                    format!("{on} tenant(s) are on this plan; move them to another plan first"),
                    Some(serde_json::json!({"tenants": on})),
                ));
            }
            tx.delete::<Plan>(&TenantId::platform(), id.as_str())?;
            Ok(())
        })
    }

    /// Moves a tenant to a plan, optionally setting its status and period end
    /// (PLATFORM_ADMIN). A new plan starts a new period (counters reset) unless `periodEnd`
    /// is given; then the current period ends then.
    pub fn set_subscription(
        &self,
        caller: &Caller,
        tenant: &TenantId,
        change: SubscriptionChange,
    ) -> Result<SubscriptionInfo> {
        Self::require_platform(caller)?;
        let now = self.clock.now();
        if let Some(end) = change.period_end {
            let mut c = Checks::default();
            c.check(end > now, "periodEnd", "must be in the future");
            c.finish()?;
        }
        self.store.write(|tx| {
            if tx.get::<Tenant>(tenant, "")?.is_none() {
                return Err(Error::NotFound("tenant"));
            }
            let r = ReadTxLike::W(tx);
            if plan_by_id(&r, &change.plan_id)?.is_none() {
                return Err(Error::NotFound("plan"));
            }
            let (mut sub, _) = effective(&r, tenant, now)?;
            if sub.plan_id != change.plan_id {
                sub.plan_id = change.plan_id.clone();
                // Thresholds are relative to the plan's limits: announce anew.
                sub.announced.clear();
            }
            if let Some(st) = change.status {
                sub.status = st;
            }
            if let Some(end) = change.period_end {
                sub.period_end = end;
                if sub.period_start >= end {
                    sub.period_start = now;
                }
            }
            sub.updated_at = now;
            tx.put(&sub)?;
            Ok::<_, Error>(())
        })?;
        tracing::info!(tenant = %tenant, plan = %change.plan_id, "subscription changed");
        self.subscription_info(tenant)
    }
}

fn built_in() -> Error {
    Error::Conflict(
        "plan_built_in",
        "the built-in unlimited plan cannot be changed or deleted".into(),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> OffsetDateTime {
        OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
    }

    #[test]
    fn months_clamp_to_the_last_day() {
        assert_eq!(
            add_month(at("2026-01-31T10:00:00Z")),
            at("2026-02-28T10:00:00Z")
        );
        assert_eq!(
            add_month(at("2026-12-15T00:00:00Z")),
            at("2027-01-15T00:00:00Z")
        );
    }

    #[test]
    fn a_period_rolls_forward_and_resets_its_counters() {
        let t = TenantId::new();
        let mut s = fresh(&t, builtin_plan_id(), at("2026-01-10T00:00:00Z"));
        s.messages = 7;
        s.announced.insert("messagesPerMonth".into(), 80);
        assert!(!roll(&mut s, at("2026-02-09T23:59:59Z")));
        assert_eq!(s.messages, 7);
        assert!(roll(&mut s, at("2026-04-11T00:00:00Z")));
        assert_eq!(s.period_start, at("2026-04-10T00:00:00Z"));
        assert_eq!(s.period_end, at("2026-05-10T00:00:00Z"));
        assert_eq!(s.messages, 0);
        assert!(s.announced.is_empty());
    }

    #[test]
    fn each_threshold_is_announced_once() {
        let t = TenantId::new();
        let mut s = fresh(&t, builtin_plan_id(), at("2026-01-10T00:00:00Z"));
        assert!(crossings(&mut s, Limit::Agents, 3, 5).is_empty());
        assert_eq!(crossings(&mut s, Limit::Agents, 4, 5).len(), 1);
        assert!(crossings(&mut s, Limit::Agents, 4, 5).is_empty());
        let e = crossings(&mut s, Limit::Agents, 5, 5);
        assert!(matches!(
            e.as_slice(),
            [Event::UsageThreshold { threshold: 100, .. }]
        ));
        assert!(crossings(&mut s, Limit::Agents, 5, 5).is_empty());
    }
}
