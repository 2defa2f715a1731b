"""lstm_infer.LSTM against the float64 numpy oracle (tests/reference.py).

The grid is dtype (float32 on every SIMD path, float64) x shapes x model
variants x input layouts, sampled rather than a full cartesian product: each
axis is swept with the others held at a "middle" value. Batch sizes and
thread counts are chosen so every float32 schedule runs: one batch slice of
1..13 active rows (num_threads=1: row tiles of every remainder, the K-blocked
tile loop for > 1 tile-height rows with Kh > 128), the projection by GEMV
(<= 8 rows) and by BLAS (> 8 rows), batches split into slices over 2
threads, and active rows dropping mid-sequence with lengths.
"""
from __future__ import annotations

import pickle

import numpy as np
import pytest

import lstm_infer as li
from conftest import TOL, assert_close
from reference import cast_weights, layer_sizes, lstm_reference, random_state, random_weights
from reference import split_state, stack_state


# ----------------------------------------------------------------------------- helpers
def is_uniform(weights):
    return len({layer_sizes(layer)[:2] for layer in weights}) == 1


def make_x(rng, T, B, I, dtype, batch_first=False):
    """|x| <= 3, already representable in `dtype`; returned in the model's layout."""
    x = rng.uniform(-3, 3, (T, B, I)).astype(dtype)
    return np.ascontiguousarray(x.transpose(1, 0, 2)) if batch_first else x


def _state_to_layers(arr, weights, unbatched, dtype):
    """A user-form state (stacked array or per-layer list) -> float64 (D, B, F) per layer."""
    to64 = lambda a: np.asarray(a).astype(dtype).astype(np.float64)
    if isinstance(arr, (list, tuple)):
        parts = [to64(a) for a in arr]
        return [p[:, None] for p in parts] if unbatched else parts
    a = to64(arr)
    if unbatched:
        a = a[:, None]
    return split_state(a, weights)


def expected(weights, x_user, dtype, *, batch_first=False, state=None, lengths=None, **opts):
    """The oracle's answer, in the form the library returns it.

    x and state are cast to the model's dtype first (the library's contract),
    then the maths runs in float64 on the model's (dtype-rounded) weights.
    """
    w64 = cast_weights(cast_weights(weights, dtype), np.float64)
    x = np.asarray(x_user).astype(dtype).astype(np.float64)
    unbatched = x.ndim == 2
    if unbatched:
        x = x[None] if batch_first else x[:, None]
    x_tb = x.transpose(1, 0, 2) if batch_first else x
    st = None
    if state is not None:
        st = (_state_to_layers(state[0], w64, unbatched, dtype),
              _state_to_layers(state[1], w64, unbatched, dtype))
    if lengths is not None:
        lengths = np.atleast_1d(np.asarray(lengths)).astype(np.intp)
    out, h_n, c_n = lstm_reference(w64, x_tb, st, lengths, **opts)
    if batch_first:
        out = out.transpose(1, 0, 2)
    if unbatched:
        out = out[0] if batch_first else out[:, 0]
        h_n = [h[:, 0] for h in h_n]
        c_n = [c[:, 0] for c in c_n]
    if is_uniform(weights):
        h_n, c_n = stack_state(h_n), stack_state(c_n)
    return out, h_n, c_n


def assert_result(got, want, dtype, what="", scale_with_magnitude=False, tol=None):
    """Compare (out, (h_n, c_n)) with the oracle's (out, h_n, c_n)."""
    tol = TOL[np.dtype(dtype).name] if tol is None else tol
    out, (h_n, c_n) = got
    w_out, w_h, w_c = want
    assert isinstance(out, np.ndarray) and out.dtype == np.dtype(dtype), \
        f"{what}: out dtype {getattr(out, 'dtype', type(out))}, expected {np.dtype(dtype)}"
    assert_close(out, w_out, tol, f"{what} out", scale_with_magnitude)
    for name, g, w in (("h_n", h_n, w_h), ("c_n", c_n, w_c)):
        if isinstance(w, list):
            assert isinstance(g, list) and len(g) == len(w), \
                f"{what} {name}: expected a list of {len(w)} arrays, got {type(g).__name__}"
            for k, (gk, wk) in enumerate(zip(g, w)):
                assert gk.dtype == np.dtype(dtype)
                assert_close(gk, wk, tol, f"{what} {name}[{k}]", scale_with_magnitude)
        else:
            assert isinstance(g, np.ndarray) and g.dtype == np.dtype(dtype), f"{what} {name}"
            assert_close(g, w, tol, f"{what} {name}", scale_with_magnitude)


