"""Read ``torch.save`` files and torch-named safetensors files without torch.

No code from a file is ever run. ``data.pkl`` is interpreted by our own small
pickle machine (opcodes decoded by ``pickletools.genops``), not by
``pickle.Unpickler``; a GLOBAL resolves only through the table `_GLOBALS` of
tensor-rebuild and container names, each mapped to a function of this module.
Every other global -- ``os.system``, ``builtins.eval``, a model class -- is
refused by name before anything is imported or called. REDUCE / NEWOBJ call
only entries of that table; BUILD is accepted only on dicts (``state_dict()``'s
``_metadata`` attribute, which is dropped); APPEND only on lists, SETITEM only
on dicts. This mirrors torch's own ``weights_only`` unpickler
(``torch/_weights_only_unpickler.py``), minus torch.

Formats (sniffed from the content, never from the file name):

- zip (``torch.save`` default since 1.6; ``.pt`` / ``.pth`` / ``.bin``):
  ``<archive>/data.pkl`` + ``<archive>/data/<key>`` storage records (+
  ``byteorder``). Tensors come from ``torch._utils._rebuild_tensor_v2/v3`` with
  persistent ids ``('storage', storage_type, key, location, numel)``.
- legacy (``_use_new_zipfile_serialization=False``): magic-number pickle,
  protocol, sys-info, the object, the storage keys, then each storage as an
  int64 element count + little-endian data.
- safetensors: the JSON header is parsed here (8-byte little-endian length +
  JSON + data), not with the ``safetensors`` package, so that bfloat16 (no
  numpy dtype) is read and only the tensors a caller needs are read.
- Refused with a clear error: TorchScript archives (``torch.jit.save``),
  the pre-1.0 tar format, pickled ``nn.Module`` objects (save ``state_dict()``).

Tensors are lazy (`TorchTensor`): unpickling reads only ``data.pkl``; a
tensor's storage is read once, on first use, straight from the file into one
numpy buffer (no intermediate ``bytes``), CRC-checked, and the tensor is a
view of it (``as_strided`` + one copy only when it is not contiguous).
bfloat16 becomes float32 exactly (the 16 bits are the top half of a float32);
float16 and float64 stay as they are.

Errors are `TorchFileError` (a FormatError, a ValueError) naming the file and
what is wrong; whatever else a hostile file provokes in parsing or reading
(a MemoryError, a RecursionError...) is turned into one by `errors.guard`.

Limits (a file never makes us hang or allocate far more than it holds)
----------------------------------------------------------------------
Each is far above what ``torch.save`` writes and far below what hurts:

- Dict keys and set members are hashed only when the work is bounded: a
  tuple's *expanded* size (its elements at every level, memo-shared parts
  counted each time they occur; `hash()` and ``==`` walk all of them) is
  tracked next to its depth, and a key expanding to more than
  `_MAX_KEY_SIZE` elements is refused (a 462-byte tuple DAG would otherwise
  hash for 2^depth steps). Keys whose hash a file can choose (ints beyond the
  hash modulus, floats, tuples, frozensets...) may collide at most
  `_MAX_SAME_HASH` times per dict or set (a hash flood is quadratic), and all
  of that hashing adds up to at most `_MAX_HASH_WORK` elements per pickle.
  Strings and bytes (seeded hashes) and small ints cost nothing here.
- ``data.pkl`` is read with its declared size capped (`errors.read_member`):
  `errors.MAX_METADATA_BYTES`, and when it is deflate-compressed (torch never
  compresses it) at most 2x the file's size + 1 MiB.
- The pickle machine's own containers (lists, dicts, sets, tuples, memo
  entries, estimated in bytes) may take at most 64x the pickle's size (capped
  by the file's size) + 64 MiB; a real checkpoint takes about 20x, a pickle
  of nothing but EMPTY_SET opcodes would take 226x.
- Storage buffers read from one file add up to at most 2x its size + 16 MiB.
  A stored record must lie inside the file (checked before allocating); a
  deflate-compressed record (torch never writes them) may therefore inflate
  to about twice the archive, not to gigabytes.
- Arrays handed out by `TorchTensor.numpy` add up to at most 2x the file's
  tensor data (its size, or the storage bytes read if more) + 64 MiB, checked
  before each is made. This is what refuses an *expanded* view
  (``torch.zeros(1).expand(16384, 4096)``: more elements than its storage
  holds; its dense copy would be 256 MiB from a 4-byte storage): small ones
  are materialised within that budget, large ones are a TorchFileError naming
  the storage record, shape and stride (save ``t.contiguous()`` instead). It
  also bounds many tensors viewing one storage.
"""
from __future__ import annotations

import io
import math
import os
import pickle
import pickletools
import struct
import sys
import zipfile
import zlib
from collections import OrderedDict

import numpy as np

from ..quantize import bf16_bits_to_f32
from . import safetensors_io
from .errors import MAX_METADATA_BYTES, FormatError, guard, read_member

__all__ = ["TorchFileError", "UnsafePickleError", "PickledModuleError", "TorchTensor",
           "TorchFile", "load", "sniff"]


class TorchFileError(FormatError):
    """A PyTorch / safetensors file that cannot be read: corrupted, truncated, unsupported."""


class UnsafePickleError(TorchFileError, pickle.UnpicklingError):
    """``data.pkl`` refers to a global (function or class) that is not a tensor or a container.

    ``global_name`` is the refused ``module.name``. Nothing was imported or called.
    """

    def __init__(self, msg, global_name=None):
        super().__init__(msg)
        self.global_name = global_name


class PickledModuleError(UnsafePickleError):
    """The file holds a whole pickled ``nn.Module`` rather than a ``state_dict()``."""


# ----------------------------------------------------------------------------- dtypes
# torch dtype name -> little-endian numpy dtype; bfloat16 is read as its uint16 bits.
_NP_DTYPES = {
    "float32": "<f4", "float64": "<f8", "float16": "<f2", "bfloat16": "<u2",
    "int64": "<i8", "int32": "<i4", "int16": "<i2", "int8": "i1", "uint8": "u1",
    "uint16": "<u2", "uint32": "<u4", "uint64": "<u8", "bool": "?",
    "complex64": "<c8", "complex128": "<c16",
}
# dtypes numpy cannot hold: tensors of these load as placeholders that refuse to be used
_UNSUPPORTED_ITEMSIZE = {
    "float8_e5m2": 1, "float8_e4m3fn": 1, "float8_e5m2fnuz": 1, "float8_e4m3fnuz": 1,
    "float8_e8m0fnu": 1, "float4_e2m1fn_x2": 1, "complex32": 4, "bits8": 1, "bits16": 2,
    "bits1x8": 1, "bits2x4": 1, "bits4x2": 1, "qint8": 1, "quint8": 1, "qint32": 4,
    "quint4x2": 1, "quint2x4": 1,
}
_ITEMSIZE = {**{k: np.dtype(v).itemsize for k, v in _NP_DTYPES.items()}, **_UNSUPPORTED_ITEMSIZE}
_STORAGE_DTYPES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
    "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128", "QInt8Storage": "qint8", "QInt32Storage": "qint32",
    "QUInt8Storage": "quint8", "QUInt4x2Storage": "quint4x2", "QUInt2x4Storage": "quint2x4",
    "UntypedStorage": "uint8",
}
_SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
    "U16": "uint16", "U32": "uint32", "U64": "uint64", "BOOL": "bool",
    "C64": "complex64", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}

