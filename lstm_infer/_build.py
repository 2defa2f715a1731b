"""Canonical model data, and the one place an `LSTM` is built from it.

Every loader reads its source into a `CanonicalModel` (the safetensors pattern: each
module of ``formats/`` is a numpy core that returns data, plus thin public adapters), and
every public entry point that returns a model (``li.load``, ``from_torch``,
``from_keras``, ``from_onnx``, ``formats.native.load``) turns that data into an `LSTM`
through `build`. ``formats/`` never imports ``lstm_infer.model``: it imports this module,
and `build` imports the model class when it runs. The model goes the other way as data:
``LSTM.save`` hands ``formats.native.save`` its `CanonicalModel` (``LSTM.canonical()``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class CanonicalModel:
    """A model as data: what ``LSTM(layers, **options)`` takes.

    layers : list (one entry per layer) of lists of one (forward) or two (forward,
        reverse) dicts of canonical weights: ``w_ih``, ``w_hh``, ``b``, ``w_hr``,
        ``p_i``, ``p_f``, ``p_o`` (see lstm_infer.model), plus the stored quantized forms
        of a quantized model (int8 + ``w_ih_scale`` / ``w_hh_scale``, float16, bfloat16
        bit patterns).
    options : the constructor's keyword arguments (``batch_first``, ``dtype``,
        ``layer_options``, ``quantization``, ``quantize_input_weights``, ``clip``, ...).
    source : what the data was read from (a path, "the ONNX model", ...), for messages.
    """

    layers: list
    options: dict = field(default_factory=dict)
    source: Optional[str] = None


def build(data: CanonicalModel, error: Optional[type] = None, where: Optional[str] = None):
    """``LSTM(data.layers, **data.options)``: the weights and options are validated
    there (lstm_infer._validate.check_layers, then config's option parsing).

    With `error` (a loader's FormatError class), a ValueError / TypeError from that
    validation (NaN weights, an option out of range...) is raised again as
    ``error(f"{where}: {message}")``, `where` defaulting to ``data.source``.
    """
    from .model import LSTM  # the builder's one dependency on the model, when it runs

    if error is None:
        return LSTM(data.layers, **data.options)
    try:
        return LSTM(data.layers, **data.options)
    except (ValueError, TypeError) as e:
        raise error(f"{where if where is not None else data.source}: {e}") from None
