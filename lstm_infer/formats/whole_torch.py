"""PyTorch whole models: nn.Embedding -> nn.LSTM -> nn.Linear head(s), from a state dict.

A state dict holds weights, not ``forward()``: which module feeds which, the head's
activations, ``batch_first`` and where the head reads the LSTM are not in it. They come
from a short *spec* (a dict; every key optional)::

    {"embedding": "emb",           # module name of the nn.Embedding, or None for none
     "lstm": "rnn",                # prefix of the nn.LSTM (default: the only one)
     "head": ["fc1", "fc2"],       # nn.Linear modules in order, or [] for none
     "activation": ["relu", "softmax"],   # one per head layer, or the last one's name
     "head_on": "last",            # "last" (default), "last_step" or "steps"
     "pad_id": 0,                  # lengths from trailing padding (pack_padded_sequence)
     "batch_first": True}          # default False, as nn.LSTM

given to ``li.load_model(path, spec=...)``, or saved in the checkpoint itself under the
key ``"lstm_infer_spec"`` (``torch.save({"model": sd, "lstm_infer_spec": {...}}, f)``;
read by the restricted unpickler like the rest: plain values only). The caller's spec
wins over the file's, key by key.

Names not given are inferred from a Sequential-like state dict: the modules beside the
LSTM (under the same parent) in the dict's order, which is the order of assignment in
``__init__``. Before the LSTM: nothing, or one module with a lone 2-D ``weight`` of
width ``input_size`` (the embedding). After it: modules with a 2-D ``weight`` and an
optional bias whose sizes chain from the LSTM's output size (the head). Anything else
(a LayerNorm, a second embedding, modules out of order) is ambiguous and raises
`WholeModelError` listing the modules and asking for a spec. Names in a spec may omit
a checkpoint's container (``"fc"`` finds ``state_dict.fc``).

Semantics (what torch's forward must be doing for the results to match):

* ``head_on="last"``: the head reads the last layer's final hidden state, both
  directions concatenated (``h_n[-1]``, or ``cat((h_n[-2], h_n[-1]), 1)``); "last_step":
  ``out[:, -1]``; "steps": every step of ``out``.
* activations: none is recorded in a state dict; without ``activation`` the head is
  linear (logits), and ``parts`` says so.
* ``nn.Embedding(padding_idx=...)`` affects training only: torch's LSTM runs over
  padding unless forward packs the batch. ``pad_id`` computes lengths from trailing
  padding, which equals a forward that packs with ``lengths=(x != pad_id).sum(1)``;
  without it every step is valid (a forward without packing), unless ``lengths=`` is
  passed at call time. ``max_norm`` embeddings (renormalised in forward) are not
  reproduced.
"""
from __future__ import annotations

from collections.abc import Mapping

from . import pytorch as P
from .errors import guard
from .torch_pickle import TorchFile, TorchFileError
from .whole_common import (HEAD_ON, WholeModelData, WholeModelError, chain_dense,
                           check_activation, float_matrix)

__all__ = ["read", "SPEC_KEY", "SPEC_KEYS", "TorchFileError"]

SPEC_KEY = "lstm_infer_spec"
SPEC_KEYS = ("embedding", "lstm", "head", "activation", "head_on", "pad_id", "batch_first")


class _Error(WholeModelError, TorchFileError):
    """A torch state dict whose parts cannot be read as a whole model."""


def read(obj, spec=None, batch_first=None) -> WholeModelData:
    """A whole model from a torch file (path / file object), state dict or nn.Module."""
    if isinstance(obj, (str, bytes)) or hasattr(obj, "__fspath__") or \
            (hasattr(obj, "read") and hasattr(obj, "seek")):
        with TorchFile(obj) as tf, guard(TorchFileError, tf.path):
            try:
                return _read(tf.obj, spec, batch_first, tf.path)
            except TorchFileError:
                raise
            except (ValueError, TypeError) as e:
                raise _Error(f"{tf.path}: {e}") from e
    try:
        import torch.nn as nn
    except ImportError:
        nn = None
    if nn is not None and isinstance(obj, nn.Module):
        sd = obj.state_dict()
        if batch_first is None and not (spec and "batch_first" in spec):
            chosen, _ = P._resolve(P._flatten(sd), (spec or {}).get("lstm"))
            sub = dict(obj.named_modules()).get(chosen[:-1] if chosen else "")
            batch_first = bool(getattr(sub, "batch_first", False))
        return _read(sd, spec, batch_first, f"<{type(obj).__name__}>")
    if isinstance(obj, Mapping):
        return _read(obj, spec, batch_first, "the state dict")
    raise TypeError(f"expected a torch file, state dict or nn.Module; got {type(obj).__name__}")


