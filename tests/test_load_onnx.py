"""The ONNX loader (lstm_infer.formats.onnx) against onnxruntime, ONNX's own node
tests, torch exports and the numpy oracle (DESIGN §3: 1e-5 in float32).

Models are built with onnx.helper from seeded random weights in ONNX layout
(W (D, 4H, I), R, B = [Wb, Rb], P = [p_i, p_o, p_f], gates i, o, f, c) and run
by onnxruntime; our output is compared after the layout conversion documented
in the loader: out == Y.transpose(0, 2, 1, 3).reshape(T, B, D*H), h_n == Y_h.
"""
from __future__ import annotations

import glob
import os
import pickle
import sys
import warnings

import numpy as np
import pytest

import lstm_infer as li
from conftest import TOL as TOL_OWN, TOL_FRAMEWORK, assert_close
from lstm_infer.formats.onnx import ONNXFormatError, from_onnx, is_onnx_file
from reference import lstm_reference

try:  # building and loading models needs onnx; tests skip one by one (needs_onnx)
    import onnx
    from onnx import TensorProto as TP
    from onnx import helper as oh
    from onnx import numpy_helper as nh
except ImportError:
    onnx = TP = oh = nh = None
try:  # only the parity tests run models with onnxruntime (needs_ort)
    import onnxruntime as ort
except ImportError:
    ort = None

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "onnx")
TOL = TOL_FRAMEWORK["float32"]
T, B, I, H = 6, 3, 4, 5
# committed exports (scripts/make_onnx_fixtures.py): files for the tests that need no package
TORCH_EXPORTS = ["torch_bilstm_2layer", "torch_lstm_2layer"]


@pytest.fixture
def need_onnx():
    pytest.importorskip("onnx")


@pytest.fixture
def need_ort():
    pytest.importorskip("onnxruntime")


needs_onnx = pytest.mark.usefixtures("need_onnx")
needs_ort = pytest.mark.usefixtures("need_onnx", "need_ort")


# ----------------------------------------------------------------------------- builders
def _model(nodes, inputs, outputs, inits=(), opset=15):
    g = oh.make_graph(nodes, "g", inputs, outputs, list(inits))
    # ir_version 8: what this onnxruntime accepts (onnx 1.23 would write 11+)
    return oh.make_model(g, opset_imports=[oh.make_opsetid("", opset)], ir_version=8)


def _vi(name, elem=None, shape=None):
    elem = TP.FLOAT if elem is None else elem
    return oh.make_tensor_value_info(name, elem, shape)


def _weights(rng, D, I, H, *, bias=True, peephole=False, dtype=np.float32, scale=None):
    k = scale if scale is not None else 1 / np.sqrt(H)
    w = {"W": rng.uniform(-k, k, (D, 4 * H, I)), "R": rng.uniform(-k, k, (D, 4 * H, H))}
    if bias:
        w["B"] = rng.uniform(-k, k, (D, 8 * H))
    if peephole:
        w["P"] = rng.uniform(-k, k, (D, 3 * H))
    return {n: a.astype(dtype) for n, a in w.items()}


def _lstm_model(w, *, H, direction="forward", layout=0, seq=True, states=True, elem=None,
                name="lstm", **attrs):
    """One LSTM node: X, sequence_lens, initial_h, initial_c as graph inputs, weights as
    initializers, outputs Y, Y_h, Y_c."""
    D = w["W"].shape[0]
    ins = ["X", "W", "R", "B" if "B" in w else "", "sl" if seq else "",
           "h0" if states else "", "c0" if states else "", "P" if "P" in w else ""]
    while ins[-1] == "":
        ins.pop()
    node = oh.make_node("LSTM", ins, ["Y", "Y_h", "Y_c"], name=name, hidden_size=H,
                        direction=direction, **({"layout": 1} if layout else {}), **attrs)
    st = [D, None, H] if layout == 0 else [None, D, H]
    gin = [_vi("X", elem, [None, None, w["W"].shape[2]])]
    if seq:
        gin.append(_vi("sl", TP.INT32, [None]))
    if states:
        gin += [_vi("h0", elem, st), _vi("c0", elem, st)]
    return _model([node], gin, [_vi(n, elem) for n in ("Y", "Y_h", "Y_c")],
                  [nh.from_array(a, n) for n, a in w.items()])


def _ort(model, feeds):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = {i.name for i in s.get_inputs()}
    return s.run(None, {k: v for k, v in feeds.items() if k in names})


def _y_to_out(Y):
    """ONNX Y (T, D, B, H) -> ours (T, B, D*H)."""
    t, d, b, h = Y.shape
    return Y.transpose(0, 2, 1, 3).reshape(t, b, d * h)


def _inputs(rng, D, dtype=np.float32, lengths=True, b=B, t=T, i=I, h=H):
    x = rng.uniform(-3, 3, (t, b, i)).astype(dtype)
    h0 = rng.uniform(-0.5, 0.5, (D, b, h)).astype(dtype)
    c0 = rng.uniform(-0.5, 0.5, (D, b, h)).astype(dtype)
    lens = rng.integers(1, t + 1, b).astype(np.int32) if lengths else None
    if lengths:
        lens[0] = t
    return x, h0, c0, lens


def _compare(model, D, rng, tol=TOL, scale=False, dtype=np.float32, what=""):
    """Run `model` (layout 0) with onnxruntime and with our loader; compare everything."""
    x, h0, c0, lens = _inputs(rng, D, dtype)
    Y, Yh, Yc = _ort(model, {"X": x, "sl": lens, "h0": h0, "c0": c0})
    m = from_onnx(model)
    out, (h, c) = m(x, state=(h0, c0), lengths=lens)
    assert_close(out, _y_to_out(Y), tol, f"{what} out", scale_with_magnitude=scale)
    assert_close(h, Yh, tol, f"{what} h_n", scale_with_magnitude=scale)
    assert_close(c, Yc, tol, f"{what} c_n", scale_with_magnitude=scale)
    return m


