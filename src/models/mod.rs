//! Installed embedding models: what is in `<data>/models/` and in the release bundle's
//! `models/` beside the executable ([`list`]), checking a folder before it is used
//! ([`validate`]), and installing one without ever leaving half a folder in place
//! ([`import`] from a folder, [`hub::pull`] from a Hugging Face hub or a mirror of one).
//!
//! The discovery rules themselves (which folder and which graph the server runs) live in
//! `embed` (`embed::default_model`, `embed::default_graph`); this module only lists and
//! installs. Must not depend on `api` or `store`; the one entry point for API callers,
//! [`installed`], takes the caller and checks the role itself.

pub mod hub;
mod install;
mod validate;

pub use install::{check_name, import, install_staged, staging_dir};
pub use validate::{Validated, precheck, validate};

use crate::auth::{Action, Caller};
use crate::embed::{self, Location};
use std::path::{Path, PathBuf};

/// What can go wrong listing, validating or installing a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The folder is not a usable model; the message says what is wrong with it.
    #[error("{0}")]
    Invalid(String),
    /// A model of that name is installed already.
    #[error("a model named {0} is already installed at {1} (add --force to replace it)")]
    Exists(String, PathBuf),
    /// A name, URL or option is wrong.
    #[error("{0}")]
    Usage(String),
    /// A download failed; running the same command again resumes it.
    #[error("{0}")]
    Download(String),
    /// A downloaded file does not match the checksum the hub published for it.
    #[error(
        "{file}: {algorithm} mismatch (expected {expected}, got {actual}); the file was deleted, run the command again to download it anew"
    )]
    Checksum {
        file: String,
        algorithm: &'static str,
        expected: String,
        actual: String,
    },
    /// Reading or writing files failed.
    #[error("{0}")]
    Io(String),
}

pub(crate) fn io(what: impl std::fmt::Display, e: std::io::Error) -> Error {
    Error::Io(format!("{what}: {e}"))
}

/// One ONNX graph of a model folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Graph {
    /// Relative to the model folder, e.g. `onnx/model_quantized.onnx`.
    pub file: PathBuf,
    /// `fp32`, `int8`, or the file's own suffix (`O4`, `qint8_avx512`).
    pub variant: String,
    pub bytes: u64,
}

/// A model folder found in one of the model roots.
#[derive(Clone, Debug)]
pub struct Installed {
    /// The folder's name (what a tenant's `modelFolder` names, for [`Location::Data`]).
    pub name: String,
    pub dir: PathBuf,
    pub location: Location,
    /// The vector length its config declares (`hidden_size`); None when it declares none.
    /// `validate` measures the real one when the model is installed.
    pub dimensions: Option<usize>,
    pub graphs: Vec<Graph>,
    /// The graph this folder runs when EMBEDDINGS_ONNX_FILE is unset.
    pub default_graph: PathBuf,
    /// Size of the whole folder.
    pub bytes: u64,
}

/// The model folders under `<data>/models/` and beside the executable, in that order, each
/// sorted by name. Only reads the filesystem (cheap: no graph is loaded).
pub fn list(data_dir: &Path, exe_dir: Option<&Path>) -> Vec<Installed> {
    embed::model_roots(data_dir, exe_dir)
        .into_iter()
        .flat_map(|(location, root)| {
            embed::model_folders(&root)
                .into_iter()
                .map(move |dir| describe(&dir, location))
        })
        .collect()
}

/// What [`list`] says about one folder.
pub fn describe(dir: &Path, location: Location) -> Installed {
    let graphs = embed::graphs_in(dir)
        .into_iter()
        .map(|file| Graph {
            variant: embed::variant_of(&file),
            bytes: std::fs::metadata(dir.join(&file))
                .map(|m| m.len())
                .unwrap_or(0),
            file,
        })
        .collect();
    Installed {
        name: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        dir: dir.to_path_buf(),
        location,
        dimensions: declared_dimensions(dir),
        graphs,
        default_graph: embed::default_graph(dir, location),
        bytes: folder_size(dir),
    }
}

