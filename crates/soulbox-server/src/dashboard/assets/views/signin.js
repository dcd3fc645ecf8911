// The sign-in form. The key goes to the server once in the body of POST /dashboard/api/session
// and is dropped from the page right after: the server answers with an HttpOnly cookie.
import { h } from '../dom.js';
import { session } from '../api.js';
import { toast } from '../toast.js';

export function signInForm(onSignedIn) {
  const input = h('input', {
    id: 'api-key', type: 'password', name: 'api-key', autocomplete: 'off', spellcheck: 'false',
    required: true, placeholder: 'e2b_…', 'aria-describedby': 'api-key-help',
  });
  const button = h('button', { id: 'sign-in', type: 'submit', class: 'btn primary' }, 'Sign in');
  const form = h('form', { class: 'signin card', novalidate: true, onsubmit: async (ev) => {
    ev.preventDefault();
    const key = input.value.trim();
    if (!key) { toast('Enter an API key.', 'error'); input.focus(); return; }
    button.disabled = true;
    try {
      const s = await session.signIn(key);
      input.value = '';
      onSignedIn(s);
    } catch (e) {
      toast(e.status === 401 ? `Sign-in failed: ${e.message}` : e.message, 'error');
      input.select();
    } finally {
      button.disabled = false;
    }
  } },
  h('h1', {}, 'SoulBox'),
  h('label', { for: 'api-key' }, 'API key'),
  input,
  h('p', { id: 'api-key-help', class: 'muted small' },
    'The key is sent once to start a session and is not stored by the page. ',
    'The session ends when you sign out, close the browser, or leave it idle.'),
  button);
  setTimeout(() => input.focus(), 0);
  return h('div', { class: 'signin-wrap' }, form);
}
