"""Keras files and models: parity with Keras, layer selection, masking, bad files.

Three groups:
- committed fixtures (tests/data/keras, made by scripts/make_keras_fixtures.py:
  real Keras 3 .keras / .h5 files and SYNTHETIC tf.keras 2 legacy .h5 files
  written with h5py in tf.keras' layout) against the outputs Keras computed:
  run without keras;
- live models built here with Keras 3 (torch backend), saved to .keras and
  legacy .h5 and also passed as objects, compared with Keras' own predict
  (skipped without keras);
- broken and unsupported files, made here from the fixtures: always a
  ValueError (KerasFileError for damaged files) that says what is wrong.

Reading a weights file needs h5py: those tests skip one by one without it
(needs_h5py); the archive-level, sniffing and mask tests need nothing.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import zipfile

if "keras" not in sys.modules:  # Keras 3 reads the backend once, at import
    os.environ["KERAS_BACKEND"] = "torch"

import numpy as np
import pytest

import lstm_infer as li
from conftest import TOL_FRAMEWORK, assert_close
from lstm_infer.formats.keras import (KerasFileError, from_keras, is_keras_file,
                                      keras_layers_summary, lengths_from_mask)

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data", "keras")
sys.path.insert(0, os.path.join(HERE, "..", "scripts"))
from make_keras_fixtures import FIXTURES  # noqa: E402

try:
    import h5py
except ImportError:
    h5py = None

pytestmark = pytest.mark.filterwarnings(  # Keras 3 on numpy 2, not ours
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
TOL = TOL_FRAMEWORK["float32"]
T = 7


@pytest.fixture
def need_h5py():
    pytest.importorskip("h5py")


needs_h5py = pytest.mark.usefixtures("need_h5py")


def _fixture(name):
    return os.path.join(DATA, FIXTURES[name][0])


@pytest.fixture(scope="module")
def expected():
    with np.load(os.path.join(DATA, "expected.npz")) as z:
        return dict(z)


# ----------------------------------------------------------------------------- what Keras returns
def _merge(a, b, mode):
    return {"concat": lambda: np.concatenate([a, b], -1), "sum": lambda: a + b,
            "mul": lambda: a * b, "ave": lambda: (a + b) / 2}[mode]()


def keras_last(m, h_n):
    """Keras' return_sequences=False output of the last layer (module docstring)."""
    spec = m.config.layers[-1]
    last = h_n[-1] if isinstance(h_n, list) else h_n[-spec.num_directions:]
    if spec.bidirectional:
        return _merge(last[0], last[1], spec.merge)
    return last[-1]


def keras_padded(out, lengths, mode):
    """Our out with Keras' values at padded steps: 'zero', 'carry' (LSTM with the default
    zero_output_for_mask=False) or 'shift' (go_backwards: right-aligned)."""
    out = out.copy()
    T_ = out.shape[1]
    for b, n in enumerate(lengths):
        if mode == "carry" and 0 < n < T_:
            out[b, n:] = out[b, n - 1]
        elif mode == "shift":
            out[b] = np.roll(out[b], T_ - n, axis=0)
    return out


# ============================================================================ committed fixtures
@needs_h5py
@pytest.mark.parametrize("name", list(FIXTURES), ids=list(FIXTURES))
def test_fixture_matches_keras(name, expected):
    _, layer, _ = FIXTURES[name]
    m = from_keras(_fixture(name), layer=layer)
    assert m.config.batch_first and m.dtype == np.float32
    x, want = expected[f"x_{name}"], expected[f"keras_{name}"]
    lengths = expected.get(f"lengths_{name}")
    out, (h, c) = m(x, lengths=lengths)
    if want.ndim == 3:  # return_sequences=True; Bidirectional / zero padding in these fixtures
        assert_close(out, want, TOL, name, scale_with_magnitude=True)
    else:
        assert_close(keras_last(m, h), want, TOL, name)


@needs_h5py
def test_fixture_hard_sigmoid_follows_keras_version():
    k3 = from_keras(_fixture("stack_v3")).config.layers[-1].activations[0]
    assert (k3[0].name, k3[0].alpha, k3[0].beta) == ("hard_sigmoid", pytest.approx(1 / 6), 0.5)
    assert k3[1].name == k3[2].name == "relu"
    k2 = from_keras(_fixture("tf_keras2_seq")).config.layers[0].activations[0][0]
    assert (k2.name, k2.alpha, k2.beta) == ("hard_sigmoid", 0.2, 0.5)


