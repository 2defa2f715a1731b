"""Batch scoring on a Dask cluster (``distributed``).

``score_array`` scores a dask array ``(N, T, I)`` (optionally with ``lengths`` (N,)),
``score_bag`` a dask bag of variable-length ``(T_i, I)`` sequences. Results come back in
input order, batch-first (``(N, T, D*H_out)`` / one ``(T_i, D*H_out)`` per sequence).

The model is shipped once per worker, never pickled into every task:

* ``client=`` given (or a default client exists) and no ``model_path``: the model is
  ``client.scatter(model, broadcast=True)``-ed once and the tasks get its Future;
* ``model_path=`` (a native file on storage every worker sees): each worker process loads
  it once and caches it (keyed by absolute path, mtime and size; ``_loads`` counts the
  loads in this process);
* neither (no distributed client, e.g. the threaded scheduler): the model is one graph
  key (``dask.delayed``) that every task depends on.

Threads: by default every task runs the engine with
``max(1, cores // threads_on_this_host)`` threads, where ``threads_on_this_host`` is the
sum of ``nthreads`` of the workers on the worker's host (from the scheduler, when a client
is known) or else the worker's own ``nthreads`` (``get_worker().state.nthreads``). So
``processes x threads-per-worker x engine threads`` never exceeds the cores. Pass
``num_threads=`` to override.

dask and distributed are imported inside the functions: ``import lstm_infer`` never needs
them (``pip install lstm_infer[dask]``).
"""
from __future__ import annotations

import os
import threading

import numpy as np

__all__ = ["score_array", "score_bag", "load_cached", "default_num_threads"]

# per-process cache of models loaded from a path: (abspath, mtime_ns, size) -> LSTM
_models: dict = {}
_loads = 0  # how many times this process loaded a model file (tests read it per worker)
_lock = threading.Lock()


def load_cached(path):
    """``li.load(path)`` once per process (and again only if the file changes)."""
    global _loads
    from . import load

    path = os.path.abspath(os.fspath(path))
    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size)
    with _lock:
        m = _models.get(key)
        if m is None:
            m = load(path)
            for k in [k for k in _models if k[0] == path]:  # an older version of the file
                del _models[k]
            _models[key] = m
            _loads += 1
        return m


def _cores() -> int:
    from ._threads import _available_cores

    return _available_cores()