def _canonical(w):
    """Our own ONNX -> canonical conversion for the oracle (independent of the loader)."""
    D, h = w["W"].shape[0], w["R"].shape[2]
    i, o, f, g = (slice(k * h, (k + 1) * h) for k in range(4))
    order = lambda a: np.concatenate([a[i], a[f], a[g], a[o]])  # noqa: E731
    layer = []
    for d in range(D):
        out = {"w_ih": order(w["W"][d]), "w_hh": order(w["R"][d])}
        if "B" in w:
            out["b"] = order(w["B"][d][:4 * h] + w["B"][d][4 * h:])
        if "P" in w:
            out["p_i"], out["p_o"], out["p_f"] = np.split(w["P"][d], 3)
        layer.append(out)
    return [layer]


# ----------------------------------------------------------------------------- vs onnxruntime
@pytest.mark.parametrize("bias,peephole", [(True, False), (False, False), (True, True)],
                         ids=["bias", "no-bias", "peephole"])
@needs_ort
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_directions_state_lengths_vs_ort(rng, direction, bias, peephole):
    D = 2 if direction == "bidirectional" else 1
    w = _weights(rng, D, I, H, bias=bias, peephole=peephole)
    m = _compare(_lstm_model(w, H=H, direction=direction), D, rng, what=direction)
    spec = m.config.layers[0]
    assert spec.direction == direction and spec.peephole == peephole
    assert not m.config.batch_first and m.dtype == np.float32


@needs_ort
def test_without_state_and_lengths_inputs(rng):
    w = _weights(rng, 2, I, H)
    model = _lstm_model(w, H=H, direction="bidirectional", seq=False, states=False)
    x = rng.uniform(-3, 3, (T, B, I)).astype(np.float32)
    Y, Yh, Yc = _ort(model, {"X": x})
    out, (h, c) = from_onnx(model)(x)
    assert_close(out, _y_to_out(Y), TOL, "out")
    assert_close(h, Yh, TOL, "h_n")
    assert_close(c, Yc, TOL, "c_n")


@needs_ort
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_clip_vs_ort(rng, direction):
    D = 2 if direction == "bidirectional" else 1
    w = _weights(rng, D, I, H, peephole=True, scale=1.0)  # large weights: the clip bites
    m = _compare(_lstm_model(w, H=H, direction=direction, clip=0.7), D, rng)
    assert m.config.layers[0].clip == pytest.approx(0.7)


@needs_ort
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_input_forget_vs_ort(rng, direction):
    D = 2 if direction == "bidirectional" else 1
    w = _weights(rng, D, I, H, peephole=True)
    m = _compare(_lstm_model(w, H=H, direction=direction, input_forget=1), D, rng)
    assert m.config.layers[0].input_forget


ACTIVATIONS = {
    "default-explicit": (["Sigmoid", "Tanh", "Tanh"], None, None),
    "lowercase": (["sigmoid", "tanh", "tanh"], None, None),
    "hardsigmoid-defaults": (["HardSigmoid", "Tanh", "Tanh"], None, None),
    "hardsigmoid-alpha-beta": (["HardSigmoid", "Tanh", "HardSigmoid"], [0.3, 0.15], [0.45, 0.6]),
    "relu-cell": (["Sigmoid", "Relu", "Tanh"], None, None),
    "relu-output": (["Sigmoid", "Tanh", "Relu"], None, None),
    "tanh-gates-sigmoid-cell": (["Tanh", "Sigmoid", "Sigmoid"], None, None),
    "all-three-kinds": (["HardSigmoid", "Relu", "Sigmoid"], [0.25], [0.55]),
    "affine-identity": (["Sigmoid", "Affine", "Tanh"], [1.0], [0.0]),
    # alpha/beta are consumed only by functions that take them, across both directions
    "per-direction": (["Sigmoid", "Tanh", "Tanh", "HardSigmoid", "Relu", "HardSigmoid"],
                      [0.1, 0.35], [0.52, 0.4]),
    "per-direction-hs-both": (["HardSigmoid", "Tanh", "Tanh", "HardSigmoid", "Tanh", "Tanh"],
                              [0.1, 0.3], [0.4, 0.6]),
}


@needs_ort
@pytest.mark.parametrize("case", list(ACTIVATIONS))
def test_activations_vs_ort(rng, case):
    acts, alpha, beta = ACTIVATIONS[case]
    D = len(acts) // 3
    w = _weights(rng, D, I, H, peephole=True)
    attrs = {"activations": acts}
    if alpha is not None:
        attrs.update(activation_alpha=alpha, activation_beta=beta)
    direction = "bidirectional" if D == 2 else "forward"
    unbounded = any(a.lower() in ("relu", "affine") for a in acts)
    m = _compare(_lstm_model(w, H=H, direction=direction, **attrs), D, rng, scale=unbounded,
                 what=case)
    got = [[a.name for a in trip] for trip in m.config.layers[0].activations]
    names = {"sigmoid": "sigmoid", "tanh": "tanh", "relu": "relu", "hardsigmoid": "hard_sigmoid",
             "affine": "linear"}
    assert got == [[names[a.lower()] for a in acts[3 * d:3 * d + 3]] for d in range(D)]


@needs_onnx
def test_hard_sigmoid_parameters_recorded(rng):
    w = _weights(rng, 2, I, H)
    m = from_onnx(_lstm_model(w, H=H, direction="bidirectional",
                              activations=ACTIVATIONS["per-direction"][0],
                              activation_alpha=[0.1, 0.35], activation_beta=[0.52, 0.4]))
    fwd, rev = m.config.layers[0].activations
    assert [a.name for a in fwd] == ["sigmoid", "tanh", "tanh"]
    assert (rev[0].alpha, rev[0].beta) == pytest.approx((0.1, 0.52))
    assert (rev[2].alpha, rev[2].beta) == pytest.approx((0.35, 0.4))
    m = from_onnx(_lstm_model(w, H=H, direction="bidirectional",
                              activations=["HardSigmoid", "Tanh", "Tanh"] * 2))
    assert all((t[0].alpha, t[0].beta) == pytest.approx((0.2, 0.5))
               for t in m.config.layers[0].activations)


