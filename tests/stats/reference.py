#!/usr/bin/python3
"""Reference values for Capstan's statistics engine from scipy and statsmodels.

Builds a fixed set of statistics requests (section 6 of the shared
experiments-eval-protocol.md, plus Capstan's sequentialTTest and power ops),
computes each answer independently with scipy / statsmodels / numpy (from the
raw data where a case has raw data), and then either

  reference.py --write-golden tests/stats/golden.jsonl
      writes {"request": ..., "response": ...} lines; the C++ unit test
      (src/experiments/analyze_test.cc) checks AnalyzeJson against this file,
      so it runs where python is absent;

  reference.py --capstan build/release/src/cmd/capstan [--golden FILE]
      runs `capstan experiments eval` on every request and compares its
      answers with the fresh reference values, to 1e-9 relative; with
      --golden it also checks that the checked-in golden file still matches
      (same requests, same answers), so it cannot go stale.

Exit status: 0 pass, 1 mismatch, 77 skipped (scipy or statsmodels missing; the
ctest registration treats 77 as a skip). Everything is seeded: reruns give the
same cases.
"""

import argparse
import json
import math
import subprocess
import sys

try:
    import numpy as np
    from scipy import optimize, stats
    from statsmodels.stats import multitest, power as sm_power, weightstats
    import statsmodels.api as sm
except ImportError as e:  # pragma: no cover
    print(f"SKIP: {e}; install python3-scipy python3-statsmodels", file=sys.stderr)
    sys.exit(77)

RELATIVE_TOLERANCE = 1e-9


def fnum(x):
    """A JSON number, or None for an undefined one (never NaN)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def interval(center, halfwidth):
    if center is None or halfwidth is None:
        return None
    return [fnum(center - halfwidth), fnum(center + halfwidth)]


def welch_df(var_of_mean_a, n_a, var_of_mean_b, n_b):
    total = var_of_mean_a + var_of_mean_b
    if total <= 0:
        return None
    return total**2 / (var_of_mean_a**2 / (n_a - 1) + var_of_mean_b**2 / (n_b - 1))


def t_isf(upper_tail, df):
    """The t quantile with upper tail `upper_tail`. scipy 1.10's t.isf (cephes
    stdtri) is off by ~2e-10 relative at non-integer df, more than the 1e-9
    comparison allows after an interval's cancellation, so its answer is
    polished by Newton steps on scipy's own t.sf and t.pdf, which are accurate
    to rounding."""
    q = stats.t.isf(upper_tail, df)
    for _ in range(3):
        q += (stats.t.sf(q, df) - upper_tail) / stats.t.pdf(q, df)
    return q


def t_test(estimate, se, df, alpha):
    """t, p, ci of estimate/se with scipy's t distribution; None when undefined."""
    if se is None or not se > 0 or df is None:
        return None, None, None
    t = estimate / se
    p = 2 * stats.t.sf(abs(t), df)
    half = t_isf(alpha / 2, df) * se
    return fnum(t), fnum(p), interval(estimate, half)


def arm_moments(arm):
    if "mean" in arm:
        return arm["n"], arm["mean"], arm["variance"]
    n, s, ss = arm["n"], arm["sum"], arm["sum_squares"]
    return n, s / n, max((ss - s * s / n) / (n - 1), 0.0)


def sums_of(x):
    return {"sum": float(np.sum(x)), "sum_squares": float(np.sum(x * x))}


# ---- references, one per op ----


