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
    from . import bench as B

    wl_help = ", ".join(
        f"{n} {w.T}x{w.B}x{w.I}->{w.H}" + (f" L{w.num_layers}" if w.num_layers > 1 else "")
        + (" bi" if w.bidirectional else "") for n, w in B.WORKLOADS.items())
    p = sub.add_parser(
        "bench", help="time lstm_infer against torch / onnxruntime on standard workloads",
        description="Time one forward call of lstm_infer and its peers (torch.nn.LSTM, "
                    "onnxruntime) built on the same weights, after checking that every "
                    f"output matches (max abs diff <= {B.TOL:g}). Exit status 1 if a check fails. "
                    f"Workloads (TxBxI->H): {wl_help}.")
    p.add_argument("--quick", action="store_true",
                   help=f"short run: workloads {','.join(B.QUICK_WORKLOADS)} (unless --workloads "
                        f"is given), {B.QUICK_BUDGET:g} s of timing per runner "
                        f"(default {B.NORMAL_BUDGET:g} s, all workloads)")
    p.add_argument("--workloads", type=_csv, metavar="A,B,...",
                   help="comma-separated workload names, or 'all'")
    p.add_argument("--threads", type=_positive_int, default=1, metavar="N",
                   help="threads per forward call, for every runner (default 1)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--peers", type=_csv, metavar="P,Q",
                   help=f"peers to compare with, from {','.join(B.PEERS)} "
                        f"(default {','.join(B.DEFAULT_PEERS)}; missing ones are skipped)")
    g.add_argument("--no-peers", action="store_true", help="time lstm_infer only")
    p.add_argument("--json", metavar="PATH", help="also write machine info and results as JSON")
    p.add_argument("--markdown", action="store_true", help="print the table as markdown")
    p.add_argument("--concurrency", type=_positive_int, metavar="N",
                   help="instead: throughput of one model called from 1..N Python threads at "
                        "once (num_threads=1 each), with a check that every result equals the "
                        "serial one")
    # Seconds of timed calls per runner; for tests and ad-hoc runs.
    p.add_argument("--budget", type=_positive_float, help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args) -> int:
    from . import bench as B

    if args.workloads is None:
        workloads = list(B.QUICK_WORKLOADS if args.quick else B.WORKLOADS)
    elif args.workloads == ["all"]:
        workloads = list(B.WORKLOADS)
    else:
        workloads = args.workloads
    unknown = [w for w in workloads if w not in B.WORKLOADS]
    if unknown:
        print(f"lstm-infer bench: unknown workload(s) {', '.join(unknown)}; "
              f"choose from {', '.join(B.WORKLOADS)} or 'all'", file=sys.stderr)
        return 2
    if args.no_peers:
        peers = []
    else:
        peers = args.peers if args.peers is not None else list(B.DEFAULT_PEERS)
    bad = [p for p in peers if p not in B.PEERS]
    if bad:
        print(f"lstm-infer bench: unknown peer(s) {', '.join(bad)}; choose from "
              f"{', '.join(B.PEERS)}", file=sys.stderr)
        return 2
    budget = args.budget or (B.QUICK_BUDGET if args.quick else B.NORMAL_BUDGET)

    if args.concurrency:
        rows = []
        for name in workloads:
            rows += B.concurrency_scaling(name, args.concurrency, budget=budget)
        print(B.render_concurrency(rows), flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"environment": B.environment(1, []), "budget_s": budget,
                           "concurrency": rows}, f, indent=2)
                f.write("\n")
        return 0 if all(r["mismatches"] == 0 for r in rows) else 1

    def progress(r):
        if r["median_ms"] is not None:
            msg = f"{r['median_ms']:.3f} ms"
            if r["status"] != "ok":
                msg += f" ({r['status']})"
        else:
            msg = f"{r['status']}: {r['reason']}"
        print(f"  {r['workload']:>10} {r['runner']:<12} {msg}", file=sys.stderr, flush=True)

    env = B.environment(args.threads, peers)
    results = B.run_benchmarks(workloads, peers=peers, threads=args.threads, budget=budget,
                               progress=progress)
    print(B.render_table(results, env, markdown=args.markdown), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "budget_s": budget, "tol": B.TOL,
                       "results": results}, f, indent=2)
            f.write("\n")
    ok = B.all_checks_passed(results)
    if not ok:
        print("lstm-infer bench: a correctness check failed (see the notes above)", file=sys.stderr)
    return 0 if ok else 1


# ---------------------------------------------------------------- entry point

_SUBCOMMANDS = (_add_bench,)


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
    """Run the command line with `argv` (default ``sys.argv[1:]``); returns the exit status."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
