// GrowthBook's URL-redirect experiments, server side: the `urlRedirect` op of
// the eval line protocol (/work/shared/experiments-eval-protocol.md section 4).
//
// It does what `new GrowthBook({...context})` does with `experiments` in
// node (GrowthBook.ts `_updateAllAutoExperiments` / `_runAutoExperiment`):
// each auto experiment in order, skipping `manual` ones; a redirect
// experiment (truthy urlPatterns, a variation object with `urlRedirect`) is
// blocked (not in) when the context URL or a variation's truthy urlRedirect
// is not an absolute URL (`new URL` without a base throws); a visual one
// (domMutations, js or css) runs; any other is blocked. Runs go through
// GrowthBookEvaluator::Run (URL targeting, query-string forcing, conditions,
// hashing); each run that hashed the user is a deferred tracking call, kept
// in first-seen order by the SDK's dedupe key (hashAttribute + hashValue +
// key + variationId; a repeat replaces the value in place). A user in a
// redirect experiment stops the loop; when the assigned variation has a
// truthy urlRedirect, the redirect URL is it, or with `persistQueryString`
// util.ts mergeQueryStrings(context URL, it) (the current URL's parameters
// `searchParams.set` on the redirect unless it has the name, re-serialized
// as URLSearchParams does), unless isURLTargeted(redirect URL, urlPatterns)
// (the redirect would land on the experiment's own page again).
//
// Answer: [{"inExperiment", "urlRedirect" (omitted when the variation has
// none), "urlWithParams" (the redirect URL, "" if none; the same in every
// entry)}, ...], one per tracking call.
//
// Errors: InvalidArgument "TypeError: ..." where the SDK throws (experiments
// not an array, an experiment that is not an object or has no variations
// array, a tracked variation that is null); Unimplemented where URL parsing
// is (url_target.h, whatwg_url.h).
//
// Thread-safety: pure function.
#pragma once

#include "absl/status/statusor.h"
#include "experiments/js_value.h"

namespace capstan::experiments {

absl::StatusOr<Json> UrlRedirect(const Json& context);

// util.ts mergeQueryStrings(oldUrl, newUrl) (exposed for tests): `new_url`
// itself when either fails to parse as an absolute URL. Throws Unsupported
// (evaluator.h) outside whatwg_url.h.
Json MergeQueryStrings(const std::string& old_url, const Json& new_url);

}  // namespace capstan::experiments
