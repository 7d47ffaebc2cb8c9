//! The audit log: who did what, to which target, when, from where, and how it ended, for
//! every security-relevant action. An action writes its entry in its own transaction
//! ([`Services::audit`]), so an entry exists exactly when the action committed. A failed
//! sign-in has no transaction of its own and writes one ([`Services::audit_login_failed`]),
//! coalesced per (account, address) so a flood of failures cannot grow the log without
//! bound. Entries older than `AUDIT_RETENTION_DAYS` are swept in bounded transactions.
//! Entries never hold secrets: settings changes name the changed keys, credential changes
//! only say that they changed, failed sign-ins never keep the attempted password.
//! Depends on the store and auth/ only.

use super::{ClientMeta, Error, PageReq, Result, Services};
use crate::auth::{Action, Caller};
use crate::model::{AuditActor, AuditRecord, AuditTarget, User};
use crate::store::{Page, WriteTx};
use crate::types::{AuditId, TenantId, Timestamp};
use std::collections::HashMap;
use std::sync::Mutex;

macro_rules! actions {
    ($($(#[$m:meta])* $v:ident = $s:literal),* $(,)?) => {
        /// What happened. The string forms (`auth.login`, ...) are stored and are the API's
        /// `action` values: a contract, never renamed.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum AuditAction {
            $($(#[$m])* $v,)*
        }

        impl AuditAction {
            /// Every action, in the order the README lists them.
            pub const ALL: &'static [AuditAction] = &[$(AuditAction::$v,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(AuditAction::$v => $s,)*
                }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($s => Some(AuditAction::$v),)*
                    _ => None,
                }
            }
        }
    };
}

actions! {
    /// A successful sign-in (email and password).
    Login = "auth.login",
    /// A failed sign-in: unknown email, wrong password, suspended workspace.
    LoginFailed = "auth.login_failed",
    /// Self-service sign-up: a new tenant and its first admin.
    Registered = "auth.registered",
    /// A password-reset link was made (mailed, or printed by `aigentable admin reset-link`).
    PasswordResetRequested = "auth.password_reset_requested",
    /// A password was set with a reset link.
    PasswordReset = "auth.password_reset",
    /// A rotated-away refresh token was presented; its session was revoked.
    RefreshTokenReused = "auth.refresh_token_reused",
    InvitationSent = "invitation.sent",
    InvitationAccepted = "invitation.accepted",
    InvitationRevoked = "invitation.revoked",
    /// A user's role changed (details: `from`, `to`).
    UserRoleChanged = "user.role_changed",
    UserRemoved = "user.removed",
    ApiKeyCreated = "api_key.created",
    ApiKeyDeleted = "api_key.deleted",
    /// Tenant settings changed (details: `keys`, the names of what changed; never values).
    SettingsChanged = "settings.changed",
    /// A channel's credentials (bot token, secrets) were set or replaced (never the values).
    ChannelCredentialsChanged = "channel.credentials_changed",
    TenantCreated = "tenant.created",
    /// A tenant's name changed (details: `keys`).
    TenantUpdated = "tenant.updated",
    TenantSuspended = "tenant.suspended",
    TenantReactivated = "tenant.reactivated",
    /// Kept in the platform scope (the tenant's own log goes with it).
    TenantDeleted = "tenant.deleted",
    /// A tenant's records and files were exported.
    TenantExported = "tenant.exported",
    /// A tenant was imported from an export.
    TenantImported = "tenant.imported",
}

/// An action's entry, before the who/when/where are filled in by [`Services::audit`].
#[derive(Debug, Clone)]
pub struct AuditEntry {
    action: AuditAction,
    target: Option<AuditTarget>,
    details: serde_json::Value,
    failure: bool,
    tenant: Option<TenantId>,
}

impl AuditEntry {
    pub fn new(action: AuditAction) -> Self {
        AuditEntry {
            action,
            target: None,
            details: serde_json::Value::Null,
            failure: false,
            tenant: None,
        }
    }

    /// What the action was done to: `kind` (`user`, `api_key`, `tenant`, ...), its id, and a
    /// readable label (an email, a name). Never a secret.
    pub fn target(mut self, kind: &str, id: impl ToString, label: Option<&str>) -> Self {
        self.target = Some(AuditTarget {
            kind: kind.into(),
            id: Some(id.to_string()),
            label: label.map(|l| l.chars().take(200).collect()),
        });
        self
    }

