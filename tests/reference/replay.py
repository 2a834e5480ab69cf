"""Replays a fixed gradient sequence through an optax transformation under jit and scan."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax


def replay(tx: optax.GradientTransformation, params0, grads):
  """Returns (params after every step, final state), as NumPy, for grads[step]."""
  params0 = jax.tree.map(jnp.asarray, params0)
  grads = jax.tree.map(jnp.asarray, grads)

  @jax.jit
  def run(params, grads):
    def step(carry, g):
      params, state = carry
      updates, state = tx.update(g, state, params)
      params = optax.apply_updates(params, updates)
      return (params, state), params

    (_, state), trajectory = jax.lax.scan(step, (params, tx.init(params)), grads)
    return trajectory, state

  trajectory, state = run(params0, grads)
  return jax.tree.map(np.asarray, trajectory), jax.tree.map(np.asarray, state)


def find_amsgrad_state(state):
  """Returns the first ScaleByAmsgradState inside an optax chain's state."""
  import amsgrad_optax

  for s in jax.tree.leaves(
    state, is_leaf=lambda x: isinstance(x, amsgrad_optax.ScaleByAmsgradState)
  ):
    if isinstance(s, amsgrad_optax.ScaleByAmsgradState):
      return s
  raise AssertionError("no ScaleByAmsgradState in the optimizer state")
