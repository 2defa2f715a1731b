"""What the exporters share (``pytorch.to_state_dict`` / ``torch_writer``, ``onnx.to_onnx``,
``keras.to_keras_weights`` / ``keras_writer``): the model behind an LSTM or its canonical
data, its float weights, and the one check of what a target cannot express.

Each target declares what it can express (`check`'s arguments); every feature of the
model it cannot is listed in one `ExportError` (a ValueError), by name and layer, e.g.
``torch.nn.LSTM cannot express this model: layer 0: peephole connections; layer 1:
clip=3``. Nothing is exported approximately: the one opt-in is ``dequantize=True`` for
a quantized model (see `check`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from typing import Callable, Iterable, List, Optional

from .. import quantize
from .._build import CanonicalModel, build
from ..config import DEFAULT_ACTIVATIONS

# Layer features a target may lack, in the order the messages list them.
FEATURES = ("projection", "peephole", "clip", "cell_clip", "input_forget", "activations",
            "reverse", "go_backwards", "merge", "layer_norm", "proj_clip")
# LayerSpec fields the features above cover; any other field that leaves its default is
# refused by name, so a feature the engine gains is never dropped by an export in silence
_KNOWN_FIELDS = {"input_size", "hidden_size", "proj_size", "bidirectional", "peephole",
                 "reverse", "reverse_output", "merge", "activations", "clip", "cell_clip",
                 "input_forget", "layer_norm", "proj_clip"}
# canonical weights the exporters write (with the quantized forms' scales)
_KNOWN_WEIGHTS = {"w_ih", "w_hh", "b", "w_hr", "p_i", "p_f", "p_o", "w_ih_scale",
                  "w_hh_scale", "ln_i", "ln_f", "ln_g", "ln_o"}  # ln_*: layer_norm's


class ExportError(ValueError):
    """The model uses what the target format cannot express. ``problems`` lists each
    (``"layer 0: peephole connections"``...), ``target`` names the format."""

    def __init__(self, target: str, problems: List[str]):
        super().__init__(f"{target} cannot express this model: " + "; ".join(problems))
        self.target = target
        self.problems = list(problems)


@contextlib.contextmanager
def replacing(path):
    """Write to a temporary name beside `path` (yielded), renamed over `path` when the
    block completes and removed when it fails: never a half-written model."""
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def model_of(model_or_data):
    """An LSTM as it is; a `CanonicalModel` built (which validates it)."""
    return build(model_or_data) if isinstance(model_or_data, CanonicalModel) else model_or_data


def float_weights(model) -> list:
    """`model.weights`, a quantized model's dequantized to the float32 weights it computes
    with (for the compute modes, "int8" and "bf16", without the rounding of its
    activations)."""
    mode = model.config.quantization
    if mode is None:
        return model.weights
    return [[quantize.dequantize(w, mode) for w in layer] for layer in model.weights]


def activations_text(spec) -> str:
    """A layer's activations as messages show them: ``gate,cell,output`` per direction,
    hard_sigmoid with its slope and offset."""
    def one(a):
        return f"hard_sigmoid({a.alpha:g},{a.beta:g})" if a.name == "hard_sigmoid" else a.name
    return " / ".join(",".join(one(a) for a in trip) for trip in spec.activations)


def default_activations_only(spec) -> Optional[str]:
    """An `activations` check for targets with the standard LSTM only."""
    if any(tuple(t) != tuple(DEFAULT_ACTIVATIONS) for t in spec.activations):
        return f"activations {activations_text(spec)}"
    return None


KERAS3_HARD_SIGMOID = (1.0 / 6.0, 0.5)  # relu6(x + 3) / 6


def keras_activations(spec) -> Optional[str]:
    """An `activations` check for Keras LSTMs: per direction ``recurrent_activation``
    (our gate function) and one ``activation`` for both the cell input and the output;
    any of sigmoid, tanh, relu, linear, and hard_sigmoid as Keras 3 defines it."""
    why = []
    for trip in spec.activations:
        if trip[1] != trip[2]:
            why.append("a cell activation other than the output one (Keras has one "
                       "`activation` for both)")
        for a in trip:
            if a.name == "hard_sigmoid" and not all(
                    math.isclose(v, w, rel_tol=1e-12)
                    for v, w in zip((a.alpha, a.beta), KERAS3_HARD_SIGMOID)):
                why.append(f"hard_sigmoid({a.alpha:g},{a.beta:g}) (Keras 3's hard_sigmoid "
                           f"is relu6(x + 3) / 6, slope 1/6)")
    if why:
        return f"activations {activations_text(spec)}: " + ", ".join(dict.fromkeys(why))
    return None


def _layer_features(spec, acts):
    """(feature, description) for every optional feature the layer uses; activations
    are one when `acts(spec)` names a problem (None: any activations are fine)."""
    if spec.proj_size:
        yield "projection", f"a projection (proj_size={spec.proj_size})"
    if spec.peephole:
        yield "peephole", "peephole connections"
    if spec.clip is not None:
        yield "clip", f"clip={spec.clip:g}"
    if spec.cell_clip is not None:
        yield "cell_clip", f"cell_clip={spec.cell_clip:g}"
    if spec.input_forget:
        yield "input_forget", "input_forget (CIFG)"
    if acts is not None and (problem := acts(spec)):
        yield "activations", problem
    if spec.reverse and not spec.reverse_output:
        yield "reverse", "a reverse-only direction with outputs in time order (ONNX " \
                         "direction='reverse')"
    if spec.reverse_output:
        yield "go_backwards", "a reverse-only direction with outputs reversed in time " \
                              "(Keras go_backwards)"
    if spec.merge != "concat":
        yield "merge", f"merge={spec.merge!r}"
    if getattr(spec, "layer_norm", False):
        yield "layer_norm", "layer normalisation (TFLite's layer-norm LSTM)"
    if getattr(spec, "proj_clip", None) is not None:
        yield "proj_clip", f"proj_clip={spec.proj_clip:g}"


def _unknown_features(spec, weights) -> list:
    """What no exporter knows: LayerSpec fields off their defaults, extra weights."""
    out = [f"{f.name}={getattr(spec, f.name)!r}" for f in dataclasses.fields(spec)
           if f.name not in _KNOWN_FIELDS and getattr(spec, f.name) != f.default]
    extra = sorted({k for w in weights for k in w} - _KNOWN_WEIGHTS)
    if extra:
        out.append(f"weights {', '.join(extra)}")
    return [f"{what} (not exportable)" for what in out]


def _sizes(cfg) -> str:
    return ", ".join(f"{l.hidden_size}{'/' + str(l.proj_size) if l.proj_size else ''}"
                     f"{'x2' if l.bidirectional else ''}" for l in cfg.layers)


def check(model, target: str, *, supports: Iterable[str] = (), uniform: bool = False,
          activations: Optional[Callable] = None, dequantize: bool = False) -> None:
    """Raise `ExportError` listing everything in `model` that `target` cannot express.

    supports : the `FEATURES` the target has (every other one used is refused);
        "activations" there means every activation of ours, else `activations`
        (``spec -> problem text or None``, default `default_activations_only`) decides.
    uniform : the target needs every layer of one size and direction (torch's nn.LSTM).
    dequantize : a quantized model is refused unless this is True (the caller asked for
        the float32 weights it computes with: exactly its maths for the weight-only
        modes; for the compute modes ("int8", "bf16"), without the rounding of its
        activations).
    """
    cfg = model.config
    supports = set(supports)
    unknown = supports - set(FEATURES)
    assert not unknown, unknown  # a typo in an exporter, not a user error
    problems = []
    q = cfg.quantization
    if q is not None and not dequantize:
        compute = q in getattr(quantize, "COMPUTE_MODES", ("int8",))
        problems.append(
            f"quantization={q!r} (pass dequantize=True to export the float32 weights it "
            f"computes with" + (", without the rounding of its activations)" if compute
                                else ")"))
    if uniform and not cfg.uniform:
        problems.append(f"layers of different sizes or directions: {_sizes(cfg)}")
    acts = None if "activations" in supports else (activations or default_activations_only)
    for k, spec in enumerate(cfg.layers):
        found = [text for feat, text in _layer_features(spec, acts) if feat not in supports]
        found += _unknown_features(spec, model.weights[k])
        problems += [f"layer {k}: {what}" for what in found]
    if problems:
        raise ExportError(target, problems)

