"""``lstm-infer bench --model FILE [--shape T,B]``: a model file, timed against the
peers that can run it.

The file is read with `lstm_infer.load` (any format the loaders read); its
configuration gives the input width, the layers and the layout, ``--shape`` the
time steps and batch of the input (``make_input``: ~U(-1, 1), seeded). Then the
usual round-robin comparison (`suite.run_workload`) runs on that model instead of a
built-in workload: every peer is built from the model's canonical weights through
our own exporters (torch through `formats.pytorch.to_state_dict`, onnxruntime and
OpenVINO through the ONNX graph of `formats.onnx.to_onnx`), and a peer that cannot
express the model (a peephole for torch, a projection for ONNX...) is reported as
skipped, saying why.

What runs as "ours":

- a float32 file: the model as loaded;
- a float64 file: its float32 copy (the peers run float32; the file's dtype is noted);
- a quantized file (``int8``, ``int8-weights``, ``float16``, ``bfloat16``): the file's
  own model as ``ours-<mode>``, beside "ours" = the float32 model of its dequantized
  weights (what the peers are built from and checked against; the file's model is
  checked against that model's float64 twin with the reduced-precision bound).
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

from .workloads import Workload

DEFAULT_SHAPE = (100, 1)


def parse_shape(text: str) -> Tuple[int, int]:
    """``"T,B"`` -> (T, B), both positive integers (ValueError otherwise)."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        T, B = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"--shape must be T,B (two positive integers, e.g. 100,1); "
                         f"got {text!r}") from None
    if T < 1 or B < 1:
        raise ValueError(f"--shape T,B: both must be at least 1; got {text!r}")
    return T, B


def float32_model(model):
    """The float32 model the peers are built from: `model` itself when it is an
    unquantized float32 model, else its (dequantized) weights as float32."""
    from .. import LSTM
    from ..quantize import dequantize

    c = model.config
    if c.quantization is None and c.dtype == "float32":
        return model
    weights = model.weights
    if c.quantization is not None:
        weights = [[dequantize(w, c.quantization) for w in layer] for layer in weights]
    options = {k: v for k, v in model.options.items()
               if k not in ("quantization", "quantize_input_weights")}
    return LSTM(weights, **dict(options, dtype="float32"))


def workload_of(model, T: int, B: int) -> Workload:
    """The table's sizes for `model` at (T, B): I, the first layer's H and projection,
    the number of layers and directions (a stack whose layers differ is timed and
    counted (`workloads.model_flops`) with its own sizes; the table shows the first's)."""
    c = model.config
    first = c.layers[0]
    return Workload(T, B, c.input_size, first.hidden_size, c.num_layers,
                    first.num_directions == 2, first.proj_size)


def describe(path: str, model, T: int, B: int) -> dict:
    """What the report says about the file: format, dtype, quantization, layout, sizes."""
    from .. import detect_format

    c = model.config
    return {"path": os.path.abspath(path), "format": detect_format(path),
            "dtype": c.dtype, "quantization": c.quantization, "batch_first": c.batch_first,
            "input_size": c.input_size, "num_layers": c.num_layers,
            "layers": [f"{l.direction} {l.input_size}->{l.hidden_size}"
                       + (f"/p{l.proj_size}" if l.proj_size else "") for l in c.layers],
            "T": T, "B": B,
            "input_shape": [B, T, c.input_size] if c.batch_first else [T, B, c.input_size]}


def run_model_file(path: str, shape: Sequence[int] = DEFAULT_SHAPE, peers=None,
                   modes: Optional[Sequence[str]] = None, seed: int = 1,
                   load_options: Optional[Dict[str, object]] = None,
                   **kwargs) -> Tuple[List[dict], dict]:
    """Load `path` (`lstm_infer.load`, with `load_options`: prefix / layer / node /
    batch_first), and run the round-robin comparison on it at input `shape` (T, B).

    `modes`: our modes, as `suite.select_modes` takes them (default `suite.DEFAULT_MODES`),
    and a quantized file's own mode; other keywords (threads, budget, rounds, block_calls,
    block_time, cold, evictor, peak_gflops, progress, on_block) go to
    `suite.run_workload`. Returns (result rows, `describe` of the file)."""
    from .. import load
    from .runners import DEFAULT_PEERS, select_peers
    from .suite import DEFAULT_MODES, runner_name_of_mode, run_workload, select_modes
    from .workloads import make_input

    T, B = (int(v) for v in shape)
    loaded = load(path, **{k: v for k, v in (load_options or {}).items() if v is not None})
    info = describe(path, loaded, T, B)
    model = float32_model(loaded)
    q = loaded.config.quantization
    own = {} if q is None else {runner_name_of_mode(q): loaded}
    modes = select_modes(list(DEFAULT_MODES if modes is None else modes) + ([q] if q else []))
    info["timed_as"] = {"ours": "float32" + (" (dequantized)" if q else
                                             " (cast from float64)"
                                             if loaded.config.dtype != "float32" else "")}
    if q:
        info["timed_as"][runner_name_of_mode(q)] = "the file's own quantized model"
    wl = workload_of(model, T, B)
    x = make_input(wl, seed, model.config.batch_first)
    name = os.path.basename(path)
    rows = run_workload(name, wl, peers=select_peers(DEFAULT_PEERS if peers is None else peers),
                        modes=modes, model=model, x=x, models=own, **kwargs)
    for r in rows:
        r["model_file"] = info["path"]
    return rows, info
