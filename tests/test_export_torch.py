"""Export to PyTorch: `formats.pytorch.to_state_dict` (our model as a torch.nn.LSTM state
dict) and `model.to_torch(path)` (`formats.torch_writer`: a torch.save zip written
without torch, or torch-named safetensors).

The round trips go through real torch: ``torch.load(weights_only=True)`` (and
``mmap=True``) reads the file, ``nn.LSTM.load_state_dict(strict=True)`` takes it, and its
outputs are compared with ours. The inverse property (our loader reads back the same
weights), the pickle we write and the refusals need no torch.
"""
import os
import pickletools
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import lstm_infer as li
from lstm_infer import quantize
from lstm_infer.formats._export import ExportError
from lstm_infer.formats.pytorch import from_state_dict, to_state_dict
from lstm_infer.formats.torch_writer import ALIGNMENT, dumps_state_dict, save_state_dict
from lstm_infer.tolerances import TOL_FRAMEWORK

# (input_size, hidden_size, num_layers, bidirectional, proj_size)
CONFIGS = [
    pytest.param((5, 8, 1, False, 0), id="1layer"),
    pytest.param((5, 8, 2, False, 0), id="2layers"),
    pytest.param((5, 8, 2, True, 0), id="bi-2layers"),
    pytest.param((5, 8, 2, False, 3), id="proj"),
    pytest.param((5, 8, 2, True, 3), id="bi-proj"),
    pytest.param((3, 1, 1, True, 0), id="H1"),
]
WEIGHT_ONLY = [m for m in quantize.MODES if m not in getattr(quantize, "COMPUTE_MODES",
                                                              ("int8",))]
COMPUTE = [m for m in quantize.MODES if m not in WEIGHT_ONLY]


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def _model(cfg, dtype="float32", seed=0, batch_first=False):
    I, H, L, bi, P = cfg
    return li.LSTM.random(I, H, num_layers=L, bidirectional=bi, proj_size=P, dtype=dtype,
                          seed=seed, batch_first=batch_first)


def _torch_lstm(torch, model, sd, batch_first=False):
    c = model.config
    lstm = torch.nn.LSTM(c.input_size, c.hidden_size, num_layers=c.num_layers,
                         bidirectional=c.bidirectional, proj_size=c.proj_size,
                         batch_first=batch_first,
                         dtype=torch.float64 if model.dtype == np.float64 else torch.float32)
    lstm.load_state_dict({k: v if isinstance(v, torch.Tensor) else torch.from_numpy(v)
                          for k, v in sd.items()}, strict=True)
    return lstm.eval()


def _assert_same_outputs(torch, model, lstm, tol, seed=1):
    shape = (3, 7) if model.config.batch_first else (7, 3)
    x = np.random.default_rng(seed).uniform(-1, 1, shape + (model.config.input_size,))
    x = x.astype(model.dtype if model.config.quantization is None else np.float32)
    out, (h, c) = model(x)
    with torch.inference_mode():
        t_out, (t_h, t_c) = lstm(torch.from_numpy(x))
    for name, ours, theirs in (("out", out, t_out), ("h_n", h, t_h), ("c_n", c, t_c)):
        theirs = theirs.numpy()
        assert ours.shape == theirs.shape, name
        err = float(np.max(np.abs(ours.astype(np.float64) - theirs)))
        assert err <= tol, f"{name}: max abs diff {err:.3g} > {tol:g}"


# ----------------------------------------------------------------------------- state dicts
@pytest.mark.parametrize("cfg", CONFIGS)
def test_round_trip_through_torch(torch, cfg):
    m = _model(cfg)
    sd = to_state_dict(m)
    lstm = _torch_lstm(torch, m, sd)
    # torch's own names, order and shapes
    ref = lstm.state_dict()
    assert list(sd) == list(ref)
    assert {k: v.shape for k, v in sd.items()} == {k: tuple(v.shape) for k, v in ref.items()}
    _assert_same_outputs(torch, m, lstm, TOL_FRAMEWORK["float32"])


def test_round_trip_through_torch_float64(torch):
    m = _model((5, 8, 2, True, 3), dtype="float64")
    sd = to_state_dict(m)
    assert all(v.dtype == np.float64 for v in sd.values())
    _assert_same_outputs(torch, m, _torch_lstm(torch, m, sd), TOL_FRAMEWORK["float64"])


