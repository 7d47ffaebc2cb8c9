//! Backups and tenant moves: a consistent archive of the store and the stored files taken
//! while the server runs, restore into an empty data directory, and one tenant's export and
//! import into another install. The archive format is in [`archive`]; the store gives the rows
//! (`crate::store::Snapshot`), this module decides what goes in and checks what comes out.
//! It must not depend on api/ (the routes and the CLI call it).
//!
//! Consistency: every table is read from ONE redb read transaction, so the archive holds the
//! store as of one commit. Uploads write their file before the record that references it,
//! and removals of such files are deferred while a backup is copying (`Store::pin_files`),
//! so every file a snapshotted document references is present. Channel media go the same
//! way: the job stores a fetched file before the message that names it, and a deleted
//! channel's or tenant's media are removed through `Store::remove_stored` (deferred while a
//! backup copies), so every attachment of a snapshotted message is there. Search indexes are not
//! archived: they are rebuilt from the store at the first start after a restore.

pub mod archive;
mod remap;
pub mod schedule;
pub mod socket;

use crate::auth::seal::Sealer;
use crate::store::{self, Kind, Row, SCHEMA_VERSION, Store};
use crate::types::TenantId;
pub use archive::{ArchiveKind, FORMAT_VERSION, Header, Limits, Manifest};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Store(#[from] store::Error),
    #[error("the archive is damaged or incomplete: {0}")]
    Damaged(String),
    #[error("the archive was written by a newer aigentable: {0}; upgrade aigentable first")]
    TooNew(String),
    #[error(
        "the data directory {0} is not empty; restore only into a new or empty directory (move the old one aside first)"
    )]
    NotEmpty(PathBuf),
    #[error("{0}")]
    WrongKind(String),
    #[error("tenant not found")]
    TenantNotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Passphrase(String),
    #[error("a backup is already being written")]
    Busy,
    /// A stored file of the archive is larger than `BACKUP_MAX_FILE_BYTES` (the limit).
    #[error("{0}")]
    FileTooLarge(String, u64),
}

impl Error {
    fn json(e: serde_json::Error) -> Self {
        Error::Damaged(format!("invalid JSON: {e}"))
    }
    /// The I/O error underneath, for mapping disk-full and read-only conditions.
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            Error::Io(e) => Some(e.kind()),
            Error::Store(e) => e.io_kind(),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a tenant export's sealed secrets (provider API keys, channel credentials, tool
/// headers: encrypted with the exporting install's key) travel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretsHeader {
    /// `passphrase`: re-sealed under a key derived from the exporter's passphrase (argon2id);
    /// `removed`: left out (emptied), to be entered again after the import.
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// `seal("aigentable")` under the passphrase key: tells a wrong passphrase at import.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
}

const CHECK_PLAIN: &str = "aigentable";
/// A passphrase shorter than this is refused (it guards the tenant's credentials).
pub const MIN_PASSPHRASE: usize = 12;

fn passphrase_sealer(passphrase: &str, salt: &[u8]) -> Result<Sealer> {
    let mut key = [0u8; 32];
    argon2::Argon2::default()
        .hash_password_into(passphrase.as_bytes(), salt, &mut key)
        .map_err(|e| Error::Passphrase(format!("cannot derive the key: {e}")))?;
    Ok(Sealer::from_secret(&hex::encode(key)))
}

/// Rewrites every sealed string (`v1:...` that `from` opens) inside a JSON value.
fn reseal(v: &mut serde_json::Value, from: &Sealer, to: Option<&Sealer>, n: &mut u64) {
    match v {
        serde_json::Value::String(s) if s.starts_with("v1:") => {
            if let Some(plain) = from.open(s) {
                *s = to.map(|t| t.seal(&plain)).unwrap_or_default();
                *n += 1;
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| reseal(x, from, to, n)),
        serde_json::Value::Object(o) => o.values_mut().for_each(|x| reseal(x, from, to, n)),
        _ => {}
    }
}

fn reseal_bytes(value: &[u8], from: &Sealer, to: Option<&Sealer>, n: &mut u64) -> Result<Vec<u8>> {
    if !value.windows(3).any(|w| w == b"v1:") {
        return Ok(value.to_vec());
    }
    let mut v: serde_json::Value = serde_json::from_slice(value).map_err(Error::json)?;
    reseal(&mut v, from, to, n);
    serde_json::to_vec(&v).map_err(Error::json)
}

/// What a tenant export does with sealed secrets.
pub enum ExportSecrets<'a> {
    /// Re-seal them under this passphrase.
    Passphrase(&'a str),
    /// Leave them out.
    Remove,
}

/// What was written.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub kind: ArchiveKind,
    pub schema_version: u64,
    pub tables: BTreeMap<String, u64>,
    pub files: u64,
    /// Channel media files (attachments of messages).
    pub media: u64,
    /// Files documents (or media files messages) reference that were not on disk (removed
    /// by hand): the records are archived, those files are not.
    pub missing_files: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
}

