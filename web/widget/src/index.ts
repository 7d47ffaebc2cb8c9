// Entry point of widget.js: finds its own <script data-widget-key>, derives the server's
// origin from the script's src (no other host is ever contacted), loads the channel's public
// settings and mounts the widget. Exposes `window.aigentable(command, ...args)`.

import { Identity, Widget } from "./widget";

type Command = "identify" | "open" | "close" | "reset";
type Api = ((cmd: Command, arg?: unknown) => void) & { q?: IArguments[] | unknown[][] };

declare global {
  interface Window {
    aigentable?: Api;
  }
}

const script =
  (document.currentScript as HTMLScriptElement | null) ??
  document.querySelector<HTMLScriptElement>("script[data-widget-key]");

function run(w: Widget, cmd: Command, arg?: unknown): void {
  if (cmd === "identify") w.identify(arg as Identity);
  else if (cmd === "open") w.open();
  else if (cmd === "close") w.close();
  else if (cmd === "reset") w.reset();
}

async function main(): Promise<void> {
  const key = script?.getAttribute("data-widget-key");
  if (!script || !key) {
    console.warn("aigentable: widget.js needs data-widget-key on its <script> tag");
    return;
  }
  const origin = new URL(script.src, location.href).origin;
  // Calls made before the script loaded (a stub that queues into `aigentable.q`) and after.
  const queued: unknown[][] = Array.from((window.aigentable?.q ?? []) as ArrayLike<unknown>, (a) =>
    Array.from(a as ArrayLike<unknown>),
  );
  let widget: Widget | null = null;
  const api: Api = (cmd, arg) => (widget ? run(widget, cmd, arg) : queued.push([cmd, arg]));
  window.aigentable = api;

  let cfg: unknown;
  try {
    const r = await fetch(`${origin}/api/widget/${encodeURIComponent(key)}/config`, { credentials: "omit" });
    if (!r.ok) {
      console.warn(`aigentable: this widget is not available here (${r.status})`);
      return;
    }
    cfg = await r.json();
  } catch (e) {
    console.warn("aigentable: could not reach the chat server", e);
    return;
  }
  if (document.readyState === "loading") {
    await new Promise((res) => document.addEventListener("DOMContentLoaded", res, { once: true }));
  }
  widget = new Widget(origin, key, cfg);
  for (const [cmd, arg] of queued) run(widget, cmd as Command, arg);
  widget.boot();
}

main();
