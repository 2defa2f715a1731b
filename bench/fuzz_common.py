"""The harness shared by the fuzzers (bench/fuzz_loaders.py, bench/fuzz_forward.py)
and their bounded versions in the test suite (tests/test_fuzz_*.py).

Every case runs in a persistent worker subprocess (this file, run with
``--worker``), so that nothing a case does can take the fuzzer down:

- the worker runs under ``RLIMIT_AS`` (6 GiB by default);
- the parent waits for each answer at most ``timeout`` seconds: no answer is a
  **hang** (the worker's process group is killed, a new worker started);
- a worker that dies is a **crash** (exit status / signal and the tail of its
  stderr are kept);
- each case's peak RSS is measured twice: the kernel's high-water mark
  (``VmHWM``, reset before each case through ``/proc/self/clear_refs``) and a
  sampler thread that reads ``/proc/self/statm`` every 3 ms. The growth is the
  peak minus the RSS at the start of the case;
- an audit hook (``sys.addaudithook``) records, during a case, every ``open``
  of a path other than the case's own files (and Python's imports), and every
  process spawn (``os.system``, ``subprocess.Popen``, ``os.exec*``...);
- an inotify watch on the *canary* files (distinctive float values, see
  `canary_values`) catches a read of them from C code too (libhdf5, onnx), which
  an audit hook cannot see;
- a marker folder: code-execution payloads ``touch`` a file in it, so any file
  there means code from a case ran.

A task module (the fuzzer script) provides, for the worker,
``worker_init(config) -> state`` and ``run_case(state, case, ctx) -> dict``
(``ctx`` is a `CaseContext`), and, for the parent, ``classify(result) -> outcome``.
`Campaign` runs cases over W workers and fills a `Results` (counts per family
and outcome, failures with what is needed to replay them, the worst memory
ratio), written as JSON.
"""
from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import os
import pickle
import platform
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback

MiB = 1 << 20
GiB = 1 << 30
DEFAULT_RLIMIT_AS = 6 * GiB

# Outcomes. A case has exactly one; memory is a separate flag (`mem_flag`).
CODE_EXEC = "code_exec"        # a marker file appeared, or a process was spawned
OUTSIDE_READ = "outside_read"  # a canary was read, or a path outside the case was opened
CRASH = "crash"                # the worker died
HANG = "hang"                  # no answer within the timeout
UNCLEAN = "unclean"            # an exception outside the contract escaped
HARNESS_ERROR = "harness_error"  # the fuzzer itself failed to build the case (a fuzzer bug)
# Outcomes that are findings whatever the task (tasks add their own).
FAILURES = {CODE_EXEC, OUTSIDE_READ, CRASH, HANG, UNCLEAN, HARNESS_ERROR}

# Audit events that start another program: any of them during a case is code execution.
_SPAWN_EVENTS = ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                 "os.forkpty", "os.startfile", "subprocess.Popen", "pty.spawn", "os.popen")


# ============================================================================ canary
CANARY_COUNT = 1024


def canary_values():
    """The canary's distinctive values: 12345 + k/16, exact in float32 and float64. No
    trained or mutated weight is one of them by chance."""
    import numpy as np
    return 12345.0 + np.arange(CANARY_COUNT, dtype=np.float64) / 16.0


def canary_bytes() -> bytes:
    """The canary file: the values as little-endian float32, then as float64."""
    import numpy as np
    v = canary_values()
    return v.astype("<f4").tobytes() + v.astype("<f8").tobytes()


def contains_canary(arrays) -> bool:
    """True if any value of any array is a canary value (the file read another file)."""
    import numpy as np
    vals = canary_values()
    for a in arrays:
        a = np.asarray(a)
        if a.dtype.kind != "f" or not a.size:
            continue
        a = a.astype(np.float64, copy=False).ravel()
        if np.isin(a, vals).any():
            return True
    return False


# ============================================================================ protocol
def _send(fd: int, obj) -> None:
    data = pickle.dumps(obj, protocol=4)
    buf = struct.pack("<Q", len(data)) + data
    view = memoryview(buf)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exact(fd: int, n: int, deadline=None) -> bytes:
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                raise TimeoutError
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _recv(fd: int, deadline=None):
    (n,) = struct.unpack("<Q", _read_exact(fd, 8, deadline))
    return pickle.loads(_read_exact(fd, n, deadline))


