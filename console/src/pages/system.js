// The store the service uses: its members, which one leads, and how each
// endpoint the service was given answers (GET /v1/system/store), polled.
import { useEffect, useState } from 'preact/hooks';
import { api } from '../api.js';
import { Alert, ErrorMessage, Page, html } from '../ui.js';

const POLL_MS = 5000;

function bytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function SystemPage() {
  const [state, setState] = useState({ data: null, error: null });
  useEffect(() => {
    let live = true;
    let timer = null;
    const tick = async () => {
      try {
        const data = await api('GET', '/v1/system/store');
        if (live) setState({ data, error: null });
      } catch (error) { if (live) setState((s) => ({ ...s, error })); }
      if (live) timer = setTimeout(tick, POLL_MS);
    };
    tick();
    return () => { live = false; clearTimeout(timer); };
  }, []);
  const d = state.data;
  const down = d ? d.endpoints.filter((e) => !e.ok) : [];
  return html`<${Page} title="System">
    <${ErrorMessage} error=${state.error} />
    ${!d && !state.error ? html`<p class="muted" role="status">Loading…</p>` : null}
    ${d ? html`
      ${d.leader === null ? html`<${Alert} kind="error" title="No leader">No store endpoint reports a leader: writes will fail until one is elected.</${Alert}>` : null}
      ${down.length ? html`<${Alert} kind="warning" title="Store endpoints not answering">${down.map((e) => e.endpoint).join(', ')}</${Alert}>` : null}
      <section class="card" aria-labelledby="members-title">
        <h2 id="members-title">Store members</h2>
        ${d.membersError ? html`<p class="muted">Members unknown: ${d.membersError}</p>` : null}
        <table class="table">
          <caption class="visually-hidden">Members of the store cluster; the leader is marked</caption>
          <thead><tr><th scope="col">Name</th><th scope="col">Id</th><th scope="col">Role</th><th scope="col">Client URLs</th><th scope="col">Peer URLs</th></tr></thead>
          <tbody>
            ${d.members.map((m) => html`<tr>
              <th scope="row">${m.name || '(unstarted)'}</th>
              <td><code>${m.id}</code></td>
              <td>${m.leader ? html`<span class="badge badge-running">leader</span>` : m.isLearner ? html`<span class="badge">learner</span>` : html`<span class="badge">follower</span>`}</td>
              <td class="small">${m.clientURLs.join(', ')}</td>
              <td class="small">${m.peerURLs.join(', ')}</td>
            </tr>`)}
          </tbody>
        </table>
      </section>
      <section class="card" aria-labelledby="endpoints-title">
        <h2 id="endpoints-title">Endpoints this service uses</h2>
        <table class="table">
          <caption class="visually-hidden">Each store endpoint: whether it answers, its member id, term, raft index, version and database size</caption>
          <thead><tr><th scope="col">Endpoint</th><th scope="col">Status</th><th scope="col">Member</th><th scope="col" class="num">Term</th><th scope="col" class="num">Raft index</th><th scope="col">Version</th><th scope="col" class="num">Database</th></tr></thead>
          <tbody>
            ${d.endpoints.map((e) => html`<tr>
              <th scope="row"><code>${e.endpoint}</code></th>
              <td>${e.ok ? html`<span class="badge badge-running">up</span>` : html`<span class="badge badge-stopped">down</span> <span class="small muted">${e.error}</span>`}</td>
              <td>${e.ok ? html`<code>${e.memberId}</code>` : '—'}</td>
              <td class="num">${e.ok ? e.raftTerm : '—'}</td>
              <td class="num">${e.ok ? e.raftIndex : '—'}</td>
              <td>${e.ok ? e.version : '—'}</td>
              <td class="num">${e.ok ? bytes(e.dbSize) : '—'}</td>
            </tr>`)}
          </tbody>
        </table>
      </section>
      <p class="small muted">The gateways' routes, clusters and endpoint health: <a href="#/gateways">Gateways</a>.</p>
    ` : null}
  </${Page}>`;
}
