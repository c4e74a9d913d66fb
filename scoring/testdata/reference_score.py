#!/usr/bin/env python3
"""Independent reference scorer for seer's tests.

Reads a JSON object from stdin:
  {"package": DIR, "cases": [{"event": {...}, "features": {view: {name: value} | null}}]}
builds each input vector from model.yaml in Python (its own encoder, not
seer's), runs the model with Python onnxruntime, and prints a JSON list of
scores (the manifest's first output).
"""
import json
import os
import sys

import numpy as np
import onnxruntime as ort
import yaml


def encode(inp, raw):
    dtype = inp["dtype"]
    if raw is None:
        raw = inp["default"]
    if dtype == "category":
        cats = inp["categories"]
        if raw in cats:
            return float(cats.index(raw))
        return float(cats.index("other")) if "other" in cats else -1.0
    if dtype == "bool":
        if isinstance(raw, str):
            return 1.0 if raw in ("true", "1") else 0.0
        return 1.0 if raw else 0.0
    return float(raw)


def main():
    req = json.load(sys.stdin)
    with open(os.path.join(req["package"], "model.yaml")) as f:
        m = yaml.safe_load(f)
    rows = []
    for case in req["cases"]:
        row = []
        for inp in m["inputs"]:
            parts = inp["source"].split(".")
            if parts[0] == "event":
                raw = case["event"].get(parts[1])
            else:
                view = (case.get("features") or {}).get(parts[1]) or {}
                raw = view.get(parts[2])
                if raw is not None and inp["dtype"] in ("float", "int"):
                    raw = float(raw)
            row.append(encode(inp, raw))
        rows.append(row)
    sess = ort.InferenceSession(os.path.join(req["package"], m["artifact"]["file"]), providers=["CPUExecutionProvider"])
    out = m["outputs"][0]
    x = np.asarray(rows, dtype=np.float32).reshape(len(rows), len(m["inputs"]))
    res = sess.run([out["tensor"]], {m["artifact"]["input"]: x})[0]
    scores = res[:, out["index"]] if res.ndim == 2 else res
    json.dump([float(s) for s in scores], sys.stdout)


if __name__ == "__main__":
    main()