@needs_h5py
def test_fixture_options_and_top_level_api(expected):
    m = li.load(_fixture("stack_v3"))
    l0, l1, l2 = m.config.layers
    assert (l0.hidden_size, l1.hidden_size, l2.hidden_size) == (8, 5, 4)
    assert l1.bidirectional and l1.merge == "sum" and l1.out_features == 5
    assert l2.direction == "reverse" and l2.reverse_output
    m2 = li.from_keras(_fixture("stack_v3_h5"))
    x = expected["x_stack_v3"]
    np.testing.assert_array_equal(m(x)[0], m2(x)[0])


@needs_h5py
def test_fixture_embedding_model_lengths_from_tokens(expected):
    tokens = expected["tokens_embed_v3"]
    np.testing.assert_array_equal(lengths_from_mask(tokens, 0), expected["lengths_embed_v3"])
    summary = keras_layers_summary(_fixture("embed_v3"))
    classes = {e["name"]: e["class_name"] for e in summary}
    for cls in ("InputLayer", "Embedding", "LSTM", "Dropout", "Dense"):
        assert cls in classes.values(), summary
    assert [e["name"] for e in summary if e["lstm"]] == ["lstm_first", "lstm_last"]
    emb = next(e for e in summary if e["class_name"] == "Embedding")
    assert emb["mask_zero"] is True and emb["output_dim"] == 5
    assert next(e for e in summary if e["name"] == "lstm_last")["inputs"] == ["dropout"]


@needs_h5py
def test_fixture_two_stacks_need_layer(expected):
    path = _fixture("tf_keras2_fn")
    with pytest.raises(ValueError, match=r"2 separate LSTM stacks.*lstm_a.*bidirectional.*lstm_b"):
        from_keras(path)
    single = from_keras(path, layer="lstm_b")
    assert single.config.input_size == 3 and single.config.hidden_size == 2
    assert from_keras(path, layer="lstm_a").config.num_layers == 1
    with pytest.raises(ValueError, match="not consecutive"):
        from_keras(path, layer=["lstm_a", "lstm_b"])
    with pytest.raises(ValueError, match="is a Dropout, not an LSTM"):
        from_keras(path, layer="dropout")
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        from_keras(path, layer="nope")
    s = {e["name"]: e for e in keras_layers_summary(path)}
    assert s["bidirectional"]["inner"] == "LSTM" and s["bidirectional"]["merge_mode"] == "ave"
    assert s["concatenate"]["inputs"] == ["bidirectional", "lstm_b"]


