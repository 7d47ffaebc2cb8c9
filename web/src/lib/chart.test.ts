import { describe, expect, it } from 'vitest';
import {
  analyticsQuery, autoGranularity, bucketCount, bucketLabel, csvFileName, labelIndexes, linePath, niceScale, niceStep,
  percent, presetRange, rangeDays, rangeError, shortNumber, usd, xOf, yOf,
} from './chart';

describe('chart scaling', () => {
  it('round steps of 1, 2, 2.5 and 5', () => {
    expect(niceStep(10, 4)).toBe(2.5);
    expect(niceStep(100, 4)).toBe(25);
    expect(niceStep(7, 4)).toBe(2);
    expect(niceStep(0.9, 4)).toBe(0.25);
    expect(niceStep(0, 4)).toBe(1);
  });

  it('axes start at zero and end on the first round tick above the data', () => {
    expect(niceScale([3, 7, 9])).toEqual({ min: 0, max: 10, ticks: [0, 2.5, 5, 7.5, 10] });
    expect(niceScale([120, null, 480])).toEqual({ min: 0, max: 600, ticks: [0, 200, 400, 600] });
    const s = niceScale([0.1, 0.2, 0.3]);
    expect(s.ticks.every((t) => String(t).length < 6)).toBe(true);
    expect(s.max).toBeGreaterThanOrEqual(0.3);
  });

  it('negative data gets an axis below zero', () => {
    const s = niceScale([-3, 4]);
    expect(s.min).toBeLessThanOrEqual(-3);
    expect(s.max).toBeGreaterThanOrEqual(4);
    expect(s.ticks).toContain(0);
  });

  it('an empty or all-zero series still gets a usable axis', () => {
    expect(niceScale([]).max).toBe(1);
    expect(niceScale([0, 0, null]).max).toBe(1);
  });

  it('positions: 0 at the bottom, the max at the top, points spread over the width', () => {
    const s = niceScale([10]);
    expect(yOf(0, s, 100)).toBe(100);
    expect(yOf(s.max, s, 100)).toBe(0);
    expect(xOf(0, 5, 200)).toBe(0);
    expect(xOf(4, 5, 200)).toBe(200);
    expect(xOf(0, 1, 200)).toBe(100);
  });

  it('a null breaks the line instead of dropping to zero; a lone point still shows', () => {
    const s = { min: 0, max: 10, ticks: [] };
    expect(linePath([0, 10, null, 5, 5], s, 40, 10)).toBe('M0,10 L10,0 M30,5 L40,5');
    expect(linePath([null, 5, null], s, 20, 10)).toBe('M10,5 h0.01');
    expect(linePath([null, null], s, 20, 10)).toBe('');
  });
});

describe('figures', () => {
  it('short numbers, dollars and rates', () => {
    expect(shortNumber(0)).toBe('0');
    expect(shortNumber(950)).toBe('950');
    expect(shortNumber(12_345)).toBe('12.3k');
    expect(shortNumber(2_500_000)).toBe('2.5M');
    expect(shortNumber(0.000361)).toBe('0.00036');
    expect(shortNumber(null)).toBe('—');
    expect(usd(0)).toBe('$0');
    expect(usd(12.345)).toBe('$12.35');
    expect(usd(0.000361)).toBe('$0.00036');
    expect(percent(0.456)).toBe('46%');
    expect(percent(null)).toBe('—');
  });
});

describe('date ranges', () => {
  it('presets, counted in whole days including both ends', () => {
    expect(presetRange('today', '2026-11-30')).toEqual({ from: '2026-11-30', to: '2026-11-30' });
    expect(presetRange('7d', '2026-11-30')).toEqual({ from: '2026-11-24', to: '2026-11-30' });
    expect(rangeDays(presetRange('30d', '2026-03-01'))).toBe(30);
    expect(presetRange('30d', '2026-03-01').from).toBe('2026-01-31');
    expect(presetRange('month', '2026-11-30')).toEqual({ from: '2026-11-01', to: '2026-11-30' });
    expect(presetRange('lastMonth', '2026-03-15')).toEqual({ from: '2026-02-01', to: '2026-02-28' });
    expect(presetRange('lastMonth', '2026-01-10')).toEqual({ from: '2025-12-01', to: '2025-12-31' });
    expect(presetRange('12m', '2026-11-30')).toEqual({ from: '2025-12-01', to: '2026-11-30' });
  });

  it('typed ranges are checked', () => {
    expect(rangeError({ from: '2026-11-01', to: '2026-11-30' })).toBeNull();
    expect(rangeError({ from: '', to: '2026-11-30' })).toMatch(/start/);
    expect(rangeError({ from: '2026-02-30', to: '2026-03-01' })).toMatch(/start/);
    expect(rangeError({ from: '2026-12-01', to: '2026-11-30' })).toMatch(/before/);
    expect(rangeError({ from: '2000-01-01', to: '2026-11-30' })).toMatch(/At most/);
  });

  it('the bucket size follows the range and stays under the API limit of 2,000', () => {
    expect(autoGranularity({ from: '2026-11-30', to: '2026-11-30' })).toBe('hour');
    expect(autoGranularity(presetRange('30d', '2026-11-30'))).toBe('day');
    expect(autoGranularity(presetRange('12m', '2026-11-30'))).toBe('week');
    expect(autoGranularity({ from: '2020-01-01', to: '2026-11-30' })).toBe('month');
    for (const p of ['today', '7d', '30d', '90d', 'month', 'lastMonth', '12m'] as const) {
      const r = presetRange(p, '2026-11-30');
      expect(bucketCount(r, autoGranularity(r))).toBeLessThanOrEqual(2000);
    }
    expect(bucketCount({ from: '2026-01-01', to: '2026-12-31' }, 'hour')).toBeGreaterThan(2000);
  });

  it('axis labels per bucket size, thinned to fit', () => {
    expect(bucketLabel('2026-11-01', 'day')).toBe('Nov 1');
    expect(bucketLabel('2026-11-01T13', 'hour')).toBe('13:00');
    expect(bucketLabel('2026-W44', 'week')).toBe('W44');
    expect(bucketLabel('2026-11', 'month')).toBe('Nov 2026');
    expect(labelIndexes(5, 8)).toEqual([0, 1, 2, 3, 4]);
    const many = labelIndexes(30, 6);
    expect(many.length).toBeLessThanOrEqual(6);
    expect(many[0]).toBe(0);
    expect(many.at(-1)).toBe(29);
    expect(labelIndexes(0, 6)).toEqual([]);
  });
});

describe('analytics requests', () => {
  const r = { from: '2026-11-01', to: '2026-11-30' };
  it('the query carries the range, the bucket size and one filter', () => {
    expect(analyticsQuery(r, 'day')).toBe('from=2026-11-01&to=2026-11-30&granularity=day');
    expect(analyticsQuery(r, 'week', { agentId: 'a1', channelId: 'c1' })).toBe('from=2026-11-01&to=2026-11-30&granularity=week&agentId=a1');
    expect(analyticsQuery(r, 'day', { channelId: 'c1' })).toContain('channelId=c1');
  });
  it('the CSV download asks for format=csv and names the file after the range', () => {
    expect(analyticsQuery(r, 'day', {}, 'csv')).toBe('from=2026-11-01&to=2026-11-30&granularity=day&format=csv');
    expect(csvFileName('dashboard', r)).toBe('aigentable-dashboard-2026-11-01_2026-11-30.csv');
  });
});
