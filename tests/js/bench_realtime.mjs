// Load generator for examples/bench_realtime.rs: many stock socket.io-client sockets in one
// node process. The example writes a plan (JSON file, argv[2]) and drives the phases over
// stdin/stdout, one JSON object per line:
//   -> {"ev":"connected", ...}   every socket connected (no rooms yet); then waits for
//   <- {"cmd":"join"}            each socket joins its conversations
//   -> {"ev":"joined", ...}      then waits for
//   <- {"cmd":"run"}             `rate` send_message/s for `secs` seconds across the sockets,
//                                `reconnect` of them disconnect once and come back with
//                                join_conversation {sinceMessageId}
//   -> {"ev":"drained", ...}     sending stopped, every acknowledged message arrived (or the
//                                drain timed out); then waits for
//   <- {"cmd":"verify","truth":{conversationId: [message ids in seq order]}}
//   -> {"ev":"report", ...}      latencies, losses, duplicates, order violations; then exits.
// Plan: {base, clients: [{token, conversations: [id]}], rate, secs, reconnect, transports,
//        connectBatch, seed}.
import { io } from "socket.io-client";
import readline from "node:readline";
import fs from "node:fs";
import { performance } from "node:perf_hooks";

const plan = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const log = (...a) => process.stderr.write(`[bench_realtime.mjs] ${a.join(" ")}\n`);

// A small deterministic PRNG (mulberry32), so runs pick the same senders and reconnects.
let seed = plan.seed ?? 7;
const rand = () => {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};

/// Wall clock in ms with sub-ms precision (same clock as the server's createdAt).
const wallMs = () => performance.timeOrigin + performance.now();
/// createdAt ("...T09:15:00.123456789Z") as ms since the epoch, keeping the fraction.
function createdMs(s) {
  const m = /^(.*T\d\d:\d\d:\d\d)(\.\d+)?Z$/.exec(s);
  if (!m) return NaN;
  return Date.parse(m[1] + "Z") + (m[2] ? Number(m[2]) * 1000 : 0);
}

// ---------------------------------------------------------------------------------------
// Per-socket state.
const clients = plan.clients.map((c, i) => ({
  i,
  token: c.token,
  convs: c.conversations,
  socket: null,
  up: false, // connected and every conversation joined
  // Per conversation: ids in arrival order (replays included), the last id, the join-time
  // watermark (messages at or below it are not expected), live messages that arrived before
  // a join's ack (a server ordering bug if any), and whether a join is in flight.
  rx: new Map(),
  reconnects: 0,
  errors: [],
}));
for (const c of clients) {
  for (const id of c.convs) {
    c.rx.set(id, { ids: [], last: null, lastSeq: 0, base: null, joining: false, early: 0 });
  }
}

const sendTimes = new Map(); // clientId -> {t, sender}
const lat = { e2e: [], commit: [], ack: [] };
let live = 0;
let replayed = 0;
let earlyLive = 0;
let orderErrors = 0;
let connectErrors = 0;
let disconnectsUnplanned = 0;

function makeSocket(c) {
  const s = io(plan.base, {
    auth: { token: c.token },
    forceNew: true,
    reconnection: false,
    transports: plan.transports ?? ["websocket", "polling"],
    timeout: 60000,
  });
  s.on("new_message", (m) => onMessage(c, m));
  s.on("disconnect", (reason) => {
    c.up = false;
    if (reason !== "io client disconnect") {
      disconnectsUnplanned++;
      c.errors.push(`disconnect: ${reason}`);
    }
  });
  return s;
}

function onMessage(c, m) {
  const r = c.rx.get(m.conversationId);
  if (!r) return; // not one of its rooms (the server would be wrong to send it)
  if (r.joining) {
    // A live message before the join's ack: the replay would come after it.
    r.early++;
    earlyLive++;
  }
  if (r.lastSeq && m.seq !== r.lastSeq + 1) orderErrors++;
  r.ids.push(m.id);
  r.last = m.id;
  r.lastSeq = m.seq;
  live++;
  const now = performance.now();
  const sent = m.clientId ? sendTimes.get(m.clientId) : undefined;
  if (sent && sent.sender !== c.i) {
    lat.e2e.push(now - sent.t);
    lat.commit.push(wallMs() - createdMs(m.createdAt));
  }
}

