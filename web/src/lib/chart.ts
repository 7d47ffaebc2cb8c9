// The dashboard's arithmetic, kept apart from the SVG so it is unit-tested: axis scaling to
// round ticks, points to SVG paths, date ranges and their presets, the bucket size a range
// needs, and the analytics query strings (JSON and CSV).

/** An axis from 0 (or below, for negative data) to a round maximum, with round ticks. */
export interface Scale {
  min: number;
  max: number;
  ticks: number[];
}

/** A step of 1, 2, 2.5 or 5 times a power of ten that covers `span` in about `count` steps. */
export function niceStep(span: number, count: number): number {
  if (!(span > 0) || !Number.isFinite(span)) return 1;
  const raw = span / Math.max(1, count);
  const pow = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * pow >= raw - 1e-12) return m * pow;
  return 10 * pow;
}

/**
 * The axis for `values` (nulls skipped): starts at 0 unless a value is negative, ends at the
 * first tick at or above the largest value; an empty or all-zero series gets 0..1.
 */
export function niceScale(values: (number | null | undefined)[], count = 4): Scale {
  const xs = values.filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
  const lo = Math.min(0, ...xs);
  const hi = Math.max(0, ...xs);
  if (hi === lo) return { min: 0, max: 1, ticks: [0, 0.25, 0.5, 0.75, 1].slice(0, count + 1) };
  const step = niceStep(hi - lo, count);
  const min = Math.floor(lo / step) * step;
  const max = Math.ceil(hi / step) * step;
  const ticks: number[] = [];
  // Rounded so 0.1 + 0.2 does not print as 0.30000000000000004.
  for (let t = min; t <= max + step / 2; t += step) ticks.push(Number(t.toPrecision(12)));
  return { min, max, ticks };
}

/** `v` on an axis `scale` drawn `height` pixels high (0 at the bottom, SVG y grows down). */
export function yOf(v: number, scale: Scale, height: number): number {
  const span = scale.max - scale.min || 1;
  return height - ((v - scale.min) / span) * height;
}

/** The x of the i-th of n points spread over `width` (a lone point sits in the middle). */
export function xOf(i: number, n: number, width: number): number {
  return n <= 1 ? width / 2 : (i / (n - 1)) * width;
}

/**
 * An SVG path through the points; a null breaks the line (no data there is not zero), and
 * a lone point between gaps becomes a dot-sized segment so it still shows.
 */
export function linePath(values: (number | null)[], scale: Scale, width: number, height: number): string {
  const parts: string[] = [];
  let open = false;
  values.forEach((v, i) => {
    if (v === null || !Number.isFinite(v)) {
      open = false;
      return;
    }
    const x = round(xOf(i, values.length, width));
    const y = round(yOf(v, scale, height));
    const alone = !open && (i + 1 >= values.length || values[i + 1] === null);
    parts.push(`${open ? 'L' : 'M'}${x},${y}`);
    if (alone) parts.push(`h0.01`);
    open = true;
  });
  return parts.join(' ');
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}

/** A short number for axes and cards: 1234 -> "1.2k", 0.00036 -> "0.00036". */
export function shortNumber(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '—';
  const a = Math.abs(n);
  if (a >= 1e9) return `${trim(n / 1e9)}B`;
  if (a >= 1e6) return `${trim(n / 1e6)}M`;
  if (a >= 1e4) return `${trim(n / 1e3)}k`;
  if (a >= 1 || a === 0) return `${Number.isInteger(n) ? n : trim(n)}`;
  return `${Number(n.toPrecision(2))}`;
}
function trim(n: number): string {
  return String(Number(n.toFixed(1)));
}

/** US dollars: cents for amounts from a cent, more digits below (LLM costs are tiny). */
export function usd(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '—';
  if (n === 0) return '$0';
  if (Math.abs(n) >= 0.01) return `$${n.toFixed(2)}`;
  return `$${Number(n.toPrecision(2))}`;
}

/** A fraction 0..1 as a percentage ("—" when there is no denominator). */
export function percent(f: number | null | undefined): string {
  if (f === null || f === undefined || !Number.isFinite(f)) return '—';
  return `${Math.round(f * 100)}%`;
}

// Date ranges: ISO calendar dates (YYYY-MM-DD), inclusive, as the analytics API takes them.

export type Granularity = 'hour' | 'day' | 'week' | 'month';
export interface Range {
  from: string;
  to: string;
}
export type Preset = 'today' | '7d' | '30d' | '90d' | 'month' | 'lastMonth' | '12m';
export const PRESETS: { value: Preset; label: string }[] = [
  { value: 'today', label: 'Today' },
  { value: '7d', label: 'Last 7 days' },
  { value: '30d', label: 'Last 30 days' },
  { value: '90d', label: 'Last 90 days' },
  { value: 'month', label: 'This month' },
  { value: 'lastMonth', label: 'Last month' },
  { value: '12m', label: 'Last 12 months' },
];

