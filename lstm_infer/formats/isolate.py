"""Loading a model file in a child process, under a wall-clock timeout and a memory limit.

``li.load(path, isolated=True)`` (or ``timeout=`` / ``max_memory=``) calls
`load_isolated`.

Design
------
Why a process. The loaders check what they read, but they run third-party parsers
(libhdf5 through h5py, protobuf) whose bugs no check can reach: one changed byte in
an ``.h5`` file (a global-heap object's size) sends libhdf5 into an endless loop
inside an attribute read. That loop is C code under h5py's lock: no Python code can
interrupt it and a thread cannot be killed, so the only bound a service can rely on
is a process it can kill.

How.
1. The parent makes a private temporary directory (``mkdtemp``, mode 0700) and writes
   the request into it as JSON: the path, the loader options (prefix / layer / node),
   where to write the model and the result.
2. It starts ``sys.executable -c <bootstrap>`` with ``subprocess.Popen``: fork and exec
   happen in C with no Python code in between (no ``preexec_fn``), so this is safe in
   a multi-threaded caller. The child gets its own session (so it and anything it
   starts can be killed as a group), no stdin or stdout, stderr to a file in the
   temporary directory, and one OpenMP / BLAS thread.
3. The child drops the current directory from ``sys.path`` (never import from where
   the caller happens to be), imports lstm_infer from the parent's tree, sets
   ``RLIMIT_AS`` = max_memory and ``RLIMIT_CPU`` (a backstop should the parent die
   before killing it), loads the file with the ordinary in-process loader, saves the
   model in the native format (``model.save``: safetensors), and writes
   ``{"ok": true}`` or ``{"ok": false, "module", "class", "message"}`` as the result.
   An error that is, or was caused by, a failed allocation (MemoryError, ENOMEM:
   the limit) exits with status 3 instead, so the parent can name max_memory.
4. The parent waits at most ``timeout`` seconds. On time-out it kills the child's
   process group (SIGKILL) and raises `LoadTimeoutError`. A child that dies (a
   signal, out of memory, any non-zero status) gives `IsolatedLoadError` naming the
   status and the last line of the child's stderr. A loader error comes back as the
   same class (looked up by name among lstm_infer's own FormatError subclasses, or a
   few builtins: FileNotFoundError, TypeError...) with the same message; anything
   else becomes `IsolatedLoadError` naming the class.
5. On success the parent reads the native file with its own bounded reader
   (``native.load``: every header entry checked against the file size, the data
   memory-mapped), so nothing from the child is unpickled or executed: a child
   subverted through a parser bug can at most hand back wrong weights. The temporary
   directory is removed in every case.

Costs: an interpreter start plus imports (~0.5 s), and one write and read of the
model in the native format (bit-exact: the isolated load equals the in-process one).

Limits: ``timeout`` defaults to 60 s and includes the child's start.
``max_memory`` defaults to 2 GiB + 4 x the file's size: the loaders aim at 2x the
file's tensor bytes + 64 MB, saving copies one tensor at a time, and the interpreter
with numpy takes ~0.25 GB of address space. RLIMIT_AS limits address space (what
is mapped), not resident memory. POSIX only for the limits (``resource``); a
sanitizer build (ASan reserves terabytes of address space) cannot run under
RLIMIT_AS.
"""
from __future__ import annotations

import errno
import importlib
import json
import math
import numbers
import os
import shutil
import signal
import subprocess
import sys
import tempfile

from .errors import FormatError

