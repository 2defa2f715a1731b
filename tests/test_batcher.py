"""lstm_infer.serving.Batcher: dynamic batching of single-sequence requests.

Every result is checked bit for bit against ``model(x, state=s)`` on the sequence
alone. Batch composition, flush reasons, back-pressure, timeouts and shutdown are
checked on what the batcher records (its stats, and the ``lengths`` of each call
seen by a recording wrapper of the model), never on wall-clock speed; the
wrapper's gate holds a forward call open so that requests queue up behind it
deterministically.
"""
import asyncio
import gc
import threading
import time
import tracemalloc

import numpy as np
import pytest

import lstm_infer as li
from lstm_infer.serving import (BatchedStream, Batcher, BatcherClosed, BatcherFull,
                                RequestTimeout)

I = 6
WAIT = 10.0  # generous bound on any wait that should end at once (never reached when passing)


def _stack(*sizes, seed=0):
    """A non-uniform stack (layer sizes differ): its states are per-layer lists."""
    layers, inp = [], I
    for k, h in enumerate(sizes):
        layers.append(li.LSTM.random(inp, h, seed=seed + k).weights[0])
        inp = h
    return li.LSTM(layers)


def _models():
    base = li.LSTM.random(I, 12, seed=1)
    return {
        "float32": base,
        "2layer-bidir": li.LSTM.random(I, 10, num_layers=2, bidirectional=True, seed=2),
        "batch_first-peephole": li.LSTM.random(I, 9, batch_first=True, peephole=True, seed=3),
        "stack-12-7": _stack(12, 7, seed=4),
        "int8": base.quantize("int8"),
        "int8-weights": base.quantize("int8-weights"),
        "bfloat16": base.quantize("bfloat16"),
        "float16": base.quantize("float16"),
    }


MODELS = _models()
# Threads per call: one for the two-direction model, whose direction tasks wake a second
# OpenMP worker for a tiny call -- tens of ms on a loaded 2-core machine. Results do not
# depend on the thread count; test_threads_and_tasks_bit_identical runs the default too.
NT = {"2layer-bidir": 1}
PROJECTED = li.LSTM.random(I, 12, proj_size=5, num_layers=2, seed=5)


def _seqs(n, seed=0, tmax=25):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-3, 3, (int(rng.integers(0, tmax + 1)), I)).astype(np.float32)
            for _ in range(n)]


def _random_state(model, rng):
    """An unbatched initial state in the form model(x, state=...) takes."""
    cfg = model.config
    if cfg.uniform:
        n = cfg.num_directions * cfg.num_layers
        return (rng.uniform(-1, 1, (n, cfg.layers[0].output_size)).astype(np.float32),
                rng.uniform(-1, 1, (n, cfg.layers[0].hidden_size)).astype(np.float32))
    return ([rng.uniform(-1, 1, (l.num_directions, l.output_size)).astype(np.float32)
             for l in cfg.layers],
            [rng.uniform(-1, 1, (l.num_directions, l.hidden_size)).astype(np.float32)
             for l in cfg.layers])


def _flat(result):
    out, (h, c) = result
    parts = [out] + (list(h) + list(c) if isinstance(h, list) else [h, c])
    return parts


def assert_same(got, want, exact=True):
    g, w = _flat(got), _flat(want)
    assert len(g) == len(w)
    for a, b in zip(g, w):
        assert a.shape == b.shape and a.dtype == b.dtype
        if exact:
            assert np.array_equal(a, b), f"max diff {np.max(np.abs(a - b)) if a.size else 0}"
        else:
            np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


class Recording:
    """The model, recording the lengths of each call; with ``gate`` the next call
    waits for ``gate.set()`` (``entered`` tells the test it has started)."""

    def __init__(self, model, gated=False, fail_on_length=None):
        self.model = model
        self.calls = []
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self.entered = threading.Event()
        self.fail_on_length = fail_on_length

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, x, **kw):
        lengths = [int(v) for v in kw["lengths"]]
        self.calls.append(lengths)
        self.entered.set()
        assert self.gate.wait(WAIT)
        if self.fail_on_length in lengths:
            raise RuntimeError(f"poisoned: a sequence of length {self.fail_on_length}")
        return self.model(x, **kw)

    def hold(self):
        """Wait until a call is inside the (closed) gate."""
        assert self.entered.wait(WAIT)

    def occupy(self, batcher, x, **kw):
        """Submit `x` and wait until its call holds the worker at the gate."""
        future = batcher.submit(x, **kw)
        self.hold()
        return future


