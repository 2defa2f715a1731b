"""Serving helpers: stateful streaming, and a dynamic batcher for services.

`LSTM.stream()` returns a `Stream`, which carries (h, c) from one chunk to
the next, so feeding a sequence chunk by chunk gives the same outputs as one
call on the whole sequence (unidirectional models only: a reverse direction
needs the end of the sequence before its first output).

`Batcher(model)` takes single sequences of different lengths from many
threads and asyncio tasks, gathers them for at most ``max_delay_ms`` (or
``max_batch`` sequences, or ``max_tokens`` time steps), runs one batched
forward with ``lengths`` and hands each caller its own result, the same as
``model(x)`` on that sequence alone (see the Batcher's docstring and
docs/serving.md for what is bit-identical).

Design of the Batcher
---------------------
One lock guards the queue (a deque, FIFO) and the counters; three conditions
on it wake the worker (new work, closing), the submitters waiting for room,
and the timer. A request's life is QUEUED -> OUT (taken into a batch, timed out,
cancelled by its caller or by ``close``); every move out
of QUEUED happens under the lock and claims the future with
``set_running_or_notify_cancel``, so a request is claimed exactly once and a
caller's ``Future.cancel()`` either wins (the request never runs) or loses
(it runs and completes). Results and exceptions are set outside the lock
(``Future`` callbacks run there and may call back into the batcher). Dropped
requests stay in the deque until the worker pops them, with their data
released; the counters (queue depth, queued time steps) count live ones.

Threads: the worker runs one batch at a time (the forward uses
``num_threads`` cores and releases the GIL; requests queue up meanwhile and
form the next batch); the timer fails requests whose ``timeout`` passes
before they are taken, while the worker may be busy.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import heapq
import itertools
import math
import threading
import time

import numpy as np

from . import _kernels, _threads
from ._validate import MAX_DIM, all_finite

class Stream:
    """Stateful streaming inference: ``s.step(chunk) -> out_chunk``.

    A chunk is ``(T_chunk, B, I)`` (``(B, T_chunk, I)`` if batch_first) or
    ``(T_chunk, I)`` when ``batch_size`` is None (one unbatched stream).
    ``lengths`` (B,) marks how many steps of this chunk are valid per stream;
    a stream whose chunk is shorter keeps its state at its last valid step.
    One Stream is one conversation: calls on it are serialised by a lock;
    use one Stream per concurrent client (they share the model's weights).

    Fast path: a chunk without ``lengths`` that is a C-contiguous array of the model's
    dtype (float32 models, any quantization) runs on a prepared ``_kernels.CallPlan``
    -- validated once for its shape, the state kept in the plan's own buffers, nothing
    allocated per call but the result (nothing with ``out=``). Anything else takes the
    general path (``model.forward``), with the same results bit for bit. The plan's
    thread count is the stream's ``num_threads`` (or the default when it is built: at
    the first chunk of a length, and after ``reset``).
    """

    def __init__(self, model, batch_size=1, state=None, num_threads=None):
        cfg = model.config
        if any(l.bidirectional for l in cfg.layers):
            raise ValueError("streaming needs a unidirectional model: a reverse direction "
                             "reads the sequence from its end")
        if batch_size is not None and (isinstance(batch_size, bool) or
                                       not isinstance(batch_size, (int, np.integer)) or
                                       batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None; got {batch_size!r}")
        self._model = model
        self._batch = batch_size
        self._num_threads = num_threads
        self._lock = threading.Lock()
        self._initial = state
        self._state = state
        self._plan = None       # the fast path's CallPlan; while set, it holds the state
        self._dtype = model.dtype
        self._fast_ok = model.dtype == np.float32  # float64 runs BLAS: the general path
        self._layout = "unbatched" if batch_size is None else (
            "batch_first" if cfg.batch_first else "time_major")
        self._ndim = 2 if batch_size is None else 3
        self._t_axis = 1 if self._layout == "batch_first" else 0
        if state is not None:   # validated now, not at the first chunk
            model._check_state(state, batch_size or 1, batch_size is None)

    @property
    def state(self):
        """The carried (h, c), in the model's state form (None before the first chunk)."""
        with self._lock:
            self._sync_state()
            return self._state

    def _sync_state(self):
        """Take the state back from the fast path's plan (then drop the plan)."""
        if self._plan is not None:
            hs, cs = self._plan.state
            self._state = self._model._state_form([h.copy() for h in hs],
                                                  [c.copy() for c in cs], self._batch is None)
            self._plan = None

    def reset(self, state=None):
        """Forget the carried state (start a new sequence), optionally from `state`."""
        if state is not None:
            self._model._check_state(state, self._batch or 1, self._batch is None)
        with self._lock:
            self._plan = None
            self._state = state if state is not None else self._initial

    def step(self, chunk, lengths=None, *, out=None):
        """Run one chunk; returns its outputs and carries the final state forward.

        ``out``: an array of the output's shape and the model's dtype to write them to
        (returned); C-contiguous keeps the call on the fast path."""
        if lengths is None:
            with self._lock:
                plan = self._plan
                res = None if plan is None else plan.try_run(chunk, out)
                # a plan is (re)built when a chunk of a new length could use one
                if res is None and self._fast_ok and type(chunk) is np.ndarray and \
                        chunk.dtype == self._dtype and chunk.ndim == self._ndim and \
                        (plan is None or plan.T != chunk.shape[self._t_axis]):
                    plan = self._fast_plan(chunk.shape[self._t_axis])
                    res = None if plan is None else plan.try_run(chunk, out)
                if res is not None:
                    return res
        res = self._step(chunk, lengths)
        if out is not None:
            np.copyto(out, res)
            return out
        return res

    def _fast_plan(self, T):
        """The fast path's plan for chunks of T steps (under the lock), or None when the
        shape or model does not allow it (the general path then runs, or reports)."""
        B = self._batch or 1
        if not 0 < T <= MAX_DIM or (self._layout == "batch_first" and T > 1 and B > 1):
            return None  # (B, T, I) chunks are (T, B, I)-ordered only when T or B is 1
        self._sync_state()
        try:
            plan = self._model._call_plan(T, B, self._state, self._batch is None,
                                          self._num_threads)
        except ValueError:
            return None
        plan.layout = _kernels.LAYOUTS[self._layout]
        self._plan = plan
        return plan

    def _step(self, chunk, lengths):
        x = np.asarray(chunk)
        want = 2 if self._batch is None else 3
        if x.ndim != want:
            shape = "(T_chunk, I)" if self._batch is None else \
                ("(B, T_chunk, I)" if self._model.config.batch_first else "(T_chunk, B, I)")
            raise ValueError(f"chunk must be {want}-D {shape}; got shape {x.shape}")
        if self._batch is not None:
            b = x.shape[0 if self._model.config.batch_first else 1]
            if b != self._batch:
                raise ValueError(f"chunk must have batch size {self._batch} (stream's "
                                 f"batch_size); got {b}")
        with self._lock:
            self._sync_state()
            out, state = self._model(x, state=self._state, lengths=lengths,
                                     num_threads=self._num_threads)
            self._state = state
        return out


