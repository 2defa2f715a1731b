"""Keras adapter: LSTM and Bidirectional(LSTM) stacks from Keras models and files.

Sources
-------
* a ``keras.Model`` object (Keras 3, or tf.keras 2): read through
  ``get_config()`` / ``get_weights()``;
* a Keras 3 ``.keras`` archive: a zip of ``config.json``, ``metadata.json``
  and ``model.weights.h5`` (variables at ``layers/<snake_case class name,
  deduplicated>/cell/vars/{0,1,2}``; Bidirectional under ``forward_layer`` /
  ``backward_layer``);
* a legacy ``.h5`` file (Keras 2 / tf.keras ``model.save("m.h5")``, also
  written by Keras 3): root attribute ``model_config`` (JSON), group
  ``model_weights`` with attribute ``layer_names`` and one group per layer
  whose attribute ``weight_names`` lists its datasets in order
  (Bidirectional: forward weights, then backward).

Files are read with ``h5py`` + ``json`` + ``zipfile`` only: Keras is not
needed to load a file. Weights-only files (``save_weights``) carry no
configuration and are refused.

Which layers
------------
``layer=None`` takes *the* LSTM stack of the model: the maximal chain of
LSTM / Bidirectional(LSTM) layers in which each layer's input is the previous
one's output, possibly through layers that are the identity at inference
(Dropout, SpatialDropout1D, GaussianNoise, GaussianDropout, AlphaDropout,
ActivityRegularization). Sequential models chain in list order; functional
models follow each layer's first input tensor. A model with no LSTM, or with
several separate stacks (e.g. an encoder and a decoder), raises and names
them; pick one with ``layer="name"`` (a single LSTM / Bidirectional layer) or
``layer=["a", "b"]`` (consecutive layers, in order). Every other layer
(Embedding, Dense, Masking, ...) is ignored by the conversion and listed by
``keras_layers_summary``.

Conversion
----------
Keras gate order i, f, c, o is the canonical i, f, g, o; kernels are
transposed ((I, 4H) -> (4H, I)); one bias (zeros with ``use_bias=False``).
The result is ``batch_first=True`` (``time_major=True`` tf.keras layers give
``batch_first=False``). Per layer: ``activations`` = (recurrent_activation,
activation, activation), one triple per direction; ``go_backwards`` ->
direction "reverse" with the outputs returned in processing order (reversed
in time), as Keras does; Bidirectional ``merge_mode`` concat / sum / mul /
ave -> ``merge``. ``merge_mode=None`` (Keras returns the two directions as a
list) is accepted for the last layer only and becomes "concat": Keras'
``[forward, backward]`` are ``out[..., :H]`` and ``out[..., H:]``.
``hard_sigmoid`` is ``clip(0.2 x + 0.5, 0, 1)`` in files written by Keras
<= 2 (tf.keras) and ``relu6(x + 3) / 6`` (slope 1/6) in Keras 3, decided by
the ``keras_version`` the file records (for a ``keras.Model``, the version of
the Keras that runs it). Supported activations: sigmoid, tanh, hard_sigmoid,
relu, linear; anything else is refused. Dropout, recurrent_dropout,
unit_forget_bias (an initializer), unroll, implementation, use_cudnn do not
change inference. ``stateful`` models are converted as stateless ones (zero
initial state; use ``model.stream()`` to carry state).

What Keras returns, in terms of ``out, (h_n, c_n) = m(x)``
---------------------------------------------------------
* ``return_sequences=True``: ``out``.
* ``return_sequences=False``: the last step of the *processing* order, i.e.
  for a unidirectional last layer ``h_n[-1]`` (without ``lengths`` also
  ``out[:, -1]``, go_backwards included); for a Bidirectional last layer
  ``merge(h_n[-2], h_n[-1])`` (forward state after the last step, backward
  state after the first step) — *not* ``out[:, -1]``, whose backward half has
  seen one step only. For a stack whose layers differ in size, ``h_n`` is a
  list; use ``h_n[-1][0]`` / ``h_n[-1][1]``.

Masking
-------
Keras (``Masking(mask_value)`` or ``Embedding(mask_zero=True)``) skips masked
steps: at a masked step the state (h, c) is carried unchanged. Our model has
no mask; a post-padded batch is the same computation with ``lengths``::

    lengths = lengths_from_mask(x, mask_value)   # x: the Masking layer's input (B, T, F)
    lengths = lengths_from_mask(tokens, 0)       # or Embedding(mask_zero=True) ids (B, T)
    out, (h_n, c_n) = m(x_lstm, lengths=lengths) # x_lstm: the first LSTM's input

``lengths_from_mask`` refuses masks that are not post-padding (a masked step
before a valid one), which lengths cannot express. With post-padded input and
sequence length n, verified against Keras 3:

* the final state (``h_n``, ``c_n``, hence every ``return_sequences=False``
  output above) is identical: the state after step n - 1 (the initial state
  if n = 0); go_backwards / backward directions read steps n-1, ..., 0, as
  Keras does (it processes the padding first, which changes nothing);
* ``out[:, t]`` for t < n is identical for forward layers and Bidirectional
  layers;
* at padded steps t >= n, ``out`` is 0. Keras gives 0 for Bidirectional with
  ``return_sequences=True`` (Keras forces ``zero_output_for_mask`` there) and
  for ``zero_output_for_mask=True``, but an LSTM with the default
  ``zero_output_for_mask=False`` *repeats its last valid output*
  ``out[:, n-1]`` (0 if n = 0);
* a go_backwards LSTM: Keras' sequence is ours shifted right by T - n
  (``np.roll(out[b], T - n, axis=0)``: zeros first, then the n outputs in
  processing order).

Intermediate layers are masked by the same lengths, as in Keras, so stacks
agree on valid steps. One Keras quirk is not reproduced: after a
go_backwards layer *inside* a masked stack, Keras applies the original
(unreversed) mask to the time-reversed, right-aligned sequence, so the next
layer reads padding and misses valid outputs; we treat the next layer's
input as valid on its first n steps (equal results only for n = T).
"""
from __future__ import annotations

