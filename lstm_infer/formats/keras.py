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

import json
import os
import re
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .._build import CanonicalModel, build
from .._validate import check_shape
from ._export import float_weights, model_of
from .errors import MAX_METADATA_BYTES, ZIP_ERRORS, FormatError, check_file, guard, read_member
from .gate_orders import to_canonical

__all__ = ["from_keras", "read_keras", "to_keras_weights", "sniff", "is_keras_file",
           "keras_layers_summary", "lengths_from_mask", "KerasFileError"]

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"
_ARCHIVE_MEMBERS = ("config.json", "metadata.json", "model.weights.h5")
_WEIGHTS_MEMBER = "model.weights.h5"

# Layers that are the identity at inference: an LSTM stack continues through them.
_IDENTITY_AT_INFERENCE = frozenset({
    "Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
    "ActivityRegularization"})
_ACTIVATIONS = ("sigmoid", "tanh", "hard_sigmoid", "relu", "linear")
# Keras 2's CuDNNLSTM (keras.layers.CuDNNLSTM, tf.compat.v1.keras.layers.CuDNNLSTM): the
# LSTM maths with sigmoid / tanh, kernels as an LSTM's, and a bias of 8 * units: cuDNN's
# input biases then its recurrent biases, each in gate order i, f, c, o. Keras 3 has no
# such layer (it refuses these files); read from legacy .h5 files here.
_CUDNN_LSTM = "CuDNNLSTM"
_LSTM_CLASSES = ("LSTM", _CUDNN_LSTM)
_HARD_SIGMOID = {2: ("hard_sigmoid", 0.2, 0.5),       # Keras <= 2: clip(0.2 x + 0.5, 0, 1)
                 3: ("hard_sigmoid", 1.0 / 6.0, 0.5)}  # Keras 3: relu6(x + 3) / 6


class KerasFileError(FormatError):
    """A Keras file (or model) that cannot be converted: corrupted, truncated, hostile,
    inconsistent, or using a layer or option lstm_infer does not support."""


# ---------------------------------------------------------------- limits on hostile files
# config.json, metadata.json and HDF5 attributes (model_config, weight_names): refused
# above this size before they are read.
_MAX_CONFIG_BYTES = MAX_METADATA_BYTES
# A .keras archive's model.weights.h5 is extracted (bounded by its declared size, which
# zipfile enforces) to a temporary file, not into memory. Keras stores it uncompressed;
# a deflated one may declare at most this ratio to its compressed size, or
# _WEIGHTS_ANY_RATIO bytes whatever the ratio (a 2 MB member declaring 2 GB is refused).
_MAX_WEIGHTS_RATIO = 64
_WEIGHTS_ANY_RATIO = 64 * 1024 * 1024
# Keras writes every weight as one contiguous uncompressed dataset: the bytes it stores
# are the bytes it declares. Over one file, the declared bytes of the datasets read may
# exceed their stored bytes (compression, chunks never written) by at most this much, so
# a gzip bomb or an unallocated (30000, 30000) dataset is refused before it is read.
_MAX_INFLATION = 16 * 1024 * 1024
# A chunked dataset's chunk (the unit libhdf5 decompresses) may be at most this size, or
# the dataset's own size.
_MAX_CHUNK_BYTES = 1024 * 1024
# Nesting of a Keras 3 inbound node's arguments (Keras writes 2 or 3 levels).
_MAX_NODE_DEPTH = 32


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
        """Bidirectional: the wrapped layer's {class_name, config} (None if not a dict)."""
        if self.class_name == "Bidirectional":
            inner = self.config.get("layer")
            return inner if isinstance(inner, dict) else None
        return None

    @property
    def inner_config(self) -> dict:
        """Bidirectional: the wrapped layer's config ({} if absent or not a dict)."""
        return _as_dict((self.inner or {}).get("config"))

    @property
    def is_lstm(self) -> bool:
        if self.class_name in _LSTM_CLASSES:
            return True
        inner = self.inner
        return isinstance(inner, dict) and inner.get("class_name") in _LSTM_CLASSES

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
        raise KerasFileError(f"{self.source}: no layer named {name!r}; layers: "
                             f"{[l.name for l in self.layers]}")


# ============================================================================ config parsing

def _as_dict(v) -> dict:
    """v if it is a dict, else {}: for config entries that a hostile or corrupted file
    may hold as any JSON value."""
    return v if isinstance(v, dict) else {}


def _parse_model_config(cfg, source: str) -> tuple:
    """(class_name, [_Layer]) from a model config dict (Keras 2 or 3 layout)."""
    if not isinstance(cfg, dict) or "class_name" not in cfg:
        raise KerasFileError(f"{source}: the model config is not a Keras model "
                             f"(no 'class_name'); got {str(cfg)[:80]!r}")
    cls = cfg["class_name"]
    body = cfg.get("config")
    if cls == "Sequential":
        # Keras 2.0 - 2.2 stored the layer list directly as the config
        items = body if isinstance(body, list) else _as_dict(body).get("layers")
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
            if not isinstance(nodes, list):
                raise KerasFileError(f"{source}: layer {l.name!r}: 'inbound_nodes' must be a "
                                     f"list; got {type(nodes).__name__}")
            where = f"{source}: layer {l.name!r}"
            l.inputs = [_main_input(node, where) for node in nodes]
            for node in nodes:
                for src in _all_inputs(node, where):
                    if src not in l.sources:
                        l.sources.append(src)
            layers.append(l)
        return cls, layers
    # a lone layer saved as a "model" is not something Keras writes; anything else is
    # a subclassed model whose structure is not in the file
    raise KerasFileError(
        f"{source}: a {str(cls)[:80]!r} model whose layers are not described in its config "
        f"(a subclassed model?); only Sequential and functional models can be converted: "
        f"rebuild it as one (or put its LSTM layers in one) and save that")


