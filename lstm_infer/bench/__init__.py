"""Side-by-side benchmark: lstm_infer against torch and onnxruntime, on the same weights.

Every runner is checked before it is timed. Ours is compared with a float64
numpy oracle (`reference_forward`); each peer is built from *our* model's
canonical weights and compared with our output (``out``, ``h_n`` and ``c_n``
where the peer returns them). A runner whose output differs by more than
`TOL` is still timed, but its row says so and `all_checks_passed` is False
(the CLI then exits with status 1).

Timing (`time_calls`): a warm-up, then back-to-back forward calls until a time
budget is spent (at least `MIN_REPS` calls), with the garbage collector off,
measured with `time.perf_counter`. We report the median (and p10/p90) per
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
"""
from __future__ import annotations

import datetime
import gc
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence

import numpy as np

from ..formats.gate_orders import from_canonical


class Workload(NamedTuple):
    T: int
    B: int
    I: int
    H: int
    num_layers: int
    bidirectional: bool


WORKLOADS: Dict[str, Workload] = {
    # keyword spotting: 40 MFCCs, 1 s of 10 ms frames, batch 1
    "kws": Workload(100, 1, 40, 128, 1, False),
    # streaming acoustic model, batch 1
    "stream256": Workload(100, 1, 256, 256, 1, False),
    # a wide layer at batch 1: weight-bandwidth bound
    "lat1024": Workload(50, 1, 1024, 1024, 1, False),
    # text classifier, small batch
    "text": Workload(64, 8, 128, 256, 1, False),
    # offline throughput: two layers, batch 64 (GEMM bound)
    "tput512": Workload(100, 64, 512, 512, 2, False),
    # bidirectional ASR encoder: 80 filterbanks, 2 s, batch 16
    "asr-bi": Workload(200, 16, 80, 320, 2, True),
}
QUICK_WORKLOADS = ("kws", "stream256", "text")
LARGE_WORKLOADS = ("lat1024", "tput512", "asr-bi")
# Feature-frame hop of the audio workloads, for the "x real time" figure.
FRAME_MS = {"kws": 10.0, "stream256": 10.0, "asr-bi": 10.0}

PEERS = ("torch", "onnxruntime", "tensorflow")
DEFAULT_PEERS = ("torch", "onnxruntime")
SHORT_NAMES = {"ours": "ours", "torch": "torch", "onnxruntime": "ort", "tensorflow": "tf"}

TOL = 1e-4           # max abs difference accepted for every check
QUICK_BUDGET = 0.3   # seconds of timed calls per runner
NORMAL_BUDGET = 2.0
MIN_REPS = 5
BUSY_CORES = 0.25    # other processes using more than this many cores -> "timings are noisy"


class PeerUnavailable(Exception):
    """A peer cannot run here (not installed, or the model uses a feature it lacks)."""


@dataclass
class Runner:
    """A ready-to-time forward call. ``fn()`` returns (out, h_n, c_n) as numpy
    arrays in our layout; h_n/c_n may be None when the peer does not give them."""

    name: str
    version: str
    fn: Callable[[], tuple]
    close: Callable[[], None] = lambda: None


# ---------------------------------------------------------------- inputs and oracle

def make_model(wl: Workload, seed: int = 0):
    """Our model for a workload (float32, torch's weight init)."""
    from .. import LSTM
    return LSTM.random(wl.I, wl.H, num_layers=wl.num_layers, bidirectional=wl.bidirectional,
                       dtype="float32", seed=seed)


