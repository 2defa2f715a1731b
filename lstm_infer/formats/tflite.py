"""TFLite adapter: ``UNIDIRECTIONAL_SEQUENCE_LSTM`` / ``BIDIRECTIONAL_SEQUENCE_LSTM`` ops
of a ``.tflite`` flatbuffer -> `LSTM`.

Read by our own flatbuffer reader (`_Buf`, `_Table`: every offset, vtable, vector and
buffer bounds-checked against the file; nothing is imported or executed; no TensorFlow,
no ``flatbuffers`` package). Runtime dependencies stay numpy (+ scipy).

What is read
------------
Per LSTM op, its input *slots* (TFLite weight tensors have meaningless names):

========================  ==========================================================
slots (unidirectional)    read as (our canonical i, f, g, o blocks)
========================  ==========================================================
1-4   input_to_{i,f,c,o}  ``w_ih`` (n_cell, n_input) each
5-8   recurrent_to_...    ``w_hh`` (n_cell, n_output) each (diagonal_recurrent_tensors:
                          (n_cell,) vectors, expanded to diagonal matrices)
9-11  cell_to_{i,f,o}     peepholes ``p_i, p_f, p_o``
12-15 {i,f,c,o} bias      ``b``
16    projection_weights  ``w_hr`` (n_output, n_cell); options proj_clip -> ``proj_clip``
17    projection_bias     refused unless all zero (the engine has no projection bias)
18-19 output/cell state   run-time state (zeros when the file holds a constant; a
                          non-zero constant gives a warning: pass ``state=``)
20-23 layer norm coeffs   ``ln_i, ln_f, ln_g, ln_o``: TFLite's layer-norm LSTM
                          (docs/layer_norm.md)
========================  ==========================================================

Options: ``fused_activation_function`` is the cell and output activation (TANH, RELU;
RELU6 / RELU_N1_TO_1 / SIGN_BIT are refused, and so is NONE, which TFLite's kernel does
not run as the identity: it skips writing the activation's output buffer); gates are sigmoid;
``cell_clip`` > 0 -> ``cell_clip`` (TF's converter writes 10 into every fused Keras
LSTM: honoured); ``time_major`` -> ``batch_first = not time_major``.
``BIDIRECTIONAL_SEQUENCE_LSTM`` (48 inputs): forward slots 1-17, backward 18-34, states
35-38; an auxiliary input (slots 39-47) is refused; with ``merge_outputs`` its one
output is ours, else its two outputs are ``out[..., :H]`` and ``out[..., H:]``.

CIFG (no input-gate weights): TFLite computes ``i = 1 - f``; our ``input_forget`` is
ONNX's ``f = 1 - i``, so the input-gate rows are stored negated (``-W_f``, ``-R_f``,
``-b_f``, ``p_i = -p_f``, ``ln_i = ln_f``): our ``i = 1 - f_tflite`` and our ``f = 1 - i
= f_tflite``.

Hybrid files (``optimizations=[tf.lite.Optimize.DEFAULT]``: int8 gate weights with one
symmetric scale per tensor, float activations) load into the ``int8`` mode with the
file's int8 weights and scales exactly (the scale on every row); int8 peepholes and
projection weights are dequantized (q * scale, in float32, as TFLite does). TFLite
quantizes the activations per batch row (symmetric, or asymmetric with
``asymmetric_quantize_inputs``), lstm_infer per step and row: within int8 error of
each other, not bit for bit. float16 weights behind ``DEQUANTIZE`` ops (float16
quantization) are read and widened exactly.

Which ops
---------
A *layer* is one LSTM op, or the converter's pattern for a Keras ``Bidirectional``:
``REVERSE_V2(x) -> UNIDIRECTIONAL_SEQUENCE_LSTM -> REVERSE_V2`` beside a forward op on
the same ``x``, joined by a ``CONCATENATION`` on the last axis (one bidirectional
layer). A reversed-input op without the rest of the pattern is a go_backwards layer
(direction "reverse"; outputs in processing order, unless a REVERSE_V2 puts them back).
Layers chain into a stack when each reads the previous one's output tensor. With
``layer=None`` the graph (subgraph 0) must hold exactly one such chain; else pick layers
by their position in `layers_summary` order with ``layer=k`` or ``layer=[k, ...]``.

Not read: the one-step ``LSTM`` op (op code 16), models whose LSTM was not fused (Keras
3's TF backend converts to a ``WHILE`` loop: the error says so), per-channel or
asymmetric int8 weights, external buffers, sparse tensors.
"""
from __future__ import annotations

import math
import os
import struct
import warnings
from typing import List, Optional

import numpy as np

from .._build import CanonicalModel, build
from .errors import FormatError, check_file, guard

__all__ = ["from_tflite", "read_tflite", "layers_summary", "sniff", "is_tflite_file",
           "TFLiteFormatError"]


class TFLiteFormatError(FormatError):
    """A .tflite file that cannot be loaded as an LSTM (the message names the problem)."""


_IDENT = b"TFL3"
# bounds on what one file may make us walk (real models: thousands of ops)
_MAX_OPERATORS = 1 << 20
_MAX_SUBGRAPHS = 1 << 12
_MAX_NDIM = 8

