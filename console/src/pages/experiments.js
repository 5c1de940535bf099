// The experiments list: state, layer, variants (with weights), coverage.
import { listDocs } from '../api.js';
import { ErrorMessage, Page, StateBadge, fmtPercent, html, link, useLoad } from '../ui.js';

export function variantSummary(spec) {
  const variants = spec.variants || [];
  return variants.map((v) => (v.weight !== undefined && v.weight !== null ? `${v.id} (${fmtPercent(v.weight, 0)})` : v.id)).join(', ');
}

export function ExperimentsPage() {
  const { data, error, loading } = useLoad(() => listDocs('experiments'), []);
  const actions = html`<a class="button button-primary" href=${link('/experiments/new')}>New experiment</a>`;
  return html`<${Page} title="Experiments" actions=${actions}>
    <${ErrorMessage} error=${error} />
    ${loading && !data ? html`<p class="muted" role="status">Loading…</p>` : null}
    ${data && data.length === 0 ? html`<p class="empty">No experiments yet. <a href=${link('/experiments/new')}>Create the first one</a>.</p>` : null}
    ${data && data.length > 0 ? html`<table class="table">
      <caption class="visually-hidden">Experiments, with their state, layer, variants and coverage</caption>
      <thead><tr>
        <th scope="col">Experiment</th><th scope="col">State</th><th scope="col">Layer</th>
        <th scope="col">Variants</th><th scope="col" class="num">Coverage</th><th scope="col"><span class="visually-hidden">Results</span></th>
      </tr></thead>
      <tbody>
        ${data.map((doc) => html`<tr>
          <th scope="row"><a href=${link(`/experiments/${encodeURIComponent(doc.id)}`)}>${doc.id}</a>
            ${doc.spec.description ? html`<div class="muted small">${doc.spec.description}</div>` : null}</th>
          <td><${StateBadge} state=${doc.spec.state} /></td>
          <td>${doc.spec.layer}</td>
          <td>${variantSummary(doc.spec)}</td>
          <td class="num">${fmtPercent(doc.spec.coverage ?? 1, 0)}</td>
          <td><a href=${link(`/experiments/${encodeURIComponent(doc.id)}/results`)} aria-label=${`Results of ${doc.id}`}>Results</a></td>
        </tr>`)}
      </tbody>
    </table>` : null}
  </${Page}>`;
}
