"""An example LSTM inference service: the standard library's HTTP server + the Batcher.

    python examples/serve.py model.safetensors            # any file li.load reads
    python examples/serve.py --random 256,256 --port 8000 # a random LSTM(256, 256)
    python examples/serve.py model.h5 --load-timeout 60   # an untrusted file: isolated load

    curl -s localhost:8000/predict -d '{"x": [[0.1, 0.2, ...], ...]}'
    curl -s localhost:8000/metrics

POST /predict  {"x": [[...], ...]}: one sequence (T, I); optional "state": {"h": ..., "c": ...}
               in the unbatched form of model(x, state=...) ((D*L, H_out) and (D*L, H) for a
               uniform stack; lists of (D, H_k) per layer otherwise).
               -> 200 {"out": (T, F), "h_n": ..., "c_n": ...}
               -> 400 bad JSON / shape / dtype / NaN / too long (with a message),
                  411 no Content-Length, 413 body too large, 503 queue full or not started
                  in time (Retry-After: 1).
GET /metrics   JSON counters: requests, responses by status, batches, mean batch size,
               batch sizes, HTTP latency p50/p99 (ms), the batcher's own stats.
GET /healthz   {"ok": true}

The model is loaded once; every request thread (ThreadingHTTPServer: one per
connection) hands its sequence to one shared Batcher, which runs them in batched
forward calls. It binds to 127.0.0.1 unless told otherwise: put a real front end
(TLS, authentication, rate limits) before exposing it. Standard library only.
"""
from __future__ import annotations

import argparse
import collections
import http.server
import json
import signal
import sys
import threading
import time

import numpy as np

import lstm_infer as li
from lstm_infer.serving import Batcher, BatcherClosed, BatcherFull, RequestTimeout

MAX_BODY = 16 * 2 ** 20  # bytes
MAX_STEPS = 10_000       # time steps per request


