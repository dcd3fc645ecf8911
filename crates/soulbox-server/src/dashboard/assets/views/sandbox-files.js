// The Files tab: browse the sandbox's directories (envd's Filesystem API through the
// dashboard), download, upload, view a text file, make a directory, rename, delete.
import { h, fill } from '../dom.js';
import { envd, fileUrl, request, seg } from '../api.js';
import { bytes, time } from '../format.js';
import { toast, toastError } from '../toast.js';
import { confirmAction } from '../dialog.js';

const HOME = '/home/user';
const VIEW_MAX = 1 << 20; // larger files are downloaded, not shown

export function mount(panel, id) {
  let cwd = HOME;
  const crumbs = h('nav', { class: 'crumbs', 'aria-label': 'Path' });
  // The native file input is kept (keyboard, drag and drop onto it, tests) but drawn as a button.
  const upload = h('input', { id: 'file-upload', type: 'file', multiple: true, class: 'visually-hidden', onchange: () => uploadFiles() });
  const tbody = h('tbody');
  const viewer = h('div');
  panel.append(
    h('div', { class: 'toolbar' }, crumbs),
    h('div', { class: 'toolbar' },
      h('label', { class: 'upload btn small' }, upload, 'Upload files…'),
      h('button', { type: 'button', class: 'btn small', onclick: () => makeDir() }, 'New directory'),
      h('button', { type: 'button', class: 'btn small', onclick: () => list() }, 'Refresh')),
    h('div', { class: 'table-wrap' }, h('table', { class: 'list', id: 'file-list' },
      h('thead', {}, h('tr', {}, ['Name', 'Size', 'Modified', 'Permissions', 'Owner', 'Actions'].map((t) => h('th', { scope: 'col' }, t)))),
      tbody)),
    viewer);

  const join = (dir, name) => (dir === '/' ? '' : dir) + '/' + name;

  function renderCrumbs() {
    const parts = cwd.split('/').filter(Boolean);
    const items = [h('button', { type: 'button', onclick: () => go('/') }, '/')];
    parts.forEach((p, i) => {
      const path = '/' + parts.slice(0, i + 1).join('/');
      items.push(h('button', { type: 'button', dataset: { crumb: path }, onclick: () => go(path) }, p));
      if (i < parts.length - 1) items.push(h('span', { class: 'muted' }, '/'));
    });
    fill(crumbs, items);
  }

  function go(path) {
    cwd = path;
    fill(viewer);
    list();
  }

  async function list() {
    renderCrumbs();
    fill(tbody, h('tr', { class: 'empty' }, h('td', { colspan: 6 }, 'Loading…')));
    let entries;
    try {
      entries = (await envd(id, 'filesystem.Filesystem/ListDir', { path: cwd, depth: 1 })).entries || [];
    } catch (e) {
      fill(tbody, h('tr', { class: 'empty' }, h('td', { colspan: 6 }, `Cannot list ${cwd}: ${e.message}`)));
      if (e.status !== 401) toastError(e);
      return;
    }
    const isDir = (e) => e.type === 'FILE_TYPE_DIRECTORY';
    entries.sort((a, b) => (isDir(b) - isDir(a)) || a.name.localeCompare(b.name));
    const rows = [];
    if (cwd !== '/') {
      const up = cwd.replace(/\/[^/]+$/, '') || '/';
      rows.push(h('tr', { dataset: { path: up } },
        h('td', { dataset: { label: 'Name' }, colspan: 6 }, h('button', { type: 'button', class: 'file-name dir', onclick: () => go(up) }, '..'))));
    }
    for (const e of entries) rows.push(row(e, isDir(e)));
    if (!entries.length) rows.push(h('tr', { class: 'empty' }, h('td', { colspan: 6 }, 'Empty directory.')));
    fill(tbody, rows);
  }

  function row(e, dir) {
    const path = e.path || join(cwd, e.name);
    const link = e.symlinkTarget ? ` → ${e.symlinkTarget}` : '';
    const name = dir
      ? h('button', { type: 'button', class: 'file-name dir', onclick: () => go(path) }, e.name + link)
      : h('button', { type: 'button', class: 'file-name', title: 'View', onclick: () => view(e, path) }, e.name + link);
    const acts = [];
    if (!dir) {
      acts.push(h('a', { class: 'btn small', href: fileUrl(id, path), download: e.name, dataset: { download: path } }, 'Download'));
    }
    acts.push(h('button', { type: 'button', class: 'btn small', onclick: () => rename(path, e.name) }, 'Rename'));
    acts.push(h('button', { type: 'button', class: 'btn small danger', onclick: () => remove(path, dir) }, 'Delete'));
    return h('tr', { dataset: { path } },
      h('td', { dataset: { label: 'Name' } }, name),
      h('td', { class: 'num', dataset: { label: 'Size' } }, dir ? '–' : bytes(e.size)),
      h('td', { class: 'num', dataset: { label: 'Modified' } }, time(e.modifiedTime)),
      h('td', { class: 'mono', dataset: { label: 'Permissions' } }, e.permissions || ''),
      h('td', { dataset: { label: 'Owner' } }, [e.owner, e.group].filter(Boolean).join(':')),
      h('td', { dataset: { label: 'Actions' } }, h('div', { class: 'actions' }, acts)));
  }

  // A text file is shown in a <pre> (as text: never as HTML); anything else is offered for download.
  async function view(e, path) {
    const head = h('div', { class: 'toolbar' }, h('strong', { class: 'mono' }, path),
      h('a', { class: 'btn small', href: fileUrl(id, path), download: e.name }, 'Download'),
      h('button', { type: 'button', class: 'btn small', onclick: () => fill(viewer) }, 'Close'));
    if (Number(e.size) > VIEW_MAX) {
      fill(viewer, head, h('p', { class: 'muted' }, `${bytes(e.size)}: too large to show here; download it.`));
      return;
    }
    try {
      const res = (await request('GET', fileUrl(id, path), { raw: true })).data;
      const buf = await res.arrayBuffer();
      let text;
      try {
        text = new TextDecoder('utf-8', { fatal: true }).decode(buf);
      } catch {
        fill(viewer, head, h('p', { class: 'muted' }, 'Not UTF-8 text (a binary file?): download it.'));
        return;
      }
      fill(viewer, head, h('pre', { id: 'file-view', class: 'viewer' }, text));
    } catch (err) {
      toastError(err);
    }
  }

  async function uploadFiles() {
    const files = [...upload.files];
    if (!files.length) return;
    let done = 0;
    for (const f of files) {
      const body = new FormData();
      body.append('file', f, f.name);
      const path = join(cwd, f.name);
      try {
        await request('POST', `/sandboxes/${seg(id)}/envd/files?path=${encodeURIComponent(path)}`, { body });
        done++;
      } catch (err) {
        toastError(new Error(`Upload of ${f.name} failed: ${err.message}`));
      }
    }
    upload.value = '';
    if (done) toast(done === 1 ? `Uploaded ${files[0].name}.` : `Uploaded ${done} files.`);
    list();
  }

  async function makeDir() {
    const name = await ask('New directory', 'Name of the directory:');
    if (!name) return;
    try {
      await envd(id, 'filesystem.Filesystem/MakeDir', { path: join(cwd, name) });
      list();
    } catch (e) { toastError(e); }
  }

  async function rename(path, old) {
    const name = await ask('Rename', `New name for ${old}:`, old);
    if (!name || name === old) return;
    try {
      await envd(id, 'filesystem.Filesystem/Move', { source: path, destination: join(cwd, name) });
      list();
    } catch (e) { toastError(e); }
  }

  async function remove(path, dir) {
    if (!(await confirmAction(`Delete ${dir ? 'directory' : 'file'}?`, `${path}${dir ? ' and everything in it' : ''} will be deleted.`, 'Delete'))) return;
    try {
      await envd(id, 'filesystem.Filesystem/Remove', { path });
      toast(`Deleted ${path}.`);
      list();
    } catch (e) { toastError(e); }
  }

  list();
  return {};
}

/** A one-field in-page prompt (window.prompt is blocked in some embeddings and untestable). */
function ask(title, label, value = '') {
  const input = h('input', { type: 'text', value, class: 'grow', 'aria-label': label });
  const dlg = h('dialog', { class: 'dialog' });
  document.body.append(dlg);
  return new Promise((resolve) => {
    const done = (v) => { if (dlg.open) dlg.close(); dlg.remove(); resolve(v); };
    dlg.append(h('form', { onsubmit: (ev) => {
      ev.preventDefault();
      const v = input.value.trim();
      if (v.includes('/')) { toast('A name cannot contain "/".', 'error'); return; }
      done(v);
    } },
    h('h2', {}, title), h('p', {}, label), h('div', { class: 'toolbar' }, input),
    h('div', { class: 'dialog-actions' },
      h('button', { type: 'button', class: 'btn', onclick: () => done('') }, 'Cancel'),
      h('button', { type: 'submit', class: 'btn primary' }, 'OK'))));
    dlg.addEventListener('cancel', () => done(''));
    dlg.showModal();
    input.select();
  });
}
