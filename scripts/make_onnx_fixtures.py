"""Regenerate the ONNX fixtures of tests/test_load_onnx.py (seeded, deterministic).

    python scripts/make_onnx_fixtures.py [--out tests/data/onnx]

Writes
  node/test_lstm_*/         ONNX's own LSTM node tests (model.onnx +
                            test_data_set_0/input_*.pb, output_*.pb), produced from
                            onnx.backend.test.case.node exactly as onnx's
                            `backend-test-tools generate-data` does (pip wheels of
                            onnx do not ship the node test data).
  torch_*.onnx + .npz       small nn.LSTM stacks exported by torch's TorchScript
                            exporter (needs torch), with an input and torch's own
                            outputs: real exporter graphs (Transpose/Reshape or
                            Squeeze between layers, initial states built from
                            Shape(x) at run time).
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "tests", "data", "onnx")


def write_node_tests(out: str) -> list:
    from onnx import numpy_helper
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # other ops' generators warn about overflows
        cases = [c for c in collect_testcases("LSTM") if c.name.startswith("test_lstm")]
    root = os.path.join(out, "node")
    if os.path.isdir(root):
        shutil.rmtree(root)
    names = []
    for case in cases:
        d = os.path.join(root, case.name)
        os.makedirs(d)
        with open(os.path.join(d, "model.onnx"), "wb") as f:
            f.write(case.model.SerializeToString())
        for i, (inputs, outputs) in enumerate(case.data_sets):
            ds = os.path.join(d, f"test_data_set_{i}")
            os.makedirs(ds)
            for j, a in enumerate(inputs):
                t = numpy_helper.from_array(a, case.model.graph.input[j].name)
                with open(os.path.join(ds, f"input_{j}.pb"), "wb") as f:
                    f.write(t.SerializeToString())
            for j, a in enumerate(outputs):
                t = numpy_helper.from_array(a, case.model.graph.output[j].name)
                with open(os.path.join(ds, f"output_{j}.pb"), "wb") as f:
                    f.write(t.SerializeToString())
        names.append(case.name)
    return names


TORCH_MODELS = {
    # name: (input_size, hidden_size, num_layers, bidirectional)
    "torch_bilstm_2layer": (4, 5, 2, True),
    "torch_lstm_2layer": (3, 6, 2, False),
}


def write_torch_models(out: str) -> list:
    import torch

    written = []
    for seed, (name, (I, H, L, bidir)) in enumerate(sorted(TORCH_MODELS.items())):
        torch.manual_seed(seed)
        m = torch.nn.LSTM(I, H, num_layers=L, bidirectional=bidir).eval()
        x = np.random.default_rng(seed).uniform(-3, 3, (7, 2, I)).astype(np.float32)
        x = torch.from_numpy(x)
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(m, (x,), buf, dynamo=False, input_names=["x"],
                              output_names=["y", "h_n", "c_n"], opset_version=17,
                              dynamic_axes={"x": {0: "T", 1: "B"}})
        with open(os.path.join(out, name + ".onnx"), "wb") as f:
            f.write(buf.getvalue())
        with torch.no_grad():
            y, (h, c) = m(x)
        np.savez(os.path.join(out, name + ".npz"), x=x.numpy(), y=y.numpy(), h_n=h.numpy(),
                 c_n=c.numpy())
        written.append(name)
    return written


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    print("node tests:", write_node_tests(args.out))
    print("torch exports:", write_torch_models(args.out))


if __name__ == "__main__":
    main()
