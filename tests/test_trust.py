"""Regression tests for the silent wrong answers found from outside (issue 13).

Each test names the defect it guards and asserts against an independent
reference: optax itself, torch, a float64 NumPy loop, or finite differences.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import amsgrad_optax

CONVENTIONS = amsgrad_optax.CONVENTIONS


def _structure(tree):
  """The tree as (path, shape, dtype) rows: equal for optax's and our NamedTuple of one layout."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return [(jax.tree_util.keystr(p), jnp.shape(x), jnp.result_type(x)) for p, x in leaves]


# ------------------------------------------------ 1: hyperparameters in the arithmetic dtype


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize(
  "kwargs, name",
  [
    (dict(b2=0.99999999), "b2"),
    (dict(b1=0.999999999), "b1"),
    (dict(eps=1e39), "eps"),
    (dict(eps_root=1e39), "eps_root"),
  ],
)
def test_values_invalid_in_float32_are_errors(convention, kwargs, name):
  # Each is valid in float64, where the check used to run, and broken in float32, where the
  # arithmetic runs: b2 -> 1.0 froze Keras's moments and gave optax NaN.
  with pytest.raises(ValueError, match=rf"{name}=\S+ (rounds to 1.0|overflows to inf) in float32"):
    amsgrad_optax.amsgrad(1e-3, convention=convention, **kwargs)


def test_the_error_names_the_largest_valid_value():
  with pytest.raises(ValueError, match=r"largest valid b2 in float32 is 0\.99999994"):
    amsgrad_optax.amsgrad(1e-3, b2=0.99999999)
  # ... and that value is accepted and keeps the moments moving.
  tx = amsgrad_optax.amsgrad(1e-3, b2=0.99999994, convention="keras")
  u, _ = tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))
  assert np.all(np.isfinite(u)) and np.all(np.asarray(u) != 0)


@pytest.mark.parametrize(
  "kwargs, name",
  [(dict(learning_rate=1e300), "learning_rate"), (dict(weight_decay=1e39), "weight_decay")],
)
def test_rates_that_overflow_float32_are_errors(kwargs, name):
  with pytest.raises(ValueError, match=rf"{name}=\S+ overflows to inf in float32"):
    amsgrad_optax.amsgrad(**{"learning_rate": 1e-3, **kwargs})


def test_learning_rate_is_checked_in_the_updates_dtype():
  # -lr * u is formed in the gradient's dtype: 1e5 is inf in float16.
  tx = amsgrad_optax.amsgrad(1e5)
  params = jnp.ones(2, jnp.float16)
  with pytest.raises(ValueError, match="learning_rate=100000.0 overflows to inf in float16"):
    tx.update(jnp.ones(2, jnp.float16), tx.init(params), params)


def test_float64_values_are_valid_under_x64_with_float64_params_only():
  with jax.enable_x64(True):
    tx = amsgrad_optax.amsgrad(1e-3, b2=0.99999999)  # fine in float64
    p64 = jnp.ones(2, jnp.float64)
    u, _ = tx.update(jnp.ones(2, jnp.float64), tx.init(p64), p64)
    assert np.all(np.isfinite(u))
    p32 = jnp.ones(2, jnp.float32)
    with pytest.raises(ValueError, match="b2=0.99999999 rounds to 1.0 in float32"):
      tx.update(jnp.ones(2, jnp.float32), tx.init(p32), p32)


def test_python_float_and_array_are_treated_alike():
  for b2 in (0.99999999, jnp.array(0.99999999)):
    with pytest.raises(ValueError, match="b2"):
      amsgrad_optax.amsgrad(1e-3, b2=b2)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float8_e4m3fn])
def test_low_precision_scalar_hyperparameters_are_numbers(dtype):
  # They used to get "must be a real number".
  tx = amsgrad_optax.amsgrad(jnp.asarray(0.01, dtype), b1=jnp.asarray(0.5, dtype))
  u, _ = tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))
  assert np.all(np.isfinite(u))
  # bfloat16 rounds 0.999 to 1.0: an error that shows the dtype.
  with pytest.raises(ValueError, match=r"b2 must be in \[0, 1\), got Array\(1, dtype=bfloat16\)"):
    amsgrad_optax.amsgrad(1e-3, b2=jnp.asarray(0.999, jnp.bfloat16))


