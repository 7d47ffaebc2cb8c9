// The API's views as the UI reads them (see src/api/views.rs).

export type HttpTool = {
  type: 'http';
  name: string;
  description: string;
  parameters: unknown;
  url: string;
  method: string;
  headers: Record<string, string>;
  timeoutMs?: number | null;
};
export type Tool = { type: 'search_knowledge' } | { type: 'handoff_to_human' } | HttpTool;

export interface Agent {
  id: string;
  name: string;
  slug: string;
  description: string | null;
  systemPrompt: string;
  model: string | null;
  temperature: number;
  maxTokens: number;
  topK: number;
  retrievalMode: 'hybrid' | 'keyword' | 'vector' | 'off';
  answerMode: 'generate' | 'extractive' | 'auto';
  documentIds: string[];
  greeting: string | null;
  fallbackMessage: string | null;
  language: string | null;
  tools: Tool[];
  status: 'active' | 'inactive';
  createdAt: string;
  updatedAt: string;
}

export interface Doc {
  id: string;
  name: string;
  mimeType: string;
  sizeBytes: number;
  status: 'queued' | 'processing' | 'ready' | 'failed';
  progress: number;
  error: string | null;
  pages: number | null;
  chunkCount: number;
  title: string | null;
  agentIds: string[];
  createdAt: string;
  processedAt: string | null;
}

export interface Chunk {
  id: string;
  ordinal: number;
  text: string;
  page: number | null;
  headings: string[];
  tokenCount: number;
  embeddingModel: string | null;
}

export interface SearchHit {
  chunkId: string;
  documentId: string;
  documentName: string;
  text: string;
  score: number;
  page: number | null;
  headings: string[];
}
export interface SearchResult {
  data: SearchHit[];
  mode: string;
  tookMs: number;
  warnings?: string[];
}

export interface Invitation {
  id: string;
  email: string;
  role: string;
  name: string | null;
  createdAt: string;
  expiresAt: string;
  acceptedAt: string | null;
}

export interface ApiKey {
  id: string;
  name: string;
  prefix: string;
  role: string;
  createdAt: string;
  lastUsedAt: string | null;
  expiresAt: string | null;
}

export type FieldMode = 'off' | 'optional' | 'required';
export interface WebSettings {
  widgetKey: string;
  allowedOrigins: string[];
  greeting: string | null;
  theme: { color: string; title: string | null; avatarUrl: string | null; position: 'bottom-right' | 'bottom-left' };
  language: string | null;
  preChat: { name: FieldMode; email: FieldMode };
  identity: { mode: FieldMode };
}
export interface Channel {
  id: string;
  type: string;
  name: string;
  agentId: string | null;
  status: 'active' | 'paused' | 'error';
  lastError: string | null;
  /** `web`: the widget's settings; `telegram`: what getMe told (botUsername, botName). */
  settings: WebSettings;
  credentials: Record<string, string>;
  embedCode: string | null;
  /** Messaging types: where the provider delivers. */
  webhookUrl?: string | null;
  /** WhatsApp, Messenger, Instagram: the token to paste in Meta's webhook settings. */
  verifyToken?: string | null;
  identitySecret?: string;
  createdAt: string;
  updatedAt: string;
}

/** A webhook delivery kept aside (GET /api/channels/{id}/dead-letters). */
export interface DeadLetter {
  id: string;
  channelId: string;
  externalId: string;
  status: string;
  error: string | null;
  payload: string;
  receivedAt: string;
  updatedAt: string;
}
