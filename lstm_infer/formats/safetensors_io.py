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

# safetensors dtype names <-> numpy. BF16 has no numpy dtype: read as uint16 bits.
_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
           "I16": "<i2", "I8": "i1", "U8": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8",
           "BOOL": "?"}
_NAMES = {np.dtype("<f8"): "F64", np.dtype("<f4"): "F32", np.dtype("<f2"): "F16",
          np.dtype("<i8"): "I64", np.dtype("<i4"): "I32", np.dtype("<i2"): "I16",
          np.dtype("i1"): "I8", np.dtype("u1"): "U8", np.dtype("<u2"): "U16",
          np.dtype("<u4"): "U32", np.dtype("<u8"): "U64", np.dtype("?"): "BOOL"}
_MAX_HEADER = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    """A file that is not valid safetensors (truncated, corrupted, inconsistent)."""


def read_header(path):
    """(header dict, data start offset, file size); raises SafetensorsError."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise SafetensorsError(f"{path}: too short for safetensors ({size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, _MAX_HEADER):
            raise SafetensorsError(f"{path}: header length {n} exceeds the file size {size} "
                                   f"(truncated or not safetensors)")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"{path}: header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header must be a JSON object")
    return header, 8 + n, size


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
    (no copy) when `mmap`; BF16 tensors come as uint16 bit patterns (see bf16_to_f32)."""
    header, start, size = read_header(path)
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict):
        raise SafetensorsError(f"{path}: __metadata__ must be an object")
    data = np.memmap(path, dtype=np.uint8, mode="r") if mmap else np.fromfile(path, np.uint8)
    out = {}
    for name, info in header.items():
        try:
            dt = np.dtype(_DTYPES[info["dtype"]])
            shape = tuple(int(s) for s in info["shape"])
            a, b = (int(v) for v in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise SafetensorsError(f"{path}: tensor {name!r} has a bad header entry {info!r}") \
                from None
        nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        if b - a != nbytes or a < 0 or start + b > size:
            raise SafetensorsError(
                f"{path}: tensor {name!r} {info['dtype']}{list(shape)} needs {nbytes} bytes at "
                f"[{a}, {b}) of a {size - start}-byte data section (truncated or corrupted)")
        arr = data[start + a:start + b].view(dt).reshape(shape)
        if not mmap:
            arr.setflags(write=False)
        out[name] = arr
    return out, meta


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32, exactly."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


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
