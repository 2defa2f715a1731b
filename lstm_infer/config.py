"""Model configuration: frozen dataclasses describing an LSTM stack.

`LSTMConfig` is what `model.config` returns; `LayerSpec` describes one layer
(both directions of a bidirectional layer share one spec); `Activation` is one
of the activation functions of DESIGN §2, with the parameters that
disambiguate hard_sigmoid. The option parsing the constructor runs (model-level
defaults, then each layer's ``layer_options``) is here too: `check_clip`,
`parse_activations`, `layer_spec`, `LAYER_OPTIONS`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Optional, Tuple

import numpy as np

from ._kernels import ACTIVATION_CODES  # name -> kernel code (LI_ACT_* of _simd/lstm_abi.h)

_FLT_MAX = 3.4028234663852886e38  # largest finite float32


@dataclass(frozen=True)
class Activation:
    """An activation function.

    ``hard_sigmoid`` is ``clip(alpha * x + beta, 0, 1)``: Keras <= 2 and ONNX
    default to alpha=0.2, beta=0.5; Keras 3 uses relu6(x + 3) / 6, i.e.
    alpha=1/6, beta=0.5. ``linear`` is the identity.
    """

    name: str
    alpha: float = 0.0
    beta: float = 0.0

    def __post_init__(self):
        if self.name not in ACTIVATION_CODES:
            raise ValueError(
                f"unsupported activation {self.name!r}; expected one of "
                f"{sorted(ACTIVATION_CODES)}"
            )
        if self.name == "hard_sigmoid" and self.alpha == 0.0 and self.beta == 0.0:
            object.__setattr__(self, "alpha", 0.2)
            object.__setattr__(self, "beta", 0.5)
        for v, n in ((self.alpha, "alpha"), (self.beta, "beta")):
            # float32 kernels hold alpha/beta as floats: beyond FLT_MAX they become inf
            # (and inf * 0 a NaN), so the bound is float32's, not float64's
            if not math.isfinite(v) or abs(v) > _FLT_MAX:
                raise ValueError(f"activation {self.name} {n} must be finite and at most "
                                 f"{_FLT_MAX:.6g} in magnitude (float32); got {v}")

    @classmethod
    def parse(cls, spec) -> "Activation":
        """Accept an Activation, a name, or a (name, alpha, beta) tuple."""
        if isinstance(spec, Activation):
            return spec
        if isinstance(spec, str):
            return cls(spec.lower())
        if isinstance(spec, (tuple, list)) and 1 <= len(spec) <= 3 and isinstance(spec[0], str):
            return cls(spec[0].lower(), *[float(v) for v in spec[1:]])
        raise TypeError(
            f"activation must be a name, an Activation or (name, alpha, beta); got {spec!r}"
        )

    @property
    def code(self) -> int:
        return ACTIVATION_CODES[self.name]


DEFAULT_ACTIVATIONS = (Activation("sigmoid"), Activation("tanh"), Activation("tanh"))


MERGE_MODES = ("concat", "sum", "mul", "ave")


@dataclass(frozen=True)
class LayerSpec:
    """One layer of the stack (all its directions), with its effective options.

    ``reverse``: a unidirectional layer that reads each sequence backwards (ONNX
    direction="reverse", Keras go_backwards). ``reverse_output``: its outputs are
    returned in processing order, i.e. reversed in time (Keras go_backwards).
    ``merge``: how a bidirectional layer combines its two directions' outputs
    (Keras merge_mode; torch and ONNX concatenate). ``activations`` holds one
    (gate, cell, output) triple per direction.
    """

    input_size: int
    hidden_size: int
    proj_size: int = 0
    bidirectional: bool = False
    peephole: bool = False
    reverse: bool = False
    reverse_output: bool = False
    merge: str = "concat"
    activations: Tuple[Tuple[Activation, Activation, Activation], ...] = (DEFAULT_ACTIVATIONS,)
    clip: Optional[float] = None
    cell_clip: Optional[float] = None
    input_forget: bool = False
    layer_norm: bool = False  # TFLite's layer-norm LSTM (ln_* weights; DESIGN §2)
    proj_clip: Optional[float] = None  # TFLite: bound on a projected layer's h

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def direction(self) -> str:
        return "bidirectional" if self.bidirectional else ("reverse" if self.reverse else "forward")

    @property
    def output_size(self) -> int:
        """Size of h (per direction): proj_size if projected, else hidden_size."""
        return self.proj_size or self.hidden_size

    @property
    def out_features(self) -> int:
        """Last dimension of this layer's output sequence (the next layer's input)."""
        if self.bidirectional and self.merge == "concat":
            return 2 * self.output_size
        return self.output_size

    def to_dict(self) -> dict:
        return {
            "input_size": self.input_size, "hidden_size": self.hidden_size,
            "proj_size": self.proj_size, "direction": self.direction,
            "peephole": self.peephole, "reverse_output": self.reverse_output,
            "merge": self.merge,
            "activations": [[[a.name, a.alpha, a.beta] for a in trip] for trip in self.activations],
            "clip": self.clip, "cell_clip": self.cell_clip, "input_forget": self.input_forget,
            "layer_norm": self.layer_norm, "proj_clip": self.proj_clip,
        }


@dataclass(frozen=True)
class LSTMConfig:
    """Configuration of an LSTM model (see DESIGN §1).

    For a stack whose layers differ in size or directions, ``hidden_size`` /
    ``proj_size`` / ``bidirectional`` / ``peephole`` are those of the first
    layer and ``uniform`` is False; ``layers`` is always exact.
    """

    input_size: int
    hidden_size: int
    num_layers: int
    bidirectional: bool
    proj_size: int
    peephole: bool
    batch_first: bool
    dtype: str
    quantization: Optional[str]
    clip: Optional[float]
    cell_clip: Optional[float]
    input_forget: bool
    activations: Tuple[Activation, Activation, Activation] = DEFAULT_ACTIVATIONS
    layers: Tuple[LayerSpec, ...] = field(default=())

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def uniform(self) -> bool:
        """True when every layer has the same hidden/proj size and number of
        directions (then h_n / c_n are torch-style stacked arrays, else
        per-layer lists)."""
        first = self.layers[0]
        return all(
            l.hidden_size == first.hidden_size and l.proj_size == first.proj_size
            and l.bidirectional == first.bidirectional
            for l in self.layers
        )

    @property
    def layer_norm(self) -> bool:
        """True when any layer is layer-normalised (TFLite's variant)."""
        return any(l.layer_norm for l in self.layers)

    @property
    def output_size(self) -> int:
        """Last dimension of ``out`` (D * H_out of the last layer, or H_out if merged)."""
        return self.layers[-1].out_features

    def to_dict(self) -> dict:
        d = {
            k: getattr(self, k)
            for k in (
                "input_size", "hidden_size", "num_layers", "bidirectional", "proj_size",
                "peephole", "batch_first", "dtype", "quantization", "clip", "cell_clip",
                "input_forget",
            )
        }
        d["activations"] = [[a.name, a.alpha, a.beta] for a in self.activations]
        d["layers"] = [l.to_dict() for l in self.layers]
        return d


# ----------------------------------------------------------------------------- option parsing
def check_clip(name, v):
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
            or not (np.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a positive finite number or None; got {v!r}")
    return float(v)


def parse_activations(spec, where):
    """3 activations (gate, cell, output) -> a tuple of 3 Activation."""
    if isinstance(spec, (str, Activation)) or not isinstance(spec, (list, tuple)):
        raise TypeError(f"{where} must be a sequence of 3 activations (gate, cell, output), "
                        f"e.g. ('sigmoid', 'tanh', 'tanh'); got {spec!r}")
    acts = tuple(Activation.parse(a) for a in spec)
    if len(acts) != 3:
        raise ValueError(f"{where} must be 3 functions (gate, cell, output); got {len(acts)}")
    return acts


LAYER_OPTIONS = {"direction", "merge", "reverse_output", "activations", "clip", "cell_clip",
                 "proj_clip", "input_forget"}


def layer_spec(k, spec, opts, defaults):
    """Apply one layer's options (model-level values are the defaults)."""
    if not isinstance(opts, dict):
        raise TypeError(f"layer_options[{k}] must be a dict; got {type(opts).__name__}")
    unknown = set(opts) - LAYER_OPTIONS
    if unknown:
        raise ValueError(f"layer_options[{k}]: unknown option(s) {sorted(unknown)}; expected "
                         f"some of {sorted(LAYER_OPTIONS)}")
    D = spec.num_directions
    direction = opts.get("direction", "bidirectional" if D == 2 else "forward")
    allowed = ("bidirectional",) if D == 2 else ("forward", "reverse")
    if direction not in allowed:
        raise ValueError(f"layer {k}: direction must be one of {allowed} for {D} weight "
                         f"direction(s); got {direction!r}")
    merge = opts.get("merge", "concat")
    if merge not in MERGE_MODES:
        raise ValueError(f"layer {k}: merge must be one of {MERGE_MODES}; got {merge!r}")
    if merge != "concat" and D != 2:
        raise ValueError(f"layer {k}: merge={merge!r} needs a bidirectional layer")
    reverse_output = bool(opts.get("reverse_output", False))
    if reverse_output and direction != "reverse":
        raise ValueError(f"layer {k}: reverse_output (Keras go_backwards) needs direction "
                         f"'reverse'; got {direction!r}")
    acts = opts.get("activations")
    if acts is None:
        trips = (defaults["activations"],) * D
    elif (isinstance(acts, (list, tuple)) and len(acts) == D and
          all(isinstance(t, (list, tuple)) and len(t) == 3 and
              not isinstance(t[1], (int, float, np.number)) for t in acts) and
          not (D == 1 and len(acts) == 3)):
        trips = tuple(parse_activations(t, f"layer {k} activations") for t in acts)
    else:
        trips = (parse_activations(acts, f"layer {k} activations"),) * D
    return dataclasses.replace(
        spec, reverse=direction == "reverse", reverse_output=reverse_output, merge=merge,
        activations=trips,
        clip=check_clip(f"layer {k} clip", opts.get("clip", defaults["clip"])),
        cell_clip=check_clip(f"layer {k} cell_clip", opts.get("cell_clip", defaults["cell_clip"])),
        proj_clip=_proj_clip(k, spec, opts, defaults["proj_clip"]),
        input_forget=bool(opts.get("input_forget", defaults["input_forget"])))


def _proj_clip(k, spec, opts, default):
    """A layer's proj_clip: the model-level value applies to its projected layers only; one
    given for a layer without projection is an error."""
    if "proj_clip" not in opts:
        return default if spec.proj_size else None
    v = check_clip(f"layer {k} proj_clip", opts["proj_clip"])
    if v is not None and not spec.proj_size:
        raise ValueError(f"layer {k}: proj_clip bounds a projection's output; this layer has "
                         f"no projection (w_hr)")
    return v