# ----------------------------------------------------------------------------- batcher
class BatcherError(RuntimeError):
    """Base class of the Batcher's own errors."""


class BatcherFull(BatcherError):
    """The Batcher's queue holds ``max_queue`` requests: back off and retry (HTTP 503)."""


class BatcherClosed(BatcherError):
    """The Batcher is closed: no new requests, and (``cancel_pending=True``) the
    requests still queued at ``close`` fail with this."""


class RequestTimeout(TimeoutError):
    """A request was not taken into a batch within its ``timeout`` (it never ran)."""


def _timed_out():
    return RequestTimeout("the request was not started within its timeout")


_QUEUED, _OUT = 0, 1  # a request waiting in the queue / taken out of it
_STATS_WINDOW = 10_000  # latencies kept for the percentiles in stats()


class _Request:
    __slots__ = ("x", "T", "state", "future", "t_submit", "deadline", "status")

    def __init__(self, x, state, future, t_submit, deadline):
        self.x, self.T, self.state, self.future = x, x.shape[0], state, future
        self.t_submit, self.deadline, self.status = t_submit, deadline, _QUEUED

    def release(self):
        """Drop the data (the deque and the timer's heap may hold the request a while)."""
        self.x = self.state = self.future = None


def _positive_int(v, name, none_ok=False):
    if v is None and none_ok:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer{' or None' if none_ok else ''}; "
                         f"got {v!r}")
    return int(v)


