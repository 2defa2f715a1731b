"""torch.nn.LSTM loaded with our weights (`formats.pytorch.to_state_dict`), eval, inference_mode."""
from __future__ import annotations

import numpy as np

from ...formats.pytorch import to_state_dict
from . import Runner, exported, import_peer


def build(model, x, threads: int) -> Runner:
    torch = import_peer("torch")
    sd = exported(to_state_dict, model, "torch")
    cfg = model.config
    lstm = torch.nn.LSTM(cfg.input_size, cfg.hidden_size, num_layers=cfg.num_layers,
                         bidirectional=cfg.bidirectional, proj_size=cfg.proj_size,
                         batch_first=cfg.batch_first, dtype=torch.float32)
    lstm.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    lstm.eval()
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    def fn():
        with torch.inference_mode():
            out, (h, c) = lstm(xt)
        return out.numpy(), h.numpy(), c.numpy()
    return Runner("torch", torch.__version__, fn, lambda: torch.set_num_threads(saved))