__all__ = ["load_isolated", "LoadTimeoutError", "IsolatedLoadError", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = 60.0
_DEFAULT_MEMORY_BASE = 2 << 30
_DEFAULT_MEMORY_PER_FILE_BYTE = 4
_EXIT_NO_MEMORY = 3
_MAX_RESULT_BYTES = 1 << 20  # the result JSON: one error message
_MAX_MESSAGE = 64 * 1024
_STDERR_TAIL = 4096

# Where the child's error classes may come from: only these modules are imported to
# find a class by name, and only FormatError subclasses are taken from them.
_ERROR_MODULES = frozenset(f"lstm_infer.formats.{m}" for m in (
    "errors", "detect", "native", "safetensors_io", "torch_pickle", "pytorch", "keras",
    "onnx", "onnx_quantized", "tflite", "isolate"))
_BUILTIN_ERRORS = {c.__name__: c for c in (
    FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, TypeError,
    ValueError, ImportError, ModuleNotFoundError)}

# The child's entry point: argv = [package root, request file].
_BOOTSTRAP = (
    "import sys\n"
    "if sys.path[:1] == ['']:\n"
    "    del sys.path[0]\n"
    "sys.path.insert(0, sys.argv[1])\n"
    "from lstm_infer.formats.isolate import _child_main\n"
    "_child_main(sys.argv[2])\n")


class LoadTimeoutError(FormatError):
    """An isolated load did not finish in time; its process was killed."""


class IsolatedLoadError(FormatError):
    """The process of an isolated load died (a signal, out of memory, an exit status) or
    failed with an error that is not a loader's."""


def load_isolated(path, *, timeout=None, max_memory=None, prefix=None, layer=None,
                  node=None):
    """`detect.load(path, prefix=, layer=, node=)` in a child process (see the module
    docstring); the model comes back bit-exact.

    timeout : seconds of wall-clock time (default DEFAULT_TIMEOUT), interpreter start
        included.
    max_memory : bytes of address space for the child (RLIMIT_AS; default 2 GiB +
        4 x the file's size).
    """
    from . import native

    timeout = DEFAULT_TIMEOUT if timeout is None else _check_timeout(timeout)
    if max_memory is not None:
        max_memory = _check_memory(max_memory)
    path = os.fsdecode(os.fspath(path))
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    if max_memory is None:
        max_memory = _DEFAULT_MEMORY_BASE + _DEFAULT_MEMORY_PER_FILE_BYTE * _size(path)
    options = {"prefix": prefix, "layer": layer, "node": node}
    try:
        json.dumps(options)
    except (TypeError, ValueError):
        raise TypeError(f"an isolated load takes prefix / layer / node as strings or lists "
                        f"of strings; got {options!r:.200}") from None
    tmp = tempfile.mkdtemp(prefix="lstm_infer-load-")
    try:
        request = {"path": path, "options": options,
                   "output": os.path.join(tmp, "model.safetensors"),
                   "result": os.path.join(tmp, "result.json"),
                   "max_memory": max_memory,
                   "cpu_seconds": int(math.ceil(2 * timeout)) + 10}
        with open(os.path.join(tmp, "request.json"), "w") as f:
            json.dump(request, f)
        status = _run_child(tmp, timeout)
        if status == "timeout":
            raise LoadTimeoutError(
                f"{path}: loading did not finish within {timeout:g} s (timeout=) in the "
                f"isolated process, which was killed: a hostile or corrupted file (e.g. one "
                f"that sends libhdf5 into an endless loop), or a larger timeout is needed")
        result = _read_result(request["result"])
        if status != 0 or result is None:
            raise IsolatedLoadError(f"{path}: the isolated loading process "
                                    f"{_describe_status(status, max_memory)}"
                                    f"{_stderr_tail(tmp)}")
        if not result.get("ok"):
            raise _child_error(path, result)
        return native.load(request["output"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_timeout(timeout) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"timeout must be a number of seconds; got {timeout!r}")
    if not (math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout must be a positive finite number of seconds; got "
                         f"{timeout!r}")
    return float(timeout)


def _check_memory(max_memory) -> int:
    if isinstance(max_memory, bool) or not isinstance(max_memory, numbers.Integral):
        raise TypeError(f"max_memory must be an int (bytes); got {max_memory!r}")
    max_memory = int(max_memory)
    if max_memory <= 0:
        raise ValueError(f"max_memory must be a positive number of bytes; got {max_memory}")
    try:
        import resource  # noqa: F401
    except ImportError:  # pragma: no cover - not POSIX
        raise ValueError("max_memory needs RLIMIT_AS (a POSIX system)") from None
    return max_memory


def _size(path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _run_child(tmp: str, timeout: float):
    """The child's exit status, or "timeout" (it was killed)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    if not sys.executable:
        raise RuntimeError("an isolated load needs a Python executable; sys.executable is "
                           "empty (an embedded interpreter?)")
    with open(os.path.join(tmp, "stderr.txt"), "wb") as err:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP, root, os.path.join(tmp, "request.json")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env,
                close_fds=True, start_new_session=True)
        except OSError as e:  # not about the model file: do not let it look like it
            raise RuntimeError(f"cannot start {sys.executable} for an isolated load: "
                               f"{e}") from e
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout"
    finally:  # time-out, KeyboardInterrupt, anything: the child does not outlive the call
        if proc.poll() is None:
            _kill(proc)


def _kill(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the child and its children
    except (AttributeError, ProcessLookupError, PermissionError):  # no killpg, or gone
        proc.kill()
    proc.wait()


def _read_result(path):
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_RESULT_BYTES + 1)
    except FileNotFoundError:
        return None
    if len(raw) > _MAX_RESULT_BYTES:
        return None
    try:
        result = json.loads(raw)
    except ValueError:
        return None
    return result if isinstance(result, dict) else None


def _describe_status(status, max_memory) -> str:
    if isinstance(status, int) and status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"was killed by {name} (exit status {status}; a crash in a parser?)"
    if status == _EXIT_NO_MEMORY:
        return (f"ran out of memory (exit status {status}): the load needs more than "
                f"max_memory={max_memory} bytes of address space")
    if status == 0:
        return "exited (status 0) without a result"
    return f"exited with status {status}"


def _stderr_tail(tmp) -> str:
    try:
        with open(os.path.join(tmp, "stderr.txt"), "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - _STDERR_TAIL))
            lines = f.read().decode("utf8", "replace").strip().splitlines()
    except OSError:  # pragma: no cover
        return ""
    return f"; its last words: {lines[-1][:500]!r}" if lines else ""


def _child_error(path, result) -> Exception:
    """The child's loader error as the same class in this process (or IsolatedLoadError)."""
    module, name = str(result.get("module")), str(result.get("class"))
    message = str(result.get("message"))[:_MAX_MESSAGE]
    cls = None
    if module == "builtins":
        cls = _BUILTIN_ERRORS.get(name)
    elif module in _ERROR_MODULES and name.isidentifier():
        found = getattr(importlib.import_module(module), name, None)
        if isinstance(found, type) and issubclass(found, FormatError):
            cls = found
    if cls is None:
        return IsolatedLoadError(f"{path}: the isolated load failed with {module}.{name}: "
                                 f"{message}")
    return cls(message)


# ---------------------------------------------------------------------------- the child

def _child_main(request_path: str) -> None:
    with open(request_path) as f:
        req = json.load(f)
    _limit(req["max_memory"], req["cpu_seconds"])
    try:
        from .detect import load

        load(req["path"], **req["options"]).save(req["output"])
        result = {"ok": True}
    except Exception as e:  # noqa: BLE001 - every error goes back to the parent
        if _out_of_memory(e):
            os._exit(_EXIT_NO_MEMORY)
        result = {"ok": False, "module": type(e).__module__, "class": type(e).__qualname__,
                  "message": str(e)[:_MAX_MESSAGE]}
    partial = req["result"] + ".partial"
    with open(partial, "w") as f:
        json.dump(result, f)
    os.replace(partial, req["result"])  # the parent never sees half a result


def _out_of_memory(e: BaseException) -> bool:
    """Whether e is, or was caused by, a failed allocation (MemoryError, or ENOMEM from an
    mmap): under RLIMIT_AS that is the limit, whichever error a loader made of it."""
    for _ in range(16):
        if isinstance(e, MemoryError) or (isinstance(e, OSError) and e.errno == errno.ENOMEM):
            return True
        e = e.__cause__ or e.__context__
        if e is None:
            return False
    return False


def _limit(max_memory: int, cpu_seconds: int) -> None:
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX: the timeout still holds
        return
    for what, value in ((resource.RLIMIT_AS, max_memory), (resource.RLIMIT_CPU, cpu_seconds)):
        soft, hard = resource.getrlimit(what)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(what, (value, hard))
