// Differential test: `capstan experiments eval` against the real
// @growthbook/growthbook SDK.
//
// Generates random, seeded GrowthBook payloads, attribute sets and requests of
// every op, answers each with the SDK (reference.cjs) and with capstan, and
// compares the answers as JSON values. Then does the same for the
// hand-written cases in edge_cases.jsonl.
//
//   node differential.cjs --capstan PATH [--seed N] [--cases N] [--engine reference|compiled]
//   node differential.cjs --dump FILE [--seed N] [--cases N]   (write the requests only)
//
// Exit status 0 when every answer agrees, 1 on any difference (the seed, the
// request and both answers are printed so the case replays), 2 on misuse.
"use strict";

const { spawn } = require("child_process");
const crypto = require("crypto");
const fs = require("fs");
const path = require("path");
const readline = require("readline");
const { answer } = require("./reference.cjs");
const { makeRandom } = require("./random.cjs");

function parseArgs(argv) {
  const args = { seed: null, cases: 12000, capstan: null, engine: "reference", dump: null };
  for (let i = 2; i < argv.length; i++) {
    const k = argv[i];
    const v = argv[++i];
    if (k === "--capstan") args.capstan = v;
    else if (k === "--seed") args.seed = Number(v);
    else if (k === "--cases") args.cases = Number(v);
    else if (k === "--engine") args.engine = v;
    else if (k === "--dump") args.dump = v;
    else {
      console.error("unknown argument " + k);
      process.exit(2);
    }
  }
  if (!args.capstan && !args.dump) {
    console.error("usage: node differential.cjs --capstan PATH [--seed N] [--cases N]");
    process.exit(2);
  }
  if (args.seed === null || Number.isNaN(args.seed)) args.seed = Date.now() % 1000000007;
  return args;
}

// ---- value pools ----------------------------------------------------------

const ID_VALUES = [
  "1", "2", "3", "abc", "user-17", "u_42", "日本", "😀x", "Ünïcödé", "", "0",
  123, 0, 1.5, -7, 1e21, true, false, null, "  spaced ", "a.b", "1e3",
];
const COUNTRIES = ["US", "UK", "us", "DE", "FR", "", null, 1];
const VERSIONS = [
  "1.2.3", "v1.10.0-rc.1", "1.2", "2.0.0+build.5", "1.0.0-beta", "1.0.0", "10.0.0",
  "0.9.99", "1.2.3.4", "", "v", 1.5, 2, null, "1.0.0-rc.10", "1.0.0-rc.2",
];
const STRINGS = [
  "a", "b", "abc", "ABC", "foo", "bar", "foobar", "", "10", "9", "1", "true", "null", "x y",
  "été", "ÉTÉ", "Ünïcödé", "a{", "p{L}", "\n", "a\u00a0b", "foo bar",
];
const GROUP_NAMES = ["g1", "g2", "g3", "missing"];
// Patterns: common ones, JavaScript's web-compatibility (Annex B) forms,
// ones JavaScript rejects, and non-ASCII case folding. Lookbehind is left
// out: std::regex has none (README.md).
const REGEXES = [
  "^a", "c$", "^[0-9]+$", "us|uk", "^v?1\\.", "(foo|bar)+", "\\d{2,}", "^$", "a.c",
  "^.{3}$", "[", "(", "null", "^\\w+$", "o{2}", "^[A-Z]", "\\s", "[^a-z]", "/", "a\\/b",
  "a{", "{", "}", "]", "\\p{L}", "[\\d-z]", "(?<n>o)\\k<n>", "x*+", "a{1}{2}", "a{2,1}", "[^]", "[]",
  "\\cJ", "\\bfoo\\b", "é", "[à-ÿ]", "^\\s*$", "\\u0041", "\\x62", "(a)\\1", "\\1(a)", "\\8",
  "[[:alpha:]]", "a*?", "(?:a|b){2}", "(?=a)", "(?!a)b", "\\W", "[\\s\\S]", "\\B",
];
const OPS_BY_KIND = ["$eq", "$ne", "$lt", "$lte", "$gt", "$gte"];
const VERSION_OPS = ["$veq", "$vne", "$vgt", "$vgte", "$vlt", "$vlte"];
const FIELDS = ["age", "country", "tags", "version", "loggedIn", "company", "nested.a.b", "score", "missing", "tags.length", "tags.0", "id"];

function randomScalar(r) {
  switch (r.int(0, 7)) {
    case 0: return r.int(-3, 30);
    case 1: return r.float();
    case 2: return r.pick(STRINGS);
    case 3: return r.chance(0.5);
    case 4: return null;
    case 5: return String(r.int(0, 30));
    case 6: return r.pick(VERSIONS);
    default: return r.pick(COUNTRIES);
  }
}

function randomValue(r, depth = 0) {
  const k = r.int(0, depth > 1 ? 5 : 8);
  if (k <= 5) return randomScalar(r);
  if (k === 6) return Array.from({ length: r.int(0, 3) }, () => randomValue(r, depth + 1));
  const o = {};
  for (let i = r.int(0, 3); i > 0; i--) o[r.pick(["a", "b", "c", "1", "0"])] = randomValue(r, depth + 1);
  return o;
}

