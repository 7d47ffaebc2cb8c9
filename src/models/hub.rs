//! `aigentable models pull`: a model from a Hugging Face hub, or any mirror that serves the
//! same two URLs, into a staging folder under `<data>/models/`:
//!
//! - `{hub}/api/models/{name}/tree/{revision}?recursive=true`: the JSON file listing (path,
//!   size, git blob `oid`, and for LFS files `lfs.oid`, the file's sha256). A plain mirror
//!   serves it as a static file.
//! - `{hub}/{name}/resolve/{revision}/{path}`: the file itself; redirects are followed and
//!   `Range` requests resume a download.
//!
//! Every file is verified before it counts: LFS files (the graphs) against their sha256,
//! other files against their git blob sha1 (`sha1("blob <size>\0" + bytes)`, which is what a
//! git oid is). A download goes to `<file>.part` and is renamed when verified; an interrupted
//! one continues from where it stopped, in this run (a few retries) or the next.
//!
//! The hub is an outbound call the operator asked for: it goes through `net::Policy::Operator`
//! (any address, redirects re-checked). A token (`HF_TOKEN`) is sent to the hub only; reqwest
//! drops it when a redirect leaves the hub's host (the CDN URLs are signed).

use super::{Error, io};
use crate::net::Policy;
use futures_util::StreamExt;
use serde::Deserialize;
use sha2::Digest as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The public hub, used when MODELS_HUB_URL is unset.
pub const DEFAULT_HUB: &str = "https://huggingface.co";
/// Attempts per file within one run before giving up (the next run resumes anyway).
const ATTEMPTS: u32 = 4;
/// Listings are small; a longer one is not a model listing.
const MAX_LISTING_BYTES: usize = 4 * 1024 * 1024;

/// What to pull and from where.
#[derive(Clone, Debug)]
pub struct PullOptions {
    /// The hub's base URL, e.g. `https://huggingface.co` or a company mirror.
    pub hub: String,
    /// The repository, e.g. `sentence-transformers/all-MiniLM-L6-v2`.
    pub repo: String,
    /// Branch, tag or commit; `main` by default.
    pub revision: String,
    /// Graphs to fetch: `fp32`, `int8` or paths as listed (`onnx/model_O2.onnx`); empty means
    /// `onnx/model.onnx` and `onnx/model_quantized.onnx`, whichever the repository has.
    pub graphs: Vec<String>,
    /// Bearer token for gated or private repositories. Never printed.
    pub token: Option<String>,
}

/// One entry of the hub's tree listing.
#[derive(Clone, Debug, Deserialize)]
pub struct TreeEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub path: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub oid: Option<String>,
    #[serde(default)]
    pub lfs: Option<Lfs>,
}

/// The LFS part of a [`TreeEntry`]: `oid` is the file's sha256.
#[derive(Clone, Debug, Deserialize)]
pub struct Lfs {
    pub oid: String,
    pub size: u64,
}

/// A file to fetch and the checksum it must have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub path: String,
    pub size: u64,
    pub check: Check,
}

/// How a file is verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    Sha256(String),
    /// The git blob id: sha1 over `blob <size>\0` and the bytes.
    GitSha1(String),
}

/// Progress of a pull, for the terminal.
#[derive(Clone, Debug)]
pub enum Progress {
    /// Starting (or resuming at `from`) a file of `size` bytes.
    Start { path: String, size: u64, from: u64 },
    /// `done` of `size` bytes of the current file are on disk.
    Bytes { path: String, done: u64, size: u64 },
    /// The file is complete and verified (or was already).
    Done { path: String, reused: bool },
    /// A transfer broke off; retrying from `at`.
    Retry {
        path: String,
        at: u64,
        error: String,
    },
}

/// Files every model folder needs or may use besides its graphs (the tokenizer and configs,
/// pooling, and the licence texts that must travel with the weights).
const METADATA: [&str; 12] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "merges.txt",
    "sentencepiece.bpe.model",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
    "README.md",
];

/// The folder name a repository installs as by default: its last path segment.
pub fn default_name(repo: &str) -> &str {
    repo.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(repo)
}