def _seconds(v, name, none_ok=True, zero_ok=False, unit="seconds"):
    if v is None and none_ok:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or \
            math.isnan(v) or v < 0 or (v == 0 and not zero_ok):
        raise ValueError(f"{name} must be a {'non-negative' if zero_ok else 'positive'} number "
                         f"of {unit}{' or None' if none_ok else ''}; got {v!r}")
    return float(v)


class Batcher:
    """Dynamic batching of single-sequence requests into batched forward calls.

    ``b.submit(x)`` (from any thread) or ``await b.apredict(x)`` (from asyncio)
    queues one sequence ``x`` of shape ``(T, I)``; a worker thread gathers the
    queued requests into one call ``model(X, lengths=..., state=...)`` (padded
    to the longest) and gives each caller its own ``(out, (h_n, c_n))``: ``out``
    ``(T, F)`` and the final states in the unbatched form of ``model(x)``
    (uniform stacks: ``(D*L, H_out)``, ``(D*L, H)``; else one ``(D, H_k)`` array
    per layer). They are copies: a result never holds the batch's buffers.

    A batch is run when it has ``max_batch`` requests, or the queued time steps
    reach ``max_tokens``, or ``max_delay_ms`` has passed since its oldest request
    was submitted (at once if the worker was busy that long), or the batcher is
    closing. Requests are taken first in, first out.

    Parameters
    ----------
    model : LSTM
        Shared, never modified (models are immutable and thread-safe).
    max_batch : int
        Most sequences per forward call.
    max_delay_ms : float
        Longest wait for more requests, counted from the oldest one's submit;
        0 runs whatever is queued as soon as the worker is free.
    max_tokens : int, optional
        Budget of time steps per call (sum of the requests' lengths; the call
        pads to the longest). A request longer than the budget runs alone.
    max_queue : int
        Most requests waiting (not yet in a batch). When full, ``submit`` raises
        `BatcherFull` at once, or after waiting up to ``block`` seconds for room.
    num_threads : int, optional
        Threads of each forward call (default: ``li.set_num_threads`` / all
        cores, shared with the other calls in flight in the process).
    timeout : float, optional
        Default per-request timeout in seconds (None: no limit): a request not
        taken into a batch within it fails with `RequestTimeout` (a subclass of
        TimeoutError); one already in a batch completes.

    Results are bit-identical to ``model(x, state=state)`` on the sequence
    alone for float32, int8, int8-weights, float16 and bfloat16 models on the
    AVX2 and portable kernels; not (yet) for projected models in batches of
    more than 8 (within 1e-6) nor on AVX-512, and not for float64 models, which
    use BLAS (docs/serving.md, "Determinism").

    A request is validated when it is submitted (shape, dtype, features, NaN or
    infinity, state): a bad one raises there (ValueError / TypeError) and never
    joins a batch. Should a batched call fail anyway, each of its requests is
    rerun alone, so only the one that fails gets the error.

    ``close()`` (or leaving a ``with`` block) runs what is queued and stops the
    worker; ``close(cancel_pending=True)`` fails the queued requests with
    `BatcherClosed` instead. No request is left without an outcome. Future
    callbacks (and the wake-ups of ``apredict``) run on the worker thread:
    keep them short.
    """

    def __init__(self, model, *, max_batch=32, max_delay_ms=2.0, max_tokens=None,
                 max_queue=1024, num_threads=None, timeout=None):
        self._model = model
        cfg = model.config
        self._batch_first = cfg.batch_first
        self._input_size = cfg.input_size
        self._dtype = np.dtype(model.dtype)
        # per layer (directions, H_out, H): the shapes of a stacked state
        self._dims = [(l.num_directions, l.output_size, l.hidden_size) for l in cfg.layers]
        self.max_batch = _positive_int(max_batch, "max_batch")
        self.max_delay_ms = _seconds(max_delay_ms, "max_delay_ms", none_ok=False, zero_ok=True,
                                     unit="milliseconds")
        self.max_tokens = _positive_int(max_tokens, "max_tokens", none_ok=True)
        self.max_queue = _positive_int(max_queue, "max_queue")
        self.num_threads = None if num_threads is None else _threads.check_num_threads(num_threads)
        self.timeout = _seconds(timeout, "timeout")
        self._delay = self.max_delay_ms / 1000.0

        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)   # the worker: new request, closing
        self._room = threading.Condition(self._lock)   # blocked submitters: room, closing
        self._clock = threading.Condition(self._lock)  # the timer: earlier deadline, stop
        self._queue = collections.deque()
        self._live = 0            # QUEUED requests in the deque
        self._queued_tokens = 0   # their time steps
        self._deadlines = []      # heap of (deadline, seq, request) for the timer
        self._seq = itertools.count()
        self._closing = False
        self._stopped = False
        self._counts = collections.Counter()
        self._batch_sizes = collections.Counter()
        self._flushes = collections.Counter()
        self._latencies = collections.deque(maxlen=_STATS_WINDOW)
        self._worker = threading.Thread(target=self._run, name="lstm_infer-batcher", daemon=True)
        self._timer = threading.Thread(target=self._run_timer, name="lstm_infer-batcher-timer",
                                       daemon=True)
        self._worker.start()
        self._timer.start()

    # ------------------------------------------------------------------ public API
    @property
    def model(self):
        return self._model

    @property
    def closed(self) -> bool:
        return self._closing

    def submit(self, x, state=None, *, timeout=None, block=0.0) -> concurrent.futures.Future:
        """Queue one sequence; returns a Future of ``(out, (h_n, c_n))``.

        Parameters
        ----------
        x : array_like (T, I)
            One sequence (whatever ``batch_first``); converted to the model's
            dtype and copied now (the caller may reuse its buffer).
        state : (h0, c0), optional
            This sequence's initial state in the unbatched form of ``model(x,
            state=...)``: ``(D*L, H_out)``, ``(D*L, H)`` for uniform stacks, else
            lists of one ``(D, H_k)`` array per layer. Default zeros.
        timeout : float, optional
            Seconds this request may wait to be taken into a batch (default: the
            batcher's ``timeout``); then the future fails with `RequestTimeout`.
        block : float or None
            When the queue is full: seconds to wait for room (0, the default:
            raise `BatcherFull` at once; None: wait as long as it takes).

        Raises ValueError / TypeError (bad request, checked here), `BatcherFull`,
        `BatcherClosed`. ``future.cancel()`` withdraws a request not yet in a batch.
        """
        x, state = self._validate(x, state)
        timeout = self.timeout if timeout is None else _seconds(timeout, "timeout")
        block = _seconds(block, "block", zero_ok=True)
        future = concurrent.futures.Future()
        with self._lock:
            if not self._closing and self._live >= self.max_queue and block != 0:
                end = None if block is None else time.monotonic() + block
                while not self._closing and self._live >= self.max_queue:
                    left = None if end is None else end - time.monotonic()
                    if left is not None and left <= 0:
                        break
                    self._room.wait(left)
            if self._closing:
                raise BatcherClosed("the batcher is closed")
            if self._live >= self.max_queue:
                self._counts["rejected_full"] += 1
                raise BatcherFull(f"the batcher's queue is full ({self.max_queue} requests "
                                  f"waiting); retry later")
            now = time.monotonic()
            req = _Request(x, state, future, now, None if timeout is None else now + timeout)
            self._queue.append(req)
            self._live += 1
            self._queued_tokens += req.T
            self._counts["submitted"] += 1
            if req.deadline is not None:
                heap = self._deadlines
                if len(heap) > 2 * self._live + 1024:  # mostly finished requests: prune
                    heap[:] = [e for e in heap if e[2].status == _QUEUED]
                    heapq.heapify(heap)
                first = not heap or req.deadline < heap[0][0]
                heapq.heappush(heap, (req.deadline, next(self._seq), req))
                if first:
                    self._clock.notify()
            self._work.notify()
        future.add_done_callback(lambda f, r=req: self._on_done(r, f))
        return future

    def predict(self, x, state=None, *, timeout=None, block=0.0):
        """``submit(...).result()``: wait for this sequence's ``(out, (h_n, c_n))``.

        ``timeout`` limits the wait to be taken into a batch (then `RequestTimeout`);
        once in a batch the call waits for it to finish."""
        return self.submit(x, state, timeout=timeout, block=block).result()

    __call__ = predict

    async def apredict(self, x, state=None, *, timeout=None):
        """``await`` this sequence's ``(out, (h_n, c_n))`` without blocking the event loop.

        A full queue raises `BatcherFull` at once (never waits on the loop's thread);
        cancelling the awaiting task withdraws the request if it has not started."""
        return await asyncio.wrap_future(self.submit(x, state, timeout=timeout))

    def stream(self, state=None, *, timeout=None):
        """A `BatchedStream`: one conversation whose chunks go through this batcher,
        carrying (h, c) from chunk to chunk (unidirectional models)."""
        return BatchedStream(self, state=state, timeout=timeout)

    def close(self, wait=True, *, cancel_pending=False):
        """Stop taking requests. The queued ones run (``cancel_pending=False``) or fail
        with `BatcherClosed`; ``wait`` joins the worker (every future then has its
        outcome). Calling it again is harmless."""
        cancelled = []
        with self._lock:
            self._closing = True
            if cancel_pending:
                cancelled = [r for r in self._queue if r.status == _QUEUED and self._claim(r)]
            self._work.notify_all()
            self._room.notify_all()
            self._clock.notify_all()
        self._fail(cancelled, lambda: BatcherClosed("the batcher was closed before this "
                                                    "request started"), "cancelled")
        if wait and threading.current_thread() not in (self._worker, self._timer):
            self._worker.join()
            self._timer.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close(wait=True)

    def stats(self) -> dict:
        """Counters since creation: ``submitted``, ``completed``, ``failed``,
        ``timed_out``, ``cancelled`` (by close or by the caller), ``rejected_full``,
        ``invalid``; ``batches``, ``batch_sizes`` {size: count}, ``mean_batch_size``,
        ``flushes`` {reason: count} (``"max_batch"``, ``"max_tokens"``, ``"delay"``,
        ``"close"``), ``tokens`` (valid time steps run), ``padded_tokens`` (T_max x B
        summed), ``retried_alone`` (batches rerun one by one after an error), ``busy_s``
        (seconds the worker spent running batches: forward calls and slicing);
        ``queued`` and ``queued_tokens`` now; ``latency_p50_ms`` / ``latency_p99_ms``
        (submit to result, last 10 000 completed requests; None before any)."""
        with self._lock:
            d = {k: self._counts[k] for k in
                 ("submitted", "completed", "failed", "timed_out", "cancelled",
                  "rejected_full", "invalid", "batches", "tokens", "padded_tokens",
                  "retried_alone", "busy_s")}
            d["batch_sizes"] = dict(sorted(self._batch_sizes.items()))
            d["flushes"] = dict(self._flushes)
            d["queued"], d["queued_tokens"] = self._live, self._queued_tokens
            lat = np.array(self._latencies) if self._latencies else None
        n = sum(s * c for s, c in d["batch_sizes"].items())
        d["mean_batch_size"] = n / d["batches"] if d["batches"] else 0.0
        d["latency_p50_ms"] = None if lat is None else float(np.percentile(lat, 50) * 1e3)
        d["latency_p99_ms"] = None if lat is None else float(np.percentile(lat, 99) * 1e3)
        return d

    def __repr__(self):
        return (f"Batcher({self._model!r}, max_batch={self.max_batch}, max_delay_ms="
                f"{self.max_delay_ms}, max_tokens={self.max_tokens}, max_queue="
                f"{self.max_queue}{', closed' if self._closing else ''})")

    # ------------------------------------------------------------------ validation
    def _validate(self, x, state):
        """The model's own checks on one unbatched request, before it is queued."""
        try:
            if isinstance(x, np.ma.MaskedArray):
                raise TypeError("x is a numpy masked array: pass x.filled(0) (the valid "
                                "part of one sequence only)")
            x = np.asarray(x)
            if x.dtype.kind not in "fiub":
                raise TypeError(f"x must be a real numeric array; got dtype {x.dtype}")
            if x.ndim != 2 or x.shape[1] != self._input_size:
                raise ValueError(f"x must be one sequence of shape (T, I) = (T, "
                                 f"{self._input_size}); got shape {x.shape}")
            if x.shape[0] > MAX_DIM:
                raise ValueError(f"x has {x.shape[0]} time steps: at most {MAX_DIM}")
            x = np.array(x, dtype=self._dtype, order="C", copy=True)  # ours from now on
            if x.size and not all_finite(x):
                raise ValueError("x contains NaN or infinity")
            if state is not None:
                # the model's check of an unbatched state -> per layer (D, 1, H_k) parts
                state = self._model._check_state(state, 1, True)
        except (TypeError, ValueError):
            with self._lock:
                self._counts["invalid"] += 1
            raise
        return x, state

    # ------------------------------------------------------------------ queue moves (lock held)
    def _claim(self, req) -> bool:
        """QUEUED -> out of the queue; True if this caller now owns the future (False:
        its caller cancelled it first: counted, released)."""
        req.status = _OUT
        self._live -= 1
        self._queued_tokens -= req.T
        self._room.notify()
        if req.future.set_running_or_notify_cancel():
            return True
        self._counts["cancelled"] += 1
        req.release()
        return False

    def _on_done(self, req, future):
        """Done callback: a caller's cancel() of a queued request leaves the counts."""
        if future.cancelled():
            with self._lock:
                if req.status == _QUEUED:
                    self._claim(req)  # False (cancelled): counted and released

    def _fail(self, reqs, error, counter):
        """Fail each request with its own ``error()`` (an exception instance is not
        shared: its traceback would be, between the callers' threads)."""
        for req in reqs:
            req.future.set_exception(error())
            req.release()
        if reqs:
            with self._lock:
                self._counts[counter] += len(reqs)

    # ------------------------------------------------------------------ the worker
    def _run(self):
        batch = []
        try:
            while True:
                batch, reason, expired = self._gather()
                self._fail(expired, _timed_out, "timed_out")
                if batch is None:
                    return
                if batch:
                    self._execute(batch, reason)
                batch = []
        except BaseException as e:  # never leave a future hanging
            self._fail([r for r in batch if r.future is not None and not r.future.done()],
                       lambda: e, "failed")
            self.close(wait=False, cancel_pending=True)
            raise
        finally:
            with self._lock:
                self._stopped = True
                self._clock.notify_all()

    def _head(self):
        """The oldest QUEUED request (dropped ones before it are popped), or None."""
        q = self._queue
        while q and q[0].status != _QUEUED:
            q.popleft()
        return q[0] if q else None

    def _gather(self):
        """Wait for a batch; returns (requests, flush reason, expired requests), or
        (None, ...) when closed and drained."""
        with self._lock:
            while True:
                head = self._head()
                if head is None:
                    if self._closing:
                        return None, None, []
                    self._work.wait()
                    continue
                if self._closing:
                    reason = "close"
                elif self._live >= self.max_batch:
                    reason = "max_batch"
                elif self.max_tokens is not None and self._queued_tokens >= self.max_tokens:
                    reason = "max_tokens"
                else:
                    left = head.t_submit + self._delay - time.monotonic()
                    if left > 0:
                        self._work.wait(left)
                        continue
                    reason = "delay"
                break
            batch, expired, tokens, now = [], [], 0, time.monotonic()
            q = self._queue
            while q and len(batch) < self.max_batch:
                req = q[0]
                if req.status != _QUEUED:
                    q.popleft()
                    continue
                if batch and self.max_tokens is not None and tokens + req.T > self.max_tokens:
                    break
                q.popleft()
                if not self._claim(req):
                    continue
                if req.deadline is not None and req.deadline <= now:
                    expired.append(req)
                else:
                    batch.append(req)
                    tokens += req.T
            return batch, reason, expired

    def _execute(self, batch, reason):
        start = time.monotonic()
        try:
            results = self._forward(batch)
            retried = False
        except Exception:  # isolate the failing request: each alone
            retried = True
            results = []
            for req in batch:
                try:
                    results.append(self._forward([req])[0])
                except Exception as e:
                    results.append(e)
        done = time.monotonic()
        T = max(r.T for r in batch)
        with self._lock:
            c = self._counts
            c["batches"] += 1
            c["retried_alone"] += retried
            c["tokens"] += sum(r.T for r in batch)
            c["padded_tokens"] += T * len(batch)
            c["busy_s"] += done - start
            self._batch_sizes[len(batch)] += 1
            self._flushes[reason] += 1
            for req, res in zip(batch, results):
                ok = not isinstance(res, Exception)
                c["completed" if ok else "failed"] += 1
                if ok:
                    self._latencies.append(done - req.t_submit)
        for req, res in zip(batch, results):
            future = req.future
            req.release()
            if isinstance(res, Exception):
                future.set_exception(res)
            else:
                future.set_result(res)

    def _forward(self, batch):
        """One model call on the batch -> per request (out, (h_n, c_n)), copies."""
        B, T = len(batch), max(r.T for r in batch)
        x = np.zeros((T, B, self._input_size), dtype=self._dtype)
        for i, r in enumerate(batch):
            x[:r.T, i] = r.x
        lengths = np.array([r.T for r in batch], dtype=np.intp)
        state = None
        if any(r.state is not None for r in batch):
            hs = [np.zeros((D, B, Hout), dtype=self._dtype) for D, Hout, _ in self._dims]
            cs = [np.zeros((D, B, H), dtype=self._dtype) for D, _, H in self._dims]
            for i, r in enumerate(batch):
                if r.state is not None:
                    for k, (h0, c0) in enumerate(zip(*r.state)):
                        hs[k][:, i] = h0[:, 0]
                        cs[k][:, i] = c0[:, 0]
            state = (hs, cs)  # per-layer lists: accepted for every stack
        out, (h_n, c_n) = self._model(x.transpose(1, 0, 2) if self._batch_first else x,
                                      state=state, lengths=lengths,
                                      num_threads=self.num_threads)
        if self._batch_first:
            out = out.transpose(1, 0, 2)
        results = []
        for i, r in enumerate(batch):
            if isinstance(h_n, list):
                h, c = [a[:, i].copy() for a in h_n], [a[:, i].copy() for a in c_n]
            else:
                h, c = h_n[:, i].copy(), c_n[:, i].copy()
            results.append((out[:r.T, i].copy(), (h, c)))
        return results

    # ------------------------------------------------------------------ the timer
    def _run_timer(self):
        """Fail queued requests whose timeout passes (the worker may be busy)."""
        while True:
            expired = []
            with self._lock:
                while True:
                    now = time.monotonic()
                    heap = self._deadlines
                    while heap and heap[0][0] <= now:
                        req = heapq.heappop(heap)[2]
                        if req.status == _QUEUED and self._claim(req):
                            expired.append(req)
                    if expired:
                        break
                    if self._stopped:
                        return
                    self._clock.wait(heap[0][0] - now if heap else None)
            self._fail(expired, _timed_out, "timed_out")


class BatchedStream(Stream):
    """One streaming conversation through a `Batcher`: ``step(chunk)`` submits the
    chunk ``(T_chunk, I)`` with the carried (h, c) and carries the new one forward,
    so a chunked sequence gives the outputs of one call on it (unidirectional
    models; the state is in the unbatched form). Chunks of one stream run one
    after another (a lock); many streams share the batcher's batches."""

    def __init__(self, batcher, state=None, timeout=None):
        super().__init__(batcher.model, batch_size=None, state=state)
        self._batcher = batcher
        self._timeout = timeout

    def step(self, chunk):
        """Run one chunk (T_chunk, I) through the batcher; returns its outputs."""
        with self._lock:
            out, self._state = self._batcher.predict(chunk, self._state, timeout=self._timeout)
        return out
