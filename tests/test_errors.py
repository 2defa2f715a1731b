"""Bad input is refused with ValueError / TypeError whose message names what was
expected and what came (STYLE §1), before anything runs."""
from __future__ import annotations

import re

import numpy as np
import pytest

import lstm_infer as li
from lstm_infer import _kernels
from reference import random_weights

T, B, I, H, P = 4, 2, 3, 20, 5


@pytest.fixture(scope="module")
def model():
    # 2 layers, bidirectional, projected: h0 (4, B, 5), c0 (4, B, 20)
    return li.LSTM.random(I, H, num_layers=2, bidirectional=True, proj_size=P)


@pytest.fixture(scope="module")
def x():
    return np.zeros((T, B, I), np.float32)


def raises(exc, *fragments):
    """pytest.raises that also requires every fragment (literal text) in the message."""
    return pytest.raises(exc, match="(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments))


# ----------------------------------------------------------------------------- x
@pytest.mark.parametrize("shape", [(3,), (1, T, B, I), ()], ids=["1d", "4d", "0d"])
def test_x_ndim(model, shape):
    with raises(ValueError, "3-D", str(shape)):
        model(np.zeros(shape))


@pytest.mark.parametrize("shape", [(T, B, I + 2), (T, 1), (T, B, 0)], ids=["3d", "unbatched", "I0"])
def test_x_feature_size(model, shape):
    with raises(ValueError, str(I), str(shape)):
        model(np.zeros(shape))


def test_x_feature_size_batch_first():
    m = li.LSTM.random(I, H, batch_first=True)
    with raises(ValueError, str(I), "(2, 7, 5)"):
        m(np.zeros((2, 7, 5)))


@pytest.mark.parametrize("value", [
    np.zeros((T, B, I), complex),
    np.zeros((T, B, I), object),
    np.full((T, B, I), "a"),
    np.zeros((T, B, I), "datetime64[s]"),
    "abc",
], ids=["complex", "object", "string", "datetime", "str"])
def test_x_dtype(model, value):
    with raises(TypeError, "x", str(np.asarray(value).dtype)):
        model(value)


def test_x_ragged_list(model):
    with pytest.raises(ValueError, match="inhomogeneous|sequence"):  # numpy's own message
        model([[[0.0, 1.0, 2.0]], [[0.0, 1.0]]])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_x_not_finite(model, bad, dtype):
    x = np.zeros((T, B, I), dtype)
    x[2, 1, 0] = bad
    with raises(ValueError, "x", "NaN"):
        model(x)


# ----------------------------------------------------------------------------- state
@pytest.mark.parametrize("h_shape,c_shape,bad,want", [
    ((4, B, H), (4, B, H), (4, B, H), (4, B, P)),     # h0 with H instead of P
    ((4, B, P), (4, B + 1, H), (4, B + 1, H), (4, B, H)),
    ((2, B, P), (4, B, H), (2, B, P), (4, B, P)),     # one layer's worth
    ((4, P), (4, H), (4, P), (4, B, P)),              # unbatched state with batched x
    ((1, 4, B, P), (4, B, H), (1, 4, B, P), (4, B, P)),
], ids=["h0-H-for-P", "c0-batch", "h0-layers", "no-batch-axis", "h0-4d"])
def test_state_shape(model, x, h_shape, c_shape, bad, want):
    with raises(ValueError, str(want), str(bad)):
        model(x, state=(np.zeros(h_shape), np.zeros(c_shape)))


def test_state_shape_unbatched(model):
    with raises(ValueError, str((4, P)), str((4, 1, P))):
        model(np.zeros((T, I)), state=(np.zeros((4, 1, P)), np.zeros((4, H))))


@pytest.mark.parametrize("state", [np.zeros((4, B, P)), (np.zeros((4, B, P)),), (1, 2, 3), 5],
                         ids=["array", "1-tuple", "3-tuple", "int"])
def test_state_not_a_pair(model, x, state):
    with raises(TypeError, "(h0, c0)"):
        model(x, state=state)


def test_state_dtype_and_nan(model, x):
    with raises(TypeError, "h0", "complex"):
        model(x, state=(np.zeros((4, B, P), complex), np.zeros((4, B, H))))
    c0 = np.zeros((4, B, H))
    c0[1, 1, 1] = np.nan
    with raises(ValueError, "c0", "NaN"):
        model(x, state=(np.zeros((4, B, P)), c0))


def test_state_per_layer_list_shapes():
    m = li.LSTM(random_weights(I, [20, 7], bidirectional=True))
    h0 = [np.zeros((2, B, 20)), np.zeros((2, B, 20))]
    c0 = [np.zeros((2, B, 20)), np.zeros((2, B, 7))]
    with raises(ValueError, "h0[1]", str((2, B, 7)), str((2, B, 20))):
        m(np.zeros((T, B, I)), state=(h0, c0))
    with raises(ValueError, "h0", "2 layers"):
        m(np.zeros((T, B, I)), state=(h0[:1], c0))
    with raises(ValueError, "h0", "list"):  # a stacked array cannot describe this stack
        m(np.zeros((T, B, I)), state=(np.zeros((4, B, 20)), c0))


# ----------------------------------------------------------------------------- lengths
@pytest.mark.parametrize("lengths,want,got", [
    ([-1, 2], "0 <= len <= T = 4", "-1"),
    ([5, 2], "0 <= len <= T = 4", "5"),
], ids=["negative", "above-T"])
def test_lengths_range(model, x, lengths, want, got):
    with raises(ValueError, want, got):
        model(x, lengths=lengths)


@pytest.mark.parametrize("lengths,got", [([1, 2, 3], "(3,)"), ([[1, 2]], "(1, 2)"), (3, "()")],
                         ids=["too-many", "2d", "scalar"])
def test_lengths_shape(model, x, lengths, got):
    with raises(ValueError, f"({B},)", got):
        model(x, lengths=lengths)


@pytest.mark.parametrize("lengths,dtype", [([1.5, 2], "float64"), ([np.nan, 2], "float64"),
                                           (["a", "b"], "<U1"), ([1 + 0j, 2], "complex128")],
                         ids=["fractional", "nan", "string", "complex"])
def test_lengths_not_integers(model, x, lengths, dtype):
    with raises(TypeError, "integer", dtype):
        model(x, lengths=lengths)


# ----------------------------------------------------------------------------- num_threads
@pytest.mark.parametrize("n", [0, -1, 1.5, "2", True], ids=["0", "-1", "1.5", "str", "bool"])
def test_num_threads_per_call(model, x, n):
    with pytest.raises((ValueError, TypeError), match=re.escape(repr(n))):
        model(x, num_threads=n)


@pytest.mark.parametrize("n", [-1, 1.5, "2", True], ids=["-1", "1.5", "str", "bool"])
def test_set_num_threads(n):
    with pytest.raises((ValueError, TypeError), match=re.escape(repr(n))):
        li.set_num_threads(n)


def test_failed_call_does_not_leak_thread_accounting(model, x):
    """A refused call must leave the engine usable and give the same results after."""
    before = model(x, num_threads=2)[0]
    for _ in range(3):
        with pytest.raises(ValueError):
            model(x, num_threads=0)
        with pytest.raises(ValueError):
            model(x, lengths=[9, 9])
    np.testing.assert_array_equal(model(x, num_threads=2)[0], before)


def test_bad_simd_level():
    with raises(ValueError, "generic", "'sse'"):
        _kernels.set_simd_level("sse")


# ----------------------------------------------------------------------------- weights
def _weights(**kw):
    return random_weights(I, H, **kw)


def _with(change, **kw):
    w = _weights(**kw)
    change(w[0][0])
    return w


def _set(name, value):
    return lambda d: d.__setitem__(name, value)


WEIGHT_CASES = {  # name: (change to layer 0 forward, random_weights kwargs, expected, got)
    "w_hh-shape": (_set("w_hh", np.zeros((80, 19))), {}, "(80, 20)", "(80, 19)"),
    "w_hh-transposed": (_set("w_hh", np.zeros((20, 80))), {}, "(80, 20)", "(20, 80)"),
    "w_ih-1d": (_set("w_ih", np.zeros(80)), {}, "(4*H, I)", "(80,)"),
    "w_ih-rows": (_set("w_ih", np.zeros((81, 3))), {}, "(4*H, I)", "(81, 3)"),
    "b-shape": (_set("b", np.zeros(40)), {}, "(80,)", "(40,)"),
    "b-ih+hh-unfused": (_set("b", np.zeros(160)), {}, "(80,)", "(160,)"),
    "p_o-shape": (_set("p_o", np.zeros(21)), dict(peephole=True), "(20,)", "(21,)"),
    "w_hr-shape": (_set("w_hr", np.zeros((5, 19))), dict(proj_size=5), "20", "(5, 19)"),
    "w_hh-vs-proj": (_set("w_hh", np.zeros((80, 20))), dict(proj_size=5), "(80, 5)", "(80, 20)"),
    "missing-w_hh": (lambda d: d.pop("w_hh"), {}, "missing", "w_hh"),
    "missing-w_ih": (lambda d: d.pop("w_ih"), {}, "missing", "w_ih"),
    "unknown-key": (_set("bias_ih", np.zeros(80)), {}, "unknown", "bias_ih"),
    "peephole-partial": (lambda d: d.pop("p_f"), dict(peephole=True), "p_i, p_f, p_o", ""),
}


@pytest.mark.parametrize("case", list(WEIGHT_CASES), ids=list(WEIGHT_CASES))
def test_bad_weights(case):
    change, kw, want, got = WEIGHT_CASES[case]
    with raises(ValueError, "layer 0", want, got):
        li.LSTM(_with(change, **kw))


@pytest.mark.parametrize("P_bad", [20, 25])
def test_proj_not_smaller_than_hidden(P_bad):
    with raises(ValueError, "proj_size", "20", str(P_bad)):
        li.LSTM(random_weights(I, H, proj_size=P_bad))
    with raises(ValueError, "proj_size", str(P_bad)):
        li.LSTM.random(I, H, proj_size=P_bad)


def test_negative_proj_size():
    with raises(ValueError, "proj_size", "-1"):
        li.LSTM.random(I, H, proj_size=-1)


def test_weight_dtype():
    with raises(TypeError, "w_ih", "complex"):
        li.LSTM(_with(lambda d: d.__setitem__("w_ih", np.zeros((80, 3), complex))))
    with raises(TypeError, "b", "object"):
        li.LSTM(_with(lambda d: d.__setitem__("b", np.array([None] * 80))))


@pytest.mark.parametrize("name", ["w_ih", "w_hh", "b"])
def test_weights_not_finite(name):
    """Like x and state, weights with NaN / inf are refused instead of silently giving NaN."""
    def poison(d):
        d[name] = np.array(d[name])
        d[name].flat[3] = np.nan
    with raises(ValueError, name, "NaN"):
        li.LSTM(_with(poison))


def test_layer_input_size_mismatch():
    with raises(ValueError, "layer 1", "(80, 20)", "(80, 7)"):
        li.LSTM([_weights()[0], random_weights(7, H)[0]])


def test_directions_disagree():
    with raises(ValueError, "reverse", "hidden_size=10"):
        li.LSTM([[_weights()[0][0], random_weights(I, 10)[0][0]]])
    with raises(ValueError, "reverse", "peephole"):
        li.LSTM([[_weights()[0][0], _weights(peephole=True)[0][0]]])


@pytest.mark.parametrize("layers,exc", [
    ([], TypeError),
    ({"w_ih": np.zeros((80, 3))}, TypeError),
    ([[]], ValueError),
    ([[{}, {}, {}]], ValueError),
    ([[np.zeros((80, 3))]], TypeError),
    ("weights", TypeError),
], ids=["empty", "dict", "no-directions", "3-directions", "array-not-dict", "str"])
def test_bad_layers_structure(layers, exc):
    with pytest.raises(exc, match="layer|direction"):
        li.LSTM(layers)


# ----------------------------------------------------------------------------- options
@pytest.mark.parametrize("acts,exc,fragment", [
    (("softsign", "tanh", "tanh"), ValueError, "softsign"),
    (("sigmoid", "elu", "tanh"), ValueError, "elu"),
    (("sigmoid", "tanh", "gelu"), ValueError, "gelu"),
    (("sigmoid", "tanh"), ValueError, "3"),
    (("sigmoid", "tanh", "tanh", "tanh"), ValueError, "3"),
    ((1, "tanh", "tanh"), TypeError, "1"),
    ((("hard_sigmoid", float("nan"), 0.5), "tanh", "tanh"), ValueError, "alpha"),
], ids=["softsign", "elu", "gelu", "two", "four", "int", "nan-alpha"])
def test_bad_activations(acts, exc, fragment):
    with pytest.raises(exc, match=re.escape(fragment)):
        li.LSTM.random(I, H, activations=acts)


def test_activation_error_lists_supported_names():
    with raises(ValueError, "hard_sigmoid", "linear", "relu", "sigmoid", "tanh"):
        li.LSTM.random(I, H, activations=("swish", "tanh", "tanh"))


def test_activations_as_single_string_is_refused():
    with raises(TypeError, "sequence of 3 activations", "got 'sigmoid'"):
        li.LSTM.random(I, H, activations="sigmoid")


@pytest.mark.parametrize("name,value", [("clip", -1.0), ("clip", 0.0), ("clip", np.nan),
                                        ("cell_clip", np.inf), ("cell_clip", -3)],
                         ids=["clip-neg", "clip-0", "clip-nan", "cell_clip-inf", "cell_clip-neg"])
def test_bad_clip(name, value):
    with raises(ValueError, name, str(value)):
        li.LSTM.random(I, H, **{name: value})


@pytest.mark.parametrize("name", ["clip", "cell_clip"])
def test_clip_not_a_number(name):
    with pytest.raises((TypeError, ValueError), match=name):
        li.LSTM.random(I, H, **{name: "big"})


@pytest.mark.parametrize("dtype", ["float16", "int32", "complex64"])
def test_bad_model_dtype(dtype):
    with raises(ValueError, "float32", dtype):
        li.LSTM.random(I, H, dtype=dtype)


@pytest.mark.parametrize("kw,fragment", [(dict(input_size=0), "input_size"),
                                         (dict(hidden_size=0), "hidden_size"),
                                         (dict(hidden_size=4.0), "hidden_size"),
                                         (dict(num_layers=0), "num_layers")])
def test_bad_random_sizes(kw, fragment):
    args = dict(input_size=I, hidden_size=H)
    args.update(kw)
    with raises(ValueError, fragment):
        li.LSTM.random(**args)


# ----------------------------------------------------------------------------- from_torch
# State dicts as numpy arrays (to_state_dict, the loader's inverse): no torch needed.
def _state_dict(**kw):
    from lstm_infer.formats.pytorch import to_state_dict
    return to_state_dict(li.LSTM.random(3, 4, **kw))


def test_from_torch_errors():
    sd = _state_dict()
    with raises(ValueError, "missing", "weight_hh_l0"):
        li.from_torch({k: v for k, v in sd.items() if not k.startswith("weight_hh")})
    with raises(ValueError, "'enc.'", "['']"):
        li.from_torch(sd, prefix="enc")
    with raises(ValueError, "found 0"):
        li.from_torch({})
    with raises(TypeError, "int"):
        li.from_torch(3)


def test_from_torch_gru_state_dict_is_named():
    """nn.GRU(3, 4)'s state dict (3H = 12 gate rows): the message suspects a GRU."""
    sd = {"weight_ih_l0": np.zeros((12, 3), np.float32),
          "weight_hh_l0": np.zeros((12, 4), np.float32),
          "bias_ih_l0": np.zeros(12, np.float32), "bias_hh_l0": np.zeros(12, np.float32)}
    with raises(ValueError, "weight_hh_l0", "(12, 3)", "got (12, 4)", "a GRU, not an LSTM?"):
        li.from_torch(sd)


def test_from_torch_layer_gap_is_refused():
    """A state dict with layers 0 and 2 but no layer 1 must not silently load layer 0 only."""
    sd = _state_dict(num_layers=3)
    with raises(ValueError, "l2"):
        li.from_torch({k: v for k, v in sd.items() if "_l1" not in k})


def test_from_torch_gru_module_is_refused():
    torch = pytest.importorskip("torch")
    with raises(TypeError, "converts LSTMs", "got a GRU"):
        li.from_torch(torch.nn.GRU(3, 4))
    sd = torch.nn.LSTM(3, 4, num_layers=3).state_dict()  # tensors, not arrays
    with raises(ValueError, "l2"):
        li.from_torch({k: v for k, v in sd.items() if "_l1" not in k})