@pytest.mark.parametrize("mode", WEIGHT_ONLY)
def test_weight_only_quantized_dequantize_exports_what_it_computes_with(torch, mode):
    m = _model((5, 8, 2, True, 0)).quantize(mode)
    with pytest.raises(ExportError, match=f"quantization='{mode}' .pass dequantize=True"):
        to_state_dict(m)
    sd = to_state_dict(m, dequantize=True)
    assert all(v.dtype == np.float32 for v in sd.values())
    _assert_same_outputs(torch, m, _torch_lstm(torch, m, sd), TOL_FRAMEWORK["float32"])


@pytest.mark.parametrize("mode", COMPUTE)
def test_compute_quantized_modes_need_dequantize(mode):
    m = _model((5, 8, 1, False, 0)).quantize(mode)
    with pytest.raises(ExportError, match="without the rounding of its activations"):
        to_state_dict(m)
    sd = to_state_dict(m, dequantize=True)  # the float weights, asked for
    want = quantize.dequantize(m.weights[0][0], mode)
    np.testing.assert_array_equal(sd["weight_hh_l0"], want["w_hh"])
    np.testing.assert_array_equal(sd["weight_ih_l0"], want["w_ih"])


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_inverse_of_the_loader(cfg, dtype):
    m = _model(cfg, dtype)
    back = from_state_dict(to_state_dict(m))
    assert back.dtype == m.dtype and back.config == m.config
    _same_weights(back, m)


def _same_weights(a, b):
    for layer_a, layer_b in zip(a.weights, b.weights):
        for da, db in zip(layer_a, layer_b):
            assert da.keys() == db.keys()
            for k in da:
                assert np.array_equal(da[k], db[k]), k


def test_bias_goes_to_bias_ih_and_arrays_are_copies():
    m = _model((5, 8, 1, False, 0))
    sd = to_state_dict(m)
    w = m.weights[0][0]
    assert np.array_equal(sd["bias_ih_l0"], w["b"]) and not sd["bias_hh_l0"].any()
    sd["weight_ih_l0"][:] = 0  # writable, and not the model's memory
    assert np.array_equal(m.weights[0][0]["w_ih"], w["w_ih"]) and w["w_ih"].any()


# ----------------------------------------------------------------------------- files
@pytest.mark.parametrize("cfg", [CONFIGS[2], CONFIGS[4]])
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_to_torch_file_loads_in_torch_and_runs_like_ours(torch, tmp_path, cfg, suffix):
    m = _model(cfg, seed=4)
    p = tmp_path / f"m{suffix}"
    m.to_torch(p)
    if suffix == ".pt":
        sd = torch.load(p, weights_only=True)
        assert type(sd).__name__ == "OrderedDict"
    else:
        st = pytest.importorskip("safetensors.torch")
        sd = st.load_file(p)
    assert list(sd) == list(to_state_dict(m)) or suffix == ".safetensors"  # st sorts names
    _assert_same_outputs(torch, m, _torch_lstm(torch, m, sd), TOL_FRAMEWORK["float32"])
    back = li.load(p)  # our reader: the same weights, bit for bit
    assert back.config == m.config and li.detect_format(p) == (
        "pytorch" if suffix == ".pt" else "pytorch-safetensors")
    _same_weights(back, m)


def test_to_torch_float64_and_mmap(torch, tmp_path):
    m = _model((5, 8, 2, True, 3), dtype="float64")
    p = tmp_path / "m.pth"
    m.to_torch(p)
    for kw in ({}, {"mmap": True}):  # mmap maps the storages in place: they are aligned
        sd = torch.load(p, weights_only=True, **kw)
        assert all(v.dtype == torch.float64 for v in sd.values())
        _assert_same_outputs(torch, m, _torch_lstm(torch, m, sd), TOL_FRAMEWORK["float64"])


def test_batch_first_module_gets_the_state_dict(torch, tmp_path):
    # the state dict is the same; batch_first belongs to the module (and li.load)
    m = _model((5, 8, 2, True, 0), batch_first=True)
    m.to_torch(tmp_path / "m.pt")
    sd = torch.load(tmp_path / "m.pt", weights_only=True)
    _assert_same_outputs(torch, m, _torch_lstm(torch, m, sd, batch_first=True),
                         TOL_FRAMEWORK["float32"])
    assert not li.load(tmp_path / "m.pt").config.batch_first
    assert li.load(tmp_path / "m.pt", batch_first=True).config == m.config


