// The chat widget: launcher, window, the visitor's session and the Socket.IO conversation
// (event names and payloads: docs in README "Web widget" and the server's realtime module).

import { io, Socket } from "socket.io-client";
import { CHAT, CLOSE, SEND, h, icon, linkify } from "./dom";
import { CSS, adopt, foreground, restyle } from "./styles";

/** Public settings of a web channel (GET /api/widget/{key}/config, or `session.channel`). */
export interface Config {
  title: string;
  color: string;
  avatarUrl: string | null;
  position: "left" | "right";
  greeting: string | null;
  agentName: string | null;
  preChatName: "off" | "optional" | "required";
  preChatEmail: "off" | "optional" | "required";
  identityRequired: boolean;
  online: boolean | null;
}

interface Citation {
  documentName?: string;
  page?: number | null;
  snippet?: string;
  url?: string | null;
}

interface Message {
  id: string;
  conversationId: string;
  role: "customer" | "ai" | "human" | "system";
  content: string;
  citations?: Citation[];
  status?: string;
  error?: string | null;
  clientId?: string | null;
  seq?: number;
}

interface Conversation {
  id: string;
  status: string;
  mode: string;
}

interface Ack<T = unknown> {
  ok: boolean;
  error?: { code: string; message: string };
  message?: Message;
  messages?: Message[];
  conversation?: Conversation;
  data?: T;
}

/** Identity verification: the site's HMAC of `externalId` (see README). */
export interface Identity {
  externalId: string;
  hash: string;
  name?: string;
  email?: string;
}

type Pref = "off" | "optional" | "required";

function pref(v: unknown): Pref {
  if (v === true || v === "required") return "required";
  if (v === "optional") return "optional";
  return "off";
}

function str(v: unknown): string | null {
  return typeof v === "string" && v.trim() !== "" ? v : null;
}

/** Reads the server's config leniently: a missing field falls back to a default. */
export function parseConfig(raw: unknown): Config {
  const c = (raw && typeof raw === "object" ? raw : {}) as Record<string, any>;
  const theme = (c.theme && typeof c.theme === "object" ? c.theme : {}) as Record<string, any>;
  const pre = (c.preChat && typeof c.preChat === "object" ? c.preChat : {}) as Record<string, any>;
  const color = str(theme.color) ?? str(c.color) ?? "#2563eb";
  const position = str(theme.position) ?? str(c.position) ?? "right";
  const identity = c.identity && typeof c.identity === "object" ? c.identity.mode : c.identity;
  return {
    title: str(theme.title) ?? str(c.title) ?? "Chat with us",
    color: /^#[0-9a-fA-F]{3,8}$/.test(color) ? color : "#2563eb",
    avatarUrl: str(theme.avatarUrl) ?? str(c.avatarUrl) ?? str(theme.avatar) ?? str(c.avatar),
    position: /left/i.test(position) ? "left" : "right",
    greeting: str(c.greeting),
    agentName: str(c.agentName),
    preChatName: pref(pre.name),
    preChatEmail: pref(pre.email),
    identityRequired: identity === "required" || c.identityMode === "required",
    online: typeof c.online === "boolean" ? c.online : null,
  };
}

interface Saved {
  token?: string;
  externalId?: string;
}

/** The visitor token and whose it is, per widget key, in localStorage (when allowed). */
class Store {
  constructor(private key: string) {}
  get(): Saved {
    try {
      return JSON.parse(localStorage.getItem(this.key) || "{}") as Saved;
    } catch {
      return {};
    }
  }
  set(v: Saved): void {
    try {
      localStorage.setItem(this.key, JSON.stringify(v));
    } catch {
      // Storage blocked (private mode, sandbox): the session lasts for this page only.
    }
  }
  clear(): void {
    try {
      localStorage.removeItem(this.key);
    } catch {
      /* as above */
    }
  }
}

function uid(): string {
  const a = new Uint8Array(12);
  crypto.getRandomValues(a);
  return Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
}

const TYPING_REFRESH_MS = 2000;
const TYPING_IDLE_MS = 3000;
const ACK_TIMEOUT_MS = 15000;

