// Layers: the list (with each layer's experiments) and one layer's editor
// (create or edit: domain, launch layer, parameters with their defaults).
// A layer's domain that does not exist yet is created with it, so a first
// experiment needs nothing but the console.
import { ApiError, listDocs, putDoc } from '../api.js';
import { Alert, ConflictAlert, ErrorMessage, Field, Page, html, invalidFor, link, parseJson, useLoad } from '../ui.js';
import { useDocumentEditor } from './editor.js';

export function LayersPage() {
  const layers = useLoad(() => Promise.all([listDocs('layers'), listDocs('experiments')]), []);
  const [layerDocs, experimentDocs] = layers.data || [[], []];
  const actions = html`<a class="button button-primary" href=${link('/layers/new')}>New layer</a>`;
  return html`<${Page} title="Layers" actions=${actions}>
    <${ErrorMessage} error=${layers.error} />
    <table class="table">
      <caption class="visually-hidden">Layers, with their domain, parameters and experiments</caption>
      <thead><tr><th scope="col">Layer</th><th scope="col">Domain</th><th scope="col">Parameters (defaults)</th><th scope="col">Experiments</th></tr></thead>
      <tbody>
        ${layerDocs.map((doc) => html`<tr>
          <th scope="row"><a href=${link(`/layers/${encodeURIComponent(doc.id)}`)}>${doc.id}</a></th>
          <td>${doc.spec.launch ? html`<em>launch layer</em>` : doc.spec.domain}</td>
          <td><code class="small">${JSON.stringify(doc.spec.parameters || {})}</code></td>
          <td>${experimentDocs.filter((x) => x.spec.layer === doc.id).map((x) => html`<a class="chip" href=${link(`/experiments/${encodeURIComponent(x.id)}`)}>${x.id}</a> `)}</td>
        </tr>`)}
        ${layerDocs.length === 0 && !layers.loading ? html`<tr><td colspan="4" class="empty">No layers yet. <a href=${link('/layers/new')}>Create one</a>: every experiment lives in a layer.</td></tr>` : null}
      </tbody>
    </table>
  </${Page}>`;
}

function layerForm(id, spec) {
  return {
    id: id || '',
    domain: spec.domain ?? (id ? '' : 'main'),
    launch: !!spec.launch,
    parameters: JSON.stringify(spec.parameters || {}, null, 2),
  };
}

function layerSpec(form, base) {
  const spec = { ...base };
  if (form.launch) {
    spec.launch = true;
    delete spec.domain;
  } else {
    delete spec.launch;
    if (!form.domain.trim()) throw Object.assign(new Error('A layer needs a domain (or is a launch layer).'), { field: 'domain' });
    spec.domain = form.domain.trim();
  }
  const parameters = parseJson(form.parameters, 'parameters', 'Parameters', {});
  if (typeof parameters !== 'object' || Array.isArray(parameters) || parameters === null) {
    throw Object.assign(new Error('Parameters must be a JSON object: {"name": default value}.'), { field: 'parameters' });
  }
  spec.parameters = parameters;
  return spec;
}

export function LayerPage({ id }) {
  const domains = useLoad(() => listDocs('domains'), []);
  const e = useDocumentEditor('layers', id, layerForm);
  const title = e.isNew ? 'New layer' : id;
  if (e.loadError) return html`<${Page} title=${title}><${ErrorMessage} error=${e.loadError} /><p><a href=${link('/layers')}>Back to layers</a></p></${Page}>`;
  if (!e.form) return html`<${Page} title=${title}><p class="muted" role="status">Loading…</p></${Page}>`;
  const { form, setForm } = e;
  const set = (key) => (ev) => setForm({ ...form, [key]: ev.target.value });
  const invalid = invalidFor(e.error);
  const known = (domains.data || []).map((d) => d.id);
  const newDomain = !form.launch && form.domain.trim() && domains.data && !known.includes(form.domain.trim());
  // A domain named but not there yet: created first ({} is a whole domain,
  // docs/experiments-model.md); one created meanwhile by someone else is fine.
  const createDomain = async (spec) => {
    if (!newDomain) return;
    try { await putDoc('domains', spec.domain, {}, 0); } catch (err) {
      if (err instanceof ApiError && err.conflict) return;
      err.message = `Creating domain "${spec.domain}" for the layer: ${err.message}`;
      err.field = 'domain';
      throw err;
    }
  };
  const onSubmit = (ev) => { ev.preventDefault(); e.save(() => layerSpec(form, e.isNew ? {} : e.doc.spec), createDomain); };
  return html`<${Page} title=${title}>
    ${e.isNew ? null : html`<p class="meta">${`revision ${e.doc.revision} · version ${e.doc.version} · last changed by ${e.doc.updatedBy || 'unknown'}`}</p>`}
    <${ConflictAlert} conflict=${e.conflict} what="this layer" />
    <${ErrorMessage} error=${e.error} />
    ${e.notice ? html`<${Alert} kind="success">${e.notice}</${Alert}>` : null}
    <form class="card form" onSubmit=${onSubmit} aria-labelledby="layer-form-title" novalidate>
      <h2 id="layer-form-title">${e.isNew ? 'Definition' : 'Edit layer'}</h2>
      <div class="form-row">
        ${e.isNew ? html`<${Field} id="layer-id" label="Id" hint="Letters, digits, '.', '_' and '-'." error=${invalid('id')}>
          <input id="layer-id" required value=${form.id} onInput=${set('id')} aria-invalid=${invalid('id')} aria-describedby="layer-id-hint" />
        </${Field}>` : null}
        <${Field} id="layer-domain" label="Domain" error=${invalid('domain')}
            hint=${form.launch ? 'A launch layer covers all traffic: no domain.' : newDomain ? `Domain "${form.domain.trim()}" does not exist yet: it is created with the layer.` : 'The traffic the layer splits.'}>
          <input id="layer-domain" list="layer-domains" value=${form.domain} onInput=${set('domain')} disabled=${form.launch}
            aria-invalid=${invalid('domain')} aria-describedby="layer-domain-hint" />
          <datalist id="layer-domains">${known.map((d) => html`<option value=${d} />`)}</datalist>
        </${Field}>
      </div>
      <div class="field field-check">
        <input id="layer-launch" type="checkbox" checked=${form.launch} onChange=${(ev) => setForm({ ...form, launch: ev.target.checked })} aria-describedby="layer-launch-hint" />
        <label for="layer-launch">Launch layer</label>
        <div class="hint" id="layer-launch-hint">For shipping a winning variant to everyone; launch layers are evaluated before the domains' layers.</div>
      </div>
      <${Field} id="layer-parameters" label="Parameters and their defaults (JSON)" error=${invalid('parameters')}
          hint=${'The parameters this layer\'s experiments may set, e.g. {"button_color": "blue"}.'}>
        <textarea id="layer-parameters" rows="4" class="mono" value=${form.parameters} onInput=${set('parameters')}
          aria-invalid=${invalid('parameters')} aria-describedby="layer-parameters-hint"></textarea>
      </${Field}>
      <div class="form-actions">
        <button type="submit" class="button button-primary" disabled=${e.busy}>${e.isNew ? 'Create layer' : 'Save changes'}</button>
        <a class="button button-quiet" href=${link('/layers')}>Cancel</a>
      </div>
    </form>
  </${Page}>`;
}
