#!/usr/bin/env python
"""Regenerate the Keras file fixtures in tests/data/keras/ (seeded; needs keras 3 + torch).

    KERAS_BACKEND=torch python scripts/make_keras_fixtures.py [--out tests/data/keras]

Two kinds of fixture:

* real files written by Keras 3 (``model.save`` to ``.keras`` and to legacy
  ``.h5``);
* SYNTHETIC tf.keras 2 legacy ``.h5`` files (``tf_keras2_*.h5``), written
  here with h5py byte for byte in the layout of tf.keras 2.x
  ``save_model_to_hdf5`` / ``save_weights_to_hdf5_group`` (keras/src/legacy/
  saving/legacy_h5_format.py and tensorflow/python/keras/saving/hdf5_format.py):
  root attributes ``keras_version`` (b"2.13.1"), ``backend`` (b"tensorflow"),
  ``model_config`` (UTF-8 JSON bytes: ``{"class_name", "config"}`` without
  Keras 3's "module" keys, ``batch_input_shape``, ``time_major``,
  ``implementation``, Keras 2 ``inbound_nodes`` lists); group
  ``model_weights`` with ``layer_names`` (array of bytes), ``backend``,
  ``keras_version``; one group per layer (created in sorted name order) with
  ``weight_names`` (array of bytes; an empty float64 array for layers without
  weights) and datasets at those names, e.g.
  ``lstm/lstm_cell/kernel:0``, ``bidirectional/forward_lstm_1/lstm_cell_2/bias:0``.
  tensorflow is not installed here, so these are not produced by tf.keras
  itself. They use ``recurrent_activation="hard_sigmoid"``, which in Keras 2
  is ``clip(0.2 x + 0.5, 0, 1)``; the expected outputs come from Keras 3
  models with the same weights and that function as a custom activation.

``expected.npz`` holds, per fixture ``name``: ``x_<name>`` (the input of the
first LSTM layer, (B, T, I)), ``keras_<name>`` (what Keras returns from the
last selected LSTM layer on it: a sequence, or the last output when
return_sequences=False) and, for masked fixtures, ``lengths_<name>``
(post-padding; x is zero past each length) and ``tokens_<name>``.
``FIXTURES`` is the table tests/test_load_keras.py shares.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

# name -> (file, layer= for from_keras, what it covers)
FIXTURES = {
    "stack_v3": ("stack_v3.keras", None,
                 "Keras 3 Sequential: LSTM(8) -> Bidirectional(LSTM(5), sum) -> LSTM(4, "
                 "go_backwards, hard_sigmoid/relu) -> Dense"),
    "stack_v3_h5": ("stack_v3.h5", None, "the same model, Keras 3's legacy .h5 writer"),
    "embed_v3": ("embed_v3.keras", None,
                 "Keras 3 functional: Embedding(mask_zero) -> LSTM(6) -> Dropout -> LSTM(4, "
                 "last output) -> Dense; post-padded tokens"),
    "tf_keras2_seq": ("tf_keras2_seq.h5", None,
                      "SYNTHETIC tf.keras 2 Sequential: Masking -> LSTM(4, hard_sigmoid 0.2) "
                      "-> Bidirectional(LSTM(3, use_bias=False), concat) -> Dense"),
    "tf_keras2_fn": ("tf_keras2_fn.h5", ["lstm_a", "bidirectional"],
                     "SYNTHETIC tf.keras 2 functional: two LSTM stacks (needs layer=), "
                     "LSTM(5) -> Dropout -> Bidirectional(LSTM(3), ave, last output)"),
}
T, B = 6, 3
KERAS2_VERSION = "2.13.1"


# ---------------------------------------------------------------- synthetic tf.keras 2 writer

def write_tf_keras2_h5(path, model_config, layer_weights, keras_version=KERAS2_VERSION):
    """Write a legacy .h5 file the way tf.keras 2.x ``model.save("m.h5")`` does.

    model_config : {"class_name": ..., "config": {...}} (Keras 2 serialization)
    layer_weights : ordered {layer name: [(weight name, array), ...]} for every layer
        of ``model.layers`` (empty list for layers without weights).
    """
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = keras_version.encode("utf8")
        f.attrs["model_config"] = json.dumps(model_config).encode("utf8")
        mw = f.create_group("model_weights")
        mw.attrs["layer_names"] = np.asarray([n.encode("utf8") for n in layer_weights])
        mw.attrs["backend"] = b"tensorflow"
        mw.attrs["keras_version"] = keras_version.encode("utf8")
        for name in sorted(layer_weights):  # tf.keras sorts to keep group names growing
            g = mw.create_group(name)
            ws = layer_weights[name]
            g.attrs["weight_names"] = np.asarray([n.encode("utf8") for n, _ in ws])
            for n, v in ws:
                d = g.create_dataset(n, v.shape, dtype=v.dtype)
                d[...] = v


def _k2_lstm(name, units, *, return_sequences=True, go_backwards=False, use_bias=True,
             activation="tanh", recurrent_activation="hard_sigmoid", input_shape=None):
    cfg = {"name": name, "trainable": True, "dtype": "float32",
           "return_sequences": return_sequences, "return_state": False,
           "go_backwards": go_backwards, "stateful": False, "unroll": False,
           "time_major": False, "units": units, "activation": activation,
           "recurrent_activation": recurrent_activation, "use_bias": use_bias,
           "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
           "recurrent_initializer": {"class_name": "Orthogonal",
                                     "config": {"gain": 1.0, "seed": None}},
           "bias_initializer": {"class_name": "Zeros", "config": {}},
           "unit_forget_bias": True, "kernel_regularizer": None,
           "recurrent_regularizer": None, "bias_regularizer": None,
           "activity_regularizer": None, "kernel_constraint": None,
           "recurrent_constraint": None, "bias_constraint": None, "dropout": 0.0,
           "recurrent_dropout": 0.0, "implementation": 2}
    if input_shape is not None:
        cfg["batch_input_shape"] = [None, *input_shape]
    return {"class_name": "LSTM", "config": cfg}


def _k2_weights(prefix, ws, use_bias=True):
    names = ["kernel", "recurrent_kernel"] + (["bias"] if use_bias else [])
    assert len(ws) == len(names)
    return [(f"{prefix}/{n}:0", np.asarray(w, np.float32)) for n, w in zip(names, ws)]


# ---------------------------------------------------------------- fixtures

def main():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras
    from keras import layers as kl, ops

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests",
                                                  "data", "keras"))
    out_dir = os.path.abspath(ap.parse_args().out)
    os.makedirs(out_dir, exist_ok=True)
    expected = {}
    rng = np.random.default_rng(20240611)

    @keras.saving.register_keras_serializable(package="lstm_infer_fixtures")
    def hs02(x):  # Keras 2 hard_sigmoid, as a Keras 3 custom activation (the oracle)
        return ops.clip(0.2 * x + 0.5, 0.0, 1.0)

    def perturb(model, seed):
        # random biases (Keras initialises them to 0/1), weights ~ U(-0.6, 0.6)
        r = np.random.default_rng(seed)
        model.set_weights([r.uniform(-0.6, 0.6, w.shape).astype(np.float32)
                           for w in model.get_weights()])

    def out_of(model, layer_name, x):
        sub = keras.Model(model.inputs, model.get_layer(layer_name).output)
        return np.asarray(sub.predict(x, verbose=0))

    # 1. Keras 3 Sequential stack, .keras and legacy .h5 from the same model
    keras.utils.set_random_seed(1)
    m = keras.Sequential([
        keras.Input((T, 3)),
        kl.LSTM(8, return_sequences=True, name="enc"),  # weights group: layers/lstm
        kl.Bidirectional(kl.LSTM(5, return_sequences=True), merge_mode="sum",
                         name="bidirectional"),
        kl.LSTM(4, return_sequences=True, go_backwards=True, recurrent_activation="hard_sigmoid",
                activation="relu", name="dec"),  # weights group: layers/lstm_1
        kl.Dense(2, name="dense")])
    perturb(m, 1)
    x = rng.uniform(-3, 3, (B, T, 3)).astype(np.float32)
    last = "dec"
    m.save(os.path.join(out_dir, FIXTURES["stack_v3"][0]))
    m.save(os.path.join(out_dir, FIXTURES["stack_v3_h5"][0]))
    for name in ("stack_v3", "stack_v3_h5"):
        expected[f"x_{name}"] = x
        expected[f"keras_{name}"] = out_of(m, last, x)

    # 2. Keras 3 functional with Embedding(mask_zero) and post-padded tokens
    keras.utils.set_random_seed(2)
    inp = keras.Input((T,), dtype="int32")
    e = kl.Embedding(11, 5, mask_zero=True, name="embedding")(inp)
    a = kl.LSTM(6, return_sequences=True, name="lstm_first")(e)
    d = kl.Dropout(0.5, name="dropout")(a)
    b = kl.LSTM(4, name="lstm_last")(d)
    fm = keras.Model(inp, kl.Dense(3, name="dense")(b))
    perturb(fm, 2)
    lengths = np.array([T, 3, 1])
    tokens = rng.integers(1, 11, (B, T)).astype(np.int32)
    for i, n in enumerate(lengths):
        tokens[i, n:] = 0
    fm.save(os.path.join(out_dir, FIXTURES["embed_v3"][0]))
    emb = fm.get_layer("embedding").get_weights()[0]
    expected["x_embed_v3"] = emb[tokens]
    expected["tokens_embed_v3"] = tokens
    expected["lengths_embed_v3"] = lengths
    expected["keras_embed_v3"] = out_of(fm, "lstm_last", tokens)

    # 3. SYNTHETIC tf.keras 2 Sequential: Masking -> LSTM -> Bidirectional(no bias) -> Dense
    keras.utils.set_random_seed(3)
    oracle = keras.Sequential([
        keras.Input((T, 3)), kl.Masking(0.0),
        kl.LSTM(4, return_sequences=True, recurrent_activation=hs02),
        kl.Bidirectional(kl.LSTM(3, return_sequences=True, use_bias=False,
                                 recurrent_activation=hs02)),
        kl.Dense(2)])
    perturb(oracle, 3)
    xs = rng.uniform(-3, 3, (B, T, 3)).astype(np.float32)
    lens = np.array([T, 4, 2])
    for i, n in enumerate(lens):
        xs[i, n:] = 0.0
    l_lstm, l_bi, l_dense = oracle.layers[1], oracle.layers[2], oracle.layers[3]
    config = {"class_name": "Sequential", "config": {"name": "sequential", "layers": [
        {"class_name": "InputLayer", "config": {"batch_input_shape": [None, T, 3],
                                                "dtype": "float32", "sparse": False,
                                                "ragged": False, "name": "masking_input"}},
        {"class_name": "Masking", "config": {"name": "masking", "trainable": True,
                                             "batch_input_shape": [None, T, 3],
                                             "dtype": "float32", "mask_value": 0.0}},
        _k2_lstm("lstm", 4),
        {"class_name": "Bidirectional", "config": {
            "name": "bidirectional", "trainable": True, "dtype": "float32",
            "layer": _k2_lstm("lstm_1", 3, use_bias=False), "merge_mode": "concat"}},
        {"class_name": "Dense", "config": {"name": "dense", "trainable": True,
                                           "dtype": "float32", "units": 2,
                                           "activation": "linear", "use_bias": True}}]}}
    wb = l_bi.get_weights()
    write_tf_keras2_h5(os.path.join(out_dir, FIXTURES["tf_keras2_seq"][0]), config, {
        "masking": [],
        "lstm": _k2_weights("lstm/lstm_cell", l_lstm.get_weights()),
        "bidirectional": (_k2_weights("bidirectional/forward_lstm_1/lstm_cell_2", wb[:2], False)
                          + _k2_weights("bidirectional/backward_lstm_1/lstm_cell_3", wb[2:],
                                        False)),
        "dense": [("dense/kernel:0", l_dense.get_weights()[0]),
                  ("dense/bias:0", l_dense.get_weights()[1])]})
    expected["x_tf_keras2_seq"] = xs
    expected["lengths_tf_keras2_seq"] = lens
    expected["keras_tf_keras2_seq"] = out_of(oracle, l_bi.name, xs)

    # 4. SYNTHETIC tf.keras 2 functional with two LSTM stacks (select with layer=)
    keras.utils.set_random_seed(4)
    i1, i2 = keras.Input((T, 2)), keras.Input((T, 3))
    a = kl.LSTM(5, return_sequences=True, recurrent_activation=hs02, name="lstm_a")(i1)
    a = kl.Dropout(0.2)(a)
    a = kl.Bidirectional(kl.LSTM(3, recurrent_activation=hs02, activation="relu"),
                         merge_mode="ave", name="bidirectional")(a)
    o2 = kl.LSTM(2, name="lstm_b")(i2)
    oracle = keras.Model([i1, i2], kl.Concatenate()([a, o2]))
    perturb(oracle, 4)
    xf = rng.uniform(-3, 3, (B, T, 2)).astype(np.float32)
    x2 = rng.uniform(-3, 3, (B, T, 3)).astype(np.float32)
    sub = keras.Model(oracle.inputs, oracle.get_layer("bidirectional").output)
    expected["x_tf_keras2_fn"] = xf
    expected["keras_tf_keras2_fn"] = np.asarray(sub.predict([xf, x2], verbose=0))

    def node(*names):
        return [[[n, 0, 0, {}] for n in names]]

    def inp_cfg(name, shape):
        return {"class_name": "InputLayer", "name": name, "inbound_nodes": [],
                "config": {"batch_input_shape": [None, *shape], "dtype": "float32",
                           "sparse": False, "ragged": False, "name": name}}

    bi_lstm = _k2_lstm("lstm_1", 3, return_sequences=False, activation="relu")
    config = {"class_name": "Functional", "config": {
        "name": "model", "trainable": True,
        "layers": [
            inp_cfg("input_1", (T, 2)), inp_cfg("input_2", (T, 3)),
            dict(_k2_lstm("lstm_a", 5), name="lstm_a", inbound_nodes=node("input_1")),
            {"class_name": "Dropout", "name": "dropout", "inbound_nodes": node("lstm_a"),
             "config": {"name": "dropout", "trainable": True, "dtype": "float32",
                        "rate": 0.2, "noise_shape": None, "seed": None}},
            {"class_name": "Bidirectional", "name": "bidirectional",
             "inbound_nodes": node("dropout"),
             "config": {"name": "bidirectional", "trainable": True, "dtype": "float32",
                        "layer": bi_lstm, "merge_mode": "ave"}},
            dict(_k2_lstm("lstm_b", 2, return_sequences=False, recurrent_activation="sigmoid"),
                 name="lstm_b", inbound_nodes=node("input_2")),
            {"class_name": "Concatenate", "name": "concatenate",
             "inbound_nodes": node("bidirectional", "lstm_b"),
             "config": {"name": "concatenate", "trainable": True, "dtype": "float32",
                        "axis": -1}}],
        "input_layers": [["input_1", 0, 0], ["input_2", 0, 0]],
        "output_layers": [["concatenate", 0, 0]]}}
    wa = oracle.get_layer("lstm_a").get_weights()
    wb = oracle.get_layer("bidirectional").get_weights()
    wl = oracle.get_layer("lstm_b").get_weights()
    write_tf_keras2_h5(os.path.join(out_dir, FIXTURES["tf_keras2_fn"][0]), config, {
        "input_1": [], "input_2": [],
        "lstm_a": _k2_weights("lstm_a/lstm_cell", wa),
        "dropout": [],
        "bidirectional": (_k2_weights("bidirectional/forward_lstm_1/lstm_cell_2", wb[:3])
                          + _k2_weights("bidirectional/backward_lstm_1/lstm_cell_3", wb[3:])),
        "lstm_b": _k2_weights("lstm_b/lstm_cell_1", wl),
        "concatenate": []})

    np.savez_compressed(os.path.join(out_dir, "expected.npz"), **expected)
    for name, (fn, _, what) in FIXTURES.items():
        size = os.path.getsize(os.path.join(out_dir, fn))
        print(f"{fn:22s} {size:7d} B  {what}")


if __name__ == "__main__":
    main()
