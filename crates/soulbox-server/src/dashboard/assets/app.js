// The dashboard's entry: find out whether a session exists, then either the sign-in form or
// the navigation and the routed views.
import { session, setUnauthorizedHandler } from './api.js';
import { route, start, stop, current } from './router.js';
import { toast, toastError, hide } from './toast.js';
import { signInForm } from './views/signin.js';
import { state } from './state.js';

route('/sandboxes', () => import('./views/sandboxes.js'));
route('/sandboxes/:id/:tab?', () => import('./views/sandbox.js'));
route('/templates', () => import('./views/templates.js'));
route('/templates/:id', () => import('./views/template.js'));
route('/team', () => import('./views/team.js'));
route('/audit', () => import('./views/audit.js'));

const main = document.getElementById('main');
const topbar = document.getElementById('topbar');
let started = false;

function showSignIn(message) {
  stop();
  state.session = null;
  topbar.hidden = true;
  main.replaceChildren(signInForm(signedIn));
  if (message) toast(message, 'error');
}

function signedIn(s) {
  state.session = s;
  hide();
  topbar.hidden = false;
  document.getElementById('whoami').textContent = `${s.team} · ${s.keyName || s.keyId} · ${s.role}`;
  for (const a of document.querySelectorAll('[data-admin]')) a.hidden = s.role !== 'admin';
  if (!started) {
    started = true;
    start(main, '/sandboxes');
  } else {
    // Back from the sign-in form: render the current route again.
    window.dispatchEvent(new HashChangeEvent('hashchange'));
  }
}

setUnauthorizedHandler((err) => {
  if (state.session) showSignIn(`Signed out: ${err.message}`);
});

document.getElementById('sign-out').addEventListener('click', async () => {
  try {
    await session.signOut();
  } catch (e) {
    if (e.status !== 401) { toastError(e); return; }
  }
  showSignIn();
  toast('Signed out.');
});

// The current page is marked in the navigation.
document.addEventListener('routed', () => {
  // An error belongs to the page it happened on; a success message may follow a move.
  if (document.getElementById('toast').classList.contains('error')) hide();
  const top = current().split('/')[1];
  for (const a of document.querySelectorAll('[data-nav]')) {
    a.classList.toggle('active', a.dataset.nav === top);
    if (a.dataset.nav === top) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
});

(async () => {
  try {
    signedIn(await session.current());
  } catch (e) {
    showSignIn(e.status === 401 ? '' : e.message);
  }
})();
