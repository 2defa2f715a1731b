"""onnxruntime's com.microsoft.DynamicQuantizeLSTM (lstm_infer.formats.onnx_quantized).

Files are made the way users make them: a float ONNX LSTM (built here with onnx.helper
from seeded weights), then ``onnxruntime.quantization.quantize_dynamic(...,
op_types_to_quantize=["LSTM"])``, per tensor and per channel. Checked:

- the loaded int8 model holds exactly the file's int8 weights and scales;
- it matches onnxruntime running the same file within int8 error. onnxruntime quantizes
  activations per call (one scale over the batch), lstm_infer per step and row, so the
  bound comes from onnxruntime's own error: |ours - ort| <= 2 * |ort - float| + 1e-4,
  and ours is no worse than onnxruntime against the float model;
- files onnxruntime writes with full-range weights (reduce_range=False): on CPUs without
  AVX-512 VNNI, onnxruntime's u8s8 kernel saturates its int16 pair sums there (its
  documentation advises reduce_range=True for such machines), so only "ours no worse than
  onnxruntime" and the int8 bound against float are asserted for them;
- refusals: asymmetric weights, a stack that mixes float and quantized nodes, bad scales.
"""
from __future__ import annotations

import numpy as np
import pytest

import lstm_infer as li
from lstm_infer.formats.gate_orders import from_canonical
from lstm_infer.formats.onnx import ONNXFormatError
from reference import random_weights

onnx = TP = oh = nh = None  # set by _onnx: every test builds ONNX files, each skips alone


@pytest.fixture(autouse=True)
def _onnx():
    """onnx and its helpers as this module's globals (a skip per test without onnx: the
    core CI venv counts whole-module skips against its budget)."""
    global onnx, TP, oh, nh
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    TP, oh, nh = TensorProto, helper, numpy_helper

T, B, I = 12, 4, 6
INT8_BOUND = 0.03  # int8 (weights and activations) vs float32 on these workloads


@pytest.fixture(scope="module")
def quant():
    """quantize_dynamic (onnxruntime.quantization)."""
    mod = pytest.importorskip("onnxruntime.quantization")
    return mod.quantize_dynamic


@pytest.fixture(scope="module")
def ort():
    return pytest.importorskip("onnxruntime")


def _float_lstm(path, H, bidirectional, seed=0, peephole=False):
    """A float ONNX LSTM file (one node) and its canonical float weights."""
    w = random_weights(I, H, bidirectional=bidirectional, peephole=peephole, rng=seed)[0]
    D = len(w)
    W = np.stack([from_canonical(d["w_ih"], "onnx") for d in w]).astype(np.float32)
    R = np.stack([from_canonical(d["w_hh"], "onnx") for d in w]).astype(np.float32)
    Bias = np.stack([np.concatenate([from_canonical(d["b"], "onnx") / 2,
                                     from_canonical(d["b"], "onnx") / 2]) for d in w])
    inits = [nh.from_array(W, "W"), nh.from_array(R, "R"),
             nh.from_array(Bias.astype(np.float32), "B")]
    ins = ["X", "W", "R", "B"]
    if peephole:
        P = np.stack([np.concatenate([d["p_i"], d["p_o"], d["p_f"]]) for d in w])
        inits.append(nh.from_array(P.astype(np.float32), "P"))
        ins += ["seq", "h0", "c0", "P"]
    else:
        ins += ["seq", "h0", "c0"]
    node = oh.make_node("LSTM", ins, ["Y", "Y_h", "Y_c"], name="lstm", hidden_size=H,
                        direction="bidirectional" if bidirectional else "forward")
    f32 = TP.FLOAT
    g = oh.make_graph(
        [node], "g",
        [oh.make_tensor_value_info("X", f32, ["T", "B", I]),
         oh.make_tensor_value_info("seq", TP.INT32, ["B"]),
         oh.make_tensor_value_info("h0", f32, [D, "B", H]),
         oh.make_tensor_value_info("c0", f32, [D, "B", H])],
        [oh.make_tensor_value_info(n, f32, None) for n in ("Y", "Y_h", "Y_c")], inits)
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 14)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return w


