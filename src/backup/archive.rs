//! The backup archive format (version 2; version 1 had no `media/` entries and is still
//! read): a gzip-compressed tar holding
//!
//! ```text
//! aigentable-backup.json          header: format, formatVersion, kind, schemaVersion, tenantId
//! tables/<table>/<part>.jsonl     the rows of one table, at most PART_BYTES per part
//! files/<tenantId>/<sha256>       stored originals of uploads (content-addressed)
//! media/<tenantId>/<id>           channel media of messages (attachments; hex ids)
//! secrets/<name>                  full backups only: the install's keys
//! manifest.json                   last: every entry above with its sha256 and size
//! ```
//!
//! A record row is `{"t": tenantId, "k": id, "v": <the record's JSON>}`, an index row
//! `{"k": key, "v": "tenantId/id"}`, a meta row `{"k": name, "v": <u64>}`. Readers check every
//! entry against the manifest and refuse an archive with a missing, extra or altered entry.
//! Entry names are parsed, never used as paths: a name with `..`, an absolute or an empty
//! component is refused outright, and a stored file (files/, media/) larger than
//! [`Limits::max_file_bytes`] (`BACKUP_MAX_FILE_BYTES`) is refused before anything of it is
//! written.

use super::Error;
use crate::store::{Kind, Row};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};

/// The archive format this build writes and reads (and every older one). 2 added `media/`
/// entries: an older build refuses such an archive as too new instead of as damaged.
pub const FORMAT_VERSION: u32 = 2;
pub const FORMAT_NAME: &str = "aigentable-backup";
const HEADER: &str = "aigentable-backup.json";
const MANIFEST: &str = "manifest.json";
/// Rows are buffered per part: this bounds the memory a table of any size needs.
const PART_BYTES: usize = 8 * 1024 * 1024;
/// The default of [`Limits::max_file_bytes`] (`BACKUP_MAX_FILE_BYTES`): 4 GiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 4 << 30;

/// What a reader accepts from an archive.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The largest stored file (an upload's original, a channel media file) an archive may
    /// hold (`BACKUP_MAX_FILE_BYTES`). At least what the upload and channel-media limits let
    /// in (the configuration checks it); it bounds what a crafted archive can make a restore
    /// or an import write for one entry.
    pub max_file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
        }
    }
}

impl Limits {
    /// The limits the configuration sets.
    pub fn from_config(c: &crate::config::Config) -> Self {
        Limits {
            max_file_bytes: c.backup_max_file_bytes,
        }
    }
}
/// The longest media id accepted (ids are hex digests; see `channels::short_hash`).
const MAX_MEDIA_ID: usize = 128;

/// A whole install or one tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveKind {
    Full,
    Tenant,
}

/// The first entry: what the archive is, readable before anything is written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    pub format: String,
    pub format_version: u32,
    pub kind: ArchiveKind,
    /// The store schema the rows are written in.
    pub schema_version: u64,
    /// rfc3339
    pub created_at: String,
    pub aigentable_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// Every table in the archive and its kind (an empty table is restored too).
    pub tables: BTreeMap<String, Kind>,
    /// Tenant exports: how the tenant's sealed secrets travel (see `super::Secrets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<super::SecretsHeader>,
}

/// One entry of the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntrySum {
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

/// The last entry: everything the archive holds, with checksums.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub entries: Vec<EntrySum>,
    /// Table name -> (kind, rows), for reports.
    pub tables: BTreeMap<String, TableSum>,
    pub files: u64,
    /// Channel media files (archives of older builds have none).
    #[serde(default)]
    pub media: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSum {
    pub kind: Kind,
    pub rows: u64,
}

#[derive(Serialize, Deserialize)]
struct RecordLine<'a> {
    t: std::borrow::Cow<'a, str>,
    k: std::borrow::Cow<'a, str>,
    v: serde_json::Value,
}
#[derive(Serialize, Deserialize)]
struct IndexLine<'a> {
    k: std::borrow::Cow<'a, str>,
    v: std::borrow::Cow<'a, str>,
}
#[derive(Serialize, Deserialize)]
struct CountLine<'a> {
    t: std::borrow::Cow<'a, str>,
    k: std::borrow::Cow<'a, str>,
    v: u64,
}
#[derive(Serialize, Deserialize)]
struct MetaLine<'a> {
    k: std::borrow::Cow<'a, str>,
    v: u64,
}
/// A row of a raw-bytes table (chunk vectors): the value as base64.
#[derive(Serialize, Deserialize)]
struct BytesLine<'a> {
    t: std::borrow::Cow<'a, str>,
    k: std::borrow::Cow<'a, str>,
    b: std::borrow::Cow<'a, str>,
}

