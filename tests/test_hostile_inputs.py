"""Regression tests for the forward-side findings of the reliability probe
(../shared/RELIABILITY.md F1, F2, F7, F8's forward rows, F9): each failed on e66b2a1."""
import os
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

import lstm_infer as li
from lstm_infer import _threads
from lstm_infer._validate import AllocationError, all_finite


def _run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter: a failure that kills the process fails the
    test instead of the suite."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout)


# ----------------------------------------------------------------------- F1 threads
def test_huge_num_threads_is_capped_not_fatal():
    # on e66b2a1 libgomp failed to allocate the team and exit(1)ed the interpreter
    r = _run_python("""
        import numpy as np, lstm_infer as li
        m = li.LSTM.random(16, 64, bidirectional=True)
        x = np.zeros((10, 8, 16), np.float32)
        ref = m(x, num_threads=1)[0]
        out = m(x, num_threads=2**31 - 1)[0]
        li.set_num_threads(2**31 - 1)
        out2 = m(x)[0]
        print("ok", np.isfinite(out).all(), li.get_num_threads())
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok True"), r.stdout
    assert int(r.stdout.split()[-1]) == _threads.max_threads()


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_thread_pool_stays_bounded():
    # on e66b2a1 num_threads=1000 left 1,002 OS threads in the process
    r = _run_python("""
        import os, numpy as np, lstm_infer as li
        m = li.LSTM.random(16, 64, bidirectional=True)
        m(np.zeros((10, 64, 16), np.float32), num_threads=1000)
        print(len(os.listdir("/proc/self/task")))
    """)
    assert r.returncode == 0, r.stderr
    # the OpenMP team, the main thread, and a few that numpy/OpenBLAS may start
    assert int(r.stdout) <= _threads.max_threads() + 8


def test_num_threads_values():
    m = li.LSTM.random(4, 8)
    x = np.zeros((3, 9, 4), np.float32)
    ref = m(x, num_threads=2)[0]
    np.testing.assert_array_equal(m(x, num_threads=np.int64(2))[0], ref)
    for bad, exc in ((0, ValueError), (-1, ValueError), (True, TypeError), (2.0, TypeError),
                     ("2", TypeError)):
        with pytest.raises(exc, match="num_threads"):
            m(x, num_threads=bad)
    with pytest.raises(TypeError, match="num_threads"):
        li.set_num_threads(2.5)
    li.set_num_threads(np.int32(1))
    try:
        assert li.get_num_threads() == 1
    finally:
        li.set_num_threads(None)


# ----------------------------------------------------------------------- F2 strides
def test_float64_time_stride_above_int_max(tmp_path):
    # on e66b2a1 the float64 path passed the time stride to BLAS as a C int: a stride
    # of 2^32 + 16 elements read x[1] from 16 elements on (error 0.79)
    I, S = 8, 2 ** 32 + 16
    path = tmp_path / "sparse.f64"
    with open(path, "wb") as f:
        f.truncate(2 * S * 8)  # sparse: no disk, no RAM
    mm = np.memmap(path, np.float64, "r+", shape=(2 * S,))
    mm[:I], mm[16:16 + I], mm[S:S + I] = 0.5, 5.0, -0.5
    x = mm.reshape(2, S)[:, None, :I]
    m = li.LSTM.random(I, 16, dtype="float64")
    out, (h, c) = m(x)
    ref, (h_ref, c_ref) = m(np.ascontiguousarray(x))
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(c, c_ref)
    del mm


# ----------------------------------------------------------------------- F7 memory
def test_finite_check_of_a_broadcast_input_allocates_little():
    # on e66b2a1 np.isfinite(x) of this 4 KiB broadcast allocated a 1 GiB bool array
    m = li.LSTM.random(1024, 4)
    x = np.broadcast_to(np.zeros(1024, np.float32), (2 ** 20, 1, 1024))
    tracemalloc.start()
    try:
        out, _ = m(x, lengths=[0])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == (2 ** 20, 1, 4) and not out.any()
    assert peak < 2 * out.nbytes + (8 << 20), peak  # the output (zeros), not x's size


def test_finite_check_still_finds_nan_in_broadcasts():
    m = li.LSTM.random(8, 4)
    v = np.zeros(8, np.float32)
    v[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        m(np.broadcast_to(v, (1000, 2, 8)))
    big = np.zeros((300_000, 1, 8), np.float32)  # several chunks
    big[-1, 0, 7] = np.inf
    with pytest.raises(ValueError, match="NaN or infinity"):
        m(big)


@pytest.mark.parametrize("shape", [(5,), (7, 3), (4, 0, 3), (3, 100_000, 2), (2, 3, 200_000)])
def test_all_finite_matches_numpy(shape):
    rng = np.random.default_rng(1)
    a = rng.standard_normal(shape).astype(np.float32)
    assert all_finite(a) and all_finite(a[::-1]) and all_finite(a.T)
    if a.size:
        flat = a.reshape(-1)
        flat[rng.integers(a.size)] = np.nan
        assert not all_finite(a) and not all_finite(a.T) and not all_finite(a[::-1])


@pytest.mark.parametrize("shape", [(2 ** 31 + 3, 1, 4), (1, 2 ** 31 + 3, 4)])
def test_dims_beyond_32_bits_refused_before_allocating(shape):
    m = li.LSTM.random(4, 8)
    x = np.broadcast_to(np.zeros(4, np.float32), shape)
    with pytest.raises(ValueError, match="32-bit"):
        m(x)


def test_output_larger_than_memory_refused_before_allocating():
    # on e66b2a1: a MemoryError from numpy (or, under no limit, GiBs really allocated)
    m = li.LSTM.random(4, 1024)
    x = np.broadcast_to(np.zeros(4, np.float32), (2 ** 26, 2 ** 10, 4))
    with pytest.raises(AllocationError, match="GiB"):
        m(x)
    with pytest.raises(ValueError):  # an AllocationError is also a ValueError
        m(x)


# ----------------------------------------------------------------------- F8 / F9
def test_layer_limit_checked_at_construction():
    w = {"w_ih": np.zeros((4, 1), np.float32), "w_hh": np.zeros((4, 1), np.float32)}
    with pytest.raises(ValueError, match="at most 64 layers"):
        li.LSTM([[w]] * 65)
    assert li.LSTM([[w]] * 64).config.num_layers == 64


@pytest.mark.parametrize("where", ["alpha", "beta"])
def test_hard_sigmoid_parameters_within_float32(where):
    act = ("hard_sigmoid", 1e39, 0.5) if where == "alpha" else ("hard_sigmoid", 0.2, -1e39)
    with pytest.raises(ValueError, match="float32"):
        li.LSTM.random(4, 8, activations=[act, "tanh", "tanh"])


@pytest.mark.parametrize("mode", [None, "float16", "int8", "int8-weights"])
@pytest.mark.parametrize("missing", ["w_ih", "w_hh"])
def test_missing_weight_is_a_value_error_in_every_mode(mode, missing):
    # on e66b2a1 quantization read the weights first: KeyError 'w_hh'
    w = {"w_ih": np.zeros((64, 4), np.float32), "w_hh": np.zeros((64, 16), np.float32)}
    del w[missing]
    with pytest.raises(ValueError, match=f"missing {missing}"):
        li.LSTM([[w]], quantization=mode)


def test_masked_array_is_refused_not_silently_unmasked():
    m = li.LSTM.random(4, 8)
    x = np.ma.masked_array(np.ones((3, 2, 4), np.float32), mask=False)
    with pytest.raises(TypeError, match="masked array.*lengths"):
        m(x)


def test_object_dtype_integer_lengths_accepted():
    m = li.LSTM.random(4, 8)
    x = np.random.default_rng(0).standard_normal((5, 2, 4)).astype(np.float32)
    ref = m(x, lengths=[5, 2])
    got = m(x, lengths=np.array([5, np.int64(2)], dtype=object))
    np.testing.assert_array_equal(got[0], ref[0])
    with pytest.raises(TypeError, match="lengths must be integers"):
        m(x, lengths=np.array([5, "2"], dtype=object))


def _under_asan() -> bool:
    import ctypes
    try:
        ctypes.CDLL(None)["__asan_init"]
        return True
    except (AttributeError, OSError):
        return False


@pytest.mark.skipif(_under_asan(), reason="AddressSanitizer reserves terabytes of shadow "
                    "memory: an RLIMIT_AS cannot be set under it")
def test_allocation_failure_under_an_address_space_limit_is_clean():
    # found by bench/fuzz_forward.py: 16 GiB of outputs fit this machine's RAM but not
    # the process's RLIMIT_AS, and numpy's MemoryError escaped
    r = _run_python("""
        import resource, numpy as np, lstm_infer as li
        from lstm_infer._validate import AllocationError
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
        m = li.LSTM.random(1, 1)
        x = np.broadcast_to(np.zeros(1, np.float32), (65536, 65536, 1))
        try:
            m(x)
        except AllocationError as e:
            assert isinstance(e, ValueError), e
            print("clean:", e)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("clean:") and "GiB" in r.stdout, r.stdout