/** One widget on the page. */
export class Widget {
  private cfg: Config;
  private store: Store;
  private saved: Saved;
  private socket: Socket | null = null;
  private identity: Identity | null = null;
  private hello: { name?: string; email?: string } = {};
  private conversationId: string | null = null;
  private closedConversationId: string | null = null;
  private mode: string | null = null;
  private lastId: string | null = null;
  private lastSeq = -1;
  private lastIncoming: string | null = null;
  private retriedFresh = false;
  private unread = 0;
  private isOpen = false;
  private typingSent = 0;
  private typingTimer = 0;
  private peerTimer = 0;
  private restTried = false;
  private bubbles = new Map<string, HTMLElement>();
  private pendings = new Map<string, HTMLElement>();
  private streams = new Map<string, { el: HTMLElement; body: HTMLElement; text: string }>();

  private host: HTMLElement;
  private root: ShadowRoot;
  private theme: CSSStyleSheet | HTMLStyleElement;
  private launcher!: HTMLButtonElement;
  private badge!: HTMLElement;
  private win!: HTMLElement;
  private titleEl!: HTMLElement;
  private subEl!: HTMLElement;
  private avatar!: HTMLImageElement;
  private banner!: HTMLElement;
  private log!: HTMLElement;
  private typing!: HTMLElement;
  private pre!: HTMLFormElement;
  private compose!: HTMLFormElement;
  private input!: HTMLTextAreaElement;
  private live!: HTMLElement;

  constructor(
    private origin: string,
    private key: string,
    raw: unknown,
  ) {
    this.cfg = parseConfig(raw);
    this.store = new Store(`aigentable:${key}`);
    this.saved = this.store.get();
    this.host = h("div", { id: `aigentable-${key}`, "data-aigentable": "" });
    this.root = this.host.attachShadow({ mode: "open" });
    adopt(this.root, CSS);
    this.theme = adopt(this.root, "");
    this.build();
    this.apply(this.cfg);
    document.body.append(this.host);
  }

  // ---------------------------------------------------------------- UI