fn sha_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Writes an archive entry by entry; [`finish`](Self::finish) appends the manifest.
pub struct Writer<W: Write> {
    tar: tar::Builder<GzEncoder<W>>,
    manifest: Manifest,
    mtime: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W, header: &Header) -> Result<Self, Error> {
        let mut tar = tar::Builder::new(GzEncoder::new(out, Compression::fast()));
        tar.mode(tar::HeaderMode::Deterministic);
        let mtime = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
        let mut w = Writer {
            tar,
            manifest: Manifest::default(),
            mtime,
        };
        let bytes = serde_json::to_vec_pretty(header).map_err(Error::json)?;
        w.entry(HEADER, &bytes)?;
        Ok(w)
    }

    fn tar_header(&self, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(0o600);
        h.set_mtime(self.mtime);
        h.set_entry_type(tar::EntryType::Regular);
        h
    }

    /// One entry from memory.
    pub fn entry(&mut self, path: &str, bytes: &[u8]) -> Result<(), Error> {
        let mut h = self.tar_header(bytes.len() as u64);
        self.tar.append_data(&mut h, path, bytes)?;
        self.manifest.entries.push(EntrySum {
            path: path.to_string(),
            sha256: sha_hex(bytes),
            bytes: bytes.len() as u64,
        });
        Ok(())
    }

    /// One entry streamed from a reader of known size (a stored file).
    pub fn entry_from(&mut self, path: &str, size: u64, r: impl Read) -> Result<(), Error> {
        let mut h = self.tar_header(size);
        let mut hr = HashingReader::new(r);
        self.tar.append_data(&mut h, path, &mut hr)?;
        if hr.n != size {
            return Err(Error::Io(std::io::Error::other(format!(
                "{path} changed size while it was archived"
            ))));
        }
        self.manifest.entries.push(EntrySum {
            path: path.to_string(),
            sha256: hex::encode(hr.h.finalize()),
            bytes: size,
        });
        Ok(())
    }

    /// A table writer; rows are cut into parts of bounded size.
    pub fn table(&mut self, name: &str, kind: Kind) -> TableWriter<'_, W> {
        self.manifest
            .tables
            .insert(name.to_string(), TableSum { kind, rows: 0 });
        TableWriter {
            w: self,
            name: name.to_string(),
            buf: Vec::new(),
            part: 0,
        }
    }

    pub fn count_file(&mut self) {
        self.manifest.files += 1;
    }

    pub fn count_media(&mut self) {
        self.manifest.media += 1;
    }

    /// Appends the manifest and flushes; returns the manifest and the inner writer.
    pub fn finish(mut self) -> Result<(Manifest, W), Error> {
        let m = self.manifest.clone();
        let bytes = serde_json::to_vec_pretty(&m).map_err(Error::json)?;
        let mut h = self.tar_header(bytes.len() as u64);
        self.tar.append_data(&mut h, MANIFEST, bytes.as_slice())?;
        let gz = self.tar.into_inner()?;
        let out = gz.finish()?;
        Ok((m, out))
    }
}

/// Writes the rows of one table as JSONL parts.
pub struct TableWriter<'a, W: Write> {
    w: &'a mut Writer<W>,
    name: String,
    buf: Vec<u8>,
    part: u32,
}

