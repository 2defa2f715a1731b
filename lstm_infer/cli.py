"""The ``lstm-infer`` command line (also ``python -m lstm_infer``).

Each subcommand is a pair of functions: ``_add_<name>(subparsers)`` declares
its arguments and sets ``func=_cmd_<name>``; ``_cmd_<name>(args)`` runs it
and returns the exit status. To add a subcommand, write the pair and list
the adder in ``_SUBCOMMANDS``.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional


# ---------------------------------------------------------------- bench

def _csv(s: str) -> List[str]:
    return [p.strip() for p in s.split(",") if p.strip()]


def _positive_int(s: str) -> int:
    try:
        n = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {s!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {n}")
    return n


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number; got {s!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number; got {v}")
    return v


def _add_bench(sub) -> None:
    from . import bench
    from .quantize import MODES

    wl_help = ", ".join(
        f"{n} {w.T}x{w.B}x{w.I}->{w.H}" + (f" L{w.num_layers}" if w.num_layers > 1 else "")
        + (" bi" if w.bidirectional else "") + (f" p{w.proj_size}" if w.proj_size else "")
        for n, w in bench.WORKLOADS.items())
    p = sub.add_parser(
        "bench", help="time lstm_infer against its peers (torch, onnxruntime, OpenVINO, "
                      "TensorFlow) on standard workloads",
        description="Time one forward call of lstm_infer and its peers built on the same "
                    "weights, after checking every output (float32: max abs diff <= "
                    f"{bench.tolerance():g}; int8 / bf16 runners: <= {bench.tol_reduced():g} "
                    "vs our float64 model). Engines are timed round-robin: in each round every "
                    "engine runs one block of calls, the engine order rotating each round. "
                    "Exit status 1 if a check fails. Workloads (TxBxI->H): "
                    f"{wl_help}; or sizes TxBxIxH[-L<layers>][-bi][-p<proj>].")
    p.add_argument("--quick", action="store_true",
                   help=f"short run: workloads {','.join(bench.QUICK_WORKLOADS)} (unless "
                        f"--workloads is given), {bench.QUICK_BUDGET:g} s of timing per engine "
                        f"(default {bench.NORMAL_BUDGET:g} s, all workloads)")
    p.add_argument("--workloads", type=_csv, metavar="A,B,...",
                   help="comma-separated workload names or TxBxIxH sizes, or 'all'")
    p.add_argument("--threads", type=_positive_int, default=1, metavar="N",
                   help="threads per forward call, for every engine (default 1)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--peers", type=_csv, metavar="P,Q",
                   help=f"peers to compare with, from {','.join(bench.PEERS)} "
                        f"(default: all; missing ones are skipped)")
    g.add_argument("--no-peers", action="store_true", help="time lstm_infer only")
    p.add_argument("--modes", type=_csv, metavar="M,N",
                   help=f"our modes to time: float32 (always) and quantization modes from "
                        f"{','.join(MODES)} (default {','.join(bench.DEFAULT_MODES)})")
    p.add_argument("--rounds", type=_positive_int, default=bench.DEFAULT_ROUNDS, metavar="N",
                   help=f"round-robin rounds (default {bench.DEFAULT_ROUNDS}); medians are "
                        "over all calls of all rounds")
    b = p.add_mutually_exclusive_group()
    b.add_argument("--block-calls", type=_positive_int, metavar="N",
                   help="calls per engine per round (default: as many as fill --block-time)")
    b.add_argument("--block-time", type=_positive_float, metavar="S",
                   help="seconds per engine per round, evictions included (default: the "
                        "time budget / rounds)")
    p.add_argument("--cold", action="store_true",
                   help="evict the caches before every timed call (untimed): read a buffer "
                        "of twice the last-level cache, from as many threads as the call uses")
    p.add_argument("--json", metavar="PATH", help="also write machine info and results as JSON")
    p.add_argument("--markdown", action="store_true", help="print the table as markdown")
    p.add_argument("--plot", metavar="FILE.png",
                   help="also draw a bar chart per workload and engine (needs matplotlib: "
                        "the 'plot' extra)")
    p.add_argument("--roofline", metavar="FILE",
                   help="a JSON from `lstm-infer roofline --json`: adds '%% of sgemm peak'")
    p.add_argument("--quantize", metavar="MODE[,MODE]", type=_csv,
                   help="instead: quantized ours (int8, int8-weights, float16, bfloat16) vs "
                        "our float32 and, for int8, onnxruntime's DynamicQuantizeLSTM, with "
                        "errors against our float64 model")
    p.add_argument("--concurrency", type=_positive_int, metavar="N",
                   help="instead: throughput of one model called from 1..N Python threads at "
                        "once (num_threads=1 each), with a check that every result equals the "
                        "serial one")
    # Seconds of timed calls per engine (over all rounds); for tests and ad-hoc runs.
    p.add_argument("--budget", type=_positive_float, help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args) -> int:
    from . import bench

    # unknown workloads / peers / modes: ValueError, which main() reports with status 2
    workloads = bench.select_workloads(args.workloads, quick=args.quick)
    peers = [] if args.no_peers else bench.select_peers(args.peers)
    modes = bench.select_modes(args.modes)
    budget = args.budget or (bench.QUICK_BUDGET if args.quick else bench.NORMAL_BUDGET)
    if args.plot:
        bench.require_matplotlib()   # ImportError (status 2) before a long run, not after
    roof = bench.load_roofline(args.roofline) if args.roofline else None

    if args.quantize:
        rows = [bench.run_quantized(name, mode, threads=args.threads, budget=budget,
                                    rounds=args.rounds)
                for name in workloads for mode in args.quantize]
        print(bench.render_quantized(rows, markdown=args.markdown), flush=True)
        if args.json:
            bench.write_json(args.json, {"environment": bench.environment(args.threads, []),
                                         "budget_s": budget, "quantized": rows})
        return 0

    if args.concurrency:
        rows = []
        for name in workloads:
            rows += bench.concurrency_scaling(name, args.concurrency, budget=budget)
        print(bench.render_concurrency(rows), flush=True)
        if args.json:
            bench.write_json(args.json, {"environment": bench.environment(1, []),
                                         "budget_s": budget, "concurrency": rows})
        return 0 if all(r["mismatches"] == 0 for r in rows) else 1

    bar = bench.ProgressBar()

    def progress(row):
        bar.clear()
        print(bench.progress_line(row), file=sys.stderr, flush=True)

    evictor = bench.CacheEvictor(threads=args.threads) if args.cold else None
    block_time = None if args.block_calls else (args.block_time or budget / args.rounds)
    timing = {"rounds": args.rounds, "block_calls": args.block_calls,
              "block_time_s": block_time, "lead_in": 1, "cold": args.cold,
              "evict_bytes": evictor.nbytes if evictor else None,
              "evict_threads": evictor.threads if evictor else None, "budget_s": budget}
    peak = None
    if roof is not None:
        peak, peak_threads = bench.peak_for(roof, args.threads)
        timing.update(peak_gflops=peak, peak_threads=peak_threads, roofline=args.roofline)
    env = bench.environment(args.threads, ["ours"] + peers, timing=timing)
    results = bench.run_benchmarks(workloads, peers=peers, threads=args.threads, budget=budget,
                                   progress=progress, on_block=bar.update, modes=modes,
                                   rounds=args.rounds, block_calls=args.block_calls,
                                   block_time=block_time, cold=args.cold, evictor=evictor,
                                   peak_gflops=peak)
    bar.clear()
    print(bench.render_table(results, env, markdown=args.markdown), flush=True)
    if args.json:
        bench.write_json(args.json, {"environment": env, "budget_s": budget,
                                     "tol": bench.tolerance(),
                                     "tol_reduced": bench.tol_reduced(),
                                     "roofline": roof, "results": results})
    if args.plot:
        bench.write_plot(results, args.plot,
                         title=f"{env['cpu']}, {args.threads} thread(s)"
                               + (", cold caches" if args.cold else ""))
        print(f"plot: {args.plot}", file=sys.stderr)
    ok = bench.all_checks_passed(results)
    if not ok:
        print("lstm-infer bench: a correctness check failed (see the notes above)", file=sys.stderr)
    return 0 if ok else 1


# ---------------------------------------------------------------- roofline

def _add_roofline(sub) -> None:
    from .bench import roofline

    p = sub.add_parser(
        "roofline", help="measure this machine's limits (sgemm peak, cache / DRAM bandwidth)",
        description="Measure this machine's limits, for `lstm-infer bench --roofline`: float32 "
                    "sgemm GFLOP/s (scipy's BLAS, N x N, 1 thread and all usable CPUs), and one "
                    "thread's read bandwidth from L2, the last-level cache and DRAM (GB/s). "
                    "AMX (amx_bf16 / amx_int8 in /proc/cpuinfo) is noted where present, not "
                    "measured. Figures from a busy machine are low.")
    p.add_argument("--quick", action="store_true",
                   help=f"N = {roofline.QUICK_SGEMM_N} (default {roofline.SGEMM_N}), shorter "
                        "timings, a smaller DRAM buffer")
    p.add_argument("--size", type=_positive_int, metavar="N", help="sgemm matrix size N")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    # seconds of repeated calls per figure; for tests
    p.add_argument("--min-time", type=_positive_float, help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_roofline)


def _cmd_roofline(args) -> int:
    from . import bench
    from .bench import roofline

    d = roofline.measure(quick=args.quick, sgemm_n=args.size, min_time=args.min_time)
    print(roofline.render(d), flush=True)
    if args.json:
        bench.write_json(args.json, d)
    return 0


# ---------------------------------------------------------------- inspect / convert / run

def _selectors(p) -> None:
    p.add_argument("--prefix", help="PyTorch: which LSTM of a larger state dict (e.g. encoder.rnn.)")
    p.add_argument("--layer", help="Keras: which LSTM / Bidirectional layer, by name")
    p.add_argument("--node", help="ONNX: which LSTM node, by name")


def _load(args):
    from . import load

    return load(args.model, prefix=args.prefix, layer=args.layer, node=args.node)


def describe(model, path=None) -> dict:
    """What `inspect` prints, as a dict: format, sizes, parameter count, variant flags."""
    from . import detect_format

    c = model.config
    layers = []
    for k, l in enumerate(c.layers):
        acts = ["/".join(a.name if a.name != "hard_sigmoid" else f"hard_sigmoid({a.alpha:g},{a.beta:g})"
                         for a in trip) for trip in l.activations]
        layers.append({"layer": k, "direction": l.direction, "input": l.input_size,
                       "hidden": l.hidden_size, "proj": l.proj_size, "peephole": l.peephole,
                       "merge": l.merge if l.bidirectional else None,
                       "reverse_output": l.reverse_output, "clip": l.clip,
                       "cell_clip": l.cell_clip, "input_forget": l.input_forget,
                       "activations": acts})
    params = sum(int(a.size) for layer in model.weights for d in layer for a in d.values())
    info = {"format": detect_format(path) if path else None, "dtype": c.dtype,
            "quantization": c.quantization, "batch_first": c.batch_first,
            "input_size": c.input_size, "output_size": c.output_size, "num_layers": c.num_layers,
            "parameters": params, "layers": layers, "other_layers": None}
    if path and info["format"] in ("keras", "keras-h5"):
        from .formats.keras import keras_layers_summary
        info["other_layers"] = [e for e in keras_layers_summary(path)
                                if not (isinstance(e, dict) and e.get("lstm"))]
    return info


def _add_inspect(sub) -> None:
    p = sub.add_parser("inspect", help="show what a model file holds",
                       description="Detect a model file's format and show its LSTM: layers, "
                                   "directions, sizes, parameter count, dtype, variant flags and "
                                   "the other layers found (Keras).")
    p.add_argument("model", help="a native .safetensors, .pt/.pth/.bin, .keras/.h5 or .onnx file")
    _selectors(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd_inspect)


def _cmd_inspect(args) -> int:
    info = describe(_load(args), args.model)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{args.model}: {info['format']}, {info['dtype']}"
          f"{', quantized ' + info['quantization'] if info['quantization'] else ''}, "
          f"{info['num_layers']} layer(s), {info['parameters']:,} parameters, "
          f"input {info['input_size']} -> output {info['output_size']}"
          f"{', batch_first' if info['batch_first'] else ''}")
    for l in info["layers"]:
        flags = [f for f, on in (("peephole", l["peephole"]), ("cifg", l["input_forget"]),
                                 ("reverse_output", l["reverse_output"])) if on]
        if l["merge"]:
            flags.append(f"merge={l['merge']}")
        for name in ("clip", "cell_clip"):
            if l[name] is not None:
                flags.append(f"{name}={l[name]:g}")
        proj = f" proj {l['proj']}" if l["proj"] else ""
        print(f"  layer {l['layer']}: {l['direction']:<13} {l['input']} -> {l['hidden']}{proj}  "
              f"activations {' | '.join(l['activations'])}"
              f"{'  ' + ' '.join(flags) if flags else ''}")
    if info["other_layers"]:
        print("  other layers: " + ", ".join(f"{o.get('name')} ({o.get('class_name')})"
                                              if isinstance(o, dict) else str(o)
                                              for o in info["other_layers"]))
    return 0


def _add_convert(sub) -> None:
    p = sub.add_parser("convert", help="convert a model file to the native format",
                       description="Load any supported file and save it as a native lstm_infer "
                                   ".safetensors file (loads back bit-exactly with li.load).")
    p.add_argument("model", help="source file (any supported format)")
    p.add_argument("-o", "--output", required=True, help="destination .safetensors file")
    p.add_argument("--quantize", choices=("int8", "int8-weights", "float16", "bfloat16"),
                   help="also quantize (see the README's Quantization section)")
    p.add_argument("--input-weights", action="store_true",
                   help="with a weight-only --quantize mode: quantize W_ih too (less memory, "
                        "more error)")
    _selectors(p)
    p.set_defaults(func=_cmd_convert)


def _cmd_convert(args) -> int:
    model = _load(args)
    if args.quantize:
        model = model.quantize(args.quantize, input_weights=args.input_weights)
    model.save(args.output)
    print(f"{args.model} -> {args.output}: {model!r}")
    return 0


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run a model on a .npy input",
                       description="Run MODEL on the array in --input (.npy, loaded without "
                                   "pickle) and write the output sequence to --output (.npy). "
                                   "Shapes follow the model: (T, B, I), (B, T, I) if "
                                   "batch_first, or (T, I) unbatched.")
    p.add_argument("model")
    p.add_argument("--input", required=True, help="input .npy")
    p.add_argument("--output", required=True, help="output .npy (the output sequence)")
    p.add_argument("--state-output", help="also write h_n, c_n to this .npz")
    p.add_argument("--lengths", help="sequence lengths: a .npy file or a comma list, e.g. 100,80")
    p.add_argument("--threads", type=_positive_int, help="threads for the call")
    _selectors(p)
    p.set_defaults(func=_cmd_run)


def _cmd_run(args) -> int:
    import numpy as np

    model = _load(args)
    x = np.load(args.input, allow_pickle=False)
    lengths = None
    if args.lengths:
        if args.lengths.endswith(".npy"):
            lengths = np.load(args.lengths, allow_pickle=False)
        else:
            try:
                lengths = np.array([int(v) for v in _csv(args.lengths)])
            except ValueError:
                print(f"lstm-infer run: --lengths must be a .npy file or integers separated by "
                      f"commas; got {args.lengths!r}", file=sys.stderr)
                return 2
    out, (h, c) = model(x, lengths=lengths, num_threads=args.threads)
    np.save(args.output, out)
    if args.state_output:
        if isinstance(h, list):
            np.savez(args.state_output, **{f"h_n_{k}": a for k, a in enumerate(h)},
                     **{f"c_n_{k}": a for k, a in enumerate(c)})
        else:
            np.savez(args.state_output, h_n=h, c_n=c)
    print(f"{args.input} {x.shape} -> {args.output} {out.shape}")
    return 0


# ---------------------------------------------------------------- entry point

_SUBCOMMANDS = (_add_inspect, _add_convert, _add_run, _add_bench, _add_roofline)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="lstm-infer", description="Fast, GIL-free CPU inference for LSTM networks.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line with `argv` (default ``sys.argv[1:]``); returns the exit status.

    Bad input files and arguments end with a one-line error and status 2, not a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, IsADirectoryError, ImportError) as e:
        print(f"lstm-infer {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
