"""Keras whole models: Embedding / Masking -> the LSTM stack -> Dense head, from the
architecture a ``.keras`` / ``.h5`` file (or a ``keras.Model``) records.

Reuses the Keras reader (`lstm_infer.formats.keras`): its parsed model (`_open_path`,
`_Model`), its stack finder (`_chains`, `_producer`) and its LSTM conversion
(`_convert`); this module only reads the layers around the stack.

What is read
------------
* before the stack (following the first LSTM's input back, through layers that are the
  identity at inference: Dropout, SpatialDropout1D, GaussianNoise...): nothing (the
  input is features), ``Masking(mask_value)`` on features, or ``Embedding`` on the
  model's input. ``mask_zero=True`` makes token 0 padding: lengths are computed from
  trailing zeros (a zero before a non-zero token raises: lengths cannot express it).
* after the stack (following the one layer that reads the last LSTM's output, to the
  end): ``Dense`` and ``TimeDistributed(Dense)`` (activations linear, relu, sigmoid,
  tanh, softmax, log_softmax; ``use_bias=False``), ``Activation`` after a Dense whose
  own activation is linear, and identity layers. With ``return_sequences=True`` the head
  runs on every step ("steps"), else on the last output Keras returns ("last": the
  state, both directions of a Bidirectional merged by its merge_mode).
* masked steps of a "steps" head: a Bidirectional last layer (Keras forces
  ``zero_output_for_mask``) and ``zero_output_for_mask=True`` give zeros to the head,
  an LSTM with the default ``zero_output_for_mask=False`` repeats its last valid
  output; both are reproduced (``masked_outputs``), so every position matches Keras.

Anything else on the path (Conv1D, Flatten, pooling, Attention, a branch, a layer
reading the LSTM's states) raises `WholeModelError` naming the layer; ``li.load`` still
loads the LSTM stack alone. A masked go_backwards last layer under a "steps" head is
refused (Keras right-aligns its outputs; see `lstm_infer.formats.keras`).
"""
from __future__ import annotations

import os
import re

import numpy as np

from . import keras as K
from .errors import guard
from .keras import KerasFileError
from .whole_common import WholeModelData, WholeModelError, check_activation, float_matrix

__all__ = ["read", "KerasFileError"]

_DENSE_WRAPPERS = ("TimeDistributed",)
_REFUSED_POLICIES = ("int8", "int4", "float8", "gptq")


class _Error(WholeModelError, KerasFileError):
    """Parts of a Keras model this module cannot run (both a WholeModelError and a
    KerasFileError)."""


def read(obj) -> WholeModelData:
    """The whole model in a Keras file (path) or ``keras.Model``, as data."""
    if isinstance(obj, (str, os.PathLike)):
        path = os.fspath(obj)
        with guard(KerasFileError, path):
            model = K._open_path(path)
            try:
                return _read(model)
            finally:
                model.close()
    model = K._open(obj)
    try:
        return _read(model)
    finally:
        model.close()


def _read(model) -> WholeModelData:
    src = model.source
    chain = K._select(model, None)  # the one LSTM stack, or an error naming them
    lstm = K._convert(model, chain)
    embedding, mask_value, names = _before(model, chain[0])
    head, head_on, masked = _after(model, chain, masked=embedding is not None and
                                   embedding["pad_id"] is not None or mask_value is not None)
    if (embedding is not None or head) and not lstm.options.get("batch_first", True):
        raise _Error(f"{src}: time_major LSTM layers inside a whole model are not supported "
                     f"(Keras feeds them batch-major data)")
    names["lstm"] = ", ".join(l.name for l in chain)
    return WholeModelData(lstm, embedding=embedding, head=head, head_on=head_on,
                          masked_outputs=masked, mask_value=mask_value, source=src,
                          names=names)


