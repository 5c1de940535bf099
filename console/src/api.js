// The experiments service's HTTP API, as the console uses it. Errors come
// back as ApiError with the service's {"error": {code, message, field,
// currentRevision}} fields.
export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || 'http_error';
    this.field = error.field || null;
    this.currentRevision = error.currentRevision ?? null;
  }
  get conflict() { return this.status === 409; }
}

export const USER_HEADER = { 'X-Capstan-User': 'console' };

export async function api(method, path, body) {
  const init = { method, headers: { ...USER_HEADER } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, { error: { code: 'network', message: `The service did not answer (${e.message}).` } });
  }
  let json = null;
  const text = await response.text();
  if (text) {
    try { json = JSON.parse(text); } catch { json = null; }
  }
  if (!response.ok) throw new ApiError(response.status, json);
  return json;
}

export const listDocs = (kind) => api('GET', `/v1/${kind}`).then((r) => r.items || []);
export const getDoc = (kind, id) => api('GET', `/v1/${kind}/${encodeURIComponent(id)}`);
// revision 0 creates; otherwise replaces exactly that revision (409 if it moved on).
export const putDoc = (kind, id, spec, revision) =>
  api('PUT', `/v1/${kind}/${encodeURIComponent(id)}${revision ? `?revision=${revision}` : ''}`, spec);
export const getResults = (id) => api('GET', `/v1/experiments/${encodeURIComponent(id)}/results`);
export const getResultsHistory = (id) =>
  api('GET', `/v1/experiments/${encodeURIComponent(id)}/results/history`);