_FORMAT_ERROR = []


def _format_error_class():
    """lstm_infer's FormatError (imported once, before any case: an import during a case
    would show as file opens)."""
    if not _FORMAT_ERROR:
        if "lstm_infer" not in sys.modules:
            return ()  # a task that does not use lstm_infer (the harness tests)
        try:
            from lstm_infer.formats.errors import FormatError
        except ImportError:  # pragma: no cover - a tree without formats/errors.py
            FormatError = ()
        _FORMAT_ERROR.append(FormatError)
    return _FORMAT_ERROR[0]


def describe_exception(e: BaseException) -> dict:
    """What the parent needs to know of an exception raised in the worker."""
    FormatError = _format_error_class()
    # lookup_lines=False: no source file is read (the audit hook would see it)
    tb = traceback.StackSummary.extract(traceback.walk_tb(e.__traceback__), lookup_lines=False)
    frames = [f"{os.path.relpath(f.filename) if not f.filename.startswith('<') else f.filename}"
              f":{f.lineno} {f.name}" for f in tb[-6:]]
    try:
        msg = str(e)
    except Exception:  # noqa: BLE001 - a hostile __str__
        msg = "<str() failed>"
    return {"type": f"{type(e).__module__}.{type(e).__qualname__}",
            "message": msg[:600],
            "format_error": bool(FormatError) and isinstance(e, FormatError),
            "value_or_type_error": isinstance(e, (ValueError, TypeError)),
            "where": frames}


# ============================================================================ worker side
class _Rss:
    """Peak RSS of one case: VmHWM (reset per case) and a 3 ms sampler thread."""

    def __init__(self, interval=0.003):
        self._statm = os.open("/proc/self/statm", os.O_RDONLY)
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._interval = interval
        self._peak = 0
        self._running = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._hwm_ok = True
        except OSError:
            self._hwm_ok = False
        t = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        t.start()

    def now(self) -> int:
        return int(os.pread(self._statm, 64, 0).split()[1]) * self._page

    def _loop(self):
        while True:
            self._wake.wait()
            while self._running:
                r = self.now()
                if r > self._peak:
                    self._peak = r
                time.sleep(self._interval)

    def begin(self) -> int:
        if self._hwm_ok:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        start = self.now()
        self._peak = start
        self._running = True
        self._wake.set()
        return start

    def end(self) -> dict:
        self._running = False
        self._wake.clear()
        sampled = max(self._peak, self.now())
        hwm = 0
        if self._hwm_ok:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        hwm = int(line.split()[1]) * 1024
        return {"peak_sampled": sampled, "peak_hwm": hwm, "peak": max(sampled, hwm)}


class _Audit:
    """Records, while a case runs, opens of other paths and process spawns."""

    def __init__(self):
        self.active = False
        self.allowed = set()
        self.allowed_dirs = ()
        self.opens, self.spawns, self.dynamic = [], [], []
        sys.addaudithook(self._hook)

    def begin(self, allowed_paths, allowed_dirs=()):
        self.allowed = {os.path.realpath(p) for p in allowed_paths} | set(allowed_paths)
        self.allowed_dirs = tuple(os.path.realpath(d) + os.sep for d in allowed_dirs)
        self.opens, self.spawns, self.dynamic = [], [], []
        self.active = True

    def end(self) -> dict:
        self.active = False
        return {"opens": self.opens[:20], "spawns": self.spawns[:20],
                "dynamic_code": self.dynamic[:5]}

    def _hook(self, event, args):
        if not self.active:
            return
        if event == "open":
            path = args[0]
            if isinstance(path, int):
                return
            if isinstance(path, bytes):
                path = os.fsdecode(path)
            path = str(path)
            if path in self.allowed:
                return
            real = os.path.realpath(path)
            if real in self.allowed or real.startswith(self.allowed_dirs):
                return
            if real.startswith("/proc/self/") or real in ("/dev/null", "/dev/urandom"):
                return
            if real.endswith((".py", ".pyc", ".so", ".pth")) or "__pycache__" in real:
                return  # a lazy import, or a traceback's source line
            if os.path.isdir(real):
                return  # tempfile.TemporaryFile (O_TMPFILE on a folder): reads nothing
            self.opens.append(f"{path} ({args[1]!r})")
        elif event.startswith(_SPAWN_EVENTS):
            self.spawns.append(f"{event} {str(args)[:200]}")
        elif event == "compile" and len(args) > 1 and args[1] in ("<string>", b"<string>"):
            src = args[0]
            self.dynamic.append(src[:120] if isinstance(src, (str, bytes)) else repr(src)[:120])


