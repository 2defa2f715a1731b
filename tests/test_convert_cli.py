"""``lstm-infer convert IN -o OUT``: every source x target pair both sides can express.

Sources are made by the real frameworks (``torch.save`` of an nn.LSTM's state dict, a
Keras 3 ``model.save``, an ONNX graph built with ``onnx.helper`` and run by
onnxruntime) or by us (native). Each is converted by the command line, in process,
to every target (the format picked from OUT's suffix); the converted file is run by
its own framework (``torch.load(weights_only=True)`` + nn.LSTM, onnxruntime,
``keras.saving.load_model``, ``li.load``) and must match the *source framework's*
output at 1e-5. Pairs the target cannot express must be refused (status 2) with a
message naming the feature, and write nothing. Also: the suffix rules (``--to``,
unknown suffixes refused: ``convert m.keras -o m.onnx`` once wrote native safetensors
under an .onnx name), ``--dequantize``, the ONNX-only flags.
"""
from __future__ import annotations

import os
import sys

if "keras" not in sys.modules:  # Keras 3 reads the backend once, at import
    os.environ["KERAS_BACKEND"] = "torch"

import numpy as np
import pytest

import lstm_infer as li
from conftest import assert_close
from lstm_infer.cli import main, output_format
from lstm_infer.tolerances import TOL_FRAMEWORK

pytestmark = pytest.mark.filterwarnings(  # Keras 3 on numpy 2, not ours
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
TOL = TOL_FRAMEWORK["float32"]
T, B, I = 6, 3, 5
SUFFIX = {"native": ".safetensors", "torch": ".pt", "onnx": ".onnx", "keras": ".keras"}
KERAS_HS = ("hard_sigmoid", 1.0 / 6.0, 0.5)


def _need(*modules):
    return [pytest.importorskip(m) for m in modules]


def _keras():
    _need("torch", "h5py")
    return pytest.importorskip("keras")


class Source:
    """A model file made by its framework, and that framework's output on x.

    batch_first: the layout of x and of `reference`'s output (the source's own);
    flags: what `convert` needs to read it in that layout."""

    def __init__(self, path, reference, batch_first, flags=()):
        self.path, self.reference, self.batch_first, self.flags = path, reference, \
            batch_first, list(flags)

    def x(self, seed=0):
        shape = (B, T, I) if self.batch_first else (T, B, I)
        return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


# ---------------------------------------------------------------------------- sources
def _torch_source(d, name, **kw):
    torch, = _need("torch")
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(I, 6, **kw).eval()
    path = os.path.join(d, f"{name}.pt")
    torch.save(lstm.state_dict(), path)

    def ref(x):
        with torch.inference_mode():
            return lstm(torch.from_numpy(x))[0].numpy()
    bf = kw.get("batch_first", False)
    return Source(path, ref, bf, ["--batch-first"] if bf else [])


def _keras_source(d, name, build):
    keras = _keras()
    inp = keras.Input((None, I))
    net = keras.Model(inp, build(keras, inp))
    rng = np.random.default_rng(1)
    net.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype(np.float32)
                     for w in net.get_weights()])
    path = os.path.join(d, f"{name}.keras")
    net.save(path)
    return Source(path, lambda x: np.asarray(net(x).detach().numpy()), True)


def _onnx_source(d, name, direction, peephole, **attrs):
    onnx, ort = _need("onnx", "onnxruntime")
    from onnx import helper, numpy_helper
    H, D = 6, 2 if direction == "bidirectional" else 1
    rng = np.random.default_rng(2)
    ws = {"W": (D, 4 * H, I), "R": (D, 4 * H, H), "B": (D, 8 * H)}
    if peephole:
        ws["P"] = (D, 3 * H)
    inits = [numpy_helper.from_array(rng.uniform(-0.5, 0.5, s).astype(np.float32), n)
             for n, s in ws.items()]
    ins = ["X", "W", "R", "B"] + (["", "", "", "P"] if peephole else [])
    node = helper.make_node("LSTM", ins, ["Y", "Y_h", "Y_c"], name="rnn", hidden_size=H,
                            direction=direction, **attrs)
    f32 = onnx.TensorProto.FLOAT
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", f32, ["T", "B", I])],
                          [helper.make_tensor_value_info("Y", f32, ["T", D, "B", H])],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = os.path.join(d, f"{name}.onnx")
    onnx.save(m, path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])

    def ref(x):
        y = sess.run(["Y"], {"X": x})[0]  # (T, D, B, H) -> ours (T, B, D*H)
        return y.transpose(0, 2, 1, 3).reshape(x.shape[0], x.shape[1], D * H)
    return Source(path, ref, False)


def _native_source(d, name, model):
    path = os.path.join(d, f"{name}.safetensors")
    model.save(path)
    return Source(path, lambda x: model(x)[0], model.config.batch_first)


