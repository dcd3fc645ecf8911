// Team: the team's quota and what it uses (every role); for admins also its API keys —
// create (the key is shown once), change a key's role, revoke.
import { h, fill } from '../dom.js';
import { get, post, patch, del, seg } from '../api.js';
import { time } from '../format.js';
import { toast, toastError } from '../toast.js';
import { confirmAction } from '../dialog.js';
import { state } from '../state.js';

const ROLES = ['admin', 'member', 'read-only'];

export function mount(root) {
  const meters = h('div', { class: 'meters' });
  const created = h('div');
  const keys = h('tbody', {}, h('tr', { class: 'empty' }, h('td', { colspan: 6 }, 'Loading…')));
  const showRevoked = h('input', { type: 'checkbox', id: 'show-revoked', onchange: () => loadKeys() });
  const name = h('input', { id: 'key-name', type: 'text', required: true, maxlength: '128', placeholder: 'name, e.g. ci-agents', class: 'grow' });
  const role = h('select', { id: 'key-role', 'aria-label': 'Role' }, ROLES.map((r) => h('option', { value: r, selected: r === 'member' }, r)));
  const admin = state.session?.role === 'admin';
  root.append(
    h('h1', {}, 'Team'),
    h('p', { class: 'muted', id: 'team-name' }, ''),
    meters);
  if (!admin) {
    root.append(h('p', { class: 'muted', id: 'keys-admin-only' }, "The team's API keys are managed by its admins."));
    loadTeam();
    return () => {};
  }
  root.append(
    h('h2', {}, 'API keys'),
    h('form', { class: 'toolbar', id: 'key-create', onsubmit: (ev) => { ev.preventDefault(); create(); } },
      name, role, h('button', { type: 'submit', class: 'btn primary', id: 'key-create-btn' }, 'Create key')),
    created,
    h('label', { class: 'small muted' }, showRevoked, ' Show revoked keys'),
    h('div', { class: 'table-wrap' }, h('table', { class: 'list', id: 'key-list' },
      h('thead', {}, h('tr', {}, ['Name', 'Prefix', 'Role', 'Created', 'Status', 'Actions'].map((t) => h('th', { scope: 'col' }, t)))),
      keys)));

  async function loadTeam() {
    try {
      const t = await get('/team');
      fill(root.querySelector('#team-name'), `Team ${t.teamID} · you are signed in with key ${t.keyID} (${t.role})`);
      const q = t.quota || {};
      const u = t.usage || {};
      const rate = q.rateLimit ? `${q.rateLimit.perSecond}/s per key, burst ${q.rateLimit.burst ?? '–'}` : 'no limit';
      fill(meters,
        meter('Running sandboxes', u.sandboxes, q.maxSandboxes, ''),
        meter('vCPUs', u.vcpus, q.maxVcpus, ''),
        meter('Memory', u.memoryMB, q.maxMemoryMB, ' MiB'),
        meter('Storage (templates, snapshots)', u.storageMB, q.maxStorageMB, ' MiB'),
        h('div', { class: 'meter card' }, h('div', { class: 'label' }, 'Request rate'), h('div', { class: 'value' }, rate)));
    } catch (e) {
      if (e.status !== 401) toastError(e);
    }
  }

  async function loadKeys() {
    try {
      const list = await get('/api-keys');
      const shown = list.filter((k) => showRevoked.checked || !k.revokedAt);
      fill(keys, shown.length ? shown.map(keyRow) : h('tr', { class: 'empty' }, h('td', { colspan: 6 }, 'No keys.')));
    } catch (e) {
      fill(keys, h('tr', { class: 'empty' }, h('td', { colspan: 6 }, e.message)));
      if (e.status !== 401) toastError(e);
    }
  }

  function keyRow(k) {
    const mine = state.session && k.id === state.session.keyId;
    const sel = h('select', { 'aria-label': `Role of ${k.name}`, disabled: Boolean(k.revokedAt), dataset: { action: 'role' },
      onchange: async () => {
        const to = sel.value;
        try {
          await patch(`/api-keys/${seg(k.id)}`, { role: to });
          toast(`${k.name} is now ${to}.`);
        } catch (e) {
          sel.value = k.role;
          toastError(e);
        }
        loadKeys();
      } }, ROLES.map((r) => h('option', { value: r, selected: r === k.role }, r)));
    return h('tr', { dataset: { keyId: k.id } },
      h('td', { dataset: { label: 'Name' } }, k.name, mine ? h('span', { class: 'muted small' }, ' (this session)') : null),
      h('td', { class: 'mono', dataset: { label: 'Prefix' } }, `${k.prefix}…`),
      h('td', { dataset: { label: 'Role' } }, sel),
      h('td', { class: 'num', dataset: { label: 'Created' } }, time(k.createdAt)),
      h('td', { dataset: { label: 'Status' } }, k.revokedAt
        ? h('span', { class: 'badge revoked', title: time(k.revokedAt) }, 'revoked') : h('span', { class: 'badge ok' }, 'active')),
      h('td', { dataset: { label: 'Actions' } }, k.revokedAt ? '' : h('button', { type: 'button', class: 'btn small danger', dataset: { action: 'revoke' },
        onclick: () => revoke(k, mine) }, 'Revoke')));
  }

  async function revoke(k, mine) {
    const ok = await confirmAction('Revoke API key?',
      `${k.name} (${k.prefix}…) stops working from the next request${mine ? ' — it is the key of this session: you will be signed out' : ''}. This cannot be undone.`, 'Revoke');
    if (!ok) return;
    try {
      await del(`/api-keys/${seg(k.id)}`);
      toast(`Revoked ${k.name}.`);
    } catch (e) { toastError(e); }
    loadKeys();
  }

  async function create() {
    const n = name.value.trim();
    if (!n) { toast('Give the key a name.', 'error'); return; }
    try {
      const k = await post('/api-keys', { name: n, role: role.value });
      name.value = '';
      const code = h('code', { id: 'new-key' }, k.key);
      const copyBtn = h('button', { type: 'button', class: 'btn small', id: 'copy-key', onclick: async () => {
        try {
          await navigator.clipboard.writeText(k.key);
          toast('Copied.');
        } catch {
          // No async clipboard (plain HTTP): the key is selected for Ctrl+C.
          getSelection().selectAllChildren(code);
          toast('Press Ctrl+C to copy the selected key.');
        }
      } }, 'Copy');
      fill(created, h('div', { class: 'card notice' },
        h('strong', {}, `Key ${k.name} (${k.role}) created. `),
        h('span', {}, 'Copy it now: it is shown only this once and cannot be read back.'),
        h('div', { class: 'secret' }, code, copyBtn,
          h('button', { type: 'button', class: 'btn small', onclick: () => fill(created) }, 'Done'))));
      loadKeys();
    } catch (e) { toastError(e); }
  }

  loadTeam();
  loadKeys();
  return () => fill(created); // the key leaves the page with the view
}

function meter(label, used, max, unit) {
  const has = max !== null && max !== undefined;
  return h('div', { class: 'meter card' },
    h('div', { class: 'label' }, label),
    h('div', { class: 'value' }, `${used ?? 0}${unit}`, h('span', { class: 'muted small' }, has ? ` of ${max}${unit}` : ' · no limit')),
    has ? h('progress', { max: String(Math.max(1, max)), value: String(Math.min(used ?? 0, max)) }) : null);
}
