"""Fuzz `LSTM.forward` with hostile calls, in a worker subprocess (see fuzz_common).

    python bench/fuzz_forward.py --cases 20000 --workers 2 --out /tmp/fuzz_forward.json
    python bench/fuzz_forward.py --replay /tmp/lstm_fuzz_forward/failures/mismatch/123.json

Models: a pool of random models (1-3 layers, bidirectional, projection, peephole,
batch_first, clip / CIFG now and then, float32 / float64, quantized int8 /
int8-weights / float16 / bfloat16). Each case is one call on one of them:

- **valid** calls (~40%): x in every layout the API accepts -- C / Fortran order,
  negative strides on each axis, non-contiguous, unaligned (1-byte offset),
  zero-stride broadcasts, read-only, byte-swapped, float16/32/64, ints, uint8, bool,
  Python lists, T = 0 / B = 0, a 2^16-step broadcast -- with random valid lengths,
  state (also strided or float64) and num_threads. The result must match the float64
  numpy LSTM of tests/reference.py (on the model's dequantized weights) and be
  bit-identical to the same call on C-contiguous copies in the model's dtype;
- **hostile** calls (~60%): one hostile ingredient in an otherwise valid call -- x dtype
  (complex, object, str, bytes, datetime, structured, void, float16 NaN/Inf,
  longdouble), shape (0-D, 1-D, 4-D, 5-D, wrong or zero features, ragged, None, dict,
  str, generator), huge dims as zero-stride broadcasts (T, B or T*B*I beyond 2^31 /
  2^32: must be refused before any allocation), NaN/Inf (also only in padding),
  state (shape, dtype, D, B, NaN/Inf, not a pair...), lengths (negative, > T,
  fractional, NaN, 2-D, huge, wrong length, bool, str...), num_threads (0, -1, True,
  2.0, "2", np.int64(2), 2**31-1, 10**6...).

Outcomes: ``result_ok`` (valid, checked), ``accepted`` (a hostile call that may run, did,
and its outputs are finite and, where the inputs can be canonicalised, equal to the
reference and to the contiguous call), ``clean_error`` (ValueError / TypeError);
findings: ``refused_valid``, ``mismatch`` (vs the reference), ``not_bitexact`` (vs the
contiguous call), ``accepted_invalid`` (a call that must be refused ran),
``bad_result`` (non-finite or misshapen outputs), ``unclean``, ``hang``, ``crash``;
and the memory flag: growth above 64 MiB + 2 x the bytes the call legitimately needs
(outputs, x in the model's dtype, state) -- 64 MiB + 2 x the inputs' real bytes for a
refused call.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import fuzz_common as fc  # noqa: E402

FORWARD_FAILURES = {"refused_valid", "mismatch", "not_bitexact", "accepted_invalid",
                    "bad_result"}
# max |out - reference| per model kind, |x| <= 3, T <= 24 (tests/conftest.py TOL, and
# the int8 activation quantization's error: DESIGN §5)
TOLERANCE = {"float64": 1e-10, "float32": 2e-5, "int8": 2e-2}
N_MODELS = 40
LONG_T = 2**16


# ============================================================================ models
def model_specs(seed, n=N_MODELS):
    """n random model descriptions (LSTM.random keyword arguments + quantization)."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        quant = rng.choice([None] * 5 + ["int8", "int8-weights", "float16", "bfloat16"])
        H = rng.choice((1, 2, 3, 5, 8, 16, 17, 24, 33))
        kw = dict(input_size=rng.choice((1, 2, 3, 5, 8, 13)), hidden_size=H,
                  num_layers=rng.choice((1, 1, 2, 3)), bidirectional=rng.random() < 0.4,
                  proj_size=rng.randrange(1, H) if H > 1 and rng.random() < 0.25 else 0,
                  peephole=rng.random() < 0.2, batch_first=rng.random() < 0.3,
                  dtype="float32" if quant or rng.random() < 0.7 else "float64",
                  seed=rng.randrange(10**6))
        if rng.random() < 0.15:
            kw["clip"] = rng.choice((0.5, 2.0, 5.0))
        if rng.random() < 0.1:
            kw["input_forget"] = True
        spec = {"kw": kw, "quant": quant, "input_weights": rng.random() < 0.5}
        try:
            build_model(spec)
        except (ValueError, TypeError):  # a combination the engine does not offer
            continue
        out.append(spec)
    return out


def build_model(spec):
    import lstm_infer as li
    m = li.LSTM.random(**spec["kw"])
    if spec["quant"]:
        m = m.quantize(spec["quant"], input_weights=spec["input_weights"])
    return m


def reference_weights(m):
    """Canonical float weights of `m` (dequantized: exactly what its kernels run)."""
    from lstm_infer import quantize
    q = m.config.quantization
    return [[quantize.dequantize(w, q) if q else w for w in layer] for layer in m.weights]


# ============================================================================ inputs
VALID_KINDS = ["c", "c", "c", "fortran", "negative_t", "negative_b", "negative_i",
               "noncontig_i", "noncontig_t", "unaligned", "broadcast_t", "broadcast_b",
               "readonly", "byteswapped", "float64", "float32", "float16", "int8", "int32",
               "int64", "uint8", "bool", "list", "empty_t", "empty_b", "empty_tb",
               "long_broadcast"]
