"""A small batch (1 to 7 rows) split across threads (gate groups and projection column
groups per thread, barriers per step) gives exactly the single-thread result, for every
variant it applies to."""
import numpy as np
import pytest

import lstm_infer as li

CASES = {
    "plain": dict(),
    "peephole": dict(peephole=True),
    "2 layers": dict(num_layers=2),
    "clip+cifg": dict(clip=1.5, input_forget=True),
    "odd H": dict(),
    "projection": dict(proj_size=72),
    "projection+clip": dict(proj_size=40, proj_clip=0.05),
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("B", [1, 5])
def test_split_equals_one_thread(name, threads, B):
    # W_hh >= 128 Ki elements: the split path runs
    H = {"odd H": 200, "projection": 520, "projection+clip": 900}.get(name, 192)
    m = li.LSTM.random(24, H, **CASES[name])
    x = np.random.default_rng(0).uniform(-3, 3, (31, B, 24)).astype(np.float32)
    for layer in m.plan(x, num_threads=threads)["layers"]:  # the split really runs
        assert layer["schedule"] == "split" and layer["threads"] == threads, layer
    assert [l["schedule"] for l in m.plan(x, num_threads=1)["layers"]] == ["serial"] * len(
        m.config.layers)
    lens = None if B == 1 else [31, 20, 5, 1, 0]  # rows leave the split step as they end
    a_out, (a_h, a_c) = m(x, lengths=lens, num_threads=1)
    b_out, (b_h, b_c) = m(x, lengths=lens, num_threads=threads)
    np.testing.assert_array_equal(a_out, b_out)
    np.testing.assert_array_equal(a_h, b_h)
    np.testing.assert_array_equal(a_c, b_c)


@pytest.mark.parametrize("mode", ["int8", "bf16"])
@pytest.mark.parametrize("name", ["plain", "peephole", "2 layers", "projection"])
@pytest.mark.parametrize("B", [1, 3])
def test_split_int8_and_bf16_compute(mode, name, B):
    """Part 0 quantizes (int8) / rounds (bf16) each block's x and each step's h once for
    all parts; every part's gate groups then match the single-thread run bit for bit."""
    H = 520 if name == "projection" else 200
    m = li.LSTM.random(40, H, seed=4, **CASES[name]).quantize(mode)
    x = np.random.default_rng(5).uniform(-2, 2, (37, B, 40)).astype(np.float32)
    for layer in m.plan(x, num_threads=2)["layers"]:
        assert layer["schedule"] == "split", layer
    lens = None if B == 1 else [37, 12, 1]
    a = m(x, lengths=lens, num_threads=1)
    for threads in (2, 3):
        b = m(x, lengths=lens, num_threads=threads)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1][0], b[1][0])
        np.testing.assert_array_equal(a[1][1], b[1][1])


@pytest.mark.parametrize("mode", [None, "float16-weights", "bfloat16-weights", "int8-weights",
                                  "int8", "bf16"])
def test_split_lengths_reverse_and_quantized(mode):
    w = li.LSTM.random(24, 192, seed=2).weights[0]
    m = li.LSTM([w], layer_options=[{"direction": "reverse"}], batch_first=True)
    if mode:
        m = m.quantize(mode)
    x = np.random.default_rng(1).uniform(-1, 1, (1, 40, 24)).astype(np.float32)
    assert m.plan(x, num_threads=2)["layers"][0]["schedule"] == "split"
    for lengths in (None, [17], [0]):
        a = m(x, lengths=lengths, num_threads=1)
        b = m(x, lengths=lengths, num_threads=2)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1][0], b[1][0])


def test_split_under_concurrent_callers():
    """Many Python threads, each asking for 2 threads per call: same results."""
    import threading
    m = li.LSTM.random(16, 256, seed=3)
    x = np.random.default_rng(2).uniform(-1, 1, (25, 1, 16)).astype(np.float32)
    want = m(x, num_threads=1)[0]
    bad = []

    def run():
        for _ in range(5):
            if not np.array_equal(m(x, num_threads=2)[0], want):
                bad.append(1)
    ts = [threading.Thread(target=run) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not bad


@pytest.mark.parametrize("why, kwargs, mode, shape", [
    ("small W_hh", dict(hidden_size=64), None, (9, 1, 24)),
    ("layer norm", dict(hidden_size=192), "layer norm", (9, 1, 24)),
    ("float64", dict(hidden_size=192, dtype="float64"), None, (9, 1, 24)),
    ("batch of 8", dict(hidden_size=192), None, (9, 8, 24)),
])
def test_plan_says_when_the_split_does_not_apply(why, kwargs, mode, shape):
    m = li.LSTM.random(24, **kwargs)
    if mode == "layer norm":  # ln_* weights switch it on
        w = dict(m.weights[0][0], **{n: np.ones(192, np.float32) for n in
                                     ("ln_i", "ln_f", "ln_g", "ln_o")})
        m = li.LSTM([[w]])
    elif mode:
        m = m.quantize(mode)
    x = np.zeros(shape, m.dtype)
    plan = m.plan(x, num_threads=2)
    assert plan["layers"][0]["schedule"] != "split", (why, plan)
    if shape[1] == 8:  # two batch slices of 4 rows on the two threads
        assert plan["slices"] == 2 and plan["layers"][0]["schedule"] == "tasks"
    if shape[1] == 1:  # one sequence runs whole on one thread either way
        np.testing.assert_array_equal(m(x, num_threads=2)[0], m(x, num_threads=1)[0])
