"""lstm_infer itself: ``model(x, num_threads=threads)``; ``ours-<mode>``: the same
weights through ``model.quantize(mode)``."""
from __future__ import annotations

from . import PeerUnavailable, Runner

# What each quantization mode computes in: the weight-only modes ("int8-weights",
# "float16-weights", "bfloat16-weights") widen their weights to float32 in registers, so their
# arithmetic is float32. A mode whose GEMMs run in another precision is listed here;
# its results are then checked with the reduced-precision bound and compared with the
# peers of that precision (a bf16 compute mode: "bf16", next to openvino-bf16).
COMPUTE_PRECISION = {"int8": "int8", "bf16": "bf16"}


def compute_precision(mode: str) -> str:
    return COMPUTE_PRECISION.get(mode, "float32")


def _runner(name: str, model, x, threads: int, precision: str, info=None) -> Runner:
    from ... import __version__

    def fn():
        out, (h, c) = model(x, num_threads=threads)
        return out, h, c
    return Runner(name, __version__, fn, precision=precision, info=info or {})


def build(model, x, threads: int) -> Runner:
    return _runner("ours", model, x, threads, "float32")


def build_mode(model, x, threads: int, mode: str) -> Runner:
    """Ours quantized to `mode` (a `lstm_infer.quantize` mode; a model already quantized
    so, as loaded from a file, runs as it is); PeerUnavailable if this model cannot be
    quantized so (ValueError for a mode that does not exist)."""
    from ...quantize import check_mode
    check_mode(mode)
    if model.config.quantization == mode:
        return _runner(f"ours-{mode}", model, x, threads, compute_precision(mode),
                       {"model": "as given (already quantized)"})
    try:
        q = model.quantize(mode)
    except (ValueError, TypeError) as e:
        raise PeerUnavailable(f"quantize({mode!r}): {e}") from None
    return _runner(f"ours-{mode}", q, x, threads, compute_precision(mode))