# (name, expected outcome): "error" must be refused; "maybe" may run (then it is checked)
HOSTILE = [
    ("x_complex64", "error"), ("x_complex128", "error"), ("x_object_floats", "maybe"),
    ("x_object_none", "error"), ("x_str", "error"), ("x_bytes", "error"),
    ("x_datetime", "error"), ("x_timedelta", "error"), ("x_structured", "error"),
    ("x_void", "error"), ("x_f16_nan", "error"), ("x_f16_inf", "error"),
    ("x_longdouble", "maybe"), ("x_clongdouble", "error"),
    ("x_0d", "error"), ("x_1d", "error"), ("x_4d", "error"), ("x_5d", "error"),
    ("x_wrong_features", "error"), ("x_zero_features", "error"), ("x_ragged", "error"),
    ("x_none", "error"), ("x_dict", "error"), ("x_string", "error"),
    ("x_generator", "maybe"), ("x_list_with_str", "error"), ("x_set", "error"),
    ("huge_t", "error"), ("huge_b", "error"), ("huge_tb_product", "error"),
    ("huge_t_2^32", "error"), ("huge_features", "error"), ("huge_unbatched", "error"),
    ("huge_tbi_product", "error"),
    ("nan", "error"), ("inf", "error"), ("-inf", "error"), ("nan_in_padding", "maybe"),
    ("f64_beyond_f32", "maybe"),
    ("state_wrong_shape", "error"), ("state_wrong_b", "error"), ("state_wrong_d", "error"),
    ("state_complex", "error"), ("state_object", "maybe"), ("state_str", "error"),
    ("state_nan", "error"), ("state_inf", "error"), ("state_triple", "error"),
    ("state_single", "error"), ("state_none_pair", "maybe"), ("state_scalars", "error"),
    ("state_per_layer_list", "maybe"), ("state_int", "maybe"), ("state_f64_beyond_f32",
                                                                  "maybe"),
    ("lengths_negative", "error"), ("lengths_above_t", "error"),
    ("lengths_fractional", "error"), ("lengths_nan", "error"), ("lengths_inf", "error"),
    ("lengths_wrong_len", "error"), ("lengths_2d", "error"), ("lengths_bool", "maybe"),
    ("lengths_str", "error"), ("lengths_none_inside", "error"), ("lengths_2^40", "error"),
    ("lengths_uint64_max", "error"), ("lengths_float_integral", "maybe"),
    ("lengths_object_ints", "maybe"), ("lengths_scalar", "maybe"), ("lengths_int8", "maybe"),
    ("threads_0", "error"), ("threads_-1", "error"), ("threads_True", "maybe"),
    ("threads_False", "maybe"), ("threads_2.0", "maybe"), ("threads_str", "maybe"),
    ("threads_np_int64", "maybe"), ("threads_2^31-1", "maybe"), ("threads_2^31", "maybe"),
    ("threads_10^6", "maybe"), ("threads_1000", "maybe"), ("threads_1.5", "maybe"),
    ("threads_list", "maybe"),
]
HOSTILE_EXPECT = dict(HOSTILE)


ALL_KINDS = sorted(set(VALID_KINDS)) + [k for k, _ in HOSTILE]


def plan_case(specs, seed, index, long_t=LONG_T):
    """(family, case, info): cheap, in the parent; the worker builds the call. The first
    len(ALL_KINDS) cases take every kind once (on models in turn); then at random."""
    rng = random.Random(seed * 1_000_003 + index)
    mi = rng.randrange(len(specs))
    if index < len(ALL_KINDS):
        kind = ALL_KINDS[index]
    elif rng.random() < 0.4:
        kind = rng.choice(VALID_KINDS)
    else:
        kind = rng.choice(HOSTILE)[0]
    family = "valid" if kind in VALID_KINDS else "hostile_" + kind.split("_")[0].lstrip("-")
    case = {"seed": seed, "index": index, "model": mi, "kind": kind,
            "rng": rng.getrandbits(63)}
    if kind == "long_broadcast":
        case["long_t"] = long_t
    return family, case, {"index": index, "kind": kind, "model": mi}


def _user_order(cfg, xt):
    """(T, B, I) time-major -> the user's layout ((B, T, I) if batch_first)."""
    return xt.transpose(1, 0, 2) if cfg.batch_first else xt


def _state_shapes(m, B, unbatched):
    """[(h shape, c shape)] per layer for per-layer lists, and the stacked shapes."""
    cfg = m.config
    per = []
    for s in cfg.layers:
        D = s.num_directions
        per.append(((D, B, s.output_size), (D, B, s.hidden_size)))
    if unbatched:
        per = [((h[0], h[2]), (c[0], c[2])) for h, c in per]
    return per