def ref_welch(req, raw=None):
    alpha = req.get("alpha", 0.05)
    n_a, m_a, v_a = arm_moments(req["a"])
    n_b, m_b, v_b = arm_moments(req["b"])
    se = math.sqrt(v_a / n_a + v_b / n_b)
    if raw is not None:
        # From the raw data: statsmodels' Welch test and interval.
        a, b = raw
        if se > 0:
            t, p, df = weightstats.ttest_ind(b, a, usevar="unequal")
            compare = weightstats.CompareMeans(weightstats.DescrStatsW(b), weightstats.DescrStatsW(a))
            lo, hi = compare.tconfint_diff(alpha=alpha, usevar="unequal")
            # statsmodels' interval rests on scipy's t.ppf (see t_isf): the
            # same interval with the polished quantile, checked against it.
            center = float(np.mean(b) - np.mean(a))
            ci = interval(center, t_isf(alpha / 2, df) * math.sqrt(
                np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b)))
            assert abs(ci[0] - lo) <= 1e-8 * abs(lo) and abs(ci[1] - hi) <= 1e-8 * abs(hi)
        else:
            t = p = df = None
            ci = None
        diff = float(np.mean(b) - np.mean(a))
        se = math.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b))
    else:
        diff = m_b - m_a
        df = welch_df(v_a / n_a, n_a, v_b / n_b, n_b)
        if se > 0:
            # scipy's Welch test from summary statistics (b first: b - a).
            t, p = stats.ttest_ind_from_stats(m_b, math.sqrt(v_b), n_b, m_a, math.sqrt(v_a), n_a,
                                              equal_var=False)
            ci = interval(diff, t_isf(alpha / 2, df) * se)
        else:
            t = p = ci = None
    return {"diff": fnum(diff), "se": fnum(se), "t": fnum(t), "df": fnum(df), "p_value": fnum(p),
            "ci": ci}


def ref_relative_lift(req):
    alpha = req.get("alpha", 0.05)
    n_a, m_a, v_a = arm_moments(req["a"])
    n_b, m_b, v_b = arm_moments(req["b"])
    keys = ["lift", "variance", "se", "df", "p_value", "ci", "ci_normal"]
    df = welch_df(v_a / n_a, n_a, v_b / n_b, n_b)
    if m_a == 0:
        return dict({k: None for k in keys}, df=fnum(df))
    lift = (m_b - m_a) / abs(m_a)
    variance = v_b / (n_b * m_a**2) + m_b**2 * v_a / (n_a * m_a**4)
    se = math.sqrt(variance)
    _, p, ci = t_test(lift, se, df, alpha)
    ci_normal = interval(lift, stats.norm.isf(alpha / 2) * se) if se > 0 else None
    return {"lift": fnum(lift), "variance": fnum(variance), "se": fnum(se), "df": fnum(df),
            "p_value": p, "ci": ci, "ci_normal": ci_normal}


def relative_part(lift, variance, df, alpha):
    if lift is None or variance is None:
        return {"lift": None, "se": None, "ci": None, "p_value": None}
    se = math.sqrt(variance)
    _, p, ci = t_test(lift, se, df, alpha)
    return {"lift": fnum(lift), "se": fnum(se), "ci": ci, "p_value": p}


def ref_ratio(req, raw):
    """From the raw (numerator, denominator) arrays of each arm, with numpy."""
    alpha = req.get("alpha", 0.05)
    arms = {}
    for name in ("a", "b"):
        m, d = raw[name]
        n = len(m)
        mu_m, mu_d = np.mean(m), np.mean(d)
        if mu_d == 0:
            arms[name] = None
            continue
        cov = np.cov(m, d, ddof=1)
        var_m, var_d, cov_md = cov[0, 0], cov[1, 1], cov[0, 1]
        unit = var_m / mu_d**2 + mu_m**2 * var_d / mu_d**4 - 2 * mu_m * cov_md / mu_d**3
        arms[name] = {"n": n, "ratio": mu_m / mu_d, "unit_variance": unit, "variance": unit / n,
                      "se": math.sqrt(unit / n)}
    out = {}
    for name in ("a", "b"):
        arm = arms[name]
        out[name] = {k: (fnum(arm[k]) if arm else None)
                     for k in ("ratio", "unit_variance", "variance", "se")}
    if arms["a"] is None or arms["b"] is None:
        out.update({k: None for k in ("diff", "diff_se", "df", "t", "p_value", "ci")})
        out["relative"] = relative_part(None, None, None, alpha)
        return out
    a, b = arms["a"], arms["b"]
    diff = b["ratio"] - a["ratio"]
    diff_se = math.sqrt(a["variance"] + b["variance"])
    df = welch_df(a["variance"], a["n"], b["variance"], b["n"])
    t, p, ci = t_test(diff, diff_se, df, alpha)
    out.update({"diff": fnum(diff), "diff_se": fnum(diff_se), "df": fnum(df), "t": t,
                "p_value": p, "ci": ci})
    if a["ratio"] == 0:
        out["relative"] = relative_part(None, None, None, alpha)
    else:
        variance = b["variance"] / a["ratio"]**2 + b["ratio"]**2 * a["variance"] / a["ratio"]**4
        out["relative"] = relative_part(diff / abs(a["ratio"]), variance, df, alpha)
    return out


