//! The compact form of chunk records (schema 15): the largest table of a knowledge base,
//! one row per ~400-token piece of every document.
//!
//! JSON repeated per row what the key already says (the tenant, document and chunk ids, ~110
//! bytes), every field name, and the text uncompressed. This form keeps only what the key
//! does not: the small fields as varints, then the text, zstd-compressed when that is
//! smaller. Everything else still stores JSON, and so does a chunk written by an older build:
//! [`is_compact`] tells the two apart by the first byte (JSON starts with `{`). Backups and
//! tenant exports carry chunks as JSON ([`super::export_value`]), so archives read the same
//! across versions.
//!
//! Layout, version 1 (`[COMPACT_V1]` first):
//! ```text
//! 0x01 | ordinal | page+1 (0: none) | token_count | model len+1 (0: none), model bytes
//!      | headings count, then each: len, bytes | text codec (0 raw, 1 zstd) | text len
//!      | text bytes (raw, or one zstd frame of exactly `text len` bytes decompressed)
//! ```
//! Numbers are LEB128 varints. Pure functions over bytes: no redb, no model types.

/// The first byte of a version-1 compact record (never `{`).
pub(super) const COMPACT_V1: u8 = 1;

const TEXT_RAW: u8 = 0;
const TEXT_ZSTD: u8 = 1;

/// zstd's level for chunk texts: level 3 compresses a few hundred bytes of prose about as
/// well as the highest levels (measured: BENCHMARKS.md, "Session 10") at a fraction of the
/// time.
const ZSTD_LEVEL: i32 = 3;

/// Texts shorter than this are stored raw: a zstd frame's own header and the call cost more
/// than they could save.
const COMPRESS_FROM: usize = 64;

/// The longest text a record may claim, so a corrupt length cannot ask for unbounded memory
/// (chunks are a few KiB; documents are split long before this).
const MAX_TEXT: usize = 16 << 20;

/// The fields of a chunk a compact record keeps (its ids come from its key), borrowed for
/// writing.
pub(super) struct ChunkRef<'a> {
    pub ordinal: u32,
    pub page: Option<u32>,
    pub token_count: u32,
    pub embedding_model: Option<&'a str>,
    pub headings: &'a [String],
    pub text: &'a str,
}

/// The fields of a chunk a compact record keeps, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ChunkFields {
    pub ordinal: u32,
    pub page: Option<u32>,
    pub token_count: u32,
    pub embedding_model: Option<String>,
    pub headings: Vec<String>,
    pub text: String,
}

/// Whether stored bytes are a compact record (else JSON).
pub(super) fn is_compact(bytes: &[u8]) -> bool {
    bytes.first() == Some(&COMPACT_V1)
}

pub(super) fn encode_chunk(f: &ChunkRef<'_>) -> Vec<u8> {
    let text = f.text.as_bytes();
    let mut out = Vec::with_capacity(32 + text.len());
    out.push(COMPACT_V1);
    varint(&mut out, f.ordinal.into());
    varint(&mut out, f.page.map_or(0, |p| u64::from(p) + 1));
    varint(&mut out, f.token_count.into());
    match f.embedding_model {
        Some(m) => bytes(&mut out, m.as_bytes(), 1),
        None => varint(&mut out, 0),
    }
    varint(&mut out, f.headings.len() as u64);
    for h in f.headings {
        bytes(&mut out, h.as_bytes(), 0);
    }
    let compressed = (text.len() >= COMPRESS_FROM)
        .then(|| zstd::bulk::compress(text, ZSTD_LEVEL).ok())
        .flatten()
        .filter(|c| c.len() < text.len());
    match compressed {
        Some(c) => {
            out.push(TEXT_ZSTD);
            varint(&mut out, text.len() as u64);
            out.extend_from_slice(&c);
        }
        None => {
            out.push(TEXT_RAW);
            varint(&mut out, text.len() as u64);
            out.extend_from_slice(text);
        }
    }
    out
}

