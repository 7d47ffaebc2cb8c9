//! Ordered schema migrations, run before the server binds its port.

use super::{Error, Index, META, RECORD_TABLES, Result};
use redb::{Database, ReadableDatabase};
use std::path::Path;

/// The schema this build writes. Bump it with a new step in `STEPS`.
pub const SCHEMA_VERSION: u64 = 3;

type Step = fn(&redb::WriteTransaction) -> Result<()>;

/// `STEPS[i]` upgrades a store at version `i` to `i + 1`.
const STEPS: &[Step] = &[v1_initial, v2_job_queue, v3_tenant_settings];

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
        let tx = db.begin_write()?;
        step(&tx)?;
        tx.open_table(META)?.insert("schema_version", to)?;
        tx.commit()?;
        tracing::info!(from = i, to, "migrated store schema");
    }
    Ok(())
}
