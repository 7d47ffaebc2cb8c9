// The web widget in headless Chromium against the real server (driven by
// tests/integration/widget_browser.rs, which starts the server, the fake model and a web
// channel, then runs `node widget_browser.mjs` here with the environment below).
//
// 1. The preview page (served by the binary under a strict CSP): the launcher paints, styled,
//    and the time of its first paint is measured.
// 2. A shop's page on another origin (HOST_ORIGIN/, served by the test, with a strict CSP
//    that allows only the chat server) embeds the script tag. A visitor asks a question and
//    watches the answer stream in, with its source; a staff socket (socket.io-client) sees
//    the conversation, takes it over (assigns it to itself), types and replies; the visitor
//    sees the notice, the typing and the reply; after a dropped connection the reply sent
//    meanwhile (replayed, exactly once); the unread badge while the window is closed, the
//    history after a reload; and rates the closed conversation, with a comment.
//
// Env: BASE, HOST_ORIGIN, WIDGET_KEY, STAFF_TOKEN, STAFF_USER_ID, CHROMIUM, SCREENSHOT (png
// path), QUESTION, ANSWER, HUMAN_REPLY, CITATION (the document the answer cites). Prints
// `RESULT {json}` on success; any failure prints `FAIL <why>` and exits 1.

import { chromium } from "playwright-core";
import { io } from "socket.io-client";

const env = (k) => {
  const v = process.env[k];
  if (!v) fail(`missing env ${k}`);
  return v;
};
function fail(why) {
  console.error(`FAIL ${why}`);
  process.exit(1);
}
// A bound on the whole run, so a broken server fails the test instead of hanging it.
setTimeout(() => fail("the scenario did not finish within 120 s"), 120_000).unref();

const BASE = env("BASE");
const HOST_ORIGIN = env("HOST_ORIGIN");
const WS_BASE = BASE.replace(/^http/, "ws");
const KEY = env("WIDGET_KEY");
const QUESTION = env("QUESTION");
const ANSWER = env("ANSWER");
const HUMAN_REPLY = env("HUMAN_REPLY");
const WAIT = { timeout: 30_000 };
const MISSED = "Are you still there? (sent while you were offline)";

/** The next `event` on `sock` whose payload passes `pred`. */
function next(sock, event, pred = () => true) {
  return new Promise((resolve) => {
    const h = (d) => {
      if (pred(d)) {
        sock.off(event, h);
        resolve(d);
      }
    };
    sock.on(event, h);
  });
}

async function ack(sock, event, payload) {
  const r = await sock.timeout(15_000).emitWithAck(event, payload);
  if (!r || !r.ok) fail(`${event} was refused: ${JSON.stringify(r)}`);
  return r;
}

// ---- staff: a socket in the tenant room, like the live inbox.
const staff = io(BASE, { auth: { token: env("STAFF_TOKEN") }, transports: ["websocket"] });
await new Promise((resolve) => {
  staff.once("connect", resolve);
  staff.once("connect_error", (e) => fail(`staff socket refused: ${e.message} ${JSON.stringify(e.data)}`));
});
const newConversation = next(staff, "new_conversation");

