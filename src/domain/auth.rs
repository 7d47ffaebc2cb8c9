//! Sign-up, sign-in, sessions with rotating refresh tokens, password reset, invitations,
//! and turning a presented credential into a [`Caller`].

use super::audit::{AuditAction, AuditEntry};
use super::{Checks, ClientMeta, Error, Result, Services, normalize_email, slugify};
use crate::auth::tokens::{ct_eq, random_token};
use crate::auth::{Caller, password};
use crate::model::*;
use crate::store::{Index, WriteTx, make_ref, split_ref};
use crate::types::*;
use serde::Serialize;
use utoipa::ToSchema;

/// How many rotated-away refresh token hashes a session remembers for reuse detection.
const REMEMBERED_ROTATIONS: usize = 32;
const RESET_TTL: time::Duration = time::Duration::hours(1);

/// A fresh access/refresh pair.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

/// What sign-up, sign-in and invite acceptance return.
#[derive(Debug)]
pub struct SignedIn {
    pub user: User,
    pub tenant: Option<Tenant>,
    pub tokens: TokenPair,
}

pub struct RegisterInput {
    pub email: String,
    pub password: String,
    pub name: String,
    pub tenant_name: String,
}

impl Services {
    fn new_session(&self, tx: &WriteTx, user: &User, meta: &ClientMeta) -> Result<TokenPair> {
        let sid = SessionId::new();
        let secret = random_token(32);
        let now = now();
        let session = Session {
            id: sid.clone(),
            tenant_id: user.tenant_id.clone(),
            user_id: user.id.clone(),
            refresh_hash: self.keys.hash_token(&secret),
            previous_hashes: Vec::new(),
            created_at: now,
            expires_at: now + self.config.refresh_ttl(),
            last_used_at: now,
            revoked_at: None,
            revoked_reason: None,
            user_agent: meta.user_agent.clone(),
            ip: meta.ip.clone(),
        };
        tx.put(&session)?;
        Ok(TokenPair {
            access_token: self.keys.issue(&user.id, &user.tenant_id, user.role, &sid),
            refresh_token: format!("{}.{}.{}", user.tenant_id, sid, secret),
            expires_in: self.keys.access_ttl.as_secs(),
        })
    }

    /// Creates a tenant and its first TENANT_ADMIN, signed in.
    pub fn register(&self, input: RegisterInput, meta: &ClientMeta) -> Result<SignedIn> {
        if self.config.signup != SignupMode::Open {
            return Err(Error::Forbidden(
                "signup_disabled",
                "self-service sign-up is turned off on this server; ask an administrator for an invitation".into(),
            ));
        }
        let mut c = Checks::default();
        c.email("email", &input.email);
        c.password("password", &input.password);
        c.text("name", &input.name, 200);
        c.text("tenantName", &input.tenant_name, 200);
        c.finish()?;
        let email = normalize_email(&input.email);
        let hash = password::hash(&input.password).map_err(Error::Internal)?;
        let now = now();
        let tenant = Tenant {
            id: TenantId::new(),
            name: input.tenant_name.trim().into(),
            slug: slugify(&input.tenant_name),
            status: TenantStatus::Active,
            settings: serde_json::json!({}),
            created_at: now,
            updated_at: now,
        };
        let user = User {
            id: UserId::new(),
            tenant_id: tenant.id.clone(),
            email: email.clone(),
            name: input.name.trim().into(),
            role: Role::TenantAdmin,
            password_hash: hash,
            created_at: now,
            updated_at: now,
            last_login_at: Some(now),
        };
        let tokens = self.store.write(|tx| {
            claim_email(tx, &email, &user)?;
            tx.put(&tenant)?;
            self.start_subscription(tx, &tenant.id)?;
            tx.put(&user)?;
            self.audit_user(
                tx,
                &user,
                meta,
                AuditEntry::new(AuditAction::Registered).target(
                    "tenant",
                    &tenant.id,
                    Some(&tenant.name),
                ),
            )?;
            self.new_session(tx, &user, meta)
        })?;
        Ok(SignedIn {
            user,
            tenant: Some(tenant),
            tokens,
        })
    }