# BuiltinOperator codes (schema.fbs)
_CONCATENATION, _DEQUANTIZE, _LSTM_ONE_STEP, _UNI, _BIDI = 2, 6, 16, 44, 52
_REVERSE_V2, _WHILE = 105, 119
_OP_NAMES = {_CONCATENATION: "CONCATENATION", _DEQUANTIZE: "DEQUANTIZE",
             _LSTM_ONE_STEP: "LSTM", _UNI: "UNIDIRECTIONAL_SEQUENCE_LSTM",
             _BIDI: "BIDIRECTIONAL_SEQUENCE_LSTM", _REVERSE_V2: "REVERSE_V2",
             _WHILE: "WHILE", 39: "TRANSPOSE", 32: "CUSTOM", 45: "STRIDED_SLICE",
             22: "RESHAPE", 9: "FULLY_CONNECTED"}
# BuiltinOptions union members
_OPT_UNI, _OPT_BIDI, _OPT_CONCAT = 71, 69, 10
# TensorType -> numpy dtype
_DTYPES = {0: "<f4", 1: "<f2", 2: "<i4", 3: "u1", 4: "<i8", 6: "?", 7: "<i2", 9: "i1",
           10: "<f8"}
_TYPE_NAMES = {0: "FLOAT32", 1: "FLOAT16", 2: "INT32", 3: "UINT8", 4: "INT64", 5: "STRING",
               6: "BOOL", 7: "INT16", 8: "COMPLEX64", 9: "INT8", 10: "FLOAT64"}
# ActivationFunctionType -> ours
# NONE is not the identity in TFLite's kernels: ApplyActivationToVector returns without
# writing its result for kTfLiteActNone, so the op reads whatever its scratch held
# (the measured output differs from a linear cell by ~0.4): refused, not guessed.
_ACTS = {1: "relu", 4: "tanh"}
_ACT_NAMES = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}

# input slots of one direction: (input weights i f c o, recurrent i f c o, peephole i f o,
# bias i f c o, projection weights, projection bias)
_UNI_SLOTS = dict(w=(1, 2, 3, 4), r=(5, 6, 7, 8), p=(9, 10, 11), b=(12, 13, 14, 15),
                  proj=16, proj_b=17, state=(18, 19), ln=(20, 21, 22, 23))
_BIDI_FW = dict(w=(1, 2, 3, 4), r=(5, 6, 7, 8), p=(9, 10, 11), b=(12, 13, 14, 15), proj=16,
                proj_b=17, state=(35, 36), ln=None)
_BIDI_BW = dict(w=(18, 19, 20, 21), r=(22, 23, 24, 25), p=(26, 27, 28),
                b=(29, 30, 31, 32), proj=33, proj_b=34, state=(37, 38), ln=None)


# ============================================================================ flatbuffers
class _Buf:
    """The file's bytes with bounds-checked little-endian reads."""

    def __init__(self, data: bytes, where: str):
        self.data, self.size, self.where = data, len(data), where

    def need(self, pos: int, n: int, what: str):
        if pos < 0 or n < 0 or pos + n > self.size:
            raise TFLiteFormatError(f"{self.where}: {what} at offset {pos} ({n} bytes) is "
                                    f"outside the {self.size}-byte file; truncated or "
                                    f"corrupted?")

    def read(self, fmt: str, pos: int, what: str):
        self.need(pos, struct.calcsize(fmt), what)
        return struct.unpack_from(fmt, self.data, pos)[0]


class _Table:
    """One flatbuffer table: its vtable checked once, fields read by slot number."""

    def __init__(self, buf: _Buf, pos: int, what: str):
        self.buf, self.pos, self.what = buf, pos, what
        soff = buf.read("<i", pos, f"{what} (table)")
        vt = pos - soff
        buf.need(vt, 4, f"{what}'s vtable")
        self.vt_len = buf.read("<H", vt, f"{what}'s vtable")
        self.obj_len = buf.read("<H", vt + 2, f"{what}'s vtable")
        if self.vt_len < 4 or self.vt_len % 2 or self.obj_len < 4:
            raise TFLiteFormatError(f"{buf.where}: {what}: a corrupted vtable (size "
                                    f"{self.vt_len}, object size {self.obj_len})")
        buf.need(vt, self.vt_len, f"{what}'s vtable")
        buf.need(pos, self.obj_len, what)
        self.vt = vt

    def _field(self, slot: int, size: int) -> int:
        """Absolute position of field `slot` (0 if absent), checked inside the object."""
        at = 4 + 2 * slot
        if at + 2 > self.vt_len:
            return 0
        off = self.buf.read("<H", self.vt + at, f"{self.what}'s vtable")
        if off == 0:
            return 0
        if off + size > self.obj_len:
            raise TFLiteFormatError(f"{self.buf.where}: {self.what}: field {slot} at {off} "
                                    f"lies outside its {self.obj_len}-byte table; corrupted?")
        return self.pos + off

    def scalar(self, slot: int, fmt: str, default):
        p = self._field(slot, struct.calcsize(fmt))
        return default if not p else self.buf.read(fmt, p, f"{self.what} field {slot}")

    def _ref(self, slot: int) -> int:
        p = self._field(slot, 4)
        if not p:
            return 0
        target = p + self.buf.read("<I", p, f"{self.what} field {slot}")
        self.buf.need(target, 4, f"{self.what} field {slot}")
        return target

    def table(self, slot: int, what: str) -> Optional["_Table"]:
        t = self._ref(slot)
        return _Table(self.buf, t, what) if t else None

    def vector(self, slot: int, elem: int, what: str):
        """(position of element 0, length) of a vector field, or None if absent."""
        t = self._ref(slot)
        if not t:
            return None
        n = self.buf.read("<I", t, what)
        self.buf.need(t + 4, n * elem, what)
        return t + 4, n

    def array(self, slot: int, dtype: str, what: str) -> Optional[np.ndarray]:
        dt = np.dtype(dtype)
        v = self.vector(slot, dt.itemsize, what)
        if v is None:
            return None
        return np.frombuffer(self.buf.data, dtype=dt, count=v[1], offset=v[0])

    def string(self, slot: int, what: str) -> str:
        v = self.vector(slot, 1, what)
        if v is None:
            return ""
        return self.buf.data[v[0]:v[0] + v[1]].decode("utf-8", "replace")

    def tables(self, slot: int, what: str, limit: int) -> "_Tables":
        v = self.vector(slot, 4, what)
        if v is not None and v[1] > limit:
            raise TFLiteFormatError(f"{self.buf.where}: {v[1]} {what}; at most {limit} are "
                                    f"accepted (corrupted?)")
        return _Tables(self.buf, v, what)