def ref_cuped(req, raw):
    """From the raw (post, pre) arrays: θ is statsmodels' OLS slope of post on
    pre over both arms (= pooled cov/var), the rest numpy."""
    alpha = req.get("alpha", 0.05)
    post_all = np.concatenate([raw["a"][0], raw["b"][0]])
    pre_all = np.concatenate([raw["a"][1], raw["b"][1]])
    if np.var(pre_all, ddof=1) == 0 or np.var(post_all, ddof=1) == 0:
        theta = 0.0
    else:
        theta = float(sm.OLS(post_all, sm.add_constant(pre_all)).fit().params[1])
    pooled_pre_mean = float(np.mean(pre_all))
    arms, parts = {}, {}
    for name in ("a", "b"):
        post, pre = raw[name]
        cov = np.cov(post, pre, ddof=1)
        v_post, v_pre, c = cov[0, 0], cov[1, 1], cov[0, 1]
        adjusted_variance = max(v_post + theta**2 * v_pre - 2 * theta * c, 0.0)
        arms[name] = {
            "mean_post": fnum(np.mean(post)), "mean_pre": fnum(np.mean(pre)),
            "adjusted_mean": fnum(np.mean(post) - theta * (np.mean(pre) - pooled_pre_mean)),
            "adjusted_variance": fnum(adjusted_variance),
            "variance_reduction": fnum(1 - adjusted_variance / v_post) if v_post > 0 else None}
        parts[name] = (len(post), v_post, v_pre, c, adjusted_variance / len(post))
    diff = arms["b"]["adjusted_mean"] - arms["a"]["adjusted_mean"]
    diff_se = math.sqrt(parts["a"][4] + parts["b"][4])
    df = welch_df(parts["a"][4], parts["a"][0], parts["b"][4], parts["b"][0])
    t, p, ci = t_test(diff, diff_se, df, alpha)
    y_a, y_b = arms["a"]["mean_post"], arms["b"]["mean_post"]
    if y_a == 0:
        relative = relative_part(None, None, None, alpha)
    else:
        n_a, vpa, vxa, ca, _ = parts["a"]
        n_b, vpb, vxb, cb, _ = parts["b"]
        variance = ((vpb + theta**2 * vxb - 2 * theta * cb) / (n_b * y_a**2) +
                    (vpa * y_b**2 / y_a**2 - 2 * theta * ca * y_b / y_a + theta**2 * vxa) /
                    (n_a * y_a**2))
        relative = relative_part(diff / abs(y_a), max(variance, 0.0), df, alpha)
    return {"theta": fnum(theta), "pooled_pre_mean": fnum(pooled_pre_mean), "a": arms["a"],
            "b": arms["b"], "diff": fnum(diff), "diff_se": fnum(diff_se), "df": fnum(df), "t": t,
            "p_value": p, "ci": ci, "relative": relative}


