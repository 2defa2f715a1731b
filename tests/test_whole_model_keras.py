"""Whole Keras models from .keras / .h5 files against Keras' own predict (Keras 3, torch
backend): the tagger Embedding(mask_zero=True) -> Bidirectional(LSTM) -> Dense(softmax)
on padded batches (every position compared, padded ones included), classifiers on the
last state, TimeDistributed / Activation heads, Masking on features, Sequential models;
layers a whole model does not run are refused with a message naming them."""
from __future__ import annotations

import os
import re
import sys

if "keras" not in sys.modules:  # Keras 3 reads the backend once, at import
    os.environ["KERAS_BACKEND"] = "torch"

import numpy as np
import pytest

try:
    import keras
    L = keras.layers
except ImportError:  # each test skips on its own (the core venv has no keras)
    keras = L = None

import lstm_infer as li  # noqa: E402
from conftest import TOL_FRAMEWORK, assert_close  # noqa: E402
from lstm_infer.sequence_model import WholeModelError  # noqa: E402

pytestmark = pytest.mark.filterwarnings(  # Keras 3 on numpy 2, not ours
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
TOL = TOL_FRAMEWORK["float32"]
V, E, H, C = 30, 8, 10, 5


@pytest.fixture(autouse=True)
def _need_keras():
    pytest.importorskip("torch")  # Keras 3 runs on the torch backend here
    pytest.importorskip("keras")
    pytest.importorskip("h5py")


def _ids(B=5, T=9, lengths=(9, 4, 1, 0, 7), seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, V, (B, T)).astype(np.int32)
    for b, n in enumerate(lengths):
        ids[b, n:] = 0
    return ids


def _predict(model, x):
    return np.asarray(model.predict(x, verbose=0))


def _files(model, tmp_path, name):
    paths = [tmp_path / f"{name}.keras", tmp_path / f"{name}.h5"]
    model.save(paths[0])
    model.save(paths[1])
    return paths


def _functional(body, dtype="int32", shape=(None,)):
    keras.utils.set_random_seed(0)
    inp = keras.Input(shape, dtype=dtype)
    return keras.Model(inp, body(inp))


# ----------------------------------------------------------------------------- models
def tagger(x):
    x = L.Embedding(V, E, mask_zero=True)(x)
    x = L.Bidirectional(L.LSTM(H, return_sequences=True))(x)
    return L.Dense(C, activation="softmax")(x)


def lstm_tagger(zero_output):
    def body(x):
        x = L.Embedding(V, E, mask_zero=True)(x)
        x = L.LSTM(H, return_sequences=True, zero_output_for_mask=zero_output)(x)
        x = L.TimeDistributed(L.Dense(7))(x)
        x = L.Activation("tanh")(x)
        return L.Dense(C, activation="log_softmax")(x)
    return body


def classifier(x):
    x = L.Embedding(V, E, mask_zero=True)(x)
    x = L.SpatialDropout1D(0.2)(x)
    x = L.LSTM(H, return_sequences=True)(x)
    x = L.LSTM(6)(x)
    x = L.Dropout(0.5)(x)
    x = L.Dense(4, activation="relu")(x)
    return L.Dense(1, activation="sigmoid")(x)


def bi_classifier(merge):
    def body(x):
        x = L.Embedding(V, E)(x)
        x = L.Bidirectional(L.LSTM(H, return_sequences=True), merge_mode="concat")(x)
        x = L.Bidirectional(L.LSTM(H), merge_mode=merge)(x)
        return L.Dense(C, activation="softmax")(x)
    return body


# ----------------------------------------------------------------------------- parity
def test_bidirectional_tagger_every_position(tmp_path):
    model = _functional(tagger)
    ids = _ids()
    want = _predict(model, ids)
    for path in _files(model, tmp_path, "tagger"):
        m = li.load_model(path)
        assert m.config.pad_id == 0 and m.head_on == "steps"
        assert_close(m(ids), want, TOL, path.suffix)
    assert_close(li.load_model(model)(ids), want, TOL, "keras.Model object")


@pytest.mark.parametrize("zero_output", [False, True], ids=["repeat", "zeros"])
def test_lstm_tagger_masked_outputs(tmp_path, zero_output):
    """A plain LSTM repeats its last valid output at masked steps unless
    zero_output_for_mask: both reach the head as Keras computes them."""
    model = _functional(lstm_tagger(zero_output))
    ids = _ids(seed=1)
    path = _files(model, tmp_path, "lstm_tagger")[0]
    m = li.load_model(path)
    assert m.parts[2]["masked_outputs"] == ("zero" if zero_output else "repeat_last")
    assert_close(m(ids), _predict(model, ids), TOL)


def test_classifier_on_last_state(tmp_path):
    model = _functional(classifier)
    ids = _ids(seed=2)
    want = _predict(model, ids)
    for path in _files(model, tmp_path, "classifier"):
        m = li.load_model(path)
        assert m.head_on == "last" and [d.activation for d in m.head] == ["relu", "sigmoid"]
        assert_close(m(ids), want, TOL, path.suffix)


@pytest.mark.slow
@pytest.mark.parametrize("merge", ["concat", "sum", "ave", "mul"])
def test_bidirectional_merge_on_last_state(tmp_path, merge):
    model = _functional(bi_classifier(merge))
    ids = np.random.default_rng(3).integers(0, V, (4, 8)).astype(np.int32)
    m = li.load_model(_files(model, tmp_path, "bi")[0])
    assert m.config.pad_id is None  # no mask_zero: token 0 is a token
    assert_close(m(ids), _predict(model, ids), TOL, merge)


def test_masking_on_features(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((None, 4)), L.Masking(0.0),
                              L.LSTM(H, return_sequences=True), L.Dense(3)])
    x = np.random.default_rng(4).uniform(-1, 1, (3, 6, 4)).astype(np.float32)
    x[1, 3:] = 0.0
    x[2, :] = 0.0
    m = li.load_model(_files(model, tmp_path, "masking")[0])
    assert m.config.input == "features" and m.config.mask_value == 0.0
    assert_close(m(x), _predict(model, x), TOL)


