// A list page backed by the API's cursor pagination: the first page, then "Load more".
import type { Api, Page } from './api';
import { pageUrl } from './api';

export class Paged<T> {
  items = $state<T[]>([]);
  next = $state<string | null>(null);
  loading = $state(false);
  error = $state<unknown>(null);
  loaded = $state(false);

  constructor(
    private api: Api,
    private path: string,
    public params: Record<string, string | undefined> = {},
  ) {}

  /** Loads the first page again (after a change or a filter). */
  async reload(): Promise<void> {
    await this.fetch(null, true);
  }

  async more(): Promise<void> {
    if (this.next) await this.fetch(this.next, false);
  }

  private async fetch(cursor: string | null, reset: boolean): Promise<void> {
    this.loading = true;
    this.error = null;
    try {
      const p = await this.api.get<Page<T>>(pageUrl(this.path, cursor, this.params));
      this.items = reset ? p.data : [...this.items, ...p.data];
      this.next = p.nextCursor;
      this.loaded = true;
    } catch (e) {
      this.error = e;
    } finally {
      this.loading = false;
    }
  }

  /** Replaces one item in place (matched by `id`). */
  update(item: T & { id: string }): void {
    this.items = this.items.map((x) => ((x as { id: string }).id === item.id ? item : x));
  }

  remove(id: string): void {
    this.items = this.items.filter((x) => (x as { id: string }).id !== id);
  }
}
