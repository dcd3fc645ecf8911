// Hash routing: #/sandboxes, #/sandboxes/<id>[/<tab>], #/templates[/<id>], #/team, #/audit.
// Each view is mount(root, params) → an optional cleanup, run when the route changes (it
// stops the view's timers, sockets and requests).

const routes = [];
let cleanup = null;
let root = null;

export function route(pattern, load) {
  // '/sandboxes/:id/:tab?' → a regexp with named groups.
  const re = new RegExp('^' + pattern
    .replace(/\/:(\w+)\?/g, '(?:/(?<$1>[^/]+))?')
    .replace(/:(\w+)/g, '(?<$1>[^/]+)') + '/?$');
  routes.push({ re, load });
}

export function start(mainEl, fallback) {
  root = mainEl;
  window.addEventListener('hashchange', () => render(fallback));
  render(fallback);
}

export function stop() {
  if (cleanup) { try { cleanup(); } catch { /* a view's cleanup must not block the next */ } }
  cleanup = null;
}

export const current = () => location.hash.replace(/^#/, '') || '/';

async function render(fallback) {
  const path = current();
  for (const { re, load } of routes) {
    const m = re.exec(path);
    if (!m) continue;
    stop();
    const params = {};
    for (const [k, v] of Object.entries(m.groups || {})) {
      if (v !== undefined) params[k] = decodeURIComponent(v);
    }
    root.replaceChildren();
    const signal = { stopped: false };
    const view = await load();
    // A quick second navigation may have happened while the module loaded.
    if (current() !== path) return;
    const c = view.mount(root, params);
    cleanup = () => { signal.stopped = true; if (typeof c === 'function') c(); };
    document.dispatchEvent(new CustomEvent('routed', { detail: path }));
    return;
  }
  location.replace('#' + fallback);
}

export const go = (path) => { location.hash = '#' + path; };
