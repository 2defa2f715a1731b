"""ONNX adapter: the ``LSTM`` node(s) of an ONNX graph -> `LSTM`.

``onnx`` is imported only when a model is loaded (``pip install lstm_infer[onnx]``);
`is_onnx_file` reads the protobuf wire format itself and needs no import.

What is read
------------
Per ``LSTM`` node (ONNX opsets 1, 7, 14, 22), every attribute:

=================  ============================================================
direction          forward / reverse (a layer that reads each sequence
                   backwards) / bidirectional
hidden_size        checked against W, R, B, P (inferred from R when absent)
clip               bounds the gate pre-activations to [-clip, clip] (after
                   bias and peepholes), as onnxruntime does
input_forget       coupled input-forget gate: f = 1 - i
activations        3 per direction (f, g, h): Sigmoid, Tanh, Relu,
                   HardSigmoid(alpha, beta) (default 0.2, 0.5) and
                   Affine with alpha=1, beta=0 given explicitly (the identity).
                   Names are case-insensitive. Anything else (LeakyRelu, Elu,
                   ScaledTanh, Softsign, ...) is refused, naming it.
activation_alpha   consumed in order by the functions that take parameters,
activation_beta    as onnxruntime does: HardSigmoid and Affine take one alpha
                   and one beta each; Sigmoid, Tanh, Relu take none.
layout             0: X (T, B, I); 1: X (B, T, I) -> ``batch_first=True``
output_sequence    (LSTM-1 only) ignored: Y is always available
=================  ============================================================

Inputs: ``W`` (D, 4H, I), ``R`` (D, 4H, H), ``B`` (D, 8H) = [Wb, Rb] (fused into
one bias), ``P`` (D, 3H) = [p_i, p_o, p_f] (a P of zeros is dropped: it is the
same LSTM without peepholes). ONNX gate order i, o, f, c becomes i, f, g, o
(`gate_orders.to_canonical`). W, R, B, P must be constant: initializers, or
computed from them by simple constant subgraphs, which the loader evaluates
with numpy (Constant, Identity, Dropout, Cast, CastLike, Reshape, Transpose,
Squeeze, Unsqueeze, Flatten, Concat, Split, Slice, Gather, Shape, Expand,
ConstantOfShape, Add, Sub, Mul, Div, Neg); any other op is refused, naming it.

``sequence_lens``, ``initial_h`` and ``initial_c`` are run-time inputs, not
weights: the caller passes them to the model, as ``m(x, state=(h0, c0),
lengths=sequence_lens)``. They are not read from the file (when one is a
non-zero constant, the loader warns that it must be passed at call time).

Which nodes
-----------
``node="name"`` loads that LSTM node (matched by node name, or by the name of
one of its outputs when nodes are unnamed); ``node=["a", "b"]`` loads the
listed nodes as a stack, in that order. With ``node=None``:

- exactly one LSTM node in the graph: that node;
- several: they must form one chain, loaded as a stack of layers. A chain is
  an ordering n_0, ..., n_k of *all* LSTM nodes where the X input of n_j
  (j >= 1) is computed from the Y output of n_{j-1} alone, through ops that
  only move data (Transpose, Reshape, Squeeze, Flatten, Identity, Dropout,
  Cast; shapes may come from Shape/Gather/Concat/...). The loader checks this
  by running that subgraph on a tagged Y and requiring exactly the (T, B, D*H)
  layer input our stack feeds to the next layer (e.g. torch's export:
  Transpose(perm=[0, 2, 1, 3]) + Reshape([0, 0, -1]), or Squeeze(axis 1) for
  one direction). Anything else (two independent LSTMs, a residual Add, an
  encoder whose Y_h seeds a decoder) is ambiguous: the error lists the node
  names and asks for ``node=``. All nodes of a stack must have the same layout.

The model's input is the first node's X: ops before it (e.g. a Transpose from
batch-first data, an embedding) are not part of the model.

Outputs: ONNX vs lstm_infer
---------------------------
=========  ==============================  =================================
           ONNX (layout 0 / layout 1)      lstm_infer (batch_first False/True)
=========  ==============================  =================================
x          X (T, B, I) / (B, T, I)         the same
out        Y (T, D, B, H) / (B, T, D, H)   out (T, B, D*H) / (B, T, D*H)
h_n, c_n   Y_h (D, B, H) / (B, D, H)       h_n (D, B, H), both layouts
state      initial_h (D, B, H) / (B, D, H) state=(h0, c0) with h0 (D, B, H)
lengths    sequence_lens (B,)              lengths=(B,)
=========  ==============================  =================================

so ``out == Y.transpose(0, 2, 1, 3).reshape(T, B, D * H)`` (layout 0) and
``out == Y.reshape(B, T, D * H)`` (layout 1); ``h_n == Y_h`` (layout 0) and
``h_n == Y_h.transpose(1, 0, 2)`` (layout 1). For a stack of k nodes, ``h_n``
is the concatenation of the nodes' Y_h along axis 0 when the layers have the
same sizes (what torch's exporter outputs), else a list with one Y_h per node;
``state=`` takes the same form, and ``lengths=`` applies to every layer.

One difference from onnxruntime: for a sequence of length 0, onnxruntime
returns Y_h = Y_c = 0, lstm_infer returns the initial state (DESIGN §1).
"""
from __future__ import annotations

import math
import os
import sys
import warnings
from typing import Dict, Optional

import numpy as np

from .._build import CanonicalModel, build
from .._validate import check_shape
from ..config import Activation
from ._export import float_weights, model_of
from .errors import FormatError, check_file, guard
from .gate_orders import from_canonical, to_canonical


class ONNXFormatError(FormatError):
    """An ONNX model that cannot be loaded as an LSTM (the message names the problem)."""


# ----------------------------------------------------------------------------- sniffing
# ModelProto fields (onnx.proto) -> protobuf wire type: 0 varint, 2 length-delimited.
_MODEL_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}
_MAX_FIELDS = 100_000


def _read_varint(f) -> Optional[int]:
    value = shift = 0
    for _ in range(10):
        b = f.read(1)
        if not b:
            return None
        value |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return value
        shift += 7
    return None


def sniff(path) -> Optional[str]:
    """"onnx" if `path` holds a serialized ONNX ModelProto (`is_onnx_file`), else None."""
    return "onnx" if is_onnx_file(path) else None


def is_onnx_file(path) -> bool:
    """True if `path` holds a serialized ONNX ModelProto.

    Cheap: walks the top-level protobuf fields (seeking over their payloads, so
    a large file costs a few reads) and requires every field to be a ModelProto
    field of the right wire type, the last one to end exactly at the end of
    the file, and both ``ir_version`` and ``graph`` to be present. Never raises.
    """
    try:
        path = os.fspath(path)
        if not os.path.isfile(path):
            return False
        size = os.path.getsize(path)
        seen = set()
        with open(path, "rb") as f:
            for _ in range(_MAX_FIELDS):
                pos = f.tell()
                if pos == size:
                    break
                tag = _read_varint(f)
                if tag is None:
                    return False
                num, wire = tag >> 3, tag & 7
                if num == 0 or (num in _MODEL_FIELDS and _MODEL_FIELDS[num] != wire):
                    return False
                if wire == 0:
                    if _read_varint(f) is None:
                        return False
                elif wire == 2:
                    n = _read_varint(f)
                    if n is None or f.tell() + n > size:
                        return False
                    f.seek(n, os.SEEK_CUR)
                elif wire in (1, 5):  # unknown fixed-size field of a newer onnx
                    f.seek(8 if wire == 1 else 4, os.SEEK_CUR)
                    if f.tell() > size:
                        return False
                else:
                    return False
                seen.add(num)
            else:
                return False
        return 1 in seen and 7 in seen
    except (OSError, TypeError, ValueError):
        return False


# ----------------------------------------------------------------------------- reading
def _import_onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError as e:
        raise ImportError("loading ONNX models needs the 'onnx' package: "
                          "pip install onnx (or lstm_infer[onnx])") from e
    return onnx, helper, numpy_helper


