//! Installing a model folder under `<data>/models/<name>/`: built in a hidden staging folder
//! beside it, validated there, then renamed into place, so a failure at any point leaves the
//! installed models exactly as they were and the server never sees half a folder.

use super::{Error, Validated, io, precheck, validate};
use std::path::{Path, PathBuf};

/// A model name is a folder name a tenant may send as `modelFolder`: letters, digits, `-`,
/// `_` and `.`, not starting with a dot, at most 100 characters.
pub fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "`{name}` cannot be a model name: use letters, digits, '-', '_' and '.', not \
             starting with '.', at most 100 characters (choose one with --name)"
        )))
    }
}

/// The hidden folder an install of `name` is built in (`<data>/models/.<kind>-<name>`).
/// Hidden names are never listed or loaded as models.
pub fn staging_dir(data_dir: &Path, kind: &str, name: &str) -> PathBuf {
    data_dir.join("models").join(format!(".{kind}-{name}"))
}

/// Copies the model folder `src` (e.g. from a USB stick) to `<data>/models/<name>/`: the
/// cheap checks first (nothing is copied from a folder without a loadable tokenizer or a
/// graph), then a copy into a staging folder, full validation of the copy (what will be
/// used is what is checked), and a rename into place. Blocking.
pub fn import(
    src: &Path,
    data_dir: &Path,
    name: &str,
    ort: &Path,
    max_length: usize,
    force: bool,
) -> Result<(PathBuf, Validated), Error> {
    check_name(name)?;
    precheck(src)?;
    let dest = data_dir.join("models").join(name);
    if dest.exists() && !force {
        return Err(Error::Exists(name.into(), dest));
    }
    let staging = staging_dir(data_dir, "import", name);
    remove_if_present(&staging)?;
    let result = copy_dir(src, &staging)
        .and_then(|()| validate(&staging, ort, max_length))
        .and_then(|v| install_staged(&staging, data_dir, name, force).map(|dest| (dest, v)));
    if result.is_err() {
        // Nothing half-copied stays behind; a failure to clean up is not the error to report.
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

/// Renames a validated staging folder to `<data>/models/<name>/`. With `force` an installed
/// folder of that name is replaced: moved aside first, removed once the new one is in place.
pub fn install_staged(
    staging: &Path,
    data_dir: &Path,
    name: &str,
    force: bool,
) -> Result<PathBuf, Error> {
    let dest = data_dir.join("models").join(name);
    let old = data_dir
        .join("models")
        .join(format!(".old-{name}-{}", std::process::id()));
    let replaced = if dest.exists() {
        if !force {
            return Err(Error::Exists(name.into(), dest));
        }
        std::fs::rename(&dest, &old)
            .map_err(|e| io(format!("moving {} aside", dest.display()), e))?;
        true
    } else {
        false
    };
    if let Err(e) = std::fs::rename(staging, &dest) {
        if replaced {
            let _ = std::fs::rename(&old, &dest);
        }
        return Err(io(
            format!("renaming {} to {}", staging.display(), dest.display()),
            e,
        ));
    }
    sync_dir(&data_dir.join("models"));
    if replaced {
        let _ = std::fs::remove_dir_all(&old);
    }
    Ok(dest)
}

fn remove_if_present(dir: &Path) -> Result<(), Error> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(format!("removing {}", dir.display()), e)),
    }
}

/// Copies the regular files and folders under `src` (following symlinks; hidden entries such
/// as `.git` are skipped), each file synced, so a rename after it publishes complete files.
fn copy_dir(src: &Path, dest: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dest).map_err(|e| io(format!("creating {}", dest.display()), e))?;
    let entries =
        std::fs::read_dir(src).map_err(|e| io(format!("reading {}", src.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io(format!("reading {}", src.display()), e))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let from = entry.path();
        let to = dest.join(&name);
        let meta =
            std::fs::metadata(&from).map_err(|e| io(format!("reading {}", from.display()), e))?;
        if meta.is_dir() {
            copy_dir(&from, &to)?;
        } else if meta.is_file() {
            std::fs::copy(&from, &to)
                .map_err(|e| io(format!("copying {} to {}", from.display(), to.display()), e))?;
            std::fs::File::open(&to)
                .and_then(|f| f.sync_all())
                .map_err(|e| io(format!("writing {}", to.display()), e))?;
        }
    }
    sync_dir(dest);
    Ok(())
}

/// Makes a rename or new entries in `dir` durable (best effort: not every platform allows
/// opening a folder).
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["all-MiniLM-L6-v2", "e5_small.v2", "m"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "..", "with space", &"x".repeat(101)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_folder_without_a_tokenizer_is_refused_before_anything_is_copied() {
        let src = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("onnx")).unwrap();
        std::fs::write(src.path().join("onnx/model.onnx"), "graph").unwrap();
        let err = import(
            src.path(),
            data.path(),
            "m",
            Path::new("/nonexistent/libonnxruntime.so"),
            128,
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("has no tokenizer.json"), "{err}");
        assert!(!data.path().join("models").exists());
    }

    #[test]
    fn install_replaces_only_with_force() {
        let data = tempfile::tempdir().unwrap();
        let models = data.path().join("models");
        std::fs::create_dir_all(models.join("m")).unwrap();
        std::fs::write(models.join("m/old"), "1").unwrap();
        let staging = staging_dir(data.path(), "import", "m");
        std::fs::create_dir_all(&staging).unwrap();
        std::fs::write(staging.join("new"), "2").unwrap();
        let err = install_staged(&staging, data.path(), "m", false).unwrap_err();
        assert!(matches!(err, Error::Exists(..)), "{err}");
        install_staged(&staging, data.path(), "m", true).unwrap();
        assert!(models.join("m/new").is_file());
        assert!(!models.join("m/old").exists());
        assert!(!staging.exists());
        let left: Vec<_> = std::fs::read_dir(&models).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "the old folder is removed");
    }
}
