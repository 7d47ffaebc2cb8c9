//! Who is calling and what they may do: password hashing, tokens, secrets at rest, and the
//! one permission matrix. Depends only on types/ and config.

pub mod password;
pub mod seal;
pub mod secrets;
pub mod tokens;

use crate::types::{ApiKeyId, Role, SessionId, TenantId, UserId};

/// The caller's context, built only by the API's auth extractor. Every tenant-scoped domain
/// function takes it, so the tenant of a read or write always comes from here.
#[derive(Clone, Debug)]
pub struct Caller {
    pub tenant_id: TenantId,
    pub user_id: Option<UserId>,
    pub role: Role,
    pub session_id: Option<SessionId>,
    pub api_key_id: Option<ApiKeyId>,
}

/// Everything a caller can try to do. The matrix in [`allowed`] is the single place that
/// says which role may do what; the README's roles table mirrors it.
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
    ManageChannels,
    ManageSettings,
    /// Read conversations, reply, assign, close.
    WorkConversations,
    ReadAnalytics,
}

impl Action {
    pub const ALL: [Action; 15] = [
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
        Action::ManageChannels,
        Action::ManageSettings,
        Action::WorkConversations,
        Action::ReadAnalytics,
    ];
}

/// The permission matrix.
pub fn allowed(role: Role, action: Action) -> bool {
    use Action::*;
    match role {
        Role::PlatformAdmin => true,
        Role::TenantAdmin => !matches!(action, CreateTenant),
        Role::TenantUser => matches!(
            action,
            ReadTenant | ReadUsers | ReadAgents | ReadDocuments | WorkConversations | ReadAnalytics
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

impl Caller {
    /// Fails with `Forbidden` unless the role allows `action`.
    pub fn require(&self, action: Action) -> Result<(), Denied> {
        if allowed(self.role, action) {
            Ok(())
        } else {
            Err(Denied::Forbidden)
        }
    }

    /// Fails with `NotFound` unless the caller may see `tenant` at all (its own, or any for
    /// platform admins), then with `Forbidden` unless the role allows `action`.
    pub fn require_in(&self, tenant: &TenantId, action: Action) -> Result<(), Denied> {
        if self.role != Role::PlatformAdmin && &self.tenant_id != tenant {
            return Err(Denied::NotFound);
        }
        self.require(action)
    }

    pub fn is_platform_admin(&self) -> bool {
        self.role == Role::PlatformAdmin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role) -> Caller {
        Caller {
            tenant_id: TenantId::new(),
            user_id: None,
            role,
            session_id: None,
            api_key_id: None,
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
        ] {
            assert_eq!(u.require(a), Err(Denied::Forbidden));
        }
        let admin = caller(Role::TenantAdmin);
        assert_eq!(admin.require(Action::CreateTenant), Err(Denied::Forbidden));
        assert!(admin.require(Action::ManageAgents).is_ok());
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
                .require_in(&admin.tenant_id.clone(), Action::ReadTenant)
                .is_ok()
        );
        assert!(
            caller(Role::PlatformAdmin)
                .require_in(&other, Action::DeleteTenant)
                .is_ok()
        );
    }
}