function randomAttributes(r) {
  const a = {};
  if (r.chance(0.9)) a.id = r.pick(ID_VALUES);
  if (r.chance(0.5)) a.deviceId = r.pick(["d1", "d2", "dev-9", "", 7]);
  if (r.chance(0.3)) a.company = r.pick(["acme", "globex", "", null]);
  if (r.chance(0.7)) a.age = r.pick([r.int(0, 80), String(r.int(0, 80)), null, "", "x", 18, 21]);
  if (r.chance(0.7)) a.country = r.pick(COUNTRIES);
  if (r.chance(0.5)) a.tags = Array.from({ length: r.int(0, 4) }, () => r.pick(STRINGS.concat([1, 2, null])));
  if (r.chance(0.6)) a.version = r.pick(VERSIONS);
  if (r.chance(0.5)) a.loggedIn = r.pick([true, false, 1, 0, "true", null]);
  if (r.chance(0.3)) a.score = r.float() * 100;
  if (r.chance(0.3)) a.nested = { a: { b: randomScalar(r) }, c: [1, 2] };
  if (r.chance(0.1)) a.items = [{ x: 1 }, { x: r.int(0, 3) }, 0, null];
  return a;
}

function randomSavedGroups(r) {
  const g = {};
  for (const name of ["g1", "g2", "g3"]) {
    if (r.chance(0.8)) g[name] = Array.from({ length: r.int(0, 4) }, () => r.pick(ID_VALUES.concat(STRINGS)));
  }
  return g;
}

// ---- conditions -----------------------------------------------------------

function randomOperatorCondition(r, depth) {
  const c = {};
  const n = r.int(1, 2);
  for (let i = 0; i < n; i++) {
    switch (r.int(0, 13)) {
      case 0: case 1: c[r.pick(OPS_BY_KIND)] = randomScalar(r); break;
      case 2: c[r.pick(VERSION_OPS)] = r.pick(VERSIONS); break;
      case 3: c[r.pick(["$in", "$nin", "$ini", "$nini"])] = r.chance(0.9)
        ? Array.from({ length: r.int(0, 4) }, () => randomScalar(r)) : randomScalar(r); break;
      case 4: c[r.pick(["$all", "$alli"])] = Array.from({ length: r.int(0, 3) }, () => r.chance(0.8) ? r.pick(STRINGS) : { $gt: r.int(0, 3) }); break;
      case 5: c.$exists = r.pick([true, false, 1, 0]); break;
      case 6: c.$type = r.pick(["null", "array", "string", "number", "boolean", "object", "undefined"]); break;
      case 7: c.$size = r.chance(0.5) ? r.int(0, 3) : { $gt: r.int(0, 2) }; break;
      case 8: c[r.pick(["$regex", "$regexi"])] = r.chance(0.95) ? r.pick(REGEXES) : 5; break;
      case 9: c.$not = depth < 2 ? randomOperatorCondition(r, depth + 1) : randomScalar(r); break;
      case 10: c.$elemMatch = depth < 2 && r.chance(0.5) ? randomOperatorCondition(r, depth + 1) : { x: r.int(0, 3) }; break;
      case 11: c[r.pick(["$inGroup", "$notInGroup"])] = r.pick(GROUP_NAMES); break;
      case 12: c.$unknownOp = 1; break;
      default: c.$eq = r.pick(STRINGS);
    }
  }
  return c;
}

function randomCondition(r, depth = 0) {
  const c = {};
  const n = r.int(depth === 0 ? 0 : 1, 2);
  for (let i = 0; i < n; i++) {
    const k = r.int(0, 9);
    if (k <= 4 || depth >= 2) {
      const field = r.pick(FIELDS);
      // Astral characters are only hashed, never matched by regexes (README.md).
      let cond = r.chance(0.3) ? randomValue(r) : randomOperatorCondition(r, depth);
      if (field === "id" && cond && typeof cond === "object" && ("$regex" in cond || "$regexi" in cond)) cond = { $exists: true };
      c[field] = cond;
    } else if (k === 5 || k === 6) {
      c[r.pick(["$and", "$or", "$nor"])] = Array.from({ length: r.int(0, 3) }, () => randomCondition(r, depth + 1));
    } else if (k === 7) {
      c.$not = randomCondition(r, depth + 1);
    } else if (k === 8) {
      c.items = { $elemMatch: { x: r.int(0, 3) } };
    } else {
      c.country = r.pick(COUNTRIES);
    }
  }
  return c;
}

// ---- features and experiments ---------------------------------------------

const EXPERIMENT_KEYS = ["exp-a", "exp-b", "exp-c"];
const HASH_ATTRIBUTES = ["id", "deviceId", "company", "age", "missing", ""];

function randomWeights(r, n) {
  if (r.chance(0.15)) return Array.from({ length: r.int(1, 4) }, () => r.float());
  const raw = Array.from({ length: n }, () => r.next() + 0.01);
  const sum = raw.reduce((a, b) => a + b, 0);
  return raw.map((w) => Math.round((w / sum) * 1000) / 1000);
}

function randomRanges(r, n) {
  const out = [];
  let start = 0;
  for (let i = 0; i < n; i++) {
    const end = Math.min(1, start + Math.round(r.next() * 500) / 1000);
    out.push([start, end]);
    start = end;
  }
  return out;
}

