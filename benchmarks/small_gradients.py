"""How much of AMSGrad's step survives small gradients with low-precision params.

For float16 and bfloat16 params, feeds 200 steps of gradients of magnitude
``scale`` (normal, seeded) to ``amsgrad_optax.amsgrad`` and compares the sum of
the updates (in float64) with a float64 NumPy AMSGrad written here, which
shares no code with the package: the norm-relative error
``||sum u - sum u_ref|| / ||sum u_ref||`` and the worst coordinate's error
relative to the reference's RMS (a coordinate whose updates cancel to near 0
would make its own relative error meaningless). Each state layout is run: the defaults, and every moment in float32.
The updates come back in the params' dtype, so the last rounding is the
dtype's own (2^-11 for float16, 2^-8 for bfloat16) in every row.

Run (seconds):

  PYTHONPATH=. python benchmarks/small_gradients.py [--steps 200] [--size 4096]

These are deterministic numbers, not timings.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import amsgrad_optax


def reference(grads: np.ndarray, lr: float, b1: float, b2: float, eps: float) -> np.ndarray:
  """Sum of the float64 "pytorch"-convention updates over the steps."""
  m = np.zeros(grads.shape[1:])
  v = np.zeros(grads.shape[1:])
  v_max = np.zeros(grads.shape[1:])
  total = np.zeros(grads.shape[1:])
  for t, g in enumerate(grads, start=1):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    v_max = np.maximum(v_max, v)
    total += -lr * (m / (1 - b1**t)) / (np.sqrt(v_max) / np.sqrt(1 - b2**t) + eps)
  return total


def ours(grads: np.ndarray, dtype, layout, lr: float, b1: float, b2: float, eps: float):
  mu_dtype, nu_dtype = layout
  tx = amsgrad_optax.amsgrad(lr, b1, b2, eps, mu_dtype=mu_dtype, nu_dtype=nu_dtype)
  params = jnp.zeros(grads.shape[1:], dtype)
  state = tx.init(params)

  @jax.jit
  def run(state):
    def step(state, g):
      u, state = tx.update(g.astype(dtype), state)
      return state, u.astype(jnp.float32)

    state, us = jax.lax.scan(step, state, jnp.asarray(grads, jnp.float32))
    return us, state

  us, state = run(state)
  return np.asarray(us, np.float64).sum(0), state


def main() -> None:
  parser = argparse.ArgumentParser(
    description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
  )
  parser.add_argument("--steps", type=int, default=200, help="updates per run")
  parser.add_argument("--size", type=int, default=4096, help="coordinates per run")
  parser.add_argument("--seed", type=int, default=0, help="gradient seed")
  args = parser.parse_args()
  lr, b1, b2, eps = 1e-3, 0.9, 0.999, 1e-8
  rng = np.random.default_rng(args.seed)
  base = rng.normal(size=(args.steps, args.size))
  print(f"{args.steps} steps, {args.size} coordinates, lr {lr}, b1 {b1}, b2 {b2}, eps {eps}")
  print(
    "| params | gradient scale | state | mu, nu dtypes | norm-relative error | worst coordinate / RMS |"
  )
  print("| --- | --- | --- | --- | --- | --- |")
  for dtype in (jnp.float16, jnp.bfloat16):
    for scale in (1e-6, 1e-5, 1e-3):
      grads = (base * scale).astype(jnp.dtype(dtype)).astype(np.float64)
      want = reference(grads, lr, b1, b2, eps)
      layouts = {"default": (None, None), "float32": (jnp.float32, jnp.float32)}
      if dtype == jnp.float16:
        layouts["float16 mu (0.1.0's default)"] = (jnp.float16, None)
      for label, layout in layouts.items():
        got, state = ours(grads, dtype, layout, lr, b1, b2, eps)
        err = np.linalg.norm(got - want) / np.linalg.norm(want)
        worst = np.max(np.abs(got - want)) / np.sqrt(np.mean(want**2))
        dts = f"{state[0].mu.dtype}, {state[0].nu.dtype}"
        print(
          f"| {jnp.dtype(dtype).name} | {scale:g} | {label} | {dts} | {err:.2e} | {worst:.2e} |"
        )


if __name__ == "__main__":
  main()
