//! The durable job queue: jobs are records in the store plus an entry in the `JobQueue`
//! index, written in the same transaction as whatever asked for them (an accepted upload is
//! never lost). A fixed pool of worker threads (never the async workers) runs them; a restart
//! (even after kill -9) resumes every queued or running job. A job that crashed the process
//! too often is failed instead of retried forever.
//! Depends on store/ and model/ only; handlers are registered by the application.

use crate::model::{Job, JobStatus};
use crate::store::{self, Index, Store, WriteTx, make_ref, split_ref};
use crate::types::{JobId, TenantId, now};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// A job that was started this many times without finishing is failed at recovery.
pub const MAX_ATTEMPTS: u32 = 3;

/// What a handler sees: the job and a way to report progress.
pub struct JobCtx<'a> {
    pub job: &'a Job,
    store: &'a Store,
    cancel: &'a AtomicBool,
}

impl JobCtx<'_> {
    /// Records progress (0-100) on the job record.
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
        if let Err(e) = r {
            tracing::warn!(job = %id, error = %e, "could not record job progress");
        }
    }

    /// True when the server is shutting down: long handlers should stop at a safe point and
    /// return `Err(JobError::Interrupted)` so the job resumes after the restart.
    pub fn shutting_down(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    pub fn store(&self) -> &Store {
        self.store
    }
}

/// How a handler ends when it does not succeed.
#[derive(Debug)]
pub enum JobError {
    /// Failed for good, with a reason shown to users.
    Failed(String),
    /// Stopped by shutdown; stays queued and resumes after restart.
    Interrupted,
}

pub type Handler = Arc<dyn Fn(&JobCtx) -> Result<(), JobError> + Send + Sync>;

struct Queue {
    items: VecDeque<(TenantId, JobId)>,
}

