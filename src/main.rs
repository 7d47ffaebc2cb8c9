use aigentable::cli::{AdminCommand, AnalyticsCommand, Cli, Command, ModelsCommand, TenantCommand};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Before any thread exists: arenas made earlier would stay.
    let malloc = aigentable::malloc::tune();
    let cli = Cli::parse();
    let config = match cli.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Some(Command::Admin {
                command: AdminCommand::Create { email, password },
            }) => aigentable::cli::admin_create(config, &email, &password).await,
            Some(Command::Admin {
                command: AdminCommand::ResetLink { email },
            }) => aigentable::cli::reset_link(config, &email)
                .await
                .map(|url| {
                    // The terminal, not the log: the link is a bearer secret.
                    println!("{url}");
                }),
            Some(Command::Reindex) => aigentable::cli::reindex(config).await,
            Some(Command::Models { command }) => match command {
                ModelsCommand::List => aigentable::cli::models_list(&config),
                ModelsCommand::Pull(args) => aigentable::cli::models_pull(&config, args).await,
                ModelsCommand::Import { dir, name, force } => {
                    aigentable::cli::models_import(&config, dir, name, force).await
                }
            },
            Some(Command::Analytics {
                command: AnalyticsCommand::Rebuild,
            }) => aigentable::cli::analytics_rebuild(config).await,
            Some(Command::Backup { out }) => aigentable::cli::backup(config, out).await,
            Some(Command::Restore { file }) => aigentable::cli::restore(config, file).await,
            Some(Command::Tenant {
                command:
                    TenantCommand::Import {
                        file,
                        passphrase,
                        new_id,
                    },
            }) => aigentable::cli::tenant_import(config, file, passphrase, new_id).await,
            Some(Command::Serve { .. }) | None => {
                let _guard = aigentable::telemetry::init_logging(&config)?;
                tracing::info!(?malloc, "malloc arenas");
                aigentable::app::run(config).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
