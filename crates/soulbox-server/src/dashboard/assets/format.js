// Numbers and times for people.

export function bytes(n) {
  n = Number(n);
  if (!Number.isFinite(n)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
}

/** 75 → "1m 15s", 3900 → "1h 5m", 90000 → "1d 1h". */
export function duration(seconds) {
  let s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  const d = Math.floor(s / 86400); s -= d * 86400;
  const hr = Math.floor(s / 3600); s -= hr * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (d > 0) return d > 365 * 10 ? 'no limit' : `${d}d ${hr}h`;
  if (hr > 0) return `${hr}h ${m}m`;
  return `${m}m ${s}s`;
}

export function pct(x) {
  const n = Number(x);
  return Number.isFinite(n) ? `${n.toFixed(n < 10 ? 1 : 0)} %` : '–';
}

/** A local date-time, e.g. "2026-12-07 22:41:05". */
export function time(iso) {
  const t = typeof iso === 'number' ? new Date(iso) : new Date(iso || NaN);
  if (Number.isNaN(t.getTime())) return '–';
  const p = (n) => String(n).padStart(2, '0');
  return `${t.getFullYear()}-${p(t.getMonth() + 1)}-${p(t.getDate())} ${p(t.getHours())}:${p(t.getMinutes())}:${p(t.getSeconds())}`;
}

export function metadataText(md) {
  return Object.entries(md || {}).map(([k, v]) => `${k}=${v}`).join(' ');
}