def _layer_record(item, source) -> _Layer:
    if not isinstance(item, dict) or not isinstance(item.get("class_name"), str):
        raise KerasFileError(f"{source}: a layer config without a 'class_name' string: "
                             f"{str(item)[:80]!r}")
    cfg = _as_dict(item.get("config"))
    name = item.get("name") or cfg.get("name")
    if not isinstance(name, str):
        raise KerasFileError(f"{source}: a {item['class_name']} layer without a name")
    # the input feature size the config records (Keras 3 build_config, Keras 2
    # batch_input_shape), checked against the kernel
    shape = _as_dict(item.get("build_config")).get("input_shape") \
        or cfg.get("batch_input_shape")
    dim = shape[-1] if isinstance(shape, list) and shape and isinstance(shape[-1], int) \
        and not isinstance(shape[-1], bool) else None
    return _Layer(name, item["class_name"], cfg, input_dim=dim)


def _main_input(node, where) -> Optional[tuple]:
    """(layer, node index, tensor index) of the first input tensor of one call."""
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        args = node.get("args") or []
        if not isinstance(args, list):
            raise KerasFileError(f"{where}: an inbound node's 'args' must be a list; got "
                                 f"{type(args).__name__}")
        for hist in _keras_histories(args[:1], where):
            if len(hist) >= 3 and isinstance(hist[0], str) and _is_index(hist[1]) \
                    and _is_index(hist[2]):
                return tuple(hist[:3])
        return None
    if isinstance(node, list) and node:  # Keras 2: [[name, node, tensor, kwargs], ...]
        first = node[0]
        if isinstance(first, list) and len(first) >= 3 and isinstance(first[0], str) \
                and _is_index(first[1]) and _is_index(first[2]):
            return (first[0], first[1], first[2])
    return None


def _is_index(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _all_inputs(node, where) -> List[str]:
    """Names of the layers whose outputs are positional inputs of one call."""
    if isinstance(node, dict):
        return [h[0] for h in _keras_histories(node.get("args") or [], where)
                if isinstance(h[0], str)]
    if isinstance(node, list):
        return [e[0] for e in node if isinstance(e, list) and e and isinstance(e[0], str)]
    return []


def _keras_histories(obj, where, depth=0):
    """The keras_history lists of the keras tensors in obj, depth first."""
    if depth > _MAX_NODE_DEPTH:
        raise KerasFileError(f"{where}: an inbound node nested more than {_MAX_NODE_DEPTH} "
                             f"levels deep")
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            hist = _as_dict(obj.get("config")).get("keras_history")
            if isinstance(hist, list) and hist:
                yield hist
            return
        for v in obj.values():
            yield from _keras_histories(v, where, depth + 1)
    elif isinstance(obj, list):
        for v in obj:
            yield from _keras_histories(v, where, depth + 1)


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
    check_file(path)
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"PK"):  # a zip (the local header magic checked by zipfile)
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


# ---------------------------------------------------------------- HDF5: one door