def test_zip_layout_and_alignment(tmp_path):
    m = _model((5, 8, 2, True, 3))
    p = tmp_path / "m.pt"
    m.to_torch(p)
    with zipfile.ZipFile(p) as z, open(p, "rb") as f:
        names = z.namelist()
        assert names[0] == "archive/data.pkl" and "archive/version" in names
        assert z.read("archive/byteorder") == b"little" and z.testzip() is None
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
        for info in z.infolist():
            f.seek(info.header_offset + 26)
            n, extra = np.frombuffer(f.read(4), "<u2")
            data_at = info.header_offset + 30 + int(n) + int(extra)
            assert data_at % ALIGNMENT == 0, info.filename
        sd = to_state_dict(m)
        for i, (k, v) in enumerate(sd.items()):  # one storage per tensor, in key order
            assert z.read(f"archive/data/{i}") == v.astype("<f4").tobytes(), k


def test_pickle_is_what_torch_writes_for_a_state_dict():
    pkl, arrays = dumps_state_dict({"w": np.ones((2, 3), np.float32),
                                    "d": np.zeros(4, np.float64), "s": np.float32(1.5)})
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(pkl)]
    globals_ = [arg for name, arg in ops if name == "GLOBAL"]
    want = ["collections OrderedDict"]  # the dict, then per tensor: rebuild, storage, hooks
    for storage in ("FloatStorage", "DoubleStorage", "FloatStorage"):
        want += ["torch._utils _rebuild_tensor_v2", f"torch {storage}",
                 "collections OrderedDict"]
    assert globals_ == want
    assert [a.shape for a in arrays] == [(2, 3), (4,), ()]
    assert ops[-1][0] == "STOP" and sum(1 for n, _ in ops if n == "BINPERSID") == 3


def test_pickle_with_torch_shapes_strides_and_scalars(torch, tmp_path):
    sd = {"big": np.zeros((0, 3), np.float32), "scalar": np.float64(2.5),
          "t": np.arange(12.0).reshape(3, 4).T, "ints": np.arange(5, dtype=np.int64),
          "h": np.ones((2, 2), np.float16)}
    save_state_dict(sd, tmp_path / "x.pt")
    got = torch.load(tmp_path / "x.pt", weights_only=True)
    for k, v in sd.items():
        assert tuple(got[k].shape) == np.shape(v), k
        np.testing.assert_array_equal(got[k].numpy(), v)
        assert got[k].is_contiguous()


@pytest.mark.slow  # a fresh interpreter: ~3 s
def test_writers_import_no_framework(tmp_path):
    """to_torch / to_keras / to_onnx run without importing torch, keras or tensorflow
    (onnx is the one package the ONNX writer needs, h5py the Keras one)."""
    code = (
        "import sys, importlib.util as u, lstm_infer as li\n"
        "m = li.LSTM.random(3, 4, num_layers=2, bidirectional=True)\n"
        "m.to_torch(sys.argv[1] + '/m.pt'); m.to_torch(sys.argv[1] + '/m.safetensors')\n"
        "if u.find_spec('h5py'): m.to_keras(sys.argv[1] + '/m.keras')\n"
        "if u.find_spec('onnx'): m.to_onnx(sys.argv[1] + '/m.onnx')\n"
        "bad = sorted({'torch', 'keras', 'tensorflow'} & set(sys.modules))\n"
        "assert not bad, bad\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(li.__file__))] + sys.path))
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "m.pt").exists() and (tmp_path / "m.safetensors").exists()


# ----------------------------------------------------------------------------- refusals
def _w(rng, I, H, **extra):
    w = {"w_ih": rng.uniform(-0.3, 0.3, (4 * H, I)), "w_hh": rng.uniform(-0.3, 0.3, (4 * H, H)),
         "b": rng.uniform(-0.3, 0.3, 4 * H)}
    for n in extra:
        w[n] = rng.uniform(-0.3, 0.3, H)
    return {k: v.astype(np.float32) for k, v in w.items()}


