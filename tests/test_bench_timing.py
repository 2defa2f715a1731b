"""lstm_infer.bench.timing: round-robin order and block sizes, the cache evictor
before every timed call (fakes: a clock and runners that log what they do), and
the suite's wiring of both; the progress bar."""
import io

import numpy as np
import pytest

from lstm_infer import bench
from lstm_infer.bench import timing


class Clock:
    """A fake perf_counter: advances only when a fake runner says so; logs reads."""

    def __init__(self, log=None):
        self.t = 0.0
        self.log = log

    def __call__(self):
        if self.log is not None:
            self.log.append("t")
        return self.t


def runners(log, clock, costs):
    def make(name, cost):
        def fn():
            log.append(name)
            clock.t += cost
        return fn
    return {name: make(name, cost) for name, cost in costs.items()}


def blocks(log, names):
    """The log's runs of one runner's calls, as (name, length)."""
    runs = []
    for entry in log:
        if entry not in names:
            continue
        if runs and runs[-1][0] == entry:
            runs[-1][1] += 1
        else:
            runs.append([entry, 1])
    return [tuple(r) for r in runs]


def test_blocks_interleave_and_the_order_rotates_each_round():
    log, clock = [], Clock()
    fns = runners(log, clock, {"a": 1e-3, "b": 2e-3, "c": 5e-3})
    times = bench.round_robin(fns, rounds=4, block_calls=3, lead_in=1, warmup=0, clock=clock)
    # warm-up: each runner twice, in order; then 4 rounds of one block (1 lead-in + 3) each
    assert log[:6] == ["a", "a", "b", "b", "c", "c"]
    got = blocks(log[6:], fns)
    assert got == [(n, 4) for order in (["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"],
                                        ["a", "b", "c"]) for n in order]
    assert bench.rotation(["a", "b", "c"], 4) == [["a", "b", "c"], ["b", "c", "a"],
                                                  ["c", "a", "b"], ["a", "b", "c"]]
    # {name: (rounds, calls)}; each timed call measured alone (lead-ins untimed)
    assert {n: t.shape for n, t in times.items()} == {n: (4, 3) for n in "abc"}
    for name, cost in (("a", 1e-3), ("b", 2e-3), ("c", 5e-3)):
        assert np.allclose(times[name], cost)


def test_block_sizes_fill_the_block_time_and_give_min_reps():
    log, clock = [], Clock()
    fns = runners(log, clock, {"fast": 1e-3, "slow": 1e-2})
    times = bench.round_robin(fns, rounds=3, block_time=0.1, lead_in=0, warmup=0, clock=clock)
    assert times["fast"].shape == (3, 100) and times["slow"].shape == (3, 10)
    # a call longer than the block: one call a block, but at least min_reps in all
    times = bench.round_robin(fns, rounds=2, block_time=1e-4, min_reps=5, warmup=0,
                              clock=clock)
    assert times["fast"].shape == times["slow"].shape == (2, 3)
    summary = timing.summarize(times["slow"])
    assert summary["reps"] == 6 and summary["median_ms"] == pytest.approx(10.0)
    assert summary["round_medians_ms"] == pytest.approx([10.0, 10.0])


def test_cold_evicts_before_every_timed_call_untimed():
    log = []
    clock = Clock(log)
    fns = runners(log, clock, {"a": 1e-3, "b": 1e-3})

    def evict():
        log.append("E")
        clock.t += 1.0  # must not be counted in any timed call

    times = bench.round_robin(fns, rounds=3, block_calls=4, lead_in=1, warmup=0,
                              evict=evict, clock=clock)
    timed = [i for i in range(1, len(log) - 1)
             if log[i] in fns and log[i - 1] == "t" and log[i + 1] == "t"]
    assert len(timed) == 2 * 3 * 4
    assert all(log[i - 2] == "E" for i in timed)          # E, t, call, t
    for t in times.values():
        assert np.allclose(t, 1e-3)                        # the eviction's second not in it
    # the warm-up's calls follow an eviction (t, E, call, t: for the estimate); the
    # lead-in calls, one per block, come without one
    calls = [i for i, e in enumerate(log) if e in fns]
    warm = [i for i in calls if log[i - 1] == "E"]
    lead_ins = set(calls) - set(timed) - set(warm)
    assert len(warm) == 2 * 2 and len(lead_ins) == 2 * 3
    assert all(log[i - 1] != "E" for i in lead_ins)
    # without evict, no eviction at all
    log.clear()
    bench.round_robin(fns, rounds=2, block_calls=2, warmup=0, clock=clock)
    assert "E" not in log


