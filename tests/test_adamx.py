"""AdamX (Tran & Phong 2019, Algorithm 2) against a float64 NumPy loop written from the paper."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import amsgrad_optax
from amsgrad_optax import synthetic

STEPS = 80


def _reference(grads, *, alpha, b1, b2, lam, eps=0.0, adamx=True):
  """Returns (updates, vhat) at every step, float64, from arXiv:1904.03590, Algorithms 1 and 2.

  beta_{1,t} = b1 * lam**(t-1), alpha_t = alpha / sqrt(t), no bias correction;
  AdamX: vhat_1 = v_1 and vhat_t = max((1-b1_t)^2 / (1-b1_{t-1})^2 * vhat_{t-1}, v_t);
  AMSGrad (adamx=False): vhat_t = max(vhat_{t-1}, v_t).
  """
  grads = np.asarray(grads, np.float64)
  m = np.zeros(grads.shape[1:])
  v = np.zeros(grads.shape[1:])
  vhat = np.zeros(grads.shape[1:])
  updates, vhats = [], []
  b1_prev = None
  for t in range(1, len(grads) + 1):
    g = grads[t - 1]
    b1_t = b1 * lam ** (t - 1)
    m = b1_t * m + (1 - b1_t) * g
    v = b2 * v + (1 - b2) * g**2
    if t == 1:
      vhat = v.copy()
    elif adamx:
      vhat = np.maximum((1 - b1_t) ** 2 / (1 - b1_prev) ** 2 * vhat, v)
    else:
      vhat = np.maximum(vhat, v)
    updates.append(-alpha / np.sqrt(t) * m / (np.sqrt(vhat) + eps))
    vhats.append(vhat.copy())
    b1_prev = b1_t
  return np.stack(updates), np.stack(vhats)


def _grads(seed=0, shape=(5,)):
  rng = np.random.default_rng(seed)
  scale = 10.0 ** rng.uniform(-1, 1, size=shape)
  # Shrinking gradients with spikes: v_t falls below the running max, which then binds.
  g = rng.normal(size=(STEPS, *shape)) * scale * np.linspace(3.0, 0.3, STEPS)[:, None]
  g = np.where(rng.random(size=g.shape) < 0.05, 20.0 * g, g)
  return g.astype(np.float32)


def _nu_max(state):
  """The running max of a scale_by_adamx state, alone or inside an optimizer's chain."""
  is_state = lambda s: isinstance(s, amsgrad_optax.ScaleByAmsgradState)  # noqa: E731
  return next(s for s in jax.tree.leaves(state, is_leaf=is_state) if is_state(s)).nu_max


def _run(tx, grads):
  """Our updates and nu_max at every step."""

  @jax.jit
  def run(grads):
    def step(state, g):
      u, state = tx.update(g, state)
      return state, (u, _nu_max(state))

    return jax.lax.scan(step, tx.init(grads[0]), grads)[1]

  u, nu_max = run(jnp.asarray(grads))
  return np.asarray(u), np.asarray(nu_max)


@pytest.mark.parametrize(
  ("b1", "lam", "b2", "eps"),
  [(0.9, 0.9, 0.999, 0.0), (0.9, 0.99, 0.99, 1e-8), (0.5, 0.7, 0.9, 0.0)],
)
def test_adamx_matches_the_papers_algorithm(b1, lam, b2, eps):
  g = _grads()
  alpha = 0.1
  want_u, want_vhat = _reference(g, alpha=alpha, b1=b1, b2=b2, lam=lam, eps=eps)
  tx = amsgrad_optax.adamx(amsgrad_optax.inverse_sqrt_schedule(alpha), b1, b2, eps, b1_decay=lam)
  u, nu_max = _run(tx, g)
  np.testing.assert_allclose(nu_max, want_vhat, rtol=2e-5)
  np.testing.assert_allclose(u, want_u, rtol=2e-5, atol=1e-7)


