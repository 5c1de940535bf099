#!/usr/bin/env python3
"""Turns the raw results of bench/cache-conformance.sh into Markdown.

    python3 bench/cache_conformance_report.py docs/benchmarks/cache-conformance.json docs/benchmarks/cache.md \
        [SUITE_CLASSIFICATION.json]

The input (written by bench/cache-conformance.sh) holds the command line, the
date, the suite's revision, the suite's test index (groups, test ids, kinds,
dependencies) and, per implementation, either the suite runner's JSON output
(test id -> true, or [error name, message]) or why it was not available.

Each test's result is classified as the suite itself does
(test-engine/lib/results.mjs, determineTestResult with dependencies honoured,
as cache-tests.fyi shows them):
  pass             a required or optimal test passed
  fail             a required test (kind "required", the default) failed:
                   likely a conformance problem
  optional_fail    an optimal test failed (the cache did not reuse a response
                   it could have): not a conformance problem
  yes / no         a "check" test (how the cache behaves where the RFC leaves
                   a choice): information, neither pass nor fail
  dependency_fail  a test this one depends on did not pass, so it says nothing
  setup_fail, harness_fail, retry   the exchange itself went wrong
  untested         not run (browser-only tests)

With SUITE_CLASSIFICATION.json (written by bench/cache-conformance.sh with the
suite's own determineTestResult), every classification is checked against the
suite's and the report is refused if one differs.

Only the part between the conformance markers is rewritten; the rest of the
Markdown file (the benchmark section of bench/cache-vs-nginx-varnish.sh) is
kept.
"""

import json
import os
import sys

BEGIN = "<!-- conformance:begin (bench/cache_conformance_report.py) -->"
END = "<!-- conformance:end -->"

SYMBOL = {
    "pass": "✅", "fail": "⛔️", "optional_fail": "⚠️", "yes": "Y", "no": "N",
    "setup_fail": "🔹", "harness_fail": "⁉️", "dependency_fail": "⚪️", "retry": "↻",
    "untested": "-",
}
PASS_TYPES = ("pass", "yes")


def classify(tests_by_id, results, test_id, memo):
    """The suite's determineTestResult(testSuites, id, results, true)."""
    if test_id in memo:
        return memo[test_id]
    test = tests_by_id[test_id]
    result = results.get(test_id)
    if result is None:
        kind = "untested"
    else:
        kind = None
        for dep in test.get("depends_on", []):
            if dep in tests_by_id and classify(tests_by_id, results, dep, memo) not in PASS_TYPES:
                kind = "dependency_fail"
                break
        if kind is None:
            if isinstance(result, list) and result and result[0] == "Setup":
                kind = "retry" if len(result) > 1 and result[1] == "retry" else "setup_fail"
            elif isinstance(result, list) and result and result[0] == "AbortError":
                kind = "harness_fail"
            elif test.get("kind", "required") == "required":
                kind = "pass" if result is True else "fail"
            elif test["kind"] == "optimal":
                kind = "pass" if result is True else "optional_fail"
            elif test["kind"] == "check":
                kind = "yes" if result is True else "no"
            else:
                raise ValueError(f"test {test_id}: unknown kind {test['kind']!r}")
    memo[test_id] = kind
    return kind


def message(results, test_id):
    result = results.get(test_id)
    if isinstance(result, list):
        text = " ".join(str(part) for part in result[1:]) or str(result[0])
        return text.replace("|", "\\|").replace("\n", " ")
    return ""


def is_cache_control_group(group):
    return group["id"].startswith("cc-")


def is_freshness_group(group):
    return "freshness" in group["name"].lower()


def counts(kinds):
    c = {k: 0 for k in SYMBOL}
    for k in kinds:
        c[k] += 1
    return c


