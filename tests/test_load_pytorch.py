"""PyTorch files read without torch: parity, checkpoints, prefixes, dtypes, safety, bad files.

Three groups:
- committed fixtures (tests/data/torch, made by scripts/make_torch_fixtures.py with
  real torch) against the outputs torch computed: run without torch;
- live exports with the installed torch into tmp_path (skipped without torch);
- malicious and broken files, crafted here byte by byte: a refused global is
  named in the error and has no side effect; a broken file is a TorchFileError
  (a ValueError) naming the file, never a crash or another exception type.
"""
from __future__ import annotations

import io
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import zipfile

import numpy as np
import pytest

import lstm_infer as li
from conftest import TOL_FRAMEWORK, assert_close
from lstm_infer.formats import torch_pickle as tp
from lstm_infer.formats.pytorch import is_torch_file, load_torch_file
from lstm_infer.formats.torch_pickle import (PickledModuleError, TorchFileError,
                                             UnsafePickleError)

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data", "torch")
sys.path.insert(0, os.path.join(HERE, "..", "scripts"))
from make_torch_fixtures import FIXTURES, MODULE_FILE  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore:LSTM with projections is not supported:UserWarning")


def _fixture(name):
    return os.path.join(DATA, FIXTURES[name][0])


@pytest.fixture(scope="module")
def expected():
    with np.load(os.path.join(DATA, "expected.npz")) as z:
        return dict(z)


def _check_outputs(m, x, out, h, c, dtype, what):
    tol = TOL_FRAMEWORK[dtype]
    o, (hn, cn) = m(x)
    assert_close(o, out, tol, f"{what} out")
    assert_close(hn, h, tol, f"{what} h_n")
    assert_close(cn, c, tol, f"{what} c_n")


# ============================================================================ committed fixtures
@pytest.mark.parametrize("name", list(FIXTURES), ids=list(FIXTURES))
def test_fixture_matches_torch(name, expected):
    """Files written by real torch give torch's outputs (no torch needed here)."""
    fname, prefix, dtype, _ = FIXTURES[name]
    m = li.from_torch(os.path.join(DATA, fname), prefix=prefix)
    assert m.config.dtype == dtype
    _check_outputs(m, expected[f"x_{name}"], expected[f"out_{name}"], expected[f"h_{name}"],
                   expected[f"c_{name}"], dtype, name)


def test_fixture_configs():
    c = li.from_torch(_fixture("bidir_proj")).config
    assert (c.input_size, c.hidden_size, c.num_layers, c.bidirectional, c.proj_size) == \
        (4, 8, 2, True, 3)
    c = load_torch_file(_fixture("cell")).config
    assert (c.input_size, c.hidden_size, c.num_layers, c.bidirectional) == (5, 6, 1, False)
    assert li.from_torch(_fixture("legacy_f64"), batch_first=True).config.batch_first


def test_fixture_prefixes(expected):
    path = _fixture("encdec_decoder")
    with pytest.raises(ValueError, match=r"found 2: \['decoder\.', 'encoder\.'\]") as e:
        li.from_torch(path)
    assert path in str(e.value) and isinstance(e.value, TorchFileError)
    assert li.from_torch(path, prefix="encoder").config.hidden_size == 4  # float16 weights
    assert li.from_torch(path, prefix="decoder").config.hidden_size == 5
    with pytest.raises(TorchFileError, match=r"'dec\.'.*\['decoder\.', 'encoder\.'\]"):
        li.from_torch(path, prefix="dec")
    # checkpoint: the container part of the prefix may be left out
    ck = _fixture("ckpt_bf16")
    full = li.from_torch(ck, prefix="state_dict.encoder.rnn.")
    short = li.from_torch(ck, prefix="encoder.rnn")
    x = expected["x_ckpt_bf16"]
    np.testing.assert_array_equal(full(x)[0], short(x)[0])


def test_fixture_bf16_is_exact():
    """bfloat16 -> float32 keeps every bit (the bf16 bits are the top half of a float32)."""
    sd = tp.load(_fixture("ckpt_bf16"))["state_dict"]
    w = sd["encoder.rnn.weight_ih_l0"]
    assert w.dtype == np.float32 and w.shape == (24, 4)
    assert not (w.view(np.uint32) & 0xFFFF).any()  # low 16 bits are zero: nothing rounded
    m = li.from_torch(_fixture("ckpt_bf16"))
    np.testing.assert_array_equal(m.weights[0][0]["w_ih"], w)


def test_fixture_pickled_module_refused():
    path = os.path.join(DATA, MODULE_FILE)
    with pytest.raises(PickledModuleError, match=r"state_dict\(\)") as e:
        li.from_torch(path)
    assert "torch.nn.modules.rnn.LSTM" in str(e.value) and path in str(e.value)


def test_is_torch_file(tmp_path):
    for name in FIXTURES:
        assert is_torch_file(_fixture(name)), name
    assert is_torch_file(os.path.join(DATA, MODULE_FILE))  # we read it to say what is wrong
    assert not is_torch_file(os.path.join(DATA, "expected.npz"))  # a zip, but not torch's
    assert not is_torch_file(tmp_path / "does-not-exist.pt")
    (tmp_path / "junk").write_bytes(b"\x00" * 100)
    assert not is_torch_file(tmp_path / "junk")
    keras_like = tmp_path / "m.keras"
    with zipfile.ZipFile(keras_like, "w") as z:
        z.writestr("config.json", "{}")
        z.writestr("model.weights.h5", b"")
    assert not is_torch_file(keras_like)
    # a native file is not a torch file; any other safetensors file goes to the torch
    # loader (detect_format's one rule), which says what it lacks
    native = tmp_path / "native.safetensors"
    li.LSTM.random(3, 2).save(native)
    assert not is_torch_file(native)
    other = tmp_path / "other.safetensors"
    _write_safetensors(other, {"layers.0.forward.w_ih": np.zeros((8, 3), np.float32)})
    assert is_torch_file(other)
    with pytest.raises(TorchFileError, match="expected exactly one LSTM"):
        li.load(other)


