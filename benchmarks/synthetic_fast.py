"""The fast engine against a plain optax scan: one long run, and a vmapped grid of configs.

Runs, in one process, on the online problem (f_t = 1010 x once every 101
steps, else -10 x, on [-1, 1]):

* one run of 10^7 steps (by default): ``optax.amsgrad`` and ``optax.adam``
  written plainly as one ``lax.scan`` (a naive float32 regret sum: the least
  work a scan can do), against ``synthetic.run`` with ``engine="scan"`` and
  ``engine="fast"`` (the blocked, time-parallel engine);
* a grid of 1,024 (b1, b2) configs x 10^6 steps (by default): the plain scan
  over ``optax.amsgrad`` under ``jax.vmap``, against the fast engine under
  the batched fast engine (the configs share its rows), both jitted on one
  device.

Every timing excludes compilation; the table shows medians over the repeats
(and the fastest), interleaved so that a load on the machine hits every row
alike; ratios are of medians. ``x_final`` shows that the rows ran the same
problem (the grid rows show the largest difference from the plain vmap, for
the row in optax's convention, whose arithmetic it shares).

    python benchmarks/synthetic_fast.py [--steps 1e7] [--repeats 7]
        [--grid-steps 1e6] [--grid-configs 1024] [--grid-repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from synthetic_scan import plain_online as _plain  # noqa: E402  (the same baseline)

from amsgrad_optax import synthetic  # noqa: E402
from amsgrad_optax.synthetic import _fast  # noqa: E402

LR, B1, B2, EPS = 1e-2, 0.9, 0.99, 1e-8


def _fast_batch(name: str, convention: str, steps: int):
  """Returns ``hp -> (x, regret)``: the fast engine over a batch of (b1, b2) configs."""
  problem = synthetic.online()

  def run(hp):
    spec = _fast.OptimizerSpec(name, LR, hp["b1"], hp["b2"], EPS, convention)
    keys = jax.vmap(jax.random.key)(jnp.zeros(hp["b1"].shape, jnp.int32))
    x, total, _ = _fast.simulate_batch(problem, spec, steps, keys)
    return x, total

  return run


def _timed(fn, args):
  compiled = jax.jit(fn).lower(args).compile()

  def call():
    t0 = time.perf_counter()
    x, _ = jax.block_until_ready(compiled(args))
    return time.perf_counter() - t0, np.asarray(x)

  call()  # warm-up
  return call


def _ours(tx, steps: int, engine: str):
  problem = synthetic.online()
  synthetic.run(problem, tx, steps, engine=engine)  # compile

  def call():
    r = synthetic.run(problem, tx, steps, engine=engine)
    return r.seconds, np.asarray(r.x_final)

  return call


def _table(title: str, rows, repeats: int, peer: dict[str, str], per: int, unit: str):
  times: dict[str, list[float]] = {k: [] for k in rows}
  finals: dict[str, np.ndarray] = {}
  for _ in range(repeats):
    for name, call in rows.items():
      seconds, x = call()
      times[name].append(seconds)
      finals[name] = x
  med = {k: statistics.median(v) for k, v in times.items()}
  print(title)
  header = f"{'run':40s} {'seconds':>8s} {unit:>9s} {'min s':>7s} {'x_final':>9s}  ratio"
  print(header)
  print("-" * len(header))
  for name in rows:
    ratio = ""
    x = finals[name]
    shown = f"{float(x.ravel()[0]):+9.4f}"
    if name in peer:
      ratio = f"{med[name] / med[peer[name]]:.2f}x {peer[name]}"
      if x.size > 1:
        # Against the peer only where both run the same arithmetic (optax's convention).
        same = "optax conv." in name
        shown = f"{float(np.max(np.abs(x - finals[peer[name]]))):9.1e}" if same else f"{'-':>9s}"
    ns = med[name] / per * 1e9
    print(f"{name:40s} {med[name]:8.3f} {ns:9.2f} {min(times[name]):7.3f} {shown}  {ratio}")
  print()


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--steps", type=float, default=1e7)
  p.add_argument("--repeats", type=int, default=7)
  p.add_argument("--grid-steps", type=float, default=1e6)
  p.add_argument("--grid-configs", type=int, default=1024)
  p.add_argument("--grid-repeats", type=int, default=3)
  args = p.parse_args(argv)
  steps, grid_steps = int(args.steps), int(args.grid_steps)
  print(
    f"jax {jax.__version__}, {jax.devices()[0].platform}, {os.cpu_count()} CPU cores "
    f"(shared with other jobs: medians of interleaved repeats)\n"
  )

  one = {"b1": jnp.float32(B1), "b2": jnp.float32(B2)}
  rows = {
    "plain scan: optax.amsgrad": _timed(
      _plain(lambda hp: optax.amsgrad(LR, hp["b1"], hp["b2"], EPS), steps), one
    ),
    "plain scan: optax.adam": _timed(
      _plain(lambda hp: optax.adam(LR, hp["b1"], hp["b2"], EPS), steps), one
    ),
    "run scan: amsgrad (optax conv.)": _ours(
      synthetic.make_optimizer("amsgrad", LR, B1, B2, EPS, convention="optax"), steps, "scan"
    ),
    "run fast: amsgrad (optax conv.)": _ours(
      synthetic.make_optimizer("amsgrad", LR, B1, B2, EPS, convention="optax"), steps, "fast"
    ),
    "run fast: amsgrad (pytorch conv.)": _ours(
      synthetic.make_optimizer("amsgrad", LR, B1, B2, EPS), steps, "fast"
    ),
    "run fast: adam": _ours(synthetic.make_optimizer("adam", LR, B1, B2, EPS), steps, "fast"),
  }
  peer = {
    "run scan: amsgrad (optax conv.)": "plain scan: optax.amsgrad",
    "run fast: amsgrad (optax conv.)": "plain scan: optax.amsgrad",
    "run fast: amsgrad (pytorch conv.)": "plain scan: optax.amsgrad",
    "run fast: adam": "plain scan: optax.adam",
  }
  _table(f"One run, {steps:,} steps", rows, args.repeats, peer, steps, "ns/step")

  n = args.grid_configs
  n_b1 = max(1, int(round(np.sqrt(n))))
  b1s = np.linspace(0.0, 0.99, n_b1)
  b2s = np.linspace(0.9, 0.9999, max(1, n // n_b1))
  b1g, b2g = (a.ravel().astype(np.float32) for a in np.meshgrid(b1s, b2s, indexing="ij"))
  grid = {"b1": jnp.asarray(b1g), "b2": jnp.asarray(b2g)}
  k = b1g.size
  plain = _plain(lambda hp: optax.amsgrad(LR, hp["b1"], hp["b2"], EPS), grid_steps)
  rows = {
    "plain vmap: optax.amsgrad": _timed(jax.vmap(plain), grid),
    "fast batch: amsgrad (optax conv.)": _timed(_fast_batch("amsgrad", "optax", grid_steps), grid),
    "fast batch: amsgrad (pytorch conv.)": _timed(
      _fast_batch("amsgrad", "pytorch", grid_steps), grid
    ),
  }
  peer = {
    "fast batch: amsgrad (optax conv.)": "plain vmap: optax.amsgrad",
    "fast batch: amsgrad (pytorch conv.)": "plain vmap: optax.amsgrad",
  }
  _table(
    f"Grid of {k:,} (b1, b2) configs x {grid_steps:,} steps, one device "
    f"(x_final column: the largest |difference| from the plain vmap, same convention)",
    rows,
    args.grid_repeats,
    peer,
    k * grid_steps,
    "ns/cfg-st",
  )


if __name__ == "__main__":
  main()
