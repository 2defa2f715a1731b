"""Whole models as data: what the per-format part readers (`whole_keras`, `whole_torch`,
`whole_onnx`) return and `lstm_infer.sequence_model` builds.

A whole model is an optional embedding, the LSTM stack (a `CanonicalModel`, read by the
format's LSTM loader) and an optional head of dense layers. This module holds the record,
the error class and the checks every reader shares (activation names, dense shapes); it
imports neither the model nor any framework.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from .._build import CanonicalModel
from .errors import FormatError

# Activations a dense layer of the head may end with (applied on the last axis)
HEAD_ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "softmax", "log_softmax")
# Where the head reads the LSTM: every step of the last layer's output sequence, the
# last layer's final state (both directions merged as the layer merges its outputs), or
# the output sequence at its last time step T - 1 (torch's ``out[:, -1]``)
HEAD_ON = ("steps", "last", "last_step")
# What a "steps" head sees at padded steps (t >= length): our LSTM's zeros, or the last
# valid output repeated (a Keras LSTM with zero_output_for_mask=False)
MASKED_OUTPUTS = ("zero", "repeat_last")


class WholeModelError(FormatError):
    """The layers around a file's LSTM cannot be read as a whole model (an unsupported
    layer or op, an ambiguous state dict, parts whose shapes do not chain). The LSTM alone
    may still load with ``li.load``."""


@dataclass
class WholeModelData:
    """A whole model as data.

    lstm : the LSTM stack's canonical data (``options["batch_first"]`` is the layout of
        the whole model's input and per-step output).
    embedding : ``{"table": (V, E) array, "pad_id": int or None, "name": str}`` or None
        (then the input is features). ``pad_id``: token id of trailing padding, from which
        lengths are computed when the caller gives none.
    head : dense layers in order, each ``{"weight": (in, out), "bias": (out,) or None,
        "activation": one of HEAD_ACTIVATIONS, "name": str}``.
    head_on, masked_outputs : see HEAD_ON, MASKED_OUTPUTS.
    mask_value : features input only (Keras ``Masking``): a step whose features all
        equal it is padding.
    notes : what the reader wants the user to know (shown by ``parts``, ``inspect``).
    """

    lstm: CanonicalModel
    embedding: Optional[dict] = None
    head: List[dict] = field(default_factory=list)
    head_on: str = "steps"
    masked_outputs: str = "zero"
    mask_value: Optional[float] = None
    source: Optional[str] = None
    names: dict = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)


def check_activation(name, where: str, error=WholeModelError) -> str:
    """A head activation name, lower-cased; `error` for anything else."""
    if name is None:
        return "linear"
    if not isinstance(name, str) or name.lower() not in HEAD_ACTIVATIONS:
        raise error(f"{where}: activation {name!r} is not supported in a head; supported: "
                    f"{', '.join(HEAD_ACTIVATIONS)}")
    return name.lower()


def float_matrix(a, what: str, where: str, ndim: int = 2, error=WholeModelError) -> np.ndarray:
    """A floating-point array of `ndim` dimensions (the head's and embedding's weights)."""
    a = np.asarray(a)
    if a.dtype.kind != "f" or a.ndim != ndim or 0 in a.shape:
        shape = "(rows, columns)" if ndim == 2 else "(n,)"
        raise error(f"{where}: {what} must be a non-empty floating-point array {shape}; got "
                    f"{a.dtype} of shape {a.shape}")
    return a


def chain_dense(head: List[dict], in_features: int, where: str, error=WholeModelError) -> None:
    """Each dense layer's input size is the previous one's output size (the first one's:
    `in_features`, what the LSTM hands the head)."""
    n = in_features
    for d in head:
        w = d["weight"]
        if w.shape[0] != n:
            what = "the LSTM's output" if n == in_features and d is head[0] else "the layer before"
            raise error(f"{where}: dense layer {d.get('name') or ''!r} takes {w.shape[0]} "
                        f"features but {what} has {n}")
        b = d.get("bias")
        if b is not None and np.shape(b) != (w.shape[1],):
            raise error(f"{where}: dense layer {d.get('name') or ''!r}: bias of shape "
                        f"{np.shape(b)} for {w.shape[1]} outputs")
        n = w.shape[1]
