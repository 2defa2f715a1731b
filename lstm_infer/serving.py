"""Serving helpers: stateful streaming over chunks of a long sequence.

`LSTM.stream()` returns a `Stream`, which carries (h, c) from one chunk to
the next, so feeding a sequence chunk by chunk gives the same outputs as one
call on the whole sequence (unidirectional models only: a reverse direction
needs the end of the sequence before its first output).
"""
from __future__ import annotations

import threading

import numpy as np


class Stream:
    """Stateful streaming inference: ``s.step(chunk) -> out_chunk``.

    A chunk is ``(T_chunk, B, I)`` (``(B, T_chunk, I)`` if batch_first) or
    ``(T_chunk, I)`` when ``batch_size`` is None (one unbatched stream).
    ``lengths`` (B,) marks how many steps of this chunk are valid per stream;
    a stream whose chunk is shorter keeps its state at its last valid step.
    One Stream is one conversation: calls on it are serialised by a lock;
    use one Stream per concurrent client (they share the model's weights).
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

    @property
    def state(self):
        """The carried (h, c), in the model's state form (None before the first chunk)."""
        return self._state

    def reset(self, state=None):
        """Forget the carried state (start a new sequence), optionally from `state`."""
        with self._lock:
            self._state = state if state is not None else self._initial

    def step(self, chunk, lengths=None):
        """Run one chunk; returns its outputs and carries the final state forward."""
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
            out, state = self._model(x, state=self._state, lengths=lengths,
                                     num_threads=self._num_threads)
            self._state = state
        return out
