"""Keras 2 ``CuDNNLSTM`` layers in legacy ``.h5`` files (lstm_infer.formats.keras).

Keras 3 cannot make (or load) them, so the files are written here with h5py exactly as
tf.keras 2.x ``model.save("m.h5")`` lays them out: root attributes ``model_config``
(JSON), ``keras_version``, ``backend``; group ``model_weights`` with ``layer_names``;
one group per layer whose ``weight_names`` lists ``<layer>/kernel:0`` (I, 4H),
``<layer>/recurrent_kernel:0`` (H, 4H), ``<layer>/bias:0`` (8H,) -- CuDNNLSTM's bias
is cuDNN's input biases then its recurrent biases, gates i, f, c, o in each
(keras/layers/cudnn_recurrent.py: ``bias_i_i = bias[:units]`` ... ``bias_o =
bias[7 * units:]``); Bidirectional lists ``forward_<layer>`` then ``backward_<layer>``
weights.

The reference is torch.nn.LSTM with the same weights (cuDNN's LSTM is torch's:
weight_ih = kernel.T, bias_ih = the input half, bias_hh = the recurrent half), and the
numpy oracle where torch is not installed.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import lstm_infer as li
from conftest import TOL_FRAMEWORK, assert_close
from lstm_infer.formats.keras import KerasFileError
from reference import lstm_reference

h5py = None  # set by _h5py: every test writes an .h5 file, and each skips alone without it


@pytest.fixture(autouse=True)
def _h5py():
    global h5py
    h5py = pytest.importorskip("h5py")

B, T, I = 3, 7, 5
TOL = TOL_FRAMEWORK["float32"]


def _cudnn_config(name, H, return_sequences=True, go_backwards=False, input_dim=None):
    cfg = {"name": name, "trainable": True, "dtype": "float32",
           "return_sequences": return_sequences, "return_state": False,
           "go_backwards": go_backwards, "stateful": False, "time_major": False,
           "units": H,
           "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
           "recurrent_initializer": {"class_name": "Orthogonal",
                                     "config": {"gain": 1.0, "seed": None}},
           "bias_initializer": {"class_name": "Zeros", "config": {}},
           "unit_forget_bias": True, "kernel_regularizer": None,
           "recurrent_regularizer": None, "bias_regularizer": None,
           "activity_regularizer": None, "kernel_constraint": None,
           "recurrent_constraint": None, "bias_constraint": None}
    if input_dim is not None:
        cfg["batch_input_shape"] = [None, None, input_dim]
    return cfg


def _cudnn_weights(rng, in_dim, H):
    k = 1 / np.sqrt(H)
    return [rng.uniform(-k, k, (in_dim, 4 * H)).astype(np.float32),
            rng.uniform(-k, k, (H, 4 * H)).astype(np.float32),
            rng.uniform(-k, k, (8 * H,)).astype(np.float32)]


def write_h5(path, layers, keras_version="2.3.1"):
    """layers: list of (class_name, config, {weight name: array}) after an InputLayer."""
    first = layers[0][1]
    in_dim = first.get("batch_input_shape", [None, None, I])[-1] if layers[0][0] != \
        "Bidirectional" else first["layer"]["config"]["batch_input_shape"][-1]
    cfg = {"class_name": "Sequential", "config": {"name": "sequential", "layers": [
        {"class_name": "InputLayer",
         "config": {"batch_input_shape": [None, None, in_dim], "dtype": "float32",
                    "sparse": False, "ragged": False, "name": "input_1"}}] + [
        {"class_name": c, "config": conf} for c, conf, _ in layers]}}
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = keras_version
        f.attrs["backend"] = "tensorflow"
        f.attrs["model_config"] = json.dumps(cfg)
        mw = f.create_group("model_weights")
        mw.attrs["keras_version"] = keras_version
        mw.attrs["backend"] = "tensorflow"
        mw.attrs["layer_names"] = np.array(["input_1"] + [c["name"] for _, c, _ in layers],
                                           dtype="S")
        mw.create_group("input_1").attrs["weight_names"] = np.array([], dtype="S")
        for _, conf, weights in layers:
            g = mw.create_group(conf["name"])
            g.attrs["weight_names"] = np.array(list(weights), dtype="S")
            for n, a in weights.items():
                g.create_dataset(n, data=a)


def _cudnn_layer(name, ws, **kw):
    return ("CuDNNLSTM", _cudnn_config(name, ws[1].shape[0], **kw),
            {f"{name}/kernel:0": ws[0], f"{name}/recurrent_kernel:0": ws[1],
             f"{name}/bias:0": ws[2]})


def _bidirectional(name, fw, bw, input_dim=None, merge_mode="concat"):
    H = fw[1].shape[0]
    inner = _cudnn_config("cu_dnnlstm", H, input_dim=input_dim)
    conf = {"name": name, "trainable": True, "dtype": "float32",
            "layer": {"class_name": "CuDNNLSTM", "config": inner}, "merge_mode": merge_mode}
    weights = {}
    for side, ws in (("forward", fw), ("backward", bw)):
        for n, a in zip(("kernel", "recurrent_kernel", "bias"), ws):
            weights[f"{name}/{side}_cu_dnnlstm/{n}:0"] = a
    return ("Bidirectional", conf, weights)


def _canonical(ws):
    """The oracle's direction dict: Keras order i, f, c, o is canonical; b_ih + b_hh."""
    H = ws[1].shape[0]
    return {"w_ih": ws[0].T.astype(np.float64), "w_hh": ws[1].T.astype(np.float64),
            "b": ws[2][:4 * H].astype(np.float64) + ws[2][4 * H:]}