def test_file_object_and_pathlike(expected):
    path = _fixture("bidir_proj")
    with open(path, "rb") as f:
        m1 = li.from_torch(io.BytesIO(f.read()))
    import pathlib
    m2 = li.from_torch(pathlib.Path(path))
    x = expected["x_bidir_proj"]
    np.testing.assert_array_equal(m1(x)[0], m2(x)[0])


# ============================================================================ no double copy
def test_storage_read_once_and_tensors_are_views(tmp_path, monkeypatch):
    """Two tensors sharing one storage: the storage is read once; contiguous tensors are views."""
    W = np.arange(16 * 3, dtype=np.float32).reshape(16, 3) / 50
    U = np.arange(16 * 4, dtype=np.float32).reshape(16, 4) / 70
    flat = np.concatenate([W.ravel(), U.T.ravel()])  # U stored transposed: strides (1, 16)
    sd = {"weight_ih_l0": _T("s0", "FloatStorage", flat.size, 0, (16, 3), (3, 1)),
          "weight_hh_l0": _T("s0", "FloatStorage", flat.size, 48, (16, 4), (1, 16))}
    path = tmp_path / "shared.pt"
    _torch_zip(path, _state_dict_pickle(sd), {"s0": flat.tobytes()})
    reads = []
    orig = tp._ZipSource.read_into_buffer
    monkeypatch.setattr(tp._ZipSource, "read_into_buffer",
                        lambda self, st: reads.append(st.where) or orig(self, st))
    with tp.TorchFile(path) as tf:
        a, b = tf.obj["weight_ih_l0"].numpy(), tf.obj["weight_hh_l0"].numpy()
        assert len(reads) == 1  # one storage, one read
        assert a.base is not None and np.shares_memory(a, tf.obj["weight_ih_l0"].numpy())
        np.testing.assert_array_equal(a, W)
        np.testing.assert_array_equal(b, U)  # non-contiguous: as_strided + one copy
        assert b.flags.c_contiguous
    m = li.from_torch(path)
    np.testing.assert_array_equal(m.weights[0][0]["w_hh"], U)


def test_only_the_lstm_is_read(tmp_path, monkeypatch):
    big = np.ones(1000, np.float32)
    sd = _lstm_sd(3, 4, prefix="rnn.")
    storages = {f"s{i}": v.tobytes() for i, v in enumerate(sd.values())}
    entries = {k: _T(f"s{i}", "FloatStorage", v.size, 0, v.shape, _strides(v.shape))
               for i, (k, v) in enumerate(sd.items())}
    entries["other.weight"] = _T("big", "FloatStorage", big.size, 0, (1000,), (1,))
    storages["big"] = big.tobytes()
    path = tmp_path / "model.pt"
    _torch_zip(path, _state_dict_pickle(entries), storages)
    reads = []
    orig = tp._ZipSource.read_into_buffer
    monkeypatch.setattr(tp._ZipSource, "read_into_buffer",
                        lambda self, st: reads.append(st.where) or orig(self, st))
    li.from_torch(path)
    assert len(reads) == 4 and not any(w.endswith("data/big") for w in reads)


# ============================================================================ live torch exports
@pytest.fixture
def torch():
    t = pytest.importorskip("torch")
    prev = t.get_num_threads()
    t.set_num_threads(1)
    t.manual_seed(0)
    try:
        with t.no_grad():
            yield t
    finally:
        t.set_num_threads(prev)


def _torch_x(torch, shape, dtype=None):
    return (torch.rand(shape, dtype=torch.float64) * 6 - 3).to(dtype or torch.float32)


def _compare_module(torch, m, ref, batch_first=False, dtype="float32", what=""):
    T, B = 9, 3
    shape = (B, T, ref.input_size) if batch_first else (T, B, ref.input_size)
    x = _torch_x(torch, shape, torch.float64 if dtype == "float64" else torch.float32)
    out, (h, c) = ref(x)
    _check_outputs(m, x.numpy(), out.numpy(), h.numpy(), c.numpy(), dtype, what)


LSTM_CONFIGS = {
    "1layer": dict(input_size=3, hidden_size=5),
    "3layers": dict(input_size=3, hidden_size=6, num_layers=3),
    "bidir": dict(input_size=4, hidden_size=5, bidirectional=True),
    "bidir-2layers": dict(input_size=4, hidden_size=7, num_layers=2, bidirectional=True),
    "proj": dict(input_size=3, hidden_size=8, proj_size=3),
    "proj-bidir-2layers": dict(input_size=5, hidden_size=8, num_layers=2, bidirectional=True,
                               proj_size=2),
    "no-bias": dict(input_size=3, hidden_size=4, bias=False),
    "H1": dict(input_size=2, hidden_size=1),
}