def default_num_threads(host_threads=None) -> int:
    """Engine threads for one task on this worker: ``max(1, cores // threads)`` with
    ``threads`` = ``host_threads`` (all worker threads on this host) if given, else this
    worker's ``nthreads`` (1 outside a worker)."""
    threads = host_threads
    if not threads:
        threads = 1
        try:
            from distributed import get_worker

            w = get_worker()
            state = getattr(w, "state", None)
            threads = getattr(state, "nthreads", None) or getattr(w, "nthreads", 1) or 1
        except (ImportError, ValueError, AttributeError):
            pass
    return max(1, _cores() // int(threads))


def _task_threads(num_threads, host_threads):
    if num_threads is not None:
        return num_threads
    mine = None
    if host_threads:
        try:
            from distributed import get_worker

            mine = host_threads.get(get_worker().address)
        except (ImportError, ValueError, AttributeError):
            mine = None
    return default_num_threads(mine)


def _host_threads(client):
    """{worker address: total nthreads of the workers on its host} from the scheduler."""
    if client is None:
        return None
    try:
        workers = client.scheduler_info(n_workers=-1)["workers"]
    except TypeError:  # older distributed: no n_workers argument
        workers = client.scheduler_info()["workers"]
    except Exception:
        return None
    per_host: dict = {}
    for addr, w in workers.items():
        per_host[w.get("host")] = per_host.get(w.get("host"), 0) + int(w.get("nthreads", 1))
    return {addr: per_host[w.get("host")] for addr, w in workers.items()}


def _resolve_model(m):
    if isinstance(m, str):  # model_path
        return load_cached(m)
    return m


def _client(client):
    if client is not None:
        return client
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def _model_ref(model, client, model_path):
    """What the tasks receive: a path (loaded per worker), a scattered Future, or a
    single delayed graph key. Also returns a local model for the output metadata."""
    if model_path is not None:
        model_path = os.path.abspath(os.fspath(model_path))
        local = model if model is not None else load_cached(model_path)
        return model_path, local
    if model is None:
        raise ValueError("give a model or model_path=")
    if client is not None:
        return client.scatter(model, broadcast=True, hash=False), model
    import dask

    return dask.delayed(model, pure=True), model


def _forward_batch_first(m, xb, lengths, num_threads):
    """m on a batch-first block (B, T, I) -> (B, T, F), whatever m.config.batch_first."""
    if m.config.batch_first:
        out, _ = m(xb, lengths=lengths, num_threads=num_threads)
        return out
    out, _ = m(xb.transpose(1, 0, 2), lengths=lengths, num_threads=num_threads)
    return np.ascontiguousarray(out.transpose(1, 0, 2))


def _score_block(xb, lb, model_ref, num_threads, host_threads):
    m = _resolve_model(model_ref)
    nt = _task_threads(num_threads, host_threads)
    lens = None if lb is None else np.asarray(lb).reshape(-1).astype(np.int64)
    return _forward_batch_first(m, xb, lens, nt)


def _score_block_nolen(xb, model_ref, num_threads, host_threads):
    return _score_block(xb, None, model_ref, num_threads, host_threads)


def score_array(model, x, lengths=None, *, client=None, model_path=None, num_threads=None):
    """Score a dask array ``x`` (N, T, I), chunked along N, on the cluster.

    Returns a lazy dask array (N, T, D*H_out), batch-first and in input order: block k is
    ``model(x_k.transpose(1, 0, 2), lengths=lengths_k)`` transposed back. ``lengths``: a
    dask or numpy array (N,) of valid lengths (outputs past a length are 0). ``model`` may
    be None when ``model_path`` is given. See the module docstring for how the model is
    shipped and for the default ``num_threads``.
    """
    import dask.array as da

    x = da.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"x must be a dask array (N, T, I); got shape {x.shape}")
    x = x.rechunk({1: -1, 2: -1})
    client = _client(client)
    ref, local = _model_ref(model, client, model_path)
    if x.shape[2] != local.config.input_size:
        raise ValueError(f"x must have {local.config.input_size} features; got shape {x.shape}")
    F = local.config.output_size
    host_threads = _host_threads(client)
    chunks = (x.chunks[0], (x.shape[1],), (F,))
    kw = dict(dtype=local.dtype, chunks=chunks, meta=np.empty((0, 0, 0), local.dtype))
    if lengths is None:
        return da.map_blocks(_score_block_nolen, x, ref, num_threads, host_threads, **kw)
    lengths = da.asarray(lengths)
    if lengths.shape != (x.shape[0],):
        raise ValueError(f"lengths must have shape ({x.shape[0]},); got {lengths.shape}")
    lengths = lengths.rechunk((x.chunks[0],))
    return da.map_blocks(_score_block, x, lengths[:, None, None], ref, num_threads,
                         host_threads, **kw)


def _score_partition(seqs, model_ref, batch_size, num_threads, host_threads):
    m = _resolve_model(model_ref)
    nt = _task_threads(num_threads, host_threads)
    seqs = [np.asarray(s) for s in seqs]
    I, F = m.config.input_size, m.config.output_size
    out = [None] * len(seqs)
    # batches of similar lengths (less padding); rows are batch-independent, so this
    # changes no bit of any result
    order = sorted(range(len(seqs)), key=lambda i: seqs[i].shape[0])
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        lens = np.array([seqs[i].shape[0] for i in idx], dtype=np.int64)
        for i in idx:
            if seqs[i].ndim != 2 or seqs[i].shape[1] != I:
                raise ValueError(f"each sequence must be (T_i, {I}); got {seqs[i].shape}")
        T = int(lens.max())
        if T == 0:
            for i in idx:
                out[i] = np.zeros((0, F), m.dtype)
            continue
        dt = np.result_type(*[seqs[i].dtype for i in idx])
        xb = np.zeros((len(idx), T, I), dtype=dt)
        for j, i in enumerate(idx):
            xb[j, :lens[j]] = seqs[i]
        ob = _forward_batch_first(m, xb, lens, nt)
        for j, i in enumerate(idx):
            out[i] = np.ascontiguousarray(ob[j, :lens[j]])
    return out


def score_bag(model, bag, *, client=None, model_path=None, batch_size=64, num_threads=None):
    """Score a dask bag of variable-length sequences (each a (T_i, I) array).

    Per partition the sequences are batched ``batch_size`` at a time (padded to the
    longest of the batch, with ``lengths``), and each output is sliced back to its own
    length: returns a bag of (T_i, D*H_out) arrays in the input order.
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size!r}")
    client = _client(client)
    ref, _ = _model_ref(model, client, model_path)
    return bag.map_partitions(_score_partition, ref, int(batch_size), num_threads,
                              _host_threads(client))
