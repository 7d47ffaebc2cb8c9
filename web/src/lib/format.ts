// Display helpers.

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KB', 'MB', 'GB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

export function date(s: string | null | undefined): string {
  if (!s) return '—';
  const d = new Date(s);
  return Number.isNaN(d.getTime()) ? s : d.toLocaleString();
}

export function ms(n: number): string {
  return n < 1000 ? `${Math.round(n)} ms` : `${(n / 1000).toFixed(2)} s`;
}

export function roleName(r: string): string {
  return r === 'PLATFORM_ADMIN' ? 'Platform admin' : r === 'TENANT_ADMIN' ? 'Admin' : 'Member';
}

/** A short message for any thrown value. */
export function message(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
}
