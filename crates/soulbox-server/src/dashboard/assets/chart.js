// A small SVG line chart: a few series over time, a y axis from 0, the latest value in the
// title. Drawn at the container's pixel width (no stretched text) and again on resize.
import { h, svg, setText } from './dom.js';

const HEIGHT = 160;
const PAD = { l: 52, r: 8, t: 8, b: 20 };

/**
 * lineChart({title, series: ['used', 'total'], format: (v) => text, max?: number, bytes?: bool})
 * → {el, update(points)} where points = [{t: ms, v: [a, b]}], oldest first.
 */
export function lineChart({ title, series, format, max, bytes = false }) {
  const now = h('span', { class: 'now' });
  const box = svg('svg', { role: 'img', 'aria-label': title });
  const legend = h('div', { class: 'legend' }, series.length > 1
    ? series.map((s, i) => h('span', { class: `k${i}` }, s)) : []);
  const el = h('section', { class: 'chart' }, h('h3', {}, h('span', {}, title), now), box, legend);
  let last = [];

  function draw() {
    const w = Math.max(200, Math.round(box.getBoundingClientRect().width || 480));
    box.setAttribute('viewBox', `0 0 ${w} ${HEIGHT}`);
    el.dataset.samples = String(last.length);
    box.replaceChildren();
    const pts = last;
    if (pts.length === 0) {
      box.append(svg('text', { x: w / 2, y: HEIGHT / 2, 'text-anchor': 'middle', class: 'nodata' }, 'No samples yet'));
      setText(now, '');
      return;
    }
    const t0 = pts[0].t;
    const t1 = Math.max(pts[pts.length - 1].t, t0 + 1000);
    let top = max ?? 0;
    if (max === undefined) {
      for (const p of pts) for (const v of p.v) if (Number.isFinite(v) && v > top) top = v;
      top = bytes ? pow2Ceil(top) : niceCeil(top);
    }
    if (!(top > 0)) top = 1;
    const x = (t) => PAD.l + ((t - t0) / (t1 - t0)) * (w - PAD.l - PAD.r);
    const y = (v) => PAD.t + (1 - Math.min(v, top) / top) * (HEIGHT - PAD.t - PAD.b);
    for (let i = 0; i <= 4; i++) {
      const v = (top * i) / 4;
      box.append(svg('line', { x1: PAD.l, x2: w - PAD.r, y1: y(v), y2: y(v), class: i ? 'grid' : 'axis' }));
      box.append(svg('text', { x: PAD.l - 4, y: y(v) + 3, 'text-anchor': 'end' }, format(v)));
    }
    box.append(svg('text', { x: PAD.l, y: HEIGHT - 4 }, clock(t0)));
    box.append(svg('text', { x: w - PAD.r, y: HEIGHT - 4, 'text-anchor': 'end' }, clock(t1)));
    series.forEach((_, i) => {
      const coords = pts.filter((p) => Number.isFinite(p.v[i]))
        .map((p) => `${x(p.t).toFixed(1)},${y(p.v[i]).toFixed(1)}`);
      // One sample is a dot-length line, so it still shows.
      if (coords.length === 1) coords.push(coords[0].replace(/^[\d.]+/, (n) => String(Number(n) + 2)));
      box.append(svg('polyline', { points: coords.join(' '), class: `s${i}` }));
    });
    const latest = pts[pts.length - 1].v;
    setText(now, series.length > 1
      ? latest.map((v, i) => `${series[i]} ${format(v)}`).join(' · ') : format(latest[0]));
  }

  const ro = new ResizeObserver(() => draw());
  ro.observe(box);
  return {
    el,
    update(points) { last = points; draw(); },
    destroy() { ro.disconnect(); },
  };
}

/** 0.83 → 1, 3.2 → 5, 730 → 1000: a round top for the y axis. */
function niceCeil(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

/** Sizes get a binary top: a 512 MiB limit is the top line, not a point under "954 MiB". */
function pow2Ceil(v) {
  if (!(v > 0)) return 1;
  return 2 ** Math.ceil(Math.log2(v));
}

function clock(ms) {
  const d = new Date(ms);
  return `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}:${String(d.getSeconds()).padStart(2, '0')}`;
}
