"""amsgrad_optax.diagnostics against a NumPy reference and against the updates themselves.

The reference recomputes the AMSGrad moments in float64 from the gradient
history and evaluates each convention's step formula by hand; independently,
the last update a transform returned must equal ``-step * mu`` coordinate by
coordinate, which is what the effective step means.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import amsgrad_optax

B1, B2, EPS, LR = 0.9, 0.99, 1e-8, 0.05

# Three updates per coordinate: rising |g| (the cap stays inactive), |g|
# falling fast enough that even the raw, still-warming-up nu falls (the cap
# holds the first, larger second moment), and zeros.
GRADS = {
  "w": np.array([[1.0, 4.0, 0.0], [-2.0, 0.2, 0.0], [4.0, -0.1, 0.0]], np.float32),
  "b": np.array([[0.5, -3.0], [1.0, -0.2], [2.0, -0.1]], np.float32),
}
RISING = {"w": np.array([True, False, False]), "b": np.array([True, False])}
FALLING = {"w": np.array([False, True, False]), "b": np.array([False, True])}


def _reference(convention: str, lr: float = LR) -> dict[str, float]:
  """Diagnostics after GRADS, from a float64 NumPy AMSGrad written for this test."""
  t = len(GRADS["w"])
  c1, c2 = 1 - B1**t, 1 - B2**t
  mus, steps, cap = [], [], []
  for name in ("b", "w"):  # jax.tree.leaves order of the dict
    g = GRADS[name].astype(np.float64)
    m = v = vmax = np.zeros(g.shape[1])
    for i in range(t):
      m = B1 * m + (1 - B1) * g[i]
      v = B2 * v + (1 - B2) * g[i] ** 2
      over = v / (1 - B2 ** (i + 1)) if convention == "optax" else v
      vmax = np.maximum(vmax, over)
    over = v / c2 if convention == "optax" else v
    cap.append(vmax > over * (1 + 1e-9))
    s = {
      "pytorch": lr / c1 / (np.sqrt(vmax) / np.sqrt(c2) + EPS),
      "keras": lr * np.sqrt(c2) / c1 / (np.sqrt(vmax) + EPS),
      "optax": lr / c1 / (np.sqrt(vmax) + EPS),
      "paper": lr / (np.sqrt(vmax) + EPS),
    }[convention]
    mus.append(m)
    steps.append(s)
  cap_all, step_all = np.concatenate(cap), np.concatenate(steps)
  # The test data's premise: the cap is active exactly where |g| fell.
  expected_cap = np.concatenate([FALLING["b"], FALLING["w"]])
  np.testing.assert_array_equal(cap_all, expected_cap)
  return {
    "mu_norm": float(np.linalg.norm(np.concatenate(mus))),
    "cap_active": int(cap_all.sum()),
    "cap_active_fraction": float(cap_all.mean()),
    "step_min": float(step_all.min()),
    "step_median": float(np.median(step_all)),
    "step_max": float(step_all.max()),
  }


def _run(tx, history=GRADS):
  """Returns the state and last updates of ``tx`` after the gradients ``history``."""
  params = {k: jnp.zeros(v.shape[1], jnp.float32) for k, v in history.items()}
  state = tx.init(params)
  updates = None
  for i in range(len(history["w"])):
    grads = {k: jnp.asarray(v[i]) for k, v in history.items()}
    updates, state = tx.update(grads, state, params)
  return state, updates


def _assert_matches(got: dict, want: dict) -> None:
  assert set(got) == set(want)
  assert int(got["cap_active"]) == want["cap_active"]
  for key in ("mu_norm", "cap_active_fraction", "step_min", "step_median", "step_max"):
    np.testing.assert_allclose(float(got[key]), want[key], rtol=2e-5, err_msg=key)


@pytest.mark.parametrize("convention", amsgrad_optax.CONVENTIONS)
def test_matches_numpy_reference(convention):
  tx = amsgrad_optax.amsgrad(LR, B1, B2, EPS, convention=convention)
  state, _ = _run(tx)
  got = amsgrad_optax.diagnostics(
    state, learning_rate=LR, b1=B1, b2=B2, eps=EPS, convention=convention
  )
  _assert_matches(got, _reference(convention))
  assert got["cap_active"].dtype == jnp.int32
  assert got["step_median"].dtype == jnp.float32


@pytest.mark.parametrize("convention", amsgrad_optax.CONVENTIONS)
def test_last_update_is_minus_step_times_mu(convention):
  # What the effective step means: the last update was -step * mu. Without
  # the zero-gradient coordinate every coordinate moved, so the order
  # statistics of -update / mu are the step's.
  history = {"w": GRADS["w"][:, :2], "b": GRADS["b"]}
  tx = amsgrad_optax.amsgrad(LR, B1, B2, 1e-3, convention=convention)
  state, updates = _run(tx, history)
  d = amsgrad_optax.diagnostics(
    state, learning_rate=LR, b1=B1, b2=B2, eps=1e-3, convention=convention
  )
  mu = np.concatenate([np.asarray(x) for x in jax.tree.leaves(state[0].mu)])
  u = np.concatenate([np.asarray(x) for x in jax.tree.leaves(updates)])
  ratio = -u / mu
  assert len(np.unique(ratio)) == 4
  np.testing.assert_allclose(float(d["step_min"]), ratio.min(), rtol=1e-5)
  np.testing.assert_allclose(float(d["step_median"]), np.median(ratio), rtol=1e-5)
  np.testing.assert_allclose(float(d["step_max"]), ratio.max(), rtol=1e-5)


def test_zero_gradient_coordinates_show_lr_over_eps():
  state, _ = _run(amsgrad_optax.amsgrad(LR, B1, B2, EPS, convention="paper"))
  d = amsgrad_optax.diagnostics(state, learning_rate=LR, b1=B1, b2=B2, eps=EPS, convention="paper")
  np.testing.assert_allclose(float(d["step_max"]), LR / EPS, rtol=1e-6)


def test_schedule_is_read_at_the_last_updates_index():
  sched = amsgrad_optax.inverse_sqrt_schedule(LR)
  state, _ = _run(amsgrad_optax.amsgrad(sched, B1, B2, EPS))
  got = amsgrad_optax.diagnostics(state, learning_rate=sched, b1=B1, b2=B2, eps=EPS)
  # After 3 updates the last one used alpha / sqrt(3).
  _assert_matches(got, _reference("pytorch", lr=LR / np.sqrt(3.0)))


@pytest.mark.parametrize("convention", ["pytorch", "paper"])
def test_jit_matches_reference(convention):
  tx = amsgrad_optax.amsgrad(LR, B1, B2, EPS, convention=convention)
  state, _ = _run(tx)
  fn = jax.jit(
    functools.partial(
      amsgrad_optax.diagnostics,
      learning_rate=LR,
      b1=B1,
      b2=B2,
      eps=EPS,
      convention=convention,
    )
  )
  _assert_matches(fn(state), _reference(convention))


def test_finds_the_state_inside_a_chain_and_inject_hyperparams():
  tx = optax.chain(
    optax.clip_by_global_norm(100.0),
    optax.inject_hyperparams(amsgrad_optax.amsgrad)(learning_rate=LR, b1=B1, b2=B2, eps=EPS),
  )
  state, _ = _run(tx)
  got = amsgrad_optax.diagnostics(state, learning_rate=LR, b1=B1, b2=B2, eps=EPS)
  _assert_matches(got, _reference("pytorch"))


def test_reads_optax_amsgrad_state_under_the_optax_convention():
  # optax.amsgrad's bias correction is not clean under strict promotion.
  with jax.numpy_dtype_promotion("standard"):
    state, _ = _run(optax.amsgrad(LR, B1, B2, EPS))
  got = amsgrad_optax.diagnostics(
    state, learning_rate=LR, b1=B1, b2=B2, eps=EPS, convention="optax"
  )
  _assert_matches(got, _reference("optax"))


def test_reads_a_flax_nnx_optimizer_state():
  nnx = pytest.importorskip("flax.nnx")

  class Model(nnx.Module):
    def __init__(self):
      self.w = nnx.Param(jnp.zeros(3))
      self.b = nnx.Param(jnp.zeros(2))

  model = Model()
  optimizer = nnx.Optimizer(model, amsgrad_optax.amsgrad(LR, B1, B2, EPS), wrt=nnx.Param)
  for i in range(len(GRADS["w"])):
    grads = nnx.State({k: nnx.Param(jnp.asarray(v[i])) for k, v in GRADS.items()})
    optimizer.update(model, grads)
  got = amsgrad_optax.diagnostics(optimizer.opt_state, learning_rate=LR, b1=B1, b2=B2, eps=EPS)
  _assert_matches(got, _reference("pytorch"))


def test_before_the_first_update_takes_the_corrections_at_t1():
  state = amsgrad_optax.amsgrad(LR).init({"w": jnp.zeros(4)})
  d = amsgrad_optax.diagnostics(state, learning_rate=LR, b1=B1, b2=B2, eps=EPS)
  # nu_max = 0: lr / (1 - b1) / (0 + eps), and no cap is active yet.
  np.testing.assert_allclose(float(d["step_median"]), LR / (1 - B1) / EPS, rtol=1e-6)
  assert int(d["cap_active"]) == 0
  assert float(d["mu_norm"]) == 0.0


def test_rejects_a_state_without_amsgrad():
  state = optax.sgd(0.1).init({"w": jnp.zeros(2)})
  with pytest.raises(ValueError, match="ScaleByAmsgradState"):
    amsgrad_optax.diagnostics(state, learning_rate=0.1)


def test_rejects_two_amsgrad_states():
  tx = optax.multi_transform(
    {"a": amsgrad_optax.amsgrad(0.1), "b": amsgrad_optax.amsgrad(0.01)},
    {"w": "a", "v": "b"},
  )
  state = tx.init({"w": jnp.zeros(2), "v": jnp.zeros(3)})
  with pytest.raises(ValueError, match="holds 2 AMSGrad states"):
    amsgrad_optax.diagnostics(state, learning_rate=0.1)


def test_rejects_an_unknown_convention():
  state = amsgrad_optax.amsgrad(0.1).init(jnp.zeros(2))
  with pytest.raises(ValueError, match="convention must be one of"):
    amsgrad_optax.diagnostics(state, learning_rate=0.1, convention="torch")
