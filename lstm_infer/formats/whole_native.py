"""Whole models in the native format: the LSTM's native file plus the parts.

The file is a native lstm_infer safetensors file (`native`: ``layers.{k}.{dir}.{w}`` and
``__metadata__`` ``format`` / ``format_version`` / ``config``) with, in addition,

    embedding.table   (V, E)        head.{k}.weight (in, out)    head.{k}.bias (out,)

and ``__metadata__["sequence_model"]``: the parts' options as JSON (format version 1:
``head_on``, ``masked_outputs``, ``mask_value``, ``names``, ``notes``,
``embedding`` {pad_id, name} or null, ``head`` [{activation, name}]). Saving goes
through `native.write` (so the LSTM's tensors are named and typed exactly as there);
loading memory-maps the file like `native.load` and builds the LSTM through the one
builder. ``li.load`` (an LSTM alone) refuses these files, naming the extra tensors;
``li.load_model`` reads both kinds.
"""
from __future__ import annotations

import json
import os
import re
import tempfile

from .._build import CanonicalModel, build
from . import native
from . import safetensors_io as st
from .errors import guard
from .native import NativeFormatError

__all__ = ["save", "load", "META_KEY"]

META_KEY = "sequence_model"
VERSION = 1
_LSTM_TENSOR = re.compile(r"^layers\.(\d{1,6})\.(forward|reverse)\.(\w+)$")
_HEAD_TENSOR = re.compile(r"^head\.(\d{1,6})\.(weight|bias)$")


def save(model, path) -> None:
    """Write a SequenceModel to `path` (see the module docstring)."""
    data = model.lstm.canonical()
    fd, tmp = tempfile.mkstemp(suffix=".safetensors", dir=os.path.dirname(
        os.path.abspath(os.fspath(path))) or None)
    os.close(fd)
    try:  # the LSTM exactly as native.write names and types it, then the parts beside it
        native.write(tmp, data.layers, data.options)
        entries, meta, start = st.read_header(tmp)
        tensors = st.arrays(tmp, entries, start, mmap=False)
        dtypes = {n: e[0] for n, e in entries.items() if e[0] == "BF16"}
    finally:
        os.unlink(tmp)
    if model.embedding is not None:
        tensors["embedding.table"] = model.embedding.table
    for k, d in enumerate(model.head):
        tensors[f"head.{k}.weight"] = d.weight
        tensors[f"head.{k}.bias"] = d.bias
    opts = dict(model.options, format_version=VERSION)
    st.save(path, tensors, dict(meta, **{META_KEY: json.dumps(opts, sort_keys=True)}), dtypes)


def load(path):
    """A native file as a SequenceModel (a plain LSTM file gives a bare one)."""
    from ..sequence_model import SequenceModel

    path = os.fspath(path)
    with guard(NativeFormatError, path):
        meta = st.read_metadata(path)
        if meta.get(META_KEY) is None:
            return SequenceModel(native.load(path))
        data, parts = _read(path, meta)
        lstm = build(data, NativeFormatError)
        try:
            return SequenceModel(lstm, **parts)
        except (ValueError, TypeError) as e:
            raise NativeFormatError(f"{path}: {e}") from None


def _read(path, meta):
    raw = meta[META_KEY]
    try:
        opts = json.loads(raw) if isinstance(raw, str) else None
    except (ValueError, RecursionError):
        opts = None
    if not isinstance(opts, dict) or opts.get("format_version") != VERSION:
        raise NativeFormatError(f"{path}: metadata {META_KEY!r} is not a version-{VERSION} "
                                f"JSON object of whole-model options ({str(raw)[:80]!r})")
    if meta.get("format") != native.FORMAT or meta.get("format_version") != \
            str(native.FORMAT_VERSION):
        raise NativeFormatError(f"{path}: not a native lstm_infer file of format version "
                                f"{native.FORMAT_VERSION}")
    options = native._read_config(meta, path)
    entries, _, start = st.read_header(path)
    groups, head, table = {}, {}, None
    for name in entries:
        m = _LSTM_TENSOR.match(name)
        h = _HEAD_TENSOR.match(name)
        if m:
            groups.setdefault(int(m.group(1)), {}).setdefault(m.group(2), {})[m.group(3)] = name
        elif h:
            head.setdefault(int(h.group(1)), {})[h.group(2)] = name
        elif name == "embedding.table":
            table = name
        else:
            raise NativeFormatError(f"{path}: unexpected tensor {name!r:.100} in a whole model")
    n_layers = len(options.get("layer_options", []))
    if sorted(groups) != list(range(n_layers)):
        raise NativeFormatError(f"{path}: the config declares {n_layers} layers; the file "
                                f"holds tensors of layers {sorted(groups)[:8]}")
    head_opts = opts.get("head") or []
    emb_opts = opts.get("embedding")
    if not isinstance(head_opts, list) or sorted(head) != list(range(len(head_opts))) or \
            any(set(head[k]) != {"weight", "bias"} for k in head) or \
            (emb_opts is None) != (table is None) or \
            not all(isinstance(o, dict) for o in head_opts) or \
            not isinstance(emb_opts, (dict, type(None))):
        raise NativeFormatError(f"{path}: the whole-model options (embedding "
                                f"{emb_opts is not None}, {len(head_opts) if isinstance(head_opts, list) else '?'} "
                                f"head layers) do not match its tensors")
    arrays = st.arrays(path, entries, start)
    layers = [[{w: arrays[n] for w, n in groups[k][d].items()}
               for d in ("forward", "reverse") if d in groups[k]] for k in range(n_layers)]
    parts = {k: opts[k] for k in ("head_on", "masked_outputs", "mask_value", "names", "notes")
             if k in opts}
    if table is not None:
        parts["embedding"] = {"table": arrays[table], "pad_id": emb_opts.get("pad_id"),
                              "name": emb_opts.get("name") or ""}
    parts["head"] = [{"weight": arrays[head[k]["weight"]], "bias": arrays[head[k]["bias"]],
                      "activation": o.get("activation"), "name": o.get("name") or ""}
                     for k, o in enumerate(head_opts)]
    return CanonicalModel(layers, options, path), parts
