"""Low precision (float16, bfloat16), complex and float64 params, against NumPy references.

The reference below is written for these tests from the conventions' table in
the README, in float64 (complex128 for complex params), independently of the
library's code.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

import amsgrad_optax

CONVENTIONS = amsgrad_optax.CONVENTIONS


def np_amsgrad(
  convention,
  params,
  grads,
  *,
  lr=0.1,
  b1=0.9,
  b2=0.999,
  eps=1e-8,
  eps_root=0.0,
  b1_decay=1.0,
  lr_schedule=None,
):
  """Returns the updates (``-lr * u_t``) of AMSGrad in float64 NumPy, one per gradient."""
  wide = np.complex128 if np.iscomplexobj(params) else np.float64
  p = np.asarray(params).astype(wide)
  m = np.zeros_like(p)
  v = np.zeros(p.shape)
  vmax = np.zeros(p.shape)
  prod_b1 = 1.0
  out = []
  for t, g in enumerate(grads, start=1):
    g = np.asarray(g).astype(wide)
    b1_t = b1 * b1_decay ** (t - 1)
    prod_b1 *= b1_t
    m = b1_t * m + (1 - b1_t) * g
    v = b2 * v + (1 - b2) * np.abs(g) ** 2
    c1, c2 = 1 - prod_b1, 1 - b2**t
    if convention == "pytorch":
      vmax = np.maximum(vmax, v)
      u = (m / c1) / (np.sqrt(vmax + eps_root) / np.sqrt(c2) + eps)
    elif convention == "keras":
      vmax = np.maximum(vmax, v)
      u = np.sqrt(c2) / c1 * m / (np.sqrt(vmax + eps_root) + eps)
    elif convention == "optax":
      vmax = np.maximum(vmax, v / c2)
      u = (m / c1) / (np.sqrt(vmax + eps_root) + eps)
    elif convention == "paper":
      vmax = np.maximum(vmax, v)
      u = m / (np.sqrt(vmax + eps_root) + eps)
    step = lr if lr_schedule is None else lr_schedule(t - 1)
    out.append(-step * u)
  return out


def _run(tx, params, grads, jit=True):
  update = jax.jit(tx.update) if jit else tx.update
  state = tx.init(params)
  out = []
  for g in grads:
    u, state = update(g, state, params)
    out.append(u)
  return out, state


# ------------------------------------------------------------ float16

# Gradients of 1e4: their squares (1e8) overflow float16 (max 65504).
F16_GRADS = [
  np.array(row, np.float16)
  for row in (
    [1e4, -1e4, 3e3, -500.0],
    [-1e4, 2e4, 3e3, 1.0],
    [1e4, -1e4, -3e3, 10.0],
    [5e3, 1e4, 3e3, -500.0],
    [1.0, -1.0, 0.5, 0.25],
  )
]


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_float16_large_gradients_stay_finite_where_optax_amsgrad_stops(convention):
  params = jnp.zeros(4, jnp.float16)
  grads = [jnp.asarray(g) for g in F16_GRADS]
  eps = 1e-8 if convention != "paper" else 0.0
  ours, state = _run(amsgrad_optax.amsgrad(1e-3, eps=eps, convention=convention), params, grads)
  want = np_amsgrad(convention, params, F16_GRADS, lr=1e-3, eps=eps)
  scaler_state = state[0]
  assert scaler_state.mu.dtype == jnp.float32  # float16 params keep mu in float32
  assert scaler_state.nu.dtype == jnp.float32 and scaler_state.nu_max.dtype == jnp.float32
  for u, u_ref in zip(ours, want, strict=True):
    assert u.dtype == jnp.float16
    assert np.isfinite(u).all() and (np.asarray(u) != 0).all()
    # A few float16 ulps: 2**-10 relative for normal numbers (the update is
    # rounded to float16), 2**-24 absolute for subnormal ones.
    np.testing.assert_allclose(np.asarray(u, np.float64), u_ref, rtol=4e-3, atol=2 * 2**-24)

  # The contrast: optax.amsgrad keeps nu in float16, where 1e8 is inf, and
  # then every update is m / inf = 0, for the rest of the run.
  with jax.numpy_dtype_promotion("standard"):
    theirs, their_state = _run(optax.amsgrad(1e-3, eps=eps), params, grads)
  assert np.isinf(their_state[0].nu_max[:3]).all()
  for u in theirs:
    np.testing.assert_array_equal(np.asarray(u[:3], np.float32), 0.0)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_float16_tiny_and_zero_gradients_stay_finite_where_optax_amsgrad_divides_by_zero(
  convention,
):
  # g**2 underflows float16 below |g| ~ 2.4e-4, and eps = 1e-8 is 0 there:
  # optax.amsgrad then returns m / 0 = inf, and 0 / 0 = NaN for g = 0.
  params = jnp.zeros(3, jnp.float16)
  grads_np = [np.array([1e-4, 0.0, 1.0], np.float16), np.array([-1e-4, 0.0, 0.5], np.float16)]
  grads = [jnp.asarray(g) for g in grads_np]
  ours, _ = _run(amsgrad_optax.amsgrad(1e-3, convention=convention), params, grads)
  want = np_amsgrad(convention, params, grads_np, lr=1e-3)
  for u, u_ref in zip(ours, want, strict=True):
    assert np.isfinite(np.asarray(u, np.float32)).all()
    # The update is rounded to float16: the error is a float16 epsilon of the
    # step's scale, lr.
    np.testing.assert_allclose(np.asarray(u, np.float64), u_ref, rtol=4e-3, atol=2 * 2**-10 * 1e-3)
  with jax.numpy_dtype_promotion("standard"):
    theirs, _ = _run(optax.amsgrad(1e-3), params, grads)
  assert np.isinf(theirs[0][0]) and np.isnan(theirs[0][1])


def test_float16_nu_dtype_asked_for_explicitly_overflows():
  # The float32 default is what saves the run: asking for float16 loses it
  # once nu itself passes 65504 (here at once for |g| = 1e4: nu = 1e5).
  params = jnp.zeros(4, jnp.float16)
  grads = [jnp.asarray(g) for g in F16_GRADS]
  ours, state = _run(amsgrad_optax.amsgrad(1e-3, nu_dtype=jnp.float16), params, grads)
  assert state[0].nu_max.dtype == jnp.float16
  assert np.isinf(state[0].nu_max[:2]).all()
  # The first step is computed in float32 before nu_max is stored (as inf);
  # from then on every update is m / inf = 0.
  assert all((np.asarray(u[:2], np.float32) == 0).all() for u in ours[1:])


# ------------------------------------------------------------ bfloat16


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_bfloat16_params_and_state(convention):
  rng = np.random.default_rng(0)
  params = jnp.asarray(rng.normal(size=16), jnp.bfloat16)
  grads_np = [rng.normal(size=16).astype(ml_dtypes.bfloat16) for _ in range(6)]
  ours, state = _run(
    amsgrad_optax.amsgrad(0.01, convention=convention),
    params,
    [jnp.asarray(g) for g in grads_np],
  )
  assert {x.dtype for x in jax.tree.leaves(state[0])[1:]} == {jnp.dtype(jnp.bfloat16)}
  want = np_amsgrad(convention, params, grads_np, lr=0.01)
  for u, u_ref in zip(ours, want, strict=True):
    assert u.dtype == jnp.bfloat16
    # bfloat16 keeps 8 significant bits: 2**-8 relative per rounding. mu
    # may be a difference of nearly equal terms, so the error is measured
    # against the step's scale rather than each entry.
    scale = np.abs(u_ref).max()
    np.testing.assert_allclose(np.asarray(u, np.float64), u_ref, rtol=0, atol=3e-2 * scale)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_bfloat16_state_with_float32_params(convention):
  rng = np.random.default_rng(1)
  params = jnp.asarray(rng.normal(size=16), jnp.float32)
  grads = [rng.normal(size=16).astype(np.float32) for _ in range(6)]
  tx = amsgrad_optax.amsgrad(
    0.01, convention=convention, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16
  )
  ours, state = _run(tx, params, [jnp.asarray(g) for g in grads])
  assert state[0].mu.dtype == state[0].nu.dtype == state[0].nu_max.dtype == jnp.bfloat16
  want = np_amsgrad(convention, params, grads, lr=0.01)
  for u, u_ref in zip(ours, want, strict=True):
    assert u.dtype == jnp.float32
    scale = np.abs(u_ref).max()
    np.testing.assert_allclose(u, u_ref, rtol=0, atol=3e-2 * scale)


def test_float32_state_with_bfloat16_params():
  rng = np.random.default_rng(2)
  params = jnp.asarray(rng.normal(size=16), jnp.bfloat16)
  grads_np = [rng.normal(size=16).astype(ml_dtypes.bfloat16) for _ in range(6)]
  tx = amsgrad_optax.amsgrad(0.01, mu_dtype=jnp.float32, nu_dtype=jnp.float32)
  ours, state = _run(tx, params, [jnp.asarray(g) for g in grads_np])
  assert state[0].mu.dtype == state[0].nu_max.dtype == jnp.float32
  want = np_amsgrad("pytorch", params, grads_np, lr=0.01)
  for u, u_ref in zip(ours, want, strict=True):
    assert u.dtype == jnp.bfloat16
    # Three roundings of 2**-8: the step to bfloat16 (the gradient's dtype),
    # the learning rate to bfloat16 (as optax.scale_by_learning_rate does),
    # and their product.
    np.testing.assert_allclose(np.asarray(u, np.float64), u_ref, rtol=3 * 2**-8)


# ------------------------------------------------------------ complex


@pytest.mark.parametrize("convention", ["keras", "paper"])
def test_complex_params_match_numpy_reference(convention):
  # The |g|^2 conventions; "pytorch" (torch's real view) and "optax" (optax's complex
  # arithmetic) are held against torch and optax themselves in tests/test_trust.py.
  rng = np.random.default_rng(3)
  shape = (3, 2)
  params = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
  grads = [
    (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64) for _ in range(6)
  ]
  grads[2][0, 0] = 0.0  # a zero complex gradient mid-run
  ours, state = _run(amsgrad_optax.amsgrad(0.1, convention=convention), jnp.asarray(params), grads)
  s = state[0]
  assert s.mu.dtype == jnp.complex64
  assert s.nu.dtype == jnp.float32 and s.nu_max.dtype == jnp.float32
  want = np_amsgrad(convention, params, grads, lr=0.1)
  for u, u_ref in zip(ours, want, strict=True):
    assert u.dtype == jnp.complex64
    np.testing.assert_allclose(u, u_ref, rtol=2e-5, atol=1e-7)


def test_complex_second_moment_is_optax_adams():
  rng = np.random.default_rng(4)
  params = jnp.asarray(rng.normal(size=5) + 1j * rng.normal(size=5), jnp.complex64)
  grads = [
    jnp.asarray(rng.normal(size=5) + 1j * rng.normal(size=5), jnp.complex64) for _ in range(4)
  ]
  _, ours = _run(amsgrad_optax.amsgrad(0.1, convention="optax"), params, grads)
  with jax.numpy_dtype_promotion("standard"):
    _, adam = _run(optax.adam(0.1), params, grads)
  # Both hold (conj(g) g).real in a complex array with zero imaginary part, as optax does.
  assert ours[0].nu.dtype == adam[0].nu.dtype == jnp.complex64
  np.testing.assert_array_equal(np.imag(ours[0].nu), 0.0)
  np.testing.assert_array_equal(ours[0].nu, adam[0].nu)
  np.testing.assert_allclose(ours[0].mu, adam[0].mu, rtol=1e-6)


# ------------------------------------------------------------ float64


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("b1_decay, scheduled", [(1.0, False), (0.99, True)])
def test_float64_under_x64_matches_float64_reference(convention, b1_decay, scheduled):
  rng = np.random.default_rng(5)
  params_np = rng.normal(size=(4, 3))
  grads_np = [rng.normal(size=(4, 3)) * 10.0 ** rng.integers(-3, 3) for _ in range(12)]
  eps_root = 1e-12 if convention in ("optax", "paper") else 0.0
  sched = amsgrad_optax.inverse_sqrt_schedule(0.05) if scheduled else 0.05
  with jax.enable_x64(True):
    tx = amsgrad_optax.amsgrad(
      sched, convention=convention, b1_decay=b1_decay, eps_root=eps_root, eps=1e-10
    )
    params = jnp.asarray(params_np, jnp.float64)
    ours, state = _run(tx, params, [jnp.asarray(g, jnp.float64) for g in grads_np])
    dtypes = [x.dtype for x in jax.tree.leaves(state[0])]
  assert dtypes == [jnp.int32] + [jnp.float64] * 3
  want = np_amsgrad(
    convention,
    params_np,
    grads_np,
    lr=0.05,
    eps=1e-10,
    eps_root=eps_root,
    b1_decay=b1_decay,
    lr_schedule=(lambda c: 0.05 / np.sqrt(c + 1.0)) if scheduled else None,
  )
  for u, u_ref in zip(ours, want, strict=True):
    assert u.dtype == jnp.float64
    np.testing.assert_allclose(u, u_ref, rtol=1e-12, atol=0)
