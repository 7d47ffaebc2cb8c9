//! Access tokens (JWT HS256) and opaque secrets (refresh, API key, invite and reset tokens),
//! which are stored only as keyed hashes.

use crate::types::{Role, SessionId, TenantId, UserId};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::time::Duration;

/// Claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: UserId,
    pub tid: TenantId,
    pub role: Role,
    pub sid: SessionId,
    pub iat: u64,
    pub exp: u64,
}

/// Signs and checks access tokens; hashes opaque tokens with the refresh key.
pub struct Keys {
    enc: EncodingKey,
    dec: DecodingKey,
    validation: Validation,
    hash_key: Vec<u8>,
    pub access_ttl: Duration,
}

impl Keys {
    pub fn new(jwt_secret: &[u8], refresh_secret: &[u8], access_ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Keys {
            enc: EncodingKey::from_secret(jwt_secret),
            dec: DecodingKey::from_secret(jwt_secret),
            validation,
            hash_key: refresh_secret.to_vec(),
            access_ttl,
        }
    }

    pub fn issue(&self, user: &UserId, tenant: &TenantId, role: Role, sid: &SessionId) -> String {
        let iat = unix_now();
        let claims = Claims {
            sub: user.clone(),
            tid: tenant.clone(),
            role,
            sid: sid.clone(),
            iat,
            exp: iat + self.access_ttl.as_secs(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.enc)
            .expect("BUG: HS256 signing cannot fail")
    }

    /// Verifies signature (HS256 only: `alg: none` and other keys fail), expiry and shape.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.dec, &self.validation)
            .ok()
            .map(|d| d.claims)
    }

    /// Keyed hash (HMAC-SHA256, hex) of an opaque token; what the store keeps.
    pub fn hash_token(&self, token: &str) -> String {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.hash_key).expect("BUG: hmac key");
        mac.update(token.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// `n` random bytes from the OS generator, url-safe base64 without padding.
pub fn random_token(n: usize) -> String {
    let mut buf = vec![0u8; n];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(&buf)
}

/// Constant-time string comparison for secrets.
pub fn ct_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Constant-time comparison of byte strings.
pub fn ct_eq_bytes(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new(&[7u8; 48], &[9u8; 48], Duration::from_secs(900))
    }

    #[test]
    fn issued_tokens_verify_and_tampered_ones_do_not() {
        let k = keys();
        let (u, t, s) = (UserId::new(), TenantId::new(), SessionId::new());
        let tok = k.issue(&u, &t, Role::TenantAdmin, &s);
        let c = k.verify(&tok).expect("valid");
        assert_eq!(
            (c.sub, c.tid, c.role, c.sid),
            (u.clone(), t.clone(), Role::TenantAdmin, s.clone())
        );
        // Another key.
        let other = Keys::new(&[8u8; 48], &[9u8; 48], Duration::from_secs(900));
        assert!(other.verify(&tok).is_none());
        // alg: none with the same claims.
        let parts: Vec<&str> = tok.split('.').collect();
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert!(k.verify(&format!("{none_header}.{}.", parts[1])).is_none());
        // A changed payload.
        let forged = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&serde_json::json!({"sub":u,"tid":t,"role":"PLATFORM_ADMIN","sid":s,"iat":1,"exp":u64::MAX/2})).unwrap(),
        );
        assert!(
            k.verify(&format!("{}.{forged}.{}", parts[0], parts[2]))
                .is_none()
        );
    }

    #[test]
    fn token_hashes_are_keyed() {
        let k = keys();
        assert_eq!(k.hash_token("abc"), k.hash_token("abc"));
        let other = Keys::new(&[7u8; 48], &[1u8; 48], Duration::from_secs(900));
        assert_ne!(k.hash_token("abc"), other.hash_token("abc"));
        assert_eq!(random_token(32).len(), 43);
    }
}
