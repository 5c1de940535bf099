// Flags: the list and one flag's editor (create or edit: enabled, default
// value, prerequisites, and its rules in order: force, rollout to a share
// of units, or a value per variant of an experiment; each with an optional
// targeting condition). Values are JSON, so a flag may be a boolean, a
// number, a string or an object.
import { listDocs } from '../api.js';
import { Alert, ConflictAlert, ErrorMessage, Field, Page, html, invalidFor, link, parseJson, useLoad } from '../ui.js';
import { useDocumentEditor } from './editor.js';

export function ruleSummary(rule) {
  if (rule.type === 'force') return `force ${JSON.stringify(rule.value)}`;
  if (rule.type === 'rollout') return `rollout ${JSON.stringify(rule.value)} to ${Math.round((rule.coverage ?? 0) * 100)}%`;
  if (rule.type === 'experiment') return `experiment ${rule.experiment}`;
  return rule.type;
}

export function FlagsPage() {
  const { data, error, loading } = useLoad(() => listDocs('flags'), []);
  const actions = html`<a class="button button-primary" href=${link('/flags/new')}>New flag</a>`;
  return html`<${Page} title="Flags" actions=${actions}>
    <${ErrorMessage} error=${error} />
    <table class="table">
      <caption class="visually-hidden">Flags, with whether they are enabled, their default value and rules</caption>
      <thead><tr><th scope="col">Flag</th><th scope="col">Enabled</th><th scope="col">Default</th><th scope="col">Rules</th></tr></thead>
      <tbody>
        ${(data || []).map((doc) => html`<tr>
          <th scope="row"><a href=${link(`/flags/${encodeURIComponent(doc.id)}`)}>${doc.id}</a></th>
          <td>${doc.spec.enabled === false ? 'no' : 'yes'}</td>
          <td><code>${JSON.stringify(doc.spec.default_value ?? null)}</code></td>
          <td>${(doc.spec.rules || []).map((r) => html`<div class="small">${r.condition ? 'if … then ' : ''}${ruleSummary(r)}</div>`)}</td>
        </tr>`)}
        ${data && data.length === 0 && !loading ? html`<tr><td colspan="4" class="empty">No flags yet.</td></tr>` : null}
      </tbody>
    </table>
  </${Page}>`;
}

// Focuses the element with `id` once the render that creates it is done.
function focusSoon(id) {
  setTimeout(() => { const el = document.getElementById(id); if (el) el.focus(); }, 0);
}

const json = (v) => (v === undefined ? '' : JSON.stringify(v));

function ruleForm(rule) {
  const { type, id, condition, value, coverage, experiment, values, ...rest } = rule;
  return {
    type: type || 'force',
    id: id || '',
    condition: condition ? JSON.stringify(condition) : '',
    value: json(value),
    coverage: coverage === undefined ? '' : String(coverage),
    experiment: experiment || '',
    values: Object.fromEntries(Object.entries(values || {}).map(([k, v]) => [k, JSON.stringify(v)])),
    rest, // fields the form does not edit (unit_type, salt) are kept
  };
}

function flagForm(id, spec) {
  return {
    id: id || '',
    enabled: spec.enabled !== false,
    defaultValue: spec.default_value === undefined ? (id ? 'null' : 'false') : JSON.stringify(spec.default_value),
    prerequisites: spec.prerequisites && spec.prerequisites.length ? JSON.stringify(spec.prerequisites, null, 2) : '',
    rules: (spec.rules || []).map(ruleForm),
  };
}

function flagSpec(form, base) {
  const spec = { ...base };
  spec.enabled = form.enabled;
  spec.default_value = parseJson(form.defaultValue, 'default_value', 'The default value', null);
  const prerequisites = parseJson(form.prerequisites, 'prerequisites', 'Prerequisites', []);
  if (!Array.isArray(prerequisites)) throw Object.assign(new Error('Prerequisites must be a JSON array of {"flag", "condition"}.'), { field: 'prerequisites' });
  if (prerequisites.length) spec.prerequisites = prerequisites; else delete spec.prerequisites;
  spec.rules = form.rules.map((r, i) => {
    const where = `rules[${i}]`;
    const label = `Rule ${i + 1}`;
    const out = { ...r.rest, type: r.type };
    if (r.id.trim()) out.id = r.id.trim();
    const condition = parseJson(r.condition, `${where}.condition`, `${label}: the condition`, undefined);
    if (condition !== undefined) out.condition = condition;
    if (r.type === 'force' || r.type === 'rollout') {
      if (!r.value.trim()) throw Object.assign(new Error(`${label}: give the value (JSON, e.g. true or "blue").`), { field: `${where}.value` });
      out.value = parseJson(r.value, `${where}.value`, `${label}: the value`);
    }
    if (r.type === 'rollout') {
      const c = Number(r.coverage);
      if (r.coverage.trim() === '' || !Number.isFinite(c) || c < 0 || c > 1) {
        throw Object.assign(new Error(`${label}: coverage must be a number from 0 to 1.`), { field: `${where}.coverage` });
      }
      out.coverage = c;
    }
    if (r.type === 'experiment') {
      if (!r.experiment) throw Object.assign(new Error(`${label}: choose the experiment.`), { field: `${where}.experiment` });
      out.experiment = r.experiment;
      out.values = {};
      for (const [variant, text] of Object.entries(r.values)) {
        if (!text.trim()) continue;
        out.values[variant] = parseJson(text, `${where}.values.${variant}`, `${label}: the value for ${variant}`);
      }
    }
    return out;
  });
  return spec;
}