class _H5:
    """An open HDF5 file; every object and attribute this module reads goes through it.

    HDF5 can point outside the file: an *external link* (an object of another file), a
    dataset with *external storage* (its bytes in any local file, e.g. /etc/passwd), a
    *virtual dataset* (mapped from other files' datasets); a soft link can lead through
    an external link. Keras writes none of them, and following one would let an uploaded
    model read local files into its weights (and its outputs). So `get` walks a path one
    link at a time, through hard links only, and refuses a dataset with external storage
    or a virtual layout as soon as it reaches it, before any of its data is read. Reads
    are then bounded: attributes by _MAX_CONFIG_BYTES (`attr`), datasets by the file's
    size and _MAX_INFLATION (`read`)."""

    def __init__(self, f, source: str, size: int):
        self.file, self.source, self.size = f, source, size
        self.inflation = 0  # declared minus stored bytes of the datasets read so far

    @staticmethod
    def is_group(obj) -> bool:
        return isinstance(obj, _h5py().Group)

    def get(self, group, path: str, want: Optional[str] = None):
        """group[path] ('/'-separated, relative), or None when a link on it is missing;
        want="group" / "dataset" requires that kind of object."""
        h5py = _h5py()
        obj = group
        for part in path.split("/"):
            if not part:
                continue
            where = f"{obj.name.rstrip('/')}/{part}"
            if not isinstance(obj, h5py.Group):
                raise KerasFileError(f"{self.source}: {where}: {obj.name} is a dataset, not "
                                     f"a group")
            try:
                link = obj.get(part, getlink=True)
            except TypeError:  # a user-defined link class
                link = "a link of a user-defined type"
            if link is None:
                return None
            if not isinstance(link, h5py.HardLink):
                raise KerasFileError(
                    f"{self.source}: {where} is {_describe_link(link)}; refused: a Keras "
                    f"file has only hard links, and following this one could read another "
                    f"file")
            obj = obj[part]
            if isinstance(obj, h5py.Dataset):
                self._check_layout(obj, where)
        if want == "group" and not isinstance(obj, h5py.Group):
            raise KerasFileError(f"{self.source}: {obj.name} is a dataset; expected a group")
        if want == "dataset" and not isinstance(obj, h5py.Dataset):
            raise KerasFileError(f"{self.source}: {obj.name} is a group; expected a dataset "
                                 f"(a weight)")
        return obj

    def _check_layout(self, ds, where):
        if ds.is_virtual:
            raise KerasFileError(f"{self.source}: dataset {where} is a virtual dataset (its "
                                 f"data would come from other files); refused")
        external = ds.external
        if external:
            files = [os.fsdecode(e[0]) for e in external][:3]
            raise KerasFileError(
                f"{self.source}: dataset {where} keeps its data in external file(s) {files}; "
                f"refused: a Keras file stores its weights inside itself, and reading this "
                f"one would read another local file")

    def attr(self, obj, name: str):
        """obj.attrs[name], or None if absent; refused above _MAX_CONFIG_BYTES: from the
        declared size, before reading, for fixed-size values; after reading for
        variable-length strings, which libhdf5 reads from the file's global heap, so at
        most the file's size."""
        if name not in obj.attrs:
            return None
        size = obj.attrs.get_id(name).get_storage_size()
        value = None
        if size <= _MAX_CONFIG_BYTES:
            value = obj.attrs[name]
            size = max(size, _text_bytes(value))
        if size > _MAX_CONFIG_BYTES:
            raise KerasFileError(f"{self.source}: attribute {name!r} of {obj.name} holds "
                                 f"{size} bytes; at most {_MAX_CONFIG_BYTES} are accepted")
        return value

    def weight(self, group, name: str) -> Optional["_Weight"]:
        """A floating-point dataset group[name], not read yet (None if missing)."""
        ds = self.get(group, name, "dataset")
        if ds is None:
            return None
        try:
            dtype, shape = ds.dtype, ds.shape
        except (TypeError, ValueError) as e:
            raise KerasFileError(f"{self.source}: {ds.name} has an HDF5 type numpy cannot "
                                 f"hold ({e})") from None
        if dtype.kind != "f" or dtype.itemsize > 8:
            raise KerasFileError(f"{self.source}: {ds.name} has dtype {dtype}; expected "
                                 f"floating point")
        if shape is None:
            raise KerasFileError(f"{self.source}: {ds.name} is an empty (null) dataset")
        return _Weight(self, ds)

    def read(self, ds) -> np.ndarray:
        """ds's data, after checking that it is stored inside the file and that its declared
        size does not exceed what the file stores beyond _MAX_INFLATION (over all reads)."""
        where = f"{self.source}: {ds.name}"
        itemsize = ds.dtype.itemsize
        declared = itemsize
        for n in ds.shape:
            declared *= int(n)
        stored, offset = ds.id.get_storage_size(), ds.id.get_offset()
        if stored > self.size or (offset is not None and offset + stored > self.size):
            raise KerasFileError(f"{where}: its data ({stored} bytes at offset {offset}) does "
                                 f"not fit in the {self.size}-byte file; truncated or "
                                 f"corrupted?")
        if ds.chunks is not None:
            chunk = itemsize
            for n in ds.chunks:
                chunk *= int(n)
            if chunk > max(declared, _MAX_CHUNK_BYTES):
                raise KerasFileError(f"{where}: chunks of {chunk} bytes for a {declared}-byte "
                                     f"dataset; corrupted?")
        if declared > stored:
            self.inflation += declared - stored
            if self.inflation > _MAX_INFLATION:
                raise KerasFileError(
                    f"{where}: declares {declared} bytes of data but stores {stored} "
                    f"(compressed, or never written); Keras writes weights uncompressed, and "
                    f"at most {_MAX_INFLATION} bytes of such expansion are accepted in a file "
                    f"(a decompression bomb?)")
        try:
            return np.asarray(ds[()])
        except (OSError, RuntimeError, ValueError, KeyError) as e:
            raise KerasFileError(f"{where}: cannot be read ({e}); truncated or corrupted?") \
                from None


def _text_bytes(value) -> int:
    """Bytes of the (variable-length) strings in an attribute value."""
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, np.ndarray) and value.dtype.kind == "O":
        return sum(len(v) for v in value.ravel() if isinstance(v, (str, bytes)))
    return 0


def _describe_link(link) -> str:
    h5py = _h5py()
    if isinstance(link, h5py.ExternalLink):
        return f"an external link to {link.path!r} in file {link.filename!r}"
    if isinstance(link, h5py.SoftLink):
        return f"a soft link to {link.path!r}"
    return str(link)


class _Weight:
    """A weight dataset not read yet: ``shape`` and ``ndim`` come from its header;
    ``read()`` once the caller has checked them against the config."""

    def __init__(self, h5: _H5, ds):
        self._h5, self._ds = h5, ds
        self.shape = tuple(int(n) for n in ds.shape)
        self.ndim = len(self.shape)

    def read(self) -> np.ndarray:
        return self._h5.read(self._ds)


def _value(a) -> np.ndarray:
    """The array of a weight: read now if it is a _Weight (a keras.Model gives arrays)."""
    return a.read() if isinstance(a, _Weight) else a