def test_the_factor_changes_the_run_with_a_decaying_b1():
  """Guards the test above: AdamX and AMSGrad differ on these gradients, by far more than round-off."""
  g = _grads()
  kw = dict(alpha=0.1, b1=0.9, b2=0.999, lam=0.9)
  u_x, vhat_x = _reference(g, **kw)
  u_a, vhat_a = _reference(g, **kw, adamx=False)
  assert np.max(vhat_x / vhat_a) > 2.0  # the running max, rescaled by up to (1/0.1)**2
  tx = amsgrad_optax.amsgrad(amsgrad_optax.inverse_sqrt_schedule(0.1), 0.9, 0.999, 0.0,
                             convention="paper", b1_decay=0.9)  # fmt: skip
  u, _ = _run(tx, g)
  np.testing.assert_allclose(u, u_a, rtol=2e-5, atol=1e-7)
  assert not np.allclose(u, u_x, rtol=1e-2)


@pytest.mark.parametrize("lam", [1.0, jnp.asarray(1.0)], ids=["python", "array"])
def test_with_constant_b1_adamx_is_the_paper_convention(lam):
  g = _grads(seed=1)
  ours, nu_ours = _run(amsgrad_optax.scale_by_adamx(0.9, 0.99, 1e-8, b1_decay=lam), g)
  # The same b1_decay on both sides: an array one rounds 1 - b1_t differently from a float.
  paper = amsgrad_optax.scale_by_amsgrad(0.9, 0.99, 1e-8, convention="paper", b1_decay=lam)
  paper, nu_paper = _run(paper, g)
  np.testing.assert_array_equal(ours, paper)
  np.testing.assert_array_equal(nu_ours, nu_paper)


def test_b1_decay_may_be_injected():
  """Under optax.inject_hyperparams b1_decay is an array inside jit; the run is the same."""
  g = _grads(seed=2)
  plain = amsgrad_optax.adamx(0.01, b1_decay=0.9)
  injected = optax.inject_hyperparams(amsgrad_optax.adamx)(learning_rate=0.01, b1_decay=0.9)

  def updates(tx):
    params = jnp.zeros(g.shape[1:])
    state = tx.init(params)
    out = []
    step = jax.jit(tx.update)
    for row in g[:20]:
      u, state = step(jnp.asarray(row), state, params)
      out.append(u)
    return np.stack(out)

  # Injected, b1 is a float32 array: 1 - b1 is rounded from float32(0.9), 2e-7 off 0.1.
  np.testing.assert_allclose(updates(injected), updates(plain), rtol=2e-5)


def test_bad_b1_decay_is_refused():
  with pytest.raises(ValueError, match=r"b1_decay must be in \[0, 1\], got 1.5"):
    amsgrad_optax.adamx(1e-3, b1_decay=1.5)
  with pytest.raises(ValueError, match="b1 must be in"):
    amsgrad_optax.scale_by_adamx(b1=1.0)
  with pytest.raises(ValueError, match=r"b1_decay must be in \[0, 1\], got -0.5"):
    synthetic.make_optimizer("adamx", b1_decay=-0.5)


# ------------------------------------------------ Tran & Phong's Example 3.2

#: arXiv:1904.03590, Example 3.2: Reddi et al.'s period-101 cost, x_1 = 1, beta_1 = 0.9,
#: beta_{1,t} = beta_1 * 0.001**(t-1), beta_2 = 0.999, alpha_t = 0.001 / sqrt(t).
EXAMPLE = dict(learning_rate=0.001, b1=0.9, b2=0.999, eps=0.0, lr_schedule="inverse-sqrt")
LAM = 0.001


def _example_problem():
  return synthetic.online(x0=1.0, first_step=1)


def test_example_3_2_reproduces_the_papers_iterates():
  """The paper prints x_2 = 0.99684... and x_3 = 0.99706... for AMSGrad on Example 3.2."""
  tx = synthetic.make_optimizer("amsgrad", **EXAMPLE, convention="paper", b1_decay=LAM)
  res = synthetic.run(_example_problem(), tx, 2, trace_every=1)
  x2, x3 = (float(x) for x in res.trace.x)
  assert round(x2, 5) == 0.99684
  assert round(x3, 5) == 0.99706
  assert x2 < 1.0 and x3 > x2  # the sign pattern the example is built on