/// Reads a compact record; the error says what is wrong with it.
pub(super) fn decode_chunk(b: &[u8]) -> Result<ChunkFields, String> {
    let mut r = Reader { b, at: 0 };
    if r.byte()? != COMPACT_V1 {
        return Err("not a compact chunk record".into());
    }
    let ordinal = r.u32()?;
    let page = match r.varint()? {
        0 => None,
        p => Some(u32::try_from(p - 1).map_err(|_| "page out of range")?),
    };
    let token_count = r.u32()?;
    let embedding_model = match r.varint()? {
        0 => None,
        n => Some(r.string(n - 1)?),
    };
    let headings = (0..r.varint()?)
        .map(|_| {
            let n = r.varint()?;
            r.string(n)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let codec = r.byte()?;
    let len = usize::try_from(r.varint()?).map_err(|_| "text length out of range")?;
    if len > MAX_TEXT {
        return Err(format!("text length {len} over the limit"));
    }
    let rest = &b[r.at..];
    let text = match codec {
        TEXT_RAW if rest.len() == len => rest.to_vec(),
        TEXT_RAW => return Err("text length does not match".into()),
        TEXT_ZSTD => {
            let t = zstd::bulk::decompress(rest, len).map_err(|e| format!("text: {e}"))?;
            if t.len() != len {
                return Err("text length does not match".into());
            }
            t
        }
        other => return Err(format!("unknown text codec {other}")),
    };
    Ok(ChunkFields {
        ordinal,
        page,
        token_count,
        embedding_model,
        headings,
        text: String::from_utf8(text).map_err(|_| "text is not UTF-8")?,
    })
}

/// A chunk as schema 14 (and every version before 15) wrote it, field for field: what
/// migration step 15 and archive imports compact. Unknown fields are refused, so a record of
/// another layout (an older one with its vector inline) is left for its own migration step.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct V14Chunk {
    id: String,
    tenant_id: String,
    document_id: String,
    ordinal: u32,
    text: String,
    page: Option<u32>,
    #[serde(default)]
    headings: Vec<String>,
    token_count: u32,
    embedding_model: Option<String>,
}

/// The compact form of a chunk stored as schema 14's JSON under key `(tenant, id)`; `None`
/// when the bytes are not exactly that (another layout, or ids that disagree with the key,
/// which the compact form could not keep): the caller then keeps them as they are.
pub(super) fn compact_v14_json(tenant: &str, id: &str, json: &[u8]) -> Option<Vec<u8>> {
    let c: V14Chunk = serde_json::from_slice(json).ok()?;
    if c.tenant_id != tenant || id != format!("{}/{}", c.document_id, c.id) {
        return None;
    }
    Some(encode_chunk(&ChunkRef {
        ordinal: c.ordinal,
        page: c.page,
        token_count: c.token_count,
        embedding_model: c.embedding_model.as_deref(),
        headings: &c.headings,
        text: &c.text,
    }))
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-prefixed byte string; the length is stored plus `bias` (1 where 0 means none).
fn bytes(out: &mut Vec<u8>, b: &[u8], bias: u64) {
    varint(out, b.len() as u64 + bias);
    out.extend_from_slice(b);
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let v = *self.b.get(self.at).ok_or("record ends early")?;
        self.at += 1;
        Ok(v)
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn u32(&mut self) -> Result<u32, String> {
        u32::try_from(self.varint()?).map_err(|_| "number out of range".into())
    }

    fn string(&mut self, n: u64) -> Result<String, String> {
        let n = usize::try_from(n).map_err(|_| "length out of range")?;
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or("record ends early")?;
        let s = std::str::from_utf8(&self.b[self.at..end]).map_err(|_| "not UTF-8")?;
        self.at = end;
        Ok(s.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(f: &ChunkFields) -> Vec<u8> {
        encode_chunk(&ChunkRef {
            ordinal: f.ordinal,
            page: f.page,
            token_count: f.token_count,
            embedding_model: f.embedding_model.as_deref(),
            headings: &f.headings,
            text: &f.text,
        })
    }

    fn fields(text: &str) -> ChunkFields {
        ChunkFields {
            ordinal: 300,
            page: Some(0),
            token_count: 123_456,
            embedding_model: Some("onnx:all-MiniLM-L6-v2:fp32:2c501bea".into()),
            headings: vec!["Billing".into(), "Refunds — über".into(), String::new()],
            text: text.into(),
        }
    }

    #[test]
    fn every_field_comes_back_compressed_or_raw() {
        let prose = "Refunds are paid to the card used for the order within five working days. \
                     Orders paid by bank transfer are refunded to the account they came from. "
            .repeat(4);
        for f in [
            fields(&prose),
            fields("short"),
            fields(""),
            ChunkFields {
                page: None,
                embedding_model: None,
                headings: Vec::new(),
                ..fields("ünïcödé text that is long enough to be worth compressing, maybe, or not")
            },
        ] {
            let b = encode(&f);
            assert!(is_compact(&b));
            assert_eq!(decode_chunk(&b).unwrap(), f);
        }
        // Prose compresses; the record is well under its JSON's size.
        let f = fields(&prose);
        let b = encode(&f);
        assert!(b.len() < prose.len() / 2, "{} of {}", b.len(), prose.len());
    }

    #[test]
    fn damaged_records_are_errors_not_panics_or_huge_allocations() {
        let b = encode(&fields(
            &"some words repeat, some words repeat. ".repeat(20),
        ));
        for cut in 0..b.len() {
            assert!(decode_chunk(&b[..cut]).is_err(), "cut at {cut}");
        }
        // A text length far over the limit is refused before anything is allocated.
        let mut huge = vec![COMPACT_V1, 0, 0, 0, 0, 0, TEXT_ZSTD];
        varint(&mut huge, u64::MAX >> 1);
        assert!(decode_chunk(&huge).unwrap_err().contains("limit"));
        // Flipped bytes inside the frame: an error (or, rarely, other text), never a panic.
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x55;
            let _ = decode_chunk(&d);
        }
        assert!(!is_compact(b"{\"id\":1}"));
        assert!(decode_chunk(b"{}").is_err());
    }
}
