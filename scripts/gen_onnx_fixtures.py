"""Generate onnxruntime forward fixtures for rnn-wgpu (tests/fixtures/onnx_<case>.safetensors).

PyTorch has no peepholes, no coupled input/forget gate, no gate clip, no configurable
activations and no "reset before" GRU, so these come from single ONNX `LSTM` / `GRU` / `RNN`
nodes (opset 14) run by onnxruntime's CPU provider.

How to run (from the repository root):

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch safetensors numpy onnx onnxruntime
    /tmp/torchvenv/bin/python scripts/gen_onnx_fixtures.py

Precision: onnxruntime implements these operators for float32 only (its kernels register
`T = float`; there is no float64 LSTM/GRU/RNN), so the outputs are float32 results with
float32 rounding (and MLAS's / onnxruntime's own sigmoid and tanh approximations) in them,
about 1e-7 relative per operation. To make sure they are what ONNX defines and not a quirk of
onnxruntime, every case is also recomputed here in float64 by `reference`, a direct
transcription of the operator equations, and must agree within `ORT_VS_F64_TOL`; every
attribute is checked to change the output (against the same node with that attribute at its
default), so a silently ignored attribute cannot slip through.

What each file holds (ONNX layout, one direction, G = 4 LSTM / 3 GRU / 1 RNN):
  F32  W [1, G*H, I], R [1, G*H, H]   gate order: LSTM i, o, f, c; GRU z, r, h
       B [1, 2*G*H] (Wb then Rb; absent when the case has no bias)
       P [1, 3*H]   (LSTM peepholes i, o, f; peephole cases only)
       -- exactly the arrays fed to onnxruntime;
  F32  X [T, B, I]; initial_h [B, H] and (LSTM) initial_c [B, H] (onnxruntime's [1, B, H]
       without the direction axis; absent when the case feeds no initial state: zeros);
  F32  Y [T, B, H] (onnxruntime's [T, 1, B, H]), Y_h [B, H], (LSTM) Y_c [B, H] -- as
       onnxruntime computed them;
  F64  reference.Y, reference.Y_h, (LSTM) reference.Y_c -- the float64 transcription's
       answer for the same float32 inputs (it agrees with onnxruntime to float32 rounding),
       so an f64 implementation can also be checked far more tightly than float32 allows.
Metadata (strings):
  cell ("lstm", "gru", "rnn"), input_size, hidden_size, batch, steps, bias ("true"/"false");
  activations, activation_alpha, activation_beta: JSON lists, exactly the node's attributes
      (empty lists: attribute not set);
  activation_params: JSON list of [name, alpha, beta] per activation role (f, g, h), the
      parameters each activation actually gets (null where it takes none), resolved with
      onnxruntime's rule below;
  clip ("none" or the float), input_forget ("0"/"1", LSTM), linear_before_reset ("0"/"1",
      GRU), peepholes ("true"/"false", LSTM);
  ort_vs_f64_max_abs: the largest |onnxruntime - reference| over Y, Y_h, Y_c;
  opset, onnx_version, onnxruntime_version.

onnxruntime conventions this script relies on (read from its CPU kernels, and confirmed by
the float64 cross-check):
  * LSTM / GRU `activation_alpha` / `activation_beta` are consumed in order by the activations
    that take them: an activation without alpha (Sigmoid, Tanh, Relu, Softsign, Softplus)
    takes no slot, and the two lists advance independently. E.g. activations
    [HardSigmoid, LeakyRelu, ScaledTanh] read alpha = [a_hs, a_lr, a_st] and
    beta = [b_hs, b_st]. (The plain RNN kernel instead indexes both lists by direction, which
    for one direction and one activation is the same thing.)
  * Missing alphas/betas fall back to onnxruntime defaults (LeakyRelu 0.01, HardSigmoid
    0.2/0.5, Elu 1.0, all others 0.0) -- the cases here always give them explicitly.
  * `clip` clamps every gate pre-activation to [-clip, clip] *after* the peephole term and
    both biases are added (LSTM i, f, c, o; GRU z, r, h; RNN); the cell state itself, the
    input of h(), is not clipped.
  * LSTM peepholes: i and f see C_{t-1}, o sees C_t. With input_forget = 1, f = 1 - i (the f
    peephole and f weights are unused).
  * ThresholdedRelu is `x if x > alpha else 0` (strict, as the standalone ONNX op; the RNN
    operator text says >=). It is discontinuous at alpha, so the script checks that no
    pre-activation lies within THRESHOLD_MARGIN of it: float32 and float64 then agree on
    which side every value falls.
  * The RNN kernel matches activation names case-sensitively and silently falls back to Tanh
    for a name it does not know, so names are written in ONNX's spelling ("Relu").
  * Float attributes (alpha, beta, clip) are float32 in the model, so the reference uses
    them rounded to float32 too (0.05 is 0.0500000007...): with the exact decimals it
    drifts ~1e-8 from any float32-parameterised implementation.
onnxruntime rejected none of the activations: all eleven run across the cases (Sigmoid and
Tanh as the defaults).

The output is deterministic (numpy's seeded generator; onnxruntime on one thread).
"""

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from safetensors.numpy import save_file

