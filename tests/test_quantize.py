"""Weight quantization: the kernels are exact with respect to the stored weights
(float64 oracle on the dequantized weights, every SIMD path), error bounds vs the
float model, bit-exact native round trips for every variant, and a comparison
with torch's dynamic int8 LSTM is not possible with torch 2.13: its deprecated
torch.ao quantize_dynamic returns float-exact results for nn.LSTM."""
import numpy as np
import pytest

import lstm_infer as li
from conftest import SIMD_LEVELS
from lstm_infer import _kernels
from lstm_infer import quantize as Q
from reference import lstm_reference

MODES = ["int8", "bf16", "int8-weights", "float16-weights", "bfloat16-weights"]
# (mode, input_weights): "int8" always quantizes W_ih too (its activations are int8), so
# input_weights changes nothing there (test_int8_input_weights_is_a_no_op) and runs once
VARIANTS = [pytest.param(m, iw, id=m if m in ("int8", "bf16") else f"{m}-{'W_ih+W_hh' if iw else 'W_hh'}")
            for m in MODES for iw in (False, True) if not (m in ("int8", "bf16") and iw)]
# max abs error vs the float64 model on T=50, I=H=256, |x| <= 3 (see quantize.py)
ERROR_BOUND = {("int8", False): 1.5e-2, ("bf16", False): 1e-2,
               ("int8-weights", False): 2e-3, ("int8-weights", True): 8e-3,
               ("float16-weights", False): 2e-4, ("float16-weights", True): 1e-3,
               ("bfloat16-weights", False): 1e-3, ("bfloat16-weights", True): 5e-3}
# the SIMD paths to hold against the portable C one (none on a CPU without AVX2)
SIMD_PATHS = [lvl for lvl in SIMD_LEVELS if lvl != "generic"] or [
    pytest.param("avx2", marks=pytest.mark.skip(reason="this CPU has only the portable path"))]


def _dequantized(model):
    mode = model.config.quantization
    return [[Q.dequantize(w, mode) for w in layer] for layer in model.weights]


@pytest.mark.parametrize("mode,input_weights", VARIANTS)
@pytest.mark.parametrize("B", [1, 3, 9])
def test_kernels_exact_on_stored_weights(simd_level, mode, input_weights, B):
    m = li.LSTM.random(20, 40, num_layers=2, bidirectional=True, peephole=True, seed=4)
    q = m.quantize(mode, input_weights=input_weights)
    assert q.config.quantization == mode and m.config.quantization is None
    x = np.random.default_rng(B).uniform(-3, 3, (17, B, 20)).astype(np.float32)
    lens = np.linspace(17, 0, B).astype(int)
    out, (h, c) = q(x, lengths=lens)
    ref, h_ref, c_ref = lstm_reference(_dequantized(q), x.astype(np.float64), lengths=lens)
    # "int8" and "bf16" also round the activations, so they are not exact w.r.t. the
    # weights alone: their bound is the activation rounding (int8: half a step of
    # max|row|/127 per input; bf16: 2^-9 relative; tests/test_bf16_mode.py checks bf16
    # bit-exactly against its definition)
    tol = {"int8": 3e-3, "bf16": 3e-3}.get(mode, 1e-5)
    np.testing.assert_allclose(out, ref, atol=tol, rtol=0)
    np.testing.assert_allclose(h, np.concatenate(h_ref), atol=tol, rtol=0)


@pytest.mark.parametrize("level", SIMD_PATHS)
@pytest.mark.parametrize("B", [1, 4, 13])
def test_int8_simd_paths_match_portable(level, B):
    """AVX-512 VNNI / AVX2 (int16 multiply-adds) vs portable C: the int32 accumulators
    are identical on every path; only float rounding in the gates differs."""
    m = li.LSTM.random(33, 48, bidirectional=True, proj_size=20, seed=5).quantize("int8")
    x = np.random.default_rng(B).uniform(-3, 3, (21, B, 33)).astype(np.float32)
    prev = _kernels.simd_level()
    try:
        assert _kernels.set_simd_level(level) == level
        got = m(x)[0]
        assert _kernels.set_simd_level("generic") == "generic"
        want = m(x)[0]
    finally:
        _kernels.set_simd_level(prev)
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


