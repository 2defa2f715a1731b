"""Minimal safetensors reader/writer on numpy (memory-mapped reads).

Why not the `safetensors` package: the runtime dependencies are numpy and scipy
only, and the format is small and fully specified (8-byte little-endian header
length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__":
{str: str}}, then the raw little-endian bytes). The tests check byte-level
interoperability with the official package in both directions.

Reading checks a header as strictly as the official package does, before any tensor
is touched: integer shapes and offsets (not floats or bools), each tensor's byte range
matching its dtype and shape, the ranges tiling the data section (no overlap, gap or
trailing bytes), a bounded header size and nesting; every failure is a SafetensorsError
naming the tensor and the problem.
"""
from __future__ import annotations

import json
import math
import os
import struct

import numpy as np

from .errors import FormatError, guard

# safetensors dtype names <-> numpy. BF16 has no numpy dtype: read as uint16 bits.
_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
           "I16": "<i2", "I8": "i1", "U8": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8",
           "BOOL": "?"}
_NAMES = {np.dtype("<f8"): "F64", np.dtype("<f4"): "F32", np.dtype("<f2"): "F16",
          np.dtype("<i8"): "I64", np.dtype("<i4"): "I32", np.dtype("<i2"): "I16",
          np.dtype("i1"): "I8", np.dtype("u1"): "U8", np.dtype("<u2"): "U16",
          np.dtype("<u4"): "U32", np.dtype("<u8"): "U64", np.dtype("?"): "BOOL"}
# Header bytes: up to _MAX_HEADER (the official package's limit) a file is recognised as
# safetensors (so a too-large header gets a clear error rather than "unknown format");
# up to _MAX_HEADER_READ it is parsed. Parsed JSON costs ~10 bytes of Python objects per
# header byte (measured: 8 MiB of minimal entries peak at 82 MB), so this keeps a load's
# memory beyond its tensors below ~50 MB; real headers are far smaller (~60-100 bytes per
# tensor: 4 MiB is 40k-70k tensors; an LSTM file holds a few KB).
_MAX_HEADER = 100 * 1024 * 1024
_MAX_HEADER_READ = 4 * 1024 * 1024
_MAX_NDIM = 32  # numpy 1.x's limit; a weight has at most 3


class SafetensorsError(FormatError):
    """A file that is not valid safetensors (truncated, corrupted, inconsistent)."""


# bytes per element of every dtype the format defines (also those we do not compute with)
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
             "U8": 1, "U16": 2, "U32": 4, "U64": 8, "BOOL": 1, "C64": 8, "F8_E4M3": 1,
             "F8_E5M2": 1}


_CODES = {c: c for c in _ITEMSIZE}  # one string object per dtype code, not one per entry


def _ints(v) -> bool:
    """A JSON list of integers: not bools, not floats (1.9, 1e400), as the official parser
    requires (json.loads makes JSON integers exactly int)."""
    return type(v) is list and all(type(u) is int for u in v)


def _parse_header(f, size: int, where: str):
    """(tensor entries as parsed JSON, __metadata__, header length): the JSON checked to be
    an object and __metadata__ an object (the types of its values are the reader's
    business: the native loader checks the fields it uses), entries not yet checked."""
    f.seek(0)
    head = f.read(8)
    if len(head) < 8:
        raise SafetensorsError(f"{where}: too short for safetensors ({size} bytes)")
    (n,) = struct.unpack("<Q", head)
    if n < 2:
        raise SafetensorsError(f"{where}: safetensors header length {n} is too small for a "
                               f"JSON object (corrupted, or not a safetensors file)")
    if n > size - 8:
        raise SafetensorsError(f"{where}: safetensors header of {n} bytes does not fit a "
                               f"{size}-byte file (truncated or corrupted)")
    if n > _MAX_HEADER_READ:
        raise SafetensorsError(f"{where}: safetensors header of {n} bytes; at most "
                               f"{_MAX_HEADER_READ} are accepted (a model's header holds "
                               f"~100 bytes per tensor; corrupted or hostile file?)")
    raw = f.read(n)
    if len(raw) != n:
        raise SafetensorsError(f"{where}: safetensors header truncated ({len(raw)} of {n} "
                               f"bytes)")
    try:
        header = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise SafetensorsError(f"{where}: corrupted safetensors header: JSON nested too "
                               f"deeply (a header is at most 3 levels deep)") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise SafetensorsError(f"{where}: corrupted safetensors header: {e}") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{where}: safetensors header is not a JSON object "
                               f"(got a JSON {type(header).__name__})")
    meta = header.pop("__metadata__", None)
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise SafetensorsError(f"{where}: __metadata__ must be a JSON object; got a JSON "
                               f"{type(meta).__name__}")
    return header, meta, n


