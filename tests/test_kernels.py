"""Each kernel entry against numpy, per SIMD level and weight type (the `kernel_*` shims
of _kernels.pyx call one kernel of the platform table in use)."""
import numpy as np
import pytest

import lstm_infer as li
from lstm_infer import _kernels, _packing
from lstm_infer import quantize as quantize_mod
from lstm_infer.config import Activation

H_CASES = [5, 16, 40]  # below one group, one group, a partial second group
ROWS = [1, 3, 7, 13]   # single-row tiles, partial and several full AVX-512 tiles


def _acts(gate="sigmoid", clip=np.inf, cifg=0):
    return {"gate": Activation(gate), "cell": Activation("tanh"), "output": Activation("tanh"),
            "clip": clip, "cell_clip": np.inf, "input_forget": cifg}


def _model(I, H, mode=None, peephole=False, proj=0, input_weights=True, dtype="float32"):
    m = li.LSTM.random(I, H, peephole=peephole, proj_size=proj, dtype=dtype, seed=H + I)
    if mode:
        m = m.quantize(mode, input_weights=input_weights)
    w = m.weights[0][0]
    if mode:
        w = quantize_mod.dequantize(w, mode)  # the weights the kernels compute with
    return m._packed[0][0], {k: np.asarray(v, np.float64) for k, v in w.items()}


def _il(a, H, Hp):
    """(M, 4H) canonical gate columns -> (M, 4Hp) interleaved, as the kernels lay them out."""
    return np.ascontiguousarray(_packing.interleave_rows(np.ascontiguousarray(a.T), H, Hp).T)


def _deil(a, H):
    return _packing.deinterleave_rows(np.ascontiguousarray(a.T), H).T


@pytest.mark.parametrize("mode", [None, "int8-weights", "float16-weights", "bfloat16-weights", "bf16"])
@pytest.mark.parametrize("H", H_CASES)
@pytest.mark.parametrize("M", ROWS)
def test_block_projection(simd_level, mode, H, M):
    p, w = _model(12, H, mode)
    X = np.random.default_rng(M).uniform(-2, 2, (M, 12)).astype(np.float32)
    G = _kernels.kernel_block_projection(p, X)
    want = _il(X.astype(np.float64) @ w["w_ih"].T, H, p.Hp)
    np.testing.assert_allclose(G, want, atol=2e-5, rtol=0)


def _quantize_rows_like_the_kernel(X):
    """u8 rows with zero point 128 and per-row scale amax / 127, in the kernel's float32
    arithmetic (lstm_int8.h li_quant_rows_u8)."""
    f = np.float32
    amax = np.abs(X).max(axis=1)
    s = np.where(amax > 0, amax / f(127), f(1)).astype(f)
    v = np.clip(X * (f(1) / s)[:, None], -127, 127)
    return np.rint(v).astype(np.int32) + 128, s


@pytest.mark.parametrize("H", H_CASES)
@pytest.mark.parametrize("M", ROWS + [16])
def test_int8_projection_is_exact_integer_maths(simd_level, H, M):
    m = li.LSTM.random(70, H, seed=H).quantize("int8")  # K = 70: padded to 128
    p = m._packed[0][0]
    stored = m.weights[0][0]
    X = np.random.default_rng(M).uniform(-3, 3, (M, 70)).astype(np.float32)
    q, sx = _quantize_rows_like_the_kernel(X)
    wq = stored["w_ih"].astype(np.int32)
    acc = (q - 128) @ wq.T  # = sum q w - 128 sum w: exact in int32, as the kernels
    sw = stored["w_ih_scale"].astype(np.float32)
    want = (acc.astype(np.float32) * sx[:, None]) * sw[None, :]
    G = _kernels.kernel_block_projection(p, X)
    np.testing.assert_array_equal(G, _il(want, H, p.Hp).astype(np.float32))


def _gates_numpy(z, c, w, H, acts_kind="sigmoid", cifg=False):
    """float64 gates on canonical (M, 4H) pre-activations with bias added."""
    sig = (lambda v: 1 / (1 + np.exp(-v))) if acts_kind == "sigmoid" else \
        (lambda v: np.clip(0.2 * v + 0.5, 0, 1))
    zi, zf, zg, zo = (z[:, k * H:(k + 1) * H] for k in range(4))
    pi, pf, po = (w.get(n, np.zeros(H)) for n in ("p_i", "p_f", "p_o"))
    i = sig(zi + pi * c)
    f = 1 - i if cifg else sig(zf + pf * c)
    c2 = f * c + i * np.tanh(zg)
    o = sig(zo + po * c2)
    return c2, o * np.tanh(c2)