def make_input(wl: Workload, seed: int = 1) -> np.ndarray:
    """x (T, B, I) float32, ~U(-1, 1)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, (wl.T, wl.B, wl.I)).astype(np.float32)


def reference_forward(weights, x: np.ndarray):
    """Float64 numpy LSTM on canonical weights (clarity over speed; default
    activations, no clip, no CIFG). Returns out (T, B, D*H_out), h_n, c_n (D*L, B, .)."""
    from scipy.special import expit as sigmoid

    inp = np.asarray(x, dtype=np.float64)
    T, B, _ = inp.shape
    h_n, c_n = [], []
    for layer in weights:
        ys = []
        for d, w in enumerate(layer):
            w = {k: np.asarray(v, dtype=np.float64) for k, v in w.items()}
            H = w["w_ih"].shape[0] // 4
            Hout = w["w_hr"].shape[0] if "w_hr" in w else H
            peep = "p_i" in w
            xw = inp @ w["w_ih"].T + w["b"]                      # (T, B, 4H)
            h, c = np.zeros((B, Hout)), np.zeros((B, H))
            y = np.empty((T, B, Hout))
            for t in (range(T - 1, -1, -1) if d else range(T)):
                z = xw[t] + h @ w["w_hh"].T
                zi, zf, zg, zo = z[:, :H], z[:, H:2 * H], z[:, 2 * H:3 * H], z[:, 3 * H:]
                if peep:
                    zi, zf = zi + w["p_i"] * c, zf + w["p_f"] * c
                c = sigmoid(zf) * c + sigmoid(zi) * np.tanh(zg)
                if peep:
                    zo = zo + w["p_o"] * c
                h = sigmoid(zo) * np.tanh(c)
                if "w_hr" in w:
                    h = h @ w["w_hr"].T
                y[t] = h
            ys.append(y)
            h_n.append(h)
            c_n.append(c)
        inp = np.concatenate(ys, axis=2)
    return inp, np.stack(h_n), np.stack(c_n)


def _plain(model) -> bool:
    """True if `reference_forward` and the peers compute what `model` computes."""
    from ..config import DEFAULT_ACTIVATIONS
    c = model.config
    return (c.clip is None and c.cell_clip is None and not c.input_forget
            and tuple(c.activations) == tuple(DEFAULT_ACTIVATIONS) and c.uniform
            and not c.batch_first)


def max_abs_diff(got: Sequence, want: Sequence) -> float:
    """Largest |got - want| over the pairs whose both sides are given (NaN-safe: NaN -> inf)."""
    worst = 0.0
    for g, w in zip(got, want):
        if g is None or w is None:
            continue
        g, w = np.asarray(g, dtype=np.float64), np.asarray(w, dtype=np.float64)
        if g.shape != w.shape:
            return float("inf")
        if g.size:
            d = np.abs(g - w).max()
            worst = max(worst, float(d) if np.isfinite(d) else float("inf"))
    return worst


# ---------------------------------------------------------------- runners

def ours_runner(model, x, threads: int) -> Runner:
    from .. import __version__

    def fn():
        out, (h, c) = model(x, num_threads=threads)
        return out, h, c
    return Runner("ours", __version__, fn)


def torch_runner(model, x, threads: int) -> Runner:
    """torch.nn.LSTM loaded with our weights (b_ih = fused bias, b_hh = 0), eval, inference_mode."""
    try:
        import torch
    except ImportError as e:
        raise PeerUnavailable(f"torch not importable ({e})") from None
    cfg = model.config
    if cfg.peephole:
        raise PeerUnavailable("torch.nn.LSTM has no peephole connections")
    if not _plain(model):
        raise PeerUnavailable("model uses clip/CIFG/activations/batch_first that the peer lacks")
    lstm = torch.nn.LSTM(cfg.input_size, cfg.hidden_size, num_layers=cfg.num_layers,
                         bidirectional=cfg.bidirectional, proj_size=cfg.proj_size,
                         batch_first=False, dtype=torch.float32)
    sd = {}
    for k, layer in enumerate(model.weights):
        for d, w in enumerate(layer):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            sd["weight_ih" + sfx] = torch.from_numpy(np.array(w["w_ih"], dtype=np.float32))
            sd["weight_hh" + sfx] = torch.from_numpy(np.array(w["w_hh"], dtype=np.float32))
            sd["bias_ih" + sfx] = torch.from_numpy(np.array(w["b"], dtype=np.float32))
            sd["bias_hh" + sfx] = torch.zeros(4 * cfg.hidden_size)
            if "w_hr" in w:
                sd["weight_hr" + sfx] = torch.from_numpy(np.array(w["w_hr"], dtype=np.float32))
    lstm.load_state_dict(sd, strict=True)
    lstm.eval()
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    def fn():
        with torch.inference_mode():
            out, (h, c) = lstm(xt)
        return out.numpy(), h.numpy(), c.numpy()
    return Runner("torch", torch.__version__, fn, lambda: torch.set_num_threads(saved))


def onnx_model(model, opset: int = 17):
    """An ONNX graph of `model`: one LSTM node per layer (weights as initializers,
    gates reordered to i,o,f,c, fused bias in Wb and zeros in Rb), Y (T, D, B, H)
    transposed and reshaped to (T, B, D*H) between layers. Outputs: Y, Y_h, Y_c
    with our shapes ((T, B, D*H), (D*L, B, H), (D*L, B, H))."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as e:
        raise PeerUnavailable(f"onnx not importable ({e})") from None
    cfg = model.config
    if cfg.proj_size:
        raise PeerUnavailable("ONNX LSTM has no projection (proj_size)")
    if not _plain(model):
        raise PeerUnavailable("model uses clip/CIFG/activations/batch_first not mapped here")
    H = cfg.hidden_size
    D = 2 if cfg.bidirectional else 1
    nodes, inits = [], []
    cur = "X"
    hs, cs = [], []
    for k, layer in enumerate(model.weights):
        W = np.stack([from_canonical(w["w_ih"], "onnx") for w in layer]).astype(np.float32)
        R = np.stack([from_canonical(w["w_hh"], "onnx") for w in layer]).astype(np.float32)
        Bw = np.stack([np.concatenate([from_canonical(w["b"], "onnx"), np.zeros(4 * H)])
                       for w in layer]).astype(np.float32)
        names = [f"W{k}", f"R{k}", f"B{k}"]
        inits += [numpy_helper.from_array(a, n) for a, n in zip((W, R, Bw), names)]
        inputs = [cur] + names
        if cfg.peephole:  # ONNX P = [p_i, p_o, p_f]
            P = np.stack([np.concatenate([w["p_i"], w["p_o"], w["p_f"]]) for w in layer])
            inits.append(numpy_helper.from_array(P.astype(np.float32), f"P{k}"))
            inputs += ["", "", "", f"P{k}"]  # sequence_lens, initial_h, initial_c unset
        nodes.append(helper.make_node(
            "LSTM", inputs, [f"Y{k}", f"Yh{k}", f"Yc{k}"], name=f"lstm{k}", hidden_size=H,
            direction="bidirectional" if D == 2 else "forward"))
        nodes.append(helper.make_node("Transpose", [f"Y{k}"], [f"Yt{k}"], perm=[0, 2, 1, 3]))
        last = k == cfg.num_layers - 1
        nxt = "Y" if last else f"X{k + 1}"
        nodes.append(helper.make_node("Reshape", [f"Yt{k}", "shape_TB_"], [nxt]))
        hs.append(f"Yh{k}")
        cs.append(f"Yc{k}")
        cur = nxt
    inits.append(numpy_helper.from_array(np.array([0, 0, -1], dtype=np.int64), "shape_TB_"))
    nodes.append(helper.make_node("Concat", hs, ["Y_h"], axis=0))
    nodes.append(helper.make_node("Concat", cs, ["Y_c"], axis=0))
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, "lstm_infer_bench",
        [helper.make_tensor_value_info("X", f32, ["T", "B", cfg.input_size])],
        [helper.make_tensor_value_info("Y", f32, ["T", "B", D * H]),
         helper.make_tensor_value_info("Y_h", f32, [D * cfg.num_layers, "B", H]),
         helper.make_tensor_value_info("Y_c", f32, [D * cfg.num_layers, "B", H])],
        initializer=inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                          producer_name="lstm_infer.bench")
    m.ir_version = 8  # opset 17's IR; accepted by every onnxruntime >= 1.13
    onnx.checker.check_model(m)
    return m


