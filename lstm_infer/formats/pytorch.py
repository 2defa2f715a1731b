"""PyTorch adapter: nn.LSTM / nn.LSTMCell modules and their state dicts.

torch is imported only when the caller hands us torch objects. Key names
(`weight_ih_l{k}[_reverse]`, ...) follow torch; gate order is already
i, f, g, o. A state dict of a larger model is searched for LSTM keys under
`prefix`.
"""
from __future__ import annotations

import re

import numpy as np

from ..model import LSTM, _to_array as _to_numpy

_LSTM_KEY = re.compile(r"^(?P<prefix>.*?)weight_ih_l(?P<layer>\d+)(?P<rev>_reverse)?$")
_CELL_KEY = re.compile(r"^(?P<prefix>.*?)weight_ih$")


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


def from_state_dict(sd: dict, prefix=None, *, batch_first=False, dtype=None) -> LSTM:
    """Build an LSTM from a torch-style state dict (tensors or numpy arrays)."""
    keys = list(sd)
    lstm_p, cell_p = _find_prefixes(keys)
    if prefix is None:
        found = sorted(lstm_p | cell_p)
        if len(found) != 1:
            raise ValueError(
                "expected exactly one LSTM in the state dict (keys like 'weight_ih_l0'); "
                f"found {len(found)}: {found or keys[:8]}; choose one with prefix=")
        prefix = found[0]
    elif prefix and not prefix.endswith("."):
        prefix += "."
    if prefix in lstm_p:
        layers = []
        k = 0
        while f"{prefix}weight_ih_l{k}" in sd:
            dirs = []
            for suffix in ("", "_reverse"):
                base = f"l{k}{suffix}"
                if f"{prefix}weight_ih_{base}" not in sd:
                    if suffix == "":
                        raise ValueError(f"missing {prefix}weight_ih_{base}")
                    continue
                dirs.append(_direction(sd, prefix, "_" + base))
            if k > 0 and len(dirs) != len(layers[0]):
                raise ValueError(f"layer {k} has {len(dirs)} directions, layer 0 has {len(layers[0])}")
            layers.append(dirs)
            k += 1
        stray = sorted({int(m.group("layer")) for m in map(_LSTM_KEY.match, keys)
                        if m and m.group("prefix") == prefix and int(m.group("layer")) >= k})
        if stray:
            found = ", ".join(f"{prefix}weight_ih_l{j}" for j in stray)
            raise ValueError(f"layers must be numbered 0, 1, 2, ... without gaps; found {found} "
                             f"but no {prefix}weight_ih_l{k}")
    elif prefix in cell_p:
        layers = [[_direction(sd, prefix, "")]]
    else:
        raise ValueError(f"no LSTM weights under prefix {prefix!r}; "
                         f"LSTMs found under {sorted(lstm_p | cell_p)}")
    return LSTM(layers, batch_first=batch_first, dtype=dtype)


def _direction(sd, prefix, suffix):
    def get(name, required=True):
        key = f"{prefix}{name}{suffix}"
        if key not in sd:
            if required:
                raise ValueError(f"missing {key}")
            return None
        return _to_numpy(sd[key])

    w = {"w_ih": get("weight_ih"), "w_hh": get("weight_hh")}
    b_ih, b_hh = get("bias_ih", False), get("bias_hh", False)
    if b_ih is not None or b_hh is not None:
        b = np.zeros(w["w_ih"].shape[0], dtype=np.float64)
        for part in (b_ih, b_hh):
            if part is not None:
                b = b + part.astype(np.float64)
        w["b"] = b  # fused in float64; the model casts once to its dtype
    w_hr = get("weight_hr", False)
    if w_hr is not None:
        w["w_hr"] = w_hr
    return w


def from_torch(obj, prefix=None, *, dtype=None) -> LSTM:
    """Convert a ``torch.nn.LSTM`` / ``torch.nn.LSTMCell`` module or a state dict.

    Parameters
    ----------
    obj : nn.LSTM, nn.LSTMCell, or a mapping of parameter names to tensors/arrays.
    prefix : str, optional
        Which LSTM of a larger state dict (e.g. ``"encoder.rnn."``); found
        automatically when there is exactly one.
    dtype : "float32" / "float64", optional; default follows the weights.
    """
    try:
        import torch.nn as nn
    except ImportError:
        nn = None
    if nn is not None and isinstance(obj, nn.Module):
        if isinstance(obj, nn.LSTM):
            # dropout between layers only acts in training mode; inference ignores it
            sd = obj.state_dict()
            m = from_state_dict(sd, "", batch_first=obj.batch_first, dtype=dtype)
            if m.config.num_layers != obj.num_layers:
                raise ValueError(f"expected {obj.num_layers} layers in the module; "
                                 f"found {m.config.num_layers}")
            return m
        if isinstance(obj, nn.LSTMCell):
            return from_state_dict(obj.state_dict(), "", dtype=dtype)
        if isinstance(obj, (nn.RNNBase, nn.RNNCellBase)):
            raise TypeError(f"from_torch() converts LSTMs; got a {type(obj).__name__}")
        sd = obj.state_dict()
        return from_state_dict(sd, prefix, dtype=dtype)
    if isinstance(obj, dict) or hasattr(obj, "keys"):
        return from_state_dict(dict(obj), prefix, dtype=dtype)
    if isinstance(obj, (str, bytes)) or hasattr(obj, "__fspath__"):
        raise TypeError("from_torch() takes an nn.LSTM / nn.LSTMCell or a state dict here; "
                        "reading .pt/.pth files needs the file loaders (li.load), "
                        "not available in this version")
    raise TypeError(f"from_torch() expects an nn.LSTM, nn.LSTMCell or a state dict; "
                    f"got {type(obj).__name__}")