class _Tables:
    """A vector of tables, each opened (and checked) when it is used."""

    def __init__(self, buf, v, what):
        self.buf, self.what = buf, what
        self.start, self.n = v if v is not None else (0, 0)

    def __len__(self):
        return self.n

    def __getitem__(self, k: int) -> _Table:
        if not 0 <= k < self.n:
            raise TFLiteFormatError(f"{self.buf.where}: {self.what} index {k} out of range "
                                    f"(there are {self.n})")
        p = self.start + 4 * k
        return _Table(self.buf, p + self.buf.read("<I", p, self.what), f"{self.what}[{k}]")


# ============================================================================ the model
class _Model:
    """Subgraph 0 of a TFLite model: ops, tensors, constant data."""

    def __init__(self, data: bytes, where: str):
        buf = self.buf = _Buf(data, where)
        self.where = where
        if buf.size < 8 or data[4:8] != _IDENT:
            raise TFLiteFormatError(f"{where}: not a TFLite model (no 'TFL3' identifier at "
                                    f"bytes 4-8)")
        root = _Table(buf, buf.read("<I", 0, "root offset"), "the model")
        if root.table(8, "external buffer groups") is not None or \
                root.vector(9, 4, "external buffers") is not None:
            raise TFLiteFormatError(f"{where}: the model keeps tensors in external buffers "
                                    f"(other files); refused")
        self.opcodes = []
        codes = root.tables(1, "operator codes", _MAX_OPERATORS)
        for k in range(len(codes)):
            c = codes[k]
            dep = c.scalar(0, "<b", 0)
            new = c.scalar(3, "<i", 0)
            self.opcodes.append(max(dep, new))
        subgraphs = root.tables(2, "subgraphs", _MAX_SUBGRAPHS)
        if not len(subgraphs):
            raise TFLiteFormatError(f"{where}: the model has no subgraph")
        sg = subgraphs[0]
        self.tensors = sg.tables(0, "tensors", 1 << 26)
        self.buffers = root.tables(4, "buffers", 1 << 26)
        ops = sg.tables(3, "operators", _MAX_OPERATORS)
        self.ops = []
        for k in range(len(ops)):
            o = ops[k]
            idx = o.scalar(0, "<I", 0)
            if idx >= len(self.opcodes):
                raise TFLiteFormatError(f"{where}: operator {k} has opcode index {idx}; the "
                                        f"model has {len(self.opcodes)} operator codes")
            ins = o.array(1, "<i4", f"operator {k} inputs")
            outs = o.array(2, "<i4", f"operator {k} outputs")
            self.ops.append(_Op(k, self.opcodes[idx], [] if ins is None else ins.tolist(),
                                [] if outs is None else outs.tolist(), o))
        self.producer, self.consumers = {}, {}
        for op in self.ops:
            for t in op.outputs:
                if t >= 0:
                    self.producer[t] = op
            for t in op.inputs:
                if t >= 0:
                    self.consumers.setdefault(t, []).append(op)
        self._tensor_cache = {}

    # -- tensors
    def tensor(self, t: int) -> "_Tensor":
        if t in self._tensor_cache:
            return self._tensor_cache[t]
        if not 0 <= t < len(self.tensors):
            raise TFLiteFormatError(f"{self.where}: tensor index {t} out of range (the "
                                    f"subgraph has {len(self.tensors)} tensors)")
        tab = self.tensors[t]
        shape = tab.array(0, "<i4", f"tensor {t} shape")
        shape = () if shape is None else tuple(int(s) for s in shape)
        if len(shape) > _MAX_NDIM or any(s < 0 for s in shape):
            raise TFLiteFormatError(f"{self.where}: tensor {t} has shape {shape}")
        q = tab.table(4, f"tensor {t} quantization")
        scale = zp = None
        qdim = 0
        if q is not None:
            scale = q.array(2, "<f4", f"tensor {t} scales")
            zp = q.array(3, "<i8", f"tensor {t} zero points")
            qdim = q.scalar(6, "<i", 0)
        if tab.table(6, f"tensor {t} sparsity") is not None:
            raise TFLiteFormatError(f"{self.where}: tensor {t} is sparse; not supported")
        if tab.scalar(10, "<Q", 0):
            raise TFLiteFormatError(f"{self.where}: tensor {t} lives in an external buffer "
                                    f"(another file); refused")
        info = _Tensor(t, tab.string(3, f"tensor {t} name"), shape, tab.scalar(1, "<b", 0),
                       tab.scalar(2, "<I", 0), bool(tab.scalar(5, "<B", 0)), scale, zp, qdim)
        self._tensor_cache[t] = info
        return info

    def data(self, info: "_Tensor") -> Optional[np.ndarray]:
        """The tensor's constant data (None when it has none: an input or a variable)."""
        if info.buffer == 0:
            return None
        b = self.buffers[info.buffer]
        raw = None
        v = b.vector(0, 1, f"buffer {info.buffer}")
        if v is not None and v[1]:
            raw = (v[0], v[1])
        else:
            off, size = b.scalar(1, "<Q", 0), b.scalar(2, "<Q", 0)
            if off > 1:  # data after the flatbuffer, in this same file
                self.buf.need(off, size, f"buffer {info.buffer}'s data")
                raw = (off, size)
        if raw is None:
            return None
        if info.type not in _DTYPES:
            raise TFLiteFormatError(f"{self.where}: tensor {info.index} ({info.label}) has type "
                                    f"{_TYPE_NAMES.get(info.type, info.type)}, not a numeric "
                                    f"type read here")
        dt = np.dtype(_DTYPES[info.type])
        n = math.prod(info.shape)  # Python ints: no overflow on hostile shapes
        if n * dt.itemsize != raw[1]:
            raise TFLiteFormatError(f"{self.where}: tensor {info.index} ({info.label}): shape "
                                    f"{info.shape} of {_TYPE_NAMES[info.type]} needs "
                                    f"{n * dt.itemsize} bytes; its buffer holds {raw[1]}")
        return np.frombuffer(self.buf.data, dtype=dt, count=n, offset=raw[0]).reshape(
            info.shape)

    def constant(self, t: int) -> Optional[np.ndarray]:
        """Constant data of tensor t, looking through a DEQUANTIZE of a float16 constant."""
        info = self.tensor(t)
        a = self.data(info)
        if a is not None:
            return a
        p = self.producer.get(t)
        if p is not None and p.code == _DEQUANTIZE and p.inputs:
            src = self.tensor(p.inputs[0])
            a = self.data(src)
            if a is not None and a.dtype == np.float16:
                return a.astype(np.float32)
        return None