def run_and_check(weights, x, dtype, *, batch_first=False, state=None, lengths=None,
                  num_threads=None, scale_with_magnitude=False, what="", **opts):
    m = li.LSTM(cast_weights(weights, dtype), batch_first=batch_first, dtype=dtype, **opts)
    got = m(x, state=state, lengths=lengths, num_threads=num_threads)
    want = expected(weights, x, dtype, batch_first=batch_first, state=state, lengths=lengths,
                    **opts)
    assert_result(got, want, dtype, what, scale_with_magnitude)
    return m, got, want


def mixed_lengths(rng, B, T):
    """Random lengths in [0, T] that include 0 and T (when B allows)."""
    lens = rng.integers(0, T + 1, B)
    if B >= 2:
        lens[0], lens[-1] = T, 0
    if B >= 4:
        lens[1] = 1
    return rng.permutation(lens)


# ----------------------------------------------------------------------------- shapes
SHAPES = [
    # (T, B, I, H, P, num_threads)
    pytest.param((1, 1, 1, 1, 0, None), id="T1-B1-I1-H1"),
    pytest.param((1, 3, 4, 20, 0, None), id="T1-B3-H20"),
    pytest.param((7, 1, 5, 20, 0, None), id="T7-B1-H20"),
    pytest.param((13, 2, 3, 1, 0, None), id="T13-B2-H1"),
    pytest.param((30, 5, 8, 16, 0, None), id="T30-B5-H16"),
    pytest.param((17, 6, 6, 33, 0, 1), id="T17-B6-H33"),
    pytest.param((17, 7, 6, 33, 0, 1), id="T17-B7-H33"),
    pytest.param((17, 8, 6, 33, 0, 1), id="T17-B8-H33"),
    pytest.param((17, 9, 6, 33, 0, 1), id="T17-B9-H33"),
    pytest.param((25, 12, 6, 20, 0, 1), id="T25-B12-H20"),
    pytest.param((25, 13, 6, 20, 0, 2), id="T25-B13-H20-2threads"),
    pytest.param((200, 3, 10, 64, 0, None), id="T200-B3-H64"),
    pytest.param((200, 11, 7, 48, 0, 1), id="T200-B11-H48"),
    pytest.param((70, 4, 3, 130, 0, None), id="T70-B4-H130"),
    pytest.param((40, 13, 5, 200, 0, 1), id="T40-B13-H200-kblocked"),
    pytest.param((30, 3, 5, 300, 140, 1), id="T30-B3-H300-P140-gemv"),
    pytest.param((30, 10, 5, 300, 140, 1), id="T30-B10-H300-P140-blas"),
]


@pytest.mark.parametrize("shape", SHAPES)
def test_shapes(dtype, shape, rng):
    T, B, I, H, P, nt = shape
    w = random_weights(I, H, proj_size=P, rng=rng)
    x = make_x(rng, T, B, I, dtype)
    _, (out, (h_n, c_n)), _ = run_and_check(w, x, dtype, num_threads=nt, what=f"{shape}")
    assert out.shape == (T, B, P or H) and h_n.shape == (1, B, P or H)
    assert c_n.shape == (1, B, H)


