//! Users of a tenant: listing, invitations, role changes and removal (never the last admin).

use super::audit::{AuditAction, AuditEntry};
use super::auth::revoke_user_sessions;
use super::{Checks, Error, PageReq, Result, Services, normalize_email};
use crate::auth::tokens::random_token;
use crate::auth::{Action, Caller};
use crate::model::{Invitation, Tenant, User};
use crate::store::{Index, Page, WriteTx, make_ref};
use crate::types::*;

/// A created invitation, with the link to send (the token appears only here).
pub struct Invited {
    pub invitation: Invitation,
    pub invite_url: String,
    pub tenant_name: String,
}

pub struct UserPatch {
    pub role: Option<Role>,
    pub name: Option<String>,
}

impl Services {
    fn tenant_exists(&self, id: &TenantId) -> Result<Tenant> {
        self.store
            .read(|tx| tx.get::<Tenant>(id, ""))?
            .ok_or(Error::NotFound("tenant"))
    }

    pub fn list_users(
        &self,
        caller: &Caller,
        tid: &TenantId,
        page: &PageReq,
    ) -> Result<Page<User>> {
        caller
            .require_in(tid, Action::ReadUsers)
            .map_err(|d| Error::denied(d, "tenant"))?;
        self.tenant_exists(tid)?;
        Ok(self
            .store
            .read(|tx| tx.list::<User>(tid, None, page.cursor.as_deref(), page.limit, false))?)
    }

    pub fn list_invitations(
        &self,
        caller: &Caller,
        tid: &TenantId,
        page: &PageReq,
    ) -> Result<Page<Invitation>> {
        caller
            .require_in(tid, Action::ManageUsers)
            .map_err(|d| Error::denied(d, "tenant"))?;
        self.tenant_exists(tid)?;
        Ok(self.store.read(|tx| {
            tx.list::<Invitation>(tid, None, page.cursor.as_deref(), page.limit, false)
        })?)
    }

    pub fn revoke_invitation(
        &self,
        caller: &Caller,
        tid: &TenantId,
        id: &InvitationId,
    ) -> Result<()> {
        caller
            .require_in(tid, Action::ManageUsers)
            .map_err(|d| Error::denied(d, "tenant"))?;
        self.store.write(|tx| {
            let inv = tx
                .get::<Invitation>(tid, id.as_str())?
                .ok_or(Error::NotFound("invitation"))?;
            tx.index_remove(Index::InvitationToken, &inv.token_hash)?;
            tx.delete::<Invitation>(tid, id.as_str())?;
            self.audit(
                tx,
                caller,
                AuditEntry::new(AuditAction::InvitationRevoked)
                    .target("invitation", &inv.id, Some(&inv.email))
                    .in_tenant(tid),
            )?;
            Ok(())
        })
    }

    pub fn invite_user(
        &self,
        caller: &Caller,
        tid: &TenantId,
        email: &str,
        role: Role,
        name: Option<&str>,
    ) -> Result<Invited> {
        caller
            .require_in(tid, Action::ManageUsers)
            .map_err(|d| Error::denied(d, "tenant"))?;
        if self.config.signup == SignupMode::Closed {
            return Err(Error::Forbidden(
                "signup_disabled",
                "joining is turned off on this server (SIGNUP=closed)".into(),
            ));
        }
        let mut c = Checks::default();
        c.email("email", email);
        c.check(
            role != Role::PlatformAdmin,
            "role",
            "must be TENANT_ADMIN or TENANT_USER",
        );
        if let Some(n) = name {
            c.text("name", n, 200);
        }
        c.finish()?;
        let tenant = self.tenant_exists(tid)?;
        let email = normalize_email(email);
        let token = random_token(32);
        let now = now();
        let inv = Invitation {
            id: InvitationId::new(),
            tenant_id: tid.clone(),
            email: email.clone(),
            role,
            name: name.map(|n| n.trim().to_string()),
            token_hash: self.keys.hash_token(&token),
            invited_by: caller.user().cloned(),
            created_at: now,
            expires_at: now + self.config.invite_ttl(),
            accepted_at: None,
        };
        let invite_url = format!("{}/accept-invite?token={token}", self.public_url());
        let (mail, crossed) = self.store.write(|tx| -> Result<_> {
            if tx.index_get(Index::UserEmail, &email)?.is_some() {
                return Err(Error::Conflict(
                    "email_taken",
                    "an account with this email already exists".into(),
                    None,
                ));
            }
            // A pending invitation holds its seat until it is accepted or withdrawn.
            let crossed = self.use_quota(tx, tid, super::plans::Limit::Seats, 1)?;
            tx.index_insert_new(
                Index::InvitationToken,
                &inv.token_hash,
                &make_ref(tid, inv.id.as_str()),
            )?;
            tx.put(&inv)?;
            self.audit(
                tx,
                caller,
                AuditEntry::new(AuditAction::InvitationSent)
                    .target("invitation", &inv.id, Some(&inv.email))
                    .details(serde_json::json!({ "role": inv.role }))
                    .in_tenant(tid),
            )?;
            // With SMTP, the invitation's mail commits with it (sent by the mail job).
            if self.config.smtp_url.is_none() {
                return Ok((None, crossed));
            }
            let body = format!(
                "Hello,\n\nYou have been invited to join {} on aigentable as {}.\nOpen this link to create your account:\n\n{invite_url}\n",
                tenant.name,
                inv.role.as_str(),
            );
            let job = crate::mail::enqueue_in(
                tx,
                &self.sealer,
                tid,
                &crate::mail::Outgoing {
                    to: &inv.email,
                    subject: "You are invited to aigentable",
                    body: &body,
                },
            )?;
            Ok((Some(job), crossed))
        })?;
        self.announce(crossed);
        if let Some(job) = &mail {
            self.jobs.wake(job);
        }
        Ok(Invited {
            invitation: inv,
            invite_url,
            tenant_name: tenant.name,
        })
    }

