"""The benchmark runs: per workload, build every runner and check its output, then
time them all round-robin (`timing.round_robin`).

Every runner is checked before it is timed (`check`): ours against our float64
model, each float32 peer against ours (``out``, ``h_n`` and ``c_n`` where the
peer returns them), reduced-precision runners against our float64 model with a
sanity bound. A runner whose output differs by more than its tolerance is
still timed, but its row says so and `all_checks_passed` is False.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np

from . import check
from .runners import (DEFAULT_PEERS, PeerUnavailable, Runner, build_runner,
                      intended_precision, select_peers)
from .timing import DEFAULT_ROUNDS, NORMAL_BUDGET, CacheEvictor, round_robin, summarize
from .workloads import (QUICK_WORKLOADS, Workload, figures, make_input, make_model,
                        model_flops, select_workloads, workload)

# Our modes timed by default: float32 ("ours") and the int8 mode (next to onnxruntime int8)
DEFAULT_MODES = ("float32", "int8", "bf16")


def runner_name_of_mode(mode: str) -> str:
    """"ours" for float32, "ours-<mode>" for a quantization mode."""
    return "ours" if mode == "float32" else f"ours-{mode}"


def select_modes(modes: Optional[Iterable[str]] = None) -> List[str]:
    """Our modes to time: float32 always (first: the peers are checked against it),
    then `modes` (quantization modes) deduplicated; ValueError names unknown ones."""
    from ..quantize import ALIASES, MODES
    modes = [ALIASES.get(m, m) for m in (DEFAULT_MODES if modes is None else modes)]
    bad = [m for m in modes if m != "float32" and m not in MODES]
    if bad:
        raise ValueError(f"unknown mode(s) {', '.join(bad)}; choose from float32, "
                         f"{', '.join(MODES)}")
    return list(dict.fromkeys(["float32"] + modes))


def _row(name: str, wl: Workload, runner: str, threads: int, tol: float) -> dict:
    return {"workload": name, "T": wl.T, "B": wl.B, "I": wl.I, "H": wl.H,
            "num_layers": wl.num_layers, "num_directions": 2 if wl.bidirectional else 1,
            "proj_size": wl.proj_size, "runner": runner, "version": None,
            "precision": None, "info": None, "threads": threads, "status": "ok",
            "reason": None, "checked_against": None, "max_abs_diff": None, "tol": tol,
            "median_ms": None, "p10_ms": None, "p90_ms": None, "reps": 0,
            "round_medians_ms": None, "sequences_per_s": None, "steps_per_s": None,
            "x_realtime": None, "gflops": None, "pct_of_peak": None,
            "ratio_vs_ours": None, "ratio_against": None}


def _expectation(runner_name: str, ref, ours_out):
    """(what to compare with, its name, tolerance) for a runner's first output."""
    if runner_name == "ours":
        return ref, "ours float64", check.tol_vs_float64()
    if runner_name.startswith("ours-") or intended_precision(runner_name) != "float32":
        return ref, "ours float64", check.tol_reduced()
    return ours_out, "ours", check.tol_vs_ours()


def _build_and_check(runner_name: str, model, x, threads: int, want, row: dict):
    """Build the runner and check one call's output against `want`; fills `row` and
    returns (runner, output). PeerUnavailable if it cannot be built (the runner is
    closed on any error)."""
    runner = build_runner(runner_name, model, x, threads)
    row.update(version=runner.version, precision=runner.precision, info=runner.info or None)
    try:
        got = runner.fn()
        diff = check.max_abs_diff(got, want)
        row.update(max_abs_diff=diff)
        if not diff <= row["tol"]:
            row["status"] = "mismatch"
    except BaseException:
        runner.close()
        raise
    return runner, got


def _guarded(fn: Callable[[], object], errors: Dict[str, str], name: str):
    """`fn`, with an exception recorded in `errors` instead of ending the timing."""
    def call():
        if name in errors:
            return None
        try:
            return fn()
        except Exception as e:
            errors[name] = f"{type(e).__name__} while timing: {e}"
    return call


def _pair(row: dict, timed: Dict[str, dict]) -> Optional[str]:
    """Which of our runners a peer's time is divided by: ours of the same precision if
    one was timed (onnxruntime-int8 / ours-int8), else ours float32."""
    for name, r in timed.items():
        if name.startswith("ours-") and r["precision"] == row["precision"] \
                and row["precision"] != "float32":
            return name
    return "ours" if "ours" in timed else None