class _Op:
    def __init__(self, index, code, inputs, outputs, table):
        self.index, self.code, self.inputs, self.outputs, self.table = (
            index, code, inputs, outputs, table)

    @property
    def name(self) -> str:
        return _OP_NAMES.get(self.code, f"op code {self.code}")

    def input(self, slot: int) -> int:
        return self.inputs[slot] if slot < len(self.inputs) else -1

    def options(self, want: int) -> Optional[_Table]:
        kind = self.table.scalar(3, "<B", 0)
        if kind != want:
            return None
        return self.table.table(4, f"operator {self.index}'s options")


class _Tensor:
    def __init__(self, index, name, shape, type_, buffer, is_variable, scale, zp, qdim):
        self.index, self.name, self.shape, self.type, self.buffer = (
            index, name, shape, type_, buffer)
        self.is_variable, self.scale, self.zp, self.qdim = is_variable, scale, zp, qdim

    @property
    def label(self) -> str:
        return repr(self.name) if self.name else f"#{self.index}"


# ============================================================================ layers
class _Layer:
    """One layer of the stack: its op(s), input and output tensors, and how to read it."""

    def __init__(self, ops, x, y, direction, reverse_output=False, bidi_op=None):
        self.ops, self.x, self.y = ops, x, y
        self.direction, self.reverse_output, self.bidi_op = direction, reverse_output, bidi_op

    def describe(self, model) -> str:
        ops = "+".join(f"{o.name} #{o.index}" for o in self.ops)
        return f"{self.direction} layer ({ops}; input {model.tensor(self.x).label})"


def _reverse_axis(model, op) -> Optional[int]:
    """The one axis a REVERSE_V2 op reverses (None if not a constant single axis)."""
    if op is None or op.code != _REVERSE_V2 or len(op.inputs) < 2:
        return None
    a = model.constant(op.inputs[1])
    if a is None or a.size != 1:
        return None
    return int(a.ravel()[0])


def _time_major(op) -> bool:
    if op.code == _BIDI:
        o = op.options(_OPT_BIDI)
        return True if o is None else bool(o.scalar(4, "<B", 1))
    o = op.options(_OPT_UNI)
    return False if o is None else bool(o.scalar(3, "<B", 0))


def _time_axis(model, op, t) -> int:
    """The time axis of tensor t (3-D) feeding or leaving op."""
    nd = len(model.tensor(t).shape)
    axis = 0 if _time_major(op) else 1
    return axis if nd == 3 else -1