    pub fn update_user(
        &self,
        caller: &Caller,
        tid: &TenantId,
        uid: &UserId,
        patch: UserPatch,
    ) -> Result<User> {
        caller
            .require_in(tid, Action::ManageUsers)
            .map_err(|d| Error::denied(d, "tenant"))?;
        let mut c = Checks::default();
        if let Some(r) = patch.role {
            c.check(
                r != Role::PlatformAdmin,
                "role",
                "must be TENANT_ADMIN or TENANT_USER",
            );
        }
        if let Some(n) = &patch.name {
            c.text("name", n, 200);
        }
        c.finish()?;
        self.store.write(|tx| {
            let mut u = tx
                .get::<User>(tid, uid.as_str())?
                .ok_or(Error::NotFound("user"))?;
            if let Some(r) = patch.role {
                if u.role == Role::TenantAdmin && r != Role::TenantAdmin {
                    ensure_not_last_admin(tx, tid, &u)?;
                }
                if u.role != r {
                    self.audit(
                        tx,
                        caller,
                        AuditEntry::new(AuditAction::UserRoleChanged)
                            .target("user", &u.id, Some(&u.email))
                            .details(serde_json::json!({ "from": u.role, "to": r }))
                            .in_tenant(tid),
                    )?;
                }
                u.role = r;
            }
            if let Some(n) = patch.name {
                u.name = n.trim().into();
            }
            u.updated_at = now();
            tx.put(&u)?;
            Ok(u)
        })
    }

    pub fn delete_user(&self, caller: &Caller, tid: &TenantId, uid: &UserId) -> Result<()> {
        caller
            .require_in(tid, Action::ManageUsers)
            .map_err(|d| Error::denied(d, "tenant"))?;
        self.store.write(|tx| {
            let u = tx
                .get::<User>(tid, uid.as_str())?
                .ok_or(Error::NotFound("user"))?;
            if u.role == Role::TenantAdmin {
                ensure_not_last_admin(tx, tid, &u)?;
            }
            revoke_user_sessions(tx, &u, "user removed")?;
            tx.index_remove(Index::UserEmail, &u.email)?;
            tx.delete::<User>(tid, uid.as_str())?;
            self.audit(
                tx,
                caller,
                AuditEntry::new(AuditAction::UserRemoved)
                    .target("user", &u.id, Some(&u.email))
                    .details(serde_json::json!({ "role": u.role }))
                    .in_tenant(tid),
            )?;
            Ok(())
        })
    }
}

fn ensure_not_last_admin(tx: &WriteTx, tid: &TenantId, u: &User) -> Result<()> {
    let admins = tx.scan::<User>(tid, None, |x| x.role == Role::TenantAdmin && x.id != u.id)?;
    if admins.is_empty() {
        return Err(Error::Conflict(
            "last_admin",
            "a tenant must keep at least one TENANT_ADMIN".into(),
            None,
        ));
    }
    Ok(())
}
