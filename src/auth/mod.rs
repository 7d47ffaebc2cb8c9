//! Who is calling and what they may do: password hashing, tokens, secrets at rest, and the
//! one permission matrix, and the [`Caller`] every entry point below api/ takes. Depends only
//! on types/, model/ (the records a caller is made from) and config.

pub mod password;
pub mod seal;
pub mod secrets;
pub mod tokens;

use crate::model::{ApiKey, Channel, Job, Tenant, User, Visitor};
use crate::types::{
    ApiKeyId, ChannelId, ConversationId, JobId, Role, SessionId, TenantId, UserId, VisitorId,
};

/// Who is calling, and in which tenant. Made only here, by the named constructors below,
/// from stored records (a user and its session, an API key and its creator, a channel, a
/// conversation, a job), so the tenant of every read or write below api/ comes from a record
/// and never from loose ids. Every tenant-scoped function of domain/, knowledge/ and agent/
/// takes one and asks [`Caller::require`] itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The tenant the caller acts in.
    tenant: TenantId,
    /// Set when a platform admin acts in another tenant: where its own records live.
    home: Option<TenantId>,
    kind: Kind,
    /// Where the request came from (set by the API for HTTP callers), for the audit log.
    client: Option<std::sync::Arc<ClientMeta>>,
}

/// Where a request came from: the client IP (by the server's TRUSTED_PROXIES rules) and
/// user agent. Recorded on sessions and in the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientMeta {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// The kinds of caller. Private: what each may do is decided by [`Caller::allowed`].
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// A person signed in with a session.
    Staff {
        user: UserId,
        session: SessionId,
        role: Role,
    },
    /// An API key, acting with the lesser of its own role and its creator's current role.
    ApiKey {
        key: ApiKeyId,
        creator: UserId,
        role: Role,
    },
    /// A channel's inbound webhook, acting for the channel's tenant (customer side only).
    Webhook { channel: ChannelId },
    /// A website-widget visitor, restricted to their current conversation (none before
    /// their first message).
    Visitor {
        visitor: VisitorId,
        channel: ChannelId,
        conversation: Option<ConversationId>,
    },
    /// A durable background job, acting for the tenant that queued it.
    Job { job: JobId },
}

/// Everything a caller can try to do. The matrix in [`role_allows`] is the single place that
/// says which role may do what (the README's roles table mirrors it); [`Caller::allowed`]
/// narrows it further for callers that are not people or keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// See the tenants one belongs to (all of them for platform admins).
    ReadTenant,
    /// Create tenants on the install.
    CreateTenant,
    UpdateTenant,
    DeleteTenant,
    ReadUsers,
    ManageUsers,
    ManageApiKeys,
    ReadAgents,
    ManageAgents,
    ReadDocuments,
    ManageDocuments,
    /// See channels and their settings (never their credentials).
    ReadChannels,
    ManageChannels,
    ManageSettings,
    /// Read conversations, reply, assign, close.
    WorkConversations,
    ReadAnalytics,
    /// Ask an agent: its model settings, its knowledge, and recording the turn's answer and
    /// analytics (playground, /v1, AI turns).
    RunAgent,
    /// The customer side of a conversation: post customer messages (and, for a channel,
    /// open conversations).
    Converse,
    /// Read the audit log (the tenant's; every tenant's for platform admins).
    ReadAudit,
}

impl Action {
    pub const ALL: [Action; 19] = [
        Action::ReadTenant,
        Action::CreateTenant,
        Action::UpdateTenant,
        Action::DeleteTenant,
        Action::ReadUsers,
        Action::ManageUsers,
        Action::ManageApiKeys,
        Action::ReadAgents,
        Action::ManageAgents,
        Action::ReadDocuments,
        Action::ManageDocuments,
        Action::ReadChannels,
        Action::ManageChannels,
        Action::ManageSettings,
        Action::WorkConversations,
        Action::ReadAnalytics,
        Action::RunAgent,
        Action::Converse,
        Action::ReadAudit,
    ];
}

