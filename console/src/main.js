// The Capstan console: a single page over the experiments service's API,
// routed by the URL's hash (#/experiments/x), so the server serves only
// /console and the bundle.
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import 'uplot/dist/uPlot.min.css';
import './console.css';
import { html, markNavigated } from './ui.js';
import { ExperimentsPage } from './pages/experiments.js';
import { ExperimentPage } from './pages/experiment.js';
import { ResultsPage } from './pages/results.js';
import { LayerPage, LayersPage } from './pages/layers.js';
import { FlagPage, FlagsPage } from './pages/flags.js';
import { SystemPage } from './pages/system.js';
import { GatewaysPage } from './pages/gateways.js';

const NAV = [
  ['/experiments', 'Experiments'],
  ['/layers', 'Layers'],
  ['/flags', 'Flags'],
  ['/gateways', 'Gateways'],
  ['/system', 'System'],
];

function currentPath() {
  const hash = window.location.hash.replace(/^#/, '');
  return hash.startsWith('/') ? hash : '/experiments';
}

function route(path) {
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  if (parts[0] === 'experiments') {
    if (parts.length === 1) return html`<${ExperimentsPage} />`;
    if (parts[1] === 'new' && parts.length === 2) return html`<${ExperimentPage} id=${null} />`;
    if (parts.length === 2) return html`<${ExperimentPage} id=${parts[1]} key=${parts[1]} />`;
    if (parts.length === 3 && parts[2] === 'results') return html`<${ResultsPage} id=${parts[1]} key=${parts[1]} />`;
  }
  if (parts[0] === 'layers' || parts[0] === 'flags') {
    const [List, One] = parts[0] === 'layers' ? [LayersPage, LayerPage] : [FlagsPage, FlagPage];
    if (parts.length === 1) return html`<${List} />`;
    if (parts.length === 2) return html`<${One} id=${parts[1] === 'new' ? null : parts[1]} key=${parts[1]} />`;
  }
  if (parts[0] === 'gateways' && parts.length === 1) return html`<${GatewaysPage} />`;
  if (parts[0] === 'system' && parts.length === 1) return html`<${SystemPage} />`;
  return html`<section class="page"><h1>Not found</h1><p>No page at <code>${path}</code>.</p></section>`;
}

function App() {
  const [path, setPath] = useState(currentPath());
  useEffect(() => {
    const onHash = () => { markNavigated(); setPath(currentPath()); };
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);
  const section = '/' + (path.split('/')[1] || '');
  return html`
    <header class="topbar">
      <a class="brand" href="#/experiments">Capstan <span>console</span></a>
      <nav aria-label="Sections">
        <ul>
          ${NAV.map(([to, label]) => html`<li>
            <a href=${'#' + to} aria-current=${section === to ? 'page' : undefined}>${label}</a>
          </li>`)}
        </ul>
      </nav>
    </header>
    <main id="main">${route(path)}</main>`;
}

render(html`<${App} />`, document.getElementById('app'));
