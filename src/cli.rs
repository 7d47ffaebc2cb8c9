//! Command line: `aigentable [serve]`, `aigentable admin create`, `aigentable admin reset-link`,
//! `reindex`, `--version`.

use crate::config::Config;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "aigentable",
    version,
    about = "Self-hosted AI agent platform in one binary"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug, Clone, Default)]
pub struct Common {
    /// Data directory (store, files, logs, secrets). Env: DATA_DIR. Default ./data
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// TOML configuration file. Default ./aigentable.toml when it exists.
    #[arg(long, global = true, env = "CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server (the default).
    Serve {
        /// Address to listen on: host or host:port. Env: BIND (+ PORT)
        #[arg(long)]
        bind: Option<String>,
    },
    /// Rebuild the search indexes (text and vectors) from the store. Run it while the
    /// server is stopped.
    Reindex,
    /// Administration tasks.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Create a PLATFORM_ADMIN user.
    Create {
        #[arg(long)]
        email: String,
        /// Prefer the ADMIN_PASSWORD environment variable: flags show up in `ps`.
        #[arg(long, env = "ADMIN_PASSWORD", hide_env_values = true)]
        password: String,
    },
    /// Print a fresh password-reset link for a user (valid one hour), for servers without
    /// mail. The link is a secret: it goes to this terminal only, never to the log.
    ResetLink {
        #[arg(long)]
        email: String,
    },
}

impl Cli {
    /// Loads the layered config and applies the flags on top.
    pub fn config(&self) -> Result<Config, crate::config::Error> {
        let mut c = Config::load(self.common.config.as_deref())?;
        if let Some(d) = &self.common.data_dir {
            c.data_dir = d.clone();
        }
        if let Some(Command::Serve { bind: Some(b) }) = &self.command {
            c.bind = b.clone();
        }
        c.validate()?;
        Ok(c)
    }
}

/// `aigentable admin create`: opens the store directly (the server must not be running on
/// the same data directory) and adds a PLATFORM_ADMIN.
pub async fn admin_create(config: Config, email: &str, password: &str) -> anyhow::Result<()> {
    let app = crate::app::build(config).await?;
    let svc = app.state.svc.clone();
    let (e, p) = (email.to_string(), password.to_string());
    tokio::task::spawn_blocking(move || svc.create_platform_admin(&e, &p, false))
        .await?
        .map_err(|err| match err {
            crate::domain::Error::Validation(f) => anyhow::anyhow!(
                "{}",
                f.iter()
                    .map(|f| format!("{}: {}", f.field, f.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            other => anyhow::anyhow!("{other}"),
        })?;
    println!("created platform admin {email}");
    Ok(())
}

/// `aigentable admin reset-link`: opens the store directly (the server must not be running
/// on the same data directory) and returns a fresh reset link for `email`.
pub async fn reset_link(config: Config, email: &str) -> anyhow::Result<String> {
    let app = crate::app::build(config).await?;
    let svc = app.state.svc.clone();
    let e = email.to_string();
    let url = tokio::task::spawn_blocking(move || svc.reset_link(&e))
        .await?
        .map_err(|err| match err {
            crate::domain::Error::NotFound(_) => anyhow::anyhow!("no user has the email {email}"),
            other => anyhow::anyhow!("{other}"),
        })?;
    app.state.jobs.shutdown();
    Ok(url)
}

/// `aigentable reindex`: rebuilds every index from the store.
pub async fn reindex(config: Config) -> anyhow::Result<()> {
    let app = crate::app::build(config).await?;
    let k = app.state.knowledge.clone();
    let n = tokio::task::spawn_blocking(move || {
        let n = k.reindex_all()?;
        k.persist();
        Ok::<_, crate::knowledge::Error>(n)
    })
    .await??;
    app.state.jobs.shutdown();
    println!("rebuilt the indexes of {n} tenants");
    Ok(())
}
