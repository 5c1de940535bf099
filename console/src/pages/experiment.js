// One experiment: create or edit (variants and weights, coverage, targeting
// condition, allow-list) and its lifecycle (start, ramp, stop, launch).
// Every write names the revision it was made from; a 409 (someone changed it
// meanwhile) shows the conflict and reloads the latest version.
import { useEffect, useState } from 'preact/hooks';
import { ApiError, getDoc, listDocs, putDoc } from '../api.js';
import { ConditionRows, rowsFromCondition, rowsFromText } from './condition.js';
import { Alert, ConflictAlert, ErrorMessage, Field, Page, StateBadge, fmtPercent, html, link, useLoad } from '../ui.js';

const FROZEN_NOTE = 'Fixed once the experiment has run: units keep their variants.';

function formFromSpec(id, spec) {
  return {
    id: id || '',
    layer: spec.layer || '',
    description: spec.description || '',
    variants: (spec.variants || [{ id: 'control' }, { id: 'treatment' }]).map((v) => ({
      id: v.id || '',
      weight: v.weight === undefined || v.weight === null ? '' : String(v.weight),
      parameters: v.parameters ? JSON.stringify(v.parameters) : '',
    })),
    coverage: String(spec.coverage ?? 1),
    condition: spec.condition ? JSON.stringify(spec.condition, null, 2) : '',
    conditionRows: rowsFromCondition(spec.condition),
    allowList: Object.entries(spec.forced_variants || {}).map(([unit, variant]) => `${unit} = ${variant}`).join('\n'),
  };
}

function fieldError(field, message) {
  return Object.assign(new Error(message), { field });
}

// The spec the form describes, on top of `base` (fields the form does not
// edit, such as analysis settings, are kept).
function specFromForm(form, base) {
  const spec = { ...base };
  spec.layer = form.layer.trim();
  if (form.description.trim()) spec.description = form.description.trim(); else delete spec.description;
  const weighted = form.variants.some((v) => v.weight.trim() !== '');
  spec.variants = form.variants.map((v, i) => {
    const out = { id: v.id.trim() };
    if (weighted) {
      const w = Number(v.weight);
      if (v.weight.trim() === '' || !Number.isFinite(w)) throw fieldError(`variants[${i}].weight`, `Variant ${i + 1}: give every variant a weight, or none.`);
      out.weight = w;
    }
    if (v.parameters.trim()) {
      try { out.parameters = JSON.parse(v.parameters); } catch (e) {
        throw fieldError(`variants[${i}].parameters`, `Variant ${i + 1}: parameters are not valid JSON (${e.message}).`);
      }
    }
    return out;
  });
  const coverage = Number(form.coverage);
  if (!Number.isFinite(coverage) || coverage < 0 || coverage > 1) throw fieldError('coverage', 'Coverage must be a number from 0 to 1.');
  spec.coverage = coverage;
  if (form.condition.trim()) {
    try { spec.condition = JSON.parse(form.condition); } catch (e) {
      throw fieldError('condition', `The targeting condition is not valid JSON (${e.message}).`);
    }
    if (typeof spec.condition !== 'object' || spec.condition === null || Array.isArray(spec.condition)) {
      throw fieldError('condition', 'The targeting condition must be a JSON object, e.g. {"country": "DE"}.');
    }
  } else delete spec.condition;
  const forced = {};
  form.allowList.split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    const m = line.match(/^\s*([^=]+?)\s*=\s*(\S+)\s*$/);
    if (!m) throw fieldError('forced_variants', `Allow-list line ${i + 1}: write "unit = variant".`);
    if (!spec.variants.some((v) => v.id === m[2])) {
      throw fieldError('forced_variants', `Allow-list line ${i + 1}: "${m[2]}" is not one of the variants (${spec.variants.map((v) => v.id).join(', ')}).`);
    }
    if (m[1] in forced) throw fieldError('forced_variants', `Allow-list line ${i + 1}: unit "${m[1]}" is listed twice.`);
    forced[m[1]] = m[2];
  });
  if (Object.keys(forced).length) spec.forced_variants = forced; else delete spec.forced_variants;
  return spec;
}