# ---------------------------------------------------------------------- before the stack
def _before(model, first):
    src = model.source
    embedding = mask_value = None
    names = {}
    p = K._producer(model, first)
    while p is not None and p.class_name != "InputLayer":
        where = f"{src}: layer {p.name!r}"
        if p.class_name == "Embedding" and embedding is None and mask_value is None:
            embedding = _embedding(model, p, where)
            names["embedding"] = p.name
        elif p.class_name == "Masking" and embedding is None and mask_value is None:
            mv = p.config.get("mask_value", 0.0)
            if isinstance(mv, bool) or not isinstance(mv, (int, float)):
                raise _Error(f"{where}: Masking mask_value must be a number; got {mv!r:.80}")
            mask_value = float(mv)
            names["masking"] = p.name
        else:
            raise _Error(f"{where} ({p.class_name}) comes before the LSTM stack "
                         f"{first.name!r}; a whole model has only an Embedding or a Masking "
                         f"layer there (li.load reads the LSTM stack alone)")
        p = K._producer(model, p)
    return embedding, mask_value, names


def _embedding(model, layer, where) -> dict:
    cfg = layer.config
    _refuse_policy(cfg, where)
    named = model.get_weights(layer)["forward"]
    if len(named) != 1:
        raise _Error(f"{where}: an Embedding with {len(named)} weights "
                     f"{[n for n, _ in named]}; expected one (embeddings): a quantized or "
                     f"LoRA embedding is not supported")
    w = named[0][1]
    V, E = cfg.get("input_dim"), cfg.get("output_dim")
    if w.ndim != 2 or (isinstance(V, int) and w.shape[0] != V) or \
            (isinstance(E, int) and w.shape[1] != E):
        raise _Error(f"{where}: embeddings of shape {w.shape}; the config says "
                     f"(input_dim, output_dim) = ({V}, {E})")
    table = float_matrix(K._value(w), "embeddings", where, error=_Error)
    return {"table": table, "pad_id": 0 if cfg.get("mask_zero") else None, "name": layer.name}


def _refuse_policy(cfg, where):
    dt = cfg.get("dtype")
    name = dt if isinstance(dt, str) else K._as_dict(K._as_dict(dt).get("config")).get("name")
    cls = K._as_dict(dt).get("class_name", "")
    if (isinstance(name, str) and name.startswith(_REFUSED_POLICIES)) or "Quant" in str(cls):
        raise _Error(f"{where}: a quantized layer (dtype policy {name or cls!r}) is not "
                     f"supported")
    if cfg.get("lora_rank"):
        raise _Error(f"{where}: LoRA (lora_rank={cfg['lora_rank']!r}) is not supported; "
                     f"merge the LoRA weights first")


