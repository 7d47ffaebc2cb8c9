//! Tenants: listing, creation by platform admins, settings, and complete deletion.

use super::audit::{AuditAction, AuditEntry, changed_keys};
use super::{Checks, Error, PageReq, Result, Services, slugify};
use crate::auth::{Action, Caller};
use crate::model::{Tenant, TenantStatus};
use crate::store::Page;
use crate::types::*;

pub struct TenantPatch {
    pub name: Option<String>,
    pub status: Option<TenantStatus>,
    pub settings: Option<serde_json::Value>,
}

impl Services {
    pub fn list_tenants(&self, caller: &Caller, page: &PageReq) -> Result<Page<Tenant>> {
        caller
            .require(Action::ReadTenant)
            .map_err(|d| Error::denied(d, "tenant"))?;
        if caller.is_platform_admin() {
            return Ok(self
                .store
                .read(|tx| tx.tenants(page.cursor.as_deref(), page.limit))?);
        }
        let own = self
            .store
            .read(|tx| tx.get::<Tenant>(caller.tenant(), ""))?;
        Ok(Page {
            items: own.into_iter().filter(|_| page.cursor.is_none()).collect(),
            next: None,
        })
    }

    pub fn create_tenant(&self, caller: &Caller, name: &str, slug: Option<&str>) -> Result<Tenant> {
        caller
            .require(Action::CreateTenant)
            .map_err(|d| Error::denied(d, "tenant"))?;
        let mut c = Checks::default();
        c.text("name", name, 200);
        if let Some(s) = slug {
            c.check(
                !s.is_empty()
                    && s.len() <= 64
                    && s.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "slug",
                "must be 1-64 characters of a-z, 0-9 and -",
            );
        }
        c.finish()?;
        let now = now();
        let t = Tenant {
            id: TenantId::new(),
            name: name.trim().into(),
            slug: slug.map(str::to_string).unwrap_or_else(|| slugify(name)),
            status: TenantStatus::Active,
            settings: serde_json::json!({}),
            created_at: now,
            updated_at: now,
        };
        self.store.write(|tx| {
            tx.put(&t)?;
            self.audit(
                tx,
                caller,
                AuditEntry::new(AuditAction::TenantCreated)
                    .target("tenant", &t.id, Some(&t.name))
                    .in_tenant(&t.id),
            )?;
            self.start_subscription(tx, &t.id)
        })?;
        Ok(t)
    }

    pub fn get_tenant(&self, caller: &Caller, id: &TenantId) -> Result<Tenant> {
        caller
            .require_in(id, Action::ReadTenant)
            .map_err(|d| Error::denied(d, "tenant"))?;
        self.store
            .read(|tx| tx.get::<Tenant>(id, ""))?
            .ok_or(Error::NotFound("tenant"))
    }

    pub fn update_tenant(
        &self,
        caller: &Caller,
        id: &TenantId,
        patch: TenantPatch,
    ) -> Result<Tenant> {
        caller
            .require_in(id, Action::UpdateTenant)
            .map_err(|d| Error::denied(d, "tenant"))?;
        let mut c = Checks::default();
        if let Some(n) = &patch.name {
            c.text("name", n, 200);
        }
        if patch.status.is_some() && !caller.is_platform_admin() {
            c.fail(
                "status",
                "only a platform admin can suspend or reactivate a tenant",
            );
        }
        if let Some(s) = &patch.settings {
            c.check(s.is_object(), "settings", "must be an object");
            c.check(
                serde_json::to_vec(s).map(|v| v.len()).unwrap_or(usize::MAX) <= 64 * 1024,
                "settings",
                "must be at most 64 KiB",
            );
        }
        c.finish()?;
        self.store.write(|tx| {
            let mut t = tx.get::<Tenant>(id, "")?.ok_or(Error::NotFound("tenant"))?;
            let target = |t: &Tenant, a| {
                AuditEntry::new(a)
                    .target("tenant", &t.id, Some(&t.name))
                    .in_tenant(&t.id)
            };
            if let Some(n) = patch.name {
                let n: String = n.trim().into();
                if n != t.name {
                    let e = target(&t, AuditAction::TenantUpdated)
                        .details(serde_json::json!({ "keys": ["name"], "from": t.name, "to": n }));
                    self.audit(tx, caller, e)?;
                }
                t.name = n;
            }
            if let Some(s) = patch.status {
                if s != t.status {
                    let a = match s {
                        TenantStatus::Suspended => AuditAction::TenantSuspended,
                        TenantStatus::Active => AuditAction::TenantReactivated,
                    };
                    self.audit(tx, caller, target(&t, a))?;
                }
                t.status = s;
            }
            if let Some(s) = patch.settings {
                let keys = changed_keys(&t.settings, &s);
                if !keys.is_empty() {
                    let e = target(&t, AuditAction::SettingsChanged)
                        .details(serde_json::json!({ "scope": "tenant", "keys": keys }));
                    self.audit(tx, caller, e)?;
                }
                t.settings = s;
            }
            t.updated_at = now();
            tx.put(&t)?;
            Ok(t)
        })
    }

