"""TFLite LSTM files (lstm_infer.formats.tflite) against TensorFlow's own interpreter.

Two kinds of files:

- built here with TFLite's schema (the generated ``schema_py_generated`` classes that ship
  inside the tensorflow package, loaded from their file without importing TensorFlow;
  ``flatbuffers`` writes them): one UNIDIRECTIONAL_SEQUENCE_LSTM or
  BIDIRECTIONAL_SEQUENCE_LSTM op with every variant the converter never emits --
  peephole, CIFG, projection + proj_clip, cell_clip, layer norm, hybrid int8 weights --
  and run by ``tf.lite.Interpreter``;
- made by TensorFlow's converter (slow tests): its Keras-LSTM fusion
  (``ConvertKerasLSTMLayer``) fires on a tf.function carrying the attributes Keras 2's
  LSTM put on its ``standard_lstm`` (``api_implements="lstm_<id>"``, ``time_major``,
  ``go_backwards``), saved as a SavedModel with a static batch. Keras 3's TF backend is
  not fused (it becomes a WHILE loop), so that is how real tf.keras 2 files are made
  today without Keras 2: the same ops, cell_clip = 10 in every op, and a Bidirectional
  as REVERSE_V2 -> LSTM -> REVERSE_V2 + a forward op + CONCATENATION.

float32 files must agree with the interpreter within 1e-5 (DESIGN §3); hybrid int8 files
within the interpreter's own int8 error: |ours - tflite| <= 2 |tflite - float| + 1e-4,
where float is the oracle on the dequantized weights (what both quantize).
"""
from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import pytest

import lstm_infer as li
from lstm_infer.formats.tflite import TFLiteFormatError, from_tflite, sniff
from reference import lstm_reference

TOL = 1e-5
INT8_BOUND = 0.05
B, T, I = 2, 9, 5
I_BIG = 40  # the hybrid converter files' input size


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def schema():
    """TFLite's generated schema classes, loaded from the tensorflow package's file
    without importing tensorflow (fast); needs the flatbuffers package."""
    pytest.importorskip("flatbuffers")
    spec = importlib.util.find_spec("tensorflow")
    if spec is None or spec.origin is None:
        pytest.skip("needs the tensorflow package (its TFLite schema)")
    path = os.path.join(os.path.dirname(spec.origin), "lite", "python",
                        "schema_py_generated.py")
    s = importlib.util.spec_from_file_location("_tflite_schema", path)
    mod = importlib.util.module_from_spec(s)
    s.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return pytest.importorskip("tensorflow")


def run_tflite(tf, data, x):
    it = tf.lite.Interpreter(model_content=bytes(data))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return [it.get_tensor(o["index"]) for o in it.get_output_details()]


