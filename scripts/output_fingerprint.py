"""Outputs of a fixed set of models and inputs on every SIMD level this CPU has, for a
bit-exact comparison of two builds (a refactoring must not change a single bit):

    PYTHONPATH=BEFORE_TREE python scripts/output_fingerprint.py before.npz
    PYTHONPATH=AFTER_TREE  python scripts/output_fingerprint.py after.npz
    python scripts/output_fingerprint.py --compare before.npz after.npz

Models: plain, bidirectional 2-layer, projection, peephole + clip, float64 2-layer, H=256,
and every quantization mode; batches 1, 3, 9 (with lengths); 1 and 2 threads.
"""
import sys

import numpy as np


def fingerprint(path):
    import lstm_infer as li
    from lstm_infer import _kernels
    models = {
        "plain": li.LSTM.random(40, 128),
        "bi2": li.LSTM.random(24, 72, num_layers=2, bidirectional=True),
        "proj": li.LSTM.random(32, 96, proj_size=40),
        "peep": li.LSTM.random(16, 48, peephole=True, clip=2.0),
        "f64": li.LSTM.random(16, 40, num_layers=2, dtype="float64"),
        "big": li.LSTM.random(64, 256),
    }
    for q in ("int8", "int8-weights", "float16", "bfloat16"):
        models["q_" + q] = li.LSTM.random(40, 80, bidirectional=True).quantize(q)
    res = {}
    for lvl in ("generic", "avx2", "avx512"):
        if _kernels.set_simd_level(lvl) != lvl:
            continue
        for name, m in models.items():
            for B in (1, 3, 9):
                x = np.random.default_rng(B).uniform(-2, 2, (23, B, m.config.input_size))
                x = x.astype(m.dtype)
                lengths = None if B == 1 else list(range(23, 23 - B, -1))
                for nt in (1, 2):
                    out, (h, c) = m(x, lengths=lengths, num_threads=nt)
                    res[f"{lvl}/{name}/{B}/{nt}/out"] = out
                    res[f"{lvl}/{name}/{B}/{nt}/c"] = c
    np.savez(path, **res)
    print(f"{len(res)} arrays -> {path}")


def compare(a_path, b_path):
    a, b = np.load(a_path), np.load(b_path)
    if set(a) != set(b):
        sys.exit(f"different cases: {sorted(set(a) ^ set(b))[:10]}")
    bad = [k for k in a if not np.array_equal(a[k], b[k])]
    print(f"{len(a)} arrays, {len(bad)} not bit-identical{': ' + ', '.join(bad[:10]) if bad else ''}")
    return 1 if bad else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--compare"]:
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    fingerprint(sys.argv[1])