// ---- visitor: the preview page in Chromium.
const browser = await chromium.launch({
  executablePath: env("CHROMIUM"),
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const result = {};
try {
  const context = await browser.newContext({ viewport: { width: 1000, height: 760 } });
  const page = await context.newPage();
  const problems = [];
  // Network errors are expected while the test takes the visitor offline, nothing else.
  let dropping = false;
  page.on("console", (m) => {
    if (dropping && /ERR_INTERNET_DISCONNECTED|WebSocket|Failed to load resource/.test(m.text())) return;
    if (m.type() === "error" || m.type() === "warning") problems.push(`console ${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("request", (r) => {
    const u = r.url();
    if (!u.startsWith(BASE) && !u.startsWith(WS_BASE) && !u.startsWith(HOST_ORIGIN)) {
      problems.push(`third-party request: ${u}`);
    }
  });
  // Before any page script: CSP violations, and the frame in which the launcher is first
  // laid out (the time of the following frame ~ its first paint), from navigation start.
  await context.addInitScript(() => {
    window.__csp = [];
    document.addEventListener("securitypolicyviolation", (e) =>
      window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`),
    );
    const tick = () => {
      const host = document.querySelector("[data-aigentable]");
      const l = host && host.shadowRoot && host.shadowRoot.querySelector(".launcher");
      if (l && l.getBoundingClientRect().width > 0) {
        requestAnimationFrame(() => (window.__launcherPaint = performance.now()));
        return;
      }
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  });

  const url = `${BASE}/widget/${KEY}/preview`;
  const resp = await page.goto(url);
  const csp = resp.headers()["content-security-policy"] || "";
  if (!csp.includes("script-src 'self'") || csp.includes("unsafe-inline") || csp.includes("unsafe-eval")) {
    fail(`the preview page is not under a strict CSP: ${csp}`);
  }
  const launcher = page.locator("[data-aigentable] .launcher");
  await launcher.waitFor({ state: "visible", ...WAIT });
  await page.waitForFunction(() => window.__launcherPaint !== undefined, null, WAIT);
  result.launcherPaintMs = await page.evaluate(() => Math.round(window.__launcherPaint));
  result.firstContentfulPaintMs = await page.evaluate(() => {
    const e = performance.getEntriesByName("first-contentful-paint")[0];
    return e ? Math.round(e.startTime) : null;
  });
  // Styled although the page allows no inline styles: constructable stylesheets.
  const look = await launcher.evaluate((el) => {
    const s = getComputedStyle(el);
    return { width: s.width, radius: s.borderRadius, bg: s.backgroundColor };
  });
  if (look.width !== "56px" || look.radius !== "50%") fail(`launcher not styled: ${JSON.stringify(look)}`);
  result.launcherColour = look.bg;
  const previewViolations = await page.evaluate(() => window.__csp);
  if (previewViolations.length) fail(`CSP violations on the preview page: ${previewViolations.join("; ")}`);

  // The visitor's network, switchable: while `offline`, nothing reaches the chat server
  // (HTTP requests fail, WebSockets are closed at once), as when a phone loses signal.
  let offline = false;
  const sockets = new Set();
  await context.route(`${BASE}/**`, (route) => (offline ? route.abort("internetdisconnected") : route.continue()));
  await context.routeWebSocket(/\/socket\.io\//, (ws) => {
    if (offline) return ws.close();
    ws.connectToServer();
    sockets.add(ws);
  });

  // The shop's page on its own origin.
  await page.goto(`${HOST_ORIGIN}/`);
  await launcher.waitFor({ state: "visible", ...WAIT });

  // Open, ask.
  await launcher.click();
  const win = page.locator("[data-aigentable] .win");
  await win.waitFor({ state: "visible", ...WAIT });
  if ((await launcher.getAttribute("aria-expanded")) !== "true") fail("launcher aria-expanded not true");
  const input = page.locator("[data-aigentable] textarea");
  await input.fill(QUESTION);
  await input.press("Enter");

  const conv = (await newConversation).conversation;
  if (!conv || !conv.id) fail("the staff socket got no new_conversation");
  result.conversationId = conv.id;

  // Record every state of the streaming bubble (deltas arrive in separate frames).
  await page.evaluate(() => {
    const root = document.querySelector("[data-aigentable]").shadowRoot;
    window.__partials = [];
    new MutationObserver(() => {
      for (const el of root.querySelectorAll(".m.streaming")) window.__partials.push(el.textContent);
    }).observe(root, { subtree: true, childList: true, characterData: true, attributes: true });
  });
  const ai = page.locator('[data-aigentable] .m[data-role="ai"]:not(.streaming)');
  await ai.filter({ hasText: ANSWER }).first().waitFor(WAIT);
  const partials = [...new Set(await page.evaluate(() => window.__partials))].filter((p) => p !== ANSWER);
  if (partials.length < 2 || !partials.every((p) => ANSWER.startsWith(p))) {
    fail(`the answer did not stream in (partial states seen: ${JSON.stringify(partials)})`);
  }
  result.streamedStates = partials.length;
  // Its source, as a small link-like chip under the answer.
  const cite = ai.filter({ hasText: ANSWER }).first().locator(".cite");
  if ((await cite.allTextContents()).join(" ") !== env("CITATION")) {
    fail(`the answer's sources show ${JSON.stringify(await cite.allTextContents())}, not ${env("CITATION")}`);
  }

  // Typing both ways: the visitor's reaches staff, staff's shows in the widget.
  const visitorTyping = next(staff, "user_typing", (d) => d.conversationId === conv.id && d.typing && d.who?.kind === "customer");
  await ack(staff, "join_conversation", { conversationId: conv.id });
  await input.pressSequentially("thanks", { delay: 20 });
  await visitorTyping;
  await input.fill("");

  // A person takes over (the inbox's "assign to me"): the visitor is told.
  const taken = await fetch(`${BASE}/api/conversations/${conv.id}/assign`, {
    method: "PUT",
    headers: { Authorization: `Bearer ${process.env.STAFF_TOKEN}`, "Content-Type": "application/json" },
    body: JSON.stringify({ userId: env("STAFF_USER_ID") }),
  });
  if (!taken.ok) fail(`assigning the conversation: ${taken.status} ${await taken.text()}`);
  await page.locator("[data-aigentable] .note").filter({ hasText: "A person from our team has joined" }).waitFor(WAIT);
  await page.locator("[data-aigentable] .head p").filter({ hasText: "chatting with our team" }).waitFor(WAIT);

  // The person types, then replies over the socket.
  staff.emit("typing_start", { conversationId: conv.id });
  await page.locator("[data-aigentable] .typing").filter({ hasText: "is typing" }).waitFor({ state: "visible", ...WAIT });
  await ack(staff, "send_message", { conversationId: conv.id, content: HUMAN_REPLY, clientId: "staff-reply-1" });
  await page.locator('[data-aigentable] .m[data-role="human"]').filter({ hasText: HUMAN_REPLY }).waitFor(WAIT);
  await page.locator("[data-aigentable] .typing").waitFor({ state: "hidden", ...WAIT });
  await page.screenshot({ path: env("SCREENSHOT") });

  // The connection drops; a reply committed meanwhile arrives once the widget is back
  // (replayed after the last message it saw), exactly once.
  dropping = offline = true;
  for (const ws of sockets) await ws.close();
  sockets.clear();
  const banner = page.locator("[data-aigentable] .banner");
  await banner.filter({ hasText: "onnect" }).waitFor({ state: "visible", ...WAIT });
  await ack(staff, "send_message", { conversationId: conv.id, content: MISSED, clientId: "staff-while-offline" });
  offline = false;
  await page.locator('[data-aigentable] .m[data-role="human"]').filter({ hasText: MISSED }).waitFor(WAIT);
  await banner.waitFor({ state: "hidden", ...WAIT });
  dropping = false;

  // Escape closes; a reply while closed shows on the launcher's badge.
  await input.focus();
  await page.keyboard.press("Escape");
  await win.waitFor({ state: "hidden", ...WAIT });
  await ack(staff, "send_message", { conversationId: conv.id, content: "Anything else?", clientId: "staff-reply-2" });
  const badge = page.locator("[data-aigentable] .badge");
  await badge.filter({ hasText: "1" }).waitFor({ state: "visible", ...WAIT });

  // The session survives a reload: same conversation, history restored, nothing doubled.
  await page.reload();
  await launcher.waitFor({ state: "visible", ...WAIT });
  await launcher.click();
  await page.locator('[data-aigentable] .m[data-role="human"]').filter({ hasText: "Anything else?" }).waitFor(WAIT);
  const texts = await page.locator("[data-aigentable] .m[data-id]").allTextContents();
  for (const t of [QUESTION, ANSWER, HUMAN_REPLY, MISSED, "Anything else?"]) {
    const n = texts.filter((x) => x.includes(t)).length;
    if (n !== 1) fail(`after a reload "${t}" shows ${n} times: ${JSON.stringify(texts)}`);
  }

  // Closing the conversation asks for a rating; the rating is stored.
  const closed = await fetch(`${BASE}/api/conversations/${conv.id}/close`, {
    method: "PUT",
    headers: { Authorization: `Bearer ${process.env.STAFF_TOKEN}` },
  });
  if (!closed.ok) fail(`closing the conversation: ${closed.status} ${await closed.text()}`);
  await page.locator("[data-aigentable] .csat").waitFor(WAIT);
  await page.locator('[data-aigentable] .csat button[aria-label="5 of 5"]').click();
  await page.locator("[data-aigentable] .csat").filter({ hasText: "Thank you" }).waitFor(WAIT);
  await page.locator('[data-aigentable] .csat textarea[aria-label="Comment (optional)"]').fill("Quick and friendly.");
  await page.locator("[data-aigentable] .csat button", { hasText: "Send" }).click();
  await page.locator("[data-aigentable] .csat").filter({ hasText: "we got your comment" }).waitFor(WAIT);

  const violations = await page.evaluate(() => window.__csp);
  if (violations.length) fail(`CSP violations on the shop's page: ${violations.join("; ")}`);
  if (problems.length) fail(problems.join("; "));
  console.log(`RESULT ${JSON.stringify(result)}`);
} finally {
  staff.close();
  await browser.close();
}
process.exit(0);