_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER (legacy format)
_MAGIC_BYTES = b"\x8a\x0a" + _MAGIC.to_bytes(10, "little")  # as a LONG1 opcode
_MAX_NESTING = 100  # tuple depth; torch pickles need < 10 (hash() of deep tuples recurses in C)
_MAX_KEY_SIZE = 1 << 16     # expanded elements of one dict key / set member (see the docstring)
_MAX_SAME_HASH = 8          # distinct file-chosen keys of one dict / set sharing a hash value
_MAX_HASH_WORK = 1 << 24    # expanded elements hashed or compared for such keys, per pickle
_HASH_MODULUS = sys.hash_info.modulus  # ints below it hash to themselves
_MAX_MEMO_INDEX = 1 << 32   # LONG_BINPUT's range; larger PUT indices only make collisions
_PICKLE_MEMORY = (64, 64 << 20)   # containers the pickle builds: 64 x its size + 64 MiB
_STORAGE_BYTES = (2, 16 << 20)    # storage buffers of one file: 2 x its size + 16 MiB
_TENSOR_BYTES = (2, 64 << 20)     # arrays handed out: 2 x the file's tensor data + 64 MiB
_PKL_INFLATE_SLACK = 1 << 20      # a compressed data.pkl: at most 2 x the file's size + 1 MiB


def _dtype_name(obj, what):
    if isinstance(obj, _DType):
        return obj.name
    raise TorchFileError(f"{what} must be a torch dtype; got {_describe(obj)}")


class TorchTensor:
    """A tensor stored in a file, read on first use.

    ``shape`` and ``dtype`` (a torch dtype name: ``"float32"``, ``"bfloat16"``...)
    are known without reading; ``numpy()`` / ``np.asarray(t)`` read it
    (bfloat16 arrives as float32, exactly). Valid while its `TorchFile` is open.
    """

    __slots__ = ("_storage", "_offset", "shape", "_stride", "dtype", "_charged")

    def __init__(self, storage, offset, shape, stride, dtype):
        self._storage, self._offset = storage, offset
        self.shape, self._stride, self.dtype = shape, stride, dtype
        self._charged = False  # counted in its file's budget of arrays handed out

    @property
    def ndim(self):
        return len(self.shape)

    def numpy(self) -> np.ndarray:
        with guard(TorchFileError, self._storage.where):
            return self._numpy()

    def _numpy(self):
        if self.dtype not in _NP_DTYPES:
            raise TorchFileError(f"{self._storage.where}: a {self.dtype} tensor has no numpy "
                                 f"equivalent and is not supported")
        flat = self._storage.typed(self.dtype)
        shape, n = self.shape, math.prod(self.shape)
        if not self._charged:  # before anything of the tensor's size is allocated
            self._storage._src._tf._charge_tensor(self, n)
            self._charged = True
        if n == 0:
            a = np.empty(shape, dtype=flat.dtype)
        elif _is_c_contiguous(shape, self._stride):
            a = flat[self._offset:self._offset + n].reshape(shape)
        else:  # a transposed / expanded view: the only copy besides dtype conversion
            isz = flat.dtype.itemsize
            a = np.lib.stride_tricks.as_strided(
                flat[self._offset:], shape, [s * isz for s in self._stride], writeable=False)
            a = np.ascontiguousarray(a)
        if self.dtype == "bfloat16":
            a = bf16_bits_to_f32(a)
        elif not a.dtype.isnative:
            a = a.astype(a.dtype.newbyteorder("="))
        return a

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype, copy=False)

    def __repr__(self):
        return f"TorchTensor(shape={self.shape}, dtype={self.dtype})"


def _c_strides(shape):
    strides, acc = [], 1
    for s in reversed(shape):
        strides.append(acc)
        acc *= max(s, 1)
    return tuple(reversed(strides))


def _is_c_contiguous(shape, stride):
    # a size-1 dimension may carry any stride (torch gives e.g. x.t() of (4, 1) stride (1, 1))
    return all(st == c for s, st, c in zip(shape, stride, _c_strides(shape)) if s != 1)


class _Unsupported:
    """Stands for an object that was decoded safely but that we cannot use (a
    quantized or sparse tensor, a float8 tensor...): harmless until someone needs it."""

    __slots__ = ("what",)

    def __init__(self, what):
        self.what = what

    def __repr__(self):
        return f"<unsupported: {self.what}>"


class _DType:
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"torch.{self.name}"


