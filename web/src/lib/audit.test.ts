import { describe, expect, it } from 'vitest';
import { AUDIT_ACTIONS, actorText, auditRange, detailsText, targetText } from './audit';

describe('audit log', () => {
  it('lists every action once, in the API spelling', () => {
    const v = AUDIT_ACTIONS.map((a) => a.value);
    expect(new Set(v).size).toBe(v.length);
    expect(v).toContain('auth.login_failed');
    expect(v.every((a) => /^[a-z_]+\.[a-z_]+$/.test(a))).toBe(true);
  });

  it('says who and on what in words', () => {
    expect(actorText({ kind: 'user', userId: 'u1', email: 'dana@x.test', apiKeyId: null, role: 'TENANT_ADMIN' })).toBe('dana@x.test (Admin)');
    expect(actorText({ kind: 'api_key', userId: null, email: null, apiKeyId: '0193f1d2-aaaa', role: 'TENANT_USER' })).toBe('API key 0193f1d2… (Member)');
    expect(actorText({ kind: 'anonymous', userId: null, email: 'who@x.test', apiKeyId: null, role: null })).toBe('who@x.test');
    expect(targetText({ kind: 'api_key', id: 'k', label: 'backend' })).toBe('api key: backend');
    expect(targetText(null)).toBe('—');
    expect(detailsText({ keys: ['name', 'timeZone'], from: 'TENANT_USER' })).toBe('keys: name, timeZone · from: TENANT_USER');
    expect(detailsText({})).toBe('');
  });

  it('date filters cover whole days in the given zone, the end day included', () => {
    // A zone two hours ahead of UTC (offset -120 as Date#getTimezoneOffset reports it).
    const r = auditRange('2026-11-01', '2026-11-02', () => -120);
    expect(r).toEqual({ from: '2026-10-31T22:00:00.000Z', to: '2026-11-02T21:59:59.999Z', error: null });
    expect(auditRange('', '', () => 0)).toEqual({ from: undefined, to: undefined, error: null });
    expect(auditRange('2026-11-03', '2026-11-02', () => 0).error).toMatch(/before/);
    expect(auditRange('nope', '', () => 0).error).toMatch(/start/);
  });
});
