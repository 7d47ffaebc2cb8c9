// The inbox's alerts: a short chime made in the browser with WebAudio (no sound file to
// download) when a conversation arrives or asks for a person, and a mute switch that the
// browser remembers.

/** What happened, as the inbox hears it over the socket. */
export type AlertEvent =
  | { kind: 'new_conversation'; conversationId: string }
  | { kind: 'conversation_update'; conversationId: string; changed: string[]; status: string };

/** Whether `e` deserves a chime: new conversations, and conversations that now wait for a person. */
export function deservesChime(e: AlertEvent, muted: boolean): boolean {
  if (muted) return false;
  if (e.kind === 'new_conversation') return true;
  return e.changed.includes('status') && e.status === 'pending_human';
}

/** The part of AudioContext the chime uses (a fake one in tests). */
export interface AudioLike {
  currentTime: number;
  state: string;
  destination: unknown;
  resume(): Promise<void>;
  createOscillator(): {
    type: string;
    frequency: { setValueAtTime(v: number, t: number): void };
    connect(n: unknown): unknown;
    start(t: number): void;
    stop(t: number): void;
  };
  createGain(): {
    gain: { setValueAtTime(v: number, t: number): void; exponentialRampToValueAtTime(v: number, t: number): void };
    connect(n: unknown): unknown;
  };
}

/** Two soft rising notes, 0.35 s in all. */
export function chime(ctx: AudioLike): void {
  if (ctx.state === 'suspended') void ctx.resume().catch(() => {});
  const t0 = ctx.currentTime;
  [
    [660, 0],
    [990, 0.12],
  ].forEach(([freq, at]) => {
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.type = 'sine';
    osc.frequency.setValueAtTime(freq, t0 + at);
    gain.gain.setValueAtTime(0.0001, t0 + at);
    gain.gain.exponentialRampToValueAtTime(0.18, t0 + at + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, t0 + at + 0.22);
    osc.connect(gain);
    gain.connect(ctx.destination);
    osc.start(t0 + at);
    osc.stop(t0 + at + 0.23);
  });
}

const KEY = 'aigentable.inbox.muted';

/** The mute switch, kept in localStorage (per browser, like a sound setting should be). */
export function loadMuted(store: Pick<Storage, 'getItem'> = localStorage): boolean {
  try {
    return store.getItem(KEY) === '1';
  } catch {
    return false;
  }
}
export function saveMuted(muted: boolean, store: Pick<Storage, 'setItem'> = localStorage): void {
  try {
    store.setItem(KEY, muted ? '1' : '0');
  } catch {
    /* private mode: the switch lasts for this page only */
  }
}

/** The tab's title: the count of unread messages and new conversations not yet opened. */
export function inboxTitle(unread: Record<string, number>, fresh: Set<string>): string {
  let n = 0;
  for (const v of Object.values(unread)) n += v;
  for (const id of fresh) if (!unread[id]) n += 1;
  return n ? `(${n}) Inbox · aigentable` : 'Inbox · aigentable';
}

let shared: AudioLike | null = null;
/** Plays the chime on the page's one AudioContext (made on first use; browsers may keep it
 * suspended until the person has interacted with the page, and then it stays silent). */
export function playChime(): void {
  const Ctor = (globalThis as { AudioContext?: new () => AudioLike }).AudioContext;
  if (!Ctor) return;
  try {
    shared ??= new Ctor();
    chime(shared);
  } catch {
    /* no audio device: the title badge still tells */
  }
}