# ----------------------------------------------------------------------------- variants
# name -> (random_weights kwargs, constructor/oracle options, unbounded activations)
VARIANTS = {
    "2layers": (dict(num_layers=2), {}, False),
    "3layers": (dict(num_layers=3), {}, False),
    "bidir": (dict(bidirectional=True), {}, False),
    "bidir-2layers": (dict(num_layers=2, bidirectional=True), {}, False),
    "proj": (dict(proj_size=7), {}, False),
    "proj-bidir-2layers": (dict(num_layers=2, bidirectional=True, proj_size=5), {}, False),
    "proj1": (dict(proj_size=1), {}, False),
    "proj17": (dict(proj_size=17), {}, False),
    "peephole": (dict(peephole=True), {}, False),
    "peephole-proj-bidir": (dict(peephole=True, proj_size=6, bidirectional=True), {}, False),
    "no-bias": (dict(bias=False), {}, False),
    "clip": (dict(), dict(clip=0.4), False),
    "clip-peephole": (dict(peephole=True, scale=1.0), dict(clip=0.7), False),
    "cell_clip": (dict(), dict(cell_clip=0.15), False),
    "cell_clip-peephole-proj": (dict(peephole=True, proj_size=9), dict(cell_clip=0.2), False),
    "clip+cell_clip": (dict(num_layers=2), dict(clip=0.6, cell_clip=0.25), False),
    "input_forget": (dict(), dict(input_forget=True), False),
    "input_forget-peephole-bidir": (dict(peephole=True, bidirectional=True),
                                    dict(input_forget=True), False),
    "hard_sigmoid-default": (dict(), dict(activations=("hard_sigmoid", "tanh", "tanh")), False),
    "hard_sigmoid-a0.3-b0.4": (dict(), dict(activations=(("hard_sigmoid", 0.3, 0.4), "tanh",
                                                         "tanh")), False),
    "hard_sigmoid-keras3": (dict(), dict(activations=(li.Activation("hard_sigmoid", 1 / 6, 0.5),
                                                      "tanh", "tanh")), False),
    "hard_sigmoid-everywhere": (dict(), dict(activations=(("hard_sigmoid", 0.25, 0.45),
                                                          ("hard_sigmoid", 0.5, 0.1),
                                                          ("hard_sigmoid", 0.7, -0.2))), False),
    "tanh-gates": (dict(), dict(activations=("tanh", "tanh", "tanh")), False),
    "relu-cell": (dict(), dict(activations=("sigmoid", "relu", "tanh")), False),
    "relu-output": (dict(), dict(activations=("sigmoid", "tanh", "relu")), True),
    "linear-cell": (dict(), dict(activations=("sigmoid", "linear", "tanh")), False),
    "linear-output": (dict(), dict(activations=("sigmoid", "tanh", "linear")), True),
    "relu-linear-cell_clip": (dict(), dict(activations=("sigmoid", "relu", "linear"),
                                           cell_clip=2.0), True),
    "sigmoid-everywhere": (dict(), dict(activations=("sigmoid", "sigmoid", "sigmoid")), False),
    "uppercase-names": (dict(), dict(activations=("Sigmoid", "TANH", "Tanh")), False),
    "all-options": (dict(num_layers=2, bidirectional=True, proj_size=8, peephole=True),
                    dict(clip=0.9, cell_clip=0.5, input_forget=True,
                         activations=(("hard_sigmoid", 0.2, 0.5), "tanh", "tanh")), False),
}

# (T, B, num_threads, mixed lengths): a small batch, and 11 rows in one slice with
# lengths, so the active rows drop from > 8 (projection by BLAS) to <= 8 (by GEMV)
# and through every row-tile size mid-sequence.
PATHS = {
    "B3": (19, 3, None, False),
    "B11-lengths": (23, 11, 1, True),
}


@pytest.mark.parametrize("path", list(PATHS), ids=list(PATHS))
@pytest.mark.parametrize("variant", list(VARIANTS), ids=list(VARIANTS))
def test_variants(dtype, variant, path, rng):
    wkw, opts, unbounded = VARIANTS[variant]
    T, B, nt, with_lengths = PATHS[path]
    I, H = 5, 20
    w = random_weights(I, H, rng=rng, **wkw)
    x = make_x(rng, T, B, I, dtype)
    lengths = mixed_lengths(rng, B, T) if with_lengths else None
    m, got, _ = run_and_check(w, x, dtype, lengths=lengths, num_threads=nt,
                              scale_with_magnitude=unbounded, what=variant, **opts)
    D = 2 if wkw.get("bidirectional") else 1
    L = wkw.get("num_layers", 1)
    H_out = wkw.get("proj_size") or H
    out, (h_n, c_n) = got
    assert out.shape == (T, B, D * H_out)
    assert h_n.shape == (D * L, B, H_out) and c_n.shape == (D * L, B, H)


@pytest.mark.parametrize("opts", [dict(clip=0.3), dict(cell_clip=0.1), dict(input_forget=True),
                                  dict(activations=(("hard_sigmoid", 0.3, 0.4), "tanh", "tanh"))],
                         ids=["clip", "cell_clip", "input_forget", "hard_sigmoid"])
def test_variant_options_are_active(opts, rng):
    """Guard against vacuous variant tests: each option changes the oracle's result
    on the workloads above (so agreeing with the oracle means the option is applied)."""
    w = random_weights(5, 20, rng=rng)
    x = rng.uniform(-3, 3, (19, 3, 5))
    plain = lstm_reference(w, x)[0]
    varied = lstm_reference(w, x, **opts)[0]
    assert np.max(np.abs(plain - varied)) > 1e-3


def test_clip_does_not_clip_cell_state(rng):
    """ONNX clip bounds gate pre-activations only: c_t may exceed `clip`.

    With clip=1, f <= sigmoid(1), i*g <= sigmoid(1)*tanh(1), so |c| can reach ~2."""
    w = random_weights(4, 8, rng=rng, scale=3.0)
    x = rng.uniform(-3, 3, (60, 4, 4)).astype(np.float64)
    m = li.LSTM(w, clip=1.0, dtype="float64")  # 1.0: exact in any precision
    out, (h_n, c_n) = m(x)
    want = lstm_reference(w, x, clip=1.0)
    assert_close(c_n, stack_state(want[2]), TOL["float64"], "c_n")
    assert np.abs(c_n).max() > 1.0  # the cell state is not clipped
    m2 = li.LSTM(w, cell_clip=0.5, dtype="float64")
    assert np.abs(m2(x)[1][1]).max() <= 0.5


