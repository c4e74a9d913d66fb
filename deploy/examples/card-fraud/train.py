#!/usr/bin/env python3
"""Trains seer's example card-fraud model and writes its model package.

The data is synthetic and seeded, so `make models` reproduces model.onnx and
model.yaml byte for byte with the pinned packages in
deploy/local/requirements.txt. Inputs mix event fields (amount, merchant
category, hour, card present) with per-user aggregates that seer reads from
the Redis feature view `user_stats`.

Usage: train.py [--out DIR] [--rows N] [--seed S]
"""
import argparse
import hashlib
import os
import sys

import numpy as np
import onnx
import yaml
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import GradientBoostingClassifier

CATEGORIES = ["grocery", "restaurant", "fuel", "travel", "electronics", "online", "other"]
# Fraud propensity per merchant category (synthetic ground truth).
CATEGORY_RISK = [0.2, 0.3, 0.4, 1.2, 1.5, 1.4, 0.6]
CATEGORY_P = [0.30, 0.20, 0.12, 0.08, 0.08, 0.17, 0.05]

INPUTS = [
    # name, source, dtype, default, min, max
    ("amount", "event.amount", "float", 0.0, 0.0, 50000.0),
    ("merchant_category", "event.merchant_category", "category", "other", None, None),
    ("hour", "event.hour", "int", 12, 0, 23),
    ("card_present", "event.card_present", "bool", False, None, None),
    ("txn_count_24h", "feature.user_stats.txn_count_24h", "float", 3.0, 0.0, 1000.0),
    ("avg_amount_30d", "feature.user_stats.avg_amount_30d", "float", 60.0, 0.0, 50000.0),
    ("chargeback_rate_90d", "feature.user_stats.chargeback_rate_90d", "float", 0.0, 0.0, 1.0),
]


def synthesize(rows, seed):
    rng = np.random.default_rng(seed)
    avg30 = rng.lognormal(mean=3.8, sigma=0.7, size=rows)
    amount = avg30 * rng.lognormal(mean=0.0, sigma=0.9, size=rows)
    cat = rng.choice(len(CATEGORIES), p=CATEGORY_P, size=rows)
    hour = rng.integers(0, 24, size=rows)
    card_present = (rng.random(rows) < np.where(np.isin(cat, [5]), 0.02, 0.7)).astype(np.float64)
    cnt24 = rng.poisson(3.0, size=rows).astype(np.float64)
    cb90 = np.clip(rng.beta(0.5, 40.0, size=rows), 0, 1)
    night = ((hour < 6) | (hour >= 23)).astype(np.float64)
    logit = (-5.0 + 1.1 * np.log1p(amount / avg30) + np.take(CATEGORY_RISK, cat)
             + 0.9 * night - 1.0 * card_present + 0.15 * cnt24 + 25.0 * cb90)
    y = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    X = np.column_stack([amount, cat, hour, card_present, cnt24, avg30, cb90]).astype(np.float32)
    return X, y


def numeric_profile(values, bins=10):
    qs = np.quantile(values.astype(np.float64), np.linspace(0, 1, bins + 1))
    edges = sorted(set(round(float(q), 6) for q in qs))
    # Bin i counts edges[i] <= x < edges[i+1]; the last edge is exclusive too so
    # that the maximum lands in overflow, like every value above it.
    idx = np.searchsorted(edges, values, side="right")
    counts = np.bincount(idx, minlength=len(edges) + 1)
    return {
        "kind": "numeric",
        "edges": edges,
        "underflow": int(counts[0]),
        "counts": [int(c) for c in counts[1:len(edges)]],
        "overflow": int(counts[len(edges)]),
        "missing": 0,
        "mean": round(float(np.mean(values)), 6),
        "std": round(float(np.std(values)), 6),
    }


def categorical_profile(codes, names):
    counts = np.bincount(codes.astype(np.int64), minlength=len(names))
    return {
        "kind": "categorical",
        "frequencies": {n: int(c) for n, c in zip(names, counts)},
        "other": 0,
        "missing": 0,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=here)
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()

    X, y = synthesize(args.rows, args.seed)
    clf = GradientBoostingClassifier(n_estimators=60, max_depth=3, learning_rate=0.1, random_state=args.seed)
    clf.fit(X, y)

    onx = to_onnx(clf, initial_types=[("features", FloatTensorType([None, X.shape[1]]))],
                  options={id(clf): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    onx.doc_string = "seer example card-fraud model"
    # skl2onnx collects opset imports in a set; order them so that the bytes
    # do not depend on Python's hash seed.
    opsets = sorted(((o.domain, o.version) for o in onx.opset_import))
    del onx.opset_import[:]
    for domain, version in opsets:
        onx.opset_import.add(domain=domain, version=version)
    model_path = os.path.join(args.out, "model.onnx")
    data = onx.SerializeToString()
    with open(model_path, "wb") as f:
        f.write(data)

    probs = clf.predict_proba(X)[:, 1]
    profile = {"rows": int(args.rows), "features": {}, "outputs": {}}
    for j, (name, _, dtype, *_rest) in enumerate(INPUTS):
        if dtype == "category":
            profile["features"][name] = categorical_profile(X[:, j], CATEGORIES)
        elif dtype == "bool":
            profile["features"][name] = categorical_profile(X[:, j], ["false", "true"])
        else:
            profile["features"][name] = numeric_profile(X[:, j])
    profile["outputs"]["score"] = numeric_profile(probs)

    with open(os.path.join(here, "train.py"), "rb") as f:
        code_sha = hashlib.sha256(f.read()).hexdigest()

    inputs = []
    for name, source, dtype, default, lo, hi in INPUTS:
        item = {"name": name, "source": source, "dtype": dtype, "default": default}
        if dtype == "category":
            item["categories"] = CATEGORIES
        if lo is not None:
            item["min"] = lo
            item["max"] = hi
        inputs.append(item)

    manifest = {
        "name": "card-fraud",
        "version": "1.0.0",
        "owner": "risk-ml@example.com",
        "description": "Probability that a card transaction is fraudulent (example model, synthetic data).",
        "artifact": {"file": "model.onnx", "sha256": hashlib.sha256(data).hexdigest(),
                     "input": "features", "dtype": "float32"},
        "lineage": {
            "dataset": f"synthetic-card-transactions rows={args.rows} seed={args.seed}",
            "code": "deploy/examples/card-fraud/train.py",
            "code_sha256": code_sha,
            "frameworks": {"scikit-learn": __import__("sklearn").__version__,
                           "skl2onnx": __import__("skl2onnx").__version__, "onnx": onnx.__version__},
        },
        "inputs": inputs,
        "outputs": [
            {"name": "score", "tensor": "probabilities", "index": 1, "dtype": "float32"},
        ],
        "threshold": 0.5,
        "profile": profile,
    }
    with open(os.path.join(args.out, "model.yaml"), "w") as f:
        f.write("# Generated by train.py (make models); edit train.py, not this file.\n")
        yaml.safe_dump(manifest, f, sort_keys=False, default_flow_style=None, width=120)
    print(f"wrote {model_path} ({len(data)} bytes, base rate {y.mean():.4f}, train AUC-ish mean score {probs.mean():.4f})",
          file=sys.stderr)


if __name__ == "__main__":
    main()
