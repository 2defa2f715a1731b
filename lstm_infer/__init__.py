"""lstm_infer: fast, GIL-free CPU inference for LSTM networks.

    import lstm_infer as li
    m = li.LSTM.random(40, 128)       # or li.load("model.pt" / ".keras" / ".onnx" / ".safetensors")
    out, (h_n, c_n) = m(x)            # x: (T, B, 40)
"""
from ._threads import get_num_threads, set_num_threads
from .config import Activation, LayerSpec, LSTMConfig
from .formats.detect import detect_format, load
from .formats.errors import FormatError
from .formats.isolate import IsolatedLoadError, LoadTimeoutError
from .formats.keras import from_keras
from .formats.onnx import from_onnx
from .formats.pytorch import from_torch
from .formats.tflite import from_tflite
from .model import LSTM
from .sequence_model import SequenceModel, load_model

__version__ = "0.1.0"

__all__ = ["LSTM", "LSTMConfig", "LayerSpec", "Activation", "load", "detect_format",
           "FormatError", "LoadTimeoutError", "IsolatedLoadError",
           "from_torch", "from_keras", "from_onnx", "from_tflite", "set_num_threads",
           "get_num_threads",
           "SequenceModel", "load_model",
           "__version__"]