@pytest.mark.parametrize("ext", [".pt", ".pth", ".bin"])
@pytest.mark.parametrize("cfg", list(LSTM_CONFIGS), ids=list(LSTM_CONFIGS))
def test_live_lstm_configs(torch, tmp_path, cfg, ext):
    ref = torch.nn.LSTM(**LSTM_CONFIGS[cfg]).eval()
    path = tmp_path / f"m{ext}"
    torch.save(ref.state_dict(), path)  # default: _use_new_zipfile_serialization=True
    assert zipfile.is_zipfile(path)
    _compare_module(torch, li.from_torch(str(path)), ref, what=cfg)


@pytest.mark.parametrize("cfg", ["2layers-legacy", "bidir-proj-legacy"])
def test_live_legacy_format(torch, tmp_path, cfg):
    kw = dict(input_size=3, hidden_size=5, num_layers=2) if cfg == "2layers-legacy" else \
        dict(input_size=3, hidden_size=6, bidirectional=True, proj_size=4)
    ref = torch.nn.LSTM(**kw).eval()
    path = tmp_path / "legacy.pt"
    torch.save(ref.state_dict(), path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path) and is_torch_file(path)
    _compare_module(torch, li.from_torch(path), ref, what=cfg)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_live_pickle_protocols(torch, tmp_path, protocol):
    ref = torch.nn.LSTM(3, 4, num_layers=2).eval()
    path = tmp_path / "p.pt"
    torch.save(ref.state_dict(), path, pickle_protocol=protocol)
    _compare_module(torch, li.from_torch(path), ref, what=f"protocol {protocol}")


@pytest.mark.parametrize("batch_first", [False, True])
def test_live_batch_first_is_independent_of_the_file(torch, tmp_path, batch_first):
    ref = torch.nn.LSTM(3, 5, batch_first=batch_first).eval()
    path = tmp_path / "m.pt"
    torch.save(ref.state_dict(), path)
    m = li.from_torch(path, batch_first=batch_first)
    assert m.config.batch_first == batch_first
    _compare_module(torch, m, ref, batch_first=batch_first)
    assert not li.from_torch(path).config.batch_first  # a state dict does not record it


def test_live_lstm_cell(torch, tmp_path):
    cell = torch.nn.LSTMCell(4, 6).eval()
    path = tmp_path / "cell.pt"
    torch.save({"cell." + k: v for k, v in cell.state_dict().items()}, path)
    m = li.from_torch(path)
    x = _torch_x(torch, (5, 2, 4))
    h = c = torch.zeros(2, 6)
    outs = []
    for t in range(5):
        h, c = cell(x[t], (h, c))
        outs.append(h)
    _check_outputs(m, x.numpy(), torch.stack(outs).numpy(), h[None].numpy(), c[None].numpy(),
                   "float32", "LSTMCell")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_live_tensor_dtypes(torch, tmp_path, dtype):
    tdt = getattr(torch, dtype)
    ref = torch.nn.LSTM(3, 6, num_layers=2, bidirectional=True).to(tdt)
    path = tmp_path / f"{dtype}.pt"
    torch.save(ref.state_dict(), path)
    m = li.from_torch(path)
    model_dtype = "float64" if dtype == "float64" else "float32"
    assert m.config.dtype == model_dtype
    # the loaded weights are the file's values exactly
    for k, v in tp.load(path).items():
        np.testing.assert_array_equal(v, ref.state_dict()[k].to(
            torch.float64 if dtype == "float64" else torch.float32).numpy())
    run = ref.double() if dtype == "float64" else ref.float()
    _compare_module(torch, m, run, dtype=model_dtype, what=dtype)


def test_live_safetensors_with_torch_names(torch, tmp_path):
    from safetensors.torch import save_file
    ref = torch.nn.LSTM(3, 5, num_layers=2, proj_size=2)
    path = tmp_path / "m.safetensors"
    save_file({"encoder." + k: v.to(torch.bfloat16) for k, v in ref.state_dict().items()}, path)
    assert is_torch_file(path)
    m = li.from_torch(path)
    ref.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in ref.state_dict().items()})
    _compare_module(torch, m, ref, what="safetensors bf16")


@pytest.mark.parametrize("layout", ["state_dict+epoch", "model", "model_state_dict+optimizer",
                                    "DataParallel"])
def test_live_checkpoint_dicts(torch, tmp_path, layout):
    net = torch.nn.Module()
    net.rnn = torch.nn.LSTM(3, 4)
    net.fc = torch.nn.Linear(4, 2)
    sd = net.state_dict()
    if layout == "state_dict+epoch":
        obj = {"state_dict": sd, "epoch": 3, "best": 0.5}
    elif layout == "model":
        obj = {"model": sd, "args": {"lr": 0.1, "layers": [1, 2]}}
    elif layout == "model_state_dict+optimizer":
        opt = torch.optim.Adam(net.parameters())
        for p in net.parameters():
            p.grad = torch.ones_like(p)
        opt.step()
        obj = {"model_state_dict": sd, "optimizer_state_dict": opt.state_dict(), "step": 10}
    else:
        obj = {"module." + k: v for k, v in sd.items()}
    path = tmp_path / "ckpt.pt"
    torch.save(obj, path)
    _compare_module(torch, li.from_torch(path), net.rnn, what=layout)