def _random_state(m, B, unbatched, rng, np, dtype=None, layout=None):
    cfg = m.config
    per = _state_shapes(m, B, unbatched)
    dtype = dtype or m.dtype
    if cfg.uniform:
        L = len(per)
        hs = (per[0][0][0] * L,) + per[0][0][1:]
        cs = (per[0][1][0] * L,) + per[0][1][1:]
        h, c = (rng.uniform(-0.5, 0.5, hs), rng.uniform(-0.5, 0.5, cs))
        if layout == "noncontig" and h.ndim:
            h, c = (np.repeat(h, 2, axis=-1)[..., ::2], np.repeat(c, 2, axis=-1)[..., ::2])
        elif layout == "fortran":
            h, c = np.asfortranarray(h), np.asfortranarray(c)
        return (h.astype(dtype, copy=False) if layout != "noncontig" else h,
                c.astype(dtype, copy=False) if layout != "noncontig" else c)
    h = [rng.uniform(-0.5, 0.5, hs).astype(dtype) for hs, _ in per]
    c = [rng.uniform(-0.5, 0.5, cs).astype(dtype) for _, cs in per]
    return h, c


def _per_layer(m, state, unbatched, np):
    """state (stacked or per-layer lists) -> per-layer (D, B, F) float64 lists for the
    reference; None if it is not a valid state."""
    if state is None:
        return None
    h, c = state
    cfg = m.config
    out = []
    for arr, idx in ((h, 0), (c, 1)):
        if isinstance(arr, (list, tuple)):
            parts = [np.array(a, dtype=np.float64) for a in arr]
        else:
            a = np.array(arr, dtype=np.float64)
            D = cfg.layers[0].num_directions
            parts = [a[k * D:(k + 1) * D] for k in range(len(cfg.layers))]
        if unbatched:
            parts = [p[:, None, :] for p in parts]
        out.append(parts)
    return out[0], out[1]


class _Input:
    __slots__ = ("x", "state", "lengths", "num_threads", "expect", "desc", "canon",
                 "real_bytes")


