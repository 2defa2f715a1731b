"""li.load(path, isolated=True / timeout= / max_memory=): the watchdog of RELIABILITY.md F5.

A one-byte change to an .h5 file sends libhdf5 into an endless loop that no in-process
code can interrupt; the isolated load parses in a child process that is killed on time.
Also: bit-exact results, loader errors coming back as the same class and message, the
memory limit, a dying child, and arguments checked before any process starts.
"""
from __future__ import annotations

import json
import os
import struct
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import lstm_infer as li
from lstm_infer.formats import isolate
from lstm_infer.formats.errors import FormatError
from lstm_infer.formats.isolate import IsolatedLoadError, LoadTimeoutError

# the watchdog kills process groups and sets RLIMIT_AS: POSIX only (the argument checks
# and the error-class rules below are not)
needs_posix = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process limits")

HERE = os.path.dirname(os.path.abspath(__file__))
KERAS_DIR = os.path.join(HERE, "data", "keras")
H5 = os.path.join(KERAS_DIR, "tf_keras2_seq.h5")
KERAS = os.path.join(KERAS_DIR, "stack_v3.keras")


def _our_children():
    """Processes whose parent is this one (Linux /proc), e.g. a child not reaped."""
    out = []
    for pid in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == os.getpid():
                        out.append(int(pid))
            except (OSError, ValueError, IndexError):
                pass
    return out


@pytest.fixture
def hang_h5(tmp_path):
    """RELIABILITY.md F5: the size of a global-heap object (the "2.13.1" string) 6 -> 0."""
    b = bytearray(open(H5, "rb").read())
    assert b[4520] == 6
    b[4520] = 0
    p = tmp_path / "hang.h5"
    p.write_bytes(bytes(b))
    return str(p)


@needs_posix
def test_endless_libhdf5_loop_is_killed_on_time(hang_h5):
    pytest.importorskip("h5py")  # the Keras fixtures
    before = _our_children()
    t0 = time.monotonic()
    with pytest.raises(LoadTimeoutError) as e:
        li.load(hang_h5, timeout=5)
    elapsed = time.monotonic() - t0
    assert 5 <= elapsed < 10, elapsed
    assert isinstance(e.value, FormatError)
    assert hang_h5 in str(e.value) and "5 s" in str(e.value)
    assert _our_children() == before  # killed and reaped


def _files(tmp_path):
    """.keras, .h5, torch (float64, legacy) and native files (ONNX: the same path, but
    importing onnx takes 1.5 s)."""
    native = str(tmp_path / "native.safetensors")
    li.LSTM.random(5, 7, num_layers=2, bidirectional=True).save(native)
    return [KERAS, H5, os.path.join(HERE, "data", "torch", "legacy_f64.pt"), native]


def _out(m, rng):
    I = m.weights[0][0]["w_ih"].shape[1]
    x = rng.standard_normal((3, 4, I)).astype(m.dtype)
    return m(x)


@needs_posix
def test_isolated_load_is_bit_exact(tmp_path, rng):
    """The same model as in-process, for every format; loads run from 4 threads at once
    (the caller may be a multi-threaded service)."""
    pytest.importorskip("h5py")  # the Keras fixtures
    files = _files(tmp_path)
    with ThreadPoolExecutor(4) as pool:
        isolated = list(pool.map(lambda f: li.load(f, isolated=True), files))
    for f, mi in zip(files, isolated):
        m = li.load(f)
        assert mi.options == m.options, f
        seed = int(rng.integers(1 << 30))
        got, want = _out(mi, np.random.default_rng(seed)), _out(m, np.random.default_rng(seed))
        _assert_identical(got, want, f)


def _assert_identical(got, want, what):
    """out, (h_n, c_n) bit for bit; h_n / c_n are lists for stacks of different sizes."""
    if isinstance(want, (list, tuple)):
        assert isinstance(got, (list, tuple)) and len(got) == len(want), what
        for g, w in zip(got, want):
            _assert_identical(g, w, what)
    else:
        np.testing.assert_array_equal(got, want, err_msg=what)
        assert got.dtype == want.dtype, what


def _in_process_error(path, **kw):
    try:
        li.load(path, **kw)
    except Exception as e:  # noqa: BLE001
        return e
    raise AssertionError(f"{path} loaded")


