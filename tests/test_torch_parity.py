"""Live parity with torch.nn.LSTM / nn.LSTMCell on the same weights (DESIGN §3: 1e-5).

Also checks the numpy oracle itself against torch, so the oracle the rest of
the suite trusts is anchored to an independent implementation.
"""
from __future__ import annotations

import numpy as np
import pytest

import lstm_infer as li
from conftest import TOL_FRAMEWORK, assert_close
from reference import lstm_reference, split_state, stack_state

try:  # every test here needs torch; each one skips on its own (_torch_setup)
    import torch
    from torch import nn
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
except ImportError:
    torch = nn = pack_padded_sequence = pad_packed_sequence = None


pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported:UserWarning")


@pytest.fixture(autouse=True)
def _torch_setup():
    pytest.importorskip("torch")
    torch.manual_seed(1234)
    prev = torch.get_num_threads()
    torch.set_num_threads(1)  # torch's spinning OpenMP pool would compete with ours
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_num_threads(prev)


def _np(t):
    return t.detach().cpu().numpy()


def _x(shape, dtype=None):
    dtype = torch.float32 if dtype is None else dtype
    return (torch.rand(shape, dtype=torch.float64) * 6 - 3).to(dtype)  # |x| <= 3


def _compare(ours, theirs, dtype, what):
    tol = TOL_FRAMEWORK[np.dtype(dtype).name]
    (o, (h, c)), (to, (th, tc)) = ours, theirs
    assert_close(o, _np(to), tol, f"{what} out")
    assert_close(h, _np(th), tol, f"{what} h_n")
    assert_close(c, _np(tc), tol, f"{what} c_n")


CONFIGS = {
    "1layer": dict(input_size=5, hidden_size=20),
    "H1": dict(input_size=3, hidden_size=1),
    "2layers": dict(input_size=5, hidden_size=20, num_layers=2),
    "bidir": dict(input_size=5, hidden_size=20, bidirectional=True),
    "bidir-3layers": dict(input_size=4, hidden_size=33, num_layers=3, bidirectional=True),
    "proj": dict(input_size=5, hidden_size=20, proj_size=7),
    "proj-bidir-2layers": dict(input_size=6, hidden_size=24, num_layers=2, bidirectional=True,
                               proj_size=10),
    "no-bias": dict(input_size=5, hidden_size=20, bias=False),
    "H64": dict(input_size=16, hidden_size=64, num_layers=2),
}


@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
@pytest.mark.parametrize("cfg", list(CONFIGS), ids=list(CONFIGS))
def test_lstm_module(cfg, batch_first, simd_level):
    kw = CONFIGS[cfg]
    ref = nn.LSTM(batch_first=batch_first, **kw).eval()
    m = li.from_torch(ref)
    assert m.config.batch_first == batch_first and m.config.dtype == "float32"
    T, B = 40, 6
    x = _x((B, T, kw["input_size"]) if batch_first else (T, B, kw["input_size"]))
    _compare(m(x.numpy()), ref(x), np.float32, cfg)
    # B > 8 on one thread: the BLAS recurrent path
    x = _x((11, 9, kw["input_size"]))
    if batch_first:
        x = x.transpose(0, 1).contiguous()
    _compare(m(x.numpy(), num_threads=1), ref(x), np.float32, f"{cfg} B=11")


@pytest.mark.parametrize("cfg", ["2layers", "proj-bidir-2layers"])
def test_initial_state(cfg, simd_level):
    kw = CONFIGS[cfg]
    ref = nn.LSTM(**kw).eval()
    m = li.from_torch(ref)
    D = 2 if kw.get("bidirectional") else 1
    L = kw.get("num_layers", 1)
    H, P = kw["hidden_size"], kw.get("proj_size", 0)
    B = 5
    h0 = torch.rand(D * L, B, P or H) - 0.5
    c0 = torch.rand(D * L, B, H) - 0.5
    x = _x((17, B, kw["input_size"]))
    _compare(m(x.numpy(), state=(h0.numpy(), c0.numpy())), ref(x, (h0, c0)), np.float32, cfg)


