"""The "keras" convention against Keras 3 ``Adam(amsgrad=True)``, live on its JAX backend."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import amsgrad_optax  # noqa: E402
from tests.reference import torch_amsgrad as problem  # noqa: E402
from tests.reference.replay import find_amsgrad_state, replay  # noqa: E402

keras = pytest.importorskip("keras")

STEPS = 200


def _keras_run(params0, grads, lr, b1, b2, eps):
  if keras.backend.backend() != "jax":
    pytest.skip("Keras must run on its JAX backend")
  names = sorted(params0)
  variables = [keras.Variable(params0[k]) for k in names]
  opt = keras.optimizers.Adam(learning_rate=lr, beta_1=b1, beta_2=b2, epsilon=eps, amsgrad=True)
  opt.build(variables)
  trajectory = {k: np.empty((STEPS, *params0[k].shape), np.float32) for k in names}
  for t in range(STEPS):
    opt.apply([grads[k][t] for k in names], variables)
    for k, v in zip(names, variables):
      trajectory[k][t] = np.asarray(v.numpy())
  idx = {k: opt._get_variable_index(v) for k, v in zip(names, variables)}
  nu_max = {k: np.asarray(opt._velocity_hats[idx[k]].numpy()) for k in names}
  return trajectory, nu_max


@pytest.mark.parametrize(
  "lr,b1,b2,eps",
  [(1e-3, 0.9, 0.999, 1e-7), (1e-2, 0.9, 0.99, 1e-8), (3e-3, 0.5, 0.9, 1e-3)],
)
def test_matches_live_keras(lr, b1, b2, eps):
  params0, grads = problem.make_problem(seed=1)
  grads = {k: g[:STEPS] for k, g in grads.items()}
  k_traj, k_nu_max = _keras_run(params0, grads, lr, b1, b2, eps)
  tx = amsgrad_optax.amsgrad(lr, b1, b2, eps, convention="keras")
  traj, state = replay(tx, params0, grads)
  s = find_amsgrad_state(state)
  for k in params0:
    np.testing.assert_allclose(traj[k], k_traj[k], rtol=1e-5, atol=1e-6, err_msg=k)
    np.testing.assert_allclose(s.nu_max[k], k_nu_max[k], rtol=1e-5, atol=1e-30, err_msg=k)


def test_keras_differs_from_pytorch_where_eps_matters():
  """With eps = 1e-3 the two raw-max conventions part: Keras is the one that matches."""
  params0, grads = problem.make_problem(seed=1)
  grads = {k: g[:STEPS] for k, g in grads.items()}
  k_traj, _ = _keras_run(params0, grads, 3e-3, 0.5, 0.9, 1e-3)
  tx = amsgrad_optax.amsgrad(3e-3, 0.5, 0.9, 1e-3, convention="pytorch")
  traj, _ = replay(tx, params0, grads)
  assert not all(np.allclose(traj[k], k_traj[k], rtol=1e-5, atol=1e-6) for k in params0)