import io
import json
import os
import re
import sys
import zipfile
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .errors import FormatError
from ..model import LSTM
from .gate_orders import to_canonical

__all__ = ["from_keras", "is_keras_file", "keras_layers_summary", "lengths_from_mask",
           "KerasFileError"]

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"
_ARCHIVE_MEMBERS = ("config.json", "metadata.json", "model.weights.h5")
_WEIGHTS_MEMBER = "model.weights.h5"

# Layers that are the identity at inference: an LSTM stack continues through them.
_IDENTITY_AT_INFERENCE = frozenset({
    "Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
    "ActivityRegularization"})
_ACTIVATIONS = ("sigmoid", "tanh", "hard_sigmoid", "relu", "linear")
_HARD_SIGMOID = {2: ("hard_sigmoid", 0.2, 0.5),       # Keras <= 2: clip(0.2 x + 0.5, 0, 1)
                 3: ("hard_sigmoid", 1.0 / 6.0, 0.5)}  # Keras 3: relu6(x + 3) / 6


class KerasFileError(FormatError):
    """A Keras file that cannot be read: corrupted, truncated, or inconsistent."""


# ============================================================================ records

@dataclass
class _Layer:
    """One entry of a model's config: what the selection and conversion need."""

    name: str
    class_name: str
    config: dict
    # main input of each call: (layer name, node index, tensor index); None for inputs
    inputs: List[Optional[tuple]] = field(default_factory=list)
    # every layer whose output is a positional input of some call (for the summary)
    sources: List[str] = field(default_factory=list)
    input_dim: Optional[int] = None

    @property
    def inner(self) -> Optional[dict]:
        """Bidirectional: the wrapped layer's {class_name, config}."""
        if self.class_name == "Bidirectional":
            return self.config.get("layer")
        return None

    @property
    def is_lstm(self) -> bool:
        if self.class_name == "LSTM":
            return True
        inner = self.inner
        return isinstance(inner, dict) and inner.get("class_name") == "LSTM"

    @property
    def input_name(self) -> Optional[str]:
        """The producer of this layer's input if it is called exactly once on output 0."""
        if len(self.inputs) != 1 or self.inputs[0] is None:
            return None
        name, node, tensor = self.inputs[0]
        return name if tensor == 0 else None


@dataclass
class _Model:
    """A parsed model: layers in config order, weights on demand."""

    source: str                      # for messages
    class_name: str
    layers: List[_Layer]
    keras_version: Optional[str]
    # layer -> {"forward": [(name, array)], "backward": [...]} (backward: Bidirectional only)
    get_weights: Callable[[_Layer], Dict[str, list]]
    close: Callable[[], None] = lambda: None

    def layer(self, name) -> _Layer:
        for l in self.layers:
            if l.name == name:
                return l
        raise ValueError(f"{self.source}: no layer named {name!r}; layers: "
                         f"{[l.name for l in self.layers]}")


# ============================================================================ config parsing

def _parse_model_config(cfg, source: str) -> tuple:
    """(class_name, [_Layer]) from a model config dict (Keras 2 or 3 layout)."""
    if not isinstance(cfg, dict) or "class_name" not in cfg:
        raise KerasFileError(f"{source}: the model config is not a Keras model "
                             f"(no 'class_name'); got {str(cfg)[:80]!r}")
    cls = cfg["class_name"]
    body = cfg.get("config")
    if cls == "Sequential":
        # Keras 2.0 - 2.2 stored the layer list directly as the config
        items = body if isinstance(body, list) else (body or {}).get("layers")
        if not isinstance(items, list):
            raise KerasFileError(f"{source}: Sequential config without a 'layers' list")
        layers, prev = [], None
        for item in items:
            l = _layer_record(item, source)
            if l.class_name != "InputLayer":
                l.inputs = [(prev, 0, 0) if prev is not None else None]
                l.sources = [prev] if prev is not None else []
            layers.append(l)
            prev = l.name
        return cls, layers
    if isinstance(body, dict) and isinstance(body.get("layers"), list) and \
            any("inbound_nodes" in item for item in body["layers"] if isinstance(item, dict)):
        layers = []
        for item in body["layers"]:
            l = _layer_record(item, source)
            nodes = item.get("inbound_nodes") or []
            l.inputs = [_main_input(node) for node in nodes]
            for node in nodes:
                for src in _all_inputs(node):
                    if src not in l.sources:
                        l.sources.append(src)
            layers.append(l)
        return cls, layers
    # a lone layer saved as a "model" is not something Keras writes; anything else is
    # a subclassed model whose structure is not in the file
    raise KerasFileError(
        f"{source}: a {cls!r} model whose layers are not described in its config (a "
        f"subclassed model?); only Sequential and functional models can be converted: "
        f"rebuild it as one (or put its LSTM layers in one) and save that")