function randomFilters(r) {
  return Array.from({ length: r.int(0, 2) }, () => {
    const f = { seed: r.pick(["s1", "s2", "ns"]), ranges: randomRanges(r, r.int(1, 2)) };
    if (r.chance(0.5)) f.attribute = r.pick(HASH_ATTRIBUTES);
    if (r.chance(0.3)) f.hashVersion = r.pick([1, 2, 3]);
    if (r.chance(0.05)) delete f.seed;
    return f;
  });
}

function randomMeta(r, n) {
  const m = Array.from({ length: n }, (_, i) => {
    const e = {};
    if (r.chance(0.8)) e.key = r.pick([String(i), "v" + i, "control", i === 0 ? "" : "t" + i]);
    if (r.chance(0.4)) e.name = r.pick(["Control", "Treatment", ""]);
    if (r.chance(0.15)) e.passthrough = r.pick([true, false]);
    return e;
  });
  return m;
}

function randomParentConditions(r, featureIds) {
  return Array.from({ length: r.int(1, 2) }, () => {
    const p = { id: r.pick(featureIds.concat(["unknown"])) };
    if (r.chance(0.9)) {
      p.condition = r.pick([
        { value: true }, { value: { $exists: true } }, { value: { $gt: 1 } }, { value: r.pick(STRINGS) },
        { value: { $in: [1, 2, "a", true] } }, { value: { $eq: null } }, { value: { $type: "object" } },
      ]);
    }
    if (r.chance(0.4)) p.gate = true;
    return p;
  });
}

// Optional experiment fields shared by experiment rules and `run` experiments.
function addExperimentFields(r, e, n, featureIds) {
  if (r.chance(0.4)) e.weights = randomWeights(r, n);
  if (r.chance(0.4)) e.coverage = r.pick([0, 0.1, 0.5, 0.99, 1, 1.5, -0.2, r.float(), null]);
  if (r.chance(0.4)) e.hashAttribute = r.pick(HASH_ATTRIBUTES);
  if (r.chance(0.25)) e.fallbackAttribute = r.pick(["deviceId", "company", "missing"]);
  if (r.chance(0.4)) e.hashVersion = r.pick([1, 2, 2, 3, 0]);
  if (r.chance(0.25)) e.seed = r.pick(["s1", "seed", "", "exp-a"]);
  if (r.chance(0.2)) e.namespace = [r.pick(["ns1", "ns2"]), r.pick([0, 0.2, 0.5]), r.pick([0.5, 0.8, 1])];
  if (r.chance(0.2)) e.filters = randomFilters(r);
  if (r.chance(0.15)) e.ranges = randomRanges(r, n);
  if (r.chance(0.4)) e.meta = randomMeta(r, r.chance(0.95) ? n : n - 1);
  if (r.chance(0.3)) e.condition = randomCondition(r);
  if (r.chance(0.2)) e.name = r.pick(["Experiment", ""]);
  if (r.chance(0.2)) e.phase = r.pick(["0", "1", ""]);
  if (r.chance(0.2)) e.bucketVersion = r.pick([0, 1, 2]);
  if (r.chance(0.15)) e.minBucketVersion = r.pick([0, 1, 2]);
  if (r.chance(0.1)) e.disableStickyBucketing = r.pick([true, false]);
  if (featureIds && r.chance(0.1)) e.parentConditions = randomParentConditions(r, featureIds);
}

function randomRule(r, featureIds, bandits) {
  const rule = {};
  if (r.chance(0.6)) rule.id = r.pick(["r1", "r2", "fr-x", ""]);
  if (r.chance(0.15)) rule.parentConditions = randomParentConditions(r, featureIds);
  if (r.chance(0.1)) rule.filters = randomFilters(r);
  if (r.chance(0.05)) rule.foo = "junk";
  const kind = r.int(0, 9);
  if (kind <= 3) {
    rule.force = randomValue(r);
    if (r.chance(0.4)) rule.condition = randomCondition(r);
    if (r.chance(0.35)) rule.coverage = r.pick([0, 0.3, 0.5, 1, r.float(), null]);
    if (r.chance(0.15)) rule.range = randomRanges(r, 1)[0];
    if (r.chance(0.3)) rule.hashAttribute = r.pick(HASH_ATTRIBUTES);
    if (r.chance(0.15)) rule.fallbackAttribute = r.pick(["deviceId", "company"]);
    if (r.chance(0.3)) rule.seed = r.pick(["s1", "seed", ""]);
    if (r.chance(0.3)) rule.hashVersion = r.pick([1, 2, 3]);
    return rule;
  }
  const n = r.chance(0.05) ? r.int(0, 1) : r.int(2, 4);
  const variations = Array.from({ length: n }, () => randomValue(r));
  if (kind === 9 && bandits.length) {
    rule.contextualVariations = variations;
    rule.contextualBanditRef = r.pick(bandits.concat(["missing-bandit"]));
    if (r.chance(0.3)) rule.variations = variations.slice(0, 2);
  } else {
    rule.variations = variations;
  }
  if (r.chance(0.6)) rule.key = r.pick(EXPERIMENT_KEYS);
  addExperimentFields(r, rule, n, null);
  return rule;
}

function randomBandits(r) {
  const out = {};
  for (const ref of ["cb1", "cb2"]) {
    if (!r.chance(0.6)) continue;
    const def = {};
    if (r.chance(0.7)) def.banditVersion = r.int(1, 5);
    def.contexts = Array.from({ length: r.int(0, 3) }, (_, i) => {
      const leaf = { leafId: i, weights: randomWeights(r, r.int(2, 4)) };
      if (r.chance(0.8)) leaf.condition = randomCondition(r);
      return leaf;
    });
    out[ref] = def;
  }
  return out;
}