    /// Facts about the action (changed key names, old and new role). Never a secret value.
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    /// Marks the action as failed.
    pub fn failed(mut self) -> Self {
        self.failure = true;
        self
    }

    /// Files the entry under `tenant` instead of the caller's tenant (a tenant's deletion
    /// goes to the platform scope, which outlives it).
    pub fn in_tenant(mut self, tenant: &TenantId) -> Self {
        self.tenant = Some(tenant.clone());
        self
    }
}

/// Filters of [`Services::list_audit`].
#[derive(Debug, Default, Clone)]
pub struct AuditQuery {
    /// Only this tenant (platform admins; others may only name their own).
    pub tenant: Option<TenantId>,
    pub action: Option<AuditAction>,
    /// A user id, API key id or email (case-insensitive) of the actor.
    pub actor: Option<String>,
    /// Entries at or after this time.
    pub from: Option<Timestamp>,
    /// Entries at or before this time.
    pub to: Option<Timestamp>,
    pub page: PageReq,
}

/// Entries one request may read while filtering; a sparse filter answers a short page with
/// a cursor to go on from.
const MAX_SCAN: usize = 5_000;
/// Entries one sweep transaction deletes.
const SWEEP_BATCH: usize = 1_000;
/// Repeated failed sign-ins of one account from one address within this window are one
/// entry (with a count).
const COALESCE_WINDOW: time::Duration = time::Duration::minutes(10);
/// Distinct (account, address) pairs remembered for coalescing; beyond it, failures of the
/// window are counted in one install-wide entry.
const MAX_SLOTS: usize = 10_000;

/// Remembers the open failure entry of each (account, address) pair. Bounded.
#[derive(Default)]
pub struct FailureCoalescer {
    slots: Mutex<HashMap<String, Slot>>,
}

#[derive(Clone)]
struct Slot {
    id: AuditId,
    tenant: TenantId,
    opened: Timestamp,
}

impl FailureCoalescer {
    /// Where to count a failure of `key`: the open entry to raise (`Some`), or the fresh
    /// entry to write (`None`; `fresh` is remembered for the next ones). When too many pairs
    /// are open, a new pair counts in the one install-wide overflow entry (`true`), whose
    /// fresh entry is filed in the platform scope.
    fn claim(&self, key: String, mut fresh: Slot, now: Timestamp) -> (Option<Slot>, Slot, bool) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.len() >= MAX_SLOTS {
            slots.retain(|_, s| now - s.opened < COALESCE_WINDOW);
        }
        let overflow = slots.len() >= MAX_SLOTS && !slots.contains_key(&key);
        let key = if overflow {
            fresh.tenant = TenantId::platform();
            "*".to_string()
        } else {
            key
        };
        match slots.get(&key) {
            Some(s) if now - s.opened < COALESCE_WINDOW => (Some(s.clone()), fresh, overflow),
            _ => {
                slots.insert(key, fresh.clone());
                (None, fresh, overflow)
            }
        }
    }
}