def _layer_record(item, source) -> _Layer:
    if not isinstance(item, dict) or "class_name" not in item:
        raise KerasFileError(f"{source}: a layer config without 'class_name': {str(item)[:80]!r}")
    cfg = item.get("config") if isinstance(item.get("config"), dict) else {}
    name = item.get("name") or cfg.get("name")
    if not isinstance(name, str):
        raise KerasFileError(f"{source}: a {item['class_name']} layer without a name")
    # the input feature size the config records (Keras 3 build_config, Keras 2
    # batch_input_shape), checked against the kernel
    shape = (item.get("build_config") or {}).get("input_shape") \
        if isinstance(item.get("build_config"), dict) else None
    shape = shape or cfg.get("batch_input_shape")
    dim = shape[-1] if isinstance(shape, list) and shape and isinstance(shape[-1], int) else None
    return _Layer(name, item["class_name"], cfg, input_dim=dim)


def _main_input(node) -> Optional[tuple]:
    """(layer, node index, tensor index) of the first input tensor of one call."""
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        args = node.get("args") or []
        hist = _first_history(args[0]) if args else None
        return tuple(hist[:3]) if hist else None
    if isinstance(node, list) and node:  # Keras 2: [[name, node, tensor, kwargs], ...]
        first = node[0]
        if isinstance(first, list) and len(first) >= 3 and isinstance(first[0], str):
            return (first[0], int(first[1]), int(first[2]))
    return None


def _all_inputs(node) -> List[str]:
    """Names of the layers whose outputs are positional inputs of one call."""
    if isinstance(node, dict):
        found: list = []
        _histories(node.get("args") or [], found)
        return [h[0] for h in found]
    if isinstance(node, list):
        return [e[0] for e in node if isinstance(e, list) and e and isinstance(e[0], str)]
    return []


def _histories(obj, found):
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            hist = (obj.get("config") or {}).get("keras_history")
            if isinstance(hist, list) and hist and isinstance(hist[0], str):
                found.append(hist)
            return
        for v in obj.values():
            _histories(v, found)
    elif isinstance(obj, list):
        for v in obj:
            _histories(v, found)