@pytest.mark.parametrize("B,nt", [(5, None), (12, 1)], ids=["B5", "B12-blas"])
@pytest.mark.parametrize("cfg", ["1layer", "bidir", "proj-bidir-2layers", "bidir-3layers"])
def test_lengths_vs_pack_padded_sequence(cfg, B, nt, simd_level):
    """lengths == torch's packed sequences (enforce_sorted=False), reverse directions included."""
    kw = CONFIGS[cfg]
    ref = nn.LSTM(**kw).eval()
    m = li.from_torch(ref)
    T = 23
    rng = np.random.default_rng(B)
    lengths = rng.integers(1, T + 1, B)  # torch refuses length 0
    lengths[0] = T
    lengths[-1] = 1
    lengths = rng.permutation(lengths)
    x = _x((T, B, kw["input_size"]))
    D = 2 if kw.get("bidirectional") else 1
    L = kw.get("num_layers", 1)
    h0 = torch.rand(D * L, B, kw.get("proj_size") or kw["hidden_size"]) - 0.5
    c0 = torch.rand(D * L, B, kw["hidden_size"]) - 0.5
    packed = pack_padded_sequence(x, torch.as_tensor(lengths), enforce_sorted=False)
    po, (th, tc) = ref(packed, (h0, c0))
    to, _ = pad_packed_sequence(po, total_length=T)
    ours = m(x.numpy(), state=(h0.numpy(), c0.numpy()), lengths=lengths, num_threads=nt)
    _compare(ours, (to, (th, tc)), np.float32, cfg)


def test_batch_first_lengths(simd_level):
    ref = nn.LSTM(4, 20, bidirectional=True, batch_first=True).eval()
    m = li.from_torch(ref)
    lengths = np.array([3, 9, 1, 6])
    x = _x((4, 9, 4))
    po, (th, tc) = ref(pack_padded_sequence(x, torch.as_tensor(lengths), batch_first=True,
                                            enforce_sorted=False))
    to, _ = pad_packed_sequence(po, batch_first=True, total_length=9)
    _compare(m(x.numpy(), lengths=lengths), (to, (th, tc)), np.float32, "batch_first lengths")


def test_unbatched():
    ref = nn.LSTM(4, 20, num_layers=2, bidirectional=True).eval()
    m = li.from_torch(ref)
    x = _x((12, 4))
    h0, c0 = torch.rand(4, 20) - 0.5, torch.rand(4, 20) - 0.5
    _compare(m(x.numpy(), state=(h0.numpy(), c0.numpy())), ref(x, (h0, c0)), np.float32,
             "unbatched")


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_lstm_cell(bias, simd_level):
    cell = nn.LSTMCell(6, 20, bias=bias).eval()
    m = li.from_torch(cell)
    assert m.config.num_layers == 1 and not m.config.bidirectional
    B = 7
    x = _x((B, 6))
    h0, c0 = torch.rand(B, 20) - 0.5, torch.rand(B, 20) - 0.5
    th, tc = cell(x, (h0, c0))
    out, (h, c) = m(x.numpy()[None], state=(h0.numpy()[None], c0.numpy()[None]))
    assert_close(out[0], _np(th), 1e-5, "cell out")
    assert_close(h[0], _np(th), 1e-5, "cell h")
    assert_close(c[0], _np(tc), 1e-5, "cell c")
    # a sequence through the cell, step by step, with carried state
    xs = _x((15, B, 6))
    h, c = h0, c0
    hs = []
    for t in range(15):
        h, c = cell(xs[t], (h, c))
        hs.append(h)
    _compare(m(xs.numpy(), state=(h0.numpy()[None], c0.numpy()[None])),
             (torch.stack(hs), (h[None], c[None])), np.float32, "cell sequence")


def _seq2seq():
    """A model with three recurrent submodules (a class defined once torch is there)."""
    class Seq2Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(3, 5)
            self.encoder = nn.LSTM(5, 20, num_layers=2, bidirectional=True)
            self.decoder = nn.LSTM(40, 12, proj_size=4)
            self.cell = nn.LSTMCell(4, 8)
            self.head = nn.Linear(4, 2)

    return Seq2Seq()