def _find_layers(model) -> List[_Layer]:
    lstm_ops = [o for o in model.ops if o.code in (_UNI, _BIDI)]
    layers, used = [], set()
    for op in lstm_ops:
        if op.index in used:
            continue
        if op.code == _BIDI:
            layers.append(_Layer([op], op.inputs[0], op.outputs[0], "bidirectional",
                                 bidi_op=op))
            used.add(op.index)
            continue
        x = op.inputs[0]
        prod = model.producer.get(x)
        rev_in = prod is not None and _reverse_axis(model, prod) == _time_axis(model, op, x) \
            and _time_axis(model, op, x) >= 0
        if not rev_in:
            continue  # a forward op: placed below (alone, or with its reversed partner)
        src = prod.inputs[0]
        y = op.outputs[0]
        cons = model.consumers.get(y, [])
        back = cons[0] if len(cons) == 1 and _reverse_axis(model, cons[0]) == \
            _time_axis(model, op, y) else None
        if back is None:  # Keras go_backwards: outputs in processing order
            layers.append(_Layer([op], src, y, "reverse", reverse_output=True))
            used.add(op.index)
            continue
        yr = back.outputs[0]
        partner = None
        for c in model.consumers.get(yr, []):
            if c.code != _CONCATENATION or len(c.inputs) != 2 or c.inputs[1] != yr:
                continue
            f = model.producer.get(c.inputs[0])
            axis = _concat_axis(c)
            if f is not None and f.code == _UNI and f.inputs[0] == src and \
                    f.index not in used and axis in (-1, len(model.tensor(yr).shape) - 1):
                partner = (f, c)
                break
        if partner is None:  # a reverse-direction layer, outputs back in time order
            layers.append(_Layer([op], src, yr, "reverse"))
            used.add(op.index)
            continue
        f, c = partner
        layers.append(_Layer([f, op], src, c.outputs[0], "bidirectional"))
        used.update((op.index, f.index))
    for op in lstm_ops:
        if op.index not in used:
            layers.append(_Layer([op], op.inputs[0], op.outputs[0], "forward"))
    layers.sort(key=lambda l: min(o.index for o in l.ops))
    return layers


def _concat_axis(op) -> Optional[int]:
    o = op.options(_OPT_CONCAT)
    return 0 if o is None else o.scalar(0, "<i", 0)


def _chains(layers) -> List[List[_Layer]]:
    by_input = {}
    for l in layers:
        by_input.setdefault(l.x, []).append(l)
    heads = [l for l in layers if not any(p.y == l.x for p in layers)]
    chains = []
    for h in heads:
        chain = [h]
        while len(by_input.get(chain[-1].y, [])) == 1:
            nxt = by_input[chain[-1].y][0]
            if nxt in chain:  # a cycle (a hostile graph): the chain ends here
                break
            chain.append(nxt)
        chains.append(chain)
    return chains


# ============================================================================ conversion
class _Reader:
    """Reads one direction's weights by slot, with the checks and the messages."""

    def __init__(self, model, op, where):
        self.model, self.op, self.where = model, op, where

    def get(self, slot, what, shape=None, required=True):
        t = self.op.input(slot)
        if t < 0:
            if required:
                raise TFLiteFormatError(f"{self.where}: {what} (input slot {slot}) is missing")
            return None
        a = self.model.constant(t)
        info = self.model.tensor(t)
        if a is None:
            raise TFLiteFormatError(f"{self.where}: {what} (input slot {slot}, tensor "
                                    f"{info.label}) is not a constant in the file")
        if shape is not None and a.shape != tuple(shape):
            raise TFLiteFormatError(f"{self.where}: {what} (input slot {slot}) must have "
                                    f"shape {tuple(shape)}; got {a.shape}")
        if a.dtype.kind == "f":
            return a.astype(np.float32), None
        if a.dtype == np.int8:
            return a, self._scale(info, what, slot, a)
        raise TFLiteFormatError(f"{self.where}: {what} (input slot {slot}) has type "
                                f"{_TYPE_NAMES.get(info.type, info.type)}; expected FLOAT32, "
                                f"FLOAT16 or INT8 (hybrid)")

    def _scale(self, info, what, slot, a):
        s, z = info.scale, info.zp
        if s is None or s.size != 1:
            raise TFLiteFormatError(
                f"{self.where}: INT8 {what} (input slot {slot}) needs one per-tensor scale (the "
                f"hybrid LSTM kernel's); got {0 if s is None else s.size} scales")
        if z is not None and z.size and np.any(z != 0):
            raise TFLiteFormatError(f"{self.where}: INT8 {what} (input slot {slot}) has zero "
                                    f"point {int(z.ravel()[0])}; only symmetric weights "
                                    f"(zero point 0) are supported")
        scale = np.float32(s[0])
        if not (np.isfinite(scale) and scale > 0):
            raise TFLiteFormatError(f"{self.where}: INT8 {what}: scale {scale} must be "
                                    f"positive and finite")
        return scale

    def floats(self, slot, what, shape=None, required=True):
        """A float32 vector / matrix (int8 ones dequantized, as TFLite does)."""
        got = self.get(slot, what, shape, required)
        if got is None:
            return None
        a, s = got
        return a if s is None else a.astype(np.float32) * s


