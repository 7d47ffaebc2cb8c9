//! [`Pool`]: the ONNX Runtime sessions of one local model, opened on demand and closed when
//! idle, so a small machine holds one copy of the weights unless callers actually queue.
//!
//! - One session is opened with the model and always kept.
//! - A caller that finds every open session busy asks for one more (up to the maximum,
//!   EMBEDDINGS_SESSIONS). A background keeper opens it while the caller waits for
//!   whichever comes first, the new session or a busy one coming back: a search never waits
//!   for a model load it would not otherwise have waited for.
//! - A session beyond the first is closed once it has sat idle for the idle time
//!   (EMBEDDINGS_SESSION_IDLE_SECS).
//! - The kept session is replaced by a fresh one once it ran batch work (ingestion,
//!   re-embedding) and then sat idle for the idle time: ONNX Runtime's arena keeps the
//!   largest batch's working set for the session's life, and closing the session is the only
//!   way to hand that back.
//! - Queries go first: while one waits, batch work takes no session, so a search waits for
//!   at most the batches already running.
//!
//! Without an idle time ([`Pool::fixed`]) every session is opened at start and kept, as
//! before session 10. Generic over the session type so the tests need no model.

use super::Error;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// Opens one more session (reads and optimises the graph: a second or two).
pub(super) type Opener<T> = Box<dyn Fn() -> Result<T, Error> + Send + Sync>;

/// How long after a failed open the keeper waits before trying again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

pub(super) struct Pool<T: Send + 'static> {
    state: Mutex<State<T>>,
    returned: Condvar,
    /// Most sessions open at once (EMBEDDINGS_SESSIONS); a replacement may exceed it by one
    /// for the moment it takes to swap.
    max: usize,
    /// How it grows and shrinks; None: fixed (every session opened at start, kept).
    elastic: Option<Elastic<T>>,
    me: Weak<Pool<T>>,
}

struct Elastic<T> {
    idle: Duration,
    open: Opener<T>,
}

/// A session with what the keeper needs to know about it.
struct Slot<T> {
    session: T,
    /// Ran batch work since it was opened (its arena grew past a query's needs).
    batched: bool,
    /// When it was last handed back (or opened).
    since: Instant,
}

struct State<T> {
    idle: Vec<Slot<T>>,
    /// Sessions alive: idle ones plus those leased out.
    open: usize,
    /// Queries waiting for a session.
    queries_waiting: usize,
    /// The keeper thread, while one runs.
    keeper: Option<Thread>,
    /// A session is wanted (or being opened) by the keeper.
    opening: bool,
    /// After a failed open: no new attempt before this.
    retry_after: Option<Instant>,
}

/// A checked-out session, put back on drop (also when the caller panics, so the pool never
/// loses it).
pub(super) struct Lease<'a, T: Send + 'static> {
    pool: &'a Pool<T>,
    slot: Option<Slot<T>>,
    batch: bool,
}

