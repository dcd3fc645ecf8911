// The team's sandboxes, refreshed every 2 s: state, template, age, time left, latest CPU and
// memory, metadata, and the actions. Rows are kept by id and updated in place, so a refresh
// never swaps a button out from under the pointer.
import { h, setText, fill } from '../dom.js';
import { get, request, serverNow } from '../api.js';
import { bytes, duration, pct, metadataText, time } from '../format.js';
import { toastError } from '../toast.js';
import * as actions from '../sandbox-actions.js';

const REFRESH_MS = 2000;
const MAX_LISTED = 1000;

export function mount(root) {
  const search = h('input', {
    id: 'sandbox-search', type: 'search', class: 'grow', placeholder: 'Filter by id, template, state or metadata',
    'aria-label': 'Filter sandboxes', oninput: () => render(),
  });
  const count = h('span', { class: 'muted small' });
  const tbody = h('tbody');
  const empty = h('tr', { class: 'empty' }, h('td', { colspan: 9 }, 'Loading…'));
  tbody.append(empty);
  root.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Sandboxes'), count),
    h('div', { class: 'toolbar' }, search),
    h('div', { class: 'table-wrap' }, h('table', { class: 'list', id: 'sandbox-list' },
      h('thead', {}, h('tr', {}, ['Sandbox', 'State', 'Template', 'Age', 'Time left', 'CPU', 'Memory', 'Metadata', 'Actions']
        .map((t) => h('th', { scope: 'col' }, t)))),
      tbody)));

  const rows = new Map(); // id → {tr, cells, sb}
  let list = [];
  let metrics = {};
  let stopped = false;
  let timer = 0;
  let failed = false;
  let capped = false;

  async function refresh() {
    // A background tab does not poll (and so lets an idle session expire).
    if (document.hidden) { timer = setTimeout(refresh, REFRESH_MS); return; }
    try {
      list = await listAll();
      const running = list.filter((s) => s.state === 'running').map((s) => s.sandboxID);
      // The latest sample of each running one, 200 ids a request (short URLs).
      const chunks = [];
      for (let i = 0; i < running.length; i += 200) chunks.push(running.slice(i, i + 200));
      const answers = await Promise.all(chunks.map((ids) =>
        get(`/sandboxes/metrics?sandbox_ids=${ids.map(encodeURIComponent).join(',')}`)));
      metrics = Object.assign({}, ...answers.map((a) => a.sandboxes || {}));
      failed = false;
    } catch (e) {
      // One message per outage, not one every 2 s.
      if (!failed && e.status !== 401) toastError(e);
      failed = true;
    }
    if (stopped) return;
    render();
    timer = setTimeout(refresh, REFRESH_MS);
  }

  // Pages of 100 (the API's most), up to MAX_LISTED sandboxes.
  async function listAll() {
    const out = [];
    let token = '';
    do {
      const { data, headers } = await request('GET',
        `/v2/sandboxes?state=running,paused&limit=100${token ? '&nextToken=' + encodeURIComponent(token) : ''}`);
      out.push(...data);
      token = headers.get('x-next-token') || '';
    } while (token && out.length < MAX_LISTED);
    capped = Boolean(token);
    return out;
  }

  function matches(sb, q) {
    if (!q) return true;
    const hay = [sb.sandboxID, sb.templateID, sb.alias, sb.state, metadataText(sb.metadata)].join(' ').toLowerCase();
    return q.split(/\s+/).every((w) => hay.includes(w));
  }

  function render() {
    const q = search.value.trim().toLowerCase();
    const shown = list.filter((s) => matches(s, q));
    const seen = new Set();
    shown.forEach((sb) => {
      seen.add(sb.sandboxID);
      let r = rows.get(sb.sandboxID);
      if (!r) { r = makeRow(sb); rows.set(sb.sandboxID, r); }
      r.sb = sb;
      update(r, metrics[sb.sandboxID]);
    });
    for (const [id, r] of rows) {
      if (!seen.has(id)) { r.tr.remove(); rows.delete(id); }
    }
    // Reorder only when the order changed (moving a row would cancel a click in progress).
    const want = shown.map((s) => rows.get(s.sandboxID).tr);
    const have = [...tbody.children].filter((c) => c !== empty);
    if (want.length !== have.length || want.some((tr, i) => tr !== have[i])) {
      tbody.replaceChildren(...want);
    }
    if (!want.length) {
      fill(empty.firstChild, list.length ? 'No sandbox matches the filter.' : 'No running or paused sandboxes.');
      tbody.replaceChildren(empty);
    }
    const total = `${list.length}${capped ? '+ (the newest shown)' : ''}`;
    setText(count, list.length === shown.length ? `${total} live` : `${shown.length} of ${total}`);
  }

  function makeRow(sb) {
    const id = sb.sandboxID;
    const c = {};
    const cell = (key, label, cls) => (c[key] = h('td', { class: cls, dataset: { label } }));
    const tr = h('tr', { dataset: { sandboxId: id } },
      h('td', { class: 'id', dataset: { label: 'Sandbox' } }, h('a', { href: `#/sandboxes/${encodeURIComponent(id)}` }, id)),
      cell('state', 'State'), cell('template', 'Template'), cell('age', 'Age', 'num'), cell('left', 'Time left', 'num'),
      cell('cpu', 'CPU', 'num'), cell('mem', 'Memory', 'num'), cell('meta', 'Metadata', 'meta'),
      h('td', { dataset: { label: 'Actions' } }, h('div', { class: 'actions' },
        c.pause = btn('pause', 'Pause', () => run(actions.pause(id))),
        c.resume = btn('resume', 'Resume', () => run(actions.resume(id))),
        btn('extend', 'Extend…', () => run(actions.extend(rows.get(id)?.sb || sb))),
        btn('kill', 'Kill', () => run(actions.kill(id)), 'danger'))));
    c.badge = h('span', { class: 'badge' });
    c.state.append(c.badge);
    return { tr, c, sb };
  }

  function btn(action, label, onclick, cls = '') {
    return h('button', { type: 'button', class: `btn small ${cls}`, dataset: { action }, onclick }, label);
  }

  // After an action: refresh at once rather than in up to 2 s.
  async function run(p) {
    if (await p) { clearTimeout(timer); refresh(); }
  }

  function update(r, m) {
    const { sb, c } = r;
    setText(c.badge, sb.state);
    c.badge.className = `badge ${sb.state}`;
    setText(c.template, sb.alias && sb.alias !== sb.templateID ? `${sb.alias} (${sb.templateID})` : sb.templateID);
    const now = serverNow();
    setText(c.age, duration((now - Date.parse(sb.startedAt)) / 1000));
    c.age.title = `started ${time(sb.startedAt)}`;
    const left = (Date.parse(sb.endAt) - now) / 1000;
    setText(c.left, sb.state === 'paused' ? '–' : duration(left));
    c.left.title = `ends ${time(sb.endAt)}`;
    if (m && sb.state === 'running') {
      setText(c.cpu, `${pct(m.cpuUsedPct)} of ${sb.cpuCount} vCPU`);
      setText(c.mem, `${bytes(m.memUsed)} / ${bytes(m.memTotal)}`);
    } else {
      setText(c.cpu, sb.state === 'running' ? '…' : '–');
      setText(c.mem, `${sb.memoryMB} MiB`);
    }
    setText(c.meta, metadataText(sb.metadata) || '–');
    c.pause.disabled = sb.state !== 'running';
    c.resume.disabled = sb.state !== 'paused';
  }

  refresh();
  return () => { stopped = true; clearTimeout(timer); };
}