def _spec(obj, spec, where) -> dict:
    """The file's spec (if any) updated with the caller's, keys and types checked."""
    merged = {}
    stored = obj.get(SPEC_KEY) if isinstance(obj, Mapping) else None
    for s, what in ((stored, f"{where}: {SPEC_KEY!r}"), (spec, "spec")):
        if s is None:
            continue
        if not isinstance(s, Mapping):
            raise _Error(f"{what} must be a dict; got {type(s).__name__}")
        unknown = sorted(str(k) for k in s if k not in SPEC_KEYS)
        if unknown:
            raise _Error(f"{what}: unknown key(s) {unknown}; expected some of {list(SPEC_KEYS)}")
        merged.update(s)
    for k in ("embedding", "lstm"):
        if merged.get(k) is not None and not isinstance(merged[k], str):
            raise _Error(f"spec[{k!r}] must be a module name (str) or None; got {merged[k]!r:.80}")
    head = merged.get("head")
    if isinstance(head, str):
        merged["head"] = [head]
    elif head is not None and not (isinstance(head, (list, tuple)) and
                                   all(isinstance(h, str) for h in head)):
        raise _Error(f"spec['head'] must be a list of module names; got {head!r:.80}")
    if merged.get("head_on", "last") not in HEAD_ON:
        raise _Error(f"spec['head_on'] must be one of {HEAD_ON}; got {merged['head_on']!r:.80}")
    pad = merged.get("pad_id")
    if pad is not None and (isinstance(pad, bool) or not isinstance(pad, int) or pad < 0):
        raise _Error(f"spec['pad_id'] must be a non-negative token id; got {pad!r:.80}")
    if not isinstance(merged.get("batch_first", False), bool):
        raise _Error(f"spec['batch_first'] must be True or False; got "
                     f"{merged['batch_first']!r:.80}")
    return merged


class _Modules:
    """The modules beside the LSTM: name -> {param: key}, in state-dict order, each
    marked before / after the LSTM."""

    def __init__(self, flat, lstm_prefix):
        body = lstm_prefix[:-1]
        self.root = body.rpartition(".")[0] + "." if "." in body else ""
        self.flat = flat
        self.params, self.after = {}, {}
        seen_lstm = False
        for key in flat:
            if lstm_prefix and key.startswith(lstm_prefix):
                seen_lstm = True
                continue
            if not key.startswith(self.root) or key.startswith(SPEC_KEY + ".") or \
                    not _is_tensor(flat[key]):
                continue
            mod, _, param = key[len(self.root):].rpartition(".")
            if mod not in self.params:
                self.params[mod] = {}
                self.after[mod] = seen_lstm
            self.params[mod][param] = key

    def find(self, name, what) -> str:
        """A module name given in a spec: as is, or under the LSTM's parent."""
        for cand in (name, name[len(self.root):] if name.startswith(self.root) else None):
            if cand is not None and cand in self.params:
                return cand
        raise _Error(f"spec[{what!r}]: no module {name!r} (with a weight) beside the LSTM; "
                     f"modules: {list(self.params)[:12]}")

    def weight(self, mod, param="weight", ndim=2):
        key = self.params[mod].get(param)
        if key is None:
            raise _Error(f"module {self.root}{mod} has no {param} (it has "
                         f"{sorted(self.params[mod])})")
        return float_matrix(P._weight(self.flat[key], key), key, "the state dict", ndim, _Error)


def _is_tensor(v) -> bool:
    return hasattr(v, "shape") and hasattr(v, "dtype")


def _linear_like(mods: _Modules, m) -> bool:
    p = mods.params[m]
    if set(p) not in ({"weight"}, {"weight", "bias"}):
        return False
    return len(mods.flat[p["weight"]].shape) == 2 and \
        ("bias" not in p or len(mods.flat[p["bias"]].shape) == 1)


