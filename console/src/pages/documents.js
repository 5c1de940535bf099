// Layers and flags: lists, and a small form to create a layer.
import { useState } from 'preact/hooks';
import { listDocs, putDoc } from '../api.js';
import { Alert, ErrorMessage, Page, html, useLoad } from '../ui.js';

function parseJsonField(text, name) {
  if (!text.trim()) return {};
  try { return JSON.parse(text); } catch (e) {
    throw Object.assign(new Error(`${name} is not valid JSON: ${e.message}`), { field: name });
  }
}

function NewLayerForm({ onCreated }) {
  const [id, setId] = useState('');
  const [domain, setDomain] = useState('main');
  const [parameters, setParameters] = useState('{}');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    setError(null);
    setBusy(true);
    try {
      await putDoc('layers', id, { domain, parameters: parseJsonField(parameters, 'parameters') }, 0);
      setId('');
      onCreated();
    } catch (err) { setError(err); } finally { setBusy(false); }
  };
  return html`<form class="card form" onSubmit=${submit} aria-labelledby="new-layer-title">
    <h2 id="new-layer-title">New layer</h2>
    <${ErrorMessage} error=${error} />
    <div class="form-row">
      <div class="field"><label for="layer-id">Id</label>
        <input id="layer-id" required pattern="[A-Za-z0-9._\\-]{1,128}" value=${id} onInput=${(e) => setId(e.target.value)} /></div>
      <div class="field"><label for="layer-domain">Domain</label>
        <input id="layer-domain" required value=${domain} onInput=${(e) => setDomain(e.target.value)} /></div>
    </div>
    <div class="field"><label for="layer-parameters">Parameters and their defaults (JSON)</label>
      <textarea id="layer-parameters" rows="3" class="mono" value=${parameters} onInput=${(e) => setParameters(e.target.value)}></textarea></div>
    <div class="form-actions"><button type="submit" class="button button-primary" disabled=${busy}>Create layer</button></div>
  </form>`;
}

export function LayersPage() {
  const layers = useLoad(() => Promise.all([listDocs('layers'), listDocs('experiments')]), []);
  const [created, setCreated] = useState(false);
  const [layerDocs, experimentDocs] = layers.data || [[], []];
  return html`<${Page} title="Layers">
    <${ErrorMessage} error=${layers.error} />
    ${created ? html`<${Alert} kind="success">Layer created.</${Alert}>` : null}
    <table class="table">
      <caption class="visually-hidden">Layers, with their domain, parameters and experiments</caption>
      <thead><tr><th scope="col">Layer</th><th scope="col">Domain</th><th scope="col">Parameters (defaults)</th><th scope="col">Experiments</th></tr></thead>
      <tbody>
        ${layerDocs.map((doc) => html`<tr>
          <th scope="row">${doc.id}</th>
          <td>${doc.spec.launch ? html`<em>launch layer</em>` : doc.spec.domain}</td>
          <td><code class="small">${JSON.stringify(doc.spec.parameters || {})}</code></td>
          <td>${experimentDocs.filter((x) => x.spec.layer === doc.id).map((x) => html`<a class="chip" href=${`#/experiments/${encodeURIComponent(x.id)}`}>${x.id}</a> `)}</td>
        </tr>`)}
        ${layerDocs.length === 0 && !layers.loading ? html`<tr><td colspan="4" class="empty">No layers yet.</td></tr>` : null}
      </tbody>
    </table>
    <${NewLayerForm} onCreated=${() => { setCreated(true); layers.reload(); }} />
  </${Page}>`;
}

function ruleSummary(rule) {
  if (rule.type === 'force') return `force ${JSON.stringify(rule.value)}`;
  if (rule.type === 'rollout') return `rollout ${JSON.stringify(rule.value)} to ${Math.round((rule.coverage ?? 0) * 100)}%`;
  if (rule.type === 'experiment') return `experiment ${rule.experiment}`;
  return rule.type;
}

export function FlagsPage() {
  const { data, error, loading } = useLoad(() => listDocs('flags'), []);
  return html`<${Page} title="Flags">
    <${ErrorMessage} error=${error} />
    <table class="table">
      <caption class="visually-hidden">Flags, with whether they are enabled, their default value and rules</caption>
      <thead><tr><th scope="col">Flag</th><th scope="col">Enabled</th><th scope="col">Default</th><th scope="col">Rules</th></tr></thead>
      <tbody>
        ${(data || []).map((doc) => html`<tr>
          <th scope="row">${doc.id}</th>
          <td>${doc.spec.enabled === false ? 'no' : 'yes'}</td>
          <td><code>${JSON.stringify(doc.spec.default_value ?? null)}</code></td>
          <td>${(doc.spec.rules || []).map((r) => html`<div class="small">${ruleSummary(r)}</div>`)}</td>
        </tr>`)}
        ${data && data.length === 0 && !loading ? html`<tr><td colspan="4" class="empty">No flags yet.</td></tr>` : null}
      </tbody>
    </table>
  </${Page}>`;
}
