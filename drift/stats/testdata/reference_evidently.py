#!/usr/bin/env python3
"""Evidently's own drift stattests on raw samples, for seer's cross-check.

stdin: {"reference": [...], "current": [...], "n_bins": 30}
stdout: Evidently's psi, jensenshannon and wasserstein values, and its binned
shares before empty bins are filled, so seer can compute its statistics on
exactly the same bins.
"""
import json
import sys
import warnings

warnings.filterwarnings("ignore")
import pandas as pd  # noqa: E402
from evidently.legacy.calculations.stattests import jensenshannon_stat_test, psi_stat_test, wasserstein_stat_test  # noqa: E402
from evidently.legacy.calculations.stattests.utils import get_binned_data  # noqa: E402
from evidently.legacy.core import ColumnType  # noqa: E402

req = json.load(sys.stdin)
ref, cur, n = pd.Series(req["reference"]), pd.Series(req["current"]), req["n_bins"]
num = ColumnType.Numerical
psi, _ = psi_stat_test.func(ref, cur, num, 0.1, n)
js, _ = jensenshannon_stat_test.func(ref, cur, num, 0.1, n)
wd, _ = wasserstein_stat_test.func(ref, cur, num, 0.1)
rj, cj = get_binned_data(ref, cur, num, n, False)
json.dump({"psi": float(psi), "js": float(js), "wasserstein_norm": float(wd),
           "js_ref": list(map(float, rj)), "js_cur": list(map(float, cj))}, sys.stdout)