function RuleEditor({ rule, index, count, experiments, invalid, onChange, onMove, onRemove }) {
  const p = `rule-${index}`;
  const n = index + 1;
  const set = (key) => (ev) => onChange({ ...rule, [key]: ev.target.value });
  const experiment = experiments.find((x) => x.id === rule.experiment);
  const variants = experiment ? (experiment.spec.variants || []).map((v) => v.id) : Object.keys(rule.values);
  return html`<fieldset class="rule" aria-labelledby=${`${p}-legend`}>
    <legend id=${`${p}-legend`}>Rule ${n}</legend>
    <div class="form-row">
      <${Field} id=${`${p}-type`} label=${`Rule ${n} type`}>
        <select id=${`${p}-type`} value=${rule.type} onChange=${set('type')}>
          <option value="force">force: everyone it targets gets the value</option>
          <option value="rollout">rollout: a share of units gets the value</option>
          <option value="experiment">experiment: a value per variant</option>
        </select>
      </${Field}>
      <${Field} id=${`${p}-id`} label=${`Rule ${n} id (optional)`}>
        <input id=${`${p}-id`} value=${rule.id} onInput=${set('id')} aria-invalid=${invalid(`rules[${index}].id`)} />
      </${Field}>
    </div>
    <${Field} id=${`${p}-condition`} label=${`Rule ${n} condition (GrowthBook condition JSON; blank: every unit)`} error=${invalid(`rules[${index}].condition`)}>
      <input id=${`${p}-condition`} class="mono" placeholder='e.g. {"country": {"$in": ["DE", "FR"]}}' value=${rule.condition} onInput=${set('condition')} aria-invalid=${invalid(`rules[${index}].condition`)} />
    </${Field}>
    ${rule.type !== 'experiment' ? html`<div class="form-row">
      <${Field} id=${`${p}-value`} label=${`Rule ${n} value (JSON)`} error=${invalid(`rules[${index}].value`)}>
        <input id=${`${p}-value`} class="mono" placeholder="e.g. true" value=${rule.value} onInput=${set('value')} aria-invalid=${invalid(`rules[${index}].value`)} />
      </${Field}>
      ${rule.type === 'rollout' ? html`<${Field} id=${`${p}-coverage`} label=${`Rule ${n} coverage (0–1)`} error=${invalid(`rules[${index}].coverage`)}
          hint="Raising it keeps every unit already in.">
        <input id=${`${p}-coverage`} type="number" min="0" max="1" step="0.01" value=${rule.coverage} onInput=${set('coverage')}
          aria-invalid=${invalid(`rules[${index}].coverage`)} aria-describedby=${`${p}-coverage-hint`} />
      </${Field}>` : null}
    </div>` : html`
      <${Field} id=${`${p}-experiment`} label=${`Rule ${n} experiment`} error=${invalid(`rules[${index}].experiment`)}>
        <select id=${`${p}-experiment`} value=${rule.experiment} onChange=${set('experiment')} aria-invalid=${invalid(`rules[${index}].experiment`)}>
          <option value="">(choose)</option>
          ${rule.experiment && !experiment ? html`<option value=${rule.experiment}>${rule.experiment}</option>` : null}
          ${experiments.map((x) => html`<option value=${x.id}>${x.id}</option>`)}
        </select>
      </${Field}>
      ${variants.length ? html`<div class="form-row">${variants.map((v) => html`
        <${Field} id=${`${p}-variant-${v}`} label=${`Rule ${n} value for ${v} (JSON; blank: next rule)`} error=${invalid(`rules[${index}].values.${v}`)}>
          <input id=${`${p}-variant-${v}`} class="mono" value=${rule.values[v] || ''} aria-invalid=${invalid(`rules[${index}].values.${v}`)}
            onInput=${(ev) => onChange({ ...rule, values: { ...rule.values, [v]: ev.target.value } })} />
        </${Field}>`)}</div>` : null}`}
    <div class="rule-actions">
      <button type="button" id=${`${p}-up`} class="button button-quiet" disabled=${index === 0} onClick=${() => onMove(-1)} aria-label=${`Move rule ${n} up`}>Move up</button>
      <button type="button" id=${`${p}-down`} class="button button-quiet" disabled=${index === count - 1} onClick=${() => onMove(1)} aria-label=${`Move rule ${n} down`}>Move down</button>
      <button type="button" id=${`${p}-remove`} class="button button-quiet" onClick=${onRemove} aria-label=${`Remove rule ${n}`}>Remove</button>
    </div>
  </fieldset>`;
}