/// The model folders an API caller may see, with the role checked here: tenant admins (to
/// choose one in /api/settings/embeddings) and platform admins.
pub fn installed(
    caller: &Caller,
    data_dir: &Path,
    exe_dir: Option<&Path>,
) -> Result<Vec<Installed>, crate::domain::Error> {
    caller
        .require(Action::ManageSettings)
        .map_err(|d| crate::domain::Error::denied(d, "models"))?;
    Ok(list(data_dir, exe_dir))
}

/// The folder the server would load as its default model with these settings, without loading
/// anything (for `models list`; the running server knows its own).
pub fn configured_default(
    settings: &embed::Settings,
    data_dir: &Path,
    exe_dir: Option<&Path>,
) -> Option<PathBuf> {
    match settings.provider {
        Some(embed::Provider::None) | Some(embed::Provider::Openai) => None,
        _ => settings.model_dir.clone().or_else(|| {
            embed::default_model(data_dir, exe_dir)
                .folder
                .map(|f| f.dir)
        }),
    }
}

/// True when `a` and `b` name the same folder (symlinks resolved).
pub fn same_folder(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// `hidden_size` of a BERT-like `config.json` (or the names other architectures use for it):
/// the width of `last_hidden_state`, which mean or CLS pooling keeps.
fn declared_dimensions(dir: &Path) -> Option<usize> {
    let bytes = std::fs::read(dir.join("config.json")).ok()?;
    let cfg: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    ["hidden_size", "d_model", "dim", "n_embd"]
        .iter()
        .find_map(|k| cfg.get(*k).and_then(|v| v.as_u64()))
        .and_then(|d| usize::try_from(d).ok())
}

/// Bytes of the regular files under `dir` (symlinks are not followed).
fn folder_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => folder_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// A byte count for people: `86.1 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(dir: &Path, graphs: &[&str]) {
        std::fs::create_dir_all(dir.join("onnx")).unwrap();
        std::fs::write(dir.join("tokenizer.json"), "{}").unwrap();
        std::fs::write(dir.join("config.json"), r#"{"hidden_size":384}"#).unwrap();
        for g in graphs {
            std::fs::write(dir.join("onnx").join(g), "graph").unwrap();
        }
    }

    #[test]
    fn lists_data_models_then_bundle_models_with_their_graphs() {
        let data = tempfile::tempdir().unwrap();
        let exe = tempfile::tempdir().unwrap();
        model(
            &data.path().join("models/mini"),
            &["model.onnx", "model_quantized.onnx"],
        );
        model(&data.path().join("models/.pull-half"), &["model.onnx"]);
        std::fs::create_dir_all(data.path().join("models/empty")).unwrap();
        model(&exe.path().join("models/mini"), &["model_quantized.onnx"]);
        let all = list(data.path(), Some(exe.path()));
        let names: Vec<_> = all.iter().map(|m| (m.name.as_str(), m.location)).collect();
        assert_eq!(
            names,
            vec![("mini", Location::Data), ("mini", Location::Bundle)]
        );
        let d = &all[0];
        assert_eq!(d.dimensions, Some(384));
        assert_eq!(d.default_graph, PathBuf::from("onnx/model.onnx"));
        assert_eq!(
            d.graphs
                .iter()
                .map(|g| (g.variant.as_str(), g.bytes))
                .collect::<Vec<_>>(),
            vec![("fp32", 5), ("int8", 5)]
        );
        // Two graphs, tokenizer.json and config.json.
        assert_eq!(d.bytes, 5 + 5 + 2 + 19);
        assert_eq!(
            all[1].default_graph,
            PathBuf::from("onnx/model_quantized.onnx")
        );
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(100), "100 B");
        assert_eq!(human_bytes(90_284_203), "86.1 MiB");
    }
}