fn summary(h: &Header, m: &Manifest, missing: Vec<String>) -> Summary {
    Summary {
        kind: h.kind,
        schema_version: h.schema_version,
        tables: m.tables.iter().map(|(k, v)| (k.clone(), v.rows)).collect(),
        files: m.files,
        media: m.media,
        missing_files: missing,
        tenant_id: h.tenant_id.clone(),
    }
}

#[derive(Deserialize)]
struct DocFile {
    sha256: String,
}

/// The attachments of a message record (only their ids matter here).
#[derive(Deserialize)]
struct MsgMedia {
    #[serde(default)]
    attachments: Vec<MediaRef>,
}

#[derive(Deserialize)]
struct MediaRef {
    id: String,
}

/// Cheap test before parsing a message: most messages carry no attachment.
fn has_attachments(value: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"\"attachments\":[{";
    value.windows(NEEDLE.len()).any(|w| w == NEEDLE)
}

/// Writes a full backup of the install (every table, every referenced file, the keys in
/// `secrets/`) to `out`. Blocking; writers carry on meanwhile.
pub fn backup_full(store: &Store, data_dir: &Path, out: impl Write) -> Result<Summary> {
    // Pin before the snapshot: a file removed after this point stays until we are done.
    let _pin = store.pin_files();
    let snap = store.snapshot()?;
    backup_snapshot(&snap, data_dir, out)
}

/// Writes a full backup of what `snap` holds. The caller holds a [`store::FilePin`] taken
/// before the snapshot (see [`backup_full`]). Blocking.
pub fn backup_snapshot(
    snap: &store::Snapshot,
    data_dir: &Path,
    out: impl Write,
) -> Result<Summary> {
    write_archive(snap, data_dir, None, None, out).map(|(s, _)| s)
}

/// Writes one tenant's records and files to `out` (nothing of any other tenant, no install
/// keys). `sealer` opens the tenant's sealed secrets for re-sealing. Blocking.
pub fn export_tenant(
    store: &Store,
    data_dir: &Path,
    tenant: &TenantId,
    sealer: &Sealer,
    secrets: ExportSecrets<'_>,
    out: impl Write,
) -> Result<Summary> {
    if let ExportSecrets::Passphrase(p) = secrets
        && p.chars().count() < MIN_PASSPHRASE
    {
        return Err(Error::Passphrase(format!(
            "the passphrase must have at least {MIN_PASSPHRASE} characters"
        )));
    }
    let exists = store.read(|tx| tx.get::<crate::model::Tenant>(tenant, ""))?;
    if exists.is_none() {
        return Err(Error::TenantNotFound);
    }
    let _pin = store.pin_files();
    let snap = store.snapshot()?;
    write_archive(&snap, data_dir, Some(tenant), Some((sealer, secrets)), out).map(|(s, _)| s)
}

