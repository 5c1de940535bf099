// Shared pieces of the console's pages: the html tag, page frame, messages,
// number formatting, a loader hook.
import { h } from 'preact';
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import htm from 'htm';

export const html = htm.bind(h);

// Set once the user navigated inside the console: from then on a page's h1
// takes focus when it opens, so a screen reader announces where a link led.
// (On the first load focus stays at the top, where the skip link is.)
let navigated = false;
export function markNavigated() { navigated = true; }

export function Page({ title, actions, children }) {
  const heading = useRef(null);
  useEffect(() => { if (navigated && heading.current) heading.current.focus(); }, [title]);
  return html`<section class="page">
    <header class="page-header">
      <h1 tabindex="-1" ref=${heading}>${title}</h1>
      ${actions ? html`<div class="page-actions">${actions}</div>` : null}
    </header>
    ${children}
  </section>`;
}

export function Alert({ kind = 'error', title, children }) {
  const role = kind === 'error' || kind === 'warning' ? 'alert' : 'status';
  return html`<div class="alert alert-${kind}" role=${role}>
    ${title ? html`<strong class="alert-title">${title}</strong>` : null}
    <div>${children}</div>
  </div>`;
}

export function ErrorMessage({ error }) {
  if (!error) return null;
  return html`<${Alert} kind="error" title=${error.status ? `Error ${error.status}` : 'Error'}>
    ${error.message}${error.field ? html` <span class="muted">(field <code>${error.field}</code>)</span>` : null}
  </${Alert}>`;
}

// Loads with `load` (a function returning a promise) when `deps` change;
// returns {data, error, loading, reload}.
export function useLoad(load, deps) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const reload = useCallback(() => {
    setState((s) => ({ ...s, loading: true }));
    return load().then(
      (data) => setState({ data, error: null, loading: false }),
      (error) => setState({ data: null, error, loading: false }));
  }, deps);
  useEffect(() => { reload(); }, [reload]);
  return { ...state, reload };
}

export function StateBadge({ state }) {
  const s = state || 'draft';
  return html`<span class="badge badge-${s}">${s}</span>`;
}

export function fmt(x, digits = 4) {
  if (x === null || x === undefined || Number.isNaN(x)) return '—';
  if (typeof x !== 'number') return String(x);
  if (x !== 0 && Math.abs(x) < 1e-4) return x.toExponential(2);
  return Number(x.toPrecision(digits)).toString();
}

export function fmtPercent(x, digits = 2) {
  if (x === null || x === undefined) return '—';
  return `${(x * 100).toFixed(digits)}%`;
}

export function fmtP(p) {
  if (p === null || p === undefined) return '—';
  if (p < 0.0001) return '< 0.0001';
  return p.toFixed(4);
}

export const link = (path) => `#${path}`;

// A labelled form control with an optional hint (id + '-hint', for
// aria-describedby) and the invalid style when the service named it.
export function Field({ id, label, hint, error, children }) {
  return html`<div class=${'field' + (error ? ' field-invalid' : '')}>
    <label for=${id}>${label}</label>
    ${children}
    ${hint ? html`<div class="hint" id=${id + '-hint'}>${hint}</div>` : null}
  </div>`;
}

// A write refused with 409: someone changed the document since it was
// loaded. `what` names the document ("this experiment").
export function ConflictAlert({ conflict, what }) {
  if (!conflict) return null;
  return html`<${Alert} kind="warning" title=${`Someone else changed ${what}`}>
    Your change was not saved: ${what} is now at revision ${conflict.currentRevision ?? '?'}.
    The latest version is loaded below; check it and apply your change again.
  </${Alert}>`;
}

// `aria-invalid` for a control whose field (or a part of it: "rules[2]",
// "rules.value") the last error named.
export function invalidFor(error) {
  const f = error && error.field;
  return (name) => (f && (f === name || f.startsWith(name + '[') || f.startsWith(name + '.')) ? 'true' : undefined);
}

// Parses a JSON form field; an error names the field.
export function parseJson(text, field, label, fallback) {
  if (!text.trim()) return fallback;
  try { return JSON.parse(text); } catch (e) {
    throw Object.assign(new Error(`${label} is not valid JSON (${e.message}).`), { field });
  }
}
