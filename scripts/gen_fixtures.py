"""Generate PyTorch parity fixtures for rnn-wgpu (tests/fixtures/<cell>_<case>.safetensors).

How to run (from the repository root):

    python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch safetensors numpy
    /tmp/torchvenv/bin/python scripts/gen_fixtures.py

What each file holds
--------------------
Every case builds one single-layer module -- `nn.LSTM(I, H, bias=...)`,
`nn.LSTM(I, H, proj_size=P)`, `nn.GRU(I, H)` or `nn.RNN(I, H, nonlinearity=...)` -- with
PyTorch's default float32 initialisation, then copies the module to float64 and runs forward
and backward in float64. Inputs and upstream gradients are drawn in float32 and widened, so the
expected values are the exact (to ~1e-15 relative) answer for the float32 inputs stored beside
them; the Rust f64 reference fed the same float32 values must agree to rounding.

Tensors (seq-major; PyTorch gate order: LSTM i, f, g, o; GRU r, z, n; RNN one block).
G = 4 (LSTM), 3 (GRU), 1 (RNN); S = P with a projection, else H (the size of h):
  F32  weight_ih_l0 [G*H, I], weight_hh_l0 [G*H, S], bias_ih_l0 / bias_hh_l0 [G*H] (bias only),
       weight_hr_l0 [P, H] (projection only)
       -- the state_dict names, so `Weights::from_safetensors` loads the file directly;
  F32  x [T, B, I], h0 [B, S], dy [T, B, S], dh_n [B, S];
       LSTM only: c0 [B, H], dc_n [B, H];
  F64  y [T, B, S], h_n [B, S]; LSTM only: c_n [B, H];
  F64  grad.x, grad.h0, grad.<param> for every parameter above; LSTM only: grad.c0
       -- gradients of loss = sum(y * dy) + sum(h_n * dh_n) [+ sum(c_n * dc_n)].
Metadata: input_size, hidden_size, batch, steps, bias ("true"/"false"), torch_version;
for every case but the first five plain-LSTM files also `cell` ("lstm", "gru", "rnn"), plus
`nonlinearity` ("tanh"/"relu") for rnn and `proj_size` for a projected LSTM. The five
`lstm_<case>` files predate the `cell` key and are kept byte-identical; a reader takes a
missing `cell` to mean "lstm".

The output is deterministic for a given torch version (each case seeds torch.manual_seed).
"""

import json
import os

import torch
from safetensors.torch import save_file

# Plain LSTM. name: (input_size, hidden_size, batch, steps, bias, x_scale, seed)
CASES = {
    "small": (5, 7, 3, 6, True, 1.0, 1),
    "tiny": (1, 1, 1, 1, True, 1.0, 2),
    "nobias": (8, 16, 4, 20, False, 1.0, 3),
    "odd": (13, 33, 17, 9, True, 1.0, 4),
    # Inputs scaled by 50 push most gate pre-activations deep into saturation, where
    # sigmoid/tanh and their derivatives are tiny: a check of the stable activations.
    "large_input": (4, 8, 2, 5, True, 50.0, 5),
}

# The other cells. file stem: (cell, options, input_size, hidden_size, batch, steps, bias,
# x_scale, seed). Options: {"nonlinearity": ...} for rnn, {"proj_size": P} for lstm.
# Together they cover odd I and H, B = 1, T = 1, no bias and saturation for each kind.
CELL_CASES = {
    "gru_small": ("gru", {}, 5, 7, 3, 6, True, 1.0, 11),
    "gru_tiny": ("gru", {}, 3, 5, 1, 1, True, 1.0, 12),
    "gru_odd": ("gru", {}, 13, 21, 5, 9, True, 1.0, 13),
    "gru_nobias": ("gru", {}, 8, 16, 4, 12, False, 1.0, 14),
    "gru_large_input": ("gru", {}, 4, 8, 2, 5, True, 50.0, 15),
    "rnn_tanh_small": ("rnn", {"nonlinearity": "tanh"}, 5, 7, 3, 6, True, 1.0, 21),
    "rnn_tanh_tiny": ("rnn", {"nonlinearity": "tanh"}, 1, 1, 1, 1, True, 1.0, 22),
    "rnn_tanh_odd": ("rnn", {"nonlinearity": "tanh"}, 13, 21, 1, 9, True, 1.0, 23),
    "rnn_relu_small": ("rnn", {"nonlinearity": "relu"}, 5, 7, 3, 6, True, 1.0, 31),
    "rnn_relu_odd": ("rnn", {"nonlinearity": "relu"}, 13, 21, 1, 9, False, 1.0, 32),
    "lstm_proj_small": ("lstm", {"proj_size": 3}, 5, 7, 3, 6, True, 1.0, 41),
    "lstm_proj_tiny": ("lstm", {"proj_size": 1}, 2, 2, 1, 1, True, 1.0, 42),
    "lstm_proj_odd": ("lstm", {"proj_size": 5}, 13, 21, 1, 9, False, 1.0, 43),
}

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")


