"""The tolerance table (DESIGN §3): one source for the test suite and the benchmark.

Each table maps a model dtype name to the largest max abs difference accepted.
`tests/conftest.py` and `lstm_infer.bench` read them from here, at the time of
the check (so a test can patch an entry).
"""

# Max abs error vs a float64 LSTM (tests/reference.py; in the benchmark, our own
# float64 model on the same weights), DESIGN §3:
# T <= 200, |x| <= 3, weights ~ U(-1/sqrt(H), 1/sqrt(H)).
TOL = {
    "float32": 1e-5,
    "float64": 1e-12,
}
# Against another framework on the same weights (torch / onnxruntime), DESIGN §3.
TOL_FRAMEWORK = {
    "float32": 1e-5,
    "float64": 1e-10,
}
# Same engine, same dtype, two different but equivalent schedules
# (num_threads 1 vs 2: fused small-batch path vs BLAS path, chunked vs one call).
TOL_SELF = {
    "float32": 1e-6,
    "float64": 1e-13,
}

__all__ = ["TOL", "TOL_FRAMEWORK", "TOL_SELF"]