export function FlagPage({ id }) {
  const experiments = useLoad(() => listDocs('experiments'), []);
  const e = useDocumentEditor('flags', id, flagForm);
  const title = e.isNew ? 'New flag' : id;
  if (e.loadError) return html`<${Page} title=${title}><${ErrorMessage} error=${e.loadError} /><p><a href=${link('/flags')}>Back to flags</a></p></${Page}>`;
  if (!e.form) return html`<${Page} title=${title}><p class="muted" role="status">Loading…</p></${Page}>`;
  const { form, setForm } = e;
  const set = (key) => (ev) => setForm({ ...form, [key]: ev.target.value });
  const invalid = invalidFor(e.error);
  const setRules = (rules) => setForm({ ...form, rules });
  const onSubmit = (ev) => { ev.preventDefault(); e.save(() => flagSpec(form, e.isNew ? {} : e.doc.spec)); };
  return html`<${Page} title=${title}>
    ${e.isNew ? null : html`<p class="meta">${`revision ${e.doc.revision} · version ${e.doc.version} · last changed by ${e.doc.updatedBy || 'unknown'}`}</p>`}
    <${ConflictAlert} conflict=${e.conflict} what="this flag" />
    <${ErrorMessage} error=${e.error} />
    ${e.notice ? html`<${Alert} kind="success">${e.notice}</${Alert}>` : null}
    <form class="card form" onSubmit=${onSubmit} aria-labelledby="flag-form-title" novalidate>
      <h2 id="flag-form-title">${e.isNew ? 'Definition' : 'Edit flag'}</h2>
      <div class="form-row">
        ${e.isNew ? html`<${Field} id="flag-id" label="Key" hint="The name code asks for: letters, digits, '.', '_' and '-'." error=${invalid('id')}>
          <input id="flag-id" required value=${form.id} onInput=${set('id')} aria-invalid=${invalid('id')} aria-describedby="flag-id-hint" />
        </${Field}>` : null}
        <${Field} id="flag-default" label="Default value (JSON)" hint="When no rule gives a value, or the flag is disabled." error=${invalid('default_value')}>
          <input id="flag-default" class="mono" value=${form.defaultValue} onInput=${set('defaultValue')} aria-invalid=${invalid('default_value')} aria-describedby="flag-default-hint" />
        </${Field}>
      </div>
      <div class="field field-check">
        <input id="flag-enabled" type="checkbox" checked=${form.enabled} onChange=${(ev) => setForm({ ...form, enabled: ev.target.checked })} />
        <label for="flag-enabled">Enabled</label>
      </div>
      <h3>Rules <span class="hint">(in order: the first that gives a value wins)</span></h3>
      ${form.rules.map((rule, i) => html`<${RuleEditor} key=${i} rule=${rule} index=${i} count=${form.rules.length}
        experiments=${experiments.data || []} invalid=${invalid}
        onChange=${(r) => setRules(form.rules.map((x, j) => (j === i ? r : x)))}
        onMove=${(d) => {
          const rules = form.rules.slice();
          [rules[i], rules[i + d]] = [rules[i + d], rules[i]];
          setRules(rules);
          // Focus follows the rule that moved (its same button, or the other
          // one at the ends), so the keyboard user keeps their place.
          const to = i + d;
          focusSoon(d < 0 && to > 0 ? `rule-${to}-up` : d > 0 && to < rules.length - 1 ? `rule-${to}-down` : `rule-${to}-type`);
        }}
        onRemove=${() => {
          setRules(form.rules.filter((_, j) => j !== i));
          focusSoon(form.rules.length > 1 ? `rule-${Math.max(0, i - 1)}-type` : 'add-rule');
        }} />`)}
      ${form.rules.length === 0 ? html`<p class="muted">No rules: every unit gets the default value.</p>` : null}
      <div class="add-rule"><button type="button" id="add-rule" class="button button-quiet"
        onClick=${() => { setRules([...form.rules, ruleForm({ type: 'force' })]); focusSoon(`rule-${form.rules.length}-type`); }}>Add rule</button></div>
      <${Field} id="flag-prerequisites" label=${'Prerequisites (JSON array of {"flag", "condition"}; blank: none)'} error=${invalid('prerequisites')}>
        <textarea id="flag-prerequisites" rows="2" class="mono" value=${form.prerequisites} onInput=${set('prerequisites')} aria-invalid=${invalid('prerequisites')}></textarea>
      </${Field}>
      <div class="form-actions">
        <button type="submit" class="button button-primary" disabled=${e.busy}>${e.isNew ? 'Create flag' : 'Save changes'}</button>
        <a class="button button-quiet" href=${link('/flags')}>Cancel</a>
      </div>
    </form>
  </${Page}>`;
}