class _Marker:
    """An allowed torch name that is only ever an argument (torch.device, a layout...)."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name


class _StorageType:
    __slots__ = ("name", "dtype")

    def __init__(self, name, dtype):
        self.name, self.dtype = name, dtype

    def __repr__(self):
        return f"torch.{self.name}"


# ----------------------------------------------------------------------------- storages
class _Storage:
    """One storage record: `nbytes` bytes at a known place in the file, read once."""

    def __init__(self, src, where, dtype, nbytes, byteorder, locator=None):
        self._src = src            # a _ZipSource / _RangeSource: reads `nbytes` into a buffer
        self.where = where         # "<path>: archive/data/3", for messages
        self.dtype = dtype         # element type it was saved with
        self.nbytes = nbytes
        self.locator = locator     # the ZipInfo, or the byte offset in the file
        self._byteorder = byteorder
        self._buf = None

    def raw(self) -> np.ndarray:
        if self._buf is None:
            tf = self._src._tf
            if tf._file is None:
                raise TorchFileError(f"{self.where}: the file is closed; read tensors inside "
                                     "`with TorchFile(path) as tf:` (or use torch_pickle.load)")
            tf._charge_storage(self)
            self._buf = self._src.read_into_buffer(self)
        return self._buf

    def typed(self, dtype) -> np.ndarray:
        npdt = np.dtype(_NP_DTYPES[dtype])
        if self._byteorder == "big" and npdt.itemsize > 1:
            npdt = npdt.newbyteorder(">")
        raw = self.raw()
        usable = raw.size - raw.size % npdt.itemsize
        return raw[:usable].view(npdt)


def _read_exact_into(f, offset, buf, where):
    f.seek(offset)
    mv = memoryview(buf)
    got = 0
    while got < len(mv):
        n = f.readinto(mv[got:])
        if not n:
            raise TorchFileError(f"{where}: file ends after {got} of {len(mv)} bytes "
                                 "(truncated file?)")
        got += n


def _check_in_file(st, start, size):
    if start + st.nbytes > size:
        raise TorchFileError(f"{st.where}: its {st.nbytes} bytes at offset {start} run past the "
                             f"end of the {size}-byte file (truncated or corrupted file?)")


class _ZipSource:
    """Storage records of a torch zip archive, read straight from the file."""

    def __init__(self, tf, zf, prefix):
        self._tf, self._zf, self.prefix = tf, zf, prefix
        self._names = {i.filename: i for i in zf.infolist()}

    def has(self, name):
        return self.prefix + name in self._names

    def info(self, name):
        return self._names[self.prefix + name]

    def read_record(self, name, limit=MAX_METADATA_BYTES) -> bytes:
        return read_member(self._zf, self.prefix + name, TorchFileError, self._tf.path, limit)

    def read_into_buffer(self, st) -> np.ndarray:
        info = st.locator
        f = self._tf._file
        try:
            if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1:
                f.seek(info.header_offset)
                head = f.read(30)
                if len(head) != 30 or head[:4] != b"PK\x03\x04":
                    raise TorchFileError(f"{st.where}: bad zip local header (corrupted file?)")
                n_name, n_extra = struct.unpack("<HH", head[26:30])
                start = info.header_offset + 30 + n_name + n_extra
                _check_in_file(st, start, self._tf.size)
                buf = np.empty(st.nbytes, dtype=np.uint8)
                _read_exact_into(f, start, buf, st.where)
                if info.file_size == st.nbytes and zlib.crc32(buf) != info.CRC:
                    raise TorchFileError(f"{st.where}: CRC mismatch, the data is corrupted")
            else:  # a re-compressed archive: zipfile inflates (and checks the CRC)
                buf = np.empty(st.nbytes, dtype=np.uint8)
                with self._zf.open(info) as r:
                    mv, got = memoryview(buf), 0
                    while got < st.nbytes:
                        n = r.readinto(mv[got:])
                        if not n:
                            raise TorchFileError(f"{st.where}: record ends early (corrupted?)")
                        got += n
        except TorchFileError:
            raise
        except Exception as e:  # noqa: BLE001 - zipfile on a corrupted archive raises anything
            raise TorchFileError(f"{st.where}: cannot read: {e} (truncated or corrupted file?)") \
                from e
        return buf


class _RangeSource:
    """Storages at known byte ranges of a plain file (legacy torch format, safetensors)."""

    def __init__(self, tf):
        self._tf = tf

    def read_into_buffer(self, st) -> np.ndarray:
        _check_in_file(st, st.locator, self._tf.size)
        buf = np.empty(st.nbytes, dtype=np.uint8)
        try:
            _read_exact_into(self._tf._file, st.locator, buf, st.where)
        except OSError as e:
            raise TorchFileError(f"{st.where}: cannot read: {e}") from e
        return buf


class _BoundedReader:
    """A file view that never hands `read(n)` more than what is left (a crafted
    length field must not make us allocate gigabytes)."""

    def __init__(self, f, size):
        self._f, self._size = f, size

    def read(self, n=-1):
        left = max(self._size - self._f.tell(), 0)
        return self._f.read(left if n is None or n < 0 else min(n, left))

    def readline(self):
        return self._f.readline(max(self._size - self._f.tell(), 0))

    def tell(self):
        return self._f.tell()


# ----------------------------------------------------------------------------- globals
def _check_int(v, what):
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 62:
        raise TorchFileError(f"{what} must be a non-negative integer; got {_describe(v)}")
    return v


def _check_ints(v, what):
    if not isinstance(v, (tuple, list)):
        raise TorchFileError(f"{what} must be a tuple of integers; got {_describe(v)}")
    return tuple(_check_int(x, what) for x in v)


def _make_tensor(storage, offset, size, stride, dtype):
    if not isinstance(storage, _Storage):
        raise TorchFileError(f"a tensor's storage must be a persistent storage record; "
                             f"got {_describe(storage)}")
    offset = _check_int(offset, "tensor storage offset")
    size = _check_ints(size, "tensor size")
    stride = _check_ints(stride, "tensor stride")
    if len(size) != len(stride):
        raise TorchFileError(f"{storage.where}: tensor size {size} and stride {stride} "
                             "differ in length")
    if dtype not in _ITEMSIZE:
        raise TorchFileError(f"{storage.where}: unknown tensor dtype {dtype!r}")
    numel = storage.nbytes // _ITEMSIZE[dtype]
    if not all(size) and any(s > 1 << 31 for s in size):
        raise TorchFileError(f"{storage.where}: implausible empty tensor shape {size}")
    if all(size):
        last = offset + sum((s - 1) * st for s, st in zip(size, stride))
        if last >= numel:
            raise TorchFileError(
                f"{storage.where}: a tensor of shape {size}, stride {stride}, offset {offset} "
                f"reaches element {last}, but the storage holds {numel} {dtype} elements")
    return TorchTensor(storage, offset, size, stride, dtype)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _make_tensor(storage, storage_offset, size, stride,
                        getattr(storage, "dtype", None))


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
    # an untyped (byte) storage; the tensor's dtype comes separately
    return _make_tensor(storage, storage_offset, size, stride,
                        _dtype_name(dtype, "_rebuild_tensor_v3 dtype"))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    return data  # a Parameter is its tensor, for inference


def _rebuild_from_type_v2(func, new_type, args, state):
    # torch's path for tensors carrying a __dict__ / a Tensor subclass; only plain
    # Tensor and Parameter reach here, because any other class was refused as a global
    # (func is one of torch's tensor-rebuild functions, never a container constructor)
    if not isinstance(func, _Global) or not func.name.startswith("torch._utils._rebuild") \
            or not isinstance(new_type, _Marker) \
            or new_type.name not in ("torch.Tensor", "torch.nn.parameter.Parameter"):
        raise TorchFileError(f"_rebuild_from_type_v2 expects a rebuild function and a tensor "
                             f"type; got {_describe(func)}, {_describe(new_type)}")
    if not isinstance(args, tuple):
        raise TorchFileError(f"_rebuild_from_type_v2 args must be a tuple; got {_describe(args)}")
    return func.call(args)


def _ordered_dict(*args):
    if not args:
        return OrderedDict()
    if len(args) == 1 and isinstance(args[0], (list, tuple, dict)):
        items = args[0].items() if isinstance(args[0], dict) else args[0]
        out = OrderedDict()
        for kv in items:
            if not isinstance(kv, (tuple, list)) or len(kv) != 2:
                raise TorchFileError(f"OrderedDict items must be pairs; got {_describe(kv)}")
            out[kv[0]] = kv[1]
        return out
    raise TorchFileError(f"OrderedDict takes one list of pairs; got {len(args)} arguments")


def _container(kind):
    def make(*args):
        if not args:
            return kind()
        if len(args) != 1 or not isinstance(args[0], (list, tuple, set, frozenset)):
            raise TorchFileError(f"{kind.__name__}() takes one list; got {_describe(args)}")
        return kind(args[0])
    return make


def _bytearray(*args):
    if not args:
        return bytearray()
    if isinstance(args[0], (bytes, bytearray)):  # never an int: that would allocate it
        return bytearray(args[0])
    if isinstance(args[0], str) and len(args) == 2 and args[1] in ("latin1", "latin-1"):
        return bytearray(args[0], "latin1")
    raise TorchFileError(f"bytearray() arguments not allowed: {_describe(args)}")


def _bytes(*args):
    if args:  # protocol <= 2 writes only b"" this way (bytes(n) would allocate n bytes)
        raise TorchFileError(f"bytes() arguments not allowed: {_describe(args)}")
    return b""


def _codecs_encode(obj, encoding="utf-8", errors="strict"):
    # how protocol 2 pickles bytes: _codecs.encode('\x00...', 'latin1')
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
        raise TorchFileError(f"_codecs.encode is only allowed for latin1 text; got "
                             f"{_describe(obj)}, {encoding!r}")
    return obj.encode("latin1")


def _complex(real=0.0, imag=0.0):
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (real, imag)):
        raise TorchFileError("complex() takes two numbers")
    return complex(real, imag)


def _unsupported(name):
    def make(*args):
        return _Unsupported(f"{name}(...)")
    return make


def _torch_size(*args):
    if len(args) != 1:
        raise TorchFileError("torch.Size takes one tuple")
    return _check_ints(args[0], "torch.Size")


def _inert(name):
    def make(*args):
        return _Marker(f"{name}(...)")
    return make


class _Global:
    """An allowed global: the name the file used and the function of this module it maps to."""

    __slots__ = ("name", "fn", "value")

    def __init__(self, name, fn=None, value=None):
        self.name, self.fn, self.value = name, fn, value

    def call(self, args):
        if self.fn is None:
            raise TorchFileError(f"{self.name} is not callable here")
        return self.fn(*args)

    def __repr__(self):
        return self.name


def _build_globals():
    g = {
        "collections.OrderedDict": _ordered_dict,
        "torch._utils._rebuild_tensor": _rebuild_tensor,
        "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
        "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
        "torch._utils._rebuild_parameter": _rebuild_parameter,
        "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
        "torch._tensor._rebuild_from_type_v2": _rebuild_from_type_v2,
        "torch.Size": _torch_size,
        "builtins.set": _container(set),
        "builtins.frozenset": _container(frozenset),
        "builtins.bytearray": _bytearray,
        "builtins.bytes": _bytes,
        "builtins.complex": _complex,
        "_codecs.encode": _codecs_encode,
        "torch.device": _inert("torch.device"),
        "torch.serialization._get_layout": _inert("torch layout"),
    }
    # decoded but unusable: quantized, sparse, nested, meta... tensors elsewhere in a checkpoint
    for name in ("_rebuild_qtensor", "_rebuild_sparse_tensor", "_rebuild_sparse_csr",
                 "_rebuild_nested_tensor", "_rebuild_meta_tensor_no_storage",
                 "_rebuild_wrapper_subclass", "_rebuild_device_tensor_from_cpu_tensor",
                 "_rebuild_xla_tensor", "_rebuild_mtia_tensor", "_rebuild_mlc_tensor"):
        g[f"torch._utils.{name}"] = _unsupported(f"torch._utils.{name}")
    table = {k: _Global(k, fn) for k, fn in g.items()}
    for marker in ("torch.Tensor", "torch.nn.parameter.Parameter", "torch.per_tensor_affine",
                   "torch.per_tensor_symmetric", "torch.per_channel_affine",
                   "torch.per_channel_symmetric", "torch.per_channel_affine_float_qparams"):
        table[marker] = _Global(marker, value=_Marker(marker))
    for st, dt in _STORAGE_DTYPES.items():
        for mod in ("torch", "torch.cuda") if st != "UntypedStorage" else ("torch",
                                                                           "torch.storage"):
            table[f"{mod}.{st}"] = _Global(f"{mod}.{st}", value=_StorageType(st, dt))
    for dt in _ITEMSIZE:
        table[f"torch.{dt}"] = _Global(f"torch.{dt}", value=_DType(dt))
    return table


_GLOBALS = _build_globals()
_RENAMED_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}  # protocol-2 / py2 names


_SIMPLE = (int, float, str, bytes, type(None), _Global, _Marker, _DType, _StorageType)


def _describe(obj):
    """A short, safe description of a decoded value for error messages."""
    if isinstance(obj, _SIMPLE) or (isinstance(obj, (tuple, list)) and len(obj) <= 8
                                    and all(isinstance(x, _SIMPLE) for x in obj)):
        r = repr(obj)
    else:
        r = type(obj).__name__
    return r if len(r) <= 60 else r[:57] + "..."


# ----------------------------------------------------------------------------- unpickler
class _Unpickler:
    """A pickle machine over ``pickletools.genops``: data, containers and `_GLOBALS` only."""

    def __init__(self, tf, record, persistent_load):
        self.tf, self.record, self.persistent_load = tf, record, persistent_load
        self._info = {}     # id(tuple/frozenset) -> (depth, expanded size), composite ones only
        self._hashes = {}   # id(dict/set) -> {hash: [distinct keys]}, keys a file can collide
        self._keep = []     # keeps the objects of those ids alive
        self._hash_work = 0
        self._built = 0     # estimated bytes of the containers built (see _PICKLE_MEMORY)

    def _fail(self, msg, pos=None):
        at = f" at byte {pos}" if pos is not None else ""
        raise TorchFileError(f"{self.tf.path}: {self.record}{at}: {msg}")

    def _refuse(self, name, pos, data=None):
        where = f"{self.tf.path}: {self.record} (byte {pos})"
        modules = sorted(n for n in _scan_globals(data) if _is_module_class(n)) \
            if data is not None else []
        if _is_module_class(name) or modules:
            cls = name if _is_module_class(name) else modules[0]
            also = "" if cls == name else f"refusing global '{name}': "
            raise PickledModuleError(
                f"{where}: {also}the file holds a whole pickled nn.Module ({cls}), not a state "
                "dict. lstm_infer never unpickles code; save the weights with "
                "torch.save(model.state_dict(), path) and load that file (or pass the module "
                "itself to li.from_torch).", name)
        raise UnsafePickleError(
            f"{where}: refusing global '{name}': only tensors and plain containers are read "
            "from PyTorch files, and no code from a file is run. If this file holds a whole "
            "pickled model (torch.save(model)), save model.state_dict() instead.", name)

    def load(self, f, data=None):
        """Run the pickle in `f` up to its STOP; `data` (the bytes) only sharpens errors."""
        stack, metastack, memo = [], [], {}
        info, keep = self._info, self._keep
        sizes = [n for n in (None if data is None else len(data), getattr(self.tf, "size", None))
                 if n is not None]
        factor, slack = _PICKLE_MEMORY
        budget = slack + factor * min(sizes, default=0)

        def built(nbytes):
            self._built += nbytes
            if self._built > budget:
                self._fail(f"the pickle builds more than {budget >> 20} MiB of containers "
                           f"({factor}x its size + {slack >> 20} MiB; a torch.save pickle needs "
                           "about 20x): a crafted file?", pos)

        def pop_mark():
            nonlocal stack
            if not metastack:
                self._fail("MARK expected (corrupted pickle)", pos)
            items, stack = stack, metastack.pop()
            return items

        def nested(obj, items):
            """Record a tuple's / frozenset's depth and expanded size (what hash() walks)."""
            d, size = 1, 1
            for x in items:
                t = type(x)
                if t is tuple or t is frozenset:
                    dx, sx = info.get(id(x)) or (1, 1 + len(x))
                    d, size = max(d, dx + 1), size + sx
                else:
                    size += _leaf_hash_cost(x)
            if d > _MAX_NESTING:
                self._fail(f"containers nested deeper than {_MAX_NESTING}", pos)
            composite = d > 1 or size > 1 + len(obj)
            if composite:  # flat ones are (1, 1 + len) without a record
                info[id(obj)] = (d, size)
                keep.append(obj)
            built(40 + 8 * len(items) + (224 if type(obj) is frozenset else 0)
                  + (150 if composite else 0))
            return obj

        pos = 0
        try:
            for op, arg, pos in pickletools.genops(f):
                name = op.name
                if name in ("PROTO", "FRAME"):
                    continue
                if name == "STOP":
                    if len(stack) != 1 or metastack:
                        self._fail("malformed pickle: stack not balanced at STOP", pos)
                    return stack.pop()
                if name in ("NONE", "NEWTRUE", "NEWFALSE"):  # genops gives no arg for these
                    stack.append({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}[name])
                elif name in ("INT", "BININT", "BININT1", "BININT2",
                            "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT", "STRING", "BINSTRING",
                            "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
                            "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8"):
                    stack.append(arg)
                elif name == "BYTEARRAY8":
                    stack.append(bytearray(arg))
                elif name == "MARK":
                    built(64)
                    metastack.append(stack)
                    stack = []
                elif name == "POP":
                    if stack:
                        stack.pop()
                    else:
                        pop_mark()
                elif name == "POP_MARK":
                    pop_mark()
                elif name == "DUP":
                    stack.append(stack[-1])
                elif name == "EMPTY_TUPLE":
                    stack.append(())
                elif name == "TUPLE":
                    items = pop_mark()
                    stack.append(nested(tuple(items), items))
                elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                    n = int(name[-1])
                    if len(stack) < n:
                        self._fail("stack underflow", pos)
                    items = stack[-n:]
                    del stack[-n:]
                    stack.append(nested(tuple(items), items))
                elif name == "EMPTY_LIST":
                    built(64)
                    stack.append([])
                elif name == "LIST":
                    items = pop_mark()  # first: pop_mark rebinds `stack`
                    stack.append(items)
                elif name == "APPEND":
                    item = stack.pop()
                    if type(stack[-1]) is not list:
                        self._fail(f"APPEND to a {type(stack[-1]).__name__} is not allowed", pos)
                    built(8)
                    stack[-1].append(item)
                elif name == "APPENDS":
                    items = pop_mark()
                    if type(stack[-1]) is not list:
                        self._fail(f"APPENDS to a {type(stack[-1]).__name__} is not allowed", pos)
                    built(8 * len(items))
                    stack[-1].extend(items)
                elif name == "EMPTY_DICT":
                    built(240)
                    stack.append({})
                elif name == "DICT":
                    items = pop_mark()
                    built(240 + 24 * len(items))
                    stack.append(self._setitems({}, items, pos))
                elif name == "SETITEM":
                    v, k = stack.pop(), stack.pop()
                    built(48)
                    self._setitems(stack[-1], [k, v], pos)
                elif name == "SETITEMS":
                    items = pop_mark()
                    built(24 * len(items))
                    self._setitems(stack[-1], items, pos)
                elif name == "EMPTY_SET":
                    built(224)
                    stack.append(set())
                elif name == "ADDITEMS":
                    items = pop_mark()
                    if type(stack[-1]) is not set:
                        self._fail(f"ADDITEMS to a {type(stack[-1]).__name__} is not allowed", pos)
                    built(32 * len(items))
                    self._check_keys(stack[-1], items, pos)
                    stack[-1].update(items)
                elif name == "FROZENSET":
                    items = pop_mark()
                    built(32 * len(items))
                    self._check_keys(None, items, pos)
                    stack.append(nested(frozenset(items), items))
                elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                    i = len(memo) if name == "MEMOIZE" else int(arg)
                    if not 0 <= i < _MAX_MEMO_INDEX:
                        self._fail(f"memo index {i} out of range (corrupted pickle)", pos)
                    built(100)
                    memo[i] = stack[-1]
                elif name in ("GET", "BINGET", "LONG_BINGET"):
                    if int(arg) not in memo:
                        self._fail(f"memo key {arg} was never stored (corrupted pickle)", pos)
                    stack.append(memo[int(arg)])
                elif name in ("GLOBAL", "STACK_GLOBAL"):
                    if name == "GLOBAL":
                        module, _, gname = arg.partition(" ")
                    else:
                        gname, module = stack.pop(), stack.pop()
                        if not isinstance(module, str) or not isinstance(gname, str):
                            self._fail("STACK_GLOBAL needs two strings", pos)
                    module = _RENAMED_MODULES.get(module, module)
                    full = f"{module}.{gname}"
                    g = _GLOBALS.get(full)
                    if g is None:
                        self._refuse(full, pos, data)
                    stack.append(g if g.value is None else g.value)
                elif name in ("REDUCE", "NEWOBJ"):
                    args = stack.pop()
                    fn = stack[-1]
                    if not isinstance(fn, _Global) or not isinstance(args, tuple):
                        self._fail(f"{name} on {_describe(fn)} is not allowed", pos)
                    built(240)
                    if name == "NEWOBJ" and fn.name == "collections.OrderedDict":
                        stack[-1] = OrderedDict()  # cls.__new__(cls, *args) ignores args
                    else:
                        if fn.name in _HASHING_GLOBALS and args:  # they hash their argument
                            self._check_keys(None, _keys_of(fn.name, args[0]), pos)
                        r = fn.call(args)
                        stack[-1] = nested(r, r) if type(r) in (tuple, frozenset) else r
                elif name == "NEWOBJ_EX":
                    kwargs, args = stack.pop(), stack.pop()
                    fn = stack[-1]
                    if not isinstance(fn, _Global) or fn.name != "collections.OrderedDict":
                        self._fail(f"NEWOBJ_EX on {_describe(fn)} is not allowed", pos)
                    stack[-1] = OrderedDict()
                elif name == "BUILD":
                    state = stack.pop()
                    inst = stack[-1]
                    # state_dict()'s OrderedDict carries `_metadata` (module versions): unused
                    if not isinstance(inst, dict):
                        self._fail(f"BUILD on {_describe(inst)} is not allowed", pos)
                elif name in ("BINPERSID", "PERSID"):
                    pid = stack.pop() if name == "BINPERSID" else arg
                    stack.append(self.persistent_load(pid))
                elif name in ("INST", "OBJ"):
                    if name == "INST":
                        module, _, gname = arg.partition(" ")
                        self._refuse(f"{_RENAMED_MODULES.get(module, module)}.{gname}", pos, data)
                    self._fail("the OBJ opcode (old-style instance creation) is not allowed", pos)
                elif name in ("EXT1", "EXT2", "EXT4"):
                    self._refuse(f"<copyreg extension code {arg}>", pos, data)
                else:  # NEXT_BUFFER, READONLY_BUFFER, PERSID...
                    self._fail(f"pickle opcode {name} is not allowed", pos)
        except TorchFileError as e:
            if self.tf.path in str(e):
                raise
            # raised by a rebuild function, which does not know the file
            raise TorchFileError(f"{self.tf.path}: {self.record} at byte {pos}: {e}") from None
        except IndexError:
            self._fail("stack underflow (corrupted pickle)", pos)
        except RecursionError:
            self._fail("structure too deeply nested", pos)
        except (ValueError, TypeError, KeyError, EOFError, struct.error, UnicodeDecodeError,
                OverflowError, MemoryError) as e:
            self._fail(f"corrupted pickle: {type(e).__name__}: {e}", pos)
        self._fail("pickle ends without STOP (truncated file?)", pos)

    def _setitems(self, target, items, pos):
        if not isinstance(target, dict) or len(items) % 2:
            self._fail(f"SETITEM(S) on {_describe(target)} is not allowed", pos)
        self._check_keys(target, items[::2], pos)
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]
        return target

    def _check_keys(self, container, keys, pos):
        """Refuse keys that would make hashing them into `container` (None: a new one)
        take unbounded time: see "Limits" in the module docstring."""
        table = {} if container is None else self._hashes.get(id(container))
        for k in keys:
            t = type(k)
            if t is str or t is bytes or k is None or t is bool or \
                    (t is int and -_HASH_MODULUS < k < _HASH_MODULUS):
                continue  # O(1) or cached hash(), and no file can make two of them collide
            if t is tuple or t is frozenset:
                size = (self._info.get(id(k)) or (1, 1 + len(k)))[1]
            else:
                size = _leaf_hash_cost(k)
            if size > _MAX_KEY_SIZE:
                self._fail(f"a dict key or set member expands to {size} elements (tuples "
                           f"nested and shared through the memo); at most {_MAX_KEY_SIZE} are "
                           "accepted: hashing it would take for ever (a crafted file?)", pos)
            if table is None:
                table = self._hashes[id(container)] = {}
                self._keep.append(container)
            same = table.setdefault(hash(k), [])
            if not any(x is k or x == k for x in same):  # at most _MAX_SAME_HASH comparisons
                if len(same) >= _MAX_SAME_HASH:
                    self._fail(f"more than {_MAX_SAME_HASH} distinct keys of one dict or set "
                               "have the same hash (a crafted hash collision?)", pos)
                same.append(k)
            self._hash_work += size * len(same)
            if self._hash_work > _MAX_HASH_WORK:
                self._fail(f"dict keys and set members of more than {_MAX_HASH_WORK} elements "
                           "in all are hashed (tuples shared through the memo, used as keys "
                           "again and again: a crafted file?)", pos)


_HASHING_GLOBALS = ("builtins.set", "builtins.frozenset", "collections.OrderedDict")


def _keys_of(name, arg):
    """What set(arg) / frozenset(arg) / OrderedDict(arg) hash (malformed args are left to
    the constructors' own checks)."""
    if not isinstance(arg, (list, tuple, set, frozenset, dict)):
        return ()
    if name != "collections.OrderedDict" or isinstance(arg, dict):
        return arg
    return [kv[0] for kv in arg if isinstance(kv, (tuple, list)) and len(kv) == 2]


def _leaf_hash_cost(x):
    """Elements' worth of work hash() does on a non-container (an int reads every digit)."""
    return 1 + x.bit_length() // 128 if type(x) is int else 1


def _is_module_class(name):
    """torch.nn.modules.rnn.LSTM, torch.nn.parallel...DataParallel: a class of torch.nn."""
    return name.startswith("torch.nn.") and name not in _GLOBALS \
        and name.rpartition(".")[2][:1].isupper()


def _scan_globals(data: bytes) -> set:
    """All global names a pickle mentions (for error messages only; nothing is resolved)."""
    names, strings = set(), []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("GLOBAL", "INST"):
                module, _, gname = arg.partition(" ")
                names.add(f"{_RENAMED_MODULES.get(module, module)}.{gname}")
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.add(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # noqa: BLE001 - best effort on a file we already refused
        pass
    return names


# ----------------------------------------------------------------------------- files
class TorchFile:
    """An open PyTorch (``torch.save``) or safetensors file.

    ``obj`` is what was saved, with every tensor a lazy `TorchTensor`. Use as a
    context manager; tensors can be read until it closes::

        with TorchFile("model.pt") as tf:
            w = tf.obj["rnn.weight_ih_l0"].numpy()

    ``kind`` is ``"zip"``, ``"legacy"`` or ``"safetensors"``.
    """

    def __init__(self, source):
        if hasattr(source, "read") and hasattr(source, "seek"):
            self.path = str(getattr(source, "name", "<file object>"))
            self._file, self._owned = source, False
        else:
            try:
                self.path = os.fsdecode(source)
            except TypeError:
                raise TypeError(f"expected a path or a binary file object; got "
                                f"{type(source).__name__}") from None
            try:
                self._file = open(self.path, "rb")  # noqa: SIM115 - closed in close()
            except OSError as e:
                raise TorchFileError(f"{self.path}: cannot open: {e.strerror or e}") from e
            except ValueError as e:  # NUL in the "path": file contents passed as bytes?
                raise TorchFileError(f"cannot open {self.path[:40]!r}...: {e}; to read file "
                                     "contents from memory, pass io.BytesIO(data)") from e
            self._owned = True
        self._zip = None
        self._storage_bytes = 0  # storage buffers read (see "Limits" in the module docstring)
        self._tensor_bytes = 0   # arrays handed out by TorchTensor.numpy
        try:
            with guard(TorchFileError, self.path):
                self._parse()
        except BaseException:
            self.close()
            raise

    def _parse(self):
        self._file.seek(0, io.SEEK_END)
        self.size = self._file.tell()
        self._file.seek(0)
        self.kind = sniff(self._file)
        if self.kind == "zip":
            self.obj = self._load_zip()
        elif self.kind == "legacy":
            self.obj = self._load_legacy()
        elif self.kind == "safetensors":
            self.obj = self._load_safetensors()
        elif self.kind == "tar":
            raise TorchFileError(f"{self.path}: the pre-1.0 PyTorch tar format is not "
                                 "supported; load it with torch and save it again")
        else:
            raise TorchFileError(
                f"{self.path}: not a PyTorch file (expected a torch.save zip archive, "
                "a legacy torch.save file or a safetensors file); it may be truncated "
                "or corrupted")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _charge_storage(self, st):
        """Count a storage buffer about to be read against 2x the file's size + 16 MiB."""
        self._storage_bytes += st.nbytes
        factor, slack = _STORAGE_BYTES
        limit = factor * self.size + slack
        if self._storage_bytes > limit:
            raise TorchFileError(
                f"{st.where}: storage records of {self._storage_bytes} bytes in all, more than "
                f"this {self.size}-byte file may hold ({factor}x its size + {slack >> 20} MiB): "
                "deflate-compressed records inflating far beyond the archive (torch never "
                "compresses them) or records that overlap (a crafted file?)")

    def _charge_tensor(self, t, numel):
        """Count an array about to be handed out against 2x the tensor data + 64 MiB."""
        nbytes = numel * (4 if t.dtype == "bfloat16" else _ITEMSIZE[t.dtype])
        self._tensor_bytes += nbytes
        factor, slack = _TENSOR_BYTES
        limit = factor * max(self.size, self._storage_bytes) + slack
        if self._tensor_bytes <= limit:
            return
        held = t._storage.nbytes // _ITEMSIZE[t.dtype]
        what = f"a tensor of shape {t.shape}, stride {t._stride}"
        if numel > held:
            raise TorchFileError(
                f"{t._storage.where}: {what} is an expanded view ({numel} elements over a "
                f"storage of {held}); its dense copy would take {nbytes} bytes, beyond what "
                f"this {self.size}-byte file may allocate ({factor}x its tensor data + "
                f"{slack >> 20} MiB). Save t.contiguous() (or t.clone()) instead of the view.")
        raise TorchFileError(
            f"{t._storage.where}: tensors read from this {self.size}-byte file add up to "
            f"{self._tensor_bytes} bytes with {what}, beyond {factor}x its tensor data + "
            f"{slack >> 20} MiB (many tensors viewing the same storage: a crafted file?)")

    def close(self):
        if getattr(self, "_zip", None) is not None:
            self._zip.close()
            self._zip = None
        if self._owned and self._file is not None:
            self._file.close()
        self._file = None

    # -- zip
    def _load_zip(self):
        try:
            zf = zipfile.ZipFile(self._file)
        except Exception as e:  # noqa: BLE001 - BadZipFile, struct.error, OverflowError...
            raise TorchFileError(f"{self.path}: not a valid zip archive ({e}); the file may be "
                                 "truncated or corrupted") from e
        self._zip = zf
        names = zf.namelist()
        pkl = [n for n in names if n == "data.pkl" or (n.endswith("/data.pkl")
                                                       and n.count("/") == 1)]
        if len(pkl) != 1:
            raise TorchFileError(
                f"{self.path}: a zip archive but not a torch.save file: expected one "
                f"'<archive>/data.pkl', found {pkl or 'none'} (a .keras file or another "
                "zip? li.load() picks the right loader)")
        prefix = pkl[0][:-len("data.pkl")]
        if prefix + "constants.pkl" in names or any(n.startswith(prefix + "code/") for n in names):
            raise TorchFileError(
                f"{self.path} is a TorchScript archive (torch.jit.save); its weights can only be "
                "read with torch: m = torch.jit.load(path); save m.state_dict() with torch.save, "
                "or pass the state dict to li.from_torch")
        src = _ZipSource(self, zf, prefix)
        byteorder = "little"
        if src.has("byteorder"):
            byteorder = src.read_record("byteorder", 64).decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise TorchFileError(f"{self.path}: unknown byteorder record {byteorder!r}")
        storages = {}

        def persistent_load(pid):
            kind, rest = _split_pid(pid, self.path)
            if kind != "storage" or len(rest) != 4:
                raise TorchFileError(f"{self.path}: data.pkl: unexpected persistent id "
                                     f"{_describe(pid)}")
            stype, key, _location, numel = rest
            dtype, nbytes = _storage_size(stype, numel, self.path)
            key = _storage_key(key, self.path)
            name = f"data/{key}"
            if key in storages:
                st = storages[key]
                if st.nbytes != nbytes:
                    raise TorchFileError(f"{self.path}: storage {name} is referenced with "
                                         f"sizes {st.nbytes} and {nbytes} bytes")
                return st
            if not src.has(name):
                raise TorchFileError(f"{self.path}: data.pkl refers to storage '{prefix}{name}', "
                                     "which is missing from the archive (truncated or "
                                     "corrupted file?)")
            info = src.info(name)
            if info.file_size < nbytes:
                raise TorchFileError(f"{self.path}: storage '{prefix}{name}' holds "
                                     f"{info.file_size} bytes; data.pkl expects {nbytes} "
                                     f"({numel} {dtype} elements)")
            st = _Storage(src, f"{self.path}: {prefix}{name}", dtype, nbytes, byteorder, info)
            storages[key] = st
            return st

        limit = MAX_METADATA_BYTES  # deflated (torch never does): not far beyond the archive
        if src.info("data.pkl").compress_type != zipfile.ZIP_STORED:
            limit = min(limit, _STORAGE_BYTES[0] * self.size + _PKL_INFLATE_SLACK)
        data = src.read_record("data.pkl", limit)
        return _Unpickler(self, f"{prefix}data.pkl", persistent_load).load(io.BytesIO(data), data)

    # -- legacy (non-zip) torch.save
    def _load_legacy(self):
        f = _BoundedReader(self._file, self.size)
        up = _Unpickler(self, "legacy pickle header", lambda pid: self._bad_pid(pid))
        if up.load(f) != _MAGIC:
            raise TorchFileError(f"{self.path}: bad magic number; not a PyTorch file")
        version = up.load(f)
        if version != 1001:
            raise TorchFileError(f"{self.path}: unsupported legacy protocol version {version!r}")
        up.load(f)  # sys_info: endianness and C type sizes of the writer; data is little-endian
        src = _RangeSource(self)
        storages = {}

        def persistent_load(pid):
            kind, rest = _split_pid(pid, self.path)
            if kind == "module":
                name = rest[0].name if rest and isinstance(rest[0], _Global) else "a module"
                raise PickledModuleError(
                    f"{self.path} holds a whole pickled nn.Module ({name}), not a state dict; "
                    "save the weights with torch.save(model.state_dict(), path)", name)
            if kind != "storage" or len(rest) != 5:
                raise TorchFileError(f"{self.path}: unexpected persistent id {_describe(pid)}")
            stype, key, _location, numel, view = rest
            if view is not None:
                raise TorchFileError(f"{self.path}: storage views of the legacy format are not "
                                     "supported; load with torch and save the state dict again")
            dtype, nbytes = _storage_size(stype, numel, self.path)
            key = _storage_key(key, self.path)
            if key not in storages:
                storages[key] = _Storage(src, f"{self.path}: storage {key}", dtype, nbytes,
                                         "little")
            return storages[key]

        obj = _Unpickler(self, "legacy data pickle", persistent_load).load(f)
        keys = _Unpickler(self, "legacy storage-key pickle", self._bad_pid).load(f)
        if not isinstance(keys, list):
            raise TorchFileError(f"{self.path}: storage-key list is a {type(keys).__name__}")
        keys = [_storage_key(k, self.path) for k in keys]
        pos = self._file.tell()
        for key in keys:
            head = self._file.read(8)
            if len(head) != 8:
                raise TorchFileError(f"{self.path}: file ends before storage {key!r} "
                                     "(truncated file?)")
            st = storages.get(key)
            if st is None:
                raise TorchFileError(f"{self.path}: storage {key!r} is not used by the data")
            numel = struct.unpack("<q", head)[0]
            if numel * _ITEMSIZE[st.dtype] != st.nbytes:
                raise TorchFileError(f"{self.path}: storage {key!r} holds {numel} elements; "
                                     f"the data expects {st.nbytes // _ITEMSIZE[st.dtype]}")
            st.locator = pos + 8
            pos += 8 + st.nbytes
            if pos > self.size:
                raise TorchFileError(f"{self.path}: file ends inside storage {key!r} "
                                     "(truncated file?)")
            self._file.seek(pos)
        missing = set(storages) - set(keys)
        if missing:
            raise TorchFileError(f"{self.path}: storages {sorted(missing)} are used but not stored")
        return obj

    def _bad_pid(self, pid):
        raise TorchFileError(f"{self.path}: unexpected persistent id in a header pickle")

    # -- safetensors
    def _load_safetensors(self):
        try:  # the header is parsed and checked by the one safetensors parser
            entries, _, base = safetensors_io.read_entries(self._file, self.size, self.path)
        except safetensors_io.SafetensorsError as e:
            raise TorchFileError(str(e)) from None
        src, out = _RangeSource(self), OrderedDict()
        for name, (code, shape, b, end) in entries.items():
            dtype = _SAFETENSORS_DTYPES.get(code)
            if dtype is None:
                out[name] = _Unsupported(f"safetensors dtype {code}")
                continue
            st = _Storage(src, f"{self.path}: {name}", dtype, end - b, "little", base + b)
            out[name] = TorchTensor(st, 0, shape, _c_strides(shape), dtype)
        return out


def _maybe_ascii(s):
    return s.decode("ascii") if isinstance(s, bytes) else s


def _storage_key(key, path):
    """A storage key as a str (before it is hashed: a crafted key could be anything)."""
    key = _maybe_ascii(key)
    if not isinstance(key, str):
        raise TorchFileError(f"{path}: a storage key must be a string; got {_describe(key)}")
    return key


def _split_pid(pid, path):
    if not isinstance(pid, tuple) or not pid:
        raise TorchFileError(f"{path}: persistent id must be a tuple; got {_describe(pid)}")
    return _maybe_ascii(pid[0]), pid[1:]


def _storage_size(stype, numel, path):
    if not isinstance(stype, _StorageType):
        raise TorchFileError(f"{path}: storage type must be a torch storage class; got "
                             f"{_describe(stype)}")
    numel = _check_int(numel, f"{path}: storage numel")
    return stype.dtype, numel * _ITEMSIZE[stype.dtype]


def sniff(f) -> str | None:
    """What a file is, from its first bytes: "zip", "legacy", "safetensors", "tar" or None.

    `f` is a binary file object (its position is restored) or a path.
    """
    if not hasattr(f, "read"):
        with open(f, "rb") as fh:
            return sniff(fh)
    pos = f.tell()
    try:
        head = f.read(512)
        f.seek(0, io.SEEK_END)
        size = f.tell()
    finally:
        f.seek(pos)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:1] == b"\x80" and _MAGIC_BYTES in head[:32]:
        return "legacy"
    if len(head) >= 10 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] >= 2:
        return "safetensors"  # the loader checks that the header length fits the file
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return None


