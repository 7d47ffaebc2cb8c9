// The staff socket (Socket.IO at /socket.io): connects with the session's access token,
// renews it when the server says it expired, and hands events to the pages. The client
// library is loaded on first use, so pages without live data do not pay for it.
import type { Socket } from 'socket.io-client';
import { session } from './session.svelte';

type Handler = (data: any) => void; // eslint-disable-line @typescript-eslint/no-explicit-any

class Live {
  connected = $state(false);
  error = $state<string | null>(null);
  private socket: Socket | null = null;
  private starting: Promise<Socket> | null = null;
  private handlers = new Map<string, Set<Handler>>();

  /** Connects once; later calls share the connection. */
  start(): Promise<Socket> {
    if (!this.starting) {
      this.starting = import('socket.io-client').then(({ io }) => {
        const s = io({
          path: '/socket.io',
          // Called on every (re)connect: a fresh token each time.
          auth: (cb) => {
            session.api.accessToken().then(
              (token) => cb(session.acting ? { token, tenantId: session.acting.id } : { token }),
              () => cb({}),
            );
          },
        });
        s.on('connect', () => {
          this.connected = true;
          this.error = null;
        });
        s.on('disconnect', (reason) => {
          this.connected = false;
          // The server ended it (token expired): connect again with a renewed token.
          if (reason === 'io server disconnect') s.connect();
        });
        s.on('connect_error', (err: Error & { data?: { code?: string; message?: string } }) => {
          this.connected = false;
          this.error = err.data?.message ?? err.message;
          if (err.data?.code === 'token_expired' || err.data?.code === 'invalid_token') {
            setTimeout(() => s.connect(), 500);
          }
        });
        s.on('session_expired', () => {
          /* the disconnect that follows reconnects with a renewed token */
        });
        s.onAny((event: string, data: unknown) => {
          for (const h of this.handlers.get(event) ?? []) h(data);
        });
        this.socket = s;
        return s;
      });
    }
    return this.starting;
  }

  /** Subscribes to a server event; answers the unsubscribe function. */
  on(event: string, h: Handler): () => void {
    void this.start();
    let set = this.handlers.get(event);
    if (!set) this.handlers.set(event, (set = new Set()));
    set.add(h);
    return () => set!.delete(h);
  }

  /** Sends an event and waits for its ack (`{ok, ...}`); throws the ack's error. */
  async request<T = Record<string, unknown>>(event: string, data: unknown): Promise<T> {
    const s = await this.start();
    const ack = (await s.timeout(15_000).emitWithAck(event, data)) as { ok: boolean; error?: { code: string; message: string } } & T;
    if (!ack.ok) throw new Error(ack.error?.message ?? `${event} failed`);
    return ack;
  }

  /** Fire and forget (typing). */
  send(event: string, data: unknown): void {
    if (this.socket?.connected) this.socket.emit(event, data);
  }

  stop(): void {
    this.socket?.disconnect();
    this.socket = null;
    this.starting = null;
    this.connected = false;
  }
}

export const live = new Live();
