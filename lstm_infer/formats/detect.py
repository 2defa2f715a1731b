"""`li.load`: detect a file's format from its content (not its suffix) and dispatch.

Each format module has one sniffer (``sniff(path) -> format name or None``: cheap, and
never raising on bad content); `detect_format` only orders them and, when none claims
the file, says why.
"""
from __future__ import annotations

import os
import zipfile

import numpy as np

from .._build import CanonicalModel, build
from . import keras, native, onnx, pytorch, tflite
from . import safetensors_io as st  # noqa: F401 - the header reader native.sniff uses
from .errors import ZIP_ERRORS, FormatError, check_file, guard

FORMATS = ("native", "pytorch", "pytorch-safetensors", "keras", "keras-h5", "onnx", "tflite")
# native before pytorch (which takes every other safetensors file); keras before pytorch
# (a zip both could claim has always gone to Keras)
SNIFFERS = (native.sniff, keras.sniff, pytorch.sniff, onnx.sniff, tflite.sniff)


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


def load(path, *, prefix=None, layer=None, node=None, batch_first=None, isolated=False,
         timeout=None, max_memory=None):
    """Load an LSTM from any supported file (see `detect_format`).

    prefix / layer / node pick one LSTM in a PyTorch state dict / Keras model /
    ONNX graph, as in from_torch / from_keras / from_onnx.

    batch_first : bool, optional
        The layout of the returned model's ``x`` and ``out``: (B, T, ...) if True, (T,
        B, ...) if False. Default None: what the file records -- the ONNX ``layout``
        attribute, Keras (always batch-first, or tf.keras ``time_major``), the native
        format's config -- and False for PyTorch files, which cannot record it (a state
        dict holds no ``batch_first``: pass ``batch_first=True`` for a module built
        with it; ``lstm-infer inspect`` says when a file does not record its layout).
        An explicit value wins over what the file records: the weights do not depend
        on the layout.

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
    if batch_first is not None and not isinstance(batch_first, (bool, np.bool_)):
        raise TypeError(f"batch_first must be True, False or None; got {batch_first!r}")
    if isolated or timeout is not None or max_memory is not None:
        from .isolate import load_isolated
        return with_layout(load_isolated(path, timeout=timeout, max_memory=max_memory,
                                         prefix=prefix, layer=layer, node=node), batch_first)
    fmt = detect_format(path)
    if fmt == "native":
        return with_layout(native.load(path), batch_first)
    if fmt in ("pytorch", "pytorch-safetensors"):
        return pytorch.load_torch_file(path, prefix=prefix, batch_first=bool(batch_first))
    if fmt in ("keras", "keras-h5"):
        return with_layout(keras.from_keras(path, layer=layer), batch_first)
    if fmt == "tflite":
        return with_layout(tflite.from_tflite(path, layer=layer), batch_first)
    return with_layout(onnx.from_onnx(path, node=node), batch_first)


# Formats whose files record the model's layout (batch_first); torch state dicts do not.
RECORDS_LAYOUT = {"native": True, "pytorch": False, "pytorch-safetensors": False,
                  "keras": True, "keras-h5": True, "onnx": True, "tflite": True}


def with_layout(model, batch_first):
    """`model` with ``batch_first`` set (the same model when it already has it, or
    when `batch_first` is None); the weights are shared in meaning, packed anew."""
    if batch_first is None or bool(batch_first) == model.config.batch_first:
        return model
    return build(CanonicalModel(model.weights, dict(model.options,
                                                    batch_first=bool(batch_first))))