def onnxruntime_runner(model, x, threads: int) -> Runner:
    """onnxruntime CPU session on `onnx_model(model)`, all graph optimisations on."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise PeerUnavailable(f"onnxruntime not importable ({e})") from None
    proto = onnx_model(model)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feed = {"X": np.ascontiguousarray(x, dtype=np.float32)}

    def fn():
        y, h, c = sess.run(["Y", "Y_h", "Y_c"], feed)
        return y, h, c
    return Runner("onnxruntime", ort.__version__, fn)


def tensorflow_runner(model, x, threads: int) -> Runner:
    """Keras LSTM stack (opt-in; only when tensorflow is importable). Compared on `out` only."""
    try:
        import tensorflow as tf
    except ImportError as e:
        raise PeerUnavailable(f"tensorflow not importable ({e})") from None
    cfg = model.config
    if cfg.peephole or cfg.proj_size or not _plain(model):
        raise PeerUnavailable("Keras LSTM has no peephole/projection/clip")
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    H = cfg.hidden_size
    keras = tf.keras
    inp = keras.Input((None, cfg.input_size), dtype="float32")
    y, layers = inp, []
    for _ in range(cfg.num_layers):
        lyr = keras.layers.LSTM(H, return_sequences=True)
        if cfg.bidirectional:
            lyr = keras.layers.Bidirectional(lyr, merge_mode="concat")
        y = lyr(y)
        layers.append(lyr)
    net = keras.Model(inp, y)
    for lyr, dirs in zip(layers, model.weights):
        # Keras: kernel (I, 4H), recurrent_kernel (H, 4H), gate order i,f,c,o (= canonical)
        ws = []
        for w in dirs:
            ws += [np.asarray(w["w_ih"]).T, np.asarray(w["w_hh"]).T, np.asarray(w["b"])]
        lyr.set_weights(ws)
    xb = tf.constant(np.ascontiguousarray(np.transpose(x, (1, 0, 2)), dtype=np.float32))
    call = tf.function(lambda t: net(t, training=False))

    def fn():
        return np.transpose(call(xb).numpy(), (1, 0, 2)), None, None
    return Runner("tensorflow", tf.__version__, fn)


RUNNER_FACTORIES = {
    "ours": ours_runner,
    "torch": torch_runner,
    "onnxruntime": onnxruntime_runner,
    "tensorflow": tensorflow_runner,
}


def build_runner(name: str, model, x, threads: int) -> Runner:
    """Build runner `name` ("ours" or a peer) on `model`'s weights; raises PeerUnavailable."""
    if name not in RUNNER_FACTORIES:
        raise ValueError(f"unknown runner {name!r}; choose from {sorted(RUNNER_FACTORIES)}")
    return RUNNER_FACTORIES[name](model, x, threads)