def _open_hdf5(target, where: str, source: str, size: int) -> _H5:
    """h5py.File(target) (a path or a file object) as an _H5; `where` names it in errors."""
    h5py = _h5py()
    try:
        f = h5py.File(target, "r")
    except (OSError, OverflowError, ValueError, RuntimeError) as e:
        raise KerasFileError(f"{where} is not a readable HDF5 file ({e}); truncated or "
                             f"corrupted?") from None
    return _H5(f, source, size)


def _json(raw, what: str, source: str):
    """json.loads of a config string (bytes, str or a scalar HDF5 attribute)."""
    try:
        return json.loads(_attr_str(raw))
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise KerasFileError(f"{source}: {what} is not valid JSON ({e})") from None
    except RecursionError:
        raise KerasFileError(f"{source}: {what} is nested too deeply to be a Keras "
                             f"config") from None


# ---------------------------------------------------------------- .keras archive

def _zip_error(path: str, e: Exception) -> KerasFileError:
    return KerasFileError(f"{path}: not a readable .keras archive ({type(e).__name__}: {e}); "
                          f"truncated or corrupted?")


def _archive_config(z: zipfile.ZipFile, path: str) -> tuple:
    """(config, keras_version) of an open .keras archive, read with size caps."""
    names = z.namelist()
    if "config.json" not in names:
        raise KerasFileError(f"{path}: a zip without config.json, not a .keras archive; it "
                             f"holds {names[:5]}")
    cfg = _json(read_member(z, "config.json", KerasFileError, path, _MAX_CONFIG_BYTES),
                "config.json", path)
    meta = {}
    if "metadata.json" in names:
        meta = _json(read_member(z, "metadata.json", KerasFileError, path, _MAX_CONFIG_BYTES),
                     "metadata.json", path)
    return cfg, _as_dict(meta).get("keras_version")


def _extract_weights(z: zipfile.ZipFile, path: str):
    """model.weights.h5 copied to an anonymous temporary file: (file, size)."""
    names = z.namelist()
    if _WEIGHTS_MEMBER not in names:
        sharded = [n for n in names if "weights" in n]
        raise KerasFileError(
            f"{path}: no {_WEIGHTS_MEMBER} in the archive"
            + (f" (found {sharded}; sharded weights are not supported)" if sharded
               else "; the file holds no weights"))
    info = z.getinfo(_WEIGHTS_MEMBER)
    limit = max(_WEIGHTS_ANY_RATIO, _MAX_WEIGHTS_RATIO * info.compress_size)
    if info.file_size > limit:
        raise KerasFileError(f"{path}: archive member {_WEIGHTS_MEMBER!r} declares "
                             f"{info.file_size} bytes for {info.compress_size} compressed; at "
                             f"most {limit} are accepted for it (a zip bomb or a corrupted "
                             f"archive?)")
    tmp = tempfile.TemporaryFile(prefix="lstm_infer-", suffix=".weights.h5")
    try:
        with z.open(info) as src:  # stops at the declared size, then checks the CRC
            shutil.copyfileobj(src, tmp, 1 << 20)
        tmp.flush()
    except BaseException:
        tmp.close()
        raise
    return tmp, info.file_size


def _open_archive(path: str) -> _Model:
    try:
        with zipfile.ZipFile(path) as z:
            cfg, version = _archive_config(z, path)
            tmp, size = _extract_weights(z, path)
    except ZIP_ERRORS as e:
        raise _zip_error(path, e) from None
    try:
        cls, layers = _parse_model_config(cfg, path)
        h5 = _open_hdf5(tmp, f"{path}: {_WEIGHTS_MEMBER}", path, size)
    except BaseException:
        tmp.close()
        raise

    def close():
        h5.file.close()
        tmp.close()

    try:
        index = _V3Index(h5, layers)
    except (OSError, RuntimeError, KeyError, UnicodeError) as e:
        close()
        raise KerasFileError(f"{path}: cannot read {_WEIGHTS_MEMBER} ({e}); truncated or "
                             f"corrupted?") from None
    except BaseException:
        close()
        raise
    return _Model(path, cls, layers, version, index.weights, close)


class _V3Index:
    """Finds a layer's variables in a Keras 3 model.weights.h5.

    Keras names a container's children by snake-cased class name, deduplicated
    in order (lstm, lstm_1, ...), and records the layer's own name in
    ``<group>/vars`` attribute ``name``; both are used (the name first)."""

    def __init__(self, h5: _H5, layers):
        self.h5, self.source = h5, h5.source
        self.container = None
        for key in ("layers", "_layer_checkpoint_dependencies"):  # the latter: older writers
            self.container = h5.get(h5.file, key, "group")
            if self.container is not None:
                break
        self.by_name, self.by_class = {}, {}
        if self.container is None:
            return
        for key in self.container:  # link names: nothing is followed yet
            g = h5.get(self.container, key)
            v = h5.get(g, "vars") if h5.is_group(g) else None
            nm = h5.attr(v, "name") if h5.is_group(v) else None
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
                                 f"it holds {list(self.h5.file)[:8]}")
        for key in (self.by_name.get(layer.name), self.by_class.get(layer.name), layer.name):
            g = self.h5.get(self.container, key, "group") if key is not None else None
            if g is not None:
                return g
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
        h5 = self.h5
        where = f"layer {layer.name!r}" + (f" {sub}" if sub else "")
        if sub is not None:
            g = h5.get(g, sub, "group")
            if g is None:
                raise KerasFileError(f"{self.source}: {where}: no {sub} group in "
                                     f"{_WEIGHTS_MEMBER}")
        cell = h5.get(g, "cell")
        vars_ = h5.get(cell, "vars") if h5.is_group(cell) else None
        if vars_ is None:
            vars_ = h5.get(g, "vars")
        if not h5.is_group(vars_) or not len(vars_):
            raise KerasFileError(f"{self.source}: {where}: no variables in {_WEIGHTS_MEMBER} "
                                 f"(expected cell/vars/0..2)")
        keys = sorted(vars_, key=lambda k: int(k) if k.isdecimal() and len(k) < 10 else 1 << 30)
        return [(f"{vars_.name}/{k}", h5.weight(vars_, k)) for k in keys]


