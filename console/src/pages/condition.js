// The targeting condition as rows ("country is one of DE, FR", "age greater
// than 17"), all of which must hold, over the same GrowthBook condition
// JSON the service stores. The JSON text stays the truth: the rows are
// derived from it when they can say all of it, and write it back on every
// edit; anything richer ($or, $not, $elemMatch, nested paths with several
// operators the rows do not offer) is edited as JSON.
import { html } from '../ui.js';

// The operators a row offers, in the order of the menu.
export const OPERATORS = [
  ['$eq', 'is'],
  ['$ne', 'is not'],
  ['$in', 'is one of'],
  ['$nin', 'is none of'],
  ['$gt', 'greater than'],
  ['$gte', 'at least'],
  ['$lt', 'less than'],
  ['$lte', 'at most'],
  ['$regex', 'matches (regular expression)'],
  ['$exists', 'exists'],
];
const KNOWN = new Set(OPERATORS.map(([op]) => op));
const LIST_OPS = new Set(['$in', '$nin']);

// A value as the user types it: numbers, true, false and null are typed;
// anything else is a string (write "\"42\"" for the string 42).
export function parseScalar(text) {
  const t = text.trim();
  try {
    const v = JSON.parse(t);
    if (v === null || ['number', 'boolean', 'string'].includes(typeof v)) return v;
  } catch { /* a bare string */ }
  return t;
}

export function formatScalar(v) {
  if (typeof v !== 'string') return JSON.stringify(v);
  return parseScalar(v) === v ? v : JSON.stringify(v);
}

const isScalar = (v) => v === null || ['number', 'boolean', 'string'].includes(typeof v);

// Rows for a condition object, or null when rows cannot say all of it.
export function rowsFromCondition(condition) {
  if (condition === undefined) return [];
  if (typeof condition !== 'object' || condition === null || Array.isArray(condition)) return null;
  const rows = [];
  for (const [attribute, test] of Object.entries(condition)) {
    if (attribute.startsWith('$')) return null;
    if (isScalar(test)) {
      rows.push({ attribute, op: '$eq', value: formatScalar(test) });
      continue;
    }
    if (typeof test !== 'object' || Array.isArray(test)) return null;
    const ops = Object.entries(test);
    if (ops.length === 0) return null;
    for (const [op, value] of ops) {
      if (!KNOWN.has(op)) return null;
      if (LIST_OPS.has(op)) {
        if (!Array.isArray(value) || !value.every(isScalar)) return null;
        rows.push({ attribute, op, value: value.map(formatScalar).join(', ') });
      } else if (op === '$exists') {
        if (typeof value !== 'boolean') return null;
        rows.push({ attribute, op, value: String(value) });
      } else if (op === '$regex') {
        if (typeof value !== 'string') return null;
        rows.push({ attribute, op, value });
      } else {
        if (!isScalar(value)) return null;
        rows.push({ attribute, op, value: formatScalar(value) });
      }
    }
  }
  return rows;
}

// The condition object the rows say (rows without an attribute are left
// out; several rows on one attribute are one object of operators).
export function conditionFromRows(rows) {
  const out = {};
  for (const r of rows) {
    const attribute = r.attribute.trim();
    if (!attribute) continue;
    let value;
    if (LIST_OPS.has(r.op)) value = r.value.split(',').map((x) => x.trim()).filter((x) => x !== '').map(parseScalar);
    else if (r.op === '$exists') value = r.value !== 'false';
    else if (r.op === '$regex') value = r.value;
    else value = parseScalar(r.value);
    const tests = out[attribute] && typeof out[attribute] === 'object' && !Array.isArray(out[attribute]) ? out[attribute] : {};
    tests[r.op] = value;
    out[attribute] = tests;
  }
  // A lone "is" is written the short way: {"country": "DE"}.
  for (const [attribute, tests] of Object.entries(out)) {
    const ops = Object.keys(tests);
    if (ops.length === 1 && ops[0] === '$eq' && isScalar(tests.$eq)) out[attribute] = tests.$eq;
  }
  return out;
}

// The rows for the condition JSON text ('' for none), or null.
export function rowsFromText(text) {
  let parsed;
  try { parsed = text.trim() ? JSON.parse(text) : undefined; } catch { return null; }
  return rowsFromCondition(parsed);
}

// `rows` as rowsFromText gave them (kept by the page, so a row still
// without an attribute stays on screen); `onChange(text, rows)`.
export function ConditionRows({ rows, onChange, disabled, invalid }) {
  if (rows === null) {
    return html`<p class="hint" id="exp-condition-rows-note">This condition says more than rows can (or is not valid JSON): edit it as JSON below.</p>`;
  }
  const write = (next) => {
    const condition = conditionFromRows(next);
    onChange(Object.keys(condition).length ? JSON.stringify(condition, null, 2) : '', next);
  };
  return html`<div class="condition-rows" role="group" aria-labelledby="exp-condition-rows-title">
    <div id="exp-condition-rows-title" class="field-title">Targeting: units get a variant only if all of these hold (none: everyone)</div>
    ${rows.map((r, i) => {
      const n = i + 1;
      const set = (key) => (ev) => write(rows.map((x, j) => (j === i ? { ...x, [key]: ev.target.value, ...(key === 'op' && ev.target.value === '$exists' ? { value: 'true' } : {}) } : x)));
      return html`<div class="condition-row">
        <input id=${`cond-${i}-attribute`} aria-label=${`Condition ${n} attribute`} placeholder="attribute, e.g. country" value=${r.attribute} onInput=${set('attribute')} disabled=${disabled} aria-invalid=${invalid} />
        <select id=${`cond-${i}-op`} aria-label=${`Condition ${n} operator`} value=${r.op} onChange=${set('op')} disabled=${disabled}>
          ${OPERATORS.map(([op, label]) => html`<option value=${op}>${label}</option>`)}
        </select>
        ${r.op === '$exists'
          ? html`<select id=${`cond-${i}-value`} aria-label=${`Condition ${n} value`} value=${r.value} onChange=${set('value')} disabled=${disabled}>
              <option value="true">yes</option><option value="false">no</option></select>`
          : html`<input id=${`cond-${i}-value`} aria-label=${`Condition ${n} value`} class="mono" value=${r.value} onInput=${set('value')} disabled=${disabled}
              placeholder=${LIST_OPS.has(r.op) ? 'comma-separated, e.g. DE, FR' : 'e.g. DE or 18'} />`}
        <button type="button" class="button button-quiet" aria-label=${`Remove condition ${n}`} disabled=${disabled}
          onClick=${() => write(rows.filter((_, j) => j !== i))}>Remove</button>
      </div>`;
    })}
    <button type="button" id="add-condition" class="button button-quiet" disabled=${disabled}
      onClick=${() => {
        write([...rows, { attribute: '', op: '$eq', value: '' }]);
        setTimeout(() => { const el = document.getElementById(`cond-${rows.length}-attribute`); if (el) el.focus(); }, 0);
      }}>Add condition</button>
  </div>`;
}
