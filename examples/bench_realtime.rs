//! Realtime benchmark (issue 9): many concurrent Socket.IO sockets, messages sent over them
//! at a fixed rate, with a share of the sockets reconnecting mid-run. Measures delivery
//! latency (send -> receipt, and the message's commit timestamp -> receipt, at the other
//! sockets of the room), server RSS per idle socket, and checks that every socket received
//! every committed message of its rooms exactly once, in `seq` order (replays after a
//! reconnect included), against the store.
//!
//! ```text
//! (cd tests/js && npm ci)
//! cargo run --release --example bench_realtime -- [options]
//! ```
//!
//! Options (all optional):
//!
//! * `--sockets N`       concurrent sockets (default 1000)
//! * `--tenants N`       tenants; the sockets are spread evenly (default 100: 10 staff
//!   sockets per tenant, under the default SOCKET_MAX_PER_USER of 20)
//! * `--room-size N`     sockets joined to each conversation (default 2)
//! * `--rate N`          send_message per second across all sockets (default 200)
//! * `--secs N`          duration of the load (default 60)
//! * `--reconnect F`     share of sockets that disconnect once and come back with
//!   `join_conversation {sinceMessageId}` (default 0.10)
//! * `--transports LIST` socket.io-client transports in order (default `websocket,polling`,
//!   what the widget uses: WebSocket first, long polling as fallback; `polling,websocket`
//!   is the client library's default: a long-polling handshake, then the upgrade)
//! * `--settle-secs N`   wait before each RSS reading (default 12: tokio's idle blocking
//!   threads, spawned by the connects' token checks, exit after 10 s and take their stacks)
//! * `--node PATH`       node binary (default `node`)
//! * `--idle-only`       stop after the memory readings of idle sockets, without freeing
//!   anything (`std::process::exit` with the sockets connected: under heaptrack, what is
//!   "leaked" is what the connected sockets hold)
//!
//! The server runs in this process (`aigentable::build`, 127.0.0.1 only) and the clients in
//! a node child process (stock socket.io-client 4, `tests/js/bench_realtime.mjs`), so this
//! process's RSS is the server's. Sockets are staff sockets (access tokens of each tenant's
//! admin), so each also gets its tenant's `conversation_update`/`presence` events; messages
//! are human replies (`send_message`), so no model is called. Every phase is bounded.

use aigentable::config::Config;
use aigentable::types::ConversationId;
use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Upper bound of any phase of the node driver (connect, join, drain, verify).
const PHASE_TIMEOUT: Duration = Duration::from_secs(300);

struct Opts {
    sockets: usize,
    tenants: usize,
    room_size: usize,
    rate: u32,
    secs: u64,
    reconnect: f64,
    transports: Vec<String>,
    settle: Duration,
    node: String,
    idle_only: bool,
}

