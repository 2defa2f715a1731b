"""Gate orders of every source, in one place (DESIGN §2).

Canonical order is i, f, g, o. `to_canonical(w, source)` reorders the 4H
gate blocks along `axis` so loaders never hand-code index shuffles.
"""
from __future__ import annotations

import numpy as np

CANONICAL = ("i", "f", "g", "o")

GATE_ORDERS = {
    "torch": ("i", "f", "g", "o"),
    "keras": ("i", "f", "g", "o"),   # Keras calls g "c"
    "onnx": ("i", "o", "f", "g"),    # ONNX calls g "c"
    "tf1": ("i", "g", "f", "o"),     # TF1 LSTMCell calls g "j"
}


def _reorder(w, frm, to, axis):
    if frm == to:
        return w
    blocks = np.split(np.asarray(w), 4, axis=axis)
    return np.concatenate([blocks[frm.index(g)] for g in to], axis=axis)


def to_canonical(w: np.ndarray, source: str, axis: int = 0) -> np.ndarray:
    """Reorder the four gate blocks of `w` along `axis` from `source` order to i, f, g, o."""
    return _reorder(w, GATE_ORDERS[source], CANONICAL, axis)


def from_canonical(w: np.ndarray, target: str, axis: int = 0) -> np.ndarray:
    """Reorder the four gate blocks of `w` along `axis` from i, f, g, o to `target` order."""
    return _reorder(w, CANONICAL, GATE_ORDERS[target], axis)
