//! Foundation benchmarks (issue 2): startup time, idle RSS, release binary size,
//! authenticated `GET /api/auth/me` throughput and login (argon2id) latency.
//!
//! Build the server first, then run:
//!
//! ```text
//! cargo build --release
//! cargo run --release --example bench_foundation -- [--bin target/release/aigentable]
//! ```
//!
//! Options (all optional):
//!
//! * `--bin PATH`          server binary (default `target/release/aigentable`)
//! * `--startup-runs N`    cold starts to time (default 10)
//! * `--logins N`          logins per login benchmark (default 30)
//! * `--duration SECS`     length of the /api/auth/me load (default 10)
//! * `--connections N`     concurrent connections of the /api/auth/me load (default 64)
//! * `--threads N`         wrk threads (default 2)
//! * `--no-wrk`            use the built-in reqwest load loop even when `wrk` is on PATH
//! * `--idle-wait SECS`    idle time before the last RSS reading (default 15; idle tokio
//!   blocking threads exit after 10 s)
//! * `--server-env K=V`    extra environment variable for the server (repeatable), e.g. to
//!   try allocator settings
//!
//! Every server is a child process on 127.0.0.1 with a fresh temporary data directory; it is
//! killed when the benchmark ends or fails. Only 127.0.0.1 is contacted. Linux only (RSS is
//! read from `/proc/<pid>/status`).

