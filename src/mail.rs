//! Outgoing mail over SMTP (lettre) when SMTP_URL is set. Mails are durable jobs (`mail`):
//! the domain queues one in the same commit as what it announces (a reset token, an
//! invitation), the body sealed at rest (it carries a bearer link); the interactive workers
//! send it, retrying with backoff. Bodies and links never reach the log: without SMTP no mail
//! is queued at all (operators use `aigentable admin reset-link` and the `inviteUrl` the API
//! answers), and send failures are logged without the body.

use crate::auth::seal::Sealer;
use crate::config::Config;
use crate::jobs::{Class, JobCtx, JobError, Jobs, Policy};
use crate::model::Job;
use crate::store::{self, WriteTx};
use crate::types::TenantId;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::sync::Arc;

/// The job kind of an outgoing mail.
pub const JOB_MAIL: &str = "mail";
/// Attempts before a mail is given up (about 4 minutes of retries in all).
pub const MAIL_ATTEMPTS: u32 = 8;

pub enum Mailer {
    /// No SMTP configured: nothing is sent (and nothing is queued).
    Disabled,
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
    },
}

/// A mail to queue.
pub struct Outgoing<'a> {
    pub to: &'a str,
    pub subject: &'a str,
    /// Plain text; sealed in the job record.
    pub body: &'a str,
}

/// Queues `mail` inside the caller's transaction (call [`Jobs::wake`] after commit). The
/// body is sealed with `sealer`: the job record never holds a link in clear.
pub fn enqueue_in(
    tx: &WriteTx,
    sealer: &Sealer,
    tenant: &TenantId,
    mail: &Outgoing,
) -> store::Result<Job> {
    Jobs::enqueue_in(
        tx,
        tenant,
        JOB_MAIL,
        serde_json::json!({
            "to": mail.to,
            "subject": mail.subject,
            "sealedBody": sealer.seal(mail.body),
        }),
    )
}

impl Mailer {
    pub fn from_config(c: &Config) -> anyhow::Result<Self> {
        let Some(url) = &c.smtp_url else {
            return Ok(Mailer::Disabled);
        };
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
            .map_err(|e| anyhow::anyhow!("SMTP_URL is not a valid smtp:// or smtps:// URL: {e}"))?
            .timeout(Some(std::time::Duration::from_secs(20)))
            .build();
        let from = c
            .smtp_from
            .parse()
            .map_err(|e| anyhow::anyhow!("SMTP_FROM `{}` is not a mailbox: {e}", c.smtp_from))?;
        Ok(Mailer::Smtp { transport, from })
    }

    pub fn is_smtp(&self) -> bool {
        matches!(self, Mailer::Smtp { .. })
    }

    /// Registers the mail job's handler on the interactive pool, retried with backoff.
    pub fn register_jobs(
        self: &Arc<Self>,
        jobs: &Jobs,
        sealer: Sealer,
        rt: tokio::runtime::Handle,
    ) {
        let me = self.clone();
        jobs.register_with(
            JOB_MAIL,
            Policy {
                class: Class::Interactive,
                max_attempts: MAIL_ATTEMPTS,
            },
            Arc::new(move |ctx| me.mail_job(ctx, &sealer, &rt)),
        );
    }

    fn mail_job(
        &self,
        ctx: &JobCtx,
        sealer: &Sealer,
        rt: &tokio::runtime::Handle,
    ) -> Result<(), JobError> {
        let p = &ctx.job.payload;
        let field = |k: &str| p[k].as_str().unwrap_or_default().to_string();
        let (to, subject) = (field("to"), field("subject"));
        let Some(body) = sealer.open(&field("sealedBody")) else {
            return Err(JobError::Failed(
                "the mail cannot be opened (the data key changed?)".into(),
            ));
        };
        rt.block_on(async {
            tokio::select! {
                r = self.send(&to, &subject, &body) => r.map_err(|e| JobError::Failed(e.into())),
                _ = ctx.cancelled() => Err(JobError::Interrupted),
            }
        })
    }

    /// Sends a plain-text mail. The error names what failed, never the body.
    pub async fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), String> {
        let Mailer::Smtp { transport, from } = self else {
            return Err("SMTP is not configured (SMTP_URL)".into());
        };
        let to_box = to
            .parse::<Mailbox>()
            .map_err(|e| format!("invalid recipient: {e}"))?;
        let msg = Message::builder()
            .from(from.clone())
            .to(to_box)
            .subject(subject)
            .body(body.to_string())
            .map_err(|e| format!("building the mail failed: {e}"))?;
        transport
            .send(msg)
            .await
            .map(|_| ())
            .map_err(|e| format!("sending the mail failed: {e}"))
    }
}
