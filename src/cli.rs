//! Command line: `aigentable [serve]`, `aigentable admin create`, `aigentable admin reset-link`,
//! `reindex`, `models list|pull|import`, `analytics rebuild`, `backup`, `restore`,
//! `tenant import`, `--version`.

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
    /// Write a full backup of the data directory (store, stored files, keys) to FILE, also
    /// while the server runs on it (it is asked through `<data>/admin.sock`).
    Backup {
        /// The archive to write (.tar.gz); it holds the install's keys: keep it safe.
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a backup into an empty (or new) data directory given with --data-dir.
    Restore {
        /// The archive written by `aigentable backup` or a scheduled backup.
        file: PathBuf,
    },
    /// Tenant moves between installs.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Administration tasks.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Local embedding models under <data>/models/: list, pull from a hub, import a folder.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Analytics maintenance.
    Analytics {
        #[command(subcommand)]
        command: AnalyticsCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// List the models under <data>/models/ and beside the executable (the release bundle's),
    /// with their dimensions, graphs and sizes, and which one the server uses by default.
    List,
    /// Download a model in the Hugging Face layout from a hub or a mirror (resumable; every
    /// file verified against the hub's checksums), validate it, install it under
    /// <data>/models/. Can run while the server runs.
    Pull(PullArgs),
    /// Copy a model folder (e.g. from a USB stick, for air-gapped sites) to <data>/models/,
    /// after validating it: tokenizer, graph inputs, and one embedding per graph.
    Import {
        /// The model folder (Hugging Face layout: tokenizer.json, config.json, onnx/*.onnx).
        dir: PathBuf,
        /// Folder name under <data>/models/. Default: the folder's own name.
        #[arg(long)]
        name: Option<String>,
        /// Replace an installed model of the same name.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum AnalyticsCommand {
    /// Rebuild every tenant's analytics rollups from the stored conversations, messages,
    /// turn events and webhook deliveries. Run it while the server is stopped (the store
    /// is refused while a server holds it).
    Rebuild,
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

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Import a tenant export (from `GET /api/tenants/{id}/export`) into this install. Run it
    /// while the server is stopped; a running server imports with `POST /api/tenants/import`.
    Import {
        file: PathBuf,
        /// The export's passphrase, when its secrets were sealed with one.
        #[arg(long, env = "EXPORT_PASSPHRASE", hide_env_values = true)]
        passphrase: Option<String>,
        /// Import under a new tenant id (every id of the tenant remapped), for an install
        /// that has the tenant already. Its users' emails must still be free here.
        #[arg(long)]
        new_id: bool,
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

/// `aigentable analytics rebuild`.
pub async fn analytics_rebuild(config: Config) -> anyhow::Result<()> {
    let app = crate::app::build(config).await?;
    let svc = app.state.svc.clone();
    let (tenants, keys) = tokio::task::spawn_blocking(move || svc.rebuild_all_analytics())
        .await?
        .map_err(|e| anyhow::anyhow!("rebuilding analytics: {e}"))?;
    app.state.jobs.shutdown();
    println!("rebuilt the analytics of {tenants} tenants ({keys} rollup keys)");
    Ok(())
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

/// The ONNX Runtime library `models pull|import` validate with: ORT_DYLIB_PATH, else one
/// beside the executable or under `<data>/runtime/` (the server's own rules).
fn validation_runtime(config: &Config) -> anyhow::Result<PathBuf> {
    config
        .embed_settings()
        .ort_dylib_path
        .or_else(|| {
            crate::embed::find_runtime(
                crate::embed::exe_dir().as_deref(),
                &config.data_dir.join("runtime"),
            )
        })
        .ok_or_else(|| {
            anyhow::anyhow!(
                "a model is validated by running it, which needs the ONNX Runtime library: set \
                 ORT_DYLIB_PATH or put libonnxruntime.so beside the executable or under {}",
                config.data_dir.join("runtime").display()
            )
        })
}

/// `aigentable models list`.
pub fn models_list(config: &Config) -> anyhow::Result<()> {
    use crate::embed::Location;
    use crate::models::human_bytes;
    let exe = crate::embed::exe_dir();
    let settings = config.embed_settings();
    let default = crate::models::configured_default(&settings, &config.data_dir, exe.as_deref());
    let models = crate::models::list(&config.data_dir, exe.as_deref());
    for (location, root) in crate::embed::model_roots(&config.data_dir, exe.as_deref()) {
        let here: Vec<_> = models.iter().filter(|m| m.location == location).collect();
        let title = match location {
            Location::Data => "installed",
            Location::Bundle => "in the release bundle",
        };
        println!("{title} ({}):", root.display());
        if here.is_empty() {
            println!("  none");
        }
        for m in here {
            let graphs = m
                .graphs
                .iter()
                .map(|g| {
                    format!(
                        "{} {}{}",
                        g.variant,
                        human_bytes(g.bytes),
                        if g.file == m.default_graph {
                            " (used)"
                        } else {
                            ""
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let is_default = default
                .as_deref()
                .is_some_and(|d| crate::models::same_folder(d, &m.dir));
            println!(
                "  {}  {} dims  graphs: {graphs}  {}{}",
                m.name,
                m.dimensions
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "?".into()),
                human_bytes(m.bytes),
                if is_default { "  [server default]" } else { "" }
            );
        }
    }
    match (&settings.provider, &default) {
        (Some(crate::embed::Provider::Openai), _) => {
            println!("server default: an OpenAI-compatible endpoint (EMBEDDINGS_PROVIDER=openai)")
        }
        (Some(crate::embed::Provider::None), _) => {
            println!("server default: none, keyword search only (EMBEDDINGS_PROVIDER=none)")
        }
        (_, Some(d)) => println!("server default: {}", d.display()),
        (_, None) => {
            let found = crate::embed::default_model(&config.data_dir, exe.as_deref());
            println!(
                "server default: none{}",
                found
                    .why_none
                    .map(|w| format!(" ({w})"))
                    .unwrap_or_else(|| " (no model installed)".into())
            );
        }
    }
    Ok(())
}

/// What `models pull` was asked for.
#[derive(Args, Debug, Clone)]
pub struct PullArgs {
    /// The repository, e.g. sentence-transformers/all-MiniLM-L6-v2
    #[arg(value_name = "NAME")]
    pub repo: String,
    /// The hub or a mirror serving the same URLs. Env: MODELS_HUB_URL
    #[arg(long, env = "MODELS_HUB_URL", default_value = crate::models::hub::DEFAULT_HUB)]
    pub hub_url: String,
    /// Branch, tag or commit of the repository.
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// Graph to fetch: fp32 (onnx/model.onnx), int8 (onnx/model_quantized.onnx) or a path
    /// such as onnx/model_O2.onnx; repeatable. Default: fp32 and int8, whichever exist.
    #[arg(long = "graph", value_name = "GRAPH")]
    pub graphs: Vec<String>,
    /// Folder name under <data>/models/. Default: the repository's last segment.
    #[arg(long)]
    pub name: Option<String>,
    /// Replace an installed model of the same name.
    #[arg(long)]
    pub force: bool,
    /// Token for gated or private repositories. Env: HF_TOKEN (prefer it: flags show in `ps`)
    #[arg(long, env = "HF_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// `aigentable models pull`: listing, downloads into `<data>/models/.pull-<name>/` (kept
/// between runs so a later run resumes), validation, then a rename into place.
pub async fn models_pull(config: &Config, args: PullArgs) -> anyhow::Result<()> {
    use crate::models::{self, hub};
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| hub::default_name(&args.repo).to_string());
    models::check_name(&name)?;
    let dest = config.data_dir.join("models").join(&name);
    if dest.exists() && !args.force {
        return Err(models::Error::Exists(name, dest).into());
    }
    let ort = validation_runtime(config)?;
    let client = hub::Hub::new(hub::PullOptions {
        hub: args.hub_url.clone(),
        repo: args.repo.clone(),
        revision: args.revision.clone(),
        graphs: args.graphs.clone(),
        token: args.token.clone().filter(|t| !t.trim().is_empty()),
    })?;
    eprintln!("listing {} at {}", args.repo, args.hub_url);
    let wanted = hub::select(&client.listing().await?, &args.graphs)?;
    let total: u64 = wanted.iter().map(|w| w.size).sum();
    eprintln!("{} files, {}", wanted.len(), models::human_bytes(total));
    let staging = models::staging_dir(&config.data_dir, "pull", &name);
    std::fs::create_dir_all(&staging)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", staging.display()))?;
    client.fetch_all(&wanted, &staging, &print_progress).await?;

    eprintln!("validating (tokenizer, graph inputs, one embedding per graph)");
    let max_length = config.embed_settings().max_length;
    let (data_dir, force) = (config.data_dir.clone(), args.force);
    let dir = staging.clone();
    let installed = tokio::task::spawn_blocking(move || {
        let v = models::validate(&dir, &ort, max_length);
        match v {
            Ok(v) => models::install_staged(&dir, &data_dir, &name, force).map(|d| (d, v)),
            Err(e) => {
                // The files match the hub, so downloading them again would not help.
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    })
    .await??;
    report_installed(config, &installed.0, &installed.1);
    Ok(())
}

/// `aigentable models import DIR`.
pub async fn models_import(
    config: &Config,
    dir: PathBuf,
    name: Option<String>,
    force: bool,
) -> anyhow::Result<()> {
    let name = match name {
        Some(n) => n,
        None => std::fs::canonicalize(&dir)
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .ok_or_else(|| {
                anyhow::anyhow!("{} has no folder name: give one with --name", dir.display())
            })?,
    };
    let ort = validation_runtime(config)?;
    let max_length = config.embed_settings().max_length;
    let data_dir = config.data_dir.clone();
    eprintln!("validating and copying {}", dir.display());
    let installed = tokio::task::spawn_blocking(move || {
        crate::models::import(&dir, &data_dir, &name, &ort, max_length, force)
    })
    .await??;
    report_installed(config, &installed.0, &installed.1);
    Ok(())
}

fn report_installed(config: &Config, dir: &std::path::Path, v: &crate::models::Validated) {
    println!(
        "installed {} ({} dims; {})",
        dir.display(),
        v.dimensions,
        v.graphs
            .iter()
            .map(|g| g.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let exe = crate::embed::exe_dir();
    let default = crate::models::configured_default(
        &config.embed_settings(),
        &config.data_dir,
        exe.as_deref(),
    );
    if default
        .as_deref()
        .is_some_and(|d| crate::models::same_folder(d, dir))
    {
        println!("the server uses it as its default model (restart a running server to load it)");
    } else {
        println!(
            "tenants can choose it in their embedding settings (modelFolder); to make it the \
             server default set EMBEDDINGS_MODEL_DIR={}",
            dir.display()
        );
    }
}

fn print_progress(p: crate::models::hub::Progress) {
    use crate::models::{hub::Progress, human_bytes};
    use std::io::IsTerminal;
    let tty = std::io::stderr().is_terminal();
    match p {
        Progress::Start { path, size, from } if from > 0 => {
            eprintln!(
                "  {path}: resuming at {} of {}",
                human_bytes(from),
                human_bytes(size)
            )
        }
        Progress::Start { path, size, .. } => eprintln!("  {path}: {}", human_bytes(size)),
        // Big files only; a terminal gets a line that updates, a log every quarter.
        Progress::Bytes { path, done, size } if size >= 1 << 20 => {
            let pct = done * 100 / size.max(1);
            if tty {
                eprint!(
                    "\r  {path}: {pct:3}% ({} of {})",
                    human_bytes(done),
                    human_bytes(size)
                );
                if done >= size {
                    eprintln!();
                }
            } else if pct % 25 == 0 || pct >= 100 {
                eprintln!(
                    "  {path}: {pct}% ({} of {})",
                    human_bytes(done),
                    human_bytes(size)
                );
            }
        }
        Progress::Bytes { .. } => {}
        Progress::Done { path, reused: true } => eprintln!("  {path}: already downloaded"),
        Progress::Done {
            path,
            reused: false,
        } => eprintln!("  {path}: verified"),
        Progress::Retry { path, at, error } => {
            eprintln!(
                "  {path}: interrupted at {} ({error}); resuming",
                human_bytes(at)
            )
        }
    }
}

/// `aigentable backup --out FILE`.
pub async fn backup(config: Config, out: std::path::PathBuf) -> anyhow::Result<()> {
    crate::store::private_files();
    let dir = config.data_dir.clone();
    let o = out.clone();
    let limits = crate::backup::Limits::from_config(&config);
    let s = tokio::task::spawn_blocking(move || crate::backup::backup_to_file(&dir, &o, &limits))
        .await??;
    let rows: u64 = s.tables.values().sum();
    println!(
        "backup written to {} ({rows} rows, {} files, {} media files, schema {})",
        out.display(),
        s.files,
        s.media,
        s.schema_version
    );
    Ok(())
}

/// `aigentable restore FILE --data-dir DIR`.
pub async fn restore(config: Config, file: std::path::PathBuf) -> anyhow::Result<()> {
    crate::store::private_files();
    let dir = config.data_dir.clone();
    let d = dir.clone();
    let limits = crate::backup::Limits::from_config(&config);
    let s = tokio::task::spawn_blocking(move || crate::backup::restore_file(&file, &d, &limits))
        .await??;
    let rows: u64 = s.tables.values().sum();
    println!(
        "restored {rows} rows, {} files and {} media files into {}; search indexes are rebuilt at the first start",
        s.files,
        s.media,
        dir.display()
    );
    Ok(())
}

/// `aigentable tenant import FILE`: opens the store directly (the server must not be running
/// on the same data directory).
pub async fn tenant_import(
    config: Config,
    file: std::path::PathBuf,
    passphrase: Option<String>,
    new_id: bool,
) -> anyhow::Result<()> {
    let app = crate::app::build(config).await?;
    let st = app.state.clone();
    let s = tokio::task::spawn_blocking(move || {
        let f = std::io::BufReader::new(std::fs::File::open(&file)?);
        st.import_tenant(f, passphrase.as_deref(), new_id)
    })
    .await??;
    if let Some(t) = s
        .tenant_id
        .as_deref()
        .and_then(crate::types::TenantId::parse)
    {
        let svc = app.state.svc.clone();
        let rows: u64 = s.tables.values().sum();
        let files = s.files;
        tokio::task::spawn_blocking(move || {
            use crate::domain::audit::{AuditAction, AuditEntry};
            svc.store.write(|tx| {
                svc.audit_anonymous(
                    tx,
                    &t,
                    None,
                    None,
                    AuditEntry::new(AuditAction::TenantImported)
                        .target("tenant", &t, None)
                        .details(serde_json::json!({"rows": rows, "files": files, "via": "cli", "asNew": new_id})),
                )
            })
        })
        .await??;
    }
    app.state.jobs.shutdown();
    println!(
        "imported tenant {}",
        s.tenant_id.as_deref().unwrap_or_default()
    );
    Ok(())
}