def test_suite_cold_calls_the_evictor_before_every_timed_call():
    calls = []
    rows = bench.run_workload("6x2x4x8", peers=[], modes=["float32"], rounds=2, block_calls=3,
                              budget=0.01, cold=True, evictor=lambda: calls.append(1))
    (row,) = rows
    assert row["status"] == "ok" and row["reps"] == 6 and row["cold"] is True
    assert row["block_calls"] == 3 and row["rounds"] == 2 and len(row["round_medians_ms"]) == 2
    assert len(calls) >= 6 + 2          # every timed call, and the warm-up's
    n = len(calls)
    hot = bench.run_workload("6x2x4x8", peers=[], modes=["float32"], rounds=2, block_calls=3,
                             budget=0.01, evictor=lambda: calls.append(1))
    assert hot[0]["cold"] is False and len(calls) == n


def test_suite_rotates_the_runners_it_times(monkeypatch):
    order = []
    real = timing.round_robin

    def spy(fns, **kw):
        def logged(name, fn):
            def call():
                order.append(name)
                return fn()
            return call
        return real({n: logged(n, f) for n, f in fns.items()}, **kw)
    monkeypatch.setattr("lstm_infer.bench.suite.round_robin", spy)
    rows = bench.run_workload("5x1x4x8", peers=[], modes=["float32", "float16-weights"], rounds=2,
                              block_calls=2, budget=0.01)
    assert [r["runner"] for r in rows] == ["ours", "ours-float16-weights"]
    # after the warm-up (ours, then ours-float16-weights): round 1 ours, ours-float16; round 2
    # ours-float16, ours; each block a lead-in call and 2 timed ones
    assert blocks(order, {"ours", "ours-float16-weights"})[-3:] == [
        ("ours", 3), ("ours-float16-weights", 6), ("ours", 3)]


def test_cache_evictor_reads_its_whole_buffer_from_each_thread():
    for threads in (1, 3):
        ev = bench.CacheEvictor(nbytes=1 << 20, threads=threads)
        ev()
        n = (1 << 20) // 8
        assert ev.nbytes == 1 << 20 and ev.sink == pytest.approx(n * (n - 1) / 2)
    assert bench.CacheEvictor().nbytes == 2 * bench.llc_bytes()


def test_llc_from_sysfs_and_its_default(tmp_path):
    for k, (level, kind, size) in enumerate([(1, "Data", "32K"), (1, "Instruction", "32K"),
                                            (2, "Unified", "512K"), (3, "Unified", "32768K")]):
        d = tmp_path / f"index{k}"
        d.mkdir()
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{kind}\n")
        (d / "size").write_text(f"{size}\n")
    assert bench.cache_sizes(str(tmp_path)) == {1: 32 << 10, 2: 512 << 10, 3: 32 << 20}
    assert bench.llc_bytes(str(tmp_path)) == 32 << 20
    assert bench.llc_bytes(str(tmp_path / "none")) == 64 << 20


def test_progress_bar_draws_on_a_terminal_only():
    out = io.StringIO()
    bar = bench.ProgressBar(stream=out, enabled=True, width=10, interval=0)
    bar.update(0.5, "kws round 1/7 ours")
    assert out.getvalue().startswith("\r[#####.....]  50% ") and "kws round 1/7" in out.getvalue()
    bar.clear()
    assert out.getvalue().endswith("\r")
    quiet = io.StringIO()  # not a tty: nothing drawn
    bench.ProgressBar(stream=quiet).update(0.5, "x")
    assert quiet.getvalue() == ""
