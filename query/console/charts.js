// Charts drawn in SVG, with text as text nodes.
import { el } from './common.js';

const NS = 'http://www.w3.org/2000/svg';

function svg(tag, attributes = {}, ...children) {
  const element = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/**
 * A line chart of `series` ([{name, points: [[ms, value]]}]) over time, each scaled to its own maximum,
 * with `marks` ([{ms, label}]) drawn as vertical lines.
 */
export function timeChart(series, marks = [], width = 900, height = 220) {
  const all = series.flatMap((s) => s.points.map((p) => p[0])).concat(marks.map((m) => m.ms));
  if (all.length === 0) return el('p', { class: 'muted' }, 'No data in this span.');
  const [from, to] = [Math.min(...all), Math.max(...all) + 1];
  const pad = 30;
  const x = (ms) => pad + ((ms - from) / (to - from)) * (width - 2 * pad);
  const chart = svg('svg', { viewBox: `0 0 ${width} ${height}`, class: 'chart', role: 'img' });
  chart.append(svg('rect', { x: 0, y: 0, width, height, class: 'chart-bg' }));
  series.forEach((s, i) => {
    const max = Math.max(1e-9, ...s.points.map((p) => p[1] || 0));
    const y = (v) => height - pad - ((v || 0) / max) * (height - 2 * pad);
    const d = s.points.map((p, k) => (k ? 'L' : 'M') + x(p[0]).toFixed(1) + ' ' + y(p[1]).toFixed(1)).join(' ');
    chart.append(svg('path', { d, class: 'line line-' + i }));
    chart.append(svg('text', { x: pad + i * 190, y: 14, class: 'legend legend-' + i }, s.name + ' (max ' + max.toPrecision(3) + ')'));
  });
  for (const mark of marks) {
    chart.append(svg('line', { x1: x(mark.ms), x2: x(mark.ms), y1: pad, y2: height - pad, class: 'mark' }, svg('title', {}, mark.label)));
  }
  chart.append(svg('text', { x: pad, y: height - 8, class: 'axis' }, new Date(from).toISOString().slice(0, 16).replace('T', ' ')));
  chart.append(svg('text', { x: width - pad, y: height - 8, class: 'axis', 'text-anchor': 'end' }, new Date(to).toISOString().slice(0, 16).replace('T', ' ')));
  return chart;
}

/** A small line of values. */
export function sparkline(values, width = 120, height = 24) {
  const max = Math.max(1e-9, ...values.map((v) => v || 0));
  const step = values.length > 1 ? width / (values.length - 1) : width;
  const d = values.map((v, k) => (k ? 'L' : 'M') + (k * step).toFixed(1) + ' ' + (height - ((v || 0) / max) * (height - 2)).toFixed(1)).join(' ');
  return svg('svg', { viewBox: `0 0 ${width} ${height}`, class: 'spark', width, height }, svg('path', { d, class: 'line line-0' }));
}