function randomContext(r) {
  const featureIds = Array.from({ length: r.int(1, 4) }, (_, i) => "f" + i);
  const bandits = randomBandits(r);
  const features = {};
  for (const id of featureIds) {
    const f = {};
    if (r.chance(0.85)) f.defaultValue = randomValue(r);
    if (r.chance(0.9)) f.rules = Array.from({ length: r.int(0, 4) }, () => randomRule(r, featureIds, Object.keys(bandits)));
    features[id] = f;
  }
  const context = { attributes: randomAttributes(r), features };
  if (r.chance(0.7)) context.savedGroups = randomSavedGroups(r);
  if (Object.keys(bandits).length) context.contextualBandits = bandits;
  if (r.chance(0.15)) {
    context.forcedVariations = {};
    context.forcedVariations[r.pick(EXPERIMENT_KEYS.concat(featureIds))] = r.pick([0, 1, 2, 5, -1]);
  }
  if (r.chance(0.08)) context.qaMode = r.pick([true, false]);
  if (r.chance(0.08)) context.enabled = r.pick([true, false]);
  if (r.chance(0.15)) {
    const key = r.pick(EXPERIMENT_KEYS.concat(featureIds));
    context.url = r.pick([
      `https://example.com/?${key}=1`, `https://example.com/page?a=1&${key}=0#x`,
      `/?${key}=7`, `https://example.com/?${key}`, "https://example.com/", "",
    ]);
  }
  return { context, featureIds };
}

// URL targeting (urlPatterns, isURLTargeted): URLs and patterns as users
// write them and as the WHATWG parser's corner cases make them (ports,
// userinfo, IPv4/IPv6 hosts, percent-escapes, backslashes, dot segments,
// spaces, non-ASCII paths and queries, wildcards, internationalized hosts of
// other scripts, full-width and ideographic dots, invalid ones).
const TARGET_URLS = [
  "https://example.com/", "https://example.com/pricing", "https://Shop.Example.com/a/b?x=1&y=2#top",
  "http://example.com:8080/pricing/", "https://example.com:443/a/../pricing", "/pricing?x=1",
  "/a/b/", "", "https://other.org/pricing?x=", "//example.com/a b?q=x y", "https://example.com/a/./b#top",
  "https://example.com/pricing?x=1&x=2", "pricing", "?x=1", "#top", "https://example.com?x=1",
  "https://user:pw@example.com/pricing", "https://127.0.0.1:8443/a", "http://0x7f.1/pricing", "https://[::1]/a/b",
  "https://example.com/%7Euser/caf%C3%A9?q=%C3%A9t%C3%A9", "https://example.com/café?q=été&x=a+b", "https:\\\\example.com\\a\\b",
  "https://example.com/a%2Fb?x=%31", "https://EXAMPLE.com./pricing", "https://example.com/A/B?X=1", "https://example.com/a?x=%0A1",
  "https://ex ample.com/", "https://example.com:99999/", "http://[1::2::3]/", "https://example.com/a?x=1#Top", "https://example.com/%2e%2E/pricing",
  "ws://example.com/pricing", "ftp://example.com/pricing", "  https://example.com/pricing\t", "https://example.com/pricing?x=1;y=2",
  "https://B\u00fccher.de/pricing", "https://%C3%A9cole.fr/a/b", "https://xn--bcher-kva.de/x",
  "https://\u043f\u0440\u0438\u043c\u0435\u0440.\u0440\u0444/pricing", "https://xn--e1afmkfd.xn--p1ai/a/b?x=1",
  "https://\u4f8b\u3048\u3002\u30c6\u30b9\u30c8/pricing", "https://\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45\uff0e\uff43\uff4f\uff4d/pricing",
  "https://\u03a3\u03af\u03c3\u03c5\u03c6\u03bf\u03c2.gr/a", "https://a\u200db.com/pricing", "https://xn--a.com/", "https://\ud83d\ude00.example.com/a/b",
  "https://\u0645\u062b\u0627\u0644.\u0625\u062e\u062a\u0628\u0627\u0631/?x=1", "https://\u0301a.com/",
];
const SIMPLE_PATTERNS = [
  "https://example.com/pricing", "example.com/pricing", "*.example.com/*", "https://*.example.com/a/*",
  "/pricing", "/a/*", "pricing", "example.com/*?x=1", "example.com/*?x=*", "/*#top", "", "*",
  "example.com:8080/*", "https://", "example.com/*/b/", "other.org", "http://example.com/pricing/",
  "*?x=2", "/a b", "example.com/a/../pricing", "EXAMPLE.com/Pricing", "*.org/*?x=", "//example.com/a",
  "127.0.0.1:8443/*", "[::1]/a/*", "example.com/café*", "*?q=été", "example.com/*?x=a b", "example.com/%7Euser/*",
  "example.com/a%2Fb", "*?x=1*", "https://user@example.com/pricing", "example.com/(a)+[b]/$^", "*.example.com./*", "*?x=*1",
  "example.com\\pricing", "*#Top", "?x=", "/a/b/c/../..", "0x7f.1/*", "*://example.com/*",
  "b\u00fccher.de/*", "*.fr/a/*", "\u00c9COLE.fr/*", "xn--bcher-kva.de/*",
  "\u041f\u0420\u0418\u041c\u0415\u0420.\u0440\u0444/*", "*.xn--p1ai/*", "xn--e1afmkfd.xn--p1ai/pricing", "\u4f8b\u3048.\u30c6\u30b9\u30c8/*",
  "\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com/pricing", "https://\u03c3\u03af\u03c3\u03c5\u03c6\u03bf\u03c2.gr/*", "a\u200db.com/*", "*.\u0440\u0444/a/*",
];
const REGEX_PATTERNS = ["^https://example\\.com/", "pricing$", "^/a/", "\\?x=1", "example\\.(com|org)", "([", "^/$", "top",
  "^https://user:pw@", "caf%C3%A9", "^/pricing\\?", "//example", "a/b", "127\\.0\\.0\\.1", "\\[::1\\]"];
