//! glibc malloc tuning, applied once at process start before any thread exists.
//!
//! glibc gives threads their own malloc arenas (up to 8 per core), and an arena keeps the
//! memory its thread freed for that thread. Here many threads allocate: tokio's workers and
//! blocking pool, the job workers, graph-insert threads, tantivy's writer and ONNX Runtime's
//! intra-op threads (ONNX Runtime allocates through glibc whatever Rust's allocator is). Each
//! arena ends up holding its own high-water mark: ingesting 100k chunks peaked at 785 MiB
//! with glibc's default, 607 with two arenas and 572 with one (BENCHMARKS.md, "Allocator").
//! One arena per two cores (one on the 2-core machines this is sized for): glibc's
//! per-thread caches serve most small allocations without the arena lock. mimalloc as
//! Rust's allocator was measured too and held more (659 MiB peak, 518 steady).
//!
//! The operator keeps the last word: glibc's own `MALLOC_ARENA_MAX` (or
//! `GLIBC_TUNABLES=glibc.malloc.arena_max=N`) in the environment is left alone, so
//! `MALLOC_ARENA_MAX=16` restores more arenas for a many-core server that ingests on many
//! threads at once. Nothing here on other C libraries (musl has one heap anyway).
//!
//! This is the second module allowed `unsafe` (besides `index/vector/simd.rs`): `mallopt`
//! is a C function. Depends on nothing in the crate.

#![allow(unsafe_code)]

/// Malloc arenas used when the operator sets none, for a machine with `cores` cores.
pub fn default_arena_max(cores: usize) -> usize {
    (cores / 2).max(1)
}

/// What [`tune`] did, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tuning {
    /// Arenas capped at this many.
    ArenaMax(usize),
    /// The environment already sets glibc's arena limit; left to it.
    FromEnvironment,
    /// Not glibc: nothing to tune.
    Unsupported,
    /// glibc refused the setting (it answers 0 for a value it does not take).
    Refused,
}

/// Caps glibc's malloc arenas at [`default_arena_max`] unless the environment sets a
/// limit. Call it first in `main`, before any thread is started: arenas made before it
/// stay.
pub fn tune() -> Tuning {
    let env = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
    if operator_sets_arenas(env("MALLOC_ARENA_MAX"), env("GLIBC_TUNABLES")) {
        return Tuning::FromEnvironment;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    set_arena_max(default_arena_max(cores))
}

/// Whether glibc's arena limit comes from the environment (then it is not overridden).
fn operator_sets_arenas(arena_max: Option<String>, tunables: Option<String>) -> bool {
    arena_max.is_some_and(|v| !v.trim().is_empty())
        || tunables.is_some_and(|t| t.contains("glibc.malloc.arena_max="))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_arena_max(n: usize) -> Tuning {
    let value = libc::c_int::try_from(n).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt takes two integers and only changes malloc's parameters; it is
    // thread-safe in glibc (it takes the arena locks itself).
    let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, value) };
    if ok == 1 {
        Tuning::ArenaMax(n)
    } else {
        Tuning::Refused
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_n: usize) -> Tuning {
    Tuning::Unsupported
}

/// Hands the memory malloc holds free back to the operating system (`malloc_trim(0)`: every
/// arena, free pages in the middle of the heap too). Returns whether anything was released.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim() -> bool {
    // SAFETY: malloc_trim takes an integer and only releases free memory; thread-safe in
    // glibc (it takes each arena's lock).
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Nothing to do without glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_arena_limit_in_the_environment_is_the_operators_choice() {
        assert!(!operator_sets_arenas(None, None));
        assert!(!operator_sets_arenas(Some(" ".into()), None));
        assert!(operator_sets_arenas(Some("8".into()), None));
        assert!(operator_sets_arenas(
            None,
            Some("glibc.malloc.trim_threshold=1:glibc.malloc.arena_max=4".into())
        ));
        // Other tunables leave the arena limit to us.
        assert!(!operator_sets_arenas(
            None,
            Some("glibc.malloc.trim_threshold=131072".into())
        ));
    }

    #[test]
    fn one_arena_per_two_cores() {
        assert_eq!(default_arena_max(1), 1);
        assert_eq!(default_arena_max(2), 1);
        assert_eq!(default_arena_max(3), 1);
        assert_eq!(default_arena_max(8), 4);
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_takes_the_arena_limit() {
        // Setting it in a test process is harmless: it only bounds arenas made later.
        assert_eq!(set_arena_max(8), Tuning::ArenaMax(8));
    }
}