def test_live_prefix_selection(torch, tmp_path):
    class Seq2Seq(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.LSTM(3, 5, batch_first=True)
            self.decoder = torch.nn.LSTM(5, 4, num_layers=2)

    net = Seq2Seq().eval()
    path = tmp_path / "s2s.pt"
    torch.save(net.state_dict(), path)
    with pytest.raises(TorchFileError, match=r"found 2: \['decoder\.', 'encoder\.'\]"):
        li.from_torch(path)
    with pytest.raises(TorchFileError, match="prefix"):
        li.from_torch(path, prefix="nope.")
    _compare_module(torch, li.from_torch(path, prefix="encoder.", batch_first=True),
                    net.encoder, batch_first=True, what="encoder")
    _compare_module(torch, li.from_torch(path, prefix="decoder"), net.decoder, what="decoder")
    # a module in memory: the submodule's batch_first comes along
    assert li.from_torch(net, prefix="encoder").config.batch_first
    assert not li.from_torch(net, prefix="decoder").config.batch_first


def test_live_non_contiguous_and_shared_storage(torch, tmp_path):
    ref = torch.nn.LSTM(3, 4, num_layers=2).eval()
    sd = ref.state_dict()
    flat = torch.cat([v.flatten() for v in sd.values()])  # one storage, like flatten_parameters
    shared, off = {}, 0
    for k, v in sd.items():
        view = flat[off:off + v.numel()].view(v.shape)
        shared[k] = view.t().contiguous().t() if k.startswith("weight_hh") else view
        off += v.numel()
    assert not shared["weight_hh_l0"].is_contiguous()
    path = tmp_path / "shared.pt"
    torch.save(shared, path)
    _compare_module(torch, li.from_torch(path), ref, what="shared storage")


def test_live_from_torch_still_takes_modules_and_dicts(torch):
    ref = torch.nn.LSTM(3, 4).eval()
    _compare_module(torch, li.from_torch(ref), ref, what="module")
    _compare_module(torch, li.from_torch(ref.state_dict()), ref, what="state dict")
    _compare_module(torch, li.from_torch({"state_dict": ref.state_dict(), "epoch": 1}), ref,
                    what="checkpoint in memory")


def test_live_whole_module_refused(torch, tmp_path):
    path = tmp_path / "net.pt"
    torch.save(torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LSTM(3, 4)), path)
    with pytest.raises(PickledModuleError, match=r"save the weights with torch\.save\(model\."
                                                 r"state_dict\(\), path\)"):
        li.from_torch(path)
    legacy = tmp_path / "net-legacy.pt"
    torch.save(torch.nn.LSTM(3, 4), legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(PickledModuleError, match=r"state_dict\(\)"):
        li.from_torch(legacy)


def test_live_malicious_entry_in_real_checkpoint(torch, tmp_path):
    marker = tmp_path / "pwned"
    sd = torch.nn.LSTM(3, 4).state_dict()
    sd["evil"] = _Reduce(os.system, (f"touch {marker}",))
    path = tmp_path / "evil.pt"
    torch.save(sd, path)
    with pytest.raises(UnsafePickleError) as e:
        li.from_torch(path)
    assert e.value.global_name == f"{os.system.__module__}.system"
    assert not marker.exists()


def test_live_wrong_shapes_and_missing_tensors(torch, tmp_path):
    sd = torch.nn.LSTM(3, 4, num_layers=2).state_dict()
    path = tmp_path / "bad.pt"
    torch.save({**sd, "weight_hh_l1": torch.zeros(16, 5)}, path)
    with pytest.raises(TorchFileError, match=r"weight_hh_l1 must have shape \(4\*H, H_out\) = "
                                             r"\(16, 4\).*got \(16, 5\)") as e:
        li.from_torch(path)
    assert str(path) in str(e.value)
    torch.save({**sd, "weight_ih_l1": torch.zeros(16, 3)}, path)
    with pytest.raises(TorchFileError, match=r"weight_ih_l1 must have shape .*\(16, 4\).*layer 0"):
        li.from_torch(path)
    torch.save({**sd, "bias_ih_l0": torch.zeros(15)}, path)
    with pytest.raises(TorchFileError, match=r"bias_ih_l0 must have shape \(4\*H,\) = \(16,\)"):
        li.from_torch(path)
    torch.save({k: v for k, v in sd.items() if k != "weight_hh_l0"}, path)
    with pytest.raises(TorchFileError, match="missing weight_hh_l0"):
        li.from_torch(path)
    torch.save(torch.nn.GRU(3, 4).state_dict(), path)
    with pytest.raises(TorchFileError, match="GRU"):
        li.from_torch(path)
    torch.save({**sd, "weight_ih_l0": sd["weight_ih_l0"].to(torch.int64)}, path)
    with pytest.raises(TorchFileError, match="weight_ih_l0 is a int64 tensor"):
        li.from_torch(path)
    torch.save({**sd, "weight_ih_l0": sd["weight_ih_l0"].to(torch.float8_e4m3fn)}, path)
    with pytest.raises(TorchFileError, match="float8_e4m3fn"):
        li.from_torch(path)
    torch.save(torch.zeros(3), path)
    with pytest.raises(TorchFileError, match="not a state dict"):
        li.from_torch(path)


# ============================================================================ crafted files
MAGIC = 0x1950A86A20F9469CFC6C


class _Reduce:
    """Pickles as ``fn(*args)`` -- how a malicious pickle runs code in pickle.load."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


class _T:
    """Pickles like a torch tensor: _rebuild_tensor_v2 on a persistent storage id."""

    def __init__(self, key, storage_type, numel, offset, shape, stride):
        self.key, self.stype, self.numel = key, storage_type, numel
        self.offset, self.shape, self.stride = offset, tuple(shape), tuple(stride)


class _G:
    """Written as GLOBAL 'module name' by _TorchLikePickler; nothing is imported."""
    _cache = {}

    def __new__(cls, module, name):
        key = (module, name)
        if key not in cls._cache:
            obj = super().__new__(cls)
            obj.module, obj.name = module, name
            cls._cache[key] = obj
        return cls._cache[key]

    def __reduce_ex__(self, protocol):
        return self.name  # a string: the pickler calls save_global

    def __call__(self, *args):  # save_reduce insists on a callable; never called
        raise AssertionError("a stand-in global was called")


class _TorchLikePickler(pickle._Pickler):
    """Writes data.pkl the way torch.save does, without torch (pure-Python pickler)."""

    def save_global(self, obj, name=None):
        if isinstance(obj, _G):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
            self.memoize(obj)
        else:
            super().save_global(obj, name)

    def persistent_id(self, obj):
        if isinstance(obj, _StoragePid):
            return ("storage", _G("torch", obj.stype), obj.key, "cpu", obj.numel)
        return None

    def reducer_override(self, obj):
        if isinstance(obj, _T):
            return (_G("torch._utils", "_rebuild_tensor_v2"),
                    (_StoragePid(obj), obj.offset, obj.shape, obj.stride, False,
                     _Reduce(_G("collections", "OrderedDict"), ())))
        return NotImplemented


class _StoragePid:
    def __init__(self, t):
        self.key, self.numel, self.stype = t.key, t.numel, t.stype


def _state_dict_pickle(entries):
    buf = io.BytesIO()
    _TorchLikePickler(buf, protocol=2).dump(entries)
    return buf.getvalue()


def _strides(shape):
    return tuple(int(np.prod(shape[i + 1:])) for i in range(len(shape)))


def _lstm_sd(I, H, prefix=""):
    rng = np.random.default_rng(0)
    return {f"{prefix}weight_ih_l0": rng.uniform(-.5, .5, (4 * H, I)).astype(np.float32),
            f"{prefix}weight_hh_l0": rng.uniform(-.5, .5, (4 * H, H)).astype(np.float32),
            f"{prefix}bias_ih_l0": rng.uniform(-.5, .5, 4 * H).astype(np.float32),
            f"{prefix}bias_hh_l0": rng.uniform(-.5, .5, 4 * H).astype(np.float32)}


def _torch_zip(path, data_pkl, storages=(), archive="archive", extra=()):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{archive}/data.pkl", data_pkl)
        z.writestr(f"{archive}/byteorder", "little")
        for k, b in dict(storages).items():
            z.writestr(f"{archive}/data/{k}", b)
        for k, b in dict(extra).items():
            z.writestr(f"{archive}/{k}", b)
        z.writestr(f"{archive}/version", "3\n")


def _write_safetensors(path, tensors, header_extra=None):
    import json
    header, blobs, off = {}, [], 0
    for k, v in tensors.items():
        b = np.ascontiguousarray(v).tobytes()
        header[k] = {"dtype": {"float32": "F32", "float16": "F16"}[v.dtype.name],
                     "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header.update(header_extra or {})
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def test_crafted_state_dict_without_torch(tmp_path):
    """Our own writer of torch's format (no torch): proves the reader needs no torch."""
    sd = _lstm_sd(3, 4, prefix="net.lstm.")
    entries = {k: _T(str(i), "FloatStorage", v.size, 0, v.shape, _strides(v.shape))
               for i, (k, v) in enumerate(sd.items())}
    path = tmp_path / "crafted.pt"
    _torch_zip(path, _state_dict_pickle(entries),
               {str(i): v.tobytes() for i, v in enumerate(sd.values())})
    m = li.from_torch(path)
    np.testing.assert_array_equal(m.weights[0][0]["w_ih"], sd["net.lstm.weight_ih_l0"])
    np.testing.assert_allclose(m.weights[0][0]["b"],
                               sd["net.lstm.bias_ih_l0"] + sd["net.lstm.bias_hh_l0"], rtol=1e-6)


# ---------------------------------------------------------------------------- malicious pickles
def _payloads(marker):
    """(id, data.pkl bytes, the global the error must name)."""
    cmd = f"touch {marker}".encode()
    m = str(marker).encode()
    code = f"open({str(marker)!r}, 'w').write('x')".encode()
    sysname = f"{os.system.__module__}.system"
    return [
        ("reduce-os.system", pickle.dumps({"weight_ih_l0": _Reduce(os.system, (cmd.decode(),))},
                                          protocol=2), sysname),
        ("reduce-builtins.open", pickle.dumps(_Reduce(open, (str(marker), "w")), protocol=2),
         f"{open.__module__}.open"),
        ("GLOBAL-builtins.open", b"\x80\x02cbuiltins\nopen\nX" + struct.pack("<I", len(m)) + m
         + b"X\x01\x00\x00\x00w\x86R.", "builtins.open"),
        ("GLOBAL-__builtin__.eval", b"\x80\x02c__builtin__\neval\nX"
         + struct.pack("<I", len(code)) + code + b"\x85R.", "builtins.eval"),
        ("STACK_GLOBAL-os.system", b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c"
         + bytes([len(cmd)]) + cmd + b"\x85R.", "os.system"),
        ("INST-os.system", b"(S'" + cmd + b"'\nios\nsystem\n.", "os.system"),
        ("GLOBAL-subprocess", b"\x80\x02csubprocess\ncall\nX" + struct.pack("<I", len(cmd))
         + cmd + b"\x85R.", "subprocess.call"),
        ("GLOBAL-torch.load", b"\x80\x02ctorch\nload\nX" + struct.pack("<I", len(m)) + m
         + b"\x85R.", "torch.load"),
        ("copyreg._reconstructor", b"\x80\x02ccopy_reg\n_reconstructor\n.",
         "copyreg._reconstructor"),
        ("EXT1", b"\x80\x02\x82\x01.", "<copyreg extension code 1>"),
        ("nested-in-state-dict", _state_dict_pickle(
            {"meta": [1, {"x": _Reduce(os.system, (cmd.decode(),))}],
             "weight_ih_l0": _T("0", "FloatStorage", 48, 0, (12, 4), (4, 1))}), sysname),
        ("user-model-class", b"\x80\x02cmypackage.models\nNet\n)\x81.", "mypackage.models.Net"),
    ]


@pytest.mark.parametrize("case", range(len(_payloads("x"))),
                         ids=[p[0] for p in _payloads("x")])
@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_malicious_pickle_is_refused_without_side_effects(tmp_path, case, container, capfd):
    marker = tmp_path / "pwned"
    _, payload, refused = _payloads(marker)[case]
    path = tmp_path / "evil.pt"
    if container == "zip":
        _torch_zip(path, payload, {"0": b"\x00" * 192})
    else:
        path.write_bytes(pickle.dumps(MAGIC, protocol=2) + pickle.dumps(1001, protocol=2)
                         + pickle.dumps({}, protocol=2) + payload)
    mods = set(sys.modules)
    with pytest.raises(UnsafePickleError) as e:
        li.from_torch(path)
    assert e.value.global_name == refused
    assert f"'{refused}'" in str(e.value) and str(path) in str(e.value)
    assert isinstance(e.value, ValueError)
    assert not marker.exists()
    assert set(sys.modules) == mods  # nothing was imported
    out, err = capfd.readouterr()
    assert not out and not err


def test_payloads_are_really_malicious(tmp_path):
    """The os.system payload does run under plain pickle (in a child process): the
    refusal above is what stops it."""
    marker = tmp_path / "proof"
    payload = _payloads(marker)[0][1]
    unsafe_load = "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"
    subprocess.run([sys.executable, "-c", unsafe_load], input=payload, check=True,
                   capture_output=True)
    assert marker.exists()


def test_user_model_class_with_torch_submodules(tmp_path):
    """A pickled user model: its own class is refused first, and the message says it is a
    whole nn.Module (its torch.nn submodules give it away)."""
    path = tmp_path / "net.pt"
    _torch_zip(path, b"\x80\x02cmypackage.models\nNet\n)\x81}X\x03\x00\x00\x00rnn"
               b"ctorch.nn.modules.rnn\nLSTM\n)\x81sb.")
    with pytest.raises(PickledModuleError, match=r"refusing global 'mypackage\.models\.Net'.*"
                                                 r"torch\.nn\.modules\.rnn\.LSTM.*state_dict"):
        li.from_torch(path)
    assert "mypackage" not in sys.modules


def test_importing_module_named_in_pickle_never_happens(tmp_path, capfd):
    # `import this` prints the Zen of Python: a GLOBAL resolved by import would show it
    sys.modules.pop("this", None)
    path = tmp_path / "this.pt"
    _torch_zip(path, b"\x80\x02cthis\ns\n.")
    with pytest.raises(UnsafePickleError, match="'this.s'"):
        li.from_torch(path)
    assert "this" not in sys.modules and not capfd.readouterr().out


@pytest.mark.parametrize("payload,match", [
    (b"\x80\x02X\x03\x00\x00\x00abc)R.", "REDUCE on 'abc'"),
    (b"\x80\x02]}b.", r"BUILD on \[\]"),
    (b"\x80\x02}K\x01a.", "APPEND to a dict"),
    (b"\x80\x02](K\x01K\x02u.", "SETITEM"),
    (b"\x80\x02(X\x01\x00\x00\x00ao.", "OBJ"),
    (b"\x80\x02ctorch\nFloatStorage\n)R.", "REDUCE on torch.FloatStorage"),
    (b"\x80\x02cbuiltins\nbytearray\n\x8a\x08" + (1 << 60).to_bytes(8, "little") + b"\x85R.",
     "bytearray"),
    (b"\x80\x02K\x00" + b"\x85" * 300 + b".", "nested deeper"),
    (b"\x80\x02X\x07\x00\x00\x00storage\x85Q.", "persistent id"),
    (b"\x80\x02h\x05.", "memo key 5"),
    (b"\x80\x02K\x01", "STOP"),
    (b"\x80\x02\xff.", "corrupted pickle"),
    (b"\x80\x02t.", "MARK expected"),
    (b"\x80\x02a.", "stack underflow"),
    (b"\x80\x05\x96\x00\x00\x00\x00\x00\x00\x00\x00.", "a bytearray, not a state dict"),
    (b"\x80\x05\x97.", "NEXT_BUFFER"),
], ids=["reduce-string", "build-list", "append-dict", "setitem-list", "obj", "call-storage",
        "bytearray-2^60", "deep-tuples", "bad-pid", "memo", "no-stop", "bad-opcode", "no-mark",
        "underflow", "bytearray8", "next-buffer"])
def test_malformed_or_hostile_opcodes(tmp_path, payload, match):
    path = tmp_path / "bad.pt"
    _torch_zip(path, payload)
    with pytest.raises(TorchFileError, match=match) as e:
        li.from_torch(path)
    assert str(path) in str(e.value)


def test_legacy_huge_length_field_does_not_allocate(tmp_path):
    path = tmp_path / "huge.pt"
    path.write_bytes(pickle.dumps(MAGIC, protocol=2) + pickle.dumps(1001, protocol=2)
                     + pickle.dumps({}, protocol=2) + b"\x80\x04\x8e" + struct.pack("<Q", 1 << 62))
    with pytest.raises(TorchFileError, match="corrupted pickle"):
        li.from_torch(path)


# ---------------------------------------------------------------------------- broken files
def test_truncated_files_are_clear_errors(tmp_path):
    for name in ("bidir_proj", "legacy_f64", "safetensors"):
        data = open(_fixture(name), "rb").read()
        n = len(data)
        for cut in sorted({0, 1, 4, 9, 30, 100, n // 3, n // 2, n - 200, n - 22, n - 1}):
            path = tmp_path / f"{name}-{cut}.pt"
            path.write_bytes(data[:cut])
            with pytest.raises(TorchFileError) as e:
                li.from_torch(path)
            assert str(path) in str(e.value), (name, cut, str(e.value))


def test_truncated_message(tmp_path):
    data = open(_fixture("bidir_proj"), "rb").read()
    path = tmp_path / "half.pt"
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(TorchFileError, match="truncated or corrupted"):
        li.from_torch(path)


def test_byte_flips_never_crash(tmp_path):
    """Every corruption is either harmless (padding, ids) or a TorchFileError."""
    for name in ("bidir_proj", "legacy_f64", "safetensors"):
        data = bytearray(open(_fixture(name), "rb").read())
        for i in range(0, len(data), 53):
            bad = bytearray(data)
            bad[i] ^= 0x5A
            path = tmp_path / "flip.pt"
            path.write_bytes(bytes(bad))
            try:
                li.from_torch(path)
            except TorchFileError:
                pass


def test_crc_mismatch_is_reported(tmp_path):
    raw = bytearray(open(_fixture("bidir_proj"), "rb").read())
    with zipfile.ZipFile(_fixture("bidir_proj")) as z:
        info = next(i for i in z.infolist() if i.filename.endswith("/data/0"))
    n_name, n_extra = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    raw[info.header_offset + 30 + n_name + n_extra + 3] ^= 0x01  # a weight's exponent bit
    path = tmp_path / "crc.pt"
    path.write_bytes(bytes(raw))
    with pytest.raises(TorchFileError, match="CRC mismatch"):
        li.from_torch(path)


def test_missing_storage_record(tmp_path):
    src = zipfile.ZipFile(_fixture("bidir_proj"))
    path = tmp_path / "missing.pt"
    with zipfile.ZipFile(path, "w") as z:
        for info in src.infolist():
            if not info.filename.endswith("/data/1"):
                z.writestr(info, src.read(info))
    with pytest.raises(TorchFileError, match=r"data/1', which is missing from the archive"):
        li.from_torch(path)


def test_storage_smaller_than_declared(tmp_path):
    entries = {"weight_ih_l0": _T("0", "FloatStorage", 48, 0, (12, 4), (4, 1))}
    path = tmp_path / "short.pt"
    _torch_zip(path, _state_dict_pickle(entries), {"0": b"\x00" * 100})
    with pytest.raises(TorchFileError, match=r"holds 100 bytes; data.pkl expects 192"):
        li.from_torch(path)


def test_tensor_outside_its_storage(tmp_path):
    entries = {"weight_ih_l0": _T("0", "FloatStorage", 48, 10, (12, 4), (4, 1))}
    path = tmp_path / "oob.pt"
    _torch_zip(path, _state_dict_pickle(entries), {"0": b"\x00" * 192})
    with pytest.raises(TorchFileError, match="reaches element 57, but the storage holds 48"):
        li.from_torch(path)


def test_compressed_archive_still_reads(tmp_path, expected):
    """A torch zip re-packed with deflate (by some tool) reads through zipfile."""
    src = zipfile.ZipFile(_fixture("bidir_proj"))
    path = tmp_path / "deflated.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for info in src.infolist():
            z.writestr(info.filename, src.read(info))
    m = li.from_torch(path)
    _check_outputs(m, expected["x_bidir_proj"], expected["out_bidir_proj"],
                   expected["h_bidir_proj"], expected["c_bidir_proj"], "float32", "deflated")


def test_other_archives_are_named(tmp_path):
    ts = tmp_path / "scripted.pt"
    _torch_zip(ts, b"\x80\x02}.", extra={"constants.pkl": b"\x80\x02).", "code/__torch__.py": ""})
    with pytest.raises(TorchFileError, match="TorchScript.*torch.jit.load"):
        li.from_torch(ts)
    keras = tmp_path / "m.keras"
    with zipfile.ZipFile(keras, "w") as z:
        z.writestr("config.json", "{}")
    with pytest.raises(TorchFileError, match="not a torch.save file"):
        li.from_torch(keras)
    tar = tmp_path / "old.pt"
    with tarfile.open(tar, "w") as t:
        info = tarfile.TarInfo("storages")
        t.addfile(info, io.BytesIO(b""))
    with pytest.raises(TorchFileError, match="tar format"):
        li.from_torch(tar)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"hello world, not a model")
    with pytest.raises(TorchFileError, match="not a PyTorch file"):
        li.from_torch(junk)
    with pytest.raises(TorchFileError, match="cannot open"):
        li.from_torch(tmp_path / "nope.pt")


def test_bad_safetensors(tmp_path):
    path = tmp_path / "bad.safetensors"
    sd = _lstm_sd(3, 4)
    _write_safetensors(path, sd)
    raw = path.read_bytes()
    path.write_bytes(raw[:-10])
    with pytest.raises(TorchFileError, match="truncated or corrupted"):
        li.from_torch(path)
    path.write_bytes(struct.pack("<Q", 10 ** 9) + raw[8:])
    with pytest.raises(TorchFileError, match="does not fit"):
        li.from_torch(path)
    n = struct.unpack("<Q", raw[:8])[0]
    path.write_bytes(raw[:8] + raw[8:8 + n].replace(b'"F32"', b'"F16"', 1) + raw[8 + n:])
    with pytest.raises(TorchFileError, match="needs"):
        li.from_torch(path)
    path.write_bytes(raw[:9] + b"!" + raw[10:])
    with pytest.raises(TorchFileError, match="corrupted safetensors header"):
        li.from_torch(path)


# ---------------------------------------------------------------------------- odds and ends
def test_reading_files_never_imports_torch(tmp_path):
    code = ("import sys, lstm_infer as li\n"
            f"assert li.__file__ == {li.__file__!r}, li.__file__\n"
            f"li.from_torch({_fixture('bidir_proj')!r})\n"
            f"li.from_torch({_fixture('legacy_f64')!r})\n"
            f"li.from_torch({_fixture('safetensors')!r})\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    # the lstm_infer these tests import (an installed copy, or this checkout's build)
    root = os.path.dirname(os.path.dirname(os.path.abspath(li.__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, env=env)


def test_big_endian_archive(tmp_path):
    """byteorder 'big' (a file saved on s390x/POWER): data is swapped on read."""
    sd = _lstm_sd(2, 3)
    entries = {k: _T(str(i), "FloatStorage", v.size, 0, v.shape, _strides(v.shape))
               for i, (k, v) in enumerate(sd.items())}
    path = tmp_path / "be.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("be/data.pkl", _state_dict_pickle(entries))
        z.writestr("be/byteorder", "big")
        for i, v in enumerate(sd.values()):
            z.writestr(f"be/data/{i}", v.astype(">f4").tobytes())
    got = tp.load(path)
    for k, v in sd.items():
        np.testing.assert_array_equal(got[k], v)
        assert got[k].dtype.isnative


def test_load_returns_numpy_and_placeholders(tmp_path):
    sd = _lstm_sd(2, 3)
    entries = {"w": _T("0", "FloatStorage", 24, 0, (6, 4), (4, 1)),
               "q": _T("1", "QInt8Storage", 4, 0, (4,), (1,)),
               "nested": {"list": [1, 2.5, "x", None, True], "tuple": (1, (2, 3))}}
    path = tmp_path / "misc.pt"
    _torch_zip(path, _state_dict_pickle(entries),
               {"0": sd["weight_ih_l0"].tobytes(), "1": b"\x01\x02\x03\x04"})
    got = tp.load(path)
    np.testing.assert_array_equal(got["w"], sd["weight_ih_l0"].reshape(6, 4))
    assert "qint8" in repr(got["q"])
    assert got["nested"] == {"list": [1, 2.5, "x", None, True], "tuple": (1, (2, 3))}


def test_ambiguous_short_prefix_in_checkpoint():
    sd = _lstm_sd(2, 3, prefix="rnn.")
    ck = {"model": sd, "ema": dict(sd)}
    with pytest.raises(ValueError, match=r"prefix 'rnn\.' matches 2 LSTMs: \['ema\.rnn\.', "
                                         r"'model\.rnn\.'\]"):
        li.from_torch(ck, prefix="rnn")
    assert li.from_torch(ck, prefix="ema.rnn").config.hidden_size == 3


def test_bytes_content_is_not_a_path():
    data = open(_fixture("bidir_proj"), "rb").read()
    with pytest.raises(TorchFileError, match=r"io\.BytesIO"):
        li.from_torch(data)
    assert li.from_torch(io.BytesIO(data)).config.proj_size == 3


_BENIGN = [None, True, False, 0, 255, 65536, -2 ** 31, 2 ** 70, -2 ** 70, 1.5, float("inf"), "",
           "é" * 3, "x" * 300, b"", b"\x00\xff" * 200, bytearray(b"ab"), (), (1,), (1, 2),
           (1, 2, 3), (1, 2, 3, 4), [], [1, [2, [3]]], {}, {"a": 1, (1, 2): [3]}, set(), {1, 2},
           frozenset({3}), complex(1, 2), [list(range(2000))], {str(i): i for i in range(1500)}]


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_unpickler_agrees_with_pickle_on_plain_data(protocol):
    """Our opcode machine decodes data and containers exactly as pickle.loads does."""
    from collections import OrderedDict

    class _Path:
        path = "<memory>"

    shared = [1, 2]
    for obj in _BENIGN + [OrderedDict(a=1, b=[1]), {"a": shared, "b": shared}]:
        data = pickle.dumps(obj, protocol=protocol)
        got = tp._Unpickler(_Path, "data.pkl", None).load(io.BytesIO(data), data)
        want = pickle.loads(data)  # our own benign data
        assert type(got) is type(want) and got == want, (protocol, obj)
        if isinstance(obj, dict) and "b" in obj and obj["b"] is shared:
            assert got["a"] is got["b"]  # memo: shared references stay shared
