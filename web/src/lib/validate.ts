// Form checks done before a request, mirroring the server's rules so people see mistakes
// at once. The server checks again; its messages are shown as they come.

export type Errors = Record<string, string>;

const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

export function email(v: string): string | null {
  const s = v.trim();
  if (!s) return 'Email is required';
  if (s.length > 254 || !EMAIL.test(s)) return 'Enter a valid email address';
  return null;
}

export function password(v: string): string | null {
  if (v.length < 8) return 'At least 8 characters';
  if (v.length > 256) return 'At most 256 characters';
  return null;
}

export function required(v: string, what: string, max = 200): string | null {
  if (!v.trim()) return `${what} is required`;
  if (v.length > max) return `${what}: at most ${max} characters`;
  return null;
}

export function slug(v: string): string | null {
  if (!v) return null;
  if (v.length > 64 || !/^[a-z0-9][a-z0-9-]*$/.test(v)) return 'a-z, 0-9 and -, not starting with -';
  return null;
}

export function toolName(v: string): string | null {
  return /^[A-Za-z0-9_-]{1,64}$/.test(v) ? null : '1-64 characters of a-z, A-Z, 0-9, _ and -';
}

export function httpUrl(v: string): string | null {
  try {
    const u = new URL(v);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.host ? null : 'An absolute http(s) URL';
  } catch {
    return 'An absolute http(s) URL';
  }
}

export function numberIn(v: number | string, lo: number, hi: number, what: string): string | null {
  const n = typeof v === 'number' ? v : Number(v);
  if (!Number.isFinite(n) || n < lo || n > hi) return `${what} must be between ${lo} and ${hi}`;
  return null;
}

/** A tool's parameters: empty (no arguments) or a JSON object schema of `type: "object"`. */
export function jsonSchema(text: string): { value: unknown; error: string | null } {
  if (!text.trim()) return { value: null, error: null };
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    return { value: null, error: `Not valid JSON: ${(e as Error).message}` };
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return { value: null, error: 'Must be a JSON object' };
  if ((v as { type?: unknown }).type !== 'object') return { value: null, error: 'Must be a JSON Schema with "type": "object"' };
  return { value: v, error: null };
}

/** Only the set entries of `e`; empty when the form is fine. */
export function collect(e: Record<string, string | null>): Errors {
  const out: Errors = {};
  for (const [k, v] of Object.entries(e)) if (v) out[k] = v;
  return out;
}

/** A Telegram bot token as @BotFather hands them out: `<digits>:<20-200 of A-Z a-z 0-9 _ ->`. */
export function botToken(v: string): string | null {
  const s = v.trim();
  if (!s) return 'Paste the token @BotFather gave you';
  return /^\d{1,20}:[A-Za-z0-9_-]{20,200}$/.test(s) ? null : 'Must look like 123456789:AA… (the token from @BotFather)';
}

/** An export's passphrase: optional, else at least 12 characters (as the server). */
export function passphrase(v: string): string | null {
  if (!v) return null;
  return [...v].length < 12 ? 'At least 12 characters (or none: secrets are left out)' : null;
}
