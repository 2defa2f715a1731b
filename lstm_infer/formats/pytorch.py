"""PyTorch adapter: nn.LSTM / nn.LSTMCell modules, state dicts, and files.

Key names follow torch (`weight_ih_l{k}[_reverse]`, `weight_hh_...`,
`bias_ih_...`, `bias_hh_...`, `weight_hr_...` for proj_size; nn.LSTMCell:
`weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`); the gate order is already
i, f, g, o. torch is imported only when the caller hands us torch objects;
files are read without it (`torch_pickle`: a restricted unpickler that runs
no code from the file).

Where the LSTM is found
-----------------------
A state dict may hold a whole model: the LSTM's keys then sit under a prefix
(``encoder.rnn.weight_ih_l0``). ``prefix=`` names it; without it, the one
LSTM of the dict is used, and several are an error that lists them all.

Checkpoints are searched too: nested dicts are flattened into dotted paths, so
``{'state_dict': {...}, 'epoch': 3}``, ``{'model': {...}}``,
``{'model_state_dict': ..., 'optimizer': ...}`` or a DataParallel
``module.`` prefix all work the same way -- an LSTM at
``state_dict -> encoder.rnn.weight_ih_l0`` has the prefix
``state_dict.encoder.rnn.``. ``prefix=`` may omit the container part
(``prefix="encoder.rnn"`` finds ``state_dict.encoder.rnn.``) when that is
unambiguous. A checkpoint holding the same LSTM twice (``model`` and
``ema_model``) is ambiguous: pick one with the full prefix.
"""
from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping
from typing import Optional

import numpy as np

from .._build import CanonicalModel, build
from .._validate import check_direction, check_shape, to_array
from .errors import guard
from . import native, safetensors_io
from .torch_pickle import TorchFile, TorchFileError, TorchTensor, _Unsupported
from .torch_pickle import sniff as torch_sniff

__all__ = ["from_torch", "from_state_dict", "load_torch_file", "sniff", "is_torch_file",
           "read_state_dict", "read_torch_file", "to_state_dict"]

# The one builder (lstm_infer._build.build: CanonicalModel -> model) under the model's
# name: what this module's public functions call to return an LSTM (and the seam where
# tests inject failures in model building).
LSTM = build

_LSTM_KEY = re.compile(r"^(?P<prefix>(?:.*\.)?)weight_ih_l(?P<layer>\d+)(?P<rev>_reverse)?$")
_CELL_KEY = re.compile(r"^(?P<prefix>(?:.*\.)?)weight_ih$")
_MAX_DEPTH = 8  # nesting of checkpoint dicts we look into


def _find_prefixes(keys):
    lstm, cell = set(), set()
    for k in keys:
        m = _LSTM_KEY.match(k)
        if m:
            lstm.add(m.group("prefix"))
            continue
        m = _CELL_KEY.match(k)
        if m:
            cell.add(m.group("prefix"))
    return lstm, cell


def _flatten(obj) -> dict:
    """Nested str-keyed mappings -> one dict with dotted keys; other values are leaves."""
    out, seen = {}, set()
    stack = [("", obj, 0)]
    while stack:
        path, node, depth = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for k, v in node.items():
            if not isinstance(k, str):
                continue  # e.g. an optimizer's per-parameter state keyed by int
            key = f"{path}{k}"
            if isinstance(v, Mapping):
                if depth + 1 < _MAX_DEPTH:
                    stack.append((key + ".", v, depth + 1))
            else:
                out[key] = v
    return out


