"""The layer-normalised LSTM (TFLite's variant, ln_i / ln_f / ln_g / ln_o weights) against
the float64 oracle (tests/reference.py): float32 on every SIMD path and float64, with
peephole, projection, CIFG, clips, bidirectional stacks, lengths and initial states; the
weight storage and int8 modes; and its determinism (a row's result does not depend on the
batch it runs in). The oracle's normalisation is pinned by an identity (a gate's
normalised pre-activation has mean b and variance ln^2), so a layer norm ignored by both
sides cannot pass."""
import numpy as np
import pytest

import lstm_infer as li
from conftest import TOL, assert_close
from reference import cast_weights, lstm_reference, random_state, random_weights

T = 11


def _weights(I, H, L=1, *, seed=0, **kw):
    w = random_weights(I, H, L, rng=seed, layer_norm=True, **kw)
    return cast_weights(cast_weights(w, np.float32), np.float64)  # exact in float32


def _run(layers, dtype, B=5, state=True, **opts):
    rng = np.random.default_rng(B)
    m = li.LSTM(cast_weights(layers, dtype), dtype=dtype, **opts)
    x = rng.uniform(-3, 3, (T, B, layers[0][0]["w_ih"].shape[1])).astype(dtype)
    lens = np.array(([T, 4, 0, 1] + list(rng.integers(0, T + 1, B)))[:B])
    st = None
    if state:
        h0, c0 = random_state(layers, B, rng)
        st = ([a.astype(dtype) for a in h0], [a.astype(dtype) for a in c0])
    out, (h, c) = m(x, state=st, lengths=lens)
    ref, rh, rc = lstm_reference(layers, x.astype(np.float64), lengths=lens, state=None if st
                                 is None else ([a.astype(np.float64) for a in st[0]],
                                               [a.astype(np.float64) for a in st[1]]), **opts)
    return m, (out, h, c), (ref, rh, rc)


