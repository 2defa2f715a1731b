"""Load generator for examples/serve.py: throughput and latency over loopback.

    python examples/serve.py --random 256,256 --quiet &
    python examples/load.py --concurrency 32 --requests 2000 --seconds 20

C client threads, each on one keep-alive connection (http.client), POST random
sequences (T, I) to /predict until --requests answers or --seconds have passed,
whichever comes first. Only loopback addresses are accepted: this is a
benchmark of your own server, not a tool to load anyone else's. Reports
requests/s, p50/p99 latency, answers by status and the server's batching
(GET /metrics). Standard library + numpy.
"""
from __future__ import annotations

import argparse
import collections
import http.client
import ipaddress
import json
import socket
import sys
import threading
import time
import urllib.parse

import numpy as np


def loopback(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def get_json(host, port, path):
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the server (loopback only)")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--requests", type=int, default=1000, help="stop after this many answers")
    p.add_argument("--seconds", type=float, default=30.0, help="and after this long at most")
    p.add_argument("--T", type=int, default=100, help="time steps per request (max; "
                   "--mixed draws 1..T)")
    p.add_argument("--mixed", action="store_true", help="random lengths 1..T")
    a = p.parse_args(argv)
    if not 1 <= a.requests <= 10_000_000 or not 0 < a.seconds <= 3600 or a.concurrency < 1:
        p.error("need 1 <= --requests <= 1e7, 0 < --seconds <= 3600, --concurrency >= 1")
    url = urllib.parse.urlsplit(a.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    if url.scheme != "http" or not loopback(host):
        p.error(f"{a.url}: only http:// on a loopback address (127.0.0.0/8, ::1, localhost)")

    metrics0 = get_json(host, port, "/metrics")
    I = metrics0["model"]["input_size"]
    rng = np.random.default_rng(0)
    bodies = []
    for _ in range(32):
        T = int(rng.integers(1, a.T + 1)) if a.mixed else a.T
        x = rng.uniform(-3, 3, (T, I)).astype(np.float32)
        bodies.append(json.dumps({"x": x.tolist()}).encode())

    lock = threading.Lock()
    sent = [0]
    lat, status = [], collections.Counter()
    end = time.monotonic() + a.seconds

    def client(k):
        conn = http.client.HTTPConnection(host, port, timeout=60)
        mine, codes = [], collections.Counter()
        try:
            while time.monotonic() < end:
                with lock:
                    if sent[0] >= a.requests:
                        break
                    sent[0] += 1
                body = bodies[(k + len(mine)) % len(bodies)]
                t0 = time.perf_counter()
                try:
                    conn.request("POST", "/predict", body,
                                 {"Content-Type": "application/json"})
                    r = conn.getresponse()
                    r.read()
                    code = r.status
                except (OSError, http.client.HTTPException) as e:
                    code = type(e).__name__
                    conn.close()
                    conn = http.client.HTTPConnection(host, port, timeout=60)
                mine.append(time.perf_counter() - t0)
                codes[code] += 1
        finally:
            conn.close()
            with lock:
                lat.extend(mine)
                status.update(codes)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(a.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.perf_counter() - t0
    m = get_json(host, port, "/metrics")
    batches = m["batches"] - metrics0["batches"]
    done = m["batcher"]["completed"] - metrics0["batcher"]["completed"]
    lat_ms = np.array(lat) * 1e3
    print(f"{len(lat)} requests in {dt:.2f} s from {a.concurrency} connections: "
          f"{len(lat) / dt:.1f} requests/s; latency p50 {np.percentile(lat_ms, 50):.1f} ms, "
          f"p99 {np.percentile(lat_ms, 99):.1f} ms")
    print(f"answers: {dict(status)}; server: {batches} batches, mean batch "
          f"{done / batches if batches else 0:.1f} sequences ({m['model']['repr']})")
    return 0 if set(status) <= {200} else 1


if __name__ == "__main__":
    sys.exit(main())
