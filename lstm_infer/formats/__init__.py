"""One adapter per weight source; each returns an `LSTM` built from canonical weights.
The gate-order conversions live in `gate_orders.py`."""