def run_workload(name: str, wl: Optional[Workload] = None, peers: Iterable[str] = DEFAULT_PEERS,
                 threads: int = 1, budget: float = NORMAL_BUDGET, seed: int = 0,
                 progress: Optional[Callable[[dict], None]] = None,
                 modes: Optional[Sequence[str]] = DEFAULT_MODES, rounds: int = DEFAULT_ROUNDS,
                 block_calls: Optional[int] = None, block_time: Optional[float] = None,
                 cold: bool = False, evictor: Optional[Callable[[], None]] = None,
                 peak_gflops: Optional[float] = None,
                 on_block: Optional[Callable[[float, str], None]] = None,
                 model=None, x=None, models: Optional[Dict[str, object]] = None) -> List[dict]:
    """Benchmark ours (each of `modes`) and `peers` on one workload, round-robin; one
    result dict per runner (ours first).

    The model and input are the workload's (`make_model`, `make_input`) unless given:
    `model` (float32; the one the peers are built from and checked against) and `x` in
    its layout (`bench.model_file` passes a loaded file's). `models` maps a runner name
    to the model it runs instead (``{"ours-int8": q}``: a file's own quantized model).

    Each runner is built and checked first: ours float32 against our float64 model,
    float32 peers against ours, reduced-precision runners (our quantized modes, int8 and
    bf16 peers) against our float64 model with `check.tol_reduced`. Then every runner
    that could be built is timed in `rounds` rounds of blocks (`timing.round_robin`;
    blocks of `block_calls` calls, else of `block_time` seconds, default budget/rounds),
    caches evicted before every call when `cold` (by `evictor`, default a
    `CacheEvictor` for `threads`). Times: median, p10, p90 over all calls, and each
    round's median. ``gflops`` from `workloads.flops`; ``pct_of_peak`` of `peak_gflops`
    when given. ``ratio_vs_ours`` = peer median / the median of ``ratio_against`` (ours
    of the peer's precision when timed, else ours float32).

    ``status`` is "ok", "mismatch" (checked and timed, but off by more than ``tol``),
    "skipped" (unavailable; ``reason`` says why) or "error" (``reason``).
    ``precision`` is what the engine actually ran. `on_block(fraction, label)` reports
    the timing's progress through this workload.
    """
    wl = workload(name) if wl is None else Workload(*wl)
    model = make_model(wl, seed) if model is None else model
    x = make_input(wl, seed + 1, model.config.batch_first) if x is None else x
    models = models or {}
    ref = check.reference(model, x)
    names = [runner_name_of_mode(m) for m in select_modes(modes)]
    names += [p for p in peers if p not in names]
    rows: Dict[str, dict] = {}
    built: Dict[str, Runner] = {}
    ours_out = None
    try:
        for runner_name in names:
            want, against, tol = _expectation(runner_name, ref, ours_out)
            row = rows[runner_name] = _row(name, wl, runner_name, threads, tol)
            row["checked_against"] = against
            try:
                built[runner_name], got = _build_and_check(
                    runner_name, models.get(runner_name, model), x, threads, want, row)
            except PeerUnavailable as e:
                row.update(status="skipped", reason=str(e), checked_against=None)
            except Exception as e:  # a peer failing must not kill the whole run
                if runner_name == "ours":
                    raise
                row.update(status="error", reason=f"{type(e).__name__}: {e}")
            if runner_name == "ours":
                ours_out = got
        if cold and evictor is None:
            evictor = CacheEvictor(threads=threads)
        errors: Dict[str, str] = {}
        fns = {n: (r.fn if n == "ours" else _guarded(r.fn, errors, n))
               for n, r in built.items()}
        total = rounds * len(fns)

        def block_done(r, pos, runner_name):
            if on_block is not None:
                on_block((r * len(fns) + pos + 1) / total,
                         f"{name} round {r + 1}/{rounds} {runner_name}")
        times = round_robin(fns, rounds=rounds, block_calls=block_calls,
                            block_time=block_time or budget / rounds,
                            evict=evictor if cold else None, progress=block_done)
    finally:
        for r in built.values():
            r.close()
    for runner_name, t in times.items():
        row = rows[runner_name]
        if runner_name in errors:
            row.update(status="error", reason=errors[runner_name])
            continue
        median = float(np.median(t))
        row.update(summarize(t), **figures(name, wl, median))
        row.update(gflops=model_flops(model, wl.T, wl.B) / median / 1e9,
                   block_calls=int(t.shape[1]),
                   rounds=int(t.shape[0]), cold=bool(cold))
        if peak_gflops:
            row["pct_of_peak"] = 100.0 * row["gflops"] / peak_gflops
    timed = {n: r for n, r in rows.items() if r["median_ms"] is not None}
    for runner_name, row in timed.items():
        if runner_name.startswith("ours"):
            continue
        against = _pair(row, timed)
        if against is not None:
            row.update(ratio_against=against,
                       ratio_vs_ours=row["median_ms"] / timed[against]["median_ms"])
    out = list(rows.values())
    if progress:
        for row in out:
            progress(row)
    return out