def _check_entry(name, info, data_size, where):
    """(dtype code, shape, begin, end) of one header entry, every field checked."""
    bad = f"{where}: tensor {name!r:.100}"
    if not isinstance(info, dict):
        raise SafetensorsError(f"{bad}: header entry must be an object with dtype, shape and "
                               f"data_offsets; got {info!r:.100}")
    missing = [k for k in ("dtype", "shape", "data_offsets") if k not in info]
    if missing:
        raise SafetensorsError(f"{bad}: header entry has no {', '.join(missing)}")
    code, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(code, str):
        raise SafetensorsError(f"{bad}: dtype must be a string such as \"F32\"; got "
                               f"{code!r:.100}")
    if not _ints(shape):
        raise SafetensorsError(f"{bad}: shape must be a list of integers; got {shape!r:.100}")
    n = math.prod(shape)
    if len(shape) > _MAX_NDIM or (shape and min(shape) < 0) or n >= 2 ** 62 or \
            (n == 0 and math.prod(v for v in shape if v) >= 2 ** 62):  # numpy's limit
        raise SafetensorsError(f"{bad}: shape {shape!r:.100} has a negative dimension, more "
                               f"than {_MAX_NDIM} dimensions or more than 2^62 elements")
    if not _ints(offsets) or len(offsets) != 2:
        raise SafetensorsError(f"{bad}: data_offsets must be two integers [begin, end]; got "
                               f"{offsets!r:.100}")
    a, b = offsets
    nbytes = n * _ITEMSIZE.get(code, 0)
    if a < 0 or b < a or b > data_size or (code in _ITEMSIZE and b - a != nbytes):
        raise SafetensorsError(
            f"{bad} ({code:.20}, shape {shape}) needs {nbytes} bytes at [{a}, {b}) of a "
            f"{data_size}-byte data section (truncated or corrupted)")
    return _CODES.get(code, code), tuple(shape), a, b


def _read_entries(f, size: int, where: str, tiling: bool):
    header, meta, n = _parse_header(f, size, where)
    data_size = size - 8 - n
    entries = {}
    for name in list(header):  # each parsed JSON entry is freed as its compact form is made
        entries[name] = _check_entry(name, header.pop(name), data_size, where)
    if tiling:
        check_tiling(entries, data_size, where)
    return entries, meta, 8 + n


def check_tiling(entries: dict, data_size: int, where: str) -> None:
    """As the official package does: the tensors tile the data section exactly, in offset
    order, with no overlap, gap or trailing bytes (so no two readers can disagree about a
    file, and no bytes hide in it)."""
    end, prev = 0, None
    for name, (_, _, a, b) in sorted(entries.items(), key=lambda kv: kv[1][2:]):
        if a != end:
            what = (f"overlaps tensor {prev!r:.100}" if a < end else
                    f"leaves {a - end} unused bytes after tensor {prev!r:.100}" if prev else
                    f"leaves {a} unused bytes at the start of the data section")
            raise SafetensorsError(f"{where}: tensor {name!r:.100} at [{a}, {b}) {what} "
                                   f"(tensors must tile the data section; corrupted or "
                                   f"crafted file?)")
        end, prev = b, name
    if end != data_size:
        raise SafetensorsError(f"{where}: the tensors cover {end} of the {data_size} bytes of "
                               f"the data section; {data_size - end} trailing bytes (corrupted "
                               f"or crafted file?)")