def _quantized(tmp_path, quant, H=16, bidirectional=True, per_channel=False,
               reduce_range=True, peephole=False, extra=None, seed=0):
    fp, qp = tmp_path / "float.onnx", tmp_path / f"q{per_channel:d}{reduce_range:d}.onnx"
    w = _float_lstm(fp, H, bidirectional, seed=seed, peephole=peephole)
    quant(str(fp), str(qp), op_types_to_quantize=["LSTM"], per_channel=per_channel,
          reduce_range=reduce_range, extra_options=extra or {})
    return fp, qp, w


def _inputs(H, D, seed=1, lengths=False, state=False):
    rng = np.random.default_rng(seed)
    feed = {"X": rng.uniform(-3, 3, (T, B, I)).astype(np.float32)}
    feed["seq"] = (rng.integers(1, T + 1, B) if lengths else np.full(B, T)).astype(np.int32)
    shape = (D, B, H)
    feed["h0"] = (rng.uniform(-.5, .5, shape) if state else np.zeros(shape)).astype(np.float32)
    feed["c0"] = (rng.uniform(-.5, .5, shape) if state else np.zeros(shape)).astype(np.float32)
    return feed


def _ours(m, feed):
    out, (h, c) = m(feed["X"], state=(feed["h0"], feed["c0"]), lengths=feed["seq"])
    return out, h, c


def _ort_run(ort, path, feed):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    Y, Yh, Yc = s.run(None, feed)
    Tn, D, Bn, H = Y.shape
    return Y.transpose(0, 2, 1, 3).reshape(Tn, Bn, D * H), Yh, Yc


def _node(path):
    return [n for n in onnx.load(str(path)).graph.node if "LSTM" in n.op_type]


# ----------------------------------------------------------------------------- exact weights
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_int8_weights_and_scales_exact(tmp_path, quant, per_channel, bidirectional):
    _, qp, _ = _quantized(tmp_path, quant, bidirectional=bidirectional,
                          per_channel=per_channel, reduce_range=False)
    (node,) = _node(qp)
    assert (node.domain, node.op_type) == ("com.microsoft", "DynamicQuantizeLSTM")
    init = {t.name: nh.to_array(t) for t in onnx.load(str(qp)).graph.initializer}
    m = li.load(qp)
    assert m.config.quantization == "int8"
    H = m.config.hidden_size
    for d, w in enumerate(m.weights[0]):
        for ours, q, s in (("w_ih", 1, 8), ("w_hh", 2, 10)):
            Wq = init[node.input[q]][d].T  # (4H, K), ONNX gate order
            scale = np.broadcast_to(init[node.input[s]].reshape(len(m.weights[0]), -1)[d],
                                    (4 * H,))
            assert w[ours].dtype == np.int8
            np.testing.assert_array_equal(w[ours], from_canonical_inv(Wq))
            np.testing.assert_array_equal(w[ours + "_scale"], from_canonical_inv(scale))
    # and the model survives the native format bit for bit
    p = tmp_path / "m.safetensors"
    m.save(p)
    feed = _inputs(H, len(m.weights[0]))
    np.testing.assert_array_equal(li.load(p)(feed["X"])[0], m(feed["X"])[0])


def from_canonical_inv(a):
    """ONNX gate order (i, o, f, c) -> canonical, along axis 0 (the loader's job, done
    here by hand: blocks 0, 2, 3, 1)."""
    blocks = np.split(np.asarray(a), 4, axis=0)
    return np.concatenate([blocks[0], blocks[2], blocks[3], blocks[1]], axis=0)


