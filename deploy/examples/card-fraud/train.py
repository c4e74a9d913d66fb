#!/usr/bin/env python3
"""Trains seer's example card-fraud model and writes its model package.

The data is synthetic and seeded, so `make models` reproduces model.onnx,
model.yaml and examples.jsonl byte for byte with the pinned packages in
deploy/local/requirements.txt. Inputs mix event fields (amount, merchant
category, hour, card present) with per-user aggregates that seer reads from
the Redis feature view `user_stats`.

Held-out rows (fresh draws of the same generator, seed + 1) give the
evaluation metrics in model.yaml (AUC, Brier score) and examples.jsonl:
events, feature values and the outputs ONNX Runtime gives for them.

`make models` builds three versions:
  1.0.0         the champion (60 trees)
  1.1.0         a better model (400 depth-1 trees: the synthetic risk is additive)
  1.2.0-rc.1    a deliberately bad candidate trained on shuffled labels

Usage: train.py [--out DIR] [--version V] [--trees N] [--depth D] [--shuffle-labels] [--rows N] [--seed S]
"""
import argparse
import hashlib
import os
import sys

import json

import numpy as np
import onnx
import onnxruntime as ort
import yaml
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import brier_score_loss, roc_auc_score

HOLDOUT_ROWS = 5000
EXAMPLES = HOLDOUT_ROWS  # every held-out row: traffic that replays them keeps the data's distribution

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
    ap.add_argument("--version", default="1.0.0")
    ap.add_argument("--trees", type=int, default=60)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--shuffle-labels", action="store_true", help="train on shuffled labels: a bad candidate on purpose")
    ap.add_argument("--export-data", metavar="DIR", help="also write the training and held-out rows as DIR/train.csv and DIR/holdout.csv")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    X, y = synthesize(args.rows, args.seed)
    y_fit = y
    if args.shuffle_labels:
        y_fit = np.random.default_rng(args.seed + 7).permutation(y)
    clf = GradientBoostingClassifier(n_estimators=args.trees, max_depth=args.depth, learning_rate=0.1, random_state=args.seed)
    clf.fit(X, y_fit)

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
    evaluation, examples = holdout(data, args)
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
        "version": args.version,
        "owner": "risk-ml@example.com",
        "description": "Probability that a card transaction is fraudulent (example model, synthetic data).",
        "artifact": {"file": "model.onnx", "sha256": hashlib.sha256(data).hexdigest(),
                     "input": "features", "dtype": "float32"},
        "lineage": {
            "dataset": f"synthetic-card-transactions rows={args.rows} seed={args.seed}"
                       + (" labels=shuffled" if args.shuffle_labels else ""),
            "params": {"n_estimators": args.trees, "max_depth": args.depth, "learning_rate": 0.1},
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
        "evaluation": evaluation,
        "profile": profile,
    }
    with open(os.path.join(args.out, "model.yaml"), "w") as f:
        f.write("# Generated by train.py (make models); edit train.py, not this file.\n")
        yaml.safe_dump(manifest, f, sort_keys=False, default_flow_style=None, width=120)
    if args.export_data:
        os.makedirs(args.export_data, exist_ok=True)
        export_csv(os.path.join(args.export_data, "train.csv"), X, y)
        export_csv(os.path.join(args.export_data, "holdout.csv"), *synthesize(HOLDOUT_ROWS, args.seed + 1))
    with open(os.path.join(args.out, "examples.jsonl"), "w") as f:
        for ex in examples:
            f.write(json.dumps(ex, sort_keys=True) + "\n")
    print(f"wrote {args.out}: card-fraud {args.version}, {len(data)} bytes of ONNX, "
          f"held-out AUC {evaluation['auc']:.4f}, Brier {evaluation['brier']:.4f}", file=sys.stderr)


def export_csv(path, X, y):
    """Writes rows as CSV with the inputs' names and an is_fraud label;
    numbers are the float32 values exactly, categories by name."""
    with open(path, "w") as f:
        f.write(",".join(name for name, *_ in INPUTS) + ",is_fraud\n")
        for row, label in zip(X, y):
            vals = [repr(float(row[0])), CATEGORIES[int(row[1])], str(int(row[2])), "true" if row[3] else "false"]
            vals += [repr(float(v)) for v in row[4:]]
            f.write(",".join(vals) + f",{int(label)}\n")


def holdout(onnx_bytes, args):
    """Scores fresh rows of the generator with ONNX Runtime: the evaluation
    metrics, and the first EXAMPLES rows as package examples."""
    X, y = synthesize(HOLDOUT_ROWS, args.seed + 1)
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    scores = sess.run(["probabilities"], {"features": X})[0][:, 1].astype(np.float64)
    evaluation = {
        "dataset": f"synthetic-card-transactions rows={HOLDOUT_ROWS} seed={args.seed + 1} (held out)",
        "rows": HOLDOUT_ROWS,
        "auc": round(float(roc_auc_score(y, scores)), 6),
        "brier": round(float(brier_score_loss(y, scores)), 6),
        "positive_rate": round(float(y.mean()), 6),
    }
    examples = []
    for i in range(EXAMPLES):
        row = X[i]
        event = {
            "event_id": f"example-{i:04d}",
            "user_id": f"u{i:04d}",
            "event_time": "2026-01-01T00:00:00Z",
            "amount": float(row[0]),
            "merchant_category": CATEGORIES[int(row[1])],
            "hour": int(row[2]),
            "card_present": bool(row[3]),
        }
        features = {"user_stats": {"txn_count_24h": float(row[4]), "avg_amount_30d": float(row[5]),
                                   "chargeback_rate_90d": float(row[6])}}
        examples.append({"event": event, "features": features, "outputs": {"score": float(scores[i])}, "label": int(y[i])})
    return evaluation, examples


if __name__ == "__main__":
    main()