class _Inotify:
    """IN_OPEN / IN_ACCESS on the canary files, from any code (C included)."""

    IN_ACCESS, IN_OPEN = 0x1, 0x20

    def __init__(self, paths):
        self.fd, self.names = -1, {}
        if not paths:
            return
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd < 0:
                return
            for p in paths:
                wd = libc.inotify_add_watch(fd, os.fsencode(p), self.IN_OPEN | self.IN_ACCESS)
                if wd >= 0:
                    self.names[wd] = p
            self.fd = fd
        except (OSError, AttributeError):  # pragma: no cover - no inotify
            self.fd = -1

    def events(self) -> list:
        if self.fd < 0:
            return []
        got = []
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return got
            i = 0
            while i + 16 <= len(buf):
                wd, mask, _cookie, ln = struct.unpack_from("iIII", buf, i)
                got.append(f"{self.names.get(wd, wd)} mask={mask:#x}")
                i += 16 + ln


class CaseContext:
    """What a task's run_case may use: the RSS meter and the audit allow-list."""

    def __init__(self, rss, audit, workdir):
        self.rss, self.audit, self.workdir = rss, audit, workdir
        self._allowed = []
        self._allowed_dirs = []

    def allow(self, *paths):
        """Paths a case may open (its own files). Call before anything reads them."""
        self._allowed.extend(os.fspath(p) for p in paths)
        self.audit.allowed |= {os.path.realpath(os.fspath(p)) for p in paths}
        self.audit.allowed |= {os.fspath(p) for p in paths}


