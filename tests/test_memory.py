"""A jitted, donated AMSGrad step updates params and state in place: no full-size temporaries."""

import jax
import jax.numpy as jnp
import optax
import pytest

import amsgrad_optax

N = 2**20
BUFFER = N * 4  # bytes of one float32 array of N elements


def _step(tx):
  # Donated arguments are paired with outputs of the same shape in order, so
  # params and state come first and in the order the step returns them.
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return step


def _memory(tx, params, donate):
  state = tx.init(params)
  step = jax.jit(_step(tx), donate_argnums=(0, 1) if donate else ())
  return step.lower(params, state, params).compile().memory_analysis()


PARAMS = {
  "one_leaf": {"w": jnp.zeros((N,))},
  "tree": {"w": jnp.zeros((N // 4, 3)), "b": jnp.zeros((N // 4,))},
}


@pytest.mark.parametrize("tree", sorted(PARAMS))
@pytest.mark.parametrize("convention", amsgrad_optax.CONVENTIONS)
def test_donated_step_needs_no_full_size_temporary(tree, convention):
  params = PARAMS[tree]
  tx = amsgrad_optax.amsgrad(1e-3, convention=convention, weight_decay=1e-4)
  stats = _memory(tx, params, donate=True)
  # params, mu, nu and nu_max are written over their own input buffers ...
  assert stats.alias_size_in_bytes >= 4 * BUFFER
  # ... and nothing else of their size is allocated on the way.
  assert stats.temp_size_in_bytes < BUFFER


def test_without_donation_the_outputs_are_new_buffers():
  """The control: the aliasing measured above is what donation buys."""
  stats = _memory(amsgrad_optax.amsgrad(1e-3), PARAMS["one_leaf"], donate=False)
  assert stats.alias_size_in_bytes < BUFFER
  assert stats.output_size_in_bytes >= 4 * BUFFER
