"""The synthetic experiment's speed: our runner against a plain optax scan and eager PyTorch.

Runs, in one process, 10^7 steps (by default) of the online problem
(f_t = 1010 x once every 101 steps, else -10 x, on [-1, 1]) with:

* ``amsgrad_optax.synthetic.run`` with ``engine="scan"`` (one compiled nested
  scan; the fast engine is ``benchmarks/synthetic_fast.py``'s; the regret kept
  as a double-word float32 sum), for AMSGrad in each of the four conventions
  and for ``optax.adam``, and once with the progress-bar chunking;
* the same problem written plainly as one ``lax.scan`` over ``optax.amsgrad``
  and ``optax.adam`` (a naive float32 regret sum: the least work possible);
* the reference's eager PyTorch loop (``torch.optim.Adam(amsgrad=True)``,
  ``.item()`` per step), on a short run scaled per step, when torch is
  importable.

Every timing excludes compilation; the table shows medians over the repeats
(and the fastest, least disturbed by other jobs), interleaved so that a load
on the machine hits every row alike; ratios are of medians.

    python benchmarks/synthetic_scan.py [--steps 10000000] [--repeats 7] [--torch-steps 2000]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import amsgrad_optax  # noqa: E402
from amsgrad_optax import get_convention, synthetic  # noqa: E402

LR, B1, B2, EPS = 1e-2, 0.9, 0.99, 1e-8


def plain_online(tx_of, steps: int):
  """Returns ``hp -> (x, regret)``: the online problem as one plain lax.scan over ``tx_of(hp)``.

  The baseline of both synthetic benchmarks: the least work a scan can do (a
  naive float32 regret sum), from x0 = 0.
  """

  def run(hp):
    tx = tx_of(hp)
    x0 = jnp.float32(0.0)

    def body(carry, _):
      x, state, t, regret = carry
      g = jnp.where(t % 101 == 1, jnp.float32(1010.0), jnp.float32(-10.0))
      regret = regret + g * (x + 1.0)
      updates, state = tx.update(g, state, x)
      x = jnp.clip(optax.apply_updates(x, updates), -1.0, 1.0)
      return (x, state, t + 1, regret), None

    carry = (x0, tx.init(x0), jnp.int32(0), jnp.float32(0.0))
    (x, _, _, regret), _ = jax.lax.scan(body, carry, None, length=steps)
    return x, regret

  return run


def plain_scan(tx: optax.GradientTransformation, steps: int):
  """Returns a timed call of :func:`plain_online` for one fixed ``tx``."""
  compiled = jax.jit(plain_online(lambda _: tx, steps)).lower({}).compile()

  def call():
    t0 = time.perf_counter()
    x, regret = compiled({})
    jax.block_until_ready((x, regret))
    return time.perf_counter() - t0, float(x)

  return call


def ours(tx: optax.GradientTransformation, steps: int, progress: bool = False):
  problem = synthetic.online()

  def call():
    # The bar (when on) draws into a buffer: its cost counts, not the terminal's.
    with contextlib.redirect_stderr(io.StringIO()):
      res = synthetic.run(problem, tx, steps, progress=progress, engine="scan")
    return res.seconds, res.x_final

  call()  # compiles once; the runner caches it for this tx
  return call


def torch_loop(steps: int):
  """Returns ``() -> (seconds, x)``: the reference's eager loop, as its code runs it."""
  import torch
  from torch import nn

  def call():
    x = nn.Parameter(torch.tensor([0.0]))
    x_star = torch.tensor([-1.0])
    opt = torch.optim.Adam([x], lr=LR, betas=(B1, B2), eps=EPS, amsgrad=True)

    def f(t, x_):
      return (1010 * x_).sum() if t % 101 == 1 else (-10 * x_).sum()

    total = 0.0
    t0 = time.perf_counter()
    for t in range(steps):
      regret = f(t, x) - f(t, x_star)
      total += regret.item()
      regret.backward()
      opt.step()
      opt.zero_grad()
      with torch.no_grad():
        x.clamp_(-1.0, 1.0)
    return time.perf_counter() - t0, x.detach().item()

  return call


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--steps", type=int, default=10_000_000)
  p.add_argument("--repeats", type=int, default=7)
  p.add_argument("--torch-steps", type=int, default=2000)
  args = p.parse_args(argv)
  steps = args.steps

  amsgrad_pt = synthetic.make_optimizer("amsgrad", LR, B1, B2, EPS, convention="pytorch")
  amsgrad_ox = synthetic.make_optimizer("amsgrad", LR, B1, B2, EPS, convention="optax")
  amsgrad_keras = synthetic.make_optimizer("amsgrad", LR, B1, B2, EPS, convention="keras")
  amsgrad_paper = synthetic.make_optimizer("amsgrad", LR, B1, B2, EPS, convention="paper")
  adam = synthetic.make_optimizer("adam", LR, B1, B2, EPS)
  # The pytorch convention with optax's float32 powers for 1 - b^t: what its
  # exact bias corrections cost (an ablation; not a convention the library offers).
  pt_f32_powers = dataclasses.replace(get_convention("pytorch"), exact_powers=False)
  ox_exact_powers = dataclasses.replace(get_convention("optax"), exact_powers=True)
  rows = {
    "plain scan: optax.amsgrad": plain_scan(optax.amsgrad(LR, B1, B2, EPS), steps),
    "plain scan: optax.amsgrad, again": plain_scan(optax.amsgrad(LR, B1, B2, EPS), steps),
    "plain scan: optax.adam": plain_scan(optax.adam(LR, B1, B2, EPS), steps),
    "ours: amsgrad (optax conv.)": ours(amsgrad_ox, steps),
    "ours: amsgrad (pytorch conv.)": ours(amsgrad_pt, steps),
    "ours: amsgrad (keras conv.)": ours(amsgrad_keras, steps),
    "ours: amsgrad (paper conv.)": ours(amsgrad_paper, steps),
    "ours: amsgrad (pytorch), progress chunks": ours(amsgrad_pt, steps, progress=True),
    "ours: optax.adam": ours(adam, steps),
    "plain scan: ours, pytorch conv.": plain_scan(amsgrad_pt, steps),
    "plain scan: ours, pytorch conv., f32 powers": plain_scan(
      amsgrad_optax.amsgrad(LR, B1, B2, EPS, convention=pt_f32_powers), steps
    ),
    # The same two ablations inside the runner, whose loop also carries the compensated sum.
    "ours: amsgrad (pytorch conv.), f32 powers": ours(
      amsgrad_optax.amsgrad(LR, B1, B2, EPS, convention=pt_f32_powers), steps
    ),
    "ours: amsgrad (optax conv.), exact powers": ours(
      amsgrad_optax.amsgrad(LR, B1, B2, EPS, convention=ox_exact_powers), steps
    ),
  }
  times: dict[str, list[float]] = {k: [] for k in rows}
  finals: dict[str, float] = {}
  names = list(rows)
  order = np.random.default_rng(0)
  for _ in range(args.repeats):
    # A new random order each repeat: in a fixed order the first run was up
    # to 1.5x slower on this machine, whichever it was.
    for i in order.permutation(len(names)):
      seconds, x = rows[names[i]]()
      times[names[i]].append(seconds)
      finals[names[i]] = x

  torch_ns = None
  try:
    import torch  # noqa: F401
  except ImportError:
    print("torch not importable: no eager PyTorch row", file=sys.stderr)
  else:
    call = torch_loop(args.torch_steps)
    call()  # warm-up
    torch_times = [call()[0] for _ in range(3)]
    torch_ns = statistics.median(torch_times) / args.torch_steps * 1e9

  peer = {
    "plain scan: optax.amsgrad, again": "plain scan: optax.amsgrad",
    "plain scan: ours, pytorch conv.": "plain scan: optax.amsgrad",
    "plain scan: ours, pytorch conv., f32 powers": "plain scan: ours, pytorch conv.",
    "ours: amsgrad (pytorch conv.), f32 powers": "ours: amsgrad (pytorch conv.)",
    "ours: amsgrad (optax conv.), exact powers": "ours: amsgrad (optax conv.)",
    "ours: amsgrad (optax conv.)": "plain scan: optax.amsgrad",
    "ours: amsgrad (pytorch conv.)": "plain scan: optax.amsgrad",
    "ours: amsgrad (keras conv.)": "plain scan: optax.amsgrad",
    "ours: amsgrad (paper conv.)": "plain scan: optax.amsgrad",
    "ours: amsgrad (pytorch), progress chunks": "ours: amsgrad (pytorch conv.)",
    "ours: optax.adam": "plain scan: optax.adam",
  }
  med = {k: statistics.median(v) for k, v in times.items()}
  best = {k: min(v) for k, v in times.items()}
  print(
    f"{steps:,} steps of the online problem; jax {jax.__version__}, {os.cpu_count()} CPU cores, "
    f"{args.repeats} repeats (median), shuffled; load average {os.getloadavg()[0]:.1f}"
  )
  header = f"{'run':44s} {'seconds':>8s} {'ns/step':>8s} {'min s':>7s} {'x_final':>8s}  ratio"
  print(header)
  print("-" * len(header))
  for name in rows:
    ratio = f"{med[name] / med[peer[name]]:.2f}x {peer[name]}" if name in peer else ""
    ns = med[name] / steps * 1e9
    print(f"{name:44s} {med[name]:8.3f} {ns:8.1f} {best[name]:7.3f} {finals[name]:+8.4f}  {ratio}")
  if torch_ns is not None:
    ours_ns = med["ours: amsgrad (pytorch conv.)"] / steps * 1e9
    scaled = torch_ns * steps / 1e9
    print(
      f"{'eager torch Adam(amsgrad=True) loop':42s} {scaled:8.1f} {torch_ns:8.0f} "
      f"{'':>7s} {'':>8s}  ({args.torch_steps:,} steps, scaled; ours (pytorch) is "
      f"{torch_ns / ours_ns:,.0f}x faster per step)"
    )


if __name__ == "__main__":
  main()
