// An experiment's results, polled: SRM warning, units per variant, per
// metric a table (n, mean, lift with CI, p-value, corrected p-value; with a
// pre-period covariate also the CUPED-adjusted lift and its variance
// reduction) and a forest plot of the lifts, and the cumulative lift over
// time.
import { useEffect, useRef, useState } from 'preact/hooks';
import { getResults, getResultsHistory } from '../api.js';
import { HistoryChart, LiftChart } from '../charts.js';
import { Alert, ErrorMessage, Page, fmt, fmtP, fmtPercent, html, link } from '../ui.js';

const POLL_MS = 5000;

function usePoll(load, deps) {
  const [state, setState] = useState({ data: null, error: null, at: null });
  const timer = useRef(null);
  useEffect(() => {
    let live = true;
    const tick = async () => {
      try {
        const data = await load();
        if (live) setState({ data, error: null, at: new Date() });
      } catch (error) {
        if (live) setState((s) => ({ ...s, error }));
      }
      if (live) timer.current = setTimeout(tick, POLL_MS);
    };
    tick();
    return () => { live = false; clearTimeout(timer.current); };
  }, deps);
  return state;
}

function Comparison({ side }) {
  if (!side) return html`<td class="num">—</td><td class="num">—</td><td class="num">—</td>`;
  return html`<td class="num">${fmtPercent(side.lift)}
      <span class="ci">[${side.ci ? `${fmtPercent(side.ci[0])}, ${fmtPercent(side.ci[1])}` : '—'}]</span></td>
    <td class="num">${fmtP(side.pValue)}</td>
    <td class="num">${fmtP(side.pValueAdjusted)}</td>`;
}

// CUPED (comparison.cuped, present when some unit has a pre-period value of
// the metric): the adjusted lift with its CI and p-value, and how much of
// the per-unit variance the covariate removed in the variant (and in the
// control, for this comparison). An arm pair CUPED could not compare shows
// the API's reason.
function CupedCells({ cuped }) {
  if (!cuped) return html`<td class="num muted">—</td><td class="num muted">—</td>`;
  if (cuped.error) return html`<td class="num muted" colspan="2">${cuped.error}</td>`;
  const rel = cuped.relative || {};
  const reduction = cuped.varianceReduction || {};
  return html`<td class="num cuped-lift">${fmtPercent(rel.lift)}
      <span class="ci">[${rel.ci ? `${fmtPercent(rel.ci[0])}, ${fmtPercent(rel.ci[1])}` : '—'}] p ${fmtP(rel.pValue)}</span></td>
    <td class="num variance-reduction">${fmtPercent(reduction.variant, 1)}
      <span class="ci">control ${fmtPercent(reduction.control, 1)}</span></td>`;
}

function MetricResults({ metric, results, history }) {
  const alpha = results.alpha ?? 0.05;
  const treatments = metric.variants.filter((v) => v.variant !== results.control);
  const rows = treatments.map((v) => {
    const rel = v.comparison && v.comparison.relative;
    const p = rel ? (rel.pValueAdjusted ?? rel.pValue) : null;
    return { variant: v.variant, lift: rel ? rel.lift : null, ci: rel ? rel.ci : null, significant: p !== null && p < alpha };
  });
  const captionId = `metric-${metric.metric.replace(/[^A-Za-z0-9_-]/g, "-")}`;
  const withCuped = treatments.some((v) => v.comparison && v.comparison.cuped);
  return html`<section class="card metric" aria-labelledby=${captionId}>
    <h3 id=${captionId}>${metric.metric} <span class="muted small">(${metric.kind})</span></h3>
    <table class="table">
      <caption class="visually-hidden">${metric.metric}: per variant n, mean, relative lift with its ${Math.round((1 - alpha) * 100)}% interval, p-value and corrected p-value${withCuped ? ', the CUPED-adjusted lift and the variance reduction' : ''}</caption>
      <thead><tr>
        <th scope="col">Variant</th><th scope="col" class="num">n</th><th scope="col" class="num">Mean</th>
        <th scope="col" class="num">Lift [${Math.round((1 - alpha) * 100)}% CI]</th><th scope="col" class="num">p-value</th>
        <th scope="col" class="num">Corrected p (${results.correction})</th>
        ${withCuped ? html`<th scope="col" class="num">CUPED lift [${Math.round((1 - alpha) * 100)}% CI]</th>
          <th scope="col" class="num" title="1 − the CUPED-adjusted per-unit variance over the unadjusted one">Variance reduction</th>` : null}
      </tr></thead>
      <tbody>
        ${metric.variants.map((v) => html`<tr>
          <th scope="row">${v.variant}${v.variant === results.control ? html` <span class="badge">control</span>` : null}</th>
          <td class="num">${fmt(v.n, 8)}</td>
          <td class="num">${fmt(v.mean)}</td>
          ${v.variant === results.control ? html`<td class="num muted">baseline</td><td></td><td></td>`
            : v.comparisonError ? html`<td class="num muted" colspan="3">${v.comparisonError}</td>`
            : html`<${Comparison} side=${v.comparison && v.comparison.relative} />`}
          ${!withCuped ? null
            : v.variant === results.control || !v.comparison ? html`<td></td><td></td>`
            : html`<${CupedCells} cuped=${v.comparison.cuped} />`}
        </tr>`)}
      </tbody>
    </table>
    <div class="charts">
      <${LiftChart} rows=${rows} title=${`Lift of ${metric.metric}`} />
      <${HistoryChart} samples=${history} metric=${metric.metric} treatments=${treatments.map((t) => t.variant)}
        title=${`Cumulative lift of ${metric.metric}`} />
    </div>
  </section>`;
}

