//! API keys: `ak_` + 32 random bytes, shown once, stored as a keyed hash.

use super::audit::{AuditAction, AuditEntry};
use super::{Checks, Error, PageReq, Result, Services};
use crate::auth::tokens::random_token;
use crate::auth::{Action, Caller};
use crate::model::ApiKey;
use crate::store::{Index, Page, make_ref};
use crate::types::*;

impl Services {
    pub fn list_api_keys(&self, caller: &Caller, page: &PageReq) -> Result<Page<ApiKey>> {
        caller
            .require(Action::ManageApiKeys)
            .map_err(|d| Error::denied(d, "api_key"))?;
        let p = self.store.read(|tx| {
            tx.list::<ApiKey>(
                caller.tenant(),
                None,
                page.cursor.as_deref(),
                page.limit,
                false,
            )
        })?;
        Ok(Page {
            items: p.items,
            next: p.next,
        })
    }

    /// Creates a key with at most the caller's role. Returns it and its secret (shown once).
    pub fn create_api_key(
        &self,
        caller: &Caller,
        name: &str,
        role: Option<Role>,
        expires_at: Option<Timestamp>,
    ) -> Result<(ApiKey, String)> {
        caller
            .require(Action::ManageApiKeys)
            .map_err(|d| Error::denied(d, "api_key"))?;
        // Only people and keys may manage keys, and they have a role.
        let own = caller
            .role()
            .ok_or(Error::denied(crate::auth::Denied::Forbidden, "api_key"))?;
        let role = role.unwrap_or(own);
        let mut c = Checks::default();
        c.text("name", name, 100);
        c.check(
            own.covers(role),
            "role",
            "cannot be higher than your own role",
        );
        c.check(
            role != Role::PlatformAdmin || caller.tenant().is_platform(),
            "role",
            "PLATFORM_ADMIN keys can only be made by platform admins",
        );
        if let Some(e) = expires_at {
            c.check(e > now(), "expiresAt", "must be in the future");
        }
        c.finish()?;
        let secret = format!("ak_{}", random_token(32));
        let key = ApiKey {
            id: ApiKeyId::new(),
            tenant_id: caller.tenant().clone(),
            name: name.trim().into(),
            prefix: secret.chars().take(11).collect(),
            key_hash: self.keys.hash_token(&secret),
            role,
            created_by: caller.user().cloned(),
            created_at: now(),
            last_used_at: None,
            expires_at,
        };
        let crossed = self.store.write(|tx| {
            let crossed = self.use_quota(tx, &key.tenant_id, super::plans::Limit::ApiKeys, 1)?;
            tx.index_insert_new(
                Index::ApiKeyHash,
                &key.key_hash,
                &make_ref(&key.tenant_id, key.id.as_str()),
            )?;
            tx.put(&key)?;
            self.audit(
                tx,
                caller,
                AuditEntry::new(AuditAction::ApiKeyCreated)
                    .target("api_key", &key.id, Some(&key.name))
                    .details(serde_json::json!({ "role": key.role })),
            )?;
            Ok::<_, Error>(crossed)
        })?;
        self.announce(crossed);
        Ok((key, secret))
    }

    pub fn delete_api_key(&self, caller: &Caller, id: &ApiKeyId) -> Result<()> {
        caller
            .require(Action::ManageApiKeys)
            .map_err(|d| Error::denied(d, "api_key"))?;
        self.store.write(|tx| {
            let k = tx
                .get::<ApiKey>(caller.tenant(), id.as_str())?
                .ok_or(Error::NotFound("api_key"))?;
            tx.index_remove(Index::ApiKeyHash, &k.key_hash)?;
            tx.delete::<ApiKey>(caller.tenant(), id.as_str())?;
            self.audit(
                tx,
                caller,
                AuditEntry::new(AuditAction::ApiKeyDeleted)
                    .target("api_key", &k.id, Some(&k.name))
                    .details(serde_json::json!({ "role": k.role })),
            )?;
            Ok(())
        })
    }
}