# ---------------------------------------------------------------- timing

def time_calls(fn: Callable[[], object], budget: float, min_reps: int = MIN_REPS,
               max_reps: int = 100_000, warmup: Optional[float] = None) -> np.ndarray:
    """Seconds per call of `fn`: warm up (at least 2 calls, up to `warmup` seconds,
    default budget/5), then call until `budget` seconds are spent and at least
    `min_reps` calls are made. GC is off while timing."""
    warmup = budget / 5 if warmup is None else warmup
    t_end = time.perf_counter() + warmup
    n = 0
    while n < 2 or time.perf_counter() < t_end:
        fn()
        n += 1
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    times = []
    try:
        start = time.perf_counter()
        while len(times) < max_reps and (len(times) < min_reps
                                         or time.perf_counter() - start < budget):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    finally:
        if was_enabled:
            gc.enable()
    return np.asarray(times)


# ---------------------------------------------------------------- the benchmark

def _row(name: str, wl: Workload, runner: str, threads: int) -> dict:
    return {"workload": name, "T": wl.T, "B": wl.B, "I": wl.I, "H": wl.H,
            "num_layers": wl.num_layers, "num_directions": 2 if wl.bidirectional else 1,
            "runner": runner, "version": None, "threads": threads, "status": "ok",
            "reason": None, "checked_against": None, "max_abs_diff": None, "tol": TOL,
            "median_ms": None, "p10_ms": None, "p90_ms": None, "reps": 0,
            "sequences_per_s": None, "steps_per_s": None, "x_realtime": None,
            "ratio_vs_ours": None}