def ref_cuped_ratio(req, raw):
    """From the raw (M, D, M0, D0) arrays of each arm. Written independently of
    the engine's 4x4 delta-method matrix: each ratio is linearised per unit
    (R = mean(M)/mean(D) has influence (M - R*D)/mean(D)), so every delta-method
    variance is numpy's sample variance of a per-unit linear combination. theta
    is gbstats': the sum over arms of cov(R, R0) over the sum of var(R0)."""
    alpha = req.get("alpha", 0.05)
    arms = {}
    for name in ("a", "b"):
        m, d, m0, d0 = raw[name]
        ratio, pre_ratio = np.mean(m) / np.mean(d), np.mean(m0) / np.mean(d0)
        arms[name] = {"n": len(m), "R": ratio, "R0": pre_ratio,
                      "L": (m - ratio * d) / np.mean(d), "L0": (m0 - pre_ratio * d0) / np.mean(d0)}
    var_pre = sum(np.var(arms[k]["L0"], ddof=1) for k in arms)
    cov = sum(np.cov(arms[k]["L"], arms[k]["L0"], ddof=1)[0, 1] for k in arms)
    theta = cov / var_pre if var_pre > 0 else 0.0
    if abs(theta) < 1e-8:
        theta = 0.0
    pooled_pre = ((np.sum(raw["a"][2]) + np.sum(raw["b"][2])) /
                  (np.sum(raw["a"][3]) + np.sum(raw["b"][3])))
    out = {"theta": fnum(theta), "pooled_pre_ratio": fnum(pooled_pre)}
    for name in ("a", "b"):
        arm = arms[name]
        unadjusted = np.var(arm["L"], ddof=1)
        arm["IA"] = arm["L"] - theta * arm["L0"]  # influence of R - theta*R0
        adjusted = np.var(arm["IA"], ddof=1)
        arm["A"] = arm["R"] - theta * (arm["R0"] - pooled_pre)
        arm["var"] = adjusted / arm["n"]
        out[name] = {"ratio": fnum(arm["R"]), "pre_ratio": fnum(arm["R0"]),
                     "adjusted_ratio": fnum(arm["A"]), "unit_variance": fnum(unadjusted),
                     "adjusted_unit_variance": fnum(adjusted), "variance": fnum(arm["var"]),
                     "variance_reduction": fnum(1 - adjusted / unadjusted) if unadjusted > 0
                     else None}
    a, b = arms["a"], arms["b"]
    diff = b["A"] - a["A"]
    diff_se = math.sqrt(a["var"] + b["var"])
    df = welch_df(a["var"], a["n"], b["var"], b["n"])
    t, p, ci = t_test(diff, diff_se, df, alpha)
    out.update({"diff": fnum(diff), "diff_se": fnum(diff_se), "df": fnum(df), "t": t,
                "p_value": p, "ci": ci})
    if a["R"] == 0:
        out["relative"] = relative_part(None, None, None, alpha)
    else:
        # (A_b - A_a)/|R_a|: control's influence moves both A_a and |R_a|.
        scale = abs(a["R"])
        control = -a["IA"] / scale - diff * np.sign(a["R"]) * a["L"] / scale**2
        variance = np.var(control, ddof=1) / a["n"] + np.var(b["IA"] / scale, ddof=1) / b["n"]
        out["relative"] = relative_part(diff / scale, variance, df, alpha)
    return out


def ref_srm(req):
    counts = np.array(req["counts"], dtype=float)
    weights = np.array(req["weights"], dtype=float)
    total = counts.sum()
    expected = total * weights / weights.sum()
    keep = weights > 0
    df = int(keep.sum()) - 1
    if total == 0:
        chi2, p = None, None
    elif df == 0:
        chi2 = float(np.sum((counts[keep] - expected[keep])**2 / expected[keep]))
        p = None
    elif abs(counts[keep].sum() - expected[keep].sum()) <= 1e-8 * total:
        # scipy's Pearson test when the kept arms hold every unit.
        chi2, p = stats.chisquare(counts[keep], expected[keep])
    else:
        # Units in a zero-weight arm: scipy.chisquare refuses unequal totals,
        # so the statistic is summed here and its tail is scipy's.
        chi2 = float(np.sum((counts[keep] - expected[keep])**2 / expected[keep]))
        p = stats.chi2.sf(chi2, df)
    return {"chi2": fnum(chi2), "df": df, "p_value": fnum(p),
            "expected_counts": [fnum(e) for e in expected]}


def ref_p_adjust(req):
    p = np.array(req["p_values"], dtype=float)
    if len(p) == 0:
        return {"holm": [], "bh": []}
    holm = multitest.multipletests(p, method="holm")[1]
    bh = multitest.multipletests(p, method="fdr_bh")[1]
    return {"holm": [fnum(x) for x in holm], "bh": [fnum(x) for x in bh]}