def _first_history(obj):
    """keras_history [name, node, tensor] of the first keras tensor in obj (depth first)."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            hist = (obj.get("config") or {}).get("keras_history")
            if isinstance(hist, list) and len(hist) >= 3:
                return hist
            return None
        for v in obj.values():
            h = _first_history(v)
            if h:
                return h
    elif isinstance(obj, list):
        for v in obj:
            h = _first_history(v)
            if h:
                return h
    return None


def _major(version) -> Optional[int]:
    if version is None:
        return None
    if isinstance(version, bytes):
        version = version.decode("utf8", "replace")
    m = re.match(r"\s*(\d+)", str(version))
    return int(m.group(1)) if m else None


# ============================================================================ sources

def _open(obj) -> _Model:
    if isinstance(obj, (str, os.PathLike)):
        return _open_path(os.fspath(obj))
    if _looks_like_keras_model(obj):
        return _from_object(obj)
    raise TypeError(f"expected a keras.Model or a path to a .keras / .h5 file; "
                    f"got {type(obj).__name__}")


def _looks_like_keras_model(obj) -> bool:
    return all(hasattr(obj, a) for a in ("get_config", "get_layer", "layers"))


def _open_path(path: str) -> _Model:
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(_ZIP_MAGIC) or head.startswith(b"PK"):
        return _open_archive(path)
    if head.startswith(_HDF5_MAGIC):
        return _open_h5(path)
    raise KerasFileError(f"{path}: neither a .keras archive (zip) nor an HDF5 .h5 file "
                         f"(starts with {head!r})")


def _h5py():
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is a dependency of the keras extra
        raise ImportError("reading Keras files needs h5py: pip install h5py") from None
    return h5py


# ---------------------------------------------------------------- .keras archive

def _open_archive(path: str) -> _Model:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            if "config.json" not in names:
                raise KerasFileError(f"{path}: a zip without config.json, not a .keras "
                                     f"archive; it holds {names[:5]}")
            cfg = json.loads(z.read("config.json"))
            meta = json.loads(z.read("metadata.json")) if "metadata.json" in names else {}
            if _WEIGHTS_MEMBER not in names:
                sharded = [n for n in names if "weights" in n]
                raise KerasFileError(
                    f"{path}: no {_WEIGHTS_MEMBER} in the archive"
                    + (f" (found {sharded}; sharded weights are not supported)" if sharded
                       else "; the file holds no weights"))
            blob = z.read(_WEIGHTS_MEMBER)
    except zipfile.BadZipFile as e:
        raise KerasFileError(f"{path}: not a readable .keras archive ({e}); truncated or "
                             f"corrupted?") from None
    except (zipfile.LargeZipFile, EOFError, OSError) as e:
        raise KerasFileError(f"{path}: cannot read the archive ({e}); truncated or "
                             f"corrupted?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise KerasFileError(f"{path}: config.json / metadata.json is not valid JSON ({e})") \
            from None
    cls, layers = _parse_model_config(cfg, path)
    version = meta.get("keras_version") if isinstance(meta, dict) else None
    h5py = _h5py()
    try:
        store = h5py.File(io.BytesIO(blob), "r")
    except OSError as e:
        raise KerasFileError(f"{path}: {_WEIGHTS_MEMBER} is not a readable HDF5 file ({e}); "
                             f"truncated or corrupted?") from None
    try:
        index = _V3Index(store, layers, path)
    except (OSError, RuntimeError, KeyError, UnicodeError) as e:
        store.close()
        raise KerasFileError(f"{path}: cannot read {_WEIGHTS_MEMBER} ({e}); truncated or "
                             f"corrupted?") from None
    except BaseException:
        store.close()
        raise
    return _Model(path, cls, layers, version, index.weights, store.close)


class _V3Index:
    """Finds a layer's variables in a Keras 3 model.weights.h5.

    Keras names a container's children by snake-cased class name, deduplicated
    in order (lstm, lstm_1, ...), and records the layer's own name in
    ``<group>/vars`` attribute ``name``; both are used (the name first)."""

    def __init__(self, store, layers, source):
        self.store, self.source = store, source
        self.container = None
        for key in ("layers", "_layer_checkpoint_dependencies"):  # the latter: older writers
            if key in store:
                self.container = store[key]
                break
        self.by_name, self.by_class = {}, {}
        if self.container is None:
            return
        for key in self.container:
            g = self.container[key]
            v = g.get("vars") if hasattr(g, "get") else None
            nm = v.attrs.get("name") if v is not None else None
            if isinstance(nm, bytes):
                nm = nm.decode("utf8", "replace")
            if isinstance(nm, str):
                self.by_name.setdefault(nm, key)
        used: Dict[str, int] = {}
        for l in layers:
            base = _snake_case(l.class_name)
            if base in used:
                used[base] += 1
                self.by_class[l.name] = f"{base}_{used[base]}"
            else:
                used[base] = 0
                self.by_class[l.name] = base

    def group(self, layer: _Layer):
        if self.container is None:
            raise KerasFileError(f"{self.source}: {_WEIGHTS_MEMBER} has no 'layers' group; "
                                 f"it holds {list(self.store)[:8]}")
        for key in (self.by_name.get(layer.name), self.by_class.get(layer.name), layer.name):
            if key is not None and key in self.container:
                return self.container[key]
        raise KerasFileError(f"{self.source}: no weights for layer {layer.name!r} in "
                             f"{_WEIGHTS_MEMBER} (groups: {list(self.container)[:12]})")

    def weights(self, layer: _Layer) -> Dict[str, list]:
        try:
            g = self.group(layer)
            if layer.class_name == "Bidirectional":
                return {"forward": self._cell_vars(g, "forward_layer", layer),
                        "backward": self._cell_vars(g, "backward_layer", layer)}
            return {"forward": self._cell_vars(g, None, layer)}
        except (OSError, RuntimeError, KeyError, UnicodeError) as e:
            raise KerasFileError(f"{self.source}: cannot read the weights of {layer.name!r} "
                                 f"({e}); truncated or corrupted?") from None

    def _cell_vars(self, g, sub, layer):
        where = f"layer {layer.name!r}" + (f" {sub}" if sub else "")
        if sub is not None:
            if sub not in g:
                raise KerasFileError(f"{self.source}: {where}: no {sub} group in "
                                     f"{_WEIGHTS_MEMBER}")
            g = g[sub]
        vars_ = g["cell"]["vars"] if "cell" in g and "vars" in g["cell"] else g.get("vars")
        if vars_ is None or not len(vars_):
            raise KerasFileError(f"{self.source}: {where}: no variables in {_WEIGHTS_MEMBER} "
                                 f"(expected cell/vars/0..2)")
        keys = sorted(vars_, key=lambda k: int(k) if k.isdigit() else 1 << 30)
        return [(f"{vars_.name}/{k}", _read(vars_[k], self.source)) for k in keys]


def _snake_case(name: str) -> str:
    """keras.src.utils.naming.to_snake_case."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _read(ds, source):
    try:
        a = np.asarray(ds[()])
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        raise KerasFileError(f"{source}: cannot read {getattr(ds, 'name', ds)} ({e}); "
                             f"truncated or corrupted?") from None
    if a.dtype.kind != "f":
        raise KerasFileError(f"{source}: {ds.name} has dtype {a.dtype}; expected floating point")
    return a


# ---------------------------------------------------------------- legacy .h5

def _attr_str(v):
    if v is None:
        return None
    if isinstance(v, bytes):
        return v.decode("utf8")
    if isinstance(v, np.ndarray) and v.shape == ():
        return _attr_str(v.item())
    return str(v)


def _attr_list(group, name) -> List[str]:
    """load_attributes_from_hdf5_group: a list attribute, possibly chunked (name0, name1, ...)."""
    if name in group.attrs:
        vals = list(np.atleast_1d(group.attrs[name]))
    else:
        vals, k = [], 0
        while f"{name}{k}" in group.attrs:
            vals.extend(np.atleast_1d(group.attrs[f"{name}{k}"]))
            k += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in vals
            if not (isinstance(v, float) and np.isnan(v))]


