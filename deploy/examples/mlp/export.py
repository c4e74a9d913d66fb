"""Exports a deterministic MLP of about 5.3 million parameters as ONNX.

It is the larger example model of the GPU checks (deploy/gpu): one float32
input [batch, 256], three ReLU hidden layers (2048, 2048, 256) and a sigmoid
score [batch, 1]. The weights are seeded He-normal draws, so every run
writes the same model; it scores nothing meaningful, it is there to be
timed. Usage: export.py OUT.onnx
"""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WIDTHS = [256, 2048, 2048, 256, 1]


def main(out):
    rng = np.random.default_rng(20261126)
    nodes, inits = [], []
    x = "input"
    for i, (n_in, n_out) in enumerate(zip(WIDTHS, WIDTHS[1:])):
        w = (rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)).astype(np.float32)
        b = np.zeros(n_out, dtype=np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        y = f"h{i}"
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [y]))
        if n_out != 1:
            nodes.append(helper.make_node("Relu", [y], [y + "r"]))
            y += "r"
        x = y
    nodes.append(helper.make_node("Sigmoid", [x], ["score"]))
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", WIDTHS[0]])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        inits)
    model = helper.make_model(graph, producer_name="seer deploy/examples/mlp", opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, out)
    params = sum(int(np.prod(t.dims)) for t in inits)
    print(f"wrote {out}: MLP {WIDTHS}, {params:,} parameters")


if __name__ == "__main__":
    main(sys.argv[1])
