// One sandbox: its facts and actions, and tabs for live charts, a terminal, its files and its
// processes. A tab's content is made on first use; the terminal keeps its session while
// another tab is shown.
import { h, fill, setText } from '../dom.js';
import { get, seg, serverNow } from '../api.js';
import { bytes, duration, pct, time } from '../format.js';
import { toastError } from '../toast.js';
import { lineChart } from '../chart.js';
import * as actions from '../sandbox-actions.js';

const TABS = [['overview', 'Overview'], ['terminal', 'Terminal'], ['files', 'Files'], ['processes', 'Processes']];
const INFO_MS = 3000;
const METRICS_MS = 5000;
const WINDOW_S = 15 * 60;

export function mount(root, { id, tab }) {
  let sb = null;
  let stopped = false;
  const timers = [];
  const cleanups = [];

  const title = h('h1', { class: 'mono' }, id);
  const badge = h('span', { class: 'badge' });
  const facts = h('dl', { class: 'facts' });
  const btn = (action, label, fn, cls = '') =>
    h('button', { type: 'button', class: `btn ${cls}`, dataset: { action }, onclick: fn }, label);
  const pauseBtn = btn('pause', 'Pause', async () => { if (await actions.pause(id)) loadInfo(); });
  const resumeBtn = btn('resume', 'Resume', async () => { if (await actions.resume(id)) loadInfo(); });
  const head = h('div', { class: 'page-head' }, title, badge,
    h('div', { class: 'actions' }, pauseBtn, resumeBtn,
      btn('extend', 'Extend…', async () => { if (sb && await actions.extend(sb)) loadInfo(); }),
      btn('kill', 'Kill', async () => { if (await actions.kill(id)) location.hash = '#/sandboxes'; }, 'danger')));

  const tabBar = h('div', { class: 'tabs', role: 'tablist' });
  const panels = {};
  const mounted = {};
  for (const [key, label] of TABS) {
    tabBar.append(h('button', { type: 'button', role: 'tab', id: `tab-${key}`, dataset: { tab: key },
      'aria-controls': `panel-${key}`, onclick: () => show(key) }, label));
    panels[key] = h('section', { id: `panel-${key}`, role: 'tabpanel', 'aria-labelledby': `tab-${key}`, hidden: true });
  }
  root.append(h('p', { class: 'small' }, h('a', { href: '#/sandboxes' }, '← Sandboxes')), head, facts, tabBar,
    ...Object.values(panels));

  // Charts (Overview).
  const charts = {
    cpu: lineChart({ title: 'CPU', series: ['used'], format: (v) => pct(v), max: 100 }),
    mem: lineChart({ title: 'Memory', series: ['used', 'limit'], format: bytes, bytes: true }),
    disk: lineChart({ title: 'Disk', series: ['used', 'size'], format: bytes, bytes: true }),
    net: lineChart({ title: 'Network', series: ['in', 'out'], format: (v) => `${bytes(v)}/s`, bytes: true }),
  };
  cleanups.push(() => Object.values(charts).forEach((c) => c.destroy()));

  async function show(key) {
    if (!panels[key]) key = 'overview';
    for (const b of tabBar.children) b.setAttribute('aria-selected', String(b.dataset.tab === key));
    for (const [k, p] of Object.entries(panels)) p.hidden = k !== key;
    history.replaceState(null, '', `#/sandboxes/${encodeURIComponent(id)}${key === 'overview' ? '' : '/' + key}`);
    for (const [k, m] of Object.entries(mounted)) m.visible?.(k === key);
    if (!mounted[key]) {
      mounted[key] = { visible: null };
      if (key === 'overview') {
        fill(panels.overview, h('div', { class: 'charts' }, Object.values(charts).map((c) => c.el)),
          h('p', { class: 'muted small' }, 'Samples of the last 15 minutes, refreshed every 5 s (the server samples each sandbox every few seconds).'));
        loadMetrics();
      } else {
        const mod = await import(`./sandbox-${key}.js`);
        if (stopped) return;
        mounted[key] = mod.mount(panels[key], id) || {};
        if (mounted[key].destroy) cleanups.push(mounted[key].destroy);
        mounted[key].visible?.(true);
      }
    }
  }

  async function loadInfo() {
    try {
      sb = await get(`/sandboxes/${seg(id)}`);
      renderInfo();
    } catch (e) {
      if (e.status === 404) {
        gone(e.message);
        return;
      }
      if (e.status !== 401) toastError(e);
    }
  }

  function gone(message) {
    stop();
    setText(badge, 'gone');
    badge.className = 'badge error';
    fill(facts, h('p', { class: 'danger-text' }, `This sandbox no longer exists (${message}).`));
    for (const b of head.querySelectorAll('button')) b.disabled = true;
  }

  function renderInfo() {
    setText(badge, sb.state);
    badge.className = `badge ${sb.state}`;
    pauseBtn.disabled = sb.state !== 'running';
    resumeBtn.disabled = sb.state !== 'paused';
    const now = serverNow();
    const md = Object.entries(sb.metadata || {});
    const items = [
      ['Template', sb.alias && sb.alias !== sb.templateID ? `${sb.alias} (${sb.templateID})` : sb.templateID],
      ['Started', `${time(sb.startedAt)} (${duration((now - Date.parse(sb.startedAt)) / 1000)} ago)`],
      ['Ends', sb.state === 'paused' ? 'paused (no end time runs)' : `${time(sb.endAt)} (in ${duration((Date.parse(sb.endAt) - now) / 1000)})`],
      ['On timeout', sb.lifecycle ? `${sb.lifecycle.onTimeout}${sb.lifecycle.autoResume ? ', resumes on request' : ''}` : '–'],
      ['CPUs', String(sb.cpuCount)],
      ['Memory', `${sb.memoryMB} MiB`],
      ['Disk', sb.diskSizeMB ? `${sb.diskSizeMB} MiB` : '–'],
      ['Internet', sb.allowInternetAccess === false ? 'off' : 'on'],
      ['Metadata', md.length ? md.map(([k, v]) => `${k}=${v}`).join('\n') : '–'],
    ];
    if (sb.pauseMode) items.push(['Pause mode', String(sb.pauseMode)]);
    fill(facts, items.map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v))));
  }

  async function loadMetrics() {
    const end = Math.floor(serverNow() / 1000);
    try {
      const pts = await get(`/sandboxes/${seg(id)}/metrics?start=${end - WINDOW_S}&end=${end + 5}`);
      drawMetrics(Array.isArray(pts) ? pts : []);
    } catch (e) {
      if (e.status !== 404 && e.status !== 401) toastError(e);
    }
  }

  function drawMetrics(pts) {
    const t = (p) => (p.timestampUnix ?? Date.parse(p.timestamp) / 1000) * 1000;
    charts.cpu.update(pts.map((p) => ({ t: t(p), v: [p.cpuUsedPct] })));
    charts.mem.update(pts.map((p) => ({ t: t(p), v: [p.memUsed, p.memTotal] })));
    charts.disk.update(pts.map((p) => ({ t: t(p), v: [p.diskUsed, p.diskTotal] })));
    // The network fields are counters since the sandbox started: the chart is their rate.
    const rate = [];
    for (let i = 1; i < pts.length; i++) {
      const dt = (t(pts[i]) - t(pts[i - 1])) / 1000;
      const rx = pts[i].netRxBytes - pts[i - 1].netRxBytes;
      const tx = pts[i].netTxBytes - pts[i - 1].netTxBytes;
      // A restart of the counters (resume) is a gap, not a negative rate.
      if (dt > 0 && rx >= 0 && tx >= 0) rate.push({ t: t(pts[i]), v: [rx / dt, tx / dt] });
    }
    charts.net.update(rate);
  }

  function every(ms, fn) {
    const tick = async () => {
      if (stopped) return;
      if (!document.hidden) await fn();
      if (!stopped) timers.push(setTimeout(tick, ms));
    };
    timers.push(setTimeout(tick, ms));
  }

  function stop() {
    stopped = true;
    timers.forEach(clearTimeout);
  }

  loadInfo();
  every(INFO_MS, loadInfo);
  every(METRICS_MS, () => (mounted.overview ? loadMetrics() : null));
  show(tab || 'overview');

  return () => {
    stop();
    cleanups.forEach((c) => c());
  };
}
