"""lstm_infer itself: ``model(x, num_threads=threads)``."""
from __future__ import annotations

from . import Runner


def build(model, x, threads: int) -> Runner:
    from ... import __version__

    def fn():
        out, (h, c) = model(x, num_threads=threads)
        return out, h, c
    return Runner("ours", __version__, fn)
