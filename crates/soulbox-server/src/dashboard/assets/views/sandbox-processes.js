// The Processes tab: every process in the sandbox (pids as seen inside), refreshed every 3 s
// while the tab is shown, busiest CPU first.
import { h, fill } from '../dom.js';
import { get, seg } from '../api.js';
import { bytes } from '../format.js';
import { toastError } from '../toast.js';

const REFRESH_MS = 3000;

export function mount(panel, id) {
  const tbody = h('tbody', {}, h('tr', { class: 'empty' }, h('td', { colspan: 7 }, 'Loading…')));
  const note = h('span', { class: 'muted small' });
  panel.append(h('div', { class: 'toolbar' }, note),
    h('div', { class: 'table-wrap' }, h('table', { class: 'list', id: 'process-list' },
      h('thead', {}, h('tr', {}, ['PID', 'PPID', 'User', 'State', 'CPU time', 'Memory (RSS)', 'Command'].map((t) => h('th', { scope: 'col' }, t)))),
      tbody)));
  let timer = 0;
  let visible = false;
  let failed = false;

  async function load() {
    clearTimeout(timer);
    if (document.hidden) { timer = setTimeout(load, REFRESH_MS); return; }
    try {
      const { processes = [] } = await get(`/sandboxes/${seg(id)}/processes`);
      processes.sort((a, b) => (b.cpuSeconds - a.cpuSeconds) || (a.pid - b.pid));
      fill(tbody, processes.length ? processes.map((p) => h('tr', { dataset: { pid: String(p.pid) } },
        h('td', { class: 'num', dataset: { label: 'PID' } }, String(p.pid)),
        h('td', { class: 'num', dataset: { label: 'PPID' } }, String(p.ppid)),
        h('td', { dataset: { label: 'User' } }, userOf(p)),
        h('td', { dataset: { label: 'State' } }, p.state),
        h('td', { class: 'num', dataset: { label: 'CPU time' } }, `${Number(p.cpuSeconds).toFixed(2)} s`),
        h('td', { class: 'num', dataset: { label: 'Memory (RSS)' } }, bytes(p.rssBytes)),
        h('td', { class: 'mono meta', dataset: { label: 'Command' } }, p.cmd)))
        : h('tr', { class: 'empty' }, h('td', { colspan: 7 }, 'No processes.')));
      fill(note, `${processes.length} ${processes.length === 1 ? 'process' : 'processes'} · refreshed every ${REFRESH_MS / 1000} s`);
      failed = false;
    } catch (e) {
      if (!failed && e.status !== 401) toastError(e);
      failed = true;
      fill(note, `Cannot list processes: ${e.message}`);
    }
    if (visible) timer = setTimeout(load, REFRESH_MS);
  }

  return {
    visible(v) {
      visible = v;
      if (v) load(); else clearTimeout(timer);
    },
    destroy() { visible = false; clearTimeout(timer); },
  };
}

// The server names the user, or gives the uid (names live in the sandbox's /etc/passwd).
function userOf(p) {
  if (p.user) return p.user;
  if (p.uid === 0) return 'root';
  return p.uid === undefined ? '–' : `uid ${p.uid}`;
}
