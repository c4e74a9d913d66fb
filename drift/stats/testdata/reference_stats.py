#!/usr/bin/env python3
"""Reference values for seer's drift statistics, from scipy and the formulas
Evidently and NannyML document. Reads JSON cases from stdin, prints results.

Each case: {"kind": ..., ...}; see drift/stats_test.go.
"""
import json
import sys

import numpy as np
from scipy import stats
from scipy.spatial import distance


def fill(p):
    # evidently.legacy.calculations.stattests.utils.get_binned_data(feel_zeroes=True)
    m = p[p != 0].min()
    return np.where(p == 0, m / 10**6 if m <= 0.0001 else 0.0001, p)


def psi_evidently(ref, cur):
    # evidently's psi stattest on those shares: sum of (ref - cur) * ln(ref / cur).
    p = fill(np.asarray(ref, float) / np.sum(ref))
    q = fill(np.asarray(cur, float) / np.sum(cur))
    return float(np.sum((p - q) * np.log(p / q)))


def run(case):
    k = case["kind"]
    if k == "binned":
        ref, cur, locs = case["ref"], case["cur"], case["locations"]
        return {
            "psi": psi_evidently(ref, cur),
            "js": float(distance.jensenshannon(ref, cur)),
            "js_base2": float(distance.jensenshannon(ref, cur, base=2)),
            "wasserstein_norm": float(stats.wasserstein_distance(locs, locs, u_weights=ref, v_weights=cur) / case["ref_std"]),
        }
    if k == "ks":
        a, b = np.asarray(case["a"]), np.asarray(case["b"])
        res = stats.ks_2samp(a, b)
        en = len(a) * len(b) / (len(a) + len(b))
        return {"ks": float(res.statistic), "ks_pvalue_asymp": float(stats.kstwobign.sf(res.statistic * np.sqrt(en)))}
    if k == "chi2":
        table = np.asarray([case["ref"], case["cur"]], float)
        table = table[:, table.sum(axis=0) > 0]
        return {"chi2_pvalue": float(stats.chi2_contingency(table, correction=False).pvalue)}
    if k == "kstwobign":
        return {"sf": [float(stats.kstwobign.sf(x)) for x in case["x"]]}
    if k == "raw":
        a, b = np.asarray(case["a"], float), np.asarray(case["b"], float)
        return {"ks": float(stats.ks_2samp(a, b).statistic),
                "wasserstein_norm": float(stats.wasserstein_distance(a, b) / np.std(a))}
    if k == "bh":
        return {"adjusted": [float(x) for x in stats.false_discovery_control(case["p"])]}
    raise ValueError(k)


json.dump([run(c) for c in json.load(sys.stdin)], sys.stdout)
