// The gateways the service knows (`--gateway-admin`, or `capstan dev`'s
// own): each one's routes, clusters and endpoint health, from its admin
// /status through GET /v1/gateways, polled. A gateway that does not answer
// is shown as unreachable with the reason; the others still show.
import { useEffect, useState } from 'preact/hooks';
import { api } from '../api.js';
import { Alert, ErrorMessage, Page, fmt, html, link } from '../ui.js';

const POLL_MS = 5000;

// Where a route sends its requests, as text and as the clusters it names.
export function routeTarget(route) {
  if (route.cluster) return { text: route.cluster, clusters: [route.cluster] };
  if (route.split) {
    return {
      text: route.split.map((s) => `${s.cluster} (weight ${s.weight})`).join(', '),
      clusters: route.split.map((s) => s.cluster),
    };
  }
  if (route.experiment) {
    const e = route.experiment;
    const variants = Object.entries(e.variants || {});
    return {
      text: `${variants.map(([v, c]) => `${v} → ${c}`).join(', ')}; otherwise ${e.default}`,
      experiment: e.id,
      clusters: [...new Set([...variants.map(([, c]) => c), e.default])],
    };
  }
  if (route.redirect) return { text: 'redirect', clusters: [] };
  if (route.direct_response) return { text: 'direct response', clusters: [] };
  return { text: '—', clusters: [] };
}

function EndpointHealth({ endpoint }) {
  if (endpoint.ejected) return html`<span class="badge badge-stopped">ejected</span>`;
  if (!endpoint.healthy) return html`<span class="badge badge-stopped">unhealthy</span>`;
  return html`<span class="badge badge-running">healthy</span>`;
}

function clusterSummary(cluster) {
  const endpoints = cluster.endpoints || [];
  const healthy = endpoints.filter((e) => e.healthy && !e.ejected).length;
  return { healthy, total: endpoints.length };
}

function GatewayCard({ gateway, index }) {
  const id = `gateway-${index}`;
  if (!gateway.ok) {
    return html`<section class="card" aria-labelledby=${id}>
      <h2 id=${id}><code>${gateway.admin}</code> <span class="badge badge-stopped">unreachable</span></h2>
      <p>The gateway's admin endpoint did not answer: <span class="muted">${gateway.error}</span></p>
    </section>`;
  }
  const s = gateway.status;
  const routes = s.routes || [];
  const clusters = s.clusters || [];
  const degraded = clusters.filter((c) => { const h = clusterSummary(c); return h.healthy < h.total || h.total === 0; });
  return html`<section class="card gateway" aria-labelledby=${id}>
    <h2 id=${id}><code>${gateway.admin}</code> <span class="badge badge-running">up</span></h2>
    <p class="meta">${`${s.requests ?? 0} requests served · ${s.downstream_connections ?? 0} client connections · answered in ${fmt(gateway.elapsedMs, 2)} ms`}</p>
    ${degraded.length ? html`<${Alert} kind="warning" title="Clusters without every endpoint healthy">
      ${degraded.map((c) => { const h = clusterSummary(c); return `${c.cluster} (${h.healthy} of ${h.total} healthy)`; }).join(', ')}
    </${Alert}>` : null}
    <h3 id=${`${id}-routes`}>Routes</h3>
    <table class="table" aria-labelledby=${`${id}-routes`}>
      <thead><tr><th scope="col">Route</th><th scope="col">Sends to</th><th scope="col">Edge function</th></tr></thead>
      <tbody>
        ${routes.map((r) => {
          const t = routeTarget(r);
          return html`<tr>
            <th scope="row"><code>${r.route}</code></th>
            <td>${t.experiment ? html`experiment <a href=${link(`/experiments/${encodeURIComponent(t.experiment)}`)}>${t.experiment}</a>: ${t.text}` : t.text}</td>
            <td>${r.edge_function ? html`<code>${r.edge_function}</code>` : '—'}</td>
          </tr>`;
        })}
        ${routes.length === 0 ? html`<tr><td colspan="3" class="empty">No routes.</td></tr>` : null}
      </tbody>
    </table>
    <h3 id=${`${id}-clusters`}>Clusters and endpoints</h3>
    <table class="table" aria-labelledby=${`${id}-clusters`}>
      <thead><tr><th scope="col">Cluster</th><th scope="col">Endpoint</th><th scope="col">Health</th><th scope="col">Breaker</th><th scope="col" class="num">Weight</th><th scope="col" class="num">Latency (EWMA, ms)</th></tr></thead>
      <tbody>
        ${clusters.map((c) => {
          const endpoints = c.endpoints || [];
          const h = clusterSummary(c);
          const head = html`<th scope="row" rowspan=${Math.max(1, endpoints.length)}>
            <code>${c.cluster}</code>
            <div class="small muted">${c.protocol} · ${c.balancer} · ${h.healthy}/${h.total} healthy</div>
            <div class="small muted">${c.source}</div>
          </th>`;
          if (endpoints.length === 0) {
            return html`<tr data-cluster=${c.cluster}>${head}<td colspan="5" class="empty">No endpoints: requests to this cluster fail.</td></tr>`;
          }
          return endpoints.map((e, i) => html`<tr data-cluster=${c.cluster}>
            ${i === 0 ? head : null}
            <td><code>${e.endpoint}</code></td>
            <td><${EndpointHealth} endpoint=${e} /></td>
            <td>${e.breaker}</td>
            <td class="num">${e.weight}</td>
            <td class="num">${fmt(e.ewma_ms, 3)}</td>
          </tr>`);
        })}
        ${clusters.length === 0 ? html`<tr><td colspan="6" class="empty">No clusters.</td></tr>` : null}
      </tbody>
    </table>
    ${(s.edge_functions || []).length ? html`<p class="small muted">Edge functions live: ${s.edge_functions.map((f) => `${f.name} (store revision ${f.store_revision})`).join(', ')}</p>` : null}
  </section>`;
}

export function GatewaysPage() {
  const [state, setState] = useState({ data: null, error: null });
  useEffect(() => {
    let live = true;
    let timer = null;
    const tick = async () => {
      try {
        const data = await api('GET', '/v1/gateways');
        if (live) setState({ data, error: null });
      } catch (error) { if (live) setState((s) => ({ ...s, error })); }
      if (live) timer = setTimeout(tick, POLL_MS);
    };
    tick();
    return () => { live = false; clearTimeout(timer); };
  }, []);
  const d = state.data;
  const gateways = d ? d.gateways : [];
  return html`<${Page} title="Gateways">
    <${ErrorMessage} error=${state.error} />
    ${!d && !state.error ? html`<p class="muted" role="status">Loading…</p>` : null}
    ${d && gateways.length === 0 ? html`<${Alert} kind="info" title="No gateways configured">
      Start the service with <code>--gateway-admin http://HOST:PORT</code> (a gateway's <code>admin:</code> address; repeat it for each gateway) to see their routes, clusters and endpoint health here. <code>capstan dev</code> shows its own gateway.
    </${Alert}>` : null}
    ${gateways.filter((g) => !g.ok).length ? html`<${Alert} kind="warning" title="Gateways not answering">${gateways.filter((g) => !g.ok).map((g) => g.admin).join(', ')}</${Alert}>` : null}
    ${gateways.map((g, i) => html`<${GatewayCard} gateway=${g} index=${i} key=${g.admin} />`)}
  </${Page}>`;
}