def make_module(cell, options, input_size, hidden_size, bias):
    if cell == "lstm":
        return torch.nn.LSTM(input_size, hidden_size, bias=bias, **options)
    if cell == "gru":
        return torch.nn.GRU(input_size, hidden_size, bias=bias)
    if cell == "rnn":
        return torch.nn.RNN(input_size, hidden_size, bias=bias, **options)
    raise ValueError(cell)


def make_case(stem, cell, options, input_size, hidden_size, batch, steps, bias, x_scale, seed,
              cell_metadata=True):
    torch.manual_seed(seed)
    module32 = make_module(cell, options, input_size, hidden_size, bias)
    params32 = {k: v.detach().clone().contiguous() for k, v in module32.state_dict().items()}
    has_c = cell == "lstm"
    state_size = options.get("proj_size") or hidden_size

    # Everything random is drawn in float32: these exact values are stored and widened.
    # The draw order (x, h0, c0, dy, dh_n, dc_n) is fixed: the LSTM files depend on it.
    x = torch.randn(steps, batch, input_size, dtype=torch.float32) * x_scale
    h0 = torch.randn(batch, state_size, dtype=torch.float32)
    c0 = torch.randn(batch, hidden_size, dtype=torch.float32) if has_c else None
    dy = torch.randn(steps, batch, state_size, dtype=torch.float32)
    dh_n = torch.randn(batch, state_size, dtype=torch.float32)
    dc_n = torch.randn(batch, hidden_size, dtype=torch.float32) if has_c else None

    module = module32.double()
    x64 = x.double().requires_grad_(True)
    # The modules take states as [num_layers * directions, B, S].
    h064 = h0.double().unsqueeze(0).requires_grad_(True)
    if has_c:
        c064 = c0.double().unsqueeze(0).requires_grad_(True)
        y, (h_n, c_n) = module(x64, (h064, c064))
    else:
        y, h_n = module(x64, h064)
    loss = (y * dy.double()).sum() + (h_n[0] * dh_n.double()).sum()
    if has_c:
        loss = loss + (c_n[0] * dc_n.double()).sum()
    loss.backward()

    tensors = dict(params32)
    tensors.update({"x": x, "h0": h0, "dy": dy, "dh_n": dh_n})
    tensors.update({"y": y.detach(), "h_n": h_n.detach()[0]})
    tensors.update({"grad.x": x64.grad, "grad.h0": h064.grad[0]})
    if has_c:
        tensors.update({"c0": c0, "dc_n": dc_n, "c_n": c_n.detach()[0], "grad.c0": c064.grad[0]})
    for pname, p in module.named_parameters():
        tensors["grad." + pname] = p.grad
    tensors = {k: v.detach().clone().contiguous() for k, v in tensors.items()}

    metadata = {
        "input_size": str(input_size),
        "hidden_size": str(hidden_size),
        "batch": str(batch),
        "steps": str(steps),
        "bias": "true" if bias else "false",
        "torch_version": torch.__version__,
    }
    if cell_metadata:
        metadata["cell"] = cell
        metadata.update({k: str(v) for k, v in options.items()})
    path = os.path.join(OUT_DIR, f"{stem}.safetensors")
    save_file(tensors, path, metadata=metadata)
    sort_metadata(path)
    print(f"{path}: {len(tensors)} tensors, {os.path.getsize(path)} bytes")


def sort_metadata(path):
    """Rewrite the header with the metadata keys sorted, so reruns give identical bytes.

    The safetensors writer keeps `__metadata__` in a hash map, so its key order (and hence the
    file's bytes) changes from run to run; tensor entries are already sorted.
    """
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    # The format pads the header with spaces so the data starts 8-byte aligned.
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + raw[8 + n :])


# Topologies: several layers, bidirectional, variable lengths (packed), batch-first.
# file stem: (cell, options, input_size, hidden_size, batch, steps, num_layers, bidirectional,
# batch_first, lengths or None, seed). Options: {"proj_size": P} for lstm. Dropout is 0.
# Lengths are in no particular order (PyTorch `enforce_sorted=False`) and include one full
# length, so `pad_packed_sequence(total_length=T)` gives back the padded shape.
# They go to tests/fixtures/topology/ (read by tests/cpu_topology.rs), apart from the
# single-layer files that tests/cpu_parity.rs enumerates.
TOPOLOGY_DIR = os.path.join(OUT_DIR, "topology")
TOPOLOGY_CASES = {
    "lstm_l2_bi": ("lstm", {}, 5, 6, 3, 5, 2, True, False, None, 51),
    "gru_l2_bi": ("gru", {}, 5, 6, 3, 5, 2, True, False, None, 52),
    "lstm_l2_bi_packed": ("lstm", {}, 4, 5, 4, 6, 2, True, False, [3, 6, 1, 4], 53),
    "gru_l2_bi_packed": ("gru", {}, 4, 5, 4, 6, 2, True, False, [2, 5, 6, 3], 54),
    "lstm_l2_bi_packed_bf": ("lstm", {}, 3, 5, 4, 6, 2, True, True, [4, 1, 6, 2], 55),
    "gru_l2_bi_packed_bf": ("gru", {}, 3, 5, 4, 6, 2, True, True, [6, 3, 5, 1], 56),
    "lstm_proj_l2_bi": ("lstm", {"proj_size": 3}, 5, 7, 3, 5, 2, True, False, None, 57),
    "lstm_proj_l2_bi_packed_bf": ("lstm", {"proj_size": 2}, 4, 5, 3, 5, 2, True, True,
                                  [2, 5, 3], 58),
}