# ----------------------------------------------------------------------------- vs onnxruntime
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("H", [8, 48])
def test_matches_onnxruntime(tmp_path, quant, ort, per_channel, bidirectional, H):
    fp, qp, _ = _quantized(tmp_path, quant, H=H, bidirectional=bidirectional,
                           per_channel=per_channel, reduce_range=True)
    D = 2 if bidirectional else 1
    feed = _inputs(H, D, lengths=True, state=True)
    m = li.load(qp)
    ref = _ort_run(ort, fp, feed)          # float LSTM in onnxruntime
    theirs = _ort_run(ort, qp, feed)       # its DynamicQuantizeLSTM
    ours = _ours(m, feed)
    float_ours = _ours(li.load(fp), feed)
    np.testing.assert_allclose(float_ours[0], ref[0], atol=1e-5)  # the float files agree
    for k, what in enumerate(("out", "h_n", "c_n")):
        err_ort = float(np.abs(theirs[k] - ref[k]).max())
        err_ours = float(np.abs(ours[k] - ref[k]).max())
        diff = float(np.abs(ours[k] - theirs[k]).max())
        assert err_ours <= INT8_BOUND, (what, err_ours)
        assert err_ours <= 1.5 * err_ort + 1e-3, (what, err_ours, err_ort)
        assert diff <= 2 * err_ort + 1e-4, (what, diff, err_ort)


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
def test_full_range_weights_no_worse_than_onnxruntime(tmp_path, quant, ort, per_channel):
    fp, qp, _ = _quantized(tmp_path, quant, H=32, per_channel=per_channel,
                           reduce_range=False)
    feed = _inputs(32, 2)
    ref, theirs, ours = _ort_run(ort, fp, feed), _ort_run(ort, qp, feed), _ours(li.load(qp), feed)
    for k in range(3):
        err_ours = float(np.abs(ours[k] - ref[k]).max())
        assert err_ours <= INT8_BOUND
        assert err_ours <= 1.5 * float(np.abs(theirs[k] - ref[k]).max()) + 1e-3


def test_peephole_and_stack(tmp_path, quant, ort):
    """Peepholes stay float; a 2-layer stack of quantized nodes (our exporter's graph:
    Transpose + Reshape between them) loads as one int8 model."""
    fp, qp, _ = _quantized(tmp_path, quant, H=12, bidirectional=False, peephole=True)
    feed = _inputs(12, 1)
    ref, theirs, ours = _ort_run(ort, fp, feed), _ort_run(ort, qp, feed), _ours(li.load(qp), feed)
    assert li.load(qp).config.peephole
    err_ort = float(np.abs(theirs[0] - ref[0]).max())
    assert float(np.abs(ours[0] - theirs[0]).max()) <= 2 * err_ort + 1e-4

    stack = li.LSTM.random(I, 10, num_layers=2, bidirectional=True, seed=3)
    sf, sq = tmp_path / "stack.onnx", tmp_path / "stack_q.onnx"
    li.formats.onnx.to_onnx(stack, sf)
    quant(str(sf), str(sq), op_types_to_quantize=["LSTM"], reduce_range=True)
    assert [n.op_type for n in _node(sq)] == ["DynamicQuantizeLSTM"] * 2
    m = li.load(sq)
    assert m.config.num_layers == 2 and m.config.quantization == "int8"
    x = feed["X"]
    s = ort.InferenceSession(str(sq), providers=["CPUExecutionProvider"])
    Y = s.run(["Y"], {"X": x})[0]
    err_ort = float(np.abs(Y - stack(x)[0]).max())
    assert float(np.abs(m(x)[0] - Y).max()) <= 2 * err_ort + 1e-4
    assert float(np.abs(m(x)[0] - stack(x)[0]).max()) <= 1.5 * err_ort + 1e-3


# ----------------------------------------------------------------------------- refusals
def test_asymmetric_weights_refused(tmp_path, quant):
    _, qp, _ = _quantized(tmp_path, quant, per_channel=True,
                          extra={"WeightSymmetric": False})
    with pytest.raises(ONNXFormatError, match=r"asymmetrically.*outside int8's \[-128, 127\]"):
        li.load(qp)


