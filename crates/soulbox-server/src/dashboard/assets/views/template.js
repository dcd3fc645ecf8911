// One template: its facts and builds, each build's layers with their sizes, and a build's
// logs, streamed (polled every second with logsOffset) while it runs.
import { h, fill } from '../dom.js';
import { get, seg } from '../api.js';
import { bytes, time, duration } from '../format.js';
import { toastError } from '../toast.js';

const POLL_MS = 1000;
const RUNNING = new Set(['building', 'waiting']);

export function mount(root, { id }) {
  const body = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  root.append(h('p', { class: 'small' }, h('a', { href: '#/templates' }, '← Templates')), body);
  let stopped = false;
  let pollTimer = 0;
  let reloadTimer = 0;

  async function load() {
    let t;
    try {
      // Built-in templates are not the team's: GET /templates/<id> does not know them.
      const defaults = await get('/default-templates').catch(() => []);
      const d = defaults.find((x) => x.templateID === id);
      if (d) return builtin(d);
      t = await get(`/templates/${seg(id)}`);
    } catch (e) {
      fill(body, h('p', { class: 'danger-text' }, e.message));
      if (e.status !== 401) toastError(e);
      return;
    }
    if (stopped) return;
    const name = (t.names || t.aliases || [])[0] || t.templateID;
    const builds = t.builds || [];
    const logs = h('pre', { class: 'logs', id: 'build-logs' });
    const logHead = h('h2', {}, 'Build logs');
    fill(body,
      h('div', { class: 'page-head' }, h('h1', {}, name), h('span', { class: `badge ${t.buildStatus}` }, t.buildStatus)),
      facts([
        ['ID', t.templateID], ['Resources', `${t.cpuCount} vCPU · ${t.memoryMB} MiB · ${t.diskSizeMB} MiB disk`],
        ['Created', time(t.createdAt)], ['Updated', time(t.updatedAt)], ['Visibility', t.public ? 'public' : 'team only'],
        ['Tags', (t.tags || []).map((x) => (typeof x === 'string' ? x : x.tag || x.name || JSON.stringify(x))).join(', ') || '–'],
      ]),
      h('h2', {}, 'Builds'),
      h('div', { class: 'table-wrap' }, h('table', { class: 'list', id: 'build-list' },
        h('thead', {}, h('tr', {}, ['Build', 'Status', 'Started', 'Took', 'Layers', 'Logs'].map((x) => h('th', { scope: 'col' }, x)))),
        h('tbody', {}, builds.length ? builds.map((b) => buildRow(b, () => showLogs(b, logs, logHead)))
          : h('tr', { class: 'empty' }, h('td', { colspan: 6 }, 'No builds.'))))),
      logHead, logs);
    // The newest build's logs are shown at once, streaming while it runs.
    if (builds.length) showLogs(builds[0], logs, logHead);
    else fill(logs, 'No builds yet.');
  }

  // Built-in templates are built on the server (soulbox template build): no builds to list.
  function builtin(t) {
    if (stopped) return;
    fill(body,
        h('div', { class: 'page-head' }, h('h1', {}, t.templateID), h('span', { class: `badge ${t.buildStatus}` }, t.buildStatus)),
        t.description ? h('p', {}, t.description) : null,
        facts([['Kind', 'built-in (built on the server by soulbox template build)'], ['Layer', t.buildID],
          ['Resources', `${t.cpuCount} vCPU · ${t.memoryMB} MiB · ${t.diskSizeMB} MiB disk (defaults)`],
          ['Built', time(t.createdAt)]]));
  }

  async function showLogs(b, pre, headEl) {
    clearTimeout(pollTimer);
    const token = {};
    showLogs.current = token;
    fill(headEl, `Build logs · ${b.buildID}`);
    fill(pre);
    let offset = 0;
    const poll = async () => {
      if (stopped || showLogs.current !== token) return;
      try {
        const s = await get(`/templates/${seg(id)}/builds/${seg(b.buildID)}/status?logsOffset=${offset}`);
        if (stopped || showLogs.current !== token) return;
        const lines = s.logs || [];
        offset += lines.length;
        if (lines.length) {
          const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
          pre.append(lines.join('\n') + '\n');
          if (atBottom) pre.scrollTop = pre.scrollHeight;
        }
        if (RUNNING.has(s.status)) {
          pollTimer = setTimeout(poll, POLL_MS);
        } else {
          if (!offset) pre.append('(no log lines)');
          if (s.reason) pre.append(`\n${typeof s.reason === 'string' ? s.reason : (s.reason.message || JSON.stringify(s.reason))}\n`);
          // A build that just ended changes the list (status, layers).
          if (b.status !== s.status) reloadTimer = setTimeout(load, 500);
        }
      } catch (e) {
        if (e.status !== 401) toastError(e);
      }
    };
    poll();
  }

  load();
  return () => { stopped = true; clearTimeout(pollTimer); clearTimeout(reloadTimer); };
}

function facts(items) {
  return h('dl', { class: 'facts' }, items.map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v))));
}

function buildRow(b, onLogs) {
  const layers = b.layers || [];
  const total = layers.reduce((n, l) => n + (l.sizeBytes || 0), 0);
  const took = b.finishedAt ? duration((Date.parse(b.finishedAt) - Date.parse(b.createdAt)) / 1000) : '–';
  return h('tr', { dataset: { buildId: b.buildID } },
    h('td', { class: 'id', dataset: { label: 'Build' } }, b.buildID),
    h('td', { dataset: { label: 'Status' } }, h('span', { class: `badge ${b.status}` }, b.status)),
    h('td', { class: 'num', dataset: { label: 'Started' } }, time(b.createdAt)),
    h('td', { class: 'num', dataset: { label: 'Took' } }, took),
    h('td', { dataset: { label: 'Layers' } }, layers.length
      ? h('details', { class: 'layers' }, h('summary', {}, `${layers.length} layers · ${bytes(total)}`),
        h('table', { class: 'list' }, h('tbody', {}, layers.map((l) => h('tr', {},
          h('td', { class: 'mono meta', dataset: { label: 'Made by' } }, l.madeBy || l.id),
          h('td', { class: 'num', dataset: { label: 'Size' } }, l.sizeBytes == null ? '–' : bytes(l.sizeBytes)))))))
      : '–'),
    h('td', { dataset: { label: 'Logs' } }, h('button', { type: 'button', class: 'btn small', onclick: onLogs }, 'Show')));
}