def _torch_lstm(torch, dirs_per_layer, in_dim):
    H = dirs_per_layer[0][0][1].shape[0]
    bi = len(dirs_per_layer[0]) == 2
    net = torch.nn.LSTM(in_dim, H, num_layers=len(dirs_per_layer), bidirectional=bi,
                        batch_first=True)
    with torch.no_grad():
        for k, dirs in enumerate(dirs_per_layer):
            for d, ws in enumerate(dirs):
                sfx = f"_l{k}" + ("_reverse" if d else "")
                getattr(net, "weight_ih" + sfx).copy_(torch.from_numpy(ws[0].T.copy()))
                getattr(net, "weight_hh" + sfx).copy_(torch.from_numpy(ws[1].T.copy()))
                getattr(net, "bias_ih" + sfx).copy_(torch.from_numpy(ws[2][:4 * H].copy()))
                getattr(net, "bias_hh" + sfx).copy_(torch.from_numpy(ws[2][4 * H:].copy()))
    return net.eval()


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def _x(seed=1):
    return np.random.default_rng(seed).uniform(-3, 3, (B, T, I)).astype(np.float32)


# ----------------------------------------------------------------------------- parity
def test_cudnnlstm_matches_the_oracle(tmp_path):
    """Default run without torch: the 8H bias is b_ih + b_hh, gates as an LSTM's."""
    rng = np.random.default_rng(0)
    ws = _cudnn_weights(rng, I, 6)
    write_h5(tmp_path / "m.h5", [_cudnn_layer("cu_dnnlstm", ws, input_dim=I)])
    m = li.load(tmp_path / "m.h5")
    assert m.config.batch_first and m.config.hidden_size == 6
    x = _x()
    out, (h, c) = m(x)
    ref, hr, cr = lstm_reference([[_canonical(ws)]], x.transpose(1, 0, 2))
    assert_close(out, ref.transpose(1, 0, 2), 1e-5, "out")
    assert_close(h, hr[0], 1e-5, "h_n")
    assert_close(c, cr[0], 1e-5, "c_n")