def _resolve(keys, prefix):
    """The prefix of the LSTM to load, and its kind ("lstm" or "cell")."""
    lstm_p, cell_p = _find_prefixes(keys)
    found = sorted(lstm_p | cell_p)
    if prefix is None:
        if len(found) != 1:
            raise ValueError(
                "expected exactly one LSTM in the state dict (keys like 'weight_ih_l0'); "
                f"found {len(found)}: {found or sorted(keys)[:8]}; choose one with prefix=")
        chosen = found[0]
    else:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a string like 'encoder.rnn.'; got {prefix!r}")
        p = prefix if prefix == "" or prefix.endswith(".") else prefix + "."
        if p in lstm_p or p in cell_p:
            chosen = p
        else:  # the same LSTM inside a checkpoint container ('state_dict.' + p)
            inside = [f for f in found if f.endswith("." + p)]
            if len(inside) > 1:
                raise ValueError(f"prefix {p!r} matches {len(inside)} LSTMs: {inside}; "
                                 "give the full prefix")
            if not inside:
                raise ValueError(f"no LSTM weights under prefix {p!r}; "
                                 f"LSTMs found under {found}")
            chosen = inside[0]
    return chosen, ("lstm" if chosen in lstm_p else "cell")


def from_state_dict(sd, prefix=None, *, batch_first=False, dtype=None):
    """Build an LSTM from a torch-style state dict or checkpoint dict
    (`read_state_dict`'s data, built).

    Parameters
    ----------
    sd : mapping of parameter names to tensors / numpy arrays / lazy file tensors;
        nested dicts (checkpoints) are searched as described in the module docstring.
    prefix : str, optional
        Which LSTM, e.g. ``"encoder.rnn."``; found automatically when there is exactly one.
    batch_first : bool
        Not recorded in a state dict; torch's default is False.
    dtype : "float32" / "float64", optional
        Default: float64 if the weights are float64, else float32 (float16 and
        bfloat16 weights run in float32).
    """
    return LSTM(read_state_dict(sd, prefix, batch_first=batch_first, dtype=dtype))


def read_state_dict(sd, prefix=None, *, batch_first=False, dtype=None) -> CanonicalModel:
    """The numpy core of `from_state_dict`: the chosen LSTM's canonical weights (numpy
    arrays; the two torch biases fused) and constructor options, its tensor names and
    shapes checked (ValueError naming the tensor)."""
    if not isinstance(sd, Mapping):
        raise TypeError(f"expected a state dict (a mapping of names to tensors); "
                        f"got {type(sd).__name__}")
    flat = _flatten(sd)
    prefix, kind = _resolve(flat, prefix)
    get = _Getter(flat)
    if kind == "lstm":
        layers, in_size = [], None
        k = 0
        while f"{prefix}weight_ih_l{k}" in flat:
            dirs = [_direction(get, prefix, f"_l{k}", in_size, k)]
            if f"{prefix}weight_ih_l{k}_reverse" in flat:
                dirs.append(_direction(get, prefix, f"_l{k}_reverse", in_size, k))
            if k > 0 and len(dirs) != len(layers[0]):
                raise ValueError(f"layer {k} has {len(dirs)} directions, layer 0 has "
                                 f"{len(layers[0])} ({prefix}weight_ih_l0_reverse "
                                 f"{'present' if len(layers[0]) == 2 else 'absent'})")
            layers.append(dirs)
            in_size = len(dirs) * dirs[0]["w_hh"].shape[1]
            k += 1
        stray = sorted({int(m.group("layer")) for m in map(_LSTM_KEY.match, flat)
                        if m and m.group("prefix") == prefix and int(m.group("layer")) >= k})
        if stray:
            found = ", ".join(f"{prefix}weight_ih_l{j}" for j in stray)
            raise ValueError(f"layers must be numbered 0, 1, 2, ... without gaps; found {found} "
                             f"but no {prefix}weight_ih_l{k}")
        if k == 0:
            raise ValueError(f"missing {prefix}weight_ih_l0 (only {prefix}weight_ih_l*_reverse "
                             "keys found)")
    else:
        layers = [[_direction(get, prefix, "", None, 0)]]
    return CanonicalModel(layers, {"batch_first": batch_first, "dtype": dtype})


