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
    let jobs = Jobs::new(s.clone(), Bus::default());
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
    jobs.start(Class::Background, 2);
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
    let jobs = Jobs::new(s.clone(), Bus::default());
    jobs.register("ok", Arc::new(|_| Ok(())));
    jobs.start(Class::Background, 1);
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

fn item(t: &TenantId, serial: Option<&str>) -> Item {
    Item {
        tenant: t.clone(),
        id: JobId::new(),
        serial: serial.map(str::to_string),
    }
}

#[test]
fn a_tenant_with_a_backlog_does_not_starve_another() {
    let (a, b) = (TenantId::new(), TenantId::new());
    let mut q = FairQueue::default();
    for _ in 0..100 {
        q.push(item(&a, None));
    }
    let b_job = item(&b, None);
    q.push(b_job.clone());
    let none = HashSet::new();
    let picks: Vec<Item> = (0..2).filter_map(|_| q.pop(&none)).collect();
    assert!(
        picks.contains(&b_job),
        "B's job is among the first two picks"
    );
    assert_eq!(q.len(), 99);
    // Then A's backlog drains, oldest first.
    assert!(std::iter::from_fn(|| q.pop(&none)).all(|i| i.tenant == a));
    assert_eq!(q.len(), 0);
}

#[test]
fn jobs_sharing_a_serial_key_wait_for_each_other_in_order() {
    let t = TenantId::new();
    let mut q = FairQueue::default();
    let first = item(&t, Some("conv-1"));
    let second = item(&t, Some("conv-1"));
    let other = item(&t, Some("conv-2"));
    for i in [&first, &second, &other] {
        q.push(i.clone());
    }
    let mut busy = HashSet::new();
    assert_eq!(q.pop(&busy).as_ref(), Some(&first));
    busy.insert("conv-1".to_string());
    assert_eq!(
        q.pop(&busy).as_ref(),
        Some(&other),
        "another conversation is not held up"
    );
    assert_eq!(q.pop(&busy), None, "the second turn waits for the first");
    busy.clear();
    assert_eq!(q.pop(&busy).as_ref(), Some(&second));
}

#[test]
fn retry_delays_grow_and_are_capped() {
    assert_eq!(retry_delay(1), RETRY_BASE);
    assert_eq!(retry_delay(2), RETRY_BASE * 2);
    assert_eq!(retry_delay(40), RETRY_MAX);
}

#[test]
fn failing_jobs_of_a_retrying_kind_are_retried_then_given_up() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = store(dir.path());
    let jobs = Jobs::new(s.clone(), Bus::default());
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    // Succeeds on the second attempt.
    jobs.register_with(
        "flaky",
        Policy {
            class: Class::Interactive,
            max_attempts: 2,
        },
        Arc::new(move |_| {
            if c.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(JobError::Failed("connection refused".into()))
            } else {
                Ok(())
            }
        }),
    );
    jobs.register_with(
        "broken",
        Policy {
            class: Class::Interactive,
            max_attempts: 1,
        },
        Arc::new(|_| Err(JobError::Failed("no route".into()))),
    );
    jobs.start(Class::Interactive, 1);
    let t = TenantId::new();
    let flaky = enqueue(&s, &t, "flaky");
    let broken = enqueue(&s, &t, "broken");
    jobs.wake(&flaky);
    jobs.wake(&broken);
    let done = wait_status(&s, &flaky, JobStatus::Done);
    assert_eq!(done.attempts, 2);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let failed = wait_status(&s, &broken, JobStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("no route"));
    jobs.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_learn_when_a_job_ends_and_events_follow_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = store(dir.path());
    let bus = Bus::default();
    let jobs = Jobs::new(s.clone(), bus.clone());
    jobs.register(
        "ok",
        Arc::new(|ctx| {
            ctx.progress(40);
            Ok(())
        }),
    );
    let t = TenantId::new();
    let mut sub = bus.subscribe(&crate::auth::Caller::test_staff(
        &t,
        crate::types::Role::TenantUser,
    ));
    let job = enqueue(&s, &t, "ok");
    jobs.start(Class::Background, 1);
    jobs.wake(&job);
    let ended = jobs.finished(&t, &job.id).await.expect("finishes");
    assert_eq!(ended.status, JobStatus::Done);
    // Already finished: answered from the store.
    let again = jobs.finished(&t, &job.id).await.expect("finished");
    assert_eq!(again.status, JobStatus::Done);
    let mut seen = Vec::new();
    for _ in 0..3 {
        match sub.recv().await {
            crate::events::Recv::Event(e) => match &*e {
                crate::events::Event::JobProgress {
                    status, progress, ..
                } => seen.push((*status, *progress)),
                other => panic!("unexpected {other:?}"),
            },
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(sub.try_recv().is_none(), "nothing after the end");
    assert_eq!(
        seen,
        vec![
            (JobStatus::Running, 0),
            (JobStatus::Running, 40),
            (JobStatus::Done, 100)
        ]
    );
    let s2 = jobs.clone();
    tokio::task::spawn_blocking(move || s2.shutdown())
        .await
        .expect("shutdown");
}

#[test]
fn a_job_waiting_for_its_retry_is_not_overtaken_by_a_later_one_with_its_serial_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = store(dir.path());
    let jobs = Jobs::new(s.clone(), Bus::default());
    let order = Arc::new(Mutex::new(Vec::<String>::new()));
    let o = order.clone();
    // The first reply fails once (a provider's 5xx), then goes; the second must follow it.
    jobs.register_with(
        "send",
        Policy {
            class: Class::Interactive,
            max_attempts: 3,
        },
        Arc::new(move |ctx| {
            let name = ctx.job.payload["name"].as_str().unwrap_or("").to_string();
            let mut o = o.lock().expect("order");
            if name == "first" && !o.iter().any(|n| n == "first failed") {
                o.push("first failed".into());
                return Err(JobError::RetryAfter("busy".into(), Duration::ZERO));
            }
            o.push(name);
            Ok(())
        }),
    );
    jobs.start(Class::Interactive, 2);
    let t = TenantId::new();
    let key = Some("outbox:c1".to_string());
    let first = s
        .write(|tx| {
            Jobs::enqueue_serial_in(
                tx,
                &t,
                "send",
                serde_json::json!({"name": "first"}),
                key.clone(),
            )
        })
        .expect("enqueue");
    let second = s
        .write(|tx| {
            Jobs::enqueue_serial_in(
                tx,
                &t,
                "send",
                serde_json::json!({"name": "second"}),
                key.clone(),
            )
        })
        .expect("enqueue");
    jobs.wake(&first);
    jobs.wake(&second);
    wait_status(&s, &first, JobStatus::Done);
    wait_status(&s, &second, JobStatus::Done);
    assert_eq!(
        *order.lock().expect("order"),
        vec!["first failed", "first", "second"]
    );
    jobs.shutdown();
}