/// The permission matrix of the roles (people and API keys).
pub fn role_allows(role: Role, action: Action) -> bool {
    use Action::*;
    match role {
        Role::PlatformAdmin => true,
        Role::TenantAdmin => !matches!(action, CreateTenant),
        Role::TenantUser => matches!(
            action,
            ReadTenant
                | ReadUsers
                | ReadAgents
                | ReadDocuments
                | ReadChannels
                | WorkConversations
                | ReadAnalytics
                | RunAgent
                | Converse
        ),
    }
}

/// Why a caller was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// The role lacks the permission.
    Forbidden,
    /// The resource belongs to another tenant: indistinguishable from "does not exist".
    NotFound,
}

/// The less privileged of two roles.
fn lesser(a: Role, b: Role) -> Role {
    if a.covers(b) { b } else { a }
}

impl Caller {
    /// A person signed in with `session`; the role comes from the user record, so a role
    /// change takes effect at the next request.
    pub fn staff_session(user: &User, session: SessionId) -> Caller {
        Caller {
            tenant: user.tenant_id.clone(),
            home: None,
            client: None,
            kind: Kind::Staff {
                user: user.id.clone(),
                session,
                role: user.role,
            },
        }
    }

    /// An API key, acting with the lesser of its stored role and its creator's current role.
    /// `None` when `creator` is not the key's creator, or no longer belongs to the key's
    /// tenant (a platform admin's key in a tenant keeps working while they stay a platform
    /// admin): a key dies with its creator's membership.
    pub fn api_key(key: &ApiKey, creator: &User) -> Option<Caller> {
        if key.created_by.as_ref() != Some(&creator.id) {
            return None;
        }
        let member = creator.tenant_id == key.tenant_id
            || (creator.tenant_id.is_platform() && creator.role == Role::PlatformAdmin);
        if !member {
            return None;
        }
        Some(Caller {
            tenant: key.tenant_id.clone(),
            home: None,
            client: None,
            kind: Kind::ApiKey {
                key: key.id.clone(),
                creator: creator.id.clone(),
                role: lesser(key.role, creator.role),
            },
        })
    }

    /// A channel's inbound webhook, acting for the channel's tenant.
    pub fn channel_webhook(channel: &Channel) -> Caller {
        Caller {
            tenant: channel.tenant_id.clone(),
            home: None,
            client: None,
            kind: Kind::Webhook {
                channel: channel.id.clone(),
            },
        }
    }

    /// A website-widget visitor, from its stored record: may only read and post in the
    /// visitor's current conversation (none before the first message; a new caller is
    /// made from the updated record once one exists).
    pub fn widget_visitor(visitor: &Visitor) -> Caller {
        Caller {
            tenant: visitor.tenant_id.clone(),
            home: None,
            client: None,
            kind: Kind::Visitor {
                visitor: visitor.id.clone(),
                channel: visitor.channel_id.clone(),
                conversation: visitor.conversation_id.clone(),
            },
        }
    }

    /// A durable background job, acting for the tenant that queued it.
    pub fn for_job(job: &Job) -> Caller {
        Caller {
            tenant: job.tenant_id.clone(),
            home: None,
            client: None,
            kind: Kind::Job {
                job: job.id.clone(),
            },
        }
    }

    /// The same platform admin acting in `tenant` (an existing tenant's record). `None` for
    /// anyone else: only platform admins may act in another tenant.
    pub fn acting_in(&self, tenant: &Tenant) -> Option<Caller> {
        if !self.is_platform_admin() {
            return None;
        }
        Some(Caller {
            tenant: tenant.id.clone(),
            home: Some(self.home_tenant().clone()),
            kind: self.kind.clone(),
            client: self.client.clone(),
        })
    }

