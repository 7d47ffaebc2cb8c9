import { describe, expect, it } from 'vitest';
import { applyDelta, applyTyping, mergeMessages, sortConversations, typingText, upsertConversation, type Conversation, type Message } from './inbox';

const msg = (id: string, seq: number | undefined, extra: Partial<Message> = {}): Message => ({
  id, conversationId: 'c1', role: 'customer', content: id, citations: [], status: 'sent', error: null, authorId: null,
  createdAt: `2026-01-01T00:00:0${seq ?? 9}Z`, seq, ...extra,
});
const conv = (id: string, status: Conversation['status'], at: string, extra: Partial<Conversation> = {}): Conversation => ({
  id, agentId: 'a1', channelId: null, customer: { name: null, email: null, externalId: null }, status, mode: 'ai',
  assigneeId: null, lastMessageAt: at, messageCount: 1, createdAt: at, closedAt: null, ...extra,
});

describe('messages', () => {
  it('keeps one copy of a message seen twice, in commit order', () => {
    const a = mergeMessages([msg('m2', 2), msg('m1', 1)], [msg('m3', 3), msg('m2', 2, { content: 'edited' })]);
    expect(a.map((m) => m.id)).toEqual(['m1', 'm2', 'm3']);
    expect(a[1].content).toBe('edited');
  });

  it('replaces a sent reply placeholder by the stored message with the same clientId', () => {
    const local = msg('local:k1', undefined, { clientId: 'k1', role: 'human', status: 'sending' });
    const a = mergeMessages([msg('m1', 1), local], [msg('m2', 2, { clientId: 'k1', role: 'human' })]);
    expect(a.map((m) => m.id)).toEqual(['m1', 'm2']);
  });
});

describe('conversation list', () => {
  it('puts the handoff queue first, then the newest activity', () => {
    const l = sortConversations([
      conv('old-open', 'open', '2026-01-01T00:00:00Z'),
      conv('new-open', 'open', '2026-01-03T00:00:00Z'),
      conv('closed', 'closed', '2026-01-04T00:00:00Z'),
      conv('waiting', 'pending_human', '2026-01-02T00:00:00Z'),
    ]);
    expect(l.map((c) => c.id)).toEqual(['waiting', 'new-open', 'old-open', 'closed']);
  });

  it('live updates respect the filters', () => {
    const list = [conv('c1', 'open', '2026-01-01T00:00:00Z')];
    // Closed while the list shows open ones: it leaves the list.
    expect(upsertConversation(list, conv('c1', 'closed', '2026-01-02T00:00:00Z'), { status: 'open' }, {})).toEqual([]);
    // A new one for another agent does not appear under an agent filter.
    expect(upsertConversation(list, conv('c2', 'open', '2026-01-02T00:00:00Z', { agentId: 'a2' }), { agentId: 'a1' }, {})).toHaveLength(1);
    // Unread-only shows only those with unread messages.
    expect(upsertConversation([], conv('c3', 'open', '2026-01-02T00:00:00Z'), { unreadOnly: true }, { c3: 2 })).toHaveLength(1);
  });
});

describe('streaming and typing', () => {
  it('accumulates deltas until the answer is done', () => {
    let s = applyDelta({}, { messageId: 'm9', delta: 'Hel' });
    s = applyDelta(s, { messageId: 'm9', delta: 'lo' });
    expect(s.m9).toBe('Hello');
    expect(applyDelta(s, { messageId: 'm9', done: true })).toEqual({});
  });

  it('tracks who types, never myself', () => {
    let t = applyTyping({}, { who: { kind: 'customer' }, typing: true }, 'u1');
    t = applyTyping(t, { who: { kind: 'human', userId: 'u1', name: 'Me' }, typing: true }, 'u1');
    expect(typingText(t)).toBe('The customer is typing…');
    t = applyTyping(t, { who: { kind: 'human', userId: 'u2', name: 'Sam' }, typing: true }, 'u1');
    expect(typingText(t)).toBe('The customer, Sam are typing…');
    t = applyTyping(t, { who: { kind: 'customer' }, typing: false }, 'u1');
    expect(typingText(t)).toBe('Sam is typing…');
  });
});