def make_call(m, case, np):
    """The call of a case: x, state, lengths, num_threads, what to expect, and whether
    the inputs are canonical enough for the reference and contiguous checks."""
    rng = np.random.default_rng(case["rng"])
    prng = random.Random(case["rng"])
    kind = case["kind"]
    cfg = m.config
    I = cfg.input_size
    c = _Input()
    c.expect = "result" if kind in VALID_KINDS else HOSTILE_EXPECT[kind]
    c.canon, c.state, c.lengths, c.num_threads = True, None, None, None
    unbatched = prng.random() < 0.15 and kind not in ("empty_b", "empty_tb", "broadcast_b",
                                                       "huge_b", "huge_tb_product",
                                                       "huge_tbi_product")
    T = prng.choice((1, 2, 3, 5, 8, 13, 24))
    B = prng.choice((1, 2, 3, 4, 7, 9))
    if kind in ("empty_t", "empty_tb"):
        T = 0
    if kind in ("empty_b", "empty_tb"):
        B = 0
    if kind == "long_broadcast":
        T, B = case.get("long_t", LONG_T), prng.choice((1, 2))
    if unbatched:
        B = 1
    xt = rng.uniform(-3, 3, (T, B, I))  # time-major logical values
    dt = m.dtype
    if kind in ("int8", "int32", "int64", "uint8", "bool"):
        lo = 0 if kind in ("uint8", "bool") else -3
        xt = rng.integers(lo, 2 if kind == "bool" else 4, (T, B, I))
    x = _user_order(cfg, xt)  # a view: (B, T, I) if batch_first
    if unbatched:
        x = x[:, 0, :] if not cfg.batch_first else x[0]
    x = np.ascontiguousarray(x, dtype=dt)

    # ---------------------------------------------------------------- valid layouts
    def flipped(a, axis):
        return np.ascontiguousarray(np.flip(a, axis)).__array__()[
            tuple(slice(None, None, -1) if k == axis else slice(None) for k in range(a.ndim))]

    if kind == "fortran":
        x = np.asfortranarray(x)
    elif kind in ("negative_t", "negative_b", "negative_i"):
        ax = {"negative_t": 0, "negative_b": 1, "negative_i": 2}[kind]
        if cfg.batch_first and ax < 2:
            ax = 1 - ax
        ax = min(ax, x.ndim - 1)
        x = flipped(x, ax)
    elif kind == "noncontig_i":
        big = np.zeros(x.shape[:-1] + (2 * I,), dt)
        big[..., ::2] = x
        x = big[..., ::2]
    elif kind == "noncontig_t":
        big = np.zeros((2 * x.shape[0],) + x.shape[1:], dt)
        big[::2] = x
        x = big[::2]
    elif kind == "unaligned":
        buf = np.zeros(x.nbytes + 1, np.uint8)
        u = buf[1:].view(dt).reshape(x.shape)
        u[...] = x
        x = u
    elif kind in ("broadcast_t", "long_broadcast"):
        tax = 1 if (cfg.batch_first and x.ndim == 3) else 0
        one = np.take(x, [0], axis=tax) if x.shape[tax] else x
        x = np.broadcast_to(one, x.shape) if x.shape[tax] else x
    elif kind == "broadcast_b":
        bax = 0 if cfg.batch_first else 1
        x = np.broadcast_to(np.take(x, [0], axis=bax) if x.shape[bax] else x, x.shape)
    elif kind == "readonly":
        x.setflags(write=False)
    elif kind == "byteswapped":
        x = x.astype(x.dtype.newbyteorder(">" if x.dtype.byteorder != ">" else "<"))
    elif kind in ("float64", "float32", "float16"):
        x = x.astype(kind)
    elif kind in ("int8", "int32", "int64", "uint8", "bool"):
        x = x.astype(kind)
    elif kind == "list":
        x = x.tolist()

    Tn = T
    # ---------------------------------------------------------------- lengths / state
    if kind.startswith("lengths_") or (c.expect == "result" and prng.random() < 0.5
                                       and kind != "long_broadcast"):
        c.lengths = np.array([prng.randint(0, Tn) for _ in range(B)], np.int64)
        if unbatched:
            c.lengths = np.int64(c.lengths[0]) if prng.random() < 0.5 else c.lengths
        elif prng.random() < 0.3:
            c.lengths = c.lengths.tolist()
    if kind.startswith("state_") or (c.expect == "result" and prng.random() < 0.5):
        layout = prng.choice((None, None, "noncontig", "fortran", "float64"))
        c.state = _random_state(m, B, unbatched, rng, np,
                                dtype="float64" if layout == "float64" else None,
                                layout=layout)
    if c.expect == "result" or kind.startswith(("x_", "nan", "inf", "-inf", "f64", "lengths",
                                                "state", "huge")):
        c.num_threads = prng.choice((None, None, None, 1, 2, 3, 8))

    # ---------------------------------------------------------------- hostile x
    shape = np.shape(x) if not isinstance(x, list) else np.asarray(x).shape
    if kind == "x_complex64":
        x = np.asarray(x).astype(np.complex64)
    elif kind == "x_complex128":
        x = np.asarray(x).astype(np.complex128) + 1j
    elif kind == "x_object_floats":
        x = np.asarray(x).astype(object)
    elif kind == "x_object_none":
        x = np.full(shape, None, dtype=object)
    elif kind == "x_str":
        x = np.asarray(x).astype(str)
    elif kind == "x_bytes":
        x = np.asarray(x).astype("S8")
    elif kind == "x_datetime":
        x = np.zeros(shape, "datetime64[s]")
    elif kind == "x_timedelta":
        x = np.zeros(shape, "timedelta64[ms]")
    elif kind == "x_structured":
        x = np.zeros(shape, [("a", "<f4"), ("b", "<f4")])
    elif kind == "x_void":
        x = np.zeros(shape, "V4")
    elif kind in ("x_f16_nan", "x_f16_inf"):
        x = np.asarray(x).astype(np.float16)
        if x.size:
            x.flat[prng.randrange(x.size)] = np.nan if kind == "x_f16_nan" else np.inf
        else:
            c.expect = "maybe"
    elif kind == "x_longdouble":
        x = np.asarray(x).astype(np.longdouble)
    elif kind == "x_clongdouble":
        x = np.asarray(x).astype(np.clongdouble)
    elif kind == "x_0d":
        x = np.float32(1.0) if prng.random() < 0.5 else 1.0
    elif kind == "x_1d":
        x = np.zeros(I, dt)
    elif kind in ("x_4d", "x_5d"):
        nd = 4 if kind == "x_4d" else 5
        x = np.zeros((2,) * (nd - len(shape)) + tuple(shape), dt)
    elif kind == "x_wrong_features":
        x = np.zeros(tuple(shape[:-1]) + (I + prng.choice((1, 2, 7)),), dt)
    elif kind == "x_zero_features":
        x = np.zeros(tuple(shape[:-1]) + (0,), dt)
    elif kind == "x_ragged":
        x = [[[0.0] * I], [[0.0] * (I + 1)]]
    elif kind == "x_none":
        x = None
    elif kind == "x_dict":
        x = {"x": np.zeros(shape)}
    elif kind == "x_string":
        x = "abc"
    elif kind == "x_generator":
        x = _Generator(np.asarray(x))
        c.canon = False
    elif kind == "x_list_with_str":
        x = np.asarray(x).tolist()
        if x and isinstance(x[0], list):
            x[0][0] = "a" if not isinstance(x[0][0], list) else ["a"] * I
        else:
            x = ["a"]
    elif kind == "x_set":
        x = {1.0, 2.0}

    # ---------------------------------------------------------------- huge dims
    def huge(t, b, i, unb=False):  # one real element, every stride 0
        shp = (t, i) if unb else ((b, t, i) if cfg.batch_first else (t, b, i))
        return np.lib.stride_tricks.as_strided(np.zeros(1, dt), shp, (0,) * len(shp),
                                               writeable=False)

    if kind.startswith("huge"):
        c.lengths, c.state = None, None
        x = {"huge_t": lambda: huge(2**31 + 3, 1, I),
             "huge_b": lambda: huge(1, 2**31 + 1, I),
             "huge_tb_product": lambda: huge(2**16, 2**16, I),
             "huge_t_2^32": lambda: huge(2**32 + 1, 1, I),
             "huge_features": lambda: huge(2, 2, 2**31 + 3),
             "huge_unbatched": lambda: huge(2**31 + 3, 1, I, unb=True),
             "huge_tbi_product": lambda: huge(2**12, 2**12, max(I, 1) * 300)}[kind]()

    # ---------------------------------------------------------------- NaN / Inf
    if kind in ("nan", "inf", "-inf", "nan_in_padding", "f64_beyond_f32"):
        xa = np.array(x, dtype=prng.choice(("float32", "float64")) if kind != "f64_beyond_f32"
                      else "float64")
        if not xa.size:
            c.expect = "maybe"
        elif kind == "f64_beyond_f32":
            xa.flat[prng.randrange(xa.size)] = 1e39 * prng.choice((1, -1))
        elif kind == "nan_in_padding":
            if unbatched or Tn < 2:
                c.expect = "error"
                xa.flat[prng.randrange(xa.size)] = np.nan
            else:
                c.lengths = np.full(B, Tn - 1, np.int64)
                tax = 1 if cfg.batch_first else 0
                idx = [slice(None)] * 3
                idx[tax] = Tn - 1
                xa[tuple(idx)] = np.nan
                c.canon = False  # the contiguous copy holds the NaN too: no reference
        else:
            xa.flat[prng.randrange(xa.size)] = {"nan": np.nan, "inf": np.inf,
                                                "-inf": -np.inf}[kind]
        x = xa

    # ---------------------------------------------------------------- hostile state
    if kind.startswith("state_"):
        h, cc = c.state if c.state is not None else _random_state(m, B, unbatched, rng, np)
        stacked = not isinstance(h, list)
        if kind == "state_wrong_shape":
            h = np.zeros(np.shape(h)[:-1] + (np.shape(h)[-1] + 1,)) if stacked else \
                [np.zeros(a.shape[:-1] + (a.shape[-1] + 1,)) for a in h]
        elif kind == "state_wrong_b":
            if unbatched:
                cc = np.zeros((np.shape(cc)[0], 2, np.shape(cc)[-1])) if stacked else \
                    [np.zeros((a.shape[0], 2, a.shape[-1])) for a in cc]
            else:
                cc = np.zeros((np.shape(cc)[0], B + 1, np.shape(cc)[-1])) if stacked else \
                    [np.zeros((a.shape[0], B + 1, a.shape[-1])) for a in cc]
        elif kind == "state_wrong_d":
            h = np.concatenate([h, h]) if stacked else [np.concatenate([a, a]) for a in h]
        elif kind == "state_complex":
            h = np.asarray(h, dtype=complex) if stacked else [a.astype(complex) for a in h]
        elif kind == "state_object":
            h = np.asarray(h).astype(object) if stacked else [a.astype(object) for a in h]
        elif kind == "state_str":
            h = np.asarray(h).astype(str) if stacked else [a.astype(str) for a in h]
        elif kind in ("state_nan", "state_inf"):
            v = np.nan if kind == "state_nan" else -np.inf
            h = np.array(h, copy=True) if stacked else [np.array(a, copy=True) for a in h]
            target = h if stacked else h[prng.randrange(len(h))]
            if target.size:
                target.flat[prng.randrange(target.size)] = v
            else:
                c.expect = "maybe"
        elif kind == "state_f64_beyond_f32":
            h = np.array(h, dtype=np.float64) if stacked else [a.astype(np.float64) for a in h]
            target = h if stacked else h[0]
            if target.size:
                target.flat[0] = 1e39
                c.expect = "error" if m.dtype == np.float32 else "maybe"
        elif kind == "state_int":
            h = np.rint(np.asarray(h)).astype(np.int32) if stacked else \
                [np.rint(a).astype(np.int32) for a in h]
        elif kind == "state_per_layer_list" and stacked:
            D = cfg.layers[0].num_directions
            h = [h[k * D:(k + 1) * D] for k in range(cfg.num_layers)]
            cc = [cc[k * D:(k + 1) * D] for k in range(cfg.num_layers)]
        state = (h, cc)
        if kind == "state_triple":
            state = (h, cc, cc)
        elif kind == "state_single":
            state = h
        elif kind == "state_none_pair":
            state = (None, None)
            c.canon = False
        elif kind == "state_scalars":
            state = (0.0, 0.0)
        c.state = state
        if B == 0 and kind in ("state_nan", "state_inf"):
            c.expect = "maybe"

    # ---------------------------------------------------------------- hostile lengths
    if kind.startswith("lengths_"):
        L = np.asarray(c.lengths if c.lengths is not None else np.zeros(B, np.int64))
        L = L.reshape(-1) if L.ndim == 0 else L
        n = len(L)
        new = {
            "lengths_negative": lambda: np.where(np.arange(n) == 0, -1, L),
            "lengths_above_t": lambda: np.where(np.arange(n) == n - 1, Tn + 1, L),
            "lengths_fractional": lambda: L + 0.5,
            "lengths_nan": lambda: np.where(np.arange(n) == 0, np.nan, L.astype(float)),
            "lengths_inf": lambda: np.where(np.arange(n) == 0, np.inf, L.astype(float)),
            "lengths_wrong_len": lambda: np.concatenate([L, [0]]),
            "lengths_2d": lambda: L[None, :],
            "lengths_bool": lambda: L.astype(bool),
            "lengths_str": lambda: L.astype(str),
            "lengths_none_inside": lambda: [None] + L.tolist()[1:],
            "lengths_2^40": lambda: np.where(np.arange(n) == 0, 2**40, L),
            "lengths_uint64_max": lambda: np.where(np.arange(n) == 0, np.uint64(2**64 - 1),
                                                   L.astype(np.uint64)),
            "lengths_float_integral": lambda: L.astype(float),
            "lengths_object_ints": lambda: L.astype(object),
            "lengths_scalar": lambda: int(L[0]) if n else 0,
            "lengths_int8": lambda: L.astype(np.int8),
        }[kind]()
        if n == 0 and kind in ("lengths_negative", "lengths_above_t", "lengths_nan",
                               "lengths_inf", "lengths_2^40", "lengths_uint64_max",
                               "lengths_fractional", "lengths_none_inside"):
            c.expect = "maybe"
        if kind == "lengths_scalar":
            c.expect = "maybe" if unbatched else "error"
        if kind == "lengths_bool":
            c.canon = False  # bool lengths: 0/1, the reference takes them as such
        c.lengths = new

    # ---------------------------------------------------------------- num_threads
    if kind.startswith("threads_"):
        c.num_threads = {"threads_0": 0, "threads_-1": -1, "threads_True": True,
                         "threads_False": False, "threads_2.0": 2.0, "threads_str": "2",
                         "threads_np_int64": np.int64(2), "threads_2^31-1": 2**31 - 1,
                         "threads_2^31": 2**31, "threads_10^6": 10**6, "threads_1000": 1000,
                         "threads_1.5": 1.5, "threads_list": [2]}[kind]
        if kind == "threads_False":
            c.expect = "maybe"
    c.x = x
    c.real_bytes = _real_bytes(x, np) + sum(_real_bytes(a, np) for a in _flat(c.state))
    c.desc = describe_call(m, c, np, unbatched)
    return c, unbatched


