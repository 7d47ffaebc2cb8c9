//! Import under a new tenant id (`--new-id`, `?asNew=true`): every id the tenant's own rows
//! are keyed by (the tenant, its users, agents, documents, chunks, conversations, messages,
//! channels, jobs, audit entries ...) gets a new one, and so does every public widget key; the
//! new values replace the old ones everywhere they occur, in keys, index entries and record
//! bodies, so every reference inside the tenant stays intact. Ids that are not the tenant's
//! own (a platform plan, a platform admin in an audit entry) are left as they are.
//!
//! A new id is the old one with its first 48 bits (the UUIDv7 creation time, in ms) moved by
//! one offset chosen per import: ids keep their order, so listings and time-ordered keys
//! (messages, audit entries) read as before, and they move by at most a minute. Two ids can
//! only meet when their other 80 bits are equal, i.e. never, except between two imports of
//! one archive with the same offset, which the new tenant id (shifted the same way) tells:
//! the caller picks another offset then.

use crate::store::Row;
use crate::types::TenantId;
use std::collections::{HashMap, HashSet};

/// The largest offset, in ms: ids move by a minute at most.
const MAX_SHIFT_MS: u64 = 60_000;

/// How the rows of one import as a new tenant are rewritten.
pub struct Remap {
    /// The tenant's own ids (as u128).
    ids: HashSet<u128>,
    shift: u64,
    /// Old public widget key -> new one.
    widget_keys: HashMap<String, String>,
}

/// The UUID in a 36-byte window (lowercase or uppercase hex, hyphenated), if it is one.
fn uuid_at(w: &[u8]) -> Option<uuid::Uuid> {
    if w.len() != 36 {
        return None;
    }
    for (i, b) in w.iter().enumerate() {
        let ok = match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        };
        if !ok {
            return None;
        }
    }
    uuid::Uuid::try_parse_ascii(w).ok()
}

impl Remap {
    /// A remap with a random offset. Feed it the tenant's rows ([`learn`](Self::learn))
    /// before rewriting any.
    pub fn new() -> Self {
        Remap {
            ids: HashSet::new(),
            shift: rand::random_range(1..=MAX_SHIFT_MS),
            widget_keys: HashMap::new(),
        }
    }

    /// Another offset (the new tenant id was taken: an earlier import of the same archive
    /// as new drew the same one).
    pub fn reroll(&mut self) {
        let old = self.shift;
        while self.shift == old {
            self.shift = rand::random_range(1..=MAX_SHIFT_MS);
        }
    }

    /// Notes the ids a row of the tenant is keyed by (record and count rows), and the widget
    /// keys it owns (index `idx_widget_key`).
    pub fn learn(&mut self, table: &str, row: &Row) {
        match row {
            Row::Record { tenant, id, .. } | Row::Bytes { tenant, id, .. } => {
                self.learn_ids(tenant);
                self.learn_ids(id);
            }
            Row::Count { tenant, .. } => self.learn_ids(tenant),
            Row::Index { key, .. } if table == "idx_widget_key" => {
                self.widget_keys
                    .entry(key.clone())
                    .or_insert_with(|| format!("wk_{}", crate::auth::tokens::random_token(18)));
            }
            Row::Index { .. } | Row::Meta { .. } => {}
        }
    }

    fn learn_ids(&mut self, s: &str) {
        for part in s.split('/') {
            if let Some(u) = uuid_at(part.as_bytes()) {
                self.ids.insert(u.as_u128());
            }
        }
    }

    fn map_uuid(&self, u: uuid::Uuid) -> Option<uuid::Uuid> {
        let v = u.as_u128();
        if !self.ids.contains(&v) {
            return None;
        }
        const MS_BITS: u32 = 48;
        let ms = (v >> (128 - MS_BITS)) as u64;
        let moved = (ms.wrapping_add(self.shift)) & ((1 << MS_BITS) - 1);
        let low = v & ((1u128 << (128 - MS_BITS)) - 1);
        Some(uuid::Uuid::from_u128(
            ((moved as u128) << (128 - MS_BITS)) | low,
        ))
    }

    /// The tenant's new id.
    pub fn tenant(&self, old: &TenantId) -> TenantId {
        uuid::Uuid::parse_str(old.as_str())
            .ok()
            .and_then(|u| self.map_uuid(u))
            .and_then(|u| TenantId::parse(&u.to_string()))
            .unwrap_or_else(|| old.clone())
    }

