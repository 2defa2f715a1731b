"""examples/serve.py over real HTTP (urllib, loopback): answers equal direct model
calls bit for bit, bad input gets 4xx with a message, a full batcher 503, /metrics
counts, and the server shuts down cleanly (in a thread, and as a subprocess on SIGTERM)."""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

import lstm_infer as li
from test_batcher import WAIT, Recording

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "examples")
I, H = 8, 16


def _load_example():
    spec = importlib.util.spec_from_file_location("lstm_infer_example_serve",
                                                  os.path.join(EXAMPLES, "serve.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


serve = _load_example()


class Running:
    """make_server(...) serving in a thread on an ephemeral localhost port."""

    def __init__(self, model, **kw):
        self.server = serve.make_server(model, "127.0.0.1", 0, quiet=True, **kw)
        self.url = "http://%s:%d" % self.server.server_address[:2]
        # a short poll interval: shutdown() waits for the loop's next poll
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,),
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.server.close()
        self.thread.join(WAIT)
        assert not self.thread.is_alive()

    def request(self, path, body=None, raw=False):
        """(status, JSON answer) of GET (body None) or POST."""
        data = body if raw or body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data,
                                     method="GET" if body is None else "POST")
        try:
            with urllib.request.urlopen(req, timeout=WAIT) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())


@pytest.fixture
def model():
    return li.LSTM.random(I, H, num_layers=2, seed=0)


@pytest.fixture
def running(model):
    r = Running(model, max_batch=8, max_delay_ms=2.0, max_body=64 * 1024, max_steps=50)
    yield r
    r.close()


def test_concurrent_predictions_match_the_model(model, running):
    rng = np.random.default_rng(1)
    seqs = [rng.uniform(-3, 3, (int(rng.integers(1, 40)), I)).astype(np.float32)
            for _ in range(48)]
    states = [None if k % 4 else (rng.uniform(-1, 1, (2, H)).astype(np.float32),
                                  rng.uniform(-1, 1, (2, H)).astype(np.float32))
              for k in range(48)]
    answers = [None] * 48

    def client(k):
        for i in range(k, 48, 12):
            body = {"x": seqs[i].tolist()}
            if states[i] is not None:
                body["state"] = {"h": states[i][0].tolist(), "c": states[i][1].tolist()}
            answers[i] = running.request("/predict", body)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    for x, st, (status, ans) in zip(seqs, states, answers):
        assert status == 200, ans
        out, (h, c) = model(x, state=st)
        # float32 -> JSON double -> float32 is exact
        assert np.array_equal(np.array(ans["out"], np.float32), out)
        assert np.array_equal(np.array(ans["h_n"], np.float32), h)
        assert np.array_equal(np.array(ans["c_n"], np.float32), c)
    status, m = running.request("/metrics")
    assert status == 200
    assert m["requests"] == 48 and m["errors"] == 0 and m["responses"] == {"200": 48}
    assert 1 <= m["batches"] <= 48 and m["mean_batch_size"] >= 1
    assert sum(int(k) * v for k, v in m["batch_sizes"].items()) == 48
    assert m["latency_ms"]["p50"] <= m["latency_ms"]["p99"]
    assert m["model"]["input_size"] == I