def run_workload(name: str, wl: Optional[Workload] = None, peers: Iterable[str] = DEFAULT_PEERS,
                 threads: int = 1, budget: float = NORMAL_BUDGET, seed: int = 0,
                 progress: Optional[Callable[[dict], None]] = None) -> List[dict]:
    """Benchmark ours and `peers` on one workload; one result dict per runner (ours first).

    ``status`` is "ok", "mismatch" (checked and timed, but off by more than `TOL`),
    "skipped" (peer unavailable; ``reason`` says why) or "error" (``reason``).
    ``max_abs_diff`` is against the float64 oracle for ours, against ours for peers.
    """
    wl = WORKLOADS[name] if wl is None else Workload(*wl)
    model = make_model(wl, seed)
    x = make_input(wl, seed + 1)
    ref = reference_forward(model.weights, x) if _plain(model) else None
    rows, ours_out, ours_ms = [], None, None
    for runner_name in ["ours"] + [p for p in peers if p != "ours"]:
        row = _row(name, wl, runner_name, threads)
        rows.append(row)
        try:
            runner = build_runner(runner_name, model, x, threads)
        except PeerUnavailable as e:
            row.update(status="skipped", reason=str(e))
            if progress:
                progress(row)
            continue
        except Exception as e:  # a peer failing to build must not kill the whole run
            if runner_name == "ours":
                raise
            row.update(status="error", reason=f"{type(e).__name__}: {e}")
            if progress:
                progress(row)
            continue
        row["version"] = runner.version
        try:
            got = runner.fn()
            if runner_name == "ours":
                ours_out = got
                want, against = ref, "float64 reference"
            else:
                want, against = ours_out, "ours"
            if want is not None:
                diff = max_abs_diff(got, want)
                row.update(checked_against=against, max_abs_diff=diff)
                if not diff <= TOL:
                    row["status"] = "mismatch"
            times = time_calls(runner.fn, budget)
        except Exception as e:
            if runner_name == "ours":
                raise
            row.update(status="error", reason=f"{type(e).__name__}: {e}")
            if progress:
                progress(row)
            continue
        finally:
            runner.close()
        med = float(np.median(times))
        row.update(median_ms=med * 1e3, p10_ms=float(np.percentile(times, 10)) * 1e3,
                   p90_ms=float(np.percentile(times, 90)) * 1e3, reps=int(times.size),
                   sequences_per_s=wl.B / med, steps_per_s=wl.T * wl.B / med)
        if name in FRAME_MS:
            row["x_realtime"] = wl.T * wl.B * FRAME_MS[name] / 1e3 / med
        if runner_name == "ours":
            ours_ms = row["median_ms"]
        elif ours_ms:
            row["ratio_vs_ours"] = row["median_ms"] / ours_ms
        if progress:
            progress(row)
    return rows


def run_benchmarks(workloads: Iterable[str] = QUICK_WORKLOADS,
                   peers: Iterable[str] = DEFAULT_PEERS, threads: int = 1,
                   budget: float = NORMAL_BUDGET, seed: int = 0,
                   progress: Optional[Callable[[dict], None]] = None) -> List[dict]:
    """Run `run_workload` for each named workload; a flat list of result dicts."""
    names = list(workloads)
    unknown = [w for w in names if w not in WORKLOADS]
    if unknown:
        raise ValueError(f"unknown workload(s) {unknown}; choose from {list(WORKLOADS)}")
    bad = [p for p in peers if p not in PEERS]
    if bad:
        raise ValueError(f"unknown peer(s) {bad}; choose from {list(PEERS)}")
    peers = list(dict.fromkeys(peers))
    results = []
    for name in names:
        results += run_workload(name, peers=peers, threads=threads, budget=budget, seed=seed,
                                progress=progress)
    return results


