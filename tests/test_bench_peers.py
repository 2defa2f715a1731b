"""The benchmark's newer runners against ours: OpenVINO f32 / bf16 (the precision it
really ran), onnxruntime int8, our quantized modes, TensorFlow's skipped row; each
skips on its own framework."""
import numpy as np
import pytest

import lstm_infer as li
from lstm_infer import bench, tolerances


def _case(peephole=False):
    m = li.LSTM.random(5, 8, num_layers=2, bidirectional=True, peephole=peephole, seed=3)
    x = np.random.default_rng(0).uniform(-1, 1, (6, 2, 5)).astype(np.float32)
    out, (h, c) = m(x)
    return m, x, (out, h, c)


def test_openvino_f32_computes_like_ours():
    pytest.importorskip("openvino")
    pytest.importorskip("onnx")
    m, x, want = _case()
    r = bench.build_runner("openvino-f32", m, x, 1)
    assert r.precision == "float32" and r.info["compiled_precision_hint"] == "f32"
    assert r.info["num_streams"] == "1" and int(r.info["inference_num_threads"]) == 1
    got = r.fn()
    assert [g.shape for g in got] == [w.shape for w in want]
    assert bench.max_abs_diff(got, want) <= tolerances.TOL_FRAMEWORK["float32"]
    assert bench.max_abs_diff(r.fn(), got) == 0.0   # a second call: same, fresh arrays


def test_openvino_bf16_reports_the_precision_it_ran():
    """bf16 where the CPU has it (checked vs float64 with the reduced bound); elsewhere
    OpenVINO compiles f32 and the runner refuses to pass that off as bf16."""
    pytest.importorskip("openvino")
    pytest.importorskip("onnx")
    m, x, _ = _case()
    try:
        r = bench.build_runner("openvino-bf16", m, x, 1)
    except bench.PeerUnavailable as e:
        assert "for INFERENCE_PRECISION_HINT bf16" in str(e) and "not timed as bf16" in str(e)
        assert "OpenVINO ran f32" in str(e)
        return
    assert r.precision == "bf16" and r.info["compiled_precision_hint"] == "bf16"
    ref = bench.reference(m, x)
    assert bench.max_abs_diff(r.fn(), ref) <= bench.tol_reduced()


def test_openvino_refuses_peepholes_its_frontend_drops():
    m, x, _ = _case(peephole=True)
    with pytest.raises(bench.PeerUnavailable, match="ignores LSTM peepholes"):
        bench.build_runner("openvino-f32", m, x, 1)


def test_onnxruntime_int8_is_checked_against_float64_and_says_how_it_quantized():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    m, x, _ = _case()
    r = bench.build_runner("onnxruntime-int8", m, x, 1)
    assert r.precision == "int8" and isinstance(r.info["reduce_range"], bool)
    assert r.info["reduce_range"] == (not r.info["vnni_flags"])
    err = bench.max_abs_diff(r.fn(), bench.reference(m, x))
    assert tolerances.TOL["float32"] < err <= bench.tol_reduced()


def test_rows_carry_precision_checks_and_the_ratio_pairing():
    """ours-int8 and onnxruntime-int8 are checked against float64 with the reduced
    bound; the int8 peer's ratio is against ours-int8, a float32 peer's against ours."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    rows = {r["runner"]: r for r in bench.run_workload(
        "8x2x6x12", peers=["onnxruntime", "onnxruntime-int8", "tensorflow"],
        modes=["float32", "int8"], rounds=2, block_calls=2, budget=0.01)}
    assert list(rows) == ["ours", "ours-int8", "onnxruntime", "onnxruntime-int8", "tensorflow"]
    assert rows["ours-int8"]["precision"] == "int8"
    for name in ("ours-int8", "onnxruntime-int8"):
        assert rows[name]["checked_against"] == "ours float64"
        assert rows[name]["tol"] == bench.tol_reduced() and rows[name]["status"] == "ok"
    assert rows["onnxruntime"]["checked_against"] == "ours"
    assert rows["onnxruntime-int8"]["ratio_against"] == "ours-int8"
    assert rows["onnxruntime-int8"]["ratio_vs_ours"] == pytest.approx(
        rows["onnxruntime-int8"]["median_ms"] / rows["ours-int8"]["median_ms"])
    assert rows["onnxruntime"]["ratio_against"] == "ours"
    wl = bench.parse_spec("8x2x6x12")
    assert rows["ours"]["gflops"] == pytest.approx(
        bench.flops(wl) / (rows["ours"]["median_ms"] / 1e3) / 1e9)
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        assert rows["tensorflow"]["status"] == "skipped"
        assert "tensorflow not importable" in rows["tensorflow"]["reason"]
    else:  # runs, or skips with its reason (Keras on another backend in this process)
        assert rows["tensorflow"]["status"] in ("ok", "skipped"), rows["tensorflow"]
    assert bench.all_checks_passed(rows.values())


def test_flops_counts_both_gemms_per_layer_and_direction():
    # tput512: 2 layers of 2*T*B*4H*(I+H) with I = H = 512 (issue 9: 524 ms ~ 102 GFLOP/s)
    assert bench.flops(bench.WORKLOADS["tput512"]) == 2 * 2 * 100 * 64 * 4 * 512 * 1024
    bi = bench.Workload(10, 2, 8, 16, 2, True)      # layer 2 reads both directions: 2H
    assert bench.flops(bi) == 2 * (2 * 10 * 2 * 64 * (8 + 16)) + 2 * (2 * 10 * 2 * 64 * (32 + 16))
    p = bench.parse_spec("10x2x8x16-p4")            # W_hh is 4H x P, plus the projection
    assert p == bench.Workload(10, 2, 8, 16, 1, False, 4)
    assert bench.flops(p) == 2 * 10 * 2 * 64 * (8 + 4) + 2 * 10 * 2 * 16 * 4
    assert bench.parse_spec("kws") is None
