// Who the visitor is, in headless Chromium (driven by tests/integration/widget_browser.rs):
// the shop's pages on HOST_ORIGIN embed a widget whose channel asks for a name before the
// chat and verifies identities optionally. Each visitor is a fresh browser profile.
//
// 1. `/`: an anonymous visitor gets the pre-chat form, gives name and email, and chats.
// 2. `/signed-in`: the site's own script calls `aigentable('identify', ...)` with the HMAC
//    its server computed (queued before widget.js loaded): no form, the chat just works.
// 3. `/forged`: the same call with a wrong hash: the widget says it could not verify the
//    sign-in and opens no conversation.
// 4. A stored visitor token the server does not know: forgotten, and the chat starts afresh.
//
// Env: BASE, HOST_ORIGIN, WIDGET_KEY, CHROMIUM, SCREENSHOT_PRECHAT. Prints `RESULT {json}` on success; any failure prints
// `FAIL <why>` and exits 1. The test checks the conversations on the server afterwards.

import { chromium } from "playwright-core";

function fail(why) {
  console.error(`FAIL ${why}`);
  process.exit(1);
}
setTimeout(() => fail("the scenario did not finish within 120 s"), 120_000).unref();
const env = (k) => process.env[k] || fail(`missing env ${k}`);
const BASE = env("BASE");
const HOST = env("HOST_ORIGIN");
const WAIT = { timeout: 30_000 };

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

/** A fresh visitor (own profile) on `path`, with the widget opened. */
async function visit(path) {
  const context = await browser.newContext({ viewport: { width: 420, height: 800 } });
  const page = await context.newPage();
  page.warnings = [];
  page.on("console", (m) => m.type() === "warning" && page.warnings.push(m.text()));
  page.on("pageerror", (e) => fail(`page error on ${path}: ${e.message}`));
  await page.goto(`${HOST}${path}`);
  const launcher = page.locator("[data-aigentable] .launcher");
  await launcher.waitFor({ state: "visible", ...WAIT });
  await launcher.click();
  await page.locator("[data-aigentable] .win").waitFor({ state: "visible", ...WAIT });
  return { context, page };
}

async function ask(page, text) {
  const input = page.locator("[data-aigentable] textarea");
  await input.waitFor({ state: "visible", ...WAIT });
  await input.fill(text);
  await input.press("Enter");
  await page.locator('[data-aigentable] .m[data-role="ai"]:not(.streaming)').filter({ hasText: `Echo: ${text}` }).waitFor(WAIT);
}

const result = {};
try {
  // 1. Anonymous: the form first (the name is required, the composer hidden until then).
  {
    const { context, page } = await visit("/");
    const form = page.locator('[data-aigentable] form[aria-label="Before we start"]');
    await form.waitFor({ state: "visible", ...WAIT });
    if (await page.locator("[data-aigentable] textarea").isVisible()) fail("the composer shows before the pre-chat form is filled");
    await page.screenshot({ path: env("SCREENSHOT_PRECHAT") });
    const name = form.locator('input[name="name"]');
    if (!(await name.evaluate((el) => el.required))) fail("the required name field is not marked required");
    await form.locator('input[name="email"]').fill("ada@example.com");
    await form.locator('button[type="submit"]').click();
    if (!(await form.isVisible())) fail("the form was accepted without the required name");
    await name.fill("Ada Lovelace");
    await form.locator('button[type="submit"]').click();
    await form.waitFor({ state: "hidden", ...WAIT });
    await ask(page, "Hello from Ada");
    await context.close();
  }

  // 2. Signed in on the shop: identified by the site, no form.
  {
    const { context, page } = await visit("/signed-in");
    if (await page.locator('[data-aigentable] form[aria-label="Before we start"]').isVisible()) {
      fail("an identified visitor was asked for the pre-chat form");
    }
    await ask(page, "Hello from Bea");
    await context.close();
  }

  // 3. A forged signature: refused, visibly, and nothing is sent.
  {
    const { context, page } = await visit("/forged");
    const input = page.locator("[data-aigentable] textarea");
    await input.fill("Hello from Mallory");
    await input.press("Enter");
    const banner = page.locator("[data-aigentable] .banner");
    await banner.waitFor({ state: "visible", ...WAIT });
    result.forgedBanner = await banner.textContent();
    result.forgedWarnings = page.warnings;
    if (!result.forgedBanner.includes("could not verify your sign-in")) {
      fail(`a forged identity shows ${JSON.stringify(result)}`);
    }
    await context.close();
  }
  // 4. A stored session the server no longer knows (expired, or another install's): the
  //    widget forgets it and starts afresh instead of failing.
  {
    const context = await browser.newContext();
    await context.addInitScript(
      ([key]) => localStorage.setItem(`aigentable:${key}`, JSON.stringify({ token: "vt_unknown_to_this_server" })),
      [env("WIDGET_KEY")],
    );
    const page = await context.newPage();
    await page.goto(`${HOST}/signed-in`);
    await page.locator("[data-aigentable] .launcher").click();
    await ask(page, "Hello again from Bea");
    const saved = await page.evaluate(([key]) => localStorage.getItem(`aigentable:${key}`), [env("WIDGET_KEY")]);
    if (!saved || saved.includes("vt_unknown_to_this_server")) fail(`the stale token was kept: ${saved}`);
    await context.close();
  }
  console.log(`RESULT ${JSON.stringify(result)}`);
} finally {
  await browser.close();
}
process.exit(0);