export function ExperimentPage({ id }) {
  const isNew = id === null;
  const layers = useLoad(() => listDocs('layers'), []);
  const [doc, setDoc] = useState(null);
  const [form, setForm] = useState(isNew ? formFromSpec('', {}) : null);
  const [loadError, setLoadError] = useState(null);
  const [error, setError] = useState(null);
  const [conflict, setConflict] = useState(null);
  const [notice, setNotice] = useState(null);
  const [busy, setBusy] = useState(false);
  const [rampTo, setRampTo] = useState('');
  const [launchVariant, setLaunchVariant] = useState('');

  const load = async () => {
    try {
      const loaded = await getDoc('experiments', id);
      setDoc(loaded);
      setForm(formFromSpec(loaded.id, loaded.spec));
      setRampTo(String(loaded.spec.coverage ?? 1));
      setLaunchVariant((loaded.spec.variants || [])[0]?.id || '');
      setLoadError(null);
    } catch (e) { setLoadError(e); }
  };
  useEffect(() => { if (!isNew) load(); }, [id]);
  useEffect(() => {
    if (isNew && form && !form.layer && layers.data && layers.data.length) setForm({ ...form, layer: layers.data[0].id });
  }, [layers.data]);

  // Writes `spec` at the loaded revision; a 409 reloads.
  const write = async (spec, what) => {
    setBusy(true);
    setError(null);
    setConflict(null);
    setNotice(null);
    try {
      const written = await putDoc('experiments', isNew ? form.id.trim() : doc.id, spec, isNew ? 0 : doc.revision);
      if (isNew) {
        window.location.hash = `#/experiments/${encodeURIComponent(written.id)}`;
        return;
      }
      setDoc(written);
      setForm(formFromSpec(written.id, written.spec));
      setRampTo(String(written.spec.coverage ?? 1));
      setNotice(what);
    } catch (e) {
      if (e instanceof ApiError && e.conflict && !isNew) {
        setConflict(e);
        await load();
      } else setError(e);
    } finally { setBusy(false); }
  };

  const onSave = (e) => {
    e.preventDefault();
    let spec;
    try { spec = specFromForm(form, isNew ? { state: 'draft' } : doc.spec); } catch (err) { setError(err); return; }
    write(spec, 'Saved.');
  };
  const transition = (state, extra = {}) => write({ ...doc.spec, ...extra, state }, `Now ${state}.`);

  if (loadError) return html`<${Page} title=${id}><${ErrorMessage} error=${loadError} /><p><a href=${link('/experiments')}>Back to experiments</a></p></${Page}>`;
  if (!form) return html`<${Page} title=${id}><p class="muted" role="status">Loading…</p></${Page}>`;

  const state = isNew ? 'draft' : doc.spec.state || 'draft';
  const frozen = state !== 'draft';
  const set = (key) => (e) => setForm({ ...form, [key]: e.target.value });
  const setVariant = (i, key) => (e) => {
    const variants = form.variants.slice();
    variants[i] = { ...variants[i], [key]: e.target.value };
    setForm({ ...form, variants });
  };
  const errField = error && error.field;
  const invalid = (name) => (errField && (errField === name || errField.startsWith(name + '[') || errField.startsWith(name + '.')) ? 'true' : undefined);

  const actions = isNew ? null : html`<a class="button" href=${link(`/experiments/${encodeURIComponent(doc.id)}/results`)}>Results</a>`;
  return html`<${Page} title=${isNew ? 'New experiment' : doc.id} actions=${actions}>
    ${isNew ? null : html`<p class="meta">
      <${StateBadge} state=${state} />${' in layer '}<strong>${doc.spec.layer}</strong>${` · revision ${doc.revision} · version ${doc.version} · last changed by ${doc.updatedBy || 'unknown'}`}</p>`}
    <${ConflictAlert} conflict=${conflict} what="this experiment" />
    <${ErrorMessage} error=${error} />
    ${notice ? html`<${Alert} kind="success">${notice}</${Alert}>` : null}

    ${isNew ? null : html`<section class="card" aria-labelledby="lifecycle-title">
      <h2 id="lifecycle-title">Lifecycle</h2>
      <div class="lifecycle">
        ${state === 'draft' ? html`<button type="button" class="button button-primary" disabled=${busy} onClick=${() => transition('running')}>Start</button>` : null}
        ${state === 'running' ? html`<button type="button" class="button button-danger" disabled=${busy} onClick=${() => transition('stopped')}>Stop</button>` : null}
        ${state === 'running' || state === 'draft' ? html`<form class="inline-form" onSubmit=${(e) => { e.preventDefault(); write({ ...doc.spec, coverage: Number(rampTo) }, `Coverage is now ${fmtPercent(Number(rampTo), 0)}.`); }}>
          <label for="ramp-to">Ramp coverage to (0–1)</label>
          <input id="ramp-to" type="number" min=${doc.spec.coverage ?? 1} max="1" step="0.01" value=${rampTo} onInput=${(e) => setRampTo(e.target.value)} aria-describedby="ramp-hint" />
          <button type="submit" class="button" disabled=${busy}>Ramp</button>
          <span class="hint" id="ramp-hint">Coverage only grows: units already in keep their variants.</span>
        </form>` : null}
        ${state === 'stopped' ? html`<form class="inline-form" onSubmit=${(e) => { e.preventDefault(); transition('launched', { launched_variant: launchVariant }); }}>
          <label for="launch-variant">Ship variant</label>
          <select id="launch-variant" value=${launchVariant} onChange=${(e) => setLaunchVariant(e.target.value)}>
            ${(doc.spec.variants || []).map((v) => html`<option value=${v.id}>${v.id}</option>`)}
          </select>
          <button type="submit" class="button button-primary" disabled=${busy}>Launch</button>
        </form>` : null}
        ${state === 'launched' ? html`<p>Launched: every unit in the slice gets <strong>${doc.spec.launched_variant}</strong>.</p>` : null}
      </div>
    </section>`}

    <form class="card form" onSubmit=${onSave} aria-labelledby="definition-title" novalidate>
      <h2 id="definition-title">Definition</h2>
      <div class="form-row">
        ${isNew ? html`<${Field} id="exp-id" label="Id" hint="Letters, digits, '.', '_' and '-'." error=${invalid('id')}>
          <input id="exp-id" name="id" required value=${form.id} onInput=${set('id')} aria-invalid=${invalid('id')} aria-describedby="exp-id-hint" />
        </${Field}>` : null}
        <${Field} id="exp-layer" label="Layer" hint=${frozen ? FROZEN_NOTE : null} error=${invalid('layer')}>
          <select id="exp-layer" name="layer" value=${form.layer} onChange=${set('layer')} disabled=${frozen} aria-invalid=${invalid('layer')}>
            ${form.layer && !(layers.data || []).some((l) => l.id === form.layer) ? html`<option value=${form.layer}>${form.layer}</option>` : null}
            ${(layers.data || []).map((l) => html`<option value=${l.id}>${l.id}</option>`)}
          </select>
        </${Field}>
        <${Field} id="exp-coverage" label="Coverage (0–1)" hint="The share of the experiment's slice of the layer that gets a variant." error=${invalid('coverage')}>
          <input id="exp-coverage" name="coverage" type="number" min="0" max="1" step="0.01" value=${form.coverage} onInput=${set('coverage')} aria-invalid=${invalid('coverage')} aria-describedby="exp-coverage-hint" />
        </${Field}>
      </div>
      <${Field} id="exp-description" label="Description">
        <input id="exp-description" name="description" value=${form.description} onInput=${set('description')} />
      </${Field}>

      <fieldset class="variants" disabled=${frozen}>
        <legend>Variants${frozen ? html` <span class="hint">(${FROZEN_NOTE})</span>` : null}</legend>
        <table class="table table-compact">
          <thead><tr><th scope="col">Id</th><th scope="col">Weight (0–1, blank: equal shares)</th><th scope="col">Parameters (JSON)</th><th scope="col"><span class="visually-hidden">Remove</span></th></tr></thead>
          <tbody>
            ${form.variants.map((v, i) => html`<tr>
              <td><input aria-label=${`Variant ${i + 1} id`} name=${`variant-${i}-id`} required value=${v.id} onInput=${setVariant(i, 'id')} aria-invalid=${invalid(`variants[${i}]`)} /></td>
              <td><input aria-label=${`Variant ${i + 1} weight`} name=${`variant-${i}-weight`} inputmode="decimal" value=${v.weight} onInput=${setVariant(i, 'weight')} /></td>
              <td><input aria-label=${`Variant ${i + 1} parameters`} name=${`variant-${i}-parameters`} class="mono" placeholder='e.g. {"color": "green"}' value=${v.parameters} onInput=${setVariant(i, 'parameters')} /></td>
              <td>${form.variants.length > 1 ? html`<button type="button" class="button button-quiet" aria-label=${`Remove variant ${v.id || i + 1}`}
                  onClick=${() => setForm({ ...form, variants: form.variants.filter((_, j) => j !== i) })}>Remove</button>` : null}</td>
            </tr>`)}
          </tbody>
        </table>
        <button type="button" class="button button-quiet" onClick=${() => setForm({ ...form, variants: [...form.variants, { id: '', weight: '', parameters: '' }] })}>Add variant</button>
      </fieldset>

      <${ConditionRows} rows=${form.conditionRows} invalid=${invalid('condition')}
        onChange=${(text, rows) => setForm({ ...form, condition: text, conditionRows: rows })} />
      <${Field} id="exp-condition" label="Targeting condition (GrowthBook condition JSON; blank: everyone)" error=${invalid('condition')}
          hint=${'Only units whose attributes match get a variant; the others keep the layer\'s defaults. Operators: $eq $ne $in $nin $gt $lt $regex $exists $and $or $not, and $inGroup with a saved group.'}>
        <textarea id="exp-condition" name="condition" class="mono" rows="4" placeholder='e.g. {"country": {"$in": ["DE", "FR"]}}' value=${form.condition} onInput=${(e) => setForm({ ...form, condition: e.target.value, conditionRows: rowsFromText(e.target.value) })} aria-invalid=${invalid('condition')} aria-describedby="exp-condition-hint"></textarea>
      </${Field}>
      <${Field} id="exp-allow" label="Allow-list (one unit = variant per line)" hint="Applied while draft or running, for QA." error=${invalid('forced_variants')}>
        <textarea id="exp-allow" name="allow-list" class="mono" rows="3" placeholder="e.g. user-17 = treatment" value=${form.allowList} onInput=${set('allowList')} aria-invalid=${invalid('forced_variants')} aria-describedby="exp-allow-hint"></textarea>
      </${Field}>
      <div class="form-actions">
        <button type="submit" class="button button-primary" disabled=${busy}>${isNew ? 'Create experiment' : 'Save changes'}</button>
        <a class="button button-quiet" href=${link('/experiments')}>Cancel</a>
      </div>
    </form>
  </${Page}>`;
}