def test_mixed_stack_refused(tmp_path, quant):
    stack = li.LSTM.random(I, 10, num_layers=2, seed=3)
    sf, sq = tmp_path / "stack.onnx", tmp_path / "stack_q.onnx"
    li.formats.onnx.to_onnx(stack, sf)
    quant(str(sf), str(sq), op_types_to_quantize=["LSTM"], nodes_to_quantize=["lstm1"])
    assert [n.op_type for n in _node(sq)] == ["LSTM", "DynamicQuantizeLSTM"]
    with pytest.raises(ONNXFormatError, match="mixes DynamicQuantizeLSTM nodes"):
        li.load(sq)
    # one node at a time loads: the float one as float, the quantized one as int8
    assert li.from_onnx(str(sq), node="lstm0").config.quantization is None
    q = li.from_onnx(str(sq), node=_node(sq)[1].name)
    assert q.config.quantization == "int8" and q.config.input_size == 10


def _edit(qp, out, fn):
    m = onnx.load(str(qp))
    node = [n for n in m.graph.node if n.op_type == "DynamicQuantizeLSTM"][0]
    inits = {t.name: t for t in m.graph.initializer}
    fn(node, inits, m)
    onnx.save(m, str(out))
    return out


def _replace(m, inits, name, arr):
    m.graph.initializer.remove(inits[name])
    m.graph.initializer.append(nh.from_array(arr, name))


@pytest.mark.parametrize("case, match", [
    ("scale_shape", r"W_scale must have shape \(num_directions,\)"),
    ("scale_negative", "R_scale must be positive and finite"),
    ("zp_dtype", "W_zero_point must have W's dtype int8"),
    ("float_weight", "W must be int8 or uint8"),
    ("w_shape", r"R must have shape"),
    ("no_scale", "required input W_scale"),
])
def test_bad_quantization_inputs(tmp_path, quant, case, match):
    _, qp, _ = _quantized(tmp_path, quant)

    def fn(node, inits, m):
        W, Ws, Wz, R, Rs = (node.input[k] for k in (1, 8, 9, 2, 10))
        if case == "scale_shape":
            _replace(m, inits, Ws, np.ones(3, np.float32))
        elif case == "scale_negative":
            _replace(m, inits, Rs, -nh.to_array(inits[Rs]))
        elif case == "zp_dtype":
            _replace(m, inits, Wz, nh.to_array(inits[Wz]).astype(np.uint8))
        elif case == "float_weight":
            _replace(m, inits, W, nh.to_array(inits[W]).astype(np.float32))
        elif case == "w_shape":
            _replace(m, inits, R, nh.to_array(inits[R])[:, :-1])
        else:
            node.input[8] = ""

    with pytest.raises(ONNXFormatError, match=match):
        li.load(_edit(qp, tmp_path / "bad.onnx", fn))


def test_uint8_weights_with_zero_point_128_are_exact(tmp_path, quant):
    """A uint8 W with zero point 128 is the same int8 weight: taken exactly."""
    _, qp, _ = _quantized(tmp_path, quant, bidirectional=False)
    m0 = li.load(qp)

    def fn(node, inits, m):
        for q, z in ((1, 9), (2, 11)):
            a = nh.to_array(inits[node.input[q]])
            _replace(m, inits, node.input[q], (a.astype(np.int16) + 128).astype(np.uint8))
            zp = nh.to_array(inits[node.input[z]])
            _replace(m, inits, node.input[z], np.full(zp.shape, 128, np.uint8))

    m1 = li.load(_edit(qp, tmp_path / "u8.onnx", fn))
    for a, b in zip(m0.weights[0], m1.weights[0]):
        for k in ("w_ih", "w_hh", "w_ih_scale", "w_hh_scale"):
            np.testing.assert_array_equal(a[k], b[k])