// URLs and simple patterns composed from parts (url_differential.cjs tests
// the parser alone on wilder ones).
const URL_HOSTS = ["example.com", "Example.COM", "shop.example.com", "a.example.com.", "127.0.0.1", "0x7f.1", "[::1]", "other.org", "%65xample.com",
  "\u043f\u0440\u0438\u043c\u0435\u0440.\u0440\u0444", "xn--e1afmkfd.xn--p1ai", "\u0415xample.com", "\uff45xample\u3002com"];
const URL_PATHS = ["", "/", "/pricing", "/Pricing/", "/a/b", "/a/../pricing", "/%70ricing", "/caf\u00e9", "/a b", "/a\\b", "/a/./b/", "//x"];
const URL_QUERIES = ["", "", "?x=1", "?x=2&x=1", "?x=%31", "?x=a+b", "?y=&x=", "?x=\u00e9t\u00e9", "?X=1", "?x=1%0A2", "?utm=1#top", "?x"];
const URL_TAILS = ["", "", "#top", "#Top", "#"];
function randomTargetUrl(r) {
  const scheme = r.pick(["https://", "https://", "http://", "//", "HTTPS://", "https:\\\\", "https://user:pw@"]);
  const rel = r.chance(0.2);
  return (rel ? "" : scheme + r.pick(URL_HOSTS) + r.pick(["", "", ":443", ":8080", ":80"])) + r.pick(URL_PATHS) + r.pick(URL_QUERIES) + r.pick(URL_TAILS);
}
function randomSimplePattern(r) {
  const host = r.pick(["", "", "example.com", "*.example.com", "*", "https://example.com", "127.0.0.1", "[::1]", "EXAMPLE.com:8080", "http://*",
    "\u043f\u0440\u0438\u043c\u0435\u0440.\u0440\u0444", "*.xn--p1ai", "\uff45xample.com"]);
  const path = r.pick(["", "/", "/pricing", "/*", "/a/*", "/PRICING/", "/a b", "/caf\u00e9*", "/%70ricing", "*"]);
  const query = r.pick(["", "", "?x=1", "?x=*", "?x=", "?x=a b", "?x=\u00c9T\u00c9", "?x=1*2", "?y=*&x=2"]);
  return host + path + query + r.pick(["", "", "#top", "#*"]);
}
function randomUrlPatterns(r) {
  return Array.from({ length: r.int(0, 3) }, () => {
    const regex = r.chance(0.3);
    const target = { type: regex ? "regex" : "simple", pattern: r.pick(regex ? REGEX_PATTERNS : SIMPLE_PATTERNS) };
    if (!regex && r.chance(0.4)) target.pattern = randomSimplePattern(r);
    if (r.chance(0.02)) target.type = "other";
    if (r.chance(0.4)) target.include = r.pick([true, false, false]);
    // A pattern that is not a string (getUrlRegExp and the simple route call
    // .replace on it inside a try: no match), or an element that is not a
    // target object (null throws reading .type; others match nothing).
    if (r.chance(0.04)) target.pattern = r.pick([5, null, ["^/"], {}, true, 0, ["pricing"]]);
    if (r.chance(0.02)) return r.pick([null, "abc", 5, [], {}, true]);
    return target;
  });
}

const OLD_STYLE_URLS = ["^/pricing", "pricing", "", ".*", "/a/", "([", 0, 5, true, false, null, {}, [], ["pricing"], { test: 1 }];

function randomExperiment(r) {
  const n = r.chance(0.05) ? r.int(0, 1) : r.int(2, 4);
  const e = { key: r.pick(EXPERIMENT_KEYS), variations: Array.from({ length: n }, () => randomValue(r)) };
  addExperimentFields(r, e, n, ["f0", "f1"]);
  if (r.chance(0.1)) e.active = r.pick([true, false]);
  if (r.chance(0.1)) e.status = r.pick(["draft", "running", "stopped"]);
  if (r.chance(0.08)) e.force = r.pick([0, 1, 5, -1]);
  if (r.chance(0.25)) e.urlPatterns = r.chance(0.05) ? r.pick([{}, "abc", 5]) : randomUrlPatterns(r);
  // Old-style `url` (a RegExp in the SDK's types; JSON can only give other
  // types, on which the SDK's urlIsValid calls .test).
  if (r.chance(0.06)) e.url = r.pick(OLD_STYLE_URLS);
  return e;
}

