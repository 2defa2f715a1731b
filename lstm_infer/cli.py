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
    p.add_argument("--model", metavar="FILE",
                   help="instead of the workloads: time this model file (any format "
                        "`lstm-infer inspect` reads) against the peers that can run it; "
                        "a quantized file also runs as it is (ours-<mode>)")
    p.add_argument("--shape", metavar="T,B",
                   help="with --model: time steps and batch of the input (default "
                        f"{','.join(map(str, bench.DEFAULT_SHAPE))})")
    _selectors(p, "with --model: ")
    _layout_flags(p, "with --model: load the model as taking")
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
    if args.model is None:
        given = [o for o, v in (("--shape", args.shape), ("--prefix", args.prefix),
                                ("--layer", args.layer), ("--node", args.node),
                                ("--batch-first/--time-major", args.batch_first is not None))
                 if v]
        if given:
            raise ValueError(f"{', '.join(given)} go(es) with --model FILE")
    elif args.workloads or args.quantize or args.concurrency:
        raise ValueError("--model FILE is the workload: it does not take --workloads, "
                         "--quantize or --concurrency")
    shape = bench.parse_shape(args.shape) if args.shape else bench.DEFAULT_SHAPE
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
    run = dict(peers=peers, threads=args.threads, budget=budget, progress=progress,
               on_block=bar.update, rounds=args.rounds, block_calls=args.block_calls,
               block_time=block_time, cold=args.cold, evictor=evictor, peak_gflops=peak)
    if args.model:
        results, env["model"] = bench.run_model_file(
            args.model, shape, modes=args.modes, load_options=dict(
                prefix=args.prefix, layer=args.layer, node=args.node,
                batch_first=args.batch_first), **run)
    else:
        results = bench.run_benchmarks(workloads, modes=modes, **run)
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

def _selectors(p, when: str = "") -> None:
    p.add_argument("--prefix", help=when + "PyTorch: which LSTM of a larger state dict "
                                           "(e.g. encoder.rnn.)")
    p.add_argument("--layer", help=when + "Keras: which LSTM / Bidirectional layer, by name")
    p.add_argument("--node", help=when + "ONNX: which LSTM node, by name")


def _layout_flags(p, what: str) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--batch-first", dest="batch_first", action="store_const", const=True,
                   help=f"{what} (B, T, I) input: batch_first=True. Needed for PyTorch files "
                        "of a batch_first module (state dicts do not record it); overrides "
                        "what ONNX / Keras / native files record")
    g.add_argument("--time-major", dest="batch_first", action="store_const", const=False,
                   help=f"{what} (T, B, I) input: batch_first=False")
    p.set_defaults(batch_first=None)


def _load(args):
    from . import load

    return load(args.model, prefix=args.prefix, layer=args.layer, node=args.node,
                batch_first=getattr(args, "batch_first", None))


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
    from .formats.detect import RECORDS_LAYOUT

    params = sum(int(a.size) for layer in model.weights for d in layer for a in d.values())
    fmt = detect_format(path) if path else None
    info = {"format": fmt, "dtype": c.dtype,
            "quantization": c.quantization, "batch_first": c.batch_first,
            "layout_recorded": RECORDS_LAYOUT.get(fmt) if fmt else None,
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
                                   "directions, sizes, parameter count, dtype, variant flags, "
                                   "whether the file records its layout (batch_first) and "
                                   "the other layers found (Keras).")
    p.add_argument("model", help="a native .safetensors, .pt/.pth/.bin, .keras/.h5 or .onnx file")
    _layout_flags(p, "load the model as taking")
    _selectors(p)
    _add_whole_flags(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd_inspect)


def _cmd_inspect(args) -> int:
    whole, why = _whole_model(args)
    info = describe(whole.lstm if whole is not None else _load(args), args.model)
    info["whole_model"] = {"model": repr(whole), "parts": whole.parts} if whole else (
        {"error": why} if why else None)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{args.model}: {info['format']}, {info['dtype']}"
          f"{', quantized ' + info['quantization'] if info['quantization'] else ''}, "
          f"{info['num_layers']} layer(s), {info['parameters']:,} parameters, "
          f"input {info['input_size']} -> output {info['output_size']}"
          f"{', batch_first' if info['batch_first'] else ''}")
    if info["layout_recorded"] is False:
        print("  layout: not recorded (a PyTorch state dict holds no batch_first); "
              + ("loaded as batch_first (B, T, I), as asked" if info["batch_first"] else
                 "loaded time-major (T, B, I): if the module was batch_first, load it with "
                 "batch_first=True (--batch-first)"))
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
    if whole:
        print("  whole model (what `lstm-infer run` runs; --lstm-only for the LSTM alone):")
        for p in whole.parts:
            print("    " + _part_line(p))
    elif why:
        print(f"  whole model: no, the LSTM alone runs ({why})")
    return 0


