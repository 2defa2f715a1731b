"""Thread safety, GIL release, thread-count independence and bounded memory (DESIGN §4, §7)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import lstm_infer as li
from conftest import TOL_SELF, assert_close

N_PY_THREADS = 8


def _cases():
    """(name, model, x, lengths): small and large float32 batches (projection by GEMV and
    by BLAS), bidirectional with lengths, float64."""
    rng = np.random.default_rng(7)
    x = lambda T, B, I, dt: rng.uniform(-3, 3, (T, B, I)).astype(dt)
    return [
        ("f32-B3-2layers", li.LSTM.random(5, 20, num_layers=2, seed=1),
         x(30, 3, 5, np.float32), None),
        ("f32-B12-bidir-lengths",
         li.LSTM.random(5, 20, bidirectional=True, proj_size=6, seed=2),
         x(25, 12, 5, np.float32), rng.integers(0, 26, 12)),
        ("f64-B10-bidir", li.LSTM.random(4, 33, bidirectional=True, dtype="float64", seed=3),
         x(20, 10, 4, np.float64), rng.integers(0, 21, 10)),
    ]


def _run_concurrently(fn, n):
    """Run fn(i) on n Python threads started together; re-raise the first error."""
    barrier = threading.Barrier(n)
    results, errors = [None] * n, []

    def work(i):
        try:
            barrier.wait()
            results[i] = fn(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a worker thread hung"
    if errors:
        raise errors[0]
    return results


@pytest.mark.parametrize("num_threads", [1, 2])
def test_concurrent_calls_equal_serial_bitwise(num_threads, simd_level):
    cases = _cases()
    # every case with batch sizes B, B-1, B-2 (different slicings), called from
    # every Python thread 3 times
    inputs = []
    for i in range(N_PY_THREADS):
        for _, m, x, L in cases:
            b = max(1, x.shape[1] - i % 3)
            inputs.append((m, x[:, :b], None if L is None else L[:b]))

    def call(args):
        m, x, L = args
        out, (h, c) = m(x, lengths=L, num_threads=num_threads)
        return out, h, c

    serial = [call(a) for a in inputs]

    def worker(i):
        got = []
        for _ in range(3):
            for j in range(i, len(inputs), N_PY_THREADS):
                got.append((j, call(inputs[j])))
        return got

    for per_thread in _run_concurrently(worker, N_PY_THREADS):
        for j, (out, h, c) in per_thread:
            for a, b in zip((out, h, c), serial[j]):
                np.testing.assert_array_equal(a, b)


def test_concurrent_calls_default_threads_match_serial():
    """With num_threads unset the workers are shared among concurrent calls; results
    still agree with a serial call (within the schedule tolerance)."""
    cases = _cases()
    serial = {name: m(x, lengths=L) for name, m, x, L in cases}

    def worker(i):
        name, m, x, L = cases[i % len(cases)]
        return name, m(x, lengths=L)

    for name, (out, (h, c)) in _run_concurrently(worker, N_PY_THREADS):
        dt = serial[name][0].dtype.name
        assert_close(out, serial[name][0], TOL_SELF[dt], f"{name} out")
        assert_close(h, serial[name][1][0], TOL_SELF[dt], f"{name} h_n")
        assert_close(c, serial[name][1][1], TOL_SELF[dt], f"{name} c_n")


@pytest.mark.parametrize("name", ["f32-B3-2layers", "f32-B12-bidir-lengths", "f64-B10-bidir"])
def test_num_threads_1_vs_2(name, simd_level):
    _, m, x, L = next(c for c in _cases() if c[0] == name)
    a_out, (a_h, a_c) = m(x, lengths=L, num_threads=1)
    b_out, (b_h, b_c) = m(x, lengths=L, num_threads=2)
    dt = m.config.dtype
    assert_close(b_out, a_out, TOL_SELF[dt], "out")
    assert_close(b_h, a_h, TOL_SELF[dt], "h_n")
    assert_close(b_c, a_c, TOL_SELF[dt], "c_n")
    # and each thread count is deterministic
    np.testing.assert_array_equal(m(x, lengths=L, num_threads=2)[0], b_out)


def test_set_num_threads_is_used():
    _, m, x, L = _cases()[1]
    li.set_num_threads(1)
    a = m(x, lengths=L)
    b = m(x, lengths=L, num_threads=1)
    np.testing.assert_array_equal(a[0], b[0])


# ----------------------------------------------------------------------------- GIL release
class _Counter:
    """A Python thread that counts as fast as it can while running."""

    def __init__(self):
        self.n = 0
        self._run = True
        self._thread = threading.Thread(target=self._spin, daemon=True)

    def _spin(self):
        while self._run:
            self.n += 1

    def __enter__(self):
        self._thread.start()
        while self.n == 0:  # wait until it really counts
            time.sleep(0.001)
        return self

    def __exit__(self, *exc):
        self._run = False
        self._thread.join()

    def rate_during(self, fn):
        """Counts per second while fn() runs on this thread, and fn's duration."""
        n0, t0 = self.n, time.perf_counter()
        fn()
        n1, t1 = self.n, time.perf_counter()
        return (n1 - n0) / (t1 - t0), t1 - t0