// URL-redirect auto experiments (the urlRedirect op): current URLs, redirect
// destinations (absolute, relative, invalid, with and without queries that
// persistQueryString merges) and the patterns that target the original page.
const REDIRECT_FROM = [
  "https://www.example.com/home", "https://www.example.com/home?color=blue&food=sushi",
  "http://www.example.com/home?a=1&a=2#top", "https://www.example.com/home?q=x+y&e=%C3%A9&s=a%20b",
  "/home", "", "https://www.example.com/other", "https://Example.com:443/home/", "https://www.example.com/home?utm=1&x=",
  "https://www.example.com/home?color=red&&=v&k", "https://www.example.com/home-new?color=blue", "https://www.example.com/home?%zz=1&é=ü",
  "https://\u043f\u0440\u0438\u043c\u0435\u0440.\u0440\u0444/home?color=blue", "https://www\uff0eexample\u3002com/home",
];
const REDIRECT_TO = [
  "https://www.example.com/home-new", "https://www.example.com/home-new?color=red", "https://other.org/landing?x=1#frag",
  "https://www.example.com/home", "http://www.example.com/home?color=blue", "/relative", "", "not a url",
  "https://www.example.com/new?a=b c&d", "https://www.example.com/new?", "https://www.example.com/new#h", "https://WWW.example.com:443/home-new/",
  "https://www.example.com/new?q=%41+b&x=%", 5, "https://www.example.com/home?color=blue&food=sushi",
  "https://\u043f\u0440\u0438\u043c\u0435\u0440.\u0440\u0444/new?x=1", "https://a\u200db.com/new",
];
const REDIRECT_PATTERNS = [
  { type: "simple", pattern: "https://www.example.com/home" }, { type: "simple", pattern: "www.example.com/home*" },
  { type: "simple", pattern: "/home" }, { type: "regex", pattern: "home$" }, { type: "simple", pattern: "*" },
  { type: "simple", pattern: "www.example.com/home", include: false }, { type: "regex", pattern: "^https://www\\.example\\.com/home-new" },
  { type: "simple", pattern: "*?color=blue" },
];

function randomAutoExperiment(r) {
  const kind = r.int(0, 9);
  const n = r.chance(0.1) ? 1 : r.int(2, 3);
  let variations;
  if (kind <= 6) {
    variations = Array.from({ length: n }, (_, i) => {
      if (i === 0 && r.chance(0.6)) return r.pick([{}, { urlRedirect: "" }]);
      if (r.chance(0.05)) return r.pick([null, 3, "x", []]);
      const v = { urlRedirect: r.chance(0.5) ? r.pick(REDIRECT_TO.slice(0, 3)) : r.pick(REDIRECT_TO) };
      if (r.chance(0.1)) v.css = ".a{}";
      return v;
    });
  } else if (kind <= 8) {
    variations = Array.from({ length: n }, (_, i) => (i === 0 ? {} : r.pick([{ css: "x" }, { js: "" }, { domMutations: [{ selector: "h1" }] }, { domMutations: [] }])));
  } else {
    variations = Array.from({ length: n }, () => randomValue(r));
  }
  const e = { key: r.pick(["redir-a", "redir-b", "exp-a"]), variations };
  if (r.chance(0.9)) e.urlPatterns = Array.from({ length: r.int(1, 2) }, () => r.pick(REDIRECT_PATTERNS));
  if (r.chance(0.5)) e.persistQueryString = r.pick([true, true, false]);
  if (r.chance(0.05)) e.manual = true;
  if (r.chance(0.25)) addExperimentFields(r, e, n, ["f0", "f1"]);
  if (r.chance(0.05)) e.active = false;
  if (r.chance(0.05)) e.url = r.pick(OLD_STYLE_URLS);
  return e;
}

// Experiment rules of a context, as sticky bucketing keys them.
function stickyCandidates(context) {
  const out = [];
  for (const [id, f] of Object.entries(context.features)) {
    for (const rule of f.rules || []) {
      if (!rule || !(rule.variations || rule.contextualVariations)) continue;
      const metaKeys = (rule.meta || []).map((m) => m.key).filter(Boolean);
      out.push({ key: rule.key || id, bucketVersion: rule.bucketVersion || 0, metaKeys });
    }
  }
  return out;
}

// Sticky-bucket documents, mostly for the context's own experiments and
// attribute values so that stored assignments are found and used.
function randomStickyDocs(r, context) {
  const docs = [];
  const candidates = stickyCandidates(context);
  for (let i = r.int(0, 3); i > 0; i--) {
    const attributeName = r.pick(["id", "id", "deviceId", "company"]);
    const raw = context.attributes[attributeName];
    const attributeValue = r.chance(0.85) && raw !== undefined ? (typeof raw === "string" ? raw : JSON.stringify(raw)) : r.pick(["d1", "1", "x"]);
    const assignments = {};
    for (let j = r.int(0, 3); j > 0; j--) {
      if (candidates.length && r.chance(0.8)) {
        const c = r.pick(candidates);
        const version = r.pick([c.bucketVersion, c.bucketVersion, 0, 1]);
        assignments[`${c.key}__${version}`] = c.metaKeys.length && r.chance(0.85) ? r.pick(c.metaKeys) : r.pick(["0", "1", "zz"]);
      } else {
        assignments[`${r.pick(EXPERIMENT_KEYS.concat(["f0", "f1"]))}__${r.pick([0, 1, 2])}`] =
          r.pick(["0", "1", "2", "v1", "control", "t1"]);
      }
    }
    docs.push({ attributeName, attributeValue, assignments });
  }
  return docs;
}

