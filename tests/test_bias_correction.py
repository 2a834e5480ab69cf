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


def test_one_minus_exp_is_within_an_ulp_over_the_whole_range():
  # The exponents the bias corrections meet: t log(b) for b from 0.1 to 1 - 1e-6, t to 2e6,
  # and a geometric sweep down to 1e-30 (no cancellation) and past -21 (1 - e^x is 1).
  xs = [
    np.float32(math.log(b)) * np.arange(1, 2_000_001, dtype=np.float32)
    for b in (0.1, 0.9, 0.999, 1 - 1e-6)
  ]
  xs.append(-np.geomspace(1e-30, 40.0, 200_000).astype(np.float32))
  x = np.concatenate(xs)
  got = np.asarray(jax.jit(_conventions._one_minus_exp)(x), np.float64)
  exact = -np.expm1(x.astype(np.float64))
  ulps = np.abs(got - exact) / np.spacing(exact.astype(np.float32)).astype(np.float64)
  assert ulps.max() < 1.0
  assert (got[x < -21] == 1.0).all()


def test_one_minus_exp_makes_no_library_call():
  # XLA:CPU calls out of line for exp/expm1 (and pow); a scalar call per step in a scan
  # cost the exact-power conventions about a quarter of the synthetic runner's step.
  hlo = jax.jit(_conventions._one_minus_exp).lower(jnp.float32(-1.0)).compile().as_text()
  for op in ("exponential", "exponential-minus-one", "power", "log", "custom-call"):
    assert f" {op}(" not in hlo, op


def test_one_minus_exp_keeps_nan_and_gives_zero_above_zero():
  assert np.isnan(float(_conventions._one_minus_exp(jnp.float32(np.nan))))
  # A traced rate over 1 (x > 0) gives 0, as a rate of exactly 1 does (x = 0).
  assert float(_conventions._one_minus_exp(jnp.float32(0.5))) == 0.0
  assert float(_conventions._one_minus_exp(jnp.float32(0.0))) == 0.0


@pytest.mark.parametrize("b", [0.9, 0.999, 0.99999])
def test_rounded_beta_raises_beta_rounded_to_float32(b):
  # Keras holds beta in the variables' dtype: its correction is 1 - float32(b)^t.
  got = jax.jit(lambda t: _conventions.one_minus_power(b, t, exact=True, rounded_b=True))(
    jnp.asarray(T, jnp.int32)
  )
  exact = 1.0 - np.float64(np.float32(b)) ** T
  assert (np.abs(np.asarray(got, np.float64) - exact) / exact).max() < 2.5e-7


@pytest.mark.parametrize("name", ["pytorch", "keras"])
def test_exact_power_conventions_make_no_library_call(name):
  conv = _conventions.get_convention(name)
  hlo = jax.jit(lambda t: conv.bias_corrections(0.9, 0.999, t)).lower(jnp.int32(3)).compile()
  for op in ("exponential", "exponential-minus-one", "power", "log", "custom-call"):
    assert f" {op}(" not in hlo.as_text(), op


def test_a_convention_built_as_in_0_1_keeps_beta_in_double():
  # rounded_beta is new and defaults to False: a Convention built from 0.1.0's fields is
  # still valid and raises beta as a Python double, as "pytorch" does.
  pt = _conventions.get_convention("pytorch")
  fields = ("name", "correct_mu", "nu_correction", "exact_powers", "complex_mode", "formula")
  custom = _conventions.Convention(**{f: getattr(pt, f) for f in fields}, matches="")
  assert custom.rounded_beta is False
  t = jnp.asarray(T[:3000], jnp.int32)
  want = np.asarray(pt.bias_corrections(0.99999, 0.99999, t)[1])
  got = np.asarray(custom.bias_corrections(0.99999, 0.99999, t)[1])
  np.testing.assert_array_equal(got, want)
  keras = _conventions.get_convention("keras").bias_corrections(0.99999, 0.99999, t)[1]
  assert not np.array_equal(np.asarray(keras), want)  # float32(beta) moves c2 here
