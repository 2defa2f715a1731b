"""A float64 numpy LSTM oracle, written for clarity rather than speed.

Independent of the library (it does not import lstm_infer): it reads the
canonical weights format of DESIGN §1 directly and follows the maths of
DESIGN §2 line by line, in the spirit of onnx's ``LSTMHelper``.

Canonical weights: a list with one entry per layer; each entry a list of one
(forward) or two (forward, reverse) dicts with

    w_ih (4H, I)   w_hh (4H, H_out)   b (4H,) optional
    w_hr (P, H) optional (projection)   p_i, p_f, p_o (H,) optional (peephole)
    ln_i, ln_f, ln_g, ln_o (H,) optional (layer normalisation, TFLite's variant)

gate order i, f, g, o.

Per layer and direction (``act_f``, ``act_g``, ``act_h`` = the 3 activations,
``clip`` bounds every gate pre-activation, ``cell_clip`` bounds c):

    z   = W_ih x_t + W_hh h + b
    i   = act_f(clip(z_i + p_i * c))
    f   = act_f(clip(z_f + p_f * c))        or 1 - i with input_forget
    g   = act_g(clip(z_g))
    c'  = cell_clip(f * c + i * g)
    o   = act_f(clip(z_o + p_o * c'))
    h'  = o * act_h(c')                     then h' = W_hr h' with a projection

Layer normalisation (with ``ln_*``; TFLite's layer-norm LSTM): each gate's
accumulation without its bias, a_k = (W_ih x_t + W_hh h)_k (+ p_k * c for i and
f, + p_o * c' for o), is normalised over the H units before the bias is added:

    a_k = ln_k * (a_k - mean(a_k)) / sqrt(var(a_k) + 1e-8) + b_k

(population variance), then clip and the activation as above.

Lengths: a sequence of length L only runs steps 0..L-1 (the reverse direction
runs L-1..0 over its own span); its outputs past L are 0 and its final state
is the state after its last valid step (the initial state when L = 0).

Per-layer options (``layer_options``, one dict per layer, the model-level
keywords as defaults), as the Keras and ONNX models need them:

    direction       "forward" | "reverse" (one direction dict: reads each
                    sequence backwards) | "bidirectional" (two dicts)
    reverse_output  a "reverse" layer's output at step s is the h of its s-th
                    processing step, x[L-1-s] (Keras go_backwards), instead of
                    being put back at time L-1-s; zeros past L either way
    merge           a bidirectional layer's output: "concat" [fwd, rev],
                    "sum" fwd + rev, "mul" fwd * rev, "ave" (fwd + rev) / 2
                    (Keras Bidirectional merge_mode); h_n / c_n stay per direction
    activations     one triple, or one triple per direction (a list of D)
    clip, cell_clip, input_forget
"""
from __future__ import annotations

import numpy as np

DEFAULT_ACTIVATIONS = ("sigmoid", "tanh", "tanh")


# ----------------------------------------------------------------------------- activations
def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def activation(spec):
    """A float64 function for an activation spec.

    ``spec`` is a name, a ``(name, alpha, beta)`` tuple, or any object with
    ``name``, ``alpha``, ``beta`` attributes. ``hard_sigmoid`` is
    ``clip(alpha * x + beta, 0, 1)`` with ONNX's defaults alpha=0.2, beta=0.5
    when only the name is given; the other functions take no parameters.
    """
    if isinstance(spec, str):
        name, params = spec, ()
    elif isinstance(spec, (tuple, list)):
        name, params = spec[0], tuple(spec[1:])
    else:
        name, params = spec.name, (spec.alpha, spec.beta)
    name = name.lower()
    if name == "sigmoid":
        return _sigmoid
    if name == "tanh":
        return np.tanh
    if name == "relu":
        return lambda v: np.maximum(v, 0.0)
    if name == "linear":
        return lambda v: v
    if name == "hard_sigmoid":
        alpha = float(params[0]) if len(params) > 0 else 0.2
        beta = float(params[1]) if len(params) > 1 else 0.5
        return lambda v: np.clip(alpha * v + beta, 0.0, 1.0)
    raise ValueError(f"reference: unknown activation {name!r}")


