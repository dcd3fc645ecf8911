// Kill, pause, resume and extend: shared by the list and a sandbox's page. Each reports the
// server's answer in #toast (a 403 names the key's role) and resolves true when it was done.
import { request, seg, serverNow } from './api.js';
import { confirmAction } from './dialog.js';
import { toast, toastError } from './toast.js';
import { h } from './dom.js';
import { duration } from './format.js';

export async function kill(id) {
  const ok = await confirmAction('Kill sandbox?',
    `Sandbox ${id} and everything in it (processes, files) will be gone for good.`, 'Kill');
  if (!ok) return false;
  return act(() => request('DELETE', `/sandboxes/${seg(id)}`), `Killed ${id}.`);
}

export const pause = (id) =>
  act(() => request('POST', `/sandboxes/${seg(id)}/pause`, { body: {} }), `Paused ${id}.`);

// A resumed sandbox runs 5 minutes; extend it from there.
export const resume = (id) =>
  act(() => request('POST', `/sandboxes/${seg(id)}/resume`, { body: { timeout: 300 } }), `Resumed ${id} for 5 minutes.`);

const CHOICES = [['+5 min', 300], ['+30 min', 1800], ['+1 h', 3600], ['+1 day', 86400]];

/** Asks how long, then moves the end time: POST /timeout sets it to now + timeout. */
export async function extend(sb) {
  const seconds = await pickExtension(sb.sandboxID);
  if (!seconds) return false;
  const now = serverNow();
  const end = Math.max(Date.parse(sb.endAt) || now, now) + seconds * 1000;
  const timeout = Math.ceil((end - now) / 1000);
  return act(() => request('POST', `/sandboxes/${seg(sb.sandboxID)}/timeout`, { body: { timeout } }),
    `${sb.sandboxID} now ends in ${duration(timeout)}.`);
}

async function act(fn, done) {
  try {
    await fn();
    toast(done);
    return true;
  } catch (e) {
    toastError(e);
    return false;
  }
}

let picker = null;
function pickExtension(id) {
  if (!picker) {
    picker = h('dialog', { id: 'extend-dialog', class: 'dialog' });
    document.body.append(picker);
  }
  return new Promise((resolve) => {
    const done = (v) => { if (picker.open) picker.close(); resolve(v); };
    const custom = h('input', { type: 'number', min: '1', step: '1', id: 'extend-minutes', placeholder: 'minutes', class: 'grow' });
    picker.replaceChildren(
      h('h2', {}, 'Extend timeout'),
      h('p', { class: 'muted small' }, `Adds time to the end of ${id}.`),
      h('div', { class: 'actions' }, CHOICES.map(([label, s]) =>
        h('button', { type: 'button', class: 'btn', dataset: { extend: String(s) }, onclick: () => done(s) }, label))),
      h('form', { class: 'toolbar', onsubmit: (ev) => {
        ev.preventDefault();
        const m = Number(custom.value);
        if (Number.isFinite(m) && m > 0) done(Math.round(m * 60));
      } }, custom, h('button', { type: 'submit', class: 'btn' }, 'Add minutes')),
      h('div', { class: 'dialog-actions' }, h('button', { type: 'button', class: 'btn', onclick: () => done(0) }, 'Cancel')));
    picker.addEventListener('cancel', () => resolve(0), { once: true });
    picker.showModal();
  });
}