function connect(c) {
  return new Promise((resolve) => {
    const s = makeSocket(c);
    c.socket = s;
    const fail = (err) => {
      connectErrors++;
      c.errors.push(`connect_error: ${err.message}`);
      s.off("connect", ok);
      resolve(false);
    };
    const ok = () => {
      s.off("connect_error", fail);
      resolve(true);
    };
    s.once("connect", ok);
    s.once("connect_error", fail);
  });
}

/// Joins one conversation, after the last message received (or from the start), following
/// `more` pages; appends the replay in order.
async function join(c, id) {
  const r = c.rx.get(id);
  r.joining = true;
  try {
    for (;;) {
      const data = { conversationId: id };
      if (r.last) data.sinceMessageId = r.last;
      const ack = await c.socket.timeout(30000).emitWithAck("join_conversation", data);
      if (!ack?.ok) throw new Error(`join refused: ${JSON.stringify(ack)}`);
      if (r.base === null) {
        // First join: what is already there is history, not expected traffic.
        r.base = 0;
        const msgs = ack.messages ?? [];
        if (msgs.length) {
          r.base = msgs[msgs.length - 1].seq;
          r.last = msgs[msgs.length - 1].id;
          r.lastSeq = r.base;
        }
        if (ack.more) throw new Error("first join has more than a page of history");
        return;
      }
      for (const m of ack.messages ?? []) {
        if (m.seq !== r.lastSeq + 1) orderErrors++;
        r.ids.push(m.id);
        r.last = m.id;
        r.lastSeq = m.seq;
        replayed++;
      }
      if (!ack.more) return;
    }
  } finally {
    r.joining = false;
  }
}

async function joinAll(c) {
  for (const id of c.convs) await join(c, id);
  c.up = true;
}

/// Runs `f` over `items`, `n` at a time.
async function pool(items, n, f) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const x = items[next++];
      await f(x);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
}

// ---------------------------------------------------------------------------------------
// The load.
let sent = 0;
let acked = 0;
let sendErrors = 0;
const ackedSeq = new Map(); // conversation -> highest acknowledged seq

async function sendOne(c, conv, n) {
  const clientId = `b${n}`;
  const t = performance.now();
  sendTimes.set(clientId, { t, sender: c.i });
  sent++;
  try {
    const ack = await c.socket
      .timeout(30000)
      .emitWithAck("send_message", { conversationId: conv, content: `load message ${n}`, clientId });
    if (!ack?.ok) throw new Error(JSON.stringify(ack));
    acked++;
    lat.ack.push(performance.now() - t);
    const seq = ack.message.seq;
    if ((ackedSeq.get(conv) ?? 0) < seq) ackedSeq.set(conv, seq);
  } catch (e) {
    sendErrors++;
    if (sendErrors <= 5) log(`send failed: ${e.message}`);
  }
}

