"""What the report says about the machine and the run: CPU, cores, other load, date,
versions, git revision, threads and SIMD level (from /proc, os, platform and git);
the cache sizes (sysfs) and CPU flags (/proc/cpuinfo) that `roofline` and `--cold`
size their buffers and notes by."""
from __future__ import annotations

import datetime
import glob
import os
import platform
import subprocess
import time
from typing import Dict, Iterable, Optional, Set

import numpy as np

from .runners import DEFAULT_PEERS, package_of

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


CACHE_SYSFS = "/sys/devices/system/cpu/cpu0/cache"
DEFAULT_LLC_BYTES = 64 << 20   # when sysfs says nothing


def _parse_size(text: str) -> Optional[int]:
    """sysfs cache sizes: "512K", "32768K", "2M", or plain bytes."""
    text = text.strip().upper()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    digits = text[:-1] if text[-1:] in "KMG" else text
    try:
        return int(digits) * mult if digits else None
    except ValueError:
        return None


def cache_sizes(root: str = CACHE_SYSFS) -> Dict[int, int]:
    """Bytes of cpu0's data / unified cache per level ({1: 32768, 2: 524288, 3: ...}),
    from sysfs; {} where sysfs has none (not Linux, or a container hiding it)."""
    sizes: Dict[int, int] = {}
    for d in sorted(glob.glob(os.path.join(root, "index*"))):
        try:
            with open(os.path.join(d, "type")) as f:
                kind = f.read().strip()
            with open(os.path.join(d, "level")) as f:
                level = int(f.read())
            with open(os.path.join(d, "size")) as f:
                size = _parse_size(f.read())
        except (OSError, ValueError):
            continue
        if kind in ("Data", "Unified") and size:
            sizes[level] = max(size, sizes.get(level, 0))
    return sizes


def llc_bytes(root: str = CACHE_SYSFS) -> int:
    """The last-level cache's size (the largest level sysfs lists), else DEFAULT_LLC_BYTES."""
    sizes = cache_sizes(root)
    return sizes[max(sizes)] if sizes else DEFAULT_LLC_BYTES


def cpu_flags(path: str = "/proc/cpuinfo") -> Set[str]:
    """The first CPU's feature flags from /proc/cpuinfo (empty set if unreadable)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask), else os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


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


def environment(threads: int, peers: Iterable[str] = DEFAULT_PEERS,
                timing: Optional[dict] = None) -> dict:
    """Machine, date and versions for the report header; `timing` (how the run was
    timed: `timing_description`) is carried along."""
    from .. import __version__
    try:
        from .._kernels import simd_level
        simd = simd_level()
    except Exception as e:  # pragma: no cover - extension not built
        simd = f"unknown ({e})"
    cores = usable_cpus()
    versions = {"python": platform.python_version(), "numpy": np.__version__,
                "scipy": _version("scipy"), "lstm_infer": __version__}
    for p in peers:
        pkg = package_of(p) or p
        if pkg not in versions:
            versions[pkg] = _short_version(_version(pkg))
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
        "timing": timing,
    }


def _short_version(v: Optional[str]) -> Optional[str]:
    """OpenVINO's "2026.4.1-22982-e213a14-releases/2026/4" as "2026.4.1"."""
    return v.split("-")[0] if v and "/" in v else v