def test_config_reflects_options():
    acts = (("hard_sigmoid", 0.3, 0.4), "relu", "linear")
    m = li.LSTM.random(5, 20, num_layers=2, bidirectional=True, proj_size=6, peephole=True,
                       batch_first=True, dtype="float64", clip=1.5, cell_clip=2.5,
                       input_forget=True, activations=acts)
    c = m.config
    assert (c.input_size, c.hidden_size, c.num_layers, c.bidirectional, c.proj_size,
            c.peephole, c.batch_first, c.dtype) == (5, 20, 2, True, 6, True, True, "float64")
    assert (c.clip, c.cell_clip, c.input_forget) == (1.5, 2.5, True)
    assert [(a.name, a.alpha, a.beta) for a in c.activations][0] == ("hard_sigmoid", 0.3, 0.4)
    assert [a.name for a in c.activations] == ["hard_sigmoid", "relu", "linear"]
    assert c.uniform and c.output_size == 12
    assert [(s.input_size, s.hidden_size, s.proj_size, s.bidirectional, s.peephole)
            for s in c.layers] == [(5, 20, 6, True, True), (12, 20, 6, True, True)]
    assert m.dtype == np.float64


def test_weights_roundtrip(rng):
    """m.weights gives back the canonical weights; a model rebuilt from them is identical."""
    w = random_weights(4, 10, num_layers=2, bidirectional=True, proj_size=3, peephole=True,
                       rng=rng)
    m = li.LSTM(w, dtype="float64")
    back = m.weights
    for k in range(2):
        for d in range(2):
            assert set(back[k][d]) == set(w[k][d])
            for n in w[k][d]:
                np.testing.assert_array_equal(back[k][d][n], w[k][d][n])
    assert not back[0][0]["w_ih"].flags.writeable  # the model's weights are immutable
    x = make_x(rng, 9, 3, 4, np.float64)
    a = m(x)
    b = li.LSTM(back, dtype="float64")(x)
    np.testing.assert_array_equal(a[0], b[0])


@pytest.mark.parametrize("wdtype,want", [(np.float64, "float64"), (np.float32, "float32"),
                                         (np.int64, "float32"), ("mixed", "float32")])
def test_default_dtype_follows_weights(wdtype, want, rng):
    w = random_weights(3, 20, rng=rng)
    if wdtype == "mixed":
        w[0][0]["w_hh"] = w[0][0]["w_hh"].astype(np.float32)
    else:
        w = cast_weights(w, wdtype)
    m = li.LSTM(w)
    assert m.config.dtype == want and m.dtype == np.dtype(want)
    assert m(np.zeros((2, 1, 3)))[0].dtype == np.dtype(want)


def test_random_constructor_matches_oracle(dtype):
    m = li.LSTM.random(6, 20, num_layers=2, bidirectional=True, proj_size=5, peephole=True,
                       dtype=dtype, seed=3)
    x = make_x(np.random.default_rng(0), 15, 4, 6, dtype)
    want = expected(m.weights, x, dtype)
    assert_result(m(x), want, dtype, "LSTM.random")
    for layer in m.weights:  # torch's init range
        for w in layer:
            assert np.abs(w["w_ih"]).max() <= np.float32(1 / np.sqrt(20))
    same = li.LSTM.random(6, 20, num_layers=2, bidirectional=True, proj_size=5, peephole=True,
                          dtype=dtype, seed=3)
    np.testing.assert_array_equal(same(x)[0], m(x)[0])


# ----------------------------------------------------------------------------- layouts / inputs
def _input_kinds(x, dtype):
    """x (already in the model's layout, dtype) -> the same values in other containers."""
    other = np.float64 if np.dtype(dtype) == np.float32 else np.float32
    big = np.zeros((x.shape[0] * 2, x.shape[1], x.shape[2] * 3), dtype=dtype)
    big[::2, :, 1::3] = x
    ro = x.copy()
    ro.setflags(write=False)
    rev = x[::-1].copy()[::-1]
    raw = np.zeros(x.nbytes + 1, np.uint8)[1:]  # misaligned by one byte
    unaligned = raw.view(x.dtype).reshape(x.shape)
    unaligned[...] = x
    return {
        "contiguous": x,
        "strided-view": big[::2, :, 1::3],
        "fortran": np.asfortranarray(x),
        "negative-strides": rev,
        "readonly": ro,
        "unaligned": unaligned,
        "other-float": x.astype(other),
        "list": x.tolist(),
    }


