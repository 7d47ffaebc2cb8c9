//! Secrets generated at first start and kept in the data directory (mode 0600).

use std::io::Write;
use std::path::Path;

/// Reads `<dir>/secrets/<name>`, creating it with 64 random bytes (base64url) when missing.
pub fn load_or_create(data_dir: &Path, name: &str) -> std::io::Result<String> {
    let dir = data_dir.join("secrets");
    std::fs::create_dir_all(&dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 32 => return Ok(s.trim().to_string()),
        Ok(_) => {
            return Err(std::io::Error::other(format!(
                "{} is shorter than 32 characters; delete it to generate a new one",
                path.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let secret = super::tokens::random_token(64);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&path)?;
    f.write_all(secret.as_bytes())?;
    f.sync_all()?;
    tracing::info!(path = %path.display(), "generated a new secret");
    Ok(secret)
}

#[cfg(test)]
mod tests {
    #[test]
    fn created_once_with_0600() {
        let dir = tempfile::tempdir().unwrap();
        let a = super::load_or_create(dir.path(), "jwt").unwrap();
        let b = super::load_or_create(dir.path(), "jwt").unwrap();
        assert_eq!(a, b);
        assert!(a.len() >= 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("secrets/jwt"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
