#!/usr/bin/env python
"""Regenerate the PyTorch file fixtures in tests/data/torch/ (seeded, needs torch).

    python scripts/make_torch_fixtures.py [--out tests/data/torch]

Each fixture is a small (H <= 8) file written by real torch, plus, in
``expected.npz``, an input ``x_<name>`` and torch's outputs ``out_<name>``,
``h_<name>``, ``c_<name>`` on it. tests/test_load_pytorch.py reads them
without torch; ``FIXTURES`` below is the table both sides agree on (file,
prefix to load with, model dtype).

Re-running gives the same weights and outputs (fixed seeds); the zip files'
bytes differ (torch writes a random serialization id), which is harmless.
"""
from __future__ import annotations

import argparse
import os

import numpy as np

# name -> (file, prefix or None, dtype of the loaded model, what it covers)
FIXTURES = {
    "bidir_proj": ("lstm_bidir_proj.pt", None, "float32",
                   "nn.LSTM 2 layers, bidirectional, proj_size; plain state_dict, zip"),
    "cell": ("lstm_cell.pth", None, "float32", "nn.LSTMCell state_dict"),
    "ckpt_bf16": ("checkpoint_bf16.pt", None, "float32",
                  "{'state_dict': bf16 model with an LSTM at encoder.rnn., 'epoch': 3, "
                  "'optimizer': ...}"),
    "legacy_f64": ("legacy_f64.pt", None, "float64",
                   "float64 nn.LSTM, _use_new_zipfile_serialization=False"),
    "encdec_decoder": ("encdec.bin", "decoder.", "float32",
                       "model with encoder and decoder LSTMs (ambiguous without prefix); "
                       "float16 encoder"),
    "safetensors": ("torch_names.safetensors", None, "float32",
                    "safetensors.torch.save_file of a float16 2-layer nn.LSTM"),
}
MODULE_FILE = "pickled_module.pt"  # torch.save(nn.LSTM) -- must be refused
T, B = 7, 3


def main():
    import torch
    from torch import nn

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests",
                                                  "data", "torch"))
    out_dir = os.path.abspath(ap.parse_args().out)
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)
    expected = {}

    def x_for(name, input_size, dtype=torch.float32):
        g = torch.Generator().manual_seed(hash_name(name))
        return (torch.rand((T, B, input_size), generator=g, dtype=torch.float64) * 6 - 3).to(dtype)

    def record(name, x, out, h, c):
        expected[f"x_{name}"] = x.numpy()
        expected[f"out_{name}"] = out.detach().numpy()
        expected[f"h_{name}"] = h.detach().numpy()
        expected[f"c_{name}"] = c.detach().numpy()

    def path(name):
        return os.path.join(out_dir, FIXTURES[name][0])

    with torch.no_grad():
        # 1. a plain state dict: 2 layers, bidirectional, projection
        torch.manual_seed(1)
        m = nn.LSTM(4, 8, num_layers=2, bidirectional=True, proj_size=3).eval()
        torch.save(m.state_dict(), path("bidir_proj"))
        x = x_for("bidir_proj", 4)
        record("bidir_proj", x, *_flat(m(x)))

        # 2. nn.LSTMCell, run step by step over the sequence
        torch.manual_seed(2)
        cell = nn.LSTMCell(5, 6).eval()
        torch.save(cell.state_dict(), path("cell"))
        x = x_for("cell", 5)
        h = c = torch.zeros(B, 6)
        outs = []
        for t in range(T):
            h, c = cell(x[t], (h, c))
            outs.append(h)
        record("cell", x, torch.stack(outs), h[None], c[None])

        # 3. a training checkpoint with a bfloat16 model: the LSTM sits at state_dict/encoder.rnn.
        torch.manual_seed(3)
        model = nn.Module()
        model.encoder = nn.Module()
        model.encoder.embed = nn.Linear(3, 4)
        model.encoder.rnn = nn.LSTM(4, 6)
        model.head = nn.Linear(6, 2)
        model = model.to(torch.bfloat16)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        opt.step()  # momentum buffers: tensors under int keys
        torch.save({"state_dict": model.state_dict(), "epoch": 3, "optimizer": opt.state_dict()},
                   path("ckpt_bf16"))
        ref = nn.LSTM(4, 6)
        ref.load_state_dict({k: v.float() for k, v in model.encoder.rnn.state_dict().items()})
        x = x_for("ckpt_bf16", 4)
        record("ckpt_bf16", x, *_flat(ref(x)))

        # 4. the legacy (non-zip) format, float64
        torch.manual_seed(4)
        m = nn.LSTM(3, 5, num_layers=2).double().eval()
        torch.save(m.state_dict(), path("legacy_f64"), _use_new_zipfile_serialization=False)
        x = x_for("legacy_f64", 3, torch.float64)
        record("legacy_f64", x, *_flat(m(x)))

        # 5. two LSTMs in one model; the encoder in float16
        torch.manual_seed(5)
        model = nn.Module()
        model.encoder = nn.LSTM(3, 4).half()
        model.decoder = nn.LSTM(4, 5, batch_first=False)
        torch.save(model.state_dict(), path("encdec_decoder"))
        x = x_for("encdec_decoder", 4)
        record("encdec_decoder", x, *_flat(model.decoder(x)))

        # 6. safetensors with torch names, float16
        from safetensors.torch import save_file
        torch.manual_seed(6)
        m = nn.LSTM(3, 7, num_layers=2).half()
        save_file(m.state_dict(), path("safetensors"))
        ref = nn.LSTM(3, 7, num_layers=2)
        ref.load_state_dict({k: v.float() for k, v in m.state_dict().items()})
        x = x_for("safetensors", 3)
        record("safetensors", x, *_flat(ref(x)))

        # 7. a whole pickled module: the loader must refuse it and say to save state_dict()
        torch.manual_seed(7)
        torch.save(nn.LSTM(2, 3), os.path.join(out_dir, MODULE_FILE))

    np.savez_compressed(os.path.join(out_dir, "expected.npz"), **expected)
    print(f"wrote {len(FIXTURES) + 1} fixtures and expected.npz to {out_dir}")


def _flat(result):
    out, (h, c) = result
    return out, h, c


def hash_name(name: str) -> int:
    import zlib
    return zlib.crc32(name.encode())  # stable seed per fixture (hash() is salted)


if __name__ == "__main__":
    main()
