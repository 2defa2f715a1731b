"""`lstm-infer bench` end to end (kws, tiny time budgets), and the parts of
`lstm_infer.bench` it rests on: the float64 model it checks ours against, the
runners, the renderers. (The exporters the peers load through are tested with
their format modules: test_export_torch.py, test_export_onnx_keras.py.)"""
import json

import numpy as np
import pytest

import lstm_infer as li
from lstm_infer import bench, tolerances
from lstm_infer.cli import main

from reference import lstm_reference


def test_bench_ours_only(capsys, tmp_path):
    path = tmp_path / "r.json"
    rc = main(["bench", "--quick", "--workloads", "kws", "--no-peers", "--modes", "float32",
               "--budget", "0.02", "--json", str(path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "ours ms" in out and "ours-f64 diff" in out
    row = next(l for l in out.splitlines() if l.startswith("kws "))
    assert row.split()[-1] == "ok"
    data = json.loads(path.read_text())
    assert data["environment"]["threads"] == 1
    assert data["tol"] == max(tolerances.TOL["float32"], tolerances.TOL_FRAMEWORK["float32"])
    (r,) = data["results"]
    assert r["runner"] == "ours" and r["status"] == "ok"
    assert r["checked_against"] == "ours float64"
    assert r["tol"] == tolerances.TOL["float32"] and r["max_abs_diff"] <= r["tol"]
    assert r["median_ms"] > 0 and r["p10_ms"] <= r["median_ms"] <= r["p90_ms"]
    assert r["reps"] >= bench.MIN_REPS
    assert r["sequences_per_s"] == pytest.approx(1e3 / r["median_ms"])


def test_bench_markdown_with_peers(capsys, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    path = tmp_path / "r.json"
    rc = main(["bench", "--workloads", "kws", "--peers", "torch,onnxruntime", "--modes", "float32",
               "--budget", "0.02", "--markdown", "--json", str(path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "| workload |" in out and "| torch ms |" in out and "| ort ms |" in out
    assert any(l.startswith("| kws |") and l.rstrip().endswith("| ok |") for l in out.splitlines())
    rows = {r["runner"]: r for r in json.loads(path.read_text())["results"]}
    assert set(rows) == {"ours", "torch", "onnxruntime"}
    for name in ("torch", "onnxruntime"):
        assert rows[name]["status"] == "ok", rows[name]
        assert rows[name]["checked_against"] == "ours"
        assert rows[name]["tol"] == tolerances.TOL_FRAMEWORK["float32"]
        assert rows[name]["max_abs_diff"] <= rows[name]["tol"]
        assert rows[name]["ratio_vs_ours"] == pytest.approx(
            rows[name]["median_ms"] / rows["ours"]["median_ms"])


def test_bench_quick_round_robin_cold_every_peer(capsys, tmp_path):
    """The new options on a tiny custom workload: every peer (the missing ones skipped),
    our int8 mode, round-robin rounds and blocks, cold caches, threads, JSON."""
    path = tmp_path / "r.json"
    rc = main(["bench", "--quick", "--workloads", "6x2x4x8-L2-bi", "--rounds", "3",
               "--block-calls", "2", "--cold", "--threads", "2", "--budget", "0.01",
               "--json", str(path)])
    cap = capsys.readouterr()
    assert rc == 0, cap.out + cap.err
    assert "round-robin, 3 rounds, engine order rotated each round, blocks of 2 calls" in cap.out
    assert "cold caches:" in cap.out and "ours GFLOP/s" in cap.out
    assert "max abs error vs our float64 model, reduced precision" in cap.out
    data = json.loads(path.read_text())
    assert data["environment"]["timing"]["cold"] is True
    assert data["environment"]["timing"]["evict_bytes"] == 2 * bench.llc_bytes()
    rows = {r["runner"]: r for r in data["results"]}
    assert list(rows) == (["ours"] + [f"ours-{m}" for m in bench.DEFAULT_MODES if m != "float32"]
                          + list(bench.PEERS))
    for r in rows.values():
        assert r["status"] in ("ok", "skipped"), r
        assert r["threads"] == 2
        if r["status"] == "ok":
            assert r["reps"] == 6 and r["cold"] is True and r["rounds"] == 3
            assert r["p10_ms"] <= r["median_ms"] <= r["p90_ms"] and r["gflops"] > 0
        else:
            assert r["reason"]
    if rows["openvino-bf16"]["status"] == "ok":      # bf16 hardware: it really ran bf16
        assert rows["openvino-bf16"]["precision"] == "bf16"
    for name in ("openvino-f32", "torch", "onnxruntime"):
        if rows[name]["status"] == "ok":
            assert rows[name]["precision"] == "float32" and rows[name]["ratio_against"] == "ours"


@pytest.mark.parametrize("argv, message", [
    (["--workloads", "nope", "--no-peers"], "unknown workload(s) nope; choose from kws,"),
    (["--workloads", "kws,nope", "--quantize", "float16"], "unknown workload(s) nope"),
    (["--workloads", "nope", "--concurrency", "2"], "unknown workload(s) nope"),
    (["--workloads", "kws", "--peers", "torch,nope"],
     "unknown peer(s) nope; choose from torch, onnxruntime, onnxruntime-int8, openvino-f32, "
     "openvino-bf16, tensorflow"),
    (["--workloads", "kws", "--no-peers", "--modes", "int4"], "unknown mode(s) int4"),
    (["--workloads", "10x0x4x8", "--no-peers"], "T, B, I, H and L must be at least 1"),
    (["--workloads", "10x1x4", "--no-peers"], "or give sizes as TxBxIxH"),
    (["--workloads", "kws", "--quantize", "nope"], "quantization mode must be one of"),
])
def test_bench_rejects_bad_arguments(capsys, argv, message):
    assert main(["bench", "--budget", "0.01"] + argv) == 2
    assert message in capsys.readouterr().err


def test_bench_failed_check_exits_1(capsys, monkeypatch):
    # float32 vs the float64 model is never exact
    monkeypatch.setitem(tolerances.TOL, "float32", 0.0)
    rc = main(["bench", "--workloads", "kws", "--no-peers", "--modes", "float32",
               "--budget", "0.01"])
    cap = capsys.readouterr()
    assert rc == 1
    assert "FAIL" in cap.out and "kws/ours: mismatch" in cap.out
    assert "vs ours float64 exceeds 0" in cap.out
    assert "correctness check failed" in cap.err


def test_bench_quantize_weight_only(capsys, tmp_path):
    path = tmp_path / "q.json"
    assert main(["bench", "--workloads", "kws", "--quantize", "float16", "--budget", "0.01",
                 "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ours max err" in out and any(l.split()[:2] == ["kws", "float16"]
                                         for l in out.splitlines())
    (row,) = json.loads(path.read_text())["quantized"]
    assert row["ours-f32_max_err"] <= tolerances.TOL["float32"]
    assert tolerances.TOL["float32"] < row["ours_max_err"] < 1e-3  # float16 weights
    assert "onnxruntime-int8_ms" not in row


def test_bench_concurrency_reports_scaling_and_checks_results(capsys):
    status = main(["bench", "--workloads", "kws", "--concurrency", "2", "--budget", "0.2"])
    out = capsys.readouterr().out
    assert status == 0
    lines = [l for l in out.splitlines() if l.startswith("kws")]
    assert len(lines) == 2 and all(l.rstrip().endswith("yes") for l in lines)


# ---------------------------------------------------------------- bench --model FILE

def _bench_model(capsys, tmp_path, path, *extra):
    out_json = tmp_path / "r.json"
    rc = main(["bench", "--model", str(path), "--budget", "0.02", "--rounds", "2",
               "--json", str(out_json), *extra])
    cap = capsys.readouterr()
    data = json.loads(out_json.read_text()) if out_json.exists() else None
    return rc, cap, data


def test_bench_model_native_file_shape_and_modes(capsys, tmp_path):
    """A native file at --shape T,B: ours (float32) and ours-int8 timed on the file's
    model, checked against its float64 twin; the sizes and the report come from the
    file (a two-layer stack whose layers differ, batch_first)."""
    m = li.LSTM([li.LSTM.random(7, 12, seed=1).weights[0],
                 li.LSTM.random(12, 5, seed=2).weights[0]], batch_first=True)
    path = tmp_path / "stack.safetensors"
    m.save(path)
    rc, cap, data = _bench_model(capsys, tmp_path, path, "--shape", "9,3", "--no-peers")
    assert rc == 0, cap.out + cap.err
    env = data["environment"]["model"]
    assert env["format"] == "native" and env["batch_first"] is True
    assert env["input_shape"] == [3, 9, 7] and env["layers"] == ["forward 7->12",
                                                                  "forward 12->5"]
    assert "model: " in cap.out and "input 3x9x7" in cap.out
    rows = {r["runner"]: r for r in data["results"]}
    assert list(rows) == ["ours"] + [f"ours-{m}" for m in bench.DEFAULT_MODES if m != "float32"]
    for r in rows.values():
        assert r["status"] == "ok", r
        assert (r["workload"], r["T"], r["B"], r["I"], r["H"], r["num_layers"]) == \
            ("stack.safetensors", 9, 3, 7, 12, 2)
        assert r["model_file"] == str(path.resolve())
    # the check really ran on the file's model: its error vs float64 is a float32 one
    assert 0 < rows["ours"]["max_abs_diff"] <= tolerances.TOL["float32"]
    # GFLOP/s from the layers' own sizes: 2*T*B*4H*(I_l + H) per layer
    flops = 2 * 9 * 3 * 4 * (12 * (7 + 12) + 5 * (12 + 5))
    assert rows["ours"]["gflops"] == pytest.approx(flops / (rows["ours"]["median_ms"] / 1e3)
                                                   / 1e9)


def test_bench_model_quantized_file_runs_as_loaded(capsys, tmp_path):
    """An int8 file: ours-int8 is the file's own model (not re-quantized), "ours" the
    float32 model of its dequantized weights."""
    q = li.LSTM.random(6, 10, seed=3).quantize("int8")
    path = tmp_path / "q.safetensors"
    q.save(path)
    rc, cap, data = _bench_model(capsys, tmp_path, path, "--shape", "5,2", "--no-peers",
                                 "--modes", "float32")
    assert rc == 0, cap.out + cap.err
    rows = {r["runner"]: r for r in data["results"]}
    assert list(rows) == ["ours", "ours-int8"]
    assert rows["ours-int8"]["info"] == {"model": "as given (already quantized)"}
    assert rows["ours-int8"]["precision"] == "int8"
    assert data["environment"]["model"]["quantization"] == "int8"
    assert rows["ours"]["max_abs_diff"] <= tolerances.TOL["float32"]
    assert rows["ours-int8"]["checked_against"] == "ours float64"


def test_bench_model_against_the_peers(capsys, tmp_path):
    """The peers that can express the file's model are timed and checked against ours;
    the others are skipped with their reason (torch has no peepholes)."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    plain, peep = tmp_path / "plain.safetensors", tmp_path / "peep.safetensors"
    li.LSTM.random(8, 16, num_layers=2, bidirectional=True, seed=4).save(plain)
    li.LSTM.random(8, 16, peephole=True, seed=5).save(peep)
    rc, cap, data = _bench_model(capsys, tmp_path, plain, "--shape", "6,2", "--peers",
                                 "torch,onnxruntime", "--modes", "float32")
    assert rc == 0, cap.out + cap.err
    rows = {r["runner"]: r for r in data["results"]}
    assert list(rows) == ["ours", "torch", "onnxruntime"]
    for name in ("torch", "onnxruntime"):
        assert rows[name]["status"] == "ok" and rows[name]["checked_against"] == "ours"
        assert rows[name]["max_abs_diff"] <= tolerances.TOL_FRAMEWORK["float32"]
        assert rows[name]["ratio_vs_ours"] > 0
    rc, cap, data = _bench_model(capsys, tmp_path, peep, "--peers", "torch,onnxruntime",
                                 "--modes", "float32")
    assert rc == 0, cap.out + cap.err
    rows = {r["runner"]: r for r in data["results"]}
    assert rows["torch"]["status"] == "skipped" and "peephole" in rows["torch"]["reason"]
    assert rows["onnxruntime"]["status"] == "ok" and rows["ours"]["T"] == 100  # default 100,1


def test_bench_model_reads_other_formats(capsys, tmp_path):
    """A torch.save state dict and an ONNX graph, through the loaders."""
    torch = pytest.importorskip("torch")
    net = torch.nn.LSTM(5, 9, num_layers=1)
    pt = tmp_path / "net.pt"
    torch.save(net.state_dict(), pt)
    rc, cap, data = _bench_model(capsys, tmp_path, pt, "--shape", "4,1", "--no-peers",
                                 "--modes", "float32")
    assert rc == 0, cap.out + cap.err
    assert data["environment"]["model"]["format"] == "pytorch"
    (row,) = data["results"]
    assert (row["I"], row["H"], row["status"]) == (5, 9, "ok")
    pytest.importorskip("onnx")
    from lstm_infer.formats.onnx import to_onnx
    onnx_path = tmp_path / "net.onnx"
    onnx_path.write_bytes(to_onnx(li.from_torch(net)).SerializeToString())
    rc, cap, data = _bench_model(capsys, tmp_path, onnx_path, "--shape", "4,1", "--no-peers",
                                 "--modes", "float32")
    assert rc == 0, cap.out + cap.err
    assert data["environment"]["model"]["format"] == "onnx"


@pytest.mark.parametrize("argv, message", [
    (["--model", "MISSING"], "no such file"),
    (["--shape", "10,2"], "--shape go(es) with --model FILE"),
    (["--layer", "x", "--workloads", "kws"], "--layer go(es) with --model FILE"),
    (["--model", "M", "--workloads", "kws"], "does not take --workloads"),
    (["--model", "M", "--quantize", "int8"], "does not take --workloads, --quantize"),
    (["--model", "M", "--shape", "10"], "--shape must be T,B"),
    (["--model", "M", "--shape", "0,1"], "both must be at least 1"),
])
def test_bench_model_bad_arguments(capsys, tmp_path, argv, message):
    path = tmp_path / "m.safetensors"
    li.LSTM.random(3, 4).save(path)
    argv = [str(path) if a == "M" else str(tmp_path / "missing.pt") if a == "MISSING" else a
            for a in argv]
    assert main(["bench", "--no-peers", "--budget", "0.01"] + argv) == 2
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------- what ours is checked against

def test_float64_model_matches_the_suite_oracle():
    """The bench checks ours against our float64 model; that model against the
    independent numpy oracle (tests/reference.py) here, so the bench needs no oracle."""
    wl = bench.Workload(T=30, B=3, I=7, H=16, num_layers=2, bidirectional=True)
    model, x = bench.make_model(wl, seed=4), bench.make_input(wl, seed=5)
    out, h, c = bench.reference(model, x)
    ref_out, ref_h, ref_c = lstm_reference(model.weights, x)  # h_n, c_n: one array per layer
    for got, want in ((out, ref_out), (h, np.concatenate(ref_h)), (c, np.concatenate(ref_c))):
        assert got.dtype == np.float64
        assert bench.max_abs_diff([got], [want]) <= tolerances.TOL["float64"]


def test_max_abs_diff_skips_missing_sides_and_flags_nan_and_shapes():
    a = np.zeros((2, 3))
    assert bench.max_abs_diff([a, None], [a + 0.5, a]) == 0.5
    assert bench.max_abs_diff([a + np.nan], [a]) == float("inf")
    assert bench.max_abs_diff([a], [a[:1]]) == float("inf")


# ---------------------------------------------------------------- runners

def test_unknown_runner_and_peer():
    with pytest.raises(ValueError, match="unknown runner 'nope'"):
        bench.build_runner("nope", None, None, 1)
    assert bench.select_peers(["onnxruntime", "torch", "onnxruntime"]) == ["onnxruntime", "torch"]
    assert bench.select_peers(None) == list(bench.DEFAULT_PEERS)


def test_peers_skip_what_their_exporter_cannot_express():
    """An exporter's ValueError (checked before the framework is needed) is the
    peer's PeerUnavailable, i.e. a skipped row, with the exporter's reasons."""
    pytest.importorskip("torch")
    x = np.zeros((2, 1, 4), np.float32)
    with pytest.raises(bench.PeerUnavailable, match="layer 0: peephole connections"):
        bench.build_runner("torch", li.LSTM.random(4, 8, peephole=True), x, 1)
    pytest.importorskip("onnxruntime")
    with pytest.raises(bench.PeerUnavailable, match=r"layer 0: a projection \(proj_size"):
        bench.build_runner("onnxruntime", li.LSTM.random(4, 8, proj_size=3), x, 1)


def test_peers_skipped_rows_say_why(monkeypatch):
    from lstm_infer.bench import runners
    from lstm_infer.bench.runners import ours

    def unavailable(*a):
        raise runners.PeerUnavailable("not here")
    monkeypatch.setitem(runners._REGISTRY, "fake",
                        runners.Spec("ours", "missing", "fake", "lstm_infer", "float32"))
    monkeypatch.setattr(ours, "missing", unavailable, raising=False)
    rows = bench.run_workload("kws", peers=["fake"], budget=0.01, modes=["float32"])
    assert [r["runner"] for r in rows] == ["ours", "fake"]
    assert rows[1]["status"] == "skipped" and rows[1]["reason"] == "not here"
    assert bench.all_checks_passed(rows)


def test_onnxruntime_runner_computes_like_ours():
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    m = li.LSTM.random(5, 8, num_layers=2, bidirectional=True, peephole=True, seed=3)
    x = np.random.default_rng(0).uniform(-1, 1, (6, 2, 5)).astype(np.float32)
    got = bench.build_runner("onnxruntime", m, x, 1).fn()
    out, (h, c) = m(x)
    assert bench.max_abs_diff(got, (out, h, c)) <= tolerances.TOL_FRAMEWORK["float32"]


# ---------------------------------------------------------------- renderers (output pinned)

def test_render_concurrency_layout():
    rows = [{"workload": "kws", "python_threads": 1, "calls_per_s": 1161.63,
             "sequences_per_s": 1161.63, "speedup": 1.0, "mismatches": 0, "calls": 100},
            {"workload": "asr-bi", "python_threads": 2, "calls_per_s": 99.04,
             "sequences_per_s": 1584.6, "speedup": 1.93, "mismatches": 3, "calls": 50}]
    assert bench.render_concurrency(rows).splitlines() == [
        "workload    python threads  calls/s  sequences/s  speedup  results == serial",
        "----------  --------------  -------  -----------  -------  -----------------",
        "kws                      1   1161.6       1161.6    1.00x  yes",
        "asr-bi                   2     99.0       1584.6    1.93x  NO (3 of 50)"]


def test_render_quantized_layout():
    rows = [{"workload": "kws", "mode": "int8", "ours_ms": 0.1234, "ours-f32_ms": 0.2441,
             "speedup_vs_f32": 1.98, "onnxruntime-int8_ms": 0.25, "ort_over_ours": 2.02,
             "ours_max_err": 1.3e-3, "ours_mean_err": 2.3e-4, "onnxruntime-int8_max_err": 1.31e-3,
             "onnxruntime-int8_mean_err": 2.4e-4, "ours-f32_max_err": 1.4e-7},
            {"workload": "stream256", "mode": "float16", "ours_ms": 1.345, "ours-f32_ms": 1.251,
             "speedup_vs_f32": 0.93, "ours_max_err": 1.8e-5, "ours_mean_err": 2.7e-6,
             "ours-f32_max_err": 2.9e-7}]
    assert bench.render_quantized(rows).splitlines() == [
        " workload     mode  ours ms  ours f32 ms  f32/ours  ort-int8 ms  ort/ours  ours max err"
        "  ours mean err  ort max err  ort mean err  f32 max err",
        "---------  -------  -------  -----------  --------  -----------  --------  ------------"
        "  -------------  -----------  ------------  -----------",
        "      kws     int8    0.123        0.244     1.98x        0.250     2.02x       1.3e-03"
        "        2.3e-04      1.3e-03       2.4e-04      1.4e-07",
        "stream256  float16    1.345        1.251     0.93x            -         -       1.8e-05"
        "        2.7e-06            -             -      2.9e-07"]
    md = bench.render_quantized(rows, markdown=True).splitlines()
    assert md[1] == "|" + "---|" * 12
    assert md[3] == ("| stream256 | float16 | 1.345 | 1.251 | 0.93x | - | - | 1.8e-05 | 2.7e-06 "
                     "| - | - | 2.9e-07 |")


def test_onnx_gate_order_round_trips():
    from lstm_infer.formats.gate_orders import from_canonical, to_canonical
    w = np.arange(8.0).reshape(8, 1)
    assert np.array_equal(to_canonical(from_canonical(w, "onnx"), "onnx"), w)


@pytest.mark.parametrize("cmd", [[], ["bench"], ["roofline"], ["inspect"], ["convert"], ["run"]])
def test_every_help_page_renders(cmd, capsys):
    from lstm_infer.cli import main
    with pytest.raises(SystemExit) as e:
        main(cmd + ["--help"])
    assert e.value.code == 0
    assert "usage:" in capsys.readouterr().out
