//! The audit log's storage: entries keyed `(tenantId, auditId)` with time-ordered ids, plus
//! the install-wide time index (`idx_audit_time`: id -> `tenantId/id`) that the platform
//! admin's view and the retention sweep read as ranges.

use super::{Index, Page, ReadTx, Record, Result, WriteTx, decode, make_ref, split_ref};
use crate::model::AuditRecord;
use crate::types::TenantId;
use redb::ReadableTable;
use std::ops::Bound;

impl ReadTx {
    /// Up to `limit` audit entries, newest first, of one tenant (or of every tenant),
    /// with ids in `[lo, hi)` that pass `keep`. At most `max_scan` entries are read: a
    /// filter that matches little returns a short page whose cursor continues where the
    /// scan stopped, so one request does bounded work.
    pub fn audit_page(
        &self,
        tenant: Option<&TenantId>,
        lo: Option<&str>,
        hi: Option<&str>,
        limit: usize,
        max_scan: usize,
        mut keep: impl FnMut(&AuditRecord) -> bool,
    ) -> Result<Page<AuditRecord>> {
        let mut items = Vec::new();
        let mut scanned = 0usize;
        let mut last_scanned: Option<String> = None;
        let mut more = false;
        let records = self.0.open_table(AuditRecord::TABLE)?;
        // Visits one entry; false ends the scan.
        let mut visit = |key: &str, rec: AuditRecord| -> bool {
            if items.len() == limit || scanned == max_scan {
                more = true;
                return false;
            }
            scanned += 1;
            last_scanned = Some(key.to_string());
            if keep(&rec) {
                items.push(rec);
            }
            true
        };
        match tenant {
            Some(t) => {
                let upper = format!("{t}\0");
                let lo = Bound::Included((t.as_str(), lo.unwrap_or("")));
                let hi = match hi {
                    Some(h) => Bound::Excluded((t.as_str(), h)),
                    None => Bound::Excluded((upper.as_str(), "")),
                };
                for e in records.range::<(&str, &str)>((lo, hi))?.rev() {
                    let (k, v) = e?;
                    let (tn, id) = k.value();
                    let rec: AuditRecord = decode(tn, id, v.value())?;
                    if !visit(k.value().1, rec) {
                        break;
                    }
                }
            }
            None => {
                let index = self.0.open_table(Index::AuditTime.table())?;
                let lo = lo.map_or(Bound::Unbounded, Bound::Included);
                let hi = hi.map_or(Bound::Unbounded, Bound::Excluded);
                for e in index.range::<&str>((lo, hi))?.rev() {
                    let (k, v) = e?;
                    let Some((t, id)) = split_ref(v.value()) else {
                        continue;
                    };
                    let Some(bytes) = records.get((t.as_str(), id))? else {
                        continue;
                    };
                    let rec: AuditRecord = decode(t.as_str(), id, bytes.value())?;
                    if !visit(k.value(), rec) {
                        break;
                    }
                }
            }
        }
        let next = if !more {
            None
        } else if items.len() == limit {
            items.last().map(|r| r.id.to_string())
        } else {
            last_scanned
        };
        Ok(Page { items, next })
    }
}

impl WriteTx {
    /// Stores an audit entry (new or updated) with its time-index row.
    pub fn put_audit(&self, rec: &AuditRecord) -> Result<()> {
        self.put(rec)?;
        let mut t = self.0.open_table(Index::AuditTime.table())?;
        self.wrote();
        t.insert(
            rec.id.as_str(),
            make_ref(&rec.tenant_id, rec.id.as_str()).as_str(),
        )?;
        Ok(())
    }

    /// Deletes up to `max` of the oldest entries (of every tenant) whose id is below
    /// `before`. Returns how many; the sweep calls it again until it answers less than `max`.
    pub fn sweep_audit(&self, before: &str, max: usize) -> Result<usize> {
        let doomed: Vec<(String, String)> = {
            let index = self.0.open_table(Index::AuditTime.table())?;
            let mut out = Vec::new();
            for e in index.range::<&str>(..before)? {
                let (k, v) = e?;
                out.push((k.value().to_string(), v.value().to_string()));
                if out.len() == max {
                    break;
                }
            }
            out
        };
        let mut index = self.0.open_table(Index::AuditTime.table())?;
        let mut records = self.0.open_table(AuditRecord::TABLE)?;
        if !doomed.is_empty() {
            self.wrote();
        }
        for (k, v) in &doomed {
            index.remove(k.as_str())?;
            if let Some((t, id)) = split_ref(v) {
                records.remove((t.as_str(), id))?;
            }
        }
        Ok(doomed.len())
    }
}
