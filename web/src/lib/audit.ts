// The audit log's entries as the page shows them, and its date filter (calendar days in the
// browser's time zone sent as RFC 3339 instants, the whole `to` day included).
import { roleName } from './format';

export interface AuditEntry {
  id: string;
  tenantId: string;
  at: string;
  action: string;
  outcome: 'success' | 'failure' | string;
  actor: { kind: string; userId: string | null; email: string | null; apiKeyId: string | null; role: string | null };
  target: { kind: string; id: string | null; label: string | null } | null;
  ip: string | null;
  userAgent: string | null;
  details: Record<string, unknown>;
  count: number;
  lastAt: string | null;
}

/** The action names (the API's contract), with words for the filter. */
export const AUDIT_ACTIONS: { value: string; label: string }[] = [
  ['auth.login', 'Signed in'],
  ['auth.login_failed', 'Failed sign-in'],
  ['auth.registered', 'Signed up'],
  ['auth.password_reset_requested', 'Password reset requested'],
  ['auth.password_reset', 'Password reset'],
  ['auth.refresh_token_reused', 'Refresh token reused (session revoked)'],
  ['invitation.sent', 'Invitation sent'],
  ['invitation.accepted', 'Invitation accepted'],
  ['invitation.revoked', 'Invitation withdrawn'],
  ['user.role_changed', 'Role changed'],
  ['user.removed', 'User removed'],
  ['api_key.created', 'API key created'],
  ['api_key.deleted', 'API key revoked'],
  ['settings.changed', 'Settings changed'],
  ['channel.credentials_changed', 'Channel credentials changed'],
  ['tenant.created', 'Workspace created'],
  ['tenant.updated', 'Workspace renamed'],
  ['tenant.suspended', 'Workspace suspended'],
  ['tenant.reactivated', 'Workspace reactivated'],
  ['tenant.deleted', 'Workspace deleted'],
  ['tenant.exported', 'Workspace exported'],
  ['tenant.imported', 'Workspace imported'],
].map(([value, label]) => ({ value, label }));

export function actorText(a: AuditEntry['actor']): string {
  const who =
    a.kind === 'api_key' ? `API key ${a.apiKeyId?.slice(0, 8) ?? ''}…` : a.kind === 'system' ? 'the server' : (a.email ?? (a.kind === 'anonymous' ? 'someone signed out' : a.userId ?? a.kind));
  return a.role ? `${who} (${roleName(a.role)})` : who;
}

export function targetText(t: AuditEntry['target']): string {
  if (!t) return '—';
  const kind = t.kind.replace('_', ' ');
  return t.label ? `${kind}: ${t.label}` : kind;
}

/** The details in one short line: `keys: name, timeZone · from: TENANT_USER`. */
export function detailsText(d: Record<string, unknown> | null | undefined): string {
  if (!d) return '';
  return Object.entries(d)
    .map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(', ') : typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v)}`)
    .join(' · ');
}

/** The API's `from`/`to` for two date inputs (either may be empty), or what is wrong. */
export function auditRange(
  from: string,
  to: string,
  /** Minutes from local time to UTC on that day (Date#getTimezoneOffset; a fixed one in tests). */
  offsetMinutes: (d: Date) => number = (d) => d.getTimezoneOffset(),
): { from?: string; to?: string; error: string | null } {
  const instant = (day: string, end: boolean): string | null => {
    const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(day);
    if (!m) return null;
    // Local midnight (start) or the last millisecond of the day (end), as a UTC instant.
    const wall = Date.UTC(+m[1], +m[2] - 1, +m[3], end ? 23 : 0, end ? 59 : 0, end ? 59 : 0, end ? 999 : 0);
    const local = new Date(+m[1], +m[2] - 1, +m[3], end ? 23 : 0, end ? 59 : 0);
    return new Date(wall + offsetMinutes(local) * 60_000).toISOString();
  };
  const f = from ? instant(from, false) : undefined;
  const t = to ? instant(to, true) : undefined;
  if (f === null) return { error: 'Choose a valid start date' };
  if (t === null) return { error: 'Choose a valid end date' };
  if (f && t && f > t) return { error: 'The start must be on or before the end' };
  return { from: f, to: t, error: null };
}
