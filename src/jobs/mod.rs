//! The durable job queue: jobs are records in the store plus an entry in the `JobQueue`
//! index, written in the same transaction as whatever asked for them (an accepted upload, an
//! acknowledged customer message, a reset link to mail is never lost). Fixed pools of worker
//! threads (never the async workers) run them; a restart (even after kill -9) resumes every
//! queued or running job. A job that crashed the process too often is failed instead of
//! retried forever.
//!
//! Scheduling: each pool ([`Class`]) takes jobs round-robin over the tenants with pending
//! jobs, so one tenant's 5,000 uploads never starve another tenant. Jobs that share a serial
//! key (one conversation's turns) run one at a time, in the order they were queued. Kinds
//! registered with retries are re-queued with exponential backoff when their handler fails.
//! Every start, progress step and end is published on the event bus after its commit.
//! Depends on store/, model/ and events/ only; handlers are registered by the application.

use crate::events::{Bus, Event};
use crate::model::{Job, JobStatus, MessageErrorCode};
use crate::store::{self, Index, Store, WriteTx, make_ref, split_ref};
use crate::types::{JobId, TenantId, now};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A job that was started this many times without finishing is failed at recovery.
pub const MAX_ATTEMPTS: u32 = 3;
/// First retry delay of a failed job whose kind allows retries; doubles per attempt.
pub const RETRY_BASE: Duration = Duration::from_secs(2);
/// Longest delay between two retries.
pub const RETRY_MAX: Duration = Duration::from_secs(600);

/// Which worker pool runs a kind of job. Interactive jobs (AI turns, mail) are short and
/// wait on the network; they get their own workers so a long ingestion backlog never delays
/// a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    Background,
    Interactive,
}

impl Class {
    fn slot(self) -> usize {
        match self {
            Class::Background => 0,
            Class::Interactive => 1,
        }
    }
}

/// How a kind of job runs.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub class: Class,
    /// Attempts before a failing handler fails the job for good (1 = no retry). Retries
    /// wait [`RETRY_BASE`] doubled per attempt, at most [`RETRY_MAX`].
    pub max_attempts: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            class: Class::Background,
            max_attempts: 1,
        }
    }
}

/// The wait before retry number `attempts` (1 = after the first failure).
pub fn retry_delay(attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(16);
    RETRY_BASE.saturating_mul(1 << exp).min(RETRY_MAX)
}

/// What a handler sees: the job and a way to report progress.
pub struct JobCtx<'a> {
    pub job: &'a Job,
    store: &'a Store,
    bus: &'a Bus,
    stop: &'a AtomicBool,
    cancel: tokio::sync::watch::Receiver<bool>,
}

impl JobCtx<'_> {
    /// Records progress (0-100) on the job record and publishes it.
    pub fn progress(&self, p: u8) {
        let (tid, id) = (self.job.tenant_id.clone(), self.job.id.clone());
        let r = self.store.write(|tx| {
            if let Some(mut j) = tx.get::<Job>(&tid, id.as_str())? {
                j.progress = p.min(100);
                j.updated_at = now();
                tx.put(&j)?;
            }
            Ok::<_, store::Error>(())
        });
        match r {
            Ok(()) => self.bus.publish(Event::JobProgress {
                tenant_id: tid,
                job_id: id,
                kind: self.job.kind.clone(),
                status: JobStatus::Running,
                progress: p.min(100),
            }),
            Err(e) => tracing::warn!(job = %id, error = %e, "could not record job progress"),
        }
    }

    /// True when the server is shutting down: long handlers should stop at a safe point and
    /// return `Err(JobError::Interrupted)` so the job resumes after the restart.
    pub fn shutting_down(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Resolves when the server starts shutting down: async handlers race their work
    /// against it and return `Err(JobError::Interrupted)` when it wins.
    pub async fn cancelled(&self) {
        let mut rx = self.cancel.clone();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    pub fn store(&self) -> &Store {
        self.store
    }
}

/// How a handler ends when it does not succeed.
#[derive(Debug)]
pub enum JobError {
    /// Failed (retried first when the kind allows retries).
    Failed(Failure),
    /// Failed, to be retried (while the kind allows more attempts) no sooner than after the
    /// given wait (a provider's Retry-After) instead of the usual backoff.
    RetryAfter(Failure, Duration),
    /// Failed for good: retrying cannot help (a provider refused the request itself).
    Final(Failure),
    /// Stopped by shutdown; stays queued and resumes after restart.
    Interrupted,
}

impl JobError {
    /// The failure, unless the job was interrupted.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            JobError::Failed(f) | JobError::RetryAfter(f, _) | JobError::Final(f) => Some(f),
            JobError::Interrupted => None,
        }
    }
}