def _import_task(path):
    spec = importlib.util.spec_from_file_location("fuzz_task", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_task"] = mod
    spec.loader.exec_module(mod)
    return mod


def _malloc_trim():
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # pragma: no cover
        pass


def worker_main(task_path, rfd, wfd):
    """The worker loop: config, then one request per case, until EOF or None."""
    import resource

    os.dup2(2, 1)  # whatever the loaders print must not reach the protocol pipe
    config = _recv(rfd)
    limit = int(config.get("rlimit_as") or 0)
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if config.get("sys_path"):
        sys.path[:0] = list(config["sys_path"])
    workdir = config["workdir"]
    os.makedirs(workdir, exist_ok=True)
    os.chdir(workdir)  # relative paths in a hostile file resolve to this worker's canaries
    task = _import_task(task_path)
    state = task.worker_init(config)
    if "lstm_infer" in sys.modules:
        _format_error_class()
    rss, audit = _Rss(), _Audit()
    inotify = _Inotify(config.get("canary_paths") or [])
    marker_dir = config.get("marker_dir")
    inotify.events()  # setup reads
    _malloc_trim()
    _send(wfd, {"ready": True, "pid": os.getpid()})
    while True:
        try:
            req = _recv(rfd)
        except EOFError:
            return
        if req is None:
            return
        case = req["case"]
        ctx = CaseContext(rss, audit, workdir)
        start = rss.begin()
        audit.begin(case.get("allowed_paths", ()), config.get("allowed_dirs") or ())
        t0 = time.perf_counter()
        try:
            res = task.run_case(state, case, ctx)
        except BaseException as e:  # noqa: BLE001 - the task must report, not die
            res = {"harness_exception": describe_exception(e)}
        seconds = time.perf_counter() - t0
        aud = audit.end()
        mem = rss.end()
        res = dict(res)
        res.update(aud)
        res["seconds"] = seconds
        res["rss_start"] = start
        res["rss_growth"] = max(0, mem["peak"] - start)
        res["rss_growth_sampled"] = max(0, mem["peak_sampled"] - start)
        res["canary_events"] = inotify.events()
        if marker_dir and os.path.isdir(marker_dir):
            res["markers"] = sorted(os.listdir(marker_dir))[:20]
        _malloc_trim()
        _send(wfd, {"id": req["id"], "result": res})


# ============================================================================ parent side
class Harness:
    """One persistent worker: run(case) -> record with the worker's result, or a hang /
    crash record. Restarts the worker after a hang or a crash."""

    def __init__(self, task_path, config, *, timeout=10.0, startup_timeout=300.0,
                 stderr_path=None):
        self.task_path = os.path.abspath(task_path)
        self.config = dict(config)
        self.timeout = timeout
        self.startup_timeout = startup_timeout
        self.stderr_path = stderr_path or os.path.join(config["workdir"], "worker.stderr")
        self.proc = None
        self.restarts = 0
        self._next_id = 0

    # ------------------------------------------------------------ process
    def start(self):
        os.makedirs(self.config["workdir"], exist_ok=True)
        try:  # the worker imports the lstm_infer this process uses, whatever its sys.path
            import lstm_infer
            root = os.path.dirname(os.path.dirname(os.path.abspath(lstm_infer.__file__)))
            self.config["sys_path"] = [root] + [p for p in self.config.get("sys_path", [])
                                                if p != root]
        except ImportError:
            pass
        p_r, c_w = os.pipe()   # worker -> parent
        c_r, p_w = os.pipe()   # parent -> worker
        self._err = open(self.stderr_path, "ab")
        env = dict(os.environ)
        # a fixed mmap threshold: freed big blocks go back to the OS, so one case's
        # leftovers do not hide the next case's growth
        env.setdefault("MALLOC_MMAP_THRESHOLD_", str(256 * 1024))
        env.setdefault("MALLOC_TRIM_THRESHOLD_", str(1 * MiB))
        env.update(self.config.get("env") or {})
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", self.task_path,
             str(c_r), str(c_w)],
            pass_fds=(c_r, c_w), stdin=subprocess.DEVNULL, stdout=self._err,
            stderr=self._err, env=env, start_new_session=True, close_fds=True)
        os.close(c_r)
        os.close(c_w)
        self._r, self._w = p_r, p_w
        _send(self._w, self.config)
        try:
            msg = _recv(self._r, time.monotonic() + self.startup_timeout)
        except (EOFError, TimeoutError):
            self._kill()
            raise RuntimeError(f"the fuzz worker did not start; see {self.stderr_path}:\n"
                               f"{self._stderr_tail(0)}") from None
        assert msg.get("ready"), msg

    def _kill(self):
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the worker and anything it started
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._err.close()
        self.proc = None

    def close(self):
        if self.proc is None:
            return
        try:
            _send(self._w, None)
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self._kill()

    def _stderr_tail(self, offset, n=2000) -> str:
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(max(offset, os.path.getsize(self.stderr_path) - n))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    # ------------------------------------------------------------ cases
    def run(self, case, timeout=None) -> dict:
        """{"status": "ok", "result": {...}} or {"status": "hang" | "crash", ...}."""
        if self.proc is None:
            self.start()
        self._next_id += 1
        rid = self._next_id
        offset = os.path.getsize(self.stderr_path) if os.path.exists(self.stderr_path) else 0
        timeout = self.timeout if timeout is None else timeout
        t0 = time.monotonic()
        try:
            _send(self._w, {"id": rid, "case": case})
            msg = _recv(self._r, t0 + timeout)
        except TimeoutError:
            self._kill()
            self.restarts += 1
            return {"status": HANG, "seconds": time.monotonic() - t0,
                    "stderr": self._stderr_tail(offset)}
        except (EOFError, BrokenPipeError, OSError):
            try:
                rc = self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # pragma: no cover
                rc = None
            tail = self._stderr_tail(offset)
            self._kill()
            self.restarts += 1
            sig = -rc if rc is not None and rc < 0 else None
            return {"status": CRASH, "returncode": rc,
                    "signal": signal.Signals(sig).name if sig else None,
                    "seconds": time.monotonic() - t0, "stderr": tail}
        assert msg["id"] == rid, (msg["id"], rid)
        return {"status": "ok", "result": msg["result"],
                "seconds": time.monotonic() - t0}


def verdict(record, classify, marker_dir=None) -> str:
    """The outcome of one harness record; the task's `classify` decides among the cases
    that answered without code execution or an outside read."""
    if record["status"] != "ok":
        if marker_dir and os.path.isdir(marker_dir) and os.listdir(marker_dir):
            return CODE_EXEC
        return record["status"]
    res = record["result"]
    if res.get("markers") or res.get("spawns"):
        return CODE_EXEC
    if res.get("canary_events") or res.get("opens") or res.get("canary_in_weights"):
        return OUTSIDE_READ
    if "harness_exception" in res:
        return HARNESS_ERROR
    return classify(res)