class _Generator:
    """Iterates the rows of an array, like a generator, with a stable repr."""

    def __init__(self, a):
        self._it = iter(a)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._it)

    def __repr__(self):
        return "<a generator of rows>"


def _flat(state):
    if state is None:
        return []
    if isinstance(state, (list, tuple)):
        out = []
        for s in state:
            out.extend(_flat(s))
        return out
    return [state]


def _real_bytes(a, np):
    """Bytes of memory behind an array (a broadcast view: its base's); 0 otherwise."""
    if not isinstance(a, np.ndarray):
        return 0
    if a.size == 0:
        return 0
    lo, hi = np.byte_bounds(a) if hasattr(np, "byte_bounds") else np.lib.array_utils.\
        byte_bounds(a)
    return hi - lo


def _fmt(v, np):
    if isinstance(v, np.ndarray):
        return (f"ndarray(shape={v.shape}, dtype={v.dtype}, strides={v.strides}, "
                f"C={v.flags.c_contiguous}, F={v.flags.f_contiguous}, "
                f"aligned={v.flags.aligned}, writeable={v.flags.writeable})")
    if isinstance(v, (list, tuple)):
        inner = ", ".join(_fmt(a, np) for a in v[:4])
        return f"{type(v).__name__}[{len(v)}]({inner}{', ...' if len(v) > 4 else ''})"
    r = repr(v)
    return r if len(r) < 80 else r[:77] + "..."


