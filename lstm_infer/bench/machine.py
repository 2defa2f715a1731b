"""What the report says about the machine and the run: CPU, cores, other load, date,
versions, git revision, threads and SIMD level (from /proc, os, platform and git)."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
import time
from typing import Iterable, Optional

import numpy as np

from .runners import DEFAULT_PEERS

BUSY_CORES = 0.25    # other processes using more than this many cores -> "timings are noisy"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> Optional[str]:
    try:
        mod = __import__(module)
    except Exception:
        return None
    return getattr(mod, "__version__", "?")


def _git_revision() -> Optional[str]:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        rev = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        if rev.returncode:
            return None
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _busy_cores(window: float = 0.5) -> Optional[float]:
    """Cores' worth of CPU time used by everything on the machine during `window`
    seconds (we sleep meanwhile, so it measures the others); None off Linux."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(t) for t in f.readline().split()[1:]]
        return sum(v[:8]), v[3] + v[4]  # user..steal; idle + iowait
    try:
        t1, i1 = snap()
        time.sleep(window)
        t2, i2 = snap()
    except (OSError, ValueError, IndexError):
        return None
    if t2 <= t1:
        return None
    return (1 - (i2 - i1) / (t2 - t1)) * (os.cpu_count() or 1)


def environment(threads: int, peers: Iterable[str] = DEFAULT_PEERS) -> dict:
    """Machine, date and versions for the report header."""
    from .. import __version__
    try:
        from .._kernels import simd_level
        simd = simd_level()
    except Exception as e:  # pragma: no cover - extension not built
        simd = f"unknown ({e})"
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count()
    versions = {"python": platform.python_version(), "numpy": np.__version__,
                "scipy": _version("scipy"), "lstm_infer": __version__}
    for p in peers:
        versions[p] = _version(p)
    try:
        load = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        load = None
    return {
        "cpu": _cpu_model(), "logical_cpus": os.cpu_count(), "usable_cpus": cores,
        "load_avg_1min": load, "busy_cores_at_start": _busy_cores(),
        "platform": platform.platform(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "versions": versions, "git": _git_revision(), "threads": threads, "simd": simd,
    }
