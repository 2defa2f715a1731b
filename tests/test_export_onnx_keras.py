"""`formats.onnx.to_onnx` and `formats.keras.to_keras_weights`: our model as an ONNX
graph and as Keras weights, the inverses of the ONNX and Keras loaders.

Round trips through our own loader (`from_onnx(to_onnx(m))` is `m`), through
onnxruntime and through Keras layers; the refusals need no framework. Each test skips
on its own when the framework it uses is missing."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest

import lstm_infer as li
from lstm_infer import tolerances
from lstm_infer.formats.keras import to_keras_weights
from lstm_infer.formats.onnx import to_onnx

TOL = tolerances.TOL_FRAMEWORK["float32"]


def _model(**kw):
    kw = {"num_layers": 2, "bidirectional": True, "peephole": True, "seed": 3, **kw}
    return li.LSTM.random(5, 8, **kw)


def _same_weights(a, b):
    for la, lb in zip(a.weights, b.weights):
        for da, db in zip(la, lb):
            assert da.keys() == db.keys() and all(np.array_equal(da[k], db[k]) for k in da)


# ---------------------------------------------------------------------------- ONNX
def test_to_onnx_round_trip_through_our_loader(tmp_path):
    pytest.importorskip("onnx")
    for kw in ({}, {"bidirectional": False, "peephole": False, "num_layers": 1}):
        m = _model(**kw)
        back = li.from_onnx(to_onnx(m))
        assert back.config == m.config
        _same_weights(back, m)
    m = _model()
    p = tmp_path / "m.onnx"
    proto = to_onnx(m.canonical(), p)  # canonical data, and written to a file
    assert li.detect_format(p) == "onnx" and proto.graph.node[0].name == "lstm0"
    _same_weights(li.load(p), m)


def test_to_onnx_runs_in_onnxruntime_like_ours():
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    m = _model()
    x = np.random.default_rng(0).uniform(-1, 1, (6, 2, 5)).astype(np.float32)
    sess = ort.InferenceSession(to_onnx(m).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    y, h, c = sess.run(["Y", "Y_h", "Y_c"], {"X": x})
    out, (h_n, c_n) = m(x)
    for got, want in ((y, out), (h, h_n), (c, c_n)):
        assert got.shape == want.shape and np.abs(got - want).max() <= TOL


@pytest.mark.parametrize("mode", ["int8-weights", "float16", "bfloat16"])
def test_to_onnx_weight_only_quantized_gives_the_float_weights_it_runs(mode):
    pytest.importorskip("onnx")
    q = _model(peephole=False).quantize(mode)
    back = li.from_onnx(to_onnx(q))
    x = np.random.default_rng(1).uniform(-1, 1, (4, 2, 5)).astype(np.float32)
    assert np.abs(back(x)[0] - q(x)[0]).max() <= TOL


@pytest.mark.parametrize("kw,says", [
    ({"proj_size": 3}, "layer 0: a projection (proj_size)"),
    ({"clip": 2.0}, "layer 0: clip"),
    ({"batch_first": True}, "batch_first"),
    ({"activations": ["hard_sigmoid", "tanh", "tanh"]}, "non-default activations"),
])
def test_to_onnx_refuses_what_it_cannot_express(kw, says):
    # refused before onnx is imported: no framework needed
    with pytest.raises(ValueError, match="the ONNX graph built here cannot express this "
                                         "model: .*" + re.escape(says)):
        to_onnx(li.LSTM.random(4, 8, **kw))


def test_exporters_refuse_the_int8_mode():
    q = li.LSTM.random(4, 8).quantize("int8")  # activations quantized: not expressible
    for export in (to_onnx, to_keras_weights):
        with pytest.raises(ValueError, match='quantization="int8"'):
            export(q)


# ---------------------------------------------------------------------------- Keras
def test_to_keras_weights_layout():
    m = _model(peephole=False)
    ws = to_keras_weights(m)
    assert len(ws) == 2 and all(len(layer) == 6 for layer in ws)  # 2 directions x 3
    for layer, dirs in zip(ws, m.weights):
        for d, w in enumerate(dirs):
            kernel, recurrent, bias = layer[3 * d:3 * d + 3]
            assert kernel.dtype == np.float32 and kernel.flags.writeable
            np.testing.assert_array_equal(kernel, w["w_ih"].T)
            np.testing.assert_array_equal(recurrent, w["w_hh"].T)
            np.testing.assert_array_equal(bias, w["b"])
    assert to_keras_weights(m.canonical())[1][4].shape == (8, 32)


def test_to_keras_weights_refuses_what_it_cannot_express():
    with pytest.raises(ValueError, match="a Keras LSTM stack cannot express this model: "
                                         "layer 0: peephole connections"):
        to_keras_weights(li.LSTM.random(4, 8, peephole=True))
    with pytest.raises(ValueError, match="merge='sum'"):
        to_keras_weights(li.LSTM(li.LSTM.random(4, 8, bidirectional=True).weights,
                                 layer_options=[{"merge": "sum"}]))


def test_to_keras_weights_round_trip_through_keras_and_our_loader(tmp_path):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    m = _model(peephole=False, seed=2)
    inp = keras.Input((None, 5))
    y, layers = inp, []
    for _ in range(2):
        layers.append(keras.layers.Bidirectional(keras.layers.LSTM(8, return_sequences=True)))
        y = layers[-1](y)
    net = keras.Model(inp, y)
    for lyr, ws in zip(layers, to_keras_weights(m)):
        lyr.set_weights(ws)
    x = np.random.default_rng(1).uniform(-1, 1, (6, 2, 5)).astype(np.float32)
    got = np.transpose(np.asarray(net.predict(np.transpose(x, (1, 0, 2)), verbose=0)),
                       (1, 0, 2))
    assert np.abs(got - m(x)[0]).max() <= TOL
    p = tmp_path / "m.keras"
    net.save(p)
    back = li.from_keras(p)  # batch_first, as Keras
    for la, lb in zip(back.weights, m.weights):
        for da, db in zip(la, lb):
            for k in da:
                np.testing.assert_allclose(da[k], db[k], rtol=0, atol=1e-7)