export function ResultsPage({ id }) {
  const results = usePoll(() => getResults(id), [id]);
  const history = usePoll(() => getResultsHistory(id).catch(() => ({ samples: [] })), [id]);
  const r = results.data;
  const actions = html`<a class="button" href=${link(`/experiments/${encodeURIComponent(id)}`)}>Definition</a>`;
  return html`<${Page} title=${`Results: ${id}`} actions=${actions}>
    <${ErrorMessage} error=${results.error} />
    ${!r && !results.error ? html`<p class="muted" role="status">Loading…</p>` : null}
    ${r ? html`
      <p class="meta">Control <strong>${r.control ?? '—'}</strong>${` · ${r.method} analysis, alpha ${r.alpha} · correction ${r.correction} · updated ${results.at ? results.at.toLocaleTimeString() : ''}`}</p>
      ${r.srm && r.srm.status === 'mismatch' ? html`<${Alert} kind="warning" title="Sample ratio mismatch">
        The units per variant do not match the planned split (χ² ${fmt(r.srm.chi2)}, p ${fmtP(r.srm.pValue)}).
        Assignment or logging is likely broken: do not trust these results until the cause is found.
      </${Alert}>` : null}
      ${r.definitionError ? html`<${Alert} kind="warning" title="Definition error">${r.definitionError}</${Alert}>` : null}
      <section class="card" aria-labelledby="units-title">
        <h2 id="units-title">Units</h2>
        <table class="table">
          <caption class="visually-hidden">Exposed units per variant against the planned weight</caption>
          <thead><tr><th scope="col">Variant</th><th scope="col" class="num">Units</th><th scope="col" class="num">Share</th><th scope="col" class="num">Planned</th></tr></thead>
          <tbody>
            ${(() => {
              const total = r.variants.reduce((a, v) => a + (v.units || 0), 0);
              return r.variants.map((v) => html`<tr>
                <th scope="row">${v.variant}</th><td class="num">${v.units}</td>
                <td class="num">${total ? fmtPercent(v.units / total, 1) : '—'}</td>
                <td class="num">${fmtPercent(v.weight, 1)}</td></tr>`);
            })()}
          </tbody>
        </table>
        <p class="small muted">SRM check: ${r.srm ? r.srm.status.replace('_', ' ') : '—'}${r.srm && r.srm.pValue !== null ? ` (p ${fmtP(r.srm.pValue)})` : ''}</p>
      </section>
      <h2>Metrics</h2>
      ${r.metrics.length === 0 ? html`<p class="empty">No metric events yet.</p>` : null}
      ${r.metrics.map((m) => html`<${MetricResults} metric=${m} results=${r} history=${(history.data && history.data.samples) || []} />`)}
    ` : null}
  </${Page}>`;
}