# ------------------------------------------------ 7: inject_hyperparams changes nothing


def _steps(tx, params, grads, n=20, jit=True):
  state = tx.init(params)
  update = jax.jit(tx.update) if jit else tx.update
  out = []
  for i in range(n):
    u, state = update(jax.tree.map(lambda g, i=i: g * (1 + 0.1 * i), grads), state, params)
    params = optax.apply_updates(params, u)
    out.append(u)
  return out, state


PARAMS = [-jnp.ones((2, 3)), jnp.ones((2, 5, 2))]
GRADS = [
  jnp.ones((2, 3)).at[0, 0].set(-0.0),
  -jnp.ones((2, 5, 2)) * jnp.linspace(0, 2, 20).reshape(2, 5, 2),
]


@pytest.mark.standard_promotion
def test_inject_hyperparams_is_bit_equal_to_optax_and_has_its_state_tree():
  ours = optax.inject_hyperparams(amsgrad_optax.amsgrad)(0.1, convention="optax")
  theirs = optax.inject_hyperparams(optax.amsgrad)(0.1)
  u1, s1 = _steps(ours, PARAMS, GRADS)
  u2, s2 = _steps(theirs, PARAMS, GRADS)
  assert _structure(s1) == _structure(s2)
  assert sorted(s1.hyperparams) == sorted(s2.hyperparams)
  for a, b in zip(u1, u2, strict=True):
    jax.tree.map(np.testing.assert_array_equal, a, b)
  for a, b in zip(jax.tree.leaves(s1.inner_state), jax.tree.leaves(s2.inner_state), strict=True):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_inject_hyperparams_wraps_every_convention_unchanged(convention):
  # optax's alias_test.py test_optimizers_can_be_wrapped_in_inject_hyperparams, made exact.
  plain = amsgrad_optax.amsgrad(0.1, convention=convention)
  injected = optax.inject_hyperparams(amsgrad_optax.amsgrad)(0.1, convention=convention)
  u1, s1 = _steps(plain, PARAMS, GRADS, n=5)
  u2, s2 = _steps(injected, PARAMS, GRADS, n=5)
  assert _structure(s2.inner_state) == _structure(s1)
  # Injected hyperparameters are float32 arrays: 1 - b2 is then formed in float32, not from the
  # Python float in double precision, so the steps differ in the last bits (as optax's do).
  for a, b in zip(u1, u2, strict=True):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-5, atol=0), a, b)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_injected_defaults_give_the_default_arithmetic(convention):
  # b1_decay=1.0 and weight_decay=0.0 injected (traced under jit) must take the constant-b1,
  # no-decay arithmetic bit for bit, including a -0.0 gradient and an inf param.
  params = [jnp.array([1.0, jnp.inf, -2.0]), jnp.ones(2)]
  grads = [jnp.array([-0.0, 0.5, 3.0]), jnp.array([0.25, -1.0])]
  plain = optax.inject_hyperparams(amsgrad_optax.amsgrad)(0.1, convention=convention)
  injected = optax.inject_hyperparams(amsgrad_optax.amsgrad)(
    0.1, convention=convention, b1_decay=1.0, weight_decay=0.0
  )
  u1, s1 = _steps(plain, params, grads, n=6)
  u2, s2 = _steps(injected, params, grads, n=6)
  assert _structure(s2.inner_state) == _structure(s1.inner_state)
  for a, b in zip(u1, u2, strict=True):
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_state_structure_does_not_depend_on_number_or_array():
  params = {"w": jnp.ones(3)}
  trees = [
    _structure(amsgrad_optax.amsgrad(0.1, **kw).init(params))
    for kw in (
      {},
      dict(weight_decay=0.0),
      dict(weight_decay=0.01),
      dict(weight_decay=jnp.array(0.0)),
      dict(weight_decay=jnp.array(0.01), decoupled_weight_decay=False),
      dict(b1_decay=jnp.array(1.0)),
      dict(b1_decay=0.99),
    )
  ]
  assert all(t == trees[0] for t in trees)
  assert trees[0] == _structure(optax.amsgrad(0.1).init(params))


