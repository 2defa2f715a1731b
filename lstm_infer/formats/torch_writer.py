"""Write a state dict of numpy arrays as a ``torch.save`` file, without torch.

What ``torch.load(path, weights_only=True)`` reads back is an ``OrderedDict`` of CPU
tensors, as if ``torch.save(state_dict, path)`` had written it. The layout is
torch's zip format (the one `torch_pickle` reads), records stored uncompressed:

    archive/data.pkl             the pickle (protocol 2) of the dict
    archive/.format_version      "1"
    archive/.storage_alignment   "64": every storage record starts at a multiple of 64
                                 (torch.load(mmap=True) maps them in place)
    archive/byteorder            "little"
    archive/data/0, 1, ...       one storage per tensor, raw little-endian elements
    archive/version              "3"

The pickle is what torch writes for a tensor: ``torch._utils._rebuild_tensor_v2(
storage, offset, size, stride, requires_grad=False, backward_hooks=OrderedDict())``,
the storage a persistent id ``('storage', torch.FloatStorage, key, 'cpu', numel)``.

Why opcodes and not ``pickle.Pickler``: the stdlib pickler writes a global only after
importing its module and finding the object there (``save_global``), so pickling a
reference to ``torch._utils._rebuild_tensor_v2`` would import torch. The few opcodes a
state dict needs (those of protocol 2: GLOBAL, MARK, TUPLE, REDUCE, BINPERSID,
BINUNICODE, BININT, LONG1, NEWFALSE, SETITEMS) are written here, each as
``pickle``'s own opcode constant; ``pickletools.dis`` reads the result.
"""
from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict

import numpy as np

from . import safetensors_io
from ._export import replacing

__all__ = ["write_torch", "save_state_dict", "save_safetensors", "dumps_state_dict"]

ALIGNMENT = 64
_ARCHIVE = "archive"
# numpy dtype -> the torch storage class torch.save names for it
_STORAGES = {np.dtype("float32"): "FloatStorage", np.dtype("float64"): "DoubleStorage",
             np.dtype("float16"): "HalfStorage", np.dtype("int64"): "LongStorage",
             np.dtype("int32"): "IntStorage", np.dtype("int8"): "CharStorage",
             np.dtype("uint8"): "ByteStorage", np.dtype("bool"): "BoolStorage"}


