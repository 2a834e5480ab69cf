"""The dispatch floor of a donated step on the model-like tree, and what it depends on.

Three donated, jitted steps over the 196 params of ``update_step.model_like()``, each timed
back to back, and after each of: a 10 ms sleep, a 10 ms busy wait of the calling thread, a
128 MB NumPy copy (which evicts the caches, as the other implementations do between two runs
of one in ``update_step.py``'s interleaved rounds):

* "identity": returns params and state as they came (no loop at all): what JAX and XLA take
  to pass 980 buffers in (params, ``amsgrad``'s per-leaf state, gradients) and 784 out;
* "identity, flat state": the same with ``optax.flatten``'s state (``fused_amsgrad(...,
  flatten=True)``'s), 395 buffers in and 200 out;
* "p + 0": adds 0 to each param (196 loops), the per-leaf state passed through.

  PYTHONPATH=. python benchmarks/dispatch_floor.py [--repeats 21]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import jax
import numpy as np
import optax

import amsgrad_optax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import update_step  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--repeats", type=int, default=21)
  args = parser.parse_args()
  params, grads = update_step.make_tree(update_step.model_like())
  g = jax.device_put(grads)
  per_leaf = amsgrad_optax.amsgrad(1e-3)
  flat = optax.flatten(amsgrad_optax.amsgrad(1e-3))
  identity = jax.jit(lambda p, s, g: (p, s), donate_argnums=(0, 1))
  add0 = jax.jit(lambda p, s, g: (jax.tree.map(lambda x: x + 0, p), s), donate_argnums=(0, 1))
  cases = {}
  for label, tx, fn in (
    ("identity", per_leaf, identity),
    ("identity, flat state", flat, identity),
    ("p + 0", per_leaf, add0),
  ):
    p = jax.device_put(params)
    cases[label] = (fn, [p, tx.init(p)])

  def run(label) -> float:
    fn, held = cases[label]
    start = time.perf_counter()
    held[0], held[1] = fn(held[0], held[1], g)
    jax.block_until_ready(held)
    return time.perf_counter() - start

  def busy():
    end = time.perf_counter() + 0.01
    while time.perf_counter() < end:
      pass

  big = np.ones(1 << 25, np.float32)
  out = np.empty_like(big)
  gaps = {
    "back to back": lambda: None,
    "after a 10 ms sleep": lambda: time.sleep(0.01),
    "after a 10 ms busy wait": busy,
    "after a 128 MB NumPy copy": lambda: np.multiply(big, 2, out=out),
  }
  for label in cases:
    for _ in range(3):
      run(label)
  buffers = {k: len(jax.tree.leaves((held, g))) for k, (_, held) in cases.items()}
  print(f"jax {jax.__version__}; load average {os.getloadavg()[0]:.1f}; buffers in: {buffers}")
  print("| between steps | " + " | ".join(f"{k}, median ms" for k in cases) + " |")
  print("| --- |" + " ---: |" * len(cases))
  for gap_label, gap in gaps.items():
    times = {k: [] for k in cases}
    for _ in range(args.repeats):
      for label in cases:
        gap()
        times[label].append(run(label))
    print(
      f"| {gap_label} | " + " | ".join(f"{1e3 * np.median(v):.2f}" for v in times.values()) + " |"
    )


if __name__ == "__main__":
  main()