  private build(): void {
    this.badge = h("span", { class: "badge", hidden: true, "aria-hidden": "true" });
    this.launcher = h("button", { class: "launcher", type: "button", "aria-expanded": "false" }, icon(CHAT), this.badge);
    this.launcher.addEventListener("click", () => (this.isOpen ? this.close() : this.open()));

    this.avatar = h("img", { alt: "", hidden: true });
    this.titleEl = h("h2", { id: "ag-title" });
    this.subEl = h("p");
    const x = h("button", { class: "x", type: "button", "aria-label": "Close chat" }, icon(CLOSE));
    x.addEventListener("click", () => this.close());
    const head = h("div", { class: "head" }, this.avatar, h("div", { class: "t" }, this.titleEl, this.subEl), x);

    this.banner = h("div", { class: "banner", role: "status", hidden: true });
    this.typing = h("div", { class: "typing", hidden: true }, h("i"), h("i"), h("i"), h("span"));
    this.log = h("div", { class: "log", role: "log", "aria-live": "polite", "aria-relevant": "additions", tabindex: "0", "aria-label": "Messages" });
    this.live = h("div", { class: "sr", "aria-live": "polite" });

    this.pre = h("form", { class: "form", hidden: true, "aria-label": "Before we start" });
    this.pre.addEventListener("submit", (e) => {
      e.preventDefault();
      const data = new FormData(this.pre);
      const name = String(data.get("name") || "").trim();
      const email = String(data.get("email") || "").trim();
      this.hello = { name: name || undefined, email: email || undefined };
      this.pre.hidden = true;
      this.compose.hidden = false;
      this.connect();
      this.input.focus();
    });

    this.input = h("textarea", { rows: "1", placeholder: "Write a message…", "aria-label": "Message", maxlength: "4000" });
    this.input.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        this.compose.requestSubmit ? this.compose.requestSubmit() : this.submit();
      }
    });
    this.input.addEventListener("input", () => this.typed());
    this.input.addEventListener("blur", () => this.stopTyping());
    const send = h("button", { class: "btn send", type: "submit", "aria-label": "Send message" }, icon(SEND));
    this.compose = h("form", { class: "compose" }, this.input, send);
    this.compose.addEventListener("submit", (e) => {
      e.preventDefault();
      this.submit();
    });

    this.win = h(
      "div",
      { class: "win", role: "dialog", "aria-labelledby": "ag-title", hidden: true },
      head,
      this.banner,
      this.log,
      this.pre,
      this.compose,
      this.live,
    );
    this.win.addEventListener("keydown", (e) => {
      if (e.key === "Escape") {
        e.stopPropagation();
        this.close();
      }
    });
    this.root.append(this.win, this.launcher);
  }

  /** Applies the channel's public settings (on load, and again from `session`). */
  private apply(cfg: Config): void {
    this.cfg = cfg;
    restyle(this.theme, `:host{--ag-c:${cfg.color};--ag-fg:${foreground(cfg.color)}}`);
    this.host.setAttribute("data-position", cfg.position);
    this.titleEl.textContent = cfg.title;
    this.launcher.setAttribute("aria-label", this.isOpen ? "Close chat" : `Open chat: ${cfg.title}`);
    this.subtitle();
    if (cfg.avatarUrl && /^(https?:|\/)/.test(cfg.avatarUrl)) {
      this.avatar.src = new URL(cfg.avatarUrl, this.origin).href;
      this.avatar.hidden = false;
    } else this.avatar.hidden = true;
    if (cfg.greeting && !this.log.querySelector(".greet") && !this.bubbles.size) {
      const g = h("div", { class: "m in greet" });
      linkify(g, cfg.greeting);
      this.log.prepend(g);
    }
  }

  private subtitle(): void {
    this.subEl.textContent =
      this.mode === "human"
        ? "You are chatting with our team"
        : this.cfg.agentName
          ? `${this.cfg.agentName}${this.cfg.online ? " · team online" : ""}`
          : this.cfg.online === true
            ? "We are online"
            : "We reply as soon as we can";
  }

  open(): void {
    if (this.isOpen) return;
    this.isOpen = true;
    this.win.hidden = false;
    this.host.setAttribute("data-open", "");
    this.launcher.setAttribute("aria-expanded", "true");
    this.launcher.setAttribute("aria-label", "Close chat");
    this.setUnread(0);
    const needForm =
      !this.saved.token && !this.identity && (this.cfg.preChatName !== "off" || this.cfg.preChatEmail !== "off");
    if (needForm && !this.socket) this.showPreChat();
    else this.connect();
    this.scroll();
    (this.pre.hidden ? this.input : (this.pre.querySelector("input") as HTMLElement)).focus();
    this.markRead();
  }

  close(): void {
    if (!this.isOpen) return;
    this.isOpen = false;
    this.win.hidden = true;
    this.host.removeAttribute("data-open");
    this.launcher.setAttribute("aria-expanded", "false");
    this.launcher.setAttribute("aria-label", `Open chat: ${this.cfg.title}`);
    this.stopTyping();
    this.launcher.focus();
  }

  private showPreChat(): void {
    this.pre.replaceChildren();
    this.pre.append(h("p", {}, "Please introduce yourself so we can follow up."));
    const field = (name: string, label: string, type: string, p: Pref) =>
      p === "off"
        ? null
        : h(
            "label",
            {},
            p === "required" ? label : `${label} (optional)`,
            h("input", { name, type, required: p === "required", autocomplete: name, maxlength: "200" }),
          );
    this.pre.append(
      field("name", "Name", "text", this.cfg.preChatName) ?? "",
      field("email", "Email", "email", this.cfg.preChatEmail) ?? "",
      h("button", { class: "btn", type: "submit" }, "Start chat"),
    );
    this.pre.hidden = false;
    this.compose.hidden = true;
  }

  private setUnread(n: number): void {
    this.unread = n;
    this.badge.textContent = n > 9 ? "9+" : String(n);
    this.badge.hidden = n === 0;
    this.launcher.setAttribute(
      "aria-label",
      this.isOpen ? "Close chat" : `Open chat: ${this.cfg.title}${n ? ` (${n} unread)` : ""}`,
    );
  }

  private setBanner(text: string | null): void {
    this.banner.textContent = text ?? "";
    this.banner.hidden = !text;
  }

  private note(text: string, before: Element | null = null): void {
    const at = before ?? (this.typing.parentNode === this.log ? this.typing : null);
    this.log.insertBefore(h("div", { class: "note", role: "status" }, text), at);
    this.live.textContent = text;
    this.scroll();
  }

  private scroll(): void {
    if (this.typing.parentNode !== this.log) this.log.append(this.typing);
    this.log.scrollTop = this.log.scrollHeight;
  }

  /** Renders (or updates in place) one stored message. */
  private render(m: Message): HTMLElement {
    const mine = m.role === "customer";
    let el = this.bubbles.get(m.id) ?? (m.clientId ? this.pendings.get(m.clientId) : undefined);
    const stream = this.streams.get(m.id);
    if (!el && stream) el = stream.el;
    if (!el) {
      el = h("div", {});
      this.log.insertBefore(el, this.typing.parentNode === this.log ? this.typing : null);
    }
    if (m.clientId) this.pendings.delete(m.clientId);
    this.streams.delete(m.id);
    this.bubbles.set(m.id, el);
    el.className = `m ${mine ? "out" : "in"}${m.status === "failed" ? " failed" : ""}`;
    el.setAttribute("data-id", m.id);
    el.setAttribute("data-role", m.role);
    el.replaceChildren();
    if (m.role === "human") el.append(h("span", { class: "who" }, "Support team"));
    const body = h("span", { class: "body" });
    linkify(body, m.content || (m.status === "failed" ? "This message could not be answered." : ""));
    el.append(body);
    if (m.citations && m.citations.length) el.append(this.cites(m.citations));
    if (mine && m.status && m.status !== "sent") el.append(h("span", { class: "st" }, m.status === "read" ? "Read" : m.status === "failed" ? "Not delivered" : "Delivered"));
    return el;
  }

  private cites(list: Citation[]): HTMLElement {
    const box = h("div", { class: "cites", "aria-label": "Sources" });
    const seen = new Set<string>();
    for (const c of list) {
      const name = c.documentName || "Source";
      const label = c.page ? `${name} p.${c.page}` : name;
      if (seen.has(label)) continue;
      seen.add(label);
      const url = c.url || (/^https?:\/\//.test(name) ? name : null);
      const title = (c.snippet || "").slice(0, 300);
      box.append(
        url
          ? h("a", { class: "cite", href: url, target: "_blank", rel: "noopener noreferrer nofollow", title }, label)
          : h("span", { class: "cite", title }, label),
      );
    }
    return box;
  }

  // ---------------------------------------------------------------- messages

  /** A committed message (from an ack, `new_message`, replay or REST). */
  private add(m: Message): void {
    if (!m || !m.id) return;
    if (m.conversationId && !this.conversationId && m.conversationId !== this.closedConversationId) {
      this.conversationId = m.conversationId;
    }
    const known = this.bubbles.has(m.id);
    if (m.role === "system") {
      // The team's own notes ("Assigned to ..."): kept in the replay position, not shown;
      // the visitor hears about a takeover from the mode change instead.
      this.seen(m);
      return;
    }
    // The server stores the greeting as the conversation's first message: it replaces the
    // one shown before the conversation existed.
    if (m.role !== "customer" && this.cfg.greeting && m.content === this.cfg.greeting) {
      this.log.querySelector(".greet")?.remove();
    }
    this.render(m);
    this.seen(m);
    if (m.role !== "customer") {
      this.peerTyping(false);
      if (!known) {
        this.lastIncoming = m.id;
        // Replayed history the visitor already read (status `read` after mark_read) is not
        // unread again after a reload.
        if (this.isOpen) this.markRead();
        else if (m.status !== "read") this.setUnread(this.unread + 1);
      }
    }
    this.scroll();
  }

  /** Moves the replay position (`sinceMessageId` of the next join) past `m`. */
  private seen(m: Message): void {
    if (typeof m.seq === "number") {
      if (m.seq > this.lastSeq) {
        this.lastSeq = m.seq;
        this.lastId = m.id;
      }
    } else this.lastId = m.id; // a server without seq: arrival order
  }

  private submit(): void {
    const content = this.input.value.trim();
    if (!content) return;
    this.input.value = "";
    this.stopTyping();
    const clientId = uid();
    const el = h("div", { class: "m out pending", "data-client-id": clientId });
    el.append(content);
    this.pendings.set(clientId, el);
    this.log.insertBefore(el, this.typing.parentNode === this.log ? this.typing : null);
    this.scroll();
    this.connect();
    this.send(content, clientId, el);
  }

  /** Sends (or resends: same clientId, the server answers the same stored message). */
  private send(content: string, clientId: string, el: HTMLElement): void {
    const s = this.socket!;
    const payload: Record<string, string> = { content, clientId };
    if (this.conversationId) payload.conversationId = this.conversationId;
    s.timeout(ACK_TIMEOUT_MS).emit("send_message", payload, (err: Error | null, ack: Ack) => {
      if (!err && ack && ack.ok && ack.message) {
        this.add(ack.message);
        return;
      }
      if (!this.pendings.has(clientId)) return;
      el.className = "m out failed";
      el.replaceChildren(content);
      const retry = h("button", { class: "cite", type: "button" }, "Not sent. Retry");
      retry.addEventListener("click", () => {
        el.className = "m out pending";
        el.replaceChildren(content);
        this.send(content, clientId, el);
      });
      el.append(h("span", { class: "st" }, err ? "" : ack?.error?.message || "", " ", retry));
    });
  }

  private typed(): void {
    if (!this.socket || !this.conversationId) return;
    const now = Date.now();
    if (now - this.typingSent > TYPING_REFRESH_MS) {
      this.typingSent = now;
      this.socket.emit("typing_start", { conversationId: this.conversationId });
    }
    clearTimeout(this.typingTimer);
    this.typingTimer = window.setTimeout(() => this.stopTyping(), TYPING_IDLE_MS);
  }

  private stopTyping(): void {
    clearTimeout(this.typingTimer);
    if (this.typingSent && this.socket && this.conversationId) {
      this.socket.emit("typing_stop", { conversationId: this.conversationId });
    }
    this.typingSent = 0;
  }

  private peerTyping(on: boolean, name?: string): void {
    clearTimeout(this.peerTimer);
    (this.typing.lastChild as HTMLElement).textContent = on ? ` ${name || "Someone"} is typing…` : "";
    this.typing.hidden = !on;
    // The server stops typing after a few silent seconds; this is only a safety net.
    if (on) this.peerTimer = window.setTimeout(() => this.peerTyping(false), 8000);
    this.scroll();
  }

  private markRead(): void {
    if (this.isOpen && this.socket && this.conversationId && this.lastIncoming) {
      this.socket.emit("mark_read", { conversationId: this.conversationId, messageId: this.lastIncoming });
    }
  }

  private conversationChanged(c: Conversation, changed: string[]): void {
    if (c.id !== this.conversationId) return;
    if (changed.includes("mode") && c.mode !== this.mode) {
      if (c.mode === "human") {
        // The change may be reported after the person's first reply: the notice goes before it.
        const msgs = this.log.querySelectorAll(".m[data-role]");
        let first: Element | null = null;
        for (let i = msgs.length - 1; i >= 0 && msgs[i].getAttribute("data-role") === "human"; i--) first = msgs[i];
        this.note("A person from our team has joined the conversation.", first);
      }
      else if (this.mode === "human") this.note("The assistant is back.");
    }
    this.mode = c.mode;
    this.subtitle();
    if (c.status === "closed") this.closed(c.id);
    if (changed.includes("rating")) this.log.querySelector(".csat")?.remove();
  }

  /** The conversation was closed: offer a 1-5 rating; the next message starts a new one. */
  private closed(id: string): void {
    if (this.closedConversationId === id) return;
    this.closedConversationId = id;
    this.conversationId = null;
    this.note("This conversation has been closed.");
    const box = h("div", { class: "csat", role: "group", "aria-label": "Rate this conversation" }, "How did we do?");
    const row = h("div");
    for (let n = 1; n <= 5; n++) {
      const b = h("button", { type: "button", "aria-label": `${n} of 5` }, String(n));
      b.addEventListener("click", () => this.rate(id, n, box));
      row.append(b);
    }
    box.append(row);
    this.log.insertBefore(box, this.typing.parentNode === this.log ? this.typing : null);
    this.scroll();
  }

  private async rate(id: string, rating: number, box: HTMLElement): Promise<void> {
    box.querySelectorAll("button").forEach((b) => (b.disabled = true));
    if (!(await this.postRating(id, { rating }))) {
      box.querySelectorAll("button").forEach((b) => (b.disabled = false));
      this.live.textContent = "The rating could not be sent. Please try again.";
      return;
    }
    // The rating is stored; a comment is optional and replaces it with the same score.
    const comment = h("textarea", { rows: "2", maxlength: "1000", "aria-label": "Comment (optional)", placeholder: "Anything to add? (optional)" });
    const send = h("button", { class: "btn", type: "submit" }, "Send");
    const form = h("form", { class: "form" }, comment, send);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const text = comment.value.trim();
      if (!text) return;
      send.disabled = true;
      if (await this.postRating(id, { rating, comment: text })) form.replaceWith("Thanks, we got your comment.");
      else send.disabled = false;
    });
    box.replaceChildren(`Thank you for your feedback (${rating}/5).`, form);
  }

  private async postRating(id: string, body: { rating: number; comment?: string }): Promise<boolean> {
    try {
      const r = await fetch(`${this.origin}/api/widget/${encodeURIComponent(this.key)}/conversations/${encodeURIComponent(id)}/rating`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${this.saved.token || ""}` },
        body: JSON.stringify(body),
      });
      return r.ok;
    } catch {
      return false;
    }
  }

  // ---------------------------------------------------------------- connection

  /** Sets (or changes) the verified visitor; a different person starts a fresh session. */
  identify(id: Identity): void {
    if (!id || typeof id.externalId !== "string" || typeof id.hash !== "string") return;
    const changed = this.identity?.externalId !== id.externalId;
    this.identity = id;
    this.hello = { name: id.name, email: id.email };
    if (this.saved.externalId && this.saved.externalId !== id.externalId) this.forget();
    if (changed && this.socket) this.reconnect();
  }

  /** Forgets the visitor (e.g. the site's user signed out). */
  reset(): void {
    this.identity = null;
    this.hello = {};
    this.forget();
    this.conversationId = null;
    this.log.querySelectorAll(".m:not(.greet),.note,.csat").forEach((e) => e.remove());
    this.bubbles.clear();
    this.pendings.clear();
    this.streams.clear();
    this.lastId = null;
    this.lastSeq = -1;
    if (this.socket) this.reconnect();
  }

  private forget(): void {
    this.saved = {};
    this.store.clear();
  }

  private reconnect(): void {
    this.retriedFresh = false;
    this.socket?.disconnect();
    this.socket?.connect();
  }

  /** Connects once a stored session exists (so replies and unread counts arrive while the
   *  window is closed); without one, the first open or message connects. */
  boot(): void {
    if (this.saved.token) this.connect();
  }

  private connect(): void {
    if (this.socket) return;
    const s = io(this.origin, {
      // Called on every (re)connect: a forgotten token is not sent again.
      auth: (cb) => {
        const a: Record<string, unknown> = { widgetKey: this.key };
        if (this.saved.token) a.visitorToken = this.saved.token;
        if (this.hello.name) a.name = this.hello.name;
        if (this.hello.email) a.email = this.hello.email;
        if (this.identity) a.identity = { externalId: this.identity.externalId, hash: this.identity.hash };
        cb(a);
      },
      // WebSocket first: one round trip, and no CORS preflight from the host's origin;
      // long polling only where WebSockets are blocked.
      transports: ["websocket", "polling"],
      tryAllTransports: true,
      withCredentials: false,
    });
    this.socket = s;
    s.on("connect", () => this.setBanner(null));
    s.on("disconnect", (reason) => {
      if (reason !== "io client disconnect") this.setBanner("Connection lost. Reconnecting…");
    });
    s.on("connect_error", (err: Error & { data?: { code?: string; message?: string } }) => this.refused(err));
    s.on("session", (d: { visitorToken?: string; conversationId?: string | null; channel?: unknown }) => {
      this.retriedFresh = false;
      if (d.visitorToken) {
        this.saved = { token: d.visitorToken, externalId: this.identity?.externalId };
        this.store.set(this.saved);
      }
      if (d.channel) this.apply(parseConfig(d.channel));
      if (d.conversationId && d.conversationId !== this.closedConversationId) {
        this.conversationId = d.conversationId;
      }
      // Also without an open conversation: the one this page showed may have been closed
      // while it was offline, and the join's answer says so (then the rating is offered).
      this.join();
    });
    s.on("new_message", (m: Message) => {
      if (m.conversationId === this.conversationId || !this.conversationId) this.add(m);
    });
    s.on("agent_response", (d: { conversationId: string; messageId: string; delta?: string; done?: boolean; content?: string; citations?: Citation[]; message?: Message }) => {
      if (this.conversationId && d.conversationId !== this.conversationId) return;
      if (d.done) {
        this.add(d.message ?? { id: d.messageId, conversationId: d.conversationId, role: "ai", content: d.content || "", citations: d.citations });
        return;
      }
      if (this.bubbles.has(d.messageId)) return;
      let st = this.streams.get(d.messageId);
      if (!st) {
        this.peerTyping(false);
        const body = h("span", { class: "body" });
        const el = h("div", { class: "m in streaming", "data-id": d.messageId, "data-role": "ai" }, body);
        this.log.insertBefore(el, this.typing.parentNode === this.log ? this.typing : null);
        st = { el, body, text: "" };
        this.streams.set(d.messageId, st);
      }
      st.text += d.delta || "";
      st.body.textContent = st.text;
      this.scroll();
    });
    s.on("message_status", (d: { messageId: string; status: string; error?: string }) => {
      const el = this.bubbles.get(d.messageId);
      if (!el) return;
      const st = el.querySelector(".st") ?? el.appendChild(h("span", { class: "st" }));
      if (el.classList.contains("out")) st.textContent = d.status === "read" ? "Read" : d.status === "failed" ? "Not delivered" : "Delivered";
      if (d.status === "failed") el.classList.add("failed");
    });
    s.on("user_typing", (d: { conversationId: string; who?: { kind?: string; name?: string }; typing: boolean }) => {
      if (d.conversationId !== this.conversationId || !d.who || d.who.kind === "customer") return;
      this.peerTyping(!!d.typing, d.who.kind === "ai" ? this.cfg.agentName || "The assistant" : d.who.name);
    });
    s.on("conversation_update", (d: { conversation: Conversation; changed?: string[] }) => {
      if (d && d.conversation) this.conversationChanged(d.conversation, d.changed || []);
    });
  }

  /** Replays what this page missed (all of it after a reload), in commit order. */
  private join(): void {
    const s = this.socket;
    const id = this.conversationId;
    if (!s || !id) return;
    const req: Record<string, string> = { conversationId: id };
    if (this.lastId) req.sinceMessageId = this.lastId;
    s.timeout(ACK_TIMEOUT_MS).emit("join_conversation", req, (err: Error | null, ack: Ack) => {
      if (err || !ack || !ack.ok) return;
      if (ack.conversation) {
        this.mode = ack.conversation.mode;
        this.subtitle();
        if (ack.conversation.status === "closed") this.closed(ack.conversation.id);
      }
      for (const m of ack.messages || []) this.add(m);
    });
  }

  private refused(err: Error & { data?: { code?: string; message?: string } }): void {
    // A refusal names the REST error code: in `data.code`, or (socketioxide sends only a
    // message) as the message itself. Transport failures say things like "websocket error".
    const code = err.data?.code ?? (/^[a-z_]+$/.test(err.message) && err.message !== "timeout" ? err.message : undefined);
    if ((code === "unauthorized" || code === "token_expired") && !this.retriedFresh) {
      // The stored session is gone (expired, revoked): start a new visitor once.
      this.retriedFresh = true;
      this.forget();
      this.socket?.connect();
      return;
    }
    if (code) {
      // The server's message is for the site's developers; the visitor gets plain words.
      console.warn(`aigentable: the chat server refused the connection: ${code}: ${err.data?.message ?? ""}`);
      this.setBanner(
        code === "identity_required"
          ? "Please sign in to chat with us."
          : code === "identity_invalid"
            ? "We could not verify your sign-in. Please reload the page or sign in again."
            : "The chat is not available right now.",
      );
      return;
    }
    // A network failure: socket.io-client keeps retrying by itself. Meanwhile show the
    // history over REST once, so a page behind a socket-blocking proxy is not empty.
    this.setBanner("Connecting…");
    if (!this.restTried && this.saved.token) {
      this.restTried = true;
      this.history();
    }
  }

  private async history(): Promise<void> {
    try {
      const r = await fetch(`${this.origin}/api/widget/${encodeURIComponent(this.key)}/conversation`, {
        headers: { Authorization: `Bearer ${this.saved.token}` },
      });
      if (!r.ok) return;
      const body = await r.json();
      const conv: Conversation | null = body?.conversation ?? null;
      if (!conv || conv.status === "closed") return;
      this.conversationId = conv.id;
      this.mode = conv.mode;
      this.subtitle();
      for (const m of (body.messages?.data ?? body.messages ?? []) as Message[]) this.add(m);
    } catch {
      /* offline: nothing to show */
    }
  }
}
