"""`li.load`: detect a file's format from its content (not its suffix) and dispatch.

Each format module has one sniffer (``sniff(path) -> format name or None``: cheap, and
never raising on bad content); `detect_format` only orders them and, when none claims
the file, says why.
"""
from __future__ import annotations

import os
import zipfile

from . import keras, native, onnx, pytorch
from . import safetensors_io as st  # noqa: F401 - the header reader native.sniff uses
from .errors import ZIP_ERRORS, FormatError, check_file, guard

FORMATS = ("native", "pytorch", "pytorch-safetensors", "keras", "keras-h5", "onnx")
# native before pytorch (which takes every other safetensors file); keras before pytorch
# (a zip both could claim has always gone to Keras)
SNIFFERS = (native.sniff, keras.sniff, pytorch.sniff, onnx.sniff)


class UnknownFormatError(FormatError):
    """The file is none of the formats lstm_infer reads."""


def detect_format(path) -> str:
    """One of FORMATS, from the file's bytes; raises UnknownFormatError / FileNotFoundError."""
    path = check_file(path, UnknownFormatError)
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise UnknownFormatError(f"{path} is empty")
    with guard(UnknownFormatError, path):  # the net under the sniffers' own checks
        for sniff in SNIFFERS:
            fmt = sniff(path)
            if fmt is not None:
                return fmt
        raise _unknown(path, head)


def _unknown(path: str, head: bytes) -> UnknownFormatError:
    """Why no loader claims the file."""
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except ZIP_ERRORS as e:
            return UnknownFormatError(f"{path}: a zip archive that cannot be read "
                                      f"({type(e).__name__}: {e}); truncated, corrupted, or "
                                      f"using a zip feature Python's zipfile does not "
                                      f"support?")
        return UnknownFormatError(f"{path}: a zip archive that is neither a torch.save file "
                                  f"(*/data.pkl) nor a Keras .keras file (config.json + "
                                  f"model.weights.h5); it holds {names[:5]}")
    return UnknownFormatError(
        f"{path}: unknown format; expected a native lstm_infer / PyTorch safetensors file, a "
        f"torch.save zip (.pt/.pth/.bin), a Keras .keras or .h5 file, or an ONNX model")


def load(path, *, prefix=None, layer=None, node=None, isolated=False, timeout=None,
         max_memory=None):
    """Load an LSTM from any supported file (see `detect_format`).

    prefix / layer / node pick one LSTM in a PyTorch state dict / Keras model /
    ONNX graph, as in from_torch / from_keras / from_onnx.

    Files you do not trust
    ----------------------
    Every loader refuses hostile content with its own FormatError (no code execution,
    no reads outside the file, sizes checked before allocating), but the default
    in-process load cannot bound what third-party parsers do: a corrupted ``.h5`` /
    ``.keras`` can send libhdf5 into an endless loop, which hangs the calling thread
    for ever (and no Python code can interrupt it). The in-process path is therefore
    **unsafe for untrusted .h5 / .keras files**. For those, pass

    isolated : bool
        Parse in a fresh child process (``sys.executable``, not a fork: safe in a
        multi-threaded service), which hands the model back in the native format; see
        lstm_infer.formats.isolate. Costs about half a second.
    timeout : float, seconds (implies isolated; default 60 when isolated)
        Wall-clock bound, interpreter start included; the child is killed after it and
        ``LoadTimeoutError`` (a FormatError) is raised.
    max_memory : int, bytes (implies isolated; default 2 GiB + 4 x the file's size)
        The child's address-space limit (RLIMIT_AS, interpreter included: ~0.25 GB);
        a load that needs more fails with ``IsolatedLoadError`` (a FormatError).

    A loader's error in the child is raised again in the caller, same class and message.
    """
    if isolated or timeout is not None or max_memory is not None:
        from .isolate import load_isolated
        return load_isolated(path, timeout=timeout, max_memory=max_memory, prefix=prefix,
                             layer=layer, node=node)
    fmt = detect_format(path)
    if fmt == "native":
        return native.load(path)
    if fmt in ("pytorch", "pytorch-safetensors"):
        return pytorch.load_torch_file(path, prefix=prefix)
    if fmt in ("keras", "keras-h5"):
        return keras.from_keras(path, layer=layer)
    return onnx.from_onnx(path, node=node)