OPSET = 14
OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")

# float32 against float64 on these sizes (T <= 7, H <= 9): observed 7e-8 .. 9e-7 (the worst is
# the GRU with a Softplus candidate); anything beyond 1e-5 means the reference and onnxruntime
# disagree about the semantics.
ORT_VS_F64_TOL = 1e-5
# An attribute must change some output by at least this much to count as honoured.
ATTRIBUTE_EFFECT = 1e-3
THRESHOLD_MARGIN = 1e-4

GATES = {"lstm": 4, "gru": 3, "rnn": 1}
# Which of alpha / beta each activation reads (onnxruntime's NameToArgUsageMap).
USES = {
    "Sigmoid": (False, False), "Tanh": (False, False), "Relu": (False, False),
    "HardSigmoid": (True, True), "LeakyRelu": (True, False), "ThresholdedRelu": (True, False),
    "ScaledTanh": (True, True), "Affine": (True, True), "Elu": (True, False),
    "Softsign": (False, False), "Softplus": (False, False),
}
DEFAULT_ACTIVATIONS = {
    "lstm": ["Sigmoid", "Tanh", "Tanh"],
    "gru": ["Sigmoid", "Tanh"],
    "rnn": ["Tanh"],
}

# name: dict(cell, I, H, B, T, seed, plus optional attributes and generation knobs):
#   activations / alpha / beta: the node's lists; clip; input_forget; linear_before_reset;
#   peepholes; bias (default True); initial_state (default True); x_scale, w_scale.
CASES = {
    "lstm_peephole": dict(cell="lstm", I=5, H=7, B=3, T=6, seed=101, peepholes=True),
    "lstm_input_forget": dict(cell="lstm", I=5, H=7, B=3, T=6, seed=102, input_forget=1),
    # x_scale 3 puts roughly a third of all gate pre-activations beyond +-1.5.
    "lstm_clip": dict(cell="lstm", I=5, H=7, B=3, T=6, seed=103, clip=1.5, x_scale=3.0),
    # Clip and peepholes together: the clip bounds the sum including the peephole term.
    "lstm_clip_peephole": dict(cell="lstm", I=4, H=6, B=2, T=5, seed=104, clip=1.0,
                               x_scale=3.0, peepholes=True),
    "lstm_activations_a": dict(cell="lstm", I=5, H=7, B=3, T=6, seed=105,
                               activations=["HardSigmoid", "LeakyRelu", "ScaledTanh"],
                               alpha=[0.25, 0.05, 1.5], beta=[0.45, 0.7]),
    "lstm_activations_b": dict(cell="lstm", I=6, H=5, B=2, T=7, seed=106,
                               activations=["Softsign", "Elu", "Affine"],
                               alpha=[0.9, 0.8], beta=[0.1]),
    "gru_activations_c": dict(cell="gru", I=5, H=7, B=3, T=6, seed=107,
                              activations=["ThresholdedRelu", "Softplus"], alpha=[0.1],
                              linear_before_reset=1),
    "gru_activations_d": dict(cell="gru", I=4, H=9, B=2, T=5, seed=108,
                              activations=["HardSigmoid", "Relu"], alpha=[0.3], beta=[0.55],
                              linear_before_reset=0),
    "gru_reset_before": dict(cell="gru", I=5, H=7, B=3, T=6, seed=109, linear_before_reset=0),
    "gru_reset_after": dict(cell="gru", I=5, H=7, B=3, T=6, seed=110, linear_before_reset=1),
    "gru_clip": dict(cell="gru", I=5, H=7, B=3, T=6, seed=111, clip=0.8, x_scale=3.0,
                     linear_before_reset=0),
    "rnn_tanh": dict(cell="rnn", I=5, H=7, B=3, T=6, seed=112, activations=["Tanh"]),
    # No B and no initial_h: zero biases and a zero initial state, as ONNX defines them.
    "rnn_relu": dict(cell="rnn", I=5, H=7, B=3, T=6, seed=113, activations=["Relu"],
                     bias=False, initial_state=False),
}