# ----------------------------------------------------------------------------- results
@pytest.mark.parametrize("name", list(MODELS))
def test_threads_and_tasks_bit_identical(name):
    """8 threads and 40 asyncio tasks at once, mixed lengths (0 included): every
    result equals the model on that sequence alone, bit for bit."""
    model, nt = MODELS[name], NT.get(name)
    seqs = _seqs(200, seed=7)
    results = {}
    with Batcher(model, max_batch=16, max_delay_ms=1.0, num_threads=nt) as b:
        def worker(k):
            for i in range(k, 160, 8):
                results[i] = b.predict(seqs[i])

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()

        async def tasks():
            return await asyncio.gather(*(b.apredict(seqs[i]) for i in range(160, 200)))

        for i, r in zip(range(160, 200), asyncio.run(tasks())):
            results[i] = r
        for t in threads:
            t.join(WAIT)
            assert not t.is_alive()
        stats = b.stats()
    assert len(results) == 200
    for i, s in enumerate(seqs):
        assert_same(results[i], model(s, num_threads=nt))
    assert stats["completed"] == 200 and stats["failed"] == 0
    assert stats["batches"] < 200 and max(stats["batch_sizes"]) <= 16
    assert sum(k * v for k, v in stats["batch_sizes"].items()) == 200


def test_projected_bit_identical():
    # the projection kernel keeps rows independent at any batch size (test_determinism)
    seqs = _seqs(48, seed=8)
    with Batcher(PROJECTED, max_batch=32, max_delay_ms=20.0) as b:
        futures = [b.submit(s) for s in seqs]
        got = [f.result(WAIT) for f in futures]
    for r, s in zip(got, seqs):
        assert_same(r, PROJECTED(s))
    with Batcher(PROJECTED, max_batch=8, max_delay_ms=20.0) as b:
        got = [f.result(WAIT) for f in [b.submit(s) for s in seqs[:16]]]
    for r, s in zip(got, seqs):
        assert_same(r, PROJECTED(s))


@pytest.mark.parametrize("name", ["float32", "2layer-bidir", "stack-12-7", "int8"])
def test_state_carrying_requests(name):
    """Requests with and without (h, c) in one batch: each as model(x, state=s)."""
    model, nt = MODELS[name], NT.get(name)
    rng = np.random.default_rng(9)
    seqs = _seqs(40, seed=10)
    states = [_random_state(model, rng) if i % 3 else None for i in range(40)]
    rec = Recording(model)
    with Batcher(rec, max_batch=40, max_delay_ms=50.0, num_threads=nt) as b:
        futures = [b.submit(s, st) for s, st in zip(seqs, states)]
        got = [f.result(WAIT) for f in futures]
    assert len(rec.calls) < 40  # they shared calls
    for r, s, st in zip(got, seqs, states):
        assert_same(r, model(s, state=st, num_threads=nt))


