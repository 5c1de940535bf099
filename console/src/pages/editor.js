// What the layer and flag editors share: load one document, keep the form,
// write it back at the revision it was loaded from. A 409 (someone changed
// it meanwhile) is kept as `conflict` and the latest version is loaded into
// the form; creating navigates to the new document's page.
import { useEffect, useState } from 'preact/hooks';
import { ApiError, getDoc, putDoc } from '../api.js';

// `toForm(id, spec)` builds the form's state from a document.
export function useDocumentEditor(kind, id, toForm) {
  const isNew = id === null;
  const [doc, setDoc] = useState(null);
  const [form, setForm] = useState(isNew ? toForm('', {}) : null);
  const [loadError, setLoadError] = useState(null);
  const [error, setError] = useState(null);
  const [conflict, setConflict] = useState(null);
  const [notice, setNotice] = useState(null);
  const [busy, setBusy] = useState(false);

  const load = async () => {
    try {
      const loaded = await getDoc(kind, id);
      setDoc(loaded);
      setForm(toForm(loaded.id, loaded.spec));
      setLoadError(null);
    } catch (e) { setLoadError(e); }
  };
  useEffect(() => { if (!isNew) load(); }, [id]);

  // Builds the spec with `build()` (which may throw an error naming a
  // field), runs `before(spec)` (e.g. creating a domain the layer needs),
  // then writes it.
  const save = async (build, before) => {
    setError(null);
    setConflict(null);
    setNotice(null);
    let spec;
    try { spec = build(); } catch (e) { setError(e); return; }
    setBusy(true);
    try {
      if (before) await before(spec);
      const written = await putDoc(kind, isNew ? form.id.trim() : doc.id, spec, isNew ? 0 : doc.revision);
      if (isNew) {
        window.location.hash = `#/${kind}/${encodeURIComponent(written.id)}`;
        return;
      }
      setDoc(written);
      setForm(toForm(written.id, written.spec));
      setNotice('Saved.');
    } catch (e) {
      if (e instanceof ApiError && e.conflict && !isNew) {
        setConflict(e);
        await load();
      } else setError(e);
    } finally { setBusy(false); }
  };

  return { isNew, doc, form, setForm, loadError, error, setError, conflict, notice, busy, save };
}