    /// Email + password. Unknown email and wrong password fail the same way, in about the
    /// same time (a dummy hash is verified for unknown emails).
    pub fn login(&self, email: &str, pw: &str, meta: &ClientMeta) -> Result<SignedIn> {
        let bad = || Error::Unauthorized("invalid_credentials", "invalid email or password".into());
        let email = normalize_email(email);
        let user = self.user_by_email(&email)?;
        let Some(mut user) = user else {
            password::verify_dummy(pw);
            self.login_failed(&email, None, meta, "unknown_email");
            return Err(bad());
        };
        if !password::verify(pw, &user.password_hash) {
            self.login_failed(&email, Some(&user), meta, "wrong_password");
            return Err(bad());
        }
        let tenant = match self.active_tenant_of(&user) {
            Ok(t) => t,
            Err(e) => {
                let reason = match &e {
                    Error::Forbidden(code, _) => code,
                    _ => "tenant_missing",
                };
                self.login_failed(&email, Some(&user), meta, reason);
                return Err(e);
            }
        };
        user.last_login_at = Some(now());
        let tokens = self.store.write(|tx| {
            tx.put(&user)?;
            self.audit_user(tx, &user, meta, AuditEntry::new(AuditAction::Login))?;
            self.new_session(tx, &user, meta)
        })?;
        Ok(SignedIn {
            user,
            tenant,
            tokens,
        })
    }

    /// Records a failed sign-in; a failure to record it is logged, never the caller's problem.
    fn login_failed(&self, email: &str, user: Option<&User>, meta: &ClientMeta, reason: &str) {
        if let Err(e) = self.audit_login_failed(email, user, meta, reason) {
            tracing::warn!(error = %e, "could not record a failed sign-in in the audit log");
        }
    }