impl<W: Write> TableWriter<'_, W> {
    pub fn row(&mut self, row: &Row) -> Result<(), Error> {
        match row {
            Row::Record { tenant, id, value } => {
                let v: serde_json::Value = serde_json::from_slice(value).map_err(Error::json)?;
                serde_json::to_writer(
                    &mut self.buf,
                    &RecordLine {
                        t: tenant.into(),
                        k: id.into(),
                        v,
                    },
                )
            }
            Row::Index { key, value } => serde_json::to_writer(
                &mut self.buf,
                &IndexLine {
                    k: key.into(),
                    v: value.into(),
                },
            ),
            Row::Meta { key, value } => serde_json::to_writer(
                &mut self.buf,
                &MetaLine {
                    k: key.into(),
                    v: *value,
                },
            ),
            Row::Count {
                tenant,
                name,
                value,
            } => serde_json::to_writer(
                &mut self.buf,
                &CountLine {
                    t: tenant.into(),
                    k: name.into(),
                    v: *value,
                },
            ),
            Row::Bytes { tenant, id, value } => {
                use base64::Engine as _;
                serde_json::to_writer(
                    &mut self.buf,
                    &BytesLine {
                        t: tenant.into(),
                        k: id.into(),
                        b: base64::engine::general_purpose::STANDARD
                            .encode(value)
                            .into(),
                    },
                )
            }
        }
        .map_err(Error::json)?;
        self.buf.push(b'\n');
        if let Some(t) = self.w.manifest.tables.get_mut(&self.name) {
            t.rows += 1;
        }
        if self.buf.len() >= PART_BYTES {
            self.flush_part()?;
        }
        Ok(())
    }

    fn flush_part(&mut self) -> Result<(), Error> {
        let path = format!("tables/{}/{:06}.jsonl", self.name, self.part);
        let buf = std::mem::take(&mut self.buf);
        self.w.entry(&path, &buf)?;
        self.part += 1;
        Ok(())
    }

    /// Writes the last part (an empty table still gets one, so it is restored).
    pub fn finish(mut self) -> Result<(), Error> {
        if !self.buf.is_empty() || self.part == 0 {
            self.flush_part()?;
        }
        Ok(())
    }
}

struct HashingReader<R> {
    inner: R,
    h: Sha256,
    n: u64,
}
impl<R> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            h: Sha256::new(),
            n: 0,
        }
    }
}
impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.h.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
}

/// What an archive entry is, by its name.
pub enum Entry<'a> {
    /// A part of a table's rows.
    Rows {
        table: String,
        kind: Kind,
        rows: Vec<Row>,
    },
    /// A stored file: copy it from the reader.
    File {
        tenant: crate::types::TenantId,
        sha256: String,
        reader: &'a mut dyn Read,
    },
    /// A channel media file of a message: copy it from the reader.
    Media {
        tenant: crate::types::TenantId,
        id: String,
        reader: &'a mut dyn Read,
    },
    Secret {
        name: String,
        bytes: Vec<u8>,
    },
}

/// A media id as the channels name files: hex, bounded (never a path).
pub fn is_media_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_MEDIA_ID && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Refuses entry names that could mean a place outside the target if used as a path
/// (they never are: this says clearly what is wrong with a crafted archive).
fn check_entry_name(path: &str) -> Result<(), Error> {
    let unsafe_part = path.starts_with('/')
        || path.contains('\\')
        || path
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..");
    if unsafe_part {
        return Err(Error::Damaged(format!(
            "unsafe entry name {path:?}: entries may not contain '..', '.', '\\', empty parts or a leading '/'"
        )));
    }
    Ok(())
}

fn check_file_size(path: &str, size: u64, limits: &Limits) -> Result<(), Error> {
    let max = limits.max_file_bytes;
    if size > max {
        return Err(Error::FileTooLarge(
            format!(
                "{path} is a stored file of {size} bytes; this install accepts at most {max} (BACKUP_MAX_FILE_BYTES): raise it to restore or import this archive"
            ),
            max,
        ));
    }
    Ok(())
}

