"""Minimal regression tests for the defects the fuzz suite (tests/test_fuzz.py) found.

Each test asserts the behaviour after the fix, against an independent reference (live torch or
optax, a finite difference, the run without the bad step), and names its issue-13 item in its
section. While a defect is open its test is a strict xfail naming the item (a fixed defect then
XPASSes, which strict mode reports as a failure, so the marker cannot be forgotten), and the
matching fuzz region is named in ``tests.test_fuzz.KNOWN_OPEN``; both are empty now.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import amsgrad_optax
from tests.fuzz import live
from tests.reference import numpy_amsgrad

CONVENTIONS = amsgrad_optax.CONVENTIONS


# ---------------------------------------------------------------- item 1


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("name,value", [("b1", 1 - 2**-26), ("b2", 0.99999999)])
def test_beta_that_rounds_to_one_in_float32_is_refused(convention, name, value):
  """0.99999999 is < 1 in float64 but exactly 1.0 in float32, where the update runs.

  Found by: test_fuzz.py::test_pytorch_matches_live_torch (region "rounds-to-one"). On the
  unfixed code "keras" and "optax" return all-zero updates, "pytorch" lr-sized sign steps and
  "paper" a step of about 1 (0.1 g / eps), all silently.
  """
  assert np.float32(value) == 1.0 and value < 1.0
  with pytest.raises(ValueError, match=rf"{name}.*float32"):
    amsgrad_optax.amsgrad(1e-3, **{name: value}, convention=convention)


def test_adamnc_b1_that_rounds_to_one_in_float32_is_refused():
  with pytest.raises(ValueError, match=r"b1.*float32"):
    amsgrad_optax.adamnc(1e-3, b1=1 - 2**-26)


def test_learning_rate_that_overflows_float16_is_refused_for_float16_params():
  """-lr * u is formed in the params' dtype: 1e5 is inf in float16, so the updates are inf, and
  NaN where u is 0 (0 * inf). Found by: test_fuzz.py::test_every_convention_and_adamnc_match_numpy
  (a float16 leaf, lr = 3.4e32: NaN where float64 is finite); region "rate-overflows-dtype".
  """
  tx = amsgrad_optax.amsgrad(1e5)
  params = jnp.ones(2, jnp.float16)
  with pytest.raises(ValueError, match=r"learning_rate.*float16"):
    tx.update(jnp.array([1.0, 0.0], jnp.float16), tx.init(params), params)


# ---------------------------------------------------------------- item 2


@pytest.mark.parametrize("how", ["wrapper", "flag"])
def test_skip_nonfinite_state_is_donatable(how):
  """Found by: test_fuzz.py::test_every_state_is_donatable (wrappers skip_nonfinite*)."""
  if how == "wrapper":
    tx = amsgrad_optax.skip_nonfinite(amsgrad_optax.amsgrad(1e-3))
  else:
    tx = amsgrad_optax.amsgrad(1e-3, skip_nonfinite=True)

  def step(p, s, g):
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

  params = jnp.ones(3)
  p, s = jax.jit(step, donate_argnums=(0, 1))(params, tx.init(params), jnp.full(3, 0.5))
  assert int(s.total_skipped) == 0 and bool(jnp.all(p < 1.0))


# ---------------------------------------------------------------- item 3


def _final_loss(tx_of_lr, lr, grads_of, steps=3):
  tx = tx_of_lr(lr)
  p = jnp.array([1.0, 2.0, -1.5])
  s = tx.init(p)
  for t in range(steps):
    u, s = tx.update(grads_of(p, t), s, p)
    p = optax.apply_updates(p, u)
  return jnp.sum(p**2)


def test_meta_gradient_through_a_skipped_nan_step_equals_the_clean_run():
  """The forward pass equals the run without the NaN step; so must d/d lr.

  Found by: test_fuzz.py::test_meta_gradient_is_finite_where_the_forward_is_and_matches_finite_
  differences (wrapper skip_nonfinite, a NaN step).
  """
  with jax.enable_x64(True):
    skipping = lambda lr: amsgrad_optax.skip_nonfinite(amsgrad_optax.amsgrad(lr))  # noqa: E731
    # The NaN does not depend on p: a NaN that did would make d grads/d p NaN itself.
    with_nan = lambda p, t: jnp.full_like(p, jnp.nan) if t == 1 else p  # noqa: E731
    lr = jnp.asarray(0.1)
    value, grad = jax.value_and_grad(lambda lr: _final_loss(skipping, lr, with_nan))(lr)
    clean = lambda lr: _final_loss(amsgrad_optax.amsgrad, lr, lambda p, t: p, steps=2)  # noqa: E731
    want_value, want_grad = jax.value_and_grad(clean)(lr)
    np.testing.assert_allclose(float(value), float(want_value), rtol=1e-12)
    np.testing.assert_allclose(float(grad), float(want_grad), rtol=1e-10)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_meta_gradient_with_a_never_moved_coordinate_is_finite(convention):
  """A coordinate whose gradient is always 0 contributes nothing; its derivative is 0, not NaN.

  Found by: test_fuzz.py::test_meta_gradient_is_finite_where_the_forward_is_and_matches_finite_
  differences (silent coordinate, eps = 1e-3: it is not only eps = 0). Checked against a central
  finite difference in float64, under jit as the fuzz target runs it.
  """
  with jax.enable_x64(True):
    mask = jnp.array([0.0, 1.0, 1.0])
    make = lambda lr: amsgrad_optax.amsgrad(lr, 0.0, 0.99, 1e-3, convention=convention)  # noqa: E731
    f = jax.jit(lambda lr: _final_loss(make, lr, lambda p, t: (p - 0.5) * mask))
    lr, h = jnp.asarray(0.05), 1e-6
    grad = float(jax.grad(f)(lr))
    fd = float((f(lr + h) - f(lr - h)) / (2 * h))
    assert np.isfinite(grad)
    np.testing.assert_allclose(grad, fd, rtol=1e-6)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_eps_derivative_at_zero_eps_is_finite(convention):
  with jax.enable_x64(True):

    def first_update(eps):
      tx = amsgrad_optax.amsgrad(0.1, eps=eps, convention=convention)
      u, _ = tx.update(jnp.array([0.0, 1.0]), tx.init(jnp.zeros(2)))
      return jnp.sum(u)

    f = jax.jit(first_update)
    h = 1e-9
    grad = float(jax.grad(f)(jnp.asarray(0.0)))
    fd = float((f(jnp.asarray(h)) - f(jnp.asarray(0.0))) / h)  # one-sided: eps >= 0
    assert np.isfinite(grad)
    np.testing.assert_allclose(grad, fd, rtol=1e-3)


# ---------------------------------------------------------------- item 5


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_float16_params_get_float32_mu(convention):
  """Found by: test_fuzz.py::test_float16_small_gradients_are_not_lost."""
  state = amsgrad_optax.amsgrad(1e-3, convention=convention).init(jnp.zeros(4, jnp.float16))
  assert state[0].mu.dtype == jnp.float32


# ---------------------------------------------------------------- item 6


def _complex_problem(steps=5, n=6, seed=0):
  rng = np.random.default_rng(seed)
  p = (rng.normal(size=n) + 1j * rng.normal(size=n)).astype(np.complex64)
  g = (rng.normal(size=(steps, n)) + 1j * rng.normal(size=(steps, n))).astype(np.complex64)
  return p, g


def _run(tx, p, g):
  p = jnp.asarray(p)
  s = tx.init(p)
  step = jax.jit(lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), s))(*tx.update(g, s, p)))
  out = []
  for t in range(len(g)):
    p, s = step(p, s, jnp.asarray(g[t]))
    out.append(np.asarray(p))
  return np.stack(out)


def test_complex_params_under_pytorch_follow_torch_view_as_real():
  """Found by: test_fuzz.py::test_complex_params_follow_their_framework (and the float64 target).

  torch treats a complex parameter as view_as_real: separate moments for the real and the
  imaginary part. On the unfixed code the params are 0.26 off after 5 steps (|p| ~ 1.7).
  """
  pytest.importorskip("torch")
  p, g = _complex_problem()
  want = live.torch_run(
    [p], [g], [np.complex64], lr=0.1, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, decoupled=False
  )[0]
  got = _run(amsgrad_optax.amsgrad(0.1), p, g)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.standard_promotion
def test_complex_params_under_optax_are_bit_equal_to_optax():
  """re*re + im*im rounds differently from optax's (conj(g) * g).real.

  Found by: test_fuzz.py::test_complex_params_follow_their_framework.
  """
  p, g = _complex_problem(steps=5, n=64, seed=1)
  got = _run(amsgrad_optax.amsgrad(0.1, convention="optax"), p, g)
  want = _run(optax.amsgrad(0.1), p, g)
  np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- item 7


@pytest.mark.standard_promotion
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_inject_hyperparams_keeps_the_plain_state_tree(convention):
  """Found by: test_fuzz.py::test_inject_hyperparams_with_defaults_is_the_plain_optimizer."""
  params = jnp.ones(3)
  plain = amsgrad_optax.amsgrad(0.1, convention=convention)
  injected = optax.inject_hyperparams(amsgrad_optax.amsgrad, static_args=("convention",))(
    0.1, convention=convention
  )
  assert jax.tree.structure(injected.init(params).inner_state) == jax.tree.structure(
    plain.init(params)
  )


@pytest.mark.standard_promotion
def test_inject_hyperparams_optax_is_bit_equal_to_injected_optax_amsgrad():
  """An injected b1_decay = 1.0 took the decaying-b1 bias correction (-expm1(t log b1)).

  On the unfixed code 50 of these 1920 updates differ by an ulp (the params after
  apply_updates often hide it, hence the updates are compared).
  """
  rng = np.random.default_rng(2)
  params = jnp.asarray(rng.normal(size=64).astype(np.float32))
  grads = rng.normal(size=(30, 64)).astype(np.float32)
  ours = optax.inject_hyperparams(amsgrad_optax.amsgrad, static_args=("convention",))(
    0.1, convention="optax"
  )
  theirs = optax.inject_hyperparams(optax.amsgrad)(0.1)
  runs = []
  for tx in (ours, theirs):
    state, update, updates = tx.init(params), jax.jit(tx.update), []
    for g in grads:
      u, state = update(jnp.asarray(g), state, params)
      updates.append(np.asarray(u))
    runs.append(np.stack(updates))
  np.testing.assert_array_equal(runs[0], runs[1])


# ---------------------------------------------------------------- item 10


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_complex_gradient_on_real_params_raises(convention):
  """Found by: test_fuzz.py::test_complex_gradients_on_real_params_raise."""
  tx = amsgrad_optax.amsgrad(1e-3, convention=convention)
  params = jnp.ones(3)
  with pytest.raises(TypeError, match="complex"):
    tx.update(jnp.full(3, 1 + 1j, jnp.complex64), tx.init(params), params)


# ---------------------------------------------------------------- found on main after the fixes


@pytest.mark.standard_promotion
@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("shape", [(1,), (4,)])
def test_injected_b1_decay_of_one_changes_no_value(convention, shape):
  """Injecting b1_decay=1.0 changes no bit for a leaf of several elements, and only round-off
  for a one-element leaf.

  Found by: test_fuzz.py::test_inject_hyperparams_with_defaults_is_the_plain_optimizer: for a
  param of shape () or (1,), 9 to 12 of these 20 jitted updates differed in the last bits, in
  every convention. The traced rate gives the constant rate's values exactly ((b1, 1 - b1), see
  ``_transform._decayed_b1``), and shapes (4,) and up agree bit for bit; a one-element leaf is
  compiled by XLA:CPU into scalar code whose multiply-adds it may contract differently when the
  graph around them differs (an optimization barrier on the rates does not change that), so
  there the two agree to float32 round-off (docs/silent_failures.md).
  """
  inject = optax.inject_hyperparams(amsgrad_optax.amsgrad)
  grads = np.random.default_rng(0).normal(size=(20, 1)).astype(np.float32)
  params = jnp.zeros(shape)
  runs = []
  for tx in (inject(0.1, convention=convention), inject(0.1, convention=convention, b1_decay=1.0)):
    state, update, updates = tx.init(params), jax.jit(tx.update), []
    for g in grads:
      u, state = update(jnp.broadcast_to(jnp.asarray(g), shape), state, params)
      updates.append(np.asarray(u))
    runs.append(np.stack(updates))
  if shape == (1,):
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-5, atol=1e-8)
  else:
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.parametrize("how", ["wrapper", "flag"])
def test_skip_nonfinite_takes_python_number_leaves(how):
  """A Python-number leaf is a valid pytree leaf for every optimizer, skip_nonfinite included.

  Found by: test_fuzz.py::test_jit_equals_eager (wrapper skip_nonfinite, a Python-float leaf,
  eager), run against main at c709217, where the new zero-substitution of non-finite gradients
  calls ``.dtype`` on the float: AttributeError. Passes on the code before c709217.
  """
  if how == "wrapper":
    tx = amsgrad_optax.skip_nonfinite(amsgrad_optax.amsgrad(0.1))
  else:
    tx = amsgrad_optax.amsgrad(0.1, skip_nonfinite=True)
  params = {"w": 1.0}
  updates, state = tx.update({"w": 0.5}, tx.init(params), params)
  # The first AMSGrad step of any convention is -lr * sign(g) when eps is negligible.
  np.testing.assert_allclose(float(updates["w"]), -0.1, rtol=1e-6)
  assert int(state.total_skipped) == 0


# ---------------------------------------------------------------- found this session: b1 decay


def _updates(tx, grads):
  params = jnp.zeros(grads.shape[1:])
  state, update, out = tx.init(params), jax.jit(tx.update), []
  for g in grads:
    u, state = update(jnp.asarray(g), state, params)
    out.append(np.asarray(u))
  return np.stack(out)


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("b1", [0.99999, 0.9999, 0.9])
def test_decaying_b1_near_one_keeps_the_first_step_and_the_float64_steps(convention, b1):
  """With ``b1_decay`` the first step is the constant rate's, and the run is the float64 loop's.

  Found by: test_fuzz.py::test_every_convention_and_adamnc_match_numpy (deep profile):
  b1 = 0.99999, b1_decay = 0.99, lr = 1, eps = 0 gave a first step of -1.00136 under
  "pytorch", where the float64 loop (and the same call without a decay) gives -1: the rate
  was ``1 - float32(b1)`` (1.00136e-5), the bias correction ``1 - b1`` in double (1e-5). The
  rate is now ``(1 - b1) + b1 (1 - decay**(t-1))``, ``1 - b1`` formed as without a decay.
  At t = 1 the decay changes nothing, so the two first steps must be equal bit for bit;
  where beta is kept in double ("pytorch", "paper"), the whole run follows the float64 loop
  ("keras" and "optax" round beta to float32 in the corrections, as their frameworks do).
  """
  grads = np.random.default_rng(3).normal(size=(30, 5)).astype(np.float32)
  got = _updates(
    amsgrad_optax.amsgrad(0.1, b1, 0.999, 1e-8, convention=convention, b1_decay=0.99), grads
  )
  constant = _updates(amsgrad_optax.amsgrad(0.1, b1, 0.999, 1e-8, convention=convention), grads[:1])
  np.testing.assert_array_equal(got[:1], constant)
  if not amsgrad_optax.get_convention(convention).rounded_beta:
    want = numpy_amsgrad.amsgrad(grads, 0.1, b1, 0.999, 1e-8, convention=convention, b1_decay=0.99)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * np.abs(want).max())


# ---------------------------------------------------------------- found this session: inject dtypes


@pytest.mark.standard_promotion
@pytest.mark.parametrize(
  "dtype, error", [(jnp.bfloat16, ValueError), (jnp.float16, None), (jnp.complex64, TypeError)]
)
def test_inject_hyperparams_on_low_precision_or_complex_params_names_hyperparam_dtype(dtype, error):
  """optax.inject_hyperparams casts hyperparameters to the first param's dtype.

  Found by: the fuzz suite's deep profile (test_jit_equals_eager, test_wrappers_do_not_change_
  the_optimizer): with complex64 params every injected hyperparameter is complex and was
  refused as "must be a real number", with bfloat16 params b2 = 0.999 becomes 1 and was refused
  as out of range, neither message saying why. Both now name the cure; with it
  (hyperparam_dtype=jnp.float32) the update is the plain call's. float16 keeps b2 = 0.999 < 1
  (0.99902): accepted, a slightly different b2.
  """
  params = jnp.ones(3, dtype)
  grads = jnp.full(3, 0.5, dtype)
  default = optax.inject_hyperparams(amsgrad_optax.amsgrad)(1e-3, b2=0.999)
  if error is None:
    default.update(grads, default.init(params), params)
  else:
    with pytest.raises(error, match="pass hyperparam_dtype=jnp.float32"):
      default.update(grads, default.init(params), params)
  fixed = optax.inject_hyperparams(amsgrad_optax.amsgrad, hyperparam_dtype=jnp.float32)(
    1e-3, b2=0.999
  )
  plain = amsgrad_optax.amsgrad(1e-3, b2=0.999)
  got, _ = fixed.update(grads, fixed.init(params), params)
  want, _ = plain.update(grads, plain.init(params), params)
  np.testing.assert_allclose(
    np.asarray(got), np.asarray(want), rtol=2e-3 if dtype != jnp.complex64 else 1e-5
  )
