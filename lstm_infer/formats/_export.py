"""What the exporters (``onnx.to_onnx``, ``keras.to_keras_weights``) share: the model
behind an LSTM or its canonical data, its float weights, and the refusal of what a
target cannot express (ValueError listing each feature)."""
from __future__ import annotations

from .. import quantize
from .._build import CanonicalModel, build
from ..config import DEFAULT_ACTIVATIONS


def model_of(model_or_data):
    """An LSTM as it is; a `CanonicalModel` built (which validates it)."""
    return build(model_or_data) if isinstance(model_or_data, CanonicalModel) else model_or_data


def float_weights(model) -> list:
    """`model.weights`, a weight-only quantized model's dequantized to the float32 weights
    it computes with."""
    mode = model.config.quantization
    if mode is None:
        return model.weights
    return [[quantize.dequantize(w, mode) for w in layer] for layer in model.weights]


def refuse(model, target: str, *, peephole: bool, batch_first: bool = True) -> None:
    """ValueError if `model` uses what `target`, as exported, does not express."""
    cfg = model.config
    problems = [] if cfg.uniform else ["layers of different sizes or directions"]
    if cfg.quantization == "int8":
        problems.append('quantization="int8" (quantized activations)')
    if cfg.batch_first and not batch_first:
        problems.append("batch_first (its input is (T, B, I))")
    for k, spec in enumerate(cfg.layers):
        found = [what for what, used in (
            ("a projection (proj_size)", spec.proj_size),
            ("peephole connections", spec.peephole and not peephole),
            ("clip", spec.clip is not None), ("cell_clip", spec.cell_clip is not None),
            ("input_forget (CIFG)", spec.input_forget),
            ("non-default activations",
             any(tuple(t) != tuple(DEFAULT_ACTIVATIONS) for t in spec.activations)),
            ("a reverse-only direction", spec.reverse),
            (f"merge={spec.merge!r}", spec.merge != "concat")) if used]
        problems += [f"layer {k}: {what}" for what in found]
    if problems:
        raise ValueError(f"{target} cannot express this model: " + "; ".join(problems))
