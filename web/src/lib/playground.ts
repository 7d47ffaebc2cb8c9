// The playground's streamed answer: POST /api/agents/:id/test with `stream: true` answers
// `delta` events `{content}`, then `done` (the whole answer with citations and timing) or
// `error` `{error: {code, message}}`.
import { ApiError, type Api } from './api';
import { readSse, type SseEvent } from './sse';

export interface Citation {
  documentId: string;
  documentName: string;
  chunkId: string;
  page: number | null;
  headings: string[];
  snippet: string;
}

export interface TestAnswer {
  reply: string;
  citations: Citation[];
  usage: { promptTokens: number; completionTokens: number };
  latencyMs: number;
  upstreamMs: number;
  toolCalls: { name: string; arguments: string; ok: boolean; result: string }[];
  handoff?: string | null;
}

/** Folds one event into the answer so far; throws the stream's error. */
export function applyEvent(state: { text: string; done: TestAnswer | null }, e: SseEvent): void {
  const body = JSON.parse(e.data);
  if (e.event === 'delta') state.text += body.content ?? '';
  else if (e.event === 'done') {
    state.done = body as TestAnswer;
    state.text = state.done.reply;
  } else if (e.event === 'error') {
    throw new ApiError(502, body.error?.code ?? 'upstream_failed', body.error?.message ?? 'the model failed');
  }
}

export async function ask(
  api: Api,
  agentId: string,
  message: string,
  history: { role: string; content: string }[],
  onText: (text: string) => void,
  signal?: AbortSignal,
): Promise<TestAnswer> {
  const res = await api.raw('POST', `/api/agents/${agentId}/test`, { message, history, stream: true }, { signal });
  if (!res.body) throw new ApiError(0, 'no_body', 'the answer had no body');
  const state = { text: '', done: null as TestAnswer | null };
  await readSse(res.body, (e) => {
    applyEvent(state, e);
    onText(state.text);
  });
  if (!state.done) throw new ApiError(0, 'incomplete', 'the answer stopped before it was complete');
  return state.done;
}
