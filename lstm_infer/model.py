"""The LSTM model: canonical weights, validation, packing, forward.

Python validates, Cython computes: everything about shapes, dtypes, lengths
and state is checked here (the weights by the checker the loaders share,
`_validate.check_layer`), with messages that say what was expected and what
came, before `_kernels.forward` runs the whole stack without the GIL.

Canonical weights (what the constructor takes, what loaders produce): a list
with one entry per layer; each entry a list of one (forward) or two
(forward, reverse) dicts with

    w_ih  (4H, I_k)    gate order i, f, g, o
    w_hh  (4H, H_out)  H_out = P if projected else H
    b     (4H,)        b_ih + b_hh, optional (zeros)
    w_hr  (P, H)       optional: projection (torch proj_size)
    p_i, p_f, p_o (H,) optional: peephole weights (all three or none)

Packing (done once, here) turns these into the layouts the kernels want; see
the Design block at the top of _kernels.pyx.
"""
from __future__ import annotations

import operator
import threading
from typing import List, Optional, Sequence

import numpy as np

from . import _kernels, _packing, _threads
from . import quantize as quantize_mod
from ._build import CanonicalModel
from ._validate import (MAX_DIM, all_finite, as_weight, check_allocation, check_layer,
                        check_shape, to_array)
from .config import (DEFAULT_ACTIVATIONS, LAYER_OPTIONS, MERGE_MODES, LayerSpec, LSTMConfig,
                     check_clip, layer_spec, parse_activations)

_DTYPES = {"float32": np.float32, "float64": np.float64}
# forward() runs a call through a cached CallPlan (LSTM._planned_call) when its x and
# layer outputs take at most this many bytes (the plan keeps buffers of that size, plus
# its workspaces: a few MiB at most), and keeps at most PLANNED_CALL_SHAPES such plans
# per model and Python thread (a new shape beyond that clears them).
PLANNED_CALL_BYTES = 1 << 20
PLANNED_CALL_SHAPES = 4
_TIME_MAJOR, _BATCH_FIRST, _UNBATCHED = (_kernels.LAYOUTS[k] for k in
                                        ("time_major", "batch_first", "unbatched"))
_call_begin, _call_end = _kernels.call_begin, _kernels.call_end


