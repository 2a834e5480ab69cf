"""The dispatch floor of a donated step on the model-like tree, and what it depends on.

A jitted, donated step that only adds 0 to the 196 params of ``update_step.model_like()``
(its state passed through untouched) is timed back to back, and after each of: a 10 ms
sleep, a 10 ms busy wait of the calling thread, a 128 MB NumPy copy. The gaps let XLA's
worker threads fall asleep (and the copy evicts the caches), which is what the interleaved
rounds of ``update_step.py`` do between two runs of one implementation.

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

import amsgrad_optax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import update_step  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--repeats", type=int, default=21)
  args = parser.parse_args()
  params, grads = update_step.make_tree(update_step.model_like())
  tx = amsgrad_optax.amsgrad(1e-3)
  p, g = jax.device_put(params), jax.device_put(grads)
  held = [p, tx.init(p)]
  floor = jax.jit(lambda p, s, g: (jax.tree.map(lambda x: x + 0, p), s), donate_argnums=(0, 1))

  def run() -> float:
    start = time.perf_counter()
    held[0], held[1] = floor(held[0], held[1], g)
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
  for _ in range(3):
    run()
  n_buffers = len(jax.tree.leaves((held, g)))
  print(f"jax {jax.__version__}; load average {os.getloadavg()[0]:.1f}; {n_buffers} buffers")
  print("| between steps | median ms |")
  print("| --- | ---: |")
  for label, gap in gaps.items():
    times = []
    for _ in range(args.repeats):
      gap()
      times.append(run())
    print(f"| {label} | {1e3 * np.median(times):.2f} |")


if __name__ == "__main__":
  main()