def onnxruntime_int8_runner(model, x, threads: int) -> Runner:
    """onnxruntime's DynamicQuantizeLSTM: the float graph of `onnx_model(model)` through
    onnxruntime.quantization.quantize_dynamic (int8 weights, dynamic u8 activations)."""
    import os
    import tempfile
    try:
        import onnx
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:
        raise PeerUnavailable(f"onnxruntime quantization not importable ({e})") from None
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "f32.onnx"), os.path.join(tmp, "int8.onnx")
        onnx.save(onnx_model(model), src)
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
        qproto = onnx.load(dst)
    if not any(n.op_type == "DynamicQuantizeLSTM" for n in qproto.graph.node):
        raise PeerUnavailable("onnxruntime did not produce DynamicQuantizeLSTM nodes")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(qproto.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    feed = {"X": np.ascontiguousarray(x, dtype=np.float32)}

    def fn():
        y, h, c = sess.run(["Y", "Y_h", "Y_c"], feed)
        return y, h, c
    return Runner("onnxruntime-int8", ort.__version__, fn)


def _errors(got, ref):
    d = np.abs(np.asarray(got[0], np.float64) - ref[0])
    return float(d.max()), float(d.mean())


def run_quantized(name: str, mode: str, threads: int = 1, budget: float = NORMAL_BUDGET,
                  seed: int = 0) -> dict:
    """One workload, one quantization mode: medians of ours quantized, ours float32 and
    (for "int8") onnxruntime's DynamicQuantizeLSTM on the same weights and input, with
    each one's max / mean abs error against the float64 reference."""
    wl = WORKLOADS[name]
    model = make_model(wl, seed)
    x = make_input(wl, seed + 1)
    ref = reference_forward(model.weights, x)
    runners = {"ours-f32": ours_runner(model, x, threads),
               "ours": ours_runner(model.quantize(mode), x, threads)}
    row = {"workload": name, "mode": mode, "threads": threads, "T": wl.T, "B": wl.B,
           "I": wl.I, "H": wl.H, "num_layers": wl.num_layers,
           "num_directions": 2 if wl.bidirectional else 1}
    if mode == "int8":
        try:
            runners["onnxruntime-int8"] = onnxruntime_int8_runner(model, x, threads)
        except PeerUnavailable as e:
            row["onnxruntime-int8_skipped"] = str(e)
    for rname, r in runners.items():
        got = r.fn()
        row[f"{rname}_max_err"], row[f"{rname}_mean_err"] = _errors(got, ref)
        row[f"{rname}_ms"] = float(np.median(time_calls(r.fn, budget))) * 1e3
        r.close()
    row["speedup_vs_f32"] = row["ours-f32_ms"] / row["ours_ms"]
    if "onnxruntime-int8_ms" in row:
        row["ort_over_ours"] = row["onnxruntime-int8_ms"] / row["ours_ms"]
    return row


def render_quantized(rows: Sequence[dict], markdown: bool = False) -> str:
    head = ["workload", "mode", "ours ms", "ours f32 ms", "f32/ours", "ort-int8 ms", "ort/ours",
            "ours max err", "ours mean err", "ort max err", "ort mean err", "f32 max err"]
    lines = []
    for r in rows:
        ort = "onnxruntime-int8_ms" in r
        lines.append([r["workload"], r["mode"], f"{r['ours_ms']:.3f}", f"{r['ours-f32_ms']:.3f}",
                      f"{r['speedup_vs_f32']:.2f}x",
                      f"{r['onnxruntime-int8_ms']:.3f}" if ort else "-",
                      f"{r['ort_over_ours']:.2f}x" if ort else "-",
                      f"{r['ours_max_err']:.1e}", f"{r['ours_mean_err']:.1e}",
                      f"{r['onnxruntime-int8_max_err']:.1e}" if ort else "-",
                      f"{r['onnxruntime-int8_mean_err']:.1e}" if ort else "-",
                      f"{r['ours-f32_max_err']:.1e}"])
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(l) + " |" for l in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(l) for l in lines])