@needs_posix
def test_loader_errors_come_back_with_class_and_message(tmp_path):
    pytest.importorskip("h5py")  # the Keras fixtures
    cut = tmp_path / "cut.keras"
    cut.write_bytes(open(KERAS, "rb").read()[:5000])
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x01" * 64)
    cases = [(str(cut), {}), (str(junk), {}), (H5, {"layer": "no_such_layer"})]
    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(lambda c: _in_process_error(c[0], isolated=True, **c[1]), cases))
    for (path, kw), e in zip(cases, got):
        want = _in_process_error(path, **kw)
        assert type(e) is type(want) and str(e) == str(want), (e, want)
        assert isinstance(e, FormatError)


def _sparse_native(path, I, H):
    """A valid native file of zeros, written sparse (no disk, no memory)."""
    opts = li.LSTM.random(2, 2).options
    shapes = {"w_ih": [4 * H, I], "w_hh": [4 * H, H], "b": [4 * H]}
    header, off = {}, 0
    for name, shape in sorted(shapes.items()):
        n = int(np.prod(shape)) * 4
        header[f"layers.0.forward.{name}"] = {"dtype": "F32", "shape": shape,
                                              "data_offsets": [off, off + n]}
        off += n
    header["__metadata__"] = {"format": "lstm_infer", "format_version": "1",
                              "config": json.dumps(opts)}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + off)
    return path


@needs_posix
def test_max_memory_refuses_a_load_that_needs_more(tmp_path):
    pytest.importorskip("h5py")  # the Keras fixtures
    big = _sparse_native(str(tmp_path / "big.safetensors"), I=30720, H=1024)  # 520 MB
    limit = 600 << 20  # the interpreter with numpy takes ~0.25 GB of it
    with pytest.raises(IsolatedLoadError, match=r"ran out of memory.*max_memory=629145600"):
        li.load(big, max_memory=limit)

    m = li.load(KERAS, max_memory=limit)  # a small file loads under the same limit
    assert m.config.layers[0].hidden_size == 8


@needs_posix
def test_a_dying_child_names_its_status(monkeypatch):
    monkeypatch.setattr(isolate, "_BOOTSTRAP",
                        "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    with pytest.raises(IsolatedLoadError, match=r"killed by SIGSEGV \(exit status -11"):
        li.load(KERAS, isolated=True)
    monkeypatch.setattr(isolate, "_BOOTSTRAP",
                        "import sys; sys.stderr.write('dying words\\n'); sys.exit(7)")
    with pytest.raises(IsolatedLoadError, match="exited with status 7; its last words: "
                                                "'dying words'"):
        li.load(KERAS, isolated=True)


def test_only_known_error_classes_are_rebuilt(monkeypatch):
    """A class name from the child is looked up only among lstm_infer's FormatErrors and a
    few builtins; no other module is imported for it."""
    fake = "lstm_infer_no_such_module_xyz"
    monkeypatch.setattr(isolate, "_BOOTSTRAP", (
        "import json, sys\n"
        "req = json.load(open(sys.argv[2]))\n"
        f"json.dump({{'ok': False, 'module': '{fake}', 'class': 'Evil', 'message': 'm'}}, "
        "open(req['result'], 'w'))\n"))
    with pytest.raises(IsolatedLoadError, match=f"failed with {fake}.Evil: m"):
        li.load(KERAS, isolated=True)
    assert fake not in sys.modules


@pytest.mark.parametrize("kw, exc", [
    ({"timeout": 0}, ValueError), ({"timeout": -1}, ValueError),
    ({"timeout": float("nan")}, ValueError), ({"timeout": "5"}, TypeError),
    ({"timeout": True}, TypeError), ({"max_memory": 0}, ValueError),
    ({"max_memory": 1.5e9}, TypeError), ({"max_memory": True}, TypeError),
    ({"isolated": True, "layer": object()}, TypeError),
])
def test_arguments_are_checked_first(monkeypatch, kw, exc):
    monkeypatch.setattr(isolate, "_run_child", lambda *a: pytest.fail("a child was started"))
    with pytest.raises(exc):
        li.load(KERAS, **kw)


def test_missing_file_starts_no_child(tmp_path, monkeypatch):
    monkeypatch.setattr(isolate, "_run_child", lambda *a: pytest.fail("a child was started"))
    with pytest.raises(FileNotFoundError, match="no such file"):
        li.load(tmp_path / "missing.h5", timeout=3)


def test_isolated_tflite_error_keeps_its_class(tmp_path):
    """A TFLite file the child cannot read comes back as TFLiteFormatError (the parent
    re-raises only classes of the formats package's own modules)."""
    from lstm_infer.formats.tflite import TFLiteFormatError
    p = tmp_path / "bad.tflite"
    p.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(40))
    with pytest.raises(TFLiteFormatError, match="corrupted vtable"):
        li.load(p, isolated=True)