def read_entries(f, size: int, where: str, tiling: bool = True):
    """Parse and check the header of an open safetensors file (f at any position).

    Returns (entries, metadata, data_start) with entries {name: (dtype code, shape,
    begin, end)}, offsets relative to the data section. Every entry's fields are
    type-checked (integers, not floats or bools) and its byte range checked against
    its dtype and shape and against the file size, and (unless `tiling` is False: the
    caller then calls `check_tiling` after its own checks) the ranges must tile the data
    section, as the official package requires; so a truncated, corrupted or crafted file
    fails here, naming the tensor. Raises only SafetensorsError. The one parser for the
    native reader and the torch-named reader."""
    with guard(SafetensorsError, where):
        return _read_entries(f, size, where, tiling)


def read_metadata(path) -> dict:
    """The __metadata__ of a safetensors file (the header parsed, its tensor entries not
    checked: `read_entries` / `load` do that)."""
    with guard(SafetensorsError, str(path)), open(path, "rb") as f:
        return _parse_header(f, os.path.getsize(path), str(path))[1]


def is_safetensors(path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(9)
        if len(head) < 9:
            return False
        (n,) = struct.unpack("<Q", head[:8])
        return 2 <= n <= min(os.path.getsize(path) - 8, _MAX_HEADER) and head[8:9] == b"{"
    except OSError:
        return False


def read_header(path, tiling: bool = True):
    """(entries, metadata, data_start) of a safetensors file (see `read_entries`)."""
    with open(path, "rb") as f:
        return read_entries(f, os.path.getsize(path), str(path), tiling)


def arrays(path, entries: dict, start: int, mmap: bool = True) -> dict:
    """{name: array} for `entries` (from `read_header`; a subset of them is fine):
    read-only views of one memory map when `mmap`, else of one read of the file."""
    with guard(SafetensorsError, str(path)):
        for name, (code, _, _, _) in entries.items():
            if code not in _DTYPES:
                raise SafetensorsError(f"{path}: tensor {name!r:.100} has dtype {code:.20}, "
                                       f"which numpy cannot hold")
        if not entries:
            return {}
        data = np.memmap(path, dtype=np.uint8, mode="r") if mmap else np.fromfile(path, np.uint8)
        data.setflags(write=False)
        return {name: data[start + a:start + b].view(np.dtype(_DTYPES[code])).reshape(shape)
                for name, (code, shape, a, b) in entries.items()}


def load(path, mmap: bool = True):
    """{name: array} and the metadata dict. Arrays are read-only views of a memory map
    (no copy) when `mmap`; BF16 tensors come as uint16 bit patterns
    (lstm_infer.quantize.bf16_bits_to_f32 converts them). Raises SafetensorsError for
    any file that is not valid safetensors."""
    entries, meta, start = read_header(path)
    return arrays(path, entries, start, mmap), meta


def save(path, tensors: dict, metadata: dict = None, dtypes: dict = None) -> None:
    """Write {name: array} (+ string metadata) as safetensors, tensors in name order.
    `dtypes` overrides the stored dtype name, e.g. {"w": "BF16"} for uint16 bf16 bits."""
    header, offset, arrays = {}, 0, []
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)  # the format is little-endian
        key = (dtypes or {}).get(name) or _NAMES.get(a.dtype)
        if key is None:
            raise TypeError(f"tensor {name!r}: dtype {a.dtype} has no safetensors equivalent")
        header[name] = {"dtype": key, "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        arrays.append(a)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # align the data section to 8 bytes
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for a in arrays:
            f.write(a.tobytes())
    os.replace(tmp, path)  # never leave a half-written model behind