def concurrency_scaling(name: str, max_threads: int, budget: float = NORMAL_BUDGET,
                        seed: int = 0) -> List[dict]:
    """Throughput of one shared model called from 1..max_threads Python threads at once
    (each call with num_threads=1): calls/s, speedup over one thread, and a check that
    every thread got exactly the serial result. This is the "truly parallel across
    Python threads" claim, measured: the GIL is released for the whole forward."""
    import threading

    wl = WORKLOADS[name]
    model = make_model(wl, seed)
    x = make_input(wl, seed + 1)
    serial = model(x, num_threads=1)[0]
    rows, base = [], None
    for n in range(1, max_threads + 1):
        counts, mismatches = [0] * n, [0] * n
        stop = threading.Event()
        barrier = threading.Barrier(n + 1)

        def worker(i):
            barrier.wait()
            while not stop.is_set():
                out = model(x, num_threads=1)[0]
                counts[i] += 1
                if not np.array_equal(out, serial):
                    mismatches[i] += 1

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        time.sleep(budget)
        stop.set()
        for t in threads:
            t.join()
        rate = sum(counts) / (time.perf_counter() - t0)
        base = base or rate
        rows.append({"workload": name, "python_threads": n, "calls_per_s": rate,
                     "sequences_per_s": rate * wl.B, "speedup": rate / base,
                     "mismatches": int(sum(mismatches)), "calls": int(sum(counts))})
    return rows


def render_concurrency(rows: Sequence[dict]) -> str:
    lines = ["workload    python threads  calls/s  sequences/s  speedup  results == serial",
             "----------  --------------  -------  -----------  -------  -----------------"]
    for r in rows:
        ok = "yes" if r["mismatches"] == 0 else f"NO ({r['mismatches']} of {r['calls']})"
        lines.append(f"{r['workload']:<10}  {r['python_threads']:>14}  {r['calls_per_s']:>7.1f}  "
                     f"{r['sequences_per_s']:>11.1f}  {r['speedup']:>6.2f}x  {ok}")
    return "\n".join(lines)


def all_checks_passed(results: Iterable[dict]) -> bool:
    """No runner mismatched or failed (skipped peers are fine)."""
    return all(r["status"] in ("ok", "skipped") for r in results)


# ---------------------------------------------------------------- environment and report

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


def _fmt_ms(v: Optional[float]) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 10 else (f"{v:.2f}" if v < 100 else f"{v:.1f}")


def _fmt_rate(v: Optional[float]) -> str:
    if v is None:
        return "-"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.3g}"


def _fmt_diff(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.1e}"


def _pivot(results: Sequence[dict]):
    by_wl: Dict[str, Dict[str, dict]] = {}
    for r in results:
        by_wl.setdefault(r["workload"], {})[r["runner"]] = r
    peers = []
    for r in results:
        if r["runner"] != "ours" and r["runner"] not in peers:
            peers.append(r["runner"])
    return by_wl, peers