@pytest.mark.parametrize("prefix", ["encoder", "encoder.", "decoder.", "cell."])
def test_state_dict_with_prefix(prefix):
    net = _seq2seq().eval()
    sub = getattr(net, prefix.rstrip("."))
    sd = net.state_dict()
    for obj in (sd, {k: v.numpy() for k, v in sd.items()}, net):
        m = li.from_torch(obj, prefix=prefix)
        I = sub.input_size
        x = _x((9, 3, I))
        if isinstance(sub, nn.LSTMCell):
            th, tc = sub(x[0])
            out, (h, c) = m(x.numpy()[:1])
            assert_close(h[0], _np(th), 1e-5, f"{prefix} h")
            assert_close(c[0], _np(tc), 1e-5, f"{prefix} c")
        else:
            _compare(m(x.numpy()), sub(x), np.float32, prefix)


def test_state_dict_ambiguous_without_prefix():
    with pytest.raises(ValueError, match="prefix"):
        li.from_torch(_seq2seq().state_dict())


def test_state_dict_unique_lstm_found_without_prefix():
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(3, 20)
            self.fc = nn.Linear(20, 1)

    net = Wrapper().eval()
    m = li.from_torch(net.state_dict())
    x = _x((6, 2, 3))
    _compare(m(x.numpy()), net.rnn(x), np.float32, "auto prefix")


@pytest.mark.parametrize("cfg", ["bidir", "proj-bidir-2layers"])
def test_float64(cfg):
    kw = CONFIGS[cfg]
    ref = nn.LSTM(**kw).double().eval()
    m = li.from_torch(ref)
    assert m.config.dtype == "float64"
    x = _x((30, 4, kw["input_size"]), torch.float64)
    lengths = np.array([30, 12, 1, 25])
    po, (th, tc) = ref(pack_padded_sequence(x, torch.as_tensor(lengths), enforce_sorted=False))
    to, _ = pad_packed_sequence(po, total_length=30)
    _compare(m(x.numpy(), lengths=lengths), (to, (th, tc)), np.float64, cfg)


def test_dtype_override():
    ref = nn.LSTM(3, 20).eval()
    m = li.from_torch(ref, dtype="float64")
    assert m.config.dtype == "float64"
    x = _x((8, 2, 3))
    _compare(m(x.numpy()), ref(x), np.float32, "float64 model of float32 torch weights")


def test_half_precision_weights():
    ref = nn.LSTM(3, 20).eval()
    m = li.from_torch(ref.to(torch.bfloat16))  # bf16 -> float32 on load
    x = _x((8, 2, 3))
    ref32 = nn.LSTM(3, 20).eval()
    ref32.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
    _compare(m(x.numpy()), ref32(x), np.float32, "bf16 weights")


@pytest.mark.parametrize("cfg", ["proj-bidir-2layers", "bidir-3layers"])
def test_oracle_matches_torch(cfg):
    """The numpy oracle agrees with torch in float64 (lengths, state, reverse, projection)."""
    kw = CONFIGS[cfg]
    ref = nn.LSTM(**kw).double().eval()
    m = li.from_torch(ref)  # only used to read torch's weights in canonical form
    T, B = 14, 4
    x = _x((T, B, kw["input_size"]), torch.float64)
    lengths = np.array([14, 5, 9, 1])
    D, L = 2, kw["num_layers"]
    h0 = torch.rand(D * L, B, kw.get("proj_size") or kw["hidden_size"], dtype=torch.float64)
    c0 = torch.rand(D * L, B, kw["hidden_size"], dtype=torch.float64)
    po, (th, tc) = ref(pack_padded_sequence(x, torch.as_tensor(lengths), enforce_sorted=False),
                       (h0, c0))
    to, _ = pad_packed_sequence(po, total_length=T)
    w = m.weights
    out, h_n, c_n = lstm_reference(w, x.numpy(), (split_state(h0.numpy(), w),
                                                  split_state(c0.numpy(), w)), lengths)
    assert_close(out, _np(to), 1e-12, "oracle out")
    assert_close(stack_state(h_n), _np(th), 1e-12, "oracle h_n")
    assert_close(stack_state(c_n), _np(tc), 1e-12, "oracle c_n")