@pytest.mark.standard_promotion
def test_an_optax_amsgrad_state_is_restored_unchanged_into_the_optax_convention():
  # Same tree, same arithmetic: a user switching from optax.amsgrad keeps the state.
  theirs = optax.amsgrad(0.1)
  ours = amsgrad_optax.amsgrad(0.1, convention="optax")
  _, s_theirs = _steps(theirs, PARAMS, GRADS, n=3)
  u1, _ = jax.jit(theirs.update)(GRADS, s_theirs)
  u2, _ = jax.jit(ours.update)(GRADS, s_theirs)
  jax.tree.map(np.testing.assert_array_equal, u1, u2)


# ------------------------------------------------ 6: complex params, each framework's way


def _complex_problem(seed=0, steps=30, shape=(3, 4)):
  rng = np.random.default_rng(seed)
  params = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
  grads = [
    (rng.normal(size=shape) * 10.0 ** rng.uniform(-2, 1) + 1j * rng.normal(size=shape)).astype(
      np.complex64
    )
    for _ in range(steps)
  ]
  grads[3][0, 0] = 0.0
  grads[4][1, 1] = 1j  # a purely imaginary gradient
  return params, grads


def _run_ours(tx, params, grads):
  state = tx.init(jnp.asarray(params))
  p = jnp.asarray(params)
  update = jax.jit(tx.update)
  for g in grads:
    u, state = update(jnp.asarray(g), state, p)
    p = optax.apply_updates(p, u)
  return np.asarray(p), state


@pytest.mark.standard_promotion
def test_complex_optax_convention_is_bit_equal_to_optax():
  params, grads = _complex_problem()
  p1, s1 = _run_ours(amsgrad_optax.amsgrad(0.01, convention="optax"), params, grads)
  p2, s2 = _run_ours(optax.amsgrad(0.01), params, grads)
  np.testing.assert_array_equal(p1, p2)
  assert _structure(s1) == _structure(s2)
  for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s2), strict=True):
    np.testing.assert_array_equal(a, b)


def _numpy_real_view(params, grads, lr, b1=0.9, b2=0.999, eps=1e-8):
  """torch's complex AMSGrad: the real and imaginary parts as separate float64 coordinates."""
  p = np.stack([params.real, params.imag]).astype(np.float64)
  m, v, vmax = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
  for t, g in enumerate(grads, start=1):
    g = np.stack([g.real, g.imag]).astype(np.float64)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    vmax = np.maximum(vmax, v)
    p = p - lr * (m / (1 - b1**t)) / (np.sqrt(vmax) / np.sqrt(1 - b2**t) + eps)
  return p[0] + 1j * p[1], vmax[0] + 1j * vmax[1]


def test_complex_pytorch_convention_is_torchs_real_view():
  params, grads = _complex_problem(steps=300)
  p, state = _run_ours(amsgrad_optax.amsgrad(0.01), params, grads)
  want_p, want_vmax = _numpy_real_view(params, grads, 0.01)
  np.testing.assert_allclose(p, want_p, rtol=1e-5, atol=1e-5)
  s = state[0]
  assert s.nu.dtype == s.nu_max.dtype == jnp.complex64
  np.testing.assert_allclose(s.nu_max, want_vmax, rtol=1e-5)


