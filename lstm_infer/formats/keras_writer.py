"""Write a model as a Keras 3 ``.keras`` file, without Keras (h5py writes the weights).

``keras.saving.load_model(path)`` opens the file as a functional model ``Input ->
LSTM / Bidirectional(LSTM) -> ...`` (every layer ``return_sequences=True``) whose
output is our ``out``; `keras.from_keras` reads it back. The archive holds what Keras
3 itself writes (``model.save``), reduced to what a load needs:

    metadata.json      {"keras_version": "3.0.0", "date_saved": ..., "producer": ...}:
                       the Keras 3 format (which also tells readers, ours included,
                       that hard_sigmoid is Keras 3's relu6(x + 3) / 6)
    config.json        the functional model: an InputLayer (batch_shape (None, None, I))
                       and one layer per model layer, each with its config (units,
                       activation, recurrent_activation, go_backwards, merge_mode, dtype;
                       the other options at Keras' defaults) and its inbound node
    model.weights.h5   per layer ``layers/<name>/cell/vars/{0,1,2}`` = kernel (I, 4H),
                       recurrent_kernel (H, 4H), bias (4H,) (`keras.to_keras_weights`);
                       Bidirectional under ``forward_layer`` / ``backward_layer``; every
                       object's ``vars`` group with its ``name`` attribute

Layer names are Keras' own defaults (``lstm``, ``lstm_1``, ``bidirectional``...), the
names Keras gives the weight groups. Keras models are batch-first: a time-major model
becomes a Keras model that takes (B, T, I) (and reads back as ``batch_first=True``).
"""
from __future__ import annotations

import datetime
import io
import json
import os
import zipfile

from ._export import model_of, replacing

__all__ = ["write_keras", "keras_config"]

FORMAT_VERSION = "3.0.0"  # the first Keras with this archive layout


def _h5py():
    try:
        import h5py
    except ImportError as e:
        raise ImportError("writing .keras files needs h5py: pip install h5py (or "
                          "lstm_infer[keras])") from e
    return h5py


def _lstm(name, units, in_size, trip, go_backwards, dtype) -> dict:
    gate, cell, _ = trip  # one `activation` for cell and output (checked by the export)
    return {"module": "keras.layers", "class_name": "LSTM", "registered_name": None,
            "config": {"name": name, "trainable": True, "dtype": dtype, "units": units,
                       "activation": cell.name, "recurrent_activation": gate.name,
                       "use_bias": True, "return_sequences": True, "return_state": False,
                       "go_backwards": bool(go_backwards), "stateful": False,
                       "unroll": False, "dropout": 0.0, "recurrent_dropout": 0.0},
            "build_config": {"input_shape": [None, None, in_size]}}


def _inbound(prev, in_size, dtype) -> list:
    return [{"args": [{"class_name": "__keras_tensor__",
                       "config": {"shape": [None, None, in_size], "dtype": dtype,
                                  "keras_history": [prev, 0, 0]}}],
             "kwargs": {}}]


def _names(specs) -> list:
    """Keras' default layer names, which are also its weight-group names (snake-case
    class name, numbered from the second of a class)."""
    seen, out = {}, []
    for s in specs:
        base = "bidirectional" if s.bidirectional else "lstm"
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.append(base if n == 0 else f"{base}_{n}")
    return out


def keras_config(model) -> dict:
    """config.json of `model` (already checked by `keras.to_keras_weights`)."""
    cfg = model.config
    dtype = "float32" if cfg.quantization else cfg.dtype
    layers = [{"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
               "name": "input_layer", "inbound_nodes": [],
               "config": {"name": "input_layer", "batch_shape": [None, None, cfg.input_size],
                          "dtype": dtype, "sparse": False}}]
    prev = "input_layer"
    for name, s in zip(_names(cfg.layers), cfg.layers):
        H, I = s.hidden_size, s.input_size
        if s.bidirectional:
            entry = {"module": "keras.layers", "class_name": "Bidirectional",
                     "registered_name": None,
                     "config": {"name": name, "trainable": True, "dtype": dtype,
                                "merge_mode": s.merge,
                                "layer": _lstm(f"forward_{name}", H, I, s.activations[0],
                                               False, dtype),
                                "backward_layer": _lstm(f"backward_{name}", H, I,
                                                        s.activations[1], True, dtype)},
                     "build_config": {"input_shape": [None, None, I]}}
        else:
            entry = _lstm(name, H, I, s.activations[0], s.reverse_output, dtype)
        entry.update(name=name, inbound_nodes=_inbound(prev, I, dtype))
        layers.append(entry)
        prev = name
    return {"module": "keras.src.models.functional", "class_name": "Functional",
            "registered_name": "Functional",
            "config": {"name": "lstm_infer", "trainable": True, "layers": layers,
                       "input_layers": ["input_layer", 0, 0],
                       "output_layers": [prev, 0, 0]},
            "build_config": {"input_shape": None}, "compile_config": None}


def _weights_h5(model, weights) -> bytes:
    h5py = _h5py()
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_group("vars").attrs["name"] = "lstm_infer"
        f.create_group("layers/input_layer/vars").attrs["name"] = "input_layer"
        for name, s, ws in zip(_names(model.config.layers), model.config.layers, weights):
            g = f.create_group(f"layers/{name}")
            g.create_group("vars").attrs["name"] = name
            subs = [("forward_layer", f"forward_{name}"), ("backward_layer",
                                                           f"backward_{name}")] \
                if s.bidirectional else [(None, name)]
            for d, (sub, lname) in enumerate(subs):
                lg = g
                if sub is not None:
                    lg = g.create_group(sub)
                    lg.create_group("vars").attrs["name"] = lname
                v = lg.create_group("cell/vars")
                v.attrs["name"] = "lstm_cell"
                for i, a in enumerate(ws[3 * d:3 * d + 3]):  # kernel, recurrent, bias
                    v.create_dataset(str(i), data=a)
    return buf.getvalue()


def write_keras(model, path, *, dequantize: bool = False) -> None:
    """Write `model` (an LSTM or its `CanonicalModel`) to `path` as a Keras 3 ``.keras``
    file. Raises ExportError (a ValueError) for what a Keras LSTM stack cannot express
    (`keras.to_keras_weights`), ValueError if `path` does not end in ``.keras`` (Keras'
    load_model requires it), ImportError without h5py."""
    from .keras import to_keras_weights

    path = os.fspath(path)
    if not path.lower().endswith(".keras"):
        raise ValueError(f"a Keras 3 file must end in .keras (keras.saving.load_model "
                         f"requires it); got {path!r}")
    model = model_of(model)
    weights = to_keras_weights(model, dequantize=dequantize)
    h5 = _weights_h5(model, weights)
    from .. import __version__  # the package is imported by now (no cycle at import time)

    meta = {"keras_version": FORMAT_VERSION,
            "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
            "producer": f"lstm_infer {__version__}"}
    with replacing(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("metadata.json", json.dumps(meta))
        zf.writestr("config.json", json.dumps(keras_config(model)))
        zf.writestr("model.weights.h5", h5)