async function reconnectLater(c, at, away) {
  await sleep(at);
  c.up = false;
  c.socket.disconnect();
  await sleep(away);
  if (!(await connect(c))) return;
  try {
    await joinAll(c);
    c.reconnects++;
  } catch (e) {
    c.errors.push(`rejoin: ${e.message}`);
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function run() {
  const secs = plan.secs;
  const period = 1000 / plan.rate;
  // Which sockets reconnect, when (10%..80% of the run) and for how long (1..8 s).
  const order = clients.map((c) => c.i).sort(() => rand() - 0.5);
  const nReconnect = Math.round(clients.length * plan.reconnect);
  const reconnecting = order.slice(0, nReconnect).map((i) =>
    reconnectLater(clients[i], (0.1 + 0.7 * rand()) * secs * 1000, 1000 + 7000 * rand()),
  );
  const inflight = [];
  const t0 = performance.now();
  let n = 0;
  let skipped = 0;
  while (performance.now() - t0 < secs * 1000) {
    // Catch up to the schedule (timers are coarse under load), never run ahead of it.
    const due = Math.floor((performance.now() - t0) / period);
    while (n < due) {
      n++;
      // A random socket that is up speaks (one that is away reconnecting is skipped).
      let c = null;
      for (let k = 0; k < 20 && !c; k++) {
        const x = clients[Math.floor(rand() * clients.length)];
        if (x.up && x.convs.length) c = x;
        else skipped++;
      }
      if (!c) continue;
      inflight.push(sendOne(c, c.convs[Math.floor(rand() * c.convs.length)], n));
    }
    await sleep(Math.max(1, period / 2));
  }
  const sendSecs = (performance.now() - t0) / 1000;
  await Promise.all(inflight);
  await Promise.all(reconnecting);
  // Drain: every socket has every acknowledged message of its rooms (bounded wait).
  const deadline = performance.now() + 30000;
  const behind = () =>
    clients.filter((c) => c.convs.some((id) => (c.rx.get(id).lastSeq ?? 0) < (ackedSeq.get(id) ?? 0)))
      .length;
  while (behind() > 0 && performance.now() < deadline) await sleep(50);
  out({
    ev: "drained",
    sent,
    acked,
    sendErrors,
    sendSecs,
    behind: behind(),
    skipped,
    reconnects: clients.reduce((a, c) => a + c.reconnects, 0),
  });
}

// ---------------------------------------------------------------------------------------
function pct(xs, p) {
  if (!xs.length) return null;
  const s = Float64Array.from(xs).sort();
  return s[Math.min(s.length, Math.max(1, Math.ceil((p / 100) * s.length))) - 1];
}
const summary = (xs) => ({
  n: xs.length,
  p50: pct(xs, 50),
  p90: pct(xs, 90),
  p99: pct(xs, 99),
  max: xs.length ? Math.max(...xs) : null,
});

function verify(truth) {
  let lost = 0;
  let dup = 0;
  let misordered = 0;
  let checked = 0;
  let pairs = 0;
  const bad = [];
  for (const c of clients) {
    for (const [id, r] of c.rx) {
      const all = truth[id];
      if (!all) continue;
      pairs++;
      const expected = all.slice(r.base ?? 0);
      checked += expected.length;
      const seen = new Set(r.ids);
      const l = expected.filter((x) => !seen.has(x)).length;
      const d = r.ids.length - seen.size;
      const exp = new Set(expected);
      const foreign = r.ids.filter((x) => !exp.has(x)).length;
      // In order: the received list, without duplicates, is the expected list.
      const uniq = [...new Set(r.ids)];
      const ordered = l === 0 && foreign === 0 && uniq.every((x, k) => x === expected[k]);
      lost += l;
      dup += d + foreign;
      if (!ordered && l === 0) misordered++;
      if ((l || d || foreign || !ordered) && bad.length < 5) {
        bad.push({ socket: c.i, conversation: id, expected: expected.length, got: r.ids.length, lost: l, dup: d, foreign });
      }
    }
  }
  return { pairs, checked, lost, dup, misordered, bad };
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", async (line) => {
  if (!line.trim()) return;
  const cmd = JSON.parse(line);
  try {
    if (cmd.cmd === "join") {
      const t = performance.now();
      await pool(clients, 50, (c) => joinAll(c));
      out({ ev: "joined", ms: performance.now() - t });
    } else if (cmd.cmd === "run") {
      await run();
    } else if (cmd.cmd === "verify") {
      const v = verify(cmd.truth);
      out({
        ev: "report",
        latency: { e2e: summary(lat.e2e), commit: summary(lat.commit), ack: summary(lat.ack) },
        live,
        replayed,
        earlyLive,
        orderErrors,
        connectErrors,
        disconnectsUnplanned,
        ...v,
        errors: clients.flatMap((c) => c.errors.map((e) => `socket ${c.i}: ${e}`)).slice(0, 10),
      });
      for (const c of clients) c.socket?.disconnect();
      setTimeout(() => process.exit(0), 200);
    }
  } catch (e) {
    out({ ev: "fatal", message: String(e?.stack ?? e) });
    process.exit(1);
  }
});

// Connect everything first (no rooms: idle sockets).
const t = performance.now();
await pool(clients, plan.connectBatch ?? 50, (c) => connect(c));
out({
  ev: "connected",
  ok: clients.filter((c) => c.socket?.connected).length,
  failed: connectErrors,
  ms: performance.now() - t,
  errors: clients.flatMap((c) => c.errors).slice(0, 5),
});
