"""The loaders' error contract, in one place.

Every loader raises only its own error class, a subclass of `FormatError`
(itself a `ValueError`), whose message names the file and the problem; the
one exceptions that pass through are about the path, not the content
(`FileNotFoundError`, `PermissionError`, `IsADirectoryError`) and the `ImportError` of a missing
optional dependency (h5py for Keras files, onnx for ONNX).

Checks come first: each loader validates declared sizes, types and offsets
before it allocates or reads (see `read_member`, and the per-format limits).
`guard` is the net under those checks, not a replacement for them: a parser
of hostile bytes can still meet a case nobody wrote a check for (a KeyError
in a JSON walk, a RecursionError in a nested structure, an OverflowError from
a number no file should hold), and the caller must still get a `FormatError`
naming the file rather than an exception from deep inside a library.
"""
from __future__ import annotations

import contextlib
import os
import zipfile
import zlib

# Bytes of a metadata member (a pickle stream, a config.json) that any real model
# file stays far below: torch's data.pkl is a few KB per tensor, Keras' config.json
# a few KB per layer. Declared sizes above this are refused before anything is read
# (a 2 MB deflated member can inflate to GBs).
MAX_METADATA_BYTES = 64 * 1024 * 1024

# Exceptions that pass through `guard` unchanged: problems with the path, which the
# caller handles as for any other file, and a missing optional dependency (h5py, onnx),
# whose ImportError says what to install -- neither is the file's fault.
_PATH_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
                ImportError)


# What zipfile raises for an archive it cannot read: NotImplementedError for a "version
# needed to extract" or compression method it does not support, RuntimeError for an
# encrypted member, zlib.error for a corrupted deflate stream.
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError,
              EOFError, OSError, ValueError, OverflowError, zlib.error)


class FormatError(ValueError):
    """A model file that cannot be loaded: corrupted, truncated, hostile or unsupported.

    Base class of every loader's own error (TorchFileError, KerasFileError,
    ONNXFormatError, NativeFormatError, SafetensorsError, UnknownFormatError...)."""


@contextlib.contextmanager
def guard(error_cls, where: str):
    """Turn any unexpected exception raised inside the block into `error_cls`.

    `where` (usually the path) starts the message; the original exception is
    named and chained, so a bug report still shows where it came from."""
    try:
        yield
    except (FormatError,) + _PATH_ERRORS:
        raise
    except Exception as e:  # noqa: BLE001 - the net: see the module docstring
        if isinstance(e, MemoryError):
            msg = "the file declares more data than can be allocated"
        elif isinstance(e, RecursionError):
            msg = "a structure nested too deeply"
        else:
            msg = f"{type(e).__name__}: {e}"
        raise error_cls(f"{where}: cannot be loaded: {msg} (corrupted or not a model file?)"
                        ) from e


def read_member(z: zipfile.ZipFile, name: str, error_cls, where: str,
                limit: int = MAX_METADATA_BYTES) -> bytes:
    """Read one zip member after checking its declared size against `limit`.

    zipfile stops decompressing at the declared `file_size` (and checks the CRC),
    so the check on the declaration bounds the memory of a zip bomb."""
    try:
        info = z.getinfo(name)
    except KeyError:
        raise error_cls(f"{where}: the archive has no member {name!r}") from None
    if info.file_size > limit:
        raise error_cls(f"{where}: archive member {name!r} declares {info.file_size} bytes; "
                        f"at most {limit} are accepted for it (a zip bomb or a corrupted "
                        f"archive?)")
    with guard(error_cls, f"{where}: archive member {name!r}"):
        return z.read(info)


def check_file(path, error_cls=None, expected: str = "a model file") -> str:
    """`path` as a string, after the checks every loader makes of a path before opening
    it: FileNotFoundError if nothing is there; with `error_cls`, that error if it is a
    directory (without, opening it raises IsADirectoryError, which passes `guard`)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    if error_cls is not None and os.path.isdir(path):
        raise error_cls(f"{path} is a directory; expected {expected}")
    return path
