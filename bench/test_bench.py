"""Ours vs torch vs onnxruntime, one benchmark group per workload, same weights.

Every benchmark first checks the runner's output: against our float64 model on
the same weights (which tests/ anchors to the numpy oracle, tests/reference.py),
against our output and, when torch is installed, against torch.nn.LSTM's, with
the tolerances of `lstm_infer.tolerances` (TOL vs float64, TOL_FRAMEWORK between
engines); the output of the timed calls is checked again afterwards.
`extra_info` records the workload, the checks' max abs diffs and the domain
figures (sequences/s, steps/s).

    python -m pytest bench --benchmark-only                 # kws, stream256, text
    python -m pytest bench --benchmark-only --bench-all     # + lat1024, tput512, asr-bi
    python -m pytest bench --benchmark-only --bench-threads 2
"""
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")

from lstm_infer import bench as B  # noqa: E402
from lstm_infer.tolerances import TOL, TOL_FRAMEWORK  # noqa: E402

RUNNERS = ["ours", "torch", "onnxruntime"]
WORKLOAD_PARAMS = [pytest.param(name, id=name,
                                marks=[pytest.mark.large] if name in B.LARGE_WORKLOADS else [])
                   for name in B.WORKLOADS]


@dataclass
class Case:
    name: str
    wl: B.Workload
    model: object
    x: np.ndarray
    ref: tuple                 # our float64 model's (out, h_n, c_n)
    ours: tuple                # our output
    torch: Optional[tuple]     # torch.nn.LSTM's output, if torch is installed


@pytest.fixture(scope="module", params=WORKLOAD_PARAMS)
def case(request, bench_threads):
    name = request.param
    wl = B.WORKLOADS[name]
    model = B.make_model(wl)
    x = B.make_input(wl)
    ours = B.build_runner("ours", model, x, bench_threads).fn()
    try:
        r = B.build_runner("torch", model, x, bench_threads)
        try:
            torch_out = r.fn()
        finally:
            r.close()
    except B.PeerUnavailable:
        torch_out = None
    return Case(name, wl, model, x, B.reference(model, x), ours, torch_out)


def _check(got, case, runner_name):
    d_ref = B.max_abs_diff(got, case.ref)
    assert d_ref <= TOL["float32"], f"{runner_name} vs our float64 model: max abs diff {d_ref:.3g}"
    d_ours = B.max_abs_diff(got, case.ours)
    assert d_ours <= TOL_FRAMEWORK["float32"], f"{runner_name} vs ours: max abs diff {d_ours:.3g}"
    d_torch = None
    if case.torch is not None:
        d_torch = B.max_abs_diff(got, case.torch)
        assert d_torch <= TOL_FRAMEWORK["float32"], \
            f"{runner_name} vs torch: max abs diff {d_torch:.3g}"
    return d_ref, d_ours, d_torch


@pytest.mark.parametrize("runner_name", RUNNERS)
def test_forward(benchmark, case, runner_name, bench_threads):
    try:
        runner = B.build_runner(runner_name, case.model, case.x, bench_threads)
    except B.PeerUnavailable as e:
        pytest.skip(str(e))
    wl = case.wl
    try:
        d_ref, d_ours, d_torch = _check(runner.fn(), case, runner_name)
        benchmark.group = (f"{case.name}: T={wl.T} B={wl.B} I={wl.I} H={wl.H} "
                           f"L={wl.num_layers} D={2 if wl.bidirectional else 1}")
        benchmark.extra_info.update(
            workload=case.name, runner=runner_name, version=runner.version,
            threads=bench_threads, max_abs_diff_vs_f64=d_ref, max_abs_diff_vs_ours=d_ours,
            max_abs_diff_vs_torch=d_torch)
        result = benchmark(runner.fn)
        _check(result, case, runner_name)
    finally:
        runner.close()
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        median = stats.stats.median
        benchmark.extra_info.update(sequences_per_s=wl.B / median,
                                    steps_per_s=wl.T * wl.B / median)
