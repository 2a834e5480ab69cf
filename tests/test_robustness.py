"""Non-finite gradients, skip_nonfinite against optax.apply_if_finite, and very long runs.

The documented behaviour, which these tests pin down:

- Without a safe path, a NaN or inf gradient enters the moments: ``nu_max``
  only grows, so that coordinate's ``nu_max`` and every later update stay NaN
  for the rest of the run. A finite gradient whose square overflows (1e30 in
  float32) makes ``nu_max`` inf, and the coordinate then never moves again.
- ``skip_nonfinite`` (or ``amsgrad(..., skip_nonfinite=True)``) drops such a
  step whole: the run ends bit for bit where the run without the step ends.
- ``optax.apply_if_finite`` also keeps the inner state on a non-finite
  gradient, but applies the step after ``max_consecutive_errors`` failures in
  a row (poisoning ``nu_max``), and lets an overflowing finite gradient in.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import amsgrad_optax
from amsgrad_optax import _conventions

CONVENTIONS = amsgrad_optax.CONVENTIONS
INT32_MAX = 2**31 - 1


def _bits(x) -> np.ndarray:
  return np.atleast_1d(np.asarray(x)).view(np.uint8)


def _assert_bitwise_equal(a, b) -> None:
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(la, lb, strict=True):
    assert np.asarray(x).dtype == np.asarray(y).dtype
    np.testing.assert_array_equal(_bits(x), _bits(y))


def _scan_run(tx, params, grads):
  """Final (params, state) of ``tx`` over the leading axis of ``grads``, jitted."""

  def body(carry, g):
    p, s = carry
    u, s = tx.update(g, s, p)
    return (optax.apply_updates(p, u), s), None

  @jax.jit
  def run(p, gs):
    return jax.lax.scan(body, (p, tx.init(p)), gs)[0]

  return run(params, grads)


def _problem(steps: int = 30, seed: int = 0):
  rng = np.random.default_rng(seed)
  params = {
    "w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
    "b": jnp.asarray([0.5, -0.25, 1.0, 2.0], jnp.float32),
  }
  grads = {
    "w": rng.normal(size=(steps, 3, 4)).astype(np.float32),
    "b": rng.normal(size=(steps, 4)).astype(np.float32),
  }
  return params, grads


# Step -> the value written into one coordinate of that step's gradient.
# 1e30 is finite, but its square overflows float32.
BAD_STEPS = {3: np.nan, 10: np.inf, 11: -np.inf, 12: np.nan, 22: 1e30}


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_skipped_steps_leave_no_trace_under_scan(convention):
  params, grads = _problem()
  steps = grads["w"].shape[0]
  dirty = jax.tree.map(np.copy, grads)
  for t, value in BAD_STEPS.items():
    dirty["w"][t, 1, 2] = value
  keep = [t for t in range(steps) if t not in BAD_STEPS]
  clean = jax.tree.map(lambda g: g[keep], grads)
  # A schedule and weight decay too: their state must not move on a skip.
  tx = amsgrad_optax.amsgrad(
    optax.linear_schedule(0.1, 0.01, 20),
    convention=convention,
    weight_decay=0.01,
    skip_nonfinite=True,
  )
  p_dirty, s_dirty = _scan_run(tx, params, dirty)
  p_clean, s_clean = _scan_run(tx, params, clean)
  _assert_bitwise_equal(p_dirty, p_clean)
  _assert_bitwise_equal(s_dirty.inner_state, s_clean.inner_state)
  assert int(s_dirty.total_skipped) == len(BAD_STEPS)
  assert int(s_clean.total_skipped) == 0
  assert int(s_dirty.consecutive_skipped) == 0
  assert int(s_dirty.inner_state[0].count) == len(keep)
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(s_dirty.inner_state))


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_stepwise_jit_with_skips_equals_plain_optimizer_on_clean_steps(convention):
  params, grads = _problem(steps=8, seed=1)
  bad = {2: np.nan, 5: np.inf}
  safe = amsgrad_optax.amsgrad(0.05, convention=convention, skip_nonfinite=True)
  plain = amsgrad_optax.amsgrad(0.05, convention=convention)
  safe_update, plain_update = jax.jit(safe.update), jax.jit(plain.update)
  p_safe, s_safe = params, safe.init(params)
  p_plain, s_plain = params, plain.init(params)
  for t in range(8):
    g = jax.tree.map(lambda x, t=t: np.copy(x[t]), grads)
    if t in bad:
      g["b"][0] = bad[t]
    u, s_safe = safe_update(g, s_safe, p_safe)
    p_safe = optax.apply_updates(p_safe, u)
    if t not in bad:
      u, s_plain = plain_update(g, s_plain, p_plain)
      p_plain = optax.apply_updates(p_plain, u)
  _assert_bitwise_equal(p_safe, p_plain)
  _assert_bitwise_equal(s_safe.inner_state, s_plain)


def test_counters_follow_hand_count_and_match_apply_if_finite():
  # ok, bad, bad, ok, bad, bad, bad, ok
  pattern = [True, False, False, True, False, False, False, True]
  want_consecutive = [0, 1, 2, 0, 1, 2, 3, 0]
  want_total = [0, 1, 2, 2, 3, 4, 5, 5]
  ours = amsgrad_optax.skip_nonfinite(amsgrad_optax.amsgrad(0.1))
  theirs = optax.apply_if_finite(amsgrad_optax.amsgrad(0.1), max_consecutive_errors=100)
  params = jnp.ones(3)
  s_ours, s_theirs = ours.init(params), theirs.init(params)
  update_ours, update_theirs = jax.jit(ours.update), jax.jit(theirs.update)
  for i, ok in enumerate(pattern):
    g = jnp.array([1.0, -2.0, 0.5 if ok else np.nan])
    _, s_ours = update_ours(g, s_ours, params)
    _, s_theirs = update_theirs(g, s_theirs, params)
    assert int(s_ours.consecutive_skipped) == want_consecutive[i]
    assert int(s_ours.total_skipped) == want_total[i]
    # On gradients that are NaN, the two agree on the counts and inner state.
    assert int(s_theirs.notfinite_count) == want_consecutive[i]
    assert int(s_theirs.total_notfinite) == want_total[i]
    _assert_bitwise_equal(s_ours.inner_state, s_theirs.inner_state)


def test_apply_if_finite_gives_up_and_poisons_nu_max_where_skip_does_not():
  params = jnp.ones(2)
  g_ok, g_nan = jnp.array([1.0, 1.0]), jnp.array([1.0, np.nan])
  theirs = optax.apply_if_finite(amsgrad_optax.amsgrad(0.1), max_consecutive_errors=2)
  ours = amsgrad_optax.amsgrad(0.1, skip_nonfinite=True)
  s_theirs, s_ours = theirs.init(params), ours.init(params)
  for g in [g_ok, g_nan, g_nan, g_nan, g_ok, g_ok]:
    _, s_theirs = theirs.update(g, s_theirs, params)
    _, s_ours = ours.update(g, s_ours, params)
  # The third NaN in a row exceeded max_consecutive_errors=2 and was applied.
  assert np.isnan(s_theirs.inner_state[0].nu_max[1])
  u_theirs, _ = theirs.update(g_ok, s_theirs, params)
  assert np.isnan(u_theirs[1])
  # Ours skipped all three and is finite, with three finite steps counted.
  assert np.isfinite(s_ours.inner_state[0].nu_max).all()
  assert int(s_ours.inner_state[0].count) == 3
  assert int(s_ours.total_skipped) == 3


def test_apply_if_finite_lets_overflowing_gradient_freeze_a_param():
  params = jnp.ones(2)
  huge = jnp.array([1.0, 1e30], jnp.float32)  # finite, but huge**2 == inf
  theirs = optax.apply_if_finite(amsgrad_optax.amsgrad(0.1), max_consecutive_errors=5)
  ours = amsgrad_optax.amsgrad(0.1, skip_nonfinite=True)
  s_theirs, s_ours = theirs.init(params), ours.init(params)
  _, s_theirs = theirs.update(huge, s_theirs, params)
  _, s_ours = ours.update(huge, s_ours, params)
  assert np.isinf(s_theirs.inner_state[0].nu_max[1])
  assert int(s_theirs.total_notfinite) == 0
  assert int(s_ours.total_skipped) == 1
  u_ours, _ = ours.update(jnp.ones(2), s_ours, params)
  # First applied step of the pytorch convention: -lr * sign(g).
  np.testing.assert_allclose(u_ours, [-0.1, -0.1], rtol=1e-6)


def test_skipped_step_keeps_negative_zero_params_bitwise():
  params = jnp.array([-0.0, 1.0])
  g = jnp.array([np.nan, 1.0])
  ours = amsgrad_optax.amsgrad(0.1, skip_nonfinite=True)
  u, _ = ours.update(g, ours.init(params), params)
  _assert_bitwise_equal(optax.apply_updates(params, u), params)
  # optax.apply_if_finite returns +0.0, and -0.0 + 0.0 == +0.0.
  theirs = optax.apply_if_finite(amsgrad_optax.amsgrad(0.1), max_consecutive_errors=1)
  u, _ = theirs.update(g, theirs.init(params), params)
  assert not np.signbit(optax.apply_updates(params, u)[0])


def test_skip_nonfinite_under_inject_hyperparams_keeps_inner_state():
  tx = optax.inject_hyperparams(amsgrad_optax.amsgrad)(learning_rate=0.1, skip_nonfinite=True)
  params = jnp.ones(2)
  state = tx.init(params)
  _, state = jax.jit(tx.update)(jnp.array([1.0, 2.0]), state, params)
  before = state.inner_state.inner_state
  _, state = jax.jit(tx.update)(jnp.array([np.inf, 2.0]), state, params)
  _assert_bitwise_equal(state.inner_state.inner_state, before)
  assert int(state.inner_state.total_skipped) == 1


def test_skip_nonfinite_handles_empty_and_none_leaves():
  tx = amsgrad_optax.amsgrad(0.1, skip_nonfinite=True)
  params = {"a": None, "b": jnp.zeros((0, 3)), "c": jnp.ones(())}
  state = tx.init(params)
  grads = {"a": None, "b": jnp.zeros((0, 3)), "c": jnp.array(np.nan, jnp.float32)}
  u, state = tx.update(grads, state, params)
  assert jax.tree.structure(u) == jax.tree.structure(params)
  assert int(state.total_skipped) == 1
  u, state = tx.update({"a": None, "b": jnp.zeros((0, 3)), "c": jnp.ones(())}, state, params)
  np.testing.assert_allclose(u["c"], -0.1, rtol=1e-6)
  assert int(state.total_skipped) == 1


# ------------------------------------------------ without the safe path


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_without_skip_one_nonfinite_gradient_poisons_that_coordinate_for_ever(convention, bad):
  tx = amsgrad_optax.amsgrad(0.1, convention=convention)
  update = jax.jit(tx.update)
  params = jnp.ones(3)
  state = tx.init(params)
  rng = np.random.default_rng(2)
  for t in range(25):
    g = rng.normal(size=3).astype(np.float32)
    if t == 4:
      g[1] = bad
    u, state = update(g, state, params)
    if t >= 4:
      # nu_max is NaN (from NaN) or inf (from +-inf), and stays so.
      assert not np.isfinite(state[0].nu_max[1])
      assert np.isnan(u[1])
    # The other coordinates are untouched by it.
    assert np.isfinite(np.asarray(u)[[0, 2]]).all()


def test_without_skip_an_overflowing_finite_gradient_freezes_the_param():
  tx = amsgrad_optax.amsgrad(0.1)
  params = jnp.ones(2)
  state = tx.init(params)
  u, state = tx.update(jnp.array([1.0, 1e30], jnp.float32), state, params)
  for _ in range(10):
    u, state = tx.update(jnp.array([1.0, 1.0]), state, params)
    assert np.isinf(state[0].nu_max[1])
    assert u[1] == 0.0 and u[0] != 0.0


# ------------------------------------------------------- very long runs


def _np_step(convention, m, v, vmax, g, t, b1=0.9, b2=0.999, eps=1e-8):
  """One AMSGrad step in float64 NumPy, written from the README's table."""
  m = b1 * m + (1 - b1) * g
  v = b2 * v + (1 - b2) * g**2
  c1, c2 = 1 - b1**t, 1 - b2**t
  if convention == "optax":
    vmax = np.maximum(vmax, v / c2)
    u = (m / c1) / (np.sqrt(vmax) + eps)
  else:
    vmax = np.maximum(vmax, v)
    if convention == "pytorch":
      u = (m / c1) / (np.sqrt(vmax) / np.sqrt(c2) + eps)
    elif convention == "keras":
      u = np.sqrt(c2) / c1 * m / (np.sqrt(vmax) + eps)
    else:
      u = m / (np.sqrt(vmax) + eps)
  return u, m, v, vmax


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_count_saturates_at_int32_max_and_updates_stay_exact(convention):
  tx = amsgrad_optax.scale_by_amsgrad(convention=convention)
  m0 = np.array([0.1, -0.2, 0.0], np.float32)
  v0 = np.array([0.04, 0.01, 1e-6], np.float32)
  state = amsgrad_optax.ScaleByAmsgradState(
    count=jnp.asarray(INT32_MAX - 2, jnp.int32),
    mu=jnp.asarray(m0),
    nu=jnp.asarray(v0),
    nu_max=jnp.asarray(v0 * 2),
  )
  m, v, vmax = (x.astype(np.float64) for x in (m0, v0, v0 * 2))
  update = jax.jit(tx.update)
  counts = []
  for i, g in enumerate(([0.3, -0.1, 0.0], [1.0, 2.0, -3.0], [-0.5, 0.5, 0.25])):
    g = np.asarray(g, np.float32)
    u, state = update(jnp.asarray(g), state)
    counts.append(int(state.count))
    t = min(INT32_MAX - 1 + i, INT32_MAX)
    u_ref, m, v, vmax = _np_step(convention, m, v, vmax, g.astype(np.float64), t)
    np.testing.assert_allclose(u, u_ref, rtol=2e-6, atol=1e-7)
  assert counts == [INT32_MAX - 1, INT32_MAX, INT32_MAX]