def _direction(model, op, slots, where, opts_out):
    """Canonical direction dict of one op's direction (`slots`: _UNI_SLOTS / _BIDI_FW...)."""
    rd = _Reader(model, op, where)
    xt = model.tensor(op.input(0))
    if xt.type != 0:
        raise TFLiteFormatError(f"{where}: the input is {_TYPE_NAMES.get(xt.type, xt.type)}; "
                                f"only float32 inputs are read (an integer-only quantized "
                                f"LSTM is not supported; hybrid int8-weight files are)")
    diag = False
    if op.code == _UNI:
        o = op.options(_OPT_UNI)
        diag = o is not None and bool(o.scalar(5, "<B", 0))
    wf = rd.get(slots["w"][1], "input_to_forget_weights")
    if wf[0].ndim != 2:
        raise TFLiteFormatError(f"{where}: input_to_forget_weights must be 2-D (n_cell, "
                                f"n_input); got shape {wf[0].shape}")
    H, I = wf[0].shape
    rshape_probe = rd.get(slots["r"][1], "recurrent_to_forget_weights")
    if diag:
        P = H
        if rshape_probe[0].shape != (H,):
            raise TFLiteFormatError(f"{where}: diagonal recurrent_to_forget_weights must have "
                                    f"shape ({H},); got {rshape_probe[0].shape}")
    else:
        if rshape_probe[0].ndim != 2 or rshape_probe[0].shape[0] != H:
            raise TFLiteFormatError(f"{where}: recurrent_to_forget_weights must have shape "
                                    f"(n_cell={H}, n_output); got {rshape_probe[0].shape}")
        P = rshape_probe[0].shape[1]
    cifg = op.input(slots["w"][0]) < 0
    names = ("input", "forget", "cell", "output")
    rshape = (H,) if diag else (H, P)
    W = [None if (cifg and g == 0) else rd.get(s, f"input_to_{names[g]}_weights", (H, I))
         for g, s in enumerate(slots["w"])]
    R = [None if (cifg and g == 0) else rd.get(s, f"recurrent_to_{names[g]}_weights", rshape)
         for g, s in enumerate(slots["r"])]
    if cifg:
        for s, n in ((slots["r"][0], "recurrent_to_input_weights"),
                     (slots["b"][0], "input_gate_bias"), (slots["p"][0], "cell_to_input_weights")):
            if op.input(s) >= 0:
                raise TFLiteFormatError(f"{where}: CIFG (no input_to_input_weights) but {n} "
                                        f"(slot {s}) is given")
    kinds = {s is None for _, s in filter(None, W + R)}
    if len(kinds) > 1:
        raise TFLiteFormatError(f"{where}: the gate weights mix float and INT8 tensors; "
                                f"expected all float or all INT8 (hybrid)")
    hybrid = kinds == {False}
    if diag:
        R = [None if r is None else (np.diag(r[0]), r[1]) for r in R]
    b = [None if (cifg and g == 0) else rd.floats(s, f"{names[g]}_gate_bias", (H,))
         for g, s in enumerate(slots["b"])]
    peep = [op.input(s) >= 0 for s in slots["p"]]
    p = None
    if any(peep):
        need = peep[1:] + ([] if cifg else peep[:1])
        if not all(need):
            raise TFLiteFormatError(f"{where}: peephole weights (cell_to_*_weights) must be all "
                                    f"given (or, with CIFG, forget and output); got "
                                    f"{[s for s, k in zip(('input', 'forget', 'output'), peep) if k]}")
        p = [None if (cifg and g == 0) else rd.floats(s, f"cell_to_{('input', 'forget', 'output')[g]}_weights", (H,))
             for g, s in enumerate(slots["p"])]
    ln = None
    if slots["ln"] is not None and any(op.input(s) >= 0 for s in slots["ln"][1:]):
        ln = [None if (cifg and g == 0) else
              rd.floats(s, f"{names[g]}_layer_norm_coefficients", (H,))
              for g, s in enumerate(slots["ln"])]
    if cifg:  # TFLite's i = 1 - f as our f = 1 - i: the input gate is the negated forget gate
        if hybrid and (W[1][0].min() == -128 or R[1][0].min() == -128):
            raise TFLiteFormatError(f"{where}: CIFG with INT8 forget weights holding -128, "
                                    f"which cannot be negated in int8")
        W[0] = (np.negative(W[1][0]), W[1][1])
        R[0] = (np.negative(R[1][0]), R[1][1])
        b[0] = -b[1]
        if p is not None:
            p[0] = -p[1]
        if ln is not None:
            ln[0] = ln[1]
    w = {}
    if hybrid:
        w["w_ih"] = np.concatenate([a for a, _ in W])
        w["w_ih_scale"] = np.repeat(np.array([s for _, s in W], np.float32), H)
        w["w_hh"] = np.concatenate([a for a, _ in R]).astype(np.int8)
        w["w_hh_scale"] = np.repeat(np.array([s for _, s in R], np.float32), H)
    else:
        w["w_ih"] = np.concatenate([a for a, _ in W])
        w["w_hh"] = np.concatenate([a for a, _ in R])
    w["b"] = np.concatenate(b)
    if p is not None:
        w["p_i"], w["p_f"], w["p_o"] = p
    if ln is not None:
        w["ln_i"], w["ln_f"], w["ln_g"], w["ln_o"] = ln
    if op.input(slots["proj"]) >= 0:
        wp = rd.floats(slots["proj"], "projection_weights")
        if wp.ndim != 2 or wp.shape[1] != H:
            raise TFLiteFormatError(f"{where}: projection_weights must have shape (n_output, "
                                    f"n_cell={H}); got {wp.shape}")
        if wp.shape[0] != P:
            raise TFLiteFormatError(f"{where}: projection_weights give n_output {wp.shape[0]} "
                                    f"but the recurrent weights {P}")
        w["w_hr"] = wp
        pb = rd.floats(slots["proj_b"], "projection_bias", (P,), required=False)
        if pb is not None and np.any(pb):
            raise TFLiteFormatError(f"{where}: a non-zero projection_bias (slot "
                                    f"{slots['proj_b']}): lstm_infer's engine has no projection "
                                    f"bias term; not supported")
    elif P != H:
        raise TFLiteFormatError(f"{where}: n_output {P} differs from n_cell {H} without "
                                f"projection_weights")
    for s, n in zip(slots["state"], ("output state", "cell state")):
        t = op.input(s)
        a = model.constant(t) if t >= 0 else None
        if a is not None and np.any(a):
            opts_out.setdefault("_notes", []).append(
                f"{where}: the {n} (slot {s}) is a non-zero constant in the file; lstm_infer "
                f"does not store it: pass it as state=(h0, c0) when calling the model")
    return w, hybrid, I, H, P