// Encrypts `plain` as GrowthBook's payload encryption does.
function encrypt(r, plain) {
  const keyBytes = r.pick([16, 16, 24, 32]);
  const key = crypto.createHash("sha256").update(String(r.next())).digest().subarray(0, keyBytes);
  const iv = crypto.createHash("md5").update(String(r.next())).digest();
  const cipher = crypto.createCipheriv(`aes-${keyBytes * 8}-cbc`, key, iv);
  const ct = Buffer.concat([cipher.update(plain, "utf8"), cipher.final()]);
  return { encryptedString: iv.toString("base64") + "." + ct.toString("base64"), key: key.toString("base64") };
}

function randomRequest(r) {
  const k = r.next();
  if (k < 0.42) {
    const { context, featureIds } = randomContext(r);
    return { op: "feature", context, feature: r.chance(0.95) ? r.pick(featureIds) : "nope" };
  }
  if (k < 0.47) {
    const { context } = randomContext(r);
    context.url = r.chance(0.6) ? r.pick(REDIRECT_FROM.slice(0, 4)) : r.pick(REDIRECT_FROM);
    if (r.chance(0.05)) delete context.url;
    if (r.chance(0.8)) context.attributes.id = "u" + r.int(0, 99);
    if (r.chance(0.7)) delete context.forcedVariations;
    context.experiments = r.chance(0.02) ? r.pick([{}, "x", [null]]) : Array.from({ length: r.chance(0.05) ? 0 : r.int(1, 3) }, () => randomAutoExperiment(r));
    return { op: "urlRedirect", context };
  }
  if (k < 0.6) {
    const { context } = randomContext(r);
    const experiment = randomExperiment(r);
    // Targeting needs a URL from the targeting pool (randomContext's are few).
    if (experiment.urlPatterns) {
      if (r.chance(0.85)) context.url = r.chance(0.4) ? randomTargetUrl(r) : r.pick(TARGET_URLS);
      else delete context.url;
    }
    return { op: "run", context, experiment };
  }
  if (k < 0.74) {
    return { op: "evalCondition", condition: randomCondition(r), attributes: randomAttributes(r), savedGroups: randomSavedGroups(r) };
  }
  if (k < 0.84) {
    const { context, featureIds } = randomContext(r);
    // Sticky bucketing finds assignments through variation keys: give most
    // experiment rules complete meta.
    for (const f of Object.values(context.features)) {
      for (const rule of f.rules || []) {
        const vs = rule.contextualVariations || rule.variations;
        if (vs && !rule.meta && r.chance(0.7)) rule.meta = vs.map((_, i) => ({ key: r.pick([String(i), "v" + i]) }));
      }
    }
    const docs = randomStickyDocs(r, context);
    if (r.chance(0.2)) {
      context.stickyBucketAssignmentDocs = {};
      for (const d of randomStickyDocs(r, context)) context.stickyBucketAssignmentDocs[`${d.attributeName}||${d.attributeValue}`] = d;
    }
    return { op: "stickyBucket", context, stickyBucketStore: docs, feature: r.pick(featureIds) };
  }
  if (k < 0.88) {
    return { op: "hash", seed: r.pick(STRINGS.concat(["exp-a", "__ns"])), value: String(r.pick(ID_VALUES)), version: r.pick([1, 2, 2, 3]) };
  }
  if (k < 0.9) {
    const n = r.int(0, 4);
    return { op: "getBucketRange", numVariations: n, coverage: r.pick([0, 0.5, 1, 1.2, -1, r.float()]), weights: r.chance(0.5) ? randomWeights(r, n) : null };
  }
  if (k < 0.91) {
    return { op: "chooseVariation", n: r.float(), ranges: randomRanges(r, r.int(0, 3)) };
  }
  if (k < 0.92) {
    return { op: "inNamespace", id: String(r.pick(ID_VALUES)), namespace: [r.pick(["ns1", "ns2"]), r.pick([0, 0.3]), r.pick([0.5, 1])] };
  }
  if (k < 0.93) return { op: "getEqualWeights", numVariations: r.int(-1, 6) };
  if (k < 0.96) {
    return { op: "versionCompare", v1: String(r.pick(VERSIONS)), operator: r.pick(VERSION_OPS), v2: String(r.pick(VERSIONS)) };
  }
  if (k < 0.98) {
    const id = r.pick(EXPERIMENT_KEYS);
    return {
      op: "getQueryStringOverride", id, numVariations: r.int(1, 4),
      url: r.pick([`https://a.com/?${id}=1`, `https://a.com/?x=2&${id}=2#h`, `/?${id}= 1`, `/?${id}=0x1`, `/?${id}=-0`, `/?${id}`, `/p?${id}=1?x`, "", "https://a.com/"]),
    };
  }
  const e = encrypt(r, JSON.stringify(randomValue(r)));
  switch (r.int(0, 5)) {
    case 0: e.key = Buffer.alloc(r.pick([15, 16, 20])).toString("base64"); break;
    case 1: e.encryptedString = e.encryptedString.replace(".", ""); break;
    case 2: e.encryptedString = e.encryptedString.slice(0, -4); break;
    case 3: e.encryptedString += "!"; break;
    default: break;
  }
  return { op: "decrypt", ...e };
}