def _open_h5(path: str) -> _Model:
    h5py = _h5py()
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise KerasFileError(f"{path}: not a readable HDF5 file ({e}); truncated or "
                             f"corrupted?") from None
    try:
        raw = f.attrs.get("model_config")
        if raw is None:
            what = ("a Keras 3 weights-only file (.weights.h5)" if "layers" in f and "vars" in f
                    else "a weights-only file (save_weights)" if "layer_names" in f.attrs
                    else "not a Keras model file")
            raise KerasFileError(f"{path}: no model_config attribute: {what}. The layer "
                                 f"configuration is needed; save the whole model "
                                 f"(model.save) as .keras or .h5")
        try:
            cfg = json.loads(_attr_str(raw))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise KerasFileError(f"{path}: model_config is not valid JSON ({e})") from None
        cls, layers = _parse_model_config(cfg, path)
        if "model_weights" not in f:
            raise KerasFileError(f"{path}: no 'model_weights' group; the file holds no weights")
        mw = f["model_weights"]
        version = _attr_str(mw.attrs.get("keras_version", f.attrs.get("keras_version")))
        if version is None:
            version = "1"  # what Keras' own loader assumes for a file without a version
        if _major(version) == 1:
            raise KerasFileError(f"{path}: written by Keras 1 (keras_version {version!r}); "
                                 f"its LSTM format is not supported. Load and re-save it "
                                 f"with Keras 2")
    except (OSError, RuntimeError, KeyError, UnicodeError) as e:
        f.close()
        raise KerasFileError(f"{path}: cannot read the HDF5 file ({e}); truncated or "
                             f"corrupted?") from None
    except BaseException:
        f.close()
        raise

    def weights(layer):
        try:
            return _legacy_layer_weights(mw, layer, path)
        except (OSError, RuntimeError, KeyError, UnicodeError) as e:
            raise KerasFileError(f"{path}: cannot read the weights of {layer.name!r} ({e}); "
                                 f"truncated or corrupted?") from None

    return _Model(path, cls, layers, version, weights, f.close)


def _legacy_layer_weights(mw, layer: _Layer, path) -> Dict[str, list]:
    if layer.name not in mw:
        raise KerasFileError(f"{path}: no weights for layer {layer.name!r} in model_weights "
                             f"(groups: {list(mw)[:12]})")
    g = mw[layer.name]
    names = _attr_list(g, "weight_names")
    if not names:
        raise KerasFileError(f"{path}: layer {layer.name!r} has no weights in the file "
                             f"(empty weight_names)")
    arrays = []
    for n in names:
        if n not in g:
            raise KerasFileError(f"{path}: layer {layer.name!r}: weight {n!r} listed in "
                                 f"weight_names is missing")
        arrays.append((n, _read(g[n], path)))
    if layer.class_name == "Bidirectional":
        if len(arrays) % 2:
            raise KerasFileError(f"{path}: Bidirectional layer {layer.name!r} has an odd "
                                 f"number of weights ({len(arrays)}): {names}")
        half = len(arrays) // 2  # as Keras loads them: forward first, then backward
        return {"forward": arrays[:half], "backward": arrays[half:]}
    return {"forward": arrays}


# ---------------------------------------------------------------- keras.Model objects

def _from_object(model) -> _Model:
    kind = type(model).__name__
    try:
        body = model.get_config()
    except NotImplementedError:
        body = None
    if isinstance(body, dict):  # as in a file: JSON types only (tuples -> lists)
        body = json.loads(json.dumps(body, default=repr))
    if not isinstance(body, dict) or not isinstance(body.get("layers"), list):
        raise KerasFileError(f"a subclassed {kind} model: its layer graph is not in its "
                             f"config; only Sequential and functional models can be converted")
    functional = any(isinstance(l, dict) and "inbound_nodes" in l for l in body["layers"])
    cls, layers = _parse_model_config(
        {"class_name": "Functional" if functional else "Sequential", "config": body},
        f"<{kind} {getattr(model, 'name', '')!r}>")
    root = type(model).__module__.split(".")[0]
    version = getattr(sys.modules.get(root), "__version__", None)

    def weights(layer):
        obj = model.get_layer(layer.name)
        if layer.class_name == "Bidirectional":
            return {"forward": _named(obj.forward_layer), "backward": _named(obj.backward_layer)}
        return {"forward": _named(obj)}

    return _Model(f"<keras model {getattr(model, 'name', '')!r}>", cls, layers, version, weights)


def _named(layer):
    ws = layer.get_weights()
    names = [getattr(v, "path", None) or getattr(v, "name", f"{i}")
             for i, v in enumerate(layer.weights)]
    if len(names) != len(ws):
        names = [str(i) for i in range(len(ws))]
    return list(zip(names, [np.asarray(w) for w in ws]))


# ============================================================================ selection

def _producer(model: _Model, layer: _Layer) -> Optional[_Layer]:
    """The layer whose output feeds `layer`, looking through identity-at-inference layers."""
    seen = set()
    name = layer.input_name
    while name is not None and name not in seen:
        seen.add(name)
        try:
            p = model.layer(name)
        except ValueError:
            return None
        if p.class_name not in _IDENTITY_AT_INFERENCE:
            return p
        name = p.input_name
    return None


def _chains(model: _Model) -> List[List[_Layer]]:
    """Maximal stacks of LSTM layers, each fed by the previous one's output sequence."""
    lstms = [l for l in model.layers if l.is_lstm]
    nexts: Dict[str, List[_Layer]] = {l.name: [] for l in lstms}
    prev: Dict[str, Optional[str]] = {}
    for l in lstms:
        p = _producer(model, l)
        prev[l.name] = p.name if (p is not None and p.is_lstm) else None
        if prev[l.name]:
            nexts[prev[l.name]].append(l)

    def linked(a: _Layer, b: _Layer) -> bool:
        # a is called once, feeds only b among the LSTMs, and passes it a sequence
        return (prev.get(b.name) == a.name and len(nexts[a.name]) == 1 and len(a.inputs) <= 1
                and _returns_sequences(a) and _merge_mode(a) is not None)

    chains = []
    for l in lstms:
        p = prev[l.name]
        if p is not None and linked(model.layer(p), l):
            continue  # not the start of a chain
        chain = [l]
        while len(nexts[chain[-1].name]) == 1 and linked(chain[-1], nexts[chain[-1].name][0]):
            chain.append(nexts[chain[-1].name][0])
        chains.append(chain)
    return chains