# ============================================================================ results
class Results:
    """Counts per family and outcome, the failures, the worst memory ratio."""

    def __init__(self, failures_set, max_failures_kept=2000):
        self.failure_outcomes = set(failures_set) | FAILURES
        self.counts = {}          # family -> outcome -> n
        self.mem_flags = {}       # family -> n
        self.failures = []
        self.max_kept = max_failures_kept
        self.worst_memory = None  # the case with the largest growth / budget
        self.worst_growth = None  # the case with the largest absolute growth
        self.dynamic_code = []
        self.slowest = []         # the 10 slowest cases (seconds, info)
        self.seconds = {}         # family -> total seconds
        self.lock = threading.Lock()
        self.n = 0

    def add(self, family, outcome, record, info):
        """info: a small dict that identifies the case (for the failure list)."""
        res = record.get("result") or {}
        growth = res.get("rss_growth")
        budget = res.get("mem_budget")
        mem_flag = growth is not None and budget is not None and growth > budget
        with self.lock:
            self.n += 1
            fam = self.counts.setdefault(family, {})
            fam[outcome] = fam.get(outcome, 0) + 1
            if mem_flag:
                self.mem_flags[family] = self.mem_flags.get(family, 0) + 1
            if growth is not None and budget:
                ratio = growth / budget
                if self.worst_memory is None or ratio > self.worst_memory["ratio_to_budget"]:
                    tb = res.get("tensor_bytes")
                    self.worst_memory = dict(info, family=family, outcome=outcome,
                                             growth_bytes=growth, budget_bytes=budget,
                                             ratio_to_budget=round(ratio, 4), tensor_bytes=tb,
                                             ratio_to_tensor_bytes=round(growth / tb, 1)
                                             if tb else None)
                if self.worst_growth is None or growth > self.worst_growth["growth_bytes"]:
                    self.worst_growth = dict(info, family=family, outcome=outcome,
                                             growth_bytes=growth, budget_bytes=budget,
                                             tensor_bytes=res.get("tensor_bytes"))
            sec = round(record.get("seconds", 0.0), 3)
            self.seconds[family] = self.seconds.get(family, 0.0) + sec
            if len(self.slowest) < 10 or sec > self.slowest[-1]["seconds"]:
                self.slowest.append(dict(info, family=family, outcome=outcome, seconds=sec))
                self.slowest.sort(key=lambda e: -e["seconds"])
                del self.slowest[10:]
            if res.get("dynamic_code") and len(self.dynamic_code) < 20:
                self.dynamic_code.append(dict(info, code=res["dynamic_code"]))
            failed = outcome in self.failure_outcomes or mem_flag
            if failed and len(self.failures) < self.max_kept:
                entry = dict(info, family=family, outcome=outcome, mem_flag=mem_flag)
                for k in ("exc", "load_exc", "forward_exc", "detail", "opens", "spawns",
                          "canary_events", "markers", "rss_growth", "mem_budget",
                          "harness_exception"):
                    if res.get(k):
                        entry[k] = res[k]
                for k in ("returncode", "signal", "stderr"):
                    if record.get(k) is not None:
                        entry[k] = record[k]
                entry["seconds"] = round(record.get("seconds", 0.0), 3)
                self.failures.append(entry)
            return failed

    def totals(self) -> dict:
        out = {}
        for fam in self.counts.values():
            for k, v in fam.items():
                out[k] = out.get(k, 0) + v
        return out

    def failure_count(self) -> int:
        t = self.totals()
        return sum(v for k, v in t.items() if k in self.failure_outcomes) + \
            sum(self.mem_flags.values())

    def to_json(self, **extra) -> dict:
        return {**extra, "cases": self.n, "totals": self.totals(), "per_family": self.counts,
                "memory_flags": self.mem_flags, "worst_memory": self.worst_memory,
                "worst_growth": self.worst_growth, "failures_total": self.failure_count(),
                "seconds_per_family": {k: round(v, 1) for k, v in self.seconds.items()},
                "slowest": self.slowest,
                "dynamic_code": self.dynamic_code, "failures": self.failures}

    def table(self) -> str:
        """A text table: family x outcome counts."""
        outcomes = sorted({o for fam in self.counts.values() for o in fam})
        rows = [["family", "cases"] + outcomes + ["mem_flag"]]
        for fam in sorted(self.counts):
            c = self.counts[fam]
            rows.append([fam, str(sum(c.values()))] + [str(c.get(o, 0)) for o in outcomes] +
                        [str(self.mem_flags.get(fam, 0))])
        t = self.totals()
        rows.append(["TOTAL", str(sum(t.values()))] + [str(t.get(o, 0)) for o in outcomes] +
                    [str(sum(self.mem_flags.values()))])
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(v.rjust(w) if i else v.ljust(w)
                                   for i, (v, w) in enumerate(zip(r, widths))) for r in rows)