@needs_h5py
def test_fixture_masking_summary_and_time_major(expected, tmp_path):
    s = keras_layers_summary(_fixture("tf_keras2_seq"))
    assert [(e["class_name"], e.get("mask_value")) for e in s][:2] == [
        ("InputLayer", None), ("Masking", 0.0)]
    # tf.keras time_major=True layers -> batch_first=False
    path = tmp_path / "tm.h5"
    shutil.copy(_fixture("tf_keras2_seq"), path)
    with h5py.File(path, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        cfg["config"]["layers"][2]["config"]["time_major"] = True
        cfg["config"]["layers"][3]["config"]["layer"]["config"]["time_major"] = True
        f.attrs["model_config"] = json.dumps(cfg).encode()
    m = from_keras(path)
    assert not m.config.batch_first
    x = expected["x_tf_keras2_seq"]
    ref, _ = from_keras(_fixture("tf_keras2_seq"))(x)
    assert_close(m(x.transpose(1, 0, 2))[0].transpose(1, 0, 2), ref, 1e-7, "time_major")


def test_is_keras_file(tmp_path):
    """.keras archives are sniffed from the zip alone: no h5py needed."""
    for name, (fn, _, _) in FIXTURES.items():
        if fn.endswith(".keras"):
            assert is_keras_file(_fixture(name)), name
    data = open(_fixture("stack_v3"), "rb").read()
    (tmp_path / "cut.keras").write_bytes(data[:200])
    assert is_keras_file(tmp_path / "cut.keras")  # goes to the loader, which reports it
    torch_dir = os.path.join(HERE, "data", "torch")
    for fn in sorted(os.listdir(torch_dir)) if os.path.isdir(torch_dir) else []:
        assert not is_keras_file(os.path.join(torch_dir, fn)), fn
    (tmp_path / "junk.bin").write_bytes(b"\x00" * 100)
    assert not is_keras_file(tmp_path / "junk.bin")
    assert not is_keras_file(tmp_path / "missing.keras")


@needs_h5py
def test_is_keras_file_h5(tmp_path):
    for name, (fn, _, _) in FIXTURES.items():
        assert is_keras_file(_fixture(name)), name
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    # every HDF5 file is the Keras loader's (detect_format's one rule, no h5py in the
    # sniffer): it says what the file lacks
    assert is_keras_file(tmp_path / "other.h5")
    with pytest.raises(KerasFileError, match="no model_config attribute: not a Keras model"):
        li.load(tmp_path / "other.h5")


def test_lengths_from_mask():
    x = np.ones((3, 4, 2))
    x[1, 2:] = -1.0
    x[2, :] = -1.0
    x[0, 3, 0] = -1.0  # one feature equal to mask_value: not masked
    np.testing.assert_array_equal(lengths_from_mask(x, -1.0), [4, 2, 0])
    x[1, 3] = 5.0  # a valid step after a masked one
    with pytest.raises(ValueError, match="sequence 1 has a masked step at t=2"):
        lengths_from_mask(x, -1.0)
    with pytest.raises(ValueError, match="not post-padding"):
        lengths_from_mask(np.array([[0, 3, 4]]), 0)  # pre-padding
    with pytest.raises(ValueError, match=r"\(B, T, F\)"):
        lengths_from_mask(np.zeros(3))


# ============================================================================ broken files
def _rewrite_archive(src, dst, *, config=None, drop=(), weights_edit=None):
    """Copy a .keras archive, changing config.json / dropping members / editing weights."""
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    if config is not None:
        members["config.json"] = json.dumps(config).encode()
    if weights_edit is not None:
        tmp = str(dst) + ".weights.h5"
        with open(tmp, "wb") as f:
            f.write(members["model.weights.h5"])
        with h5py.File(tmp, "r+") as f:
            weights_edit(f)
        members["model.weights.h5"] = open(tmp, "rb").read()
        os.remove(tmp)
    with zipfile.ZipFile(dst, "w") as z:
        for n, data in members.items():
            if n not in drop:
                z.writestr(n, data)
    return dst


def _config(name="stack_v3"):
    with zipfile.ZipFile(_fixture(name)) as z:
        return json.loads(z.read("config.json"))


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.97], ids=["10%", "50%", "97%"])
def test_truncated_archive(tmp_path, cut):
    data = open(_fixture("stack_v3"), "rb").read()
    p = tmp_path / "cut.keras"
    p.write_bytes(data[:int(len(data) * cut)])
    with pytest.raises(KerasFileError, match="truncated or corrupted"):
        from_keras(p)


def test_corrupted_weights_member(tmp_path):
    data = bytearray(open(_fixture("stack_v3"), "rb").read())
    with zipfile.ZipFile(_fixture("stack_v3")) as z:
        info = z.getinfo("model.weights.h5")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + info.compress_size // 2] ^= 0xFF
    p = tmp_path / "bad.keras"
    p.write_bytes(bytes(data))
    with pytest.raises(KerasFileError, match="corrupted"):
        from_keras(p)