/// Picks the files to fetch from a listing; errors name what the repository lacks.
pub fn select(entries: &[TreeEntry], graphs: &[String]) -> Result<Vec<Wanted>, Error> {
    let files: Vec<&TreeEntry> = entries.iter().filter(|e| e.kind == "file").collect();
    let find = |p: &str| files.iter().copied().find(|e| e.path == p);
    for required in ["tokenizer.json", "tokenizer_config.json"] {
        if find(required).is_none() {
            return Err(Error::Invalid(format!(
                "the repository has no {required}: it is not a model in the Hugging Face \
                 layout this server loads"
            )));
        }
    }
    let graph_paths: Vec<String> = if graphs.is_empty() {
        let found: Vec<String> = ["onnx/model.onnx", "onnx/model_quantized.onnx"]
            .iter()
            .filter(|g| find(g).is_some())
            .map(|g| g.to_string())
            .collect();
        if found.is_empty() {
            let listed: Vec<&str> = files
                .iter()
                .map(|e| e.path.as_str())
                .filter(|p| p.ends_with(".onnx"))
                .collect();
            return Err(Error::Invalid(format!(
                "the repository has neither onnx/model.onnx nor onnx/model_quantized.onnx{}",
                if listed.is_empty() {
                    " (no ONNX graph at all)".to_string()
                } else {
                    format!("; choose one with --graph: {}", listed.join(", "))
                }
            )));
        }
        found
    } else {
        graphs
            .iter()
            .map(|g| match g.as_str() {
                "fp32" => "onnx/model.onnx".to_string(),
                "int8" => "onnx/model_quantized.onnx".to_string(),
                other => other.to_string(),
            })
            .collect()
    };
    let mut wanted = Vec::new();
    for g in &graph_paths {
        if !g.starts_with("onnx/") || !g.ends_with(".onnx") {
            return Err(Error::Usage(format!(
                "--graph {g}: a graph is fp32, int8 or a path like onnx/model_O2.onnx"
            )));
        }
        let e = find(g)
            .ok_or_else(|| Error::Invalid(format!("the repository has no {g} (see --graph)")))?;
        wanted.push(e);
        // Graphs over 2 GB keep their weights beside them.
        if let Some(data) = find(&format!("{g}_data")) {
            wanted.push(data);
        }
    }
    for e in &files {
        let top = !e.path.contains('/');
        let upper = e.path.to_ascii_uppercase();
        let licence = top
            && ["LICENSE", "LICENCE", "NOTICE", "PROVENANCE"]
                .iter()
                .any(|p| upper.starts_with(p));
        if METADATA.contains(&e.path.as_str()) || licence {
            wanted.push(e);
        }
    }
    wanted
        .into_iter()
        .map(|e| {
            safe_path(&e.path)?;
            let (size, check) = match &e.lfs {
                Some(lfs) => (lfs.size, Check::Sha256(lfs.oid.to_ascii_lowercase())),
                None => (
                    e.size,
                    Check::GitSha1(
                        e.oid
                            .clone()
                            .ok_or_else(|| {
                                Error::Invalid(format!(
                                    "the listing gives no checksum for {}",
                                    e.path
                                ))
                            })?
                            .to_ascii_lowercase(),
                    ),
                ),
            };
            Ok(Wanted {
                path: e.path.clone(),
                size,
                check,
            })
        })
        .collect()
}

/// A listed path must stay inside the model folder.
fn safe_path(p: &str) -> Result<(), Error> {
    let ok = !p.is_empty()
        && !p.starts_with('/')
        && p.split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != ".." && !seg.contains('\\'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "the listing names an unsafe path: {p}"
        )))
    }
}

/// A hub client: the operator's outbound policy, bounded waits, no overall timeout (a graph
/// may take minutes on a slow line; a stalled one ends on the read timeout).
pub struct Hub {
    client: reqwest::Client,
    opts: PullOptions,
}