def _refused():
    rng = np.random.default_rng(0)
    one = [[_w(rng, 4, 6)]]
    bi = [[_w(rng, 4, 6), _w(rng, 4, 6)]]
    return [
        pytest.param(lambda: li.LSTM([[_w(rng, 4, 6, p_i=1, p_f=1, p_o=1)]]),
                     "layer 0: peephole connections", id="peephole"),
        pytest.param(lambda: li.LSTM(one, clip=3.0), "layer 0: clip=3", id="clip"),
        pytest.param(lambda: li.LSTM(one, cell_clip=2.5), "layer 0: cell_clip=2.5",
                     id="cell_clip"),
        pytest.param(lambda: li.LSTM(one, input_forget=True), "input_forget", id="cifg"),
        pytest.param(lambda: li.LSTM(one, activations=("hard_sigmoid", "tanh", "tanh")),
                     "activations hard_sigmoid(0.2,0.5),tanh,tanh", id="activations"),
        pytest.param(lambda: li.LSTM(bi, layer_options=[
            {"activations": [("sigmoid", "tanh", "tanh"), ("sigmoid", "relu", "relu")]}]),
            "activations sigmoid,tanh,tanh / sigmoid,relu,relu", id="per-direction-activations"),
        pytest.param(lambda: li.LSTM(one, layer_options=[{"direction": "reverse"}]),
                     "layer 0: a reverse-only direction", id="reverse-only"),
        pytest.param(lambda: li.LSTM(one, layer_options=[{"direction": "reverse",
                                                          "reverse_output": True}]),
                     "layer 0: a reverse-only direction with outputs reversed in time "
                     "(Keras go_backwards)", id="go_backwards"),
        pytest.param(lambda: li.LSTM(bi, layer_options=[{"merge": "sum"}]),
                     "layer 0: merge='sum'", id="merge"),
        pytest.param(lambda: li.LSTM([[_w(rng, 4, 6)], [_w(rng, 6, 5)]]),
                     "layers of different sizes or directions: 6, 5", id="sizes"),
        pytest.param(lambda: li.LSTM([bi[0], [_w(rng, 12, 6)]]),
                     "different sizes or directions: 6x2, 6", id="directions"),
        pytest.param(lambda: li.LSTM.random(4, 16).quantize("int8"), "quantization='int8'",
                     id="int8"),
        pytest.param(lambda: li.LSTM([[_w(rng, 4, 6, ln_i=1, ln_f=1, ln_g=1, ln_o=1)]]),
                     "layer 0: layer normalisation (TFLite's layer-norm LSTM)", id="layer_norm"),
        pytest.param(lambda: li.LSTM.random(4, 6, proj_size=2, proj_clip=0.5),
                     "layer 0: proj_clip=0.5", id="proj_clip"),
    ]


@pytest.mark.parametrize("make, message", _refused())
def test_refuses_what_torch_cannot_express(make, message, tmp_path):
    m = make()
    with pytest.raises(ExportError, match="torch.nn.LSTM cannot express this model") as e:
        to_state_dict(m)
    assert message in str(e.value)
    with pytest.raises(ValueError, match="torch.nn.LSTM cannot express") as e2:
        m.to_torch(tmp_path / "m.pt")  # the file writer refuses the same, writes nothing
    assert message in str(e2.value) and not list(tmp_path.iterdir())


def test_features_no_exporter_knows_are_refused_by_name(monkeypatch):
    """A LayerSpec field or a weight the exporters do not know (a feature the engine
    gains later) is refused, never dropped in silence."""
    import dataclasses

    from lstm_infer.formats import _export

    m = _model((5, 8, 1, False, 0))
    old = m.config.layers[0]
    spec = dataclasses.make_dataclass("Spec", [("new_option", float, None)],
                                      bases=(type(old),), frozen=True)(
        **{f.name: getattr(old, f.name) for f in dataclasses.fields(old)}, new_option=2.0)

    class Fake:
        config = dataclasses.replace(m.config, layers=(spec,))
        weights = [[dict(m.weights[0][0], w_new=np.zeros(3))]]
        dtype = m.dtype
    with pytest.raises(ExportError, match=r"layer 0: new_option=2.0 \(not exportable\); "
                                          r"layer 0: weights w_new \(not exportable\)"):
        _export.check(Fake(), "torch.nn.LSTM", supports={"projection"})


def test_refusal_lists_every_problem():
    rng = np.random.default_rng(0)
    m = li.LSTM([[_w(rng, 4, 6, p_i=1, p_f=1, p_o=1)]], clip=1.0, input_forget=True)
    with pytest.raises(ExportError) as e:
        to_state_dict(m)
    assert ("layer 0: peephole connections; layer 0: clip=1; layer 0: input_forget (CIFG)"
            in str(e.value))
    assert e.value.problems == ["layer 0: peephole connections", "layer 0: clip=1",
                                "layer 0: input_forget (CIFG)"]