VARIANTS = {
    "plain": (dict(), dict()),
    "peephole": (dict(peephole=True), dict()),
    "proj": (dict(proj_size=12), dict()),
    "cifg+peephole": (dict(peephole=True), dict(input_forget=True)),
    "clips": (dict(), dict(clip=0.8, cell_clip=0.5)),
    "bidirectional-stack": (dict(bidirectional=True), dict()),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_matches_the_oracle(dtype, variant):
    wkw, opts = VARIANTS[variant]
    H = 37  # not a multiple of 16: the padded units must not enter the mean / variance
    L = 2 if variant == "bidirectional-stack" else 1
    layers = _weights(7, H, L, seed=len(variant), **wkw)
    m, (out, h, c), (ref, rh, rc) = _run(layers, dtype, **opts)
    assert m.config.layer_norm and all(s.layer_norm for s in m.config.layers)
    tol = TOL[np.dtype(dtype).name]
    assert_close(out, ref, tol, "out")
    D = len(layers[0])
    for k in range(L):
        assert_close(np.asarray(h)[k * D:(k + 1) * D], rh[k], tol, f"h_n layer {k}")
        assert_close(np.asarray(c)[k * D:(k + 1) * D], rc[k], tol, f"c_n layer {k}")


def test_layer_norm_changes_the_result():
    """Against the same weights without ln_*: the normalisation is really applied."""
    layers = _weights(5, 20)
    plain = [[{k: v for k, v in w.items() if not k.startswith("ln_")} for w in l]
             for l in layers]
    x = np.random.default_rng(1).uniform(-3, 3, (T, 3, 5)).astype(np.float32)
    a, _ = li.LSTM(layers, dtype="float32")(x)
    b, _ = li.LSTM(plain, dtype="float32")(x)
    assert np.abs(a - b).max() > 1e-2


def test_reference_normalises_each_gate():
    """The oracle's gate pre-activations (before the bias) have mean 0 and variance ln^2
    per gate: with W_hh = 0, zero bias and state, the first step's i gate is
    sigmoid(ln_i * standardise(W_ih,i x))."""
    H, I = 9, 4
    rng = np.random.default_rng(3)
    w = {"w_ih": rng.normal(size=(4 * H, I)), "w_hh": np.zeros((4 * H, H)),
         "b": np.zeros(4 * H), **{f"ln_{g}": rng.uniform(0.5, 1.5, H) for g in "ifgo"}}
    x = rng.normal(size=(1, 1, I))
    zi = w["w_ih"][:H] @ x[0, 0]
    zg = w["w_ih"][2 * H:3 * H] @ x[0, 0]
    zo = w["w_ih"][3 * H:] @ x[0, 0]
    std = lambda z: (z - z.mean()) / np.sqrt(z.var() + 1e-8)
    sig = lambda v: 1 / (1 + np.exp(-v))
    c = sig(w["ln_i"] * std(zi)) * np.tanh(w["ln_g"] * std(zg))
    h = sig(w["ln_o"] * std(zo)) * np.tanh(c)
    out, _, rc = lstm_reference([[w]], x)
    np.testing.assert_allclose(rc[0][0, 0], c, rtol=1e-12)
    np.testing.assert_allclose(out[0, 0], h, rtol=1e-12)


@pytest.mark.parametrize("mode", ["int8", "bf16", "int8-weights", "float16-weights", "bfloat16-weights"])
def test_quantized_modes(mode):
    """Storage modes are exact w.r.t. their stored weights; int8 within its error."""
    from lstm_infer import quantize as Q
    layers = _weights(16, 40, peephole=True)
    q = li.LSTM(layers).quantize(mode)
    deq = [[Q.dequantize(w, mode) for w in l] for l in q.weights]
    assert all("ln_i" in w for l in q.weights for w in l)
    x = np.random.default_rng(2).uniform(-3, 3, (T, 4, 16)).astype(np.float32)
    out, _ = q(x)
    ref, _, _ = lstm_reference(deq, x.astype(np.float64))
    assert_close(out, ref, 3e-2 if mode in ("int8", "bf16") else 1e-5, mode)


@pytest.mark.parametrize("mode", [None, "int8", "bfloat16-weights", "bf16"])
def test_rows_do_not_depend_on_their_batch(simd_level, mode):
    """float32 and the quantized modes (float64 goes through BLAS: excluded, DESIGN §4)."""
    layers = _weights(8, 48, peephole=True)
    m = li.LSTM(layers, dtype="float32")
    m = m.quantize(mode) if mode else m
    x = np.random.default_rng(4).uniform(-3, 3, (T, 6, 8)).astype(np.float32)
    full, _ = m(x, num_threads=2)
    for b in range(6):
        alone, _ = m(x[:, b:b + 1], num_threads=1)
        assert np.array_equal(alone[:, 0], full[:, b])


def test_save_load_and_canonical_round_trip(tmp_path):
    layers = _weights(6, 20, 2, peephole=True)
    m = li.LSTM(layers)
    for w, src in zip(m.weights[0], layers[0]):
        for g in "ifgo":
            assert np.array_equal(w[f"ln_{g}"], src[f"ln_{g}"].astype(np.float32))
    m.save(tmp_path / "ln.safetensors")
    m2 = li.load(tmp_path / "ln.safetensors")
    x = np.random.default_rng(5).uniform(-1, 1, (T, 2, 6)).astype(np.float32)
    assert m2.config.layer_norm
    assert np.array_equal(m(x)[0], m2(x)[0])


def test_bad_layer_norm_weights():
    w = _weights(4, 8)[0][0]
    partial = {k: v for k, v in w.items() if k != "ln_g"}
    with pytest.raises(ValueError, match="layer norm needs all of ln_i, ln_f, ln_g, ln_o"):
        li.LSTM([[partial]])
    bad = dict(w, ln_o=np.ones(7))
    with pytest.raises(ValueError, match=r"ln_o.*\(8,\)"):
        li.LSTM([[bad]])


# ----------------------------------------------------------------------------- proj_clip
@pytest.mark.parametrize("layer_norm", [False, True])
def test_proj_clip_matches_the_oracle(dtype, layer_norm):
    """TFLite's proj_clip bounds a projected layer's h (in the recurrence and the output)."""
    layers = random_weights(6, 24, 2, proj_size=10, rng=7, layer_norm=layer_norm, scale=0.6)
    layers = cast_weights(cast_weights(layers, np.float32), np.float64)
    m, (out, h, c), (ref, rh, rc) = _run(layers, dtype, proj_clip=0.05)
    assert m.config.layers[0].proj_clip == 0.05
    assert np.abs(out).max() <= 0.05 and np.abs(ref).max() == pytest.approx(0.05)
    tol = TOL[np.dtype(dtype).name]
    assert_close(out, ref, tol, "out")
    assert_close(np.asarray(c), np.concatenate(rc), tol, "c_n")


def test_proj_clip_needs_a_projection():
    layers = random_weights(4, 8, 2, proj_size=[3, 0], rng=1)
    m = li.LSTM(layers, proj_clip=1.0)  # model level: applies to the projected layer only
    assert [l.proj_clip for l in m.config.layers] == [1.0, None]
    with pytest.raises(ValueError, match="layer 1: proj_clip bounds a projection"):
        li.LSTM(layers, layer_options=[{}, {"proj_clip": 1.0}])
    with pytest.raises(ValueError, match="proj_clip must be a positive"):
        li.LSTM(layers, proj_clip=-1)
