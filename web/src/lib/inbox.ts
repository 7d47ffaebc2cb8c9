// The inbox's state rules, kept apart from the page so they are unit-tested: merging
// messages that arrive twice (REST, socket replay, our own echo), the order of the list
// (people waiting for a person first), streamed AI answers, and typing indicators.
import type { Citation } from './playground';

export interface Message {
  id: string;
  conversationId: string;
  role: 'customer' | 'ai' | 'human' | 'system';
  content: string;
  citations: Citation[];
  status: string;
  error: string | null;
  /** What kind of failure `error` describes (a failed reply in a messaging channel). */
  errorCode?: 'delivery_unknown' | 'send_failed' | 'outside_messaging_window' | 'provider_failed' | null;
  authorId: string | null;
  createdAt: string;
  seq?: number;
  clientId?: string | null;
  /** Media a customer sent through a messaging channel. */
  attachments?: { id: string; kind: string; mimeType: string | null; fileName: string | null; size: number }[];
}

export interface Conversation {
  id: string;
  agentId: string;
  channelId: string | null;
  customer: { name: string | null; email: string | null; externalId: string | null };
  status: 'open' | 'pending_human' | 'closed';
  mode: 'ai' | 'human';
  assigneeId: string | null;
  lastMessageAt: string | null;
  messageCount: number;
  createdAt: string;
  closedAt: string | null;
  /** Messages after the caller's read mark (REST reads only). */
  unreadCount?: number;
  lastSeq?: number;
}

/** Messages in commit order (seq when known, then time, then id); one copy of each. */
export function mergeMessages(current: Message[], incoming: Message[]): Message[] {
  const byId = new Map<string, Message>();
  for (const m of current) byId.set(m.id, m);
  for (const m of incoming) {
    // Our own reply came back under its server id: drop the local placeholder.
    if (m.clientId) {
      for (const [k, old] of byId) if (old.clientId === m.clientId && k !== m.id && k.startsWith('local:')) byId.delete(k);
    }
    byId.set(m.id, m);
  }
  return [...byId.values()].sort(
    (a, b) =>
      (a.seq ?? Number.MAX_SAFE_INTEGER) - (b.seq ?? Number.MAX_SAFE_INTEGER) ||
      a.createdAt.localeCompare(b.createdAt) ||
      a.id.localeCompare(b.id),
  );
}

/** The inbox order: waiting for a person first, then the most recent activity. */
export function sortConversations(list: Conversation[]): Conversation[] {
  const rank = (c: Conversation) => (c.status === 'pending_human' ? 0 : c.status === 'open' ? 1 : 2);
  const at = (c: Conversation) => c.lastMessageAt ?? c.createdAt;
  return [...list].sort((a, b) => rank(a) - rank(b) || at(b).localeCompare(at(a)) || b.id.localeCompare(a.id));
}

export interface Filters {
  status?: string;
  agentId?: string;
  channelId?: string;
  assigneeId?: string;
  unreadOnly?: boolean;
}

/** Whether a conversation belongs in a list with these filters (for live additions). */
export function matches(c: Conversation, f: Filters, unread: Record<string, number>): boolean {
  if (f.status && c.status !== f.status) return false;
  if (f.agentId && c.agentId !== f.agentId) return false;
  if (f.channelId && c.channelId !== f.channelId) return false;
  if (f.assigneeId && c.assigneeId !== f.assigneeId) return false;
  if (f.unreadOnly && !unread[c.id]) return false;
  return true;
}

/** Adds or replaces `c` in the list (dropping it when it no longer matches the filters). */
export function upsertConversation(list: Conversation[], c: Conversation, f: Filters, unread: Record<string, number>): Conversation[] {
  const rest = list.filter((x) => x.id !== c.id);
  return sortConversations(matches(c, f, unread) ? [c, ...rest] : rest);
}

/** Streamed answer text by the id the stored answer will have. */
export function applyDelta(streams: Record<string, string>, e: { messageId: string; delta?: string; done?: boolean }): Record<string, string> {
  const out = { ...streams };
  if (e.done) delete out[e.messageId];
  else out[e.messageId] = (out[e.messageId] ?? '') + (e.delta ?? '');
  return out;
}

export interface Who {
  kind: 'customer' | 'human' | 'ai';
  userId?: string;
  name?: string;
}

/** Who is typing now (a key per person), from `user_typing` events. */
export function applyTyping(typing: Record<string, Who>, e: { who: Who; typing: boolean }, me: string | undefined): Record<string, Who> {
  if (e.who.kind === 'human' && e.who.userId === me) return typing;
  const key = `${e.who.kind}:${e.who.userId ?? ''}`;
  const out = { ...typing };
  if (e.typing) out[key] = e.who;
  else delete out[key];
  return out;
}

export function typingText(typing: Record<string, Who>): string {
  const names = Object.values(typing).map((w) => w.name ?? (w.kind === 'customer' ? 'The customer' : w.kind === 'ai' ? 'The AI' : 'Someone'));
  if (names.length === 0) return '';
  return `${names.join(', ')} ${names.length === 1 ? 'is' : 'are'} typing…`;
}

export function customerName(c: Conversation): string {
  return c.customer.name || c.customer.email || c.customer.externalId || `Visitor ${c.id.slice(-6)}`;
}