fn write_archive<W: Write>(
    snap: &store::Snapshot,
    data_dir: &Path,
    tenant: Option<&TenantId>,
    secrets: Option<(&Sealer, ExportSecrets<'_>)>,
    out: W,
) -> Result<(Summary, W)> {
    let tables = snap.tables()?;
    let (reseal_to, secrets_header) = match &secrets {
        Some((_, ExportSecrets::Passphrase(p))) => {
            let salt: [u8; 16] = rand::random();
            let s = passphrase_sealer(p, &salt)?;
            let check = s.seal(CHECK_PLAIN);
            (
                Some(s),
                Some(SecretsHeader {
                    mode: "passphrase".into(),
                    salt: Some(hex::encode(salt)),
                    check: Some(check),
                }),
            )
        }
        Some((_, ExportSecrets::Remove)) => (
            None,
            Some(SecretsHeader {
                mode: "removed".into(),
                salt: None,
                check: None,
            }),
        ),
        None => (None, None),
    };
    let header = Header {
        format: archive::FORMAT_NAME.into(),
        format_version: FORMAT_VERSION,
        kind: if tenant.is_some() {
            ArchiveKind::Tenant
        } else {
            ArchiveKind::Full
        },
        schema_version: SCHEMA_VERSION,
        created_at: crate::types::now().to_string(),
        aigentable_version: env!("CARGO_PKG_VERSION").into(),
        tenant_id: tenant.map(|t| t.to_string()),
        tables: tables
            .iter()
            .filter(|(_, k)| tenant.is_none() || *k != Kind::Meta)
            .map(|(n, k)| (n.clone(), *k))
            .collect(),
        secrets: secrets_header.clone(),
    };
    let mut w = archive::Writer::new(out, &header)?;
    let mut files: BTreeSet<(String, String)> = BTreeSet::new();
    let mut media: BTreeSet<(String, String)> = BTreeSet::new();
    let mut resealed = 0u64;
    for (name, kind) in &tables {
        if tenant.is_some() && *kind == Kind::Meta {
            continue;
        }
        let mut tw = w.table(name, *kind);
        snap.for_each::<Error>(name, *kind, tenant, |row| {
            let row = match row {
                Row::Record {
                    tenant: t,
                    id,
                    value,
                } => {
                    if name == "documents"
                        && let Ok(d) = serde_json::from_slice::<DocFile>(&value)
                    {
                        files.insert((t.clone(), d.sha256));
                    }
                    if name == "messages"
                        && has_attachments(&value)
                        && let Ok(m) = serde_json::from_slice::<MsgMedia>(&value)
                    {
                        media.extend(m.attachments.into_iter().map(|a| (t.clone(), a.id)));
                    }
                    let value = match &secrets {
                        Some((from, _)) => {
                            reseal_bytes(&value, from, reseal_to.as_ref(), &mut resealed)?
                        }
                        None => value,
                    };
                    Row::Record {
                        tenant: t,
                        id,
                        value,
                    }
                }
                other => other,
            };
            tw.row(&row)
        })?;
        tw.finish()?;
    }
    let mut missing = Vec::new();
    for (t, sha) in &files {
        let valid = TenantId::parse(t).is_some()
            && sha.len() == 64
            && sha.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            continue;
        }
        let path = data_dir.join("tenants").join(t).join("files").join(sha);
        match std::fs::File::open(&path) {
            Ok(f) => {
                let size = f.metadata()?.len();
                w.entry_from(&format!("files/{t}/{sha}"), size, f)?;
                w.count_file();
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %path.display(), "a document's stored file is missing; the backup holds the document without it");
                missing.push(format!("{t}/{sha}"));
            }
            Err(e) => return Err(e.into()),
        }
    }
    for (t, id) in &media {
        if TenantId::parse(t).is_none() || !archive::is_media_id(id) {
            continue;
        }
        let path = data_dir.join("media").join(t).join(id);
        match std::fs::File::open(&path) {
            Ok(f) => {
                let size = f.metadata()?.len();
                w.entry_from(&format!("media/{t}/{id}"), size, f)?;
                w.count_media();
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %path.display(), "a message's media file is missing; the backup holds the message without it");
                missing.push(format!("media/{t}/{id}"));
            }
            Err(e) => return Err(e.into()),
        }
    }
    if tenant.is_none() {
        let dir = data_dir.join("secrets");
        if dir.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(&dir)?
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| !n.starts_with('.'))
                .collect();
            names.sort();
            for n in names {
                let bytes = std::fs::read(dir.join(&n))?;
                w.entry(&format!("secrets/{n}"), &bytes)?;
            }
        }
    }
    if resealed > 0 {
        tracing::info!(resealed, "tenant export: sealed secrets handled");
    }
    let (manifest, out) = w.finish()?;
    Ok((summary(&header, &manifest, missing), out))
}