def _add_whole_flags(p) -> None:
    p.add_argument("--spec", metavar="JSON|@FILE",
                   help="PyTorch whole models: the parts a state dict does not record, as "
                        "JSON (or @file.json), e.g. '{\"head_on\": \"last\", \"activation\": "
                        "\"softmax\", \"batch_first\": true}' (see li.load_model)")
    p.add_argument("--lstm-only", action="store_true",
                   help="the LSTM alone, not the whole model (embedding, head) around it")


def _spec_arg(text):
    if not text:
        return None
    if text.startswith("@"):
        with open(text[1:], encoding="utf8") as f:
            text = f.read()
    try:
        spec = json.loads(text)
    except ValueError as e:
        raise ValueError(f"--spec is not valid JSON ({e})") from None
    if not isinstance(spec, dict):
        raise ValueError(f"--spec must be a JSON object; got {text[:60]!r}")
    return spec


def _whole_model(args):
    """(the file's whole model, None), (None, why the file's parts cannot run), or
    (None, None) when the LSTM alone is asked for or is all the file holds."""
    if args.lstm_only or args.prefix or args.layer or args.node:
        if args.spec:
            raise ValueError("--spec describes a whole model; it does not go with --lstm-only, "
                             "--prefix, --layer or --node")
        return None, None
    from .sequence_model import WholeModelError, load_model

    spec = _spec_arg(args.spec)
    try:
        m = load_model(args.model, spec=spec, batch_first=args.batch_first)
    except WholeModelError as e:
        if spec:
            raise
        return None, str(e)
    return (None, None) if m.is_bare else (m, None)


def _part_line(p: dict) -> str:
    kind = p["part"]
    if kind == "embedding":
        return (f"embedding {p['name']}: {p['vocab_size']} tokens x {p['dim']}"
                + (f", pad_id {p['pad_id']}" if p["pad_id"] is not None else "")
                + f" ({p['lengths']})")
    if kind == "masking":
        return f"masking: steps whose features all equal {p['mask_value']:g} are padding"
    if kind == "lstm":
        return (f"lstm {p['name']}: {', '.join(p['layers'])} -> {p['output_size']} features"
                f"{', batch_first' if p['batch_first'] else ', time-major'}, {p['dtype']}"
                + (f", quantized {p['quantization']}" if p["quantization"] else ""))
    if kind == "pool":
        what = {"steps": "every step", "last": "the last layer's final state",
                "last_step": "the output at the last step"}[p["head_on"]]
        return f"head on {p['head_on']}: {what}" + (
            ", the last valid output repeated at padded steps"
            if p.get("masked_outputs") == "repeat_last" else "")
    if kind == "dense":
        return f"dense {p['name']}: {p['in']} -> {p['out']}, {p['activation']}"
    return "; ".join(f"note: {n}" for n in p.get("notes", []))


# output formats of `convert`: name -> the suffixes that pick it
CONVERT_FORMATS = {"native": (".safetensors",), "torch": (".pt", ".pth", ".bin"),
                   "onnx": (".onnx",), "keras": (".keras",)}


def output_format(path: str, forced: Optional[str] = None) -> str:
    """The `convert` target for `path`: `forced` (``--to``), else from its suffix; a
    ValueError for a suffix that picks none."""
    if forced:
        return forced
    low = path.lower()
    for fmt, suffixes in CONVERT_FORMATS.items():
        if low.endswith(suffixes):
            return fmt
    known = ", ".join(f"{'/'.join(sf)} ({fmt})" for fmt, sf in CONVERT_FORMATS.items())
    hint = " (legacy Keras .h5 files are not written: use .keras)" if low.endswith(".h5") \
        else ""
    raise ValueError(f"cannot tell the output format from {path!r}{hint}: expected a name "
                     f"ending in {known}, or choose one with --to")


def _add_convert(sub) -> None:
    p = sub.add_parser(
        "convert", help="convert a model file to another format (native, PyTorch, ONNX, Keras)",
        description="Load any supported file and write it in the format OUT's suffix names: "
                    ".safetensors native lstm_infer (loads back bit-exactly), .pt/.pth/.bin "
                    "a torch.save state dict (torch.load(weights_only=True) reads it), .onnx "
                    "an ONNX graph onnxruntime runs, .keras a Keras 3 model "
                    "(keras.saving.load_model opens it); --to forces one (--to torch with "
                    ".safetensors: torch-named safetensors). No framework is needed (ONNX "
                    "output needs the onnx package, Keras output h5py). What the target "
                    "cannot express (peepholes to torch, a projection to ONNX or Keras...) "
                    "is refused, naming it; see the README's 'Converting between "
                    "frameworks'.")
    p.add_argument("model", help="source file (any supported format)")
    p.add_argument("-o", "--output", required=True,
                   help="destination: .safetensors, .pt/.pth/.bin, .onnx or .keras")
    p.add_argument("--to", choices=tuple(CONVERT_FORMATS),
                   help="output format, whatever OUT's suffix")
    from . import quantize

    modes = quantize.MODES + tuple(getattr(quantize, "ALIASES", ()))  # + the old names
    p.add_argument("--quantize", choices=modes,
                   help="also quantize (native output; see the README's Quantization section)")
    p.add_argument("--input-weights", action="store_true",
                   help="with a weight-only --quantize mode: quantize W_ih too (less memory, "
                        "more error)")
    p.add_argument("--dequantize", action="store_true",
                   help="torch / ONNX / Keras output of a quantized model: write the float32 "
                        "weights it computes with (refused without this flag)")
    p.add_argument("--sequence-lens", action="store_true",
                   help="ONNX output: a sequence_lens input (int32 (B,)): our lengths")
    p.add_argument("--initial-state", action="store_true",
                   help="ONNX output: initial_h / initial_c inputs: our state")
    _layout_flags(p, "the converted model takes")
    _selectors(p)
    p.set_defaults(func=_cmd_convert)


