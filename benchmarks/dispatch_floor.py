"""The dispatch floor of a donated step on the model-like tree, and what it depends on.

Jitted calls over the 196 params of ``update_step.model_like()``, each timed right after
another case ran, and after each of: a 10 ms sleep, a 10 ms busy wait of the calling thread, a
128 MB NumPy copy (which evicts the caches, as the other implementations do between two runs
of one in ``update_step.py``'s interleaved rounds):

* "identity": returns params and state as they came (no loop at all): what JAX and XLA take
  to pass 980 buffers in (params, ``amsgrad``'s per-leaf state, gradients) and 784 out;
* "identity, flat state": the same with ``optax.flatten``'s state (``fused_amsgrad(...,
  flatten=True)``'s), 395 buffers in and 200 out;
* "p + 0": adds 0 to each param (196 loops), the per-leaf state passed through;
* "flat state, nothing out": the flat-state call's 396 buffers in, nothing donated, one
  scalar out: what the inputs cost alone;
* "flat state, params out": the same with the params donated and returned (196 out): the
  difference from the row above is what the outputs cost.

The cases run in a new random order each repeat.

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
  nothing_out = jax.jit(lambda p, s, g: jax.numpy.zeros(()))
  params_out = jax.jit(lambda p, s, g: p, donate_argnums=(0,))
  cases = {}
  for label, tx, fn in (
    ("identity", per_leaf, identity),
    ("identity, flat state", flat, identity),
    ("p + 0", per_leaf, add0),
    ("flat state, nothing out", flat, nothing_out),
    ("flat state, params out", flat, params_out),
  ):
    p = jax.device_put(params)
    cases[label] = (fn, [p, tx.init(p)])

  def run(label) -> float:
    fn, held = cases[label]
    start = time.perf_counter()
    out = fn(held[0], held[1], g)
    jax.block_until_ready(out)
    elapsed = time.perf_counter() - start
    if isinstance(out, tuple):
      held[0], held[1] = out
    elif out is not None and jax.tree.structure(out) == jax.tree.structure(held[0]):
      held[0] = out
    return elapsed

  def busy():
    end = time.perf_counter() + 0.01
    while time.perf_counter() < end:
      pass

  big = np.ones(1 << 25, np.float32)
  out = np.empty_like(big)
  gaps = {
    "no gap (after another case)": lambda: None,
    "after a 10 ms sleep": lambda: time.sleep(0.01),
    "after a 10 ms busy wait": busy,
    "after a 128 MB NumPy copy": lambda: np.multiply(big, 2, out=out),
  }
  for label in cases:
    for _ in range(3):
      run(label)
  order = np.random.default_rng(0)
  buffers = {k: len(jax.tree.leaves((held, g))) for k, (_, held) in cases.items()}
  print(f"jax {jax.__version__}; load average {os.getloadavg()[0]:.1f}; buffers in: {buffers}")
  print("| between steps | " + " | ".join(f"{k}, median ms" for k in cases) + " |")
  print("| --- |" + " ---: |" * len(cases))
  for gap_label, gap in gaps.items():
    times = {k: [] for k in cases}
    labels = list(cases)
    for _ in range(args.repeats):
      for i in order.permutation(len(labels)):
        gap()
        times[labels[i]].append(run(labels[i]))
    print(
      f"| {gap_label} | " + " | ".join(f"{1e3 * np.median(v):.2f}" for v in times.values()) + " |"
    )


if __name__ == "__main__":
  main()
