"""Serving reliability, bounded (a few seconds): concurrency and memory (issue 10 item 6).

Concurrency: 8 Python threads hammer shared models at once -- direct calls of mixed
shapes, lengths and initial states on float32, int8, weight-only, bidirectional and
projected models; one stream per thread; requests through one Batcher per model; and
a ninth thread that keeps calling ``li.set_num_threads`` while the forwards run. Every
result is compared bit for bit with the same call made serially beforehand; a hung
thread fails the test (no deadlock), an exception in any thread fails it (no crash
becomes a silent None).

Memory: ``bench/soak_memory.py`` (the full-size soak: 100 000 forward calls, 100 000
batched requests, 10 000 save/load cycles) run scaled down in a fresh process, with its
RSS-growth bound.

Bit-identity across batches and thread counts holds on the portable and AVX2 kernels
(tests/test_determinism.py); on an AVX-512 CPU the concurrency test runs the AVX2 path.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import lstm_infer as li
from lstm_infer import _kernels
from lstm_infer.serving import Batcher

N_THREADS = 8
JOIN_S = 120.0   # a thread still alive after this is a deadlock (passing runs take ~1-3 s)
I = 12

MODELS = {
    "float32": li.LSTM.random(I, 24, seed=11),
    "int8": li.LSTM.random(I, 24, seed=12).quantize("int8"),
    "int8-weights": li.LSTM.random(I, 20, seed=13).quantize("int8-weights"),
    "bfloat16": li.LSTM.random(I, 20, num_layers=2, seed=14).quantize("bfloat16"),
    "bidir-2layer": li.LSTM.random(I, 16, num_layers=2, bidirectional=True, seed=15),
    "projected": li.LSTM.random(I, 32, proj_size=10, seed=16),
}
STREAMABLE = [n for n, m in MODELS.items() if not m.config.bidirectional]


@pytest.fixture
def deterministic_path():
    """The AVX2 kernels on an AVX-512 CPU (its tiles are not batch-independent yet)."""
    prev = _kernels.simd_level()
    if prev == "avx512":
        assert _kernels.set_simd_level("avx2") == "avx2"
    try:
        yield
    finally:
        _kernels.set_simd_level(prev)


def _flat(result):
    out, (h, c) = result
    return [out, h, c]


def _same(got, want) -> bool:
    return all(a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)
               for a, b in zip(_flat(got), _flat(want)))


def _random_state(model, B, rng):
    cfg = model.config
    n = cfg.num_directions * cfg.num_layers
    l0 = cfg.layers[0]
    return (rng.uniform(-1, 1, (n, B, l0.output_size)).astype(np.float32),
            rng.uniform(-1, 1, (n, B, l0.hidden_size)).astype(np.float32))


def _direct_calls(rng, n):
    """n (model name, x, lengths, state, num_threads) calls of mixed shapes."""
    calls = []
    names = list(MODELS)
    for k in range(n):
        name = names[k % len(names)]
        m = MODELS[name]
        T, B = int(rng.integers(1, 24)), int(rng.choice([1, 2, 3, 5, 8]))
        x = rng.uniform(-3, 3, (T, B, I)).astype(np.float32)
        lengths = rng.integers(0, T + 1, B) if k % 2 else None
        state = _random_state(m, B, rng) if k % 3 == 0 else None
        calls.append((name, x, lengths, state, (None, 1, 2)[k % 3]))
    return calls


def _run_threads(targets):
    """Start every target at once (a barrier), join with a deadline, re-raise the first
    error; returns their results."""
    barrier = threading.Barrier(len(targets))
    results, errors = [None] * len(targets), []

    def run(i, fn):
        try:
            barrier.wait(JOIN_S)
            results[i] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i, fn), daemon=True)
               for i, fn in enumerate(targets)]
    for t in threads:
        t.start()
    end = time.monotonic() + JOIN_S   # one deadline for all (not JOIN_S per thread)
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
    hung = [t.name for t in threads if t.is_alive()]
    assert not hung, f"deadlock: {len(hung)} thread(s) still running after {JOIN_S:.0f} s"
    if errors:
        raise errors[0]
    return results


def test_threads_streams_batcher_and_set_num_threads_bit_identical(deterministic_path):
    rng = np.random.default_rng(2024)
    calls = _direct_calls(rng, 32 * N_THREADS)
    # streams: per thread one model and a sequence cut into chunks of 1..7 steps
    streams = []
    for k in range(N_THREADS):
        name = STREAMABLE[k % len(STREAMABLE)]
        x = rng.uniform(-3, 3, (int(rng.integers(40, 90)), 2, I)).astype(np.float32)
        cuts = np.cumsum(rng.integers(1, 8, 30))
        streams.append((name, x, [int(c) for c in cuts if c < x.shape[0]]))
    # batcher requests: single sequences (lengths 0..20), a third with a state
    requests = []
    for k in range(40 * N_THREADS):
        name = list(MODELS)[k % len(MODELS)]
        x = rng.uniform(-3, 3, (int(rng.integers(0, 21)), I)).astype(np.float32)
        s = None
        if k % 3 == 0:
            h, c = _random_state(MODELS[name], 1, rng)
            s = (h[:, 0], c[:, 0])
        requests.append((name, x, s))

    # serial results first, with num_threads=1
    want_calls = [MODELS[n](x, state=s, lengths=L, num_threads=1) for n, x, L, s, _ in calls]
    want_streams = [MODELS[n](x, num_threads=1)[0] for n, x, _ in streams]
    want_requests = [MODELS[n](x, state=s, num_threads=1) for n, x, s in requests]

    batchers = {n: Batcher(m, max_batch=8, max_delay_ms=0.5, max_queue=32)
                for n, m in MODELS.items()}
    stop = threading.Event()
    toggles = [0]

    def toggler():
        # set_num_threads from a thread of its own, as fast as it can, while the
        # forwards run: the default changes under calls made with num_threads=None
        k = 0
        while not stop.is_set():
            li.set_num_threads((1, 2, None, 3)[k % 4])
            k += 1
        toggles[0] = k

    def worker(t):
        """This thread's direct calls, its stream's chunks and its batcher requests,
        interleaved (a few requests in flight at a time)."""
        bad = []
        mine = [j for j in range(len(calls)) if j % N_THREADS == t]
        reqs = list(range(t, len(requests), N_THREADS))
        s_name, s_x, cuts = streams[t]
        stream = MODELS[s_name].stream(batch_size=2)
        bounds = [0] + cuts + [s_x.shape[0]]
        chunks, pending = [], []

        def harvest(keep):
            while len(pending) > keep:
                r, f = pending.pop(0)
                if not _same(f.result(JOIN_S), want_requests[r]):
                    bad.append(f"batched request {r} ({requests[r][0]})")

        steps = max(len(mine), len(bounds) - 1)
        for i in range(steps):
            if i < len(mine):
                j = mine[i]
                name, x, lengths, state, nt = calls[j]
                if not _same(MODELS[name](x, state=state, lengths=lengths, num_threads=nt),
                             want_calls[j]):
                    bad.append(f"direct call {j} ({name}, num_threads={nt})")
            if i < len(bounds) - 1:
                chunks.append(stream.step(s_x[bounds[i]:bounds[i + 1]]))
            for r in reqs[len(reqs) * i // steps:len(reqs) * (i + 1) // steps]:
                name, x, s = requests[r]
                pending.append((r, batchers[name].submit(x, s, block=JOIN_S)))
            harvest(keep=4)
        harvest(keep=0)
        if not np.array_equal(np.concatenate(chunks), want_streams[t]):
            bad.append(f"stream of thread {t} ({s_name})")
        return bad

    toggle_thread = threading.Thread(target=toggler, daemon=True)
    toggle_thread.start()
    try:
        results = _run_threads([lambda t=t: worker(t) for t in range(N_THREADS)])
    finally:
        stop.set()
        toggle_thread.join(JOIN_S)
        for b in batchers.values():
            b.close()
        li.set_num_threads(None)
    assert not toggle_thread.is_alive()
    assert toggles[0] > 0, "set_num_threads was never called during the run"
    mismatches = [m for r in results for m in r]
    assert not mismatches, f"{len(mismatches)} results differ from serial: {mismatches[:5]}"
    stats = {n: b.stats() for n, b in batchers.items()}
    assert sum(s["completed"] for s in stats.values()) == len(requests)
    assert all(s["failed"] == 0 and s["queued"] == 0 for s in stats.values()), stats
    # the batchers did batch (else the test would only repeat the direct calls)
    assert max(s["mean_batch_size"] for s in stats.values()) > 1.0, stats


def test_one_model_shared_by_8_threads_at_every_thread_count(deterministic_path):
    """The same call from 8 threads at once, num_threads 1, 2 and the default, on each
    model: every result bit-identical to the serial one."""
    rng = np.random.default_rng(7)
    x = rng.uniform(-3, 3, (17, 6, I)).astype(np.float32)
    lengths = np.array([17, 0, 9, 1, 16, 17])
    want = {n: m(x, lengths=lengths, num_threads=1) for n, m in MODELS.items()}

    def worker(t):
        bad = []
        for rep in range(6):
            for n, m in MODELS.items():
                nt = (1, 2, None)[(t + rep) % 3]
                if not _same(m(x, lengths=lengths, num_threads=nt), want[n]):
                    bad.append((n, nt))
        return bad

    bad = [b for r in _run_threads([lambda t=t: worker(t) for t in range(N_THREADS)])
           for b in r]
    assert not bad, f"results differ from serial: {bad[:5]}"


# ----------------------------------------------------------------------------- memory
SOAK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench",
                    "soak_memory.py")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RSS from /proc/self/statm")
def test_scaled_down_soak_keeps_rss_flat(tmp_path):
    """2 000 forward calls, 2 000 batched requests, 200 save/load cycles (after a warm-up)
    with a bound on RSS growth per phase; the script also checks every result."""
    assert os.path.exists(SOAK), SOAK
    res = subprocess.run(
        [sys.executable, SOAK, "--calls", "2000", "--requests", "2000", "--cycles", "200",
         "--max-growth-mb", "8", "--max-seconds", "300", "--dir", str(tmp_path), "--json",
         str(tmp_path / "soak.json")],
        capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    import json
    report = json.loads((tmp_path / "soak.json").read_text())
    assert [p["phase"] for p in report["phases"]] == ["forward", "batcher", "save/load"]
    for p in report["phases"]:
        assert p["done"] == p["planned"] and p["mismatches"] == 0, p
        assert p["growth_mb"] <= 8, p
        assert len(p["rss_mb"]) >= 2