    /// The caller acting in `tenant` (the `X-Tenant-Id` header). Only platform admins may
    /// act in another tenant: anyone else naming a tenant other than their own is refused
    /// (`Forbidden`, whether or not it exists); a platform admin naming a tenant that does
    /// not exist gets `NotFound("tenant")`.
    pub fn act_in(&self, caller: Caller, tenant: &TenantId) -> Result<Caller> {
        if caller.tenant() == tenant {
            return Ok(caller);
        }
        if !caller.is_platform_admin() {
            return Err(Error::Forbidden(
                "forbidden",
                "only platform admins may act in another tenant (X-Tenant-Id)".into(),
            ));
        }
        let t = self
            .store
            .read(|tx| tx.get::<Tenant>(tenant, ""))?
            .ok_or(Error::NotFound("tenant"))?;
        let acting = caller
            .acting_in(&t)
            .ok_or(Error::denied(crate::auth::Denied::Forbidden, "tenant"))?;
        tracing::info!(
            caller = %caller.label(),
            home = %caller.home_tenant(),
            tenant = %t.id,
            "platform admin acting in a tenant"
        );
        Ok(acting)
    }

    /// Removes the tenant, every record and index entry of it, and its files.
    pub fn delete_tenant(&self, caller: &Caller, id: &TenantId) -> Result<()> {
        caller
            .require_in(id, Action::DeleteTenant)
            .map_err(|d| Error::denied(d, "tenant"))?;
        let rows = self.store.write(|tx| {
            let Some(t) = tx.get::<Tenant>(id, "")? else {
                return Err(Error::NotFound("tenant"));
            };
            // Into the platform scope, which outlives the tenant (its own log goes with it);
            // written first, while the caller's user record still exists.
            self.audit(
                tx,
                caller,
                AuditEntry::new(AuditAction::TenantDeleted)
                    .target("tenant", &t.id, Some(&t.name))
                    .in_tenant(&TenantId::platform()),
            )?;
            Ok(tx.delete_tenant(id)?)
        })?;
        // Index entries live outside the store. The tenant's records are gone already, so
        // a failure here leaves only unreachable entries behind: log it, do not fail.
        if let Some(ix) = self.indexes.get().and_then(std::sync::Weak::upgrade)
            && let Err(e) = ix.forget_tenant(id)
        {
            tracing::error!(tenant = %id, error = %e, "removing a deleted tenant's index entries failed");
        }
        // Through the store: a backup copying files right now defers the removal. The
        // media its channels fetched are kept apart from its other files.
        for dir in [self.tenant_dir(id), self.media_dir(id)] {
            if let Err(e) = self.store.remove_stored(&dir) {
                tracing::error!(tenant = %id, dir = %dir.display(), error = %e, "could not remove tenant files");
                return Err(Error::Internal(format!("removing tenant files: {e}")));
            }
        }
        tracing::info!(tenant = %id, rows, "tenant deleted");
        Ok(())
    }
}