class LSTM:
    """A multi-layer (optionally bidirectional, projected, peephole) LSTM.

    Parameters
    ----------
    layers : list of list of dict
        Canonical weights, see the module docstring. ``layers[k][d]`` is layer
        ``k``, direction ``d`` (0 forward, 1 reverse).
    batch_first : bool
        Inputs/outputs are ``(B, T, F)`` instead of ``(T, B, F)``.
    clip : float or None
        ONNX ``clip``: gate pre-activations are bounded to [-clip, clip].
    cell_clip : float or None
        TF1 ``cell_clip``: the cell state is bounded to [-cell_clip, cell_clip].
    proj_clip : float or None
        TFLite ``proj_clip``: a projected layer's h is bounded to [-proj_clip, proj_clip]
        (only with a projection, w_hr).
    input_forget : bool
        Coupled input-forget gate (CIFG): f = 1 - i.
    activations : 3 activations (gate f, cell g, output h) as in ONNX;
        default ("sigmoid", "tanh", "tanh").
    dtype : "float32" or "float64"; default: float64 if every weight is float64,
        else float32.
    layer_options : list of dict, optional
        Per-layer options (model-level clip / cell_clip / input_forget /
        activations are their defaults), as loaders need them:
        ``direction`` "forward" | "reverse" (reads each sequence backwards: ONNX
        direction="reverse", Keras go_backwards) | "bidirectional";
        ``merge`` "concat" | "sum" | "mul" | "ave" (Keras Bidirectional merge_mode);
        ``reverse_output`` (Keras go_backwards: outputs returned reversed in time);
        ``activations`` (3, or one triple per direction); ``clip``; ``cell_clip``;
        ``proj_clip``;
        ``input_forget``.
    """

    def __init__(self, layers: Sequence[Sequence[dict]], *, batch_first: bool = False,
                 clip: Optional[float] = None, cell_clip: Optional[float] = None,
                 proj_clip: Optional[float] = None, input_forget: bool = False, activations=None, dtype=None,
                 layer_options: Optional[Sequence[dict]] = None,
                 quantization: Optional[str] = None, quantize_input_weights: bool = False):
        if isinstance(layers, dict) or not isinstance(layers, (list, tuple)) or not layers:
            raise TypeError("layers must be a non-empty list (one entry per layer) of lists "
                            "of direction dicts")
        if dtype is None:
            all64 = all(to_array(a).dtype == np.float64
                        for l in layers if isinstance(l, (list, tuple))
                        for d in l if isinstance(d, dict)
                        for a in d.values() if a is not None)
            dtype = "float64" if all64 else "float32"
        dtype = np.dtype(dtype).name
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be float32 or float64; got {dtype}")
        npdt = _DTYPES[dtype]
        if quantization is not None:
            quantization = quantize_mod.check_mode(quantization)
            if npdt != np.float32:
                raise ValueError(f"quantized models compute in float32; got dtype={dtype}")
        defaults = {"clip": check_clip("clip", clip),
                    "cell_clip": check_clip("cell_clip", cell_clip),
                    "proj_clip": check_clip("proj_clip", proj_clip),
                    "input_forget": bool(input_forget),
                    "activations": DEFAULT_ACTIVATIONS if activations is None
                    else parse_activations(activations, "activations")}
        if len(layers) > _kernels.MAX_NUM_LAYERS:
            raise ValueError(f"at most {_kernels.MAX_NUM_LAYERS} layers are supported; got "
                             f"{len(layers)}")
        if layer_options is None:
            layer_options = [{}] * len(layers)
        if not isinstance(layer_options, (list, tuple)) or len(layer_options) != len(layers):
            raise ValueError(f"layer_options must be a list with one dict per layer "
                             f"({len(layers)}); got {layer_options!r:.80}")

        specs, packed = [], []
        in_size = None
        for k, dirs in enumerate(layers):
            if not isinstance(dirs, (list, tuple)) or len(dirs) not in (1, 2):
                raise ValueError(f"layer {k} must be a list of 1 or 2 direction dicts; got {dirs!r:.80}")
            stored = None
            for d, w in enumerate(dirs):  # before quantization reads them
                if isinstance(w, dict):
                    for req in ("w_ih", "w_hh"):
                        if w.get(req) is None:
                            raise ValueError(f"layer {k} {'reverse' if d else 'forward'}: "
                                             f"missing {req}")
            if quantization is not None:
                stored = [quantize_mod.stored_form(w, quantization, f"layer {k} direction {d}",
                                                   quantize_input_weights)
                          if isinstance(w, dict) else w for d, w in enumerate(dirs)]
                dirs = [quantize_mod.dequantize(w, quantization) if isinstance(w, dict) else w
                        for w in stored]
            dims, cw = check_layer(k, dirs, in_size, npdt)
            spec = layer_spec(k, LayerSpec(*dims[:3], len(dirs) == 2, dims.peephole,
                                           layer_norm=dims.layer_norm),
                              layer_options[k], defaults)
            specs.append(spec)
            packed.append([_packing.pack(w, spec.hidden_size, spec.proj_size, quantization,
                                         stored[d] if stored else None)
                           for d, w in enumerate(cw)])
            in_size = spec.out_features
        first = specs[0]
        self._quantize_input = bool(quantization and quantize_input_weights)
        self._config = LSTMConfig(
            input_size=first.input_size, hidden_size=first.hidden_size,
            num_layers=len(specs), bidirectional=first.bidirectional,
            proj_size=first.proj_size, peephole=first.peephole, batch_first=bool(batch_first),
            dtype=dtype, quantization=quantization, clip=first.clip, cell_clip=first.cell_clip,
            input_forget=first.input_forget, activations=first.activations[0],
            layers=tuple(specs))
        self._packed = packed
        self._dtype = npdt
        # per-layer (directions, H_out, H) so forward() does no config lookups
        self._dims = [(s.num_directions, s.output_size, s.hidden_size) for s in specs]
        item = np.dtype(npdt).itemsize  # bytes per (step, row) and per row of a call's buffers
        self._call_sizes = (
            item * sum(D * Hout + (Hout if s.merge != "concat" else 0)
                       for (D, Hout, _), s in zip(self._dims, specs)),
            item * 2 * sum(D * (Hout + H) for D, Hout, H in self._dims),
            item * specs[0].input_size)
        self._uniform = self._config.uniform
        # float32 runs only our own kernels; float64 calls BLAS (pinned to one thread)
        self._uses_blas = npdt == np.float64
        self._plans = threading.local()  # _planned_call's CallPlans, per thread
        self._batch_first = bool(batch_first)
        self._row_bytes = self._call_sizes[0] + self._call_sizes[2]  # x and outputs
        # per layer: (merge code, reverse-only, outputs in processing order, acts per direction)
        self._layer_params = [
            (MERGE_MODES.index(s.merge), int(s.reverse), int(s.reverse_output),
             [_act_params(trip, s) for trip in s.activations])
            for s in specs]

    # ------------------------------------------------------------------ constructors
    @classmethod
    def random(cls, input_size: int, hidden_size: int, num_layers: int = 1,
               bidirectional: bool = False, proj_size: int = 0, peephole: bool = False,
               batch_first: bool = False, dtype="float32", seed: int = 0, **kwargs) -> "LSTM":
        """A model with weights ~ U(-1/sqrt(H), 1/sqrt(H)) (torch's init), for demos and tests.

        Extra keyword arguments (clip, cell_clip, input_forget, activations) go to the
        constructor.
        """
        for n, v in (("input_size", input_size), ("hidden_size", hidden_size),
                     ("num_layers", num_layers)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{n} must be a positive integer; got {v!r}")
        if isinstance(proj_size, bool) or not isinstance(proj_size, (int, np.integer)) \
                or not 0 <= proj_size < hidden_size:
            raise ValueError(f"proj_size must be an integer with 0 <= proj_size < hidden_size "
                             f"= {hidden_size}; got {proj_size!r}")
        rng = np.random.default_rng(seed)
        k = 1.0 / np.sqrt(hidden_size)
        H, P = hidden_size, proj_size
        Hout = P or H
        D = 2 if bidirectional else 1
        layers = []
        for layer in range(num_layers):
            I = input_size if layer == 0 else D * Hout
            dirs = []
            for _ in range(D):
                w = {
                    "w_ih": rng.uniform(-k, k, (4 * H, I)),
                    "w_hh": rng.uniform(-k, k, (4 * H, Hout)),
                    "b": rng.uniform(-k, k, 4 * H) + rng.uniform(-k, k, 4 * H),
                }
                if P:
                    w["w_hr"] = rng.uniform(-k, k, (P, H))
                if peephole:
                    for n in ("p_i", "p_f", "p_o"):
                        w[n] = rng.uniform(-k, k, H)
                dirs.append({n: a.astype(dtype) for n, a in w.items()})
            layers.append(dirs)
        return cls(layers, batch_first=batch_first, dtype=dtype, **kwargs)

    # ------------------------------------------------------------------ properties
    @property
    def config(self) -> LSTMConfig:
        return self._config

    @property
    def weights(self) -> List[List[dict]]:
        """Canonical weights (read-only arrays), as taken by the constructor."""
        return [[_packing.canonical(p) for p in layer] for layer in self._packed]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self._dtype)

    def __repr__(self) -> str:
        c = self._config
        sizes = " -> ".join(
            f"{l.hidden_size}{'/' + str(l.proj_size) if l.proj_size else ''}{'x2' if l.bidirectional else ''}"
            for l in c.layers)
        flags = [f for f, on in (("peephole", c.peephole), ("batch_first", c.batch_first),
                                 ("cifg", c.input_forget)) if on]
        if c.clip is not None:
            flags.append(f"clip={c.clip}")
        if c.cell_clip is not None:
            flags.append(f"cell_clip={c.cell_clip}")
        if c.layers[0].proj_clip is not None:
            flags.append(f"proj_clip={c.layers[0].proj_clip}")
        if c.quantization:
            flags.insert(0, f"quantized {c.quantization}")
        return (f"LSTM(input={c.input_size}, layers: {sizes}, {c.dtype}"
                f"{', ' + ', '.join(flags) if flags else ''})")

    # ------------------------------------------------------------------ forward
    def forward(self, x, state=None, lengths=None, *, num_threads=None):
        """Run the LSTM over a batch of sequences.

        Parameters
        ----------
        x : array_like, (T, B, I) — (B, T, I) if batch_first — or (T, I) unbatched
        state : (h0, c0), optional
            Uniform stack: h0 (D*L, B, H_out), c0 (D*L, B, H) (no batch axis when
            unbatched). Stacks whose layers differ: lists with one (D, B, H_k) array
            per layer. Default zeros.
        lengths : array_like of int (B,), optional
            Valid length of each sequence, 0 <= len <= T. Outputs past a length are 0;
            the final state is taken at each sequence's last valid step; reverse
            directions run over each sequence's own span.
        num_threads : int, optional
            Threads for this call (default: ``li.set_num_threads`` / all cores).

        Returns
        -------
        out : (T, B, D*H_out) (or (B, T, ...) if batch_first, (T, ...) if unbatched)
        (h_n, c_n) : final states, same form as ``state``.
        """
        if state is None and lengths is None and type(x) is np.ndarray and not self._uses_blas:
            res = self._planned_call(x, num_threads)
            if res is not None:
                return res
        cfg = self._config
        specs = cfg.layers
        if num_threads is not None:  # checked before anything is allocated
            num_threads = _threads.check_num_threads(num_threads)
        if isinstance(x, np.ma.MaskedArray):
            raise TypeError("x is a numpy masked array, and its mask would be ignored: pass "
                            "x.filled(0) and give the valid span of each sequence as lengths= "
                            "(lstm_infer.formats.keras.lengths_from_mask builds them)")
        x = np.asarray(x)
        if x.dtype.kind not in "fiub":
            raise TypeError(f"x must be a real numeric array; got dtype {x.dtype}")
        if x.ndim not in (2, 3):
            raise ValueError(f"x must be 3-D ({'B, T' if cfg.batch_first else 'T, B'}, I) or "
                             f"2-D unbatched (T, I); got shape {x.shape}")
        unbatched = x.ndim == 2
        given_shape = x.shape
        if unbatched:
            x = x[:, None, :] if not cfg.batch_first else x[None, :, :]
        x_tb = x.transpose(1, 0, 2) if cfg.batch_first else x  # (T, B, I) view
        T, B, I = x_tb.shape
        if I != cfg.input_size:
            raise ValueError(f"x must have {cfg.input_size} features (input_size) in its last "
                             f"axis; got shape {given_shape}")
        if T > MAX_DIM or B > MAX_DIM:
            raise ValueError(f"x has shape {given_shape}: at most {MAX_DIM} time steps and "
                             f"sequences per call are supported (32-bit indices)")
        lens = self._check_lengths(lengths, B, T, unbatched)
        h0s, c0s = self._check_state(state, B, unbatched, T)
        copy = x_tb.dtype != self._dtype or not _kernel_friendly(x_tb)
        with check_allocation(self._call_bytes(T, B, copy),
                              lambda: f"a call on x of shape {given_shape}"):
            return self._run(x, x_tb, copy, lens, h0s, c0s, T, B, unbatched, num_threads)

    def _run(self, x, x_tb, copy, lens, h0s, c0s, T, B, unbatched, num_threads):
        """forward() after validation: allocate, run the kernels, shape the results."""
        cfg = self._config
        specs = cfg.layers
        if copy:
            x_tb = np.ascontiguousarray(x_tb, dtype=self._dtype)
        # every position is checked, also those past a sequence's length (never read):
        # a NaN in padding is as likely a bug upstream as in the data
        if x.dtype.kind == "f" and x_tb.size and not all_finite(x_tb):
            raise ValueError("x contains NaN or infinity")

        # outputs: the user's `out` is written in place through a strided (T, B, F) view
        F = cfg.output_size
        alloc = np.zeros if (lens is not None and T and B and int(lens.min()) < T) else np.empty
        if cfg.batch_first:
            out_user = alloc((B, T, F), dtype=self._dtype)
            out_tb = out_user.transpose(1, 0, 2)
        else:
            out_user = alloc((T, B, F), dtype=self._dtype)
            out_tb = out_user
        bufs = self._layer_buffers(x_tb, out_tb, alloc)
        hns, cns = self._state_buffers(B)

        if lens is None:
            lens_sorted = np.full(B, T, dtype=np.intc)
            perm = np.arange(B, dtype=np.intc)
        else:
            perm = np.argsort(-lens, kind="stable").astype(np.intc)
            lens_sorted = np.ascontiguousarray(lens[perm], dtype=np.intc)

        nthreads = _threads.enter_call(num_threads, self._uses_blas)
        try:
            if T and B:
                _kernels.forward(self._packed, bufs, h0s, c0s, hns, cns, lens_sorted, perm,
                                 self._layer_params, nthreads)
            else:
                for k in range(len(specs)):
                    hns[k][...] = h0s[k]
                    cns[k][...] = c0s[k]
        finally:
            _threads.exit_call(self._uses_blas)

        out = out_user[:, 0] if (unbatched and not cfg.batch_first) else (
            out_user[0] if unbatched else out_user)
        return out, self._state_form(hns, cns, unbatched)

    __call__ = forward  # (not a wrapper: a T=1 call's overhead is counted in microseconds)

    def _planned_call(self, x, num_threads):
        """forward() of a small call (at most PLANNED_CALL_BYTES of x and outputs; full
        length, zero initial state) through a _kernels.CallPlan cached per thread and
        call shape: x is checked by a few C comparisons and the workspaces are reused,
        so a T=1 call costs little beyond its arithmetic (issue 9: <= 5 us). The same
        kernels and schedule as the general path, so the same bits. None when x does not
        qualify (the general path then runs, and raises whatever error x deserves)."""
        shape = x.shape
        if len(shape) == 3:
            if self._batch_first:  # (B, T, I) has (T, B, I)'s memory order if T or B is 1
                B, T = shape[0], shape[1]
                if T != 1 and B != 1:
                    return None
                layout = _BATCH_FIRST
            else:
                T, B = shape[0], shape[1]
                layout = _TIME_MAJOR
        elif len(shape) == 2:
            T, B, layout = shape[0], 1, _UNBATCHED
        else:
            return None
        if not T or not B or T * B * self._row_bytes > PLANNED_CALL_BYTES:
            return None
        nthreads = _call_begin(  # _threads.enter_call without BLAS: no lock
            0 if num_threads is None else _threads.check_num_threads(num_threads))
        try:
            plans = self._plans.__dict__
            key = (T, B, layout, nthreads)
            plan = plans.get(key)
            if plan is None:
                if len(plans) >= PLANNED_CALL_SHAPES:
                    plans.clear()
                plan = plans[key] = self._fixed_start_plan(T, B, layout, nthreads)
            res = plan.try_call(x)  # (out, hs, cs): the final state in fresh arrays
        finally:
            _call_end()
        if res is None:
            return None
        return res[0], self._state_form(res[1], res[2], layout == _UNBATCHED)

    def _fixed_start_plan(self, T, B, layout, nthreads):
        """A CallPlan whose every call starts from the zero state (states[0], never
        written): _planned_call's."""
        zeros = ([np.zeros((D, B, Hout), dtype=self._dtype) for D, Hout, _ in self._dims],
                 [np.zeros((D, B, H), dtype=self._dtype) for D, _, H in self._dims])
        plan = self._new_plan(T, B, zeros, nthreads)
        plan.layout = layout
        plan.carry = False
        return plan

    def _layer_buffers(self, x_tb, out_tb, alloc=np.empty) -> list:
        """Per layer (input, output, merged output or None), all (T, B, F) views: a merged
        bidirectional layer (Keras merge_mode) writes both directions to a scratch buffer,
        then merges; the last layer writes into `out_tb`."""
        T, B = x_tb.shape[:2]
        bufs, inp = [], x_tb
        for k, ((D, Hout, _), spec) in enumerate(zip(self._dims, self._config.layers)):
            last = k == len(self._dims) - 1
            if spec.merge == "concat":
                o = out_tb if last else alloc((T, B, D * Hout), dtype=self._dtype)
                bufs.append((inp, o, None))
            else:
                o = alloc((T, B, D * Hout), dtype=self._dtype)
                m = out_tb if last else np.empty((T, B, Hout), dtype=self._dtype)
                bufs.append((inp, o, m))
                o = m
            inp = o
        return bufs

    def _state_buffers(self, B):
        """Uninitialised per-layer h (D, B, H_out) and c (D, B, H) arrays."""
        return ([np.empty((D, B, Hout), dtype=self._dtype) for D, Hout, _ in self._dims],
                [np.empty((D, B, H), dtype=self._dtype) for D, _, H in self._dims])

    def _state_form(self, hns, cns, unbatched):
        """Per-layer (D, B, F) states -> the public form: stacked (D*L, B, F) arrays for a
        uniform stack, else lists; without the batch axis when unbatched."""
        if self._uniform:
            h_n = hns[0] if len(hns) == 1 else np.concatenate(hns, axis=0)
            c_n = cns[0] if len(cns) == 1 else np.concatenate(cns, axis=0)
            if unbatched:
                h_n, c_n = h_n[:, 0], c_n[:, 0]
        else:
            h_n = [h[:, 0] for h in hns] if unbatched else hns
            c_n = [c[:, 0] for c in cns] if unbatched else cns
        return h_n, c_n

    def _call_plan(self, T, B, state, unbatched, num_threads):
        """A _kernels.CallPlan for calls of T steps on B full-length sequences, starting
        from `state` (the public form, validated here): Stream.step's fast path. float32
        kernels only (every quantization mode); None for float64 (BLAS)."""
        if self._uses_blas:
            return None
        nthreads = _threads.get_num_threads() if num_threads is None else \
            _threads.check_num_threads(num_threads)
        h0s, c0s = self._check_state(state, B, unbatched)
        first = ([np.array(a, copy=True) for a in h0s], [np.array(a, copy=True) for a in c0s])
        return self._new_plan(T, B, first, nthreads)

    def _new_plan(self, T, B, first, nthreads):
        """A CallPlan of this model for (T, B) calls whose first starts from `first`."""
        x = np.empty((T, B, self._config.input_size), dtype=self._dtype)
        out = np.empty((T, B, self._config.output_size), dtype=self._dtype)
        return _kernels.CallPlan(self._packed, self._layer_buffers(x, out), self._layer_params,
                                 nthreads, [first, self._state_buffers(B)])

    def plan(self, x, *, num_threads=None) -> dict:
        """The schedule a call on `x` would run, without running it: batch ``slices``,
        ``block_steps`` (time steps per input-projection block) and per layer its
        ``schedule`` ("serial", "tasks": direction x slice on threads, "split": one
        sequence's gate groups across threads), ``tasks`` and ``threads``. With other
        calls in flight and no ``num_threads``, a real call may get fewer threads."""
        x = np.asarray(x)
        if x.ndim not in (2, 3):
            raise ValueError(f"x must be 3-D or 2-D unbatched; got shape {x.shape}")
        T, B = (x.shape[0], 1) if x.ndim == 2 else (
            (x.shape[1], x.shape[0]) if self._config.batch_first else x.shape[:2])
        n = _threads.get_num_threads() if num_threads is None else \
            _threads.check_num_threads(num_threads)
        return _kernels.plan(self._packed, T, B, n, np.dtype(self._dtype).itemsize)

    def _call_bytes(self, T: int, B: int, copy_x: bool) -> int:
        """Bytes a call allocates beyond the workspace: x's copy, the layer outputs
        (and merge scratch), the states (per-row sizes computed once, _call_sizes)."""
        per_step, per_row, in_row = self._call_sizes
        return T * B * (per_step + (in_row if copy_x else 0)) + B * per_row

    def _check_lengths(self, lengths, B, T, unbatched):
        if lengths is None:
            return None
        lens = np.asarray(lengths)
        if unbatched and lens.ndim == 0:
            lens = lens.reshape(1)
        if lens.dtype == object:  # e.g. a list mixing Python ints and numpy integers
            try:
                lens = np.array([operator.index(v) for v in lens.ravel()],
                                dtype=np.int64).reshape(lens.shape)
            except TypeError:
                raise TypeError(f"lengths must be integers; got {lengths!r:.80}") from None
        if lens.dtype.kind not in "iu" and not (
                lens.dtype.kind == "f" and np.all(np.mod(lens, 1) == 0)):
            raise TypeError(f"lengths must be integers; got dtype {lens.dtype}")
        if lens.shape != (B,):
            swapped = not unbatched and lens.shape == (T,) and T != B
            raise ValueError(f"lengths must have shape (B,) = ({B},); got {lens.shape}"
                             + (self._swapped_axes_hint(T, B) if swapped else ""))
        if B and (lens.min() < 0 or lens.max() > T):
            raise ValueError(f"lengths must satisfy 0 <= len <= T = {T}; got min {lens.min()}, "
                             f"max {lens.max()}")
        return lens.astype(np.intc)

    def _swapped_axes_hint(self, T, B) -> str:
        """The end of a message about a (B,)-sized argument that has x's other size."""
        if self._config.batch_first:
            return (f"; this model is batch_first, so x was read as B={B} sequences of "
                    f"T={T} steps. If x is (T, B, I), load the model with "
                    f"batch_first=False or pass x.transpose(1, 0, 2)")
        return (f"; this model is time-major (batch_first=False), so x was read as T={T} "
                f"steps of B={B} sequences. If x is (B, T, I), load the model with "
                f"batch_first=True (li.load(path, batch_first=True), lstm-infer run "
                f"--batch-first) or pass x.transpose(1, 0, 2)")

    def _check_state_shape(self, a, want, name, formula, T):
        """check_shape, whose message says when the batch axis has x's other size."""
        try:
            check_shape(a, want, name, formula)
        except ValueError as e:
            B = want[1]
            if T is not None and T != B and a.ndim == 3 and \
                    (a.shape[0], a.shape[2]) == (want[0], want[2]) and a.shape[1] == T:
                raise ValueError(f"{e}{self._swapped_axes_hint(T, B)}") from None
            raise

    def _check_state(self, state, B, unbatched, T=None):
        specs = self._config.layers
        if state is None:
            h0s = [np.zeros((D, B, Hout), dtype=self._dtype) for D, Hout, _ in self._dims]
            c0s = [np.zeros((D, B, H), dtype=self._dtype) for D, _, H in self._dims]
            return h0s, c0s
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise TypeError("state must be a pair (h0, c0)")
        h0, c0 = state
        out = []
        for arr, name, size in ((h0, "h0", lambda s: s.output_size), (c0, "c0", lambda s: s.hidden_size)):
            if self._uniform and not isinstance(arr, (list, tuple)):
                a = as_weight(arr, name, self._dtype)
                D, L = specs[0].num_directions, len(specs)
                want = (D * L, B, size(specs[0]))
                if unbatched:
                    want = (D * L, size(specs[0]))
                    check_shape(a, want, f"{name} (D*num_layers, H)")
                    a = a[:, None, :]
                else:
                    self._check_state_shape(a, want, name, "(D*num_layers, B, H)", T)
                parts = [a[k * D:(k + 1) * D] for k in range(L)]
            else:
                if not isinstance(arr, (list, tuple)) or len(arr) != len(specs):
                    raise ValueError(f"{name} must be a list with one (D, B, H_k) array per layer "
                                     f"({len(specs)} layers) for this stack; got {type(arr).__name__}")
                parts = []
                for k, (a, s) in enumerate(zip(arr, specs)):
                    a = as_weight(a, f"{name}[{k}]", self._dtype)
                    if unbatched:
                        check_shape(a, (s.num_directions, size(s)), f"{name}[{k}] (D, H_k)")
                        a = a[:, None, :]
                    else:
                        self._check_state_shape(a, (s.num_directions, B, size(s)),
                                                f"{name}[{k}]", "(D, B, H_k)", T)
                    parts.append(a)
            out.append([np.ascontiguousarray(p) for p in parts])
        return out[0], out[1]

    def save(self, path) -> None:
        """Save in the native format (safetensors + config); ``li.load`` reads it back
        bit-exactly."""
        from .formats import native  # formats never imports this module: no cycle

        native.save(self.canonical(), path)

    # Export to other frameworks' files, without those frameworks (README: "Converting
    # between frameworks"). Each refuses, listing them, the features its target cannot
    # express (lstm_infer.formats._export.ExportError, a ValueError), and a quantized
    # model unless dequantize=True (then the float32 weights it computes with).
    def to_onnx(self, path, *, sequence_lens: bool = False, initial_state: bool = False,
                layout: int = 0, opset: int = 17, dequantize: bool = False) -> None:
        """Write an ONNX graph of this model that onnxruntime runs (needs the ``onnx``
        package): input ``X`` as this model takes it, optional ``sequence_lens`` /
        ``initial_h`` / ``initial_c`` inputs, outputs ``Y``, ``Y_h``, ``Y_c`` = ``out``,
        ``h_n``, ``c_n``. See lstm_infer.formats.onnx.to_onnx."""
        from .formats.onnx import to_onnx

        to_onnx(self, path, sequence_lens=sequence_lens, initial_state=initial_state,
                layout=layout, opset=opset, dequantize=dequantize)

    def to_torch(self, path, *, dequantize: bool = False) -> None:
        """Write this model's ``torch.nn.LSTM`` state dict: a ``torch.save`` zip that
        ``torch.load(path, weights_only=True)`` reads, or torch-named safetensors when
        `path` ends in ``.safetensors``. ``batch_first`` is not recorded (torch state
        dicts do not hold it). See lstm_infer.formats.torch_writer."""
        from .formats.torch_writer import write_torch

        write_torch(self, path, dequantize=dequantize)

    def to_keras(self, path, *, dequantize: bool = False) -> None:
        """Write a Keras 3 ``.keras`` file (needs h5py) that ``keras.saving.load_model``
        opens: Input -> LSTM / Bidirectional layers, output ``out``, batch-first.
        See lstm_infer.formats.keras_writer."""
        from .formats.keras_writer import write_keras

        write_keras(self, path, dequantize=dequantize)

    def canonical(self) -> CanonicalModel:
        """The model as data: ``CanonicalModel(self.weights, self.options)``, which
        ``lstm_infer._build.build`` (and ``LSTM(data.layers, **data.options)``) turns back
        into the same model."""
        return CanonicalModel(self.weights, self.options)

    def stream(self, batch_size=1, state=None, *, num_threads=None):
        """A stateful stream: ``s.step(chunk) -> out_chunk`` carries (h, c) across chunks.

        ``batch_size=None`` streams one unbatched sequence (2-D chunks). See
        :class:`lstm_infer.serving.Stream`."""
        from .serving import Stream

        return Stream(self, batch_size=batch_size, state=state, num_threads=num_threads)

    # ------------------------------------------------------------------ pickling
    def __reduce__(self):
        return (_rebuild, (self.weights, self.options))

    @property
    def options(self) -> dict:
        """Every constructor argument but the weights, JSON-serialisable:
        ``LSTM(m.weights, **m.options)`` rebuilds the same model."""
        c = self._config
        layers = []
        for l in c.layers:
            d = l.to_dict()
            layers.append({k: d[k] for k in sorted(LAYER_OPTIONS)})
        return {"batch_first": c.batch_first, "dtype": c.dtype, "layer_options": layers,
                "quantization": c.quantization, "quantize_input_weights": self._quantize_input}

    def quantize(self, mode: str, input_weights: bool = False) -> "LSTM":
        """A new model in a quantized mode (the original model is unchanged):

        ``"int8"``: int8 compute -- W_ih and W_hh int8 per output row, x and h
        quantized to u8 per row at every step, int32 accumulation, gates in float32
        (``input_weights`` does not apply: both matrices are always quantized).

        ``"bf16"``: bfloat16 compute -- W_ih and W_hh bf16, x and h rounded to bf16
        before each GEMM, float32 accumulation, gates and state (AMX's numerics).

        ``"int8-weights"``, ``"float16-weights"``, ``"bfloat16-weights"`` (old names
        ``"float16"``, ``"bfloat16"`` still accepted): weight storage -- weights
        kept in that precision and widened in registers, maths in float32. By default
        only the recurrent W_hh (streamed every step) is stored so;
        ``input_weights=True`` also stores W_ih, for memory (more error, no speed at
        batch 1). See lstm_infer.quantize for the schemes and measured errors."""
        weights = self.weights
        if self._config.quantization is not None:
            weights = [[quantize_mod.dequantize(w, self._config.quantization) for w in layer]
                       for layer in weights]
        opts = dict(self.options, quantization=mode, dtype="float32",
                    quantize_input_weights=input_weights)
        return LSTM(weights, **opts)


def _rebuild(weights, kwargs):
    return LSTM(weights, **kwargs)


def _act_params(trip, spec) -> dict:
    """The kernel's li_acts for one direction, by field name (_kernels._set_acts)."""
    return {"gate": trip[0], "cell": trip[1], "output": trip[2],
            "clip": spec.clip if spec.clip is not None else np.inf,
            "cell_clip": spec.cell_clip if spec.cell_clip is not None else np.inf,
            "proj_clip": spec.proj_clip if spec.proj_clip is not None else np.inf,
            "input_forget": int(spec.input_forget)}




def _kernel_friendly(a: np.ndarray) -> bool:
    """Rows contiguous and non-negative strides: the kernel reads x[t, b, :] at t*st + b*sb."""
    s = a.strides
    it = a.itemsize
    return (a.shape[2] <= 1 or s[2] == it) and s[0] >= 0 and s[1] >= 0 and \
        s[0] % it == 0 and s[1] % it == 0 and a.flags.aligned
