//! Logging: human-readable on a terminal, JSON otherwise, plus a daily-rotated JSON file
//! under `<data>/logs` keeping `log_retention_days` files. Metrics recorder (Prometheus).

use crate::config::{Config, LogFormat};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::io::IsTerminal;
use std::sync::OnceLock;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{Builder, Rotation};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber. Keep the guard alive until exit: it flushes the file.
/// Log lines queued for the file writer before new ones are dropped.
const LOG_QUEUE_LINES: usize = 8_192;

pub fn init_logging(cfg: &Config) -> anyhow::Result<WorkerGuard> {
    let filter = EnvFilter::try_new(&cfg.log_level)
        .map_err(|e| anyhow::anyhow!("LOG_LEVEL `{}` is not a valid filter: {e}", cfg.log_level))?;
    let appender = log_file(&cfg.data_dir.join("logs"), cfg.log_retention_days)?;
    // The default queue preallocates 128,000 line slots (4 MB resident from the start, a
    // tenth of the idle-memory budget); lines beyond this bound are dropped, not blocked on.
    let (file_writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .lossy(true)
        .finish(appender);
    let file_layer = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(file_writer);
    let json = match cfg.log_format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(file_layer);
    if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init()?;
    } else {
        registry.with(tracing_subscriber::fmt::layer()).try_init()?;
    }
    Ok(guard)
}

/// The daily-rotated log file appender under `dir`, keeping `retention_days` files. The
/// directory is 0700 and the files 0600: logs carry emails and client addresses.
fn log_file(
    dir: &std::path::Path,
    retention_days: usize,
) -> anyhow::Result<tracing_appender::rolling::RollingFileAppender> {
    // Files the appender creates (now and at each rotation) follow the umask.
    crate::store::private_files();
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create log directory {}: {e}", dir.display()))?;
    // Also closes a directory an older version left readable.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| anyhow::anyhow!("cannot restrict {}: {e}", dir.display()))?;
    }
    Builder::new()
        .rotation(Rotation::DAILY)
        .filename_prefix("aigentable")
        .filename_suffix("log")
        .max_log_files(retention_days.max(1))
        .build(dir)
        .map_err(|e| anyhow::anyhow!("cannot open log file in {}: {e}", dir.display()))
}

/// The process-wide Prometheus recorder (installed once; later calls share it).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ])
                .expect("BUG: static buckets")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            handle
        })
        .clone()
}

#[cfg(test)]
mod tests {
    #[cfg(unix)]
    #[test]
    fn log_files_and_their_directory_are_private() {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("logs");
        let mut w = super::log_file(&dir, 3).unwrap();
        w.write_all(b"{\"msg\":\"hello\"}\n").unwrap();
        w.flush().unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        let files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(!files.is_empty());
        for f in files {
            assert_eq!(mode(&f), 0o600, "{}", f.display());
        }
    }
}