/// Reads an archive, calling `on_entry` for every entry after the header (given to
/// `on_header` first, which may refuse it). Every entry's checksum is checked against the
/// manifest at the end; `Err(Error::Damaged)` when anything does not match. The caller undoes
/// what it wrote when this fails.
pub fn read(
    input: impl Read,
    limits: &Limits,
    mut on_header: impl FnMut(&Header) -> Result<(), Error>,
    mut on_entry: impl FnMut(Entry<'_>) -> Result<(), Error>,
) -> Result<(Header, Manifest), Error> {
    let mut tar = tar::Archive::new(GzDecoder::new(input));
    let mut header: Option<Header> = None;
    let mut manifest: Option<Manifest> = None;
    let mut seen: Vec<EntrySum> = Vec::new();
    let mut kinds: BTreeMap<String, Kind> = BTreeMap::new();
    // What the entries really hold, checked against the manifest's counts at the end (they
    // are what restores and imports report).
    let mut rows_read: BTreeMap<String, u64> = BTreeMap::new();
    let (mut files_read, mut media_read) = (0u64, 0u64);
    for e in tar.entries().map_err(damaged)? {
        let mut e = e.map_err(damaged)?;
        if manifest.is_some() {
            return Err(Error::Damaged("entries after the manifest".into()));
        }
        if e.header().entry_type() != tar::EntryType::Regular {
            return Err(Error::Damaged("an entry that is not a regular file".into()));
        }
        let path = e
            .path()
            .map_err(damaged)?
            .to_str()
            .ok_or_else(|| Error::Damaged("an entry name that is not UTF-8".into()))?
            .to_string();
        check_entry_name(&path)?;
        let size = e.header().size().map_err(damaged)?;
        if header.is_none() {
            if path != HEADER {
                return Err(Error::Damaged(
                    "not an aigentable backup (no header entry first)".into(),
                ));
            }
            let bytes = read_small(&mut e, size, 1 << 20)?;
            let h: Header = serde_json::from_slice(&bytes)
                .map_err(|e| Error::Damaged(format!("unreadable header: {e}")))?;
            if h.format != FORMAT_NAME {
                return Err(Error::Damaged("not an aigentable backup".into()));
            }
            if h.format_version > FORMAT_VERSION {
                return Err(Error::TooNew(format!(
                    "archive format {} (this build reads up to {FORMAT_VERSION})",
                    h.format_version
                )));
            }
            seen.push(EntrySum {
                path,
                sha256: sha_hex(&bytes),
                bytes: size,
            });
            on_header(&h)?;
            kinds = expected_kinds(&h);
            header = Some(h);
            continue;
        }
        if path == MANIFEST {
            let bytes = read_small(&mut e, size, 256 << 20)?;
            manifest = Some(
                serde_json::from_slice(&bytes)
                    .map_err(|e| Error::Damaged(format!("unreadable manifest: {e}")))?,
            );
            continue;
        }
        let parts: Vec<&str> = path.split('/').collect();
        let sum = match parts.as_slice() {
            ["tables", table, part] if part.ends_with(".jsonl") && valid_name(table) => {
                let bytes = read_small(&mut e, size, PART_BYTES as u64 * 4)?;
                let kind = *kinds.get(*table).ok_or_else(|| {
                    Error::Damaged(format!("{path}: a table the header does not list"))
                })?;
                let rows =
                    parse_rows(&bytes, kind).map_err(|m| Error::Damaged(format!("{path}: {m}")))?;
                *rows_read.entry(table.to_string()).or_default() += rows.len() as u64;
                on_entry(Entry::Rows {
                    table: table.to_string(),
                    kind,
                    rows,
                })?;
                EntrySum {
                    path: path.clone(),
                    sha256: sha_hex(&bytes),
                    bytes: size,
                }
            }
            ["files", tenant, sha] if is_sha256(sha) => {
                check_file_size(&path, size, limits)?;
                let tenant = crate::types::TenantId::parse(tenant)
                    .ok_or_else(|| Error::Damaged(format!("{path}: not a tenant id")))?;
                let mut hr = HashingReader::new(&mut e);
                on_entry(Entry::File {
                    tenant,
                    sha256: sha.to_string(),
                    reader: &mut hr,
                })?;
                // Whatever the sink did not read still counts.
                std::io::copy(&mut hr, &mut std::io::sink())?;
                let digest = hex::encode(hr.h.clone().finalize());
                if digest != *sha {
                    return Err(Error::Damaged(format!(
                        "{path}: content does not match its name"
                    )));
                }
                files_read += 1;
                EntrySum {
                    path: path.clone(),
                    sha256: digest,
                    bytes: hr.n,
                }
            }
            ["media", tenant, id] if is_media_id(id) => {
                check_file_size(&path, size, limits)?;
                let tenant = crate::types::TenantId::parse(tenant)
                    .ok_or_else(|| Error::Damaged(format!("{path}: not a tenant id")))?;
                let mut hr = HashingReader::new(&mut e);
                on_entry(Entry::Media {
                    tenant,
                    id: id.to_string(),
                    reader: &mut hr,
                })?;
                std::io::copy(&mut hr, &mut std::io::sink())?;
                media_read += 1;
                // The manifest holds its checksum: compared with all others at the end.
                EntrySum {
                    path: path.clone(),
                    sha256: hex::encode(hr.h.clone().finalize()),
                    bytes: hr.n,
                }
            }
            ["secrets", name] if valid_name(name) => {
                let bytes = read_small(&mut e, size, 64 << 10)?;
                let sum = EntrySum {
                    path: path.clone(),
                    sha256: sha_hex(&bytes),
                    bytes: size,
                };
                on_entry(Entry::Secret {
                    name: name.to_string(),
                    bytes,
                })?;
                sum
            }
            _ => return Err(Error::Damaged(format!("unexpected entry {path}"))),
        };
        seen.push(sum);
    }
    let header = header.ok_or_else(|| Error::Damaged("empty archive".into()))?;
    let manifest =
        manifest.ok_or_else(|| Error::Damaged("no manifest: the archive is truncated".into()))?;
    if manifest.entries != seen {
        let listed: std::collections::HashSet<_> = manifest.entries.iter().collect();
        let bad = seen
            .iter()
            .find(|s| !listed.contains(s))
            .map(|s| s.path.clone())
            .or_else(|| {
                let got: std::collections::HashSet<_> = seen.iter().collect();
                manifest
                    .entries
                    .iter()
                    .find(|s| !got.contains(s))
                    .map(|s| format!("{} (missing)", s.path))
            })
            .unwrap_or_else(|| "entry order".into());
        return Err(Error::Damaged(format!(
            "checksum mismatch against the manifest: {bad}"
        )));
    }
    let listed: BTreeMap<String, u64> = manifest
        .tables
        .iter()
        .map(|(k, v)| (k.clone(), v.rows))
        .collect();
    let kinds_agree = manifest
        .tables
        .iter()
        .all(|(k, v)| kinds.get(k) == Some(&v.kind));
    if listed != rows_read
        || !kinds_agree
        || manifest.files != files_read
        || manifest.media != media_read
    {
        return Err(Error::Damaged(
            "the manifest's counts of rows, files or media do not match the entries".into(),
        ));
    }
    Ok((header, manifest))
}

fn expected_kinds(h: &Header) -> BTreeMap<String, Kind> {
    h.tables.clone()
}

fn damaged(e: std::io::Error) -> Error {
    Error::Damaged(format!("unreadable archive: {e}"))
}

fn read_small(r: &mut impl Read, size: u64, max: u64) -> Result<Vec<u8>, Error> {
    if size > max {
        return Err(Error::Damaged(format!(
            "an entry of {size} bytes where at most {max} are expected"
        )));
    }
    // The size is the archive's word: memory grows with what really arrives.
    let mut v = Vec::with_capacity(size.min(1 << 20) as usize);
    r.take(size).read_to_end(&mut v).map_err(damaged)?;
    Ok(v)
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn parse_rows(bytes: &[u8], kind: Kind) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let bad = |e: serde_json::Error| format!("line {}: {e}", i + 1);
        rows.push(match kind {
            Kind::Record => {
                let l: RecordLine = serde_json::from_slice(line).map_err(bad)?;
                Row::Record {
                    tenant: l.t.into_owned(),
                    id: l.k.into_owned(),
                    value: serde_json::to_vec(&l.v).map_err(bad)?,
                }
            }
            Kind::Index => {
                let l: IndexLine = serde_json::from_slice(line).map_err(bad)?;
                Row::Index {
                    key: l.k.into_owned(),
                    value: l.v.into_owned(),
                }
            }
            Kind::Meta => {
                let l: MetaLine = serde_json::from_slice(line).map_err(bad)?;
                Row::Meta {
                    key: l.k.into_owned(),
                    value: l.v,
                }
            }
            Kind::Count => {
                let l: CountLine = serde_json::from_slice(line).map_err(bad)?;
                Row::Count {
                    tenant: l.t.into_owned(),
                    name: l.k.into_owned(),
                    value: l.v,
                }
            }
            Kind::Bytes => {
                use base64::Engine as _;
                let l: BytesLine = serde_json::from_slice(line).map_err(bad)?;
                Row::Bytes {
                    tenant: l.t.into_owned(),
                    id: l.k.into_owned(),
                    value: base64::engine::general_purpose::STANDARD
                        .decode(l.b.as_bytes())
                        .map_err(|e| format!("line {}: {e}", i + 1))?,
                }
            }
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "01a22dba-0000-7000-8000-000000000001";

    fn header() -> Header {
        Header {
            format: FORMAT_NAME.into(),
            format_version: FORMAT_VERSION,
            kind: ArchiveKind::Full,
            schema_version: 1,
            created_at: "now".into(),
            aigentable_version: "test".into(),
            tenant_id: None,
            tables: [("messages".to_string(), Kind::Record)].into(),
            secrets: None,
        }
    }

    /// An archive with one message row and one media file; `edit` may change the manifest
    /// before it is written.
    fn archive(edit: impl FnOnce(&mut Manifest)) -> Vec<u8> {
        let mut w = Writer::new(Vec::new(), &header()).expect("writer");
        let mut t = w.table("messages", Kind::Record);
        t.row(&Row::Record {
            tenant: T.into(),
            id: "c/m".into(),
            value: br#"{"attachments":[{"id":"ab12"}]}"#.to_vec(),
        })
        .expect("row");
        t.finish().expect("part");
        w.entry_from(&format!("media/{T}/ab12"), 3, &b"jpg"[..])
            .expect("media");
        w.count_media();
        edit(&mut w.manifest);
        w.finish().expect("finish").1
    }

    #[test]
    fn an_archive_reads_back_with_its_counts() {
        let (_, m) = read(
            &archive(|_| {})[..],
            &Limits::default(),
            |_| Ok(()),
            |_| Ok(()),
        )
        .expect("reads");
        assert_eq!((m.tables["messages"].rows, m.files, m.media), (1, 0, 1));
    }

    #[test]
    fn counts_the_entries_do_not_hold_are_refused() {
        for edit in [
            (|m: &mut Manifest| m.media = 2) as fn(&mut Manifest),
            |m| m.files = 1,
            |m| m.tables.get_mut("messages").expect("table").rows = 9,
            |m| {
                m.tables.insert(
                    "ghost".into(),
                    TableSum {
                        kind: Kind::Record,
                        rows: 0,
                    },
                );
            },
        ] {
            let e = read(
                &archive(edit)[..],
                &Limits::default(),
                |_| Ok(()),
                |_| Ok(()),
            )
            .expect_err("refused");
            assert!(e.to_string().contains("counts"), "{e}");
        }
    }

    #[test]
    fn entry_names_that_could_climb_out_are_refused() {
        for bad in [
            "media/../../x",
            "/etc/passwd",
            "files//x",
            "media/./x",
            "files/..",
            "a\\b",
        ] {
            let e = check_entry_name(bad).expect_err(bad);
            assert!(e.to_string().contains("unsafe entry name"), "{e}");
        }
        for good in ["manifest.json", "tables/users/000000.jsonl", "media/t/ab12"] {
            check_entry_name(good).expect(good);
        }
        assert!(is_media_id("0123abcdef") && !is_media_id("") && !is_media_id("x.jpg"));
        assert!(!is_media_id(&"a".repeat(MAX_MEDIA_ID + 1)));
    }

    #[test]
    fn a_stored_file_over_the_limit_is_refused_with_the_setting_named() {
        let tight = Limits { max_file_bytes: 2 };
        let e = read(&archive(|_| {})[..], &tight, |_| Ok(()), |_| Ok(())).expect_err("3 > 2");
        assert!(matches!(e, Error::FileTooLarge(_, 2)), "{e}");
        assert!(e.to_string().contains("BACKUP_MAX_FILE_BYTES"), "{e}");
        let exact = Limits { max_file_bytes: 3 };
        read(&archive(|_| {})[..], &exact, |_| Ok(()), |_| Ok(())).expect("3 <= 3");
    }
}