def _cmd_convert(args) -> int:
    fmt = output_format(args.output, args.to)  # before loading: a bad name fails fast
    onnx_only = [f for f, on in (("--sequence-lens", args.sequence_lens),
                                 ("--initial-state", args.initial_state)) if on]
    if onnx_only and fmt != "onnx":
        raise ValueError(f"{' and '.join(onnx_only)} apply to ONNX output only; the output is "
                         f"{fmt}")
    model = _load(args)
    if args.quantize:
        model = model.quantize(args.quantize, input_weights=args.input_weights)
    notes = []
    if fmt == "native":
        model.save(args.output)
    elif fmt == "torch":
        from .formats.torch_writer import write_torch

        write_torch(model, args.output, dequantize=args.dequantize,
                    safetensors=args.output.lower().endswith(".safetensors"))
        if model.config.batch_first:
            notes.append("PyTorch state dicts do not record batch_first: build the "
                         "nn.LSTM with batch_first=True, and load the file with "
                         "batch_first=True (lstm-infer run --batch-first)")
    elif fmt == "onnx":
        model.to_onnx(args.output, sequence_lens=args.sequence_lens,
                      initial_state=args.initial_state, dequantize=args.dequantize)
        if model.config.batch_first:
            notes.append("the graph takes (B, T, I) through a Transpose before the first "
                         "LSTM node (onnxruntime runs layout 0 only): li.load reads it back "
                         "time-major unless given batch_first=True (--batch-first)")
    else:
        model.to_keras(args.output, dequantize=args.dequantize)
        if not model.config.batch_first:
            notes.append("Keras models are batch-first: the .keras model takes (B, T, I)")
    print(f"{args.model} -> {args.output} ({fmt}): {model!r}")
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    return 0


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run a model on a .npy input",
                       description="Run MODEL on the array in --input (.npy, loaded without "
                                   "pickle) and write the output sequence to --output (.npy). "
                                   "A whole model (an embedding and / or a head around the "
                                   "LSTM, see `inspect`) runs whole: token ids in, the head's "
                                   "output out (--lstm-only: the LSTM alone). "
                                   "Shapes follow the model: (T, B, I), (B, T, I) if "
                                   "batch_first (--batch-first for a PyTorch file of a "
                                   "batch_first module), or (T, I) unbatched.")
    p.add_argument("model")
    p.add_argument("--input", required=True, help="input .npy")
    p.add_argument("--output", required=True, help="output .npy (the output sequence)")
    p.add_argument("--state-output", help="also write h_n, c_n to this .npz")
    p.add_argument("--lengths", help="sequence lengths: a .npy file or a comma list, e.g. 100,80")
    p.add_argument("--threads", type=_positive_int, help="threads for the call")
    _layout_flags(p, "the input is")
    _selectors(p)
    _add_whole_flags(p)
    p.set_defaults(func=_cmd_run)


def _cmd_run(args) -> int:
    import numpy as np

    whole, why = _whole_model(args)
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
    if whole is not None:  # embedding / head around the LSTM: the model's own output
        if args.state_output:
            raise ValueError("--state-output: a whole model returns its head's output; "
                             "--lstm-only runs the LSTM alone, with its state")
        if whole.embedding is not None and x.dtype.kind == "f" and \
                not np.all(np.mod(x, 1) == 0):
            raise ValueError(f"{args.model} is a whole model whose input is token ids (an "
                             f"integer array); --input holds {x.dtype} features: pass token "
                             f"ids, or --lstm-only to run its LSTM on features")
        y = whole(x, lengths=lengths, num_threads=args.threads)
        np.save(args.output, y)
        print(f"{args.input} {x.shape} -> {args.output} {y.shape} ({whole!r})")
        return 0
    if why and x.dtype.kind in "iu":
        raise ValueError(f"{args.input} holds integers (token ids?), but the model around "
                         f"the LSTM cannot run: {why}")
    if why:
        print(f"note: running the LSTM alone: {why}", file=sys.stderr)
    model = _load(args)
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