@pytest.mark.parametrize("mode", [None, "int8-weights", "float16-weights", "bfloat16-weights", "bf16"])
@pytest.mark.parametrize("variant", ["plain", "peephole", "hard_sigmoid+cifg"])
@pytest.mark.parametrize("H", H_CASES)
@pytest.mark.parametrize("M", ROWS)
def test_step(simd_level, mode, variant, H, M):
    p, w = _model(6, H, mode, peephole=variant == "peephole")
    rng = np.random.default_rng(M * 7 + H)
    G = rng.uniform(-1, 1, (M, 4 * H))
    Hprev = rng.uniform(-1, 1, (M, H))
    C = rng.uniform(-2, 2, (M, H))
    kind, cifg = ("hard_sigmoid", 1) if variant == "hard_sigmoid+cifg" else ("sigmoid", 0)
    pad = lambda a, n: np.pad(a, ((0, 0), (0, n - a.shape[1]))).astype(np.float32)
    for flip in (0, 1):
        C2, Hc = _kernels.kernel_step(p, _il(G, H, p.Hp).astype(np.float32), pad(Hprev, p.Kh),
                                      pad(C, p.Hp), _acts(kind, cifg=cifg), flip)
        z = G.astype(np.float32).astype(np.float64) + \
            Hprev.astype(np.float32) @ w["w_hh"].T + w["b"]
        c_want, h_want = _gates_numpy(z, C.astype(np.float32), w, H, kind, bool(cifg))
        np.testing.assert_allclose(C2[:, :H], c_want, atol=2e-5, rtol=0)
        np.testing.assert_allclose(Hc[:, :H], h_want, atol=2e-5, rtol=0)
        assert not Hc[:, H:].any() and not C2[:, H:].any()  # padded units stay 0


@pytest.mark.parametrize("M", ROWS)
def test_int8_step_matches_its_integer_maths(simd_level, M):
    H = 24
    m = li.LSTM.random(6, H, seed=4).quantize("int8")
    p, stored = m._packed[0][0], m.weights[0][0]
    rng = np.random.default_rng(M)
    Hprev = np.pad(rng.uniform(-1, 1, (M, H)), ((0, 0), (0, p.Kh - H))).astype(np.float32)
    G = rng.uniform(-1, 1, (M, 4 * p.Hp)).astype(np.float32)
    C = np.pad(rng.uniform(-1, 1, (M, H)), ((0, 0), (0, p.Hp - H))).astype(np.float32)
    C2, Hc = _kernels.kernel_step(p, G, Hprev, C, _acts())
    q, sh = _quantize_rows_like_the_kernel(Hprev)
    acc = (q - 128) @ np.pad(stored["w_hh"].astype(np.int32), ((0, 0), (0, p.Kh - H))).T
    rec = (acc.astype(np.float32) * sh[:, None]) * stored["w_hh_scale"].astype(np.float32)
    z = _deil(G, H).astype(np.float64) + rec + np.asarray(stored["b"], np.float64)
    c_want, h_want = _gates_numpy(z, C[:, :H].astype(np.float64), {}, H)
    np.testing.assert_allclose(C2[:, :H], c_want, atol=2e-5, rtol=0)
    np.testing.assert_allclose(Hc[:, :H], h_want, atol=2e-5, rtol=0)


@pytest.mark.parametrize("H, P", [(20, 8), (48, 17), (64, 32)])
@pytest.mark.parametrize("M", ROWS)
def test_projection(simd_level, H, P, M):
    p, w = _model(5, H, proj=P)
    Hc = np.zeros((M, p.Hp), np.float32)
    Hc[:, :H] = np.random.default_rng(M).uniform(-1, 1, (M, H))
    Y = _kernels.kernel_projection(p, Hc)
    np.testing.assert_allclose(Y[:, :P], Hc[:, :H].astype(np.float64) @ w["w_hr"].T,
                               atol=1e-5, rtol=0)
    assert not Y[:, P:].any()


@pytest.mark.parametrize("H", H_CASES)
@pytest.mark.parametrize("peephole", [False, True])
def test_gates_f64(H, peephole):
    p, w = _model(4, H, peephole=peephole, dtype="float64")
    rng = np.random.default_rng(H)
    z = rng.uniform(-3, 3, (5, 4 * H))
    C = rng.uniform(-2, 2, (5, H))
    C2, Hc = _kernels.kernel_gates_f64(p, _il(z, H, p.Hp), np.pad(C, ((0, 0), (0, p.Hp - H))),
                                       _acts())
    c_want, h_want = _gates_numpy(z + w["b"], C, w, H)
    np.testing.assert_allclose(C2[:, :H], c_want, atol=1e-13, rtol=0)
    np.testing.assert_allclose(Hc[:, :H], h_want, atol=1e-13, rtol=0)


@pytest.mark.parametrize("M, N, K", [(1, 1, 1), (3, 7, 5), (17, 9, 33)])
def test_gemm_nt(M, N, K):
    rng = np.random.default_rng(M + N + K)
    A, B = rng.standard_normal((M, K)), rng.standard_normal((N, K))
    np.testing.assert_allclose(_kernels.kernel_gemm_nt(A, B), A @ B.T, atol=1e-12, rtol=0)


def test_shims_check_shapes():
    p, _ = _model(6, 16)
    with pytest.raises(ValueError, match=r"\(M, 6\)"):
        _kernels.kernel_block_projection(p, np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="G must have shape"):
        _kernels.kernel_step(p, np.zeros((2, 3), np.float32), np.zeros((2, 16), np.float32),
                             np.zeros((2, 16), np.float32), _acts())
