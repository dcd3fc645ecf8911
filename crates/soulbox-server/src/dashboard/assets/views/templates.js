// Templates: the team's own (built with the template API) and the built-in ones every team
// may start, then the team's snapshots.
import { h, fill } from '../dom.js';
import { get } from '../api.js';
import { time } from '../format.js';
import { toastError } from '../toast.js';

export function mount(root) {
  const tbody = h('tbody', {}, h('tr', { class: 'empty' }, h('td', { colspan: 7 }, 'Loading…')));
  const snaps = h('tbody', {}, h('tr', { class: 'empty' }, h('td', { colspan: 2 }, 'Loading…')));
  root.append(h('h1', {}, 'Templates'),
    h('div', { class: 'table-wrap' }, h('table', { class: 'list', id: 'template-list' },
      h('thead', {}, h('tr', {}, ['Name', 'ID', 'Status', 'Resources', 'Builds', 'Updated', 'Kind'].map((t) => h('th', { scope: 'col' }, t)))),
      tbody)),
    h('h2', {}, 'Snapshots'),
    h('p', { class: 'muted small' }, 'Made by create_snapshot() or a pause; a new sandbox can start from one by its name.'),
    h('div', { class: 'table-wrap' }, h('table', { class: 'list', id: 'snapshot-list' },
      h('thead', {}, h('tr', {}, ['Snapshot', 'Names'].map((t) => h('th', { scope: 'col' }, t)))),
      snaps)));

  let stopped = false;
  (async () => {
    try {
      const [own, builtin] = await Promise.all([get('/templates'), get('/default-templates').catch(() => [])]);
      if (stopped) return;
      const rows = [...own.map((t) => row(t, false)), ...builtin.map((t) => row(t, true))];
      fill(tbody, rows.length ? rows : h('tr', { class: 'empty' }, h('td', { colspan: 7 }, 'No templates.')));
    } catch (e) {
      fill(tbody, h('tr', { class: 'empty' }, h('td', { colspan: 7 }, e.message)));
      if (e.status !== 401) toastError(e);
    }
    try {
      const list = await get('/snapshots');
      if (stopped) return;
      fill(snaps, list.length ? list.map((s) => h('tr', { dataset: { snapshotId: s.snapshotID } },
        h('td', { class: 'id', dataset: { label: 'Snapshot' } }, s.snapshotID),
        h('td', { dataset: { label: 'Names' } }, (s.names || []).join(', '))))
        : h('tr', { class: 'empty' }, h('td', { colspan: 2 }, 'No snapshots.')));
    } catch (e) {
      fill(snaps, h('tr', { class: 'empty' }, h('td', { colspan: 2 }, e.message)));
    }
  })();
  return () => { stopped = true; };
}

function row(t, builtin) {
  const name = (t.names || t.aliases || [])[0] || t.templateID;
  return h('tr', { dataset: { templateId: t.templateID } },
    h('td', { dataset: { label: 'Name' } }, h('a', { href: `#/templates/${encodeURIComponent(t.templateID)}` }, name)),
    h('td', { class: 'id', dataset: { label: 'ID' } }, t.templateID),
    h('td', { dataset: { label: 'Status' } }, h('span', { class: `badge ${t.buildStatus}` }, t.buildStatus)),
    h('td', { class: 'num', dataset: { label: 'Resources' } }, `${t.cpuCount} vCPU · ${t.memoryMB} MiB · ${t.diskSizeMB} MiB disk`),
    h('td', { class: 'num', dataset: { label: 'Builds' } }, String(t.buildCount)),
    h('td', { class: 'num', dataset: { label: 'Updated' } }, time(t.updatedAt)),
    h('td', { dataset: { label: 'Kind' } }, builtin ? 'built-in' : (t.public ? 'team, public' : 'team')));
}
