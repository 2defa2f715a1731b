"""``--plot FILE.png``: one bar chart per workload, one bar per engine (median ms,
p10-p90 whiskers; skipped and failed engines left out, failed checks hatched).

matplotlib is optional (``pip install 'lstm_infer[plot]'``), imported only here and
only when a plot is asked for; `require_matplotlib` says so before a long run.
"""
from __future__ import annotations

import math
from typing import Sequence

from .runners import short_name

INSTALL_HINT = "pip install 'lstm_infer[plot]' (or: pip install matplotlib)"


def require_matplotlib():
    """The matplotlib module with the non-interactive Agg backend, or ImportError
    saying how to install it."""
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError(f"--plot needs matplotlib, which is not installed ({e}); "
                          f"{INSTALL_HINT}") from None
    matplotlib.use("Agg")
    return matplotlib


def write_plot(results: Sequence[dict], path: str, title: str = "") -> None:
    """Bar charts of `results` (the benchmark's rows) written to `path` (PNG)."""
    require_matplotlib()
    import matplotlib.pyplot as plt

    workloads = list(dict.fromkeys(r["workload"] for r in results))
    engines = list(dict.fromkeys(r["runner"] for r in results))
    colours = {e: plt.get_cmap("tab10")(k % 10) for k, e in enumerate(engines)}
    cols = min(3, len(workloads)) or 1
    rows = math.ceil(len(workloads) / cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.ravel()[len(workloads):]:
        ax.set_visible(False)
    for ax, wl in zip(axes.ravel(), workloads):
        runs = [r for r in results if r["workload"] == wl and r["median_ms"] is not None]
        x = range(len(runs))
        med = [r["median_ms"] for r in runs]
        err = [[m - r["p10_ms"] for m, r in zip(med, runs)],
               [r["p90_ms"] - m for m, r in zip(med, runs)]]
        bars = ax.bar(x, med, yerr=err, capsize=3,
                      color=[colours[r["runner"]] for r in runs])
        for bar, r in zip(bars, runs):
            if r["status"] != "ok":
                bar.set_hatch("//")
        ax.set_xticks(list(x))
        ax.set_xticklabels([short_name(r["runner"]) for r in runs], rotation=45, ha="right",
                           fontsize=8)
        first = next((r for r in results if r["workload"] == wl), {})
        ax.set_title(f"{wl} ({first.get('T')}x{first.get('B')}x{first.get('I')}->"
                     f"{first.get('H')})", fontsize=9)
        ax.set_ylabel("median ms per call", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        if not runs:
            ax.text(0.5, 0.5, "nothing timed", ha="center", va="center",
                    transform=ax.transAxes)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