def test_int8_input_weights_is_a_no_op():
    m = li.LSTM.random(12, 16, bidirectional=True, seed=8)
    a, b = m.quantize("int8").weights, m.quantize("int8", input_weights=True).weights
    for da, db in zip(a[0], b[0]):
        assert da.keys() == db.keys() and da["w_ih"].dtype == np.int8
        for k in da:
            np.testing.assert_array_equal(da[k], db[k])


@pytest.mark.parametrize("mode,input_weights", VARIANTS)
def test_error_vs_float_model_within_bound(mode, input_weights):
    m64 = li.LSTM.random(256, 256, dtype="float64", seed=7)
    x = np.random.default_rng(0).uniform(-3, 3, (50, 1, 256))
    ref = m64(x)[0]
    q = li.LSTM.random(256, 256, seed=7).quantize(mode, input_weights=input_weights)
    err = np.abs(q(x)[0] - ref)
    assert err.max() <= ERROR_BOUND[mode, input_weights], (err.max(), err.mean())


def test_stored_forms_and_memory():
    m = li.LSTM.random(32, 64)
    q8 = m.quantize("int8-weights", input_weights=True).weights[0][0]
    assert q8["w_ih"].dtype == np.int8 and q8["w_hh_scale"].shape == (256,)
    np.testing.assert_array_equal(np.abs(q8["w_hh"]).max(axis=1), 127)   # symmetric per row
    assert m.quantize("float16").weights[0][0]["w_hh"].dtype == np.float16
    assert m.quantize("float16").weights[0][0]["w_ih"].dtype == np.float32  # default: W_hh only
    bf = m.quantize("bfloat16").weights[0][0]["w_hh"]
    assert bf.dtype == np.uint16
    np.testing.assert_allclose(Q.bf16_bits_to_f32(bf), m.weights[0][0]["w_hh"], rtol=2 ** -8)


@pytest.mark.parametrize("mode", MODES)
def test_native_round_trip_all_variants(tmp_path, mode):
    m = li.LSTM(
        [li.LSTM.random(6, 16, bidirectional=True, proj_size=5, peephole=True, seed=1).weights[0],
         li.LSTM.random(10, 8, seed=2).weights[0]],
        batch_first=True, layer_options=[{"merge": "concat"}, {"direction": "reverse"}])
    q = m.quantize(mode, input_weights=True)
    p = tmp_path / "q.safetensors"
    q.save(p)
    back = li.load(p)
    assert back.config == q.config and back.options == q.options
    x = np.random.default_rng(0).uniform(-1, 1, (3, 11, 6)).astype(np.float32)
    r = np.random.default_rng(1)
    # the stack is not uniform: one (D, B, H_k) state per layer (projected: h0 is (2, 3, 5))
    state = ([r.uniform(-.5, .5, (2, 3, 5)), r.uniform(-.5, .5, (1, 3, 8))],
             [r.uniform(-.5, .5, (2, 3, 16)), r.uniform(-.5, .5, (1, 3, 8))])
    runs = []
    for kw in ({}, {"state": state}):
        a, b = back(x, lengths=[11, 4, 0], **kw), q(x, lengths=[11, 4, 0], **kw)
        np.testing.assert_array_equal(a[0], b[0])
        for k in range(2):
            np.testing.assert_array_equal(a[1][0][k], b[1][0][k])
            np.testing.assert_array_equal(a[1][1][k], b[1][1][k])
        runs.append(b)
    assert not np.array_equal(runs[0][0], runs[1][0])  # the state was used
    # a length-0 sequence keeps its initial state
    np.testing.assert_array_equal(runs[1][1][0][0][:, 2], state[0][0][:, 2].astype(np.float32))
    # streaming over a quantized unidirectional model equals one call
    u = li.LSTM.random(6, 16, seed=3).quantize(mode)
    s = u.stream(batch_size=3)
    xs = x.transpose(1, 0, 2)
    np.testing.assert_allclose(np.concatenate([s.step(xs[:5]), s.step(xs[5:])]), u(xs)[0],
                               atol=1e-6, rtol=0)


