import { describe, expect, it } from 'vitest';
import { Api, ApiError, fetchAll, REFRESH_MARGIN_MS, signedOutBy, type Tokens, type TokenStore } from './api';

/** A scripted server: each call answers from `handler`; every request is recorded. */
function server(handler: (path: string, init: RequestInit, n: number) => Response | Promise<Response>) {
  const calls: { path: string; auth: string | null; body: unknown }[] = [];
  const f = (async (input: RequestInfo | URL, init: RequestInit = {}) => {
    const path = String(input);
    const h = new Headers(init.headers);
    calls.push({ path, auth: h.get('authorization'), body: init.body ? JSON.parse(String(init.body)) : undefined });
    return handler(path, init, calls.length);
  }) as typeof fetch;
  return { f, calls };
}

function memoryStore(t: Tokens | null): TokenStore & { value: Tokens | null } {
  return {
    value: t,
    load() {
      return this.value;
    },
    save(v) {
      this.value = v;
    },
  };
}

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
const err = (status: number, code: string) => json(status, { error: { code, message: `msg ${code}` }, requestId: 'r1' });
const pair = (n: number) => ({ accessToken: `at${n}`, refreshToken: `rt${n}`, expiresIn: 900 });

describe('silent token refresh', () => {
  it('refreshes an access token about to expire before the request, once for parallel requests', async () => {
    const now = 1_000_000;
    const store = memoryStore({ accessToken: 'at0', refreshToken: 'rt0', expiresAt: now + REFRESH_MARGIN_MS - 1 });
    const s = server((path) => (path === '/api/auth/refresh' ? json(200, pair(1)) : json(200, { ok: true })));
    const api = new Api({ fetch: s.f, store, now: () => now });
    await Promise.all([api.get('/api/agents'), api.get('/api/documents'), api.get('/api/auth/me')]);
    const refreshes = s.calls.filter((c) => c.path === '/api/auth/refresh');
    expect(refreshes).toHaveLength(1);
    expect(refreshes[0].body).toEqual({ refreshToken: 'rt0' });
    expect(s.calls.filter((c) => c.path !== '/api/auth/refresh').map((c) => c.auth)).toEqual(['Bearer at1', 'Bearer at1', 'Bearer at1']);
    expect(store.value?.refreshToken).toBe('rt1');
    expect(store.value?.expiresAt).toBe(now + 900_000);
  });

  it('refreshes and retries once when the server refuses the access token', async () => {
    const store = memoryStore({ accessToken: 'at0', refreshToken: 'rt0', expiresAt: Date.now() + 600_000 });
    const s = server((path, init) => {
      if (path === '/api/auth/refresh') return json(200, pair(1));
      return new Headers(init.headers).get('authorization') === 'Bearer at1' ? json(200, { id: 'a' }) : err(401, 'invalid_token');
    });
    const api = new Api({ fetch: s.f, store });
    await expect(api.get('/api/agents/a')).resolves.toEqual({ id: 'a' });
    expect(s.calls.map((c) => c.path)).toEqual(['/api/agents/a', '/api/auth/refresh', '/api/agents/a']);
  });

  it('signs out when the refresh token was already used (reuse detection)', async () => {
    const store = memoryStore({ accessToken: 'at0', refreshToken: 'rt0', expiresAt: 0 });
    const s = server(() => err(401, 'refresh_token_reused'));
    const ended: string[] = [];
    const api = new Api({ fetch: s.f, store, onSessionEnded: (r) => ended.push(r) });
    const e = (await api.get('/api/agents').catch((x) => x)) as ApiError;
    expect(e).toBeInstanceOf(ApiError);
    expect(e.code).toBe('refresh_token_reused');
    expect(store.value).toBeNull();
    expect(ended).toEqual(['refresh_token_reused']);
    // Only the refresh was tried: the request itself was never sent with a dead token.
    expect(s.calls.map((c) => c.path)).toEqual(['/api/auth/refresh']);
  });

  it('signs out when the server says the session was revoked', async () => {
    const store = memoryStore({ accessToken: 'at0', refreshToken: 'rt0', expiresAt: Date.now() + 600_000 });
    const ended: string[] = [];
    const api = new Api({ fetch: server(() => err(401, 'session_revoked')).f, store, onSessionEnded: (r) => ended.push(r) });
    await expect(api.get('/api/agents')).rejects.toMatchObject({ code: 'session_revoked' });
    expect(store.value).toBeNull();
    expect(ended).toEqual(['session_revoked']);
  });

  it("uses another tab's newer tokens instead of spending the refresh token twice", async () => {
    const now = 5_000_000;
    const stale: Tokens = { accessToken: 'at0', refreshToken: 'rt0', expiresAt: now - 1 };
    const store = memoryStore(stale);
    const s = server((path) => (path === '/api/auth/refresh' ? err(401, 'refresh_token_reused') : json(200, {})));
    // Inside the lock, the other tab's refresh has landed in the shared store.
    const lock = async <T,>(f: () => Promise<T>) => {
      store.value = { accessToken: 'at9', refreshToken: 'rt9', expiresAt: now + 600_000 };
      return f();
    };
    const api = new Api({ fetch: s.f, store, now: () => now, lock });
    await api.get('/api/agents');
    expect(s.calls.map((c) => [c.path, c.auth])).toEqual([['/api/agents', 'Bearer at9']]);
  });

  it('keeps the session when the refresh fails for a network reason', async () => {
    const store = memoryStore({ accessToken: 'at0', refreshToken: 'rt0', expiresAt: 0 });
    const api = new Api({
      fetch: (async () => {
        throw new TypeError('network down');
      }) as typeof fetch,
      store,
    });
    await expect(api.get('/api/agents')).rejects.toThrow('network down');
    expect(store.value?.refreshToken).toBe('rt0');
  });
});