impl<T: Send + 'static> Pool<T> {
    /// A pool of these sessions, kept as they are.
    pub(super) fn fixed(sessions: Vec<T>) -> Arc<Self> {
        let max = sessions.len();
        Self::build(sessions, max, None)
    }

    /// A pool that starts with `first`, opens up to `max` sessions with `open` when callers
    /// queue, and closes extra (or batch-grown) sessions after `idle` without use.
    pub(super) fn elastic(first: T, max: usize, idle: Duration, open: Opener<T>) -> Arc<Self> {
        Self::build(vec![first], max.max(1), Some(Elastic { idle, open }))
    }

    fn build(sessions: Vec<T>, max: usize, elastic: Option<Elastic<T>>) -> Arc<Self> {
        let now = Instant::now();
        let open = sessions.len();
        Arc::new_cyclic(|me| Pool {
            state: Mutex::new(State {
                idle: sessions
                    .into_iter()
                    .map(|session| Slot {
                        session,
                        batched: false,
                        since: now,
                    })
                    .collect(),
                open,
                queries_waiting: 0,
                keeper: None,
                opening: false,
                retry_after: None,
            }),
            returned: Condvar::new(),
            max,
            elastic,
            me: me.clone(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while the lock was held left only plain data behind: nothing to distrust.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sessions open now (idle or leased).
    pub(super) fn open(&self) -> usize {
        self.lock().open
    }

    /// Whether the last attempt to open a session failed (and the keeper waits before the
    /// next). For tests.
    #[cfg(test)]
    pub(super) fn open_failed(&self) -> bool {
        self.lock().retry_after.is_some()
    }

    /// A session for a query (`query`) or for batch work, waiting until one is free.
    pub(super) fn take(&self, query: bool) -> Lease<'_, T> {
        let mut st = self.lock();
        if query {
            st.queries_waiting += 1;
        }
        loop {
            if (query || st.queries_waiting == 0)
                && let Some(slot) = st.idle.pop()
            {
                if query {
                    st.queries_waiting -= 1;
                }
                return Lease {
                    pool: self,
                    slot: Some(slot),
                    batch: !query,
                };
            }
            // This caller would wait: that is the demand a further session is for.
            self.want_session(&mut st, Instant::now());
            st = self
                .returned
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Asks the keeper for one more session, when the pool may grow and none is on its way.
    fn want_session(&self, st: &mut State<T>, now: Instant) {
        if self.elastic.is_none()
            || st.opening
            || st.open >= self.max
            || st.retry_after.is_some_and(|t| now < t)
        {
            return;
        }
        st.opening = true;
        match &st.keeper {
            Some(k) => k.unpark(),
            None => self.spawn_keeper(st),
        }
    }

    fn spawn_keeper(&self, st: &mut State<T>) {
        let me = self.me.clone();
        match std::thread::Builder::new()
            .name("embed-sessions".into())
            .spawn(move || keep(me))
        {
            Ok(h) => st.keeper = Some(h.thread().clone()),
            Err(e) => {
                // No keeper: the pool stays as it is (callers are still served by the
                // sessions it has); the next return or demand tries again.
                st.opening = false;
                tracing::warn!("cannot start the embedding sessions' keeper thread: {e}");
            }
        }
    }

    /// Whether the keeper has anything to watch: a session to open, one beyond the first, or
    /// a batch-grown one to replace.
    fn needs_keeper(st: &State<T>) -> bool {
        st.opening || st.open > 1 || st.idle.iter().any(|s| s.batched)
    }

    /// One round of the keeper: opens a wanted session, closes what sat idle too long.
    /// Returns how long to sleep before the next round, or None when there is nothing left
    /// to watch (the keeper then ends; the next demand or return starts another).
    fn keep_round(&self) -> Option<Duration> {
        let elastic = self.elastic.as_ref()?;
        let mut st = self.lock();
        if st.opening {
            drop(st);
            let opened = (elastic.open)();
            st = self.lock();
            st.opening = false;
            let now = Instant::now();
            match opened {
                Ok(session) => {
                    st.open += 1;
                    st.idle.push(Slot {
                        session,
                        batched: false,
                        since: now,
                    });
                    self.returned.notify_all();
                }
                Err(e) => {
                    tracing::warn!(
                        "cannot open another embedding session (the open ones keep serving; next try in {} s): {e}",
                        RETRY_AFTER_FAILURE.as_secs()
                    );
                    st.retry_after = Some(now + RETRY_AFTER_FAILURE);
                    // A failed replacement is not retried: the kept session still works.
                    for s in &mut st.idle {
                        s.batched = false;
                    }
                }
            }
        }
        let now = Instant::now();
        let closed = st.expire(now, elastic.idle);
        // The last session grew with batch work and has been idle since: open a fresh one
        // (the next round closes the grown one, now an extra).
        if st.open == 1
            && let [only] = st.idle.as_slice()
            && only.batched
            && now.duration_since(only.since) >= elastic.idle
            && st.retry_after.is_none_or(|t| now >= t)
        {
            st.opening = true;
        }
        let next = if st.opening {
            Some(Duration::ZERO)
        } else if Self::needs_keeper(&st) {
            Some(st.next_expiry(now, elastic.idle))
        } else {
            st.keeper = None;
            None
        };
        drop(st);
        // Outside the lock: freeing a session's weights and arena takes a moment.
        drop(closed);
        next
    }
}

impl<T> State<T> {
    /// Takes out the sessions that sat idle for `idle`, keeping at least one open: batch-grown
    /// ones first, then the longest idle.
    fn expire(&mut self, now: Instant, idle: Duration) -> Vec<T> {
        let mut closed = Vec::new();
        while self.open > 1 {
            let oldest = self
                .idle
                .iter()
                .enumerate()
                .filter(|(_, s)| now.duration_since(s.since) >= idle)
                .max_by_key(|(_, s)| (s.batched, now.duration_since(s.since)))
                .map(|(i, _)| i);
            let Some(i) = oldest else { break };
            closed.push(self.idle.remove(i).session);
            self.open -= 1;
        }
        closed
    }

    /// How long until the next idle session is due (the idle time when none is idle: a
    /// leased session comes back no earlier than now).
    fn next_expiry(&self, now: Instant, idle: Duration) -> Duration {
        self.idle
            .iter()
            // An idle time too large for the clock (EMBEDDINGS_SESSION_IDLE_SECS is the
            // operator's) means never: wait the idle time itself.
            .map(|s| {
                s.since
                    .checked_add(idle)
                    .map_or(idle, |due| due.saturating_duration_since(now))
            })
            .min()
            .unwrap_or(idle)
            // At least a moment: a session due right now but kept (the last one) must not
            // turn the keeper into a spin.
            .max(Duration::from_millis(50).min(idle))
    }
}

/// The keeper thread: rounds until its pool is gone or has nothing left to watch.
fn keep<T: Send + 'static>(pool: Weak<Pool<T>>) {
    loop {
        // Holds the pool only during a round, so dropping the model frees it.
        let Some(next) = pool.upgrade().and_then(|p| p.keep_round()) else {
            return;
        };
        if !next.is_zero() {
            std::thread::park_timeout(next);
        }
    }
}

impl<T: Send + 'static> Lease<'_, T> {
    pub(super) fn session(&mut self) -> &mut T {
        &mut self
            .slot
            .as_mut()
            .expect("BUG: a lease holds its session until dropped")
            .session
    }
}

impl<T: Send + 'static> Drop for Lease<'_, T> {
    fn drop(&mut self) {
        if let Some(mut slot) = self.slot.take() {
            slot.batched |= self.batch;
            slot.since = Instant::now();
            let mut st = self.pool.lock();
            st.idle.push(slot);
            if self.pool.elastic.is_some() && st.keeper.is_none() && Pool::<T>::needs_keeper(&st) {
                self.pool.spawn_keeper(&mut st);
            }
            drop(st);
            // All: a waiting batch caller must not swallow the wake-up a query needs.
            self.pool.returned.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An elastic pool of numbered sessions; the opener counts its calls.
    fn numbered(max: usize, idle: Duration) -> (Arc<Pool<usize>>, Arc<AtomicUsize>) {
        let opened = Arc::new(AtomicUsize::new(1));
        let count = opened.clone();
        let pool = Pool::elastic(
            0,
            max,
            idle,
            Box::new(move || Ok(count.fetch_add(1, Ordering::SeqCst))),
        );
        (pool, opened)
    }

    /// Waits (without a clock) until `cond` holds; the keeper runs on its own thread.
    fn until(cond: impl Fn() -> bool) {
        while !cond() {
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_waiting_query_gets_the_next_free_session_before_batch_work() {
        let pool = Pool::fixed(vec![1u8]);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            let held = pool.take(false);
            let batch = {
                let tx = tx.clone();
                let pool = &pool;
                s.spawn(move || {
                    let _l = pool.take(false);
                    tx.send("batch").unwrap();
                })
            };
            let query = {
                let tx = tx.clone();
                let pool = &pool;
                s.spawn(move || {
                    let _l = pool.take(true);
                    tx.send("query").unwrap();
                })
            };
            // Hand the session back only once the query is waiting for it.
            while pool.lock().queries_waiting == 0 {
                std::thread::yield_now();
            }
            drop(held);
            batch.join().unwrap();
            query.join().unwrap();
        });
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), ["query", "batch"]);
        // Every lease came back, and a fixed pool neither grew nor started a keeper.
        let st = pool.lock();
        assert_eq!((st.idle.len(), st.open), (1, 1));
        assert!(st.keeper.is_none());
    }

    #[test]
    fn a_second_session_opens_only_when_a_caller_would_wait() {
        let (pool, opened) = numbered(2, Duration::from_secs(3600));
        // One caller at a time, however many: the one session serves them all.
        for _ in 0..5 {
            *pool.take(true).session() += 0;
        }
        assert_eq!(pool.open(), 1);
        assert_eq!(opened.load(Ordering::SeqCst), 1, "no session opened");

        // Two at once: the second gets a new session instead of waiting for the first.
        let mut first = pool.take(true);
        assert_eq!(*first.session(), 0);
        let mut second = pool.take(true);
        assert_eq!(*second.session(), 1, "a freshly opened session");
        assert_eq!(pool.open(), 2);

        // At the maximum, a third caller waits for a session to come back.
        std::thread::scope(|s| {
            let third = s.spawn(|| *pool.take(false).session());
            drop(first);
            assert_eq!(third.join().unwrap(), 0);
        });
        drop(second);
        assert_eq!(pool.open(), 2, "never more than the maximum");
        assert_eq!(opened.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn extra_sessions_close_after_the_idle_time_and_one_stays() {
        let (pool, _) = numbered(3, Duration::from_millis(1));
        {
            let _a = pool.take(true);
            let _b = pool.take(true);
            let _c = pool.take(true);
            assert_eq!(pool.open(), 3);
        }
        // The keeper closes the two extras once idle; the pool keeps one, and the keeper ends.
        until(|| pool.open() == 1 && pool.lock().keeper.is_none());
        assert_eq!(pool.lock().idle.len(), 1);
        // It grows again on the next contention.
        let _a = pool.take(true);
        let _b = pool.take(true);
        assert_eq!(pool.open(), 2);
    }

    #[test]
    fn a_session_grown_by_batch_work_is_replaced_once_idle() {
        let (pool, opened) = numbered(1, Duration::from_millis(1));
        // Queries alone never replace the session.
        drop(pool.take(true));
        assert!(pool.lock().keeper.is_none());
        // Batch work does, once the session has been idle: a fresh one takes its place.
        drop(pool.take(false));
        until(|| opened.load(Ordering::SeqCst) == 2 && pool.lock().keeper.is_none());
        let st = pool.lock();
        assert_eq!(st.open, 1);
        assert_eq!(st.idle.len(), 1);
        assert_eq!(st.idle[0].session, 1, "the fresh session");
        assert!(!st.idle[0].batched);
    }

    #[test]
    fn expiry_closes_grown_and_oldest_sessions_first_and_keeps_one() {
        let t0 = Instant::now();
        let slot = |session, batched, ago: u64| Slot {
            session,
            batched,
            since: t0 - Duration::from_secs(ago),
        };
        let mut st = State {
            idle: vec![slot(1, false, 100), slot(2, true, 70), slot(3, false, 10)],
            open: 4,
            queries_waiting: 0,
            keeper: None,
            opening: false,
            retry_after: None,
        };
        let idle = Duration::from_secs(60);
        // Two are due; the grown one goes first, then the older one.
        assert_eq!(st.expire(t0, idle), vec![2, 1]);
        assert_eq!(st.open, 2);
        // Session 3 is due in 50 s.
        assert_eq!(st.next_expiry(t0, idle), Duration::from_secs(50));
        // Later, 3 is due, but the leased one is out: 3 closes, the pool keeps the leased.
        assert_eq!(st.expire(t0 + idle, idle), vec![3]);
        assert_eq!(st.open, 1);
        // With one open, nothing more closes.
        st.idle.push(slot(4, true, 1000));
        st.open = 1;
        assert!(st.expire(t0, idle).is_empty());
        // An idle time past what the clock can add is a long wait, not a panic.
        assert_eq!(st.next_expiry(t0, Duration::MAX), Duration::MAX);
    }

    #[test]
    fn a_failed_open_leaves_the_callers_served() {
        let pool: Arc<Pool<u8>> = Pool::elastic(
            7,
            2,
            Duration::from_secs(3600),
            Box::new(|| Err(Error::Runtime("no memory".into()))),
        );
        let held = pool.take(true);
        std::thread::scope(|s| {
            let waiting = s.spawn(|| *pool.take(true).session());
            // The open fails and is not retried at once; the waiting caller gets the session
            // back when it is returned.
            until(|| pool.lock().retry_after.is_some());
            drop(held);
            assert_eq!(waiting.join().unwrap(), 7);
        });
        assert_eq!(pool.open(), 1);
    }
}