def _load_model(obj, onnx):
    """(GraphProto, base_dir for external data, description for messages)."""
    from google.protobuf.message import DecodeError

    if isinstance(obj, onnx.ModelProto):
        if not obj.HasField("graph"):
            raise ONNXFormatError("the ModelProto has no graph")
        return obj.graph, None, "the ONNX model"
    if isinstance(obj, onnx.GraphProto):
        return obj, None, "the ONNX graph"
    if isinstance(obj, (bytes, bytearray, memoryview)):
        data, where, base = bytes(obj), "the ONNX bytes", None
    elif isinstance(obj, (str, os.PathLike)):
        path = check_file(obj, ONNXFormatError, "an .onnx file")
        with open(path, "rb") as f:
            data = f.read()
        where, base = path, os.path.dirname(os.path.abspath(path))
    else:
        raise TypeError(f"from_onnx expects an onnx.ModelProto or a path to an .onnx file; "
                        f"got {type(obj).__name__}")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ONNXFormatError(f"{where}: not a valid ONNX model (truncated or corrupted "
                              f"protobuf: {e})") from None
    if not model.HasField("graph") or not model.ir_version:
        raise ONNXFormatError(f"{where}: not an ONNX model (no graph / ir_version; truncated "
                              f"or corrupted, or another format)")
    return model.graph, base, where


class _NotConstant(Exception):
    """A value depends on a graph input (args: the input's name)."""


class _Unsupported(Exception):
    """A value needs an op the evaluator does not implement (args: op, node name)."""


class _Missing(Exception):
    """A name that nothing defines (args: the name)."""


class _TooBig(Exception):
    """An evaluation would allocate more than the budget (args: the message)."""


# Memory the constant evaluator may allocate for one load, beyond the file's own tensors
# (which are decoded, not counted): _EVAL_FLOOR + the file's tensor bytes. Real graphs
# compute weights from initializers by moving data (Transpose, Slice, Concat...), so
# they stay far below; a ConstantOfShape / Expand / broadcasting Add of a few bytes
# that asks for GBs is refused before anything is allocated.
_EVAL_FLOOR = 32 * 1024 * 1024
_MAX_NDIM = 32
# Elements of the tagged Y that checks a link between stacked LSTM nodes
_MAX_LINK_ELEMENTS = 1 << 20
# sub-byte element types: bits per element in raw_data; elements per int32_data entry
_PACKED = {"INT4": 4, "UINT4": 4, "FLOAT4E2M1": 4, "INT2": 2, "UINT2": 2, "FLOAT6E2M3": 6,
           "FLOAT6E3M2": 6}
_PER_INT32 = {4: 2, 2: 4, 6: 1}


def _packed_bits(onnx, data_type) -> Optional[int]:
    for name, bits in _PACKED.items():
        if getattr(onnx.TensorProto, name, None) == data_type:
            return bits
    return None


def _attrs(node, helper, where="") -> dict:
    out = {}
    for a in node.attribute:
        try:
            v = helper.get_attribute_value(a)
        except Exception as e:  # noqa: BLE001 - an attribute type onnx cannot read
            raise ONNXFormatError(f"{where}: node {node.name or node.op_type!r}: attribute "
                                  f"{a.name!r} cannot be read ({type(e).__name__}: {e})") from None
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif isinstance(v, list):
            v = [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in v]
        out[a.name] = v
    return out


def _shape_arg(v, what) -> list:
    """A shape given as a tensor: 1-D integers, at most _MAX_NDIM of them."""
    v = np.asarray(v)
    if v.dtype.kind not in "iu" or v.ndim > 1 or v.size > _MAX_NDIM:
        raise ValueError(f"{what} must be a 1-D integer tensor of at most {_MAX_NDIM} values; "
                         f"got {v.dtype} of shape {v.shape}")
    return [int(s) for s in v.ravel()]


def _axes(node, a, inputs, k):
    """Squeeze/Unsqueeze/ReduceX axes: an attribute (old opsets) or input k (opset 13+)."""
    if len(inputs) > k and inputs[k] is not None:
        v = np.asarray(inputs[k])
        if v.size > _MAX_NDIM:
            raise ValueError(f"{node.op_type} axes: {v.size} values (at most {_MAX_NDIM})")
        return [int(u) for u in v.ravel()]
    v = a.get("axes")
    return None if v is None else [int(x) for x in v]