def _op_options(op, where):
    """(activation name, cell_clip, proj_clip, time_major) of an LSTM op."""
    o = op.options(_OPT_UNI if op.code == _UNI else _OPT_BIDI)
    if o is None:
        raise TFLiteFormatError(f"{where}: the op has no {op.name} options")
    act = o.scalar(0, "<b", 0)
    if act not in _ACTS:
        raise TFLiteFormatError(f"{where}: fused_activation_function "
                                f"{_ACT_NAMES.get(act, act)} is not supported; supported: TANH, "
                                f"RELU" + (" (TFLite's kernel does not apply NONE as the "
                                           "identity: it leaves its buffer unwritten)"
                                           if act == 0 else ""))
    clips = []
    for slot, n in ((1, "cell_clip"), (2, "proj_clip")):
        v = float(o.scalar(slot, "<f", 0.0))
        if not np.isfinite(v):
            raise TFLiteFormatError(f"{where}: {n} is {v}")
        clips.append(v if v > 0 else None)  # TFLite clips only when > 0
    return _ACTS[act], clips[0], clips[1], _time_major(op)


def _convert(model, chain) -> CanonicalModel:
    where0 = model.where
    layers, options, tmajor, quant = [], [], set(), set()
    notes = {}
    in_size = None
    for k, l in enumerate(chain):
        dirs, accts, clips = [], [], set()
        if l.bidi_op is not None:
            op = l.bidi_op
            where = f"{where0}: {op.name} #{op.index}"
            if any(op.input(s) >= 0 for s in range(39, 48)):
                raise TFLiteFormatError(f"{where}: an auxiliary input (slots 39-47) is not "
                                        f"supported")
            act, cc, pc, tm = _op_options(op, where)
            for side, slots in (("forward", _BIDI_FW), ("backward", _BIDI_BW)):
                w, hyb, I, H, P = _direction(model, op, slots, f"{where} {side}", notes)
                dirs.append(w)
                quant.add(hyb)
            accts += [act, act]
            clips.add((cc, pc))
            tmajor.add(tm)
            o = op.options(_OPT_BIDI)
            if not bool(o.scalar(3, "<B", 0)) and k != len(chain) - 1:
                raise TFLiteFormatError(f"{where}: merge_outputs=false (two outputs) can only "
                                        f"be the last layer of a stack")
        else:
            for op in l.ops:
                where = f"{where0}: {op.name} #{op.index}"
                act, cc, pc, tm = _op_options(op, where)
                w, hyb, I, H, P = _direction(model, op, _UNI_SLOTS, where, notes)
                dirs.append(w)
                quant.add(hyb)
                accts.append(act)
                clips.add((cc, pc))
                tmajor.add(tm)
        if len(clips) > 1:
            raise TFLiteFormatError(f"{where0}: the two directions of {l.describe(model)} have "
                                    f"different cell_clip / proj_clip {sorted(clips, key=str)}")
        if len({(d["w_ih"].shape, d["w_hh"].shape) for d in dirs}) > 1:
            raise TFLiteFormatError(f"{where0}: the two directions of {l.describe(model)} "
                                    f"differ in size")
        I = dirs[0]["w_ih"].shape[1]
        if in_size is not None and I != in_size:
            raise TFLiteFormatError(f"{where0}: {l.describe(model)} has input size {I} but "
                                    f"follows a layer of output size {in_size}")
        xs = model.tensor(l.x).shape
        if len(xs) == 3 and xs[2] != I:
            raise TFLiteFormatError(f"{where0}: {l.describe(model)}: input tensor shape {xs} "
                                    f"but the weights take {I} features")
        cc, pc = clips.pop()
        opt = {"direction": l.direction, "activations": [("sigmoid", a, a) for a in accts]
               if len(dirs) == 2 else ("sigmoid", accts[0], accts[0]),
               "cell_clip": cc, "input_forget": False}
        if pc is not None and "w_hr" in dirs[0]:
            opt["proj_clip"] = pc
        if l.reverse_output:
            opt["reverse_output"] = True
        # CIFG: the input gate was stored as the negated forget gate (module docstring)
        cifg = [op.input(s["w"][0]) < 0 for op, s in _sides(l)]
        if any(cifg):
            if not all(cifg):
                raise TFLiteFormatError(f"{where0}: {l.describe(model)}: one direction is CIFG "
                                        f"and the other not; not supported")
            opt["input_forget"] = True
        layers.append(dirs)
        options.append(opt)
        D = len(dirs)
        P = dirs[0]["w_hh"].shape[1]
        in_size = D * P
    if len(tmajor) > 1:
        raise TFLiteFormatError(f"{where0}: the stack mixes time_major true and false")
    if len(quant) > 1:
        raise TFLiteFormatError(f"{where0}: the stack mixes float and hybrid (INT8) layers; "
                                f"one model has one mode: load them separately with layer=")
    opts = {"batch_first": not tmajor.pop(), "layer_options": options, "dtype": "float32"}
    if quant.pop():
        opts["quantization"] = "int8"
    data = CanonicalModel(layers, opts, where0)
    data.notes = notes.get("_notes", [])
    return data


