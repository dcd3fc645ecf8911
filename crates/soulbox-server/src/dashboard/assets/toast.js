// One visible line for the outcome of an action (#toast). Errors stay until dismissed or
// replaced, so a refused action (403, 409, 429) is never missed; successes fade.
import { h, fill } from './dom.js';

let timer = 0;

export function toast(message, kind = 'ok') {
  const el = document.getElementById('toast');
  clearTimeout(timer);
  el.className = `toast ${kind}`;
  fill(el,
    h('span', { class: 'toast-text' }, message),
    h('button', { type: 'button', class: 'toast-close', 'aria-label': 'Dismiss', onclick: hide }, '×'));
  el.hidden = false;
  if (kind === 'ok') timer = setTimeout(hide, 4000);
}

export const toastError = (e) => toast(e && e.message ? e.message : String(e), 'error');

export function hide() {
  const el = document.getElementById('toast');
  el.hidden = true;
}