@needs_onnx
def test_float64_model_vs_oracle(rng):
    """onnxruntime's LSTM has no double kernel: float64 models are checked against the
    float64 numpy oracle (DESIGN §3: 1e-12)."""
    w = _weights(rng, 2, I, H, peephole=True, dtype=np.float64)
    model = _lstm_model(w, H=H, direction="bidirectional", elem=TP.DOUBLE, clip=1.2,
                        activations=["Sigmoid", "Tanh", "Tanh", "HardSigmoid", "Tanh", "Relu"])
    m = from_onnx(model)
    assert m.dtype == np.float64
    x, h0, c0, lens = _inputs(rng, 2, np.float64)
    out, (h, c) = m(x, state=(h0, c0), lengths=lens)
    # the oracle takes one activation triple: run it once per direction's triple and keep
    # that direction's half; the clip is the attribute's float32 value
    tol, clip = TOL_OWN["float64"], float(np.float32(1.2))
    for d, acts in ((0, ("sigmoid", "tanh", "tanh")), (1, ("hard_sigmoid", "tanh", "relu"))):
        ref, rh, rc = lstm_reference(_canonical(w), x, state=([h0], [c0]), lengths=lens,
                                     clip=clip, activations=acts)
        assert_close(out[..., d * H:(d + 1) * H], ref[..., d * H:(d + 1) * H], tol, f"out[{d}]",
                     scale_with_magnitude=True)
        assert_close(h[d], rh[0][d], tol, f"h_n[{d}]", scale_with_magnitude=True)
        assert_close(c[d], rc[0][d], tol, f"c_n[{d}]", scale_with_magnitude=True)
    assert from_onnx(model, dtype="float32").dtype == np.float32


@needs_ort
def test_zero_length_sequence_keeps_initial_state(rng):
    """Documented difference: onnxruntime returns Y_h = Y_c = 0 for a length-0 sequence,
    we return its initial state (DESIGN §1); Y is 0 for both."""
    w = _weights(rng, 2, I, H)
    model = _lstm_model(w, H=H, direction="bidirectional")
    x, h0, c0, lens = _inputs(rng, 2)
    lens[1] = 0
    Y, Yh, Yc = _ort(model, {"X": x, "sl": lens, "h0": h0, "c0": c0})
    out, (h, c) = from_onnx(model)(x, state=(h0, c0), lengths=lens)
    assert_close(out, _y_to_out(Y), TOL, "out")
    assert not out[:, 1].any()
    keep = np.arange(B) != 1
    assert_close(h[:, keep], Yh[:, keep], TOL, "h_n")
    np.testing.assert_array_equal(h[:, 1], h0[:, 1])
    np.testing.assert_array_equal(c[:, 1], c0[:, 1])
    assert not Yh[:, 1].any()


# ----------------------------------------------------------------------------- layout = 1
@needs_ort
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_layout1_is_batch_first(rng, direction):
    """onnxruntime cannot run layout=1: compare with the same weights at layout 0 and
    transposed inputs/outputs, and with the numpy oracle."""
    D = 2 if direction == "bidirectional" else 1
    w = _weights(rng, D, I, H, peephole=True)
    m1 = from_onnx(_lstm_model(w, H=H, direction=direction, layout=1, clip=1.5))
    assert m1.config.batch_first
    x, h0, c0, lens = _inputs(rng, D)
    xb = np.ascontiguousarray(x.transpose(1, 0, 2))  # (B, T, I), ONNX layout 1
    out, (h, c) = m1(xb, state=(h0, c0), lengths=lens)
    assert out.shape == (B, T, D * H) and h.shape == (D, B, H)
    Y, Yh, Yc = _ort(_lstm_model(w, H=H, direction=direction, clip=1.5),
                     {"X": x, "sl": lens, "h0": h0, "c0": c0})
    # ONNX layout 1: Y (B, T, D, H) = Y0.transpose(2, 0, 1, 3), Y_h (B, D, H)
    Y1, Yh1 = Y.transpose(2, 0, 1, 3), Yh.transpose(1, 0, 2)
    assert_close(out, Y1.reshape(B, T, D * H), TOL, "out")
    assert_close(h, Yh1.transpose(1, 0, 2), TOL, "h_n")
    assert_close(c, Yc, TOL, "c_n")
    if direction != "reverse":  # the oracle runs forward, or forward + reverse
        ref, rh, _ = lstm_reference(_canonical(w), x, state=([h0], [c0]), lengths=lens,
                                    clip=1.5)
        assert_close(out, ref.transpose(1, 0, 2), TOL, "out vs oracle")
        assert_close(h, rh[0], TOL, "h_n vs oracle")


# ----------------------------------------------------------------------------- constant subgraphs
@needs_ort
def test_weights_from_constant_subgraphs(rng):
    """W from a Constant node, R from Transpose(initializer), B from Cast(float64),
    P from Reshape(Identity(Constant)), all evaluated with numpy at load."""
    w = _weights(rng, 2, I, H, peephole=True)
    nodes = [
        oh.make_node("Constant", [], ["W"], value=nh.from_array(w["W"], "Wc")),
        oh.make_node("Transpose", ["R_t"], ["R"], perm=[0, 2, 1]),
        oh.make_node("Cast", ["B64"], ["B"], to=TP.FLOAT),
        oh.make_node("Constant", [], ["P_flat"], value=nh.from_array(w["P"].ravel(), "Pc")),
        oh.make_node("Identity", ["P_flat"], ["P_id"]),
        oh.make_node("Reshape", ["P_id", "P_shape"], ["P"]),
        oh.make_node("LSTM", ["X", "W", "R", "B", "sl", "h0", "c0", "P"], ["Y", "Y_h", "Y_c"],
                     hidden_size=H, direction="bidirectional"),
    ]
    inits = [nh.from_array(np.ascontiguousarray(w["R"].transpose(0, 2, 1)), "R_t"),
             nh.from_array(w["B"].astype(np.float64), "B64"),
             nh.from_array(np.array([2, 3 * H], np.int64), "P_shape")]
    gin = [_vi("X", shape=[None, None, I]), _vi("sl", TP.INT32, [None]),
           _vi("h0", shape=[2, None, H]), _vi("c0", shape=[2, None, H])]
    model = _model(nodes, gin, [_vi(n) for n in ("Y", "Y_h", "Y_c")], inits)
    _compare(model, 2, rng)


@needs_ort
def test_initializer_that_is_also_a_graph_input(rng):
    """IR < 4 style: initializers listed as graph inputs too (their values are defaults)."""
    w = _weights(rng, 1, I, H)
    model = _lstm_model(w, H=H)
    model.graph.input.extend([_vi(n, shape=list(a.shape)) for n, a in w.items()])
    _compare(model, 1, rng)


