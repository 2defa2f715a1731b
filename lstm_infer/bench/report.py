"""The results as text: the comparison table, the quantized table, the concurrency
table, the progress line, and the JSON file. Rendering only: nothing here runs or
times anything."""
from __future__ import annotations

import json
from typing import Dict, List, Optional, Sequence

from . import check
from .machine import BUSY_CORES
from .runners import short_name
from .suite import all_checks_passed

LEGEND = ("median ms per forward call over all round-robin calls; X/ours = X median / ours "
          "median (> 1: ours faster; int8 peers against ours-int8 when timed); xRT = audio "
          "seconds per second at 10 ms frames; GFLOP/s = the GEMMs' 2*T*B*4H*(I_l+H) per "
          "layer and direction / median; diffs are max abs; '!' = failed its correctness check")


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = False,
                 align: Optional[str] = None, md_align: Optional[str] = None,
                 min_widths: Optional[Sequence[int]] = None) -> List[str]:
    """Lines of a table. `align`: one "l" or "r" per column (default: first left, the
    rest right). Text: columns padded to their widest cell (at least `min_widths`),
    two spaces apart, a dashed rule under the header. Markdown: a pipe table whose
    alignment row follows `md_align` (default `align`)."""
    n = len(header)
    align = align or "l" + "r" * (n - 1)
    if markdown:
        rule = ["---:" if a == "r" else "---" for a in (md_align or align)]
        return (["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
                + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max([len(h)] + [len(r[i]) for r in rows] + [min_widths[i] if min_widths else 0])
              for i, h in enumerate(header)]

    def fmt(cells):
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w)
                         for c, w, a in zip(cells, widths, align)).rstrip()
    return [fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows]


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


def _fmt_gflops(v: Optional[float]) -> str:
    if v is None:
        return "-"
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def error_rows(results: Sequence[dict]):
    """Header and rows of the reduced-precision table: per workload, each
    reduced-precision runner's max abs error vs our float64 model (with ours float32's
    for scale), and its precision as run. None if no such runner was checked."""
    by_wl, peers = _pivot(results)
    reduced = [p for p in peers if any(_is_reduced(r) for r in results if r["runner"] == p)]
    if not reduced:
        return None
    header = ["workload", "ours f32 err"] + [f"{short_name(p)} err" for p in reduced]
    rows = []
    for name, runs in by_wl.items():
        cells = [name, _fmt_diff(runs.get("ours", {}).get("max_abs_diff"))]
        for p in reduced:
            r = runs.get(p)
            if r is None or r["max_abs_diff"] is None:
                cells.append(r["status"] if r else "-")
            else:
                cells.append(_fmt_diff(r["max_abs_diff"]) + ("!" if r["status"] == "mismatch"
                                                             else ""))
        rows.append(cells)
    return header, rows


def _pivot(results: Sequence[dict]):
    by_wl: Dict[str, Dict[str, dict]] = {}
    for r in results:
        by_wl.setdefault(r["workload"], {})[r["runner"]] = r
    peers = []
    for r in results:
        if r["runner"] != "ours" and r["runner"] not in peers:
            peers.append(r["runner"])
    return by_wl, peers


def _is_reduced(r: dict) -> bool:
    """Checked against float64 with the reduced-precision bound (not against ours)."""
    return r["runner"] != "ours" and r.get("checked_against") == "ours float64"


def _ratio_header(peer: str, results: Sequence[dict]) -> str:
    against = {r.get("ratio_against") for r in results if r["runner"] == peer} - {None}
    base = short_name(against.pop()) if len(against) == 1 else "ours"
    return f"{short_name(peer)}/{base}"


def table_rows(results: Sequence[dict]):
    """Header and rows (strings) of the comparison table, one row per workload."""
    by_wl, peers = _pivot(results)
    short = [short_name(p) for p in peers]
    # our modes get no ratio column, nor do peers never timed (skipped everywhere)
    rated = [p for p in peers if not p.startswith("ours")
             and any(r.get("ratio_vs_ours") is not None for r in results if r["runner"] == p)]
    with_peak = any(r.get("pct_of_peak") is not None for r in results)
    header = (["workload", "T", "B", "I", "H", "L", "D", "ours ms", "ours p10-p90"]
              + [f"{s} ms" for s in short] + [_ratio_header(p, results) for p in rated]
              + ["ours seq/s", "ours steps/s", "ours xRT", "ours GFLOP/s"]
              + (["ours % peak"] if with_peak else [])
              + ["ours-f64 diff", "peer-ours diff", "check"])
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
        for p in rated:
            r = runs.get(p)
            ratio = r.get("ratio_vs_ours") if r else None
            cells.append("-" if ratio is None else f"{ratio:.2f}x")
        cells += [_fmt_rate(ours.get("sequences_per_s")), _fmt_rate(ours.get("steps_per_s")),
                  "-" if ours.get("x_realtime") is None else f"{ours['x_realtime']:.0f}x",
                  _fmt_gflops(ours.get("gflops"))]
        if with_peak:
            pct = ours.get("pct_of_peak")
            cells.append("-" if pct is None else f"{pct:.0f}%")
        cells.append(_fmt_diff(ours.get("max_abs_diff")))
        pd = [runs[p]["max_abs_diff"] for p in peers
              if p in runs and runs[p]["max_abs_diff"] is not None and not _is_reduced(runs[p])]
        cells.append(_fmt_diff(max(pd)) if pd else "-")
        cells.append("ok" if all_checks_passed(runs.values()) else "FAIL")
        rows.append([str(c) for c in cells])
    return header, rows