SOURCES = {
    "torch-bi": lambda d: _torch_source(d, "torch-bi", num_layers=2, bidirectional=True),
    "torch-proj-batch_first": lambda d: _torch_source(d, "torch-proj", proj_size=3,
                                                      batch_first=True),
    "keras-bi": lambda d: _keras_source(d, "keras-bi", lambda k, y: k.layers.Bidirectional(
        k.layers.LSTM(6, return_sequences=True))(k.layers.Bidirectional(
            k.layers.LSTM(6, return_sequences=True))(y))),
    "keras-shrinking": lambda d: _keras_source(d, "keras-shrinking", lambda k, y: k.layers.LSTM(
        3, return_sequences=True, go_backwards=True)(k.layers.Bidirectional(
            k.layers.LSTM(4, return_sequences=True), merge_mode="sum")(
            k.layers.LSTM(8, return_sequences=True, activation="relu")(y)))),
    "onnx-forward": lambda d: _onnx_source(d, "onnx-forward", "forward", False),
    "onnx-peephole-clip": lambda d: _onnx_source(d, "onnx-peephole", "bidirectional", True,
                                                 clip=1.0),
    "native-activations": lambda d: _native_source(d, "native-act", li.LSTM.random(
        I, 6, num_layers=2, batch_first=True, activations=[KERAS_HS, "relu", "relu"])),
}

# what each target refuses in each source: None = converts; else a fragment of the message
EXPECTED = {
    "torch-bi": {},
    "torch-proj-batch_first": {"onnx": "a projection (proj_size=3)",
                               "keras": "a projection (proj_size=3)"},
    "keras-bi": {},
    "keras-shrinking": {"torch": "layers of different sizes or directions: 8, 4x2, 3",
                        "onnx": "layer 1: merge='sum'"},
    "onnx-forward": {},
    "onnx-peephole-clip": {"torch": "layer 0: peephole connections; layer 0: clip=1",
                           "keras": "layer 0: peephole connections; layer 0: clip=1"},
    "native-activations": {"torch": "activations hard_sigmoid(0.166667,0.5),relu,relu"},
}
# the pairs the default run covers (one per target and per refusal kind); the rest: slow
FAST = {("torch-bi", "keras"), ("keras-bi", "torch"), ("keras-bi", "onnx"),
        ("onnx-forward", "native"), ("torch-proj-batch_first", "torch"),
        ("keras-shrinking", "onnx"), ("onnx-peephole-clip", "torch"),
        ("native-activations", "onnx")}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("sources"))
    made = {}

    def get(name):
        if name not in made:
            made[name] = SOURCES[name](d)
        return made[name]
    return get


# ---------------------------------------------------------------------------- targets
def _run_native(path, src, x):
    return li.load(path)(x)[0]


def _run_torch(path, src, x):
    torch, = _need("torch")
    sd = torch.load(path, weights_only=True)
    L = 1 + max(int(k.split("_l")[1].split("_")[0]) for k in sd if k.startswith("weight_ih_l"))
    H = sd["weight_ih_l0"].shape[0] // 4
    P = sd["weight_hr_l0"].shape[0] if "weight_hr_l0" in sd else 0
    lstm = torch.nn.LSTM(sd["weight_ih_l0"].shape[1], H, num_layers=L, proj_size=P,
                         bidirectional="weight_ih_l0_reverse" in sd,
                         batch_first=src.batch_first)
    lstm.load_state_dict(sd, strict=True)
    with torch.inference_mode():
        return lstm.eval()(torch.from_numpy(x))[0].numpy()


def _run_onnx(path, src, x):
    ort, = _need("onnxruntime")
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(["Y"], {"X": x})[0]  # the graph takes x in the model's own layout


def _run_keras(path, src, x):
    keras = _keras()
    km = keras.saving.load_model(path)
    xb = x if src.batch_first else x.transpose(1, 0, 2)  # Keras: (B, T, I)
    y = np.asarray(km(xb).detach().numpy())
    return y if src.batch_first else y.transpose(1, 0, 2)


RUN = {"native": _run_native, "torch": _run_torch, "onnx": _run_onnx, "keras": _run_keras}
NEEDS = {"native": (), "torch": ("torch",), "onnx": ("onnx", "onnxruntime"),
         "keras": ("h5py",)}


def _pairs():
    for s in SOURCES:
        for t in RUN:
            marks = () if (s, t) in FAST else (pytest.mark.slow,)
            yield pytest.param(s, t, id=f"{s}->{t}", marks=marks)


@pytest.mark.parametrize("source,target", list(_pairs()))
def test_convert_every_pair(sources, tmp_path, capsys, source, target):
    _need(*NEEDS[target])
    src = sources(source)
    out = str(tmp_path / f"out{SUFFIX[target]}")
    status = main(["convert", src.path, "-o", out] + src.flags)
    refused = EXPECTED[source].get(target)
    if refused is not None:
        err = capsys.readouterr().err
        assert status == 2 and "cannot express this model" in err and refused in err, err
        assert not os.path.exists(out)
        return
    assert status == 0, capsys.readouterr().err
    assert li.detect_format(out) == {"native": "native", "torch": "pytorch", "onnx": "onnx",
                                     "keras": "keras"}[target]
    x = src.x()
    assert_close(RUN[target](out, src, x), src.reference(x), TOL, f"{source} -> {target}",
                 scale_with_magnitude=True)


