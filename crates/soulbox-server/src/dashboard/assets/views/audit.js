// Audit (admins): the team's log of changes, newest first, with filters and paging
// (X-Next-Token → nextToken).
import { h, fill } from '../dom.js';
import { request } from '../api.js';
import { time } from '../format.js';
import { toastError } from '../toast.js';

const PAGE = 50;

export function mount(root) {
  const action = h('input', { id: 'audit-action', type: 'text', placeholder: 'sandbox or sandbox.kill', size: '16' });
  const target = h('input', { id: 'audit-target', type: 'text', placeholder: 'sandbox, key… id', size: '16' });
  const keyID = h('input', { id: 'audit-key', type: 'text', placeholder: 'key id', size: '12' });
  const outcome = h('select', { id: 'audit-outcome' }, ['', 'ok', 'denied', 'error'].map((o) => h('option', { value: o }, o || 'any')));
  const since = h('input', { id: 'audit-since', type: 'datetime-local' });
  const until = h('input', { id: 'audit-until', type: 'datetime-local' });
  const tbody = h('tbody');
  const pageInfo = h('span', { class: 'muted small' });
  const newer = h('button', { type: 'button', class: 'btn small', onclick: () => { tokens.pop(); load(); } }, '← Newer');
  const older = h('button', { type: 'button', class: 'btn small', id: 'audit-older', onclick: () => { tokens.push(next); load(); } }, 'Older →');
  const lbl = (text, el) => h('label', {}, text, el);
  root.append(h('h1', {}, 'Audit log'),
    h('form', { class: 'filters', onsubmit: (ev) => { ev.preventDefault(); tokens.length = 0; load(); } },
      lbl('Action', action), lbl('Target', target), lbl('Key', keyID), lbl('Outcome', outcome),
      lbl('Since (local time)', since), lbl('Until', until),
      h('button', { type: 'submit', class: 'btn primary' }, 'Apply'),
      h('button', { type: 'reset', class: 'btn', onclick: () => setTimeout(() => { tokens.length = 0; load(); }) }, 'Clear')),
    h('div', { class: 'table-wrap' }, h('table', { class: 'list', id: 'audit-list' },
      h('thead', {}, h('tr', {}, ['Time', 'Action', 'Target', 'Outcome', 'Key / actor', 'Source', 'Detail'].map((t) => h('th', { scope: 'col' }, t)))),
      tbody)),
    h('div', { class: 'pager' }, newer, older, pageInfo));

  // tokens[i] is the nextToken of page i+1; the first page has none.
  const tokens = [];
  let next = null;
  let stopped = false;

  // datetime-local is the browser's local time; the server wants RFC 3339.
  const rfc3339 = (v) => (v ? new Date(v).toISOString() : '');

  async function load() {
    const q = new URLSearchParams();
    const add = (k, v) => { if (v) q.set(k, v); };
    add('action', action.value.trim());
    add('target', target.value.trim());
    add('keyID', keyID.value.trim());
    add('outcome', outcome.value);
    add('since', rfc3339(since.value));
    add('until', rfc3339(until.value));
    q.set('limit', String(PAGE));
    if (tokens.length) q.set('nextToken', tokens[tokens.length - 1]);
    fill(tbody, h('tr', { class: 'empty' }, h('td', { colspan: 7 }, 'Loading…')));
    try {
      const { data, headers } = await request('GET', `/audit?${q}`);
      if (stopped) return;
      next = headers.get('x-next-token');
      fill(tbody, data.length ? data.map(row) : h('tr', { class: 'empty' }, h('td', { colspan: 7 }, 'No entries match.')));
      fill(pageInfo, `page ${tokens.length + 1} · ${data.length} entries`);
    } catch (e) {
      next = null;
      fill(tbody, h('tr', { class: 'empty' }, h('td', { colspan: 7 }, e.message)));
      if (e.status !== 401) toastError(e);
    }
    older.disabled = !next;
    newer.disabled = tokens.length === 0;
  }

  load();
  return () => { stopped = true; };
}

function row(e) {
  const detail = e.detail && Object.keys(e.detail).length ? JSON.stringify(e.detail) : '';
  return h('tr', { dataset: { seq: String(e.seq) } },
    h('td', { class: 'num', dataset: { label: 'Time' }, title: e.at }, time(e.at)),
    h('td', { class: 'mono', dataset: { label: 'Action' } }, e.action),
    h('td', { class: 'id', dataset: { label: 'Target' } }, e.target || '–'),
    h('td', { dataset: { label: 'Outcome' } }, h('span', { class: `badge ${e.outcome}` }, e.status ? `${e.outcome} ${e.status}` : e.outcome)),
    h('td', { dataset: { label: 'Key / actor' } }, e.keyID ? h('span', { class: 'mono' }, e.keyID) : e.actor),
    h('td', { dataset: { label: 'Source' } }, e.source),
    h('td', { class: 'detail-json mono', dataset: { label: 'Detail' } }, detail));
}
