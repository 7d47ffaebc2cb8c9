//! Mail and secrets: reset and invitation links travel through the durable mail queue, never
//! through the log; without SMTP an operator prints a reset link with the CLI.

use crate::common::*;
use aigentable::events::{Event, Recv};
use aigentable::model::{Job, JobStatus};
use serde_json::json;

#[tokio::test]
async fn without_smtp_no_link_is_logged_and_the_cli_prints_one() {
    let logs = logs();
    let s = start().await;
    s.register("nomail@x.test", "Shop").await;
    s.post("/api/auth/forgot", None, json!({"email": "nomail@x.test"}))
        .await
        .expect(202);
    logs.wait_for("no mail server is configured").await;
    assert!(
        !logs.text().contains("reset-password?token="),
        "a reset link reached the log"
    );

    // The operator's way: a link printed to the terminal (the server is stopped).
    let dir = s.stop().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aigentable"))
        .args([
            "admin",
            "reset-link",
            "--email",
            "NoMail@x.test",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .expect("run the CLI");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("/reset-password?token="), "{stdout}");
    let token = token_from(&stdout);
    assert!(!stderr.contains(&token), "{stderr}");
    let unknown = std::process::Command::new(env!("CARGO_BIN_EXE_aigentable"))
        .args([
            "admin",
            "reset-link",
            "--email",
            "ghost@x.test",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .expect("run the CLI");
    assert!(!unknown.status.success(), "an unknown email is an error");

    let s = start_in(dir, |_| {}).await;
    s.post(
        "/api/auth/reset",
        None,
        json!({"token": token, "password": "new-password-456"}),
    )
    .await
    .expect(200);
    s.login("nomail@x.test", "new-password-456").await;
    s.stop().await;
}

#[tokio::test]
async fn mailed_links_never_reach_the_log_and_are_sealed_at_rest() {
    let logs = logs();
    let smtp = fake_smtp().await;
    let url = smtp.url.clone();
    let s = start_with(move |c| c.smtp_url = Some(aigentable::config::Secret::new(url))).await;
    let a = s.register("mailed@x.test", "Shop").await;
    s.post("/api/auth/forgot", None, json!({"email": "mailed@x.test"}))
        .await
        .expect(202);
    let reset = token_from(&smtp.wait_for("reset-password").await);
    let r = s
        .post(
            &format!("/api/tenants/{}/users", a.tenant_id),
            Some(&a.token),
            json!({"email": "invitee@x.test", "role": "TENANT_USER"}),
        )
        .await;
    r.expect(201);
    assert_eq!(r.body["emailed"], true);
    let invite = token_from(r.body["inviteUrl"].as_str().expect("inviteUrl"));
    assert_eq!(token_from(&smtp.wait_for("accept-invite").await), invite);
    let text = logs.text();
    assert!(!text.contains(&reset), "the reset token reached the log");
    assert!(
        !text.contains(&invite),
        "the invitation token reached the log"
    );

    // The queued mails kept their bodies sealed.
    let t = aigentable::types::TenantId::parse(&a.tenant_id).expect("tenant");
    let mails = s
        .svc
        .store
        .read(|tx| tx.scan::<Job>(&t, None, |j| j.kind == "mail"))
        .expect("read");
    assert_eq!(mails.len(), 2);
    for m in &mails {
        let p = m.payload.to_string();
        assert!(!p.contains(&reset) && !p.contains(&invite), "{p}");
        let done = bounded("the mail job", s.svc.jobs.finished(&t, &m.id))
            .await
            .expect("ends");
        assert_eq!(done.status, JobStatus::Done);
    }
    s.stop().await;
}

#[tokio::test]
async fn a_failing_mail_server_is_retried_and_logged_without_the_link() {
    let logs = logs();
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let s = start_with(move |c| {
        c.smtp_url = Some(aigentable::config::Secret::new(format!(
            "smtp://127.0.0.1:{port}"
        )))
    })
    .await;
    let a = s.register("refused@x.test", "Shop").await;
    let caller = s.svc.authenticate_access(&a.token).expect("caller");
    let mut sub = s.svc.events.subscribe(&caller);
    s.post("/api/auth/forgot", None, json!({"email": "refused@x.test"}))
        .await
        .expect(202);
    // The mail job runs, fails, and goes back to the queue for a retry.
    let mut seen = Vec::new();
    while !seen.ends_with(&[JobStatus::Running, JobStatus::Queued]) {
        match bounded("the mail job", sub.recv()).await {
            Recv::Event(e) => {
                if let Event::JobProgress { kind, status, .. } = &*e
                    && kind == "mail"
                {
                    seen.push(*status);
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    logs.wait_for("will retry").await;
    assert!(
        !logs.text().contains("reset-password?token="),
        "a reset link reached the log"
    );
    s.stop().await;
}