/// True when `dir` does not exist or is an empty directory.
fn is_empty_dir(dir: &Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut it) => Ok(it.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// Removes everything inside `dir` (which we created or found empty), keeping `dir`.
fn clear_dir(dir: &Path) {
    if let Ok(it) = std::fs::read_dir(dir) {
        for e in it.flatten() {
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

/// Options of [`unpack`].
struct Unpack<'a> {
    kind: ArchiveKind,
    limits: &'a Limits,
    /// Tenant imports: turns sealed values of the archive into this install's.
    reseal: Option<(&'a Sealer, Option<&'a str>)>,
}

/// Writes an archive's rows into a new store file in `dir` and its files beside it; checks
/// the manifest. `dir` must be empty. On failure `dir` is emptied again.
fn unpack(input: impl Read, dir: &Path, opts: Unpack<'_>) -> Result<(Header, Manifest)> {
    if !is_empty_dir(dir)? {
        return Err(Error::NotEmpty(dir.to_path_buf()));
    }
    std::fs::create_dir_all(dir)?;
    let r = unpack_inner(input, dir, opts);
    if r.is_err() {
        clear_dir(dir);
    }
    r
}

fn unpack_inner(input: impl Read, dir: &Path, opts: Unpack<'_>) -> Result<(Header, Manifest)> {
    let raw = store::RawWriter::create(dir)?;
    let transfer: std::cell::RefCell<Option<Sealer>> = Default::default();
    let mut resealed = 0u64;
    let out = archive::read(
        input,
        opts.limits,
        |h| {
            if h.kind != opts.kind {
                return Err(Error::WrongKind(match opts.kind {
                    ArchiveKind::Full => "this is a tenant export, not a full backup: import it with `aigentable tenant import` or POST /api/tenants/import".into(),
                    ArchiveKind::Tenant => "this is a full backup, not a tenant export: restore it with `aigentable restore`".into(),
                }));
            }
            if h.schema_version > SCHEMA_VERSION {
                return Err(Error::TooNew(format!(
                    "store schema {} (this build knows up to {SCHEMA_VERSION})",
                    h.schema_version
                )));
            }
            if let (Some((_, pass)), Some(s)) = (opts.reseal, &h.secrets)
                && s.mode == "passphrase"
            {
                let Some(pass) = pass else {
                    return Err(Error::Passphrase(
                        "this export's secrets are sealed with a passphrase: give it to import"
                            .into(),
                    ));
                };
                let salt = s
                    .salt
                    .as_deref()
                    .and_then(|x| hex::decode(x).ok())
                    .ok_or_else(|| Error::Damaged("secrets without a salt".into()))?;
                let t = passphrase_sealer(pass, &salt)?;
                if s.check.as_deref().and_then(|c| t.open(c)).as_deref() != Some(CHECK_PLAIN) {
                    return Err(Error::Passphrase("wrong passphrase for this export".into()));
                }
                *transfer.borrow_mut() = Some(t);
            }
            for (name, kind) in &h.tables {
                raw.write(name, *kind, &[])?;
            }
            Ok(())
        },
        |entry| {
            match entry {
                archive::Entry::Rows { table, kind, rows } => {
                    let transfer = transfer.borrow();
                    let rows = match (&opts.reseal, &*transfer) {
                        (Some((to, _)), Some(from)) if kind == Kind::Record => rows
                            .into_iter()
                            .map(|r| match r {
                                Row::Record { tenant, id, value } => Ok(Row::Record {
                                    tenant,
                                    id,
                                    value: reseal_bytes(&value, from, Some(to), &mut resealed)?,
                                }),
                                other => Ok(other),
                            })
                            .collect::<Result<Vec<_>>>()?,
                        _ => rows,
                    };
                    raw.write(&table, kind, &rows)?;
                }
                archive::Entry::File {
                    tenant,
                    sha256,
                    reader,
                } => {
                    let d = dir.join("tenants").join(tenant.as_str()).join("files");
                    std::fs::create_dir_all(&d)?;
                    let mut f = std::fs::File::create(d.join(&sha256))?;
                    std::io::copy(reader, &mut f)?;
                    f.sync_all()?;
                }
                archive::Entry::Media { tenant, id, reader } => {
                    let d = dir.join("media").join(tenant.as_str());
                    std::fs::create_dir_all(&d)?;
                    let mut f = std::fs::File::create(d.join(&id))?;
                    std::io::copy(reader, &mut f)?;
                    f.sync_all()?;
                }
                archive::Entry::Secret { name, bytes } => {
                    let d = dir.join("secrets");
                    std::fs::create_dir_all(&d)?;
                    std::fs::write(d.join(name), bytes)?;
                }
            }
            Ok(())
        },
    )?;
    drop(raw);
    Ok(out)
}

/// Restores a full backup into `dir`, which must not exist or be empty. Checks the whole
/// archive (header, every checksum, the schema version: a newer one is refused) and then
/// opens the store once, which runs the normal migrations on an older one. Indexes are
/// rebuilt at the server's first start. Blocking.
pub fn restore(input: impl Read, dir: &Path, limits: &Limits) -> Result<Summary> {
    let (h, m) = unpack(
        input,
        dir,
        Unpack {
            kind: ArchiveKind::Full,
            limits,
            reseal: None,
        },
    )?;
    // Migrations run here, so a failure shows now rather than at the next start.
    if let Err(e) = Store::open(dir, 16 << 20) {
        clear_dir(dir);
        return Err(e.into());
    }
    Ok(summary(&h, &m, Vec::new()))
}

/// Tables not carried into another install: credentials and links bound to the source
/// install's keys (keyed hashes), which could never be used there.
pub const IMPORT_SKIPPED: &[&str] = &[
    "sessions",
    "password_resets",
    "invitations",
    "api_keys",
    "idx_api_key_hash",
    "idx_invitation_token",
    "idx_reset_token",
];

/// Tables left out of an import under a new tenant id, besides [`IMPORT_SKIPPED`]: widget
/// visitors' token hashes (global keys; the visitors of the copy start new sessions).
pub const IMPORT_AS_NEW_SKIPPED: &[&str] = &["idx_visitor_token"];

/// How a tenant export is imported.
#[derive(Clone, Copy, Debug, Default)]
pub struct ImportOptions<'a> {
    /// The export's passphrase, when its secrets were sealed with one.
    pub passphrase: Option<&'a str>,
    /// Under a new tenant id, every id of the tenant remapped (see `remap`), instead of the
    /// id it had (refused when it exists here).
    pub as_new: bool,
    pub limits: Limits,
}

/// Imports a tenant export into the live store: the archive is unpacked and checked into a
/// scratch store under `<data>/tmp/` first (migrated there when older), then the tenant's
/// files are moved into place and its rows are copied in ONE transaction. Refused, with
/// nothing left behind, when the tenant id exists here (unless imported as new) or a unique
/// key (an email, a widget key) is taken. Blocking.
pub fn import_tenant(
    store: &Store,
    data_dir: &Path,
    input: impl Read,
    sealer: &Sealer,
    opts: &ImportOptions<'_>,
) -> Result<Summary> {
    let tmp = data_dir
        .join("tmp")
        .join(format!("import-{}", uuid::Uuid::now_v7()));
    let r = import_inner(store, data_dir, &tmp, input, sealer, opts);
    let _ = std::fs::remove_dir_all(&tmp);
    r
}

/// Whether a tenant id is free here: no tenant record and no folder of it.
fn tenant_free(store: &Store, data_dir: &Path, t: &TenantId) -> Result<bool> {
    let exists = store.read(|tx| tx.get::<crate::model::Tenant>(t, ""))?;
    Ok(exists.is_none()
        && !data_dir.join("tenants").join(t.as_str()).exists()
        && !data_dir.join("media").join(t.as_str()).exists())
}

fn import_inner(
    store: &Store,
    data_dir: &Path,
    tmp: &Path,
    input: impl Read,
    sealer: &Sealer,
    opts: &ImportOptions<'_>,
) -> Result<Summary> {
    let (h, m) = unpack(
        input,
        tmp,
        Unpack {
            kind: ArchiveKind::Tenant,
            limits: &opts.limits,
            reseal: Some((sealer, opts.passphrase)),
        },
    )?;
    let tenant = h
        .tenant_id
        .as_deref()
        .and_then(TenantId::parse)
        .ok_or_else(|| Error::Damaged("a tenant export without a tenant id".into()))?;
    let scratch = Store::open(tmp, 16 << 20)?;
    let src = scratch.snapshot()?;
    if src.get::<crate::model::Tenant>(&tenant, "")?.is_none() {
        return Err(Error::Damaged("the export does not hold its tenant".into()));
    }
    let mut skip: Vec<&str> = IMPORT_SKIPPED.to_vec();
    // The tenant id the rows get here, and how they are rewritten for it.
    let (target, remap) = if opts.as_new {
        skip.extend(IMPORT_AS_NEW_SKIPPED);
        let mut remap = remap::Remap::new();
        for (name, kind) in src.tables()? {
            src.for_each::<Error>(&name, kind, Some(&tenant), |row| {
                remap.learn(&name, &row);
                Ok(())
            })?;
        }
        let mut target = remap.tenant(&tenant);
        let mut tries = 0;
        while !tenant_free(store, data_dir, &target)? {
            tries += 1;
            if tries == 8 {
                return Err(Error::Conflict(
                    "no free tenant id was found for the import; try again".into(),
                ));
            }
            remap.reroll();
            target = remap.tenant(&tenant);
        }
        (target, Some(remap))
    } else {
        if !tenant_free(store, data_dir, &tenant)? {
            return Err(Error::Conflict(format!(
                "tenant {tenant} exists in this install already (import it as a new tenant to keep both)"
            )));
        }
        (tenant.clone(), None)
    };
    let dest = data_dir.join("tenants").join(target.as_str());
    let media_dest = data_dir.join("media").join(target.as_str());
    // Files before records, as an upload does. Files are named by content (documents) or
    // by hex ids (media): only their tenant folder changes with the tenant id.
    let from = tmp.join("tenants").join(tenant.as_str());
    if from.exists() {
        std::fs::create_dir_all(data_dir.join("tenants"))?;
        std::fs::rename(&from, &dest)?;
    }
    let undo = || {
        let _ = std::fs::remove_dir_all(&dest);
        let _ = std::fs::remove_dir_all(&media_dest);
    };
    let media_from = tmp.join("media").join(tenant.as_str());
    if media_from.exists() {
        let moved = std::fs::create_dir_all(data_dir.join("media"))
            .and_then(|_| std::fs::rename(&media_from, &media_dest));
        if let Err(e) = moved {
            undo();
            return Err(e.into());
        }
    }
    let done = match &remap {
        Some(r) => store.import_tenant(&src, &tenant, &skip, &target, |row| r.row(row)),
        None => store.import_tenant(&src, &tenant, &skip, &target, |row| row),
    };
    match done {
        Ok(Ok(_)) => {}
        Ok(Err(store::ImportConflict::TenantExists)) => {
            undo();
            return Err(Error::Conflict(format!(
                "tenant {target} exists in this install already"
            )));
        }
        Ok(Err(store::ImportConflict::IndexTaken { table, key })) => {
            undo();
            let what = match table.as_str() {
                "idx_user_email" => format!(
                    "the email {key} belongs to a user of this install (emails are unique per install: remove or rename that user first)"
                ),
                _ => format!("a unique key of the export is taken here ({table})"),
            };
            return Err(Error::Conflict(what));
        }
        Err(e) => {
            undo();
            return Err(e.into());
        }
    }
    let mut s = summary(&h, &m, Vec::new());
    s.tenant_id = Some(target.to_string());
    for t in &skip {
        s.tables.remove(*t);
    }
    Ok(s)
}

/// Reads a whole archive and checks it (header, every checksum, the manifest) without
/// writing anything. Blocking.
pub fn verify(input: impl Read, limits: &Limits) -> Result<Summary> {
    let (h, m) = archive::read(input, limits, |_| Ok(()), |_| Ok(()))?;
    Ok(summary(&h, &m, Vec::new()))
}

/// `aigentable backup`: a full backup of `data_dir` into `out` (atomically, checked before it
/// gets its name, with `limits`: a backup this install could not restore is not kept). Asks
/// the server running on `data_dir` through its admin socket; when none runs, opens the store
/// itself. Blocking.
pub fn backup_to_file(data_dir: &Path, out: &Path, limits: &Limits) -> Result<Summary> {
    if !data_dir.join("aigentable.redb").exists() {
        return Err(Error::Conflict(format!(
            "{} holds no aigentable store",
            data_dir.display()
        )));
    }
    let mut direct = None;
    schedule::write_atomically(out, |w| {
        #[cfg(unix)]
        if socket::request_backup(data_dir, w)? {
            return Ok(());
        }
        let store = match Store::open(data_dir, 16 << 20) {
            Ok(s) => s,
            Err(store::Error::Locked { .. }) => {
                return Err(Error::Conflict(format!(
                    "a server runs on {} but its admin socket ({}) does not answer; is it an older version?",
                    data_dir.display(),
                    data_dir.join(socket::SOCKET_NAME).display()
                )));
            }
            Err(e) => return Err(e.into()),
        };
        direct = Some(backup_full(&store, data_dir, w)?);
        Ok(())
    })?;
    let checked = verify(std::io::BufReader::new(std::fs::File::open(out)?), limits);
    match (checked, direct) {
        (Ok(_), Some(s)) => Ok(s),
        (Ok(s), None) => Ok(s),
        (Err(e), _) => {
            let _ = std::fs::remove_file(out);
            Err(e)
        }
    }
}

/// `aigentable restore`: see [`restore`].
pub fn restore_file(file: &Path, dir: &Path, limits: &Limits) -> Result<Summary> {
    let f = std::fs::File::open(file)?;
    restore(std::io::BufReader::new(f), dir, limits)
}
