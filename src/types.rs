//! Typed ids and shared enums. Depends on nothing else in the crate.

use serde::{Deserialize, Serialize};
use std::fmt;
use utoipa::ToSchema;

/// The message of the error an id type's `Deserialize` fails with on a string that is not
/// an id; the API maps it to 400 `invalid_id` naming the field.
pub const INVALID_ID: &str = "is not a valid id";

macro_rules! id_type {
    ($($(#[$m:meta])* $name:ident),* $(,)?) => {$(
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, ToSchema)]
        #[serde(transparent)]
        #[schema(value_type = String, format = Uuid)]
        pub struct $name(String);

        impl $name {
            /// A fresh, time-ordered (UUIDv7) id.
            pub fn new() -> Self {
                Self(uuid::Uuid::now_v7().to_string())
            }
            /// Accepts only a canonical UUID string; anything else is `None`.
            pub fn parse(s: &str) -> Option<Self> {
                uuid::Uuid::parse_str(s).ok().map(|u| Self(u.hyphenated().to_string()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        /// Reads only a canonical UUID string, like [`Self::parse`]: an id in a request body
        /// is checked as strictly as one in a path (the error message is [`INVALID_ID`]).
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).ok_or_else(|| serde::de::Error::custom(INVALID_ID))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}

id_type!(
    /// A tenant (one business). The nil UUID is the platform scope.
    TenantId,
    UserId,
    SessionId,
    InvitationId,
    PasswordResetId,
    ApiKeyId,
    AgentId,
    DocumentId,
    ChunkId,
    ChannelId,
    ConversationId,
    MessageId,
    SubscriptionId,
    AnalyticsEventId,
    JobId,
    /// A website-widget visitor (anonymous, one per browser).
    VisitorId,
    /// A messaging provider's webhook delivery, stored before it is acknowledged.
    InboundId,
    /// An entry of the audit log; made from the entry's time (see [`AuditId::at`]).
    AuditId,
    /// A subscription plan (the nil UUID is the built-in unlimited plan).
    PlanId,
);

impl AuditId {
    /// The time-ordered (UUIDv7) id of an entry written at `at`: entries sort by the clock
    /// they were written with, so retention and time filters are key ranges.
    pub fn at(at: Timestamp) -> Self {
        let nanos = at.unix_timestamp_nanos().max(0);
        let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(0);
        let sub = u32::try_from(nanos % 1_000_000_000).unwrap_or(0);
        let ts = uuid::Timestamp::from_unix(uuid::NoContext, secs, sub);
        Self(uuid::Uuid::new_v7(ts).to_string())
    }

    /// The smallest id any entry written at or after `at` can have (a key-range bound).
    pub fn floor(at: Timestamp) -> String {
        let ms = u64::try_from((at.unix_timestamp_nanos() / 1_000_000).max(0)).unwrap_or(0);
        let ms = ms & 0xffff_ffff_ffff;
        format!("{:08x}-{:04x}", ms >> 16, ms & 0xffff)
    }
}

impl TenantId {
    /// The pseudo-tenant that platform admins (and their keys) live in. No Tenant record exists
    /// for it, so it never shows up in tenant listings.
    pub fn platform() -> Self {
        Self(uuid::Uuid::nil().to_string())
    }
    pub fn is_platform(&self) -> bool {
        self.0 == "00000000-0000-0000-0000-000000000000"
    }
}

/// Who a caller is allowed to be. Ordered from most to least privileged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    PlatformAdmin,
    TenantAdmin,
    TenantUser,
}

impl Role {
    fn rank(self) -> u8 {
        match self {
            Role::PlatformAdmin => 3,
            Role::TenantAdmin => 2,
            Role::TenantUser => 1,
        }
    }
    /// True when `self` grants at least what `other` grants.
    pub fn covers(self, other: Role) -> bool {
        self.rank() >= other.rank()
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::PlatformAdmin => "PLATFORM_ADMIN",
            Role::TenantAdmin => "TENANT_ADMIN",
            Role::TenantUser => "TENANT_USER",
        }
    }
}

/// Who may sign up on this install.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SignupMode {
    /// Anyone can register a new tenant.
    #[default]
    Open,
    /// Only invited people can join (existing tenants); registration of new tenants is off.
    Invite,
    /// Nobody can join by themselves.
    Closed,
}

/// RFC 3339 timestamps everywhere in records and JSON.
pub type Timestamp = time::OffsetDateTime;

pub fn now() -> Timestamp {
    time::OffsetDateTime::now_utc()
}

/// The time expiry checks go by: the system clock, plus an offset that only tests move (so a
/// test can let a key expire without waiting for it). Clones share the offset.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset_ms: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// Set by tests that need exact times (analytics): the clock stands still there,
    /// moved only by `advance` and `pin`.
    pinned: std::sync::Arc<std::sync::RwLock<Option<Timestamp>>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// The current time by this clock.
    pub fn now(&self) -> Timestamp {
        let offset = self.offset_ms.load(std::sync::atomic::Ordering::Acquire);
        let base = self.pinned.read().ok().and_then(|p| *p).unwrap_or_else(now);
        base + time::Duration::milliseconds(offset)
    }

    /// Stops this clock (and every clone of it) at `at`. For tests.
    pub fn pin(&self, at: Timestamp) {
        if let Ok(mut p) = self.pinned.write() {
            *p = Some(at);
        }
        self.offset_ms
            .store(0, std::sync::atomic::Ordering::Release);
    }

    /// Moves this clock (and every clone of it) forward. For tests.
    pub fn advance(&self, by: std::time::Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms
            .fetch_add(ms, std::sync::atomic::Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_time_ordered_and_parse_strictly() {
        let a = AgentId::new();
        let b = AgentId::new();
        assert!(a < b, "UUIDv7 ids must sort in creation order");
        assert_eq!(AgentId::parse(a.as_str()), Some(a));
        assert_eq!(AgentId::parse("not-a-uuid"), None);
        assert_eq!(AgentId::parse("../../etc"), None);
    }

    #[test]
    fn ids_deserialize_only_from_uuids() {
        let id = AgentId::new();
        let back: AgentId = serde_json::from_value(serde_json::json!(id.as_str())).unwrap();
        assert_eq!(back, id);
        let upper: AgentId =
            serde_json::from_value(serde_json::json!(id.as_str().to_uppercase())).unwrap();
        assert_eq!(upper, id, "ids are read in canonical form");
        for bad in [
            serde_json::json!("not-an-id"),
            serde_json::json!(""),
            serde_json::json!(5),
        ] {
            assert!(serde_json::from_value::<AgentId>(bad).is_err());
        }
        let e = serde_json::from_value::<AgentId>(serde_json::json!("x")).unwrap_err();
        assert_eq!(e.to_string(), INVALID_ID);
    }

    #[test]
    fn role_order() {
        assert!(Role::PlatformAdmin.covers(Role::TenantAdmin));
        assert!(Role::TenantAdmin.covers(Role::TenantUser));
        assert!(!Role::TenantUser.covers(Role::TenantAdmin));
    }
}
