"""lstm_infer.dask on a LocalCluster of 2 worker processes (skips without distributed)."""
import os

import numpy as np
import pytest

import lstm_infer as li
import lstm_infer.dask  # noqa: F401  (li.dask; needs neither dask nor distributed)


def _ref(m, x, lengths=None):
    out, _ = m(x.transpose(1, 0, 2), lengths=lengths)
    return out.transpose(1, 0, 2)


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    pytest.importorskip("dask.array")
    import logging

    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=logging.ERROR)
    c = distributed.Client(cluster, set_as_default=False)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def model():
    return li.LSTM.random(8, 32, num_layers=2, bidirectional=True, seed=3)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, 13, 8)).astype(np.float32)
    lens = rng.integers(0, 14, 48)
    lens[0] = 13
    return x, lens


def test_import_does_not_need_dask():
    import subprocess
    import sys

    code = ("import sys, lstm_infer, lstm_infer.dask; "
            "assert 'dask' not in sys.modules and 'distributed' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_score_array_equals_model(client, model, data):
    import dask.array as da

    x, _ = data
    r = li.dask.score_array(model, da.from_array(x, chunks=(10, 5, 8)), client=client)
    assert r.shape == (48, 13, 64) and r.chunks[0] == (10, 10, 10, 10, 8)
    got = r.compute(scheduler=client)
    assert got.dtype == np.float32
    assert np.array_equal(got, _ref(model, x))


def test_score_array_lengths(client, model, data):
    import dask.array as da

    x, lens = data
    ref = _ref(model, x, lens)
    for lengths in (lens, da.from_array(lens, chunks=7)):  # numpy, and chunked differently
        got = li.dask.score_array(model, da.from_array(x, chunks=12), lengths=lengths,
                                  client=client).compute(scheduler=client)
        assert np.array_equal(got, ref)


def test_score_array_batch_first_model(client, data):
    import dask.array as da

    m = li.LSTM.random(8, 16, batch_first=True, seed=5)
    x, lens = data
    got = li.dask.score_array(m, da.from_array(x, chunks=16), lengths=lens,
                              client=client).compute(scheduler=client)
    assert np.array_equal(got, m(x, lengths=lens)[0])


def test_score_bag_in_order(client, model, data):
    import dask.bag as db

    x, lens = data
    seqs = [x[i, :lens[i]] for i in range(len(lens))]
    outs = li.dask.score_bag(model, db.from_sequence(seqs, npartitions=4), client=client,
                             batch_size=5).compute(scheduler=client)
    assert len(outs) == len(seqs)
    for o, s in zip(outs, seqs):
        assert o.shape == (s.shape[0], 64)
        assert np.array_equal(o, model(s)[0])


def test_model_path_loaded_once_per_worker(client, model, data, tmp_path):
    import dask.array as da
    import dask.bag as db

    path = str(tmp_path / "m.lstm")  # tmp_path is on the local disk all workers share
    model.save(path)
    x, lens = data

    def loads():
        import lstm_infer.dask

        return lstm_infer.dask._loads

    before = client.run(loads)
    r = li.dask.score_array(None, da.from_array(x, chunks=4), lengths=lens,
                            model_path=path, client=client)
    assert np.array_equal(r.compute(scheduler=client), _ref(model, x, lens))
    assert np.array_equal(r.compute(scheduler=client), _ref(model, x, lens))  # again: cached
    seqs = [x[i, :lens[i]] for i in range(len(lens))]
    outs = li.dask.score_bag(None, db.from_sequence(seqs, npartitions=6), model_path=path,
                             client=client).compute(scheduler=client)
    assert all(np.array_equal(o, model(s)[0]) for o, s in zip(outs, seqs))
    delta = {w: n - before[w] for w, n in client.run(loads).items()}
    assert all(d <= 1 for d in delta.values()), delta  # at most once per worker process
    assert sum(delta.values()) >= 1


def test_model_is_not_pickled_into_every_task(client, model, data, monkeypatch):
    import dask.array as da

    pickles = []
    orig = li.LSTM.__reduce__

    def counting(self):
        pickles.append(1)
        return orig(self)

    monkeypatch.setattr(li.LSTM, "__reduce__", counting)
    x, _ = data
    r = li.dask.score_array(model, da.from_array(x, chunks=3), client=client)  # 16 tasks
    assert np.array_equal(r.compute(scheduler=client), _ref(model, x))
    assert len(pickles) <= 1, len(pickles)  # the one scatter


def test_no_client_graph_holds_model_once(model, data):
    pytest.importorskip("dask.array")
    import pickle

    import dask
    import dask.array as da

    x, _ = data
    r = li.dask.score_array(model, da.from_array(x, chunks=3), client=None)
    graph = dict(r.__dask_graph__())
    model_bytes = len(pickle.dumps(model))
    graph_bytes = len(pickle.dumps(graph))
    # 16 blocks of x (~5 KB each) and the model once, not 16 times
    assert graph_bytes < x.nbytes + 2 * model_bytes, (graph_bytes, model_bytes)
    # one graph key holds the model; the 16 scoring tasks depend on it
    model_keys = [k for k in graph if str(k).startswith("LSTM-")]
    assert len(model_keys) == 1, list(graph)[:5]
    with dask.config.set(scheduler="threads"):
        assert np.array_equal(r.compute(), _ref(model, x))


def test_default_threads_do_not_oversubscribe(client):
    from lstm_infer._threads import _available_cores

    host = li.dask._host_threads(client)
    assert sorted(host.values()) == [2, 2]  # 2 workers x 1 thread on this host

    def threads(host):
        import lstm_infer.dask

        return lstm_infer.dask._task_threads(None, host)

    def on_each(host):  # inside a task, where get_worker() works
        return {w: client.submit(threads, host, workers=[w], pure=False).result()
                for w in client.scheduler_info()["workers"]}

    assert set(on_each(host).values()) == {max(1, _available_cores() // 2)}
    # without the scheduler's view: cores // this worker's nthreads (1)
    assert set(on_each(None).values()) == {max(1, _available_cores())}
