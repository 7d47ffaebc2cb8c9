//! Outgoing mail: SMTP (lettre) when SMTP_URL is set, otherwise the server log.

use crate::config::Config;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

pub enum Mailer {
    /// No SMTP configured: mails (including their links) are written to the log, so an
    /// admin of a small install can still hand out reset and invite links.
    Log,
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
    },
}

impl Mailer {
    pub fn from_config(c: &Config) -> anyhow::Result<Self> {
        let Some(url) = &c.smtp_url else {
            return Ok(Mailer::Log);
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

    /// Sends a plain-text mail. Failures are logged, never returned to the HTTP client.
    pub async fn send(&self, to: &str, subject: &str, body: &str) {
        match self {
            Mailer::Log => {
                tracing::warn!(
                    to,
                    subject,
                    "SMTP is not configured (SMTP_URL); the mail is written here instead:\n{body}"
                );
            }
            Mailer::Smtp { transport, from } => {
                let msg = match to.parse::<Mailbox>() {
                    Ok(to_box) => Message::builder()
                        .from(from.clone())
                        .to(to_box)
                        .subject(subject)
                        .body(body.to_string()),
                    Err(e) => {
                        tracing::error!(error = %e, "invalid recipient");
                        return;
                    }
                };
                match msg {
                    Ok(m) => {
                        if let Err(e) = transport.send(m).await {
                            tracing::error!(error = %e, subject, "sending mail failed");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "building mail failed"),
                }
            }
        }
    }
}