def test_requantizing_changes_mode_from_float_values():
    m = li.LSTM.random(8, 16)
    a = m.quantize("bfloat16").quantize("int8-weights")
    b = li.LSTM([[Q.dequantize(w, "bfloat16") for w in m.quantize("bfloat16").weights[0]]]
                ).quantize("int8-weights")
    x = np.ones((4, 1, 8), np.float32)
    np.testing.assert_array_equal(a(x)[0], b(x)[0])


def test_errors():
    m = li.LSTM.random(8, 16)
    with pytest.raises(ValueError, match="quantization mode must be one of"):
        m.quantize("int4")
    w64 = li.LSTM.random(8, 16, dtype="float64").weights
    with pytest.raises(ValueError, match="compute in float32"):
        li.LSTM(w64, dtype="float64", quantization="float16")
    w = m.quantize("int8-weights").weights
    del w[0][0]["w_hh_scale"]
    with pytest.raises(ValueError, match="needs w_hh_scale"):
        li.LSTM(w, quantization="int8-weights")


@pytest.mark.parametrize("B", [8, 16, 37])
def test_int8_amx_matches_vnni(B):
    """AMX tiles (>= 8 rows) and AVX-512 VNNI give the same int32 sums."""
    if _kernels.cpu_simd_level() != "avx512" or not _kernels.set_amx(True):
        pytest.skip("this CPU has no AMX (or Linux did not grant it)")
    m = li.LSTM.random(70, 40, num_layers=2, bidirectional=True, peephole=True, seed=6)
    q = m.quantize("int8")
    x = np.random.default_rng(B).uniform(-3, 3, (19, B, 70)).astype(np.float32)
    lens = np.linspace(19, 0, B).astype(int)
    try:
        with_amx = q(x, lengths=lens)[0]
        _kernels.set_amx(False)
        without = q(x, lengths=lens)[0]
    finally:
        _kernels.set_amx(True)
    np.testing.assert_allclose(with_amx, without, atol=1e-6, rtol=0)


@pytest.mark.parametrize("with_minus_128", [False, True])
def test_int8_avx2_kernels_give_the_portable_bits(with_minus_128):
    """The AVX2 int8 kernels (sign trick: vpmaddubsw; and, for panels holding -128,
    which vpsignb cannot negate, the int16 one) against portable C: the accumulators are
    exact, so the input projection (no gates: dequantization only) and whole calls match
    bit for bit."""
    if _kernels.cpu_simd_level() == "generic":
        pytest.skip("this CPU has no AVX2")
    q = li.LSTM.random(70, 40, seed=4).quantize("int8")
    layers = q.weights
    rng = np.random.default_rng(0)
    for w in layers[0]:
        for name in ("w_ih", "w_hh"):  # the extremes of int8 at random places
            a = w[name].copy()
            flat = a.reshape(-1)
            idx = rng.choice(flat.size, flat.size // 8, replace=False)
            flat[idx] = rng.choice([-127, 127, -128] if with_minus_128 else [-127, 127],
                                   idx.size)
            w[name] = a
    m = li.LSTM(layers, **q.options)
    p = m._packed[0][0]
    assert bool(p.arrays["w_ih_pan"].min() == -128) == with_minus_128
    x = rng.uniform(-3, 3, (9, 5, 70)).astype(np.float32)
    X = np.ascontiguousarray(x.reshape(-1, 70))
    prev = _kernels.simd_level()
    try:
        got = {}
        for level in ("avx2", "generic"):
            assert _kernels.set_simd_level(level) == level
            got[level] = (_kernels.kernel_block_projection(p, X), m(x))
    finally:
        _kernels.set_simd_level(prev)
    np.testing.assert_array_equal(got["avx2"][0], got["generic"][0])
    np.testing.assert_allclose(got["avx2"][1][0], got["generic"][1][0], atol=1e-6, rtol=0)
