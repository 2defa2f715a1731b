"""Whole torch models from state-dict files against torch's own forward: the classifier
Embedding -> LSTM(2 layers, batch_first) -> Linear on the last hidden state (and its
variants: bidirectional, on out[:, -1], per step, a two-layer head, packed padding),
read with a spec, with the spec saved in the checkpoint, and with the names inferred;
ambiguous state dicts and bad specs are refused with a message."""
from __future__ import annotations

import numpy as np
import pytest

try:
    import torch
    nn = torch.nn
except ImportError:  # each test skips on its own (the core venv has no torch)
    torch = nn = None

import lstm_infer as li  # noqa: E402
from conftest import TOL_FRAMEWORK, assert_close  # noqa: E402
from test_whole_model import damaged_copies  # noqa: E402
from lstm_infer.sequence_model import WholeModelError  # noqa: E402

TOL = TOL_FRAMEWORK["float32"]
V, E, H, C = 40, 12, 16, 5


@pytest.fixture(autouse=True)
def _need_torch():
    pytest.importorskip("torch")


class Classifier(nn.Module if nn is not None else object):
    """What users write: tokens -> embedding -> LSTM -> head (on `on`) -> activation."""

    def __init__(self, bidirectional=False, on="last", act="softmax", hidden_head=0,
                 pack=False, num_layers=2):
        super().__init__()
        self.on, self.act, self.pack = on, act, pack
        self.emb = nn.Embedding(V, E, padding_idx=0)
        self.rnn = nn.LSTM(E, H, num_layers=num_layers, batch_first=True,
                           bidirectional=bidirectional)
        F = 2 * H if bidirectional else H
        if hidden_head:
            self.fc1 = nn.Linear(F, hidden_head)
            self.fc2 = nn.Linear(hidden_head, C)
        else:
            self.fc = nn.Linear(F, C)

    def forward(self, x):
        e = self.emb(x)
        if self.pack:
            lengths = (x != 0).sum(1)
            packed = nn.utils.rnn.pack_padded_sequence(e, lengths.clamp(min=1), batch_first=True,
                                                       enforce_sorted=False)
            out, (h, _) = self.rnn(packed)
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                      total_length=x.shape[1])
        else:
            out, (h, _) = self.rnn(e)
        if self.on == "last":
            z = torch.cat([h[-2], h[-1]], 1) if self.rnn.bidirectional else h[-1]
        elif self.on == "last_step":
            z = out[:, -1]
        else:
            z = out
        if hasattr(self, "fc1"):
            z = self.fc2(torch.relu(self.fc1(z)))
        else:
            z = self.fc(z)
        return {"softmax": lambda v: torch.softmax(v, -1), "sigmoid": torch.sigmoid,
                "log_softmax": lambda v: torch.log_softmax(v, -1), "linear": lambda v: v}[
            self.act](z)


def _ids(B=4, T=11, seed=0, pad_lengths=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, V, (B, T), generator=g)
    if pad_lengths is not None:
        for b, n in enumerate(pad_lengths):
            x[b, n:] = 0
    return x


def _torch(model, x):
    with torch.no_grad():
        return model(x).numpy()


def _make(seed=0, **kw):
    torch.manual_seed(seed)
    return Classifier(**kw).eval()


# ----------------------------------------------------------------------------- parity
@pytest.mark.parametrize("kw", [
    dict(), dict(bidirectional=True), dict(on="last_step"), dict(on="steps"),
    dict(bidirectional=True, on="last_step"), dict(bidirectional=True, on="steps"),
    dict(act="sigmoid"), dict(act="log_softmax"), dict(act="linear", num_layers=1),
], ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()) or "classifier")
def test_state_dict_file_with_spec(tmp_path, kw):
    model = _make(**kw)
    path = tmp_path / "clf.pt"
    torch.save(model.state_dict(), path)
    spec = {"batch_first": True, "head_on": kw.get("on", "last"),
            "activation": kw.get("act", "softmax")}
    m = li.load_model(path, spec=spec)
    for seed, B, T in ((0, 4, 11), (1, 1, 3), (2, 7, 20)):
        x = _ids(B, T, seed)
        assert_close(m(x.numpy()), _torch(model, x), TOL, f"B={B} T={T}")


def test_two_layer_head_inferred(tmp_path):
    """emb, rnn, fc1, fc2 in the state dict's order: the names are inferred; the
    activations (not in a state dict) come from the spec."""
    model = _make(hidden_head=9)
    path = tmp_path / "clf.pth"
    torch.save(model.state_dict(), path)
    m = li.load_model(path, spec={"batch_first": True, "activation": ["relu", "softmax"]})
    assert [p["name"] for p in m.parts if p["part"] == "dense"] == ["fc1", "fc2"]
    x = _ids()
    assert_close(m(x.numpy()), _torch(model, x), TOL)
    with pytest.raises(WholeModelError, match="one per layer"):
        li.load_model(path, spec={"activation": "softmax"})


def test_spec_saved_in_checkpoint(tmp_path):
    """The spec stored beside the weights: the file runs with no argument at all."""
    model = _make(bidirectional=True)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "epoch": 3,
                "lstm_infer_spec": {"batch_first": True, "activation": "softmax"}}, path)
    m = li.load_model(path)
    x = _ids(5, 9)
    assert_close(m(x.numpy()), _torch(model, x), TOL)
    # the caller's spec wins, key by key
    logits = li.load_model(path, spec={"activation": "linear"})
    assert logits.head[-1].activation == "linear"
    p = torch.softmax(torch.from_numpy(logits(x.numpy())), -1).numpy()
    assert_close(p, _torch(model, x), TOL)


