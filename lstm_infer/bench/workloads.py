"""The standard workloads: sizes, our model and the input for each, and their domain figures."""
from __future__ import annotations

from typing import Dict, Iterable, List, NamedTuple, Optional

import numpy as np


class Workload(NamedTuple):
    T: int
    B: int
    I: int
    H: int
    num_layers: int
    bidirectional: bool


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
}
QUICK_WORKLOADS = ("kws", "stream256", "text")
LARGE_WORKLOADS = ("lat1024", "tput512", "asr-bi")
# Feature-frame hop of the audio workloads, for the "x real time" figure.
FRAME_MS = {"kws": 10.0, "stream256": 10.0, "asr-bi": 10.0}


def select_workloads(names: Optional[Iterable[str]] = None, quick: bool = False) -> List[str]:
    """Workload names to run: `names` checked (``["all"]`` = every workload); None gives
    the quick set if `quick`, else every workload. ValueError names the unknown ones."""
    if names is None:
        return list(QUICK_WORKLOADS if quick else WORKLOADS)
    names = list(names)
    if names == ["all"]:
        return list(WORKLOADS)
    unknown = [w for w in names if w not in WORKLOADS]
    if unknown:
        raise ValueError(f"unknown workload(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(WORKLOADS)} or 'all'")
    return names


def workload(name: str) -> Workload:
    """The sizes of workload `name` (ValueError if unknown)."""
    return WORKLOADS[select_workloads([name])[0]]


def make_model(wl: Workload, seed: int = 0):
    """Our model for a workload (float32, torch's weight init)."""
    from .. import LSTM
    return LSTM.random(wl.I, wl.H, num_layers=wl.num_layers, bidirectional=wl.bidirectional,
                       dtype="float32", seed=seed)


def make_input(wl: Workload, seed: int = 1) -> np.ndarray:
    """x (T, B, I) float32, ~U(-1, 1)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, (wl.T, wl.B, wl.I)).astype(np.float32)


def figures(name: str, wl: Workload, seconds: float) -> dict:
    """Domain figures for one call of `seconds`: sequences/s (B per call), steps/s
    (T*B per call) and, for audio workloads, x real time (audio seconds per second
    at the workload's frame hop; None for the others)."""
    xrt = wl.T * wl.B * FRAME_MS[name] / 1e3 / seconds if name in FRAME_MS else None
    return {"sequences_per_s": wl.B / seconds, "steps_per_s": wl.T * wl.B / seconds,
            "x_realtime": xrt}
