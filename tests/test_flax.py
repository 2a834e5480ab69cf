"""Real training runs through Flax NNX and Linen, and the example scripts with tiny budgets.

Each API trains the digits MLP for a few hundred steps with
``amsgrad_optax.amsgrad(..., convention="optax")``: the loss must fall, and the
params must match a run with ``optax.amsgrad`` itself.
"""

from __future__ import annotations

import importlib
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import amsgrad_optax

nnx = pytest.importorskip("flax.nnx")
train_state = pytest.importorskip("flax.training.train_state")
pytest.importorskip("sklearn")

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
STEPS, LR = 300, 3e-3


@pytest.fixture(scope="module")
def examples():
  """The example modules, imported from examples/ as the scripts import each other."""
  mp = pytest.MonkeyPatch()
  mp.syspath_prepend(str(EXAMPLES))
  mods = {
    name: importlib.import_module(name)
    for name in ("_digits", "flax_nnx_digits", "flax_linen_digits")
  }
  yield mods
  mp.undo()


def _data(examples):
  d = examples["_digits"].load_digits()
  batches = examples["_digits"].batch_indices(len(d.y_train), 128, STEPS, seed=0)
  return jnp.asarray(d.x_train), jnp.asarray(d.y_train), batches


def _nnx_run(examples, tx):
  """Trains the NNX MLP for STEPS; returns (initial loss, final loss, params)."""
  ex = examples["flax_nnx_digits"]
  x, y, batches = _data(examples)
  model = ex.MLP(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer, idx):
    grads = nnx.grad(ex.loss_fn)(model, x[idx], y[idx])
    optimizer.update(model, grads)

  loss = nnx.jit(ex.loss_fn)
  first = float(loss(model, x, y))
  for idx in batches:
    step(model, optimizer, idx)
  return first, float(loss(model, x, y)), nnx.state(model, nnx.Param)


def _linen_run(examples, tx):
  """Trains the Linen MLP in a TrainState for STEPS; returns (initial, final, params)."""
  ex = examples["flax_linen_digits"]
  x, y, batches = _data(examples)
  model = ex.MLP()
  state = train_state.TrainState.create(
    apply_fn=model.apply,
    params=jax.jit(model.init)(jax.random.key(0), x[:1]),
    tx=optax.chain(optax.clip_by_global_norm(10.0), tx),
  )
  loss = jax.jit(ex.loss_fn, static_argnums=1)
  first = float(loss(state.params, state.apply_fn, x, y))
  for idx in batches:
    state, _ = ex.train_step(state, x, y, idx)
  return first, float(loss(state.params, state.apply_fn, x, y)), state.params


RUNS = {"nnx": _nnx_run, "linen": _linen_run}


@pytest.mark.parametrize("api", sorted(RUNS))
def test_training_matches_optax_amsgrad(examples, api):
  # optax.amsgrad's bias correction (a float ** int32 count) is not valid
  # under strict dtype promotion, so both runs trace under the standard rule.
  with jax.numpy_dtype_promotion("standard"):
    first, last, ours = RUNS[api](examples, amsgrad_optax.amsgrad(LR, convention="optax"))
    _, _, reference = RUNS[api](examples, optax.amsgrad(LR))
  assert math.isfinite(last) and last < 0.25 * first, (first, last)
  leaves = jax.tree.leaves(ours)
  assert len(leaves) == 4
  for a, b in zip(leaves, jax.tree.leaves(reference), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("script", ["flax_nnx_digits", "flax_linen_digits"])
def test_example_main_runs(examples, script, tmp_path, capsys):
  plot = tmp_path / "curves.png"
  argv = ["--steps", "20", "--eval-every", "20", "--seeds", "0", "--plot", str(plot)]
  argv += ["--convention", "keras", "--lr", "0.05"]
  # The Adam baseline is optax.adam, whose bias correction needs the
  # standard promotion rule.
  with jax.numpy_dtype_promotion("standard"):
    results = examples[script].main(argv)
  assert set(results) == {(m, o, 0) for m in ("logreg", "mlp", "cnn") for o in ("adam", "amsgrad")}
  for (_, opt, _), curves in results.items():
    assert curves.steps == [0, 20]
    assert curves.train_loss[-1] < curves.train_loss[0]
    assert 0.0 <= curves.test_accuracy[-1] <= 1.0
    if opt == "amsgrad":
      assert 0.0 <= curves.cap_active_fraction[-1] <= 1.0
      assert curves.step_median[-1] > 0.0
    else:
      assert math.isnan(curves.cap_active_fraction[-1])
  assert plot.stat().st_size > 10_000
  out = capsys.readouterr().out
  assert "AMSGrad convention 'keras'" in out and "test acc" in out
