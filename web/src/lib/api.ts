// The API client: JSON requests with the session's bearer token, the API's error body turned
// into an ApiError, silent refresh of the access token (one refresh at a time, across tabs),
// and sign-out when the session is gone (refresh token reused, revoked or expired).

export interface Tokens {
  accessToken: string;
  refreshToken: string;
  /** When the access token expires, ms since the epoch. */
  expiresAt: number;
}

/** Where the tokens live between page loads (localStorage in the app, a map in tests). */
export interface TokenStore {
  load(): Tokens | null;
  save(t: Tokens | null): void;
}

/** An error answer of the API: `{error: {code, message, details}, requestId}`. */
export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
    public details?: unknown,
    public requestId?: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }

  /** Per-field messages of a `validation_failed` answer, keyed by field name. */
  fieldErrors(): Record<string, string> {
    const out: Record<string, string> = {};
    const d = this.details as { fields?: { field: string; message: string }[] } | undefined;
    for (const f of d?.fields ?? []) out[f.field] = f.message;
    return out;
  }
}

/** Codes that mean the session is over: sign out, never retry. */
export const SESSION_OVER = new Set([
  'refresh_token_reused',
  'invalid_refresh_token',
  'session_revoked',
]);

/** Whether a failed `GET /api/auth/me` means nobody is signed in here (the UI shows the
 * sign-in page) rather than a passing trouble (429, 5xx, no network: say so and retry). */
export function signedOutBy(e: unknown): boolean {
  return e instanceof ApiError && (e.status === 401 || e.status === 403 || SESSION_OVER.has(e.code));
}

/** Refresh this long before the access token expires (clock skew, slow networks). */
export const REFRESH_MARGIN_MS = 30_000;

export interface ApiOptions {
  fetch: typeof fetch;
  store: TokenStore;
  now?: () => number;
  /** Called once when the session ends by itself (not by signOut). */
  onSessionEnded?: (reason: string) => void;
  /** Runs `f` under a lock shared by the browser's tabs (navigator.locks); plain call otherwise. */
  lock?: <T>(f: () => Promise<T>) => Promise<T>;
}

/** The body of an answer we cannot read as JSON, as an ApiError. */
async function errorOf(res: Response): Promise<ApiError> {
  let body: unknown = null;
  try {
    body = await res.json();
  } catch {
    /* not JSON */
  }
  const e = (body as { error?: { code?: string; message?: string; details?: unknown }; requestId?: string } | null)
    ?.error;
  if (e && typeof e.code === 'string') {
    return new ApiError(res.status, e.code, e.message ?? e.code, e.details, (body as { requestId?: string }).requestId);
  }
  return new ApiError(res.status, 'http_' + res.status, `the server answered ${res.status} ${res.statusText}`.trim());
}

export interface AuthAnswer {
  accessToken: string;
  refreshToken: string;
  expiresIn: number;
  [k: string]: unknown;
}

export class Api {
  private fetch: typeof fetch;
  private store: TokenStore;
  private now: () => number;
  private lock: <T>(f: () => Promise<T>) => Promise<T>;
  private refreshing: Promise<Tokens> | null = null;
  onSessionEnded: (reason: string) => void;
  /** A platform admin's chosen tenant (sent as X-Tenant-Id), or null. */
  actingTenant: string | null = null;

  constructor(o: ApiOptions) {
    this.fetch = o.fetch;
    this.store = o.store;
    this.now = o.now ?? Date.now;
    this.lock = o.lock ?? ((f) => f());
    this.onSessionEnded = o.onSessionEnded ?? (() => {});
  }

  get signedIn(): boolean {
    return this.store.load() !== null;
  }

  /** Keeps the tokens of a sign-in, sign-up or invitation answer. */
  accept(a: AuthAnswer): void {
    this.store.save({
      accessToken: a.accessToken,
      refreshToken: a.refreshToken,
      expiresAt: this.now() + a.expiresIn * 1000,
    });
  }

