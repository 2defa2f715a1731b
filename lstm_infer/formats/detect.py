"""`li.load`: detect a file's format from its content (not its suffix) and dispatch."""
from __future__ import annotations

import os
import zipfile

from . import native
from . import safetensors_io as st
from .errors import FormatError, guard

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
FORMATS = ("native", "pytorch", "pytorch-safetensors", "keras", "keras-h5", "onnx")


class UnknownFormatError(FormatError):
    """The file is none of the formats lstm_infer reads."""


def detect_format(path) -> str:
    """One of FORMATS, from the file's bytes; raises UnknownFormatError / FileNotFoundError."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    if os.path.isdir(path):
        raise UnknownFormatError(f"{path} is a directory; expected a model file")
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise UnknownFormatError(f"{path} is empty")
    with guard(UnknownFormatError, path):  # the net under the sniffers' own checks
        return _sniff(path, head)


# what zipfile raises for an archive it cannot read (NotImplementedError: a "version
# needed to extract" or compression method it does not support; RuntimeError: encryption)
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError,
               EOFError, OSError, ValueError, OverflowError)


def _sniff(path: str, head: bytes) -> str:
    if st.is_safetensors(path):
        return "native" if native.is_native(path) else "pytorch-safetensors"
    if head.startswith(_HDF5_MAGIC):
        return "keras-h5"
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except _ZIP_ERRORS as e:
            raise UnknownFormatError(f"{path}: a zip archive that cannot be read "
                                     f"({type(e).__name__}: {e}); truncated, corrupted, or "
                                     f"using a zip feature Python's zipfile does not "
                                     f"support?") from None
        if "config.json" in names and any(n.endswith(".weights.h5") for n in names):
            return "keras"
        if any(n.endswith("data.pkl") for n in names):
            return "pytorch"
        raise UnknownFormatError(f"{path}: a zip archive that is neither a torch.save file "
                                 f"(*/data.pkl) nor a Keras .keras file (config.json + "
                                 f"model.weights.h5); it holds {names[:5]}")
    from .pytorch import is_torch_file
    if is_torch_file(path):  # legacy (pre-zip) torch.save files: a bare pickle stream
        return "pytorch"
    from . import onnx as onnx_format
    if onnx_format.is_onnx_file(path):
        return "onnx"
    raise UnknownFormatError(
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
        from .pytorch import load_torch_file
        return load_torch_file(path, prefix=prefix)
    if fmt in ("keras", "keras-h5"):
        from .keras import from_keras
        return from_keras(path, layer=layer)
    from .onnx import from_onnx
    return from_onnx(path, node=node)