/// Why a job failed: words for people (kept on the job as `error`) and, for kinds whose
/// owner acts on the kind of failure, a code for programs (kept as `error_code`, read back
/// by the kind's gave-up hook: the outbox's is what a failed reply shows as `errorCode`).
/// The code travels beside the words, never inside them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: String,
    pub code: Option<MessageErrorCode>,
}

impl Failure {
    /// A failure with a code.
    pub fn coded(code: MessageErrorCode, reason: impl Into<String>) -> Self {
        Failure {
            reason: reason.into(),
            code: Some(code),
        }
    }
}

impl From<String> for Failure {
    fn from(reason: String) -> Self {
        Failure { reason, code: None }
    }
}

impl From<&str> for Failure {
    fn from(reason: &str) -> Self {
        reason.to_string().into()
    }
}

pub type Handler = Arc<dyn Fn(&JobCtx) -> Result<(), JobError> + Send + Sync>;

/// A job waiting in memory for a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Item {
    pub tenant: TenantId,
    pub id: JobId,
    pub serial: Option<String>,
}

/// Pending jobs of one pool: a FIFO lane per tenant, taken round-robin over the tenants.
#[derive(Default)]
pub(crate) struct FairQueue {
    lanes: HashMap<TenantId, VecDeque<Item>>,
    /// Tenants with pending jobs, in the order they get their next turn.
    turns: VecDeque<TenantId>,
    len: usize,
}

impl FairQueue {
    pub fn push(&mut self, item: Item) {
        let lane = self.lanes.entry(item.tenant.clone()).or_default();
        if lane.is_empty() {
            self.turns.push_back(item.tenant.clone());
        }
        lane.push_back(item);
        self.len += 1;
    }

    /// Puts a job back at the head of its tenant's lane (a retry that is due: it goes
    /// before the jobs queued after it, which keeps a serial key's order).
    pub fn push_front(&mut self, item: Item) {
        let lane = self.lanes.entry(item.tenant.clone()).or_default();
        if lane.is_empty() {
            self.turns.push_back(item.tenant.clone());
        }
        lane.push_front(item);
        self.len += 1;
    }

    /// The next job: the oldest of the next tenant in turn, skipping jobs whose serial key is
    /// `busy` (a job with the same key runs now; the skipped one keeps its place in line).
    pub fn pop(&mut self, busy: &HashSet<String>) -> Option<Item> {
        for _ in 0..self.turns.len() {
            let tenant = self.turns.pop_front()?;
            let Some(lane) = self.lanes.get_mut(&tenant) else {
                continue;
            };
            let free = lane
                .iter()
                .position(|i| i.serial.as_ref().is_none_or(|s| !busy.contains(s)));
            let Some(pos) = free else {
                self.turns.push_back(tenant);
                continue;
            };
            let item = lane.remove(pos);
            if lane.is_empty() {
                self.lanes.remove(&tenant);
            } else {
                self.turns.push_back(tenant);
            }
            self.len -= 1;
            return item;
        }
        None
    }

    pub fn len(&self) -> usize {
        self.len
    }
}

#[derive(Default)]
struct Sched {
    pools: [FairQueue; 2],
    /// Serial keys of running jobs.
    busy: HashSet<String>,
    /// Jobs waiting for their retry time, per pool.
    delayed: [Vec<(Instant, Item)>; 2],
}

impl Sched {
    /// Moves due retries into their queue; the time the next one is due.
    fn release_due(&mut self, slot: usize) -> Option<Instant> {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.delayed[slot])
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.delayed[slot] = later;
        for (_, item) in due {
            // The retry held its serial key while it waited (so later jobs with the key
            // could not overtake it); it is free to run again now, first in line.
            if let Some(k) = &item.serial {
                self.busy.remove(k);
            }
            self.pools[slot].push_front(item);
        }
        self.delayed[slot].iter().map(|(at, _)| *at).min()
    }
}