# ---------------------------------------------------------------- float64 reference

def activation(name, alpha, beta):
    """The ONNX activation `name` (onnxruntime's definitions) as a float64 numpy function."""
    return {
        "Sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
        "Tanh": np.tanh,
        "Relu": lambda x: np.maximum(x, 0.0),
        "HardSigmoid": lambda x: np.clip(alpha * x + beta, 0.0, 1.0),
        "LeakyRelu": lambda x: np.where(x >= 0, x, alpha * x),
        "ThresholdedRelu": lambda x: np.where(x > alpha, x, 0.0),
        "ScaledTanh": lambda x: alpha * np.tanh(beta * x),
        "Affine": lambda x: alpha * x + beta,
        "Elu": lambda x: np.where(x >= 0, x, alpha * np.expm1(np.minimum(x, 0.0))),
        "Softsign": lambda x: x / (1.0 + np.abs(x)),
        "Softplus": lambda x: np.logaddexp(0.0, x),
    }[name]


def f32(v):
    """An attribute value as the node holds it (ONNX stores float attributes as float32)."""
    return float(np.float32(v))


def resolve_params(names, alphas, betas):
    """[name, alpha, beta] per activation with onnxruntime's consume-in-order rule."""
    alphas, betas = [f32(a) for a in alphas], [f32(b) for b in betas]
    out = []
    for name in names:
        use_alpha, use_beta = USES[name]
        a = alphas.pop(0) if use_alpha else None
        b = betas.pop(0) if use_beta else None
        out.append([name, a, b])
    assert not alphas and not betas, "unconsumed activation_alpha/beta values"
    return out


class PreActivations:
    """Collects every (clipped) pre-activation, for the clip and threshold checks."""

    def __init__(self, clip):
        self.clip = clip
        self.raw = []

    def __call__(self, x):
        self.raw.append(x.ravel().copy())
        return x if self.clip is None else np.clip(x, -self.clip, self.clip)

    def values(self):
        return np.concatenate(self.raw)


def reference(cell, params, acts, clip, input_forget, linear_before_reset):
    """ONNX's equations in float64. Returns (Y [T,B,H], Y_h, Y_c or None, pre-activations)."""
    d = {k: (None if v is None else v.astype(np.float64)) for k, v in params.items()}
    W, R, X = d["W"][0], d["R"][0], d["X"]
    T, B, _ = X.shape
    H = R.shape[1]
    G = GATES[cell]
    Bv = d["B"][0] if d["B"] is not None else np.zeros(2 * G * H)
    Wb, Rb = Bv[: G * H], Bv[G * H :]
    h = d["initial_h"][0] if d["initial_h"] is not None else np.zeros((B, H))
    c = d["initial_c"][0] if d.get("initial_c") is not None else np.zeros((B, H))
    P = d["P"][0] if d.get("P") is not None else np.zeros(3 * H)
    f = activation(*acts[0])
    g = activation(*acts[1]) if len(acts) > 1 else None
    hh = activation(*acts[2]) if len(acts) > 2 else None
    pre = PreActivations(clip)
    blk = lambda m, k: m[k * H : (k + 1) * H]
    ys = []
    for t in range(T):
        x = X[t]
        if cell == "lstm":
            gx = x @ W.T + h @ R.T + Wb + Rb  # blocks i, o, f, c
            i = f(pre(blk(gx.T, 0).T + P[:H] * c))
            if input_forget:
                fg = 1.0 - i
            else:
                fg = f(pre(blk(gx.T, 2).T + P[2 * H :] * c))
            cc = g(pre(blk(gx.T, 3).T))
            c = fg * c + i * cc
            o = f(pre(blk(gx.T, 1).T + P[H : 2 * H] * c))
            h = o * hh(c)
        elif cell == "gru":
            xw = x @ W.T + Wb  # blocks z, r, h
            z = f(pre(blk(xw.T, 0).T + h @ blk(R, 0).T + blk(Rb, 0)))
            r = f(pre(blk(xw.T, 1).T + h @ blk(R, 1).T + blk(Rb, 1)))
            if linear_before_reset:
                n = g(pre(blk(xw.T, 2).T + r * (h @ blk(R, 2).T + blk(Rb, 2))))
            else:
                n = g(pre(blk(xw.T, 2).T + (r * h) @ blk(R, 2).T + blk(Rb, 2)))
            h = (1.0 - z) * n + z * h
        else:
            h = f(pre(x @ W.T + h @ R.T + Wb + Rb))
        ys.append(h)
    return np.stack(ys), h, (c if cell == "lstm" else None), pre.values()


# ---------------------------------------------------------------- onnxruntime