def _returns_sequences(l: _Layer) -> bool:
    cfg = (l.inner or {}).get("config") or {} if l.class_name == "Bidirectional" else l.config
    return bool(cfg.get("return_sequences", False))


def _merge_mode(l: _Layer):
    if l.class_name != "Bidirectional":
        return "concat"
    return l.config.get("merge_mode", "concat")


def _select(model: _Model, layer) -> List[_Layer]:
    if layer is None:
        chains = _chains(model)
        if not chains:
            raise ValueError(f"{model.source}: no LSTM or Bidirectional(LSTM) layer; layers: "
                             f"{[(l.name, l.class_name) for l in model.layers]}")
        if len(chains) > 1:
            raise ValueError(f"{model.source}: {len(chains)} separate LSTM stacks "
                             f"{[[l.name for l in c] for c in chains]}; choose one with "
                             f"layer='name' (one layer) or layer=[names] (a stack)")
        return chains[0]
    names = [layer] if isinstance(layer, str) else layer
    if not isinstance(names, (list, tuple)) or not names or \
            not all(isinstance(n, str) for n in names):
        raise TypeError(f"layer must be a layer name or a list of names; got {layer!r}")
    chosen = []
    for n in names:
        l = model.layer(n)
        if not l.is_lstm:
            what = l.class_name + (f"({l.inner.get('class_name')})" if l.inner else "")
            raise ValueError(f"{model.source}: layer {n!r} is a {what}, not an LSTM or "
                             f"Bidirectional(LSTM); LSTM layers: "
                             f"{[x.name for x in model.layers if x.is_lstm]}")
        chosen.append(l)
    for a, b in zip(chosen, chosen[1:]):
        p = _producer(model, b)
        if p is None or p.name != a.name:
            raise ValueError(f"{model.source}: layers {a.name!r} and {b.name!r} are not "
                             f"consecutive: {b.name!r} reads "
                             f"{p.name if p is not None else 'no single layer'!r}")
        if not _returns_sequences(a):
            raise ValueError(f"{model.source}: layer {a.name!r} has return_sequences=False; "
                             f"it cannot feed {b.name!r}")
    return chosen


# ============================================================================ conversion

def _activation(spec, what, version_major, where):
    """A Keras activation (name or serialized function) -> an lstm_infer activation."""
    name = spec
    if spec is None:
        name = "linear"
    elif isinstance(spec, dict):  # serialized function: {"module": "keras.activations", ...}
        cfg = spec.get("config")
        name = cfg if isinstance(cfg, str) else spec.get("class_name")
        module = spec.get("module") or ""
        if not module.startswith("keras") or spec.get("registered_name") not in (None, "function"):
            raise ValueError(f"{where}: custom {what} {name!r} (module {module!r}, registered "
                             f"as {spec.get('registered_name')!r}) is not supported; "
                             f"supported: {_ACTIVATIONS}")
    if not isinstance(name, str):
        raise ValueError(f"{where}: unsupported {what} {spec!r}; supported: {_ACTIVATIONS}")
    name = name.lower()
    if name not in _ACTIVATIONS:
        raise ValueError(f"{where}: unsupported {what} {name!r}; supported: {_ACTIVATIONS}")
    if name == "hard_sigmoid":
        if version_major is None:
            raise ValueError(f"{where}: {what} hard_sigmoid, but the file does not record "
                             f"its keras_version, which decides its slope (0.2 in Keras 2, "
                             f"1/6 in Keras 3)")
        return _HARD_SIGMOID[2 if version_major < 3 else 3]
    return name


def _direction_weights(named, cfg, where, in_size):
    """[(name, array)] of one LSTM -> a canonical direction dict (and its units)."""
    units = cfg.get("units")
    if isinstance(units, bool) or not isinstance(units, int) or units < 1:
        raise ValueError(f"{where}: 'units' must be a positive integer; got {units!r}")
    use_bias = bool(cfg.get("use_bias", True))
    want = 3 if use_bias else 2
    base = [re.sub(r":\d+$", "", n).rsplit("/", 1)[-1] for n, _ in named]
    if len(set(base)) == len(base) and set(base) <= {"kernel", "recurrent_kernel", "bias"}:
        role = {b: a for b, (_, a) in zip(base, named)}  # tf.keras / legacy names
    else:  # Keras 3 vars/0, 1, 2: creation order
        role = dict(zip(("kernel", "recurrent_kernel", "bias"), (a for _, a in named)))
    if len(named) != want or len(role) != want:
        raise KerasFileError(f"{where}: expected {want} weights (kernel, recurrent_kernel"
                             f"{', bias' if use_bias else ''}; use_bias={use_bias}); found "
                             f"{len(named)}: {[n for n, _ in named]}")
    H = units
    k, rk = role.get("kernel"), role.get("recurrent_kernel")
    if k is None or rk is None or (use_bias and role.get("bias") is None):
        raise KerasFileError(f"{where}: weights {[n for n, _ in named]} are not "
                             f"kernel, recurrent_kernel{', bias' if use_bias else ''}")
    I = in_size if in_size is not None else (k.shape[0] if k.ndim == 2 else -1)
    if k.shape != (I, 4 * H):
        raise KerasFileError(f"{where}: kernel must have shape (input, 4*units) = "
                             f"({I}, {4 * H}); got {k.shape}")
    if rk.shape != (H, 4 * H):
        raise KerasFileError(f"{where}: recurrent_kernel must have shape (units, 4*units) = "
                             f"({H}, {4 * H}); got {rk.shape}")
    d = {"w_ih": to_canonical(k.T, "keras"), "w_hh": to_canonical(rk.T, "keras")}
    if use_bias:
        b = role["bias"]
        if b.shape != (4 * H,):
            raise KerasFileError(f"{where}: bias must have shape (4*units,) = ({4 * H},); "
                                 f"got {b.shape}")
        d["b"] = to_canonical(b, "keras")
    return d, H