def _snake_case(name: str) -> str:
    """keras.src.utils.naming.to_snake_case."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


# ---------------------------------------------------------------- legacy .h5

def _attr_str(v):
    if v is None:
        return None
    if isinstance(v, bytes):
        return v.decode("utf8")
    if isinstance(v, np.ndarray) and v.shape == ():
        return _attr_str(v.item())
    return str(v)


def _attr_list(h5: _H5, group, name) -> List[str]:
    """load_attributes_from_hdf5_group: a list attribute, possibly chunked (name0, name1, ...)."""
    raw = h5.attr(group, name)
    if raw is not None:
        vals = list(np.atleast_1d(raw))
    else:
        vals, k = [], 0
        while (part := h5.attr(group, f"{name}{k}")) is not None:
            vals.extend(np.atleast_1d(part))
            k += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in vals
            if not (isinstance(v, float) and np.isnan(v))]


def _legacy_config(h5: _H5, path: str):
    """The model_config of a legacy .h5 file, parsed."""
    f = h5.file
    raw = h5.attr(f, "model_config")
    if raw is None:
        what = ("a Keras 3 weights-only file (.weights.h5)" if "layers" in f and "vars" in f
                else "a weights-only file (save_weights)" if "layer_names" in f.attrs
                else "not a Keras model file")
        raise KerasFileError(f"{path}: no model_config attribute: {what}. The layer "
                             f"configuration is needed; save the whole model "
                             f"(model.save) as .keras or .h5")
    return _json(raw, "model_config", path)


def _open_h5(path: str) -> _Model:
    h5 = _open_hdf5(path, path, path, os.path.getsize(path))
    try:
        cls, layers = _parse_model_config(_legacy_config(h5, path), path)
        mw = h5.get(h5.file, "model_weights", "group")
        if mw is None:
            raise KerasFileError(f"{path}: no 'model_weights' group; the file holds no weights")
        version = _attr_str(h5.attr(mw, "keras_version"))
        if version is None:
            version = _attr_str(h5.attr(h5.file, "keras_version"))
        if version is None:
            version = "1"  # what Keras' own loader assumes for a file without a version
        if _major(version) == 1:
            raise KerasFileError(f"{path}: written by Keras 1 (keras_version {version!r}); "
                                 f"its LSTM format is not supported. Load and re-save it "
                                 f"with Keras 2")
    except (OSError, RuntimeError, KeyError, UnicodeError) as e:
        h5.file.close()
        raise KerasFileError(f"{path}: cannot read the HDF5 file ({e}); truncated or "
                             f"corrupted?") from None
    except BaseException:
        h5.file.close()
        raise

    def weights(layer):
        try:
            return _legacy_layer_weights(h5, mw, layer)
        except (OSError, RuntimeError, KeyError, UnicodeError) as e:
            raise KerasFileError(f"{path}: cannot read the weights of {layer.name!r} ({e}); "
                                 f"truncated or corrupted?") from None

    return _Model(path, cls, layers, version, weights, h5.file.close)


def _legacy_layer_weights(h5: _H5, mw, layer: _Layer) -> Dict[str, list]:
    path = h5.source
    g = h5.get(mw, layer.name, "group")
    if g is None:
        raise KerasFileError(f"{path}: no weights for layer {layer.name!r} in model_weights "
                             f"(groups: {list(mw)[:12]})")
    names = _attr_list(h5, g, "weight_names")
    if not names:
        raise KerasFileError(f"{path}: layer {layer.name!r} has no weights in the file "
                             f"(empty weight_names)")
    arrays = []
    for n in names:
        w = h5.weight(g, n)
        if w is None:
            raise KerasFileError(f"{path}: layer {layer.name!r}: weight {n!r} listed in "
                                 f"weight_names is missing")
        arrays.append((n, w))
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
    cfg = l.inner_config if l.class_name == "Bidirectional" else l.config
    return bool(cfg.get("return_sequences", False))


def _merge_mode(l: _Layer):
    if l.class_name != "Bidirectional":
        return "concat"
    return l.config.get("merge_mode", "concat")


def _layer_names(layer) -> Optional[List[str]]:
    """The `layer` argument of from_keras as a list of names (None: the only stack)."""
    if layer is None:
        return None
    names = [layer] if isinstance(layer, str) else layer
    if not isinstance(names, (list, tuple)) or not names or \
            not all(isinstance(n, str) for n in names):
        raise TypeError(f"layer must be a layer name or a list of names; got {layer!r}")
    return list(names)


def _select(model: _Model, names: Optional[List[str]]) -> List[_Layer]:
    if names is None:
        chains = _chains(model)
        if not chains:
            raise KerasFileError(f"{model.source}: no LSTM or Bidirectional(LSTM) layer; layers: "
                                 f"{[(l.name, l.class_name) for l in model.layers]}")
        if len(chains) > 1:
            raise KerasFileError(f"{model.source}: {len(chains)} separate LSTM stacks "
                                 f"{[[l.name for l in c] for c in chains]}; choose one with "
                                 f"layer='name' (one layer) or layer=[names] (a stack)")
        return chains[0]
    chosen = []
    for n in names:
        l = model.layer(n)
        if not l.is_lstm:
            what = l.class_name + (f"({l.inner.get('class_name')})" if l.inner else "")
            raise KerasFileError(f"{model.source}: layer {n!r} is a {what}, not an LSTM or "
                                 f"Bidirectional(LSTM); LSTM layers: "
                                 f"{[x.name for x in model.layers if x.is_lstm]}")
        chosen.append(l)
    for a, b in zip(chosen, chosen[1:]):
        p = _producer(model, b)
        if p is None or p.name != a.name:
            raise KerasFileError(f"{model.source}: layers {a.name!r} and {b.name!r} are not "
                                 f"consecutive: {b.name!r} reads "
                                 f"{p.name if p is not None else 'no single layer'!r}")
        if not _returns_sequences(a):
            raise KerasFileError(f"{model.source}: layer {a.name!r} has return_sequences=False; "
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
        module = str(spec.get("module") or "")
        if not module.startswith("keras") or spec.get("registered_name") not in (None, "function"):
            raise KerasFileError(f"{where}: custom {what} {name!r} (module {module!r}, registered "
                                 f"as {spec.get('registered_name')!r}) is not supported; "
                                 f"supported: {_ACTIVATIONS}")
    if not isinstance(name, str):
        raise KerasFileError(f"{where}: unsupported {what} {spec!r}; supported: {_ACTIVATIONS}")
    name = name.lower()
    if name not in _ACTIVATIONS:
        raise KerasFileError(f"{where}: unsupported {what} {name!r}; supported: {_ACTIVATIONS}")
    if name == "hard_sigmoid":
        if version_major is None:
            raise KerasFileError(f"{where}: {what} hard_sigmoid, but the file does not record "
                                 f"its keras_version, which decides its slope (0.2 in Keras 2, "
                                 f"1/6 in Keras 3)")
        return _HARD_SIGMOID[2 if version_major < 3 else 3]
    return name


def _direction_weights(named, cfg, where, in_size):
    """[(name, array or _Weight)] of one LSTM -> a canonical direction dict (and its units).

    Every shape is checked against the config before any weight is read."""
    units = cfg.get("units")
    if isinstance(units, bool) or not isinstance(units, int) or units < 1:
        raise KerasFileError(f"{where}: 'units' must be a positive integer; got {units!r}")
    cudnn = bool(cfg.get(_CUDNN_LSTM))  # set by _convert (not in a file's config)
    use_bias = cudnn or bool(cfg.get("use_bias", True))  # CuDNNLSTM always has its bias
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
    # Keras' layout (kernels transposed), H from the config: checked before reading
    check_shape(k, (I, 4 * H), f"{where}: kernel", "(input, 4*units)", error=KerasFileError)
    check_shape(rk, (H, 4 * H), f"{where}: recurrent_kernel", "(units, 4*units)",
                error=KerasFileError)
    b = role.get("bias") if use_bias else None
    if b is not None:
        n = 8 if cudnn else 4
        check_shape(b, (n * H,), f"{where}: bias",
                    "(8*units,): cuDNN's input and recurrent biases" if cudnn else "(4*units,)",
                    error=KerasFileError)
    d = {"w_ih": to_canonical(_value(k).T, "keras"), "w_hh": to_canonical(_value(rk).T, "keras")}
    if b is not None:
        b = _value(b)
        if cudnn:  # b_ih + b_hh, fused once as for torch's two biases
            b = b[:4 * H] + b[4 * H:]
        d["b"] = to_canonical(b, "keras")
    return d, H


def _convert(model: _Model, chain: Sequence[_Layer]) -> CanonicalModel:
    vmajor = _major(model.keras_version)
    layers, options, time_major = [], [], set()
    in_size = None
    for pos, l in enumerate(chain):
        where = f"{model.source}: layer {l.name!r}"
        w = model.get_weights(l)
        if in_size is None:
            in_size = l.input_dim
        if l.class_name in _LSTM_CLASSES:
            cfg = _cudnn_config(l.class_name, l.config)
            _refuse_cell_options(cfg, where)
            d, H = _direction_weights(w["forward"], cfg, where, in_size)
            trip = _triple(cfg, vmajor, where)
            opt = {"activations": trip}
            if cfg.get("go_backwards"):
                opt.update(direction="reverse", reverse_output=True)
            layers.append([d])
            in_size = H
        else:  # Bidirectional(LSTM)
            fcfg = _cudnn_config(l.inner.get("class_name"), l.inner_config)
            back = l.config.get("backward_layer")
            if isinstance(back, dict):
                if back.get("class_name") not in _LSTM_CLASSES:
                    raise KerasFileError(f"{where}: backward layer is a {back.get('class_name')}, "
                                         f"not an LSTM")
                bcfg = _cudnn_config(back.get("class_name"), _as_dict(back.get("config")))
            else:  # Keras 2 stores it only when given: then it is a copy of the forward one
                bcfg = dict(fcfg, go_backwards=not fcfg.get("go_backwards", False))
            if fcfg.get("go_backwards") or not bcfg.get("go_backwards", False):
                raise KerasFileError(f"{where}: Bidirectional around a go_backwards LSTM (forward "
                                     f"go_backwards={bool(fcfg.get('go_backwards'))}) is not "
                                     f"supported")
            for c, side in ((fcfg, "forward"), (bcfg, "backward")):
                _refuse_cell_options(c, f"{where} {side}")
            merge = l.config.get("merge_mode", "concat")
            if merge is None:
                if pos != len(chain) - 1:
                    raise KerasFileError(f"{where}: merge_mode=None (a list of two outputs) can "
                                         f"only be the last layer of the stack")
                merge = "concat"
            if merge not in ("concat", "sum", "mul", "ave"):
                raise KerasFileError(f"{where}: unsupported merge_mode {merge!r}; supported: "
                                     f"concat, sum, mul, ave, None")
            df, Hf = _direction_weights(w["forward"], fcfg, f"{where} forward", in_size)
            db, Hb = _direction_weights(w["backward"], bcfg, f"{where} backward", in_size)
            if Hf != Hb:
                raise KerasFileError(f"{where}: forward and backward units differ ({Hf} vs {Hb}); "
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
        raise KerasFileError(f"{model.source}: layers {[l.name for l in chain]} mix time_major "
                             f"True and False")
    return CanonicalModel(layers, {"batch_first": not time_major.pop(),
                                   "layer_options": options}, model.source)


def _cudnn_config(class_name, cfg):
    """An LSTM layer's config; for a CuDNNLSTM, marked as one, with its fixed activations
    (cuDNN runs sigmoid gates and tanh, whatever a config says)."""
    if class_name != _CUDNN_LSTM:
        return cfg
    return dict(cfg, activation="tanh", recurrent_activation="sigmoid", **{_CUDNN_LSTM: True})


def _triple(cfg, vmajor, where):
    rec = _activation(cfg.get("recurrent_activation", "sigmoid"), "recurrent_activation",
                      vmajor, where)
    act = _activation(cfg.get("activation", "tanh"), "activation", vmajor, where)
    return [rec, act, act]


def _refuse_cell_options(cfg, where):
    # options of tf.keras' experimental LSTM variants that change the maths
    for opt in ("peephole", "use_peepholes", "proj_size", "num_proj"):
        if cfg.get(opt):
            raise KerasFileError(f"{where}: option {opt}={cfg[opt]!r} is not supported")


# ============================================================================ public API

def from_keras(obj, layer=None):
    """Convert a Keras LSTM stack to an lstm_infer model (see the module docstring):
    `read_keras`'s data, built.

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
    KerasFileError (a FormatError, hence a ValueError) for every problem with the
    file or model: unreadable, truncated, hostile (see `_H5`: no link or storage out
    of the file is followed; sizes are checked before reading) or inconsistent
    content, unsupported layers or options. FileNotFoundError / PermissionError for
    the path; TypeError for other objects or a malformed `layer`.

    A hostile or corrupted ``.h5`` can send libhdf5 itself into an endless loop (a
    libhdf5 bug no check here can prevent): loading files you do not trust in-process
    can hang the calling thread for ever. Use ``li.load(path, isolated=True)`` (or
    ``timeout=``), which parses in a child process that is killed on time-out.
    """
    return _read(obj, layer, build)


def read_keras(obj, layer=None) -> CanonicalModel:
    """The numpy core of `from_keras`: the selected stack's canonical weights (Keras gate
    order and layout converted) and constructor options, with every check of
    `from_keras` but the model's own (values, options: `lstm_infer._build.build`)."""
    return _read(obj, layer, lambda data, error: data)