def test_cudnnlstm_stack_matches_torch(tmp_path, torch):
    rng = np.random.default_rng(2)
    w1, w2 = _cudnn_weights(rng, I, 8), _cudnn_weights(rng, 8, 8)
    write_h5(tmp_path / "m.h5", [_cudnn_layer("cu_dnnlstm", w1, input_dim=I),
                                 _cudnn_layer("cu_dnnlstm_1", w2)])
    m = li.from_keras(str(tmp_path / "m.h5"))
    assert m.config.num_layers == 2
    x = _x()
    want, (hw, cw) = _torch_lstm(torch, [[w1], [w2]], I)(torch.from_numpy(x))
    out, (h, c) = m(x)
    assert_close(out, want.detach().numpy(), TOL, "out")
    assert_close(h, hw.detach().numpy(), TOL, "h_n")
    assert_close(c, cw.detach().numpy(), TOL, "c_n")


@pytest.mark.parametrize("merge_mode", ["concat", "sum"])
def test_bidirectional_cudnnlstm_matches_torch(tmp_path, torch, merge_mode):
    rng = np.random.default_rng(3)
    fw, bw = _cudnn_weights(rng, I, 7), _cudnn_weights(rng, I, 7)
    write_h5(tmp_path / "bi.h5", [_bidirectional("bidirectional", fw, bw, input_dim=I,
                                                 merge_mode=merge_mode)])
    m = li.load(tmp_path / "bi.h5")
    assert m.config.bidirectional
    x = _x(4)
    want, (hw, cw) = _torch_lstm(torch, [[fw, bw]], I)(torch.from_numpy(x))
    want = want.detach().numpy()
    if merge_mode == "sum":
        want = want[..., :7] + want[..., 7:]
    out, (h, c) = m(x)
    assert_close(out, want, TOL, "out")
    assert_close(h, hw.detach().numpy(), TOL, "h_n")
    assert_close(c, cw.detach().numpy(), TOL, "c_n")


def test_go_backwards_cudnnlstm(tmp_path, torch):
    """go_backwards: reads the sequence reversed, outputs in processing order (Keras)."""
    rng = np.random.default_rng(5)
    ws = _cudnn_weights(rng, I, 4)
    write_h5(tmp_path / "gb.h5", [_cudnn_layer("cu_dnnlstm", ws, input_dim=I,
                                               go_backwards=True)])
    m = li.load(tmp_path / "gb.h5")
    x = _x(6)
    want, (hw, _) = _torch_lstm(torch, [[ws]], I)(torch.from_numpy(x[:, ::-1].copy()))
    out, (h, _) = m(x)
    assert_close(out, want.detach().numpy(), TOL, "out")
    assert_close(h, hw.detach().numpy(), TOL, "h_n")


def test_activation_keys_in_a_config_do_not_change_cudnn(tmp_path):
    """cuDNN runs sigmoid / tanh: a config key saying otherwise is not what ran."""
    rng = np.random.default_rng(7)
    ws = _cudnn_weights(rng, I, 3)
    name, conf, weights = _cudnn_layer("cu_dnnlstm", ws, input_dim=I)
    conf["activation"] = "relu"
    write_h5(tmp_path / "m.h5", [(name, conf, weights)])
    acts = li.load(tmp_path / "m.h5").config.layers[0].activations[0]
    assert [a.name for a in acts] == ["sigmoid", "tanh", "tanh"]


# ----------------------------------------------------------------------------- refusals
def test_cudnnlstm_with_a_4h_bias_is_refused(tmp_path):
    rng = np.random.default_rng(8)
    ws = _cudnn_weights(rng, I, 4)
    ws[2] = ws[2][:16]
    write_h5(tmp_path / "bad.h5", [_cudnn_layer("cu_dnnlstm", ws, input_dim=I)])
    with pytest.raises(KerasFileError, match=r"bias must have shape \(8\*units,\)"):
        li.load(tmp_path / "bad.h5")


def test_cudnnlstm_listed_as_an_lstm(tmp_path):
    rng = np.random.default_rng(9)
    write_h5(tmp_path / "m.h5", [_cudnn_layer("cu_dnnlstm", _cudnn_weights(rng, I, 4),
                                              input_dim=I)])
    summary = li.formats.keras.keras_layers_summary(str(tmp_path / "m.h5"))
    assert [(e["class_name"], e["lstm"]) for e in summary] == [
        ("InputLayer", False), ("CuDNNLSTM", True)]