INPUT_KINDS = ["contiguous", "strided-view", "fortran", "negative-strides", "readonly",
               "unaligned", "other-float", "list", "int", "bool"]


@pytest.mark.parametrize("kind", INPUT_KINDS)
@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
def test_input_layouts(dtype, batch_first, kind, rng):
    T, B, I, H = 12, 10, 4, 20
    w = random_weights(I, H, num_layers=2, bidirectional=True, rng=rng)
    if kind == "int":
        x = rng.integers(-3, 4, (B, T, I) if batch_first else (T, B, I))
    elif kind == "bool":
        x = rng.integers(0, 2, (B, T, I) if batch_first else (T, B, I)).astype(bool)
    else:
        x = _input_kinds(make_x(rng, T, B, I, dtype, batch_first), dtype)[kind]
    x_before = np.array(x, copy=True)
    lengths = mixed_lengths(rng, B, T)
    _, (out, (h_n, c_n)), _ = run_and_check(w, x, dtype, batch_first=batch_first,
                                            lengths=lengths, num_threads=1, what=kind)
    assert out.shape == ((B, T, 2 * H) if batch_first else (T, B, 2 * H))
    assert h_n.shape == (4, B, H)
    np.testing.assert_array_equal(np.asarray(x), x_before)  # input untouched


def test_float64_input_into_float32_model_is_rounded_first(rng):
    """float64 x into a float32 model equals feeding x.astype(float32)."""
    m = li.LSTM.random(3, 20, seed=1)
    x = rng.uniform(-3, 3, (10, 4, 3))
    a = m(x)
    b = m(x.astype(np.float32))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1][0], b[1][0])


def test_readonly_and_memmapped_weights(tmp_path, rng):
    """Read-only (memory-mapped) weight arrays are accepted."""
    w = cast_weights(random_weights(3, 20, proj_size=4, peephole=True, rng=rng), np.float32)
    mapped = [[{}]]
    for n, a in w[0][0].items():
        np.save(tmp_path / f"{n}.npy", a)
        mapped[0][0][n] = np.load(tmp_path / f"{n}.npy", mmap_mode="r")
    m = li.LSTM(mapped)
    x = make_x(rng, 8, 2, 3, np.float32)
    assert_result(m(x), expected(w, x, np.float32), np.float32, "mmapped weights")


def test_outputs_are_new_writable_arrays(rng):
    m = li.LSTM.random(3, 20, num_layers=2)
    x = make_x(rng, 5, 2, 3, np.float32)
    h0 = np.zeros((2, 2, 20), np.float32)
    c0 = np.zeros((2, 2, 20), np.float32)
    out, (h_n, c_n) = m(x, state=(h0, c0))
    for a in (out, h_n, c_n):
        assert a.flags.writeable
        for other in (x, h0, c0):
            assert not np.shares_memory(a, other)
    out2, (h2, _) = m(x, state=(h0, c0))
    assert not np.shares_memory(out, out2) and not np.shares_memory(h_n, h2)
    out[...] = 7.0  # mutating a result never affects the next call
    np.testing.assert_array_equal(m(x, state=(h0, c0))[0], out2)


def test_constructor_does_not_alias_or_freeze_caller_arrays(rng):
    """A model is immutable after construction: it must neither make the caller's
    weight arrays read-only nor change when the caller later writes into them."""
    w = cast_weights(random_weights(3, 20, rng=rng), np.float32)
    orig = [[{k: np.array(v, copy=True) for k, v in d.items()} for d in layer] for layer in w]
    arr = w[0][0]["w_ih"]
    m = li.LSTM(w)
    assert arr.flags.writeable, "LSTM() made the caller's w_ih array read-only"
    arr[...] = 0.0
    np.testing.assert_array_equal(m.weights[0][0]["w_ih"], orig[0][0]["w_ih"])
    x = make_x(rng, 6, 2, 3, np.float32)
    assert_result(m(x), expected(orig, x, np.float32), np.float32, "after caller mutation")
    clone = pickle.loads(pickle.dumps(m))
    np.testing.assert_array_equal(clone(x)[0], m(x)[0])


