//! Who of a tenant's team is online: people with at least one open socket, and the status
//! they chose (online or away). Held in memory (it describes live connections, which do
//! not survive a restart either).

use crate::events::{Event, PresenceStatus};
use crate::types::{TenantId, UserId};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Mutex;

struct Entry {
    name: String,
    status: PresenceStatus,
    sockets: usize,
}

/// One person's presence, as `get_presence` lists it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserPresence {
    pub user_id: UserId,
    pub name: String,
    pub status: PresenceStatus,
}

/// Presence of every tenant's team.
#[derive(Default)]
pub struct Presence {
    map: Mutex<HashMap<TenantId, HashMap<UserId, Entry>>>,
}

fn event(t: &TenantId, u: &UserId, name: &str, status: PresenceStatus) -> Event {
    Event::Presence {
        tenant_id: t.clone(),
        user_id: u.clone(),
        name: name.to_string(),
        status,
    }
}

impl Presence {
    /// A socket of `u` connected; the event when `u` just came online.
    pub fn connected(&self, t: &TenantId, u: &UserId, name: &str) -> Option<Event> {
        let mut map = self.map.lock().expect("BUG: poisoned presence");
        let e = map
            .entry(t.clone())
            .or_default()
            .entry(u.clone())
            .or_insert(Entry {
                name: name.to_string(),
                status: PresenceStatus::Online,
                sockets: 0,
            });
        e.sockets += 1;
        (e.sockets == 1).then(|| event(t, u, name, e.status))
    }

    /// A socket of `u` closed; the event when it was the last one (offline).
    pub fn disconnected(&self, t: &TenantId, u: &UserId) -> Option<Event> {
        let mut map = self.map.lock().expect("BUG: poisoned presence");
        let team = map.get_mut(t)?;
        let e = team.get_mut(u)?;
        e.sockets = e.sockets.saturating_sub(1);
        if e.sockets > 0 {
            return None;
        }
        let gone = team.remove(u)?;
        if team.is_empty() {
            map.remove(t);
        }
        Some(event(t, u, &gone.name, PresenceStatus::Offline))
    }

    /// `u` chose a status; the event when it changed.
    pub fn set(&self, t: &TenantId, u: &UserId, status: PresenceStatus) -> Option<Event> {
        let mut map = self.map.lock().expect("BUG: poisoned presence");
        let e = map.get_mut(t)?.get_mut(u)?;
        if e.status == status {
            return None;
        }
        e.status = status;
        Some(event(t, u, &e.name, status))
    }

    /// The tenant's people with an open socket.
    pub fn list(&self, t: &TenantId) -> Vec<UserPresence> {
        let map = self.map.lock().expect("BUG: poisoned presence");
        let mut out: Vec<UserPresence> = map
            .get(t)
            .map(|team| {
                team.iter()
                    .map(|(u, e)| UserPresence {
                        user_id: u.clone(),
                        name: e.name.clone(),
                        status: e.status,
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}