def _infer(mods: _Modules, I, F, where, emb, head):
    """(embedding module or None, head modules in order) for the parts the spec does not
    name (`...`): every other module beside the LSTM must be a Linear-like module (a 2-D
    weight, an optional bias) and take part. Candidates are found by shape -- the
    embedding a lone 2-D weight of width I, the head a chain of modules from F features
    -- and a choice between several is made by the state dict's order (embedding before
    the LSTM, the head after it, in order); anything still ambiguous raises."""
    named = {m for m in [emb] + (head if head is not ... else []) if m not in (None, ...)}
    free = [m for m in mods.params if m not in named]
    hint = ("name the parts with spec={'embedding': NAME or None, 'head': [NAMES]} "
            "(see lstm_infer.formats.whole_torch)")
    if head is not ...:  # the head is named: the embedding is the one table of width I
        tables = [m for m in free if set(mods.params[m]) == {"weight"} and
                  len(mods.flat[mods.params[m]["weight"]].shape) == 2 and
                  mods.flat[mods.params[m]["weight"]].shape[1] == I]
        if len(tables) > 1:
            tables = [m for m in tables if not mods.after[m]]
        if len(tables) > 1:
            raise _Error(f"{where}: cannot infer the embedding among "
                         f"{[mods.root + m for m in tables]}; {hint}")
        return (tables[0] if tables else None), head
    odd = [m for m in free if not _linear_like(mods, m)]
    if odd:
        raise _Error(f"{where}: cannot infer the whole model: modules "
                     f"{[mods.root + m for m in odd]} beside the LSTM are neither an "
                     f"embedding nor Linear layers; {hint}")
    shape = {m: mods.flat[mods.params[m]["weight"]].shape for m in free}

    def chains(rest, n):
        """Every ordering of all of `rest` whose sizes chain from n."""
        if not rest:
            yield []
        for m in rest:
            if shape[m][1] == n:
                for tail in chains([r for r in rest if r != m], shape[m][0]):
                    yield [m] + tail

    emb_options = [emb] if emb is not ... else [None] + [
        m for m in free if set(mods.params[m]) == {"weight"} and shape[m][1] == I]
    found = []
    for e in emb_options:
        rest = [m for m in free if m != e]
        for order in chains(rest, F):
            found.append((e, order))
            if len(found) > 8:
                break
    ways = len(found)
    if len(found) > 1:  # the state dict's order decides (Sequential-like)
        pos = {m: i for i, m in enumerate(mods.params)}
        found = [(e, h) for e, h in found
                 if (e is None or not mods.after[e]) and all(mods.after[m] for m in h)
                 and [pos[m] for m in h] == sorted(pos[m] for m in h)]
    if len(found) != 1:
        what = "several ways" if ways > 1 else "no way"
        raise _Error(f"{where}: cannot infer the whole model: there is {what} to read the "
                     f"modules beside the LSTM {[mods.root + m for m in free]} as an "
                     f"embedding (a lone (vocab, {I}) weight) and a head of Linear layers "
                     f"from {F} features; {hint}")
    return found[0]


def _read(obj, spec, batch_first, where) -> WholeModelData:
    if not isinstance(obj, Mapping):
        raise _Error(f"{where}: a {type(obj).__name__}, not a state dict")
    spec = _spec(obj, spec, where)
    flat = {k: v for k, v in P._flatten(obj).items() if not k.startswith(SPEC_KEY + ".")}
    chosen, _ = P._resolve(flat, spec.get("lstm"))
    bf = batch_first if batch_first is not None else spec.get("batch_first", False)
    lstm = P.read_state_dict(flat, chosen, batch_first=bool(bf))
    lstm.source = where
    I = lstm.layers[0][0]["w_ih"].shape[1]
    last = lstm.layers[-1]
    F = len(last) * last[0]["w_hh"].shape[1]
    mods = _Modules(flat, chosen)
    names = {"lstm": chosen.rstrip(".") or "(the state dict)"}
    notes = []

    emb_given, head_given = "embedding" in spec, "head" in spec
    emb = (mods.find(spec["embedding"], "embedding") if spec["embedding"] else None) \
        if emb_given else None
    head_mods = [mods.find(h, "head") for h in spec["head"]] if head_given else []
    if not (emb_given and head_given):
        emb, head_mods = _infer(mods, I, F, where, emb if emb_given else ...,
                                head_mods if head_given else ...)
    embedding = None
    if emb is not None:
        table = mods.weight(emb)
        if table.shape[1] != I:
            raise _Error(f"{where}: embedding {mods.root}{emb}.weight has shape {table.shape}; "
                         f"its width must be the LSTM's input_size {I}")
        embedding = {"table": table, "pad_id": spec.get("pad_id"), "name": mods.root + emb}
        names["embedding"] = mods.root + emb
    elif spec.get("pad_id") is not None:
        raise _Error(f"{where}: spec['pad_id'] needs an embedding (token ids in)")

    head = []
    for m in head_mods:
        w = mods.weight(m)
        b = mods.weight(m, "bias", 1) if "bias" in mods.params[m] else None
        head.append({"weight": w.T, "bias": b, "activation": "linear", "name": mods.root + m})
    chain_dense(head, F, where, _Error)
    if head:
        names["head"] = ", ".join(d["name"] for d in head)

    acts = spec.get("activation")
    if acts is None:
        acts = ["linear"] * len(head)
        if head:
            notes.append("torch state dicts do not record activations: the head is linear "
                         "(logits) unless spec['activation'] says otherwise")
    elif isinstance(acts, str):
        if len(head) > 1:
            raise _Error(f"{where}: spec['activation'] is one name for a head of "
                         f"{len(head)} layers; give one per layer, e.g. "
                         f"{['relu'] * (len(head) - 1) + [acts]}")
        acts = [acts]
    if not isinstance(acts, (list, tuple)) or len(acts) != len(head):
        raise _Error(f"{where}: spec['activation'] must name one activation per head layer "
                     f"({len(head)}); got {acts!r:.80}")
    for d, a in zip(head, acts):
        d["activation"] = check_activation(a, f"{where}: spec['activation']", _Error)

    head_on = spec.get("head_on", "last" if head else "steps")
    if head and "head_on" not in spec:
        notes.append("head_on='last' (the head reads the final hidden state): torch's "
                     "default here, not recorded in a state dict; spec['head_on'] changes it")
    return WholeModelData(lstm, embedding=embedding, head=head, head_on=head_on,
                          source=where, names=names, notes=notes)