def _convert(model: _Model, chain: Sequence[_Layer]) -> LSTM:
    vmajor = _major(model.keras_version)
    layers, options, time_major = [], [], set()
    in_size = None
    for pos, l in enumerate(chain):
        where = f"{model.source}: layer {l.name!r}"
        w = model.get_weights(l)
        if in_size is None:
            in_size = l.input_dim
        if l.class_name == "LSTM":
            cfg = l.config
            _refuse_cell_options(cfg, where)
            d, H = _direction_weights(w["forward"], cfg, where, in_size)
            trip = _triple(cfg, vmajor, where)
            opt = {"activations": trip}
            if cfg.get("go_backwards"):
                opt.update(direction="reverse", reverse_output=True)
            layers.append([d])
            in_size = H
        else:  # Bidirectional(LSTM)
            fcfg = (l.inner or {}).get("config") or {}
            back = l.config.get("backward_layer")
            if isinstance(back, dict):
                if back.get("class_name") != "LSTM":
                    raise ValueError(f"{where}: backward layer is a {back.get('class_name')}, "
                                     f"not an LSTM")
                bcfg = back.get("config") or {}
            else:  # Keras 2 stores it only when given: then it is a copy of the forward one
                bcfg = dict(fcfg, go_backwards=not fcfg.get("go_backwards", False))
            if fcfg.get("go_backwards") or not bcfg.get("go_backwards", False):
                raise ValueError(f"{where}: Bidirectional around a go_backwards LSTM (forward "
                                 f"go_backwards={bool(fcfg.get('go_backwards'))}) is not "
                                 f"supported")
            for c, side in ((fcfg, "forward"), (bcfg, "backward")):
                _refuse_cell_options(c, f"{where} {side}")
            merge = l.config.get("merge_mode", "concat")
            if merge is None:
                if pos != len(chain) - 1:
                    raise ValueError(f"{where}: merge_mode=None (a list of two outputs) can "
                                     f"only be the last layer of the stack")
                merge = "concat"
            if merge not in ("concat", "sum", "mul", "ave"):
                raise ValueError(f"{where}: unsupported merge_mode {merge!r}; supported: "
                                 f"concat, sum, mul, ave, None")
            df, Hf = _direction_weights(w["forward"], fcfg, f"{where} forward", in_size)
            db, Hb = _direction_weights(w["backward"], bcfg, f"{where} backward", in_size)
            if Hf != Hb:
                raise ValueError(f"{where}: forward and backward units differ ({Hf} vs {Hb}); "
                                 f"not supported")
            opt = {"merge": merge,
                   "activations": [_triple(fcfg, vmajor, f"{where} forward"),
                                   _triple(bcfg, vmajor, f"{where} backward")]}
            layers.append([df, db])
            in_size = 2 * Hf if merge == "concat" else Hf
            cfg = fcfg
        time_major.add(bool(cfg.get("time_major", False)))
        options.append(opt)
    if len(time_major) > 1:
        raise ValueError(f"{model.source}: layers {[l.name for l in chain]} mix time_major "
                         f"True and False")
    return LSTM(layers, batch_first=not time_major.pop(), layer_options=options)


def _triple(cfg, vmajor, where):
    rec = _activation(cfg.get("recurrent_activation", "sigmoid"), "recurrent_activation",
                      vmajor, where)
    act = _activation(cfg.get("activation", "tanh"), "activation", vmajor, where)
    return [rec, act, act]


def _refuse_cell_options(cfg, where):
    # options of tf.keras' experimental LSTM variants that change the maths
    for opt in ("peephole", "use_peepholes", "proj_size", "num_proj"):
        if cfg.get(opt):
            raise ValueError(f"{where}: option {opt}={cfg[opt]!r} is not supported")


# ============================================================================ public API

def from_keras(obj, layer=None) -> LSTM:
    """Convert a Keras LSTM stack to an lstm_infer model (see the module docstring).

    Parameters
    ----------
    obj : keras.Model, or path (str / os.PathLike) to a ``.keras`` archive or legacy ``.h5``
    layer : str or list of str, optional
        One LSTM / Bidirectional(LSTM) layer by name, or a list of consecutive
        ones. Default: the model's only LSTM stack.

    Returns
    -------
    LSTM with ``batch_first=True``: ``x`` is ``(B, T, I)`` where ``I`` is the
    first selected layer's input size (e.g. the Embedding's output dimension).
    ``out`` is ``(B, T, F)``, the full sequence even when the Keras layer has
    ``return_sequences=False`` (then Keras returns ``h_n[-1]``, or
    ``merge(h_n[-2], h_n[-1])`` for Bidirectional).

    Raises
    ------
    FileNotFoundError, KerasFileError (a ValueError) for unreadable, truncated or
    inconsistent files, ValueError for unsupported layers/options, TypeError for
    other objects.
    """
    model = _open(obj)
    try:
        return _convert(model, _select(model, layer))
    finally:
        model.close()