/// The names of the top-level keys that differ between two JSON objects (added, removed or
/// changed), sorted: what a settings entry records instead of values.
pub fn changed_keys(old: &serde_json::Value, new: &serde_json::Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let old = old.as_object().unwrap_or(&empty);
    let new = new.as_object().unwrap_or(&empty);
    let mut keys: Vec<String> = old
        .keys()
        .chain(new.keys())
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn clip(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

impl Services {
    /// Records `entry` as done by `caller`, in `tx`: the transaction of the action itself,
    /// so the entry commits exactly when the action does. The entry is filed under the
    /// caller's tenant unless [`AuditEntry::in_tenant`] says otherwise.
    pub fn audit(&self, tx: &WriteTx, caller: &Caller, entry: AuditEntry) -> Result<()> {
        let actor = self.actor_of(tx, caller)?;
        let tenant = entry
            .tenant
            .clone()
            .unwrap_or_else(|| caller.tenant().clone());
        self.put_entry(tx, tenant, actor, caller.client(), entry)
    }

    /// Records `entry` as done by `user` themselves (signing in, accepting an invitation,
    /// resetting their password), from `client`.
    pub(crate) fn audit_user(
        &self,
        tx: &WriteTx,
        user: &User,
        client: &ClientMeta,
        entry: AuditEntry,
    ) -> Result<()> {
        let actor = AuditActor {
            kind: "user".into(),
            user_id: Some(user.id.clone()),
            email: Some(user.email.clone()),
            api_key_id: None,
            role: Some(user.role),
        };
        let tenant = entry.tenant.clone().unwrap_or(user.tenant_id.clone());
        self.put_entry(tx, tenant, actor, Some(client), entry)
    }

    /// Records `entry` with an anonymous actor that named `email` (a reset request), or the
    /// operator's command line when `client` is `None`.
    pub(crate) fn audit_anonymous(
        &self,
        tx: &WriteTx,
        tenant: &TenantId,
        email: Option<&str>,
        client: Option<&ClientMeta>,
        entry: AuditEntry,
    ) -> Result<()> {
        let actor = AuditActor {
            kind: if client.is_some() {
                "anonymous"
            } else {
                "system"
            }
            .into(),
            email: email.map(|e| clip(e, 254)),
            ..Default::default()
        };
        let tenant = entry.tenant.clone().unwrap_or(tenant.clone());
        self.put_entry(tx, tenant, actor, client, entry)
    }

    fn put_entry(
        &self,
        tx: &WriteTx,
        tenant: TenantId,
        actor: AuditActor,
        client: Option<&ClientMeta>,
        entry: AuditEntry,
    ) -> Result<()> {
        let at = self.clock.now();
        let rec = AuditRecord {
            id: AuditId::at(at),
            tenant_id: tenant,
            at,
            action: entry.action.as_str().into(),
            outcome: if entry.failure { "failure" } else { "success" }.into(),
            actor,
            target: entry.target,
            ip: client.and_then(|c| c.ip.clone()),
            user_agent: client.and_then(|c| c.user_agent.as_deref().map(|u| clip(u, 300))),
            details: entry.details,
            count: 1,
            last_at: None,
        };
        tx.put_audit(&rec)?;
        Ok(())
    }

    /// Who `caller` is, for an entry: the person (with their current email), the API key
    /// and its creator, or the system (jobs, channels).
    fn actor_of(&self, tx: &WriteTx, caller: &Caller) -> Result<AuditActor> {
        let Some(role) = caller.role() else {
            return Ok(AuditActor {
                kind: "system".into(),
                ..Default::default()
            });
        };
        let email = match caller.user() {
            Some(u) => {
                let mut found = tx.get::<User>(caller.home_tenant(), u.as_str())?;
                if found.is_none() {
                    // A platform admin's key in a tenant: its creator lives in the platform.
                    found = tx.get::<User>(&TenantId::platform(), u.as_str())?;
                }
                found.map(|u| u.email)
            }
            None => None,
        };
        Ok(AuditActor {
            kind: if caller.api_key_id().is_some() {
                "api_key"
            } else {
                "user"
            }
            .into(),
            user_id: caller.user().cloned(),
            email,
            api_key_id: caller.api_key_id().cloned(),
            role: Some(role),
        })
    }

    /// Records a failed sign-in for `email` (the account's tenant when it exists, else the
    /// platform scope) with the reason, never the password. Repeats from one address within
    /// ten minutes raise the count of one entry; beyond 10 000 open (account, address) pairs
    /// they all count in one install-wide entry. Its own write: there is no action to join.
    pub(crate) fn audit_login_failed(
        &self,
        email: &str,
        user: Option<&User>,
        client: &ClientMeta,
        reason: &str,
    ) -> Result<()> {
        let now = self.clock.now();
        let email = clip(email, 254);
        let tenant = user.map_or_else(TenantId::platform, |u| u.tenant_id.clone());
        let key = format!(
            "{tenant}|{email}|{}",
            client.ip.as_deref().unwrap_or_default()
        );
        let fresh = Slot {
            id: AuditId::at(now),
            tenant: tenant.clone(),
            opened: now,
        };
        let (open, fresh, overflow) = self.audit_failures.claim(key, fresh, now);
        self.store.write(|tx| {
            if let Some(slot) = &open
                && let Some(mut rec) = tx.get::<AuditRecord>(&slot.tenant, slot.id.as_str())?
            {
                rec.count = rec.count.saturating_add(1);
                rec.last_at = Some(now);
                // Same id and tenant: its time-index row stands as it is.
                return Ok(tx.put(&rec)?);
            }
            let (actor, ip, user_agent, details) = if overflow {
                (
                    AuditActor {
                        kind: "anonymous".into(),
                        ..Default::default()
                    },
                    None,
                    None,
                    serde_json::json!({"reason": "many", "coalesced": "failed sign-ins of many accounts and addresses"}),
                )
            } else {
                (
                    AuditActor {
                        kind: "anonymous".into(),
                        user_id: user.map(|u| u.id.clone()),
                        email: Some(email.clone()),
                        api_key_id: None,
                        role: None,
                    },
                    client.ip.clone(),
                    client.user_agent.as_deref().map(|u| clip(u, 300)),
                    serde_json::json!({ "reason": reason }),
                )
            };
            let rec = AuditRecord {
                id: fresh.id.clone(),
                tenant_id: fresh.tenant.clone(),
                at: now,
                action: AuditAction::LoginFailed.as_str().into(),
                outcome: "failure".into(),
                actor,
                target: user.map(|u| AuditTarget {
                    kind: "user".into(),
                    id: Some(u.id.to_string()),
                    label: Some(u.email.clone()),
                }),
                ip,
                user_agent,
                details,
                count: 1,
                last_at: None,
            };
            tx.put_audit(&rec)?;
            Ok::<_, Error>(())
        })
    }

    /// A page of the audit log, newest first. Tenant admins see their tenant; a platform
    /// admin (not acting in a tenant) sees every tenant and the platform scope, or one
    /// tenant with `query.tenant`. Others are refused.
    pub fn list_audit(&self, caller: &Caller, q: &AuditQuery) -> Result<Page<AuditRecord>> {
        caller
            .require(Action::ReadAudit)
            .map_err(|d| Error::denied(d, "tenant"))?;
        let scope = if caller.is_platform_admin() && caller.acting_for().is_none() {
            q.tenant.clone()
        } else {
            match &q.tenant {
                Some(t) if t != caller.tenant() => return Err(Error::NotFound("tenant")),
                _ => Some(caller.tenant().clone()),
            }
        };
        let cursor = match &q.page.cursor {
            Some(c) => Some(
                AuditId::parse(c)
                    .ok_or_else(|| Error::Invalid("invalid_query", "cursor is not valid".into()))?
                    .to_string(),
            ),
            None => None,
        };
        let lo = q.from.map(AuditId::floor);
        // `to` is inclusive to the millisecond: the bound is the next millisecond's floor.
        let to =
            q.to.map(|t| AuditId::floor(t + time::Duration::milliseconds(1)));
        let hi = match (cursor, to) {
            (Some(c), Some(t)) => Some(c.min(t)),
            (c, t) => c.or(t),
        };
        let action = q.action.map(AuditAction::as_str);
        let actor = q.actor.as_deref().map(|a| a.trim().to_lowercase());
        let limit = q.page.limit.clamp(1, PageReq::MAX);
        Ok(self.store.read(|tx| {
            tx.audit_page(
                scope.as_ref(),
                lo.as_deref(),
                hi.as_deref(),
                limit,
                MAX_SCAN,
                |r| {
                    action.is_none_or(|a| r.action == a)
                        && actor.as_deref().is_none_or(|a| {
                            r.actor.user_id.as_ref().is_some_and(|u| u.as_str() == a)
                                || r.actor.api_key_id.as_ref().is_some_and(|k| k.as_str() == a)
                                || r.actor.email.as_deref().is_some_and(|e| e == a)
                        })
                },
            )
        })?)
    }

    /// Deletes entries older than `AUDIT_RETENTION_DAYS` (by this services' clock), in
    /// transactions of at most 1000 entries. Returns how many went.
    pub fn sweep_audit(&self) -> Result<usize> {
        let days = i64::from(self.config.audit_retention_days.max(1));
        let before = AuditId::floor(self.clock.now() - time::Duration::days(days));
        let mut total = 0;
        loop {
            let n = self
                .store
                .write(|tx| Ok::<_, Error>(tx.sweep_audit(&before, SWEEP_BATCH)?))?;
            total += n;
            if n < SWEEP_BATCH {
                return Ok(total);
            }
        }
    }
}
