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

Before any array is made, `load` checks the metadata's types (``config`` a string
holding a JSON object, ``layer_options`` a list of objects...) and that every layer
and direction the config declares has the tensors it needs (w_ih, w_hh, and the scale
of an int8 weight) and no others; any bad file raises NativeFormatError (or, for a
header that is not valid safetensors, SafetensorsError), never another exception.
"""
from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np

from .._build import CanonicalModel, build
from .errors import FormatError, guard
from . import safetensors_io as st

FORMAT = "lstm_infer"
FORMAT_VERSION = 1
_DIR_NAMES = ("forward", "reverse")
_WEIGHTS = ("w_ih", "w_hh", "b", "w_hr", "p_i", "p_f", "p_o", "ln_i", "ln_f", "ln_g", "ln_o",
            "w_ih_scale", "w_hh_scale")


class NativeFormatError(FormatError):
    """A native lstm_infer file that cannot be loaded (names the problem)."""


def save(model, path) -> None:
    """Write `model` to `path` in the native format: an LSTM, or its canonical data (a
    `CanonicalModel`, as ``LSTM.save`` passes it: ``model.canonical()``)."""
    data = model if isinstance(model, CanonicalModel) else model.canonical()
    write(path, data.layers, data.options)


def write(path, layers, options: dict) -> None:
    """The numpy core of `save`: canonical `layers` (stored quantized forms included) and
    the constructor `options` to `path`."""
    tensors, dtypes = {}, {}
    bf16 = options.get("quantization") in ("bfloat16", "bfloat16-weights", "bf16")
    layer_options = options.get("layer_options") or [{}] * len(layers)
    for k, layer in enumerate(layers):
        reverse = layer_options[k].get("direction") == "reverse"
        names = ["reverse"] if reverse else list(_DIR_NAMES[:len(layer)])
        for dname, w in zip(names, layer):
            for wname, a in w.items():
                key = f"layers.{k}.{dname}.{wname}"
                tensors[key] = a
                if bf16 and wname in ("w_ih", "w_hh") and a.dtype == np.uint16:
                    dtypes[key] = "BF16"  # uint16 bit patterns, typed as bf16 in the file
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION),
            "config": json.dumps(options, sort_keys=True)}
    st.save(path, tensors, meta, dtypes)


def sniff(path) -> Optional[str]:
    """"native" if `path` says it is a native file (safetensors whose metadata format is
    ours), else None. Only the header's JSON is parsed: a native file with a bad tensor
    entry is still native, and `load` names the problem; a bad header is not native."""
    if not st.is_safetensors(path):
        return None
    try:
        return "native" if st.read_metadata(path).get("format") == FORMAT else None
    except (OSError, ValueError):
        return None


def is_native(path) -> bool:
    """Whether `path` is a native file: ``sniff(path) is not None``."""
    return sniff(path) is not None


def load(path):
    """Read a native file back into an LSTM. Raises NativeFormatError (or SafetensorsError
    for a file that is not valid safetensors), both FormatErrors, for any bad file."""
    with guard(NativeFormatError, str(path)):
        return build(_read(path), NativeFormatError)


def read(path) -> CanonicalModel:
    """The numpy core of `load`: the file's canonical weights (memory-mapped, stored
    quantized forms as they are) and constructor options, every check of `load` made
    but the model's own (shapes, values, options: `lstm_infer._build.build`)."""
    with guard(NativeFormatError, str(path)):
        return _read(path)


def _meta_str(meta, key, path):
    v = meta.get(key)
    if v is not None and not isinstance(v, str):
        raise NativeFormatError(f"{path}: metadata field {key!r} must be a string; got a JSON "
                                f"{type(v).__name__} ({v!r:.80})")
    return v


