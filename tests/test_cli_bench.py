"""`lstm-infer bench` end to end, on the kws workload with a tiny time budget."""
import json

import pytest

from lstm_infer import bench
from lstm_infer.cli import main


def test_bench_ours_only(capsys, tmp_path):
    path = tmp_path / "r.json"
    rc = main(["bench", "--quick", "--workloads", "kws", "--no-peers", "--budget", "0.02",
               "--json", str(path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "ours ms" in out and "ours-f64 diff" in out
    row = next(l for l in out.splitlines() if l.startswith("kws "))
    assert row.split()[-1] == "ok"
    data = json.loads(path.read_text())
    assert data["environment"]["threads"] == 1
    (r,) = data["results"]
    assert r["runner"] == "ours" and r["status"] == "ok"
    assert r["checked_against"] == "float64 reference" and r["max_abs_diff"] <= bench.TOL
    assert r["median_ms"] > 0 and r["p10_ms"] <= r["median_ms"] <= r["p90_ms"]
    assert r["reps"] >= bench.MIN_REPS
    assert r["sequences_per_s"] == pytest.approx(1e3 / r["median_ms"])


def test_bench_markdown_with_peers(capsys, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    path = tmp_path / "r.json"
    rc = main(["bench", "--workloads", "kws", "--peers", "torch,onnxruntime", "--budget", "0.02",
               "--markdown", "--json", str(path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "| workload |" in out and "| torch ms |" in out and "| ort ms |" in out
    assert any(l.startswith("| kws |") and l.rstrip().endswith("| ok |") for l in out.splitlines())
    rows = {r["runner"]: r for r in json.loads(path.read_text())["results"]}
    assert set(rows) == {"ours", "torch", "onnxruntime"}
    for name in ("torch", "onnxruntime"):
        assert rows[name]["status"] == "ok", rows[name]
        assert rows[name]["checked_against"] == "ours"
        assert rows[name]["max_abs_diff"] <= bench.TOL
        assert rows[name]["ratio_vs_ours"] == pytest.approx(
            rows[name]["median_ms"] / rows["ours"]["median_ms"])


def test_bench_rejects_unknown_workload(capsys):
    assert main(["bench", "--workloads", "nope", "--no-peers"]) == 2
    assert "unknown workload" in capsys.readouterr().err


def test_onnx_gate_order_round_trips():
    import numpy as np
    from lstm_infer.formats.gate_orders import from_canonical, to_canonical
    w = np.arange(8.0).reshape(8, 1)
    assert np.array_equal(to_canonical(from_canonical(w, "onnx"), "onnx"), w)


def test_bench_failed_check_exits_1(capsys, monkeypatch):
    monkeypatch.setattr(bench, "TOL", 0.0)  # float32 vs the float64 oracle is never exact
    rc = main(["bench", "--workloads", "kws", "--no-peers", "--budget", "0.01"])
    cap = capsys.readouterr()
    assert rc == 1
    assert "FAIL" in cap.out and "kws/ours: mismatch" in cap.out
    assert "correctness check failed" in cap.err


def test_bench_concurrency_reports_scaling_and_checks_results(capsys):
    status = main(["bench", "--workloads", "kws", "--concurrency", "2", "--budget", "0.2"])
    out = capsys.readouterr().out
    assert status == 0
    lines = [l for l in out.splitlines() if l.startswith("kws")]
    assert len(lines) == 2 and all(l.rstrip().endswith("yes") for l in lines)
