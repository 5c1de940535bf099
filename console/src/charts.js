// Charts of the results page.
//  * LiftChart: a forest plot of each treatment's lift with its confidence
//    interval, drawn as SVG (a handful of rows: no library needed, and it
//    carries a text description for screen readers).
//  * HistoryChart: lift and interval over time, with uPlot (fast line
//    charts with bands, ~50 KB).
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import { fmtPercent, html } from './ui.js';

const PALETTE = ['#2563eb', '#d97706', '#059669', '#7c3aed', '#db2777', '#0891b2'];
export const colorOf = (i) => PALETTE[i % PALETTE.length];

// rows: [{variant, lift, ci: [lo, hi], significant}] (relative lifts).
export function LiftChart({ rows, title }) {
  const drawn = rows.filter((r) => r.lift !== null && r.lift !== undefined);
  if (drawn.length === 0) return html`<p class="muted small">Not enough data for a lift yet.</p>`;
  const values = [0];
  drawn.forEach((r) => { values.push(r.lift); if (r.ci) values.push(r.ci[0], r.ci[1]); });
  let lo = Math.min(...values), hi = Math.max(...values);
  const pad = (hi - lo) * 0.1 || 0.05;
  lo -= pad; hi += pad;
  const width = 640, label = 120, rowHeight = 34, top = 10, axis = 28;
  const height = top + drawn.length * rowHeight + axis;
  const x = (v) => label + ((v - lo) / (hi - lo)) * (width - label - 16);
  const ticks = niceTicks(lo, hi, 5);
  const description = drawn.map((r) => `${r.variant}: ${fmtPercent(r.lift)}` +
    (r.ci ? `, interval ${fmtPercent(r.ci[0])} to ${fmtPercent(r.ci[1])}` : '')).join('; ');
  return html`<figure class="chart">
    <svg viewBox=${`0 0 ${width} ${height}`} role="img" aria-label=${`${title}. ${description}`} class="lift-chart">
      ${ticks.map((t) => html`<g>
        <line x1=${x(t)} x2=${x(t)} y1=${top} y2=${height - axis} class="grid" />
        <text x=${x(t)} y=${height - 8} text-anchor="middle" class="tick">${fmtPercent(t, 0)}</text></g>`)}
      <line x1=${x(0)} x2=${x(0)} y1=${top - 4} y2=${height - axis} class="zero" />
      ${drawn.map((r, i) => {
        const y = top + i * rowHeight + rowHeight / 2;
        const color = r.significant ? (r.lift > 0 ? '#059669' : '#dc2626') : '#475569';
        return html`<g>
          <text x=${label - 10} y=${y + 4} text-anchor="end" class="row-label">${r.variant}</text>
          ${r.ci ? html`<line x1=${x(r.ci[0])} x2=${x(r.ci[1])} y1=${y} y2=${y} stroke=${color} stroke-width="3" stroke-linecap="round" />` : null}
          <circle cx=${x(r.lift)} cy=${y} r="6" fill=${color} />
        </g>`;
      })}
    </svg>
    <figcaption class="small muted">${title}: point = relative lift against control, bar = confidence interval; green or red when significant.</figcaption>
  </figure>`;
}

function niceTicks(lo, hi, count) {
  const span = hi - lo;
  const step0 = span / count;
  const mag = Math.pow(10, Math.floor(Math.log10(step0)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= step0) || step0;
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi && out.length < 20; t += step) out.push(Number(t.toPrecision(12)));
  return out;
}

// samples: the history's samples; metric: its name; treatments: variant ids.
export function HistoryChart({ samples, metric, treatments, title }) {
  const container = useRef(null);
  useEffect(() => {
    if (!container.current || samples.length === 0) return undefined;
    const t = samples.map((s) => s.t / 1000);
    const series = [{}];
    const data = [t];
    const bands = [];
    treatments.forEach((variant, i) => {
      const pick = (f) => samples.map((s) => {
        const m = (s.metrics || []).find((x) => x.metric === metric);
        const row = m && m.variants.find((v) => v.variant === variant);
        return row && row.relative ? f(row.relative) : null;
      });
      const base = data.length;
      data.push(pick((r) => r.lift), pick((r) => (r.ci ? r.ci[0] : null)), pick((r) => (r.ci ? r.ci[1] : null)));
      const color = colorOf(i + 1);
      series.push({ label: `${variant} lift`, stroke: color, width: 2, value: (u, v) => fmtPercent(v) },
        { label: `${variant} lower`, stroke: color + '55', width: 1, dash: [4, 4], value: (u, v) => fmtPercent(v) },
        { label: `${variant} upper`, stroke: color + '55', width: 1, dash: [4, 4], value: (u, v) => fmtPercent(v) });
      bands.push({ series: [base + 2, base + 1], fill: color + '1f' });
    });
    const width = Math.max(320, container.current.clientWidth || 640);
    const plot = new uPlot({
      width, height: 240, series, bands,
      scales: { x: { time: true } },
      axes: [{}, { values: (u, vals) => vals.map((v) => fmtPercent(v, 0)), size: 60 }],
      legend: { live: true },
    }, data, container.current);
    // One sample (or all within a minute) would make uPlot span years: show ±5 minutes.
    const first = t[0], last = t[t.length - 1];
    if (last - first < 60) plot.setScale('x', { min: first - 300, max: last + 300 });
    return () => plot.destroy();
  }, [samples, metric, treatments.join(',')]);
  if (samples.length === 0) return html`<p class="muted small">No samples yet: the service samples running experiments periodically.</p>`;
  return html`<figure class="chart">
    <div ref=${container} role="img" aria-label=${`${title}: ${samples.length} samples`}></div>
    <figcaption class="small muted">${title}: relative lift over time with its confidence interval (shaded), one sample per interval.</figcaption>
  </figure>`;
}
