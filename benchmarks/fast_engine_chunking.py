"""What splitting the fast engine's run into host calls costs: one compiled call against run().

``synthetic.run`` runs the fast engine as several compiled calls of about
0.1 s each (``_fast.advance_batch`` over a range of chunks), so that the
progress bar moves and Ctrl-C takes effect between calls. This times, for
Adam and AMSGrad on the online problem, that against the whole run as one
compiled call (``_fast.simulate``), alternating the two ``--repeats`` times,
and checks that both give the same result bit for bit.

Run (a few seconds on 2 CPU cores):

  PYTHONPATH=. python benchmarks/fast_engine_chunking.py [--steps 1e7] [--repeats 31]

Prints the minimum and median wall time and CPU time (all threads) of each,
and the overhead of the split run. On a shared machine the minimum is the
figure to trust.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from amsgrad_optax import synthetic
from amsgrad_optax.synthetic import _fast, _runner


def main() -> None:
  p = argparse.ArgumentParser(
    description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
  )
  p.add_argument("--steps", type=float, default=1e7, help="steps of each run")
  p.add_argument("--repeats", type=int, default=31, help="timed repeats of each")
  args = p.parse_args()
  steps = int(args.steps)
  problem = synthetic.online()
  key = jax.random.key(0)
  print(f"{steps:,} steps, {args.repeats} repeats, {jax.devices()[0].platform}")
  print(f"{'optimizer':10s} {'clock':5s} {'one call ms':>16s} {'split ms':>16s} {'overhead':>9s}")
  for name in ("adam", "amsgrad"):
    spec = synthetic.make_optimizer(name).spec
    hp = {
      n: jnp.asarray(getattr(spec, n), jnp.float32) for n in ("learning_rate", "b1", "b2", "eps")
    }

    def whole(hp, key, name=name, spec=spec):
      s = _fast.OptimizerSpec(name, **hp, convention=spec.convention, lr_schedule=spec.lr_schedule)
      return _fast.simulate(problem, s, steps, key, jnp.float32)

    one = jax.jit(whole).lower(hp, key).compile()
    tx = synthetic.make_optimizer(name)
    jax.block_until_ready(one(hp, key))
    _runner.run(problem, tx, steps)  # compiles and caches
    times = {"one": ([], []), "split": ([], [])}
    for _ in range(args.repeats):
      c, t = time.process_time(), time.perf_counter()
      out = jax.block_until_ready(one(hp, key))
      times["one"][0].append(time.perf_counter() - t)
      times["one"][1].append(time.process_time() - c)
      c, t = time.process_time(), time.perf_counter()
      r = _runner.run(problem, tx, steps)
      times["split"][0].append(time.perf_counter() - t)
      times["split"][1].append(time.process_time() - c)
    if (float(out[0]), float(out[1]) + float(out[2])) != (r.x_final, r.regret):
      raise AssertionError(f"{name}: the split run differs from the one call")
    for i, clock in enumerate(("wall", "cpu")):
      a, b = times["one"][i], times["split"][i]
      cells = [f"{min(x) * 1e3:.1f} / {statistics.median(x) * 1e3:.1f}" for x in (a, b)]
      overhead = 100 * (min(b) / min(a) - 1)
      print(f"{name:10s} {clock:5s} {cells[0]:>16s} {cells[1]:>16s} {overhead:+8.1f}%")
  print("(min / median; overhead of the minima)")


if __name__ == "__main__":
  main()
