"""The "optax" convention against ``optax.amsgrad``, live: the same bits."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import amsgrad_optax
from tests.reference import torch_amsgrad as problem
from tests.reference.replay import replay

pytestmark = pytest.mark.standard_promotion  # optax itself promotes implicitly


@pytest.mark.parametrize(
  "kwargs",
  [
    dict(learning_rate=1e-3),
    dict(learning_rate=1e-2, b1=0.9, b2=0.99),
    dict(learning_rate=3e-3, b1=0.0, b2=0.9, eps=1e-6, eps_root=1e-9),
    dict(learning_rate=optax.cosine_decay_schedule(1e-2, 250)),
  ],
  ids=["default", "paper_betas", "eps_root", "schedule"],
)
def test_bit_identical_to_optax_amsgrad(kwargs):
  params0, grads = problem.make_problem(seed=2)
  ours, _ = replay(amsgrad_optax.amsgrad(**kwargs, convention="optax"), params0, grads)
  theirs, _ = replay(optax.amsgrad(**kwargs), params0, grads)
  for k in params0:
    np.testing.assert_array_equal(ours[k], theirs[k], err_msg=k)


def test_bfloat16_mu_is_closer_to_float32_than_optax():
  """The one deliberate departure: low-precision state is updated in float32 and rounded once.

  optax forms b1 * mu in bfloat16 (a rounding per operation); the float32 update drifts less
  from a float32-state run, so "optax" agrees with optax.amsgrad only to bfloat16 round-off here.
  """
  params0, grads = problem.make_problem(seed=2)
  exact, _ = replay(optax.amsgrad(1e-3), params0, grads)
  ours, _ = replay(
    amsgrad_optax.amsgrad(1e-3, convention="optax", mu_dtype=jnp.bfloat16), params0, grads
  )
  theirs, _ = replay(optax.amsgrad(1e-3, mu_dtype=jnp.bfloat16), params0, grads)
  err = lambda traj: sum(float(np.abs(traj[k] - exact[k]).sum()) for k in params0)  # noqa: E731
  assert err(ours) < err(theirs)
  for k in params0:
    np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-2, atol=1e-3)


def test_state_identical_to_optax_scale_by_amsgrad():
  params0, grads = problem.make_problem(seed=3)
  _, ours = replay(amsgrad_optax.scale_by_amsgrad(convention="optax"), params0, grads)
  _, theirs = replay(optax.scale_by_amsgrad(), params0, grads)
  assert int(ours.count) == int(theirs.count) == problem.STEPS
  for field in ("mu", "nu", "nu_max"):
    for k in params0:
      np.testing.assert_array_equal(getattr(ours, field)[k], getattr(theirs, field)[k])


def test_paper_convention_equals_optax_without_bias_correction():
  """optax's own flags turn its AMSGrad into Algorithm 2; so does convention="paper"."""
  params0, grads = problem.make_problem(seed=4)
  ours, _ = replay(amsgrad_optax.scale_by_amsgrad(convention="paper"), params0, grads)
  theirs, _ = replay(
    optax.scale_by_amsgrad(bias_correction_mu=False, bias_correction_nu=False), params0, grads
  )
  for k in params0:
    np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-6, atol=1e-7)


def test_eager_agrees_with_optax_to_one_ulp():
  """Op by op, without jit, XLA compiles the pieces separately: equal to within 1 ulp."""
  params = {"a": jnp.linspace(-1.0, 1.0, 5), "b": jnp.ones((2, 2))}
  grads = jax.tree.map(lambda p: 0.3 * p + 0.1, params)
  ours, theirs = amsgrad_optax.amsgrad(0.1, convention="optax"), optax.amsgrad(0.1)
  s1, s2 = ours.init(params), theirs.init(params)
  for _ in range(5):
    u1, s1 = ours.update(grads, s1)
    u2, s2 = theirs.update(grads, s2)
    for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2)):
      np.testing.assert_array_max_ulp(np.asarray(a), np.asarray(b), maxulp=1)
