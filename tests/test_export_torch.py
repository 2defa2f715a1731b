"""`formats.pytorch.to_state_dict`: our model as a torch.nn.LSTM state dict.

The round trip goes through real torch (`nn.LSTM.load_state_dict`, strict) and
compares outputs; the inverse property (`from_state_dict(to_state_dict(m))` gives
the same weights) and the refusals need no torch.
"""
import numpy as np
import pytest

import lstm_infer as li
from lstm_infer.formats.pytorch import from_state_dict, to_state_dict
from lstm_infer.tolerances import TOL_FRAMEWORK

# (input_size, hidden_size, num_layers, bidirectional, proj_size)
CONFIGS = [
    pytest.param((5, 8, 1, False, 0), id="1layer"),
    pytest.param((5, 8, 2, False, 0), id="2layers"),
    pytest.param((5, 8, 2, True, 0), id="bi-2layers"),
    pytest.param((5, 8, 2, False, 3), id="proj"),
    pytest.param((5, 8, 2, True, 3), id="bi-proj"),
    pytest.param((3, 1, 1, True, 0), id="H1"),
]


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def _model(cfg, dtype="float32", seed=0):
    I, H, L, bi, P = cfg
    return li.LSTM.random(I, H, num_layers=L, bidirectional=bi, proj_size=P, dtype=dtype,
                          seed=seed)


def _torch_lstm(torch, model, sd):
    c = model.config
    lstm = torch.nn.LSTM(c.input_size, c.hidden_size, num_layers=c.num_layers,
                         bidirectional=c.bidirectional, proj_size=c.proj_size,
                         dtype=torch.float64 if model.dtype == np.float64 else torch.float32)
    lstm.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    return lstm.eval()


def _assert_same_outputs(torch, model, lstm, tol, seed=1):
    x = np.random.default_rng(seed).uniform(-1, 1, (7, 3, model.config.input_size))
    x = x.astype(model.dtype if model.config.quantization is None else np.float32)
    out, (h, c) = model(x)
    with torch.inference_mode():
        t_out, (t_h, t_c) = lstm(torch.from_numpy(x))
    for name, ours, theirs in (("out", out, t_out), ("h_n", h, t_h), ("c_n", c, t_c)):
        theirs = theirs.numpy()
        assert ours.shape == theirs.shape, name
        err = float(np.max(np.abs(ours.astype(np.float64) - theirs)))
        assert err <= tol, f"{name}: max abs diff {err:.3g} > {tol:g}"


@pytest.mark.parametrize("cfg", CONFIGS)
def test_round_trip_through_torch(torch, cfg):
    m = _model(cfg)
    sd = to_state_dict(m)
    lstm = _torch_lstm(torch, m, sd)
    # torch's own names, order and shapes
    ref = lstm.state_dict()
    assert list(sd) == list(ref)
    assert {k: v.shape for k, v in sd.items()} == {k: tuple(v.shape) for k, v in ref.items()}
    _assert_same_outputs(torch, m, lstm, TOL_FRAMEWORK["float32"])


def test_round_trip_through_torch_float64(torch):
    m = _model((5, 8, 2, True, 3), dtype="float64")
    sd = to_state_dict(m)
    assert all(v.dtype == np.float64 for v in sd.values())
    _assert_same_outputs(torch, m, _torch_lstm(torch, m, sd), TOL_FRAMEWORK["float64"])


@pytest.mark.parametrize("mode", ["int8-weights", "float16", "bfloat16"])
def test_weight_only_quantized_exports_what_it_computes_with(torch, mode):
    m = _model((5, 8, 2, True, 0)).quantize(mode)
    sd = to_state_dict(m)
    assert all(v.dtype == np.float32 for v in sd.values())
    _assert_same_outputs(torch, m, _torch_lstm(torch, m, sd), TOL_FRAMEWORK["float32"])


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_inverse_of_the_loader(cfg, dtype):
    m = _model(cfg, dtype)
    back = from_state_dict(to_state_dict(m))
    assert back.dtype == m.dtype and back.config == m.config
    for layer_a, layer_b in zip(back.weights, m.weights):
        for a, b in zip(layer_a, layer_b):
            assert a.keys() == b.keys()
            for k in a:
                assert np.array_equal(a[k], b[k]), k


