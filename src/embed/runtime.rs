//! The ONNX Runtime shared library: loaded once per process from an explicit path, and the one
//! ort [`Environment`] every session is created under.
//!
//! ort can load its library only once per process and allows only one environment, and it
//! panics when an API is used before a library is loaded. So every path goes through
//! [`environment`], which checks the file first (clean errors, never a panic), loads it at most
//! once, and refuses a second, different library instead of silently using the first.

use super::Error;
use ort::environment::Environment;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

struct Loaded {
    /// Canonical path, so a symlink and its target count as the same library.
    path: PathBuf,
    env: Environment,
}

/// Set once the library is loaded and the environment built; read lock-free afterwards.
static LOADED: OnceLock<Loaded> = OnceLock::new();
/// Serialises load attempts. A failed attempt leaves [`LOADED`] empty so a corrected path can
/// be tried later in the same process (ort itself only records successful loads).
static LOADING: Mutex<()> = Mutex::new(());

/// Loads ONNX Runtime from `path` (once per process) and returns the shared environment.
/// Calling it again with the same library is cheap; a different library is an error.
pub fn environment(path: &Path) -> Result<Environment, Error> {
    check_library_file(path)?;
    let canonical = std::fs::canonicalize(path).map_err(|e| {
        Error::Config(format!(
            "ONNX Runtime library {} (ORT_DYLIB_PATH): {e}",
            path.display()
        ))
    })?;
    if let Some(loaded) = LOADED.get() {
        return same_library(loaded, &canonical);
    }
    let _guard = LOADING.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(loaded) = LOADED.get() {
        return same_library(loaded, &canonical);
    }
    let builder = ort::init_from(&canonical).map_err(|e| {
        Error::Config(format!(
            "cannot load ONNX Runtime library {} (ORT_DYLIB_PATH; needs ONNX Runtime >= 1.{}): {e}",
            path.display(),
            ort::MINOR_VERSION
        ))
    })?;
    let env = builder.with_name("aigentable").build().map_err(|e| {
        Error::Runtime(format!(
            "cannot create the ONNX Runtime environment from {}: {e}",
            path.display()
        ))
    })?;
    tracing::info!(path = %canonical.display(), "loaded ONNX Runtime");
    let loaded = LOADED.get_or_init(|| Loaded {
        path: canonical,
        env,
    });
    Ok(loaded.env.clone())
}

/// The library loaded so far, if any.
pub fn loaded_path() -> Option<&'static Path> {
    LOADED.get().map(|l| l.path.as_path())
}

fn same_library(loaded: &Loaded, requested: &Path) -> Result<Environment, Error> {
    if loaded.path == requested {
        Ok(loaded.env.clone())
    } else {
        Err(Error::Config(format!(
            "ONNX Runtime is already loaded from {} in this process; cannot also load {} \
             (use one ORT_DYLIB_PATH per process)",
            loaded.path.display(),
            requested.display()
        )))
    }
}

/// Existence and a magic-number check before handing the path to the dynamic loader, so the
/// common mistakes (wrong path, a folder, a text or archive file) get a plain message.
fn check_library_file(path: &Path) -> Result<(), Error> {
    let what = || format!("ONNX Runtime library {} (ORT_DYLIB_PATH)", path.display());
    let meta = std::fs::metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Config(format!("{} does not exist", what()))
        } else {
            Error::Config(format!("{}: {e}", what()))
        }
    })?;
    if !meta.is_file() {
        return Err(Error::Config(format!(
            "{} is not a file (point it at libonnxruntime.so*, not its folder)",
            what()
        )));
    }
    let mut magic = [0u8; 4];
    let read = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut magic))
        .map_err(|e| Error::Config(format!("{}: {e}", what())))?;
    if read < 4 || !is_shared_library_magic(&magic) {
        return Err(Error::Config(format!(
            "{} is not a shared library (no ELF, Mach-O or PE header)",
            what()
        )));
    }
    Ok(())
}

fn is_shared_library_magic(m: &[u8; 4]) -> bool {
    const ELF: [u8; 4] = [0x7f, b'E', b'L', b'F'];
    const MACHO: [[u8; 4]; 5] = [
        [0xfe, 0xed, 0xfa, 0xce],
        [0xfe, 0xed, 0xfa, 0xcf],
        [0xce, 0xfa, 0xed, 0xfe],
        [0xcf, 0xfa, 0xed, 0xfe],
        [0xca, 0xfe, 0xba, 0xbe],
    ];
    *m == ELF || MACHO.contains(m) || m[..2] == *b"MZ"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_library_names_the_path() {
        let err = environment(Path::new("/nonexistent/libonnxruntime.so")).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Config(_)), "{msg}");
        assert!(msg.contains("/nonexistent/libonnxruntime.so"), "{msg}");
        assert!(msg.contains("does not exist"), "{msg}");
    }

    #[test]
    fn a_folder_or_a_text_file_is_not_a_library() {
        let dir = tempfile::tempdir().unwrap();
        let err = environment(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is not a file"), "{err}");

        let fake = dir.path().join("libonnxruntime.so");
        std::fs::write(&fake, "this is not a library").unwrap();
        let err = environment(&fake).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Config(_)), "{msg}");
        assert!(msg.contains(&fake.display().to_string()), "{msg}");
        assert!(msg.contains("not a shared library"), "{msg}");
    }

    #[test]
    fn a_shared_library_that_is_not_onnx_runtime_is_an_error_not_a_panic() {
        let Some(libm) = [
            "/lib/x86_64-linux-gnu/libm.so.6",
            "/usr/lib/libm.so.6",
            "/lib64/libm.so.6",
        ]
        .iter()
        .map(Path::new)
        .find(|p| p.is_file()) else {
            return;
        };
        // Either ort rejects it (no OrtGetApiBase), or, when another test already loaded the
        // real runtime in this process, we refuse a second library; both name the path.
        let err = environment(libm).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Config(_)), "{msg}");
        assert!(msg.contains("libm"), "{msg}");
    }

    #[test]
    fn magic_numbers() {
        assert!(is_shared_library_magic(&[0x7f, b'E', b'L', b'F']));
        assert!(is_shared_library_magic(b"MZ\x90\x00"));
        assert!(is_shared_library_magic(&[0xcf, 0xfa, 0xed, 0xfe]));
        assert!(!is_shared_library_magic(b"PK\x03\x04"));
        assert!(!is_shared_library_magic(b"#!/b"));
    }
}
