import { describe, expect, it } from 'vitest';
import { chime, deservesChime, inboxTitle, loadMuted, saveMuted, type AudioLike } from './alerts';

function fakeAudio(state = 'running') {
  const log: string[] = [];
  const ctx: AudioLike = {
    currentTime: 10,
    state,
    destination: 'speakers',
    resume: async () => {
      log.push('resume');
    },
    createOscillator: () => ({
      type: '',
      frequency: { setValueAtTime: (v: number, t: number) => log.push(`freq ${v}@${t}`) },
      connect: () => undefined,
      start: (t: number) => log.push(`start ${t}`),
      stop: (t: number) => log.push(`stop ${t}`),
    }),
    createGain: () => ({
      gain: { setValueAtTime: () => {}, exponentialRampToValueAtTime: () => {} },
      connect: (n: unknown) => log.push(`to ${n}`),
    }),
  };
  return { ctx, log };
}

describe('inbox alerts', () => {
  it('chime for new conversations and handoffs, never when muted', () => {
    expect(deservesChime({ kind: 'new_conversation', conversationId: 'c' }, false)).toBe(true);
    expect(deservesChime({ kind: 'new_conversation', conversationId: 'c' }, true)).toBe(false);
    const handoff = { kind: 'conversation_update' as const, conversationId: 'c', changed: ['status', 'mode'], status: 'pending_human' };
    expect(deservesChime(handoff, false)).toBe(true);
    expect(deservesChime(handoff, true)).toBe(false);
    // A message in a conversation the AI handles, or one closed: quiet.
    expect(deservesChime({ kind: 'conversation_update', conversationId: 'c', changed: ['lastMessage'], status: 'pending_human' }, false)).toBe(false);
    expect(deservesChime({ kind: 'conversation_update', conversationId: 'c', changed: ['status'], status: 'closed' }, false)).toBe(false);
  });

  it('plays two rising notes into the speakers, waking a suspended context', () => {
    const { ctx, log } = fakeAudio('suspended');
    chime(ctx);
    expect(log[0]).toBe('resume');
    expect(log.filter((l) => l.startsWith('freq'))).toEqual(['freq 660@10', 'freq 990@10.12']);
    expect(log.filter((l) => l === 'to speakers')).toHaveLength(2);
    const starts = log.filter((l) => l.startsWith('start')).map((l) => Number(l.split(' ')[1]));
    const stops = log.filter((l) => l.startsWith('stop')).map((l) => Number(l.split(' ')[1]));
    expect(stops.every((s, i) => s > starts[i] && s - 10 < 0.5)).toBe(true);
    const { ctx: running, log: quiet } = fakeAudio();
    chime(running);
    expect(quiet).not.toContain('resume');
  });

  it('remembers the mute switch', () => {
    const m = new Map<string, string>();
    const store = { getItem: (k: string) => m.get(k) ?? null, setItem: (k: string, v: string) => void m.set(k, v) };
    expect(loadMuted(store)).toBe(false);
    saveMuted(true, store);
    expect(loadMuted(store)).toBe(true);
    saveMuted(false, store);
    expect(loadMuted(store)).toBe(false);
    const broken = { getItem: () => { throw new Error('denied'); }, setItem: () => { throw new Error('denied'); } };
    expect(loadMuted(broken)).toBe(false);
    expect(() => saveMuted(true, broken)).not.toThrow();
  });

  it('title: unread messages plus new conversations not yet opened, each counted once', () => {
    expect(inboxTitle({}, new Set())).toBe('Inbox · aigentable');
    expect(inboxTitle({ a: 2, b: 1 }, new Set())).toBe('(3) Inbox · aigentable');
    expect(inboxTitle({ a: 2 }, new Set(['a', 'n']))).toBe('(3) Inbox · aigentable');
  });
});