def test_sequential_classifier(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((None,), dtype="int32"),
                              L.Embedding(V, E, mask_zero=True), L.LSTM(H),
                              L.Dense(C), L.Activation("softmax")])
    ids = _ids(seed=5)
    for path in _files(model, tmp_path, "seq"):
        assert_close(li.load_model(path)(ids), _predict(model, ids), TOL, path.suffix)


@pytest.mark.slow
def test_quantized_tagger_close_to_keras(tmp_path):
    model = _functional(tagger)
    ids = _ids(seed=6)
    m = li.load_model(_files(model, tmp_path, "tagger")[0]).quantize("int8")
    err = np.max(np.abs(m(ids) - _predict(model, ids)))
    assert 0 < err < 0.02


def test_cli_run_and_inspect_tagger(tmp_path, capsys):
    from lstm_infer.cli import main

    model = _functional(tagger)
    ids = _ids(seed=7)
    path = _files(model, tmp_path, "tagger")[1]  # legacy .h5
    np.save(tmp_path / "ids.npy", ids)
    assert main(["run", str(path), "--input", str(tmp_path / "ids.npy"), "--output",
                 str(tmp_path / "y.npy")]) == 0
    assert_close(np.load(tmp_path / "y.npy"), _predict(model, ids), TOL)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"embedding \S+: 30 tokens x 8, pad_id 0", out) and "softmax" in out


# ----------------------------------------------------------------------------- refusals
def test_unsupported_layers_are_named(tmp_path):
    def pooled(x):
        x = L.Embedding(V, E)(x)
        x = L.LSTM(H, return_sequences=True)(x)
        x = L.GlobalAveragePooling1D()(x)
        return L.Dense(C)(x)

    def conv_first(x):
        x = L.Embedding(V, E)(x)
        x = L.Conv1D(E, 3, padding="same")(x)
        x = L.LSTM(H)(x)
        return L.Dense(C)(x)

    for body, name in ((pooled, "GlobalAveragePooling1D"), (conv_first, "Conv1D")):
        path = _files(_functional(body), tmp_path, name)[0]
        with pytest.raises(WholeModelError, match=name):
            li.load_model(path)
        assert isinstance(li.load(path), li.LSTM)  # the LSTM alone still loads


def test_truncated_files_raise_format_errors(tmp_path):
    """Truncated files give a FormatError. (No flipped bytes here: libhdf5 can loop for
    ever on a corrupted byte -- the README's 'Loading untrusted files' -- which the
    watchdog tests cover.)"""
    paths = _files(_functional(tagger), tmp_path, "tagger")
    rng = np.random.default_rng(13)
    for path in paths:
        data = path.read_bytes()
        bad = tmp_path / ("bad" + path.suffix)
        for _ in range(6):
            bad.write_bytes(data[:int(len(data) * rng.uniform(0.05, 0.95))])
            with pytest.raises(li.FormatError):
                li.load_model(bad)
