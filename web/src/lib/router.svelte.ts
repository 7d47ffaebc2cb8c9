// A small history router: the current path and query, `go()` to move, and a click handler
// for same-origin links so pages change without reloading.

class Route {
  path = $state(location.pathname);
  query = $state(new URLSearchParams(location.search));
}

export const route = new Route();

function sync() {
  route.path = location.pathname;
  route.query = new URLSearchParams(location.search);
}

addEventListener('popstate', sync);

export function go(to: string, replace = false): void {
  if (replace) history.replaceState(null, '', to);
  else history.pushState(null, '', to);
  sync();
  scrollTo(0, 0);
}

/** Handles clicks on in-app links (`<a href="/...">`) without a reload. */
export function interceptLinks(e: MouseEvent): void {
  if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const a = (e.target as Element | null)?.closest?.('a');
  if (!a || a.target || a.hasAttribute('download')) return;
  const href = a.getAttribute('href');
  if (!href || !href.startsWith('/') || href.startsWith('//') || href.startsWith('/api/')) return;
  e.preventDefault();
  go(href);
}

/** Matches `pattern` ("/agents/:id") against `path`; the params or null. */
export function match(pattern: string, path: string): Record<string, string> | null {
  const p = pattern.split('/').filter(Boolean);
  const s = path.split('/').filter(Boolean);
  if (p.length !== s.length) return null;
  const out: Record<string, string> = {};
  for (let i = 0; i < p.length; i++) {
    if (p[i].startsWith(':')) out[p[i].slice(1)] = decodeURIComponent(s[i]);
    else if (p[i] !== s[i]) return null;
  }
  return out;
}
