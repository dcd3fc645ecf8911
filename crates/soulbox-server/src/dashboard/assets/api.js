// Talks to the server: the dashboard's session routes and the E2B API under /dashboard/api.
// The session is an HttpOnly cookie this code never sees; the API key is sent once, in the
// sign-in body, and never kept. Every non-GET carries X-SoulBox-Dashboard: 1 (the server's
// CSRF guard, beside its Origin check).

export const BASE = '/dashboard/api';

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

// Called on any 401: the session is gone, show the sign-in form.
let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

// Server clock minus ours (from the Date header), so "time left" is right on a skewed laptop.
let skewMs = 0;
export const serverNow = () => Date.now() + skewMs;
function noteDate(res) {
  const d = Date.parse(res.headers.get('date') || '');
  if (!Number.isNaN(d)) {
    const s = d - Date.now();
    // The header has whole seconds: only a skew beyond that is real.
    skewMs = Math.abs(s) > 2000 ? s : 0;
  }
}

/** A message for a failed answer: the server's own words when it gave any. */
async function errorOf(res) {
  let body = null;
  let message = `${res.status} ${res.statusText}`.trim();
  const text = await res.text().catch(() => '');
  try {
    body = JSON.parse(text);
    if (body && typeof body.message === 'string' && body.message) message = body.message;
  } catch {
    if (text && text.length < 500) message = text.trim();
  }
  return new ApiError(res.status, message, body);
}

/**
 * request('GET', '/v2/sandboxes') → {data, headers, status}
 * body: an object (sent as JSON), FormData, or undefined. Throws ApiError on failure.
 */
export async function request(method, path, { body, signal, raw = false, quiet401 = false } = {}) {
  const headers = {};
  let payload;
  if (method !== 'GET' && method !== 'HEAD') headers['X-SoulBox-Dashboard'] = '1';
  if (body instanceof FormData) payload = body;
  else if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path.startsWith('/dashboard/') ? path : BASE + path, {
      method, headers, body: payload, signal,
      credentials: 'same-origin', cache: 'no-store', redirect: 'error',
    });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, `the server did not answer (${e.message})`);
  }
  noteDate(res);
  if (!res.ok) {
    const err = await errorOf(res);
    if (res.status === 401 && !quiet401) onUnauthorized(err);
    throw err;
  }
  if (raw) return { data: res, headers: res.headers, status: res.status };
  const text = res.status === 204 ? '' : await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = text; }
  }
  return { data, headers: res.headers, status: res.status };
}

export const get = async (path, opts) => (await request('GET', path, opts)).data;
export const post = async (path, body, opts) => (await request('POST', path, { ...opts, body })).data;
export const patch = async (path, body, opts) => (await request('PATCH', path, { ...opts, body })).data;
export const del = async (path, opts) => (await request('DELETE', path, opts)).data;

/** A path segment from data (ids come from the server, but never trust them into a URL). */
export const seg = (s) => encodeURIComponent(String(s));

// The session.
export const session = {
  current: () => get('/dashboard/api/session', { quiet401: true }),
  signIn: (apiKey) => post('/dashboard/api/session', { apiKey }, { quiet401: true }),
  signOut: () => del('/dashboard/api/session', { quiet401: true }),
};

/** A Connect-JSON unary call to the sandbox's envd (the server adds the sandbox's token). */
export const envd = (id, method, body) => post(`/sandboxes/${seg(id)}/envd/${method}`, body);

/** URL of a file in the sandbox, for a download link (GET: the cookie is enough). */
export const fileUrl = (id, path) =>
  `${BASE}/sandboxes/${seg(id)}/envd/files?path=${encodeURIComponent(path)}`;