def _example_gradients(steps):
  t = np.arange(1, steps + 1)
  return np.where(t % 101 == 1, 1010.0, -10.0)[:, None]


def test_adamx_keeps_the_step_the_amsgrad_proof_needs():
  """sqrt(vhat_t) / (alpha_t (1 - b1_t)) must not decrease (Tran & Phong, Section 3).

  On Example 3.2 AMSGrad breaks it at t = 2 (1 - b1_t jumps from 0.1 to 0.9991); AdamX
  keeps it at every step.
  """
  steps = 300
  g = _example_gradients(steps)
  t = np.arange(1, steps + 1)[:, None]
  alpha_t = 0.001 / np.sqrt(t)
  b1_t = 0.9 * LAM ** (t - 1.0)
  sched = amsgrad_optax.inverse_sqrt_schedule(0.001)
  _, vhat_x = _run(amsgrad_optax.adamx(sched, 0.9, 0.999, 0.0, b1_decay=LAM), g)
  _, vhat_a = _run(
    amsgrad_optax.amsgrad(sched, 0.9, 0.999, 0.0, convention="paper", b1_decay=LAM), g
  )
  gamma_x = np.sqrt(vhat_x.astype(np.float64)) / (alpha_t * (1 - b1_t))
  gamma_a = np.sqrt(vhat_a.astype(np.float64)) / (alpha_t * (1 - b1_t))
  assert np.all(np.diff(gamma_x[:, 0]) >= -1e-6 * gamma_x[1:, 0])
  assert gamma_a[1, 0] < 0.2 * gamma_a[0, 0]


def test_adamx_runs_on_the_synthetic_problem_as_the_paper_loop():
  """x_final of the synthetic runner (with the projection onto [-1, 1]) against the float64 loop."""
  steps = 1010
  problem = _example_problem()
  tx = synthetic.make_optimizer("adamx", **EXAMPLE, b1_decay=LAM)
  assert tx.spec is None  # a scan: the fast engine has no AdamX
  res = synthetic.run(problem, tx, steps)
  u, _ = _reference(_example_gradients(steps), alpha=0.001, b1=0.9, b2=0.999, lam=LAM)
  x = 1.0
  for step in u[:, 0]:
    x = min(1.0, max(-1.0, x + step))
  assert res.x_final == pytest.approx(x, abs=1e-5)


def test_a_sweep_of_adamx_runs_as_a_scan():
  """With a constant b1 (all a sweep can give) AdamX is AMSGrad's paper convention."""
  problem = synthetic.online()
  grid = {"b1": [0.0, 0.9], "b2": [0.99, 0.999]}
  ams = synthetic.sweep(problem, 2020, grid, optimizer="amsgrad", convention="paper",
                        engine="scan", shard=False)  # fmt: skip
  adx = synthetic.sweep(problem, 2020, grid, optimizer="adamx", shard=False)
  np.testing.assert_array_equal(adx["x_final"], ams["x_final"])
  with pytest.raises(ValueError, match="no closed form for 'adamx'"):
    synthetic.sweep(problem, 2020, grid, optimizer="adamx", engine="fast", shard=False)


def test_diagnostics_read_an_adamx_state():
  """adamx records its hyperparameters, so diagnostics' step sizes are AdamX's lr / sqrt(vhat)."""
  g = np.ones((3, 2), np.float32)
  tx = amsgrad_optax.adamx(0.1, 0.9, 0.999, 1e-8, b1_decay=0.9)
  params = jnp.zeros(2)
  state = tx.init(params)
  for row in g:
    _, state = tx.update(jnp.asarray(row), state, params)
  _, vhat = _reference(g, alpha=0.1, b1=0.9, b2=0.999, lam=0.9)
  want = 0.1 / (np.sqrt(vhat[-1, 0]) + 1e-8)
  assert float(amsgrad_optax.diagnostics(state, tx)["step_median"]) == pytest.approx(want, rel=1e-5)
