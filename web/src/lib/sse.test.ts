import { describe, expect, it } from 'vitest';
import { SseParser, readSse, type SseEvent } from './sse';
import { applyEvent, type TestAnswer } from './playground';

describe('SSE parsing', () => {
  it('splits events across arbitrary chunk boundaries', () => {
    const text = 'event: delta\ndata: {"content":"Hel"}\n\nevent: delta\ndata: {"content":"lo"}\n\n: keep-alive\n\nevent: done\ndata: {"reply":"Hello"}\n\n';
    for (let cut = 1; cut < text.length; cut++) {
      const p = new SseParser();
      const got = [...p.push(text.slice(0, cut)), ...p.push(text.slice(cut))];
      expect(got.map((e) => e.event)).toEqual(['delta', 'delta', 'done']);
      expect(got[1].data).toBe('{"content":"lo"}');
    }
  });

  it('handles CRLF and CR line ends, also split between pieces', () => {
    const p = new SseParser();
    const got = [...p.push('data: a\r'), ...p.push('\n\r\n'), ...p.push('data: b\r\r')];
    expect(got.map((e) => e.data)).toEqual(['a', 'b']);
  });

  it('joins multi-line data, defaults the event name, ignores comments and unknown fields', () => {
    const p = new SseParser();
    const got = p.push(':comment\nfoo: bar\ndata: one\ndata:two\nid: 7\n\n');
    expect(got).toEqual([{ event: 'message', data: 'one\ntwo', id: '7' }]);
  });

  it('drops an event the stream cut off', async () => {
    const enc = new TextEncoder();
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(enc.encode('event: delta\ndata: {"content":"x"}\n\nevent: done\ndata: {"rep'));
        c.close();
      },
    });
    const seen: SseEvent[] = [];
    await readSse(body, (e) => seen.push(e));
    expect(seen.map((e) => e.event)).toEqual(['delta']);
  });

  it('decodes UTF-8 split inside a character', async () => {
    const bytes = new TextEncoder().encode('data: {"content":"Grüße"}\n\n');
    const i = bytes.indexOf(0xc3) + 1; // inside "ü"
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(bytes.slice(0, i));
        c.enqueue(bytes.slice(i));
        c.close();
      },
    });
    const seen: SseEvent[] = [];
    await readSse(body, (e) => seen.push(e));
    expect(JSON.parse(seen[0].data).content).toBe('Grüße');
  });
});

describe('playground events', () => {
  it('builds the answer from deltas, then takes the final answer', () => {
    const s = { text: '', done: null as TestAnswer | null };
    applyEvent(s, { event: 'delta', data: '{"content":"Returns within "}' });
    applyEvent(s, { event: 'delta', data: '{"content":"30 days [1]."}' });
    expect(s.text).toBe('Returns within 30 days [1].');
    applyEvent(s, { event: 'done', data: JSON.stringify({ reply: 'Returns within 30 days [1].', citations: [{ documentName: 'policy.md' }], usage: { promptTokens: 1, completionTokens: 2 }, latencyMs: 5, upstreamMs: 3, toolCalls: [] }) });
    expect(s.done?.citations[0].documentName).toBe('policy.md');
  });

  it("throws the stream's error with its code and message", () => {
    const s = { text: '', done: null };
    expect(() => applyEvent(s, { event: 'error', data: '{"error":{"code":"upstream_failed","message":"model down"}}' })).toThrow('model down');
  });
});
