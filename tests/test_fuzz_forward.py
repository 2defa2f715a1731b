"""Hostile `forward` calls, bounded: the seeded fuzzer of bench/fuzz_forward.py at a few
hundred calls, each in a worker subprocess under RLIMIT_AS with a per-call timeout (a
crash or a hang fails the test; it cannot take the test run down).

Every call must give a result -- valid ones equal to the float64 reference of
tests/reference.py and bit-identical to the call on contiguous copies -- or a clean
ValueError / TypeError; never a crash, a hang, another exception, or a memory peak
above 64 MiB + 2 x what the call needs. The full-size run is
``python bench/fuzz_forward.py --cases 20000``.
"""
from __future__ import annotations

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "bench"))
import fuzz_common as fc  # noqa: E402
import fuzz_forward as ff  # noqa: E402

N_CALLS = 300
N_MODELS = 16
SEED = 20261201

# Findings reported and not fixed yet: (outcome, case kind) -> the finding. A failure
# listed here turns the test into an xfail; any other failure fails it.
KNOWN = {}


def key(f):
    """What a known finding is listed by: (outcome or "memory", kind)."""
    memory = f.get("mem_flag") and f["outcome"] in ("result_ok", "accepted", "clean_error")
    return ("memory" if memory else f["outcome"], f["kind"])


def check(res):
    known = fc.check_failures(res.failures, key, KNOWN, "fuzz_forward.py")
    if known:
        pytest.xfail("; ".join(known))


def test_hostile_forward_calls(tmp_path):
    res, _ = ff.run(N_CALLS, seed=SEED, work=str(tmp_path), timeout=30.0,
                    out_dir=str(tmp_path / "failures"), progress=False, n_models=N_MODELS,
                    long_t=2**12)
    assert res.n == N_CALLS
    totals = res.totals()
    # the mix exercises both sides: checked results and refusals
    assert totals.get("result_ok", 0) > N_CALLS // 4, totals
    assert totals.get("clean_error", 0) > N_CALLS // 4, totals
    check(res)


def test_case_generation_is_deterministic():
    """A failure is replayed from (seed, index): the same description, the same call."""
    import numpy as np
    specs = ff.model_specs(SEED, 4)
    models = [ff.build_model(s) for s in specs]
    for i in range(60):
        fam, case, _ = ff.plan_case(specs, SEED, i)
        assert ff.plan_case(specs, SEED, i)[1] == case
        m = models[case["model"]]
        a, _ = ff.make_call(m, case, np)
        b, _ = ff.make_call(m, case, np)
        assert a.desc == b.desc and a.expect == b.expect
        if isinstance(a.x, np.ndarray) and a.x.dtype.kind in "fiub" and a.x.size < 10**6:
            assert np.array_equal(a.x, b.x, equal_nan=a.x.dtype.kind == "f")
