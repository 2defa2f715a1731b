"""`lstm-infer roofline` (tiny sizes) and `lstm-infer bench --roofline`: the measured
limits are positive and finite, AMX is noted (never measured) where the CPU has it,
and the bench quotes GFLOP/s against the sgemm peak."""
import json
import math

import pytest

from lstm_infer import bench
from lstm_infer.bench import roofline
from lstm_infer.cli import main


def test_measure_gives_positive_finite_figures_for_tiny_sizes():
    d = roofline.measure(sgemm_n=64, sizes={"L2": 64 << 10, "DRAM": 1 << 20}, min_time=0.01)
    s = d["sgemm"]
    assert s["n"] == 64 and s["all_threads"] >= 1
    for v in (s["single_thread_gflops"], s["all_threads_gflops"], d["bandwidth"]["L2"]["gb_s"],
              d["bandwidth"]["DRAM"]["gb_s"]):
        assert v > 0 and math.isfinite(v)
    assert d["bandwidth"]["L2"]["bytes"] == 64 << 10
    text = roofline.render(d)
    assert "GFLOP/s at 1 thread" in text and "L2 (64 KiB)" in text and "GB/s" in text
    json.dumps(d)  # serialisable as it is


def test_amx_is_noted_not_measured(monkeypatch):
    monkeypatch.setattr(roofline, "cpu_flags", lambda: {"avx2", "amx_tile", "amx_bf16",
                                                        "amx_int8"})
    d = roofline.measure(sgemm_n=32, sizes={"L2": 16 << 10}, min_time=0.005)
    assert set(d["amx"]) == {"amx_bf16", "amx_int8"}
    assert all("not measurable here" in note for note in d["amx"].values())
    assert "amx_bf16: present; not measurable here" in roofline.render(d)
    monkeypatch.setattr(roofline, "cpu_flags", lambda: {"avx2"})
    d = roofline.measure(sgemm_n=32, sizes={"L2": 16 << 10}, min_time=0.005)
    assert d["amx"] == {} and "AMX: not on this CPU" in roofline.render(d)


def test_peak_for_threads():
    r = {"sgemm": {"single_thread_gflops": 50.0, "all_threads": 4, "all_threads_gflops": 180.0}}
    assert roofline.peak_for(r, 1) == (50.0, 1)
    assert roofline.peak_for(r, 2) == (100.0, 2)
    assert roofline.peak_for(r, 8) == (180.0, 4)
    busy = {"sgemm": {"single_thread_gflops": 50.0, "all_threads": 2, "all_threads_gflops": 20.0}}
    assert roofline.peak_for(busy, 2) == (50.0, 2)


def test_roofline_cli_json(tmp_path, capsys):
    path = tmp_path / "roof.json"
    assert main(["roofline", "--quick", "--size", "64", "--min-time", "0.005",
                 "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "sgemm float32, 64x64x64" in out and "read bandwidth" in out
    d = json.loads(path.read_text())
    assert d["sgemm"]["single_thread_gflops"] > 0 and "DRAM" in d["bandwidth"]
    assert bench.load_roofline(str(path))["sgemm"]["n"] == 64


def test_bench_quotes_gflops_against_the_peak(tmp_path, capsys):
    roof = tmp_path / "roof.json"
    roof.write_text(json.dumps({"sgemm": {"single_thread_gflops": 40.0, "all_threads": 2,
                                          "all_threads_gflops": 75.0}}))
    res = tmp_path / "r.json"
    assert main(["bench", "--workloads", "8x2x8x16", "--no-peers", "--modes", "float32",
                 "--rounds", "2", "--block-calls", "2", "--budget", "0.01",
                 "--roofline", str(roof), "--json", str(res)]) == 0
    out = capsys.readouterr().out
    assert "ours GFLOP/s" in out and "ours % peak" in out
    assert "% peak of 40.0 GFLOP/s sgemm at 1 thread(s)" in out
    (row,) = json.loads(res.read_text())["results"]
    assert row["pct_of_peak"] == pytest.approx(100 * row["gflops"] / 40.0)


@pytest.mark.parametrize("text, message", [("{", "not JSON"),
                                           ('{"sgemm": {}}', "not a roofline file")])
def test_bench_rejects_a_bad_roofline_file(tmp_path, capsys, text, message):
    roof = tmp_path / "roof.json"
    roof.write_text(text)
    assert main(["bench", "--workloads", "kws", "--no-peers", "--roofline", str(roof)]) == 2
    assert message in capsys.readouterr().err