describe('errors', () => {
  it("carries the API's code, message, field details and request id", async () => {
    const body = { error: { code: 'validation_failed', message: 'some fields are invalid', details: { fields: [{ field: 'email', message: 'must be a valid email address' }] } }, requestId: 'req-7' };
    const api = new Api({ fetch: server(() => json(400, body)).f, store: memoryStore(null) });
    const e = (await api.post('/api/auth/register', {}).catch((x) => x)) as ApiError;
    expect(e.status).toBe(400);
    expect(e.message).toBe('some fields are invalid');
    expect(e.requestId).toBe('req-7');
    expect(e.fieldErrors()).toEqual({ email: 'must be a valid email address' });
  });

  it('answers a readable error for a body that is not the error shape', async () => {
    const api = new Api({ fetch: server(() => new Response('<html>bad gateway</html>', { status: 502, statusText: 'Bad Gateway' })).f, store: memoryStore(null) });
    await expect(api.get('/api/health')).rejects.toMatchObject({ status: 502, code: 'http_502' });
  });
});

describe('reading who is signed in', () => {
  it('signs out only when the server says so; a busy or absent server keeps the session', () => {
    expect(signedOutBy(new ApiError(401, 'invalid_token', 'expired'))).toBe(true);
    expect(signedOutBy(new ApiError(403, 'tenant_suspended', 'suspended'))).toBe(true);
    expect(signedOutBy(new ApiError(400, 'refresh_token_reused', 'reused'))).toBe(true);
    expect(signedOutBy(new ApiError(429, 'rate_limited', 'too many requests'))).toBe(false);
    expect(signedOutBy(new ApiError(503, 'unavailable', 'down'))).toBe(false);
    expect(signedOutBy(new TypeError('Failed to fetch'))).toBe(false);
  });
});

describe('request bodies', () => {
  it('sends a file (an archive to import) as it is, with its own content type; objects as JSON', async () => {
    const seen: { type: string | null; body: unknown }[] = [];
    const f = (async (_input: RequestInfo | URL, init: RequestInit = {}) => {
      seen.push({ type: new Headers(init.headers).get('content-type'), body: init.body });
      return json(201, { ok: true });
    }) as typeof fetch;
    const api = new Api({ fetch: f, store: memoryStore({ accessToken: 'at0', refreshToken: 'rt0', expiresAt: Date.now() + 600_000 }) });
    const archive = new Blob([new Uint8Array([0x1f, 0x8b, 8])]);
    await api.raw('POST', '/api/tenants/import', archive, { headers: { 'content-type': 'application/gzip', 'x-export-passphrase': 'p' } });
    await api.raw('POST', '/api/tenants/t/export', { passphrase: 'a long passphrase' });
    expect(seen[0].type).toBe('application/gzip');
    expect(seen[0].body).toBe(archive);
    expect(seen[1].type).toBe('application/json');
    expect(seen[1].body).toBe('{"passphrase":"a long passphrase"}');
  });
});

describe('fetchAll (pickers)', () => {
  it('follows the cursor to the end with the largest page', async () => {
    const seen: string[] = [];
    const api = {
      get: async <T>(path: string): Promise<T> => {
        seen.push(path);
        const u = new URL(path, 'http://x');
        const c = u.searchParams.get('cursor');
        const pages: Record<string, { data: number[]; nextCursor: string | null }> = {
          '': { data: [1, 2], nextCursor: 'a' },
          a: { data: [3], nextCursor: 'b b' },
          'b b': { data: [4], nextCursor: null },
        };
        return pages[c ?? ''] as T;
      },
    };
    expect(await fetchAll<number>(api, '/api/agents')).toEqual([1, 2, 3, 4]);
    expect(seen).toEqual(['/api/agents?limit=200', '/api/agents?limit=200&cursor=a', '/api/agents?limit=200&cursor=b+b']);
  });

  it('stops after maxPages even when the server keeps answering a cursor', async () => {
    let n = 0;
    const api = { get: async <T>(): Promise<T> => ({ data: [n++], nextCursor: 'again' }) as T };
    expect(await fetchAll<number>(api, '/api/agents', 3)).toEqual([0, 1, 2]);
  });
});
