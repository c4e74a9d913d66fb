"""The scikit-learn oracle of seer's performance metrics (drift/labels).

Reads {"scores": [...], "labels": [...], "threshold": t} on stdin and
prints the metrics computed exactly from the raw values: ROC AUC, Brier
score, precision and recall at the threshold (score >= t is positive), the
positive rate and the expected calibration error on 10 equal-width bins.
"""
import json
import sys

import numpy as np
from sklearn.metrics import brier_score_loss, precision_score, recall_score, roc_auc_score

case = json.load(sys.stdin)
s = np.asarray(case["scores"], dtype=np.float64)
y = np.asarray(case["labels"], dtype=np.int64)
pred = (s >= case["threshold"]).astype(np.int64)
bins = np.minimum((s * 10).astype(np.int64), 9)
ece = sum(abs(s[bins == b].sum() - y[bins == b].sum()) for b in range(10)) / len(s)
json.dump({
    "auc": roc_auc_score(y, s),
    "brier": brier_score_loss(y, s),
    "precision": precision_score(y, pred, zero_division=np.nan),
    "recall": recall_score(y, pred),
    "positive_rate": float(y.mean()),
    "ece": float(ece),
}, sys.stdout)
