// The signed-in person: the API client, who they are (GET /api/auth/me) and what their role
// lets the UI offer.
import { Api, localTokenStore, signedOutBy, tabLock, type AuthAnswer } from './api';

export interface User {
  id: string;
  tenantId: string | null;
  email: string;
  name: string;
  role: Role;
  createdAt: string;
  lastLoginAt: string | null;
}
export type Role = 'PLATFORM_ADMIN' | 'TENANT_ADMIN' | 'TENANT_USER';
export interface Tenant {
  id: string;
  name: string;
  slug: string;
  status: 'active' | 'suspended';
  settings: Record<string, unknown>;
  createdAt: string;
  updatedAt: string;
}
interface Me {
  user: User | null;
  tenant: Tenant | null;
  role: Role;
  via: string;
}

const ACTING_KEY = 'aigentable.acting';

class Session {
  user = $state<User | null>(null);
  tenant = $state<Tenant | null>(null);
  role = $state<Role | null>(null);
  /** A platform admin's chosen workspace (every request says X-Tenant-Id), or null. */
  acting = $state<Tenant | null>(null);
  /** Why the last session ended by itself (shown on the sign-in page). */
  ended = $state<string | null>(null);
  ready = $state(false);
  /** Why who is signed in could not be read (too many requests, server down): the session is
   * kept and the app offers to try again, instead of pretending nobody is signed in. */
  unreachable = $state<string | null>(null);

  api = new Api({
    fetch: (i, init) => fetch(i, init),
    store: localTokenStore(),
    lock: tabLock,
    onSessionEnded: (reason) => {
      this.clear();
      this.ended =
        reason === 'refresh_token_reused'
          ? 'Your session was ended because its token was used twice (possibly stolen). Please sign in again.'
          : 'Your session has ended. Please sign in again.';
    },
  });

  get isAdmin(): boolean {
    return this.role === 'TENANT_ADMIN' || this.role === 'PLATFORM_ADMIN';
  }
  get isPlatformAdmin(): boolean {
    return this.role === 'PLATFORM_ADMIN';
  }

  private clear() {
    this.user = null;
    this.tenant = null;
    this.role = null;
    this.acting = null;
    this.api.actingTenant = null;
    sessionStorage.removeItem(ACTING_KEY);
  }

  /** A platform admin works in `t` as if signed in there (the server logs it). */
  actIn(t: Tenant): void {
    sessionStorage.setItem(ACTING_KEY, t.id);
    this.api.actingTenant = t.id;
    this.acting = t;
    this.tenant = t;
  }

  stopActing(): void {
    sessionStorage.removeItem(ACTING_KEY);
    this.api.actingTenant = null;
    this.acting = null;
    this.tenant = null;
  }

  /** Loads who is signed in (if anyone). */
  async load(): Promise<void> {
    try {
      if (this.api.signedIn) {
        const me = await this.api.get<Me>('/api/auth/me');
        this.user = me.user;
        this.tenant = me.tenant;
        this.role = me.role;
        const acting = sessionStorage.getItem(ACTING_KEY);
        if (me.role === 'PLATFORM_ADMIN' && acting) {
          this.api.actingTenant = acting;
          try {
            this.actIn(await this.api.get<Tenant>(`/api/tenants/${acting}`));
          } catch {
            this.stopActing();
          }
        }
      }
      this.unreachable = null;
    } catch (e) {
      this.clear();
      if (!signedOutBy(e)) this.unreachable = e instanceof Error ? e.message : String(e);
    } finally {
      this.ready = true;
    }
  }

  async signedIn(a: AuthAnswer): Promise<void> {
    this.api.accept(a);
    this.ended = null;
    await this.load();
  }

  async signOut(): Promise<void> {
    await this.api.signOut();
    this.clear();
  }
}

export const session = new Session();

// Another tab signed out or in: follow it.
addEventListener('storage', (e) => {
  if (e.key === 'aigentable.session') {
    if (e.newValue === null) location.assign('/login');
    else if (e.oldValue === null) location.reload();
  }
});
