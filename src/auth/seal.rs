//! Encryption at rest for secrets the server must read back (provider API keys, channel
//! credentials, HTTP tool headers): XChaCha20-Poly1305 with a key kept in the data directory.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

const PREFIX: &str = "v1:";

/// Seals and opens short secrets. Cheap to clone.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<key>)")
    }
}

impl Sealer {
    /// Derives the 256-bit key from a stored random secret.
    pub fn from_secret(secret: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"aigentable seal v1\0");
        h.update(secret.as_bytes());
        let key = h.finalize();
        Sealer {
            cipher: XChaCha20Poly1305::new_from_slice(&key).expect("BUG: 32-byte key"),
        }
    }

    /// `v1:` + base64(nonce || ciphertext+tag).
    pub fn seal(&self, plaintext: &str) -> String {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), plaintext.as_bytes())
            .expect("BUG: encryption of an in-memory buffer cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        format!("{PREFIX}{}", B64.encode(out))
    }

    /// The plaintext, or `None` when the value was not sealed with this key or was altered.
    pub fn open(&self, sealed: &str) -> Option<String> {
        let raw = B64.decode(sealed.strip_prefix(PREFIX)?).ok()?;
        if raw.len() < 24 + 16 {
            return None;
        }
        let (nonce, ct) = raw.split_at(24);
        let pt = self.cipher.decrypt(XNonce::from_slice(nonce), ct).ok()?;
        String::from_utf8(pt).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::Sealer;

    #[test]
    fn round_trip_and_tamper_detection() {
        let s = Sealer::from_secret("k1");
        let sealed = s.seal("sk-live-123");
        assert!(!sealed.contains("sk-live"));
        assert_eq!(s.open(&sealed).as_deref(), Some("sk-live-123"));
        assert_ne!(s.seal("x"), s.seal("x"), "random nonces");
        assert_eq!(Sealer::from_secret("k2").open(&sealed), None, "other key");
        let mut bad = sealed.clone();
        bad.pop();
        bad.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(s.open(&bad), None, "altered");
        assert_eq!(s.open("plain"), None);
    }
}
