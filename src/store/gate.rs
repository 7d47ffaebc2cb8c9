//! The order in which writers get the store's one write transaction. redb lets one write
//! transaction exist at a time and wakes its waiters in no particular order; under load
//! (job bookkeeping, AI turns and webhooks all writing) a webhook's acknowledgement could
//! queue behind dozens of job commits. Here the waiters marked urgent (a webhook being
//! acknowledged, the shared durable commit everyone waits for) go first; the others keep
//! their turn among themselves. Only `Store`'s own write paths pass through it.

use std::sync::{Condvar, Mutex, MutexGuard};

#[derive(Default)]
struct State {
    /// A writer holds the transaction.
    busy: bool,
    /// Urgent writers waiting.
    urgent: usize,
}

/// The gate in front of `begin_write`.
#[derive(Default)]
pub(super) struct Gate {
    state: Mutex<State>,
    urgent: Condvar,
    normal: Condvar,
}

/// Holds the write turn; the next waiter gets it when this is dropped.
pub(super) struct Turn<'a>(&'a Gate);

impl Gate {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the write turn: an urgent writer as soon as the current one is done, the
    /// others once no urgent writer waits.
    pub(super) fn enter(&self, urgent: bool) -> Turn<'_> {
        let mut s = self.lock();
        if urgent {
            s.urgent += 1;
            while s.busy {
                s = self.urgent.wait(s).unwrap_or_else(|p| p.into_inner());
            }
            s.urgent -= 1;
        } else {
            while s.busy || s.urgent > 0 {
                s = self.normal.wait(s).unwrap_or_else(|p| p.into_inner());
            }
        }
        s.busy = true;
        Turn(self)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.busy = false;
        // One waiter is woken per turn: an urgent one when any waits. A woken writer that
        // finds the turn taken (or, if normal, an urgent writer waiting) waits again and
        // is woken at the end of that turn.
        if s.urgent > 0 {
            self.0.urgent.notify_one();
        } else {
            self.0.normal.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::mpsc;

    #[test]
    fn an_urgent_writer_goes_before_the_waiting_others() {
        let gate = Arc::new(Gate::default());
        let turn = gate.enter(false);
        let (tx, rx) = mpsc::channel();
        let waiting = |g: &Arc<Gate>, urgent: bool, name: &'static str| {
            let (g, tx) = (g.clone(), tx.clone());
            std::thread::spawn(move || {
                let _t = g.enter(urgent);
                tx.send(name).expect("send");
            })
        };
        // Three normal writers wait, then an urgent one: it is next.
        let normals: Vec<_> = ["a", "b", "c"]
            .into_iter()
            .map(|n| waiting(&gate, false, n))
            .collect();
        // Whether or not they are already blocked, none of them can pass while the turn is
        // held, nor while an urgent writer waits.
        let urgent = {
            let g = gate.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                let _t = g.enter(true);
                tx.send("urgent").expect("send");
            })
        };
        while gate.lock().urgent == 0 {
            std::thread::yield_now();
        }
        drop(turn);
        urgent.join().expect("urgent");
        for h in normals {
            h.join().expect("normal");
        }
        drop(tx);
        let order: Vec<_> = rx.iter().collect();
        assert_eq!(order[0], "urgent", "{order:?}");
        assert_eq!(order.len(), 4);
    }

    #[test]
    fn every_waiter_gets_a_turn() {
        let gate = Arc::new(Gate::default());
        let n = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for i in 0..16 {
                let (gate, n) = (&gate, &n);
                s.spawn(move || {
                    for _ in 0..200 {
                        let _t = gate.enter(i % 4 == 0);
                        n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(n.into_inner(), 16 * 200);
    }
}