    /// The same caller, known to come from `client` (the API sets it on every request).
    pub fn with_client(mut self, client: ClientMeta) -> Caller {
        self.client = Some(std::sync::Arc::new(client));
        self
    }

    /// Where the request came from, when the caller came over HTTP.
    pub fn client(&self) -> Option<&ClientMeta> {
        self.client.as_deref()
    }

    /// The tenant this caller reads and writes.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The tenant the caller's own records (user, session, key) live in: the same as
    /// [`tenant`](Self::tenant) unless a platform admin acts in another tenant.
    pub fn home_tenant(&self) -> &TenantId {
        self.home.as_ref().unwrap_or(&self.tenant)
    }

    /// The other tenant a platform admin acts in, if any.
    pub fn acting_for(&self) -> Option<&TenantId> {
        self.home.as_ref().map(|_| &self.tenant)
    }

    /// The person behind the call: the signed-in user, or the creator of an API key.
    pub fn user(&self) -> Option<&UserId> {
        match &self.kind {
            Kind::Staff { user, .. } => Some(user),
            Kind::ApiKey { creator, .. } => Some(creator),
            _ => None,
        }
    }

    /// The role of a person or API key (the effective one for keys); `None` for channels,
    /// visitors and jobs, which have no role.
    pub fn role(&self) -> Option<Role> {
        match &self.kind {
            Kind::Staff { role, .. } | Kind::ApiKey { role, .. } => Some(*role),
            _ => None,
        }
    }

    pub fn session(&self) -> Option<&SessionId> {
        match &self.kind {
            Kind::Staff { session, .. } => Some(session),
            _ => None,
        }
    }

    pub fn api_key_id(&self) -> Option<&ApiKeyId> {
        match &self.kind {
            Kind::ApiKey { key, .. } => Some(key),
            _ => None,
        }
    }

    pub fn channel(&self) -> Option<&ChannelId> {
        match &self.kind {
            Kind::Webhook { channel } => Some(channel),
            _ => None,
        }
    }

    /// The widget visitor's id and the one conversation they are restricted to; `None`
    /// for other callers and for a visitor without a conversation yet (see
    /// [`is_visitor`](Self::is_visitor)).
    pub fn visitor(&self) -> Option<(&VisitorId, &ConversationId)> {
        match &self.kind {
            Kind::Visitor {
                visitor,
                conversation: Some(conversation),
                ..
            } => Some((visitor, conversation)),
            _ => None,
        }
    }

    /// True for a website-widget visitor, with or without a conversation.
    pub fn is_visitor(&self) -> bool {
        matches!(self.kind, Kind::Visitor { .. })
    }

    /// The widget visitor's id and web channel.
    pub fn visitor_of(&self) -> Option<(&VisitorId, &ChannelId)> {
        match &self.kind {
            Kind::Visitor {
                visitor, channel, ..
            } => Some((visitor, channel)),
            _ => None,
        }
    }

    pub fn job(&self) -> Option<&JobId> {
        match &self.kind {
            Kind::Job { job } => Some(job),
            _ => None,
        }
    }

    /// A short label for logs: `user:<id>`, `key:<id>`, `channel:<id>`, `visitor`, `job:<id>`.
    pub fn label(&self) -> String {
        match &self.kind {
            Kind::Staff { user, .. } => format!("user:{user}"),
            Kind::ApiKey { key, .. } => format!("key:{key}"),
            Kind::Webhook { channel } => format!("channel:{channel}"),
            Kind::Visitor { visitor, .. } => format!("visitor:{visitor}"),
            Kind::Job { job } => format!("job:{job}"),
        }
    }

    /// The permission check: the role matrix for people and keys; channels and visitors
    /// only converse; jobs only do what answering a conversation needs.
    pub fn allowed(&self, action: Action) -> bool {
        use Action::*;
        match &self.kind {
            Kind::Staff { role, .. } | Kind::ApiKey { role, .. } => role_allows(*role, action),
            Kind::Webhook { .. } | Kind::Visitor { .. } => matches!(action, Converse),
            Kind::Job { .. } => matches!(
                action,
                ReadAgents | ReadDocuments | WorkConversations | RunAgent | Converse
            ),
        }
    }