def render(run):
    index = run["index"]
    tests_by_id = {t["id"]: t for g in index for t in g["tests"]}
    impls = run["implementations"]
    ran = [i for i in impls if i["status"] == "ok"]
    kinds = {}  # impl name -> test id -> kind
    for impl in ran:
        memo = {}
        kinds[impl["name"]] = {tid: classify(tests_by_id, impl["results"], tid, memo) for tid in tests_by_id}

    out = [BEGIN, "", "## Conformance: http-tests/cache-tests", ""]
    out.append(f"Command: `{run['command']}`  ")
    out.append(f"Date: {run['date']}  ")
    suite = run["suite"]
    out.append(f"Suite: {suite['repository']} at {suite['revision']} (package {suite['package_version']}), "
               f"run with node {suite['node']} (its CLI runner, test-engine/cli.mjs, against its origin, "
               "test-engine/server/server.mjs)")
    out.append("")
    out.append("| Implementation | Version | Configuration |")
    out.append("|---|---|---|")
    config = {
        "nginx": "`proxy_cache` (keys_zone 16m, max_size 256m), `proxy_cache_revalidate on`, "
                 "`proxy_cache_use_stale error timeout updating http_500 http_502 http_503 http_504`, "
                 "`proxy_cache_background_update on`, `proxy_cache_lock on`",
        "nginx-plain": "`proxy_cache` and `proxy_cache_revalidate on` only (the suite's own Docker configuration)",
        "varnish": "built-in VCL (backend only), `-s malloc,256m`, `-p default_ttl=0 -p default_grace=0 "
                   "-p default_keep=3600` (as the suite's Docker image runs it: no 2-minute TTL for "
                   "responses without explicit freshness)",
        "capstan": "`capstan gateway --listen … --upstream … --cache 256MiB --threads 1`",
        "none": "no cache: the runner straight at the origin (baseline)",
    }
    for impl in impls:
        status = "" if impl["status"] == "ok" else f" — **not available yet**: {impl.get('reason', '')}"
        if impl.get("reused_from"):
            status += f" (results of the run of {impl['reused_from']}, KEEP_OTHERS=1)"
        out.append(f"| {impl['name']} | {impl['version']} | {config.get(impl['name'], '')}{status} |")
    out.append("")
    out.append("How to read: *passed* counts required and optimal tests that passed; *failed* are "
               "required tests that failed (likely a conformance problem); *optional failed* are "
               "optimal tests that failed (a response that could have been reused was not; not a "
               "conformance problem); *checks* are tests of behaviour the RFC leaves open, shown as "
               "yes/no; *dependency failed* tests say nothing because a test they build on did not "
               "pass; *setup/harness* are exchanges that went wrong before the cache could be "
               "judged. The classification is the suite's own (test-engine/lib/results.mjs), as "
               "on cache-tests.fyi. The suite's README: \"passing all of the tests currently means "
               "nothing -- this is not a conformance test suite\"; the required tests are the "
               "ones that follow from RFC 9111's requirements.")
    out.append("")
    names = {i["name"] for i in impls}
    notes = []
    if {"nginx", "nginx-plain"} <= names:
        notes.append("nginx against nginx-plain: with `proxy_cache_use_stale updating` and "
                     "`proxy_cache_background_update on`, nginx answers a stale entry at once while one "
                     "request refreshes it in the background; the suite counts such an answer as a "
                     "required failure (e.g. `freshness-max-age-stale`: \"Response 2 comes from cache\"), "
                     "so both configurations are shown.")
    if "none" in names:
        notes.append("none: the runner straight at the origin. Tests without a `kind` count as required "
                     "even where their name says \"optimal\" (e.g. `freshness-s-maxage-shared`), so even "
                     "a cache that stores nothing fails a few required tests; most of its tests are "
                     "dependency failures because `freshness-max-age` did not pass.")
    for n in notes:
        out.append(f"- {n}")
    if notes:
        out.append("")

    def table(group_ids, title_level, title):
        out.append(f"{title_level} {title}")
        out.append("")
        header = "| | " + " | ".join(i["name"] for i in impls) + " |"
        out.append(header)
        out.append("|---" * (len(impls) + 1) + "|")
        rows = [
            ("passed", ("pass",)),
            ("failed (required)", ("fail",)),
            ("optional failed", ("optional_fail",)),
            ("checks: yes / no", ("yes", "no")),
            ("dependency failed", ("dependency_fail",)),
            ("setup / harness / retry", ("setup_fail", "harness_fail", "retry")),
        ]
        per_impl = {}
        for impl in ran:
            per_impl[impl["name"]] = counts(kinds[impl["name"]][t] for t in group_ids)
        for label, keys in rows:
            cells = []
            for impl in impls:
                if impl["status"] != "ok":
                    cells.append("n/a")
                    continue
                c = per_impl[impl["name"]]
                if label.startswith("checks"):
                    cells.append(f"{c['yes']} / {c['no']}")
                else:
                    value = sum(c[k] for k in keys)
                    cells.append(f"**{value}**" if label == "failed (required)" and value else str(value))
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        out.append("")

    all_ids = [t["id"] for g in index for t in g["tests"] if not t.get("browser_only")]
    table(all_ids, "###", f"Totals ({len(all_ids)} tests; browser-only tests are not run against a proxy)")
    out.append("### Per test group")
    out.append("")
    for group in index:
        ids = [t["id"] for t in group["tests"] if not t.get("browser_only")]
        if ids:
            table(ids, "####", f"{group['name']} (`{group['id']}`, {len(ids)} tests)")

    cc_fresh = [g for g in index if is_cache_control_group(g) or is_freshness_group(g)]
    out.append("### Required tests failed in the Cache-Control and freshness groups")
    out.append("")
    out.append("Groups: " + ", ".join(f"`{g['id']}`" for g in cc_fresh) +
               " (the Cache-Control groups are the suite's `cc-*`; the freshness groups are those "
               "named \"… Freshness\"). The issue's target: none for capstan.")
    out.append("")
    for impl in impls:
        if impl["status"] != "ok":
            out.append(f"- **{impl['name']}**: not available yet")
            continue
        failed = [(g, t) for g in cc_fresh for t in g["tests"]
                  if kinds[impl["name"]][t["id"]] == "fail"]
        if not failed:
            out.append(f"- **{impl['name']}**: none")
            continue
        out.append(f"- **{impl['name']}**: {len(failed)}")
        for g, t in failed:
            out.append(f"  - `{t['id']}` ({g['id']}): {t['name']} — {message(impl['results'], t['id'])}")
    out.append("")

    out.append("### Every test")
    out.append("")
    out.append("<details><summary>Result of each test per implementation (symbols as on cache-tests.fyi: "
               "✅ pass, ⛔️ fail, ⚠️ optional fail, Y/N check, ⚪️ dependency failed, 🔹 setup, "
               "⁉️ harness, ↻ retry, - not run)</summary>")
    out.append("")
    out.append("| Test | Kind | " + " | ".join(i["name"] for i in impls) + " |")
    out.append("|---|---" + "|---" * len(impls) + "|")
    for group in index:
        for t in group["tests"]:
            if t.get("browser_only"):
                continue
            cells = [SYMBOL[kinds[i["name"]][t["id"]]] if i["status"] == "ok" else "n/a" for i in impls]
            out.append(f"| `{t['id']}` | {t.get('kind', 'required')} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("</details>")
    out.append("")
    out.append(END)
    return "\n".join(out) + "\n"


def splice(path, section):
    """Replaces the conformance section of PATH (or creates the file)."""
    if os.path.exists(path):
        text = open(path, encoding="utf-8").read()
    else:
        text = ("# HTTP cache: conformance and benchmarks\n\n"
                "The HTTP cache of `capstan gateway` (issue 18, part 1) against nginx `proxy_cache` "
                "and Varnish. Conformance: bench/cache-conformance.sh; hits per second and CPU "
                "per hit: bench/cache-vs-nginx-varnish.sh. Each script rewrites only its own "
                "section.\n\n")
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def check_against_suite(run, suite_classification):
    """Every classification must equal the suite's own (SUITE.json: impl -> test id -> kind)."""
    tests_by_id = {t["id"]: t for g in run["index"] for t in g["tests"]}
    mismatches = []
    for impl in run["implementations"]:
        if impl["status"] != "ok":
            continue
        theirs = suite_classification.get(impl["name"], {})
        memo = {}
        for tid in tests_by_id:
            ours = classify(tests_by_id, impl["results"], tid, memo)
            if theirs.get(tid) != ours:
                mismatches.append(f"{impl['name']} {tid}: suite says {theirs.get(tid)}, we say {ours}")
    if mismatches:
        sys.exit("cache_conformance_report: the classification differs from the suite's "
                 "(test-engine/lib/results.mjs changed?):\n  " + "\n  ".join(mismatches[:20]))


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: cache_conformance_report.py RUN.json OUT.md [SUITE_CLASSIFICATION.json]")
    with open(sys.argv[1], encoding="utf-8") as f:
        run = json.load(f)
    if len(sys.argv) == 4:
        with open(sys.argv[3], encoding="utf-8") as f:
            check_against_suite(run, json.load(f))
    splice(sys.argv[2], render(run))


if __name__ == "__main__":
    main()
