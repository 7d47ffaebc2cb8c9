//! Startup and shutdown. Order: data dir -> secrets -> store (+ migrations) -> bootstrap
//! admin -> router -> serve; on SIGINT/SIGTERM stop accepting, let in-flight requests finish
//! (bounded), then close the store.

use crate::api::{self, AppState, Inner};
use crate::auth::secrets;
use crate::auth::tokens::Keys;
use crate::config::Config;
use crate::domain::Services;
use crate::mail::Mailer;
use crate::store::Store;
use anyhow::Context;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// A built application: its state (for shutdown) and router.
pub struct App {
    pub state: AppState,
    pub router: Router,
    /// The listener of the public metrics (METRICS=public), when bound by the caller;
    /// otherwise `serve_with_listener` binds METRICS_BIND itself.
    pub metrics_listener: Option<TcpListener>,
}

/// Opens the data directory (creating it), the store, and builds the router. Everything that
/// can fail at startup fails here, before the port is bound.
pub async fn build(config: Config) -> anyhow::Result<App> {
    config.validate()?;
    let dir = config.data_dir.clone();
    crate::store::private_files();
    // Before the first hash (the bootstrap admin below).
    crate::auth::password::configure(config.password_hash_thread_count());
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let jwt = match &config.jwt_secret {
        Some(s) => s.expose().to_string(),
        None => secrets::load_or_create(&dir, "jwt_secret")
            .with_context(|| format!("JWT secret in {}", dir.join("secrets").display()))?,
    };
    let refresh = match &config.jwt_refresh_secret {
        Some(s) => s.expose().to_string(),
        None => secrets::load_or_create(&dir, "jwt_refresh_secret")
            .with_context(|| format!("refresh secret in {}", dir.join("secrets").display()))?,
    };
    let data_key = secrets::load_or_create(&dir, "data_key")
        .with_context(|| format!("data key in {}", dir.join("secrets").display()))?;
    let cache = config.store_cache_mb * 1024 * 1024;
    let store = tokio::task::spawn_blocking(move || Store::open(&dir, cache)).await??;
    store.set_disk_reserve(config.disk_reserve_mb.saturating_mul(1024 * 1024));
    let keys = Keys::new(jwt.as_bytes(), refresh.as_bytes(), config.access_ttl());
    let mailer = Arc::new(Mailer::from_config(&config)?);
    let config = Arc::new(config);
    let store = Arc::new(store);
    // One bus for the process; the job queue publishes on it too.
    let events = crate::events::Bus::new(config.socket_tenant_backlog);
    let jobs = crate::jobs::Jobs::new(store.clone(), events.clone());
    let svc = Arc::new(Services {
        store,
        keys,
        sealer: crate::auth::seal::Sealer::from_secret(&data_key),
        config: config.clone(),
        indexes: Default::default(),
        events,
        jobs: jobs.clone(),
        clock: crate::types::Clock::system(),
        audit_failures: Default::default(),
    });
    if let (Some(email), Some(pw)) = (config.admin_email.clone(), config.admin_password.clone()) {
        let s = svc.clone();
        let created =
            tokio::task::spawn_blocking(move || s.create_platform_admin(&email, pw.expose(), true))
                .await?
                .map_err(|e| {
                    anyhow::anyhow!("creating the platform admin from ADMIN_EMAIL: {e:?}")
                })?;
        if created {
            tracing::info!("created the first platform admin from ADMIN_EMAIL");
        }
    }
    // A store upgraded from before analytics rollups gets them built once.
    let s = svc.clone();
    tokio::task::spawn_blocking(move || s.rebuild_analytics_if_empty())
        .await?
        .map_err(|e| anyhow::anyhow!("building analytics rollups: {e}"))?;
    // Knowledge: models and indexes load here (blocking), before the port is bound.
    let (s2, j2, es) = (svc.clone(), jobs.clone(), config.embed_settings());
    let knowledge =
        tokio::task::spawn_blocking(move || crate::knowledge::Knowledge::open(s2, j2, &es))
            .await?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let knowledge = Arc::new(knowledge);
    tracing::info!(embeddings = %knowledge.embeddings_description(), "knowledge base ready");
    knowledge.register_jobs(&jobs);
    let weak = Arc::downgrade(&knowledge);
    let indexes: std::sync::Weak<dyn crate::domain::TenantIndexes> = weak;
    svc.set_tenant_indexes(indexes);
    let k2 = knowledge.clone();
    tokio::task::spawn_blocking(move || k2.recover())
        .await?
        .map_err(|e| anyhow::anyhow!("rebuilding indexes: {e}"))?;
    let engine = Arc::new(crate::agent::Engine {
        svc: svc.clone(),
        llm: crate::llm::Client::new(),
        retriever: knowledge.clone(),
        health: Default::default(),
    });
    engine.register_jobs(&jobs, tokio::runtime::Handle::current());
    mailer.register_jobs(&jobs, svc.sealer.clone(), tokio::runtime::Handle::current());
    let channels = Arc::new(crate::channels::Channels::new(svc.clone()));
    channels.register_jobs(&jobs, tokio::runtime::Handle::current());
    let state = AppState::new(Inner {
        channels,
        svc,
        knowledge,
        jobs,
        engine,
        config: config.clone(),
        limits: Arc::new(api::ratelimit::Limits::from_config(&config)),
        mailer,
        started: Instant::now(),
        metrics: crate::telemetry::metrics_handle(),
        backups: config.backup_dir.clone().map(|dir| {
            Arc::new(crate::backup::schedule::Scheduler::new(
                dir,
                crate::backup::schedule::parse_every(&config.backup_every)
                    .expect("BUG: BACKUP_EVERY validated with the config"),
                config.backup_keep,
            ))
        }),
    });
    let router = api::router(state.clone());
    Ok(App {
        state,
        router,
        metrics_listener: None,
    })
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains in-flight requests for
/// at most the configured timeout.
pub async fn serve_with_listener(
    app: App,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = app.state.clone();
    // Workers start with the server (not in `build`, which the CLI commands use too).
    state.jobs.start(
        crate::jobs::Class::Background,
        state.config.job_worker_count(),
    );
    state.jobs.start(
        crate::jobs::Class::Interactive,
        state.config.turn_worker_count(),
    );
    let jobs = state.jobs.clone();
    let resumed = tokio::task::spawn_blocking(move || jobs.recover()).await??;
    if resumed > 0 {
        tracing::info!(resumed, "resumed unfinished jobs");
    }
    let limits_state = state.clone();
    let pruner = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        let mut minutes: u64 = 0;
        loop {
            tick.tick().await;
            limits_state.limits.prune();
            // Hourly (and at start): forget idle web widget visitors, so they stay bounded.
            if minutes.is_multiple_of(60) {
                let svc = limits_state.svc.clone();
                match tokio::task::spawn_blocking(move || svc.sweep_idle_visitors()).await {
                    Ok(Ok(n)) if n > 0 => tracing::info!(n, "forgot idle widget visitors"),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "sweeping idle widget visitors failed")
                    }
                    _ => {}
                }
                // And audit entries past AUDIT_RETENTION_DAYS.
                let svc = limits_state.svc.clone();
                match tokio::task::spawn_blocking(move || svc.sweep_audit()).await {
                    Ok(Ok(n)) if n > 0 => tracing::info!(n, "swept old audit log entries"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "sweeping the audit log failed"),
                    _ => {}
                }
            }
            minutes += 1;
            let k = limits_state.knowledge.clone();
            let _ = tokio::task::spawn_blocking(move || k.persist()).await;
            // Malloc keeps what ingestion freed in its heap (~50 MiB after 100k chunks, held
            // for good without this; BENCHMARKS.md, session 11): give it back once a minute.
            let _ = tokio::task::spawn_blocking(crate::malloc::trim).await;
            metrics::gauge!("jobs_pending").set(limits_state.jobs.pending() as f64);
        }
    });
    // `aigentable backup` reaches this server through <data>/admin.sock.
    #[cfg(unix)]
    let admin_socket =
        crate::backup::socket::listen(state.svc.store.clone(), state.config.data_dir.clone());
    let backups = state.backups.clone().map(|sched| {
        let st = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(sched.every);
            // The first tick is immediate: the first backup is one interval after start.
            tick.tick().await;
            loop {
                tick.tick().await;
                let (s, st2) = (sched.clone(), st.clone());
                let _ = tokio::task::spawn_blocking(move || {
                    s.run_once(&st2.svc.store, &st2.config.data_dir)
                })
                .await;
            }
        })
    });
    let metrics_server = if state.config.metrics == crate::config::MetricsMode::Public {
        let l = match app.metrics_listener {
            Some(l) => l,
            None => {
                let addr = state.config.metrics_addr()?;
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on METRICS_BIND {addr}"))?
            }
        };
        tracing::info!(addr = %l.local_addr()?, "metrics listening");
        let r = api::metrics_router(state.clone());
        Some(tokio::spawn(async move { axum::serve(l, r).await }))
    } else {
        None
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let grace = Duration::from_secs(state.config.shutdown_timeout_secs);
    let server = axum::serve(
        listener,
        app.router
            .into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections; finishing in-flight requests");
        let _ = tx.send(());
    });
    let server = tokio::spawn(async move { server.await });
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => { r??; }
        _ = async { let _ = rx.await; tokio::time::sleep(grace).await } => {
            tracing::warn!(secs = grace.as_secs(), "in-flight requests did not finish in time; closing");
            server.abort();
        }
    }
    pruner.abort();
    let _ = pruner.await;
    if let Some(b) = backups {
        b.abort();
        let _ = b.await;
    }
    #[cfg(unix)]
    drop(admin_socket);
    if let Some(m) = metrics_server {
        m.abort();
        let _ = m.await;
    }
    // Let workers finish or park their current job, then write the vector indexes.
    let st = state.clone();
    let _ = tokio::task::spawn_blocking(move || {
        st.jobs.shutdown();
        st.knowledge.persist();
    })
    .await;
    // The store closes when the last handle drops; commits are already durable.
    drop(state);
    tracing::info!("stopped");
    Ok(())
}

/// Builds and serves on the configured address until SIGINT/SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let addr = config.listen_addr()?;
    let data_dir = config.data_dir.clone();
    let app = build(config).await?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(
        %addr,
        data_dir = %data_dir.display(),
        version = env!("CARGO_PKG_VERSION"),
        "aigentable listening on http://{addr}"
    );
    serve_with_listener(app, listener, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
