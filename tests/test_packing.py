"""The packers (lstm_infer/_packing.py) and the checks of _kernels.PackedDirection.

Every layout is compared with an index-by-index reading of its definition (the
_packing module docstring and the Design block of _kernels.pyx), not with the
packers' own reshapes; pack -> canonical must give back the canonical weights
bit for bit for every dtype and quantization mode. The layout constants come from
the extension (lstm_abi.h), never restated here."""
import pickle

import numpy as np
import pytest

from lstm_infer import _kernels, _packing
from lstm_infer import quantize as Q

GROUP, PANEL, Q8_KPAD, ALIGN = _kernels.GROUP, _kernels.PANEL, _kernels.Q8_KPAD, _kernels.ALIGN
WT = _kernels.WEIGHT_TYPES
MODES = ["int8", "bf16", "int8-weights", "float16-weights", "bfloat16-weights"]


def _up(n, m):
    return -(-n // m) * m


# ----------------------------------------------------------------------------- the definitions
def _grouped(w, H):
    """(4H, ...) gate rows i, f, g, o -> (4Hp, ...): packed row g*4*GROUP + q*GROUP + l
    holds gate q of unit g*GROUP + l; rows of units >= H are zero."""
    Hp = _up(H, GROUP)
    out = np.zeros((4 * Hp,) + w.shape[1:], w.dtype)
    for r in range(4 * Hp):
        g, rem = divmod(r, 4 * GROUP)
        q, lane = divmod(rem, GROUP)
        unit = g * GROUP + lane
        if unit < H:
            out[r] = w[q * H + unit]
    return out


def _panelled(rows, width):
    """(N, K) -> (N/width, K, width) with [n, k, j] = rows[n*width + j, k]."""
    N, K = rows.shape
    n, k, j = np.indices((N // width, K, width))
    return rows[n * width + j, k]


def _quads(rows):
    """int8 (N, K) -> (N/PANEL, K4, PANEL, 4) with [n, k4, c, j] = rows[n*PANEL + c, 4*k4 + j],
    K zero-padded to a multiple of Q8_KPAD."""
    N, K = rows.shape
    out = np.zeros((N // PANEL, _up(K, Q8_KPAD) // 4, PANEL, 4), np.int8)
    r, k = np.indices((N, K))
    out[r // PANEL, k // 4, r % PANEL, k % 4] = rows
    return out


def _padded(w, rows, cols):
    out = np.zeros((rows, cols), w.dtype)
    out[:w.shape[0], :w.shape[1]] = w
    return out


def test_layout_constants():
    assert PANEL == 4 * GROUP  # a panel is one group's four gates
    assert Q8_KPAD % 4 == 0 and ALIGN % 16 == 0 and ALIGN & (ALIGN - 1) == 0
    assert sorted(WT) == sorted(["float32", *(m for m in MODES if m != "bf16")]) \
        and len(set(WT.values())) == len(WT)
    assert _packing.weight_type("bf16") == WT["bfloat16-weights"]  # bf16 compute reads them


# ----------------------------------------------------------------------------- the pieces
@pytest.mark.parametrize("H", [1, GROUP - 1, GROUP, GROUP + 1, 3 * GROUP + 5])
@pytest.mark.parametrize("rest", [(), (3,), (2, 5)], ids=["1d", "2d", "3d"])
def test_interleave_rows(H, rest):
    w = np.random.default_rng(H).standard_normal((4 * H,) + rest)
    Hp = _up(H, GROUP)
    got = _packing.interleave_rows(w, H, Hp)
    assert got.shape == (4 * Hp,) + rest and got.flags.c_contiguous and got.dtype == w.dtype
    np.testing.assert_array_equal(got, _grouped(w, H))
    back = _packing.deinterleave_rows(got, H)
    assert back.flags.c_contiguous
    np.testing.assert_array_equal(back, w)


@pytest.mark.parametrize("width", [GROUP, PANEL])
@pytest.mark.parametrize("K", [1, 7, 64])
def test_panels_and_unpanel(width, K):
    w = np.random.default_rng(K).standard_normal((3 * width, K)).astype(np.float32)
    p = _packing.panels(w, width)
    assert p.shape == (3, K, width) and p.flags.c_contiguous
    np.testing.assert_array_equal(p, _panelled(w, width))
    np.testing.assert_array_equal(_packing.unpanel(p), w)


@pytest.mark.parametrize("K", [1, 5, Q8_KPAD - 1, Q8_KPAD, Q8_KPAD + 1, 3 * Q8_KPAD + 8])
def test_quad_panels_and_column_sums(K):
    rng = np.random.default_rng(K)
    w = rng.integers(-128, 128, (2 * PANEL, K)).astype(np.int8)
    w[0] = -128  # the extremes of the zero-point correction
    w[1] = 127
    pan, colsum = _packing.quad_panels(w)
    assert pan.dtype == np.int8 and pan.flags.c_contiguous
    assert pan.shape == (2, _up(K, Q8_KPAD) // 4, PANEL, 4)
    np.testing.assert_array_equal(pan, _quads(w))
    assert colsum.dtype == np.int32 and colsum.shape == (2 * PANEL,)
    np.testing.assert_array_equal(colsum, 128 * w.astype(np.int64).sum(axis=1))
    assert colsum[0] == 128 * -128 * K and colsum[1] == 128 * 127 * K


def test_pair_bf16_columns_is_the_documented_permutation():
    pan = np.arange(2 * 3 * PANEL, dtype=np.uint16).reshape(2, 3, PANEL)
    paired = _packing.pair_bf16_columns(pan)
    assert paired.shape == pan.shape and paired.dtype == np.uint16 and paired.flags.c_contiguous
    for row_in, row_out in zip(pan.reshape(-1, PANEL), paired.reshape(-1, PANEL)):
        assert sorted(row_out) == sorted(row_in)  # a permutation of the columns
    half = PANEL // 2
    for base in range(0, PANEL, half):
        for lane in range(GROUP):
            np.testing.assert_array_equal(paired[..., base + 2 * lane], pan[..., base + lane])
            np.testing.assert_array_equal(paired[..., base + 2 * lane + 1],
                                          pan[..., base + GROUP + lane])
    # what the kernel reads: 32-bit word `lane` of each half, low = column lane, high = 16 + lane
    words = paired.view("<u4").reshape(2, 3, PANEL // half, GROUP)
    lanes = pan.reshape(2, 3, PANEL // half, 2, GROUP)
    np.testing.assert_array_equal(words & 0xFFFF, lanes[..., 0, :])
    np.testing.assert_array_equal(words >> 16, lanes[..., 1, :])


@pytest.mark.parametrize("make", [lambda: np.arange(11.0)[1:], lambda: np.arange(40.0)[::3],
                                  lambda: np.arange(24, dtype=np.int8).reshape(4, 6).T,
                                  lambda: np.ones((3, 5), np.float32)],
                         ids=["offset", "strided", "transposed", "fresh"])
def test_aligned_copies_are_read_only_and_aligned(make):
    a = make()
    got = _packing.aligned(a.copy() if a.flags.owndata else a)
    assert got.ctypes.data % ALIGN == 0 and got.flags.c_contiguous and not got.flags.writeable
    assert got.dtype == a.dtype
    np.testing.assert_array_equal(got, a)


# ----------------------------------------------------------------------------- pack / canonical
SHAPES = {  # I, H, P, peephole
    "H1": (2, 1, 0, False),
    "H20": (5, 20, 0, False),
    "H16-peephole": (3, GROUP, 0, True),
    "H20-proj7-peephole": (5, 20, 7, True),
    "I70-H33-proj16": (70, 33, GROUP, False),
}


def _direction(shape, dtype, seed=0):
    I, H, P, peephole = SHAPES[shape]
    rng = np.random.default_rng(seed)
    w = {"w_ih": rng.uniform(-1, 1, (4 * H, I)), "w_hh": rng.uniform(-1, 1, (4 * H, P or H)),
         "b": rng.uniform(-1, 1, 4 * H)}
    if P:
        w["w_hr"] = rng.uniform(-1, 1, (P, H))
    if peephole:
        for n in ("p_i", "p_f", "p_o"):
            w[n] = rng.uniform(-1, 1, H)
    return {n: a.astype(dtype) for n, a in w.items()}, (I, H, P)


def _check_common(p, w, I, H, P, dtype):
    """Dimensions, alignment and the layouts every mode shares (bias, peepholes, w_hr)."""
    Hp, Pp = _up(H, GROUP), _up(P, GROUP) if P else 0
    assert isinstance(p, _kernels.PackedDirection)
    assert (p.In, p.H, p.Hp, p.P, p.Pp, p.Kh) == (I, H, Hp, P, Pp, Pp or Hp)
    assert p.itemsize == np.dtype(dtype).itemsize
    for name, a in p.arrays.items():
        assert a.ctypes.data % ALIGN == 0 and a.flags.c_contiguous, name
        assert not a.flags.writeable, name
    np.testing.assert_array_equal(p.arrays["bias"], _grouped(w["b"], H))
    if "p_i" in w:
        peep = p.arrays["peep"]
        assert peep.shape == (3, Hp)
        for j, n in enumerate(("p_i", "p_f", "p_o")):
            np.testing.assert_array_equal(peep[j], _padded(w[n][None], 1, Hp)[0])
    else:
        assert "peep" not in p.arrays
    if P:
        w_hr = _padded(w["w_hr"], Pp, Hp)
        np.testing.assert_array_equal(p.arrays["w_hr"], w_hr)
        if dtype == np.float32:
            np.testing.assert_array_equal(p.arrays["w_hr_pan"], _panelled(w_hr, GROUP))
    else:
        assert "w_hr" not in p.arrays and "w_hr_pan" not in p.arrays


def _check_round_trip(back, want):
    assert back.keys() == want.keys()
    for n, a in want.items():
        assert back[n].dtype == a.dtype, n
        np.testing.assert_array_equal(back[n], a, err_msg=n)
        assert not back[n].flags.writeable, n


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_pack_float(shape, dtype):
    w, (I, H, P) = _direction(shape, dtype)
    p = _packing.pack(w, H, P)
    _check_common(p, w, I, H, P, dtype)
    Kh = p.Kh
    rows_ih = _grouped(w["w_ih"], H)
    rows_hh = _grouped(_padded(w["w_hh"], 4 * H, Kh), H)
    assert p.wt_ih == p.wt_hh == WT["float32"] and p.quant is None and p.stored is None
    if dtype == np.float32:  # our kernels: panels only
        assert "w_ih" not in p.arrays and "w_hh" not in p.arrays
        np.testing.assert_array_equal(p.arrays["w_ih_pan"], _panelled(rows_ih, PANEL))
        np.testing.assert_array_equal(p.arrays["w_hh_pan"], _panelled(rows_hh, PANEL))
    else:  # BLAS: row-major only
        assert "w_ih_pan" not in p.arrays and "w_hh_pan" not in p.arrays
        np.testing.assert_array_equal(p.arrays["w_ih"], rows_ih)
        np.testing.assert_array_equal(p.arrays["w_hh"], rows_hh)
    _check_round_trip(_packing.canonical(p), w)


VARIANTS = [pytest.param(m, iw, id=m if m in ("int8", "bf16") else f"{m}-{'W_ih+W_hh' if iw else 'W_hh'}")
            for m in MODES for iw in (False, True) if not (m in ("int8", "bf16") and iw)]


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("mode,input_weights", VARIANTS)
def test_pack_quantized(shape, mode, input_weights):
    w, (I, H, P) = _direction(shape, np.float32, seed=1)
    stored = Q.stored_form(w, mode, "test", input_weights)
    deq = Q.dequantize(stored, mode)  # what the model packs next to the stored form
    p = _packing.pack(deq, H, P, mode, stored)
    _check_common(p, w, I, H, P, np.float32)
    q_ih = input_weights or mode in ("int8", "bf16")
    wt = _packing.weight_type(mode)
    assert p.quant == mode and p.wt_hh == wt
    assert p.wt_ih == (wt if q_ih else WT["float32"])
    Kh = p.Kh
    for name, quantized in (("w_ih", q_ih), ("w_hh", True)):
        src = stored[name] if quantized else deq[name]
        rows = _grouped(_padded(src, 4 * H, Kh) if name == "w_hh" else src, H)
        pan = p.arrays[name + "_pan"]
        if quantized and mode == "int8":
            np.testing.assert_array_equal(pan, _quads(rows))
            np.testing.assert_array_equal(p.arrays[name + "_colsum"],
                                          128 * rows.astype(np.int64).sum(axis=1))
        elif quantized and mode in ("bfloat16-weights", "bf16"):
            assert pan.dtype == np.uint16
            np.testing.assert_array_equal(pan, _packing.pair_bf16_columns(_panelled(rows, PANEL)))
        else:
            assert pan.dtype == rows.dtype
            np.testing.assert_array_equal(pan, _panelled(rows, PANEL))
        if quantized and mode in ("int8", "int8-weights"):
            np.testing.assert_array_equal(p.arrays[name + "_scale"],
                                          _grouped(stored[name + "_scale"], H))
        else:
            assert name + "_scale" not in p.arrays
        if not (quantized and mode == "int8"):
            assert name + "_colsum" not in p.arrays
    # canonical: the stored (quantized) weights, exactly, and the float rest
    want = {n: a for n, a in stored.items()}
    _check_round_trip(_packing.canonical(p), want)


# ----------------------------------------------------------------------------- PackedDirection
def _valid(shape="H20-proj7-peephole", dtype=np.float32, mode=None):
    w, (I, H, P) = _direction(shape, dtype)
    if mode is None:
        p = _packing.pack(w, H, P)
    else:
        stored = Q.stored_form(w, mode, "test", True)
        p = _packing.pack(Q.dequantize(stored, mode), H, P, mode, stored)
    return dict(In=I, H=H, P=P, wt_ih=p.wt_ih, wt_hh=p.wt_hh, itemsize=p.itemsize,
                arrays=dict(p.arrays), quant=p.quant, stored=p.stored)


def _build(args):
    return _kernels.PackedDirection(args["In"], args["H"], args["P"], args["wt_ih"],
                                    args["wt_hh"], args["itemsize"], args["arrays"],
                                    args["quant"], args["stored"])


def _misaligned(a):
    """The same values, C-contiguous, starting one element past an ALIGN boundary."""
    buf = np.empty(a.size + 2 * ALIGN, a.dtype)
    off = (-buf.ctypes.data % ALIGN) // a.itemsize + 1
    out = buf[off:off + a.size].reshape(a.shape)
    out[...] = a
    assert out.ctypes.data % ALIGN and out.flags.c_contiguous
    return out


@pytest.mark.parametrize("mode", [None, *MODES])
def test_packed_direction_accepts_what_pack_makes(mode):
    args = _valid(mode=mode)
    p = _build(args)
    assert p.arrays.keys() == args["arrays"].keys() and p.quant == mode
    with pytest.raises(TypeError, match="does not pickle"):
        pickle.dumps(p)


@pytest.mark.parametrize("mode", [None, "int8", "bfloat16-weights", "bf16"])
@pytest.mark.parametrize("name", ["bias", "w_ih_pan", "w_hh_pan", "w_hr", "w_hr_pan", "peep"])
def test_packed_direction_refuses_wrong_size(mode, name):
    args = _valid(mode=mode)
    a = args["arrays"][name]
    for bad in (a.ravel()[:-1], np.concatenate([a.ravel(), a.ravel()[:1]])):
        args["arrays"][name] = _packing.aligned(bad)
        with pytest.raises(ValueError, match=f"packed array {name} must be {a.size} elements"):
            _build(args)


@pytest.mark.parametrize("mode,name,wrong", [
    (None, "bias", np.float64), (None, "w_ih_pan", np.float16), (None, "w_hr", np.float64),
    ("int8", "w_ih_pan", np.uint8), ("int8", "w_hh_colsum", np.int64),
    ("int8", "w_hh_scale", np.float64), ("float16-weights", "w_hh_pan", np.float32),
    ("bfloat16-weights", "w_hh_pan", np.float16), ("int8-weights", "w_hh_pan", np.uint8),
])
def test_packed_direction_refuses_wrong_dtype(mode, name, wrong):
    args = _valid(mode=mode)
    a = args["arrays"][name]
    args["arrays"][name] = _packing.aligned(a.astype(wrong))
    with pytest.raises(ValueError, match=f"packed array {name} must be {a.size} elements of"):
        _build(args)


def test_packed_direction_float64_layout():
    args = _valid(dtype=np.float64)
    _build(args)
    bad = dict(args, arrays=dict(args["arrays"], bias=_packing.aligned(
        args["arrays"]["bias"].astype(np.float32))))
    with pytest.raises(ValueError, match="bias must be .* of float64"):
        _build(bad)
    with pytest.raises(ValueError, match="bad weight type"):  # float64 has no stored modes
        _build(dict(args, wt_hh=WT["int8"]))


@pytest.mark.parametrize("name", ["bias", "w_ih_pan", "w_hh_pan", "w_hr_pan"])
def test_packed_direction_refuses_misaligned_or_strided(name):
    args = _valid()
    a = args["arrays"][name]
    for bad in (_misaligned(a), np.repeat(a.ravel(), 2)[::2]):
        np.testing.assert_array_equal(bad.reshape(a.shape), a)
        args["arrays"][name] = bad
        with pytest.raises(ValueError, match=f"{name} must be C-contiguous and {ALIGN}-byte"):
            _build(args)


def test_packed_direction_refuses_missing_extra_and_foreign_arrays():
    args = _valid()
    arrays = args["arrays"]
    for name in ("bias", "w_ih_pan", "w_hh_pan", "w_hr"):
        with pytest.raises(TypeError, match=f"packed array {name} must be a numpy array"):
            _build(dict(args, arrays={k: v for k, v in arrays.items() if k != name}))
    with pytest.raises(TypeError, match="bias must be a numpy array; got list"):
        _build(dict(args, arrays=dict(arrays, bias=arrays["bias"].tolist())))
    with pytest.raises(ValueError, match=r"unknown packed arrays \['w_xx'\]"):
        _build(dict(args, arrays=dict(arrays, w_xx=arrays["bias"])))
    for name, like in (("w_ih", "w_ih_pan"), ("w_ih_scale", "bias"), ("w_hh_colsum", "bias")):
        with pytest.raises(ValueError, match=f"packed array {name} is not used by this layout"):
            _build(dict(args, arrays=dict(arrays, **{name: arrays[like]})))
    no_proj = _valid("H20")  # w_hr without a projection
    with pytest.raises(ValueError, match="w_hr is not used"):
        _build(dict(no_proj, arrays=dict(no_proj["arrays"], w_hr=arrays["w_hr"])))


@pytest.mark.parametrize("change,msg", [
    (dict(In=0), "bad packed dimensions"), (dict(H=0), "bad packed dimensions"),
    (dict(P=-1), "bad packed dimensions"), (dict(P=20), "bad packed dimensions"),
    (dict(itemsize=2), "bad packed dimensions"), (dict(wt_ih=-1), "bad weight type"),
    (dict(wt_hh=max(WT.values()) + 1), "bad weight type"),
    (dict(In=6), "w_ih_pan must be"), (dict(H=33), "must be"),
    (dict(wt_hh=WT["float16-weights"]), "w_hh_pan must be .* of float16"),
])
def test_packed_direction_refuses_inconsistent_dimensions(change, msg):
    args = _valid()
    with pytest.raises(ValueError, match=msg):
        _build(dict(args, **change))