def _sides(l):
    if l.bidi_op is not None:
        return [(l.bidi_op, _BIDI_FW), (l.bidi_op, _BIDI_BW)]
    return [(op, _UNI_SLOTS) for op in l.ops]


# ============================================================================ entry points
def _open(obj):
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return _Model(bytes(obj), "the TFLite bytes")
    if not isinstance(obj, (str, os.PathLike)):
        raise TypeError(f"from_tflite expects a path to a .tflite file or its bytes; got "
                        f"{type(obj).__name__}")
    path = check_file(obj, TFLiteFormatError, "a .tflite file")
    with open(path, "rb") as f:
        data = f.read()
    return _Model(data, path)


def _where(obj) -> str:
    return str(os.fspath(obj)) if isinstance(obj, (str, os.PathLike)) else "the TFLite bytes"


def _select(model, layer):
    layers = _find_layers(model)
    if not layers:
        found = sorted({o.name for o in model.ops})
        hint = ""
        if _WHILE in {o.code for o in model.ops}:
            hint = (" (a WHILE loop: the converter did not fuse the LSTM, as for Keras 3 "
                    "models; convert a tf.keras 2 / tf_keras LSTM with a static batch size)")
        elif _LSTM_ONE_STEP in {o.code for o in model.ops}:
            hint = " (the one-step LSTM op is not supported)"
        raise TFLiteFormatError(f"{model.where}: no UNIDIRECTIONAL_SEQUENCE_LSTM or "
                                f"BIDIRECTIONAL_SEQUENCE_LSTM op; the model has {found}{hint}")
    if layer is None:
        chains = _chains(layers)
        if len(chains) != 1:
            desc = [[layers.index(l) for l in c] for c in chains]
            raise TFLiteFormatError(
                f"{model.where}: {len(chains)} separate LSTM stacks (layers {desc}: "
                f"{[l.describe(model) for l in layers]}); choose with layer=k or "
                f"layer=[k, ...]")
        return chains[0]
    picks = [layer] if isinstance(layer, int) else list(layer)
    chosen = []
    for k in picks:
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < len(layers):
            raise TFLiteFormatError(f"{model.where}: layer {k!r}: expected an index in "
                                    f"0..{len(layers) - 1}; layers: "
                                    f"{[l.describe(model) for l in layers]}")
        chosen.append(layers[k])
    for a, b in zip(chosen, chosen[1:]):
        if b.x != a.y:
            raise TFLiteFormatError(f"{model.where}: {b.describe(model)} does not read the "
                                    f"output of {a.describe(model)}; layer= must list a chain")
    return chosen


def read_tflite(obj, layer=None) -> CanonicalModel:
    """The numpy core of `from_tflite`: canonical weights and constructor options."""
    if layer is not None and not isinstance(layer, (int, list, tuple)):
        raise TypeError(f"layer must be an index or a list of indices; got {layer!r}")
    with guard(TFLiteFormatError, _where(obj)):
        model = _open(obj)
        data = _convert(model, _select(model, layer))
    for msg in data.notes:
        warnings.warn(msg, stacklevel=3)
    return data


def from_tflite(obj, layer=None):
    """Build an LSTM from the LSTM op(s) of a TFLite model (see the module docstring).

    Parameters
    ----------
    obj : path to a .tflite file, or its bytes
    layer : int or list of int, optional
        Layers by their position in `layers_summary` (one op, or a converter's
        bidirectional pattern). Default: the one chain of LSTM layers in the graph.

    Returns
    -------
    LSTM: ``batch_first = not time_major``; float32, or the ``int8`` mode for hybrid files.

    Raises
    ------
    TFLiteFormatError (a FormatError) for every problem with the file: not TFLite,
    truncated, corrupted, hostile (offsets outside the file), unsupported ops or options.
    """
    data = read_tflite(obj, layer)
    with guard(TFLiteFormatError, _where(obj)):
        return build(data, TFLiteFormatError)


def layers_summary(obj) -> List[str]:
    """A line per LSTM layer found (what ``layer=k`` picks), in order."""
    with guard(TFLiteFormatError, _where(obj)):
        model = _open(obj)
        return [l.describe(model) for l in _find_layers(model)]


def sniff(path) -> Optional[str]:
    """"tflite" if the file carries the TFLite flatbuffer identifier, else None."""
    try:
        with open(os.fspath(path), "rb") as f:
            head = f.read(8)
        return "tflite" if len(head) == 8 and head[4:8] == _IDENT else None
    except Exception:  # noqa: BLE001 - a sniffer answers, it does not fail
        return None


def is_tflite_file(path) -> bool:
    return sniff(path) is not None
