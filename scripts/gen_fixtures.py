"""Generate PyTorch `nn.LSTM` parity fixtures for rnn-wgpu (tests/fixtures/lstm_<case>.safetensors).

How to run (from the repository root):

    python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch safetensors numpy
    /tmp/torchvenv/bin/python scripts/gen_fixtures.py

What each file holds
--------------------
Every case builds `nn.LSTM(I, H, bias=...)` with PyTorch's default float32 initialisation,
then copies the module to float64 and runs forward and backward in float64. Inputs and
upstream gradients are drawn in float32 and widened, so the expected values are the exact
(to ~1e-15 relative) answer for the float32 inputs stored beside them; the Rust f64 reference
fed the same float32 values must agree to rounding.

Tensors (seq-major, PyTorch gate order i, f, g, o):
  F32  weight_ih_l0 [4H, I], weight_hh_l0 [4H, H], bias_ih_l0 / bias_hh_l0 [4H] (bias only)
       -- the state_dict names, so `Weights::from_safetensors` loads the file directly;
  F32  x [T, B, I], h0 [B, H], c0 [B, H], dy [T, B, H], dh_n [B, H], dc_n [B, H];
  F64  y [T, B, H], h_n [B, H], c_n [B, H];
  F64  grad.x, grad.h0, grad.c0, grad.weight_ih_l0, grad.weight_hh_l0,
       grad.bias_ih_l0, grad.bias_hh_l0 (bias only) -- gradients of
       loss = sum(y * dy) + sum(h_n * dh_n) + sum(c_n * dc_n).
Metadata: input_size, hidden_size, batch, steps, bias ("true"/"false"), torch_version.

The output is deterministic for a given torch version (each case seeds torch.manual_seed).
"""

import json
import os

import torch
from safetensors.torch import save_file

# name: (input_size, hidden_size, batch, steps, bias, x_scale, seed)
CASES = {
    "small": (5, 7, 3, 6, True, 1.0, 1),
    "tiny": (1, 1, 1, 1, True, 1.0, 2),
    "nobias": (8, 16, 4, 20, False, 1.0, 3),
    "odd": (13, 33, 17, 9, True, 1.0, 4),
    # Inputs scaled by 50 push most gate pre-activations deep into saturation, where
    # sigmoid/tanh and their derivatives are tiny: a check of the stable activations.
    "large_input": (4, 8, 2, 5, True, 50.0, 5),
}

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")


def make_case(name, input_size, hidden_size, batch, steps, bias, x_scale, seed):
    torch.manual_seed(seed)
    lstm32 = torch.nn.LSTM(input_size, hidden_size, bias=bias)
    params32 = {k: v.detach().clone().contiguous() for k, v in lstm32.state_dict().items()}

    # Everything random is drawn in float32: these exact values are stored and widened.
    x = torch.randn(steps, batch, input_size, dtype=torch.float32) * x_scale
    h0 = torch.randn(batch, hidden_size, dtype=torch.float32)
    c0 = torch.randn(batch, hidden_size, dtype=torch.float32)
    dy = torch.randn(steps, batch, hidden_size, dtype=torch.float32)
    dh_n = torch.randn(batch, hidden_size, dtype=torch.float32)
    dc_n = torch.randn(batch, hidden_size, dtype=torch.float32)

    lstm = lstm32.double()
    x64 = x.double().requires_grad_(True)
    # nn.LSTM takes states as [num_layers * directions, B, H].
    h064 = h0.double().unsqueeze(0).requires_grad_(True)
    c064 = c0.double().unsqueeze(0).requires_grad_(True)
    y, (h_n, c_n) = lstm(x64, (h064, c064))
    loss = (
        (y * dy.double()).sum()
        + (h_n[0] * dh_n.double()).sum()
        + (c_n[0] * dc_n.double()).sum()
    )
    loss.backward()

    tensors = dict(params32)
    tensors.update({"x": x, "h0": h0, "c0": c0, "dy": dy, "dh_n": dh_n, "dc_n": dc_n})
    tensors.update({"y": y.detach(), "h_n": h_n.detach()[0], "c_n": c_n.detach()[0]})
    tensors.update({"grad.x": x64.grad, "grad.h0": h064.grad[0], "grad.c0": c064.grad[0]})
    for pname, p in lstm.named_parameters():
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
    path = os.path.join(OUT_DIR, f"lstm_{name}.safetensors")
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


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT_DIR, exist_ok=True)
    for name, spec in CASES.items():
        make_case(name, *spec)


if __name__ == "__main__":
    main()
