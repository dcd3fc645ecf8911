// The Terminal tab: a shell in the sandbox, kept open while other tabs are shown.
import { h, setText } from '../dom.js';
import { openTerminal } from '../terminal.js';
import { toastError } from '../toast.js';

export function mount(panel, id) {
  const status = h('p', { class: 'term-status muted' });
  const box = h('div', { id: 'terminal' });
  const reader = h('input', { type: 'checkbox', id: 'screen-reader', onchange: () => { term?.setScreenReader(reader.checked); term?.focus(); } });
  const again = h('button', { type: 'button', class: 'btn small', hidden: true, onclick: () => connect() }, 'Open a new shell');
  panel.append(h('div', { class: 'toolbar' }, status, again,
    h('label', { class: 'small muted', title: 'Keeps the terminal\'s rows as text for screen readers (typing from phone keyboards and IMEs does not work in this mode)' },
      reader, ' Screen reader mode')),
    h('div', { class: 'term-wrap' }, box),
    h('p', { class: 'muted small' }, 'Ctrl+Shift+C copies the selection, Ctrl+Shift+V pastes. The shell runs as the sandbox user.'));
  let term = null;
  let closed = false;

  async function connect() {
    again.hidden = true;
    term?.close();
    box.replaceChildren();
    try {
      term = await openTerminal(box, id, (text, kind) => {
        setText(status, text);
        status.className = `term-status ${kind === 'error' ? 'danger-text' : kind}`;
        if (kind === 'error' || /exited/.test(text)) again.hidden = false;
      });
      if (closed) term.close();
      else if (reader.checked) term.setScreenReader(true);
    } catch (e) {
      toastError(e);
    }
  }
  connect();

  return {
    visible(v) { if (v && term) { term.fit(); term.focus(); } },
    destroy() { closed = true; term?.close(); },
  };
}
