// Server-Sent Events over fetch (EventSource cannot POST or send a bearer token): a parser
// that follows the WHATWG event-stream rules, fed with text as it arrives.

export interface SseEvent {
  event: string;
  data: string;
  id?: string;
}

export class SseParser {
  private buf = '';
  private data: string[] = [];
  private event = '';
  private id: string | undefined;
  private sawCr = false;

  /** Feeds decoded text; answers the events it completed. */
  push(text: string): SseEvent[] {
    const out: SseEvent[] = [];
    let s = this.buf + text;
    // A CR at the end of the previous piece already ended its line; a LF right after it
    // belongs to that same line break.
    if (this.sawCr && s.startsWith('\n')) s = s.slice(1);
    this.sawCr = false;
    let start = 0;
    for (let i = 0; i < s.length; i++) {
      const c = s[i];
      if (c === '\n' || c === '\r') {
        this.line(s.slice(start, i), out);
        if (c === '\r') {
          if (i + 1 < s.length) {
            if (s[i + 1] === '\n') i++;
          } else {
            this.sawCr = true;
          }
        }
        start = i + 1;
      }
    }
    this.buf = s.slice(start);
    return out;
  }

  /** The stream ended: an incomplete event is dropped, as the spec says. */
  end(): SseEvent[] {
    this.buf = '';
    this.data = [];
    this.event = '';
    return [];
  }

  private line(line: string, out: SseEvent[]): void {
    if (line === '') {
      if (this.data.length > 0) {
        out.push({ event: this.event || 'message', data: this.data.join('\n'), id: this.id });
      }
      this.data = [];
      this.event = '';
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'data':
        this.data.push(value);
        break;
      case 'event':
        this.event = value;
        break;
      case 'id':
        if (!value.includes('\0')) this.id = value;
        break;
      default:
        break;
    }
  }
}

/** Reads a response body as SSE events, calling `on` for each, until the stream ends. */
export async function readSse(body: ReadableStream<Uint8Array>, on: (e: SseEvent) => void): Promise<void> {
  const reader = body.getReader();
  const dec = new TextDecoder();
  const p = new SseParser();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    for (const e of p.push(dec.decode(value, { stream: true }))) on(e);
  }
  for (const e of p.push(dec.decode())) on(e);
  p.end();
}
