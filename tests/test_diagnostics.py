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


def _reference(
  convention: str, lr: float = LR, b2: float = B2, eps: float = EPS
) -> dict[str, float]:
  """Diagnostics after GRADS, from a float64 NumPy AMSGrad written for this test."""
  t = len(GRADS["w"])
  c1, c2 = 1 - B1**t, 1 - b2**t
  mus, steps, cap = [], [], []
  for name in ("b", "w"):  # jax.tree.leaves order of the dict
    g = GRADS[name].astype(np.float64)
    m = v = vmax = np.zeros(g.shape[1])
    for i in range(t):
      m = B1 * m + (1 - B1) * g[i]
      v = b2 * v + (1 - b2) * g[i] ** 2
      over = v / (1 - b2 ** (i + 1)) if convention == "optax" else v
      vmax = np.maximum(vmax, over)
    over = v / c2 if convention == "optax" else v
    cap.append(vmax > over * (1 + 1e-9))
    s = {
      "pytorch": lr / c1 / (np.sqrt(vmax) / np.sqrt(c2) + eps),
      "keras": lr * np.sqrt(c2) / c1 / (np.sqrt(vmax) + eps),
      "optax": lr / c1 / (np.sqrt(vmax) + eps),
      "paper": lr / (np.sqrt(vmax) + eps),
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
  got = amsgrad_optax.diagnostics(state, tx)
  _assert_matches(got, _reference(convention))
  # The same from the keyword arguments alone.
  kwargs = dict(learning_rate=LR, b1=B1, b2=B2, eps=EPS, eps_root=0.0, b1_decay=1.0)
  _assert_matches(
    amsgrad_optax.diagnostics(state, convention=convention, **kwargs), _reference(convention)
  )
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
  d = amsgrad_optax.diagnostics(state, tx)
  mu = np.concatenate([np.asarray(x) for x in jax.tree.leaves(state[0].mu)])
  u = np.concatenate([np.asarray(x) for x in jax.tree.leaves(updates)])
  ratio = -u / mu
  assert len(np.unique(ratio)) == 4
  np.testing.assert_allclose(float(d["step_min"]), ratio.min(), rtol=1e-5)
  np.testing.assert_allclose(float(d["step_median"]), np.median(ratio), rtol=1e-5)
  np.testing.assert_allclose(float(d["step_max"]), ratio.max(), rtol=1e-5)


def test_zero_gradient_coordinates_show_lr_over_eps():
  tx = amsgrad_optax.amsgrad(LR, B1, B2, EPS, convention="paper")
  state, _ = _run(tx)
  d = amsgrad_optax.diagnostics(state, tx)
  np.testing.assert_allclose(float(d["step_max"]), LR / EPS, rtol=1e-6)


def test_schedule_is_read_at_the_last_updates_index():
  sched = amsgrad_optax.inverse_sqrt_schedule(LR)
  tx = amsgrad_optax.amsgrad(sched, B1, B2, EPS)
  state, _ = _run(tx)
  got = amsgrad_optax.diagnostics(state, tx)
  # After 3 updates the last one used alpha / sqrt(3).
  _assert_matches(got, _reference("pytorch", lr=LR / np.sqrt(3.0)))


@pytest.mark.parametrize("convention", ["pytorch", "paper"])
def test_jit_matches_reference(convention):
  tx = amsgrad_optax.amsgrad(LR, B1, B2, EPS, convention=convention)
  state, _ = _run(tx)
  fn = jax.jit(functools.partial(amsgrad_optax.diagnostics, tx=tx))
  _assert_matches(fn(state), _reference(convention))


def test_finds_the_state_inside_a_chain_and_inject_hyperparams():
  tx = optax.chain(
    optax.clip_by_global_norm(100.0),
    optax.inject_hyperparams(amsgrad_optax.amsgrad)(learning_rate=LR, b1=B1, b2=B2, eps=EPS),
  )
  state, _ = _run(tx)
  # Every hyperparameter is in the inject_hyperparams state; the convention,
  # a string, is not.
  got = amsgrad_optax.diagnostics(state, convention="pytorch")
  _assert_matches(got, _reference("pytorch"))


def test_reads_optax_amsgrad_state_under_the_optax_convention():
  # optax.amsgrad's bias correction is not clean under strict promotion.
  with jax.numpy_dtype_promotion("standard"):
    state, _ = _run(optax.amsgrad(LR, B1, B2, EPS))
  # The state's class says "optax"; optax.amsgrad's numbers must be given.
  got = amsgrad_optax.diagnostics(state, learning_rate=LR, b1=B1, b2=B2, eps=EPS, eps_root=0.0)
  _assert_matches(got, _reference("optax"))


def test_reads_a_flax_nnx_optimizer_state():
  nnx = pytest.importorskip("flax.nnx")

  class Model(nnx.Module):
    def __init__(self):
      self.w = nnx.Param(jnp.zeros(3))
      self.b = nnx.Param(jnp.zeros(2))

  model = Model()
  tx = amsgrad_optax.amsgrad(LR, B1, B2, EPS)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  for i in range(len(GRADS["w"])):
    grads = nnx.State({k: nnx.Param(jnp.asarray(v[i])) for k, v in GRADS.items()})
    optimizer.update(model, grads)
  got = amsgrad_optax.diagnostics(optimizer.opt_state, tx)
  _assert_matches(got, _reference("pytorch"))


def test_before_the_first_update_takes_the_corrections_at_t1():
  tx = amsgrad_optax.amsgrad(LR, B1, B2, EPS)
  d = amsgrad_optax.diagnostics(tx.init({"w": jnp.zeros(4)}), tx)
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
    amsgrad_optax.diagnostics(state, convention="torch")


# ---------------------------------------------------------------- nothing is assumed
#
# Issue 13, item 4: with convention="optax", b2=0.9, eps=1e-3 and only the
# learning rate passed, the figures used to take b2=0.999, eps=1e-8 silently.

OPTAX_HP = dict(b2=0.9, eps=1e-3, convention="optax")
# Gradients small enough that eps=1e-3 matters at every coordinate.
TINY = {k: v * np.float32(1e-4) for k, v in GRADS.items()}


def _float64_step_min() -> float:
  """step_min after TINY under "optax" with b2=0.9, eps=1e-3, by hand in float64."""
  t, b2, eps = 3, 0.9, 1e-3
  c1 = 1 - B1**t
  step = []
  for g in (TINY["b"].astype(np.float64), TINY["w"].astype(np.float64)):
    v = vmax = np.zeros(g.shape[1])
    for i in range(t):
      v = b2 * v + (1 - b2) * g[i] ** 2
      vmax = np.maximum(vmax, v / (1 - b2 ** (i + 1)))
    step.append(LR / c1 / (np.sqrt(vmax) + eps))
  return float(np.concatenate(step).min())


def test_optax_convention_hyperparameters_come_from_tx():
  tx = amsgrad_optax.amsgrad(LR, B1, **OPTAX_HP)
  state, _ = _run(tx, TINY)
  want = _float64_step_min()
  # What assuming the defaults (b2=0.999, eps=1e-8) gives is far off.
  assumed = amsgrad_optax.diagnostics(
    state,
    learning_rate=LR,
    b1=B1,
    b2=0.999,
    eps=1e-8,
    eps_root=0.0,
    b1_decay=1.0,
    convention="optax",
  )
  assert float(assumed["step_min"]) > 3 * want
  for got in (
    amsgrad_optax.diagnostics(state, tx),
    amsgrad_optax.diagnostics(state, amsgrad_optax.amsgrad_config(tx)),
    amsgrad_optax.diagnostics(state, amsgrad_optax.skip_nonfinite(tx)),
    amsgrad_optax.diagnostics(state, amsgrad_optax.AmsgradConfig(learning_rate=LR, **OPTAX_HP)),
  ):
    np.testing.assert_allclose(float(got["step_min"]), want, rtol=2e-6)


def test_optax_convention_hyperparameters_come_from_an_inject_hyperparams_state():
  tx = optax.inject_hyperparams(amsgrad_optax.amsgrad)(LR, B1, **OPTAX_HP)
  state, _ = _run(tx, TINY)
  got = amsgrad_optax.diagnostics(state, convention="optax")
  np.testing.assert_allclose(float(got["step_min"]), _float64_step_min(), rtol=2e-6)
  # Jitted, with the hyperparameters traced inside the state.
  got = jax.jit(functools.partial(amsgrad_optax.diagnostics, convention="optax"))(state)
  np.testing.assert_allclose(float(got["step_min"]), _float64_step_min(), rtol=2e-6)
  # Found through skip_nonfinite's state between the two.
  tx = optax.inject_hyperparams(amsgrad_optax.amsgrad)(LR, B1, **OPTAX_HP, skip_nonfinite=True)
  state, _ = _run(tx, TINY)
  got = amsgrad_optax.diagnostics(state, convention="optax")
  np.testing.assert_allclose(float(got["step_min"]), _float64_step_min(), rtol=2e-6)


def test_an_injected_schedule_is_read_as_the_rate_the_last_update_took():
  sched = amsgrad_optax.inverse_sqrt_schedule(LR)
  tx = optax.inject_hyperparams(amsgrad_optax.amsgrad)(sched, B1, B2, EPS)
  state, _ = _run(tx)
  got = amsgrad_optax.diagnostics(state, convention="pytorch", learning_rate=sched)
  _assert_matches(got, _reference("pytorch", lr=LR / np.sqrt(3.0)))


def test_a_missing_hyperparameter_is_an_error_naming_it():
  tx = amsgrad_optax.amsgrad(LR, B1, **OPTAX_HP)
  state, _ = _run(tx)
  with pytest.raises(ValueError, match="needs the convention"):
    amsgrad_optax.diagnostics(state, learning_rate=LR)
  with pytest.raises(ValueError, match=r"needs b1, b1_decay, b2 for the 'optax' convention"):
    amsgrad_optax.diagnostics(state, learning_rate=LR, eps=1e-3, eps_root=0.0, convention="optax")
  # "paper" has no bias corrections: b1, b2 and b1_decay are not needed.
  paper = amsgrad_optax.amsgrad(LR, B1, B2, EPS, convention="paper")
  state, _ = _run(paper)
  got = amsgrad_optax.diagnostics(
    state, learning_rate=LR, eps=EPS, eps_root=0.0, convention="paper"
  )
  _assert_matches(got, _reference("paper"))


def test_a_value_given_twice_differently_is_an_error():
  tx = amsgrad_optax.amsgrad(LR, B1, **OPTAX_HP)
  state, _ = _run(tx)
  with pytest.raises(ValueError, match=r"b2 is 0\.999 in the argument b2= but 0\.9 in tx's config"):
    amsgrad_optax.diagnostics(state, tx, b2=0.999)
  with pytest.raises(ValueError, match="convention is 'pytorch'"):
    amsgrad_optax.diagnostics(state, tx, convention="pytorch")
  injected = optax.inject_hyperparams(amsgrad_optax.amsgrad)(LR, B1, **OPTAX_HP)
  state, _ = _run(injected)
  with pytest.raises(ValueError, match="eps is 1e-08 in the argument eps= but 0.001"):
    amsgrad_optax.diagnostics(state, convention="optax", eps=1e-8)
  # The same value, as float32 in the state and a Python float here, agrees.
  amsgrad_optax.diagnostics(state, convention="optax", eps=1e-3, b2=0.9)


def test_a_transformation_without_a_record_is_an_error():
  tx = optax.chain(optax.clip(1.0), amsgrad_optax.amsgrad(LR))
  state, _ = _run(tx)
  with pytest.raises(ValueError, match="carries no AmsgradConfig"):
    amsgrad_optax.diagnostics(state, tx)


@pytest.mark.parametrize(
  ("name", "value"), [("b2", 1.0), ("b1", 1.0), ("eps", -1.0), ("b1_decay", 1.5)]
)
def test_rejects_out_of_range_hyperparameters(name, value):
  state, _ = _run(amsgrad_optax.amsgrad(LR))
  kwargs = dict(learning_rate=LR, b1=B1, b2=B2, eps=EPS, eps_root=0.0, b1_decay=1.0)
  kwargs[name] = value
  with pytest.raises(ValueError, match=name):
    amsgrad_optax.diagnostics(state, convention="pytorch", **kwargs)


@pytest.mark.parametrize("params", [{"w": jnp.zeros((0, 3))}, {}], ids=["zero_size", "empty"])
def test_a_state_without_coordinates_gives_nan_figures(params):
  tx = amsgrad_optax.amsgrad(LR)
  state = tx.init(params)
  _, state = tx.update(params, state, params)
  eager = functools.partial(amsgrad_optax.diagnostics, tx=tx)
  for fn in (eager, jax.jit(eager)):
    d = fn(state)
    assert int(d["cap_active"]) == 0 and float(d["mu_norm"]) == 0.0
    for key in ("cap_active_fraction", "step_min", "step_median", "step_max"):
      assert np.isnan(float(d[key])), key