def test_pickle_roundtrip(dtype, rng):
    m = li.LSTM.random(4, 20, num_layers=2, bidirectional=True, proj_size=3, peephole=True,
                       batch_first=True, dtype=dtype, clip=2.0, cell_clip=3.0,
                       activations=(("hard_sigmoid", 0.3, 0.4), "tanh", "tanh"))
    clone = pickle.loads(pickle.dumps(m))
    assert clone.config == m.config
    x = make_x(rng, 7, 3, 4, dtype, batch_first=True)
    np.testing.assert_array_equal(clone(x)[0], m(x)[0])


# ----------------------------------------------------------------------------- lengths
LENGTH_CASES = {
    "all-zero": lambda B, T, rng: np.zeros(B, int),
    "all-T": lambda B, T, rng: np.full(B, T),
    "all-equal-short": lambda B, T, rng: np.full(B, T // 2),
    "all-one": lambda B, T, rng: np.ones(B, int),
    "mixed-with-0-and-T": lambda B, T, rng: mixed_lengths(rng, B, T),
    "descending": lambda B, T, rng: np.linspace(T, 0, B).astype(int),
    "ascending": lambda B, T, rng: np.linspace(0, T, B).astype(int),
    "uint8": lambda B, T, rng: mixed_lengths(rng, B, T).astype(np.uint8),
    "float-integral": lambda B, T, rng: mixed_lengths(rng, B, T).astype(float),
    "list": lambda B, T, rng: [int(v) for v in mixed_lengths(rng, B, T)],
}


@pytest.mark.parametrize("B,nt", [(4, None), (12, 1)], ids=["B4", "B12-blas"])
@pytest.mark.parametrize("case", list(LENGTH_CASES), ids=list(LENGTH_CASES))
def test_lengths(dtype, case, B, nt, rng):
    T, I, H = 15, 3, 20
    w = random_weights(I, H, num_layers=2, bidirectional=True, peephole=True, rng=rng)
    lengths = LENGTH_CASES[case](B, T, rng)
    state = tuple(stack_state(s).astype(dtype) for s in random_state(w, B, rng))
    x = make_x(rng, T, B, I, dtype)
    _, (out, (h_n, c_n)), _ = run_and_check(w, x, dtype, state=state, lengths=lengths,
                                            num_threads=nt, what=case)
    lens = np.asarray(lengths).astype(int)
    for b in range(B):
        assert not out[lens[b]:, b].any(), f"outputs past length {lens[b]} of row {b} not 0"
        if lens[b] == 0:  # final state is the initial state
            np.testing.assert_array_equal(h_n[:, b], state[0][:, b])
            np.testing.assert_array_equal(c_n[:, b], state[1][:, b])


def test_lengths_equal_T_is_no_lengths(dtype, rng):
    m = li.LSTM.random(3, 20, bidirectional=True, dtype=dtype)
    x = make_x(rng, 9, 5, 3, dtype)
    a = m(x, num_threads=1)
    b = m(x, lengths=np.full(5, 9), num_threads=1)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1][0], b[1][0])


def test_lengths_ignore_padding_values(dtype, rng):
    """Whatever sits past a sequence's length (here: huge values) has no effect."""
    m = li.LSTM.random(3, 20, num_layers=2, bidirectional=True, dtype=dtype)
    x = make_x(rng, 10, 4, 3, dtype)
    lengths = np.array([10, 3, 0, 7])
    noisy = x.copy()
    for b, L in enumerate(lengths):
        noisy[L:, b] = 1e3
    a = m(x, lengths=lengths)
    b = m(noisy, lengths=lengths)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1][0], b[1][0])
    np.testing.assert_array_equal(a[1][1], b[1][1])


def test_reverse_direction_uses_own_span(rng):
    """A bidirectional row of length L equals that row alone, truncated to L."""
    m = li.LSTM.random(3, 20, bidirectional=True, dtype="float64")
    x = make_x(rng, 10, 3, 3, np.float64)
    lengths = [10, 4, 7]
    out, (h_n, c_n) = m(x, lengths=lengths)
    for b, L in enumerate(lengths):
        o1, (h1, c1) = m(x[:L, b:b + 1])
        assert_close(out[:L, b:b + 1], o1, 1e-13, f"row {b}")
        assert_close(h_n[:, b:b + 1], h1, 1e-13, f"row {b} h_n")
        assert_close(c_n[:, b:b + 1], c1, 1e-13, f"row {b} c_n")