@pytest.mark.parametrize("body, msg", [
    (b"{not json", "bad JSON"),
    (b'[1, 2]', "expected a JSON object"),
    (b'{"y": 1}', "expected a JSON object"),
    (json.dumps({"x": [[1.0] * (I + 1)]}).encode(), "shape (T, I) = (T, 8)"),
    (json.dumps({"x": [1.0] * I}).encode(), "shape (T, I)"),
    (json.dumps({"x": [[1.0] * I, [1.0]]}).encode(), "rectangular"),
    (json.dumps({"x": [["1"] * I]}).encode(), "array of numbers"),
    (json.dumps({"x": [[True] * I]}).encode(), "array of numbers"),
    (b'{"x": [[NaN' + b", 1" * (I - 1) + b"]]}", "NaN or infinity"),
    (b'{"x": [[1e999' + b", 1" * (I - 1) + b"]]}", "NaN or infinity"),
    (json.dumps({"x": [[0.0] * I] * 51}).encode(), "at most 50"),
    (json.dumps({"x": [[0.0] * I], "state": [1, 2]}).encode(), "state must be"),
    (json.dumps({"x": [[0.0] * I], "state": {"h": [[0.0] * H] * 2,
                                             "c": [[0.0] * H]}}).encode(), "c0"),
], ids=["json", "list", "no-x", "features", "1-D", "ragged", "strings", "bools", "nan",
        "inf", "too-long", "state-form", "state-shape"])
def test_bad_input_400(running, body, msg):
    status, ans = running.request("/predict", body, raw=True)
    assert status == 400 and msg in ans["error"], ans
    assert running.request("/predict", {"x": [[0.5] * I]})[0] == 200  # still serving


def test_other_statuses(running):
    status, ans = running.request("/predict", b"x" * (64 * 1024 + 1), raw=True)
    assert status == 413 and "limit" in ans["error"]
    assert running.request("/nowhere")[0] == 404
    assert running.request("/predict")[0] == 405
    assert running.request("/healthz") == (200, {"ok": True})
    status, m = running.request("/metrics")
    assert m["responses"] == {"200": 1, "404": 1, "405": 1, "413": 1} and m["errors"] == 3


def test_full_batcher_503(model):
    rec = Recording(model, gated=True)
    r = Running(rec, max_batch=1, max_delay_ms=0.0, max_queue=1)
    body = {"x": [[0.1] * I] * 3}
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(r.request("/predict", body)))
               for _ in range(2)]
    try:
        threads[0].start()
        rec.hold()             # one request in the (held) forward
        threads[1].start()     # one waits in the queue
        while r.server.batcher.stats()["queued"] < 1:
            threading.Event().wait(0.005)
        status, ans = r.request("/predict", body)
        assert status == 503 and "queue is full" in ans["error"]
    finally:
        rec.gate.set()
        for t in threads:
            t.join(WAIT)
        r.close()
    assert [s for s, _ in answers] == [200, 200]


def test_subprocess_serves_and_stops_on_sigterm():
    """The script itself: --random, --port 0, one answer equal to the same random model,
    and a clean exit on SIGTERM."""
    proc = subprocess.Popen([sys.executable, os.path.join(EXAMPLES, "serve.py"), "--random",
                             f"{I},{H}", "--port", "0", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "serving" in line, line + proc.stderr.read()
        url = line.split(" on ")[1].split()[0]
        x = np.random.default_rng(2).uniform(-1, 1, (5, I)).astype(np.float32)
        req = urllib.request.Request(url + "/predict", json.dumps({"x": x.tolist()}).encode())
        with urllib.request.urlopen(req, timeout=WAIT) as resp:
            ans = json.loads(resp.read())
        assert np.array_equal(np.array(ans["out"], np.float32), li.LSTM.random(I, H)(x)[0])
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=WAIT)
        assert proc.returncode == 0, err
        assert "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_close_answers_the_request_in_flight(model):
    rec = Recording(model, gated=True)
    r = Running(rec, max_delay_ms=0.0)
    answers = []
    client = threading.Thread(target=lambda: answers.append(
        r.request("/predict", {"x": [[0.2] * I] * 4})))
    client.start()
    rec.hold()
    closer = threading.Thread(target=r.close)
    closer.start()             # stops accepting; waits for the batcher and the answer
    rec.gate.set()
    closer.join(WAIT)
    client.join(WAIT)
    assert not closer.is_alive() and answers and answers[0][0] == 200
    assert np.array_equal(np.array(answers[0][1]["out"], np.float32),
                          model(np.full((4, I), 0.2, np.float32))[0])