def keras_layers_summary(obj) -> List[dict]:
    """Every layer of a Keras model file (or keras.Model), in config order.

    Each entry: ``name``, ``class_name``, ``lstm`` (True for layers from_keras
    converts), ``inputs`` (names of the layers feeding it), and the settings
    that matter for inference where they apply: ``units``,
    ``return_sequences``, ``go_backwards``, ``activation``,
    ``recurrent_activation``, ``use_bias``, ``merge_mode``, ``inner``
    (Bidirectional's wrapped class), ``mask_value`` (Masking),
    ``input_dim`` / ``output_dim`` / ``mask_zero`` (Embedding). Reads only
    the configuration; no weights.
    """
    if isinstance(obj, (str, os.PathLike)):
        model = _summary_model(os.fspath(obj))
    else:
        model = _open(obj)
    out = []
    keys = ("units", "return_sequences", "go_backwards", "activation", "recurrent_activation",
            "use_bias", "merge_mode", "mask_value", "input_dim", "output_dim", "mask_zero",
            "rate")
    for l in model.layers:
        e = {"name": l.name, "class_name": l.class_name, "lstm": l.is_lstm,
             "inputs": list(l.sources)}
        cfg = l.config
        if l.inner:
            e["inner"] = l.inner.get("class_name")
            cfg = dict(l.inner.get("config") or {}, merge_mode=l.config.get("merge_mode"))
        for k in keys:
            if k in cfg:
                v = cfg[k]
                e[k] = v if isinstance(v, (str, int, float, bool, type(None))) else str(v)
        out.append(e)
    return out


def _summary_model(path) -> _Model:
    """Config only: no weights are read."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(_HDF5_MAGIC):
        h5py = _h5py()
        try:
            with h5py.File(path, "r") as f:
                raw = f.attrs.get("model_config")
                if raw is None:
                    raise KerasFileError(f"{path}: no model_config attribute (a weights-only "
                                         f"file?)")
                cfg = json.loads(_attr_str(raw))
                version = _attr_str(f.attrs.get("keras_version"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise KerasFileError(f"{path}: not a readable HDF5 file ({e})") from None
    else:
        try:
            with zipfile.ZipFile(path) as z:
                cfg = json.loads(z.read("config.json"))
                names = z.namelist()
                meta = json.loads(z.read("metadata.json")) if "metadata.json" in names else {}
                version = meta.get("keras_version")
        except (zipfile.BadZipFile, KeyError, OSError, EOFError, UnicodeDecodeError,
                json.JSONDecodeError) as e:
            raise KerasFileError(f"{path}: not a readable .keras archive ({e})") from None
    cls, layers = _parse_model_config(cfg, path)
    return _Model(path, cls, layers, version, lambda l: {})


def is_keras_file(path) -> bool:
    """Whether `path` looks like a Keras model file (a cheap content sniff; never raises).

    True for a zip whose first member is one of a .keras archive's
    (metadata.json, config.json, model.weights.h5) — so a truncated archive
    still goes to the Keras loader, which reports it — and for an HDF5 file
    with Keras attributes (model_config, layer_names, keras_version) or
    groups (model_weights; layers + vars), or that h5py cannot open (HDF5
    being read only by this loader, it then reports the damage).
    """
    try:
        p = os.fspath(path)
        with open(p, "rb") as f:
            head = f.read(64)
        if head.startswith(_ZIP_MAGIC) and len(head) >= 30:
            n = int.from_bytes(head[26:28], "little")
            first = head[30:30 + n]
            if len(first) < n:
                with open(p, "rb") as f:
                    f.seek(30)
                    first = f.read(n)
            return first.decode("utf8", "replace") in _ARCHIVE_MEMBERS
        if head.startswith(_HDF5_MAGIC):
            h5py = _h5py()
            try:
                with h5py.File(p, "r") as f:
                    return (any(a in f.attrs for a in ("model_config", "layer_names",
                                                       "keras_version"))
                            or "model_weights" in f or ("layers" in f and "vars" in f))
            except OSError:
                return True
    except Exception:  # noqa: BLE001 - a sniffer answers, it does not fail
        return False
    return False


def lengths_from_mask(x, mask_value=0.0) -> np.ndarray:
    """Sequence lengths (B,) from a Keras mask, for ``m(x, lengths=...)``.

    Parameters
    ----------
    x : array_like, (B, T, F) — the input of a ``Masking(mask_value)`` layer: step
        (b, t) is masked when every feature equals ``mask_value`` — or (B, T) token ids
        of an ``Embedding(mask_zero=True)`` (call with ``mask_value=0``).
    mask_value : float

    Returns
    -------
    lengths : int64 array (B,): the number of leading unmasked steps.

    Raises ValueError when a masked step comes before an unmasked one in a
    sequence (pre-padding or a gap): Keras skips such steps, which lengths
    cannot express.
    """
    a = np.asarray(x)
    if a.ndim == 3:
        keep = np.any(a != mask_value, axis=-1)
    elif a.ndim == 2:
        keep = a != mask_value
    else:
        raise ValueError(f"x must be (B, T, F) (Masking input) or (B, T) (token ids); got "
                         f"shape {a.shape}")
    B, T = keep.shape
    lengths = keep.sum(axis=1).astype(np.int64)
    prefix = np.arange(T)[None, :] < lengths[:, None]
    bad = np.nonzero(np.any(keep != prefix, axis=1))[0]
    if bad.size:
        b = int(bad[0])
        t = int(np.argmin(keep[b]))
        raise ValueError(
            f"the mask is not post-padding: sequence {b} has a masked step at t={t} before "
            f"an unmasked one ({int(bad.size)} such sequence(s)); lengths can only express "
            f"padding at the end. Move the padding to the end of each sequence")
    return lengths