def sequential_parts(estimate, se, n, alpha, tuning):
    """gbstats' SequentialTwoSidedTTest (halfwidth and eq. 155 p-value)."""
    if se is None or not se > 0:
        return None, None
    rho = math.sqrt((-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / tuning)
    s2 = se**2 * n
    half = math.sqrt(s2) * math.sqrt(2 * (n * rho**2 + 1) * math.log(math.sqrt(n * rho**2 + 1) / alpha)
                                     / (n * rho)**2)
    st2 = estimate**2 * n / se**2
    log_e = rho**2 * st2 / (2 * (n * rho**2 + 1)) - 0.5 * math.log(n * rho**2 + 1)
    return interval(estimate, half), min(1.0, math.exp(-log_e))


def ref_sequential(req):
    alpha = req.get("alpha", 0.05)
    tuning = req.get("sequential_tuning_parameter", 5000)
    n_a, m_a, v_a = arm_moments(req["a"])
    n_b, m_b, v_b = arm_moments(req["b"])
    n = n_a + n_b
    rho = math.sqrt((-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / tuning)
    diff = m_b - m_a
    se = math.sqrt(v_a / n_a + v_b / n_b)
    ci, p = sequential_parts(diff, se, n, alpha, tuning)
    relative = {"lift": None, "se": None, "ci": None, "p_value": None}
    if m_a != 0:
        lift = diff / abs(m_a)
        lift_se = math.sqrt(v_b / (n_b * m_a**2) + m_b**2 * v_a / (n_a * m_a**4))
        rci, rp = sequential_parts(lift, lift_se, n, alpha, tuning)
        relative = {"lift": fnum(lift), "se": fnum(lift_se), "ci": rci, "p_value": fnum(rp)}
    return {"diff": fnum(diff), "se": fnum(se), "n": fnum(n), "rho": fnum(rho), "ci": ci,
            "p_value": fnum(p), "relative": relative}


def ref_power(req):
    alpha = req.get("alpha", 0.05)
    target = req.get("power", 0.8)
    sigma = math.sqrt(req["variance"])
    analysis = sm_power.NormalIndPower()
    if "n_per_arm" in req:
        n = req["n_per_arm"]
        f = lambda effect: analysis.power(effect / sigma, n, alpha, ratio=1) - target
        mde = optimize.brentq(f, 1e-300, 100 * sigma, xtol=1e-300, rtol=4 * np.finfo(float).eps,
                              maxiter=2000)
        return {"mde": fnum(mde)}
    effect = req["effect"]
    f = lambda n: analysis.power(effect / sigma, n, alpha, ratio=1) - target
    n = optimize.brentq(f, 1e-9, 1e15, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=2000)
    return {"n_per_arm": fnum(n), "n_per_arm_rounded_up": int(math.ceil(n))}


# ---- the cases ----


def cases():
    """[(request, reference answer)], fixed by seeds."""
    out = []

    def add(request, answer):
        out.append((request, answer))

    def mv(n, mean, variance):
        return {"n": n, "mean": mean, "variance": variance}

    moment_cases = [
        # moderate, equal-ish
        (mv(100, 1.0, 2.0), mv(120, 1.3, 3.0), None),
        # unequal variances and sizes
        (mv(30, 10.0, 1.0), mv(500, 10.4, 25.0), None),
        # tiny n
        (mv(2, 0.5, 0.02), mv(3, 0.9, 0.3), None),
        (mv(2, 1.0, 4.0), mv(2, 3.0, 1.0), 0.1),
        # huge n
        (mv(10_000_000, 0.100, 0.09), mv(12_000_000, 0.1002, 0.0902), None),
        (mv(5e9, 3.0, 10.0), mv(5e9, 3.0001, 10.5), 0.01),
        # zero variance in one arm, then in both (undefined: nulls)
        (mv(50, 2.0, 0.0), mv(60, 2.5, 1.5), None),
        (mv(50, 2.0, 0.0), mv(60, 2.5, 0.0), None),
        # a huge effect: tiny p-value
        (mv(200, 0.0, 1.0), mv(200, 1.5, 1.0), None),
        # negative means (the relative lift divides by |a|)
        (mv(400, -2.0, 1.0), mv(400, -1.8, 1.2), 0.1),
        # zero control mean: relative lift undefined
        (mv(100, 0.0, 1.0), mv(100, 0.2, 1.0), None),
        # no difference at all
        (mv(1000, 5.0, 2.0), mv(1000, 5.0, 2.0), None),
    ]
    for a, b, alpha in moment_cases:
        req = {"op": "welchTTest", "a": a, "b": b}
        if alpha is not None:
            req["alpha"] = alpha
        add(req, ref_welch(req))
        rel = dict(req, op="relativeLift")
        add(rel, ref_relative_lift(rel))
        seq = dict(req, op="sequentialTTest")
        add(seq, ref_sequential(seq))

    # Sums from raw data, checked against statsmodels on the raw data.
    rng = np.random.default_rng(20261207)
    for n_a, n_b, sd_a, sd_b, shift, alpha in [(40, 55, 1.0, 2.0, 0.3, 0.05),
                                               (1000, 800, 3.0, 1.0, 0.1, 0.05),
                                               (5, 7, 0.5, 4.0, 1.0, 0.2),
                                               (20000, 20000, 1.0, 1.0, 0.01, 0.05)]:
        a = rng.normal(1.0, sd_a, n_a)
        b = rng.normal(1.0 + shift, sd_b, n_b)
        req = {"op": "welchTTest", "a": dict(n=n_a, **sums_of(a)),
               "b": dict(n=n_b, **sums_of(b)), "alpha": alpha}
        add(req, ref_welch(req, raw=(a, b)))
        rel = dict(req, op="relativeLift")
        add(rel, ref_relative_lift(rel))
    # Binary (conversion) metric from sums: one arm with no conversions at all.
    conv_a = np.zeros(300)
    conv_b = (rng.random(320) < 0.05).astype(float)
    req = {"op": "welchTTest", "a": dict(n=300, **sums_of(conv_a)),
           "b": dict(n=320, **sums_of(conv_b))}
    add(req, ref_welch(req, raw=(conv_a, conv_b)))

    # Ratio metrics from raw (numerator, denominator) units.
    def ratio_request(raw, alpha=None):
        req = {"op": "ratioMetric"}
        for name in ("a", "b"):
            m, d = raw[name]
            req[name] = {"n": len(m), "numerator": sums_of(m), "denominator": sums_of(d),
                         "sum_of_products": float(np.sum(m * d))}
        if alpha is not None:
            req["alpha"] = alpha
        return req

    for n_a, n_b, lift, alpha in [(500, 520, 0.05, None), (30, 25, 0.3, 0.1),
                                  (100000, 100000, 0.002, None)]:
        raw = {}
        for name, n, scale in (("a", n_a, 1.0), ("b", n_b, 1.0 + lift)):
            sessions = rng.poisson(3.0, n) + 1.0
            clicks = rng.binomial(sessions.astype(int), 0.3 * scale).astype(float)
            raw[name] = (clicks, sessions)
        req = ratio_request(raw, alpha)
        add(req, ref_ratio(req, raw))
    # A zero denominator mean (undefined), and a zero control ratio (no relative).
    raw = {"a": (np.array([1.0, 2.0, 0.0]), np.array([1.0, -1.0, 0.0])),
           "b": (np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 2.0]))}
    add(ratio_request(raw), ref_ratio(ratio_request(raw), raw))
    raw = {"a": (np.zeros(10), rng.poisson(2.0, 10) + 1.0),
           "b": (rng.poisson(1.0, 12).astype(float), rng.poisson(2.0, 12) + 1.0)}
    add(ratio_request(raw), ref_ratio(ratio_request(raw), raw))

    # CUPED from raw (post, pre) units.
    def cuped_request(raw, alpha=None):
        req = {"op": "cuped"}
        for name in ("a", "b"):
            post, pre = raw[name]
            req[name] = {"n": len(post), "post": sums_of(post), "pre": sums_of(pre),
                         "post_pre_sum_of_products": float(np.sum(post * pre))}
        if alpha is not None:
            req["alpha"] = alpha
        return req

    for n_a, n_b, rho, effect, alpha in [(400, 420, 0.8, 0.1, None), (50, 40, 0.3, 0.5, 0.1),
                                         (20000, 21000, 0.95, 0.02, None),
                                         (8, 9, -0.6, 0.2, None)]:
        raw = {}
        for name, n, shift in (("a", n_a, 0.0), ("b", n_b, effect)):
            pre = rng.normal(2.0, 1.0, n)
            post = 1.0 + shift + rho * (pre - 2.0) + math.sqrt(1 - rho * rho) * rng.normal(0, 1, n)
            raw[name] = (post, pre)
        req = cuped_request(raw, alpha)
        add(req, ref_cuped(req, raw))
    # A constant covariate: θ = 0, the unadjusted analysis.
    raw = {"a": (rng.normal(1.0, 1.0, 30), np.full(30, 2.0)),
           "b": (rng.normal(1.2, 1.0, 35), np.full(35, 2.0))}
    add(cuped_request(raw), ref_cuped(cuped_request(raw), raw))

    # CUPED for ratio metrics from raw (M, D, M0, D0) units: clicks over
    # sessions, with each unit's pre-period clicks and sessions.
    def cuped_ratio_request(raw, alpha=None):
        req = {"op": "cupedRatio"}
        for name in ("a", "b"):
            m, d, m0, d0 = raw[name]
            req[name] = {"n": len(m), "numerator": sums_of(m), "denominator": sums_of(d),
                         "sum_of_products": float(np.sum(m * d)),
                         "pre": {"numerator": sums_of(m0), "denominator": sums_of(d0),
                                 "sum_of_products": float(np.sum(m0 * d0))},
                         "post_pre_sum_of_products": {
                             "numerator_numerator": float(np.sum(m * m0)),
                             "numerator_denominator": float(np.sum(m * d0)),
                             "denominator_numerator": float(np.sum(d * m0)),
                             "denominator_denominator": float(np.sum(d * d0))}}
        if alpha is not None:
            req["alpha"] = alpha
        return req

    ratio_rng = np.random.default_rng(20261208)  # its own: the cases after it keep theirs

    def clicks_and_sessions(n, lift):
        # A per-unit propensity that persists from the pre-period into the
        # post-period is what makes the covariate informative.
        propensity = np.clip(ratio_rng.normal(0.3, 0.1, n), 0.01, 0.95)
        d0 = ratio_rng.poisson(3.0, n) + 1.0
        m0 = ratio_rng.binomial(d0.astype(int), propensity).astype(float)
        d = ratio_rng.poisson(3.0, n) + 1.0
        m = ratio_rng.binomial(d.astype(int), np.clip(propensity * (1 + lift), 0, 1)).astype(float)
        return m, d, m0, d0

    for n_a, n_b, lift, alpha in [(500, 520, 0.05, None), (40, 35, 0.3, 0.1),
                                  (50000, 50000, 0.01, None)]:
        raw = {"a": clicks_and_sessions(n_a, 0.0), "b": clicks_and_sessions(n_b, lift)}
        req = cuped_ratio_request(raw, alpha)
        add(req, ref_cuped_ratio(req, raw))
    # Revenue per order with a negative control ratio (the relative lift's
    # sign), and a pre-period ratio equal in every unit (theta = 0: the
    # unadjusted ratio analysis).
    raw = {}
    for name, n, shift in (("a", 60, 0.0), ("b", 70, 0.5)):
        d0 = ratio_rng.poisson(2.0, n) + 1.0
        m0 = -2.0 * d0 + ratio_rng.normal(0, 1, n)
        d = ratio_rng.poisson(2.0, n) + 1.0
        m = (-2.0 + shift) * d + 0.7 * (m0 + 2.0 * d0) + ratio_rng.normal(0, 1, n)
        raw[name] = (m, d, m0, d0)
    add(cuped_ratio_request(raw), ref_cuped_ratio(cuped_ratio_request(raw), raw))
    raw = {}
    for name, n in (("a", 30), ("b", 32)):
        m, d, _, d0 = clicks_and_sessions(n, 0.1)
        raw[name] = (m, d, 0.5 * d0, d0)
    add(cuped_ratio_request(raw), ref_cuped_ratio(cuped_ratio_request(raw), raw))

    # SRM.
    for counts, weights in [([510, 490], [1, 1]), ([1000, 1100, 950], [0.3, 0.4, 0.3]),
                            ([5050, 4950], [50, 50]), ([500, 480, 0], [1, 1, 0]),
                            ([500, 480, 7], [1, 1, 0]), ([0, 0], [1, 1]), ([42], [1]),
                            ([1000000, 1010000], [1, 1]), ([100, 300], [1, 3]),
                            ([7, 1, 2, 10], [0.25, 0.25, 0.25, 0.25])]:
        req = {"op": "srm", "counts": counts, "weights": weights}
        add(req, ref_srm(req))

    # Holm and Benjamini-Hochberg.
    for p_values in [[0.01, 0.04, 0.03, 0.2], [0.05], [], [0.0, 1.0, 0.5],
                     [0.02, 0.02, 0.02, 0.9, 0.001], [0.3, 0.6, 0.9, 0.95],
                     [float(x) for x in np.round(rng.random(25) ** 3, 6)],
                     [1e-12, 3e-8, 0.049, 0.051]]:
        req = {"op": "pAdjust", "p_values": p_values}
        add(req, ref_p_adjust(req))

    # Power and sample size.
    for req in [{"op": "power", "variance": 1.0, "n_per_arm": 1000},
                {"op": "power", "variance": 0.25, "n_per_arm": 20, "alpha": 0.1, "power": 0.9},
                {"op": "power", "variance": 4.0, "n_per_arm": 1e7, "power": 0.95},
                {"op": "power", "variance": 1.0, "effect": 0.1},
                {"op": "power", "variance": 0.09, "effect": -0.003, "alpha": 0.01, "power": 0.8},
                {"op": "power", "variance": 2.0, "effect": 3.0}]:
        add(req, ref_power(req))
    return out