def load(source):
    """Read a PyTorch or safetensors file into plain Python + numpy, without torch.

    Every tensor becomes a numpy array (bfloat16 -> float32); tensors that
    numpy cannot represent (float8, quantized, sparse) are left as opaque
    placeholders. Raises `TorchFileError` (a ValueError) on unreadable files
    and `UnsafePickleError` when the pickle names anything but tensors and
    containers.
    """
    with TorchFile(source) as tf, guard(TorchFileError, tf.path):
        return _materialize(tf.obj, {})


def _materialize(obj, seen):
    # `seen` keeps shared objects shared: a tensor saved under two names is one array, and
    # a tuple DAG shared through the memo is walked once per node, not once per path
    if id(obj) in seen:
        return seen[id(obj)]
    if isinstance(obj, TorchTensor):
        out = _Unsupported(f"{obj.dtype} tensor of shape {obj.shape}") \
            if obj.dtype not in _NP_DTYPES else obj.numpy()
        seen[id(obj)] = out
        return out
    if isinstance(obj, dict):
        out = type(obj)() if type(obj) in (dict, OrderedDict) else {}
        seen[id(obj)] = out
        for k, v in obj.items():
            out[k] = _materialize(v, seen)
        return out
    if isinstance(obj, list):
        out = []
        seen[id(obj)] = out
        out.extend(_materialize(v, seen) for v in obj)
        return out
    if isinstance(obj, tuple):
        out = seen[id(obj)] = tuple(_materialize(v, seen) for v in obj)
        return out
    return obj