  /** Ends the session on the server (best effort) and forgets the tokens. */
  async signOut(): Promise<void> {
    const t = this.store.load();
    this.store.save(null);
    if (!t) return;
    try {
      await this.fetch('/api/auth/logout', {
        method: 'POST',
        headers: { authorization: `Bearer ${t.accessToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ refreshToken: t.refreshToken }),
      });
    } catch {
      /* offline: the tokens are gone here anyway */
    }
  }

  private endSession(reason: string): void {
    if (this.store.load() === null) return;
    this.store.save(null);
    this.onSessionEnded(reason);
  }

  /**
   * A fresh pair for `stale` (the tokens the caller saw). One refresh at a time: callers that
   * arrive while one runs share it; another tab's newer tokens are used instead of spending
   * the refresh token twice (which the server treats as theft and ends the session).
   */
  refresh(stale: Tokens): Promise<Tokens> {
    if (!this.refreshing) {
      this.refreshing = this.lock(async () => {
        const current = this.store.load();
        if (!current) throw new ApiError(401, 'unauthorized', 'you are signed out');
        if (current.refreshToken !== stale.refreshToken && current.expiresAt - REFRESH_MARGIN_MS > this.now()) {
          return current;
        }
        let res: Response;
        res = await this.fetch('/api/auth/refresh', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ refreshToken: current.refreshToken }),
        });
        if (!res.ok) {
          const e = await errorOf(res);
          if (res.status === 401 || SESSION_OVER.has(e.code)) this.endSession(e.code);
          throw e;
        }
        const a = (await res.json()) as AuthAnswer;
        this.accept(a);
        return this.store.load() as Tokens;
      }).finally(() => {
        this.refreshing = null;
      });
    }
    return this.refreshing;
  }

  /** A usable access token (refreshed first when about to expire), or null when signed out. */
  async accessToken(): Promise<string | null> {
    let t = this.store.load();
    if (!t) return null;
    if (t.expiresAt - REFRESH_MARGIN_MS <= this.now()) t = await this.refresh(t);
    return t.accessToken;
  }

  private headers(token: string | null, extra?: HeadersInit): Headers {
    const h = new Headers(extra);
    if (token) h.set('authorization', `Bearer ${token}`);
    if (this.actingTenant) h.set('x-tenant-id', this.actingTenant);
    return h;
  }

  /**
   * Sends a request; a JSON `body` is serialised. Answers the raw Response when ok. An access
   * token the server no longer takes (expired early, clock skew) is refreshed once and the
   * request sent again.
   */
  async raw(method: string, path: string, body?: unknown, init: RequestInit = {}): Promise<Response> {
    // Forms and files (a Blob: an archive to import) go as they are; anything else as JSON.
    const asIs = (typeof FormData !== 'undefined' && body instanceof FormData) || (typeof Blob !== 'undefined' && body instanceof Blob);
    const send = async (token: string | null) => {
      const h = this.headers(token, init.headers);
      if (body !== undefined && !asIs) h.set('content-type', 'application/json');
      return this.fetch(path, {
        ...init,
        method,
        headers: h,
        body: body === undefined ? undefined : asIs ? (body as BodyInit) : JSON.stringify(body),
      });
    };
    const stale = this.store.load();
    const token = await this.accessToken();
    let res = await send(token);
    if (res.status === 401 && stale) {
      const e = await errorOf(res.clone());
      if (e.code === 'invalid_token') {
        const fresh = await this.refresh(this.store.load() ?? stale);
        res = await send(fresh.accessToken);
      } else if (SESSION_OVER.has(e.code)) {
        this.endSession(e.code);
      }
    }
    if (!res.ok) throw await errorOf(res);
    return res;
  }

  /** A JSON request; answers the parsed body (undefined for 204). */
  async req<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.raw(method, path, body);
    if (res.status === 204) return undefined as T;
    return (await res.json()) as T;
  }

  get<T>(path: string): Promise<T> {
    return this.req<T>('GET', path);
  }
  post<T>(path: string, body?: unknown): Promise<T> {
    return this.req<T>('POST', path, body ?? {});
  }
  put<T>(path: string, body: unknown): Promise<T> {
    return this.req<T>('PUT', path, body);
  }
  del(path: string): Promise<void> {
    return this.req<void>('DELETE', path);
  }
}

/** A page of a list: `{data, nextCursor}`. */
export interface Page<T> {
  data: T[];
  nextCursor: string | null;
}

/** `path` with `limit` and `cursor` (and other set params) in its query string. */
export function pageUrl(path: string, cursor: string | null, params: Record<string, string | undefined> = {}): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== '') q.set(k, v);
  if (cursor) q.set('cursor', cursor);
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

/** localStorage-backed tokens (the browser). */
export function localTokenStore(key = 'aigentable.session'): TokenStore {
  return {
    load() {
      try {
        const raw = localStorage.getItem(key);
        return raw ? (JSON.parse(raw) as Tokens) : null;
      } catch {
        return null;
      }
    },
    save(t) {
      if (t) localStorage.setItem(key, JSON.stringify(t));
      else localStorage.removeItem(key);
    },
  };
}

/** A lock shared by the tabs of this origin, where the browser has one. */
export function tabLock<T>(f: () => Promise<T>): Promise<T> {
  const locks = (globalThis.navigator as Navigator | undefined)?.locks;
  if (!locks) return f();
  return locks.request('aigentable.refresh', f) as Promise<T>;
}

/**
 * Every item of a list (for pickers such as "which agent"), following the cursor page by
 * page with the API's largest page; stops after `maxPages` pages so a huge workspace
 * cannot keep the page loading forever.
 */
export async function fetchAll<T>(api: Pick<Api, 'get'>, path: string, maxPages = 25): Promise<T[]> {
  const out: T[] = [];
  let cursor: string | null = null;
  for (let i = 0; i < maxPages; i++) {
    const p: Page<T> = await api.get<Page<T>>(pageUrl(path, cursor, { limit: '200' }));
    out.push(...p.data);
    cursor = p.nextCursor;
    if (!cursor) break;
  }
  return out;
}