impl Hub {
    pub fn new(opts: PullOptions) -> Result<Self, Error> {
        let base = url::Url::parse(&opts.hub)
            .map_err(|e| Error::Usage(format!("hub URL {} (MODELS_HUB_URL): {e}", opts.hub)))?;
        Policy::Operator
            .check_url(&base)
            .map_err(|e| Error::Usage(format!("hub URL {} (MODELS_HUB_URL): {e}", opts.hub)))?;
        let client = Policy::Operator
            .client(true)
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::Usage(format!("HTTP client: {e}")))?;
        Ok(Hub { client, opts })
    }

    fn url(&self, tail: &str) -> String {
        format!("{}/{tail}", self.opts.hub.trim_end_matches('/'))
    }

    fn get(&self, url: &str) -> reqwest::RequestBuilder {
        let req = self.client.get(url);
        match &self.opts.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// The repository's file listing.
    pub async fn listing(&self) -> Result<Vec<TreeEntry>, Error> {
        let url = self.url(&format!(
            "api/models/{}/tree/{}?recursive=true",
            self.opts.repo, self.opts.revision
        ));
        let resp = self.get(&url).send().await.map_err(|e| {
            Error::Download(format!("cannot reach the hub at {url}: {}", chain(&e)))
        })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(Error::Download(match status.as_u16() {
                401 | 403 => format!(
                    "{url}: HTTP {status}: the model is gated or private (set HF_TOKEN to a \
                     token that may read it)"
                ),
                404 => format!(
                    "{url}: HTTP 404: no model {} at revision {} on this hub",
                    self.opts.repo, self.opts.revision
                ),
                _ => format!("{url}: HTTP {status}"),
            }));
        }
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Error::Download(format!("{url}: {}", chain(&e))))?;
            if body.len() + chunk.len() > MAX_LISTING_BYTES {
                return Err(Error::Download(format!(
                    "{url}: the listing is over {MAX_LISTING_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body)
            .map_err(|e| Error::Download(format!("{url}: not a file listing: {e}")))
    }

    /// Fetches every wanted file into `staging`, verified. Files already complete there are
    /// kept; `.part` files are continued.
    pub async fn fetch_all(
        &self,
        wanted: &[Wanted],
        staging: &Path,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<(), Error> {
        for w in wanted {
            self.fetch(w, staging, progress).await?;
        }
        Ok(())
    }

    async fn fetch(
        &self,
        w: &Wanted,
        staging: &Path,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<(), Error> {
        let dest = staging.join(&w.path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| io(format!("creating {}", parent.display()), e))?;
        }
        // A complete file was verified before it was renamed; a changed size means a new one.
        if std::fs::metadata(&dest).is_ok_and(|m| m.len() == w.size) {
            progress(Progress::Done {
                path: w.path.clone(),
                reused: true,
            });
            return Ok(());
        }
        let part = part_path(&dest);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.transfer(w, &part, progress).await {
                Ok(()) => break,
                Err(Transfer::Broken(at, e)) if attempt < ATTEMPTS => {
                    progress(Progress::Retry {
                        path: w.path.clone(),
                        at,
                        error: e,
                    });
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
                }
                Err(Transfer::Broken(at, e)) => {
                    return Err(Error::Download(format!(
                        "{}: the download broke off at byte {at} of {} ({e}); run the same \
                         command again to resume",
                        w.path, w.size
                    )));
                }
                Err(Transfer::Fatal(e)) => return Err(e),
            }
        }
        verify(w, &part)?;
        std::fs::rename(&part, &dest).map_err(|e| io(format!("renaming {}", part.display()), e))?;
        progress(Progress::Done {
            path: w.path.clone(),
            reused: false,
        });
        Ok(())
    }

    /// One request: continues `part` from its length with a Range request, or starts over
    /// when the server ignores the range.
    async fn transfer(
        &self,
        w: &Wanted,
        part: &Path,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<(), Transfer> {
        let mut have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        if have > w.size {
            have = 0;
        }
        if have == w.size && w.size > 0 {
            return Ok(());
        }
        let url = self.url(&format!(
            "{}/resolve/{}/{}",
            self.opts.repo, self.opts.revision, w.path
        ));
        let mut req = self.get(&url);
        if have > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Transfer::Broken(have, chain(&e)))?;
        let status = resp.status();
        let append = match status.as_u16() {
            206 => {
                let start = resp
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.parse::<u64>().ok());
                if start != Some(have) {
                    // Not the range we asked for: start over rather than splice bytes.
                    let _ = std::fs::remove_file(part);
                    return Err(Transfer::Broken(
                        0,
                        "the server answered another range".into(),
                    ));
                }
                true
            }
            200 => false,
            429 | 500..=599 => {
                return Err(Transfer::Broken(have, format!("HTTP {status}")));
            }
            401 | 403 => {
                return Err(Transfer::Fatal(Error::Download(format!(
                    "{url}: HTTP {status} (gated or private: set HF_TOKEN)"
                ))));
            }
            _ => {
                return Err(Transfer::Fatal(Error::Download(format!(
                    "{url}: HTTP {status}"
                ))));
            }
        };
        if !append {
            have = 0;
        }
        progress(Progress::Start {
            path: w.path.clone(),
            size: w.size,
            from: have,
        });
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(part)
            .map_err(|e| Transfer::Fatal(io(format!("opening {}", part.display()), e)))?;
        let mut done = have;
        let mut reported = 0u64;
        let step = (w.size / 20).max(1);
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let _ = file.sync_all();
                    return Err(Transfer::Broken(done, chain(&e)));
                }
            };
            if done + chunk.len() as u64 > w.size {
                let _ = std::fs::remove_file(part);
                return Err(Transfer::Fatal(Error::Download(format!(
                    "{}: the server sent more than the {} bytes the listing gives",
                    w.path, w.size
                ))));
            }
            file.write_all(&chunk)
                .map_err(|e| Transfer::Fatal(io(format!("writing {}", part.display()), e)))?;
            done += chunk.len() as u64;
            if done / step != reported {
                reported = done / step;
                progress(Progress::Bytes {
                    path: w.path.clone(),
                    done,
                    size: w.size,
                });
            }
        }
        file.sync_all()
            .map_err(|e| Transfer::Fatal(io(format!("writing {}", part.display()), e)))?;
        if done < w.size {
            return Err(Transfer::Broken(done, "the connection closed early".into()));
        }
        Ok(())
    }
}