class Campaign:
    """Runs cases over `workers` harnesses (one thread each), until the cases run out or
    `seconds` pass. `plan(index) -> (family, case dict, info dict)` is cheap and runs
    in the parent; `on_failure(index, case, outcome, record)` may save a reproducer and
    returns a dict merged into the failure entry (e.g. {"saved": path})."""

    def __init__(self, task_path, config, *, classify, failure_outcomes, workers=1,
                 timeout=10.0, marker_dir=None, on_failure=None, progress=True):
        self.task_path, self.config = task_path, config
        self.classify, self.workers, self.timeout = classify, max(1, workers), timeout
        self.marker_dir, self.on_failure, self.progress = marker_dir, on_failure, progress
        self.results = Results(failure_outcomes)
        self.harnesses = []
        self.restarts = 0

    def run(self, plan, n_cases, seconds=None) -> Results:
        lock = threading.Lock()
        counter = iter(range(n_cases))
        t_end = time.monotonic() + seconds if seconds else None
        self.t0 = time.monotonic()
        errors = []

        def next_index():
            with lock:
                if t_end is not None and time.monotonic() > t_end:
                    return None
                return next(counter, None)

        def lane(k):
            cfg = dict(self.config)
            cfg["workdir"] = os.path.join(self.config["workdir"], f"w{k}")
            if "prepare_workdir" in cfg:
                cfg.update(cfg.pop("prepare_workdir")(cfg["workdir"]) or {})
            h = Harness(self.task_path, cfg, timeout=self.timeout)
            self.harnesses.append(h)
            try:
                while True:
                    i = next_index()
                    if i is None:
                        return
                    family, case, info = plan(i)
                    rec = h.run(case)
                    outcome = verdict(rec, self.classify, self.marker_dir)
                    if outcome == CODE_EXEC and self.marker_dir:
                        # keep the names, then clear the folder for the next cases
                        seen = sorted(os.listdir(self.marker_dir))
                        (rec.setdefault("result", {})).setdefault("markers", seen)
                        for fn in seen:
                            try:
                                os.remove(os.path.join(self.marker_dir, fn))
                            except OSError:
                                pass
                    res = rec.get("result") or {}
                    growth, budget = res.get("rss_growth"), res.get("mem_budget")
                    flagged = (outcome in self.results.failure_outcomes or
                               (growth is not None and budget is not None and growth > budget))
                    if flagged and self.on_failure is not None:
                        try:
                            info = dict(info, **(self.on_failure(i, case, outcome, rec) or {}))
                        except Exception as e:  # noqa: BLE001 - keep fuzzing
                            info = dict(info, save_error=repr(e))
                    self.results.add(family, outcome, rec, info)
                    if self.progress and self.results.n % 2000 == 0:
                        el = time.monotonic() - self.t0
                        print(f"  {self.results.n} cases, {el:.0f} s, "
                              f"{self.results.failure_count()} failures", flush=True)
            except BaseException as e:  # noqa: BLE001 - reported by run()
                errors.append(e)
            finally:
                self.restarts += h.restarts
                h.close()

        threads = [threading.Thread(target=lane, args=(k,), daemon=True)
                   for k in range(self.workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.elapsed = time.monotonic() - self.t0
        if errors:
            raise errors[0]
        return self.results


# ============================================================================ reporting
def finish(res, camp, args, elapsed, *, tool, unit, work, describe_worst, **extra) -> int:
    """Print the table, the worst memory case and the rate; write the results JSON.
    Returns the exit status: 1 if anything failed."""
    print(res.table())
    if res.worst_memory:
        print("worst memory: " + describe_worst(res.worst_memory))
    out_dir = os.path.join(work, "failures")
    print(f"{res.n} {unit} in {elapsed:.0f} s ({res.n / max(elapsed, 1e-9):.0f}/s), "
          f"{camp.restarts} worker restarts, {res.failure_count()} failures"
          + (f" saved under {out_dir}" if res.failure_count() else ""))
    out = args.out or os.path.join(work, "results.json")
    write_json(out, res.to_json(
        tool=tool, command=" ".join([os.path.basename(sys.executable)] + sys.argv),
        seed=args.seed, seconds=round(elapsed, 1), workers=args.workers,
        timeout=args.timeout, rlimit_gb=args.rlimit_gb, environment=environment(),
        worker_restarts=camp.restarts, **extra))
    print(f"results: {out}")
    return 1 if res.failure_count() else 0


def check_failures(failures, key, known, script) -> list:
    """For the tests: raise an AssertionError listing the failures whose key(failure) is
    not in `known` (reported findings, not fixed yet); return the known ones' findings."""
    unexpected = [f for f in failures if key(f) not in known]
    if unexpected:
        raise AssertionError(f"{len(unexpected)} failing cases:\n"
                             + describe_failures(unexpected, script))
    return sorted({known[key(f)] for f in failures if key(f) in known})


def describe_failures(failures, script, limit=25) -> str:
    """A line per failure (for a test's assertion message), with its replay command."""
    lines = []
    for f in failures[:limit]:
        exc = f.get("exc") or {}
        what = f.get("name") or f.get("seed") or f.get("kind")
        lines.append(f"  {f['outcome']}{' +memory' if f.get('mem_flag') else ''} {what} "
                     f"#{f.get('index')} ({f.get('mutator') or f.get('detail') or ''}): "
                     f"{exc.get('type', '')} {exc.get('message', '')[:160]} "
                     f"(growth {(f.get('rss_growth') or 0) >> 20} MiB)"
                     f"  [replay: python bench/{script} --replay {f.get('saved')}]")
    return "\n".join(lines)


# ============================================================================ CLI helpers
def add_common_args(p: argparse.ArgumentParser, *, cases, seconds, timeout):
    p.add_argument("--cases", type=int, default=cases, help=f"cases to run (default {cases})")
    p.add_argument("--seconds", type=float, default=seconds,
                   help=f"stop after this many seconds (default {seconds})")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--seed", type=int, default=0, help="campaign seed (default 0)")
    p.add_argument("--timeout", type=float, default=timeout,
                   help=f"per-case timeout in seconds; longer is a hang (default {timeout})")
    p.add_argument("--rlimit-gb", type=float, default=DEFAULT_RLIMIT_AS / GiB,
                   help="RLIMIT_AS of each worker in GiB (default 6; 0: none)")
    p.add_argument("--out", default=None, help="results JSON (default <work>/results.json)")
    p.add_argument("--work", default=None,
                   help="scratch folder: seeds, cases, failures (default /tmp/lstm_fuzz_*)")
    p.add_argument("--replay", metavar="FILE", default=None,
                   help="run one saved failure (in a worker) and print its outcome")
    p.add_argument("--in-process", action="store_true",
                   help="with --replay: run in this process (for a debugger; no isolation)")


def environment() -> dict:
    """Versions and the lstm_infer tree, for the results file."""
    info = {"python": sys.version.split()[0], "platform": platform.platform(),
            "cpu_count": os.cpu_count()}
    try:
        import numpy
        info["numpy"] = numpy.__version__
        import lstm_infer
        info["lstm_infer"] = os.path.dirname(lstm_infer.__file__)
        root = os.path.dirname(info["lstm_infer"])
        if os.path.exists(os.path.join(root, ".commit")):  # an exported tree (git archive)
            with open(os.path.join(root, ".commit")) as f:
                info["commit"] = f.read().strip() + " (exported tree)"
        else:
            head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                                  capture_output=True, text=True, timeout=10).stdout.strip()
            dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "lstm_infer"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            info["commit"] = head + (" (lstm_infer/ modified)" if dirty else "")
    except Exception as e:  # noqa: BLE001 - informative only
        info["env_error"] = repr(e)
    return info


def write_json(path, obj):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=str)
    os.replace(tmp, path)


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--worker":
    worker_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
