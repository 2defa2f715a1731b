"""Side-by-side benchmark: lstm_infer against torch and onnxruntime, on the same weights.

Every runner is checked before it is timed. Ours is compared with our own
float64 model on the same weights (the test suite anchors that model to its
independent numpy oracle, tests/reference.py); each peer is built from *our*
model's canonical weights and compared with our output (``out``, ``h_n`` and
``c_n`` where the peer returns them), within the tolerances of
`lstm_infer.tolerances`. A runner whose output differs by more is still timed,
but its row says so and `all_checks_passed` is False (the CLI then exits with
status 1).

Timing (`timing.time_calls`): a warm-up, then back-to-back forward calls until
a time budget is spent (at least `MIN_REPS` calls), with the garbage collector
off, measured with `time.perf_counter`. We report the median (and p10/p90) per
forward call, the domain figures sequences/s (B / median) and steps/s
(T*B / median), and for audio workloads x real time (audio seconds processed
per second, assuming 10 ms feature frames). Ratios are peer median / our
median: above 1 means we are faster.

Fairness: all runners get the same input array, the same thread count
(ours: ``num_threads=``; torch: ``torch.set_num_threads``; onnxruntime:
``intra_op_num_threads`` with ``inter_op_num_threads=1``) and run in this
process one after another. Each runner's time includes its own input/output
conversion (numpy <-> torch tensors are zero-copy; onnxruntime copies).

torch, onnx, onnxruntime (and tensorflow, opt-in) are imported only when their
runner is built; a missing one is reported as skipped.

    from lstm_infer import bench
    results = bench.run_benchmarks(["kws"], peers=["torch", "onnxruntime"], threads=1)
    print(bench.render_table(results, bench.environment(threads=1), markdown=True))

Modules: `workloads` (sizes, model, input), `runners` (one module per engine),
`check` (what each output is compared with, and the tolerances), `timing`,
`suite` (build, check and time each runner), `concurrency`, `machine` (the
report's header), `report` (rendering). The peers load our weights through the
exporters of `lstm_infer.formats` (`pytorch.to_state_dict`, `onnx.to_onnx`,
`keras.to_keras_weights`).
"""
from .check import max_abs_diff, reference, tolerance
from .concurrency import concurrency_scaling
from .machine import BUSY_CORES, environment
from .report import (progress_line, render_concurrency, render_quantized, render_table,
                     table_rows, write_json)
from .runners import DEFAULT_PEERS, PEERS, PeerUnavailable, Runner, build_runner, select_peers
from .suite import all_checks_passed, run_benchmarks, run_quantized, run_workload
from .timing import MIN_REPS, NORMAL_BUDGET, QUICK_BUDGET, time_calls
from .workloads import (FRAME_MS, LARGE_WORKLOADS, QUICK_WORKLOADS, WORKLOADS, Workload,
                        make_input, make_model, select_workloads)

__all__ = [
    "Workload", "WORKLOADS", "QUICK_WORKLOADS", "LARGE_WORKLOADS", "FRAME_MS",
    "select_workloads", "make_model", "make_input",
    "PEERS", "DEFAULT_PEERS", "PeerUnavailable", "Runner", "build_runner", "select_peers",
    "reference", "max_abs_diff", "tolerance",
    "MIN_REPS", "QUICK_BUDGET", "NORMAL_BUDGET", "time_calls",
    "run_workload", "run_benchmarks", "run_quantized", "all_checks_passed",
    "concurrency_scaling", "environment", "BUSY_CORES",
    "render_table", "table_rows", "render_quantized", "render_concurrency", "progress_line",
    "write_json",
]