class _Pickle:
    """A protocol-2 pickle written opcode by opcode (no memo: nothing is shared)."""

    def __init__(self):
        self.out = io.BytesIO()
        self.out.write(pickle.PROTO + bytes([2]))

    def op(self, code: bytes):
        self.out.write(code)

    def global_(self, module: str, name: str):
        self.op(pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii"))

    def str_(self, s: str):
        raw = s.encode("utf-8")
        self.op(pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw)

    def int_(self, n: int):
        n = int(n)
        if -(1 << 31) <= n < (1 << 31):
            self.op(pickle.BININT + struct.pack("<i", n))
        else:  # LONG1: little-endian two's complement, as short as it goes
            raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
            self.op(pickle.LONG1 + bytes([len(raw)]) + raw)

    def ints(self, values):
        self.op(pickle.MARK)
        for v in values:
            self.int_(v)
        self.op(pickle.TUPLE)

    def ordered_dict(self):
        """Push an empty ``collections.OrderedDict()``."""
        self.global_("collections", "OrderedDict")
        self.op(pickle.EMPTY_TUPLE + pickle.REDUCE)

    def tensor(self, key: str, storage: str, shape, numel: int):
        """A contiguous tensor of `shape` over storage record `key`."""
        strides, acc = [], 1
        for n in reversed(shape):
            strides.append(acc)
            acc *= max(int(n), 1)
        self.global_("torch._utils", "_rebuild_tensor_v2")
        self.op(pickle.MARK)
        self.op(pickle.MARK)                      # the storage's persistent id
        self.str_("storage")
        self.global_("torch", storage)
        self.str_(key)
        self.str_("cpu")
        self.int_(numel)
        self.op(pickle.TUPLE + pickle.BINPERSID)
        self.int_(0)                              # storage offset
        self.ints(shape)
        self.ints(reversed(strides))
        self.op(pickle.NEWFALSE)                  # requires_grad
        self.ordered_dict()                       # backward_hooks
        self.op(pickle.TUPLE + pickle.REDUCE)

    def getvalue(self) -> bytes:
        return self.out.getvalue() + pickle.STOP


def _arrays(state_dict) -> "OrderedDict[str, np.ndarray]":
    out = OrderedDict()
    for name, a in state_dict.items():
        if not isinstance(name, str):
            raise TypeError(f"state dict keys must be strings; got {name!r}")
        a = np.asarray(a)
        if a.dtype.newbyteorder("=") not in _STORAGES:
            raise TypeError(f"{name}: dtype {a.dtype} has no torch storage here; expected one "
                            f"of {sorted(str(d) for d in _STORAGES)}")
        # astype keeps 0-d arrays 0-d (ascontiguousarray would make them 1-d)
        out[name] = a.astype(a.dtype.newbyteorder("<"), order="C", copy=False)
    return out


def dumps_state_dict(state_dict) -> tuple:
    """(data.pkl bytes, [little-endian arrays, one storage each, in key order])."""
    arrays = _arrays(state_dict)
    p = _Pickle()
    p.ordered_dict()
    p.op(pickle.MARK)
    for i, (name, a) in enumerate(arrays.items()):
        p.str_(name)
        p.tensor(str(i), _STORAGES[a.dtype.newbyteorder("=")], a.shape, a.size)
    p.op(pickle.SETITEMS)
    return p.getvalue(), list(arrays.values())


def _write_aligned(zf: zipfile.ZipFile, name: str, data) -> None:
    """A stored record whose data starts at a multiple of ALIGNMENT in the file: the
    local header's extra field is padded (as torch's own writer does)."""
    data = memoryview(data).cast("B")
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    info.file_size = len(data)
    zip64 = info.file_size * 1.05 > zipfile.ZIP64_LIMIT  # zipfile's own rule
    # local header: 30 bytes + name + extra (+ 20 bytes of zip64 sizes zipfile appends)
    start = zf.fp.tell() + 30 + len(name.encode("utf-8")) + (20 if zip64 else 0)
    pad = -(start + 4) % ALIGNMENT
    info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # id "FB", as torch pads
    with zf.open(info, "w", force_zip64=zip64) as f:
        f.write(data)


def save_state_dict(state_dict, path) -> None:
    """Write ``{name: array}`` (float32 / float64 / float16 / integer arrays) to `path` as
    ``torch.save(OrderedDict of tensors)`` would; ``torch.load(path, weights_only=True)``
    reads it. The file is written next to `path` and renamed over it when complete."""
    pkl, arrays = dumps_state_dict(state_dict)
    with replacing(path) as tmp, \
            zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        _write_aligned(zf, f"{_ARCHIVE}/data.pkl", pkl)
        _write_aligned(zf, f"{_ARCHIVE}/.format_version", b"1")
        _write_aligned(zf, f"{_ARCHIVE}/.storage_alignment", str(ALIGNMENT).encode())
        _write_aligned(zf, f"{_ARCHIVE}/byteorder", b"little")
        for i, a in enumerate(arrays):
            _write_aligned(zf, f"{_ARCHIVE}/data/{i}", a.reshape(-1).view(np.uint8))
        _write_aligned(zf, f"{_ARCHIVE}/version", b"3\n")


def save_safetensors(state_dict, path) -> None:
    """Write ``{name: array}`` as safetensors with torch's names, as
    ``safetensors.torch.save_file(state_dict, path, metadata={"format": "pt"})`` would."""
    safetensors_io.save(os.fspath(path), dict(_arrays(state_dict)), {"format": "pt"})


def write_torch(model, path, *, dequantize: bool = False, safetensors=None) -> None:
    """`model` (an LSTM or its `CanonicalModel`) as a torch file: its ``nn.LSTM`` state
    dict (`pytorch.to_state_dict`, which refuses what nn.LSTM cannot express) in
    torch.save's zip format, or as torch-named safetensors when `path` ends in
    ``.safetensors`` (or ``safetensors=True``). Neither records ``batch_first``."""
    from .pytorch import to_state_dict

    sd = to_state_dict(model, dequantize=dequantize)
    if safetensors is None:
        safetensors = os.fspath(path).lower().endswith(".safetensors")
    (save_safetensors if safetensors else save_state_dict)(sd, path)