# ---------------------------------------------------------------------- after the stack
def _after(model, chain, masked):
    src = model.source
    last = chain[-1]
    head_on = "steps" if K._returns_sequences(last) else "last"
    masked_outputs = "zero"
    if masked and head_on == "steps" and last.class_name == "LSTM":
        if last.config.get("go_backwards"):
            raise _Error(f"{src}: layer {last.name!r}: a masked go_backwards LSTM feeding a "
                         f"per-step head is not supported (Keras right-aligns its outputs)")
        if not last.config.get("zero_output_for_mask", False):
            masked_outputs = "repeat_last"
    head = []
    cur, seen = last, {last.name}
    while True:
        readers = [l for l in model.layers if cur.name in l.sources]
        if not readers:
            break
        if readers[0].name in seen:
            raise _Error(f"{src}: the layers after {last.name!r} form a cycle through "
                         f"{readers[0].name!r}")
        seen.add(readers[0].name)
        if len(readers) > 1:
            raise _Error(f"{src}: the output of layer {cur.name!r} feeds several layers "
                         f"{[l.name for l in readers]}; a whole model's head is one chain")
        l = readers[0]
        where = f"{src}: layer {l.name!r}"
        if l.input_name != cur.name or len(l.inputs) != 1 or len(l.sources) != 1:
            raise _Error(f"{where} ({l.class_name}) reads {l.sources} (or is called more than "
                         f"once, or reads an LSTM state); a whole model's head reads the "
                         f"LSTM's output alone")
        cls = l.class_name
        if cls in K._IDENTITY_AT_INFERENCE:
            pass
        elif cls == "Dense":
            head.append(_dense(model, l, l.config, model.get_weights(l)["forward"], where))
        elif cls in _DENSE_WRAPPERS and _inner_class(l) == "Dense":
            if head_on != "steps":
                raise _Error(f"{where}: TimeDistributed after an LSTM with "
                             f"return_sequences=False")
            inner = K._as_dict(K._as_dict(l.config.get("layer")).get("config"))
            head.append(_dense(model, l, inner, K._wrapped_layer_weights(model, l), where))
        elif cls == "Activation":
            act = check_activation(_act_name(l.config.get("activation")), where, _Error)
            if not head or head[-1]["activation"] != "linear":
                raise _Error(f"{where}: an Activation layer is supported after a Dense layer "
                             f"with a linear activation only")
            head[-1]["activation"] = act
        elif cls == "Softmax" and not masked:
            axis = l.config.get("axis", -1)
            rank = 3 if head_on == "steps" else 2
            if axis not in (-1, rank - 1, [-1], [rank - 1]):
                raise _Error(f"{where}: Softmax over axis {axis!r}; only the last axis is "
                             f"supported")
            if not head or head[-1]["activation"] != "linear":
                raise _Error(f"{where}: a Softmax layer is supported after a Dense layer with "
                             f"a linear activation only")
            head[-1]["activation"] = "softmax"
        else:
            what = cls + (f"({_inner_class(l)})" if _inner_class(l) else "")
            raise _Error(f"{where} ({what}) after the LSTM stack is not supported in a whole "
                         f"model; supported: Dense, TimeDistributed(Dense), Activation and "
                         f"layers that are the identity at inference (li.load reads the LSTM "
                         f"stack alone)")
        cur = l
    return head, head_on, masked_outputs


def _inner_class(layer):
    inner = layer.config.get("layer")
    return inner.get("class_name") if isinstance(inner, dict) else None


def _act_name(spec):
    if isinstance(spec, dict):  # a serialized function
        cfg = spec.get("config")
        module = str(spec.get("module") or "keras.activations")
        if not module.startswith("keras"):
            raise _Error(f"custom activation {spec!r:.80} is not supported")
        return cfg if isinstance(cfg, str) else spec.get("class_name")
    return spec


def _dense(model, layer, cfg, named, where) -> dict:
    _refuse_policy(cfg, where)
    use_bias = bool(cfg.get("use_bias", True))
    want = 2 if use_bias else 1
    if len(named) != want:
        raise _Error(f"{where}: a Dense layer with {len(named)} weights "
                     f"{[n for n, _ in named]}; expected {want} (kernel"
                     f"{', bias' if use_bias else ''})")
    base = [re.sub(r":\d+$", "", n).rsplit("/", 1)[-1] for n, _ in named]
    if len(set(base)) == len(base) and set(base) <= {"kernel", "bias"}:
        role = {r: a for r, (_, a) in zip(base, named)}        # legacy / tf.keras names
    else:                                                      # Keras 3 vars/0, 1
        role = dict(zip(("kernel", "bias"), (a for _, a in named)))
    k, b = role.get("kernel"), role.get("bias")
    units = cfg.get("units")
    if k is None or k.ndim != 2 or (isinstance(units, int) and k.shape[1] != units):
        raise _Error(f"{where}: kernel of shape {getattr(k, 'shape', None)}; expected (input, "
                     f"units={units})")
    if b is not None and tuple(b.shape) != (k.shape[1],):
        raise _Error(f"{where}: bias of shape {b.shape}; expected ({k.shape[1]},)")
    act = check_activation(_act_name(cfg.get("activation", "linear")), where, _Error)
    d = {"weight": float_matrix(K._value(k), "kernel", where, error=_Error),
         "bias": None if b is None else float_matrix(K._value(b), "bias", where, 1, _Error),
         "activation": act, "name": layer.name}
    return d