def run_benchmarks(workloads: Iterable[str] = QUICK_WORKLOADS,
                   peers: Iterable[str] = DEFAULT_PEERS, threads: int = 1,
                   budget: float = NORMAL_BUDGET, seed: int = 0,
                   progress: Optional[Callable[[dict], None]] = None,
                   on_block: Optional[Callable[[float, str], None]] = None,
                   cold: bool = False, **kwargs) -> List[dict]:
    """Run `run_workload` for each named workload (``["all"]``: every one); a flat
    list of result dicts. ValueError for unknown workloads, peers or modes.
    `on_block(fraction, label)`: progress through the whole run. Other keywords
    (modes, rounds, block_calls, block_time, peak_gflops, evictor) go to `run_workload`."""
    names = select_workloads(workloads)
    peers = select_peers(peers)
    select_modes(kwargs.get("modes", DEFAULT_MODES))
    if cold and kwargs.get("evictor") is None:
        kwargs["evictor"] = CacheEvictor(threads=threads)   # one buffer for the whole run
    results = []
    for k, name in enumerate(names):
        tick = None
        if on_block is not None:
            def tick(frac, label, k=k):
                on_block((k + frac) / len(names), f"workload {k + 1}/{len(names)}: {label}")
        results += run_workload(name, peers=peers, threads=threads, budget=budget, seed=seed,
                                progress=progress, on_block=tick, cold=cold, **kwargs)
    return results


def all_checks_passed(results: Iterable[dict]) -> bool:
    """No runner mismatched or failed (skipped peers are fine)."""
    return all(r["status"] in ("ok", "skipped") for r in results)


def run_quantized(name: str, mode: str, threads: int = 1, budget: float = NORMAL_BUDGET,
                  seed: int = 0, rounds: int = DEFAULT_ROUNDS) -> dict:
    """One workload, one quantization mode: medians of ours quantized, ours float32 and
    (for "int8") onnxruntime's DynamicQuantizeLSTM on the same weights and input, timed
    round-robin, with each one's max / mean abs error against our float64 model."""
    wl = workload(name)
    model = make_model(wl, seed)
    x = make_input(wl, seed + 1)
    ref = check.reference(model, x)
    runners = {"ours-f32": build_runner("ours", model, x, threads),
               "ours": build_runner(f"ours-{mode}", model, x, threads)}
    row = {"workload": name, "mode": mode, "threads": threads, "T": wl.T, "B": wl.B,
           "I": wl.I, "H": wl.H, "num_layers": wl.num_layers,
           "num_directions": 2 if wl.bidirectional else 1}
    if mode == "int8":
        try:
            runners["onnxruntime-int8"] = build_runner("onnxruntime-int8", model, x, threads)
        except PeerUnavailable as e:
            row["onnxruntime-int8_skipped"] = str(e)
    try:
        for rname, r in runners.items():
            row[f"{rname}_max_err"], row[f"{rname}_mean_err"] = check.output_errors(r.fn(), ref)
        times = round_robin({k: r.fn for k, r in runners.items()}, rounds=rounds,
                            block_time=budget / rounds)
    finally:
        for r in runners.values():
            r.close()
    for rname, t in times.items():
        row[f"{rname}_ms"] = summarize(t)["median_ms"]
    row["speedup_vs_f32"] = row["ours-f32_ms"] / row["ours_ms"]
    if "onnxruntime-int8_ms" in row:
        row["ort_over_ours"] = row["onnxruntime-int8_ms"] / row["ours_ms"]
    return row
