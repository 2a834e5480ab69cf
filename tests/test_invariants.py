"""Invariants that hold for every gradient sequence, checked with hypothesis."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import amsgrad_optax

STEPS = 12
SETTINGS = settings(max_examples=40, deadline=None)

finite = st.floats(-1e4, 1e4, allow_nan=False, width=32)
sequences = hnp.arrays(np.float32, st.tuples(st.just(STEPS), st.integers(1, 4)), elements=finite)
rates = st.sampled_from([0.0, 0.5, 0.9, 0.99, 0.999])


def _states(tx, grads):
  @jax.jit
  def run(grads):
    def step(state, g):
      u, state = tx.update(g, state)
      return state, (u, state)

    return jax.lax.scan(step, tx.init(grads[0]), grads)[1]

  us, states = run(jnp.asarray(grads))
  return np.asarray(us), jax.tree.map(np.asarray, states)


@SETTINGS
@given(grads=sequences, b1=rates, b2=rates, convention=st.sampled_from(amsgrad_optax.CONVENTIONS))
def test_nu_max_never_decreases_and_bounds_nu(grads, b1, b2, convention):
  _, s = _states(amsgrad_optax.scale_by_amsgrad(b1, b2, convention=convention), grads)
  assert np.all(np.diff(s.nu_max, axis=0) >= 0)
  if convention != "optax":  # there nu_max bounds nu / c2 >= nu
    # Up to float32 round-off: XLA on CPU evaluates nu once for the stored state and again
    # inside the fused max, and may contract g*g + nu into an FMA in only one of them.
    assert np.all(s.nu_max >= s.nu * np.float32(1 - 4e-7))


@SETTINGS
@given(grads=sequences, b1=rates, b2=rates)
def test_paper_effective_step_never_increases(grads, b1, b2):
  """lr / sqrt(nu_max): the property the paper's proof rests on (and Adam lacks)."""
  _, s = _states(amsgrad_optax.scale_by_amsgrad(b1, b2, convention="paper"), grads)
  with np.errstate(divide="ignore"):
    step = 1.0 / np.sqrt(s.nu_max.astype(np.float64))
  assert np.all(step[1:] <= step[:-1])  # not np.diff: inf - inf is NaN


@SETTINGS
@given(
  grads=sequences,
  silent=hnp.arrays(np.bool_, 4),
  convention=st.sampled_from(amsgrad_optax.CONVENTIONS),
  eps=st.sampled_from([0.0, 1e-8]),
)
def test_update_is_zero_where_the_gradient_history_is_zero(grads, silent, convention, eps):
  grads = np.where(silent[: grads.shape[1]], np.float32(0), grads)
  us, _ = _states(amsgrad_optax.scale_by_amsgrad(eps=eps, convention=convention), grads)
  history_zero = np.cumsum(np.abs(grads), axis=0) == 0
  assert np.all(us[history_zero] == 0)
  assert np.all(np.isfinite(us))
