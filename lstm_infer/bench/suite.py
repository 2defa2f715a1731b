"""The benchmark runs: per workload, build each runner, check its output, time it.

Every runner is checked before it is timed (`check`): ours against our float64
model, each peer against ours (``out``, ``h_n`` and ``c_n`` where the peer
returns them). A runner whose output differs by more than its tolerance is
still timed, but its row says so and `all_checks_passed` is False.
"""
from __future__ import annotations

from typing import Callable, Iterable, List, Optional

import numpy as np

from . import check
from .runners import DEFAULT_PEERS, PeerUnavailable, build_runner, select_peers
from .timing import NORMAL_BUDGET, summarize, time_calls
from .workloads import (QUICK_WORKLOADS, Workload, figures, make_input, make_model,
                        select_workloads, workload)


def _row(name: str, wl: Workload, runner: str, threads: int, tol: float) -> dict:
    return {"workload": name, "T": wl.T, "B": wl.B, "I": wl.I, "H": wl.H,
            "num_layers": wl.num_layers, "num_directions": 2 if wl.bidirectional else 1,
            "runner": runner, "version": None, "threads": threads, "status": "ok",
            "reason": None, "checked_against": None, "max_abs_diff": None, "tol": tol,
            "median_ms": None, "p10_ms": None, "p90_ms": None, "reps": 0,
            "sequences_per_s": None, "steps_per_s": None, "x_realtime": None,
            "ratio_vs_ours": None}


def _check_and_time(runner_name: str, model, x, threads: int, budget: float, want,
                    against: str, row: dict, wl: Workload):
    """Build the runner, check its output against `want` (unless None), time it;
    fills `row` and returns the output. PeerUnavailable if it cannot be built."""
    runner = build_runner(runner_name, model, x, threads)
    row["version"] = runner.version
    try:
        got = runner.fn()
        if want is not None:
            diff = check.max_abs_diff(got, want)
            row.update(checked_against=against, max_abs_diff=diff)
            if not diff <= row["tol"]:
                row["status"] = "mismatch"
        times = time_calls(runner.fn, budget)
    finally:
        runner.close()
    row.update(summarize(times), **figures(row["workload"], wl, float(np.median(times))))
    return got


def run_workload(name: str, wl: Optional[Workload] = None, peers: Iterable[str] = DEFAULT_PEERS,
                 threads: int = 1, budget: float = NORMAL_BUDGET, seed: int = 0,
                 progress: Optional[Callable[[dict], None]] = None) -> List[dict]:
    """Benchmark ours and `peers` on one workload; one result dict per runner (ours first).

    ``status`` is "ok", "mismatch" (checked and timed, but off by more than ``tol``),
    "skipped" (peer unavailable; ``reason`` says why) or "error" (``reason``).
    ``max_abs_diff`` is against our float64 model for ours, against ours for peers.
    """
    wl = workload(name) if wl is None else Workload(*wl)
    model = make_model(wl, seed)
    x = make_input(wl, seed + 1)
    ref = check.reference(model, x)
    rows, ours_out, ours_ms = [], None, None
    for runner_name in ["ours"] + [p for p in peers if p != "ours"]:
        is_ours = runner_name == "ours"
        want, against = (ref, "ours float64") if is_ours else (ours_out, "ours")
        row = _row(name, wl, runner_name, threads,
                   check.tol_vs_float64() if is_ours else check.tol_vs_ours())
        rows.append(row)
        try:
            got = _check_and_time(runner_name, model, x, threads, budget, want, against,
                                  row, wl)
        except PeerUnavailable as e:
            row.update(status="skipped", reason=str(e))
        except Exception as e:  # a peer failing must not kill the whole run
            if is_ours:
                raise
            row.update(status="error", reason=f"{type(e).__name__}: {e}")
        else:
            if is_ours:
                ours_out, ours_ms = got, row["median_ms"]
            elif ours_ms:
                row["ratio_vs_ours"] = row["median_ms"] / ours_ms
        if progress:
            progress(row)
    return rows


def run_benchmarks(workloads: Iterable[str] = QUICK_WORKLOADS,
                   peers: Iterable[str] = DEFAULT_PEERS, threads: int = 1,
                   budget: float = NORMAL_BUDGET, seed: int = 0,
                   progress: Optional[Callable[[dict], None]] = None) -> List[dict]:
    """Run `run_workload` for each named workload (``["all"]``: every one); a flat
    list of result dicts. ValueError for unknown workloads or peers."""
    names = select_workloads(workloads)
    peers = select_peers(peers)
    results = []
    for name in names:
        results += run_workload(name, peers=peers, threads=threads, budget=budget, seed=seed,
                                progress=progress)
    return results


def all_checks_passed(results: Iterable[dict]) -> bool:
    """No runner mismatched or failed (skipped peers are fine)."""
    return all(r["status"] in ("ok", "skipped") for r in results)


def run_quantized(name: str, mode: str, threads: int = 1, budget: float = NORMAL_BUDGET,
                  seed: int = 0) -> dict:
    """One workload, one quantization mode: medians of ours quantized, ours float32 and
    (for "int8") onnxruntime's DynamicQuantizeLSTM on the same weights and input, with
    each one's max / mean abs error against our float64 model."""
    wl = workload(name)
    model = make_model(wl, seed)
    x = make_input(wl, seed + 1)
    ref = check.reference(model, x)
    runners = {"ours-f32": build_runner("ours", model, x, threads),
               "ours": build_runner("ours", model.quantize(mode), x, threads)}
    row = {"workload": name, "mode": mode, "threads": threads, "T": wl.T, "B": wl.B,
           "I": wl.I, "H": wl.H, "num_layers": wl.num_layers,
           "num_directions": 2 if wl.bidirectional else 1}
    if mode == "int8":
        try:
            runners["onnxruntime-int8"] = build_runner("onnxruntime-int8", model, x, threads)
        except PeerUnavailable as e:
            row["onnxruntime-int8_skipped"] = str(e)
    for rname, r in runners.items():
        got = r.fn()
        row[f"{rname}_max_err"], row[f"{rname}_mean_err"] = check.output_errors(got, ref)
        row[f"{rname}_ms"] = summarize(time_calls(r.fn, budget))["median_ms"]
        r.close()
    row["speedup_vs_f32"] = row["ours-f32_ms"] / row["ours_ms"]
    if "onnxruntime-int8_ms" in row:
        row["ort_over_ours"] = row["onnxruntime-int8_ms"] / row["ours_ms"]
    return row