type Waiters = HashMap<JobId, Vec<tokio::sync::oneshot::Sender<()>>>;

/// The queue and its workers.
pub struct Jobs {
    store: Arc<Store>,
    bus: Bus,
    handlers: Mutex<HashMap<String, (Handler, Policy)>>,
    sched: Mutex<Sched>,
    ready: [Condvar; 2],
    stop: AtomicBool,
    cancel: tokio::sync::watch::Sender<bool>,
    workers: Mutex<Vec<std::thread::JoinHandle<()>>>,
    waiters: Mutex<Waiters>,
}

impl Jobs {
    pub fn new(store: Arc<Store>, bus: Bus) -> Arc<Self> {
        Arc::new(Jobs {
            store,
            bus,
            handlers: Mutex::new(HashMap::new()),
            sched: Mutex::new(Sched::default()),
            ready: [Condvar::new(), Condvar::new()],
            stop: AtomicBool::new(false),
            cancel: tokio::sync::watch::channel(false).0,
            workers: Mutex::new(Vec::new()),
            waiters: Mutex::new(HashMap::new()),
        })
    }

    /// Registers the handler of a background job kind, run once. Register before `start`.
    pub fn register(&self, kind: &str, h: Handler) {
        self.register_with(kind, Policy::default(), h);
    }

    /// Registers the handler of a job kind with its pool and retry policy.
    pub fn register_with(&self, kind: &str, policy: Policy, h: Handler) {
        self.handlers
            .lock()
            .expect("BUG: poisoned handlers")
            .insert(kind.to_string(), (h, policy));
    }

    fn policy(&self, kind: &str) -> Policy {
        self.handlers
            .lock()
            .expect("BUG: poisoned handlers")
            .get(kind)
            .map(|(_, p)| *p)
            .unwrap_or_default()
    }

    /// Creates a queued job inside the caller's transaction. Call [`Jobs::wake`] after commit.
    pub fn enqueue_in(
        tx: &WriteTx,
        tenant: &TenantId,
        kind: &str,
        payload: serde_json::Value,
    ) -> store::Result<Job> {
        Self::enqueue_serial_in(tx, tenant, kind, payload, None)
    }

    /// Like [`Jobs::enqueue_in`]; jobs with the same `serial` key run one at a time, in the
    /// order they were queued (one conversation's turns).
    pub fn enqueue_serial_in(
        tx: &WriteTx,
        tenant: &TenantId,
        kind: &str,
        payload: serde_json::Value,
        serial: Option<String>,
    ) -> store::Result<Job> {
        let now = now();
        let job = Job {
            id: JobId::new(),
            tenant_id: tenant.clone(),
            kind: kind.to_string(),
            payload,
            serial,
            status: JobStatus::Queued,
            progress: 0,
            attempts: 0,
            error: None,
            error_code: None,
            created_at: now,
            updated_at: now,
        };
        tx.put(&job)?;
        tx.index_insert_new(
            Index::JobQueue,
            job.id.as_str(),
            &make_ref(tenant, job.id.as_str()),
        )?;
        Ok(job)
    }

    /// Hands a committed job to the workers.
    pub fn wake(&self, job: &Job) {
        let slot = self.policy(&job.kind).class.slot();
        let mut s = self.sched.lock().expect("BUG: poisoned queue");
        s.pools[slot].push(Item {
            tenant: job.tenant_id.clone(),
            id: job.id.clone(),
            serial: job.serial.clone(),
        });
        self.ready[slot].notify_one();
    }