def test_batched_stream_equals_stream():
    """Chunks through the batcher (many streams interleaved) = the model's own Stream."""
    model = MODELS["float32"]
    rng = np.random.default_rng(11)
    convs = [rng.uniform(-3, 3, (30, I)).astype(np.float32) for _ in range(6)]
    cuts = [0, 4, 5, 17, 30]
    got = [[] for _ in convs]
    with Batcher(model, max_batch=8, max_delay_ms=1.0) as b:
        def talk(k):
            s = b.stream()
            for a, e in zip(cuts, cuts[1:]):
                got[k].append(s.step(convs[k][a:e]))
            got[k].append(s.state)

        threads = [threading.Thread(target=talk, args=(k,)) for k in range(len(convs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
    for k, x in enumerate(convs):
        ref = model.stream(batch_size=None)
        for j, (a, e) in enumerate(zip(cuts, cuts[1:])):
            assert np.array_equal(got[k][j], ref.step(x[a:e]))
        assert np.array_equal(got[k][-1][0], ref.state[0])
        assert np.array_equal(got[k][-1][1], ref.state[1])
        np.testing.assert_allclose(np.concatenate(got[k][:-1]), model(x)[0], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="unidirectional"):
        BatchedStream(Batcher(MODELS["2layer-bidir"]))


# ----------------------------------------------------------------------------- batching policy
def test_max_batch_honoured():
    rec = Recording(MODELS["float32"], gated=True)
    seqs = _seqs(14, seed=12)
    b = Batcher(rec, max_batch=4, max_delay_ms=60_000)
    futures = [b.submit(s) for s in seqs[:4]]  # a full batch goes at once
    rec.hold()
    futures += [b.submit(s) for s in seqs[4:]]  # 10 queue behind it
    assert b.stats()["queued"] == 10
    rec.gate.set()
    for f in futures[:12]:
        f.result(WAIT)
    assert b.stats()["queued"] == 2  # waiting for more, up to max_delay_ms (60 s)
    b.close()  # runs them now
    for f, s in zip(futures, seqs):
        assert_same(f.result(0), MODELS["float32"](s))
    st = b.stats()
    assert [len(c) for c in rec.calls] == [4, 4, 4, 2]
    assert st["batch_sizes"] == {2: 1, 4: 3}
    assert st["flushes"] == {"max_batch": 3, "close": 1}


def test_max_delay_honoured():
    rec = Recording(MODELS["float32"])
    seqs = _seqs(3, seed=13, tmax=5)
    with Batcher(rec, max_batch=100, max_delay_ms=100.0) as b:
        t0 = time.monotonic()
        futures = [b.submit(s) for s in seqs]
        for f in futures:
            f.result(WAIT)
        waited = time.monotonic() - t0
        st = b.stats()
    assert len(rec.calls) == 1 and st["flushes"] == {"delay": 1}
    assert waited >= 0.1 * 0.9  # a lower bound: it did wait for more requests


def test_zero_delay_batches_what_queued_while_busy():
    rec = Recording(MODELS["float32"], gated=True)
    seqs = _seqs(6, seed=14)
    with Batcher(rec, max_batch=32, max_delay_ms=0.0) as b:
        first = rec.occupy(b, seqs[0])
        rest = [b.submit(s) for s in seqs[1:]]
        rec.gate.set()
        for f in [first] + rest:
            f.result(WAIT)
    assert [len(c) for c in rec.calls] == [1, 5]
    assert b.stats()["flushes"] == {"delay": 2}


def test_max_tokens_budget():
    """Budget 25 time steps: FIFO prefixes within it; a longer request runs alone."""
    rec = Recording(MODELS["float32"], gated=True)
    rng = np.random.default_rng(15)
    lens = [3, 10, 10, 10, 30, 5]
    seqs = [rng.uniform(-1, 1, (n, I)).astype(np.float32) for n in lens]
    with Batcher(rec, max_batch=32, max_delay_ms=0.0, max_tokens=25) as b:
        futures = [b.submit(seqs[0])]
        rec.hold()
        futures += [b.submit(s) for s in seqs[1:]]
        rec.gate.set()
        for f, s in zip(futures, seqs):
            assert_same(f.result(WAIT), MODELS["float32"](s))
        st = b.stats()
    assert rec.calls == [[3], [10, 10], [10], [30], [5]]
    assert st["flushes"] == {"delay": 2, "max_tokens": 3}
    assert st["tokens"] == sum(lens)


# ----------------------------------------------------------------------------- back-pressure
def test_back_pressure():
    rec = Recording(MODELS["float32"], gated=True)
    seqs = _seqs(6, seed=16)
    b = Batcher(rec, max_batch=1, max_delay_ms=0.0, max_queue=3)
    futures = [b.submit(seqs[0])]
    rec.hold()  # in the forward; 3 more fill the queue
    futures += [b.submit(s) for s in seqs[1:4]]
    with pytest.raises(BatcherFull, match="queue is full"):
        b.submit(seqs[4])
    with pytest.raises(BatcherFull):
        b.submit(seqs[4], block=0.05)  # waited, no room came
    blocked = []
    t = threading.Thread(target=lambda: blocked.append(b.submit(seqs[5], block=WAIT)))
    t.start()
    time.sleep(0.05)
    assert t.is_alive() and not blocked  # waiting for room
    rec.gate.set()  # the queue drains: the blocked submit gets in
    t.join(WAIT)
    futures += blocked
    assert len(futures) == 5
    for f, s in zip(futures, seqs[:4] + seqs[5:]):
        assert_same(f.result(WAIT), MODELS["float32"](s))
    b.close()
    assert b.stats()["rejected_full"] == 2


def test_async_full_raises_at_once():
    rec = Recording(MODELS["float32"], gated=True)
    seqs = _seqs(3, seed=17)
    b = Batcher(rec, max_batch=1, max_delay_ms=0.0, max_queue=1)
    first = rec.occupy(b, seqs[0])
    second = b.submit(seqs[1])

    async def go():
        with pytest.raises(BatcherFull):
            await b.apredict(seqs[2])

    asyncio.run(go())
    rec.gate.set()
    first.result(WAIT), second.result(WAIT)
    b.close()


# ----------------------------------------------------------------------------- timeouts, cancel
def test_request_timeout():
    rec = Recording(MODELS["float32"], gated=True)
    seqs = _seqs(4, seed=18)
    b = Batcher(rec, max_batch=8, max_delay_ms=0.0)
    running = rec.occupy(b, seqs[0], timeout=0.05)  # started: its timeout no longer applies
    late = b.submit(seqs[1], timeout=0.05)
    # fails while the worker is still busy (the timer thread), not when it frees up
    assert isinstance(late.exception(WAIT), RequestTimeout)
    assert not rec.gate.is_set() and not running.done()
    with pytest.raises(TimeoutError):
        b.predict(seqs[2], timeout=0.05)
    kept = b.submit(seqs[3], timeout=WAIT)
    rec.gate.set()
    assert_same(running.result(WAIT), MODELS["float32"](seqs[0]))
    assert_same(kept.result(WAIT), MODELS["float32"](seqs[3]))
    b.close()
    st = b.stats()
    assert st["timed_out"] == 2 and st["completed"] == 2
    assert sorted(map(len, rec.calls)) == [1, 1]  # the timed-out requests never ran


def test_default_timeout_from_constructor():
    rec = Recording(MODELS["float32"], gated=True)
    seqs = _seqs(2, seed=19)
    with Batcher(rec, max_delay_ms=0.0, timeout=0.05) as b:
        first = rec.occupy(b, seqs[0])
        assert isinstance(b.submit(seqs[1]).exception(WAIT), RequestTimeout)
        rec.gate.set()
        first.result(WAIT)


def test_caller_cancel_withdraws_request():
    rec = Recording(MODELS["float32"], gated=True)
    seqs = [np.ones((n, I), np.float32) for n in (1, 2, 3, 4)]
    with Batcher(rec, max_batch=8, max_delay_ms=0.0) as b:
        first = rec.occupy(b, seqs[0])
        gone, kept = b.submit(seqs[1]), b.submit(seqs[2])
        assert gone.cancel()
        assert b.stats()["queued"] == 1

        async def cancel_task():  # cancelling an awaiting task withdraws its request
            task = asyncio.ensure_future(b.apredict(seqs[3]))
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(cancel_task())
        rec.gate.set()
        first.result(WAIT), kept.result(WAIT)
        assert not first.cancel()  # finished: too late
    assert rec.calls == [[1], [3]]
    assert b.stats()["cancelled"] == 2


# ----------------------------------------------------------------------------- shutdown
def test_close_runs_pending():
    rec = Recording(MODELS["float32"], gated=True)
    seqs = _seqs(21, seed=21)
    b = Batcher(rec, max_batch=8, max_delay_ms=60_000)
    futures = [b.submit(s) for s in seqs[:8]]
    rec.hold()
    futures += [b.submit(s) for s in seqs[8:]]
    b.close(wait=False)
    with pytest.raises(BatcherClosed):
        b.submit(seqs[0])
    rec.gate.set()
    b.close()  # joins: every future has its outcome
    assert all(f.done() for f in futures)
    for f, s in zip(futures, seqs):
        assert_same(f.result(0), MODELS["float32"](s))
    assert b.stats()["completed"] == 21
    b.close()  # again: harmless


def test_close_cancel_pending():
    rec = Recording(MODELS["float32"], gated=True)
    seqs = _seqs(21, seed=22)
    b = Batcher(rec, max_batch=8, max_delay_ms=0.0)
    running = rec.occupy(b, seqs[0])
    pending = [b.submit(s) for s in seqs[1:]]
    b.close(wait=False, cancel_pending=True)
    for f in pending:
        with pytest.raises(BatcherClosed, match="closed before"):
            f.result(0)
    rec.gate.set()
    b.close()
    assert_same(running.result(0), MODELS["float32"](seqs[0]))
    st = b.stats()
    assert st["cancelled"] == 20 and st["completed"] == 1 and rec.calls == [[len(seqs[0])]]


def test_close_unblocks_waiting_submitter():
    rec = Recording(MODELS["float32"], gated=True)
    seqs = _seqs(3, seed=23)
    b = Batcher(rec, max_batch=1, max_delay_ms=0.0, max_queue=1)
    rec.occupy(b, seqs[0])
    b.submit(seqs[1])
    errors = []

    def blocked():
        try:
            b.submit(seqs[2], block=None)
        except BatcherClosed as e:
            errors.append(e)

    t = threading.Thread(target=blocked)
    t.start()
    time.sleep(0.02)
    b.close(wait=False)
    t.join(WAIT)
    assert len(errors) == 1
    rec.gate.set()
    b.close()


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("bad, err, msg", [
    (np.full((4, I), np.nan, np.float32), ValueError, "NaN"),
    (np.ones((4, I + 1), np.float32), ValueError, r"\(T, I\) = \(T, 6\)"),
    (np.ones((4, 1, I), np.float32), ValueError, "one sequence"),
    (np.ones((4, I), np.complex64), TypeError, "real numeric"),
    (np.array([["a"] * I]), TypeError, "real numeric"),
    (np.ma.masked_array(np.ones((4, I))), TypeError, "masked"),
], ids=["nan", "features", "3-D", "complex", "strings", "masked"])
def test_bad_request_fails_alone(bad, err, msg):
    model = MODELS["float32"]
    seqs = _seqs(10, seed=24)
    rec = Recording(model)
    with Batcher(rec, max_batch=32, max_delay_ms=30.0) as b:
        good = [b.submit(s) for s in seqs[:5]]
        with pytest.raises(err, match=msg):
            b.submit(bad)
        good += [b.submit(s) for s in seqs[5:]]
        for f, s in zip(good, seqs):
            assert_same(f.result(WAIT), model(s))
    assert b.stats()["invalid"] == 1 and b.stats()["failed"] == 0


def test_bad_state_fails_alone():
    model = MODELS["float32"]
    x = _seqs(1, seed=25)[0]
    h, c = _random_state(model, np.random.default_rng(0))
    with Batcher(model) as b:
        for state, err in [((h[None], c), ValueError), ((h, c * np.nan), ValueError),
                           ((h,), TypeError), ("hc", TypeError)]:
            with pytest.raises(err):
                b.submit(x, state)
        assert_same(b.predict(x, (h, c)), model(x, state=(h, c)))
        assert b.stats()["invalid"] == 4


def test_failing_batch_isolates_the_request():
    """A batch whose call fails is rerun one by one: only the culprit fails."""
    model = MODELS["float32"]
    rec = Recording(model, gated=True, fail_on_length=7)
    rng = np.random.default_rng(26)
    lens = [2, 5, 7, 3, 9]
    seqs = [rng.uniform(-1, 1, (n, I)).astype(np.float32) for n in lens]
    with Batcher(rec, max_batch=8, max_delay_ms=0.0) as b:
        first = rec.occupy(b, seqs[0])
        futures = [b.submit(s) for s in seqs[1:]]
        rec.gate.set()
        first.result(WAIT)
        for f, s, n in zip(futures, seqs[1:], lens[1:]):
            if n == 7:
                with pytest.raises(RuntimeError, match="poisoned"):
                    f.result(WAIT)
            else:
                assert_same(f.result(WAIT), model(s))
        st = b.stats()
    assert rec.calls == [[2], [5, 7, 3, 9], [5], [7], [3], [9]]
    assert st["retried_alone"] == 1 and st["failed"] == 1 and st["completed"] == 4


@pytest.mark.parametrize("kw", [dict(max_batch=0), dict(max_batch=2.5), dict(max_delay_ms=-1),
                                dict(max_delay_ms=float("nan")), dict(max_tokens=0),
                                dict(max_queue=True), dict(timeout=0), dict(num_threads=0)],
                         ids=str)
def test_bad_parameters(kw):
    with pytest.raises((ValueError, TypeError)):
        Batcher(MODELS["float32"], **kw)


# ----------------------------------------------------------------------------- load, memory
def test_no_deadlock_8_threads():
    """8 threads x 60 calls, mixed models' worth of lengths, small delays; all bit-equal."""
    model = MODELS["int8"]
    seqs = _seqs(480, seed=27, tmax=12)
    got = [None] * len(seqs)
    errors = []
    with Batcher(model, max_batch=8, max_delay_ms=0.2, max_queue=16) as b:
        def worker(k):
            try:
                for i in range(k, len(seqs), 8):
                    got[i] = b.predict(seqs[i], block=WAIT)
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        assert not any(t.is_alive() for t in threads), "deadlock"
    assert not errors
    for r, s in zip(got, seqs):
        assert_same(r, model(s))


def test_memory_bounded():
    """3 000 requests (with timeouts, so the timer's heap is exercised): the traced
    Python heap does not grow with the number of requests (bench/batcher_soak.py
    runs 100 000 and watches RSS)."""
    model = li.LSTM.random(I, 16, seed=28)
    x = np.ones((10, I), np.float32)
    with Batcher(model, max_batch=16, max_delay_ms=0.0, num_threads=1) as b:
        def burst(n):
            for f in [b.submit(x, timeout=60) for _ in range(n)]:
                f.result(WAIT)

        burst(500)  # warm-up: counters, latency window, numpy caches
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(6):
                burst(500)
            gc.collect()
            growth = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert b.stats()["completed"] == 3500
    # the latency window (10 000 floats) may fill a little more: a few hundred kB at most
    assert growth < 512 * 1024, f"grew {growth} bytes over 3 000 requests"
