//! Shared by `beir_eval` and `guard_eval` (included with `#[path]`; not an example of its
//! own): reading a retrieval benchmark in BEIR layout (`corpus.jsonl`, `queries.jsonl`,
//! `qrels/test.tsv`).

use anyhow::{Context, Result};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

/// One passage of the corpus.
pub struct Doc {
    pub id: String,
    pub title: String,
    pub text: String,
}

/// One relevance judgement: query id, passage id, grade.
pub struct Qrel {
    pub query: String,
    pub doc: String,
    pub grade: i64,
}

fn read_jsonl(path: &Path) -> Result<Vec<serde_json::Value>> {
    let f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut out = Vec::new();
    for line in BufReader::new(f).lines() {
        let line = line?;
        if !line.trim().is_empty() {
            out.push(serde_json::from_str(&line)?);
        }
    }
    Ok(out)
}

fn field(v: &serde_json::Value, k: &str) -> String {
    match &v[k] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The corpus, in file order.
pub fn corpus(dir: &Path) -> Result<Vec<Doc>> {
    Ok(read_jsonl(&dir.join("corpus.jsonl"))?
        .iter()
        .map(|v| Doc {
            id: field(v, "_id"),
            title: field(v, "title"),
            text: field(v, "text"),
        })
        .collect())
}

/// The queries by id.
pub fn queries(dir: &Path) -> Result<HashMap<String, String>> {
    Ok(read_jsonl(&dir.join("queries.jsonl"))?
        .iter()
        .map(|v| (field(v, "_id"), field(v, "text")))
        .collect())
}

/// The test judgements, in file order (a header line is skipped).
pub fn qrels(dir: &Path) -> Result<Vec<Qrel>> {
    let path = dir.join("qrels").join("test.tsv");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() < 3 || (i == 0 && cols[2].trim().parse::<i64>().is_err()) {
            continue;
        }
        out.push(Qrel {
            query: cols[0].to_string(),
            doc: cols[1].to_string(),
            grade: cols[2]
                .trim()
                .parse()
                .with_context(|| format!("{}:{}: grade", path.display(), i + 1))?,
        });
    }
    Ok(out)
}