# ----------------------------------------------------------------------------- state
@pytest.mark.parametrize("form", ["stacked", "per-layer-list"])
def test_initial_state(dtype, form, rng):
    T, B, I, H = 11, 6, 4, 20
    w = random_weights(I, H, num_layers=2, bidirectional=True, proj_size=7, rng=rng)
    h0, c0 = random_state(w, B, rng)
    if form == "stacked":
        state = (stack_state(h0), stack_state(c0))
    else:
        state = ([a.astype(dtype) for a in h0], [a.astype(dtype) for a in c0])
    x = make_x(rng, T, B, I, dtype)
    _, (out, (h_n, c_n)), _ = run_and_check(w, x, dtype, state=state, what=form)
    assert h_n.shape == (4, B, 7) and c_n.shape == (4, B, H)
    zero = li.LSTM(cast_weights(w, dtype), dtype=dtype)(x)[0]
    assert np.abs(out - zero).max() > 1e-3  # the state was used


def test_state_as_list_pair_int_and_float64_arrays(rng):
    """state may be a list [h0, c0]; integer / other-float arrays are cast."""
    w = random_weights(3, 20, rng=rng)
    x = make_x(rng, 5, 2, 3, np.float32)
    h0 = rng.integers(-1, 2, (1, 2, 20))
    c0 = rng.uniform(-1, 1, (1, 2, 20))
    run_and_check(w, x, np.float32, state=[h0, c0], what="int / float64 state")


# ----------------------------------------------------------------------------- non-uniform stacks
MIXED = {
    "shrinking": dict(hidden_size=[32, 20, 5]),
    "growing-bidir": dict(hidden_size=[3, 17], bidirectional=True),
    "proj-differs": dict(hidden_size=[20, 20], proj_size=[0, 6]),
    "peephole-proj-bidir": dict(hidden_size=[24, 9], proj_size=[10, 0], bidirectional=True,
                                peephole=True),
}


@pytest.mark.parametrize("with_state", [False, True], ids=["zero-state", "state"])
@pytest.mark.parametrize("case", list(MIXED), ids=list(MIXED))
def test_layers_of_different_sizes(dtype, case, with_state, rng):
    kw = MIXED[case]
    T, B, I = 14, 10, 6
    w = random_weights(I, rng=rng, **kw)
    assert not is_uniform(w)
    state = None
    if with_state:
        h0, c0 = random_state(w, B, rng)
        state = ([a.astype(dtype) for a in h0], [a.astype(dtype) for a in c0])
    x = make_x(rng, T, B, I, dtype)
    lengths = mixed_lengths(rng, B, T)
    m, (out, (h_n, c_n)), _ = run_and_check(w, x, dtype, state=state, lengths=lengths,
                                            num_threads=1, what=case)
    assert not m.config.uniform
    assert len(m.config.layers) == len(kw["hidden_size"])
    D = 2 if kw.get("bidirectional") else 1
    for k, H in enumerate(kw["hidden_size"]):
        P = (kw.get("proj_size") or [0] * 9)[k]
        assert h_n[k].shape == (D, B, P or H) and c_n[k].shape == (D, B, H)


def test_layers_of_different_sizes_unbatched(rng):
    w = random_weights(4, hidden_size=[20, 7], bidirectional=True, rng=rng)
    h0, c0 = random_state(w, 1, rng)
    state = ([a[:, 0] for a in h0], [a[:, 0] for a in c0])
    x = rng.uniform(-3, 3, (9, 4))
    m, (out, (h_n, c_n)), _ = run_and_check(w, x, np.float64, state=state, what="unbatched")
    assert out.shape == (9, 14)
    assert [a.shape for a in h_n] == [(2, 20), (2, 7)]


def test_layers_of_different_directions(dtype, rng):
    """A bidirectional layer feeding a unidirectional one (ONNX graphs chain such nodes).

    Whatever form h_n / c_n take, they match the oracle layer by layer and are
    accepted back as `state=` (the final state of one call starts the next)."""
    w = [random_weights(3, 20, bidirectional=True, rng=rng)[0], random_weights(40, 20, rng=rng)[0]]
    m = li.LSTM(cast_weights(w, dtype), dtype=dtype)
    x = make_x(rng, 9, 4, 3, dtype)
    out, (h_n, c_n) = m(x)
    r_out, r_h, r_c = expected(w, x, dtype)  # stacked (3, B, H): 2 + 1 directions
    tol = TOL[dtype]
    assert_close(out, r_out, tol, "out")
    as_layers = lambda a: list(a) if isinstance(a, list) else [a[:2], a[2:]]
    for k in range(2):
        assert_close(as_layers(h_n)[k], as_layers(r_h)[k], tol, f"h_n layer {k}")
        assert_close(as_layers(c_n)[k], as_layers(r_c)[k], tol, f"c_n layer {k}")
    out2, _ = m(x, state=(h_n, c_n))  # the returned state must be accepted back
    st = (as_layers(r_h), as_layers(r_c))
    want2 = expected(w, x, dtype, state=st)
    assert_close(out2, want2[0], tol, "out with carried state")