@needs_onnx
def test_constant_initial_state_warns(rng):
    w = _weights(rng, 1, I, H)
    model = _lstm_model(w, H=H, seq=False, states=False)
    model.graph.node[0].input.extend(["", "h0c"])  # initial_h: a constant
    model.graph.initializer.append(nh.from_array(np.ones((1, B, H), np.float32), "h0c"))
    with pytest.warns(UserWarning, match="initial_h .* pass it as state="):
        from_onnx(model)
    model.graph.initializer[-1].CopyFrom(nh.from_array(np.zeros((1, B, H), np.float32), "h0c"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_onnx(model)  # zeros: the default state, nothing to say


@needs_onnx
@pytest.mark.parametrize("elem", ["FLOAT16", "BFLOAT16"], ids=["float16", "bfloat16"])
def test_half_precision_weights_run_in_float32(rng, elem):
    elem = getattr(TP, elem)
    w = _weights(rng, 2, I, H, peephole=True)
    half = _lstm_model(w, H=H, direction="bidirectional")
    for t in half.graph.initializer:
        a = nh.to_array(t)
        t.CopyFrom(oh.make_tensor(t.name, elem, a.shape, a.ravel().tolist()))
    rounded = {t.name: nh.to_array(t).astype(np.float32) for t in half.graph.initializer}
    m = from_onnx(half)
    assert m.dtype == np.float32
    x = rng.uniform(-3, 3, (T, B, I)).astype(np.float32)
    want = from_onnx(_lstm_model(rounded, H=H, direction="bidirectional"))(x)[0]
    np.testing.assert_array_equal(m(x)[0], want)


@needs_onnx
def test_hidden_size_inferred_when_absent(rng):
    w = _weights(rng, 1, I, H)
    model = _lstm_model(w, H=H)
    node = model.graph.node[0]
    keep = [a for a in node.attribute if a.name != "hidden_size"]
    del node.attribute[:]
    node.attribute.extend(keep)
    x = rng.uniform(-3, 3, (T, B, I)).astype(np.float32)
    np.testing.assert_array_equal(from_onnx(model)(x)[0], from_onnx(_lstm_model(w, H=H))(x)[0])


@needs_ort
def test_zero_peepholes_are_dropped(rng):
    w = _weights(rng, 1, I, H, peephole=True)
    w["P"][:] = 0
    m = _compare(_lstm_model(w, H=H), 1, rng)
    assert not m.config.peephole


# ----------------------------------------------------------------------------- chains and node=
def _chain_model(rng, d0, h0_, d1, h1_, link, layout=0, i=I):
    """Two LSTM nodes; `link` builds the nodes from Y0 to X1."""
    D0, D1 = (2 if d == "bidirectional" else 1 for d in (d0, d1))
    w0 = _weights(rng, D0, i, h0_, peephole=True)
    w1 = _weights(rng, D1, D0 * h0_, h1_)
    lay = {"layout": 1} if layout else {}
    nodes = [oh.make_node("LSTM", ["X", "W0", "R0", "B0", "sl", "", "", "P0"],
                          ["Y0", "Y0_h", "Y0_c"], name="first", hidden_size=h0_, direction=d0,
                          **lay)]
    nodes += link(D0, h0_)
    nodes.append(oh.make_node("LSTM", ["X1", "W1", "R1", "B1", "sl"], ["Y1", "Y1_h", "Y1_c"],
                              name="second", hidden_size=h1_, direction=d1, **lay))
    inits = [nh.from_array(a, n + s) for s, ww in (("0", w0), ("1", w1)) for n, a in ww.items()]
    inits.append(nh.from_array(np.array([0, 0, -1], np.int64), "shape_00m1"))
    inits.append(nh.from_array(np.array([1], np.int64), "axis1"))
    gin = [_vi("X", shape=[None, None, i]), _vi("sl", TP.INT32, [None])]
    outs = [_vi(n) for n in ("Y1", "Y0_h", "Y0_c", "Y1_h", "Y1_c")]
    return _model(nodes, gin, outs, inits), (w0, w1)


def _transpose_reshape(D, h):  # torch's export of a bidirectional layer's output
    return [oh.make_node("Transpose", ["Y0"], ["Y0_t"], perm=[0, 2, 1, 3]),
            oh.make_node("Reshape", ["Y0_t", "shape_00m1"], ["X1"])]


def _squeeze(D, h):  # torch's export of a unidirectional layer's output
    return [oh.make_node("Squeeze", ["Y0", "axis1"], ["Y0_s"]),
            oh.make_node("Identity", ["Y0_s"], ["X1"])]


def _dynamic_reshape(D, h):  # shape computed from Shape(Y) at run time, with a Dropout
    return [oh.make_node("Transpose", ["Y0"], ["Y0_t"], perm=[0, 2, 1, 3]),
            oh.make_node("Shape", ["Y0_t"], ["s"], end=2),
            oh.make_node("Constant", [], ["m1"], value_ints=[-1]),
            oh.make_node("Concat", ["s", "m1"], ["s3"], axis=0),
            oh.make_node("Dropout", ["Y0_t"], ["Y0_d"]),
            oh.make_node("Reshape", ["Y0_d", "s3"], ["X1"])]


@pytest.mark.parametrize("d0,h0_,d1,h1_,link", [
    ("bidirectional", 5, "forward", 3, _transpose_reshape),
    ("forward", 5, "reverse", 5, _squeeze),
    ("bidirectional", 4, "bidirectional", 4, _dynamic_reshape),
    ("reverse", 4, "bidirectional", 6, _transpose_reshape),
], ids=["bidir5-fwd3", "fwd-rev-uniform", "bidir-bidir-dynamic", "rev-bidir"])
@needs_ort
def test_two_node_chain_vs_ort(rng, d0, h0_, d1, h1_, link):
    model, _ = _chain_model(rng, d0, h0_, d1, h1_, link)
    x, _, _, lens = _inputs(rng, 1)
    Y1, Y0h, Y0c, Y1h, Y1c = _ort(model, {"X": x, "sl": lens})
    m = from_onnx(model)
    assert m.config.num_layers == 2
    out, (h, c) = m(x, lengths=lens)
    assert_close(out, _y_to_out(Y1), TOL, "out")
    if m.config.uniform:
        assert_close(h, np.concatenate([Y0h, Y1h]), TOL, "h_n")
        assert_close(c, np.concatenate([Y0c, Y1c]), TOL, "c_n")
    else:
        for k, (hk, ck) in enumerate(((Y0h, Y0c), (Y1h, Y1c))):
            assert_close(h[k], hk, TOL, f"h_n[{k}]")
            assert_close(c[k], ck, TOL, f"c_n[{k}]")
    # the same stack, asked for by name; and each node alone
    again = from_onnx(model, node=["first", "second"])
    np.testing.assert_array_equal(again(x, lengths=lens)[0], out)
    alone = from_onnx(model, node="second")
    assert alone.config.num_layers == 1 and alone.config.input_size == m.config.layers[1].input_size


@needs_ort
def test_three_node_chain_uniform(rng):
    """Three bidirectional nodes of one size: a uniform stack, h_n stacked as torch's
    exporter concatenates the nodes' Y_h."""
    nodes, inits, prev = [], [nh.from_array(np.array([0, 0, -1], np.int64), "shape")], "X"
    for k in range(3):
        w = _weights(rng, 2, I if k == 0 else 2 * H, H)
        inits += [nh.from_array(a, f"{n}{k}") for n, a in w.items()]
        nodes.append(oh.make_node("LSTM", [prev, f"W{k}", f"R{k}", f"B{k}", "sl"],
                                  [f"Y{k}", f"Yh{k}"], name=f"l{k}", hidden_size=H,
                                  direction="bidirectional"))
        nodes += [oh.make_node("Transpose", [f"Y{k}"], [f"Yt{k}"], perm=[0, 2, 1, 3]),
                  oh.make_node("Reshape", [f"Yt{k}", "shape"], [f"X{k + 1}"])]
        prev = f"X{k + 1}"
    nodes.append(oh.make_node("Concat", ["Yh0", "Yh1", "Yh2"], ["h_n"], axis=0))
    model = _model(nodes, [_vi("X", shape=[None, None, I]), _vi("sl", TP.INT32, [None])],
                   [_vi("X3"), _vi("h_n")], inits)
    x, _, _, lens = _inputs(rng, 1)
    y, hn = _ort(model, {"X": x, "sl": lens})
    m = from_onnx(model)
    assert m.config.num_layers == 3 and m.config.uniform
    out, (h, _) = m(x, lengths=lens)
    assert_close(out, y, TOL, "out")
    assert_close(h, hn, TOL, "h_n")


@needs_ort
def test_chain_layout1(rng):
    """layout=1 stack: Y (B, T, D, H) -> Reshape (B, T, D*H); compared with the layout-0
    stack of the same weights run by onnxruntime."""
    def reshape(D, h):
        return [oh.make_node("Reshape", ["Y0", "shape_00m1"], ["X1"])]

    seed = int(rng.integers(1 << 30))
    m1, _ = _chain_model(np.random.default_rng(seed), "bidirectional", 5, "forward", 3,
                         reshape, layout=1)
    m0, _ = _chain_model(np.random.default_rng(seed), "bidirectional", 5, "forward", 3,
                         _transpose_reshape)
    x, _, _, lens = _inputs(rng, 1)
    Y1, Y0h, _, Y1h, _ = _ort(m0, {"X": x, "sl": lens})
    m = from_onnx(m1)
    assert m.config.batch_first and m.config.num_layers == 2
    out, (h, _) = m(np.ascontiguousarray(x.transpose(1, 0, 2)), lengths=lens)
    assert_close(out, _y_to_out(Y1).transpose(1, 0, 2), TOL, "out")
    assert_close(h[0], Y0h, TOL, "h_n[0]")
    assert_close(h[1], Y1h, TOL, "h_n[1]")


@needs_onnx
def test_chain_with_wrong_data_movement_is_refused(rng):
    """Reshape of a bidirectional Y (T, D, B, H) straight to (T, B, D*H) scrambles the
    directions and the batch: not a layer input, so not a stack."""
    def bad(D, h):
        return [oh.make_node("Reshape", ["Y0", "shape_00m1"], ["X1"])]

    def bad_shape(D, h):  # reshape constant (T, B, -1) with T, B taken literally
        return [oh.make_node("Transpose", ["Y0"], ["Y0_t"], perm=[0, 2, 1, 3]),
                oh.make_node("Flatten", ["Y0_t"], ["X1f"], axis=3),
                oh.make_node("Reshape", ["X1f", "shape_00m1"], ["X1"])]

    model, _ = _chain_model(rng, "bidirectional", 5, "forward", 3, bad)
    with pytest.raises(ONNXFormatError, match=r"first.*second.*not its \(T, B, D\*H\)"):
        from_onnx(model)
    assert from_onnx(model, node="second").config.num_layers == 1
    model, _ = _chain_model(rng, "bidirectional", 5, "forward", 3, bad_shape)
    with pytest.raises(ONNXFormatError, match="not its"):
        from_onnx(model)


def _two_lstms(rng):
    w1, w2 = _weights(rng, 1, I, H), _weights(rng, 2, I, 3)
    nodes = [oh.make_node("LSTM", ["X", "W1", "R1", "B1"], ["Ya", "Ya_h"], name="enc_a",
                          hidden_size=H),
             oh.make_node("LSTM", ["X", "W2", "R2", "B2"], ["Yb", "Yb_h"], name="enc_b",
                          hidden_size=3, direction="bidirectional"),
             oh.make_node("Transpose", ["Ya"], ["Ya_t"], name="tr")]
    inits = [nh.from_array(a, n + s) for s, ww in (("1", w1), ("2", w2)) for n, a in ww.items()]
    return _model(nodes, [_vi("X", shape=[None, None, I])],
                  [_vi(n) for n in ("Ya_t", "Ya_h", "Yb", "Yb_h")], inits)


@needs_ort
def test_node_selected_by_name_vs_ort(rng):
    model = _two_lstms(rng)
    x = rng.uniform(-3, 3, (T, B, I)).astype(np.float32)
    _, _, Yb, Ybh = _ort(model, {"X": x})
    out, (h, _) = from_onnx(model, node="enc_b")(x)
    assert_close(out, _y_to_out(Yb), TOL, "out")
    assert_close(h, Ybh, TOL, "h_n")


@needs_onnx
def test_two_independent_lstms_need_node(rng):
    model = _two_lstms(rng)
    with pytest.raises(ONNXFormatError, match=r"2 LSTM nodes \['enc_a', 'enc_b'\].*node="):
        from_onnx(model)
    with pytest.raises(ONNXFormatError, match=r"no LSTM node is named 'nope'.*enc_a"):
        from_onnx(model, node="nope")
    with pytest.raises(ONNXFormatError, match="it is a Transpose node"):
        from_onnx(model, node="tr")
    with pytest.raises(ONNXFormatError, match="not computed from the Y of 'enc_a'"):
        from_onnx(model, node=["enc_a", "enc_b"])
    with pytest.raises(TypeError, match="node must be"):
        from_onnx(model, node=3)


@needs_onnx
def test_residual_connection_is_not_a_chain(rng):
    def residual(D, h):
        return [oh.make_node("Squeeze", ["Y0", "axis1"], ["Y0_s"]),
                oh.make_node("Add", ["Y0_s", "X"], ["X1"])]

    model, _ = _chain_model(rng, "forward", I, "forward", 3, residual)
    with pytest.raises(ONNXFormatError, match="from the model input 'X' .*residual"):
        from_onnx(model)


@needs_onnx
def test_unnamed_node_selected_by_output_name(rng):
    w = _weights(rng, 1, I, H)
    model = _lstm_model(w, H=H, name="")
    assert from_onnx(model, node="Y").config.hidden_size == H


@needs_onnx
def test_encoder_decoder_is_ambiguous(rng):
    """The decoder's initial_h is the encoder's Y_h: two LSTMs that are not a stack."""
    w1, w2 = _weights(rng, 1, I, H), _weights(rng, 1, I, H)
    nodes = [oh.make_node("LSTM", ["X", "W1", "R1"], ["", "e_h", "e_c"], name="encoder",
                          hidden_size=H),
             oh.make_node("LSTM", ["Xd", "W2", "R2", "", "", "e_h", "e_c"], ["Yd"],
                          name="decoder", hidden_size=H)]
    inits = [nh.from_array(a, n + s) for s, ww in (("1", w1), ("2", w2)) for n, a in ww.items()]
    model = _model(nodes, [_vi("X"), _vi("Xd")], [_vi("Yd")], inits)
    with pytest.raises(ONNXFormatError, match="do not form one chain"):
        from_onnx(model)
    assert from_onnx(model, node="decoder").config.hidden_size == H


# ----------------------------------------------------------------------------- real exports
def _export(name):
    path = os.path.join(DATA, name + ".onnx")
    with np.load(os.path.join(DATA, name + ".npz")) as z:
        return path, dict(z)


@needs_onnx
@pytest.mark.parametrize("name", TORCH_EXPORTS)
def test_torch_exported_stack(name):
    """Committed exports of nn.LSTM stacks (scripts/make_onnx_fixtures.py): the torch
    exporter's own graph, compared with the outputs torch computed."""
    path, ref = _export(name)
    m = li.load(path)
    assert m.config.num_layers == 2
    out, (h, c) = m(ref["x"])
    assert_close(out, ref["y"], TOL, "out vs torch")
    assert_close(h, ref["h_n"], TOL, "h_n vs torch")
    assert_close(c, ref["c_n"], TOL, "c_n vs torch")
    m2 = pickle.loads(pickle.dumps(m))
    np.testing.assert_array_equal(m2(ref["x"])[0], out)


@needs_ort
@pytest.mark.parametrize("name", TORCH_EXPORTS)
def test_torch_exported_stack_vs_ort(name):
    path, ref = _export(name)
    y, hn, cn = _ort(onnx.load(path), {"x": ref["x"]})
    out, (h, c) = li.load(path)(ref["x"])
    assert_close(out, y, TOL, "out vs onnxruntime")
    assert_close(h, hn, TOL, "h_n vs onnxruntime")
    assert_close(c, cn, TOL, "c_n vs onnxruntime")


# ----------------------------------------------------------------------------- ONNX's node tests
def _node_test_dirs():
    dirs = {os.path.basename(d): d for d in glob.glob(os.path.join(DATA, "node", "test_lstm_*"))}
    installed = (os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "node")
                 if onnx is not None else None)
    for d in glob.glob(os.path.join(installed, "test_lstm_*")) if installed else ():
        dirs[os.path.basename(d)] = d  # the installed package's copy wins
    return sorted(dirs.items())


def _read_pb(path):
    t = TP()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return nh.to_array(t)


NODE_TESTS = _node_test_dirs()


def test_node_tests_found():  # the committed copies: no package needed
    assert len(NODE_TESTS) >= 6, NODE_TESTS


@needs_onnx
@pytest.mark.parametrize("case", [d for _, d in NODE_TESTS], ids=[n for n, _ in NODE_TESTS])
def test_onnx_node_test(case):
    """ONNX's own test_lstm_* cases (model.onnx + test_data_set_*). Their weights are graph
    inputs; bind W, R, B, P as initializers, pass X / sequence_lens / initial_h /
    initial_c at call time, convert Y / Y_h / Y_c layouts."""
    model = onnx.load(os.path.join(case, "model.onnx"))
    (node,) = model.graph.node
    layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
    for ds in sorted(glob.glob(os.path.join(case, "test_data_set_*"))):
        ins = {model.graph.input[j].name: _read_pb(p) for j, p in
               enumerate(sorted(glob.glob(os.path.join(ds, "input_*.pb"))))}
        outs = {model.graph.output[j].name: _read_pb(p) for j, p in
                enumerate(sorted(glob.glob(os.path.join(ds, "output_*.pb"))))}
        bound = onnx.ModelProto()
        bound.CopyFrom(model)
        slots = list(node.input) + [""] * 8
        for k in (1, 2, 3, 7):
            if slots[k]:
                bound.graph.initializer.append(nh.from_array(ins[slots[k]], slots[k]))
        m = from_onnx(bound)
        assert m.config.batch_first == bool(layout)
        x = ins[slots[0]]
        to_ours = (lambda s: s.transpose(1, 0, 2)) if layout else (lambda s: s)
        state = None
        if slots[5] or slots[6]:
            D = m.config.num_directions
            bt = x.shape[0] if layout else x.shape[1]
            zero = np.zeros((D, bt, m.config.hidden_size), np.float32)
            state = (to_ours(ins[slots[5]]) if slots[5] else zero,
                     to_ours(ins[slots[6]]) if slots[6] else zero)
        lens = ins[slots[4]] if slots[4] else None
        out, (h, c) = m(x, state=state, lengths=lens)
        names = list(node.output) + [""] * 3
        checked = 0
        if names[0] in outs:
            Y = outs[names[0]]
            want = Y.reshape(Y.shape[0], Y.shape[1], -1) if layout else _y_to_out(Y)
            assert_close(out, want, TOL, f"{os.path.basename(case)} Y")
            checked += 1
        for ours, n in ((h, names[1]), (c, names[2])):
            if n in outs:
                assert_close(ours, to_ours(outs[n]), TOL, f"{os.path.basename(case)} {n}")
                checked += 1
        assert checked == len(outs)


# ----------------------------------------------------------------------------- bad files
@pytest.fixture
def good_model(need_onnx, rng):
    return _lstm_model(_weights(rng, 2, I, H, bias=True, peephole=True), H=H,
                       direction="bidirectional")


@needs_onnx
def test_truncated_file(tmp_path, good_model):
    data = good_model.SerializeToString()
    for cut in (len(data) // 2, len(data) - 7, 40):
        p = tmp_path / f"cut{cut}.onnx"
        p.write_bytes(data[:cut])
        assert not is_onnx_file(p)
        with pytest.raises(ONNXFormatError, match="truncated or corrupted|missing"):
            from_onnx(p)


@needs_onnx
def test_corrupted_and_foreign_files(tmp_path, good_model):
    data = bytearray(good_model.SerializeToString())
    data[3] ^= 0xFF
    data[len(data) // 3] = 0xFF
    p = tmp_path / "bad.onnx"
    p.write_bytes(bytes(data))
    with pytest.raises(ONNXFormatError):
        from_onnx(p)
    for blob in (b"\x00" * 64, b"hello, this is text\n", np.arange(99, dtype=np.float32).tobytes()):
        p.write_bytes(blob)
        assert not is_onnx_file(p)
        with pytest.raises(ONNXFormatError, match="ONNX"):
            from_onnx(p)
    with pytest.raises(FileNotFoundError):
        from_onnx(tmp_path / "nope.onnx")
    with pytest.raises(ONNXFormatError, match="directory"):
        from_onnx(tmp_path)
    with pytest.raises(TypeError, match="ModelProto or a path"):
        from_onnx(42)


@needs_onnx
def test_missing_initializer(good_model):
    del good_model.graph.initializer[1]  # R
    with pytest.raises(ONNXFormatError, match=r"R \('R'\) is missing.*missing initializer"):
        from_onnx(good_model)


@needs_onnx
def test_weights_that_are_graph_inputs(good_model):
    """Weights fed at run time (like ONNX's node tests) are not in the file."""
    good_model.graph.input.append(_vi("Wx", shape=None))
    good_model.graph.node[0].input[1] = "Wx"
    with pytest.raises(ONNXFormatError, match="W .* not constant.*graph input 'Wx'"):
        from_onnx(good_model)


def _replace_init(model, name, arr):
    for t in model.graph.initializer:
        if t.name == name:
            t.CopyFrom(nh.from_array(arr, name))


@pytest.mark.parametrize("name,shape,msg", [
    ("W", (2, 4 * H, I + 1), r"R must have shape \(2, 20, 5\)|W must"),
    ("W", (1, 4 * H, I), r"W \(num_directions.*must have shape \(2, 20, 4\).*got \(1, 20, 4\)"),
    ("W", (2, 4 * H + 1, I), r"W must have shape \(num_directions, 4\*hidden_size"),
    ("R", (2, 4 * H, H + 1), r"R \(num_directions, 4\*hidden_size, hidden_size\) must have "
                             r"shape \(2, 20, 5\).*got \(2, 20, 6\)"),
    ("B", (2, 4 * H), r"B \(num_directions, 8\*hidden_size\) must have shape \(2, 40\)"),
    ("P", (2, 4 * H), r"P \(num_directions, 3\*hidden_size\) must have shape \(2, 15\)"),
    ("P", (2, 3, H), r"P .* must have shape \(2, 15\) .*got \(2, 3, 5\)"),
])
@needs_onnx
def test_wrong_shapes(rng, good_model, name, shape, msg):
    _replace_init(good_model, name, rng.uniform(-1, 1, shape).astype(np.float32))
    if name == "W" and shape[2] == I + 1:
        msg = r"X has input_size 4 .* W has input_size 5"
    with pytest.raises(ONNXFormatError, match=msg):
        from_onnx(good_model)


@needs_onnx
@pytest.mark.parametrize("layout", [0, 1])
def test_declared_state_shape_checked(rng, layout):
    w = _weights(rng, 2, I, H)
    model = _lstm_model(w, H=H, direction="bidirectional", layout=layout)
    from_onnx(model)  # (2, None, 5) or (None, 2, 5): fine
    shape = [1, None, H] if layout == 0 else [None, 1, H]
    model.graph.input[2].CopyFrom(_vi("h0", shape=shape))
    want = r"\(2, 'B', 5\)" if layout == 0 else r"\('B', 2, 5\)"
    with pytest.raises(ONNXFormatError, match=f"initial_h \\('h0'\\) must have shape .* = {want}"):
        from_onnx(model)


@needs_onnx
def test_hidden_size_attribute_disagrees(good_model):
    attr = next(a for a in good_model.graph.node[0].attribute if a.name == "hidden_size")
    attr.i = H + 1
    with pytest.raises(ONNXFormatError, match=r"must have shape \(2, 24, 4\) \(.*hidden_size=6"):
        from_onnx(good_model)


@pytest.mark.parametrize("acts,alpha,beta,msg", [
    (["Elu", "Tanh", "Tanh"], None, None, "activation 'Elu' is not supported"),
    (["Sigmoid", "LeakyRelu", "Tanh"], [0.1], None, "'LeakyRelu' is not supported"),
    (["Sigmoid", "Tanh", "Softsign"], None, None, "'Softsign' is not supported"),
    (["Sigmoid", "Tanh", "Swish"], None, None, "'Swish' \\(not an ONNX LSTM activation\\)"),
    (["Affine", "Tanh", "Tanh"], None, None, "Affine' with alpha=None.*explicit alpha=1"),
    (["Affine", "Tanh", "Tanh"], [0.5], [0.1], "alpha=0.5, beta=0.1"),
    (["Sigmoid", "Tanh"], None, None, "3 functions per direction"),
])
@needs_onnx
def test_unsupported_activations(rng, acts, alpha, beta, msg):
    attrs = {"activations": acts}
    if alpha:
        attrs["activation_alpha"] = alpha
    if beta:
        attrs["activation_beta"] = beta
    with pytest.raises(ONNXFormatError, match=msg):
        from_onnx(_lstm_model(_weights(rng, 1, I, H), H=H, **attrs))


@needs_onnx
def test_bad_attributes(rng):
    w = _weights(rng, 1, I, H)
    for attrs, msg in (({"direction": "sideways"}, "direction must be one of"),
                       ({"layout": 2}, "layout must be 0 or 1"),
                       ({"input_forget": 3}, "input_forget must be 0 or 1"),
                       ({"clip": -1.0}, "clip must be a positive"),
                       ({"frobnicate": 1}, r"unknown attribute\(s\) \['frobnicate'\]")):
        model = _lstm_model(w, H=H)
        model.graph.node[0].attribute.extend([oh.make_attribute(*kv) for kv in attrs.items()])
        if "direction" in attrs or "layout" in attrs:  # replace, not add
            node = model.graph.node[0]
            keep = [a for a in node.attribute if a.name not in attrs]
            keep += [oh.make_attribute(*kv) for kv in attrs.items()]
            del node.attribute[:]
            node.attribute.extend(keep)
        with pytest.raises(ONNXFormatError, match=msg):
            from_onnx(model)


@needs_onnx
def test_unsupported_op_in_constant_subgraph(rng):
    w = _weights(rng, 1, I, H)
    model = _lstm_model(w, H=H)
    model.graph.node.insert(0, oh.make_node("Sin", ["W_raw"], ["W"], name="weird"))
    for t in model.graph.initializer:
        if t.name == "W":
            t.name = "W_raw"
    with pytest.raises(ONNXFormatError, match=r"W \('W'\) is computed by a Sin node \('weird'\)"):
        from_onnx(model)


@needs_onnx
def test_integer_weights_refused(rng):
    w = _weights(rng, 1, I, H)
    model = _lstm_model(w, H=H)
    _replace_init(model, "W", np.ones((1, 4 * H, I), np.int32))
    with pytest.raises(ONNXFormatError, match="W must be a floating-point tensor; got int32"):
        from_onnx(model)


@needs_onnx
def test_no_lstm_node():
    node = oh.make_node("GRU", ["X", "W", "R"], ["Y"], hidden_size=3)
    model = _model([node], [_vi("X"), _vi("W"), _vi("R")], [_vi("Y")])
    with pytest.raises(ONNXFormatError, match=r"no LSTM node.*\['GRU'\]"):
        from_onnx(model)


@needs_onnx
def test_external_data(tmp_path, rng):
    w = _weights(rng, 2, I, H, peephole=True)
    model = _lstm_model(w, H=H, direction="bidirectional")
    p = tmp_path / "ext.onnx"
    onnx.save_model(onnx.ModelProto.FromString(model.SerializeToString()), str(p),
                    save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.data", size_threshold=0)
    assert is_onnx_file(p)
    x = rng.uniform(-3, 3, (T, B, I)).astype(np.float32)
    np.testing.assert_array_equal(from_onnx(p)(x)[0], from_onnx(model)(x)[0])
    os.remove(tmp_path / "ext.data")
    with pytest.raises(ONNXFormatError, match="cannot be read.*external data"):
        from_onnx(p)


@needs_onnx
def test_bytes_and_graph_inputs(rng):
    w = _weights(rng, 1, I, H)
    model = _lstm_model(w, H=H)
    x = rng.uniform(-3, 3, (T, B, I)).astype(np.float32)
    want = from_onnx(model)(x)[0]
    np.testing.assert_array_equal(from_onnx(model.SerializeToString())(x)[0], want)
    np.testing.assert_array_equal(from_onnx(model.graph)(x)[0], want)


@pytest.mark.parametrize("name", TORCH_EXPORTS)
def test_missing_onnx_package(monkeypatch, name):
    """Without onnx a file is still recognised, and loading it says what to install."""
    monkeypatch.setitem(sys.modules, "onnx", None)
    path, _ = _export(name)
    assert is_onnx_file(path) and li.detect_format(path) == "onnx"
    with pytest.raises(ImportError, match="pip install onnx"):
        from_onnx(path)
    with pytest.raises(ImportError, match="pip install onnx"):
        li.load(path)


# ----------------------------------------------------------------------------- sniffing
def test_is_onnx_file(tmp_path):
    """Sniffing walks the protobuf fields itself: no onnx package needed."""
    path, _ = _export(TORCH_EXPORTS[0])
    data = open(path, "rb").read()
    p = tmp_path / "m.bin"
    p.write_bytes(data)
    assert is_onnx_file(p) and is_onnx_file(str(p))
    assert li.detect_format(p) == "onnx"
    for blob in (b"", b"PK\x03\x04" + b"\x00" * 40, b"\x89HDF\r\n\x1a\n" + b"\x00" * 40,
                 b"\x08\x07", b"\x08\x07\x3a\x02\x00\x00"[:-1], data[:len(data) // 2],
                 b"\x00" * 64, b"hello, this is text\n", np.arange(99, dtype=np.float32).tobytes()):
        p.write_bytes(blob)
        assert not is_onnx_file(p), blob[:40]
    p.write_bytes(b"\x08\x07\x3a\x00")  # ir_version 7 + an empty graph: an (empty) ModelProto
    assert is_onnx_file(p)
    assert not is_onnx_file(tmp_path / "missing.onnx")
    assert not is_onnx_file(tmp_path)
    li.LSTM.random(I, H).save(tmp_path / "native.safetensors")
    assert not is_onnx_file(tmp_path / "native.safetensors")


@needs_onnx
def test_load_sniffs_any_file_name(tmp_path, good_model):
    p = tmp_path / "m.bin"
    p.write_bytes(good_model.SerializeToString())
    assert is_onnx_file(p) and li.detect_format(p) == "onnx"
    out = li.load(p)(np.zeros((2, 1, I), np.float32))[0]
    assert out.shape == (2, 1, 2 * H)