# ----------------------------------------------------------------------------- one direction
def _run_direction(w, x, h0, c0, lengths, reverse, acts, clip, cell_clip, input_forget,
                   processing_order=False, proj_clip=None):
    """One layer direction over time-major x (T, B, I).

    ``processing_order``: out[s] is the h of step s (for reverse: of x[L-1-s]) instead of
    the h belonging to time s.

    Returns out (T, B, H_out), h_n (B, H_out), c_n (B, H).
    """
    T, B, _ = x.shape
    f64 = lambda a: np.asarray(a, dtype=np.float64)
    w_ih, w_hh = f64(w["w_ih"]), f64(w["w_hh"])
    H = w_ih.shape[0] // 4
    b = f64(w["b"]) if w.get("b") is not None else np.zeros(4 * H)
    w_hr = f64(w["w_hr"]) if w.get("w_hr") is not None else None
    peephole = w.get("p_i") is not None
    p_i, p_f, p_o = ((f64(w["p_i"]), f64(w["p_f"]), f64(w["p_o"])) if peephole
                     else (np.zeros(H), np.zeros(H), np.zeros(H)))
    layer_norm = w.get("ln_i") is not None
    act_f, act_g, act_h = acts

    def pre(v, gate):  # a gate's pre-activation from its accumulation (no bias yet)
        if layer_norm:
            mean = v.mean(axis=1, keepdims=True)
            var = ((v - mean) ** 2).mean(axis=1, keepdims=True)
            v = f64(w["ln_" + gate]) * (v - mean) / np.sqrt(var + 1e-8)
        v = v + b[np.s_["ifgo".index(gate) * H:("ifgo".index(gate) + 1) * H]]
        return v if clip is None else np.clip(v, -clip, clip)  # ONNX clip

    def cbound(v):  # TF1 cell_clip: the cell state
        return v if cell_clip is None else np.clip(v, -cell_clip, cell_clip)

    # Reverse: row b reads x[L_b - 1 - s] at step s, i.e. its own span reversed.
    steps = np.arange(T)
    src = np.empty((T, B), dtype=np.intp)  # time index read / written by (step, row)
    for r in range(B):
        src[:, r] = (lengths[r] - 1 - steps) if reverse else steps
    src = np.clip(src, 0, max(T - 1, 0))

    h, c = f64(h0).copy(), f64(c0).copy()
    out = np.zeros((T, B, h.shape[1]))
    rows = np.arange(B)
    for s in range(T):
        active = s < lengths  # (B,)
        if not active.any():
            break
        x_s = x[src[s], rows]  # (B, I)
        z = x_s @ w_ih.T + h @ w_hh.T
        z_i, z_f, z_g, z_o = np.split(z, 4, axis=1)
        i = act_f(pre(z_i + p_i * c, "i"))
        f = 1.0 - i if input_forget else act_f(pre(z_f + p_f * c, "f"))
        g = act_g(pre(z_g, "g"))
        c_new = cbound(f * c + i * g)
        o = act_f(pre(z_o + p_o * c_new, "o"))
        h_new = o * act_h(c_new)
        if w_hr is not None:
            h_new = h_new @ w_hr.T
            if proj_clip is not None:  # TFLite's proj_clip
                h_new = np.clip(h_new, -proj_clip, proj_clip)
        m = active[:, None]
        h = np.where(m, h_new, h)
        c = np.where(m, c_new, c)
        t_out = np.full(B, s) if processing_order else src[s]
        out[t_out[active], rows[active]] = h_new[active]
    return out, h, c


# ----------------------------------------------------------------------------- the stack
def layer_sizes(layer):
    """(H, H_out, D) of one canonical layer."""
    w = layer[0]
    H = np.shape(w["w_ih"])[0] // 4
    H_out = np.shape(w["w_hr"])[0] if w.get("w_hr") is not None else H
    return H, H_out, len(layer)


MERGES = {"concat": lambda a, b: np.concatenate([a, b], axis=2), "sum": lambda a, b: a + b,
          "mul": lambda a, b: a * b, "ave": lambda a, b: (a + b) / 2}


def _direction_activations(spec, D):
    """One triple, or a list of one triple per direction -> D triples of functions."""
    spec = DEFAULT_ACTIVATIONS if spec is None else spec
    trips = [spec] * D if len(spec) == 3 else list(spec)  # D <= 2: a length-3 list is a triple
    if len(trips) != D or any(len(t) != 3 for t in trips):
        raise ValueError(f"reference: activations must be a triple or {D} triples; got {spec!r}")
    return [tuple(activation(a) for a in t) for t in trips]


