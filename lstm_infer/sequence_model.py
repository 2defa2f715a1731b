"""Whole LSTM models: embedding -> LSTM stack -> head, run end to end.

What users train around an LSTM, and what `SequenceModel` runs::

    tokens (B, T) ints --Embedding--> (B, T, E) --LSTM stack--> out (B, T, F), h_n
        --pool: every step | last state | last step--> --Dense, act, Dense, act...--> y

(``(T, B)`` when not batch_first; a 1-D ``(T,)`` is one unbatched sequence.)

Parts
-----
* ``Embedding(table (V, E), pad_id=None)``, optional (without it the input is
  features ``(B, T, I)``). ``pad_id``: trailing tokens equal to it are padding,
  and when the caller gives no ``lengths`` they are computed from them (Keras
  ``Embedding(mask_zero=True)`` is ``pad_id=0``). Padding must be at the end of
  each sequence (a gap raises): lengths cannot express anything else. Features
  models may have a ``mask_value`` instead (Keras ``Masking``).
* The LSTM: an `lstm_infer.LSTM`, used unchanged: lengths, threads, its
  quantization and determinism are its own.
* ``head``: dense layers ``Dense(weight (in, out), bias (out,), activation)``
  with activation linear / relu / sigmoid / tanh / softmax / log_softmax
  (softmax and log_softmax over the last axis). ``head_on`` says what they read:

  ``"steps"``      every step of the last layer's output (a tagger; Keras
                   ``return_sequences=True`` + ``Dense`` / ``TimeDistributed``):
                   y is ``(B, T, C)``;
  ``"last"``       the last layer's final state, both directions merged as the
                   layer merges its outputs (concat ``[fwd, bwd]``: torch's
                   ``cat(h_n[-2], h_n[-1])``; Keras' ``return_sequences=False``
                   output); with lengths, each sequence's state after its last
                   valid step: y is ``(B, C)``;
  ``"last_step"``  the output sequence at step T - 1 (torch's ``out[:, -1]``,
                   for a bidirectional LSTM not the same as "last").

  ``masked_outputs`` ("zero" or "repeat_last") is what a "steps" head sees at
  padded steps: our LSTM's zeros (torch's ``pad_packed_sequence``, Keras'
  Bidirectional) or the last valid output repeated (a Keras LSTM with the
  default ``zero_output_for_mask=False``), so that every position matches the
  source framework, padded ones included.

Machinery: the embedding is one ``np.take``, the head one numpy matmul per dense
layer on the whole ``(B*T, F)`` block (over its rows as a stack, so that a row's bits
do not depend on the batch; see `_dense`) plus in-place numpy activations; there is no
Python per step or per row. A sequence's result is bit-identical whatever batch it
shares, wherever the LSTM's is (DESIGN section 1). A model is immutable (its arrays are
read-only) and thread-safe; ``quantize(mode)`` returns a new model with the
LSTM quantized (the embedding and head stay in the model's float dtype);
models pickle. ``save(path)`` writes the native format with the parts added
(``lstm_infer.formats.whole_native``); ``lstm_infer.load_model`` reads it back.

Loading: ``lstm_infer.load_model(path_or_object, spec=None, batch_first=None)``
reads the parts from Keras files (the architecture is in the file), ONNX
graphs (Gather -> LSTM nodes -> MatMul/Gemm/Add/activations) and torch state
dicts (inferred from a Sequential-like state dict, or named by a short
``spec``); see `load_model` and ``lstm_infer/formats/whole_*.py``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .formats.whole_common import (HEAD_ACTIVATIONS, HEAD_ON, MASKED_OUTPUTS,
                                   WholeModelData, WholeModelError)

__all__ = ["SequenceModel", "Embedding", "Dense", "SequenceModelConfig", "load_model",
           "WholeModelError"]


def _frozen(a, dtype) -> np.ndarray:
    a = np.array(a, dtype=dtype, order="C", copy=True)
    a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class Embedding:
    """A token embedding: ``table[ids]``. ``pad_id``: see the module docstring."""

    table: np.ndarray
    pad_id: Optional[int] = None
    name: str = ""

    @property
    def vocab_size(self) -> int:
        return int(self.table.shape[0])

    @property
    def dim(self) -> int:
        return int(self.table.shape[1])


@dataclass(frozen=True, eq=False)
class Dense:
    """``activation(x @ weight + bias)``, weight ``(in, out)``."""

    weight: np.ndarray
    bias: np.ndarray
    activation: str = "linear"
    name: str = ""

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[0])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[1])


@dataclass(frozen=True)
class SequenceModelConfig:
    """What a `SequenceModel` is (``m.config``): JSON-able through ``to_dict``."""

    input: str                        # "tokens" or "features"
    vocab_size: Optional[int]
    embedding_dim: Optional[int]
    pad_id: Optional[int]
    mask_value: Optional[float]
    lstm: object                      # the LSTM's LSTMConfig
    head_on: str
    head: Tuple[Tuple[int, int, str], ...]   # (in, out, activation) per dense layer
    masked_outputs: str
    batch_first: bool
    output_size: int

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("input", "vocab_size", "embedding_dim", "pad_id",
                                           "mask_value", "head_on", "masked_outputs",
                                           "batch_first", "output_size")}
        d["head"] = [list(h) for h in self.head]
        d["lstm"] = self.lstm.to_dict()
        return d


class SequenceModel:
    """An embedding -> LSTM -> head model (see the module docstring).

    Parameters
    ----------
    lstm : lstm_infer.LSTM
    embedding : Embedding, or dict ``{"table", "pad_id", "name"}``, optional
    head : sequence of Dense (or dicts ``{"weight" (in, out), "bias", "activation",
        "name"}``), optional
    head_on : "steps" | "last" | "last_step"
    masked_outputs : "zero" | "repeat_last"
    mask_value : float, optional (features input only)
    notes : strings shown by ``parts`` (what a loader wants the user to know)
    """

    def __init__(self, lstm, *, embedding=None, head: Sequence = (), head_on: str = "steps",
                 masked_outputs: str = "zero", mask_value: Optional[float] = None,
                 names: Optional[dict] = None, notes: Sequence[str] = ()):
        from .model import LSTM

        if not isinstance(lstm, LSTM):
            raise TypeError(f"lstm must be an lstm_infer.LSTM; got {type(lstm).__name__}")
        if head_on not in HEAD_ON:
            raise ValueError(f"head_on must be one of {HEAD_ON}; got {head_on!r}")
        if masked_outputs not in MASKED_OUTPUTS:
            raise ValueError(f"masked_outputs must be one of {MASKED_OUTPUTS}; got "
                             f"{masked_outputs!r}")
        cfg = lstm.config
        dt = lstm.dtype if cfg.quantization is None else np.dtype(np.float32)
        self._lstm = lstm
        self._dtype = dt
        if embedding is not None:
            if isinstance(embedding, dict):
                embedding = Embedding(**embedding)
            if not isinstance(embedding, Embedding):
                raise TypeError(f"embedding must be an Embedding or a dict; got "
                                f"{type(embedding).__name__}")
            table = np.asarray(embedding.table)
            if table.ndim != 2 or table.dtype.kind != "f" or 0 in table.shape:
                raise ValueError(f"the embedding table must be a non-empty (vocab, dim) float "
                                 f"array; got {table.dtype} of shape {table.shape}")
            if table.shape[1] != cfg.input_size:
                raise ValueError(f"the embedding has dim {table.shape[1]} but the LSTM's "
                                 f"input_size is {cfg.input_size}")
            if not np.all(np.isfinite(table)):
                raise ValueError("the embedding table contains NaN or infinity")
            pad = embedding.pad_id
            if pad is not None:
                if isinstance(pad, bool) or not isinstance(pad, (int, np.integer)) or \
                        not 0 <= pad < table.shape[0]:
                    raise ValueError(f"pad_id must be a token id in [0, {table.shape[0]}); got "
                                     f"{pad!r}")
                pad = int(pad)
            embedding = Embedding(_frozen(table, dt), pad, str(embedding.name or ""))
            if mask_value is not None:
                raise ValueError("mask_value applies to a features input; a model with an "
                                 "embedding masks by its pad_id")
        if mask_value is not None:
            mask_value = float(mask_value)
        self._embedding = embedding
        self._mask_value = mask_value
        layers = []
        n = cfg.output_size
        for k, d in enumerate(head):
            if isinstance(d, dict):
                d = Dense(d["weight"], d.get("bias"), d.get("activation") or "linear",
                          d.get("name") or "")
            if not isinstance(d, Dense):
                raise TypeError(f"head[{k}] must be a Dense or a dict; got {type(d).__name__}")
            w = np.asarray(d.weight)
            if w.ndim != 2 or w.dtype.kind != "f" or 0 in w.shape:
                raise ValueError(f"head[{k}].weight must be a non-empty (in, out) float array; "
                                 f"got {w.dtype} of shape {w.shape}")
            if w.shape[0] != n:
                raise ValueError(f"head[{k}] takes {w.shape[0]} features but gets {n} "
                                 f"({'the LSTM output' if k == 0 else 'head[%d]' % (k - 1)})")
            b = np.zeros(w.shape[1]) if d.bias is None else np.asarray(d.bias)
            if b.shape != (w.shape[1],) or b.dtype.kind not in "fiu":
                raise ValueError(f"head[{k}].bias must have shape ({w.shape[1]},); got "
                                 f"{b.shape}")
            act = d.activation.lower() if isinstance(d.activation, str) else d.activation
            if act not in HEAD_ACTIVATIONS:
                raise ValueError(f"head[{k}].activation must be one of {HEAD_ACTIVATIONS}; got "
                                 f"{d.activation!r}")
            if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
                raise ValueError(f"head[{k}] weights contain NaN or infinity")
            layers.append(Dense(_frozen(w, dt), _frozen(b, dt), act, str(d.name or "")))
            n = w.shape[1]
        self._head = tuple(layers)
        self._head_on = head_on
        self._masked_outputs = masked_outputs
        self._names = dict(names or {})
        self._notes = tuple(str(s) for s in notes)
        self._config = SequenceModelConfig(
            input="tokens" if embedding is not None else "features",
            vocab_size=embedding.vocab_size if embedding is not None else None,
            embedding_dim=embedding.dim if embedding is not None else None,
            pad_id=embedding.pad_id if embedding is not None else None,
            mask_value=mask_value, lstm=cfg, head_on=head_on,
            head=tuple((d.in_features, d.out_features, d.activation) for d in layers),
            masked_outputs=masked_outputs, batch_first=cfg.batch_first, output_size=n)
        last = cfg.layers[-1]
        # per call: the last layer's slice of h_n and how its directions merge
        self._last_dirs = last.num_directions
        self._merge = last.merge

    # ------------------------------------------------------------------ properties
    @property
    def lstm(self):
        return self._lstm

    @property
    def embedding(self) -> Optional[Embedding]:
        return self._embedding

    @property
    def head(self) -> Tuple[Dense, ...]:
        return self._head

    @property
    def head_on(self) -> str:
        return self._head_on

    @property
    def config(self) -> SequenceModelConfig:
        return self._config

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self._dtype)

    @property
    def is_bare(self) -> bool:
        """True when the model is its LSTM alone (no embedding, head or mask)."""
        return self._embedding is None and not self._head and self._mask_value is None and \
            self._head_on == "steps"

    @property
    def parts(self) -> List[dict]:
        """The parts in order, as JSON-able dicts (what ``lstm-infer inspect`` lists)."""
        c = self._lstm.config
        out = []
        if self._embedding is not None:
            e = self._embedding
            out.append({"part": "embedding", "name": e.name, "vocab_size": e.vocab_size,
                        "dim": e.dim, "pad_id": e.pad_id,
                        "lengths": "from trailing pad_id tokens" if e.pad_id is not None
                        else "all steps valid unless lengths= is given"})
        elif self._mask_value is not None:
            out.append({"part": "masking", "mask_value": self._mask_value})
        out.append({"part": "lstm", "name": self._names.get("lstm", ""),
                    "layers": [f"{l.direction} {l.input_size}->{l.hidden_size}"
                               + (f"/{l.proj_size}" if l.proj_size else "")
                               + (f" merge={l.merge}" if l.bidirectional and l.merge != "concat"
                                  else "") for l in c.layers],
                    "batch_first": c.batch_first, "dtype": c.dtype,
                    "quantization": c.quantization, "output_size": c.output_size})
        if self._head or self._head_on != "steps":
            out.append({"part": "pool", "head_on": self._head_on,
                        "masked_outputs": self._masked_outputs
                        if self._head_on == "steps" else None})
        for d in self._head:
            out.append({"part": "dense", "name": d.name, "in": d.in_features,
                        "out": d.out_features, "activation": d.activation})
        if self._notes:
            out.append({"part": "notes", "notes": list(self._notes)})
        return out

    @property
    def options(self) -> dict:
        """Every constructor argument but the arrays and the LSTM, JSON-able."""
        return {"head_on": self._head_on, "masked_outputs": self._masked_outputs,
                "mask_value": self._mask_value, "names": dict(self._names),
                "notes": list(self._notes),
                "embedding": None if self._embedding is None else
                {"pad_id": self._embedding.pad_id, "name": self._embedding.name},
                "head": [{"activation": d.activation, "name": d.name} for d in self._head]}

    def __repr__(self) -> str:
        c = self._config
        parts = []
        if self._embedding is not None:
            parts.append(f"Embedding({c.vocab_size}, {c.embedding_dim}"
                         f"{', pad_id=%d' % c.pad_id if c.pad_id is not None else ''})")
        elif self._mask_value is not None:
            parts.append(f"Masking({self._mask_value:g})")
        parts.append(repr(self._lstm))
        if self._head:
            parts.append(f"[{self._head_on}] " + " -> ".join(
                f"Dense({d.in_features}, {d.out_features}"
                f"{', ' + d.activation if d.activation != 'linear' else ''})" for d in self._head))
        elif self._head_on != "steps":
            parts.append(f"[{self._head_on}]")
        return "SequenceModel(" + " -> ".join(parts) + ")"

    # ------------------------------------------------------------------ forward
    def __call__(self, x, lengths=None, *, num_threads=None):
        return self.forward(x, lengths=lengths, num_threads=num_threads)

    def forward(self, x, lengths=None, *, num_threads=None):
        """Run the whole model.

        Parameters
        ----------
        x : token ids, integer array (B, T) ((T, B) if not batch_first, (T,) unbatched)
            for a model with an embedding (floats holding integers are accepted); else
            features (B, T, I) / (T, B, I) / (T, I), as the LSTM takes them.
        lengths : array_like of int (B,), optional
            Valid length of each sequence. Default: from the trailing ``pad_id`` tokens
            (or ``mask_value`` steps) when the model has one, else every step is valid.
        num_threads : int, optional
            Threads for the LSTM (default: ``li.set_num_threads`` / all cores).

        Returns
        -------
        y : the head's output: (B, T, C) ((T, B, C)) for head_on="steps", (B, C) for
            "last" / "last_step" (no batch axis when unbatched). Without a head, the
            pooled LSTM output: ``out`` for "steps", the merged state or last step else.
        """
        cfg = self._lstm.config
        bf = cfg.batch_first
        if self._embedding is not None:
            ids, unbatched = self._token_ids(x)
            if lengths is None and self._embedding.pad_id is not None:
                lengths = _post_padding_lengths(ids if bf else ids.T, self._embedding.pad_id)
            feats = np.take(self._embedding.table, ids, axis=0)
        else:
            feats = x
            if isinstance(x, np.ma.MaskedArray):  # the LSTM says what to do instead
                unbatched = False
            else:
                feats = np.asarray(x)
                unbatched = feats.ndim == 2
                if unbatched:
                    feats = feats[None] if bf else feats[:, None]
            if lengths is None and self._mask_value is not None and feats.ndim == 3:
                from .formats.keras import lengths_from_mask

                lengths = lengths_from_mask(feats if bf else feats.transpose(1, 0, 2),
                                            self._mask_value)
        if unbatched and lengths is not None:
            lengths = np.reshape(np.asarray(lengths), (1,))
        out, (h_n, _) = self._lstm(feats, lengths=lengths, num_threads=num_threads)
        z = self._pool(out, h_n, lengths, bf)
        for d in self._head:
            z = _dense(z, d)
        if unbatched:
            z = z[0] if (bf or self._head_on != "steps") else z[:, 0]
        return z

    def _token_ids(self, x):
        """x as an integer array (batched), and whether it was unbatched."""
        if isinstance(x, np.ma.MaskedArray):
            raise TypeError("x is a numpy masked array: pass the token ids (x.filled(pad_id)) "
                            "and lengths=")
        a = np.asarray(x)
        if a.dtype.kind not in "iuf" or a.dtype.kind == "b":
            raise TypeError(f"this model takes token ids (an integer array); got dtype "
                            f"{a.dtype}")
        bf = self._lstm.config.batch_first
        if a.ndim not in (1, 2):
            raise ValueError(f"token ids must be 2-D ({'B, T' if bf else 'T, B'}) or 1-D "
                             f"unbatched (T,); got shape {a.shape}")
        if a.dtype.kind == "f":
            if not (np.all(np.isfinite(a)) and np.all(np.mod(a, 1) == 0)):
                raise TypeError("token ids must be integers; got floats with a fractional "
                                "part, NaN or infinity")
            a = a.astype(np.int64)
        V = self._embedding.vocab_size
        # one reduction checks both bounds: seen unsigned, a negative id is >= 2**(bits-1)
        if a.size and int(np.maximum.reduce(
                a.view(a.dtype.str.replace("i", "u")) if a.dtype.kind == "i" else a,
                axis=None)) >= V:
            raise ValueError(f"token ids must be in [0, {V}) (the vocabulary size); got "
                             f"min {int(a.min())}, max {int(a.max())}")
        unbatched = a.ndim == 1
        if unbatched:
            a = a[None, :] if bf else a[:, None]
        return a, unbatched

    def _pool(self, out, h_n, lengths, bf):
        """What the head reads: every step, the merged last state, or the last step."""
        on = self._head_on
        if on == "steps":
            if self._masked_outputs == "repeat_last" and lengths is not None and out.size:
                out = _repeat_last(out, np.asarray(lengths), bf)
            return out
        if on == "last_step":
            return out[:, -1] if bf else out[-1]
        D = self._last_dirs
        last = h_n[-1] if isinstance(h_n, list) else h_n[-D:]   # (D, B, H_out)
        if D == 1:
            return last[0]
        a, b = last[0], last[1]
        if self._merge == "concat":
            return np.concatenate([a, b], axis=-1)
        if self._merge == "sum":
            return a + b
        if self._merge == "mul":
            return a * b
        return (a + b) * np.asarray(0.5, dtype=a.dtype)

    # ------------------------------------------------------------------ variants
    def quantize(self, mode: str, input_weights: bool = False) -> "SequenceModel":
        """A new model whose LSTM is ``self.lstm.quantize(mode, input_weights)`` (see
        `lstm_infer.LSTM.quantize`); the embedding and head stay in float32."""
        return self._with_lstm(self._lstm.quantize(mode, input_weights=input_weights))

    def _with_lstm(self, lstm) -> "SequenceModel":
        return SequenceModel(lstm, embedding=self._embedding, head=self._head,
                             head_on=self._head_on, masked_outputs=self._masked_outputs,
                             mask_value=self._mask_value, names=self._names,
                             notes=self._notes)

    def save(self, path) -> None:
        """Save in the native format with the parts added; ``li.load_model`` reads it back
        bit-exactly (``li.load`` refuses it: it loads an LSTM alone)."""
        from .formats import whole_native

        whole_native.save(self, path)

    def __reduce__(self):
        return (_rebuild, (self._lstm, self._embedding, self._head, self.options))


def _rebuild(lstm, embedding, head, options):
    opts = dict(options)
    opts.pop("embedding", None)
    opts.pop("head", None)
    return SequenceModel(lstm, embedding=embedding, head=head, **opts)


# ---------------------------------------------------------------------- numpy kernels
def _post_padding_lengths(ids_bt: np.ndarray, pad_id: int) -> np.ndarray:
    """Lengths (B,) of post-padded token ids (B, T): the tokens before the trailing run of
    pad_id. A pad token followed by a real one raises (lengths cannot express it)."""
    keep = np.not_equal(ids_bt, pad_id)
    if ids_bt.shape[1] > 1 and np.less(keep[:, :-1], keep[:, 1:]).any():
        from .formats.keras import lengths_from_mask

        lengths_from_mask(ids_bt, pad_id)  # raises, naming the first such sequence
    return np.add.reduce(keep, axis=1, dtype=np.int64)


def _repeat_last(out: np.ndarray, lengths: np.ndarray, bf: bool) -> np.ndarray:
    """out with each padded step t >= n replaced by step n - 1 (zeros stay for n = 0)."""
    T = out.shape[1] if bf else out.shape[0]
    if lengths.size == 0 or int(lengths.min()) >= T:
        return out
    last = np.maximum(lengths.astype(np.intp) - 1, 0)
    idx = np.minimum(np.arange(T)[None, :], last[:, None])           # (B, T)
    if bf:
        return np.take_along_axis(out, idx[:, :, None], axis=1)
    return np.take_along_axis(out, idx.T[:, :, None], axis=0)


_expit = None


def _dense(z: np.ndarray, d: Dense) -> np.ndarray:
    """activation(z @ W + b) over the last axis, on the whole (rows, in) block at once,
    then the bias and the activation in place (ufuncs called directly: a small call is a
    few microseconds).

    The product is numpy's matmul over a stack of (1, in) rows, not one (rows, in) GEMM:
    a BLAS GEMM picks its kernels and edge tiles by the number of rows, so a row's result
    would change in its last bits with the batch it shares (measured: every row of a
    33-row batch differs from the same row alone). Row by row in one call, each row is the
    same computation whatever the batch, as the LSTM's own results are (determinism,
    DESIGN section 1; tests/test_whole_model.py checks it), and as fast here (no Python
    per row; OpenBLAS' GEMM with few output columns is slow anyway)."""
    global _expit
    shape = z.shape
    z2 = z if z.ndim == 2 else z.reshape(-1, shape[-1])
    y = np.matmul(z2[:, None, :], d.weight)[:, 0]   # (rows, out), a new contiguous array
    np.add(y, d.bias, out=y)
    act = d.activation
    if act == "relu":
        np.maximum(y, 0, out=y)
    elif act == "tanh":
        np.tanh(y, out=y)
    elif act == "sigmoid":
        if _expit is None:
            from scipy.special import expit as _expit
        _expit(y, out=y)
    elif act in ("softmax", "log_softmax"):
        np.subtract(y, np.maximum.reduce(y, axis=-1, keepdims=True), out=y)
        if act == "softmax":
            np.exp(y, out=y)
            np.divide(y, np.add.reduce(y, axis=-1, keepdims=True), out=y)
        else:
            np.subtract(y, np.log(np.add.reduce(np.exp(y), axis=-1, keepdims=True)), out=y)
    return y if z.ndim == 2 else y.reshape(shape[:-1] + (d.out_features,))


# ---------------------------------------------------------------------- loading
def build_whole(data: WholeModelData, error=WholeModelError,
                batch_first: Optional[bool] = None) -> SequenceModel:
    """A SequenceModel from a reader's `WholeModelData` (the LSTM built by the one
    builder, `lstm_infer._build.build`); a ValueError / TypeError of the checks is
    raised again as `error` naming the source. `batch_first` overrides the layout."""
    from ._build import build

    if batch_first is not None:
        data.lstm.options = dict(data.lstm.options, batch_first=bool(batch_first))
    lstm = build(data.lstm, error, data.source)
    try:
        return SequenceModel(lstm, embedding=data.embedding, head=data.head,
                             head_on=data.head_on, masked_outputs=data.masked_outputs,
                             mask_value=data.mask_value, names=data.names, notes=data.notes)
    except (ValueError, TypeError) as e:
        raise error(f"{data.source}: {e}") from None


def load_model(obj, *, spec=None, batch_first=None) -> SequenceModel:
    """Load a whole model (embedding -> LSTM -> head) from a file or framework object.

    Parameters
    ----------
    obj : path to a Keras ``.keras`` / ``.h5``, ONNX, PyTorch (``.pt`` / ``.pth`` /
        ``.bin`` / safetensors with torch names) or native file; or a ``keras.Model``,
        an ``onnx.ModelProto``, a torch ``nn.Module`` or a state dict.
    spec : dict, optional (torch only; the other formats record their architecture)
        Names and settings a state dict does not record; every key is optional, and
        what is not given is inferred when unambiguous (see
        `lstm_infer.formats.whole_torch`): ``embedding`` (module name or None),
        ``lstm`` (prefix), ``head`` (list of Linear module names), ``activation``
        (the last layer's, or one per head layer), ``head_on`` ("last", the default,
        "last_step" or "steps"), ``pad_id`` (compute lengths from trailing padding),
        ``batch_first``. A checkpoint may carry it under the key ``"lstm_infer_spec"``.
    batch_first : bool, optional
        The layout of the input (and of a per-step output): token ids (B, T) if True,
        (T, B) if False. Default: what the file records (Keras: True; ONNX: its graph's
        input); torch state dicts do not record it: the spec's, else False (nn.LSTM's).

    Returns
    -------
    SequenceModel. A file holding an LSTM alone gives a model whose ``is_bare`` is True.

    Raises
    ------
    WholeModelError (a FormatError) when the parts around the LSTM are not an
    embedding / dense head this module runs (it names the layer or op); the loaders'
    own FormatErrors for damaged files.
    """
    from .formats import detect, whole_keras, whole_native, whole_onnx, whole_torch

    if spec is not None and not isinstance(spec, dict):
        raise TypeError(f"spec must be a dict; got {type(spec).__name__}")
    if isinstance(obj, (str, os.PathLike)):
        fmt = detect.detect_format(obj)
        if fmt in ("keras", "keras-h5"):
            _no_spec(spec, "Keras files")
            return build_whole(whole_keras.read(obj), whole_keras.KerasFileError, batch_first)
        if fmt == "onnx":
            _no_spec(spec, "ONNX graphs")
            return build_whole(whole_onnx.read(obj), whole_onnx.ONNXFormatError, batch_first)
        if fmt == "native":
            m = whole_native.load(obj)
            if batch_first is not None and batch_first != m.config.batch_first:
                from .model import LSTM

                m = m._with_lstm(LSTM(m.lstm.weights, **dict(m.lstm.options,
                                                             batch_first=batch_first)))
            return m
        return build_whole(whole_torch.read(obj, spec, batch_first), whole_torch.TorchFileError)
    kind = _object_kind(obj)
    if kind == "keras":
        _no_spec(spec, "Keras models")
        return build_whole(whole_keras.read(obj), whole_keras.KerasFileError, batch_first)
    if kind == "onnx":
        _no_spec(spec, "ONNX graphs")
        return build_whole(whole_onnx.read(obj), whole_onnx.ONNXFormatError, batch_first)
    if kind == "torch":
        return build_whole(whole_torch.read(obj, spec, batch_first), WholeModelError)
    raise TypeError(f"load_model expects a path, a keras.Model, an onnx.ModelProto, a torch "
                    f"nn.Module or a state dict; got {type(obj).__name__}")


def _object_kind(obj) -> Optional[str]:
    """Which reader takes a framework object (none is imported to find out)."""
    from collections.abc import Mapping

    mod = type(obj).__module__.split(".")[0]
    if mod in ("keras", "tf_keras", "tensorflow") and hasattr(obj, "get_config"):
        return "keras"
    if mod == "onnx" or type(obj).__name__ in ("ModelProto", "GraphProto"):
        return "onnx"
    if mod == "torch" or isinstance(obj, Mapping) or hasattr(obj, "state_dict"):
        return "torch"
    return None


def _no_spec(spec, what):
    if spec:
        raise TypeError(f"spec= is for torch state dicts; {what} record their architecture")
