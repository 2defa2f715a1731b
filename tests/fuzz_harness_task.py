"""A task for bench/fuzz_common's worker that misbehaves on purpose, one way per case:
tests/test_fuzz_loaders.py checks that the harness reports each misbehaviour as what it
is (a fuzzer is only as good as its detectors)."""
from __future__ import annotations

import ctypes
import os
import time


def worker_init(config):
    return {"config": config}


def run_case(state, case, ctx):
    what = case["what"]
    if what == "ok":
        return {"value": 1}
    if what == "sleep":
        time.sleep(600)
    if what == "exit":
        os._exit(3)
    if what == "segv":
        ctypes.string_at(0)
    if what == "touch_marker":
        fd = os.open(os.path.join(state["config"]["marker_dir"], "ran"), os.O_CREAT | os.O_WRONLY)
        os.close(fd)
        return {}
    if what == "system":
        os.system("true")
        return {}
    if what == "python_open":  # a read of another file through Python
        with open(case["path"], "rb") as f:
            f.read(1)
        return {}
    if what == "c_read":  # a read from C: only the inotify watch sees it
        libc = ctypes.CDLL(None, use_errno=True)  # no find_library: it runs ldconfig
        fd = libc.open(os.fsencode(case["path"]), os.O_RDONLY)
        buf = ctypes.create_string_buffer(8)
        libc.read(fd, buf, 8)
        libc.close(fd)
        return {}
    if what == "allowed_open":
        ctx.allow(case["path"])
        with open(case["path"], "rb") as f:
            f.read(1)
        return {}
    if what == "alloc":  # touched pages, freed before the case ends: only the peak sees it
        b = bytearray(case["mib"] << 20)
        del b
        return {"mem_budget": 64 << 20}
    if what == "raise":
        raise KeyError("from the task")
    raise ValueError(what)


def classify(res):
    return "fine"