def lstm_reference(weights, x, state=None, lengths=None, *, clip=None, cell_clip=None,
                   input_forget=False, activations=None, layer_options=None, proj_clip=None):
    """Run a canonical-weights LSTM stack in float64.

    Parameters
    ----------
    weights : canonical weights (list of layers of direction dicts)
    x : (T, B, I), time-major
    state : None or (h0, c0), each a list with one array per layer,
        h0[k] (D, B, H_out_k), c0[k] (D, B, H_k)
    lengths : None or (B,) ints
    clip, cell_clip, proj_clip, input_forget, activations : as the LSTM constructor (defaults of
        every layer)
    layer_options : None or one dict per layer (module docstring)

    Returns
    -------
    out : (T, B, F) of the last layer (F = D * H_out, or H_out when merged)
    h_n, c_n : lists with one (D, B, H_out_k) / (D, B, H_k) array per layer
    """
    x = np.asarray(x, dtype=np.float64)
    T, B, _ = x.shape
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths).astype(np.intp)
    layer_options = [{}] * len(weights) if layer_options is None else layer_options
    defaults = dict(clip=clip, cell_clip=cell_clip, input_forget=input_forget,
                    activations=activations, proj_clip=proj_clip)
    inp = x
    h_n, c_n = [], []
    for k, (layer, opts) in enumerate(zip(weights, layer_options)):
        unknown = set(opts) - {"direction", "reverse_output", "merge", *defaults}
        if unknown:
            raise ValueError(f"reference: unknown layer option(s) {sorted(unknown)}")
        o = {**defaults, **opts}
        H, H_out, D = layer_sizes(layer)
        direction = o.get("direction", "bidirectional" if D == 2 else "forward")
        if (direction == "bidirectional") != (D == 2):
            raise ValueError(f"reference: layer {k}: direction {direction!r} with {D} dicts")
        if o.get("reverse_output") and direction != "reverse":
            raise ValueError("reference: reverse_output is for a reverse layer")
        if o.get("merge", "concat") != "concat" and D != 2:
            raise ValueError("reference: merge is for a bidirectional layer")
        acts = _direction_activations(o["activations"], D)
        outs, hs, cs = [], [], []
        for d, w in enumerate(layer):
            if state is None:
                h0, c0 = np.zeros((B, H_out)), np.zeros((B, H))
            else:
                h0, c0 = state[0][k][d], state[1][k][d]
            reverse = d == 1 or direction == "reverse"
            out, h, c = _run_direction(w, inp, h0, c0, lengths, reverse, acts[d], o["clip"],
                                       o["cell_clip"], o["input_forget"],
                                       processing_order=bool(o.get("reverse_output")),
                                       proj_clip=o["proj_clip"])
            outs.append(out)
            hs.append(h)
            cs.append(c)
        inp = MERGES[o.get("merge", "concat")](*outs) if D == 2 else outs[0]
        h_n.append(np.stack(hs))
        c_n.append(np.stack(cs))
    return inp, h_n, c_n


# ----------------------------------------------------------------------------- helpers
def split_state(stacked, weights):
    """torch-style (D*L, B, F) -> list of (D, B, F) per layer (uniform stacks)."""
    D = len(weights[0])
    return [np.asarray(stacked)[k * D:(k + 1) * D] for k in range(len(weights))]


def stack_state(per_layer):
    """list of (D, B, F) per layer -> torch-style (D*L, B, F)."""
    return np.concatenate(per_layer, axis=0)


def random_weights(input_size, hidden_size, num_layers=1, *, bidirectional=False, proj_size=0,
                   peephole=False, bias=True, rng=None, scale=None, layer_norm=False):
    """Random canonical float64 weights ~ U(-1/sqrt(H), 1/sqrt(H)) (torch's init).

    ``hidden_size`` and ``proj_size`` may be lists (one value per layer) for
    stacks whose layers differ in size.
    """
    rng = np.random.default_rng(rng)
    hs = list(hidden_size) if isinstance(hidden_size, (list, tuple)) else [hidden_size] * num_layers
    ps = list(proj_size) if isinstance(proj_size, (list, tuple)) else [proj_size] * len(hs)
    D = 2 if bidirectional else 1
    layers, in_size = [], input_size
    for H, P in zip(hs, ps):
        k = scale if scale is not None else 1.0 / np.sqrt(H)
        H_out = P or H
        dirs = []
        for _ in range(D):
            w = {"w_ih": rng.uniform(-k, k, (4 * H, in_size)),
                 "w_hh": rng.uniform(-k, k, (4 * H, H_out))}
            if bias:
                w["b"] = rng.uniform(-k, k, 4 * H) + rng.uniform(-k, k, 4 * H)
            if P:
                w["w_hr"] = rng.uniform(-k, k, (P, H))
            if peephole:
                for n in ("p_i", "p_f", "p_o"):
                    w[n] = rng.uniform(-k, k, H)
            if layer_norm:  # coefficients around 1, as trained layer norms are
                for n in ("ln_i", "ln_f", "ln_g", "ln_o"):
                    w[n] = rng.uniform(0.5, 1.5, H)
            dirs.append(w)
        layers.append(dirs)
        in_size = D * H_out
    return layers


def cast_weights(weights, dtype):
    """A copy of canonical weights with every array cast to dtype."""
    return [[{n: np.asarray(a, dtype=dtype) for n, a in w.items()} for w in layer]
            for layer in weights]


def random_state(weights, batch, rng=None, scale=0.5):
    """Random (h0, c0) lists, one (D, B, F) array per layer."""
    rng = np.random.default_rng(rng)
    h0, c0 = [], []
    for layer in weights:
        H, H_out, D = layer_sizes(layer)
        h0.append(rng.uniform(-scale, scale, (D, batch, H_out)))
        c0.append(rng.uniform(-scale, scale, (D, batch, H)))
    return h0, c0