def test_complex_pytorch_convention_matches_live_torch():
  torch = pytest.importorskip("torch")
  params, grads = _complex_problem(steps=300)
  p_t = torch.nn.Parameter(torch.tensor(params))
  opt = torch.optim.Adam([p_t], lr=0.01, amsgrad=True)
  for g in grads:
    p_t.grad = torch.tensor(g)
    opt.step()
  p, state = _run_ours(amsgrad_optax.amsgrad(0.01), params, grads)
  np.testing.assert_allclose(p, p_t.detach().numpy(), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
    state[0].nu_max, opt.state[p_t]["max_exp_avg_sq"].numpy(), rtol=1e-5, atol=1e-30
  )
  # The |g|^2 of the other conventions is a different optimizer: it must not match.
  p_abs, _ = _run_ours(amsgrad_optax.amsgrad(0.01, convention="paper"), params, grads)
  assert not np.allclose(p_abs, p_t.detach().numpy(), rtol=1e-3)


def test_keras_squares_a_complex_gradient_and_the_keras_convention_does_not():
  # A documented decision: Keras forms square(g) = g * g for a complex g, which is not a second
  # moment (its imaginary part can be negative); "keras" keeps a real EMA of |g|^2.
  keras = pytest.importorskip("keras")
  g = np.array([0.5 + 1j, -2 + 0.1j], np.complex64)
  var = keras.Variable(np.array([1 + 2j, 3 - 1j], np.complex64))
  opt = keras.optimizers.Adam(0.1, amsgrad=True)
  opt.apply_gradients([(g, var)])
  keras_v = [np.asarray(x) for x in opt.variables if np.asarray(x).shape == (2,)][1]
  np.testing.assert_allclose(keras_v, 0.001 * g * g, rtol=1e-5)
  tx = amsgrad_optax.amsgrad(0.1, convention="keras")
  _, state = tx.update(jnp.asarray(g), tx.init(jnp.zeros(2, jnp.complex64)))
  assert state[0].nu.dtype == jnp.float32
  np.testing.assert_allclose(state[0].nu, 0.001 * np.abs(g) ** 2, rtol=1e-5)


# ------------------------------------------------ 10: complex gradients on real params


def test_complex_gradient_for_a_real_param_is_an_error():
  tx = amsgrad_optax.amsgrad(0.1)
  with pytest.raises(
    TypeError, match=r"the leaf at \['w'\] is complex \(complex64\) but its param"
  ):
    tx.update({"w": jnp.ones(2, jnp.complex64)}, tx.init({"w": jnp.ones(2)}))


# ------------------------------------------------ 5: float16 params keep small gradients