# ---- comparing ----


def compare(path, got, want, problems):
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            problems.append(f"{path}: keys {sorted(got) if isinstance(got, dict) else got!r} "
                            f"!= {sorted(want)}")
            return
        for k in want:
            compare(f"{path}.{k}", got[k], want[k], problems)
    elif isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            problems.append(f"{path}: {got!r} != {want!r}")
            return
        for i, (g, w) in enumerate(zip(got, want)):
            compare(f"{path}[{i}]", g, w, problems)
    elif want is None or got is None:
        if got is not want:
            problems.append(f"{path}: {got!r} != {want!r}")
    else:
        g, w = float(got), float(want)
        if abs(g - w) > RELATIVE_TOLERANCE * max(abs(g), abs(w)):
            problems.append(f"{path}: {g!r} != {w!r} (relative {abs(g - w) / max(abs(g), abs(w)):.3g})")


def run_capstan(binary, requests):
    lines = "".join(json.dumps(dict(r, seq=i)) + "\n" for i, r in enumerate(requests))
    done = subprocess.run([binary, "experiments", "eval"], input=lines, capture_output=True,
                          text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise SystemExit(f"capstan exited {done.returncode}: {done.stderr}")
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    if len(answers) != len(requests):
        raise SystemExit(f"{len(requests)} requests, {len(answers)} answers")
    for i, answer in enumerate(answers):
        if answer.pop("seq", None) != i:
            raise SystemExit(f"answer {i} out of order: {answer}")
    return answers


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write-golden", metavar="FILE")
    parser.add_argument("--capstan", metavar="BINARY")
    parser.add_argument("--golden", metavar="FILE")
    args = parser.parse_args()
    built = cases()
    if args.write_golden:
        with open(args.write_golden, "w") as f:
            for request, answer in built:
                f.write(json.dumps({"request": request, "response": answer}, allow_nan=False))
                f.write("\n")
        print(f"wrote {len(built)} cases to {args.write_golden}")
    problems = []
    if args.golden:
        with open(args.golden) as f:
            golden = [json.loads(line) for line in f if line.strip()]
        if [g["request"] for g in golden] != [r for r, _ in built]:
            problems.append(f"{args.golden}: its requests differ from reference.py's cases; "
                            "regenerate it with --write-golden")
        else:
            for i, (g, (_, answer)) in enumerate(zip(golden, built)):
                compare(f"golden[{i}] {g['request']['op']}", g["response"], answer, problems)
    if args.capstan:
        answers = run_capstan(args.capstan, [r for r, _ in built])
        for i, (answer, (request, want)) in enumerate(zip(answers, built)):
            compare(f"case {i} {request['op']}", answer, want, problems)
    for p in problems:
        print("MISMATCH", p, file=sys.stderr)
    if problems:
        return 1
    print(f"{len(built)} cases agree with scipy/statsmodels to {RELATIVE_TOLERANCE:g} relative")
    return 0


if __name__ == "__main__":
    sys.exit(main())
