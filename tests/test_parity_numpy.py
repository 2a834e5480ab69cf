"""Every convention, AdamNC and the decaying b1 against a float64 NumPy loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import amsgrad_optax
from tests.reference import numpy_amsgrad as ref

STEPS = 220


def _grads(seed, shape=(6,)):
  rng = np.random.default_rng(seed)
  g = rng.normal(size=(STEPS, *shape)) * 10.0 ** rng.uniform(-2, 1, size=shape)
  g = np.where(rng.random(size=g.shape) < 0.03, 30.0 * g, g)  # spikes: the max must hold them
  g[:30, 0] = 0.0  # a coordinate that stays silent for a while
  return g.astype(np.float32)


def _updates(tx, grads):
  """Our updates at every step (params fixed: these transforms ignore them)."""

  @jax.jit
  def run(grads):
    def step(state, g):
      u, state = tx.update(g, state)
      return state, u

    return jax.lax.scan(step, tx.init(grads[0]), grads)[1]

  return np.asarray(run(jnp.asarray(grads)))


def _assert_close(ours, want):
  scale = np.abs(want).max(axis=0, keepdims=True)
  np.testing.assert_allclose(ours, want, rtol=2e-5, atol=1e-6 * scale.max())


@pytest.mark.parametrize("convention", amsgrad_optax.CONVENTIONS)
@pytest.mark.parametrize(
  "b1,b2,eps,eps_root",
  [(0.9, 0.999, 1e-8, 0.0), (0.9, 0.99, 1e-3, 0.0), (0.0, 0.9, 0.0, 1e-6), (0.5, 0.999, 0.0, 0.0)],
)
def test_amsgrad_matches_numpy(convention, b1, b2, eps, eps_root):
  g = _grads(0)
  tx = amsgrad_optax.amsgrad(0.01, b1, b2, eps, eps_root, convention=convention)
  _assert_close(_updates(tx, g), ref.amsgrad(g, 0.01, b1, b2, eps, eps_root, convention))


@pytest.mark.parametrize("convention", amsgrad_optax.CONVENTIONS)
def test_decaying_b1_matches_numpy(convention):
  """b1_t = b1 * lambda^(t-1), with the bias correction 1 - prod(b1_i) where one is applied."""
  g = _grads(1)
  tx = amsgrad_optax.amsgrad(0.01, 0.9, 0.99, 1e-8, convention=convention, b1_decay=0.99)
  _assert_close(_updates(tx, g), ref.amsgrad(g, 0.01, 0.9, 0.99, 1e-8, 0.0, convention, 0.99))


def test_paper_algorithm_2_with_its_schedule():
  """Algorithm 2 exactly: no bias correction, no eps, alpha/sqrt(t), decaying b1."""
  g = _grads(2)
  alpha = 0.1
  tx = amsgrad_optax.amsgrad(
    amsgrad_optax.inverse_sqrt_schedule(alpha), 0.9, 0.99, 0.0, convention="paper", b1_decay=0.999
  )
  want = ref.amsgrad(g, lambda c: alpha / np.sqrt(c + 1), 0.9, 0.99, 0.0, 0.0, "paper", 0.999)
  ours = _updates(tx, g)
  _assert_close(ours, want)
  np.testing.assert_array_equal(ours[:30, 0], 0.0)  # 0/0 is a zero step, not NaN


@pytest.mark.parametrize("b1,b1_decay,eps", [(0.9, 1.0, 1e-8), (0.9, 0.99, 0.0), (0.0, 1.0, 1e-3)])
def test_adamnc_matches_numpy(b1, b1_decay, eps):
  g = _grads(3)
  tx = amsgrad_optax.adamnc(0.05, b1, eps, b1_decay=b1_decay)
  _assert_close(_updates(tx, g), ref.adamnc(g, 0.05, b1, eps, 0.0, b1_decay))


def test_adamnc_nu_is_the_plain_mean():
  g = _grads(4)
  tx = amsgrad_optax.scale_by_adamnc()
  state = tx.init(jnp.zeros(6))
  for t in range(STEPS):
    _, state = tx.update(jnp.asarray(g[t]), state)
  np.testing.assert_allclose(state.nu, np.mean(g.astype(np.float64) ** 2, axis=0), rtol=1e-5)


def test_conventions_really_differ():
  """On the same gradients the four conventions give four different trajectories."""
  g = _grads(5)
  runs = {
    c: _updates(amsgrad_optax.amsgrad(0.01, 0.9, 0.99, 1e-3, convention=c), g)
    for c in amsgrad_optax.CONVENTIONS
  }
  names = list(runs)
  for i, a in enumerate(names):
    for b in names[i + 1 :]:
      assert not np.allclose(runs[a], runs[b], rtol=1e-4), (a, b)