    /// `bytes` with every id of the tenant and every widget key replaced.
    pub fn bytes(&self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if i + 36 <= bytes.len()
                && let Some(new) = uuid_at(&bytes[i..i + 36]).and_then(|u| self.map_uuid(u))
            {
                // Written in the case the old one had (ids are lowercase; kept either way).
                let upper = bytes[i..i + 36].iter().any(|b| b.is_ascii_uppercase());
                let s = new.hyphenated().to_string();
                out.extend_from_slice(
                    if upper {
                        s.to_ascii_uppercase().into_bytes()
                    } else {
                        s.into_bytes()
                    }
                    .as_slice(),
                );
                i += 36;
                continue;
            }
            out.push(bytes[i]);
            i += 1;
        }
        if self.widget_keys.is_empty() || !out.windows(3).any(|w| w == b"wk_") {
            return out;
        }
        let mut text = match String::from_utf8(out) {
            Ok(t) => t,
            Err(e) => return e.into_bytes(),
        };
        for (old, new) in &self.widget_keys {
            if text.contains(old.as_str()) {
                text = text.replace(old.as_str(), new);
            }
        }
        text.into_bytes()
    }

    fn text(&self, s: &str) -> String {
        String::from_utf8(self.bytes(s.as_bytes())).unwrap_or_else(|_| s.to_string())
    }

    /// A row of the tenant as it is written under the new id.
    pub fn row(&self, row: Row) -> Row {
        match row {
            Row::Record { tenant, id, value } => Row::Record {
                tenant: self.text(&tenant),
                id: self.text(&id),
                value: self.bytes(&value),
            },
            // Raw bytes (vectors) hold no ids: only the key moves.
            Row::Bytes { tenant, id, value } => Row::Bytes {
                tenant: self.text(&tenant),
                id: self.text(&id),
                value,
            },
            Row::Index { key, value } => Row::Index {
                key: self.text(&key),
                value: self.text(&value),
            },
            Row::Count {
                tenant,
                name,
                value,
            } => Row::Count {
                tenant: self.text(&tenant),
                name,
                value,
            },
            meta @ Row::Meta { .. } => meta,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenants_ids_move_everywhere_in_order_and_others_stay() {
        let t = TenantId::new();
        let a = crate::types::AgentId::new();
        let b = crate::types::AgentId::new();
        let plan = uuid::Uuid::now_v7().to_string();
        let mut r = Remap::new();
        for id in [&a.to_string(), &b.to_string()] {
            r.learn(
                "agents",
                &Row::Record {
                    tenant: t.to_string(),
                    id: id.clone(),
                    value: vec![],
                },
            );
        }
        r.learn(
            "idx_widget_key",
            &Row::Index {
                key: "wk_old".into(),
                value: format!("{t}/x"),
            },
        );
        let nt = r.tenant(&t);
        assert_ne!(nt, t);
        let body = format!(
            r#"{{"tenantId":"{t}","id":"{a}","planId":"{plan}","widgetKey":"wk_old","n":"{t}/{b}"}}"#
        );
        let row = r.row(Row::Record {
            tenant: t.to_string(),
            id: format!("{a}/{b}"),
            value: body.into_bytes(),
        });
        let Row::Record { tenant, id, value } = row else {
            panic!("a record")
        };
        let value = String::from_utf8(value).expect("utf8");
        assert_eq!(tenant, nt.to_string());
        let (na, nb) = id.split_once('/').expect("two parts");
        assert!(na != a.to_string() && nb != b.to_string());
        // Order kept: a was made before b.
        assert!(na < nb && a.to_string() < b.to_string());
        assert!(value.contains(&format!(r#""tenantId":"{nt}""#)), "{value}");
        assert!(value.contains(&format!(r#""id":"{na}""#)), "{value}");
        assert!(value.contains(&format!(r#""n":"{nt}/{nb}""#)), "{value}");
        assert!(value.contains(&plan), "not the tenant's: kept: {value}");
        assert!(
            !value.contains("wk_old") && value.contains("wk_"),
            "{value}"
        );
        // The same id maps the same way every time, and a reroll changes it.
        assert_eq!(r.tenant(&t), nt);
        r.reroll();
        assert_ne!(r.tenant(&t), nt);
    }
}
