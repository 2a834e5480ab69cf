"""The float32-accurate bias correction 1 - b^t of the exact-power conventions, against float64."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from amsgrad_optax import _conventions

T = np.arange(1, 200_001)


@pytest.mark.parametrize("b", [0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999])
def test_one_minus_power_is_float32_accurate(b):
  got = jax.jit(lambda t: _conventions.one_minus_power(b, t, exact=True))(jnp.asarray(T, jnp.int32))
  exact = 1.0 - np.float64(b) ** T
  rel = np.abs(np.asarray(got, np.float64) - exact) / exact
  # About 2 float32 ulps at worst, over the whole range of t.
  assert rel.max() < 2.5e-7


def test_one_minus_power_with_decay_and_traced_b():
  b, lam = 0.9, 0.999
  t = jnp.arange(1, 5001, dtype=jnp.int32)
  f = jax.jit(lambda b, t: _conventions.one_minus_power(b, t, exact=True, decay=lam))
  got = np.asarray(f(jnp.float32(b), t), np.float64)
  tt = np.arange(1, 5001, dtype=np.float64)
  exact = 1.0 - np.exp(tt * math.log(np.float32(b)) + 0.5 * tt * (tt - 1) * math.log(lam))
  np.testing.assert_allclose(got, exact, rtol=2.5e-7)


def test_one_minus_exp_near_zero_does_not_cancel():
  x = -np.geomspace(1e-12, 0.5, 20_000).astype(np.float32)
  got = np.asarray(jax.jit(_conventions._one_minus_exp)(x), np.float64)
  exact = -np.expm1(x.astype(np.float64))
  assert (np.abs(got - exact) / exact).max() < 2e-7
  assert float(_conventions._one_minus_exp(jnp.float32(-jnp.inf))) == 1.0
