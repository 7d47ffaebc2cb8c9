use super::*;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

fn store(dir: &std::path::Path) -> Arc<Store> {
    Arc::new(Store::open(dir, 1 << 20).expect("store"))
}

fn enqueue(s: &Store, t: &TenantId, kind: &str) -> Job {
    s.write(|tx| Jobs::enqueue_in(tx, t, kind, serde_json::json!({})))
        .expect("enqueue")
}

fn wait_status(s: &Store, j: &Job, want: JobStatus) -> Job {
    let t0 = Instant::now();
    loop {
        let cur = s
            .read(|tx| tx.get::<Job>(&j.tenant_id, j.id.as_str()))
            .expect("read")
            .expect("exists");
        if cur.status == want {
            return cur;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "job stuck in {:?}",
            cur.status
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn jobs_run_and_failures_do_not_block_others() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = store(dir.path());
    let jobs = Jobs::new(s.clone());
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    jobs.register(
        "ok",
        Arc::new(move |ctx| {
            ctx.progress(50);
            r.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }),
    );
    jobs.register(
        "bad",
        Arc::new(|_| Err(JobError::Failed("unreadable file".into()))),
    );
    jobs.register("boom", Arc::new(|_| panic!("parser bug")));
    jobs.start(2);
    let t = TenantId::new();
    let bad = enqueue(&s, &t, "bad");
    let boom = enqueue(&s, &t, "boom");
    let ok = enqueue(&s, &t, "ok");
    for j in [&bad, &boom, &ok] {
        jobs.wake(j);
    }
    let done = wait_status(&s, &ok, JobStatus::Done);
    assert_eq!(done.progress, 100);
    assert_eq!(
        wait_status(&s, &bad, JobStatus::Failed).error.as_deref(),
        Some("unreadable file")
    );
    assert!(wait_status(&s, &boom, JobStatus::Failed).error.is_some());
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    jobs.shutdown();
    let left = s
        .read(|tx| tx.index_entries(Index::JobQueue, None, 10))
        .expect("read");
    assert!(left.is_empty(), "finished jobs leave the queue");
}

#[test]
fn unfinished_jobs_resume_after_restart_and_crash_loops_end() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = TenantId::new();
    let (queued, crashed, poison) = {
        let s = store(dir.path());
        let queued = enqueue(&s, &t, "ok");
        // Simulate a process killed while running a job.
        let crashed = enqueue(&s, &t, "ok");
        let poison = enqueue(&s, &t, "ok");
        s.write(|tx| {
            for (j, attempts) in [(&crashed, 1), (&poison, MAX_ATTEMPTS)] {
                let mut j = j.clone();
                j.status = JobStatus::Running;
                j.attempts = attempts;
                tx.put(&j)?;
            }
            Ok::<_, store::Error>(())
        })
        .expect("write");
        (queued, crashed, poison)
    };
    let s = store(dir.path());
    let jobs = Jobs::new(s.clone());
    jobs.register("ok", Arc::new(|_| Ok(())));
    jobs.start(1);
    assert_eq!(jobs.recover().expect("recover"), 2);
    wait_status(&s, &queued, JobStatus::Done);
    wait_status(&s, &crashed, JobStatus::Done);
    let p = wait_status(&s, &poison, JobStatus::Failed);
    assert!(
        p.error.as_deref().unwrap_or("").contains("gave up"),
        "{:?}",
        p.error
    );
    jobs.shutdown();
}