    /// Re-queues every job left queued or running by a previous process. Jobs that already
    /// crashed the process `MAX_ATTEMPTS` times are failed. Returns how many were resumed.
    /// Jobs resume in the order they were queued (ids are time-ordered), which keeps the
    /// order of serial jobs.
    pub fn recover(&self) -> store::Result<usize> {
        let mut resumed = 0;
        let mut after: Option<String> = None;
        loop {
            let batch = self
                .store
                .read(|tx| tx.index_entries(Index::JobQueue, after.as_deref(), 500))?;
            if batch.is_empty() {
                break;
            }
            after = batch.last().map(|(k, _)| k.clone());
            for (key, r) in batch {
                let Some((tid, id)) = split_ref(&r) else {
                    continue;
                };
                let id = id.to_string();
                let outcome = self.store.write(|tx| {
                    let Some(mut job) = tx.get::<Job>(&tid, &id)? else {
                        tx.index_remove(Index::JobQueue, &key)?;
                        return Ok::<_, store::Error>(None);
                    };
                    if job.status == JobStatus::Running && job.attempts >= MAX_ATTEMPTS {
                        job.status = JobStatus::Failed;
                        job.error = Some(format!(
                            "gave up after {} attempts: the server stopped while running it each time",
                            job.attempts
                        ));
                        job.error_code = None;
                        job.updated_at = now();
                        tx.put(&job)?;
                        tx.index_remove(Index::JobQueue, &key)?;
                        return Ok(Some((job, false)));
                    }
                    job.status = JobStatus::Queued;
                    tx.put(&job)?;
                    Ok(Some((job, true)))
                })?;
                match outcome {
                    Some((job, true)) => {
                        self.wake(&job);
                        resumed += 1;
                    }
                    Some((job, false)) => {
                        self.publish_state(&job);
                        self.notify_finished(&job.id);
                        self.run_failure_hook(&job);
                    }
                    None => {}
                }
            }
        }
        Ok(resumed)
    }

    /// Starts `n` worker threads for the `class` pool.
    pub fn start(self: &Arc<Self>, class: Class, n: usize) {
        let mut w = self.workers.lock().expect("BUG: poisoned workers");
        for i in 0..n.max(1) {
            let me = self.clone();
            let name = match class {
                Class::Background => format!("job-worker-{i}"),
                Class::Interactive => format!("turn-worker-{i}"),
            };
            let h = std::thread::Builder::new()
                .name(name)
                .spawn(move || me.worker_loop(class))
                .expect("BUG: cannot spawn a worker thread");
            w.push(h);
        }
    }