class _Graph:
    """Name lookups in one graph and a small numpy evaluator for constant subgraphs."""

    def __init__(self, graph, base_dir, where, onnx, helper, numpy_helper):
        self.g, self.base_dir, self.where = graph, base_dir, where
        self.helper, self.nh = helper, numpy_helper
        self.init = {t.name: t for t in graph.initializer}
        self.sparse = {t.values.name for t in graph.sparse_initializer}
        self.inputs = {i.name: i for i in graph.input}
        self.producer = {}
        for n in graph.node:
            for o in n.output:
                if o:
                    self.producer[o] = n
        self._cache: Dict[str, np.ndarray] = {}
        # bytes the evaluator may allocate (see _EVAL_FLOOR); external data read from
        # beside the file adds to it as it is read
        self.budget = _EVAL_FLOOR + graph.ByteSize()
        self._spent = [0]  # allocated by evaluations whose values are cached

    # -- names
    @staticmethod
    def node_name(n) -> str:
        return n.name or f"<unnamed {n.op_type} -> {n.output[0] if n.output else ''}>"

    def node_label(self, n) -> str:
        return repr(self.node_name(n))

    def static_shape(self, name):
        """The static shape of a graph input / value_info, dims None when dynamic."""
        for vi in list(self.g.input) + list(self.g.value_info):
            if vi.name == name and vi.type.HasField("tensor_type") and \
                    vi.type.tensor_type.HasField("shape"):
                return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                        for d in vi.type.tensor_type.shape.dim]
        return None

    # -- evaluation
    def value(self, name, env=None, expect=None) -> np.ndarray:
        """The numpy value of `name`; `env` supplies non-constant names (memoised per call).

        Every allocation is checked against the budget before it is made (evaluations
        without `env` share one account, as their values are kept); `expect` is
        (shape with None for unknown dims, callback(shape) that raises), checked on
        the shape of `name` before it is materialised."""
        if env is None:
            if name not in self._cache:
                self._cache[name] = self._eval(name, {}, {}, self._spent, expect)
            return self._cache[name]
        return self._eval(name, dict(env), {}, [0], expect)

    def _eval(self, name, env, memo, acct, expect=None):
        if name in env:
            return env[name]
        if name in memo:
            return memo[name]
        if name in self.init:
            v = self.tensor(self.init[name], f"initializer {name!r}")
        elif name in self.sparse:
            raise ONNXFormatError(f"{self.where}: {name!r} is a sparse initializer; only dense "
                                  f"initializers are supported")
        elif name in self.producer:
            node = self.producer[name]
            inputs = [self._eval(i, env, memo, acct) if i else None for i in node.input]
            outs = self._run(node, inputs, acct, expect if len(node.output) == 1 else None)
            for o, v in zip(node.output, outs):
                if o:
                    memo[o] = v
            if name not in memo:
                raise _Unsupported(node.op_type, self.node_label(node))
            return memo[name]
        elif name in self.inputs:
            raise _NotConstant(name)
        else:
            raise _Missing(name)
        memo[name] = v
        return v

    def tensor(self, t, what) -> np.ndarray:
        """A TensorProto's array, its declared dims checked against the data it holds
        before anything is decoded (a dims of 2^40 with a few bytes is refused here)."""
        import onnx

        bad = f"{self.where}: {what}"
        if not isinstance(t, onnx.TensorProto):
            raise ONNXFormatError(f"{bad} must be a tensor; got {type(t).__name__}")
        try:
            dt = np.dtype(self.helper.tensor_dtype_to_np_dtype(t.data_type))
        except Exception:  # noqa: BLE001 - unknown / UNDEFINED data_type
            dt = None
        if dt is None or t.data_type == onnx.TensorProto.STRING:
            raise ONNXFormatError(f"{bad} has data_type {t.data_type}, which is not a numeric "
                                  f"tensor type")
        dims = list(t.dims)
        if len(dims) > _MAX_NDIM or any(d < 0 for d in dims):
            raise ONNXFormatError(f"{bad} has dims {dims[:40]}: a negative dimension or more "
                                  f"than {_MAX_NDIM} dimensions")
        if t.HasField("segment"):
            raise ONNXFormatError(f"{bad} is a segment of a tensor, which is not supported")
        n = math.prod(dims)
        bits = _packed_bits(onnx, t.data_type)
        nbytes = -(-n * bits // 8) if bits else n * dt.itemsize
        decl = f"{what} declares dims {dims} of {dt.name} ({nbytes} bytes of data)"
        ext = t.data_location == onnx.TensorProto.EXTERNAL
        if ext:
            self._check_external(t, decl, nbytes)
        elif t.HasField("raw_data"):
            raw = t.raw_data
            if len(raw) != nbytes:
                raise ONNXFormatError(f"{self.where}: {decl} but holds {len(raw)} bytes "
                                      f"(truncated or corrupted)")
            if not bits and sys.byteorder == "little":
                return np.frombuffer(raw, dt).reshape(dims)
        else:
            field = self.helper.tensor_dtype_to_field(t.data_type)
            count = len(getattr(t, field))
            want = -(-n // _PER_INT32[bits]) if bits else n * (2 if dt.kind == "c" else 1)
            if count != want:
                raise ONNXFormatError(f"{self.where}: {decl} but holds {count} values in "
                                      f"{field} (truncated or corrupted)")
        try:
            v = self.nh.to_array(t, self.base_dir or "")
        except Exception as e:  # noqa: BLE001 - external data missing or unreadable, ...
            raise ONNXFormatError(
                f"{bad} cannot be read ({type(e).__name__}: {e}); truncated or corrupted, or "
                f"its external data file is missing (pass the .onnx path, or a ModelProto "
                f"loaded with its external data)") from None
        if ext:
            self.budget += v.nbytes
        return v

    def _check_external(self, t, decl, nbytes):
        info = {e.key: e.value for e in t.external_data}
        if self.base_dir is None:
            raise ONNXFormatError(
                f"{self.where}: {decl} in an external data file ({info.get('location')!r}), "
                f"but the model was not read from a path: pass the .onnx path, or a ModelProto "
                f"loaded with its external data")
        try:
            offset = int(info.get("offset", 0))
            length = None if "length" not in info else int(info["length"])
        except ValueError:
            raise ONNXFormatError(f"{self.where}: {decl} in an external data file with offset "
                                  f"{info.get('offset')!r} and length {info.get('length')!r}, "
                                  f"which are not integers") from None
        if length is None:  # onnx reads to the end of the file: that must be the data
            loc = info.get("location", "")
            path = os.path.join(self.base_dir, loc)
            if loc and not os.path.isabs(loc) and ".." not in loc.replace("\\", "/").split("/") \
                    and os.path.isfile(path):
                length = os.path.getsize(path) - offset
        if length is not None and length != nbytes:
            raise ONNXFormatError(f"{self.where}: {decl} but its external data holds {length} "
                                  f"bytes (truncated or corrupted)")

    def _admit(self, node, shape, dtype, acct, expect, temp=1):
        """Check an op's output (shape, dtype) against `expect` and the budget before it
        is allocated; `temp` counts numpy's temporaries (in units of the output)."""
        shape = tuple(int(s) for s in shape)
        if len(shape) > _MAX_NDIM or any(s < 0 for s in shape):
            raise ValueError(f"output shape {list(shape)[:40]} has a negative dimension or more "
                             f"than {_MAX_NDIM} dimensions")
        if expect is not None:
            want, mismatch = expect
            if len(want) != len(shape) or any(w is not None and w != s
                                               for w, s in zip(want, shape)):
                mismatch(shape)
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize * temp
        if acct[0] + nbytes > self.budget:
            raise _TooBig(
                f"its {node.op_type} node {self.node_label(node)} would produce a tensor of "
                f"shape {shape} ({nbytes} bytes); the loader evaluates at most {self.budget} "
                f"bytes for this file ({_EVAL_FLOOR >> 20} MiB + the size of its graph and "
                f"external data: a memory bomb, or a model that stores its weights as "
                f"ConstantOfShape/Expand?)")
        acct[0] += nbytes

    def _run(self, node, x, acct, expect=None) -> list:
        op, a = node.op_type, _attrs(node, self.helper, self.where)
        if node.domain not in ("", "ai.onnx"):
            raise _Unsupported(f"{node.domain}.{op}", self.node_label(node))
        label = self.node_label(node)
        if op == "Constant":
            if "value" in a:
                return [self.tensor(a["value"], f"Constant node {label}: value")]
            for k, dt in (("value_float", np.float32), ("value_floats", np.float32),
                          ("value_int", np.int64), ("value_ints", np.int64)):
                if k in a:
                    return [np.asarray(a[k], dtype=dt)]
            raise _Unsupported(f"Constant({', '.join(a) or 'no value'})", self.node_label(node))
        if op in ("Identity", "Dropout"):
            return [x[0]]
        if op in ("Cast", "CastLike"):
            dt = np.dtype(self.helper.tensor_dtype_to_np_dtype(a["to"]) if op == "Cast"
                          else x[1].dtype)
            if dt.kind not in "biufV":
                raise ValueError(f"Cast to {dt} (not a numeric type)")
            self._admit(node, x[0].shape, dt, acct, expect)
            return [x[0].astype(dt)]
        if op == "Reshape":
            shape = _shape_arg(x[1], "Reshape's shape") if len(x) > 1 else list(a["shape"])
            if not a.get("allowzero", 0):
                shape = [x[0].shape[i] if s == 0 else s for i, s in enumerate(shape)]
            if not x[0].flags.c_contiguous:  # numpy copies
                self._admit(node, x[0].shape, x[0].dtype, acct, None)
            return [x[0].reshape(shape)]
        if op == "Transpose":
            return [np.transpose(x[0], a.get("perm"))]
        if op == "Squeeze":
            ax = _axes(node, a, x, 1)
            return [np.squeeze(x[0], axis=None if ax is None else tuple(ax))]
        if op == "Unsqueeze":
            v, ax = x[0], _axes(node, a, x, 1)
            ax = sorted(s % (v.ndim + len(ax)) for s in ax)
            for s in ax:
                v = np.expand_dims(v, s)
            return [v]
        if op == "Flatten":
            ax = a.get("axis", 1)
            ax = ax + x[0].ndim if ax < 0 else ax
            if not x[0].flags.c_contiguous:
                self._admit(node, x[0].shape, x[0].dtype, acct, None)
            return [x[0].reshape(math.prod(x[0].shape[:ax]), math.prod(x[0].shape[ax:]))]
        if op == "Concat":
            vs = [v for v in x if v is not None]
            if vs:
                self._admit(node, (sum(v.size for v in vs),), np.result_type(*vs), acct, None)
            return [np.concatenate(vs, axis=a["axis"])]
        if op == "Split":
            v, axis = x[0], a.get("axis", 0)
            n = len(node.output)
            if len(x) > 1 and x[1] is not None:
                sizes = [int(s) for s in np.asarray(x[1]).ravel()[:n + 1]]
            else:
                sizes = a.get("split")
            if sizes is None:
                step = -(-v.shape[axis] // n)
                sizes = [min(step, v.shape[axis] - i * step) for i in range(n)]
            if len(sizes) != n or any(s < 0 for s in sizes) or sum(sizes) != v.shape[axis]:
                raise ValueError(f"Split sizes {sizes} do not divide axis {axis} of shape "
                                 f"{v.shape} into {n} outputs")
            return np.split(v, np.cumsum(sizes)[:-1], axis=axis)
        if op == "Slice":
            v = x[0]
            if len(x) > 1:
                starts, ends = x[1].ravel(), x[2].ravel()
                axes = x[3].ravel() if len(x) > 3 and x[3] is not None else range(len(starts))
                steps = x[4].ravel() if len(x) > 4 and x[4] is not None else [1] * len(starts)
            else:
                starts, ends = a["starts"], a["ends"]
                axes = a.get("axes", range(len(starts)))
                steps = [1] * len(starts)
            if len(starts) > _MAX_NDIM:
                raise ValueError(f"Slice: {len(starts)} starts (at most {_MAX_NDIM})")
            idx = [slice(None)] * v.ndim
            for s, e, ax, st in zip(starts, ends, axes, steps):
                big = np.iinfo(np.int64).max // 2
                s, e = int(np.clip(s, -big, big)), int(np.clip(e, -big, big))
                idx[int(ax)] = slice(s, e, int(st))
            return [v[tuple(idx)]]
        if op == "Gather":
            ax = a.get("axis", 0)
            ax = ax + x[0].ndim if -x[0].ndim <= ax < 0 else ax
            if not 0 <= ax < x[0].ndim:
                raise ValueError(f"Gather axis {a.get('axis', 0)} for a {x[0].ndim}-D tensor")
            self._admit(node, x[0].shape[:ax] + np.shape(x[1]) + x[0].shape[ax + 1:],
                        x[0].dtype, acct, expect)
            return [np.take(x[0], x[1].astype(np.int64), axis=ax)]
        if op == "Shape":
            shape = np.asarray(x[0].shape, dtype=np.int64)
            return [shape[a.get("start", 0):a.get("end", None)]]
        if op == "ConstantOfShape":
            fill = self.tensor(a["value"], f"ConstantOfShape node {label}: value") \
                if "value" in a else np.zeros(1, np.float32)
            if fill.size != 1:
                raise ValueError(f"ConstantOfShape's value must hold one element; got shape "
                                 f"{fill.shape}")
            shape = _shape_arg(x[0], "ConstantOfShape's shape")
            self._admit(node, shape, fill.dtype, acct, expect)
            return [np.full(shape, fill.ravel()[0], dtype=fill.dtype)]
        if op == "Expand":
            shape = np.broadcast_shapes(x[0].shape, tuple(_shape_arg(x[1], "Expand's shape")))
            self._admit(node, shape, x[0].dtype, acct, expect)
            return [np.broadcast_to(x[0], shape).copy()]
        if op in ("Add", "Sub", "Mul", "Div"):
            fn = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}.get(op)
            dt = np.result_type(x[0], x[1])
            # integer Div computes in float64 first: count its temporaries too
            self._admit(node, np.broadcast_shapes(x[0].shape, x[1].shape), dt, acct, expect,
                        temp=1 if fn else 3)
            if fn is None:  # integer Div truncates toward zero
                fn = (lambda p, q: np.fix(np.true_divide(p, q))) if dt.kind in "iu" \
                    else np.true_divide
            return [fn(x[0], x[1]).astype(dt, copy=False)]
        if op == "Neg":
            self._admit(node, x[0].shape, x[0].dtype, acct, expect)
            return [np.negative(x[0])]
        raise _Unsupported(op, self.node_label(node))

    def constant(self, name, what, node, expect=None) -> np.ndarray:
        """A weight's value, or an error that says why it is not a constant (`expect`:
        see `value`)."""
        label = self.node_label(node)
        try:
            return self.value(name, expect=expect)
        except _NotConstant as e:
            raise ONNXFormatError(
                f"{self.where}: LSTM node {label}: {what} ({name!r}) is not constant: it is "
                f"computed from graph input {e.args[0]!r}; the weights must be in the file "
                f"(initializers or constant subgraphs)") from None
        except _Unsupported as e:
            raise ONNXFormatError(
                f"{self.where}: LSTM node {label}: {what} ({name!r}) is computed by a {e.args[0]} "
                f"node ({e.args[1]}), which the loader does not evaluate; it evaluates "
                f"{', '.join(_CONST_OPS)}") from None
        except _Missing as e:
            raise ONNXFormatError(
                f"{self.where}: LSTM node {label}: {what} ({name!r}) is missing: {e.args[0]!r} is "
                f"neither an initializer, a graph input, nor the output of a node (missing "
                f"initializer; truncated file?)") from None
        except _TooBig as e:
            raise ONNXFormatError(f"{self.where}: LSTM node {label}: {what} ({name!r}) is "
                                  f"refused: {e.args[0]}") from None
        except FormatError:
            raise
        except Exception as e:  # noqa: BLE001 - any op given inputs it cannot take
            msg = "nested too deeply" if isinstance(e, RecursionError) else \
                f"{type(e).__name__}: {e}"
            raise ONNXFormatError(
                f"{self.where}: LSTM node {label}: {what} ({name!r}): its constant subgraph "
                f"cannot be evaluated ({msg})") from None

    def maybe_constant(self, name):
        """The value if `name` is a constant the evaluator can compute, else None."""
        try:
            return self.value(name)
        except _TooBig as e:
            raise ONNXFormatError(f"{self.where}: {name!r} is refused: {e.args[0]}") from None
        except FormatError:
            raise
        except Exception:  # noqa: BLE001 - not a constant, or not one we can compute
            return None

    def lstm_sources(self, name, lstm_ids) -> set:
        """(LSTM node index, output index) pairs `name` is computed from, not looking
        through LSTM nodes."""
        found, seen, stack = set(), set(), [name]
        while stack:
            n = stack.pop()
            if not n or n in seen:
                continue
            seen.add(n)
            node = self.producer.get(n)
            if node is None:
                continue
            if id(node) in lstm_ids:
                found.add((lstm_ids[id(node)], list(node.output).index(n)))
                continue
            stack.extend(node.input)
        return found


_CONST_OPS = ("Constant", "Identity", "Dropout", "Cast", "CastLike", "Reshape", "Transpose",
              "Squeeze", "Unsqueeze", "Flatten", "Concat", "Split", "Slice", "Gather", "Shape",
              "Expand", "ConstantOfShape", "Add", "Sub", "Mul", "Div", "Neg")


# ----------------------------------------------------------------------------- one node
_KNOWN_ATTRS = {"activation_alpha", "activation_beta", "activations", "clip", "direction",
                "hidden_size", "input_forget", "layout", "output_sequence"}
_DIRECTIONS = ("forward", "reverse", "bidirectional")
# ONNX activation -> (our name, takes alpha, takes beta), as onnxruntime consumes them
_ACTS = {"sigmoid": ("sigmoid", False, False), "tanh": ("tanh", False, False),
         "relu": ("relu", False, False), "hardsigmoid": ("hard_sigmoid", True, True),
         "affine": ("linear", True, True)}
_REFUSED_ACTS = ("leakyrelu", "thresholdedrelu", "scaledtanh", "elu", "softsign", "softplus")


def _activations(a, D, label, where):
    """One (f, g, h) triple of Activation per direction."""
    names = a.get("activations")
    if names is None:
        return [("sigmoid", "tanh", "tanh")] * D
    if len(names) != 3 * D:
        raise ONNXFormatError(f"{where}: LSTM node {label}: activations must list 3 functions "
                              f"per direction ({3 * D}); got {len(names)}: {names}")
    alphas, betas = list(a.get("activation_alpha", [])), list(a.get("activation_beta", []))
    acts = []
    for name in names:
        key = name.lower()
        if key not in _ACTS:
            known = "" if key in _REFUSED_ACTS else " (not an ONNX LSTM activation)"
            raise ONNXFormatError(
                f"{where}: LSTM node {label}: activation {name!r}{known} is not supported; "
                f"supported: Sigmoid, Tanh, Relu, HardSigmoid (alpha, beta), Affine with "
                f"alpha=1, beta=0")
        ours, takes_alpha, takes_beta = _ACTS[key]
        alpha = alphas.pop(0) if (takes_alpha and alphas) else None
        beta = betas.pop(0) if (takes_beta and betas) else None
        if key == "hardsigmoid":
            acts.append(Activation("hard_sigmoid", 0.2 if alpha is None else float(alpha),
                                   0.5 if beta is None else float(beta)))
        elif key == "affine":
            if alpha is None or beta is None or alpha != 1.0 or beta != 0.0:
                raise ONNXFormatError(
                    f"{where}: LSTM node {label}: activation {name!r} with alpha={alpha}, "
                    f"beta={beta} is not supported: only Affine with explicit alpha=1, beta=0 "
                    f"(the identity); runtimes disagree on Affine's default parameters")
            acts.append(Activation("linear"))
        else:
            acts.append(Activation(ours))
    return [tuple(acts[3 * d:3 * d + 3]) for d in range(D)]


def _float(a: np.ndarray) -> np.ndarray:
    """bfloat16 / float8 initializers (ml_dtypes arrays, not numpy floats) -> float32."""
    return a.astype(np.float32) if a.dtype.kind == "V" and "float" in a.dtype.name else a


def _check(arr, shape, what, label, where, attrs):
    """A stacked (num_directions, ...) tensor's shape; per direction, the model runs the
    shared canonical checker on the slices."""
    check_shape(arr, shape, f"{where}: LSTM node {label}: {what}", why=f"({attrs})",
                error=ONNXFormatError)


# LSTM attribute -> (Python type of its value, a list of them?), as onnx reads them
_ATTR_TYPES = {"hidden_size": (int, False), "layout": (int, False),
               "input_forget": (int, False), "output_sequence": (int, False),
               "direction": (str, False), "clip": (float, False), "activations": (str, True),
               "activation_alpha": (float, True), "activation_beta": (float, True)}


def _check_attr_types(a, label, where):
    """Each attribute of an LSTM node has the type ONNX defines for it (an INT given for
    a FLOAT is fine; a FLOAT for an INT, a string for a number, a list for one... not)."""
    def ok(u, kind):
        if isinstance(u, bool):
            return False
        return isinstance(u, (int, float)) if kind is float else isinstance(u, kind)

    for k, (kind, many) in _ATTR_TYPES.items():
        if k not in a:
            continue
        v = a[k]
        if not (isinstance(v, list) and all(ok(u, kind) for u in v) if many else ok(v, kind)):
            want = (f"a list of {kind.__name__}s" if many else
                    f"an {kind.__name__}" if kind is int else f"a {kind.__name__}")
            raise ONNXFormatError(f"{where}: LSTM node {label}: attribute {k!r} must be {want}; "
                                  f"got {v!r:.80}")


def _read_node(g: _Graph, node, notes):
    """(canonical direction dicts, layer options, layout, input size) of one LSTM node
    (or onnxruntime's com.microsoft.DynamicQuantizeLSTM: `onnx_quantized`); warnings are
    appended to `notes`."""
    if node.op_type == "DynamicQuantizeLSTM":
        from . import onnx_quantized
        return onnx_quantized.read_node(g, node, notes, _read_lstm_node)
    return _read_lstm_node(g, node, notes)


def _read_lstm_node(g: _Graph, node, notes, weights=None, max_inputs=8):
    """`_read_node` of an LSTM node; `weights` (W, R), when given, stand for its inputs 1
    and 2 (DynamicQuantizeLSTM's dequantized weights, checked here like any W, R)."""
    where, label = g.where, g.node_label(node)
    a = _attrs(node, g.helper, where)
    unknown = set(a) - _KNOWN_ATTRS
    if unknown:
        raise ONNXFormatError(f"{where}: LSTM node {label}: unknown attribute(s) "
                              f"{sorted(unknown)}; expected some of {sorted(_KNOWN_ATTRS)}")
    direction = a.get("direction", "forward")
    if direction not in _DIRECTIONS:
        raise ONNXFormatError(f"{where}: LSTM node {label}: direction must be one of "
                              f"{_DIRECTIONS}; got {direction!r}")
    _check_attr_types(a, label, where)
    D = 2 if direction == "bidirectional" else 1
    layout = a.get("layout", 0)
    if layout not in (0, 1):
        raise ONNXFormatError(f"{where}: LSTM node {label}: layout must be 0 or 1; got {layout}")
    ins = list(node.input) + [""] * (max_inputs - len(node.input))
    if len(node.input) > max_inputs or len(node.output) > 3:
        raise ONNXFormatError(f"{where}: LSTM node {label}: expected at most {max_inputs} "
                              f"inputs and 3 outputs; got {len(node.input)} and "
                              f"{len(node.output)}")
    for k, n in ((0, "X"), (1, "W"), (2, "R")):
        if not ins[k]:
            raise ONNXFormatError(f"{where}: LSTM node {label}: required input {n} is missing")

    H = a.get("hidden_size")
    if H is not None and H < 1:
        raise ONNXFormatError(f"{where}: LSTM node {label}: hidden_size must be positive; "
                              f"got {H}")
    xshape = g.static_shape(ins[0])
    I = xshape[2] if xshape is not None and len(xshape) == 3 else None

    def expect(what, want):
        """Compare a weight's shape with what the node needs before it is materialised
        (an evaluated weight's shape is known first)."""
        def mismatch(shape):
            fmt = "(" + ", ".join("?" if w is None else str(w) for w in want) + ")"
            raise ONNXFormatError(
                f"{where}: LSTM node {label}: {what} must have shape {fmt} "
                f"(direction={direction!r}, hidden_size={'?' if H is None else H}, "
                f"input_size={'?' if I is None else I}); its constant subgraph would produce "
                f"{tuple(shape)}")
        return want, mismatch

    def floating(arr, n):
        arr = _float(arr)
        if arr.dtype.kind != "f":
            raise ONNXFormatError(f"{where}: LSTM node {label}: {n} must be a floating-point "
                                  f"tensor; got {arr.dtype}")
        return arr

    W = floating(weights[0] if weights is not None else g.constant(ins[1], "W", node, expect(
        "W (num_directions, 4*hidden_size, input_size)", (D, None if H is None else 4 * H, I))),
        "W")
    if W.ndim != 3 or W.shape[1] % 4 or not W.shape[1] or not W.shape[2]:
        raise ONNXFormatError(f"{where}: LSTM node {label}: W must have shape "
                              f"(num_directions, 4*hidden_size, input_size); got {W.shape}")
    if H is None:
        H = W.shape[1] // 4
    I = W.shape[2]
    R = floating(weights[1] if weights is not None else g.constant(ins[2], "R", node, expect(
        "R (num_directions, 4*hidden_size, hidden_size)", (D, 4 * H, H))), "R")
    desc = f"direction={direction!r}, hidden_size={H}, input_size={I}"
    _check(W, (D, 4 * H, I), "W (num_directions, 4*hidden_size, input_size)", label, where, desc)
    _check(R, (D, 4 * H, H), "R (num_directions, 4*hidden_size, hidden_size)", label, where, desc)
    Bias = P = None
    if ins[3]:
        what = "B (num_directions, 8*hidden_size)"
        Bias = _float(g.constant(ins[3], "B", node, expect(what, (D, 8 * H))))
        _check(Bias, (D, 8 * H), what, label, where, desc)
    if ins[7]:
        what = "P (num_directions, 3*hidden_size)"
        P = _float(g.constant(ins[7], "P", node, expect(what, (D, 3 * H))))
        _check(P, (D, 3 * H), "P (num_directions, 3*hidden_size)", label, where, desc)
        if not np.any(P):
            P = None  # zero peepholes: the same LSTM, without the extra work
    xshape = g.static_shape(ins[0])
    if xshape is not None and len(xshape) == 3 and xshape[2] is not None and xshape[2] != I:
        raise ONNXFormatError(f"{where}: LSTM node {label}: X has input_size {xshape[2]} "
                              f"(declared shape {xshape}) but W has input_size {I}")

    for k, n in ((5, "initial_h"), (6, "initial_c")):
        st = g.static_shape(ins[k]) if ins[k] else None
        want = (D, None, H) if layout == 0 else (None, D, H)
        if st is not None and (len(st) != 3 or any(
                s is not None and w is not None and s != w for s, w in zip(st, want))):
            axes = "(num_directions, B, H)" if layout == 0 else "(B, num_directions, H)"
            raise ONNXFormatError(f"{where}: LSTM node {label}: {n} ({ins[k]!r}) must have shape "
                                  f"{axes} = {tuple('B' if w is None else w for w in want)} "
                                  f"({desc}, layout={layout}); declared {st}")

    wdt = np.result_type(W.dtype, np.float32)
    dirs = []
    for d in range(D):
        w = {"w_ih": to_canonical(W[d], "onnx"), "w_hh": to_canonical(R[d], "onnx")}
        if Bias is not None:
            b = np.add(Bias[d, :4 * H], Bias[d, 4 * H:], dtype=wdt)
            w["b"] = to_canonical(b, "onnx")
        if P is not None:
            w["p_i"], w["p_o"], w["p_f"] = P[d, :H], P[d, H:2 * H], P[d, 2 * H:]
        dirs.append(w)

    acts = _activations(a, D, label, where)
    clip = a.get("clip")
    if clip is not None and not (np.isfinite(clip) and clip > 0):
        raise ONNXFormatError(f"{where}: LSTM node {label}: clip must be a positive number; "
                              f"got {clip}")
    input_forget = a.get("input_forget", 0)
    if input_forget not in (0, 1):
        raise ONNXFormatError(f"{where}: LSTM node {label}: input_forget must be 0 or 1; "
                              f"got {input_forget}")
    opts = {"direction": direction, "activations": acts[0] if D == 1 else acts,
            "clip": None if clip is None else float(clip), "input_forget": bool(input_forget)}

    for k, n in ((4, "sequence_lens"), (5, "initial_h"), (6, "initial_c")):
        if ins[k]:
            v = g.maybe_constant(ins[k])
            if v is not None and (k == 4 or np.any(v)):
                what = "lengths=" if k == 4 else "state=(h0, c0)"
                notes.append(f"{where}: LSTM node {label}: {n} ({ins[k]!r}) is a constant "
                             f"in the file; lstm_infer does not store it: pass it as "
                             f"{what} when calling the model")
    return dirs, opts, layout, D, H


# ----------------------------------------------------------------------------- chains
def _check_link(g: _Graph, prev, prev_dims, nxt, layout, x0_name, x0_features):
    """Does nxt's X equal prev's Y as the (T, B, D*H) layer input? Checked by evaluating
    the subgraph between them on a Y whose every element holds its own index."""
    D, H = prev_dims
    shape = g.static_shape(x0_name) or []
    dims = [s for s in shape[:2]] + [None, None]
    T, B = (dims[0], dims[1]) if layout == 0 else (dims[1], dims[0])
    T, B = T or 3, B or 2
    hint = ""
    if T * B * D * H > _MAX_LINK_ELEMENTS:  # a declared T, B too large to tag every element
        T, B = 3, 2
        hint = " (checked with T=3, B=2: the declared T, B are too large to check)"
    codes = np.arange(T * D * B * H, dtype=np.float64).reshape(T, D, B, H)
    # x0 takes no memory: it is there for shape computations only
    if layout == 0:
        y, want = codes, codes.transpose(0, 2, 1, 3).reshape(T, B, D * H)
        x0 = np.broadcast_to(np.float64(np.nan), (T, B, x0_features))
    else:
        y, want = codes.transpose(2, 0, 1, 3), codes.transpose(2, 0, 1, 3).reshape(B, T, D * H)
        x0 = np.broadcast_to(np.float64(np.nan), (B, T, x0_features))
    # the model input is there for shape computations only: NaN marks any data it adds
    env = {prev.output[0]: y, x0_name: x0}
    a, b = g.node_label(prev), g.node_label(nxt)
    try:
        got = g.value(nxt.input[0], env)
    except _NotConstant as e:
        return f"LSTM node {b}'s X also depends on graph input {e.args[0]!r}"
    except _Unsupported as e:
        return (f"the ops between LSTM nodes {a} and {b} include {e.args[0]} ({e.args[1]}), "
                f"which only moves data in none of the supported ways")
    except Exception as e:  # noqa: BLE001 - _Missing, an op given inputs it cannot take...
        if isinstance(e, RecursionError):
            e = "nested too deeply"
        return f"the subgraph between LSTM nodes {a} and {b} cannot be followed ({e}){hint}"
    if got.dtype.kind == "f" and np.isnan(got).any():
        return (f"LSTM node {b}'s X is computed from {a}'s Y and from the model input "
                f"{x0_name!r} (e.g. a residual connection), not from Y alone")
    if got.shape != want.shape or not np.array_equal(got, want):
        return (f"LSTM node {b}'s X is computed from {a}'s Y but is not its "
                f"({'T, B' if layout == 0 else 'B, T'}, D*H) sequence (got shape "
                f"{got.shape} for Y of shape {y.shape}; expected {want.shape} in order){hint}")
    return None


def _find_nodes(g: _Graph, node):
    lstms = [n for n in g.g.node if (n.op_type == "LSTM" and n.domain in ("", "ai.onnx")) or
             (n.op_type == "DynamicQuantizeLSTM" and n.domain == "com.microsoft")]
    if not lstms:
        others = sorted({f"{n.domain + '.' if n.domain else ''}{n.op_type}" for n in g.g.node
                         if n.op_type in ("GRU", "RNN", "Scan", "Loop") or "LSTM" in n.op_type})
        hint = f"; it has {others}, which the loader does not read" if others else ""
        raise ONNXFormatError(f"{g.where}: no LSTM node in the graph ({len(g.g.node)} nodes)"
                              f"{hint}")
    names = [g.node_name(n) for n in lstms]
    if node is not None:
        wanted = [node] if isinstance(node, str) else node
        picked = []
        for w in wanted:
            hits = [n for n in lstms if n.name == w] or \
                [n for n in lstms if not n.name and w in n.output]
            if len(hits) != 1:
                other = [n for n in g.g.node if n.name == w]
                kind = f" (it is a {other[0].op_type} node)" if other and not hits else ""
                what = "several LSTM nodes are" if hits else "no LSTM node is"
                raise ONNXFormatError(f"{g.where}: {what} named {w!r}{kind}; LSTM nodes: {names}")
            picked.append(hits[0])
        return lstms, picked
    return lstms, None


def _chain_order(g: _Graph, lstms):
    """All LSTM nodes as one chain (head first), or an error that explains why not."""
    ids = {id(n): i for i, n in enumerate(lstms)}
    preds = [g.lstm_sources(n.input[0], ids) for n in lstms]
    names = [g.node_name(n) for n in lstms]
    problems = []
    for j, p in enumerate(preds):
        if len(p) > 1 or any(o != 0 for _, o in p):
            src = sorted(f"{names[i]} output {o}" for i, o in p)
            problems.append(f"{names[j]}'s X comes from {src}")
    nxt = {}
    for j, p in enumerate(preds):
        for i, _ in p:
            nxt.setdefault(i, []).append(j)
    heads = [j for j, p in enumerate(preds) if not p]
    if not problems:
        if len(heads) != 1:
            problems.append(f"{len(heads)} of them read no other LSTM: "
                            f"{[names[j] for j in heads]}")
        for i, js in nxt.items():
            if len(js) > 1:
                problems.append(f"{names[i]} feeds {[names[j] for j in js]}")
    if problems:
        raise ONNXFormatError(
            f"{g.where}: the graph has {len(lstms)} LSTM nodes {names} that do not form one "
            f"chain ({'; '.join(problems)}); choose one with node='name' or a stack with "
            f"node=['first', 'second', ...]")
    order = [heads[0]]
    while order[-1] in nxt:
        order.append(nxt[order[-1]][0])
    return [lstms[j] for j in order]


# ----------------------------------------------------------------------------- entry point
def from_onnx(obj, node=None, *, dtype=None):
    """Build an LSTM from the LSTM node(s) of an ONNX model (`read_onnx`'s data, built).

    Parameters
    ----------
    obj : onnx.ModelProto, onnx.GraphProto, bytes, or a path to an .onnx file
        (external data is read from beside the file).
    node : str or list of str, optional
        The LSTM node to load (by node name; by an output's name for unnamed
        nodes), or a list of names loaded as a stack. Default: the only LSTM
        node, or the single chain that all LSTM nodes form (see the module
        docstring for the rule).
    dtype : "float32" / "float64", optional
        Default: float64 if the weights are float64, else float32.

    Returns
    -------
    LSTM
        ``batch_first`` is True for ``layout=1``. Call it as
        ``m(X, state=(initial_h, initial_c), lengths=sequence_lens)``; see the
        module docstring for how ``out`` / ``h_n`` relate to ONNX's Y / Y_h.

    Raises
    ------
    ImportError if onnx is not installed; ONNXFormatError (a ValueError) for
    files that are not ONNX, truncated or corrupted, missing or non-constant
    weights, shapes that disagree with the attributes, unsupported activations
    or ops, and ambiguous graphs.
    """
    notes = []
    data = _read(obj, node, dtype, notes)
    with guard(ONNXFormatError, _where(obj)):
        model = build(data, ONNXFormatError)
    for msg in notes:  # after the net: a warnings filter set to "error" raises them as is
        warnings.warn(msg, stacklevel=2)
    return model


def read_onnx(obj, node=None, *, dtype=None) -> CanonicalModel:
    """The numpy core of `from_onnx`: the chosen node(s)' canonical weights (ONNX gate
    order converted, Wb + Rb fused) and constructor options, with every check and
    warning of `from_onnx` but the model's own (values, options:
    `lstm_infer._build.build`)."""
    notes = []
    data = _read(obj, node, dtype, notes)
    for msg in notes:
        warnings.warn(msg, stacklevel=2)
    return data


def _read(obj, node, dtype, notes) -> CanonicalModel:
    """`read_onnx`, its warnings appended to `notes`."""
    onnx, helper, numpy_helper = _import_onnx()
    # the caller's arguments first, outside the net: a TypeError there is the caller's
    if node is not None:
        wanted = [node] if isinstance(node, str) else node
        if not isinstance(wanted, (list, tuple)) or not wanted or \
                not all(isinstance(w, str) for w in wanted):
            raise TypeError(f"node must be an LSTM node name or a list of names; got {node!r}")
    if not isinstance(obj, (onnx.ModelProto, onnx.GraphProto, bytes, bytearray, memoryview,
                            str, os.PathLike)):
        raise TypeError(f"from_onnx expects an onnx.ModelProto or a path to an .onnx file; "
                        f"got {type(obj).__name__}")
    if dtype is not None and np.dtype(dtype).name not in ("float32", "float64"):
        raise ValueError(f"dtype must be float32 or float64; got {np.dtype(dtype).name}")
    with guard(ONNXFormatError, _where(obj)):
        return _from_onnx(obj, node, dtype, notes, onnx, helper, numpy_helper)


def _where(obj) -> str:
    """What the net's messages call `obj`."""
    return str(os.fspath(obj)) if isinstance(obj, (str, os.PathLike)) else "the ONNX model"


def _from_onnx(obj, node, dtype, notes, onnx, helper, numpy_helper):
    graph, base, where = _load_model(obj, onnx)
    g = _Graph(graph, base, where, onnx, helper, numpy_helper)
    lstms, picked = _find_nodes(g, node)
    chain = picked if picked is not None else (
        lstms if len(lstms) == 1 else _chain_order(g, lstms))
    if picked is not None and len(picked) > 1:
        ids = {id(n): i for i, n in enumerate(lstms)}
        for prev, nxt in zip(picked, picked[1:]):
            src = g.lstm_sources(nxt.input[0], ids)
            if src != {(ids[id(prev)], 0)}:
                raise ONNXFormatError(
                    f"{where}: LSTM node {g.node_label(nxt)}'s X is not computed from the Y of "
                    f"{g.node_label(prev)} alone (it comes from "
                    f"{sorted((g.node_name(lstms[i]), o) for i, o in src) or 'no LSTM'}); "
                    f"node= must list a chain in order")

    layers, options, layouts, dims = [], [], [], []
    for n in chain:
        dirs, opts, layout, D, H = _read_node(g, n, notes)
        layers.append(dirs)
        options.append(opts)
        layouts.append(layout)
        dims.append((D, H))
    if len(set(layouts)) > 1:
        raise ONNXFormatError(f"{where}: the LSTM nodes {[g.node_name(n) for n in chain]} have "
                              f"different layouts {layouts}; a stack needs one layout")
    in0 = layers[0][0]["w_ih"].shape[1]
    for k in range(1, len(chain)):
        problem = _check_link(g, chain[k - 1], dims[k - 1], chain[k], layouts[0],
                              chain[0].input[0], in0)
        if problem:
            raise ONNXFormatError(f"{where}: cannot stack the LSTM nodes "
                                  f"{[g.node_name(n) for n in chain]}: {problem}; choose one "
                                  f"with node='name'")
        I = layers[k][0]["w_ih"].shape[1]
        if I != dims[k - 1][0] * dims[k - 1][1]:
            raise ONNXFormatError(f"{where}: LSTM node {g.node_label(chain[k])} has input_size "
                                  f"{I} but follows {g.node_label(chain[k - 1])} whose Y has "
                                  f"D*H = {dims[k - 1][0] * dims[k - 1][1]} features")
    if len(chain) > 1:
        lens = {n.input[4] if len(n.input) > 4 else "" for n in chain}
        if len(lens) > 1:
            notes.append(f"{where}: the stacked LSTM nodes read different sequence_lens "
                         f"inputs {sorted(lens)}; lstm_infer applies one lengths= to every "
                         f"layer")
    opts = {"batch_first": layouts[0] == 1, "layer_options": options, "dtype": dtype}
    quantized = [n.op_type == "DynamicQuantizeLSTM" for n in chain]
    if any(quantized):  # its int8 weights and scales, as they are: our int8 mode
        from .onnx_quantized import check_stack
        check_stack(g, chain, quantized)
        opts["quantization"] = "int8"
    return CanonicalModel(layers, opts, where)


# ----------------------------------------------------------------------------- export
# ONNX can express every activation of ours: name -> (ONNX name, takes alpha and beta)
_ONNX_ACTIVATION_NAMES = {"sigmoid": ("Sigmoid", False), "tanh": ("Tanh", False),
                          "relu": ("Relu", False), "hard_sigmoid": ("HardSigmoid", True),
                          "linear": ("Affine", True)}  # Affine(alpha=1, beta=0) = identity


def _onnx_activations(spec) -> dict:
    """A layer's LSTM attributes activations / activation_alpha / activation_beta (none
    for the default sigmoid, tanh, tanh)."""
    from ..config import DEFAULT_ACTIVATIONS

    if all(tuple(t) == tuple(DEFAULT_ACTIVATIONS) for t in spec.activations):
        return {}
    names, alphas, betas = [], [], []
    for trip in spec.activations:
        for a in trip:
            name, params = _ONNX_ACTIVATION_NAMES[a.name]
            names.append(name)
            if params:  # consumed in order by the functions that take them (onnxruntime)
                alphas.append(1.0 if a.name == "linear" else a.alpha)
                betas.append(0.0 if a.name == "linear" else a.beta)
    out = {"activations": names}
    if alphas:
        out.update(activation_alpha=alphas, activation_beta=betas)
    return out


def to_onnx(model_or_data, path=None, *, opset: int = 17, layout: int = 0,
            sequence_lens: bool = False, initial_state: bool = False,
            dequantize: bool = False):
    """An ONNX graph of a model (an LSTM or its `CanonicalModel`), runnable by
    onnxruntime: the inverse of `from_onnx` (``from_onnx(to_onnx(m))`` has ``m``'s
    weights and config, ``batch_first`` aside with layout 0: see below).

    One LSTM node per layer (``lstm0``, ``lstm1``, ...; weights as initializers, gates
    reordered to i, o, f, c, our fused bias in Wb and zeros in Rb, peepholes as P) with
    every attribute the layer needs: direction (forward / reverse / bidirectional),
    hidden_size, clip, input_forget, activations (+ activation_alpha / _beta; linear is
    Affine(1, 0)), layout. Each Y is reshaped to the next layer's (T, B, D*H) input.
    Layers may differ in size. The graph computes what ``m(x, state, lengths)`` does:

    inputs   ``X``: (T, B, I), or (B, T, I) for a batch_first model;
             ``sequence_lens`` (int32 (B,)) with ``sequence_lens=True``: our ``lengths``,
             fed to every node; ``initial_h`` / ``initial_c`` with ``initial_state=True``:
             our ``state`` ((D*L, B, H); per layer ``initial_h0``, ``initial_h1``... (D, B,
             H_k) when the layers differ). Without them the state starts at zero and
             every sequence has length T.
    outputs  ``Y`` = our ``out`` (T, B, D*H) or (B, T, D*H); ``Y_h`` / ``Y_c`` = our
             ``h_n`` / ``c_n`` (D*L, B, H) (``Y_h0``, ``Y_c0``, ... per layer when the
             layers differ).

    layout : 0 (default) LSTM nodes with ONNX layout 0, the only one onnxruntime runs: a
        batch_first model gets a Transpose before the first node and after the last, as
        torch exports ``batch_first=True``. Our loader then sees a time-major LSTM
        (ops before the first node are not part of the model): load it with
        ``li.load(path, batch_first=True)``. 1 (batch_first models only): the nodes take
        and give (B, T, ...) (ONNX layout 1), which `from_onnx` reads as batch_first, but
        onnxruntime 1.x refuses ("Batchwise recurrent operations (layout == 1) are not
        supported").
    opset : the default ONNX domain's version (>= 14: LSTM's layout attribute).
    dequantize : a quantized model is refused unless True; then its float32 weights.

    The graph is float32 whatever the model's dtype (onnxruntime runs no float64
    LSTM). One difference from our model: for a sequence of length 0, onnxruntime
    returns Y_h = Y_c = 0, not the initial state. Written to `path` too when given;
    checked with ``onnx.checker``; returns the ModelProto.

    Raises ExportError (a ValueError) listing what an ONNX LSTM cannot express (a
    projection, cell_clip, a Keras go_backwards layer, merge modes other than concat,
    a quantized model without dequantize=True), and ImportError without the onnx
    package.
    """
    from ._export import check

    model = model_of(model_or_data)
    check(model, "an ONNX LSTM", supports={"peephole", "clip", "input_forget", "activations",
                                            "reverse"}, dequantize=dequantize)
    cfg = model.config
    if layout not in (0, 1):
        raise ValueError(f"layout must be 0 or 1; got {layout!r}")
    if layout == 1 and not cfg.batch_first:
        raise ValueError("layout=1 exports a batch_first model's (B, T, I) input as is; this "
                         "model is time-major (T, B, I): use layout=0")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 14:
        raise ValueError(f"opset must be an integer >= 14 (LSTM's layout); got {opset!r}")
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError as e:
        raise ImportError("exporting to ONNX needs the 'onnx' package: pip install onnx (or "
                          "lstm_infer[onnx])") from e
    g = _GraphBuilder(helper, numpy_helper)
    f32, i32 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT32
    bf = cfg.batch_first
    inputs = [helper.make_tensor_value_info(
        "X", f32, ["B", "T", cfg.input_size] if bf else ["T", "B", cfg.input_size])]
    cur = "X"
    if bf and layout == 0:
        cur = g.node("Transpose", [cur], perm=[1, 0, 2])
    lens = ""
    if sequence_lens:
        lens = "sequence_lens"
        inputs.append(helper.make_tensor_value_info(lens, i32, ["B"]))
    specs, L = cfg.layers, cfg.num_layers
    state_ins = _state_inputs(g, helper, f32, specs, cfg.uniform, layout, inputs) \
        if initial_state else [("", "")] * L
    flat = g.const(np.array([0, 0, -1], dtype=np.int64), "shape_flat")
    hs, cs = [], []
    for k, (layer, spec) in enumerate(zip(float_weights(model), specs)):
        D, H = spec.num_directions, spec.hidden_size
        W = np.stack([from_canonical(w["w_ih"], "onnx") for w in layer])
        R = np.stack([from_canonical(w["w_hh"], "onnx") for w in layer])
        Bw = np.stack([np.concatenate([from_canonical(w["b"], "onnx"), np.zeros(4 * H)])
                       for w in layer])
        ins = [cur, g.const(W, f"W{k}"), g.const(R, f"R{k}"), g.const(Bw, f"B{k}"), lens,
               *state_ins[k]]
        if spec.peephole:  # ONNX P = [p_i, p_o, p_f]
            ins.append(g.const(np.stack([np.concatenate([w["p_i"], w["p_o"], w["p_f"]])
                                         for w in layer]), f"P{k}"))
        while ins[-1] == "":
            ins.pop()
        attrs = {"hidden_size": H, "direction": spec.direction, "layout": layout,
                 **_onnx_activations(spec)}
        if spec.clip is not None:
            attrs["clip"] = spec.clip
        if spec.input_forget:
            attrs["input_forget"] = 1
        y, yh, yc = f"Y{k}", f"Yh{k}", f"Yc{k}"
        g.nodes.append(helper.make_node("LSTM", ins, [y, yh, yc], name=f"lstm{k}", **attrs))
        last = k == L - 1
        if layout == 0:  # Y (T, D, B, H) -> (T, B, D*H), or (B, T, D*H) at the end
            y = g.node("Transpose", [y], perm=[2, 0, 1, 3] if last and bf else [0, 2, 1, 3])
        else:  # Y (B, T, D, H) -> (B, T, D*H); Y_h (B, D, H) -> ours (D, B, H)
            yh = g.node("Transpose", [yh], perm=[1, 0, 2])
            yc = g.node("Transpose", [yc], perm=[1, 0, 2])
        cur = g.node("Reshape", [y, flat], out="Y" if last else None)
        hs.append(yh)
        cs.append(yc)
    F = cfg.output_size
    outputs = [helper.make_tensor_value_info("Y", f32, ["B", "T", F] if bf else ["T", "B", F])]
    if cfg.uniform:
        D = specs[0].num_directions
        for name, parts, size in (("Y_h", hs, specs[0].output_size),
                                  ("Y_c", cs, specs[0].hidden_size)):
            if len(parts) == 1:
                g.node("Identity", parts, out=name)
            else:
                g.node("Concat", parts, out=name, axis=0)
            outputs.append(helper.make_tensor_value_info(name, f32, [D * L, "B", size]))
    else:
        for k, spec in enumerate(specs):
            for name, part, size in ((f"Y_h{k}", hs[k], spec.output_size),
                                     (f"Y_c{k}", cs[k], spec.hidden_size)):
                g.node("Identity", [part], out=name)
                outputs.append(helper.make_tensor_value_info(
                    name, f32, [spec.num_directions, "B", size]))
    graph = helper.make_graph(g.nodes, "lstm_infer", inputs, outputs, initializer=g.inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                          producer_name="lstm_infer")
    m.ir_version = 8  # opset 17's IR; accepted by every onnxruntime >= 1.13
    onnx.checker.check_model(m)
    if path is not None:
        onnx.save(m, os.fspath(path))
    return m


class _GraphBuilder:
    """Nodes and initializers of the exported graph, with generated tensor names."""

    def __init__(self, helper, numpy_helper):
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.inits = [], []

    def node(self, op, inputs, out=None, **attrs) -> str:
        out = out or f"{op.lower()}{len(self.nodes)}"
        self.nodes.append(self.helper.make_node(op, list(inputs), [out], **attrs))
        return out

    def const(self, a, name) -> str:
        a = np.asarray(a)
        if a.dtype.kind == "f":
            a = a.astype(np.float32)
        self.inits.append(self.numpy_helper.from_array(a, name))
        return name


def _state_inputs(g, helper, f32, specs, uniform, layout, inputs) -> list:
    """Per layer, the (initial_h, initial_c) tensor names its node reads, from the
    graph inputs added to `inputs`: ours (D*L, B, H) sliced per layer, or one input per
    layer; transposed to (B, D, H) for layout 1."""
    out = []
    if uniform:
        D, L = specs[0].num_directions, len(specs)
        for name, size in (("initial_h", specs[0].output_size),
                           ("initial_c", specs[0].hidden_size)):
            inputs.append(helper.make_tensor_value_info(name, f32, [D * L, "B", size]))
        axes = g.const(np.array([0], dtype=np.int64), "state_axes")
        for k in range(L):
            pair = []
            for name in ("initial_h", "initial_c"):
                if L > 1:
                    name = g.node("Slice", [name,
                                            g.const(np.array([k * D], np.int64), f"{name}{k}_0"),
                                            g.const(np.array([k * D + D], np.int64),
                                                    f"{name}{k}_1"), axes])
                pair.append(name)
            out.append(pair)
    else:
        for k, s in enumerate(specs):
            pair = []
            for name, size in ((f"initial_h{k}", s.output_size),
                               (f"initial_c{k}", s.hidden_size)):
                inputs.append(helper.make_tensor_value_info(
                    name, f32, [s.num_directions, "B", size]))
                pair.append(name)
            out.append(pair)
    if layout == 1:
        out = [[g.node("Transpose", [n], perm=[1, 0, 2]) for n in pair] for pair in out]
    return out


__all__ = ["from_onnx", "read_onnx", "to_onnx", "sniff", "is_onnx_file", "ONNXFormatError"]