def test_bias_goes_to_bias_ih_and_arrays_are_copies():
    m = _model((5, 8, 1, False, 0))
    sd = to_state_dict(m)
    w = m.weights[0][0]
    assert np.array_equal(sd["bias_ih_l0"], w["b"]) and not sd["bias_hh_l0"].any()
    sd["weight_ih_l0"][:] = 0  # writable, and not the model's memory
    assert np.array_equal(m.weights[0][0]["w_ih"], w["w_ih"]) and w["w_ih"].any()


def _w(rng, I, H, **extra):
    w = {"w_ih": rng.uniform(-0.3, 0.3, (4 * H, I)), "w_hh": rng.uniform(-0.3, 0.3, (4 * H, H)),
         "b": rng.uniform(-0.3, 0.3, 4 * H)}
    for n in extra:
        w[n] = rng.uniform(-0.3, 0.3, H)
    return {k: v.astype(np.float32) for k, v in w.items()}


def _refused():
    rng = np.random.default_rng(0)
    one = [[_w(rng, 4, 6)]]
    bi = [[_w(rng, 4, 6), _w(rng, 4, 6)]]
    return [
        pytest.param(lambda: li.LSTM([[_w(rng, 4, 6, p_i=1, p_f=1, p_o=1)]]),
                     "layer 0: peephole connections", id="peephole"),
        pytest.param(lambda: li.LSTM(one, clip=3.0), "layer 0: clip=3", id="clip"),
        pytest.param(lambda: li.LSTM(one, cell_clip=2.5), "layer 0: cell_clip=2.5",
                     id="cell_clip"),
        pytest.param(lambda: li.LSTM(one, input_forget=True), "input_forget", id="cifg"),
        pytest.param(lambda: li.LSTM(one, activations=("hard_sigmoid", "tanh", "tanh")),
                     "activations hard_sigmoid,tanh,tanh", id="activations"),
        pytest.param(lambda: li.LSTM(bi, layer_options=[
            {"activations": [("sigmoid", "tanh", "tanh"), ("sigmoid", "relu", "relu")]}]),
            "activations sigmoid,tanh,tanh / sigmoid,relu,relu", id="per-direction-activations"),
        pytest.param(lambda: li.LSTM(one, layer_options=[{"direction": "reverse"}]),
                     "layer 0: a reverse-only direction", id="reverse-only"),
        pytest.param(lambda: li.LSTM(bi, layer_options=[{"merge": "sum"}]),
                     "layer 0: merge='sum'", id="merge"),
        pytest.param(lambda: li.LSTM([[_w(rng, 4, 6)], [_w(rng, 6, 5)]]),
                     "layers of different sizes or directions: 6, 5", id="sizes"),
        pytest.param(lambda: li.LSTM([bi[0], [_w(rng, 12, 6)]]),
                     "different sizes or directions: 6x2, 6", id="directions"),
        pytest.param(lambda: li.LSTM.random(4, 16).quantize("int8"), 'quantization="int8"',
                     id="int8"),
    ]


@pytest.mark.parametrize("make, message", _refused())
def test_refuses_what_torch_cannot_express(make, message):
    with pytest.raises(ValueError, match="torch.nn.LSTM cannot express this model") as e:
        to_state_dict(make())
    assert message in str(e.value)


def test_refusal_lists_every_problem():
    rng = np.random.default_rng(0)
    m = li.LSTM([[_w(rng, 4, 6, p_i=1, p_f=1, p_o=1)]], clip=1.0, input_forget=True)
    with pytest.raises(ValueError) as e:
        to_state_dict(m)
    assert ("layer 0: peephole connections; layer 0: clip=1; layer 0: input_forget (CIFG)"
            in str(e.value))