def _notes(results: Sequence[dict]) -> List[str]:
    """One note per runner that did not pass; a reason shared by several workloads
    (a peer missing, a precision not available) is said once, naming them."""
    grouped: Dict[tuple, List[str]] = {}
    for r in results:
        if r["status"] != "ok":
            what = r["reason"] or (f"max abs diff {r['max_abs_diff']:.2e} vs "
                                   f"{r['checked_against']} exceeds {r['tol']:g}")
            grouped.setdefault((r["runner"], r["status"], what), []).append(r["workload"])
    notes = []
    for (runner, status, what), wls in grouped.items():
        where = wls[0] if len(wls) == 1 else "{" + ", ".join(wls) + "}"
        notes.append(f"{where}/{runner}: {status}: {what}")
    return notes


def _environment_lines(env: dict) -> List[str]:
    v = env["versions"]
    vs = ", ".join(f"{k} {val}" for k, val in v.items() if val is not None)
    git = f" (git {env['git']})" if env.get("git") else ""
    meta = [f"machine: {env['cpu']}, {env['usable_cpus']} usable / "
            f"{env['logical_cpus']} logical CPUs; {env['platform']}",
            f"date: {env['date']}",
            f"versions: {vs}{git}",
            f"threads per call: {env['threads']}; lstm_infer SIMD level: {env['simd']}"]
    if env.get("timing"):
        meta.append("timing: " + timing_line(env["timing"]))
    if env.get("model"):
        m = env["model"]
        timed = "; ".join(f"{k}: {v}" for k, v in m.get("timed_as", {}).items())
        meta.append(f"model: {m['path']} ({m['format']}, {m['dtype']}"
                    + (f", quantized {m['quantization']}" if m.get("quantization") else "")
                    + f", layers {', '.join(m['layers'])}"
                    + (", batch_first" if m.get("batch_first") else "")
                    + f"); input {'x'.join(map(str, m['input_shape']))}"
                    + (f"; timed as {timed}" if timed else ""))
    busy, load = env.get("busy_cores_at_start"), env.get("load_avg_1min")
    if busy is not None or load is not None:
        m = "other load at start: " + ", ".join(
            x for x in (None if busy is None else f"{busy:.2f} cores busy",
                        None if load is None else f"load average (1 min) {load:.2f}") if x)
        if busy is not None and busy > BUSY_CORES:
            m += " <- the machine was busy: timings are noisy"
        meta.append(m)
    return meta


def timing_line(t: dict) -> str:
    """How a run was timed, in one line (from the CLI's timing dict)."""
    block = (f"blocks of {t['block_calls']} calls" if t.get("block_calls")
             else f"blocks of ~{t['block_time_s'] * 1e3:.0f} ms")
    line = (f"round-robin, {t['rounds']} rounds, engine order rotated each round, {block} "
            f"per engine ({t.get('lead_in', 1)} untimed lead-in call each); ")
    if t.get("cold"):
        line += (f"cold caches: {t['evict_bytes'] / 2**20:.0f} MiB read from "
                 f"{t['evict_threads']} thread(s) before every call (untimed)")
    else:
        line += "hot caches"
    if t.get("peak_gflops"):
        line += (f"; % peak of {t['peak_gflops']:.1f} GFLOP/s sgemm at "
                 f"{t['peak_threads']} thread(s) ({t.get('roofline')})")
    return line


def render_table(results: Sequence[dict], env: Optional[dict] = None,
                 markdown: bool = False) -> str:
    """The comparison as text: a header (machine, date, versions, threads, SIMD)
    and one row per workload; `markdown=True` gives a pipe table."""
    header, rows = table_rows(results)
    lines = []
    if env:
        meta = _environment_lines(env)
        lines += ([f"- {m}" for m in meta] if markdown else meta) + [""]
    lines += format_table(header, rows, markdown)
    lines += ["", f"_{LEGEND}_" if markdown else LEGEND]
    errors = error_rows(results)
    if errors:
        lines += ["", "max abs error vs our float64 model, reduced precision (checked to "
                  f"<= {check.tol_reduced():g}: a wiring check, not a precision target):", ""]
        lines += format_table(*errors, markdown)
    notes = _notes(results)
    if notes:
        lines += [""] + [("- " if markdown else "note: ") + n for n in notes]
    return "\n".join(lines)


def render_quantized(rows: Sequence[dict], markdown: bool = False) -> str:
    """The quantized runs (`suite.run_quantized`), one row per workload and mode."""
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
    return "\n".join(format_table(head, lines, markdown, align="r" * len(head),
                                  md_align="l" * len(head)))


def render_concurrency(rows: Sequence[dict]) -> str:
    """The concurrency runs (`concurrency.concurrency_scaling`)."""
    head = ["workload", "python threads", "calls/s", "sequences/s", "speedup",
            "results == serial"]
    lines = [[r["workload"], str(r["python_threads"]), f"{r['calls_per_s']:.1f}",
              f"{r['sequences_per_s']:.1f}", f"{r['speedup']:.2f}x",
              "yes" if r["mismatches"] == 0 else f"NO ({r['mismatches']} of {r['calls']})"]
             for r in rows]
    return "\n".join(format_table(head, lines, align="lrrrrl", min_widths=[10, 0, 0, 0, 0, 0]))


def progress_line(row: dict) -> str:
    """One line per finished runner, for a long run's progress."""
    if row["median_ms"] is not None:
        msg = f"{row['median_ms']:.3f} ms"
        if row["status"] != "ok":
            msg += f" ({row['status']})"
    else:
        msg = f"{row['status']}: {row['reason']}"
    return f"  {row['workload']:>10} {row['runner']:<12} {msg}"


def write_json(path: str, doc: dict) -> None:
    """`doc` as indented JSON, newline-terminated."""
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
