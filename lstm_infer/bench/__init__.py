"""Side-by-side benchmark: lstm_infer against its peers (torch, onnxruntime float32 and
int8, OpenVINO f32 and bf16, TensorFlow), on the same weights.

Every runner is checked before it is timed. Ours is compared with our own
float64 model on the same weights (the test suite anchors that model to its
independent numpy oracle, tests/reference.py); each peer is built from *our*
model's canonical weights and compared with our output (``out``, ``h_n`` and
``c_n`` where the peer returns them), within the tolerances of
`lstm_infer.tolerances`. A runner whose output differs by more is still timed,
but its row says so and `all_checks_passed` is False (the CLI then exits with
status 1).

Reduced-precision runners (our quantized modes, onnxruntime int8, OpenVINO bf16)
are checked against our float64 model with a sanity bound (`check.tol_reduced`)
and their max abs errors reported; each row says the precision the engine
actually ran (OpenVINO asked for bf16 on a CPU without bf16 runs f32: that row
is skipped, not labelled bf16).

Timing (`timing.round_robin`): all engines of a workload are built, checked and
warmed up, then timed in rounds (default 7): each round runs one block of calls
per engine (a fixed count, or as many as fill budget / rounds seconds), the
engine order rotating by one each round, so drift and other load hit every
engine alike. With ``cold=True`` a `CacheEvictor` reads twice the last-level
cache before every call (untimed). GC is off; `time.perf_counter`. We report
the median (and p10/p90) over all calls, each round's median, GFLOP/s
(`workloads.flops` / median, and % of a measured sgemm peak, `roofline`), the
domain figures sequences/s (B / median) and steps/s (T*B / median), and for
audio workloads x real time (audio seconds processed per second, assuming
10 ms feature frames). Ratios are peer median / our median (int8 peers: / ours
int8): above 1 means we are faster.

Fairness: all runners get the same input array, the same thread count
(ours: ``num_threads=``; torch: ``torch.set_num_threads``; onnxruntime:
``intra_op_num_threads`` with ``inter_op_num_threads=1``; OpenVINO:
``INFERENCE_NUM_THREADS`` with ``NUM_STREAMS=1``) and run in this process. Each
runner's time includes its own input/output conversion (numpy <-> torch tensors
are zero-copy; onnxruntime and OpenVINO return fresh arrays).

torch, onnx, onnxruntime, openvino and tensorflow are imported only when their
runner is built; a missing one is reported as skipped.

    from lstm_infer import bench
    results = bench.run_benchmarks(["kws"], peers=["torch", "onnxruntime"], threads=1)
    print(bench.render_table(results, bench.environment(threads=1), markdown=True))

Modules: `workloads` (sizes, model, input, flops), `runners` (one module per
engine), `check` (what each output is compared with, and the tolerances),
`timing` (round-robin, cache eviction), `suite` (build, check and time the
runners), `concurrency`, `machine` (the report's header, caches, CPU flags),
`report` (rendering), `plot` (``--plot``), `progress` (the stderr bar),
`roofline` (the machine's measured limits), `model_file` (``--model FILE``: a loaded
file instead of a built-in workload). The peers load our weights through
the exporters of `lstm_infer.formats` (`pytorch.to_state_dict`, `onnx.to_onnx`,
`keras.to_keras_weights`).
"""
from .check import max_abs_diff, reference, tol_reduced, tolerance
from .concurrency import concurrency_scaling
from .machine import BUSY_CORES, cache_sizes, cpu_flags, environment, llc_bytes
from .model_file import DEFAULT_SHAPE, parse_shape, run_model_file
from .plot import require_matplotlib, write_plot
from .progress import ProgressBar
from .report import (progress_line, render_concurrency, render_quantized, render_table,
                     table_rows, write_json)
from .roofline import load as load_roofline
from .roofline import peak_for
from .runners import DEFAULT_PEERS, PEERS, PeerUnavailable, Runner, build_runner, select_peers
from .suite import (DEFAULT_MODES, all_checks_passed, run_benchmarks, run_quantized,
                    run_workload, select_modes)
from .timing import (DEFAULT_ROUNDS, MIN_REPS, NORMAL_BUDGET, QUICK_BUDGET, CacheEvictor,
                     round_robin, rotation, time_calls)
from .workloads import (FRAME_MS, LARGE_WORKLOADS, QUICK_WORKLOADS, WORKLOADS, Workload, flops,
                        make_input, make_model, model_flops, parse_spec, select_workloads)

__all__ = [
    "Workload", "WORKLOADS", "QUICK_WORKLOADS", "LARGE_WORKLOADS", "FRAME_MS",
    "select_workloads", "parse_spec", "make_model", "make_input", "flops", "model_flops",
    "DEFAULT_SHAPE", "parse_shape", "run_model_file",
    "PEERS", "DEFAULT_PEERS", "PeerUnavailable", "Runner", "build_runner", "select_peers",
    "DEFAULT_MODES", "select_modes",
    "reference", "max_abs_diff", "tolerance", "tol_reduced",
    "MIN_REPS", "QUICK_BUDGET", "NORMAL_BUDGET", "DEFAULT_ROUNDS", "time_calls",
    "round_robin", "rotation", "CacheEvictor",
    "run_workload", "run_benchmarks", "run_quantized", "all_checks_passed",
    "concurrency_scaling", "environment", "BUSY_CORES", "cache_sizes", "llc_bytes",
    "cpu_flags", "render_table", "table_rows", "render_quantized", "render_concurrency",
    "progress_line", "write_json", "ProgressBar", "require_matplotlib", "write_plot",
    "load_roofline", "peak_for",
]
