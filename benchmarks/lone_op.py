"""XLA:CPU runs a fusion of one elementwise op at about half the speed of a fusion of two.

The running maximum of the conventions that take it over the raw second moment
(``pytorch``, ``keras``, ``paper``) was such a loop, ``max(nu_max, nu)``, where
``optax.amsgrad``'s is ``max(nu_max, nu / c2)``. This times, interleaved in a
shuffled order, medians of the fastest of three calls, one donated jitted call
each of

* ``max(a, b)`` and ``a + b``: XLA makes each a lone-op ("wrapped") fusion;
* ``max(a, b * one)`` with ``one`` an exact 1 behind an optimization barrier
  (what ``scale_by_amsgrad`` now computes; bit for bit ``max(a, b)``);
* ``max(a, b * s)`` and ``a * b * s`` with a traced scalar ``s``: two-op fusions.

  python benchmarks/lone_op.py [--sizes 16 18 20 22] [--repeats 41]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import time

import jax
import jax.numpy as jnp
import numpy as np


def _one():
  return jax.lax.optimization_barrier(jnp.ones([], jnp.float32))


OPS = {
  "max(a, b)": lambda a, b, s: jnp.maximum(a, b),
  "max(a, b * one)": lambda a, b, s: jnp.maximum(a, b * _one()),
  "max(a, b * s)": lambda a, b, s: jnp.maximum(a, b * s),
  "a + b": lambda a, b, s: a + b,
  "a * b * s": lambda a, b, s: a * b * s,
}


def fusions(fn, a, b, s) -> str:
  """The kinds of the compiled program's top-level fusions."""
  text = jax.jit(fn).lower(a, b, s).compile().as_text()
  entry = next(x for x in re.split(r"\n(?=\S)", text) if x.startswith("ENTRY"))
  return ", ".join(re.findall(r"%(\w+?)(?:\.\d+)? = \S+ fusion\(", entry))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--sizes", type=int, nargs="+", default=[16, 18, 20, 22])
  parser.add_argument("--repeats", type=int, default=41)
  args = parser.parse_args()
  print(f"jax {jax.__version__}; load average {os.getloadavg()[0]:.1f}")
  s = jnp.float32(0.5)
  small = jnp.ones(1024)
  print("| op | XLA:CPU fusion |")
  print("| --- | --- |")
  for name, fn in OPS.items():
    print(f"| `{name}` | {fusions(fn, small, small, s)} |")
  print("\n| elements | " + " | ".join(f"`{k}` µs" for k in OPS) + " |")
  print("| ---: |" + " ---: |" * len(OPS))
  for log2 in args.sizes:
    n = 2**log2
    b = jnp.full(n, 2.0)
    fns = {k: jax.jit(f, donate_argnums=0) for k, f in OPS.items()}
    held = {k: jnp.ones(n) for k in OPS}

    def run(k, fns=fns, held=held, b=b):
      start = time.perf_counter()
      held[k] = fns[k](held[k], b, s)
      held[k].block_until_ready()
      return time.perf_counter() - start

    for k in OPS:
      for _ in range(5):
        run(k)
    times = {k: [] for k in OPS}
    for _ in range(args.repeats):
      names = list(OPS)
      random.shuffle(names)
      for k in names:
        times[k].append(min(run(k) for _ in range(3)))
    row = " | ".join(f"{1e6 * np.median(v):.1f}" for v in times.values())
    print(f"| 2^{log2} | {row} |")


if __name__ == "__main__":
  main()