    /// Fails with `Forbidden` unless this caller may do `action`.
    pub fn require(&self, action: Action) -> Result<(), Denied> {
        if self.allowed(action) {
            Ok(())
        } else {
            Err(Denied::Forbidden)
        }
    }

    /// [`require`](Self::require) for one conversation: a widget visitor's other
    /// conversations do not exist for them (`NotFound`).
    pub fn require_conversation(&self, id: &ConversationId, action: Action) -> Result<(), Denied> {
        if let Kind::Visitor { conversation, .. } = &self.kind
            && conversation.as_ref() != Some(id)
        {
            return Err(Denied::NotFound);
        }
        self.require(action)
    }

    /// Fails with `NotFound` unless the caller may see `tenant` at all (its own, or any for
    /// platform admins), then with `Forbidden` unless it may do `action`.
    pub fn require_in(&self, tenant: &TenantId, action: Action) -> Result<(), Denied> {
        if !self.is_platform_admin() && &self.tenant != tenant {
            return Err(Denied::NotFound);
        }
        self.require(action)
    }

    pub fn is_platform_admin(&self) -> bool {
        self.role() == Some(Role::PlatformAdmin)
    }

    /// A caller for tests of code below api/.
    #[cfg(test)]
    pub(crate) fn test_staff(tenant: &TenantId, role: Role) -> Caller {
        Caller {
            tenant: tenant.clone(),
            home: None,
            client: None,
            kind: Kind::Staff {
                user: UserId::new(),
                session: SessionId::new(),
                role,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use crate::types::{AgentId, now};

    fn caller(role: Role) -> Caller {
        Caller::test_staff(&TenantId::new(), role)
    }

    fn user(tenant: &TenantId, role: Role) -> User {
        User {
            id: UserId::new(),
            tenant_id: tenant.clone(),
            email: "a@example.com".into(),
            name: "a".into(),
            role,
            password_hash: String::new(),
            created_at: now(),
            updated_at: now(),
            last_login_at: None,
        }
    }

    fn key(tenant: &TenantId, role: Role, creator: &User) -> ApiKey {
        ApiKey {
            id: ApiKeyId::new(),
            tenant_id: tenant.clone(),
            name: "k".into(),
            prefix: "ak_x".into(),
            key_hash: String::new(),
            role,
            created_by: Some(creator.id.clone()),
            created_at: now(),
            last_used_at: None,
            expires_at: None,
        }
    }

    fn conversation(tenant: &TenantId) -> Conversation {
        Conversation {
            id: ConversationId::new(),
            tenant_id: tenant.clone(),
            agent_id: AgentId::new(),
            channel_id: None,
            customer: Customer::default(),
            status: ConversationStatus::Open,
            mode: ConversationMode::Ai,
            assignee_id: None,
            last_message_at: None,
            message_count: 0,
            created_at: now(),
            closed_at: None,
            last_seq: 0,
            rating: None,
        }
    }

    fn visitor_record(
        tenant: &TenantId,
        channel: &ChannelId,
        conversation: Option<&ConversationId>,
    ) -> Visitor {
        Visitor {
            id: VisitorId::new(),
            tenant_id: tenant.clone(),
            channel_id: channel.clone(),
            token_hashes: vec![],
            name: None,
            email: None,
            external_id: None,
            conversation_id: conversation.cloned(),
            created_at: now(),
            last_seen_at: now(),
        }
    }

    fn tenant() -> Tenant {
        Tenant {
            id: TenantId::new(),
            name: "t".into(),
            slug: "t".into(),
            status: TenantStatus::Active,
            settings: serde_json::Value::Null,
            created_at: now(),
            updated_at: now(),
        }
    }

    #[test]
    fn tenant_users_only_read_and_work_conversations() {
        let u = caller(Role::TenantUser);
        assert!(u.require(Action::WorkConversations).is_ok());
        for a in [
            Action::ManageAgents,
            Action::ManageUsers,
            Action::ManageApiKeys,
            Action::ManageDocuments,
            Action::ManageSettings,
        ] {
            assert_eq!(u.require(a), Err(Denied::Forbidden));
        }
        let admin = caller(Role::TenantAdmin);
        assert_eq!(admin.require(Action::CreateTenant), Err(Denied::Forbidden));
        assert!(admin.require(Action::ManageAgents).is_ok());
        for a in Action::ALL {
            assert!(caller(Role::PlatformAdmin).allowed(a), "{a:?}");
        }
    }

    #[test]
    fn a_foreign_tenant_is_not_found_even_for_admins() {
        let admin = caller(Role::TenantAdmin);
        let other = TenantId::new();
        assert_eq!(
            admin.require_in(&other, Action::ReadTenant),
            Err(Denied::NotFound)
        );
        assert!(
            admin
                .require_in(&admin.tenant().clone(), Action::ReadTenant)
                .is_ok()
        );
        assert!(
            caller(Role::PlatformAdmin)
                .require_in(&other, Action::DeleteTenant)
                .is_ok()
        );
    }

    #[test]
    fn an_api_key_acts_with_the_lesser_role_and_dies_with_its_creator() {
        let t = TenantId::new();
        let admin = user(&t, Role::TenantAdmin);
        let k = key(&t, Role::TenantAdmin, &admin);
        let c = Caller::api_key(&k, &admin).unwrap();
        assert_eq!(c.role(), Some(Role::TenantAdmin));
        assert_eq!(c.user(), Some(&admin.id));
        assert_eq!(c.api_key_id(), Some(&k.id));
        assert!(c.allowed(Action::ManageAgents));

        // Demoted creator: the key drops to the creator's role.
        let mut demoted = admin.clone();
        demoted.role = Role::TenantUser;
        let c = Caller::api_key(&k, &demoted).unwrap();
        assert_eq!(c.role(), Some(Role::TenantUser));
        assert!(!c.allowed(Action::ManageAgents));
        assert!(!c.allowed(Action::ManageApiKeys));

        // A weaker key never gains from a stronger creator.
        let weak = key(&t, Role::TenantUser, &admin);
        assert_eq!(
            Caller::api_key(&weak, &admin).unwrap().role(),
            Some(Role::TenantUser)
        );

        // Someone else, or the creator moved to another tenant: no caller at all.
        assert!(Caller::api_key(&k, &user(&t, Role::TenantAdmin)).is_none());
        let mut moved = admin.clone();
        moved.tenant_id = TenantId::new();
        assert!(Caller::api_key(&k, &moved).is_none());
        let mut orphan = k.clone();
        orphan.created_by = None;
        assert!(Caller::api_key(&orphan, &admin).is_none());

        // A platform admin's key in a tenant lives while they are a platform admin.
        let pa = user(&TenantId::platform(), Role::PlatformAdmin);
        let pk = key(&t, Role::TenantAdmin, &pa);
        assert_eq!(
            Caller::api_key(&pk, &pa).unwrap().role(),
            Some(Role::TenantAdmin)
        );
    }

    #[test]
    fn channels_visitors_and_jobs_do_only_their_narrow_thing() {
        let t = TenantId::new();
        let conv = conversation(&t);
        let channel = Channel {
            id: ChannelId::new(),
            tenant_id: t.clone(),
            agent_id: None,
            kind: ChannelKind::Web,
            name: "web".into(),
            status: ChannelStatus::Active,
            last_error: None,
            web: None,
            config: serde_json::Value::Null,
            credentials: Default::default(),
            created_at: now(),
            updated_at: now(),
        };
        let job = Job {
            id: JobId::new(),
            tenant_id: t.clone(),
            kind: "turn".into(),
            payload: serde_json::Value::Null,
            serial: None,
            status: JobStatus::Queued,
            progress: 0,
            attempts: 0,
            error: None,
            error_code: None,
            created_at: now(),
            updated_at: now(),
        };
        let hook = Caller::channel_webhook(&channel);
        let v = visitor_record(&t, &channel.id, Some(&conv.id));
        let visitor = Caller::widget_visitor(&v);
        let fresh = Caller::widget_visitor(&visitor_record(&t, &channel.id, None));
        let worker = Caller::for_job(&job);
        for c in [&hook, &visitor, &worker] {
            assert_eq!(c.tenant(), &t);
            assert_eq!(c.role(), None);
            assert!(!c.is_platform_admin());
        }
        assert_eq!(hook.channel(), Some(&channel.id));
        assert_eq!(worker.job(), Some(&job.id));
        for a in Action::ALL {
            assert_eq!(hook.allowed(a), a == Action::Converse, "webhook {a:?}");
            assert_eq!(visitor.allowed(a), a == Action::Converse, "visitor {a:?}");
            let job_may = matches!(
                a,
                Action::ReadAgents
                    | Action::ReadDocuments
                    | Action::WorkConversations
                    | Action::RunAgent
                    | Action::Converse
            );
            assert_eq!(worker.allowed(a), job_may, "job {a:?}");
        }
        // The visitor's one conversation, and no other.
        assert!(
            visitor
                .require_conversation(&conv.id, Action::Converse)
                .is_ok()
        );
        assert_eq!(
            visitor.require_conversation(&ConversationId::new(), Action::Converse),
            Err(Denied::NotFound)
        );
        assert_eq!(
            visitor.require_conversation(&conv.id, Action::WorkConversations),
            Err(Denied::Forbidden)
        );
        assert_eq!(visitor.visitor(), Some((&v.id, &conv.id)));
        assert_eq!(visitor.visitor_of(), Some((&v.id, &channel.id)));
        // Before its first message a visitor has no conversation at all.
        assert!(fresh.is_visitor() && fresh.visitor().is_none());
        assert_eq!(
            fresh.require_conversation(&conv.id, Action::Converse),
            Err(Denied::NotFound)
        );
        assert!(
            hook.require_conversation(&ConversationId::new(), Action::Converse)
                .is_ok()
        );
        assert_eq!(
            hook.require_in(&TenantId::new(), Action::Converse),
            Err(Denied::NotFound)
        );
    }

    #[test]
    fn only_platform_admins_act_in_another_tenant() {
        let target = tenant();
        let pa = caller(Role::PlatformAdmin);
        let acting = pa.acting_in(&target).unwrap();
        assert_eq!(acting.tenant(), &target.id);
        assert_eq!(acting.home_tenant(), pa.tenant());
        assert_eq!(acting.acting_for(), Some(&target.id));
        assert_eq!(acting.user(), pa.user());
        assert!(acting.allowed(Action::ManageAgents));
        assert_eq!(pa.acting_for(), None);
        // Acting again starts from the same home.
        let again = acting.acting_in(&tenant()).unwrap();
        assert_eq!(again.home_tenant(), pa.tenant());
        for role in [Role::TenantAdmin, Role::TenantUser] {
            assert!(caller(role).acting_in(&target).is_none());
        }
        let job = Caller::for_job(&Job {
            id: JobId::new(),
            tenant_id: TenantId::new(),
            kind: "x".into(),
            payload: serde_json::Value::Null,
            serial: None,
            status: JobStatus::Queued,
            progress: 0,
            attempts: 0,
            error: None,
            error_code: None,
            created_at: now(),
            updated_at: now(),
        });
        assert!(job.acting_in(&target).is_none());
    }
}