#[test]
fn a_failure_code_reaches_the_gave_up_hook_beside_the_words() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = store(dir.path());
    let jobs = Jobs::new(s.clone(), Bus::default());
    let seen = Arc::new(Mutex::new(Vec::<(String, Option<MessageErrorCode>)>::new()));
    // Fails once to be retried (with a code), then for good with another code.
    jobs.register_with(
        "send",
        Policy {
            class: Class::Interactive,
            max_attempts: 3,
        },
        Arc::new(|ctx| {
            Err(if ctx.job.attempts == 1 {
                JobError::RetryAfter(
                    Failure::coded(MessageErrorCode::SendFailed, "502 Bad Gateway"),
                    Duration::ZERO,
                )
            } else {
                JobError::Final(Failure::coded(
                    MessageErrorCode::DeliveryUnknown,
                    "the answer was lost",
                ))
            })
        }),
    );
    // Retried until it gives up, without a code.
    jobs.register_with(
        "flaky",
        Policy {
            class: Class::Interactive,
            max_attempts: 2,
        },
        Arc::new(|_| Err(JobError::RetryAfter("timeout".into(), Duration::ZERO))),
    );
    for kind in ["send", "flaky"] {
        let seen = seen.clone();
        jobs.register(
            &format!("{kind}#failed"),
            Arc::new(move |ctx| {
                let error = ctx.job.error.clone().unwrap_or_default();
                seen.lock().expect("seen").push((error, ctx.job.error_code));
                Ok(())
            }),
        );
    }
    jobs.start(Class::Interactive, 1);
    let t = TenantId::new();
    let send = enqueue(&s, &t, "send");
    jobs.wake(&send);
    let failed = wait_status(&s, &send, JobStatus::Failed);
    assert_eq!(failed.attempts, 2);
    assert_eq!(failed.error_code, Some(MessageErrorCode::DeliveryUnknown));
    // A final failure did not give up after attempts: its words stay as they were.
    assert_eq!(failed.error.as_deref(), Some("the answer was lost"));
    let flaky = enqueue(&s, &t, "flaky");
    jobs.wake(&flaky);
    let failed = wait_status(&s, &flaky, JobStatus::Failed);
    assert_eq!(failed.error_code, None);
    jobs.shutdown();
    assert_eq!(
        *seen.lock().expect("seen"),
        vec![
            (
                "the answer was lost".to_string(),
                Some(MessageErrorCode::DeliveryUnknown)
            ),
            ("timeout (gave up after 2 attempts)".to_string(), None),
        ]
    );
}
