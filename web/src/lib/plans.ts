// Plans and usage (GET /api/subscription, /api/plans): the limits' names and labels, the
// plan form's numbers (storage typed in MB, empty = unlimited), and usage bar levels.

export type LimitKey = 'agents' | 'documents' | 'storageBytes' | 'messagesPerMonth' | 'channels' | 'seats' | 'apiKeys';
export type Limits = Record<LimitKey, number | null>;

export interface Plan {
  id: string;
  name: string;
  limits: Partial<Limits>;
  priceText: string | null;
  isDefault: boolean;
  builtIn: boolean;
  createdAt: string;
  updatedAt: string;
}

export interface Usage {
  used: number;
  limit: number | null;
  percent: number | null;
}
export interface Subscription {
  tenantId: string;
  plan: Plan;
  status: 'active' | 'trialing' | 'past_due' | 'canceled';
  periodStart: string;
  periodEnd: string;
  usage: Partial<Record<LimitKey, Usage>>;
}

export const LIMITS: { key: LimitKey; label: string; bytes?: boolean }[] = [
  { key: 'agents', label: 'Agents' },
  { key: 'documents', label: 'Documents' },
  { key: 'storageBytes', label: 'Storage', bytes: true },
  { key: 'messagesPerMonth', label: 'Messages a month' },
  { key: 'channels', label: 'Channels' },
  { key: 'seats', label: 'Seats' },
  { key: 'apiKeys', label: 'API keys' },
];

const MB = 1024 * 1024;

/** The form's text per limit ('' = unlimited; storage in MB). */
export function limitsToForm(l: Partial<Limits> | null): Record<LimitKey, string> {
  const out = {} as Record<LimitKey, string>;
  for (const { key, bytes } of LIMITS) {
    const v = l?.[key];
    out[key] = v === null || v === undefined ? '' : String(bytes ? Math.round((v / MB) * 100) / 100 : v);
  }
  return out;
}

/** The limits a form means, with a message per bad field (`limits.<key>`). */
export function limitsFromForm(form: Record<LimitKey, string | number | null | undefined>): { limits: Limits; errors: Record<string, string> } {
  const limits = {} as Limits;
  const errors: Record<string, string> = {};
  for (const { key, bytes } of LIMITS) {
    const raw = form[key];
    const s = raw === null || raw === undefined ? '' : String(raw).trim();
    if (s === '') {
      limits[key] = null;
      continue;
    }
    const n = Number(s);
    if (!Number.isFinite(n) || n < 0 || (!bytes && !Number.isInteger(n))) {
      errors[`limits.${key}`] = bytes ? 'A size in MB, 0 or more' : 'A whole number, 0 or more';
      continue;
    }
    limits[key] = bytes ? Math.round(n * MB) : n;
  }
  return { limits, errors };
}

/** A limit for a table cell. */
export function limitValue(v: number | null, bytes = false): string {
  if (v === null) return 'unlimited';
  if (!bytes) return v.toLocaleString('en');
  if (v >= 1024 * MB) return `${Math.round((v / (1024 * MB)) * 10) / 10} GB`;
  return `${Math.round((v / MB) * 10) / 10} MB`;
}

/** How full a usage bar is: ok below 80%, warn to 100%, full at or over the limit. */
export function usageLevel(u: Usage): 'ok' | 'warn' | 'full' | 'unlimited' {
  if (u.limit === null) return 'unlimited';
  if (u.used >= u.limit) return 'full';
  return (u.percent ?? Math.floor((100 * u.used) / u.limit)) >= 80 ? 'warn' : 'ok';
}

/** A limit at or past 80% of the plan, as the usage banner tells it. */
export interface NearLimit {
  key: LimitKey;
  label: string;
  used: number;
  limit: number;
  percent: number;
  level: 'warn' | 'full';
}

/** The limits at 80% or more of the plan, fullest first (unlimited ones never). */
export function nearLimits(sub: Pick<Subscription, 'usage'>): NearLimit[] {
  const out: NearLimit[] = [];
  for (const { key, label } of LIMITS) {
    const u = sub.usage[key];
    if (!u || u.limit === null) continue;
    const level = usageLevel(u);
    if (level !== 'warn' && level !== 'full') continue;
    const percent = u.percent ?? (u.limit ? Math.floor((100 * u.used) / u.limit) : 100);
    out.push({ key, label, used: u.used, limit: u.limit, percent, level });
  }
  return out.sort((a, b) => b.percent - a.percent);
}

/** One near limit in words: "Agents: 2 of 2 (limit reached)". */
export function nearLimitText(n: NearLimit): string {
  const bytes = LIMITS.find((l) => l.key === n.key)?.bytes;
  return `${n.label}: ${limitValue(n.used, bytes)} of ${limitValue(n.limit, bytes)} (${n.level === 'full' ? 'limit reached' : `${n.percent}%`})`;
}

/** What the banner shows, as one key: a dismissed banner comes back when this changes. */
export function nearLimitsKey(tenantId: string, near: NearLimit[]): string {
  return `${tenantId}|${near.map((n) => `${n.key}:${n.level}`).join(',')}`;
}
