"""Inputs whose strides are legal for numpy but not for BLAS must still give the
right answer (regressions: a length-1 axis with a negative stride; overlapping
sliding-window views)."""
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

import lstm_infer as li
from conftest import TOL_SELF


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_length_one_axis_with_negative_stride(dtype):
    m = li.LSTM.random(5, 6, dtype=dtype, seed=2)
    x = np.random.default_rng(0).uniform(-3, 3, (9, 4, 5)).astype(dtype)
    view = x[:1, 3:4][::-1]          # numpy keeps a negative stride on the length-1 axis
    assert view.strides[0] < 0
    np.testing.assert_allclose(m(view)[0], m(view.copy())[0], atol=TOL_SELF[dtype], rtol=0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch", [1, 3])
def test_overlapping_sliding_window_rows(dtype, batch):
    """x[t] = signal[t : t + I]: rows overlap (time stride 1 element < I)."""
    m = li.LSTM.random(8, 6, dtype=dtype, seed=3)
    sig = np.random.default_rng(1).uniform(-1, 1, (batch, 40)).astype(dtype)
    win = sliding_window_view(sig, 8, axis=1)          # (B, 33, 8), overlapping rows
    x = win.transpose(1, 0, 2)                          # (T, B, I) view
    assert x.strides[0] < 8 * x.itemsize
    np.testing.assert_allclose(m(x)[0], m(np.ascontiguousarray(x))[0],
                               atol=TOL_SELF[dtype], rtol=0)