class _Getter:
    def __init__(self, flat):
        self.flat = flat

    def __call__(self, key, required=True):
        if key not in self.flat:
            if required:
                raise ValueError(f"missing {key}")
            return None
        return _weight(self.flat[key], key)


_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _weight(v, key):
    """A tensor / array / lazy file tensor as a numpy array (bf16 -> float32, exactly)."""
    if isinstance(v, _Unsupported):
        raise ValueError(f"{key} is {v.what}; only dense floating-point tensors are supported")
    if isinstance(v, TorchTensor):
        if v.dtype not in _FLOAT_DTYPES:
            raise ValueError(f"{key} is a {v.dtype} tensor; expected a floating-point tensor "
                             f"({', '.join(_FLOAT_DTYPES)})")
        try:
            return v.numpy()
        except TorchFileError as e:  # name the tensor: the file's error names its record
            raise TorchFileError(f"{e} [tensor {key}]") from e
    if isinstance(v, Mapping) or v is None:
        raise ValueError(f"{key} is a {type(v).__name__}, not a tensor")
    try:
        a = to_array(v)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{key} cannot be read as an array: {e}") from e
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{key} has dtype {a.dtype}; expected a floating-point tensor")
    return a


def _direction(get, prefix, suffix, in_size, layer):
    """One direction's torch tensors as canonical weights (the two biases fused), their
    shapes checked by the shared checker under their torch names."""
    names = {"w_ih": f"{prefix}weight_ih{suffix}", "w_hh": f"{prefix}weight_hh{suffix}",
             "w_hr": f"{prefix}weight_hr{suffix}", "b": f"{prefix}bias_ih{suffix}"}
    w = {n: get(names[n], n != "w_hr" and n != "b") for n in ("w_ih", "w_hh", "w_hr")}
    if w["w_hr"] is None:
        del w["w_hr"]
    parts = [(n, a) for n in (f"{prefix}bias_ih{suffix}", f"{prefix}bias_hh{suffix}")
             if (a := get(n, False)) is not None]
    if parts:
        names["b"], w["b"] = parts[0]
    try:
        check_direction(w, names=names, input_size=in_size, layer=layer)
        for n, part in parts[1:]:
            check_shape(part, w["b"].shape, n, "(4*H,)")
    except ValueError as e:
        ih, hh = w["w_ih"], w["w_hh"]
        gru = "w_hr" not in w and ih.ndim == 2 and hh.ndim == 2 and \
            ih.shape[0] == 3 * hh.shape[1]
        raise ValueError(f"{e} -- 3*hidden_size rows: a GRU, not an LSTM?" if gru else str(e)) \
            from None
    if parts:  # fused in float64; the model casts once to its dtype
        w["b"] = parts[0][1].astype(np.float64)
        for _, part in parts[1:]:
            w["b"] = w["b"] + part.astype(np.float64)
    return w


def load_torch_file(path, prefix=None, *, dtype=None, batch_first=False):
    """Load an LSTM from a PyTorch file, without torch.

    Reads ``torch.save`` zip archives (``.pt`` / ``.pth`` / ``.bin``), legacy
    (non-zip) ``torch.save`` files and safetensors files with torch names;
    the format is sniffed from the content. The pickle is interpreted by a
    restricted unpickler (`torch_pickle`): only tensor-rebuild and container
    globals are honoured, anything else (a function, a model class) is refused
    by name and nothing from the file is run. Only the LSTM's tensors are read.

    Parameters
    ----------
    path : str, path-like, or a seekable binary file object
    prefix : str, optional
        Which LSTM of the state dict / checkpoint (see the module docstring).
    dtype : "float32" / "float64", optional
    batch_first : bool
        A state dict does not record it; torch's default is False.

    Raises
    ------
    TorchFileError (a FormatError, a ValueError)
        Unreadable, truncated, corrupted or hostile file (see "Limits" in
        `torch_pickle`); missing or mis-shaped tensors; a pickled nn.Module
        (`PickledModuleError`); a refused global (`UnsafePickleError`, with
        ``.global_name``). The message names the file. No other exception
        escapes, except those about the path itself (FileNotFoundError...,
        as `errors.guard` lets through).
    """
    return _torch_file(path, prefix, dtype, batch_first, LSTM)


