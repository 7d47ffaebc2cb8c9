//! Ordered schema migrations, run before the server binds its port.

use super::{Error, Index, META, RECORD_TABLES, Record, Result, WriteTx, decode};
use crate::model::Chunk;
use redb::{Database, ReadableDatabase, ReadableTable};
use std::ops::Bound;
use std::path::Path;

/// The schema this build writes. Bump it with a new step in `STEPS`.
pub const SCHEMA_VERSION: u64 = 4;

enum Step {
    /// Runs in the transaction that records the new version.
    Schema(fn(&redb::WriteTransaction) -> Result<()>),
    /// Rewrites records in transactions of its own (bounded memory); must be safe to run
    /// again after a crash, since the version is recorded only once it has finished.
    Rewrite(fn(&Database) -> Result<()>),
}

/// `STEPS[i]` upgrades a store at version `i` to `i + 1`.
const STEPS: &[Step] = &[
    Step::Schema(v1_initial),
    Step::Schema(v2_job_queue),
    Step::Schema(v3_tenant_settings),
    Step::Rewrite(v4_compact_vectors),
];

/// Creates every table of the data model.
fn v1_initial(tx: &redb::WriteTransaction) -> Result<()> {
    for def in RECORD_TABLES {
        tx.open_table(*def)?;
    }
    for idx in Index::ALL {
        tx.open_table(idx.table())?;
    }
    Ok(())
}

/// Adds the durable job queue index.
fn v2_job_queue(tx: &redb::WriteTransaction) -> Result<()> {
    tx.open_table(Index::JobQueue.table())?;
    Ok(())
}

/// Adds per-tenant provider settings.
fn v3_tenant_settings(tx: &redb::WriteTransaction) -> Result<()> {
    tx.open_table(<crate::model::TenantSettings as super::Record>::TABLE)?;
    Ok(())
}

/// Rewrites every chunk so its vector is stored as base64 bytes instead of a JSON number
/// list (about a third of the size), 1,000 chunks per transaction.
fn v4_compact_vectors(db: &Database) -> Result<()> {
    const BATCH: usize = 1_000;
    let mut after: Option<(String, String)> = None;
    loop {
        let tx = db.begin_write()?;
        let batch: Vec<(String, String, Vec<u8>)> = {
            let t = tx.open_table(Chunk::TABLE)?;
            let lower = match &after {
                Some((a, b)) => Bound::Excluded((a.as_str(), b.as_str())),
                None => Bound::Unbounded,
            };
            t.range::<(&str, &str)>((lower, Bound::Unbounded))?
                .take(BATCH)
                .map(|e| {
                    let (k, v) = e?;
                    let (tenant, id) = k.value();
                    Ok((tenant.to_string(), id.to_string(), v.value().to_vec()))
                })
                .collect::<Result<_>>()?
        };
        let tx = WriteTx(tx);
        for (_, _, bytes) in &batch {
            if bytes.windows(10).any(|w| w == b"\"vector\":[") {
                tx.put(&decode::<Chunk>(bytes)?)?;
            }
        }
        tx.0.commit()?;
        let full = batch.len() == BATCH;
        match batch.into_iter().last() {
            Some((tenant, id, _)) if full => after = Some((tenant, id)),
            _ => return Ok(()),
        }
    }
}

pub(super) fn run(db: &Database, path: &Path) -> Result<()> {
    let found = {
        let tx = db.begin_read()?;
        match tx.open_table(META) {
            Ok(t) => t.get("schema_version")?.map(|v| v.value()).unwrap_or(0),
            Err(redb::TableError::TableDoesNotExist(_)) => 0,
            Err(e) => return Err(e.into()),
        }
    };
    if found > SCHEMA_VERSION {
        return Err(Error::TooNew {
            path: path.to_path_buf(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (i, step) in STEPS.iter().enumerate().skip(found as usize) {
        let to = i as u64 + 1;
        if let Step::Rewrite(rewrite) = step {
            rewrite(db)?;
        }
        let tx = db.begin_write()?;
        if let Step::Schema(schema) = step {
            schema(&tx)?;
        }
        tx.open_table(META)?.insert("schema_version", to)?;
        tx.commit()?;
        tracing::info!(from = i, to, "migrated store schema");
    }
    Ok(())
}
