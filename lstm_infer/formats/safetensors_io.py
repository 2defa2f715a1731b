"""Minimal safetensors reader/writer on numpy (memory-mapped reads).

Why not the `safetensors` package: the runtime dependencies are numpy and scipy
only, and the format is small and fully specified (8-byte little-endian header
length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__":
{str: str}}, then the raw little-endian bytes). The tests check byte-level
interoperability with the official package in both directions.
"""
from __future__ import annotations

import json
import os
import struct

import numpy as np

from .errors import FormatError

# safetensors dtype names <-> numpy. BF16 has no numpy dtype: read as uint16 bits.
_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
           "I16": "<i2", "I8": "i1", "U8": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8",
           "BOOL": "?"}
_NAMES = {np.dtype("<f8"): "F64", np.dtype("<f4"): "F32", np.dtype("<f2"): "F16",
          np.dtype("<i8"): "I64", np.dtype("<i4"): "I32", np.dtype("<i2"): "I16",
          np.dtype("i1"): "I8", np.dtype("u1"): "U8", np.dtype("<u2"): "U16",
          np.dtype("<u4"): "U32", np.dtype("<u8"): "U64", np.dtype("?"): "BOOL"}
_MAX_HEADER = 100 * 1024 * 1024


class SafetensorsError(FormatError):
    """A file that is not valid safetensors (truncated, corrupted, inconsistent)."""


# bytes per element of every dtype the format defines (also those we do not compute with)
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
             "U8": 1, "U16": 2, "U32": 4, "U64": 8, "BOOL": 1, "C64": 8, "F8_E4M3": 1,
             "F8_E5M2": 1}


def read_entries(f, size: int, where: str):
    """Parse and check the header of an open safetensors file (f at any position).

    Returns (entries, metadata, data_start) with entries {name: (dtype code, shape,
    begin, end)}, offsets relative to the data section. Every entry's byte range is
    checked against its dtype and shape and against the file size, so a truncated or
    corrupted file fails here, naming the tensor. The one parser for the native
    reader and the torch-named reader."""
    f.seek(0)
    head = f.read(8)
    if len(head) < 8:
        raise SafetensorsError(f"{where}: too short for safetensors ({size} bytes)")
    (n,) = struct.unpack("<Q", head)
    if n > min(size - 8, _MAX_HEADER):
        raise SafetensorsError(f"{where}: safetensors header of {n} bytes does not fit a "
                               f"{size}-byte file (truncated or corrupted)")
    try:
        header = json.loads(f.read(n).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise SafetensorsError(f"{where}: corrupted safetensors header: {e}") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{where}: safetensors header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict):
        raise SafetensorsError(f"{where}: __metadata__ must be an object")
    data_size = size - 8 - n
    entries = {}
    for name, info in header.items():
        try:
            code = info["dtype"]
            shape = tuple(int(v) for v in info["shape"])
            a, b = (int(v) for v in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise SafetensorsError(f"{where}: tensor {name!r} has a bad header entry "
                                   f"{info!r:.200}") from None
        if min(shape, default=0) < 0 or a < 0:
            raise SafetensorsError(f"{where}: tensor {name!r} has a negative size or offset")
        nbytes = int(np.prod(shape, dtype=object)) * _ITEMSIZE.get(code, 0)
        if (code in _ITEMSIZE and b - a != nbytes) or b < a or b > data_size:
            raise SafetensorsError(
                f"{where}: tensor {name!r} ({code}, shape {list(shape)}) needs {nbytes} bytes "
                f"at [{a}, {b}) of a {data_size}-byte data section (truncated or corrupted)")
        entries[name] = (code, shape, a, b)
    return entries, meta, 8 + n


def read_metadata(path) -> dict:
    """The __metadata__ of a safetensors file (its header fully checked)."""
    with open(path, "rb") as f:
        return read_entries(f, os.path.getsize(path), str(path))[1]


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


def load(path, mmap: bool = True):
    """{name: array} and the metadata dict. Arrays are read-only views of a memory map
    (no copy) when `mmap`; BF16 tensors come as uint16 bit patterns
    (lstm_infer.quantize.bf16_bits_to_f32 converts them)."""
    with open(path, "rb") as f:
        entries, meta, start = read_entries(f, os.path.getsize(path), str(path))
    data = np.memmap(path, dtype=np.uint8, mode="r") if mmap else np.fromfile(path, np.uint8)
    out = {}
    for name, (code, shape, a, b) in entries.items():
        if code not in _DTYPES:
            raise SafetensorsError(f"{path}: tensor {name!r} has dtype {code}, which numpy "
                                   f"cannot hold")
        arr = data[start + a:start + b].view(np.dtype(_DTYPES[code])).reshape(shape)
        if not mmap:
            arr.setflags(write=False)
        out[name] = arr
    return out, meta


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
