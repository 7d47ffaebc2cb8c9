import { describe, expect, it } from 'vitest';
import { limitsFromForm, limitsToForm, limitValue, nearLimits, nearLimitsKey, nearLimitText, usageLevel } from './plans';

describe('plan limits in the form', () => {
  it('empty fields are unlimited; storage is typed in MB and sent in bytes', () => {
    const { limits, errors } = limitsFromForm({ agents: '10', documents: '', storageBytes: '1.5', messagesPerMonth: 1000, channels: ' 2 ', seats: null, apiKeys: '0' });
    expect(errors).toEqual({});
    expect(limits).toEqual({ agents: 10, documents: null, storageBytes: 1572864, messagesPerMonth: 1000, channels: 2, seats: null, apiKeys: 0 });
  });

  it('bad numbers are named per field', () => {
    const { errors } = limitsFromForm({ agents: '-1', documents: '2.5', storageBytes: 'lots', messagesPerMonth: '', channels: '', seats: '', apiKeys: '' });
    expect(Object.keys(errors).sort()).toEqual(['limits.agents', 'limits.documents', 'limits.storageBytes']);
    expect(errors['limits.documents']).toMatch(/whole number/);
    expect(errors['limits.storageBytes']).toMatch(/MB/);
  });

  it('a stored plan fills the form back the same', () => {
    const stored = { agents: 3, documents: null, storageBytes: 104857600, messagesPerMonth: 500, channels: null, seats: 5, apiKeys: null };
    const form = limitsToForm(stored);
    expect(form.storageBytes).toBe('100');
    expect(form.documents).toBe('');
    expect(limitsFromForm(form).limits).toEqual(stored);
    expect(limitsToForm(null).agents).toBe('');
  });
});

describe('usage', () => {
  it('levels: ok, warn from 80%, full at the limit, unlimited', () => {
    expect(usageLevel({ used: 3, limit: 10, percent: 30 })).toBe('ok');
    expect(usageLevel({ used: 8, limit: 10, percent: 80 })).toBe('warn');
    expect(usageLevel({ used: 10, limit: 10, percent: 100 })).toBe('full');
    expect(usageLevel({ used: 12, limit: 10, percent: 120 })).toBe('full');
    expect(usageLevel({ used: 0, limit: 0, percent: null })).toBe('full');
    expect(usageLevel({ used: 5, limit: null, percent: null })).toBe('unlimited');
  });
  it('limits for the table', () => {
    expect(limitValue(null)).toBe('unlimited');
    expect(limitValue(1000)).toBe('1,000');
    expect(limitValue(104857600, true)).toBe('100 MB');
    expect(limitValue(5 * 1024 * 1024 * 1024, true)).toBe('5 GB');
  });
});

describe('the usage banner', () => {
  const usage = (used: number, limit: number | null) => ({ used, limit, percent: limit === null ? null : limit ? Math.floor((100 * used) / limit) : null });
  it('lists only limits at 80% or more, fullest first, in words', () => {
    const near = nearLimits({ usage: { agents: usage(2, 2), documents: usage(1, 10), messagesPerMonth: usage(812, 1000), seats: usage(4, null), storageBytes: usage(90 * 1024 * 1024, 100 * 1024 * 1024), apiKeys: usage(0, 0) } });
    expect(near.map((n) => n.key)).toEqual(['agents', 'apiKeys', 'storageBytes', 'messagesPerMonth']);
    expect(near.map(nearLimitText)).toEqual([
      'Agents: 2 of 2 (limit reached)',
      'API keys: 0 of 0 (limit reached)',
      'Storage: 90 MB of 100 MB (90%)',
      'Messages a month: 812 of 1,000 (81%)',
    ]);
  });
  it('nothing near a limit: no banner', () => {
    expect(nearLimits({ usage: { agents: usage(1, 2), seats: usage(100, null) } })).toEqual([]);
  });
  it('a dismissed banner returns when a limit gets fuller', () => {
    const warn = nearLimits({ usage: { agents: usage(4, 5) } });
    const full = nearLimits({ usage: { agents: usage(5, 5) } });
    expect(nearLimitsKey('t1', warn)).not.toBe(nearLimitsKey('t1', full));
    expect(nearLimitsKey('t1', full)).toBe(nearLimitsKey('t1', nearLimits({ usage: { agents: usage(6, 5) } })));
    expect(nearLimitsKey('t1', full)).not.toBe(nearLimitsKey('t2', full));
  });
});