def describe_call(m, c, np, unbatched):
    return (f"{m!r}: x={_fmt(c.x, np)}, state={_fmt(c.state, np)}, "
            f"lengths={_fmt(c.lengths, np)}, num_threads={c.num_threads!r}, "
            f"unbatched={unbatched}")


# ============================================================================ checks
def _arrays(result):
    out, (h, cc) = result
    hs = list(h) if isinstance(h, list) else [h]
    cs = list(cc) if isinstance(cc, list) else [cc]
    return [out] + hs + cs


def _contiguous(v, dtype, np):
    if v is None:
        return None
    if isinstance(v, (list, tuple)):
        return type(v)(_contiguous(a, dtype, np) for a in v)
    return np.ascontiguousarray(np.asarray(v, dtype=np.float64).astype(dtype))


def expected_shapes(m, T, B, unbatched):
    cfg = m.config
    F = cfg.layers[-1].num_directions * cfg.layers[-1].output_size
    if unbatched:
        out = (T, F)
    else:
        out = (B, T, F) if cfg.batch_first else (T, B, F)
    return out


def check_result(m, c, result, unbatched, np, ref):
    """None if the result holds, else (outcome, detail)."""
    arrs = _arrays(result)
    if not all(isinstance(a, np.ndarray) and a.dtype == m.dtype for a in arrs):
        return "bad_result", f"outputs of dtype {[getattr(a, 'dtype', type(a)) for a in arrs]}"
    if not all(np.isfinite(a).all() for a in arrs):
        return "bad_result", "non-finite outputs"
    if not c.canon:
        return None
    try:
        x64 = np.array(c.x, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    cfg = m.config
    xt = x64[:, None, :] if unbatched and not cfg.batch_first else (
        x64[None] if unbatched else x64)
    xt = xt.transpose(1, 0, 2) if cfg.batch_first else xt   # (T, B, I)
    T, B = xt.shape[0], xt.shape[1]
    if result[0].shape != expected_shapes(m, T, B, unbatched):
        return "bad_result", f"output shape {result[0].shape}"
    lens = None
    if c.lengths is not None:
        try:
            lens = np.asarray(c.lengths, dtype=np.float64).reshape(-1).astype(np.int64)
        except (TypeError, ValueError):
            return None
    # bit-identical to the same call on contiguous copies in the model's dtype
    try:
        xc = np.ascontiguousarray(np.asarray(c.x).astype(m.dtype))
        sc = _contiguous(c.state, m.dtype, np)
        lc = None if lens is None else (np.intc(lens[0]) if np.ndim(c.lengths) == 0
                                        else lens.astype(np.intc))
        again = m(xc, state=sc, lengths=lc, num_threads=c.num_threads)
    except (ValueError, TypeError) as e:
        return "not_bitexact", f"the contiguous copy of an accepted call is refused: {e}"
    for k, (a, b) in enumerate(zip(arrs, _arrays(again))):
        if a.shape != b.shape or not np.array_equal(a, b):
            d = float(np.max(np.abs(a - b))) if a.shape == b.shape and a.size else None
            return "not_bitexact", f"output {k} differs from the contiguous call (max {d})"
    if T > 64:  # the numpy reference is a Python loop over time steps
        return None
    st = _per_layer(m, c.state, unbatched, np)
    w = reference_weights(m)
    out_ref, h_ref, c_ref = ref.lstm_reference(
        w, xt, st, lens, clip=cfg.clip, cell_clip=cfg.cell_clip,
        input_forget=cfg.input_forget, activations=cfg.activations)
    got = np.asarray(result[0], dtype=np.float64)
    got = got[:, None, :] if unbatched and not cfg.batch_first else (
        got[None] if unbatched else got)
    got = got.transpose(1, 0, 2) if cfg.batch_first else got
    tol = TOLERANCE["int8" if cfg.quantization == "int8" else cfg.dtype]
    err = float(np.max(np.abs(got - out_ref))) if got.size else 0.0
    h, cc = result[1]
    hs = h if isinstance(h, list) else [h]
    cs = cc if isinstance(cc, list) else [cc]
    flat_h = np.concatenate([np.asarray(a, np.float64).reshape(-1) for a in hs])
    flat_c = np.concatenate([np.asarray(a, np.float64).reshape(-1) for a in cs])
    ref_h = np.concatenate([a.reshape(-1) for a in h_ref])
    ref_c = np.concatenate([a.reshape(-1) for a in c_ref])
    if flat_h.shape != ref_h.shape or flat_c.shape != ref_c.shape:
        return "bad_result", f"state shapes {flat_h.shape} {flat_c.shape}"
    if flat_h.size:
        err = max(err, float(np.max(np.abs(flat_h - ref_h))))
    if flat_c.size:
        # c is unbounded (|c| grows with T): relative to its scale
        err = max(err, float(np.max(np.abs(flat_c - ref_c))) / max(1.0, float(
            np.max(np.abs(ref_c)))))
    if not err <= tol:
        return "mismatch", f"max |error| {err:.3g} > {tol:g} vs the float64 reference"
    return None


# ============================================================================ worker task
def worker_init(config):
    import numpy as np
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import reference  # tests/reference.py: the float64 numpy LSTM
    specs = config["specs"]
    models = [build_model(s) for s in specs]
    for m in models:  # warm up: BLAS buffers, the OpenMP pool, lazy imports
        I = m.config.input_size
        x = np.zeros((3, 9, I), m.dtype)
        m(x)
        m(x, num_threads=2)
        m(x[:, :1])
    return {"np": np, "models": models, "ref": reference}


def run_case(state, case, ctx):
    np = state["np"]
    m = state["models"][case["model"]]
    c, unbatched = make_call(m, case, np)
    res = {"desc": c.desc, "expect": c.expect}
    out_bytes = _legit_bytes(m, c, unbatched, np)
    res["tensor_bytes"] = out_bytes
    try:
        result = m(c.x, state=c.state, lengths=c.lengths, num_threads=c.num_threads)
    except BaseException as e:  # noqa: BLE001 - classified in the parent
        res["exc"] = fc.describe_exception(e)
        res["mem_budget"] = 64 * fc.MiB + 2 * c.real_bytes
        return res
    res["mem_budget"] = 64 * fc.MiB + 2 * (out_bytes + c.real_bytes)
    res["ran"] = True
    try:
        bad = check_result(m, c, result, unbatched, np, state["ref"])
    except BaseException as e:  # noqa: BLE001 - the check itself failed on this result
        bad = ("bad_result", f"checking the result raised {type(e).__name__}: {e}")
    if bad:
        res["bad"], res["detail"] = bad
    return res


def _legit_bytes(m, c, unbatched, np):
    """Bytes a call may legitimately allocate: outputs, x in the model's dtype, state."""
    try:
        shape = np.shape(c.x) if isinstance(c.x, np.ndarray) else np.asarray(c.x).shape
    except Exception:  # noqa: BLE001
        return 0
    if len(shape) not in (2, 3):
        return 0
    n = 1
    for d in shape[:-1]:
        n *= int(d)
    cfg = m.config
    F = max(s.num_directions * max(s.output_size, s.hidden_size) for s in cfg.layers)
    item = m.dtype.itemsize
    return n * (F * cfg.num_layers * 2 + int(shape[-1])) * item


def classify(res) -> str:
    expect = res.get("expect")
    if "exc" in res:
        e = res["exc"]
        if not e["value_or_type_error"]:
            return fc.UNCLEAN
        return "refused_valid" if expect == "result" else "clean_error"
    if "bad" in res:
        return res["bad"]
    if expect == "error":
        return "accepted_invalid"
    return "result_ok" if expect == "result" else "accepted"


# ============================================================================ parent
def save_failure(case, outcome, record, out_dir, specs):
    d = os.path.join(out_dir, outcome)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, f"{case['index']}-{case['kind']}.json")
    note = {"case": case, "model_spec": specs[case["model"]], "models": specs,
            "outcome": outcome, "status": record.get("status")}
    note.update({k: v for k, v in (record.get("result") or {}).items()
                 if k in ("desc", "expect", "exc", "detail", "rss_growth", "mem_budget",
                          "seconds")})
    for k in ("stderr", "returncode", "signal"):
        if record.get(k) is not None:
            note[k] = record[k]
    fc.write_json(path, note)
    return {"saved": path}