@pytest.mark.timing  # counter rates under load: run with -m timing (pyproject.toml)
def test_forward_releases_the_gil():
    m = li.LSTM.random(64, 256, seed=0)
    x = np.random.default_rng(0).uniform(-3, 3, (20000, 1, 64)).astype(np.float32)
    forward = lambda: m(x, num_threads=1)
    forward()  # warm up (page faults, BLAS init)
    with _Counter() as counter:
        free, _ = counter.rate_during(lambda: time.sleep(0.3))      # GIL free: full rate
        during, secs = counter.rate_during(forward)
        held, _ = counter.rate_during(lambda: sum(range(10_000_000)))  # GIL held in C
    assert secs > 0.1, f"forward too short ({secs:.3f} s) for a meaningful measurement"
    # the method can tell a GIL-holding call from a free one
    assert held < 0.2 * free, f"control: counter ran at {held / free:.0%} while the GIL was held"
    assert during > 0.25 * free, (f"counter ran at {during / free:.0%} of its free rate during a "
                                 f"{secs:.2f} s forward: the GIL is not released")


# ----------------------------------------------------------------------------- long sequences
def test_long_sequence_matches_chunked_streaming():
    m = li.LSTM.random(16, 64, seed=5)
    x = np.random.default_rng(5).uniform(-3, 3, (100_000, 1, 16)).astype(np.float32)
    out, (h_n, c_n) = m(x)
    assert out.shape == (100_000, 1, 64)
    assert np.isfinite(out).all() and np.abs(out).max() <= 1
    state, chunks = None, []
    for part in np.array_split(x, [1, 64, 65, 5000, 33333, 99_999]):  # odd chunk sizes, one of 1
        o, state = m(part, state=state)
        chunks.append(o)
    assert_close(np.concatenate(chunks), out, TOL_SELF["float32"], "chunked out")
    assert_close(state[0], h_n, TOL_SELF["float32"], "chunked h_n")
    assert_close(state[1], c_n, TOL_SELF["float32"], "chunked c_n")


_MEMORY_SCRIPT = textwrap.dedent("""
    import numpy as np
    import lstm_infer as li

    def status(key):  # kB
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1])

    T, I, H = 100_000, 16, 64
    m = li.LSTM.random(I, H, seed=0)
    x = np.random.default_rng(0).uniform(-3, 3, (T, 1, I)).astype(np.float32)
    m(x[:100])                                   # warm up: BLAS buffers, thread pool
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")                         # reset the peak (VmHWM) to the current RSS
    except OSError:
        print("skip")
        raise SystemExit
    before = status("VmRSS")
    out, _ = m(x)
    print((status("VmHWM") - before) * 1024, out.nbytes)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc/self")
def test_long_sequence_bounded_memory():
    """Peak memory of a T=100000 call grows by the output only, not by a T-sized workspace
    (the input projection alone would be T*4H*4 bytes = 100 MB)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(li.__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT], capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    if res.stdout.strip() == "skip":
        pytest.skip("cannot reset the peak RSS (/proc/self/clear_refs)")
    grew, out_bytes = map(int, res.stdout.split())
    assert grew < out_bytes + 32 * 2 ** 20, (
        f"peak RSS grew by {grew / 2**20:.1f} MiB for a {out_bytes / 2**20:.1f} MiB output")
