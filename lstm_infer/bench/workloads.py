"""The standard workloads: sizes, our model and the input for each, and their domain figures.

Besides the named workloads, a workload can be written as its sizes,
``TxBxIxH`` with optional ``-L<layers>``, ``-bi`` and ``-p<proj_size>``: ``10x2x8x16``,
``20x4x32x64-L2-bi`` (for quick runs and tests).
"""
from __future__ import annotations

import re
from typing import Dict, Iterable, List, NamedTuple, Optional

import numpy as np


class Workload(NamedTuple):
    T: int
    B: int
    I: int
    H: int
    num_layers: int
    bidirectional: bool
    proj_size: int = 0


WORKLOADS: Dict[str, Workload] = {
    # keyword spotting: 40 MFCCs, 1 s of 10 ms frames, batch 1
    "kws": Workload(100, 1, 40, 128, 1, False),
    # streaming acoustic model, batch 1
    "stream256": Workload(100, 1, 256, 256, 1, False),
    # a wide layer at batch 1: weight-bandwidth bound
    "lat1024": Workload(50, 1, 1024, 1024, 1, False),
    # text classifier, small batch
    "text": Workload(64, 8, 128, 256, 1, False),
    # offline throughput: two layers, batch 64 (GEMM bound)
    "tput512": Workload(100, 64, 512, 512, 2, False),
    # bidirectional ASR encoder: 80 filterbanks, 2 s, batch 16
    "asr-bi": Workload(200, 16, 80, 320, 2, True),
    # a wide layer projected down (LSTMP, as in ASR encoders): torch is the only peer
    "proj": Workload(100, 4, 256, 1024, 1, False, 256),
}
_SPEC = re.compile(r"^(\d+)x(\d+)x(\d+)x(\d+)((?:-(?:L\d+|bi|p\d+))*)$")
QUICK_WORKLOADS = ("kws", "stream256", "text")
LARGE_WORKLOADS = ("lat1024", "tput512", "asr-bi")
# Feature-frame hop of the audio workloads, for the "x real time" figure.
FRAME_MS = {"kws": 10.0, "stream256": 10.0, "asr-bi": 10.0}


def parse_spec(spec: str) -> Optional[Workload]:
    """The workload written as ``TxBxIxH[-L<n>][-bi][-p<n>]``, or None if `spec` is not
    one (ValueError for zero sizes)."""
    m = _SPEC.match(spec)
    if not m:
        return None
    T, B, I, H = (int(v) for v in m.groups()[:4])
    layers, bi, proj = 1, False, 0
    for part in m.group(5).split("-")[1:]:
        if part == "bi":
            bi = True
        elif part[0] == "L":
            layers = int(part[1:])
        else:
            proj = int(part[1:])
    if min(T, B, I, H, layers) < 1:
        raise ValueError(f"workload {spec!r}: T, B, I, H and L must be at least 1")
    return Workload(T, B, I, H, layers, bi, proj)


def select_workloads(names: Optional[Iterable[str]] = None, quick: bool = False) -> List[str]:
    """Workload names to run: `names` checked (``["all"]`` = every workload; a
    ``TxBxIxH...`` spec is a workload of those sizes); None gives the quick set if
    `quick`, else every workload. ValueError names the unknown ones."""
    if names is None:
        return list(QUICK_WORKLOADS if quick else WORKLOADS)
    names = list(names)
    if names == ["all"]:
        return list(WORKLOADS)
    unknown = [w for w in names if w not in WORKLOADS and parse_spec(w) is None]
    if unknown:
        raise ValueError(f"unknown workload(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(WORKLOADS)} or 'all', or give sizes "
                         f"as TxBxIxH[-L<layers>][-bi][-p<proj>]")
    return names


def workload(name: str) -> Workload:
    """The sizes of workload `name`, a named one or a spec (ValueError if neither)."""
    name = select_workloads([name])[0]
    return WORKLOADS[name] if name in WORKLOADS else parse_spec(name)


def flops(wl: Workload) -> int:
    """Floating-point operations of one forward call in its two GEMMs (and the
    projection's): per layer and direction 2*T*B*4H*(I_l + H_out) + (projection)
    2*T*B*H*P, where I_l is the layer's input width (I, then D*H_out) and H_out the
    recurrent width (P if projected, else H). Gates and state updates not counted."""
    D = 2 if wl.bidirectional else 1
    h_out = wl.proj_size or wl.H
    layers, width = [], wl.I
    for _ in range(wl.num_layers):
        layers.append((D, width, wl.H, wl.proj_size))
        width = D * h_out
    return _stack_flops(wl.T, wl.B, layers)


def model_flops(model, T: int, B: int) -> int:
    """`flops` of one call of `model` on (T, B) inputs, from its layers' own sizes (a
    stack whose layers differ, as loaded from a Keras or ONNX file, included)."""
    return _stack_flops(T, B, [(l.num_directions, l.input_size, l.hidden_size, l.proj_size)
                               for l in model.config.layers])


def _stack_flops(T: int, B: int, layers) -> int:
    """Sum over layers (D, I_l, H, P) of D * (2*T*B*4H*(I_l + H_out) + 2*T*B*H*P)."""
    total = 0
    for D, width, H, P in layers:
        per_dir = 2 * T * B * 4 * H * (width + (P or H))
        if P:
            per_dir += 2 * T * B * H * P
        total += D * per_dir
    return total


def make_model(wl: Workload, seed: int = 0):
    """Our model for a workload (float32, torch's weight init)."""
    from .. import LSTM
    return LSTM.random(wl.I, wl.H, num_layers=wl.num_layers, bidirectional=wl.bidirectional,
                       proj_size=wl.proj_size, dtype="float32", seed=seed)


def make_input(wl: Workload, seed: int = 1, batch_first: bool = False) -> np.ndarray:
    """x (T, B, I) float32, ~U(-1, 1); (B, T, I) if `batch_first` (the same values)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, (wl.T, wl.B, wl.I)).astype(np.float32)
    return np.ascontiguousarray(x.transpose(1, 0, 2)) if batch_first else x


def figures(name: str, wl: Workload, seconds: float) -> dict:
    """Domain figures for one call of `seconds`: sequences/s (B per call), steps/s
    (T*B per call) and, for audio workloads, x real time (audio seconds per second
    at the workload's frame hop; None for the others)."""
    xrt = wl.T * wl.B * FRAME_MS[name] / 1e3 / seconds if name in FRAME_MS else None
    return {"sequences_per_s": wl.B / seconds, "steps_per_s": wl.T * wl.B / seconds,
            "x_realtime": xrt}
