"""bitsandbytes' 8-bit Adam beside torch Adam and AMSGrad on the digits MLP: memory and quality.

A side-by-side anchor for ``state_bits=8`` (``benchmarks/quantized_state.py``), in torch
alone (no jax): the 64-256-256-10 ReLU MLP on scikit-learn's digits, with the split of
``examples/_digits.py`` (stratified, a quarter held out, ``random_state=0``) and its
batches (``batch_indices``: a fresh ``np.random.default_rng(seed)`` permutation per
epoch, concatenated and cut), reproduced here with numpy, so each seed sees the batches
that ``quantized_state.py`` uses. Weights start He-normal, biases at zero, as there (drawn
by torch, so not the same numbers). Every optimizer gets the quality table's
hyperparameters: lr 0.02/sqrt(t) (``LambdaLR``), betas (0.9, 0.99), eps 1e-8, batch 128,
1000 steps, 3 seeds; final train loss on the whole train set, test accuracy.

Optimizers: ``torch.optim.Adam`` (float32), ``torch.optim.Adam(amsgrad=True)`` (float32),
``bitsandbytes.optim.Adam8bit`` (block-wise 8-bit, blocks of 256; tensors under
``min_8bit_size``, 4096 by default, stay in float32, so this MLP's (256, 10) kernel and its
biases do) and ``Adam8bit(min_8bit_size=0)`` (every tensor in 8 bits). State bytes per
parameter: the bytes of every tensor in ``optimizer.state`` after training, each storage
counted once (bitsandbytes' two 256-entry code maps are one tensor each, shared by every
param), and, in brackets, counted per param as ``optimizer.state`` lists them.
bitsandbytes has no 8-bit AMSGrad: ``Adam8bit(amsgrad=True)`` raises, which the script
prints.

bitsandbytes is not a dependency of amsgrad-optax; run this in a venv of its own:

  python3 -m venv /work/bnbvenv
  /work/bnbvenv/bin/pip install --no-deps /opt/wheels/torch-2.13.0+cpu-*.whl  # or torch's CPU index
  /work/bnbvenv/bin/pip install torch==2.13.0 numpy scikit-learn packaging
  /work/bnbvenv/bin/pip install --no-deps bitsandbytes==0.50.2
  /work/bnbvenv/bin/python benchmarks/bnb_anchor.py           # about 30 s on 2 CPU cores

(bitsandbytes 0.50.2 prints a warning about the optional ``kernels`` package at import;
its CPU backend runs the 8-bit optimizers without it.)
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time

import bitsandbytes as bnb
import numpy as np
import torch
from sklearn import datasets, model_selection

SIZES = (64, 256, 256, 10)
LR, BETAS, EPS, BATCH = 0.02, (0.9, 0.99), 1e-8, 128


def load_digits():
  """Returns (x_train, y_train, x_test, y_test) as ``examples/_digits.load_digits`` splits them."""
  x, y = datasets.load_digits(return_X_y=True)
  x = (x / 16.0).astype(np.float32)
  y = y.astype(np.int64)
  x_tr, x_te, y_tr, y_te = model_selection.train_test_split(
    x, y, test_size=0.25, random_state=0, stratify=y
  )
  return tuple(torch.from_numpy(a) for a in (x_tr, y_tr, x_te, y_te))


def batch_indices(n: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
  """Returns the (steps, batch_size) indices of ``examples/_digits.batch_indices``."""
  rng = np.random.default_rng(seed)
  epochs = -(-steps * batch_size // n)
  order = np.concatenate([rng.permutation(n) for _ in range(epochs)])
  return order[: steps * batch_size].reshape(steps, batch_size)


def mlp(seed: int) -> torch.nn.Sequential:
  """Returns the 64-256-256-10 ReLU MLP, He-normal weights and zero biases."""
  gen = torch.Generator().manual_seed(seed)
  layers = []
  for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:], strict=True)):
    lin = torch.nn.Linear(a, b)
    with torch.no_grad():
      lin.weight.copy_(torch.randn(b, a, generator=gen) * math.sqrt(2.0 / a))
      lin.bias.zero_()
    layers.append(lin)
    if i < len(SIZES) - 2:
      layers.append(torch.nn.ReLU())
  return torch.nn.Sequential(*layers)


OPTIMIZERS = {
  "torch Adam, float32": lambda ps: torch.optim.Adam(ps, lr=LR, betas=BETAS, eps=EPS),
  "torch Adam(amsgrad=True), float32": lambda ps: torch.optim.Adam(
    ps, lr=LR, betas=BETAS, eps=EPS, amsgrad=True
  ),
  "bnb Adam8bit": lambda ps: bnb.optim.Adam8bit(ps, lr=LR, betas=BETAS, eps=EPS),
  "bnb Adam8bit, min_8bit_size=0": lambda ps: bnb.optim.Adam8bit(
    ps, lr=LR, betas=BETAS, eps=EPS, min_8bit_size=0
  ),
}


def state_bytes(opt: torch.optim.Optimizer, n_params: int) -> tuple[float, float]:
  """Returns state bytes per parameter: each storage once, and summed per param."""
  unique, listed = {}, 0
  for st in opt.state.values():
    for v in st.values():
      if torch.is_tensor(v):
        nbytes = v.numel() * v.element_size()
        listed += nbytes
        unique[v.untyped_storage().data_ptr(), v.numel(), v.dtype] = nbytes
  return sum(unique.values()) / n_params, listed / n_params


def train(make, seed: int, steps: int, data) -> tuple[float, float, float, float]:
  """Returns (train loss, test accuracy, B/param unique, B/param listed) of one run."""
  x_tr, y_tr, x_te, y_te = data
  model = mlp(seed)
  opt = make(model.parameters())
  sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0 / math.sqrt(k + 1))
  xent = torch.nn.CrossEntropyLoss()
  for idx in torch.from_numpy(batch_indices(len(y_tr), BATCH, steps, seed)):
    opt.zero_grad(set_to_none=True)
    xent(model(x_tr[idx]), y_tr[idx]).backward()
    opt.step()
    sched.step()
  with torch.no_grad():
    loss = float(xent(model(x_tr), y_tr))
    acc = float((model(x_te).argmax(-1) == y_te).float().mean())
  n = sum(p.numel() for p in model.parameters())
  return loss, acc, *state_bytes(opt, n)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=1000)
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
  args = parser.parse_args()
  torch.set_num_threads(args.threads)
  load = os.getloadavg()
  print(
    f"torch {torch.__version__}, bitsandbytes {bnb.__version__}, python "
    f"{platform.python_version()}, {args.threads} thread(s); load average "
    f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs"
  )
  try:
    bnb.optim.Adam8bit(mlp(0).parameters(), amsgrad=True)
    print("bnb Adam8bit(amsgrad=True): accepted")
  except ValueError as e:
    print(f"bnb Adam8bit(amsgrad=True): ValueError: {e}")
  data = load_digits()
  print(
    f"\nDigits MLP {'-'.join(map(str, SIZES))}, lr {LR}/sqrt(t), betas {BETAS}, eps {EPS}, "
    f"batch {BATCH}, {args.steps} steps"
  )
  print("| optimizer | seed | final train loss | test accuracy | seconds |")
  print("| --- | ---: | ---: | ---: | ---: |")
  summary = {}
  for name, make in OPTIMIZERS.items():
    rows = []
    for seed in args.seeds:
      start = time.perf_counter()
      rows.append(train(make, seed, args.steps, data))
      secs = time.perf_counter() - start
      print(f"| {name} | {seed} | {rows[-1][0]:.3e} | {rows[-1][1]:.4f} | {secs:.1f} |", flush=True)
    summary[name] = np.array(rows)
  print(
    "\n| optimizer | state B/param (per param as listed) | train loss mean ± sd | "
    "test acc mean ± sd |"
  )
  print("| --- | ---: | ---: | ---: |")
  for name, rows in summary.items():
    loss, acc, unique, listed = rows.T
    print(
      f"| {name} | {unique[0]:.3f} ({listed[0]:.3f}) | {loss.mean():.3e} ± "
      f"{loss.std(ddof=1):.1e} | {acc.mean():.4f} ± {acc.std(ddof=1):.4f} |"
    )
  load = os.getloadavg()
  print(f"\nload average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")


if __name__ == "__main__":
  main()