def make_topology_case(stem, cell, options, input_size, hidden_size, batch, steps, num_layers,
                       bidirectional, batch_first, lengths, seed):
    """One multi-layer case. Tensors as `make_case`, except:

    x, dy and y are [B, T, F] when batch_first, else [T, B, F], with F = I for x and
    dirs * S for dy and y; h0, dh_n, h_n are [layers * dirs, B, S] and c0, dc_n, c_n
    [layers * dirs, B, H] (PyTorch's order: l0, l0_reverse, l1, ...). With lengths the module
    runs on pack_padded_sequence(x, lengths, enforce_sorted=False) and y is
    pad_packed_sequence(..., total_length=T): exactly zero past each sequence's end, where dy
    gets no gradient.
    Metadata adds num_layers, bidirectional, batch_first, and lengths (a JSON list) if any.
    """
    torch.manual_seed(seed)
    dirs = 2 if bidirectional else 1
    kwargs = dict(bias=True, num_layers=num_layers, bidirectional=bidirectional,
                  batch_first=batch_first, dropout=0.0, **options)
    module32 = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(input_size, hidden_size,
                                                                   **kwargs)
    params32 = {k: v.detach().clone().contiguous() for k, v in module32.state_dict().items()}
    has_c = cell == "lstm"
    state_size = options.get("proj_size") or hidden_size
    seq = (batch, steps) if batch_first else (steps, batch)
    states = num_layers * dirs

    x = torch.randn(*seq, input_size, dtype=torch.float32)
    h0 = torch.randn(states, batch, state_size, dtype=torch.float32)
    c0 = torch.randn(states, batch, hidden_size, dtype=torch.float32) if has_c else None
    dy = torch.randn(*seq, dirs * state_size, dtype=torch.float32)
    dh_n = torch.randn(states, batch, state_size, dtype=torch.float32)
    dc_n = torch.randn(states, batch, hidden_size, dtype=torch.float32) if has_c else None

    module = module32.double()
    x64 = x.double().requires_grad_(True)
    h064 = h0.double().requires_grad_(True)
    c064 = c0.double().requires_grad_(True) if has_c else None
    inp = x64
    if lengths is not None:
        inp = torch.nn.utils.rnn.pack_padded_sequence(
            x64, torch.tensor(lengths), batch_first=batch_first, enforce_sorted=False)
    state = (h064, c064) if has_c else h064
    out, final = module(inp, state)
    if lengths is not None:
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(
            out, batch_first=batch_first, total_length=steps)
    y = out
    h_n, c_n = final if has_c else (final, None)
    loss = (y * dy.double()).sum() + (h_n * dh_n.double()).sum()
    if has_c:
        loss = loss + (c_n * dc_n.double()).sum()
    loss.backward()

    tensors = dict(params32)
    tensors.update({"x": x, "h0": h0, "dy": dy, "dh_n": dh_n})
    tensors.update({"y": y.detach(), "h_n": h_n.detach()})
    tensors.update({"grad.x": x64.grad, "grad.h0": h064.grad})
    if has_c:
        tensors.update({"c0": c0, "dc_n": dc_n, "c_n": c_n.detach(), "grad.c0": c064.grad})
    for pname, p in module.named_parameters():
        tensors["grad." + pname] = p.grad
    tensors = {k: v.detach().clone().contiguous() for k, v in tensors.items()}

    metadata = {
        "cell": cell,
        "input_size": str(input_size),
        "hidden_size": str(hidden_size),
        "batch": str(batch),
        "steps": str(steps),
        "bias": "true",
        "num_layers": str(num_layers),
        "bidirectional": "true" if bidirectional else "false",
        "batch_first": "true" if batch_first else "false",
        "torch_version": torch.__version__,
    }
    metadata.update({k: str(v) for k, v in options.items()})
    if lengths is not None:
        metadata["lengths"] = json.dumps(lengths)
    path = os.path.join(TOPOLOGY_DIR, f"{stem}.safetensors")
    save_file(tensors, path, metadata=metadata)
    sort_metadata(path)
    print(f"{path}: {len(tensors)} tensors, {os.path.getsize(path)} bytes")


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT_DIR, exist_ok=True)
    for name, (i, h, b, t, bias, x_scale, seed) in CASES.items():
        make_case(f"lstm_{name}", "lstm", {}, i, h, b, t, bias, x_scale, seed,
                  cell_metadata=False)
    for stem, spec in CELL_CASES.items():
        make_case(stem, *spec)
    os.makedirs(TOPOLOGY_DIR, exist_ok=True)
    for stem, spec in TOPOLOGY_CASES.items():
        make_topology_case(stem, *spec)


if __name__ == "__main__":
    main()