@needs_h5py
def test_truncated_h5(tmp_path):
    data = open(_fixture("tf_keras2_seq"), "rb").read()
    p = tmp_path / "cut.h5"
    p.write_bytes(data[:len(data) // 2])
    with pytest.raises(KerasFileError, match="truncated or corrupted"):
        from_keras(p)


def test_archive_without_weights(tmp_path):
    p = _rewrite_archive(_fixture("stack_v3"), tmp_path / "nw.keras", drop=("model.weights.h5",))
    with pytest.raises(KerasFileError, match="no model.weights.h5"):
        from_keras(p)


@needs_h5py
def test_archive_missing_layer_weights(tmp_path):
    def edit(f):
        del f["layers/bidirectional/backward_layer"]
    p = _rewrite_archive(_fixture("stack_v3"), tmp_path / "mw.keras", weights_edit=edit)
    with pytest.raises(KerasFileError, match="bidirectional.*backward_layer"):
        from_keras(p)


@needs_h5py
def test_archive_wrong_weight_shape(tmp_path):
    def edit(f):
        v = f["layers/lstm/cell/vars"]
        del v["1"]
        v["1"] = np.zeros((8, 28), np.float32)
    p = _rewrite_archive(_fixture("stack_v3"), tmp_path / "ws.keras", weights_edit=edit)
    with pytest.raises(KerasFileError, match=r"recurrent_kernel must have shape .* = \(8, 32\); "
                                             r"got \(8, 28\)"):
        from_keras(p)


@needs_h5py
def test_config_disagrees_with_weights(tmp_path):
    cfg = _config()
    cfg["config"]["layers"][1]["config"]["units"] = 6
    p = _rewrite_archive(_fixture("stack_v3"), tmp_path / "units.keras", config=cfg)
    with pytest.raises(KerasFileError, match=r"kernel must have shape \(input, 4\*units\) = "
                                             r"\(3, 24\); got \(3, 32\)"):
        from_keras(p)


@needs_h5py
def test_input_size_disagrees_with_weights(tmp_path):
    cfg = _config()
    cfg["config"]["layers"][1]["build_config"]["input_shape"] = [None, 6, 2]
    p = _rewrite_archive(_fixture("stack_v3"), tmp_path / "in.keras", config=cfg)
    with pytest.raises(KerasFileError, match=r"layer 'enc': kernel must have shape .* = "
                                             r"\(2, 32\); got \(3, 32\)"):
        from_keras(p)


@needs_h5py
def test_legacy_missing_dataset(tmp_path):
    p = tmp_path / "md.h5"
    shutil.copy(_fixture("tf_keras2_seq"), p)
    with h5py.File(p, "r+") as f:
        del f["model_weights/lstm/lstm/lstm_cell/bias:0"]
    with pytest.raises(KerasFileError, match="'lstm/lstm_cell/bias:0' listed in weight_names "
                                             "is missing"):
        from_keras(p)


@needs_h5py
def test_weights_only_and_keras1_files(tmp_path):
    with zipfile.ZipFile(_fixture("stack_v3")) as z:  # what Keras 3 save_weights writes
        (tmp_path / "m.weights.h5").write_bytes(z.read("model.weights.h5"))
    assert is_keras_file(tmp_path / "m.weights.h5")
    with pytest.raises(KerasFileError, match="Keras 3 weights-only file"):
        from_keras(tmp_path / "m.weights.h5")
    p = tmp_path / "w.h5"
    shutil.copy(_fixture("tf_keras2_seq"), p)
    with h5py.File(p, "r+") as f:
        del f.attrs["model_config"]
    with pytest.raises(KerasFileError, match="no model_config"):
        from_keras(p)
    shutil.copy(_fixture("tf_keras2_seq"), p)
    with h5py.File(p, "r+") as f:
        del f.attrs["keras_version"]
        del f["model_weights"].attrs["keras_version"]
    with pytest.raises(KerasFileError, match="Keras 1"):
        from_keras(p)


@needs_h5py
@pytest.mark.parametrize("activation", ["softsign", "elu"])
def test_unsupported_activation_is_refused(tmp_path, activation):
    cfg = _config()
    cfg["config"]["layers"][1]["config"]["activation"] = activation
    p = _rewrite_archive(_fixture("stack_v3"), tmp_path / "act.keras", config=cfg)
    with pytest.raises(ValueError, match=f"layer 'enc': unsupported activation '{activation}'"):
        from_keras(p)


@needs_h5py
def test_custom_activation_is_refused(tmp_path):
    cfg = _config()
    cfg["config"]["layers"][1]["config"]["recurrent_activation"] = {
        "module": "builtins", "class_name": "function", "config": "sigmoid",
        "registered_name": "my>sigmoid"}
    p = _rewrite_archive(_fixture("stack_v3"), tmp_path / "custom.keras", config=cfg)
    with pytest.raises(ValueError, match="custom recurrent_activation 'sigmoid'"):
        from_keras(p)


@needs_h5py
def test_hard_sigmoid_without_version_is_refused(tmp_path):
    p = _rewrite_archive(_fixture("stack_v3"), tmp_path / "nov.keras", drop=("metadata.json",))
    with pytest.raises(ValueError, match="does not record its keras_version"):
        from_keras(p)


def test_not_a_keras_file(tmp_path):
    p = tmp_path / "junk.keras"
    p.write_bytes(b"hello world")
    with pytest.raises(KerasFileError, match="neither"):
        from_keras(p)
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("a.txt", "x")
    with pytest.raises(KerasFileError, match="without config.json"):
        from_keras(tmp_path / "other.zip")
    with pytest.raises(FileNotFoundError):
        from_keras(tmp_path / "missing.keras")
    with pytest.raises(TypeError, match="keras.Model or a path"):
        from_keras(42)


@needs_h5py
def test_merge_mode_none_only_last(tmp_path):
    cfg = _config()
    cfg["config"]["layers"][2]["config"]["merge_mode"] = None  # feeds the next LSTM
    p = _rewrite_archive(_fixture("stack_v3"), tmp_path / "mm.keras", config=cfg)
    with pytest.raises(ValueError, match="separate LSTM stacks"):  # the chain breaks there
        from_keras(p)
    with pytest.raises(ValueError, match="merge_mode=None .* only be the last layer"):
        from_keras(p, layer=["enc", "bidirectional", "dec"])
    m = from_keras(p, layer=["enc", "bidirectional"])
    assert m.config.layers[-1].merge == "concat" and m.config.output_size == 10


# ============================================================================ live Keras models
try:
    import keras
    from keras import layers as kl
except Exception:  # noqa: BLE001 - keras missing, or a backend that is not installed
    keras = None



def _need_keras():
    pytest.importorskip("torch")  # Keras 3 runs on the torch backend here
    pytest.importorskip("keras")
    pytest.importorskip("h5py")
    if keras is None:
        pytest.skip("could not import 'keras' on the torch backend")


@pytest.fixture
def need_keras():
    _need_keras()


needs_keras = pytest.mark.usefixtures("need_keras")


def _seq(I, *layers):
    return keras.Sequential([keras.Input((T, I)), *layers])


def _live_cases():
    """name -> (builder, input size, sequences returned?, relu/linear present?); Keras is
    imported by the builders only, so the names are known without it."""
    def L(*args, **kw):
        return kl.LSTM(*args, **kw)

    return {
        "lstm": (lambda: _seq(4, L(6, return_sequences=True)), 4, False),
        "lstm_last": (lambda: _seq(4, L(6)), 4, False),
        "stacked": (lambda: _seq(4, L(8, return_sequences=True), L(5, return_sequences=True),
                                 L(3)), 4, False),
        **{f"bi_{mode}": (lambda mode=mode: _seq(3, kl.Bidirectional(
            L(4, return_sequences=True), merge_mode=mode)), 3, False)
           for mode in ("concat", "sum", "mul", "ave")},
        "bi_none": (lambda: _seq(3, kl.Bidirectional(L(4, return_sequences=True),
                                                     merge_mode=None)), 3, False),
        "bi_last_stacked": (lambda: _seq(3, kl.Bidirectional(L(5, return_sequences=True)),
                                         kl.Bidirectional(L(3), merge_mode="sum")), 3, False),
        "go_backwards": (lambda: _seq(4, L(5, return_sequences=True, go_backwards=True),
                                      L(3, return_sequences=True)), 4, False),
        "go_backwards_last": (lambda: _seq(4, L(5, go_backwards=True)), 4, False),
        "no_bias": (lambda: _seq(4, L(5, return_sequences=True, use_bias=False),
                                 kl.Bidirectional(L(3, return_sequences=True, use_bias=False))),
                    4, False),
        "hard_sigmoid_relu": (lambda: _seq(4, L(5, return_sequences=True, activation="relu",
                                                recurrent_activation="hard_sigmoid"),
                                           L(4, return_sequences=True, activation="linear")),
                              4, True),
        "backward_layer": (lambda: _seq(3, kl.Bidirectional(
            L(4, return_sequences=True),
            backward_layer=L(4, return_sequences=True, go_backwards=True, activation="relu",
                             recurrent_activation="hard_sigmoid"))), 3, True),
        "dropout_between": (lambda: _seq(4, L(6, return_sequences=True, dropout=0.3),
                                         kl.Dropout(0.5), kl.GaussianNoise(1.0),
                                         L(3, return_sequences=True, recurrent_dropout=0.2)),
                            4, False),
    }


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """Every live case once: the model, an input, Keras' output, and its two files."""
    _need_keras()
    d = tmp_path_factory.mktemp("keras_live")
    rng = np.random.default_rng(7)
    cases = {}
    for k, (name, (build, I, scaled)) in enumerate(_live_cases().items()):
        keras.utils.set_random_seed(k)
        model = build()
        r = np.random.default_rng(100 + k)  # biases too (Keras starts them at 0 / 1)
        model.set_weights([r.uniform(-0.6, 0.6, w.shape).astype(np.float32)
                           for w in model.get_weights()])
        x = rng.uniform(-3, 3, (3, T, I)).astype(np.float32)
        want = model.predict(x, verbose=0)
        model.save(d / f"{name}.keras")
        model.save(d / f"{name}.h5")
        cases[name] = dict(model=model, x=x, want=want, scaled=scaled,
                           keras=d / f"{name}.keras", h5=d / f"{name}.h5")
    return cases


def _source(case, kind):
    return case["model"] if kind == "object" else case[kind]


@needs_keras
@pytest.mark.parametrize("kind", ["keras", "h5", "object"])
@pytest.mark.parametrize("name", list(_live_cases()))
def test_live_matches_keras(live, name, kind):
    case = live[name]
    m = from_keras(_source(case, kind))
    out, (h, _) = m(case["x"])
    want = case["want"]
    what = f"{name} from {kind}"
    if isinstance(want, (list, tuple)):  # merge_mode=None: [forward, backward]
        H = m.config.layers[-1].hidden_size
        assert_close(out[..., :H], np.asarray(want[0]), TOL, what + " forward")
        assert_close(out[..., H:], np.asarray(want[1]), TOL, what + " backward")
    elif want.ndim == 3:
        assert_close(out, want, TOL, what, scale_with_magnitude=case["scaled"])
    else:
        assert_close(keras_last(m, h), want, TOL, what, scale_with_magnitude=case["scaled"])
        if not m.config.layers[-1].bidirectional:  # documented: out[:, -1] too
            assert_close(out[:, -1], want, TOL, what + " out[:, -1]")


@needs_keras
def test_live_sources_agree_and_hard_sigmoid_is_keras3(live):
    case = live["hard_sigmoid_relu"]
    ms = [from_keras(_source(case, k)) for k in ("keras", "h5", "object")]
    for m in ms[1:]:
        np.testing.assert_array_equal(m(case["x"])[0], ms[0](case["x"])[0])
        assert m.config == ms[0].config
    gate = ms[0].config.layers[0].activations[0][0]
    assert gate.name == "hard_sigmoid" and gate.alpha == pytest.approx(1 / 6)


@pytest.fixture(scope="module")
def masked(live):
    """Masking -> layer, post-padded input (lengths 7, 4, 1, 0)."""
    L = kl.LSTM
    layers = {
        "carry": L(5, return_sequences=True),
        "zero": L(5, return_sequences=True, zero_output_for_mask=True),
        "shift": L(5, return_sequences=True, go_backwards=True),
        "bi": kl.Bidirectional(L(4, return_sequences=True), merge_mode="mul"),
        "last": L(5),
        "bi_last": kl.Bidirectional(L(4)),
        "back_last": L(5, go_backwards=True),
        "stack": [L(6, return_sequences=True), L(3, return_sequences=True,
                                                 zero_output_for_mask=True)],
    }
    rng = np.random.default_rng(3)
    x = rng.uniform(-3, 3, (4, T, 3)).astype(np.float32)
    lengths = np.array([T, 4, 1, 0])
    for b, n in enumerate(lengths):
        x[b, n:] = -1.0
    out = {}
    for k, (name, layer) in enumerate(layers.items()):
        keras.utils.set_random_seed(50 + k)
        model = _seq(3, kl.Masking(-1.0), *(layer if isinstance(layer, list) else [layer]))
        r = np.random.default_rng(200 + k)
        model.set_weights([r.uniform(-0.6, 0.6, w.shape).astype(np.float32)
                           for w in model.get_weights()])
        out[name] = (model, model.predict(x, verbose=0))
    return x, lengths, out


@needs_keras
@pytest.mark.parametrize("name,padding", [("carry", "carry"), ("zero", "zero"),
                                          ("shift", "shift"), ("bi", "zero"),
                                          ("stack", "zero")])
def test_masking_sequences(masked, name, padding):
    """Valid steps equal Keras; padded steps follow the documented rule."""
    x, lengths, results = masked
    model, want = results[name]
    assert list(lengths_from_mask(x, -1.0)) == list(lengths)
    m = from_keras(model)
    out, _ = m(x, lengths=lengths)
    for b, n in enumerate(lengths):
        assert not out[b, n:].any()  # ours: zeros past each length
    assert_close(keras_padded(out, lengths, padding), want, TOL, name)


@needs_keras
@pytest.mark.parametrize("name", ["last", "bi_last", "back_last"])
def test_masking_final_state(masked, name):
    x, lengths, results = masked
    model, want = results[name]
    m = from_keras(model)
    _, (h, _) = m(x, lengths=lengths)
    assert_close(keras_last(m, h), want, TOL, name)


@needs_keras
def test_live_embedding_lstm_dense(tmp_path):
    keras.utils.set_random_seed(11)
    inp = keras.Input((T,), dtype="int32")
    e = kl.Embedding(13, 4, mask_zero=True, name="emb")(inp)
    s = kl.LSTM(5, return_sequences=True, name="enc")(e)
    s = kl.Bidirectional(kl.LSTM(3), merge_mode="concat", name="bi")(s)
    model = keras.Model(inp, kl.Dense(2, name="head")(s))
    tokens = np.random.default_rng(0).integers(1, 13, (3, T)).astype(np.int32)
    tokens[1, 5:] = 0
    tokens[2, 2:] = 0
    model.save(tmp_path / "e.keras")
    model.save(tmp_path / "e.h5")
    want = np.asarray(keras.Model(inp, model.get_layer("bi").output).predict(tokens, verbose=0))
    emb = model.get_layer("emb").get_weights()[0]
    lengths = lengths_from_mask(tokens, 0)
    np.testing.assert_array_equal(lengths, [T, 5, 2])
    for src in (tmp_path / "e.keras", tmp_path / "e.h5", model):
        m = from_keras(src)
        assert [l.hidden_size for l in m.config.layers] == [5, 3] and m.config.input_size == 4
        _, (h, _) = m(emb[tokens], lengths=lengths)
        assert_close(keras_last(m, h), want, TOL, f"embedding model from {type(src).__name__}")
    names = [(e["name"], e["class_name"], e["lstm"])
             for e in keras_layers_summary(tmp_path / "e.h5")]
    for entry in [("emb", "Embedding", False), ("enc", "LSTM", True),
                  ("bi", "Bidirectional", True), ("head", "Dense", False)]:
        assert entry in names
    assert keras_layers_summary(model) == keras_layers_summary(tmp_path / "e.keras")


@needs_keras
def test_live_model_without_lstm_and_gru(tmp_path):
    model = _seq(3, kl.GRU(4, return_sequences=True), kl.Bidirectional(kl.GRU(2)), kl.Dense(1))
    model.save(tmp_path / "g.keras")
    with pytest.raises(ValueError, match=r"no LSTM or Bidirectional\(LSTM\) layer.*'GRU'"):
        from_keras(tmp_path / "g.keras")
    with pytest.raises(ValueError, match=r"is a Bidirectional\(GRU\), not an LSTM"):
        from_keras(model, layer=model.layers[1].name)


@needs_h5py
@pytest.mark.parametrize("name", ["stack_v3", "stack_v3_h5", "tf_keras2_seq"])
def test_damaged_files_raise_value_errors(tmp_path, name):
    """Truncations and byte flips anywhere: a ValueError naming the file, or (when only
    weight values were hit; HDF5 has no checksums) a model — never another exception."""
    data = open(_fixture(name), "rb").read()
    rng = np.random.default_rng(len(data))
    p = tmp_path / ("f" + os.path.splitext(_fixture(name))[1])
    for i in range(40):
        b = bytearray(data)
        if i % 2:
            b = b[:int(rng.integers(1, len(b)))]
        else:
            for pos in rng.integers(0, len(b), 4):
                b[pos] ^= int(rng.integers(1, 256))
        p.write_bytes(bytes(b))
        try:
            from_keras(p)
        except ValueError as e:
            assert str(p) in str(e), e