    /// Asks workers to stop after their current job (async handlers are cancelled at their
    /// next await) and waits for them.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cancel.send_replace(true);
        {
            // Taking the lock orders this after any worker's check of `stop`.
            let _s = self.sched.lock().expect("BUG: poisoned queue");
            for c in &self.ready {
                c.notify_all();
            }
        }
        let handles: Vec<_> = self
            .workers
            .lock()
            .expect("BUG: poisoned workers")
            .drain(..)
            .collect();
        for h in handles {
            let _ = h.join();
        }
        // Handlers hold their owners (which hold this queue): break the cycle so the store
        // can close. Waiters learn that their job will not finish in this process.
        self.handlers
            .lock()
            .expect("BUG: poisoned handlers")
            .clear();
        self.waiters.lock().expect("BUG: poisoned waiters").clear();
    }

    /// Number of jobs waiting in memory (for metrics), retries included.
    pub fn pending(&self) -> usize {
        self.sched
            .lock()
            .map(|s| {
                s.pools.iter().map(FairQueue::len).sum::<usize>()
                    + s.delayed.iter().map(Vec::len).sum::<usize>()
            })
            .unwrap_or(0)
    }

    /// Waits until the job is done or failed and returns it; `None` when it will not finish
    /// in this process (shutdown) or does not exist.
    pub async fn finished(self: &Arc<Self>, tenant: &TenantId, id: &JobId) -> Option<Job> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Register first, then look: a job finishing in between is seen by one or the other.
        self.waiters
            .lock()
            .expect("BUG: poisoned waiters")
            .entry(id.clone())
            .or_default()
            .push(tx);
        let read = || {
            let (me, t, i) = (self.clone(), tenant.clone(), id.clone());
            tokio::task::spawn_blocking(move || me.store.read(|r| r.get::<Job>(&t, i.as_str())))
        };
        let ended = |j: &Job| matches!(j.status, JobStatus::Done | JobStatus::Failed);
        match read().await {
            Ok(Ok(Some(j))) if ended(&j) => {
                self.waiters
                    .lock()
                    .expect("BUG: poisoned waiters")
                    .remove(id);
                return Some(j);
            }
            Ok(Ok(Some(_))) => {}
            _ => return None,
        }
        rx.await.ok()?;
        match read().await {
            Ok(Ok(Some(j))) if ended(&j) => Some(j),
            _ => None,
        }
    }

    fn notify_finished(&self, id: &JobId) {
        let ws = self
            .waiters
            .lock()
            .expect("BUG: poisoned waiters")
            .remove(id);
        for w in ws.into_iter().flatten() {
            let _ = w.send(());
        }
    }

    fn publish_state(&self, job: &Job) {
        self.bus.publish(Event::JobProgress {
            tenant_id: job.tenant_id.clone(),
            job_id: job.id.clone(),
            kind: job.kind.clone(),
            status: job.status,
            progress: job.progress,
        });
    }

    fn next(&self, class: Class) -> Option<Item> {
        let slot = class.slot();
        let mut s = self.sched.lock().expect("BUG: poisoned queue");
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return None;
            }
            let due = s.release_due(slot);
            let Sched { pools, busy, .. } = &mut *s;
            if let Some(item) = pools[slot].pop(busy) {
                if let Some(k) = &item.serial {
                    busy.insert(k.clone());
                }
                return Some(item);
            }
            s = match due {
                Some(at) => {
                    let wait = at.saturating_duration_since(Instant::now());
                    self.ready[slot]
                        .wait_timeout(s, wait)
                        .expect("BUG: poisoned queue")
                        .0
                }
                None => self.ready[slot].wait(s).expect("BUG: poisoned queue"),
            };
        }
    }

    fn worker_loop(&self, class: Class) {
        while let Some(item) = self.next(class) {
            metrics::gauge!("jobs_pending").set(self.pending() as f64);
            let retry = match self.run_one(&item.tenant, &item.id) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(job = %item.id, error = %e, "job bookkeeping failed");
                    None
                }
            };
            let mut s = self.sched.lock().expect("BUG: poisoned queue");
            // A job waiting to be retried keeps its serial key: the jobs queued after it
            // with the same key (a conversation's next reply) wait for it.
            if let Some(k) = &item.serial
                && retry.is_none()
            {
                s.busy.remove(k);
                // A job waiting for this key may be at any worker's reach now.
                self.ready[class.slot()].notify_all();
            }
            if let Some(after) = retry {
                s.delayed[class.slot()].push((Instant::now() + after, item));
                self.ready[class.slot()].notify_one();
            }
        }
    }

    /// Runs one job; `Some(delay)` when it failed and is to be retried after `delay`.
    fn run_one(&self, tid: &TenantId, id: &JobId) -> store::Result<Option<Duration>> {
        // Claim: queued -> running, attempts + 1, durably, before any work.
        let job = self.store.write(|tx| {
            let Some(mut job) = tx.get::<Job>(tid, id.as_str())? else {
                tx.index_remove(Index::JobQueue, id.as_str())?;
                return Ok::<_, store::Error>(None);
            };
            if job.status != JobStatus::Queued {
                return Ok(None);
            }
            job.status = JobStatus::Running;
            job.attempts += 1;
            job.updated_at = now();
            tx.put(&job)?;
            Ok(Some(job))
        })?;
        let Some(job) = job else { return Ok(None) };
        self.publish_state(&job);
        let registered = self
            .handlers
            .lock()
            .expect("BUG: poisoned handlers")
            .get(&job.kind)
            .cloned();
        let policy = registered.as_ref().map(|(_, p)| *p).unwrap_or_default();
        let span =
            tracing::info_span!("job", job = %job.id, kind = %job.kind, tenant = %job.tenant_id);
        let _g = span.enter();
        let started = Instant::now();
        let result = match registered {
            None => Err(JobError::Failed(
                format!("no handler for job kind `{}`", job.kind).into(),
            )),
            Some((h, _)) => {
                let ctx = self.ctx(&job);
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h(&ctx))) {
                    Ok(r) => r,
                    Err(_) => Err(JobError::Failed(
                        "internal error while processing (see server log)".into(),
                    )),
                }
            }
        };
        // A failure is retried while the kind allows more attempts (not after shutdown:
        // the restart resumes it anyway).
        let may_retry = job.attempts < policy.max_attempts && !self.stop.load(Ordering::SeqCst);
        let retry_after = match &result {
            Err(JobError::Failed(_)) if may_retry => Some(retry_delay(job.attempts)),
            Err(JobError::RetryAfter(_, wait)) if may_retry => {
                Some((*wait).max(retry_delay(job.attempts)).min(RETRY_MAX))
            }
            _ => None,
        };
        let finished = self.store.write(|tx| {
            let Some(mut j) = tx.get::<Job>(tid, id.as_str())? else {
                tx.index_remove(Index::JobQueue, id.as_str())?;
                return Ok::<_, store::Error>(None);
            };
            match (&result, retry_after) {
                (Ok(()), _) => {
                    j.status = JobStatus::Done;
                    j.progress = 100;
                    j.error = None;
                    j.error_code = None;
                    tx.index_remove(Index::JobQueue, id.as_str())?;
                }
                (Err(JobError::Interrupted), _) => {
                    // Stays in the queue index: resumed at the next start, not counted.
                    j.status = JobStatus::Queued;
                    j.attempts = j.attempts.saturating_sub(1);
                }
                (
                    Err(JobError::Failed(f) | JobError::RetryAfter(f, _) | JobError::Final(f)),
                    Some(_),
                ) => {
                    // Stays in the queue index: a restart retries it at once.
                    j.status = JobStatus::Queued;
                    j.error = Some(f.reason.clone());
                    j.error_code = f.code;
                }
                (
                    Err(
                        e @ (JobError::Failed(f) | JobError::RetryAfter(f, _) | JobError::Final(f)),
                    ),
                    None,
                ) => {
                    j.status = JobStatus::Failed;
                    // A final failure did not give up: retrying could not help, whatever
                    // the attempts before it.
                    let gave_up = !matches!(e, JobError::Final(_)) && j.attempts > 1;
                    j.error = Some(if gave_up {
                        format!("{} (gave up after {} attempts)", f.reason, j.attempts)
                    } else {
                        f.reason.clone()
                    });
                    j.error_code = f.code;
                    tx.index_remove(Index::JobQueue, id.as_str())?;
                }
            }
            j.updated_at = now();
            tx.put(&j)?;
            Ok(Some(j))
        })?;
        let status_label = match (&result, retry_after) {
            (Ok(()), _) => "done",
            (Err(JobError::Interrupted), _) => "interrupted",
            (Err(_), Some(_)) => "retry",
            (Err(_), None) => "failed",
        };
        metrics::counter!("jobs_finished_total", "kind" => job.kind.clone(), "status" => status_label).increment(1);
        match (result.as_ref().map_err(JobError::failure), retry_after) {
            (Ok(()), _) => tracing::info!(ms = started.elapsed().as_millis() as u64, "job done"),
            (Err(None), _) => tracing::info!("job interrupted by shutdown"),
            (Err(Some(f)), Some(after)) => {
                tracing::warn!(reason = %f.reason, code = ?f.code, attempt = job.attempts, retry_in_s = after.as_secs(), "job failed; will retry")
            }
            (Err(Some(f)), None) => {
                tracing::warn!(reason = %f.reason, code = ?f.code, "job failed")
            }
        }
        if let Some(j) = &finished {
            self.publish_state(j);
            if matches!(j.status, JobStatus::Done | JobStatus::Failed) {
                self.notify_finished(&j.id);
            }
            if j.status == JobStatus::Failed {
                self.run_failure_hook(j);
            }
        }
        Ok(retry_after)
    }

    fn ctx<'a>(&'a self, job: &'a Job) -> JobCtx<'a> {
        JobCtx {
            job,
            store: &self.store,
            bus: &self.bus,
            stop: &self.stop,
            cancel: self.cancel.subscribe(),
        }
    }

    /// Lets the handler's owner react to a failure decided outside the handler (e.g. marking a
    /// document failed when its job gave up after crashes).
    fn run_failure_hook(&self, job: &Job) {
        let hook = self
            .handlers
            .lock()
            .expect("BUG: poisoned handlers")
            .get(&format!("{}#failed", job.kind))
            .map(|(h, _)| h.clone());
        if let Some(h) = hook {
            let ctx = self.ctx(job);
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h(&ctx)));
        }
    }
}

#[cfg(test)]
mod tests;