# ----------------------------------------------------------------------------- file builder
class Builder:
    """A one-subgraph TFLite model written with the schema's object API."""

    def __init__(self, s):
        self.s = s
        self.tensors, self.buffers, self.ops, self.codes = [], [s.BufferT()], [], []

    def tensor(self, shape, dtype=np.float32, data=None, name="", variable=False,
               scale=None):
        s = self.s
        t = s.TensorT()
        t.shape = list(shape)
        t.type = {np.dtype(np.float32): 0, np.dtype(np.float16): 1, np.dtype(np.int32): 2,
                  np.dtype(np.int8): 9}[np.dtype(dtype)]
        t.name = name
        t.isVariable = variable
        t.buffer = 0
        if data is not None:
            b = s.BufferT()
            b.data = np.ascontiguousarray(data, dtype=dtype).view(np.uint8).ravel().tolist()
            self.buffers.append(b)
            t.buffer = len(self.buffers) - 1
        if scale is not None:
            q = s.QuantizationParametersT()
            q.scale, q.zeroPoint = [float(scale)], [0]
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def const(self, a, scale=None):
        a = np.asarray(a)
        return self.tensor(a.shape, a.dtype, a, name=f"c{len(self.tensors)}", scale=scale)

    def op(self, code, inputs, outputs, opt_type=0, opt=None):
        s = self.s
        if code not in self.codes:
            self.codes.append(code)
        o = s.OperatorT()
        o.opcodeIndex = self.codes.index(code)
        o.inputs, o.outputs = list(inputs), list(outputs)
        o.builtinOptionsType, o.builtinOptions = opt_type, opt
        self.ops.append(o)

    def finish(self, inputs, outputs) -> bytes:
        import flatbuffers
        s = self.s
        m = s.ModelT()
        m.version = 3
        m.operatorCodes = []
        for c in self.codes:
            oc = s.OperatorCodeT()
            oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = c, min(c, 127), 1
            m.operatorCodes.append(oc)
        sg = s.SubGraphT()
        sg.tensors, sg.inputs, sg.outputs, sg.operators = self.tensors, inputs, outputs, self.ops
        m.subgraphs, m.buffers = [sg], self.buffers
        b = flatbuffers.Builder(1024)
        b.Finish(m.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def _quant(w):
    s = float(np.abs(w).max()) / 127.0
    return np.clip(np.rint(w / s), -127, 127).astype(np.int8), np.float32(s)


def make_direction(rng, H, I_, P=0, peephole=False, cifg=False, layer_norm=False,
                   proj_bias=False):
    """TFLite-layout weights of one direction (per gate i, f, c, o)."""
    k = 1 / np.sqrt(H)
    Hout = P or H
    d = {"W": [rng.uniform(-k, k, (H, I_)) for _ in range(4)],
         "R": [rng.uniform(-k, k, (H, Hout)) for _ in range(4)],
         "b": [rng.uniform(-k, k, H) for _ in range(4)]}
    if peephole:
        d["p"] = [rng.uniform(-k, k, H) for _ in range(3)]
    if P:
        d["proj"] = rng.uniform(-k, k, (P, H))
        if proj_bias:
            d["proj_b"] = rng.uniform(-k, k, P)
    if layer_norm:
        d["ln"] = [rng.uniform(0.5, 1.5, H) for _ in range(4)]
    if cifg:
        for key, g in (("W", 0), ("R", 0), ("b", 0), ("p", 0), ("ln", 0)):
            if key in d:
                d[key][g] = None
    return {k2: ([None if a is None else np.asarray(a, np.float32) for a in v]
                 if isinstance(v, list) else np.asarray(v, np.float32)) for k2, v in d.items()}


def _direction_inputs(bld, d, hybrid, B_, with_ln):
    """The op's input slots for one direction: 17 (+ states and ln added by the caller)."""
    def mat(a):
        if a is None:
            return -1
        if hybrid:
            q, s = _quant(a)
            return bld.const(q, scale=s)
        return bld.const(a)

    def vec(a):
        return -1 if a is None else bld.const(a)

    ins = [mat(a) for a in d["W"]] + [mat(a) for a in d["R"]]
    ins += [mat(a) if hybrid else vec(a) for a in d.get("p", [None] * 3)]
    ins += [vec(a) for a in d["b"]]
    ins += [mat(d["proj"]) if "proj" in d else -1, vec(d.get("proj_b"))]
    return ins


def uni_file(schema, d, *, time_major=False, cell_clip=0.0, proj_clip=0.0, act=4,
             hybrid=False, Bn=B, Tn=T):
    bld = Builder(schema)
    H, I_ = d["W"][1].shape
    P = d["proj"].shape[0] if "proj" in d else H
    xshape = (Tn, Bn, I_) if time_major else (Bn, Tn, I_)
    x = bld.tensor(xshape, name="x")
    ins = [x] + _direction_inputs(bld, d, hybrid, Bn, "ln" in d)
    ins += [bld.tensor((Bn, P), variable=True, name="h"),
            bld.tensor((Bn, H), variable=True, name="c")]
    ins += [vec_or_none(bld, a) for a in d.get("ln", [None] * 4)]
    y = bld.tensor((Tn, Bn, P) if time_major else (Bn, Tn, P), name="y")
    o = schema.UnidirectionalSequenceLSTMOptionsT()
    o.fusedActivationFunction, o.cellClip, o.projClip, o.timeMajor = act, cell_clip, \
        proj_clip, time_major
    bld.op(44, ins, [y], 71, o)
    return bld.finish([x], [y])


def vec_or_none(bld, a):
    return -1 if a is None else bld.const(a)


def bidi_file(schema, fw, bw, *, merge=True, time_major=True, cell_clip=0.0, hybrid=False):
    bld = Builder(schema)
    H, I_ = fw["W"][1].shape
    P = fw["proj"].shape[0] if "proj" in fw else H
    x = bld.tensor((T, B, I_) if time_major else (B, T, I_), name="x")
    ins = [x] + _direction_inputs(bld, fw, hybrid, B, False) + \
        _direction_inputs(bld, bw, hybrid, B, False)
    for n in (P, H, P, H):
        ins.append(bld.tensor((B, n), variable=True))
    ins += [-1] * 9
    shape = (lambda f: (T, B, f) if time_major else (B, T, f))
    outs = [bld.tensor(shape(2 * P if merge else P))]
    if not merge:
        outs.append(bld.tensor(shape(P)))
    o = schema.BidirectionalSequenceLSTMOptionsT()
    o.fusedActivationFunction, o.cellClip, o.mergeOutputs, o.timeMajor = 4, cell_clip, \
        merge, time_major
    bld.op(52, ins, outs, 69, o)
    return bld.finish([x], outs)


def _x(shape, seed=1):
    return np.random.default_rng(seed).uniform(-3, 3, shape).astype(np.float32)


def _canonical(d):
    """The oracle's weights for a non-CIFG direction (TFLite gate order is i, f, c, o)."""
    w = {"w_ih": np.concatenate(d["W"]).astype(np.float64),
         "w_hh": np.concatenate(d["R"]).astype(np.float64),
         "b": np.concatenate(d["b"]).astype(np.float64)}
    if "p" in d:
        w["p_i"], w["p_f"], w["p_o"] = d["p"]
    if "proj" in d:
        w["w_hr"] = d["proj"]
    if "ln" in d:
        w["ln_i"], w["ln_f"], w["ln_g"], w["ln_o"] = d["ln"]
    return w


# ----------------------------------------------------------------------------- float, one op
UNI_CASES = {
    "plain": dict(),
    "peephole": dict(peephole=True),
    "cifg": dict(cifg=True),
    "projection": dict(P=3),
    "cifg_peephole_projection": dict(cifg=True, peephole=True, P=4),
    "layer_norm": dict(layer_norm=True),
    "layer_norm_peephole": dict(layer_norm=True, peephole=True),
    "layer_norm_cifg_peephole_projection": dict(layer_norm=True, cifg=True, peephole=True,
                                                P=4),
}


@pytest.mark.parametrize("case", list(UNI_CASES), ids=list(UNI_CASES))
def test_unidirectional_matches_interpreter(schema, tf, case):
    rng = np.random.default_rng(abs(hash(case)) % 1000)
    d = make_direction(rng, 6, I, **UNI_CASES[case])
    data = uni_file(schema, d, cell_clip=0.7, proj_clip=0.2 if "proj" in d else 0.0)
    m = from_tflite(data)
    x = _x((B, T, I))
    (want,) = run_tflite(tf, data, x)
    out, (h, c) = m(x)
    assert m.config.batch_first and m.config.layers[0].cell_clip == pytest.approx(0.7)
    assert m.config.layers[0].layer_norm == ("ln" in d)
    assert m.config.layers[0].input_forget == UNI_CASES[case].get("cifg", False)
    np.testing.assert_allclose(out, want, atol=TOL, rtol=0)
    np.testing.assert_allclose(h[0], want[:, -1], atol=TOL, rtol=0)


@pytest.mark.parametrize("case", [c for c in UNI_CASES if "cifg" not in c])
def test_unidirectional_matches_the_oracle(schema, case):
    """Without the interpreter: the slots map to the canonical weights as documented."""
    rng = np.random.default_rng(7)
    d = make_direction(rng, 5, I, **UNI_CASES[case])
    m = from_tflite(uni_file(schema, d, time_major=True, cell_clip=1.5))
    x = _x((T, B, I), 3)
    ref, _, _ = lstm_reference([[_canonical(d)]], x, cell_clip=1.5)
    np.testing.assert_allclose(m(x)[0], ref, atol=TOL, rtol=0)
    assert not m.config.batch_first


def test_relu_cell_activation(schema, tf):
    d = make_direction(np.random.default_rng(8), 4, I)
    data = uni_file(schema, d, act=1, cell_clip=3.0)
    x = _x((B, T, I), 4) / 3
    (want,) = run_tflite(tf, data, x)
    np.testing.assert_allclose(from_tflite(data)(x)[0], want, atol=TOL, rtol=0)


@pytest.mark.parametrize("merge", [True, False], ids=["merged", "two_outputs"])
@pytest.mark.parametrize("variant", ["plain", "peephole_projection", "cifg"])
def test_bidirectional_op_matches_interpreter(schema, tf, merge, variant):
    rng = np.random.default_rng(11)
    kw = {"plain": {}, "peephole_projection": dict(peephole=True, P=3),
          "cifg": dict(cifg=True)}[variant]
    fw, bw = make_direction(rng, 5, I, **kw), make_direction(rng, 5, I, **kw)
    data = bidi_file(schema, fw, bw, merge=merge, cell_clip=0.9)
    m = from_tflite(data)
    assert m.config.bidirectional and not m.config.batch_first
    x = _x((T, B, I), 5)
    want = run_tflite(tf, data, x)
    want = want[0] if merge else np.concatenate(want, axis=-1)
    np.testing.assert_allclose(m(x)[0], want, atol=TOL, rtol=0)


# ----------------------------------------------------------------------------- hybrid int8
@pytest.mark.parametrize("kw", [dict(), dict(peephole=True, P=4), dict(cifg=True),
                                dict(layer_norm=True)],
                         ids=["plain", "peephole_projection", "cifg", "layer_norm"])
def test_hybrid_int8_within_the_interpreters_int8_error(schema, tf, kw):
    rng = np.random.default_rng(13)
    d = make_direction(rng, 24, I, **kw)
    data = uni_file(schema, d, hybrid=True, cell_clip=10.0)
    m = from_tflite(data)
    assert m.config.quantization == "int8"
    # the float model both quantize: the dequantized weights, in float32
    deq = {k: ([None if a is None else _deq(a) for a in v] if isinstance(v, list) and
               k in ("W", "R", "p") else (v if k != "proj" else _deq(v)))
           for k, v in d.items()}
    float_file = uni_file(schema, deq, cell_clip=10.0)
    x = _x((B, T, I), 6)
    (tfl,) = run_tflite(tf, data, x)
    (ref,) = run_tflite(tf, float_file, x)
    ours = m(x)[0]
    err_tfl = float(np.abs(tfl - ref).max())
    err_ours = float(np.abs(ours - ref).max())
    assert err_ours <= INT8_BOUND
    assert float(np.abs(ours - tfl).max()) <= 2 * err_tfl + 1e-4, (err_ours, err_tfl)
    # the file's int8 weights and scales, exactly
    w = m.weights[0][0]
    q_f, s_f = _quant(d["W"][1])
    H = 24
    np.testing.assert_array_equal(w["w_ih"][H:2 * H], q_f)
    assert np.all(w["w_ih_scale"][H:2 * H] == s_f)


def _deq(a):
    q, s = _quant(a)
    return q.astype(np.float32) * s


# ----------------------------------------------------------------------------- refusals
def test_projection_bias(schema, tf):
    rng = np.random.default_rng(17)
    d = make_direction(rng, 5, I, P=3, proj_bias=True)
    with pytest.raises(TFLiteFormatError, match="non-zero projection_bias"):
        from_tflite(uni_file(schema, d))
    d["proj_b"] = np.zeros(3, np.float32)  # a zero bias is the same LSTM
    data = uni_file(schema, d)
    x = _x((B, T, I))
    np.testing.assert_allclose(from_tflite(data)(x)[0], run_tflite(tf, data, x)[0], atol=TOL)


@pytest.mark.parametrize("act, name", [(3, "RELU6"), (2, "RELU_N1_TO_1"), (0, "NONE")])
def test_unsupported_activation_refused(schema, act, name):
    d = make_direction(np.random.default_rng(1), 4, I)
    with pytest.raises(TFLiteFormatError, match=f"{name} is not supported"):
        from_tflite(uni_file(schema, d, act=act))


def test_no_lstm_op(schema):
    bld = Builder(schema)
    x = bld.tensor((B, T, I))
    y = bld.tensor((B, T, I))
    bld.op(119, [x], [y])  # a WHILE loop, as Keras 3 models convert
    with pytest.raises(TFLiteFormatError, match="WHILE loop: the converter did not fuse"):
        from_tflite(bld.finish([x], [y]))


def test_li_load_and_sniff(schema, tmp_path):
    d = make_direction(np.random.default_rng(2), 4, I, peephole=True)
    p = tmp_path / "m.tflite"
    p.write_bytes(uni_file(schema, d))
    assert sniff(p) == "tflite" and li.formats.detect.detect_format(p) == "tflite"
    m = li.load(p)
    x = _x((B, T, I))
    np.testing.assert_array_equal(m(x)[0], from_tflite(str(p))(x)[0])
    other = tmp_path / "x.bin"
    other.write_bytes(b"\x10\x00\x00\x00NOPE" + bytes(40))
    assert sniff(other) is None


def test_truncated_and_corrupted_files_raise_format_errors(schema):
    """Every prefix of a small file and seeded byte flips: a TFLiteFormatError (or a
    model, for flips in weight bytes), never another exception, a crash or a hang."""
    d = make_direction(np.random.default_rng(3), 3, 2, peephole=True, P=2, layer_norm=True)
    data = uni_file(schema, d, Bn=1, Tn=2)
    for n in range(0, len(data), max(1, len(data) // 300)):
        with pytest.raises(TFLiteFormatError):
            from_tflite(data[:n])
    rng = np.random.default_rng(0)
    loaded = refused = 0
    for _ in range(400):
        b = bytearray(data)
        for pos in rng.integers(0, len(b), rng.integers(1, 4)):
            b[pos] = int(rng.integers(0, 256))
        try:
            from_tflite(bytes(b))
            loaded += 1
        except TFLiteFormatError:
            refused += 1
    assert loaded + refused == 400 and refused > 0


# ----------------------------------------------------------------------------- the converter
CONVERTER_SCRIPT = r'''
import sys, uuid, numpy as np, tensorflow as tf
B, T, I = %(B)d, %(T)d, %(I)d
out = sys.argv[1]
rng = np.random.default_rng(0)

def keras2_lstm(time_major, go_backwards):
    """What Keras 2's LSTM layer handed the converter: a function with its attributes."""
    def standard_lstm(inputs, init_h, init_c, kernel, recurrent_kernel, bias):
        x = inputs if time_major else tf.transpose(inputs, [1, 0, 2])
        if go_backwards:
            x = tf.reverse(x, [0])
        h, c, ys = init_h, init_c, []
        for t in range(x.shape[0]):
            z = tf.matmul(x[t], kernel) + tf.matmul(h, recurrent_kernel) + bias
            i, f, g, o = tf.split(z, 4, axis=1)
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            h = tf.sigmoid(o) * tf.tanh(c)
            ys.append(h)
        y = tf.stack(ys)
        y = y if time_major else tf.transpose(y, [1, 0, 2])
        return h, y, h, c, tf.constant(0.0)
    return tf.function(standard_lstm, autograph=False, experimental_attributes={
        "api_implements": "lstm_" + uuid.uuid4().hex, "api_preferred_device": "CPU",
        "time_major": time_major, "go_backwards": go_backwards})

def weights(i, H):
    k = 1 / np.sqrt(H)
    return [tf.constant(rng.uniform(-k, k, s).astype(np.float32))
            for s in ((i, 4 * H), (H, 4 * H), (4 * H,))]

def layer(x, H, go_backwards=False, time_major=False):
    z = tf.zeros((B, H))
    return keras2_lstm(time_major, go_backwards)(x, z, z, *weights(x.shape[-1], H))[1]

models = {  # name: (input size, body, also hybrid?)
    "uni": (I, lambda x: layer(x, 6), False),
    "go_backwards": (I, lambda x: layer(x, 5, go_backwards=True), False),
    "bidirectional": (I, lambda x: tf.concat([layer(x, 4), tf.reverse(layer(x, 4, True), [1])],
                                             -1), False),
    "stack": (I, lambda x: layer(tf.concat([layer(x, 6), tf.reverse(layer(x, 6, True), [1])],
                                           -1), 3), False),
    "time_major": (I, lambda x: layer(tf.transpose(x, [1, 0, 2]), 4, time_major=True), False),
    # dynamic-range quantization leaves tensors under 1024 elements in float: big enough
    "big": (%(IBIG)d, lambda x: layer(x, 40), True),
    "big_bidirectional": (%(IBIG)d, lambda x: tf.concat([layer(x, 32),
                                                  tf.reverse(layer(x, 32, True), [1])], -1),
                          True),
}
for name, (n_in, body, hybrid) in models.items():
    fn = tf.function(body, input_signature=[tf.TensorSpec((B, T, n_in), tf.float32)])
    mod = tf.Module()
    mod.f = fn
    d = f"{out}/{name}_sm"
    tf.saved_model.save(mod, d, signatures=fn.get_concrete_function())
    for quant in (False, True) if hybrid else (False,):
        conv = tf.lite.TFLiteConverter.from_saved_model(d)
        if quant:
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
        open(f"{out}/{name}{'_hybrid' if quant else ''}.tflite", "wb").write(conv.convert())
'''


@pytest.fixture(scope="session")
def converter_files(tmp_path_factory):
    """Files from TF's converter, made once per session in a child process (the
    converter's logging and TF's start-up stay out of this one)."""
    pytest.importorskip("tensorflow")
    import subprocess
    out = tmp_path_factory.mktemp("tflite_converter")
    script = out / "make.py"
    script.write_text(CONVERTER_SCRIPT % dict(B=B, T=T, I=I, IBIG=I_BIG))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    r = subprocess.run([sys.executable, str(script), str(out)], capture_output=True,
                       text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def _op_names(tf, data):
    it = tf.lite.Interpreter(model_content=data)
    return [o["op_name"] for o in it._get_ops_details()]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["uni", "go_backwards", "bidirectional", "stack",
                                  "time_major"])
def test_converter_files_match_interpreter(tf, converter_files, name):
    data = (converter_files / f"{name}.tflite").read_bytes()
    ops = _op_names(tf, data)
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in ops
    if name == "bidirectional":  # the pattern the loader must see as one layer
        assert ops.count("REVERSE_V2") == 2 and "CONCATENATION" in ops
    m = from_tflite(data)
    assert all(l.cell_clip == 10.0 for l in m.config.layers)  # the converter's, honoured
    if name in ("bidirectional", "stack"):
        assert m.config.layers[0].bidirectional
    x = _x((B, T, I), 9)
    (want,) = run_tflite(tf, data, x)
    # the model's input is the first LSTM op's: after the graph's TRANSPOSE if time-major
    got = m(x.transpose(1, 0, 2) if name == "time_major" else x)[0]
    assert m.config.batch_first == (name != "time_major")
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["big", "big_bidirectional"])
def test_converter_hybrid_files(tf, converter_files, name):
    """optimizations=[Optimize.DEFAULT]: int8 weights, float activations."""
    data = (converter_files / f"{name}_hybrid.tflite").read_bytes()
    fdata = (converter_files / f"{name}.tflite").read_bytes()
    m = from_tflite(data)
    assert m.config.quantization == "int8"
    x = _x((B, T, I_BIG), 10)
    (tfl,) = run_tflite(tf, data, x)
    (ref,) = run_tflite(tf, fdata, x)
    err_tfl = float(np.abs(tfl - ref).max())
    ours = m(x)[0]
    assert float(np.abs(ours - ref).max()) <= INT8_BOUND
    assert float(np.abs(ours - tfl).max()) <= 2 * err_tfl + 1e-4


def test_cyclic_graph_terminates(schema):
    """Two LSTM ops feeding each other (no real file does): an error, not a hang."""
    d = make_direction(np.random.default_rng(4), 4, 4)
    bld = Builder(schema)
    x, y = bld.tensor((B, T, 4), name="x"), bld.tensor((B, T, 4), name="y")
    for src, dst in ((x, y), (y, x)):
        ins = [src] + _direction_inputs(bld, d, False, B, False)
        ins += [bld.tensor((B, 4), variable=True), bld.tensor((B, 4), variable=True)]
        ins += [-1] * 4
        o = schema.UnidirectionalSequenceLSTMOptionsT()
        o.fusedActivationFunction = 4
        bld.op(44, ins, [dst], 71, o)
    with pytest.raises(TFLiteFormatError, match="separate LSTM stacks"):
        from_tflite(bld.finish([x], [y]))
