//! argon2id password hashing (OWASP parameters: m=19 MiB, t=2, p=1). Blocking: call from a
//! blocking thread, never from an async worker.
//!
//! Every hash needs a 19 MiB work area. Computed on whatever thread calls, glibc keeps a
//! freed work area cached in that thread's malloc arena, so after logins on many blocking
//! threads the idle RSS grew by ~19 MiB per arena (hundreds of MB measured). All hashing
//! therefore runs on ONE dedicated thread, which keeps ONE work area while it is busy (no
//! 19 MiB allocate/free cycle per login) and gives it back after [`IDLE_RELEASE`] without
//! work, so an idle server does not carry it. Hashes are standard PHC strings.
//! Login throughput is bounded to one core's worth (~20/s), far above the auth rate limit.

use argon2::password_hash::PasswordVerifier;
use argon2::{Algorithm, Argon2, Params, Version};
use std::sync::OnceLock;

pub const MIN_LEN: usize = 8;
pub const MAX_LEN: usize = 256;

type Task = Box<dyn FnOnce() + Send>;

/// How long the hashing thread keeps its work area after the last hash.
#[cfg(not(test))]
pub const IDLE_RELEASE: std::time::Duration = std::time::Duration::from_secs(10);
#[cfg(test)]
pub const IDLE_RELEASE: std::time::Duration = std::time::Duration::from_millis(300);

/// Runs `f` on the hashing thread and waits for its result.
fn on_hash_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    static TX: OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<Task>>> = OnceLock::new();
    let tx = TX.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Task>();
        std::thread::Builder::new()
            .name("password-hash".into())
            .spawn(move || {
                use std::sync::mpsc::RecvTimeoutError;
                loop {
                    match rx.recv_timeout(IDLE_RELEASE) {
                        Ok(task) => task(),
                        // Freed whole: a block this size is its own mapping, returned to
                        // the OS (the next hash maps a fresh one).
                        Err(RecvTimeoutError::Timeout) => {
                            WORK.with(|w| *w.borrow_mut() = Vec::new())
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            })
            .expect("BUG: cannot spawn the password hashing thread");
        std::sync::Mutex::new(tx)
    });
    let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
    let task: Task = Box::new(move || {
        let _ = done_tx.send(f());
    });
    let sent = tx.lock().map(|t| t.send(task).is_ok()).unwrap_or(false);
    assert!(sent, "BUG: the password hashing thread is gone");
    done_rx
        .recv()
        .expect("BUG: the password hashing thread dropped a task")
}

fn hasher() -> Argon2<'static> {
    // 19 MiB, 2 iterations, 1 lane: OWASP Password Storage Cheat Sheet, argon2id.
    let params = Params::new(19 * 1024, 2, 1, None).expect("BUG: static argon2 params");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

const M_COST: u32 = 19 * 1024;
const PHC_PREFIX: &str = "$argon2id$v=19$m=19456,t=2,p=1$";

thread_local! {
    /// The hashing thread's reusable work area.
    static WORK: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Bytes of the hashing thread's work area right now (0 once released).
#[cfg(test)]
fn work_area_bytes() -> usize {
    on_hash_thread(|| WORK.with(|w| std::mem::size_of_val(w.borrow().as_slice())))
}

/// argon2id of `pw` with `salt` into 32 bytes, in the thread's reusable work area.
fn raw_hash(pw: &[u8], salt: &[u8]) -> Result<[u8; 32], String> {
    WORK.with(|w| {
        let mut w = w.borrow_mut();
        if w.len() != M_COST as usize {
            *w = vec![argon2::Block::default(); M_COST as usize];
        }
        let mut out = [0u8; 32];
        hasher()
            .hash_password_into_with_memory(pw, salt, &mut out, w.as_mut_slice())
            .map_err(|e| e.to_string())?;
        Ok(out)
    })
}

/// Hashes a password into a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`).
pub fn hash(password: &str) -> Result<String, String> {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
    use rand::RngCore;
    let pw = password.to_string();
    on_hash_thread(move || {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let out = raw_hash(pw.as_bytes(), &salt)?;
        Ok(format!(
            "{PHC_PREFIX}{}${}",
            B64.encode(salt),
            B64.encode(out)
        ))
    })
}

/// True when `password` matches `phc`. A malformed hash never matches. Hashes with other
/// parameters (older settings) are checked by the library's own verifier.
pub fn verify(password: &str, phc: &str) -> bool {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
    let (pw, phc) = (password.to_string(), phc.to_string());
    on_hash_thread(move || {
        if let Some(rest) = phc.strip_prefix(PHC_PREFIX)
            && let Some((salt, expected)) = rest.split_once('$')
            && let (Ok(salt), Ok(expected)) = (B64.decode(salt), B64.decode(expected))
            && expected.len() == 32
        {
            return match raw_hash(pw.as_bytes(), &salt) {
                Ok(out) => super::tokens::ct_eq_bytes(&out, &expected),
                Err(_) => false,
            };
        }
        hasher()
            .verify_password(pw.as_bytes(), phc.as_str())
            .is_ok()
    })
}

/// Spends the same time as a real verification, for unknown accounts, so that login time
/// does not reveal whether an email exists.
pub fn verify_dummy(password: &str) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let phc = DUMMY.get_or_init(|| hash("dummy password for timing").unwrap_or_default());
    let _ = verify(password, phc);
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_work_area_is_given_back_when_idle() {
        let h = super::hash("correct horse").unwrap();
        assert!(super::verify("correct horse", &h));
        // Other tests hash on the same thread, so wait for a quiet spell rather than once.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            std::thread::sleep(super::IDLE_RELEASE * 2);
            if super::work_area_bytes() == 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "work area never released"
            );
        }
        // And comes back for the next hash.
        assert!(super::verify("correct horse", &h));
    }

    #[test]
    fn round_trip_and_phc_form() {
        let h = super::hash("correct horse").unwrap();
        // Interoperable: the library's own verifier accepts our PHC strings.
        use argon2::password_hash::PasswordVerifier;
        assert!(
            super::hasher()
                .verify_password(b"correct horse", h.as_str())
                .is_ok()
        );
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(super::verify("correct horse", &h));
        assert!(!super::verify("wrong horse", &h));
        assert!(!super::verify("x", "not a hash"));
    }
}