def _read(obj, layer, make):
    names = _layer_names(layer)
    if isinstance(obj, (str, os.PathLike)):
        path = os.fspath(obj)
        with guard(KerasFileError, str(path)):  # the net under the checks
            return _convert_and_close(_open_path(path), names, make)
    return _convert_and_close(_open(obj), names, make)


def _convert_and_close(model: _Model, names, make):
    try:
        # e.g. NaN weights, an activation's parameters: a KerasFileError naming the source
        return make(_convert(model, _select(model, names)), KerasFileError)
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
        path = os.fspath(obj)
        with guard(KerasFileError, str(path)):
            return _summary(_summary_model(path))
    return _summary(_open(obj))


def _summary(model: _Model) -> List[dict]:
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
            cfg = dict(l.inner_config, merge_mode=l.config.get("merge_mode"))
        for k in keys:
            if k in cfg:
                v = cfg[k]
                e[k] = v if isinstance(v, (str, int, float, bool, type(None))) else str(v)
        out.append(e)
    return out


def _summary_model(path) -> _Model:
    """Config only: no weights are read."""
    check_file(path)
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(_HDF5_MAGIC):
        h5 = _open_hdf5(path, path, path, os.path.getsize(path))
        try:
            cfg = _legacy_config(h5, path)
            version = _attr_str(h5.attr(h5.file, "keras_version"))
        except (OSError, RuntimeError, KeyError, UnicodeError) as e:
            raise KerasFileError(f"{path}: cannot read the HDF5 file ({e}); truncated or "
                                 f"corrupted?") from None
        finally:
            h5.file.close()
    else:
        try:
            with zipfile.ZipFile(path) as z:
                cfg, version = _archive_config(z, path)
        except ZIP_ERRORS as e:
            raise _zip_error(path, e) from None
    cls, layers = _parse_model_config(cfg, path)
    return _Model(path, cls, layers, version, lambda l: {})