    /// The user with a (normalised) email, in whichever tenant.
    fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        Ok(self.store.read(|tx| {
            let Some(r) = tx.index_get(Index::UserEmail, email)? else {
                return Ok(None);
            };
            let Some((tid, uid)) = split_ref(&r) else {
                return Ok(None);
            };
            tx.get::<User>(&tid, uid)
        })?)
    }

    /// The user's tenant (none for platform admins); a suspended tenant cannot sign in.
    fn active_tenant_of(&self, user: &User) -> Result<Option<Tenant>> {
        if user.tenant_id.is_platform() {
            return Ok(None);
        }
        let t = self
            .store
            .read(|tx| tx.get::<Tenant>(&user.tenant_id, ""))?
            .ok_or(Error::Unauthorized(
                "invalid_credentials",
                "invalid email or password".into(),
            ))?;
        if t.status == TenantStatus::Suspended {
            return Err(Error::Forbidden(
                "tenant_suspended",
                "this workspace is suspended".into(),
            ));
        }
        Ok(Some(t))
    }

    /// Rotates a refresh token. A token that was already rotated away revokes its session.
    pub fn refresh(&self, token: &str, meta: &ClientMeta) -> Result<(User, TokenPair)> {
        let invalid = || {
            Error::Unauthorized(
                "invalid_refresh_token",
                "refresh token is invalid or expired".into(),
            )
        };
        let mut parts = token.splitn(3, '.');
        let (Some(t), Some(s), Some(secret)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(invalid());
        };
        let (Some(tid), Some(sid)) = (TenantId::parse(t), SessionId::parse(s)) else {
            return Err(invalid());
        };
        let hash = self.keys.hash_token(secret);
        enum Outcome {
            Rotated(Box<(User, TokenPair)>),
            Reused,
            Invalid,
        }
        let outcome = self.store.write(|tx| {
            let Some(mut session) = tx.get::<Session>(&tid, sid.as_str())? else {
                return Ok(Outcome::Invalid);
            };
            let now = now();
            if session.revoked_at.is_some() || session.expires_at <= now {
                return Ok(Outcome::Invalid);
            }
            if !ct_eq(&session.refresh_hash, &hash) {
                if session.previous_hashes.iter().any(|h| ct_eq(h, &hash)) {
                    session.revoked_at = Some(now);
                    session.revoked_reason = Some("refresh token reuse".into());
                    tx.put(&session)?;
                    self.audit_anonymous(
                        tx,
                        &tid,
                        None,
                        Some(meta),
                        AuditEntry::new(AuditAction::RefreshTokenReused)
                            .target("user", &session.user_id, None)
                            .details(serde_json::json!({ "sessionId": session.id }))
                            .failed(),
                    )?;
                    return Ok(Outcome::Reused);
                }
                return Ok(Outcome::Invalid);
            }
            let Some(user) = tx.get::<User>(&tid, session.user_id.as_str())? else {
                return Ok(Outcome::Invalid);
            };
            let new_secret = random_token(32);
            let old =
                std::mem::replace(&mut session.refresh_hash, self.keys.hash_token(&new_secret));
            session.previous_hashes.push(old);
            if session.previous_hashes.len() > REMEMBERED_ROTATIONS {
                session.previous_hashes.remove(0);
            }
            session.last_used_at = now;
            session.expires_at = now + self.config.refresh_ttl();
            if meta.ip.is_some() {
                session.ip = meta.ip.clone();
            }
            tx.put(&session)?;
            let pair = TokenPair {
                access_token: self.keys.issue(&user.id, &tid, user.role, &sid),
                refresh_token: format!("{tid}.{sid}.{new_secret}"),
                expires_in: self.keys.access_ttl.as_secs(),
            };
            Ok::<_, Error>(Outcome::Rotated(Box::new((user, pair))))
        })?;
        match outcome {
            Outcome::Rotated(b) => {
                let (u, p) = *b;
                if !u.tenant_id.is_platform() {
                    self.active_tenant_of(&u)?;
                }
                Ok((u, p))
            }
            Outcome::Reused => {
                tracing::warn!(tenant = %tid, session = %sid, "refresh token reuse detected; session revoked");
                Err(Error::Unauthorized(
                    "refresh_token_reused",
                    "this refresh token was already used; the session has been revoked, sign in again".into(),
                ))
            }
            Outcome::Invalid => Err(invalid()),
        }
    }

    /// Revokes the caller's session, and the session of `refresh` when it is the caller's too.
    pub fn logout(&self, caller: &Caller, refresh: Option<&str>) -> Result<()> {
        let mut sids = Vec::new();
        if let Some(s) = caller.session() {
            sids.push(s.clone());
        }
        // A platform admin acting in a tenant still has its session at home.
        let home = caller.home_tenant();
        if let Some(r) = refresh {
            let mut p = r.splitn(3, '.');
            if let (Some(t), Some(s)) = (p.next(), p.next())
                && TenantId::parse(t).as_ref() == Some(home)
                && let Some(sid) = SessionId::parse(s)
            {
                sids.push(sid);
            }
        }
        self.store.write(|tx| {
            for sid in &sids {
                if let Some(mut s) = tx.get::<Session>(home, sid.as_str())?
                    && Some(&s.user_id) == caller.user()
                    && s.revoked_at.is_none()
                {
                    s.revoked_at = Some(now());
                    s.revoked_reason = Some("logout".into());
                    tx.put(&s)?;
                }
            }
            Ok::<_, Error>(())
        })
    }

    /// Starts a password reset. Returns the mail to send, or nothing for unknown emails;
    /// the caller answers the same either way.
    pub fn forgot(&self, email: &str, meta: &ClientMeta) -> Result<()> {
        if self.config.smtp_url.is_none() {
            // The link would have nowhere to go but the log: make none.
            tracing::info!(
                "a password reset was requested, but no mail server is configured (SMTP_URL); \
                 an operator can print a reset link with `aigentable admin reset-link --email <email>`"
            );
            return Ok(());
        }
        let email = normalize_email(email);
        let Some(user) = self.user_by_email(&email)? else {
            return Ok(());
        };
        let (reset, url) = self.new_reset(&user);
        let body = format!(
            "Hello {},\n\nSomeone asked to reset the password of your aigentable account.\nOpen this link within one hour to choose a new password:\n\n{url}\n\nIf it was not you, ignore this mail.\n",
            user.name
        );
        // The token and its mail commit together: an accepted request is mailed even if the
        // server stops right after.
        let job = self.store.write(|tx| {
            Self::put_reset(tx, &reset)?;
            self.audit_anonymous(
                tx,
                &user.tenant_id,
                Some(&email),
                Some(meta),
                AuditEntry::new(AuditAction::PasswordResetRequested).target(
                    "user",
                    &user.id,
                    Some(&user.email),
                ),
            )?;
            Ok::<_, Error>(crate::mail::enqueue_in(
                tx,
                &self.sealer,
                &user.tenant_id,
                &crate::mail::Outgoing {
                    to: &user.email,
                    subject: "Reset your aigentable password",
                    body: &body,
                },
            )?)
        })?;
        self.jobs.wake(&job);
        Ok(())
    }

    /// A fresh password-reset link for `email`, for an operator without mail (`aigentable
    /// admin reset-link`): shown to whoever runs it, never logged.
    pub fn reset_link(&self, email: &str) -> Result<String> {
        let email = normalize_email(email);
        let user = self.user_by_email(&email)?.ok_or(Error::NotFound("user"))?;
        let (reset, url) = self.new_reset(&user);
        self.store.write(|tx| {
            Self::put_reset(tx, &reset)?;
            // By whoever runs the command on the server: no caller, no address.
            self.audit_anonymous(
                tx,
                &user.tenant_id,
                None,
                None,
                AuditEntry::new(AuditAction::PasswordResetRequested)
                    .target("user", &user.id, Some(&user.email))
                    .details(serde_json::json!({ "via": "admin reset-link" })),
            )
        })?;
        Ok(url)
    }

    /// A reset record (only the token's keyed hash) and the link carrying the token.
    fn new_reset(&self, user: &User) -> (PasswordReset, String) {
        let token = random_token(32);
        let now = now();
        let reset = PasswordReset {
            id: PasswordResetId::new(),
            tenant_id: user.tenant_id.clone(),
            user_id: user.id.clone(),
            token_hash: self.keys.hash_token(&token),
            created_at: now,
            expires_at: now + RESET_TTL,
            used_at: None,
        };
        let url = format!("{}/reset-password?token={token}", self.public_url());
        (reset, url)
    }

    fn put_reset(tx: &WriteTx, reset: &PasswordReset) -> Result<()> {
        tx.index_insert_new(
            Index::ResetToken,
            &reset.token_hash,
            &make_ref(&reset.tenant_id, reset.id.as_str()),
        )?;
        tx.put(reset)?;
        Ok(())
    }

    /// Sets a new password with a reset token (single use, 1 hour) and revokes every session
    /// of that user.
    pub fn reset(&self, token: &str, new_password: &str, meta: &ClientMeta) -> Result<()> {
        let mut c = Checks::default();
        c.password("password", new_password);
        c.finish()?;
        let invalid = || {
            Error::Invalid(
                "invalid_token",
                "the reset link is invalid or has expired".into(),
            )
        };
        let hash = self.keys.hash_token(token);
        let pw_hash = password::hash(new_password).map_err(Error::Internal)?;
        self.store.write(|tx| {
            let Some(r) = tx.index_get(Index::ResetToken, &hash)? else {
                return Err(invalid());
            };
            let Some((tid, rid)) = split_ref(&r) else {
                return Err(invalid());
            };
            let Some(mut reset) = tx.get::<PasswordReset>(&tid, rid)? else {
                return Err(invalid());
            };
            tx.index_remove(Index::ResetToken, &hash)?;
            let now = now();
            if reset.used_at.is_some() || reset.expires_at <= now {
                return Err(invalid());
            }
            reset.used_at = Some(now);
            tx.put(&reset)?;
            let Some(mut user) = tx.get::<User>(&tid, reset.user_id.as_str())? else {
                return Err(invalid());
            };
            user.password_hash = pw_hash;
            user.updated_at = now;
            tx.put(&user)?;
            revoke_user_sessions(tx, &user, "password reset")?;
            self.audit_user(tx, &user, meta, AuditEntry::new(AuditAction::PasswordReset))?;
            Ok(())
        })
    }

    /// Accepts an invitation: creates the user with the invited email and role, signed in.
    pub fn accept_invite(
        &self,
        token: &str,
        name: &str,
        pw: &str,
        meta: &ClientMeta,
    ) -> Result<SignedIn> {
        if self.config.signup == SignupMode::Closed {
            return Err(Error::Forbidden(
                "signup_disabled",
                "joining is turned off on this server".into(),
            ));
        }
        let mut c = Checks::default();
        c.text("name", name, 200);
        c.password("password", pw);
        c.finish()?;
        let invalid = || {
            Error::Invalid(
                "invalid_token",
                "the invitation is invalid, used or expired".into(),
            )
        };
        let hash = self.keys.hash_token(token);
        let pw_hash = password::hash(pw).map_err(Error::Internal)?;
        let (user, tokens) = self.store.write(|tx| {
            let Some(r) = tx.index_get(Index::InvitationToken, &hash)? else {
                return Err(invalid());
            };
            let Some((tid, iid)) = split_ref(&r) else {
                return Err(invalid());
            };
            let Some(mut inv) = tx.get::<Invitation>(&tid, iid)? else {
                return Err(invalid());
            };
            let now = now();
            if inv.accepted_at.is_some() || inv.expires_at <= now {
                return Err(invalid());
            }
            if tx.get::<Tenant>(&tid, "")?.is_none() {
                return Err(invalid());
            }
            // The pending invitation holds a seat; after a downgrade below the seats in
            // use, it cannot turn into a user.
            self.within_quota(tx, &tid, super::plans::Limit::Seats)?;
            inv.accepted_at = Some(now);
            tx.put(&inv)?;
            tx.index_remove(Index::InvitationToken, &hash)?;
            let user = User {
                id: UserId::new(),
                tenant_id: tid.clone(),
                email: inv.email.clone(),
                name: name.trim().into(),
                role: inv.role,
                password_hash: pw_hash,
                created_at: now,
                updated_at: now,
                last_login_at: Some(now),
            };
            claim_email(tx, &user.email, &user)?;
            tx.put(&user)?;
            self.audit_user(
                tx,
                &user,
                meta,
                AuditEntry::new(AuditAction::InvitationAccepted)
                    .target("invitation", &inv.id, Some(&inv.email))
                    .details(serde_json::json!({ "role": inv.role })),
            )?;
            let tokens = self.new_session(tx, &user, meta)?;
            Ok((user, tokens))
        })?;
        let tenant = self.active_tenant_of(&user)?;
        Ok(SignedIn {
            user,
            tenant,
            tokens,
        })
    }

    /// Checks an access token and its session; the role comes from the user record, so a role
    /// change or a removal takes effect at once.
    pub fn authenticate_access(&self, token: &str) -> Result<Caller> {
        let bad =
            || Error::Unauthorized("invalid_token", "access token is invalid or expired".into());
        let claims = self.keys.verify(token).ok_or_else(bad)?;
        let (session, user, tenant) = self.store.read(|tx| {
            Ok((
                tx.get::<Session>(&claims.tid, claims.sid.as_str())?,
                tx.get::<User>(&claims.tid, claims.sub.as_str())?,
                if claims.tid.is_platform() {
                    None
                } else {
                    tx.get::<Tenant>(&claims.tid, "")?
                },
            ))
        })?;
        let (Some(session), Some(user)) = (session, user) else {
            return Err(bad());
        };
        if session.revoked_at.is_some() || session.user_id != user.id {
            return Err(Error::Unauthorized(
                "session_revoked",
                "this session has ended; sign in again".into(),
            ));
        }
        if !claims.tid.is_platform() {
            match tenant {
                None => return Err(bad()),
                Some(t) if t.status == TenantStatus::Suspended => {
                    return Err(Error::Forbidden(
                        "tenant_suspended",
                        "this workspace is suspended".into(),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(Caller::staff_session(&user, claims.sid))
    }

    /// When a valid access token expires (seconds since the Unix epoch); `None` when it is
    /// not a valid token. A socket authenticated with it ends then.
    pub fn access_token_expiry(&self, token: &str) -> Option<u64> {
        self.keys.verify(token).map(|c| c.exp)
    }

    /// Checks an `ak_...` key. The key acts with the lesser of its role and its creator's
    /// current role, and stops working when its creator leaves the tenant or is deleted.
    /// `lastUsedAt` is written at most once a minute per key.
    pub fn authenticate_api_key(&self, key: &str) -> Result<Caller> {
        let bad = || {
            Error::Unauthorized(
                "invalid_api_key",
                "API key is invalid, revoked or expired".into(),
            )
        };
        if !key.starts_with("ak_") || key.len() > 200 {
            return Err(bad());
        }
        let hash = self.keys.hash_token(key);
        let found = self.store.read(|tx| {
            let Some(r) = tx.index_get(Index::ApiKeyHash, &hash)? else {
                return Ok(None);
            };
            let Some((tid, kid)) = split_ref(&r) else {
                return Ok(None);
            };
            let Some(k) = tx.get::<ApiKey>(&tid, kid)? else {
                return Ok(None);
            };
            let t = if tid.is_platform() {
                None
            } else {
                tx.get::<Tenant>(&tid, "")?
            };
            // The creator as of now: a member of the key's tenant, or a platform admin
            // (whose user lives in the platform scope) who made the key while acting there.
            let creator = match &k.created_by {
                Some(u) => match tx.get::<User>(&tid, u.as_str())? {
                    Some(u) => Some(u),
                    None => tx.get::<User>(&TenantId::platform(), u.as_str())?,
                },
                None => None,
            };
            Ok(Some((k, t, creator)))
        })?;
        let Some((mut k, tenant, Some(creator))) = found else {
            return Err(bad());
        };
        // Min(key role, creator's current role); none at all once the creator is gone.
        let caller = Caller::api_key(&k, &creator).ok_or_else(bad)?;
        let now = self.clock.now();
        if k.expires_at.is_some_and(|e| e <= now) {
            return Err(bad());
        }
        if !k.tenant_id.is_platform() {
            match tenant {
                None => return Err(bad()),
                Some(t) if t.status == TenantStatus::Suspended => {
                    return Err(Error::Forbidden(
                        "tenant_suspended",
                        "this workspace is suspended".into(),
                    ));
                }
                Some(_) => {}
            }
        }
        if k.last_used_at
            .is_none_or(|t| now - t > time::Duration::minutes(1))
        {
            k.last_used_at = Some(now);
            let kk = k.clone();
            self.store.write(|tx| {
                // Only if it still exists (not revoked meanwhile).
                if tx.get::<ApiKey>(&kk.tenant_id, kk.id.as_str())?.is_some() {
                    tx.put(&kk)?;
                }
                Ok::<_, Error>(())
            })?;
        }
        Ok(caller)
    }

    /// The caller's user and tenant.
    pub fn me(&self, caller: &Caller) -> Result<(Option<User>, Option<Tenant>)> {
        self.store
            .read(|tx| {
                let user = match (caller.user(), caller.api_key_id()) {
                    (Some(u), None) => tx.get::<User>(caller.home_tenant(), u.as_str())?,
                    _ => None,
                };
                let tenant = if caller.tenant().is_platform() {
                    None
                } else {
                    tx.get::<Tenant>(caller.tenant(), "")?
                };
                Ok((user, tenant))
            })
            .map_err(Error::from)
    }

    /// Creates a PLATFORM_ADMIN. With `only_if_none`, does nothing when one exists already
    /// (first-start bootstrap from ADMIN_EMAIL/ADMIN_PASSWORD). Returns whether it created one.
    pub fn create_platform_admin(&self, email: &str, pw: &str, only_if_none: bool) -> Result<bool> {
        let mut c = Checks::default();
        c.email("email", email);
        c.password("password", pw);
        c.finish()?;
        let platform = TenantId::platform();
        if only_if_none {
            let any = self
                .store
                .read(|tx| tx.list::<User>(&platform, None, None, 1, false))?;
            if !any.items.is_empty() {
                return Ok(false);
            }
        }
        let hash = password::hash(pw).map_err(Error::Internal)?;
        let now = now();
        let email = normalize_email(email);
        let user = User {
            id: UserId::new(),
            tenant_id: platform,
            name: email.split('@').next().unwrap_or("admin").to_string(),
            email: email.clone(),
            role: Role::PlatformAdmin,
            password_hash: hash,
            created_at: now,
            updated_at: now,
            last_login_at: None,
        };
        self.store.write(|tx| {
            claim_email(tx, &email, &user)?;
            tx.put(&user)?;
            Ok::<_, Error>(())
        })?;
        Ok(true)
    }
}

/// Reserves a unique email for a user, or fails with 409 `email_taken`.
pub(crate) fn claim_email(tx: &WriteTx, email: &str, user: &User) -> Result<()> {
    if !tx.index_insert_new(
        Index::UserEmail,
        email,
        &make_ref(&user.tenant_id, user.id.as_str()),
    )? {
        return Err(Error::Conflict(
            "email_taken",
            "an account with this email already exists".into(),
            None,
        ));
    }
    Ok(())
}

/// Revokes every live session of a user.
pub(crate) fn revoke_user_sessions(tx: &WriteTx, user: &User, reason: &str) -> Result<()> {
    let sessions = tx.scan::<Session>(&user.tenant_id, None, |s| {
        s.user_id == user.id && s.revoked_at.is_none()
    })?;
    let now = now();
    for mut s in sessions {
        s.revoked_at = Some(now);
        s.revoked_reason = Some(reason.into());
        tx.put(&s)?;
    }
    Ok(())
}