def table_rows(results: Sequence[dict]):
    """Header and rows (strings) of the comparison table, one row per workload."""
    by_wl, peers = _pivot(results)
    short = [SHORT_NAMES.get(p, p) for p in peers]
    header = (["workload", "T", "B", "I", "H", "L", "D", "ours ms", "ours p10-p90"]
              + [f"{s} ms" for s in short] + [f"{s}/ours" for s in short]
              + ["ours seq/s", "ours steps/s", "ours xRT", "ours-f64 diff", "peer-ours diff",
                 "check"])
    rows = []
    for name, runs in by_wl.items():
        o = runs.get("ours") or next(iter(runs.values()))
        cells = [name, o["T"], o["B"], o["I"], o["H"], o["num_layers"], o["num_directions"]]
        ours = runs.get("ours", {})
        cells.append(_fmt_ms(ours.get("median_ms")))
        cells.append("-" if ours.get("p10_ms") is None else
                     f"{_fmt_ms(ours['p10_ms'])}-{_fmt_ms(ours['p90_ms'])}")
        for p in peers:
            r = runs.get(p)
            if r is None or r["status"] in ("skipped", "error"):
                cells.append(r["status"] if r else "-")
            else:
                cells.append(_fmt_ms(r["median_ms"]) + ("!" if r["status"] == "mismatch" else ""))
        for p in peers:
            r = runs.get(p)
            ratio = r.get("ratio_vs_ours") if r else None
            cells.append("-" if ratio is None else f"{ratio:.2f}x")
        cells += [_fmt_rate(ours.get("sequences_per_s")), _fmt_rate(ours.get("steps_per_s")),
                  "-" if ours.get("x_realtime") is None else f"{ours['x_realtime']:.0f}x"]
        cells.append(_fmt_diff(ours.get("max_abs_diff")))
        pd = [runs[p]["max_abs_diff"] for p in peers
              if p in runs and runs[p]["max_abs_diff"] is not None]
        cells.append(_fmt_diff(max(pd)) if pd else "-")
        cells.append("ok" if all_checks_passed(runs.values()) else "FAIL")
        rows.append([str(c) for c in cells])
    return header, rows


def _notes(results: Sequence[dict]) -> List[str]:
    notes = []
    for r in results:
        if r["status"] != "ok":
            what = r["reason"] or (f"max abs diff {r['max_abs_diff']:.2e} vs "
                                   f"{r['checked_against']} exceeds {r['tol']:g}")
            notes.append(f"{r['workload']}/{r['runner']}: {r['status']}: {what}")
    return notes


def render_table(results: Sequence[dict], env: Optional[dict] = None,
                 markdown: bool = False) -> str:
    """The comparison as text: a header (machine, date, versions, threads, SIMD)
    and one row per workload; `markdown=True` gives a pipe table."""
    header, rows = table_rows(results)
    lines = []
    if env:
        v = env["versions"]
        vs = ", ".join(f"{k} {val}" for k, val in v.items() if val is not None)
        git = f" (git {env['git']})" if env.get("git") else ""
        meta = [f"machine: {env['cpu']}, {env['usable_cpus']} usable / "
                f"{env['logical_cpus']} logical CPUs; {env['platform']}",
                f"date: {env['date']}",
                f"versions: {vs}{git}",
                f"threads per call: {env['threads']}; lstm_infer SIMD level: {env['simd']}"]
        busy, load = env.get("busy_cores_at_start"), env.get("load_avg_1min")
        if busy is not None or load is not None:
            m = "other load at start: " + ", ".join(
                x for x in (None if busy is None else f"{busy:.2f} cores busy",
                            None if load is None else f"load average (1 min) {load:.2f}") if x)
            if busy is not None and busy > BUSY_CORES:
                m += " <- the machine was busy: timings are noisy"
            meta.append(m)
        if markdown:
            lines += [f"- {m}" for m in meta] + [""]
        else:
            lines += meta + [""]
    legend = ("median ms per forward call; X/ours = X median / ours median (> 1: ours faster); "
              "xRT = audio seconds per second at 10 ms frames; diffs are max abs; "
              "'!' = failed its correctness check")
    if markdown:
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines += ["", f"_{legend}_"]
    else:
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
                  for i, h in enumerate(header)]
        fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                      for i, (c, w) in enumerate(zip(cells, widths)))
        lines.append(fmt(header))
        lines.append("  ".join("-" * w for w in widths))
        lines += [fmt(r) for r in rows]
        lines += ["", legend]
    notes = _notes(results)
    if notes:
        lines += [""] + [("- " if markdown else "note: ") + n for n in notes]
    return "\n".join(lines)
