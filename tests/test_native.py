"""Native format: bit-exact round trip for every variant, interoperability with the
official safetensors package, zero-copy reads, and bad files."""
import json
import os
import struct

import numpy as np
import pytest

import lstm_infer as li
from lstm_infer.formats import native
from lstm_infer.formats import safetensors_io as st

VARIANTS = {
    "plain": lambda: li.LSTM.random(5, 7),
    "f64-stack-bi-proj-peep": lambda: li.LSTM.random(5, 8, num_layers=2, bidirectional=True,
                                                      proj_size=3, peephole=True,
                                                      dtype="float64"),
    "clips-cifg-acts": lambda: li.LSTM.random(
        4, 6, batch_first=True, clip=0.8, cell_clip=0.5, input_forget=True,
        activations=[("hard_sigmoid", 1 / 6, 0.5), "relu", "linear"]),
    "layer-options": lambda: li.LSTM(
        [li.LSTM.random(4, 6, bidirectional=True, seed=1).weights[0],
         li.LSTM.random(6, 3, seed=2).weights[0]],
        layer_options=[{"merge": "ave", "activations": [["sigmoid", "tanh", "tanh"],
                                                         ["hard_sigmoid", "tanh", "relu"]]},
                       {"direction": "reverse", "reverse_output": True, "clip": 3.0}]),
}


@pytest.mark.parametrize("make", VARIANTS.values(), ids=VARIANTS.keys())
def test_round_trip_is_bit_exact(tmp_path, make):
    m = make()
    p = tmp_path / "m.safetensors"
    m.save(p)
    assert li.detect_format(p) == "native"
    back = li.load(p)
    assert back.config == m.config
    for la, lb in zip(m.weights, back.weights):
        for da, db in zip(la, lb):
            assert da.keys() == db.keys()
            for k in da:
                assert da[k].dtype == db[k].dtype
                np.testing.assert_array_equal(da[k], db[k])
    x = np.random.default_rng(0).uniform(-3, 3, (6, 2, m.config.input_size))
    np.testing.assert_array_equal(back(x)[0], m(x)[0])


def test_interoperates_with_official_safetensors(tmp_path):
    st_np = pytest.importorskip("safetensors.numpy")
    m = li.LSTM.random(5, 7, num_layers=2, bidirectional=True)
    p = tmp_path / "ours.safetensors"
    m.save(p)
    theirs = st_np.load_file(str(p))                       # our writer, their reader
    assert theirs["layers.1.reverse.w_hh"].shape == (28, 7)
    np.testing.assert_array_equal(theirs["layers.0.forward.w_ih"], m.weights[0][0]["w_ih"])
    q = tmp_path / "theirs.safetensors"
    st_np.save_file({"a": np.arange(6, dtype=np.float32).reshape(2, 3),
                     "b": np.ones(3, np.float64)}, str(q), metadata={"k": "v"})
    tensors, meta = st.load(q)                              # their writer, our reader
    np.testing.assert_array_equal(tensors["a"], np.arange(6).reshape(2, 3))
    assert tensors["b"].dtype == np.float64 and meta == {"k": "v"}


def test_load_is_memory_mapped_and_read_only(tmp_path):
    p = tmp_path / "m.safetensors"
    li.LSTM.random(5, 7).save(p)
    tensors, _ = st.load(p)
    a = tensors["layers.0.forward.w_ih"]
    assert not a.flags.writeable
    assert isinstance(a, np.memmap) or isinstance(a.base, np.memmap), type(a.base)
    with pytest.raises(ValueError, match="read-only"):
        a[0, 0] = 1.0


def _bf16_value(bits):
    """The value of bfloat16 bit patterns from the format's definition (1 sign, 8 exponent,
    7 fraction bits; IEEE 754 binary32 with the low 16 fraction bits cut), in float64."""
    bits = np.asarray(bits, dtype=np.int64)
    sign = np.where(bits >> 15, -1.0, 1.0)
    exp, frac = (bits >> 7) & 0xFF, bits & 0x7F
    with np.errstate(over="ignore"):
        normal = np.ldexp(1.0 + frac / 128.0, exp - 127)
    value = np.where(exp == 0, np.ldexp(frac / 128.0, -126), normal)
    value = np.where(exp == 0xFF, np.where(frac == 0, np.inf, np.nan), value)
    return sign * value


def test_bf16_bits_convert_exactly():
    from lstm_infer.quantize import bf16_bits_to_f32
    bits = np.arange(1 << 16, dtype=np.uint16)  # every pattern: zeros, subnormals, inf, NaN
    got = bf16_bits_to_f32(bits)
    assert got.dtype == np.float32 and got.shape == bits.shape
    want = _bf16_value(bits)
    nan = np.isnan(want)
    assert nan.sum() == 2 * 127 and np.array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].astype(np.float64), want[~nan])
    assert np.array_equal(np.signbit(got), bits >= 0x8000)  # -0.0 keeps its sign
    assert bf16_bits_to_f32(np.array([0xC020], np.uint16))[0] == -2.5
    assert bf16_bits_to_f32(np.array([0x3F80], np.uint16))[0] == 1.0


# ------------------------------------------------------------------ bad files
def _saved(tmp_path):
    p = tmp_path / "m.safetensors"
    li.LSTM.random(5, 7, num_layers=2).save(p)
    return p


def test_truncated_file(tmp_path):
    p = _saved(tmp_path)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match="truncated"):
        li.load(p)


def _rewrite_header(p, edit):
    data = p.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    edit(header)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    p.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])


def test_wrong_shape_is_reported(tmp_path):
    p = _saved(tmp_path)

    def edit(h):
        e = h["layers.1.forward.w_hh"]
        e["shape"] = [14, 14]  # same byte count, wrong shape for H=7
    _rewrite_header(p, edit)
    with pytest.raises(ValueError, match=r"w_hh.*\(28, 7\).*\(14, 14\)"):
        li.load(p)


def test_missing_tensor_and_unknown_version(tmp_path):
    p = _saved(tmp_path)
    _rewrite_header(p, lambda h: h.pop("layers.1.forward.w_hh"))
    with pytest.raises(ValueError, match="missing w_hh"):
        li.load(p)
    p = _saved(tmp_path)
    _rewrite_header(p, lambda h: h["__metadata__"].update(format_version="99"))
    with pytest.raises(ValueError, match="format_version '99'"):
        li.load(p)


def test_garbage_and_empty_files(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(os.urandom(64))
    with pytest.raises(ValueError, match="unknown format"):
        li.load(p)
    p.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        li.load(p)
    with pytest.raises(FileNotFoundError):
        li.load(tmp_path / "nope.safetensors")


def test_load_detects_legacy_torch_files(tmp_path):
    torch = pytest.importorskip("torch")
    net = torch.nn.LSTM(3, 4).eval()
    p = tmp_path / "legacy.pt"
    torch.save(net.state_dict(), p, _use_new_zipfile_serialization=False)
    assert li.detect_format(p) == "pytorch"
    x = np.random.default_rng(0).uniform(-1, 1, (5, 2, 3)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(li.load(p)(x)[0], want, atol=1e-5, rtol=0)