enum Transfer {
    /// Worth retrying from this byte.
    Broken(u64, String),
    Fatal(Error),
}

fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

/// Hashes the whole `.part` (it may have been written by several runs) and compares it with
/// the listing; a mismatch deletes it, so the next run downloads it afresh.
fn verify(w: &Wanted, part: &Path) -> Result<(), Error> {
    let mut f =
        std::fs::File::open(part).map_err(|e| io(format!("reading {}", part.display()), e))?;
    let mut buf = vec![0u8; 1 << 20];
    let (algorithm, expected, actual) = match &w.check {
        Check::Sha256(expected) => {
            let mut h = sha2::Sha256::new();
            loop {
                let n = f
                    .read(&mut buf)
                    .map_err(|e| io(format!("reading {}", part.display()), e))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            ("sha256", expected, hex::encode(h.finalize()))
        }
        Check::GitSha1(expected) => {
            use sha1::Digest as _;
            let mut h = sha1::Sha1::new();
            h.update(format!("blob {}\0", w.size).as_bytes());
            loop {
                let n = f
                    .read(&mut buf)
                    .map_err(|e| io(format!("reading {}", part.display()), e))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            ("git sha1", expected, hex::encode(h.finalize()))
        }
    };
    if &actual == expected {
        return Ok(());
    }
    let _ = std::fs::remove_file(part);
    Err(Error::Checksum {
        file: w.path.clone(),
        algorithm,
        expected: expected.clone(),
        actual,
    })
}

/// An error with its causes, e.g. `error sending request: connection refused`.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, lfs: bool) -> TreeEntry {
        TreeEntry {
            kind: "file".into(),
            path: path.into(),
            size: 3,
            oid: Some("ABC".into()),
            lfs: lfs.then(|| Lfs {
                oid: "DEF".into(),
                size: 30,
            }),
        }
    }

    #[test]
    fn selects_tokenizer_configs_licences_and_the_default_graphs() {
        let listing = vec![
            entry("tokenizer.json", false),
            entry("tokenizer_config.json", false),
            entry("config.json", false),
            entry("LICENSE", false),
            entry("pytorch_model.bin", true),
            entry("onnx/model.onnx", true),
            entry("onnx/model_O4.onnx", true),
            entry("1_Pooling/config.json", false),
        ];
        let w = select(&listing, &[]).unwrap();
        let paths: Vec<&str> = w.iter().map(|w| w.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "onnx/model.onnx",
                "tokenizer.json",
                "tokenizer_config.json",
                "config.json",
                "LICENSE",
                "1_Pooling/config.json"
            ]
        );
        assert_eq!(w[0].check, Check::Sha256("def".into()));
        assert_eq!(w[0].size, 30);
        assert_eq!(w[1].check, Check::GitSha1("abc".into()));

        let w = select(&listing, &["onnx/model_O4.onnx".into()]).unwrap();
        assert_eq!(w[0].path, "onnx/model_O4.onnx");
        let err = select(&listing, &["int8".into()]).unwrap_err().to_string();
        assert!(err.contains("onnx/model_quantized.onnx"), "{err}");
        let err = select(&listing[..2], &[]).unwrap_err().to_string();
        assert!(err.contains("no ONNX graph"), "{err}");
        let err = select(&listing[1..], &[]).unwrap_err().to_string();
        assert!(err.contains("no tokenizer.json"), "{err}");
    }

    #[test]
    fn unsafe_paths_are_refused() {
        for p in ["../x", "/etc/passwd", "a//b", "onnx/../../x", ""] {
            assert!(safe_path(p).is_err(), "{p}");
        }
        assert!(safe_path("1_Pooling/config.json").is_ok());
    }

    #[test]
    fn git_blob_ids_are_what_git_computes() {
        // `printf 'hello\n' | git hash-object --stdin`
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("x.part");
        std::fs::write(&part, "hello\n").unwrap();
        let w = Wanted {
            path: "x".into(),
            size: 6,
            check: Check::GitSha1("ce013625030ba8dba906f756967f9e9ca394464a".into()),
        };
        verify(&w, &part).unwrap();
        let bad = Wanted {
            check: Check::GitSha1("0".repeat(40)),
            ..w
        };
        let err = verify(&bad, &part).unwrap_err().to_string();
        assert!(err.contains("git sha1 mismatch"), "{err}");
        assert!(!part.exists(), "a file that fails its check is deleted");
    }

    #[test]
    fn default_names() {
        assert_eq!(
            default_name("sentence-transformers/all-MiniLM-L6-v2"),
            "all-MiniLM-L6-v2"
        );
        assert_eq!(default_name("bge-small"), "bge-small");
    }
}
