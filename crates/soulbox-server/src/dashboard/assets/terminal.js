// A shell in a sandbox: xterm.js on the dashboard's terminal WebSocket.
//   client → server: binary frames, the keystrokes' bytes (UTF-8); text frames, JSON
//                    {"type":"resize","cols","rows"}
//   server → client: binary frames, the terminal's output; then a text frame
//                    {"type":"exit","exitCode"} or {"type":"error","message"} before it closes
// xterm is drawn by its canvas renderer: the default DOM renderer writes <style> elements and
// style="" attributes, which the page's CSP (style-src 'self') refuses.

let loading = null;
/** Loads the vendored xterm (UMD bundles that define globals) once, on first use. */
function loadXterm() {
  loading ??= (async () => {
    await import('./vendor/xterm.js');
    await import('./vendor/addon-fit.js');
    await import('./vendor/addon-canvas.js');
    return { Terminal: globalThis.Terminal, FitAddon: globalThis.FitAddon.FitAddon, CanvasAddon: globalThis.CanvasAddon.CanvasAddon };
  })();
  return loading;
}

/**
 * Opens a terminal in `container` on sandbox `id`. onStatus(text, kind) reports the
 * connection. Returns {close(), fit(), focus()}.
 */
export async function openTerminal(container, id, onStatus) {
  const { Terminal, FitAddon, CanvasAddon } = await loadXterm();
  const term = new Terminal({
    cursorBlink: true,
    fontFamily: 'ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace',
    fontSize: 14,
    scrollback: 5000,
    // Off by default: in screen-reader mode xterm ignores `input` events, which is how phone
    // keyboards (and IMEs) type. The Terminal tab has a switch for it.
    screenReaderMode: false,
    theme: { background: '#000000' },
    // Links the sandbox prints (OSC 8) open only if they are http(s), in a new tab that
    // cannot reach back into this page; never through a dialog.
    linkHandler: {
      allowNonHttpProtocols: false,
      activate: (_ev, uri) => {
        if (/^https?:\/\//i.test(uri)) window.open(uri, '_blank', 'noopener,noreferrer');
      },
    },
  });
  const fit = new FitAddon();
  term.loadAddon(fit);
  // Before open(): the canvas renderer takes over, the DOM renderer is never made.
  term.loadAddon(new CanvasAddon());
  term.open(container);
  fit.fit();

  const enc = new TextEncoder();
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const url = `${proto}//${location.host}/dashboard/api/sandboxes/${encodeURIComponent(id)}/terminal?cols=${term.cols}&rows=${term.rows}`;
  const ws = new WebSocket(url);
  ws.binaryType = 'arraybuffer';
  let ended = false;
  onStatus('Connecting…', 'muted');

  ws.addEventListener('open', () => { onStatus('Connected.', 'ok'); term.focus(); });
  ws.addEventListener('message', (ev) => {
    if (ev.data instanceof ArrayBuffer) {
      term.write(new Uint8Array(ev.data));
      return;
    }
    let msg = null;
    try { msg = JSON.parse(ev.data); } catch { return; }
    if (msg.type === 'exit') {
      ended = true;
      onStatus(`The shell exited with code ${msg.exitCode}.`, msg.exitCode === 0 ? 'muted' : 'warn');
    } else if (msg.type === 'error') {
      ended = true;
      onStatus(`Terminal error: ${msg.message}`, 'error');
    }
  });
  ws.addEventListener('close', (ev) => {
    if (!ended) {
      // The browser hides why an upgrade was refused (403, 404): say what we know.
      onStatus(ev.code === 1000 ? 'Disconnected.' : `Disconnected (code ${ev.code}${ev.reason ? ': ' + ev.reason : ''}). Read-only keys may not open a terminal.`, 'error');
    }
    term.options.cursorBlink = false;
  });

  const send = (bytes) => { if (ws.readyState === WebSocket.OPEN) ws.send(bytes); };
  term.onData((s) => send(enc.encode(s)));
  // Mouse reports in some modes are raw bytes, one per char.
  term.onBinary((s) => send(Uint8Array.from(s, (c) => c.charCodeAt(0) & 0xff)));
  term.onResize(({ cols, rows }) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'resize', cols, rows }));
  });

  // Ctrl+Shift+C copies the selection (Ctrl+C stays the shell's interrupt); Ctrl+Shift+V and
  // the browser's paste go through xterm's paste handling (bracketed paste when asked for).
  term.attachCustomKeyEventHandler((ev) => {
    if (ev.type !== 'keydown' || !ev.ctrlKey || !ev.shiftKey) return true;
    const k = ev.key.toLowerCase();
    if (k === 'c') {
      ev.preventDefault();
      const sel = term.getSelection();
      if (sel) copy(sel);
      return false;
    }
    if (k === 'v') {
      if (navigator.clipboard?.readText) {
        ev.preventDefault();
        navigator.clipboard.readText().then((t) => term.paste(t), () => onStatus('The browser refused to read the clipboard: use its Paste.', 'warn'));
      }
      // Without the async clipboard API, the browser's own paste event reaches xterm.
      return false;
    }
    return true;
  });

  let raf = 0;
  const refit = () => {
    cancelAnimationFrame(raf);
    raf = requestAnimationFrame(() => {
      // A hidden tab has no size: fit later, when shown.
      if (container.offsetParent !== null) fit.fit();
    });
  };
  const ro = new ResizeObserver(refit);
  ro.observe(container);
  window.addEventListener('resize', refit);

  return {
    fit: refit,
    /** Screen-reader mode: the rows are also kept as text in an off-screen DOM tree. */
    setScreenReader(on) { term.options.screenReaderMode = on; },
    focus: () => term.focus(),
    close() {
      ro.disconnect();
      window.removeEventListener('resize', refit);
      cancelAnimationFrame(raf);
      if (ws.readyState <= WebSocket.OPEN) ws.close(1000);
      term.dispose();
    },
  };
}

function copy(text) {
  if (navigator.clipboard?.writeText) {
    navigator.clipboard.writeText(text).catch(() => fallbackCopy(text));
  } else {
    fallbackCopy(text);
  }
}

// Plain-HTTP pages (not localhost) have no async clipboard: the old way still works there.
function fallbackCopy(text) {
  const ta = document.createElement('textarea');
  ta.value = text;
  ta.setAttribute('readonly', '');
  ta.className = 'offscreen';
  document.body.append(ta);
  ta.select();
  try { document.execCommand('copy'); } finally { ta.remove(); }
}
