//! Group commit: every write transaction commits without an fsync of its own (redb's
//! `Durability::None`), then waits until one durable commit, made after it, has reached the
//! disk. One writer at a time leads that durable commit (an empty transaction: redb makes
//! every earlier non-durable commit durable with it); the writers that committed meanwhile
//! wait for it and share its fsync. So N concurrent writes cost about one fsync instead of N,
//! and a write still returns only once it is durable (a webhook is acknowledged, a job claimed,
//! after its commit is on the disk), exactly as with one fsync per commit.
//!
//! A durable commit that fails (the disk) fails every write waiting on it. Non-durable
//! commits live in the memory of one open database: when the database is reopened after a
//! disk error (see `disk`), the writes committed before the reopen but not yet durable are
//! lost, and their writers get an error instead of a false success. Each commit is tagged
//! with the database's epoch (bumped at every reopen) to tell.

use super::{Error, Result};
use std::sync::{Condvar, Mutex, MutexGuard};

/// A commit waiting to be durable: the database epoch it was made in, and its place in the
/// order of registered commits.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ticket {
    epoch: u64,
    seq: u64,
}

#[derive(Default)]
struct State {
    /// The last ticket handed out.
    seq: u64,
    /// Every ticket of `durable_epoch` up to `durable_seq` is durable.
    durable_epoch: u64,
    durable_seq: u64,
    /// A writer is making a durable commit now.
    leading: bool,
    /// Durable commits made.
    #[cfg(test)]
    syncs: u64,
}

/// The group commit state of one store.
#[derive(Default)]
pub(super) struct Flush {
    state: Mutex<State>,
    done: Condvar,
}

impl Flush {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a commit about to be made in database epoch `epoch` (its transaction still
    /// open; a commit that then fails leaves an unused ticket, which is harmless).
    pub(super) fn committed(&self, epoch: u64) -> Ticket {
        let mut s = self.lock();
        s.seq += 1;
        Ticket { epoch, seq: s.seq }
    }

    /// A ticket for a transaction of epoch `epoch` that wrote nothing: the last commit it
    /// could have read (tickets are handed out with their transaction still open, so every
    /// commit made before this transaction began has one). Waiting for it waits until what
    /// the transaction read is durable, usually no wait at all.
    pub(super) fn seen(&self, epoch: u64) -> Ticket {
        Ticket {
            epoch,
            seq: self.lock().seq,
        }
    }

    /// The last ticket handed out: a durable commit whose transaction was open when it was
    /// read covers every commit up to it (a ticket is handed out with its transaction open,
    /// and write transactions run one at a time, so that commit had returned).
    pub(super) fn last(&self) -> u64 {
        self.lock().seq
    }

    /// Durable commits made so far.
    #[cfg(test)]
    pub(super) fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// Returns once the commit of `t` is durable. When no durable commit is under way, this
    /// writer makes one with `sync`, which returns the epoch it was made in and the last
    /// ticket it covers (read once its transaction began).
    pub(super) fn wait(&self, t: Ticket, sync: impl FnOnce() -> Result<(u64, u64)>) -> Result<()> {
        let mut sync = Some(sync);
        let mut s = self.lock();
        loop {
            if s.durable_epoch > t.epoch {
                return Err(Error::Unavailable(
                    "the store was reopened after a disk error before this write reached the disk; it was not saved, try again".into(),
                ));
            }
            if s.durable_epoch == t.epoch && s.durable_seq >= t.seq {
                return Ok(());
            }
            if s.leading {
                s = self.done.wait(s).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            let Some(sync) = sync.take() else {
                // Led once and still not durable: only a failed lead gets here, and it
                // returned its error already.
                return Err(Error::Unavailable(
                    "the write could not be made durable".into(),
                ));
            };
            s.leading = true;
            drop(s);
            // Ends the lead even if `sync` panics, so the waiters never wait forever.
            let mut lead = Lead {
                flush: self,
                durable: None,
            };
            let r = sync();
            lead.durable = r.as_ref().ok().copied();
            drop(lead);
            r?;
            s = self.lock();
        }
    }
}

/// The lead of one durable commit: when it ends (also by a panic), records what became
/// durable and wakes the waiters, who re-check: covered now, or one of them leads the next
/// durable commit (after a failure, that one fails on the same disk or finds the store
/// reopened).
struct Lead<'a> {
    flush: &'a Flush,
    /// The epoch and last ticket the durable commit covered, when it succeeded.
    durable: Option<(u64, u64)>,
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        let mut s = self.flush.lock();
        s.leading = false;
        if let Some((epoch, upto)) = self.durable {
            #[cfg(test)]
            {
                s.syncs += 1;
            }
            if (epoch, upto) > (s.durable_epoch, s.durable_seq) {
                s.durable_epoch = epoch;
                s.durable_seq = upto;
            }
        }
        self.flush.done.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_durable_commit_covers_the_tickets_before_it_and_not_after() {
        let f = Flush::default();
        let a = f.committed(0);
        let b = f.committed(0);
        let mut led = 0;
        f.wait(b, || {
            led += 1;
            Ok((0, f.last()))
        })
        .expect("b durable");
        // a is covered by b's durable commit: no second one.
        f.wait(a, || panic!("a is durable already")).expect("a");
        assert_eq!((led, f.syncs()), (1, 1));
        let c = f.committed(0);
        f.wait(c, || Ok((0, f.last()))).expect("c");
        assert_eq!(f.syncs(), 2);
    }

    #[test]
    fn a_failed_durable_commit_fails_its_writer_and_a_reopen_fails_the_rest() {
        let f = Flush::default();
        let a = f.committed(0);
        let b = f.committed(0);
        let e = f
            .wait(a, || Err(Error::Unavailable("disk".into())))
            .expect_err("the sync failed");
        assert!(matches!(e, Error::Unavailable(_)), "{e}");
        // The store was reopened (epoch 1) before b's writer led a durable commit: b's
        // non-durable commit is gone, and b's writer is told so.
        let e = f.wait(b, || Ok((1, f.last()))).expect_err("b was lost");
        assert!(e.to_string().contains("not saved"), "{e}");
        // A commit in the new epoch is fine.
        let c = f.committed(1);
        f.wait(c, || Ok((1, f.last()))).expect("c");
    }

    #[test]
    fn a_panicking_durable_commit_does_not_leave_the_others_waiting() {
        let f = Flush::default();
        let a = f.committed(0);
        let b = f.committed(0);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = f.wait(a, || panic!("redb panicked"));
        }));
        assert!(r.is_err());
        // b leads its own durable commit instead of waiting for the dead lead.
        f.wait(b, || Ok((0, f.last()))).expect("b");
    }

    #[test]
    fn concurrent_writers_share_durable_commits() {
        let f = std::sync::Arc::new(Flush::default());
        let gate = std::sync::Arc::new(std::sync::Barrier::new(8));
        let hs: Vec<_> = (0..8)
            .map(|_| {
                let (f, gate) = (f.clone(), gate.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let t = f.committed(0);
                        gate.wait();
                        f.wait(t, || Ok((0, f.last()))).expect("durable");
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().expect("writer");
        }
        // Every round's 8 commits are registered before any of its writers waits (the
        // barrier), so the first durable commit of a round covers all 8: one per round.
        assert_eq!(f.syncs(), 50, "durable commits for 400 writes in 50 rounds");
    }
}
