"""Whole models, end to end: lstm_infer's SequenceModel vs the frameworks that wrote them.

    python bench/whole_model_bench.py [--threads 1] [--rounds 7] [--block-time 0.2]
                                      [--quick] [--json out.json]

Workloads (built here, saved to files in a temporary directory, loaded back from those
files by ``li.load_model`` with no glue but the torch spec):

* ``torch-classifier``: Embedding(20000, 128) -> LSTM(128, 256, 2 layers, batch_first)
  -> Linear(256, 10) on h_n[-1] -> softmax. Engines: torch (the module), ours from the
  state-dict file, onnxruntime on its ``torch.onnx.export``, ours from that .onnx.
* ``keras-tagger``: Embedding(20000, 128, mask_zero=True) -> Bidirectional(LSTM(128,
  return_sequences=True)) -> Dense(20, softmax), on post-padded batches. Engines: Keras 3
  (torch backend, ``model(x, training=False)``: faster than ``predict``), ours from the
  .keras file.

Each at batch 1 and batch 32. Every engine's output is checked against the framework's
(max abs difference printed; 1e-5 is the contract). Timing: lstm_infer.bench.timing's
round-robin (every engine one block of calls per round, the order rotated each round,
medians over all calls). ``--threads`` applies to every engine: torch.set_num_threads,
onnxruntime's intra_op_num_threads, our num_threads, and numpy's BLAS (our head) through
OPENBLAS_NUM_THREADS, set before numpy is imported.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings


def _args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--block-time", type=float, default=0.2, help="seconds per engine block")
    p.add_argument("--quick", action="store_true", help="3 rounds of 0.05 s blocks")
    p.add_argument("--only", choices=("torch", "keras"), help="one workload family")
    p.add_argument("--json", help="also write the results here")
    return p.parse_args()


ARGS = _args()
os.environ["OPENBLAS_NUM_THREADS"] = str(ARGS.threads)   # numpy's BLAS: our dense head
os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import lstm_infer as li  # noqa: E402
from lstm_infer.bench.timing import round_robin, summarize  # noqa: E402

V, E = 20000, 128
SHAPES = ((1, 100), (32, 100))       # classifier (B, T)
TAG_SHAPES = ((1, 50), (32, 50))     # tagger (B, T)


def torch_classifier(tmp):
    import torch
    import torch.nn as nn

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(V, E)
            self.rnn = nn.LSTM(E, 256, num_layers=2, batch_first=True)
            self.fc = nn.Linear(256, 10)

        def forward(self, x):
            _, (h, _) = self.rnn(self.emb(x))
            return torch.softmax(self.fc(h[-1]), -1)

    torch.manual_seed(0)
    model = Classifier().eval()
    pt = os.path.join(tmp, "classifier.pt")
    torch.save(model.state_dict(), pt)
    onnx_path = os.path.join(tmp, "classifier.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(2, 5, dtype=torch.long),), onnx_path,
                          input_names=["x"], output_names=["y"], dynamo=False,
                          dynamic_axes={"x": {0: "B", 1: "T"}})
    ours_pt = li.load_model(pt, spec={"batch_first": True, "head_on": "last",
                                      "activation": "softmax"})
    ours_onnx = li.load_model(onnx_path)
    engines = {"torch": None, "ours (.pt)": ours_pt, "onnxruntime": None,
               "ours (.onnx)": ours_onnx}
    try:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = ARGS.threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    except ImportError:
        sess = None
        del engines["onnxruntime"]

    rows = []
    for B, T in SHAPES:
        x = np.random.default_rng(B).integers(0, V, (B, T))
        xt = torch.from_numpy(x)

        def run_torch():
            with torch.no_grad():
                return model(xt).numpy()

        fns = {"torch": run_torch,
               "ours (.pt)": lambda: ours_pt(x, num_threads=ARGS.threads),
               "ours (.onnx)": lambda: ours_onnx(x, num_threads=ARGS.threads)}
        if sess is not None:
            fns["onnxruntime"] = lambda: sess.run(None, {"x": x})[0]
        ref = run_torch()
        rows += _time(f"torch-classifier B={B} T={T}", fns, ref, "torch",
                      _lstm_alone(ours_pt, x))
    return rows


def keras_tagger(tmp):
    import keras
    import torch

    keras.utils.set_random_seed(0)
    inp = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(V, E, mask_zero=True)(inp)
    h = keras.layers.Bidirectional(keras.layers.LSTM(128, return_sequences=True))(h)
    out = keras.layers.Dense(20, activation="softmax")(h)
    model = keras.Model(inp, out)
    path = os.path.join(tmp, "tagger.keras")
    model.save(path)
    ours = li.load_model(path)
    rows = []
    for B, T in TAG_SHAPES:
        rng = np.random.default_rng(B)
        x = rng.integers(1, V, (B, T)).astype(np.int32)
        for b, n in enumerate(rng.integers(T // 2, T + 1, B)):
            x[b, n:] = 0

        def run_keras():
            with torch.no_grad():
                return keras.ops.convert_to_numpy(model(x, training=False))

        fns = {"keras": run_keras, "ours (.keras)": lambda: ours(x, num_threads=ARGS.threads)}
        rows += _time(f"keras-tagger B={B} T={T}", fns, run_keras(), "keras",
                      _lstm_alone(ours, x))
    return rows


def _lstm_alone(model, x):
    """Our LSTM alone on the embedded input (what the embedding and head add shows as the
    difference with the whole model; not checked against the framework)."""
    feats = np.take(model.embedding.table, x, axis=0)
    lengths = None if model.config.pad_id is None else (x != model.config.pad_id).sum(1)
    return lambda: model.lstm(feats, lengths=lengths, num_threads=ARGS.threads)[0]


def _time(workload, fns, ref, framework, lstm_alone):
    diffs = {n: float(np.max(np.abs(np.asarray(f()) - ref))) for n, f in fns.items()}
    fns = dict(fns, **{"ours: LSTM only": lstm_alone})
    diffs["ours: LSTM only"] = float("nan")
    rounds, block = (3, 0.05) if ARGS.quick else (ARGS.rounds, ARGS.block_time)
    times = round_robin(fns, rounds=rounds, block_time=block)
    base = float(np.median(times[framework]))
    rows = []
    for n in fns:
        s = summarize(times[n])
        s.update(workload=workload, engine=n, max_abs_diff=diffs[n],
                 speedup_vs_framework=base / float(np.median(times[n])))
        rows.append(s)
        print(f"{workload:<28} {n:<16} median {s['median_ms']:9.3f} ms  p10 {s['p10_ms']:9.3f}"
              f"  p90 {s['p90_ms']:9.3f}  x{s['speedup_vs_framework']:5.2f} vs {framework}"
              f"  max|diff| {diffs[n]:.2g}", flush=True)
    return rows


def main():
    import torch

    torch.set_num_threads(ARGS.threads)
    li.set_num_threads(ARGS.threads)
    print(f"threads {ARGS.threads}, load average {os.getloadavg()[0]:.2f}, "
          f"cores {os.cpu_count()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if ARGS.only in (None, "torch"):
            rows += torch_classifier(tmp)
        if ARGS.only in (None, "keras"):
            rows += keras_tagger(tmp)
    bad = [r for r in rows if not r["max_abs_diff"] <= 1e-5 and r["engine"] != "ours: LSTM only"]
    if ARGS.json:
        with open(ARGS.json, "w") as f:
            json.dump({"threads": ARGS.threads, "results": rows}, f, indent=1)
    if bad:
        print("check failed: " + ", ".join(f"{r['workload']} {r['engine']}" for r in bad))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
