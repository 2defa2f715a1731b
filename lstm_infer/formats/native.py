"""The native format: a safetensors file (see safetensors_io) holding

    layers.{k}.{forward|reverse}.{w_ih, w_hh, b, w_hr, p_i, p_f, p_o}

(the canonical weights: gate order i, f, g, o, fused bias; quantized models
store W_ih / W_hh as int8 + per-row ``w_ih_scale`` / ``w_hh_scale``, F16 or
BF16) and, in
``__metadata__``, ``format = "lstm_infer"``, ``format_version`` and ``config``:
the model's constructor options as JSON (``LSTM(weights, **options)``).
A reverse-only layer (ONNX direction="reverse", Keras go_backwards) stores its
single direction under ``reverse``. Loading memory-maps the file: the only
copy made is the model's own (canonical weights, then the packed layout).
Saving then loading is bit-exact.
"""
from __future__ import annotations

import json

import numpy as np

from .errors import FormatError
from . import safetensors_io as st

FORMAT = "lstm_infer"
FORMAT_VERSION = 1
_DIR_NAMES = ("forward", "reverse")
_WEIGHTS = ("w_ih", "w_hh", "b", "w_hr", "p_i", "p_f", "p_o", "w_ih_scale", "w_hh_scale")


class NativeFormatError(FormatError):
    """A native lstm_infer file that cannot be loaded (names the problem)."""


def save(model, path) -> None:
    """Write `model` to `path` in the native format."""
    tensors, dtypes = {}, {}
    bf16 = model.config.quantization == "bfloat16"
    for k, (layer, spec) in enumerate(zip(model.weights, model.config.layers)):
        names = ["reverse"] if spec.reverse else list(_DIR_NAMES[:len(layer)])
        for dname, w in zip(names, layer):
            for wname, a in w.items():
                key = f"layers.{k}.{dname}.{wname}"
                tensors[key] = a
                if bf16 and wname in ("w_ih", "w_hh") and a.dtype == np.uint16:
                    dtypes[key] = "BF16"  # uint16 bit patterns, typed as bf16 in the file
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION),
            "config": json.dumps(model.options, sort_keys=True)}
    st.save(path, tensors, meta, dtypes)


def is_native(path) -> bool:
    if not st.is_safetensors(path):
        return False
    try:
        return st.read_metadata(path).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def load(path):
    """Read a native file back into an LSTM."""
    from ..model import LSTM

    tensors, meta = st.load(path)
    if meta.get("format") != FORMAT:
        raise NativeFormatError(f"{path}: not an lstm_infer native file (metadata format "
                                f"{meta.get('format')!r}); use li.load() to detect the format")
    version = meta.get("format_version")
    if version != str(FORMAT_VERSION):
        raise NativeFormatError(f"{path}: format_version {version!r} is not supported by this "
                                f"lstm_infer (expected {FORMAT_VERSION}); upgrade lstm_infer")
    try:
        options = json.loads(meta["config"])
    except (KeyError, json.JSONDecodeError) as e:
        raise NativeFormatError(f"{path}: missing or invalid config metadata ({e})") from None
    n_layers = len(options.get("layer_options", []))
    layers, seen = [], set()
    for k in range(n_layers):
        dirs = []
        for dname in _DIR_NAMES:
            w = {}
            for wname in _WEIGHTS:
                key = f"layers.{k}.{dname}.{wname}"
                if key in tensors:
                    w[wname] = tensors[key]
                    seen.add(key)
            if w:
                dirs.append(w)
        if not dirs:
            raise NativeFormatError(f"{path}: layer {k} of {n_layers} has no weights "
                                    f"(expected layers.{k}.forward.w_ih ...)")
        layers.append(dirs)
    extra = sorted(set(tensors) - seen)
    if extra:
        raise NativeFormatError(f"{path}: unexpected tensors {extra[:5]} for a "
                                f"{n_layers}-layer model")
    try:
        return LSTM(layers, **options)
    except (ValueError, TypeError) as e:
        raise NativeFormatError(f"{path}: {e}") from None
