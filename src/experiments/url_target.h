// GrowthBook's URL targeting: the SDK's isURLTargeted (util.ts), which an
// experiment's `urlPatterns` goes through in runExperiment and the redirect
// flow (url_redirect.h) goes through again for the redirect's own URL.
//
// The SDK parses the user's URL with `new URL(url, "https://_")` and each
// "simple" pattern (a missing scheme before a dotted host made `https://`,
// `*` made `_____`) with `new URL(pattern, "https://_____")`; whatwg_url.h
// does both. A simple pattern then compares host, path (leading/trailing
// slash optional), hash (only if the pattern has one) and each of the
// pattern's query parameters (`searchParams.get`) as anchored,
// case-insensitive JavaScript regular expressions in which the literal text
// is escaped and `_____` is `.*`; those run on JsRegex (js_regex.h), built
// exactly as the SDK builds them. A "regex" pattern is getUrlRegExp's
// RegExp (its `/` escaping changes no meaning) tested on the href and on the
// href after the origin.
//
// std::nullopt (the evaluator answers Unimplemented rather than guess):
// the URL or a simple pattern is outside whatwg_url.h (`file:` and
// non-special schemes); a URL part that is not plain ASCII (a decoded
// query value) compared with a simple pattern, or an href tested by a regex
// pattern, is longer than JsRegex::kMaxSubjectBytes (4 KB); `targets` is an object with
// a `length` key (JavaScript would read it as array-like).
// An element that is null throws JsTypeError, as `targets[i].type` throws.
//
// Thread-safety: pure functions.
#pragma once

#include <optional>
#include <string_view>

#include "experiments/js_value.h"
#include "experiments/whatwg_url.h"

namespace capstan::experiments {

// isURLTargeted(url, targets); `targets` is any JSON value (the SDK reads
// `.length` and `[i]` of whatever it is given).
std::optional<bool> UrlTargeted(std::string_view url, const Json& targets);

// _evalSimpleUrlPart(actual, pattern, isPath) with the pattern's `*`
// already `_____`. Plain ASCII (no line terminators) on both sides takes a
// glob route, anything else (or `force_regex`) the SDK's regular expression
// on JsRegex; the two must agree where both apply (url_target_fuzz and
// url_target_test check it). nullopt: past JsRegex's limits.
std::optional<bool> SimpleUrlPartMatches(std::string_view actual, std::string_view pattern,
                                         bool is_path, bool force_regex = false);

// The bases the SDK resolves against: "https://_" for the user's URL and
// "https://_____" for a simple pattern.
const WhatwgUrl& UrlTargetBase();
const WhatwgUrl& UrlPatternBase();

}  // namespace capstan::experiments
