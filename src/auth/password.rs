//! argon2id password hashing (OWASP parameters: m=19 MiB, t=2, p=1). Blocking: call from a
//! blocking thread, never from an async worker.
//!
//! Every hash needs a 19 MiB work area. Computed on whatever thread calls, glibc keeps a
//! freed work area cached in that thread's malloc arena, so after logins on many blocking
//! threads the idle RSS grew by ~19 MiB per arena (hundreds of MB measured). All hashing
//! therefore runs on a small pool of dedicated threads ([`configure`]: one per core by
//! default). Each keeps ONE work area while it is busy (no 19 MiB allocate/free cycle per
//! login) and gives it back after [`IDLE_RELEASE`] without work, so memory is bounded by
//! threads x 19 MiB under load and an idle server carries none. Hashes are standard PHC
//! strings.
//!
//! Requests are admitted before they queue ([`Gate`]): a login flood answers 503
//! `server_busy` once `threads + queue` hashes are admitted, instead of queueing every login
//! behind it without bound.

use argon2::password_hash::PasswordVerifier;
use argon2::{Algorithm, Argon2, Params, Version};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

pub const MIN_LEN: usize = 8;
pub const MAX_LEN: usize = 256;

type Task = Box<dyn FnOnce() + Send>;

/// How long a hashing thread keeps its work area after its last hash.
pub const IDLE_RELEASE: Duration = Duration::from_secs(10);

/// Hashing threads and their shared queue. The server has one ([`pool`]); tests build
/// their own with a short idle time.
struct Pool {
    tasks: Mutex<VecDeque<Task>>,
    ready: Condvar,
    /// How long a thread keeps its work area without work.
    idle_release: Duration,
    /// The work areas of this pool's threads.
    held: Mutex<Held>,
    /// Signalled whenever `held` changes.
    held_changed: Condvar,
}

/// Work-area accounting of a pool.
#[derive(Default)]
struct Held {
    /// Held right now (at most one per thread; 0 when idle).
    now: usize,
    /// Given back after an idle spell, since the pool started.
    released: u64,
}

static THREADS: OnceLock<usize> = OnceLock::new();

/// Sets the number of hashing threads (PASSWORD_HASH_THREADS); the first call before any
/// hash wins, later calls are ignored (the pool is process-wide). Unset: one per core.
pub fn configure(threads: usize) {
    let _ = THREADS.set(threads.max(1));
}

/// The server's pool: [`configure`]d threads (one per core by default), [`IDLE_RELEASE`].
fn pool() -> &'static Pool {
    static POOL: OnceLock<Arc<Pool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let n = *THREADS.get_or_init(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        });
        Pool::start(n, IDLE_RELEASE)
    })
}

impl Pool {
    /// Starts `threads` hashing threads that free their work area after `idle_release`
    /// without work.
    fn start(threads: usize, idle_release: Duration) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            tasks: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            idle_release,
            held: Mutex::new(Held::default()),
            held_changed: Condvar::new(),
        });
        for i in 0..threads.max(1) {
            let p = pool.clone();
            std::thread::Builder::new()
                .name(format!("password-hash-{i}"))
                .spawn(move || p.worker())
                .expect("BUG: cannot spawn a password hashing thread");
        }
        pool
    }

    /// Runs tasks; after `idle_release` without one, frees the work area and sleeps until
    /// the next task.
    fn worker(&self) {
        let mut holding = false;
        loop {
            let task = {
                let mut q = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if let Some(t) = q.pop_front() {
                        break t;
                    }
                    if holding {
                        let (g, timeout) = self
                            .ready
                            .wait_timeout(q, self.idle_release)
                            .unwrap_or_else(|e| e.into_inner());
                        q = g;
                        if timeout.timed_out() && q.is_empty() {
                            release_work_area();
                            holding = false;
                            self.count_held(false);
                        }
                    } else {
                        q = self.ready.wait(q).unwrap_or_else(|e| e.into_inner());
                    }
                }
            };
            task();
            // A task takes a work area when the thread had none (it never frees one).
            if !holding && WORK.with(|w| !w.borrow().is_empty()) {
                self.count_held(true);
                holding = true;
            }
        }
    }

    /// Counts a work area taken (`true`) or given back, and tells whoever waits on them.
    fn count_held(&self, taken: bool) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if taken {
            held.now += 1;
        } else {
            held.now = held.now.saturating_sub(1);
            held.released += 1;
        }
        self.held_changed.notify_all();
    }

    /// Runs `f` on a hashing thread and waits for its result.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        let task: Task = Box::new(move || {
            let _ = done_tx.send(f());
        });
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(task);
        self.ready.notify_one();
        done_rx
            .recv()
            .expect("BUG: a password hashing thread dropped a task")
    }
}