fn parse_args() -> Result<Opts> {
    let mut o = Opts {
        sockets: 1000,
        tenants: 100,
        room_size: 2,
        rate: 200,
        secs: 60,
        reconnect: 0.10,
        transports: vec!["websocket".into(), "polling".into()],
        settle: Duration::from_secs(12),
        node: "node".into(),
        idle_only: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| anyhow!("{name} needs a value"));
        match a.as_str() {
            "--sockets" => o.sockets = value("--sockets")?.parse()?,
            "--tenants" => o.tenants = value("--tenants")?.parse()?,
            "--room-size" => o.room_size = value("--room-size")?.parse()?,
            "--rate" => o.rate = value("--rate")?.parse()?,
            "--secs" => o.secs = value("--secs")?.parse()?,
            "--reconnect" => o.reconnect = value("--reconnect")?.parse()?,
            "--transports" => {
                o.transports = value("--transports")?
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .collect()
            }
            "--settle-secs" => o.settle = Duration::from_secs(value("--settle-secs")?.parse()?),
            "--node" => o.node = value("--node")?,
            "--idle-only" => o.idle_only = true,
            "-h" | "--help" => {
                println!(
                    "usage: bench_realtime [options]; see the top of examples/bench_realtime.rs"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}` (try --help)"),
        }
    }
    o.sockets = o.sockets.clamp(1, 20_000);
    o.tenants = o.tenants.clamp(1, o.sockets);
    o.room_size = o.room_size.clamp(1, 20);
    o.rate = o.rate.clamp(1, 10_000);
    o.secs = o.secs.clamp(1, 3600);
    o.reconnect = o.reconnect.clamp(0.0, 1.0);
    if o.transports
        .iter()
        .any(|t| t != "polling" && t != "websocket")
    {
        bail!("--transports takes polling and/or websocket");
    }
    Ok(o)
}

/// A process's resident set in KiB, from /proc (NaN when unavailable).
fn rss_kib(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .unwrap_or(f64::NAN)
}

/// User + system CPU time of a process so far (USER_HZ = 100).
fn cpu_time(pid: &str) -> Duration {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i).and_then(|x| x.parse::<u64>().ok()))
        .sum();
    Duration::from_millis(ticks * 10)
}

/// The 1-minute load average.
fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Median of a few RSS readings of this process, `settle` after the last change.
async fn settled_rss(settle: Duration) -> f64 {
    tokio::time::sleep(settle).await;
    let mut xs = Vec::new();
    for _ in 0..5 {
        xs.push(rss_kib("self"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// The node driver: its stdin for commands and its stdout lines as JSON events.
struct Driver {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Driver {
    async fn send(&mut self, v: &Value) -> Result<()> {
        let mut line = serde_json::to_vec(v)?;
        line.push(b'\n');
        self.stdin.write_all(&line).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// The next event named `ev` (other lines are skipped).
    async fn expect(&mut self, ev: &str) -> Result<Value> {
        let wait = async {
            while let Some(line) = self.lines.next_line().await? {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if v["ev"] == "fatal" {
                    bail!("node driver failed: {}", v["message"]);
                }
                if v["ev"] == ev {
                    return Ok(v);
                }
            }
            bail!("node driver exited before `{ev}`")
        };
        tokio::time::timeout(PHASE_TIMEOUT, wait)
            .await
            .map_err(|_| anyhow!("node driver: no `{ev}` within {PHASE_TIMEOUT:?}"))?
    }
}

fn f(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".into(), |x| format!("{x:.1}"))
}

fn lat_row(name: &str, v: &Value) -> String {
    format!(
        "| {name} | {} | {} | {} | {} | {} |",
        v["n"],
        f(&v["p50"]),
        f(&v["p90"]),
        f(&v["p99"]),
        f(&v["max"])
    )
}

#[tokio::main]
async fn main() -> Result<()> {
    let o = parse_args()?;
    let wall = Instant::now();
    let js_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    if !js_dir.join("node_modules/socket.io-client").is_dir() {
        bail!("tests/js has no node_modules: run `npm ci` in tests/js first");
    }
    let dir = tempfile::tempdir().context("temp data dir")?;
    let per_tenant = o.sockets.div_ceil(o.tenants);
    let cfg = Config {
        data_dir: dir.path().join("data"),
        rate_limit_auth_per_min: 0,
        rate_limit_api_per_min: 0,
        rate_limit_upload_per_min: 0,
        jwt_expires_in: "4h".into(),
        job_workers: 1,
        log_level: "warn".into(),
        shutdown_timeout_secs: 5,
        // Only raised when the layout needs more sockets per person than the default.
        socket_max_per_user: Config::default().socket_max_per_user.max(per_tenant),
        ..Config::default()
    };
    let app = aigentable::build(cfg.clone()).await?;
    let svc = app.state.svc.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        aigentable::serve_with_listener(app, listener, async {
            let _ = stop_rx.await;
        })
        .await
    });
    let http = reqwest::Client::new();

    // Tenants, each with its admin, an agent (no model: only human replies are sent) and
    // its conversations; socket k of a tenant joins conversation k / room_size.
    eprintln!("seeding {} tenants ...", o.tenants);
    let mut clients = Vec::with_capacity(o.sockets);
    let mut tenants: Vec<(String, Vec<ConversationId>)> = Vec::new();
    let mut left = o.sockets;
    for t in 0..o.tenants {
        let n = left.div_ceil(o.tenants - t);
        left -= n;
        let post = |path: String, token: Option<String>, body: Value| {
            let rb = http.post(format!("{base}{path}")).json(&body);
            let rb = match token {
                Some(t) => rb.bearer_auth(t),
                None => rb,
            };
            async move {
                let r = rb.send().await?;
                let status = r.status();
                let v: Value = r.json().await?;
                if !status.is_success() {
                    bail!("{path}: {status}: {v}");
                }
                Ok::<_, anyhow::Error>(v)
            }
        };
        let reg = post(
            "/api/auth/register".into(),
            None,
            json!({"email": format!("bench{t}@example.com"), "password": "bench-password-123",
                "name": format!("Agent {t}"), "tenantName": format!("Bench {t}")}),
        )
        .await?;
        let token = reg["accessToken"]
            .as_str()
            .ok_or_else(|| anyhow!("no access token in {reg}"))?
            .to_string();
        let agent = post(
            "/api/agents".into(),
            Some(token.clone()),
            json!({"name": "Support"}),
        )
        .await?;
        let mut convs = Vec::new();
        for _ in 0..n.div_ceil(o.room_size) {
            let c = post(
                "/api/conversations".into(),
                Some(token.clone()),
                json!({"agentId": agent["id"]}),
            )
            .await?;
            convs.push(
                c["id"]
                    .as_str()
                    .and_then(ConversationId::parse)
                    .ok_or_else(|| anyhow!("no conversation id in {c}"))?,
            );
        }
        for k in 0..n {
            clients.push(json!({"token": token, "conversations": [convs[k / o.room_size]]}));
        }
        tenants.push((token, convs));
    }
    let plan = json!({
        "base": base,
        "clients": clients,
        "rate": o.rate,
        "secs": o.secs,
        "reconnect": o.reconnect,
        "transports": o.transports,
        "connectBatch": 50,
        "seed": 7,
    });
    let plan_path = dir.path().join("plan.json");
    std::fs::write(&plan_path, serde_json::to_vec(&plan)?)?;

    let load_before = load_avg();
    let rss0 = settled_rss(o.settle).await;
    let mut child = tokio::process::Command::new(&o.node)
        .arg("bench_realtime.mjs")
        .arg(&plan_path)
        .current_dir(&js_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", o.node))?;
    let node_pid = child.id().map(|p| p.to_string()).unwrap_or_default();
    let mut d = Driver {
        stdin: child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?,
        lines: BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?).lines(),
        child,
    };

    // (1) Idle sockets: connected and authenticated, no rooms joined.
    let connected = d.expect("connected").await?;
    if connected["failed"].as_u64() != Some(0) {
        bail!("sockets failed to connect: {connected}");
    }
    let rss1 = settled_rss(o.settle).await;
    d.send(&json!({"cmd": "join"})).await?;
    let joined = d.expect("joined").await?;
    let rss2 = settled_rss(o.settle).await;
    if o.idle_only {
        let per = |r: f64| (r - rss0) * 1.024 / o.sockets as f64;
        println!(
            "RSS MiB: before {:.1}, {} idle sockets {:.1} ({:.1} kB per socket), joined {:.1} \
             ({:.1} kB per socket); transports {}, {} tenants; load average {}",
            rss0 / 1024.0,
            o.sockets,
            rss1 / 1024.0,
            per(rss1),
            rss2 / 1024.0,
            per(rss2),
            o.transports.join("+"),
            o.tenants,
            load_avg()
        );
        std::process::exit(0);
    }

    // (2) The load.
    let cpu0 = cpu_time("self");
    let node_cpu0 = cpu_time(&node_pid);
    let t0 = Instant::now();
    d.send(&json!({"cmd": "run"})).await?;
    let drained = d.expect("drained").await?;
    let run_secs = t0.elapsed().as_secs_f64();
    let server_cpu = cpu_time("self").saturating_sub(cpu0);
    let node_cpu = cpu_time(&node_pid).saturating_sub(node_cpu0);
    let load_after = load_avg();
    let rss3 = rss_kib("self");

    // (3) What the store committed, per conversation in seq order: the truth every
    // receiver is checked against.
    let mut truth = BTreeMap::new();
    let mut committed = 0usize;
    for (token, convs) in &tenants {
        let caller = svc
            .authenticate_access(token)
            .map_err(|e| anyhow!("authenticating a bench admin: {e}"))?;
        for c in convs {
            let mut ids = Vec::new();
            let mut after = 0u64;
            loop {
                let r = svc
                    .messages_after_seq(&caller, c, after, 1000)
                    .map_err(|e| anyhow!("reading messages: {e}"))?;
                for m in &r.messages {
                    if m.seq != after + 1 {
                        bail!("conversation {c}: seq {} after {after}", m.seq);
                    }
                    after = m.seq;
                    ids.push(m.id.to_string());
                }
                if !r.more {
                    break;
                }
            }
            committed += ids.len();
            truth.insert(c.to_string(), ids);
        }
    }
    d.send(&json!({"cmd": "verify", "truth": truth})).await?;
    let rep = d.expect("report").await?;
    let _ = tokio::time::timeout(Duration::from_secs(10), d.child.wait()).await;

    // Results.
    let n = o.sockets as f64;
    println!("## Realtime (bench_realtime)\n");
    println!(
        "- layout: {} sockets (transports {}), {} tenants x ~{} staff sockets, rooms of {} \
         sockets ({} conversations); {} send_message/s for {} s; {:.0}% of sockets reconnect \
         once (1-8 s away) and rejoin with sinceMessageId",
        o.sockets,
        o.transports.join("+"),
        o.tenants,
        per_tenant,
        o.room_size,
        tenants.iter().map(|(_, c)| c.len()).sum::<usize>(),
        o.rate,
        o.secs,
        o.reconnect * 100.0
    );
    println!(
        "- machine: load average (1 min) {load_before} before, {load_after} after the load; \
         server CPU {:.1} s, node CPU {:.1} s over {:.1} s of load and drain",
        server_cpu.as_secs_f64(),
        node_cpu.as_secs_f64(),
        run_secs
    );
    println!(
        "- connect: {} sockets in {:.0} ms; joins in {:.0} ms",
        connected["ok"],
        f64_of(&connected["ms"]),
        f64_of(&joined["ms"])
    );
    println!("\n### Memory (server RSS, this process)\n");
    println!("| state | RSS MiB | per socket kB (vs before) |\n|---|---|---|");
    println!("| before any socket | {:.1} | - |", rss0 / 1024.0);
    let per = |r: f64| (r - rss0) * 1.024 / n;
    println!(
        "| {} idle sockets (connected, no room) | {:.1} | {:.1} |",
        o.sockets,
        rss1 / 1024.0,
        per(rss1)
    );
    println!(
        "| same, each joined to its conversation | {:.1} | {:.1} |",
        rss2 / 1024.0,
        per(rss2)
    );
    println!(
        "| after the load | {:.1} | {:.1} |",
        rss3 / 1024.0,
        per(rss3)
    );
    println!(
        "\n### Delivery latency (ms, at the other sockets of the room; live deliveries only)\n"
    );
    println!("| measure | n | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|");
    println!(
        "{}",
        lat_row(
            "send_message emitted -> new_message received (goal p99 < 50)",
            &rep["latency"]["e2e"]
        )
    );
    println!(
        "{}",
        lat_row(
            "message createdAt (in the write transaction) -> received",
            &rep["latency"]["commit"]
        )
    );
    println!(
        "{}",
        lat_row(
            "send_message emitted -> ack (stored message)",
            &rep["latency"]["ack"]
        )
    );
    println!("\n### Delivery check (against the store)\n");
    println!(
        "- sent {}, acknowledged {}, send errors {}, committed in the store {} (history \
         included); {} live deliveries, {} replayed in join acks after {} reconnects",
        drained["sent"],
        drained["acked"],
        drained["sendErrors"],
        committed,
        rep["live"],
        rep["replayed"],
        drained["reconnects"]
    );
    println!(
        "- (socket, conversation) pairs checked {}, messages expected {}: **lost {}, duplicated \
         {}, out of order {}** (arrival-order violations {}, live messages before a join's ack \
         {}); sockets still behind at the end of the drain {}; unplanned disconnects {}",
        rep["pairs"],
        rep["checked"],
        rep["lost"],
        rep["dup"],
        rep["misordered"],
        rep["orderErrors"],
        rep["earlyLive"],
        drained["behind"],
        rep["disconnectsUnplanned"]
    );
    if rep["bad"].as_array().is_some_and(|b| !b.is_empty()) {
        println!("- examples: {}", rep["bad"]);
    }
    if rep["errors"].as_array().is_some_and(|b| !b.is_empty()) {
        println!("- client errors: {}", rep["errors"]);
    }
    println!("\n(total wall time {:.0} s)", wall.elapsed().as_secs_f64());
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(15), server).await;
    let ok = rep["lost"] == 0 && rep["dup"] == 0 && rep["misordered"] == 0;
    if !ok {
        bail!("messages were lost, duplicated or out of order (see above)");
    }
    Ok(())
}

fn f64_of(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}