# ---------------------------------------------------------------------------- suffixes
def test_keras_to_onnx_writes_onnx(sources, tmp_path, capsys):
    """The bug: `convert m.keras -o m.onnx` exited 0 after writing native safetensors."""
    _need("onnx", "onnxruntime")
    src = sources("keras-bi")
    out = str(tmp_path / "m.onnx")
    assert main(["convert", src.path, "-o", out]) == 0
    assert li.detect_format(out) == "onnx"
    assert "(onnx)" in capsys.readouterr().out
    x = src.x()
    assert_close(_run_onnx(out, src, x), src.reference(x), TOL, "keras -> onnx")


@pytest.mark.parametrize("name", ["m.h5", "m.zip", "m", "m.npy", "m.onnx.tmp"])
def test_unknown_suffix_is_refused_before_loading(tmp_path, capsys, name):
    src = tmp_path / "src.safetensors"
    li.LSTM.random(I, 4).save(src)
    assert main(["convert", str(src), "-o", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert "cannot tell the output format" in err and ".onnx (onnx)" in err and "--to" in err
    assert ("use .keras" in err) == name.endswith(".h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.safetensors"]
    # refused before the source is read: a missing source is not what it reports
    assert main(["convert", str(tmp_path / "missing.pt"), "-o", str(tmp_path / name)]) == 2
    assert "cannot tell the output format" in capsys.readouterr().err


def test_output_format_rules():
    assert [output_format(p) for p in ("a.safetensors", "a.PT", "a.pth", "a.bin", "a.onnx",
                                       "a.keras")] == ["native", "torch", "torch", "torch",
                                                       "onnx", "keras"]
    assert output_format("a.bin", "onnx") == "onnx"
    with pytest.raises(ValueError, match="cannot tell"):
        output_format("a.tflite")


def test_to_forces_the_format(tmp_path, capsys):
    src = tmp_path / "src.safetensors"
    m = li.LSTM.random(I, 4, num_layers=2)
    m.save(src)
    # torch names in a .safetensors file; native under a torch suffix
    assert main(["convert", str(src), "-o", str(tmp_path / "t.safetensors"), "--to",
                 "torch"]) == 0
    assert li.detect_format(tmp_path / "t.safetensors") == "pytorch-safetensors"
    assert main(["convert", str(src), "-o", str(tmp_path / "n.bin"), "--to", "native"]) == 0
    assert li.detect_format(tmp_path / "n.bin") == "native"
    for p in ("t.safetensors", "n.bin"):
        back = li.load(tmp_path / p)
        for la, lb in zip(back.weights, m.weights):
            for da, db in zip(la, lb):
                assert all(np.array_equal(da[k], db[k]) for k in db)
    # Keras' loader needs the suffix: refused, not written
    assert main(["convert", str(src), "-o", str(tmp_path / "k.zip"), "--to", "keras"]) == 2
    assert "must end in .keras" in capsys.readouterr().err


def test_onnx_only_flags(tmp_path, capsys):
    _need("onnx", "onnxruntime")
    src = tmp_path / "src.safetensors"
    m = li.LSTM.random(I, 4, bidirectional=True)
    m.save(src)
    assert main(["convert", str(src), "-o", str(tmp_path / "m.pt"), "--sequence-lens"]) == 2
    assert "--sequence-lens apply to ONNX output only" in capsys.readouterr().err
    out = tmp_path / "m.onnx"
    assert main(["convert", str(src), "-o", str(out), "--sequence-lens"]) == 0
    x = np.random.default_rng(0).uniform(-1, 1, (T, B, I)).astype(np.float32)
    lengths = np.array([6, 1, 4], np.int32)
    import onnxruntime as ort
    y = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        ["Y"], {"X": x, "sequence_lens": lengths})[0]
    assert_close(y, m(x, lengths=lengths)[0], TOL, "Y")


def test_quantized_source_needs_dequantize(tmp_path, capsys):
    _need("torch")
    src = tmp_path / "q.safetensors"
    li.LSTM.random(I, 4).quantize("int8-weights").save(src)
    assert main(["convert", str(src), "-o", str(tmp_path / "m.pt")]) == 2
    assert "pass dequantize=True" in capsys.readouterr().err
    assert main(["convert", str(src), "-o", str(tmp_path / "m.pt"), "--dequantize"]) == 0
    q = li.load(src)
    x = np.random.default_rng(0).uniform(-1, 1, (T, B, I)).astype(np.float32)
    src_ = Source(str(src), None, False)
    assert_close(_run_torch(str(tmp_path / "m.pt"), src_, x), q(x)[0], TOL, "dequantized")