def make_campaign(work, specs, *, workers=1, timeout=10.0, rlimit=fc.DEFAULT_RLIMIT_AS,
                  out_dir=None, progress=True):
    config = {"workdir": os.path.join(work, "cases"), "rlimit_as": rlimit, "specs": specs,
              "sys_path": [HERE]}
    on_failure = None
    if out_dir:
        def on_failure(i, case, outcome, record):
            return save_failure(case, outcome, record, out_dir, specs)
    return fc.Campaign(os.path.abspath(__file__), config, classify=classify,
                       failure_outcomes=FORWARD_FAILURES, workers=workers, timeout=timeout,
                       on_failure=on_failure, progress=progress)


def run(cases, *, seed=0, work="/tmp/lstm_fuzz_forward", seconds=None, workers=1,
        timeout=10.0, rlimit=fc.DEFAULT_RLIMIT_AS, out_dir=None, progress=True,
        n_models=N_MODELS, long_t=LONG_T):
    """Run `cases` calls on `n_models` random models; returns (Results, Campaign)."""
    specs = model_specs(seed, n_models)
    camp = make_campaign(work, specs, workers=workers, timeout=timeout, rlimit=rlimit,
                         out_dir=out_dir, progress=progress)
    res = camp.run(lambda i: plan_case(specs, seed, i, long_t), cases, seconds)
    return res, camp