def read_torch_file(path, prefix=None, *, dtype=None, batch_first=False) -> CanonicalModel:
    """The numpy core of `load_torch_file`: the file's LSTM as canonical data (arrays
    read from the file), with the same checks and errors but the model's own."""
    return _torch_file(path, prefix, dtype, batch_first, lambda data: data)


def _torch_file(path, prefix, dtype, batch_first, make):
    with TorchFile(path) as tf, guard(TorchFileError, tf.path):
        try:
            return make(read_state_dict(tf.obj, prefix, batch_first=batch_first, dtype=dtype))
        except TorchFileError:
            raise
        except (ValueError, TypeError) as e:
            what = "a state dict" if isinstance(tf.obj, Mapping) else \
                f"a {type(tf.obj).__name__}, not a state dict"
            raise TorchFileError(f"{tf.path} ({what}): {e}") from e


def sniff(path) -> Optional[str]:
    """"pytorch" or "pytorch-safetensors" if `path` is for `load_torch_file`, else None:
    a cheap content sniff that reads only headers and never raises on bad content.

    "pytorch": a zip with ``<archive>/data.pkl`` (torch.save, also TorchScript, which
    then gets a clear error), a legacy torch.save file. "pytorch-safetensors": any
    safetensors file that is not a native lstm_infer one (`native.sniff`): this loader
    reads it and says what is wrong (a bad header, no LSTM names).
    """
    try:
        kind = torch_sniff(path)
        if kind == "legacy":
            return "pytorch"
        if kind == "zip":
            with zipfile.ZipFile(path) as z:
                if any(n == "data.pkl" or (n.endswith("/data.pkl") and n.count("/") == 1)
                       for n in z.namelist()):
                    return "pytorch"
        elif kind == "safetensors" and safetensors_io.is_safetensors(path) and \
                native.sniff(path) is None:
            return "pytorch-safetensors"
    except Exception:  # noqa: BLE001 - a sniffer answers, it does not fail
        return None
    return None


def is_torch_file(path) -> bool:
    """Whether `path` is for `load_torch_file`: ``sniff(path) is not None``."""
    return sniff(path) is not None


def from_torch(obj, prefix=None, *, dtype=None, batch_first=None):
    """Convert a torch LSTM: a module, a state dict / checkpoint, or a file.

    Parameters
    ----------
    obj : nn.LSTM, nn.LSTMCell, any nn.Module containing one, a mapping of
        parameter names to tensors/arrays (state dict or checkpoint dict), or a
        path / binary file object of a ``.pt`` / ``.pth`` / ``.bin`` /
        ``.safetensors`` file (read without torch, see `load_torch_file`).
    prefix : str, optional
        Which LSTM of a larger model (e.g. ``"encoder.rnn."``); found
        automatically when there is exactly one.
    dtype : "float32" / "float64", optional; default follows the weights.
    batch_first : bool, optional
        Default: the module's own setting; False for state dicts and files
        (they do not record it).
    """
    if isinstance(obj, (str, bytes)) or hasattr(obj, "__fspath__") or \
            (hasattr(obj, "read") and hasattr(obj, "seek")):
        return load_torch_file(obj, prefix, dtype=dtype, batch_first=bool(batch_first))
    try:
        import torch.nn as nn
    except ImportError:
        nn = None
    if nn is not None and isinstance(obj, nn.Module):
        if isinstance(obj, nn.LSTM):
            # dropout between layers only acts in training mode; inference ignores it
            bf = obj.batch_first if batch_first is None else batch_first
            data = read_state_dict(obj.state_dict(), "", batch_first=bf, dtype=dtype)
            if len(data.layers) != obj.num_layers:
                raise ValueError(f"expected {obj.num_layers} layers in the module; "
                                 f"found {len(data.layers)}")
            return LSTM(data)
        if isinstance(obj, nn.LSTMCell):
            return from_state_dict(obj.state_dict(), "", batch_first=bool(batch_first),
                                   dtype=dtype)
        if isinstance(obj, (nn.RNNBase, nn.RNNCellBase)):
            raise TypeError(f"from_torch() converts LSTMs; got a {type(obj).__name__}")
        sd = obj.state_dict()
        if batch_first is None:  # take it from the chosen submodule
            chosen, _ = _resolve(_flatten(sd), prefix)
            sub = dict(obj.named_modules()).get(chosen[:-1] if chosen else "")
            batch_first = bool(getattr(sub, "batch_first", False))
        return from_state_dict(sd, prefix, batch_first=batch_first, dtype=dtype)
    if isinstance(obj, Mapping) or (hasattr(obj, "keys") and hasattr(obj, "__getitem__")):
        sd = obj if isinstance(obj, Mapping) else {k: obj[k] for k in obj.keys()}
        return from_state_dict(sd, prefix, batch_first=bool(batch_first), dtype=dtype)
    raise TypeError(f"from_torch() expects an nn.LSTM, nn.LSTMCell, a state dict or a path; "
                    f"got {type(obj).__name__}")


