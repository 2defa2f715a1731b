"""One module per weight source. Each is a numpy core that reads its source into
canonical data (`lstm_infer._build.CanonicalModel`: canonical weights + constructor
options; ``native.read``, ``pytorch.read_state_dict``, ``keras.read_keras``,
``onnx.read_onnx``...) and thin public adapters (``native.load``, ``from_torch``,
``from_keras``, ``from_onnx``) that build the model through `lstm_infer._build.build`.
No module here imports ``lstm_infer.model``. The gate-order conversions live in
`gate_orders.py`; `detect.py` sniffs a file's format and dispatches (``li.load``)."""