/** A calendar date as YYYY-MM-DD (its own fields, no time zone shift). */
export function isoDate(d: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getUTCFullYear()}-${p(d.getUTCMonth() + 1)}-${p(d.getUTCDate())}`;
}

/** Parses YYYY-MM-DD to a UTC-midnight Date, or null when it is not a real date. */
export function parseDate(s: string): Date | null {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(s);
  if (!m) return null;
  const d = new Date(Date.UTC(+m[1], +m[2] - 1, +m[3]));
  return isoDate(d) === s ? d : null;
}

function addDays(d: Date, n: number): Date {
  return new Date(d.getTime() + n * 86_400_000);
}

/** The dates a preset means on `today` (the workspace's today, as YYYY-MM-DD). */
export function presetRange(p: Preset, today: string): Range {
  const t = parseDate(today) ?? new Date();
  const y = t.getUTCFullYear();
  const m = t.getUTCMonth();
  switch (p) {
    case 'today':
      return { from: today, to: today };
    case '7d':
      return { from: isoDate(addDays(t, -6)), to: today };
    case '30d':
      return { from: isoDate(addDays(t, -29)), to: today };
    case '90d':
      return { from: isoDate(addDays(t, -89)), to: today };
    case 'month':
      return { from: isoDate(new Date(Date.UTC(y, m, 1))), to: today };
    case 'lastMonth':
      return { from: isoDate(new Date(Date.UTC(y, m - 1, 1))), to: isoDate(new Date(Date.UTC(y, m, 0))) };
    case '12m':
      return { from: isoDate(new Date(Date.UTC(y, m - 11, 1))), to: today };
  }
}

/** Days in the inclusive range (0 when it is invalid or backwards). */
export function rangeDays(r: Range): number {
  const a = parseDate(r.from);
  const b = parseDate(r.to);
  if (!a || !b || b < a) return 0;
  return Math.round((b.getTime() - a.getTime()) / 86_400_000) + 1;
}

/** What is wrong with a range the person typed, or null. */
export function rangeError(r: Range, maxDays = 3660): string | null {
  if (!parseDate(r.from)) return 'Choose a start date';
  if (!parseDate(r.to)) return 'Choose an end date';
  const n = rangeDays(r);
  if (n === 0) return 'The start must be on or before the end';
  if (n > maxDays) return `At most ${maxDays} days`;
  return null;
}

/** A readable bucket size for the range: hours for a day or two, then days, weeks, months. */
export function autoGranularity(r: Range): Granularity {
  const n = rangeDays(r);
  if (n <= 2) return 'hour';
  if (n <= 92) return 'day';
  if (n <= 366) return 'week';
  return 'month';
}

/** Buckets the API would make; it refuses more than 2,000. */
export function bucketCount(r: Range, g: Granularity): number {
  const n = rangeDays(r);
  if (g === 'hour') return n * 24;
  if (g === 'day') return n;
  if (g === 'week') return Math.ceil(n / 7) + 1;
  return Math.ceil(n / 28) + 1;
}

/** The query of an analytics request: range, bucket size, the one filter, the format. */
export function analyticsQuery(
  r: Range,
  g: Granularity,
  filter: { agentId?: string; channelId?: string } = {},
  format: 'json' | 'csv' = 'json',
): string {
  const q = new URLSearchParams({ from: r.from, to: r.to, granularity: g });
  // The API takes one filter at a time; the agent wins.
  if (filter.agentId) q.set('agentId', filter.agentId);
  else if (filter.channelId) q.set('channelId', filter.channelId);
  if (format === 'csv') q.set('format', 'csv');
  return q.toString();
}

/** The file name a CSV download gets: `aigentable-dashboard-2026-11-01_2026-11-30.csv`. */
export function csvFileName(what: string, r: Range): string {
  return `aigentable-${what}-${r.from}_${r.to}.csv`;
}

/** A short label for a bucket on the x axis ("2026-11-01" -> "Nov 1", hours -> "13:00"). */
export function bucketLabel(label: string, g: Granularity): string {
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  if (g === 'hour') {
    const m = /T(\d{2})$/.exec(label);
    return m ? `${m[1]}:00` : label;
  }
  if (g === 'day') {
    const d = parseDate(label);
    return d ? `${months[d.getUTCMonth()]} ${d.getUTCDate()}` : label;
  }
  if (g === 'month') {
    const m = /^(\d{4})-(\d{2})$/.exec(label);
    return m ? `${months[+m[2] - 1]} ${m[1]}` : label;
  }
  return label.replace(/^\d{4}-/, '');
}

/** Indexes of the x labels to print so at most `max` show, evenly spaced, the last included. */
export function labelIndexes(n: number, max: number): number[] {
  if (n <= 0) return [];
  if (n <= max) return [...Array(n).keys()];
  const step = Math.ceil((n - 1) / (max - 1));
  const out: number[] = [];
  for (let i = 0; i < n - 1; i += step) out.push(i);
  if (n - 1 - (out.at(-1) ?? 0) < step / 2) out.pop();
  out.push(n - 1);
  return out;
}