def sniff(path) -> Optional[str]:
    """"keras" (a .keras archive) or "keras-h5" (an HDF5 file) if `path` is for this
    loader, else None: a cheap content sniff that reads at most the zip's directory and
    never raises on bad content.

    A zip is a .keras archive when its first member is one of an archive's
    (metadata.json, config.json, model.weights.h5) -- so a truncated archive still
    goes to this loader, which reports it -- or when its directory lists config.json
    and a ``*.weights.h5``. Every HDF5 file is this loader's (HDF5 is read by no other):
    it reports what is wrong with one that is not a Keras model (a weights-only file,
    another program's data), without h5py being run here.
    """
    try:
        p = os.fspath(path)
        with open(p, "rb") as f:
            head = f.read(64)
        if head.startswith(_HDF5_MAGIC):
            return "keras-h5"
        if not head.startswith(_ZIP_MAGIC) or len(head) < 30:
            return None
        n = int.from_bytes(head[26:28], "little")
        first = head[30:30 + n]
        if len(first) < n:
            with open(p, "rb") as f:
                f.seek(30)
                first = f.read(n)
        if first.decode("utf8", "replace") in _ARCHIVE_MEMBERS:
            return "keras"
        try:
            with zipfile.ZipFile(p) as z:
                names = z.namelist()
        except ZIP_ERRORS:
            return None
        if "config.json" in names and any(n.endswith(".weights.h5") for n in names):
            return "keras"
    except Exception:  # noqa: BLE001 - a sniffer answers, it does not fail
        return None
    return None


