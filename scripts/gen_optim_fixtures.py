"""Generate PyTorch optimiser and gradient-clipping fixtures for rnn-wgpu
(tests/fixtures/optim.safetensors).

How to run (from the repository root):

    python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch safetensors numpy
    /tmp/torchvenv/bin/python scripts/gen_optim_fixtures.py

What the file holds
-------------------
A few small parameter tensors of odd sizes and STEPS gradients for each are drawn in float32
(these exact values are stored) and widened to float64; torch.optim.SGD / torch.optim.Adam and
torch.nn.utils.clip_grad_norm_ / clip_grad_value_ then run in float64, so the expected values
are the exact answer (to ~1e-16 relative) for the stored float32 inputs.

Tensors:
  F32  param.{j}               initial parameter j, shape SHAPES[j]
  F32  grad.{s}.{j}            gradient of parameter j at step s (s < STEPS)
  F64  {case}.step{s}.param.{j}   parameter j after step s of optimiser case `case`
  F64  {case}.momentum_buffer.{j} SGD cases with momentum: the buffer after the last step
  F64  {case}.exp_avg.{j}, {case}.exp_avg_sq.{j}   Adam cases: the moments after the last step
  F64  clip_norm_{name}.grad.{j}   grad.0.* after clip_grad_norm_(max_norm)
  F64  clip_norm_{name}.total_norm [1]  its return value (the norm before clipping)
  F64  clip_value.grad.{j}         grad.0.* after clip_grad_value_(CLIP_VALUE)
Metadata (JSON strings): shapes, steps, optimizers (case -> kind and hyper-parameters),
clip_norm (name -> max_norm), clip_value, torch_version.

Parameter 1's gradients are scaled by 1e-7 so that Adam's eps (1e-8, 1e-6) is not negligible
beside sqrt(v) there: the fixture then checks where eps enters the update.
The output is deterministic for a given torch version (torch.manual_seed).
"""

import json
import os

import torch
from safetensors.torch import save_file

SHAPES = [(3, 4), (7,), (1,), (2, 5)]
GRAD_SCALE = [1.0, 1e-7, 1.0, 1.0]
STEPS = 3

# case: (kind, hyper-parameters as the torch constructor takes them)
OPTIMIZERS = {
    "sgd": ("sgd", {"lr": 0.1}),
    "sgd_momentum": ("sgd", {"lr": 0.1, "momentum": 0.9, "dampening": 0.25}),
    "sgd_nesterov_wd": (
        "sgd",
        {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.01},
    ),
    "sgd_momentum_wd": ("sgd", {"lr": 0.2, "momentum": 0.5, "weight_decay": 0.3}),
    "adam": ("adam", {"lr": 0.01}),
    "adam_wd": (
        "adam",
        {"lr": 0.02, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1},
    ),
}
# The gradients' total norm is about 5.1: the first max_norm clips, the second does not.
CLIP_NORM = {"clips": 1.0, "no_clip": 100.0}
CLIP_VALUE = 0.5

OUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "optim.safetensors"
)


def main():
    torch.manual_seed(7)
    params32 = [torch.randn(s, dtype=torch.float32) for s in SHAPES]
    grads32 = [
        [(torch.randn(s, dtype=torch.float32) * k).float() for s, k in zip(SHAPES, GRAD_SCALE)]
        for _ in range(STEPS)
    ]
    tensors = {}
    for j, p in enumerate(params32):
        tensors[f"param.{j}"] = p
    for s, gs in enumerate(grads32):
        for j, g in enumerate(gs):
            tensors[f"grad.{s}.{j}"] = g

    meta_opt = {}
    for case, (kind, hp) in OPTIMIZERS.items():
        params = [p.double().clone().requires_grad_(True) for p in params32]
        if kind == "sgd":
            opt = torch.optim.SGD(params, foreach=False, **hp)
        else:
            opt = torch.optim.Adam(params, foreach=False, **hp)
        for s in range(STEPS):
            for p, g in zip(params, grads32[s]):
                p.grad = g.double()
            opt.step()
            for j, p in enumerate(params):
                tensors[f"{case}.step{s}.param.{j}"] = p.detach().clone()
        for j, p in enumerate(params):
            st = opt.state[p]
            if kind == "sgd" and hp.get("momentum", 0.0) != 0.0:
                tensors[f"{case}.momentum_buffer.{j}"] = st["momentum_buffer"].clone()
            if kind == "adam":
                tensors[f"{case}.exp_avg.{j}"] = st["exp_avg"].clone()
                tensors[f"{case}.exp_avg_sq.{j}"] = st["exp_avg_sq"].clone()
        full = {
            "lr": 0.0,
            "momentum": 0.0,
            "dampening": 0.0,
            "weight_decay": 0.0,
            "nesterov": False,
        }
        if kind == "adam":
            full = {"lr": 0.0, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0}
        full.update({k: list(v) if isinstance(v, tuple) else v for k, v in hp.items()})
        meta_opt[case] = {"kind": kind, **full}

    def fresh_grads():
        params = [p.double().clone().requires_grad_(True) for p in params32]
        for p, g in zip(params, grads32[0]):
            p.grad = g.double()
        return params

    for name, max_norm in CLIP_NORM.items():
        params = fresh_grads()
        total = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=False)
        tensors[f"clip_norm_{name}.total_norm"] = total.detach().reshape(1).clone()
        for j, p in enumerate(params):
            tensors[f"clip_norm_{name}.grad.{j}"] = p.grad.clone()
    params = fresh_grads()
    torch.nn.utils.clip_grad_value_(params, CLIP_VALUE, foreach=False)
    for j, p in enumerate(params):
        tensors[f"clip_value.grad.{j}"] = p.grad.clone()

    metadata = {
        "shapes": json.dumps([list(s) for s in SHAPES]),
        "steps": str(STEPS),
        "optimizers": json.dumps(meta_opt),
        "clip_norm": json.dumps(CLIP_NORM),
        "clip_value": repr(CLIP_VALUE),
        "torch_version": torch.__version__,
    }
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    save_file(tensors, OUT, metadata=metadata)
    print(f"wrote {os.path.normpath(OUT)}: {len(tensors)} tensors, {os.path.getsize(OUT)} bytes")
    for name in CLIP_NORM:
        print(f"  clip_norm_{name}: total norm {tensors[f'clip_norm_{name}.total_norm'].item():.6f}")


if __name__ == "__main__":
    main()