def test_module_object_and_in_memory_state_dict():
    model = _make(on="steps")
    x = _ids()
    m = li.load_model(model, spec={"head_on": "steps", "activation": "softmax"})
    assert m.config.batch_first  # taken from the nn.LSTM
    assert_close(m(x.numpy()), _torch(model, x), TOL)
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    m2 = li.load_model(sd, spec={"head_on": "steps", "activation": "softmax"},
                       batch_first=True)
    np.testing.assert_array_equal(m2(x.numpy()), m(x.numpy()))


def test_packed_padding_with_pad_id(tmp_path):
    """A forward that packs (lengths = non-pad tokens) is pad_id=0 in the spec."""
    for on in ("last", "steps"):
        model = _make(bidirectional=True, on=on, pack=True)
        path = tmp_path / "packed.pt"
        torch.save(model.state_dict(), path)
        m = li.load_model(path, spec={"batch_first": True, "head_on": on,
                                      "activation": "softmax", "pad_id": 0})
        x = _ids(5, 10, pad_lengths=[10, 6, 1, 3, 9])
        assert_close(m(x.numpy()), _torch(model, x), TOL, on)


def test_safetensors_with_torch_names(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    model = _make()
    path = tmp_path / "clf.safetensors"
    st.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    m = li.load_model(path, spec={"batch_first": True, "activation": "softmax"})
    x = _ids()
    assert_close(m(x.numpy()), _torch(model, x), TOL)


def test_quantized_whole_model_close_to_torch(tmp_path):
    model = _make(bidirectional=True)
    path = tmp_path / "clf.pt"
    torch.save(model.state_dict(), path)
    m = li.load_model(path, spec={"batch_first": True, "activation": "softmax"})
    x = _ids(6, 15)
    for mode in ("int8", "int8-weights"):
        err = np.max(np.abs(m.quantize(mode)(x.numpy()) - _torch(model, x)))
        assert 0 < err < 0.02, (mode, err)


# ----------------------------------------------------------------------------- refusals
def test_ambiguous_state_dicts(tmp_path):
    class WithNorm(Classifier):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(C)

    sd = WithNorm().state_dict()
    with pytest.raises(WholeModelError, match=r"norm.*spec"):
        li.load_model(sd)
    # named explicitly, the rest is ignored
    m = li.load_model(sd, spec={"head": ["fc"]})
    assert m.head[0].name == "fc"

    class Reordered(nn.Module):  # head registered before the LSTM: shapes decide
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(H, C)
            self.emb = nn.Embedding(V, E)
            self.rnn = nn.LSTM(E, H)

    m = li.load_model(Reordered().state_dict())
    assert m.embedding.name == "emb" and m.head[0].name == "fc"

    class Ambiguous(nn.Module):  # two (n, 16) tables, either could be the embedding
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(H, C, bias=False)
            self.emb = nn.Embedding(V, H)
            self.rnn = nn.LSTM(H, H)

    with pytest.raises(WholeModelError, match="several ways.*spec"):
        li.load_model(Ambiguous().state_dict())
    m = li.load_model(Ambiguous().state_dict(), spec={"embedding": "emb", "head": ["fc"]})
    assert m.config.vocab_size == V and m.head[0].out_features == C


@pytest.mark.parametrize("spec,match", [
    ({"bogus": 1}, "unknown key"),
    ({"head_on": "mean"}, "head_on"),
    ({"head": ["nope"]}, "no module 'nope'"),
    ({"embedding": "fc", "head": []}, "width"),
    ({"activation": "gelu"}, "not supported"),
    ({"pad_id": -1}, "pad_id"),
    ({"batch_first": "yes"}, "batch_first"),
], ids=["unknown", "head_on", "missing", "not-embedding", "activation", "pad", "bf"])
def test_bad_specs(spec, match):
    with pytest.raises(WholeModelError, match=match):
        li.load_model(_make().state_dict(), spec=spec)


def test_head_shapes_must_chain():
    sd = _make().state_dict()
    sd["fc.weight"] = torch.zeros(C, H + 1)
    with pytest.raises(WholeModelError, match="no way to read"):
        li.load_model(sd)
    with pytest.raises(WholeModelError, match="takes 17 features but the LSTM's output has 16"):
        li.load_model(sd, spec={"head": ["fc"]})


def test_pickled_module_still_refused(tmp_path):
    """Loading never unpickles code: a whole pickled nn.Module is refused by name."""
    path = tmp_path / "module.pt"
    torch.save(_make(), path)
    with pytest.raises(li.FormatError, match="state_dict"):
        li.load_model(path)


def test_damaged_files_raise_format_errors(tmp_path):
    path = tmp_path / "clf.pt"
    torch.save(_make().state_dict(), path)
    data = path.read_bytes()
    bad = tmp_path / "bad.pt"
    spec = {"batch_first": True, "activation": "softmax"}
    for damaged in damaged_copies(data, 30, 12):
        bad.write_bytes(damaged)
        try:
            li.load_model(bad, spec=spec)
        except li.FormatError:
            pass