@pytest.mark.parametrize("b", [0.0, 0.5, 0.9, 0.99, 0.999, 0.9999])
def test_bias_correction_is_exact_at_t1(b):
  t1 = jnp.asarray(1, jnp.int32)
  # Exact conventions: 1 - b to float32 (as PyTorch's double 1 - b**1).
  got = _conventions.one_minus_power(b, t1, exact=True)
  assert got.dtype == jnp.float32
  assert float(got) == float(np.float32(1.0 - b))
  got = _conventions.one_minus_power(b, t1, exact=True, decay=0.9)
  assert float(got) == float(np.float32(1.0 - b))
  # Float32-power conventions: 1 - float32(b), exactly (as optax).
  got = _conventions.one_minus_power(b, t1, exact=False)
  assert float(got) == float(np.float32(1.0) - np.float32(b))


@pytest.mark.parametrize(
  "exact, decay",
  # A decaying b1 is evaluated on the exact path under every convention.
  [(True, 1.0), (True, 0.99), (False, 1.0)],
)
@pytest.mark.parametrize("b", [0.0, 0.5, 0.9, 0.999, 0.9999999])
def test_bias_correction_tends_to_one_without_nan(exact, decay, b):
  ts = [1, 2, 10, 1000, 10**6, 2**24, 2**24 + 1, 2**30, INT32_MAX]
  got = np.array(
    [
      float(_conventions.one_minus_power(b, jnp.asarray(t, jnp.int32), exact=exact, decay=decay))
      for t in ts
    ]
  )
  assert np.isfinite(got).all()
  assert (np.diff(got) >= 0).all() and (got <= 1.0).all() and (got > 0).all()
  assert got[-1] == 1.0
  t64 = np.asarray(ts, np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    if exact:
      log_prod = t64 * np.log(b) + 0.5 * t64 * (t64 - 1) * np.log(decay)
      want = -np.expm1(np.where(np.isnan(log_prod), -np.inf, log_prod))
      np.testing.assert_allclose(got, want, rtol=3e-6)
    else:
      # 1 - float32(b)**t as a float32 power, as optax computes it: b**t is
      # rounded near 1, so the error is absolute, a few float32 ulps of 1.
      want = 1.0 - np.float64(np.float32(b)) ** t64
      np.testing.assert_allclose(got, want, rtol=1e-6, atol=2.5e-7)


def test_inverse_sqrt_schedule_at_saturated_count():
  sched = amsgrad_optax.inverse_sqrt_schedule(0.5)
  got = float(sched(jnp.asarray(INT32_MAX, jnp.int32)))
  np.testing.assert_allclose(got, 0.5 / np.sqrt(2.0**31), rtol=1e-6)


def test_adamnc_count_saturates_and_average_stays_finite():
  tx = amsgrad_optax.scale_by_adamnc(b1=0.0, eps=0.0)
  state = amsgrad_optax.ScaleByAdamncState(
    count=jnp.asarray(INT32_MAX - 1, jnp.int32), mu=jnp.zeros(2), nu=jnp.array([4.0, 1.0])
  )
  for _ in range(2):
    u, state = tx.update(jnp.array([2.0, -1.0]), state)
    assert int(state.count) == INT32_MAX
  # v + (g^2 - v)/t with g^2 == v leaves v unchanged; u = g / sqrt(v).
  np.testing.assert_array_equal(state.nu, [4.0, 1.0])
  np.testing.assert_allclose(u, [1.0, -1.0], rtol=1e-6)