def _float64_amsgrad_sum(grads, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
  m = v = vmax = total = 0.0
  for t, g in enumerate(grads, start=1):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    vmax = np.maximum(vmax, v)
    total = total - lr * (m / (1 - b1**t)) / (np.sqrt(vmax) / np.sqrt(1 - b2**t) + eps)
  return total


@pytest.mark.parametrize("scale", [1e-6, 1e-5])
def test_float16_params_do_not_lose_small_gradients(scale):
  rng = np.random.default_rng(0)
  grads = (rng.normal(size=(200, 256)) * scale).astype(np.float16).astype(np.float64)
  want = _float64_amsgrad_sum(grads)
  tx = amsgrad_optax.amsgrad(1e-3)
  params = jnp.zeros(256, jnp.float16)
  state = tx.init(params)
  total = np.zeros(256)
  update = jax.jit(tx.update)
  for g in grads:
    u, state = update(jnp.asarray(g, jnp.float16), state)
    total += np.asarray(u, np.float64)
  # Float16 mu lost 17% (1e-6) and 1.6% (1e-5); a float32 mu leaves the final float16 rounding
  # of each update (2^-11) alone.
  assert np.linalg.norm(total - want) / np.linalg.norm(want) < 1e-3


# ------------------------------------------------ 3: gradients through the optimizer


def _target():
  return jnp.array([0.3, -1.0, 2.0, 0.0])


def _loss(p):
  # "z" never gets a gradient: its history stays zero (nu_max = 0), the case that made
  # meta-gradients NaN through sqrt's infinite slope at 0.
  return jnp.sum((p["w"] - _target()) ** 2 * jnp.arange(1.0, 5.0)) + 0.0 * jnp.sum(p["z"])


def _meta(lr, eps, convention, wrap, nan_step=None, steps=6):
  tx = wrap(amsgrad_optax.amsgrad(lr, eps=eps, convention=convention))
  p = {"w": jnp.array([1.0, -2.0, 0.5, 0.0]), "z": jnp.zeros(3)}
  state = tx.init(p)
  for k in range(steps):
    g = jax.grad(_loss)(p)
    if k == nan_step:
      g = jax.tree.map(lambda x: jnp.where(True, jnp.full_like(x, jnp.nan), x), g)
    u, state = tx.update(g, state, p)
    p = optax.apply_updates(p, u)
  return _loss(p)


WRAPPERS = {
  "plain": lambda tx: tx,
  "skip_nonfinite": amsgrad_optax.skip_nonfinite,
  "multi_steps": lambda tx: optax.MultiSteps(tx, every_k_schedule=2),
}


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("wrap", sorted(WRAPPERS))
def test_meta_gradient_matches_finite_differences(convention, wrap):
  with jax.enable_x64(True), jax.numpy_dtype_promotion("standard"):
    f = jax.jit(lambda lr: _meta(lr, 1e-8, convention, WRAPPERS[wrap]))
    grad = float(jax.grad(f)(0.05))
    # A five-point difference (error ~h^4): a smaller h meets round-off from optax.MultiSteps,
    # which keeps parts of its state in float32 (a central difference at h = 1e-6 is 1e-4 off).
    h = 1e-4
    fd = (
      8 * (float(f(0.05 + h)) - float(f(0.05 - h)))
      - float(f(0.05 + 2 * h))
      + float(f(0.05 - 2 * h))
    ) / (12 * h)
  assert np.isfinite(grad)
  np.testing.assert_allclose(grad, fd, rtol=1e-5)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_meta_gradient_through_a_skipped_nan_step(convention):
  # The forward run with a NaN step skipped equals the clean 5-step run; so must its gradient.
  with jax.enable_x64(True), jax.numpy_dtype_promotion("standard"):
    skip = amsgrad_optax.skip_nonfinite

    def with_nan(lr):
      return _meta(lr, 1e-8, convention, skip, nan_step=3)

    def clean(lr):
      return _meta(lr, 1e-8, convention, skip, steps=5)

    np.testing.assert_array_equal(jax.jit(with_nan)(0.05), jax.jit(clean)(0.05))
    grad = float(jax.jit(jax.grad(with_nan))(0.05))
    want = float(jax.jit(jax.grad(clean))(0.05))
  assert np.isfinite(grad)
  np.testing.assert_allclose(grad, want, rtol=1e-12)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_gradient_with_respect_to_eps_at_zero(convention):
  # At eps = 0 a coordinate with zero history has the step 0/0 := 0; d/d eps there is finite
  # and matches the one-sided difference.
  with jax.enable_x64(True), jax.numpy_dtype_promotion("standard"):
    f = jax.jit(lambda eps: _meta(0.05, eps, convention, WRAPPERS["plain"]))
    grad = float(jax.grad(f)(0.0))
    h = 1e-9
    fd = (float(f(h)) - float(f(0.0))) / h
  assert np.isfinite(grad)
  np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-6)


def test_diagnostics_count_the_real_and_imaginary_coordinates_under_pytorch():
  # torch's real view: g = (1+1j, 0.5j, 2) is six coordinates, gradients (1, 0, 2, 1, 0.5, 0).
  # After one step s = lr/c1 / (|g| + eps) = 1/|g| (lr 0.1, c1 = 0.1), 1e8 where g = 0.
  tx = amsgrad_optax.amsgrad(0.1)
  p = jnp.ones(3, jnp.complex64)
  _, state = tx.update(jnp.array([1 + 1j, 0.5j, 2.0], jnp.complex64), tx.init(p), p)
  d = amsgrad_optax.diagnostics(state, tx)
  np.testing.assert_allclose(float(d["step_min"]), 0.5, rtol=1e-6)
  np.testing.assert_allclose(float(d["step_median"]), (1.0 + 2.0) / 2, rtol=1e-6)
  np.testing.assert_allclose(float(d["step_max"]), 1e8, rtol=1e-6)