def to_state_dict(model, *, dequantize: bool = False) -> dict:
    """The ``torch.nn.LSTM`` state dict of `model` (an LSTM or its `CanonicalModel`), as
    numpy arrays: the inverse of `from_state_dict`. `torch_writer.write_torch` writes it
    as a file torch loads.

    Keys, in torch's order: ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``,
    ``bias_hh_l{k}``, ``weight_hr_l{k}`` (with a projection), and the same with
    ``_reverse`` for the backward direction of a bidirectional layer. The gate order
    i, f, g, o is torch's and ours. Our single fused bias goes to ``bias_ih``;
    ``bias_hh`` is zeros. The arrays are new (writable) copies in the model's dtype. Then::

        lstm = torch.nn.LSTM(I, H, num_layers=L, bidirectional=D == 2, proj_size=P)
        lstm.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})

    computes what `model` computes. ``batch_first`` is not part of a state dict: give
    it to ``nn.LSTM`` (and to ``li.load`` when reading the file back).

    dequantize : a quantized model is refused unless True; then its float32 weights
        (exactly what the weight-only modes compute with; "int8" also quantizes its
        activations, which nn.LSTM does not).

    Raises
    ------
    lstm_infer.formats._export.ExportError (a ValueError)
        For what ``nn.LSTM`` cannot express, listing each: peephole connections,
        ``clip``, ``cell_clip``, ``input_forget`` (CIFG), activations other than
        (sigmoid, tanh, tanh), a reverse-only layer (ONNX direction="reverse", Keras
        go_backwards), a bidirectional merge other than concat, layers of different
        sizes or directions, and a quantized model without ``dequantize=True``.
    """
    from ._export import check, float_weights, model_of

    model = model_of(model)
    check(model, "torch.nn.LSTM", supports={"projection"}, uniform=True,
          dequantize=dequantize)
    dtype = np.float32 if model.config.quantization else model.dtype
    sd = {}
    for k, layer in enumerate(float_weights(model)):
        for d, w in enumerate(layer):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            b = np.array(w["b"], dtype=dtype)
            sd["weight_ih" + sfx] = np.array(w["w_ih"], dtype=dtype)
            sd["weight_hh" + sfx] = np.array(w["w_hh"], dtype=dtype)
            sd["bias_ih" + sfx] = b
            sd["bias_hh" + sfx] = np.zeros_like(b)
            if "w_hr" in w:
                sd["weight_hr" + sfx] = np.array(w["w_hr"], dtype=dtype)
    return sd