def run_ort(cell, params, attrs):
    """One node, run by onnxruntime. `params` holds the inputs (None: left empty)."""
    order = ["X", "W", "R", "B", "sequence_lens", "initial_h"]
    if cell == "lstm":
        order += ["initial_c", "P"]
    names = [n if params.get(n) is not None else "" for n in order]
    while names and names[-1] == "":
        names.pop()
    outputs = ["Y", "Y_h"] + (["Y_c"] if cell == "lstm" else [])
    node = helper.make_node(cell.upper(), names, outputs, **attrs)
    T, B, _ = params["X"].shape
    H = attrs["hidden_size"]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, params[n].shape)
              for n in names if n]
    outs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [T, 1, B, H])]
    outs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, B, H]) for n in outputs[1:]]
    graph = helper.make_graph([node], f"{cell}_fixture", inputs, outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # opset 14 era; accepted by every onnxruntime since 1.10
    onnx.checker.check_model(model, full_check=True)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    feeds = {n: params[n] for n in names if n}
    result = sess.run(outputs, feeds)
    y, y_h = result[0], result[1]
    y_c = result[2] if cell == "lstm" else None
    return y[:, 0], y_h[0], (y_c[0] if y_c is not None else None)


def node_attrs(spec):
    cell = spec["cell"]
    attrs = {"hidden_size": spec["H"]}
    if "activations" in spec:
        attrs["activations"] = spec["activations"]
    if spec.get("alpha"):
        attrs["activation_alpha"] = spec["alpha"]
    if spec.get("beta"):
        attrs["activation_beta"] = spec["beta"]
    if spec.get("clip") is not None:
        attrs["clip"] = spec["clip"]
    if cell == "lstm" and "input_forget" in spec:
        attrs["input_forget"] = spec["input_forget"]
    if cell == "gru" and "linear_before_reset" in spec:
        attrs["linear_before_reset"] = spec["linear_before_reset"]
    return attrs


def draw(spec):
    """Every input in float32 from the case's seed, ONNX layout."""
    rng = np.random.default_rng(spec["seed"])
    cell, I, H, B, T = spec["cell"], spec["I"], spec["H"], spec["B"], spec["T"]
    G = GATES[cell]
    k = spec.get("w_scale", 1.0) / np.sqrt(H)  # PyTorch's default range, +-1/sqrt(H)
    u = lambda *shape: rng.uniform(-k, k, size=shape).astype(np.float32)
    p = {"W": u(1, G * H, I), "R": u(1, G * H, H)}
    p["B"] = u(1, 2 * G * H) if spec.get("bias", True) else None
    p["X"] = (rng.standard_normal((T, B, I)) * spec.get("x_scale", 1.0)).astype(np.float32)
    state = spec.get("initial_state", True)
    p["initial_h"] = rng.standard_normal((1, B, H)).astype(np.float32) if state else None
    if cell == "lstm":
        p["initial_c"] = rng.standard_normal((1, B, H)).astype(np.float32) if state else None
        # Peepholes drawn larger than the weights so their effect is plain in the output.
        p["P"] = rng.uniform(-1.0, 1.0, size=(1, 3 * H)).astype(np.float32) \
            if spec.get("peepholes") else None
    return p


def max_diff(a, b):
    for x, y in zip(a, b):
        assert x is None or x.shape == y.shape, (x.shape, y.shape)
    return max(float(np.max(np.abs(x.astype(np.float64) - y))) for x, y in zip(a, b)
               if x is not None)


def make_case(name, spec):
    cell = spec["cell"]
    params = draw(spec)
    attrs = node_attrs(spec)
    names = spec.get("activations", DEFAULT_ACTIVATIONS[cell])
    acts = resolve_params(names, spec.get("alpha", []), spec.get("beta", []))
    clip = None if spec.get("clip") is None else f32(spec["clip"])
    input_forget = spec.get("input_forget", 0)
    lbr = spec.get("linear_before_reset", 0)

    ort_out = run_ort(cell, params, attrs)
    ref_out = reference(cell, params, acts, clip, input_forget, lbr)
    err = max_diff(ort_out, ref_out[:3])
    assert np.all(np.isfinite(ort_out[0])), f"{name}: non-finite output"
    assert err < ORT_VS_F64_TOL, f"{name}: onnxruntime vs float64 reference {err:.2e}"

    # Each attribute must matter: the same node with it at its default differs.
    pre = ref_out[3]
    checks = []
    if clip is not None:
        frac = float(np.mean(np.abs(pre) > clip))
        assert 0.1 < frac < 0.9, f"{name}: {frac:.0%} of pre-activations beyond the clip"
        a = dict(attrs)
        del a["clip"]
        checks.append(("clip", run_ort(cell, params, a), f"{frac:.0%} clipped"))
    if spec.get("peepholes"):
        checks.append(("peepholes", run_ort(cell, dict(params, P=None), attrs), ""))
    if input_forget:
        checks.append(("input_forget", run_ort(cell, params, dict(attrs, input_forget=0)), ""))
    if cell == "gru":
        checks.append(("linear_before_reset",
                       run_ort(cell, params, dict(attrs, linear_before_reset=1 - lbr)), ""))
    if "activations" in spec and names != DEFAULT_ACTIVATIONS[cell]:
        a = {k: v for k, v in attrs.items() if not k.startswith("activation")}
        checks.append(("activations", run_ort(cell, params, a), ""))
        # Where the alignment rule matters (alphas indexed by role would give other
        # parameters), onnxruntime must follow consume-in-order.
        other_acts = misaligned(names, spec)
        if other_acts != acts:
            checks.append(("alpha/beta alignment",
                           reference(cell, params, other_acts, clip, input_forget, lbr)[:3],
                           f"(index-aligned lists would give {other_acts})"))
    for attr, other, note in checks:
        effect = max_diff(ort_out, other)
        assert effect > ATTRIBUTE_EFFECT, f"{name}: {attr} changes outputs by only {effect:.1e}"
        print(f"  {name}: {attr} changes the output by {effect:.2e} {note}")
    for act_name, alpha, _ in acts:
        if act_name == "ThresholdedRelu":
            gap = float(np.min(np.abs(pre - alpha)))
            assert gap > THRESHOLD_MARGIN, f"{name}: a pre-activation within {gap:.1e} of alpha"
            frac = float(np.mean(pre > alpha))
            print(f"  {name}: ThresholdedRelu passes {frac:.0%}, nearest to alpha {gap:.1e}")

    tensors = {k: v for k, v in params.items() if k in ("W", "R", "B", "P") and v is not None}
    tensors["X"] = params["X"]
    for k in ("initial_h", "initial_c"):
        if params.get(k) is not None:
            tensors[k] = params[k][0]
    for key, value in zip(("Y", "Y_h", "Y_c"), ort_out):
        if value is not None:
            tensors[key] = value
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    for key, value in zip(("Y", "Y_h", "Y_c"), ref_out[:3]):
        if value is not None:
            tensors["reference." + key] = np.ascontiguousarray(value, dtype=np.float64)

    metadata = {
        "cell": cell,
        "input_size": str(spec["I"]),
        "hidden_size": str(spec["H"]),
        "batch": str(spec["B"]),
        "steps": str(spec["T"]),
        "bias": "true" if params["B"] is not None else "false",
        "activations": json.dumps(names),
        "activation_alpha": json.dumps(spec.get("alpha", [])),
        "activation_beta": json.dumps(spec.get("beta", [])),
        "activation_params": json.dumps(acts),
        "clip": "none" if clip is None else repr(clip),
        "ort_vs_f64_max_abs": repr(err),
        "opset": str(OPSET),
        "onnx_version": onnx.__version__,
        "onnxruntime_version": ort.__version__,
    }
    if cell == "lstm":
        metadata["input_forget"] = str(input_forget)
        metadata["peepholes"] = "true" if params["P"] is not None else "false"
    if cell == "gru":
        metadata["linear_before_reset"] = str(lbr)
    path = os.path.join(OUT_DIR, f"onnx_{name}.safetensors")
    save_file(tensors, path, metadata=metadata)
    sort_metadata(path)
    print(f"{path}: {len(tensors)} tensors, {os.path.getsize(path)} bytes, "
          f"|ort - f64| {err:.1e}")


def misaligned(names, spec):
    """[name, alpha, beta] if the lists were indexed by activation role instead."""
    alphas = [f32(a) for a in spec.get("alpha", [])]
    betas = [f32(b) for b in spec.get("beta", [])]
    out = []
    for k, name in enumerate(names):
        use_alpha, use_beta = USES[name]
        a = alphas[k] if use_alpha and k < len(alphas) else (0.0 if use_alpha else None)
        b = betas[k] if use_beta and k < len(betas) else (0.0 if use_beta else None)
        out.append([name, a, b])
    return out


def sort_metadata(path):
    """Rewrite the header with the metadata keys sorted, so reruns give identical bytes
    (the safetensors writer keeps `__metadata__` in a hash map)."""
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + raw[8 + n :])


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    for name, spec in CASES.items():
        make_case(name, spec)


if __name__ == "__main__":
    main()