def replay(path, args):
    with open(path) as f:
        note = json.load(f)
    case = note["case"]
    specs = note.get("models") or model_specs(case["seed"], note.get("n_models", N_MODELS))
    if args.in_process:
        state = worker_init({"specs": specs})
        res = run_case(state, case, None)
        print(json.dumps(res, indent=1, default=str))
        print("outcome:", classify(res))
        return
    work = args.work or "/tmp/lstm_fuzz_forward_replay"
    camp = make_campaign(work, specs, timeout=args.timeout,
                         rlimit=int(args.rlimit_gb * fc.GiB), progress=False)
    cfg = dict(camp.config)
    cfg["workdir"] = os.path.join(cfg["workdir"], "w0")
    h = fc.Harness(camp.task_path, cfg, timeout=args.timeout)
    rec = h.run(case)
    h.close()
    print(json.dumps(rec, indent=1, default=str))
    print("outcome:", fc.verdict(rec, classify))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    fc.add_common_args(p, cases=20000, seconds=900, timeout=20.0)
    args = p.parse_args(argv)
    if args.replay:
        return replay(args.replay, args)
    work = args.work or "/tmp/lstm_fuzz_forward"
    out_dir = os.path.join(work, "failures")
    if os.path.isdir(out_dir):
        import shutil
        shutil.rmtree(out_dir)
    t0 = time.monotonic()
    res, camp = run(args.cases, seed=args.seed, work=work, seconds=args.seconds,
                    workers=args.workers, timeout=args.timeout,
                    rlimit=int(args.rlimit_gb * fc.GiB), out_dir=out_dir)
    return fc.finish(
        res, camp, args, time.monotonic() - t0, tool="fuzz_forward", unit="calls", work=work,
        describe_worst=lambda w: (f"{w['growth_bytes'] / fc.MiB:.1f} MiB growth, "
                                  f"{w['ratio_to_budget']:.3f} of its budget -- {w['kind']} "
                                  f"#{w['index']}"),
        models=model_specs(args.seed))

if __name__ == "__main__":
    sys.exit(main())