# ----------------------------------------------------------------------------- unbatched
@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
def test_unbatched(dtype, batch_first, rng):
    T, I, H = 13, 4, 20
    w = random_weights(I, H, num_layers=2, bidirectional=True, proj_size=5, rng=rng)
    h0, c0 = random_state(w, 1, rng)
    state = (stack_state(h0)[:, 0].astype(dtype), stack_state(c0)[:, 0].astype(dtype))
    x = rng.uniform(-3, 3, (T, I)).astype(dtype)
    m, (out, (h_n, c_n)), _ = run_and_check(w, x, dtype, batch_first=batch_first, state=state,
                                            what="unbatched")
    assert out.shape == (T, 10) and h_n.shape == (4, 5) and c_n.shape == (4, H)
    # same as a batch of one
    xb = x[None] if batch_first else x[:, None]
    sb = (state[0][:, None], state[1][:, None])
    ob, (hb, cb) = m(xb, state=sb)
    np.testing.assert_array_equal(out, ob[0] if batch_first else ob[:, 0])
    np.testing.assert_array_equal(h_n, hb[:, 0])
    np.testing.assert_array_equal(c_n, cb[:, 0])


@pytest.mark.parametrize("lengths", [5, [5], 0], ids=["scalar", "list", "zero"])
def test_unbatched_lengths(lengths, rng):
    w = random_weights(3, 20, bidirectional=True, rng=rng)
    x = rng.uniform(-3, 3, (9, 3))
    _, (out, _), _ = run_and_check(w, x, np.float64, lengths=lengths, what="unbatched lengths")
    L = int(np.ravel(lengths)[0])
    assert not out[L:].any()


# ----------------------------------------------------------------------------- empty
@pytest.mark.parametrize("T,B", [(0, 3), (5, 0), (0, 0)], ids=["T0", "B0", "T0-B0"])
def test_empty(dtype, T, B, rng):
    w = random_weights(3, 20, num_layers=2, bidirectional=True, proj_size=4, rng=rng)
    m = li.LSTM(cast_weights(w, dtype), dtype=dtype)
    h0, c0 = random_state(w, B, rng)
    state = (stack_state(h0).astype(dtype), stack_state(c0).astype(dtype))
    out, (h_n, c_n) = m(np.zeros((T, B, 3)), state=state)
    assert out.shape == (T, B, 8) and out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(h_n, state[0])  # nothing ran: final = initial
    np.testing.assert_array_equal(c_n, state[1])
    out, (h_n, c_n) = m(np.zeros((T, B, 3)), lengths=np.zeros(B, int))
    assert out.shape == (T, B, 8) and not h_n.any() and not c_n.any()


def test_empty_unbatched():
    m = li.LSTM.random(3, 20)
    out, (h_n, c_n) = m(np.zeros((0, 3)))
    assert out.shape == (0, 20) and h_n.shape == (1, 20) and c_n.shape == (1, 20)
    assert not h_n.any()


# ----------------------------------------------------------------------------- call forms
def test_simd_levels():
    from conftest import SIMD_LEVELS
    from lstm_infer import _kernels
    prev = _kernels.simd_level()
    try:
        for lvl in ("generic", "avx2", "avx512"):  # capped to what the CPU has
            got = _kernels.set_simd_level(lvl)
            assert got == (lvl if lvl in SIMD_LEVELS else SIMD_LEVELS[-1])
            assert _kernels.simd_level() == got
    finally:
        _kernels.set_simd_level(prev)


@pytest.mark.parametrize("level", ["generic", "avx2"])
def test_simd_env_variable(level):
    """LSTM_INFER_SIMD picks the float32 path at import."""
    import os
    import subprocess
    import sys
    from conftest import SIMD_LEVELS
    if level not in SIMD_LEVELS:
        pytest.skip(f"CPU lacks {level}")
    root = os.path.dirname(os.path.dirname(os.path.abspath(li.__file__)))
    env = dict(os.environ, LSTM_INFER_SIMD=level,
               PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-c", "from lstm_infer import _kernels; "
                          "print(_kernels.simd_level())"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == level


def test_forward_equals_call_and_threads_argument(rng):
    m = li.LSTM.random(3, 20, bidirectional=True)
    x = make_x(rng, 8, 5, 3, np.float32)
    a = m(x)
    b = m.forward(x)
    np.testing.assert_array_equal(a[0], b[0])
    li.set_num_threads(1)
    c = m(x)
    d = m(x, num_threads=1)
    np.testing.assert_array_equal(c[0], d[0])
    assert li.get_num_threads() == 1
    li.set_num_threads(None)
    assert li.get_num_threads() >= 1
