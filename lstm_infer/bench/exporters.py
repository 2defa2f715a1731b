"""Our model in the form other engines load: an ONNX graph, Keras weights.

The exporters live next to the loaders they invert: `formats.onnx.to_onnx`,
`formats.keras.to_keras_weights` (and `formats.pytorch.to_state_dict`); the bench
takes them from there. Each raises ValueError listing what it cannot express, and
ImportError when its framework is missing (onnx for `to_onnx`; `to_keras_weights`
needs none).
"""
from __future__ import annotations

from ..formats.keras import to_keras_weights
from ..formats.onnx import to_onnx

__all__ = ["to_onnx", "to_keras_weights"]
