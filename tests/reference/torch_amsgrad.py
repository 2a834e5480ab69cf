"""PyTorch AMSGrad trajectories: the reference that the "pytorch" convention must match.

``record`` runs ``torch.optim.Adam/AdamW(amsgrad=True)`` over gradients fixed in advance (so
the same sequence can be replayed through any implementation) and returns the params after
every step and the final optimizer state. The golden file in ``tests/data`` was written by
running this module as a script with torch 2.13.0 (CPU):

    python -m tests.reference.torch_amsgrad

and the parity tests replay it; when torch is importable they also call ``record`` live.
"""

from __future__ import annotations

import math
import pathlib

import numpy as np

GOLDEN = pathlib.Path(__file__).resolve().parent.parent / "data" / "torch_amsgrad_golden.npz"
SHAPES = {"w": (3, 4), "b": (7,), "k": (2, 3, 2), "s": ()}
STEPS = 250

# name -> (torch class, kwargs, schedule) ; schedule: None or "inverse_sqrt"
CASES = {
  "adam_default": ("Adam", dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8), None),
  "adam_paper_lr": ("Adam", dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8), None),
  "adam_b1_zero": ("Adam", dict(lr=3e-3, betas=(0.0, 0.9), eps=1e-6), None),
  "adam_coupled_wd": ("Adam", dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1), None),
  "adamw_decoupled_wd": (
    "AdamW",
    dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05),
    None,
  ),
  "adamw_inverse_sqrt": (
    "AdamW",
    dict(lr=5e-2, betas=(0.8, 0.99), eps=1e-7, weight_decay=0.01),
    "inverse_sqrt",
  ),
}


def make_problem(seed: int = 0):
  """Returns (initial params, gradients[step]) as dicts of float32 arrays.

  The gradients span five orders of magnitude across leaves, change sign, stay exactly zero
  for a while on some coordinates (the update must be zero there), and carry rare spikes so
  that the running max holds a past value while nu decays below it.
  """
  rng = np.random.default_rng(seed)
  params, grads = {}, {}
  for i, (name, shape) in enumerate(SHAPES.items()):
    params[name] = rng.normal(size=shape).astype(np.float32)
    scale = 10.0 ** rng.uniform(-3, 2, size=shape)
    g = rng.normal(size=(STEPS, *shape)) * scale
    spikes = rng.random(size=(STEPS, *shape)) < 0.02
    g = np.where(spikes, g * 50.0, g)
    if shape:
      silent = rng.random(size=shape) < 0.25
      g[: 40 + 10 * i] = np.where(silent, 0.0, g[: 40 + 10 * i])
    grads[name] = g.astype(np.float32)
  return params, grads


def record(case: str, params0=None, grads=None):
  """Runs one case in PyTorch; returns (params per step, final state) as NumPy dicts."""
  import torch

  if params0 is None:
    params0, grads = make_problem()
  cls_name, kwargs, schedule = CASES[case]
  tensors = {
    k: torch.tensor(v, dtype=torch.float32, requires_grad=True) for k, v in params0.items()
  }
  opt = getattr(torch.optim, cls_name)(list(tensors.values()), amsgrad=True, **kwargs)
  sched = None
  if schedule == "inverse_sqrt":
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / math.sqrt(step + 1.0))
  trajectory = {k: np.empty((STEPS, *v.shape), np.float32) for k, v in params0.items()}
  for t in range(STEPS):
    for k, p in tensors.items():
      p.grad = torch.tensor(grads[k][t])
    opt.step()
    if sched is not None:
      sched.step()
    for k, p in tensors.items():
      trajectory[k][t] = p.detach().numpy()
  state = {}
  for k, p in tensors.items():
    st = opt.state[p]
    state[f"{k}/mu"] = st["exp_avg"].numpy().copy()
    state[f"{k}/nu"] = st["exp_avg_sq"].numpy().copy()
    state[f"{k}/nu_max"] = st["max_exp_avg_sq"].numpy().copy()
  return trajectory, state


def main() -> None:
  import torch

  arrays = {"torch_version": np.array(torch.__version__)}
  for case in CASES:
    trajectory, state = record(case)
    for k, v in trajectory.items():
      arrays[f"{case}/params/{k}"] = v
    for k, v in state.items():
      arrays[f"{case}/state/{k}"] = v
  GOLDEN.parent.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(GOLDEN, **arrays)
  print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes) with torch {torch.__version__}")


if __name__ == "__main__":
  main()