class BadRequest(ValueError):
    """A 4xx answer: status and message."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


def _array(v, name):
    """A JSON value as a numeric numpy array (no strings, booleans or ragged lists)."""
    try:
        a = np.array(v)
    except (ValueError, TypeError):  # ragged nesting
        raise BadRequest(f"{name} must be a rectangular array of numbers") from None
    if a.dtype.kind not in "iuf" or a.dtype == object:
        raise BadRequest(f"{name} must be an array of numbers; got {a.dtype.kind!r} elements "
                         f"(dtype {a.dtype})")
    return a


class Metrics:
    """Counters of the HTTP layer (thread-safe); latencies of the last 10 000 answers."""

    def __init__(self):
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self.active = 0  # requests being answered
        self.requests = 0
        self.status = collections.Counter()
        self.latencies = collections.deque(maxlen=10_000)

    def begin(self):
        with self._lock:
            self.active += 1

    def record(self, status, seconds):
        with self._lock:
            self.active -= 1
            self.requests += 1
            self.status[status] += 1
            self.latencies.append(seconds)
            self._idle.notify_all()

    def drain(self, timeout):
        """Wait (up to `timeout` s) until no request is being answered."""
        with self._lock:
            return self._idle.wait_for(lambda: self.active == 0, timeout)

    def snapshot(self):
        with self._lock:
            lat = np.array(self.latencies) if self.latencies else None
            d = {"requests": self.requests, "responses": {str(k): v for k, v in
                                                          sorted(self.status.items())}}
        d["errors"] = sum(v for k, v in d["responses"].items() if int(k) >= 400)
        d["latency_ms"] = None if lat is None else {
            "p50": float(np.percentile(lat, 50) * 1e3),
            "p99": float(np.percentile(lat, 99) * 1e3)}
        return d


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: load clients reuse their connection
    timeout = 30                   # seconds a connection may stall (socket timeout)
    server_version = "lstm_infer-example/0.1"

    # set by make_server on a subclass
    batcher: Batcher = None
    metrics: Metrics = None
    max_body = MAX_BODY
    max_steps = MAX_STEPS
    quiet = False

    # ------------------------------------------------------------------ plumbing
    def log_message(self, fmt, *args):
        if not self.quiet:
            sys.stderr.write(f"{self.address_string()} - {fmt % args}\n")

    def _send(self, status, payload, headers=()):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _answer(self, handler):
        t0 = time.perf_counter()
        headers = []
        self.metrics.begin()
        try:
            status, payload = handler()
        except BadRequest as e:
            status, payload = e.status, {"error": str(e)}
            if e.status in (411, 413):  # the body was not read: the connection cannot go on
                self.close_connection = True
                headers.append(("Connection", "close"))
        except (BatcherFull, RequestTimeout, BatcherClosed) as e:
            status, payload = 503, {"error": f"overloaded: {e}"}
            headers.append(("Retry-After", "1"))
        except Exception as e:  # a bug: say so, keep serving
            status, payload = 500, {"error": f"internal error: {type(e).__name__}: {e}"}
        try:
            self._send(status, payload, headers)
        finally:
            self.metrics.record(status, time.perf_counter() - t0)

    # ------------------------------------------------------------------ routes
    def do_GET(self):
        routes = {"/metrics": self._metrics, "/healthz": lambda: (200, {"ok": True})}
        if self.path == "/predict":
            return self._answer(lambda: (405, {"error": "POST a JSON body to /predict"}))
        self._answer(routes.get(self.path, self._not_found))

    def do_POST(self):
        if self.path != "/predict":
            # a body we do not read would be taken for the next request: close
            self.close_connection = True
            return self._answer(self._not_found)
        self._answer(self._predict)

    def _not_found(self):
        return 404, {"error": f"no route {self.path!r}; POST /predict, GET /metrics"}

    def _metrics(self):
        d = self.metrics.snapshot()
        s = self.batcher.stats()
        d.update(batches=s["batches"], mean_batch_size=s["mean_batch_size"],
                 batch_sizes={str(k): v for k, v in s["batch_sizes"].items()},
                 model={"repr": repr(self.batcher.model),
                        "input_size": self.batcher.model.config.input_size},
                 batcher=s)
        return 200, d

    def _predict(self):
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise BadRequest("a Content-Length header is required", 411)
        if int(length) > self.max_body:
            raise BadRequest(f"body of {length} bytes is above the limit of {self.max_body}",
                             413)
        raw = self.rfile.read(int(length))
        try:
            req = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise BadRequest(f"bad JSON: {e}") from None
        if not isinstance(req, dict) or "x" not in req:
            raise BadRequest('expected a JSON object {"x": [[...], ...]} (one sequence (T, I))')
        x = _array(req["x"], "x")
        if x.ndim == 2 and x.shape[0] > self.max_steps:
            raise BadRequest(f"x has {x.shape[0]} time steps: at most {self.max_steps} per "
                             f"request")
        state = self._state(req.get("state"))
        try:
            out, (h, c) = self.batcher.predict(x, state)
        except (ValueError, TypeError) as e:  # the batcher's checks of this request
            raise BadRequest(str(e)) from None
        as_list = (lambda a: [p.tolist() for p in a]) if isinstance(h, list) else \
            (lambda a: a.tolist())
        return 200, {"out": out.tolist(), "h_n": as_list(h), "c_n": as_list(c)}

    def _state(self, st):
        if st is None:
            return None
        if not isinstance(st, dict) or set(st) != {"h", "c"}:
            raise BadRequest('state must be {"h": ..., "c": ...}')
        if self.batcher.model.config.uniform:
            return _array(st["h"], "state.h"), _array(st["c"], "state.c")
        if not isinstance(st["h"], list) or not isinstance(st["c"], list):
            raise BadRequest("state.h and state.c must be lists with one (D, H_k) array per "
                             "layer for this model")
        return ([_array(v, f"state.h[{k}]") for k, v in enumerate(st["h"])],
                [_array(v, f"state.c[{k}]") for k, v in enumerate(st["c"])])


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True  # an idle keep-alive connection never blocks shutdown
    request_queue_size = 128  # listen backlog: many clients connect at once
    batcher: Batcher = None
    metrics: Metrics = None

    def stop(self, drain=5.0):
        """After serve_forever has returned: no new connections; the batcher runs what
        it has queued (later requests on open connections get 503); the answers in
        progress are written (up to `drain` seconds)."""
        self.server_close()
        self.batcher.close()
        self.metrics.drain(drain)

    def close(self):
        """Stop serving (from another thread than serve_forever's), then `stop`."""
        self.shutdown()
        self.stop()


def make_server(model, host="127.0.0.1", port=8000, *, max_body=MAX_BODY,
                max_steps=MAX_STEPS, quiet=False, **batcher_options) -> Server:
    """A Server (not yet serving: call ``serve_forever()``) answering through a new
    Batcher(model, **batcher_options); ``server.close()`` stops both. port 0: any
    free port (``server.server_address``)."""
    batcher = Batcher(model, **batcher_options)
    metrics = Metrics()
    handler = type("BoundHandler", (Handler,), dict(
        batcher=batcher, metrics=metrics, max_body=max_body, max_steps=max_steps,
        quiet=quiet))
    server = Server((host, port), handler)
    server.batcher, server.metrics = batcher, metrics
    return server


def main(argv=None):
    p = argparse.ArgumentParser(description="lstm_infer example service (POST /predict)")
    p.add_argument("model", nargs="?", help="a model file (li.load)")
    p.add_argument("--random", metavar="I,H", help="serve li.LSTM.random(I, H) instead")
    p.add_argument("--load-timeout", type=float, help="load in an isolated child process, "
                   "killed after this many seconds (for files you do not trust)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0: any free port")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-delay-ms", type=float, default=2.0)
    p.add_argument("--max-queue", type=int, default=1024)
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds a request may wait to start (then 503)")
    p.add_argument("--num-threads", type=int, default=None)
    p.add_argument("--max-body", type=int, default=MAX_BODY, help="bytes (413 above)")
    p.add_argument("--max-steps", type=int, default=MAX_STEPS, help="time steps per request")
    p.add_argument("--quiet", action="store_true", help="no access log")
    a = p.parse_args(argv)
    if (a.model is None) == (a.random is None):
        p.error("give a model file or --random I,H")
    if a.random:
        try:
            i, h = (int(v) for v in a.random.split(","))
        except ValueError:
            p.error("--random takes I,H (two integers)")
        model = li.LSTM.random(i, h)
    else:
        model = li.load(a.model, timeout=a.load_timeout)
    server = make_server(model, a.host, a.port, max_body=a.max_body, max_steps=a.max_steps,
                         quiet=a.quiet, max_batch=a.max_batch, max_delay_ms=a.max_delay_ms,
                         max_queue=a.max_queue, timeout=a.timeout, num_threads=a.num_threads)
    host, port = server.server_address[:2]
    # SIGTERM: stop like Ctrl-C (shutdown() must come from another thread than serve_forever)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"serving {model!r} on http://{host}:{port} (POST /predict, GET /metrics)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()  # queued requests finish, their answers are written
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