// ---- comparison -----------------------------------------------------------

function deepEqual(a, b) {
  if (a === b) return true;
  if (typeof a === "number" && typeof b === "number") return a === b;
  if (a === null || b === null || typeof a !== typeof b) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) return a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  if (typeof a === "object") {
    const ka = Object.keys(a).sort();
    const kb = Object.keys(b).sort();
    return deepEqual(ka, kb) && ka.every((k) => deepEqual(a[k], b[k]));
  }
  return false;
}

// Both sides failing counts as agreement: the messages differ by language.
function agree(expected, actual) {
  if ("error" in expected || "error" in actual) return "error" in expected && "error" in actual;
  return deepEqual(expected, actual);
}

async function runCapstan(binary, engine, lines) {
  const child = spawn(binary, ["experiments", "eval", "--engine", engine], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  const answers = [];
  const rl = readline.createInterface({ input: child.stdout });
  rl.on("line", (line) => answers.push(line));
  const exited = new Promise((resolve) => child.on("close", (code) => resolve(code)));
  child.stdin.on("error", () => {});
  child.stdin.end(lines.join("\n") + "\n");
  const code = await exited;
  if (code !== 0) throw new Error(`capstan experiments eval exited with status ${code}`);
  return answers;
}

async function main() {
  const args = parseArgs(process.argv);
  // The SDK logs warnings (bad weights, unknown operators) to the console;
  // this script reports through process.stderr only.
  console.log = console.error = console.warn = () => {};
  const r = makeRandom(args.seed);
  const requests = [];
  for (let i = 0; i < args.cases; i++) requests.push({ ...randomRequest(r), seq: i });
  const edgeFile = path.join(__dirname, "edge_cases.jsonl");
  const edges = fs.readFileSync(edgeFile, "utf8").split("\n").filter((l) => l.trim() && !l.startsWith("//"));
  for (const [i, line] of edges.entries()) requests.push({ ...JSON.parse(line), seq: args.cases + i });

  if (args.dump) {
    // The requests alone, one per line (for sanitizer or fuzz runs).
    fs.writeFileSync(args.dump, requests.map((q) => JSON.stringify(q)).join("\n") + "\n");
    return;
  }
  const expected = [];
  for (const req of requests) expected.push(await answer(req));
  const lines = requests.map((q) => JSON.stringify(q));
  const actual = await runCapstan(args.capstan, args.engine, lines);

  const byOp = {};
  let failures = 0;
  for (let i = 0; i < requests.length; i++) {
    const op = requests[i].op;
    byOp[op] = byOp[op] || { agreed: 0, total: 0 };
    byOp[op].total++;
    let got;
    try {
      got = JSON.parse(actual[i]);
    } catch (e) {
      got = { unparsable: String(actual[i]) };
    }
    if (got.seq !== requests[i].seq) got = { missing_or_out_of_order: got };
    if (agree(expected[i], got)) {
      byOp[op].agreed++;
      const e = expected[i];
      // What the agreeing answers covered, so a run shows it was not all defaults.
      const tag = "error" in e ? "error"
        : op === "feature" ? "source=" + e.source
        : op === "run" ? (e.inExperiment ? (e.hashUsed ? "in (hashed)" : "in (forced)") : "not in")
        : op === "urlRedirect" ? (e.result.length === 0 ? "nothing tracked" : e.result.some((x) => x.urlWithParams) ? "redirected" : "tracked, no redirect")
        : op === "stickyBucket" ? (e.experimentResult && e.experimentResult.stickyBucketUsed ? "sticky used" : (e.experimentResult && e.experimentResult.inExperiment ? "newly assigned" : "no assignment"))
        : "result=" + (typeof e.result === "boolean" || e.result === null ? String(e.result) : typeof e.result);
      byOp[op].tags = byOp[op].tags || {};
      byOp[op].tags[tag] = (byOp[op].tags[tag] || 0) + 1;
      continue;
    }
    failures++;
    if (failures <= 5) {
      const where = i < args.cases ? `random case ${i}` : `edge case ${i - args.cases + 1} of edge_cases.jsonl`;
      process.stderr.write(
        `MISMATCH (${where}, seed ${args.seed})\n  request:  ${lines[i]}\n  sdk:      ${JSON.stringify(expected[i])}\n  capstan:  ${actual[i]}\n`,
      );
    }
  }
  const randomCount = args.cases;
  process.stderr.write(`growthbook differential (${args.engine} engine): seed ${args.seed}, ${randomCount} random + ${edges.length} hand-written cases\n`);
  for (const [op, s] of Object.entries(byOp).sort()) {
    const tags = Object.entries(s.tags || {}).sort().map(([t, c]) => `${t}: ${c}`).join(", ");
    process.stderr.write(`  ${op.padEnd(24)} ${s.agreed}/${s.total} agreed  (${tags})\n`);
  }
  if (failures) {
    process.stderr.write(`FAILED: ${failures} answers differ. Replay with --seed ${args.seed}\n`);
    process.exit(1);
  }
  process.stderr.write("all answers agree\n");
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack ? e.stack : e) + "\n");
  process.exit(1);
});