/// Runs `f` on a thread of the server's hashing pool and waits for its result.
fn on_hash_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    pool().run(f)
}

/// Admission to the hashing pool for request handlers: at most `threads + queue` hashes
/// admitted at once; beyond that, callers are told to come back later (503).
pub struct Gate {
    admitted: Arc<AtomicUsize>,
    max: usize,
}

/// One admitted hash; the slot frees when it drops.
pub struct Permit(Arc<AtomicUsize>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gate {
    /// Room for `threads` running hashes and `queue` waiting ones.
    pub fn new(threads: usize, queue: usize) -> Self {
        Gate {
            admitted: Arc::new(AtomicUsize::new(0)),
            max: threads.max(1) + queue,
        }
    }

    /// A permit, or `None` when the pool is full.
    pub fn admit(&self) -> Option<Permit> {
        self.admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit(self.admitted.clone()))
    }
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

/// Frees this thread's work area. Freed whole: a block this size is its own mapping,
/// returned to the OS (the next hash maps a fresh one).
fn release_work_area() {
    WORK.with(|w| {
        let mut w = w.borrow_mut();
        *w = Vec::new();
    });
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
    on_hash_thread(hash_task(password))
}

/// The work of [`hash`], to run on a hashing thread.
fn hash_task(password: &str) -> impl FnOnce() -> Result<String, String> + Send + use<> {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
    use rand::RngCore;
    let pw = password.to_string();
    move || {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let out = raw_hash(pw.as_bytes(), &salt)?;
        Ok(format!(
            "{PHC_PREFIX}{}${}",
            B64.encode(salt),
            B64.encode(out)
        ))
    }
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
    fn work_areas_are_bounded_by_the_threads_and_given_back_when_idle() {
        use std::time::{Duration, Instant};
        // A pool of its own (other tests hash on the server's), quick to go idle.
        let pool = super::Pool::start(2, Duration::from_millis(1));
        let held = || pool.held.lock().unwrap().now;
        // Many hashes at once hold at most one work area per hashing thread.
        let hashes: Vec<_> = std::thread::scope(|sc| {
            let runs: Vec<_> = (0..8)
                .map(|_| sc.spawn(|| pool.run(super::hash_task("correct horse"))))
                .collect();
            let seen = held();
            assert!(seen <= 2, "{seen} work areas for 2 threads");
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        });
        assert!(hashes.iter().all(|h| h.is_ok()), "{hashes:?}");
        assert!(held() <= 2);
        // Idle, every thread gives its work area back: wait for the workers' signal (the
        // deadline only turns a hang into a failure). At least one was taken and given back.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut h = pool.held.lock().unwrap();
        while h.now > 0 || h.released == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "work area never released ({} held, {} released)",
                h.now,
                h.released
            );
            h = pool.held_changed.wait_timeout(h, left).unwrap().0;
        }
        drop(h);
        // And one comes back for the next hash.
        let h = pool.run(super::hash_task("correct horse")).unwrap();
        assert!(super::verify("correct horse", &h));
    }

    #[test]
    fn the_gate_admits_threads_plus_queue_and_frees_slots_on_drop() {
        let g = super::Gate::new(1, 2);
        let held: Vec<_> = (0..3).map(|_| g.admit().expect("room")).collect();
        assert!(g.admit().is_none(), "full");
        drop(held);
        assert!(g.admit().is_some());
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