use anyhow::{Context, Result, anyhow, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a server may take to answer its first health check before we give up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// Upper bound on requests of the built-in load loop (per run, all connections together).
const FALLBACK_MAX_REQUESTS: usize = 5_000_000;
/// Upper bound on the wall time of any single benchmark phase with a request loop.
const PHASE_TIMEOUT: Duration = Duration::from_secs(300);
const PASSWORD: &str = "bench-password-123";
const EMAIL: &str = "bench@example.com";

struct Opts {
    bin: PathBuf,
    startup_runs: usize,
    logins: usize,
    duration_secs: u64,
    connections: usize,
    threads: usize,
    no_wrk: bool,
    idle_wait_secs: u64,
    server_env: Vec<(String, String)>,
}

fn parse_args() -> Result<Opts> {
    let mut o = Opts {
        bin: PathBuf::from("target/release/aigentable"),
        startup_runs: 10,
        logins: 30,
        duration_secs: 10,
        connections: 64,
        threads: 2,
        no_wrk: false,
        idle_wait_secs: 15,
        server_env: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| anyhow!("{name} needs a value"));
        match a.as_str() {
            "--bin" => o.bin = PathBuf::from(value("--bin")?),
            "--startup-runs" => o.startup_runs = value("--startup-runs")?.parse()?,
            "--logins" => o.logins = value("--logins")?.parse()?,
            "--duration" => o.duration_secs = value("--duration")?.parse()?,
            "--connections" => o.connections = value("--connections")?.parse()?,
            "--threads" => o.threads = value("--threads")?.parse()?,
            "--no-wrk" => o.no_wrk = true,
            "--idle-wait" => o.idle_wait_secs = value("--idle-wait")?.parse()?,
            "--server-env" => {
                let kv = value("--server-env")?;
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--server-env expects KEY=VALUE, got `{kv}`"))?;
                o.server_env.push((k.to_string(), v.to_string()));
            }
            "-h" | "--help" => {
                println!(
                    "usage: bench_foundation [--bin PATH] [--startup-runs N] [--logins N] \
                     [--duration SECS] [--connections N] [--threads N] [--no-wrk] \
                     [--idle-wait SECS] [--server-env KEY=VALUE]..."
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}` (try --help)"),
        }
    }
    o.startup_runs = o.startup_runs.clamp(1, 1000);
    o.logins = o.logins.clamp(2, 10_000);
    o.duration_secs = o.duration_secs.clamp(1, 600);
    o.connections = o.connections.clamp(1, 4096);
    o.threads = o.threads.clamp(1, o.connections);
    o.idle_wait_secs = o.idle_wait_secs.min(600);
    Ok(o)
}

/// A running server. Killed (SIGKILL) and reaped on drop, so it never outlives the benchmark.
struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
    stderr_path: PathBuf,
}

impl Server {
    /// Spawns `bin` with a fresh data directory on a free port. Returns the server and the
    /// instant just before the spawn.
    fn spawn(bin: &Path, extra_env: &[(String, String)]) -> Result<(Server, Instant)> {
        let dir = tempfile::tempdir().context("creating a temporary data directory")?;
        let port = free_port()?;
        let stderr_path = dir.path().join("bench-stderr.log");
        let stderr = std::fs::File::create(&stderr_path)?;
        let data = dir.path().join("data");
        let mut cmd = Command::new(bin);
        // A clean environment: nothing from the caller's shell (JWT_SECRET, ADMIN_EMAIL, ...)
        // leaks in, and the working directory has no aigentable.toml.
        cmd.env_clear()
            .current_dir(dir.path())
            .env("DATA_DIR", &data)
            .env("BIND", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("LOG_LEVEL", "warn")
            .env("LOG_FORMAT", "json")
            .env("RATE_LIMIT_API_PER_MIN", "0")
            .env("RATE_LIMIT_AUTH_PER_MIN", "0")
            .envs(extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr));
        let t0 = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        Ok((
            Server {
                child,
                port,
                _dir: dir,
                stderr_path,
            },
            t0,
        ))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn stderr_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let start = s.len().saturating_sub(2000);
        s.get(start..).unwrap_or("").to_string()
    }

    /// Polls GET /api/health until the first 200; returns the time since `t0`.
    async fn wait_ready(&mut self, client: &reqwest::Client, t0: Instant) -> Result<Duration> {
        let url = self.url("/api/health");
        let mut polls = 0u32;
        loop {
            polls += 1;
            if let Ok(r) = client.get(&url).send().await
                && r.status() == reqwest::StatusCode::OK
            {
                return Ok(t0.elapsed());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "server exited with {status} before it was ready; stderr:\n{}",
                    self.stderr_tail()
                );
            }
            if t0.elapsed() > STARTUP_TIMEOUT || polls > 1_000_000 {
                bail!(
                    "server not ready after {:?}; stderr:\n{}",
                    t0.elapsed(),
                    self.stderr_tail()
                );
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }

    fn rss(&self) -> Result<Mem> {
        read_mem(self.pid())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

#[derive(Clone, Copy)]
struct Mem {
    rss_kb: u64,
    hwm_kb: u64,
    threads: u64,
}

fn read_mem(pid: u32) -> Result<Mem> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("{name} missing in /proc/{pid}/status"))
    };
    Ok(Mem {
        rss_kb: field("VmRSS:")?,
        hwm_kb: field("VmHWM:")?,
        threads: field("Threads:")?,
    })
}

/// The 1-minute load average, to tell whether other work shared the machine.
fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// Nearest-rank percentile of sorted durations.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()?)
}

async fn register(client: &reqwest::Client, srv: &Server) -> Result<String> {
    let r = client
        .post(srv.url("/api/auth/register"))
        .json(&serde_json::json!({
            "email": EMAIL,
            "password": PASSWORD,
            "name": "Bench User",
            "tenantName": "Bench Tenant",
        }))
        .send()
        .await?;
    let status = r.status();
    let body: serde_json::Value = r.json().await?;
    if status != reqwest::StatusCode::CREATED {
        bail!("register answered {status}: {body}");
    }
    body.get("accessToken")
        .and_then(|t| t.as_str())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("register answer has no accessToken: {body}"))
}

async fn login_once(client: &reqwest::Client, url: &str) -> Result<Duration> {
    let t = Instant::now();
    let r = client
        .post(url)
        .json(&serde_json::json!({ "email": EMAIL, "password": PASSWORD }))
        .send()
        .await?;
    let status = r.status();
    let _ = r.bytes().await?;
    let d = t.elapsed();
    if status != reqwest::StatusCode::OK {
        bail!("login answered {status}");
    }
    Ok(d)
}

struct LoginStats {
    n: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    wall: Duration,
}

impl LoginStats {
    fn per_sec(&self) -> f64 {
        self.n as f64 / self.wall.as_secs_f64()
    }
}

/// `total` logins spread over `clients` concurrent clients (each its own connection pool).
async fn bench_logins(srv: &Server, total: usize, clients: usize) -> Result<LoginStats> {
    let url = Arc::new(srv.url("/api/auth/login"));
    let per = total.div_ceil(clients);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let url = url.clone();
        let c = client()?;
        tasks.push(tokio::spawn(async move {
            let mut v = Vec::with_capacity(per);
            for _ in 0..per {
                if start.elapsed() > PHASE_TIMEOUT {
                    break;
                }
                v.push(login_once(&c, &url).await?);
            }
            anyhow::Ok(v)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let wall = start.elapsed();
    all.sort();
    Ok(LoginStats {
        n: all.len(),
        p50: pct(&all, 50.0),
        p99: pct(&all, 99.0),
        max: all.last().copied().unwrap_or_default(),
        wall,
    })
}

/// Result of the /api/auth/me load.
struct Load {
    tool: String,
    requests: u64,
    errors: u64,
    rps: f64,
    p50: String,
    p75: String,
    p90: String,
    p99: String,
    raw: Option<String>,
}

fn wrk_available() -> bool {
    Command::new("wrk")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn run_wrk(srv: &Server, token: &str, o: &Opts) -> Result<Load> {
    let out = Command::new("wrk")
        .arg(format!("-t{}", o.threads))
        .arg(format!("-c{}", o.connections))
        .arg(format!("-d{}s", o.duration_secs))
        .arg("--latency")
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"))
        .arg(srv.url("/api/auth/me"))
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_wrk(&text)
}

fn parse_wrk(text: &str) -> Result<Load> {
    let mut l = Load {
        tool: "wrk".into(),
        requests: 0,
        errors: 0,
        rps: 0.0,
        p50: "?".into(),
        p75: "?".into(),
        p90: "?".into(),
        p99: "?".into(),
        raw: Some(text.to_string()),
    };
    let mut saw_rps = false;
    for line in text.lines() {
        let t = line.trim();
        let mut it = t.split_whitespace();
        match (it.next(), it.next()) {
            (Some("Requests/sec:"), Some(v)) => {
                l.rps = v.parse()?;
                saw_rps = true;
            }
            (Some("50%"), Some(v)) => l.p50 = v.into(),
            (Some("75%"), Some(v)) => l.p75 = v.into(),
            (Some("90%"), Some(v)) => l.p90 = v.into(),
            (Some("99%"), Some(v)) => l.p99 = v.into(),
            (Some(n), Some("requests")) => l.requests = n.parse()?,
            _ => {}
        }
        if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            l.errors += v.trim().parse::<u64>()?;
        }
        if let Some(v) = t.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            for part in v.split(',') {
                if let Some(n) = part.split_whitespace().nth(1) {
                    l.errors += n.parse::<u64>()?;
                }
            }
        }
    }
    if !saw_rps {
        bail!("could not find Requests/sec in wrk output:\n{text}");
    }
    Ok(l)
}

/// Built-in load: `connections` tasks sharing one client, each doing GET /api/auth/me in a
/// loop until the deadline (or the global request bound).
async fn run_reqwest_load(srv: &Server, token: &str, o: &Opts) -> Result<Load> {
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .pool_max_idle_per_host(o.connections)
        .build()?;
    let url = Arc::new(srv.url("/api/auth/me"));
    let auth = Arc::new(format!("Bearer {token}"));
    let dur = Duration::from_secs(o.duration_secs);
    let per_task = FALLBACK_MAX_REQUESTS / o.connections;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..o.connections {
        let (c, url, auth) = (c.clone(), url.clone(), auth.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            while start.elapsed() < dur && lat.len() + (errors as usize) < per_task {
                let t = Instant::now();
                let ok = match c
                    .get(url.as_str())
                    .header("authorization", auth.as_str())
                    .send()
                    .await
                {
                    Ok(r) => r.status() == reqwest::StatusCode::OK && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    lat.push(t.elapsed());
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    let wall = start.elapsed();
    all.sort();
    Ok(Load {
        tool: format!("built-in reqwest loop ({} connections)", o.connections),
        requests: all.len() as u64 + errors,
        errors,
        rps: all.len() as f64 / wall.as_secs_f64(),
        p50: ms(pct(&all, 50.0)),
        p75: ms(pct(&all, 75.0)),
        p90: ms(pct(&all, 90.0)),
        p99: ms(pct(&all, 99.0)),
        raw: None,
    })
}

/// Sequential warm-up: health checks and authenticated requests, all expected to be 200.
async fn warm_up(c: &reqwest::Client, srv: &Server, token: &str, n: usize) -> Result<()> {
    let start = Instant::now();
    for i in 0..n {
        if start.elapsed() > PHASE_TIMEOUT {
            break;
        }
        let r = if i % 2 == 0 {
            c.get(srv.url("/api/health")).send().await?
        } else {
            c.get(srv.url("/api/auth/me"))
                .bearer_auth(token)
                .send()
                .await?
        };
        let status = r.status();
        let _ = r.bytes().await?;
        if status != reqwest::StatusCode::OK {
            bail!("warm-up request {i} answered {status}");
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let o = parse_args()?;
    let bin = std::fs::canonicalize(&o.bin).with_context(|| {
        format!(
            "server binary {} not found; run `cargo build --release` first or pass --bin",
            o.bin.display()
        )
    })?;
    let c = client()?;
    let load_before = load_avg();
    println!("1-minute load average before: {load_before}");

    // 3. Binary size.
    let size = std::fs::metadata(&bin)?.len();
    println!("binary: {} ({size} bytes)", bin.display());

    // 1. Startup: cold starts, each with a fresh data directory.
    let mut starts = Vec::new();
    let mut start_rss = Vec::new();
    for i in 0..o.startup_runs {
        let (mut srv, t0) = Server::spawn(&bin, &o.server_env)?;
        let d = srv.wait_ready(&c, t0).await?;
        start_rss.push(srv.rss()?.rss_kb);
        println!("startup run {:>2}: {}", i + 1, ms(d));
        starts.push(d);
        drop(srv);
    }
    starts.sort();

    // Main server for the remaining measurements.
    let (mut srv, t0) = Server::spawn(&bin, &o.server_env)?;
    srv.wait_ready(&c, t0).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // 2. Idle RSS right after start.
    let rss_start = srv.rss()?;
    let token = register(&c, &srv).await?;
    warm_up(&c, &srv, &token, 1000).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_warm = srv.rss()?;
    println!(
        "RSS after start: {:.1} MB; after register + 1000 requests: {:.1} MB",
        mb(rss_start.rss_kb),
        mb(rss_warm.rss_kb)
    );

    // 5. Login latency.
    let seq = bench_logins(&srv, o.logins, 1).await?;
    let conc = bench_logins(&srv, o.logins, 2).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_login = srv.rss()?;
    println!(
        "logins sequential p50 {} p99 {}; 2 clients p50 {} p99 {}",
        ms(seq.p50),
        ms(seq.p99),
        ms(conc.p50),
        ms(conc.p99)
    );

    // 4. /api/auth/me throughput.
    let use_wrk = !o.no_wrk && wrk_available();
    println!(
        "load generator: {}",
        if use_wrk {
            "wrk (found on PATH)"
        } else if o.no_wrk {
            "built-in reqwest loop (--no-wrk)"
        } else {
            "built-in reqwest loop (wrk not found on PATH)"
        }
    );
    let load = if use_wrk {
        run_wrk(&srv, &token, &o)?
    } else {
        run_reqwest_load(&srv, &token, &o).await?
    };
    if let Some(raw) = &load.raw {
        println!("{raw}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_load = srv.rss()?;
    println!(
        "waiting {} s idle before the last RSS reading",
        o.idle_wait_secs
    );
    tokio::time::sleep(Duration::from_secs(o.idle_wait_secs)).await;
    let rss_idle = srv.rss()?;
    // The server must still be healthy after all this.
    let health = c.get(srv.url("/api/health")).send().await?.status();
    drop(srv);

    let median = pct(&starts, 50.0);
    let max = starts.last().copied().unwrap_or_default();
    start_rss.sort();
    let start_rss_med = start_rss.get(start_rss.len() / 2).copied().unwrap_or(0);
    let goal_rss = |kb: u64| {
        if mb(kb) < 40.0 {
            "< 40 MB: met"
        } else {
            "< 40 MB: MISSED"
        }
    };

    println!();
    println!("== aigentable foundation benchmark ==");
    println!("{:<48} | {:<28} | goal", "metric", "value");
    println!("{}", "-".repeat(96));
    let row = |m: &str, v: String, g: &str| println!("{m:<48} | {v:<28} | {g}");
    row(
        "release binary size",
        format!("{size} B ({:.2} MB)", size as f64 / 1_048_576.0),
        "-",
    );
    row(
        &format!("startup to first 200 /api/health ({} runs)", starts.len()),
        format!("median {} / max {}", ms(median), ms(max)),
        "-",
    );
    row(
        "RSS right after start (median of cold starts)",
        format!("{:.1} MB", mb(start_rss_med)),
        goal_rss(start_rss_med),
    );
    row(
        "idle RSS 1 s after start",
        format!("{:.1} MB", mb(rss_start.rss_kb)),
        goal_rss(rss_start.rss_kb),
    );
    row(
        "idle RSS after register + 1000 requests",
        format!("{:.1} MB", mb(rss_warm.rss_kb)),
        goal_rss(rss_warm.rss_kb),
    );
    row(
        &format!("RSS 1 s after {} logins", seq.n + conc.n),
        format!(
            "{:.1} MB (peak {:.1} MB)",
            mb(rss_login.rss_kb),
            mb(rss_login.hwm_kb)
        ),
        "-",
    );
    row(
        "RSS 1 s after /api/auth/me load",
        format!(
            "{:.1} MB (peak {:.1} MB)",
            mb(rss_load.rss_kb),
            mb(rss_load.hwm_kb)
        ),
        "-",
    );
    row(
        &format!("idle RSS {} s later (end of run)", o.idle_wait_secs),
        format!("{:.1} MB", mb(rss_idle.rss_kb)),
        goal_rss(rss_idle.rss_kb),
    );
    row(
        "server threads: start / after logins / end",
        format!(
            "{} / {} / {}",
            rss_start.threads, rss_login.threads, rss_idle.threads
        ),
        "-",
    );
    row(
        &format!("login sequential ({} logins)", seq.n),
        format!("p50 {} / p99 {}", ms(seq.p50), ms(seq.p99)),
        "-",
    );
    row(
        "  max / throughput",
        format!("{} / {:.1} logins/s", ms(seq.max), seq.per_sec()),
        "-",
    );
    row(
        &format!("login 2 concurrent clients ({} logins)", conc.n),
        format!("p50 {} / p99 {}", ms(conc.p50), ms(conc.p99)),
        "-",
    );
    row(
        "  max / throughput",
        format!("{} / {:.1} logins/s", ms(conc.max), conc.per_sec()),
        "-",
    );
    row(
        &format!(
            "GET /api/auth/me ({}, c={}, {} s)",
            if load.tool == "wrk" {
                format!("wrk -t{}", o.threads)
            } else {
                "reqwest".into()
            },
            o.connections,
            o.duration_secs
        ),
        format!("{:.0} req/s", load.rps),
        "-",
    );
    row(
        "  latency p50 / p75",
        format!("{} / {}", load.p50, load.p75),
        "-",
    );
    row(
        "  latency p90 / p99",
        format!("{} / {}", load.p90, load.p99),
        "-",
    );
    row(
        "  requests / errors (non-2xx + socket)",
        format!("{} / {}", load.requests, load.errors),
        "0 errors",
    );
    println!("{}", "-".repeat(96));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "load generator: {}; it shares the machine's {cores} cores with the server.",
        load.tool
    );
    println!("health after the run: {health}");
    let load_after = load_avg();
    println!("1-minute load average before / after: {load_before} / {load_after}");
    if load_before.parse::<f64>().unwrap_or(0.0) > cores as f64 * 0.5 {
        println!(
            "WARNING: the machine was busy before the run (load {load_before} on {cores} cores); \
             the numbers are pessimistic"
        );
    }
    if load.errors > 0 || health != reqwest::StatusCode::OK {
        bail!("errors during the run (see above)");
    }
    Ok(())
}