/// The queue and its workers.
pub struct Jobs {
    store: Arc<Store>,
    handlers: Mutex<HashMap<String, Handler>>,
    queue: Mutex<Queue>,
    ready: Condvar,
    stop: AtomicBool,
    workers: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Jobs {
    pub fn new(store: Arc<Store>) -> Arc<Self> {
        Arc::new(Jobs {
            store,
            handlers: Mutex::new(HashMap::new()),
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
            }),
            ready: Condvar::new(),
            stop: AtomicBool::new(false),
            workers: Mutex::new(Vec::new()),
        })
    }

    /// Registers the handler of a job kind. Register before `start`.
    pub fn register(&self, kind: &str, h: Handler) {
        self.handlers
            .lock()
            .expect("BUG: poisoned handlers")
            .insert(kind.to_string(), h);
    }

    /// Creates a queued job inside the caller's transaction. Call [`Jobs::wake`] after commit.
    pub fn enqueue_in(
        tx: &WriteTx,
        tenant: &TenantId,
        kind: &str,
        payload: serde_json::Value,
    ) -> store::Result<Job> {
        let now = now();
        let job = Job {
            id: JobId::new(),
            tenant_id: tenant.clone(),
            kind: kind.to_string(),
            payload,
            status: JobStatus::Queued,
            progress: 0,
            attempts: 0,
            error: None,
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
        let mut q = self.queue.lock().expect("BUG: poisoned queue");
        q.items.push_back((job.tenant_id.clone(), job.id.clone()));
        self.ready.notify_one();
    }

    /// Re-queues every job left queued or running by a previous process. Jobs that already
    /// crashed the process `MAX_ATTEMPTS` times are failed. Returns how many were resumed.
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
                    Some((job, false)) => self.run_failure_hook(&job),
                    None => {}
                }
            }
        }
        Ok(resumed)
    }

    /// Starts `n` worker threads.
    pub fn start(self: &Arc<Self>, n: usize) {
        let mut w = self.workers.lock().expect("BUG: poisoned workers");
        for i in 0..n.max(1) {
            let me = self.clone();
            let h = std::thread::Builder::new()
                .name(format!("job-worker-{i}"))
                .spawn(move || me.worker_loop())
                .expect("BUG: cannot spawn a worker thread");
            w.push(h);
        }
    }

    /// Asks workers to stop after their current job and waits for them.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.ready.notify_all();
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
        // can close.
        self.handlers
            .lock()
            .expect("BUG: poisoned handlers")
            .clear();
    }

    /// Number of jobs waiting in memory (for metrics).
    pub fn pending(&self) -> usize {
        self.queue.lock().map(|q| q.items.len()).unwrap_or(0)
    }

    fn next(&self) -> Option<(TenantId, JobId)> {
        let mut q = self.queue.lock().expect("BUG: poisoned queue");
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return None;
            }
            if let Some(item) = q.items.pop_front() {
                return Some(item);
            }
            q = self.ready.wait(q).expect("BUG: poisoned queue");
        }
    }

    fn worker_loop(&self) {
        while let Some((tid, id)) = self.next() {
            metrics::gauge!("jobs_pending").set(self.pending() as f64);
            if let Err(e) = self.run_one(&tid, &id) {
                tracing::error!(job = %id, error = %e, "job bookkeeping failed");
            }
        }
    }

    fn run_one(&self, tid: &TenantId, id: &JobId) -> store::Result<()> {
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
        let Some(job) = job else { return Ok(()) };
        let handler = self
            .handlers
            .lock()
            .expect("BUG: poisoned handlers")
            .get(&job.kind)
            .cloned();
        let span =
            tracing::info_span!("job", job = %job.id, kind = %job.kind, tenant = %job.tenant_id);
        let _g = span.enter();
        let started = std::time::Instant::now();
        let result = match handler {
            None => Err(JobError::Failed(format!(
                "no handler for job kind `{}`",
                job.kind
            ))),
            Some(h) => {
                let ctx = JobCtx {
                    job: &job,
                    store: &self.store,
                    cancel: &self.stop,
                };
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h(&ctx))) {
                    Ok(r) => r,
                    Err(_) => Err(JobError::Failed(
                        "internal error while processing (see server log)".into(),
                    )),
                }
            }
        };
        let finished = self.store.write(|tx| {
            let Some(mut j) = tx.get::<Job>(tid, id.as_str())? else {
                tx.index_remove(Index::JobQueue, id.as_str())?;
                return Ok::<_, store::Error>(None);
            };
            match &result {
                Ok(()) => {
                    j.status = JobStatus::Done;
                    j.progress = 100;
                    j.error = None;
                    tx.index_remove(Index::JobQueue, id.as_str())?;
                }
                Err(JobError::Failed(reason)) => {
                    j.status = JobStatus::Failed;
                    j.error = Some(reason.clone());
                    tx.index_remove(Index::JobQueue, id.as_str())?;
                }
                Err(JobError::Interrupted) => {
                    // Stays in the queue index: resumed at the next start, not counted.
                    j.status = JobStatus::Queued;
                    j.attempts = j.attempts.saturating_sub(1);
                }
            }
            j.updated_at = now();
            tx.put(&j)?;
            Ok(Some(j))
        })?;
        let status_label = match &result {
            Ok(()) => "done",
            Err(JobError::Failed(_)) => "failed",
            Err(JobError::Interrupted) => "interrupted",
        };
        metrics::counter!("jobs_finished_total", "kind" => job.kind.clone(), "status" => status_label).increment(1);
        match &result {
            Ok(()) => tracing::info!(ms = started.elapsed().as_millis() as u64, "job done"),
            Err(JobError::Failed(r)) => tracing::warn!(reason = %r, "job failed"),
            Err(JobError::Interrupted) => tracing::info!("job interrupted by shutdown"),
        }
        if let (Some(j), Err(JobError::Failed(_))) = (&finished, &result) {
            self.run_failure_hook(j);
        }
        Ok(())
    }

    /// Lets the handler's owner react to a failure decided outside the handler (e.g. marking a
    /// document failed when its job gave up after crashes).
    fn run_failure_hook(&self, job: &Job) {
        let hook = self
            .handlers
            .lock()
            .expect("BUG: poisoned handlers")
            .get(&format!("{}#failed", job.kind))
            .cloned();
        if let Some(h) = hook {
            let ctx = JobCtx {
                job,
                store: &self.store,
                cancel: &self.stop,
            };
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h(&ctx)));
        }
    }
}

#[cfg(test)]
mod tests;