def _read_config(meta, path) -> dict:
    """The constructor options stored in __metadata__.config, their types checked."""
    config = _meta_str(meta, "config", path)
    if config is None:
        raise NativeFormatError(f"{path}: metadata has no 'config' (the model's options as a "
                                f"JSON string)")
    try:
        options = json.loads(config)
    except RecursionError:
        raise NativeFormatError(f"{path}: metadata field 'config' is nested too deeply") \
            from None
    except ValueError as e:
        raise NativeFormatError(f"{path}: metadata field 'config' is not valid JSON ({e})") \
            from None
    if not isinstance(options, dict):
        raise NativeFormatError(f"{path}: metadata field 'config' must hold a JSON object of "
                                f"constructor options; got a JSON {type(options).__name__} "
                                f"({config!r:.80})")
    layer_options = options.get("layer_options", [])
    if not isinstance(layer_options, list) or \
            not all(isinstance(o, dict) for o in layer_options):
        raise NativeFormatError(f"{path}: config field 'layer_options' must be a list with one "
                                f"JSON object per layer; got {layer_options!r:.80}")
    for k, o in enumerate(layer_options):
        if not isinstance(o.get("direction", "forward"), str):
            raise NativeFormatError(f"{path}: config field layer_options[{k}].direction must be "
                                    f"a string; got {o['direction']!r:.80}")
    q = options.get("quantization")
    if q is not None and not isinstance(q, str):
        raise NativeFormatError(f"{path}: config field 'quantization' must be a string or "
                                f"null; got {q!r:.80}")
    return options


def _layer_dirs(options, k) -> tuple:
    """The direction names layer k's tensors are stored under, per its config (None when
    the config does not say: then whichever are present)."""
    direction = options.get("layer_options", [])[k].get("direction")
    return {"bidirectional": _DIR_NAMES, "forward": _DIR_NAMES[:1],
            "reverse": _DIR_NAMES[1:]}.get(direction)


def _read(path) -> CanonicalModel:
    entries, meta, start = st.read_header(path, tiling=False)
    if _meta_str(meta, "format", path) != FORMAT:
        raise NativeFormatError(f"{path}: not an lstm_infer native file (metadata format "
                                f"{meta.get('format')!r}); use li.load() to detect the format")
    version = _meta_str(meta, "format_version", path)
    if version != str(FORMAT_VERSION):
        raise NativeFormatError(f"{path}: format_version {version!r} is not supported by this "
                                f"lstm_infer (expected {FORMAT_VERSION}); upgrade lstm_infer")
    options = _read_config(meta, path)
    n_layers = len(options.get("layer_options", []))
    if 2 * n_layers > len(entries):  # each layer stores at least w_ih and w_hh
        raise NativeFormatError(f"{path}: config declares {n_layers} layers but the file holds "
                                f"{len(entries)} tensors (at least 2 per layer)")
    int8 = options.get("quantization") in ("int8", "int8-weights")
    # every tensor the config requires, checked before any array is made or the model built
    names, seen = [], set()
    for k in range(n_layers):
        expected = _layer_dirs(options, k)
        present = [d for d in _DIR_NAMES if any(f"layers.{k}.{d}.{w}" in entries
                                                for w in _WEIGHTS)]
        if not present:
            raise NativeFormatError(f"{path}: layer {k} of {n_layers} has no weights "
                                    f"(expected layers.{k}.forward.w_ih ...)")
        dirs = []
        for dname in expected or present:
            w = {wname: f"layers.{k}.{dname}.{wname}" for wname in _WEIGHTS
                 if f"layers.{k}.{dname}.{wname}" in entries}
            for req in ("w_ih", "w_hh"):
                if req not in w:
                    raise NativeFormatError(f"{path}: layer {k} {dname}: missing {req} (tensor "
                                            f"layers.{k}.{dname}.{req})")
                if int8 and entries[w[req]][0] == "I8" and f"{req}_scale" not in w:
                    raise NativeFormatError(f"{path}: layer {k} {dname}: int8 {req} needs "
                                            f"{req}_scale (tensor layers.{k}.{dname}.{req}_scale)")
            seen.update(w.values())
            dirs.append(w)
        names.append(dirs)
    extra = sorted(set(entries) - seen)
    if extra:
        raise NativeFormatError(f"{path}: unexpected tensors {extra[:5]} for a "
                                f"{n_layers}-layer model" +
                                (f" ({len(extra)} in all)" if len(extra) > 5 else ""))
    st.check_tiling(entries, os.path.getsize(path) - start, str(path))
    tensors = st.arrays(path, entries, start)
    layers = [[{wname: tensors[key] for wname, key in w.items()} for w in dirs]
              for dirs in names]
    return CanonicalModel(layers, options, str(path))