def is_keras_file(path) -> bool:
    """Whether `path` is for the Keras loader: ``sniff(path) is not None``."""
    return sniff(path) is not None


def to_keras_weights(model_or_data, *, dequantize: bool = False) -> List[List[np.ndarray]]:
    """Per layer, the list Keras ``LSTM.set_weights`` (``Bidirectional(LSTM).set_weights``
    for a bidirectional layer) takes, for a model (an LSTM or its `CanonicalModel`): the
    inverse of the Keras loader's conversion. `keras_writer.write_keras` writes a whole
    ``.keras`` file from it.

    Each direction, forward first: kernel (I, 4H), recurrent_kernel (H, 4H), bias (4H,);
    Keras' gate order i, f, c, o is ours, our fused bias its single bias (so the Keras
    layers need ``use_bias=True``, the default). Copies in the model's dtype (float32 for
    a quantized one). The Keras layers must match the model: per layer
    ``LSTM(H, return_sequences=True, activation=..., recurrent_activation=...)``
    (``go_backwards=True`` for a Keras go_backwards layer), ``Bidirectional`` around it
    (``merge_mode``) for bidirectional layers; layers may differ in size. Keras models
    are batch-first: (B, T, I) in.

    dequantize : a quantized model is refused unless True; then its float32 weights.

    Raises ExportError (a ValueError) listing what a Keras LSTM stack cannot express (a
    projection, peepholes, clip, cell_clip, CIFG, a cell activation other than the
    output one, the Keras 2 hard_sigmoid, a reverse-only layer whose outputs are in time
    order (ONNX direction="reverse"), a quantized model without dequantize=True).
    Needs no Keras.
    """
    from ._export import check, keras_activations

    model = model_of(model_or_data)
    check(model, "a Keras LSTM stack", supports={"go_backwards", "merge"},
          activations=keras_activations, dequantize=dequantize)
    dtype = np.float32 if model.config.quantization else model.dtype
    out = []
    for layer in float_weights(model):
        ws = []
        for w in layer:
            ws += [np.array(np.asarray(w["w_ih"]).T, dtype=dtype),
                   np.array(np.asarray(w["w_hh"]).T, dtype=dtype),
                   np.array(w["b"], dtype=dtype)]
        out.append(ws)
    return out


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


# ============================================================================ whole models
# Helpers for lstm_infer.formats.whole_keras (the layers around the LSTM stack).

def _wrapped_layer_weights(model: _Model, layer: _Layer) -> list:
    """[(name, array or _Weight)] of the layer a wrapper (TimeDistributed) holds: in a
    Keras 3 archive under ``layers/<wrapper>/layer/vars``; legacy .h5 files and
    keras.Model objects list them as the wrapper's own weights."""
    index = getattr(model.get_weights, "__self__", None)
    if not isinstance(index, _V3Index):
        return model.get_weights(layer)["forward"]
    try:
        return index._cell_vars(index.group(layer), "layer", layer)
    except (OSError, RuntimeError, KeyError, UnicodeError) as e:
        raise KerasFileError(f"{index.source}: cannot read the weights of {layer.name!r} "
                             f"({e}); truncated or corrupted?") from None
