"""A Keras LSTM stack on TensorFlow, called through tf.function (opt-in: only when
tensorflow is importable). Weights from `formats.keras.to_keras_weights`; compared on
``out`` only (h_n / c_n are not returned)."""
from __future__ import annotations

import numpy as np

from ...formats.keras import to_keras_weights
from . import PeerUnavailable, Runner, exported, import_peer


def build(model, x, threads: int) -> Runner:
    tf = import_peer("tensorflow")
    weights = exported(to_keras_weights, model, "keras")
    cfg = model.config
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError as e:  # TF fixes its pools when it first runs, once per process
        have = tf.config.threading.get_intra_op_parallelism_threads()
        if have != threads:
            raise PeerUnavailable(f"TensorFlow already runs in this process with {have or 'its default'} "
                                  f"intra-op threads and cannot change to {threads} ({e})") from None
    keras = tf.keras
    backend = getattr(getattr(keras, "backend", None), "backend", lambda: "tensorflow")()
    if backend != "tensorflow":  # Keras 3 picks one backend per process (KERAS_BACKEND)
        raise PeerUnavailable(f"Keras runs on the {backend} backend in this process "
                              f"(KERAS_BACKEND); the TensorFlow peer needs it on tensorflow")
    inp = keras.Input((None, cfg.input_size), dtype="float32")
    y, layers = inp, []
    for _ in range(cfg.num_layers):
        lyr = keras.layers.LSTM(cfg.hidden_size, return_sequences=True)
        if cfg.bidirectional:
            lyr = keras.layers.Bidirectional(lyr, merge_mode="concat")
        y = lyr(y)
        layers.append(lyr)
    net = keras.Model(inp, y)
    for lyr, ws in zip(layers, weights):
        lyr.set_weights(ws)
    order = (0, 1, 2) if cfg.batch_first else (1, 0, 2)  # Keras: (B, T, I)
    xb = tf.constant(np.ascontiguousarray(np.transpose(x, order), dtype=np.float32))
    call = tf.function(lambda t: net(t, training=False))

    def fn():
        return np.transpose(call(xb).numpy(), order), None, None
    return Runner("tensorflow", tf.__version__, fn)
